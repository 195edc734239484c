//! The follower side of replication: for every partition this broker hosts
//! and does not lead, fetch the leader's batches and append them as they
//! are (Kafka's `ReplicaFetcherThread`, one per leader broker, as
//! `num.replica.fetchers=1`).
//!
//! Each fetcher is a task with one connection (felice-client) to its
//! leader's listener. It sends Fetch v17 as replica `node.id` with this
//! incarnation's broker epoch, the partitions' log end offsets as fetch
//! offsets, their current leader epoch (KIP-320) and the epoch of their
//! last batch (`last_fetched_epoch`, v12+): a leader whose epoch cache
//! disagrees answers a `diverging_epoch` and the follower truncates to the
//! epoch boundary first, as Kafka's `truncateOnFetchResponse` (this is the
//! OffsetForLeaderEpoch exchange, carried by the fetch since KIP-595).
//! Appends and truncations run on blocking threads (the log lock).
//!
//! Errors: OFFSET_OUT_OF_RANGE asks the leader for its log's ends
//! (ListOffsets) and truncates to its end, or starts over at its start;
//! a partition the leader refuses (NOT_LEADER_OR_FOLLOWER, a fenced or
//! unknown epoch) waits `replica.fetch.backoff.ms` and the next metadata;
//! a lost connection is opened again after the same backoff.
//!
//! The manager ([`run`]) follows the applied metadata: a new image moves
//! partitions between fetchers, starts fetchers for new leaders and stops
//! those with nothing left to fetch.
//!
//! Limits: `replica.fetch.max.bytes` per partition,
//! `replica.fetch.response.max.bytes` per response, at most
//! `replica.fetch.wait.max.ms` of long poll; one fetcher per leader, so at
//! most one per other broker.

use crate::broker::Broker;
use crate::replica::Partition;
use felice_client::Connection;
use felice_metadata::{MetadataImage, TopicId};
use felice_replica::{LeaderEpoch, Offset};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// Fetch v17: topic ids, `replica_state`, `last_fetched_epoch`.
const FETCH_VERSION: i16 = 17;
/// `replica.fetch.max.bytes` (Kafka's default).
const REPLICA_FETCH_MAX_BYTES: i32 = 1 << 20;
/// `replica.fetch.response.max.bytes` (Kafka's default).
const REPLICA_FETCH_RESPONSE_MAX_BYTES: i32 = 10 << 20;
/// `replica.fetch.wait.max.ms` (Kafka's default).
const REPLICA_FETCH_WAIT_MAX_MS: i32 = 500;
/// `replica.fetch.backoff.ms` (Kafka's default).
const REPLICA_FETCH_BACKOFF: Duration = Duration::from_millis(1000);
/// A fetch answer later than this (the long poll plus a margin) means the
/// connection is dead.
const FETCH_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

type Key = (TopicId, i32);

/// The partitions one fetcher fetches, shared with the manager.
#[derive(Default)]
struct Assigned {
    partitions: HashMap<Key, Arc<Partition>>,
    /// Partitions the leader refused, left out until this time.
    paused: HashMap<Key, Instant>,
}

