//! felice-client: a small async Kafka client for the CLI, `felice bench` and tests.
//!
//! All request and response codecs come from the `kafka-protocol` crate; this crate adds
//! only framing, correlation and version negotiation ([`Connection`]), typed helpers for
//! the handful of APIs the tools need ([`api`]), and a record-batch template that stamps
//! send times into pre-encoded batches ([`batch`]).
//!
//! Invariants:
//! - A [`Connection`] matches responses to requests strictly in send order (Kafka answers
//!   requests on one connection in order); a correlation id mismatch closes it.
//! - Every version used on the wire is inside both the broker's advertised range and the
//!   range `kafka-protocol` can encode.
//! - Bytes from the network are never indexed or unwrapped: a malformed frame becomes a
//!   [`ClientError`], never a panic.
//!
//! Concurrency: a `Connection` is `Send + Sync`; any number of tasks may call it through
//! an `Arc` and their requests are pipelined.

pub mod api;
pub mod batch;
mod conn;
pub mod idle;
pub mod limits;

pub use api::{
    FetchPartition, FetchedPartition, ProduceFuture, TopicInfo, TopicPartitionInfo, TopicRef,
    EARLIEST_TIMESTAMP, LATEST_TIMESTAMP,
};
pub use batch::{
    summarize_batches, BatchSummary, BatchTemplate, Idempotence, SendStamp, STAMP_LEN,
};
pub use conn::{Connection, ResponseFuture};
pub use idle::IdleConnection;
pub use kafka_protocol;
pub use kafka_protocol::records::Compression;
pub use kafka_protocol::ResponseError;

use kafka_protocol::messages::ApiKey;

/// Everything that can go wrong talking to a broker.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, reading or writing the socket failed.
    #[error("i/o error talking to {peer}: {source}")]
    Io {
        /// The broker address.
        peer: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The connection was closed (by the broker, by an earlier error, or by dropping it)
    /// before the response arrived.
    #[error("connection to {peer} closed: {reason}")]
    Disconnected {
        /// The broker address.
        peer: String,
        /// Why the connection ended.
        reason: String,
    },
    /// The broker answered with a Kafka error code.
    #[error("{api:?} {context}: broker returned {error} (code {code})", code = .error.code())]
    Kafka {
        /// The API that failed.
        api: ApiKey,
        /// The topic or partition the error is about, for the message.
        context: String,
        /// The Kafka error.
        error: ResponseError,
    },
    /// `kafka-protocol` could not encode the request or decode the response.
    #[error("{api:?} v{version}: codec error: {source}")]
    Codec {
        /// The API being encoded or decoded.
        api: ApiKey,
        /// The version used.
        version: i16,
        /// The error from `kafka-protocol`.
        #[source]
        source: anyhow::Error,
    },
    /// The broker does not support any version of this API that we can speak.
    #[error("broker does not support a usable version of {0:?}")]
    UnsupportedApi(ApiKey),
    /// The broker sent a frame violating the protocol (size, correlation id, missing data).
    #[error("protocol violation from {peer}: {detail}")]
    Protocol {
        /// The broker address.
        peer: String,
        /// What was wrong.
        detail: String,
    },
    /// A response did not contain the topic or partition that was asked for.
    #[error("{api:?} response has no entry for {context}")]
    MissingInResponse {
        /// The API.
        api: ApiKey,
        /// The topic/partition that is missing.
        context: String,
    },
}

impl ClientError {
    /// The Kafka error code, if the broker returned one.
    pub fn kafka_error(&self) -> Option<ResponseError> {
        match self {
            ClientError::Kafka { error, .. } => Some(*error),
            _ => None,
        }
    }
}

/// Converts a Kafka error code into a typed error (`None` for 0).
pub fn kafka_error(
    api: ApiKey,
    code: i16,
    context: impl FnOnce() -> String,
) -> Result<(), ClientError> {
    match ResponseError::try_from_code(code) {
        None => Ok(()),
        Some(error) => Err(ClientError::Kafka {
            api,
            context: context(),
            error,
        }),
    }
}
