//! One classic consumer group: Kafka's group state machine (Empty,
//! PreparingRebalance, CompletingRebalance, Stable, Dead) and the group's
//! committed offsets.
//!
//! Pure: no I/O, no clock, no randomness. Events come in as method calls
//! with `now_ms` and, for joins, a member id the caller generated; what must
//! happen next comes out as [`Effect`]s (answers to parked JoinGroup and
//! SyncGroup requests, identified by the caller's [`RequestId`]) and as a
//! pending store of the group's metadata record ([`Group::take_store`]).
//! The caller writes that record and reports back with [`Group::stored`]
//! before the answers that depend on it go out.
//!
//! Concurrency: one caller at a time (the coordinator keeps each group
//! behind its own mutex).
//!
//! Invariants: every member in `awaiting_join`/`awaiting_sync` has exactly one
//! parked request, answered exactly once (by an effect) or dropped with the
//! member; `static_members` maps each instance id to a member present in
//! `members`; `members.len() + pending_members.len() <= group.max.size` is
//! kept on every join.

use crate::records::{GroupValue, MemberValue, OffsetValue};
use bytes::Bytes;
use indexmap::IndexMap;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The caller's handle for a parked JoinGroup or SyncGroup request.
pub type RequestId = u64;

/// Errors in Kafka's terms; the broker maps each to its protocol code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("COORDINATOR_NOT_AVAILABLE")]
    CoordinatorNotAvailable,
    /// The group's `__consumer_offsets` partition is led by another broker.
    #[error("NOT_COORDINATOR")]
    NotCoordinator,
    /// This broker leads the group's partition and is replaying it.
    #[error("COORDINATOR_LOAD_IN_PROGRESS")]
    CoordinatorLoadInProgress,
    #[error("ILLEGAL_GENERATION")]
    IllegalGeneration,
    #[error("INCONSISTENT_GROUP_PROTOCOL")]
    InconsistentGroupProtocol,
    #[error("INVALID_GROUP_ID")]
    InvalidGroupId,
    #[error("UNKNOWN_MEMBER_ID")]
    UnknownMemberId,
    #[error("INVALID_SESSION_TIMEOUT")]
    InvalidSessionTimeout,
    #[error("REBALANCE_IN_PROGRESS")]
    RebalanceInProgress,
    #[error("MEMBER_ID_REQUIRED")]
    MemberIdRequired,
    #[error("FENCED_INSTANCE_ID")]
    FencedInstanceId,
    #[error("GROUP_MAX_SIZE_REACHED")]
    GroupMaxSizeReached,
    #[error("GROUP_ID_NOT_FOUND")]
    GroupIdNotFound,
    #[error("NON_EMPTY_GROUP")]
    NonEmptyGroup,
    #[error("GROUP_SUBSCRIBED_TO_TOPIC")]
    GroupSubscribedToTopic,
    #[error("OFFSET_METADATA_TOO_LARGE")]
    OffsetMetadataTooLarge,
    #[error("UNKNOWN_TOPIC_OR_PARTITION")]
    UnknownTopicOrPartition,
    #[error("KAFKA_STORAGE_ERROR")]
    StorageError,
    /// A record larger than `message.max.bytes` of `__consumer_offsets`.
    #[error("record too large")]
    RecordTooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka uses in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// The broker settings the state machine needs (Kafka's names).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`
    pub initial_rebalance_delay_ms: i32,
    /// `group.max.size`
    pub max_size: usize,
    /// Protocol metadata all members of a group may hold together: the group
    /// record must fit in one `message.max.bytes` batch, as in Kafka.
    pub max_metadata_bytes: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: 1_000,
            max_metadata_bytes: 1_048_588,
        }
    }
}

/// A protocol a member supports: assignor name and its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Empty for a member that does not have one yet.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    /// JoinGroup v4+: a new dynamic member first gets MEMBER_ID_REQUIRED (KIP-394).
    pub require_known_member_id: bool,
    /// A fresh member id the caller generated, used if this join needs one.
    pub new_member_id: String,
    /// JoinGroup v9+ (KIP-814): a static leader that rejoins without a
    /// rebalance is told to skip the assignment instead of acting as follower.
    pub supports_skip_assignment: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    pub error: Option<GroupError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub skip_assignment: bool,
    pub member_id: String,
    /// Filled for the leader only.
    pub members: Vec<JoinedMember>,
}

impl JoinResponse {
    pub fn error(error: GroupError, member_id: &str) -> JoinResponse {
        JoinResponse {
            error: Some(error),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    /// SyncGroup v5+: checked against the group's when present.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// From the leader: member id → assignment.
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    pub error: Option<GroupError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    pub fn error(error: GroupError) -> SyncResponse {
        SyncResponse {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// An answer for a parked request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Join(RequestId, JoinResponse),
    Sync(RequestId, SyncResponse),
}

/// Why the group's metadata record must be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreReason {
    /// The leader's assignment: SyncGroup answers wait for the write.
    Assignment { generation_id: i32 },
    /// A static member replaced in a Stable group: its JoinGroup answer waits.
    /// If the record cannot be written, the replacement is undone (Kafka's
    /// revert of a static member's update) and the join refused.
    StaticReplacement {
        request: RequestId,
        response: Box<JoinResponse>,
        undo: Box<ReplacedStatic>,
    },
    /// A state change to record (the group became empty); nobody waits.
    Snapshot,
}

/// What a static member replacement changed, to undo it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplacedStatic {
    old_id: String,
    new_id: String,
    protocols: Vec<Protocol>,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    client_id: String,
    client_host: String,
}

/// A member as the group tracks it.
#[derive(Debug, Clone)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    pub assignment: Bytes,
    awaiting_join: Option<RequestId>,
    awaiting_sync: Option<RequestId>,
    heartbeat_deadline_ms: i64,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|p| p.name == protocol)
    }
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
}

