//! The controller's decisions: which metadata records a create or delete of
//! topics turns into. Runs against the current image inside
//! [`felice_metadata::MetadataStore::commit`], so validation and append are
//! atomic with respect to other metadata changes.
//!
//! Replicas are placed over the unfenced brokers, rack-aware
//! ([`crate::placement`]); the first replica leads, and every replica starts
//! in the ISR.

use crate::config::BrokerConfig;
use crate::placement::{place, Candidate};
use crate::topic_config;
use felice_metadata::{MetadataImage, MetadataRecord, TopicId};
use kafka_protocol::ResponseError;

/// Kafka's limit on topic name length.
pub const MAX_TOPIC_NAME_LEN: usize = 249;
use crate::limits::{MAX_PARTITIONS_PER_CREATE_REQUEST, MAX_PARTITIONS_PER_TOPIC};

/// A rejected topic operation: the Kafka error and a message for the client.
#[derive(Debug, Clone)]
pub struct TopicError {
    pub code: ResponseError,
    pub message: String,
}

impl TopicError {
    pub fn new(code: ResponseError, message: impl Into<String>) -> TopicError {
        TopicError {
            code,
            message: message.into(),
        }
    }
}

/// Kafka's topic name rules: 1..=249 chars of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let invalid = |why: &str| {
        TopicError::new(
            ResponseError::InvalidTopicException,
            format!("Topic name \"{name}\" is illegal, {why}"),
        )
    };
    if name.is_empty() {
        return Err(invalid("it can't be empty"));
    }
    if name == "." || name == ".." {
        return Err(invalid("it can't be '.' or '..'"));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(invalid("it can't be longer than 249 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(invalid(
            "it contains a character other than ASCII alphanumerics, '.', '_' and '-'",
        ));
    }
    Ok(())
}

/// What a CreateTopics entry asks for, after defaults are applied.
pub struct NewTopic {
    pub name: String,
    pub num_partitions: i32,
    pub replication_factor: i16,
    /// Manual assignment: partition i -> broker ids (empty = automatic).
    pub assignments: Vec<Vec<i32>>,
    pub configs: Vec<(String, Option<String>)>,
}

/// What one request may still create: starts at
/// `MAX_PARTITIONS_PER_CREATE_REQUEST` and is charged by each created topic.
pub struct PartitionBudget(i64);

impl PartitionBudget {
    pub fn per_request() -> PartitionBudget {
        PartitionBudget(MAX_PARTITIONS_PER_CREATE_REQUEST)
    }
}

