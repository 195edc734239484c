//! Socket-level tests of the group APIs: every advertised version of
//! FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
//! OffsetFetch, DescribeGroups, ListGroups, DeleteGroups and OffsetDelete,
//! a two-member rebalance with parked requests, session expiry, and state
//! replayed from `__consumer_offsets` after a restart.

use bytes::{BufMut, Bytes, BytesMut};
use felice_broker::server::{self, RunningBroker};
use felice_broker::BrokerConfig;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::ResponseError;
use std::time::Duration;

mod common;
use common::{name, versions, Conn};

const TOPIC: &str = "orders";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn gid(v: &str) -> GroupId {
    GroupId(s(v))
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

/// A broker that completes a first rebalance at once (no initial delay) and
/// accepts short sessions, so tests need not wait.
async fn start(dir: &std::path::Path) -> RunningBroker {
    let mut config = BrokerConfig::for_test(dir);
    config.group_initial_rebalance_delay_ms = 0;
    config.group_min_session_timeout_ms = 100;
    server::start(config).await.expect("start")
}

async fn create_topic(c: &mut Conn, topic: &str, partitions: i32) {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(1)])
        .with_timeout_ms(10_000);
    let resp = c.call(&req, 7).await;
    assert_eq!(resp.topics[0].error_code, 0);
}

/// A real "consumer" protocol subscription to `topics`.
fn subscription(topics: &[&str]) -> Bytes {
    let sub =
        ConsumerProtocolSubscription::default().with_topics(topics.iter().map(|t| s(t)).collect());
    let mut buf = BytesMut::new();
    buf.put_i16(1);
    sub.encode(&mut buf, 1).expect("subscription");
    buf.freeze()
}

fn join_req(group: &str, member: &str, session_ms: i32) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(gid(group))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(session_ms)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(subscription(&[TOPIC]))])
}

/// Joins a new dynamic member, following MEMBER_ID_REQUIRED on v4+.
async fn join(c: &mut Conn, group: &str, v: i16, session_ms: i32) -> JoinGroupResponse {
    let req = |member: &str| {
        let r = join_req(group, member, session_ms);
        // v0 has no rebalance timeout (it is the session timeout).
        if v == 0 {
            r.with_rebalance_timeout_ms(-1)
        } else {
            r
        }
    };
    let mut resp = c.call(&req(""), v).await;
    if v >= 4 {
        assert_eq!(
            resp.error_code,
            code(ResponseError::MemberIdRequired),
            "v{v}"
        );
        assert!(!resp.member_id.is_empty());
        let id = resp.member_id.to_string();
        resp = c.call(&req(&id), v).await;
    }
    resp
}

fn sync_req(
    group: &str,
    member: &str,
    generation: i32,
    v: i16,
    assignments: &[(&str, &[u8])],
) -> SyncGroupRequest {
    let mut r = SyncGroupRequest::default()
        .with_group_id(gid(group))
        .with_member_id(s(member))
        .with_generation_id(generation)
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(m))
                        .with_assignment(Bytes::copy_from_slice(a))
                })
                .collect(),
        );
    if v >= 5 {
        r = r
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(Some(s("range")));
    }
    r
}

fn commit_req(
    group: &str,
    member: &str,
    generation: i32,
    topic: &str,
    offset: i64,
) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_member_id(s(member))
        .with_generation_id_or_member_epoch(generation)
        .with_retention_time_ms(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(-1)
                .with_committed_metadata(Some(s("meta")))])])
}

fn commit_error(resp: &OffsetCommitResponse) -> i16 {
    resp.topics[0].partitions[0].error_code
}

/// (offset, metadata) of partition 0 of TOPIC, for any OffsetFetch version.
async fn fetch_offset(c: &mut Conn, group: &str, v: i16) -> (i64, String) {
    if v >= 8 {
        let req =
            OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(gid(group))
                .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                    .with_name(name(TOPIC))
                    .with_partition_indexes(vec![0])]))]);
        let resp = c.call(&req, v).await;
        let g = &resp.groups[0];
        assert_eq!(g.error_code, 0);
        let p = &g.topics[0].partitions[0];
        (
            p.committed_offset,
            p.metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
        )
    } else {
        let req = OffsetFetchRequest::default()
            .with_group_id(gid(group))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(name(TOPIC))
                .with_partition_indexes(vec![0])]));
        let resp = c.call(&req, v).await;
        let p = &resp.topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        (
            p.committed_offset,
            p.metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
        )
    }
}

