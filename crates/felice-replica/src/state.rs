//! One partition's replication state on one broker, as Kafka's `Partition`
//! (leader side) and `Replica` (one follower seen from the leader) keep it.
//!
//! Pure: no I/O, no clock, no randomness. The caller (the broker's
//! partition) feeds events with `now_ms`:
//! - the controller's decisions: [`PartitionState::become_leader`],
//!   [`PartitionState::become_follower`], [`PartitionState::on_isr_committed`]
//!   (an AlterPartition answer, or the same change seen in the metadata log),
//!   [`PartitionState::on_isr_rejected`];
//! - the log: [`PartitionState::on_append`] (the leader's own log end offset
//!   moved), and on a follower [`PartitionState::on_follower_log`];
//! - followers' fetches: [`PartitionState::on_follower_fetch`];
//! - time: [`PartitionState::on_tick`], every `replica.lag.time.max.ms / 2`
//!   as Kafka's `isr-expiration` task.
//!
//! and gets back [`Effects`]: the high watermark moved (wake the fetch and
//! acks=all waiters), an ISR change to send to the controller.
//!
//! Kafka's rules, kept here:
//! - **Caught up** (`Replica.updateFetchState`): a follower that fetched
//!   from the leader's log end offset is caught up at the fetch time; one
//!   that fetched from at least the leader's log end offset *of its previous
//!   fetch* was caught up at that previous fetch time.
//! - **High watermark** (`maybeIncrementLeaderHW`): the smallest log end
//!   offset over the *maximal* ISR (the committed ISR plus a pending
//!   expansion; a pending shrink still counts the old members) and over the
//!   followers that are caught up and eligible, so that a follower about to
//!   join is not left behind (KIP-841). It never goes back while this broker
//!   leads, and, as in Kafka 4, it does not move at all while the committed
//!   ISR is smaller than the effective `min.insync.replicas`.
//! - **Effective min ISR** (`effectiveMinIsr`): `min.insync.replicas`, but
//!   at most the number of replicas, so a replication-factor-1 topic with
//!   `min.insync.replicas=2` still takes acks=all writes.
//! - **Shrink** (`maybeShrinkIsr`): an ISR member that has not been caught up
//!   for `replica.lag.time.max.ms` leaves.
//! - **Expand** (`maybeExpandIsr`): a follower joins once its log end offset
//!   reaches both the high watermark and the offset where this leader's
//!   epoch began, if it is eligible (registered, unfenced, not shutting
//!   down, with the broker epoch the metadata knows: KIP-841, KIP-903).
//! - **One change in flight**: an ISR change is proposed only when no other
//!   awaits the controller.
//! - **acks=all** (`checkEnoughReplicasReachOffset`): a produce completes once
//!   the high watermark passes it, with NOT_ENOUGH_REPLICAS_AFTER_APPEND if
//!   the ISR shrank below `min.insync.replicas` meanwhile.
//!
//! Invariants, checked by [`PartitionState::check_invariants`] (the seeded
//! simulation calls it after every step): `high_watermark <= log_end_offset`;
//! the leader epoch never goes down; a leader is in its committed ISR and in
//! every ISR it proposes; the ISR is a subset of the replicas.

use felice_wire::{LeaderEpoch, Offset};
use std::collections::BTreeMap;

/// A broker's `node.id`.
pub type BrokerId = i32;

/// The settings the leader's bookkeeping reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// `replica.lag.time.max.ms` (Kafka's default 30000).
    pub replica_lag_time_max_ms: i64,
    /// The topic's `min.insync.replicas` (default 1).
    pub min_insync_replicas: usize,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            replica_lag_time_max_ms: 30_000,
            min_insync_replicas: 1,
        }
    }
}

/// The controller's word on a partition, as the metadata image holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderAndIsr {
    pub leader_epoch: LeaderEpoch,
    /// Bumped at every change of the partition (leader, ISR, replicas).
    pub partition_epoch: i32,
    pub leader: Option<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub replicas: Vec<BrokerId>,
}

/// An ISR change for the controller (AlterPartition), based on the
/// partition epoch the leader knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: i32,
    pub new_isr: Vec<BrokerId>,
    /// Per member of `new_isr`, the broker epoch its last fetch carried
    /// (KIP-903: the controller refuses a member that has registered again
    /// since, as its log may have lost what that fetch showed); -1 for the
    /// leader itself (the caller knows its own) and for a follower not yet
    /// heard from in this tenure (the controller then checks nothing).
    pub broker_epochs: Vec<i64>,
}

/// The broker epochs of `isr`'s members as their last fetches carried them.
fn fetch_epochs(isr: &[BrokerId], followers: &BTreeMap<BrokerId, Follower>) -> Vec<i64> {
    isr.iter()
        .map(|r| followers.get(r).map_or(-1, |f| f.broker_epoch))
        .collect()
}

/// What the caller must do after an event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// The high watermark moved to this offset: wake the waiters.
    pub hw_moved: Option<Offset>,
    /// Send this ISR change to the controller.
    pub propose_isr: Option<IsrProposal>,
}

