//! The replica manager: one [`Partition`] per hosted topic partition, each
//! owning its [`felice_log::Log`] and the state Kafka keeps beside it (high
//! watermark, leader epoch, log start offset), plus the long-poll purgatory.
//!
//! Concurrency: the partition map is behind a `RwLock` taken for lookups only.
//! Each log is behind its own `std::sync::Mutex`, locked from blocking
//! threads (`spawn_blocking`), or from an async task only with `try_lock`
//! for an append that needs nothing but its write (`try_append_now`), for
//! the length of one append or one index
//! lookup; the bytes of a fetch are read after the lock is released.
//!
//! Invariants (asserted): `log_start_offset <= high_watermark <= log_end_offset`;
//! on one node the ISR is this broker alone, so an append moves the high
//! watermark to the new log end offset before the append returns. The high
//! watermark is still its own value so that replication can hold it back.
//!
//! Purgatory: a fetch that has too little data parks an `Arc<Notify>` in the
//! waiter list of every partition it reads; an append that moves the high
//! watermark wakes them all and empties the list. The lists are bounded by the
//! number of fetches in flight, itself bounded by `max.connections` (one
//! request at a time per connection).

use crate::clock::SharedClock;
use crate::limits::{INLINE_APPEND_PAUSE_MS, SLOW_INLINE_APPEND};
use crate::settings::TopicSettings;
use crate::state::{IsrProposal, LeaderAndIsr, PartitionState, StateError};
use felice_log::{Log, LogConfig, LogError, ProducerBudget, TimestampType};
use felice_metadata::{MetadataImage, PartitionImage, TopicId, TopicImage};
use felice_wire::{LeaderEpoch, Offset, ValidatedBatch};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use tokio::sync::Notify;

/// What a broker's partitions share: its clock, and the switch that sends
/// appends to blocking threads for a while after a slow inline append (see
/// [`SLOW_INLINE_APPEND`]). One per broker, not per process, so that brokers
/// in one test process do not slow each other down.
pub struct ReplicaContext {
    clock: SharedClock,
    /// Until when (ms since the epoch) appends skip the inline path.
    inline_appends_off_until_ms: AtomicI64,
    /// Partitions taken offline and not yet reported to the controller
    /// (at most one entry per hosted partition).
    offline: Mutex<Vec<(TopicId, i32)>>,
    /// Wakes the broker's reporter when `offline` grows.
    pub offline_changed: Notify,
}

impl ReplicaContext {
    pub fn new(clock: SharedClock) -> Arc<ReplicaContext> {
        Arc::new(ReplicaContext {
            clock,
            inline_appends_off_until_ms: AtomicI64::new(0),
            offline: Mutex::new(Vec::new()),
            offline_changed: Notify::new(),
        })
    }

    /// The partitions taken offline since the last call, for the broker to
    /// report to the controller (so that another replica takes over).
    pub fn take_offline_reports(&self) -> Vec<(TopicId, i32)> {
        std::mem::take(&mut *lock(&self.offline))
    }

