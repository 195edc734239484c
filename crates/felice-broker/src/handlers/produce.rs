//! Produce (key 0): validates each partition's record batch (magic 2, sizes,
//! CRC32C, record framing, `max.message.bytes`), appends it with offsets
//! assigned by rewriting the batch's baseOffset, and answers with the base
//! offset. acks=0 gets no response; acks=1 is answered once the append is
//! done; acks=all once the high watermark covers the batch too (at once
//! when the ISR is this broker alone). Errors are per partition; a
//! rejected batch writes nothing.
//!
//! The acks=all purgatory: a request whose batches the high watermark does
//! not cover yet waits on the partition's waiter list (the one fetches park
//! in), woken only when the high watermark moves or the partition closes,
//! never polled. It completes with NONE, NOT_ENOUGH_REPLICAS_AFTER_APPEND
//! (the ISR fell below `min.insync.replicas` meanwhile),
//! NOT_LEADER_OR_FOLLOWER (leadership moved) or REQUEST_TIMED_OUT
//! (`timeout_ms`), as Kafka's DelayedProduce. A retried idempotent batch
//! waits for its original offsets the same way. Bounded: one request at a
//! time per connection, `max.connections` connections.

use crate::broker::Broker;
use crate::handlers::str_bytes;
use crate::replica::{Partition, ReplicaError};
use crate::topic_config::TopicSettings;
use felice_log::{LogError, ProducerError};
use felice_replica::StateError;
use felice_wire::BatchError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, RequestHeader};
use kafka_protocol::protocol::{Message, VersionRange};
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const VERSIONS: VersionRange = ProduceRequest::VERSIONS;

/// Decompressed records of one batch may be at most this many times
/// `max.message.bytes` (bounds the memory of recompression and of the
/// keyless-record check).
const DECOMPRESSION_RATIO_LIMIT: usize = 64;

/// Produce v13 names topics by id.
const FIRST_TOPIC_ID_VERSION: i16 = 13;

/// Why one partition's data was refused before it reached the log.
#[derive(Debug)]
enum Rejected {
    /// Refused with the request, before the log is consulted (Kafka's
    /// KafkaApis/ProduceRequest checks, CRC, size): the answer carries no
    /// offsets.
    Kafka(ResponseError, String),
    /// Refused by the checks Kafka's LogValidator makes at the log: the
    /// answer carries the partition's log start offset, as Kafka's does.
    Validator(ResponseError, String),
    /// Records of the batch refused one by one (INVALID_RECORD with the
    /// records' indexes in the batch, KIP-467), at the log as `Validator`.
    Records(String, Vec<(i32, String)>),
}

fn batch_error_code(e: &BatchError) -> ResponseError {
    match e {
        BatchError::UnsupportedMagic { .. } => ResponseError::InvalidRecord,
        BatchError::CrcMismatch { .. } => ResponseError::CorruptMessage,
        BatchError::Truncated { .. } => ResponseError::CorruptMessage,
        BatchError::InvalidLength { .. } => ResponseError::CorruptMessage,
        BatchError::LengthMismatch { .. } => ResponseError::CorruptMessage,
        BatchError::RecordCount { .. } => ResponseError::InvalidRecord,
        BatchError::UnknownCompression { .. } => ResponseError::UnsupportedCompressionType,
        BatchError::RecordFraming { .. } => ResponseError::CorruptMessage,
        BatchError::Compressed(_) => ResponseError::CorruptMessage,
        BatchError::Codec { .. } => ResponseError::CorruptMessage,
    }
}

fn replica_error_code(e: &ReplicaError) -> ResponseError {
    match e {
        ReplicaError::Closed(_) | ReplicaError::NotLeader(_) => ResponseError::NotLeaderOrFollower,
        ReplicaError::Offline(_) => ResponseError::KafkaStorageError,
        ReplicaError::Log(LogError::Io { .. }) => ResponseError::KafkaStorageError,
        ReplicaError::Log(LogError::CorruptBatch { .. }) => ResponseError::CorruptMessage,
        ReplicaError::Log(LogError::OffsetOutOfRange { .. }) => ResponseError::OffsetOutOfRange,
        ReplicaError::Log(LogError::InvalidConfig { .. }) => ResponseError::InvalidConfig,
        ReplicaError::Log(LogError::AppendTooLarge { .. }) => ResponseError::RecordListTooLarge,
        ReplicaError::Log(LogError::EmptyAppend) => ResponseError::InvalidRecord,
        // Only a follower's append checks the offsets it is given.
        ReplicaError::Log(LogError::UnexpectedAppendOffset { .. }) => {
            ResponseError::UnknownServerError
        }
        ReplicaError::Log(LogError::Producer(p)) => match p {
            ProducerError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
            ProducerError::NewEpochNotAtZero { .. } => ResponseError::OutOfOrderSequenceNumber,
            ProducerError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        },
    }
}

