//! One log segment: `<base>.log` (record batches verbatim) with its `.index` and
//! `.timeindex`, where `<base>` is the 20-digit base offset.
//!
//! Owns the segment's files, its byte size and next offset, its largest timestamp, the
//! per-segment index state, header scans ([`Segment::find_batch`]) and recovery
//! ([`Segment::recover`]: validate every batch, cut the first torn or corrupt one,
//! rebuild both indexes).
//!
//! Invariants: `size` is the length of valid data in `.log` and batches tile
//! `0..size` exactly; batch offsets increase and lie in `[base_offset, next_offset)`;
//! index entries point at batch starts inside `0..size`. Only the active segment holds
//! a descriptor (its `.log`) and a few cached index entries, some possibly not yet
//! written (see `index.rs`); its index files are opened per batch of entries and may
//! not exist yet. A closed segment is a handful of numbers and its `.log` path (~170 B
//! with the path), always has both index files, and its `.log` is opened on demand
//! through the log's [`FileCache`] (at most [`CLOSED_FILES_OPEN`] descriptors per
//! partition), its indexes per lookup. `.log` descriptors are `Arc<File>` so a reader
//! that got a `ReadSlice` keeps reading after the segment is deleted or evicted. Not
//! synchronised: used under the owning `Log`'s lock (reads of `Arc<File>` clones and
//! the `FileCache`, which locks itself, excepted).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use felice_wire::{
    crc32c_append, validate_stored_batch, BatchError, BatchHeader, BATCH_HEADER_LEN, CRC_START,
};

use crate::index::{Index, OffsetEntry, TimeEntry};
use crate::LogError;

/// Read-ahead of sequential recovery scans: one syscall per MiB of small batches.
const RECOVERY_CHUNK: usize = 1 << 20;
/// Read-ahead of header scans between an index entry and the target (~2 index
/// intervals of small batches).
const SCAN_CHUNK: usize = 8 << 10;
/// Index entries recovery buffers before writing them (4 KiB of offset entries).
const RECOVERY_INDEX_BATCH: usize = 512;
/// Recovery validates batches up to this size in memory (CRC and record framing);
/// larger ones (only possible with a huge `max.message.bytes`, or a corrupt length)
/// get a streaming CRC check without the framing walk, so a forged length can never
/// make recovery allocate more than this.
const MAX_IN_MEMORY_BATCH: usize = 16 << 20;

