//! Compression of a batch's records section, through `kafka-protocol`'s
//! codecs (Kafka's framing of gzip, snappy/xerial, lz4 frames, zstd).
//!
//! A v2 batch compresses everything after its 61-byte header as one block,
//! so the decompressed section is exactly the records of an uncompressed
//! batch. Working on those raw bytes, never on decoded records, keeps every
//! byte of every record: duplicate header keys, non-UTF-8 header keys,
//! attributes, deltas. Used where the broker must look into or rewrite a
//! compressed batch: a topic's `compression.type`, keyless-record checks on
//! compacted topics, and the log cleaner.
//!
//! Bounds: decompression stops as soon as its output would pass the
//! caller's limit (the codecs write into a bounded writer; snappy blocks are
//! checked by their declared length before they are allocated), so a small
//! "zip bomb" costs at most the limit.

use crate::batch::{crc32c, BatchError, BatchHeader, Compression, BATCH_HEADER_LEN, CRC_START};
use crate::records::Records;
use bytes::{BufMut, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
use std::io::Write;

const COMPRESSION_MASK: i16 = 0x07;

fn codec_error(codec: Compression, e: impl std::fmt::Display) -> BatchError {
    BatchError::Codec {
        codec,
        reason: e.to_string(),
    }
}

/// The records section of `batch` (after the header), decompressed if the
/// batch is compressed; at most `limit` bytes.
pub fn records_section(batch: &[u8], limit: usize) -> Result<(BatchHeader, Vec<u8>), BatchError> {
    let header = BatchHeader::parse(batch)?;
    let body = batch
        .get(BATCH_HEADER_LEN..header.total_len())
        .ok_or(BatchError::Truncated {
            position: 0,
            needed: header.total_len(),
            available: batch.len(),
        })?;
    let codec = header.compression()?;
    let raw = decompress(codec, body, limit)?;
    Ok((header, raw))
}

/// Decompresses a records section, refusing to produce more than `limit`
/// bytes: the output goes through a writer that fails past the limit, so a
/// small input that would expand enormously stops there.
pub fn decompress(codec: Compression, data: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    let mut out = Limited {
        buf: Vec::new(),
        limit,
    };
    let r: std::io::Result<()> = match codec {
        Compression::None => out.write_all(data),
        Compression::Gzip => {
            let mut d = flate2::write::GzDecoder::new(&mut out);
            d.write_all(data).and_then(|()| d.try_finish())
        }
        Compression::Zstd => zstd::stream::copy_decode(data, &mut out),
        Compression::Lz4 => {
            lz4::Decoder::new(data).and_then(|mut d| std::io::copy(&mut d, &mut out).map(|_| ()))
        }
        Compression::Snappy => snappy_decompress(data, &mut out),
    };
    r.map_err(|e| codec_error(codec, e))?;
    Ok(out.buf)
}

/// A `Vec` writer that fails once more than `limit` bytes are written.
struct Limited {
    buf: Vec<u8>,
    limit: usize,
}

impl Limited {
    fn room(&self, more: usize) -> std::io::Result<()> {
        if self.buf.len().saturating_add(more) > self.limit {
            return Err(std::io::Error::other(format!(
                "decompresses to more than {} bytes",
                self.limit
            )));
        }
        Ok(())
    }
}

impl std::io::Write for Limited {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.room(data.len())?;
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Kafka's snappy: the xerial framing (magic header, then length-prefixed
/// raw snappy blocks), or a bare raw snappy block as Java also accepts. Each
/// block's decompressed length is read before anything is allocated.
fn snappy_decompress(data: &[u8], out: &mut Limited) -> std::io::Result<()> {
    const MAGIC: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
    let block = |b: &[u8], out: &mut Limited| -> std::io::Result<()> {
        let len = snap::raw::decompress_len(b).map_err(std::io::Error::other)?;
        out.room(len)?;
        let start = out.buf.len();
        out.buf.resize(start + len, 0);
        let target = out.buf.get_mut(start..).unwrap_or_default();
        snap::raw::Decoder::new()
            .decompress(b, target)
            .map_err(std::io::Error::other)?;
        Ok(())
    };
    let Some(mut rest) = data.strip_prefix(&MAGIC[..]) else {
        return block(data, out);
    };
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| std::io::Error::other("snappy block length cut short"))?;
        let len = u32::from_be_bytes(*len) as usize;
        let b = tail
            .get(..len)
            .ok_or_else(|| std::io::Error::other("snappy block cut short"))?;
        block(b, out)?;
        rest = tail.get(len..).unwrap_or_default();
    }
    Ok(())
}

pub fn compress(codec: Compression, raw: &[u8]) -> Result<Vec<u8>, BatchError> {
    fn run<C: Compressor<BytesMut, BufMut = BytesMut>>(raw: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut out = BytesMut::new();
        C::compress(&mut out, |tmp: &mut BytesMut| {
            tmp.put_slice(raw);
            Ok(())
        })?;
        Ok(out.to_vec())
    }
    let r = match codec {
        Compression::None => return Ok(raw.to_vec()),
        Compression::Gzip => run::<Gzip>(raw),
        Compression::Snappy => run::<Snappy>(raw),
        Compression::Lz4 => run::<Lz4>(raw),
        Compression::Zstd => run::<Zstd>(raw),
    };
    r.map_err(|e| codec_error(codec, e))
}

