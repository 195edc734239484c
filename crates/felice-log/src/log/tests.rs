//! Tests of `Log`: append/read semantics, rolling, retention, reopen and recovery.

use std::fs::OpenOptions;
use std::io::Write;

use felice_wire::{build_batch, validate_batch, BatchHeader, Batches};
use proptest::prelude::*;

use super::*;

const NOW: i64 = 1_700_000_000_000;

fn batch(records: usize, ts: i64, value_len: usize) -> Vec<u8> {
    let value = vec![b'v'; value_len];
    let recs: Vec<felice_wire::RecordSpec<'_>> = (0..records)
        .map(|i| (None, Some(value.as_slice()), ts + i as i64))
        .collect();
    build_batch(&recs)
}

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        index_interval_bytes: 100,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, config: LogConfig) -> Log {
    Log::open(dir, config, NOW).expect("open")
}

fn append(log: &mut Log, records: usize, ts: i64, value_len: usize) -> AppendInfo {
    let b = batch(records, ts, value_len);
    log.append(&b, 3, TimestampType::CreateTime, NOW)
        .expect("append")
}

/// All batches of the log, read through `read` from the log start, as headers.
fn all_headers(log: &Log) -> Vec<BatchHeader> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while let Some(slice) = log
        .read(offset, usize::MAX / 2, i64::MAX, true)
        .expect("read")
    {
        let bytes = slice.read_bytes().expect("bytes");
        for item in Batches::new(&bytes) {
            let (range, h) = item.expect("whole batches");
            validate_batch(&bytes[range]).expect("valid on disk");
            out.push(h);
        }
        offset = out.last().map_or(offset, |h| h.next_offset());
    }
    out
}

#[test]
fn append_assigns_contiguous_offsets_and_rewrites_batches() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut log = open(dir.path(), small_config());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    let a = append(&mut log, 3, 1000, 10);
    assert_eq!(
        (a.first_offset, a.last_offset, a.max_timestamp),
        (0, 2, 1002)
    );
    assert_eq!(a.log_append_time_ms, -1);
    let mut two = batch(2, 2000, 5);
    two.extend(batch(1, 1500, 5));
    let b = log
        .append(&two, 4, TimestampType::LogAppendTime, NOW)
        .expect("append");
    assert_eq!((b.first_offset, b.last_offset), (3, 5));
    assert_eq!((b.max_timestamp, b.log_append_time_ms), (NOW, NOW));
    assert_eq!(log.log_end_offset(), 6);
    let headers = all_headers(&log);
    let bases: Vec<i64> = headers.iter().map(|h| h.base_offset).collect();
    assert_eq!(bases, vec![0, 3, 5]);
    assert_eq!(headers[0].partition_leader_epoch, 3);
    assert_eq!(headers[1].partition_leader_epoch, 4);
    assert_eq!(headers[2].max_timestamp, NOW);
    assert!(matches!(
        log.append(&[], 0, TimestampType::CreateTime, NOW),
        Err(LogError::EmptyAppend)
    ));
    let mut torn = batch(1, 1, 1);
    torn.pop();
    assert!(matches!(
        log.append(&torn, 0, TimestampType::CreateTime, NOW),
        Err(LogError::CorruptBatch { .. })
    ));
    assert_eq!(log.log_end_offset(), 6, "failed appends change nothing");
}

