//! Fetch (key 1): reads record batches from partition logs, up to the high
//! watermark, as stored (a batch that contains the fetch offset is returned
//! whole; the client skips records before its offset).
//!
//! Long poll: with less than `min_bytes` available the fetch parks in the
//! partitions' purgatory (see [`crate::replica`]) until an append moves a
//! high watermark or `max_wait_ms` passes, then reads again. No fetch
//! sessions are handed out (session id 0 in every response, which KIP-227
//! defines as "no session"): clients then send full fetch requests.
//!
//! Records: a partition's read of at least `ZERO_COPY_MIN_BYTES` is not
//! read at all: the response carries a memory map of the range as a stand-in
//! and the connection sends the bytes with `sendfile` from the segment file
//! (see [`crate::response`]). Smaller reads are read into memory and copied
//! while the broker-wide budget `FETCH_MEMORY_BUDGET_BYTES` has room for
//! them, and are left in the page cache like large ones when it has not. So
//! the memory fetches hold grows neither with the data they return nor with
//! the number of connections.
//!
//! Replica fetches (a `replica_id` of 0 or more: `replica_state` from v15,
//! the top-level field below it) come from followers: they read up to the
//! log end offset instead of the high watermark, and their fetch offset is
//! recorded in the partition's replication state before the read (Kafka's
//! `updateFollowerFetchState`, on the first read only, not on re-reads
//! after a wait), which may move the high watermark and propose an ISR
//! change to the controller. A `last_fetched_epoch` (v12+) the leader's
//! epoch cache disagrees with gets a `diverging_epoch` and no records, so
//! the follower truncates first (KIP-320). A broker that is not a replica
//! gets NOT_LEADER_OR_FOLLOWER (UNKNOWN_LEADER_EPOCH when it named an
//! epoch), as Kafka.
//!
//! Limits: the response holds at most `min(max_bytes, fetch.max.bytes)`
//! bytes of records, each partition at most its `partition_max_bytes`,
//! except that the first partition with data returns at least one whole
//! batch (KIP-74) so a consumer never gets stuck behind a large batch.

use crate::broker::Broker;
use crate::limits::MAX_FETCH_WAIT_MS;
use crate::replica::{Partition, ReplicaError};
use crate::response::{FileRange, Source, ZERO_COPY_MIN_BYTES};
use bytes::Bytes;
use felice_log::LogError;
use felice_replica::{IsrProposal, StateError};
use kafka_protocol::messages::fetch_response::{
    EpochEndOffset, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, RequestHeader};
use kafka_protocol::protocol::{Message, VersionRange};
use kafka_protocol::ResponseError;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub const VERSIONS: VersionRange = FetchRequest::VERSIONS;

/// Fetch v13 names topics by id.
const FIRST_TOPIC_ID_VERSION: i16 = 13;

fn read_error_code(e: &ReplicaError) -> ResponseError {
    match e {
        ReplicaError::Closed(_) | ReplicaError::NotLeader(_) => ResponseError::NotLeaderOrFollower,
        ReplicaError::Offline(_) => ResponseError::KafkaStorageError,
        ReplicaError::Log(LogError::OffsetOutOfRange { .. }) => ResponseError::OffsetOutOfRange,
        ReplicaError::Log(LogError::Io { .. }) => ResponseError::KafkaStorageError,
        ReplicaError::Log(LogError::CorruptBatch { .. }) => ResponseError::CorruptMessage,
        ReplicaError::Log(
            LogError::InvalidConfig { .. }
            | LogError::AppendTooLarge { .. }
            | LogError::EmptyAppend
            | LogError::UnexpectedAppendOffset { .. }
            | LogError::Producer(_),
        ) => ResponseError::UnknownServerError,
    }
}

/// First version with `last_fetched_epoch` and `diverging_epoch`.
const FIRST_DIVERGING_EPOCH_VERSION: i16 = 12;
/// First version naming the replica in `replica_state`.
const FIRST_REPLICA_STATE_VERSION: i16 = 15;

/// One requested partition, resolved.
struct Slot {
    topic: usize,
    partition_index: i32,
    target: Result<Arc<Partition>, ResponseError>,
    fetch_offset: i64,
    max_bytes: usize,
    current_leader_epoch: i32,
    /// The follower's last fetched epoch (v12+; -1: none).
    last_fetched_epoch: i32,
}

