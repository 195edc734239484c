//! Produce-path checks on one batch: `validate_batch` (header, CRC32C over the whole
//! batch, record framing walk) at three sizes, `BatchHeader::parse` alone, and the
//! header-only `Batches` walk over a buffer of concatenated batches (what append and
//! recovery do before touching records).
//!
//! Run: `cargo bench -p felice-wire --bench validate`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use felice_wire::{build_batch, validate_batch, BatchHeader, Batches, RecordSpec};

/// An uncompressed batch of `count` records, each with a `value_len`-byte value, no key
/// and timestamps 1 ms apart (so the varints look like a real producer's).
fn batch(count: usize, value_len: usize) -> Vec<u8> {
    let value = vec![b'x'; value_len];
    let records: Vec<RecordSpec<'_>> = (0..count)
        .map(|i| (None, Some(value.as_slice()), 1_700_000_000_000 + i as i64))
        .collect();
    build_batch(&records)
}

fn bench_validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate_batch");
    for (name, count, value_len) in [
        ("1x100B", 1, 100),
        ("100x100B", 100, 100),
        ("1000x1KiB", 1000, 1024),
    ] {
        let buf = batch(count, value_len);
        validate_batch(&buf).expect("built batch is valid");
        group.throughput(Throughput::Bytes(buf.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &buf, |b, buf| {
            b.iter(|| validate_batch(black_box(buf)))
        });
    }
    group.finish();
}

fn bench_header_parse(c: &mut Criterion) {
    let buf = batch(100, 100);
    let mut group = c.benchmark_group("batch_header");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse", |b| b.iter(|| BatchHeader::parse(black_box(&buf))));
    group.finish();
}

fn bench_batches_iter(c: &mut Criterion) {
    const BATCHES: u64 = 100;
    let one = batch(100, 100);
    let buf: Vec<u8> = (0..BATCHES).flat_map(|_| one.iter().copied()).collect();
    let walked = Batches::new(&buf).filter(Result::is_ok).count();
    assert_eq!(walked as u64, BATCHES, "all concatenated batches walk");
    let mut group = c.benchmark_group("batches_iter");
    group.throughput(Throughput::Elements(BATCHES));
    group.bench_function("100x(100x100B)", |b| {
        b.iter(|| {
            let mut records = 0i64;
            for item in Batches::new(black_box(&buf)) {
                let (_, header) = item.expect("valid buffer");
                records += i64::from(header.record_count);
            }
            records
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_validate,
    bench_header_parse,
    bench_batches_iter
);
criterion_main!(benches);
