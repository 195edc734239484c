//! What the socket-level tests share: a minimal connection that encodes a
//! request with `kafka-protocol`, sends it and decodes the reply, and a
//! broker on an ephemeral port.
#![allow(dead_code)]

use bytes::{Buf, BufMut, Bytes, BytesMut};
use felice_broker::server::{self, RunningBroker};
use felice_broker::BrokerConfig;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Conn {
    pub stream: TcpStream,
    pub correlation: i32,
}

impl Conn {
    pub async fn connect(b: &RunningBroker) -> Conn {
        Conn {
            stream: TcpStream::connect(b.local_addr).await.expect("connect"),
            correlation: 0,
        }
    }

    /// A connection to any broker, e.g. the reference Apache Kafka.
    pub async fn connect_to(addr: &str) -> Conn {
        Conn {
            stream: TcpStream::connect(addr).await.expect("connect"),
            correlation: 0,
        }
    }

    pub async fn send_raw(&mut self, frame: &[u8]) {
        self.stream.write_all(frame).await.expect("write");
    }

    pub async fn recv_raw(&mut self) -> Option<Bytes> {
        let len = self.stream.read_i32().await.ok()?;
        let mut buf = vec![0u8; len as usize];
        self.stream.read_exact(&mut buf).await.ok()?;
        Some(Bytes::from(buf))
    }

    pub async fn call<R: Request>(&mut self, req: &R, version: i16) -> R::Response {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("protocol-test")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .expect("header");
        req.encode(&mut body, version).expect("body");
        let mut frame = BytesMut::new();
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        self.send_raw(&frame).await;
        let mut resp = self.recv_raw().await.expect("response");
        let rh = ResponseHeader::decode(&mut resp, R::Response::header_version(version))
            .expect("response header");
        assert_eq!(rh.correlation_id, self.correlation);
        let out = R::Response::decode(&mut resp, version).expect("response body");
        assert_eq!(
            resp.remaining(),
            0,
            "{} v{version}: trailing bytes in response",
            R::KEY
        );
        out
    }
}

pub async fn broker(dir: &std::path::Path) -> RunningBroker {
    server::start(BrokerConfig::for_test(dir))
        .await
        .expect("start")
}

pub fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub fn versions<R: Message>() -> std::ops::RangeInclusive<i16> {
    R::VERSIONS.min..=R::VERSIONS.max
}
