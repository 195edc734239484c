use super::*;

const S: i32 = 10_000; // session timeout
const R: i32 = 30_000; // rebalance timeout

fn cfg(delay: i32) -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: delay,
        max_size: 3,
        ..GroupConfig::default()
    }
}

fn protocols(names: &[&str]) -> Vec<Protocol> {
    names
        .iter()
        .map(|n| Protocol {
            name: n.to_string(),
            metadata: Bytes::from(format!("meta-{n}")),
        })
        .collect()
}

fn join_req(member_id: &str, new_id: &str, names: &[&str]) -> JoinRequest {
    JoinRequest {
        member_id: member_id.into(),
        group_instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: S,
        rebalance_timeout_ms: R,
        protocol_type: "consumer".into(),
        protocols: protocols(names),
        require_known_member_id: true,
        new_member_id: new_id.into(),
        supports_skip_assignment: true,
    }
}

fn sync_req(member_id: &str, generation_id: i32, assignments: &[(&str, &str)]) -> SyncRequest {
    SyncRequest {
        member_id: member_id.into(),
        group_instance_id: None,
        generation_id,
        protocol_type: None,
        protocol_name: None,
        assignments: assignments
            .iter()
            .map(|(m, a)| (m.to_string(), Bytes::from(a.to_string())))
            .collect(),
    }
}

fn join_of(fx: &[Effect], request: RequestId) -> Option<JoinResponse> {
    fx.iter().find_map(|e| match e {
        Effect::Join(r, resp) if *r == request => Some(resp.clone()),
        _ => None,
    })
}

fn sync_of(fx: &[Effect], request: RequestId) -> Option<SyncResponse> {
    fx.iter().find_map(|e| match e {
        Effect::Sync(r, resp) if *r == request => Some(resp.clone()),
        _ => None,
    })
}

/// Writes whatever record the group asks for, successfully.
fn store_ok(g: &mut Group, now: i64) -> Vec<Effect> {
    match g.take_store() {
        Some((reason, _value)) => g.stored(reason, Ok(()), now),
        None => Vec::new(),
    }
}

/// A one-member Stable group led by "a" (no initial delay).
fn stable_one(g: &mut Group, c: &GroupConfig) {
    let fx = g.join(c, join_req("", "a", &["range"]), 1, 0);
    assert_eq!(
        join_of(&fx, 1).and_then(|r| r.error),
        Some(GroupError::MemberIdRequired)
    );
    let fx = g.join(c, join_req("a", "x", &["range"]), 2, 0);
    let r = join_of(&fx, 2).expect("join answered at once");
    assert_eq!(
        (r.error, r.generation_id, r.leader.as_str()),
        (None, 1, "a")
    );
    assert_eq!(r.members.len(), 1);
    let fx = g.sync(sync_req("a", 1, &[("a", "all")]), 3, 0);
    assert!(
        fx.is_empty(),
        "the leader's sync waits for the group record"
    );
    let fx = store_ok(g, 0);
    assert_eq!(
        sync_of(&fx, 3).map(|r| r.assignment),
        Some(Bytes::from("all"))
    );
    assert_eq!(g.state(), GroupState::Stable);
}

