//! The v2 record-batch header: parsing, validation, iteration and in-place rewrites.
//!
//! Owns the fixed layout (big-endian):
//!
//! ```text
//! 0  baseOffset i64           (not covered by the CRC)
//! 8  batchLength i32          bytes after this field: total = batchLength + 12
//! 12 partitionLeaderEpoch i32 (not covered by the CRC)
//! 16 magic i8                 always 2 here
//! 17 crc u32                  CRC32C of bytes 21..end
//! 21 attributes i16           bits 0-2 codec, 3 timestampType, 4 transactional, 5 control
//! 23 lastOffsetDelta i32
//! 27 baseTimestamp i64
//! 35 maxTimestamp i64
//! 43 producerId i64
//! 51 producerEpoch i16
//! 53 baseSequence i32
//! 57 recordCount i32
//! 61 records...
//! ```
//!
//! Invariants: a [`BatchHeader`] returned by [`BatchHeader::parse`] has magic 2 and
//! `batch_length >= 49` (the header fits in the batch); nothing here trusts any other
//! field. Pure functions, callable from any thread.

use std::ops::Range;

use thiserror::Error;

use crate::records::{well_framed, Records};

/// Size of the fixed v2 batch header; records start at this position.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes before `batchLength` counts: baseOffset (8) + batchLength (4).
pub const BATCH_OVERHEAD: usize = 12;
/// The CRC covers bytes `CRC_START..end` (attributes onwards).
pub const CRC_START: usize = 21;
/// The only message format this crate understands.
pub const MAGIC_V2: i8 = 2;

const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORD_COUNT_AT: usize = 57;

/// Smallest legal `batchLength`: a batch with no records.
const MIN_BATCH_LENGTH: i32 = (BATCH_HEADER_LEN - BATCH_OVERHEAD) as i32;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

const _: () = assert!(RECORD_COUNT_AT + 4 == BATCH_HEADER_LEN);
const _: () = assert!(ATTRIBUTES_AT == CRC_START);

/// Everything that can be wrong with batch bytes. Positions are byte offsets in the
/// slice handed to the failing function (for [`Batches`], in the whole buffer for
/// `Truncated`, otherwise relative to the batch start).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    #[error("truncated batch at byte {position}: need {needed} bytes, only {available} left")]
    Truncated {
        position: usize,
        needed: usize,
        available: usize,
    },
    #[error("unsupported magic {magic} (only message format v2, magic 2)")]
    UnsupportedMagic { magic: i8 },
    #[error("batchLength {batch_length} is below the minimum {MIN_BATCH_LENGTH}")]
    InvalidLength { batch_length: i32 },
    #[error("batchLength {batch_length} means {expected} bytes but the slice holds {actual}")]
    LengthMismatch {
        batch_length: i32,
        expected: usize,
        actual: usize,
    },
    #[error("CRC32C mismatch: header says {stored:#010x}, bytes give {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("recordCount {record_count} does not match lastOffsetDelta {last_offset_delta}")]
    RecordCount {
        record_count: i32,
        last_offset_delta: i32,
    },
    #[error("unknown compression codec {codec}")]
    UnknownCompression { codec: u8 },
    #[error("record framing broken at byte {position} (record {record}): {reason}")]
    RecordFraming {
        position: usize,
        /// Index of the record in its batch, -1 if unknown.
        record: i32,
        reason: &'static str,
    },
    #[error("batch is compressed with {0:?}: its records cannot be walked")]
    Compressed(Compression),
    #[error("{codec:?} data does not decode: {reason}")]
    Codec { codec: Compression, reason: String },
}

