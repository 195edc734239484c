//! Tests of the sequence checks (Kafka's rules), snapshots and bounds.

use super::*;
use proptest::prelude::*;

fn header(pid: i64, epoch: i16, seq: i32, records: i32, base_offset: i64) -> BatchHeader {
    BatchHeader {
        base_offset,
        batch_length: 49,
        partition_leader_epoch: 0,
        magic: 2,
        crc: 0,
        attributes: 0,
        last_offset_delta: records - 1,
        base_timestamp: 1_000,
        max_timestamp: 1_000 + base_offset,
        producer_id: pid,
        producer_epoch: epoch,
        base_sequence: seq,
        record_count: records,
    }
}

fn state() -> ProducerState {
    ProducerState::new(100, ProducerBudget::new(usize::MAX))
}

/// Checks `h` as a client append and applies it when accepted, as the log does.
fn append(s: &mut ProducerState, h: &BatchHeader) -> Result<Verdict, ProducerError> {
    let v = s.check(h)?;
    if v == Verdict::Append {
        let e = ProducerState::updated_entry(s.get(h.producer_id), h, h.max_timestamp);
        s.put(h.producer_id, e);
    }
    Ok(v)
}

#[test]
fn each_of_the_last_five_batches_is_a_duplicate_and_the_sixth_back_is_not() {
    let mut s = state();
    let mut offset = 0;
    let mut sent = Vec::new();
    for i in 0..7 {
        let h = header(7, 0, i * 3, 3, offset);
        assert_eq!(append(&mut s, &h), Ok(Verdict::Append));
        sent.push(h);
        offset += 3;
    }
    for h in &sent[2..] {
        match s.check(h) {
            Ok(Verdict::Duplicate(b)) => {
                assert_eq!(b.first_offset(), h.base_offset);
                assert_eq!(b.last_offset, h.last_offset());
                assert_eq!(b.timestamp, h.max_timestamp);
            }
            other => panic!("batch at {} not a duplicate: {other:?}", h.base_offset),
        }
    }
    // Older than the 5 cached batches: out of order, as Kafka.
    assert!(matches!(
        s.check(&sent[1]),
        Err(ProducerError::OutOfOrderSequence { last_seq: 20, .. })
    ));
    // A retry with another epoch is not the same batch.
    let mut other_epoch = sent[6];
    other_epoch.producer_epoch = 1;
    assert!(matches!(
        s.check(&other_epoch),
        Err(ProducerError::NewEpochNotAtZero { .. })
    ));
}

#[test]
fn a_gap_or_a_repeat_with_other_bounds_is_out_of_order() {
    let mut s = state();
    append(&mut s, &header(1, 0, 0, 5, 0)).expect("first");
    for bad in [6, 4, 2, 100, -1] {
        assert!(
            matches!(
                s.check(&header(1, 0, bad, 1, 5)),
                Err(ProducerError::OutOfOrderSequence {
                    first_seq,
                    last_seq: 4,
                    ..
                }) if first_seq == bad
            ),
            "seq {bad}"
        );
    }
    // Overlapping a written batch with different bounds is no duplicate.
    assert!(s.check(&header(1, 0, 0, 3, 5)).is_err());
    assert_eq!(append(&mut s, &header(1, 0, 5, 1, 5)), Ok(Verdict::Append));
}

#[test]
fn epochs_bump_only_at_sequence_zero_and_never_go_back() {
    let mut s = state();
    append(&mut s, &header(1, 3, 0, 2, 0)).expect("first");
    assert!(matches!(
        s.check(&header(1, 2, 2, 1, 2)),
        Err(ProducerError::InvalidProducerEpoch {
            epoch: 2,
            current_epoch: 3,
            ..
        })
    ));
    assert!(matches!(
        s.check(&header(1, 4, 2, 1, 2)),
        Err(ProducerError::NewEpochNotAtZero { .. })
    ));
    assert_eq!(append(&mut s, &header(1, 4, 0, 1, 2)), Ok(Verdict::Append));
    let e = s.get(1).expect("entry");
    assert_eq!((e.epoch, e.batches().len(), e.last_seq()), (4, 1, 0));
    // The old epoch's batches are forgotten: its retry is fenced.
    assert!(matches!(
        s.check(&header(1, 3, 0, 2, 0)),
        Err(ProducerError::InvalidProducerEpoch { .. })
    ));
}

#[test]
fn sequences_wrap_from_i32_max_to_zero() {
    assert_eq!(last_sequence(i32::MAX - 1, 3), 1);
    assert_eq!(last_sequence(i32::MAX, 0), i32::MAX);
    assert_eq!(last_sequence(i32::MAX, 1), 0);
    assert_eq!(last_sequence(5, 2), 7);
    let mut s = state();
    append(&mut s, &header(9, 0, i32::MAX - 1, 2, 0)).expect("up to MAX");
    assert_eq!(s.get(9).map(ProducerEntry::last_seq), Some(i32::MAX));
    assert_eq!(append(&mut s, &header(9, 0, 0, 3, 2)), Ok(Verdict::Append));
    // A batch across the wrap: last sequence computed modulo.
    let mut s = state();
    let across = header(9, 0, i32::MAX - 1, 4, 0);
    append(&mut s, &across).expect("across");
    assert_eq!(s.get(9).map(ProducerEntry::last_seq), Some(1));
    assert!(matches!(s.check(&across), Ok(Verdict::Duplicate(_))));
    assert_eq!(append(&mut s, &header(9, 0, 2, 1, 4)), Ok(Verdict::Append));
}

