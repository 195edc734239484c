//! Tests of the cleaner: last value per key, tombstones, offsets kept,
//! crash leftovers, and a model check over random keys.

use std::collections::BTreeMap;

use felice_wire::{
    build_batch, crc32c, validate_stored_batch, Batches, Compression, Records, TimestampType,
    CRC_START,
};
use proptest::prelude::*;

use super::*;
use crate::LogConfig;

const NOW: i64 = 1_700_000_000_000;

thread_local! {
    /// Makes `install_cleaned` fail right after it took the first replaced
    /// segments out of the list (this thread only).
    pub(super) static FAIL_INSTALL_AFTER_REMOVE: std::cell::Cell<bool> =
        const { std::cell::Cell::new(false) };
}

fn compact_config() -> LogConfig {
    LogConfig {
        segment_bytes: 600,
        index_interval_bytes: 100,
        retention_ms: 1, // ignored: compact-only logs keep their segments
        cleanup_delete: false,
        cleanup_compact: true,
        min_cleanable_dirty_ratio_permille: 0,
        delete_retention_ms: 1_000,
        ..LogConfig::default()
    }
}

fn put(log: &mut Log, key: &str, value: Option<&str>, ts: i64) -> i64 {
    let b = build_batch(&[(Some(key.as_bytes()), value.map(str::as_bytes), ts)]);
    log.append(&b, 0, TimestampType::CreateTime, NOW)
        .expect("append")
        .first_offset
}

/// Every record of the log as (offset, key, value), read through `read`.
fn records(log: &Log) -> Vec<(i64, String, Option<String>)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while let Some(slice) = log.read(offset, 1 << 20, i64::MAX, true).expect("read") {
        let bytes = slice.read_bytes().expect("bytes");
        let mut next = offset;
        for item in Batches::new(&bytes) {
            let (range, h) = item.expect("whole batches");
            validate_stored_batch(&bytes[range.clone()]).expect("valid on disk");
            let (header, raw) = felice_wire::codec::records_section(&bytes[range], 1 << 24)
                .expect("records section");
            let plain = felice_wire::codec::as_uncompressed(&header, &raw).expect("plain");
            for r in Records::new(&plain).expect("records") {
                let r = r.expect("record");
                let o = h.base_offset + i64::from(r.offset_delta);
                if o >= offset {
                    out.push((
                        o,
                        String::from_utf8_lossy(r.key.unwrap_or_default()).into_owned(),
                        r.value.map(|v| String::from_utf8_lossy(v).into_owned()),
                    ));
                }
            }
            next = h.next_offset();
        }
        if next <= offset {
            break;
        }
        offset = next;
    }
    out
}

/// The last value of each key (None = deleted).
fn latest(recs: &[(i64, String, Option<String>)]) -> BTreeMap<String, Option<String>> {
    recs.iter()
        .map(|(_, k, v)| (k.clone(), v.clone()))
        .collect()
}

