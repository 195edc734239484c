//! OffsetDelete (key 47): removes a group's committed offsets of topics it
//! does not subscribe to (GROUP_SUBSCRIBED_TO_TOPIC otherwise); a non-empty
//! group whose subscriptions are unknown (not "consumer") is NON_EMPTY_GROUP.

use crate::broker::Broker;
use crate::handlers::groups;
use felice_coord::GroupError;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse, RequestHeader};
use kafka_protocol::protocol::{Message, VersionRange};
use std::sync::Arc;

pub const VERSIONS: VersionRange = OffsetDeleteRequest::VERSIONS;

pub async fn handle(
    broker: &Arc<Broker>,
    _header: &RequestHeader,
    req: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let image = broker.image();
    let group_id = req.group_id.0.to_string();
    // Unknown topics/partitions are answered here, as Kafka's request layer does.
    let mut known: Vec<(String, Vec<i32>)> = Vec::new();
    let mut shape = Vec::new();
    for t in &req.topics {
        let name = t.name.0.to_string();
        let count = image.topic(&name).map_or(0, |t| t.partitions.len());
        let parts: Vec<(i32, bool)> = t
            .partitions
            .iter()
            .map(|p| {
                (
                    p.partition_index,
                    p.partition_index >= 0 && (p.partition_index as usize) < count,
                )
            })
            .collect();
        known.push((
            name,
            parts
                .iter()
                .filter(|(_, ok)| *ok)
                .map(|(p, _)| *p)
                .collect(),
        ));
        shape.push((t.name.clone(), parts));
    }
    let list = known.clone();
    let result = groups::blocking(broker, Err(GroupError::CoordinatorNotAvailable), move |b| {
        b.groups.delete_offsets(b, &group_id, &list)
    })
    .await;
    let results = match result {
        Err(e) => return OffsetDeleteResponse::default().with_error_code(groups::code(e)),
        Ok(r) => r,
    };
    let topics = shape
        .into_iter()
        .zip(results)
        .map(|((name, parts), row)| {
            let mut row = row.into_iter();
            OffsetDeleteResponseTopic::default()
                .with_name(name)
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, ok)| {
                            let code = if ok {
                                row.next().map_or(0, |r| groups::opt_code(&r))
                            } else {
                                kafka_protocol::ResponseError::UnknownTopicOrPartition.code()
                            };
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(p)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
