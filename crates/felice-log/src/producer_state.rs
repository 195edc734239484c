//! Producer state of one partition: Kafka's `ProducerStateManager`, for
//! idempotent producers.
//!
//! For each producer id the partition has seen, its epoch and the metadata of
//! its last [`BATCHES_RETAINED`] batches (first and last sequence, last offset,
//! offset delta, max timestamp). An append is checked against it (Kafka's
//! rules, [`ProducerState::check`]): a batch equal to one of the cached ones
//! (same epoch, same first and last sequence) is a retry, answered with the
//! original offsets and not written again; an older epoch is refused with
//! INVALID_PRODUCER_EPOCH; a sequence that does not follow the last one is
//! refused with OUT_OF_ORDER_SEQUENCE_NUMBER. A producer the partition does not
//! know may start at any sequence, and a new epoch must start at 0 (Kafka 4.x).
//! Sequences wrap from `i32::MAX` to 0.
//!
//! The state is a pure function of the log: every data batch carries its
//! producer id, epoch and base sequence, so replaying the batch headers in
//! offset order ([`ProducerState::replay`]) rebuilds it, on a restart or on a
//! replica that copied the log. Snapshots (`<offset>.snapshot` files, written
//! by the log at segment roll and clean close) save the replay of everything
//! below their offset; recovery loads the newest valid one and replays only
//! the log after it.
//!
//! Bounds: at most `max_producers` ids per partition and, all partitions
//! together, the [`ProducerBudget`]'s maximum (plus at most one per partition:
//! a partition that holds none may always take one). A new id past either
//! bound evicts the partition's producer whose last batch is oldest (lowest
//! last offset): that producer loses duplicate detection, nothing else (its
//! next batch is accepted as from an unknown producer). Idle producers expire
//! after `producer.id.expiration.ms`, measured, as Kafka does, from their last
//! batch's max timestamp. Memory: ~300 bytes per producer id and partition (a
//! [`ProducerEntry`] of 168 bytes, its 8-byte key, the hash table's control
//! byte and slack: 293 bytes measured with `felice bench --producer-ids`).
//!
//! Concurrency: none; the owning [`crate::Log`] is behind the partition lock.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use felice_wire::{crc32c, BatchHeader};
use thiserror::Error;

use crate::segment::io_err;
use crate::LogError;

/// Kafka's `ProducerStateEntry.NUM_BATCHES_TO_RETAIN`: the client keeps at
/// most 5 requests in flight per partition, so a retry is one of the last 5.
pub const BATCHES_RETAINED: usize = 5;

/// Producer id of a batch written without one.
pub const NO_PRODUCER_ID: i64 = -1;
/// Epoch of a producer whose entry has no epoch yet.
pub const NO_PRODUCER_EPOCH: i16 = -1;

/// The last sequence of a batch of `count_minus_one + 1` records starting at
/// `base`, wrapping past `i32::MAX` to 0 (Kafka's `incrementSequence`).
pub fn last_sequence(base: i32, last_offset_delta: i32) -> i32 {
    if base > i32::MAX - last_offset_delta {
        last_offset_delta - (i32::MAX - base) - 1
    } else {
        base + last_offset_delta
    }
}

/// Whether `next` follows `last` (Kafka's `inSequence`).
fn in_sequence(last: i32, next: i32) -> bool {
    next == last.wrapping_add(1) || (next == 0 && last == i32::MAX)
}

/// One cached batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub last_offset: i64,
    /// `lastOffsetDelta` of the batch: its first offset is `last_offset - offset_delta`.
    pub offset_delta: i32,
    /// The batch's max timestamp as written (the append time for LogAppendTime).
    pub timestamp: i64,
}

impl BatchMetadata {
    pub fn first_offset(&self) -> i64 {
        self.last_offset - i64::from(self.offset_delta)
    }
}

/// One producer's state in one partition: its epoch and its last batches,
/// oldest first. (Equal when epoch and cached batches are: slots past `len`
/// are leftovers.)
#[derive(Debug, Clone, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    len: u8,
    batches: [BatchMetadata; BATCHES_RETAINED],
}

