//! Broker lifecycle on the active controller, as KRaft's: registration
//! (BrokerRegistration, key 62), heartbeats (BrokerHeartbeat, key 63),
//! fencing a broker that missed its heartbeats for
//! `broker.session.timeout.ms`, and unfencing it once its heartbeats show it
//! caught up with the metadata log. Fencing moves leadership away from the
//! broker (to another in-sync replica, or to no leader: -1, which Metadata
//! answers LEADER_NOT_AVAILABLE); unfencing gives leaderless partitions
//! whose ISR holds the broker back to it. Each change is records in the
//! metadata log, with new leader and partition epochs.
//!
//! The heartbeat times live in the active controller's memory only (as in
//! Kafka): a new leader gives every broker a full session from the moment
//! it took over before fencing anyone.
//!
//! **The liveness probe** (Felice's, not Kafka's) shortens the wait when a
//! broker's process is gone: a broker whose connection to this controller
//! closed, that has not been heard from since this controller took over, or
//! whose heartbeat is late, is probed with a TCP connect to its registered
//! listener. A refused connection (nothing listens there: the process died,
//! kill -9 included) fences it at once instead of after
//! `broker.session.timeout.ms`. Anything else (accepted, timed out,
//! unreachable) proves nothing and leaves the session rule to decide: a
//! paused or cut-off broker is still fenced only when its session runs out.
//! Probes are at most one per broker per [`PROBE_EVERY`].
//!
//! Bounds: at most [`crate::limits::MAX_BROKERS`] registered brokers; one
//! heartbeat, lost-connection and probe entry per registered broker.

use crate::controller::{commit_error, ControllerContext};
use felice_metadata::{MetadataImage, MetadataRecord, NodeId, PartitionImage, TopicImage};
use kafka_protocol::messages::{
    BrokerHeartbeatRequest, BrokerHeartbeatResponse, BrokerRegistrationRequest,
    BrokerRegistrationResponse,
};
use kafka_protocol::ResponseError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long a broker that this controller has not heard from since it took
/// over may stay silent before it is probed.
pub const PROBE_NEW_TERM_AFTER: Duration = Duration::from_millis(100);
/// How late past `broker.heartbeat.interval.ms` a heartbeat may be before
/// the broker is probed.
pub const PROBE_LATE_HEARTBEAT_AFTER: Duration = Duration::from_millis(500);
/// At most one probe of a broker per this long.
pub const PROBE_EVERY: Duration = Duration::from_millis(1000);
/// A probe's connect gives up after this long (and proves nothing).
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

/// When each broker was last heard from, on this (active) controller.
#[derive(Default)]
pub struct Heartbeats {
    state: Mutex<HeartbeatState>,
}

#[derive(Default)]
struct HeartbeatState {
    last_contact: HashMap<NodeId, Instant>,
    /// The Raft term this node leads, and since when (grace for everyone).
    leading: Option<(u64, Instant)>,
    /// Brokers whose connection to this controller closed, and when.
    lost: HashMap<NodeId, Instant>,
    /// When each broker was last probed.
    probed: HashMap<NodeId, Instant>,
    /// For a broker in controlled shutdown: the metadata offset it must
    /// have applied (its fencing, leadership moved away) before it is told
    /// to go.
    shutdown_at: HashMap<NodeId, u64>,
}

