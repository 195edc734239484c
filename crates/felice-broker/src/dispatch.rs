//! Request dispatch: reads the request header, routes the body to the one
//! handler module of its API, and encodes the response with the header
//! version that API and version call for.
//!
//! What closes a connection (as Kafka does): an unknown API key, an API or
//! version Felice does not advertise (except ApiVersions, which gets the
//! KIP-511 fallback answer), a header or body that does not decode.

use crate::broker::Broker;
use crate::handlers::{self, api_versions};
use crate::response::{ChunkedBuf, Response, Source};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Message};
use std::sync::Arc;

/// A request that does not decode, or names an API or version Felice does not
/// serve: the connection is closed, as Kafka does.
#[derive(Debug, thiserror::Error)]
#[error("invalid request: {0}")]
pub struct InvalidRequest(pub String);

/// Handles one request frame; `None` means no response is due (acks=0).
/// `peer` is the client's address (JoinGroup records it as the member's host).
pub async fn handle_frame(
    broker: &Arc<Broker>,
    mut frame: Bytes,
    peer: Option<std::net::SocketAddr>,
) -> Result<Option<Response>, InvalidRequest> {
    let field = |at: usize| -> Result<[u8; 4], InvalidRequest> {
        frame
            .get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| InvalidRequest("short header".into()))
    };
    let head = field(0)?;
    let api_key = i16::from_be_bytes([head[0], head[1]]);
    let version = i16::from_be_bytes([head[2], head[3]]);
    let correlation_id = i32::from_be_bytes(field(4)?);
    let Ok(api) = ApiKey::try_from(api_key) else {
        return Err(InvalidRequest(format!("unknown api key {api_key}")));
    };
    if api == ApiKey::ApiVersions && !contains(ApiVersionsRequest::VERSIONS, version) {
        return Ok(Some(Response::from(
            api_versions::unsupported_version_response(correlation_id),
        )));
    }
    match handlers::supported_versions(api) {
        Some(range) if contains(range, version) => {}
        _ => {
            return Err(InvalidRequest(format!(
                "unsupported request {api:?} v{version}"
            )))
        }
    }
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(|e| InvalidRequest(format!("{api:?} v{version} header: {e}")))?;

    macro_rules! route {
        ($req:ty, $handler:path) => {{
            let req = <$req>::decode(&mut frame, version)
                .map_err(|e| InvalidRequest(format!("{api:?} v{version} body: {e}")))?;
            let resp = $handler(broker, &header, req).await;
            Some(Response::from(encode(api, version, correlation_id, &resp)?))
        }};
    }
    let response = match api {
        ApiKey::Produce => {
            let req = ProduceRequest::decode(&mut frame, version)
                .map_err(|e| InvalidRequest(format!("{api:?} v{version} body: {e}")))?;
            match handlers::produce::handle(broker, &header, req).await {
                Some(resp) => Some(Response::from(encode(api, version, correlation_id, &resp)?)),
                None => None,
            }
        }
        ApiKey::Fetch => {
            let req = FetchRequest::decode(&mut frame, version)
                .map_err(|e| InvalidRequest(format!("{api:?} v{version} body: {e}")))?;
            // Records read from segments go out as their own chunks
            // (`sendfile` from the segment file for the large ones).
            let (resp, sources, budget) = handlers::fetch::handle(broker, &header, req).await;
            let mut response = encode_chunks(api, version, correlation_id, &resp, sources)?;
            response.budget = budget;
            Some(response)
        }
        ApiKey::ListOffsets => route!(ListOffsetsRequest, handlers::list_offsets::handle),
        ApiKey::OffsetForLeaderEpoch => route!(
            OffsetForLeaderEpochRequest,
            handlers::offset_for_leader_epoch::handle
        ),
        ApiKey::Metadata => route!(MetadataRequest, handlers::metadata::handle),
        ApiKey::ApiVersions => route!(ApiVersionsRequest, handlers::api_versions::handle),
        ApiKey::CreateTopics => route!(CreateTopicsRequest, handlers::create_topics::handle),
        ApiKey::DeleteTopics => route!(DeleteTopicsRequest, handlers::delete_topics::handle),
        ApiKey::CreatePartitions => {
            route!(CreatePartitionsRequest, handlers::create_partitions::handle)
        }
        ApiKey::DescribeCluster => {
            route!(DescribeClusterRequest, handlers::describe_cluster::handle)
        }
        ApiKey::AlterConfigs => route!(AlterConfigsRequest, handlers::alter_configs::handle),
        ApiKey::IncrementalAlterConfigs => {
            route!(
                IncrementalAlterConfigsRequest,
                handlers::alter_configs::handle_incremental
            )
        }
        ApiKey::DescribeConfigs => {
            route!(DescribeConfigsRequest, handlers::describe_configs::handle)
        }
        ApiKey::FindCoordinator => {
            route!(FindCoordinatorRequest, handlers::find_coordinator::handle)
        }
        ApiKey::JoinGroup => {
            let req = JoinGroupRequest::decode(&mut frame, version)
                .map_err(|e| InvalidRequest(format!("{api:?} v{version} body: {e}")))?;
            // Kafka shows the member's host as Java's InetAddress.toString().
            let host = peer.map(|p| format!("/{}", p.ip())).unwrap_or_default();
            let resp = handlers::join_group::handle(broker, &header, req, &host).await;
            Some(Response::from(encode(api, version, correlation_id, &resp)?))
        }
        ApiKey::SyncGroup => route!(SyncGroupRequest, handlers::sync_group::handle),
        ApiKey::Heartbeat => route!(HeartbeatRequest, handlers::heartbeat::handle),
        ApiKey::LeaveGroup => route!(LeaveGroupRequest, handlers::leave_group::handle),
        ApiKey::OffsetCommit => route!(OffsetCommitRequest, handlers::offset_commit::handle),
        ApiKey::OffsetFetch => route!(OffsetFetchRequest, handlers::offset_fetch::handle),
        ApiKey::DescribeGroups => route!(DescribeGroupsRequest, handlers::describe_groups::handle),
        ApiKey::ListGroups => route!(ListGroupsRequest, handlers::list_groups::handle),
        ApiKey::DeleteGroups => route!(DeleteGroupsRequest, handlers::delete_groups::handle),
        ApiKey::OffsetDelete => route!(OffsetDeleteRequest, handlers::offset_delete::handle),
        ApiKey::DescribeProducers => {
            route!(
                DescribeProducersRequest,
                handlers::describe_producers::handle
            )
        }
        ApiKey::InitProducerId => {
            route!(InitProducerIdRequest, handlers::init_producer_id::handle)
        }
        ApiKey::DescribeQuorum => {
            route!(DescribeQuorumRequest, handlers::describe_quorum::handle)
        }
        other => {
            // supported_versions() and this match are built from the same
            // list; reaching here means they disagree.
            return Err(InvalidRequest(format!("no handler for {other:?}")));
        }
    };
    Ok(response)
}

