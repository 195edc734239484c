//! One TCP connection to a broker: framing, correlation ids, version negotiation and
//! pipelining.
//!
//! Writers take the writer lock, assign the next correlation id, push a pending entry
//! onto a bounded queue and write the whole frame; a reader task pops the queue in order
//! as responses arrive (Kafka answers in request order on a connection) and hands each
//! response body to the waiting [`ResponseFuture`]. The queue's bound
//! ([`MAX_IN_FLIGHT_PER_CONNECTION`]) is the backpressure.
//!
//! Invariants: a pending entry is queued before its frame is written, so the reader always
//! finds it; the first correlation id mismatch, oversized frame or I/O error ends the
//! connection and fails every pending request with [`ClientError::Disconnected`].
//!
//! Cancellation: dropping a `ResponseFuture` is fine (the response is read and dropped).
//! Dropping a send future in the middle of its write leaves a torn frame on the socket;
//! the connection then marks itself broken and refuses further requests.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, Message, Request, StrBytes, VersionRange};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::limits::{
    CLIENT_ID, MAX_IN_FLIGHT_PER_CONNECTION, MAX_RESPONSE_FRAME_BYTES, READ_BUFFER_BYTES,
};
use crate::ClientError;

/// A request whose frame has been written and whose response has not been read yet.
struct Pending {
    correlation_id: i32,
    api: ApiKey,
    response_header_version: i16,
    tx: oneshot::Sender<Result<Bytes, ClientError>>,
}

struct Writer {
    half: OwnedWriteHalf,
    /// Reused encode buffer; it grows to the largest request sent.
    buf: BytesMut,
    next_correlation_id: i32,
    /// Set while a frame is being written; still set afterwards means the write was
    /// cancelled or failed and the byte stream is torn.
    broken: bool,
}

/// A connection to one broker. See the module docs.
pub struct Connection {
    peer: String,
    writer: Mutex<Writer>,
    pending: mpsc::Sender<Pending>,
    reader: tokio::task::JoinHandle<()>,
    /// Why the reader stopped, once it has; reported to later senders.
    closed: Arc<OnceLock<String>>,
    /// The broker's advertised (min, max) per API key, from ApiVersions at connect.
    broker_versions: HashMap<i16, (i16, i16)>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The response to a request sent with [`Connection::send`]; await it with
/// [`ResponseFuture::recv`].
#[must_use = "the response is lost unless you call recv"]
pub struct ResponseFuture<T> {
    rx: oneshot::Receiver<Result<Bytes, ClientError>>,
    api: ApiKey,
    version: i16,
    peer: String,
    _response: PhantomData<fn() -> T>,
}

impl<T: Decodable> ResponseFuture<T> {
    /// Waits for the response and decodes it.
    pub async fn recv(self) -> Result<T, ClientError> {
        let mut body = recv_bytes(Some(self.rx), &self.peer).await?;
        T::decode(&mut body, self.version).map_err(|source| ClientError::Codec {
            api: self.api,
            version: self.version,
            source,
        })
    }
}

fn api_key_of<R: Request>() -> Result<ApiKey, ClientError> {
    ApiKey::try_from(R::KEY).map_err(|()| ClientError::Protocol {
        peer: String::new(),
        detail: format!("unknown api key {}", R::KEY),
    })
}

impl Connection {
    /// Connects to `addr` (`host:port`) and negotiates API versions.
    pub async fn connect(addr: &str) -> Result<Connection, ClientError> {
        let peer = addr.to_string();
        let io = |source| ClientError::Io {
            peer: peer.clone(),
            source,
        };
        let stream = TcpStream::connect(addr).await.map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT_PER_CONNECTION);
        let closed = Arc::new(OnceLock::new());
        let reader = tokio::spawn(read_loop(peer.clone(), rd, rx, closed.clone()));
        let mut conn = Connection {
            peer,
            writer: Mutex::new(Writer {
                half: wr,
                buf: BytesMut::with_capacity(READ_BUFFER_BYTES),
                next_correlation_id: 0,
                broken: false,
            }),
            pending: tx,
            reader,
            closed,
            broker_versions: HashMap::new(),
        };
        let response = conn.negotiate_api_versions().await?;
        conn.broker_versions = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(conn)
    }

