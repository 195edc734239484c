//! The broker process: start-up (log dir, cluster id, metadata replay, log
//! recovery), the background housekeeping, and the state every handler reads.

use crate::clock::SharedClock;
use crate::config::BrokerConfig;
use crate::controller::NewTopic;
use crate::coordinator::{CoordinatorPort, GroupCoordinator};
use crate::metadata_source::MetadataSource;
use crate::producer_ids::ProducerIdManager;
use crate::publisher::{AppliedImage, ApplyTimedOut};
use crate::replica::Partition;
use crate::replica::ReplicaManager;
use crate::topic_config;
use felice_coord::GroupError;
use felice_metadata::TopicId;
use felice_metadata::{MetadataImage, TopicImage};
use felice_replica::IsrProposal;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("log dir {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    MetaProperties(String),
    #[error(transparent)]
    Metadata(#[from] felice_metadata::QuorumError),
    #[error("registering with the metadata quorum: {0}")]
    Register(String),
    #[error(transparent)]
    Replica(#[from] crate::replica::ReplicaError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Everything handlers share. Cheap to reach through an `Arc<Broker>`.
pub struct Broker {
    pub config: BrokerConfig,
    pub cluster_id: String,
    pub(crate) metadata: MetadataSource,
    /// Requests to the active controller (in process or forwarded).
    pub(crate) controller: crate::controller_channel::ControllerChannel,
    pub(crate) replicas: ReplicaManager,
    pub(crate) groups: GroupCoordinator,
    /// Producer ids for InitProducerId.
    pub(crate) producer_ids: ProducerIdManager,
    /// Budget of fetched records held in memory (see
    /// [`crate::limits::FETCH_MEMORY_BUDGET_BYTES`]).
    pub(crate) fetch_memory: Arc<tokio::sync::Semaphore>,
    /// The newest image this broker's partitions and coordinator have applied:
    /// what handlers read.
    applied: AppliedImage,
    /// This process's incarnation (BrokerRegistration): a new one per start.
    incarnation_id: uuid::Uuid,
    /// The epoch the controller gave this incarnation (-1 before).
    broker_epoch: std::sync::atomic::AtomicI64,
    /// Set by a controlled shutdown: every later heartbeat asks to go.
    shutting_down: std::sync::atomic::AtomicBool,
    /// Serialises [`Broker::apply`].
    apply_lock: std::sync::Mutex<()>,
}

impl Broker {
    /// Creates the log dir and reads (or writes, on first start) its
    /// `meta.properties`; returns the cluster id. Blocking.
    pub fn prepare_log_dir(config: &BrokerConfig) -> Result<String, StartError> {
        let dir = &config.log_dir;
        std::fs::create_dir_all(dir).map_err(|source| StartError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        read_or_create_meta_properties(dir, config.node_id)
    }

    /// Rewrites `meta.properties` with the quorum's cluster id (a node that
    /// joined a cluster takes the id its first leader recorded). Blocking.
    pub fn adopt_cluster_id(config: &BrokerConfig, cluster_id: &str) -> Result<(), StartError> {
        let path = config.log_dir.join("meta.properties");
        let io = |source| StartError::Io {
            path: path.display().to_string(),
            source,
        };
        let text = std::fs::read_to_string(&path).map_err(io)?;
        let text: String = text
            .lines()
            .map(|l| match l.split_once('=') {
                Some((k, _)) if k.trim() == "cluster.id" => format!("cluster.id={cluster_id}\n"),
                _ => format!("{l}\n"),
            })
            .collect();
        let tmp = config.log_dir.join("meta.properties.tmp");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        tracing::info!(cluster_id, "took the metadata quorum's cluster id");
        Ok(())
    }

    /// Where this node keeps the metadata quorum's storage.
    pub fn metadata_dir(config: &BrokerConfig) -> std::path::PathBuf {
        config.log_dir.join("__cluster_metadata-0")
    }

    /// Opens the partition logs the image assigns to this broker (recovering
    /// them) and replays the group coordinator's state (blocking: run before
    /// serving, or on a blocking thread).
    pub fn open(
        config: BrokerConfig,
        cluster_id: String,
        metadata: MetadataSource,
        controller: Option<Arc<crate::controller::ControllerContext>>,
        clock: SharedClock,
    ) -> Result<Broker, StartError> {
        let controller = crate::controller_channel::ControllerChannel::new(
            &config,
            metadata.clone(),
            controller,
        );
        let replicas = ReplicaManager::new(
            &config.log_dir,
            config.node_id,
            clock.clone(),
            crate::limits::MAX_PRODUCER_IDS_PER_BROKER,
        );
        let groups = GroupCoordinator::new(&config, clock.clone());
        let applied = AppliedImage::new(Arc::new(felice_metadata::MetadataImage::default()));
        let broker = Broker {
            config,
            cluster_id,
            metadata,
            controller,
            replicas,
            groups,
            producer_ids: ProducerIdManager::default(),
            fetch_memory: Arc::new(tokio::sync::Semaphore::new(
                crate::limits::FETCH_MEMORY_BUDGET_BYTES,
            )),
            applied,
            incarnation_id: uuid::Uuid::new_v4(),
            broker_epoch: std::sync::atomic::AtomicI64::new(-1),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            apply_lock: std::sync::Mutex::new(()),
        };
        let image = broker.metadata.image();
        let config = &broker.config;
        broker
            .replicas
            .reconcile(&image, |t| topic_config::settings(config, &t.configs))?;
        // Groups and offsets of the partitions this broker leads come back
        // from __consumer_offsets before serving.
        broker.groups.on_image(&broker, &image);
        broker.applied.publish(image);
        Ok(broker)
    }

    /// Registers this broker with the active controller (BrokerRegistration:
    /// its client endpoint and rack); returns the broker epoch. While a
    /// previous process of this node still holds a valid session (a quick
    /// restart), the controller answers DUPLICATE_BROKER_REGISTRATION and
    /// this retries, as Kafka's brokers do, until the session runs out.
    pub async fn register(&self, port: u16) -> Result<i64, StartError> {
        use kafka_protocol::messages::broker_registration_request::Listener;
        use kafka_protocol::messages::{BrokerId, BrokerRegistrationRequest};
        use kafka_protocol::protocol::StrBytes;
        let req = BrokerRegistrationRequest::default()
            .with_broker_id(BrokerId(self.config.node_id))
            .with_cluster_id(StrBytes::from(self.cluster_id.clone()))
            .with_incarnation_id(self.incarnation_id)
            .with_listeners(vec![Listener::default()
                .with_name(StrBytes::from(self.config.listener.name.clone()))
                .with_host(StrBytes::from(self.config.advertised.host.clone()))
                .with_port(port)
                .with_security_protocol(0)])
            .with_rack(self.config.broker_rack.clone().map(StrBytes::from));
        let session = std::time::Duration::from_millis(self.config.broker_session_timeout_ms);
        let deadline = tokio::time::Instant::now() + session + crate::limits::MAX_CONTROLLER_CALL;
        let mut backoff = std::time::Duration::from_millis(100);
        loop {
            let resp = self
                .controller
                .call(req.clone(), 0)
                .await
                .map_err(|e| StartError::Register(e.to_string()))?;
            let duplicate = kafka_protocol::ResponseError::DuplicateBrokerRegistration.code();
            match resp.error_code {
                0 => {
                    self.broker_epoch
                        .store(resp.broker_epoch, std::sync::atomic::Ordering::Release);
                    return Ok(resp.broker_epoch);
                }
                code if code == duplicate && tokio::time::Instant::now() < deadline => {
                    tracing::info!("a previous process of this node still holds its session; retrying the registration");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
                }
                code => {
                    return Err(StartError::Register(format!(
                        "the controller answered error {code}"
                    )))
                }
            }
        }
    }

    /// One BrokerHeartbeat to the active controller: this broker's epoch and
    /// applied metadata offset; `shutting_down` (sticky) asks to be fenced
    /// and let go (controlled shutdown).
    pub async fn heartbeat(
        &self,
        shutting_down: bool,
    ) -> Result<
        kafka_protocol::messages::BrokerHeartbeatResponse,
        crate::controller_channel::ChannelError,
    > {
        use kafka_protocol::messages::{BrokerHeartbeatRequest, BrokerId};
        use std::sync::atomic::Ordering;
        if shutting_down {
            self.shutting_down.store(true, Ordering::Release);
        }
        let shutting_down = self.shutting_down.load(Ordering::Acquire);
        let req = BrokerHeartbeatRequest::default()
            .with_broker_id(BrokerId(self.config.node_id))
            .with_broker_epoch(self.broker_epoch.load(std::sync::atomic::Ordering::Acquire))
            .with_current_metadata_offset(self.image().offset as i64)
            .with_want_fence(false)
            .with_want_shut_down(shutting_down);
        self.controller.call(req, 0).await
    }

    /// Sends `proposal`, an ISR change of `part` (which this broker leads),
    /// to the active controller as AlterPartition v3, in the background, and
    /// gives the partition the answer. The metadata log brings the same
    /// change to every broker; the answer only saves waiting for it.
    pub(crate) fn propose_isr(self: &Arc<Self>, part: Arc<Partition>, proposal: IsrProposal) {
        use kafka_protocol::messages::alter_partition_request::{
            BrokerState, PartitionData, TopicData,
        };
        use kafka_protocol::messages::{AlterPartitionRequest, BrokerId};
        let broker = self.clone();
        tokio::spawn(async move {
            // KIP-903: each follower with the broker epoch its own fetch
            // carried, so the controller refuses one that registered again
            // since (its log may have lost what that fetch showed).
            let me = broker.config.node_id;
            let my_epoch = broker
                .broker_epoch
                .load(std::sync::atomic::Ordering::Acquire);
            let members = proposal
                .new_isr
                .iter()
                .zip(&proposal.broker_epochs)
                .map(|(b, fetched)| {
                    BrokerState::default()
                        .with_broker_id(BrokerId(*b))
                        .with_broker_epoch(if *b == me { my_epoch } else { *fetched })
                })
                .collect();
            let req = AlterPartitionRequest::default()
                .with_broker_id(BrokerId(broker.config.node_id))
                .with_broker_epoch(
                    broker
                        .broker_epoch
                        .load(std::sync::atomic::Ordering::Acquire),
                )
                .with_topics(vec![TopicData::default()
                    .with_topic_id(part.topic_id)
                    .with_partitions(vec![PartitionData::default()
                        .with_partition_index(part.index)
                        .with_leader_epoch(proposal.leader_epoch.0)
                        .with_partition_epoch(proposal.partition_epoch)
                        .with_new_isr_with_epochs(members)])]);
            let answer = broker.controller.call(req, 3).await;
            let code = match &answer {
                Ok(r) if r.error_code != 0 => r.error_code,
                Ok(r) => r
                    .topics
                    .first()
                    .and_then(|t| t.partitions.first())
                    .map_or(-1, |p| p.error_code),
                Err(_) => -1,
            };
            let now_is = answer.ok().filter(|_| code == 0).and_then(|r| {
                let p = r.topics.first()?.partitions.first()?.clone();
                Some((
                    p.leader_epoch,
                    p.partition_epoch,
                    p.isr.iter().map(|b| b.0).collect(),
                ))
            });
            if now_is.is_some() {
                tracing::info!(topic = %part.topic, partition = part.index, isr = ?proposal.new_isr, "ISR changed");
            } else {
                tracing::info!(topic = %part.topic, partition = part.index, isr = ?proposal.new_isr, error_code = code, "ISR change not made");
            }
            part.on_isr_answer(&proposal, now_is);
        });
    }

    /// Newly applied images, as they are published.
    pub(crate) fn subscribe_applied(&self) -> tokio::sync::watch::Receiver<Arc<MetadataImage>> {
        self.applied.subscribe()
    }

    /// This incarnation's broker epoch (-1 before registration).
    pub(crate) fn broker_epoch(&self) -> i64 {
        self.broker_epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether a controlled shutdown has begun.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The newest applied image (see [`crate::publisher`]).
    pub fn image(&self) -> Arc<MetadataImage> {
        self.applied.get()
    }

    /// The fetch memory budget (see [`crate::limits::FETCH_MEMORY_BUDGET_BYTES`]).
    pub fn fetch_memory(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.fetch_memory
    }

    /// Hosted partitions.
    pub fn partition_count(&self) -> usize {
        self.replicas.len()
    }

    /// Waits until this broker has applied the metadata log up to `offset`.
    pub async fn applied(
        &self,
        offset: u64,
        timeout: std::time::Duration,
    ) -> Result<Arc<MetadataImage>, ApplyTimedOut> {
        self.applied.wait_for(offset, timeout).await
    }

    /// Waits until an applied image satisfies `done`.
    pub async fn applied_until(
        &self,
        done: impl Fn(&MetadataImage) -> bool,
        timeout: std::time::Duration,
    ) -> Result<Arc<MetadataImage>, ApplyTimedOut> {
        self.applied.wait_until(done, timeout).await
    }

    /// [`Self::applied`] for blocking threads.
    pub fn applied_blocking(
        &self,
        offset: u64,
        timeout: std::time::Duration,
    ) -> Result<Arc<MetadataImage>, ApplyTimedOut> {
        self.applied.wait_for_blocking(offset, timeout)
    }

    /// Brings this broker's derived state in line with a committed image,
    /// then publishes it as applied: partitions are opened or deleted
    /// (reconcile), and the group coordinator drops the committed offsets of
    /// deleted topics, as Kafka's does. Blocking (log creation): call on a
    /// blocking thread. Serialised, so that two images never apply out of
    /// order.
    pub fn apply(self: &Arc<Self>, image: Arc<MetadataImage>) {
        let _serial = match self.apply_lock.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let previous = self.applied.get();
        if image.offset <= previous.offset {
            return;
        }
        let config = &self.config;
        let settings_of = |t: &TopicImage| topic_config::settings(config, &t.configs);
        if let Err(e) = self.replicas.reconcile(&image, settings_of) {
            tracing::error!(error = %e, "could not apply metadata to the hosted partitions");
        }
        let deleted: Vec<String> = previous
            .topics()
            .into_iter()
            .filter(|t| image.topic_by_id(&t.topic_id).is_none())
            .map(|t| t.name.clone())
            .collect();
        // Offsets exist only once `__consumer_offsets` was applied. Their
        // tombstones wait for the ISR (acks=all, up to
        // `offsets.commit.timeout.ms` per group): off the metadata path, so
        // applying the next image never waits on them.
        if !deleted.is_empty() && previous.topic(crate::coordinator::OFFSETS_TOPIC).is_some() {
            let broker = self.clone();
            let work = move || broker.groups.remove_offsets_of_topics(&*broker, &deleted);
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn_blocking(work);
                }
                Err(_) => work(),
            }
        }
        self.groups.on_image(&**self, &image);
        self.applied.publish(image);
    }
}

impl CoordinatorPort for Broker {
    fn image(&self) -> Arc<MetadataImage> {
        Broker::image(self)
    }

    fn create_topic(&self, topic: &NewTopic) -> Result<Arc<MetadataImage>, GroupError> {
        use kafka_protocol::messages::create_topics_request::{
            CreatableTopic, CreatableTopicConfig,
        };
        use kafka_protocol::messages::CreateTopicsRequest;
        use kafka_protocol::protocol::StrBytes;
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(0)
            .with_topics(vec![CreatableTopic::default()
                .with_name(crate::handlers::topic_name(&topic.name))
                .with_num_partitions(topic.num_partitions)
                .with_replication_factor(topic.replication_factor)
                .with_configs(
                    topic
                        .configs
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from(k.clone()))
                                .with_value(v.clone().map(StrBytes::from))
                        })
                        .collect(),
                )]);
        // On a blocking thread (the coordinator's), so it may wait here.
        let handle = tokio::runtime::Handle::current();
        let resp = handle.block_on(self.controller.call(req, 7)).map_err(|e| {
            tracing::error!(topic = %topic.name, error = %e, "could not create an internal topic");
            GroupError::CoordinatorNotAvailable
        })?;
        let code = resp.topics.first().map_or(-1, |t| t.error_code);
        if code != 0 && code != kafka_protocol::ResponseError::TopicAlreadyExists.code() {
            tracing::error!(topic = %topic.name, code, "could not create an internal topic");
            return Err(GroupError::CoordinatorNotAvailable);
        }
        let name = topic.name.clone();
        let wait = self.applied.wait_until_blocking(
            move |image| image.topic(&name).is_some(),
            crate::limits::MAX_METADATA_APPLY_WAIT,
        );
        wait.map_err(|e| {
            tracing::error!(topic = %topic.name, error = %e, "internal topic not applied");
            GroupError::CoordinatorNotAvailable
        })
    }

    fn partition(&self, topic_id: &TopicId, index: i32) -> Option<Arc<Partition>> {
        self.replicas.get(topic_id, index)
    }
}

