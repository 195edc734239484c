//! felice-wire: the byte-level view of Kafka record batches (message format v2,
//! magic 2). No I/O happens here.
//!
//! Owns:
//! - [`BatchHeader`]: a `Copy` view of the fixed 61-byte batch header, read at fixed
//!   big-endian positions ([`BatchHeader::parse`]);
//! - [`validate_batch`]: the produce/recovery check of one whole batch (magic, length,
//!   CRC32C, record count and, for uncompressed batches, the record framing);
//! - [`Batches`]: iteration over concatenated batches (a segment slice, a produce or
//!   fetch payload);
//! - in-place rewrites done at append time ([`set_base_offset`],
//!   [`set_partition_leader_epoch`], [`set_log_append_time`]);
//! - [`Offset`] and [`LeaderEpoch`], newtypes for the integers easiest to mix up;
//! - [`Records`] / [`RecordTimestamps`]: allocation-free walks over the records of an
//!   uncompressed batch, and [`build_batch`], an encoder for tests and tools.
//!
//! Invariants: every function takes untrusted bytes (socket or disk) and never panics
//! on them: all reads go through `get(..)` and report a [`BatchError`] that carries the
//! offending position or values.
//!
//! Concurrency: everything is a pure function of its arguments; callers may use it
//! from any thread.

mod batch;
pub mod codec;
mod records;
mod types;
mod varint;

pub use batch::{
    crc32c, crc32c_append, set_base_offset, set_log_append_time, set_log_append_time_split,
    set_partition_leader_epoch, set_producer, validate_batch, validate_stored_batch, BatchError,
    BatchHeader, Batches, Compression, TimestampType, ValidatedBatch, BATCH_HEADER_LEN,
    BATCH_OVERHEAD, CRC_START, MAGIC_V2,
};
pub use records::{build_batch, Record, RecordSpec, RecordTimestamps, Records};
pub use types::{LeaderEpoch, Offset};
pub use varint::{read_varint, read_varlong, write_varint, write_varlong};
