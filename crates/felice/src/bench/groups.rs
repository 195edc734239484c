//! `felice bench --group-bench`: the group coordinator's figures, through the
//! classic group protocol on raw requests (no assignor logic: the leader hands
//! every member an empty assignment, which is all the coordinator sees).
//!
//! - Rebalance latency, for each size in `--members` (e.g. 2,10,100): N-1
//!   members form a stable group and heartbeat every [`HEARTBEAT_EVERY`]; then
//!   one more joins. The figure is the time from its first JoinGroup until
//!   every member has finished SyncGroup in the new generation. Real clients
//!   add up to one `heartbeat.interval.ms` (3 s by default) before the old
//!   members notice; here the members' heartbeat phases are spread over
//!   [`HEARTBEAT_EVERY`], so the figure includes up to that much waiting.
//! - Offset commits per second: [`COMMITTERS`] connections, each committing
//!   one partition's offset per request, one request in flight, for
//!   `--duration` seconds (default 5), to simple groups (generation -1).
//! - Broker memory with `--groups N` groups, each with one member that joined,
//!   synced and committed one offset (needs `--broker-pid`). Run the broker
//!   with `group.initial.rebalance.delay.ms=0`, or each new group's first join
//!   waits that long.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use felice_client::kafka_protocol;
use felice_client::{ClientError, Connection, ResponseError};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use tokio::sync::mpsc;

use super::read_rss_kib;

/// How often a member heartbeats (and so notices a rebalance).
const HEARTBEAT_EVERY: Duration = Duration::from_millis(100);
const SESSION_TIMEOUT_MS: i32 = 30_000;
/// Connections committing offsets at once.
const COMMITTERS: usize = 8;
/// Connections creating groups for the memory figure.
const GROUP_WORKERS: usize = 16;
/// Give up on a rebalance after this long.
const REBALANCE_LIMIT: Duration = Duration::from_secs(120);

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn subscription(topic: &str) -> anyhow::Result<Bytes> {
    let sub = ConsumerProtocolSubscription::default().with_topics(vec![s(topic)]);
    let mut buf = BytesMut::new();
    buf.put_i16(1);
    sub.encode(&mut buf, 1).context("encoding a subscription")?;
    Ok(buf.freeze())
}

fn error(code: i16) -> Option<ResponseError> {
    ResponseError::try_from_code(code)
}

/// One member's state after a completed join + sync.
struct Joined {
    member_id: String,
    generation: i32,
}

/// JoinGroup (following MEMBER_ID_REQUIRED) then SyncGroup, retried on
/// REBALANCE_IN_PROGRESS until one generation completes.
async fn join_and_sync(
    conn: &Connection,
    group: &str,
    member_id: &mut String,
    metadata: &Bytes,
) -> anyhow::Result<Joined> {
    loop {
        let req = JoinGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_session_timeout_ms(SESSION_TIMEOUT_MS)
            .with_rebalance_timeout_ms(SESSION_TIMEOUT_MS)
            .with_member_id(s(member_id))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(metadata.clone())]);
        let resp = conn.call(&req).await?;
        match error(resp.error_code) {
            None => {}
            Some(ResponseError::MemberIdRequired) => {
                *member_id = resp.member_id.to_string();
                continue;
            }
            Some(ResponseError::RebalanceInProgress) => continue,
            Some(e) => bail!("JoinGroup {group}: {e:?}"),
        }
        *member_id = resp.member_id.to_string();
        let assignments = resp
            .members
            .iter()
            .map(|m| {
                SyncGroupRequestAssignment::default()
                    .with_member_id(m.member_id.clone())
                    .with_assignment(Bytes::new())
            })
            .collect();
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id(resp.generation_id)
            .with_member_id(s(member_id))
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(resp.protocol_name.clone())
            .with_assignments(assignments);
        let synced = conn.call(&sync).await?;
        match error(synced.error_code) {
            None => {
                return Ok(Joined {
                    member_id: member_id.clone(),
                    generation: resp.generation_id,
                })
            }
            Some(ResponseError::RebalanceInProgress) | Some(ResponseError::IllegalGeneration) => {
                continue
            }
            Some(e) => bail!("SyncGroup {group}: {e:?}"),
        }
    }
}

