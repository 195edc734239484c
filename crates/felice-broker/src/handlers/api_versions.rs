//! ApiVersions (key 18): the APIs and versions this broker handles.
//!
//! The response header is always v0, even for flexible versions (the
//! `kafka-protocol` crate's `response_header_version` encodes that rule).
//! A request at a version we do not know gets KIP-511's answer: the v0 body
//! layout with UNSUPPORTED_VERSION and our ApiVersions range, so the client
//! can retry at a version both sides speak.

use crate::broker::Broker;
use crate::handlers::HANDLED;
use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader};
use kafka_protocol::protocol::{Message, VersionRange};
use kafka_protocol::ResponseError;
use std::sync::Arc;

pub const VERSIONS: VersionRange = ApiVersionsRequest::VERSIONS;

pub fn advertised() -> Vec<ApiVersion> {
    HANDLED
        .iter()
        .map(|(key, range)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(range.min)
                .with_max_version(range.max)
        })
        .collect()
}

pub async fn handle(
    _broker: &Arc<Broker>,
    _header: &RequestHeader,
    _req: ApiVersionsRequest,
) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(0)
        .with_api_keys(advertised())
        .with_throttle_time_ms(0)
}

/// KIP-511 fallback: `[length][correlation id][error_code][api_keys]` in the
/// v0 layout, listing only ApiVersions' own range, as Kafka does.
pub fn unsupported_version_response(correlation_id: i32) -> BytesMut {
    let mut buf = BytesMut::with_capacity(20);
    buf.put_i32(0);
    buf.put_i32(correlation_id);
    buf.put_i16(ResponseError::UnsupportedVersion.code());
    buf.put_i32(1);
    buf.put_i16(ApiKey::ApiVersions as i16);
    buf.put_i16(VERSIONS.min);
    buf.put_i16(VERSIONS.max);
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    buf
}
