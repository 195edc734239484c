//! Tests of `Log` with idempotent producers: duplicates and refusals at
//! append, producer state across close, crash, corrupt snapshots, truncation,
//! retention and compaction.

use felice_wire::{build_batch, set_producer, Batches};
use proptest::prelude::*;

use super::*;
use crate::producer_state::{ProducerEntry, ProducerState};
use crate::ProducerError;

const NOW: i64 = 1_700_000_000_000;

fn idem_batch(records: usize, pid: i64, epoch: i16, seq: i32, key: Option<&[u8]>) -> Vec<u8> {
    let value = [b'v'; 20];
    let recs: Vec<felice_wire::RecordSpec<'_>> = (0..records)
        .map(|i| (key, Some(&value[..]), NOW + i as i64))
        .collect();
    let mut b = build_batch(&recs);
    set_producer(&mut b, pid, epoch, seq).expect("producer fields");
    b
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1_000,
        index_interval_bytes: 100,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

fn open(dir: &Path) -> Log {
    Log::open(dir, config(), NOW).expect("open")
}

fn append(log: &mut Log, b: &[u8]) -> Result<AppendInfo, LogError> {
    log.append(b, 0, TimestampType::CreateTime, NOW)
}

/// The producer state a replay of every batch now in the log gives.
fn replayed(log: &Log) -> Vec<(i64, ProducerEntry)> {
    let mut s = ProducerState::new(usize::MAX, ProducerBudget::new(usize::MAX));
    let mut offset = log.log_start_offset();
    while let Some(slice) = log.read(offset, 1 << 30, i64::MAX, true).expect("read") {
        let bytes = slice.read_bytes().expect("bytes");
        for item in Batches::new(&bytes) {
            let (_, h) = item.expect("batch");
            if h.base_offset >= offset {
                s.replay(&h);
            }
            offset = h.next_offset();
        }
    }
    s.entries()
}

fn snapshots(dir: &Path) -> Vec<i64> {
    producer_state::list_snapshots(dir).expect("list")
}

#[test]
fn a_retried_batch_is_answered_with_its_offsets_and_not_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(&dir.path().join("t-0"));
    let first = idem_batch(3, 7, 0, 0, None);
    let a = append(&mut log, &first).expect("first");
    assert_eq!((a.first_offset, a.last_offset, a.duplicate), (0, 2, false));
    append(&mut log, &idem_batch(2, 7, 0, 3, None)).expect("second");
    let size = log.size_bytes();
    let again = append(&mut log, &first).expect("retry");
    assert_eq!(
        (again.first_offset, again.last_offset, again.duplicate),
        (0, 2, true)
    );
    assert_eq!(
        again.log_append_time_ms,
        NOW + 2,
        "Kafka: the batch's timestamp"
    );
    assert_eq!((log.log_end_offset(), log.size_bytes()), (5, size));
}

#[test]
fn a_refused_batch_writes_nothing_and_one_producer_does_not_block_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(&dir.path().join("t-0"));
    append(&mut log, &idem_batch(2, 1, 0, 0, None)).expect("first");
    let gap = append(&mut log, &idem_batch(1, 1, 0, 5, None));
    assert!(matches!(
        gap,
        Err(LogError::Producer(ProducerError::OutOfOrderSequence { .. }))
    ));
    let old_epoch = append(&mut log, &idem_batch(1, 1, -0, 2, None));
    assert!(old_epoch.is_ok(), "in sequence");
    assert_eq!(log.log_end_offset(), 3);
    append(&mut log, &idem_batch(1, 1, 1, 0, None)).expect("bump");
    assert!(matches!(
        append(&mut log, &idem_batch(1, 1, 0, 3, None)),
        Err(LogError::Producer(
            ProducerError::InvalidProducerEpoch { .. }
        ))
    ));
    append(&mut log, &idem_batch(4, 2, 0, 9, None)).expect("another, unknown: any sequence");
    assert_eq!(log.log_end_offset(), 8);
    let active: Vec<(i64, i16, i32)> = log
        .active_producers()
        .iter()
        .map(|p| (p.producer_id, p.epoch, p.last_sequence))
        .collect();
    assert_eq!(active, vec![(1, 1, 0), (2, 0, 12)]);
}

/// Appends `rounds` batches for each of `pids` (in sequence) and returns the log.
fn fill(dir: &Path, pids: &[i64], rounds: i32) -> Log {
    let mut log = open(dir);
    for round in 0..rounds {
        for &pid in pids {
            append(&mut log, &idem_batch(2, pid, 0, round * 2, None)).expect("append");
        }
    }
    log
}

#[test]
fn state_survives_a_clean_close_from_its_snapshot_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-0");
    let log = fill(&path, &[1, 2, 3], 20);
    assert!(log.segment_count() > 3, "rolled");
    let before = log.producer_state().entries();
    let leo = log.log_end_offset();
    log.close().expect("close");
    assert_eq!(
        snapshots(&path).last(),
        Some(&leo),
        "a snapshot at the log end"
    );
    let mut log = open(&path);
    assert_eq!(log.producer_state().entries(), before);
    assert!(!log.producer_state().is_dirty(), "loaded, nothing replayed");
    // A retry of the last batch is still recognised after the restart.
    let retry = append(&mut log, &idem_batch(2, 3, 0, 38, None)).expect("retry");
    assert!(retry.duplicate);
}