impl PartialEq for ProducerEntry {
    fn eq(&self, other: &ProducerEntry) -> bool {
        self.epoch == other.epoch && self.batches() == other.batches()
    }
}

impl ProducerEntry {
    fn new(epoch: i16) -> ProducerEntry {
        ProducerEntry {
            epoch,
            len: 0,
            batches: [BatchMetadata::default(); BATCHES_RETAINED],
        }
    }

    /// The cached batches, oldest first.
    pub fn batches(&self) -> &[BatchMetadata] {
        self.batches.get(..usize::from(self.len)).unwrap_or(&[])
    }

    pub fn last(&self) -> Option<&BatchMetadata> {
        self.batches().last()
    }

    /// Last sequence written, -1 with no batch.
    pub fn last_seq(&self) -> i32 {
        self.last().map_or(-1, |b| b.last_seq)
    }

    /// Max timestamp of the last batch, -1 with no batch.
    pub fn last_timestamp(&self) -> i64 {
        self.last().map_or(-1, |b| b.timestamp)
    }

    /// Offset of the last record written, -1 with no batch.
    pub fn last_offset(&self) -> i64 {
        self.last().map_or(-1, |b| b.last_offset)
    }

    /// Kafka's `addBatch`: a new epoch forgets the old epoch's batches; the
    /// oldest of [`BATCHES_RETAINED`] + 1 is dropped.
    fn add_batch(&mut self, epoch: i16, batch: BatchMetadata) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.len = 0;
        }
        let len = usize::from(self.len);
        if len == BATCHES_RETAINED {
            self.batches.rotate_left(1);
            if let Some(last) = self.batches.last_mut() {
                *last = batch;
            }
        } else if let Some(slot) = self.batches.get_mut(len) {
            *slot = batch;
            self.len += 1;
        }
    }

    /// The cached batch this one repeats, if any (Kafka's `findDuplicateBatch`).
    fn duplicate_of(&self, epoch: i16, first_seq: i32, last_seq: i32) -> Option<BatchMetadata> {
        if epoch != self.epoch {
            return None;
        }
        self.batches()
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
            .copied()
    }
}

/// Why an idempotent batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProducerError {
    #[error(
        "out of order sequence number for producer {producer_id} (epoch {epoch}): \
         {first_seq} (incoming seq. number), {last_seq} (current end sequence number)"
    )]
    OutOfOrderSequence {
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
    },
    #[error("invalid sequence number for new epoch {epoch} of producer {producer_id}: {first_seq} (must be 0), current epoch {current_epoch}")]
    NewEpochNotAtZero {
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        current_epoch: i16,
    },
    #[error(
        "epoch {epoch} of producer {producer_id} is older than its current epoch {current_epoch}"
    )]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current_epoch: i16,
    },
}

/// What [`ProducerState::check`] found for one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it; `entry_update` is what the producer's entry becomes.
    Append,
    /// A retry of a batch already written: answer with its offsets.
    Duplicate(BatchMetadata),
}

/// The broker-wide count of producer entries, shared by every partition's
/// [`ProducerState`], with its maximum.
#[derive(Debug)]
pub struct ProducerBudget {
    used: AtomicUsize,
    max: usize,
}

impl ProducerBudget {
    pub fn new(max: usize) -> Arc<ProducerBudget> {
        Arc::new(ProducerBudget {
            used: AtomicUsize::new(0),
            max,
        })
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    fn full(&self) -> bool {
        self.used() >= self.max
    }

    fn add(&self, n: usize) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    fn sub(&self, n: usize) {
        // Never below zero, whatever the order of drops.
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }
}

/// A producer's state as DescribeProducers shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    pub last_timestamp: i64,
}

/// The producer state of one partition (see the module docs).
#[derive(Debug)]
pub struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
    max_producers: usize,
    budget: Arc<ProducerBudget>,
    /// Changed since the last snapshot was written or loaded.
    dirty: bool,
}