/// The broker behind a replica fetch.
#[derive(Clone, Copy)]
struct Follower {
    id: i32,
    broker_epoch: i64,
    /// Registered with that epoch and unfenced: it may join the ISR.
    eligible: bool,
}

/// The response, the sources its large record sets stand for, and the share
/// of the fetch memory budget its in-memory records hold.
pub async fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    req: FetchRequest,
) -> (FetchResponse, Vec<Source>, Option<OwnedSemaphorePermit>) {
    let version = header.request_api_version;
    if req.session_id != 0 {
        let resp = FetchResponse::default()
            .with_error_code(ResponseError::FetchSessionIdNotFound.code())
            .with_session_id(0);
        return (resp, Vec::new(), None);
    }
    let image = broker.image();
    let (replica_id, replica_epoch) = if version >= FIRST_REPLICA_STATE_VERSION {
        (
            req.replica_state.replica_id.0,
            req.replica_state.replica_epoch,
        )
    } else {
        (req.replica_id.0, -1)
    };
    let follower = (replica_id >= 0).then(|| Follower {
        id: replica_id,
        broker_epoch: replica_epoch,
        eligible: image
            .brokers
            .get(&replica_id)
            .is_some_and(|b| !b.fenced && (replica_epoch == -1 || replica_epoch == b.epoch)),
    });
    let mut topics: Vec<FetchableTopicResponse> = Vec::with_capacity(req.topics.len());
    let mut slots: Vec<Slot> = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let resolved = if version >= FIRST_TOPIC_ID_VERSION {
            image.topic_by_id(&t.topic_id).cloned()
        } else {
            image.topic(t.topic.0.as_str()).cloned()
        };
        let unknown = if version >= FIRST_TOPIC_ID_VERSION {
            ResponseError::UnknownTopicId
        } else {
            ResponseError::UnknownTopicOrPartition
        };
        for p in &t.partitions {
            let target = match crate::handlers::led_partition(
                broker,
                resolved.as_ref(),
                p.partition,
                unknown,
            ) {
                Err(code) => Err(code),
                Ok(part) => {
                    if p.current_leader_epoch >= 0 && p.current_leader_epoch < part.leader_epoch() {
                        Err(ResponseError::FencedLeaderEpoch)
                    } else if p.current_leader_epoch > part.leader_epoch() {
                        Err(ResponseError::UnknownLeaderEpoch)
                    } else {
                        Ok(part)
                    }
                }
            };
            slots.push(Slot {
                topic: ti,
                partition_index: p.partition,
                target,
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
                current_leader_epoch: p.current_leader_epoch,
                last_fetched_epoch: if version >= FIRST_DIVERGING_EPOCH_VERSION {
                    p.last_fetched_epoch
                } else {
                    -1
                },
            });
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_topic_id(t.topic_id),
        );
    }

    let response_max_bytes = req.max_bytes.min(broker.config.fetch_max_bytes).max(0) as usize;
    let min_bytes = req.min_bytes.max(0) as usize;
    let wait = Duration::from_millis((req.max_wait_ms.max(0) as u64).min(MAX_FETCH_WAIT_MS));
    let deadline = Instant::now() + wait;
    let slots = Arc::new(slots);
    let mut first_read = true;
    let (partitions, sources, budget) = loop {
        // Register before reading, so an append between the read and the
        // wait is not missed (Notify keeps one permit).
        let waiter = Arc::new(Notify::new());
        let may_wait = !wait.is_zero() && Instant::now() < deadline;
        if may_wait {
            for s in slots.iter() {
                if let Ok(p) = &s.target {
                    p.add_waiter(waiter.clone());
                }
            }
        }
        let s = slots.clone();
        let memory = broker.fetch_memory.clone();
        // A follower's position counts once per request, at its first read.
        let record = follower.filter(|_| first_read);
        first_read = false;
        let read = tokio::task::spawn_blocking(move || {
            read_all(&s, response_max_bytes, &memory, follower, record)
        })
        .await;
        let (partitions, sources, budget, bytes, any_error, proposals) = match read {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, "fetch task failed");
                let resp = FetchResponse::default()
                    .with_error_code(ResponseError::UnknownServerError.code());
                return (resp, Vec::new(), None);
            }
        };
        for (part, proposal) in proposals {
            broker.propose_isr(part, proposal);
        }
        let done = !may_wait || bytes >= min_bytes || any_error || Instant::now() >= deadline;
        if done {
            if may_wait {
                remove_waiter(&slots, &waiter);
            }
            break (partitions, sources, budget);
        }
        // Nothing of this read is kept while waiting: its records and its
        // share of the fetch memory budget go back now.
        drop((partitions, sources, budget));
        let woken = tokio::time::timeout_at(deadline.into(), waiter.notified()).await;
        if woken.is_err() {
            remove_waiter(&slots, &waiter);
        }
    };
    // Kafka lists aborted transactions only for read_committed fetches
    // (none yet: there are no transactions); a read_uncommitted read gets
    // null, and a partition refused before any read an empty list (Kafka's
    // FetchResponse.partitionResponse).
    let read_committed = req.isolation_level == 1;
    for (slot, mut data) in slots.iter().zip(partitions) {
        data.aborted_transactions = (read_committed || slot.target.is_err()).then(Vec::new);
        if let Some(t) = topics.get_mut(slot.topic) {
            t.partitions.push(data);
        }
    }
    let resp = FetchResponse::default()
        .with_error_code(0)
        .with_session_id(0)
        .with_responses(topics);
    (resp, sources, budget)
}

