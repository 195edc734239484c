//! Raft's messages between metadata nodes, over a transport this crate does
//! not own: [`RaftTransport`] carries an encoded request to a node and brings
//! back the encoded answer. The broker crate implements it over TCP with
//! Kafka framing on the controller listener; tests implement it in memory
//! (with partitions they can cut).
//!
//! Encoding: bincode of openraft's request and of `Result<response, error>`,
//! so a remote Raft error travels back as itself. [`serve`] is the receiving
//! side: decode, hand to the local Raft, encode the answer.

use super::MetaRaft;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Waits between calls to a peer that could not be reached, doubling from
/// the first to the second, as Kafka's `reconnect.backoff.ms` (50) and
/// `reconnect.backoff.max.ms` (1000). Without it, openraft retries a
/// refused AppendEntries at once: a dead voter cost its peers thousands of
/// connection attempts a second, enough CPU to starve a 2-core machine.
pub const RECONNECT_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(50), Duration::from_millis(1000));

/// The three Raft calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaftRpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

/// A transport failure: the node could not be reached, or did not answer in
/// time. Raft retries after a backoff ([`RECONNECT_BACKOFF`]); nothing else
/// needs to know why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

pub type TransportFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, TransportError>> + Send>>;

/// Carries one encoded Raft request to `target` (at `node.addr`) and returns
/// the encoded answer ([`serve`]'s output on that node).
pub trait RaftTransport: Send + Sync + 'static {
    fn call(
        &self,
        target: u64,
        node: &BasicNode,
        rpc: RaftRpc,
        body: Vec<u8>,
        timeout: Duration,
    ) -> TransportFuture;
}

/// When each peer last answered an AppendEntries with success (wall-clock
/// ms): what DescribeQuorum shows as a voter's last fetch, Raft's push
/// standing in for Kafka's pull. At most one entry per voter.
#[derive(Clone, Default)]
pub struct Contacts(Arc<std::sync::Mutex<std::collections::HashMap<u64, i64>>>);

impl Contacts {
    pub fn get(&self, node: u64) -> Option<i64> {
        match self.0.lock() {
            Ok(m) => m.get(&node).copied(),
            Err(p) => p.into_inner().get(&node).copied(),
        }
    }

    fn record(&self, node: u64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        match self.0.lock() {
            Ok(mut m) => m.insert(node, now),
            Err(p) => p.into_inner().insert(node, now),
        };
    }
}

/// openraft's network factory over a [`RaftTransport`].
#[derive(Clone)]
pub struct Network {
    transport: Arc<dyn RaftTransport>,
    contacts: Contacts,
}

impl Network {
    pub fn new(transport: Arc<dyn RaftTransport>, contacts: Contacts) -> Network {
        Network {
            transport,
            contacts,
        }
    }
}

/// One peer.
pub struct Peer {
    transport: Arc<dyn RaftTransport>,
    target: u64,
    node: BasicNode,
    contacts: Contacts,
}

impl RaftNetworkFactory<MetaRaft> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer {
            transport: self.transport.clone(),
            target,
            node: node.clone(),
            contacts: self.contacts.clone(),
        }
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, TransportError> {
    bincode::serialize(v).map_err(|e| TransportError(format!("encode: {e}")))
}

impl Peer {
    async fn call<Req, Resp, E>(
        &self,
        rpc: RaftRpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let network = |e: TransportError| RPCError::Network(NetworkError::new(&e));
        let body = encode(req).map_err(network)?;
        // Unreachable, not Network: openraft backs off (see `backoff`).
        let answer = self
            .transport
            .call(self.target, &self.node, rpc, body, option.hard_ttl())
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let result: Result<Resp, RaftError<u64, E>> = bincode::deserialize(&answer)
            .map_err(|e| network(TransportError(format!("decode {rpc:?} answer: {e}"))))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<MetaRaft> for Peer {
    /// Used after an unreachable peer; reset by the next successful call.
    fn backoff(&self) -> Backoff {
        let (first, max) = RECONNECT_BACKOFF;
        Backoff::new(std::iter::successors(Some(first), move |d| {
            Some((*d * 2).min(max))
        }))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<MetaRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let answer = self.call(RaftRpc::AppendEntries, &rpc, &option).await;
        if matches!(answer, Ok(AppendEntriesResponse::Success)) {
            self.contacts.record(self.target);
        }
        answer
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<MetaRaft>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call(RaftRpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(RaftRpc::Vote, &rpc, &option).await
    }
}

/// Answers one encoded Raft request with the local node; the answer is the
/// encoded `Result` the caller's [`Peer`] decodes. A request that does not
/// decode is a transport error (the caller's Raft retries).
pub async fn serve(
    raft: &Raft<MetaRaft>,
    rpc: RaftRpc,
    body: &[u8],
) -> Result<Vec<u8>, TransportError> {
    let bad = |e: bincode::Error| TransportError(format!("decode {rpc:?} request: {e}"));
    match rpc {
        RaftRpc::AppendEntries => {
            let req: AppendEntriesRequest<MetaRaft> = bincode::deserialize(body).map_err(bad)?;
            encode(&raft.append_entries(req).await)
        }
        RaftRpc::Vote => {
            let req: VoteRequest<u64> = bincode::deserialize(body).map_err(bad)?;
            encode(&raft.vote(req).await)
        }
        RaftRpc::InstallSnapshot => {
            let req: InstallSnapshotRequest<MetaRaft> = bincode::deserialize(body).map_err(bad)?;
            encode(&raft.install_snapshot(req).await)
        }
    }
}