impl Heartbeats {
    fn lock(&self) -> std::sync::MutexGuard<'_, HeartbeatState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn touch(&self, node: NodeId) {
        self.lock().last_contact.insert(node, Instant::now());
    }

    /// A (re-)registration: a new process, no shutdown pending.
    fn registered(&self, node: NodeId) {
        let mut s = self.lock();
        s.last_contact.insert(node, Instant::now());
        s.shutdown_at.remove(&node);
    }

    /// Whether `node` was heard from within `session`.
    fn has_valid_session(&self, node: NodeId, session: Duration) -> bool {
        self.lock()
            .last_contact
            .get(&node)
            .is_some_and(|t| t.elapsed() < session)
    }

    /// A connection that carried `node`'s heartbeats or metadata fetches
    /// closed: a hint that its process may be gone.
    pub fn connection_lost(&self, node: NodeId) {
        self.lock().lost.insert(node, Instant::now());
    }

    /// The offset `node` must have applied before it shuts down: the first
    /// one seen fenced for it (`now`), kept until it registers again.
    fn shutdown_offset(&self, node: NodeId, now: u64) -> u64 {
        *self.lock().shutdown_at.entry(node).or_insert(now)
    }

    /// Whether `node` was heard from after `t`.
    fn heard_since(&self, node: NodeId, t: Instant) -> bool {
        self.lock().last_contact.get(&node).is_some_and(|c| *c > t)
    }

    /// The brokers to probe now, while this node leads `term` (see the
    /// module comment); each is marked probed.
    fn suspects(&self, term: u64, brokers: &[NodeId], heartbeat: Duration) -> Vec<NodeId> {
        let mut s = self.lock();
        let Some((t, since)) = s.leading else {
            return vec![];
        };
        if t != term {
            return vec![];
        }
        let now = Instant::now();
        // Forget what is about brokers no longer registered and unfenced.
        s.lost.retain(|b, _| brokers.contains(b));
        s.probed.retain(|b, _| brokers.contains(b));
        let mut out = Vec::new();
        for b in brokers {
            let heard = s.last_contact.get(b).copied().filter(|c| *c >= since);
            let suspect = match heard {
                None => now.duration_since(since) >= PROBE_NEW_TERM_AFTER,
                Some(c) => {
                    s.lost.get(b).is_some_and(|l| *l >= c)
                        || now.duration_since(c) >= heartbeat + PROBE_LATE_HEARTBEAT_AFTER
                }
            };
            let recently = s
                .probed
                .get(b)
                .is_some_and(|p| now.duration_since(*p) < PROBE_EVERY);
            if suspect && !recently {
                s.probed.insert(*b, now);
                out.push(*b);
            }
        }
        out
    }

    /// The brokers whose session ran out, while this node leads `term`.
    fn expired(&self, term: u64, brokers: &[NodeId], session: Duration) -> Vec<NodeId> {
        let mut s = self.lock();
        let since = match s.leading {
            Some((t, since)) if t == term => since,
            _ => {
                // Newly leading: every broker gets a full session from now.
                let now = Instant::now();
                s.leading = Some((term, now));
                s.last_contact.clear();
                s.lost.clear();
                s.probed.clear();
                s.shutdown_at.clear();
                return vec![];
            }
        };
        brokers
            .iter()
            .copied()
            .filter(|b| {
                let last = s.last_contact.get(b).copied().unwrap_or(since).max(since);
                last.elapsed() >= session
            })
            .collect()
    }
}

/// The partition changes that fence (`fence = true`) or unfence `node`, as
/// KRaft's `handleBrokerFenced` and `handleBrokerUnfenced`:
/// - fencing takes the broker out of every ISR it is in, except where it is
///   the last member (the ISR never empties: that replica is the one with
///   all the data, so the partition waits for it, unclean election being
///   off); where it led, the new leader is the first replica, in replica
///   order, that is in the new ISR and unfenced, or none;
/// - unfencing gives it back the leaderless partitions whose ISR holds it.
///
/// The leader epoch goes up only when the leader changes (an ISR-only
/// change must not fence the followers' fetches, KAFKA-15021); the
/// partition epoch goes up at every change.
pub fn leadership_records(
    image: &MetadataImage,
    node: NodeId,
    fence: bool,
    unclean: impl Fn(&TopicImage) -> bool,
) -> Vec<MetadataRecord> {
    let unfenced = |b: &NodeId| *b != node && image.brokers.get(b).is_some_and(|x| !x.fenced);
    let mut out = Vec::new();
    for t in image.topics() {
        for p in &t.partitions {
            let change = if fence && p.isr.contains(&node) {
                let isr: Vec<NodeId> = if p.isr.len() > 1 {
                    p.isr.iter().copied().filter(|b| *b != node).collect()
                } else {
                    p.isr.clone()
                };
                let leader = if p.leader == node {
                    elect_leader(&p.replicas, &isr, unfenced)
                } else {
                    p.leader
                };
                match elect_unclean(p, leader, unfenced, || unclean(t)) {
                    Some(u) => Some((u, vec![u])),
                    None => Some((leader, isr)),
                }
            } else if !fence && p.leader < 0 && p.isr.contains(&node) {
                Some((node, p.isr.clone()))
            } else if !fence && p.leader < 0 && p.replicas.contains(&node) && unclean(t) {
                // Unclean election: the returning replica leads alone.
                Some((node, vec![node]))
            } else {
                None
            };
            if let Some((leader, isr)) = change {
                out.extend(partition_change(t.topic_id, p, leader, isr));
            }
        }
    }
    out
}

