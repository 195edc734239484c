//! Encoded responses as a list of chunks, so that record bytes read from a
//! segment go to the socket as their own iovec instead of being copied into
//! the encoded response (that copy was 28% of the broker's instructions in a
//! fetch-heavy profile).
//!
//! [`ChunkedBuf`] is the buffer the `kafka-protocol` encoders write into.
//! Small writes (lengths, ids, names) land in the current chunk; a write of
//! at least [`ZERO_COPY_MIN_BYTES`] that lies inside one of the registered
//! source `Bytes` (the fetched records) becomes a reference to that source.
//! Only message encoding uses it, and message encoders never seek back (only
//! the record-batch encoder does, which never runs on this buffer).

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;
use std::ops::Range;

/// Below this, copying is cheaper than another iovec.
pub const ZERO_COPY_MIN_BYTES: usize = 16 * 1024;

/// A response ready to write: its chunks, in order.
#[derive(Debug, Default)]
pub struct Response {
    pub chunks: Vec<Bytes>,
}

impl Response {
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All chunks in one buffer (tests, tools).
    pub fn to_bytes(&self) -> BytesMut {
        let mut out = BytesMut::with_capacity(self.len());
        for c in &self.chunks {
            out.extend_from_slice(c);
        }
        out
    }
}

impl From<BytesMut> for Response {
    fn from(b: BytesMut) -> Response {
        Response {
            chunks: vec![b.freeze()],
        }
    }
}

/// The encoders' target buffer; see the module docs.
pub struct ChunkedBuf {
    cur: BytesMut,
    chunks: Vec<Bytes>,
    frozen_len: usize,
    sources: Vec<Bytes>,
    /// Stand-in for `range` requests outside the current chunk, which
    /// message encoders never make (see `range`).
    scratch: Vec<u8>,
}

impl ChunkedBuf {
    pub fn new(capacity: usize, sources: Vec<Bytes>) -> ChunkedBuf {
        ChunkedBuf {
            cur: BytesMut::with_capacity(capacity),
            chunks: Vec::new(),
            frozen_len: 0,
            sources,
            scratch: Vec::new(),
        }
    }

    pub fn finish(mut self) -> Response {
        if !self.cur.is_empty() {
            self.chunks.push(self.cur.split().freeze());
        }
        Response {
            chunks: self.chunks,
        }
    }

    fn source_of(&self, src: &[u8]) -> Option<Bytes> {
        let start = src.as_ptr() as usize;
        let end = start + src.len();
        self.sources.iter().find_map(|b| {
            let b_start = b.as_ptr() as usize;
            let b_end = b_start + b.len();
            (start >= b_start && end <= b_end).then(|| b.slice_ref(src))
        })
    }
}

// SAFETY: every method delegates to the inner `BytesMut`, whose `BufMut`
// implementation upholds the trait's contract (`chunk_mut` returns writable
// memory of `remaining_mut` bounds; `advance_mut(cnt)` is only called by the
// caller after initialising `cnt` bytes of that chunk). `put_slice` either
// appends through the same `BytesMut` or pushes a finished chunk, never
// exposing uninitialised memory.
#[allow(unsafe_code)]
unsafe impl BufMut for ChunkedBuf {
    fn remaining_mut(&self) -> usize {
        self.cur.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: forwarded contract: the caller initialised `cnt` bytes of
        // the chunk `chunk_mut` returned, which is `self.cur`'s.
        unsafe { self.cur.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.cur.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() >= ZERO_COPY_MIN_BYTES {
            if let Some(shared) = self.source_of(src) {
                if !self.cur.is_empty() {
                    let done = self.cur.split().freeze();
                    self.frozen_len += done.len();
                    self.chunks.push(done);
                }
                self.frozen_len += shared.len();
                self.chunks.push(shared);
                return;
            }
        }
        self.cur.extend_from_slice(src);
    }
}

impl ByteBufMut for ChunkedBuf {
    fn offset(&self) -> usize {
        self.frozen_len + self.cur.len()
    }

    fn seek(&mut self, offset: usize) {
        match offset.checked_sub(self.frozen_len) {
            Some(within) => self.cur.resize(within, 0),
            None => debug_assert!(
                false,
                "seek into a frozen chunk ({offset} < {})",
                self.frozen_len
            ),
        }
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        let len = r.len();
        let start = r.start.checked_sub(self.frozen_len);
        match start {
            Some(s) if s + len <= self.cur.len() => &mut self.cur[s..s + len],
            _ => {
                debug_assert!(false, "range {r:?} outside the current chunk");
                self.scratch.clear();
                self.scratch.resize(len, 0);
                &mut self.scratch
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn large_registered_slices_are_not_copied_and_output_is_identical() {
        let records: Vec<Bytes> = (0..3u8)
            .map(|i| Bytes::from(vec![i; 100_000 + i as usize]))
            .collect();
        let small = Bytes::from(vec![9u8; 100]);
        let mut partitions: Vec<PartitionData> = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                PartitionData::default()
                    .with_partition_index(i as i32)
                    .with_records(Some(r.clone()))
            })
            .collect();
        partitions.push(
            PartitionData::default()
                .with_partition_index(9)
                .with_records(Some(small.clone())),
        );
        let resp = FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default().with_partitions(partitions)
        ]);
        for version in [4i16, 12, 16] {
            let mut plain = BytesMut::new();
            resp.encode(&mut plain, version).expect("plain");
            let mut sources = records.clone();
            sources.push(small.clone());
            let mut chunked = ChunkedBuf::new(1024, sources);
            resp.encode(&mut chunked, version).expect("chunked");
            let out = chunked.finish();
            assert_eq!(out.to_bytes(), plain, "v{version}");
            // The three large record sets are shared, not copied.
            for r in &records {
                assert!(out
                    .chunks
                    .iter()
                    .any(|c| c.as_ptr() == r.as_ptr() && c.len() == r.len()));
            }
            // The small one was copied.
            assert!(!out.chunks.iter().any(|c| c.as_ptr() == small.as_ptr()));
        }
    }
}