/// Re-encodes one validated batch in `target` (a topic `compression.type`
/// other than `producer`, as Kafka does): the records section is
/// decompressed and recompressed byte for byte (headers with repeated or
/// non-UTF-8 keys survive), only when the topic's setting asks for it.
fn recompress(
    batch: &[u8],
    target: Compression,
    limit: usize,
) -> Result<felice_wire::ValidatedBatch, Rejected> {
    let codec = match target {
        Compression::None => felice_wire::Compression::None,
        Compression::Gzip => felice_wire::Compression::Gzip,
        Compression::Snappy => felice_wire::Compression::Snappy,
        Compression::Lz4 => felice_wire::Compression::Lz4,
        Compression::Zstd => felice_wire::Compression::Zstd,
    };
    let out = felice_wire::codec::recompress(batch, codec, limit).map_err(|e| {
        Rejected::Kafka(batch_error_code(&e), format!("cannot re-encode batch: {e}"))
    })?;
    felice_wire::ValidatedBatch::new(bytes::Bytes::from(out))
        .map_err(|e| Rejected::Kafka(ResponseError::CorruptMessage, e.to_string()))
}

/// The indexes (in the batch) of the records with a null key, of a
/// validated batch (compacted topics only: compressed batches are decoded
/// for it).
fn keyless_records(batch: &bytes::Bytes, limit: usize) -> Result<Vec<i32>, Rejected> {
    let corrupt = |e: String| Rejected::Kafka(ResponseError::CorruptMessage, e);
    let keyless = |records: felice_wire::Records<'_>| -> Result<Vec<i32>, Rejected> {
        let mut found = Vec::new();
        for (i, r) in records.enumerate() {
            if r.map_err(|e| corrupt(e.to_string()))?.key.is_none() {
                found.push(i as i32);
            }
        }
        Ok(found)
    };
    match felice_wire::Records::new(batch) {
        Ok(records) => keyless(records),
        Err(BatchError::Compressed(_)) => {
            let (header, raw) = felice_wire::codec::records_section(batch, limit)
                .map_err(|e| corrupt(e.to_string()))?;
            let plain = felice_wire::codec::as_uncompressed(&header, &raw)
                .map_err(|e| corrupt(e.to_string()))?;
            keyless(felice_wire::Records::new(&plain).map_err(|e| corrupt(e.to_string()))?)
        }
        Err(e) => Err(corrupt(e.to_string())),
    }
}

