//! Record batches encoded once and stamped per send, for load generators.
//!
//! A [`BatchTemplate`] holds a v2 record batch built by `kafka-protocol`'s
//! `RecordBatchEncoder`. [`BatchTemplate::render`] writes a [`SendStamp`] into the first
//! 16 bytes of the first record's value and the send wall-clock time into the batch
//! timestamps, then recomputes the CRC:
//!
//! - uncompressed: the encoded bytes are copied and patched in place (no re-encoding);
//! - compressed: the stamp sits inside the compressed payload, so the batch is
//!   re-encoded (and recompressed) per send, as a real producer would.
//!
//! All records in a batch carry timestamp delta 0, so patching the batch's base and max
//! timestamp sets every record's timestamp. Records use sequence `offset - 1` so that
//! the encoder keeps them in one batch with base sequence -1 (no idempotence).
//!
//! Layout used for patching (KIP-98 record batch v2, offsets from the batch start):
//! crc 17..21 covers 21..end; baseTimestamp 27..35; maxTimestamp 35..43; records from 61.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};

/// Bytes of a [`SendStamp`] at the start of the first value of each batch.
pub const STAMP_LEN: usize = 16;

const CRC_RANGE: std::ops::Range<usize> = 17..21;
const ATTRIBUTES_START: usize = 21;
const BASE_TIMESTAMP: std::ops::Range<usize> = 27..35;
const MAX_TIMESTAMP: std::ops::Range<usize> = 35..43;
const PRODUCER_ID: std::ops::Range<usize> = 43..51;
const PRODUCER_EPOCH: std::ops::Range<usize> = 51..53;
const BASE_SEQUENCE: std::ops::Range<usize> = 53..57;

/// The producer fields of an idempotent producer's batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Idempotence {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl Idempotence {
    fn write(self, header: &mut [u8]) {
        header[PRODUCER_ID].copy_from_slice(&self.producer_id.to_be_bytes());
        header[PRODUCER_EPOCH].copy_from_slice(&self.producer_epoch.to_be_bytes());
        header[BASE_SEQUENCE].copy_from_slice(&self.base_sequence.to_be_bytes());
    }
}
/// Size of the v2 batch header; the first record starts here.
pub const BATCH_HEADER_LEN: usize = 61;

/// When a batch was sent: `nanos` on the sender's monotonic clock, counted from an epoch
/// private to the run `run_id`. Only a reader in the same process (same epoch) can turn it
/// into a latency; `run_id` tells it whether the record is from this run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendStamp {
    /// Identifies the run (and so the clock epoch).
    pub run_id: u64,
    /// Nanoseconds since the run's epoch.
    pub nanos: u64,
}

impl SendStamp {
    /// The 16 bytes written into the value.
    pub fn to_bytes(self) -> [u8; STAMP_LEN] {
        let mut out = [0u8; STAMP_LEN];
        out[..8].copy_from_slice(&self.run_id.to_be_bytes());
        out[8..].copy_from_slice(&self.nanos.to_be_bytes());
        out
    }

    /// Reads a stamp from the start of a record value; `None` if the value is too short.
    pub fn from_value(value: &[u8]) -> Option<SendStamp> {
        let run_id = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
        let nanos = u64::from_be_bytes(value.get(8..STAMP_LEN)?.try_into().ok()?);
        Some(SendStamp { run_id, nanos })
    }
}

/// A batch encoded once, re-stamped per send. See the module docs.
#[derive(Debug, Clone)]
pub struct BatchTemplate {
    compression: Compression,
    records: Vec<Record>,
    /// The encoded batch (uncompressed templates only).
    encoded: Bytes,
    /// Where the first value's stamp lives in `encoded` (uncompressed, stampable only).
    stamp_pos: Option<usize>,
    /// CRC32C of `encoded` after the stamp (or after the header when unstamped), which
    /// no render changes: a render checksums only the bytes before it and combines.
    tail_crc: u32,
    payload_bytes: usize,
}