#[test]
fn keeps_the_last_value_of_each_key_and_every_offset_in_place() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut log = Log::open(dir.path(), compact_config(), NOW).expect("open");
    for round in 0..20 {
        for k in 0..4 {
            put(&mut log, &format!("k{k}"), Some(&format!("v{round}")), NOW);
        }
    }
    let before = records(&log);
    let segments_before = log.segment_count();
    assert!(
        segments_before > 3,
        "the test needs several closed segments"
    );
    let stats = log.clean(NOW).expect("clean").expect("a clean ran");
    assert!(stats.records_removed > 0 && stats.bytes_after < stats.bytes_before);
    let after = records(&log);
    assert_eq!(
        latest(&after),
        latest(&before),
        "the last value of every key survives"
    );
    // Offsets are those of the surviving records, in order, never renumbered.
    for w in after.windows(2) {
        assert!(w[0].0 < w[1].0);
    }
    for rec in &after {
        assert!(before.contains(rec), "{rec:?} was not in the log before");
    }
    // Closed segments now hold at most one record per key.
    let closed_end = *log.segment_base_offsets().last().expect("active");
    let mut seen = std::collections::HashSet::new();
    for (o, k, _) in after.iter().filter(|(o, _, _)| *o < closed_end) {
        assert!(
            seen.insert(k.clone()),
            "key {k} twice below {closed_end} (offset {o})"
        );
    }
    assert_eq!(log.log_end_offset(), 80);
    // Grouping goes by the segments' sizes before cleaning (as Kafka's): the
    // next clean merges the small cleaned segments.
    for round in 20..40 {
        for k in 0..4 {
            put(&mut log, &format!("k{k}"), Some(&format!("v{round}")), NOW);
        }
    }
    let mid = log.segment_count();
    log.clean(NOW).expect("clean").expect("a second clean ran");
    assert!(
        log.segment_count() < mid / 2,
        "small cleaned segments are merged, empty ones go"
    );
    assert!(
        log.segment_count() <= 4,
        "{:?}",
        log.segments
            .iter()
            .map(|s| (s.base_offset, s.size))
            .collect::<Vec<_>>()
    );
    let after = records(&log);
    assert_eq!(
        after.iter().filter(|(o, _, _)| *o < 80).count(),
        0,
        "the first 80 offsets are all superseded"
    );
    // The cleaned log reopens as it was.
    drop(log);
    let log = Log::open(dir.path(), compact_config(), NOW).expect("reopen");
    assert_eq!(records(&log), after);
    assert!(log.first_dirty_offset() > 0);
}

#[test]
fn nothing_to_do_when_not_compacted_or_not_dirty_enough() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut log = Log::open(
        dir.path(),
        LogConfig {
            cleanup_compact: false,
            ..compact_config()
        },
        NOW,
    )
    .expect("open");
    for i in 0..40 {
        put(&mut log, "k", Some(&i.to_string()), NOW);
    }
    assert!(log.clean_plan(NOW).is_none());
    log.set_config(compact_config()).expect("config");
    assert!(log.clean(NOW).expect("clean").is_some());
    // Everything closed is clean now: no new clean until new closed data.
    assert!(log.clean_plan(NOW).is_none());
}

#[test]
fn tombstones_are_kept_for_delete_retention_then_removed() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut log = Log::open(dir.path(), compact_config(), NOW).expect("open");
    put(&mut log, "gone", Some("x"), NOW);
    put(&mut log, "gone", None, NOW);
    for i in 0..30 {
        put(&mut log, &format!("filler{}", i % 3), Some("y"), NOW);
    }
    log.clean(NOW).expect("clean").expect("ran");
    let recs = records(&log);
    assert!(
        recs.iter().any(|(_, k, v)| k == "gone" && v.is_none()),
        "the tombstone stays a while"
    );
    assert!(!recs.iter().any(|(_, k, v)| k == "gone" && v.is_some()));
    // More data, then a clean after delete.retention.ms: the tombstone goes.
    for i in 0..30 {
        put(&mut log, &format!("filler{}", i % 3), Some("z"), NOW);
    }
    log.clean(NOW + 10_000).expect("clean").expect("ran");
    assert!(!records(&log).iter().any(|(_, k, _)| k == "gone"));
}

#[test]
fn compressed_batches_are_compacted_in_their_codec() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut log = Log::open(dir.path(), compact_config(), NOW).expect("open");
    let plain = build_batch(&[
        (Some(b"a".as_slice()), Some(b"a0".as_slice()), NOW),
        (Some(b"b".as_slice()), Some(b"b0".as_slice()), NOW),
        (Some(b"c".as_slice()), Some(b"c0".as_slice()), NOW),
    ]);
    let lz4 = felice_wire::codec::recompress(&plain, Compression::Lz4, 1 << 20).expect("lz4");
    log.append(&lz4, 0, TimestampType::CreateTime, NOW)
        .expect("append");
    // a and c are overwritten later; b is not.
    for i in 0..20 {
        put(
            &mut log,
            if i % 2 == 0 { "a" } else { "c" },
            Some(&format!("v{i}")),
            NOW,
        );
    }
    log.clean(NOW).expect("clean").expect("ran");
    let first = log
        .read(0, 1 << 20, i64::MAX, true)
        .expect("read")
        .expect("data");
    let bytes = first.read_bytes().expect("bytes");
    let len = felice_wire::BatchHeader::parse(&bytes)
        .expect("header")
        .total_len();
    let header = validate_stored_batch(&bytes[..len]).expect("a valid first batch");
    assert!(
        felice_wire::validate_batch(&bytes[..len]).is_err(),
        "records were removed from it"
    );
    assert_eq!(header.compression(), Ok(Compression::Lz4), "still lz4");
    assert_eq!(
        (
            header.base_offset,
            header.record_count,
            header.last_offset_delta
        ),
        (0, 1, 2)
    );
    let recs = records(&log);
    assert_eq!(
        recs[0],
        (1, "b".to_string(), Some("b0".to_string())),
        "b survives at its offset"
    );
    let latest = latest(&recs);
    assert_eq!(latest.get("a"), Some(&Some("v18".to_string())));
    assert_eq!(latest.get("c"), Some(&Some("v19".to_string())));
}

