//! Producer ids for InitProducerId, handed out from blocks of
//! [`PRODUCER_ID_BLOCK_SIZE`] that are recorded in the metadata log
//! (`ProducerIds` records, KRaft's `ProducerIdsRecord`): a block is durable
//! before its first id is given, so no id is ever handed out twice, across
//! restarts too. This is the broker's half of KRaft's AllocateProducerIds;
//! with a controller quorum the block comes from the controller instead of a
//! local commit.
//!
//! Concurrency: one async mutex around the current block; a request that
//! finds the block used up commits the next one under it (a metadata commit:
//! a Raft round), and the others wait for it without holding a thread.

use felice_metadata::{CommitError, MetadataQuorum, MetadataRecord, NodeId};
use tokio::sync::Mutex;

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
    Metadata(String),
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
        let mut block = self.block.try_lock().ok()?;
        (block.next < block.end).then(|| {
            block.next += 1;
            block.next - 1
        })
    }

    /// A new id, recording a new block first when the current one is used up.
    pub async fn next(
        &self,
        metadata: &MetadataQuorum,
        node_id: NodeId,
    ) -> Result<i64, ProducerIdError> {
        let mut block = self.block.lock().await;
        if block.next >= block.end {
            let mut start = 0;
            let committed = metadata
                .commit(|image| {
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
                })
                .await;
            match committed {
                Ok(_) => {}
                Err(CommitError::Rejected(e)) => return Err(e),
                Err(e) => return Err(ProducerIdError::Metadata(e.to_string())),
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ids_are_unique_across_blocks_and_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut seen = std::collections::HashSet::new();
        for _restart in 0..3 {
            let store =
                MetadataQuorum::open(dir.path(), felice_metadata::QuorumConfig::single(1), None)
                    .await
                    .expect("open");
            let ids = ProducerIdManager::default();
            assert_eq!(ids.try_next(), None, "no block before the first commit");
            for _ in 0..(PRODUCER_ID_BLOCK_SIZE + 10) {
                let id = ids.next(&store, 1).await.expect("id");
                assert!(seen.insert(id), "id {id} handed out twice");
            }
            assert_eq!(store.image().next_producer_id % PRODUCER_ID_BLOCK_SIZE, 0);
            store.shutdown().await;
        }
        assert_eq!(seen.len() as i64, 3 * (PRODUCER_ID_BLOCK_SIZE + 10));
    }
}
