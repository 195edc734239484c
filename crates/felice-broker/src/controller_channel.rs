//! The broker's channel to the active controller, as KRaft's: requests that
//! change cluster metadata (BrokerRegistration, AllocateProducerIds,
//! CreateTopics, DeleteTopics) go to the quorum's leader. When this node
//! leads, they run in process; otherwise they travel over TCP to the
//! leader's controller listener, Kafka-framed, and the answer comes back as
//! the leader gave it. A broker that receives an admin request from a client
//! forwards it this way too, as Kafka does.
//!
//! Bounds: a call waits at most `controller.quorum.request.timeout.ms` per
//! attempt, and retries (a new leader, a dropped connection) until
//! [`crate::limits::MAX_CONTROLLER_CALL`]; one connection to the leader,
//! one call at a time over it.

use crate::controller::{self, ControllerContext};
use crate::metadata_source::MetadataSource;
use bytes::{BufMut, BytesMut};
use felice_metadata::raft::fetch::Endpoint;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::ResponseError;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("no active controller answered within {0} ms")]
    Unavailable(u128),
}

pub struct ControllerChannel {
    /// This node's controller, if it is one (requests run here while it leads).
    local: Option<Arc<ControllerContext>>,
    /// Who leads, as this node's metadata knows.
    source: MetadataSource,
    /// Set when this node stops: calls give up at once.
    closed: std::sync::atomic::AtomicBool,
    node_id: i32,
    attempt_timeout: Duration,
    max_frame_bytes: i32,
    /// The connection to the leader: (leader id, stream).
    conn: tokio::sync::Mutex<Option<(i32, TcpStream)>>,
    correlation: std::sync::atomic::AtomicI32,
}

/// A controller request: how it runs in process, and whether its answer
/// says the node that answered was not (or no longer) the leader.
pub trait ControllerRequest: Request + Clone + Send + Sync + 'static {
    /// Runs on this node, answering at `version` (fields the version lacks
    /// stay at their defaults).
    fn run_local(
        self,
        ctx: &ControllerContext,
        version: i16,
    ) -> impl std::future::Future<Output = Self::Response> + Send;
    fn not_controller(response: &Self::Response) -> bool;
}

const NOT_CONTROLLER: i16 = 41;
const _: () = assert!(ResponseError::NotController.code() == NOT_CONTROLLER);

impl ControllerRequest for BrokerRegistrationRequest {
    async fn run_local(self, ctx: &ControllerContext, _version: i16) -> BrokerRegistrationResponse {
        crate::broker_lifecycle::register_broker(ctx, self).await
    }
    fn not_controller(r: &BrokerRegistrationResponse) -> bool {
        r.error_code == NOT_CONTROLLER
    }
}

impl ControllerRequest for BrokerHeartbeatRequest {
    async fn run_local(self, ctx: &ControllerContext, _version: i16) -> BrokerHeartbeatResponse {
        crate::broker_lifecycle::heartbeat(ctx, self).await
    }
    fn not_controller(r: &BrokerHeartbeatResponse) -> bool {
        r.error_code == NOT_CONTROLLER
    }
}

impl ControllerRequest for AllocateProducerIdsRequest {
    async fn run_local(
        self,
        ctx: &ControllerContext,
        _version: i16,
    ) -> AllocateProducerIdsResponse {
        controller::allocate_producer_ids(ctx, self).await
    }
    fn not_controller(r: &AllocateProducerIdsResponse) -> bool {
        r.error_code == NOT_CONTROLLER
    }
}

impl ControllerRequest for AlterPartitionRequest {
    async fn run_local(self, ctx: &ControllerContext, version: i16) -> AlterPartitionResponse {
        crate::handlers::alter_partition::on_controller(ctx, self, version).await
    }
    /// A partition's NOT_CONTROLLER says this node's image is behind the
    /// partition's epochs: a stale controller; another may have it.
    fn not_controller(r: &AlterPartitionResponse) -> bool {
        r.error_code == NOT_CONTROLLER
            || r.topics
                .iter()
                .flat_map(|t| &t.partitions)
                .any(|p| p.error_code == NOT_CONTROLLER)
    }
}

