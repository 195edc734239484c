//! CreateTopics (key 19): validates every requested topic (name, partitions,
//! replication factor, assignments, configs) against the current image and
//! commits all the valid ones in one metadata commit. `validate_only` runs the
//! same checks and commits nothing. From v5 the response carries the created
//! topic's partition count, replication factor and every config with its
//! source.

use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::controller::ControllerContext;
use crate::controller::{self, NewTopic, TopicError};
use crate::handlers::str_bytes;
use crate::topic_config;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, RequestHeader};
use kafka_protocol::protocol::{Message, VersionRange};
use kafka_protocol::ResponseError;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub const VERSIONS: VersionRange = CreateTopicsRequest::VERSIONS;

/// A topic that was (or, with validate_only, would be) created.
struct Created {
    topic_id: uuid::Uuid,
    num_partitions: i32,
    replication_factor: i16,
    overrides: BTreeMap<String, String>,
}

/// The broker's side: the request goes to the active controller (in
/// process when this node leads, forwarded otherwise); the answer waits
/// until this broker serves the created topics, bounded by the request's
/// timeout (see [`crate::handlers::delete_topics::apply_wait`]).
pub async fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let (validate_only, timeout_ms) = (req.validate_only, req.timeout_ms);
    let names: Vec<String> = req.topics.iter().map(|t| t.name.0.to_string()).collect();
    let mut resp = match broker
        .controller
        .call(req, header.request_api_version)
        .await
    {
        Ok(resp) => resp,
        Err(e) => {
            let topics = names
                .iter()
                .map(|n| {
                    CreatableTopicResult::default()
                        .with_name(crate::handlers::topic_name(n))
                        .with_error_code(ResponseError::RequestTimedOut.code())
                        .with_error_message(Some(str_bytes(&e.to_string())))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                })
                .collect();
            return CreateTopicsResponse::default().with_topics(topics);
        }
    };
    if validate_only {
        return resp;
    }
    // By name: a forwarded answer below v7 carries no topic id.
    let created: Vec<(String, uuid::Uuid)> = resp
        .topics
        .iter()
        .filter(|t| t.error_code == 0)
        .map(|t| (t.name.0.to_string(), t.topic_id))
        .collect();
    if created.is_empty() {
        return resp;
    }
    let wait = crate::handlers::delete_topics::apply_wait(timeout_ms);
    let served = broker
        .applied_until(
            |image| {
                created.iter().all(|(name, id)| {
                    image
                        .topic(name)
                        .is_some_and(|t| id.is_nil() || t.topic_id == *id)
                })
            },
            wait,
        )
        .await;
    if let (Err(e), true) = (served, timeout_ms > 0) {
        for t in resp.topics.iter_mut().filter(|t| t.error_code == 0) {
            t.error_code = ResponseError::RequestTimedOut.code();
            t.error_message = Some(str_bytes(&e.to_string()));
        }
    }
    resp
}

/// The active controller's side: validates every requested topic and
/// commits the valid ones in one metadata commit.
pub async fn on_controller(
    ctx: &ControllerContext,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in &req.topics {
        *counts.entry(t.name.0.to_string()).or_default() += 1;
    }
    let names: Vec<String> = req.topics.iter().map(|t| t.name.0.to_string()).collect();
    let mut results: Vec<Result<NewTopic, TopicError>> = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        if counts.get(&name).copied().unwrap_or(0) > 1 {
            results.push(Err(TopicError::new(
                ResponseError::InvalidRequest,
                format!(
                    "Create topics request from client contains a duplicate topic with name {name}"
                ),
            )));
            continue;
        }
        results.push(Ok(NewTopic {
            name,
            num_partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            assignments: t
                .assignments
                .iter()
                .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                .collect(),
            configs: t
                .configs
                .iter()
                .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                .collect(),
        }));
    }
    let validate_only = req.validate_only;
    // Per-topic outcome: the topic id when created (or valid).
    let mut outcomes: Vec<Result<Created, TopicError>> = Vec::new();
    let commit = ctx
        .quorum
        .commit(|image| {
            let mut scratch = image.clone();
            let mut budget = controller::PartitionBudget::per_request();
            let mut records = Vec::new();
            for r in &results {
                let t = match r {
                    Ok(t) => t,
                    Err(e) => {
                        outcomes.push(Err(e.clone()));
                        continue;
                    }
                };
                match controller::create_topic_records(&scratch, &ctx.config, t, &mut budget) {
                    Ok((id, recs)) => {
                        for rec in &recs {
                            scratch.apply_mut(rec);
                        }
                        let created = scratch.topic_by_id(&id);
                        let np = created.map(|c| c.partitions.len() as i32).unwrap_or(-1);
                        let rf = created
                            .and_then(|c| c.partitions.first())
                            .map(|p| p.replicas.len() as i16)
                            .unwrap_or(-1);
                        let configs = created.map(|c| c.configs.clone()).unwrap_or_default();
                        outcomes.push(Ok(Created {
                            topic_id: id,
                            num_partitions: np,
                            replication_factor: rf,
                            overrides: configs,
                        }));
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
    if outcomes.len() != names.len() {
        // The commit failed before validation ran: every topic gets its
        // own request error, or the commit's.
        let (code, message) = failure
            .clone()
            .unwrap_or((ResponseError::UnknownServerError, "no outcome".into()));
        outcomes = results
            .iter()
            .map(|r| match r {
                Err(e) => Err(e.clone()),
                Ok(_) => Err(TopicError::new(code, message.clone())),
            })
            .collect();
    }
    let topics = names
        .into_iter()
        .zip(outcomes)
        .map(|(name, outcome)| result(&ctx.config, name, outcome, failure.as_ref()))
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

fn result(
    config: &BrokerConfig,
    name: String,
    outcome: Result<Created, TopicError>,
    failure: Option<&(ResponseError, String)>,
) -> CreatableTopicResult {
    let base = CreatableTopicResult::default().with_name(crate::handlers::topic_name(&name));
    match (outcome, failure) {
        (Err(e), _) => base
            .with_error_code(e.code.code())
            .with_error_message(Some(str_bytes(&e.message)))
            .with_num_partitions(-1)
            .with_replication_factor(-1),
        (Ok(_), Some((code, msg))) => base
            .with_error_code(code.code())
            .with_error_message(Some(str_bytes(msg)))
            .with_num_partitions(-1)
            .with_replication_factor(-1),
        (Ok(created), None) => {
            let configs = topic_config::describe(config, &created.overrides)
                .into_iter()
                .map(|c| {
                    CreatableTopicConfigs::default()
                        .with_name(str_bytes(c.name))
                        .with_value(Some(str_bytes(&c.value)))
                        .with_read_only(false)
                        .with_config_source(c.source)
                        .with_is_sensitive(false)
                })
                .collect();
            base.with_topic_id(created.topic_id)
                .with_error_code(0)
                .with_num_partitions(created.num_partitions)
                .with_replication_factor(created.replication_factor)
                .with_configs(Some(configs))
        }
    }
}
