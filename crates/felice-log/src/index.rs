//! Sparse segment indexes in Kafka's file format: `.index` (8-byte entries: relative
//! offset u32, position u32) and `.timeindex` (12-byte entries: timestamp i64,
//! relative offset u32), all big-endian.
//!
//! Owns the entry count of one index and, while its segment is ACTIVE, a fixed-size
//! cache of the last [`TAIL_ENTRIES`] entries, the newest `pending` of which are not
//! in the file yet. No index holds a descriptor: the file is opened per write (one
//! `open` + `pwrite` + `close` per [`WRITE_BATCH`] entries, i.e. per ~256 KiB of
//! batches at the default `index.interval.bytes`), per fsync and, for entries older
//! than the tail, per lookup. So a partition at rest holds one descriptor (its active
//! `.log`) where it held three.
//!
//! Lookups: an answer in the tail cache (a tailing consumer, the high watermark: the
//! hot path) comes from memory, pending entries included; any other binary-searches
//! the file's entries before the tail (all written, as `pending <= tail.len()`) with
//! positioned reads, finishing with one read of the remaining range once it fits
//! [`SEARCH_CHUNK_BYTES`]. A CLOSED index keeps nothing but its count. The index does
//! not store its path (the segment derives it), to keep closed segments small.
//!
//! Durability: pending entries are lost by a crash. That is safe because only the
//! active segment has pending entries and it always lies at or after the recovery
//! point until a flush, which writes them first ([`Index::write_pending`]): after an
//! unclean shutdown recovery rebuilds the active segment's indexes from its data.
//!
//! Memory: closed index 16 B; active index 16 B + a 48 B box + one heap block of
//! `TAIL_ENTRIES * size_of::<E>()` (offset: ~0.55 KiB, time: ~1.1 KiB, as `TimeEntry`
//! is padded to 16 B in memory), whatever the segment size.
//!
//! Invariants: keys (relative offset, resp. timestamp) strictly increase; the file
//! holds exactly `len() - pending` entries (a missing file holds 0; an active index
//! whose file holds none truncates it at its first write, so stale bytes never
//! count); the tail cache holds copies of the last `pending <= tail.len() <=
//! min(len(), TAIL_ENTRIES)` entries; `pending < WRITE_BATCH` between calls. Not
//! synchronised: the owning `Log` is used under the partition's lock.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Entries of an active index cached in memory. 64 offset entries cover the last
/// 64 index intervals (256 KiB of batches at the default `index.interval.bytes`):
/// consumers that far behind the log end or closer never cause an index read.
pub(crate) const TAIL_ENTRIES: usize = 64;

/// Pending (unwritten) entries that trigger a write: one `open` + `pwrite` + `close`
/// per this many entries. At most [`TAIL_ENTRIES`], so every pending entry is in the
/// tail cache (lookups see them, and a write finds them there).
pub(crate) const WRITE_BATCH: usize = TAIL_ENTRIES;

/// Once a file binary search has narrowed to this many bytes, the rest is read with
/// one positioned read (a page: 512 offset or 341 time entries), so a lookup in a
/// full 10 MiB index costs ~12 reads instead of ~21.
const SEARCH_CHUNK_BYTES: usize = 4096;

/// A fixed-size index entry.
pub(crate) trait Entry: Copy + std::fmt::Debug {
    const SIZE: usize;
    /// The sort key the index is searched by.
    fn key(&self) -> i64;
    fn decode(bytes: &[u8]) -> Option<Self>;
    fn encode_into(&self, out: &mut Vec<u8>);
}

/// `.index` entry: a batch starting at `position` whose last offset is
/// `base_offset + relative_offset` (Kafka's convention).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// `.timeindex` entry: the segment's largest timestamp so far and the (last) offset of
/// the batch that first reached it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

impl Entry for OffsetEntry {
    const SIZE: usize = 8;
    fn key(&self) -> i64 {
        i64::from(self.relative_offset)
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(OffsetEntry {
            relative_offset: u32::from_be_bytes(bytes.get(0..4)?.try_into().ok()?),
            position: u32::from_be_bytes(bytes.get(4..8)?.try_into().ok()?),
        })
    }
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }
}

