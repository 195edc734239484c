//! How a node that is not a voter follows the metadata log: it fetches the
//! committed entries from the active controller, as Kafka's observers fetch
//! `__cluster_metadata` (KIP-595). Only committed entries ever leave the
//! leader, so an observer never applies one that could be taken back, and it
//! needs no vote, no log of its own and no place in the Raft membership.
//!
//! An observer that is further behind than the leader's log reaches (the
//! leader purged those entries into its snapshot) gets the snapshot, then
//! fetches the entries after it.
//!
//! Encoding: bincode of [`FetchRequest`] and [`FetchAnswer`], carried by the
//! broker crate under a private API key of the controller listener.

use super::state_machine::Meta;
use super::MetaRaft;
use openraft::Entry;
use serde::{Deserialize, Serialize};

/// Longest a fetch waits on the leader for a new committed entry.
pub const MAX_FETCH_WAIT_MS: u64 = 10_000;
/// Most entry bytes one fetch answer carries (a snapshot is sent whole).
pub const MAX_FETCH_BYTES: u64 = 8 << 20;

/// A controller's address on the controller listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub node_id: u64,
    pub addr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchRequest {
    /// The fetching node (shown by DescribeQuorum among the observers).
    pub replica_id: i32,
    /// The first entry wanted: the observer's last applied index + 1.
    pub from_index: u64,
    /// How long the leader may wait for an entry at `from_index`.
    pub max_wait_ms: u64,
    pub max_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FetchAnswer {
    /// The node asked is not the leader; the leader it knows of, if any.
    NotLeader { leader: Option<Endpoint> },
    /// Committed entries from `from_index` (none if nothing new came within
    /// the wait), and the leader's last committed index.
    Entries {
        leader: Endpoint,
        committed: Option<u64>,
        entries: Vec<Entry<MetaRaft>>,
    },
    /// The leader's snapshot: `from_index` is before its log.
    Snapshot {
        leader: Endpoint,
        committed: Option<u64>,
        meta: Meta,
        data: Vec<u8>,
    },
}

impl FetchAnswer {
    pub fn leader(&self) -> Option<&Endpoint> {
        match self {
            FetchAnswer::NotLeader { leader } => leader.as_ref(),
            FetchAnswer::Entries { leader, .. } | FetchAnswer::Snapshot { leader, .. } => {
                Some(leader)
            }
        }
    }
}
