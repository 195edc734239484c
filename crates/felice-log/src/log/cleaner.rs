//! Log compaction (`cleanup.policy=compact`), Kafka's cleaner in three steps so
//! the partition stays writable while it runs:
//!
//! 1. [`Log::clean_plan`] (under the log lock, cheap): when the closed segments
//!    written since the last clean ("dirty", from the cleaner checkpoint on) make
//!    up at least `min.cleanable.dirty.ratio` of the closed bytes, snapshot the
//!    closed segments (their descriptors, bases, ends).
//! 2. [`build_cleaned`] (no lock, reads immutable closed segments): map each key
//!    of the dirty range to its last offset (a 128-bit hash per key, at most
//!    [`MAX_CLEANER_KEYS`]; a larger dirty range is cleaned in several passes),
//!    then rewrite the closed segments, grouped up to `segment.bytes`, keeping a
//!    record unless the map holds a later offset for its key, or it is a
//!    tombstone that was already cleaned once and whose segment is older than
//!    `delete.retention.ms`. Kept records are copied byte for byte into batches
//!    with the same base offset, base timestamp, last offset delta and producer
//!    fields; batches left empty are dropped (offsets then have gaps, which
//!    reads and recovery already allow). Compressed, control and transactional
//!    batches are kept whole. Each group is written to
//!    `<base>.<end>.cleaned` and fsynced.
//! 3. [`Log::install_cleaned`] (under the lock): if the segments are still the
//!    ones planned, each group's file becomes `<base>.<end>.swap` (directory
//!    fsynced), the replaced segments' files are unlinked, the swap becomes
//!    `<base>.log` and is re-indexed. A crash leaves either a `.cleaned` file
//!    (removed on open) or a `.swap` file (open completes the swap: segments
//!    with a base in `[base, end)` are replaced by it).
//!
//! Invariants: a record is dropped only if a record with the same key and a
//! higher offset exists in the log (or it is an expired tombstone); offsets and
//! the order of kept records never change; the active segment is never cleaned.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::borrow::Cow;

use felice_wire::{codec, BatchHeader, Compression, Records, TimestampType, BATCH_HEADER_LEN};

use super::{read_checkpoint, sync_dir, write_checkpoint, Log};
use crate::segment::{io_err, FileWindow, IndexLimits, Segment};
use crate::LogError;

/// Keys the cleaner maps in one pass: 16-byte hash + 8-byte offset each, about
/// 40 MB of `HashMap` at worst. More distinct keys in the dirty range are
/// handled by further passes (the checkpoint advances to where the map ended).
pub const MAX_CLEANER_KEYS: usize = 1 << 20;
/// Bytes read at a time while scanning a segment.
const SCAN_CHUNK: usize = 1 << 20;
pub(crate) const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
const CLEANED_SUFFIX: &str = "cleaned";
const SWAP_SUFFIX: &str = "swap";

/// One closed segment as the plan saw it.
#[derive(Debug, Clone)]
struct Planned {
    base: i64,
    next: i64,
    size: u64,
    max_timestamp: i64,
    file: Arc<File>,
}

/// What one clean works on (see the module docs, step 1).
#[derive(Debug)]
pub struct CleanPlan {
    dir: PathBuf,
    segments: Vec<Planned>,
    first_dirty: i64,
    segment_bytes: u64,
    delete_retention_ms: i64,
    /// Last offsets of each remembered producer's last batch: such a batch is
    /// kept even when all its records are superseded, so a replay of the
    /// compacted log still finds every producer's sequence (Kafka keeps it
    /// as an empty batch; Felice keeps it whole, which compaction allows).
    producer_last_batches: std::collections::HashSet<i64>,
}

/// One rewritten group of segments.
#[derive(Debug)]
struct Group {
    base: i64,
    end: i64,
    replaced: Vec<i64>,
    path: PathBuf,
    /// Bytes kept; an empty group (not the log's first) replaces its
    /// segments by nothing.
    bytes: u64,
}