/// The record that gives `p` (of topic `topic_id`) `leader` and `isr`, or
/// none when both are what it has. The leader epoch goes up only with the
/// leader (an ISR-only change must not fence the followers' fetches,
/// KAFKA-15021); the partition epoch goes up at every change.
pub fn partition_change(
    topic_id: felice_metadata::TopicId,
    p: &PartitionImage,
    leader: NodeId,
    isr: Vec<NodeId>,
) -> Option<MetadataRecord> {
    if leader == p.leader && isr == p.isr {
        return None;
    }
    Some(MetadataRecord::Partition {
        topic_id,
        partition: p.partition,
        replicas: p.replicas.clone(),
        isr,
        leader,
        leader_epoch: if leader == p.leader {
            p.leader_epoch
        } else {
            p.leader_epoch + 1
        },
        partition_epoch: p.partition_epoch + 1,
    })
}

/// Unclean election (`unclean.leader.election.enable`, Kafka's
/// `PartitionChangeBuilder.electLeader` when no ISR member can lead): when
/// the clean election found no leader and the topic allows it, the first
/// replica, in replica order, that is `acceptable` leads, alone in the ISR.
/// Records it had not may be lost: that is what the setting accepts.
pub fn elect_unclean(
    p: &PartitionImage,
    clean: NodeId,
    acceptable: impl Fn(&NodeId) -> bool,
    allowed: impl FnOnce() -> bool,
) -> Option<NodeId> {
    if clean >= 0 || !allowed() {
        return None;
    }
    p.replicas.iter().copied().find(|r| acceptable(r))
}

