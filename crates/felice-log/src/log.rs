//! [`Log`]: one partition's ordered list of segments, the last one active.
//!
//! Owns the segment list, the log start offset and recovery point (and their files),
//! offset assignment, rolling, reads, retention, truncation and flushing.
//!
//! Invariants (asserted where cheap): `segments` is never empty and base offsets
//! strictly increase; only the last segment is active (holds the one descriptor and a
//! small index tail cache, receives appends); `log_start_offset <= log_end_offset`;
//! each append starts at the log end offset; `recovery_point <= log_end_offset` and
//! every byte below it is fsynced with complete index files, so index entries still
//! pending in memory always belong to data at or above it.
//!
//! Costs of the lifecycle (what the fsyncs buy):
//! - `open` of a new, empty directory: `mkdir` and one file creation (the active
//!   `.log`), no fsync and no checkpoint file: an empty log has nothing to lose, and
//!   the broker recreates missing partition directories from its metadata.
//! - `flush`: fsync of each file written since the last one (pending index entries
//!   are written first), of the directory after a file was created or removed (and
//!   once of the parent after the directory was created), then the recovery point,
//!   written but not fsynced (a lost or older checkpoint only means more recovery).
//! - `close`: nothing when nothing was appended since the last flush (the data is
//!   below the recovery point already); else a flush whose checkpoint is fsynced.
//!
//! Concurrency: `&mut self` for every change; the broker holds a per-partition mutex.
//! `read` hands out [`ReadSlice`]s that outlive the lock. Reads (`&self`) of closed
//! segments may fill the log's small `FileCache` of descriptors, which locks itself.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use felice_wire::{
    crc32c, set_base_offset, set_log_append_time_split, set_partition_leader_epoch,
    validate_stored_batch, BatchError, BatchHeader, Batches, ValidatedBatch, BATCH_HEADER_LEN,
};

use crate::epoch_cache::{EpochEntry, LeaderEpochCache};
use crate::producer_state::{
    self, ActiveProducer, ProducerBudget, ProducerEntry, ProducerState, Verdict, NO_PRODUCER_ID,
};
use crate::segment::{io_err, parse_log_file_name, FileCache, IndexCursor, IndexLimits, Segment};
use crate::{AppendInfo, LogConfig, LogError, ReadSlice, TimestampType};

pub(crate) mod cleaner;

const LOG_START_OFFSET_FILE: &str = "log-start-offset";
const RECOVERY_POINT_FILE: &str = "recovery-point";

#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    segments: Vec<Segment>,
    log_start_offset: i64,
    recovery_point: i64,
    unflushed_messages: u64,
    last_flush_ms: i64,
    /// A segment file was created or removed since the last directory fsync.
    dir_dirty: bool,
    /// `open` created the directory and its entry in the parent is not fsynced yet
    /// (done by the first flush that has data to cover).
    parent_dirty: bool,
    /// `.log` descriptors of recently read closed segments.
    files: FileCache,
    /// Idempotent producers' state, a function of the log below its end.
    producers: ProducerState,
    /// Offset of the newest producer-state snapshot file, if any.
    last_snapshot: Option<i64>,
    /// Where each leader epoch starts (`leader-epoch-checkpoint`): what
    /// OffsetForLeaderEpoch answers from.
    epochs: LeaderEpochCache,
}

fn limits(config: &LogConfig) -> IndexLimits {
    IndexLimits {
        max_offset_entries: config.segment_index_bytes / 8,
        max_time_entries: config.segment_index_bytes / 12,
        interval_bytes: config.index_interval_bytes,
    }
}

/// Bytes of a checkpoint file: `<value, 20 digits> <crc32c of those digits, 8 hex>\n`.
/// Fixed-size and far below a 512-byte sector, so the recovery point can be
/// overwritten in place (PostgreSQL's `pg_control` does the same) with one `pwrite`
/// (+ `fdatasync` when durable, no metadata change), where a replacement needs a
/// new file, a rename and a directory fsync; the CRC turns a torn write into
/// "absent".
const CHECKPOINT_LEN: u64 = 30;

fn encode_checkpoint(value: i64) -> String {
    let digits = format!("{value:020}");
    let crc = crc32c(digits.as_bytes());
    format!("{digits} {crc:08x}\n")
}

/// Reads a one-number checkpoint file; anything unreadable (missing, torn, CRC
/// mismatch) counts as absent, which for the recovery point is always safe (absent
/// means "recover everything"). A bare number is the older format.
fn read_checkpoint(path: &Path) -> Result<Option<i64>, LogError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut fields = text.split_whitespace();
    let value = match (fields.next(), fields.next(), fields.next()) {
        (Some(value), None, None) => value,
        (Some(value), Some(crc), None)
            if u32::from_str_radix(crc, 16).ok() == Some(crc32c(value.as_bytes())) =>
        {
            value
        }
        _ => return Ok(None),
    };
    Ok(value.parse::<i64>().ok().filter(|v| *v >= 0))
}

/// Replaces a checkpoint file atomically (write a temp file, rename). With `durable`
/// the temp file and the directory are fsynced too.
fn write_checkpoint(dir: &Path, name: &str, value: i64, durable: bool) -> Result<(), LogError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(encode_checkpoint(value).as_bytes())
        .map_err(io_err(&tmp))?;
    if durable {
        file.sync_all().map_err(io_err(&tmp))?;
    }
    drop(file);
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Writes the recovery point: in place when the file exists in the fixed-size format
/// (`durable`: one `fdatasync`, no metadata change); as a new file when there is none
/// (a torn first write reads as absent, so no temp file is needed), returning `true`:
/// the caller then owes the directory an fsync for a durable checkpoint; by
/// replacement for the older format. Callers fsync the data it covers first, so
/// whatever reaches the disk, in whatever order, never claims more than is durable.
fn write_recovery_point(dir: &Path, value: i64, durable: bool) -> Result<bool, LogError> {
    let path = dir.join(RECOVERY_POINT_FILE);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(&path))?;
    let len = file.metadata().map_err(io_err(&path))?.len();
    if len != 0 && len != CHECKPOINT_LEN {
        drop(file);
        write_checkpoint(dir, RECOVERY_POINT_FILE, value, durable)?;
        return Ok(false);
    }
    file.write_all_at(encode_checkpoint(value).as_bytes(), 0)
        .map_err(io_err(&path))?;
    if durable {
        file.sync_data().map_err(io_err(&path))?;
    }
    Ok(len == 0)
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// What pass 1 of an append found.
struct Scan {
    headers: Vec<BatchHeader>,
    /// Offsets the batches take.
    offsets: i64,
    /// Records they hold (for `flush.messages`).
    records: u64,
}

impl Scan {
    /// The scan of one validated batch, from its header.
    fn of(h: BatchHeader) -> Scan {
        Scan {
            headers: vec![h],
            offsets: i64::from(h.last_offset_delta) + 1,
            records: u64::try_from(h.record_count).unwrap_or(0),
        }
    }
}

/// One batch as written: its header (patched by a leader, as is for a
/// follower), then its body range in the caller's buffer.
struct Part {
    header: [u8; BATCH_HEADER_LEN],
    body: std::ops::Range<usize>,
    last_offset: i64,
    max_timestamp: i64,
}

/// What [`Log::write_parts`] wrote: the new log end offset and the largest
/// timestamp.
struct Written {
    next: i64,
    max_timestamp: i64,
}

