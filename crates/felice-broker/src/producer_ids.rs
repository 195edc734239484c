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

use crate::controller_channel::ControllerChannel;
use felice_metadata::NodeId;
use kafka_protocol::messages::{AllocateProducerIdsRequest, BrokerId};
use tokio::sync::Mutex;

/// Ids per block, as Kafka's `ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE`.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// Largest epoch a producer may be bumped to before it needs a new id
/// (Kafka: an epoch of `Short.MAX_VALUE - 1` is exhausted).
pub const MAX_BUMPABLE_EPOCH: i16 = i16::MAX - 1;

#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
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

    /// A new id, asking the active controller for a new block first when
    /// the current one is used up (AllocateProducerIds).
    pub async fn next(
        &self,
        controller: &ControllerChannel,
        node_id: NodeId,
    ) -> Result<i64, ProducerIdError> {
        let mut block = self.block.lock().await;
        if block.next >= block.end {
            let req = AllocateProducerIdsRequest::default()
                .with_broker_id(BrokerId(node_id))
                .with_broker_epoch(-1);
            let resp = controller
                .call(req, 0)
                .await
                .map_err(|e| ProducerIdError::Metadata(e.to_string()))?;
            if resp.error_code != 0 {
                return Err(ProducerIdError::Metadata(format!(
                    "the controller answered error {}",
                    resp.error_code
                )));
            }
            let start = resp.producer_id_start.0;
            *block = Block {
                next: start,
                end: start + i64::from(resp.producer_id_len),
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
        use crate::controller::ControllerContext;
        use felice_metadata::{MetadataQuorum, QuorumConfig};
        let dir = tempfile::tempdir().expect("tempdir");
        let mut seen = std::collections::HashSet::new();
        for _restart in 0..3 {
            let quorum = MetadataQuorum::open(dir.path(), QuorumConfig::single(1), None)
                .await
                .expect("open");
            let config = crate::config::BrokerConfig::for_test(dir.path());
            let quorum = std::sync::Arc::new(quorum);
            let ctx =
                ControllerContext::new(quorum.clone(), config.clone(), crate::clock::system());
            let channel = ControllerChannel::new(
                &config,
                crate::metadata_source::MetadataSource::Voter(quorum),
                Some(std::sync::Arc::new(ctx)),
            );
            let ids = ProducerIdManager::default();
            assert_eq!(ids.try_next(), None, "no block before the first commit");
            for _ in 0..(PRODUCER_ID_BLOCK_SIZE + 10) {
                let id = ids.next(&channel, 1).await.expect("id");
                assert!(seen.insert(id), "id {id} handed out twice");
            }
            let quorum = &channel.context().expect("a controller").quorum;
            assert_eq!(quorum.image().next_producer_id % PRODUCER_ID_BLOCK_SIZE, 0);
            quorum.shutdown().await;
        }
        assert_eq!(seen.len() as i64, 3 * (PRODUCER_ID_BLOCK_SIZE + 10));
    }
}
