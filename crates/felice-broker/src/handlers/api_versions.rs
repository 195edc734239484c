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

/// What the controller listener serves (see [`crate::controller_net`]): its
/// Raft keys are Felice's own and never advertised.
pub fn controller_advertised() -> Vec<ApiVersion> {
    vec![ApiVersion::default()
        .with_api_key(ApiKey::ApiVersions as i16)
        .with_min_version(VERSIONS.min)
        .with_max_version(VERSIONS.max)]
}

/// Kafka's rule for v3+ `client_software_name` and `_version`:
/// `[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?`.
fn valid_software_field(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    s.starts_with(alnum)
        && s.ends_with(alnum)
        && s.chars().all(|c| alnum(c) || c == '-' || c == '.')
}

/// First version carrying the client's software name and version (KIP-511).
const FIRST_SOFTWARE_NAME_VERSION: i16 = 3;

pub async fn handle(
    _broker: &Arc<Broker>,
    header: &RequestHeader,
    req: ApiVersionsRequest,
) -> ApiVersionsResponse {
    if header.request_api_version >= FIRST_SOFTWARE_NAME_VERSION
        && !(valid_software_field(req.client_software_name.as_str())
            && valid_software_field(req.client_software_version.as_str()))
    {
        // Kafka answers INVALID_REQUEST and no API list.
        return ApiVersionsResponse::default()
            .with_error_code(ResponseError::InvalidRequest.code())
            .with_throttle_time_ms(0);
    }
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

#[cfg(test)]
mod tests {
    use super::valid_software_field;

    #[test]
    fn software_names_follow_kafkas_pattern() {
        for ok in [
            "librdkafka",
            "2.12.1",
            "apache-kafka-java",
            "a",
            "kafka-python",
            "1.0-SNAPSHOT",
        ] {
            assert!(valid_software_field(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", ".", "a b", "a_b", "é"] {
            assert!(!valid_software_field(bad), "{bad:?}");
        }
    }
}
