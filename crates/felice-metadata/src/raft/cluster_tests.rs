//! Metadata nodes over an in-memory transport whose links a test can cut:
//! election, replication, failover when the leader is cut off, catching up
//! after the cut heals, and a new node catching up from a snapshot after the
//! log before it was purged. Every wait is bounded and event-driven
//! (openraft's metrics), never a sleep.

use super::network::{self, Network, RaftRpc, RaftTransport, TransportError, TransportFuture};
use super::*;
use crate::MetadataRecord;
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Option<Duration> = Some(Duration::from_secs(20));

#[derive(Default)]
struct MemNet {
    nodes: Mutex<HashMap<u64, Raft<MetaRaft>>>,
    /// Nodes cut off from every other node.
    isolated: Mutex<HashSet<u64>>,
}

struct MemTransport {
    from: u64,
    net: Arc<MemNet>,
}

impl RaftTransport for MemTransport {
    fn call(
        &self,
        target: u64,
        _node: &BasicNode,
        rpc: RaftRpc,
        body: Vec<u8>,
        _timeout: Duration,
    ) -> TransportFuture {
        let cut = {
            let isolated = self.net.isolated.lock().expect("lock");
            isolated.contains(&self.from) || isolated.contains(&target)
        };
        let raft = self.net.nodes.lock().expect("lock").get(&target).cloned();
        Box::pin(async move {
            if cut {
                return Err(TransportError(format!("link to {target} cut")));
            }
            let raft = raft.ok_or_else(|| TransportError(format!("no node {target}")))?;
            network::serve(&raft, rpc, &body).await
        })
    }
}

struct Node {
    raft: Raft<MetaRaft>,
    sm: MetadataStateMachine,
    _dir: tempfile::TempDir,
}

fn config() -> Arc<Config> {
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 300,
        election_timeout_max: 600,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(5),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Default::default()
    };
    Arc::new(config.validate().expect("config"))
}

async fn start(net: &Arc<MemNet>, id: u64) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = FileLogStore::open(&dir.path().join("log")).expect("log");
    let sm = MetadataStateMachine::open(&dir.path().join("sm")).expect("sm");
    let transport = Arc::new(MemTransport {
        from: id,
        net: net.clone(),
    });
    let raft = Raft::new(
        id,
        config(),
        Network::new(transport, Default::default()),
        log,
        sm.clone(),
    )
    .await
    .expect("raft");
    net.nodes.lock().expect("lock").insert(id, raft.clone());
    Node {
        raft,
        sm,
        _dir: dir,
    }
}

fn topic(name: &str) -> MetadataBatch {
    MetadataBatch(vec![MetadataRecord::Topic {
        name: name.into(),
        topic_id: uuid::Uuid::new_v4(),
    }])
}

async fn leader(nodes: &BTreeMap<u64, Node>, among: &[u64]) -> u64 {
    let first = &nodes[&among[0]].raft;
    let m = first
        .wait(WAIT)
        .metrics(
            |m| m.current_leader.is_some_and(|l| among.contains(&l)),
            "a leader among the reachable nodes",
        )
        .await
        .expect("leader");
    m.current_leader.expect("leader")
}

async fn has_topic(node: &Node, name: &str) {
    let mut images = node.sm.subscribe();
    tokio::time::timeout(
        WAIT.expect("bound"),
        images.wait_for(|i| i.topic(name).is_some()),
    )
    .await
    .unwrap_or_else(|_| panic!("topic {name} never applied"))
    .expect("state machine alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_replicate_fail_over_heal_and_a_new_node_catches_up_from_a_snapshot() {
    let net = Arc::new(MemNet::default());
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(id, start(&net, id).await);
    }
    let members: BTreeMap<u64, BasicNode> = (1..=3)
        .map(|id| (id, BasicNode::new(format!("node-{id}"))))
        .collect();
    nodes[&1]
        .raft
        .initialize(members)
        .await
        .expect("initialize");

    // Election and replication.
    let first = leader(&nodes, &[1, 2, 3]).await;
    let applied = nodes[&first]
        .raft
        .client_write(topic("a"))
        .await
        .expect("write");
    assert!(applied.data.offset > 0);
    for n in nodes.values() {
        has_topic(n, "a").await;
    }

    // The leader is cut off: the other two elect a leader and keep writing.
    net.isolated.lock().expect("lock").insert(first);
    let rest: Vec<u64> = (1..=3).filter(|&id| id != first).collect();
    let second = leader(&nodes, &rest).await;
    assert_ne!(second, first);
    for i in 0..8 {
        nodes[&second]
            .raft
            .client_write(topic(&format!("b{i}")))
            .await
            .expect("write after failover");
    }
    for id in &rest {
        has_topic(&nodes[id], "b7").await;
    }

    // The cut heals: the old leader follows and catches up.
    net.isolated.lock().expect("lock").clear();
    has_topic(&nodes[&first], "b7").await;

    // Snapshots were taken and the log purged (5 entries per snapshot, none
    // kept), so a new node can only catch up from a snapshot.
    nodes[&second]
        .raft
        .wait(WAIT)
        .metrics(|m| m.purged.is_some(), "the leader purged its log")
        .await
        .expect("purged");
    nodes.insert(4, start(&net, 4).await);
    nodes[&second]
        .raft
        .add_learner(4, BasicNode::new("node-4"), true)
        .await
        .expect("add learner");
    has_topic(&nodes[&4], "b7").await;
    assert_eq!(
        nodes[&4].sm.image().to_records(),
        nodes[&second].sm.image().to_records()
    );
    for n in nodes.values() {
        n.raft.shutdown().await.expect("shutdown");
    }
}