    /// Puts back reports the controller did not take yet.
    pub fn return_offline_reports(&self, reports: Vec<(TopicId, i32)>) {
        let mut pending = lock(&self.offline);
        for r in reports {
            if !pending.contains(&r) {
                pending.push(r);
            }
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// One hosted partition.
pub struct Partition {
    pub topic: String,
    pub topic_id: TopicId,
    pub index: i32,
    /// The partition's leader epoch, as the applied image says (never
    /// goes down).
    leader_epoch: AtomicI32,
    dir: PathBuf,
    log: Mutex<Option<Log>>,
    high_watermark: AtomicI64,
    log_start_offset: AtomicI64,
    log_end_offset: AtomicI64,
    settings: RwLock<TopicSettings>,
    /// The replication bookkeeping ([`PartitionState`]): the high watermark
    /// is its word, published in `high_watermark` for lock-free reads.
    /// Locked after the log (never the other way round).
    state: Mutex<PartitionState>,
    waiters: Mutex<Vec<Arc<Notify>>>,
    /// Set once an invariant broke ([`Partition::take_offline`]): from
    /// then on every operation answers [`ReplicaError::Offline`].
    offline: AtomicBool,
    ctx: Arc<ReplicaContext>,
}

/// Where a follower fetches from, as its log says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPosition {
    /// Its log end offset.
    pub fetch_offset: Offset,
    /// The epoch of its last batch (-1: none).
    pub last_fetched_epoch: LeaderEpoch,
    pub log_start_offset: Offset,
}

/// A read planned under the log lock, to be completed without it.
pub struct PlannedRead {
    pub slice: Option<felice_log::ReadSlice>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("partition {0} is closed (deleted or shutting down)")]
    Closed(String),
    /// This broker no longer leads (a leader's append) or no longer follows
    /// in the epoch a fetch was made in (a follower's).
    #[error("partition {0}: not the leader, or not in that leader epoch")]
    NotLeader(String),
    /// An invariant broke: the partition serves nothing until the broker
    /// restarts and recovers its log (KAFKA_STORAGE_ERROR, as Kafka's
    /// partitions in a failed log directory).
    #[error("partition {0} is offline: an invariant broke (see the broker's log)")]
    Offline(String),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Partition {
    /// Takes the partition offline because `why` (an invariant) broke: its
    /// state can no longer be trusted, so it stops serving rather than
    /// serve on it. Every operation answers [`ReplicaError::Offline`]
    /// (KAFKA_STORAGE_ERROR) until the broker restarts and recovers the
    /// log; waiting produces and fetches wake to see it. Logged once.
    pub fn take_offline(&self, why: &str) {
        if !self.offline.swap(true, Ordering::AcqRel) {
            tracing::error!(
                topic = %self.topic,
                partition = self.index,
                why,
                "invariant broken: partition offline (KAFKA_STORAGE_ERROR) until the broker restarts"
            );
            // The controller moves the leadership and the ISR away from
            // this replica, as Kafka's does for a failed log directory.
            lock(&self.ctx.offline).push((self.topic_id, self.index));
            self.ctx.offline_changed.notify_one();
        }
        self.wake_waiters();
    }

    pub fn is_offline(&self) -> bool {
        self.offline.load(Ordering::Acquire)
    }

    fn check_online(&self) -> Result<(), ReplicaError> {
        if self.is_offline() {
            Err(ReplicaError::Offline(format!(
                "{}-{}",
                self.topic, self.index
            )))
        } else {
            Ok(())
        }
    }

    fn with_log<R>(
        &self,
        f: impl FnOnce(&mut Log) -> Result<R, LogError>,
    ) -> Result<R, ReplicaError> {
        self.check_online()?;
        let mut guard = lock(&self.log);
        let log = guard
            .as_mut()
            .ok_or_else(|| ReplicaError::Closed(format!("{}-{}", self.topic, self.index)))?;
        let r = f(log)?;
        self.log_start_offset
            .store(log.log_start_offset(), Ordering::Release);
        Ok(r)
    }

    pub fn settings(&self) -> TopicSettings {
        match self.settings.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    /// Follows the controller's word on this partition (leader, ISR,
    /// replicas, epochs) when it changed: this broker becomes its leader or
    /// a follower. An older word is ignored: epochs never go down. Takes the
    /// log lock, then the state's, so no append or follower write runs
    /// across a change of role (blocking).
    fn apply_image(&self, part: &PartitionImage) {
        // An offline replica follows no word until the broker restarts.
        if self.is_offline() {
            return;
        }
        let word = LeaderAndIsr {
            leader_epoch: LeaderEpoch(part.leader_epoch),
            partition_epoch: part.partition_epoch,
            leader: (part.leader >= 0).then_some(part.leader),
            isr: part.isr.clone(),
            replicas: part.replicas.clone(),
        };
        let now = self.ctx.now_ms();
        let mut guard = lock(&self.log);
        let mut state = lock(&self.state);
        if state.leader_epoch() == word.leader_epoch
            && state.partition_epoch() == word.partition_epoch
        {
            return;
        }
        let leading = word.leader == Some(state.local());
        let new_epoch = word.leader_epoch != state.leader_epoch();
        let r = if leading {
            state.become_leader(&word, now).map(|_| ())
        } else {
            state.become_follower(&word)
        };
        if let Err(e) = r {
            // A word the state refuses (an epoch gone down, a leader
            // outside its ISR) is a broken invariant: stop serving.
            drop(state);
            drop(guard);
            self.take_offline(&format!("the controller's word was refused: {e}"));
            return;
        }
        self.leader_epoch
            .fetch_max(state.leader_epoch().0, Ordering::AcqRel);
        self.sync_hw(&state);
        drop(state);
        if leading && new_epoch {
            // The epoch starts at the log end offset (Kafka's makeLeader),
            // so OffsetForLeaderEpoch knows it at once.
            if let Some(log) = guard.as_mut() {
                log.assign_epoch_at_end(word.leader_epoch.0);
            }
        }
        drop(guard);
        // Waiting fetches and acks=all produces re-check: a produce of an
        // older epoch now answers NOT_LEADER_OR_FOLLOWER.
        self.wake_waiters();
    }

    /// Followers the metadata now shows fenced (or gone) may no longer join
    /// the ISR, and stop holding back the high watermark as caught-up
    /// candidates (Kafka's `isReplicaIsrEligible` reads the current
    /// metadata; the state keeps what each follower's last fetch said
    /// until this).
    fn forget_ineligible(&self, image: &MetadataImage, replicas: &[i32]) {
        let fenced: Vec<i32> = replicas
            .iter()
            .copied()
            .filter(|r| image.brokers.get(r).is_none_or(|b| b.fenced))
            .collect();
        if fenced.is_empty() {
            return;
        }
        let now = self.ctx.now_ms();
        let mut state = lock(&self.state);
        if !state.is_leader() {
            return;
        }
        for r in fenced {
            state.set_ineligible(r);
        }
        // The high watermark may move now that they no longer count.
        let leo = state.log_end_offset();
        let moved = state.on_append(leo, now).hw_moved;
        self.sync_hw(&state);
        drop(state);
        if moved.is_some() {
            self.wake_waiters();
        }
    }

    /// Publishes the state's high watermark for lock-free readers; called
    /// with the state locked, so the published value follows the state's
    /// order of changes.
    fn sync_hw(&self, state: &PartitionState) {
        self.high_watermark
            .store(state.high_watermark().0, Ordering::Release);
    }

    /// Waits (blocking: from a blocking thread inside the runtime) until
    /// the high watermark reaches `required_offset`, leadership (or the
    /// epoch `appended_in`) is lost, or `timeout` passes (answered
    /// `Waiting`). Woken by the partition's waiters, never polled. The group
    /// coordinator's acks=all.
    pub fn await_completion_blocking(
        &self,
        required_offset: Offset,
        appended_in: LeaderEpoch,
        timeout: std::time::Duration,
    ) -> crate::state::Completion {
        use crate::state::Completion;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let waiter = Arc::new(Notify::new());
            self.add_waiter(waiter.clone());
            let now = self.completion(required_offset, appended_in);
            if now != Completion::Waiting {
                self.remove_waiter(&waiter);
                return now;
            }
            let Ok(handle) = tokio::runtime::Handle::try_current() else {
                self.remove_waiter(&waiter);
                return Completion::Waiting;
            };
            let woken = handle
                .block_on(async { tokio::time::timeout_at(deadline, waiter.notified()).await });
            if woken.is_err() {
                self.remove_waiter(&waiter);
                return self.completion(required_offset, appended_in);
            }
        }
    }

    /// Whether this broker leads the partition (its replication state's word).
    pub fn is_leader(&self) -> bool {
        lock(&self.state).is_leader()
    }

    /// Before an acks=all append: NOT_ENOUGH_REPLICAS when the ISR is
    /// smaller than the effective `min.insync.replicas`; NOT_LEADER when
    /// this broker does not lead.
    pub fn check_acks_all(&self) -> Result<(), StateError> {
        lock(&self.state).check_acks_all()
    }

    /// Where an acks=all produce whose batches end just below
    /// `required_offset`, appended in leader epoch `appended_in`, stands
    /// (Kafka's `checkEnoughReplicasReachOffset`).
    pub fn completion(
        &self,
        required_offset: Offset,
        appended_in: LeaderEpoch,
    ) -> crate::state::Completion {
        if self.is_offline() {
            return crate::state::Completion::NotLeader;
        }
        lock(&self.state).completion(required_offset, appended_in)
    }

    /// The committed ISR, as this broker last applied it.
    pub fn isr(&self) -> Vec<i32> {
        lock(&self.state).isr().to_vec()
    }

    /// A follower fetched from `fetch_offset` (all below it is in its log):
    /// its position moves the high watermark (waking the waiters) and may
    /// make it join the ISR. Returns the ISR change to send to the
    /// controller, if any. `eligible`: the metadata has the follower
    /// registered with `broker_epoch` and unfenced.
    pub fn on_follower_fetch(
        &self,
        replica: i32,
        broker_epoch: i64,
        fetch_offset: Offset,
        eligible: bool,
    ) -> Result<Option<IsrProposal>, StateError> {
        let now = self.ctx.now_ms();
        let mut state = lock(&self.state);
        let effects =
            state.on_follower_fetch(replica, broker_epoch, fetch_offset, now, eligible)?;
        self.sync_hw(&state);
        drop(state);
        if effects.hw_moved.is_some() {
            self.wake_waiters();
        }
        Ok(effects.propose_isr)
    }

    /// Time passed: followers that fell behind for `replica.lag.time.max.ms`
    /// are proposed out of the ISR.
    pub fn tick(&self) -> Option<IsrProposal> {
        let now = self.ctx.now_ms();
        let mut state = lock(&self.state);
        let effects = state.on_tick(now);
        self.sync_hw(&state);
        effects.propose_isr
    }

    /// The controller's answer to `proposal`: the partition as it now is
    /// (`None` when the change was refused or not delivered). The pending
    /// change is forgotten either way; the metadata log brings the same
    /// state, whichever arrives first.
    pub fn on_isr_answer(&self, proposal: &IsrProposal, now_is: Option<(i32, i32, Vec<i32>)>) {
        let now = self.ctx.now_ms();
        let mut state = lock(&self.state);
        let mut moved = false;
        if let Some((leader_epoch, partition_epoch, isr)) = now_is {
            let replicas = state.replicas().to_vec();
            moved = state
                .on_isr_committed(
                    LeaderEpoch(leader_epoch),
                    partition_epoch,
                    &isr,
                    &replicas,
                    now,
                )
                .hw_moved
                .is_some();
        }
        state.on_isr_rejected(proposal);
        self.sync_hw(&state);
        drop(state);
        if moved {
            self.wake_waiters();
        }
    }

    /// What a follower sends its leader (blocking: the log lock).
    pub fn fetch_position(&self) -> Result<FetchPosition, ReplicaError> {
        self.with_log(|log| {
            Ok(FetchPosition {
                fetch_offset: Offset(log.log_end_offset()),
                last_fetched_epoch: LeaderEpoch(log.epochs().last().map_or(-1, |e| e.epoch)),
                log_start_offset: Offset(log.log_start_offset()),
            })
        })
    }

    /// Runs a follower's write under the log lock, if this broker still
    /// follows in leader epoch `epoch` (a fetch answer from an older
    /// leadership must not touch the log); then updates the state with the
    /// new log end offset and the leader's high watermark, if given.
    fn follower_write(
        &self,
        epoch: LeaderEpoch,
        leader_hw: Option<Offset>,
        write: impl FnOnce(&mut Log) -> Result<(), LogError>,
    ) -> Result<(), ReplicaError> {
        let not_following = || ReplicaError::NotLeader(format!("{}-{}", self.topic, self.index));
        self.check_online()?;
        let mut guard = lock(&self.log);
        let log = guard
            .as_mut()
            .ok_or_else(|| ReplicaError::Closed(format!("{}-{}", self.topic, self.index)))?;
        {
            let state = lock(&self.state);
            if state.is_leader() || state.leader_epoch() != epoch {
                return Err(not_following());
            }
        }
        let r = write(log);
        let leo = log.log_end_offset();
        self.log_start_offset
            .store(log.log_start_offset(), Ordering::Release);
        self.log_end_offset.store(leo, Ordering::Release);
        let mut state = lock(&self.state);
        state.on_follower_log(Offset(leo), leader_hw);
        self.sync_hw(&state);
        drop(state);
        drop(guard);
        r?;
        Ok(())
    }

    /// A follower's share of a fetch answer (blocking: the log lock): the
    /// leader's batches appended as they are, the log start offset raised
    /// to the leader's (never past this log's end), and the high watermark
    /// set to the leader's, capped at this log's end. `epoch`: the leader
    /// epoch the fetch was made in.
    pub fn on_leader_answer(
        &self,
        epoch: LeaderEpoch,
        records: &[u8],
        leader_hw: Offset,
        leader_log_start: Offset,
    ) -> Result<(), ReplicaError> {
        let now = self.ctx.now_ms();
        self.follower_write(epoch, Some(leader_hw), |log| {
            if !records.is_empty() {
                let empty = log.log_end_offset() == log.log_start_offset();
                match log.append_as_follower(records, now) {
                    // An empty log whose start lies inside the leader's first
                    // batch (DeleteRecords on the leader): start the log at
                    // that batch, as Kafka's appendRecordsToFollower does.
                    Err(LogError::UnexpectedAppendOffset { expected, got })
                        if empty && got < expected =>
                    {
                        log.truncate_fully_and_start_at(got)?;
                        log.append_as_follower(records, now)?;
                    }
                    r => {
                        r?;
                    }
                }
            }
            let start = leader_log_start.0.min(log.log_end_offset());
            if start > log.log_start_offset() {
                log.delete_records_before(start)?;
            }
            Ok(())
        })?;
        if !records.is_empty() {
            self.wake_waiters();
        }
        Ok(())
    }

    /// Cuts the log to end at `offset` (a follower's divergent tail, in
    /// leader epoch `epoch`; blocking: the log lock).
    pub fn truncate_to(&self, epoch: LeaderEpoch, offset: Offset) -> Result<(), ReplicaError> {
        self.follower_write(epoch, None, |log| log.truncate_to(offset.0))?;
        self.wake_waiters();
        Ok(())
    }

    /// Empties the log and starts it at `offset` (the leader no longer has
    /// what this follower would fetch; blocking: the log lock).
    pub fn truncate_fully_and_start_at(
        &self,
        epoch: LeaderEpoch,
        offset: Offset,
    ) -> Result<(), ReplicaError> {
        self.follower_write(epoch, None, |log| log.truncate_fully_and_start_at(offset.0))?;
        self.wake_waiters();
        Ok(())
    }

    /// Kafka's `endOffsetForEpoch` on this partition's log (blocking: the
    /// log lock).
    pub fn end_offset_for_epoch(
        &self,
        epoch: LeaderEpoch,
    ) -> Result<(LeaderEpoch, Offset), ReplicaError> {
        self.with_log(|log| {
            let (e, end) = log.end_offset_for_epoch(epoch.0);
            Ok((LeaderEpoch(e), Offset(end)))
        })
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.load(Ordering::Acquire)
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset.load(Ordering::Acquire)
    }

    /// Appends validated batches (blocking I/O: call from a blocking thread).
    pub fn append(&self, batch: &ValidatedBatch) -> Result<felice_log::AppendInfo, ReplicaError> {
        let mut guard = lock(&self.log);
        let log = guard
            .as_mut()
            .ok_or_else(|| ReplicaError::Closed(format!("{}-{}", self.topic, self.index)))?;
        let info = self.append_locked(log, batch, self.ctx.now_ms());
        self.log_start_offset
            .store(log.log_start_offset(), Ordering::Release);
        drop(guard);
        let info = info?;
        if !info.duplicate {
            self.wake_waiters();
        }
        Ok(info)
    }

    /// The idempotent producers this partition remembers (blocking: the log
    /// lock).
    pub fn active_producers(&self) -> Result<Vec<felice_log::ActiveProducer>, ReplicaError> {
        self.with_log(|log| Ok(log.active_producers()))
    }

    /// Appends at once, on the calling (async) thread, when that costs no more
    /// than the positioned writes: the log's lock is free and the append
    /// neither rolls a segment nor fsyncs for `flush.messages`
    /// ([`Log::append_is_quick`]). `None` otherwise: the caller appends from a
    /// blocking thread. Handing every produce to a blocking thread was a third
    /// of the broker's CPU for small acks=all batches (two thread switches per
    /// request).
    pub fn try_append_now(
        &self,
        batch: &ValidatedBatch,
    ) -> Option<Result<felice_log::AppendInfo, ReplicaError>> {
        if let Err(e) = self.check_online() {
            return Some(Err(e));
        }
        let now = self.ctx.now_ms();
        if now < self.ctx.inline_appends_off_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        let started = std::time::Instant::now();
        let mut guard = match self.log.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        let log = guard.as_mut()?;
        // A new leader epoch writes the epoch checkpoint (an fsync): not here.
        if !log.append_batch_is_quick(batch, now) || log.epoch_is_new(self.leader_epoch()) {
            return None;
        }
        let result = self.append_locked(log, batch, now);
        self.log_start_offset
            .store(log.log_start_offset(), Ordering::Release);
        drop(guard);
        let took = started.elapsed();
        if took >= SLOW_INLINE_APPEND {
            self.ctx
                .inline_appends_off_until_ms
                .store(now + INLINE_APPEND_PAUSE_MS, Ordering::Relaxed);
            tracing::debug!(
                topic = %self.topic,
                partition = self.index,
                took_ms = took.as_millis() as u64,
                "slow inline append; appends go to blocking threads for a while"
            );
        }
        if result.as_ref().is_ok_and(|info| !info.duplicate) {
            self.wake_waiters();
        }
        Some(result)
    }

    /// The append itself, under the log's lock: offsets, high watermark.
    /// Refused unless the replication state leads; its epoch is stamped.
    /// Role changes take the log lock first ([`Partition::apply_image`]), so
    /// the role cannot change under a held log lock.
    fn append_locked(
        &self,
        log: &mut Log,
        batch: &ValidatedBatch,
        now: i64,
    ) -> Result<felice_log::AppendInfo, ReplicaError> {
        self.check_online()?;
        let epoch = {
            let state = lock(&self.state);
            if !state.is_leader() {
                return Err(ReplicaError::NotLeader(format!(
                    "{}-{}",
                    self.topic, self.index
                )));
            }
            state.leader_epoch().0
        };
        let ts_type = if self.settings().log_append_time {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        };
        let info = log.append_batch(batch, epoch, ts_type, now)?;
        let leo = log.log_end_offset();
        if info.duplicate {
            // A retried idempotent batch: nothing was written.
            return Ok(info);
        }
        assert!(
            info.last_offset + 1 == leo,
            "append ended at {} but log end offset is {leo}",
            info.last_offset
        );
        self.log_end_offset.store(leo, Ordering::Release);
        // The leader's bookkeeping decides the high watermark: with the ISR
        // this broker alone, it follows the log end offset at once.
        let mut state = lock(&self.state);
        state.on_append(Offset(leo), now);
        self.sync_hw(&state);
        let hw = state.high_watermark().0;
        drop(state);
        let lso = log.log_start_offset();
        if !(lso <= hw && hw <= leo) {
            let why = format!(
                "log start offset {lso} <= high watermark {hw} <= log end offset {leo} broken"
            );
            debug_assert!(false, "{why}");
            self.take_offline(&why);
            return Err(ReplicaError::Offline(format!(
                "{}-{}",
                self.topic, self.index
            )));
        }
        Ok(info)
    }

    /// Plans a read of up to `max_bytes` from `offset`, bounded by the high
    /// watermark, or by the log end offset for a follower (`to_log_end`,
    /// Kafka's FetchIsolation.LOG_END) (blocking: call from a blocking
    /// thread).
    pub fn plan_read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        to_log_end: bool,
    ) -> Result<PlannedRead, ReplicaError> {
        self.with_log(|log| {
            let hw = self.high_watermark();
            let bound = if to_log_end { log.log_end_offset() } else { hw };
            let slice = log.read(offset, max_bytes, bound, min_one_batch)?;
            Ok(PlannedRead {
                slice,
                high_watermark: hw,
                log_start_offset: log.log_start_offset(),
            })
        })
    }

    /// Runs `f` with the log locked (blocking: call from a blocking thread).
    pub fn with_log_locked<R>(
        &self,
        f: impl FnOnce(&mut Log) -> Result<R, LogError>,
    ) -> Result<R, ReplicaError> {
        self.with_log(f)
    }

    /// Registers `waiter` to be notified when the high watermark moves.
    pub fn add_waiter(&self, waiter: Arc<Notify>) {
        lock(&self.waiters).push(waiter);
    }

    fn wake_waiters(&self) {
        let waiters = std::mem::take(&mut *lock(&self.waiters));
        for w in waiters {
            w.notify_one();
        }
    }

    fn set_settings(&self, settings: TopicSettings) {
        let log_config = settings.log.clone();
        lock(&self.state).set_config(settings.replication);
        match self.settings.write() {
            Ok(mut g) => *g = settings,
            Err(p) => *p.into_inner() = settings,
        }
        if let Err(e) = self.with_log(|log| log.set_config(log_config)) {
            tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "topic config not applied to the log");
        }
    }

