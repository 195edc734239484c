//! CreatePartitions (key 37): grows topics to a new partition count, with
//! the new partitions placed as new topics' are, or as the request assigns
//! them. Like CreateTopics, the request goes to the active controller,
//! which validates every topic against its image and commits the valid
//! ones in one metadata commit (nothing with `validate_only`); the broker's
//! answer waits until it serves the new partitions, bounded by the request's
//! timeout.

use crate::broker::Broker;
use crate::controller::{self, ControllerContext, TopicError};
use crate::handlers::delete_topics::apply_wait;
use crate::handlers::str_bytes;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse, RequestHeader};
use kafka_protocol::protocol::{Message, VersionRange};
use kafka_protocol::ResponseError;
use std::collections::HashMap;
use std::sync::Arc;

pub const VERSIONS: VersionRange = CreatePartitionsRequest::VERSIONS;

/// The broker's side: forwarded to the active controller, then a wait for
/// this broker to apply the grown topics.
pub async fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let timeout_ms = req.timeout_ms;
    let validate_only = req.validate_only;
    let wanted: Vec<(String, i32)> = req
        .topics
        .iter()
        .map(|t| (t.name.0.to_string(), t.count))
        .collect();
    let mut resp = match broker
        .controller
        .call(req, header.request_api_version)
        .await
    {
        Ok(resp) => resp,
        Err(e) => {
            let results = wanted
                .iter()
                .map(|(name, _)| {
                    CreatePartitionsTopicResult::default()
                        .with_name(crate::handlers::topic_name(name))
                        .with_error_code(ResponseError::RequestTimedOut.code())
                        .with_error_message(Some(str_bytes(&e.to_string())))
                })
                .collect();
            return CreatePartitionsResponse::default().with_results(results);
        }
    };
    if validate_only {
        return resp;
    }
    let grown: Vec<(String, i32)> = resp
        .results
        .iter()
        .filter(|r| r.error_code == 0)
        .filter_map(|r| {
            wanted
                .iter()
                .find(|(n, _)| *n == r.name.0.as_str())
                .cloned()
        })
        .collect();
    let served = broker
        .applied_until(
            |image| {
                grown.iter().all(|(name, count)| {
                    image
                        .topic(name)
                        .is_none_or(|t| t.partitions.len() as i32 >= *count)
                })
            },
            apply_wait(timeout_ms),
        )
        .await;
    if let (Err(e), true) = (served, timeout_ms > 0) {
        for r in resp.results.iter_mut().filter(|r| r.error_code == 0) {
            r.error_code = ResponseError::RequestTimedOut.code();
            r.error_message = Some(str_bytes(&e.to_string()));
        }
    }
    resp
}

/// The active controller's side.
pub async fn on_controller(
    ctx: &ControllerContext,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in &req.topics {
        *counts.entry(t.name.0.to_string()).or_default() += 1;
    }
    struct Wanted {
        name: String,
        count: i32,
        assignments: Option<Vec<Vec<i32>>>,
        duplicate: bool,
    }
    let wanted: Vec<Wanted> = req
        .topics
        .iter()
        .map(|t| Wanted {
            name: t.name.0.to_string(),
            count: t.count,
            assignments: t.assignments.as_ref().map(|a| {
                a.iter()
                    .map(|p| p.broker_ids.iter().map(|b| b.0).collect())
                    .collect()
            }),
            duplicate: counts.get(t.name.0.as_str()).copied().unwrap_or(0) > 1,
        })
        .collect();
    let validate_only = req.validate_only;
    let mut outcomes: Vec<Result<(), TopicError>> = Vec::new();
    let commit = ctx
        .quorum
        .commit(|image| {
            outcomes.clear();
            let mut budget = controller::PartitionBudget::per_request();
            let mut records = Vec::new();
            for w in &wanted {
                if w.duplicate {
                    outcomes.push(Err(TopicError::new(
                        ResponseError::InvalidRequest,
                        "Duplicate topic name.",
                    )));
                    continue;
                }
                match controller::add_partitions_records(
                    image,
                    &w.name,
                    w.count,
                    w.assignments.as_deref(),
                    &mut budget,
                ) {
                    Ok(recs) => {
                        outcomes.push(Ok(()));
                        if !validate_only {
                            records.extend(recs);
                        }
                    }
                    Err(e) => outcomes.push(Err(e)),
                }
            }
            Ok::<_, std::convert::Infallible>(records)
        })
        .await;
    let failure = controller::commit_failure(&commit).map(|e| (e.code, e.message));
    // As Kafka: a name given twice is answered once.
    let mut answered = std::collections::HashSet::new();
    let results = wanted
        .iter()
        .enumerate()
        .filter(|(_, w)| answered.insert(w.name.clone()))
        .map(|(i, w)| {
            let base = CreatePartitionsTopicResult::default()
                .with_name(crate::handlers::topic_name(&w.name));
            let outcome = outcomes.get(i);
            match (outcome, &failure) {
                (Some(Err(e)), _) => base
                    .with_error_code(e.code.code())
                    .with_error_message(Some(str_bytes(&e.message))),
                (_, Some((code, message))) => base
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(message))),
                (Some(Ok(())), None) => base.with_error_code(0),
                (None, None) => base
                    .with_error_code(ResponseError::UnknownServerError.code())
                    .with_error_message(Some(str_bytes("no outcome"))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