impl BatchTemplate {
    /// Builds a batch of one record per value (null keys). If the first value is at least
    /// [`STAMP_LEN`] bytes long, `render` stamps it; otherwise batches carry no stamp.
    pub fn new(values: Vec<Bytes>, compression: Compression) -> anyhow::Result<BatchTemplate> {
        anyhow::ensure!(!values.is_empty(), "a batch needs at least one record");
        let payload_bytes = values.iter().map(Bytes::len).sum();
        let records: Vec<Record> = values
            .into_iter()
            .enumerate()
            .map(|(i, value)| {
                let offset = i as i64;
                Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
                    producer_id: NO_PRODUCER_ID,
                    producer_epoch: NO_PRODUCER_EPOCH,
                    timestamp_type: TimestampType::Creation,
                    offset,
                    // offset - sequence is constant, so the encoder emits one batch whose
                    // base sequence is -1 (NO_SEQUENCE).
                    sequence: (offset - 1) as i32,
                    timestamp: 0,
                    key: None,
                    value: Some(value),
                    headers: Default::default(),
                }
            })
            .collect();
        let stampable = records
            .first()
            .and_then(|r| r.value.as_ref())
            .is_some_and(|v| v.len() >= STAMP_LEN);
        let mut template = BatchTemplate {
            compression,
            records,
            encoded: Bytes::new(),
            stamp_pos: None,
            tail_crc: 0,
            payload_bytes,
        };
        if compression == Compression::None {
            let mut buf = BytesMut::new();
            RecordBatchEncoder::encode(&mut buf, template.records.iter(), &template.options())?;
            template.encoded = buf.freeze();
            if stampable {
                template.stamp_pos = Some(template.find_first_value()?);
            }
            template.tail_crc = crc32c::crc32c(&template.encoded[template.tail_start()..]);
        }
        // Self-check: the encoder made exactly one batch holding every record.
        let probe = template.render(
            SendStamp {
                run_id: 1,
                nanos: 2,
            },
            0,
        )?;
        let mut probe_buf = probe.clone();
        let set = RecordBatchDecoder::decode(&mut probe_buf)?;
        anyhow::ensure!(
            probe_buf.is_empty() && set.records.len() == template.records.len(),
            "encoder split {} records into several batches",
            template.records.len()
        );
        Ok(template)
    }

    /// Where the bytes no render changes begin (uncompressed templates).
    fn tail_start(&self) -> usize {
        self.stamp_pos
            .map_or(BATCH_HEADER_LEN, |pos| pos + STAMP_LEN)
            .min(self.encoded.len())
    }

    fn options(&self) -> RecordEncodeOptions {
        RecordEncodeOptions {
            version: 2,
            compression: self.compression,
        }
    }

    /// Locates the first record's value in the uncompressed encoding: its bytes are the
    /// first place after the header where the value appears (keys are null, no headers).
    fn find_first_value(&self) -> anyhow::Result<usize> {
        let first = self
            .records
            .first()
            .and_then(|r| r.value.as_ref())
            .ok_or_else(|| anyhow::anyhow!("no first value"))?;
        let needle = first.get(..STAMP_LEN.min(first.len())).unwrap_or_default();
        let haystack = self.encoded.get(BATCH_HEADER_LEN..).unwrap_or_default();
        // The value starts within a few varint bytes of the record start.
        let window = haystack
            .get(..(16 + first.len()).min(haystack.len()))
            .unwrap_or_default();
        let at = window
            .windows(needle.len())
            .position(|w| w == needle)
            .ok_or_else(|| anyhow::anyhow!("first value not found in the encoded batch"))?;
        Ok(BATCH_HEADER_LEN + at)
    }

    /// Records per batch.
    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    /// Sum of the value sizes (the payload a benchmark counts).
    pub fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }

    /// Whether rendered batches carry a stamp.
    pub fn is_stamped(&self) -> bool {
        self.records
            .first()
            .and_then(|r| r.value.as_ref())
            .is_some_and(|v| v.len() >= STAMP_LEN)
    }

    /// [`render`](Self::render) as consecutive parts: for uncompressed templates a
    /// stamped copy of the header and first value's stamp, then the template's own
    /// unchanged bytes (shared, not copied); compressed batches come whole.
    pub fn render_parts(&self, stamp: SendStamp, wall_clock_ms: i64) -> anyhow::Result<Vec<Bytes>> {
        self.render_parts_as(stamp, wall_clock_ms, None)
    }

    /// [`render_parts`](Self::render_parts) with the producer fields of an
    /// idempotent producer (`None`: no producer id, as `render_parts`).
    pub fn render_parts_as(
        &self,
        stamp: SendStamp,
        wall_clock_ms: i64,
        producer: Option<Idempotence>,
    ) -> anyhow::Result<Vec<Bytes>> {
        if self.compression != Compression::None {
            return Ok(vec![self.render_as(stamp, wall_clock_ms, producer)?]);
        }
        let tail = self.tail_start();
        let mut head = BytesMut::from(&self.encoded[..tail]);
        anyhow::ensure!(head.len() >= BATCH_HEADER_LEN, "encoded batch too short");
        if let Some(pos) = self.stamp_pos {
            let slot = head
                .get_mut(pos..pos + STAMP_LEN)
                .ok_or_else(|| anyhow::anyhow!("stamp outside the batch"))?;
            slot.copy_from_slice(&stamp.to_bytes());
        }
        head[BASE_TIMESTAMP].copy_from_slice(&wall_clock_ms.to_be_bytes());
        head[MAX_TIMESTAMP].copy_from_slice(&wall_clock_ms.to_be_bytes());
        if let Some(p) = producer {
            p.write(&mut head);
        }
        let crc = crc32c::crc32c_combine(
            crc32c::crc32c(&head[ATTRIBUTES_START..]),
            self.tail_crc,
            self.encoded.len() - tail,
        );
        head[CRC_RANGE].copy_from_slice(&crc.to_be_bytes());
        Ok(vec![head.freeze(), self.encoded.slice(tail..)])
    }

    /// The batch to send now: stamp in the first value, `wall_clock_ms` as every
    /// record's timestamp, CRC fixed.
    pub fn render(&self, stamp: SendStamp, wall_clock_ms: i64) -> anyhow::Result<Bytes> {
        self.render_as(stamp, wall_clock_ms, None)
    }

    /// [`render`](Self::render) with an idempotent producer's fields.
    pub fn render_as(
        &self,
        stamp: SendStamp,
        wall_clock_ms: i64,
        producer: Option<Idempotence>,
    ) -> anyhow::Result<Bytes> {
        if self.compression == Compression::None {
            // The parts joined: a stamped header copy and the unchanged rest.
            let parts = self.render_parts_as(stamp, wall_clock_ms, producer)?;
            let mut batch = BytesMut::with_capacity(self.encoded.len());
            for p in &parts {
                batch.extend_from_slice(p);
            }
            return Ok(batch.freeze());
        }
        let mut first = self
            .records
            .first()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("empty template"))?;
        if let Some(value) = first.value.as_mut().filter(|v| v.len() >= STAMP_LEN) {
            let mut stamped = BytesMut::from(&value[..]);
            stamped[..STAMP_LEN].copy_from_slice(&stamp.to_bytes());
            *value = stamped.freeze();
        }
        let rest = self.records.get(1..).unwrap_or_default();
        let mut batch = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut batch,
            std::iter::once(&first).chain(rest.iter()),
            &self.options(),
        )?;
        anyhow::ensure!(batch.len() > BATCH_HEADER_LEN, "encoded batch too short");
        batch[BASE_TIMESTAMP].copy_from_slice(&wall_clock_ms.to_be_bytes());
        batch[MAX_TIMESTAMP].copy_from_slice(&wall_clock_ms.to_be_bytes());
        if let Some(p) = producer {
            p.write(&mut batch);
        }
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_START..]);
        batch[CRC_RANGE].copy_from_slice(&crc.to_be_bytes());
        Ok(batch.freeze())
    }
}

