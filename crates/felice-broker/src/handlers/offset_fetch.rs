//! OffsetFetch (key 9): committed offsets of a group (v8+: of several
//! groups). Null topics (v2+) = every committed partition. A group or
//! partition without a commit answers offset -1 with no error, as Kafka does.
//! No transactions yet, so `require_stable` never finds pending offsets.

use crate::broker::Broker;
use crate::handlers::{groups, str_bytes, topic_name};
use felice_coord::records::OffsetValue;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, RequestHeader};
use kafka_protocol::protocol::{Message, VersionRange};
use std::sync::Arc;

pub const VERSIONS: VersionRange = OffsetFetchRequest::VERSIONS;

type Rows = crate::coordinator::FetchedOffsets;

pub async fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    req: OffsetFetchRequest,
) -> OffsetFetchResponse {
    // On a blocking thread: a group's lock may be held across a log append.
    let version = header.request_api_version;
    // Only if the blocking task panicked: an error, never an empty success
    // (v8+ has no top-level code, so that encoding fails and the connection
    // closes, which clients treat as a retriable network error).
    let fallback = OffsetFetchResponse::default()
        .with_error_code(kafka_protocol::ResponseError::CoordinatorNotAvailable.code());
    crate::handlers::groups::blocking(broker, fallback, move |b| respond(b, version, req)).await
}

fn respond(broker: &Broker, version: i16, req: OffsetFetchRequest) -> OffsetFetchResponse {
    if version >= 8 {
        let groups_out = req
            .groups
            .iter()
            .map(|g| {
                let topics: Option<Vec<(String, Vec<i32>)>> = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let r = broker
                    .groups
                    .fetch_offsets(g.group_id.0.as_str(), topics.as_deref());
                let mut out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                match r {
                    Ok(rows) => out = out.with_topics(rows_v8(rows)),
                    Err(e) => out = out.with_error_code(groups::code(e)),
                }
                out
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups_out);
    }
    let topics: Option<Vec<(String, Vec<i32>)>> = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let GroupId(group_id) = req.group_id;
    match broker
        .groups
        .fetch_offsets(group_id.as_str(), topics.as_deref())
    {
        Ok(rows) => OffsetFetchResponse::default().with_topics(rows_v0(rows, version)),
        Err(e) if version >= 2 => OffsetFetchResponse::default().with_error_code(groups::code(e)),
        Err(e) => {
            // v1 has no top-level error: every partition carries it.
            let rows = topics.unwrap_or_default();
            OffsetFetchResponse::default().with_topics(
                rows.into_iter()
                    .map(|(t, ps)| {
                        OffsetFetchResponseTopic::default()
                            .with_name(topic_name(&t))
                            .with_partitions(
                                ps.into_iter()
                                    .map(|p| {
                                        OffsetFetchResponsePartition::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(-1)
                                            .with_metadata(Some(str_bytes("")))
                                            .with_error_code(groups::code(e))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
        }
    }
}

fn rows_v0(rows: Rows, version: i16) -> Vec<OffsetFetchResponseTopic> {
    rows.into_iter()
        .map(|(t, ps)| {
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(&t))
                .with_partitions(
                    ps.into_iter()
                        .map(|(p, v)| {
                            let (offset, epoch, meta) = unpack(v);
                            let mut r = OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_metadata(Some(str_bytes(&meta)));
                            if version >= 5 {
                                r = r.with_committed_leader_epoch(epoch);
                            }
                            r
                        })
                        .collect(),
                )
        })
        .collect()
}

fn rows_v8(rows: Rows) -> Vec<OffsetFetchResponseTopics> {
    rows.into_iter()
        .map(|(t, ps)| {
            OffsetFetchResponseTopics::default()
                .with_name(topic_name(&t))
                .with_partitions(
                    ps.into_iter()
                        .map(|(p, v)| {
                            let (offset, epoch, meta) = unpack(v);
                            OffsetFetchResponsePartitions::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(epoch)
                                .with_metadata(Some(str_bytes(&meta)))
                        })
                        .collect(),
                )
        })
        .collect()
}

fn unpack(v: Option<OffsetValue>) -> (i64, i32, String) {
    match v {
        Some(v) => (v.offset, v.leader_epoch, v.metadata),
        None => (-1, -1, String::new()),
    }
}
