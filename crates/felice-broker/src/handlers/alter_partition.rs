//! AlterPartition (API 56, v2–3, as Kafka 4): a partition's leader asks the
//! active controller to change its ISR (shrink a follower that fell behind,
//! expand one that caught up). Served on the controller listener only, as
//! KRaft's controller does; brokers send it through the controller channel.
//!
//! Checks, in the order of Kafka's `ReplicationControlManager`:
//! - the sender's broker epoch is the registered one (STALE_BROKER_EPOCH,
//!   for the whole request);
//! - per partition: the topic id and partition exist (UNKNOWN_TOPIC_ID,
//!   UNKNOWN_TOPIC_OR_PARTITION); epochs newer than the image's mean this
//!   node is a stale controller (NOT_CONTROLLER); an older leader epoch is
//!   FENCED_LEADER_EPOCH; a sender that does not lead is INVALID_REQUEST; an
//!   older partition epoch is INVALID_UPDATE_VERSION; the new ISR must be
//!   replicas without duplicates and hold the leader (INVALID_REQUEST); each
//!   member added must be registered, unfenced and, in v3, of the broker
//!   epoch given (INELIGIBLE_REPLICA, KIP-903).
//!
//! A valid change commits one `Partition` record: the new ISR, the same
//! leader and leader epoch (an ISR change must not fence the followers'
//! fetches, KAFKA-15021), partition epoch + 1. The answer carries the
//! partition's state after it.

use crate::controller::{commit_error, ControllerContext};
use felice_metadata::{MetadataImage, MetadataRecord, NodeId};
use kafka_protocol::messages::alter_partition_response::{PartitionData, TopicData};
use kafka_protocol::messages::{AlterPartitionRequest, AlterPartitionResponse, BrokerId};
use kafka_protocol::protocol::Message;
use kafka_protocol::ResponseError;

pub const VERSIONS: kafka_protocol::protocol::VersionRange = AlterPartitionRequest::VERSIONS;

/// First version whose new ISR carries broker epochs (KIP-903).
const FIRST_ISR_WITH_EPOCHS_VERSION: i16 = 3;

/// One partition of the request, as asked.
struct Asked {
    topic: usize,
    partition: i32,
    leader_epoch: i32,
    partition_epoch: i32,
    /// (broker, broker epoch or -1 when not given).
    new_isr: Vec<(NodeId, i64)>,
    leader_recovery_state: i8,
}

pub async fn on_controller(
    ctx: &ControllerContext,
    req: AlterPartitionRequest,
    version: i16,
) -> AlterPartitionResponse {
    let sender = req.broker_id.0;
    let sender_epoch = req.broker_epoch;
    let asked: Vec<Asked> = req
        .topics
        .iter()
        .enumerate()
        .flat_map(|(ti, t)| {
            t.partitions.iter().map(move |p| Asked {
                topic: ti,
                partition: p.partition_index,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                new_isr: if version >= FIRST_ISR_WITH_EPOCHS_VERSION {
                    p.new_isr_with_epochs
                        .iter()
                        .map(|b| (b.broker_id.0, b.broker_epoch))
                        .collect()
                } else {
                    p.new_isr.iter().map(|b| (b.0, -1)).collect()
                },
                leader_recovery_state: p.leader_recovery_state,
            })
        })
        .collect();
    let topic_ids: Vec<felice_metadata::TopicId> = req.topics.iter().map(|t| t.topic_id).collect();
    let mut outcomes: Vec<Result<(), ResponseError>> = Vec::new();
    let committed = ctx
        .quorum
        .commit(|image| {
            let registered = image
                .brokers
                .get(&sender)
                .is_some_and(|b| b.epoch == sender_epoch);
            if !registered {
                return Err(ResponseError::StaleBrokerEpoch);
            }
            // Each change is checked against the image with the changes
            // before it, so a partition named twice gets INVALID_UPDATE_VERSION.
            let mut after = image.clone();
            let mut records = Vec::new();
            for a in &asked {
                let r = change(&after, sender, &topic_ids[a.topic], a);
                match r {
                    Ok(Some(record)) => {
                        after.apply_mut(&record);
                        records.push(record);
                        outcomes.push(Ok(()));
                    }
                    Ok(None) => outcomes.push(Ok(())),
                    Err(code) => outcomes.push(Err(code)),
                }
            }
            Ok(records)
        })
        .await;
    let image = match committed {
        Ok(image) => image,
        Err(felice_metadata::CommitError::Rejected(code)) => {
            return AlterPartitionResponse::default().with_error_code(code.code());
        }
        Err(e) => {
            return AlterPartitionResponse::default().with_error_code(commit_error(&e).code());
        }
    };
    let mut topics: Vec<TopicData> = topic_ids
        .iter()
        .map(|id| TopicData::default().with_topic_id(*id))
        .collect();
    for (a, outcome) in asked.iter().zip(outcomes) {
        let mut p = PartitionData::default().with_partition_index(a.partition);
        match outcome {
            Ok(()) => {
                let now = image
                    .topic_by_id(&topic_ids[a.topic])
                    .and_then(|t| t.partitions.get(a.partition as usize));
                if let Some(now) = now {
                    p = p
                        .with_leader_id(BrokerId(now.leader))
                        .with_leader_epoch(now.leader_epoch)
                        .with_isr(now.isr.iter().map(|b| BrokerId(*b)).collect())
                        .with_partition_epoch(now.partition_epoch);
                } else {
                    // Deleted between the commit and this answer.
                    p = p.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                }
            }
            Err(code) => p = p.with_error_code(code.code()),
        }
        if let Some(t) = topics.get_mut(a.topic) {
            t.partitions.push(p);
        }
    }
    AlterPartitionResponse::default()
        .with_error_code(0)
        .with_topics(topics)
}

