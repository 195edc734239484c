//! Typed helpers for the APIs the CLI and the bench use: Metadata, CreateTopics, Produce,
//! Fetch and ListOffsets. Each builds a `kafka-protocol` request at the negotiated
//! version, sends it on a [`Connection`], and turns error codes into
//! [`ClientError::Kafka`]. Per-partition errors stay per partition where a request
//! covers several partitions (fetch, list offsets).
//!
//! Topics are addressed by [`TopicRef`] (name and id) because Produce v13 and Fetch
//! v13+ name topics by id while older versions use the name; both are filled in and the
//! encoder writes whichever the version has.

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchTopic, ReplicaState};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, FetchRequest, InitProducerIdRequest, ListOffsetsRequest,
    MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::conn::{Connection, ResponseFuture};
use crate::{kafka_error, ClientError};

/// ListOffsets timestamp asking for the log end offset.
pub const LATEST_TIMESTAMP: i64 = -1;
/// ListOffsets timestamp asking for the log start offset.
pub const EARLIEST_TIMESTAMP: i64 = -2;

/// A topic as Produce and Fetch address it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRef {
    /// The topic name.
    pub name: StrBytes,
    /// The topic id (nil if the broker's Metadata version predates ids).
    pub id: Uuid,
}

/// One partition from a Metadata response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPartitionInfo {
    /// Partition index.
    pub partition: i32,
    /// Leader broker id, -1 if none.
    pub leader: i32,
    /// The partition's error, if any.
    pub error: Option<ResponseError>,
}

/// One topic from a Metadata response, plus the broker addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Name and id.
    pub topic: TopicRef,
    /// The partitions, sorted by index.
    pub partitions: Vec<TopicPartitionInfo>,
    /// `(node id, "host:port")` of every broker in the response.
    pub brokers: Vec<(i32, String)>,
}

impl TopicInfo {
    /// The address of broker `node_id`.
    pub fn broker_addr(&self, node_id: i32) -> Option<&str> {
        self.brokers
            .iter()
            .find(|(id, _)| *id == node_id)
            .map(|(_, addr)| addr.as_str())
    }

    /// True when every partition has a leader and no error.
    pub fn is_ready(&self) -> bool {
        !self.partitions.is_empty()
            && self
                .partitions
                .iter()
                .all(|p| p.leader >= 0 && p.error.is_none())
    }
}

/// A partition to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPartition {
    /// Partition index.
    pub partition: i32,
    /// First offset wanted.
    pub offset: i64,
    /// Most bytes to return for this partition.
    pub max_bytes: i32,
}

/// One partition of a fetch response.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedPartition {
    /// Partition index.
    pub partition: i32,
    /// The partition's error, if any.
    pub error: Option<ResponseError>,
    /// The high watermark.
    pub high_watermark: i64,
    /// Raw record batches (possibly ending in a truncated batch).
    pub records: Bytes,
}

/// A produce request in flight; see [`Connection::send_produce`].
pub struct ProduceFuture {
    inner: ResponseFuture<ProduceResponse>,
    partition: i32,
    topic: StrBytes,
}

impl ProduceFuture {
    /// Waits for the acknowledgement and returns the batch's base offset.
    pub async fn recv(self) -> Result<i64, ClientError> {
        let response = self.inner.recv().await?;
        let context = || format!("{}-{}", self.topic, self.partition);
        let partition = response
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == self.partition)
            .ok_or_else(|| ClientError::MissingInResponse {
                api: ApiKey::Produce,
                context: context(),
            })?;
        kafka_error(ApiKey::Produce, partition.error_code, context)?;
        Ok(partition.base_offset)
    }
}

impl Connection {
    /// A producer id and epoch for an idempotent producer (InitProducerId with
    /// no transactional id).
    pub async fn init_producer_id(&self) -> Result<(i64, i16), ClientError> {
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let response = self.call(&request).await?;
        kafka_error(ApiKey::InitProducerId, response.error_code, || {
            "InitProducerId".to_string()
        })?;
        Ok((response.producer_id.0, response.producer_epoch))
    }

