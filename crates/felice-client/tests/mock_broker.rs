//! The client against a scripted in-process broker (built on `kafka-protocol`'s
//! broker-side codecs): ApiVersions fallback via UNSUPPORTED_VERSION, version
//! negotiation, pipelined produce with in-order responses, acks=0 without a response,
//! and fetch of what was produced.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use felice_client::kafka_protocol::messages::api_versions_response::ApiVersion;
use felice_client::kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, PartitionData,
};
use felice_client::kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, TopicProduceResponse,
};
use felice_client::kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, FetchResponse, ProduceRequest, ProduceResponse, ResponseHeader,
    TopicName,
};
use felice_client::kafka_protocol::protocol::{
    decode_request_header_from_buffer, Decodable, Encodable, StrBytes,
};
use felice_client::{
    summarize_batches, BatchTemplate, Compression, Connection, FetchPartition, ResponseError,
    SendStamp, TopicRef,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the mock advertises: (api, min, max). Produce tops out at 9 (topic by name).
const ADVERTISED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
];

fn encode<T: Encodable>(api: ApiKey, version: i16, correlation_id: i32, body: &T) -> Bytes {
    let header_version = api.response_header_version(version);
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, header_version)
        .expect("encode header");
    body.encode(&mut buf, version).expect("encode body");
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}

fn api_versions(error: Option<ResponseError>) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error.map_or(0, |e| e.code()))
        .with_api_keys(
            ADVERTISED
                .iter()
                .map(|(k, min, max)| {
                    ApiVersion::default()
                        .with_api_key(*k as i16)
                        .with_min_version(*min)
                        .with_max_version(*max)
                })
                .collect(),
        )
}

async fn serve(mut socket: TcpStream) {
    let mut log: Vec<Bytes> = Vec::new(); // one batch per entry, offsets 0..
    let mut next_offset = 0i64;
    loop {
        let mut len = [0u8; 4];
        if socket.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
        socket.read_exact(&mut frame).await.expect("frame");
        let mut frame = Bytes::from(frame);
        let peek = frame.clone();
        let header = decode_request_header_from_buffer(&mut frame).expect("header");
        let api = ApiKey::try_from(header.request_api_key).expect("api key");
        let version = header.request_api_version;
        let id = header.correlation_id;
        let out = match api {
            ApiKey::ApiVersions if version > 3 => {
                // KIP-511: unknown version -> v0 body with our ranges.
                encode(
                    api,
                    0,
                    id,
                    &api_versions(Some(ResponseError::UnsupportedVersion)),
                )
            }
            ApiKey::ApiVersions => encode(api, version, id, &api_versions(None)),
            ApiKey::Produce => {
                let Ok(req) = ProduceRequest::decode(&mut frame, version) else {
                    panic!("bad produce request {peek:?}");
                };
                let mut responses = Vec::new();
                for t in &req.topic_data {
                    let mut parts = Vec::new();
                    for p in &t.partition_data {
                        let mut records = p.records.clone().unwrap_or_default();
                        let base = next_offset;
                        // Rewrite baseOffset as a broker does; count records from the header.
                        let count = records.slice(57..61).get_i32() as i64;
                        let mut stored = BytesMut::from(&records[..]);
                        stored[..8].copy_from_slice(&base.to_be_bytes());
                        records.advance(records.len());
                        log.push(stored.freeze());
                        next_offset += count;
                        parts.push(
                            PartitionProduceResponse::default()
                                .with_index(p.index)
                                .with_base_offset(base),
                        );
                    }
                    responses.push(
                        TopicProduceResponse::default()
                            .with_name(t.name.clone())
                            .with_partition_responses(parts),
                    );
                }
                if req.acks == 0 {
                    continue;
                }
                encode(
                    api,
                    version,
                    id,
                    &ProduceResponse::default().with_responses(responses),
                )
            }
            ApiKey::Fetch => {
                let mut all = BytesMut::new();
                for batch in &log {
                    all.extend_from_slice(batch);
                }
                let response =
                    FetchResponse::default().with_responses(vec![FetchableTopicResponse::default(
                    )
                    .with_topic(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![PartitionData::default()
                        .with_partition_index(0)
                        .with_high_watermark(next_offset)
                        .with_records(Some(all.freeze()))])]);
                encode(api, version, id, &response)
            }
            other => panic!("mock does not handle {other:?}"),
        };
        socket.write_all(&out).await.expect("write");
    }
}

#[tokio::test]
async fn negotiates_pipelines_and_fetches() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(socket));
        }
    });

    let conn = Connection::connect(&addr).await?;
    assert_eq!(conn.version(ApiKey::ApiVersions)?, 3);
    assert_eq!(conn.version(ApiKey::Produce)?, 9);
    assert_eq!(conn.version(ApiKey::Fetch)?, 12);
    assert!(conn.version(ApiKey::Metadata).is_err());

    let topic = TopicRef {
        name: StrBytes::from_static_str("t"),
        id: Default::default(),
    };
    let values = (0..10).map(|_| Bytes::from(vec![b'x'; 32])).collect();
    let template = BatchTemplate::new(values, Compression::Lz4)?;

    // 20 requests in flight at once; answers come back in order.
    let mut pending = Vec::new();
    for i in 0..20u64 {
        let batch = template.render(
            SendStamp {
                run_id: 7,
                nanos: i,
            },
            1,
        )?;
        pending.push(conn.send_produce(&topic, 0, batch, 1, 1000).await?);
    }
    // acks=0 gets no answer and must not disturb the matching of later ones.
    let batch = template.render(
        SendStamp {
            run_id: 7,
            nanos: 20,
        },
        1,
    )?;
    assert!(conn.produce(&topic, 0, batch, 0, 1000).await?.is_none());
    let batch = template.render(
        SendStamp {
            run_id: 7,
            nanos: 21,
        },
        1,
    )?;
    assert_eq!(conn.produce(&topic, 0, batch, -1, 1000).await?, Some(210));
    for (i, p) in pending.into_iter().enumerate() {
        let p = p.ok_or_else(|| anyhow::anyhow!("acks=1 must expect a response"))?;
        assert_eq!(p.recv().await?, i as i64 * 10);
    }

    let fetched = conn
        .fetch(
            &topic,
            &[FetchPartition {
                partition: 0,
                offset: 15,
                max_bytes: 1 << 20,
            }],
            0,
            1,
            1 << 20,
        )
        .await?;
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].high_watermark, 220);
    let batches = summarize_batches(fetched[0].records.clone(), 15)?;
    assert_eq!(batches.len(), 22);
    assert_eq!(batches.iter().map(|b| b.records).sum::<u64>(), 220 - 15);
    assert_eq!(
        batches[1].records, 5,
        "records before the fetch offset are skipped"
    );
    for (i, b) in batches.iter().enumerate() {
        assert_eq!(b.base_offset, i as i64 * 10);
        assert_eq!(
            b.stamp,
            Some(SendStamp {
                run_id: 7,
                nanos: i as u64
            })
        );
    }
    Ok(())
}