/// A batch with `header`'s fields (base offset, epochs, producer, flags,
/// base timestamp) holding the raw records `raw`, compressed with `codec`;
/// record count, last offset delta and max timestamp as given; CRC computed.
pub fn rebuild_batch(
    header: &BatchHeader,
    codec: Compression,
    raw: &[u8],
    record_count: i32,
    last_offset_delta: i32,
    max_timestamp: i64,
) -> Result<Vec<u8>, BatchError> {
    let body = compress(codec, raw)?;
    let mut h = *header;
    h.attributes = (h.attributes & !COMPRESSION_MASK) | i16::from(codec.id());
    h.record_count = record_count;
    h.last_offset_delta = last_offset_delta;
    h.max_timestamp = max_timestamp;
    h.batch_length = (BATCH_HEADER_LEN - crate::batch::BATCH_OVERHEAD + body.len()) as i32;
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + body.len());
    out.extend_from_slice(&h.encode());
    out.extend_from_slice(&body);
    let crc = crc32c(out.get(CRC_START..).unwrap_or_default());
    if let Some(dst) = out.get_mut(17..21) {
        dst.copy_from_slice(&crc.to_be_bytes());
    }
    Ok(out)
}

/// An uncompressed batch with `header`'s fields and the raw records `raw`
/// (same count and deltas), for walking them with [`Records`].
pub fn as_uncompressed(header: &BatchHeader, raw: &[u8]) -> Result<Vec<u8>, BatchError> {
    rebuild_batch(
        header,
        Compression::None,
        raw,
        header.record_count,
        header.last_offset_delta,
        header.max_timestamp,
    )
}

/// Re-encodes a batch in `target`, records byte for byte (a topic's
/// `compression.type`).
pub fn recompress(batch: &[u8], target: Compression, limit: usize) -> Result<Vec<u8>, BatchError> {
    let (header, raw) = records_section(batch, limit)?;
    let out = rebuild_batch(
        &header,
        target,
        &raw,
        header.record_count,
        header.last_offset_delta,
        header.max_timestamp,
    )?;
    // Check what we wrote: the framing of the records must still walk.
    let plain = as_uncompressed(&header, &raw)?;
    for r in Records::new(&plain)? {
        r?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::validate_batch;
    use crate::varint::{write_varint, write_varlong};

    /// A batch whose one record has two headers with the same key and a
    /// header key that is not UTF-8.
    fn batch_with_odd_headers() -> Vec<u8> {
        let mut body = Vec::new();
        body.push(0); // attributes
        write_varlong(&mut body, 0);
        write_varint(&mut body, 0);
        write_varint(&mut body, 1);
        body.push(b'k');
        write_varint(&mut body, 1);
        body.push(b'v');
        write_varint(&mut body, 3);
        for (k, v) in [
            (&b"dup"[..], &b"1"[..]),
            (b"dup", b"2"),
            (&[0xff, 0xfe][..], b"x"),
        ] {
            write_varint(&mut body, k.len() as i32);
            body.extend_from_slice(k);
            write_varint(&mut body, v.len() as i32);
            body.extend_from_slice(v);
        }
        let mut raw = Vec::new();
        write_varint(&mut raw, body.len() as i32);
        raw.extend_from_slice(&body);
        let template =
            crate::records::build_batch(&[(Some(b"k".as_slice()), Some(b"v".as_slice()), 1_000)]);
        let header = BatchHeader::parse(&template).expect("header");
        rebuild_batch(&header, Compression::None, &raw, 1, 0, 1_000).expect("batch")
    }

    #[test]
    fn every_codec_round_trips_records_byte_for_byte() {
        let plain = batch_with_odd_headers();
        validate_batch(&plain).expect("valid");
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let packed = recompress(&plain, codec, 1 << 20).expect("compress");
            let h = validate_batch(&packed).expect("valid compressed batch");
            assert_eq!(h.compression(), Ok(codec));
            let back = recompress(&packed, Compression::None, 1 << 20).expect("decompress");
            assert_eq!(back, plain, "{codec:?}: records changed");
        }
    }

    #[test]
    fn decompression_is_bounded_and_garbage_is_an_error() {
        let plain = batch_with_odd_headers();
        let packed = recompress(&plain, Compression::Zstd, 1 << 20).expect("compress");
        assert!(records_section(&packed, 4).is_err());
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            assert!(
                decompress(codec, b"definitely not compressed", 1 << 20).is_err(),
                "{codec:?}"
            );
            // A bomb: 64 MiB of zeros compress to little; the limit stops it early.
            let zeros = vec![0u8; 64 << 20];
            let packed = compress(codec, &zeros).expect("compress");
            assert!(
                packed.len() < 4 << 20,
                "{codec:?} packed {} bytes",
                packed.len()
            );
            assert!(decompress(codec, &packed, 1 << 20).is_err(), "{codec:?}");
            let back = decompress(codec, &packed, 64 << 20).expect("within the limit");
            assert_eq!(back.len(), 64 << 20);
        }
    }
}