/// Where an acks=all produce request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The high watermark has not reached it yet.
    Waiting,
    /// Replicated to the ISR: answer NONE.
    Done,
    /// The high watermark passed it, but the ISR is now smaller than
    /// `min.insync.replicas`: NOT_ENOUGH_REPLICAS_AFTER_APPEND.
    NotEnoughReplicasAfterAppend,
    /// This broker no longer leads: NOT_LEADER_OR_FOLLOWER.
    NotLeader,
}

/// Errors in Kafka's terms; the broker maps each to its protocol code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("NOT_LEADER_OR_FOLLOWER: this broker does not lead the partition")]
    NotLeader,
    #[error("NOT_LEADER_OR_FOLLOWER: broker {0} is not a replica of the partition")]
    NotAReplica(BrokerId),
    #[error("OFFSET_OUT_OF_RANGE: fetch offset {fetch} is past the log end offset {leo}")]
    FetchBeyondEnd { fetch: Offset, leo: Offset },
    #[error("FENCED_LEADER_EPOCH: epoch {given} is older than {current}")]
    FencedLeaderEpoch {
        given: LeaderEpoch,
        current: LeaderEpoch,
    },
    #[error("UNKNOWN_LEADER_EPOCH: epoch {given} is newer than {current}")]
    UnknownLeaderEpoch {
        given: LeaderEpoch,
        current: LeaderEpoch,
    },
    #[error("NOT_ENOUGH_REPLICAS: ISR of {isr} is below min.insync.replicas {min}")]
    NotEnoughReplicas { isr: usize, min: usize },
    /// The controller's state is older than what this broker applied.
    #[error("stale partition state: leader epoch {given} below {current}")]
    Stale {
        given: LeaderEpoch,
        current: LeaderEpoch,
    },
    /// The controller made this broker leader without it in the ISR.
    #[error("leader {0} is not in the ISR {1:?}")]
    LeaderNotInIsr(BrokerId, Vec<BrokerId>),
}

/// One follower, as the leader sees it (Kafka's `ReplicaState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Follower {
    /// The offset it last fetched from: all below it is in its log.
    log_end_offset: Offset,
    /// When it was last caught up with the leader (ms); `None`: never.
    last_caught_up_ms: Option<i64>,
    /// The leader's log end offset at its previous fetch.
    last_fetch_leader_leo: Offset,
    last_fetch_ms: i64,
    /// Its broker epoch at its last fetch (-1: unknown).
    broker_epoch: i64,
    /// Whether it may join the ISR (the caller's view of the metadata at
    /// its last fetch: registered, unfenced, matching broker epoch).
    eligible: bool,
}

impl Follower {
    fn reset(now_ms: i64, in_sync: bool) -> Follower {
        Follower {
            log_end_offset: Offset::UNKNOWN,
            last_caught_up_ms: in_sync.then_some(now_ms),
            last_fetch_leader_leo: Offset::UNKNOWN,
            last_fetch_ms: 0,
            broker_epoch: -1,
            eligible: false,
        }
    }

