//! [`MetadataObserver`]: the metadata of a node that is only a broker. It
//! follows the committed log by fetching from the active controller
//! ([`crate::raft::fetch`]) and applies what it gets to the same state
//! machine a voter runs, so the broker above it sees the same images
//! through the same channel.
//!
//! Durability: the observer keeps only its snapshot (`snapshot` in its
//! folder, written by the same policy as a voter's). What it applied after
//! the snapshot is fetched again after a restart; nothing here is a source
//! of truth, the voters are.
//!
//! Invariant: entries are applied in index order with no gap, and only
//! committed ones (the leader sends nothing else); a snapshot is installed
//! only if it is newer than what is applied.

use crate::image::MetadataImage;
use crate::quorum::SnapshotSettings;
use crate::raft::fetch::{Endpoint, FetchAnswer};
use crate::raft::MetadataStateMachine;
use openraft::storage::RaftStateMachine;
use openraft::RaftSnapshotBuilder;
use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

pub struct MetadataObserver {
    sm: tokio::sync::Mutex<MetadataStateMachine>,
    reader: MetadataStateMachine,
    snapshots: SnapshotSettings,
    leader: watch::Sender<Option<Endpoint>>,
    /// The leader's committed index as of the last answer + 1 (0: none yet).
    leader_committed: AtomicU64,
}

/// What one fetch answer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Entries applied (possibly none: nothing new within the wait).
    Applied(usize),
    /// A snapshot replaced the image.
    Snapshot,
    /// Nothing applied: the answer named another leader, or did not follow
    /// on from what is applied (fetch again from [`MetadataObserver::next_index`]).
    Redirected,
}

impl MetadataObserver {
    /// Opens the observer's state in `dir` (from its snapshot, if any).
    /// Blocking.
    pub fn open(dir: &Path, snapshots: SnapshotSettings) -> std::io::Result<MetadataObserver> {
        let sm = MetadataStateMachine::open(dir)?;
        Ok(MetadataObserver {
            reader: sm.clone(),
            sm: tokio::sync::Mutex::new(sm),
            snapshots,
            leader: watch::Sender::new(None),
            leader_committed: AtomicU64::new(0),
        })
    }

    /// The index of the next entry to fetch.
    pub fn next_index(&self) -> u64 {
        self.reader.last_applied().map_or(0, |l| l.index + 1)
    }

    /// Whether everything the leader had committed at its last answer is
    /// applied here (false before any answer).
    pub fn caught_up(&self) -> bool {
        let committed = self.leader_committed.load(Ordering::Acquire);
        committed > 0 && self.next_index() >= committed
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.reader.image()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.reader.subscribe()
    }

    /// The active controller, as the last answer named it.
    pub fn leader(&self) -> Option<Endpoint> {
        self.leader.borrow().clone()
    }

    pub fn watch_leader(&self) -> watch::Receiver<Option<Endpoint>> {
        self.leader.subscribe()
    }

    /// Forgets the leader (it stopped answering).
    pub fn lose_leader(&self) {
        self.leader.send_replace(None);
    }

    /// Applies one fetch answer.
    pub async fn apply(&self, answer: FetchAnswer) -> Result<Progress, crate::raft::StorageError> {
        let named = answer.leader().cloned();
        if *self.leader.borrow() != named {
            self.leader.send_replace(named);
        }
        let mut sm = self.sm.lock().await;
        let progress = match answer {
            FetchAnswer::NotLeader { .. } => Progress::Redirected,
            FetchAnswer::Entries {
                committed, entries, ..
            } => {
                self.note_committed(committed);
                let next = self.next_index();
                let fresh: Vec<_> = entries
                    .into_iter()
                    .filter(|e| e.log_id.index >= next)
                    .collect();
                let follows = fresh
                    .iter()
                    .enumerate()
                    .all(|(i, e)| e.log_id.index == next + i as u64);
                if !follows {
                    return Ok(Progress::Redirected);
                }
                let n = fresh.len();
                if n > 0 {
                    sm.apply(fresh).await?;
                }
                Progress::Applied(n)
            }
            FetchAnswer::Snapshot {
                committed,
                meta,
                data,
                ..
            } => {
                self.note_committed(committed);
                let newer = meta
                    .last_log_id
                    .is_some_and(|l| l.index + 1 > self.next_index());
                if !newer {
                    return Ok(Progress::Redirected);
                }
                let bytes = data.len();
                sm.install_snapshot(&meta, Box::new(Cursor::new(data)))
                    .await?;
                tracing::info!(
                    offset = meta.last_log_id.map_or(0, |l| l.index),
                    bytes,
                    "installed the metadata snapshot from the active controller"
                );
                Progress::Snapshot
            }
        };
        let (bytes, elapsed) = sm.since_snapshot();
        if self.snapshots.due(bytes, elapsed) {
            sm.build_snapshot().await?;
        }
        Ok(progress)
    }