/// Validates a new topic against the image and the request's budget and
/// returns its records (charging the budget only when it succeeds).
pub fn create_topic_records(
    image: &MetadataImage,
    broker: &BrokerConfig,
    t: &NewTopic,
    budget: &mut PartitionBudget,
) -> Result<(TopicId, Vec<MetadataRecord>), TopicError> {
    validate_topic_name(&t.name)?;
    if image.topic(&t.name).is_some() {
        return Err(TopicError::new(
            ResponseError::TopicAlreadyExists,
            format!("Topic '{}' already exists.", t.name),
        ));
    }
    // Every registered broker counts for the replication factor (as KRaft);
    // leaders are chosen among the unfenced ones.
    let brokers: Vec<i32> = image.brokers.keys().copied().collect();
    let unfenced: Vec<i32> = image.unfenced_brokers().map(|b| b.node_id).collect();
    let (num_partitions, replication_factor) = if t.assignments.is_empty() {
        let np = if t.num_partitions == -1 {
            broker.num_partitions
        } else {
            t.num_partitions
        };
        let rf = if t.replication_factor == -1 {
            broker.default_replication_factor
        } else {
            t.replication_factor
        };
        if np <= 0 {
            return Err(TopicError::new(
                ResponseError::InvalidPartitions,
                "Number of partitions must be larger than 0.",
            ));
        }
        if rf <= 0 {
            return Err(TopicError::new(
                ResponseError::InvalidReplicationFactor,
                "Replication factor must be larger than 0.",
            ));
        }
        (np, rf)
    } else {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err(TopicError::new(
                ResponseError::InvalidRequest,
                "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.",
            ));
        }
        let rf = t.assignments.first().map(|a| a.len()).unwrap_or(0) as i16;
        (t.assignments.len() as i32, rf)
    };
    if num_partitions > MAX_PARTITIONS_PER_TOPIC {
        return Err(TopicError::new(
            ResponseError::InvalidPartitions,
            format!("Number of partitions {num_partitions} exceeds the limit of {MAX_PARTITIONS_PER_TOPIC}."),
        ));
    }
    if i64::from(num_partitions) > budget.0 {
        return Err(TopicError::new(
            ResponseError::InvalidPartitions,
            format!("Creating {num_partitions} more partitions exceeds the limit of {MAX_PARTITIONS_PER_CREATE_REQUEST} per request."),
        ));
    }
    if replication_factor as usize > brokers.len() {
        return Err(TopicError::new(
            ResponseError::InvalidReplicationFactor,
            format!("Unable to replicate the partition {replication_factor} time(s): The target replication factor of {replication_factor} cannot be reached because only {} broker(s) are registered.", brokers.len()),
        ));
    }
    if unfenced.is_empty() {
        return Err(TopicError::new(
            ResponseError::InvalidReplicationFactor,
            format!("Unable to replicate the partition {replication_factor} time(s): All brokers are currently fenced."),
        ));
    }
    for (i, a) in t.assignments.iter().enumerate() {
        let mut seen = a.clone();
        seen.sort_unstable();
        seen.dedup();
        if a.len() != replication_factor as usize
            || seen.len() != a.len()
            || a.iter().any(|b| !brokers.contains(b))
        {
            return Err(TopicError::new(
                ResponseError::InvalidReplicaAssignment,
                format!("Invalid replica assignment for partition {i}: {a:?}"),
            ));
        }
    }
    for (key, value) in &t.configs {
        topic_config::validate(key, value.as_deref())
            .map_err(|e| TopicError::new(ResponseError::InvalidConfig, e.to_string()))?;
    }
    let topic_id = loop {
        let id = uuid::Uuid::new_v4();
        if image.topic_by_id(&id).is_none() {
            break id;
        }
    };
    budget.0 -= i64::from(num_partitions);
    let mut records = vec![MetadataRecord::Topic {
        name: t.name.clone(),
        topic_id,
    }];
    for (key, value) in &t.configs {
        records.push(MetadataRecord::TopicConfig {
            topic_id,
            key: key.clone(),
            value: value.clone(),
        });
    }
    let placed = if t.assignments.is_empty() {
        place_partitions(image, topic_id, num_partitions, replication_factor as usize)
    } else {
        t.assignments.clone()
    };
    for (p, replicas) in (0..num_partitions).zip(placed) {
        let leader = replicas.first().copied().unwrap_or(-1);
        records.push(MetadataRecord::Partition {
            topic_id,
            partition: p,
            isr: replicas.clone(),
            replicas,
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
        });
    }
    Ok((topic_id, records))
}

/// The replicas of partitions `0..num_partitions` of a topic, placed over
/// the unfenced brokers ([`crate::placement`]) from a start the topic id
/// picks; as KRaft, fenced brokers take replicas only when the unfenced ones
/// are too few, and never lead. The caller has checked that enough brokers
/// are registered and at least one is unfenced.
fn place_partitions(
    image: &MetadataImage,
    topic_id: TopicId,
    num_partitions: i32,
    replication_factor: usize,
) -> Vec<Vec<i32>> {
    let candidates: Vec<Candidate> = image
        .unfenced_brokers()
        .map(|b| Candidate {
            node_id: b.node_id,
            rack: b.rack.clone(),
        })
        .collect();
    // The topic id is random: so is where its partitions start.
    let start = topic_id.as_u64_pair().0;
    let mut placed = place(&candidates, num_partitions, replication_factor, start);
    let fenced: Vec<i32> = image
        .brokers
        .values()
        .filter(|b| b.fenced)
        .map(|b| b.node_id)
        .collect();
    for (p, replicas) in placed.iter_mut().enumerate() {
        let missing = replication_factor.saturating_sub(replicas.len());
        if !fenced.is_empty() {
            replicas.extend((0..missing).map(|r| fenced[(p + r) % fenced.len()]));
        }
    }
    placed
}