#[test]
fn read_semantics() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut log = open(dir.path(), small_config());
    // Batches of 5 records at offsets 0, 5, 10, 15.
    for i in 0..4 {
        append(&mut log, 5, 100 * i, 20);
    }
    let one = batch(5, 0, 20).len();
    // Middle of a batch: the whole batch from its start.
    let s = log
        .read(7, 10_000, i64::MAX, false)
        .expect("ok")
        .expect("some");
    assert_eq!(s.first_batch_offset, 5);
    assert_eq!(s.position, one as u64);
    assert_eq!(s.len, 3 * one);
    // max_bytes ends the read at the last whole batch that fits.
    let s = log
        .read(0, one + 10, i64::MAX, false)
        .expect("ok")
        .expect("some");
    assert_eq!(s.len, one);
    let s = log
        .read(0, 3 * one - 1, i64::MAX, true)
        .expect("ok")
        .expect("some");
    assert_eq!(s.len, 2 * one);
    // min_one_batch returns the whole first batch when it is larger than max_bytes.
    let s = log.read(0, 10, i64::MAX, true).expect("ok").expect("some");
    assert_eq!(s.len, one);
    // Without it, an incomplete first batch is no data at all (Kafka's Fetch v3+),
    // also from the middle of a batch.
    assert!(log.read(0, 10, i64::MAX, false).expect("ok").is_none());
    assert!(log.read(7, one - 1, i64::MAX, false).expect("ok").is_none());
    let s = log
        .read(7, one, i64::MAX, false)
        .expect("ok")
        .expect("some");
    assert_eq!((s.position, s.len), (one as u64, one));
    // max_offset: never past the batch containing it.
    let s = log.read(0, 10_000, 10, false).expect("ok").expect("some");
    assert_eq!(s.len, 2 * one);
    let s = log.read(0, 10_000, 12, true).expect("ok").expect("some");
    assert_eq!(s.len, 2 * one);
    assert!(log.read(10, 10_000, 10, true).expect("ok").is_none());
    assert!(log.read(11, 10_000, 12, true).expect("ok").is_none());
    // At the log end: nothing; beyond or below: out of range.
    assert!(log.read(20, 10_000, i64::MAX, true).expect("ok").is_none());
    assert!(matches!(
        log.read(21, 10, i64::MAX, true),
        Err(LogError::OffsetOutOfRange {
            offset: 21,
            log_start: 0,
            log_end: 20
        })
    ));
    assert!(matches!(
        log.read(-1, 10, i64::MAX, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    let bytes = log
        .read(19, 10_000, i64::MAX, false)
        .expect("ok")
        .expect("some")
        .read_bytes()
        .expect("io");
    assert_eq!(BatchHeader::parse(&bytes).expect("header").base_offset, 15);
}

#[test]
fn roll_by_size_and_reads_cross_segments() {
    let dir = tempfile::tempdir().expect("tmp");
    let one = batch(2, 0, 100).len() as u64;
    let config = LogConfig {
        segment_bytes: one * 3,
        ..small_config()
    };
    let mut log = open(dir.path(), config);
    for i in 0..10 {
        append(&mut log, 2, i, 100);
    }
    assert_eq!(log.segment_count(), 4);
    assert_eq!(log.segment_base_offsets(), vec![0, 6, 12, 18]);
    assert_eq!(log.size_bytes(), 10 * one);
    let headers = all_headers(&log);
    assert_eq!(headers.len(), 10);
    assert!(headers
        .windows(2)
        .all(|w| w[0].next_offset() == w[1].base_offset));
    // One segment per call.
    let s = log
        .read(0, usize::MAX / 2, i64::MAX, false)
        .expect("ok")
        .expect("some");
    assert_eq!(s.len as u64, 3 * one);
    for name in [
        "00000000000000000006.log",
        "00000000000000000006.index",
        "00000000000000000006.timeindex",
    ] {
        assert!(dir.path().join(name).exists(), "{name}");
    }
}

#[test]
fn roll_by_time() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = LogConfig {
        segment_ms: 1000,
        ..small_config()
    };
    let mut log = open(dir.path(), config);
    let b = batch(1, NOW, 10);
    log.append(&b, 0, TimestampType::CreateTime, NOW)
        .expect("append");
    let b = batch(1, NOW, 10);
    log.append(&b, 0, TimestampType::CreateTime, NOW + 1000)
        .expect("append");
    assert_eq!(log.segment_count(), 1, "not older than segment.ms yet");
    let b = batch(1, NOW, 10);
    log.append(&b, 0, TimestampType::CreateTime, NOW + 1001)
        .expect("append");
    assert_eq!(log.segment_count(), 2);
    assert_eq!(log.segment_base_offsets(), vec![0, 2]);
}

#[test]
fn roll_when_index_full() {
    let dir = tempfile::tempdir().expect("tmp");
    // 24 bytes: 3 offset entries, 2 time entries (one kept for the closing entry).
    let config = LogConfig {
        segment_index_bytes: 24,
        index_interval_bytes: 1,
        ..small_config()
    };
    let mut log = open(dir.path(), config);
    for i in 0..10 {
        append(&mut log, 1, i, 10);
    }
    assert!(log.segment_count() > 1);
    assert_eq!(all_headers(&log).len(), 10);
    for s in &log.segments {
        assert!(s.offset_index.len() <= 3 && s.time_index.len() <= 2);
    }
}

/// Retention never removes records the ISR may not have: a segment goes only
/// when it lies wholly below the high watermark, so the log start offset never
/// passes it (Kafka's `deletableSegments`).
#[test]
fn retention_stops_at_the_high_watermark() {
    let dir = tempfile::tempdir().expect("tmp");
    let one = batch(1, 0, 100).len() as u64;
    let config = LogConfig {
        segment_bytes: one * 2,
        retention_ms: 1000,
        ..small_config()
    };
    let mut log = open(dir.path(), config);
    // 5 segments of 2 one-record batches, all expired by `NOW`.
    for i in 0..10i64 {
        append(&mut log, 1, i, 100);
    }
    // Segments [0,2) and [2,4) lie below 5; [4,6) holds 5 and stays.
    assert_eq!(log.apply_retention(NOW, 5).expect("ok"), 2);
    assert_eq!(log.log_start_offset(), 4);
    assert_eq!(log.apply_retention(NOW, 5).expect("ok"), 0);
    // Once the high watermark reaches the log end, all but the active go.
    assert_eq!(log.apply_retention(NOW, 10).expect("ok"), 2);
    assert_eq!(log.log_start_offset(), 8);
}

#[test]
fn retention_by_time_and_size() {
    let dir = tempfile::tempdir().expect("tmp");
    let one = batch(1, 0, 100).len() as u64;
    let config = LogConfig {
        segment_bytes: one * 2,
        ..small_config()
    };
    let mut log = open(dir.path(), config.clone());
    // 5 segments of 2 batches; timestamps by segment: 1000s, 2000s, ...
    for i in 0..10i64 {
        append(&mut log, 1, 1000 * (i / 2 + 1) + i, 100);
    }
    assert_eq!(log.segment_count(), 5);
    assert_eq!(
        log.apply_retention(NOW, i64::MAX).expect("ok"),
        0,
        "infinite retention"
    );

    log.set_config(LogConfig {
        retention_ms: 1000,
        ..config.clone()
    })
    .expect("config");
    // now - 2003 > 1000 but now - 3005 == 1000 is not: two segments go.
    assert_eq!(log.apply_retention(4005, i64::MAX).expect("ok"), 2);
    assert_eq!(log.log_start_offset(), 4);
    assert!(matches!(
        log.read(3, 100, i64::MAX, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert!(log.read(4, 100, i64::MAX, true).expect("ok").is_some());
    // The active segment is never removed, even when expired.
    assert_eq!(log.apply_retention(i64::MAX / 2, i64::MAX).expect("ok"), 2);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), 8);

    let dir = tempfile::tempdir().expect("tmp");
    let mut log = open(dir.path(), config.clone());
    for i in 0..10i64 {
        append(&mut log, 1, i, 100);
    }
    log.set_config(LogConfig {
        retention_bytes: (one * 5) as i64,
        ..config
    })
    .expect("config");
    // 10 batches; dropping the 2 oldest segments leaves 6 >= 5, a third would leave 4.
    assert_eq!(log.apply_retention(NOW, i64::MAX).expect("ok"), 2);
    assert_eq!(log.size_bytes(), 6 * one);
    assert_eq!(log.log_start_offset(), 4);
    drop(log);
    let log = open(dir.path(), small_config());
    assert_eq!(log.log_start_offset(), 4, "log start offset persisted");
}

#[test]
fn reads_survive_segment_deletion() {
    let dir = tempfile::tempdir().expect("tmp");
    let one = batch(1, 0, 100).len() as u64;
    let mut log = open(
        dir.path(),
        LogConfig {
            segment_bytes: one,
            ..small_config()
        },
    );
    for i in 0..3 {
        append(&mut log, 1, i, 100);
    }
    let slice = log
        .read(0, 1000, i64::MAX, true)
        .expect("ok")
        .expect("some");
    log.delete_records_before(2).expect("delete records");
    assert_eq!(log.log_start_offset(), 2);
    assert_eq!(log.segment_count(), 1);
    assert!(!dir.path().join("00000000000000000000.log").exists());
    let bytes = slice.read_bytes().expect("still readable");
    assert_eq!(validate_batch(&bytes).expect("valid").base_offset, 0);
    assert!(matches!(
        log.delete_records_before(4),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    log.delete_records_before(3).expect("up to LEO");
    assert_eq!(log.log_start_offset(), 3);
    assert!(log.read(3, 10, i64::MAX, true).expect("ok").is_none());
}

#[test]
fn reopen_after_close_keeps_everything() {
    let dir = tempfile::tempdir().expect("tmp");
    let one = batch(3, 0, 50).len() as u64;
    let config = LogConfig {
        segment_bytes: one * 4,
        ..small_config()
    };
    let mut log = open(dir.path(), config.clone());
    for i in 0..10 {
        append(&mut log, 3, 10 * i, 50);
    }
    let before = all_headers(&log);
    let segments = log.segment_base_offsets();
    let max_before = log.max_timestamp_batch().expect("ok");
    log.close().expect("close");

    let mut log = open(dir.path(), config.clone());
    assert_eq!(log.log_end_offset(), 30);
    assert_eq!(log.recovery_point(), 30);
    assert_eq!(log.segment_base_offsets(), segments);
    assert_eq!(all_headers(&log), before);
    assert_eq!(log.max_timestamp_batch().expect("ok"), max_before);
    let a = append(&mut log, 1, 5, 50);
    assert_eq!(a.first_offset, 30);
    log.close().expect("close");
    let log = open(dir.path(), config);
    assert_eq!(log.log_end_offset(), 31);
    assert!(
        log.segments.iter().all(|s| !s.dirty),
        "clean open trusted all segments"
    );
}

#[test]
fn truncate_to_cuts_and_appends_continue() {
    let dir = tempfile::tempdir().expect("tmp");
    let one = batch(2, 0, 50).len() as u64;
    let mut log = open(
        dir.path(),
        LogConfig {
            segment_bytes: one * 2,
            ..small_config()
        },
    );
    for i in 0..6 {
        append(&mut log, 2, i, 50);
    }
    log.flush().expect("flush");
    assert_eq!(log.recovery_point(), 12);
    log.truncate_to(7).expect("truncate");
    assert_eq!(log.log_end_offset(), 6, "the batch straddling 7 goes whole");
    assert_eq!(log.recovery_point(), 6);
    assert_eq!(log.segment_base_offsets(), vec![0, 4]);
    assert_eq!(append(&mut log, 1, 0, 50).first_offset, 6);
    log.truncate_to(4).expect("truncate");
    assert_eq!(log.log_end_offset(), 4);
    assert_eq!(log.segment_base_offsets(), vec![0, 4]);
    drop(log);
    let log = open(dir.path(), small_config());
    assert_eq!(log.log_end_offset(), 4);
    assert_eq!(all_headers(&log).len(), 2);
}

#[test]
fn timestamp_lookups() {
    let dir = tempfile::tempdir().expect("tmp");
    let one = batch(2, 0, 50).len() as u64;
    let mut log = open(
        dir.path(),
        LogConfig {
            segment_bytes: one * 3,
            index_interval_bytes: 1,
            ..small_config()
        },
    );
    // Non-monotonic timestamps: the answer is the first batch in offset order.
    let ts = [100, 300, 200, 500, 400, 500, 50, 450];
    for &t in &ts {
        append(&mut log, 2, t, 50);
    }
    let headers = all_headers(&log);
    for target in [0, 100, 101, 250, 301, 450, 451, 500, 501, 1000] {
        let want = headers
            .iter()
            .find(|h| h.max_timestamp >= target)
            .map(|h| h.base_offset);
        let got = log
            .find_batch_by_timestamp(target)
            .expect("ok")
            .map(|b| BatchHeader::parse(&b).expect("header").base_offset);
        assert_eq!(got, want, "target {target}");
    }
    let max = log.max_timestamp_batch().expect("ok").expect("some");
    assert_eq!(
        BatchHeader::parse(&max).expect("h").base_offset,
        6,
        "first batch reaching 501"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn timestamp_lookup_matches_linear_scan(
        stamps in proptest::collection::vec(0i64..1000, 1..40),
        targets in proptest::collection::vec(0i64..1100, 1..10),
        interval in 1u64..400,
        close_and_reopen in any::<bool>(),
    ) {
        let dir = tempfile::tempdir()?;
        let one = batch(1, 0, 30).len() as u64;
        let config = LogConfig { segment_bytes: one * 5, index_interval_bytes: interval, ..small_config() };
        let mut log = open(dir.path(), config.clone());
        for &t in &stamps {
            append(&mut log, 1, t, 30);
        }
        if close_and_reopen {
            log.close().expect("close");
            log = open(dir.path(), config);
        }
        for t in targets {
            let want = stamps.iter().position(|&s| s >= t).map(|p| p as i64);
            let got = log
                .find_batch_by_timestamp(t)
                .expect("ok")
                .map(|b| BatchHeader::parse(&b).expect("h").base_offset);
            prop_assert_eq!(got, want);
        }
        // Reads from every offset find the batch holding it.
        for o in 0..stamps.len() as i64 {
            let s = log.read(o, 1, i64::MAX, true).expect("ok").expect("some");
            prop_assert_eq!(s.first_batch_offset, o);
        }
    }
}

/// Appends `n` batches then cuts/corrupts the file tail with `damage`, reopens without
/// a clean close and checks the longest valid prefix survives.
fn recovery_case(cut: Option<usize>, garbage: &[u8]) {
    let dir = tempfile::tempdir().expect("tmp");
    let mut log = open(dir.path(), small_config());
    let mut sizes = Vec::new();
    for i in 0..4 {
        sizes.push(append(&mut log, 2, i, 40).last_offset);
    }
    let last_len = batch(2, 0, 40).len();
    log.flush().expect("flush at offset 8");
    // The last batch is not covered by the recovery point.
    let info = append(&mut log, 2, 99, 40);
    assert_eq!(info.first_offset, 8);
    drop(log); // a crash: no close
    let path = dir.path().join("00000000000000000000.log");
    let full = std::fs::metadata(&path).expect("meta").len();
    let file = OpenOptions::new().write(true).open(&path).expect("open");
    if let Some(keep) = cut {
        file.set_len(full - last_len as u64 + keep as u64)
            .expect("cut");
    }
    let mut file = OpenOptions::new().append(true).open(&path).expect("open");
    file.write_all(garbage).expect("garbage");
    drop(file);

    let mut log = open(dir.path(), small_config());
    let expect_leo = if cut.is_some() { 8 } else { 10 };
    assert_eq!(
        log.log_end_offset(),
        expect_leo,
        "cut {cut:?} garbage {}",
        garbage.len()
    );
    assert_eq!(all_headers(&log).len() as i64, expect_leo / 2);
    let a = append(&mut log, 1, 7, 10);
    assert_eq!(a.first_offset, expect_leo);
    assert_eq!(all_headers(&log).len() as i64, expect_leo / 2 + 1);
}

#[test]
fn recovery_of_a_tail_torn_at_every_byte() {
    let last_len = batch(2, 0, 40).len();
    for keep in 0..last_len {
        recovery_case(Some(keep), &[]);
    }
    recovery_case(None, &[]);
}

#[test]
fn recovery_drops_appended_garbage_and_corruption() {
    recovery_case(None, &[0xde, 0xad, 0xbe, 0xef]);
    recovery_case(None, &[0; 100]);
    // A valid-looking header with a bad CRC.
    let mut fake = batch(1, 0, 5);
    let n = fake.len();
    fake[n - 1] ^= 1;
    recovery_case(None, &fake);
    recovery_case(Some(30), &fake);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn recovery_of_random_garbage_keeps_the_valid_prefix(
        garbage in proptest::collection::vec(any::<u8>(), 1..300),
    ) {
        recovery_case(None, &garbage);
    }
}

#[test]
fn corruption_in_a_middle_segment_drops_later_segments() {
    let dir = tempfile::tempdir().expect("tmp");
    let one = batch(1, 0, 40).len() as u64;
    let config = LogConfig {
        segment_bytes: one * 2,
        ..small_config()
    };
    let mut log = open(dir.path(), config.clone());
    for i in 0..6 {
        append(&mut log, 1, i, 40);
    }
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4]);
    drop(log); // no recovery point at all: everything is re-validated
    let path = dir.path().join("00000000000000000002.log");
    let mut bytes = std::fs::read(&path).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).expect("write");
    let log = open(dir.path(), config);
    assert_eq!(log.segment_base_offsets(), vec![0, 2]);
    assert_eq!(log.log_end_offset(), 3);
    assert!(!dir.path().join("00000000000000000004.log").exists());
}

#[test]
fn clean_reopen_reads_only_the_tail() {
    // A trusted open must not need the data: corrupt a closed segment's middle and
    // check it is not re-validated (it is below the recovery point).
    let dir = tempfile::tempdir().expect("tmp");
    let one = batch(1, 0, 40).len() as u64;
    let config = LogConfig {
        segment_bytes: one * 2,
        ..small_config()
    };
    let mut log = open(dir.path(), config.clone());
    for i in 0..6 {
        append(&mut log, 1, i, 40);
    }
    log.close().expect("close");
    let path = dir.path().join("00000000000000000000.log");
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[70] ^= 0xff; // inside the records of the first batch
    std::fs::write(&path, &bytes).expect("write");
    let log = open(dir.path(), config);
    assert_eq!(log.log_end_offset(), 6);
    assert_eq!(log.segment_count(), 3);
}

#[test]
fn config_is_validated_and_delete_removes_dir() {
    let dir = tempfile::tempdir().expect("tmp");
    let sub = dir.path().join("topic-0");
    let bad = LogConfig {
        segment_bytes: 1 << 40,
        ..LogConfig::default()
    };
    assert!(matches!(
        Log::open(&sub, bad, NOW),
        Err(LogError::InvalidConfig { .. })
    ));
    let mut log = open(&sub, small_config());
    assert!(log
        .set_config(LogConfig {
            segment_index_bytes: 8,
            ..small_config()
        })
        .is_err());
    append(&mut log, 1, 1, 1);
    log.flush_if_due(NOW).expect("not due");
    log.delete().expect("delete");
    assert!(!sub.exists());
}

#[test]
fn flush_by_message_count_moves_the_recovery_point() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut log = open(
        dir.path(),
        LogConfig {
            flush_interval_messages: 3,
            flush_interval_ms: 1000,
            ..small_config()
        },
    );
    append(&mut log, 2, 1, 1);
    assert_eq!(log.recovery_point(), 0);
    append(&mut log, 1, 1, 1);
    assert_eq!(log.recovery_point(), 3);
    append(&mut log, 1, 1, 1);
    log.flush_if_due(NOW + 999).expect("ok");
    assert_eq!(log.recovery_point(), 3);
    log.flush_if_due(NOW + 1000).expect("ok");
    assert_eq!(log.recovery_point(), 4);
}

/// What a linear scan of the appended batches says: `(base, last, position, max_ts)`.
type Expected = Vec<(i64, i64, u64, i64)>;

/// Fills one active segment with `n` batches of 1–4 records, an index entry after
/// nearly every batch (thousands: far more than the tail cache, and more than one
/// search chunk) and non-monotonic timestamps.
fn many_entries_log(dir: &Path, n: usize) -> (Log, LogConfig, Expected) {
    let config = LogConfig {
        segment_bytes: 64 << 20,
        index_interval_bytes: 1,
        ..small_config()
    };
    let mut log = open(dir, config.clone());
    let mut expected = Vec::new();
    let mut position = 0u64;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let records = 1 + (seed % 4) as usize;
        // Drifting up with jitter: many time index entries, not one per batch.
        let ts = 1_000 + 20 * i as i64 + ((seed >> 8) % 200) as i64;
        let b = batch(records, ts, 8);
        let len = b.len() as u64;
        let info = log
            .append(&b, 1, TimestampType::CreateTime, NOW)
            .expect("append");
        expected.push((
            info.first_offset,
            info.last_offset,
            position,
            info.max_timestamp,
        ));
        position += len;
    }
    (log, config, expected)
}

