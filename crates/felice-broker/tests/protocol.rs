//! Protocol tests: for every advertised API and every advertised version,
//! encode a request with `kafka-protocol`, send it to a broker listening on an
//! ephemeral port, and decode and check the reply. Also: bad frames close
//! only their own connection.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use felice_broker::server;
use felice_broker::BrokerConfig;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::ResponseError;

mod common;
use common::{broker, name, versions, Conn};

fn batch(values: &[&[u8]]) -> Bytes {
    let specs: Vec<_> = values
        .iter()
        .map(|v| (None, Some(*v), 1_700_000_000_000i64))
        .collect();
    Bytes::from(felice_wire::build_batch(&specs))
}

#[tokio::test]
async fn api_versions_every_version_and_kip511_fallback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = broker(dir.path()).await;
    let mut c = Conn::connect(&b).await;
    for v in versions::<ApiVersionsRequest>() {
        let mut req = ApiVersionsRequest::default();
        if v >= 3 {
            req = req
                .with_client_software_name(StrBytes::from_static_str("t"))
                .with_client_software_version(StrBytes::from_static_str("1"));
        }
        let resp = c.call(&req, v).await;
        assert_eq!(resp.error_code, 0, "v{v}");
        let keys: Vec<i16> = resp.api_keys.iter().map(|k| k.api_key).collect();
        for k in [0, 1, 2, 3, 18, 19, 20, 60] {
            assert!(keys.contains(&k), "v{v}: api key {k} missing");
        }
    }
    // Unknown version: v0 body with UNSUPPORTED_VERSION, connection stays open.
    let mut frame = BytesMut::new();
    let mut body = BytesMut::new();
    body.put_i16(18);
    body.put_i16(127);
    body.put_i32(99);
    body.put_i16(-1);
    body.put_u8(0);
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    c.send_raw(&frame).await;
    let mut resp = c.recv_raw().await.expect("fallback response");
    assert_eq!(resp.get_i32(), 99);
    let v0 = ApiVersionsResponse::decode(&mut resp, 0).expect("v0 body");
    assert_eq!(v0.error_code, ResponseError::UnsupportedVersion.code());
    assert_eq!(v0.api_keys.len(), 1);
    assert_eq!(v0.api_keys[0].api_key, 18);
    let again = c.call(&ApiVersionsRequest::default(), 0).await;
    assert_eq!(again.error_code, 0);
    b.stop().await;
}

