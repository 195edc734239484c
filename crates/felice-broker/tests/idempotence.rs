//! Protocol tests of idempotent producers: InitProducerId at every version
//! (new ids, KIP-360 epoch bumps, its error cases, ids never reused after a
//! restart), Produce with producer sequences (a retry answered with its
//! original offsets at every Produce version, per-partition failures), and
//! DescribeProducers.

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

mod common;
use common::{broker, name, versions, Conn};

fn idem_batch(values: usize, pid: i64, epoch: i16, seq: i32) -> Bytes {
    let value = b"value";
    let specs: Vec<_> = (0..values)
        .map(|_| (None, Some(&value[..]), 1_700_000_000_000i64 + 1))
        .collect();
    let mut b = felice_wire::build_batch(&specs);
    felice_wire::set_producer(&mut b, pid, epoch, seq).expect("producer fields");
    Bytes::from(b)
}

fn init(pid: i64, epoch: i16) -> InitProducerIdRequest {
    InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
}

fn produce(topic: &str, parts: Vec<(i32, Bytes)>) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(
                parts
                    .into_iter()
                    .map(|(index, records)| {
                        PartitionProduceData::default()
                            .with_index(index)
                            .with_records(Some(records))
                    })
                    .collect(),
            )])
}

async fn create(c: &mut Conn, topic: &str, partitions: i32) {
    let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(1)]);
    assert_eq!(c.call(&create, 7).await.topics[0].error_code, 0);
}

#[tokio::test]
async fn init_producer_id_every_version_and_its_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = broker(dir.path()).await;
    let mut c = Conn::connect(&b).await;
    let mut seen = std::collections::HashSet::new();
    for v in versions::<InitProducerIdRequest>() {
        let r = c.call(&init(-1, -1), v).await;
        assert_eq!(r.error_code, 0, "v{v}");
        assert_eq!(r.producer_epoch, 0, "v{v}");
        assert!(seen.insert(r.producer_id.0), "v{v}: id reused");
        if v < 3 {
            continue;
        }
        // KIP-360: the current id and epoch bump the epoch.
        let bumped = c.call(&init(r.producer_id.0, 0), v).await;
        assert_eq!(
            (bumped.error_code, bumped.producer_id, bumped.producer_epoch),
            (0, r.producer_id, 1),
            "v{v}"
        );
        // An exhausted epoch gets a new id.
        let fresh = c.call(&init(r.producer_id.0, i16::MAX - 1), v).await;
        assert_eq!(fresh.error_code, 0);
        assert_ne!(fresh.producer_id, r.producer_id);
        assert_eq!(fresh.producer_epoch, 0);
        // An id never handed out gets a new id.
        let unknown = c.call(&init(1 << 40, 3), v).await;
        assert_eq!(unknown.error_code, 0);
        assert!(unknown.producer_id.0 < 1 << 40);
        // One of the two without the other is INVALID_REQUEST, as Kafka.
        for (pid, epoch) in [(-1, 4), (r.producer_id.0, -1)] {
            let bad = c.call(&init(pid, epoch), v).await;
            assert_eq!(bad.error_code, ResponseError::InvalidRequest.code(), "v{v}");
            assert_eq!(bad.producer_id.0, -1);
        }
    }
    // Transactional ids need a transaction coordinator: never a fake id.
    let tx =
        init(-1, -1).with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx"))));
    let r = c.call(&tx, 4).await;
    assert_eq!(r.error_code, ResponseError::CoordinatorNotAvailable.code());
    assert_eq!(r.producer_id.0, -1);
    let empty =
        init(-1, -1).with_transactional_id(Some(TransactionalId(StrBytes::from_static_str(""))));
    assert_eq!(
        c.call(&empty, 4).await.error_code,
        ResponseError::InvalidRequest.code()
    );
    let last = *seen.iter().max().expect("ids");
    b.stop().await;
    // After a restart no id is handed out again: the block was recorded.
    let b = broker(dir.path()).await;
    let mut c = Conn::connect(&b).await;
    let r = c.call(&init(-1, -1), 0).await;
    assert!(r.producer_id.0 > last, "{} after {last}", r.producer_id.0);
    b.stop().await;
}

