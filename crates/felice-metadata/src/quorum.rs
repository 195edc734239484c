//! [`MetadataQuorum`]: this node's member of the metadata quorum, the one
//! handle the broker holds: the newest applied image, the channel of applied
//! images, and [`MetadataQuorum::commit`] on the active controller.
//!
//! A single node is a quorum of one voter: the same code, elected at once
//! (it triggers its own election instead of waiting for a timeout).
//!
//! Commits: `build` validates against the image and returns the records of
//! one decision; they are proposed as one Raft entry and the call returns
//! once the entry is committed and applied here. Commits are serialised by
//! a mutex, and each first confirms leadership and waits until every entry
//! committed before it is applied (`ensure_linearizable`), so `build` never
//! validates against a stale image, also just after a leader change.
//!
//! Upgrade: a data folder of the single-file metadata log (`records.log`,
//! before Raft) is migrated once: its records become the first entry after
//! the quorum's own, and the file is renamed `records.log.migrated`.

use crate::image::MetadataImage;
use crate::log::MetadataLog;
use crate::raft::fetch::{Endpoint, FetchAnswer, FetchRequest, MAX_FETCH_BYTES, MAX_FETCH_WAIT_MS};
use crate::raft::network::{Network, RaftRpc, RaftTransport, TransportError, TransportFuture};
use crate::raft::{FileLogStore, MetaRaft, MetadataBatch, MetadataStateMachine};
use crate::records::MetadataRecord;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How this node takes part in the quorum.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    pub node_id: u64,
    /// The voters and their controller addresses (`controller.quorum.voters`).
    pub voters: BTreeMap<u64, BasicNode>,
    /// `controller.quorum.election.timeout.ms`: the least time a follower
    /// waits without hearing from a leader before it stands (up to twice).
    pub election_timeout_ms: u64,
    /// When a snapshot is taken (then the log before it is purged).
    pub snapshots: SnapshotSettings,
    /// How long `open` waits for a leader and the applied image.
    pub start_timeout: Duration,
    /// The cluster id this node proposes if the quorum has none yet (its
    /// `meta.properties`); the first leader's wins. Empty: none.
    pub cluster_id: String,
}

impl QuorumConfig {
    /// One node, its own only voter.
    pub fn single(node_id: u64) -> QuorumConfig {
        QuorumConfig {
            node_id,
            voters: BTreeMap::from([(node_id, BasicNode::new("local"))]),
            election_timeout_ms: 1000,
            snapshots: SnapshotSettings::default(),
            start_timeout: Duration::from_secs(30),
            cluster_id: String::new(),
        }
    }
}

/// When a node snapshots its image and drops the log before it, as Kafka's
/// `metadata.log.max.record.bytes.between.snapshots` and
/// `metadata.log.max.snapshot.interval.ms` say, plus a bound on entries.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotSettings {
    /// Record bytes applied since the last snapshot that trigger the next.
    pub max_bytes: u64,
    /// Time after which any new record triggers a snapshot.
    pub max_interval: Duration,
    /// Entries after which openraft snapshots regardless: bounds the log
    /// (and its in-memory copy) also when entries are tiny.
    pub max_entries: u64,
}

impl Default for SnapshotSettings {
    fn default() -> SnapshotSettings {
        SnapshotSettings {
            max_bytes: 20 << 20,
            max_interval: Duration::from_secs(3600),
            max_entries: MAX_ENTRIES_BETWEEN_SNAPSHOTS,
        }
    }
}

/// The most metadata log entries kept before a snapshot replaces them. An
/// entry is one controller decision, a few hundred bytes typically (a topic
/// of 100 partitions is ~6 KB), so the log in memory stays well under
/// `metadata.log.max.record.bytes.between.snapshots` plus this many headers.
pub const MAX_ENTRIES_BETWEEN_SNAPSHOTS: u64 = 10_000;

impl SnapshotSettings {
    /// Whether `bytes` applied over `elapsed` since the last snapshot call
    /// for a new one.
    pub fn due(&self, bytes: u64, elapsed: Duration) -> bool {
        bytes >= self.max_bytes.max(1) || (bytes > 0 && elapsed >= self.max_interval)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("metadata quorum storage in {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metadata quorum: {0}")]
    Raft(String),
    #[error("migrating {path}: {why}")]
    Migration { path: PathBuf, why: String },
}

