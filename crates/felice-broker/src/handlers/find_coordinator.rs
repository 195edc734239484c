//! FindCoordinator (key 10): the coordinator of a group is the leader of its
//! `__consumer_offsets` partition, created here on first use as Kafka does.
//! v0–v3 ask for one key, v4+ for a batch. Only group keys (type 0) are
//! served: transactions and share groups are not supported, and Kafka
//! answers an unsupported key type with INVALID_REQUEST.

use crate::broker::Broker;
use crate::coordinator::OFFSETS_TOPIC;
use crate::handlers::{groups, str_bytes};
use felice_coord::records::partition_for;
use felice_coord::GroupError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, RequestHeader,
};
use kafka_protocol::protocol::{Message, StrBytes, VersionRange};
use kafka_protocol::ResponseError;
use std::sync::Arc;

pub const VERSIONS: VersionRange = FindCoordinatorRequest::VERSIONS;

const KEY_TYPE_GROUP: i8 = 0;

pub async fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let version = header.request_api_version;
    let keys: Vec<StrBytes> = if version >= 4 {
        req.coordinator_keys
    } else {
        vec![req.key]
    };
    let key_type = req.key_type;
    let found = if key_type == KEY_TYPE_GROUP {
        groups::blocking(broker, Err(GroupError::CoordinatorNotAvailable), |b| {
            b.groups.ensure_offsets_topic(b).map(|_| ())
        })
        .await
    } else {
        Ok(())
    };
    let image = broker.image();
    let answers: Vec<Coordinator> = keys
        .into_iter()
        .map(|key| {
            let mut c = Coordinator::default().with_key(key.clone());
            let error = if key_type != KEY_TYPE_GROUP {
                Some((
                    ResponseError::InvalidRequest.code(),
                    format!("key type {key_type} is not supported (only consumer groups, 0)"),
                ))
            } else if let Err(e) = found {
                Some((groups::code(e), format!("{OFFSETS_TOPIC} is not available")))
            } else {
                let leader = image.topic(OFFSETS_TOPIC).and_then(|t| {
                    let p = partition_for(key.as_str(), t.partitions.len() as i32);
                    t.partitions.get(p as usize).map(|p| p.leader)
                });
                match leader.and_then(|l| image.brokers.get(&l)) {
                    Some(b) => {
                        c = c
                            .with_node_id(BrokerId(b.node_id))
                            .with_host(str_bytes(&b.host))
                            .with_port(b.port);
                        None
                    }
                    None => Some((
                        ResponseError::CoordinatorNotAvailable.code(),
                        "the coordinator has no leader".to_string(),
                    )),
                }
            };
            match error {
                Some((code, message)) => c
                    .with_node_id(BrokerId(-1))
                    .with_host(StrBytes::default())
                    .with_port(-1)
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(&message))),
                None => c,
            }
        })
        .collect();
    if version >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(answers);
    }
    let c = answers.into_iter().next().unwrap_or_default();
    let mut resp = FindCoordinatorResponse::default()
        .with_error_code(c.error_code)
        .with_node_id(c.node_id)
        .with_host(c.host)
        .with_port(c.port);
    if version >= 1 {
        resp = resp.with_error_message(c.error_message);
    }
    resp
}
