//! IncrementalAlterConfigs (key 44) and AlterConfigs (key 33) of topics.
//! Both go to the active controller, which turns the changes of each topic
//! into `TopicConfig` records (one commit for the request; nothing with
//! `validate_only`); brokers apply them to their partitions' settings by
//! reconciling with the image. As Kafka:
//! - IncrementalAlterConfigs: SET, DELETE (back to the default), and APPEND
//!   and SUBTRACT on list configs (`cleanup.policy`), from the topic's
//!   current value;
//! - AlterConfigs: the given configs replace all of the topic's overrides;
//! - an unknown topic is UNKNOWN_TOPIC_OR_PARTITION, an unknown key or a bad
//!   value INVALID_CONFIG, a key named twice or a resource named twice
//!   INVALID_REQUEST.
//!
//! Felice has no dynamic broker configs: a broker resource is refused
//! (INVALID_REQUEST), as is any other resource type.

use crate::broker::Broker;
use crate::controller::{ControllerContext, TopicError};
use crate::controller_channel::ControllerRequest;
use crate::handlers::delete_topics::apply_wait;
use crate::handlers::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use crate::handlers::str_bytes;
use crate::topic_config;
use felice_metadata::{MetadataImage, MetadataRecord};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    RequestHeader,
};
use kafka_protocol::protocol::{Message, VersionRange};
use kafka_protocol::ResponseError;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub const INCREMENTAL_VERSIONS: VersionRange = IncrementalAlterConfigsRequest::VERSIONS;
pub const VERSIONS: VersionRange = AlterConfigsRequest::VERSIONS;

/// One change to a topic config.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    Set(String),
    Delete,
    Append(String),
    Subtract(String),
}

/// The changes a request asks of one resource.
struct Alteration {
    resource_type: i8,
    name: String,
    /// `(key, op)` in request order.
    ops: Vec<(String, Op)>,
    /// AlterConfigs: the ops are the whole new set of overrides.
    replace: bool,
}

/// What a request asks, in one form for both APIs; `Err` is an op code or
/// null value the request cannot carry.
fn incremental(
    req: &IncrementalAlterConfigsRequest,
) -> Vec<Result<Alteration, (i8, String, TopicError)>> {
    req.resources
        .iter()
        .map(|r| {
            let mut ops = Vec::new();
            for c in &r.configs {
                let value = c.value.as_ref().map(|v| v.to_string());
                let op = match (c.config_operation, value) {
                    (0, Some(v)) => Op::Set(v),
                    (1, _) => Op::Delete,
                    (2, Some(v)) => Op::Append(v),
                    (3, Some(v)) => Op::Subtract(v),
                    (0 | 2 | 3, None) => {
                        return Err((
                            r.resource_type,
                            r.resource_name.to_string(),
                            TopicError::new(
                                ResponseError::InvalidRequest,
                                format!("Null value not supported for : {}", c.name),
                            ),
                        ))
                    }
                    (other, _) => {
                        return Err((
                            r.resource_type,
                            r.resource_name.to_string(),
                            TopicError::new(
                                ResponseError::InvalidRequest,
                                format!("Unknown alter config operation {other}"),
                            ),
                        ))
                    }
                };
                ops.push((c.name.to_string(), op));
            }
            Ok(Alteration {
                resource_type: r.resource_type,
                name: r.resource_name.to_string(),
                ops,
                replace: false,
            })
        })
        .collect()
}

fn legacy(req: &AlterConfigsRequest) -> Vec<Result<Alteration, (i8, String, TopicError)>> {
    req.resources
        .iter()
        .map(|r| {
            let mut ops = Vec::new();
            for c in &r.configs {
                let Some(v) = c.value.as_ref() else {
                    return Err((
                        r.resource_type,
                        r.resource_name.to_string(),
                        TopicError::new(
                            ResponseError::InvalidRequest,
                            format!("Null value not supported for : {}", c.name),
                        ),
                    ));
                };
                ops.push((c.name.to_string(), Op::Set(v.to_string())));
            }
            Ok(Alteration {
                resource_type: r.resource_type,
                name: r.resource_name.to_string(),
                ops,
                replace: true,
            })
        })
        .collect()
}

