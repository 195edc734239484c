//! A seeded simulation of one partition replicated on three brokers, each
//! with its own [`PartitionState`], a controller that commits or refuses ISR
//! changes, and real logs (a value per offset). Random appends, follower
//! fetches of random size, followers that pause past the lag time, ISR
//! proposals answered late or refused, and clean leader elections.
//!
//! After every step it checks:
//! - each state's invariants (`high_watermark <= log_end_offset`, the leader
//!   in its ISR and in what it proposes);
//! - leader epochs never go down on any broker;
//! - the leader's high watermark never goes back during its tenure;
//! - every member of the committed ISR holds the leader's log up to the
//!   high watermark, value for value;
//! - an acks=all produce that completed is on at least `min.insync.replicas`
//!   brokers, and stays in the leader's log at its offsets across elections.
//!
//! A failure names its seed; `FELICE_SIM_SEED=<seed> cargo test -p
//! felice-replica --test simulation` replays it alone (`FELICE_SIM_STEPS`
//! sets the steps per seed).

use felice_replica::{
    BrokerId, Completion, IsrProposal, LeaderAndIsr, LeaderEpoch, Offset, PartitionState,
    ReplicationConfig,
};

const BROKERS: [BrokerId; 3] = [1, 2, 3];
const LAG_MS: i64 = 10_000;

/// SplitMix64: small, seedable, good enough to pick events.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

struct Broker {
    id: BrokerId,
    state: PartitionState,
    /// The log: one value per offset.
    log: Vec<u64>,
    /// Not fetching until this time (a SIGSTOP, a long GC pause).
    paused_until: i64,
    highest_epoch_seen: LeaderEpoch,
}

/// An acks=all produce waiting for the high watermark.
struct Waiting {
    leader_epoch: LeaderEpoch,
    /// Offset of its first record, and the values.
    base: usize,
    values: Vec<u64>,
}

struct Controller {
    leader: BrokerId,
    leader_epoch: LeaderEpoch,
    partition_epoch: i32,
    isr: Vec<BrokerId>,
}

impl Controller {
    fn state(&self) -> LeaderAndIsr {
        LeaderAndIsr {
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            leader: Some(self.leader),
            isr: self.isr.clone(),
            replicas: BROKERS.to_vec(),
        }
    }
}

struct Sim {
    seed: u64,
    rng: Rng,
    now: i64,
    min_isr: usize,
    brokers: Vec<Broker>,
    controller: Controller,
    /// AlterPartitions on their way: (from broker, proposal, arrives at).
    /// A leader has at most one; an old leader's may still be travelling.
    in_flight: Vec<(BrokerId, IsrProposal, i64)>,
    waiting: Vec<Waiting>,
    /// Every acknowledged (offset, value).
    acked: Vec<(usize, u64)>,
    next_value: u64,
    /// The leader's high watermark at the last check, and its epoch.
    last_hw: (LeaderEpoch, Offset),
    counts: Counts,
}