/// Why a commit did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CommitError<E> {
    #[error("rejected")]
    Rejected(E),
    /// This node is not the active controller; the leader, when known.
    #[error("not the active controller (leader: {0:?})")]
    NotController(Option<u64>),
    /// The quorum could not commit (its storage failed, or it is stopping).
    #[error("metadata commit failed: {0}")]
    Failed(String),
}

pub struct MetadataQuorum {
    raft: Raft<MetaRaft>,
    sm: MetadataStateMachine,
    /// The log openraft writes; read (committed entries only) by observers'
    /// fetches.
    log: FileLogStore,
    node_id: u64,
    commit_lock: tokio::sync::Mutex<()>,
    /// Voters' last successful AppendEntries, while this node leads.
    contacts: crate::raft::network::Contacts,
}

/// The transport of a quorum with no other node.
struct NoPeers;

impl RaftTransport for NoPeers {
    fn call(
        &self,
        target: u64,
        _node: &BasicNode,
        _rpc: RaftRpc,
        _body: Vec<u8>,
        _timeout: Duration,
    ) -> TransportFuture {
        Box::pin(async move { Err(TransportError(format!("no route to node {target}"))) })
    }
}

fn raft_config(cfg: &QuorumConfig) -> Result<Arc<Config>, QuorumError> {
    // openraft's follower stands for election after its leader lease
    // (= election_timeout_max) plus a random election timeout in
    // [min, max]; a candidate retries after the random timeout alone. With
    // min = half the configured timeout and max = all of it, Kafka's
    // default `controller.quorum.election.timeout.ms` (1000) gives a
    // follower 1.5 to 2 s without its leader before it stands, about
    // Kafka's `controller.quorum.fetch.timeout.ms` (2000), and a candidate
    // 0.5 to 1 s between tries, within Kafka's election timeout.
    let election = cfg.election_timeout_ms.max(10);
    let config = Config {
        cluster_name: "felice-metadata".into(),
        // Also openraft's AppendEntries timeout: catch-up after a partition
        // needs room for a reconnect and a full batch.
        heartbeat_interval: (election / 5).max(1),
        election_timeout_min: (election / 2).max(2),
        election_timeout_max: election.max(3),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshots.max_entries.max(1)),
        max_in_snapshot_log_to_keep: 0,
        ..Default::default()
    };
    config
        .validate()
        .map(Arc::new)
        .map_err(|e| QuorumError::Raft(e.to_string()))
}

impl MetadataQuorum {
    /// Opens this node's metadata storage in `dir` (`raft/` inside it) and
    /// starts its Raft node. A single-node quorum with `transport = None`.
    pub async fn start(
        dir: &Path,
        cfg: QuorumConfig,
        transport: Option<Arc<dyn RaftTransport>>,
    ) -> Result<MetadataQuorum, QuorumError> {
        let raft_dir = dir.join("raft");
        let io = |path: PathBuf| move |source| QuorumError::Io { path, source };
        let (log, sm) = {
            let raft_dir = raft_dir.clone();
            tokio::task::spawn_blocking(move || {
                Ok::<_, QuorumError>((
                    FileLogStore::open(&raft_dir.join("log")).map_err(io(raft_dir.join("log")))?,
                    MetadataStateMachine::open(&raft_dir.join("sm"))
                        .map_err(io(raft_dir.join("sm")))?,
                ))
            })
            .await
            .map_err(|e| QuorumError::Raft(e.to_string()))??
        };
        let transport = transport.unwrap_or_else(|| Arc::new(NoPeers));
        let contacts = crate::raft::network::Contacts::default();
        let raft = Raft::new(
            cfg.node_id,
            raft_config(&cfg)?,
            Network::new(transport, contacts.clone()),
            log.clone(),
            sm.clone(),
        )
        .await
        .map_err(|e| QuorumError::Raft(e.to_string()))?;
        tokio::spawn(snapshot_policy(raft.clone(), sm.clone(), cfg.snapshots));
        Ok(MetadataQuorum {
            raft,
            sm,
            log,
            node_id: cfg.node_id,
            commit_lock: tokio::sync::Mutex::new(()),
            contacts,
        })
    }