/// What a reader needs from one batch of a fetch response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSummary {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Offset after the last record (the next offset to fetch).
    pub next_offset: i64,
    /// Records in the batch at or after the fetch offset.
    pub records: u64,
    /// Value bytes of those records.
    pub value_bytes: u64,
    /// The first record's stamp, if its value carries one.
    pub stamp: Option<SendStamp>,
}

/// Splits fetched record bytes into batches and summarizes each. Every batch's CRC is
/// checked. Uncompressed data batches are walked record by record in place (offset
/// deltas and value lengths only, no allocation per record); compressed and control
/// batches go through `RecordBatchDecoder`, which decompresses. Records before
/// `from_offset` are skipped (a fetch may start mid-batch). A truncated trailing batch,
/// which brokers may send when a fetch hits its byte limit, ends the list silently.
pub fn summarize_batches(
    mut records: Bytes,
    from_offset: i64,
) -> anyhow::Result<Vec<BatchSummary>> {
    let mut out = Vec::new();
    // baseOffset (8) + batchLength (4) precede the counted length.
    while let Some(len_bytes) = records.get(8..12) {
        let batch_len =
            i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        let batch_len = usize::try_from(batch_len)
            .map_err(|_| anyhow::anyhow!("negative batch length {batch_len}"))?;
        if records.len() < 12 + batch_len {
            break;
        }
        let one = records.split_to(12 + batch_len);
        if let Some(summary) = summarize_one(one, from_offset)? {
            out.push(summary);
        }
    }
    Ok(out)
}