/// Compression codec, attributes bits 0-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The codec for a 3-bit codec id; `None` (the Rust one) for 5..=7.
    pub fn from_id(id: u8) -> Option<Compression> {
        match id {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The codec id as stored in the attributes.
    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

/// Attributes bit 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// The fixed 61-byte header of a v2 batch, decoded. Plain data: building one by hand
/// (e.g. for [`BatchHeader::encode`]) is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn array_at<const N: usize>(buf: &[u8], at: usize) -> Result<[u8; N], BatchError> {
    buf.get(at..at + N)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or(BatchError::Truncated {
            position: at,
            needed: N,
            available: buf.len().saturating_sub(at),
        })
}

fn i64_at(buf: &[u8], at: usize) -> Result<i64, BatchError> {
    array_at(buf, at).map(i64::from_be_bytes)
}
fn i32_at(buf: &[u8], at: usize) -> Result<i32, BatchError> {
    array_at(buf, at).map(i32::from_be_bytes)
}
fn i16_at(buf: &[u8], at: usize) -> Result<i16, BatchError> {
    array_at(buf, at).map(i16::from_be_bytes)
}
fn u32_at(buf: &[u8], at: usize) -> Result<u32, BatchError> {
    array_at(buf, at).map(u32::from_be_bytes)
}

fn put_at(buf: &mut [u8], at: usize, bytes: &[u8]) -> Result<(), BatchError> {
    let available = buf.len().saturating_sub(at);
    let dst = buf
        .get_mut(at..at + bytes.len())
        .ok_or(BatchError::Truncated {
            position: at,
            needed: bytes.len(),
            available,
        })?;
    dst.copy_from_slice(bytes);
    Ok(())
}

impl BatchHeader {
    /// Decodes the header at the start of `buf` (which may hold more bytes). Checks
    /// magic == 2 and `batchLength >= 49`; does not check the CRC nor that the whole
    /// batch is present.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        // Check the magic first when we can: an old-format message set is shorter than
        // 61 bytes and should be reported as such, not as truncated.
        if let Some(&magic) = buf.get(MAGIC_AT) {
            let magic = magic as i8;
            if magic != MAGIC_V2 {
                return Err(BatchError::UnsupportedMagic { magic });
            }
        }
        if buf.len() < BATCH_HEADER_LEN {
            return Err(BatchError::Truncated {
                position: 0,
                needed: BATCH_HEADER_LEN,
                available: buf.len(),
            });
        }
        let header = BatchHeader {
            base_offset: i64_at(buf, BASE_OFFSET_AT)?,
            batch_length: i32_at(buf, BATCH_LENGTH_AT)?,
            partition_leader_epoch: i32_at(buf, LEADER_EPOCH_AT)?,
            magic: MAGIC_V2,
            crc: u32_at(buf, CRC_AT)?,
            attributes: i16_at(buf, ATTRIBUTES_AT)?,
            last_offset_delta: i32_at(buf, LAST_OFFSET_DELTA_AT)?,
            base_timestamp: i64_at(buf, BASE_TIMESTAMP_AT)?,
            max_timestamp: i64_at(buf, MAX_TIMESTAMP_AT)?,
            producer_id: i64_at(buf, PRODUCER_ID_AT)?,
            producer_epoch: i16_at(buf, PRODUCER_EPOCH_AT)?,
            base_sequence: i32_at(buf, BASE_SEQUENCE_AT)?,
            record_count: i32_at(buf, RECORD_COUNT_AT)?,
        };
        if header.batch_length < MIN_BATCH_LENGTH {
            return Err(BatchError::InvalidLength {
                batch_length: header.batch_length,
            });
        }
        Ok(header)
    }

    /// Encodes the header fields as they are (the CRC field is written verbatim).
    pub fn encode(&self) -> [u8; BATCH_HEADER_LEN] {
        let mut out = [0u8; BATCH_HEADER_LEN];
        let fields: [(usize, &[u8]); 13] = [
            (BASE_OFFSET_AT, &self.base_offset.to_be_bytes()),
            (BATCH_LENGTH_AT, &self.batch_length.to_be_bytes()),
            (LEADER_EPOCH_AT, &self.partition_leader_epoch.to_be_bytes()),
            (MAGIC_AT, &self.magic.to_be_bytes()),
            (CRC_AT, &self.crc.to_be_bytes()),
            (ATTRIBUTES_AT, &self.attributes.to_be_bytes()),
            (LAST_OFFSET_DELTA_AT, &self.last_offset_delta.to_be_bytes()),
            (BASE_TIMESTAMP_AT, &self.base_timestamp.to_be_bytes()),
            (MAX_TIMESTAMP_AT, &self.max_timestamp.to_be_bytes()),
            (PRODUCER_ID_AT, &self.producer_id.to_be_bytes()),
            (PRODUCER_EPOCH_AT, &self.producer_epoch.to_be_bytes()),
            (BASE_SEQUENCE_AT, &self.base_sequence.to_be_bytes()),
            (RECORD_COUNT_AT, &self.record_count.to_be_bytes()),
        ];
        for (at, bytes) in fields {
            // Positions are compile-time constants inside the 61-byte array.
            if let Some(dst) = out.get_mut(at..at + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        }
        out
    }

    /// Size of the whole batch in bytes (`batchLength + 12`).
    pub fn total_len(&self) -> usize {
        usize::try_from(self.batch_length).unwrap_or(0) + BATCH_OVERHEAD
    }

    /// Offset of the last record (`baseOffset + lastOffsetDelta`).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// Offset following this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    /// The codec; fails for the reserved ids 5..=7.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        let codec = (self.attributes & COMPRESSION_MASK) as u8;
        Compression::from_id(codec).ok_or(BatchError::UnknownCompression { codec })
    }

    /// True when any codec bit is set (also for unknown codecs).
    pub fn is_compressed(&self) -> bool {
        self.attributes & COMPRESSION_MASK != 0
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
}

/// CRC32C (Castagnoli), the checksum of v2 batches.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Continues a CRC32C over more bytes: `crc32c_append(crc32c(a), b) == crc32c(a ++ b)`.
/// For checking batches in chunks without holding them in memory.
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// Checks that `buf` is exactly one well-formed v2 batch, as a produce request must
/// carry and as recovery expects on disk:
/// magic 2, `batchLength` matching the slice, CRC32C, `recordCount >= 1` with
/// `lastOffsetDelta == recordCount - 1`, a known codec and, when uncompressed, exactly
/// `recordCount` records filling the batch (walked without allocating).
///
/// baseOffset and partitionLeaderEpoch are outside the CRC and cannot be checked.
pub fn validate_batch(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    validate(buf, false)
}

/// [`validate_batch`] for batches already in a log: a compacted log holds
/// batches with records removed, which keep their `lastOffsetDelta`, so
/// `recordCount` may be anywhere in `0..=lastOffsetDelta + 1` (Kafka keeps
/// empty batches for producer state). Recovery uses this one.
pub fn validate_stored_batch(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    validate(buf, true)
}

/// One whole record batch, checked (magic 2, length, CRC, record count,
/// record framing when uncompressed), with its header parsed once: a
/// produce checks a client's batch into one, and the log appends it from
/// the header it carries instead of parsing the bytes again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedBatch {
    bytes: bytes::Bytes,
    header: BatchHeader,
}