impl Log {
    /// Opens (creating if missing) the partition directory `dir` and recovers it:
    /// segments wholly below the recovery point are trusted after cheap index sanity
    /// checks; later ones are re-validated batch by batch, cut at the first torn or
    /// corrupt batch (later segments are then deleted) and re-indexed.
    ///
    /// A directory `open` creates gets only the active `.log`: no fsync, no checkpoint
    /// file (see the module docs).
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<Log, LogError> {
        config.validate()?;
        let config_max_producers = config.max_producers_per_partition;
        let created = match fs::create_dir(dir) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(io_err(dir))?;
                true
            }
            Err(e) => return Err(io_err(dir)(e)),
        };
        if created {
            let log = Log {
                dir: dir.to_path_buf(),
                config,
                segments: vec![Segment::create(dir, 0)?],
                log_start_offset: 0,
                recovery_point: 0,
                unflushed_messages: 0,
                last_flush_ms: now_ms,
                dir_dirty: true,
                parent_dirty: true,
                files: FileCache::default(),
                producers: ProducerState::new(
                    config_max_producers,
                    ProducerBudget::new(usize::MAX),
                ),
                last_snapshot: None,
                epochs: LeaderEpochCache::default(),
            };
            log.check_invariants();
            return Ok(log);
        }
        let limits = limits(&config);
        // Whether open changes the directory (removals, recovered segments, whose
        // index files are rewritten): then the next flush fsyncs it. A clean open
        // finds it as the last flush left it, synced.
        let mut dir_dirty = false;
        // A clean cut short: finish its swap, drop its unfinished output.
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if cleaner::is_cleaned_leftover(&name) {
                let path = entry.path();
                fs::remove_file(&path).map_err(io_err(&path))?;
                dir_dirty = true;
            } else if cleaner::complete_swap(dir, &name)? {
                dir_dirty = true;
            }
        }
        let mut bases = Vec::new();
        let mut others = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(base) = parse_log_file_name(&name) {
                bases.push(base);
            } else if name.ends_with(".tmp") || name.ends_with(".deleted") {
                let path = entry.path();
                fs::remove_file(&path).map_err(io_err(&path))?;
                dir_dirty = true;
            } else {
                others.push(name);
            }
        }
        bases.sort_unstable();
        // Index files without a log file are leftovers of an interrupted deletion.
        for name in others {
            let stem = name
                .strip_suffix(".index")
                .or_else(|| name.strip_suffix(".timeindex"));
            if let Some(base) = stem.and_then(|s| parse_log_file_name(&format!("{s}.log"))) {
                if bases.binary_search(&base).is_err() {
                    let path = dir.join(&name);
                    fs::remove_file(&path).map_err(io_err(&path))?;
                    dir_dirty = true;
                }
            }
        }
        let persisted_start = read_checkpoint(&dir.join(LOG_START_OFFSET_FILE))?;
        let recovery_point = read_checkpoint(&dir.join(RECOVERY_POINT_FILE))?;

        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len().max(1));
        let mut recovered_any = false;
        for (i, &base) in bases.iter().enumerate() {
            let next_base = bases.get(i + 1).copied();
            let trusted = match (recovery_point, next_base) {
                (Some(rp), Some(next)) if next <= rp => {
                    Segment::open_trusted(dir, base, Some(next), rp, now_ms)?
                }
                (Some(rp), None) if rp >= base => {
                    Segment::open_trusted(dir, base, None, rp, now_ms)?
                }
                _ => None,
            };
            if let Some(segment) = trusted {
                segments.push(segment);
                continue;
            }
            let recovered = Segment::recover(dir, base, limits, now_ms)?;
            dir_dirty = true;
            let cut = recovered.truncated_bytes > 0;
            recovered_any |= cut || recovered.segment.size > 0;
            segments.push(recovered.segment);
            if cut {
                // Everything after a cut is unreachable: offsets must stay contiguous.
                for &later in bases.get(i + 1..).unwrap_or(&[]) {
                    for path in Segment::paths(dir, later) {
                        match fs::remove_file(&path) {
                            Ok(()) => {}
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            Err(e) => return Err(io_err(&path)(e)),
                        }
                    }
                }
                break;
            }
        }
        let count = segments.len();
        for segment in segments.iter_mut().take(count.saturating_sub(1)) {
            drop(segment.close_active()?);
        }
        if segments.is_empty() {
            segments.push(Segment::create(dir, persisted_start.unwrap_or(0))?);
            dir_dirty = true;
        }
        let mut log = Log {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset: 0,
            recovery_point: 0,
            unflushed_messages: 0,
            last_flush_ms: now_ms,
            dir_dirty,
            parent_dirty: false,
            files: FileCache::default(),
            producers: ProducerState::new(config_max_producers, ProducerBudget::new(usize::MAX)),
            last_snapshot: None,
            epochs: LeaderEpochCache::default(),
        };
        let first_base = log.first_segment().base_offset;
        log.log_start_offset = persisted_start.unwrap_or(first_base).max(first_base);
        if log.log_start_offset > log.log_end_offset() {
            // Data above the log start offset was lost (a crash cut it): start afresh
            // at the log start offset, as Kafka's truncateFullyAndStartAt does.
            let start = log.log_start_offset;
            log.replace_all_segments(start)?;
        }
        log.recovery_point = recovery_point.unwrap_or(0).min(log.log_end_offset()).max(0);
        // Without the file the start is the first segment's base: nothing to write
        // unless it says otherwise (or said something else).
        let derived = persisted_start.is_none() && log.log_start_offset == first_base;
        if persisted_start != Some(log.log_start_offset) && !derived {
            write_checkpoint(dir, LOG_START_OFFSET_FILE, log.log_start_offset, true)?;
        }
        if recovered_any {
            tracing::info!(dir = %dir.display(), log_end_offset = log.log_end_offset(), "log recovered");
        }
        log.load_producer_state(now_ms)?;
        log.load_epochs()?;
        log.check_invariants();
        Ok(log)
    }

    /// Reads the leader-epoch checkpoint and brings it up to the log. It is
    /// current when the log's last batch is of its latest epoch (epochs only
    /// grow along the log, and the file is written whole), which costs one
    /// index lookup; otherwise (a crash between an append in a new epoch
    /// and the save, a folder from before the file existed, an unreadable
    /// file) the epochs are read from the batch headers, from the latest
    /// known epoch's start on. Entries past either end of the log go.
    fn load_epochs(&mut self) -> Result<(), LogError> {
        let mut cache = match LeaderEpochCache::open(&self.dir) {
            Ok(cache) => cache,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "leader-epoch checkpoint unreadable; rebuilding it from the log");
                LeaderEpochCache::default()
            }
        };
        let before = cache.entries().to_vec();
        let (start, end) = (self.log_start_offset, self.log_end_offset());
        cache.truncate_from_end(end);
        let last_epoch = match end > start {
            true => self
                .batch_header_at(end - 1)?
                .map(|h| h.partition_leader_epoch),
            false => None,
        };
        let current = match (cache.latest(), last_epoch) {
            (_, None) => true,
            (Some(latest), Some(epoch)) => latest.epoch == epoch,
            (None, Some(epoch)) => epoch < 0,
        };
        if !current {
            let from = cache.latest().map_or(start, |l| l.start_offset).max(start);
            for segment in &self.segments {
                if segment.next_offset <= from || segment.size == 0 {
                    continue;
                }
                // Not through the descriptor cache: a scan at open must not
                // leave closed segments' files open.
                let file = match &segment.file {
                    Some(file) => file.clone(),
                    None => {
                        Arc::new(File::open(&segment.log_path).map_err(io_err(&segment.log_path))?)
                    }
                };
                for item in segment.headers_from(&file, from)? {
                    let (_, h) = item?;
                    if h.next_offset() > from {
                        cache.assign(h.partition_leader_epoch, h.base_offset);
                    }
                }
            }
        }
        cache.truncate_from_start(start);
        self.epochs = cache;
        self.flush_epochs_if_changed(&before);
        Ok(())
    }

    /// The header of the batch holding `offset`, if the log has it.
    fn batch_header_at(&self, offset: i64) -> Result<Option<BatchHeader>, LogError> {
        let segment = &self.segments[self.segment_index_for(offset)];
        let file = match &segment.file {
            Some(file) => file.clone(),
            None => Arc::new(File::open(&segment.log_path).map_err(io_err(&segment.log_path))?),
        };
        for item in segment.headers_from(&file, offset)? {
            let (_, h) = item?;
            if h.next_offset() > offset {
                return Ok((h.base_offset <= offset).then_some(h));
            }
        }
        Ok(None)
    }

    /// Saves the epoch checkpoint when its entries differ from `before`.
    /// Best effort: the batch headers are the truth, and `open` brings a
    /// stale checkpoint up to them, so a failed save only costs a scan.
    fn flush_epochs_if_changed(&self, before: &[EpochEntry]) {
        if self.epochs.entries() != before {
            if let Err(e) = self.epochs.flush(&self.dir) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "leader-epoch checkpoint not saved");
            }
        }
    }

    /// Kafka's `endOffsetForEpoch` (OffsetForLeaderEpoch): the largest
    /// epoch at or below `epoch` and where the next one starts (the log end
    /// offset for the latest); `(-1, -1)` when unknown.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// A leader's new epoch starts at the log end offset (Kafka's
    /// `maybeAssignEpochStartOffset` in `makeLeader`): OffsetForLeaderEpoch
    /// answers for it before any batch of it is written.
    pub fn assign_epoch_at_end(&mut self, epoch: i32) {
        if self.epoch_is_new(epoch) {
            let before = self.epochs.entries().to_vec();
            self.epochs.assign(epoch, self.log_end_offset());
            self.flush_epochs_if_changed(&before);
        }
    }

    /// The leader epochs and where each starts.
    pub fn epochs(&self) -> &[EpochEntry] {
        self.epochs.entries()
    }

    /// Whether an append in `epoch` would start a new epoch (and so write
    /// the epoch checkpoint, an fsync).
    pub fn epoch_is_new(&self, epoch: i32) -> bool {
        epoch >= 0 && self.epochs.latest().is_none_or(|l| l.epoch < epoch)
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Replaces the configuration; it applies from the next append or retention run.
    pub fn set_config(&mut self, config: LogConfig) -> Result<(), LogError> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }

    /// Offset up to which data is known to be fsynced.
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments.iter().map(|s| s.base_offset).collect()
    }

    fn active(&self) -> &Segment {
        // `segments` is never empty (invariant); the fallback is unreachable.
        match self.segments.last() {
            Some(s) => s,
            None => unreachable!("a log always has an active segment"),
        }
    }

    fn active_mut(&mut self) -> &mut Segment {
        match self.segments.last_mut() {
            Some(s) => s,
            None => unreachable!("a log always has an active segment"),
        }
    }

    fn first_segment(&self) -> &Segment {
        match self.segments.first() {
            Some(s) => s,
            None => unreachable!("a log always has an active segment"),
        }
    }

    fn check_invariants(&self) {
        assert!(
            self.log_start_offset <= self.log_end_offset(),
            "log start offset {} > log end offset {}",
            self.log_start_offset,
            self.log_end_offset()
        );
        debug_assert!(
            self.segments
                .windows(2)
                .all(|w| matches!(w, [a, b] if a.base_offset < b.base_offset)),
            "segment base offsets must strictly increase: {:?}",
            self.segment_base_offsets()
        );
    }

    /// Appends one or more batches already validated by the caller, as a
    /// leader: [`Log::assign_offsets`] rewrites each batch's baseOffset (from
    /// the log end offset) and partitionLeaderEpoch, and stamps LogAppendTime
    /// when asked; then [`Log::write_parts`] writes everything (after a roll
    /// if needed) with one positioned write and adds index entries. All or
    /// nothing: on an I/O error the segment files are cut back to their
    /// previous ends.
    pub fn append(
        &mut self,
        batches: &[u8],
        leader_epoch: i32,
        ts_type: TimestampType,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let scan = self.scan_headers(batches)?;
        self.append_scanned(batches, scan, leader_epoch, ts_type, now_ms)
    }

    /// [`Log::append`] of one batch a produce validated: its header, parsed
    /// there, is used as it is (no parse here).
    pub fn append_batch(
        &mut self,
        batch: &ValidatedBatch,
        leader_epoch: i32,
        ts_type: TimestampType,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let scan = Scan::of(*batch.header());
        if scan.offsets <= 0 {
            return Err(LogError::EmptyAppend);
        }
        self.append_scanned(batch.bytes(), scan, leader_epoch, ts_type, now_ms)
    }

    fn append_scanned(
        &mut self,
        batches: &[u8],
        scan: Scan,
        leader_epoch: i32,
        ts_type: TimestampType,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        // Idempotent producers: a retry is answered with its original
        // offsets, a bad sequence or epoch refuses the append; nothing rolls.
        let first_offset = self.log_end_offset();
        let updates = match self.check_producers(
            &scan.headers,
            first_offset,
            ts_type,
            now_ms,
            leader_epoch,
        )? {
            Ok(updates) => updates,
            Err(duplicate) => return Ok(duplicate),
        };
        self.maybe_roll(batches.len() as u64, scan.offsets, now_ms)?;
        debug_assert_eq!(
            first_offset,
            self.log_end_offset(),
            "a roll keeps the log end"
        );
        let parts = self.assign_offsets(
            batches,
            &scan.headers,
            first_offset,
            leader_epoch,
            ts_type,
            now_ms,
        )?;
        let written = self.write_parts(batches, &parts, first_offset, now_ms)?;
        debug_assert_eq!(
            written.next - first_offset,
            scan.offsets,
            "offsets assigned = counted"
        );
        for (producer_id, entry) in updates {
            self.producers.put(producer_id, entry);
        }
        if self.epoch_is_new(leader_epoch) {
            let before = self.epochs.entries().to_vec();
            self.epochs.assign(leader_epoch, first_offset);
            self.flush_epochs_if_changed(&before);
        }
        self.after_write(scan.records, now_ms)?;
        let log_append_time_ms = match ts_type {
            TimestampType::LogAppendTime => now_ms,
            TimestampType::CreateTime => -1,
        };
        Ok(AppendInfo {
            first_offset,
            last_offset: written.next - 1,
            max_timestamp: written.max_timestamp,
            log_append_time_ms,
            log_start_offset: self.log_start_offset,
            duplicate: false,
            leader_epoch,
        })
    }

    /// Appends batches as a follower (Kafka's `appendAsFollower`): the
    /// leader's bytes as they are, offsets, leader epochs and timestamps
    /// included. The first batch must start at the log end offset and each
    /// next one where the previous ended ([`LogError::UnexpectedAppendOffset`]
    /// otherwise). Each batch's CRC is checked. Producer state follows the
    /// batches without sequence checks (the leader made them), so that a
    /// producer's retry to this broker, once it leads, is a duplicate.
    pub fn append_as_follower(
        &mut self,
        batches: &[u8],
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let scan = self.scan_headers(batches)?;
        let first_offset = self.log_end_offset();
        let mut expected = first_offset;
        let mut at = 0usize;
        let mut parts = Vec::with_capacity(scan.headers.len());
        for h in &scan.headers {
            if h.base_offset != expected {
                return Err(LogError::UnexpectedAppendOffset {
                    expected,
                    got: h.base_offset,
                });
            }
            let len = h.total_len();
            let batch = batches.get(at..at + len).unwrap_or(&[]);
            validate_stored_batch(batch).map_err(|source| LogError::CorruptBatch {
                path: self.dir.clone(),
                position: at as u64,
                source,
            })?;
            let mut header = [0u8; BATCH_HEADER_LEN];
            header.copy_from_slice(
                batch
                    .get(..BATCH_HEADER_LEN)
                    .unwrap_or(&[0u8; BATCH_HEADER_LEN]),
            );
            let last_offset = h.base_offset + i64::from(h.last_offset_delta);
            parts.push(Part {
                header,
                body: at + BATCH_HEADER_LEN..at + len,
                last_offset,
                max_timestamp: h.max_timestamp,
            });
            expected = last_offset + 1;
            at += len;
        }
        self.maybe_roll(batches.len() as u64, scan.offsets, now_ms)?;
        let written = self.write_parts(batches, &parts, first_offset, now_ms)?;
        let epochs_before = self.epochs.entries().to_vec();
        for h in &scan.headers {
            self.producers.replay(h);
            self.epochs.assign(h.partition_leader_epoch, h.base_offset);
        }
        self.flush_epochs_if_changed(&epochs_before);
        self.after_write(scan.records, now_ms)?;
        Ok(AppendInfo {
            first_offset,
            last_offset: written.next - 1,
            max_timestamp: written.max_timestamp,
            log_append_time_ms: -1,
            log_start_offset: self.log_start_offset,
            duplicate: false,
            leader_epoch: scan.headers.last().map_or(-1, |h| h.partition_leader_epoch),
        })
    }

    /// Pass 1 of an append: the headers, to size it before choosing the
    /// segment. Lengths are checked here; the rest was validated by the
    /// caller (a leader's produce) or is checked per batch (a follower's).
    fn scan_headers(&self, batches: &[u8]) -> Result<Scan, LogError> {
        if batches.is_empty() {
            return Err(LogError::EmptyAppend);
        }
        let mut scan = Scan {
            headers: Vec::with_capacity(1),
            offsets: 0,
            records: 0,
        };
        let mut iter = Batches::new(batches);
        loop {
            match iter.next() {
                None => break,
                Some(Ok((_, h))) => {
                    scan.headers.push(h);
                    if h.last_offset_delta < 0 {
                        return Err(LogError::CorruptBatch {
                            path: self.dir.clone(),
                            position: iter.position() as u64,
                            source: BatchError::RecordCount {
                                record_count: h.record_count,
                                last_offset_delta: h.last_offset_delta,
                            },
                        });
                    }
                    scan.offsets += i64::from(h.last_offset_delta) + 1;
                    scan.records += u64::try_from(h.record_count).unwrap_or(0);
                }
                Some(Err(source)) => {
                    return Err(LogError::CorruptBatch {
                        path: self.dir.clone(),
                        position: iter.position() as u64,
                        source,
                    })
                }
            }
        }
        Ok(scan)
    }

    /// A leader's offsets: each batch's header patched with its base offset
    /// (from `first_offset` on), `leader_epoch` and, for LogAppendTime,
    /// `now_ms`. Pure: nothing is written; bodies stay in the caller's buffer.
    fn assign_offsets(
        &self,
        batches: &[u8],
        headers: &[BatchHeader],
        first_offset: i64,
        leader_epoch: i32,
        ts_type: TimestampType,
        now_ms: i64,
    ) -> Result<Vec<Part>, LogError> {
        let mut parts: Vec<Part> = Vec::with_capacity(headers.len());
        let mut next = first_offset;
        let mut at = 0usize;
        for header in headers {
            let corrupt = |source| LogError::CorruptBatch {
                path: self.dir.clone(),
                position: at as u64,
                source,
            };
            let remaining = batches.len().saturating_sub(at);
            let rest = batches.get(at..).unwrap_or(&[]);
            let len = header.total_len();
            let batch = rest.get(..len).ok_or_else(|| {
                corrupt(BatchError::Truncated {
                    position: 0,
                    needed: len,
                    available: remaining,
                })
            })?;
            // Offsets, epoch and append time live in the 61-byte header: patch
            // a copy of it and write the body from the caller's bytes as is.
            let mut patched = [0u8; BATCH_HEADER_LEN];
            patched.copy_from_slice(
                batch
                    .get(..BATCH_HEADER_LEN)
                    .unwrap_or(&[0u8; BATCH_HEADER_LEN]),
            );
            let body = batch.get(BATCH_HEADER_LEN..).unwrap_or(&[]);
            set_base_offset(&mut patched, next).map_err(corrupt)?;
            set_partition_leader_epoch(&mut patched, leader_epoch).map_err(corrupt)?;
            let max_timestamp = match ts_type {
                TimestampType::LogAppendTime => {
                    set_log_append_time_split(&mut patched, body, now_ms).map_err(corrupt)?;
                    now_ms
                }
                TimestampType::CreateTime => header.max_timestamp,
            };
            let last_offset = next + i64::from(header.last_offset_delta);
            parts.push(Part {
                header: patched,
                body: at + BATCH_HEADER_LEN..at + len,
                last_offset,
                max_timestamp,
            });
            next = last_offset + 1;
            at += len;
        }
        Ok(parts)
    }

    /// Writes `parts` at the end of the active segment (the caller rolled
    /// already) with one positioned write, then their index entries; undoes
    /// all on failure. Updates the segment's bookkeeping on success.
    fn write_parts(
        &mut self,
        batches: &[u8],
        parts: &[Part],
        first_offset: i64,
        now_ms: i64,
    ) -> Result<Written, LogError> {
        let limits = limits(&self.config);
        let segment = self.active();
        let base = segment.base_offset;
        let start_size = segment.size;
        let mut position = segment.size;
        let mut cursor = IndexCursor {
            bytes_since_index: segment.bytes_since_index,
            max_timestamp: segment.max_timestamp,
            offset_of_max: segment.offset_of_max_timestamp,
            last_time_ts: segment.last_time_entry()?.map_or(i64::MIN, |t| t.timestamp),
            time_entry_skipped: segment.time_entry_skipped,
        };
        let offset_index_len = segment.offset_index.len();
        let time_index_len = segment.time_index.len();
        let mut offset_entries = Vec::new();
        let mut time_entries = Vec::new();
        let mut written = Written {
            next: first_offset,
            max_timestamp: -1,
        };
        for part in parts {
            let len = (BATCH_HEADER_LEN + part.body.len()) as u64;
            cursor.on_batch(
                &limits,
                base,
                position,
                len,
                part.last_offset,
                part.max_timestamp,
                (offset_index_len, &mut offset_entries),
                (time_index_len, &mut time_entries),
            );
            position += len;
            written.next = part.last_offset + 1;
            written.max_timestamp = written.max_timestamp.max(part.max_timestamp);
        }

        // Commit: log data, then index entries (pending in memory; a write per
        // `WRITE_BATCH` of them); undo all on failure.
        let segment = self.active_mut();
        let file = segment.active_file()?.clone();
        let slices: Vec<&[u8]> = parts
            .iter()
            .flat_map(|p| [&p.header[..], batches.get(p.body.clone()).unwrap_or(&[])])
            .collect();
        let result = write_all_vectored_at(&file, &slices, start_size)
            .map_err(io_err(&segment.log_path))
            .and_then(|()| {
                let path = || segment.log_path.with_extension("index");
                segment
                    .offset_index
                    .append(path, &offset_entries)
                    .map_err(|e| io_err(&path())(e))
            })
            .and_then(|()| {
                let path = || segment.log_path.with_extension("timeindex");
                segment
                    .time_index
                    .append(path, &time_entries)
                    .map_err(|e| io_err(&path())(e))
            });
        if let Err(e) = result {
            // Best effort: the original error is what the caller needs to see.
            let _ = file.set_len(start_size);
            let index_path = segment.index_path();
            let _ = segment.offset_index.truncate(&index_path, offset_index_len);
            let time_path = segment.time_index_path();
            let _ = segment.time_index.truncate(&time_path, time_index_len);
            return Err(e);
        }
        assert_eq!(
            segment.next_offset, first_offset,
            "appends must be contiguous: segment ends at {} but append starts at {}",
            segment.next_offset, first_offset
        );
        segment.size = position;
        segment.next_offset = written.next;
        segment.max_timestamp = cursor.max_timestamp;
        segment.offset_of_max_timestamp = cursor.offset_of_max;
        segment.bytes_since_index = cursor.bytes_since_index;
        segment.roll_base_ms.get_or_insert(now_ms);
        segment.time_entry_skipped = cursor.time_entry_skipped;
        segment.dirty = true;
        Ok(written)
    }

    /// After a write: counts the records toward `flush.messages` and
    /// flushes when it is reached.
    fn after_write(&mut self, records: u64, now_ms: i64) -> Result<(), LogError> {
        self.unflushed_messages = self.unflushed_messages.saturating_add(records);
        if self.unflushed_messages >= self.config.flush_interval_messages {
            self.flush_at(now_ms, false)?;
        }
        Ok(())
    }

    /// Checks each batch of an append against the producer state (batches of
    /// the same producer earlier in the append included). `Ok(Ok(updates))`:
    /// the producers' entries once the append is written; `Ok(Err(info))`: a
    /// batch repeats one already written (Kafka answers the whole append with
    /// that batch's offsets and writes nothing); `Err`: a refused sequence or
    /// epoch.
    #[allow(clippy::type_complexity)]
    fn check_producers(
        &self,
        headers: &[BatchHeader],
        first_offset: i64,
        ts_type: TimestampType,
        now_ms: i64,
        leader_epoch: i32,
    ) -> Result<Result<Vec<(i64, ProducerEntry)>, AppendInfo>, LogError> {
        let mut updates: Vec<(i64, ProducerEntry)> = Vec::new();
        let mut next = first_offset;
        for h in headers {
            let base = next;
            next = next.saturating_add(i64::from(h.last_offset_delta) + 1);
            if h.producer_id <= NO_PRODUCER_ID || h.is_control() {
                continue;
            }
            let before = updates
                .iter()
                .rev()
                .find(|(id, _)| *id == h.producer_id)
                .map(|(_, e)| e)
                .or_else(|| self.producers.get(h.producer_id));
            let last_seq = producer_state::last_sequence(h.base_sequence, h.last_offset_delta);
            match ProducerState::check_entry(
                before,
                h.producer_id,
                h.producer_epoch,
                h.base_sequence,
                last_seq,
            )? {
                Verdict::Duplicate(batch) => {
                    // Kafka reports the original batch's timestamp as the
                    // append time of a duplicate.
                    return Ok(Err(AppendInfo {
                        first_offset: batch.first_offset(),
                        last_offset: batch.last_offset,
                        max_timestamp: batch.timestamp,
                        log_append_time_ms: batch.timestamp,
                        log_start_offset: self.log_start_offset,
                        duplicate: true,
                        leader_epoch,
                    }));
                }
                Verdict::Append => {}
            }
            let mut assigned = *h;
            assigned.base_offset = base;
            let max_timestamp = match ts_type {
                TimestampType::LogAppendTime => now_ms,
                TimestampType::CreateTime => h.max_timestamp,
            };
            let entry = ProducerState::updated_entry(before, &assigned, max_timestamp);
            updates.push((h.producer_id, entry));
        }
        Ok(Ok(updates))
    }

    /// Every producer this partition remembers (DescribeProducers).
    pub fn active_producers(&self) -> Vec<ActiveProducer> {
        self.producers.active()
    }

    /// The producer state (tests, tools).
    pub fn producer_state(&self) -> &ProducerState {
        &self.producers
    }

    /// Counts this log's producers in `budget` (the broker-wide bound) from now on.
    pub fn set_producer_budget(&mut self, budget: Arc<ProducerBudget>) {
        self.producers.set_budget(budget);
    }

    /// Forgets producers idle for `producer.id.expiration.ms`; returns how many.
    pub fn remove_expired_producers(&mut self, now_ms: i64) -> usize {
        self.producers
            .remove_expired(now_ms, self.config.producer_id_expiration_ms)
    }

    /// Rebuilds the producer state for the current log: out-of-range
    /// snapshots are deleted, the newest valid one at or below the log end is
    /// loaded (corrupt ones are deleted, never trusted) and the log after it
    /// replayed; with none, the whole log is replayed. Expired producers are
    /// dropped.
    fn load_producer_state(&mut self, now_ms: i64) -> Result<(), LogError> {
        let leo = self.log_end_offset();
        let snapshots = producer_state::list_snapshots(&self.dir)?;
        let mut from = self.first_segment().base_offset;
        self.producers.clear();
        self.last_snapshot = None;
        for &offset in snapshots.iter().rev() {
            if offset > leo {
                producer_state::remove_snapshot(&self.dir, offset)?;
                self.dir_dirty = true;
                continue;
            }
            if self.last_snapshot.is_some() {
                break;
            }
            let path = producer_state::snapshot_path(&self.dir, offset);
            let loaded = fs::read(&path)
                .ok()
                .and_then(|bytes| self.producers.load_snapshot(&bytes));
            if loaded.is_some() {
                self.last_snapshot = Some(offset);
                from = from.max(offset);
            } else {
                tracing::warn!(snapshot = %path.display(), "corrupt producer state snapshot removed; rebuilding from the log");
                producer_state::remove_snapshot(&self.dir, offset)?;
                self.dir_dirty = true;
            }
        }
        let replayed = self.replay_producers(from)?;
        self.remove_old_snapshots()?;
        tracing::debug!(dir = %self.dir.display(), snapshot = ?self.last_snapshot, replayed, producers = self.producers.len(), "producer state loaded");
        self.producers
            .remove_expired(now_ms, self.config.producer_id_expiration_ms);
        Ok(())
    }

    /// Replays the headers of every batch at or after `from` into the producer
    /// state; returns how many batches were read.
    fn replay_producers(&mut self, from: i64) -> Result<usize, LogError> {
        let mut count = 0;
        let first = self.segment_index_for(from);
        for i in first..self.segments.len() {
            let Some(segment) = self.segments.get(i) else {
                break;
            };
            if segment.next_offset <= from || segment.size == 0 {
                continue;
            }
            let file = segment.file(&self.files)?;
            for item in segment.headers_from(&file, from)? {
                let (_, header) = item?;
                if header.base_offset >= from {
                    self.producers.replay(&header);
                    count += 1;
                }
            }
        }
        Ok(count)
    }

    /// Writes the producer state as the snapshot at the log end offset (at a
    /// roll, the new segment's base). Old snapshots below the first segment
    /// are removed, keeping the newest.
    fn snapshot_producers(&mut self, durable: bool) -> Result<(), LogError> {
        let offset = self.log_end_offset();
        let bytes = self.producers.encode_snapshot();
        producer_state::write_snapshot(&self.dir, offset, &bytes, durable)?;
        self.producers.mark_saved();
        self.last_snapshot = Some(offset);
        self.dir_dirty = true;
        self.remove_old_snapshots()
    }

    /// Whether a reopen would replay batches, or forget an expiry, that a
    /// snapshot at the log end saves.
    fn snapshot_due(&self) -> bool {
        let leo = self.log_end_offset();
        match self.last_snapshot {
            Some(offset) => offset != leo || self.producers.is_dirty(),
            None => leo > self.first_segment().base_offset,
        }
    }

    /// Keeps, as Kafka does, one snapshot per segment (at its base, written
    /// when it rolled in) and the newest; removes the others (below the log,
    /// of segments a clean merged, or older clean-shutdown ones).
    fn remove_old_snapshots(&mut self) -> Result<(), LogError> {
        let snapshots = producer_state::list_snapshots(&self.dir)?;
        let newest = snapshots.last().copied();
        for offset in snapshots {
            let segment_base = self
                .segments
                .binary_search_by_key(&offset, |s| s.base_offset)
                .is_ok();
            if !segment_base && Some(offset) != newest {
                producer_state::remove_snapshot(&self.dir, offset)?;
                self.dir_dirty = true;
            }
        }
        Ok(())
    }

    /// Rolls when the active segment is non-empty and the append would overflow it
    /// (bytes, age, index room, u32 relative offsets).
    fn maybe_roll(&mut self, bytes: u64, offsets: i64, now_ms: i64) -> Result<(), LogError> {
        if self.needs_roll(bytes, offsets, now_ms) {
            self.roll()?;
        }
        let leo = self.log_end_offset();
        let relative_end = |base: i64| leo.saturating_add(offsets).saturating_sub(1) - base;
        let segment = self.active();
        if segment.size.saturating_add(bytes) > u64::from(u32::MAX)
            || relative_end(segment.base_offset) > i64::from(u32::MAX)
        {
            return Err(LogError::AppendTooLarge { bytes, offsets });
        }
        Ok(())
    }

    /// Whether appending `bytes` holding `offsets` offsets at `now_ms` rolls first.
    fn needs_roll(&self, bytes: u64, offsets: i64, now_ms: i64) -> bool {
        let limits = limits(&self.config);
        let leo = self.log_end_offset();
        let segment = self.active();
        let relative_end = leo.saturating_add(offsets).saturating_sub(1) - segment.base_offset;
        let too_big = segment.size.saturating_add(bytes) > self.config.segment_bytes;
        let too_old = segment
            .roll_base_ms
            .is_some_and(|t| now_ms.saturating_sub(t) > self.config.segment_ms);
        let index_full = !limits.offset_room(segment.offset_index.len())
            || !limits.time_room(segment.time_index.len());
        let offsets_overflow = relative_end > i64::from(u32::MAX);
        segment.size > 0 && (too_big || too_old || index_full || offsets_overflow)
    }

    /// Whether [`Log::append`] of `batches` at `now_ms` would do no more than its
    /// positioned writes: no segment roll (new segment files), no fsync for
    /// `flush.messages`. (Every few appends one of those writes goes to an index
    /// file, which the first such write creates.) A caller may then append on a
    /// thread that must not block long. `false` also for input `append` would
    /// refuse, so that it is refused where errors are reported.
    /// [`Log::append_is_quick`] for one validated batch, from its header.
    pub fn append_batch_is_quick(&self, batch: &ValidatedBatch, now_ms: i64) -> bool {
        let scan = Scan::of(*batch.header());
        scan.offsets > 0
            && self.unflushed_messages.saturating_add(scan.records)
                < self.config.flush_interval_messages
            && !self.needs_roll(batch.bytes().len() as u64, scan.offsets, now_ms)
    }

    pub fn append_is_quick(&self, batches: &[u8], now_ms: i64) -> bool {
        let (mut offsets, mut records) = (0i64, 0u64);
        for item in Batches::new(batches) {
            let Ok((_, h)) = item else {
                return false;
            };
            if h.last_offset_delta < 0 {
                return false;
            }
            offsets += i64::from(h.last_offset_delta) + 1;
            records += u64::try_from(h.record_count).unwrap_or(0);
        }
        offsets > 0
            && self.unflushed_messages.saturating_add(records) < self.config.flush_interval_messages
            && !self.needs_roll(batches.len() as u64, offsets, now_ms)
    }

    /// Closes the active segment and starts a new one at the log end offset.
    fn roll(&mut self) -> Result<(), LogError> {
        let new_base = self.log_end_offset();
        let old_base = self.active().base_offset;
        assert!(
            new_base > old_base,
            "roll must create increasing base offsets: {new_base} after {old_base}"
        );
        let segment = Segment::create(&self.dir, new_base)?;
        // The closed segment's descriptor is dropped, not cached: at rest a partition
        // holds only its active `.log` (a lagging reader reopens it once).
        drop(self.active_mut().close_active()?);
        self.segments.push(segment);
        self.dir_dirty = true;
        // Kafka snapshots the producer state at every roll, so recovery
        // replays at most the active segment. A failed snapshot only means a
        // longer replay: it does not fail the append.
        if let Err(e) = self.snapshot_producers(false) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "producer state snapshot not written");
        }
        tracing::debug!(dir = %self.dir.display(), base_offset = new_base, "rolled segment");
        Ok(())
    }

    /// Index of the segment that may contain `offset` (the last with base <= offset).
    fn segment_index_for(&self, offset: i64) -> usize {
        self.segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1)
    }

    /// Reads from the batch containing `start_offset` (whole batch, even from its
    /// middle), up to `max_bytes`, never past the batch containing `max_offset`
    /// (exclusive bound, e.g. the high watermark); whole batches only: where Kafka
    /// sends the slice up to `max_bytes`, ending in a partial batch the client throws
    /// away, this ends at the last batch that fits (clients accept both). A first batch larger than `max_bytes` is returned whole with
    /// `min_one_batch` and not at all without it: Kafka (Fetch v3+, KIP-74) answers an
    /// incomplete first batch with empty records, since clients refetch that partition
    /// first later, and a Java consumer given only a partial batch fails with "no
    /// complete records". Stays within one segment.
    pub fn read(
        &self,
        start_offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one_batch: bool,
    ) -> Result<Option<ReadSlice>, LogError> {
        let log_end = self.log_end_offset();
        if start_offset < self.log_start_offset || start_offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                offset: start_offset,
                log_start: self.log_start_offset,
                log_end,
            });
        }
        if start_offset >= max_offset || start_offset == log_end {
            return Ok(None);
        }
        for segment in self
            .segments
            .iter()
            .skip(self.segment_index_for(start_offset))
        {
            let file = segment.file(&self.files)?;
            let Some((start_pos, first)) = segment.find_batch(&file, start_offset)? else {
                continue;
            };
            let limit = if max_offset >= segment.next_offset {
                segment.size
            } else {
                segment
                    .find_batch(&file, max_offset)?
                    .map_or(segment.size, |(pos, _)| pos)
            };
            let available = limit.saturating_sub(start_pos);
            let wanted = if min_one_batch {
                max_bytes.max(first.total_len())
            } else if first.total_len() > max_bytes {
                return Ok(None);
            } else {
                max_bytes
            };
            let len = if available <= wanted as u64 {
                available
            } else {
                // The first batch fits in `wanted`, so there is a batch end to cut at.
                let to = start_pos + wanted as u64;
                segment
                    .last_batch_end(&file, start_pos, to)?
                    .map_or(wanted as u64, |end| end - start_pos)
            } as usize;
            if len == 0 {
                return Ok(None);
            }
            return Ok(Some(ReadSlice {
                file,
                position: start_pos,
                len,
                first_batch_offset: first.base_offset,
            }));
        }
        Ok(None)
    }

    /// The first batch, in offset order and at or above the log start offset, whose
    /// maxTimestamp is `>= ts` (ListOffsets by timestamp; the caller looks inside).
    pub fn find_batch_by_timestamp(&self, ts: i64) -> Result<Option<Bytes>, LogError> {
        for segment in &self.segments {
            if segment.size == 0
                || segment.next_offset <= self.log_start_offset
                || segment.max_timestamp < ts
            {
                continue;
            }
            let file = segment.file(&self.files)?;
            if let Some((pos, header)) =
                segment.find_batch_by_timestamp(&file, ts, self.log_start_offset)?
            {
                return segment.read_bytes(&file, pos, header.total_len()).map(Some);
            }
        }
        Ok(None)
    }

    /// The (first) batch holding the largest timestamp (ListOffsets MAX_TIMESTAMP).
    pub fn max_timestamp_batch(&self) -> Result<Option<Bytes>, LogError> {
        let mut best: Option<&Segment> = None;
        for segment in &self.segments {
            if segment.size == 0 || segment.next_offset <= self.log_start_offset {
                continue;
            }
            if best.is_none_or(|b| segment.max_timestamp > b.max_timestamp) {
                best = Some(segment);
            }
        }
        let Some(segment) = best else {
            return Ok(None);
        };
        let target = segment
            .offset_of_max_timestamp
            .max(segment.base_offset)
            .max(self.log_start_offset);
        let file = segment.file(&self.files)?;
        match segment.find_batch(&file, target)? {
            Some((pos, header)) => segment.read_bytes(&file, pos, header.total_len()).map(Some),
            None => Ok(None),
        }
    }

    /// Deletes whole closed segments (never the active one), oldest first, while one
    /// of these holds: the segment lies below the log start offset; its largest
    /// timestamp is older than `retention.ms`; removing it keeps the log at least
    /// `retention.bytes` big. Only segments wholly below `high_watermark` may go
    /// (Kafka's `deletableSegments`): records not yet replicated to the ISR stay, so
    /// the log start offset never passes the high watermark. Advances the log start
    /// offset. Returns segments removed.
    pub fn apply_retention(&mut self, now_ms: i64, high_watermark: i64) -> Result<usize, LogError> {
        // A compacted-only log keeps its segments whatever their age and size
        // (Kafka: retention applies with cleanup.policy=delete only).
        let (retention_ms, retention_bytes) = if self.config.cleanup_delete {
            (self.config.retention_ms, self.config.retention_bytes)
        } else {
            (-1, -1)
        };
        let mut excess = i64::try_from(self.size_bytes())
            .unwrap_or(i64::MAX)
            .saturating_sub(retention_bytes);
        let mut remove = 0usize;
        for pair in self.segments.windows(2) {
            let [segment, next] = pair else { break };
            if next.base_offset > high_watermark {
                break;
            }
            let size = i64::try_from(segment.size).unwrap_or(i64::MAX);
            let below_start = next.base_offset <= self.log_start_offset;
            let expired = retention_ms >= 0
                && now_ms.saturating_sub(segment.largest_timestamp()) > retention_ms;
            let oversize = retention_bytes >= 0 && excess - size >= 0;
            if !(below_start || expired || oversize) {
                break;
            }
            excess -= size;
            remove += 1;
        }
        self.remove_oldest_segments(remove)?;
        Ok(remove)
    }

    /// Removes the `count` oldest segments (never the active one) and raises the log
    /// start offset to the new first segment's base.
    fn remove_oldest_segments(&mut self, count: usize) -> Result<(), LogError> {
        let count = count.min(self.segments.len().saturating_sub(1));
        if count == 0 {
            return Ok(());
        }
        let removed: Vec<Segment> = self.segments.drain(..count).collect();
        let new_start = self.first_segment().base_offset.max(self.log_start_offset);
        // Persist the new start before unlinking, so a crash cannot resurrect a log
        // start below data that is already gone.
        self.set_log_start_offset(new_start)?;
        for segment in &removed {
            self.files.forget(segment.base_offset);
            segment.delete_files()?;
        }
        self.dir_dirty = true;
        self.remove_old_snapshots()?;
        tracing::info!(
            dir = %self.dir.display(),
            segments = count,
            log_start_offset = self.log_start_offset,
            "deleted old segments"
        );
        Ok(())
    }

    fn set_log_start_offset(&mut self, offset: i64) -> Result<(), LogError> {
        if offset != self.log_start_offset {
            write_checkpoint(&self.dir, LOG_START_OFFSET_FILE, offset, true)?;
            self.log_start_offset = offset;
            let before = self.epochs.entries().to_vec();
            self.epochs.truncate_from_start(offset);
            self.flush_epochs_if_changed(&before);
        }
        self.check_invariants();
        Ok(())
    }

    /// DeleteRecords: raises the log start offset to `offset` (no-op if not higher)
    /// and deletes the closed segments wholly below it.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<(), LogError> {
        let log_end = self.log_end_offset();
        if offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset,
                log_end,
            });
        }
        if offset <= self.log_start_offset {
            return Ok(());
        }
        self.set_log_start_offset(offset)?;
        let below = self
            .segments
            .windows(2)
            .take_while(|w| matches!(w, [_, next] if next.base_offset <= offset))
            .count();
        self.remove_oldest_segments(below)
    }

    /// Cuts every offset `>= offset` (replica truncation). A batch straddling `offset`
    /// is removed whole, so the log end offset may land below `offset`. Below the log
    /// start offset, the log is emptied and restarted at `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        // Lower the recovery point durably first: otherwise a crash could trust
        // segments whose bytes are about to be replaced.
        if self.recovery_point > offset {
            let point = offset.max(0);
            if write_recovery_point(&self.dir, point, true)? {
                sync_dir(&self.dir)?;
            }
            self.recovery_point = point;
        }
        if offset < self.log_start_offset || offset < self.first_segment().base_offset {
            self.replace_all_segments(offset)?;
            self.set_log_start_offset(offset)?;
            return Ok(());
        }
        let epochs_before = self.epochs.entries().to_vec();
        let now_ms = self.last_flush_ms;
        let keep = self.segment_index_for(offset) + 1;
        for segment in self.segments.drain(keep..) {
            self.files.forget(segment.base_offset);
            segment.delete_files()?;
        }
        let dir = self.dir.clone();
        let limits = limits(&self.config);
        let segment = self.active();
        let base = segment.base_offset;
        // The cut segment becomes active again (recovered below with its own
        // descriptor).
        self.files.forget(base);
        let file = match &segment.file {
            Some(file) => file.clone(),
            None => Arc::new(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&segment.log_path)
                    .map_err(io_err(&segment.log_path))?,
            ),
        };
        if let Some((pos, _)) = segment.find_batch(&file, offset)? {
            file.set_len(pos).map_err(io_err(&segment.log_path))?;
        }
        drop(file);
        // Rebuild the cut segment's state and indexes from its data (O(segment); rare).
        let recovered = Segment::recover(&dir, base, limits, i64::MAX)?;
        *self.active_mut() = recovered.segment;
        self.dir_dirty = true;
        self.recovery_point = self.recovery_point.min(self.log_end_offset());
        // The producer state follows the log back: snapshots above the new
        // end go, the state is reloaded from the newest one left.
        self.load_producer_state(now_ms)?;
        // So do the epochs (Kafka's truncateFromEnd).
        self.epochs.truncate_from_end(self.log_end_offset());
        self.flush_epochs_if_changed(&epochs_before);
        self.check_invariants();
        Ok(())
    }

    /// Empties the log and starts it at `offset` (Kafka's
    /// `truncateFullyAndStartAt`): a follower whose leader no longer has
    /// the offsets it would fetch next.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), LogError> {
        if self.recovery_point > offset && write_recovery_point(&self.dir, offset.max(0), true)? {
            sync_dir(&self.dir)?;
        }
        self.replace_all_segments(offset)?;
        self.recovery_point = offset;
        self.set_log_start_offset(offset)?;
        self.check_invariants();
        Ok(())
    }

    /// Deletes every segment and starts an empty one at `base_offset`.
    fn replace_all_segments(&mut self, base_offset: i64) -> Result<(), LogError> {
        for segment in self.segments.drain(..) {
            self.files.forget(segment.base_offset);
            segment.delete_files()?;
        }
        self.segments.push(Segment::create(&self.dir, base_offset)?);
        self.dir_dirty = true;
        self.recovery_point = self.recovery_point.min(base_offset);
        // Kafka's truncateFullyAndStartAt: no producer state survives, and
        // no epoch.
        self.producers.clear();
        let epochs_before = self.epochs.entries().to_vec();
        self.epochs = LeaderEpochCache::default();
        self.flush_epochs_if_changed(&epochs_before);
        for offset in producer_state::list_snapshots(&self.dir)? {
            producer_state::remove_snapshot(&self.dir, offset)?;
        }
        self.last_snapshot = None;
        Ok(())
    }

    /// fsyncs every segment written since the last flush (pending index entries
    /// written first), then records the recovery point (not fsynced itself: a lost or
    /// older checkpoint only means more recovery).
    pub fn flush(&mut self) -> Result<(), LogError> {
        let now = self.last_flush_ms;
        self.flush_at(now, false)
    }

    /// Nothing to make durable: no append since the last flush (everything is below
    /// the recovery point, index entries included).
    fn is_flushed(&self) -> bool {
        self.recovery_point == self.log_end_offset()
            && !self.segments.iter().any(Segment::needs_sync)
    }

    /// The checkpoint goes out after the data fsyncs (its content must never reach
    /// the disk before theirs) but before the one directory fsync, which covers new
    /// segment files and a new checkpoint file alike: a segment file whose directory
    /// entry is lost is lost data whatever the checkpoint says, so the checkpoint
    /// need not wait for the entries.
    fn flush_at(&mut self, now_ms: i64, durable_checkpoint: bool) -> Result<(), LogError> {
        for segment in &mut self.segments {
            if segment.sync()? {
                self.dir_dirty = true;
            }
        }
        let log_end = self.log_end_offset();
        if log_end != self.recovery_point || durable_checkpoint {
            if write_recovery_point(&self.dir, log_end, durable_checkpoint)? {
                self.dir_dirty = true;
            }
            self.recovery_point = log_end;
        }
        if self.dir_dirty {
            sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        if self.parent_dirty && log_end > self.log_start_offset {
            if let Some(parent) = self.dir.parent() {
                sync_dir(parent)?;
            }
            self.parent_dirty = false;
        }
        self.unflushed_messages = 0;
        self.last_flush_ms = now_ms;
        Ok(())
    }

    /// Flushes when `flush.ms` has passed since the last flush and data is pending.
    pub fn flush_if_due(&mut self, now_ms: i64) -> Result<(), LogError> {
        let pending = self.unflushed_messages > 0 || !self.is_flushed();
        if pending && now_ms.saturating_sub(self.last_flush_ms) >= self.config.flush_interval_ms {
            self.flush_at(now_ms, false)?;
        }
        Ok(())
    }

    /// Closes the log so that the next open recovers nothing. With nothing appended
    /// since the last flush, that is already true and nothing is written or synced.
    /// Otherwise: the final time index entry if one was left out for lack of room
    /// (else a reopen finds the max timestamp by itself), then a flush (fsync of the
    /// files written since the last one), then the recovery point, fsynced: in place,
    /// or as a new file plus a directory fsync the first time.
    pub fn close(mut self) -> Result<(), LogError> {
        if self.active().time_entry_skipped {
            self.active_mut().append_final_time_entry()?;
        }
        // Kafka snapshots the producer state at a clean shutdown, so the next
        // open replays nothing. Unchanged since the newest snapshot: nothing
        // to write.
        let snapshot_due = self.snapshot_due();
        if self.is_flushed() && !snapshot_due {
            return Ok(());
        }
        let now = self.last_flush_ms;
        self.flush_at(now, true)?;
        if snapshot_due {
            self.snapshot_producers(true)?;
            sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Removes the partition directory and everything in it.
    pub fn delete(self) -> Result<(), LogError> {
        let dir = self.dir.clone();
        drop(self);
        fs::remove_dir_all(&dir).map_err(io_err(&dir))
    }
}

#[cfg(test)]
mod epoch_tests;
#[cfg(test)]
mod follower_tests;
#[cfg(test)]
mod producer_tests;
#[cfg(test)]
mod tests;

/// `pwritev` of `parts` at `offset`, resuming after partial writes. At most
/// `MAX_IOVECS` slices per call (Linux's IOV_MAX is 1024).
fn write_all_vectored_at(file: &File, parts: &[&[u8]], mut offset: u64) -> io::Result<()> {
    const MAX_IOVECS: usize = 512;
    let mut index = 0usize;
    let mut skip = 0usize;
    loop {
        while index < parts.len() && parts.get(index).map_or(0, |p| p.len()) == skip {
            index += 1;
            skip = 0;
        }
        if index >= parts.len() {
            return Ok(());
        }
        let slices: Vec<io::IoSlice<'_>> = parts[index..]
            .iter()
            .take(MAX_IOVECS)
            .enumerate()
            .map(|(i, p)| {
                io::IoSlice::new(if i == 0 {
                    p.get(skip..).unwrap_or(&[])
                } else {
                    p
                })
            })
            .collect();
        let mut n = rustix::io::pwritev(file, &slices, offset).map_err(io::Error::from)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        offset += n as u64;
        while n > 0 && index < parts.len() {
            let left = parts[index].len() - skip;
            if n >= left {
                n -= left;
                index += 1;
                skip = 0;
            } else {
                skip += n;
                n = 0;
            }
        }
    }
}
