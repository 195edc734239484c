//! Broker configuration with Kafka's property names.
//!
//! Sources, later wins: built-in defaults, a `server.properties`-style file
//! (`--config FILE`), then `--override KEY=VALUE` pairs, as Kafka's start
//! script does. Every key must be known and every value must parse: a typo
//! stops the start with a message naming the key, instead of being ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown config key `{key}`{origin}")]
    UnknownKey { key: String, origin: String },
    #[error("invalid value `{value}` for config key `{key}`{origin}: {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
        origin: String,
    },
    #[error("malformed line {line} in {path}: `{text}` (expected KEY=VALUE)")]
    MalformedLine {
        path: String,
        line: usize,
        text: String,
    },
    #[error("malformed override `{0}` (expected KEY=VALUE)")]
    MalformedOverride(String),
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Int,
    Long,
    Bool,
    Str,
    /// Accepted for compatibility with Kafka's files, not used by Felice.
    Ignored,
}

/// Every broker key Felice knows: (name, kind, default). `None` default = unset.
const KEYS: &[(&str, Kind, Option<&str>)] = &[
    ("node.id", Kind::Int, Some("1")),
    ("broker.id", Kind::Int, None),
    ("process.roles", Kind::Str, Some("broker,controller")),
    ("listeners", Kind::Str, Some("PLAINTEXT://127.0.0.1:9092")),
    ("advertised.listeners", Kind::Str, None),
    ("listener.security.protocol.map", Kind::Str, None),
    ("inter.broker.listener.name", Kind::Str, Some("PLAINTEXT")),
    ("controller.listener.names", Kind::Str, None),
    ("controller.quorum.voters", Kind::Str, None),
    ("controller.quorum.bootstrap.servers", Kind::Str, None),
    (
        "controller.quorum.election.timeout.ms",
        Kind::Int,
        Some("1000"),
    ),
    (
        "controller.quorum.fetch.timeout.ms",
        Kind::Int,
        Some("2000"),
    ),
    (
        "controller.quorum.request.timeout.ms",
        Kind::Int,
        Some("2000"),
    ),
    ("broker.rack", Kind::Str, None),
    ("broker.session.timeout.ms", Kind::Int, Some("9000")),
    ("broker.heartbeat.interval.ms", Kind::Int, Some("2000")),
    (
        "metadata.log.max.record.bytes.between.snapshots",
        Kind::Long,
        Some("20971520"),
    ),
    (
        "metadata.log.max.snapshot.interval.ms",
        Kind::Long,
        Some("3600000"),
    ),
    ("log.dirs", Kind::Str, Some("./data")),
    ("log.dir", Kind::Str, None),
    ("num.partitions", Kind::Int, Some("1")),
    ("default.replication.factor", Kind::Int, Some("1")),
    ("auto.create.topics.enable", Kind::Bool, Some("true")),
    ("delete.topic.enable", Kind::Bool, Some("true")),
    ("message.max.bytes", Kind::Int, Some("1048588")),
    ("socket.request.max.bytes", Kind::Int, Some("104857600")),
    ("socket.send.buffer.bytes", Kind::Int, Some("102400")),
    ("socket.receive.buffer.bytes", Kind::Int, Some("102400")),
    ("max.connections", Kind::Int, Some("10000")),
    ("connections.max.idle.ms", Kind::Long, Some("600000")),
    ("num.network.threads", Kind::Int, Some("3")),
    ("num.io.threads", Kind::Int, Some("8")),
    ("num.recovery.threads.per.data.dir", Kind::Int, Some("2")),
    ("queued.max.requests", Kind::Int, Some("500")),
    // Kafka's default is -1 (unbounded); Felice bounds request memory by
    // default (128 MiB, above the 100 MiB socket.request.max.bytes).
    ("queued.max.request.bytes", Kind::Long, Some("134217728")),
    ("fetch.max.bytes", Kind::Int, Some("57671680")),
    ("log.segment.bytes", Kind::Int, Some("1073741824")),
    ("log.roll.ms", Kind::Long, None),
    ("log.roll.hours", Kind::Int, Some("168")),
    ("log.retention.ms", Kind::Long, None),
    ("log.retention.minutes", Kind::Int, None),
    ("log.retention.hours", Kind::Int, Some("168")),
    ("log.retention.bytes", Kind::Long, Some("-1")),
    (
        "log.retention.check.interval.ms",
        Kind::Long,
        Some("300000"),
    ),
    ("log.segment.delete.delay.ms", Kind::Long, Some("60000")),
    ("log.index.interval.bytes", Kind::Int, Some("4096")),
    ("log.index.size.max.bytes", Kind::Int, Some("10485760")),
    (
        "log.flush.interval.messages",
        Kind::Long,
        Some("9223372036854775807"),
    ),
    ("log.flush.interval.ms", Kind::Long, None),
    (
        "log.flush.scheduler.interval.ms",
        Kind::Long,
        Some("9223372036854775807"),
    ),
    ("log.message.timestamp.type", Kind::Str, Some("CreateTime")),
    ("log.cleanup.policy", Kind::Str, Some("delete")),
    ("log.cleaner.enable", Kind::Bool, Some("true")),
    ("log.cleaner.backoff.ms", Kind::Long, Some("15000")),
    (
        "log.cleaner.delete.retention.ms",
        Kind::Long,
        Some("86400000"),
    ),
    ("log.cleaner.min.cleanable.ratio", Kind::Str, Some("0.5")),
    ("log.cleaner.min.compaction.lag.ms", Kind::Long, Some("0")),
    ("log.cleaner.threads", Kind::Ignored, None),
    ("log.cleaner.dedupe.buffer.size", Kind::Ignored, None),
    ("log.cleaner.io.buffer.size", Kind::Ignored, None),
    ("log.cleaner.io.max.bytes.per.second", Kind::Ignored, None),
    ("compression.type", Kind::Str, Some("producer")),
    ("min.insync.replicas", Kind::Int, Some("1")),
    ("replica.lag.time.max.ms", Kind::Long, Some("30000")),
    (
        "replica.high.watermark.checkpoint.interval.ms",
        Kind::Long,
        Some("5000"),
    ),
    ("offsets.topic.num.partitions", Kind::Int, Some("50")),
    // Kafka's default is 3 and fails on fewer brokers; Felice uses
    // min(this, live brokers) so a single node works out of the box.
    ("offsets.topic.replication.factor", Kind::Int, Some("3")),
    ("offsets.topic.segment.bytes", Kind::Int, Some("104857600")),
    ("offsets.topic.compression.codec", Kind::Ignored, None),
    ("offsets.retention.minutes", Kind::Int, Some("10080")),
    (
        "offsets.retention.check.interval.ms",
        Kind::Long,
        Some("600000"),
    ),
    ("offset.metadata.max.bytes", Kind::Int, Some("4096")),
    ("offsets.commit.timeout.ms", Kind::Ignored, None),
    ("offsets.load.buffer.size", Kind::Ignored, None),
    ("group.min.session.timeout.ms", Kind::Int, Some("6000")),
    ("group.max.session.timeout.ms", Kind::Int, Some("1800000")),
    // Kafka's default is Integer.MAX_VALUE; every member costs memory and
    // a slot in each rebalance, so Felice bounds a group by default.
    ("group.max.size", Kind::Int, Some("1000")),
    // Felice-only: how many groups one broker keeps (each costs memory).
    ("group.max.count", Kind::Int, Some("100000")),
    ("group.coordinator.rebalance.protocols", Kind::Ignored, None),
    (
        "transaction.state.log.replication.factor",
        Kind::Ignored,
        None,
    ),
    ("transaction.state.log.min.isr", Kind::Ignored, None),
    ("group.initial.rebalance.delay.ms", Kind::Int, Some("3000")),
    ("unclean.leader.election.enable", Kind::Bool, Some("false")),
    ("producer.id.expiration.ms", Kind::Int, Some("86400000")),
    (
        "producer.id.expiration.check.interval.ms",
        Kind::Int,
        Some("600000"),
    ),
];

