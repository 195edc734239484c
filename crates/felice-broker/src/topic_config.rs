//! Topic-level configs: Kafka's names, their broker-level defaults, validation
//! of overrides (CreateTopics, later IncrementalAlterConfigs), and the
//! effective settings the log and the produce path use.

use crate::config::{
    valid_cleanup_policy, BrokerConfig, COMPRESSION_TYPES, CONFIG_TYPE_BOOLEAN, CONFIG_TYPE_DOUBLE,
    CONFIG_TYPE_INT, CONFIG_TYPE_LIST, CONFIG_TYPE_LONG, CONFIG_TYPE_STRING,
};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Int { min: i64 },
    Long { min: i64 },
    Bool,
    Double,
    CleanupPolicy,
    Compression,
    TimestampType,
    List,
}

/// Where a topic config's default comes from.
#[derive(Clone, Copy, Debug)]
enum Default {
    /// The broker key whose value is the default (Kafka's DEFAULT_CONFIG /
    /// STATIC_BROKER_CONFIG source).
    Broker(&'static str),
    /// A fixed default.
    Fixed(&'static str),
}

/// Every topic config Felice knows, in Kafka's names.
const TOPIC_CONFIGS: &[(&str, Kind, Default)] = &[
    (
        "cleanup.policy",
        Kind::CleanupPolicy,
        Default::Broker("log.cleanup.policy"),
    ),
    (
        "compression.type",
        Kind::Compression,
        Default::Broker("compression.type"),
    ),
    (
        "delete.retention.ms",
        Kind::Long { min: 0 },
        Default::Broker("log.cleaner.delete.retention.ms"),
    ),
    (
        "file.delete.delay.ms",
        Kind::Long { min: 0 },
        Default::Broker("log.segment.delete.delay.ms"),
    ),
    (
        "flush.messages",
        Kind::Long { min: 1 },
        Default::Broker("log.flush.interval.messages"),
    ),
    (
        "flush.ms",
        Kind::Long { min: 0 },
        Default::Broker("log.flush.interval.ms"),
    ),
    (
        "follower.replication.throttled.replicas",
        Kind::List,
        Default::Fixed(""),
    ),
    (
        "index.interval.bytes",
        Kind::Int { min: 0 },
        Default::Broker("log.index.interval.bytes"),
    ),
    (
        "leader.replication.throttled.replicas",
        Kind::List,
        Default::Fixed(""),
    ),
    (
        "local.retention.bytes",
        Kind::Long { min: -2 },
        Default::Fixed("-2"),
    ),
    (
        "local.retention.ms",
        Kind::Long { min: -2 },
        Default::Fixed("-2"),
    ),
    (
        "max.compaction.lag.ms",
        Kind::Long { min: 1 },
        Default::Fixed("9223372036854775807"),
    ),
    (
        "max.message.bytes",
        Kind::Int { min: 0 },
        Default::Broker("message.max.bytes"),
    ),
    (
        "message.timestamp.after.max.ms",
        Kind::Long { min: 0 },
        Default::Fixed("9223372036854775807"),
    ),
    (
        "message.timestamp.before.max.ms",
        Kind::Long { min: 0 },
        Default::Fixed("9223372036854775807"),
    ),
    (
        "message.timestamp.type",
        Kind::TimestampType,
        Default::Broker("log.message.timestamp.type"),
    ),
    (
        "min.cleanable.dirty.ratio",
        Kind::Double,
        Default::Broker("log.cleaner.min.cleanable.ratio"),
    ),
    (
        "min.compaction.lag.ms",
        Kind::Long { min: 0 },
        Default::Broker("log.cleaner.min.compaction.lag.ms"),
    ),
    (
        "min.insync.replicas",
        Kind::Int { min: 1 },
        Default::Broker("min.insync.replicas"),
    ),
    ("preallocate", Kind::Bool, Default::Fixed("false")),
    ("remote.storage.enable", Kind::Bool, Default::Fixed("false")),
    (
        "retention.bytes",
        Kind::Long { min: i64::MIN },
        Default::Broker("log.retention.bytes"),
    ),
    ("retention.ms", Kind::Long { min: -1 }, Default::Fixed("")),
    (
        "segment.bytes",
        Kind::Int { min: 14 },
        Default::Broker("log.segment.bytes"),
    ),
    (
        "segment.index.bytes",
        Kind::Int { min: 4 },
        Default::Broker("log.index.size.max.bytes"),
    ),
    (
        "segment.jitter.ms",
        Kind::Long { min: 0 },
        Default::Fixed("0"),
    ),
    ("segment.ms", Kind::Long { min: 1 }, Default::Fixed("")),
    (
        "unclean.leader.election.enable",
        Kind::Bool,
        Default::Broker("unclean.leader.election.enable"),
    ),
];

/// Why a topic config override was refused (Kafka: INVALID_CONFIG).
#[derive(Debug, thiserror::Error)]
pub enum TopicConfigError {
    #[error("Unknown topic config name: {0}")]
    Unknown(String),
    #[error("Invalid value {value} for configuration {key}: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: &'static str,
    },
    #[error("Null value not supported for topic configs: {0}")]
    Null(String),
}

/// Checks one override against the known configs.
pub fn validate(key: &str, value: Option<&str>) -> Result<(), TopicConfigError> {
    let Some((_, kind, _)) = TOPIC_CONFIGS.iter().find(|(k, _, _)| *k == key) else {
        return Err(TopicConfigError::Unknown(key.to_string()));
    };
    let Some(value) = value else {
        return Err(TopicConfigError::Null(key.to_string()));
    };
    let invalid = |reason| TopicConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        reason,
    };
    let ok = match kind {
        Kind::Int { min } => value.parse::<i32>().map(|v| i64::from(v) >= *min),
        Kind::Long { min } => value.parse::<i64>().map(|v| v >= *min),
        Kind::Bool => Ok(value == "true" || value == "false"),
        Kind::Double => Ok(value.parse::<f64>().is_ok()),
        Kind::CleanupPolicy => Ok(valid_cleanup_policy(value)),
        Kind::Compression => Ok(COMPRESSION_TYPES.contains(&value)),
        Kind::TimestampType => Ok(matches!(value, "CreateTime" | "LogAppendTime")),
        Kind::List => Ok(true),
    };
    match ok {
        Ok(true) => Ok(()),
        Ok(false) => Err(invalid("out of range or not an allowed value")),
        Err(_) => Err(invalid("not a number")),
    }
}