#[tokio::test]
async fn every_version_of_the_data_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = broker(dir.path()).await;
    let mut c = Conn::connect(&b).await;

    // CreateTopics, each version: one topic per version, 2 partitions.
    for v in versions::<CreateTopicsRequest>() {
        let topic = CreatableTopic::default()
            .with_name(name(&format!("t{v}")))
            .with_num_partitions(2)
            .with_replication_factor(1);
        let resp = c
            .call(
                &CreateTopicsRequest::default()
                    .with_topics(vec![topic.clone()])
                    .with_timeout_ms(5000),
                v,
            )
            .await;
        assert_eq!(
            resp.topics[0].error_code, 0,
            "CreateTopics v{v}: {:?}",
            resp.topics[0].error_message
        );
        if v >= 5 {
            assert_eq!(resp.topics[0].num_partitions, 2);
            let configs = resp.topics[0].configs.as_ref().expect("configs");
            assert!(configs.iter().any(|c| c.name.as_str() == "retention.ms"));
        }
        // Again: already exists.
        let resp = c
            .call(&CreateTopicsRequest::default().with_topics(vec![topic]), v)
            .await;
        assert_eq!(
            resp.topics[0].error_code,
            ResponseError::TopicAlreadyExists.code()
        );
    }
    // validate_only creates nothing.
    let resp = c
        .call(
            &CreateTopicsRequest::default()
                .with_validate_only(true)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(name("dry"))
                    .with_num_partitions(1)
                    .with_replication_factor(1)]),
            7,
        )
        .await;
    assert_eq!(resp.topics[0].error_code, 0);

    // Metadata, each version, all topics.
    let mut topic_id = uuid::Uuid::nil();
    for v in versions::<MetadataRequest>() {
        let req = if v == 0 {
            MetadataRequest::default().with_topics(Some(vec![]))
        } else {
            MetadataRequest::default().with_topics(None)
        };
        let resp = c.call(&req, v).await;
        assert_eq!(resp.brokers.len(), 1, "Metadata v{v}");
        let names: Vec<String> = resp
            .topics
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .collect();
        assert!(
            names.contains(&"t2".to_string()),
            "Metadata v{v}: {names:?}"
        );
        assert!(
            !names.contains(&"dry".to_string()),
            "validate_only created a topic"
        );
        let t = resp
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "t2"))
            .expect("t2");
        assert_eq!(t.partitions.len(), 2);
        if v >= 10 {
            topic_id = t.topic_id;
            assert!(!topic_id.is_nil());
        }
    }

    // Produce, each version (v13 by topic id), to t2 partition 0.
    let mut expected = 0i64;
    for v in versions::<ProduceRequest>() {
        let data = TopicProduceData::default()
            .with_name(if v < 13 { name("t2") } else { name("") })
            .with_topic_id(if v >= 13 { topic_id } else { uuid::Uuid::nil() })
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch(&[b"a", b"b"])))]);
        let resp = c
            .call(
                &ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(5000)
                    .with_topic_data(vec![data]),
                v,
            )
            .await;
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0, "Produce v{v}: {:?}", p.error_message);
        assert_eq!(p.base_offset, expected, "Produce v{v}");
        expected += 2;
    }

    // Fetch, each version (v13+ by topic id), from offset 0: every record.
    for v in versions::<FetchRequest>() {
        let part = FetchPartition::default()
            .with_partition(0)
            .with_fetch_offset(0)
            .with_partition_max_bytes(1 << 20);
        let topic = FetchTopic::default()
            .with_topic(if v < 13 { name("t2") } else { name("") })
            .with_topic_id(if v >= 13 { topic_id } else { uuid::Uuid::nil() })
            .with_partitions(vec![part]);
        let mut req = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![topic]);
        if v >= 15 {
            req = req.with_replica_state(
                fetch_request::ReplicaState::default().with_replica_id(BrokerId(-1)),
            );
        } else {
            req = req.with_replica_id(BrokerId(-1));
        }
        let resp = c.call(&req, v).await;
        assert_eq!(resp.error_code, 0, "Fetch v{v}");
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "Fetch v{v}");
        assert_eq!(p.high_watermark, expected);
        let mut records = p.records.clone().expect("records");
        let sets =
            kafka_protocol::records::RecordBatchDecoder::decode_all(&mut records).expect("decode");
        let offsets: Vec<i64> = sets
            .iter()
            .flat_map(|s| s.records.iter().map(|r| r.offset))
            .collect();
        assert_eq!(offsets, (0..expected).collect::<Vec<_>>(), "Fetch v{v}");
    }

    // ListOffsets, each version: earliest, latest, by timestamp.
    for v in versions::<ListOffsetsRequest>() {
        let parts = vec![
            ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-2),
            ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-1),
            ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(1_700_000_000_000),
        ];
        // Kafka refuses duplicate partitions only for v1+ replicas; a consumer
        // sends each partition once, so ask one at a time.
        let mut got = Vec::new();
        for p in parts {
            let req = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(name("t2"))
                    .with_partitions(vec![p])]);
            let resp = c.call(&req, v).await;
            let r = &resp.topics[0].partitions[0];
            assert_eq!(r.error_code, 0, "ListOffsets v{v}");
            got.push(r.offset);
        }
        assert_eq!(got, vec![0, expected, 0], "ListOffsets v{v}");
    }

    // DescribeCluster, each version.
    for v in versions::<DescribeClusterRequest>() {
        let resp = c.call(&DescribeClusterRequest::default(), v).await;
        assert_eq!(resp.error_code, 0, "DescribeCluster v{v}");
        assert_eq!(resp.brokers.len(), 1);
        assert_eq!(resp.cluster_id.len(), 22);
    }

    // DeleteTopics, each version: delete t{v}; then it is gone.
    for v in versions::<DeleteTopicsRequest>() {
        let topic = format!("t{}", v + 1);
        let req = if v >= 6 {
            DeleteTopicsRequest::default()
                .with_topics(vec![delete_topics_request::DeleteTopicState::default()
                    .with_name(Some(name(&topic)))])
        } else {
            DeleteTopicsRequest::default().with_topic_names(vec![name(&topic)])
        };
        let resp = c.call(&req, v).await;
        assert_eq!(resp.responses[0].error_code, 0, "DeleteTopics v{v}");
        let resp = c.call(&req, v).await;
        assert_eq!(
            resp.responses[0].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
    }
    let md = c
        .call(&MetadataRequest::default().with_topics(None), 12)
        .await;
    let left: Vec<String> = md
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect();
    assert!(left.is_empty(), "topics left after deleting all: {left:?}");
    b.stop().await;
}

