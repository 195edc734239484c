//! Metadata (key 3): brokers, cluster id, controller, and topics with their
//! partitions, leaders, replicas and ISR, read from one metadata image so the
//! answer is consistent. Topics missing from the image are auto-created when
//! `auto.create.topics.enable` and the request's `allow_auto_topic_creation`
//! (v4+; implied before) both say so, with `num.partitions` partitions and
//! `default.replication.factor` replicas.

use crate::broker::Broker;
use crate::controller;
use crate::handlers::{str_bytes, topic_name};
use felice_metadata::{MetadataImage, TopicImage};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, RequestHeader};
use kafka_protocol::protocol::{Message, VersionRange};
use kafka_protocol::ResponseError;
use std::sync::Arc;

pub const VERSIONS: VersionRange = MetadataRequest::VERSIONS;

use crate::handlers::{ALL_CLUSTER_OPERATIONS, OPERATIONS_NOT_REQUESTED};

/// With no authorizer every operation is allowed: READ, WRITE, CREATE,
/// DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS (bits 3-8, 10, 11).
const ALL_TOPIC_OPERATIONS: i32 = 0b1101_1111_1000;

pub fn is_internal(name: &str) -> bool {
    name == "__consumer_offsets" || name == "__transaction_state"
}

pub async fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    req: MetadataRequest,
) -> MetadataResponse {
    let version = header.request_api_version;
    let mut image = broker.image();
    // v0: an empty list means all topics; v1+: null means all topics.
    let requested: Option<Vec<_>> = match req.topics {
        Some(t) if version == 0 && t.is_empty() => None,
        other => other,
    };
    let allow_auto_create =
        (version < 4 || req.allow_auto_topic_creation) && broker.config.auto_create_topics_enable;

    // Auto-create the missing, validly named topics in one metadata commit.
    if allow_auto_create {
        if let Some(topics) = &requested {
            let missing: Vec<String> = topics
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
                .filter(|n| {
                    image.topic(n).is_none()
                        && controller::validate_topic_name(n).is_ok()
                        && !is_internal(n)
                })
                .collect();
            if !missing.is_empty() {
                image = auto_create(broker, missing).await.unwrap_or(image);
            }
        }
    }

    let include_ops = req.include_topic_authorized_operations;
    let topics = match requested {
        None => image
            .topics()
            .into_iter()
            .map(|t| topic_response(&image, t, include_ops))
            .collect(),
        Some(list) => list
            .into_iter()
            .map(|t| match (&t.name, t.topic_id) {
                // A topic id wins (the Java client sends an empty name
                // beside it), as in Kafka.
                (Some(name), id) if id.is_nil() => match image.topic(name.0.as_str()) {
                    Some(topic) => topic_response(&image, topic, include_ops),
                    None => {
                        let code = match controller::validate_topic_name(name.0.as_str()) {
                            Err(e) => e.code,
                            Ok(()) => ResponseError::UnknownTopicOrPartition,
                        };
                        MetadataResponseTopic::default()
                            .with_name(Some(name.clone()))
                            .with_error_code(code.code())
                            .with_topic_authorized_operations(OPERATIONS_NOT_REQUESTED)
                    }
                },
                (_, id) => match image.topic_by_id(&id) {
                    Some(topic) => topic_response(&image, topic, include_ops),
                    None => MetadataResponseTopic::default()
                        .with_name(None)
                        .with_topic_id(id)
                        .with_error_code(ResponseError::UnknownTopicId.code())
                        .with_topic_authorized_operations(OPERATIONS_NOT_REQUESTED),
                },
            })
            .collect(),
    };
    MetadataResponse::default()
        .with_brokers(brokers(&image))
        .with_cluster_id(Some(str_bytes(&broker.cluster_id)))
        .with_controller_id(BrokerId(broker.config.node_id))
        .with_topics(topics)
        .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
            ALL_CLUSTER_OPERATIONS
        } else {
            OPERATIONS_NOT_REQUESTED
        })
}

/// The unfenced brokers: as KRaft, a fenced broker is not listed.
pub fn brokers(image: &MetadataImage) -> Vec<MetadataResponseBroker> {
    image
        .unfenced_brokers()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.node_id))
                .with_host(str_bytes(&b.host))
                .with_port(b.port)
                .with_rack(b.rack.as_deref().map(str_bytes))
        })
        .collect()
}

fn topic_response(
    image: &MetadataImage,
    t: &TopicImage,
    include_ops: bool,
) -> MetadataResponseTopic {
    let partitions = t
        .partitions
        .iter()
        .map(|p| {
            let offline: Vec<BrokerId> = p
                .replicas
                .iter()
                .filter(|r| image.brokers.get(r).is_none_or(|b| b.fenced))
                .map(|r| BrokerId(*r))
                .collect();
            // No leader (its broker is fenced): LEADER_NOT_AVAILABLE, as KRaft.
            let code = if p.leader < 0 {
                ResponseError::LeaderNotAvailable.code()
            } else {
                0
            };
            MetadataResponsePartition::default()
                .with_error_code(code)
                .with_partition_index(p.partition)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(p.replicas.iter().map(|r| BrokerId(*r)).collect())
                .with_isr_nodes(p.isr.iter().map(|r| BrokerId(*r)).collect())
                .with_offline_replicas(offline)
        })
        .collect();
    MetadataResponseTopic::default()
        .with_error_code(0)
        .with_name(Some(topic_name(&t.name)))
        .with_topic_id(t.topic_id)
        .with_is_internal(is_internal(&t.name))
        .with_partitions(partitions)
        .with_topic_authorized_operations(if include_ops {
            ALL_TOPIC_OPERATIONS
        } else {
            OPERATIONS_NOT_REQUESTED
        })
}

/// Creates `names` with the broker defaults (a CreateTopics to the active
/// controller, as a KRaft broker does); returns an applied image that has
/// the created topics. Topics that another request created meanwhile are
/// simply skipped.
async fn auto_create(broker: &Arc<Broker>, names: Vec<String>) -> Option<Arc<MetadataImage>> {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::CreateTopicsRequest;
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(0)
        .with_topics(
            names
                .iter()
                .map(|n| {
                    CreatableTopic::default()
                        .with_name(topic_name(n))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                })
                .collect(),
        );
    let resp = match broker.controller.call(req, 7).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::warn!(error = %e, "auto-creating topics failed");
            return None;
        }
    };
    let created: Vec<uuid::Uuid> = resp
        .topics
        .iter()
        .filter(|t| t.error_code == 0)
        .map(|t| t.topic_id)
        .collect();
    for t in resp.topics.iter().filter(|t| t.error_code != 0) {
        tracing::debug!(topic = %t.name.0.as_str(), code = t.error_code, "not auto-creating topic");
    }
    match broker
        .applied_until(
            |image| created.iter().all(|id| image.topic_by_id(id).is_some()),
            crate::limits::MAX_METADATA_APPLY_WAIT,
        )
        .await
    {
        Ok(image) => Some(image),
        Err(e) => {
            tracing::warn!(error = %e, "auto-created topics not applied");
            None
        }
    }
}