impl ValidatedBatch {
    /// Checks `bytes` as exactly one batch (as [`validate_batch`]).
    pub fn new(bytes: bytes::Bytes) -> Result<ValidatedBatch, BatchError> {
        let header = BatchHeader::parse(&bytes)?;
        ValidatedBatch::with_header(bytes, header)
    }

    /// [`ValidatedBatch::new`] for a caller that already parsed the header
    /// of `bytes` (it is not parsed again).
    pub fn with_header(
        bytes: bytes::Bytes,
        header: BatchHeader,
    ) -> Result<ValidatedBatch, BatchError> {
        check_parsed(&bytes, header, false)?;
        Ok(ValidatedBatch { bytes, header })
    }

    pub fn bytes(&self) -> &bytes::Bytes {
        &self.bytes
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    pub fn into_bytes(self) -> bytes::Bytes {
        self.bytes
    }
}

fn validate(buf: &[u8], compacted: bool) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    check_parsed(buf, header, compacted)?;
    Ok(header)
}

/// The checks of [`validate`] past the header's own, on its parsed header.
fn check_parsed(buf: &[u8], header: BatchHeader, compacted: bool) -> Result<(), BatchError> {
    let expected = header.total_len();
    if expected != buf.len() {
        return Err(BatchError::LengthMismatch {
            batch_length: header.batch_length,
            expected,
            actual: buf.len(),
        });
    }
    let covered = buf.get(CRC_START..).ok_or(BatchError::Truncated {
        position: CRC_START,
        needed: 1,
        available: 0,
    })?;
    let computed = crc32c(covered);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    let count_ok = if compacted {
        header.record_count >= 0
            && header.last_offset_delta >= 0
            && i64::from(header.record_count) <= i64::from(header.last_offset_delta) + 1
    } else {
        header.record_count >= 1 && header.last_offset_delta == header.record_count - 1
    };
    if !count_ok {
        return Err(BatchError::RecordCount {
            record_count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    if header.compression()? == Compression::None && !well_framed(buf, header.record_count) {
        return Err(framing_error(buf, header));
    }
    Ok(())
}

/// What is wrong with the framing of a batch [`well_framed`] refused, found by the
/// detailed walk.
#[cold]
fn framing_error(buf: &[u8], header: BatchHeader) -> BatchError {
    let mut records = Records::with_header(buf, header);
    for record in records.by_ref() {
        if let Err(e) = record {
            return e;
        }
    }
    let end = records.position();
    BatchError::RecordFraming {
        position: end,
        record: header.record_count,
        reason: if end != buf.len() {
            "bytes left after the last record"
        } else {
            "records are not well framed"
        },
    }
}

/// Iterator over zero or more concatenated batches, header-level only (no CRC).
///
/// Yields each batch's byte range in the buffer with its header. In strict mode
/// ([`Batches::new`]) a batch cut short is an error ([`BatchError::Truncated`]); in
/// [`Batches::allowing_partial_tail`] mode (fetch responses) a trailing partial batch
/// ends the iteration silently. After an error the iterator is fused; [`Batches::position`]
/// tells where the bad batch starts.
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    buf: &'a [u8],
    pos: usize,
    allow_partial_tail: bool,
    done: bool,
}

impl<'a> Batches<'a> {
    pub fn new(buf: &'a [u8]) -> Batches<'a> {
        Batches {
            buf,
            pos: 0,
            allow_partial_tail: false,
            done: false,
        }
    }

    /// Like [`Batches::new`] but a trailing partial batch is treated as end of data.
    pub fn allowing_partial_tail(buf: &'a [u8]) -> Batches<'a> {
        Batches {
            allow_partial_tail: true,
            ..Batches::new(buf)
        }
    }

    /// Start of the next (or failing) batch: after the iteration ends, the number of
    /// bytes made of whole batches.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<(Range<usize>, BatchHeader), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        if rest.is_empty() {
            self.done = true;
            return None;
        }
        if rest.len() < BATCH_HEADER_LEN && self.allow_partial_tail {
            self.done = true;
            return None;
        }
        let header = match BatchHeader::parse(rest) {
            Ok(header) => header,
            Err(BatchError::Truncated { needed, .. }) => {
                self.done = true;
                return Some(Err(BatchError::Truncated {
                    position: self.pos,
                    needed,
                    available: rest.len(),
                }));
            }
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        let total = header.total_len();
        if total > rest.len() {
            self.done = true;
            if self.allow_partial_tail {
                return None;
            }
            return Some(Err(BatchError::Truncated {
                position: self.pos,
                needed: total,
                available: rest.len(),
            }));
        }
        let range = self.pos..self.pos + total;
        self.pos += total;
        Some(Ok((range, header)))
    }
}

/// Rewrites baseOffset in place (not covered by the CRC).
pub fn set_base_offset(buf: &mut [u8], base_offset: i64) -> Result<(), BatchError> {
    put_at(buf, BASE_OFFSET_AT, &base_offset.to_be_bytes())
}

/// Sets the producer fields (producerId, producerEpoch, baseSequence) of the
/// whole batch in `buf` and recomputes its CRC, as an idempotent producer
/// writes them. For clients, tests and the benchmark; the broker never
/// changes them.
pub fn set_producer(
    buf: &mut [u8],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Result<(), BatchError> {
    let total = BatchHeader::parse(buf)?.total_len();
    put_at(buf, PRODUCER_ID_AT, &producer_id.to_be_bytes())?;
    put_at(buf, PRODUCER_EPOCH_AT, &producer_epoch.to_be_bytes())?;
    put_at(buf, BASE_SEQUENCE_AT, &base_sequence.to_be_bytes())?;
    let covered = buf.get(CRC_START..total).ok_or(BatchError::Truncated {
        position: 0,
        needed: total,
        available: buf.len(),
    })?;
    let crc = crc32c(covered);
    put_at(buf, CRC_AT, &crc.to_be_bytes())
}

/// Rewrites partitionLeaderEpoch in place (not covered by the CRC).
pub fn set_partition_leader_epoch(buf: &mut [u8], epoch: i32) -> Result<(), BatchError> {
    put_at(buf, LEADER_EPOCH_AT, &epoch.to_be_bytes())
}

/// Stamps the batch at the start of `buf` with the broker's append time, as Kafka's
/// `DefaultRecordBatch.setMaxTimestamp(LOG_APPEND_TIME, ts)` does: sets the
/// timestampType bit and maxTimestamp (baseTimestamp and the records are left alone;
/// readers use maxTimestamp for every record) and recomputes the CRC. Skips the work
/// when nothing changes. `buf` must hold the whole batch (it may hold more).
pub fn set_log_append_time(buf: &mut [u8], ts_ms: i64) -> Result<(), BatchError> {
    let total = BatchHeader::parse(buf)?.total_len();
    if buf.len() < total {
        return Err(BatchError::Truncated {
            position: 0,
            needed: total,
            available: buf.len(),
        });
    }
    let (header, rest) = buf.split_at_mut(BATCH_HEADER_LEN.min(total));
    let body = rest
        .get(..total.saturating_sub(BATCH_HEADER_LEN))
        .unwrap_or(&[]);
    set_log_append_time_split(header, body, ts_ms)
}

/// [`set_log_append_time`] for a batch held in two pieces: a mutable copy of
/// its 61-byte `header` and its immutable `body` (bytes 61..end), as the log
/// writes them (patched header + the request's bytes, no copy of the body).
/// The CRC is computed over `header[21..61] ++ body`.
pub fn set_log_append_time_split(
    header: &mut [u8],
    body: &[u8],
    ts_ms: i64,
) -> Result<(), BatchError> {
    let parsed = BatchHeader::parse(header)?;
    if parsed.timestamp_type() == TimestampType::LogAppendTime && parsed.max_timestamp == ts_ms {
        return Ok(());
    }
    put_at(
        header,
        ATTRIBUTES_AT,
        &(parsed.attributes | TIMESTAMP_TYPE_BIT).to_be_bytes(),
    )?;
    put_at(header, MAX_TIMESTAMP_AT, &ts_ms.to_be_bytes())?;
    let head = header
        .get(CRC_START..BATCH_HEADER_LEN)
        .ok_or(BatchError::Truncated {
            position: 0,
            needed: BATCH_HEADER_LEN,
            available: header.len(),
        })?;
    let crc = crc32c_append(crc32c(head), body);
    put_at(header, CRC_AT, &crc.to_be_bytes())
}

#[cfg(test)]
mod split_tests {
    use super::*;
    use crate::build_batch;

    #[test]
    fn split_append_time_equals_in_place() {
        let mut whole = build_batch(&[(None, Some(b"a"), 5), (Some(b"k"), Some(b"bb"), 9)]);
        let mut header = [0u8; BATCH_HEADER_LEN];
        header.copy_from_slice(&whole[..BATCH_HEADER_LEN]);
        set_log_append_time_split(&mut header, &whole[BATCH_HEADER_LEN..], 1234).expect("split");
        set_log_append_time(&mut whole, 1234).expect("in place");
        assert_eq!(&header[..], &whole[..BATCH_HEADER_LEN]);
        assert!(validate_batch(&whole).is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::build_batch;
    use proptest::prelude::*;

    fn sample() -> Vec<u8> {
        build_batch(&[
            (Some(b"k1".as_slice()), Some(b"value one".as_slice()), 1_000),
            (None, Some(b"v2".as_slice()), 1_005),
            (Some(b"k3".as_slice()), None, 999),
        ])
    }

    fn arb_header() -> impl Strategy<Value = BatchHeader> {
        (
            (
                any::<i64>(),
                49..i32::MAX,
                any::<i32>(),
                any::<u32>(),
                any::<i16>(),
            ),
            (any::<i32>(), any::<i64>(), any::<i64>()),
            (any::<i64>(), any::<i16>(), any::<i32>(), any::<i32>()),
        )
            .prop_map(
                |((bo, bl, ple, crc, attr), (lod, bt, mt), (pid, pe, bs, rc))| BatchHeader {
                    base_offset: bo,
                    batch_length: bl,
                    partition_leader_epoch: ple,
                    magic: MAGIC_V2,
                    crc,
                    attributes: attr,
                    last_offset_delta: lod,
                    base_timestamp: bt,
                    max_timestamp: mt,
                    producer_id: pid,
                    producer_epoch: pe,
                    base_sequence: bs,
                    record_count: rc,
                },
            )
    }

    proptest! {
        #[test]
        fn header_round_trip(h in arb_header()) {
            let bytes = h.encode();
            prop_assert_eq!(BatchHeader::parse(&bytes)?, h);
        }

        #[test]
        fn parse_and_validate_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = BatchHeader::parse(&bytes);
            let _ = validate_batch(&bytes);
            for item in Batches::new(&bytes) { let _ = item; }
            for item in Batches::allowing_partial_tail(&bytes) { let _ = item; }
        }

        #[test]
        fn valid_batches_validate(
            recs in proptest::collection::vec(
                (proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
                 proptest::option::of(proptest::collection::vec(any::<u8>(), 0..50)),
                 any::<i64>()),
                1..20)
        ) {
            let borrowed: Vec<crate::RecordSpec<'_>> = recs
                .iter()
                .map(|(k, v, t)| (k.as_deref(), v.as_deref(), *t))
                .collect();
            let batch = build_batch(&borrowed);
            let h = validate_batch(&batch)?;
            prop_assert_eq!(h.record_count as usize, recs.len());
        }
    }

    #[test]
    fn sample_is_valid_and_helpers_work() {
        let batch = sample();
        let h = validate_batch(&batch).expect("valid");
        assert_eq!(h.total_len(), batch.len());
        assert_eq!(h.base_offset, 0);
        assert_eq!(h.last_offset(), 2);
        assert_eq!(h.record_count, 3);
        assert_eq!(h.compression(), Ok(Compression::None));
        assert_eq!(h.timestamp_type(), TimestampType::CreateTime);
        assert!(!h.is_transactional());
        assert!(!h.is_control());
        assert_eq!(h.base_timestamp, 1_000);
        assert_eq!(h.max_timestamp, 1_005);
    }

    #[test]
    fn every_single_byte_corruption_is_rejected() {
        let batch = sample();
        for pos in 0..batch.len() {
            let unchecked = (BASE_OFFSET_AT..BASE_OFFSET_AT + 8).contains(&pos)
                || (LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4).contains(&pos);
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = batch.clone();
                if let Some(b) = bad.get_mut(pos) {
                    *b ^= flip;
                }
                let result = validate_batch(&bad);
                if unchecked {
                    assert!(result.is_ok(), "byte {pos} is outside the CRC");
                } else {
                    assert!(
                        result.is_err(),
                        "corruption at byte {pos} ^ {flip:#x} accepted"
                    );
                }
            }
        }
    }

    #[test]
    fn validation_errors_are_specific() {
        let batch = sample();
        let mut bad = batch.clone();
        bad[MAGIC_AT] = 1;
        assert_eq!(
            validate_batch(&bad),
            Err(BatchError::UnsupportedMagic { magic: 1 })
        );

        let mut bad = batch.clone();
        bad[30] ^= 1;
        assert!(matches!(
            validate_batch(&bad),
            Err(BatchError::CrcMismatch { .. })
        ));

        assert!(matches!(
            validate_batch(&batch[..batch.len() - 1]),
            Err(BatchError::LengthMismatch { .. })
        ));
        let mut longer = batch.clone();
        longer.push(0);
        assert!(matches!(
            validate_batch(&longer),
            Err(BatchError::LengthMismatch { .. })
        ));

        // Wrong record count with a correct CRC.
        let mut bad = batch.clone();
        bad[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&2i32.to_be_bytes());
        fix_crc(&mut bad);
        assert!(matches!(
            validate_batch(&bad),
            Err(BatchError::RecordCount { .. })
        ));

        // Count consistent with lastOffsetDelta but not with the framing.
        let mut bad = batch.clone();
        bad[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&2i32.to_be_bytes());
        bad[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4].copy_from_slice(&1i32.to_be_bytes());
        fix_crc(&mut bad);
        assert!(matches!(
            validate_batch(&bad),
            Err(BatchError::RecordFraming { .. })
        ));

        // Zero records.
        let mut bad = batch[..BATCH_HEADER_LEN].to_vec();
        bad[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&MIN_BATCH_LENGTH.to_be_bytes());
        bad[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&0i32.to_be_bytes());
        bad[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4].copy_from_slice(&(-1i32).to_be_bytes());
        fix_crc(&mut bad);
        assert!(matches!(
            validate_batch(&bad),
            Err(BatchError::RecordCount { .. })
        ));

        // Unknown codec.
        let mut bad = batch.clone();
        bad[ATTRIBUTES_AT + 1] |= 0x07;
        fix_crc(&mut bad);
        assert_eq!(
            validate_batch(&bad),
            Err(BatchError::UnknownCompression { codec: 7 })
        );

        // A compressed batch's records are opaque: only header checks apply.
        let mut gz = batch.clone();
        gz[ATTRIBUTES_AT + 1] |= 0x01;
        fix_crc(&mut gz);
        assert!(validate_batch(&gz).is_ok());
    }

    #[test]
    fn framing_checks_inside_records() {
        // Grow the first record's length varint so it claims one more byte than it has.
        let batch = sample();
        let mut bad = batch.clone();
        bad[BATCH_HEADER_LEN] += 2; // zigzag: +1 in value
        fix_crc(&mut bad);
        assert!(matches!(
            validate_batch(&bad),
            Err(BatchError::RecordFraming { .. })
        ));
        // Negative record length.
        let mut bad = batch.clone();
        bad[BATCH_HEADER_LEN] = 0x01;
        fix_crc(&mut bad);
        assert!(matches!(
            validate_batch(&bad),
            Err(BatchError::RecordFraming { .. })
        ));
    }

    fn fix_crc(batch: &mut [u8]) {
        let crc = crc32c(&batch[CRC_START..]);
        batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn batches_iterates_and_reports_truncation() {
        let a = sample();
        let b = build_batch(&[(None, Some(b"x".as_slice()), 5)]);
        let mut buf = a.clone();
        buf.extend_from_slice(&b);
        let got: Vec<_> = Batches::new(&buf).collect::<Result<_, _>>().expect("ok");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, 0..a.len());
        assert_eq!(got[1].0, a.len()..a.len() + b.len());
        assert!(Batches::new(&[]).next().is_none());

        for cut in 1..buf.len() - a.len() {
            let part = &buf[..a.len() + cut];
            let mut it = Batches::new(part);
            assert!(it.next().expect("first").is_ok());
            match it.next() {
                Some(Err(BatchError::Truncated { position, .. })) => assert_eq!(position, a.len()),
                other => panic!("cut {cut}: {other:?}"),
            }
            assert!(it.next().is_none());

            let mut it = Batches::allowing_partial_tail(part);
            assert!(it.next().expect("first").is_ok());
            assert!(it.next().is_none());
            assert_eq!(it.position(), a.len());
        }
    }

    #[test]
    fn rewrites() {
        let mut batch = sample();
        set_base_offset(&mut batch, 1234).expect("ok");
        set_partition_leader_epoch(&mut batch, 7).expect("ok");
        let h = validate_batch(&batch).expect("offset and epoch are outside the CRC");
        assert_eq!(h.base_offset, 1234);
        assert_eq!(h.partition_leader_epoch, 7);
        assert_eq!(h.last_offset(), 1236);

        set_log_append_time(&mut batch, 99_999).expect("ok");
        let h = validate_batch(&batch).expect("CRC recomputed");
        assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(h.max_timestamp, 99_999);
        assert_eq!(h.base_timestamp, 1_000, "Kafka leaves baseTimestamp alone");

        let mut short = [0u8; 4];
        assert!(set_base_offset(&mut short, 1).is_err());
        assert!(set_partition_leader_epoch(&mut short, 1).is_err());
        assert!(set_log_append_time(&mut short, 1).is_err());
        let mut cut = sample();
        cut.pop();
        assert!(set_log_append_time(&mut cut, 1).is_err());
    }
}