async fn describe(c: &mut Conn, group: &str, v: i16) -> describe_groups_response::DescribedGroup {
    let req = DescribeGroupsRequest::default().with_groups(vec![gid(group)]);
    c.call(&req, v).await.groups.remove(0)
}

#[tokio::test]
async fn every_version_of_the_group_apis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = start(dir.path()).await;
    let mut c = Conn::connect(&b).await;
    create_topic(&mut c, TOPIC, 2).await;

    for v in versions::<FindCoordinatorRequest>() {
        let req = if v >= 4 {
            FindCoordinatorRequest::default().with_coordinator_keys(vec![s("a"), s("b")])
        } else {
            FindCoordinatorRequest::default().with_key(s("any-group"))
        };
        let resp = c.call(&req, v).await;
        if v >= 4 {
            assert_eq!(resp.coordinators.len(), 2);
            for co in &resp.coordinators {
                assert_eq!(
                    (co.error_code, co.node_id.0, co.port),
                    (0, 1, i32::from(b.local_addr.port()))
                );
            }
        } else {
            assert_eq!((resp.error_code, resp.node_id.0), (0, 1), "v{v}");
            assert_eq!(resp.port, i32::from(b.local_addr.port()));
        }
        // Transactions are not supported: INVALID_REQUEST, as Kafka for an unsupported key type.
        if v >= 1 {
            let resp = c.call(&req.clone().with_key_type(1), v).await;
            let err = if v >= 4 {
                resp.coordinators[0].error_code
            } else {
                resp.error_code
            };
            assert_eq!(err, code(ResponseError::InvalidRequest));
        }
    }

    for v in versions::<JoinGroupRequest>() {
        let group = format!("group-v{v}");
        let g = group.as_str();
        let sync_v = v.min(5);
        let hb_v = v.min(4);
        let commit_v = v.clamp(2, 9);
        let fetch_v = v.clamp(1, 9);

        let joined = join(&mut c, g, v, 10_000).await;
        assert_eq!(joined.error_code, 0, "join v{v}");
        assert_eq!(joined.generation_id, 1);
        assert_eq!(joined.leader, joined.member_id, "a lone member leads");
        assert_eq!(joined.members.len(), 1);
        assert_eq!(
            joined.protocol_name.as_ref().map(|p| p.as_str()),
            Some("range")
        );
        let me = joined.member_id.to_string();

        let synced = c
            .call(&sync_req(g, &me, 1, sync_v, &[(&me, b"assigned")]), sync_v)
            .await;
        assert_eq!(synced.error_code, 0, "sync v{sync_v}");
        assert_eq!(synced.assignment.as_ref(), b"assigned");
        let wrong = c.call(&sync_req(g, &me, 9, sync_v, &[]), sync_v).await;
        assert_eq!(wrong.error_code, code(ResponseError::IllegalGeneration));

        let hb = |gen: i32, member: &str| {
            HeartbeatRequest::default()
                .with_group_id(gid(g))
                .with_member_id(s(member))
                .with_generation_id(gen)
        };
        assert_eq!(c.call(&hb(1, &me), hb_v).await.error_code, 0);
        assert_eq!(
            c.call(&hb(2, &me), hb_v).await.error_code,
            code(ResponseError::IllegalGeneration)
        );
        assert_eq!(
            c.call(&hb(1, "stranger"), hb_v).await.error_code,
            code(ResponseError::UnknownMemberId)
        );

        let d = describe(&mut c, g, v.min(6)).await;
        assert_eq!(
            (
                d.error_code,
                d.group_state.as_str(),
                d.protocol_data.as_str()
            ),
            (0, "Stable", "range")
        );
        assert_eq!(d.protocol_type.as_str(), "consumer");
        assert_eq!(d.members.len(), 1);
        assert_eq!(d.members[0].client_id.as_str(), "protocol-test");
        assert_eq!(d.members[0].client_host.as_str(), "/127.0.0.1");
        assert_eq!(d.members[0].member_assignment.as_ref(), b"assigned");

        let list_v = v.min(5);
        let listed = c.call(&ListGroupsRequest::default(), list_v).await;
        let mine = listed
            .groups
            .iter()
            .find(|x| x.group_id.0.as_str() == g)
            .expect("listed");
        assert_eq!(mine.protocol_type.as_str(), "consumer");
        if list_v >= 4 {
            assert_eq!(mine.group_state.as_str(), "Stable");
            let filtered = c
                .call(
                    &ListGroupsRequest::default().with_states_filter(vec![s("empty")]),
                    list_v,
                )
                .await;
            assert!(filtered.groups.iter().all(|x| x.group_id.0.as_str() != g));
        }

        let resp = c.call(&commit_req(g, &me, 1, TOPIC, 7), commit_v).await;
        assert_eq!(commit_error(&resp), 0, "commit v{commit_v}");
        let resp = c.call(&commit_req(g, &me, 5, TOPIC, 8), commit_v).await;
        assert_eq!(commit_error(&resp), code(ResponseError::IllegalGeneration));
        let resp = c
            .call(&commit_req(g, &me, 1, "no-such-topic", 8), commit_v)
            .await;
        assert_eq!(
            commit_error(&resp),
            code(ResponseError::UnknownTopicOrPartition)
        );
        assert_eq!(
            fetch_offset(&mut c, g, fetch_v).await,
            (7, "meta".to_string())
        );

        // Active and subscribed: neither the offsets nor the group can go.
        let od = OffsetDeleteRequest::default()
            .with_group_id(gid(g))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(name(TOPIC))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0)
                ])]);
        let resp = c.call(&od, 0).await;
        assert_eq!(
            resp.topics[0].partitions[0].error_code,
            code(ResponseError::GroupSubscribedToTopic)
        );
        let del_v = v.min(2);
        let del = DeleteGroupsRequest::default().with_groups_names(vec![gid(g)]);
        assert_eq!(
            c.call(&del, del_v).await.results[0].error_code,
            code(ResponseError::NonEmptyGroup)
        );

        let leave_v = v.min(5);
        let leave = if leave_v >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(gid(g))
                .with_members(vec![MemberIdentity::default().with_member_id(s(&me))])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(gid(g))
                .with_member_id(s(&me))
        };
        let resp = c.call(&leave, leave_v).await;
        assert_eq!(resp.error_code, 0);
        if leave_v >= 3 {
            assert_eq!(resp.members[0].error_code, 0);
        }
        assert_eq!(
            describe(&mut c, g, v.min(6)).await.group_state.as_str(),
            "Empty"
        );

        // Empty: an admin commit (generation -1) is allowed; offsets and group can go.
        let resp = c.call(&commit_req(g, "", -1, TOPIC, 11), commit_v).await;
        assert_eq!(commit_error(&resp), 0);
        assert_eq!(fetch_offset(&mut c, g, fetch_v).await.0, 11);
        let resp = c.call(&od, 0).await;
        assert_eq!(
            (resp.error_code, resp.topics[0].partitions[0].error_code),
            (0, 0)
        );
        assert_eq!(fetch_offset(&mut c, g, fetch_v).await.0, -1);
        assert_eq!(c.call(&del, del_v).await.results[0].error_code, 0);
        assert_eq!(
            c.call(&del, del_v).await.results[0].error_code,
            code(ResponseError::GroupIdNotFound)
        );
        let gone = describe(&mut c, g, v.min(6)).await;
        assert_eq!(gone.group_state.as_str(), "Dead");
        let expected = if v >= 6 {
            code(ResponseError::GroupIdNotFound)
        } else {
            0
        };
        assert_eq!(gone.error_code, expected);
    }

    // Clients may not write to the internal topic.
    let meta = c
        .call(&MetadataRequest::default().with_topics(None), 12)
        .await;
    let internal = meta
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some("__consumer_offsets"))
        .expect("__consumer_offsets exists after FindCoordinator");
    assert!(internal.is_internal);
    assert_eq!(internal.partitions.len(), 50);
    b.stop().await;
}