#[tokio::test]
async fn produce_rejections_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = broker(dir.path()).await;
    let mut c = Conn::connect(&b).await;
    let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name("r"))
        .with_num_partitions(1)
        .with_replication_factor(1)]);
    assert_eq!(c.call(&create, 7).await.topics[0].error_code, 0);
    let produce = |records: Bytes, partition: i32| {
        ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name("r"))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(records))])])
    };
    let good = batch(&[b"x"]);
    // Corrupt CRC.
    let mut bad = BytesMut::from(&good[..]);
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let r = c.call(&produce(bad.freeze(), 0), 9).await;
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        ResponseError::CorruptMessage.code()
    );
    // Too large for max.message.bytes.
    let big = vec![7u8; 1_100_000];
    let r = c.call(&produce(batch(&[&big]), 0), 9).await;
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        ResponseError::MessageTooLarge.code()
    );
    // Unknown partition.
    let r = c.call(&produce(good.clone(), 3), 9).await;
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    // Nothing was written: the next good batch gets offset 0.
    let r = c.call(&produce(good, 0), 9).await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    assert_eq!(r.responses[0].partition_responses[0].base_offset, 0);
    b.stop().await;
}

#[tokio::test]
async fn bad_frames_close_only_their_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = broker(dir.path()).await;
    let mut healthy = Conn::connect(&b).await;
    let bad_frames: Vec<Vec<u8>> = vec![
        0x7fff_ffffi32.to_be_bytes().to_vec(), // far over socket.request.max.bytes
        (-5i32).to_be_bytes().to_vec(),        // negative length
        [&8i32.to_be_bytes()[..], &[0xff; 8]].concat(), // too short for a header
        [
            &12i32.to_be_bytes()[..],
            &[0x7f, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0],
        ]
        .concat(), // unknown api key
        [
            &12i32.to_be_bytes()[..],
            &[0, 3, 0, 99, 0, 0, 0, 1, 0, 0, 0, 0],
        ]
        .concat(), // Metadata v99
        [
            &14i32.to_be_bytes()[..],
            &[0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0xff, 0xff, 0xff, 0xff],
        ]
        .concat(), // garbage Produce body
    ];
    for frame in bad_frames {
        let mut c = Conn::connect(&b).await;
        c.send_raw(&frame).await;
        assert!(
            c.recv_raw().await.is_none(),
            "frame {frame:?} got an answer instead of a close"
        );
        let ok = healthy.call(&ApiVersionsRequest::default(), 0).await;
        assert_eq!(ok.error_code, 0);
    }
    b.stop().await;
}