/// CreatePartitions of one topic: validates the new count (and the manual
/// assignments of the new partitions, if any) against the image and the
/// request's budget, and returns the new partitions' records, as Kafka's
/// controller checks them.
pub fn add_partitions_records(
    image: &MetadataImage,
    name: &str,
    count: i32,
    assignments: Option<&[Vec<i32>]>,
    budget: &mut PartitionBudget,
) -> Result<Vec<MetadataRecord>, TopicError> {
    let topic = image.topic(name).ok_or_else(|| {
        TopicError::new(
            ResponseError::UnknownTopicOrPartition,
            format!("The topic '{name}' does not exist."),
        )
    })?;
    let current = topic.partitions.len() as i32;
    if count < current {
        return Err(TopicError::new(
            ResponseError::InvalidPartitions,
            format!("The topic {name} currently has {current} partition(s); {count} would not be an increase."),
        ));
    }
    if count == current {
        return Err(TopicError::new(
            ResponseError::InvalidPartitions,
            format!("Topic already has {current} partition(s)."),
        ));
    }
    if count > MAX_PARTITIONS_PER_TOPIC {
        return Err(TopicError::new(
            ResponseError::InvalidPartitions,
            format!(
                "Number of partitions {count} exceeds the limit of {MAX_PARTITIONS_PER_TOPIC}."
            ),
        ));
    }
    let adding = count - current;
    if i64::from(adding) > budget.0 {
        return Err(TopicError::new(
            ResponseError::InvalidPartitions,
            format!("Creating {adding} more partitions exceeds the limit of {MAX_PARTITIONS_PER_CREATE_REQUEST} per request."),
        ));
    }
    let replication_factor = topic.partitions.first().map_or(1, |p| p.replicas.len());
    let new: Vec<Vec<i32>> = match assignments {
        Some(a) => {
            if a.len() != adding as usize {
                return Err(TopicError::new(
                    ResponseError::InvalidReplicaAssignment,
                    format!("Attempted to add {adding} additional partition(s), but only {} assignment(s) were specified.", a.len()),
                ));
            }
            for replicas in a {
                let mut seen = std::collections::BTreeSet::new();
                for b in replicas {
                    if !image.brokers.contains_key(b) {
                        return Err(TopicError::new(
                            ResponseError::InvalidReplicaAssignment,
                            format!("The manual partition assignment includes broker {b}, but no such broker is registered."),
                        ));
                    }
                    if !seen.insert(b) {
                        return Err(TopicError::new(
                            ResponseError::InvalidReplicaAssignment,
                            format!("The manual partition assignment includes the broker {b} more than once."),
                        ));
                    }
                }
                if replicas.len() != replication_factor {
                    return Err(TopicError::new(
                        ResponseError::InvalidReplicaAssignment,
                        format!("The manual partition assignment includes a partition with {} replica(s), but this is not consistent with previous partitions, which have {replication_factor} replica(s).", replicas.len()),
                    ));
                }
                if !replicas
                    .iter()
                    .any(|b| image.brokers.get(b).is_some_and(|b| !b.fenced))
                {
                    return Err(TopicError::new(
                        ResponseError::InvalidReplicaAssignment,
                        "All brokers specified in the manual partition assignment are fenced or in controlled shutdown.",
                    ));
                }
            }
            a.to_vec()
        }
        None => {
            if image.unfenced_brokers().next().is_none() {
                return Err(TopicError::new(
                    ResponseError::InvalidReplicationFactor,
                    format!("Unable to replicate the partition {replication_factor} time(s): All brokers are currently fenced."),
                ));
            }
            if image.brokers.len() < replication_factor {
                return Err(TopicError::new(
                    ResponseError::InvalidReplicationFactor,
                    format!("Unable to replicate the partition {replication_factor} time(s): The target replication factor of {replication_factor} cannot be reached because only {} broker(s) are registered.", image.brokers.len()),
                ));
            }
            place_partitions(image, topic.topic_id, count, replication_factor)
                .split_off(current as usize)
        }
    };
    budget.0 -= i64::from(adding);
    Ok(new
        .into_iter()
        .zip(current..count)
        .map(|(replicas, partition)| {
            // The first unfenced replica leads; the unfenced ones are the ISR.
            let isr: Vec<i32> = replicas
                .iter()
                .copied()
                .filter(|b| image.brokers.get(b).is_some_and(|b| !b.fenced))
                .collect();
            MetadataRecord::Partition {
                topic_id: topic.topic_id,
                partition,
                leader: isr.first().copied().unwrap_or(-1),
                isr,
                replicas,
                leader_epoch: 0,
                partition_epoch: 0,
            }
        })
        .collect())
}

