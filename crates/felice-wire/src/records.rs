//! Records inside an UNCOMPRESSED v2 batch: an allocation-free walk and an encoder.
//!
//! Owns the record framing: each record is `length varint` then a body of exactly
//! `length` bytes: attributes i8, timestampDelta varlong, offsetDelta varint, key
//! (varint length, -1 = null), value (same), header count varint, then per header a
//! key (varint length >= 0) and a value (varint length, -1 = null).
//!
//! Invariants: [`Records`] yields at most `recordCount` records and never reads past
//! the batch's `total_len()`; a body whose fields do not fill its length exactly is a
//! [`BatchError::RecordFraming`]. Pure functions and borrowed iterators: any thread.

use crate::batch::{
    crc32c, BatchError, BatchHeader, Compression, TimestampType, BATCH_HEADER_LEN, BATCH_OVERHEAD,
    CRC_START, MAGIC_V2,
};
use crate::varint::{read_varint, read_varlong, write_varint, write_varlong};

/// One record, borrowed from its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub header_count: i32,
    /// The encoded headers (count excluded), already checked to be well framed.
    pub headers: &'a [u8],
}

/// Iterator over the records of one uncompressed batch. Fused after an error.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    batch: &'a [u8],
    pos: usize,
    index: i32,
    count: i32,
    failed: bool,
}

impl<'a> Records<'a> {
    /// Walks the records of the batch at the start of `batch` (only its `total_len()`
    /// bytes are used). Fails for compressed batches ([`BatchError::Compressed`]) and
    /// when the batch is cut short. The CRC is not checked.
    pub fn new(batch: &'a [u8]) -> Result<Records<'a>, BatchError> {
        let header = BatchHeader::parse(batch)?;
        let compression = header.compression()?;
        if compression != Compression::None {
            return Err(BatchError::Compressed(compression));
        }
        let total = header.total_len();
        let batch = batch.get(..total).ok_or(BatchError::Truncated {
            position: 0,
            needed: total,
            available: batch.len(),
        })?;
        Ok(Records::with_header(batch, header))
    }

    /// `batch` is exactly the batch whose header is `header`.
    pub(crate) fn with_header(batch: &'a [u8], header: BatchHeader) -> Records<'a> {
        Records {
            batch,
            pos: BATCH_HEADER_LEN,
            index: 0,
            count: header.record_count.max(0),
            failed: false,
        }
    }

    /// Byte position (in the batch) after the last record read.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn framing(&self, position: usize, reason: &'static str) -> BatchError {
        BatchError::RecordFraming {
            position,
            record: self.index,
            reason,
        }
    }

    fn read_record(&mut self) -> Result<Record<'a>, BatchError> {
        let mut pos = self.pos;
        let len = read_varint(self.batch, &mut pos)
            .map_err(|_| self.framing(self.pos, "record length varint runs past the batch"))?;
        let len =
            usize::try_from(len).map_err(|_| self.framing(self.pos, "negative record length"))?;
        let body_start = pos;
        let body_end = body_start
            .checked_add(len)
            .filter(|end| *end <= self.batch.len())
            .ok_or_else(|| self.framing(body_start, "record length runs past the batch"))?;
        // Parse inside the body only, so a field can never spill into the next record.
        let body = self.batch.get(..body_end).unwrap_or(&[]);
        let bad = |at: usize, reason: &'static str| BatchError::RecordFraming {
            position: at,
            record: self.index,
            reason,
        };
        let attributes = *body
            .get(pos)
            .ok_or_else(|| bad(pos, "record body too short for attributes"))?
            as i8;
        pos += 1;
        let timestamp_delta =
            read_varlong(body, &mut pos).map_err(|_| bad(pos, "bad timestampDelta"))?;
        let offset_delta = read_varint(body, &mut pos).map_err(|_| bad(pos, "bad offsetDelta"))?;
        let key = read_bytes(body, &mut pos, true).map_err(|r| bad(pos, r))?;
        let value = read_bytes(body, &mut pos, true).map_err(|r| bad(pos, r))?;
        let header_count = read_varint(body, &mut pos).map_err(|_| bad(pos, "bad header count"))?;
        if header_count < 0 {
            return Err(bad(pos, "negative header count"));
        }
        let headers_start = pos;
        for _ in 0..header_count {
            let header_key = read_bytes(body, &mut pos, false).map_err(|r| bad(pos, r))?;
            if header_key.is_none() {
                return Err(bad(pos, "null header key"));
            }
            read_bytes(body, &mut pos, true).map_err(|r| bad(pos, r))?;
        }
        let headers = body.get(headers_start..pos).unwrap_or(&[]);
        if pos != body_end {
            return Err(bad(pos, "record fields do not fill the record length"));
        }
        self.pos = body_end;
        Ok(Record {
            attributes,
            timestamp_delta,
            offset_delta,
            key,
            value,
            header_count,
            headers,
        })
    }
}