fn remove_waiter(slots: &[Slot], waiter: &Arc<Notify>) {
    for s in slots {
        if let Ok(p) = &s.target {
            p.remove_waiter(waiter);
        }
    }
}

/// A partition answered with `code` and unknown offsets, as Kafka answers
/// a refused or failed partition.
fn refused(base: PartitionData, code: ResponseError) -> PartitionData {
    base.with_error_code(code.code())
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_records(Some(Bytes::new()))
}

/// What [`read_all`] gathered: the partition answers, the file ranges
/// behind the record sets left in the page cache, the fetch memory budget
/// held by those read into memory, the bytes of records, and whether any
/// partition had an error.
type ReadAll = (
    Vec<PartitionData>,
    Vec<Source>,
    Option<OwnedSemaphorePermit>,
    usize,
    bool,
    Vec<(Arc<Partition>, IsrProposal)>,
);

/// A replica fetch's checks before its read, as Kafka's `fetchRecords`
/// for a follower: its `last_fetched_epoch` against the epoch cache (a
/// diverging epoch answers instead of records), then its position recorded
/// (`record`: on the first read of the request only).
fn follower_checks(
    part: &Arc<Partition>,
    s: &Slot,
    follower: Follower,
    record: bool,
    proposals: &mut Vec<(Arc<Partition>, IsrProposal)>,
) -> Result<Option<(i32, i64)>, ResponseError> {
    if s.last_fetched_epoch >= 0 {
        let (epoch, end) = part
            .end_offset_for_epoch(felice_replica::LeaderEpoch(s.last_fetched_epoch))
            .map_err(|e| read_error_code(&e))?;
        let (epoch, end) = (epoch.0, end.0);
        if epoch < 0 || end < 0 {
            return Err(ResponseError::OffsetOutOfRange);
        }
        if s.fetch_offset < part.log_start_offset() {
            return Err(ResponseError::OffsetOutOfRange);
        }
        if epoch < s.last_fetched_epoch || end < s.fetch_offset {
            return Ok(Some((epoch, end)));
        }
    }
    if record {
        let r = part.on_follower_fetch(
            follower.id,
            follower.broker_epoch,
            felice_replica::Offset(s.fetch_offset),
            follower.eligible,
        );
        match r {
            Ok(Some(proposal)) => proposals.push((part.clone(), proposal)),
            Ok(None) => {}
            Err(StateError::NotAReplica(_)) if s.current_leader_epoch >= 0 => {
                return Err(ResponseError::UnknownLeaderEpoch)
            }
            Err(StateError::FetchBeyondEnd { .. }) => return Err(ResponseError::OffsetOutOfRange),
            Err(_) => return Err(ResponseError::NotLeaderOrFollower),
        }
    }
    Ok(None)
}

