//! DescribeGroups (key 15): state, protocol, members (with metadata and
//! assignment when Stable). An unknown group is "Dead" with no error before
//! v6 and GROUP_ID_NOT_FOUND from v6 (KIP-1043), as in Kafka 4.

use crate::broker::Broker;
use crate::handlers::str_bytes;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, RequestHeader};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::protocol::{Message, VersionRange};
use kafka_protocol::ResponseError;
use std::sync::Arc;

pub const VERSIONS: VersionRange = DescribeGroupsRequest::VERSIONS;

/// With no authorizer every group operation is allowed: READ, DELETE,
/// DESCRIBE (bits 3, 6, 8).
const ALL_GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

pub async fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    // On a blocking thread: a group's lock may be held across a log append.
    let version = header.request_api_version;
    let fallback = DescribeGroupsResponse::default().with_groups(
        req.groups
            .iter()
            .map(|id| {
                DescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_error_code(ResponseError::CoordinatorNotAvailable.code())
            })
            .collect(),
    );
    crate::handlers::groups::blocking(broker, fallback, move |b| respond(b, version, req)).await
}

fn respond(broker: &Broker, version: i16, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .into_iter()
        .map(|id| {
            let mut out = DescribedGroup::default().with_group_id(id.clone());
            if version >= 3 {
                out = out.with_authorized_operations(if req.include_authorized_operations {
                    ALL_GROUP_OPERATIONS
                } else {
                    i32::MIN
                });
            }
            if let Err(e) = broker.groups.owns(id.0.as_str()) {
                return out
                    .with_error_code(crate::handlers::groups::code(e))
                    .with_group_state(StrBytes::default());
            }
            let Some(d) = broker.groups.describe(id.0.as_str()) else {
                out = out.with_group_state(str_bytes("Dead"));
                if version >= 6 {
                    out = out
                        .with_error_code(ResponseError::GroupIdNotFound.code())
                        .with_error_message(Some(str_bytes(&format!(
                            "Group {} not found.",
                            id.0.as_str()
                        ))));
                }
                return out;
            };
            out.with_group_state(str_bytes(d.state.name()))
                .with_protocol_type(str_bytes(&d.protocol_type))
                .with_protocol_data(str_bytes(&d.protocol_name))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            let mut r = DescribedGroupMember::default()
                                .with_member_id(str_bytes(&m.member_id))
                                .with_client_id(str_bytes(&m.client_id))
                                .with_client_host(str_bytes(&m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment);
                            if version >= 4 {
                                r = r.with_group_instance_id(
                                    m.group_instance_id.as_deref().map(str_bytes),
                                );
                            }
                            r
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
