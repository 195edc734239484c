//! An idempotent producer through the Rust `rdkafka` crate (librdkafka with
//! `enable.idempotence=true`): it takes a producer id, numbers its batches,
//! and every record lands once, in order, on each partition; after a broker
//! restart a second idempotent producer (a new id) appends after it.

use felice_broker::server::{self, RunningBroker};
use felice_broker::BrokerConfig;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::time::{Duration, Instant};

const TOPIC: &str = "rd-idem";
const PARTITIONS: i32 = 3;
const PER_PARTITION: i32 = 2_000;

async fn start(dir: &std::path::Path) -> RunningBroker {
    let mut config = BrokerConfig::for_test(dir);
    config.num_partitions = PARTITIONS;
    server::start(config).await.expect("start")
}

fn produce(bootstrap: &str, round: &str) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .create()
        .expect("producer");
    for i in 0..PER_PARTITION {
        for part in 0..PARTITIONS {
            let value = format!("{round}-{part}-{i}");
            loop {
                match p.send(
                    BaseRecord::<(), _>::to(TOPIC)
                        .partition(part)
                        .payload(&value),
                ) {
                    Ok(()) => break,
                    // Local queue full: let deliveries drain, then retry.
                    Err((_, _)) => {
                        p.poll(Duration::from_millis(10));
                    }
                }
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// Every value of `partition`, in offset order, read from offset 0 to its end.
fn read_all(bootstrap: &str, partition: i32, count: usize) -> Vec<(i64, String)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "rd-idem-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, partition, Offset::Beginning)
        .expect("tpl");
    c.assign(&tpl).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < count {
        assert!(
            Instant::now() < deadline,
            "partition {partition}: read {} of {count}",
            out.len()
        );
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.expect("message");
            let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            out.push((m.offset(), value));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_rdkafka_producer_writes_each_record_once_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = start(dir.path()).await;
    let bootstrap = b.local_addr.to_string();
    let boot = bootstrap.clone();
    tokio::task::spawn_blocking(move || produce(&boot, "a"))
        .await
        .expect("produce");
    b.stop().await;
    let b = start(dir.path()).await;
    let bootstrap2 = b.local_addr.to_string();
    let boot = bootstrap2.clone();
    tokio::task::spawn_blocking(move || produce(&boot, "b"))
        .await
        .expect("produce after restart");
    let boot = bootstrap2.clone();
    let all = tokio::task::spawn_blocking(move || {
        (0..PARTITIONS)
            .map(|p| read_all(&boot, p, 2 * PER_PARTITION as usize))
            .collect::<Vec<_>>()
    })
    .await
    .expect("read");
    for (part, records) in all.iter().enumerate() {
        let expected: Vec<(i64, String)> = ["a", "b"]
            .iter()
            .flat_map(|round| (0..PER_PARTITION).map(move |i| format!("{round}-{part}-{i}")))
            .enumerate()
            .map(|(offset, v)| (offset as i64, v))
            .collect();
        assert_eq!(
            records, &expected,
            "partition {part}: every record once, in order, contiguous offsets"
        );
    }
    b.stop().await;
}
