//! Seeded simulation of the group state machine: clients behaving like Kafka
//! consumers (rejoin on REBALANCE_IN_PROGRESS, reset on UNKNOWN_MEMBER_ID,
//! heartbeat every second) plus faults (crashes without LeaveGroup, leaves,
//! stalls), driven by proptest. After every step: each parked request is
//! answered at most once, generations never go back. At the end a fault-free
//! phase must heal the group: every live client Stable in one generation
//! with its assignment, and no dead member left.

use bytes::Bytes;
use felice_coord::group::{JoinRequest, JoinResponse, Protocol, SyncRequest, SyncResponse};
use felice_coord::{Effect, Group, GroupConfig, GroupError, GroupState, RequestId};
use proptest::prelude::*;
use std::collections::HashMap;

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 20_000;
const HEARTBEAT_MS: i64 = 1_000;

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Idle,
    Joining(RequestId),
    Syncing(RequestId, i32),
    Stable(i32),
    Dead,
}

#[derive(Debug)]
struct Client {
    name: String,
    member_id: String,
    phase: Phase,
    next_heartbeat: i64,
    assignment: Option<Bytes>,
    joined_as_leader_members: Vec<String>,
}

struct Sim {
    cfg: GroupConfig,
    /// Clients carry `group.instance.id` = their name (KIP-345).
    static_members: bool,
    group: Group,
    now: i64,
    next_request: RequestId,
    clients: Vec<Client>,
    /// request -> client index, for requests not answered yet.
    outstanding: HashMap<RequestId, usize>,
    last_generation: i32,
    ids: u64,
}

#[derive(Debug, Clone)]
enum Action {
    Step(usize),
    Crash(usize),
    Leave(usize),
    Advance(u16),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (0usize..5).prop_map(Action::Step),
        1 => (0usize..5).prop_map(Action::Crash),
        1 => (0usize..5).prop_map(Action::Leave),
        3 => (1u16..4000).prop_map(Action::Advance),
    ]
}

impl Sim {
    fn new(clients: usize, delay: i32, static_members: bool) -> Sim {
        let cfg = GroupConfig {
            initial_rebalance_delay_ms: delay,
            ..GroupConfig::default()
        };
        Sim {
            static_members,
            group: Group::new("sim", &cfg, 0),
            cfg,
            now: 0,
            next_request: 1,
            clients: (0..clients)
                .map(|i| Client {
                    name: format!("c{i}"),
                    member_id: String::new(),
                    phase: Phase::Idle,
                    next_heartbeat: 0,
                    assignment: None,
                    joined_as_leader_members: vec![],
                })
                .collect(),
            outstanding: HashMap::new(),
            last_generation: 0,
            ids: 0,
        }
    }

    fn request(&mut self, client: usize) -> RequestId {
        let id = self.next_request;
        self.next_request += 1;
        self.outstanding.insert(id, client);
        id
    }

