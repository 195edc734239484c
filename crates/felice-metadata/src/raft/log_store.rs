//! [`FileLogStore`]: the Raft log and vote of one node, in a folder.
//!
//! Files:
//! - `log`: frames `[length u32][crc32c u32][bincode entry]`, in index order.
//!   A torn or corrupt tail (a crash mid-append) is cut off at open.
//! - `vote`: the current vote (bincode), replaced atomically and fsynced
//!   before `save_vote` returns.
//! - `purged`: the last purged log id; written (fsynced) before the log file
//!   is rewritten without the purged prefix, so a crash in between leaves a
//!   log whose purged entries are dropped again at open.
//! - `committed`: the last known committed log id, an optimisation only
//!   (a restarted node applies up to it at once); not fsynced.
//!
//! Invariants: entries in memory are exactly the entries in `log` after the
//! purged id, contiguous; an append is fsynced before openraft is told it is
//! flushed.
//!
//! Memory: every entry since the last purge stays in memory (openraft purges
//! after each snapshot, keeping `max_in_snapshot_log_to_keep`), so the bound
//! is the snapshot policy's.
//!
//! Concurrency: the state sits behind one mutex; file I/O runs on blocking
//! threads, never on a runtime worker.

use super::{io_error, LogId, MetaRaft, StorageError};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogState, RaftLogId, RaftLogReader, Vote};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

const FRAME_HEADER_BYTES: usize = 8;
/// Largest entry accepted when reading the log back: a corrupt length must
/// not make us allocate gigabytes. A controller batch is far smaller (a
/// topic of 100,000 partitions encodes to ~3 MB).
const MAX_ENTRY_BYTES: usize = 64 << 20;

/// The log store; cheap to clone (clones share the state, which is how
/// openraft's log reader reads while the store appends).
#[derive(Clone)]
pub struct FileLogStore {
    inner: Arc<Mutex<LogFiles>>,
}

struct LogFiles {
    dir: PathBuf,
    file: File,
    /// Entries after `last_purged`, by index.
    entries: BTreeMap<u64, Entry<MetaRaft>>,
    /// File position of each entry's frame.
    positions: BTreeMap<u64, u64>,
    end: u64,
    last_purged: Option<LogId>,
    vote: Option<Vote<u64>>,
    committed: Option<LogId>,
}

fn lock(m: &Mutex<LogFiles>) -> MutexGuard<'_, LogFiles> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Writes `bytes` to `dir/name` atomically: a temporary file, fsynced when
/// `durable`, renamed over the old one, and the folder fsynced.
fn replace_file(dir: &Path, name: &str, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    if durable {
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    if durable {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn read_optional<T: serde::de::DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => bincode::deserialize(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn frame(entry: &Entry<MetaRaft>) -> std::io::Result<Vec<u8>> {
    let body = bincode::serialize(entry)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// The entry framed at the start of `data`, and the frame's length; `None`
/// at the end, a torn frame or a corrupt one.
fn read_frame(data: &[u8]) -> Option<(Entry<MetaRaft>, usize)> {
    let len = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(data.get(4..8)?.try_into().ok()?);
    if len > MAX_ENTRY_BYTES {
        return None;
    }
    let body = data.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let entry = bincode::deserialize(body).ok()?;
    Some((entry, FRAME_HEADER_BYTES + len))
}

impl FileLogStore {
    /// Opens (or creates) the store in `dir`. Blocking.
    pub fn open(dir: &Path) -> std::io::Result<FileLogStore> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("log");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        let last_purged: Option<LogId> = read_optional(&dir.join("purged"))?;
        let vote = read_optional(&dir.join("vote"))?;
        let committed = read_optional::<Option<LogId>>(&dir.join("committed"))?.flatten();
        let mut entries = BTreeMap::new();
        let mut positions = BTreeMap::new();
        let mut pos = 0usize;
        while let Some((entry, len)) = data.get(pos..).and_then(read_frame) {
            let index = entry.log_id.index;
            // A purge whose rewrite did not happen: those entries are gone.
            if last_purged.is_none_or(|p| index > p.index) {
                positions.insert(index, pos as u64);
                entries.insert(index, entry);
            }
            pos += len;
        }
        if pos < data.len() {
            tracing::warn!(
                path = %path.display(),
                valid_bytes = pos,
                file_bytes = data.len(),
                "cutting a torn tail off the metadata Raft log"
            );
            file.set_len(pos as u64)?;
            file.sync_all()?;
        }
        Ok(FileLogStore {
            inner: Arc::new(Mutex::new(LogFiles {
                dir: dir.to_path_buf(),
                file,
                entries,
                positions,
                end: pos as u64,
                last_purged,
                vote,
                committed,
            })),
        })
    }

    /// The entries from `from` to `to` (inclusive) for an observer's fetch,
    /// up to `max_bytes` of their encoding (always at least one), with the
    /// last purged log id (entries at or before it are only in the snapshot).
    pub fn read_range(
        &self,
        from: u64,
        to: u64,
        max_bytes: u64,
    ) -> (Option<LogId>, Vec<Entry<MetaRaft>>) {
        let inner = lock(&self.inner);
        let mut out = Vec::new();
        let mut bytes = 0u64;
        if from <= to {
            for e in inner.entries.range(from..=to).map(|(_, e)| e) {
                let size = bincode::serialized_size(e).unwrap_or(u64::MAX);
                if !out.is_empty() && bytes.saturating_add(size) > max_bytes {
                    break;
                }
                bytes = bytes.saturating_add(size);
                out.push(e.clone());
            }
        }
        (inner.last_purged, out)
    }

    /// Runs `f` on the state on a blocking thread.
    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut LogFiles) -> R + Send + 'static,
    ) -> Result<R, StorageError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&inner)))
            .await
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))
    }
}