struct Fetcher {
    assigned: Arc<Mutex<Assigned>>,
    /// Woken when partitions are added, and to stop.
    wake: Arc<Notify>,
    stop: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Runs the fetchers until `shutdown`: after each applied image, every
/// hosted partition led by another (unfenced) broker is fetched from it.
pub async fn run(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let mut images = broker.subscribe_applied();
    let mut fetchers: HashMap<i32, Fetcher> = HashMap::new();
    loop {
        let image = images.borrow_and_update().clone();
        assign(&broker, &image, &mut fetchers);
        tokio::select! {
            r = images.changed() => if r.is_err() { break },
            _ = shutdown.changed() => break,
        }
    }
    for f in fetchers.into_values() {
        let _ = f.stop.send(true);
    }
}

/// Makes the fetchers match `image`.
fn assign(broker: &Arc<Broker>, image: &MetadataImage, fetchers: &mut HashMap<i32, Fetcher>) {
    let me = broker.config.node_id;
    let mut wanted: HashMap<i32, HashMap<Key, Arc<Partition>>> = HashMap::new();
    for topic in image.topics() {
        for p in &topic.partitions {
            if p.leader < 0 || p.leader == me || !p.replicas.contains(&me) {
                continue;
            }
            if let Some(part) = broker.replicas.get(&topic.topic_id, p.partition) {
                wanted
                    .entry(p.leader)
                    .or_default()
                    .insert((topic.topic_id, p.partition), part);
            }
        }
    }
    fetchers.retain(|leader, f| {
        let keep = wanted.contains_key(leader);
        if !keep {
            let _ = f.stop.send(true);
            f.wake.notify_one();
        }
        keep
    });
    for (leader, partitions) in wanted {
        let f = fetchers.entry(leader).or_insert_with(|| {
            let assigned = Arc::new(Mutex::new(Assigned::default()));
            let wake = Arc::new(Notify::new());
            let (stop, stopped) = watch::channel(false);
            tokio::spawn(fetch_loop(
                broker.clone(),
                leader,
                assigned.clone(),
                wake.clone(),
                stopped,
            ));
            Fetcher {
                assigned,
                wake,
                stop,
            }
        });
        let mut a = lock(&f.assigned);
        let added = partitions.keys().any(|k| !a.partitions.contains_key(k));
        a.partitions = partitions;
        // New metadata: refused partitions may try again at once.
        a.paused.clear();
        drop(a);
        if added {
            f.wake.notify_one();
        }
    }
}

/// One leader's fetcher.
async fn fetch_loop(
    broker: Arc<Broker>,
    leader: i32,
    assigned: Arc<Mutex<Assigned>>,
    wake: Arc<Notify>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut conn: Option<Connection> = None;
    loop {
        if *stopped.borrow() {
            return;
        }
        let active: Vec<(Key, Arc<Partition>)> = {
            let mut a = lock(&assigned);
            let now = Instant::now();
            a.paused.retain(|_, until| *until > now);
            let paused = a.paused.clone();
            a.partitions
                .iter()
                .filter(|(k, _)| !paused.contains_key(*k))
                .map(|(k, p)| (*k, p.clone()))
                .collect()
        };
        if active.is_empty() {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(REPLICA_FETCH_BACKOFF) => {}
                _ = stopped.changed() => return,
            }
            continue;
        }
        let c = match &conn {
            Some(c) => c,
            None => match connect(&broker, leader).await {
                Some(c) => conn.insert(c),
                None => {
                    tokio::select! {
                        _ = tokio::time::sleep(REPLICA_FETCH_BACKOFF) => {}
                        _ = stopped.changed() => return,
                    }
                    continue;
                }
            },
        };
        let outcome = tokio::select! {
            r = fetch_once(&broker, c, &active, &assigned) => r,
            _ = stopped.changed() => return,
        };
        if let Err(e) = outcome {
            tracing::debug!(leader, error = %e, "replica fetch failed; reconnecting");
            conn = None;
            tokio::select! {
                _ = tokio::time::sleep(REPLICA_FETCH_BACKOFF) => {}
                _ = stopped.changed() => return,
            }
        }
    }
}

async fn connect(broker: &Broker, leader: i32) -> Option<Connection> {
    let image = broker.image();
    let b = image.brokers.get(&leader).filter(|b| !b.fenced)?;
    let addr = format!("{}:{}", b.host, b.port);
    match tokio::time::timeout(Duration::from_secs(5), Connection::connect(&addr)).await {
        Ok(Ok(c)) => Some(c),
        Ok(Err(e)) => {
            tracing::debug!(leader, %addr, error = %e, "replica fetcher could not connect");
            None
        }
        Err(_) => None,
    }
}

