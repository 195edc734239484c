//! A topic's settings as a partition acts on them; the broker makes them
//! from its configuration and the topic's overrides (`topic_config.rs`).

/// The settings a partition's log and the produce path act on.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSettings {
    pub log: felice_log::LogConfig,
    pub max_message_bytes: i32,
    pub log_append_time: bool,
    /// `compression.type`: `None` for `producer` (batches kept as sent),
    /// otherwise the codec the broker re-encodes batches in.
    pub compression: Option<kafka_protocol::records::Compression>,
    /// `min.insync.replicas` (topic) and `replica.lag.time.max.ms` (broker).
    pub replication: crate::state::ReplicationConfig,
}
