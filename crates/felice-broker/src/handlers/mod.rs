//! One module per Kafka API. Each declares the versions it handles; the
//! table below, built from those declarations, is what ApiVersions advertises
//! and what dispatch accepts, so an API without a handler is never advertised.

pub mod alter_configs;
pub mod alter_partition;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_producers;
pub mod describe_quorum;
pub mod fetch;
pub mod find_coordinator;
pub mod groups;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sync_group;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;

/// Every handled API with the versions handled: the full range the
/// `kafka-protocol` crate supports for it.
pub const HANDLED: &[(ApiKey, VersionRange)] = &[
    (ApiKey::Produce, produce::VERSIONS),
    (ApiKey::Fetch, fetch::VERSIONS),
    (ApiKey::ListOffsets, list_offsets::VERSIONS),
    (
        ApiKey::OffsetForLeaderEpoch,
        offset_for_leader_epoch::VERSIONS,
    ),
    (ApiKey::Metadata, metadata::VERSIONS),
    (ApiKey::ApiVersions, api_versions::VERSIONS),
    (ApiKey::CreateTopics, create_topics::VERSIONS),
    (ApiKey::DeleteTopics, delete_topics::VERSIONS),
    (ApiKey::CreatePartitions, create_partitions::VERSIONS),
    (ApiKey::DescribeCluster, describe_cluster::VERSIONS),
    (ApiKey::DescribeConfigs, describe_configs::VERSIONS),
    (ApiKey::AlterConfigs, alter_configs::VERSIONS),
    (
        ApiKey::IncrementalAlterConfigs,
        alter_configs::INCREMENTAL_VERSIONS,
    ),
    (ApiKey::FindCoordinator, find_coordinator::VERSIONS),
    (ApiKey::JoinGroup, join_group::VERSIONS),
    (ApiKey::SyncGroup, sync_group::VERSIONS),
    (ApiKey::Heartbeat, heartbeat::VERSIONS),
    (ApiKey::LeaveGroup, leave_group::VERSIONS),
    (ApiKey::OffsetCommit, offset_commit::VERSIONS),
    (ApiKey::OffsetFetch, offset_fetch::VERSIONS),
    (ApiKey::DescribeGroups, describe_groups::VERSIONS),
    (ApiKey::ListGroups, list_groups::VERSIONS),
    (ApiKey::DeleteGroups, delete_groups::VERSIONS),
    (ApiKey::OffsetDelete, offset_delete::VERSIONS),
    (ApiKey::InitProducerId, init_producer_id::VERSIONS),
    (ApiKey::DescribeProducers, describe_producers::VERSIONS),
    (ApiKey::DescribeQuorum, describe_quorum::VERSIONS),
];

/// Kafka's "authorized operations not requested" marker.
pub const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;
/// With no authorizer every cluster operation is allowed, as Kafka lists
/// them: CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS,
/// ALTER_CONFIGS, IDEMPOTENT_WRITE (AclOperation codes 5, 7-12).
pub const ALL_CLUSTER_OPERATIONS: i32 = 0b1_1111_1010_0000;

pub fn supported_versions(api: ApiKey) -> Option<VersionRange> {
    HANDLED.iter().find(|(k, _)| *k == api).map(|(_, v)| *v)
}

/// Topic name as the protocol type.
pub fn topic_name(s: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(kafka_protocol::protocol::StrBytes::from_string(
        s.to_string(),
    ))
}

pub fn str_bytes(s: &str) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(s.to_string())
}

/// The hosted partition `index` of `topic` when this broker leads it, as a
/// client request needs it; Kafka's errors otherwise: a topic or partition
/// the image does not have gets `unknown`, one led by another broker (or not
/// opened here yet) NOT_LEADER_OR_FOLLOWER, so the client refreshes its
/// metadata and goes to the leader.
pub(crate) fn led_partition(
    broker: &crate::broker::Broker,
    topic: Option<&std::sync::Arc<felice_metadata::TopicImage>>,
    index: i32,
    unknown: kafka_protocol::ResponseError,
) -> Result<std::sync::Arc<crate::replica::Partition>, kafka_protocol::ResponseError> {
    let topic = topic.ok_or(unknown)?;
    let image = usize::try_from(index)
        .ok()
        .and_then(|i| topic.partitions.get(i))
        .ok_or(unknown)?;
    if image.leader != broker.config.node_id {
        return Err(kafka_protocol::ResponseError::NotLeaderOrFollower);
    }
    broker
        .replicas
        .get(&topic.topic_id, index)
        .ok_or(kafka_protocol::ResponseError::NotLeaderOrFollower)
}