/// Checks one partition's records; returns them ready to append, as one
/// [`felice_wire::ValidatedBatch`] (a shared slice of the request, or
/// re-encoded when the topic fixes a codec): the header is parsed here,
/// once, and the log appends from it.
fn check(
    records: Option<&bytes::Bytes>,
    settings: &TopicSettings,
    tp: &str,
) -> Result<felice_wire::ValidatedBatch, Rejected> {
    let max_message_bytes = settings.max_message_bytes;
    let Some(records) = records else {
        return Err(Rejected::Kafka(
            ResponseError::InvalidRecord,
            "null records".into(),
        ));
    };
    // Kafka: produce v3+ carries exactly one record batch per partition.
    let header = match felice_wire::BatchHeader::parse(records) {
        Ok(h) if h.total_len() == records.len() => h,
        _ => return Err(malformed(records, max_message_bytes)),
    };
    if header.total_len() > max_message_bytes as usize {
        return Err(Rejected::Kafka(
            ResponseError::MessageTooLarge,
            format!(
                "batch of {} bytes exceeds max.message.bytes {max_message_bytes}",
                header.total_len()
            ),
        ));
    }
    let batch = felice_wire::ValidatedBatch::with_header(records.clone(), header)
        .map_err(|e| Rejected::Kafka(batch_error_code(&e), e.to_string()))?;
    // Kafka's LogValidator checks for a client's batch.
    if header.is_control() {
        return Err(Rejected::Validator(
            ResponseError::InvalidRecord,
            "Clients are not allowed to write control records".into(),
        ));
    }
    if header.producer_id >= 0 && header.base_sequence < 0 {
        return Err(Rejected::Validator(
            ResponseError::InvalidRecord,
            format!(
                "Invalid sequence number {} in record batch with producerId {}",
                header.base_sequence, header.producer_id
            ),
        ));
    }
    let codec = header.compression().ok().map(|c| c.id());
    // Decompressed records may not exceed what Kafka would accept of a
    // batch's records: a generous multiple of the batch size limit.
    let limit = (max_message_bytes.max(0) as usize).saturating_mul(DECOMPRESSION_RATIO_LIMIT);
    if settings.log.cleanup_compact {
        // Kafka: a compacted topic keeps the last record per key; a record
        // without one could never be compacted. Each such record is named
        // in the answer (KIP-467), so a client fails just those.
        let keyless = keyless_records(records, limit)?;
        if !keyless.is_empty() {
            let errors: Vec<(i32, String)> = keyless
                .iter()
                .map(|i| {
                    (
                        *i,
                        format!("Compacted topic cannot accept message without key in topic partition {tp}."),
                    )
                })
                .collect();
            let shown: Vec<String> = errors
                .iter()
                .take(3)
                .map(|(i, m)| format!("RecordError(batchIndex={i}, message='{m}')"))
                .collect();
            return Err(Rejected::Records(
                format!(
                    "One or more records have been rejected due to {} record errors in total, and only showing the first three errors at most: [{}]",
                    errors.len(),
                    shown.join(", ")
                ),
                errors,
            ));
        }
    }
    match settings.compression {
        Some(target) if codec != Some(target as u8) => recompress(records, target, limit),
        // Shared, not copied: the log patches a copy of the header only.
        _ => Ok(batch),
    }
}

/// The answer to records that are not exactly one whole batch: the error
/// of the first bad batch (as Kafka's validation walks them), or
/// INVALID_RECORD naming how many batches came.
#[cold]
fn malformed(records: &bytes::Bytes, max_message_bytes: i32) -> Rejected {
    let mut batches = 0;
    for item in felice_wire::Batches::new(records) {
        let (range, header) = match item {
            Ok(x) => x,
            Err(e) => return Rejected::Kafka(batch_error_code(&e), e.to_string()),
        };
        batches += 1;
        if header.total_len() > max_message_bytes as usize {
            return Rejected::Kafka(
                ResponseError::MessageTooLarge,
                format!(
                    "batch of {} bytes exceeds max.message.bytes {max_message_bytes}",
                    header.total_len()
                ),
            );
        }
        if let Err(e) = felice_wire::validate_batch(records.get(range).unwrap_or_default()) {
            return Rejected::Kafka(batch_error_code(&e), e.to_string());
        }
    }
    Rejected::Kafka(
        ResponseError::InvalidRecord,
        format!(
            "produce requests must carry exactly one record batch per partition, got {batches}"
        ),
    )
}

