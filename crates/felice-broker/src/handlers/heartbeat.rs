//! Heartbeat (key 12): keeps a member's session alive; REBALANCE_IN_PROGRESS
//! tells it to rejoin.

use crate::broker::Broker;
use crate::handlers::groups;
use felice_coord::GroupError;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse, RequestHeader};
use kafka_protocol::protocol::{Message, VersionRange};
use std::sync::Arc;

pub const VERSIONS: VersionRange = HeartbeatRequest::VERSIONS;

pub async fn handle(
    broker: &Arc<Broker>,
    _header: &RequestHeader,
    req: HeartbeatRequest,
) -> HeartbeatResponse {
    // On a blocking thread: the group's lock may be held across a log
    // append (an fsync or a cleaner install on __consumer_offsets).
    let group = req.group_id.0.to_string();
    let member = req.member_id.to_string();
    let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
    let generation = req.generation_id;
    let r = groups::blocking(broker, Err(GroupError::CoordinatorNotAvailable), move |b| {
        b.groups
            .heartbeat(&group, &member, instance.as_deref(), generation)
    })
    .await;
    HeartbeatResponse::default().with_error_code(groups::opt_code(&r))
}