    /// Kafka's `ReplicaState.isCaughtUp`.
    fn is_caught_up(&self, leader_leo: Offset, now_ms: i64, lag_ms: i64) -> bool {
        self.log_end_offset == leader_leo
            || self
                .last_caught_up_ms
                .is_some_and(|at| now_ms - at <= lag_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    Leader {
        /// The log end offset when this epoch began: a follower joins the
        /// ISR only past it (it then holds every batch of this epoch's start).
        epoch_start_offset: Offset,
        followers: BTreeMap<BrokerId, Follower>,
        /// The ISR change awaiting the controller, if any.
        pending: Option<IsrProposal>,
    },
    Follower {
        leader: Option<BrokerId>,
    },
}

/// The replication state of one partition on this broker.
#[derive(Debug, Clone)]
pub struct PartitionState {
    local: BrokerId,
    config: ReplicationConfig,
    leader_epoch: LeaderEpoch,
    partition_epoch: i32,
    replicas: Vec<BrokerId>,
    /// The committed ISR, as the controller last said.
    isr: Vec<BrokerId>,
    high_watermark: Offset,
    log_end_offset: Offset,
    role: Role,
}

impl PartitionState {
    /// A partition as opened from disk: its log end offset and its
    /// checkpointed high watermark (at most the log end offset), following
    /// no one until the controller's word arrives.
    pub fn new(
        local: BrokerId,
        config: ReplicationConfig,
        log_end_offset: Offset,
        high_watermark: Offset,
    ) -> PartitionState {
        PartitionState {
            local,
            config,
            leader_epoch: LeaderEpoch::UNKNOWN,
            partition_epoch: -1,
            replicas: Vec::new(),
            isr: Vec::new(),
            high_watermark: high_watermark.min(log_end_offset),
            log_end_offset,
            role: Role::Follower { leader: None },
        }
    }

    /// This broker.
    pub fn local(&self) -> BrokerId {
        self.local
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader { .. })
    }

    /// The leader this broker follows (`None` when it leads or none is known).
    pub fn leader(&self) -> Option<BrokerId> {
        match &self.role {
            Role::Leader { .. } => Some(self.local),
            Role::Follower { leader } => *leader,
        }
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.leader_epoch
    }

    pub fn partition_epoch(&self) -> i32 {
        self.partition_epoch
    }

    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    pub fn log_end_offset(&self) -> Offset {
        self.log_end_offset
    }

    /// The committed ISR.
    pub fn isr(&self) -> &[BrokerId] {
        &self.isr
    }

    pub fn replicas(&self) -> &[BrokerId] {
        &self.replicas
    }

    pub fn config(&self) -> ReplicationConfig {
        self.config
    }

    pub fn set_config(&mut self, config: ReplicationConfig) {
        self.config = config;
    }

    /// The ISR change awaiting the controller.
    pub fn pending_isr(&self) -> Option<&IsrProposal> {
        match &self.role {
            Role::Leader { pending, .. } => pending.as_ref(),
            Role::Follower { .. } => None,
        }
    }

    /// The committed ISR plus a pending expansion (a pending shrink still
    /// counts the members it would remove): the replicas the high watermark
    /// waits for (Kafka's `maximalIsr`).
    pub fn maximal_isr(&self) -> Vec<BrokerId> {
        let mut all = self.isr.clone();
        if let Some(p) = self.pending_isr() {
            for r in &p.new_isr {
                if !all.contains(r) {
                    all.push(*r);
                }
            }
        }
        all
    }

    /// A follower's log end offset as the leader last saw it.
    pub fn follower_log_end_offset(&self, replica: BrokerId) -> Option<Offset> {
        match &self.role {
            Role::Leader { followers, .. } => followers.get(&replica).map(|f| f.log_end_offset),
            Role::Follower { .. } => None,
        }
    }

    /// The controller made this broker the leader (`state.leader` is this
    /// broker). A new leader epoch starts a new tenure: followers' positions
    /// are forgotten until they fetch again, and the epoch's start offset is
    /// the log end offset now. The same epoch with a newer partition epoch is
    /// an ISR or replica change ([`PartitionState::on_isr_committed`]).
    pub fn become_leader(
        &mut self,
        state: &LeaderAndIsr,
        now_ms: i64,
    ) -> Result<Effects, StateError> {
        self.check_not_stale(state.leader_epoch)?;
        if !state.isr.contains(&self.local) {
            return Err(StateError::LeaderNotInIsr(self.local, state.isr.clone()));
        }
        let same_tenure = self.is_leader() && state.leader_epoch == self.leader_epoch;
        if same_tenure {
            return Ok(self.on_isr_committed(
                state.leader_epoch,
                state.partition_epoch,
                &state.isr,
                &state.replicas,
                now_ms,
            ));
        }
        let followers = state
            .replicas
            .iter()
            .filter(|r| **r != self.local)
            .map(|r| (*r, Follower::reset(now_ms, state.isr.contains(r))))
            .collect();
        self.leader_epoch = state.leader_epoch;
        self.partition_epoch = state.partition_epoch;
        self.isr = state.isr.clone();
        self.replicas = state.replicas.clone();
        self.role = Role::Leader {
            epoch_start_offset: self.log_end_offset,
            followers,
            pending: None,
        };
        Ok(Effects {
            hw_moved: self.maybe_increment_hw(now_ms),
            propose_isr: None,
        })
    }

    /// The controller made another broker (or none) the leader.
    pub fn become_follower(&mut self, state: &LeaderAndIsr) -> Result<(), StateError> {
        self.check_not_stale(state.leader_epoch)?;
        self.leader_epoch = state.leader_epoch;
        self.partition_epoch = self.partition_epoch.max(state.partition_epoch);
        self.isr = state.isr.clone();
        self.replicas = state.replicas.clone();
        self.role = Role::Follower {
            leader: state.leader.filter(|l| *l != self.local),
        };
        Ok(())
    }

    fn check_not_stale(&self, given: LeaderEpoch) -> Result<(), StateError> {
        if given < self.leader_epoch {
            return Err(StateError::Stale {
                given,
                current: self.leader_epoch,
            });
        }
        Ok(())
    }

    /// The ISR the controller committed for this leader's epoch (an
    /// AlterPartition answer, or the partition record in the metadata log).
    /// An older partition epoch is ignored: the answer to a proposal can
    /// arrive after the record it made.
    pub fn on_isr_committed(
        &mut self,
        leader_epoch: LeaderEpoch,
        partition_epoch: i32,
        isr: &[BrokerId],
        replicas: &[BrokerId],
        now_ms: i64,
    ) -> Effects {
        if leader_epoch != self.leader_epoch
            || partition_epoch <= self.partition_epoch
            || !isr.contains(&self.local)
        {
            return Effects::default();
        }
        let Role::Leader {
            followers, pending, ..
        } = &mut self.role
        else {
            return Effects::default();
        };
        *pending = None;
        // Replicas added by a reassignment start unknown; removed ones go.
        followers.retain(|r, _| replicas.contains(r));
        for r in replicas {
            if *r != self.local {
                followers
                    .entry(*r)
                    .or_insert_with(|| Follower::reset(now_ms, false));
            }
        }
        self.partition_epoch = partition_epoch;
        self.isr = isr.to_vec();
        self.replicas = replicas.to_vec();
        Effects {
            hw_moved: self.maybe_increment_hw(now_ms),
            propose_isr: None,
        }
    }

    /// The controller refused `proposal` (INVALID_UPDATE_VERSION,
    /// FENCED_LEADER_EPOCH, INELIGIBLE_REPLICA, ...): forget it; the next
    /// fetch or tick proposes again from what the metadata then says. An
    /// answer to an older proposal (one from an earlier tenure) changes
    /// nothing: the pending one is still on its way.
    pub fn on_isr_rejected(&mut self, proposal: &IsrProposal) {
        if let Role::Leader { pending, .. } = &mut self.role {
            if pending.as_ref() == Some(proposal) {
                *pending = None;
            }
        }
    }

    /// The leader's own log grew to `log_end_offset` (an append).
    pub fn on_append(&mut self, log_end_offset: Offset, now_ms: i64) -> Effects {
        debug_assert!(log_end_offset >= self.log_end_offset);
        self.log_end_offset = self.log_end_offset.max(log_end_offset);
        if !self.is_leader() {
            return Effects::default();
        }
        Effects {
            hw_moved: self.maybe_increment_hw(now_ms),
            propose_isr: None,
        }
    }

    /// A follower's log after an append or a truncation, and the leader's
    /// high watermark from its last fetch answer: the follower's high
    /// watermark is the smaller of the leader's and its own log end offset.
    /// Returns the new high watermark when it changed.
    pub fn on_follower_log(
        &mut self,
        log_end_offset: Offset,
        leader_hw: Option<Offset>,
    ) -> Option<Offset> {
        if self.is_leader() {
            return None;
        }
        self.log_end_offset = log_end_offset;
        let hw = match leader_hw {
            Some(leader) => leader.min(log_end_offset),
            None => self.high_watermark.min(log_end_offset),
        };
        (hw != self.high_watermark).then(|| {
            self.high_watermark = hw;
            hw
        })
    }

    /// Checks the leader epoch a client or follower sent (`current_leader_epoch`,
    /// KIP-320) against this broker's; `UNKNOWN` (-1) skips the check.
    pub fn check_epoch(&self, given: LeaderEpoch) -> Result<(), StateError> {
        let current = self.leader_epoch;
        if given == LeaderEpoch::UNKNOWN || given == current {
            Ok(())
        } else if given < current {
            Err(StateError::FencedLeaderEpoch { given, current })
        } else {
            Err(StateError::UnknownLeaderEpoch { given, current })
        }
    }

    /// A follower fetched from `fetch_offset` (all below it is in its log)
    /// at `now_ms`. Call it before the read, as Kafka does, so the answer
    /// carries the high watermark this fetch may have moved. `eligible`:
    /// the metadata has `replica` registered with `broker_epoch`, unfenced
    /// and not shutting down.
    pub fn on_follower_fetch(
        &mut self,
        replica: BrokerId,
        broker_epoch: i64,
        fetch_offset: Offset,
        now_ms: i64,
        eligible: bool,
    ) -> Result<Effects, StateError> {
        let leo = self.log_end_offset;
        let hw = self.high_watermark;
        let Role::Leader {
            followers,
            pending,
            epoch_start_offset,
        } = &mut self.role
        else {
            return Err(StateError::NotLeader);
        };
        let f = followers
            .get_mut(&replica)
            .ok_or(StateError::NotAReplica(replica))?;
        if fetch_offset > leo {
            return Err(StateError::FetchBeyondEnd {
                fetch: fetch_offset,
                leo,
            });
        }
        // Replica.updateFetchState.
        let caught_up_at = if fetch_offset >= leo {
            Some(now_ms)
        } else if f.last_fetch_leader_leo.is_known() && fetch_offset >= f.last_fetch_leader_leo {
            Some(f.last_fetch_ms)
        } else {
            None
        };
        if let Some(at) = caught_up_at {
            f.last_caught_up_ms = Some(f.last_caught_up_ms.map_or(at, |was| was.max(at)));
        }
        f.log_end_offset = fetch_offset;
        f.last_fetch_leader_leo = leo;
        f.last_fetch_ms = now_ms;
        f.broker_epoch = broker_epoch;
        f.eligible = eligible;
        // maybeExpandIsr.
        let mut propose_isr = None;
        let joins = pending.is_none()
            && !self.isr.contains(&replica)
            && eligible
            && fetch_offset >= hw
            && fetch_offset >= *epoch_start_offset;
        if joins {
            let mut new_isr = self.isr.clone();
            new_isr.push(replica);
            let proposal = IsrProposal {
                leader_epoch: self.leader_epoch,
                partition_epoch: self.partition_epoch,
                broker_epochs: fetch_epochs(&new_isr, followers),
                new_isr,
            };
            *pending = Some(proposal.clone());
            propose_isr = Some(proposal);
        }
        Ok(Effects {
            hw_moved: self.maybe_increment_hw(now_ms),
            propose_isr,
        })
    }

    /// The metadata says `replica` may no longer join the ISR (fenced,
    /// shutting down, or registered again with another broker epoch).
    pub fn set_ineligible(&mut self, replica: BrokerId) {
        if let Role::Leader { followers, .. } = &mut self.role {
            if let Some(f) = followers.get_mut(&replica) {
                f.eligible = false;
            }
        }
    }

    /// Time passed: ISR members that have not caught up within
    /// `replica.lag.time.max.ms` are proposed out (Kafka's `maybeShrinkIsr`).
    pub fn on_tick(&mut self, now_ms: i64) -> Effects {
        let leo = self.log_end_offset;
        let lag_ms = self.config.replica_lag_time_max_ms;
        let Role::Leader {
            followers, pending, ..
        } = &mut self.role
        else {
            return Effects::default();
        };
        if pending.is_some() {
            return Effects::default();
        }
        let out_of_sync: Vec<BrokerId> = self
            .isr
            .iter()
            .filter(|r| **r != self.local)
            .filter(|r| {
                followers
                    .get(r)
                    .is_none_or(|f| !f.is_caught_up(leo, now_ms, lag_ms))
            })
            .copied()
            .collect();
        if out_of_sync.is_empty() {
            return Effects::default();
        }
        let new_isr: Vec<BrokerId> = self
            .isr
            .iter()
            .filter(|r| !out_of_sync.contains(r))
            .copied()
            .collect();
        let proposal = IsrProposal {
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            broker_epochs: fetch_epochs(&new_isr, followers),
            new_isr,
        };
        *pending = Some(proposal.clone());
        Effects {
            hw_moved: None,
            propose_isr: Some(proposal),
        }
    }

    /// `min.insync.replicas`, at most the replication factor.
    pub fn effective_min_isr(&self) -> usize {
        self.config
            .min_insync_replicas
            .min(self.replicas.len().max(1))
    }

    /// Before an acks=all append: NOT_ENOUGH_REPLICAS when the committed
    /// ISR is smaller than the effective `min.insync.replicas` (the append
    /// does not happen).
    pub fn check_acks_all(&self) -> Result<(), StateError> {
        if !self.is_leader() {
            return Err(StateError::NotLeader);
        }
        let min = self.effective_min_isr();
        if self.isr.len() < min {
            return Err(StateError::NotEnoughReplicas {
                isr: self.isr.len(),
                min,
            });
        }
        Ok(())
    }

    /// Whether an acks=all produce whose batches end just below
    /// `required_offset`, appended in leader epoch `appended_in`, may be
    /// answered (`checkEnoughReplicasReachOffset`). Another epoch means the
    /// leadership changed since: the batch may have been truncated away, so
    /// the answer is NotLeader whatever the high watermark says.
    pub fn completion(&self, required_offset: Offset, appended_in: LeaderEpoch) -> Completion {
        if !self.is_leader() || self.leader_epoch != appended_in {
            return Completion::NotLeader;
        }
        if self.high_watermark < required_offset {
            return Completion::Waiting;
        }
        if self.maximal_isr().len() >= self.effective_min_isr() {
            Completion::Done
        } else {
            Completion::NotEnoughReplicasAfterAppend
        }
    }

    /// Kafka's `maybeIncrementLeaderHW`: returns the new high watermark if
    /// it moved.
    fn maybe_increment_hw(&mut self, now_ms: i64) -> Option<Offset> {
        let Role::Leader { followers, .. } = &self.role else {
            return None;
        };
        if self.isr.len() < self.effective_min_isr() {
            return None;
        }
        let leo = self.log_end_offset;
        let lag_ms = self.config.replica_lag_time_max_ms;
        let maximal = self.maximal_isr();
        let mut new_hw = leo;
        for (id, f) in followers {
            let waits_to_join = f.eligible && f.is_caught_up(leo, now_ms, lag_ms);
            if f.log_end_offset < new_hw && (maximal.contains(id) || waits_to_join) {
                new_hw = f.log_end_offset;
            }
        }
        if new_hw > self.high_watermark {
            self.high_watermark = new_hw;
            Some(new_hw)
        } else {
            None
        }
    }

    /// The invariants the module comment lists; `Err` names the broken one.
    /// A broken invariant is a bug: the caller takes the partition offline.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.high_watermark > self.log_end_offset {
            return Err(format!(
                "high watermark {} above log end offset {}",
                self.high_watermark, self.log_end_offset
            ));
        }
        if let Some(r) = self.isr.iter().find(|r| !self.replicas.contains(r)) {
            if !self.replicas.is_empty() {
                return Err(format!("ISR member {r} is not a replica"));
            }
        }
        if let Role::Leader { pending, .. } = &self.role {
            if !self.isr.contains(&self.local) {
                return Err(format!("leader {} not in ISR {:?}", self.local, self.isr));
            }
            if let Some(p) = pending {
                if !p.new_isr.contains(&self.local) {
                    return Err(format!(
                        "leader {} not in proposed ISR {:?}",
                        self.local, p.new_isr
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: i64 = 10_000;

    fn config(min_isr: usize) -> ReplicationConfig {
        ReplicationConfig {
            replica_lag_time_max_ms: LAG,
            min_insync_replicas: min_isr,
        }
    }

    fn leader_state(epoch: i32, partition_epoch: i32, isr: &[BrokerId]) -> LeaderAndIsr {
        LeaderAndIsr {
            leader_epoch: LeaderEpoch(epoch),
            partition_epoch,
            leader: Some(1),
            isr: isr.to_vec(),
            replicas: vec![1, 2, 3],
        }
    }

    /// Broker 1 leads [1,2,3] with the whole ISR, log end offset `leo`.
    fn leader(leo: i64, min_isr: usize) -> PartitionState {
        let mut s = PartitionState::new(1, config(min_isr), Offset(leo), Offset(0));
        s.become_leader(&leader_state(1, 1, &[1, 2, 3]), 0)
            .expect("leader");
        s
    }

    fn fetch(s: &mut PartitionState, r: BrokerId, off: i64, now: i64) -> Effects {
        s.on_follower_fetch(r, 7, Offset(off), now, true)
            .expect("fetch")
    }

    #[test]
    fn high_watermark_is_the_smallest_isr_log_end_offset() {
        let mut s = leader(0, 1);
        assert_eq!(s.on_append(Offset(10), 1).hw_moved, None);
        assert_eq!(fetch(&mut s, 2, 10, 2).hw_moved, None, "3 not yet");
        assert_eq!(fetch(&mut s, 3, 6, 3).hw_moved, Some(Offset(6)));
        assert_eq!(fetch(&mut s, 3, 10, 4).hw_moved, Some(Offset(10)));
        assert_eq!(s.high_watermark(), Offset(10));
    }

    #[test]
    fn a_single_replica_moves_the_high_watermark_on_append() {
        let mut s = PartitionState::new(1, config(1), Offset(0), Offset(0));
        let mut st = leader_state(1, 1, &[1]);
        st.replicas = vec![1];
        s.become_leader(&st, 0).expect("leader");
        assert_eq!(s.on_append(Offset(5), 1).hw_moved, Some(Offset(5)));
        assert_eq!(s.completion(Offset(5), LeaderEpoch(1)), Completion::Done);
    }

    #[test]
    fn a_lagging_follower_is_proposed_out_after_the_lag_time() {
        let mut s = leader(0, 1);
        s.on_append(Offset(10), 0);
        fetch(&mut s, 2, 10, 100);
        fetch(&mut s, 3, 0, 100);
        assert_eq!(s.on_tick(LAG).propose_isr, None, "3 caught up at 0");
        let p = s.on_tick(LAG + 1).propose_isr.expect("shrink");
        assert_eq!(p.new_isr, vec![1, 2]);
        assert_eq!(p.partition_epoch, 1);
        // The high watermark still waits for 3 until the shrink commits.
        assert_eq!(s.high_watermark(), Offset(0));
        assert_eq!(s.on_tick(LAG + 2).propose_isr, None, "one change in flight");
        let e = s.on_isr_committed(LeaderEpoch(1), 2, &[1, 2], &[1, 2, 3], LAG + 3);
        assert_eq!(e.hw_moved, Some(Offset(10)));
        assert_eq!(s.isr(), &[1, 2]);
    }

    #[test]
    fn caught_up_time_is_the_previous_fetch_when_it_reached_that_end() {
        // Replica.updateFetchState: fetching from the leader's end of the
        // previous fetch means it was caught up at that previous fetch.
        let mut s = leader(0, 1);
        s.on_append(Offset(10), 0);
        fetch(&mut s, 2, 5, 1_000);
        fetch(&mut s, 3, 10, 1_000);
        s.on_append(Offset(20), 1_500);
        fetch(&mut s, 2, 10, 2_000); // reached the end of its previous fetch
        assert_eq!(s.on_tick(1_000 + LAG).propose_isr, None);
        let p = s.on_tick(1_001 + LAG).propose_isr.expect("shrink");
        assert_eq!(p.new_isr, vec![1], "both behind the end since 1000");
    }

    #[test]
    fn a_follower_joins_once_it_reaches_the_high_watermark_and_the_epoch_start() {
        let mut s = PartitionState::new(1, config(1), Offset(10), Offset(10));
        s.become_leader(&leader_state(2, 5, &[1, 2]), 0)
            .expect("leader");
        assert_eq!(fetch(&mut s, 3, 4, 1).propose_isr, None);
        // Ineligible (fenced) replicas do not join.
        let e = s
            .on_follower_fetch(3, 7, Offset(10), 2, false)
            .expect("fetch");
        assert_eq!(e.propose_isr, None);
        let p = fetch(&mut s, 3, 10, 3).propose_isr.expect("expand");
        assert_eq!(p.new_isr, vec![1, 2, 3]);
        assert_eq!((p.leader_epoch, p.partition_epoch), (LeaderEpoch(2), 5));
        // Pending expansion: the high watermark waits for 3 too.
        s.on_append(Offset(12), 4);
        fetch(&mut s, 2, 12, 5);
        assert_eq!(s.high_watermark(), Offset(10));
        assert_eq!(fetch(&mut s, 3, 12, 6).hw_moved, Some(Offset(12)));
    }

    #[test]
    fn a_new_leader_waits_for_followers_to_fetch_again() {
        let mut s = PartitionState::new(1, config(2), Offset(10), Offset(8));
        s.become_leader(&leader_state(3, 9, &[1, 2, 3]), 0)
            .expect("leader");
        assert_eq!(s.high_watermark(), Offset(8));
        assert_eq!(s.completion(Offset(9), LeaderEpoch(3)), Completion::Waiting);
        fetch(&mut s, 2, 10, 1);
        assert_eq!(s.high_watermark(), Offset(8), "3 not heard from");
        assert_eq!(fetch(&mut s, 3, 9, 2).hw_moved, Some(Offset(9)));
        assert_eq!(s.completion(Offset(9), LeaderEpoch(3)), Completion::Done);
    }

    #[test]
    fn acks_all_below_min_isr() {
        let mut s = leader(0, 2);
        s.on_append(Offset(1), 0);
        fetch(&mut s, 2, 0, 1);
        fetch(&mut s, 3, 0, 1);
        assert_eq!(s.check_acks_all(), Ok(()));
        // Both followers stop fetching: shrink to the leader alone.
        s.on_tick(LAG + 2).propose_isr.expect("shrink");
        s.on_isr_committed(LeaderEpoch(1), 2, &[1], &[1, 2, 3], LAG + 3);
        assert_eq!(
            s.check_acks_all(),
            Err(StateError::NotEnoughReplicas { isr: 1, min: 2 })
        );
        // Under min ISR the high watermark stays where it was (Kafka 4).
        assert_eq!(s.on_append(Offset(2), LAG + 4).hw_moved, None);
        assert_eq!(s.completion(Offset(1), LeaderEpoch(1)), Completion::Waiting);
    }

    #[test]
    fn a_raised_min_isr_answers_waiting_produces_not_enough_replicas_after_append() {
        let mut s = leader(0, 2);
        s.on_append(Offset(3), 0);
        fetch(&mut s, 2, 3, 1);
        fetch(&mut s, 3, 3, 1);
        assert_eq!(s.high_watermark(), Offset(3));
        assert_eq!(s.completion(Offset(3), LeaderEpoch(1)), Completion::Done);
        s.set_config(ReplicationConfig {
            min_insync_replicas: 4,
            ..s.config()
        });
        // Effective min ISR is capped at the 3 replicas: still fine.
        assert_eq!(s.effective_min_isr(), 3);
        assert_eq!(s.completion(Offset(3), LeaderEpoch(1)), Completion::Done);
        s.on_append(Offset(4), 5);
        s.on_tick(LAG + 10).propose_isr.expect("shrink");
        s.on_isr_committed(LeaderEpoch(1), 2, &[1], &[1, 2, 3], LAG + 11);
        assert_eq!(
            s.completion(Offset(3), LeaderEpoch(1)),
            Completion::NotEnoughReplicasAfterAppend
        );
    }

    #[test]
    fn an_ineligible_candidate_stops_holding_the_high_watermark() {
        // As the KIP-841 test, then the candidate is fenced: the high
        // watermark no longer waits for it.
        let mut s = PartitionState::new(1, config(1), Offset(0), Offset(0));
        s.become_leader(&leader_state(1, 1, &[1, 2]), 0)
            .expect("leader");
        s.on_append(Offset(10), 1_000);
        let p = fetch(&mut s, 3, 10, 1_000).propose_isr.expect("expand");
        s.on_isr_rejected(&p);
        s.on_append(Offset(20), 1_100);
        assert_eq!(fetch(&mut s, 2, 20, 1_200).hw_moved, Some(Offset(10)));
        s.set_ineligible(3);
        assert_eq!(s.on_append(Offset(20), 1_300).hw_moved, Some(Offset(20)));
    }

    #[test]
    fn a_single_replica_topic_takes_acks_all_whatever_min_isr_says() {
        let mut s = PartitionState::new(1, config(3), Offset(0), Offset(0));
        let mut st = leader_state(1, 1, &[1]);
        st.replicas = vec![1];
        s.become_leader(&st, 0).expect("leader");
        assert_eq!(s.check_acks_all(), Ok(()));
        assert_eq!(s.on_append(Offset(2), 1).hw_moved, Some(Offset(2)));
    }

    #[test]
    fn epochs_fence_stale_requests_and_never_go_down() {
        let mut s = leader(0, 1);
        assert_eq!(s.check_epoch(LeaderEpoch(1)), Ok(()));
        assert_eq!(s.check_epoch(LeaderEpoch::UNKNOWN), Ok(()));
        assert!(matches!(
            s.check_epoch(LeaderEpoch(0)),
            Err(StateError::FencedLeaderEpoch { .. })
        ));
        assert!(matches!(
            s.check_epoch(LeaderEpoch(2)),
            Err(StateError::UnknownLeaderEpoch { .. })
        ));
        let mut old = leader_state(0, 0, &[1]);
        old.leader = Some(2);
        assert!(matches!(
            s.become_follower(&old),
            Err(StateError::Stale { .. })
        ));
        // A late AlterPartition answer for an older partition epoch is ignored.
        let e = s.on_isr_committed(LeaderEpoch(1), 1, &[1], &[1, 2, 3], 5);
        assert_eq!(e, Effects::default());
        assert_eq!(s.isr(), &[1, 2, 3]);
    }

    #[test]
    fn followers_refuse_follower_fetches_and_cap_their_high_watermark() {
        let mut s = PartitionState::new(2, config(1), Offset(5), Offset(5));
        s.become_follower(&leader_state(1, 1, &[1, 2, 3]))
            .expect("follower");
        assert_eq!(s.leader(), Some(1));
        assert_eq!(
            s.on_follower_fetch(3, 7, Offset(0), 0, true),
            Err(StateError::NotLeader)
        );
        assert_eq!(
            s.on_follower_log(Offset(8), Some(Offset(20))),
            Some(Offset(8))
        );
        assert_eq!(s.on_follower_log(Offset(9), Some(Offset(8))), None);
        assert_eq!(
            s.completion(Offset(1), LeaderEpoch(1)),
            Completion::NotLeader
        );
    }

    #[test]
    fn non_replicas_and_fetches_past_the_end_are_refused() {
        let mut s = leader(4, 1);
        assert_eq!(
            s.on_follower_fetch(9, 7, Offset(0), 0, true),
            Err(StateError::NotAReplica(9))
        );
        assert!(matches!(
            s.on_follower_fetch(2, 7, Offset(5), 0, true),
            Err(StateError::FetchBeyondEnd { .. })
        ));
        let mut bad = leader_state(2, 2, &[2, 3]);
        bad.leader = Some(1);
        assert!(matches!(
            s.become_leader(&bad, 0),
            Err(StateError::LeaderNotInIsr(1, _))
        ));
    }

    /// KIP-903: a proposal names each follower with the broker epoch of its
    /// own last fetch, not the one the metadata shows now; the leader's
    /// own is left to the caller, and a follower not heard from is -1.
    #[test]
    fn proposals_carry_the_broker_epochs_of_the_fetches() {
        let mut s = PartitionState::new(1, config(1), Offset(0), Offset(0));
        s.become_leader(&leader_state(1, 1, &[1, 2]), 0)
            .expect("leader");
        s.on_append(Offset(10), 1_000);
        let p = s
            .on_follower_fetch(3, 42, Offset(10), 1_000, true)
            .expect("fetch")
            .propose_isr
            .expect("expand");
        assert_eq!(p.new_isr, vec![1, 2, 3]);
        assert_eq!(p.broker_epochs, vec![-1, -1, 42]);
    }

    #[test]
    fn a_caught_up_eligible_follower_outside_the_isr_holds_the_high_watermark() {
        // KIP-841: a follower about to join is not left behind.
        let mut s = PartitionState::new(1, config(1), Offset(0), Offset(0));
        s.become_leader(&leader_state(1, 1, &[1, 2]), 0)
            .expect("leader");
        s.on_append(Offset(10), 1_000);
        let p = fetch(&mut s, 3, 10, 1_000).propose_isr.expect("expand");
        assert_eq!(p.new_isr, vec![1, 2, 3]);
        let older = IsrProposal {
            leader_epoch: LeaderEpoch(0),
            ..p.clone()
        };
        s.on_isr_rejected(&older);
        assert!(s.pending_isr().is_some(), "an older answer changes nothing");
        s.on_isr_rejected(&p);
        assert_eq!(s.isr(), &[1, 2]);
        s.on_append(Offset(20), 1_100);
        // 2 (the ISR) has all 20; 3 is outside, eligible and caught up
        // within the lag time, at 10: the high watermark waits for it.
        assert_eq!(fetch(&mut s, 2, 20, 1_200).hw_moved, Some(Offset(10)));
        // Once 3 is no longer caught up, it stops holding it back.
        assert_eq!(
            s.on_append(Offset(20), 1_000 + LAG + 1).hw_moved,
            Some(Offset(20))
        );
    }
}