impl Entry for TimeEntry {
    const SIZE: usize = 12;
    fn key(&self) -> i64 {
        self.timestamp
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(TimeEntry {
            timestamp: i64::from_be_bytes(bytes.get(0..8)?.try_into().ok()?),
            relative_offset: u32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?),
        })
    }
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
    }
}

// The search buffer must hold at least one entry of each kind; pending entries must
// all fit in the tail.
const _: () = assert!(SEARCH_CHUNK_BYTES >= 12 && TAIL_ENTRIES >= 1);
const _: () = assert!(WRITE_BATCH >= 1 && WRITE_BATCH <= TAIL_ENTRIES);

/// What an active index holds beyond its count (boxed: closed indexes stay 16 B).
#[derive(Debug)]
struct Active<E> {
    /// Copies of the last `tail.len()` entries, oldest first; never more than
    /// [`TAIL_ENTRIES`] (capacity allocated once).
    tail: VecDeque<E>,
    /// The newest `pending` entries of `tail` are not in the file yet.
    pending: usize,
    /// The file was written since the last [`Index::sync`].
    unsynced: bool,
    /// The file was (re)created by a write since the last [`Index::take_created`]: its
    /// directory entry may not be durable yet.
    created: bool,
}

#[derive(Debug)]
pub(crate) struct Index<E: Entry> {
    /// Entries of the index: those in the file plus the pending ones.
    entries: u64,
    active: Option<Box<Active<E>>>,
}

fn corrupt_entry(path: &Path, at: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unreadable index entry {at} in {}", path.display()),
    )
}

fn read_entry<E: Entry>(file: &File, path: &Path, i: u64) -> io::Result<E> {
    let mut buf = [0u8; 16];
    let buf = buf
        .get_mut(..E::SIZE)
        .ok_or_else(|| corrupt_entry(path, i))?;
    file.read_exact_at(buf, i * E::SIZE as u64)?;
    E::decode(buf).ok_or_else(|| corrupt_entry(path, i))
}

/// Reads entries `[from, to)` (at most a tail's worth; a caller's small range).
fn read_entries<E: Entry>(file: &File, path: &Path, from: u64, to: u64) -> io::Result<Vec<E>> {
    let count = usize::try_from(to.saturating_sub(from)).map_err(|_| corrupt_entry(path, to))?;
    let mut bytes = vec![0u8; count * E::SIZE];
    file.read_exact_at(&mut bytes, from * E::SIZE as u64)?;
    bytes
        .chunks_exact(E::SIZE)
        .zip(from..)
        .map(|(chunk, i)| E::decode(chunk).ok_or_else(|| corrupt_entry(path, i)))
        .collect()
}

/// The entry with the largest `key` `<= target` among the file's entries `[0, hi)`;
/// `key` must not decrease along the file.
fn search_file<E: Entry>(
    file: &File,
    path: &Path,
    key: impl Fn(&E) -> i64,
    target: i64,
    hi: u64,
) -> io::Result<Option<E>> {
    let chunk_entries = (SEARCH_CHUNK_BYTES / E::SIZE) as u64;
    // Loop invariant: entries [0, lo) have key <= target (`best` is entry lo - 1 once
    // read), entries [hi, ..) have key > target.
    let (mut lo, mut hi) = (0u64, hi);
    let mut best = None;
    while hi - lo > chunk_entries {
        let mid = lo + (hi - lo) / 2;
        let e: E = read_entry(file, path, mid)?;
        if key(&e) <= target {
            lo = mid + 1;
            best = Some(e);
        } else {
            hi = mid;
        }
    }
    if lo == hi {
        return Ok(best);
    }
    let mut buf = [0u8; SEARCH_CHUNK_BYTES];
    let bytes = buf
        .get_mut(..(hi - lo) as usize * E::SIZE)
        .ok_or_else(|| corrupt_entry(path, lo))?;
    file.read_exact_at(bytes, lo * E::SIZE as u64)?;
    let at = |i: usize| {
        bytes
            .get(i * E::SIZE..(i + 1) * E::SIZE)
            .and_then(E::decode)
            .ok_or_else(|| corrupt_entry(path, lo + i as u64))
    };
    let (mut l, mut h) = (0usize, (hi - lo) as usize);
    while l < h {
        let mid = l + (h - l) / 2;
        if key(&at(mid)?) <= target {
            l = mid + 1;
        } else {
            h = mid;
        }
    }
    if l == 0 {
        Ok(best)
    } else {
        at(l - 1).map(Some)
    }
}

