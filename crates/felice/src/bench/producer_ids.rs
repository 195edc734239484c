//! `felice bench --producer-ids N`: the broker's cost of remembering
//! idempotent producers. N producers each take an id (InitProducerId) and
//! write one one-record batch to each of `--partitions` partitions, the
//! way N short-lived idempotent clients would; then the broker's RSS growth
//! per remembered (partition, producer id) entry is printed (`--broker-pid`).
//! Restart time with that state is measured by `scripts/startup-time
//! --producer-ids N`.

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use felice_client::{
    BatchTemplate, Compression, Connection, Idempotence, ProduceFuture, SendStamp,
};

use super::read_rss_kib;

/// Produce requests kept in flight on the one connection.
const WINDOW: usize = 64;

pub async fn run(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    producer_ids: usize,
    broker_pid: Option<u32>,
) -> anyhow::Result<()> {
    let conn = Connection::connect(bootstrap)
        .await
        .with_context(|| format!("connecting to {bootstrap}"))?;
    let mut info = conn.topic_info(topic).await;
    if info.is_err() {
        conn.create_topics(topic, partitions, -1, &[])
            .await
            .with_context(|| format!("creating {topic}"))?;
        info = conn.topic_info(topic).await;
    }
    let topic_ref = info.context("topic metadata")?.topic;
    let rss_before = broker_pid.and_then(read_rss_kib);
    let template = BatchTemplate::new(
        vec![Bytes::from_static(b"producer-id-bench")],
        Compression::None,
    )?;
    let stamp = SendStamp {
        run_id: 0,
        nanos: 0,
    };
    let started = Instant::now();
    let mut window: VecDeque<ProduceFuture> = VecDeque::with_capacity(WINDOW);
    let mut errors = 0u64;
    for _ in 0..producer_ids {
        let (producer_id, producer_epoch) = conn.init_producer_id().await?;
        for partition in 0..partitions {
            // Producers expire by their batches' timestamps: stamp now.
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let parts = template.render_parts_as(
                stamp,
                now_ms,
                Some(Idempotence {
                    producer_id,
                    producer_epoch,
                    base_sequence: 0,
                }),
            )?;
            if window.len() >= WINDOW {
                if let Some(f) = window.pop_front() {
                    errors += u64::from(f.recv().await.is_err());
                }
            }
            if let Some(f) = conn
                .send_produce_parts(&topic_ref, partition, &parts, -1, 30_000)
                .await?
            {
                window.push_back(f);
            }
        }
    }
    while let Some(f) = window.pop_front() {
        errors += u64::from(f.recv().await.is_err());
    }
    let secs = started.elapsed().as_secs_f64();
    let entries = producer_ids as u64 * partitions as u64;
    println!(
        "producer ids: {producer_ids} over {partitions} partitions ({entries} entries) in {secs:.1} s, {errors} errors"
    );
    if let (Some(before), Some(pid)) = (rss_before, broker_pid) {
        let after = read_rss_kib(pid).unwrap_or(before);
        let grown = after.saturating_sub(before) as f64 * 1024.0;
        println!(
            "broker RSS {:.1} -> {:.1} MiB: {:.0} bytes per (partition, producer id) entry",
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            grown / entries.max(1) as f64
        );
    }
    Ok(())
}
