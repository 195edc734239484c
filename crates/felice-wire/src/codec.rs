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
//! Bounds: decompression refuses output larger than the caller's limit
//! (the codecs decompress into memory first, so the limit bounds what is
//! kept, not the transient peak: a "zip bomb" within `message.max.bytes`
//! of compressed input still expands once).

use crate::batch::{crc32c, BatchError, BatchHeader, Compression, BATCH_HEADER_LEN, CRC_START};
use crate::records::Records;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};

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
    let raw = decompress(codec, body)?;
    if raw.len() > limit {
        return Err(codec_error(
            codec,
            format!("decompresses to more than {limit} bytes"),
        ));
    }
    Ok((header, raw))
}

pub fn decompress(codec: Compression, data: &[u8]) -> Result<Vec<u8>, BatchError> {
    fn run<D: Decompressor<Bytes, Buf = Bytes>>(data: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut input = Bytes::copy_from_slice(data);
        D::decompress(&mut input, |out: &mut Bytes| {
            let n = out.remaining();
            Ok(out.copy_to_bytes(n).to_vec())
        })
    }
    let r = match codec {
        Compression::None => return Ok(data.to_vec()),
        Compression::Gzip => run::<Gzip>(data),
        Compression::Snappy => run::<Snappy>(data),
        Compression::Lz4 => run::<Lz4>(data),
        Compression::Zstd => run::<Zstd>(data),
    };
    r.map_err(|e| codec_error(codec, e))
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
                decompress(codec, b"definitely not compressed").is_err(),
                "{codec:?}"
            );
        }
    }
}
