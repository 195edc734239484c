//! The group coordinator's shell around [`felice_coord::Group`]: keeps the
//! groups, parks JoinGroup/SyncGroup requests until the state machine answers
//! them, writes group and offset records to `__consumer_offsets`, replays
//! that topic at start-up, and runs the timers (session, join and sync
//! deadlines every [`TICK`], offset expiry every
//! `offsets.retention.check.interval.ms`).
//!
//! Placement: a group lives in partition `partition_for(group, n)` of
//! `__consumer_offsets` and its coordinator is that partition's leader, as in
//! Kafka. Groups move with that leadership ([`GroupCoordinator::on_image`]):
//! a partition this broker comes to lead is replayed up to its log end
//! offset before its groups are served (NOT_COORDINATOR meanwhile, which
//! sends clients back to FindCoordinator); one it no longer leads has its
//! groups dropped (their parked requests answered). Records are written, and
//! replicated to the ISR (acks=all, at most `offsets.commit.timeout.ms`),
//! before the state they describe is acknowledged (a SyncGroup answer, an
//! OffsetCommit answer).
//!
//! Concurrency: the group map and each group are behind `std::sync::Mutex`es
//! held for the length of one state-machine call plus, when it asks for one,
//! one log append (a `pwritev` into the page cache). Methods that may append
//! are blocking: handlers call them on a blocking thread. Lock order: group
//! map, then one group, then the parked-request map; never two groups.
//!
//! Bounds: groups ≤ `group.max.count`; members per group ≤ `group.max.size`
//! (pending KIP-394 ids included); parked requests ≤ one per member awaiting
//! join or sync, and each handler stops waiting after the rebalance timeout
//! plus [`PARK_SLACK`].

use crate::clock::SharedClock;
use crate::config::BrokerConfig;
use crate::controller::NewTopic;
use crate::replica::Partition;
use felice_coord::group::{
    GroupDescription, JoinRequest, JoinResponse, StoreReason, SyncRequest, SyncResponse,
};
use felice_coord::records::{self, OffsetValue, OffsetsKey};
use felice_coord::{Effect, Group, GroupConfig, GroupError, GroupState, RequestId};
use felice_metadata::{MetadataImage, TopicId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// How often session, join and sync deadlines are checked.
pub const TICK: Duration = Duration::from_millis(100);
/// How long past its rebalance timeout a parked request may wait before its
/// handler gives up (the state machine answers by then; this is a backstop).
pub const PARK_SLACK: Duration = Duration::from_secs(5);
/// Bytes read at a time while replaying a `__consumer_offsets` partition.
const REPLAY_READ_BYTES: usize = 1 << 20;
/// `offsets.commit.timeout.ms` (Kafka's default): how long a group or offset
/// record may wait for the ISR before the request fails.
const OFFSETS_COMMIT_TIMEOUT: Duration = Duration::from_millis(5_000);

/// The broker as the group coordinator sees it: a narrow port, so that the
/// coordinator knows nothing of `Broker` and a test (or a simulation) can
/// host it. Blocking methods: call on a blocking thread.
pub trait CoordinatorPort: Send + Sync {
    /// The newest metadata image the broker has applied.
    fn image(&self) -> Arc<MetadataImage>;
    /// Creates `topic` unless a topic of its name exists; returns an applied
    /// image that has it. Blocking.
    fn create_topic(&self, topic: &NewTopic) -> Result<Arc<MetadataImage>, GroupError>;
    /// The hosted partition `index` of topic `topic_id`: the coordinator
    /// appends its records there (an append returns once the record is as
    /// durable as an acknowledged write must be) and replays it.
    fn partition(&self, topic_id: &TopicId, index: i32) -> Option<Arc<Partition>>;
}

enum Parked {
    Join(oneshot::Sender<JoinResponse>),
    Sync(oneshot::Sender<SyncResponse>),
}

/// One partition's commit for [`GroupCoordinator::commit`].
pub struct CommitPartition {
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// Who commits: a member of the current generation, or an admin/simple
/// client (generation -1, no member id).
pub struct Committer<'a> {
    pub member_id: &'a str,
    pub group_instance_id: Option<&'a str>,
    pub generation_id: i32,
    /// OffsetCommit v2–v4 retention_time_ms; -1 = the broker's.
    pub retention_time_ms: i64,
    /// OffsetCommit v9+: a commit for a group that does not exist says
    /// GROUP_ID_NOT_FOUND instead of ILLEGAL_GENERATION.
    pub group_id_not_found: bool,
}

/// Committed offsets by topic: `(topic, [(partition, offset if committed)])`.
pub type FetchedOffsets = Vec<(String, Vec<(i32, Option<OffsetValue>)>)>;

/// A group as ListGroups shows it.
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
}

/// One group and the earliest time its timers need it (a lower bound,
/// refreshed after every state-machine call that may bring it forward;
/// heartbeats and commits only push deadlines later), so the 100 ms tick
/// reads one atomic per group instead of locking each and scanning members.
pub struct Slot {
    group: Mutex<Group>,
    next_deadline_ms: AtomicI64,
}

