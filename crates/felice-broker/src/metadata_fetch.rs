//! How a node that is only a broker follows the metadata log: it fetches
//! the committed entries from the active controller's controller listener
//! ([`crate::controller_net`], private key [`METADATA_FETCH_API_KEY`]) and
//! hands each answer to its [`MetadataObserver`], as Kafka's brokers fetch
//! `__cluster_metadata` as observers.
//!
//! It finds the leader through `controller.quorum.bootstrap.servers` (or
//! the voters' addresses), tried in turn until one names the leader, then
//! fetches from the leader with a long poll (the leader answers as soon as
//! a new entry commits, or after [`FETCH_WAIT`]). A failed or silent leader
//! is forgotten and the search starts again.
//!
//! Bounds: one connection, one request in flight; an answer is at most
//! `socket.request.max.bytes` (a snapshot is sent whole); each call waits at
//! most `controller.quorum.request.timeout.ms` beyond the long poll.

use crate::config::BrokerConfig;
use crate::raft_transport::exchange;
use bytes::{BufMut, BytesMut};
use felice_metadata::observer::Progress;
use felice_metadata::raft::fetch::{FetchAnswer, FetchRequest, MAX_FETCH_BYTES};
use felice_metadata::MetadataObserver;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Felice's private API key for an observer's fetch of the metadata log
/// (beside the Raft keys of [`crate::controller_net::RAFT_API_KEYS`]).
pub const METADATA_FETCH_API_KEY: i16 = 32_003;

/// How long the leader may hold a fetch with nothing new.
pub const FETCH_WAIT: Duration = Duration::from_millis(500);

/// Fetches until `shutdown` flips.
pub async fn follow(
    observer: Arc<MetadataObserver>,
    config: BrokerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let bootstrap: Vec<String> = config
        .quorum_bootstrap
        .iter()
        .map(|(h, p)| format!("{h}:{p}"))
        .collect();
    if bootstrap.is_empty() {
        return;
    }
    let client_id = format!("felice-observer-{}", config.node_id);
    let call_timeout =
        FETCH_WAIT + Duration::from_millis(config.controller_quorum_request_timeout_ms);
    let max_frame = config.socket_request_max_bytes;
    let mut next_bootstrap = 0usize;
    let mut conn: Option<(String, TcpStream)> = None;
    let mut correlation_id = 0i32;
    let mut backoff = Duration::from_millis(50);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let addr = match observer.leader() {
            Some(l) => l.addr,
            None => {
                next_bootstrap += 1;
                bootstrap[next_bootstrap % bootstrap.len()].clone()
            }
        };
        let req = FetchRequest {
            replica_id: config.node_id,
            from_index: observer.next_index(),
            max_wait_ms: FETCH_WAIT.as_millis() as u64,
            max_bytes: MAX_FETCH_BYTES,
        };
        correlation_id = correlation_id.wrapping_add(1);
        let call = fetch(
            &mut conn,
            &addr,
            &client_id,
            &req,
            correlation_id,
            max_frame,
        );
        let answer = tokio::select! {
            r = tokio::time::timeout(call_timeout, call) => match r {
                Ok(r) => r,
                Err(_) => Err(std::io::Error::other(format!("no answer within {} ms", call_timeout.as_millis()))),
            },
            _ = shutdown.changed() => return,
        };
        let pause = match answer {
            Ok(answer) => match observer.apply(answer).await {
                Ok(Progress::Redirected) if observer.leader().is_none() => true,
                Ok(_) => false,
                Err(e) => {
                    tracing::error!(error = %e, "applying fetched metadata failed");
                    true
                }
            },
            Err(e) => {
                tracing::debug!(%addr, error = %e, "metadata fetch failed");
                conn = None;
                observer.lose_leader();
                true
            }
        };
        if pause {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        } else {
            backoff = Duration::from_millis(50);
        }
    }
}

async fn fetch(
    conn: &mut Option<(String, TcpStream)>,
    addr: &str,
    client_id: &str,
    req: &FetchRequest,
    correlation_id: i32,
    max_frame: i32,
) -> std::io::Result<FetchAnswer> {
    let body = bincode::serialize(req).map_err(std::io::Error::other)?;
    let mut frame = BytesMut::with_capacity(14 + client_id.len() + body.len());
    frame.put_i32((10 + client_id.len() + body.len()) as i32);
    frame.put_i16(METADATA_FETCH_API_KEY);
    frame.put_i16(0);
    frame.put_i32(correlation_id);
    frame.put_i16(client_id.len() as i16);
    frame.extend_from_slice(client_id.as_bytes());
    frame.extend_from_slice(&body);
    if conn.as_ref().is_none_or(|(a, _)| a != addr) {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        *conn = Some((addr.to_string(), stream));
    }
    let Some((_, stream)) = conn.as_mut() else {
        return Err(std::io::Error::other("no connection"));
    };
    let answer = exchange(stream, &frame, correlation_id, max_frame).await?;
    bincode::deserialize(&answer).map_err(std::io::Error::other)
}