/// Whether `key` is a topic config whose value is a comma-separated list
/// (what IncrementalAlterConfigs APPEND and SUBTRACT act on).
pub fn is_list(key: &str) -> bool {
    TOPIC_CONFIGS
        .iter()
        .any(|(k, kind, _)| *k == key && matches!(kind, Kind::CleanupPolicy | Kind::List))
}

/// Whether `key` is a topic config Felice knows.
pub fn is_known(key: &str) -> bool {
    TOPIC_CONFIGS.iter().any(|(k, _, _)| *k == key)
}

/// Kafka's ConfigSource codes (DescribeConfigs v1+, CreateTopics v5+).
pub const SOURCE_DYNAMIC_TOPIC_CONFIG: i8 = 1;
pub const SOURCE_STATIC_BROKER_CONFIG: i8 = 4;
pub const SOURCE_DEFAULT_CONFIG: i8 = 5;

/// One topic config as DescribeConfigs/CreateTopics v5+ report it.
pub struct DescribedConfig {
    pub name: &'static str,
    pub value: String,
    /// Where the value comes from: the topic's own override
    /// (DYNAMIC_TOPIC_CONFIG), a broker key set in its configuration
    /// (STATIC_BROKER_CONFIG), or a default (DEFAULT_CONFIG).
    pub source: i8,
    /// Kafka's ConfigType code.
    pub config_type: i8,
    /// The values it would take, most specific first (name, value, source),
    /// as DescribeConfigs `include_synonyms` lists them.
    pub synonyms: Vec<(String, Option<String>, i8)>,
}

