//! The leader's side of replication, end to end on one node: this node is
//! the controller and broker 1; brokers 2 and 3 exist only as registration
//! records, and the test plays them, sending replica fetches by hand. A
//! topic on [1, 2, 3] led by 1: the high watermark follows the followers'
//! fetches, followers read past it, a non-replica is refused, a diverging
//! epoch is reported, and a follower that stops fetching leaves the ISR
//! through AlterPartition and joins again once it catches up.

use crate::metadata_source::MetadataSource;
use crate::server::{self, RunningBroker};
use crate::BrokerConfig;
use felice_client::Connection;
use felice_metadata::MetadataRecord;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::time::{Duration, Instant};

const TOPIC: uuid::Uuid = uuid::Uuid::from_u128(0x5eed);
const EPOCH_2: i64 = 100;
const EPOCH_3: i64 = 101;

async fn start(dir: &std::path::Path) -> RunningBroker {
    let config = BrokerConfig::load(
        None,
        &[
            "listeners=PLAINTEXT://127.0.0.1:0".to_string(),
            format!("log.dirs={}", dir.display()),
            "replica.lag.time.max.ms=1000".to_string(),
            // Brokers 2 and 3 never heartbeat: keep them unfenced.
            "broker.session.timeout.ms=600000".to_string(),
        ],
    )
    .expect("config");
    let rb = server::start(config).await.expect("start");
    let MetadataSource::Voter(quorum) = &rb.broker.metadata else {
        panic!("a single node is a voter");
    };
    // Brokers 2 and 3 "listen" where broker 1 does: the controller's
    // liveness probe finds a listener and leaves them unfenced.
    let port = i32::from(rb.local_addr.port());
    let image = quorum
        .commit::<std::convert::Infallible>(|_| {
            let mut records = Vec::new();
            for (id, epoch) in [(2, EPOCH_2), (3, EPOCH_3)] {
                records.push(MetadataRecord::BrokerRegistration {
                    node_id: id,
                    incarnation_id: uuid::Uuid::from_u128(id as u128),
                    broker_epoch: epoch,
                    host: "127.0.0.1".into(),
                    port,
                    rack: None,
                });
                records.push(MetadataRecord::UnfenceBroker {
                    node_id: id,
                    broker_epoch: epoch,
                });
            }
            records.push(MetadataRecord::Topic {
                name: "r".into(),
                topic_id: TOPIC,
            });
            records.push(MetadataRecord::Partition {
                topic_id: TOPIC,
                partition: 0,
                replicas: vec![1, 2, 3],
                isr: vec![1, 2, 3],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
            });
            Ok(records)
        })
        .await
        .expect("records");
    rb.broker
        .applied(image.offset, Duration::from_secs(10))
        .await
        .expect("applied");
    rb
}

fn records(n: usize) -> bytes::Bytes {
    let specs: Vec<_> = (0..n).map(|_| (None, Some(&b"v"[..]), 1_000)).collect();
    bytes::Bytes::from(felice_wire::build_batch(&specs))
}

async fn produce(conn: &Connection, n: usize) -> i16 {
    produce_acks(conn, n, 1, 5_000).await.0
}

/// (error, base offset) of a produce of `n` records.
async fn produce_acks(conn: &Connection, n: usize, acks: i16, timeout_ms: i32) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("r")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records(n)))])]);
    // v9: topics by name.
    let resp = conn
        .send_version(&req, 9)
        .await
        .expect("send")
        .recv()
        .await
        .expect("produce");
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// A fetch of partition 0 from `offset` as `replica` (-1: a consumer).
async fn fetch(
    conn: &Connection,
    replica: i32,
    replica_epoch: i64,
    offset: i64,
    epochs: (i32, i32),
) -> fetch_response::PartitionData {
    let req = FetchRequest::default()
        .with_replica_state(
            ReplicaState::default()
                .with_replica_id(BrokerId(replica))
                .with_replica_epoch(replica_epoch),
        )
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(TOPIC)
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_current_leader_epoch(epochs.0)
                .with_last_fetched_epoch(epochs.1)
                .with_partition_max_bytes(1 << 20)])]);
    let resp = conn
        .send_version(&req, 17)
        .await
        .expect("send")
        .recv()
        .await
        .expect("fetch");
    resp.responses[0].partitions[0].clone()
}