#[tokio::test]
async fn topic_compression_type_recompresses_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = broker(dir.path()).await;
    let mut c = Conn::connect(&b).await;
    let config = kafka_protocol::messages::create_topics_request::CreatableTopicConfig::default()
        .with_name(StrBytes::from_static_str("compression.type"))
        .with_value(Some(StrBytes::from_static_str("gzip")));
    let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name("z"))
        .with_num_partitions(1)
        .with_replication_factor(1)
        .with_configs(vec![config])]);
    assert_eq!(c.call(&create, 7).await.topics[0].error_code, 0);
    let values: Vec<Vec<u8>> = (0..50)
        .map(|i| format!("value-{i}-").repeat(20).into_bytes())
        .collect();
    let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
    let sent = batch(&refs);
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name("z"))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(sent.clone()))])]);
    let r = c.call(&produce, 9).await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    let fetch = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name("z"))
            .with_partitions(vec![FetchPartition::default()
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let resp = c.call(&fetch, 12).await;
    let mut stored = resp.responses[0].partitions[0]
        .records
        .clone()
        .expect("records");
    let header = felice_wire::BatchHeader::parse(&stored).expect("header");
    assert_eq!(
        header.compression().expect("codec"),
        felice_wire::Compression::Gzip
    );
    assert!(stored.len() < sent.len(), "gzip made the batch no smaller");
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut stored).expect("decode");
    let got: Vec<Vec<u8>> = set
        .records
        .iter()
        .map(|r| r.value.clone().expect("value").to_vec())
        .collect();
    assert_eq!(got, values);
    assert_eq!(
        set.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (0..50).collect::<Vec<_>>()
    );
    b.stop().await;
}

#[tokio::test]
async fn a_small_request_memory_pool_still_serves_everyone() {
    // queued.max.request.bytes = socket.request.max.bytes = 2 MiB: requests
    // queue for room instead of failing, and all complete.
    let dir = tempfile::tempdir().expect("tempdir");
    let overrides = vec![
        "listeners=PLAINTEXT://127.0.0.1:0".to_string(),
        format!("log.dirs={}", dir.path().display()),
        "socket.request.max.bytes=2097152".to_string(),
        "queued.max.request.bytes=2097152".to_string(),
    ];
    let b = server::start(BrokerConfig::load(None, &overrides).expect("config"))
        .await
        .expect("start");
    let mut admin = Conn::connect(&b).await;
    let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name("m"))
        .with_num_partitions(4)
        .with_replication_factor(1)]);
    assert_eq!(admin.call(&create, 7).await.topics[0].error_code, 0);
    let value = vec![1u8; 900_000];
    let mut tasks = Vec::new();
    for p in 0..4 {
        let mut c = Conn::connect(&b).await;
        let records = batch(&[value.as_slice()]);
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                let req = ProduceRequest::default()
                    .with_acks(1)
                    .with_timeout_ms(5000)
                    .with_topic_data(vec![TopicProduceData::default()
                        .with_name(name("m"))
                        .with_partition_data(vec![PartitionProduceData::default()
                            .with_index(p)
                            .with_records(Some(records.clone()))])]);
                let r = c.call(&req, 9).await;
                assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
            }
        }));
    }
    for t in tasks {
        t.await.expect("producer task");
    }
    b.stop().await;
}