/// The broker keys a topic config falls back on, most specific first.
fn broker_synonyms(name: &str, default: Default) -> Vec<&'static str> {
    match (name, default) {
        ("retention.ms", _) => vec![
            "log.retention.ms",
            "log.retention.minutes",
            "log.retention.hours",
        ],
        ("segment.ms", _) => vec!["log.roll.ms", "log.roll.hours"],
        ("flush.ms", _) => vec!["log.flush.interval.ms"],
        (_, Default::Broker(key)) => vec![key],
        (_, Default::Fixed(_)) => vec![],
    }
}

/// Every topic config with its effective value for a topic with `overrides`.
pub fn describe(
    broker: &BrokerConfig,
    overrides: &BTreeMap<String, String>,
) -> Vec<DescribedConfig> {
    TOPIC_CONFIGS
        .iter()
        .map(|(name, kind, default)| {
            let mut synonyms = Vec::new();
            if let Some(v) = overrides.get(*name) {
                synonyms.push((
                    name.to_string(),
                    Some(v.clone()),
                    SOURCE_DYNAMIC_TOPIC_CONFIG,
                ));
            }
            let keys = broker_synonyms(name, *default);
            for key in keys.iter().filter(|k| broker.is_explicit(k)) {
                synonyms.push((
                    key.to_string(),
                    broker.value(key).map(str::to_string),
                    SOURCE_STATIC_BROKER_CONFIG,
                ));
            }
            // As Kafka: the default of a broker key in other units
            // (hours, minutes) is not listed as a synonym.
            let converted = keys.len() > 1;
            for key in keys.iter().filter(|_| !converted) {
                if let Some(d) = BrokerConfig::default_of(key) {
                    synonyms.push((key.to_string(), Some(d.to_string()), SOURCE_DEFAULT_CONFIG));
                }
            }
            let source = synonyms
                .first()
                .map_or(SOURCE_DEFAULT_CONFIG, |(_, _, source)| *source);
            let value = match overrides.get(*name) {
                Some(v) => v.clone(),
                None => match (*name, default) {
                    ("retention.ms", _) => broker.log_retention_ms.to_string(),
                    ("segment.ms", _) => broker.log_roll_ms.to_string(),
                    ("flush.ms", _) => broker.log_flush_interval_ms.to_string(),
                    (_, Default::Broker(key)) => broker.value(key).unwrap_or("").to_string(),
                    (_, Default::Fixed(v)) => v.to_string(),
                },
            };
            DescribedConfig {
                name,
                value,
                source,
                config_type: match kind {
                    Kind::Int { .. } => CONFIG_TYPE_INT,
                    Kind::Long { .. } => CONFIG_TYPE_LONG,
                    Kind::Bool => CONFIG_TYPE_BOOLEAN,
                    Kind::Double => CONFIG_TYPE_DOUBLE,
                    Kind::CleanupPolicy | Kind::List => CONFIG_TYPE_LIST,
                    Kind::Compression | Kind::TimestampType => CONFIG_TYPE_STRING,
                },
                synonyms,
            }
        })
        .collect()
}

pub use felice_replica::TopicSettings;