#[tokio::test]
async fn a_second_member_rebalances_the_group_through_parked_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = start(dir.path()).await;
    let mut a = Conn::connect(&b).await;
    create_topic(&mut a, TOPIC, 2).await;
    let g = "rebalance";
    let first = join(&mut a, g, 9, 10_000).await;
    let a_id = first.member_id.to_string();
    let synced = a
        .call(&sync_req(g, &a_id, 1, 5, &[(&a_id, b"p0,p1")]), 5)
        .await;
    assert_eq!(synced.error_code, 0);

    // b joins: its JoinGroup is parked until a rejoins.
    let mut bc = Conn::connect(&b).await;
    let first_b = bc.call(&join_req(g, "", 10_000), 9).await;
    let b_id = first_b.member_id.to_string();
    let parked = tokio::spawn(async move {
        let r = bc.call(&join_req(g, &b_id, 10_000), 9).await;
        (bc, r)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!parked.is_finished(), "b's join must wait for a");
    let hb = HeartbeatRequest::default()
        .with_group_id(gid(g))
        .with_member_id(s(&a_id))
        .with_generation_id(1);
    assert_eq!(
        a.call(&hb, 4).await.error_code,
        code(ResponseError::RebalanceInProgress)
    );

    let rejoined = a.call(&join_req(g, &a_id, 10_000), 9).await;
    let (mut bc, b_joined) = tokio::time::timeout(Duration::from_secs(10), parked)
        .await
        .expect("b answered")
        .expect("task");
    assert_eq!((rejoined.error_code, b_joined.error_code), (0, 0));
    assert_eq!((rejoined.generation_id, b_joined.generation_id), (2, 2));
    assert_eq!(rejoined.leader.as_str(), a_id.as_str());
    assert_eq!(rejoined.members.len(), 2);
    assert!(b_joined.members.is_empty());

    // b syncs first and waits for the leader's assignment.
    let b_id = b_joined.member_id.to_string();
    let b_sync = sync_req(g, &b_id, 2, 5, &[]);
    let waiting = tokio::spawn(async move { bc.call(&b_sync, 5).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "b's sync must wait for the leader");
    let leader_sync = a
        .call(
            &sync_req(g, &a_id, 2, 5, &[(&a_id, b"p0"), (&b_id, b"p1")]),
            5,
        )
        .await;
    assert_eq!(leader_sync.assignment.as_ref(), b"p0");
    let b_synced = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("b answered")
        .expect("task");
    assert_eq!(
        (b_synced.error_code, b_synced.assignment.as_ref()),
        (0, &b"p1"[..])
    );
    let d = describe(&mut a, g, 5).await;
    assert_eq!((d.group_state.as_str(), d.members.len()), ("Stable", 2));
    b.stop().await;
}

#[tokio::test]
async fn a_member_that_stops_heartbeating_is_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = start(dir.path()).await;
    let mut c = Conn::connect(&b).await;
    create_topic(&mut c, TOPIC, 1).await;
    let g = "expiry";
    let joined = join(&mut c, g, 9, 300).await;
    let me = joined.member_id.to_string();
    assert_eq!(
        c.call(&sync_req(g, &me, 1, 5, &[(&me, b"x")]), 5)
            .await
            .error_code,
        0
    );
    // No heartbeats: the session (300 ms) runs out and the group empties.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let d = describe(&mut c, g, 5).await;
        if d.group_state.as_str() == "Empty" {
            assert!(d.members.is_empty());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "member never expired: {}",
            d.group_state.as_str()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.stop().await;
}

#[tokio::test]
async fn groups_and_offsets_come_back_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = start(dir.path()).await;
    let mut c = Conn::connect(&b).await;
    create_topic(&mut c, TOPIC, 2).await;
    let joined = join(&mut c, "stable-group", 9, 60_000).await;
    let me = joined.member_id.to_string();
    assert_eq!(
        c.call(&sync_req("stable-group", &me, 1, 5, &[(&me, b"mine")]), 5)
            .await
            .error_code,
        0
    );
    assert_eq!(
        commit_error(
            &c.call(&commit_req("stable-group", &me, 1, TOPIC, 42), 9)
                .await
        ),
        0
    );
    assert_eq!(
        commit_error(
            &c.call(&commit_req("simple-group", "", -1, TOPIC, 5), 9)
                .await
        ),
        0
    );
    // Overwritten, then deleted with its group: neither may come back.
    assert_eq!(
        commit_error(
            &c.call(&commit_req("deleted-group", "", -1, TOPIC, 1), 9)
                .await
        ),
        0
    );
    let del = DeleteGroupsRequest::default().with_groups_names(vec![gid("deleted-group")]);
    assert_eq!(c.call(&del, 2).await.results[0].error_code, 0);
    drop(c);
    b.stop().await;

    let b = start(dir.path()).await;
    let mut c = Conn::connect(&b).await;
    assert_eq!(
        fetch_offset(&mut c, "stable-group", 9).await,
        (42, "meta".to_string())
    );
    assert_eq!(fetch_offset(&mut c, "simple-group", 9).await.0, 5);
    assert_eq!(fetch_offset(&mut c, "deleted-group", 9).await.0, -1);
    let d = describe(&mut c, "stable-group", 5).await;
    assert_eq!(
        (d.group_state.as_str(), d.members.len()),
        ("Stable", 1),
        "members come back until their session ends"
    );
    assert_eq!(d.members[0].member_assignment.as_ref(), b"mine");
    // The member, still within its session, keeps its generation.
    let hb = HeartbeatRequest::default()
        .with_group_id(gid("stable-group"))
        .with_member_id(s(&me))
        .with_generation_id(1);
    assert_eq!(c.call(&hb, 4).await.error_code, 0);
    let listed = c.call(&ListGroupsRequest::default(), 5).await;
    let names: Vec<&str> = listed
        .groups
        .iter()
        .map(|g| g.group_id.0.as_str())
        .collect();
    assert!(names.contains(&"stable-group") && names.contains(&"simple-group"));
    assert!(!names.contains(&"deleted-group"));
    b.stop().await;
}