#[tokio::test]
async fn retries_are_answered_with_their_offsets_at_every_produce_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = broker(dir.path()).await;
    let mut c = Conn::connect(&b).await;
    create(&mut c, "idem", 1).await;
    let pid = c.call(&init(-1, -1), 0).await.producer_id.0;
    let mut seq = 0;
    let mut next_offset = 0;
    // Produce v13 names topics by id; the common helper names them, so stop at 12.
    for v in versions::<ProduceRequest>().filter(|v| *v < 13) {
        let data = idem_batch(3, pid, 0, seq);
        let first = c.call(&produce("idem", vec![(0, data.clone())]), v).await;
        let p = &first.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, next_offset), "v{v}");
        let retry = c.call(&produce("idem", vec![(0, data)]), v).await;
        let p = &retry.responses[0].partition_responses[0];
        assert_eq!(
            (p.error_code, p.base_offset),
            (0, next_offset),
            "v{v}: a retry gets the original offset"
        );
        seq += 3;
        next_offset += 3;
    }
    // Nothing was written twice: the next batch lands right after.
    let r = c
        .call(&produce("idem", vec![(0, idem_batch(1, pid, 0, seq))]), 9)
        .await;
    assert_eq!(
        r.responses[0].partition_responses[0].base_offset,
        next_offset
    );
    b.stop().await;
}

#[tokio::test]
async fn a_bad_sequence_fails_only_its_partition_and_describe_producers_shows_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = broker(dir.path()).await;
    let mut c = Conn::connect(&b).await;
    create(&mut c, "two", 2).await;
    let pid = c.call(&init(-1, -1), 4).await.producer_id.0;
    let r = c
        .call(
            &produce(
                "two",
                vec![(0, idem_batch(2, pid, 0, 0)), (1, idem_batch(2, pid, 0, 0))],
            ),
            9,
        )
        .await;
    for p in &r.responses[0].partition_responses {
        assert_eq!(p.error_code, 0);
    }
    // Partition 0 in sequence; partition 1 skips ahead; then an old epoch.
    let r = c
        .call(
            &produce(
                "two",
                vec![(0, idem_batch(1, pid, 0, 2)), (1, idem_batch(1, pid, 0, 7))],
            ),
            9,
        )
        .await;
    let parts = &r.responses[0].partition_responses;
    assert_eq!(
        (parts[0].index, parts[0].error_code, parts[0].base_offset),
        (0, 0, 2)
    );
    assert_eq!(
        (parts[1].index, parts[1].error_code, parts[1].base_offset),
        (1, ResponseError::OutOfOrderSequenceNumber.code(), -1)
    );
    // A producer id with a negative sequence, and control batches, are
    // refused as Kafka's LogValidator does for a client.
    let r = c
        .call(&produce("two", vec![(0, idem_batch(1, pid, 0, -1))]), 9)
        .await;
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        ResponseError::InvalidRecord.code()
    );
    let mut control = idem_batch(1, pid, 0, 3).to_vec();
    control[22] |= 0x20; // attributes bit 5: control batch
    let crc = felice_wire::crc32c(&control[21..]);
    control[17..21].copy_from_slice(&crc.to_be_bytes());
    let r = c
        .call(&produce("two", vec![(0, Bytes::from(control))]), 9)
        .await;
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        ResponseError::InvalidRecord.code()
    );
    let bumped = c.call(&init(pid, 0), 4).await;
    assert_eq!(bumped.producer_epoch, 1);
    let r = c
        .call(&produce("two", vec![(0, idem_batch(1, pid, 1, 0))]), 9)
        .await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    let r = c
        .call(&produce("two", vec![(0, idem_batch(1, pid, 0, 3))]), 9)
        .await;
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        ResponseError::InvalidProducerEpoch.code()
    );

    let describe = DescribeProducersRequest::default().with_topics(vec![
        TopicRequest::default()
            .with_name(name("two"))
            .with_partition_indexes(vec![0, 1, 5]),
        TopicRequest::default()
            .with_name(name("nope"))
            .with_partition_indexes(vec![0]),
    ]);
    let r = c.call(&describe, 0).await;
    let two = &r.topics[0].partitions;
    assert_eq!(two[0].error_code, 0);
    let p0: Vec<_> = two[0]
        .active_producers
        .iter()
        .map(|p| (p.producer_id.0, p.producer_epoch, p.last_sequence))
        .collect();
    assert_eq!(p0, vec![(pid, 1, 0)]);
    assert_eq!(two[0].active_producers[0].last_timestamp, 1_700_000_000_001);
    assert_eq!(two[0].active_producers[0].coordinator_epoch, -1);
    assert_eq!(two[0].active_producers[0].current_txn_start_offset, -1);
    let p1: Vec<_> = two[1]
        .active_producers
        .iter()
        .map(|p| (p.producer_id.0, p.producer_epoch, p.last_sequence))
        .collect();
    assert_eq!(p1, vec![(pid, 0, 1)], "the refused batch changed nothing");
    assert_eq!(
        two[2].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    assert_eq!(
        r.topics[1].partitions[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    b.stop().await;
}