#[test]
fn new_member_needs_an_id_then_leads_a_one_member_group() {
    let c = cfg(0);
    let mut g = Group::new("g", &c, 0);
    stable_one(&mut g, &c);
    assert_eq!(g.heartbeat("a", None, 1, 100), Ok(()));
    assert_eq!(
        g.heartbeat("zz", None, 1, 100),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(
        g.heartbeat("a", None, 7, 100),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(g.take_store(), None);
}

#[test]
fn a_second_member_triggers_a_rebalance_that_waits_for_the_first() {
    let c = cfg(0);
    let mut g = Group::new("g", &c, 0);
    stable_one(&mut g, &c);
    let fx = g.join(&c, join_req("", "b", &["range"]), 10, 1);
    assert_eq!(
        join_of(&fx, 10).and_then(|r| r.error),
        Some(GroupError::MemberIdRequired)
    );
    let fx = g.join(&c, join_req("b", "x", &["range"]), 11, 1);
    assert!(fx.is_empty(), "b waits for a to rejoin");
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert_eq!(
        g.heartbeat("a", None, 1, 2),
        Err(GroupError::RebalanceInProgress)
    );
    // An old-generation commit is still accepted while preparing (eager revoke).
    assert_eq!(g.validate_commit("a", None, 1, 2), Ok(()));

    let fx = g.join(&c, join_req("a", "x", &["range"]), 12, 3);
    let ra = join_of(&fx, 12).expect("a answered");
    let rb = join_of(&fx, 11).expect("b answered");
    assert_eq!((ra.generation_id, rb.generation_id), (2, 2));
    assert_eq!(ra.leader, "a");
    assert_eq!(ra.members.len(), 2, "the leader sees every member");
    assert!(rb.members.is_empty());
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    assert_eq!(
        g.validate_commit("a", None, 2, 3),
        Err(GroupError::RebalanceInProgress)
    );

    assert!(g.sync(sync_req("b", 2, &[]), 13, 4).is_empty());
    assert!(g
        .sync(sync_req("a", 2, &[("a", "p0"), ("b", "p1")]), 14, 4)
        .is_empty());
    let fx = store_ok(&mut g, 4);
    assert_eq!(
        sync_of(&fx, 13).map(|r| r.assignment),
        Some(Bytes::from("p1"))
    );
    assert_eq!(
        sync_of(&fx, 14).map(|r| r.assignment),
        Some(Bytes::from("p0"))
    );
    assert_eq!(g.state(), GroupState::Stable);
    // A follower that syncs again later gets its assignment at once.
    let fx = g.sync(sync_req("b", 2, &[]), 15, 5);
    assert_eq!(
        sync_of(&fx, 15).map(|r| r.assignment),
        Some(Bytes::from("p1"))
    );
    assert_eq!(g.sync(sync_req("b", 1, &[]), 16, 5).len(), 1);
}

#[test]
fn a_member_that_stops_heartbeating_is_removed_after_its_session_timeout() {
    let c = cfg(0);
    let mut g = Group::new("g", &c, 0);
    stable_one(&mut g, &c);
    assert!(g.tick(i64::from(S) - 1).is_empty());
    assert_eq!(g.state(), GroupState::Stable);
    g.tick(i64::from(S));
    assert_eq!(
        g.state(),
        GroupState::Empty,
        "the last member expired: the group is empty"
    );
    assert_eq!(g.generation_id(), 2);
    assert!(matches!(g.take_store(), Some((StoreReason::Snapshot, v)) if v.members.is_empty()));
}

#[test]
fn leaving_empties_the_group_at_once() {
    let c = cfg(0);
    let mut g = Group::new("g", &c, 0);
    stable_one(&mut g, &c);
    let (results, _) = g.leave(&[("a".into(), None), ("nobody".into(), None)], 5);
    assert_eq!(results, vec![Ok(()), Err(GroupError::UnknownMemberId)]);
    assert_eq!(g.state(), GroupState::Empty);
    assert_eq!(
        g.protocol_type(),
        Some("consumer"),
        "an emptied group is still a consumer group"
    );
    assert_eq!(
        g.validate_commit("", None, -1, 6),
        Ok(()),
        "admin commits to an empty group"
    );
}

#[test]
fn members_that_do_not_rejoin_in_time_are_dropped_from_the_next_generation() {
    let c = cfg(0);
    let mut g = Group::new("g", &c, 0);
    stable_one(&mut g, &c);
    g.join(&c, join_req("", "b", &["range"]), 10, 1);
    g.join(&c, join_req("b", "", &["range"]), 11, 1);
    // a keeps heartbeating but never rejoins.
    for t in (1000..i64::from(R)).step_by(1000) {
        let _ = g.heartbeat("a", None, 1, t);
        assert!(g.tick(t).is_empty());
    }
    let fx = g.tick(1 + i64::from(R));
    let rb = join_of(&fx, 11).expect("b answered when the join phase expired");
    assert_eq!((rb.leader.as_str(), rb.members.len()), ("b", 1));
    assert!(!g.has_member("a"));
}

#[test]
fn members_that_never_sync_are_removed_after_the_rebalance_timeout() {
    let c = cfg(0);
    let mut g = Group::new("g", &c, 0);
    stable_one(&mut g, &c);
    g.join(&c, join_req("", "b", &["range"]), 10, 1);
    g.join(&c, join_req("b", "", &["range"]), 11, 1);
    g.join(&c, join_req("a", "", &["range"]), 12, 2);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    let fx = g.sync(sync_req("a", 2, &[("a", "x")]), 13, 3);
    assert!(fx.is_empty());
    // The leader's record write fails: everyone waiting hears it and the group rebalances.
    let (reason, _) = g.take_store().expect("store");
    let fx = g.stored(reason, Err(GroupError::StorageError), 3);
    assert_eq!(
        sync_of(&fx, 13).and_then(|r| r.error),
        Some(GroupError::StorageError)
    );
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    // Both rejoin; b never syncs.
    g.join(&c, join_req("a", "", &["range"]), 20, 4);
    let fx = g.join(&c, join_req("b", "", &["range"]), 21, 4);
    assert!(join_of(&fx, 21).is_some());
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    assert!(g.sync(sync_req("a", 3, &[("a", "x")]), 22, 5).is_empty());
    let _ = g.take_store(); // never completes: pretend the write is still in flight
    g.tick(5 + i64::from(R));
    assert!(!g.has_member("b"), "b never sent SyncGroup");
    assert_eq!(g.state(), GroupState::PreparingRebalance);
}

#[test]
fn protocols_must_be_shared_by_every_member() {
    let c = cfg(0);
    let mut g = Group::new("g", &c, 0);
    stable_one(&mut g, &c);
    let fx = g.join(&c, join_req("", "b", &["roundrobin"]), 10, 1);
    assert_eq!(
        join_of(&fx, 10).and_then(|r| r.error),
        Some(GroupError::InconsistentGroupProtocol)
    );
    let mut other_type = join_req("", "b", &["range"]);
    other_type.protocol_type = "connect".into();
    let fx = g.join(&c, other_type, 11, 1);
    assert_eq!(
        join_of(&fx, 11).and_then(|r| r.error),
        Some(GroupError::InconsistentGroupProtocol)
    );
    let mut empty = Group::new("e", &c, 0);
    let fx = empty.join(&c, join_req("", "b", &[]), 12, 1);
    assert_eq!(
        join_of(&fx, 12).and_then(|r| r.error),
        Some(GroupError::InconsistentGroupProtocol)
    );
}

#[test]
fn protocol_selection_takes_the_most_voted_common_protocol() {
    let c = GroupConfig {
        initial_rebalance_delay_ms: 0,
        ..GroupConfig::default()
    };
    let mut g = Group::new("g", &c, 0);
    let join = |g: &mut Group, id: &str, names: &[&str], req: RequestId| {
        let mut r = join_req("", id, names);
        r.require_known_member_id = false;
        g.join(&c, r, req, 0)
    };
    join(&mut g, "a", &["sticky", "range"], 1);
    // a alone: sticky wins. Then b and c prefer range, which all support.
    assert_eq!(g.protocol_name(), Some("sticky"));
    join(&mut g, "b", &["range", "sticky"], 2);
    join(&mut g, "c", &["range", "sticky", "roundrobin"], 3);
    assert_eq!(g.select_protocol().as_deref(), Some("range"));
}

#[test]
fn the_initial_delay_gathers_members_that_arrive_together() {
    let c = cfg(3_000);
    let mut g = Group::new("g", &c, 0);
    let mut a = join_req("", "a", &["range"]);
    a.require_known_member_id = false;
    assert!(
        g.join(&c, a, 1, 0).is_empty(),
        "waits for the initial delay"
    );
    let mut b = join_req("", "b", &["range"]);
    b.require_known_member_id = false;
    assert!(g.join(&c, b, 2, 1_000).is_empty());
    // b arrived during the delay: the delay is re-armed once.
    assert!(g.tick(3_000).is_empty());
    let fx = g.tick(6_000);
    assert_eq!(join_of(&fx, 1).map(|r| r.members.len()), Some(2));
    assert!(join_of(&fx, 2).is_some());
    assert_eq!(g.generation_id(), 1);
}

#[test]
fn group_max_size_counts_pending_members() {
    let c = cfg(0);
    let mut g = Group::new("g", &c, 0);
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        let fx = g.join(&c, join_req("", id, &["range"]), i as u64, 0);
        assert_eq!(
            join_of(&fx, i as u64).and_then(|r| r.error),
            Some(GroupError::MemberIdRequired)
        );
    }
    let fx = g.join(&c, join_req("", "d", &["range"]), 9, 0);
    assert_eq!(
        join_of(&fx, 9).and_then(|r| r.error),
        Some(GroupError::GroupMaxSizeReached)
    );
    // Pending ids expire after the session timeout, freeing the places.
    g.tick(i64::from(S) + 1);
    let fx = g.join(&c, join_req("", "d", &["range"]), 10, i64::from(S) + 1);
    assert_eq!(
        join_of(&fx, 10).and_then(|r| r.error),
        Some(GroupError::MemberIdRequired)
    );
}

fn static_join(instance: &str, member_id: &str, new_id: &str) -> JoinRequest {
    JoinRequest {
        group_instance_id: Some(instance.into()),
        ..join_req(member_id, new_id, &["range"])
    }
}

#[test]
fn a_static_member_that_comes_back_gets_its_assignment_without_a_rebalance() {
    let c = cfg(0);
    let mut g = Group::new("g", &c, 0);
    g.join(&c, static_join("ia", "", "a1"), 1, 0);
    let fx = g.join(&c, static_join("ib", "", "b1"), 2, 0);
    assert!(
        fx.is_empty(),
        "static members skip MEMBER_ID_REQUIRED and wait for a"
    );
    g.join(&c, static_join("ia", "a1", ""), 3, 0);
    g.sync(sync_req("a1", 2, &[("a1", "pa"), ("b1", "pb")]), 4, 0);
    let mut b_sync = sync_req("b1", 2, &[]);
    b_sync.group_instance_id = Some("ib".into());
    g.sync(b_sync, 5, 0);
    store_ok(&mut g, 0);
    assert_eq!(g.state(), GroupState::Stable);
    let generation = g.generation_id();

    // b restarts: same instance id, no member id.
    let fx = g.join(&c, static_join("ib", "", "b2"), 6, 100);
    assert!(fx.is_empty(), "the answer waits for the group record");
    let fx = store_ok(&mut g, 100);
    let r = join_of(&fx, 6).expect("b2 answered");
    assert_eq!(
        (r.error, r.member_id.as_str(), r.generation_id),
        (None, "b2", generation)
    );
    assert_eq!(g.state(), GroupState::Stable, "no rebalance");
    let mut s = sync_req("b2", generation, &[]);
    s.group_instance_id = Some("ib".into());
    let fx = g.sync(s, 7, 100);
    assert_eq!(
        sync_of(&fx, 7).map(|r| r.assignment),
        Some(Bytes::from("pb"))
    );
    // The old incarnation is fenced.
    assert_eq!(
        g.heartbeat("b1", Some("ib"), generation, 100),
        Err(GroupError::FencedInstanceId)
    );
    assert_eq!(
        g.validate_commit("b1", Some("ib"), generation, 100),
        Err(GroupError::FencedInstanceId)
    );
    let (res, _) = g.leave(&[("b1".into(), Some("ib".into()))], 100);
    assert_eq!(res, vec![Err(GroupError::FencedInstanceId)]);
}

/// A static member's replacement whose group record cannot be written is
/// undone, as Kafka reverts it: the old incarnation keeps its id and the new
/// one is refused with the error and no member id.
#[test]
fn a_static_replacement_that_cannot_be_stored_is_undone() {
    let c = cfg(0);
    let mut g = Group::new("g", &c, 0);
    g.join(&c, static_join("ia", "", "a1"), 1, 0);
    g.join(&c, static_join("ib", "", "b1"), 2, 0);
    g.join(&c, static_join("ia", "a1", ""), 3, 0);
    g.sync(sync_req("a1", 2, &[("a1", "pa"), ("b1", "pb")]), 4, 0);
    let mut b_sync = sync_req("b1", 2, &[]);
    b_sync.group_instance_id = Some("ib".into());
    g.sync(b_sync, 5, 0);
    store_ok(&mut g, 0);
    let generation = g.generation_id();
    for (replacement, instance, new_id) in [("b1", "ib", "b2"), ("a1", "ia", "a2")] {
        let fx = g.join(&c, static_join(instance, "", new_id), 6, 100);
        assert!(fx.is_empty(), "the answer waits for the group record");
        let (reason, _) = g.take_store().expect("a record to write");
        let fx = g.stored(reason, Err(GroupError::StorageError), 100);
        let r = join_of(&fx, 6).expect("answered");
        assert_eq!(
            (r.error, r.member_id.as_str()),
            (Some(GroupError::StorageError), "")
        );
        assert_eq!(g.state(), GroupState::Stable);
        assert_eq!(
            g.heartbeat(replacement, Some(instance), generation, 200),
            Ok(())
        );
        assert!(g
            .heartbeat(new_id, Some(instance), generation, 200)
            .is_err());
    }
    // The leader is a1 again, and its sync still returns its assignment.
    let mut s = sync_req("a1", generation, &[]);
    s.group_instance_id = Some("ia".into());
    let fx = g.sync(s, 7, 200);
    assert_eq!(
        sync_of(&fx, 7).map(|r| r.assignment),
        Some(Bytes::from("pa"))
    );
}

#[test]
fn commit_validation_follows_kafka() {
    let c = cfg(0);
    let mut g = Group::new("g", &c, 0);
    assert_eq!(g.validate_commit("", None, -1, 0), Ok(()));
    stable_one(&mut g, &c);
    assert_eq!(g.validate_commit("a", None, 1, 1), Ok(()));
    assert_eq!(
        g.validate_commit("a", None, 0, 1),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        g.validate_commit("b", None, 1, 1),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(
        g.validate_commit("", None, -1, 1),
        Err(GroupError::UnknownMemberId)
    );
    g.mark_dead();
    assert_eq!(
        g.validate_commit("a", None, 1, 1),
        Err(GroupError::CoordinatorNotAvailable)
    );
}

#[test]
fn offsets_of_an_empty_group_expire_from_when_it_became_empty() {
    let c = cfg(0);
    let mut g = Group::new("g", &c, 0);
    stable_one(&mut g, &c);
    let v = |ts| OffsetValue {
        offset: 5,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: ts,
        expire_timestamp_ms: -1,
    };
    // The members' metadata reads as a subscription to "t" only.
    let subscribed_to_t = |_: &Bytes| Some(vec!["t".to_string()]);
    g.commit_offset("t", 0, v(10));
    g.commit_offset("u", 0, v(10));
    assert_eq!(
        g.expired_offsets(100, 1_000_000, subscribed_to_t),
        vec![("u".to_string(), 0)],
        "a Stable consumer group keeps the offsets of subscribed topics only (KIP-496)"
    );
    assert!(
        g.expired_offsets(100, 1_000_000, |_: &Bytes| None)
            .is_empty(),
        "unreadable subscriptions count as subscribed to everything"
    );
    assert!(g.expired_offsets(100, 109, subscribed_to_t).is_empty());
    g.leave(&[("a".into(), None)], 500);
    assert!(g.expired_offsets(1_000, 1_499, subscribed_to_t).is_empty());
    assert_eq!(
        g.expired_offsets(1_000, 1_500, subscribed_to_t),
        vec![("t".to_string(), 0), ("u".to_string(), 0)]
    );
    // A simple group (never had members): from each commit.
    let mut s = Group::new("s", &c, 0);
    s.commit_offset("t", 1, v(200));
    assert_eq!(s.expired_offsets(1_000, 1_199, subscribed_to_t), vec![]);
    assert_eq!(
        s.expired_offsets(1_000, 1_200, subscribed_to_t),
        vec![("t".to_string(), 1)]
    );
}

#[test]
fn the_record_round_trips_through_load() {
    let c = cfg(0);
    let mut g = Group::new("g", &c, 0);
    stable_one(&mut g, &c);
    let value = g.to_value();
    let mut loaded = Group::new("g", &c, 0);
    loaded.load(value.clone(), 1_000);
    assert_eq!(loaded.state(), GroupState::Stable);
    assert_eq!(loaded.to_value(), value);
    // The member must heartbeat within its session timeout after the load.
    assert_eq!(loaded.heartbeat("a", None, 1, 1_001), Ok(()));
    loaded.tick(1_001 + i64::from(S));
    assert_eq!(loaded.state(), GroupState::Empty);
}

#[test]
fn members_cannot_hold_more_metadata_than_one_group_record() {
    let c = GroupConfig {
        max_metadata_bytes: 40,
        ..cfg(0)
    };
    let mut g = Group::new("g", &c, 0);
    let big = |id: &str, n: usize| JoinRequest {
        protocols: vec![Protocol {
            name: "range".into(),
            metadata: Bytes::from(vec![0u8; n]),
        }],
        require_known_member_id: false,
        ..join_req("", id, &["range"])
    };
    let fx = g.join(&c, big("a", 30), 1, 0);
    assert_eq!(join_of(&fx, 1).and_then(|r| r.error), None);
    let fx = g.join(&c, big("b", 30), 2, 0);
    assert_eq!(
        join_of(&fx, 2).and_then(|r| r.error),
        Some(GroupError::GroupMaxSizeReached)
    );
    assert_eq!(g.member_count(), 1);
}

#[test]
fn an_absent_static_leader_is_replaced_by_a_member_that_rejoined() {
    let c = cfg(0);
    let mut g = Group::new("g", &c, 0);
    // Static members with sessions longer than the rebalance timeout.
    let long = |instance: &str, member: &str, new_id: &str| JoinRequest {
        session_timeout_ms: 100_000,
        ..static_join(instance, member, new_id)
    };
    g.join(&c, long("il", "", "l1"), 1, 0);
    g.join(&c, long("if", "", "f1"), 2, 0);
    g.join(&c, long("il", "l1", ""), 3, 0);
    assert_eq!(g.leader_id(), Some("l1"));
    let mut ls = sync_req("l1", 2, &[("l1", "x"), ("f1", "y")]);
    ls.group_instance_id = Some("il".into());
    g.sync(ls, 4, 0);
    store_ok(&mut g, 0);
    assert_eq!(g.state(), GroupState::Stable);
    // The leader's process is gone (no LeaveGroup, long session); a new
    // member joins and only the follower rejoins.
    let mut n = join_req("", "n1", &["range"]);
    n.require_known_member_id = false;
    g.join(&c, n, 5, 100);
    let fx = g.join(&c, long("if", "f1", ""), 6, 100);
    assert!(fx.is_empty());
    let fx = g.tick(100 + i64::from(R));
    let follower = join_of(&fx, 6).expect("f1 answered");
    let newcomer = join_of(&fx, 5).expect("n1 answered");
    let leader = [&follower, &newcomer]
        .into_iter()
        .find(|r| r.leader == r.member_id)
        .expect("one of the members that rejoined leads");
    assert_eq!(
        leader.members.len(),
        3,
        "the absent static member stays in the group"
    );
    assert_ne!(g.leader_id(), Some("l1"));
}

/// A KIP-394 pending member id outlives a join phase that completes without it
/// (Kafka expires pending ids on their own session timer only), so the client's
/// JoinGroup with that id is taken, not refused with UNKNOWN_MEMBER_ID.
#[test]
fn a_pending_member_id_survives_the_join_phase_it_missed() {
    let c = cfg(0);
    let mut g = Group::new("g", &c, 0);
    stable_one(&mut g, &c);
    let mut b = join_req("", "b", &["range"]);
    b.session_timeout_ms = 2 * R;
    let fx = g.join(&c, b.clone(), 10, 1);
    assert_eq!(
        join_of(&fx, 10).and_then(|r| r.error),
        Some(GroupError::MemberIdRequired)
    );
    // The leader rejoins; the pending id keeps the phase open until its deadline.
    let fx = g.join(&c, join_req("a", "x", &["range"]), 11, 1);
    assert!(fx.is_empty(), "a pending member blocks early completion");
    assert_eq!(
        g.heartbeat("a", None, 1, 2),
        Err(GroupError::RebalanceInProgress)
    );
    let fx = g.tick(1 + i64::from(R));
    let r = join_of(&fx, 11).expect("the phase completes at its deadline");
    assert_eq!((r.error, r.generation_id, r.members.len()), (None, 2, 1));
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    // b comes back with its id, within its own session timeout.
    b.member_id = "b".into();
    let fx = g.join(&c, b, 12, 2 + i64::from(R));
    assert!(
        join_of(&fx, 12).is_none(),
        "b is a member now, waiting for the rebalance it started"
    );
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    // Past its own deadline a pending id is gone.
    let mut g = Group::new("h", &c, 0);
    stable_one(&mut g, &c);
    let fx = g.join(&c, join_req("", "b", &["range"]), 20, 1);
    assert_eq!(
        join_of(&fx, 20).and_then(|r| r.error),
        Some(GroupError::MemberIdRequired)
    );
    g.tick(2 + i64::from(S));
    let fx = g.join(&c, join_req("b", "x", &["range"]), 21, 3 + i64::from(S));
    assert_eq!(
        join_of(&fx, 21).and_then(|r| r.error),
        Some(GroupError::UnknownMemberId)
    );
}
