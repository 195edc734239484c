//! DeleteTopics (key 20): by name (v0-v5) or by name or topic id (v6+).
//! Removal is one metadata record per topic; applying it, the replica manager
//! closes and deletes the partition directories (renamed to `*-delete` first,
//! so a crash mid-way leaves nothing that looks alive) and the group
//! coordinator drops the topics' committed offsets. The answer waits for that
//! (bounded by the request's timeout).

use crate::broker::Broker;
use crate::controller::ControllerContext;
use crate::handlers::{str_bytes, topic_name};
use crate::limits::{LOCAL_APPLY_GRACE, MAX_METADATA_APPLY_WAIT};
use felice_metadata::{CommitError, MetadataRecord};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    DeleteTopicsRequest, DeleteTopicsResponse, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Message, VersionRange};
use kafka_protocol::ResponseError;
use std::sync::Arc;
use std::time::Duration;

pub const VERSIONS: VersionRange = DeleteTopicsRequest::VERSIONS;

/// The broker's side: the request goes to the active controller (in
/// process when this node leads, forwarded otherwise); the answer waits
/// until this broker deleted the topics' logs and committed offsets,
/// bounded by the request's timeout (REQUEST_TIMED_OUT past it). With no
/// timeout it still waits a little ([`apply_wait`]), so that the client's
/// next request to this broker sees its change, but never fails for it.
pub async fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let timeout_ms = req.timeout_ms;
    let wanted = wanted(&req);
    let resp = match broker
        .controller
        .call(req, header.request_api_version)
        .await
    {
        Ok(resp) => resp,
        Err(e) => {
            return DeleteTopicsResponse::default().with_responses(not_run(
                wanted,
                ResponseError::RequestTimedOut,
                &e.to_string(),
            ))
        }
    };
    // By id when the answer has one (v6+), else by name.
    let deleted: Vec<(Option<String>, uuid::Uuid)> = resp
        .responses
        .iter()
        .filter(|r| r.error_code == 0)
        .map(|r| (r.name.as_ref().map(|n| n.0.to_string()), r.topic_id))
        .collect();
    let wait = apply_wait(timeout_ms);
    match broker
        .applied_until(
            |image| {
                deleted.iter().all(|(name, id)| match (id.is_nil(), name) {
                    (false, _) => image.topic_by_id(id).is_none(),
                    (true, Some(name)) => image.topic(name).is_none(),
                    (true, None) => true,
                })
            },
            wait,
        )
        .await
    {
        Ok(_) => resp,
        Err(_) if timeout_ms <= 0 => resp,
        Err(e) => DeleteTopicsResponse::default().with_responses(with_error(
            resp.responses,
            ResponseError::RequestTimedOut,
            &e.to_string(),
        )),
    }
}

/// (name, id) as the client named them: v6+ fills `topics`, older versions
/// `topic_names` (a request keeps only its version's field when encoded).
fn wanted(req: &DeleteTopicsRequest) -> Vec<(Option<String>, uuid::Uuid)> {
    if !req.topics.is_empty() {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n: &TopicName| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    }
}

/// The active controller's side: one RemoveTopic record per topic, in one
/// commit.
pub async fn on_controller(
    ctx: &ControllerContext,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let wanted = wanted(&req);
    if !ctx.config.delete_topic_enable {
        let responses = wanted
            .into_iter()
            .map(|(name, id)| {
                DeletableTopicResult::default()
                    .with_name(name.as_deref().map(topic_name))
                    .with_topic_id(id)
                    .with_error_code(ResponseError::TopicDeletionDisabled.code())
            })
            .collect();
        return DeleteTopicsResponse::default().with_responses(responses);
    }
    let mut results = Vec::new();
    let commit = ctx
        .quorum
        .commit(|image| {
            let mut records = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for (name, id) in &wanted {
                let topic = match name {
                    Some(n) => image.topic(n),
                    None => image.topic_by_id(id),
                };
                let result = DeletableTopicResult::default()
                    .with_name(name.as_deref().map(topic_name))
                    .with_topic_id(*id);
                let result = match topic {
                    None if name.is_none() => {
                        result.with_error_code(ResponseError::UnknownTopicId.code())
                    }
                    None => result.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                    Some(t) => {
                        if seen.insert(t.topic_id) {
                            records.push(MetadataRecord::RemoveTopic {
                                topic_id: t.topic_id,
                            });
                        }
                        result
                            .with_name(Some(topic_name(&t.name)))
                            .with_topic_id(t.topic_id)
                            .with_error_code(0)
                    }
                };
                results.push(result);
            }
            Ok::<_, std::convert::Infallible>(records)
        })
        .await;
    match commit {
        Ok(_) => DeleteTopicsResponse::default().with_responses(results),
        Err(CommitError::NotController(_)) => {
            let message = "this broker is not the active controller";
            DeleteTopicsResponse::default().with_responses(not_run(
                wanted,
                ResponseError::NotController,
                message,
            ))
        }
        Err(CommitError::Failed(e)) => DeleteTopicsResponse::default().with_responses(not_run(
            wanted,
            ResponseError::KafkaStorageError,
            &e,
        )),
        Err(CommitError::Rejected(never)) => match never {},
    }
}

/// Every topic of a request whose commit failed before it ran gets `code`.
fn not_run(
    wanted: Vec<(Option<String>, uuid::Uuid)>,
    code: ResponseError,
    message: &str,
) -> Vec<DeletableTopicResult> {
    wanted
        .into_iter()
        .map(|(name, id)| {
            DeletableTopicResult::default()
                .with_name(name.as_deref().map(topic_name))
                .with_topic_id(id)
                .with_error_code(code.code())
                .with_error_message(Some(str_bytes(message)))
        })
        .collect()
}

/// Gives every result that succeeded so far `code`.
fn with_error(
    results: Vec<DeletableTopicResult>,
    code: ResponseError,
    message: &str,
) -> Vec<DeletableTopicResult> {
    results
        .into_iter()
        .map(|r| {
            if r.error_code == 0 {
                r.with_error_code(code.code())
                    .with_error_message(Some(str_bytes(message)))
            } else {
                r
            }
        })
        .collect()
}

/// How long an admin request waits for this broker to apply its change:
/// its timeout, capped; with none, [`LOCAL_APPLY_GRACE`].
pub(crate) fn apply_wait(timeout_ms: i32) -> Duration {
    if timeout_ms <= 0 {
        LOCAL_APPLY_GRACE
    } else {
        Duration::from_millis(timeout_ms as u64).min(MAX_METADATA_APPLY_WAIT)
    }
}
