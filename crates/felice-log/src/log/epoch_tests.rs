//! Tests of the leader-epoch cache as `Log` keeps it: assigned on append,
//! answered for OffsetForLeaderEpoch, cut with the log at either end, and
//! brought back up to the batch headers when the checkpoint is missing or
//! stale.

use felice_wire::build_batch;

use super::*;
use crate::epoch_cache::{EpochEntry, EPOCH_CHECKPOINT_FILE};

const NOW: i64 = 1_700_000_000_000;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 300,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

fn entries(pairs: &[(i32, i64)]) -> Vec<EpochEntry> {
    pairs
        .iter()
        .map(|(epoch, start_offset)| EpochEntry {
            epoch: *epoch,
            start_offset: *start_offset,
        })
        .collect()
}

/// Offsets 0-1 in epoch 0, 2-3 in epoch 3, 4-5 in epoch 5 (one record per
/// batch, small segments so several roll).
fn log_with_epochs(dir: &Path) -> Log {
    let mut log = Log::open(dir, config(), NOW).expect("open");
    for epoch in [0, 0, 3, 3, 5, 5] {
        let b = build_batch(&[(None, Some(&[b'x'; 60][..]), NOW)]);
        log.append(&b, epoch, TimestampType::CreateTime, NOW)
            .expect("append");
    }
    log
}

#[test]
fn appends_record_where_each_epoch_starts() {
    let dir = tempfile::tempdir().expect("dir");
    let log = log_with_epochs(dir.path());
    assert!(log.segment_count() > 1);
    assert_eq!(log.epochs(), entries(&[(0, 0), (3, 2), (5, 4)]));
    // Kafka's endOffsetFor answers.
    assert_eq!(log.end_offset_for_epoch(0), (0, 2));
    assert_eq!(log.end_offset_for_epoch(3), (3, 4));
    assert_eq!(log.end_offset_for_epoch(4), (3, 4), "an epoch with no data");
    assert_eq!(log.end_offset_for_epoch(5), (5, 6), "the latest: the end");
    assert_eq!(log.end_offset_for_epoch(6), (-1, -1), "newer than any");
    assert_eq!(log.end_offset_for_epoch(-1), (-1, -1));
    assert!(!log.epoch_is_new(5) && log.epoch_is_new(6));
    let text = fs::read_to_string(dir.path().join(EPOCH_CHECKPOINT_FILE)).expect("file");
    assert_eq!(text, "0\n3\n0 0\n3 2\n5 4\n");
}

#[test]
fn a_missing_or_stale_checkpoint_is_rebuilt_from_the_batches() {
    let dir = tempfile::tempdir().expect("dir");
    let log = log_with_epochs(dir.path());
    let want = log.epochs().to_vec();
    log.close().expect("close");
    let path = dir.path().join(EPOCH_CHECKPOINT_FILE);
    // Missing (a folder from before the file existed).
    fs::remove_file(&path).expect("remove");
    let log = Log::open(dir.path(), config(), NOW).expect("open");
    assert_eq!(log.epochs(), want);
    log.close().expect("close");
    // Stale: a crash after the append, before the checkpoint was saved.
    fs::write(&path, "0\n1\n0 0\n").expect("write");
    let log = Log::open(dir.path(), config(), NOW).expect("open");
    assert_eq!(log.epochs(), want);
    log.close().expect("close");
    // Torn.
    fs::write(&path, "0\n3\n0 0\n3").expect("write");
    let log = Log::open(dir.path(), config(), NOW).expect("open");
    assert_eq!(log.epochs(), want);
    assert_eq!(
        fs::read_to_string(&path).expect("file"),
        "0\n3\n0 0\n3 2\n5 4\n"
    );
}

#[test]
fn truncation_cuts_the_epochs_at_both_ends() {
    let dir = tempfile::tempdir().expect("dir");
    let mut log = log_with_epochs(dir.path());
    log.truncate_to(3).expect("truncate");
    assert_eq!(log.epochs(), entries(&[(0, 0), (3, 2)]));
    assert_eq!(log.end_offset_for_epoch(3), (3, 3));
    log.delete_records_before(1).expect("delete records");
    assert_eq!(log.epochs(), entries(&[(0, 1), (3, 2)]));
    // Reopened, the file agrees.
    log.close().expect("close");
    let log = Log::open(dir.path(), config(), NOW).expect("open");
    assert_eq!(log.epochs(), entries(&[(0, 1), (3, 2)]));
}

#[test]
fn a_log_restarted_below_its_start_forgets_every_epoch() {
    let dir = tempfile::tempdir().expect("dir");
    let mut log = log_with_epochs(dir.path());
    log.delete_records_before(4).expect("delete records");
    log.truncate_to(2).expect("truncate below the start");
    assert_eq!(log.log_end_offset(), 2);
    assert!(log.epochs().is_empty());
    let b = build_batch(&[(None, Some(&b"y"[..]), NOW)]);
    log.append(&b, 7, TimestampType::CreateTime, NOW)
        .expect("append");
    assert_eq!(log.epochs(), entries(&[(7, 2)]));
}