/// Cleaned files ready to install (step 2's output).
#[derive(Debug)]
pub struct Cleaned {
    groups: Vec<Group>,
    first_dirty: i64,
    new_first_dirty: i64,
    pub stats: CleanStats,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanStats {
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
    pub segments_before: usize,
    pub segments_after: usize,
}

fn file_name(base: i64, end: i64, suffix: &str) -> String {
    format!("{base:020}.{end:020}.{suffix}")
}

/// `(base, end)` of a `<base>.<end>.<suffix>` name.
pub(crate) fn parse_name(name: &str, suffix: &str) -> Option<(i64, i64)> {
    let stem = name.strip_suffix(suffix)?.strip_suffix('.')?;
    let (base, end) = stem.split_once('.')?;
    if base.len() != 20 || end.len() != 20 {
        return None;
    }
    Some((base.parse().ok()?, end.parse().ok()?))
}

pub(crate) fn is_cleaned_leftover(name: &str) -> bool {
    parse_name(name, CLEANED_SUFFIX).is_some()
}

pub(crate) fn parse_swap(name: &str) -> Option<(i64, i64)> {
    parse_name(name, SWAP_SUFFIX)
}

/// A 128-bit hash of a key: two SipHash passes with different prefixes.
fn key_hash(key: &[u8]) -> u128 {
    let half = |salt: u8| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        salt.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

/// Calls `f` with each whole batch (header, bytes) of a segment file, in
/// order, reading [`SCAN_CHUNK`] at a time; `f` returns whether to go on.
fn for_each_batch(
    file: &File,
    size: u64,
    path: &Path,
    mut f: impl FnMut(&BatchHeader, &[u8]) -> Result<bool, LogError>,
) -> Result<(), LogError> {
    let mut window = FileWindow::new(file, size, SCAN_CHUNK);
    let mut pos = 0u64;
    loop {
        let Some(head) = window.slice(pos, BATCH_HEADER_LEN).map_err(io_err(path))? else {
            return Ok(());
        };
        let header = BatchHeader::parse(head).map_err(|source| LogError::CorruptBatch {
            path: path.to_path_buf(),
            position: pos,
            source,
        })?;
        let total = header.total_len();
        let Some(batch) = window.slice(pos, total).map_err(io_err(path))? else {
            return Ok(());
        };
        if !f(&header, batch)? {
            return Ok(());
        }
        pos += total as u64;
    }
}

/// Whether the cleaner may look inside a batch (uncompressed data batch).
fn inspectable(header: &BatchHeader) -> bool {
    !header.is_control() && !header.is_transactional()
}

/// Largest decompressed records section the cleaner works on; a batch that
/// expands further is kept whole.
const MAX_DECOMPRESSED_BATCH: usize = 128 << 20;

/// The batch as an uncompressed one (itself when it is), or `None` when it
/// cannot be looked into (control, transactional, or a compressed batch that
/// does not decompress within [`MAX_DECOMPRESSED_BATCH`]).
fn plain_batch<'b>(header: &BatchHeader, batch: &'b [u8]) -> Option<Cow<'b, [u8]>> {
    if !inspectable(header) {
        return None;
    }
    match header.compression().ok()? {
        Compression::None => Some(Cow::Borrowed(batch)),
        _ => {
            let (h, raw) = codec::records_section(batch, MAX_DECOMPRESSED_BATCH).ok()?;
            codec::as_uncompressed(&h, &raw).ok().map(Cow::Owned)
        }
    }
}

impl Log {
    /// The next offset the cleaner has not deduplicated.
    pub fn first_dirty_offset(&self) -> i64 {
        read_checkpoint(&self.dir.join(CLEANER_CHECKPOINT_FILE))
            .ok()
            .flatten()
            .unwrap_or(0)
            .min(self.log_end_offset())
            .max(self.log_start_offset)
    }

    /// A clean to run, if the log is compacted and dirty enough (step 1).
    pub fn clean_plan(&self, now_ms: i64) -> Option<CleanPlan> {
        if !self.config.cleanup_compact {
            return None;
        }
        let lag = self.config.min_compaction_lag_ms;
        let closed = self.segments.len().saturating_sub(1);
        // Segments holding records younger than min.compaction.lag.ms, and all
        // after them, wait.
        let cleanable = self
            .segments
            .iter()
            .take(closed)
            .take_while(|s| lag <= 0 || s.max_timestamp < now_ms.saturating_sub(lag))
            .count();
        let segments: Vec<&Segment> = self.segments.iter().take(cleanable).collect();
        let first_dirty = self.first_dirty_offset();
        let total: u64 = segments.iter().map(|s| s.size).sum();
        let dirty: u64 = segments
            .iter()
            .filter(|s| s.next_offset > first_dirty)
            .map(|s| s.size)
            .sum();
        if dirty == 0
            || dirty.saturating_mul(1000)
                < total.saturating_mul(u64::from(self.config.min_cleanable_dirty_ratio_permille))
        {
            return None;
        }
        let mut planned = Vec::with_capacity(segments.len());
        for s in segments {
            planned.push(Planned {
                base: s.base_offset,
                next: s.next_offset,
                size: s.size,
                max_timestamp: s.max_timestamp,
                file: s.file(&self.files).ok()?,
            });
        }
        Some(CleanPlan {
            dir: self.dir.clone(),
            segments: planned,
            first_dirty,
            segment_bytes: self.config.segment_bytes,
            delete_retention_ms: self.config.delete_retention_ms,
            producer_last_batches: self.producers.last_batch_offsets(),
        })
    }