#[tokio::test]
async fn the_offsets_topic_is_compacted_and_replays_the_latest_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = |dir: &std::path::Path| {
        let mut config = BrokerConfig::for_test(dir);
        config.group_initial_rebalance_delay_ms = 0;
        config.offsets_topic_num_partitions = 1;
        config.offsets_topic_segment_bytes = 4096;
        config.log_cleaner_backoff_ms = 50;
        config
    };
    let b = server::start(config(dir.path())).await.expect("start");
    let mut c = Conn::connect(&b).await;
    create_topic(&mut c, TOPIC, 1).await;
    const COMMITS: i64 = 2_000;
    for i in 1..=COMMITS {
        let group = format!("g{}", i % 3);
        assert_eq!(
            commit_error(&c.call(&commit_req(&group, "", -1, TOPIC, i), 9).await),
            0
        );
    }
    let partition_dir = dir.path().join("__consumer_offsets-0");
    let log_bytes = || -> u64 {
        std::fs::read_dir(&partition_dir)
            .expect("partition dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| e.metadata().map_or(0, |m| m.len()))
            .sum()
    };
    // ~2,000 commits of ~110 bytes each were written (over 200 KB); the
    // cleaner, running meanwhile, keeps the closed segments down to about one
    // record per group.
    let newest_base = std::fs::read_dir(&partition_dir)
        .expect("partition dir")
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".log")
                .and_then(|b| b.parse::<i64>().ok())
        })
        .max()
        .expect("segments");
    assert!(
        newest_base > COMMITS / 2,
        "the log rolled many times: newest segment at {newest_base}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while log_bytes() > 3 * 4096 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not compacted: {} bytes",
            log_bytes()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(c);
    b.stop().await;

    let b = server::start(config(dir.path())).await.expect("restart");
    let mut c = Conn::connect(&b).await;
    for g in 0..3 {
        let last = (1..=COMMITS).filter(|i| i % 3 == g).max().expect("commits");
        assert_eq!(fetch_offset(&mut c, &format!("g{g}"), 9).await.0, last);
    }
    b.stop().await;
}