/// `read` and the timestamp lookup at every offset / many timestamps, against the
/// linear scan of `expected`.
fn check_against_linear_scan(log: &Log, expected: &Expected) {
    let leo = log.log_end_offset();
    let end = expected.last().map_or(0, |e| e.1 + 1);
    for o in 0..end {
        let &(base, _, pos, _) = expected
            .iter()
            .find(|(_, last, _, _)| *last >= o)
            .expect("offset below the log end");
        let s = log
            .read(o, 100, i64::MAX, true)
            .expect("read")
            .expect("some");
        assert_eq!(
            (s.first_batch_offset, s.position),
            (base, pos),
            "offset {o}"
        );
        // The high watermark bound: never past the batch holding `max_offset`.
        let hw = (o + 37).min(leo);
        let s = log
            .read(o, usize::MAX / 2, hw, true)
            .expect("read")
            .expect("some");
        let limit = expected
            .iter()
            .find(|(_, last, _, _)| *last >= hw)
            .map_or(log.segments[0].size, |e| e.2);
        assert_eq!(s.position + s.len as u64, limit, "offset {o} hw {hw}");
    }
    let top = expected.iter().map(|e| e.3).max().unwrap_or(0) + 2;
    for target in (0..top).step_by(7) {
        let want = expected.iter().find(|e| e.3 >= target).map(|e| e.0);
        let got = log
            .find_batch_by_timestamp(target)
            .expect("ok")
            .map(|b| BatchHeader::parse(&b).expect("header").base_offset);
        assert_eq!(got, want, "timestamp {target}");
    }
}

