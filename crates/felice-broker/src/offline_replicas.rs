//! Offline replicas: a broker tells the active controller which of its
//! replicas went offline (a broken invariant, `Partition::take_offline`),
//! and the controller moves their leadership and ISR membership away, as
//! Kafka's does for the replicas of a failed log directory
//! (`handleDirectoriesOffline`). Kafka carries failed directories in
//! BrokerHeartbeat; Felice's single log directory makes that all or
//! nothing, so the broker names partitions instead, with Felice's private
//! API key [`OFFLINE_REPLICAS_API_KEY`] on the controller listener (never on
//! a client listener, never in ApiVersions).
//!
//! The controller takes the broker out of each partition's ISR (unless it
//! is the last member: nobody else has the data, and unclean election is
//! off, so the partition waits) and, where it led, elects the first other
//! ISR member in replica order that is unfenced (none: -1). Leader epoch up
//! when the leader changes, partition epoch up always. The offline replica
//! ignores the metadata from then on and never fetches, so it cannot
//! rejoin the ISR until its broker restarts and recovers its log.
//!
//! Wire format (version 0, request header v1, response header v0):
//! request `broker_id: i32, broker_epoch: i64, count: i32, count × (topic
//! id: 16 bytes, partition: i32)`, response `error_code: i16`.
//! Bounds: at most [`MAX_OFFLINE_PER_REQUEST`] partitions per request.

