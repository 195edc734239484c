//! The broker process: start-up (log dir, cluster id, metadata replay, log
//! recovery), the background housekeeping, and the state every handler reads.

use crate::config::BrokerConfig;
use crate::coordinator::GroupCoordinator;
use crate::producer_ids::ProducerIdManager;
use crate::replica::ReplicaManager;
use felice_metadata::{CommitError, MetadataImage, MetadataRecord, MetadataStore};
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
    Metadata(#[from] felice_metadata::MetadataLogError),
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
    pub metadata: MetadataStore,
    pub replicas: ReplicaManager,
    pub groups: GroupCoordinator,
    /// Producer ids for InitProducerId.
    pub producer_ids: ProducerIdManager,
    /// Budget of fetched records held in memory (see
    /// [`crate::limits::FETCH_MEMORY_BUDGET_BYTES`]).
    pub fetch_memory: Arc<tokio::sync::Semaphore>,
    reconcile_lock: std::sync::Mutex<()>,
}

impl Broker {
    /// Opens the log dir and replays state (blocking: run before serving, or on
    /// a blocking thread). `advertised_port` is the port actually bound.
    pub fn open(config: BrokerConfig, advertised_port: u16) -> Result<Broker, StartError> {
        let dir = config.log_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| StartError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let cluster_id = read_or_create_meta_properties(&dir, config.node_id)?;
        let metadata = MetadataStore::open(&dir.join("__cluster_metadata-0").join("records.log"))?;
        let replicas = ReplicaManager::new(&dir, config.node_id);
        let groups = GroupCoordinator::new(&config);
        let broker = Broker {
            config,
            cluster_id,
            metadata,
            replicas,
            groups,
            producer_ids: ProducerIdManager::default(),
            fetch_memory: Arc::new(tokio::sync::Semaphore::new(
                crate::limits::FETCH_MEMORY_BUDGET_BYTES,
            )),
            reconcile_lock: std::sync::Mutex::new(()),
        };
        broker.register(advertised_port)?;
        broker
            .replicas
            .reconcile(&broker.metadata.image(), &broker.config)?;
        // Groups and offsets come back from __consumer_offsets before serving.
        broker.groups.load(&broker);
        Ok(broker)
    }

    /// Records this broker's endpoint in the metadata log when it changed.
    fn register(&self, port: u16) -> Result<(), StartError> {
        let node_id = self.config.node_id;
        let host = self.config.advertised.host.clone();
        let port = i32::from(port);
        let r = self.metadata.commit::<std::convert::Infallible>(|image| {
            let current = image.brokers.get(&node_id);
            if current.is_some_and(|b| b.host == host && b.port == port) {
                return Ok(vec![]);
            }
            Ok(vec![MetadataRecord::RegisterBroker {
                node_id,
                host: host.clone(),
                port,
                rack: None,
            }])
        });
        match r {
            Ok(_) => Ok(()),
            Err(CommitError::Log(e)) => Err(e.into()),
            Err(CommitError::Rejected(never)) => match never {},
        }
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.metadata.image()
    }

    /// Commits metadata records and brings the hosted partitions in line with
    /// the new image. Blocking (fsync, log creation): call on a blocking thread.
    pub fn commit_and_apply<E>(
        &self,
        build: impl FnOnce(&MetadataImage) -> Result<Vec<MetadataRecord>, E>,
    ) -> Result<Arc<MetadataImage>, CommitError<E>> {
        let image = self.metadata.commit(build)?;
        if let Err(e) = self.reconcile() {
            tracing::error!(error = %e, "could not apply metadata to the hosted partitions");
        }
        Ok(image)
    }

    /// Brings the hosted partitions in line with the CURRENT image. Serialised:
    /// two commits racing must not reconcile against an older image after a
    /// newer one (that would drop the newer image's partitions), nor open the
    /// same log twice.
    fn reconcile(&self) -> Result<(), crate::replica::ReplicaError> {
        let _serial = match self.reconcile_lock.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        self.replicas
            .reconcile(&self.metadata.image(), &self.config)
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
