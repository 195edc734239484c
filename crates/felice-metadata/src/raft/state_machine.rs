//! [`MetadataStateMachine`]: applies committed Raft entries, in order, to
//! the [`MetadataImage`] and publishes each new image on a watch channel
//! (the same seam the single-file store uses, so the broker's applier does
//! not know which one it follows).
//!
//! Snapshots are the image as records (`MetadataImage::to_records`), with
//! the Raft metadata (last included log id, membership), in one file
//! `snapshot` replaced atomically and fsynced. At open, the state machine
//! starts from that snapshot; openraft then re-applies the log after it.
//!
//! Invariant: the image's offset is the index of the last applied entry and
//! never goes down, except to install a newer snapshot.
//!
//! Concurrency: one mutex around the state; the snapshot builder shares it.
//! Building a snapshot encodes the image under the lock (milliseconds for
//! 10,000 partitions) and writes the file outside it.

use super::{decode_records, encode_records, io_error, Applied, LogId, MetaRaft, StorageError};
use crate::image::MetadataImage;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, SnapshotMeta,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

pub type Meta = SnapshotMeta<u64, BasicNode>;

/// The snapshot file's content.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: Meta,
    /// `encode_records` of the image.
    data: Vec<u8>,
}

#[derive(Clone)]
pub struct MetadataStateMachine {
    inner: Arc<Mutex<State>>,
}

