//! DescribeConfigs (key 32): a topic's configs from this broker's metadata
//! image (its overrides, then the broker keys they default to), and this
//! broker's own configuration, each config with its source and, when asked,
//! its synonyms. As Kafka's broker:
//! - a topic that does not exist is UNKNOWN_TOPIC_OR_PARTITION;
//! - a broker resource names this broker's id, or is empty for the
//!   cluster-wide dynamic defaults (Felice has none: an empty list); any
//!   other id is INVALID_REQUEST;
//! - `configuration_keys` narrows the answer to the keys named (unknown keys
//!   are left out).
//!
//! Broker loggers, client metrics and group configs are not described:
//! INVALID_REQUEST naming the resource type. Felice has no dynamic broker
//! configs, so broker configs are read-only; documentation is not carried
//! (null).

use crate::broker::Broker;
use crate::handlers::str_bytes;
use crate::topic_config::{self, SOURCE_DEFAULT_CONFIG, SOURCE_STATIC_BROKER_CONFIG};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse, RequestHeader};
use kafka_protocol::protocol::{Message, VersionRange};
use kafka_protocol::ResponseError;
use std::sync::Arc;

pub const VERSIONS: VersionRange = DescribeConfigsRequest::VERSIONS;

/// Kafka's ConfigResource.Type codes.
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

pub async fn handle(
    broker: &Arc<Broker>,
    _header: &RequestHeader,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let results = req
        .resources
        .iter()
        .map(|r| {
            let base = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            match describe(broker, r, req.include_synonyms) {
                Ok(configs) => base.with_error_code(0).with_configs(configs),
                Err((code, message)) => base
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(&message))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

type Failure = (ResponseError, String);

fn describe(
    broker: &Broker,
    r: &DescribeConfigsResource,
    include_synonyms: bool,
) -> Result<Vec<DescribeConfigsResourceResult>, Failure> {
    let name = r.resource_name.as_str();
    let wanted = |key: &str| {
        r.configuration_keys
            .as_ref()
            .is_none_or(|keys| keys.iter().any(|k| k.as_str() == key))
    };
    let synonyms = |list: Vec<(String, Option<String>, i8)>| -> Vec<DescribeConfigsSynonym> {
        if !include_synonyms {
            return Vec::new();
        }
        list.into_iter()
            .map(|(n, v, source)| {
                DescribeConfigsSynonym::default()
                    .with_name(str_bytes(&n))
                    .with_value(v.as_deref().map(str_bytes))
                    .with_source(source)
            })
            .collect()
    };
    match r.resource_type {
        RESOURCE_TOPIC => {
            if let Err(e) = crate::controller::validate_topic_name(name) {
                return Err((ResponseError::InvalidTopicException, e.message));
            }
            let image = broker.image();
            let topic = image.topic(name).ok_or_else(|| {
                (
                    ResponseError::UnknownTopicOrPartition,
                    format!("The topic '{name}' does not exist."),
                )
            })?;
            Ok(topic_config::describe(&broker.config, &topic.configs)
                .into_iter()
                .filter(|c| wanted(c.name))
                .map(|c| {
                    DescribeConfigsResourceResult::default()
                        .with_name(str_bytes(c.name))
                        .with_value(Some(str_bytes(&c.value)))
                        .with_read_only(false)
                        .with_config_source(c.source)
                        .with_is_sensitive(false)
                        .with_config_type(c.config_type)
                        .with_synonyms(synonyms(c.synonyms))
                        .with_documentation(None)
                })
                .collect())
        }
        RESOURCE_BROKER if name.is_empty() => Ok(Vec::new()),
        RESOURCE_BROKER => {
            if name.parse::<i32>().ok() != Some(broker.config.node_id) {
                return Err((
                    ResponseError::InvalidRequest,
                    format!(
                        "Unexpected broker id, expected {} or empty string, but received {name}",
                        broker.config.node_id
                    ),
                ));
            }
            Ok(broker
                .config
                .describe()
                .into_iter()
                .filter(|c| wanted(c.name))
                .map(|c| {
                    let source = if c.explicit {
                        SOURCE_STATIC_BROKER_CONFIG
                    } else {
                        SOURCE_DEFAULT_CONFIG
                    };
                    let mut list = Vec::new();
                    if c.explicit {
                        list.push((c.name.to_string(), c.value.clone(), source));
                    }
                    if let Some(d) = c.default {
                        list.push((
                            c.name.to_string(),
                            Some(d.to_string()),
                            SOURCE_DEFAULT_CONFIG,
                        ));
                    }
                    let sensitive = c.name.contains("password");
                    DescribeConfigsResourceResult::default()
                        .with_name(str_bytes(c.name))
                        .with_value(if sensitive {
                            None
                        } else {
                            c.value.as_deref().map(str_bytes)
                        })
                        .with_read_only(true)
                        .with_config_source(source)
                        .with_is_sensitive(sensitive)
                        .with_config_type(c.config_type)
                        .with_synonyms(if sensitive {
                            Vec::new()
                        } else {
                            synonyms(list)
                        })
                        .with_documentation(None)
                })
                .collect())
        }
        other => Err((
            ResponseError::InvalidRequest,
            format!("Unsupported resource type: {}", resource_type_name(other)),
        )),
    }
}

fn resource_type_name(code: i8) -> String {
    match code {
        8 => "BROKER_LOGGER".into(),
        16 => "CLIENT_METRICS".into(),
        32 => "GROUP".into(),
        other => format!("UNKNOWN({other})"),
    }
}