/// A topic's overrides after `a`, or why they cannot be.
fn altered(
    image: &MetadataImage,
    broker: &crate::config::BrokerConfig,
    a: &Alteration,
) -> Result<(felice_metadata::TopicId, BTreeMap<String, String>), TopicError> {
    match a.resource_type {
        RESOURCE_TOPIC => {}
        RESOURCE_BROKER => return Err(TopicError::new(
            ResponseError::InvalidRequest,
            "Felice has no dynamic broker configs: set broker configs in its configuration file",
        )),
        other => {
            return Err(TopicError::new(
                ResponseError::InvalidRequest,
                format!("Unsupported resource type {other}"),
            ))
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (key, _) in &a.ops {
        if !seen.insert(key) {
            return Err(TopicError::new(
                ResponseError::InvalidRequest,
                format!("Error due to duplicate config keys: {key}"),
            ));
        }
    }
    let topic = image.topic(&a.name).ok_or_else(|| {
        TopicError::new(
            ResponseError::UnknownTopicOrPartition,
            format!("The topic '{}' does not exist.", a.name),
        )
    })?;
    let invalid = |e: topic_config::TopicConfigError| {
        TopicError::new(ResponseError::InvalidConfig, e.to_string())
    };
    let mut configs = if a.replace {
        BTreeMap::new()
    } else {
        topic.configs.clone()
    };
    let current = |configs: &BTreeMap<String, String>, key: &str| -> Vec<String> {
        let value = configs.get(key).cloned().unwrap_or_else(|| {
            topic_config::describe(broker, configs)
                .into_iter()
                .find(|c| c.name == key)
                .map(|c| c.value)
                .unwrap_or_default()
        });
        value
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect()
    };
    for (key, op) in &a.ops {
        if !topic_config::is_known(key) {
            return Err(invalid(topic_config::TopicConfigError::Unknown(
                key.clone(),
            )));
        }
        if matches!(op, Op::Append(_) | Op::Subtract(_)) && !topic_config::is_list(key) {
            return Err(TopicError::new(
                ResponseError::InvalidConfig,
                format!("Config value append/subtract is not allowed for config key: {key}"),
            ));
        }
        match op {
            Op::Set(v) => {
                configs.insert(key.clone(), v.clone());
            }
            Op::Delete => {
                configs.remove(key);
            }
            Op::Append(v) => {
                let mut list = current(&configs, key);
                for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                    if !list.iter().any(|l| l == item) {
                        list.push(item.to_string());
                    }
                }
                configs.insert(key.clone(), list.join(","));
            }
            Op::Subtract(v) => {
                let drop: Vec<&str> = v.split(',').map(str::trim).collect();
                let list: Vec<String> = current(&configs, key)
                    .into_iter()
                    .filter(|l| !drop.contains(&l.as_str()))
                    .collect();
                configs.insert(key.clone(), list.join(","));
            }
        }
    }
    for (key, value) in &configs {
        topic_config::validate(key, Some(value)).map_err(invalid)?;
    }
    Ok((topic.topic_id, configs))
}

/// The controller's side, for both APIs: one result per resource.
async fn on_controller_common(
    ctx: &ControllerContext,
    asked: Vec<Result<Alteration, (i8, String, TopicError)>>,
    validate_only: bool,
) -> Vec<(i8, String, Result<(), TopicError>)> {
    let mut counts: HashMap<(i8, String), usize> = HashMap::new();
    for a in asked.iter().flatten() {
        *counts.entry((a.resource_type, a.name.clone())).or_default() += 1;
    }
    let mut outcomes: Vec<(i8, String, Result<(), TopicError>)> = Vec::new();
    let commit = ctx
        .quorum
        .commit(|image| {
            outcomes.clear();
            let mut records = Vec::new();
            for a in &asked {
                let a = match a {
                    Ok(a) => a,
                    Err((t, n, e)) => {
                        outcomes.push((*t, n.clone(), Err(e.clone())));
                        continue;
                    }
                };
                if counts
                    .get(&(a.resource_type, a.name.clone()))
                    .is_some_and(|c| *c > 1)
                {
                    outcomes.push((
                        a.resource_type,
                        a.name.clone(),
                        Err(TopicError::new(
                            ResponseError::InvalidRequest,
                            format!("Duplicate resource {}", a.name),
                        )),
                    ));
                    continue;
                }
                match altered(image, &ctx.config, a) {
                    Ok((topic_id, configs)) => {
                        outcomes.push((a.resource_type, a.name.clone(), Ok(())));
                        if validate_only {
                            continue;
                        }
                        let before = image
                            .topic_by_id(&topic_id)
                            .map(|t| t.configs.clone())
                            .unwrap_or_default();
                        for (key, value) in &configs {
                            if before.get(key) != Some(value) {
                                records.push(MetadataRecord::TopicConfig {
                                    topic_id,
                                    key: key.clone(),
                                    value: Some(value.clone()),
                                });
                            }
                        }
                        for key in before.keys().filter(|k| !configs.contains_key(*k)) {
                            records.push(MetadataRecord::TopicConfig {
                                topic_id,
                                key: key.clone(),
                                value: None,
                            });
                        }
                    }
                    Err(e) => outcomes.push((a.resource_type, a.name.clone(), Err(e))),
                }
            }
            Ok::<_, std::convert::Infallible>(records)
        })
        .await;
    let failure = crate::controller::commit_failure(&commit);
    if let Some(f) = failure {
        return asked
            .iter()
            .map(|a| match a {
                Ok(a) => (a.resource_type, a.name.clone(), Err(f.clone())),
                Err((t, n, e)) => (*t, n.clone(), Err(e.clone())),
            })
            .collect();
    }
    // As Kafka: a resource named twice is answered once.
    let mut answered = std::collections::HashSet::new();
    outcomes
        .into_iter()
        .filter(|(t, n, _)| answered.insert((*t, n.clone())))
        .collect()
}

/// The active controller's side of IncrementalAlterConfigs.
pub async fn on_controller_incremental(
    ctx: &ControllerContext,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let outcomes = on_controller_common(ctx, incremental(&req), req.validate_only).await;
    IncrementalAlterConfigsResponse::default().with_responses(
        outcomes
            .into_iter()
            .map(|(t, n, r)| {
                let (code, message) = code_of(r);
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(t)
                    .with_resource_name(str_bytes(&n))
                    .with_error_code(code)
                    .with_error_message(message.map(|m| str_bytes(&m)))
            })
            .collect(),
    )
}

/// The active controller's side of AlterConfigs.
pub async fn on_controller(
    ctx: &ControllerContext,
    req: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let outcomes = on_controller_common(ctx, legacy(&req), req.validate_only).await;
    AlterConfigsResponse::default().with_responses(
        outcomes
            .into_iter()
            .map(|(t, n, r)| {
                let (code, message) = code_of(r);
                alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(t)
                    .with_resource_name(str_bytes(&n))
                    .with_error_code(code)
                    .with_error_message(message.map(|m| str_bytes(&m)))
            })
            .collect(),
    )
}

fn code_of(r: Result<(), TopicError>) -> (i16, Option<String>) {
    match r {
        Ok(()) => (0, None),
        Err(e) => (e.code.code(), Some(e.message)),
    }
}

/// Whether this broker's image shows `a` done (a topic resource the
/// controller accepted).
fn shows(image: &MetadataImage, a: &Alteration) -> bool {
    let Some(topic) = image.topic(&a.name) else {
        return true;
    };
    if a.replace {
        return a.ops.len() == topic.configs.len()
            && a.ops.iter().all(|(k, op)| match op {
                Op::Set(v) => topic.configs.get(k) == Some(v),
                _ => false,
            });
    }
    let list = |k: &str| -> Vec<&str> {
        topic
            .configs
            .get(k)
            .map(|v| v.split(',').map(str::trim).collect())
            .unwrap_or_default()
    };
    a.ops.iter().all(|(k, op)| match op {
        Op::Set(v) => topic.configs.get(k) == Some(v),
        Op::Delete => !topic.configs.contains_key(k),
        Op::Append(v) => v.split(',').map(str::trim).all(|i| list(k).contains(&i)),
        Op::Subtract(v) => v.split(',').map(str::trim).all(|i| !list(k).contains(&i)),
    })
}

/// Waits (briefly, never failing) until this broker applied the accepted
/// changes, so the client's next request here sees them.
async fn wait_applied(broker: &Arc<Broker>, done: Vec<Alteration>) {
    let _ = broker
        .applied_until(|image| done.iter().all(|a| shows(image, a)), apply_wait(0))
        .await;
}

/// A resource's (type, name, error code) in a response.
type Answer = (i8, String, i16);

/// The broker's side of both APIs: forwarded to the active controller;
/// the accepted changes are waited for here. `answers` reads the
/// response's (type, name, error) per resource; `unanswered` builds the
/// response when the controller could not be reached.
async fn forward<R: ControllerRequest>(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    req: R,
    asked: Vec<Result<Alteration, (i8, String, TopicError)>>,
    validate_only: bool,
    answers: fn(&R::Response) -> Vec<Answer>,
    unanswered: impl FnOnce(Vec<(i8, String)>, &str) -> R::Response,
) -> R::Response {
    let resources: Vec<(i8, String)> = asked
        .iter()
        .map(|a| match a {
            Ok(a) => (a.resource_type, a.name.clone()),
            Err((t, n, _)) => (*t, n.clone()),
        })
        .collect();
    match broker
        .controller
        .call(req, header.request_api_version)
        .await
    {
        Ok(resp) => {
            if !validate_only {
                wait_applied(broker, accepted(asked, answers(&resp).into_iter())).await;
            }
            resp
        }
        Err(e) => unanswered(resources, &e.to_string()),
    }
}

/// The broker's side of IncrementalAlterConfigs.
pub async fn handle_incremental(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let (asked, validate_only) = (incremental(&req), req.validate_only);
    forward(
        broker,
        header,
        req,
        asked,
        validate_only,
        |resp| {
            resp.responses
                .iter()
                .map(|r| (r.resource_type, r.resource_name.to_string(), r.error_code))
                .collect()
        },
        |resources, message| {
            IncrementalAlterConfigsResponse::default().with_responses(
                resources
                    .into_iter()
                    .map(|(t, n)| {
                        incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                            .with_resource_type(t)
                            .with_resource_name(str_bytes(&n))
                            .with_error_code(ResponseError::RequestTimedOut.code())
                            .with_error_message(Some(str_bytes(message)))
                    })
                    .collect(),
            )
        },
    )
    .await
}

/// The broker's side of AlterConfigs.
pub async fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    req: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let (asked, validate_only) = (legacy(&req), req.validate_only);
    forward(
        broker,
        header,
        req,
        asked,
        validate_only,
        |resp| {
            resp.responses
                .iter()
                .map(|r| (r.resource_type, r.resource_name.to_string(), r.error_code))
                .collect()
        },
        |resources, message| {
            AlterConfigsResponse::default().with_responses(
                resources
                    .into_iter()
                    .map(|(t, n)| {
                        alter_configs_response::AlterConfigsResourceResponse::default()
                            .with_resource_type(t)
                            .with_resource_name(str_bytes(&n))
                            .with_error_code(ResponseError::RequestTimedOut.code())
                            .with_error_message(Some(str_bytes(message)))
                    })
                    .collect(),
            )
        },
    )
    .await
}

/// The asked alterations the controller answered without error.
fn accepted(
    asked: Vec<Result<Alteration, (i8, String, TopicError)>>,
    answers: impl Iterator<Item = (i8, String, i16)>,
) -> Vec<Alteration> {
    let ok: Vec<(i8, String)> = answers
        .filter(|(_, _, code)| *code == 0)
        .map(|(t, n, _)| (t, n))
        .collect();
    asked
        .into_iter()
        .flatten()
        .filter(|a| ok.contains(&(a.resource_type, a.name.clone())))
        .collect()
}