/// The effective broker configuration.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    values: BTreeMap<String, String>,
    /// The keys a file or an override set.
    explicit: std::collections::BTreeSet<String>,
    pub node_id: i32,
    /// `process.roles`.
    pub roles: Roles,
    /// The client listener (the first of `listeners` that is not a
    /// controller listener).
    pub listener: Listener,
    pub advertised: Listener,
    /// The listener of `controller.listener.names` in `listeners`: Raft and
    /// the controller's APIs. `None` on a single node with no quorum peers.
    pub controller_listener: Option<Listener>,
    /// `controller.quorum.voters` (`id@host:port,...`); empty = this node
    /// alone is the quorum.
    pub quorum_voters: BTreeMap<i32, (String, u16)>,
    /// Where a node that is only a broker finds the controllers:
    /// `controller.quorum.bootstrap.servers`, or the voters' addresses.
    pub quorum_bootstrap: Vec<(String, u16)>,
    /// `metadata.log.max.record.bytes.between.snapshots` and
    /// `metadata.log.max.snapshot.interval.ms`.
    pub metadata_snapshots: felice_metadata::SnapshotSettings,
    pub controller_quorum_election_timeout_ms: u64,
    pub controller_quorum_request_timeout_ms: u64,
    pub broker_rack: Option<String>,
    pub broker_session_timeout_ms: u64,
    pub broker_heartbeat_interval_ms: u64,
    pub log_dir: PathBuf,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics_enable: bool,
    pub delete_topic_enable: bool,
    pub message_max_bytes: i32,
    pub socket_request_max_bytes: i32,
    /// Bytes of request frames held at once across all connections; `None`
    /// = unbounded (`queued.max.request.bytes` = -1, Kafka's default).
    pub queued_max_request_bytes: Option<u64>,
    pub max_connections: usize,
    pub connections_max_idle_ms: u64,
    pub fetch_max_bytes: i32,
    pub log_segment_bytes: i32,
    pub log_roll_ms: i64,
    pub log_retention_ms: i64,
    pub log_retention_bytes: i64,
    pub log_retention_check_interval_ms: u64,
    pub log_segment_delete_delay_ms: i64,
    pub log_index_interval_bytes: i32,
    pub log_index_size_max_bytes: i32,
    pub log_flush_interval_messages: i64,
    pub log_flush_interval_ms: i64,
    pub log_flush_scheduler_interval_ms: i64,
    pub log_message_timestamp_type: String,
    pub log_cleanup_policy: String,
    pub compression_type: String,
    pub min_insync_replicas: i32,
    /// A follower that has not caught up for this long leaves the ISR.
    pub replica_lag_time_max_ms: i64,
    /// How often the high watermarks are checkpointed.
    pub replica_high_watermark_checkpoint_interval_ms: i64,
    pub offsets_topic_num_partitions: i32,
    pub offsets_topic_replication_factor: i16,
    pub offsets_topic_segment_bytes: i32,
    pub offsets_retention_ms: i64,
    pub offsets_retention_check_interval_ms: u64,
    pub offset_metadata_max_bytes: usize,
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    pub group_initial_rebalance_delay_ms: i32,
    pub group_max_size: usize,
    pub group_max_count: usize,
    pub log_cleaner_enable: bool,
    pub log_cleaner_backoff_ms: u64,
    pub log_cleaner_delete_retention_ms: i64,
    /// `log.cleaner.min.cleanable.ratio` in thousandths.
    pub log_cleaner_min_cleanable_ratio_permille: u32,
    pub log_cleaner_min_compaction_lag_ms: i64,
    /// `producer.id.expiration.ms`: an idempotent producer idle this long is
    /// forgotten by each partition.
    pub producer_id_expiration_ms: i64,
    pub producer_id_expiration_check_interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl BrokerConfig {
    /// Builds the config from an optional properties file and overrides.
    pub fn load(file: Option<&str>, overrides: &[String]) -> Result<BrokerConfig, ConfigError> {
        let mut values = BTreeMap::new();
        let mut explicit = std::collections::BTreeSet::new();
        for (key, _, default) in KEYS {
            if let Some(d) = default {
                values.insert(key.to_string(), d.to_string());
            }
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_string(),
                source,
            })?;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                    continue;
                }
                let (k, v) = line
                    .split_once('=')
                    .or_else(|| line.split_once(':'))
                    .ok_or_else(|| ConfigError::MalformedLine {
                        path: path.to_string(),
                        line: i + 1,
                        text: line.to_string(),
                    })?;
                set(&mut values, k.trim(), v.trim(), &format!(" (in {path})"))?;
                explicit.insert(k.trim().to_string());
            }
        }
        for o in overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| ConfigError::MalformedOverride(o.clone()))?;
            set(&mut values, k.trim(), v.trim(), " (from --override)")?;
            explicit.insert(k.trim().to_string());
        }
        // As in Kafka, `log.dirs` wins over `log.dir`; but a `log.dir` set
        // explicitly must beat our built-in `log.dirs` default.
        if let Some(dir) = values.get("log.dir").cloned() {
            if values.get("log.dirs").map(String::as_str) == Some("./data") {
                values.insert("log.dirs".to_string(), dir);
            }
        }
        let mut config = Self::from_values(values)?;
        config.explicit = explicit;
        Ok(config)
    }

    fn from_values(values: BTreeMap<String, String>) -> Result<BrokerConfig, ConfigError> {
        let get = |k: &str| values.get(k).map(String::as_str);
        let int = |k: &str| -> i64 { get(k).and_then(|v| v.parse().ok()).unwrap_or(-1) };
        let invalid = |k: &str, reason: &str| ConfigError::InvalidValue {
            key: k.to_string(),
            value: get(k).unwrap_or("").to_string(),
            reason: reason.to_string(),
            origin: String::new(),
        };
        let node_id = match get("broker.id") {
            Some(_) => int("broker.id"),
            None => int("node.id"),
        } as i32;
        if node_id < 0 {
            return Err(invalid("node.id", "must be >= 0"));
        }
        let roles = parse_roles(get("process.roles").unwrap_or(""))
            .ok_or_else(|| invalid("process.roles", "expected broker, controller or both"))?;
        let listeners = parse_listeners(get("listeners").unwrap_or(""))
            .ok_or_else(|| invalid("listeners", "expected NAME://HOST:PORT[,NAME://HOST:PORT]"))?;
        let controller_names: Vec<&str> = get("controller.listener.names")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let controller_listener = listeners
            .iter()
            .find(|l| controller_names.contains(&l.name.as_str()))
            .cloned();
        // A node that is only a controller has no client listener; its
        // broker part never starts, so the controller listener stands in.
        let listener = listeners
            .iter()
            .find(|l| !controller_names.contains(&l.name.as_str()))
            .or(controller_listener.as_ref().filter(|_| !roles.broker))
            .cloned()
            .ok_or_else(|| invalid("listeners", "no client listener besides the controller's"))?;
        // As Kafka's effective map: a controller listener missing from the
        // map is PLAINTEXT, so only other names need the map.
        if listener.name != "PLAINTEXT"
            && !controller_names.contains(&listener.name.as_str())
            && get("listener.security.protocol.map").is_none()
        {
            return Err(invalid(
                "listeners",
                "a listener other than PLAINTEXT needs listener.security.protocol.map",
            ));
        }
        for name in listeners.iter().map(|l| l.name.as_str()) {
            if let Some(map) = get("listener.security.protocol.map") {
                let protocol = map.split(',').find_map(|e| {
                    let (n, p) = e.split_once(':')?;
                    (n.trim() == name).then(|| p.trim().to_string())
                });
                if protocol.as_deref().is_some_and(|p| p != "PLAINTEXT") {
                    return Err(invalid(
                        "listener.security.protocol.map",
                        "only PLAINTEXT is supported",
                    ));
                }
            }
        }
        let quorum_voters = match get("controller.quorum.voters") {
            Some(v) if !v.trim().is_empty() => parse_voters(v).ok_or_else(|| {
                invalid(
                    "controller.quorum.voters",
                    "expected ID@HOST:PORT[,ID@HOST:PORT]",
                )
            })?,
            _ => BTreeMap::new(),
        };
        let quorum_bootstrap = match get("controller.quorum.bootstrap.servers") {
            Some(v) if !v.trim().is_empty() => parse_endpoints(v).ok_or_else(|| {
                invalid(
                    "controller.quorum.bootstrap.servers",
                    "expected HOST:PORT[,HOST:PORT]",
                )
            })?,
            _ => quorum_voters.values().cloned().collect(),
        };
        if quorum_voters.is_empty() && !quorum_bootstrap.is_empty() && roles.controller {
            return Err(invalid(
                "controller.quorum.bootstrap.servers",
                "a dynamic controller quorum (KIP-853) is not supported; give controllers controller.quorum.voters",
            ));
        }
        if !quorum_bootstrap.is_empty() {
            if controller_names.is_empty() {
                return Err(invalid(
                    "controller.listener.names",
                    "must name the controllers' listener when controller.quorum.voters is set",
                ));
            }
            if roles.controller && controller_listener.is_none() {
                return Err(invalid(
                    "listeners",
                    "a controller needs the listener named by controller.listener.names",
                ));
            }
            if roles.controller && !quorum_voters.contains_key(&node_id) {
                return Err(invalid(
                    "controller.quorum.voters",
                    "a controller's node.id must be one of the voters",
                ));
            }
            if !roles.controller && quorum_voters.contains_key(&node_id) {
                return Err(invalid(
                    "process.roles",
                    "a node among controller.quorum.voters must have the controller role",
                ));
            }
        } else if !(roles.controller && roles.broker) {
            return Err(invalid(
                "process.roles",
                "a node without controller.quorum.voters must be broker,controller (a single node)",
            ));
        }
        let advertised = match get("advertised.listeners") {
            Some(v) => parse_listeners(v)
                .and_then(|all| all.into_iter().find(|l| l.name == listener.name))
                .ok_or_else(|| {
                    invalid(
                        "advertised.listeners",
                        "expected NAME://HOST:PORT for the client listener",
                    )
                })?,
            None => {
                let mut a = listener.clone();
                if a.host.is_empty() || a.host == "0.0.0.0" || a.host == "::" {
                    a.host = "127.0.0.1".into();
                }
                a
            }
        };
        let log_dir = get("log.dirs")
            .unwrap_or("./data")
            .split(',')
            .next()
            .unwrap_or("./data")
            .trim()
            .to_string();
        let log_roll_ms = match get("log.roll.ms") {
            Some(_) => int("log.roll.ms"),
            None => int("log.roll.hours") * 3_600_000,
        };
        let log_retention_ms = if get("log.retention.ms").is_some() {
            int("log.retention.ms")
        } else if get("log.retention.minutes").is_some() {
            int("log.retention.minutes") * 60_000
        } else {
            int("log.retention.hours") * 3_600_000
        };
        let log_flush_scheduler_interval_ms = int("log.flush.scheduler.interval.ms");
        let log_flush_interval_ms = match get("log.flush.interval.ms") {
            Some(_) => int("log.flush.interval.ms"),
            None => log_flush_scheduler_interval_ms,
        };
        let positive = |k: &str| -> Result<i64, ConfigError> {
            let v = int(k);
            if v <= 0 {
                Err(invalid(k, "must be > 0"))
            } else {
                Ok(v)
            }
        };
        let timestamp_type = get("log.message.timestamp.type").unwrap_or("CreateTime");
        if !matches!(timestamp_type, "CreateTime" | "LogAppendTime") {
            return Err(invalid(
                "log.message.timestamp.type",
                "must be CreateTime or LogAppendTime",
            ));
        }
        let compression = get("compression.type").unwrap_or("producer");
        if !COMPRESSION_TYPES.contains(&compression) {
            return Err(invalid("compression.type", "unknown compression type"));
        }
        let cleanup = get("log.cleanup.policy").unwrap_or("delete");
        if !valid_cleanup_policy(cleanup) {
            return Err(invalid(
                "log.cleanup.policy",
                "must be delete and/or compact",
            ));
        }
        if positive("log.segment.bytes")? < 14 {
            return Err(invalid("log.segment.bytes", "must be >= 14"));
        }
        Ok(BrokerConfig {
            node_id,
            roles,
            advertised,
            controller_listener,
            quorum_voters,
            quorum_bootstrap,
            metadata_snapshots: felice_metadata::SnapshotSettings {
                max_bytes: positive("metadata.log.max.record.bytes.between.snapshots")? as u64,
                max_interval: std::time::Duration::from_millis(positive(
                    "metadata.log.max.snapshot.interval.ms",
                )? as u64),
                max_entries: felice_metadata::quorum::MAX_ENTRIES_BETWEEN_SNAPSHOTS,
            },
            controller_quorum_election_timeout_ms: positive(
                "controller.quorum.election.timeout.ms",
            )? as u64,
            controller_quorum_request_timeout_ms: positive("controller.quorum.request.timeout.ms")?
                as u64,
            broker_rack: get("broker.rack").map(str::to_string),
            broker_session_timeout_ms: positive("broker.session.timeout.ms")? as u64,
            broker_heartbeat_interval_ms: positive("broker.heartbeat.interval.ms")? as u64,
            log_dir: PathBuf::from(log_dir),
            num_partitions: positive("num.partitions")? as i32,
            default_replication_factor: positive("default.replication.factor")? as i16,
            auto_create_topics_enable: get("auto.create.topics.enable") == Some("true"),
            delete_topic_enable: get("delete.topic.enable") == Some("true"),
            message_max_bytes: positive("message.max.bytes")? as i32,
            socket_request_max_bytes: positive("socket.request.max.bytes")? as i32,
            queued_max_request_bytes: match int("queued.max.request.bytes") {
                v if v <= 0 => None,
                v if v < int("socket.request.max.bytes") => {
                    return Err(invalid(
                        "queued.max.request.bytes",
                        "must be -1 or at least socket.request.max.bytes (one request must fit)",
                    ))
                }
                v => Some(v as u64),
            },
            max_connections: positive("max.connections")? as usize,
            connections_max_idle_ms: positive("connections.max.idle.ms")? as u64,
            fetch_max_bytes: positive("fetch.max.bytes")? as i32,
            log_segment_bytes: int("log.segment.bytes") as i32,
            log_roll_ms: positive("log.roll.hours").map(|_| log_roll_ms)?,
            log_retention_ms,
            log_retention_bytes: int("log.retention.bytes"),
            log_retention_check_interval_ms: positive("log.retention.check.interval.ms")? as u64,
            log_segment_delete_delay_ms: int("log.segment.delete.delay.ms").max(0),
            log_index_interval_bytes: positive("log.index.interval.bytes")? as i32,
            log_index_size_max_bytes: positive("log.index.size.max.bytes")? as i32,
            log_flush_interval_messages: positive("log.flush.interval.messages")?,
            log_flush_interval_ms,
            log_flush_scheduler_interval_ms: positive("log.flush.scheduler.interval.ms")?,
            log_message_timestamp_type: timestamp_type.to_string(),
            log_cleanup_policy: cleanup.to_string(),
            compression_type: compression.to_string(),
            min_insync_replicas: positive("min.insync.replicas")? as i32,
            replica_lag_time_max_ms: positive("replica.lag.time.max.ms")?,
            replica_high_watermark_checkpoint_interval_ms: positive(
                "replica.high.watermark.checkpoint.interval.ms",
            )?,
            offsets_topic_num_partitions: positive("offsets.topic.num.partitions")?
                .min(crate::limits::MAX_PARTITIONS_PER_TOPIC as i64)
                as i32,
            offsets_topic_replication_factor: positive("offsets.topic.replication.factor")?
                .min(i64::from(i16::MAX)) as i16,
            offsets_topic_segment_bytes: positive("offsets.topic.segment.bytes")? as i32,
            offsets_retention_ms: positive("offsets.retention.minutes")?.saturating_mul(60_000),
            offsets_retention_check_interval_ms: positive("offsets.retention.check.interval.ms")?
                as u64,
            offset_metadata_max_bytes: int("offset.metadata.max.bytes").max(0) as usize,
            group_min_session_timeout_ms: positive("group.min.session.timeout.ms")? as i32,
            group_max_session_timeout_ms: positive("group.max.session.timeout.ms")? as i32,
            group_initial_rebalance_delay_ms: int("group.initial.rebalance.delay.ms").max(0) as i32,
            group_max_size: positive("group.max.size")? as usize,
            group_max_count: positive("group.max.count")? as usize,
            log_cleaner_enable: get("log.cleaner.enable") == Some("true"),
            log_cleaner_backoff_ms: positive("log.cleaner.backoff.ms")? as u64,
            log_cleaner_delete_retention_ms: int("log.cleaner.delete.retention.ms").max(0),
            log_cleaner_min_cleanable_ratio_permille: match get("log.cleaner.min.cleanable.ratio")
                .and_then(|v| v.parse::<f64>().ok())
            {
                Some(r) if (0.0..=1.0).contains(&r) => (r * 1000.0).round() as u32,
                _ => {
                    return Err(invalid(
                        "log.cleaner.min.cleanable.ratio",
                        "must be a number in [0, 1]",
                    ))
                }
            },
            log_cleaner_min_compaction_lag_ms: int("log.cleaner.min.compaction.lag.ms").max(0),
            producer_id_expiration_ms: positive("producer.id.expiration.ms")?,
            producer_id_expiration_check_interval_ms: positive(
                "producer.id.expiration.check.interval.ms",
            )? as u64,
            listener,
            values,
            explicit: Default::default(),
        })
    }

    /// Whether `key` was given (file or override) rather than defaulted:
    /// Kafka's STATIC_BROKER_CONFIG against DEFAULT_CONFIG.
    pub fn is_explicit(&self, key: &str) -> bool {
        self.explicit.contains(key)
    }

    /// Felice's built-in default of a broker key, if it has one.
    pub fn default_of(key: &str) -> Option<&'static str> {
        KEYS.iter()
            .find(|(k, _, _)| *k == key)
            .and_then(|(_, _, d)| *d)
    }

    /// Every broker key Felice knows, as DescribeConfigs lists them.
    pub fn describe(&self) -> Vec<BrokerConfigEntry> {
        KEYS.iter()
            .map(|(name, kind, default)| BrokerConfigEntry {
                name,
                value: self.value(name).map(str::to_string),
                explicit: self.is_explicit(name),
                default: *default,
                config_type: match kind {
                    Kind::Int => CONFIG_TYPE_INT,
                    Kind::Long => CONFIG_TYPE_LONG,
                    Kind::Bool => CONFIG_TYPE_BOOLEAN,
                    Kind::Str | Kind::Ignored => CONFIG_TYPE_STRING,
                },
            })
            .collect()
    }

    /// The effective configuration as sorted `key=value` lines.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.values {
            out.push_str(k);
            out.push('=');
            out.push_str(v);
            out.push('\n');
        }
        out
    }

    /// The effective string value of a broker key, if set.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Defaults for tests: a listener on an ephemeral port, data in `dir`.
    pub fn for_test(dir: &std::path::Path) -> BrokerConfig {
        let overrides = vec![
            "listeners=PLAINTEXT://127.0.0.1:0".to_string(),
            format!("log.dirs={}", dir.display()),
        ];
        match Self::load(None, &overrides) {
            Ok(c) => c,
            Err(e) => panic!("test config: {e}"),
        }
    }
}