impl ControllerRequest for CreateTopicsRequest {
    async fn run_local(self, ctx: &ControllerContext, _version: i16) -> CreateTopicsResponse {
        crate::handlers::create_topics::on_controller(ctx, self).await
    }
    fn not_controller(r: &CreateTopicsResponse) -> bool {
        r.topics.iter().any(|t| t.error_code == NOT_CONTROLLER)
    }
}

impl ControllerRequest for DeleteTopicsRequest {
    async fn run_local(self, ctx: &ControllerContext, _version: i16) -> DeleteTopicsResponse {
        crate::handlers::delete_topics::on_controller(ctx, self).await
    }
    fn not_controller(r: &DeleteTopicsResponse) -> bool {
        r.responses.iter().any(|t| t.error_code == NOT_CONTROLLER)
    }
}

impl ControllerRequest for CreatePartitionsRequest {
    async fn run_local(self, ctx: &ControllerContext, _version: i16) -> CreatePartitionsResponse {
        crate::handlers::create_partitions::on_controller(ctx, self).await
    }
    fn not_controller(r: &CreatePartitionsResponse) -> bool {
        r.results.iter().any(|t| t.error_code == NOT_CONTROLLER)
    }
}

impl ControllerRequest for IncrementalAlterConfigsRequest {
    async fn run_local(
        self,
        ctx: &ControllerContext,
        _version: i16,
    ) -> IncrementalAlterConfigsResponse {
        crate::handlers::alter_configs::on_controller_incremental(ctx, self).await
    }
    fn not_controller(r: &IncrementalAlterConfigsResponse) -> bool {
        r.responses.iter().any(|t| t.error_code == NOT_CONTROLLER)
    }
}

impl ControllerRequest for AlterConfigsRequest {
    async fn run_local(self, ctx: &ControllerContext, _version: i16) -> AlterConfigsResponse {
        crate::handlers::alter_configs::on_controller(ctx, self).await
    }
    fn not_controller(r: &AlterConfigsResponse) -> bool {
        r.responses.iter().any(|t| t.error_code == NOT_CONTROLLER)
    }
}

impl ControllerRequest for DescribeQuorumRequest {
    async fn run_local(self, ctx: &ControllerContext, version: i16) -> DescribeQuorumResponse {
        crate::handlers::describe_quorum::on_controller(ctx, self, version).await
    }
    fn not_controller(r: &DescribeQuorumResponse) -> bool {
        r.topics
            .iter()
            .flat_map(|t| &t.partitions)
            .any(|p| p.error_code == kafka_protocol::ResponseError::NotLeaderOrFollower.code())
    }
}

impl ControllerChannel {
    pub fn new(
        config: &crate::config::BrokerConfig,
        source: MetadataSource,
        local: Option<Arc<ControllerContext>>,
    ) -> ControllerChannel {
        ControllerChannel {
            node_id: config.node_id,
            local,
            source,
            closed: std::sync::atomic::AtomicBool::new(false),
            attempt_timeout: Duration::from_millis(config.controller_quorum_request_timeout_ms),
            max_frame_bytes: config.socket_request_max_bytes,
            conn: tokio::sync::Mutex::new(None),
            correlation: std::sync::atomic::AtomicI32::new(0),
        }
    }

    #[cfg(test)]
    pub fn context(&self) -> Option<&Arc<ControllerContext>> {
        self.local.as_ref()
    }

