//! DescribeQuorum (key 55): the metadata quorum (`__cluster_metadata`,
//! partition 0) as its leader sees it: leader, epoch (the Raft term), high
//! watermark, and each voter's log end offset, what
//! `kafka-metadata-quorum.sh describe` and the Java Admin's
//! `describeMetadataQuorum` show. Only the active controller answers, as in
//! KRaft; a broker forwards the request to it. Offsets are Kafka's
//! (exclusive): a Raft index `i` is offset `i + 1`. The observers are the
//! brokers that fetch the log (nodes that are only brokers), with their
//! last fetch and last caught-up times; a voter's last fetch is its last
//! successful AppendEntries from this leader, and it was last caught up
//! then if its log ends where the leader's does (else -1, unknown).

use crate::broker::Broker;
use crate::controller::ControllerContext;
use crate::handlers::str_bytes;
use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{
    BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Message, StrBytes, VersionRange};
use kafka_protocol::ResponseError;
use std::sync::Arc;

pub const VERSIONS: VersionRange = DescribeQuorumRequest::VERSIONS;

/// Kafka's name of the metadata log's topic.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

pub async fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    req: DescribeQuorumRequest,
) -> DescribeQuorumResponse {
    match broker
        .controller
        .call(req, header.request_api_version)
        .await
    {
        Ok(resp) => resp,
        Err(e) => DescribeQuorumResponse::default()
            .with_error_code(ResponseError::RequestTimedOut.code())
            .with_error_message(Some(str_bytes(&e.to_string()))),
    }
}

/// The active controller's answer.
pub async fn on_controller(
    ctx: &ControllerContext,
    req: DescribeQuorumRequest,
    version: i16,
) -> DescribeQuorumResponse {
    let metrics = ctx.quorum.raft().metrics().borrow().clone();
    let me = ctx.config.node_id;
    let leads = metrics.current_leader == Some(me as u64);
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let base = PartitionData::default().with_partition_index(p.partition_index);
                    if t.topic_name.0.as_str() != METADATA_TOPIC || p.partition_index != 0 {
                        return base
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_leader_id(BrokerId(-1))
                            .with_leader_epoch(-1)
                            .with_high_watermark(-1);
                    }
                    if !leads {
                        return base
                            .with_error_code(ResponseError::NotLeaderOrFollower.code())
                            .with_leader_id(BrokerId(
                                metrics.current_leader.map_or(-1, |l| l as i32),
                            ))
                            .with_leader_epoch(metrics.current_term as i32)
                            .with_high_watermark(-1);
                    }
                    let now = ctx.clock.now_ms();
                    let membership = metrics.membership_config.membership();
                    let offset_of = |id: u64| -> i64 {
                        if id == me as u64 {
                            return metrics.last_log_index.map_or(0, |i| i as i64 + 1);
                        }
                        metrics
                            .replication
                            .as_ref()
                            .and_then(|r| r.get(&id))
                            .map_or(-1, |matched| matched.map_or(0, |l| l.index as i64 + 1))
                    };
                    let end = offset_of(me as u64);
                    let replica = |id: u64| {
                        let own = id == me as u64;
                        let state = ReplicaState::default()
                            .with_replica_id(BrokerId(id as i32))
                            .with_log_end_offset(offset_of(id));
                        if version >= 1 {
                            // A voter's last successful AppendEntries stands
                            // for Kafka's last fetch; it was caught up then
                            // if it is now (else unknown, -1).
                            let contact = if own {
                                now
                            } else {
                                ctx.quorum.last_contact_ms(id).unwrap_or(-1)
                            };
                            let caught_up = if offset_of(id) == end { contact } else { -1 };
                            state
                                .with_last_fetch_timestamp(contact)
                                .with_last_caught_up_timestamp(caught_up)
                        } else {
                            state
                        }
                    };
                    let voters: Vec<ReplicaState> = membership.voter_ids().map(replica).collect();
                    let observers: Vec<ReplicaState> = ctx
                        .observers
                        .current(now)
                        .into_iter()
                        .map(|(id, o)| {
                            let state = ReplicaState::default()
                                .with_replica_id(BrokerId(id))
                                .with_log_end_offset(o.log_end_offset);
                            if version >= 1 {
                                state
                                    .with_last_fetch_timestamp(o.last_fetch_ms)
                                    .with_last_caught_up_timestamp(o.last_caught_up_ms)
                            } else {
                                state
                            }
                        })
                        .collect();
                    base.with_error_code(0)
                        .with_leader_id(BrokerId(me))
                        .with_leader_epoch(metrics.current_term as i32)
                        .with_high_watermark(metrics.last_applied.map_or(0, |l| l.index as i64 + 1))
                        .with_current_voters(voters)
                        .with_observers(observers)
                })
                .collect();
            TopicData::default()
                .with_topic_name(TopicName(t.topic_name.0.clone()))
                .with_partitions(partitions)
        })
        .collect();
    if version < 2 {
        return DescribeQuorumResponse::default()
            .with_error_code(0)
            .with_topics(topics);
    }
    let nodes = ctx
        .config
        .quorum_voters
        .iter()
        .map(|(id, (host, port))| {
            Node::default()
                .with_node_id(BrokerId(*id))
                .with_listeners(vec![Listener::default()
                    .with_name(StrBytes::from(
                        ctx.config
                            .controller_listener
                            .as_ref()
                            .map_or("CONTROLLER".to_string(), |l| l.name.clone()),
                    ))
                    .with_host(StrBytes::from(host.clone()))
                    .with_port(*port)])
        })
        .collect();
    DescribeQuorumResponse::default()
        .with_error_code(0)
        .with_topics(topics)
        .with_nodes(nodes)
}