impl Slot {
    fn new(g: Group) -> Slot {
        let next = g.next_deadline_ms().unwrap_or(i64::MAX);
        Slot {
            group: Mutex::new(g),
            next_deadline_ms: AtomicI64::new(next),
        }
    }
}

type GroupRef = Arc<Slot>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The `__consumer_offsets` partitions this broker leads: it coordinates
/// exactly the groups that hash to them.
#[derive(Debug, Default)]
struct Ownership {
    /// The topic's partition count; 0 while it does not exist (then this
    /// broker takes every group, and creates the topic on first use).
    partitions: i32,
    led: std::collections::HashSet<i32>,
    /// Partitions this broker now leads whose groups are being replayed:
    /// their groups answer COORDINATOR_LOAD_IN_PROGRESS until loaded.
    loading: std::collections::HashSet<i32>,
}

/// How `__consumer_offsets` is created (`offsets.topic.*`).
struct OffsetsTopicConfig {
    num_partitions: i32,
    replication_factor: i16,
    segment_bytes: i32,
}

pub struct GroupCoordinator {
    cfg: GroupConfig,
    /// `message.max.bytes`: the largest batch the coordinator writes.
    max_record_bytes: usize,
    max_groups: usize,
    offset_metadata_max_bytes: usize,
    offsets_retention_ms: i64,
    offsets_topic: OffsetsTopicConfig,
    clock: SharedClock,
    node_id: i32,
    /// Which groups this broker coordinates, from the applied image.
    ownership: std::sync::RwLock<Ownership>,
    groups: Mutex<HashMap<String, GroupRef>>,
    parked: Mutex<HashMap<RequestId, Parked>>,
    next_request: AtomicU64,
}

impl GroupCoordinator {
    pub fn new(config: &BrokerConfig, clock: SharedClock) -> GroupCoordinator {
        GroupCoordinator {
            cfg: GroupConfig {
                min_session_timeout_ms: config.group_min_session_timeout_ms,
                max_session_timeout_ms: config.group_max_session_timeout_ms,
                initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
                max_size: config.group_max_size,
                max_metadata_bytes: config.message_max_bytes.max(0) as usize,
            },
            max_record_bytes: config.message_max_bytes.max(0) as usize,
            max_groups: config.group_max_count,
            offset_metadata_max_bytes: config.offset_metadata_max_bytes,
            offsets_retention_ms: config.offsets_retention_ms,
            offsets_topic: OffsetsTopicConfig {
                num_partitions: config.offsets_topic_num_partitions,
                replication_factor: config.offsets_topic_replication_factor,
                segment_bytes: config.offsets_topic_segment_bytes,
            },
            clock,
            node_id: config.node_id,
            ownership: std::sync::RwLock::new(Ownership::default()),
            groups: Mutex::new(HashMap::new()),
            parked: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
        }
    }

    /// Follows an applied image: which `__consumer_offsets` partitions this
    /// broker leads, so it coordinates their groups and refuses others'.
    /// Partitions it no longer leads lose their groups first; partitions it
    /// now leads are replayed (blocking) before they count as led.
    pub fn on_image(&self, port: &dyn CoordinatorPort, image: &MetadataImage) {
        let Some(t) = image.topic(OFFSETS_TOPIC) else {
            self.set_ownership(Ownership::default());
            return;
        };
        let partitions = t.partitions.len() as i32;
        let led: std::collections::HashSet<i32> = t
            .partitions
            .iter()
            .filter(|p| p.leader == self.node_id)
            .map(|p| p.partition)
            .collect();
        let before = match self.ownership.read() {
            Ok(g) => (g.partitions, g.led.clone()),
            Err(p) => (p.get_ref().partitions, p.get_ref().led.clone()),
        };
        let same_layout = before.0 == partitions;
        let kept: std::collections::HashSet<i32> = if same_layout {
            before.1.intersection(&led).copied().collect()
        } else {
            std::collections::HashSet::new()
        };
        let new: Vec<i32> = led.difference(&kept).copied().collect();
        // Resign first: no request may reach a group this broker stopped
        // coordinating. Groups of newly led partitions wait for their load.
        self.set_ownership(Ownership {
            partitions,
            led: kept.clone(),
            loading: new.iter().copied().collect(),
        });
        let resigned: std::collections::HashSet<i32> = if same_layout {
            before.1.difference(&led).copied().collect()
        } else {
            (0..partitions).filter(|p| !kept.contains(p)).collect()
        };
        // Before the topic existed this broker took every group, and the
        // topic is created while a group's first write waits under that
        // group's lock: those groups stay (they are this broker's writes).
        if before.0 != 0 && !resigned.is_empty() {
            self.unload(|group| {
                let p = records::partition_for(group, partitions);
                !kept.contains(&p)
            });
        }
        if !new.is_empty() {
            self.load_partitions(port, &t.topic_id, &new);
        }
        self.set_ownership(Ownership {
            partitions,
            led,
            loading: Default::default(),
        });
    }

    fn set_ownership(&self, next: Ownership) {
        match self.ownership.write() {
            Ok(mut g) => *g = next,
            Err(p) => *p.into_inner() = next,
        }
    }

