//! Consumer groups through the Rust `rdkafka` crate (librdkafka): two members
//! split a topic's partitions, consume every record once and commit; after a
//! broker restart a new member resumes exactly at the commits.

use felice_broker::server::{self, RunningBroker};
use felice_broker::BrokerConfig;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const TOPIC: &str = "rd-orders";
const GROUP: &str = "rd-group";
const PARTITIONS: i32 = 4;

async fn start(dir: &std::path::Path) -> RunningBroker {
    let mut config = BrokerConfig::for_test(dir);
    config.group_initial_rebalance_delay_ms = 0;
    config.num_partitions = PARTITIONS;
    server::start(config).await.expect("start")
}

fn consumer(bootstrap: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", GROUP)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "500")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .expect("consumer");
    c.subscribe(&[TOPIC]).expect("subscribe");
    c
}

fn produce(bootstrap: &str, per_partition: i32, tag: &str) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    for part in 0..PARTITIONS {
        for i in 0..per_partition {
            let value = format!("{tag}-{part}-{i}");
            p.send(
                BaseRecord::to(TOPIC)
                    .partition(part)
                    .key("k")
                    .payload(&value),
            )
            .expect("send");
        }
    }
    p.flush(Duration::from_secs(20)).expect("flush");
}

fn assigned(c: &BaseConsumer) -> BTreeSet<i32> {
    c.assignment()
        .map(|l| l.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// Polls all consumers until `done` holds; returns (consumer, partition, offset) seen.
fn poll_until(
    consumers: &[&BaseConsumer],
    limit: Duration,
    what: &str,
    mut done: impl FnMut(&[(usize, i32, i64)]) -> bool,
) -> Vec<(usize, i32, i64)> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while !done(&seen) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; seen {seen:?}"
        );
        for (i, c) in consumers.iter().enumerate() {
            if let Some(m) = c.poll(Duration::from_millis(50)) {
                let m = m.expect("consumer error");
                seen.push((i, m.partition(), m.offset()));
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rdkafka_members_split_commit_and_resume_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = start(dir.path()).await;
    let bootstrap = b.local_addr.to_string();
    let bs = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        produce(&bs, 5, "first");
        let a = consumer(&bs);
        let c = consumer(&bs);
        // Both members get two partitions each, together all four.
        poll_until(&[&a, &c], Duration::from_secs(60), "a 2 + 2 split", |_| {
            let (pa, pc) = (assigned(&a), assigned(&c));
            pa.len() == 2 && pc.len() == 2 && pa.union(&pc).count() == 4
        });
        let seen = poll_until(&[&a, &c], Duration::from_secs(30), "20 records", |s| {
            s.len() >= 20
        });
        let mut offsets: Vec<(i32, i64)> = seen.iter().map(|(_, p, o)| (*p, *o)).collect();
        offsets.sort_unstable();
        let expected: Vec<(i32, i64)> = (0..PARTITIONS)
            .flat_map(|p| (0..5).map(move |o| (p, o)))
            .collect();
        assert_eq!(offsets, expected, "every record exactly once");
        for (i, p, _) in &seen {
            let owner = if *i == 0 { &a } else { &c };
            assert!(
                assigned(owner).contains(p),
                "member {i} read partition {p} it does not own"
            );
        }
        a.commit_consumer_state(CommitMode::Sync).expect("commit a");
        c.commit_consumer_state(CommitMode::Sync).expect("commit c");
        let committed = a.committed(Duration::from_secs(10)).expect("committed");
        for e in committed.elements() {
            assert_eq!(e.offset(), Offset::Offset(5), "partition {}", e.partition());
        }
    })
    .await
    .expect("first phase");
    b.stop().await;

    let b = start(dir.path()).await;
    let bootstrap = b.local_addr.to_string();
    tokio::task::spawn_blocking(move || {
        produce(&bootstrap, 3, "second");
        let d = consumer(&bootstrap);
        let seen = poll_until(&[&d], Duration::from_secs(60), "the 12 new records", |s| {
            s.len() >= 12
        });
        let mut offsets: Vec<(i32, i64)> = seen.iter().map(|(_, p, o)| (*p, *o)).collect();
        offsets.sort_unstable();
        let expected: Vec<(i32, i64)> = (0..PARTITIONS)
            .flat_map(|p| (5..8).map(move |o| (p, o)))
            .collect();
        assert_eq!(
            offsets, expected,
            "resumed exactly at the commits, after the restart"
        );
        let mut list = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            list.add_partition(TOPIC, p);
        }
        let committed = d
            .committed_offsets(list, Duration::from_secs(10))
            .expect("committed");
        assert!(committed
            .elements()
            .iter()
            .all(|e| e.offset() == Offset::Offset(5)));
    })
    .await
    .expect("second phase");
    b.stop().await;
}
