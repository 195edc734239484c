//! Sparse segment indexes in Kafka's file format: `.index` (8-byte entries: relative
//! offset u32, position u32) and `.timeindex` (12-byte entries: timestamp i64,
//! relative offset u32), all big-endian.
//!
//! Owns the entry count of one index file and, while its segment is ACTIVE, the open
//! descriptor plus a fixed-size cache of the last [`TAIL_ENTRIES`] entries. Entries
//! themselves live only in the file, active or closed: a lookup whose answer lies in
//! the tail cache (a tailing consumer, the high watermark: the hot path) is answered
//! from memory; any other binary-searches the file with positioned reads, finishing
//! with one read of the remaining range once it fits [`SEARCH_CHUNK_BYTES`]. A CLOSED
//! index keeps nothing but its count and opens the file per lookup, so closed segments
//! hold no index descriptor. The index does not store its path (the segment derives
//! it), to keep closed segments small.
//!
//! Memory: closed index 16 B; active index 16 B + one heap block of
//! `TAIL_ENTRIES * size_of::<E>()` + a `VecDeque` header (offset: ~0.55 KiB, time:
//! ~1.1 KiB, as `TimeEntry` is padded to 16 B in memory), whatever the segment size.
//!
//! Invariants: keys (relative offset, resp. timestamp) strictly increase; the file
//! holds exactly `len()` entries; the tail cache holds copies of the last
//! `tail.len() <= min(len(), TAIL_ENTRIES)` of them (appends write the file before
//! touching memory; [`Index::truncate`] rolls both back). Not synchronised: the owning
//! `Log` is used under the partition's lock.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Entries of an active index cached in memory. 64 offset entries cover the last
/// 64 index intervals (256 KiB of batches at the default `index.interval.bytes`):
/// consumers that far behind the log end or closer never cause an index read.
pub(crate) const TAIL_ENTRIES: usize = 64;

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

// The search buffer must hold at least one entry of each kind.
const _: () = assert!(SEARCH_CHUNK_BYTES >= 12 && TAIL_ENTRIES >= 1);

/// What an active index holds beyond its count (boxed: closed indexes stay 16 B).
#[derive(Debug)]
struct Active<E> {
    file: File,
    /// Copies of the last `tail.len()` entries of the file, oldest first; never more
    /// than [`TAIL_ENTRIES`] (capacity allocated once).
    tail: VecDeque<E>,
}