    /// Drops the groups `gone` selects, answering their parked requests.
    fn unload(&self, gone: impl Fn(&str) -> bool) {
        let dropped: Vec<GroupRef> = {
            let mut groups = lock(&self.groups);
            let ids: Vec<String> = groups.keys().filter(|id| gone(id)).cloned().collect();
            ids.iter().filter_map(|id| groups.remove(id)).collect()
        };
        if dropped.is_empty() {
            return;
        }
        tracing::info!(
            groups = dropped.len(),
            "group coordinator: groups moved to another broker"
        );
        for group in dropped {
            let fx = lock(&group.group).mark_dead();
            self.deliver(fx);
        }
    }

    /// NOT_COORDINATOR unless this broker coordinates `group_id`;
    /// COORDINATOR_LOAD_IN_PROGRESS while its partition is being loaded
    /// (clients retry that on this broker, as with Kafka).
    pub fn owns(&self, group_id: &str) -> Result<(), GroupError> {
        let o = match self.ownership.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if o.partitions == 0 {
            return Ok(());
        }
        let p = records::partition_for(group_id, o.partitions);
        if o.led.contains(&p) {
            Ok(())
        } else if o.loading.contains(&p) {
            Err(GroupError::CoordinatorLoadInProgress)
        } else {
            Err(GroupError::NotCoordinator)
        }
    }

    /// The `__consumer_offsets` partition of a group, created on first use.
    fn offsets_partition(
        &self,
        port: &dyn CoordinatorPort,
        group_id: &str,
    ) -> Result<Arc<Partition>, GroupError> {
        let image = self.ensure_offsets_topic(port)?;
        let topic = image
            .topic(OFFSETS_TOPIC)
            .ok_or(GroupError::CoordinatorNotAvailable)?;
        let index = records::partition_for(group_id, topic.partitions.len() as i32);
        port.partition(&topic.topic_id, index)
            .ok_or(GroupError::CoordinatorNotAvailable)
    }

    /// Creates `__consumer_offsets` if it does not exist (Kafka creates it on
    /// the first FindCoordinator): `offsets.topic.num.partitions` partitions,
    /// compacted, `offsets.topic.segment.bytes` segments. Blocking.
    pub fn ensure_offsets_topic(
        &self,
        port: &dyn CoordinatorPort,
    ) -> Result<Arc<MetadataImage>, GroupError> {
        let image = port.image();
        if image.topic(OFFSETS_TOPIC).is_some() {
            return Ok(image);
        }
        let t = &self.offsets_topic;
        let brokers = image.brokers.len().max(1) as i16;
        let topic = NewTopic {
            name: OFFSETS_TOPIC.to_string(),
            num_partitions: t.num_partitions,
            replication_factor: t.replication_factor.min(brokers),
            assignments: vec![],
            configs: vec![
                ("cleanup.policy".into(), Some("compact".into())),
                ("compression.type".into(), Some("producer".into())),
                ("segment.bytes".into(), Some(t.segment_bytes.to_string())),
            ],
        };
        let image = port.create_topic(&topic)?;
        tracing::info!(partitions = t.num_partitions, "created {OFFSETS_TOPIC}");
        Ok(image)
    }

    fn group(&self, group_id: &str) -> Option<GroupRef> {
        lock(&self.groups).get(group_id).cloned()
    }

    fn group_or_create(&self, group_id: &str, now: i64) -> Result<GroupRef, GroupError> {
        let mut groups = lock(&self.groups);
        if let Some(g) = groups.get(group_id) {
            return Ok(g.clone());
        }
        if groups.len() >= self.max_groups {
            tracing::warn!(
                group = group_id,
                limit = self.max_groups,
                "group.max.count reached; refusing a new group"
            );
            return Err(GroupError::GroupMaxSizeReached);
        }
        let g = Arc::new(Slot::new(Group::new(group_id, &self.cfg, now)));
        groups.insert(group_id.to_string(), g.clone());
        Ok(g)
    }

    fn park(&self, p: Parked) -> RequestId {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        lock(&self.parked).insert(id, p);
        id
    }

    fn deliver(&self, effects: Vec<Effect>) {
        if effects.is_empty() {
            return;
        }
        let mut parked = lock(&self.parked);
        for e in effects {
            match e {
                Effect::Join(id, resp) => {
                    if let Some(Parked::Join(tx)) = parked.remove(&id) {
                        let _ = tx.send(resp);
                    }
                }
                Effect::Sync(id, resp) => {
                    if let Some(Parked::Sync(tx)) = parked.remove(&id) {
                        let _ = tx.send(resp);
                    }
                }
            }
        }
    }

    /// Forgets a parked request whose handler stopped waiting.
    pub fn unpark(&self, id: RequestId) {
        lock(&self.parked).remove(&id);
    }

