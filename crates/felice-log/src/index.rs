//! Sparse segment indexes in Kafka's file format: `.index` (8-byte entries: relative
//! offset u32, position u32) and `.timeindex` (12-byte entries: timestamp i64,
//! relative offset u32), all big-endian.
//!
//! Owns one index file and, while its segment is ACTIVE, a copy of its entries in
//! memory (bounded by `segment.index.bytes`: the log rolls when full). A CLOSED index
//! keeps nothing in memory but its entry count; lookups binary-search the file with
//! positioned reads, opening it on demand so closed segments hold no index descriptor.
//!
//! Invariants: entries are sorted by key (relative offset, resp. timestamp) and keys
//! strictly increase; the file holds exactly `len()` entries (appends write the file
//! before extending memory, truncation rolls both back). Not synchronised: the owning
//! `Log` is used under the partition's lock.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

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

#[derive(Debug)]
enum State<E> {
    Active { file: File, entries: Vec<E> },
    Closed { entries: u64 },
}

#[derive(Debug)]
pub(crate) struct Index<E: Entry> {
    path: PathBuf,
    state: State<E>,
}

fn corrupt_entry(path: &Path, at: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unreadable index entry {at} in {}", path.display()),
    )
}

impl<E: Entry> Index<E> {
    /// Creates (or truncates) the file and returns an active index holding `entries`.
    pub fn create_active(path: &Path, entries: Vec<E>) -> io::Result<Index<E>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        let mut bytes = Vec::with_capacity(entries.len() * E::SIZE);
        for e in &entries {
            e.encode_into(&mut bytes);
        }
        file.write_all_at(&bytes, 0)?;
        Ok(Index {
            path: path.to_path_buf(),
            state: State::Active { file, entries },
        })
    }

    /// Writes `entries` to a fresh file and returns a closed index over it.
    #[cfg(test)]
    pub fn create_closed(path: &Path, entries: &[E]) -> io::Result<Index<E>> {
        let mut index = Index::create_active(path, entries.to_vec())?;
        index.close();
        Ok(index)
    }

    /// A closed index over an existing file of `entries` entries (already checked).
    pub fn closed(path: &Path, entries: u64) -> Index<E> {
        Index {
            path: path.to_path_buf(),
            state: State::Closed { entries },
        }
    }

    /// Loads an existing file into memory as an active index.
    pub fn load_active(path: &Path) -> io::Result<Index<E>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        let count = len / E::SIZE as u64;
        let mut bytes = vec![0u8; (count as usize) * E::SIZE];
        file.read_exact_at(&mut bytes, 0)?;
        let mut entries = Vec::with_capacity(count as usize);
        for (i, chunk) in bytes.chunks_exact(E::SIZE).enumerate() {
            entries.push(E::decode(chunk).ok_or_else(|| corrupt_entry(path, i as u64))?);
        }
        Ok(Index {
            path: path.to_path_buf(),
            state: State::Active { file, entries },
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        match &self.state {
            State::Active { entries, .. } => entries.len() as u64,
            State::Closed { entries } => *entries,
        }
    }

    /// Entry `i`, from memory when active, from the file when closed.
    fn get(&self, file: Option<&File>, i: u64) -> io::Result<E> {
        match &self.state {
            State::Active { entries, .. } => usize::try_from(i)
                .ok()
                .and_then(|i| entries.get(i))
                .copied()
                .ok_or_else(|| corrupt_entry(&self.path, i)),
            State::Closed { .. } => {
                let file = file.ok_or_else(|| corrupt_entry(&self.path, i))?;
                let mut buf = [0u8; 16];
                let buf = buf
                    .get_mut(..E::SIZE)
                    .ok_or_else(|| corrupt_entry(&self.path, i))?;
                file.read_exact_at(buf, i * E::SIZE as u64)?;
                E::decode(buf).ok_or_else(|| corrupt_entry(&self.path, i))
            }
        }
    }

    fn open_if_closed(&self) -> io::Result<Option<File>> {
        match self.state {
            State::Active { .. } => Ok(None),
            State::Closed { entries: 0 } => Ok(None),
            State::Closed { .. } => File::open(&self.path).map(Some),
        }
    }

    /// The last entry, if any.
    pub fn last(&self) -> io::Result<Option<E>> {
        let n = self.len();
        if n == 0 {
            return Ok(None);
        }
        let file = self.open_if_closed()?;
        self.get(file.as_ref(), n - 1).map(Some)
    }

    /// The entry with the largest key `<= target`, if any.
    pub fn lookup(&self, target: i64) -> io::Result<Option<E>> {
        let n = self.len();
        if n == 0 {
            return Ok(None);
        }
        let file = self.open_if_closed()?;
        // Invariant of the loop: entries [0, lo) have key <= target, [hi, n) > target.
        let (mut lo, mut hi) = (0u64, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.get(file.as_ref(), mid)?.key() <= target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            Ok(None)
        } else {
            self.get(file.as_ref(), lo - 1).map(Some)
        }
    }

    /// Appends entries (active only): file first, then memory, so a failed write leaves
    /// memory describing the old file length (the caller truncates the file back).
    pub fn append(&mut self, new: &[E]) -> io::Result<()> {
        if new.is_empty() {
            return Ok(());
        }
        let State::Active { file, entries } = &mut self.state else {
            return Err(io::Error::other(format!(
                "append to closed index {}",
                self.path.display()
            )));
        };
        let mut bytes = Vec::with_capacity(new.len() * E::SIZE);
        for e in new {
            e.encode_into(&mut bytes);
        }
        file.write_all_at(&bytes, entries.len() as u64 * E::SIZE as u64)?;
        entries.extend_from_slice(new);
        Ok(())
    }

    /// Cuts the file back to `len` entries (rollback of a failed append).
    pub fn truncate_file(&self, len: u64) -> io::Result<()> {
        let size = len * E::SIZE as u64;
        match &self.state {
            State::Active { file, .. } => file.set_len(size),
            State::Closed { .. } => OpenOptions::new()
                .write(true)
                .open(&self.path)?
                .set_len(size),
        }
    }

    pub fn sync(&self) -> io::Result<()> {
        match &self.state {
            State::Active { file, .. } => file.sync_data(),
            State::Closed { .. } => File::open(&self.path)?.sync_data(),
        }
    }

    /// Drops the in-memory entries and the descriptor: the segment is no longer active.
    pub fn close(&mut self) {
        let n = self.len();
        self.state = State::Closed { entries: n };
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
            let mut active = Index::create_active(&path, Vec::new())?;
            for chunk in entries.chunks(7) {
                active.append(chunk)?;
            }
            let closed_path = dir.path().join("y.index");
            let closed = Index::<OffsetEntry>::create_closed(&closed_path, &entries)?;
            let reloaded = Index::<OffsetEntry>::load_active(&path)?;
            prop_assert_eq!(closed.len(), entries.len() as u64);
            for t in targets {
                let want = linear(&entries, t);
                prop_assert_eq!(active.lookup(t)?, want);
                prop_assert_eq!(closed.lookup(t)?, want);
                prop_assert_eq!(reloaded.lookup(t)?, want);
            }
            prop_assert_eq!(closed.last()?, entries.last().copied());
            active.close();
            prop_assert_eq!(active.last()?, entries.last().copied());
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
                prop_assert_eq!(closed.lookup(t)?, want);
                prop_assert_eq!(active.lookup(t)?, want);
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
        let mut idx = Index::create_active(&path, vec![e(1), e(2)]).expect("create");
        idx.append(&[e(3)]).expect("append");
        idx.truncate_file(2).expect("truncate");
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 16);
        idx.close();
        assert!(idx.append(&[e(4)]).is_err());
    }
}
