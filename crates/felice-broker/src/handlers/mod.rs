//! One module per Kafka API. Each declares the versions it handles; the
//! table below, built from those declarations, is what ApiVersions advertises
//! and what dispatch accepts, so an API without a handler is never advertised.

pub mod api_versions;
pub mod create_topics;
pub mod delete_topics;
pub mod describe_cluster;
pub mod fetch;
pub mod list_offsets;
pub mod metadata;
pub mod produce;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;

/// Every handled API with the versions handled: the full range the
/// `kafka-protocol` crate supports for it.
pub const HANDLED: &[(ApiKey, VersionRange)] = &[
    (ApiKey::Produce, produce::VERSIONS),
    (ApiKey::Fetch, fetch::VERSIONS),
    (ApiKey::ListOffsets, list_offsets::VERSIONS),
    (ApiKey::Metadata, metadata::VERSIONS),
    (ApiKey::ApiVersions, api_versions::VERSIONS),
    (ApiKey::CreateTopics, create_topics::VERSIONS),
    (ApiKey::DeleteTopics, delete_topics::VERSIONS),
    (ApiKey::DescribeCluster, describe_cluster::VERSIONS),
];

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
