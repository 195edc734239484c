//! One partition log on disk (a tempdir, so the page cache, not the device, is what
//! these measure):
//! - `log_append`: `Log::append` of one 16 KiB batch (header pass, offset assignment,
//!   optional LogAppendTime CRC, one positioned write, index entries). The log is cut
//!   back to empty outside the timed region every 64 MiB, so the disk use stays bounded.
//!   `raw_pwrite` is the floor: the same write to a plain file.
//! - `log_read`: `Log::read` planning (segment choice, offset index lookup, header
//!   scan; no data read) at random offsets of a ~100k-record log over ~12 segments of
//!   1 MiB, over the whole log, in a closed segment (index searched on disk: open +
//!   preads) and in the active one (index in memory).
//! - `find_batch_by_timestamp`: ListOffsets by timestamp at random timestamps (time
//!   index lookup, header scan and a read of the one batch).
//!
//! Run: `cargo bench -p felice-log --bench log`.

use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use felice_log::{Log, LogConfig, TimestampType};
use felice_wire::{build_batch, RecordSpec};

const NOW_MS: i64 = 1_700_000_000_000;
const LEADER_EPOCH: i32 = 3;

/// `count` records of `value_len` bytes, timestamps `first_ts`, `first_ts + 1`, ...
fn batch(count: usize, value_len: usize, first_ts: i64) -> Vec<u8> {
    let value = vec![b'v'; value_len];
    let records: Vec<RecordSpec<'_>> = (0..count)
        .map(|i| (None, Some(value.as_slice()), first_ts + i as i64))
        .collect();
    build_batch(&records)
}

/// xorshift64: a fixed, dependency-free sequence of lookup targets.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn bench_append(c: &mut Criterion) {
    /// Bytes written before the log is cut back to empty (untimed).
    const CUT_AT_BYTES: u64 = 64 << 20;
    // 16 records of 1000 bytes: 16,253 bytes, a typical producer batch.size.
    let template = batch(16, 1000, NOW_MS);
    let mut group = c.benchmark_group("log_append");
    group.throughput(Throughput::Bytes(template.len() as u64));
    for (name, ts_type) in [
        ("16KiB/create_time", TimestampType::CreateTime),
        ("16KiB/log_append_time", TimestampType::LogAppendTime),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = Log::open(dir.path(), LogConfig::default(), NOW_MS).expect("open log");
        // Append rewrites baseOffset/epoch (and the time) in place; reusing the buffer
        // is what a produce does with its request bytes.
        let buf = template.clone();
        let mut now_ms = NOW_MS;
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut start = Instant::now();
                for _ in 0..iters {
                    now_ms += 1;
                    let info = log
                        .append(black_box(&buf), LEADER_EPOCH, ts_type, now_ms)
                        .expect("append");
                    black_box(info);
                    if log.size_bytes() >= CUT_AT_BYTES {
                        timed += start.elapsed();
                        log.truncate_to(log.log_start_offset()).expect("truncate");
                        start = Instant::now();
                    }
                }
                timed + start.elapsed()
            })
        });
    }
    // Baseline: the same bytes with one positioned write to a plain file, cut back the
    // same way; the difference is the log's own work (headers, offsets, indexes).
    let dir = tempfile::tempdir().expect("tempdir");
    let file = File::create(dir.path().join("raw.log")).expect("create file");
    let mut position = 0u64;
    group.bench_function(BenchmarkId::from_parameter("16KiB/raw_pwrite"), |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut start = Instant::now();
            for _ in 0..iters {
                file.write_all_at(black_box(&template), position)
                    .expect("write");
                position += template.len() as u64;
                if position >= CUT_AT_BYTES {
                    timed += start.elapsed();
                    file.set_len(0).expect("truncate");
                    position = 0;
                    start = Instant::now();
                }
            }
            timed + start.elapsed()
        })
    });
    group.finish();
}

/// A log of at least `RECORDS` records in 1 MiB segments, whose active segment is at
/// least half full. Batches of 10 records × 100 bytes (~1.2 KB), one timestamp per
/// record, increasing by 1 ms from `NOW_MS`.
fn build_read_log(dir: &std::path::Path) -> Log {
    const RECORDS: i64 = 100_000;
    const PER_BATCH: usize = 10;
    let config = LogConfig {
        segment_bytes: 1 << 20,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir, config, NOW_MS).expect("open log");
    let append = |log: &mut Log| {
        let first_ts = NOW_MS + log.log_end_offset();
        let buf = batch(PER_BATCH, 100, first_ts);
        log.append(&buf, LEADER_EPOCH, TimestampType::CreateTime, NOW_MS)
            .expect("append");
    };
    while log.log_end_offset() < RECORDS {
        append(&mut log);
    }
    let bases = log.segment_base_offsets();
    let per_segment = bases[1] - bases[0];
    while log.log_end_offset() - log.segment_base_offsets()[log.segment_count() - 1]
        < per_segment / 2
    {
        append(&mut log);
    }
    log
}

fn bench_read(c: &mut Criterion) {
    const FETCH_MAX_BYTES: usize = 1 << 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = build_read_log(dir.path());
    let leo = log.log_end_offset();
    let bases = log.segment_base_offsets();
    let active_base = bases[bases.len() - 1];
    eprintln!(
        "read log: {leo} records, {} segments, {} bytes, active segment from offset {active_base}",
        bases.len(),
        log.size_bytes()
    );

    let mut group = c.benchmark_group("log_read");
    group.throughput(Throughput::Elements(1));
    for (name, lo, hi) in [
        ("random_offset", 0, leo),
        ("closed_segment", bases[0], bases[1]),
        ("active_segment", active_base, leo),
    ] {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let offset = lo + rng.below((hi - lo) as u64) as i64;
                let slice = log
                    .read(black_box(offset), FETCH_MAX_BYTES, leo, true)
                    .expect("read")
                    .expect("offset below the log end has data");
                debug_assert!(slice.first_batch_offset <= offset);
                slice.len
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("find_batch_by_timestamp");
    group.throughput(Throughput::Elements(1));
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    group.bench_function("random_ts", |b| {
        b.iter(|| {
            let ts = NOW_MS + rng.below(leo as u64) as i64;
            log.find_batch_by_timestamp(black_box(ts))
                .expect("lookup")
                .expect("timestamp within the log")
        })
    });
    group.finish();
}

criterion_group!(benches, bench_append, bench_read);
criterion_main!(benches);