/// The settings of a topic with `overrides` on this broker's defaults.
pub fn settings(broker: &BrokerConfig, overrides: &BTreeMap<String, String>) -> TopicSettings {
    let long = |key: &str, default: i64| -> i64 {
        overrides
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let policy = overrides
        .get("cleanup.policy")
        .map(String::as_str)
        .unwrap_or(broker.log_cleanup_policy.as_str());
    let log = felice_log::LogConfig {
        segment_bytes: long("segment.bytes", i64::from(broker.log_segment_bytes)).max(14) as u64,
        segment_ms: long("segment.ms", broker.log_roll_ms),
        segment_index_bytes: long(
            "segment.index.bytes",
            i64::from(broker.log_index_size_max_bytes),
        )
        .max(4) as u64,
        index_interval_bytes: long(
            "index.interval.bytes",
            i64::from(broker.log_index_interval_bytes),
        )
        .max(0) as u64,
        retention_ms: long("retention.ms", broker.log_retention_ms),
        retention_bytes: long("retention.bytes", broker.log_retention_bytes),
        flush_interval_messages: long("flush.messages", broker.log_flush_interval_messages).max(1)
            as u64,
        flush_interval_ms: long("flush.ms", broker.log_flush_interval_ms),
        file_delete_delay_ms: long("file.delete.delay.ms", broker.log_segment_delete_delay_ms),
        cleanup_delete: policy.split(',').any(|p| p.trim() == "delete"),
        cleanup_compact: broker.log_cleaner_enable
            && policy.split(',').any(|p| p.trim() == "compact"),
        delete_retention_ms: long(
            "delete.retention.ms",
            broker.log_cleaner_delete_retention_ms,
        ),
        min_cleanable_dirty_ratio_permille: overrides
            .get("min.cleanable.dirty.ratio")
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(broker.log_cleaner_min_cleanable_ratio_permille, |r| {
                (r.clamp(0.0, 1.0) * 1000.0).round() as u32
            }),
        min_compaction_lag_ms: long(
            "min.compaction.lag.ms",
            broker.log_cleaner_min_compaction_lag_ms,
        ),
        producer_id_expiration_ms: broker.producer_id_expiration_ms,
        max_producers_per_partition: felice_log::MAX_PRODUCERS_PER_PARTITION,
    };
    let timestamp_type = overrides
        .get("message.timestamp.type")
        .map(String::as_str)
        .unwrap_or(broker.log_message_timestamp_type.as_str());
    use kafka_protocol::records::Compression;
    let compression = match overrides
        .get("compression.type")
        .map(String::as_str)
        .unwrap_or(broker.compression_type.as_str())
    {
        "uncompressed" => Some(Compression::None),
        "gzip" => Some(Compression::Gzip),
        "snappy" => Some(Compression::Snappy),
        "lz4" => Some(Compression::Lz4),
        "zstd" => Some(Compression::Zstd),
        _ => None,
    };
    TopicSettings {
        log,
        max_message_bytes: long("max.message.bytes", i64::from(broker.message_max_bytes)) as i32,
        log_append_time: timestamp_type == "LogAppendTime",
        compression,
        replication: felice_replica::ReplicationConfig {
            replica_lag_time_max_ms: broker.replica_lag_time_max_ms,
            min_insync_replicas: long("min.insync.replicas", i64::from(broker.min_insync_replicas))
                .max(1) as usize,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_key() {
        assert!(validate("retention.ms", Some("100")).is_ok());
        assert!(validate("retention.ms", Some("-1")).is_ok());
        assert!(matches!(
            validate("retention.ms", Some("x")),
            Err(TopicConfigError::Invalid { .. })
        ));
        assert!(matches!(
            validate("nope", Some("1")),
            Err(TopicConfigError::Unknown(_))
        ));
        assert!(validate("cleanup.policy", Some("compact,delete")).is_ok());
        assert!(validate("cleanup.policy", Some("forever")).is_err());
    }

    #[test]
    fn overrides_shape_the_settings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = BrokerConfig::for_test(dir.path());
        let mut o = BTreeMap::new();
        o.insert("retention.ms".to_string(), "1000".to_string());
        o.insert("max.message.bytes".to_string(), "2000".to_string());
        o.insert(
            "message.timestamp.type".to_string(),
            "LogAppendTime".to_string(),
        );
        let s = settings(&broker, &o);
        assert_eq!(s.log.retention_ms, 1000);
        assert_eq!(s.max_message_bytes, 2000);
        assert!(s.log_append_time);
        let d = describe(&broker, &o);
        let seg = d
            .iter()
            .find(|c| c.name == "segment.bytes")
            .expect("segment.bytes");
        assert_eq!(seg.value, "1073741824");
        assert_eq!(seg.source, SOURCE_DEFAULT_CONFIG);
    }
}
