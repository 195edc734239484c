//! Producer ids for InitProducerId, handed out from blocks of
//! [`PRODUCER_ID_BLOCK_SIZE`] that are recorded in the metadata log
//! (`ProducerIds` records, KRaft's `ProducerIdsRecord`): a block is durable
//! before its first id is given, so no id is ever handed out twice, across
//! restarts too. This is the broker's half of KRaft's AllocateProducerIds;
//! with a controller quorum the block comes from the controller instead of a
//! local commit.
//!
//! Concurrency: one mutex around the current block; a request that finds the
//! block used up commits the next one (an fsync) under it, from a blocking
//! thread.

use felice_metadata::{CommitError, MetadataRecord, MetadataStore, NodeId};
use std::sync::Mutex;

/// Ids per block, as Kafka's `ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE`.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// Largest epoch a producer may be bumped to before it needs a new id
/// (Kafka: an epoch of `Short.MAX_VALUE - 1` is exhausted).
pub const MAX_BUMPABLE_EPOCH: i16 = i16::MAX - 1;

#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    #[error("producer ids are exhausted")]
    Exhausted,
    #[error("cannot record a producer id block: {0}")]
    Metadata(#[from] felice_metadata::MetadataLogError),
}

#[derive(Debug, Default)]
struct Block {
    next: i64,
    end: i64,
}

#[derive(Debug, Default)]
pub struct ProducerIdManager {
    block: Mutex<Block>,
}

impl ProducerIdManager {
    /// A new id when the current block has one left, without blocking: an
    /// async task may call it (`None` also while another request is
    /// recording the next block under the lock).
    pub fn try_next(&self) -> Option<i64> {
        let mut block = match self.block.try_lock() {
            Ok(block) => block,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        (block.next < block.end).then(|| {
            block.next += 1;
            block.next - 1
        })
    }

    /// A new id, recording a new block first when the current one is used up
    /// (blocking: the metadata commit fsyncs).
    pub fn next(&self, metadata: &MetadataStore, node_id: NodeId) -> Result<i64, ProducerIdError> {
        let mut block = self.block.lock().unwrap_or_else(|p| p.into_inner());
        if block.next >= block.end {
            let mut start = 0;
            let committed = metadata.commit(|image| {
                start = image.next_producer_id;
                let next = start
                    .checked_add(PRODUCER_ID_BLOCK_SIZE)
                    .ok_or(ProducerIdError::Exhausted)?;
                Ok(vec![MetadataRecord::ProducerIds {
                    broker_id: node_id,
                    // No broker epochs before broker registration with a
                    // controller exists; -1 is Kafka's "unknown".
                    broker_epoch: -1,
                    next_producer_id: next,
                }])
            });
            match committed {
                Ok(_) => {}
                Err(CommitError::Rejected(e)) => return Err(e),
                Err(CommitError::Log(e)) => return Err(e.into()),
            }
            *block = Block {
                next: start,
                end: start + PRODUCER_ID_BLOCK_SIZE,
            };
            tracing::debug!(start, "producer id block recorded");
        }
        block.next += 1;
        Ok(block.next - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_blocks_and_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("records.log");
        let mut seen = std::collections::HashSet::new();
        for _restart in 0..3 {
            let store = MetadataStore::open(&path).expect("open");
            let ids = ProducerIdManager::default();
            assert_eq!(ids.try_next(), None, "no block before the first commit");
            for _ in 0..(PRODUCER_ID_BLOCK_SIZE + 10) {
                let id = ids.next(&store, 1).expect("id");
                assert!(seen.insert(id), "id {id} handed out twice");
            }
            assert_eq!(store.image().next_producer_id % PRODUCER_ID_BLOCK_SIZE, 0);
        }
        assert_eq!(seen.len() as i64, 3 * (PRODUCER_ID_BLOCK_SIZE + 10));
    }
}