#[derive(Debug)]
pub(crate) struct Index<E: Entry> {
    /// Entries in the file.
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

/// The entry with the largest key `<= target` among the file's entries `[0, hi)`.
fn search_file<E: Entry>(file: &File, path: &Path, target: i64, hi: u64) -> io::Result<Option<E>> {
    let chunk_entries = (SEARCH_CHUNK_BYTES / E::SIZE) as u64;
    // Loop invariant: entries [0, lo) have key <= target (`best` is entry lo - 1 once
    // read), entries [hi, ..) have key > target.
    let (mut lo, mut hi) = (0u64, hi);
    let mut best = None;
    while hi - lo > chunk_entries {
        let mid = lo + (hi - lo) / 2;
        let e: E = read_entry(file, path, mid)?;
        if e.key() <= target {
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
        if at(mid)?.key() <= target {
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

impl<E: Entry> Index<E> {
    /// Creates (or truncates) the file and returns an empty active index over it.
    pub fn create_active(path: &Path) -> io::Result<Index<E>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Index {
            entries: 0,
            active: Some(Box::new(Active {
                file,
                tail: VecDeque::with_capacity(TAIL_ENTRIES),
            })),
        })
    }

    /// Writes `entries` to a fresh file and returns a closed index over it.
    #[cfg(test)]
    pub fn create_closed(path: &Path, entries: &[E]) -> io::Result<Index<E>> {
        let mut index = Index::create_active(path)?;
        index.append(entries)?;
        index.close();
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
    /// overwritten, as before).
    pub fn load_active(path: &Path) -> io::Result<Index<E>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let entries = file.metadata()?.len() / E::SIZE as u64;
        let from = entries.saturating_sub(TAIL_ENTRIES as u64);
        let mut tail = VecDeque::with_capacity(TAIL_ENTRIES);
        tail.extend(read_entries::<E>(&file, path, from, entries)?);
        Ok(Index {
            entries,
            active: Some(Box::new(Active { file, tail })),
        })
    }

    pub fn len(&self) -> u64 {
        self.entries
    }

    /// Entries held in memory (0 when closed).
    #[cfg(test)]
    pub fn cached(&self) -> usize {
        self.active.as_ref().map_or(0, |a| a.tail.len())
    }

    /// Runs `f` on the active descriptor, or on `path` opened read-only when closed.
    fn with_file<T>(&self, path: &Path, f: impl FnOnce(&File) -> io::Result<T>) -> io::Result<T> {
        match &self.active {
            Some(active) => f(&active.file),
            None => f(&File::open(path)?),
        }
    }

    /// The last entry if it is in memory (active, non-empty).
    pub fn last_cached(&self) -> Option<E> {
        self.active.as_ref().and_then(|a| a.tail.back()).copied()
    }

    /// The last entry, if any: from memory when active.
    pub fn last(&self, path: &Path) -> io::Result<Option<E>> {
        if let Some(e) = self.active.as_ref().and_then(|a| a.tail.back()) {
            return Ok(Some(*e));
        }
        match self.entries {
            0 => Ok(None),
            n => self
                .with_file(path, |f| read_entry(f, path, n - 1))
                .map(Some),
        }
    }

    /// The entry with the largest key `<= target`, if any. Served from the tail cache
    /// when the answer lies in it, else by a binary search of the file's entries
    /// before the cache.
    pub fn lookup(&self, path: &Path, target: i64) -> io::Result<Option<E>> {
        let mut before = self.entries;
        if let Some(active) = &self.active {
            let tail = &active.tail;
            if tail.front().is_some_and(|e| e.key() <= target) {
                let i = tail.partition_point(|e| e.key() <= target);
                return Ok(tail.get(i.saturating_sub(1)).copied());
            }
            before -= tail.len() as u64;
        }
        if before == 0 {
            return Ok(None);
        }
        self.with_file(path, |f| search_file(f, path, target, before))
    }

    /// Appends entries (active only) with one positioned write: file first, then
    /// memory, so a failed write leaves memory describing the old file (the caller
    /// then [`truncate`](Index::truncate)s the file back).
    pub fn append(&mut self, new: &[E]) -> io::Result<()> {
        if new.is_empty() {
            return Ok(());
        }
        let Some(active) = &mut self.active else {
            return Err(io::Error::other("append to a closed index"));
        };
        let mut bytes = Vec::with_capacity(new.len() * E::SIZE);
        for e in new {
            e.encode_into(&mut bytes);
        }
        active
            .file
            .write_all_at(&bytes, self.entries * E::SIZE as u64)?;
        self.entries += new.len() as u64;
        let skip = new.len().saturating_sub(TAIL_ENTRIES);
        for e in new.iter().skip(skip) {
            if active.tail.len() == TAIL_ENTRIES {
                active.tail.pop_front();
            }
            active.tail.push_back(*e);
        }
        Ok(())
    }

    /// Cuts the index back to `len` entries, file and memory (rollback of a failed
    /// append). The tail cache is refilled from the file; should that read fail, the
    /// cache stays a shorter (still correct) suffix.
    pub fn truncate(&mut self, path: &Path, len: u64) -> io::Result<()> {
        let len = len.min(self.entries);
        let removed = self.entries - len;
        let size = len * E::SIZE as u64;
        match &self.active {
            Some(active) => active.file.set_len(size)?,
            None => OpenOptions::new().write(true).open(path)?.set_len(size)?,
        }
        self.entries = len;
        if let Some(active) = &mut self.active {
            let keep = (active.tail.len() as u64).saturating_sub(removed) as usize;
            active.tail.truncate(keep);
            let want = len.min(TAIL_ENTRIES as u64);
            let have = active.tail.len() as u64;
            if have < want {
                let missing = read_entries::<E>(&active.file, path, len - want, len - have)?;
                for e in missing.into_iter().rev() {
                    active.tail.push_front(e);
                }
            }
        }
        Ok(())
    }

    pub fn sync(&self, path: &Path) -> io::Result<()> {
        self.with_file(path, File::sync_data)
    }

    /// Drops the descriptor and the cached entries: the segment is no longer active.
    pub fn close(&mut self) {
        self.active = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn linear<E: Entry>(entries: &[E], target: i64) -> Option<E> {
        entries.iter().rev().find(|e| e.key() <= target).copied()
    }

    proptest! {
        #[test]
        fn offset_lookup_matches_linear_scan(
            steps in proptest::collection::vec((1u32..50, 1u32..5000), 0..200),
            targets in proptest::collection::vec(-5i64..12_000, 1..40),
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
            let mut active = Index::create_active(&path)?;
            for chunk in entries.chunks(7) {
                active.append(chunk)?;
            }
            prop_assert_eq!(active.cached(), entries.len().min(TAIL_ENTRIES));
            let closed_path = dir.path().join("y.index");
            let closed = Index::<OffsetEntry>::create_closed(&closed_path, &entries)?;
            let reloaded = Index::<OffsetEntry>::load_active(&path)?;
            prop_assert_eq!(closed.len(), entries.len() as u64);
            prop_assert_eq!(reloaded.cached(), entries.len().min(TAIL_ENTRIES));
            for t in targets {
                let want = linear(&entries, t);
                prop_assert_eq!(active.lookup(&path, t)?, want);
                prop_assert_eq!(closed.lookup(&closed_path, t)?, want);
                prop_assert_eq!(reloaded.lookup(&path, t)?, want);
            }
            prop_assert_eq!(closed.last(&closed_path)?, entries.last().copied());
            prop_assert_eq!(active.last(&path)?, entries.last().copied());
            active.close();
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
        /// shorter index would have, cache included.
        #[test]
        fn truncate_restores_the_tail(n in 0u32..300, cut in 0u32..300) {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("t.index");
            let entries: Vec<OffsetEntry> = (0..n)
                .map(|i| OffsetEntry { relative_offset: 3 * i + 1, position: 10 * i })
                .collect();
            let mut idx = Index::create_active(&path)?;
            idx.append(&entries)?;
            let keep = n.saturating_sub(cut);
            idx.truncate(&path, u64::from(keep))?;
            let kept = &entries[..keep as usize];
            prop_assert_eq!(idx.len(), u64::from(keep));
            prop_assert_eq!(idx.cached(), kept.len().min(TAIL_ENTRIES));
            prop_assert_eq!(std::fs::metadata(&path)?.len(), u64::from(keep) * 8);
            for t in 0..(3 * i64::from(n) + 3) {
                prop_assert_eq!(idx.lookup(&path, t)?, linear(kept, t));
            }
            prop_assert_eq!(idx.last(&path)?, kept.last().copied());
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
        let mut active = Index::create_active(&path).expect("create");
        for chunk in entries.chunks(100) {
            active.append(chunk).expect("append");
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
    fn truncate_and_append_to_closed() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("z.index");
        let e = |o| OffsetEntry {
            relative_offset: o,
            position: o * 10,
        };
        let mut idx = Index::create_active(&path).expect("create");
        idx.append(&[e(1), e(2)]).expect("append");
        idx.append(&[e(3)]).expect("append");
        idx.truncate(&path, 2).expect("truncate");
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 16);
        assert_eq!(idx.last(&path).expect("io"), Some(e(2)));
        idx.close();
        assert!(idx.append(&[e(4)]).is_err());
        idx.truncate(&path, 1).expect("truncate closed");
        assert_eq!(idx.last(&path).expect("io"), Some(e(1)));
    }

    #[test]
    fn in_memory_sizes() {
        // The numbers the module docs and lib.rs quote.
        assert_eq!(std::mem::size_of::<Index<OffsetEntry>>(), 16);
        assert_eq!(std::mem::size_of::<TimeEntry>(), 16);
        assert_eq!(std::mem::size_of::<OffsetEntry>(), 8);
    }
}
