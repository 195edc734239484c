//! ListGroups (key 16): every group this broker coordinates, filtered by
//! state (v4+) and type (v5+), both case-insensitive as in Kafka. Every
//! group here is a "classic" one.

use crate::broker::Broker;
use crate::handlers::str_bytes;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse, RequestHeader};
use kafka_protocol::protocol::{Message, VersionRange};
use std::sync::Arc;

pub const VERSIONS: VersionRange = ListGroupsRequest::VERSIONS;

pub async fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    req: ListGroupsRequest,
) -> ListGroupsResponse {
    // On a blocking thread: a group's lock may be held across a log append.
    let version = header.request_api_version;
    let fallback = ListGroupsResponse::default()
        .with_error_code(kafka_protocol::ResponseError::CoordinatorNotAvailable.code());
    crate::handlers::groups::blocking(broker, fallback, move |b| respond(b, version, req)).await
}

fn respond(broker: &Broker, version: i16, req: ListGroupsRequest) -> ListGroupsResponse {
    let lower = |v: &[kafka_protocol::protocol::StrBytes]| -> Vec<String> {
        v.iter().map(|s| s.trim().to_lowercase()).collect()
    };
    let states = if version >= 4 {
        lower(&req.states_filter)
    } else {
        vec![]
    };
    let types = if version >= 5 {
        lower(&req.types_filter)
    } else {
        vec![]
    };
    let groups = broker
        .groups
        .list()
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.name().to_lowercase()))
        .filter(|_| types.is_empty() || types.iter().any(|t| t == "classic"))
        .map(|g| {
            let mut r = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&g.group_id)))
                .with_protocol_type(str_bytes(&g.protocol_type));
            if version >= 4 {
                r = r.with_group_state(str_bytes(g.state.name()));
            }
            if version >= 5 {
                r = r.with_group_type(str_bytes("classic"));
            }
            r
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}