fn record_count(p: &fetch_response::PartitionData) -> usize {
    let bytes = p.records.clone().unwrap_or_default();
    felice_wire::Batches::new(&bytes)
        .filter_map(|b| b.ok())
        .map(|(_, h)| h.record_count as usize)
        .sum()
}

async fn wait_isr(rb: &RunningBroker, want: &[i32]) -> (i32, i32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let image = rb.broker.image();
        let p = &image.topic("r").expect("topic").partitions[0];
        if p.isr == want {
            return (p.leader_epoch, p.partition_epoch);
        }
        assert!(
            Instant::now() < deadline,
            "ISR stayed {:?}, not {want:?}",
            p.isr
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Broker 2 keeps fetching from `offset` while 3 fetches nothing, until 3
/// leaves the ISR (bounded).
async fn only_2_fetches_until_3_leaves(rb: &RunningBroker, conn: &Connection, offset: i64) {
    let shrunk = async {
        loop {
            fetch(conn, 2, EPOCH_2, offset, (0, 0)).await;
            let image = rb.broker.image();
            if image.topic("r").expect("topic").partitions[0].isr == [1, 2] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), shrunk)
        .await
        .expect("3 left the ISR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_move_the_high_watermark_and_the_isr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rb = start(dir.path()).await;
    let conn = Connection::connect(&rb.local_addr.to_string())
        .await
        .expect("connect");
    assert_eq!(produce(&conn, 3).await, 0);
    // Nothing committed: the followers have not fetched.
    let c = fetch(&conn, -1, -1, 0, (-1, -1)).await;
    assert_eq!(
        (c.error_code, c.high_watermark, record_count(&c)),
        (0, 0, 0)
    );
    // A follower reads past the high watermark.
    let f2 = fetch(&conn, 2, EPOCH_2, 0, (0, -1)).await;
    assert_eq!((f2.error_code, record_count(&f2)), (0, 3));
    assert_eq!(f2.high_watermark, 0, "3 has not fetched yet");
    let f2 = fetch(&conn, 2, EPOCH_2, 3, (0, 0)).await;
    assert_eq!(f2.high_watermark, 0, "3 still behind");
    let f3 = fetch(&conn, 3, EPOCH_3, 3, (0, 0)).await;
    assert_eq!((f3.error_code, f3.high_watermark), (0, 3));
    let c = fetch(&conn, -1, -1, 0, (-1, -1)).await;
    assert_eq!((c.high_watermark, record_count(&c)), (3, 3));
    // Not a replica.
    let x = fetch(&conn, 9, 1, 0, (-1, -1)).await;
    assert_eq!(x.error_code, 6, "NOT_LEADER_OR_FOLLOWER");
    let x = fetch(&conn, 9, 1, 0, (0, -1)).await;
    assert_eq!(x.error_code, 75, "UNKNOWN_LEADER_EPOCH with an epoch");
    // Its log ends past the leader's in epoch 0: diverging at (0, 3).
    let d = fetch(&conn, 2, EPOCH_2, 5, (0, 0)).await;
    assert_eq!(d.error_code, 0);
    assert_eq!(
        (d.diverging_epoch.epoch, d.diverging_epoch.end_offset),
        (0, 3)
    );
    assert_eq!(record_count(&d), 0);
    // 3 stops fetching while 2 keeps up: after replica.lag.time.max.ms it
    // leaves the ISR, with the same leader epoch.
    assert_eq!(produce(&conn, 1).await, 0);
    let stopped = Instant::now();
    only_2_fetches_until_3_leaves(&rb, &conn, 4).await;
    assert!(stopped.elapsed() >= Duration::from_millis(900));
    let (leader_epoch, partition_epoch) = wait_isr(&rb, &[1, 2]).await;
    assert_eq!((leader_epoch, partition_epoch), (0, 1));
    // Without 3 the high watermark reaches the end.
    let c = fetch(&conn, -1, -1, 0, (-1, -1)).await;
    assert_eq!(c.high_watermark, 4);
    // 3 catches up: back in.
    let f3 = fetch(&conn, 3, EPOCH_3, 4, (0, 0)).await;
    assert_eq!(f3.error_code, 0);
    let (leader_epoch, partition_epoch) = wait_isr(&rb, &[1, 2, 3]).await;
    assert_eq!((leader_epoch, partition_epoch), (0, 2));

    // acks=all waits for the ISR (the producer on its own connection: a
    // connection's requests are answered in order).
    let addr = rb.local_addr.to_string();
    let producer = Connection::connect(&addr).await.expect("connect");
    let acked = tokio::spawn(async move { produce_acks(&producer, 1, -1, 10_000).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!acked.is_finished(), "answered before the followers had it");
    fetch(&conn, 2, EPOCH_2, 5, (0, 0)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!acked.is_finished(), "answered before 3 had it");
    fetch(&conn, 3, EPOCH_3, 5, (0, 0)).await;
    let (code, base) = tokio::time::timeout(Duration::from_secs(5), acked)
        .await
        .expect("answered")
        .expect("task");
    assert_eq!((code, base), (0, 4));
    // Nobody fetches: REQUEST_TIMED_OUT after timeout_ms.
    let started = Instant::now();
    let (code, _) = produce_acks(&conn, 1, -1, 300).await;
    assert_eq!(code, 7, "REQUEST_TIMED_OUT");
    assert!(started.elapsed() >= Duration::from_millis(300));
    // min.insync.replicas=3 and an ISR of two: refused before the append.
    let MetadataSource::Voter(quorum) = &rb.broker.metadata else {
        panic!("a voter");
    };
    let image = quorum
        .commit::<std::convert::Infallible>(|_| {
            Ok(vec![MetadataRecord::TopicConfig {
                topic_id: TOPIC,
                key: "min.insync.replicas".into(),
                value: Some("3".into()),
            }])
        })
        .await
        .expect("config");
    rb.broker
        .applied(image.offset, Duration::from_secs(10))
        .await
        .expect("applied");
    only_2_fetches_until_3_leaves(&rb, &conn, 6).await;
    let leo = rb
        .broker
        .replicas
        .get(&TOPIC, 0)
        .expect("hosted")
        .log_end_offset();
    let (code, _) = produce_acks(&conn, 1, -1, 5_000).await;
    assert_eq!(code, 19, "NOT_ENOUGH_REPLICAS");
    let after = rb
        .broker
        .replicas
        .get(&TOPIC, 0)
        .expect("hosted")
        .log_end_offset();
    assert_eq!(after, leo, "nothing appended");
    // acks=1 is still taken.
    assert_eq!(produce(&conn, 1).await, 0);
    rb.stop().await;
}

/// Produce (acks=1), Fetch and ListOffsets (latest) of `partition` of topic
/// "o": each answer's error code.
async fn codes_of(conn: &Connection, partition: i32) -> (i16, i16, i16) {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let name = || TopicName(StrBytes::from_static_str("o"));
    let produce = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name())
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records(1)))])]);
    let p = conn
        .send_version(&produce, 9)
        .await
        .expect("send")
        .recv()
        .await
        .expect("produce");
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name())
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let f = conn
        .send_version(&fetch, 12)
        .await
        .expect("send")
        .recv()
        .await
        .expect("fetch");
    let list = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name())
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(-1)])]);
    let l = conn
        .send_version(&list, 7)
        .await
        .expect("send")
        .recv()
        .await
        .expect("list offsets");
    (
        p.responses[0].partition_responses[0].error_code,
        f.responses[0].partitions[0].error_code,
        l.topics[0].partitions[0].error_code,
    )
}