#[test]
fn active_segment_lookups_over_many_entries_match_linear_scan() {
    let dir = tempfile::tempdir().expect("tmp");
    let (log, _, expected) = many_entries_log(dir.path(), 3_000);
    assert_eq!(log.segment_count(), 1, "everything in the active segment");
    let active = log.active();
    assert!(
        active.offset_index.len() > 2_000,
        "{}",
        active.offset_index.len()
    );
    assert!(active.time_index.len() > 500, "{}", active.time_index.len());
    // Only the tail of each index is in memory.
    assert_eq!(active.offset_index.cached(), crate::index::TAIL_ENTRIES);
    assert!(active.time_index.cached() <= crate::index::TAIL_ENTRIES);
    check_against_linear_scan(&log, &expected);
}

#[test]
fn many_entries_answer_the_same_after_reopen() {
    let dir = tempfile::tempdir().expect("tmp");
    let (log, config, expected) = many_entries_log(dir.path(), 2_000);
    log.close().expect("close");
    // Clean reopen: the trusted path loads only the tails of the index files.
    let log = open(dir.path(), config.clone());
    assert!(log.segments.iter().all(|s| !s.dirty), "trusted open");
    assert_eq!(
        log.active().offset_index.cached(),
        crate::index::TAIL_ENTRIES
    );
    check_against_linear_scan(&log, &expected);
    // Crash reopen (no recovery point): indexes rebuilt by recovery, same answers.
    drop(log);
    std::fs::remove_file(dir.path().join(RECOVERY_POINT_FILE)).expect("rm");
    let mut log = open(dir.path(), config.clone());
    assert!(log.active().dirty, "recovered");
    check_against_linear_scan(&log, &expected);
    // Roll: the same entries now answered from a closed segment's files.
    log.set_config(LogConfig {
        segment_ms: 1,
        ..config
    })
    .expect("config");
    let b = batch(1, 1, 8);
    log.append(&b, 1, TimestampType::CreateTime, NOW + 10)
        .expect("append");
    assert_eq!(log.segment_count(), 2);
    check_against_linear_scan(&log, &expected);
}