/// Attribute bits of a v2 batch: the codec, and the control flag.
const CODEC_MASK: i16 = 0x07;
const CONTROL_FLAG: i16 = 0x20;

/// One whole batch; `None` for a batch without records.
fn summarize_one(batch: Bytes, from_offset: i64) -> anyhow::Result<Option<BatchSummary>> {
    anyhow::ensure!(
        batch.len() >= BATCH_HEADER_LEN,
        "batch shorter than its header"
    );
    anyhow::ensure!(batch[16] == 2, "record batch magic {} is not 2", batch[16]);
    let be_i64 = |r: std::ops::Range<usize>| -> i64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&batch[r]);
        i64::from_be_bytes(b)
    };
    let be_i32 = |at: usize| -> i32 {
        i32::from_be_bytes([batch[at], batch[at + 1], batch[at + 2], batch[at + 3]])
    };
    let stored_crc = be_i32(CRC_RANGE.start) as u32;
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_START..]);
    anyhow::ensure!(
        crc == stored_crc,
        "batch CRC {crc:#x} != stored {stored_crc:#x}"
    );
    let attributes = i16::from_be_bytes([batch[21], batch[22]]);
    if attributes & (CODEC_MASK | CONTROL_FLAG) != 0 {
        return summarize_decoded(batch, from_offset);
    }
    let base = be_i64(0..8);
    let next_offset = base + i64::from(be_i32(23)) + 1;
    let declared = be_i32(57);
    let mut walk = RecordWalk {
        buf: &batch[BATCH_HEADER_LEN..],
        pos: 0,
    };
    let (mut count, mut value_bytes, mut seen) = (0u64, 0u64, 0i32);
    let mut stamp = None;
    while walk.pos < walk.buf.len() {
        let (offset_delta, value) = walk.next_record()?;
        seen += 1;
        if seen == 1 {
            stamp = value.and_then(SendStamp::from_value);
        }
        if base + i64::from(offset_delta) >= from_offset {
            count += 1;
            value_bytes += value.map_or(0, |v| v.len() as u64);
        }
    }
    anyhow::ensure!(
        seen == declared,
        "batch at {base} declares {declared} records, holds {seen}"
    );
    if seen == 0 {
        return Ok(None);
    }
    Ok(Some(BatchSummary {
        base_offset: base,
        next_offset,
        records: count,
        value_bytes,
        stamp,
    }))
}

/// The decoder's view, for compressed and control batches.
fn summarize_decoded(mut batch: Bytes, from_offset: i64) -> anyhow::Result<Option<BatchSummary>> {
    let set = RecordBatchDecoder::decode(&mut batch)?;
    let Some(last) = set.records.last() else {
        return Ok(None);
    };
    let next_offset = last.offset + 1;
    let base_offset = set.records.first().map_or(next_offset, |r| r.offset);
    let stamp = set
        .records
        .first()
        .and_then(|r| r.value.as_deref())
        .and_then(SendStamp::from_value);
    let mut count = 0u64;
    let mut value_bytes = 0u64;
    for r in set
        .records
        .iter()
        .filter(|r| r.offset >= from_offset && !r.control)
    {
        count += 1;
        value_bytes += r.value.as_ref().map_or(0, |v| v.len() as u64);
    }
    Ok(Some(BatchSummary {
        base_offset,
        next_offset,
        records: count,
        value_bytes,
        stamp,
    }))
}