impl Drop for ProducerState {
    fn drop(&mut self) {
        self.budget.sub(self.producers.len());
    }
}

impl ProducerState {
    pub fn new(max_producers: usize, budget: Arc<ProducerBudget>) -> ProducerState {
        ProducerState {
            producers: HashMap::new(),
            max_producers: max_producers.max(1),
            budget,
            dirty: false,
        }
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Moves this partition's count to another budget (the broker's, once the
    /// log is opened).
    pub fn set_budget(&mut self, budget: Arc<ProducerBudget>) {
        self.budget.sub(self.producers.len());
        budget.add(self.producers.len());
        self.budget = budget;
    }

    pub fn set_max_producers(&mut self, max: usize) {
        self.max_producers = max.max(1);
    }

    /// Every producer, ordered by id.
    pub fn active(&self) -> Vec<ActiveProducer> {
        let mut all: Vec<ActiveProducer> = self
            .producers
            .iter()
            .map(|(&producer_id, e)| ActiveProducer {
                producer_id,
                epoch: e.epoch,
                last_sequence: e.last_seq(),
                last_timestamp: e.last_timestamp(),
            })
            .collect();
        all.sort_by_key(|p| p.producer_id);
        all
    }

    /// Every entry, ordered by producer id (tests, tools).
    pub fn entries(&self) -> Vec<(i64, ProducerEntry)> {
        let mut all: Vec<(i64, ProducerEntry)> = self
            .producers
            .iter()
            .map(|(&id, e)| (id, e.clone()))
            .collect();
        all.sort_by_key(|(id, _)| *id);
        all
    }

    /// Offsets of each producer's last batch (its last offset): the cleaner
    /// keeps those batches so that compaction never loses a sequence.
    pub fn last_batch_offsets(&self) -> std::collections::HashSet<i64> {
        self.producers.values().map(|e| e.last_offset()).collect()
    }

    /// Checks a client's batch (Kafka's `findDuplicateBatch`,
    /// `checkProducerEpoch` and `checkSequence`) against `entry`, the
    /// producer's entry including batches earlier in the same append.
    pub fn check_entry(
        entry: Option<&ProducerEntry>,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
    ) -> Result<Verdict, ProducerError> {
        let Some(entry) = entry else {
            // Unknown producer (new, expired, or evicted): Kafka 4.x accepts
            // any sequence.
            return Ok(Verdict::Append);
        };
        if let Some(dup) = entry.duplicate_of(epoch, first_seq, last_seq) {
            return Ok(Verdict::Duplicate(dup));
        }
        if epoch < entry.epoch {
            return Err(ProducerError::InvalidProducerEpoch {
                producer_id,
                epoch,
                current_epoch: entry.epoch,
            });
        }
        if epoch != entry.epoch {
            if first_seq != 0 && entry.epoch != NO_PRODUCER_EPOCH {
                return Err(ProducerError::NewEpochNotAtZero {
                    producer_id,
                    epoch,
                    first_seq,
                    current_epoch: entry.epoch,
                });
            }
            return Ok(Verdict::Append);
        }
        let last = entry.last_seq();
        if entry.epoch == NO_PRODUCER_EPOCH || entry.len == 0 || in_sequence(last, first_seq) {
            Ok(Verdict::Append)
        } else {
            Err(ProducerError::OutOfOrderSequence {
                producer_id,
                epoch,
                first_seq,
                last_seq: last,
            })
        }
    }

    /// Checks one client batch whose header is `h` (see [`Self::check_entry`]);
    /// batches without a producer id always append.
    pub fn check(&self, h: &BatchHeader) -> Result<Verdict, ProducerError> {
        if h.producer_id <= NO_PRODUCER_ID {
            return Ok(Verdict::Append);
        }
        let last = last_sequence(h.base_sequence, h.last_offset_delta);
        Self::check_entry(
            self.producers.get(&h.producer_id),
            h.producer_id,
            h.producer_epoch,
            h.base_sequence,
            last,
        )
    }

    /// The entry `h` leaves behind, given the one before it (`None`: a new
    /// producer). `h.base_offset` must be the batch's assigned offset and
    /// `max_timestamp` its max timestamp as written.
    pub fn updated_entry(
        before: Option<&ProducerEntry>,
        h: &BatchHeader,
        max_timestamp: i64,
    ) -> ProducerEntry {
        let mut entry = before
            .cloned()
            .unwrap_or_else(|| ProducerEntry::new(h.producer_epoch));
        entry.add_batch(
            h.producer_epoch,
            BatchMetadata {
                first_seq: h.base_sequence,
                last_seq: last_sequence(h.base_sequence, h.last_offset_delta),
                last_offset: h.last_offset(),
                offset_delta: h.last_offset_delta,
                timestamp: max_timestamp,
            },
        );
        entry
    }

    /// Stores a producer's new entry (after its batch is written), evicting
    /// the oldest producer if a bound is reached.
    pub fn put(&mut self, producer_id: i64, entry: ProducerEntry) {
        self.dirty = true;
        if let Some(slot) = self.producers.get_mut(&producer_id) {
            *slot = entry;
            return;
        }
        if self.producers.len() >= self.max_producers || self.budget.full() {
            self.evict_oldest();
        }
        self.producers.insert(producer_id, entry);
        self.budget.add(1);
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .producers
            .iter()
            .min_by_key(|(_, e)| e.last_offset())
            .map(|(&id, _)| id);
        if let Some(id) = oldest {
            self.producers.remove(&id);
            self.budget.sub(1);
        }
    }

    /// Applies a batch read back from the log (recovery, or a batch a replica
    /// copied): no checks, as Kafka's replication origin.
    pub fn replay(&mut self, h: &BatchHeader) {
        if h.producer_id <= NO_PRODUCER_ID || h.is_control() {
            return;
        }
        let entry = Self::updated_entry(self.producers.get(&h.producer_id), h, h.max_timestamp);
        self.put(h.producer_id, entry);
    }

    /// Removes producers whose last batch's timestamp is `expiration_ms` or
    /// more before `now_ms` (`producer.id.expiration.ms`). Returns how many.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_timestamp()) < expiration_ms);
        let removed = before - self.producers.len();
        if removed > 0 {
            self.budget.sub(removed);
            self.dirty = true;
        }
        removed
    }