    /// Runs a whole clean under `&mut self` (tests, tools); the broker runs the
    /// three steps so that step 2 does not hold the partition lock.
    pub fn clean(&mut self, now_ms: i64) -> Result<Option<CleanStats>, LogError> {
        let Some(plan) = self.clean_plan(now_ms) else {
            return Ok(None);
        };
        let cleaned = build_cleaned(&plan, now_ms)?;
        self.install_cleaned(cleaned, now_ms)
    }

    /// Replaces the planned segments by the cleaned ones (step 3). `None` (and
    /// the cleaned files removed) when the log changed meanwhile.
    pub fn install_cleaned(
        &mut self,
        cleaned: Cleaned,
        now_ms: i64,
    ) -> Result<Option<CleanStats>, LogError> {
        let closed = self.segments.len().saturating_sub(1);
        let still_there = cleaned.groups.iter().all(|g| {
            g.replaced.iter().all(|base| {
                self.segments
                    .iter()
                    .take(closed)
                    .any(|s| s.base_offset == *base)
            })
        });
        if !still_there || self.first_dirty_offset() != cleaned.first_dirty {
            for g in &cleaned.groups {
                let _ = fs::remove_file(&g.path);
            }
            return Ok(None);
        }
        match self.install_groups(&cleaned, now_ms) {
            Ok(()) => {}
            Err(e) => {
                // Some replaced segments may already be out of the list while
                // their cleaned copy waits on disk (`.swap` or `.log` without an
                // index): reads would skip those offsets. Reopen from disk, as a
                // restart would, which finishes or drops the swap.
                match Log::open(&self.dir, self.config.clone(), now_ms) {
                    Ok(reopened) => {
                        *self = reopened;
                        tracing::warn!(dir = %self.dir.display(), error = %e, "cleaner install failed; log reopened from disk");
                    }
                    Err(reopen) => {
                        tracing::error!(dir = %self.dir.display(), error = %e, %reopen, "cleaner install failed and the log could not be reopened; it may miss segments until restart");
                    }
                }
                return Err(e);
            }
        }
        let mut stats = cleaned.stats;
        stats.segments_after = self.segments.len().saturating_sub(1);
        tracing::info!(
            dir = %self.dir.display(),
            bytes_before = stats.bytes_before,
            bytes_after = stats.bytes_after,
            records_removed = stats.records_removed,
            "log cleaned"
        );
        Ok(Some(stats))
    }

    /// The steps of [`Log::install_cleaned`] that change files and the segment
    /// list.
    fn install_groups(&mut self, cleaned: &Cleaned, now_ms: i64) -> Result<(), LogError> {
        let limits = IndexLimits {
            max_offset_entries: self.config.segment_index_bytes / 8,
            max_time_entries: self.config.segment_index_bytes / 12,
            interval_bytes: self.config.index_interval_bytes,
        };
        for g in &cleaned.groups {
            if g.bytes == 0 && self.first_segment().base_offset != g.base {
                // Nothing left: drop the segments (their records are all
                // superseded, so deleting them is safe in any order). The
                // first segment stays, even empty: it anchors the log start.
                self.remove_replaced(g)?;
                let _ = fs::remove_file(&g.path);
                continue;
            }
            let swap = self.dir.join(file_name(g.base, g.end, SWAP_SUFFIX));
            fs::rename(&g.path, &swap).map_err(io_err(&swap))?;
            sync_dir(&self.dir)?;
            let first = self.remove_replaced(g)?;
            #[cfg(test)]
            if tests::FAIL_INSTALL_AFTER_REMOVE.with(std::cell::Cell::get) {
                return Err(LogError::Io {
                    path: swap.clone(),
                    source: io::Error::other("injected failure"),
                });
            }
            let [log_path, _, _] = Segment::paths(&self.dir, g.base);
            fs::rename(&swap, &log_path).map_err(io_err(&log_path))?;
            let mut recovered = Segment::recover(&self.dir, g.base, limits, now_ms)?;
            drop(recovered.segment.close_active()?);
            self.segments.insert(first, recovered.segment);
        }
        sync_dir(&self.dir)?;
        self.dir_dirty = true;
        write_checkpoint(
            &self.dir,
            CLEANER_CHECKPOINT_FILE,
            cleaned.new_first_dirty,
            false,
        )?;
        self.check_invariants();
        Ok(())
    }
}

