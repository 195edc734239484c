//! Idle connections: a TCP connection that has completed exactly one ApiVersions round
//! trip and then just stays open, for measuring what a broker spends per connected but
//! silent client (`felice bench --idle-connections`).
//!
//! Unlike a [`Connection`](crate::Connection) it has no reader task and no buffers: the
//! client side of an idle connection costs one socket, so thousands of them measure the
//! broker, not this process.

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::limits::CLIENT_ID;
use crate::ClientError;

/// Largest ApiVersions response we accept (a full one is about 1 KiB).
const MAX_API_VERSIONS_RESPONSE_BYTES: usize = 64 * 1024;

/// An open connection that has answered one ApiVersions request and sends nothing
/// more. Dropping it closes the socket.
pub struct IdleConnection {
    stream: TcpStream,
    /// The ApiVersions version the broker answered.
    pub api_versions_version: i16,
}

impl IdleConnection {
    /// Connects to `addr`, sends ApiVersions at our newest version and reads the answer.
    /// A broker that does not know that version answers UNSUPPORTED_VERSION in a v0
    /// body (KIP-511); that is a completed round trip too and is accepted.
    pub async fn open(addr: &str) -> Result<IdleConnection, ClientError> {
        let peer = addr.to_string();
        let io = |source| ClientError::Io {
            peer: peer.clone(),
            source,
        };
        let version = ApiVersionsRequest::VERSIONS.max;
        let codec = |source| ClientError::Codec {
            api: ApiKey::ApiVersions,
            version,
            source,
        };
        let protocol = |detail: String| ClientError::Protocol {
            peer: peer.clone(),
            detail,
        };
        let mut stream = TcpStream::connect(addr).await.map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;

        let correlation_id = 1;
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::ApiVersions as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("felice-client"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut buf = BytesMut::with_capacity(128);
        buf.put_i32(0);
        header
            .encode(
                &mut buf,
                ApiKey::ApiVersions.request_header_version(version),
            )
            .map_err(codec)?;
        request.encode(&mut buf, version).map_err(codec)?;
        let len = i32::try_from(buf.len() - 4)
            .map_err(|_| protocol(format!("request of {} bytes", buf.len())))?;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        stream.write_all(&buf).await.map_err(io)?;

        let len = stream.read_i32().await.map_err(io)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l <= MAX_API_VERSIONS_RESPONSE_BYTES)
            .ok_or_else(|| protocol(format!("ApiVersions response frame length {len}")))?;
        let mut body = BytesMut::zeroed(len);
        stream.read_exact(&mut body).await.map_err(io)?;
        let mut body = body.freeze();
        // ApiVersions responses always use response header v0 (KIP-511).
        let header = ResponseHeader::decode(&mut body, 0).map_err(codec)?;
        if header.correlation_id != correlation_id {
            return Err(protocol(format!(
                "ApiVersions: expected correlation id {correlation_id}, got {}",
                header.correlation_id
            )));
        }
        let answered = match ApiVersionsResponse::decode(&mut body.clone(), version) {
            Ok(r) if r.error_code == 0 => version,
            _ => {
                let v0 = ApiVersionsResponse::decode(&mut body, 0).map_err(codec)?;
                if v0.error_code != ResponseError::UnsupportedVersion.code() {
                    crate::kafka_error(ApiKey::ApiVersions, v0.error_code, String::new)?;
                }
                0
            }
        };
        Ok(IdleConnection {
            stream,
            api_versions_version: answered,
        })
    }

    /// True while the broker has not closed the connection (checked without blocking:
    /// a readable socket with no data pending would mean EOF or unexpected bytes).
    pub fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        match self.stream.try_read(&mut probe) {
            Ok(_) => false, // EOF (0) or data the broker should not have sent
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        }
    }
}