fn set(
    values: &mut BTreeMap<String, String>,
    key: &str,
    value: &str,
    origin: &str,
) -> Result<(), ConfigError> {
    let Some((_, kind, _)) = KEYS.iter().find(|(k, _, _)| *k == key) else {
        return Err(ConfigError::UnknownKey {
            key: key.to_string(),
            origin: origin.to_string(),
        });
    };
    let invalid = |reason: &str| ConfigError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
        origin: origin.to_string(),
    };
    match kind {
        Kind::Int => {
            value
                .parse::<i32>()
                .map_err(|_| invalid("not a 32-bit integer"))?;
        }
        Kind::Long => {
            value
                .parse::<i64>()
                .map_err(|_| invalid("not a 64-bit integer"))?;
        }
        Kind::Bool => {
            if value != "true" && value != "false" {
                return Err(invalid("expected true or false"));
            }
        }
        Kind::Str | Kind::Ignored => {}
    }
    if key == "listeners" || key == "advertised.listeners" {
        parse_listeners(value).ok_or_else(|| invalid("expected NAME://HOST:PORT[,...]"))?;
    }
    values.insert(key.to_string(), value.to_string());
    Ok(())
}

/// Kafka's ConfigEntry.ConfigType codes (DescribeConfigs v3+).
pub const CONFIG_TYPE_BOOLEAN: i8 = 1;
pub const CONFIG_TYPE_STRING: i8 = 2;
pub const CONFIG_TYPE_INT: i8 = 3;
pub const CONFIG_TYPE_LONG: i8 = 5;
pub const CONFIG_TYPE_DOUBLE: i8 = 6;
pub const CONFIG_TYPE_LIST: i8 = 7;

