//! The metadata image: an immutable snapshot of every cluster fact, the result
//! of applying the metadata log in order. Handlers hold an `Arc<MetadataImage>`
//! for the length of a request and never see it change under them.
//!
//! Applying a record builds a new image that shares every untouched topic with
//! the old one (`Arc<TopicImage>`), so a change costs O(topics) pointer copies,
//! not a deep copy.

use crate::records::{MetadataRecord, NodeId, TopicId};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerImage {
    pub node_id: NodeId,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// The registered process (`None`: a registration from before broker
    /// lifecycle).
    pub incarnation_id: Option<uuid::Uuid>,
    /// Grows with each registration; heartbeats carry it.
    pub epoch: i64,
    /// A fenced broker leads nothing and is not listed to clients.
    pub fenced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionImage {
    pub partition: i32,
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    pub leader: NodeId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: TopicId,
    /// Indexed by partition number: partition `i` is at `partitions[i]`.
    pub partitions: Vec<PartitionImage>,
    /// Topic-level config overrides (Kafka's DYNAMIC_TOPIC_CONFIG).
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default)]
pub struct MetadataImage {
    /// Number of records applied: the metadata log offset this image reflects.
    pub offset: u64,
    pub brokers: BTreeMap<NodeId, BrokerImage>,
    topics_by_id: HashMap<TopicId, Arc<TopicImage>>,
    topic_ids_by_name: HashMap<String, TopicId>,
    /// The first producer id no broker was given yet: every id below it
    /// belongs to a block already handed out.
    pub next_producer_id: i64,
    /// The cluster id the quorum recorded (`None` before the first leader
    /// recorded one).
    pub cluster_id: Option<String>,
}

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicImage>> {
        self.topic_ids_by_name
            .get(name)
            .and_then(|id| self.topics_by_id.get(id))
    }

    pub fn topic_by_id(&self, id: &TopicId) -> Option<&Arc<TopicImage>> {
        self.topics_by_id.get(id)
    }

    /// Every topic, in name order (stable output for Metadata responses).
    pub fn topics(&self) -> Vec<&Arc<TopicImage>> {
        let mut all: Vec<_> = self.topics_by_id.values().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn topic_count(&self) -> usize {
        self.topics_by_id.len()
    }

    pub fn partition_count(&self) -> usize {
        self.topics_by_id.values().map(|t| t.partitions.len()).sum()
    }

    /// The brokers that may lead partitions and are listed to clients.
    pub fn unfenced_brokers(&self) -> impl Iterator<Item = &BrokerImage> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// The records that rebuild this image from an empty one (a snapshot's
    /// content): brokers, then each topic with its configs and partitions,
    /// then the producer-id high mark. `offset` is not carried: whoever
    /// loads a snapshot sets it from the snapshot's position in the log.
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let mut out = Vec::new();
        if let Some(cluster_id) = &self.cluster_id {
            out.push(MetadataRecord::ClusterId {
                cluster_id: cluster_id.clone(),
            });
        }
        for b in self.brokers.values() {
            match b.incarnation_id {
                None => out.push(MetadataRecord::RegisterBroker {
                    node_id: b.node_id,
                    host: b.host.clone(),
                    port: b.port,
                    rack: b.rack.clone(),
                }),
                Some(incarnation_id) => {
                    out.push(MetadataRecord::BrokerRegistration {
                        node_id: b.node_id,
                        incarnation_id,
                        broker_epoch: b.epoch,
                        host: b.host.clone(),
                        port: b.port,
                        rack: b.rack.clone(),
                    });
                    if !b.fenced {
                        out.push(MetadataRecord::UnfenceBroker {
                            node_id: b.node_id,
                            broker_epoch: b.epoch,
                        });
                    }
                }
            }
        }
        for t in self.topics() {
            out.push(MetadataRecord::Topic {
                name: t.name.clone(),
                topic_id: t.topic_id,
            });
            for (key, value) in &t.configs {
                out.push(MetadataRecord::TopicConfig {
                    topic_id: t.topic_id,
                    key: key.clone(),
                    value: Some(value.clone()),
                });
            }
            for p in &t.partitions {
                out.push(MetadataRecord::Partition {
                    topic_id: t.topic_id,
                    partition: p.partition,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                });
            }
        }
        if self.next_producer_id > 0 {
            out.push(MetadataRecord::ProducerIds {
                broker_id: -1,
                broker_epoch: -1,
                next_producer_id: self.next_producer_id,
            });
        }
        out
    }

    /// Applies one record, producing the next image. Records that refer to an
    /// unknown topic are ignored (they cannot be produced by the controller,
    /// which validates against the current image; ignoring keeps replay total).
    pub fn apply(&self, record: &MetadataRecord) -> MetadataImage {
        let mut next = self.clone();
        next.apply_mut(record);
        next
    }

    /// Applies one record in place. Applying many records to one clone costs
    /// one copy of each touched topic in all, where `apply` per record would
    /// copy a topic's partition list once per record (quadratic when a topic
    /// with 10,000 partitions is created).
    pub fn apply_mut(&mut self, record: &MetadataRecord) {
        let next = self;
        next.offset += 1;
        match record {
            MetadataRecord::ProducerIds {
                next_producer_id, ..
            } => {
                // Never moves back: an id is handed out at most once.
                next.next_producer_id = next.next_producer_id.max(*next_producer_id);
            }
            MetadataRecord::ClusterId { cluster_id } => {
                // Recorded once; a later one cannot change it.
                if next.cluster_id.is_none() {
                    next.cluster_id = Some(cluster_id.clone());
                }
            }
            MetadataRecord::RegisterBroker {
                node_id,
                host,
                port,
                rack,
            } => {
                next.brokers.insert(
                    *node_id,
                    BrokerImage {
                        node_id: *node_id,
                        host: host.clone(),
                        port: *port,
                        rack: rack.clone(),
                        incarnation_id: None,
                        epoch: 0,
                        fenced: false,
                    },
                );
            }
            MetadataRecord::BrokerRegistration {
                node_id,
                incarnation_id,
                broker_epoch,
                host,
                port,
                rack,
            } => {
                // The same incarnation re-registering keeps its fencing.
                let fenced = next
                    .brokers
                    .get(node_id)
                    .filter(|b| b.incarnation_id == Some(*incarnation_id))
                    .is_none_or(|b| b.fenced);
                next.brokers.insert(
                    *node_id,
                    BrokerImage {
                        node_id: *node_id,
                        host: host.clone(),
                        port: *port,
                        rack: rack.clone(),
                        incarnation_id: Some(*incarnation_id),
                        epoch: *broker_epoch,
                        fenced,
                    },
                );
            }
            MetadataRecord::FenceBroker {
                node_id,
                broker_epoch,
            } => {
                if let Some(b) = next.brokers.get_mut(node_id) {
                    if b.epoch == *broker_epoch {
                        b.fenced = true;
                    }
                }
            }
            MetadataRecord::UnfenceBroker {
                node_id,
                broker_epoch,
            } => {
                if let Some(b) = next.brokers.get_mut(node_id) {
                    if b.epoch == *broker_epoch {
                        b.fenced = false;
                    }
                }
            }
            MetadataRecord::Topic { name, topic_id } => {
                if let Some(old) = next.topic_ids_by_name.insert(name.clone(), *topic_id) {
                    next.topics_by_id.remove(&old);
                }
                next.topics_by_id.insert(
                    *topic_id,
                    Arc::new(TopicImage {
                        name: name.clone(),
                        topic_id: *topic_id,
                        partitions: Vec::new(),
                        configs: BTreeMap::new(),
                    }),
                );
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
            } => {
                if let Some(topic) = next.topics_by_id.get_mut(topic_id) {
                    let topic = Arc::make_mut(topic);
                    let p = PartitionImage {
                        partition: *partition,
                        replicas: replicas.clone(),
                        isr: isr.clone(),
                        leader: *leader,
                        leader_epoch: *leader_epoch,
                        partition_epoch: *partition_epoch,
                    };
                    let index = *partition as usize;
                    if index < topic.partitions.len() {
                        topic.partitions[index] = p;
                    } else if index == topic.partitions.len() {
                        topic.partitions.push(p);
                    }
                    // A gap would break "partition i at index i"; the controller
                    // never writes one, so it is dropped rather than applied.
                }
            }
            MetadataRecord::TopicConfig {
                topic_id,
                key,
                value,
            } => {
                if let Some(topic) = next.topics_by_id.get_mut(topic_id) {
                    let topic = Arc::make_mut(topic);
                    match value {
                        Some(v) => topic.configs.insert(key.clone(), v.clone()),
                        None => topic.configs.remove(key),
                    };
                }
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                if let Some(topic) = next.topics_by_id.remove(topic_id) {
                    next.topic_ids_by_name.remove(&topic.name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn partition(topic_id: TopicId, partition: i32) -> MetadataRecord {
        MetadataRecord::Partition {
            topic_id,
            partition,
            replicas: vec![1],
            isr: vec![1],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
        }
    }

    #[test]
    fn topics_partitions_configs_and_removal() {
        let id = Uuid::new_v4();
        let mut image = MetadataImage::default();
        for r in [
            MetadataRecord::Topic {
                name: "a".into(),
                topic_id: id,
            },
            partition(id, 0),
            partition(id, 1),
            partition(id, 3), // gap: ignored
            MetadataRecord::TopicConfig {
                topic_id: id,
                key: "retention.ms".into(),
                value: Some("5".into()),
            },
        ] {
            image = image.apply(&r);
        }
        let t = image.topic("a").expect("topic");
        assert_eq!(t.partitions.len(), 2);
        assert_eq!(t.configs.get("retention.ms").map(String::as_str), Some("5"));
        assert_eq!(image.offset, 5);
        let before = image.clone();
        image = image.apply(&MetadataRecord::RemoveTopic { topic_id: id });
        assert!(image.topic("a").is_none());
        assert!(image.topic_by_id(&id).is_none());
        // the older snapshot is untouched
        assert!(before.topic("a").is_some());
    }

    #[test]
    fn an_image_rebuilt_from_its_records_is_the_same() {
        let id = Uuid::new_v4();
        let mut image = MetadataImage::default();
        for r in [
            MetadataRecord::RegisterBroker {
                node_id: 3,
                host: "h".into(),
                port: 9,
                rack: Some("r".into()),
            },
            MetadataRecord::Topic {
                name: "a".into(),
                topic_id: id,
            },
            partition(id, 0),
            partition(id, 1),
            MetadataRecord::TopicConfig {
                topic_id: id,
                key: "retention.ms".into(),
                value: Some("5".into()),
            },
            MetadataRecord::ProducerIds {
                broker_id: 3,
                broker_epoch: 1,
                next_producer_id: 2000,
            },
            MetadataRecord::ClusterId {
                cluster_id: "c".into(),
            },
        ] {
            image.apply_mut(&r);
        }
        let records = image.to_records();
        let mut rebuilt = MetadataImage::default();
        for r in &records {
            rebuilt.apply_mut(r);
        }
        assert_eq!(rebuilt.to_records(), records);
        assert_eq!(rebuilt.brokers, image.brokers);
        assert_eq!(rebuilt.topic("a"), image.topic("a"));
        assert_eq!(rebuilt.next_producer_id, 2000);
    }
}