    fn close(&self) -> Option<Log> {
        let log = lock(&self.log).take();
        self.wake_waiters();
        log
    }
}

/// All partitions hosted by this broker.
pub struct ReplicaManager {
    ctx: Arc<ReplicaContext>,
    log_dir: PathBuf,
    node_id: i32,
    /// Idempotent producer ids held by all partitions together.
    producer_budget: Arc<ProducerBudget>,
    partitions: RwLock<HashMap<(TopicId, i32), Arc<Partition>>>,
    /// The high watermarks the last run checkpointed, read at start-up and
    /// consulted when a partition opens.
    checkpointed: crate::hw_checkpoint::HighWatermarks,
    /// What the last checkpoint wrote (skipped when nothing moved).
    last_checkpoint: Mutex<Vec<(String, i32, i64)>>,
}

const PARTITION_METADATA: &str = "partition.metadata";
/// Threads closing logs at shutdown (each close is mostly an fsync wait).
const SHUTDOWN_THREADS: usize = 8;
/// Threads opening logs (creation, start-up recovery): file-system latency.
const OPEN_THREADS: usize = 8;
const DELETE_SUFFIX: &str = "-delete";

impl ReplicaManager {
    /// `max_producer_ids`: the idempotent producer ids all partitions
    /// together remember (felice-broker's `MAX_PRODUCER_IDS_PER_BROKER`).
    pub fn new(
        log_dir: &Path,
        node_id: i32,
        clock: SharedClock,
        max_producer_ids: usize,
    ) -> ReplicaManager {
        ReplicaManager {
            ctx: ReplicaContext::new(clock),
            log_dir: log_dir.to_path_buf(),
            node_id,
            producer_budget: ProducerBudget::new(max_producer_ids),
            partitions: RwLock::new(HashMap::new()),
            checkpointed: crate::hw_checkpoint::read(log_dir),
            last_checkpoint: Mutex::new(Vec::new()),
        }
    }