impl Log {
    /// Takes the segments a group replaces out of the list and unlinks their
    /// files; returns where they were.
    fn remove_replaced(&mut self, g: &Group) -> Result<usize, LogError> {
        let first = self.segments.partition_point(|s| s.base_offset < g.base);
        let count = self
            .segments
            .iter()
            .skip(first)
            .take_while(|s| g.replaced.contains(&s.base_offset))
            .count();
        let old: Vec<Segment> = self.segments.drain(first..first + count).collect();
        for s in &old {
            self.files.forget(s.base_offset);
            s.delete_files()?;
        }
        Ok(first)
    }
}

/// Step 2: the offset map, then the cleaned files (no lock needed). On an
/// error the files written so far are removed.
pub fn build_cleaned(plan: &CleanPlan, now_ms: i64) -> Result<Cleaned, LogError> {
    let mut written = Vec::new();
    let r = build(plan, now_ms, &mut written);
    if r.is_err() {
        for path in written {
            let _ = fs::remove_file(path);
        }
    }
    r
}

fn build(
    plan: &CleanPlan,
    now_ms: i64,
    written_paths: &mut Vec<PathBuf>,
) -> Result<Cleaned, LogError> {
    // 1. Map each key of the dirty range to its last offset.
    let mut map: HashMap<u128, i64> = HashMap::new();
    let mut mapped_to = plan.first_dirty;
    let mut full = false;
    for s in plan.segments.iter().filter(|s| s.next > plan.first_dirty) {
        if full {
            break;
        }
        let path = plan.dir.join(crate::segment::file_name(s.base, "log"));
        for_each_batch(&s.file, s.size, &path, |header, batch| {
            if header.last_offset() < plan.first_dirty {
                return Ok(true);
            }
            if map.len() + header.record_count.max(0) as usize > MAX_CLEANER_KEYS {
                full = true;
                return Ok(false);
            }
            if let Some(plain) = plain_batch(header, batch) {
                let records = Records::new(&plain).map_err(|source| LogError::CorruptBatch {
                    path: path.clone(),
                    position: 0,
                    source,
                })?;
                for r in records {
                    let r = r.map_err(|source| LogError::CorruptBatch {
                        path: path.clone(),
                        position: 0,
                        source,
                    })?;
                    let offset = header.base_offset + i64::from(r.offset_delta);
                    if let (Some(key), true) = (r.key, offset >= plan.first_dirty) {
                        map.insert(key_hash(key), offset);
                    }
                }
            }
            mapped_to = header.next_offset();
            Ok(true)
        })?;
    }
    let new_first_dirty = mapped_to.max(plan.first_dirty);

    // 2. Rewrite the closed segments, in groups of at most segment.bytes.
    let horizon = now_ms.saturating_sub(plan.delete_retention_ms);
    let mut stats = CleanStats {
        segments_before: plan.segments.len(),
        ..CleanStats::default()
    };
    let mut groups = Vec::new();
    let mut i = 0;
    while i < plan.segments.len() {
        let mut j = i;
        let mut bytes = 0u64;
        while let Some(s) = plan.segments.get(j) {
            let fits = bytes + s.size <= plan.segment_bytes
                && plan
                    .segments
                    .get(i)
                    .is_some_and(|first| s.next - first.base < i64::from(i32::MAX));
            if j > i && !fits {
                break;
            }
            bytes += s.size;
            j += 1;
        }
        let members = plan.segments.get(i..j).unwrap_or_default();
        let (Some(first), Some(last)) = (members.first(), members.last()) else {
            break;
        };
        let path = plan
            .dir
            .join(file_name(first.base, last.next, CLEANED_SUFFIX));
        written_paths.push(path.clone());
        let (written, removed) = write_group(
            &path,
            members,
            &map,
            plan.first_dirty,
            horizon,
            &plan.producer_last_batches,
        )?;
        stats.bytes_before += bytes;
        stats.bytes_after += written;
        stats.records_removed += removed;
        groups.push(Group {
            base: first.base,
            end: last.next,
            replaced: members.iter().map(|s| s.base).collect(),
            path,
            bytes: written,
        });
        i = j;
    }
    Ok(Cleaned {
        groups,
        first_dirty: plan.first_dirty,
        new_first_dirty,
        stats,
    })
}