    /// [`Self::start`], then [`Self::ready`]: for a quorum whose peers are
    /// reachable already (or that has none).
    pub async fn open(
        dir: &Path,
        cfg: QuorumConfig,
        transport: Option<Arc<dyn RaftTransport>>,
    ) -> Result<MetadataQuorum, QuorumError> {
        let quorum = MetadataQuorum::start(dir, cfg.clone(), transport).await?;
        quorum.ready(dir, &cfg).await?;
        Ok(quorum)
    }

    /// Joins the quorum and waits for a leader and the image, then migrates
    /// a pre-Raft metadata log. Call once the node answers Raft messages
    /// (its controller listener serves [`Self::raft`]).
    /// Returns the quorum's cluster id.
    pub async fn ready(&self, dir: &Path, cfg: &QuorumConfig) -> Result<String, QuorumError> {
        self.join(cfg).await?;
        let legacy = dir.join("records.log");
        let alone = cfg.voters.len() == 1 && cfg.voters.contains_key(&cfg.node_id);
        if legacy.exists() && !alone {
            return Err(QuorumError::Migration {
                path: legacy,
                why: "a data folder from before the metadata quorum is upgraded as a single node; start it alone first".into(),
            });
        }
        self.migrate(&legacy).await?;
        self.agree_on_cluster_id(cfg).await
    }

    /// The quorum's cluster id: recorded by the first leader (its own), and
    /// waited for by every other node.
    async fn agree_on_cluster_id(&self, cfg: &QuorumConfig) -> Result<String, QuorumError> {
        if cfg.cluster_id.is_empty() {
            return Ok(self.image().cluster_id.clone().unwrap_or_default());
        }
        let deadline = tokio::time::Instant::now() + cfg.start_timeout;
        let mut images = self.subscribe();
        loop {
            if let Some(id) = self.image().cluster_id.clone() {
                return Ok(id);
            }
            if self.raft.current_leader().await == Some(self.node_id) {
                let id = cfg.cluster_id.clone();
                let r = self
                    .commit::<std::convert::Infallible>(|image| {
                        Ok(match image.cluster_id {
                            Some(_) => vec![],
                            None => vec![MetadataRecord::ClusterId { cluster_id: id }],
                        })
                    })
                    .await;
                if let Err(e) = r {
                    tracing::debug!(error = %e, "recording the cluster id");
                }
                continue;
            }
            let changed = tokio::time::timeout_at(deadline, images.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                return Err(QuorumError::Raft(
                    "no cluster id was recorded by the metadata quorum in time".into(),
                ));
            }
        }
    }

