//! DeleteGroups (key 42): only empty groups; their offsets and record are
//! tombstoned in `__consumer_offsets`. Duplicate ids are answered once.

use crate::broker::Broker;
use crate::handlers::groups;
use felice_coord::GroupError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse, RequestHeader};
use kafka_protocol::protocol::{Message, VersionRange};
use std::sync::Arc;

pub const VERSIONS: VersionRange = DeleteGroupsRequest::VERSIONS;

pub async fn handle(
    broker: &Arc<Broker>,
    _header: &RequestHeader,
    req: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut ids = req.groups_names;
    let mut seen = std::collections::HashSet::new();
    ids.retain(|g| seen.insert(g.0.to_string()));
    let names: Vec<String> = ids.iter().map(|g| g.0.to_string()).collect();
    let fallback = names
        .iter()
        .map(|_| Err(GroupError::CoordinatorNotAvailable))
        .collect();
    let results: Vec<Result<(), GroupError>> = groups::blocking(broker, fallback, move |b| {
        names.iter().map(|n| b.groups.delete(b, n)).collect()
    })
    .await;
    DeleteGroupsResponse::default().with_results(
        ids.into_iter()
            .zip(results)
            .map(|(id, r)| {
                DeletableGroupResult::default()
                    .with_group_id(id)
                    .with_error_code(groups::opt_code(&r))
            })
            .collect(),
    )
}