/// The extra wait of a rebalance that starts from an empty group
/// (`group.initial.rebalance.delay.ms`): re-armed while members keep arriving,
/// never beyond the rebalance timeout in total.
#[derive(Debug, Clone, Copy)]
struct InitialDelay {
    delay_ms: i64,
    remaining_ms: i64,
}

pub struct Group {
    pub group_id: String,
    state: GroupState,
    state_timestamp_ms: i64,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    generation_id: i32,
    leader_id: Option<String>,
    members: IndexMap<String, Member>,
    /// group.instance.id → member id.
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with their deadline.
    pending_members: IndexMap<String, i64>,
    /// Members that have not sent SyncGroup since the join completed.
    pending_sync: HashSet<String>,
    join_deadline_ms: i64,
    sync_deadline_ms: i64,
    initial_delay: Option<InitialDelay>,
    new_member_added: bool,
    pending_store: Option<StoreReason>,
    offsets: BTreeMap<(String, i32), OffsetValue>,
    /// `group.initial.rebalance.delay.ms`, fixed at creation.
    initial_rebalance_delay_ms: i32,
}

impl Group {
    pub fn new(group_id: &str, cfg: &GroupConfig, now_ms: i64) -> Group {
        Group {
            group_id: group_id.to_string(),
            state: GroupState::Empty,
            state_timestamp_ms: now_ms,
            protocol_type: None,
            protocol_name: None,
            generation_id: 0,
            leader_id: None,
            members: IndexMap::new(),
            static_members: HashMap::new(),
            pending_members: IndexMap::new(),
            pending_sync: HashSet::new(),
            join_deadline_ms: 0,
            sync_deadline_ms: 0,
            initial_delay: None,
            new_member_added: false,
            pending_store: None,
            offsets: BTreeMap::new(),
            initial_rebalance_delay_ms: cfg.initial_rebalance_delay_ms,
        }
    }