#[test]
fn closed_segments_hold_a_bounded_number_of_descriptors() {
    let dir = tempfile::tempdir().expect("tmp");
    let one = batch(1, 0, 40).len() as u64;
    let config = LogConfig {
        segment_bytes: one * 2,
        ..small_config()
    };
    let mut log = open(dir.path(), config.clone());
    for i in 0..20 {
        append(&mut log, 1, i, 40);
    }
    assert_eq!(log.segment_count(), 10);
    assert!(log.segments.iter().rev().skip(1).all(|s| s.file.is_none()));
    assert_eq!(all_headers(&log).len(), 20);
    assert!(log.files.len() <= crate::segment::CLOSED_FILES_OPEN);
    // Reading an evicted segment reopens it; a slice outlives its eviction.
    let slice = log
        .read(0, 1000, i64::MAX, true)
        .expect("ok")
        .expect("some");
    for o in (2..20).step_by(2) {
        log.read(o, 1000, i64::MAX, true)
            .expect("ok")
            .expect("some");
    }
    let bytes = slice.read_bytes().expect("io");
    assert_eq!(BatchHeader::parse(&bytes).expect("header").base_offset, 0);
    // Deleted segments leave the cache (their disk space must not stay held).
    log.delete_records_before(18).expect("delete");
    assert_eq!(log.files.len(), 0, "only segments below 18 were cached");
    assert_eq!(all_headers(&log).len(), 2);
    // Flush syncs closed dirty segments without keeping their descriptors.
    log.flush().expect("flush");
    log.close().expect("close");
    let log = open(dir.path(), config);
    assert!(log.segments.iter().rev().skip(1).all(|s| s.file.is_none()));
    assert_eq!(log.files.len(), 0);
    assert_eq!(all_headers(&log).len(), 2);
}
/// The per-partition costs quoted in the crate docs (64-bit targets); a regression
/// here multiplies by every partition and segment on a broker.
#[test]
fn per_partition_memory_stays_small() {
    assert_eq!(
        std::mem::size_of::<crate::producer_state::ProducerEntry>(),
        168,
        "the per-producer cost quoted in producer_state.rs"
    );
    // 320 until the leader-epoch cache (a Vec, 24 bytes) joined the log.
    assert!(
        std::mem::size_of::<Log>() <= 344,
        "{}",
        std::mem::size_of::<Log>()
    );
    assert!(
        std::mem::size_of::<Segment>() <= 136,
        "{}",
        std::mem::size_of::<Segment>()
    );
    let dir = tempfile::tempdir().expect("tmp");
    let (log, _, _) = many_entries_log(dir.path(), 1_000);
    let active = log.active();
    assert_eq!(active.offset_index.cached(), crate::index::TAIL_ENTRIES);
    assert!(active.time_index.cached() <= crate::index::TAIL_ENTRIES);
}