/// A partition whose invariant broke goes offline: produce, fetch and
/// ListOffsets answer KAFKA_STORAGE_ERROR (56), or NOT_LEADER_OR_FOLLOWER
/// once the controller moved its leadership, instead of serving from a
/// broken state, while the topic's other partition keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_with_a_broken_invariant_goes_offline_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rb = start(dir.path()).await;
    let conn = Connection::connect(&rb.local_addr.to_string())
        .await
        .expect("connect");
    // Topic "o": two partitions, each on broker 1 alone.
    let topic_id = uuid::Uuid::from_u128(0x0ff);
    let MetadataSource::Voter(quorum) = &rb.broker.metadata else {
        panic!("a voter");
    };
    let image = quorum
        .commit::<std::convert::Infallible>(|_| {
            let mut records = vec![MetadataRecord::Topic {
                name: "o".into(),
                topic_id,
            }];
            for partition in 0..2 {
                records.push(MetadataRecord::Partition {
                    topic_id,
                    partition,
                    replicas: vec![1],
                    isr: vec![1],
                    leader: 1,
                    leader_epoch: 0,
                    partition_epoch: 0,
                });
            }
            Ok(records)
        })
        .await
        .expect("records");
    rb.broker
        .applied(image.offset, Duration::from_secs(10))
        .await
        .expect("applied");
    assert_eq!(codes_of(&conn, 0).await, (0, 0, 0));
    assert_eq!(codes_of(&conn, 1).await, (0, 0, 0));
    // The hook an invariant check calls.
    rb.broker
        .replicas
        .get(&topic_id, 0)
        .expect("hosted")
        .take_offline("a test broke it");
    // KAFKA_STORAGE_ERROR from the replica, or NOT_LEADER_OR_FOLLOWER
    // once the controller took its leadership away (it is the only
    // replica: the partition waits for it, leaderless).
    let refused = |c: (i16, i16, i16)| [c.0, c.1, c.2].iter().all(|x| *x == 56 || *x == 6);
    let c = codes_of(&conn, 0).await;
    assert!(refused(c), "{c:?}");
    assert_eq!(codes_of(&conn, 1).await, (0, 0, 0));
    // A controller's word the state refuses (broker 1 to lead outside its
    // ISR) takes partition 1 offline too, instead of serving on.
    let image = quorum
        .commit::<std::convert::Infallible>(|_| {
            Ok(vec![MetadataRecord::Partition {
                topic_id,
                partition: 1,
                replicas: vec![1, 2, 3],
                isr: vec![2, 3],
                leader: 1,
                leader_epoch: 1,
                partition_epoch: 1,
            }])
        })
        .await
        .expect("records");
    rb.broker
        .applied(image.offset, Duration::from_secs(10))
        .await
        .expect("applied");
    let c = codes_of(&conn, 1).await;
    assert!(refused(c), "{c:?}");
}

