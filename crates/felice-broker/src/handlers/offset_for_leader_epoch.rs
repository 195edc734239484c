//! OffsetForLeaderEpoch (key 23, v2–4 as Kafka 4, KIP-896): for each
//! partition, the largest leader epoch at or below the one asked and the
//! offset where the epoch after it starts (the log end offset for the
//! latest). Consumers ask it after a leader change to find out whether
//! their position was truncated away (KIP-320); a follower asks it before
//! fetching again (KIP-101, KIP-279).
//!
//! As Kafka's `Partition.lastOffsetForLeaderEpoch`: only the leader answers
//! (NOT_LEADER_OR_FOLLOWER elsewhere, UNKNOWN_TOPIC_OR_PARTITION for what
//! the image lacks); a `current_leader_epoch` older than the partition's is
//! FENCED_LEADER_EPOCH, a newer one UNKNOWN_LEADER_EPOCH (-1 skips the
//! check); an epoch the log cannot place answers -1 / -1 with no error.
//! The answer comes from the log's epoch cache (`felice_log::epoch_cache`).

use crate::broker::Broker;
use crate::replica::Partition;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, RequestHeader,
};
use kafka_protocol::protocol::{Message, VersionRange};
use kafka_protocol::ResponseError;
use std::sync::Arc;

pub const VERSIONS: VersionRange = OffsetForLeaderEpochRequest::VERSIONS;

pub async fn handle(
    broker: &Arc<Broker>,
    _header: &RequestHeader,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let image = broker.image();
    struct Job {
        topic: usize,
        partition: i32,
        leader_epoch: i32,
        target: Result<Arc<Partition>, ResponseError>,
    }
    let mut jobs = Vec::new();
    let mut topics = Vec::with_capacity(req.topics.len());
    for (ti, t) in req.topics.iter().enumerate() {
        let topic = image.topic(t.topic.0.as_str());
        for p in &t.partitions {
            let target = crate::handlers::led_partition(
                broker,
                topic,
                p.partition,
                ResponseError::UnknownTopicOrPartition,
            )
            .and_then(|part| {
                let current = part.leader_epoch();
                match p.current_leader_epoch {
                    -1 => Ok(part),
                    e if e < current => Err(ResponseError::FencedLeaderEpoch),
                    e if e > current => Err(ResponseError::UnknownLeaderEpoch),
                    _ => Ok(part),
                }
            });
            jobs.push(Job {
                topic: ti,
                partition: p.partition,
                leader_epoch: p.leader_epoch,
                target,
            });
        }
        topics.push(OffsetForLeaderTopicResult::default().with_topic(t.topic.clone()));
    }
    // The epoch cache is behind the log's lock: read it off the runtime.
    let results = tokio::task::spawn_blocking(move || {
        jobs.into_iter()
            .map(|j| {
                let r = j.target.and_then(|p| {
                    p.with_log_locked(|log| Ok(log.end_offset_for_epoch(j.leader_epoch)))
                        .map_err(|e| {
                            tracing::warn!(error = %e, "offset for leader epoch failed");
                            ResponseError::KafkaStorageError
                        })
                });
                (j.topic, j.partition, r)
            })
            .collect::<Vec<_>>()
    })
    .await;
    let Ok(results) = results else {
        return OffsetForLeaderEpochResponse::default();
    };
    for (ti, partition, r) in results {
        let base = EpochEndOffset::default().with_partition(partition);
        let answer = match r {
            Ok((epoch, end_offset)) => base
                .with_error_code(0)
                .with_leader_epoch(epoch)
                .with_end_offset(end_offset),
            Err(code) => base
                .with_error_code(code.code())
                .with_leader_epoch(-1)
                .with_end_offset(-1),
        };
        if let Some(t) = topics.get_mut(ti) {
            t.partitions.push(answer);
        }
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