/// Descriptors of this process open on files under `dir` (robust against the tests
/// running beside this one, which use other directories).
fn fds_under(dir: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

#[test]
fn a_log_at_rest_holds_one_descriptor() {
    const N: usize = 20;
    let dir = tempfile::tempdir().expect("tmp");
    let one = batch(4, NOW, 300).len() as u64;
    let config = LogConfig {
        segment_bytes: one * 6,
        ..small_config()
    };
    let paths: Vec<PathBuf> = (0..N).map(|i| dir.path().join(format!("t-{i}"))).collect();
    // New, empty logs: one `.log` each.
    let mut logs: Vec<Log> = paths.iter().map(|p| open(p, config.clone())).collect();
    assert_eq!(fds_under(dir.path()), N);
    // Appends that roll and leave index entries pending and written.
    for log in &mut logs {
        for i in 0..40 {
            append(log, 4, NOW + i, 300);
        }
        assert!(log.segment_count() > 3);
        assert!(log.active().offset_index.pending() > 0);
    }
    assert_eq!(fds_under(dir.path()), N, "rolls keep no closed descriptor");
    // A read of a closed segment caches its descriptor: the worst case, 1 + 1 + slices.
    let slices: Vec<ReadSlice> = logs
        .iter()
        .map(|log| log.read(0, 100, i64::MAX, true).expect("ok").expect("some"))
        .collect();
    assert_eq!(fds_under(dir.path()), 2 * N);
    for log in &logs {
        for o in (0..160).step_by(7) {
            drop(log.read(o, 100, i64::MAX, true).expect("ok"));
        }
    }
    assert_eq!(fds_under(dir.path()), 3 * N, "cache of 1 + one slice each");
    drop(slices);
    assert!(fds_under(dir.path()) <= 2 * N);
    for log in logs {
        log.close().expect("close");
    }
    assert_eq!(fds_under(dir.path()), 0);
    // Reopened (trusted) logs and recovered ones alike: one each.
    let logs: Vec<Log> = paths.iter().map(|p| open(p, config.clone())).collect();
    assert!(logs.iter().all(|l| l.segments.iter().all(|s| !s.dirty)));
    assert_eq!(fds_under(dir.path()), N);
    drop(logs);
    for p in &paths {
        std::fs::remove_file(p.join(RECOVERY_POINT_FILE)).expect("rm");
    }
    let logs: Vec<Log> = paths.iter().map(|p| open(p, config.clone())).collect();
    assert!(logs.iter().all(|l| l.active().dirty), "recovered");
    assert_eq!(fds_under(dir.path()), N);
}

#[test]
fn a_new_log_creates_one_file_and_syncs_nothing_until_data() {
    let dir = tempfile::tempdir().expect("tmp");
    let sub = dir.path().join("topic-0");
    let names = || {
        let mut v: Vec<String> = std::fs::read_dir(&sub)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let log = open(&sub, small_config());
    assert_eq!(names(), ["00000000000000000000.log"]);
    assert!(log.is_flushed());
    log.close().expect("close");
    assert_eq!(
        names(),
        ["00000000000000000000.log"],
        "an empty log writes nothing"
    );
    // Reopen without a checkpoint: the empty segment "recovers" trivially.
    let mut log = open(&sub, small_config());
    assert!(log.is_flushed() && !log.active().dirty);
    // One small batch: no index entry, so no index file until the segment closes.
    append(&mut log, 1, NOW, 10);
    assert!(!log.is_flushed());
    log.close().expect("close");
    assert_eq!(
        names(),
        [
            "00000000000000000000.log",
            "00000000000000000001.snapshot",
            crate::epoch_cache::EPOCH_CHECKPOINT_FILE,
            RECOVERY_POINT_FILE
        ]
    );
    let text = std::fs::read_to_string(sub.join(RECOVERY_POINT_FILE)).expect("read");
    assert_eq!(text.len() as u64, CHECKPOINT_LEN);
    let mut log = open(&sub, small_config());
    assert_eq!((log.log_end_offset(), log.recovery_point()), (1, 1));
    assert!(!log.active().dirty, "trusted without index files");
    // A roll gives the closed segment both index files.
    log.set_config(LogConfig {
        segment_ms: 1,
        ..small_config()
    })
    .expect("config");
    let b = batch(1, NOW, 10);
    log.append(&b, 0, TimestampType::CreateTime, NOW + 10)
        .expect("append");
    assert_eq!(log.segment_count(), 2);
    log.close().expect("close");
    assert_eq!(
        names(),
        [
            "00000000000000000000.index",
            "00000000000000000000.log",
            "00000000000000000000.timeindex",
            "00000000000000000001.log",
            "00000000000000000001.snapshot",
            "00000000000000000002.snapshot",
            crate::epoch_cache::EPOCH_CHECKPOINT_FILE,
            RECOVERY_POINT_FILE
        ]
    );
    let log = open(&sub, small_config());
    assert!(log.segments.iter().all(|s| !s.dirty), "trusted");
    assert_eq!(all_headers(&log).len(), 2);
}

#[test]
fn checkpoints_are_overwritten_in_place_and_torn_ones_are_absent() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join(RECOVERY_POINT_FILE);
    write_recovery_point(dir.path(), 12, true).expect("create");
    assert_eq!(read_checkpoint(&path).expect("io"), Some(12));
    let inode = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).expect("m"));
    let before = inode();
    write_recovery_point(dir.path(), 1_234_567, false).expect("in place");
    assert_eq!(read_checkpoint(&path).expect("io"), Some(1_234_567));
    assert_eq!(inode(), before, "same file");
    // The older format is read, and replaced by the new one.
    std::fs::write(&path, "77\n").expect("old format");
    assert_eq!(read_checkpoint(&path).expect("io"), Some(77));
    write_recovery_point(dir.path(), 78, true).expect("replace");
    assert_eq!(std::fs::metadata(&path).expect("m").len(), CHECKPOINT_LEN);
    assert_eq!(read_checkpoint(&path).expect("io"), Some(78));
    // Any torn mix of two values reads as absent (or as one of them).
    let (old, new) = (encode_checkpoint(999), encode_checkpoint(1000));
    for cut in 0..=old.len() {
        let mixed = format!("{}{}", &new[..cut], &old[cut..]);
        std::fs::write(&path, &mixed).expect("write");
        let got = read_checkpoint(&path).expect("io");
        assert!(
            got.is_none() || got == Some(999) || got == Some(1000),
            "{mixed:?}"
        );
    }
    std::fs::write(&path, "").expect("write");
    assert_eq!(read_checkpoint(&path).expect("io"), None);
}

/// Lookups agree with a linear scan while the active segment's newest index entries
/// are only in memory, after a flush wrote them, and after a reopen.
#[test]
fn lookups_with_pending_and_written_index_entries() {
    let dir = tempfile::tempdir().expect("tmp");
    let (mut log, config, expected) = many_entries_log(dir.path(), 1_030);
    let index_file = dir.path().join("00000000000000000000.index");
    let pending = log.active().offset_index.pending();
    assert!(pending > 0 && pending < crate::index::WRITE_BATCH);
    let total = log.active().offset_index.len();
    assert_eq!(
        std::fs::metadata(&index_file).expect("m").len(),
        8 * (total - pending as u64),
        "only whole batches written"
    );
    check_against_linear_scan(&log, &expected);
    log.flush().expect("flush");
    assert_eq!(log.active().offset_index.pending(), 0);
    assert_eq!(std::fs::metadata(&index_file).expect("m").len(), 8 * total);
    assert_eq!(log.recovery_point(), log.log_end_offset());
    check_against_linear_scan(&log, &expected);
    log.close().expect("close");
    let log = open(dir.path(), config);
    assert!(!log.active().dirty, "trusted");
    check_against_linear_scan(&log, &expected);
}

