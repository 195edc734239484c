//! felice-log: one partition's log on disk, in Kafka's layout.
//!
//! A partition directory `<log.dir>/<topic>-<partition>/` holds segments
//! `<20-digit base offset>.log` (record batches verbatim, offsets already assigned),
//! sparse `.index` / `.timeindex` files (the active segment's are created with their
//! first entries), `log-start-offset` (moved by retention and DeleteRecords; absent
//! while it is the first segment's base) and `recovery-point` (offset up to which data
//! is fsynced and indexes complete; everything after it is re-validated on open;
//! absent until the first flush) and `<offset>.snapshot` files (idempotent producers'
//! state below that offset: one per segment base, written at roll, plus one at the log
//! end written at a clean close; see `producer_state.rs`). A new partition is just its
//! directory and one empty `.log`.
//!
//! Owns: offset assignment at append, segment rolling, reads for Fetch, lookups for
//! ListOffsets, retention, compaction (`log/cleaner.rs`: `cleaner-offset-checkpoint`,
//! and transient `.cleaned` / `.swap` files), truncation and crash recovery. Batches are validated by the
//! caller ([`felice_wire::validate_batch`]) before [`Log::append`].
//!
//! Invariants: `log_start_offset <= log_end_offset`; segment base offsets strictly
//! increase; appends are contiguous (each append starts at the previous LEO).
//!
//! Memory and descriptors per partition do not grow with the data, only (slightly)
//! with the segment count. Index entries live in their files for every segment; a
//! lookup binary-searches the file with positioned reads unless the answer lies in
//! the active segment's cache of its last 64 offset and 64 time entries (tailing
//! consumers and the high watermark: no syscall). The newest of those entries (fewer
//! than 64) may not be written yet: they go to the file 64 at a time, and at every
//! roll, flush and close (see `index.rs`). Measured on x86-64:
//!
//! | what | bytes |
//! |---|---|
//! | `Log` struct (104 of it the producer state's) + directory path | 320 + ~64 |
//! | each segment (`Segment` + its `.log` path), active or closed | 136 + ~80 |
//! | active segment extra: offset tail 64 × 8, time tail 64 × 16, 2 boxes | ~1,600 |
//! | cache of closed `.log` descriptors (≤ 1 `Arc<File>`) | ~100 |
//!
//! plus ~300 bytes per idempotent producer id the partition remembers
//! (`producer_state.rs`, bounded by `max_producers_per_partition`),
//! so ~2.3 KiB per partition + ~0.2 KiB per closed segment (10,000 partitions of 10
//! segments: ~40 MB), whatever `segment.bytes` and `segment.index.bytes` are. Before,
//! the active segment held all its entries: up to `segment.index.bytes` (~5 MB at the
//! defaults). Transient: an append's new index entries (a few per append); recovery
//! writes rebuilt entries in 512-entry batches.
//!
//! Descriptors: 1 per partition at rest (the active `.log`). Index files are opened
//! per write (one `open` + `pwrite` + `close` per 64 entries, ~256 KiB of batches at
//! the default `index.interval.bytes`), per fsync and per lookup outside the cached
//! tail. Reads add at most 1 of the last read closed segment's `.log`
//! (`segment::FileCache`, kept until another closed segment is read), plus one per
//! in-flight [`ReadSlice`]: worst case 1 + 1 + reads in flight per partition (for
//! 10,000 partitions 20,000 plus reads in flight), where Kafka holds 1–3 per segment.
//!
//! Concurrency: [`Log`] is not synchronised; the broker calls it from blocking threads
//! under a per-partition mutex. A [`ReadSlice`] may be read without that lock.

pub mod epoch_cache;
mod index;
mod log;
mod mapped;
pub mod producer_state;
mod segment;

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;

pub use felice_wire::{BatchError, TimestampType};
pub use log::cleaner::{build_cleaned, CleanPlan, CleanStats, Cleaned, MAX_CLEANER_KEYS};
pub use log::Log;
pub use producer_state::{ActiveProducer, ProducerBudget, ProducerError};