#[test]
fn an_unknown_producer_may_start_at_any_sequence() {
    let mut s = state();
    assert_eq!(append(&mut s, &header(5, 2, 42, 3, 0)), Ok(Verdict::Append));
    assert_eq!(append(&mut s, &header(5, 2, 45, 1, 3)), Ok(Verdict::Append));
    assert_eq!(s.get(5).map(ProducerEntry::last_seq), Some(45));
}

#[test]
fn interleaved_producers_keep_separate_sequences() {
    let mut s = state();
    let mut offset = 0;
    for round in 0..4 {
        for pid in [10, 20, 30] {
            let h = header(pid, 0, round * 2, 2, offset);
            assert_eq!(
                append(&mut s, &h),
                Ok(Verdict::Append),
                "pid {pid} round {round}"
            );
            offset += 2;
        }
    }
    assert!(s.check(&header(20, 0, 7, 1, offset)).is_err());
    assert_eq!(s.check(&header(20, 0, 8, 1, offset)), Ok(Verdict::Append));
    assert_eq!(s.len(), 3);
    let active = s.active();
    assert_eq!(
        active
            .iter()
            .map(|p| (p.producer_id, p.last_sequence))
            .collect::<Vec<_>>(),
        vec![(10, 7), (20, 7), (30, 7)]
    );
}

#[test]
fn batches_without_a_producer_id_are_not_tracked() {
    let mut s = state();
    assert_eq!(s.check(&header(-1, -1, -1, 4, 0)), Ok(Verdict::Append));
    s.replay(&header(-1, -1, -1, 4, 0));
    assert!(s.is_empty());
}

#[test]
fn snapshot_round_trips_and_damage_is_refused() {
    let mut s = state();
    let mut offset = 0;
    for i in 0..8 {
        for pid in [3, 1_000_000_007] {
            s.replay(&header(pid, 2, i * 4, 4, offset));
            offset += 4;
        }
    }
    let bytes = s.encode_snapshot();
    let mut loaded = state();
    loaded.load_snapshot(&bytes).expect("valid");
    assert_eq!(loaded.producers, s.producers);
    assert!(!loaded.is_dirty());
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x40;
        assert!(decode_snapshot(&bad).is_none(), "flip at {i} accepted");
    }
    for cut in 0..bytes.len() {
        assert!(
            decode_snapshot(&bytes[..cut]).is_none(),
            "cut at {cut} accepted"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(decode_snapshot(&longer).is_none());
    // A failed load leaves the state as it was.
    let before = loaded.producers.clone();
    assert!(loaded.load_snapshot(&bytes[..10]).is_none());
    assert_eq!(loaded.producers, before);
}

#[test]
fn bounds_evict_the_least_recently_written_producer() {
    let budget = ProducerBudget::new(5);
    let mut a = ProducerState::new(3, budget.clone());
    for pid in 0..4 {
        a.replay(&header(pid, 0, 0, 1, pid * 10));
    }
    assert_eq!(a.len(), 3, "per-partition bound");
    assert!(a.get(0).is_none(), "the oldest went first");
    let mut b = ProducerState::new(100, budget.clone());
    for pid in 100..104 {
        b.replay(&header(pid, 0, 0, 1, pid));
    }
    assert_eq!((budget.used(), b.len()), (5, 2), "the broker-wide bound");
    let mut c = ProducerState::new(100, budget.clone());
    c.replay(&header(200, 0, 0, 1, 0));
    assert_eq!(
        (budget.used(), c.len()),
        (6, 1),
        "a partition holding none may always take one"
    );
    drop(b);
    assert_eq!(budget.used(), 4);
    a.clear();
    assert_eq!(budget.used(), 1);
}

#[test]
fn idle_producers_expire_by_their_last_timestamp() {
    let mut s = state();
    s.replay(&header(1, 0, 0, 1, 0)); // max_timestamp 1_000
    s.replay(&header(2, 0, 0, 1, 5_000)); // max_timestamp 6_000
    assert_eq!(s.remove_expired(5_999, 5_000), 0);
    assert_eq!(s.remove_expired(6_000, 5_000), 1);
    assert!(s.get(1).is_none() && s.get(2).is_some());
    assert_eq!(s.remove_expired(11_000, 5_000), 1);
    assert!(s.is_empty());
}

proptest! {
    /// Replaying a log in one go equals loading a snapshot of any prefix and
    /// replaying the rest.
    #[test]
    fn snapshot_plus_tail_equals_whole_replay(
        batches in proptest::collection::vec((0i64..6, 0i16..3, 0i32..50, 1i32..5), 1..60),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut offset = 0;
        let headers: Vec<BatchHeader> = batches
            .iter()
            .map(|&(pid, epoch, seq, n)| {
                let h = header(pid, epoch, seq, n, offset);
                offset += i64::from(n);
                h
            })
            .collect();
        let mut whole = state();
        for h in &headers {
            whole.replay(h);
        }
        let at = cut.index(headers.len() + 1);
        let mut prefix = state();
        for h in &headers[..at] {
            prefix.replay(h);
        }
        let mut resumed = state();
        resumed.load_snapshot(&prefix.encode_snapshot()).expect("valid");
        for h in &headers[at..] {
            resumed.replay(h);
        }
        prop_assert_eq!(&resumed.producers, &whole.producers);
    }
}