    /// Writes every hosted partition's high watermark to the log
    /// directory's `replication-offset-checkpoint`, unless none moved since
    /// the last write (blocking: a file write and two fsyncs).
    /// What this broker's partitions share (offline reports among it).
    pub fn context(&self) -> &Arc<ReplicaContext> {
        &self.ctx
    }

    pub fn checkpoint_high_watermarks(&self) {
        let mut entries: Vec<(String, i32, i64)> = self
            .all()
            .iter()
            .map(|p| (p.topic.clone(), p.index, p.high_watermark()))
            .collect();
        entries.sort();
        let mut last = lock(&self.last_checkpoint);
        if *last == entries {
            return;
        }
        match crate::hw_checkpoint::write(&self.log_dir, &entries) {
            Ok(()) => *last = entries,
            Err(e) => {
                tracing::warn!(dir = %self.log_dir.display(), error = %e, "high-watermark checkpoint not written");
            }
        }
    }

    pub fn get(&self, topic_id: &TopicId, partition: i32) -> Option<Arc<Partition>> {
        match self.partitions.read() {
            Ok(g) => g.get(&(*topic_id, partition)).cloned(),
            Err(p) => p.into_inner().get(&(*topic_id, partition)).cloned(),
        }
    }

    pub fn all(&self) -> Vec<Arc<Partition>> {
        match self.partitions.read() {
            Ok(g) => g.values().cloned().collect(),
            Err(p) => p.into_inner().values().cloned().collect(),
        }
    }