    fn join(&mut self, i: usize) {
        let id = self.request(i);
        self.ids += 1;
        let c = &mut self.clients[i];
        c.phase = Phase::Joining(id);
        let req = JoinRequest {
            member_id: c.member_id.clone(),
            group_instance_id: self.static_members.then(|| c.name.clone()),
            client_id: c.name.clone(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: SESSION_MS,
            rebalance_timeout_ms: REBALANCE_MS,
            protocol_type: "consumer".into(),
            protocols: vec![Protocol {
                name: "range".into(),
                metadata: Bytes::from(c.name.clone()),
            }],
            require_known_member_id: true,
            new_member_id: format!("{}-{}", c.name, self.ids),
            supports_skip_assignment: true,
        };
        let fx = self.group.join(&self.cfg, req, id, self.now);
        self.apply(fx);
    }

    fn sync(&mut self, i: usize, generation: i32, assignments: Vec<(String, Bytes)>) {
        let id = self.request(i);
        let c = &mut self.clients[i];
        c.phase = Phase::Syncing(id, generation);
        let req = SyncRequest {
            member_id: c.member_id.clone(),
            group_instance_id: self.static_members.then(|| c.name.clone()),
            generation_id: generation,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignments,
        };
        let fx = self.group.sync(req, id, self.now);
        self.apply(fx);
    }

    /// Feeds effects back to clients; stores records successfully.
    fn apply(&mut self, mut fx: Vec<Effect>) {
        loop {
            while let Some((reason, _)) = self.group.take_store() {
                fx.extend(self.group.stored(reason, Ok(()), self.now));
            }
            if fx.is_empty() {
                break;
            }
            for e in std::mem::take(&mut fx) {
                match e {
                    Effect::Join(id, resp) => self.on_join(id, resp),
                    Effect::Sync(id, resp) => self.on_sync(id, resp),
                }
            }
        }
        let g = self.group.generation_id();
        assert!(
            g >= self.last_generation,
            "generation went back: {} -> {g}",
            self.last_generation
        );
        self.last_generation = g;
    }

    fn take(&mut self, id: RequestId) -> usize {
        match self.outstanding.remove(&id) {
            Some(i) => i,
            None => panic!("request {id} answered twice or never asked"),
        }
    }

    fn on_join(&mut self, id: RequestId, resp: JoinResponse) {
        let i = self.take(id);
        if self.clients[i].phase != Phase::Joining(id) {
            return; // a crashed client's old request
        }
        match resp.error {
            None => {
                self.clients[i].member_id = resp.member_id.clone();
                let assignments = if resp.leader == resp.member_id {
                    self.clients[i].joined_as_leader_members =
                        resp.members.iter().map(|m| m.member_id.clone()).collect();
                    resp.members
                        .iter()
                        .map(|m| {
                            // Assign by the client's name (its metadata): a
                            // static member keeps its assignment across
                            // incarnations, a dynamic one gets a new one.
                            let name = String::from_utf8_lossy(&m.metadata).into_owned();
                            (
                                m.member_id.clone(),
                                Bytes::from(format!("gen{}:{name}", resp.generation_id)),
                            )
                        })
                        .collect()
                } else {
                    vec![]
                };
                self.sync(i, resp.generation_id, assignments);
            }
            Some(GroupError::MemberIdRequired) => {
                self.clients[i].member_id = resp.member_id;
                self.join(i);
            }
            Some(GroupError::UnknownMemberId) => {
                self.clients[i].member_id.clear();
                self.clients[i].phase = Phase::Idle;
            }
            Some(GroupError::RebalanceInProgress) => self.clients[i].phase = Phase::Idle,
            Some(GroupError::FencedInstanceId) => panic!("a live client was fenced"),
            Some(e) => panic!("unexpected JoinGroup error {e:?}"),
        }
    }

    fn on_sync(&mut self, id: RequestId, resp: SyncResponse) {
        let i = self.take(id);
        let Phase::Syncing(rid, generation) = self.clients[i].phase else {
            return;
        };
        if rid != id {
            return;
        }
        match resp.error {
            None => {
                let c = &mut self.clients[i];
                c.assignment = Some(resp.assignment);
                c.phase = Phase::Stable(generation);
                c.next_heartbeat = self.now + HEARTBEAT_MS;
            }
            Some(GroupError::UnknownMemberId) => {
                self.clients[i].member_id.clear();
                self.clients[i].phase = Phase::Idle;
            }
            Some(GroupError::RebalanceInProgress) | Some(GroupError::IllegalGeneration) => {
                self.clients[i].phase = Phase::Idle
            }
            Some(e) => panic!("unexpected SyncGroup error {e:?}"),
        }
    }

    /// What a live client does when it gets a turn.
    fn step(&mut self, i: usize) {
        match self.clients[i].phase.clone() {
            Phase::Idle => self.join(i),
            Phase::Stable(generation) if self.now >= self.clients[i].next_heartbeat => {
                let member = self.clients[i].member_id.clone();
                let instance = self.static_members.then(|| self.clients[i].name.clone());
                let r = self
                    .group
                    .heartbeat(&member, instance.as_deref(), generation, self.now);
                self.clients[i].next_heartbeat = self.now + HEARTBEAT_MS;
                match r {
                    Ok(()) => {}
                    Err(GroupError::RebalanceInProgress) | Err(GroupError::IllegalGeneration) => {
                        self.join(i)
                    }
                    Err(GroupError::UnknownMemberId) => {
                        self.clients[i].member_id.clear();
                        self.join(i);
                    }
                    Err(e) => panic!("unexpected Heartbeat error {e:?}"),
                }
            }
            _ => {}
        }
    }

    fn advance(&mut self, ms: i64) {
        self.now += ms;
        let fx = self.group.tick(self.now);
        self.apply(fx);
    }

    fn live(&self) -> impl Iterator<Item = &Client> {
        self.clients.iter().filter(|c| c.phase != Phase::Dead)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn a_group_heals_after_any_faults(
        clients in 1usize..5,
        delay in prop_oneof![Just(0), Just(3_000)],
        static_members in any::<bool>(),
        actions in proptest::collection::vec(action(), 0..150),
    ) {
        let mut sim = Sim::new(clients, delay, static_members);
        for a in actions {
            match a {
                Action::Step(i) if i < clients && sim.clients[i].phase != Phase::Dead => sim.step(i),
                Action::Crash(i) if i < clients => {
                    // The process dies: no LeaveGroup; a new incarnation may start later.
                    sim.clients[i].phase = Phase::Dead;
                }
                Action::Leave(i) if i < clients && !sim.clients[i].member_id.is_empty() => {
                    let member = sim.clients[i].member_id.clone();
                    let instance = sim.static_members.then(|| sim.clients[i].name.clone());
                    let (_, fx) = sim.group.leave(&[(member, instance)], sim.now);
                    sim.clients[i].member_id.clear();
                    sim.clients[i].phase = Phase::Idle;
                    sim.apply(fx);
                }
                Action::Advance(ms) => sim.advance(i64::from(ms)),
                _ => {}
            }
        }
        // Fault-free phase: restart dead clients as new incarnations, then let
        // everyone run for a while.
        for c in sim.clients.iter_mut().filter(|c| c.phase == Phase::Dead) {
            c.phase = Phase::Idle;
            c.member_id.clear();
        }
        for _ in 0..400 {
            for i in 0..clients {
                sim.step(i);
            }
            sim.advance(250);
        }
        let generation = sim.group.generation_id();
        prop_assert_eq!(sim.group.state(), GroupState::Stable);
        prop_assert_eq!(sim.group.member_count(), clients, "dead incarnations must be gone");
        for c in sim.live() {
            prop_assert_eq!(&c.phase, &Phase::Stable(generation), "client {} not stable", c.name);
            let expected = Bytes::from(format!("gen{generation}:{}", c.name));
            prop_assert_eq!(c.assignment.as_ref(), Some(&expected));
            prop_assert!(sim.group.has_member(&c.member_id));
        }
        prop_assert!(sim.outstanding.is_empty(), "requests never answered: {:?}", sim.outstanding);
    }
}