/// Writes `bytes` (whole entries) after the file's first `written` entries with one
/// positioned write, creating the file; with `written == 0` it is truncated first, so
/// stale bytes of an earlier file never count. On failure the file is cut back to
/// `written` entries (best effort) and the error returned.
fn write_at<E: Entry>(path: &Path, written: u64, bytes: &[u8]) -> io::Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(written == 0)
        .open(path)?;
    let at = written * E::SIZE as u64;
    file.write_all_at(bytes, at).inspect_err(|_| {
        // Best effort: the write's error is what the caller needs to see.
        let _ = file.set_len(at);
    })
}

impl<E: Entry> Index<E> {
    /// An empty active index. Touches no file: the file is created (or emptied) by
    /// the first write of entries, or by [`Index::close`].
    pub fn new_active() -> Index<E> {
        Index {
            entries: 0,
            active: Some(Box::new(Active {
                tail: VecDeque::with_capacity(TAIL_ENTRIES),
                pending: 0,
                unsynced: false,
                created: false,
            })),
        }
    }

    /// Writes `entries` to a fresh file and returns a closed index over it.
    #[cfg(test)]
    pub fn create_closed(path: &Path, entries: &[E]) -> io::Result<Index<E>> {
        let mut index = Index::new_active();
        index.append(|| path.to_path_buf(), entries)?;
        index.close(path)?;
        Ok(index)
    }

    /// A closed index over an existing file of `entries` entries (already checked).
    pub fn closed(entries: u64) -> Index<E> {
        Index {
            entries,
            active: None,
        }
    }

