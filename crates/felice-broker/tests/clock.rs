//! The broker reads time through the clock it is given, not a process-wide
//! one: two brokers in one process, each with its own manual clock, stamp
//! log-append-time batches each with its own time.

use bytes::Bytes;
use felice_broker::clock::{ManualClock, SharedClock};
use felice_broker::server;
use felice_broker::BrokerConfig;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::sync::Arc;

mod common;
use common::{name, Conn};

async fn log_append_time_of_a_produce(
    clock: SharedClock,
    dir: &std::path::Path,
) -> (i64, server::RunningBroker) {
    let b = server::start_with_clock(BrokerConfig::for_test(dir), clock)
        .await
        .expect("start");
    let mut c = Conn::connect(&b).await;
    let topic = CreatableTopic::default()
        .with_name(name("stamped"))
        .with_num_partitions(1)
        .with_replication_factor(1)
        .with_configs(vec![CreatableTopicConfig::default()
            .with_name(StrBytes::from_static_str("message.timestamp.type"))
            .with_value(Some(StrBytes::from_static_str("LogAppendTime")))]);
    let created = c
        .call(
            &CreateTopicsRequest::default()
                .with_topics(vec![topic])
                .with_timeout_ms(5000),
            7,
        )
        .await;
    assert_eq!(created.topics[0].error_code, 0);
    let records = Bytes::from(felice_wire::build_batch(&[(None, Some(b"v"), 1)]));
    let resp = c
        .call(
            &ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(5000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(name("stamped"))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records))])]),
            9,
        )
        .await;
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0);
    (p.log_append_time_ms, b)
}

#[tokio::test]
async fn each_broker_in_a_process_reads_its_own_clock() {
    let (d1, d2) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let c1 = Arc::new(ManualClock::new(1_000_000_000_000));
    let c2 = Arc::new(ManualClock::new(2_000_000_000_000));
    let (t1, b1) = log_append_time_of_a_produce(c1.clone(), d1.path()).await;
    let (t2, b2) = log_append_time_of_a_produce(c2.clone(), d2.path()).await;
    assert_eq!((t1, t2), (1_000_000_000_000, 2_000_000_000_000));
    b1.stop().await;
    b2.stop().await;
}