    /// Metadata for `topics` (all topics if `None`); never creates topics.
    pub async fn metadata(&self, topics: Option<&[&str]>) -> Result<MetadataResponse, ClientError> {
        let topics = topics.map(|names| {
            names
                .iter()
                .map(|n| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(n.to_string()))))
                })
                .collect()
        });
        let request = MetadataRequest::default()
            .with_topics(topics)
            .with_allow_auto_topic_creation(false);
        self.call(&request).await
    }

    /// Metadata for one topic, as a [`TopicInfo`]. A topic-level error (such as
    /// UNKNOWN_TOPIC_OR_PARTITION) is returned as [`ClientError::Kafka`].
    pub async fn topic_info(&self, name: &str) -> Result<TopicInfo, ClientError> {
        let response = self.metadata(Some(&[name])).await?;
        let topic = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == name))
            .ok_or_else(|| ClientError::MissingInResponse {
                api: ApiKey::Metadata,
                context: name.to_string(),
            })?;
        kafka_error(ApiKey::Metadata, topic.error_code, || name.to_string())?;
        let mut partitions: Vec<TopicPartitionInfo> = topic
            .partitions
            .iter()
            .map(|p| TopicPartitionInfo {
                partition: p.partition_index,
                leader: p.leader_id.0,
                error: ResponseError::try_from_code(p.error_code),
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        Ok(TopicInfo {
            topic: TopicRef {
                name: StrBytes::from_string(name.to_string()),
                id: topic.topic_id,
            },
            partitions,
            brokers: response
                .brokers
                .iter()
                .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
                .collect(),
        })
    }

    /// Creates one topic. `replication_factor` -1 means the broker default. An existing
    /// topic is reported as `ClientError::Kafka { error: TopicAlreadyExists, .. }`.
    pub async fn create_topics(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(&str, &str)],
    ) -> Result<(), ClientError> {
        let configs = configs
            .iter()
            .map(|(k, v)| {
                CreatableTopicConfig::default()
                    .with_name(StrBytes::from_string(k.to_string()))
                    .with_value(Some(StrBytes::from_string(v.to_string())))
            })
            .collect();
        let topic = CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(configs);
        let request = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(30_000);
        let response = self.call(&request).await?;
        let result = response
            .topics
            .iter()
            .find(|t| t.name.0.as_str() == name)
            .ok_or_else(|| ClientError::MissingInResponse {
                api: ApiKey::CreateTopics,
                context: name.to_string(),
            })?;
        kafka_error(ApiKey::CreateTopics, result.error_code, || {
            match &result.error_message {
                Some(m) => format!("{name} ({m})"),
                None => name.to_string(),
            }
        })
    }

    fn produce_request(
        topic: &TopicRef,
        partition: i32,
        records: Bytes,
        acks: i16,
        timeout_ms: i32,
    ) -> ProduceRequest {
        let data = TopicProduceData::default()
            .with_name(TopicName(topic.name.clone()))
            .with_topic_id(topic.id)
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))]);
        ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(timeout_ms)
            .with_topic_data(vec![data])
    }

    /// Sends one batch to one partition without waiting for the answer, so a producer can
    /// keep several in flight. Returns `None` for `acks == 0` (the broker sends nothing).
    pub async fn send_produce(
        &self,
        topic: &TopicRef,
        partition: i32,
        records: Bytes,
        acks: i16,
        timeout_ms: i32,
    ) -> Result<Option<ProduceFuture>, ClientError> {
        let request = Self::produce_request(topic, partition, records, acks, timeout_ms);
        if acks == 0 {
            self.send_without_response(&request).await?;
            return Ok(None);
        }
        Ok(Some(ProduceFuture {
            inner: self.send(&request).await?,
            partition,
            topic: topic.name.clone(),
        }))
    }

    /// [`send_produce`](Self::send_produce) of a batch given as consecutive parts,
    /// written to the socket from those buffers without copying them into the frame.
    pub async fn send_produce_parts(
        &self,
        topic: &TopicRef,
        partition: i32,
        parts: &[Bytes],
        acks: i16,
        timeout_ms: i32,
    ) -> Result<Option<ProduceFuture>, ClientError> {
        let mut request = Self::produce_request(topic, partition, Bytes::new(), acks, timeout_ms);
        for t in &mut request.topic_data {
            for p in &mut t.partition_data {
                p.records = None;
            }
        }
        Ok(self
            .send_produce_records(&request, parts)
            .await?
            .map(|inner| ProduceFuture {
                inner,
                partition,
                topic: topic.name.clone(),
            }))
    }

    /// Produces one batch and waits: the base offset, or `None` for `acks == 0`.
    pub async fn produce(
        &self,
        topic: &TopicRef,
        partition: i32,
        records: Bytes,
        acks: i16,
        timeout_ms: i32,
    ) -> Result<Option<i64>, ClientError> {
        match self
            .send_produce(topic, partition, records, acks, timeout_ms)
            .await?
        {
            Some(pending) => Ok(Some(pending.recv().await?)),
            None => Ok(None),
        }
    }

    /// One sessionless fetch (read_uncommitted) of `partitions` of `topic`.
    pub async fn fetch(
        &self,
        topic: &TopicRef,
        partitions: &[FetchPartition],
        max_wait_ms: i32,
        min_bytes: i32,
        max_bytes: i32,
    ) -> Result<Vec<FetchedPartition>, ClientError> {
        let fetch_topic = FetchTopic::default()
            .with_topic(TopicName(topic.name.clone()))
            .with_topic_id(topic.id)
            .with_partitions(
                partitions
                    .iter()
                    .map(|p| {
                        kafka_protocol::messages::fetch_request::FetchPartition::default()
                            .with_partition(p.partition)
                            .with_fetch_offset(p.offset)
                            .with_partition_max_bytes(p.max_bytes)
                    })
                    .collect(),
            );
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_replica_state(ReplicaState::default().with_replica_id(BrokerId(-1)))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(min_bytes)
            .with_max_bytes(max_bytes)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![fetch_topic]);
        let response = self.call(&request).await?;
        kafka_error(ApiKey::Fetch, response.error_code, || {
            topic.name.to_string()
        })?;
        let mut out = Vec::with_capacity(partitions.len());
        for t in response.responses {
            let ours = if t.topic_id.is_nil() {
                t.topic.0 == topic.name
            } else {
                t.topic_id == topic.id
            };
            if !ours {
                continue;
            }
            for p in t.partitions {
                out.push(FetchedPartition {
                    partition: p.partition_index,
                    error: ResponseError::try_from_code(p.error_code),
                    high_watermark: p.high_watermark,
                    records: p.records.unwrap_or_default(),
                });
            }
        }
        Ok(out)
    }

    /// Offsets for `timestamp` ([`LATEST_TIMESTAMP`], [`EARLIEST_TIMESTAMP`] or a time in
    /// ms) of each partition, with per-partition errors.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<Vec<(i32, Result<i64, ResponseError>)>, ClientError> {
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_timeout_ms(30_000)
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(p)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                )]);
        let response = self.call(&request).await?;
        let mut out = Vec::with_capacity(partitions.len());
        for t in response
            .topics
            .iter()
            .filter(|t| t.name.0.as_str() == topic)
        {
            for p in &t.partitions {
                let result = match ResponseError::try_from_code(p.error_code) {
                    None => Ok(p.offset),
                    Some(e) => Err(e),
                };
                out.push((p.partition_index, result));
            }
        }
        for &p in partitions {
            if !out.iter().any(|(q, _)| *q == p) {
                return Err(ClientError::MissingInResponse {
                    api: ApiKey::ListOffsets,
                    context: format!("{topic}-{p}"),
                });
            }
        }
        Ok(out)
    }
}