pub async fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    req: ProduceRequest,
) -> Option<ProduceResponse> {
    let version = header.request_api_version;
    let acks = req.acks;
    let image = broker.image();

    // Per partition: either an immediate answer, or work for the log.
    struct Work {
        topic: usize,
        slot: usize,
        partition: Arc<Partition>,
        data: felice_wire::ValidatedBatch,
    }
    let mut responses: Vec<TopicProduceResponse> = Vec::with_capacity(req.topic_data.len());
    let mut work: Vec<Work> = Vec::new();
    for (ti, topic) in req.topic_data.into_iter().enumerate() {
        let resolved = if version >= FIRST_TOPIC_ID_VERSION {
            image.topic_by_id(&topic.topic_id).cloned()
        } else {
            image.topic(topic.name.0.as_str()).cloned()
        };
        let unknown = if version >= FIRST_TOPIC_ID_VERSION {
            ResponseError::UnknownTopicId
        } else {
            ResponseError::UnknownTopicOrPartition
        };
        let mut partition_responses = Vec::with_capacity(topic.partition_data.len());
        for (pi, pd) in topic.partition_data.iter().enumerate() {
            let base = PartitionProduceResponse::default().with_index(pd.index);
            let error = |code: ResponseError, msg: Option<String>| {
                base.clone()
                    .with_error_code(code.code())
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1)
                    .with_error_message(msg.as_deref().map(str_bytes))
            };
            if !matches!(acks, -1..=1) {
                partition_responses.push(error(ResponseError::InvalidRequiredAcks, None));
                continue;
            }
            let partition =
                crate::handlers::led_partition(broker, resolved.as_ref(), pd.index, unknown);
            let Ok(partition) = partition else {
                let code = partition.err().unwrap_or(unknown);
                partition_responses.push(error(code, None));
                continue;
            };
            // Kafka: clients may not append to internal topics; the group
            // coordinator writes __consumer_offsets itself.
            if crate::handlers::metadata::is_internal(&partition.topic) {
                partition_responses.push(error(
                    ResponseError::InvalidTopicException,
                    Some(format!(
                        "Cannot append to internal topic {}",
                        partition.topic
                    )),
                ));
                continue;
            }
            let tp = format!("{}-{}", topic.name.0, pd.index);
            match check(pd.records.as_ref(), &partition.settings(), &tp) {
                Ok(data) => {
                    // acks=all: refused before the append when the ISR is
                    // below the effective min.insync.replicas (Kafka's
                    // appendRecordsToLeader).
                    if acks == -1 {
                        if let Err(e) = partition.check_acks_all() {
                            let (code, msg) = match e {
                                StateError::NotEnoughReplicas { isr, min } => (
                                    ResponseError::NotEnoughReplicas,
                                    format!("The size of the current ISR ({isr}) is insufficient to satisfy the min.isr requirement of {min} for partition {tp}"),
                                ),
                                other => (ResponseError::NotLeaderOrFollower, other.to_string()),
                            };
                            partition_responses.push(error(code, Some(msg)));
                            continue;
                        }
                    }
                    work.push(Work {
                        topic: ti,
                        slot: pi,
                        partition,
                        data,
                    });
                    partition_responses.push(base);
                }
                Err(Rejected::Kafka(code, msg)) => {
                    tracing::debug!(topic = %topic.name.0, partition = pd.index, error = %msg, "produce rejected");
                    partition_responses.push(error(code, Some(msg)));
                }
                Err(Rejected::Records(msg, errors)) => {
                    tracing::debug!(topic = %topic.name.0, partition = pd.index, error = %msg, "produce rejected");
                    partition_responses.push(
                        error(ResponseError::InvalidRecord, Some(msg))
                            .with_log_start_offset(partition.log_start_offset())
                            .with_record_errors(
                                errors
                                    .into_iter()
                                    .map(|(i, m)| {
                                        kafka_protocol::messages::produce_response::BatchIndexAndErrorMessage::default()
                                            .with_batch_index(i)
                                            .with_batch_index_error_message(Some(str_bytes(&m)))
                                    })
                                    .collect(),
                            ),
                    );
                }
                Err(Rejected::Validator(code, msg)) => {
                    tracing::debug!(topic = %topic.name.0, partition = pd.index, error = %msg, "produce rejected");
                    partition_responses.push(
                        error(code, Some(msg)).with_log_start_offset(partition.log_start_offset()),
                    );
                }
            }
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_topic_id(topic.topic_id)
                .with_partition_responses(partition_responses),
        );
    }

    // acks=all waits for the high watermark at each appended partition.
    let replicated: Vec<((usize, usize), Arc<Partition>)> = if acks == -1 {
        work.iter()
            .map(|w| ((w.topic, w.slot), w.partition.clone()))
            .collect()
    } else {
        Vec::new()
    };
    let timeout = Duration::from_millis(req.timeout_ms.max(0) as u64);
    // acks=all: per appended partition, the offset after its batches and
    // the leader epoch they were appended in.
    let mut required: Vec<Appended> = Vec::new();
    // Appends that cost only their positioned writes run here; the rest
    // (log busy, segment roll, flush.messages fsync) on a blocking thread.
    let mut results = Vec::with_capacity(work.len());
    let mut later = Vec::new();
    for w in work {
        // Once one append waits for a blocking thread, the rest follow it
        // there, so appends keep the request's order (a partition may appear
        // twice in one request).
        if !later.is_empty() {
            later.push(w);
            continue;
        }
        // A panic (a broken invariant) answers this partition with
        // UNKNOWN_SERVER_ERROR, as on the blocking path, instead of
        // dropping the connection.
        let now = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            w.partition.try_append_now(&w.data)
        }));
        match now {
            Ok(Some(r)) => results.push((w.topic, w.slot, r, w.partition.log_start_offset())),
            Ok(None) => later.push(w),
            Err(_) => {
                tracing::error!(topic = %w.partition.topic, partition = w.partition.index, "append panicked");
                if let Some(p) = responses
                    .get_mut(w.topic)
                    .and_then(|t| t.partition_responses.get_mut(w.slot))
                {
                    p.error_code = ResponseError::UnknownServerError.code();
                    p.base_offset = -1;
                }
            }
        }
    }
    if !later.is_empty() {
        let slots: Vec<(usize, usize)> = later.iter().map(|w| (w.topic, w.slot)).collect();
        let done = tokio::task::spawn_blocking(move || {
            later
                .into_iter()
                .map(|w| {
                    let r = w.partition.append(&w.data);
                    (w.topic, w.slot, r, w.partition.log_start_offset())
                })
                .collect::<Vec<_>>()
        })
        .await;
        match done {
            Ok(r) => results.extend(r),
            Err(e) => {
                tracing::error!(error = %e, "append task failed");
                for (ti, slot) in slots {
                    if let Some(p) = responses
                        .get_mut(ti)
                        .and_then(|t| t.partition_responses.get_mut(slot))
                    {
                        p.error_code = ResponseError::UnknownServerError.code();
                        p.base_offset = -1;
                    }
                }
            }
        }
    }
    for (ti, slot, r, log_start_offset) in results {
        let Some(p) = responses
            .get_mut(ti)
            .and_then(|t| t.partition_responses.get_mut(slot))
        else {
            continue;
        };
        match r {
            Ok(info) => {
                if acks == -1 {
                    required.push(Appended {
                        slot: (ti, slot),
                        end: info.last_offset + 1,
                        epoch: info.leader_epoch,
                    });
                }
                p.error_code = 0;
                p.base_offset = info.first_offset;
                p.log_append_time_ms = info.log_append_time_ms;
                p.log_start_offset = info.log_start_offset;
            }
            Err(e) => {
                tracing::warn!(error = %e, "append failed");
                p.error_code = replica_error_code(&e).code();
                p.base_offset = -1;
                p.log_append_time_ms = -1;
                // Kafka reports the log start offset with the errors its
                // producer-state checks raise, and -1 with storage and
                // corruption errors.
                p.log_start_offset = match &e {
                    ReplicaError::Log(LogError::Producer(_)) => log_start_offset,
                    _ => -1,
                };
                p.error_message = Some(str_bytes(&e.to_string()));
            }
        }
    }
    if acks == 0 {
        return None;
    }
    if !replicated.is_empty() {
        await_replication(
            &mut responses,
            &replicated,
            &required,
            Instant::now() + timeout,
        )
        .await;
    }
    Some(ProduceResponse::default().with_responses(responses))
}

