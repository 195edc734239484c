//! DeleteTopics (key 20): by name (v0-v5) or by name or topic id (v6+).
//! Removal is one metadata record per topic; the replica manager then closes
//! and deletes the partition directories (renamed to `*-delete` first, so a
//! crash mid-way leaves nothing that looks alive).

use crate::broker::Broker;
use crate::handlers::{str_bytes, topic_name};
use felice_metadata::{CommitError, MetadataRecord};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    DeleteTopicsRequest, DeleteTopicsResponse, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Message, VersionRange};
use kafka_protocol::ResponseError;
use std::sync::Arc;

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
    let b = broker.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut results = Vec::new();
        let commit = b.commit_and_apply(|image| {
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
        });
        if commit.is_ok() {
            // As Kafka: committed offsets of deleted topics go with them.
            let deleted: Vec<String> = results
                .iter()
                .filter(|r| r.error_code == 0)
                .filter_map(|r| r.name.as_ref().map(|n| n.0.to_string()))
                .collect();
            b.groups.remove_offsets_of_topics(&b, &deleted);
        }
        (commit, results)
    })
    .await;
    match outcome {
        Ok((Ok(_), results)) => DeleteTopicsResponse::default().with_responses(results),
        Ok((Err(CommitError::Log(e)), results)) => DeleteTopicsResponse::default().with_responses(
            results
                .into_iter()
                .map(|r| {
                    if r.error_code == 0 {
                        r.with_error_code(ResponseError::KafkaStorageError.code())
                            .with_error_message(Some(str_bytes(&e.to_string())))
                    } else {
                        r
                    }
                })
                .collect(),
        ),
        Ok((Err(CommitError::Rejected(never)), _)) => match never {},
        Err(e) => {
            tracing::error!(error = %e, "delete topics task failed");
            DeleteTopicsResponse::default()
        }
    }
}
