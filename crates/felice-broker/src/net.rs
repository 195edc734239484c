//! The network layer: the listener, per-connection framing and limits.
//!
//! Each connection is one task that reads a length-prefixed frame, has it
//! handled, writes the response, and goes on with the next. Requests on one
//! connection are therefore handled one at a time and answered in order,
//! exactly as Kafka does (it mutes a channel while a request is in flight);
//! a pipelining client keeps its next requests in the socket buffer meanwhile.
//!
//! Limits: a length prefix above `socket.request.max.bytes` (or negative, or
//! too short for a header) closes the connection before anything is
//! allocated; frame bodies are read incrementally, so memory follows the
//! bytes actually received; `max.connections` caps open connections (excess
//! ones are closed at once); a connection idle for `connections.max.idle.ms`
//! is closed; `queued.max.request.bytes` bounds the request bytes held by all
//! connections together (a frame waits for room before its body is read).
//! A malformed frame closes only its own connection.

use crate::broker::Broker;
use crate::dispatch;
use crate::limits::{CONNECTION_READ_BUFFER_BYTES, FRAME_PREALLOC_BYTES, MIN_REQUEST_FRAME_BYTES};
use crate::response::{Chunk, FileRange};
use bytes::BytesMut;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// Accepts connections until `shutdown` flips to true.
pub async fn serve(
    broker: Arc<Broker>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(broker.config.max_connections));
    // queued.max.request.bytes: request bytes held at once, all connections.
    let memory = broker
        .config
        .queued_max_request_bytes
        .map(|bytes| Arc::new(Semaphore::new((bytes as usize).min(Semaphore::MAX_PERMITS))));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = broker.config.max_connections, "max.connections reached; closing new connection");
            drop(stream);
            continue;
        };
        let broker = broker.clone();
        let shutdown = shutdown.clone();
        let memory = memory.clone();
        tokio::spawn(async move {
            if let Err(reason) = connection(broker, stream, shutdown, memory).await {
                tracing::debug!(%peer, %reason, "connection closed");
            }
            drop(permit);
        });
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("peer closed")]
    Eof,
    #[error("idle for longer than connections.max.idle.ms")]
    Idle,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame length {0} outside [{MIN_REQUEST_FRAME_BYTES}, socket.request.max.bytes={1}]")]
    FrameSize(i32, i32),
    #[error(transparent)]
    InvalidRequest(#[from] dispatch::InvalidRequest),
    #[error("broker shutting down")]
    Shutdown,
}

async fn connection(
    broker: Arc<Broker>,
    stream: TcpStream,
    mut shutdown: watch::Receiver<bool>,
    memory: Option<Arc<Semaphore>>,
) -> Result<(), ConnError> {
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr().ok();
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(CONNECTION_READ_BUFFER_BYTES, rd);
    let idle = Duration::from_millis(broker.config.connections_max_idle_ms);
    let max = broker.config.socket_request_max_bytes;
    loop {
        let frame = tokio::select! {
            r = tokio::time::timeout(idle, read_frame(&mut rd, max, memory.as_ref())) => match r {
                Err(_) => return Err(ConnError::Idle),
                Ok(frame) => frame?,
            },
            _ = shutdown.changed() => return Err(ConnError::Shutdown),
        };
        // Once a controlled shutdown has begun, this broker's own image may
        // already show it fenced: answering Metadata from it would list no
        // broker at all on a single node, and clients (librdkafka 2.10+)
        // drop brokers a Metadata answer leaves out. A stopping broker
        // closes connections instead, as a stopped one would.
        if broker.is_shutting_down() {
            return Err(ConnError::Shutdown);
        }
        // The memory permit is held until the response is written.
        let (frame, _permit) = frame;
        match dispatch::handle_frame(&broker, frame.freeze(), peer).await {
            Ok(Some(response)) => write_chunks(&mut wr, response.chunks).await?,
            Ok(None) => {}
            Err(e) => {
                tracing::info!(peer = ?peer, error = %e, "closing connection after an invalid request");
                return Err(e.into());
            }
        }
    }
}