use crate::broker::Broker;
use crate::controller::{commit_error, ControllerContext};
use crate::controller_channel::ControllerRequest;
use bytes::Buf;
use felice_metadata::{NodeId, TopicId};
use kafka_protocol::protocol::buf::{ByteBuf, ByteBufMut};
use kafka_protocol::protocol::{
    Decodable, Encodable, HeaderVersion, Message, Request, VersionRange,
};
use kafka_protocol::ResponseError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Felice's private API key for [`OfflineReplicasRequest`].
pub const OFFLINE_REPLICAS_API_KEY: i16 = 32_004;
/// Most partitions one request names.
pub const MAX_OFFLINE_PER_REQUEST: usize = 10_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfflineReplicasRequest {
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub partitions: Vec<(TopicId, i32)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfflineReplicasResponse {
    pub error_code: i16,
}

impl Message for OfflineReplicasRequest {
    const VERSIONS: VersionRange = VersionRange { min: 0, max: 0 };
    const DEPRECATED_VERSIONS: Option<VersionRange> = None;
}

impl Message for OfflineReplicasResponse {
    const VERSIONS: VersionRange = VersionRange { min: 0, max: 0 };
    const DEPRECATED_VERSIONS: Option<VersionRange> = None;
}

impl HeaderVersion for OfflineReplicasRequest {
    fn header_version(_: i16) -> i16 {
        1
    }
}

impl HeaderVersion for OfflineReplicasResponse {
    fn header_version(_: i16) -> i16 {
        0
    }
}

impl Encodable for OfflineReplicasRequest {
    fn encode<B: ByteBufMut>(&self, buf: &mut B, _: i16) -> anyhow::Result<()> {
        if self.partitions.len() > MAX_OFFLINE_PER_REQUEST {
            anyhow::bail!("{} partitions in one request", self.partitions.len());
        }
        buf.put_i32(self.broker_id);
        buf.put_i64(self.broker_epoch);
        buf.put_i32(self.partitions.len() as i32);
        for (topic, partition) in &self.partitions {
            buf.put_slice(topic.as_bytes());
            buf.put_i32(*partition);
        }
        Ok(())
    }
    fn compute_size(&self, _: i16) -> anyhow::Result<usize> {
        Ok(16 + self.partitions.len() * 20)
    }
}

impl Decodable for OfflineReplicasRequest {
    fn decode<B: ByteBuf>(buf: &mut B, _: i16) -> anyhow::Result<Self> {
        if buf.remaining() < 16 {
            anyhow::bail!("short offline-replicas request");
        }
        let broker_id = buf.get_i32();
        let broker_epoch = buf.get_i64();
        let count = buf.get_i32();
        let count = usize::try_from(count)
            .ok()
            .filter(|c| *c <= MAX_OFFLINE_PER_REQUEST && buf.remaining() >= c * 20)
            .ok_or_else(|| anyhow::anyhow!("bad partition count {count}"))?;
        let mut partitions = Vec::with_capacity(count);
        for _ in 0..count {
            let mut id = [0u8; 16];
            buf.copy_to_slice(&mut id);
            partitions.push((TopicId::from_bytes(id), buf.get_i32()));
        }
        Ok(OfflineReplicasRequest {
            broker_id,
            broker_epoch,
            partitions,
        })
    }
}

impl Encodable for OfflineReplicasResponse {
    fn encode<B: ByteBufMut>(&self, buf: &mut B, _: i16) -> anyhow::Result<()> {
        buf.put_i16(self.error_code);
        Ok(())
    }
    fn compute_size(&self, _: i16) -> anyhow::Result<usize> {
        Ok(2)
    }
}

impl Decodable for OfflineReplicasResponse {
    fn decode<B: ByteBuf>(buf: &mut B, _: i16) -> anyhow::Result<Self> {
        if buf.remaining() < 2 {
            anyhow::bail!("short offline-replicas response");
        }
        Ok(OfflineReplicasResponse {
            error_code: buf.get_i16(),
        })
    }
}

impl Request for OfflineReplicasRequest {
    const KEY: i16 = OFFLINE_REPLICAS_API_KEY;
    type Response = OfflineReplicasResponse;
}

impl ControllerRequest for OfflineReplicasRequest {
    async fn run_local(self, ctx: &ControllerContext, _version: i16) -> OfflineReplicasResponse {
        on_controller(ctx, self).await
    }
    fn not_controller(r: &OfflineReplicasResponse) -> bool {
        r.error_code == ResponseError::NotController.code()
    }
}

/// The controller's side: moves leadership and ISR membership away from
/// the broker's offline replicas, in one metadata entry.
pub async fn on_controller(
    ctx: &ControllerContext,
    req: OfflineReplicasRequest,
) -> OfflineReplicasResponse {
    let node: NodeId = req.broker_id;
    let r = ctx
        .quorum
        .commit::<ResponseError>(|image| {
            if image
                .brokers
                .get(&node)
                .is_none_or(|b| b.epoch != req.broker_epoch)
            {
                return Err(ResponseError::StaleBrokerEpoch);
            }
            let acceptable =
                |b: &NodeId| *b != node && image.brokers.get(b).is_some_and(|x| !x.fenced);
            let mut records = Vec::new();
            for (topic_id, index) in &req.partitions {
                let Some(p) = image
                    .topic_by_id(topic_id)
                    .and_then(|t| t.partitions.get(*index as usize))
                else {
                    continue;
                };
                if !p.isr.contains(&node) && p.leader != node {
                    continue;
                }
                let isr: Vec<NodeId> = if p.isr.len() > 1 {
                    p.isr.iter().copied().filter(|b| *b != node).collect()
                } else {
                    p.isr.clone()
                };
                let leader = if p.leader == node {
                    crate::broker_lifecycle::elect_leader(&p.replicas, &isr, acceptable)
                } else {
                    p.leader
                };
                let topic = image.topic_by_id(topic_id);
                let (leader, isr) =
                    match crate::broker_lifecycle::elect_unclean(p, leader, acceptable, || {
                        topic.is_some_and(|t| {
                            crate::broker_lifecycle::unclean_allowed(&ctx.config, t)
                        })
                    }) {
                        Some(u) => (u, vec![u]),
                        None => (leader, isr),
                    };
                records.extend(crate::broker_lifecycle::partition_change(
                    *topic_id, p, leader, isr,
                ));
            }
            Ok(records)
        })
        .await;
    let code = match r {
        Ok(_) => {
            tracing::warn!(
                broker = node,
                partitions = req.partitions.len(),
                "offline replicas: leadership and ISR membership moved away"
            );
            0
        }
        Err(felice_metadata::CommitError::Rejected(code)) => code.code(),
        Err(e) => commit_error(&e).code(),
    };
    OfflineReplicasResponse { error_code: code }
}

/// The broker's reporter: sends the partitions its replica manager took
/// offline to the active controller, until it takes them.
pub async fn report(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let ctx = broker.replicas.context();
    loop {
        tokio::select! {
            _ = ctx.offline_changed.notified() => {}
            _ = shutdown.changed() => return,
        }
        loop {
            let mut pending = ctx.take_offline_reports();
            if pending.is_empty() {
                break;
            }
            let rest = pending.split_off(pending.len().min(MAX_OFFLINE_PER_REQUEST));
            ctx.return_offline_reports(rest);
            let req = OfflineReplicasRequest {
                broker_id: broker.config.node_id,
                broker_epoch: broker.broker_epoch(),
                partitions: pending.clone(),
            };
            match broker.controller.call(req, 0).await {
                Ok(r) if r.error_code == 0 => continue,
                other => {
                    tracing::warn!(?other, "could not report offline replicas; retrying");
                    ctx.return_offline_reports(pending);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    }
}
