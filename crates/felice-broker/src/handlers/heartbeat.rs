//! Heartbeat (key 12): keeps a member's session alive; REBALANCE_IN_PROGRESS
//! tells it to rejoin. Never writes, so it runs on the network thread.

use crate::broker::Broker;
use crate::handlers::groups;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse, RequestHeader};
use kafka_protocol::protocol::{Message, VersionRange};
use std::sync::Arc;

pub const VERSIONS: VersionRange = HeartbeatRequest::VERSIONS;

pub async fn handle(
    broker: &Arc<Broker>,
    _header: &RequestHeader,
    req: HeartbeatRequest,
) -> HeartbeatResponse {
    let r = broker.groups.heartbeat(
        req.group_id.0.as_str(),
        req.member_id.as_str(),
        req.group_instance_id.as_ref().map(|s| s.as_str()),
        req.generation_id,
    );
    HeartbeatResponse::default().with_error_code(groups::opt_code(&r))
}