    /// Runs `f` on the group, writes the group record it asks for (answers
    /// that depend on the record wait for the write), then delivers answers.
    fn run(
        &self,
        port: &dyn CoordinatorPort,
        slot: &Slot,
        now: i64,
        f: impl FnOnce(&mut Group) -> Vec<Effect>,
    ) {
        let mut g = lock(&slot.group);
        let mut fx = f(&mut g);
        while let Some((reason, value)) = g.take_store() {
            let key = records::encode_group_key(&g.group_id);
            let value = records::encode_group_value(&value);
            let result = self.append(port, &g.group_id, vec![(key, Some(value))], now);
            if let (Err(e), StoreReason::Snapshot) = (&result, &reason) {
                tracing::warn!(group = %g.group_id, error = %e, "could not write the group record");
            }
            fx.extend(g.stored(reason, result, now));
        }
        slot.next_deadline_ms
            .store(g.next_deadline_ms().unwrap_or(i64::MAX), Ordering::Release);
        drop(g);
        self.deliver(fx);
    }

    /// Appends records to the group's partition of `__consumer_offsets`
    /// (creating the topic if it does not exist yet). Blocking.
    fn append(
        &self,
        port: &dyn CoordinatorPort,
        group_id: &str,
        recs: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        now: i64,
    ) -> Result<(), GroupError> {
        let partition = self.offsets_partition(port, group_id)?;
        let specs: Vec<felice_wire::RecordSpec<'_>> = recs
            .iter()
            .map(|(k, v)| (Some(k.as_slice()), v.as_deref(), now))
            .collect();
        let batch = felice_wire::build_batch(&specs);
        if batch.len() > self.max_record_bytes {
            tracing::warn!(
                group = group_id,
                bytes = batch.len(),
                limit = self.max_record_bytes,
                "group coordinator record larger than message.max.bytes"
            );
            return Err(GroupError::RecordTooLarge);
        }
        // acks=all, as Kafka's coordinator writes (its error mapping).
        if let Err(e) = partition.check_acks_all() {
            tracing::warn!(topic = OFFSETS_TOPIC, partition = partition.index, error = %e, "group coordinator cannot write");
            return Err(match e {
                felice_replica::StateError::NotEnoughReplicas { .. } => {
                    GroupError::CoordinatorNotAvailable
                }
                _ => GroupError::NotCoordinator,
            });
        }
        // Built here, so valid: checked once as any batch the log takes.
        let batch = felice_wire::ValidatedBatch::new(batch.into()).map_err(|e| {
            tracing::error!(group = group_id, error = %e, "group coordinator built an invalid batch");
            GroupError::StorageError
        })?;
        let info = partition.append(&batch).map_err(|e| {
            tracing::warn!(topic = OFFSETS_TOPIC, partition = partition.index, error = %e, "group coordinator append failed");
            GroupError::StorageError
        })?;
        use felice_replica::Completion;
        match partition.await_completion_blocking(
            felice_replica::Offset(info.last_offset + 1),
            felice_replica::LeaderEpoch(info.leader_epoch),
            OFFSETS_COMMIT_TIMEOUT,
        ) {
            Completion::Done => Ok(()),
            Completion::NotLeader => Err(GroupError::NotCoordinator),
            Completion::NotEnoughReplicasAfterAppend | Completion::Waiting => {
                tracing::warn!(
                    topic = OFFSETS_TOPIC,
                    partition = partition.index,
                    "group coordinator record not replicated in time"
                );
                Err(GroupError::CoordinatorNotAvailable)
            }
        }
    }

    /// Tombstones `offsets` of the group (and the group itself with
    /// `with_group`) in `__consumer_offsets`, then forgets them in memory.
    /// Nothing changes in memory when the write fails. Blocking.
    fn tombstone(
        &self,
        port: &dyn CoordinatorPort,
        g: &mut Group,
        offsets: &[(String, i32)],
        with_group: bool,
        now: i64,
    ) -> Result<(), GroupError> {
        let id = g.group_id.clone();
        let mut recs: Vec<(Vec<u8>, Option<Vec<u8>>)> = offsets
            .iter()
            .map(|(t, p)| (records::encode_offset_key(&id, t, *p), None))
            .collect();
        if with_group {
            recs.push((records::encode_group_key(&id), None));
        }
        if recs.is_empty() {
            return Ok(());
        }
        self.append(port, &id, recs, now)?;
        for (t, p) in offsets {
            g.remove_offset(t, *p);
        }
        Ok(())
    }

    /// Marks a deleted group Dead under its held lock `g` (answering
    /// whatever waits in it), releases that lock, and takes the group out
    /// of the map unless the map already holds a newer group of that name.
    fn forget(&self, group: &GroupRef, mut g: MutexGuard<'_, Group>) {
        let id = g.group_id.clone();
        let fx = g.mark_dead();
        drop(g);
        let mut groups = lock(&self.groups);
        if groups.get(&id).is_some_and(|x| Arc::ptr_eq(x, group)) {
            groups.remove(&id);
        }
        drop(groups);
        self.deliver(fx);
    }

    // ------------------------------------------------------------ requests

