//! JoinGroup (key 11): parks the request in the group until the join phase
//! completes (every known member rejoined, or the rebalance timeout passed);
//! see `felice_coord::group` for the rules and `crate::coordinator` for
//! the parking. v4+ new members first get MEMBER_ID_REQUIRED (KIP-394),
//! v5+ carry `group.instance.id` (KIP-345), v9+ `skip_assignment` (KIP-814).

use crate::broker::Broker;
use crate::handlers::{groups, str_bytes};
use felice_coord::group::{JoinRequest, JoinResponse, Protocol};
use felice_coord::GroupError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse, RequestHeader};
use kafka_protocol::protocol::{Message, VersionRange};
use std::sync::Arc;

pub const VERSIONS: VersionRange = JoinGroupRequest::VERSIONS;

pub async fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    req: JoinGroupRequest,
    client_host: &str,
) -> JoinGroupResponse {
    let version = header.request_api_version;
    let client_id = header
        .client_id
        .as_ref()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
    let rebalance_timeout_ms = if version == 0 {
        req.session_timeout_ms
    } else {
        req.rebalance_timeout_ms
    };
    // Kafka's member ids: "<client id or instance id>-<uuid>".
    let prefix = instance.clone().unwrap_or_else(|| client_id.clone());
    let join = JoinRequest {
        member_id: req.member_id.to_string(),
        group_instance_id: instance,
        client_id,
        client_host: client_host.to_string(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms,
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| Protocol {
                name: p.name.to_string(),
                metadata: p.metadata.clone(),
            })
            .collect(),
        require_known_member_id: version >= 4,
        new_member_id: format!("{prefix}-{}", uuid::Uuid::new_v4()),
        supports_skip_assignment: version >= 9,
    };
    let group_id = req.group_id.0.to_string();
    let member_id = join.member_id.clone();
    let parked = groups::blocking(broker, None, move |b| {
        Some(b.groups.join(b, &group_id, join))
    })
    .await;
    let answer = match parked {
        None => JoinResponse::error(GroupError::CoordinatorNotAvailable, &member_id),
        Some((id, rx)) => {
            match tokio::time::timeout(groups::wait_limit(rebalance_timeout_ms), rx).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => JoinResponse::error(GroupError::CoordinatorNotAvailable, &member_id),
                Err(_) => {
                    broker.groups.unpark(id);
                    JoinResponse::error(GroupError::RebalanceInProgress, &member_id)
                }
            }
        }
    };
    response(version, answer)
}

fn response(version: i16, a: JoinResponse) -> JoinGroupResponse {
    let mut resp = JoinGroupResponse::default()
        .with_error_code(a.error.map_or(0, groups::code))
        .with_generation_id(a.generation_id)
        .with_leader(str_bytes(&a.leader))
        .with_member_id(str_bytes(&a.member_id))
        .with_members(
            a.members
                .into_iter()
                .map(|m| {
                    let mut r = JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(&m.member_id))
                        .with_metadata(m.metadata);
                    if version >= 5 {
                        r = r.with_group_instance_id(m.group_instance_id.as_deref().map(str_bytes));
                    }
                    r
                })
                .collect(),
        );
    if version >= 7 {
        resp = resp
            .with_protocol_type(a.protocol_type.as_deref().map(str_bytes))
            .with_protocol_name(a.protocol_name.as_deref().map(str_bytes));
    } else {
        resp = resp.with_protocol_name(Some(str_bytes(a.protocol_name.as_deref().unwrap_or(""))));
    }
    if version >= 9 {
        resp = resp.with_skip_assignment(a.skip_assignment);
    }
    resp
}