    /// Initialises a pristine quorum (every voter does, with the same
    /// voters: openraft makes that safe), stands for election at once when
    /// this node is the only voter, then waits for a leader and the image.
    async fn join(&self, cfg: &QuorumConfig) -> Result<(), QuorumError> {
        let raft_err = |e: &dyn std::fmt::Display| QuorumError::Raft(e.to_string());
        let initialized = self.raft.is_initialized().await.map_err(|e| raft_err(&e))?;
        if !initialized && cfg.voters.contains_key(&cfg.node_id) {
            if let Err(e) = self.raft.initialize(cfg.voters.clone()).await {
                // Another voter may have initialised the quorum first.
                tracing::debug!(error = %e, "metadata quorum initialisation");
            }
        } else if cfg.voters.len() == 1 && cfg.voters.contains_key(&cfg.node_id) {
            self.raft
                .trigger()
                .elect()
                .await
                .map_err(|e| raft_err(&e))?;
        }
        // A leader, and on the leader every committed entry applied. A node
        // restarting as the leader of an old term learns of the newer one
        // and steps down: then it waits for the new leader instead.
        let deadline = tokio::time::Instant::now() + cfg.start_timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            self.raft
                .wait(Some(left))
                .metrics(|m| m.current_leader.is_some(), "a metadata leader")
                .await
                .map_err(|e| QuorumError::Raft(format!("no metadata leader: {e}")))?;
            if self.raft.current_leader().await != Some(self.node_id) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.raft.ensure_linearizable()).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(RaftError::APIError(e))) => {
                    tracing::debug!(error = %e, "leadership lost during start-up; waiting for the new leader");
                }
                Ok(Err(RaftError::Fatal(e))) => return Err(raft_err(&e)),
                Err(_) => {
                    return Err(QuorumError::Raft(
                        "the metadata leader could not confirm its leadership in time".into(),
                    ))
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let me = self.node_id;
            let _ = self
                .raft
                .wait(Some(left))
                .metrics(|m| m.current_leader != Some(me), "a new metadata leader")
                .await;
        }
    }

    /// Moves the records of a pre-Raft single-file metadata log into the
    /// quorum, once.
    async fn migrate(&self, legacy: &Path) -> Result<(), QuorumError> {
        if !legacy.exists() {
            return Ok(());
        }
        let fail = |why: String| QuorumError::Migration {
            path: legacy.to_path_buf(),
            why,
        };
        let path = legacy.to_path_buf();
        let records = tokio::task::spawn_blocking(move || MetadataLog::open(&path))
            .await
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(e.to_string()))?
            .1;
        let migrated = legacy.with_extension("log.migrated");
        let count = records.len();
        let r = self
            .commit(|image| {
                // Already migrated (a crash before the rename): nothing to add.
                if image.topic_count() > 0 || !image.brokers.is_empty() {
                    return Ok::<_, std::convert::Infallible>(vec![]);
                }
                Ok(records)
            })
            .await;
        match r {
            Ok(_) => {}
            Err(CommitError::Rejected(never)) => match never {},
            Err(e) => return Err(fail(e.to_string())),
        }
        std::fs::rename(legacy, &migrated).map_err(|e| fail(e.to_string()))?;
        tracing::info!(records = count, from = %legacy.display(), "migrated the single-node metadata log into the metadata quorum");
        Ok(())
    }

    /// The newest image applied on this node.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.sm.image()
    }

    /// Follows the applied images, from the current one (marked seen).
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.sm.subscribe()
    }

    pub fn raft(&self) -> &Raft<MetaRaft> {
        &self.raft
    }

    /// Validates with `build` against the current image and commits the
    /// records it returns as one entry; returns the image that has them.
    /// An empty list commits nothing and returns the current image.
    pub async fn commit<E>(
        &self,
        build: impl FnOnce(&MetadataImage) -> Result<Vec<MetadataRecord>, E>,
    ) -> Result<Arc<MetadataImage>, CommitError<E>> {
        let _serial = self.commit_lock.lock().await;
        if let Err(e) = self.raft.ensure_linearizable().await {
            return Err(match e {
                RaftError::APIError(e) => CommitError::NotController(forward_to(&e)),
                RaftError::Fatal(e) => CommitError::Failed(e.to_string()),
            });
        }
        let current = self.sm.image();
        let records = build(&current).map_err(CommitError::Rejected)?;
        if records.is_empty() {
            return Ok(current);
        }
        match self.raft.client_write(MetadataBatch(records)).await {
            Ok(_) => Ok(self.sm.image()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(CommitError::NotController(f.leader_id))
            }
            Err(RaftError::APIError(e)) => Err(CommitError::Failed(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(CommitError::Failed(e.to_string())),
        }
    }

    /// The active controller as this node knows it, with its address.
    pub fn leader(&self) -> Option<Endpoint> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?;
        Some(Endpoint {
            node_id: id,
            addr: node.addr.clone(),
        })
    }

    /// Answers an observer's fetch ([`crate::raft::fetch`]): on the leader,
    /// the committed entries from `req.from_index` (waiting up to
    /// `req.max_wait_ms` for one), or the snapshot if the log no longer
    /// reaches back that far.
    pub async fn fetch(&self, req: &FetchRequest) -> FetchAnswer {
        let leader = match self.leader() {
            Some(l) if l.node_id == self.node_id => l,
            other => return FetchAnswer::NotLeader { leader: other },
        };
        let wait = Duration::from_millis(req.max_wait_ms.min(MAX_FETCH_WAIT_MS));
        let deadline = tokio::time::Instant::now() + wait;
        let mut applied = self.sm.subscribe();
        while self
            .sm
            .last_applied()
            .is_none_or(|l| l.index < req.from_index)
        {
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        // Applied here means committed: only those leave the leader.
        let committed = self.sm.last_applied().map(|l| l.index);
        let (purged, entries) = match committed {
            Some(to) => {
                self.log
                    .read_range(req.from_index, to, req.max_bytes.clamp(1, MAX_FETCH_BYTES))
            }
            None => (None, vec![]),
        };
        let behind_log = purged.is_some_and(|p| req.from_index <= p.index)
            || entries
                .first()
                .is_some_and(|e| e.log_id.index != req.from_index);
        if behind_log {
            if let Some((meta, data)) = self.sm.current_snapshot() {
                return FetchAnswer::Snapshot {
                    leader,
                    committed,
                    meta,
                    data,
                };
            }
        }
        FetchAnswer::Entries {
            leader,
            committed,
            entries,
        }
    }

    /// When `voter` last acknowledged this leader's AppendEntries
    /// (wall-clock ms), if it has.
    pub fn last_contact_ms(&self, voter: u64) -> Option<i64> {
        self.contacts.get(voter)
    }

    /// Before a leader stops: waits (at most `bound`) until a quorum has
    /// acknowledged an AppendEntries sent after everything it applied, so
    /// the followers know the commit index and apply those entries (a
    /// controlled shutdown's own fencing among them). A follower learns the
    /// commit index only from the leader's next AppendEntries; a leader
    /// that stopped right after a commit left it unapplied on the others
    /// until the next leader committed, 1.5 to 2 s later. Nothing on a
    /// follower.
    pub async fn hand_over(&self, bound: Duration) {
        let started = std::time::Instant::now();
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(m.id) || m.replication.as_ref().is_none_or(|r| r.is_empty()) {
            return;
        }
        let _ = self.raft.trigger().heartbeat().await;
        let mut metrics = self.raft.metrics();
        loop {
            let acked_since_start = metrics
                .borrow()
                .millis_since_quorum_ack
                .is_some_and(|ms| u128::from(ms) < started.elapsed().as_millis());
            if acked_since_start || started.elapsed() >= bound {
                return;
            }
            let left = bound.saturating_sub(started.elapsed());
            let _ =
                tokio::time::timeout(left.min(Duration::from_millis(20)), metrics.changed()).await;
        }
    }

    /// Stops this node's Raft (its storage is already durable).
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "metadata quorum shutdown");
        }
    }
}