/// ListOffsets LATEST of partition 0 of "r" asked as `replica`.
async fn latest_as(conn: &Connection, replica: i32) -> (i16, i64) {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(replica))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("r")))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-1)])]);
    let r = conn
        .send_version(&req, 7)
        .await
        .expect("send")
        .recv()
        .await
        .expect("list offsets");
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.offset)
}

/// As Kafka: a consumer's LATEST is the high watermark, a replica's (a
/// follower truncating after OFFSET_OUT_OF_RANGE) the log end offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_latest_is_the_log_end_for_a_replica() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rb = start(dir.path()).await;
    let conn = Connection::connect(&rb.local_addr.to_string())
        .await
        .expect("connect");
    // acks=1: written, but the followers have not fetched it.
    assert_eq!(produce(&conn, 3).await, 0);
    assert_eq!(latest_as(&conn, -1).await, (0, 0));
    assert_eq!(latest_as(&conn, 2).await, (0, 3));
}

/// An offline replica is reported to the controller, which moves the
/// leadership to the next ISR member and takes this broker out of the ISR
/// (Kafka's handling of a failed log directory), so the partition is
/// served again elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_leader_hands_its_partition_to_the_isr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rb = start(dir.path()).await;
    let part = rb.broker.replicas.get(&TOPIC, 0).expect("hosted");
    let before = rb.broker.image().topic("r").expect("topic").partitions[0].clone();
    assert_eq!((before.leader, before.isr.clone()), (1, vec![1, 2, 3]));
    part.take_offline("a test broke it");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let image = rb.broker.image();
        let p = &image.topic("r").expect("topic").partitions[0];
        if p.leader == 2 {
            assert_eq!(p.isr, vec![2, 3]);
            assert_eq!(p.leader_epoch, before.leader_epoch + 1);
            assert!(p.partition_epoch > before.partition_epoch);
            break;
        }
        assert!(Instant::now() < deadline, "leadership stayed: {p:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The offline replica ignores the new word: still offline.
    assert!(part.is_offline());
}