/// Per-log configuration; field names mirror Kafka's topic/broker keys. Replaceable at
/// run time with [`Log::set_config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes` / `log.segment.bytes`: roll when an append would exceed it.
    pub segment_bytes: u64,
    /// `segment.ms` / `log.roll.ms`: roll when the segment's first batch is older.
    pub segment_ms: i64,
    /// `segment.index.bytes`: cap of each index file (the log rolls when one is
    /// full). Entries live on disk; memory does not depend on it.
    pub segment_index_bytes: u64,
    /// `index.interval.bytes`: bytes between index entries.
    pub index_interval_bytes: u64,
    /// `retention.ms`: -1 = keep forever.
    pub retention_ms: i64,
    /// `retention.bytes`: -1 = no size limit.
    pub retention_bytes: i64,
    /// `flush.messages`: fsync after this many records (`u64::MAX` = leave it to the OS).
    pub flush_interval_messages: u64,
    /// `flush.ms`: fsync when the last one is older (`i64::MAX` = never).
    pub flush_interval_ms: i64,
    /// `file.delete.delay.ms`: accepted for parity; segments are unlinked at once
    /// because readers hold the file open (`Arc<File>`), which is what the delay
    /// protects in Kafka.
    pub file_delete_delay_ms: i64,
    /// `cleanup.policy` contains `delete`: retention by time and size applies.
    pub cleanup_delete: bool,
    /// `cleanup.policy` contains `compact`: the cleaner keeps the last record of
    /// each key (see `log/cleaner.rs`).
    pub cleanup_compact: bool,
    /// `delete.retention.ms`: how long a tombstone survives once cleaned.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio` in thousandths (Kafka's 0.5 = 500): clean when
    /// this share of the closed segments' bytes was written since the last clean.
    pub min_cleanable_dirty_ratio_permille: u32,
    /// `min.compaction.lag.ms`: records younger than this are not compacted.
    pub min_compaction_lag_ms: i64,
    /// `producer.id.expiration.ms`: a producer whose last batch's timestamp is
    /// this old is forgotten (see `producer_state.rs`).
    pub producer_id_expiration_ms: i64,
    /// Producer ids remembered per partition (Felice's bound, no Kafka key):
    /// a new one past it evicts the producer whose last batch is oldest.
    pub max_producers_per_partition: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            segment_index_bytes: 10 * 1024 * 1024,
            index_interval_bytes: 4096,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            flush_interval_messages: u64::MAX,
            flush_interval_ms: i64::MAX,
            file_delete_delay_ms: 60_000,
            cleanup_delete: true,
            cleanup_compact: false,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            min_cleanable_dirty_ratio_permille: 500,
            min_compaction_lag_ms: 0,
            producer_id_expiration_ms: 24 * 60 * 60 * 1000,
            max_producers_per_partition: MAX_PRODUCERS_PER_PARTITION,
        }
    }
}

/// Default of [`LogConfig::max_producers_per_partition`]: at ~300 bytes per
/// producer id, at most ~3 MB per partition.
pub const MAX_PRODUCERS_PER_PARTITION: usize = 10_000;

/// Smallest `segment.bytes` Kafka accepts (`LegacyRecord.RECORD_OVERHEAD_V0`).
pub const MIN_SEGMENT_BYTES: u64 = 14;
/// Positions in `.index` are u32 and Kafka's `segment.bytes` is an int.
pub const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;
/// Two time index entries (one is kept for the entry written when a segment closes).
pub const MIN_SEGMENT_INDEX_BYTES: u64 = 24;

impl LogConfig {
    pub fn validate(&self) -> Result<(), LogError> {
        let bad = |reason: String| Err(LogError::InvalidConfig { reason });
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return bad(format!(
                "segment.bytes {} not in [{MIN_SEGMENT_BYTES}, {MAX_SEGMENT_BYTES}]",
                self.segment_bytes
            ));
        }
        if self.segment_ms < 1 {
            return bad(format!("segment.ms {} must be >= 1", self.segment_ms));
        }
        if self.segment_index_bytes < MIN_SEGMENT_INDEX_BYTES
            || self.segment_index_bytes > MAX_SEGMENT_BYTES
        {
            return bad(format!(
                "segment.index.bytes {} not in [{MIN_SEGMENT_INDEX_BYTES}, {MAX_SEGMENT_BYTES}]",
                self.segment_index_bytes
            ));
        }
        if self.retention_ms < -1 || self.retention_bytes < -1 {
            return bad(format!(
                "retention.ms {} / retention.bytes {} must be >= -1",
                self.retention_ms, self.retention_bytes
            ));
        }
        if self.flush_interval_messages < 1 || self.flush_interval_ms < 0 {
            return bad(format!(
                "flush.messages {} must be >= 1 and flush.ms {} >= 0",
                self.flush_interval_messages, self.flush_interval_ms
            ));
        }
        Ok(())
    }
}

