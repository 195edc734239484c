//! ListOffsets (key 2): earliest (-2), latest (-1), max timestamp (-3),
//! earliest local (-4), latest tiered (-5, no tiered storage: none), and by
//! timestamp (>= 0: the first record whose timestamp is at or after it).
//!
//! Timestamp lookups find the candidate batch through the time index, then
//! decode that one batch (decompressing if needed) to find the exact record,
//! as Kafka does; nothing else on this path decodes records.

use crate::broker::Broker;
use crate::replica::{Partition, ReplicaError};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse, RequestHeader};
use kafka_protocol::protocol::{Message, VersionRange};
use kafka_protocol::records::RecordBatchDecoder;
use kafka_protocol::ResponseError;
use std::sync::Arc;

pub const VERSIONS: VersionRange = ListOffsetsRequest::VERSIONS;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;
const EARLIEST_PENDING_UPLOAD: i64 = -6;

/// (offset, timestamp) found, or none (-1, -1).
type Found = (i64, i64);

pub async fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    req: ListOffsetsRequest,
) -> ListOffsetsResponse {
    // leader_epoch exists from v4 and may not be set below it.
    let with_epoch = header.request_api_version >= 4;
    let image = broker.image();
    struct Job {
        topic: usize,
        partition_index: i32,
        timestamp: i64,
        target: Result<Arc<Partition>, ResponseError>,
    }
    let mut jobs = Vec::new();
    let mut topics = Vec::with_capacity(req.topics.len());
    for (ti, t) in req.topics.iter().enumerate() {
        let topic = image.topic(t.name.0.as_str());
        for p in &t.partitions {
            let target = match topic
                .and_then(|topic| broker.replicas.get(&topic.topic_id, p.partition_index))
            {
                None => Err(ResponseError::UnknownTopicOrPartition),
                Some(part)
                    if p.current_leader_epoch >= 0
                        && p.current_leader_epoch < part.leader_epoch =>
                {
                    Err(ResponseError::FencedLeaderEpoch)
                }
                Some(part) if p.current_leader_epoch > part.leader_epoch => {
                    Err(ResponseError::UnknownLeaderEpoch)
                }
                Some(part) => Ok(part),
            };
            jobs.push(Job {
                topic: ti,
                partition_index: p.partition_index,
                timestamp: p.timestamp,
                target,
            });
        }
        topics.push(ListOffsetsTopicResponse::default().with_name(t.name.clone()));
    }
    let results = tokio::task::spawn_blocking(move || {
        jobs.into_iter()
            .map(|j| {
                let r = match &j.target {
                    Ok(p) => lookup(p, j.timestamp).map(|found| (found, p.leader_epoch)),
                    Err(code) => Err(*code),
                };
                (j.topic, j.partition_index, r)
            })
            .collect::<Vec<_>>()
    })
    .await;
    let Ok(results) = results else {
        return ListOffsetsResponse::default();
    };
    for (ti, partition_index, r) in results {
        let base = ListOffsetsPartitionResponse::default().with_partition_index(partition_index);
        let resp = match r {
            Ok(((offset, timestamp), epoch)) => base
                .with_error_code(0)
                .with_offset(offset)
                .with_timestamp(timestamp)
                .with_leader_epoch(if offset >= 0 && with_epoch { epoch } else { -1 }),
            Err(code) => base
                .with_error_code(code.code())
                .with_offset(-1)
                .with_timestamp(-1)
                .with_leader_epoch(-1),
        };
        if let Some(t) = topics.get_mut(ti) {
            t.partitions.push(resp);
        }
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// Resolves one lookup (blocking).
fn lookup(p: &Partition, timestamp: i64) -> Result<Found, ResponseError> {
    let hw = p.high_watermark();
    let storage = |e: ReplicaError| {
        tracing::warn!(error = %e, "list offsets failed");
        ResponseError::KafkaStorageError
    };
    match timestamp {
        LATEST => Ok((hw, -1)),
        EARLIEST | EARLIEST_LOCAL => Ok((p.log_start_offset(), -1)),
        LATEST_TIERED | EARLIEST_PENDING_UPLOAD => Ok((-1, -1)),
        MAX_TIMESTAMP => {
            let batch = p
                .with_log_locked(|log| log.max_timestamp_batch())
                .map_err(storage)?;
            Ok(batch
                .and_then(|b| records_of(b, hw))
                .and_then(|recs| {
                    let max = recs.iter().map(|r| r.1).max()?;
                    recs.into_iter().find(|r| r.1 == max)
                })
                .unwrap_or((-1, -1)))
        }
        t if t >= 0 => {
            let batch = p
                .with_log_locked(|log| log.find_batch_by_timestamp(t))
                .map_err(storage)?;
            let start = p.log_start_offset();
            Ok(batch
                .and_then(|b| records_of(b, hw))
                .and_then(|recs| recs.into_iter().find(|r| r.1 >= t && r.0 >= start))
                .unwrap_or((-1, -1)))
        }
        _ => Err(ResponseError::InvalidRequest),
    }
}

/// (offset, timestamp) of each record in one stored batch below `hw`.
fn records_of(mut batch: bytes::Bytes, hw: i64) -> Option<Vec<Found>> {
    match RecordBatchDecoder::decode(&mut batch) {
        Ok(set) => Some(
            set.records
                .iter()
                .filter(|r| r.offset < hw && !r.control)
                .map(|r| (r.offset, r.timestamp))
                .collect(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "could not decode a stored batch for a timestamp lookup");
            None
        }
    }
}
