//! The protocol edges of the data path, where record bytes cross `kafka-protocol`:
//! - `fetch_response_8x1MiB`: `dispatch::encode` of a FetchResponse (v11: topic
//!   names; v16: topic ids, flexible) holding 8 partitions × 1 MiB of records, against
//!   the raw memcpy of the same 8 MiB into a fresh buffer (what encode must at least
//!   do: it copies every records `Bytes` into one `BytesMut`) and into a reused one.
//! - `produce_request_decode`: `ProduceRequest::decode` (v9) of one 1 MiB batch from a
//!   `Bytes` frame; the records field is a zero-copy slice of the frame (asserted in
//!   setup), so the cost is independent of the batch size.
//!
//! Run: `cargo bench -p felice-broker --bench protocol`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use felice_broker::dispatch::encode;
use felice_wire::{build_batch, RecordSpec};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchResponse, ProduceRequest, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

const PARTITIONS: usize = 8;
const CORRELATION_ID: i32 = 42;

/// One uncompressed batch of 1000-byte values, just under 1 MiB, with a valid CRC.
fn batch_1mib(seed: u8) -> Bytes {
    let value = vec![seed; 1000];
    let records: Vec<RecordSpec<'_>> = (0..1030)
        .map(|i| (None, Some(value.as_slice()), 1_700_000_000_000 + i))
        .collect();
    let batch = build_batch(&records);
    assert!(batch.len() <= 1 << 20, "batch is {} bytes", batch.len());
    Bytes::from(batch)
}

fn topic_name() -> TopicName {
    TopicName(StrBytes::from_static_str("bench-topic"))
}

fn fetch_response(records: &[Bytes]) -> FetchResponse {
    let partitions = records
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            PartitionData::default()
                .with_partition_index(i as i32)
                .with_error_code(0)
                .with_high_watermark(1_000_000)
                .with_last_stable_offset(1_000_000)
                .with_log_start_offset(0)
                .with_preferred_read_replica(BrokerId(-1))
                .with_records(Some(bytes.clone()))
        })
        .collect();
    let topic = FetchableTopicResponse::default()
        .with_topic(topic_name())
        .with_topic_id(uuid::Uuid::from_u128(
            0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
        ))
        .with_partitions(partitions);
    FetchResponse::default()
        .with_error_code(0)
        .with_session_id(0)
        .with_responses(vec![topic])
}

fn bench_fetch_encode(c: &mut Criterion) {
    // Distinct buffers, as 8 partitions' segment reads would be.
    let records: Vec<Bytes> = (0..PARTITIONS).map(|i| batch_1mib(i as u8)).collect();
    let total: usize = records.iter().map(Bytes::len).sum();
    let response = fetch_response(&records);

    let mut group = c.benchmark_group("fetch_response_8x1MiB");
    group.throughput(Throughput::Bytes(total as u64));
    // ~0.3 ms a call: fewer samples keep the default 3 s measurement on a busy machine.
    group.sample_size(50);
    for version in [11i16, 16] {
        let encoded = encode(ApiKey::Fetch, version, CORRELATION_ID, &response).expect("encode");
        assert!(
            encoded.len() > total,
            "frame holds every partition's records"
        );
        group.bench_function(BenchmarkId::new("encode", format!("v{version}")), |b| {
            b.iter(|| {
                encode(ApiKey::Fetch, version, CORRELATION_ID, black_box(&response))
                    .expect("encode")
            })
        });
    }
    group.bench_function("memcpy/fresh_buffer", |b| {
        b.iter(|| {
            let mut buf = BytesMut::with_capacity(total);
            for r in black_box(&records) {
                buf.extend_from_slice(r);
            }
            buf
        })
    });
    let mut reused = BytesMut::with_capacity(total);
    group.bench_function("memcpy/reused_buffer", |b| {
        b.iter(|| {
            reused.clear();
            for r in black_box(&records) {
                reused.extend_from_slice(r);
            }
            black_box(reused.len())
        })
    });
    group.finish();
}

fn bench_produce_decode(c: &mut Criterion) {
    const VERSION: i16 = 9;
    let batch = batch_1mib(7);
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name())
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch.clone()))])]);
    let mut body = BytesMut::with_capacity(request.compute_size(VERSION).expect("size"));
    request.encode(&mut body, VERSION).expect("encode");
    let frame = body.freeze();

    // The records must come out as a slice of the frame, not a copy: that is what lets
    // the batch go from the socket buffer to the segment write untouched.
    let decoded = ProduceRequest::decode(&mut frame.clone(), VERSION).expect("decode");
    let records = decoded.topic_data[0].partition_data[0]
        .records
        .as_ref()
        .expect("records present");
    assert_eq!(records, &batch, "records round-trip");
    let frame_range = frame.as_ptr_range();
    assert!(
        frame_range.contains(&records.as_ptr()),
        "records at {:p} are a copy, not a slice of the frame at {:p}..{:p}",
        records.as_ptr(),
        frame_range.start,
        frame_range.end
    );

    let mut group = c.benchmark_group("produce_request_decode");
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function("v9/1x1MiB", |b| {
        b.iter(|| ProduceRequest::decode(&mut black_box(&frame).clone(), VERSION).expect("decode"))
    });
    group.finish();
}

criterion_group!(benches, bench_fetch_encode, bench_produce_decode);
criterion_main!(benches);
