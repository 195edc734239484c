//! The metadata record types: one variant per kind of cluster fact.

use uuid::Uuid;

/// A broker's node id (`node.id`).
pub type NodeId = i32;
/// A topic's id (Kafka 2.8+ topic ids, KIP-516).
pub type TopicId = Uuid;

/// One change to the cluster's metadata. Records are applied in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataRecord {
    /// A broker registered (or re-registered with new endpoints): the
    /// record of the releases before broker lifecycle; such a broker is
    /// unfenced, with epoch 0.
    RegisterBroker {
        node_id: NodeId,
        host: String,
        port: i32,
        rack: Option<String>,
    },
    /// A broker process registered (KRaft's RegisterBrokerRecord): a new
    /// incarnation starts fenced, with a new epoch, until its heartbeats
    /// show it caught up with the metadata log.
    BrokerRegistration {
        node_id: NodeId,
        incarnation_id: uuid::Uuid,
        broker_epoch: i64,
        host: String,
        port: i32,
        rack: Option<String>,
    },
    /// The controller fenced a broker (missed heartbeats, or it asked to be).
    FenceBroker { node_id: NodeId, broker_epoch: i64 },
    /// The controller unfenced a broker (caught up, heartbeating).
    UnfenceBroker { node_id: NodeId, broker_epoch: i64 },
    /// A topic was created; its partitions follow as `Partition` records.
    Topic { name: String, topic_id: TopicId },
    /// A partition's full state (creation or change of leader/ISR).
    Partition {
        topic_id: TopicId,
        partition: i32,
        replicas: Vec<NodeId>,
        isr: Vec<NodeId>,
        leader: NodeId,
        leader_epoch: i32,
        partition_epoch: i32,
    },
    /// A topic config override was set (`Some`) or removed (`None`).
    TopicConfig {
        topic_id: TopicId,
        key: String,
        value: Option<String>,
    },
    /// A topic and all its partitions were deleted.
    RemoveTopic { topic_id: TopicId },
    /// The cluster's id, recorded once by the first leader of the quorum;
    /// every node adopts it (its `meta.properties`), so all nodes of a
    /// cluster report the same id.
    ClusterId { cluster_id: String },
    /// A block of producer ids was handed to a broker: ids below
    /// `next_producer_id` are taken, never handed out again (KRaft's
    /// `ProducerIdsRecord`, written for AllocateProducerIds).
    ProducerIds {
        broker_id: NodeId,
        broker_epoch: i64,
        next_producer_id: i64,
    },
}