    pub fn len(&self) -> usize {
        match self.partitions.read() {
            Ok(g) => g.len(),
            Err(p) => p.into_inner().len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes the hosted partitions match the image: opens (creating or
    /// recovering) the logs of partitions this broker replicates, closes and
    /// deletes those whose topic is gone, and applies changed topic configs
    /// (`settings_of` gives a topic's settings on this broker).
    /// Blocking I/O: call from a blocking thread. Also called at start-up,
    /// where it removes directories the image no longer knows.
    pub fn reconcile(
        &self,
        image: &MetadataImage,
        settings_of: impl Fn(&TopicImage) -> TopicSettings,
    ) -> Result<(), ReplicaError> {
        // Partitions to drop: topic gone, or recreated under a new id.
        let existing = self.all();
        for p in existing {
            let keep = image
                .topic_by_id(&p.topic_id)
                .is_some_and(|t| (p.index as usize) < t.partitions.len());
            if !keep {
                self.remove(&p);
            }
        }
        let mut to_open = Vec::new();
        for topic in image.topics() {
            let settings = settings_of(topic);
            for part in &topic.partitions {
                if !part.replicas.contains(&self.node_id) {
                    continue;
                }
                if let Some(p) = self.get(&topic.topic_id, part.partition) {
                    if p.settings() != settings {
                        p.set_settings(settings.clone());
                    }
                    p.apply_image(part);
                    p.forget_ineligible(image, &part.replicas);
                    continue;
                }
                let dir = self
                    .log_dir
                    .join(format!("{}-{}", topic.name, part.partition));
                let checkpointed_hw = self
                    .checkpointed
                    .get(&(topic.name.clone(), part.partition))
                    .copied();
                to_open.push(ToOpen {
                    dir,
                    topic: topic.name.clone(),
                    topic_id: topic.topic_id,
                    checkpointed_hw,
                    node_id: self.node_id,
                    image: part.clone(),
                    settings: settings.clone(),
                });
            }
        }
        // Opening is file-system latency (mkdir, create, or recovery reads):
        // spread it over a few threads. One failure does not stop the rest.
        let mut first_error = None;
        for (opened, image) in open_all(&to_open, &self.producer_budget, &self.ctx)
            .into_iter()
            .zip(to_open.iter().map(|t| &t.image))
        {
            match opened {
                Ok(p) => {
                    p.apply_image(image);
                    let key = (p.topic_id, p.index);
                    match self.partitions.write() {
                        Ok(mut g) => g.insert(key, Arc::new(p)),
                        Err(poisoned) => poisoned.into_inner().insert(key, Arc::new(p)),
                    };
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not open a partition log");
                    first_error.get_or_insert(e);
                }
            }
        }
        self.remove_stray_dirs();
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn remove(&self, p: &Arc<Partition>) {
        match self.partitions.write() {
            Ok(mut g) => g.remove(&(p.topic_id, p.index)),
            Err(poisoned) => poisoned.into_inner().remove(&(p.topic_id, p.index)),
        };
        if let Some(log) = p.close() {
            drop(log);
        }
        // Rename first (atomic), then remove: a crash in between leaves a
        // `-delete` directory that the next start removes.
        let doomed = p.dir.with_file_name(format!(
            "{}-{}.{}{}",
            p.topic,
            p.index,
            p.topic_id.simple(),
            DELETE_SUFFIX
        ));
        if std::fs::rename(&p.dir, &doomed).is_ok() {
            if let Err(e) = std::fs::remove_dir_all(&doomed) {
                tracing::warn!(dir = %doomed.display(), error = %e, "could not remove deleted partition");
            }
        }
    }

    /// Removes partition directories that no hosted partition owns: leftovers
    /// of a deletion interrupted by a crash.
    fn remove_stray_dirs(&self) {
        let Ok(entries) = std::fs::read_dir(&self.log_dir) else {
            return;
        };
        let owned: std::collections::HashSet<PathBuf> =
            self.all().iter().map(|p| p.dir.clone()).collect();
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() || owned.contains(&path) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().to_string();
            let is_partition_dir =
                name.ends_with(DELETE_SUFFIX) || path.join(PARTITION_METADATA).exists();
            if is_partition_dir {
                tracing::info!(dir = %path.display(), "removing a partition directory no topic owns");
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }

    /// Applies retention, producer expiry and due flushes to every partition
    /// (blocking).
    pub fn housekeeping(&self, retention: bool, expire_producers: bool) {
        let now = self.ctx.now_ms();
        for p in self.all() {
            let r = p.with_log(|log| {
                if expire_producers {
                    let expired = log.remove_expired_producers(now);
                    if expired > 0 {
                        tracing::debug!(topic = %p.topic, partition = p.index, expired, "producer ids expired");
                    }
                }
                if retention {
                    let removed = log.apply_retention(now, p.high_watermark())?;
                    if removed > 0 {
                        tracing::info!(topic = %p.topic, partition = p.index, removed, log_start_offset = log.log_start_offset(), "retention removed segments");
                    }
                }
                log.flush_if_due(now)
            });
            if let Err(e) = r {
                tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "housekeeping failed");
            }
        }
    }

    /// Compacts the logs of compacted topics that are dirty enough (blocking).
    /// Only planning and installing hold the partition's lock; rewriting the
    /// segments, the long part, does not, so appends and fetches go on.
    pub fn clean_logs(&self) {
        let now = self.ctx.now_ms();
        for p in self.all() {
            if !p.settings().log.cleanup_compact {
                continue;
            }
            let plan = match p.with_log(|log| Ok(log.clean_plan(now))) {
                Ok(Some(plan)) => plan,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "cleaner: no plan");
                    continue;
                }
            };
            let cleaned = match felice_log::build_cleaned(&plan, now) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "cleaner: rewrite failed");
                    continue;
                }
            };
            if let Err(e) = p.with_log(|log| log.install_cleaned(cleaned, now)) {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "cleaner: install failed");
            }
        }
    }

    /// Closes every log cleanly (flush + recovery checkpoint). Blocking.
    /// Logs close in parallel on a few threads: each close is mostly fsync
    /// latency, and the disk serves several at once.
    pub fn shutdown(&self) {
        self.checkpoint_high_watermarks();
        let partitions = self.all();
        let threads = SHUTDOWN_THREADS.min(partitions.len().max(1));
        let chunk = partitions.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            for part in partitions.chunks(chunk) {
                scope.spawn(move || {
                    for p in part {
                        if let Some(log) = p.close() {
                            if let Err(e) = log.close() {
                                tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "closing log failed");
                            }
                        }
                    }
                });
            }
        });
    }
}