/// Fetches large enough to go out with `sendfile` (several partitions in one
/// response, mixing file ranges and in-memory chunks, from the start and
/// from the middle of a batch) return exactly the stored batches, in every
/// Fetch version.
#[tokio::test]
async fn large_fetches_are_sent_from_the_segment_files_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = broker(dir.path()).await;
    let mut c = Conn::connect(&b).await;
    let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name("big"))
        .with_num_partitions(3)
        .with_replication_factor(1)]);
    assert_eq!(c.call(&create, 7).await.topics[0].error_code, 0);
    // Partitions 0 and 1: 8 batches of 10 records of ~3 KB (~240 KB each);
    // partition 2: one small batch (copied, not sent from the file).
    let value = |p: i32, i: usize| format!("p{p}-r{i}-").repeat(300).into_bytes();
    let mut sent: Vec<Vec<Vec<u8>>> = vec![vec![]; 3];
    for p in 0..3 {
        let batches = if p == 2 { 1 } else { 8 };
        for bi in 0..batches {
            let values: Vec<Vec<u8>> = (0..10).map(|i| value(p, bi * 10 + i)).collect();
            let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
            let req = ProduceRequest::default()
                .with_acks(1)
                .with_timeout_ms(5000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(name("big"))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(p)
                        .with_records(Some(batch(&refs)))])]);
            let resp = c.call(&req, 9).await;
            assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
            sent[p as usize].extend(values);
        }
    }
    for v in versions::<FetchRequest>().filter(|v| *v < 13) {
        for from in [0i64, 35] {
            let parts = (0..3)
                .map(|p| {
                    FetchPartition::default()
                        .with_partition(p)
                        .with_fetch_offset(if p == 2 { 0 } else { from })
                        .with_partition_max_bytes(1 << 20)
                })
                .collect();
            let req = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(0)
                .with_min_bytes(1)
                .with_max_bytes(8 << 20)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(name("big"))
                    .with_partitions(parts)]);
            let resp = c.call(&req, v).await;
            for p in &resp.responses[0].partitions {
                assert_eq!(
                    p.error_code, 0,
                    "Fetch v{v} partition {}",
                    p.partition_index
                );
                let mut records = p.records.clone().expect("records");
                let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut records)
                    .expect("CRC-valid batches");
                let got: Vec<(i64, Vec<u8>)> = sets
                    .iter()
                    .flat_map(|s| s.records.iter())
                    .map(|r| (r.offset, r.value.clone().expect("value").to_vec()))
                    .filter(|(o, _)| p.partition_index == 2 || *o >= from)
                    .collect();
                let start = if p.partition_index == 2 { 0 } else { from };
                let want: Vec<(i64, Vec<u8>)> = sent[p.partition_index as usize]
                    .iter()
                    .enumerate()
                    .skip(start as usize)
                    .map(|(i, v)| (i as i64, v.clone()))
                    .collect();
                assert_eq!(
                    got.len(),
                    want.len(),
                    "Fetch v{v} partition {}",
                    p.partition_index
                );
                assert!(
                    got == want,
                    "Fetch v{v} partition {}: content differs",
                    p.partition_index
                );
            }
        }
    }
    b.stop().await;
}

/// KIP-74 size rules, as Kafka's Fetch v3+: the first partition with data gets its first
/// batch whole even past the limits; a later partition whose first batch exceeds what is
/// left gets no records (not a useless partial batch); and a response ends at the last
/// whole batch that fits.
#[tokio::test]
async fn fetch_size_limits_send_whole_batches_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = broker(dir.path()).await;
    let mut c = Conn::connect(&b).await;
    let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name("sized"))
        .with_num_partitions(2)
        .with_replication_factor(1)]);
    assert_eq!(c.call(&create, 7).await.topics[0].error_code, 0);
    // Each partition: 3 batches of 4 records of 5,000 bytes (~20 KB each).
    let mut batch_len = 0usize;
    for p in 0..2 {
        for bi in 0..3 {
            let values: Vec<Vec<u8>> = (0..4)
                .map(|i| vec![b'a' + (bi * 4 + i) as u8; 5000])
                .collect();
            let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
            let records = batch(&refs);
            batch_len = records.len();
            let req = ProduceRequest::default()
                .with_acks(1)
                .with_timeout_ms(5000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(name("sized"))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(p)
                        .with_records(Some(records))])]);
            let resp = c.call(&req, 9).await;
            assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
        }
    }
    let fetch = |partition_max: i32, max: i32, order: [i32; 2]| {
        let parts = order
            .iter()
            .map(|p| {
                FetchPartition::default()
                    .with_partition(*p)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(partition_max)
            })
            .collect();
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(max)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name("sized"))
                .with_partitions(parts)])
    };
    let lens = |resp: &kafka_protocol::messages::FetchResponse| -> Vec<(i32, usize)> {
        resp.responses[0]
            .partitions
            .iter()
            .map(|p| {
                let bytes = p.records.clone().unwrap_or_default();
                (p.partition_index, bytes.len())
            })
            .collect()
    };
    for v in versions::<FetchRequest>().filter(|v| *v < 13) {
        // A partition limit below one batch: the first partition still gets one whole
        // batch, the second nothing.
        let resp = c.call(&fetch(1000, 50 << 20, [0, 1]), v).await;
        assert_eq!(lens(&resp), vec![(0, batch_len), (1, 0)], "Fetch v{v}");
        let resp = c.call(&fetch(1000, 50 << 20, [1, 0]), v).await;
        assert_eq!(lens(&resp), vec![(1, batch_len), (0, 0)], "Fetch v{v}");
        // Room for 1.5 batches per partition: one whole batch each, no partial tail.
        let resp = c
            .call(&fetch((batch_len * 3 / 2) as i32, 50 << 20, [0, 1]), v)
            .await;
        assert_eq!(
            lens(&resp),
            vec![(0, batch_len), (1, batch_len)],
            "Fetch v{v}"
        );
        // The response limit leaves the second partition half a batch: nothing.
        let resp = c
            .call(&fetch(1 << 20, (batch_len * 5 / 2) as i32, [0, 1]), v)
            .await;
        assert_eq!(lens(&resp), vec![(0, 2 * batch_len), (1, 0)], "Fetch v{v}");
        for p in &resp.responses[0].partitions {
            let mut records = p.records.clone().unwrap_or_default();
            kafka_protocol::records::RecordBatchDecoder::decode_all(&mut records)
                .expect("whole CRC-valid batches");
        }
    }
    b.stop().await;
}

