//! InitProducerId (key 22), for idempotent producers: a new producer id with
//! epoch 0, from blocks recorded in the metadata log (`producer_ids.rs`).
//!
//! KIP-360: a producer that sends its current id and epoch (v3+) gets the
//! same id with the epoch bumped, so it can reset its sequences after
//! UNKNOWN_PRODUCER_ID or OUT_OF_ORDER_SEQUENCE_NUMBER without losing its id;
//! at an exhausted epoch, or for an id this cluster never handed out, it gets
//! a new id. (Apache Kafka answers every idempotent InitProducerId with a new
//! id; clients accept either.) Exactly one of id and epoch set is
//! INVALID_REQUEST, as in Kafka.
//!
//! Transactional ids need the transaction coordinator, which Felice does not
//! have yet: they are answered COORDINATOR_NOT_AVAILABLE (an empty one
//! INVALID_REQUEST), never with an id.

use crate::broker::Broker;
use crate::producer_ids::MAX_BUMPABLE_EPOCH;
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProducerId, RequestHeader,
};
use kafka_protocol::protocol::{Message, VersionRange};
use kafka_protocol::ResponseError;
use std::sync::Arc;

pub const VERSIONS: VersionRange = InitProducerIdRequest::VERSIONS;

pub async fn handle(
    broker: &Arc<Broker>,
    _header: &RequestHeader,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let fail = |code: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(code.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if let Some(id) = &req.transactional_id {
        if id.0.is_empty() {
            return fail(ResponseError::InvalidRequest);
        }
        tracing::debug!(transactional_id = %id.0.as_str(), "InitProducerId for a transactional id: no transaction coordinator");
        return fail(ResponseError::CoordinatorNotAvailable);
    }
    let (pid, epoch) = (req.producer_id.0, req.producer_epoch);
    match (pid, epoch) {
        (-1, -1) => {}
        (-1, _) | (_, -1) => return fail(ResponseError::InvalidRequest),
        (pid, epoch)
            if pid >= 0
                // The committed image: a block is handed out as soon as it
                // is committed, before this broker applies it.
                && pid < broker.metadata.image().next_producer_id
                && (0..MAX_BUMPABLE_EPOCH).contains(&epoch) =>
        {
            return InitProducerIdResponse::default()
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch + 1);
        }
        // An exhausted epoch or an id never handed out: a new id.
        _ => {}
    }
    let id = match broker.producer_ids.try_next() {
        Some(id) => Ok(id),
        None => {
            broker
                .producer_ids
                .next(&broker.controller, broker.config.node_id)
                .await
        }
    };
    match id {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            tracing::warn!(error = %e, "no producer id");
            // Kafka's answer when no id block can be had.
            fail(ResponseError::CoordinatorLoadInProgress)
        }
    }
}