struct State {
    dir: PathBuf,
    image: MetadataImage,
    last_applied: Option<LogId>,
    membership: StoredMembership<u64, BasicNode>,
    snapshot: Option<Arc<StoredSnapshot>>,
    snapshots_built: u64,
    /// Encoded record bytes applied since the last snapshot (built or
    /// installed), and when that snapshot was taken: what the snapshot
    /// policy (`metadata.log.max.*`) reads.
    bytes_since_snapshot: u64,
    snapshot_at: std::time::Instant,
    publish: watch::Sender<Arc<MetadataImage>>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn image_from(records: &[crate::MetadataRecord], last: Option<LogId>) -> MetadataImage {
    let mut image = MetadataImage::default();
    for r in records {
        image.apply_mut(r);
    }
    image.offset = last.map_or(0, |l| l.index);
    image
}

impl MetadataStateMachine {
    /// Opens the state machine in `dir`, starting from its snapshot if there
    /// is one. Blocking.
    pub fn open(dir: &Path) -> std::io::Result<MetadataStateMachine> {
        std::fs::create_dir_all(dir)?;
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let snapshot: Option<StoredSnapshot> = match std::fs::read(dir.join("snapshot")) {
            Ok(bytes) => Some(bincode::deserialize(&bytes).map_err(|e| invalid(e.to_string()))?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let (image, last_applied, membership) = match &snapshot {
            Some(s) => {
                let records = decode_records(&s.data).map_err(invalid)?;
                let last = s.meta.last_log_id;
                (
                    image_from(&records, last),
                    last,
                    s.meta.last_membership.clone(),
                )
            }
            None => (MetadataImage::default(), None, StoredMembership::default()),
        };
        Ok(MetadataStateMachine {
            inner: Arc::new(Mutex::new(State {
                dir: dir.to_path_buf(),
                publish: watch::Sender::new(Arc::new(image.clone())),
                image,
                last_applied,
                membership,
                snapshot: snapshot.map(Arc::new),
                snapshots_built: 0,
                bytes_since_snapshot: 0,
                snapshot_at: std::time::Instant::now(),
            })),
        })
    }

    /// The newest applied image.
    pub fn image(&self) -> Arc<MetadataImage> {
        lock(&self.inner).publish.borrow().clone()
    }

    /// Follows the applied images.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        lock(&self.inner).publish.subscribe()
    }

    /// The last applied entry.
    pub fn last_applied(&self) -> Option<LogId> {
        lock(&self.inner).last_applied
    }

    /// Record bytes applied since the last snapshot, and the time since it
    /// (or since this state machine was opened).
    pub fn since_snapshot(&self) -> (u64, std::time::Duration) {
        let st = lock(&self.inner);
        (st.bytes_since_snapshot, st.snapshot_at.elapsed())
    }

    /// The current snapshot: its metadata and encoded records.
    pub fn current_snapshot(&self) -> Option<(Meta, Vec<u8>)> {
        let st = lock(&self.inner);
        st.snapshot
            .as_ref()
            .map(|s| (s.meta.clone(), s.data.clone()))
    }
}

fn write_snapshot(dir: &Path, s: &StoredSnapshot) -> std::io::Result<()> {
    use std::io::Write;
    let bytes = bincode::serialize(s)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let tmp = dir.join("snapshot.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join("snapshot"))?;
    std::fs::File::open(dir)?.sync_all()
}

impl RaftSnapshotBuilder<MetaRaft> for MetadataStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<MetaRaft>, StorageError> {
        let (stored, dir) = {
            let mut st = lock(&self.inner);
            st.snapshots_built += 1;
            let last = st.last_applied;
            let snapshot_id = match last {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, st.snapshots_built),
                None => format!("none-{}", st.snapshots_built),
            };
            let meta = Meta {
                last_log_id: last,
                last_membership: st.membership.clone(),
                snapshot_id,
            };
            let data = encode_records(&st.image.to_records());
            // Counted from the image this snapshot holds.
            st.bytes_since_snapshot = 0;
            st.snapshot_at = std::time::Instant::now();
            (Arc::new(StoredSnapshot { meta, data }), st.dir.clone())
        };
        let s = stored.clone();
        tokio::task::spawn_blocking(move || write_snapshot(&dir, &s))
            .await
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        lock(&self.inner).snapshot = Some(stored.clone());
        tracing::info!(
            index = stored.meta.last_log_id.map(|l| l.index),
            bytes = stored.data.len(),
            "took a metadata snapshot"
        );
        Ok(Snapshot {
            meta: stored.meta.clone(),
            snapshot: Box::new(Cursor::new(stored.data.clone())),
        })
    }
}

impl RaftStateMachine<MetaRaft> for MetadataStateMachine {
    type SnapshotBuilder = MetadataStateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<u64, BasicNode>), StorageError> {
        let st = lock(&self.inner);
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry<MetaRaft>> + Send,
        I::IntoIter: Send,
    {
        let mut st = lock(&self.inner);
        let mut out = Vec::new();
        for entry in entries {
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(batch) => {
                    for r in &batch.0 {
                        st.image.apply_mut(r);
                    }
                    st.bytes_since_snapshot += encode_records(&batch.0).len() as u64;
                }
                EntryPayload::Membership(m) => {
                    st.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                }
            }
            st.last_applied = Some(entry.log_id);
            st.image.offset = entry.log_id.index;
            out.push(Applied {
                offset: entry.log_id.index,
            });
        }
        if !out.is_empty() {
            let image = Arc::new(st.image.clone());
            st.publish.send_replace(image);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let signature = Some(meta.signature());
        let data = snapshot.into_inner();
        let records = decode_records(&data).map_err(|e| {
            io_error(
                ErrorSubject::Snapshot(signature.clone()),
                ErrorVerb::Read,
                e,
            )
        })?;
        let stored = Arc::new(StoredSnapshot {
            meta: meta.clone(),
            data,
        });
        let dir = lock(&self.inner).dir.clone();
        let s = stored.clone();
        tokio::task::spawn_blocking(move || write_snapshot(&dir, &s))
            .await
            .map_err(|e| {
                io_error(
                    ErrorSubject::Snapshot(signature.clone()),
                    ErrorVerb::Write,
                    e,
                )
            })?
            .map_err(|e| {
                io_error(
                    ErrorSubject::Snapshot(signature.clone()),
                    ErrorVerb::Write,
                    e,
                )
            })?;
        let mut st = lock(&self.inner);
        st.image = image_from(&records, meta.last_log_id);
        st.last_applied = meta.last_log_id;
        st.membership = meta.last_membership.clone();
        st.snapshot = Some(stored);
        st.bytes_since_snapshot = 0;
        st.snapshot_at = std::time::Instant::now();
        let image = Arc::new(st.image.clone());
        st.publish.send_replace(image);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<MetaRaft>>, StorageError> {
        let st = lock(&self.inner);
        Ok(st.snapshot.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::MetadataBatch;
    use crate::MetadataRecord;
    use openraft::{CommittedLeaderId, Membership};

    fn topic(index: u64) -> Entry<MetaRaft> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(MetadataBatch(vec![
                MetadataRecord::Topic {
                    name: format!("t{index}"),
                    topic_id: uuid::Uuid::from_u128(u128::from(index)),
                },
                MetadataRecord::Partition {
                    topic_id: uuid::Uuid::from_u128(u128::from(index)),
                    partition: 0,
                    replicas: vec![1],
                    isr: vec![1],
                    leader: 1,
                    leader_epoch: 0,
                    partition_epoch: 0,
                },
            ])),
        }
    }

    #[tokio::test]
    async fn applies_publishes_and_reopens_from_its_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sm = MetadataStateMachine::open(dir.path()).expect("open");
        let mut images = sm.subscribe();
        let membership = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
            payload: EntryPayload::Membership(Membership::new(
                vec![[1u64].into_iter().collect()],
                None,
            )),
        };
        let applied = sm
            .apply(vec![membership, topic(2), topic(3)])
            .await
            .expect("apply");
        assert_eq!(
            applied.iter().map(|a| a.offset).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(images.has_changed().expect("sender alive"));
        let image = images.borrow_and_update().clone();
        assert_eq!((image.offset, image.topic_count()), (3, 2));
        let snapshot = sm.build_snapshot().await.expect("snapshot");
        assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(3));
        sm.apply(vec![topic(4)])
            .await
            .expect("apply after snapshot");
        drop(sm);

        // Reopened: the snapshot's state; openraft re-applies entry 4 itself.
        let mut sm = MetadataStateMachine::open(dir.path()).expect("reopen");
        let (last, members) = sm.applied_state().await.expect("state");
        assert_eq!(last.map(|l| l.index), Some(3));
        assert_eq!(members.log_id().map(|l| l.index), Some(1));
        let image = sm.image();
        assert_eq!((image.offset, image.topic_count()), (3, 2));
        assert!(image.topic("t3").is_some());
        assert_eq!(
            image.to_records(),
            MetadataStateMachine::open(dir.path())
                .expect("again")
                .image()
                .to_records()
        );
    }
}