fn contains(range: kafka_protocol::protocol::VersionRange, version: i16) -> bool {
    range.min <= version && version <= range.max
}

/// Encodes `[length][response header][body]` as chunks; record bytes that
/// lie in `sources` are referenced, not copied (see [`crate::response`]).
pub fn encode_chunks<R: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
    sources: Vec<Source>,
) -> Result<Response, InvalidRequest> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api.response_header_version(version);
    let error = |e: String| InvalidRequest(format!("encoding {api:?} v{version} response: {e}"));
    let size = header
        .compute_size(header_version)
        .and_then(|h| body.compute_size(version).map(|b| h + b))
        .map_err(|e| error(e.to_string()))?;
    let copied = size.saturating_sub(sources.iter().map(|s| s.bytes.len()).sum());
    let mut buf = ChunkedBuf::new(4 + copied, sources);
    buf.put_i32(size as i32);
    header
        .encode(&mut buf, header_version)
        .and_then(|()| body.encode(&mut buf, version))
        .map_err(|e| error(e.to_string()))?;
    Ok(buf.finish())
}

/// Encodes `[length][response header][body]`.
pub fn encode<R: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Result<BytesMut, InvalidRequest> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api.response_header_version(version);
    let size = header
        .compute_size(header_version)
        .and_then(|h| body.compute_size(version).map(|b| h + b))
        .map_err(|e| InvalidRequest(format!("encoding {api:?} v{version} response: {e}")))?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(size as i32);
    header
        .encode(&mut buf, header_version)
        .and_then(|()| body.encode(&mut buf, version))
        .map_err(|e| InvalidRequest(format!("encoding {api:?} v{version} response: {e}")))?;
    Ok(buf)
}