    /// JoinGroup. Blocking (may write the group record). The receiver gets
    /// the answer, at once or when the join phase completes.
    pub fn join(
        &self,
        port: &dyn CoordinatorPort,
        group_id: &str,
        req: JoinRequest,
    ) -> (RequestId, oneshot::Receiver<JoinResponse>) {
        let (tx, rx) = oneshot::channel();
        let id = self.park(Parked::Join(tx));
        let now = self.clock.now_ms();
        if group_id.is_empty() {
            self.deliver(vec![Effect::Join(
                id,
                JoinResponse::error(GroupError::InvalidGroupId, &req.member_id),
            )]);
            return (id, rx);
        }
        if let Err(e) = self.owns(group_id) {
            self.deliver(vec![Effect::Join(
                id,
                JoinResponse::error(e, &req.member_id),
            )]);
            return (id, rx);
        }
        // Kafka checks the session timeout before creating the group.
        if req.session_timeout_ms < self.cfg.min_session_timeout_ms
            || req.session_timeout_ms > self.cfg.max_session_timeout_ms
        {
            self.deliver(vec![Effect::Join(
                id,
                JoinResponse::error(GroupError::InvalidSessionTimeout, &req.member_id),
            )]);
            return (id, rx);
        }
        let group = if req.member_id.is_empty() {
            self.group_or_create(group_id, now)
        } else {
            self.group(group_id).ok_or(GroupError::UnknownMemberId)
        };
        match group {
            Ok(g) => {
                self.run(port, &g, now, |g| g.join(&self.cfg, req, id, now));
                // A join that was refused leaves nothing behind: a client
                // cycling through group ids cannot fill group.max.count.
                // Map, then group (the lock order); a join that already holds
                // this group finds it Dead and its client retries.
                let mut groups = lock(&self.groups);
                if groups.get(group_id).is_some_and(|x| Arc::ptr_eq(x, &g)) {
                    let mut inner = lock(&g.group);
                    if inner.is_unused() {
                        let _ = inner.mark_dead();
                        drop(inner);
                        groups.remove(group_id);
                    }
                }
            }
            Err(e) => self.deliver(vec![Effect::Join(
                id,
                JoinResponse::error(e, &req.member_id),
            )]),
        }
        (id, rx)
    }