    /// The address this connection was opened to.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Asks the broker which API versions it supports. The connection already did this
    /// at connect; this returns a fresh answer.
    pub async fn api_versions(&self) -> Result<ApiVersionsResponse, ClientError> {
        let request = api_versions_request();
        let response = self.call(&request).await?;
        crate::kafka_error(ApiKey::ApiVersions, response.error_code, String::new)?;
        Ok(response)
    }

    /// ApiVersions at connect: try the newest version we know; a broker that does not
    /// know it answers UNSUPPORTED_VERSION in a v0 body listing its ApiVersions range,
    /// and we retry once with the highest version we share.
    async fn negotiate_api_versions(&self) -> Result<ApiVersionsResponse, ClientError> {
        let ours = ApiVersionsRequest::VERSIONS;
        let request = api_versions_request();
        let raw = self
            .write_request(ApiKey::ApiVersions, ours.max, &request, true, &[])
            .await?;
        let body = recv_bytes(raw, &self.peer).await?;
        if let Ok(response) = ApiVersionsResponse::decode(&mut body.clone(), ours.max) {
            if response.error_code == 0 {
                return Ok(response);
            }
        }
        let v0 = ApiVersionsResponse::decode(&mut body.clone(), 0).map_err(|source| {
            ClientError::Codec {
                api: ApiKey::ApiVersions,
                version: 0,
                source,
            }
        })?;
        if v0.error_code != ResponseError::UnsupportedVersion.code() {
            crate::kafka_error(ApiKey::ApiVersions, v0.error_code, String::new)?;
        }
        let theirs = v0
            .api_keys
            .iter()
            .find(|k| k.api_key == ApiKey::ApiVersions as i16)
            .map(|k| VersionRange {
                min: k.min_version,
                max: k.max_version,
            })
            .ok_or(ClientError::UnsupportedApi(ApiKey::ApiVersions))?;
        let common = ours.intersect(&theirs);
        if common.is_empty() {
            return Err(ClientError::UnsupportedApi(ApiKey::ApiVersions));
        }
        let raw = self
            .write_request(ApiKey::ApiVersions, common.max, &request, true, &[])
            .await?;
        let mut body = recv_bytes(raw, &self.peer).await?;
        let response = ApiVersionsResponse::decode(&mut body, common.max).map_err(|source| {
            ClientError::Codec {
                api: ApiKey::ApiVersions,
                version: common.max,
                source,
            }
        })?;
        crate::kafka_error(ApiKey::ApiVersions, response.error_code, String::new)?;
        Ok(response)
    }

    /// The highest version of `api` that both the broker and `kafka-protocol` support.
    pub fn version(&self, api: ApiKey) -> Result<i16, ClientError> {
        let (min, max) = self
            .broker_versions
            .get(&(api as i16))
            .copied()
            .ok_or(ClientError::UnsupportedApi(api))?;
        let common = api.valid_versions().intersect(&VersionRange { min, max });
        if common.is_empty() {
            return Err(ClientError::UnsupportedApi(api));
        }
        Ok(common.max)
    }

    /// Sends `request` at the negotiated version; the returned future yields the response.
    /// Returns once the frame is written, so a caller can pipeline several requests.
    pub async fn send<R: Request>(
        &self,
        request: &R,
    ) -> Result<ResponseFuture<R::Response>, ClientError> {
        let api = api_key_of::<R>()?;
        let version = self.version(api)?;
        self.send_version(request, version).await
    }

    /// Like [`send`](Self::send) at an explicit version.
    pub async fn send_version<R: Request>(
        &self,
        request: &R,
        version: i16,
    ) -> Result<ResponseFuture<R::Response>, ClientError> {
        let api = api_key_of::<R>()?;
        let rx = self.write_request(api, version, request, true, &[]).await?;
        let rx = rx.ok_or_else(|| ClientError::Protocol {
            peer: self.peer.clone(),
            detail: "no response slot".into(),
        })?;
        Ok(ResponseFuture {
            rx,
            api,
            version,
            peer: self.peer.clone(),
            _response: PhantomData,
        })
    }

    /// Sends a request the broker will not answer (Produce with acks=0).
    pub async fn send_without_response<R: Request>(&self, request: &R) -> Result<(), ClientError> {
        let api = api_key_of::<R>()?;
        let version = self.version(api)?;
        self.write_request(api, version, request, false, &[])
            .await?;
        Ok(())
    }