    /// Forgets every producer (the log was emptied).
    pub fn clear(&mut self) {
        self.budget.sub(self.producers.len());
        self.producers.clear();
        self.dirty = true;
    }

    /// Serialises the state (see [`SNAPSHOT_VERSION`] for the layout).
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort_unstable();
        let mut body = Vec::with_capacity(4 + ids.len() * (11 + 28));
        body.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        for id in ids {
            let Some(e) = self.producers.get(id) else {
                continue;
            };
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&e.epoch.to_be_bytes());
            body.push(e.len);
            for b in e.batches() {
                body.extend_from_slice(&b.first_seq.to_be_bytes());
                body.extend_from_slice(&b.last_seq.to_be_bytes());
                body.extend_from_slice(&b.last_offset.to_be_bytes());
                body.extend_from_slice(&b.offset_delta.to_be_bytes());
                body.extend_from_slice(&b.timestamp.to_be_bytes());
            }
        }
        let mut out = Vec::with_capacity(6 + body.len());
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Replaces the state with a snapshot's; `None` (state unchanged) when the
    /// bytes are not a valid snapshot (version, CRC, lengths, field ranges).
    pub fn load_snapshot(&mut self, bytes: &[u8]) -> Option<()> {
        let decoded = decode_snapshot(bytes)?;
        self.clear();
        self.producers.reserve(decoded.len());
        for (id, entry) in decoded {
            self.put(id, entry);
        }
        self.dirty = false;
        Some(())
    }

    /// Marks the state as saved (a snapshot of it was written).
    pub fn mark_saved(&mut self) {
        self.dirty = false;
    }
}