    /// SyncGroup. Blocking (the leader's assignment is written first).
    pub fn sync(
        &self,
        port: &dyn CoordinatorPort,
        group_id: &str,
        req: SyncRequest,
    ) -> (RequestId, oneshot::Receiver<SyncResponse>) {
        let (tx, rx) = oneshot::channel();
        let id = self.park(Parked::Sync(tx));
        let now = self.clock.now_ms();
        if let Err(e) = self.owns(group_id) {
            self.deliver(vec![Effect::Sync(id, SyncResponse::error(e))]);
            return (id, rx);
        }
        match self.group(group_id) {
            Some(g) => self.run(port, &g, now, |g| g.sync(req, id, now)),
            None => {
                let e = if group_id.is_empty() {
                    GroupError::InvalidGroupId
                } else {
                    GroupError::UnknownMemberId
                };
                self.deliver(vec![Effect::Sync(id, SyncResponse::error(e))]);
            }
        }
        (id, rx)
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation_id: i32,
    ) -> Result<(), GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        self.owns(group_id)?;
        let g = self.group(group_id).ok_or(GroupError::UnknownMemberId)?;
        let r = lock(&g.group).heartbeat(member_id, instance, generation_id, self.clock.now_ms());
        r
    }

    /// LeaveGroup: per-member results. Blocking (an emptied group's record is written).
    pub fn leave(
        &self,
        port: &dyn CoordinatorPort,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        self.owns(group_id)?;
        let Some(g) = self.group(group_id) else {
            return Ok(members
                .iter()
                .map(|_| Err(GroupError::UnknownMemberId))
                .collect());
        };
        let now = self.clock.now_ms();
        let mut results = Vec::new();
        self.run(port, &g, now, |g| {
            let (r, fx) = g.leave(members, now);
            results = r;
            fx
        });
        Ok(results)
    }

    /// OffsetCommit: per topic, per partition results, in request order.
    /// Blocking (writes the offsets).
    pub fn commit(
        &self,
        port: &dyn CoordinatorPort,
        group_id: &str,
        who: &Committer<'_>,
        topics: &[(String, Vec<CommitPartition>)],
    ) -> Vec<Vec<Result<(), GroupError>>> {
        if let Err(e) = self.owns(group_id) {
            return topics
                .iter()
                .map(|(_, partitions)| partitions.iter().map(|_| Err(e)).collect())
                .collect();
        }
        let now = self.clock.now_ms();
        // Partitions of unknown topics are refused before the group is
        // looked at (as Kafka's request layer does); metadata too large, too.
        let image = port.image();
        let mut results: Vec<Vec<Result<(), GroupError>>> = topics
            .iter()
            .map(|(topic, partitions)| {
                let known = image.topic(topic);
                partitions
                    .iter()
                    .map(|p| {
                        let exists = known.is_some_and(|t| {
                            p.partition >= 0 && (p.partition as usize) < t.partitions.len()
                        });
                        let meta_len = p.metadata.as_ref().map_or(0, |m| m.encode_utf16().count());
                        if !exists {
                            Err(GroupError::UnknownTopicOrPartition)
                        } else if meta_len > self.offset_metadata_max_bytes {
                            Err(GroupError::OffsetMetadataTooLarge)
                        } else {
                            Ok(())
                        }
                    })
                    .collect()
            })
            .collect();
        if !results.iter().flatten().any(|r| r.is_ok()) {
            return results;
        }
        let fail_valid = |results: &mut Vec<Vec<Result<(), GroupError>>>, e: GroupError| {
            for r in results.iter_mut().flatten().filter(|r| r.is_ok()) {
                *r = Err(e);
            }
        };
        let group = match self.group(group_id) {
            Some(g) => g,
            // No such group: only a commit outside group management (admin,
            // or a consumer that assigns partitions itself) creates one.
            None if who.generation_id < 0 => match self.group_or_create(group_id, now) {
                Ok(g) => g,
                Err(e) => {
                    fail_valid(&mut results, e);
                    return results;
                }
            },
            None => {
                let e = if who.group_id_not_found {
                    GroupError::GroupIdNotFound
                } else {
                    GroupError::IllegalGeneration
                };
                fail_valid(&mut results, e);
                return results;
            }
        };
        let mut g = lock(&group.group);
        if let Err(e) =
            g.validate_commit(who.member_id, who.group_instance_id, who.generation_id, now)
        {
            fail_valid(&mut results, e);
            return results;
        }
        let mut recs = Vec::new();
        let mut accepted = Vec::new();
        for ((topic, partitions), row) in topics.iter().zip(&results) {
            for (p, r) in partitions.iter().zip(row) {
                if r.is_ok() {
                    let metadata = p.metadata.clone().unwrap_or_default();
                    let value = OffsetValue {
                        offset: p.offset,
                        leader_epoch: p.leader_epoch,
                        metadata,
                        commit_timestamp_ms: now,
                        expire_timestamp_ms: if who.retention_time_ms >= 0 {
                            now.saturating_add(who.retention_time_ms)
                        } else {
                            -1
                        },
                    };
                    recs.push((
                        records::encode_offset_key(group_id, topic, p.partition),
                        Some(records::encode_offset_value(&value)),
                    ));
                    accepted.push((topic.clone(), p.partition, value));
                }
            }
        }
        if let Err(e) = self.append(port, group_id, recs, now) {
            fail_valid(&mut results, e);
            return results;
        }
        for (topic, partition, value) in accepted {
            g.commit_offset(&topic, partition, value);
        }
        results
    }

    /// OffsetFetch: `None` topics = every committed offset of the group.
    /// A group or partition without a commit answers offset -1.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> Result<FetchedOffsets, GroupError> {
        self.owns(group_id)?;
        let group = self.group(group_id);
        let g = group.as_ref().map(|g| lock(&g.group));
        Ok(match topics {
            Some(topics) => topics
                .iter()
                .map(|(t, ps)| {
                    let row = ps
                        .iter()
                        .map(|p| (*p, g.as_ref().and_then(|g| g.offset(t, *p).cloned())))
                        .collect();
                    (t.clone(), row)
                })
                .collect(),
            None => {
                let mut out: FetchedOffsets = Vec::new();
                if let Some(g) = &g {
                    for (t, p, v) in g.offsets() {
                        match out.last_mut() {
                            Some((last, row)) if last == t => row.push((p, Some(v.clone()))),
                            _ => out.push((t.to_string(), vec![(p, Some(v.clone()))])),
                        }
                    }
                }
                out
            }
        })
    }

    /// DescribeGroups of one group; `None` = no such group.
    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let g = self.group(group_id)?;
        let d = lock(&g.group).describe();
        Some(d)
    }

    pub fn list(&self) -> Vec<GroupListing> {
        let groups: Vec<GroupRef> = lock(&self.groups).values().cloned().collect();
        let mut out: Vec<GroupListing> = groups
            .iter()
            .map(|g| {
                let g = lock(&g.group);
                GroupListing {
                    group_id: g.group_id.clone(),
                    protocol_type: g.protocol_type().unwrap_or_default().to_string(),
                    state: g.state(),
                }
            })
            .filter(|l| l.state != GroupState::Dead)
            .collect();
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out
    }

    /// DeleteGroups of one group: only an empty group; its offsets and its
    /// record are tombstoned. Blocking.
    pub fn delete(&self, port: &dyn CoordinatorPort, group_id: &str) -> Result<(), GroupError> {
        self.owns(group_id)?;
        let group = self.group(group_id).ok_or(GroupError::GroupIdNotFound)?;
        let mut g = lock(&group.group);
        match g.state() {
            GroupState::Dead => return Err(GroupError::GroupIdNotFound),
            GroupState::Empty => {}
            _ => return Err(GroupError::NonEmptyGroup),
        }
        let offsets: Vec<(String, i32)> = g.offsets().map(|(t, p, _)| (t.to_string(), p)).collect();
        self.tombstone(port, &mut g, &offsets, true, self.clock.now_ms())?;
        self.forget(&group, g);
        Ok(())
    }

    /// OffsetDelete: the group's offsets of partitions of topics it does not
    /// subscribe to. Blocking.
    pub fn delete_offsets(
        &self,
        port: &dyn CoordinatorPort,
        group_id: &str,
        topics: &[(String, Vec<i32>)],
    ) -> Result<Vec<Vec<Result<(), GroupError>>>, GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        self.owns(group_id)?;
        let group = self.group(group_id).ok_or(GroupError::GroupIdNotFound)?;
        let mut g = lock(&group.group);
        if g.state() == GroupState::Dead {
            return Err(GroupError::GroupIdNotFound);
        }
        // Some(None): subscriptions unreadable, every topic counts as subscribed.
        let subscribed: Option<Option<std::collections::HashSet<String>>> =
            if g.state() == GroupState::Empty {
                Some(Some(Default::default()))
            } else {
                g.subscribed_topics(subscription_topics)
            };
        // A non-empty group whose subscriptions we cannot read (not a
        // "consumer" group) cannot have offsets deleted.
        let Some(subscribed) = subscribed else {
            return Err(GroupError::NonEmptyGroup);
        };
        let mut results = Vec::new();
        let mut doomed = Vec::new();
        for (topic, partitions) in topics {
            let row = partitions
                .iter()
                .map(|p| {
                    if subscribed.as_ref().is_none_or(|s| s.contains(topic)) {
                        Err(GroupError::GroupSubscribedToTopic)
                    } else {
                        if g.offset(topic, *p).is_some() {
                            doomed.push((topic.clone(), *p));
                        }
                        Ok(())
                    }
                })
                .collect();
            results.push(row);
        }
        self.tombstone(port, &mut g, &doomed, false, self.clock.now_ms())?;
        Ok(results)
    }

    /// Kafka drops the committed offsets of deleted topics: tombstones them
    /// in every group that has some (blocking).
    pub fn remove_offsets_of_topics(&self, port: &dyn CoordinatorPort, topics: &[String]) {
        if topics.is_empty() {
            return;
        }
        let now = self.clock.now_ms();
        let groups: Vec<(String, GroupRef)> = lock(&self.groups)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (id, group) in groups {
            let mut g = lock(&group.group);
            let doomed: Vec<(String, i32)> = g
                .offsets()
                .filter(|(t, _, _)| topics.iter().any(|d| d == t))
                .map(|(t, p, _)| (t.to_string(), p))
                .collect();
            if let Err(e) = self.tombstone(port, &mut g, &doomed, false, now) {
                tracing::warn!(group = %id, error = %e, "could not remove offsets of deleted topics")
            }
        }
    }

    // -------------------------------------------------------------- timers

    /// Session, join and sync deadlines of every group. Blocking.
    pub fn tick(&self, port: &dyn CoordinatorPort) {
        let now = self.clock.now_ms();
        // One atomic read per group under the map lock; only due groups are
        // taken out and locked.
        let due: Vec<GroupRef> = lock(&self.groups)
            .values()
            .filter(|g| g.next_deadline_ms.load(Ordering::Acquire) <= now)
            .cloned()
            .collect();
        for g in due {
            self.run(port, &g, now, |g| g.tick(now));
        }
    }

    /// KIP-211 offset expiry; groups left empty with no offsets are removed
    /// (their record tombstoned). Blocking.
    pub fn expire_offsets(&self, port: &dyn CoordinatorPort) {
        let now = self.clock.now_ms();
        let groups: Vec<(String, GroupRef)> = lock(&self.groups)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut removed_offsets = 0usize;
        for (id, group) in groups {
            let mut g = lock(&group.group);
            let expired = g.expired_offsets(self.offsets_retention_ms, now, subscription_topics);
            let drop_group = g.state() == GroupState::Empty && g.offset_count() == expired.len();
            if expired.is_empty() && !drop_group {
                continue;
            }
            if let Err(e) = self.tombstone(port, &mut g, &expired, drop_group, now) {
                tracing::warn!(group = %id, error = %e, "could not expire offsets");
                continue;
            }
            removed_offsets += expired.len();
            if drop_group {
                self.forget(&group, g);
            }
        }
        if removed_offsets > 0 {
            tracing::info!(removed_offsets, "expired committed offsets");
        }
    }

    // -------------------------------------------------------------- replay

    /// Rebuilds the groups of `partitions` of `__consumer_offsets` from
    /// their logs, up to the log end offset as Kafka's coordinator loads
    /// (this broker leads them: its log is the one the ISR will hold).
    /// Blocking.
    fn load_partitions(&self, port: &dyn CoordinatorPort, topic_id: &TopicId, partitions: &[i32]) {
        let now = self.clock.now_ms();
        let mut groups: HashMap<String, Group> = HashMap::new();
        let mut loaded = 0usize;
        for &index in partitions {
            let Some(p) = port.partition(topic_id, index) else {
                continue;
            };
            match replay_partition(&p, |key, value| {
                loaded += 1;
                self.apply_record(&mut groups, key, value, now);
            }) {
                Ok(()) => {}
                Err(e) => {
                    tracing::error!(partition = index, error = %e, "replaying __consumer_offsets stopped early")
                }
            }
        }
        let mut map = lock(&self.groups);
        for (id, g) in groups {
            if !g.is_removable() || g.generation_id() > 0 {
                map.insert(id, Arc::new(Slot::new(g)));
            }
        }
        if loaded > 0 {
            tracing::info!(
                records = loaded,
                groups = map.len(),
                "group coordinator state loaded from __consumer_offsets"
            );
        }
    }

    fn apply_record(
        &self,
        groups: &mut HashMap<String, Group>,
        key: &[u8],
        value: Option<&[u8]>,
        now: i64,
    ) {
        let key = match records::decode_key(key) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "skipping an unreadable __consumer_offsets key");
                return;
            }
        };
        match key {
            OffsetsKey::Offset {
                group,
                topic,
                partition,
            } => match value {
                Some(v) => match records::decode_offset_value(v) {
                    Ok(v) => groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(&group, &self.cfg, now))
                        .commit_offset(&topic, partition, v),
                    Err(e) => {
                        tracing::warn!(group = %group, error = %e, "skipping an unreadable offset record")
                    }
                },
                None => {
                    if let Some(g) = groups.get_mut(&group) {
                        g.remove_offset(&topic, partition);
                    }
                }
            },
            OffsetsKey::Group { group } => match value {
                Some(v) => match records::decode_group_value(v) {
                    Ok(v) => groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(&group, &self.cfg, now))
                        .load(v, now),
                    Err(e) => {
                        tracing::warn!(group = %group, error = %e, "skipping an unreadable group record")
                    }
                },
                None => {
                    groups.remove(&group);
                }
            },
            OffsetsKey::Other(_) => {}
        }
    }
}