/// A member: joins, then heartbeats; rejoins when told to; reports every
/// completed generation on `done` as (member index, generation, when).
async fn member(
    conn: Connection,
    group: String,
    index: usize,
    metadata: Bytes,
    done: mpsc::UnboundedSender<(usize, i32, Instant)>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut member_id = String::new();
    while !stop.load(Ordering::Relaxed) {
        let joined = join_and_sync(&conn, &group, &mut member_id, &metadata).await?;
        let _ = done.send((index, joined.generation, Instant::now()));
        // Spread the members' heartbeat phases over the interval, as
        // independent clients would be: a new member then waits for the
        // slowest to notice, not for one lucky tick.
        let phase = HEARTBEAT_EVERY.as_micros() as u64 * ((index as u64 * 37) % 100) / 100;
        tokio::time::sleep(Duration::from_micros(phase)).await;
        loop {
            tokio::time::sleep(HEARTBEAT_EVERY).await;
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let hb = HeartbeatRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_generation_id(joined.generation)
                .with_member_id(s(&joined.member_id));
            match error(conn.call(&hb).await?.error_code) {
                None => {}
                Some(ResponseError::RebalanceInProgress) => break,
                Some(e) => bail!("Heartbeat: {e:?}"),
            }
        }
    }
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(s(&group)))
        .with_members(vec![MemberIdentity::default().with_member_id(s(&member_id))]);
    let _ = conn.call(&leave).await;
    Ok(())
}