    /// Restores the group from its last metadata record (replay at start-up).
    /// Members come back Stable with a fresh session: those that do not
    /// heartbeat within their session timeout leave, as after a coordinator
    /// failover in Kafka.
    pub fn load(&mut self, value: GroupValue, now_ms: i64) {
        self.protocol_type = Some(value.protocol_type).filter(|t| !t.is_empty());
        self.protocol_name = value.protocol_name;
        self.generation_id = value.generation_id;
        self.leader_id = value.leader;
        self.state_timestamp_ms = if value.current_state_timestamp_ms >= 0 {
            value.current_state_timestamp_ms
        } else {
            now_ms
        };
        self.members.clear();
        self.static_members.clear();
        for m in value.members {
            if let Some(id) = &m.group_instance_id {
                self.static_members.insert(id.clone(), m.member_id.clone());
            }
            let protocol = self.protocol_name.clone().unwrap_or_default();
            self.members.insert(
                m.member_id.clone(),
                Member {
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocol_type: self.protocol_type.clone().unwrap_or_default(),
                    protocols: vec![Protocol {
                        name: protocol,
                        metadata: m.subscription,
                    }],
                    assignment: m.assignment,
                    awaiting_join: None,
                    awaiting_sync: None,
                    heartbeat_deadline_ms: now_ms.saturating_add(i64::from(m.session_timeout_ms)),
                },
            );
        }
        self.state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation_id(&self) -> i32 {
        self.generation_id
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }

    pub fn leader_id(&self) -> Option<&str> {
        self.leader_id.as_deref()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn has_member(&self, member_id: &str) -> bool {
        self.members.contains_key(member_id)
    }

    pub fn is_empty(&self) -> bool {
        self.state == GroupState::Empty
    }

    /// Created by a join that went nowhere (refused, or never got a member):
    /// nothing in it, nothing ever written for it.
    pub fn is_unused(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending_members.is_empty()
            && self.offsets.is_empty()
            && self.generation_id == 0
            && self.pending_store.is_none()
    }

    /// Nothing left to keep: no members, no offsets.
    pub fn is_removable(&self) -> bool {
        self.state == GroupState::Empty && self.offsets.is_empty()
    }

    /// Marks the group deleted: parked requests are answered, later ones see Dead.
    pub fn mark_dead(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        for m in self.members.values_mut() {
            if let Some(r) = m.awaiting_join.take() {
                effects.push(Effect::Join(
                    r,
                    JoinResponse::error(GroupError::CoordinatorNotAvailable, &m.member_id),
                ));
            }
            if let Some(r) = m.awaiting_sync.take() {
                effects.push(Effect::Sync(
                    r,
                    SyncResponse::error(GroupError::CoordinatorNotAvailable),
                ));
            }
        }
        self.members.clear();
        self.static_members.clear();
        self.pending_members.clear();
        self.offsets.clear();
        self.state = GroupState::Dead;
        effects
    }

    // ------------------------------------------------------------------ join

    pub fn join(
        &mut self,
        cfg: &GroupConfig,
        req: JoinRequest,
        request: RequestId,
        now_ms: i64,
    ) -> Vec<Effect> {
        let mut fx = Vec::new();
        let fail = |e: GroupError, fx: &mut Vec<Effect>| {
            fx.push(Effect::Join(
                request,
                JoinResponse::error(e, &req.member_id),
            ));
        };
        if self.state == GroupState::Dead {
            fail(GroupError::CoordinatorNotAvailable, &mut fx);
            return fx;
        }
        if req.session_timeout_ms < cfg.min_session_timeout_ms
            || req.session_timeout_ms > cfg.max_session_timeout_ms
        {
            fail(GroupError::InvalidSessionTimeout, &mut fx);
            return fx;
        }
        if !self.supports_protocols(&req.member_id, &req.protocol_type, &req.protocols) {
            fail(GroupError::InconsistentGroupProtocol, &mut fx);
            return fx;
        }
        let others: usize = self
            .members
            .values()
            .filter(|m| m.member_id != req.member_id)
            .map(|m| m.protocols.iter().map(|p| p.metadata.len()).sum::<usize>())
            .sum();
        let mine: usize = req.protocols.iter().map(|p| p.metadata.len()).sum();
        if others + mine > cfg.max_metadata_bytes {
            // The group's record could not be written: no room for this member.
            fail(GroupError::GroupMaxSizeReached, &mut fx);
            return fx;
        }
        if req.member_id.is_empty() {
            self.join_unknown_member(cfg, req, request, now_ms, &mut fx);
        } else {
            self.join_known_member(req, request, now_ms, &mut fx);
        }
        fx
    }

    /// Kafka's `supportsProtocols`: an empty group takes any non-empty
    /// protocol type and list; otherwise the type must match and one of the
    /// member's protocols must be supported by every other member.
    fn supports_protocols(
        &self,
        member_id: &str,
        protocol_type: &str,
        protocols: &[Protocol],
    ) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        let others: Vec<&Member> = self
            .members
            .values()
            .filter(|m| m.member_id != member_id)
            .collect();
        if others.is_empty() {
            return true;
        }
        if self
            .protocol_type
            .as_deref()
            .is_some_and(|t| t != protocol_type)
            || others.iter().any(|m| m.protocol_type != protocol_type)
        {
            return false;
        }
        protocols
            .iter()
            .any(|p| others.iter().all(|m| m.supports(&p.name)))
    }

    fn is_full(&self, cfg: &GroupConfig) -> bool {
        self.members.len() + self.pending_members.len() >= cfg.max_size
    }

    fn join_unknown_member(
        &mut self,
        cfg: &GroupConfig,
        req: JoinRequest,
        request: RequestId,
        now_ms: i64,
        fx: &mut Vec<Effect>,
    ) {
        if let Some(instance) = req.group_instance_id.clone() {
            if let Some(old) = self.static_members.get(&instance).cloned() {
                if self.members.contains_key(&old) {
                    self.replace_static_member(req, &old, request, now_ms, fx);
                    return;
                }
            }
        }
        if self.is_full(cfg) {
            fx.push(Effect::Join(
                request,
                JoinResponse::error(GroupError::GroupMaxSizeReached, ""),
            ));
            return;
        }
        let member_id = req.new_member_id.clone();
        if req.group_instance_id.is_none() && req.require_known_member_id {
            // KIP-394: hand out the id and wait for the member to come back with it.
            let deadline = now_ms.saturating_add(i64::from(req.session_timeout_ms));
            self.pending_members.insert(member_id.clone(), deadline);
            fx.push(Effect::Join(
                request,
                JoinResponse::error(GroupError::MemberIdRequired, &member_id),
            ));
            return;
        }
        self.add_member_and_rebalance(req, member_id, request, now_ms, fx);
    }

    fn join_known_member(
        &mut self,
        req: JoinRequest,
        request: RequestId,
        now_ms: i64,
        fx: &mut Vec<Effect>,
    ) {
        let member_id = req.member_id.clone();
        if self.pending_members.shift_remove(&member_id).is_some() {
            self.add_member_and_rebalance(req, member_id, request, now_ms, fx);
            return;
        }
        if let Err(e) = self.check_member(&member_id, req.group_instance_id.as_deref()) {
            fx.push(Effect::Join(request, JoinResponse::error(e, &member_id)));
            return;
        }
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member(&req, request, fx);
                self.maybe_complete_join(now_ms, fx);
            }
            GroupState::CompletingRebalance => {
                let same = self
                    .members
                    .get(&member_id)
                    .is_some_and(|m| m.protocols == req.protocols);
                if same {
                    // The member did not get its answer: send it again.
                    let resp = self.current_join_response(&member_id);
                    fx.push(Effect::Join(request, resp));
                } else {
                    self.update_member(&req, request, fx);
                    self.prepare_rebalance(now_ms, fx);
                }
            }
            GroupState::Stable => {
                let is_leader = self.leader_id.as_deref() == Some(member_id.as_str());
                let same = self
                    .members
                    .get(&member_id)
                    .is_some_and(|m| m.protocols == req.protocols);
                if is_leader || !same {
                    self.update_member(&req, request, fx);
                    self.prepare_rebalance(now_ms, fx);
                } else {
                    let resp = self.current_join_response(&member_id);
                    fx.push(Effect::Join(request, resp));
                }
            }
            GroupState::Empty | GroupState::Dead => {
                fx.push(Effect::Join(
                    request,
                    JoinResponse::error(GroupError::UnknownMemberId, &member_id),
                ));
            }
        }
    }

    /// UNKNOWN_MEMBER_ID / FENCED_INSTANCE_ID checks shared by join, sync,
    /// heartbeat and commit.
    fn check_member(&self, member_id: &str, instance: Option<&str>) -> Result<(), GroupError> {
        if let Some(instance) = instance {
            match self.static_members.get(instance) {
                Some(known) if known != member_id => return Err(GroupError::FencedInstanceId),
                Some(_) => {}
                None => return Err(GroupError::UnknownMemberId),
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        Ok(())
    }

    fn add_member_and_rebalance(
        &mut self,
        req: JoinRequest,
        member_id: String,
        request: RequestId,
        now_ms: i64,
        fx: &mut Vec<Effect>,
    ) {
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if let Some(instance) = &req.group_instance_id {
            self.static_members
                .insert(instance.clone(), member_id.clone());
        }
        self.members.insert(
            member_id.clone(),
            Member {
                member_id,
                group_instance_id: req.group_instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                protocol_type: req.protocol_type,
                protocols: req.protocols,
                assignment: Bytes::new(),
                awaiting_join: Some(request),
                awaiting_sync: None,
                heartbeat_deadline_ms: now_ms.saturating_add(i64::from(req.session_timeout_ms)),
            },
        );
        self.new_member_added = true;
        match self.state {
            GroupState::PreparingRebalance => self.maybe_complete_join(now_ms, fx),
            _ => self.prepare_rebalance(now_ms, fx),
        }
    }

    fn update_member(&mut self, req: &JoinRequest, request: RequestId, fx: &mut Vec<Effect>) {
        if let Some(m) = self.members.get_mut(&req.member_id) {
            if let Some(old) = m.awaiting_join.replace(request) {
                // A second JoinGroup while the first is parked: the newer wins.
                fx.push(Effect::Join(
                    old,
                    JoinResponse::error(GroupError::RebalanceInProgress, &m.member_id),
                ));
            }
            m.protocols = req.protocols.clone();
            m.session_timeout_ms = req.session_timeout_ms;
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            m.client_id = req.client_id.clone();
            m.client_host = req.client_host.clone();
        }
    }

    /// KIP-345: a known group.instance.id joins with no member id. The new id
    /// takes the old member's place; the old id is fenced.
    fn replace_static_member(
        &mut self,
        req: JoinRequest,
        old_id: &str,
        request: RequestId,
        now_ms: i64,
        fx: &mut Vec<Effect>,
    ) {
        let Some(mut member) = self.members.shift_remove(old_id) else {
            return;
        };
        let new_id = req.new_member_id.clone();
        let req_skip = req.supports_skip_assignment;
        if let Some(r) = member.awaiting_join.take() {
            fx.push(Effect::Join(
                r,
                JoinResponse::error(GroupError::FencedInstanceId, old_id),
            ));
        }
        if let Some(r) = member.awaiting_sync.take() {
            fx.push(Effect::Sync(
                r,
                SyncResponse::error(GroupError::FencedInstanceId),
            ));
        }
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        let undo = ReplacedStatic {
            old_id: old_id.to_string(),
            new_id: new_id.clone(),
            protocols: member.protocols.clone(),
            session_timeout_ms: member.session_timeout_ms,
            rebalance_timeout_ms: member.rebalance_timeout_ms,
            client_id: member.client_id.clone(),
            client_host: member.client_host.clone(),
        };
        member.member_id = new_id.clone();
        member.protocols = req.protocols;
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        member.heartbeat_deadline_ms = now_ms.saturating_add(i64::from(member.session_timeout_ms));
        member.awaiting_join = Some(request);
        if let Some(instance) = &member.group_instance_id {
            self.static_members.insert(instance.clone(), new_id.clone());
        }
        if self.leader_id.as_deref() == Some(old_id) {
            self.leader_id = Some(new_id.clone());
        }
        self.members.insert(new_id.clone(), member);
        match self.state {
            GroupState::Stable => {
                let next = self.select_protocol();
                if next.is_some() && next == self.protocol_name {
                    // Same protocol: no rebalance. The member gets the current
                    // generation back once the group record is written; the
                    // leader keeps its assignment (KIP-814 skip_assignment).
                    if let Some(m) = self.members.get_mut(&new_id) {
                        m.awaiting_join = None;
                    }
                    let is_leader = self.leader_id.as_deref() == Some(new_id.as_str());
                    let mut response = self.current_join_response(&new_id);
                    if is_leader && req_skip {
                        response.skip_assignment = true;
                    } else {
                        // Before v9 the rejoining member is told the leader id
                        // as it was, so a replaced leader acts as a follower.
                        response.members.clear();
                        if is_leader {
                            response.leader = old_id.to_string();
                        }
                    }
                    self.pending_store = Some(StoreReason::StaticReplacement {
                        request,
                        response: Box::new(response),
                        undo: Box::new(undo),
                    });
                } else {
                    self.prepare_rebalance(now_ms, fx);
                }
            }
            GroupState::CompletingRebalance => self.prepare_rebalance(now_ms, fx),
            GroupState::PreparingRebalance => self.maybe_complete_join(now_ms, fx),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Gives a replaced static member its old id and settings back: the group
    /// record naming the new id could not be written (Kafka reverts the same
    /// way and answers the join with the error and no member id).
    fn undo_static_replacement(&mut self, undo: &ReplacedStatic, now_ms: i64) {
        let Some(mut member) = self.members.shift_remove(&undo.new_id) else {
            return;
        };
        member.member_id = undo.old_id.clone();
        member.protocols = undo.protocols.clone();
        member.session_timeout_ms = undo.session_timeout_ms;
        member.rebalance_timeout_ms = undo.rebalance_timeout_ms;
        member.client_id = undo.client_id.clone();
        member.client_host = undo.client_host.clone();
        member.awaiting_join = None;
        member.heartbeat_deadline_ms = now_ms.saturating_add(i64::from(member.session_timeout_ms));
        if let Some(instance) = &member.group_instance_id {
            self.static_members
                .insert(instance.clone(), undo.old_id.clone());
        }
        if self.leader_id.as_deref() == Some(undo.new_id.as_str()) {
            self.leader_id = Some(undo.old_id.clone());
        }
        if self.pending_sync.remove(&undo.new_id) {
            self.pending_sync.insert(undo.old_id.clone());
        }
        self.members.insert(undo.old_id.clone(), member);
    }

    /// The JoinGroup answer for the current generation (members for the leader).
    fn current_join_response(&self, member_id: &str) -> JoinResponse {
        let is_leader = self.leader_id.as_deref() == Some(member_id);
        let protocol = self.protocol_name.clone().unwrap_or_default();
        JoinResponse {
            error: None,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader_id.clone().unwrap_or_default(),
            skip_assignment: false,
            member_id: member_id.to_string(),
            members: if is_leader {
                self.members
                    .values()
                    .map(|m| JoinedMember {
                        member_id: m.member_id.clone(),
                        group_instance_id: m.group_instance_id.clone(),
                        metadata: m.metadata(&protocol),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    fn prepare_rebalance(&mut self, now_ms: i64, fx: &mut Vec<Effect>) {
        if self.state == GroupState::CompletingRebalance {
            self.reset_assignments(GroupError::RebalanceInProgress, fx);
        }
        let timeout = self.rebalance_timeout_ms();
        let delay = i64::from(self.initial_rebalance_delay_ms);
        if self.state == GroupState::Empty && delay > 0 {
            let delay = delay.min(timeout.max(0));
            self.initial_delay = Some(InitialDelay {
                delay_ms: delay,
                remaining_ms: (timeout - delay).max(0),
            });
            self.join_deadline_ms = now_ms.saturating_add(delay);
        } else {
            self.initial_delay = None;
            self.join_deadline_ms = now_ms.saturating_add(timeout);
        }
        self.new_member_added = false;
        self.state = GroupState::PreparingRebalance;
        self.state_timestamp_ms = now_ms;
        self.maybe_complete_join(now_ms, fx);
    }

    fn reset_assignments(&mut self, error: GroupError, fx: &mut Vec<Effect>) {
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            if let Some(r) = m.awaiting_sync.take() {
                fx.push(Effect::Sync(r, SyncResponse::error(error)));
            }
        }
        self.pending_sync.clear();
    }

    fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    fn maybe_complete_join(&mut self, now_ms: i64, fx: &mut Vec<Effect>) {
        if self.state == GroupState::PreparingRebalance
            && self.initial_delay.is_none()
            && self.all_members_joined()
        {
            self.complete_join(now_ms, fx);
        }
    }

    /// Ends the join phase: members that did not rejoin are removed, a new
    /// generation starts with a protocol every member supports.
    fn complete_join(&mut self, now_ms: i64, fx: &mut Vec<Effect>) {
        // Dynamic members that did not rejoin are gone; static ones stay
        // (they leave by session expiry or the sync deadline), as in Kafka.
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id, fx);
        }
        // KIP-394 pending ids stay: they expire on their own timer (the
        // request's session timeout), and a join with one is taken in any
        // state, as in Kafka.
        if !self.members.is_empty() && self.members.values().all(|m| m.awaiting_join.is_none()) {
            // Only absent static members remain: wait for them (or their expiry).
            self.initial_delay = None;
            self.join_deadline_ms = now_ms.saturating_add(self.rebalance_timeout_ms());
            return;
        }
        self.initial_delay = None;
        self.generation_id = self.generation_id.wrapping_add(1);
        self.state_timestamp_ms = now_ms;
        if self.members.is_empty() {
            // Kafka keeps the protocol type of a group that emptied (it is
            // still a "consumer" group, not a simple one); the protocol and
            // leader go.
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.leader_id = None;
            self.pending_store = Some(StoreReason::Snapshot);
            return;
        }
        self.protocol_name = self.select_protocol();
        // The leader must be a member that rejoined (Kafka's
        // maybeElectNewJoinedLeader): an absent static leader would leave
        // nobody to compute the assignment.
        let leader_joined = self
            .leader_id
            .as_ref()
            .and_then(|l| self.members.get(l))
            .is_some_and(|m| m.awaiting_join.is_some());
        if !leader_joined {
            self.leader_id = self
                .members
                .values()
                .find(|m| m.awaiting_join.is_some())
                .map(|m| m.member_id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        self.sync_deadline_ms = now_ms.saturating_add(self.rebalance_timeout_ms());
        self.pending_sync = self.members.keys().cloned().collect();
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let resp = self.current_join_response(&id);
            if let Some(m) = self.members.get_mut(&id) {
                m.heartbeat_deadline_ms = now_ms.saturating_add(i64::from(m.session_timeout_ms));
                m.assignment = Bytes::new();
                if let Some(r) = m.awaiting_join.take() {
                    fx.push(Effect::Join(r, resp));
                }
            }
        }
    }

    /// Each member votes for its most preferred protocol among those every
    /// member supports; the most votes wins, ties go to the earlier
    /// preference of the first member.
    pub fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| self.members.values().all(|m| m.supports(name)))
            .collect();
        let mut votes = vec![0usize; candidates.len()];
        for m in self.members.values() {
            if let Some(i) = m
                .protocols
                .iter()
                .find_map(|p| candidates.iter().position(|c| *c == p.name))
            {
                if let Some(v) = votes.get_mut(i) {
                    *v += 1;
                }
            }
        }
        let mut best: Option<(usize, usize)> = None;
        for (i, v) in votes.iter().enumerate() {
            if best.is_none_or(|(_, bv)| *v > bv) {
                best = Some((i, *v));
            }
        }
        best.and_then(|(i, _)| candidates.get(i).map(|s| s.to_string()))
    }

    fn remove_member(&mut self, member_id: &str, fx: &mut Vec<Effect>) {
        let Some(m) = self.members.shift_remove(member_id) else {
            return;
        };
        if let Some(r) = m.awaiting_join {
            fx.push(Effect::Join(
                r,
                JoinResponse::error(GroupError::UnknownMemberId, member_id),
            ));
        }
        if let Some(r) = m.awaiting_sync {
            fx.push(Effect::Sync(
                r,
                SyncResponse::error(GroupError::UnknownMemberId),
            ));
        }
        if let Some(instance) = &m.group_instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        self.pending_sync.remove(member_id);
        if self.leader_id.as_deref() == Some(member_id) {
            self.leader_id = None;
        }
    }

    /// After members left: Stable and CompletingRebalance groups rebalance,
    /// a join phase may now be complete.
    fn after_removal(&mut self, now_ms: i64, fx: &mut Vec<Effect>) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now_ms, fx)
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now_ms, fx),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    // ------------------------------------------------------------------ sync

    pub fn sync(&mut self, req: SyncRequest, request: RequestId, now_ms: i64) -> Vec<Effect> {
        let mut fx = Vec::new();
        let reply = |e: GroupError, fx: &mut Vec<Effect>| {
            fx.push(Effect::Sync(request, SyncResponse::error(e)))
        };
        if self.state == GroupState::Dead {
            reply(GroupError::CoordinatorNotAvailable, &mut fx);
            return fx;
        }
        if let Err(e) = self.check_member(&req.member_id, req.group_instance_id.as_deref()) {
            reply(e, &mut fx);
            return fx;
        }
        if req.generation_id != self.generation_id {
            reply(GroupError::IllegalGeneration, &mut fx);
            return fx;
        }
        let type_mismatch = req
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != self.protocol_type.as_ref());
        let name_mismatch = req
            .protocol_name
            .as_ref()
            .is_some_and(|n| Some(n) != self.protocol_name.as_ref());
        if type_mismatch || name_mismatch {
            reply(GroupError::InconsistentGroupProtocol, &mut fx);
            return fx;
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => reply(GroupError::UnknownMemberId, &mut fx),
            GroupState::PreparingRebalance => reply(GroupError::RebalanceInProgress, &mut fx),
            GroupState::CompletingRebalance => {
                self.pending_sync.remove(&req.member_id);
                if let Some(m) = self.members.get_mut(&req.member_id) {
                    m.heartbeat_deadline_ms =
                        now_ms.saturating_add(i64::from(m.session_timeout_ms));
                    if let Some(old) = m.awaiting_sync.replace(request) {
                        fx.push(Effect::Sync(
                            old,
                            SyncResponse::error(GroupError::RebalanceInProgress),
                        ));
                    }
                }
                let is_leader = self.leader_id.as_deref() == Some(req.member_id.as_str());
                if is_leader && self.pending_store.is_none() {
                    let given: HashMap<String, Bytes> = req.assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.get(&m.member_id).cloned().unwrap_or_default();
                    }
                    self.pending_store = Some(StoreReason::Assignment {
                        generation_id: self.generation_id,
                    });
                }
            }
            GroupState::Stable => {
                self.pending_sync.remove(&req.member_id);
                if let Some(m) = self.members.get_mut(&req.member_id) {
                    m.heartbeat_deadline_ms =
                        now_ms.saturating_add(i64::from(m.session_timeout_ms));
                    fx.push(Effect::Sync(
                        request,
                        SyncResponse {
                            error: None,
                            protocol_type: self.protocol_type.clone(),
                            protocol_name: self.protocol_name.clone(),
                            assignment: m.assignment.clone(),
                        },
                    ));
                }
            }
        }
        fx
    }

    /// The group metadata record to write now, if any. The caller writes it
    /// and then calls [`Group::stored`] with the outcome.
    pub fn take_store(&mut self) -> Option<(StoreReason, GroupValue)> {
        let reason = self.pending_store.take()?;
        Some((reason, self.to_value()))
    }

    /// The outcome of writing the record of [`Group::take_store`].
    pub fn stored(
        &mut self,
        reason: StoreReason,
        result: Result<(), GroupError>,
        now_ms: i64,
    ) -> Vec<Effect> {
        let mut fx = Vec::new();
        match reason {
            StoreReason::Assignment { generation_id } => {
                if self.state != GroupState::CompletingRebalance
                    || self.generation_id != generation_id
                {
                    return fx;
                }
                match result {
                    Ok(()) => {
                        self.state = GroupState::Stable;
                        self.state_timestamp_ms = now_ms;
                        for m in self.members.values_mut() {
                            if let Some(r) = m.awaiting_sync.take() {
                                fx.push(Effect::Sync(
                                    r,
                                    SyncResponse {
                                        error: None,
                                        protocol_type: self.protocol_type.clone(),
                                        protocol_name: self.protocol_name.clone(),
                                        assignment: m.assignment.clone(),
                                    },
                                ));
                            }
                        }
                    }
                    Err(e) => {
                        self.reset_assignments(e, &mut fx);
                        self.prepare_rebalance(now_ms, &mut fx);
                    }
                }
            }
            StoreReason::StaticReplacement {
                request,
                response,
                undo,
            } => {
                let response = match result {
                    Ok(()) => *response,
                    Err(e) => {
                        self.undo_static_replacement(&undo, now_ms);
                        JoinResponse::error(e, "")
                    }
                };
                fx.push(Effect::Join(request, response));
            }
            StoreReason::Snapshot => {}
        }
        fx
    }

    /// The group's metadata record as of now.
    pub fn to_value(&self) -> GroupValue {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation_id: self.generation_id,
            protocol_name: self.protocol_name.clone(),
            leader: self.leader_id.clone(),
            current_state_timestamp_ms: self.state_timestamp_ms,
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    // ------------------------------------------------------- heartbeat, leave

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation_id: i32,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        match self.state {
            GroupState::Dead => return Err(GroupError::CoordinatorNotAvailable),
            GroupState::Empty => return Err(GroupError::UnknownMemberId),
            _ => {}
        }
        self.check_member(member_id, instance)?;
        if generation_id != self.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.heartbeat_deadline_ms = now_ms.saturating_add(i64::from(m.session_timeout_ms));
        }
        if self.state == GroupState::PreparingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        Ok(())
    }

    /// LeaveGroup for each `(member id, group.instance.id)`; one result per entry.
    pub fn leave(
        &mut self,
        leaving: &[(String, Option<String>)],
        now_ms: i64,
    ) -> (Vec<Result<(), GroupError>>, Vec<Effect>) {
        let mut fx = Vec::new();
        if self.state == GroupState::Dead {
            return (
                leaving
                    .iter()
                    .map(|_| Err(GroupError::CoordinatorNotAvailable))
                    .collect(),
                fx,
            );
        }
        let mut removed = false;
        let mut results = Vec::with_capacity(leaving.len());
        for (member_id, instance) in leaving {
            let target = match instance {
                Some(instance) => match self.static_members.get(instance) {
                    None => Err(GroupError::UnknownMemberId),
                    Some(known) if !member_id.is_empty() && known != member_id => {
                        Err(GroupError::FencedInstanceId)
                    }
                    Some(known) => Ok(known.clone()),
                },
                None => Ok(member_id.clone()),
            };
            let result = target.and_then(|id| {
                if self.pending_members.shift_remove(&id).is_some() {
                    removed = true;
                    Ok(())
                } else if self.members.contains_key(&id) {
                    self.remove_member(&id, &mut fx);
                    removed = true;
                    Ok(())
                } else {
                    Err(GroupError::UnknownMemberId)
                }
            });
            results.push(result);
        }
        if removed {
            self.after_removal(now_ms, &mut fx);
        }
        (results, fx)
    }

    // ------------------------------------------------------------------ time

    /// Earliest time at which [`Group::tick`] has something to do.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        let mut next: Option<i64> = None;
        let mut consider = |t: i64| next = Some(next.map_or(t, |n| n.min(t)));
        match self.state {
            GroupState::PreparingRebalance => consider(self.join_deadline_ms),
            GroupState::CompletingRebalance => consider(self.sync_deadline_ms),
            GroupState::Stable if !self.pending_sync.is_empty() => consider(self.sync_deadline_ms),
            _ => {}
        }
        for m in self.members.values() {
            if !self.exempt_from_expiry(m) {
                consider(m.heartbeat_deadline_ms);
            }
        }
        for d in self.pending_members.values() {
            consider(*d);
        }
        next
    }

    fn exempt_from_expiry(&self, m: &Member) -> bool {
        (self.state == GroupState::PreparingRebalance && m.awaiting_join.is_some())
            || m.awaiting_sync.is_some()
    }

    /// Session expiry, pending member expiry, join and sync phase deadlines.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.state == GroupState::Dead {
            return fx;
        }
        let before = self.pending_members.len();
        self.pending_members
            .retain(|_, deadline| *deadline > now_ms);
        let pending_expired = self.pending_members.len() != before;

        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.heartbeat_deadline_ms <= now_ms && !self.exempt_from_expiry(m))
            .map(|m| m.member_id.clone())
            .collect();
        for id in &expired {
            self.remove_member(id, &mut fx);
        }
        if !expired.is_empty() {
            self.after_removal(now_ms, &mut fx);
        } else if pending_expired {
            self.maybe_complete_join(now_ms, &mut fx);
        }

        match self.state {
            GroupState::PreparingRebalance if self.join_deadline_ms <= now_ms => {
                match self.initial_delay {
                    Some(d) if self.new_member_added && d.remaining_ms > 0 => {
                        let delay = d.delay_ms.min(d.remaining_ms);
                        self.initial_delay = Some(InitialDelay {
                            delay_ms: d.delay_ms,
                            remaining_ms: d.remaining_ms - delay,
                        });
                        self.new_member_added = false;
                        self.join_deadline_ms = now_ms.saturating_add(delay);
                    }
                    _ => self.complete_join(now_ms, &mut fx),
                }
            }
            GroupState::CompletingRebalance | GroupState::Stable
                if self.sync_deadline_ms <= now_ms && !self.pending_sync.is_empty() =>
            {
                // Members that never sent SyncGroup are gone; the rest rebalance.
                let missing: Vec<String> = self.pending_sync.iter().cloned().collect();
                for id in missing {
                    self.remove_member(&id, &mut fx);
                }
                self.prepare_rebalance(now_ms, &mut fx);
            }
            _ => {}
        }
        fx
    }

    // --------------------------------------------------------------- describe

    pub fn describe(&self) -> GroupDescription {
        let stable = self.state == GroupState::Stable;
        let protocol = if stable {
            self.protocol_name.clone().unwrap_or_default()
        } else {
            String::new()
        };
        GroupDescription {
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name: protocol.clone(),
            members: self
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata(&protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        }
    }

    // ---------------------------------------------------------------- offsets

    /// Kafka's check before an OffsetCommit is accepted. A generation below
    /// zero with no member is an admin or "simple" commit, allowed while the
    /// group is empty.
    pub fn validate_commit(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation_id: i32,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if generation_id < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        if generation_id >= 0 || !member_id.is_empty() || instance.is_some() {
            self.check_member(member_id, instance)?;
            if generation_id != self.generation_id {
                return Err(GroupError::IllegalGeneration);
            }
        } else {
            // An admin commit while members are active.
            return Err(GroupError::UnknownMemberId);
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.heartbeat_deadline_ms = now_ms.saturating_add(i64::from(m.session_timeout_ms));
        }
        Ok(())
    }

    pub fn commit_offset(&mut self, topic: &str, partition: i32, value: OffsetValue) {
        self.offsets.insert((topic.to_string(), partition), value);
    }

    pub fn offset(&self, topic: &str, partition: i32) -> Option<&OffsetValue> {
        self.offsets.get(&(topic.to_string(), partition))
    }

    /// Every committed offset, by topic then partition.
    pub fn offsets(&self) -> impl Iterator<Item = (&str, i32, &OffsetValue)> {
        self.offsets.iter().map(|((t, p), v)| (t.as_str(), *p, v))
    }

    pub fn offset_count(&self) -> usize {
        self.offsets.len()
    }

    pub fn remove_offset(&mut self, topic: &str, partition: i32) -> bool {
        self.offsets
            .remove(&(topic.to_string(), partition))
            .is_some()
    }

    /// What the members subscribe to, for OffsetDelete. `None` when the
    /// protocol type is not "consumer" (subscriptions cannot be read);
    /// `Some(None)` when they cannot be decoded, which Kafka treats as
    /// subscribed to every topic. `decode` parses one member's metadata.
    pub fn subscribed_topics(
        &self,
        decode: impl Fn(&Bytes) -> Option<Vec<String>>,
    ) -> Option<Option<HashSet<String>>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let Some(protocol) = self.protocol_name.clone() else {
            return Some(None);
        };
        let mut topics = HashSet::new();
        for m in self.members.values() {
            match decode(&m.metadata(&protocol)) {
                Some(t) => topics.extend(t),
                None => return Some(None),
            }
        }
        Some(Some(topics))
    }

    /// Offsets due for expiry under `offsets.retention.ms`, as Kafka's
    /// `offsetExpirationCondition`:
    /// - an empty group that had a protocol: all offsets, counted from when
    ///   it became empty (KIP-211);
    /// - a group that never had members ("simple" commits): from each commit;
    /// - a Stable "consumer" group whose subscriptions `decode` can read: the
    ///   offsets of topics no member subscribes to, from each commit (KIP-496);
    /// - any other group: none.
    ///
    /// A commit with an explicit expire timestamp (OffsetCommit v1–4) expires
    /// then instead.
    pub fn expired_offsets(
        &self,
        retention_ms: i64,
        now_ms: i64,
        decode: impl Fn(&Bytes) -> Option<Vec<String>>,
    ) -> Vec<(String, i32)> {
        let had_protocol = self.protocol_type.is_some() || self.generation_id > 0;
        let (from_state, subscribed) = match self.state {
            GroupState::Empty => (had_protocol, None),
            GroupState::Stable => match self.subscribed_topics(decode) {
                Some(Some(topics)) => (false, Some(topics)),
                _ => return Vec::new(),
            },
            _ => return Vec::new(),
        };
        self.offsets
            .iter()
            .filter(|((topic, _), _)| subscribed.as_ref().is_none_or(|s| !s.contains(topic)))
            .filter(|(_, v)| {
                if v.expire_timestamp_ms >= 0 {
                    return now_ms >= v.expire_timestamp_ms;
                }
                let base = if from_state {
                    self.state_timestamp_ms
                } else {
                    v.commit_timestamp_ms
                };
                now_ms.saturating_sub(base) >= retention_ms
            })
            .map(|((t, p), _)| (t.clone(), *p))
            .collect()
    }
}

#[cfg(test)]
mod tests;