#[derive(Default, Debug)]
struct Counts {
    appended: u64,
    acked: u64,
    not_enough_after_append: u64,
    not_enough_before_append: u64,
    not_leader: u64,
    shrinks: u64,
    expands: u64,
    refused: u64,
    elections: u64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let min_isr = 1 + rng.below(2) as usize;
        let config = ReplicationConfig {
            replica_lag_time_max_ms: LAG_MS,
            min_insync_replicas: min_isr,
        };
        let controller = Controller {
            leader: 1,
            leader_epoch: LeaderEpoch(0),
            partition_epoch: 0,
            isr: BROKERS.to_vec(),
        };
        let mut brokers: Vec<Broker> = BROKERS
            .iter()
            .map(|id| Broker {
                id: *id,
                state: PartitionState::new(*id, config, Offset(0), Offset(0)),
                log: Vec::new(),
                paused_until: 0,
                highest_epoch_seen: LeaderEpoch::UNKNOWN,
            })
            .collect();
        let st = controller.state();
        for b in &mut brokers {
            if b.id == controller.leader {
                b.state.become_leader(&st, 0).expect("first leader");
            } else {
                b.state.become_follower(&st).expect("first follower");
            }
        }
        Sim {
            seed,
            rng,
            now: 0,
            min_isr,
            brokers,
            controller,
            in_flight: Vec::new(),
            waiting: Vec::new(),
            acked: Vec::new(),
            next_value: 1,
            last_hw: (LeaderEpoch(0), Offset(0)),
            counts: Counts::default(),
        }
    }

    fn idx(id: BrokerId) -> usize {
        (id - 1) as usize
    }

    fn leader(&mut self) -> &mut Broker {
        let i = Sim::idx(self.controller.leader);
        &mut self.brokers[i]
    }

    fn fail(&self, what: String) -> ! {
        panic!(
            "seed {} at {} ms: {what}\n(replay: FELICE_SIM_SEED={} cargo test -p felice-replica --test simulation)",
            self.seed, self.now, self.seed
        )
    }

    fn step(&mut self) {
        self.now += self.rng.below(1_500) as i64;
        match self.rng.below(100) {
            0..=24 => self.produce(),
            25..=64 => self.follower_fetch(),
            65..=72 => self.tick(),
            73..=84 => self.deliver_alter_partition(),
            85..=91 => self.pause_a_follower(),
            92..=94 => self.elect(),
            _ => {}
        }
        self.complete_waiting();
        self.check();
    }

    fn produce(&mut self) {
        let n = 1 + self.rng.below(4) as usize;
        let now = self.now;
        let values: Vec<u64> = (0..n).map(|i| self.next_value + i as u64).collect();
        self.next_value += n as u64;
        let leader = self.leader();
        if leader.state.check_acks_all().is_err() {
            self.counts.not_enough_before_append += 1;
            return;
        }
        let base = leader.log.len();
        leader.log.extend_from_slice(&values);
        let leo = Offset(leader.log.len() as i64);
        let epoch = leader.state.leader_epoch();
        let effects = leader.state.on_append(leo, now);
        assert!(effects.propose_isr.is_none());
        self.counts.appended += n as u64;
        self.waiting.push(Waiting {
            leader_epoch: epoch,
            base,
            values,
        });
    }

    fn follower_fetch(&mut self) {
        let followers: Vec<BrokerId> = BROKERS
            .iter()
            .copied()
            .filter(|id| *id != self.controller.leader)
            .collect();
        let id = followers[self.rng.below(followers.len() as u64) as usize];
        let f = Sim::idx(id);
        if self.brokers[f].paused_until > self.now {
            return;
        }
        let now = self.now;
        let fetch_offset = Offset(self.brokers[f].log.len() as i64);
        let l = Sim::idx(self.controller.leader);
        let effects = match self.brokers[l]
            .state
            .on_follower_fetch(id, 7, fetch_offset, now, true)
        {
            Ok(e) => e,
            Err(e) => self.fail(format!("follower {id} fetch refused: {e}")),
        };
        if let Some(p) = effects.propose_isr {
            self.send_alter_partition(self.controller.leader, p);
        }
        // The answer: up to a few records from the fetch offset, and the
        // leader's high watermark after this fetch.
        let take = self.rng.below(6) as usize;
        let from = fetch_offset.0 as usize;
        let until = (from + take).min(self.brokers[l].log.len());
        let chunk: Vec<u64> = self.brokers[l].log[from..until].to_vec();
        let leader_hw = self.brokers[l].state.high_watermark();
        let follower = &mut self.brokers[f];
        follower.log.extend_from_slice(&chunk);
        let leo = Offset(follower.log.len() as i64);
        follower.state.on_follower_log(leo, Some(leader_hw));
    }

    fn tick(&mut self) {
        let now = self.now;
        let leader_id = self.controller.leader;
        let effects = self.leader().state.on_tick(now);
        if let Some(p) = effects.propose_isr {
            self.send_alter_partition(leader_id, p);
        }
    }

    fn send_alter_partition(&mut self, from: BrokerId, p: IsrProposal) {
        let twice = self
            .in_flight
            .iter()
            .any(|(f, q, _)| *f == from && q.leader_epoch == p.leader_epoch);
        if twice {
            self.fail(format!("broker {from}: two ISR changes in flight"));
        }
        let arrives = self.now + self.rng.below(3_000) as i64;
        self.in_flight.push((from, p, arrives));
    }

    /// The controller answers the AlterPartition in flight: commits it
    /// (partition epoch + 1; every broker sees the record), or refuses it
    /// (a stale partition or leader epoch, or by chance, as when a replica
    /// is ineligible).
    fn deliver_alter_partition(&mut self) {
        let Some(i) = self.in_flight.iter().position(|m| m.2 <= self.now) else {
            return;
        };
        let (from, p, _) = self.in_flight.remove(i);
        let c = &self.controller;
        let valid = p.leader_epoch == c.leader_epoch && p.partition_epoch == c.partition_epoch;
        if !valid || self.rng.chance(10) {
            self.counts.refused += 1;
            self.brokers[Sim::idx(from)].state.on_isr_rejected(&p);
            return;
        }
        if p.new_isr.len() < self.controller.isr.len() {
            self.counts.shrinks += 1;
        } else {
            self.counts.expands += 1;
        }
        self.controller.partition_epoch += 1;
        self.controller.isr = p.new_isr.clone();
        self.publish(false);
    }

    /// Every broker applies the controller's partition record.
    fn publish(&mut self, new_leader: bool) {
        let st = self.controller.state();
        let now = self.now;
        for i in 0..self.brokers.len() {
            let b = &mut self.brokers[i];
            let r = if b.id == st.leader.unwrap_or(-1) {
                b.state.become_leader(&st, now).map(|_| ())
            } else {
                b.state.become_follower(&st)
            };
            if let Err(e) = r {
                self.fail(format!("broker {} refused the record: {e}", i + 1));
            }
        }
        if new_leader {
            self.last_hw = (st.leader_epoch, self.leader().state.high_watermark());
        }
    }

    fn pause_a_follower(&mut self) {
        let id = BROKERS[self.rng.below(3) as usize];
        if id == self.controller.leader {
            return;
        }
        // Sometimes past the lag time, sometimes not.
        let pause = self.rng.below(2 * LAG_MS as u64) as i64;
        self.brokers[Sim::idx(id)].paused_until = self.now + pause;
    }

    /// A clean election: the controller picks another member of the ISR
    /// (the old leader died or shut down), bumps both epochs, and the
    /// followers truncate to the new leader's log where theirs diverges
    /// (what OffsetForLeaderEpoch gives them).
    fn elect(&mut self) {
        let candidates: Vec<BrokerId> = self
            .controller
            .isr
            .iter()
            .copied()
            .filter(|id| *id != self.controller.leader)
            .collect();
        if candidates.is_empty() {
            return;
        }
        let new = candidates[self.rng.below(candidates.len() as u64) as usize];
        self.counts.elections += 1;
        self.controller.leader = new;
        self.controller.leader_epoch = LeaderEpoch(self.controller.leader_epoch.0 + 1);
        self.controller.partition_epoch += 1;
        // Every broker applies the record first; then the followers'
        // fetchers truncate.
        self.publish(true);
        let leader_log = self.brokers[Sim::idx(new)].log.clone();
        for b in &mut self.brokers {
            if b.id == new {
                continue;
            }
            let common = b
                .log
                .iter()
                .zip(&leader_log)
                .take_while(|(a, b)| a == b)
                .count();
            b.log.truncate(common);
            let leo = Offset(common as i64);
            b.state.on_follower_log(leo, None);
        }
    }

    fn complete_waiting(&mut self) {
        let l = Sim::idx(self.controller.leader);
        let mut still = Vec::new();
        for w in std::mem::take(&mut self.waiting) {
            let required = Offset((w.base + w.values.len()) as i64);
            // A request waits on the broker it went to; if that broker no
            // longer leads in that epoch, it is answered NOT_LEADER.
            let on = self
                .brokers
                .iter()
                .position(|b| b.state.is_leader() && b.state.leader_epoch() == w.leader_epoch);
            let completion = match on {
                Some(i) => self.brokers[i].state.completion(required, w.leader_epoch),
                None => Completion::NotLeader,
            };
            match completion {
                Completion::Waiting => still.push(w),
                Completion::Done => {
                    let holders = self
                        .brokers
                        .iter()
                        .filter(|b| {
                            b.log.len() >= required.0 as usize
                                && b.log[w.base..required.0 as usize] == w.values[..]
                        })
                        .count();
                    if holders < self.min_isr {
                        self.fail(format!(
                            "acked offsets {}..{} on {holders} brokers, min.insync.replicas {}",
                            w.base, required, self.min_isr
                        ));
                    }
                    self.counts.acked += w.values.len() as u64;
                    for (i, v) in w.values.iter().enumerate() {
                        self.acked.push((w.base + i, *v));
                    }
                }
                Completion::NotEnoughReplicasAfterAppend => {
                    self.counts.not_enough_after_append += 1
                }
                Completion::NotLeader => self.counts.not_leader += 1,
            }
        }
        let _ = l;
        self.waiting = still;
    }

    fn check(&mut self) {
        for b in &mut self.brokers {
            if let Err(e) = b.state.check_invariants() {
                let id = b.id;
                self.fail(format!("broker {id}: {e}"));
            }
            let epoch = b.state.leader_epoch();
            if epoch < b.highest_epoch_seen {
                let (id, seen) = (b.id, b.highest_epoch_seen);
                self.fail(format!("broker {id}: epoch went from {seen} to {epoch}"));
            }
            b.highest_epoch_seen = epoch;
            if b.state.log_end_offset().0 != b.log.len() as i64 {
                let (id, leo, len) = (b.id, b.state.log_end_offset(), b.log.len());
                self.fail(format!("broker {id}: state leo {leo}, log {len}"));
            }
        }
        let l = Sim::idx(self.controller.leader);
        let epoch = self.controller.leader_epoch;
        let hw = self.brokers[l].state.high_watermark();
        if self.last_hw.0 == epoch && hw < self.last_hw.1 {
            self.fail(format!(
                "high watermark went back from {} to {hw}",
                self.last_hw.1
            ));
        }
        self.last_hw = (epoch, hw);
        let upto = hw.0 as usize;
        for id in &self.controller.isr {
            let b = &self.brokers[Sim::idx(*id)];
            if b.log.len() < upto || b.log[..upto] != self.brokers[l].log[..upto] {
                self.fail(format!(
                    "ISR member {id} lacks the leader's log below the high watermark {hw}"
                ));
            }
        }
        for (offset, value) in &self.acked {
            if self.brokers[l].log.get(*offset) != Some(value) {
                self.fail(format!("acknowledged offset {offset} lost or changed"));
            }
        }
    }
}

fn steps() -> usize {
    std::env::var("FELICE_SIM_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3_000)
}

fn run(seed: u64) -> Counts {
    let mut sim = Sim::new(seed);
    for _ in 0..steps() {
        sim.step();
    }
    sim.counts
}

#[test]
fn replication_keeps_its_invariants_under_random_faults() {
    if let Some(seed) = std::env::var("FELICE_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        println!("seed {seed}: {:?}", run(seed));
        return;
    }
    let mut total = Counts::default();
    for seed in 0..200u64 {
        let c = run(seed);
        total.appended += c.appended;
        total.acked += c.acked;
        total.not_enough_after_append += c.not_enough_after_append;
        total.not_enough_before_append += c.not_enough_before_append;
        total.not_leader += c.not_leader;
        total.shrinks += c.shrinks;
        total.expands += c.expands;
        total.refused += c.refused;
        total.elections += c.elections;
    }
    println!("200 seeds: {total:?}");
    // The run must have exercised what it claims to check.
    assert!(total.acked > 0 && total.shrinks > 0 && total.expands > 0);
    assert!(total.elections > 0 && total.refused > 0 && total.not_leader > 0);
    assert!(total.not_enough_after_append + total.not_enough_before_append > 0);
}