/// Reads one partition from its log start to its log end, calling
/// `apply` for each record's key and value. Records without a key and
/// compressed batches (never written by Felice) are skipped.
fn replay_partition(
    p: &Partition,
    mut apply: impl FnMut(&[u8], Option<&[u8]>),
) -> Result<(), crate::replica::ReplicaError> {
    let mut offset = p.log_start_offset();
    let end = p.log_end_offset();
    while offset < end {
        let planned = p.plan_read(offset, REPLAY_READ_BYTES, true, true)?;
        let Some(slice) = planned.slice else {
            break;
        };
        let bytes = slice
            .read_bytes()
            .map_err(|source| felice_log::LogError::Io {
                path: std::path::PathBuf::from(OFFSETS_TOPIC),
                source,
            })?;
        let before = offset;
        for batch in felice_wire::Batches::allowing_partial_tail(&bytes) {
            let Ok((range, header)) = batch else { break };
            let next = header.next_offset();
            if next <= offset {
                continue;
            }
            offset = next;
            let Some(buf) = bytes.get(range) else { break };
            let Ok(recs) = felice_wire::Records::new(buf) else {
                tracing::warn!(
                    partition = p.index,
                    base_offset = header.base_offset,
                    "skipping a compressed or unreadable batch in __consumer_offsets"
                );
                continue;
            };
            for r in recs.flatten() {
                if let Some(key) = r.key {
                    apply(key, r.value);
                }
            }
        }
        if offset == before {
            break; // no progress: a batch larger than the read; stop rather than spin
        }
    }
    Ok(())
}

