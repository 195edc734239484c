//! Tests of [`Log::append_as_follower`]: a follower that appends the
//! leader's batches as they are ends with the same segments and the same
//! producer state; gaps and corrupt batches are refused and change nothing.

use felice_wire::{build_batch, set_producer, Batches};

use super::*;

const NOW: i64 = 1_700_000_000_000;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2_000,
        index_interval_bytes: 150,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

/// Batch `i` of the test's stream: every third one from an idempotent
/// producer, in sequence; the rest plain.
fn batch(i: usize, seq: &mut i32) -> Vec<u8> {
    let value = vec![b'a' + (i % 26) as u8; 10 + (i * 7) % 90];
    let records = 1 + i % 4;
    let recs: Vec<felice_wire::RecordSpec<'_>> = (0..records)
        .map(|r| (None, Some(&value[..]), NOW + (i * 10 + r) as i64))
        .collect();
    let mut b = build_batch(&recs);
    if i.is_multiple_of(3) {
        set_producer(&mut b, 4_000, 0, *seq).expect("producer fields");
        *seq += records as i32;
    }
    b
}

/// The leader's log, read back batch by batch, each as it lies on disk.
fn stored_batches(log: &Log) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while let Some(slice) = log
        .read(offset, 1 << 20, log.log_end_offset(), true)
        .expect("read")
    {
        let bytes = slice.read_bytes().expect("bytes");
        for item in Batches::new(&bytes) {
            let (range, h) = item.expect("batch");
            if h.base_offset >= offset {
                out.push(bytes[range].to_vec());
            }
            offset = h.next_offset();
        }
    }
    out
}

/// Every file of a partition directory that holds log data, by name.
fn segment_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().to_string();
            (name, fs::read(&p).expect("read"))
        })
        .collect();
    files.sort();
    files
}

fn leader_with(batches: usize, dir: &Path) -> Log {
    let mut log = Log::open(dir, config(), NOW).expect("open");
    let mut seq = 0;
    for i in 0..batches {
        let epoch = 3 + (i / 10) as i32; // leader changes every 10 batches
        log.append(&batch(i, &mut seq), epoch, TimestampType::CreateTime, NOW)
            .expect("leader append");
    }
    log
}

#[test]
fn a_follower_copy_is_byte_identical_with_the_same_producer_state() {
    let (ld, fd) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let leader = leader_with(60, ld.path());
    assert!(leader.segment_count() > 2, "the test must cross rolls");
    let mut follower = Log::open(fd.path(), config(), NOW).expect("open");
    for b in stored_batches(&leader) {
        let info = follower
            .append_as_follower(&b, NOW)
            .expect("follower append");
        assert_eq!(info.last_offset + 1, follower.log_end_offset());
    }
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    assert_eq!(
        follower.segment_base_offsets(),
        leader.segment_base_offsets()
    );
    assert_eq!(segment_files(fd.path()), segment_files(ld.path()));
    assert_eq!(
        follower.producer_state().entries(),
        leader.producer_state().entries()
    );
    assert_eq!(follower.epochs(), leader.epochs());
    assert_eq!(leader.epochs().len(), 6, "epochs 3 to 8, ten batches each");
    // Reads agree too (the indexes point at the same batches).
    for offset in [
        0,
        17,
        leader.log_end_offset() / 2,
        leader.log_end_offset() - 1,
    ] {
        let a = leader.read(offset, 500, i64::MAX, true).expect("read");
        let b = follower.read(offset, 500, i64::MAX, true).expect("read");
        let bytes = |s: Option<ReadSlice>| s.map(|s| s.read_bytes().expect("bytes"));
        assert_eq!(bytes(a), bytes(b), "read at {offset}");
    }
}

#[test]
fn several_batches_in_one_follower_append_keep_their_offsets_and_epochs() {
    let (ld, fd) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let leader = leader_with(40, ld.path());
    let mut follower = Log::open(fd.path(), config(), NOW).expect("open");
    // Fetch-sized chunks: several batches per append, as a fetch brings them.
    for chunk in stored_batches(&leader).chunks(5) {
        follower
            .append_as_follower(&chunk.concat(), NOW)
            .expect("follower append");
    }
    assert_eq!(stored_batches(&follower), stored_batches(&leader));
}

#[test]
fn a_promoted_follower_recognises_a_producer_retry() {
    let (ld, fd) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let leader = leader_with(12, ld.path());
    let mut follower = Log::open(fd.path(), config(), NOW).expect("open");
    for b in stored_batches(&leader) {
        follower
            .append_as_follower(&b, NOW)
            .expect("follower append");
    }
    // The producer's last batch (i = 9) retried to the new leader.
    let mut seq = 0;
    let mut last = Vec::new();
    for i in 0..10 {
        let b = batch(i, &mut seq);
        if i == 9 {
            last = b;
        }
    }
    let leo = follower.log_end_offset();
    let info = follower
        .append(&last, 9, TimestampType::CreateTime, NOW)
        .expect("retry");
    assert!(
        info.duplicate,
        "a retry of a replicated batch is a duplicate"
    );
    assert_eq!(follower.log_end_offset(), leo);
}

#[test]
fn a_gap_or_a_corrupt_batch_is_refused_and_changes_nothing() {
    let (ld, fd) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let leader = leader_with(6, ld.path());
    let batches = stored_batches(&leader);
    let mut follower = Log::open(fd.path(), config(), NOW).expect("open");
    follower
        .append_as_follower(&batches[0], NOW)
        .expect("first");
    let before = segment_files(fd.path());
    let leo = follower.log_end_offset();
    // Batch 2 skips batch 1's offsets.
    match follower.append_as_follower(&batches[2], NOW) {
        Err(LogError::UnexpectedAppendOffset { expected, got }) => {
            assert_eq!(expected, leo);
            assert!(got > leo);
        }
        other => panic!("expected UnexpectedAppendOffset, got {other:?}"),
    }
    // Batches 1 and 3 together: contiguous at the start, a gap inside.
    let joined = [batches[1].clone(), batches[3].clone()].concat();
    assert!(matches!(
        follower.append_as_follower(&joined, NOW),
        Err(LogError::UnexpectedAppendOffset { .. })
    ));
    // A flipped byte in the records: the CRC refuses it.
    let mut corrupt = batches[1].clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert!(matches!(
        follower.append_as_follower(&corrupt, NOW),
        Err(LogError::CorruptBatch { .. })
    ));
    assert_eq!(follower.log_end_offset(), leo);
    assert_eq!(segment_files(fd.path()), before);
    follower
        .append_as_follower(&batches[1], NOW)
        .expect("the right batch still goes in");
}