/// One broker key as DescribeConfigs shows it.
#[derive(Debug, Clone)]
pub struct BrokerConfigEntry {
    pub name: &'static str,
    /// The effective value (`None`: unset, no default).
    pub value: Option<String>,
    /// Set by the file or an override (else the default).
    pub explicit: bool,
    pub default: Option<&'static str>,
    pub config_type: i8,
}

/// `process.roles`: which parts this node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub broker: bool,
    pub controller: bool,
}

fn parse_roles(value: &str) -> Option<Roles> {
    let mut roles = Roles {
        broker: false,
        controller: false,
    };
    for r in value.split(',').map(str::trim) {
        match r {
            "broker" => roles.broker = true,
            "controller" => roles.controller = true,
            _ => return None,
        }
    }
    (roles.broker || roles.controller).then_some(roles)
}

/// `NAME://HOST:PORT[,...]`, names unique.
fn parse_listeners(value: &str) -> Option<Vec<Listener>> {
    let mut out: Vec<Listener> = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, rest) = item.split_once("://")?;
        let (host, port) = rest.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if name.is_empty() || out.iter().any(|l| l.name == name) {
            return None;
        }
        out.push(Listener {
            name: name.to_string(),
            host: host.to_string(),
            port: port.parse().ok()?,
        });
    }
    (!out.is_empty()).then_some(out)
}