#[test]
fn batches_that_do_not_decompress_are_kept_whole() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut log = Log::open(dir.path(), compact_config(), NOW).expect("open");
    // A batch flagged gzip cannot be looked into without decompressing: the
    // cleaner copies it as it is (here: a hand-made batch with the flag set).
    let mut b = build_batch(&[(Some(b"c".as_slice()), Some(b"1".as_slice()), NOW)]);
    b[22] |= 1; // attributes low byte: gzip
    let crc = crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    log.append(&b, 0, TimestampType::CreateTime, NOW)
        .expect("append");
    let stored = log
        .read(0, b.len(), i64::MAX, true)
        .expect("read")
        .expect("data");
    let stored = stored.read_bytes().expect("bytes");
    for i in 0..40 {
        put(&mut log, "c", Some(&i.to_string()), NOW);
    }
    log.clean(NOW).expect("clean").expect("ran");
    let first = log
        .read(0, 1 << 20, i64::MAX, true)
        .expect("read")
        .expect("data");
    let bytes = first.read_bytes().expect("bytes");
    assert_eq!(
        &bytes[..b.len()],
        &stored[..],
        "the compressed batch is untouched at offset 0"
    );
}

#[test]
fn an_interrupted_clean_is_finished_or_dropped_on_open() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut log = Log::open(dir.path(), compact_config(), NOW).expect("open");
    for round in 0..20 {
        for k in 0..3 {
            put(&mut log, &format!("k{k}"), Some(&format!("v{round}")), NOW);
        }
    }
    let before = records(&log);
    let plan = log.clean_plan(NOW).expect("plan");
    let cleaned = build_cleaned(&plan, NOW).expect("build");
    assert!(!cleaned.groups.is_empty());
    // Crash 1: only `.cleaned` files exist: open removes them, the log is unchanged.
    let paths: Vec<PathBuf> = cleaned.groups.iter().map(|g| g.path.clone()).collect();
    drop(log);
    let log = Log::open(dir.path(), compact_config(), NOW).expect("reopen");
    assert!(paths.iter().all(|p| !p.exists()));
    assert_eq!(records(&log), before);
    // Crash 2: the first group's file became `.swap`, nothing else happened.
    let plan = log.clean_plan(NOW).expect("plan");
    let cleaned = build_cleaned(&plan, NOW).expect("build");
    let g = &cleaned.groups[0];
    let swap = dir.path().join(file_name(g.base, g.end, SWAP_SUFFIX));
    fs::rename(&g.path, &swap).expect("rename");
    for other in &cleaned.groups[1..] {
        fs::remove_file(&other.path).expect("remove");
    }
    drop(log);
    let log = Log::open(dir.path(), compact_config(), NOW).expect("reopen");
    assert!(!swap.exists());
    let after = records(&log);
    assert_eq!(latest(&after), latest(&before));
    assert!(
        after.len() < before.len(),
        "the swapped group is the cleaned one"
    );
    assert_eq!(log.log_end_offset(), 60);
}