/// A partition log to open during reconcile.
struct ToOpen {
    dir: PathBuf,
    topic: String,
    topic_id: TopicId,
    /// Its high watermark in the last checkpoint, if it was there.
    checkpointed_hw: Option<i64>,
    node_id: i32,
    /// The controller's word on it, applied once it is open.
    image: PartitionImage,
    settings: TopicSettings,
}

/// Opens logs on up to `OPEN_THREADS` threads, results in input order.
fn open_all(
    list: &[ToOpen],
    budget: &Arc<ProducerBudget>,
    ctx: &Arc<ReplicaContext>,
) -> Vec<Result<Partition, ReplicaError>> {
    let open = |t: &ToOpen| {
        open_partition(t, ctx.clone()).inspect(|p| {
            if let Some(log) = lock(&p.log).as_mut() {
                log.set_producer_budget(budget.clone());
            }
        })
    };
    if list.len() <= 1 {
        return list.iter().map(open).collect();
    }
    let chunk = list.len().div_ceil(OPEN_THREADS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = list
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(open).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(results) => results,
                // A panic in our own open code: report it per partition
                // rather than poisoning the broker.
                Err(_) => vec![Err(ReplicaError::Closed(
                    "partition open thread panicked".into(),
                ))],
            })
            .collect()
    })
}

