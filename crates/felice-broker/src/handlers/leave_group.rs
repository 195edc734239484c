//! LeaveGroup (key 13): v0–v2 one member by id, v3+ a batch of members by
//! id or `group.instance.id` with an error per member (KIP-345). A group
//! left without members becomes Empty at once.

use crate::broker::Broker;
use crate::handlers::groups;
use felice_coord::GroupError;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse, RequestHeader};
use kafka_protocol::protocol::{Message, VersionRange};
use std::sync::Arc;

pub const VERSIONS: VersionRange = LeaveGroupRequest::VERSIONS;

pub async fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    req: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let version = header.request_api_version;
    let leaving: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let group_id = req.group_id.0.to_string();
    let list = leaving.clone();
    let result = groups::blocking(broker, Err(GroupError::CoordinatorNotAvailable), move |b| {
        b.groups.leave(b, &group_id, &list)
    })
    .await;
    match result {
        Err(e) => LeaveGroupResponse::default().with_error_code(groups::code(e)),
        Ok(results) if version >= 3 => LeaveGroupResponse::default().with_members(
            leaving
                .into_iter()
                .zip(results)
                .map(|((member_id, instance), r)| {
                    MemberResponse::default()
                        .with_member_id(member_id.into())
                        .with_group_instance_id(instance.map(Into::into))
                        .with_error_code(groups::opt_code(&r))
                })
                .collect(),
        ),
        Ok(results) => LeaveGroupResponse::default()
            .with_error_code(results.first().map_or(0, groups::opt_code)),
    }
}