/// Reads every slot (blocking). A range of `ZERO_COPY_MIN_BYTES` or more,
/// or a smaller one when `memory` has no room for it, is left in the page
/// cache (a mapped stand-in, sent with `sendfile`); others are read.
fn read_all(
    slots: &[Slot],
    response_max_bytes: usize,
    memory: &Arc<Semaphore>,
    follower: Option<Follower>,
    record: Option<Follower>,
) -> ReadAll {
    let mut out = Vec::with_capacity(slots.len());
    let mut proposals = Vec::new();
    let mut sources = Vec::new();
    let mut held_memory: Option<OwnedSemaphorePermit> = None;
    let mut total = 0usize;
    let mut any_error = false;
    for s in slots {
        let base = PartitionData::default()
            .with_partition_index(s.partition_index)
            .with_preferred_read_replica(BrokerId(-1));
        let part = match &s.target {
            Ok(p) => p,
            Err(code) => {
                any_error = true;
                out.push(refused(base, *code));
                continue;
            }
        };
        if let Some(f) = follower {
            match follower_checks(part, s, f, record.is_some(), &mut proposals) {
                Ok(None) => {}
                Ok(Some((epoch, end_offset))) => {
                    any_error = true;
                    out.push(
                        base.with_error_code(0)
                            .with_high_watermark(part.high_watermark())
                            .with_last_stable_offset(part.high_watermark())
                            .with_log_start_offset(part.log_start_offset())
                            .with_diverging_epoch(
                                EpochEndOffset::default()
                                    .with_epoch(epoch)
                                    .with_end_offset(end_offset),
                            )
                            .with_records(Some(Bytes::new())),
                    );
                    continue;
                }
                Err(code) => {
                    any_error = true;
                    out.push(refused(base, code));
                    continue;
                }
            }
        }
        let budget = s.max_bytes.min(response_max_bytes.saturating_sub(total));
        let first_with_data = total == 0;
        let result = if budget == 0 && !first_with_data {
            Ok((Bytes::new(), part.high_watermark(), part.log_start_offset()))
        } else {
            part.plan_read(s.fetch_offset, budget, first_with_data, follower.is_some())
                .and_then(|planned| {
                    let io = |source| {
                        ReplicaError::Log(LogError::Io {
                            path: std::path::PathBuf::from(format!(
                                "{}-{}",
                                part.topic, part.index
                            )),
                            source,
                        })
                    };
                    let in_memory = planned.slice.as_ref().and_then(|slice| {
                        if slice.len >= ZERO_COPY_MIN_BYTES {
                            return None;
                        }
                        let permit = memory
                            .clone()
                            .try_acquire_many_owned(slice.len as u32)
                            .ok()?;
                        match &mut held_memory {
                            Some(held) => held.merge(permit),
                            None => held_memory = Some(permit),
                        }
                        Some(())
                    });
                    let bytes = match planned.slice {
                        Some(slice) if in_memory.is_none() => {
                            let stand_in = slice.mapped().map_err(io)?;
                            sources.push(Source {
                                bytes: stand_in.clone(),
                                file: Some(FileRange {
                                    file: slice.file().clone(),
                                    offset: slice.position,
                                    len: slice.len,
                                }),
                            });
                            stand_in
                        }
                        Some(slice) => slice.read_bytes().map_err(io)?,
                        None => Bytes::new(),
                    };
                    Ok((bytes, planned.high_watermark, planned.log_start_offset))
                })
        };
        match result {
            Ok((bytes, hw, lso)) => {
                total += bytes.len();
                out.push(
                    base.with_error_code(0)
                        .with_high_watermark(hw)
                        .with_last_stable_offset(hw)
                        .with_log_start_offset(lso)
                        .with_records(Some(bytes)),
                );
            }
            Err(e) => {
                // Kafka answers a failed read (OFFSET_OUT_OF_RANGE included)
                // with unknown offsets, as for an unknown partition.
                any_error = true;
                out.push(refused(base, read_error_code(&e)));
            }
        }
    }
    (out, sources, held_memory, total, any_error, proposals)
}
