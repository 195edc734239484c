//! The controller listener (`controller.listener.names`): Kafka-framed
//! requests between the nodes of a cluster. It serves the metadata quorum's
//! Raft messages under Felice's own API keys ([`RAFT_API_KEYS`], never
//! advertised, refused on the client listener), ApiVersions, and the
//! controller's Kafka APIs: BrokerRegistration, BrokerHeartbeat,
//! AllocateProducerIds, AlterPartition,
//! CreateTopics, DeleteTopics and CreatePartitions (what brokers forward). Those run here only
//! while this node leads the quorum; otherwise they answer NOT_CONTROLLER.
//!
//! It starts before the broker exists (the quorum must elect a leader before
//! a broker can register), so it needs only the Raft handle.
//!
//! Limits: at most [`MAX_CONTROLLER_CONNECTIONS`] connections (voters and
//! brokers of one cluster; one connection each way per pair of nodes), frames
//! up to `socket.request.max.bytes`, one request at a time per connection.
//!
//! Raft frames: the request header v1 (key, version 0, correlation id,
//! client id) then the bincode body of `felice_metadata::raft::network`;
//! the answer is `[length][correlation id][bincode answer]`.

use crate::controller::ControllerContext;
use crate::controller_channel::ControllerRequest;
use crate::limits::{MAX_CONTROLLER_CONNECTIONS, MIN_REQUEST_FRAME_BYTES};
use bytes::{Buf, BufMut, BytesMut};
use felice_metadata::raft::network::{self, RaftRpc};
use kafka_protocol::messages::{
    AllocateProducerIdsRequest, AlterConfigsRequest, AlterPartitionRequest, ApiKey,
    ApiVersionsRequest, ApiVersionsResponse, BrokerHeartbeatRequest, BrokerRegistrationRequest,
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeQuorumRequest,
    IncrementalAlterConfigsRequest, RequestHeader,
};
use kafka_protocol::protocol::{Decodable, Message};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// Felice's private API keys for Raft: far above Kafka's range (Kafka's
/// keys stay below 100), so a Kafka client can never send one by mistake.
pub const RAFT_API_KEYS: [(i16, RaftRpc); 3] = [
    (32_000, RaftRpc::AppendEntries),
    (32_001, RaftRpc::Vote),
    (32_002, RaftRpc::InstallSnapshot),
];

pub fn raft_api_key(rpc: RaftRpc) -> i16 {
    RAFT_API_KEYS
        .iter()
        .find(|(_, r)| *r == rpc)
        .map_or(-1, |(k, _)| *k)
}

/// Accepts controller connections until `shutdown` flips to true.
pub async fn serve(
    ctx: Arc<ControllerContext>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let max_frame_bytes = ctx.config.socket_request_max_bytes;
    let permits = Arc::new(Semaphore::new(MAX_CONTROLLER_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "controller listener: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "controller listener: connection limit reached");
            continue;
        };
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(ctx, stream, max_frame_bytes, shutdown).await {
                tracing::debug!(%peer, error = %e, "controller connection closed");
            }
            drop(permit);
        });
    }
}

async fn connection(
    ctx: Arc<ControllerContext>,
    stream: TcpStream,
    max_frame_bytes: i32,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    // The broker whose heartbeats or metadata fetches this connection
    // carries: its closing is a hint for the liveness probe.
    let mut peer_node = None;
    let r = async {
        loop {
            let len = tokio::select! {
                r = rd.read_i32() => r?,
                _ = shutdown.changed() => return Ok(true),
            };
            if len < MIN_REQUEST_FRAME_BYTES as i32 || len > max_frame_bytes {
                return Err(invalid(format!("frame length {len}")));
            }
            let mut frame = BytesMut::zeroed(len as usize);
            rd.read_exact(&mut frame).await?;
            let response = handle(&ctx, frame, &mut peer_node).await?;
            wr.write_all(&response).await?;
        }
    }
    .await;
    if let (Some(node), false) = (peer_node, matches!(r, Ok(true))) {
        ctx.heartbeats.connection_lost(node);
    }
    r.map(|_| ())
}

fn invalid(why: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why)
}