    /// Sends `request` and waits for its response.
    pub async fn call<R: Request>(&self, request: &R) -> Result<R::Response, ClientError> {
        self.send(request).await?.recv().await
    }

    /// Sends a Produce request whose one partition's records are `records`, written
    /// from those buffers (vectored) instead of being copied into the frame. `request`
    /// carries null records for that partition. `None` for `acks == 0`.
    pub(crate) async fn send_produce_records(
        &self,
        request: &kafka_protocol::messages::ProduceRequest,
        records: &[Bytes],
    ) -> Result<Option<ResponseFuture<kafka_protocol::messages::ProduceResponse>>, ClientError>
    {
        let api = ApiKey::Produce;
        let version = self.version(api)?;
        let expect = request.acks != 0;
        let rx = self
            .write_request(api, version, request, expect, records)
            .await?;
        Ok(rx.map(|rx| ResponseFuture {
            rx,
            api,
            version,
            peer: self.peer.clone(),
            _response: PhantomData,
        }))
    }

    /// Encodes and writes one request frame. With `records` (Produce only), the
    /// request's last field before its closing tagged fields is one partition's null
    /// records, replaced on the wire by `records` (see [`splice_records`]).
    async fn write_request<R: Encodable>(
        &self,
        api: ApiKey,
        version: i16,
        request: &R,
        expect_response: bool,
        records: &[Bytes],
    ) -> Result<Option<oneshot::Receiver<Result<Bytes, ClientError>>>, ClientError> {
        let codec = |source| ClientError::Codec {
            api,
            version,
            source,
        };
        let mut guard = self.writer.lock().await;
        let w = &mut *guard;
        if w.broken {
            self.reader.abort();
            return Err(self.disconnected("an earlier write was torn"));
        }
        let correlation_id = w.next_correlation_id;
        w.next_correlation_id = w.next_correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        w.buf.clear();
        w.buf.put_i32(0);
        header
            .encode(&mut w.buf, api.request_header_version(version))
            .map_err(codec)?;
        request.encode(&mut w.buf, version).map_err(codec)?;
        let len = i32::try_from(w.buf.len() - 4)
            .map_err(|_| codec(anyhow::anyhow!("request of {} bytes", w.buf.len())))?;
        w.buf[..4].copy_from_slice(&len.to_be_bytes());
        let spliced = if records.is_empty() {
            None
        } else {
            let records_len = records.iter().map(Bytes::len).sum();
            // Flexible versions use request header v2.
            let flexible = api.request_header_version(version) >= 2;
            Some(
                splice_records(&w.buf, flexible, records_len)
                    .ok_or_else(|| codec(anyhow::anyhow!("no null records to replace")))?,
            )
        };

        let rx = if expect_response {
            let (tx, rx) = oneshot::channel();
            let pending = Pending {
                correlation_id,
                api,
                response_header_version: api.response_header_version(version),
                tx,
            };
            self.pending
                .send(pending)
                .await
                .map_err(|_| self.disconnected("reader stopped"))?;
            Some(rx)
        } else {
            None
        };
        w.broken = true;
        let written = match &spliced {
            None => w.half.write_all(&w.buf).await,
            Some((head, tail)) => {
                let mut parts: Vec<Bytes> = Vec::with_capacity(records.len() + 2);
                parts.push(Bytes::copy_from_slice(head));
                parts.extend(records.iter().cloned());
                parts.push(Bytes::copy_from_slice(tail));
                write_all_parts(&mut w.half, parts).await
            }
        };
        if let Err(source) = written {
            self.reader.abort();
            return Err(ClientError::Io {
                peer: self.peer.clone(),
                source,
            });
        }
        w.broken = false;
        Ok(rx)
    }

    fn disconnected(&self, reason: &str) -> ClientError {
        let reason = match self.closed.get() {
            Some(why) => why.clone(),
            None => reason.to_string(),
        };
        ClientError::Disconnected {
            peer: self.peer.clone(),
            reason,
        }
    }
}

fn api_versions_request() -> ApiVersionsRequest {
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("felice-client"))
        .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")))
}