/// Small record ranges are read into memory only while the broker-wide fetch
/// memory budget has room; with the budget used up they go out from the file
/// like large ones, byte for byte, and every response gives its share back.
#[tokio::test]
async fn fetch_memory_budget_bounds_in_memory_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = broker(dir.path()).await;
    let mut c = Conn::connect(&b).await;
    let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name("small"))
        .with_num_partitions(4)
        .with_replication_factor(1)]);
    assert_eq!(c.call(&create, 7).await.topics[0].error_code, 0);
    let value = |p: i32| format!("partition {p} value").into_bytes();
    for p in 0..4 {
        let first = value(p);
        let req = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name("small"))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(p)
                    .with_records(Some(batch(&[&first[..], b"second"])))])]);
        let resp = c.call(&req, 9).await;
        assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
    }
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name("small"))
            .with_partitions(
                (0..4)
                    .map(|p| {
                        FetchPartition::default()
                            .with_partition(p)
                            .with_partition_max_bytes(1 << 20)
                    })
                    .collect(),
            )]);
    let budget = felice_broker::limits::FETCH_MEMORY_BUDGET_BYTES;
    let memory = b.broker.fetch_memory().clone();
    for exhausted in [false, true, false] {
        let held = exhausted.then(|| {
            memory
                .clone()
                .try_acquire_many_owned(budget as u32)
                .expect("whole budget free between fetches")
        });
        for v in versions::<FetchRequest>().filter(|v| *v < 13) {
            let resp = c.call(&fetch, v).await;
            for p in &resp.responses[0].partitions {
                assert_eq!(p.error_code, 0);
                let mut records = p.records.clone().expect("records");
                let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut records)
                    .expect("CRC-valid batch");
                let values: Vec<Vec<u8>> = sets
                    .iter()
                    .flat_map(|s| s.records.iter())
                    .map(|r| r.value.clone().expect("value").to_vec())
                    .collect();
                assert_eq!(
                    values,
                    vec![value(p.partition_index), b"second".to_vec()],
                    "Fetch v{v} exhausted={exhausted}"
                );
            }
            // The connection gives the response's share back once it is written.
            let want = if exhausted { 0 } else { budget };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while memory.available_permits() != want && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            assert_eq!(memory.available_permits(), want, "Fetch v{v}");
        }
        drop(held);
    }
    b.stop().await;
}