/// An install that fails halfway (replaced segments already out of the list)
/// reopens the log from disk, so no offset goes missing from reads until a
/// restart, and the clean is finished from its `.swap` file.
#[test]
fn a_failed_install_reopens_the_log_from_disk() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut log = Log::open(dir.path(), compact_config(), NOW).expect("open");
    // Keys written once (kept by any clean) first, then keys rewritten often.
    for u in 0..6 {
        put(&mut log, &format!("once{u}"), Some("kept"), NOW);
    }
    for round in 0..20 {
        for k in 0..3 {
            put(&mut log, &format!("k{k}"), Some(&format!("v{round}")), NOW);
        }
    }
    let before = records(&log);
    let plan = log.clean_plan(NOW).expect("plan");
    let cleaned = build_cleaned(&plan, NOW).expect("build");
    assert!(!cleaned.groups.is_empty());
    FAIL_INSTALL_AFTER_REMOVE.with(|f| f.set(true));
    let result = log.install_cleaned(cleaned, NOW);
    FAIL_INSTALL_AFTER_REMOVE.with(|f| f.set(false));
    assert!(result.is_err(), "the injected failure is reported");
    // The live log reads what a restart reads: the first group cleaned from its
    // `.swap`, the rest as before; every key keeps its last value.
    let live = records(&log);
    assert_eq!(latest(&live), latest(&before));
    assert!(
        live.iter().any(|r| r.1 == "once0"),
        "the first segment is read"
    );
    assert_eq!(log.log_end_offset(), 66);
    put(&mut log, "k9", Some("late"), NOW);
    drop(log);
    let mut log = Log::open(dir.path(), compact_config(), NOW).expect("restart");
    let mut restarted = records(&log);
    assert_eq!(restarted.pop().map(|r| r.1), Some("k9".to_string()));
    assert_eq!(live, restarted);
    log.clean(NOW).expect("clean after a failed install");
    assert_eq!(latest(&records(&log)).len(), 10);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn cleaning_never_changes_what_a_key_reads(
        batches in proptest::collection::vec(
            (proptest::collection::vec((0u8..6, proptest::option::of(0u16..1000)), 1..4), 0u8..3),
            1..60,
        ),
        cleans in proptest::collection::vec(0usize..60, 1..4),
    ) {
        let dir = tempfile::tempdir().expect("tmp");
        let config = LogConfig { delete_retention_ms: i64::MAX / 4, ..compact_config() };
        let mut log = Log::open(dir.path(), config, NOW).expect("open");
        let mut model: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut appended = 0i64;
        for (i, (records, codec)) in batches.iter().enumerate() {
            let owned: Vec<(String, Option<String>)> = records
                .iter()
                .map(|(k, v)| (format!("key-{k}"), v.map(|v| v.to_string())))
                .collect();
            let specs: Vec<felice_wire::RecordSpec<'_>> = owned
                .iter()
                .map(|(k, v)| (Some(k.as_bytes()), v.as_deref().map(str::as_bytes), NOW))
                .collect();
            let mut batch = build_batch(&specs);
            let codec = [Compression::None, Compression::Lz4, Compression::Gzip][*codec as usize];
            if codec != Compression::None {
                batch = felice_wire::codec::recompress(&batch, codec, 1 << 20).expect("compress");
            }
            log.append(&batch, 0, TimestampType::CreateTime, NOW).expect("append");
            appended += owned.len() as i64;
            for (k, v) in owned {
                model.insert(k, v);
            }
            if cleans.contains(&i) {
                log.clean(NOW).expect("clean");
            }
        }
        log.clean(NOW).expect("clean");
        let recs = records(&log);
        prop_assert_eq!(latest(&recs), model);
        prop_assert_eq!(log.log_end_offset(), appended);
        // And the cleaned log recovers as it is (no batch cut as corrupt).
        let dir_path = dir.path().to_path_buf();
        drop(log);
        std::fs::remove_file(dir_path.join("recovery-point")).ok();
        let log = Log::open(&dir_path, config_for_reopen(), NOW).expect("reopen");
        prop_assert_eq!(records(&log), recs);
    }
}

fn config_for_reopen() -> LogConfig {
    LogConfig {
        delete_retention_ms: i64::MAX / 4,
        ..compact_config()
    }
}