async fn recv_bytes(
    rx: Option<oneshot::Receiver<Result<Bytes, ClientError>>>,
    peer: &str,
) -> Result<Bytes, ClientError> {
    let gone = || ClientError::Disconnected {
        peer: peer.to_string(),
        reason: "connection dropped before the response".into(),
    };
    match rx {
        Some(rx) => rx.await.map_err(|_| gone())?,
        None => Err(gone()),
    }
}

async fn read_loop(
    peer: String,
    mut rd: OwnedReadHalf,
    mut pending: mpsc::Receiver<Pending>,
    closed: Arc<OnceLock<String>>,
) {
    let reason = match read_frames(&peer, &mut rd, &mut pending).await {
        Ok(()) => "closed by the broker".to_string(),
        Err(e) => e.to_string(),
    };
    let _ = closed.set(reason.clone());
    pending.close();
    while let Ok(p) = pending.try_recv() {
        let _ = p.tx.send(Err(ClientError::Disconnected {
            peer: peer.clone(),
            reason: reason.clone(),
        }));
    }
}

async fn read_frames(
    peer: &str,
    rd: &mut OwnedReadHalf,
    pending: &mut mpsc::Receiver<Pending>,
) -> Result<(), ClientError> {
    let protocol = |detail: String| ClientError::Protocol {
        peer: peer.to_string(),
        detail,
    };
    let mut buf = BytesMut::with_capacity(READ_BUFFER_BYTES);
    loop {
        while let Some(mut frame) = split_frame(&mut buf).map_err(protocol)? {
            let p = pending.try_recv().map_err(|_| {
                protocol(
                    "response with no request in flight (did the broker answer an \
                         acks=0 produce?)"
                        .into(),
                )
            })?;
            let header = match ResponseHeader::decode(&mut frame, p.response_header_version) {
                Ok(h) => h,
                Err(e) => {
                    let detail = format!("{:?} response header: {e}", p.api);
                    let _ = p.tx.send(Err(protocol(detail.clone())));
                    return Err(protocol(detail));
                }
            };
            if header.correlation_id != p.correlation_id {
                let detail = format!(
                    "{:?}: expected correlation id {}, got {}",
                    p.api, p.correlation_id, header.correlation_id
                );
                let _ = p.tx.send(Err(protocol(detail.clone())));
                return Err(protocol(detail));
            }
            // The waiter may have given up; the response is then dropped.
            let _ = p.tx.send(Ok(frame));
        }
        if buf.capacity() - buf.len() < READ_BUFFER_BYTES / 4 {
            buf.reserve(READ_BUFFER_BYTES);
        }
        let n = rd
            .read_buf(&mut buf)
            .await
            .map_err(|source| ClientError::Io {
                peer: peer.to_string(),
                source,
            })?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(());
            }
            return Err(protocol(format!(
                "eof inside a frame ({} bytes)",
                buf.len()
            )));
        }
    }
}

/// Takes one complete `[len: i32][body]` frame off the front of `buf`, if there is one.
/// Checks the length against the limit before reserving room for it.
fn split_frame(buf: &mut BytesMut) -> Result<Option<Bytes>, String> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let len = usize::try_from(len).map_err(|_| format!("negative frame length {len}"))?;
    if len > MAX_RESPONSE_FRAME_BYTES {
        return Err(format!(
            "frame of {len} bytes exceeds the {MAX_RESPONSE_FRAME_BYTES} byte limit"
        ));
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len).freeze()))
}