/// The record one asked change makes (`None`: the ISR is already that),
/// or the partition's error.
fn change(
    image: &MetadataImage,
    sender: NodeId,
    topic_id: &felice_metadata::TopicId,
    a: &Asked,
) -> Result<Option<MetadataRecord>, ResponseError> {
    let topic = image
        .topic_by_id(topic_id)
        .ok_or(ResponseError::UnknownTopicId)?;
    let p = usize::try_from(a.partition)
        .ok()
        .and_then(|i| topic.partitions.get(i))
        .ok_or(ResponseError::UnknownTopicOrPartition)?;
    if a.leader_epoch > p.leader_epoch || a.partition_epoch > p.partition_epoch {
        return Err(ResponseError::NotController);
    }
    if a.leader_epoch < p.leader_epoch {
        return Err(ResponseError::FencedLeaderEpoch);
    }
    if p.leader != sender {
        return Err(ResponseError::InvalidRequest);
    }
    if a.partition_epoch < p.partition_epoch {
        return Err(ResponseError::InvalidUpdateVersion);
    }
    let new_isr: Vec<NodeId> = a.new_isr.iter().map(|(b, _)| *b).collect();
    let distinct = new_isr
        .iter()
        .enumerate()
        .all(|(i, b)| !new_isr[..i].contains(b));
    let replicas_only = new_isr.iter().all(|b| p.replicas.contains(b));
    if !distinct || !replicas_only || !new_isr.contains(&p.leader) {
        return Err(ResponseError::InvalidRequest);
    }
    // Felice has no leader recovery (KIP-704): only RECOVERED (0) is valid.
    if a.leader_recovery_state != 0 {
        return Err(ResponseError::InvalidRequest);
    }
    let eligible = |(b, epoch): &(NodeId, i64)| {
        image
            .brokers
            .get(b)
            .is_some_and(|r| !r.fenced && (*epoch == -1 || *epoch == r.epoch))
    };
    if !a.new_isr.iter().all(eligible) {
        return Err(ResponseError::IneligibleReplica);
    }
    if new_isr == p.isr {
        return Ok(None);
    }
    Ok(Some(MetadataRecord::Partition {
        topic_id: topic.topic_id,
        partition: p.partition,
        replicas: p.replicas.clone(),
        isr: new_isr,
        leader: p.leader,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch + 1,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use felice_metadata::{MetadataQuorum, QuorumConfig};
    use kafka_protocol::messages::alter_partition_request::{
        BrokerState, PartitionData as AskedPartition, TopicData as AskedTopic,
    };
    use std::sync::Arc;

    const T: uuid::Uuid = uuid::Uuid::from_u128(7);

    /// Brokers 1–3 registered (epochs 11, 12, 13; 3 fenced), topic "t" with
    /// one partition on [1, 2, 3], leader 1, ISR [1, 2], epochs 5 / 9.
    async fn controller(dir: &std::path::Path) -> ControllerContext {
        let quorum = MetadataQuorum::open(dir, QuorumConfig::single(1), None)
            .await
            .expect("open");
        let config = crate::config::BrokerConfig::for_test(dir);
        let ctx = ControllerContext::new(Arc::new(quorum), config, crate::clock::system());
        ctx.quorum
            .commit::<std::convert::Infallible>(|_| {
                let mut records = Vec::new();
                for id in 1..=3 {
                    records.push(MetadataRecord::BrokerRegistration {
                        node_id: id,
                        incarnation_id: uuid::Uuid::from_u128(id as u128),
                        broker_epoch: 10 + i64::from(id),
                        host: "127.0.0.1".into(),
                        port: 9000 + id,
                        rack: None,
                    });
                    if id != 3 {
                        records.push(MetadataRecord::UnfenceBroker {
                            node_id: id,
                            broker_epoch: 10 + i64::from(id),
                        });
                    }
                }
                records.push(MetadataRecord::Topic {
                    name: "t".into(),
                    topic_id: T,
                });
                records.push(MetadataRecord::Partition {
                    topic_id: T,
                    partition: 0,
                    replicas: vec![1, 2, 3],
                    isr: vec![1, 2],
                    leader: 1,
                    leader_epoch: 5,
                    partition_epoch: 9,
                });
                Ok(records)
            })
            .await
            .expect("setup");
        ctx
    }

    fn ask(
        sender: i32,
        sender_epoch: i64,
        epochs: (i32, i32),
        isr: &[(i32, i64)],
    ) -> AlterPartitionRequest {
        AlterPartitionRequest::default()
            .with_broker_id(BrokerId(sender))
            .with_broker_epoch(sender_epoch)
            .with_topics(vec![AskedTopic::default()
                .with_topic_id(T)
                .with_partitions(vec![AskedPartition::default()
                    .with_partition_index(0)
                    .with_leader_epoch(epochs.0)
                    .with_partition_epoch(epochs.1)
                    .with_new_isr_with_epochs(
                        isr.iter()
                            .map(|(b, e)| {
                                BrokerState::default()
                                    .with_broker_id(BrokerId(*b))
                                    .with_broker_epoch(*e)
                            })
                            .collect(),
                    )])])
    }

    fn code(r: &AlterPartitionResponse) -> i16 {
        r.topics[0].partitions[0].error_code
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_shrinks_and_expands_its_isr_with_partition_epochs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = controller(dir.path()).await;
        // Shrink to the leader alone.
        let r = on_controller(&ctx, ask(1, 11, (5, 9), &[(1, 11)]), 3).await;
        assert_eq!((r.error_code, code(&r)), (0, 0));
        let p = &r.topics[0].partitions[0];
        assert_eq!(p.isr, vec![BrokerId(1)]);
        assert_eq!(
            (p.leader_id.0, p.leader_epoch, p.partition_epoch),
            (1, 5, 10)
        );
        let image = ctx.quorum.image();
        let now = &image.topic("t").expect("t").partitions[0];
        assert_eq!((now.isr.clone(), now.leader_epoch), (vec![1], 5));
        // The same change again, from the old partition epoch: refused.
        let r = on_controller(&ctx, ask(1, 11, (5, 9), &[(1, 11)]), 3).await;
        assert_eq!(code(&r), ResponseError::InvalidUpdateVersion.code());
        // Expand back, v2 (no broker epochs).
        let mut v2 = ask(1, 11, (5, 10), &[]);
        v2.topics[0].partitions[0].new_isr = vec![BrokerId(1), BrokerId(2)];
        let r = on_controller(&ctx, v2, 2).await;
        assert_eq!(code(&r), 0);
        assert_eq!(r.topics[0].partitions[0].partition_epoch, 11);
        ctx.quorum.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refusals_follow_kafkas_checks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = controller(dir.path()).await;
        let cases: Vec<(AlterPartitionRequest, ResponseError, &str)> = vec![
            (
                ask(1, 11, (4, 9), &[(1, 11)]),
                ResponseError::FencedLeaderEpoch,
                "old leader epoch",
            ),
            (
                ask(1, 11, (6, 9), &[(1, 11)]),
                ResponseError::NotController,
                "newer leader epoch",
            ),
            (
                ask(2, 12, (5, 9), &[(2, 12)]),
                ResponseError::InvalidRequest,
                "not the leader",
            ),
            (
                ask(1, 11, (5, 9), &[(2, 12)]),
                ResponseError::InvalidRequest,
                "ISR without the leader",
            ),
            (
                ask(1, 11, (5, 9), &[(1, 11), (1, 11)]),
                ResponseError::InvalidRequest,
                "duplicate member",
            ),
            (
                ask(1, 11, (5, 9), &[(1, 11), (4, 1)]),
                ResponseError::InvalidRequest,
                "not a replica",
            ),
            (
                ask(1, 11, (5, 9), &[(1, 11), (2, 12), (3, 13)]),
                ResponseError::IneligibleReplica,
                "fenced member",
            ),
            (
                ask(1, 11, (5, 9), &[(1, 11), (2, 99)]),
                ResponseError::IneligibleReplica,
                "wrong broker epoch",
            ),
        ];
        for (req, want, why) in cases {
            let r = on_controller(&ctx, req, 3).await;
            assert_eq!(code(&r), want.code(), "{why}");
        }
        let r = on_controller(&ctx, ask(1, 10, (5, 9), &[(1, 11)]), 3).await;
        assert_eq!(
            r.error_code,
            ResponseError::StaleBrokerEpoch.code(),
            "stale sender epoch"
        );
        let mut unknown = ask(1, 11, (5, 9), &[(1, 11)]);
        unknown.topics[0].topic_id = uuid::Uuid::from_u128(8);
        let r = on_controller(&ctx, unknown, 3).await;
        assert_eq!(code(&r), ResponseError::UnknownTopicId.code());
        // Nothing changed.
        let image = ctx.quorum.image();
        let p = &image.topic("t").expect("t").partitions[0];
        assert_eq!((p.isr.clone(), p.partition_epoch), (vec![1, 2], 9));
        ctx.quorum.shutdown().await;
    }
}
