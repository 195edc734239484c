//! What the group APIs share: the one mapping of coordinator errors to
//! Kafka codes, and running coordinator calls that may write to the log on
//! a blocking thread.

use crate::broker::Broker;
use felice_coord::GroupError;
use kafka_protocol::ResponseError;
use std::sync::Arc;

/// Kafka's code for a coordinator error. Exhaustive on purpose: a new
/// variant must choose its code here.
pub fn code(e: GroupError) -> i16 {
    let r = match e {
        GroupError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
        GroupError::NotCoordinator => ResponseError::NotCoordinator,
        GroupError::CoordinatorLoadInProgress => ResponseError::CoordinatorLoadInProgress,
        GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
        GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::InvalidGroupId => ResponseError::InvalidGroupId,
        GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
        GroupError::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::MemberIdRequired => ResponseError::MemberIdRequired,
        GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
        GroupError::GroupMaxSizeReached => ResponseError::GroupMaxSizeReached,
        GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
        GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        GroupError::GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
        GroupError::OffsetMetadataTooLarge => ResponseError::OffsetMetadataTooLarge,
        GroupError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
        // Kafka maps a failed coordinator write (KAFKA_STORAGE_ERROR,
        // NOT_LEADER_OR_FOLLOWER) to NOT_COORDINATOR: clients find the
        // coordinator again and retry instead of failing.
        GroupError::StorageError => ResponseError::NotCoordinator,
        // Kafka answers a group record that does not fit with
        // UNKNOWN_SERVER_ERROR (OffsetCommit says INVALID_COMMIT_OFFSET_SIZE).
        GroupError::RecordTooLarge => ResponseError::UnknownServerError,
    };
    r.code()
}

pub fn opt_code(r: &Result<(), GroupError>) -> i16 {
    match r {
        Ok(()) => 0,
        Err(e) => code(*e),
    }
}

/// Runs a coordinator call that may append to `__consumer_offsets` on a
/// blocking thread; `fallback` answers if that thread fails.
pub async fn blocking<T: Send + 'static>(
    broker: &Arc<Broker>,
    fallback: T,
    f: impl FnOnce(&Broker) -> T + Send + 'static,
) -> T {
    let b = broker.clone();
    match tokio::task::spawn_blocking(move || f(&b)).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "group coordinator task failed");
            fallback
        }
    }
}

/// Rebalance timeout as given, or the session timeout when absent (v0).
pub fn wait_limit(rebalance_timeout_ms: i32) -> std::time::Duration {
    std::time::Duration::from_millis(rebalance_timeout_ms.max(0) as u64)
        + crate::coordinator::PARK_SLACK
}