/// Walks the records section of an uncompressed v2 batch, under the same framing
/// rules as Kafka's reader: every field inside its record's length, lengths -1 (null)
/// or non-negative, varints of at most 5 bytes (10 for the timestamp delta).
struct RecordWalk<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> RecordWalk<'a> {
    /// Zigzag varint of at most `max_bytes` bytes, read before `end`.
    fn varint(&mut self, max_bytes: usize, end: usize) -> anyhow::Result<i64> {
        let mut raw = 0u64;
        for i in 0..max_bytes {
            anyhow::ensure!(self.pos < end, "record cut inside a varint");
            let b = self.buf[self.pos];
            self.pos += 1;
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        anyhow::bail!("varint longer than {max_bytes} bytes")
    }

    /// A 32-bit zigzag varint (Java keeps the low 32 bits of a 5-byte one).
    fn varint32(&mut self, end: usize) -> anyhow::Result<i32> {
        let mut raw = 0u32;
        for i in 0..5 {
            anyhow::ensure!(self.pos < end, "record cut inside a varint");
            let b = self.buf[self.pos];
            self.pos += 1;
            raw |= u32::from(b & 0x7f).wrapping_shl(7 * i);
            if b & 0x80 == 0 {
                return Ok((raw >> 1) as i32 ^ -((raw & 1) as i32));
            }
        }
        anyhow::bail!("varint longer than 5 bytes")
    }

    /// Skips a length-prefixed field inside the record; its bytes (`None` for -1).
    fn field(&mut self, end: usize) -> anyhow::Result<Option<&'a [u8]>> {
        let len = self.varint32(end)?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| anyhow::anyhow!("negative length {len}"))?;
        let stop = self.pos + len;
        anyhow::ensure!(stop <= end, "record field runs past its record");
        let bytes = &self.buf[self.pos..stop];
        self.pos = stop;
        Ok(Some(bytes))
    }

    /// The next record's offset delta and value.
    fn next_record(&mut self) -> anyhow::Result<(i32, Option<&'a [u8]>)> {
        let len = self.varint32(self.buf.len())?;
        let len = usize::try_from(len).map_err(|_| anyhow::anyhow!("negative record length"))?;
        let end = self.pos + len;
        anyhow::ensure!(end <= self.buf.len(), "record runs past its batch");
        anyhow::ensure!(self.pos < end, "record too short for its attributes");
        self.pos += 1; // attributes
        self.varint(10, end)?; // timestamp delta
        let offset_delta = self.varint32(end)?;
        self.field(end)?; // key
        let value = self.field(end)?;
        let headers = self.varint32(end)?;
        anyhow::ensure!(headers >= 0, "negative header count {headers}");
        for _ in 0..headers {
            anyhow::ensure!(self.field(end)?.is_some(), "null header key");
            self.field(end)?;
        }
        anyhow::ensure!(self.pos == end, "record fields do not fill its length");
        Ok((offset_delta, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, size: usize) -> Vec<Bytes> {
        (0..n)
            .map(|i| Bytes::from(vec![b'A' + (i % 26) as u8; size]))
            .collect()
    }

    #[test]
    fn render_stamps_every_compression() -> anyhow::Result<()> {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let template = BatchTemplate::new(values(50, 100), compression)?;
            let stamp = SendStamp {
                run_id: 0xfeed,
                nanos: 123_456_789,
            };
            let batch = template.render(stamp, 1_700_000_000_000)?;
            let mut buf = batch.clone();
            let set = RecordBatchDecoder::decode(&mut buf)?;
            assert_eq!(set.compression, compression);
            assert_eq!(set.records.len(), 50);
            assert!(set.records.iter().all(|r| r.timestamp == 1_700_000_000_000));
            let first = set.records[0].value.clone().unwrap_or_default();
            assert_eq!(SendStamp::from_value(&first), Some(stamp));
            assert_eq!(&first[STAMP_LEN..], &[b'A'; 100 - STAMP_LEN][..]);
            assert_eq!(set.records[1].value.as_deref(), Some(&[b'B'; 100][..]));
            let summary = summarize_batches(batch, 0)?;
            assert_eq!(summary.len(), 1);
            assert_eq!(summary[0].records, 50);
            assert_eq!(summary[0].value_bytes, 5000);
            assert_eq!(summary[0].next_offset, 50);
            assert_eq!(summary[0].stamp, Some(stamp));
        }
        Ok(())
    }

    #[test]
    fn short_values_are_not_stamped() -> anyhow::Result<()> {
        let template = BatchTemplate::new(values(3, 4), Compression::None)?;
        assert!(!template.is_stamped());
        let batch = template.render(
            SendStamp {
                run_id: 1,
                nanos: 1,
            },
            5,
        )?;
        let summary = summarize_batches(batch, 0)?;
        assert_eq!(summary[0].stamp, None);
        assert_eq!(summary[0].records, 3);
        Ok(())
    }

    #[test]
    fn summarize_skips_truncated_tail_and_early_offsets() -> anyhow::Result<()> {
        let template = BatchTemplate::new(values(10, 20), Compression::None)?;
        let one = template.render(
            SendStamp {
                run_id: 1,
                nanos: 1,
            },
            5,
        )?;
        let mut two = BytesMut::from(&one[..]);
        two.extend_from_slice(&one[..one.len() - 3]);
        let summary = summarize_batches(two.freeze(), 4)?;
        assert_eq!(summary.len(), 1);
        assert_eq!(summary[0].records, 6);
        Ok(())
    }

    /// The in-place walk of uncompressed batches agrees with the decoder, with keys,
    /// null values and headers, from every start offset; a flipped byte fails the CRC.
    #[test]
    fn in_place_walk_matches_the_decoder() -> anyhow::Result<()> {
        let records: Vec<Record> = (0..7i64)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
                producer_id: NO_PRODUCER_ID,
                producer_epoch: NO_PRODUCER_EPOCH,
                timestamp_type: TimestampType::Creation,
                offset: 100 + i,
                sequence: (99 + i) as i32,
                timestamp: 1_000 + i,
                key: (i % 2 == 0).then(|| Bytes::from(vec![b'k'; i as usize * 3])),
                value: (i != 3).then(|| Bytes::from(vec![b'v'; 200 * i as usize + 17])),
                headers: [(
                    kafka_protocol::protocol::StrBytes::from_static_str("h"),
                    Some(Bytes::from_static(b"header value")),
                )]
                .into_iter()
                .collect(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )?;
        let batch = buf.freeze();
        for from in 95..110 {
            let walked = summarize_batches(batch.clone(), from)?;
            let decoded = summarize_decoded(batch.clone(), from)?;
            assert_eq!(
                walked,
                decoded.into_iter().collect::<Vec<_>>(),
                "from {from}"
            );
        }
        let mut bad = BytesMut::from(&batch[..]);
        let at = bad.len() - 5;
        bad[at] ^= 1;
        assert!(summarize_batches(bad.freeze(), 0).is_err());
        Ok(())
    }

    /// The parts of a render are the render, for every codec.
    #[test]
    fn render_parts_concatenate_to_render() -> anyhow::Result<()> {
        for compression in [Compression::None, Compression::Lz4] {
            for size in [4, 100] {
                let template = BatchTemplate::new(values(30, size), compression)?;
                let stamp = SendStamp {
                    run_id: 7,
                    nanos: 99,
                };
                let whole = template.render(stamp, 1_700_000_000_123)?;
                let parts = template.render_parts(stamp, 1_700_000_000_123)?;
                let joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
                if compression == Compression::None {
                    assert_eq!(joined, whole.to_vec(), "size {size}");
                } else {
                    // Compressed batches are re-encoded per render; compare contents.
                    let got = summarize_batches(Bytes::from(joined), 0)?;
                    let want = summarize_batches(whole, 0)?;
                    assert_eq!(got, want);
                }
            }
        }
        Ok(())
    }
}