/// Splits an encoded Produce frame whose last partition's records are null into the
/// part before the records (its length field fixed for `records_len` more bytes, and
/// the records' own length prefix appended) and the part after (empty tagged-field
/// sections only: partition, topic and request in flexible versions, none before).
/// `None` if the frame does not end that way (more than one topic or partition).
fn splice_records(frame: &[u8], flexible: bool, records_len: usize) -> Option<(Vec<u8>, Vec<u8>)> {
    let (null, tail_len): (&[u8], usize) = if flexible {
        (&[0], 3)
    } else {
        (&[0xff, 0xff, 0xff, 0xff], 0)
    };
    let tail_at = frame.len().checked_sub(tail_len)?;
    let null_at = tail_at.checked_sub(null.len())?;
    if frame.get(null_at..tail_at)? != null || frame[tail_at..].iter().any(|b| *b != 0) {
        return None;
    }
    let mut head = frame[..null_at].to_vec();
    if flexible {
        // COMPACT_NULLABLE_BYTES: unsigned varint of length + 1.
        let mut v = records_len as u64 + 1;
        while v >= 0x80 {
            head.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        head.push(v as u8);
    } else {
        head.extend_from_slice(&i32::try_from(records_len).ok()?.to_be_bytes());
    }
    let frame_len = head.len() - 4 + records_len + tail_len;
    head[..4].copy_from_slice(&i32::try_from(frame_len).ok()?.to_be_bytes());
    Some((head, frame[tail_at..].to_vec()))
}

/// Writes every part, in order, with vectored writes.
async fn write_all_parts(half: &mut OwnedWriteHalf, parts: Vec<Bytes>) -> std::io::Result<()> {
    let mut parts: std::collections::VecDeque<Bytes> =
        parts.into_iter().filter(|p| !p.is_empty()).collect();
    while !parts.is_empty() {
        let slices: Vec<std::io::IoSlice<'_>> = parts
            .iter()
            .take(64)
            .map(|p| std::io::IoSlice::new(p))
            .collect();
        let mut n = half.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let Some(front) = parts.front_mut() else {
                break;
            };
            if n >= front.len() {
                n -= front.len();
                parts.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_frame_waits_for_whole_frame() {
        let mut buf = BytesMut::new();
        buf.put_i32(3);
        buf.put_slice(b"ab");
        assert_eq!(split_frame(&mut buf), Ok(None));
        buf.put_slice(b"c");
        buf.put_i32(0);
        assert_eq!(split_frame(&mut buf), Ok(Some(Bytes::from_static(b"abc"))));
        assert_eq!(split_frame(&mut buf), Ok(Some(Bytes::new())));
        assert_eq!(split_frame(&mut buf), Ok(None));
    }

    #[test]
    fn split_frame_rejects_bad_lengths() {
        let mut buf = BytesMut::new();
        buf.put_i32(-1);
        assert!(split_frame(&mut buf).is_err());
        let mut buf = BytesMut::new();
        buf.put_i32(i32::MAX);
        assert!(split_frame(&mut buf).is_err());
    }

    /// A Produce frame with null records, spliced around separate record bytes, is
    /// byte for byte the frame encoded with those records, at every version; frames
    /// that do not end in one partition's null records are refused.
    #[test]
    fn spliced_produce_frames_equal_encoded_ones() {
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        use kafka_protocol::messages::{ProduceRequest, TopicName};
        let frame = |version: i16, records: Option<Bytes>, partitions: i32| -> Vec<u8> {
            let data = TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("topic")))
                .with_topic_id(uuid::Uuid::from_u128(7))
                .with_partition_data(
                    (0..partitions)
                        .map(|i| {
                            PartitionProduceData::default()
                                .with_index(i)
                                .with_records(records.clone())
                        })
                        .collect(),
                );
            let req = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(1000)
                .with_topic_data(vec![data]);
            let header = RequestHeader::default()
                .with_request_api_key(ApiKey::Produce as i16)
                .with_request_api_version(version)
                .with_correlation_id(5)
                .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
            let mut buf = BytesMut::new();
            buf.put_i32(0);
            header
                .encode(&mut buf, ApiKey::Produce.request_header_version(version))
                .expect("header");
            req.encode(&mut buf, version).expect("body");
            let len = (buf.len() - 4) as i32;
            buf[..4].copy_from_slice(&len.to_be_bytes());
            buf.to_vec()
        };
        let versions = kafka_protocol::messages::ProduceRequest::VERSIONS;
        for version in versions.min.max(3)..=versions.max {
            let flexible = ApiKey::Produce.request_header_version(version) >= 2;
            for len in [1usize, 126, 127, 128, 20_000] {
                let records = Bytes::from(vec![0x5a; len]);
                let want = frame(version, Some(records.clone()), 1);
                let (head, tail) = splice_records(&frame(version, None, 1), flexible, len)
                    .expect("one partition with null records");
                let got: Vec<u8> = head
                    .iter()
                    .chain(records.iter())
                    .chain(tail.iter())
                    .copied()
                    .collect();
                assert_eq!(got, want, "Produce v{version}, {len} record bytes");
            }
            assert!(
                splice_records(
                    &frame(version, Some(Bytes::from_static(b"x")), 1),
                    flexible,
                    1
                )
                .is_none(),
                "v{version}: records present"
            );
        }
    }
}
