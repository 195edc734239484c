//! ListOffsets (key 2): earliest (-2), latest (-1), max timestamp (-3),
//! earliest local (-4), latest tiered (-5, no tiered storage: none), and by
//! timestamp (>= 0: the first record whose timestamp is at or after it).
//!
//! Timestamp lookups find the candidate batch through the time index, then
//! walk that one batch's records (decompressing it if needed, to at most
//! [`MAX_LOOKUP_DECOMPRESSED_BYTES`]) to find the exact record, as Kafka
//! does; nothing else on this path decodes records. A stored batch that
//! would decompress past the bound (a "zip bomb" a producer may store, since
//! produce does not decompress) is skipped as undecodable.

use crate::broker::Broker;
use crate::replica::{Partition, ReplicaError};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse, RequestHeader};
use kafka_protocol::protocol::{Message, VersionRange};
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
    // A replica (a follower, or a debugging tool naming a broker id) reads
    // LATEST as the log end offset, a consumer as the high watermark
    // (Kafka: no isolation level for a replica).
    let to_log_end = req.replica_id.0 >= 0;
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
            let target = match crate::handlers::led_partition(
                broker,
                topic,
                p.partition_index,
                ResponseError::UnknownTopicOrPartition,
            ) {
                Err(code) => Err(code),
                Ok(part)
                    if p.current_leader_epoch >= 0
                        && p.current_leader_epoch < part.leader_epoch() =>
                {
                    Err(ResponseError::FencedLeaderEpoch)
                }
                Ok(part) if p.current_leader_epoch > part.leader_epoch() => {
                    Err(ResponseError::UnknownLeaderEpoch)
                }
                Ok(part) => Ok(part),
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
                    Ok(p) => {
                        lookup(p, j.timestamp, to_log_end).map(|found| (found, p.leader_epoch()))
                    }
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
fn lookup(p: &Partition, timestamp: i64, to_log_end: bool) -> Result<Found, ResponseError> {
    if p.is_offline() {
        return Err(ResponseError::KafkaStorageError);
    }
    let hw = p.high_watermark();
    if timestamp == LATEST && to_log_end {
        return Ok((p.log_end_offset(), -1));
    }
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

/// Most bytes one stored batch is decompressed to for a timestamp lookup.
pub const MAX_LOOKUP_DECOMPRESSED_BYTES: usize = 128 << 20;

/// (offset, timestamp) of each record in one stored batch below `hw` (none
/// for a control batch).
fn records_of(batch: bytes::Bytes, hw: i64) -> Option<Vec<Found>> {
    match timestamps_below(&batch, hw, MAX_LOOKUP_DECOMPRESSED_BYTES) {
        Ok(found) => Some(found),
        Err(e) => {
            tracing::warn!(error = %e, "could not decode a stored batch for a timestamp lookup");
            None
        }
    }
}

fn timestamps_below(
    batch: &[u8],
    hw: i64,
    limit: usize,
) -> Result<Vec<Found>, felice_wire::BatchError> {
    let header = felice_wire::BatchHeader::parse(batch)?;
    if header.is_control() {
        return Ok(Vec::new());
    }
    let plain;
    let walk = if header.is_compressed() {
        let (header, raw) = felice_wire::codec::records_section(batch, limit)?;
        plain = felice_wire::codec::as_uncompressed(&header, &raw)?;
        &plain[..]
    } else {
        batch
    };
    let mut found = Vec::new();
    for r in felice_wire::RecordTimestamps::new(walk)? {
        let (offset, timestamp) = r?;
        if offset < hw {
            found.push((offset, timestamp));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use felice_wire::{build_batch, codec, Compression};

    fn batch_of(n: usize, value_len: usize) -> Vec<u8> {
        let value = vec![0u8; value_len];
        let recs: Vec<felice_wire::RecordSpec<'_>> = (0..n)
            .map(|i| (None, Some(value.as_slice()), 1_000 + i as i64))
            .collect();
        build_batch(&recs)
    }

    /// Offsets and timestamps below the high watermark, for plain and compressed
    /// batches alike; a batch that would decompress past the bound is refused, not
    /// expanded.
    #[test]
    fn timestamp_walk_is_bounded() {
        let plain = batch_of(5, 100);
        let want: Vec<Found> = (0..3).map(|i| (i, 1_000 + i)).collect();
        assert_eq!(timestamps_below(&plain, 3, 1 << 20).expect("plain"), want);
        for codec_kind in [
            Compression::Gzip,
            Compression::Lz4,
            Compression::Zstd,
            Compression::Snappy,
        ] {
            let packed = codec::recompress(&plain, codec_kind, 1 << 20).expect("compress");
            assert_eq!(
                timestamps_below(&packed, 3, 1 << 20).expect("compressed"),
                want,
                "{codec_kind:?}"
            );
        }
        // 64 records of 16 KiB zeros: ~1 MiB once decompressed, a few KiB stored.
        let bomb = codec::recompress(&batch_of(64, 16 << 10), Compression::Gzip, 4 << 20)
            .expect("compress");
        assert!(bomb.len() < 64 << 10, "{} bytes stored", bomb.len());
        assert!(timestamps_below(&bomb, i64::MAX, 64 << 10).is_err());
        assert_eq!(
            timestamps_below(&bomb, i64::MAX, 4 << 20)
                .expect("within bound")
                .len(),
            64
        );
    }
}
