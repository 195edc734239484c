//! DeleteTopics (key 20): by name (v0-v5) or by name or topic id (v6+).
//! Removal is one metadata record per topic; applying it, the replica manager
//! closes and deletes the partition directories (renamed to `*-delete` first,
//! so a crash mid-way leaves nothing that looks alive) and the group
//! coordinator drops the topics' committed offsets. The answer waits for that
//! (bounded by the request's timeout).

use crate::broker::Broker;
use crate::handlers::{str_bytes, topic_name};
use crate::limits::MAX_METADATA_APPLY_WAIT;
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

pub async fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    // (name, id) as the client named them; v6+ uses `topics`, older `topic_names`.
    let wanted: Vec<(Option<String>, uuid::Uuid)> = if header.request_api_version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n: &TopicName| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    if !broker.config.delete_topic_enable {
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
    let timeout_ms = req.timeout_ms;
    let mut results = Vec::new();
    let commit = broker
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
        Ok(image) => {
            // Answer once this broker deleted the logs and the topics'
            // committed offsets; with no timeout, at the commit, as Kafka.
            let wait = Duration::from_millis(timeout_ms.max(0) as u64).min(MAX_METADATA_APPLY_WAIT);
            let results = match broker.applied(image.offset, wait).await {
                Ok(_) => results,
                Err(_) if timeout_ms <= 0 => results,
                Err(e) => with_error(results, ResponseError::RequestTimedOut, &e.to_string()),
            };
            DeleteTopicsResponse::default().with_responses(results)
        }
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