/// What the controller's request handlers need: the quorum they commit to
/// and the defaults of new topics. They run on the active controller; on
/// any other node their commits fail with NOT_CONTROLLER.
pub struct ControllerContext {
    pub quorum: std::sync::Arc<felice_metadata::MetadataQuorum>,
    pub config: BrokerConfig,
    pub clock: crate::clock::SharedClock,
    /// Brokers' heartbeats, while this node is the active controller.
    pub heartbeats: crate::broker_lifecycle::Heartbeats,
    /// The observers fetching the metadata log from this node while it leads.
    pub observers: Observers,
}

impl ControllerContext {
    pub fn new(
        quorum: std::sync::Arc<felice_metadata::MetadataQuorum>,
        config: BrokerConfig,
        clock: crate::clock::SharedClock,
    ) -> ControllerContext {
        ControllerContext {
            quorum,
            config,
            clock,
            heartbeats: Default::default(),
            observers: Default::default(),
        }
    }
}

/// The nodes that fetch the metadata log as observers (brokers that are not
/// voters), as the leader saw their last fetch: what DescribeQuorum lists.
/// Bounded: [`crate::limits::MAX_BROKERS`] entries, the stalest dropped, and
/// one not seen for [`OBSERVER_SESSION`] is left out.
#[derive(Default)]
pub struct Observers {
    seen: std::sync::Mutex<std::collections::HashMap<i32, ObserverState>>,
}

#[derive(Debug, Clone, Copy)]
pub struct ObserverState {
    /// Kafka's log end offset: the entries it has (its next index).
    pub log_end_offset: i64,
    pub last_fetch_ms: i64,
    /// When it last fetched with nothing committed left to get.
    pub last_caught_up_ms: i64,
}

/// How long an observer that stopped fetching is still listed (Kafka's
/// leader forgets observers after the same 5 minutes).
pub const OBSERVER_SESSION: std::time::Duration = std::time::Duration::from_secs(300);

impl Observers {
    pub fn fetched(&self, node: i32, log_end_offset: i64, caught_up: bool, now_ms: i64) {
        let mut seen = match self.seen.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let previous_caught_up = seen.get(&node).map_or(-1, |s| s.last_caught_up_ms);
        if !seen.contains_key(&node) && seen.len() >= crate::limits::MAX_BROKERS {
            if let Some(stalest) = seen
                .iter()
                .min_by_key(|(_, s)| s.last_fetch_ms)
                .map(|(id, _)| *id)
            {
                seen.remove(&stalest);
            }
        }
        seen.insert(
            node,
            ObserverState {
                log_end_offset,
                last_fetch_ms: now_ms,
                last_caught_up_ms: if caught_up {
                    now_ms
                } else {
                    previous_caught_up
                },
            },
        );
    }

    /// The observers seen within [`OBSERVER_SESSION`], by node id.
    pub fn current(&self, now_ms: i64) -> Vec<(i32, ObserverState)> {
        let seen = match self.seen.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut out: Vec<(i32, ObserverState)> = seen
            .iter()
            .filter(|(_, s)| now_ms - s.last_fetch_ms <= OBSERVER_SESSION.as_millis() as i64)
            .map(|(id, s)| (*id, *s))
            .collect();
        out.sort_by_key(|(id, _)| *id);
        out
    }
}

/// The Kafka error of a commit that did not happen for a reason other than
/// the request's own validation.
/// What every result of a request carries when its commit of (infallible)
/// decisions failed: NOT_CONTROLLER or KAFKA_STORAGE_ERROR; `None` if it
/// succeeded.
pub fn commit_failure<T>(
    commit: &Result<T, felice_metadata::CommitError<std::convert::Infallible>>,
) -> Option<TopicError> {
    match commit {
        Ok(_) => None,
        Err(felice_metadata::CommitError::NotController(_)) => Some(TopicError::new(
            ResponseError::NotController,
            "this broker is not the active controller",
        )),
        Err(felice_metadata::CommitError::Failed(e)) => {
            Some(TopicError::new(ResponseError::KafkaStorageError, e.clone()))
        }
        Err(felice_metadata::CommitError::Rejected(never)) => match *never {},
    }
}

pub fn commit_error<E>(e: &felice_metadata::CommitError<E>) -> ResponseError {
    match e {
        felice_metadata::CommitError::Rejected(_) => ResponseError::InvalidRequest,
        felice_metadata::CommitError::NotController(_) => ResponseError::NotController,
        felice_metadata::CommitError::Failed(_) => ResponseError::KafkaStorageError,
    }
}

