//! The in-place rewrites the log does per appended batch: baseOffset +
//! partitionLeaderEpoch (two stores outside the CRC, O(1) per batch) and, for
//! LogAppendTime topics, `set_log_append_time` (attributes + maxTimestamp, then a
//! CRC32C over the whole batch, O(batch bytes)).
//!
//! Run: `cargo bench -p felice-wire --bench rewrite`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use felice_wire::{
    build_batch, set_base_offset, set_log_append_time, set_partition_leader_epoch, validate_batch,
    RecordSpec,
};

/// A batch of 1000-byte values close to (at most) `target` bytes.
fn batch_near(target: usize) -> Vec<u8> {
    const VALUE_LEN: usize = 1000;
    // 61-byte header; each record is the value plus at most 12 bytes of varints.
    let count = (target - 61) / (VALUE_LEN + 12);
    let value = vec![b'v'; VALUE_LEN];
    let records: Vec<RecordSpec<'_>> = (0..count)
        .map(|i| (None, Some(value.as_slice()), 1_700_000_000_000 + i as i64))
        .collect();
    let buf = build_batch(&records);
    assert!(buf.len() <= target, "batch {} > target {target}", buf.len());
    buf
}

fn bench_assign_offsets(c: &mut Criterion) {
    let mut buf = batch_near(16 * 1024);
    let mut group = c.benchmark_group("assign_offsets");
    group.throughput(Throughput::Elements(1));
    group.bench_function("base_offset+leader_epoch", |b| {
        let mut next = 0i64;
        b.iter(|| {
            set_base_offset(black_box(&mut buf), next).expect("whole header");
            set_partition_leader_epoch(black_box(&mut buf), 7).expect("whole header");
            next += 16;
        })
    });
    group.finish();
    validate_batch(&buf).expect("rewrites keep the CRC valid");
}

fn bench_log_append_time(c: &mut Criterion) {
    let mut group = c.benchmark_group("set_log_append_time");
    for (name, target) in [("16KiB", 16 * 1024), ("1MiB", 1024 * 1024)] {
        let mut buf = batch_near(target);
        group.throughput(Throughput::Bytes(buf.len() as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            // A new timestamp every call: an unchanged one skips the CRC.
            let mut now_ms = 1_800_000_000_000i64;
            b.iter(|| {
                now_ms += 1;
                set_log_append_time(black_box(&mut buf), now_ms).expect("whole batch")
            })
        });
        validate_batch(&buf).expect("CRC recomputed");
    }
    group.finish();
}

criterion_group!(benches, bench_assign_offsets, bench_log_append_time);
criterion_main!(benches);
