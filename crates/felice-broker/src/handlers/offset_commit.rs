//! OffsetCommit (key 8): members of the current generation, or clients
//! outside group management (generation -1: admin tools, consumers that
//! assign partitions themselves). Offsets are written to `__consumer_offsets`
//! before the answer. Partitions of unknown topics get
//! UNKNOWN_TOPIC_OR_PARTITION, as in Kafka, which also bounds how many
//! offsets a group can hold.

use crate::broker::Broker;
use crate::coordinator::{CommitPartition, Committer};
use crate::handlers::groups;
use felice_coord::GroupError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse, RequestHeader};
use kafka_protocol::protocol::{Message, VersionRange};
use std::sync::Arc;

pub const VERSIONS: VersionRange = OffsetCommitRequest::VERSIONS;

pub async fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let version = header.request_api_version;
    let topics: Vec<(String, Vec<CommitPartition>)> = req
        .topics
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions
                    .iter()
                    .map(|p| CommitPartition {
                        partition: p.partition_index,
                        offset: p.committed_offset,
                        leader_epoch: if version >= 6 {
                            p.committed_leader_epoch
                        } else {
                            -1
                        },
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    })
                    .collect(),
            )
        })
        .collect();
    let shape: Vec<(kafka_protocol::messages::TopicName, Vec<i32>)> = req
        .topics
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let group_id = req.group_id.0.to_string();
    let member_id = req.member_id.to_string();
    let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
    let generation_id = req.generation_id_or_member_epoch;
    let retention_time_ms = if (2..=4).contains(&version) {
        req.retention_time_ms
    } else {
        -1
    };
    let fallback: Vec<Vec<Result<(), GroupError>>> = topics
        .iter()
        .map(|(_, ps)| {
            ps.iter()
                .map(|_| Err(GroupError::CoordinatorNotAvailable))
                .collect()
        })
        .collect();
    let results = groups::blocking(broker, fallback, move |b| {
        let who = Committer {
            member_id: &member_id,
            group_instance_id: instance.as_deref(),
            generation_id,
            retention_time_ms,
            group_id_not_found: version >= 9,
        };
        b.groups.commit(b, &group_id, &who, &topics)
    })
    .await;
    OffsetCommitResponse::default().with_topics(
        shape
            .into_iter()
            .zip(results)
            .map(|((name, partitions), row)| {
                OffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        partitions
                            .into_iter()
                            .zip(row)
                            .map(|(p, r)| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_error_code(match r {
                                        Err(GroupError::RecordTooLarge) => {
                                            kafka_protocol::ResponseError::InvalidCommitOffsetSize
                                                .code()
                                        }
                                        r => groups::opt_code(&r),
                                    })
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}