impl LogFiles {
    fn append(&mut self, entries: Vec<Entry<MetaRaft>>) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let mut buf = Vec::new();
        let mut at = Vec::with_capacity(entries.len());
        for e in &entries {
            at.push((e.log_id.index, self.end + buf.len() as u64));
            buf.extend_from_slice(&frame(e)?);
        }
        self.file.write_all_at(&buf, self.end)?;
        self.file.sync_data()?;
        self.end += buf.len() as u64;
        for ((index, pos), e) in at.into_iter().zip(entries) {
            self.positions.insert(index, pos);
            self.entries.insert(index, e);
        }
        Ok(())
    }

    /// Removes the entries at `index` and after.
    fn truncate(&mut self, index: u64) -> std::io::Result<()> {
        let Some(&pos) = self.positions.get(&index) else {
            return Ok(());
        };
        self.file.set_len(pos)?;
        self.file.sync_data()?;
        self.end = pos;
        self.entries.split_off(&index);
        self.positions.split_off(&index);
        Ok(())
    }

    /// Drops the entries up to `log_id` and rewrites the log without them.
    fn purge(&mut self, log_id: LogId) -> std::io::Result<()> {
        let bytes = bincode::serialize(&log_id)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        replace_file(&self.dir, "purged", &bytes, true)?;
        self.last_purged = Some(log_id);
        self.entries = self.entries.split_off(&(log_id.index + 1));
        let mut buf = Vec::new();
        let mut positions = BTreeMap::new();
        for (index, e) in &self.entries {
            positions.insert(*index, buf.len() as u64);
            buf.extend_from_slice(&frame(e)?);
        }
        replace_file(&self.dir, "log", &buf, true)?;
        self.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join("log"))?;
        self.positions = positions;
        self.end = buf.len() as u64;
        tracing::info!(index = log_id.index, "purged the metadata log");
        Ok(())
    }
}

impl RaftLogReader<MetaRaft> for FileLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<MetaRaft>>, StorageError> {
        let inner = lock(&self.inner);
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<MetaRaft> for FileLogStore {
    type LogReader = FileLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<MetaRaft>, StorageError> {
        let inner = lock(&self.inner);
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|e| *e.get_log_id())
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        let vote = *vote;
        let bytes = bincode::serialize(&vote)
            .map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.blocking(move |inner| {
            replace_file(&inner.dir, "vote", &bytes, true)?;
            inner.vote = Some(vote);
            Ok::<_, std::io::Error>(())
        })
        .await?
        .map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        Ok(lock(&self.inner).vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes = bincode::serialize(&committed)
            .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
        self.blocking(move |inner| {
            replace_file(&inner.dir, "committed", &bytes, false)?;
            inner.committed = committed;
            Ok::<_, std::io::Error>(())
        })
        .await?
        .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(lock(&self.inner).committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<MetaRaft>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<MetaRaft>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let result = self.blocking(move |inner| inner.append(entries)).await?;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = io_error(ErrorSubject::Logs, ErrorVerb::Write, &e);
                callback.log_io_completed(Err(e));
                Err(err)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.blocking(move |inner| inner.truncate(log_id.index))
            .await?
            .map_err(|e| io_error(ErrorSubject::Log(log_id), ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.blocking(move |inner| inner.purge(log_id))
            .await?
            .map_err(|e| io_error(ErrorSubject::Log(log_id), ErrorVerb::Delete, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::MetadataBatch;
    use crate::MetadataRecord;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(term: u64, index: u64) -> Entry<MetaRaft> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(MetadataBatch(vec![MetadataRecord::Topic {
                name: format!("t{index}"),
                topic_id: uuid::Uuid::from_u128(u128::from(index)),
            }])),
        }
    }

    fn indexes(store: &FileLogStore) -> Vec<u64> {
        lock(&store.inner).entries.keys().copied().collect()
    }

    #[tokio::test]
    async fn reopen_keeps_appends_truncations_purges_and_the_vote_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = FileLogStore::open(dir.path()).expect("open");
        lock(&store.inner)
            .append((1..=6).map(|i| entry(1, i)).collect())
            .expect("append");
        lock(&store.inner).truncate(5).expect("truncate");
        lock(&store.inner)
            .append(vec![entry(2, 5)])
            .expect("append after truncate");
        lock(&store.inner)
            .purge(LogId::new(CommittedLeaderId::new(1, 1), 2))
            .expect("purge");
        store.save_vote(&Vote::new(2, 1)).await.expect("save vote");
        drop(store);

        let mut store = FileLogStore::open(dir.path()).expect("reopen");
        assert_eq!(indexes(&store), vec![3, 4, 5]);
        assert_eq!(
            store.read_vote().await.expect("vote"),
            Some(Vote::new(2, 1))
        );
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(2));
        assert_eq!(
            state.last_log_id.map(|l| (l.leader_id.term, l.index)),
            Some((2, 5))
        );
        let read = store.try_get_log_entries(4..).await.expect("read");
        assert_eq!(read, vec![entry(1, 4), entry(2, 5)]);
        drop(store);

        // A torn last frame (a crash mid-append) is cut at every byte.
        let path = dir.path().join("log");
        let whole = std::fs::read(&path).expect("read log");
        let last =
            lock(&FileLogStore::open(dir.path()).expect("open").inner).positions[&5] as usize;
        for cut in last + 1..whole.len() {
            std::fs::write(&path, &whole[..cut]).expect("tear");
            let store = FileLogStore::open(dir.path()).expect("reopen torn");
            assert_eq!(indexes(&store), vec![3, 4], "cut at {cut}");
            assert_eq!(std::fs::metadata(&path).expect("len").len(), last as u64);
        }
    }
}