/// Reads `meta.properties` (Kafka's file: version, cluster.id, node.id) or
/// writes it with a new cluster id on first start. A node id that differs
/// from the one stored stops the start: the directory belongs to another node.
fn read_or_create_meta_properties(dir: &Path, node_id: i32) -> Result<String, StartError> {
    let path = dir.join("meta.properties");
    let io = |source| StartError::Io {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let get = |key: &str| {
                text.lines()
                    .filter_map(|l| l.split_once('='))
                    .find(|(k, _)| k.trim() == key)
                    .map(|(_, v)| v.trim().to_string())
            };
            let cluster_id = get("cluster.id").ok_or_else(|| {
                StartError::MetaProperties(format!("{} has no cluster.id", path.display()))
            })?;
            if let Some(stored) = get("node.id") {
                if stored != node_id.to_string() {
                    return Err(StartError::MetaProperties(format!(
                        "{} belongs to node.id {stored}, but this broker is node.id {node_id}",
                        path.display()
                    )));
                }
            }
            Ok(cluster_id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let cluster_id = base64url_uuid(uuid::Uuid::new_v4());
            let directory_id = base64url_uuid(uuid::Uuid::new_v4());
            let text = format!(
                "#\n#Written by felice on first start\nversion=1\ncluster.id={cluster_id}\nnode.id={node_id}\ndirectory.id={directory_id}\n"
            );
            let tmp = dir.join("meta.properties.tmp");
            std::fs::write(&tmp, text).map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            Ok(cluster_id)
        }
        Err(e) => Err(io(e)),
    }
}

/// A UUID as Kafka prints cluster ids: URL-safe base64 without padding (22 chars).
pub fn base64url_uuid(id: uuid::Uuid) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = id.as_bytes();
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let idx = (n >> (18 - 6 * i)) & 63;
            out.push(ALPHABET[idx as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_id_is_22_url_safe_chars_and_kept() {
        let id = base64url_uuid(uuid::Uuid::nil());
        assert_eq!(id, "AAAAAAAAAAAAAAAAAAAAAA");
        let dir = tempfile::tempdir().expect("tempdir");
        let a = read_or_create_meta_properties(dir.path(), 1).expect("create");
        assert_eq!(a.len(), 22);
        let b = read_or_create_meta_properties(dir.path(), 1).expect("read");
        assert_eq!(a, b);
        assert!(read_or_create_meta_properties(dir.path(), 2).is_err());
    }
}