#[test]
fn state_survives_a_crash_and_a_corrupt_or_missing_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-0");
    let log = fill(&path, &[1, 2], 25);
    let before = log.producer_state().entries();
    drop(log); // a crash: no close, only the roll snapshots
    assert!(!snapshots(&path).is_empty());
    let log = open(&path);
    assert_eq!(
        log.producer_state().entries(),
        before,
        "roll snapshot + tail"
    );
    drop(log);
    let newest = *snapshots(&path).last().expect("one");
    std::fs::write(producer_state::snapshot_path(&path, newest), b"garbage").expect("corrupt");
    let log = open(&path);
    assert_eq!(
        log.producer_state().entries(),
        before,
        "corrupt snapshot ignored"
    );
    assert!(!snapshots(&path).contains(&newest), "and removed");
    drop(log);
    for s in snapshots(&path) {
        producer_state::remove_snapshot(&path, s).expect("rm");
    }
    let log = open(&path);
    assert_eq!(log.producer_state().entries(), before, "whole-log replay");
}

#[test]
fn retention_keeps_producers_and_prunes_snapshots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-0");
    let mut log = fill(&path, &[1], 30);
    append(&mut log, &idem_batch(2, 9, 0, 0, None)).expect("late producer");
    let before = log.producer_state().entries();
    let cut = log.log_end_offset() - 1;
    log.delete_records_before(cut).expect("delete records");
    assert_eq!(
        log.producer_state().entries(),
        before,
        "state kept, as Kafka 2.4+"
    );
    let first_base = log.segment_base_offsets()[0];
    let snaps = snapshots(&path);
    assert!(
        snaps.iter().filter(|&&s| s < first_base).count() <= 1,
        "snapshots below the log are pruned: {snaps:?}, first segment {first_base}"
    );
    // The next sequence of producer 1 is still expected.
    assert!(append(&mut log, &idem_batch(1, 1, 0, 99, None)).is_err());
    append(&mut log, &idem_batch(1, 1, 0, 60, None)).expect("in sequence");
}

#[test]
fn compaction_keeps_each_producers_last_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t-0");
    let cfg = LogConfig {
        cleanup_compact: true,
        cleanup_delete: false,
        min_cleanable_dirty_ratio_permille: 0,
        ..config()
    };
    let mut log = Log::open(&path, cfg.clone(), NOW).expect("open");
    // Producer 5 writes key "a" once; producer 6 then overwrites "a" many
    // times. Compaction would drop producer 5's only batch.
    append(&mut log, &idem_batch(1, 5, 0, 0, Some(b"a"))).expect("p5");
    for seq in 0..40 {
        append(&mut log, &idem_batch(1, 6, 0, seq, Some(b"a"))).expect("p6");
    }
    log.clean(NOW).expect("clean").expect("cleaned something");
    let before = log.producer_state().entries();
    drop(log);
    for s in snapshots(&path) {
        producer_state::remove_snapshot(&path, s).expect("rm");
    }
    let mut log = Log::open(&path, cfg, NOW).expect("reopen");
    assert_eq!(
        log.producer_state().entries(),
        before,
        "rebuilt from the compacted log alone"
    );
    let retry = append(&mut log, &idem_batch(1, 5, 0, 0, Some(b"a"))).expect("retry");
    assert!(retry.duplicate, "producer 5's batch survived compaction");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random idempotent traffic (in-sequence appends, retries, new epochs),
    /// then a truncation and a reopen with snapshots, without them, or after
    /// a crash: the producer state always equals a replay of the log as it is.
    #[test]
    fn state_is_always_the_replay_of_the_log(
        ops in proptest::collection::vec((0i64..4, 0u8..10, 1usize..4), 1..80),
        cut in any::<prop::sample::Index>(),
        reopen in 0u8..3,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t-0");
        let mut log = open(&path);
        let mut next_seq = [0i32; 4];
        let mut epoch = [0i16; 4];
        let mut sent: Vec<Vec<u8>> = Vec::new();
        for (pid, kind, n) in ops {
            let p = pid as usize;
            let b = match kind {
                0 if !sent.is_empty() => sent[sent.len() - 1].clone(), // a retry
                1 => {
                    epoch[p] += 1;
                    next_seq[p] = 0;
                    idem_batch(n, pid, epoch[p], 0, None)
                }
                _ => idem_batch(n, pid, epoch[p], next_seq[p], None),
            };
            let r = append(&mut log, &b).expect("valid traffic is accepted");
            if !r.duplicate {
                next_seq[p] += n as i32;
                sent.push(b);
            }
        }
        prop_assert_eq!(log.producer_state().entries(), replayed(&log));
        let at = cut.index(log.log_end_offset() as usize + 1) as i64;
        log.truncate_to(at).expect("truncate");
        prop_assert_eq!(log.producer_state().entries(), replayed(&log));
        let expected = replayed(&log);
        match reopen {
            0 => log.close().expect("close"),
            1 => drop(log),
            _ => {
                drop(log);
                for s in snapshots(&path) {
                    producer_state::remove_snapshot(&path, s).expect("rm");
                }
            }
        }
        let log = open(&path);
        prop_assert_eq!(log.producer_state().entries(), expected);
    }
}