/// One fetch round: request, answer, appends and truncations.
async fn fetch_once(
    broker: &Arc<Broker>,
    conn: &Connection,
    active: &[(Key, Arc<Partition>)],
    assigned: &Arc<Mutex<Assigned>>,
) -> Result<(), String> {
    let parts = active.to_vec();
    let positions = tokio::task::spawn_blocking(move || {
        parts
            .iter()
            .map(|(k, p)| (*k, p.clone(), p.fetch_position()))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| e.to_string())?;
    let mut topics: Vec<FetchTopic> = Vec::new();
    // Per partition: its fetch offset and the leader epoch the request named.
    let mut sent: HashMap<Key, (Arc<Partition>, Offset, LeaderEpoch)> = HashMap::new();
    for (key, part, position) in positions {
        let Ok(position) = position else {
            continue;
        };
        let fetch_offset = position.fetch_offset;
        let epoch = LeaderEpoch(part.leader_epoch());
        let fp = FetchPartition::default()
            .with_partition(key.1)
            .with_current_leader_epoch(epoch.0)
            .with_fetch_offset(fetch_offset.0)
            .with_last_fetched_epoch(position.last_fetched_epoch.0)
            .with_log_start_offset(position.log_start_offset.0)
            .with_partition_max_bytes(REPLICA_FETCH_MAX_BYTES);
        match topics.iter_mut().find(|t| t.topic_id == key.0) {
            Some(t) => t.partitions.push(fp),
            None => topics.push(
                FetchTopic::default()
                    .with_topic_id(key.0)
                    .with_partitions(vec![fp]),
            ),
        }
        sent.insert(key, (part, fetch_offset, epoch));
    }
    if sent.is_empty() {
        // No partition could say where it stands (its log failed): wait
        // rather than spin.
        tokio::time::sleep(REPLICA_FETCH_BACKOFF).await;
        return Ok(());
    }
    let req = FetchRequest::default()
        .with_replica_state(
            ReplicaState::default()
                .with_replica_id(BrokerId(broker.config.node_id))
                .with_replica_epoch(broker.broker_epoch()),
        )
        .with_max_wait_ms(REPLICA_FETCH_WAIT_MAX_MS)
        .with_min_bytes(1)
        .with_max_bytes(REPLICA_FETCH_RESPONSE_MAX_BYTES)
        .with_topics(topics);
    let pending = conn
        .send_version(&req, FETCH_VERSION)
        .await
        .map_err(|e| e.to_string())?;
    let resp: FetchResponse = tokio::time::timeout(FETCH_ANSWER_TIMEOUT, pending.recv())
        .await
        .map_err(|_| "no fetch answer in time".to_string())?
        .map_err(|e| e.to_string())?;
    if resp.error_code != 0 {
        return Err(format!("fetch error {}", resp.error_code));
    }
    let mut out_of_range: Vec<(Arc<Partition>, Offset, LeaderEpoch)> = Vec::new();
    let mut refused: Vec<Key> = Vec::new();
    let mut work = Vec::new();
    for t in resp.responses {
        for p in t.partitions {
            let key = (t.topic_id, p.partition_index);
            let Some((part, fetch_offset, epoch)) = sent.get(&key).cloned() else {
                continue;
            };
            // The partition changed hands while the fetch was out (Kafka's
            // fetcher drops such answers): the next round starts afresh.
            if part.leader_epoch() != epoch.0 || part.is_leader() {
                continue;
            }
            match p.error_code {
                0 => work.push((key, part, fetch_offset, epoch, p)),
                code if code == ResponseError::OffsetOutOfRange.code() => {
                    out_of_range.push((part, fetch_offset, epoch))
                }
                code => {
                    tracing::debug!(topic = %part.topic, partition = part.index, code, "leader refused a replica fetch");
                    refused.push(key);
                }
            }
        }
    }
    if !refused.is_empty() {
        let until = Instant::now() + REPLICA_FETCH_BACKOFF;
        let mut a = lock(assigned);
        for k in refused {
            a.paused.insert(k, until);
        }
    }
    if !work.is_empty() {
        let failed = tokio::task::spawn_blocking(move || {
            let mut failed = Vec::new();
            for (key, part, fetch_offset, epoch, p) in work {
                if let Err(e) = apply_answer(&part, fetch_offset, epoch, &p) {
                    tracing::warn!(topic = %part.topic, partition = part.index, error = %e, "follower append failed");
                    failed.push(key);
                }
            }
            failed
        })
        .await
        .map_err(|e| e.to_string())?;
        // A partition whose log refused the leader's answer waits a backoff
        // instead of refetching the same bytes at once.
        if !failed.is_empty() {
            let until = Instant::now() + REPLICA_FETCH_BACKOFF;
            let mut a = lock(assigned);
            for k in failed {
                a.paused.insert(k, until);
            }
        }
    }
    for (part, fetch_offset, epoch) in out_of_range {
        tokio::time::timeout(
            FETCH_ANSWER_TIMEOUT,
            handle_out_of_range(conn, broker.config.node_id, &part, fetch_offset, epoch),
        )
        .await
        .map_err(|_| "no ListOffsets answer in time".to_string())??;
    }
    Ok(())
}

/// A partition's answer (blocking): truncate to a diverging epoch's end,
/// or append the records and follow the leader's high watermark and log
/// start offset.
fn apply_answer(
    part: &Partition,
    fetch_offset: Offset,
    epoch: LeaderEpoch,
    p: &kafka_protocol::messages::fetch_response::PartitionData,
) -> Result<(), String> {
    if p.diverging_epoch.epoch >= 0 {
        // Kafka's getOffsetTruncationState.
        let leader_epoch = LeaderEpoch(p.diverging_epoch.epoch);
        let leader_end = Offset(p.diverging_epoch.end_offset);
        let (mine, my_end) = part
            .end_offset_for_epoch(leader_epoch)
            .map_err(|e| e.to_string())?;
        let target = if mine.0 < 0 || my_end.0 < 0 {
            leader_end.min(fetch_offset)
        } else if mine == leader_epoch {
            my_end.min(leader_end).min(fetch_offset)
        } else {
            my_end.min(fetch_offset)
        };
        tracing::info!(topic = %part.topic, partition = part.index, from = %fetch_offset, to = %target, leader_epoch = %leader_epoch, "truncating a divergent log tail");
        return part.truncate_to(epoch, target).map_err(|e| e.to_string());
    }
    let records = p.records.clone().unwrap_or_default();
    // The answer may start before the fetch offset (a batch holding it);
    // skip batches this log has.
    let start = first_batch_at(&records, fetch_offset.0);
    part.on_leader_answer(
        epoch,
        &records[start..],
        Offset(p.high_watermark),
        Offset(p.log_start_offset),
    )
    .map_err(|e| e.to_string())
}

/// The position of the first batch ending at or after `offset`.
fn first_batch_at(records: &[u8], offset: i64) -> usize {
    let mut at = 0;
    for item in felice_wire::Batches::new(records) {
        let Ok((range, h)) = item else { break };
        if h.next_offset() > offset {
            return range.start;
        }
        at = range.end;
    }
    at.min(records.len())
}

/// OFFSET_OUT_OF_RANGE: the leader's log ends before the fetch offset
/// (truncate to its end) or starts after it (start over at its start), as
/// Kafka's `handleOutOfRangeError`. Asked as replica `me`, so LATEST is
/// the leader's log end offset.
async fn handle_out_of_range(
    conn: &Connection,
    me: i32,
    part: &Arc<Partition>,
    fetch_offset: Offset,
    epoch: LeaderEpoch,
) -> Result<(), String> {
    let ends = |ts: i64| {
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(me))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from(part.topic.clone())))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(part.index)
                    .with_current_leader_epoch(part.leader_epoch())
                    .with_timestamp(ts)])])
    };
    let ask = |req: ListOffsetsRequest| async move {
        let r = conn
            .send_version(&req, 7)
            .await
            .map_err(|e| e.to_string())?
            .recv()
            .await
            .map_err(|e| e.to_string())?;
        let p = r
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| "empty ListOffsets answer".to_string())?;
        if p.error_code != 0 {
            return Err(format!("ListOffsets error {}", p.error_code));
        }
        Ok::<Offset, String>(Offset(p.offset))
    };
    let latest = ask(ends(-1)).await?;
    let part = part.clone();
    if latest < fetch_offset {
        tracing::info!(topic = %part.topic, partition = part.index, from = %fetch_offset, to = %latest, "truncating to the leader's end");
        tokio::task::spawn_blocking(move || part.truncate_to(epoch, latest))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    } else {
        let earliest = ask(ends(-2)).await?;
        tracing::info!(topic = %part.topic, partition = part.index, at = %earliest, "starting over at the leader's log start");
        tokio::task::spawn_blocking(move || part.truncate_fully_and_start_at(epoch, earliest))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }
}
