//! DescribeProducers (key 61): the idempotent producers each partition
//! remembers (id, epoch, last sequence, last timestamp), what
//! `kafka-transactions.sh describe-producers` and the Admin client's
//! `describeProducers` show. Like Kafka, a partition answers from its own
//! producer state; an unknown topic or partition is
//! UNKNOWN_TOPIC_OR_PARTITION, a known partition this broker does not host
//! NOT_LEADER_OR_FOLLOWER. Coordinator epoch and transaction start offset are
//! -1 (no transactions yet).

use crate::broker::Broker;
use crate::replica::ReplicaError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeProducersResponse, ProducerId, RequestHeader,
};
use kafka_protocol::protocol::{Message, VersionRange};
use kafka_protocol::ResponseError;
use std::sync::Arc;

pub const VERSIONS: VersionRange = DescribeProducersRequest::VERSIONS;

pub async fn handle(
    broker: &Arc<Broker>,
    _header: &RequestHeader,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let b = broker.clone();
    // Reading producer state takes each partition's log lock.
    let topics = tokio::task::spawn_blocking(move || describe(&b, req))
        .await
        .unwrap_or_default();
    DescribeProducersResponse::default().with_topics(topics)
}

fn describe(broker: &Broker, req: DescribeProducersRequest) -> Vec<TopicResponse> {
    let image = broker.image();
    req.topics
        .into_iter()
        .map(|t| {
            let topic = image.topic(t.name.0.as_str());
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&index| {
                    let resp = PartitionResponse::default().with_partition_index(index);
                    let error = |code: ResponseError, msg: Option<String>| {
                        resp.clone()
                            .with_error_code(code.code())
                            .with_error_message(msg.as_deref().map(crate::handlers::str_bytes))
                    };
                    let Some(topic) = topic
                        .filter(|t| usize::try_from(index).is_ok_and(|i| i < t.partitions.len()))
                    else {
                        return error(ResponseError::UnknownTopicOrPartition, None);
                    };
                    let Some(partition) = broker.replicas.get(&topic.topic_id, index) else {
                        return error(ResponseError::NotLeaderOrFollower, None);
                    };
                    match partition.active_producers() {
                        Ok(producers) => resp.with_active_producers(
                            producers
                                .into_iter()
                                .map(|p| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(p.producer_id))
                                        .with_producer_epoch(i32::from(p.epoch))
                                        .with_last_sequence(p.last_sequence)
                                        .with_last_timestamp(p.last_timestamp)
                                        .with_coordinator_epoch(-1)
                                        .with_current_txn_start_offset(-1)
                                })
                                .collect(),
                        ),
                        Err(e @ (ReplicaError::Closed(_) | ReplicaError::NotLeader(_))) => {
                            error(ResponseError::NotLeaderOrFollower, Some(e.to_string()))
                        }
                        Err(e @ (ReplicaError::Log(_) | ReplicaError::Offline(_))) => {
                            error(ResponseError::KafkaStorageError, Some(e.to_string()))
                        }
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect()
}