    /// Opens an existing file as an active index: counts its entries and reads only
    /// the last [`TAIL_ENTRIES`] (a trailing partial entry is ignored and later
    /// overwritten). A missing file is an empty index (an active segment creates its
    /// index files lazily). Holds no descriptor afterwards.
    pub fn load_active(path: &Path) -> io::Result<Index<E>> {
        let mut index = Index::new_active();
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(index),
            Err(e) => return Err(e),
        };
        let entries = file.metadata()?.len() / E::SIZE as u64;
        let from = entries.saturating_sub(TAIL_ENTRIES as u64);
        if let Some(active) = &mut index.active {
            active
                .tail
                .extend(read_entries::<E>(&file, path, from, entries)?);
        }
        index.entries = entries;
        Ok(index)
    }

    pub fn len(&self) -> u64 {
        self.entries
    }

    /// Entries not written to the file yet (0 when closed).
    pub fn pending(&self) -> usize {
        self.active.as_ref().map_or(0, |a| a.pending)
    }

    /// Entries in the file.
    fn written(&self) -> u64 {
        self.entries - self.pending() as u64
    }

    /// Entries held in memory (0 when closed).
    #[cfg(test)]
    pub fn cached(&self) -> usize {
        self.active.as_ref().map_or(0, |a| a.tail.len())
    }

    /// The last entry if it is in memory (active, non-empty).
    pub fn last_cached(&self) -> Option<E> {
        self.active.as_ref().and_then(|a| a.tail.back()).copied()
    }

    /// The last entry, if any: from memory when active.
    pub fn last(&self, path: &Path) -> io::Result<Option<E>> {
        if let Some(e) = self.last_cached() {
            return Ok(Some(e));
        }
        // Pending entries are all in the tail, so an empty tail means they are none.
        match self.written() {
            0 => Ok(None),
            n => read_entry(&File::open(path)?, path, n - 1).map(Some),
        }
    }

    /// The entry with the largest key `<= target`, if any. Served from the tail cache
    /// (pending entries included) when the answer lies in it, else by a binary search
    /// of the file's entries before the cache, which are all written.
    pub fn lookup(&self, path: &Path, target: i64) -> io::Result<Option<E>> {
        self.lookup_by(path, E::key, target)
    }

    /// [`Index::lookup`] by another field that never decreases along the index (an
    /// offset entry's position).
    pub fn lookup_by(
        &self,
        path: &Path,
        key: impl Fn(&E) -> i64,
        target: i64,
    ) -> io::Result<Option<E>> {
        let mut before = self.entries;
        if let Some(active) = &self.active {
            let tail = &active.tail;
            if tail.front().is_some_and(|e| key(e) <= target) {
                let i = tail.partition_point(|e| key(e) <= target);
                return Ok(tail.get(i.saturating_sub(1)).copied());
            }
            before -= tail.len() as u64;
        }
        if before == 0 {
            return Ok(None);
        }
        search_file(&File::open(path)?, path, key, target, before)
    }

    /// Appends entries (active only). They stay pending in memory until
    /// [`WRITE_BATCH`] are, then all pending ones go to the file with one positioned
    /// write (`path` is asked for only then). The write comes before any change of
    /// memory, so a failed one leaves the index as it was.
    pub fn append(&mut self, path: impl FnOnce() -> PathBuf, new: &[E]) -> io::Result<()> {
        if new.is_empty() {
            return Ok(());
        }
        let written = self.written();
        let Some(active) = &mut self.active else {
            return Err(io::Error::other("append to a closed index"));
        };
        let write = active.pending + new.len() >= WRITE_BATCH;
        if write {
            let pending = active.tail.len() - active.pending;
            let mut bytes = Vec::with_capacity((active.pending + new.len()) * E::SIZE);
            for e in active.tail.range(pending..).chain(new) {
                e.encode_into(&mut bytes);
            }
            write_at::<E>(&path(), written, &bytes)?;
            active.created |= written == 0;
            active.unsynced = true;
            active.pending = 0;
        } else {
            // pending + new < WRITE_BATCH <= TAIL_ENTRIES: entries pushed out of the
            // tail below are written ones.
            active.pending += new.len();
        }
        let skip = new.len().saturating_sub(TAIL_ENTRIES);
        for e in new.iter().skip(skip) {
            if active.tail.len() == TAIL_ENTRIES {
                active.tail.pop_front();
            }
            active.tail.push_back(*e);
        }
        self.entries += new.len() as u64;
        Ok(())
    }

    /// Writes the pending entries, if any, with one positioned write.
    pub fn write_pending(&mut self, path: &Path) -> io::Result<()> {
        let written = self.written();
        let Some(active) = &mut self.active else {
            return Ok(());
        };
        if active.pending == 0 {
            return Ok(());
        }
        let from = active.tail.len() - active.pending;
        let mut bytes = Vec::with_capacity(active.pending * E::SIZE);
        for e in active.tail.range(from..) {
            e.encode_into(&mut bytes);
        }
        write_at::<E>(path, written, &bytes)?;
        active.created |= written == 0;
        active.unsynced = true;
        active.pending = 0;
        Ok(())
    }

    /// Whether a write (re)created the file since the last call: the caller then owes
    /// the directory an fsync before a checkpoint may count on the file.
    pub fn take_created(&mut self) -> bool {
        self.active
            .as_mut()
            .is_some_and(|a| std::mem::take(&mut a.created))
    }

    /// Cuts the index back to `len` entries, file and memory (rollback of a failed
    /// append). Pending entries are dropped from memory only; written ones are cut
    /// from the file too and the tail cache is refilled from it; should that read
    /// fail, the cache stays a shorter (still correct) suffix.
    pub fn truncate(&mut self, path: &Path, len: u64) -> io::Result<()> {
        let len = len.min(self.entries);
        let removed = self.entries - len;
        let written = self.written();
        if len < written {
            match OpenOptions::new().write(true).open(path) {
                Ok(file) => file.set_len(len * E::SIZE as u64)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound && written == 0 => {}
                Err(e) => return Err(e),
            }
        }
        self.entries = len;
        if let Some(active) = &mut self.active {
            active.pending = active
                .pending
                .saturating_sub(usize::try_from(removed).unwrap_or(usize::MAX));
            let keep = (active.tail.len() as u64).saturating_sub(removed) as usize;
            active.tail.truncate(keep);
            let want = len.min(TAIL_ENTRIES as u64);
            let have = active.tail.len() as u64;
            if have < want {
                // The missing entries precede the kept tail, so they are written ones.
                let file = File::open(path)?;
                let missing = read_entries::<E>(&file, path, len - want, len - have)?;
                for e in missing.into_iter().rev() {
                    active.tail.push_front(e);
                }
            }
        }
        Ok(())
    }

    /// fsyncs the file if it was written since the last sync (active), or always
    /// (closed: the caller knows it is dirty). Pending entries are not covered:
    /// [`Index::write_pending`] first. A missing file with no entries is fine.
    pub fn sync(&mut self, path: &Path) -> io::Result<()> {
        debug_assert_eq!(self.pending(), 0, "sync with pending entries");
        if let Some(active) = &self.active {
            if !active.unsynced {
                return Ok(());
            }
        }
        match File::open(path) {
            Ok(file) => file.sync_data()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.written() == 0 => {}
            Err(e) => return Err(e),
        }
        if let Some(active) = &mut self.active {
            active.unsynced = false;
        }
        Ok(())
    }

    /// Needs [`Index::write_pending`] or [`Index::sync`] before a checkpoint may
    /// cover it.
    pub fn needs_sync(&self) -> bool {
        self.active
            .as_ref()
            .is_some_and(|a| a.pending > 0 || a.unsynced)
    }

    /// Writes the pending entries (creating an empty file if the index never had a
    /// write, so a closed segment always has both index files) and drops the cache:
    /// the segment is no longer active.
    pub fn close(&mut self, path: &Path) -> io::Result<()> {
        if self.active.is_none() {
            return Ok(());
        }
        if self.pending() > 0 {
            self.write_pending(path)?;
        } else if self.entries == 0 {
            write_at::<E>(path, 0, &[])?;
        }
        self.active = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn linear<E: Entry>(entries: &[E], target: i64) -> Option<E> {
        entries.iter().rev().find(|e| e.key() <= target).copied()
    }

    fn file_entries(path: &Path) -> u64 {
        std::fs::metadata(path).map_or(0, |m| m.len())
    }

    proptest! {
        /// Lookups agree with a linear scan whether the entries are pending in memory,
        /// written by the batch rule, all written, reloaded or closed; the file holds
        /// exactly the written ones.
        #[test]
        fn offset_lookup_matches_linear_scan(
            steps in proptest::collection::vec((1u32..50, 1u32..5000), 0..200),
            targets in proptest::collection::vec(-5i64..12_000, 1..40),
            chunk in 1usize..80,
        ) {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("x.index");
            let mut entries = Vec::new();
            let (mut off, mut pos) = (0u32, 0u32);
            for (d_off, d_pos) in steps {
                off += d_off;
                pos += d_pos;
                entries.push(OffsetEntry { relative_offset: off, position: pos });
            }
            let mut active = Index::new_active();
            for part in entries.chunks(chunk) {
                active.append(|| path.clone(), part)?;
                prop_assert!(active.pending() < WRITE_BATCH);
                prop_assert_eq!(file_entries(&path), 8 * (active.len() - active.pending() as u64));
            }
            prop_assert_eq!(active.len(), entries.len() as u64);
            prop_assert_eq!(active.cached(), entries.len().min(TAIL_ENTRIES));
            let check = |idx: &Index<OffsetEntry>, p: &Path, t: i64| -> Result<(), TestCaseError> {
                prop_assert_eq!(idx.lookup(p, t)?, linear(&entries, t), "target {}", t);
                Ok(())
            };
            for &t in &targets {
                check(&active, &path, t)?;
            }
            prop_assert_eq!(active.last(&path)?, entries.last().copied());
            active.write_pending(&path)?;
            prop_assert_eq!(active.pending(), 0);
            prop_assert_eq!(file_entries(&path), 8 * entries.len() as u64);
            let closed_path = dir.path().join("y.index");
            let closed = Index::<OffsetEntry>::create_closed(&closed_path, &entries)?;
            let reloaded = Index::<OffsetEntry>::load_active(&path)?;
            prop_assert_eq!(closed.len(), entries.len() as u64);
            prop_assert_eq!(reloaded.cached(), entries.len().min(TAIL_ENTRIES));
            for &t in &targets {
                check(&active, &path, t)?;
                check(&closed, &closed_path, t)?;
                check(&reloaded, &path, t)?;
            }
            prop_assert_eq!(closed.last(&closed_path)?, entries.last().copied());
            active.close(&path)?;
            prop_assert_eq!(active.cached(), 0);
            prop_assert_eq!(active.last(&path)?, entries.last().copied());
        }

        #[test]
        fn time_lookup_matches_linear_scan(
            steps in proptest::collection::vec((1i64..1000, 0u32..50), 0..200),
            targets in proptest::collection::vec(-10i64..200_000, 1..40),
        ) {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("x.timeindex");
            let mut entries = Vec::new();
            let (mut ts, mut off) = (1_000i64, 0u32);
            for (d_ts, d_off) in steps {
                ts += d_ts;
                off += d_off;
                entries.push(TimeEntry { timestamp: ts, relative_offset: off });
            }
            let closed = Index::<TimeEntry>::create_closed(&path, &entries)?;
            let active = Index::<TimeEntry>::load_active(&path)?;
            for t in targets {
                let want = linear(&entries, t);
                prop_assert_eq!(closed.lookup(&path, t)?, want);
                prop_assert_eq!(active.lookup(&path, t)?, want);
            }
        }

        /// Rolling back any number of the last appended entries restores the state a
        /// shorter index would have, cache included, whether the cut entries were
        /// pending or written.
        #[test]
        fn truncate_restores_the_tail(n in 0u32..300, cut in 0u32..300, flush in any::<bool>()) {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("t.index");
            let entries: Vec<OffsetEntry> = (0..n)
                .map(|i| OffsetEntry { relative_offset: 3 * i + 1, position: 10 * i })
                .collect();
            let mut idx = Index::new_active();
            for part in entries.chunks(5) {
                idx.append(|| path.clone(), part)?;
            }
            if flush {
                idx.write_pending(&path)?;
            }
            let keep = n.saturating_sub(cut);
            idx.truncate(&path, u64::from(keep))?;
            let kept = &entries[..keep as usize];
            prop_assert_eq!(idx.len(), u64::from(keep));
            prop_assert_eq!(idx.cached(), kept.len().min(TAIL_ENTRIES));
            let written = u64::from(keep) - idx.pending() as u64;
            prop_assert_eq!(file_entries(&path), written * 8);
            for t in 0..(3 * i64::from(n) + 3) {
                prop_assert_eq!(idx.lookup(&path, t)?, linear(kept, t));
            }
            prop_assert_eq!(idx.last(&path)?, kept.last().copied());
            idx.close(&path)?;
            prop_assert_eq!(file_entries(&path), u64::from(keep) * 8);
        }
    }

    /// Large enough for several file probes before the final chunk read.
    #[test]
    fn lookups_in_a_large_index_match_linear_scan() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("big.index");
        let entries: Vec<OffsetEntry> = (0..5_000u32)
            .map(|i| OffsetEntry {
                relative_offset: 2 * i + 1,
                position: 7 * i,
            })
            .collect();
        let mut active = Index::new_active();
        for chunk in entries.chunks(100) {
            active.append(|| path.clone(), chunk).expect("append");
        }
        let reloaded = Index::<OffsetEntry>::load_active(&path).expect("load");
        let closed = Index::<OffsetEntry>::closed(entries.len() as u64);
        for t in -1..10_003i64 {
            let want = linear(&entries, t);
            assert_eq!(active.lookup(&path, t).expect("io"), want, "target {t}");
            assert_eq!(reloaded.lookup(&path, t).expect("io"), want, "target {t}");
            if t % 7 == 0 {
                assert_eq!(closed.lookup(&path, t).expect("io"), want, "target {t}");
            }
        }
    }

    #[test]
    fn entries_are_written_in_batches_without_holding_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("w.index");
        let e = |o: u32| OffsetEntry {
            relative_offset: o,
            position: o * 10,
        };
        // A stale file from an earlier life of the path: the first write replaces it.
        std::fs::write(&path, [0xffu8; 80]).expect("stale");
        let mut idx = Index::new_active();
        for o in 1..WRITE_BATCH as u32 {
            idx.append(|| path.clone(), &[e(o)]).expect("append");
        }
        assert_eq!(idx.pending(), WRITE_BATCH - 1);
        assert_eq!(file_entries(&path), 80, "nothing written yet");
        assert!(idx.needs_sync());
        idx.append(|| path.clone(), &[e(WRITE_BATCH as u32)])
            .expect("append");
        assert_eq!(idx.pending(), 0);
        assert_eq!(file_entries(&path), 8 * WRITE_BATCH as u64, "one write");
        assert!(idx.take_created() && !idx.take_created());
        assert!(idx.needs_sync());
        idx.sync(&path).expect("sync");
        assert!(!idx.needs_sync());
        // More than a tail's worth at once: written at once, the tail keeps the newest.
        let many: Vec<_> = (100..300).map(e).collect();
        idx.append(|| path.clone(), &many).expect("append");
        assert_eq!(idx.pending(), 0);
        assert_eq!(idx.cached(), TAIL_ENTRIES);
        assert_eq!(file_entries(&path), 8 * (WRITE_BATCH as u64 + 200));
        assert_eq!(idx.lookup(&path, 150).expect("io"), Some(e(150)));
        assert_eq!(idx.lookup(&path, 99).expect("io"), Some(e(64)));
        // A failed write (no such directory) changes nothing.
        let bad = dir.path().join("missing").join("w.index");
        idx.append(|| bad.clone(), &[e(300)]).expect("pending only");
        let mut more: Vec<_> = (301..301 + WRITE_BATCH as u32).map(e).collect();
        assert!(idx.append(|| bad.clone(), &more).is_err());
        assert_eq!((idx.len(), idx.pending()), (WRITE_BATCH as u64 + 201, 1));
        more.truncate(3);
        idx.append(|| path.clone(), &more).expect("append");
        idx.close(&path).expect("close");
        assert_eq!(file_entries(&path), 8 * (WRITE_BATCH as u64 + 204));
        // An index that never had an entry leaves an empty file when closed.
        let empty = dir.path().join("empty.index");
        let mut idx = Index::<OffsetEntry>::new_active();
        idx.close(&empty).expect("close");
        assert_eq!(std::fs::metadata(&empty).expect("created").len(), 0);
    }

    #[test]
    fn truncate_and_append_to_closed() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("z.index");
        let e = |o| OffsetEntry {
            relative_offset: o,
            position: o * 10,
        };
        let mut idx = Index::new_active();
        idx.append(|| path.clone(), &[e(1), e(2)]).expect("append");
        idx.append(|| path.clone(), &[e(3)]).expect("append");
        idx.write_pending(&path).expect("write");
        idx.truncate(&path, 2).expect("truncate");
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 16);
        assert_eq!(idx.last(&path).expect("io"), Some(e(2)));
        idx.close(&path).expect("close");
        assert!(idx.append(|| path.clone(), &[e(4)]).is_err());
        idx.truncate(&path, 1).expect("truncate closed");
        assert_eq!(idx.last(&path).expect("io"), Some(e(1)));
    }

    #[test]
    fn in_memory_sizes() {
        // The numbers the module docs and lib.rs quote.
        assert_eq!(std::mem::size_of::<Index<OffsetEntry>>(), 16);
        assert_eq!(std::mem::size_of::<Active<OffsetEntry>>(), 48);
        assert_eq!(std::mem::size_of::<TimeEntry>(), 16);
        assert_eq!(std::mem::size_of::<OffsetEntry>(), 8);
    }
}
