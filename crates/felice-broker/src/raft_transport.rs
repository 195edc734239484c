//! The metadata quorum's Raft messages over TCP to the other voters'
//! controller listeners ([`crate::controller_net`]), Kafka-framed under
//! Felice's private API keys.
//!
//! One connection per peer, opened on first use and again after any error;
//! calls to one peer go one at a time over it (openraft keeps one
//! replication stream per follower, so that costs no parallelism that
//! matters). Every call is bounded by openraft's timeout.

use crate::controller_net::raft_api_key;
use bytes::{BufMut, BytesMut};
use felice_metadata::raft::network::{RaftRpc, RaftTransport, TransportError, TransportFuture};
use felice_metadata::raft::BasicNode;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Slot = Arc<tokio::sync::Mutex<Option<TcpStream>>>;

pub struct TcpRaftTransport {
    /// This node's id, sent as the client id (it names the caller in logs).
    client_id: String,
    /// Largest answer accepted (`socket.request.max.bytes`).
    max_frame_bytes: i32,
    peers: Mutex<HashMap<u64, Slot>>,
    correlation: AtomicI32,
}

impl TcpRaftTransport {
    pub fn new(node_id: i32, max_frame_bytes: i32) -> TcpRaftTransport {
        TcpRaftTransport {
            client_id: format!("felice-raft-{node_id}"),
            max_frame_bytes,
            peers: Mutex::new(HashMap::new()),
            correlation: AtomicI32::new(0),
        }
    }

    fn slot(&self, target: u64) -> Slot {
        let mut peers = match self.peers.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        peers.entry(target).or_default().clone()
    }
}

pub(crate) async fn exchange(
    stream: &mut TcpStream,
    frame: &[u8],
    correlation_id: i32,
    max_frame_bytes: i32,
) -> std::io::Result<Vec<u8>> {
    stream.write_all(frame).await?;
    let len = stream.read_i32().await?;
    if !(4..=max_frame_bytes).contains(&len) {
        return Err(std::io::Error::other(format!("answer length {len}")));
    }
    let got = stream.read_i32().await?;
    if got != correlation_id {
        return Err(std::io::Error::other(format!(
            "correlation id {got}, expected {correlation_id}"
        )));
    }
    let mut body = vec![0u8; len as usize - 4];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

impl RaftTransport for TcpRaftTransport {
    fn call(
        &self,
        target: u64,
        node: &BasicNode,
        rpc: RaftRpc,
        body: Vec<u8>,
        timeout: Duration,
    ) -> TransportFuture {
        let slot = self.slot(target);
        let addr = node.addr.clone();
        let correlation_id = self.correlation.fetch_add(1, Ordering::Relaxed);
        let max = self.max_frame_bytes;
        let mut frame = BytesMut::with_capacity(14 + self.client_id.len() + body.len());
        frame.put_i32((10 + self.client_id.len() + body.len()) as i32);
        frame.put_i16(raft_api_key(rpc));
        frame.put_i16(0);
        frame.put_i32(correlation_id);
        frame.put_i16(self.client_id.len() as i16);
        frame.extend_from_slice(self.client_id.as_bytes());
        frame.extend_from_slice(&body);
        Box::pin(async move {
            let call = async {
                let mut conn = slot.lock().await;
                if conn.is_none() {
                    let stream = TcpStream::connect(&addr).await?;
                    let _ = stream.set_nodelay(true);
                    *conn = Some(stream);
                }
                let Some(stream) = conn.as_mut() else {
                    return Err(std::io::Error::other("no connection"));
                };
                let r = exchange(stream, &frame, correlation_id, max).await;
                if r.is_err() {
                    *conn = None;
                }
                r
            };
            match tokio::time::timeout(timeout, call).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(e)) => Err(TransportError(format!(
                    "{rpc:?} to node {target} at {addr}: {e}"
                ))),
                Err(_) => {
                    // The connection may hold half an answer: start afresh.
                    *slot.lock().await = None;
                    Err(TransportError(format!(
                        "{rpc:?} to node {target} at {addr}: no answer within {} ms",
                        timeout.as_millis()
                    )))
                }
            }
        })
    }
}