/// The topics of a "consumer" protocol subscription (ConsumerProtocolSubscription:
/// version int16, then an array of topic strings).
fn subscription_topics(metadata: &bytes::Bytes) -> Option<Vec<String>> {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    let mut buf = metadata.clone();
    if buf.len() < 2 {
        return None;
    }
    let version = i16::from_be_bytes([buf[0], buf[1]]);
    bytes::Buf::advance(&mut buf, 2);
    let version = version.clamp(0, 3);
    let sub = ConsumerProtocolSubscription::decode(&mut buf, version).ok()?;
    Some(sub.topics.into_iter().map(|t| t.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// While a newly led `__consumer_offsets` partition is replayed, its
    /// groups answer COORDINATOR_LOAD_IN_PROGRESS (clients retry here);
    /// groups of partitions led elsewhere answer NOT_COORDINATOR.
    #[test]
    fn a_group_of_a_partition_being_loaded_answers_load_in_progress() {
        let config = BrokerConfig::load(None, &[]).expect("config");
        let c = GroupCoordinator::new(&config, crate::clock::system());
        let n = 10;
        let loading = records::partition_for("g", n);
        let other = (0..)
            .map(|i| format!("g{i}"))
            .find(|g| records::partition_for(g, n) != loading)
            .expect("a group elsewhere");
        c.set_ownership(Ownership {
            partitions: n,
            led: Default::default(),
            loading: [loading].into(),
        });
        assert_eq!(c.owns("g"), Err(GroupError::CoordinatorLoadInProgress));
        assert_eq!(c.owns(&other), Err(GroupError::NotCoordinator));
        c.set_ownership(Ownership {
            partitions: n,
            led: [loading].into(),
            loading: Default::default(),
        });
        assert_eq!(c.owns("g"), Ok(()));
        assert_eq!(c.owns(&other), Err(GroupError::NotCoordinator));
    }
}