/// Writes a response's chunks in order: runs of in-memory chunks with
/// vectored writes (resuming after partial writes), file ranges with
/// `sendfile` (page cache to socket, no copy through this process).
async fn write_chunks(wr: &mut OwnedWriteHalf, chunks: Vec<Chunk>) -> std::io::Result<()> {
    let mut chunks: std::collections::VecDeque<Chunk> =
        chunks.into_iter().filter(|c| !c.is_empty()).collect();
    while let Some(front) = chunks.front() {
        if let Chunk::File(range) = front {
            send_file(wr.as_ref(), range).await?;
            chunks.pop_front();
            continue;
        }
        let slices: Vec<std::io::IoSlice<'_>> = chunks
            .iter()
            .take(MAX_IOVECS)
            .map_while(|c| match c {
                Chunk::Mem(b) => Some(std::io::IoSlice::new(b)),
                Chunk::File(_) => None,
            })
            .collect();
        let mut written = wr.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let Some(Chunk::Mem(front)) = chunks.front_mut() else {
                break;
            };
            if written >= front.len() {
                written -= front.len();
                chunks.pop_front();
            } else {
                bytes::Buf::advance(front, written);
                written = 0;
            }
        }
    }
    Ok(())
}

/// Bytes per `sendfile` call (Linux caps one call at ~2 GiB anyway).
const SENDFILE_CHUNK: usize = 8 << 20;

/// Sends a file range to the socket with `sendfile`, waiting for the socket
/// to be writable between partial sends. A file that ends before the range
/// does is an error: the response already promised those bytes, so the
/// connection must close.
async fn send_file(stream: &TcpStream, range: &FileRange) -> std::io::Result<()> {
    let mut offset = range.offset;
    let end = range.offset + range.len as u64;
    while offset < end {
        stream.writable().await?;
        let want = ((end - offset) as usize).min(SENDFILE_CHUNK);
        let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
            rustix::fs::sendfile(stream, &*range.file, Some(&mut offset), want)
                .map_err(std::io::Error::from)
        });
        match sent {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "segment file ended inside a fetched range",
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// iovecs per write (Linux's IOV_MAX is 1024; a fetch response has about
/// two chunks per partition with data).
const MAX_IOVECS: usize = 64;

/// Reads one length-prefixed frame, refusing bad lengths before allocating
/// and waiting for `memory` (queued.max.request.bytes) to cover the frame
/// before reading its body: the socket is not read meanwhile, which pushes
/// back on the client through TCP.
async fn read_frame<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
    max: i32,
    memory: Option<&Arc<Semaphore>>,
) -> Result<(BytesMut, Option<OwnedSemaphorePermit>), ConnError> {
    let len = match rd.read_i32().await {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ConnError::Eof),
        Err(e) => return Err(e.into()),
    };
    if len < MIN_REQUEST_FRAME_BYTES as i32 || len > max {
        return Err(ConnError::FrameSize(len, max));
    }
    let len = len as usize;
    let permit = match memory {
        Some(pool) => Some(
            pool.clone()
                .acquire_many_owned(len as u32)
                .await
                .map_err(|_| ConnError::Shutdown)?,
        ),
        None => None,
    };
    // With the request memory pool, the frame's whole length is already
    // budgeted, so it is allocated at once: a large frame is read without a
    // reallocation (whose copy of the first MiB was 5% of the broker's CPU
    // with 1 MiB batches), and the allocator only backs the pages that bytes
    // arrive into. Without a pool, up to FRAME_PREALLOC_BYTES is allocated at
    // once and the rest reserved only once that much has actually arrived, so
    // a peer announcing 100 MB and sending nothing costs one modest buffer.
    let first = if permit.is_some() {
        len
    } else {
        len.min(FRAME_PREALLOC_BYTES)
    };
    let mut buf = BytesMut::with_capacity(first);
    while buf.len() < len {
        if buf.capacity() == buf.len() {
            buf.reserve(len - buf.len());
        }
        let want = len - buf.len();
        let n = (&mut *rd).take(want as u64).read_buf(&mut buf).await?;
        if n == 0 {
            return Err(ConnError::Eof);
        }
    }
    Ok((buf, permit))
}