/// Answers one frame; an error closes the connection. A heartbeat or a
/// metadata fetch names the broker on the other end in `peer_node`.
async fn handle(
    ctx: &ControllerContext,
    mut frame: BytesMut,
    peer_node: &mut Option<i32>,
) -> std::io::Result<BytesMut> {
    let raft = ctx.quorum.raft();
    let whole = frame.clone().freeze();
    let api_key = frame.get_i16();
    let version = frame.get_i16();
    let correlation_id = frame.get_i32();
    if let Some((_, rpc)) = RAFT_API_KEYS.iter().find(|(k, _)| *k == api_key) {
        skip_client_id(&mut frame)?;
        let answer = network::serve(raft, *rpc, &frame)
            .await
            .map_err(|e| invalid(e.to_string()))?;
        let mut out = BytesMut::with_capacity(8 + answer.len());
        out.put_i32(4 + answer.len() as i32);
        out.put_i32(correlation_id);
        out.extend_from_slice(&answer);
        return Ok(out);
    }
    if api_key == crate::metadata_fetch::METADATA_FETCH_API_KEY {
        skip_client_id(&mut frame)?;
        let req: felice_metadata::raft::fetch::FetchRequest =
            bincode::deserialize(&frame).map_err(|e| invalid(e.to_string()))?;
        *peer_node = Some(req.replica_id);
        let committed = raft.metrics().borrow().last_applied.map(|l| l.index);
        let answer = ctx.quorum.fetch(&req).await;
        if !matches!(
            answer,
            felice_metadata::raft::fetch::FetchAnswer::NotLeader { .. }
        ) {
            let caught_up = committed.is_none_or(|c| req.from_index > c);
            ctx.observers.fetched(
                req.replica_id,
                req.from_index as i64,
                caught_up,
                ctx.clock.now_ms(),
            );
        }
        let answer = bincode::serialize(&answer).map_err(|e| invalid(e.to_string()))?;
        let mut out = BytesMut::with_capacity(8 + answer.len());
        out.put_i32(4 + answer.len() as i32);
        out.put_i32(correlation_id);
        out.extend_from_slice(&answer);
        return Ok(out);
    }
    if api_key == crate::offline_replicas::OFFLINE_REPLICAS_API_KEY {
        use crate::offline_replicas::OfflineReplicasRequest;
        use kafka_protocol::protocol::Message;
        if !(OfflineReplicasRequest::VERSIONS.min..=OfflineReplicasRequest::VERSIONS.max)
            .contains(&version)
        {
            return Err(invalid(format!("api key {api_key} v{version} unsupported")));
        }
        let mut all = whole;
        RequestHeader::decode(&mut all, 1).map_err(|e| invalid(e.to_string()))?;
        let req = OfflineReplicasRequest::decode(&mut all, version)
            .map_err(|e| invalid(e.to_string()))?;
        let resp = crate::offline_replicas::on_controller(ctx, req).await;
        let mut out = BytesMut::with_capacity(10);
        out.put_i32(6);
        out.put_i32(correlation_id);
        out.put_i16(resp.error_code);
        return Ok(out);
    }
    if api_key == ApiKey::ApiVersions as i16 {
        if !(ApiVersionsRequest::VERSIONS.min..=ApiVersionsRequest::VERSIONS.max).contains(&version)
        {
            return Ok(crate::handlers::api_versions::unsupported_version_response(
                correlation_id,
            ));
        }
        let mut all = whole;
        RequestHeader::decode(
            &mut all,
            ApiKey::ApiVersions.request_header_version(version),
        )
        .map_err(|e| invalid(e.to_string()))?;
        ApiVersionsRequest::decode(&mut all, version).map_err(|e| invalid(e.to_string()))?;
        let resp = ApiVersionsResponse::default()
            .with_error_code(0)
            .with_api_keys(crate::handlers::api_versions::controller_advertised());
        return crate::dispatch::encode(ApiKey::ApiVersions, version, correlation_id, &resp)
            .map_err(|e| invalid(e.to_string()));
    }
    macro_rules! controller_api {
        ($req:ty) => {
            controller_api!($req, |_: &$req| {})
        };
        ($req:ty, $seen:expr) => {{
            if !(<$req>::VERSIONS.min..=<$req>::VERSIONS.max).contains(&version) {
                return Err(invalid(format!("api key {api_key} v{version} unsupported")));
            }
            let api = ApiKey::try_from(api_key).map_err(|_| invalid("api key".into()))?;
            let mut all = whole;
            RequestHeader::decode(&mut all, api.request_header_version(version))
                .map_err(|e| invalid(e.to_string()))?;
            let req = <$req>::decode(&mut all, version).map_err(|e| invalid(e.to_string()))?;
            $seen(&req);
            let resp = req.run_local(ctx, version).await;
            return crate::dispatch::encode(api, version, correlation_id, &resp)
                .map_err(|e| invalid(e.to_string()));
        }};
    }
    match ApiKey::try_from(api_key) {
        Ok(ApiKey::BrokerRegistration) => controller_api!(BrokerRegistrationRequest),
        Ok(ApiKey::BrokerHeartbeat) => {
            controller_api!(BrokerHeartbeatRequest, |r: &BrokerHeartbeatRequest| {
                *peer_node = Some(r.broker_id.0)
            })
        }
        Ok(ApiKey::AllocateProducerIds) => controller_api!(AllocateProducerIdsRequest),
        Ok(ApiKey::AlterPartition) => controller_api!(AlterPartitionRequest),
        Ok(ApiKey::CreateTopics) => controller_api!(CreateTopicsRequest),
        Ok(ApiKey::DeleteTopics) => controller_api!(DeleteTopicsRequest),
        Ok(ApiKey::CreatePartitions) => controller_api!(CreatePartitionsRequest),
        Ok(ApiKey::IncrementalAlterConfigs) => controller_api!(IncrementalAlterConfigsRequest),
        Ok(ApiKey::AlterConfigs) => controller_api!(AlterConfigsRequest),
        Ok(ApiKey::DescribeQuorum) => controller_api!(DescribeQuorumRequest),
        _ => Err(invalid(format!(
            "api key {api_key} v{version} is not served on the controller listener"
        ))),
    }
}

fn skip_client_id(frame: &mut BytesMut) -> std::io::Result<()> {
    if frame.len() < 2 {
        return Err(invalid("short header".into()));
    }
    let len = frame.get_i16();
    if len > 0 {
        if frame.len() < len as usize {
            return Err(invalid("short client id".into()));
        }
        frame.advance(len as usize);
    }
    Ok(())
}