/// Triggers a snapshot when the settings call for one (openraft itself
/// counts only entries), until the node stops.
async fn snapshot_policy(raft: Raft<MetaRaft>, sm: MetadataStateMachine, s: SnapshotSettings) {
    let tick = s
        .max_interval
        .clamp(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        tokio::time::sleep(tick).await;
        if raft.metrics().borrow().running_state.is_err() {
            return;
        }
        let (bytes, elapsed) = sm.since_snapshot();
        if s.due(bytes, elapsed) && raft.trigger().snapshot().await.is_err() {
            return;
        }
    }
}

fn forward_to(e: &openraft::error::CheckIsLeaderError<u64, BasicNode>) -> Option<u64> {
    match e {
        openraft::error::CheckIsLeaderError::ForwardToLeader(f) => f.leader_id,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_single_node_commits_restarts_and_migrates_the_old_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A data folder of the single-file log, as the release before Raft left it.
        let legacy_id = uuid::Uuid::new_v4();
        {
            let (mut old, _) = MetadataLog::open(&dir.path().join("records.log")).expect("old");
            old.append(&[MetadataRecord::Topic {
                name: "old".into(),
                topic_id: legacy_id,
            }])
            .expect("old append");
        }
        let id = uuid::Uuid::new_v4();
        {
            let q = MetadataQuorum::open(dir.path(), QuorumConfig::single(1), None)
                .await
                .expect("open");
            assert_eq!(q.image().topic("old").map(|t| t.topic_id), Some(legacy_id));
            assert!(dir.path().join("records.log.migrated").exists());
            let image = q
                .commit::<()>(|_| {
                    Ok(vec![MetadataRecord::Topic {
                        name: "new".into(),
                        topic_id: id,
                    }])
                })
                .await
                .expect("commit");
            assert!(image.topic("new").is_some());
            let r = q.commit(|_| Err::<Vec<MetadataRecord>, _>("no")).await;
            assert!(matches!(r, Err(CommitError::Rejected("no"))));
            q.shutdown().await;
        }
        let q = MetadataQuorum::open(dir.path(), QuorumConfig::single(1), None)
            .await
            .expect("reopen");
        let image = q.image();
        assert_eq!(image.topic("new").map(|t| t.topic_id), Some(id));
        assert_eq!(image.topic("old").map(|t| t.topic_id), Some(legacy_id));
        q.shutdown().await;
    }
}