fn open_partition(t: &ToOpen, ctx: Arc<ReplicaContext>) -> Result<Partition, ReplicaError> {
    let (dir, topic_id) = (t.dir.as_path(), t.topic_id);
    let meta_path = dir.join(PARTITION_METADATA);
    // A directory left by an older topic of the same name: start afresh.
    if let Ok(text) = std::fs::read_to_string(&meta_path) {
        if !text.contains(&topic_id.to_string()) {
            tracing::info!(dir = %dir.display(), "partition directory belongs to an older topic; removing it");
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    let log_config: LogConfig = t.settings.log.clone();
    let log = Log::open(dir, log_config, ctx.now_ms())?;
    if !meta_path.exists() {
        let text = format!("version: 0\ntopic_id: {topic_id}\n");
        std::fs::write(&meta_path, text).map_err(|source| LogError::Io {
            path: meta_path.clone(),
            source,
        })?;
    }
    let leo = log.log_end_offset();
    let lso = log.log_start_offset();
    // The high watermark of the last checkpoint, within the log (Kafka
    // clamps it the same way); a partition the checkpoint lacks starts at
    // its log start offset. The leader moves it up from there: at once when
    // it is the only replica.
    let hw = t.checkpointed_hw.unwrap_or(0).clamp(lso, leo);
    let state = PartitionState::new(t.node_id, t.settings.replication, Offset(leo), Offset(hw));
    Ok(Partition {
        topic: t.topic.clone(),
        topic_id,
        index: t.image.partition,
        // Set by `apply_image` once open.
        leader_epoch: AtomicI32::new(-1),
        dir: dir.to_path_buf(),
        high_watermark: AtomicI64::new(hw),
        log_start_offset: AtomicI64::new(lso),
        log_end_offset: AtomicI64::new(leo),
        log: Mutex::new(Some(log)),
        settings: RwLock::new(t.settings.clone()),
        state: Mutex::new(state),
        waiters: Mutex::new(Vec::new()),
        offline: AtomicBool::new(false),
        ctx,
    })
}

impl Partition {
    /// Takes `waiter` out of the purgatory list (a fetch that timed out).
    pub fn remove_waiter(&self, waiter: &Arc<Notify>) {
        lock(&self.waiters).retain(|w| !Arc::ptr_eq(w, waiter));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::state::ReplicationConfig;
    use felice_metadata::MetadataRecord;

    const T: TopicId = TopicId::from_u128(42);

    fn settings(min_isr: usize) -> TopicSettings {
        TopicSettings {
            log: LogConfig::default(),
            max_message_bytes: 1 << 20,
            log_append_time: false,
            compression: None,
            replication: ReplicationConfig {
                replica_lag_time_max_ms: 30_000,
                min_insync_replicas: min_isr,
            },
        }
    }

    /// Topic "t", one partition on `replicas`, led by `leader` with `isr`.
    fn image(
        replicas: &[i32],
        isr: &[i32],
        leader: i32,
        epochs: (i32, i32),
        base: Option<MetadataImage>,
    ) -> MetadataImage {
        let mut image = base.unwrap_or_else(|| {
            let mut i = MetadataImage::default();
            i.apply_mut(&MetadataRecord::Topic {
                name: "t".into(),
                topic_id: T,
            });
            i
        });
        image.apply_mut(&MetadataRecord::Partition {
            topic_id: T,
            partition: 0,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: epochs.0,
            partition_epoch: epochs.1,
        });
        image
    }

    fn batch() -> ValidatedBatch {
        ValidatedBatch::new(felice_wire::build_batch(&[(None, Some(&b"v"[..]), 1_000)]).into())
            .expect("a valid batch")
    }

    fn manager(dir: &Path) -> ReplicaManager {
        let clock: SharedClock = Arc::new(ManualClock::new(1_000_000));
        ReplicaManager::new(dir, 1, clock, 1_000)
    }

    #[test]
    fn a_single_replica_leader_moves_the_high_watermark_on_append() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = manager(dir.path());
        let img = image(&[1], &[1], 1, (3, 4), None);
        m.reconcile(&img, |_| settings(2)).expect("reconcile");
        let p = m.get(&T, 0).expect("hosted");
        assert_eq!(p.leader_epoch(), 3);
        // min.insync.replicas=2 on one replica: the effective minimum is 1.
        assert_eq!(p.check_acks_all(), Ok(()));
        p.append(&batch()).expect("append");
        p.append(&batch()).expect("append");
        assert_eq!((p.high_watermark(), p.log_end_offset()), (2, 2));
    }

    #[test]
    fn a_replicated_leader_waits_for_its_isr_and_refuses_acks_all_below_min_isr() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = manager(dir.path());
        let img = image(&[1, 2, 3], &[1, 2, 3], 1, (5, 7), None);
        m.reconcile(&img, |_| settings(2)).expect("reconcile");
        let p = m.get(&T, 0).expect("hosted");
        assert_eq!(p.check_acks_all(), Ok(()));
        p.append(&batch()).expect("append");
        // No follower has fetched: nothing is committed yet.
        assert_eq!((p.high_watermark(), p.log_end_offset()), (0, 1));
        // The ISR shrinks to the leader (same leader epoch, new partition
        // epoch): acks=all is refused before the append.
        let img = image(&[1, 2, 3], &[1], 1, (5, 8), Some(img));
        m.reconcile(&img, |_| settings(2)).expect("reconcile");
        assert_eq!(p.isr(), vec![1]);
        assert_eq!(p.leader_epoch(), 5);
        assert_eq!(
            p.check_acks_all(),
            Err(StateError::NotEnoughReplicas { isr: 1, min: 2 })
        );
        // Another broker leads: this one no longer takes acks=all.
        let img = image(&[1, 2, 3], &[2], 2, (6, 9), Some(img));
        m.reconcile(&img, |_| settings(2)).expect("reconcile");
        assert_eq!(p.leader_epoch(), 6);
        assert_eq!(p.check_acks_all(), Err(StateError::NotLeader));
    }

    #[test]
    fn a_restarted_replica_starts_at_its_checkpointed_high_watermark() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = manager(dir.path());
        // Leading with a full ISR no follower has fetched from: two records
        // written, none committed.
        let img = image(&[1, 2, 3], &[1, 2, 3], 1, (1, 1), None);
        m.reconcile(&img, |_| settings(1)).expect("reconcile");
        let p = m.get(&T, 0).expect("hosted");
        p.append(&batch()).expect("append");
        p.append(&batch()).expect("append");
        assert_eq!((p.high_watermark(), p.log_end_offset()), (0, 2));
        m.shutdown();
        let text = std::fs::read_to_string(dir.path().join(crate::hw_checkpoint::FILE))
            .expect("checkpoint");
        assert_eq!(text, "0\n1\nt 0 0\n");
        // Back as a follower: the uncommitted records stay invisible.
        let m = manager(dir.path());
        let img = image(&[1, 2, 3], &[2, 3], 2, (2, 2), Some(img));
        m.reconcile(&img, |_| settings(1)).expect("reconcile");
        let p = m.get(&T, 0).expect("hosted");
        assert_eq!((p.high_watermark(), p.log_end_offset()), (0, 2));
        m.shutdown();
        // Alone in its ISR, a leader commits its whole log at once.
        let m = manager(dir.path());
        let img = image(&[1], &[1], 1, (3, 3), Some(img));
        m.reconcile(&img, |_| settings(1)).expect("reconcile");
        let p = m.get(&T, 0).expect("hosted");
        assert_eq!((p.high_watermark(), p.log_end_offset()), (2, 2));
        m.checkpoint_high_watermarks();
        let text = std::fs::read_to_string(dir.path().join(crate::hw_checkpoint::FILE))
            .expect("checkpoint");
        assert_eq!(text, "0\n1\nt 0 2\n");
    }
}