#[tokio::test]
async fn compacted_topics_refuse_records_without_a_key() {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let dir = tempfile::tempdir().expect("tempdir");
    let b = start(dir.path()).await;
    let mut c = Conn::connect(&b).await;
    let req = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name("compacted"))
        .with_num_partitions(1)
        .with_replication_factor(1)
        .with_configs(vec![CreatableTopicConfig::default()
            .with_name(s("cleanup.policy"))
            .with_value(Some(s("compact")))])]);
    assert_eq!(c.call(&req, 7).await.topics[0].error_code, 0);
    let produce = |key: Option<&[u8]>| {
        let batch = felice_wire::build_batch(&[(key, Some(b"v".as_slice()), 1_700_000_000_000)]);
        ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name("compacted"))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(Bytes::from(batch)))])])
    };
    let r = c.call(&produce(None), 9).await;
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        code(ResponseError::InvalidRecord)
    );
    let r = c.call(&produce(Some(b"k")), 9).await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    assert_eq!(
        r.responses[0].partition_responses[0].base_offset, 0,
        "the refused batch wrote nothing"
    );
    b.stop().await;
}

#[tokio::test]
async fn committed_leader_epochs_are_kept_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = start(dir.path()).await;
    let mut c = Conn::connect(&b).await;
    create_topic(&mut c, TOPIC, 1).await;
    let mut req = commit_req("epochs", "", -1, TOPIC, 12);
    req.topics[0].partitions[0].committed_leader_epoch = 7;
    assert_eq!(commit_error(&c.call(&req, 9).await), 0);
    drop(c);
    b.stop().await;
    let b = start(dir.path()).await;
    let mut c = Conn::connect(&b).await;
    for v in [5i16, 7, 8, 9] {
        let epoch = if v >= 8 {
            let req =
                OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                    .with_group_id(gid("epochs"))
                    .with_topics(None)]);
            let resp = c.call(&req, v).await;
            resp.groups[0].topics[0].partitions[0].committed_leader_epoch
        } else {
            let req = OffsetFetchRequest::default()
                .with_group_id(gid("epochs"))
                .with_topics(None);
            c.call(&req, v).await.topics[0].partitions[0].committed_leader_epoch
        };
        assert_eq!(epoch, 7, "OffsetFetch v{v}");
    }
    b.stop().await;
}