/// Waits until every one of `members` reported a generation above `after`
/// (the same one); returns it and when the last one did.
async fn wait_generation(
    rx: &mut mpsc::UnboundedReceiver<(usize, i32, Instant)>,
    latest: &mut Vec<(i32, Instant)>,
    members: usize,
    after: i32,
) -> anyhow::Result<(i32, Instant)> {
    let deadline = Instant::now() + REBALANCE_LIMIT;
    loop {
        let gens: Vec<i32> = latest.iter().take(members).map(|(g, _)| *g).collect();
        if gens.len() == members {
            if let Some(&g) = gens.first() {
                if g > after && gens.iter().all(|x| *x == g) {
                    let last = latest
                        .iter()
                        .take(members)
                        .map(|(_, t)| *t)
                        .max()
                        .unwrap_or_else(Instant::now);
                    return Ok((g, last));
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((i, g, t))) => {
                if latest.len() <= i {
                    latest.resize(i + 1, (-1, t));
                }
                if let Some(slot) = latest.get_mut(i) {
                    *slot = (g, t);
                }
            }
            Ok(None) => bail!("members stopped"),
            Err(_) => bail!("no common generation after {REBALANCE_LIMIT:?}"),
        }
    }
}

async fn rebalance_latency(bootstrap: &str, topic: &str, size: usize) -> anyhow::Result<Duration> {
    if size < 2 {
        bail!("--members sizes must be at least 2");
    }
    let group = format!("felice-bench-rebalance-{size}-{}", std::process::id());
    let metadata = subscription(topic)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..size - 1 {
        let conn = Connection::connect(bootstrap).await?;
        tasks.spawn(member(
            conn,
            group.clone(),
            i,
            metadata.clone(),
            tx.clone(),
            stop.clone(),
        ));
    }
    let mut latest = Vec::new();
    let (stable, _) = wait_generation(&mut rx, &mut latest, size - 1, 0).await?;
    // Let the group settle (late rejoins of the initial formation); end
    // between heartbeat ticks.
    tokio::time::sleep(HEARTBEAT_EVERY * 5 + HEARTBEAT_EVERY / 3).await;
    while let Ok((i, g, t)) = rx.try_recv() {
        if let Some(slot) = latest.get_mut(i) {
            *slot = (g, t);
        }
    }
    let settled = latest.iter().map(|(g, _)| *g).max().unwrap_or(stable);
    let conn = Connection::connect(bootstrap).await?;
    let started = Instant::now();
    tasks.spawn(member(
        conn,
        group.clone(),
        size - 1,
        metadata.clone(),
        tx.clone(),
        stop.clone(),
    ));
    let (_, done) = wait_generation(&mut rx, &mut latest, size, settled).await?;
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = tasks.join_next().await {
        r.context("member task")??;
    }
    Ok(done.saturating_duration_since(started))
}

async fn commit_rate(bootstrap: &str, topic: &str, duration: Duration) -> anyhow::Result<f64> {
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..COMMITTERS {
        let conn = Connection::connect(bootstrap).await?;
        let count = count.clone();
        let topic = topic.to_string();
        tasks.spawn(async move {
            let group = format!("felice-bench-commits-{i}");
            let mut offset = 0i64;
            while Instant::now() < deadline {
                offset += 1;
                let req = OffsetCommitRequest::default()
                    .with_group_id(GroupId(s(&group)))
                    .with_generation_id_or_member_epoch(-1)
                    .with_member_id(s(""))
                    .with_retention_time_ms(-1)
                    .with_topics(vec![OffsetCommitRequestTopic::default()
                        .with_name(TopicName(s(&topic)))
                        .with_partitions(vec![OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(offset)
                            .with_committed_leader_epoch(-1)])]);
                let resp = conn.call(&req).await?;
                let code = resp
                    .topics
                    .first()
                    .and_then(|t| t.partitions.first())
                    .map_or(-1, |p| p.error_code);
                if let Some(e) = error(code) {
                    bail!("OffsetCommit: {e:?}");
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    let started = Instant::now();
    while let Some(r) = tasks.join_next().await {
        r.context("committer task")??;
    }
    Ok(count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

async fn many_groups(bootstrap: &str, topic: &str, groups: usize) -> anyhow::Result<()> {
    let metadata = subscription(topic)?;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..GROUP_WORKERS.min(groups.max(1)) {
        let conn = Connection::connect(bootstrap).await?;
        let next = next.clone();
        let metadata = metadata.clone();
        let topic = topic.to_string();
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= groups {
                    return Ok::<_, anyhow::Error>(());
                }
                let group = format!("felice-bench-group-{i}-{}", std::process::id());
                let mut member_id = String::new();
                let joined = join_and_sync(&conn, &group, &mut member_id, &metadata).await?;
                let req = OffsetCommitRequest::default()
                    .with_group_id(GroupId(s(&group)))
                    .with_generation_id_or_member_epoch(joined.generation)
                    .with_member_id(s(&joined.member_id))
                    .with_retention_time_ms(-1)
                    .with_topics(vec![OffsetCommitRequestTopic::default()
                        .with_name(TopicName(s(&topic)))
                        .with_partitions(vec![OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(1)
                            .with_committed_leader_epoch(-1)])]);
                conn.call(&req).await?;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.context("group task")??;
    }
    Ok(())
}

pub async fn run(
    bootstrap: &str,
    topic: &str,
    sizes: &[usize],
    groups: usize,
    duration: Duration,
    broker_pid: Option<u32>,
) -> anyhow::Result<()> {
    let conn = Connection::connect(bootstrap).await?;
    match conn.create_topics(topic, 1, -1, &[]).await {
        Ok(()) => {}
        Err(ClientError::Kafka {
            error: ResponseError::TopicAlreadyExists,
            ..
        }) => {}
        Err(e) => return Err(e).context("creating the bench topic"),
    }
    drop(conn);
    for &size in sizes {
        let latency = rebalance_latency(bootstrap, topic, size).await?;
        println!(
            "rebalance members={size} join_to_all_synced_ms={:.1} (heartbeat every {} ms)",
            latency.as_secs_f64() * 1e3,
            HEARTBEAT_EVERY.as_millis()
        );
    }
    let rate = commit_rate(bootstrap, topic, duration).await?;
    println!("offset_commits_per_s={rate:.0} (connections={COMMITTERS}, 1 partition per request, 1 in flight)");
    if groups > 0 {
        let before = broker_pid.and_then(read_rss_kib);
        let started = Instant::now();
        many_groups(bootstrap, topic, groups).await?;
        let elapsed = started.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = broker_pid.and_then(read_rss_kib);
        let mb = |k: Option<u64>| {
            k.map_or("unknown".to_string(), |k| {
                format!("{:.1}", k as f64 / 1024.0)
            })
        };
        let per_group = match (before, after) {
            (Some(b), Some(a)) => format!("{:.1}", a.saturating_sub(b) as f64 / groups as f64),
            _ => "unknown".into(),
        };
        println!(
            "groups={groups} created_in_s={:.1} broker_rss_mb_before={} broker_rss_mb_after={} kib_per_group={per_group}",
            elapsed.as_secs_f64(),
            mb(before),
            mb(after)
        );
    }
    Ok(())
}