/// A crash (drop without close) while index entries are pending, both for a log never
/// flushed and for one flushed mid-segment: the reopened log rebuilds the indexes and
/// answers as a linear scan says; its index files match a full recovery's.
#[test]
fn crash_with_pending_index_entries_then_reopen() {
    for flush_first in [false, true] {
        let dir = tempfile::tempdir().expect("tmp");
        let (mut log, config, mut expected) = many_entries_log(dir.path(), 700);
        // Its batches' timestamps are far in the past: after a recovery, `segment.ms`
        // would roll at the next append, which is not what this test is about.
        let config = LogConfig {
            segment_ms: i64::MAX,
            ..config
        };
        if flush_first {
            log.flush().expect("flush");
            let mut position = log.active().size;
            for i in 0..100 {
                let b = batch(2, 50_000 + i, 8);
                let len = b.len() as u64;
                let info = log
                    .append(&b, 1, TimestampType::CreateTime, NOW)
                    .expect("append");
                expected.push((
                    info.first_offset,
                    info.last_offset,
                    position,
                    info.max_timestamp,
                ));
                position += len;
            }
        }
        let leo = log.log_end_offset();
        let entries = log.active().offset_index.len();
        let time_entries = log.active().time_index.len();
        assert!(log.active().offset_index.pending() > 0);
        assert!(log.recovery_point() < leo);
        drop(log); // the crash

        let mut log = open(dir.path(), config.clone());
        assert_eq!(log.log_end_offset(), leo, "flush first: {flush_first}");
        assert!(log.active().dirty, "recovered");
        assert_eq!(log.active().offset_index.len(), entries);
        assert_eq!(log.active().time_index.len(), time_entries);
        check_against_linear_scan(&log, &expected);
        // (Timestamps stay small: the check probes every 7th up to the largest.)
        let info = append(&mut log, 1, 60_000, 8);
        assert_eq!(info.first_offset, leo);
        let position = log.active().size - batch(1, 0, 8).len() as u64;
        expected.push((leo, leo, position, 60_000));
        log.close().expect("close");
        let read =
            |ext: &str| std::fs::read(dir.path().join(format!("00000000000000000000.{ext}")));
        let (index, time) = (
            read("index").expect("index"),
            read("timeindex").expect("time"),
        );
        assert_eq!(index.len() as u64, 8 * log_entries(dir.path(), &config));
        // A full recovery from the data alone writes the same files.
        std::fs::remove_file(dir.path().join(RECOVERY_POINT_FILE)).expect("rm");
        let log = open(dir.path(), config.clone());
        log.close().expect("close");
        assert_eq!(read("index").expect("index"), index);
        assert_eq!(read("timeindex").expect("time"), time);
        let log = open(dir.path(), config.clone());
        assert!(!log.active().dirty, "trusted");
        check_against_linear_scan(&log, &expected);
    }
}

/// Offset index entries of the (single-segment) log at `dir` after a clean open.
fn log_entries(dir: &Path, config: &LogConfig) -> u64 {
    let log = open(dir, config.clone());
    let n = log.active().offset_index.len();
    drop(log);
    n
}

/// With the time index full, the max timestamp may lie before the last offset entry
/// without a time entry: a clean close must still let a reopen find it.
#[test]
fn max_timestamp_survives_a_full_time_index() {
    let dir = tempfile::tempdir().expect("tmp");
    // 24 bytes: 3 offset entries, 2 time entries of which 1 regular.
    let config = LogConfig {
        segment_index_bytes: 24,
        index_interval_bytes: 1,
        ..small_config()
    };
    let mut log = open(dir.path(), config.clone());
    let mut all = Vec::new();
    for ts in [10, 20, 50, 30] {
        all.extend(batch(1, ts, 10));
    }
    log.append(&all, 0, TimestampType::CreateTime, NOW)
        .expect("append");
    assert_eq!(log.segment_count(), 1);
    assert!(log.active().time_entry_skipped);
    let max = log.max_timestamp_batch().expect("ok").expect("some");
    assert_eq!(BatchHeader::parse(&max).expect("h").max_timestamp, 50);
    log.flush().expect("flush");
    log.close().expect("close");
    let log = open(dir.path(), config);
    assert!(!log.active().dirty, "trusted");
    let max = log.max_timestamp_batch().expect("ok").expect("some");
    assert_eq!(BatchHeader::parse(&max).expect("h").max_timestamp, 50);
    let found = log.find_batch_by_timestamp(40).expect("ok").expect("some");
    assert_eq!(BatchHeader::parse(&found).expect("h").base_offset, 2);
}