/// Writes one group's kept records to `path` (fsynced); returns bytes written
/// and records removed.
fn write_group(
    path: &Path,
    members: &[Planned],
    map: &HashMap<u128, i64>,
    first_dirty: i64,
    tombstone_horizon_ms: i64,
    producer_last_batches: &std::collections::HashSet<i64>,
) -> Result<(u64, u64), LogError> {
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io_err(path))?;
    let mut written = 0u64;
    let mut removed = 0u64;
    let mut kept_raw: Vec<u8> = Vec::new();
    for s in members {
        let src = path.with_file_name(crate::segment::file_name(s.base, "log"));
        let old_tombstones_expire = s.max_timestamp < tombstone_horizon_ms;
        for_each_batch(&s.file, s.size, &src, |header, batch| {
            let Some(plain) = plain_batch(header, batch) else {
                out.write_all(batch).map_err(io_err(path))?;
                written += batch.len() as u64;
                return Ok(true);
            };
            kept_raw.clear();
            let mut records = Records::new(&plain).map_err(|source| LogError::CorruptBatch {
                path: src.clone(),
                position: 0,
                source,
            })?;
            let mut kept = 0i32;
            let mut max_ts = -1i64;
            let mut at = records.position();
            while let Some(r) = records.next() {
                let r = r.map_err(|source| LogError::CorruptBatch {
                    path: src.clone(),
                    position: 0,
                    source,
                })?;
                let end = records.position();
                let offset = header.base_offset + i64::from(r.offset_delta);
                let superseded = r
                    .key
                    .and_then(|k| map.get(&key_hash(k)))
                    .is_some_and(|latest| *latest > offset);
                let expired_tombstone = r.key.is_some()
                    && r.value.is_none()
                    && offset < first_dirty
                    && old_tombstones_expire;
                if superseded || expired_tombstone {
                    removed += 1;
                } else {
                    kept_raw.extend_from_slice(plain.get(at..end).unwrap_or_default());
                    kept += 1;
                    max_ts = max_ts.max(header.base_timestamp.saturating_add(r.timestamp_delta));
                }
                at = end;
            }
            let producers_last =
                header.producer_id >= 0 && producer_last_batches.contains(&header.last_offset());
            if kept == 0 && !producers_last {
                return Ok(true);
            }
            if kept == 0 {
                // A producer's last batch: its records stay with it.
                removed = removed.saturating_sub(u64::try_from(header.record_count).unwrap_or(0));
            }
            if kept == header.record_count || kept == 0 {
                out.write_all(batch).map_err(io_err(path))?;
                written += batch.len() as u64;
                return Ok(true);
            }
            // Same base offset, base timestamp, last offset delta, producer
            // fields and codec; only the kept records, recompressed.
            let max_timestamp = if header.timestamp_type() == TimestampType::CreateTime {
                max_ts
            } else {
                header.max_timestamp
            };
            let codec = header.compression().unwrap_or(Compression::None);
            let batch_out = codec::rebuild_batch(
                header,
                codec,
                &kept_raw,
                kept,
                header.last_offset_delta,
                max_timestamp,
            )
            .map_err(|source| LogError::CorruptBatch {
                path: src.clone(),
                position: 0,
                source,
            })?;
            out.write_all(&batch_out).map_err(io_err(path))?;
            written += batch_out.len() as u64;
            Ok(true)
        })?;
    }
    out.sync_all().map_err(io_err(path))?;
    Ok((written, removed))
}

/// At open: a `.swap` file is a finished clean whose install was cut short:
/// replace the segments it covers by it. Returns whether anything changed.
pub(crate) fn complete_swap(dir: &Path, name: &str) -> Result<bool, LogError> {
    let Some((base, end)) = parse_swap(name) else {
        return Ok(false);
    };
    let swap = dir.join(name);
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let n = entry.file_name().to_string_lossy().into_owned();
        let seg_base = n
            .strip_suffix(".log")
            .or_else(|| n.strip_suffix(".index"))
            .or_else(|| n.strip_suffix(".timeindex"))
            .filter(|s| s.len() == 20)
            .and_then(|s| s.parse::<i64>().ok());
        if let Some(b) = seg_base {
            if b >= base && b < end {
                let p = entry.path();
                match fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(&p)(e)),
                }
            }
        }
    }
    let [log_path, _, _] = Segment::paths(dir, base);
    fs::rename(&swap, &log_path).map_err(io_err(&log_path))?;
    Ok(true)
}

#[cfg(test)]
mod tests;
