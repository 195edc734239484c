//! Encoded responses as a list of chunks, so that record bytes read from a
//! segment go to the socket without being copied into the encoded response:
//! as `sendfile` from the segment file ([`Chunk::File`]) or as their own
//! iovec ([`Chunk::Mem`]). (The copy into the response was 28% of the
//! broker's instructions in a fetch-heavy profile; the read into user memory
//! before it was most of the rest of the fetch path's copying.)
//!
//! [`ChunkedBuf`] is the buffer the `kafka-protocol` encoders write into.
//! Small writes (lengths, ids, names) land in the current chunk; a write
//! that lies inside one of the registered [`Source`]s (looked up only for
//! writes as long as the shortest source) becomes a chunk of its own: a
//! reference to the source's
//! bytes, or, when the source stands for a file range (a memory map used
//! only for its address, see `felice_log::ReadSlice::mapped`), that file
//! range. Only message encoding uses it, and message encoders never seek
//! back (only the record-batch encoder does, which never runs on this
//! buffer).

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;
use std::fs::File;
use std::ops::Range;
use std::sync::Arc;

/// Below this, copying is cheaper than another iovec or a `sendfile`.
pub const ZERO_COPY_MIN_BYTES: usize = 16 * 1024;

/// Bytes of a file, sent with `sendfile`.
#[derive(Debug, Clone)]
pub struct FileRange {
    pub file: Arc<File>,
    pub offset: u64,
    pub len: usize,
}

/// One piece of a response.
#[derive(Debug, Clone)]
pub enum Chunk {
    Mem(Bytes),
    File(FileRange),
}

impl Chunk {
    pub fn len(&self) -> usize {
        match self {
            Chunk::Mem(b) => b.len(),
            Chunk::File(f) => f.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bytes the encoder will be handed (matched by address), and the file
/// range they stand for, if they are a stand-in.
#[derive(Debug, Clone)]
pub struct Source {
    pub bytes: Bytes,
    pub file: Option<FileRange>,
}

/// A response ready to write: its chunks, in order.
#[derive(Debug, Default)]
pub struct Response {
    pub chunks: Vec<Chunk>,
    /// Share of the fetch memory budget the chunks hold, released once the
    /// response is written (dropped).
    pub budget: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Response {
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Chunk::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All chunks in one buffer, file ranges read (tests, tools).
    pub fn to_bytes(&self) -> std::io::Result<BytesMut> {
        use std::os::unix::fs::FileExt;
        let mut out = BytesMut::with_capacity(self.len());
        for c in &self.chunks {
            match c {
                Chunk::Mem(b) => out.extend_from_slice(b),
                Chunk::File(f) => {
                    let mut buf = vec![0u8; f.len];
                    f.file.read_exact_at(&mut buf, f.offset)?;
                    out.extend_from_slice(&buf);
                }
            }
        }
        Ok(out)
    }
}

impl From<BytesMut> for Response {
    fn from(b: BytesMut) -> Response {
        Response {
            chunks: vec![Chunk::Mem(b.freeze())],
            budget: None,
        }
    }
}

/// The encoders' target buffer; see the module docs.
pub struct ChunkedBuf {
    cur: BytesMut,
    chunks: Vec<Chunk>,
    frozen_len: usize,
    /// Sorted by address, for a binary search per `put_slice`.
    sources: Vec<Source>,
    /// Length of the shortest source: shorter slices are never looked up.
    min_source_len: usize,
    /// Stand-in for `range` requests outside the current chunk, which
    /// message encoders never make (see `range`).
    scratch: Vec<u8>,
}

impl ChunkedBuf {
    pub fn new(capacity: usize, mut sources: Vec<Source>) -> ChunkedBuf {
        sources.retain(|s| !s.bytes.is_empty());
        sources.sort_by_key(|s| s.bytes.as_ptr() as usize);
        let min_source_len = sources
            .iter()
            .map(|s| s.bytes.len())
            .min()
            .unwrap_or(usize::MAX);
        ChunkedBuf {
            cur: BytesMut::with_capacity(capacity),
            chunks: Vec::new(),
            frozen_len: 0,
            sources,
            min_source_len,
            scratch: Vec::new(),
        }
    }

    pub fn finish(mut self) -> Response {
        if !self.cur.is_empty() {
            self.chunks.push(Chunk::Mem(self.cur.split().freeze()));
        }
        Response {
            chunks: self.chunks,
            budget: None,
        }
    }

    fn source_of(&self, src: &[u8]) -> Option<Chunk> {
        let start = src.as_ptr() as usize;
        let end = start + src.len();
        // The last source starting at or before `src` is the only candidate:
        // file stand-ins are distinct mappings, so sources do not overlap.
        let i = self
            .sources
            .partition_point(|s| s.bytes.as_ptr() as usize <= start)
            .checked_sub(1)?;
        self.sources.get(i).and_then(|s| {
            let b_start = s.bytes.as_ptr() as usize;
            let b_end = b_start + s.bytes.len();
            if !(start >= b_start && end <= b_end) {
                return None;
            }
            Some(match &s.file {
                Some(f) => Chunk::File(FileRange {
                    file: f.file.clone(),
                    offset: f.offset + (start - b_start) as u64,
                    len: src.len(),
                }),
                None => Chunk::Mem(s.bytes.slice_ref(src)),
            })
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
        // Any slice as long as a source may be one (small record sets become
        // file stand-ins too once the fetch memory budget is in use).
        if src.len() >= self.min_source_len {
            if let Some(shared) = self.source_of(src) {
                if !self.cur.is_empty() {
                    let done = self.cur.split().freeze();
                    self.frozen_len += done.len();
                    self.chunks.push(Chunk::Mem(done));
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
    fn registered_slices_are_not_copied_and_output_is_identical() {
        let records: Vec<Bytes> = (0..3u8)
            .map(|i| Bytes::from(vec![i; 100_000 + i as usize]))
            .collect();
        let small = Bytes::from(vec![9u8; 100]);
        let unregistered = Bytes::from(vec![7u8; 100]);
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
        partitions.push(
            PartitionData::default()
                .with_partition_index(10)
                .with_records(Some(unregistered.clone())),
        );
        let resp = FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default().with_partitions(partitions)
        ]);
        for version in [4i16, 12, 16] {
            let mut plain = BytesMut::new();
            resp.encode(&mut plain, version).expect("plain");
            let mut sources: Vec<Source> = records
                .iter()
                .map(|r| Source {
                    bytes: r.clone(),
                    file: None,
                })
                .collect();
            sources.push(Source {
                bytes: small.clone(),
                file: None,
            });
            let mut chunked = ChunkedBuf::new(1024, sources);
            resp.encode(&mut chunked, version).expect("chunked");
            let out = chunked.finish();
            assert_eq!(out.to_bytes().expect("bytes"), plain, "v{version}");
            let mem = |c: &Chunk| match c {
                Chunk::Mem(b) => Some((b.as_ptr(), b.len())),
                Chunk::File(_) => None,
            };
            // Every registered record set is shared, not copied, the small one
            // too (a small range left in the page cache must go out from its
            // file, not be copied through the stand-in).
            for r in records.iter().chain([&small]) {
                assert!(out
                    .chunks
                    .iter()
                    .any(|c| mem(c) == Some((r.as_ptr(), r.len()))));
            }
            // The unregistered one was copied.
            assert!(!out
                .chunks
                .iter()
                .any(|c| mem(c).is_some_and(|(p, _)| p == unregistered.as_ptr())));
        }
    }
}