/// AllocateProducerIds (key 67), on the active controller: hands the broker
/// the next block of producer ids, recorded before it is answered.
pub async fn allocate_producer_ids(
    ctx: &ControllerContext,
    req: kafka_protocol::messages::AllocateProducerIdsRequest,
) -> kafka_protocol::messages::AllocateProducerIdsResponse {
    use crate::producer_ids::PRODUCER_ID_BLOCK_SIZE;
    use kafka_protocol::messages::{AllocateProducerIdsResponse, ProducerId};
    let mut start = 0;
    let r = ctx
        .quorum
        .commit::<ResponseError>(|image| {
            start = image.next_producer_id;
            let next = start
                .checked_add(PRODUCER_ID_BLOCK_SIZE)
                .ok_or(ResponseError::UnknownServerError)?;
            Ok(vec![MetadataRecord::ProducerIds {
                broker_id: req.broker_id.0,
                broker_epoch: req.broker_epoch,
                next_producer_id: next,
            }])
        })
        .await;
    match r {
        Ok(_) => AllocateProducerIdsResponse::default()
            .with_error_code(0)
            .with_producer_id_start(ProducerId(start))
            .with_producer_id_len(PRODUCER_ID_BLOCK_SIZE as i32),
        Err(felice_metadata::CommitError::Rejected(code)) => {
            AllocateProducerIdsResponse::default().with_error_code(code.code())
        }
        Err(e) => AllocateProducerIdsResponse::default().with_error_code(commit_error(&e).code()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafkas_rules() {
        assert!(validate_topic_name("a.b_c-D9").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", "ü"] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_topic_name(&"x".repeat(249)).is_ok());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn one_request_cannot_exceed_its_partition_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = BrokerConfig::for_test(dir.path());
        let image = MetadataImage::default().apply(&MetadataRecord::RegisterBroker {
            node_id: 1,
            host: "h".into(),
            port: 1,
            rack: None,
        });
        let topic = |name: &str, n: i32| NewTopic {
            name: name.into(),
            num_partitions: n,
            replication_factor: 1,
            assignments: vec![],
            configs: vec![],
        };
        let mut budget = PartitionBudget::per_request();
        let big = MAX_PARTITIONS_PER_TOPIC;
        assert!(create_topic_records(&image, &broker, &topic("a", big), &mut budget).is_ok());
        let e = create_topic_records(&image, &broker, &topic("b", 1), &mut budget)
            .expect_err("over budget");
        assert_eq!(e.code, ResponseError::InvalidPartitions);
        assert!(create_topic_records(
            &image,
            &broker,
            &topic("c", 1),
            &mut PartitionBudget::per_request()
        )
        .is_ok());
    }

    #[test]
    fn partitions_are_placed_rack_aware_on_unfenced_brokers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = BrokerConfig::for_test(dir.path());
        let mut image = MetadataImage::default();
        for (id, rack) in [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "b")] {
            image = image.apply(&MetadataRecord::RegisterBroker {
                node_id: id,
                host: "h".into(),
                port: id,
                rack: Some(rack.into()),
            });
        }
        // A fenced broker leads nothing.
        image = image.apply(&MetadataRecord::FenceBroker {
            node_id: 5,
            broker_epoch: image.brokers[&5].epoch,
        });
        let topic = NewTopic {
            name: "t".into(),
            num_partitions: 8,
            replication_factor: 1,
            assignments: vec![],
            configs: vec![],
        };
        let (_, records) =
            create_topic_records(&image, &broker, &topic, &mut PartitionBudget::per_request())
                .expect("created");
        let leaders: Vec<i32> = records
            .iter()
            .filter_map(|r| match r {
                MetadataRecord::Partition { leader, .. } => Some(*leader),
                _ => None,
            })
            .collect();
        assert_eq!(leaders.len(), 8);
        let rack_a = |id: &i32| *id <= 2;
        for pair in leaders.windows(2) {
            assert_ne!(rack_a(&pair[0]), rack_a(&pair[1]), "{leaders:?}");
        }
        for id in 1..=4 {
            assert_eq!(
                leaders.iter().filter(|l| **l == id).count(),
                2,
                "{leaders:?}"
            );
        }
    }
}