#[tokio::test]
async fn deleting_a_topic_deletes_its_committed_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = start(dir.path()).await;
    let mut c = Conn::connect(&b).await;
    create_topic(&mut c, TOPIC, 1).await;
    create_topic(&mut c, "kept", 1).await;
    assert_eq!(
        commit_error(&c.call(&commit_req("g", "", -1, TOPIC, 9), 9).await),
        0
    );
    assert_eq!(
        commit_error(&c.call(&commit_req("g", "", -1, "kept", 4), 9).await),
        0
    );
    let del = DeleteTopicsRequest::default()
        .with_topic_names(vec![name(TOPIC)])
        .with_timeout_ms(10_000);
    assert_eq!(c.call(&del, 5).await.responses[0].error_code, 0);
    // The tombstones are written off the metadata path, as Kafka's
    // coordinator schedules them: gone within a bound, not at once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while fetch_offset(&mut c, "g", 9).await.0 != -1 {
        assert!(
            std::time::Instant::now() < deadline,
            "offsets of the deleted topic are gone"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(c);
    b.stop().await;
    let b = start(dir.path()).await;
    let mut c = Conn::connect(&b).await;
    assert_eq!(
        fetch_offset(&mut c, "g", 9).await.0,
        -1,
        "and stay gone after a restart"
    );
    let req = OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
        .with_group_id(gid("g"))
        .with_topics(None)]);
    let resp = c.call(&req, 9).await;
    let topics: Vec<&str> = resp.groups[0]
        .topics
        .iter()
        .map(|t| t.name.0.as_str())
        .collect();
    assert_eq!(topics, vec!["kept"]);
    b.stop().await;
}