/// Whether the records section of an uncompressed batch is well framed: exactly
/// `count` records from [`BATCH_HEADER_LEN`] to the end of `batch`, under the same
/// rules as [`Records`] (which a caller runs to learn what is wrong). The produce
/// path's per-record check: no [`Record`] is built and a one-byte varint, the
/// common case, costs one comparison.
pub(crate) fn well_framed(batch: &[u8], count: i32) -> bool {
    let mut pos = BATCH_HEADER_LEN;
    for _ in 0..count.max(0) {
        let Some(len) = zigzag(batch, &mut pos, 5) else {
            return false;
        };
        let Ok(len) = usize::try_from(len as i32) else {
            return false;
        };
        let Some(end) = pos.checked_add(len).filter(|e| *e <= batch.len()) else {
            return false;
        };
        if !body_framed(&batch[..end], pos) {
            return false;
        }
        pos = end;
    }
    pos == batch.len()
}

/// One record body `body[pos..]` (the slice ends where the record does).
#[inline]
fn body_framed(body: &[u8], mut pos: usize) -> bool {
    pos += 1; // attributes
    if pos > body.len()
        || zigzag(body, &mut pos, 10).is_none()
        || zigzag(body, &mut pos, 5).is_none()
    {
        return false;
    }
    // key, value: -1 (null) or a length inside the body.
    for _ in 0..2 {
        if !skip_bytes(body, &mut pos, true) {
            return false;
        }
    }
    let Some(headers) = zigzag(body, &mut pos, 5).map(|h| h as i32) else {
        return false;
    };
    if headers < 0 {
        return false;
    }
    for _ in 0..headers {
        if !skip_bytes(body, &mut pos, false) || !skip_bytes(body, &mut pos, true) {
            return false;
        }
    }
    pos == body.len()
}

/// Skips a varint-length-prefixed field; -1 is null, allowed when `nullable`.
#[inline]
fn skip_bytes(body: &[u8], pos: &mut usize, nullable: bool) -> bool {
    let Some(len) = zigzag(body, pos, 5).map(|l| l as i32) else {
        return false;
    };
    if len == -1 && nullable {
        return true;
    }
    match usize::try_from(len)
        .ok()
        .and_then(|l| pos.checked_add(l))
        .filter(|e| *e <= body.len())
    {
        Some(end) => {
            *pos = end;
            true
        }
        None => false,
    }
}

/// A zigzag varint of at most `max_len` bytes, decoded as [`read_varlong`] does (a
/// varint caller truncates to 32 bits as [`read_varint`] does).
#[inline(always)]
fn zigzag(buf: &[u8], pos: &mut usize, max_len: usize) -> Option<i64> {
    let first = *buf.get(*pos)?;
    if first < 0x80 {
        *pos += 1;
        return Some(i64::from(first >> 1) ^ -i64::from(first & 1));
    }
    let raw = if max_len == 5 {
        i64::from(read_varint(buf, pos).ok()?)
    } else {
        read_varlong(buf, pos).ok()?
    };
    Some(raw)
}

/// Reads a varint-length-prefixed byte string; length -1 means null when allowed.
fn read_bytes<'a>(
    body: &'a [u8],
    pos: &mut usize,
    nullable: bool,
) -> Result<Option<&'a [u8]>, &'static str> {
    let len = read_varint(body, pos).map_err(|_| "bad length varint")?;
    if len == -1 && nullable {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| "negative length")?;
    let end = pos.checked_add(len).ok_or("length overflows")?;
    let bytes = body.get(*pos..end).ok_or("field runs past the record")?;
    *pos = end;
    Ok(Some(bytes))
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.index >= self.count {
            return None;
        }
        let result = self.read_record();
        match result {
            Ok(_) => self.index += 1,
            Err(_) => self.failed = true,
        }
        Some(result)
    }
}

/// `(offset, timestamp)` of every record of an uncompressed batch, in order, without
/// allocating: for ListOffsets by timestamp. With LogAppendTime every record carries
/// the batch's maxTimestamp, as Kafka's readers do.
#[derive(Debug, Clone)]
pub struct RecordTimestamps<'a> {
    records: Records<'a>,
    header: BatchHeader,
}