/// Snapshot layout, all big-endian: `version: u16 = 1`, `crc32c: u32` of the
/// rest, `count: u32`, then `count` entries of `producer_id: i64, epoch: i16,
/// batches: u8 (1..=5)` followed by that many `first_seq: i32, last_seq: i32,
/// last_offset: i64, offset_delta: i32, timestamp: i64`. Unlike Kafka's
/// snapshot, which keeps only each producer's last batch, all cached batches
/// are kept, so a restart keeps duplicate detection for the last 5.
pub const SNAPSHOT_VERSION: u16 = 1;
const SNAPSHOT_SUFFIX: &str = ".snapshot";

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_at_checked(N)?;
        self.0 = rest;
        head.try_into().ok()
    }
}

fn decode_snapshot(bytes: &[u8]) -> Option<Vec<(i64, ProducerEntry)>> {
    let mut r = Reader(bytes);
    if u16::from_be_bytes(r.take()?) != SNAPSHOT_VERSION {
        return None;
    }
    let crc = u32::from_be_bytes(r.take()?);
    if crc32c(r.0) != crc {
        return None;
    }
    let count = u32::from_be_bytes(r.take()?) as usize;
    // Each entry takes at least 11 + 28 bytes: a count the bytes cannot hold is
    // corrupt, and never sizes an allocation.
    if count > r.0.len() / 39 {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let id = i64::from_be_bytes(r.take()?);
        let epoch = i16::from_be_bytes(r.take()?);
        let [n] = r.take::<1>()?;
        if id < 0 || n == 0 || usize::from(n) > BATCHES_RETAINED {
            return None;
        }
        let mut entry = ProducerEntry::new(epoch);
        for _ in 0..n {
            let batch = BatchMetadata {
                first_seq: i32::from_be_bytes(r.take()?),
                last_seq: i32::from_be_bytes(r.take()?),
                last_offset: i64::from_be_bytes(r.take()?),
                offset_delta: i32::from_be_bytes(r.take()?),
                timestamp: i64::from_be_bytes(r.take()?),
            };
            if batch.offset_delta < 0 || batch.last_offset < i64::from(batch.offset_delta) {
                return None;
            }
            entry.add_batch(epoch, batch);
        }
        out.push((id, entry));
    }
    r.0.is_empty().then_some(out)
}

/// `<20-digit offset>.snapshot`.
pub(crate) fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}{SNAPSHOT_SUFFIX}"))
}

pub(crate) fn parse_snapshot_name(name: &str) -> Option<i64> {
    let digits = name.strip_suffix(SNAPSHOT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Offsets of the snapshot files in `dir`, ascending.
pub(crate) fn list_snapshots(dir: &Path) -> Result<Vec<i64>, LogError> {
    let mut offsets = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        if let Some(offset) = parse_snapshot_name(&entry.file_name().to_string_lossy()) {
            offsets.push(offset);
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

/// Writes `bytes` as the snapshot at `offset`: a `.tmp` file renamed into
/// place (open removes `.tmp` leftovers). With `durable`, the file is fsynced
/// before the rename (the caller fsyncs the directory).
pub(crate) fn write_snapshot(
    dir: &Path,
    offset: i64,
    bytes: &[u8],
    durable: bool,
) -> Result<(), LogError> {
    let path = snapshot_path(dir, offset);
    let tmp = path.with_extension("snapshot.tmp");
    let mut file = fs::File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(bytes).map_err(io_err(&tmp))?;
    if durable {
        file.sync_all().map_err(io_err(&tmp))?;
    }
    drop(file);
    fs::rename(&tmp, &path).map_err(io_err(&path))
}

pub(crate) fn remove_snapshot(dir: &Path, offset: i64) -> Result<(), LogError> {
    let path = snapshot_path(dir, offset);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(&path)(e)),
    }
}

#[cfg(test)]
mod tests;