/// Timings quoted in the commit message: `cargo test -p felice-log --release --lib --
/// --ignored --nocapture open_and_close_costs` (on the disk of the temp dir). The
/// `PHASE` lines on stderr delimit the timed regions for `strace -f`.
#[test]
#[ignore = "timing, run by hand"]
fn open_and_close_costs() {
    use std::time::Instant;
    const N: usize = 200;
    let dir = tempfile::tempdir().expect("tmp");
    let config = LogConfig::default();
    let path = |kind: &str, i: usize| dir.path().join(format!("{kind}-{i}"));
    let open_all = |kind: &str| -> Vec<Log> {
        (0..N)
            .map(|i| open(&path(kind, i), config.clone()))
            .collect()
    };
    let fill = |logs: &mut Vec<Log>| {
        for log in logs.iter_mut() {
            for j in 0..16 {
                append(log, 10, NOW + j, 100);
            }
        }
    };
    let mut report = Vec::new();
    let mut timed = |name: &str, f: &mut dyn FnMut()| {
        // One write per marker, so `strace` shows it whole.
        std::io::stderr()
            .write_all(format!("PHASE {name}\n").as_bytes())
            .expect("stderr");
        let start = Instant::now();
        f();
        let ms = start.elapsed().as_secs_f64() * 1e3 / N as f64;
        eprintln!("PHASE end");
        report.push(format!("{name} {ms:.3}"));
    };
    let mut logs = Vec::new();
    timed("open_new", &mut || logs = open_all("new"));
    timed("close_new_empty", &mut || {
        logs.drain(..).for_each(|l| l.close().expect("close"))
    });
    timed("reopen_empty", &mut || logs = open_all("new"));
    drop(std::mem::take(&mut logs));
    let mut logs = open_all("data");
    fill(&mut logs);
    timed("first_close_after_appends", &mut || {
        logs.drain(..).for_each(|l| l.close().expect("close"))
    });
    let mut logs = open_all("data");
    fill(&mut logs);
    timed("close_after_appends", &mut || {
        logs.drain(..).for_each(|l| l.close().expect("close"))
    });
    let mut logs = open_all("data");
    fill(&mut logs);
    timed("flush_after_appends", &mut || {
        logs.iter_mut().for_each(|l| l.flush().expect("flush"))
    });
    timed("close_idle", &mut || {
        logs.drain(..).for_each(|l| l.close().expect("close"))
    });
    timed("reopen_with_data", &mut || logs = open_all("data"));
    assert!(logs.iter().all(|l| l.log_end_offset() == 3 * 160));
    println!("per log, ms: {}", report.join(", "));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Every read holds whole batches only: exactly the longest run of batches from
    /// the one holding the start offset that fits `max_bytes` (the first one whatever
    /// its size with `min_one_batch`, none when it is too big without), over closed and
    /// active segments and with index entries every few batches.
    #[test]
    fn reads_end_at_batch_boundaries(
        sizes in proptest::collection::vec((1usize..6, 1usize..400), 1..60),
        probes in proptest::collection::vec((0usize..60, 1usize..3000, any::<bool>()), 1..20),
    ) {
        let dir = tempfile::tempdir().expect("tmp");
        let mut log = open(dir.path(), LogConfig {
            segment_bytes: 8 << 10,
            index_interval_bytes: 300,
            retention_ms: -1,
            ..LogConfig::default()
        });
        // (base offset, length, segment base) of every batch.
        let mut batches: Vec<(i64, usize)> = Vec::new();
        for (records, value_len) in &sizes {
            let info = append(&mut log, *records, NOW, *value_len);
            batches.push((info.first_offset, batch(*records, NOW, *value_len).len()));
        }
        for (pick, max_bytes, min_one) in probes {
            let i = pick % batches.len();
            let (start, first_len) = batches[i];
            let got = log.read(start, max_bytes, i64::MAX, min_one).expect("read");
            // Batches from i within the same segment as batch i.
            let seg_base = log.segments[log.segment_index_for(start)].base_offset;
            let seg_end = log
                .segments
                .get(log.segment_index_for(start) + 1)
                .map_or(i64::MAX, |s| s.base_offset);
            prop_assert!(start >= seg_base);
            let mut expect = 0usize;
            for (base, len) in &batches[i..] {
                if *base >= seg_end || expect + len > max_bytes.max(if min_one { first_len } else { 0 }) {
                    break;
                }
                expect += len;
            }
            match got {
                None => prop_assert_eq!(expect, 0),
                Some(slice) => {
                    prop_assert_eq!(slice.len, expect);
                    let bytes = slice.read_bytes().expect("bytes");
                    let whole: usize = Batches::new(&bytes)
                        .map(|b| b.expect("whole batches").0.len())
                        .sum();
                    prop_assert_eq!(whole, bytes.len());
                }
            }
        }
    }
}

/// `append_is_quick` is false exactly when an append would roll a segment or fsync
/// for `flush.messages`, and for input `append` refuses.
#[test]
fn append_is_quick_flags_rolls_and_flushes() {
    let dir = tempfile::tempdir().expect("tmp");
    let one = batch(5, NOW, 100);
    let mut log = open(
        dir.path(),
        LogConfig {
            segment_bytes: 3 * one.len() as u64,
            flush_interval_messages: 12,
            retention_ms: -1,
            ..LogConfig::default()
        },
    );
    assert!(log.append_is_quick(&one, NOW), "empty log");
    append(&mut log, 5, NOW, 100);
    assert!(
        log.append_is_quick(&one, NOW),
        "room left, 10 < 12 unflushed"
    );
    append(&mut log, 5, NOW, 100);
    // A third batch fits the segment but reaches flush.messages (15 >= 12).
    assert!(!log.append_is_quick(&one, NOW));
    append(&mut log, 5, NOW, 100);
    // Flushed; the segment is full now, so the next append rolls.
    assert!(!log.append_is_quick(&one, NOW));
    append(&mut log, 5, NOW, 100);
    assert!(log.append_is_quick(&one, NOW), "fresh segment");
    // segment.ms: an old segment rolls.
    assert!(!log.append_is_quick(&one, NOW + 8 * 24 * 3600 * 1000));
    // Garbage and empty input are left for `append` to refuse.
    assert!(!log.append_is_quick(b"not a batch", NOW));
    assert!(!log.append_is_quick(&[], NOW));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A validated batch appended from the header its check parsed writes
    /// exactly what the same bytes appended and parsed here write: the same
    /// segment file, the same answers.
    #[test]
    fn a_validated_batch_writes_what_raw_bytes_write(
        sizes in proptest::collection::vec((1usize..20, 0usize..300), 1..12),
        log_append_time in any::<bool>(),
    ) {
        let (raw_dir, validated_dir) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
        let mut raw = open(raw_dir.path(), small_config());
        let mut validated = open(validated_dir.path(), small_config());
        let ts_type = if log_append_time { TimestampType::LogAppendTime } else { TimestampType::CreateTime };
        for (i, (records, value_len)) in sizes.iter().enumerate() {
            let bytes = batch(*records, 1_000 + i as i64, *value_len);
            let a = raw.append(&bytes, 3, ts_type, NOW + i as i64).expect("raw append");
            let vb = ValidatedBatch::new(bytes.into()).expect("valid");
            let b = validated.append_batch(&vb, 3, ts_type, NOW + i as i64).expect("validated append");
            prop_assert_eq!(a, b);
        }
        // Every segment, byte for byte.
        let segments = |d: &Path| {
            let mut out: Vec<(std::ffi::OsString, Vec<u8>)> = std::fs::read_dir(d)
                .expect("dir")
                .filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                .map(|e| (e.file_name(), std::fs::read(e.path()).expect("segment")))
                .collect();
            out.sort();
            out
        };
        let (a, b) = (segments(raw_dir.path()), segments(validated_dir.path()));
        prop_assert!(!a.is_empty());
        prop_assert_eq!(a, b);
    }
}
