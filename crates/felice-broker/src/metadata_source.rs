//! Where this node's committed metadata comes from: its own member of the
//! quorum (a controller, or a combined node), or an observer that fetches
//! from the active controller (a node that is only a broker). The broker
//! reads both the same way: the newest image, the channel of images, and
//! the active controller's address.

use felice_metadata::raft::fetch::Endpoint;
use felice_metadata::{MetadataImage, MetadataObserver, MetadataQuorum};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone)]
pub enum MetadataSource {
    Voter(Arc<MetadataQuorum>),
    Observer(Arc<MetadataObserver>),
}

impl MetadataSource {
    pub fn image(&self) -> Arc<MetadataImage> {
        match self {
            MetadataSource::Voter(q) => q.image(),
            MetadataSource::Observer(o) => o.image(),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        match self {
            MetadataSource::Voter(q) => q.subscribe(),
            MetadataSource::Observer(o) => o.subscribe(),
        }
    }

    /// The active controller as this node knows it.
    pub fn leader(&self) -> Option<Endpoint> {
        match self {
            MetadataSource::Voter(q) => q.leader(),
            MetadataSource::Observer(o) => o.leader(),
        }
    }

    /// Waits up to `within` for a known leader other than `previous`.
    pub async fn leader_changed(&self, previous: Option<u64>, within: Duration) {
        let differs =
            move |l: &Option<Endpoint>| l.as_ref().is_some_and(|l| Some(l.node_id) != previous);
        match self {
            MetadataSource::Voter(q) => {
                let _ = q
                    .raft()
                    .wait(Some(within))
                    .metrics(
                        |m| m.current_leader.is_some() && m.current_leader != previous,
                        "a new metadata leader",
                    )
                    .await;
            }
            MetadataSource::Observer(o) => {
                let mut rx = o.watch_leader();
                let _ = tokio::time::timeout(within, rx.wait_for(differs)).await;
            }
        }
    }
}