/// `controller.quorum.voters`: `ID@HOST:PORT[,...]`, ids unique.
fn parse_voters(value: &str) -> Option<BTreeMap<i32, (String, u16)>> {
    let mut out = BTreeMap::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (id, addr) = item.split_once('@')?;
        let (host, port) = addr.rsplit_once(':')?;
        let id: i32 = id.parse().ok().filter(|id| *id >= 0)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if out
            .insert(id, (host.to_string(), port.parse().ok()?))
            .is_some()
        {
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// `host:port,...` (`controller.quorum.bootstrap.servers`).
fn parse_endpoints(value: &str) -> Option<Vec<(String, u16)>> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (host, port) = item.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        out.push((host.to_string(), port.parse().ok()?));
    }
    (!out.is_empty()).then_some(out)
}

/// `compression.type` values, broker-wide and per topic.
pub const COMPRESSION_TYPES: &[&str] =
    &["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"];

/// `cleanup.policy`: `delete`, `compact` or both, comma-separated.
pub fn valid_cleanup_policy(v: &str) -> bool {
    !v.is_empty()
        && v.split(',')
            .all(|p| matches!(p.trim(), "delete" | "compact"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kafkas() {
        let c = BrokerConfig::load(None, &[]).expect("defaults");
        assert_eq!(c.listener.host, "127.0.0.1");
        assert_eq!(c.listener.port, 9092);
        assert_eq!(c.log_dir, PathBuf::from("./data"));
        assert_eq!(c.message_max_bytes, 1_048_588);
        assert_eq!(c.log_retention_ms, 168 * 3_600_000);
        assert!(c.render().contains("num.partitions=1\n"));
    }

    #[test]
    fn overrides_win_and_bad_keys_are_named() {
        let c = BrokerConfig::load(
            None,
            &["num.partitions=3".into(), "log.retention.ms=5".into()],
        )
        .expect("load");
        assert_eq!(c.num_partitions, 3);
        assert_eq!(c.log_retention_ms, 5);
        let e = BrokerConfig::load(None, &["no.such.key=1".into()]).expect_err("unknown");
        assert!(e.to_string().contains("no.such.key"));
        let e = BrokerConfig::load(None, &["num.partitions=abc".into()]).expect_err("malformed");
        assert!(e.to_string().contains("num.partitions"));
        let e = BrokerConfig::load(None, &["num.partitions=0".into()]).expect_err("zero");
        assert!(e.to_string().contains("num.partitions"));
    }

    #[test]
    fn queued_max_request_bytes_must_fit_one_request() {
        let c = BrokerConfig::load(None, &[]).expect("defaults");
        assert_eq!(c.queued_max_request_bytes, Some(128 * 1024 * 1024));
        let c =
            BrokerConfig::load(None, &["queued.max.request.bytes=-1".into()]).expect("unbounded");
        assert_eq!(c.queued_max_request_bytes, None);
        let e = BrokerConfig::load(None, &["queued.max.request.bytes=1000".into()])
            .expect_err("too small");
        assert!(e.to_string().contains("queued.max.request.bytes"));
    }

    #[test]
    fn properties_file_then_overrides() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("server.properties");
        std::fs::write(&path, "# comment\nnum.partitions=4\nlog.dirs=/tmp/x\n").expect("write");
        let c = BrokerConfig::load(path.to_str(), &["num.partitions=6".into()]).expect("load");
        assert_eq!(c.num_partitions, 6);
        assert_eq!(c.log_dir, PathBuf::from("/tmp/x"));
    }
}
