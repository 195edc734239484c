//! SyncGroup (key 14): followers wait for the leader's assignment; the
//! leader's assignment is written to `__consumer_offsets` before anyone is
//! answered. v5+ requests carry the protocol type and name, checked against
//! the group's (INCONSISTENT_GROUP_PROTOCOL).

use crate::broker::Broker;
use crate::handlers::{groups, str_bytes};
use felice_coord::group::{SyncRequest, SyncResponse};
use felice_coord::GroupError;
use kafka_protocol::messages::{RequestHeader, SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::{Message, VersionRange};
use std::sync::Arc;

pub const VERSIONS: VersionRange = SyncGroupRequest::VERSIONS;

/// SyncGroup carries no rebalance timeout: wait at most the largest session
/// timeout Kafka allows by default (the group's sync deadline comes first).
const MAX_WAIT_MS: i32 = 1_800_000;

pub async fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    req: SyncGroupRequest,
) -> SyncGroupResponse {
    let version = header.request_api_version;
    if version >= 5 && (req.protocol_type.is_none() || req.protocol_name.is_none()) {
        // Kafka: v5+ must name the protocol type and name.
        return SyncGroupResponse::default()
            .with_error_code(groups::code(GroupError::InconsistentGroupProtocol));
    }
    let sync = SyncRequest {
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        generation_id: req.generation_id,
        protocol_type: req.protocol_type.as_ref().map(|s| s.to_string()),
        protocol_name: req.protocol_name.as_ref().map(|s| s.to_string()),
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let group_id = req.group_id.0.to_string();
    let parked = groups::blocking(broker, None, move |b| {
        Some(b.groups.sync(b, &group_id, sync))
    })
    .await;
    let answer = match parked {
        None => SyncResponse::error(GroupError::CoordinatorNotAvailable),
        Some((id, rx)) => match tokio::time::timeout(groups::wait_limit(MAX_WAIT_MS), rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => SyncResponse::error(GroupError::CoordinatorNotAvailable),
            Err(_) => {
                broker.groups.unpark(id);
                SyncResponse::error(GroupError::RebalanceInProgress)
            }
        },
    };
    let mut resp = SyncGroupResponse::default()
        .with_error_code(answer.error.map_or(0, groups::code))
        .with_assignment(answer.assignment);
    if version >= 5 {
        resp = resp
            .with_protocol_type(answer.protocol_type.as_deref().map(str_bytes))
            .with_protocol_name(answer.protocol_name.as_deref().map(str_bytes));
    }
    resp
}