pub(crate) fn file_name(base_offset: i64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

/// Parses `00000000000000001234.log` into 1234.
pub(crate) fn parse_log_file_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Closed segments' `.log` descriptors kept open per partition. A catch-up consumer
/// reads a closed segment front to back in many fetches; one slot serves it without
/// an `open` per fetch. Two readers in different closed segments alternate the slot
/// and pay one `open` (~2 µs) per fetch, small next to the fetch itself. Worst case
/// per partition: 1 (active `.log`) + 1 (this cache) + one per in-flight `ReadSlice`;
/// at rest (no reads since open) 1. Kafka keeps every segment open instead.
pub(crate) const CLOSED_FILES_OPEN: usize = 1;

/// Recently used `.log` descriptors of closed segments (LRU, most recent last), so
/// descriptors per partition do not grow with its segment count. Locks itself: it is
/// filled from `&Log` reads. Entries must be dropped ([`FileCache::forget`]) when their
/// segment's files are deleted or rewritten, or the disk space stays held.
#[derive(Debug, Default)]
pub(crate) struct FileCache {
    open: Mutex<Vec<(i64, Arc<File>)>>,
}

impl FileCache {
    fn with<T>(&self, f: impl FnOnce(&mut Vec<(i64, Arc<File>)>) -> T) -> T {
        // A panic while holding this lock cannot leave the list inconsistent.
        f(&mut self.open.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The descriptor of the closed segment at `base`, opened (read-only) if needed.
    pub fn get(&self, base: i64, path: &Path) -> Result<Arc<File>, LogError> {
        let cached = self.with(|open| {
            let i = open.iter().position(|(b, _)| *b == base)?;
            let entry = open.remove(i);
            let file = entry.1.clone();
            open.push(entry);
            Some(file)
        });
        if let Some(file) = cached {
            return Ok(file);
        }
        let file = Arc::new(File::open(path).map_err(io_err(path))?);
        self.insert(base, file.clone());
        Ok(file)
    }

    /// Makes `file` the most recent entry, evicting the least recent beyond the bound.
    pub fn insert(&self, base: i64, file: Arc<File>) {
        self.with(|open| {
            open.retain(|(b, _)| *b != base);
            open.push((base, file));
            if open.len() > CLOSED_FILES_OPEN {
                open.remove(0);
            }
        });
    }

    /// Drops the descriptor of the segment at `base`, if cached.
    pub fn forget(&self, base: i64) {
        self.with(|open| open.retain(|(b, _)| *b != base));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.with(|open| open.len())
    }
}

/// Index capacity derived from `segment.index.bytes`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexLimits {
    pub max_offset_entries: u64,
    pub max_time_entries: u64,
    pub interval_bytes: u64,
}

impl IndexLimits {
    /// Room for one more offset entry.
    pub fn offset_room(&self, len: u64) -> bool {
        len < self.max_offset_entries
    }
    /// Room for one more time entry, keeping one slot for the final entry written
    /// when the segment closes.
    pub fn time_room(&self, len: u64) -> bool {
        len + 1 < self.max_time_entries
    }
}

/// Where a segment stands in Kafka's sparse-index rule. Append and recovery
/// both feed every batch through [`IndexCursor::on_batch`], so a recovered
/// segment gets exactly the entries its appends wrote.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexCursor {
    pub bytes_since_index: u64,
    pub max_timestamp: i64,
    pub offset_of_max: i64,
    pub last_time_ts: i64,
    pub time_entry_skipped: bool,
}

impl IndexCursor {
    /// Accounts one batch of `len` bytes at `position` whose last offset is
    /// `last` and whose max timestamp is `batch_max_ts`. Kafka's rule: a batch
    /// gets index entries once more than `interval_bytes` went by without one
    /// (so never a segment's first batch); the time entry only when the max
    /// timestamp grew. `offsets_before`/`times_before` count the entries
    /// already in the index files (for the room checks). Returns whether the
    /// batch reached an index point.
    #[allow(clippy::too_many_arguments)]
    pub fn on_batch(
        &mut self,
        limits: &IndexLimits,
        base_offset: i64,
        position: u64,
        len: u64,
        last: i64,
        batch_max_ts: i64,
        (offsets_before, offsets): (u64, &mut Vec<OffsetEntry>),
        (times_before, times): (u64, &mut Vec<TimeEntry>),
    ) -> bool {
        if batch_max_ts > self.max_timestamp {
            self.max_timestamp = batch_max_ts;
            self.offset_of_max = last;
        }
        let reached = self.bytes_since_index > limits.interval_bytes;
        if reached {
            let rel = |o: i64| u32::try_from(o - base_offset).unwrap_or(u32::MAX);
            if limits.offset_room(offsets_before + offsets.len() as u64) {
                offsets.push(OffsetEntry {
                    relative_offset: rel(last),
                    position: position as u32,
                });
            }
            if self.max_timestamp > self.last_time_ts {
                if limits.time_room(times_before + times.len() as u64) {
                    times.push(TimeEntry {
                        timestamp: self.max_timestamp,
                        relative_offset: rel(self.offset_of_max),
                    });
                    self.last_time_ts = self.max_timestamp;
                } else {
                    self.time_entry_skipped = true;
                }
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += len;
        reached
    }
}

/// A window of file bytes for sequential scans: one positioned read per chunk.
pub(crate) struct FileWindow<'f> {
    file: &'f File,
    end: u64,
    start: u64,
    buf: Vec<u8>,
    chunk: usize,
}

impl<'f> FileWindow<'f> {
    pub(crate) fn new(file: &'f File, end: u64, chunk: usize) -> FileWindow<'f> {
        FileWindow {
            file,
            end,
            start: 0,
            buf: Vec::new(),
            chunk,
        }
    }

    /// `len` bytes at `pos`, or `None` when they run past `end`.
    pub(crate) fn slice(&mut self, pos: u64, len: usize) -> io::Result<Option<&[u8]>> {
        let Some(stop) = pos.checked_add(len as u64).filter(|s| *s <= self.end) else {
            return Ok(None);
        };
        let have = pos >= self.start && stop <= self.start + self.buf.len() as u64;
        if !have {
            let want = (len.max(self.chunk) as u64).min(self.end - pos) as usize;
            self.buf.resize(want, 0);
            self.file.read_exact_at(&mut self.buf, pos)?;
            self.start = pos;
        }
        let from = (pos - self.start) as usize;
        Ok(self.buf.get(from..from + len))
    }
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: i64,
    pub log_path: PathBuf,
    /// The `.log` descriptor while active (read-write); `None` when closed (see
    /// [`Segment::file`]).
    pub file: Option<Arc<File>>,
    /// Bytes of valid batches in `.log`.
    pub size: u64,
    /// Offset after the last batch (the next segment's base when closed and trusted).
    pub next_offset: i64,
    /// Largest batch maxTimestamp, -1 when unknown.
    pub max_timestamp: i64,
    /// Last offset of the first batch reaching `max_timestamp`.
    pub offset_of_max_timestamp: i64,
    /// Wall-clock start of the segment's roll clock (`segment.ms`); `None` while empty.
    pub roll_base_ms: Option<i64>,
    pub bytes_since_index: u64,
    pub offset_index: Index<OffsetEntry>,
    pub time_index: Index<TimeEntry>,
    /// `.log` written since the last fsync (for a closed segment: any of its files).
    pub dirty: bool,
    /// A time index entry was left out for lack of room (`segment.index.bytes`), so
    /// the segment's max timestamp may be neither the last entry's nor found by a
    /// reopen's scan after the last offset entry: closing the log must write the final
    /// entry. (Otherwise a clean close writes nothing to the time index.)
    pub time_entry_skipped: bool,
}

/// Outcome of recovering one segment.
pub(crate) struct Recovered {
    pub segment: Segment,
    pub truncated_bytes: u64,
}

fn open_log_file(path: &Path, create: bool, truncate: bool) -> Result<File, LogError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(truncate)
        .open(path)
        .map_err(io_err(path))
}

fn relative(base: i64, offset: i64) -> Option<u32> {
    u32::try_from(offset.checked_sub(base)?).ok()
}

impl Segment {
    pub fn paths(dir: &Path, base: i64) -> [PathBuf; 3] {
        [
            dir.join(file_name(base, "log")),
            dir.join(file_name(base, "index")),
            dir.join(file_name(base, "timeindex")),
        ]
    }

    pub fn index_path(&self) -> PathBuf {
        self.log_path.with_extension("index")
    }

    pub fn time_index_path(&self) -> PathBuf {
        self.log_path.with_extension("timeindex")
    }

    /// The active segment's `.log` descriptor (an error if the segment is closed,
    /// which would be a bug of the caller).
    pub fn active_file(&self) -> Result<&Arc<File>, LogError> {
        self.file.as_ref().ok_or_else(|| LogError::Io {
            path: self.log_path.clone(),
            source: io::Error::other("write to a closed segment"),
        })
    }

    /// The `.log` descriptor: the active one, else from (or into) `cache`.
    pub fn file(&self, cache: &FileCache) -> Result<Arc<File>, LogError> {
        match &self.file {
            Some(file) => Ok(file.clone()),
            None => cache.get(self.base_offset, &self.log_path),
        }
    }

    /// A new, empty, active segment: creates (or empties) only the `.log`; the index
    /// files follow with their first entries (an earlier file at that base is then
    /// truncated) or when the segment closes.
    pub fn create(dir: &Path, base_offset: i64) -> Result<Segment, LogError> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let file = open_log_file(&log_path, true, true)?;
        Ok(Segment {
            base_offset,
            file: Some(Arc::new(file)),
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            roll_base_ms: None,
            bytes_since_index: 0,
            offset_index: Index::new_active(),
            time_index: Index::new_active(),
            // Nothing written yet; the new file's directory entry is the log's concern.
            dirty: false,
            time_entry_skipped: false,
            log_path,
        })
    }

    /// Opens a segment below the recovery point without reading its data, after cheap
    /// sanity checks of the index files (sizes, last entries in range). Returns `None`
    /// when a check fails: the caller then recovers the segment.
    ///
    /// `next_base`: the following segment's base, or `None` for the last segment, which
    /// is opened active and must end exactly at `recovery_point` (checked by scanning
    /// headers from its last index entry: at most about one index interval).
    pub fn open_trusted(
        dir: &Path,
        base_offset: i64,
        next_base: Option<i64>,
        recovery_point: i64,
        now_ms: i64,
    ) -> Result<Option<Segment>, LogError> {
        let [log_path, index_path, time_path] = Segment::paths(dir, base_offset);
        let size = fs::metadata(&log_path).map_err(io_err(&log_path))?.len();
        // The active segment creates its index files lazily: for the last segment a
        // missing one is empty. A closed segment always has both.
        let index_file_len = |path: &Path| match fs::metadata(path) {
            Ok(m) => Some(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound && next_base.is_none() => Some(0),
            Err(_) => None,
        };
        let (Some(index_len), Some(time_len)) =
            (index_file_len(&index_path), index_file_len(&time_path))
        else {
            return Ok(None);
        };
        if index_len % 8 != 0 || time_len % 12 != 0 || size > u64::from(u32::MAX) {
            return Ok(None);
        }
        let offset_index = Index::<OffsetEntry>::closed(index_len / 8);
        let time_index = Index::<TimeEntry>::closed(time_len / 12);
        let last_entry = offset_index
            .last(&index_path)
            .map_err(io_err(&index_path))?;
        let last_time = time_index.last(&time_path).map_err(io_err(&time_path))?;
        let end = next_base.unwrap_or(recovery_point);
        if let Some(e) = last_entry {
            if u64::from(e.position) >= size || base_offset + i64::from(e.relative_offset) >= end {
                return Ok(None);
            }
        }
        if let Some(t) = last_time {
            if base_offset + i64::from(t.relative_offset) >= end {
                return Ok(None);
            }
        }
        let (max_timestamp, offset_of_max_timestamp) = match last_time {
            Some(t) => (t.timestamp, base_offset + i64::from(t.relative_offset)),
            None => (-1, -1),
        };
        let mut segment = Segment {
            base_offset,
            log_path,
            file: None,
            size,
            next_offset: end,
            max_timestamp,
            offset_of_max_timestamp,
            roll_base_ms: None,
            bytes_since_index: 0,
            offset_index,
            time_index,
            dirty: false,
            time_entry_skipped: false,
        };
        if next_base.is_some() {
            return Ok(Some(segment));
        }
        // The last segment: find its end by scanning the tail after the last index entry.
        let file = Arc::new(open_log_file(&segment.log_path, false, false)?);
        let from = last_entry.map_or(0, |e| u64::from(e.position));
        let mut next =
            last_entry.map_or(base_offset, |e| base_offset + i64::from(e.relative_offset));
        let mut window = FileWindow::new(&file, size, SCAN_CHUNK);
        let mut pos = from;
        let mut first_batch_ts = None;
        while pos < size {
            let Some(head) = window
                .slice(pos, BATCH_HEADER_LEN)
                .map_err(io_err(&segment.log_path))?
            else {
                return Ok(None);
            };
            let Ok(h) = BatchHeader::parse(head) else {
                return Ok(None);
            };
            if pos == 0 {
                first_batch_ts = Some(h.max_timestamp);
            }
            if pos != from && h.base_offset < next {
                return Ok(None);
            }
            if h.max_timestamp > segment.max_timestamp {
                segment.max_timestamp = h.max_timestamp;
                segment.offset_of_max_timestamp = h.last_offset();
            }
            next = h.next_offset();
            pos += h.total_len() as u64;
        }
        let end_offset = if size == 0 { base_offset } else { next };
        if pos != size || end_offset != recovery_point {
            return Ok(None);
        }
        segment.next_offset = end_offset;
        segment.bytes_since_index = size - from;
        if size > 0 {
            // Kafka times a segment from its first batch; a restart must not reset it.
            let first_ts = match first_batch_ts {
                Some(ts) => ts,
                None => {
                    let mut head = [0u8; BATCH_HEADER_LEN];
                    file.read_exact_at(&mut head, 0)
                        .map_err(io_err(&segment.log_path))?;
                    BatchHeader::parse(&head)
                        .map(|h| h.max_timestamp)
                        .unwrap_or(now_ms)
                }
            };
            segment.roll_base_ms = Some(if first_ts < 0 {
                now_ms
            } else {
                first_ts.min(now_ms)
            });
        }
        segment.offset_index = Index::load_active(&index_path).map_err(io_err(&index_path))?;
        segment.time_index = Index::load_active(&time_path).map_err(io_err(&time_path))?;
        segment.file = Some(file);
        Ok(Some(segment))
    }

    /// Reads every batch, validating length, CRC32C, framing and offset order; cuts the
    /// file at the first bad batch and rebuilds both index files. Returns an ACTIVE
    /// segment (the caller closes it if others follow).
    pub fn recover(
        dir: &Path,
        base_offset: i64,
        limits: IndexLimits,
        now_ms: i64,
    ) -> Result<Recovered, LogError> {
        let [log_path, index_path, time_path] = Segment::paths(dir, base_offset);
        let file = open_log_file(&log_path, false, false)?;
        let file_len = file.metadata().map_err(io_err(&log_path))?.len();
        let mut window = FileWindow::new(&file, file_len, RECOVERY_CHUNK);
        let mut pos = 0u64;
        let mut next = base_offset;
        let mut cursor = IndexCursor {
            bytes_since_index: 0,
            max_timestamp: -1,
            offset_of_max: -1,
            last_time_ts: i64::MIN,
            time_entry_skipped: false,
        };
        let mut first_ts = None;
        // Index entries go to the files in batches, so recovering a segment with a
        // full index needs ~10 KiB, not `segment.index.bytes`, of memory. The old
        // files are emptied first: the rebuilt index may never write (fewer entries
        // than a write batch), and their stale entries must not outlive it.
        for path in [&index_path, &time_path] {
            match OpenOptions::new().write(true).open(path) {
                Ok(f) => f.set_len(0).map_err(io_err(path))?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(path)(e)),
            }
        }
        let mut offset_index = Index::<OffsetEntry>::new_active();
        let mut time_index = Index::<TimeEntry>::new_active();
        let mut offset_entries = Vec::with_capacity(RECOVERY_INDEX_BATCH);
        let mut time_entries = Vec::with_capacity(RECOVERY_INDEX_BATCH);
        let corrupt = |position: u64, source: BatchError| LogError::CorruptBatch {
            path: log_path.clone(),
            position,
            source,
        };
        let stop_reason: Option<LogError> = loop {
            if pos >= file_len {
                break None;
            }
            let Some(head) = window
                .slice(pos, BATCH_HEADER_LEN)
                .map_err(io_err(&log_path))?
            else {
                break Some(corrupt(
                    pos,
                    BatchError::Truncated {
                        position: 0,
                        needed: BATCH_HEADER_LEN,
                        available: (file_len - pos) as usize,
                    },
                ));
            };
            let header = match BatchHeader::parse(head) {
                Ok(h) => h,
                Err(e) => break Some(corrupt(pos, e)),
            };
            let total = header.total_len();
            let checked = if total <= MAX_IN_MEMORY_BATCH {
                match window.slice(pos, total).map_err(io_err(&log_path))? {
                    Some(bytes) => validate_stored_batch(bytes).map(|_| ()),
                    None => Err(BatchError::Truncated {
                        position: 0,
                        needed: total,
                        available: (file_len - pos) as usize,
                    }),
                }
            } else {
                check_large_batch(&file, file_len, pos, &header).map_err(io_err(&log_path))?
            };
            if let Err(e) = checked {
                break Some(corrupt(pos, e));
            }
            // baseOffset is outside the CRC: insist on increasing offsets that fit the
            // segment's relative (u32) offsets and positions.
            let last = header.last_offset();
            if header.base_offset < next
                || relative(base_offset, last).is_none()
                || pos + total as u64 > u64::from(u32::MAX)
            {
                break Some(corrupt(
                    pos,
                    BatchError::RecordFraming {
                        position: 0,
                        record: -1,
                        reason: "batch offsets go backwards or overflow the segment",
                    },
                ));
            }
            if first_ts.is_none() {
                first_ts = Some(header.max_timestamp);
            }
            let reached = cursor.on_batch(
                &limits,
                base_offset,
                pos,
                total as u64,
                last,
                header.max_timestamp,
                (offset_index.len(), &mut offset_entries),
                (time_index.len(), &mut time_entries),
            );
            if reached {
                if offset_entries.len() >= RECOVERY_INDEX_BATCH {
                    offset_index
                        .append(|| index_path.clone(), &offset_entries)
                        .map_err(io_err(&index_path))?;
                    offset_entries.clear();
                }
                if time_entries.len() >= RECOVERY_INDEX_BATCH {
                    time_index
                        .append(|| time_path.clone(), &time_entries)
                        .map_err(io_err(&time_path))?;
                    time_entries.clear();
                }
            }
            pos += total as u64;
            next = header.next_offset();
        };
        let truncated_bytes = file_len - pos;
        if let Some(reason) = &stop_reason {
            tracing::warn!(
                segment = %log_path.display(),
                valid_bytes = pos,
                truncated_bytes,
                %reason,
                "recovery cut a torn or corrupt segment tail"
            );
            file.set_len(pos).map_err(io_err(&log_path))?;
        }
        drop(window);
        offset_index
            .append(|| index_path.clone(), &offset_entries)
            .map_err(io_err(&index_path))?;
        time_index
            .append(|| time_path.clone(), &time_entries)
            .map_err(io_err(&time_path))?;
        let roll_base_ms = first_ts.map(|ts| if ts < 0 { now_ms } else { ts.min(now_ms) });
        Ok(Recovered {
            segment: Segment {
                base_offset,
                file: Some(Arc::new(file)),
                size: pos,
                next_offset: next,
                max_timestamp: cursor.max_timestamp,
                offset_of_max_timestamp: cursor.offset_of_max,
                roll_base_ms,
                bytes_since_index: cursor.bytes_since_index,
                offset_index,
                time_index,
                // An empty file left as found has nothing to make durable.
                dirty: pos > 0 || truncated_bytes > 0,
                time_entry_skipped: cursor.time_entry_skipped,
                log_path,
            },
            truncated_bytes,
        })
    }

    /// Header scan of `file` (this segment's `.log`) from `from` to the end of valid
    /// data.
    fn scan<'s>(&'s self, file: &'s File, from: u64) -> HeaderScan<'s> {
        HeaderScan {
            window: FileWindow::new(file, self.size, SCAN_CHUNK),
            pos: from,
            end: self.size,
            path: &self.log_path,
            done: false,
        }
    }

    /// Headers of the batches from the one containing `offset` (or a little
    /// before it: the offset index's lower bound) to the end. `file` is this
    /// segment's `.log` ([`Segment::file`]).
    pub(crate) fn headers_from<'s>(
        &'s self,
        file: &'s File,
        offset: i64,
    ) -> Result<HeaderScan<'s>, LogError> {
        Ok(self.scan(file, self.scan_start(offset)?))
    }

    /// Position where a scan for `offset` may start: the offset index's lower bound.
    fn scan_start(&self, offset: i64) -> Result<u64, LogError> {
        let target = offset.saturating_sub(self.base_offset);
        if target <= 0 {
            return Ok(0);
        }
        let path = self.index_path();
        let entry = self
            .offset_index
            .lookup(&path, target.min(i64::from(u32::MAX)))
            .map_err(io_err(&path))?;
        Ok(entry.map_or(0, |e| u64::from(e.position)))
    }

    /// The first batch whose last offset is `>= offset` (the batch containing
    /// `offset`, or the next one after a gap), with its position. `file` is this
    /// segment's `.log` ([`Segment::file`]).
    pub fn find_batch(
        &self,
        file: &File,
        offset: i64,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        for item in self.scan(file, self.scan_start(offset)?) {
            let (pos, header) = item?;
            if header.last_offset() >= offset {
                return Ok(Some((pos, header)));
            }
        }
        Ok(None)
    }

    /// The last batch end in `(from, to]`, where `from` is a batch start: a read of
    /// `from..end` holds whole batches only. `None` when the batch at `from` ends past
    /// `to`. Starts from the offset index entry nearest below `to`, so it reads at most
    /// about one index interval of headers.
    pub fn last_batch_end(&self, file: &File, from: u64, to: u64) -> Result<Option<u64>, LogError> {
        let path = self.index_path();
        let near = self
            .offset_index
            .lookup_by(
                &path,
                |e| i64::from(e.position),
                to.min(u64::from(u32::MAX)) as i64,
            )
            .map_err(io_err(&path))?
            .map_or(0, |e| u64::from(e.position));
        // An index entry is a batch start; one above `from` is already a batch end.
        let start = near.max(from);
        let mut last = (start > from).then_some(start);
        for item in self.scan(file, start) {
            let (pos, header) = item?;
            let end = pos + header.total_len() as u64;
            if end > to {
                break;
            }
            last = Some(end);
        }
        Ok(last)
    }

    /// The first batch (in offset order) whose maxTimestamp is `>= ts` and whose last
    /// offset is `>= min_offset`.
    pub fn find_batch_by_timestamp(
        &self,
        file: &File,
        ts: i64,
        min_offset: i64,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        // Batches before the one holding the entry's offset all have maxTimestamp < the
        // entry's timestamp <= ts, so the scan may start there.
        let path = self.time_index_path();
        let entry = self.time_index.lookup(&path, ts).map_err(io_err(&path))?;
        let start_offset = entry
            .map_or(self.base_offset, |e| {
                self.base_offset + i64::from(e.relative_offset)
            })
            .max(min_offset);
        for item in self.scan(file, self.scan_start(start_offset)?) {
            let (pos, header) = item?;
            if header.max_timestamp >= ts && header.last_offset() >= min_offset {
                return Ok(Some((pos, header)));
            }
        }
        Ok(None)
    }

    pub fn read_bytes(&self, file: &File, position: u64, len: usize) -> Result<Bytes, LogError> {
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, position)
            .map_err(io_err(&self.log_path))?;
        Ok(Bytes::from(buf))
    }

    /// Largest timestamp for retention: the batches' maximum, or the file's mtime when
    /// no batch carries a timestamp (as Kafka does).
    pub fn largest_timestamp(&self) -> i64 {
        if self.max_timestamp >= 0 {
            return self.max_timestamp;
        }
        fs::metadata(&self.log_path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(i64::MAX, |d| {
                i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
            })
    }

    /// Turns the active segment into a closed one: appends the final time index entry
    /// (so the last entry is the segment's max timestamp on reopen), writes the
    /// pending index entries (creating both index files if needed), drops the cached
    /// entries and the descriptor. Returns the `.log` descriptor. The segment stays
    /// dirty (unsynced) until the next flush.
    pub fn close_active(&mut self) -> Result<Option<Arc<File>>, LogError> {
        if self.file.is_none() {
            return Ok(None); // already closed (a trusted segment at open)
        }
        self.append_final_time_entry()?;
        let path = self.index_path();
        self.offset_index.close(&path).map_err(io_err(&path))?;
        let path = self.time_index_path();
        self.time_index.close(&path).map_err(io_err(&path))?;
        self.dirty = true;
        Ok(self.file.take())
    }

    /// The time index's last entry: from memory for the active segment (no path
    /// built, no syscall: this runs on every append).
    pub fn last_time_entry(&self) -> Result<Option<TimeEntry>, LogError> {
        if let Some(e) = self.time_index.last_cached() {
            return Ok(Some(e));
        }
        let path = self.time_index_path();
        self.time_index.last(&path).map_err(io_err(&path))
    }

    /// Appends (max timestamp, its offset) to the time index unless already last.
    pub fn append_final_time_entry(&mut self) -> Result<(), LogError> {
        let path = self.time_index_path();
        let last = self.time_index.last(&path).map_err(io_err(&path))?;
        let Some(rel) = relative(self.base_offset, self.offset_of_max_timestamp) else {
            return Ok(());
        };
        if self.max_timestamp >= 0 && last.is_none_or(|t| t.timestamp < self.max_timestamp) {
            let entry = TimeEntry {
                timestamp: self.max_timestamp,
                relative_offset: rel,
            };
            let for_write = path.clone();
            self.time_index
                .append(|| for_write, &[entry])
                .map_err(io_err(&path))?;
        }
        self.time_entry_skipped = false;
        Ok(())
    }

    /// Data or index entries not yet durable: pending index entries, or files
    /// written since their last fsync.
    pub fn needs_sync(&self) -> bool {
        self.dirty || self.offset_index.needs_sync() || self.time_index.needs_sync()
    }

    /// Writes the pending index entries, then fsyncs each file written since its last
    /// sync (`.log` when dirty; an active index file when it was written; every file
    /// of a dirty closed segment). A closed segment reopens its files for that: fsync
    /// flushes the file, whichever descriptor asks. Returns whether an index write
    /// (re)created a file, whose directory entry the caller must then make durable.
    pub fn sync(&mut self) -> Result<bool, LogError> {
        if !self.needs_sync() {
            return Ok(false);
        }
        let index_path = self.index_path();
        let time_path = self.time_index_path();
        self.offset_index
            .write_pending(&index_path)
            .map_err(io_err(&index_path))?;
        self.time_index
            .write_pending(&time_path)
            .map_err(io_err(&time_path))?;
        let closed = self.file.is_none();
        if self.dirty {
            match &self.file {
                Some(file) => file.sync_data(),
                None => File::open(&self.log_path).and_then(|f| f.sync_data()),
            }
            .map_err(io_err(&self.log_path))?;
        }
        if self.dirty || !closed {
            self.offset_index
                .sync(&index_path)
                .map_err(io_err(&index_path))?;
            self.time_index
                .sync(&time_path)
                .map_err(io_err(&time_path))?;
        }
        self.dirty = false;
        let created = self.offset_index.take_created() | self.time_index.take_created();
        Ok(created)
    }

    /// Unlinks the three files. Open `ReadSlice`s keep the `.log` data readable; the
    /// caller drops the segment from its [`FileCache`].
    pub fn delete_files(&self) -> Result<(), LogError> {
        let paths = [
            self.log_path.clone(),
            self.index_path(),
            self.time_index_path(),
        ];
        for path in paths {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        Ok(())
    }
}

/// CRC and record-count check of a batch too large to hold in memory: streams the
/// CRC in chunks (the record framing is not walked).
fn check_large_batch(
    file: &File,
    file_len: u64,
    pos: u64,
    header: &BatchHeader,
) -> io::Result<Result<(), BatchError>> {
    let total = header.total_len() as u64;
    if pos + total > file_len {
        return Ok(Err(BatchError::Truncated {
            position: 0,
            needed: total as usize,
            available: (file_len - pos) as usize,
        }));
    }
    let mut buf = vec![0u8; RECOVERY_CHUNK];
    let mut at = pos + CRC_START as u64;
    let end = pos + total;
    let mut crc = 0u32;
    while at < end {
        let n = ((end - at) as usize).min(buf.len());
        let chunk = buf.get_mut(..n).unwrap_or(&mut []);
        file.read_exact_at(chunk, at)?;
        crc = crc32c_append(crc, chunk);
        at += n as u64;
    }
    if crc != header.crc {
        return Ok(Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed: crc,
        }));
    }
    // As `validate_stored_batch`: compaction may have removed records.
    if header.record_count < 0
        || header.last_offset_delta < 0
        || i64::from(header.record_count) > i64::from(header.last_offset_delta) + 1
    {
        return Ok(Err(BatchError::RecordCount {
            record_count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        }));
    }
    Ok(Ok(()))
}

/// Iterator of `(position, header)` over a segment's valid bytes.
pub(crate) struct HeaderScan<'s> {
    window: FileWindow<'s>,
    pos: u64,
    end: u64,
    path: &'s Path,
    done: bool,
}

impl Iterator for HeaderScan<'_> {
    type Item = Result<(u64, BatchHeader), LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.end {
            return None;
        }
        let pos = self.pos;
        let result = match self.window.slice(pos, BATCH_HEADER_LEN) {
            Err(e) => Err(io_err(self.path)(e)),
            Ok(None) => Err(BatchError::Truncated {
                position: 0,
                needed: BATCH_HEADER_LEN,
                available: (self.end - pos) as usize,
            })
            .map_err(|source| LogError::CorruptBatch {
                path: self.path.to_path_buf(),
                position: pos,
                source,
            }),
            Ok(Some(head)) => BatchHeader::parse(head).map_err(|source| LogError::CorruptBatch {
                path: self.path.to_path_buf(),
                position: pos,
                source,
            }),
        };
        match result {
            Ok(header) => {
                self.pos = pos + header.total_len() as u64;
                Some(Ok((pos, header)))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