    fn note_committed(&self, committed: Option<u64>) {
        if let Some(c) = committed {
            self.leader_committed.store(c + 1, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::{MetadataQuorum, QuorumConfig};
    use crate::raft::fetch::FetchRequest;
    use crate::MetadataRecord;
    use std::time::Duration;

    async fn create(q: &MetadataQuorum, name: &str) {
        let name = name.to_string();
        q.commit::<()>(|_| {
            Ok(vec![MetadataRecord::Topic {
                name,
                topic_id: uuid::Uuid::new_v4(),
            }])
        })
        .await
        .expect("commit");
    }

    /// Fetches until the observer has everything the leader committed.
    async fn catch_up(q: &MetadataQuorum, o: &MetadataObserver) -> Vec<Progress> {
        let mut seen = Vec::new();
        for _ in 0..100 {
            let req = FetchRequest {
                replica_id: 9,
                from_index: o.next_index(),
                max_wait_ms: 0,
                max_bytes: 1,
            };
            let p = o.apply(q.fetch(&req).await).await.expect("apply");
            seen.push(p);
            if o.caught_up() {
                return seen;
            }
        }
        panic!("the observer did not catch up: {seen:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_observer_follows_the_log_and_a_new_one_starts_from_the_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = QuorumConfig::single(1);
        cfg.snapshots.max_entries = 5;
        let q = MetadataQuorum::open(&dir.path().join("leader"), cfg, None)
            .await
            .expect("open");
        let obs_dir = dir.path().join("observer");
        let o = MetadataObserver::open(&obs_dir, SnapshotSettings::default()).expect("observer");
        assert!(!o.caught_up());
        create(&q, "a").await;
        let seen = catch_up(&q, &o).await;
        assert!(
            seen.iter().all(|p| matches!(p, Progress::Applied(_))),
            "{seen:?}"
        );
        assert!(o.image().topic("a").is_some());
        assert_eq!(o.leader().map(|l| l.node_id), Some(1));

        // A long poll returns as soon as the entry it waits for commits.
        let from = o.next_index();
        let poll = FetchRequest {
            replica_id: 9,
            from_index: from,
            max_wait_ms: 5_000,
            max_bytes: 1 << 20,
        };
        let (answer, ()) = tokio::join!(q.fetch(&poll), create(&q, "b"));
        match answer {
            FetchAnswer::Entries { entries, .. } => assert_eq!(entries[0].log_id.index, from),
            other => panic!("{other:?}"),
        }

        // Enough entries for a snapshot, which purges the log before it.
        for i in 0..12 {
            create(&q, &format!("t{i}")).await;
        }
        let from_start = FetchRequest {
            replica_id: 9,
            from_index: 0,
            max_wait_ms: 0,
            max_bytes: 1,
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            while !matches!(q.fetch(&from_start).await, FetchAnswer::Snapshot { .. }) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("a snapshot in time");
        let fresh = MetadataObserver::open(&dir.path().join("new"), SnapshotSettings::default())
            .expect("new observer");
        let seen = catch_up(&q, &fresh).await;
        assert_eq!(seen[0], Progress::Snapshot, "{seen:?}");
        assert_eq!(fresh.image().topic_count(), 14);
        assert_eq!(fresh.image().offset, q.image().offset);

        // The first observer, behind the purge too, also catches up.
        catch_up(&q, &o).await;
        assert_eq!(o.image().topic_count(), 14);
        q.shutdown().await;
    }
}