/// Result of a successful [`Log::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub first_offset: i64,
    pub last_offset: i64,
    /// Largest timestamp of the appended batches (the append time for LogAppendTime).
    pub max_timestamp: i64,
    /// -1 unless the topic uses LogAppendTime.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
    /// The batch repeats one already written by the same idempotent producer:
    /// nothing was written and the offsets are the original batch's.
    pub duplicate: bool,
    /// The leader epoch the append was made in (a leader's: the one it
    /// stamped; a follower's: its last batch's). An acks=all wait checks it
    /// still holds, so a record truncated away is never acknowledged.
    pub leader_epoch: i32,
}

#[derive(Debug, Error)]
pub enum LogError {
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A batch that fails checks, at `position` in `path` (for [`Log::append`], the
    /// partition directory and the position in the appended buffer).
    #[error("corrupt batch at byte {position} of {}: {source}", path.display())]
    CorruptBatch {
        path: PathBuf,
        position: u64,
        #[source]
        source: BatchError,
    },
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    #[error("invalid log config: {reason}")]
    InvalidConfig { reason: String },
    #[error("append of {bytes} bytes / {offsets} offsets cannot fit in one segment")]
    AppendTooLarge { bytes: u64, offsets: i64 },
    #[error("append of zero bytes")]
    EmptyAppend,
    /// A follower's append that does not start at the log end offset, or
    /// whose batches are not contiguous (Kafka's UnexpectedAppendOffsetException).
    #[error("append starts at offset {got}, expected {expected}")]
    UnexpectedAppendOffset { expected: i64, got: i64 },
    /// An idempotent producer's batch that its sequence or epoch refuses.
    #[error(transparent)]
    Producer(#[from] ProducerError),
}

/// A byte range of one segment file, returned by [`Log::read`]. Holds the segment's
/// file open, so it stays readable after the log lock is released, even if the
/// segment is deleted meanwhile (retention). A concurrent [`Log::truncate_to`] may make
/// it fail or return newer bytes; the replica layer does not truncate while serving
/// the same range.
#[derive(Debug, Clone)]
pub struct ReadSlice {
    file: Arc<File>,
    pub position: u64,
    pub len: usize,
    /// Base offset of the first batch in the slice (may be below the requested offset).
    pub first_batch_offset: i64,
}

impl ReadSlice {
    /// The range as a shared read-only memory map: no copy, no read (see
    /// `mapped.rs`). An empty range gives empty `Bytes`.
    pub fn mapped(&self) -> io::Result<Bytes> {
        if self.len == 0 {
            return Ok(Bytes::new());
        }
        mapped::map(&self.file, self.position, self.len)
    }

    /// Reads the range with one positioned read.
    pub fn read_bytes(&self) -> io::Result<Bytes> {
        // Read into the vector's spare capacity: no zero-fill of a buffer the
        // read overwrites anyway (the zero-fill was a fifth of the broker's
        // instructions in a fetch-heavy profile).
        let mut buf: Vec<u8> = Vec::with_capacity(self.len);
        while buf.len() < self.len {
            let at = self.position + buf.len() as u64;
            let n = rustix::io::pread(&*self.file, rustix::buffer::spare_capacity(&mut buf), at)
                .map_err(io::Error::from)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "segment ended {} bytes before the planned read end",
                        self.len - buf.len()
                    ),
                ));
            }
        }
        // The allocation may be larger than asked: never serve bytes past
        // the planned range (they may lie above the high watermark).
        buf.truncate(self.len);
        Ok(Bytes::from(buf))
    }

    /// The segment file, e.g. for `sendfile`.
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }
}