    /// Makes every call, now and later, give up (this node is stopping).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
            || matches!(&self.source, MetadataSource::Voter(q)
                if q.raft().metrics().borrow().running_state.is_err())
    }

    /// Sends `req` (at `version`) to the active controller and returns its
    /// answer; retries while no leader is known, the leader moves, or its
    /// connection fails, up to `MAX_CONTROLLER_CALL`.
    pub async fn call<R: ControllerRequest>(
        &self,
        req: R,
        version: i16,
    ) -> Result<R::Response, ChannelError> {
        let deadline = Instant::now() + crate::limits::MAX_CONTROLLER_CALL;
        loop {
            // A stopped node never gets an answer.
            if self.is_closed() {
                return Err(ChannelError::Unavailable(0));
            }
            let leader = self.source.leader();
            let answer = match (&leader, &self.local) {
                (Some(l), Some(ctx)) if l.node_id == self.node_id as u64 => {
                    Some(req.clone().run_local(ctx, version).await)
                }
                (Some(l), _) if l.node_id != self.node_id as u64 => {
                    match self.forward(l, &req, version).await {
                        Ok(r) => Some(r),
                        Err(e) => {
                            tracing::debug!(leader = l.node_id, error = %e, "controller call failed; retrying");
                            None
                        }
                    }
                }
                _ => None,
            };
            match answer {
                Some(r) if !R::not_controller(&r) => return Ok(r),
                Some(r) if Instant::now() >= deadline => return Ok(r),
                _ if Instant::now() >= deadline => {
                    return Err(ChannelError::Unavailable(
                        crate::limits::MAX_CONTROLLER_CALL.as_millis(),
                    ))
                }
                _ => {
                    // Wait for the quorum to know a (new) leader, bounded.
                    let wait = self.attempt_timeout.min(deadline - Instant::now());
                    self.source
                        .leader_changed(leader.map(|l| l.node_id), wait)
                        .await;
                }
            }
        }
    }

    async fn forward<R: ControllerRequest>(
        &self,
        leader: &Endpoint,
        req: &R,
        version: i16,
    ) -> std::io::Result<R::Response> {
        let addr = leader.addr.clone();
        let leader = leader.node_id as i32;
        let correlation_id = self
            .correlation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let frame = encode_request(req, version, correlation_id, self.node_id)?;
        let mut conn = self.conn.lock().await;
        let call = async {
            if conn.as_ref().is_none_or(|(id, _)| *id != leader) {
                let stream = TcpStream::connect(&addr).await?;
                let _ = stream.set_nodelay(true);
                *conn = Some((leader, stream));
            }
            let Some((_, stream)) = conn.as_mut() else {
                return Err(std::io::Error::other("no connection"));
            };
            stream.write_all(&frame).await?;
            let len = stream.read_i32().await?;
            if !(4..=self.max_frame_bytes).contains(&len) {
                return Err(std::io::Error::other(format!("answer length {len}")));
            }
            let mut body = vec![0u8; len as usize];
            stream.read_exact(&mut body).await?;
            Ok(body)
        };
        let body = match tokio::time::timeout(self.attempt_timeout, call).await {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => {
                *conn = None;
                return Err(e);
            }
            Err(_) => {
                *conn = None;
                return Err(std::io::Error::other(format!(
                    "no answer from {addr} within {} ms",
                    self.attempt_timeout.as_millis()
                )));
            }
        };
        drop(conn);
        let mut buf = bytes::Bytes::from(body);
        let header = ResponseHeader::decode(&mut buf, R::Response::header_version(version))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if header.correlation_id != correlation_id {
            return Err(std::io::Error::other("correlation id mismatch"));
        }
        R::Response::decode(&mut buf, version).map_err(|e| std::io::Error::other(e.to_string()))
    }
}

fn encode_request<R: Request>(
    req: &R,
    version: i16,
    correlation_id: i32,
    node_id: i32,
) -> std::io::Result<BytesMut> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from(format!("felice-broker-{node_id}"))));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, R::header_version(version))
        .and_then(|()| req.encode(&mut body, version))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut frame = BytesMut::with_capacity(4 + body.len());
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    Ok(frame)
}