/// Whether `t` may elect a leader outside its ISR: its
/// `unclean.leader.election.enable` override, or the controller's broker
/// default (false, as Kafka's).
pub fn unclean_allowed(config: &crate::BrokerConfig, t: &TopicImage) -> bool {
    t.configs
        .get("unclean.leader.election.enable")
        .map(String::as_str)
        .or(config.value("unclean.leader.election.enable"))
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Leaderless partitions of topics that allow unclean election get the
/// first unfenced replica as leader, alone in the ISR (the setting may have
/// been turned on after the partition lost its last ISR member). Runs on
/// the active controller now and then.
pub async fn unclean_elections(ctx: &ControllerContext) {
    let metrics = ctx.quorum.raft().metrics().borrow().clone();
    if metrics.current_leader != Some(ctx.config.node_id as u64) {
        return;
    }
    let config = &ctx.config;
    let needs = |image: &MetadataImage| {
        image
            .topics()
            .into_iter()
            .any(|t| t.partitions.iter().any(|p| p.leader < 0) && unclean_allowed(config, t))
    };
    if !needs(&ctx.quorum.image()) {
        return;
    }
    let r = ctx
        .quorum
        .commit::<std::convert::Infallible>(|image| {
            let acceptable = |b: &NodeId| image.brokers.get(b).is_some_and(|x| !x.fenced);
            let mut records = Vec::new();
            for t in image.topics() {
                if !unclean_allowed(config, t) {
                    continue;
                }
                for p in t.partitions.iter().filter(|p| p.leader < 0) {
                    if let Some(leader) = elect_unclean(p, -1, acceptable, || true) {
                        tracing::warn!(topic = %t.name, partition = p.partition, leader, "unclean leader election: records outside the old ISR may be lost");
                        records.extend(partition_change(t.topic_id, p, leader, vec![leader]));
                    }
                }
            }
            Ok(records)
        })
        .await;
    if let Err(e) = r {
        tracing::debug!(error = %e, "unclean elections not committed");
    }
}

/// A clean election (Kafka's `PartitionChangeBuilder.electLeader` with
/// unclean election off): the first of `replicas`, in their order, that is
/// in `isr` and `acceptable` (registered and unfenced); -1 if none is.
pub fn elect_leader(
    replicas: &[NodeId],
    isr: &[NodeId],
    acceptable: impl Fn(&NodeId) -> bool,
) -> NodeId {
    replicas
        .iter()
        .copied()
        .find(|r| isr.contains(r) && acceptable(r))
        .unwrap_or(-1)
}

/// BrokerRegistration: a new incarnation gets a new epoch and starts
/// fenced; the same incarnation registering again keeps its epoch.
pub async fn register_broker(
    ctx: &ControllerContext,
    req: BrokerRegistrationRequest,
) -> BrokerRegistrationResponse {
    let node_id = req.broker_id.0;
    let listener = req
        .listeners
        .iter()
        .find(|l| l.name.as_str() == ctx.config.listener.name)
        .or(req.listeners.first());
    let Some(listener) = listener else {
        return BrokerRegistrationResponse::default()
            .with_error_code(ResponseError::InvalidRequest.code())
            .with_broker_epoch(-1);
    };
    let host = listener.host.to_string();
    let port = i32::from(listener.port);
    let rack = req.rack.as_ref().map(|r| r.to_string());
    let cluster_id = req.cluster_id.to_string();
    let incarnation_id = req.incarnation_id;
    let session = Duration::from_millis(ctx.config.broker_session_timeout_ms);
    let mut epoch = -1;
    let r = ctx
        .quorum
        .commit::<ResponseError>(|image| {
            // As KRaft: a broker of another cluster is refused.
            if image
                .cluster_id
                .as_ref()
                .is_some_and(|id| *id != cluster_id)
            {
                return Err(ResponseError::InconsistentClusterId);
            }
            let current = image.brokers.get(&node_id);
            if current.is_none() && image.brokers.len() >= crate::limits::MAX_BROKERS {
                tracing::warn!(
                    broker = node_id,
                    limit = crate::limits::MAX_BROKERS,
                    "refusing a broker past the cluster's limit"
                );
                return Err(ResponseError::InvalidRegistration);
            }
            if let Some(b) = current {
                if b.incarnation_id == Some(incarnation_id) {
                    epoch = b.epoch;
                    if b.host == host && b.port == port && b.rack == rack {
                        return Ok(vec![]);
                    }
                } else if !b.fenced
                    && b.incarnation_id.is_some()
                    && ctx.heartbeats.has_valid_session(node_id, session)
                {
                    // Another live process holds this id.
                    return Err(ResponseError::DuplicateBrokerRegistration);
                }
            }
            let new_incarnation = epoch < 0;
            if new_incarnation {
                epoch = image.offset as i64 + 1;
            }
            let registration = MetadataRecord::BrokerRegistration {
                node_id,
                incarnation_id,
                broker_epoch: epoch,
                host: host.clone(),
                port,
                rack: rack.clone(),
            };
            let mut records = vec![registration];
            // A new process of a node that was not fenced first (kill -9,
            // or a restart quicker than its session): as KRaft's
            // handleBrokerUncleanShutdown, it leaves every ISR and leads
            // nothing, exactly as if fenced, before it may lead again. Its
            // log may have lost what it had not flushed.
            if new_incarnation && current.is_some_and(|b| b.incarnation_id.is_some()) {
                let mut after = image.clone();
                after.apply_mut(&records[0]);
                records.extend(leadership_records(&after, node_id, true, |t| {
                    unclean_allowed(&ctx.config, t)
                }));
            }
            Ok(records)
        })
        .await;
    match r {
        Ok(_) => {
            ctx.heartbeats.registered(node_id);
            BrokerRegistrationResponse::default()
                .with_error_code(0)
                .with_broker_epoch(epoch)
        }
        Err(felice_metadata::CommitError::Rejected(code)) => BrokerRegistrationResponse::default()
            .with_error_code(code.code())
            .with_broker_epoch(-1),
        Err(e) => BrokerRegistrationResponse::default()
            .with_error_code(commit_error(&e).code())
            .with_broker_epoch(-1),
    }
}

/// BrokerHeartbeat: keeps the session; unfences a fenced broker once it has
/// caught up with the metadata log up to its registration; a broker that
/// wants to shut down is fenced (its partitions lose their leader first, the
/// controlled shutdown of replication factor 1) and told to go.
pub async fn heartbeat(
    ctx: &ControllerContext,
    req: BrokerHeartbeatRequest,
) -> BrokerHeartbeatResponse {
    let node_id = req.broker_id.0;
    let epoch = req.broker_epoch;
    let image = ctx.quorum.image();
    let Some(b) = image.brokers.get(&node_id).filter(|b| b.epoch == epoch) else {
        return BrokerHeartbeatResponse::default()
            .with_error_code(ResponseError::StaleBrokerEpoch.code())
            .with_is_fenced(true);
    };
    ctx.heartbeats.touch(node_id);
    let caught_up = req.current_metadata_offset >= b.epoch;
    let want_fenced = req.want_fence || req.want_shut_down;
    let r = if b.fenced && !want_fenced && caught_up {
        change_fencing(ctx, node_id, epoch, false).await
    } else if !b.fenced && want_fenced {
        change_fencing(ctx, node_id, epoch, true).await
    } else {
        Ok(())
    };
    if let Err(code) = r {
        return BrokerHeartbeatResponse::default()
            .with_error_code(code.code())
            .with_is_fenced(b.fenced);
    }
    let image = ctx.quorum.image();
    let fenced = image.brokers.get(&node_id).is_none_or(|b| b.fenced);
    // As KRaft: a broker in controlled shutdown goes once it is fenced and
    // has applied that (its leadership moved away), so it stops leading
    // before it stops serving.
    let should_shut_down = req.want_shut_down
        && fenced
        && req.current_metadata_offset
            >= ctx.heartbeats.shutdown_offset(node_id, image.offset) as i64;
    BrokerHeartbeatResponse::default()
        .with_error_code(0)
        .with_is_caught_up(caught_up)
        .with_is_fenced(fenced)
        .with_should_shut_down(should_shut_down)
}

/// Commits a fence or unfence of `node` at `epoch`, with its leadership
/// changes, in one entry.
async fn change_fencing(
    ctx: &ControllerContext,
    node: NodeId,
    epoch: i64,
    fence: bool,
) -> Result<(), ResponseError> {
    let r = ctx
        .quorum
        .commit::<std::convert::Infallible>(|image| {
            let current = image.brokers.get(&node);
            if current.is_none_or(|b| b.epoch != epoch || b.fenced == fence) {
                return Ok(vec![]);
            }
            let mut records = vec![if fence {
                MetadataRecord::FenceBroker {
                    node_id: node,
                    broker_epoch: epoch,
                }
            } else {
                MetadataRecord::UnfenceBroker {
                    node_id: node,
                    broker_epoch: epoch,
                }
            }];
            // Leadership is chosen against the image with the change.
            let mut after = image.clone();
            after.apply_mut(&records[0]);
            records.extend(leadership_records(&after, node, fence, |t| {
                unclean_allowed(&ctx.config, t)
            }));
            Ok(records)
        })
        .await;
    match r {
        Ok(_) => {
            tracing::info!(
                broker = node,
                epoch,
                "broker {}",
                if fence { "fenced" } else { "unfenced" }
            );
            Ok(())
        }
        Err(felice_metadata::CommitError::Rejected(never)) => match never {},
        Err(e) => Err(commit_error(&e)),
    }
}

/// Fences every unfenced broker whose session ran out, and probes the
/// suspects of the liveness probe. Runs on every node; does something only
/// on the active controller.
pub async fn fence_stale_brokers(ctx: &Arc<ControllerContext>) {
    let metrics = ctx.quorum.raft().metrics().borrow().clone();
    if metrics.current_leader != Some(ctx.config.node_id as u64) {
        return;
    }
    let image = ctx.quorum.image();
    let live: Vec<(NodeId, i64)> = image
        .unfenced_brokers()
        .filter(|b| b.incarnation_id.is_some())
        .map(|b| (b.node_id, b.epoch))
        .collect();
    let ids: Vec<NodeId> = live.iter().map(|(id, _)| *id).collect();
    let session = Duration::from_millis(ctx.config.broker_session_timeout_ms);
    for node in ctx.heartbeats.expired(metrics.current_term, &ids, session) {
        let Some((_, epoch)) = live.iter().find(|(id, _)| *id == node) else {
            continue;
        };
        tracing::warn!(
            broker = node,
            "no heartbeat within broker.session.timeout.ms; fencing"
        );
        if let Err(code) = change_fencing(ctx, node, *epoch, true).await {
            tracing::warn!(broker = node, ?code, "could not fence");
        }
    }
    let heartbeat = Duration::from_millis(ctx.config.broker_heartbeat_interval_ms);
    for node in ctx
        .heartbeats
        .suspects(metrics.current_term, &ids, heartbeat)
    {
        let Some(b) = image.brokers.get(&node) else {
            continue;
        };
        let (host, port, epoch) = (b.host.clone(), b.port, b.epoch);
        let ctx = ctx.clone();
        tokio::spawn(async move { probe(&ctx, node, epoch, host, port).await });
    }
}

/// The liveness probe of `node` (module comment): fences it, at `epoch`,
/// when its listener refuses a connection and it was not heard from since
/// the probe began.
async fn probe(ctx: &ControllerContext, node: NodeId, epoch: i64, host: String, port: i32) {
    let Ok(port) = u16::try_from(port) else {
        return;
    };
    let started = Instant::now();
    let attempt = tokio::time::timeout(
        PROBE_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await;
    let refused =
        matches!(&attempt, Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused);
    if !refused || ctx.heartbeats.heard_since(node, started) {
        return;
    }
    tracing::warn!(
        broker = node,
        %host,
        port,
        "the broker's listener refuses connections; fencing without waiting for its session"
    );
    if let Err(code) = change_fencing(ctx, node, epoch, true).await {
        tracing::warn!(broker = node, ?code, "could not fence");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn image() -> MetadataImage {
        let t = Uuid::new_v4();
        let mut image = MetadataImage::default();
        for r in [
            MetadataRecord::BrokerRegistration {
                node_id: 1,
                incarnation_id: Uuid::new_v4(),
                broker_epoch: 1,
                host: "h".into(),
                port: 1,
                rack: None,
            },
            MetadataRecord::BrokerRegistration {
                node_id: 2,
                incarnation_id: Uuid::new_v4(),
                broker_epoch: 2,
                host: "h".into(),
                port: 2,
                rack: None,
            },
            MetadataRecord::UnfenceBroker {
                node_id: 1,
                broker_epoch: 1,
            },
            MetadataRecord::UnfenceBroker {
                node_id: 2,
                broker_epoch: 2,
            },
            MetadataRecord::Topic {
                name: "t".into(),
                topic_id: t,
            },
            // partition 0: leader 1 alone; partition 1: leader 1, ISR [1, 2].
            MetadataRecord::Partition {
                topic_id: t,
                partition: 0,
                replicas: vec![1],
                isr: vec![1],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
            },
            MetadataRecord::Partition {
                topic_id: t,
                partition: 1,
                replicas: vec![1, 2],
                isr: vec![1, 2],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
            },
            // partition 2: leader 2, 1 a follower in the ISR.
            MetadataRecord::Partition {
                topic_id: t,
                partition: 2,
                replicas: vec![2, 1],
                isr: vec![2, 1],
                leader: 2,
                leader_epoch: 4,
                partition_epoch: 7,
            },
        ] {
            image.apply_mut(&r);
        }
        image
    }

    /// With `unclean.leader.election.enable`, a partition whose last ISR
    /// member is fenced goes to the first unfenced replica outside the ISR,
    /// alone in the new ISR (a new leader epoch); without it, it waits. An
    /// unfenced replica of a leaderless partition that allows it leads.
    #[test]
    fn unclean_election_takes_a_replica_outside_the_isr_when_allowed() {
        let mut image = image();
        let topic_id = image.topic("t").expect("topic").topic_id;
        // Partition 1 on [1, 2] with 1 alone in its ISR.
        image.apply_mut(&MetadataRecord::Partition {
            topic_id,
            partition: 1,
            replicas: vec![1, 2],
            isr: vec![1],
            leader: 1,
            leader_epoch: 3,
            partition_epoch: 5,
        });
        image.apply_mut(&MetadataRecord::FenceBroker {
            node_id: 1,
            broker_epoch: 1,
        });
        let clean = leadership_records(&image, 1, true, |_| false);
        let p1 = |records: &[MetadataRecord]| {
            records.iter().find_map(|r| match r {
                MetadataRecord::Partition {
                    partition: 1,
                    leader,
                    isr,
                    leader_epoch,
                    ..
                } => Some((*leader, isr.clone(), *leader_epoch)),
                _ => None,
            })
        };
        assert_eq!(p1(&clean), Some((-1, vec![1], 4)), "clean: it waits for 1");
        let unclean = leadership_records(&image, 1, true, |_| true);
        assert_eq!(
            p1(&unclean),
            Some((2, vec![2], 4)),
            "unclean: 2 leads alone"
        );
        // Already leaderless, then a replica returns: it leads when allowed.
        for r in &clean {
            image.apply_mut(r);
        }
        image.apply_mut(&MetadataRecord::FenceBroker {
            node_id: 2,
            broker_epoch: 2,
        });
        image.apply_mut(&MetadataRecord::UnfenceBroker {
            node_id: 2,
            broker_epoch: 2,
        });
        assert_eq!(p1(&leadership_records(&image, 2, false, |_| false)), None);
        assert_eq!(
            p1(&leadership_records(&image, 2, false, |_| true)),
            Some((2, vec![2], 5))
        );
    }

    #[test]
    fn fencing_moves_leadership_and_unfencing_restores_leaderless_partitions() {
        let mut image = image();
        image.apply_mut(&MetadataRecord::FenceBroker {
            node_id: 1,
            broker_epoch: 1,
        });
        let fenced = leadership_records(&image, 1, true, |_| false);
        for r in &fenced {
            image.apply_mut(r);
        }
        let t = image.topic("t").expect("topic");
        // Alone in its ISR: no leader, the ISR keeps it. Otherwise: the other.
        assert_eq!(
            (t.partitions[0].leader, t.partitions[0].isr.clone()),
            (-1, vec![1])
        );
        assert_eq!(
            (t.partitions[1].leader, t.partitions[1].isr.clone()),
            (2, vec![2])
        );
        assert!(t.partitions[..2].iter().all(|p| p.leader_epoch == 1));
        // Where it only followed: out of the ISR, and the leader's epoch
        // stays (its followers' fetches must not be fenced).
        let p2 = &t.partitions[2];
        assert_eq!((p2.leader, p2.isr.clone()), (2, vec![2]));
        assert_eq!((p2.leader_epoch, p2.partition_epoch), (4, 8));
        image.apply_mut(&MetadataRecord::UnfenceBroker {
            node_id: 1,
            broker_epoch: 1,
        });
        for r in leadership_records(&image, 1, false, |_| false) {
            image.apply_mut(&r);
        }
        let t = image.topic("t").expect("topic");
        assert_eq!(t.partitions[0].leader, 1);
        assert_eq!(t.partitions[0].leader_epoch, 2);
        assert_eq!(
            t.partitions[1].leader, 2,
            "a partition with a leader keeps it"
        );
    }

    #[test]
    fn the_new_leader_is_the_first_acceptable_replica_in_replica_order() {
        let acceptable = |b: &NodeId| *b != 3;
        assert_eq!(elect_leader(&[3, 2, 1], &[1, 2, 3], acceptable), 2);
        assert_eq!(elect_leader(&[3, 1, 2], &[2, 3], acceptable), 2);
        assert_eq!(elect_leader(&[3], &[3], acceptable), -1);
        assert_eq!(
            elect_leader(&[1, 2], &[3], |_| true),
            -1,
            "only ISR members"
        );
    }

    #[test]
    fn a_fence_of_an_older_epoch_changes_nothing() {
        let mut image = image();
        image.apply_mut(&MetadataRecord::FenceBroker {
            node_id: 1,
            broker_epoch: 0,
        });
        assert!(!image.brokers[&1].fenced);
    }
}