/// An appended partition an acks=all produce waits for: its place in the
/// response, the offset after its batches, the leader epoch of the append.
#[derive(Clone, Copy)]
struct Appended {
    slot: (usize, usize),
    end: i64,
    epoch: i32,
}

/// The acks=all purgatory (see the module docs): waits until the high
/// watermark covers each appended partition's batches or `deadline`.
async fn await_replication(
    responses: &mut [TopicProduceResponse],
    replicated: &[((usize, usize), Arc<Partition>)],
    required: &[Appended],
    deadline: Instant,
) {
    use felice_replica::Completion;
    for ((ti, slot), partition) in replicated {
        let Some(p) = responses
            .get_mut(*ti)
            .and_then(|t| t.partition_responses.get_mut(*slot))
        else {
            continue;
        };
        let Some(Appended {
            end: required,
            epoch,
            ..
        }) = required.iter().find(|a| a.slot == (*ti, *slot)).copied()
        else {
            continue;
        };
        if p.error_code != 0 {
            continue;
        }
        let outcome = loop {
            // Register before checking, so a move in between is not missed.
            let waiter = Arc::new(tokio::sync::Notify::new());
            partition.add_waiter(waiter.clone());
            let now = partition.completion(
                felice_replica::Offset(required),
                felice_replica::LeaderEpoch(epoch),
            );
            if now != Completion::Waiting {
                partition.remove_waiter(&waiter);
                break now;
            }
            let woken = tokio::time::timeout_at(deadline.into(), waiter.notified()).await;
            if woken.is_err() {
                partition.remove_waiter(&waiter);
                break Completion::Waiting;
            }
        };
        let code = match outcome {
            Completion::Done => continue,
            Completion::NotEnoughReplicasAfterAppend => ResponseError::NotEnoughReplicasAfterAppend,
            Completion::NotLeader => ResponseError::NotLeaderOrFollower,
            Completion::Waiting => ResponseError::RequestTimedOut,
        };
        p.error_code = code.code();
    }
}