impl<'a> RecordTimestamps<'a> {
    pub fn new(batch: &'a [u8]) -> Result<RecordTimestamps<'a>, BatchError> {
        let header = BatchHeader::parse(batch)?;
        Ok(RecordTimestamps {
            records: Records::new(batch)?,
            header,
        })
    }
}

impl Iterator for RecordTimestamps<'_> {
    type Item = Result<(i64, i64), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        let record = match self.records.next()? {
            Ok(record) => record,
            Err(e) => return Some(Err(e)),
        };
        let offset = self
            .header
            .base_offset
            .saturating_add(i64::from(record.offset_delta));
        let timestamp = match self.header.timestamp_type() {
            TimestampType::LogAppendTime => self.header.max_timestamp,
            TimestampType::CreateTime => self
                .header
                .base_timestamp
                .saturating_add(record.timestamp_delta),
        };
        Some(Ok((offset, timestamp)))
    }
}

/// `(key, value, timestamp_ms)` of one record for [`build_batch`].
pub type RecordSpec<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, i64);

/// Encodes an uncompressed v2 batch with baseOffset 0, a valid CRC, no producer id
/// (-1), partitionLeaderEpoch -1 and one record per `(key, value, timestamp_ms)`.
/// baseTimestamp is the first record's timestamp, maxTimestamp the largest. For tests
/// and tools; the broker never re-encodes batches.
pub fn build_batch(records: &[RecordSpec<'_>]) -> Vec<u8> {
    let base_timestamp = records.first().map_or(-1, |r| r.2);
    let max_timestamp = records.iter().map(|r| r.2).max().unwrap_or(-1);
    let mut out = vec![0u8; BATCH_HEADER_LEN];
    let mut body = Vec::new();
    for (i, (key, value, timestamp)) in records.iter().enumerate() {
        body.clear();
        body.push(0); // record attributes
        write_varlong(&mut body, timestamp.wrapping_sub(base_timestamp));
        write_varint(&mut body, i as i32);
        for field in [key, value] {
            match field {
                Some(bytes) => {
                    write_varint(&mut body, bytes.len() as i32);
                    body.extend_from_slice(bytes);
                }
                None => write_varint(&mut body, -1),
            }
        }
        write_varint(&mut body, 0); // headers
        write_varint(&mut out, body.len() as i32);
        out.extend_from_slice(&body);
    }
    let count = records.len() as i32;
    let header = BatchHeader {
        base_offset: 0,
        batch_length: (out.len() - BATCH_OVERHEAD) as i32,
        partition_leader_epoch: -1,
        magic: MAGIC_V2,
        crc: 0,
        attributes: 0,
        last_offset_delta: count - 1,
        base_timestamp,
        max_timestamp,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        record_count: count,
    };
    if let Some(dst) = out.get_mut(..BATCH_HEADER_LEN) {
        dst.copy_from_slice(&header.encode());
    }
    let crc = crc32c(out.get(CRC_START..).unwrap_or(&[]));
    if let Some(dst) = out.get_mut(17..21) {
        dst.copy_from_slice(&crc.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{set_base_offset, set_log_append_time};
    use proptest::prelude::*;

    /// The detailed walk's verdict on `batch` (a v2 header, then records).
    fn walk_accepts(batch: &[u8], count: i32) -> bool {
        let Ok(mut header) = BatchHeader::parse(batch) else {
            return false;
        };
        header.record_count = count;
        let mut records = Records::with_header(batch, header);
        records.by_ref().all(|r| r.is_ok()) && records.position() == batch.len()
    }

    /// One record body from its parts, with headers, framed by its length.
    fn encode_record(
        out: &mut Vec<u8>,
        ts: i64,
        key: &Option<Vec<u8>>,
        value: &Option<Vec<u8>>,
        headers: &[(Vec<u8>, Option<Vec<u8>>)],
        slack: usize,
    ) {
        let mut body = vec![0u8];
        write_varlong(&mut body, ts);
        write_varint(&mut body, 0);
        for field in [key, value] {
            match field {
                None => write_varint(&mut body, -1),
                Some(b) => {
                    write_varint(&mut body, b.len() as i32);
                    body.extend_from_slice(b);
                }
            }
        }
        write_varint(&mut body, headers.len() as i32);
        for (k, v) in headers {
            write_varint(&mut body, k.len() as i32);
            body.extend_from_slice(k);
            match v {
                None => write_varint(&mut body, -1),
                Some(b) => {
                    write_varint(&mut body, b.len() as i32);
                    body.extend_from_slice(b);
                }
            }
        }
        // Bytes inside the record's length that no field covers: bad framing.
        body.extend(std::iter::repeat_n(0u8, slack));
        write_varint(out, body.len() as i32);
        out.extend_from_slice(&body);
    }

    fn bytes(max: usize) -> impl Strategy<Value = Option<Vec<u8>>> {
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..max))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// The produce path's quick framing check accepts exactly what the detailed
        /// walk accepts: on well-formed records with keys, values and headers, and
        /// after flipping, cutting or inserting bytes or miscounting records.
        #[test]
        fn quick_framing_check_agrees_with_the_walk(
            recs in proptest::collection::vec(
                (any::<i64>(), bytes(300), bytes(300),
                 proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..8), bytes(8)), 0..3)),
                0..6),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
            cut in proptest::option::of(any::<usize>()),
            insert in proptest::option::of((any::<usize>(), any::<u8>())),
            count_skew in -1i32..2,
            slack in prop_oneof![8 => Just((0usize, 0usize)), 1 => (0usize..6, 1usize..3)],
        ) {
            let mut batch = build_batch(&[(None, Some(b"x".as_slice()), 0)]);
            batch.truncate(BATCH_HEADER_LEN);
            for (i, (ts, key, value, headers)) in recs.iter().enumerate() {
                let pad = if i == slack.0 { slack.1 } else { 0 };
                encode_record(&mut batch, *ts, key, value, headers, pad);
            }
            let count = recs.len() as i32;
            let padded = slack.1 > 0 && slack.0 < recs.len();
            prop_assert_eq!(well_framed(&batch, count), !padded);
            prop_assert_eq!(walk_accepts(&batch, count), !padded);
            let body_len = batch.len() - BATCH_HEADER_LEN;
            if body_len > 0 {
                for (at, x) in &flips {
                    batch[BATCH_HEADER_LEN + at % body_len] ^= x;
                }
                if let Some((at, x)) = insert {
                    batch.insert(BATCH_HEADER_LEN + at % body_len, x);
                }
                if let Some(at) = cut {
                    batch.truncate(BATCH_HEADER_LEN + at % body_len);
                }
            }
            let count = count + count_skew;
            prop_assert_eq!(well_framed(&batch, count), walk_accepts(&batch, count));
        }
    }

    #[test]
    fn records_and_timestamps() {
        let mut batch = build_batch(&[
            (Some(b"a".as_slice()), Some(b"1".as_slice()), 100),
            (None, None, 50),
            (Some(b"c".as_slice()), Some(b"333".as_slice()), 300),
        ]);
        let recs: Vec<_> = Records::new(&batch)
            .expect("uncompressed")
            .collect::<Result<_, _>>()
            .expect("well framed");
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].key, Some(b"a".as_slice()));
        assert_eq!(recs[1].key, None);
        assert_eq!(recs[1].value, None);
        assert_eq!(recs[2].value, Some(b"333".as_slice()));
        assert_eq!(recs[2].offset_delta, 2);

        set_base_offset(&mut batch, 10).expect("ok");
        let ts: Vec<_> = RecordTimestamps::new(&batch)
            .expect("ok")
            .collect::<Result<_, _>>()
            .expect("ok");
        assert_eq!(ts, vec![(10, 100), (11, 50), (12, 300)]);

        set_log_append_time(&mut batch, 777).expect("ok");
        let ts: Vec<_> = RecordTimestamps::new(&batch)
            .expect("ok")
            .collect::<Result<_, _>>()
            .expect("ok");
        assert_eq!(ts, vec![(10, 777), (11, 777), (12, 777)]);
    }

    #[test]
    fn compressed_batches_are_refused() {
        let mut batch = build_batch(&[(None, Some(b"x".as_slice()), 1)]);
        batch[22] |= 0x04;
        assert_eq!(
            Records::new(&batch).err(),
            Some(BatchError::Compressed(Compression::Zstd))
        );
    }

    #[test]
    fn truncated_record_walk_errors_not_panics() {
        let batch = build_batch(&[(Some(b"key".as_slice()), Some(b"value".as_slice()), 1)]);
        for cut in BATCH_HEADER_LEN..batch.len() {
            let mut part = batch[..cut].to_vec();
            // Keep the header consistent with the shorter slice so the walk itself is hit.
            let len = (cut - BATCH_OVERHEAD) as i32;
            part[8..12].copy_from_slice(&len.to_be_bytes());
            let mut recs = Records::new(&part).expect("header ok");
            assert!(matches!(
                recs.next(),
                Some(Err(BatchError::RecordFraming { .. }))
            ));
            assert!(recs.next().is_none());
        }
    }
}
