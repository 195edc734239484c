//! `felice bench`: an end-to-end producer/consumer load generator for any
//! Kafka-compatible broker, printing throughput, end-to-end latency percentiles and
//! (with `--broker-pid`) the broker's resident memory.
//!
//! Shape of a run: create the topic if missing and wait for its leaders; note each
//! partition's start offset (log end, or log start with `--consume-only`); start the
//! consumers, then the producers; when the producers are done, ListOffsets gives each
//! partition's end offset and the consumers stop on reaching it (or after
//! `--idle-timeout` seconds without progress).
//!
//! Producers: one task and one connection per leader each; batches go round-robin over
//! the partitions, one partition per Produce request, at most `--max-in-flight`
//! unanswered requests per producer. A batch is encoded once
//! ([`BatchTemplate`]) and re-stamped per send. With `--rate`, a producer sends each
//! batch at its scheduled time; when it is behind schedule (window full, broker slow)
//! it stamps the batch with the scheduled time, not the actual send time, so a stalled
//! broker shows up as latency instead of silently lowering the offered load (no
//! coordinated omission). A batch then holds at most [`RATE_LINGER`] worth of records,
//! like a Kafka producer's `linger.ms`.
//!
//! Consumers: partition `p` belongs to consumer `p % consumers`; each consumer fetches
//! (one request in flight per leader, `min_bytes` 1, 500 ms max wait) and measures the
//! end-to-end latency of every batch (receipt time minus the stamp in its first record),
//! weighting it by the batch's record count. Latencies live in a log-linear
//! [`Histogram`] of fixed size (< 1% error), so memory does not grow with the run.
//!
//! Clocks: all durations use `Instant` (monotonic); stamps are nanoseconds since the
//! run's epoch `Instant`, so producer and consumer must be this process. Record
//! timestamps are wall-clock ms (brokers check them) and are not used for latency.
//!
//! Two other modes share the flags: `--loopback` ([`loopback`]) measures this machine's
//! one-stream TCP bandwidth, the ceiling to hold broker throughput against;
//! `--idle-connections N` ([`idle`]) measures the broker's memory per idle client;
//! `--group-bench` ([`groups`]) measures rebalance latency, offset commits per
//! second and memory per consumer group.

mod groups;
mod idle;
mod loopback;
mod producer_ids;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bytes::Bytes;
use felice_client::api::{EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
use felice_client::limits::MAX_IN_FLIGHT_PER_CONNECTION;
use felice_client::{
    summarize_batches, BatchTemplate, ClientError, Compression, Connection, FetchPartition,
    Idempotence, ProduceFuture, ResponseError, SendStamp, TopicInfo, TopicRef, STAMP_LEN,
};
use tokio::sync::watch;

const USAGE: &str = "\
felice bench: produce and consume against a Kafka-compatible broker

usage: felice bench --bootstrap HOST:PORT [options]
       felice bench --bootstrap HOST:PORT --idle-connections N [--idle-hold SECS]
                    [--broker-pid PID]
       felice bench --loopback [--duration SECS] [--buffer-bytes N]
       felice bench --bootstrap HOST:PORT --group-bench [--members 2,10,100]
                    [--groups N --broker-pid PID] [--duration SECS]

  --bootstrap HOST:PORT   broker to connect to (required)
  --topic NAME            topic, created if missing (default felice-bench)
  --partitions N          partitions when creating the topic (default 1)
  --replication-factor N  replication factor when creating it (default -1: broker's)
  --producers N           producer tasks, one connection each (default 1)
  --consumers N           consumer tasks, one connection each per leader (default 1;
                          0 = produce only); partition p goes to consumer
                          p % N, so N consumers on N partitions get one each
  --records N             records to produce in total (default 1000000)
  --duration SECS         produce for this long; with --records, stop at whichever
                          comes first
  --record-size BYTES     value size (default 100; >= 16 for latency figures)
  --batch-bytes BYTES     payload per produce request (default 16384)
  --acks 0|1|all          producer acks (default 1)
  --compression C         none|gzip|snappy|lz4|zstd (default none)
  --rate N                records/s over all producers, 0 = unlimited (default 0)
  --max-in-flight N       unanswered produce requests per producer (default 5)
  --idempotent            idempotent producers, as Kafka's enable.idempotence: each
                          producer gets a producer id (InitProducerId) and numbers
                          its batches per partition; needs --acks all and at most
                          5 in flight
  --fetch-partition-bytes N
                          consumers' per-partition fetch limit, Kafka's
                          max.partition.fetch.bytes (default 1048576, raised to one
                          batch when producing larger batches: a broker sends a
                          batch larger than the limit only for the first partition)
  --idle-timeout SECS     consumers give up after this long without progress once
                          production has ended (default 10)
  --broker-pid PID        sample this process's VmRSS every 100 ms
  --consume-only          only consume the topic, from its log start to its
                          current end
  --idle-connections N    instead of producing: open N connections that each
                          complete one ApiVersions round trip, hold them idle,
                          print idle_connections=N broker_rss_mb=... (with
                          --broker-pid), close them
  --idle-hold SECS        how long to hold them (default 5)
  --loopback              instead of talking to a broker: one TCP stream over
                          127.0.0.1 for --duration seconds (default 5), sender
                          writing --buffer-bytes buffers, receiver discarding;
                          prints loopback one-stream GB/s=...
  --buffer-bytes N        loopback write/read buffer (default 1048576)
  --group-bench           instead of producing: the group coordinator's figures:
                          rebalance latency for each --members size, offset
                          commits per second for --duration (default 5 s), and
                          with --groups N the broker's RSS for N groups
                          (--broker-pid; run the broker with
                          group.initial.rebalance.delay.ms=0)
  --producer-ids N        instead of producing: N idempotent producers each take an
                          id and write one batch to every partition of --topic
                          (--partitions when creating it); with --broker-pid,
                          the broker's RSS growth per remembered producer
  --members LIST          group sizes for --group-bench (default 2,10,100)
  --groups N              groups to create for the memory figure (default 0)
  -h, --help              print this help

Latency is end to end: from a batch's send time (its scheduled time with --rate) to
its receipt by a consumer. MB/s and GB/s count value bytes, 1 MB = 10^6 bytes,
1 GB = 10^9 bytes; memory (RSS) is in MiB, 2^20 bytes (broker_rss_mb too).
";

/// With `--rate`, a batch holds at most this long's worth of one producer's records
/// (the role of Kafka's `linger.ms`), so low rates still send small batches often.
const RATE_LINGER: Duration = Duration::from_millis(5);
/// Consumers' Fetch parameters (Kafka consumer defaults: fetch.max.wait.ms,
/// fetch.max.bytes, max.partition.fetch.bytes).
const FETCH_MAX_WAIT_MS: i32 = 500;
const FETCH_MAX_BYTES: i32 = 50 * 1024 * 1024;
const FETCH_PARTITION_MAX_BYTES: i32 = 1024 * 1024;
/// Pause before fetching again after a retriable partition error.
const FETCH_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// Produce request timeout.
const PRODUCE_TIMEOUT_MS: i32 = 30_000;
/// How long to wait for a new topic's partitions to get leaders.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often `--broker-pid` is sampled.
const RSS_SAMPLE_PERIOD: Duration = Duration::from_millis(100);
/// Kafka's default `message.max.bytes` (1 MiB + 12), the largest batch a default
/// broker accepts; a bigger `--batch-bytes` batch gets a warning.
const KAFKA_DEFAULT_MESSAGE_MAX_BYTES: usize = 1_048_588;
/// How often progress goes to stderr.
const PROGRESS_PERIOD: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------
// Options

/// How much to produce: a record count, a duration, or both (whichever ends first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Amount {
    records: Option<u64>,
    duration: Option<Duration>,
}

/// Kafka's producer keeps at most 5 requests in flight per partition with
/// idempotence: the broker remembers each producer's last 5 batches.
const MAX_IDEMPOTENT_IN_FLIGHT: usize = 5;

/// `--loopback` runs this long without `--duration`.
const LOOPBACK_DEFAULT_DURATION: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Options {
    bootstrap: String,
    topic: String,
    partitions: i32,
    replication_factor: i16,
    producers: usize,
    consumers: usize,
    amount: Amount,
    record_size: usize,
    batch_bytes: usize,
    acks: i16,
    compression: Compression,
    rate: u64,
    max_in_flight: usize,
    idempotent: bool,
    fetch_partition_bytes: Option<i32>,
    idle_timeout: Duration,
    broker_pid: Option<u32>,
    consume_only: bool,
    loopback: bool,
    buffer_bytes: usize,
    idle_connections: usize,
    idle_hold: Duration,
    group_bench: bool,
    members: Vec<usize>,
    groups: usize,
    producer_ids: usize,
}

impl Options {
    fn defaults(bootstrap: String) -> Options {
        Options {
            bootstrap,
            topic: "felice-bench".into(),
            partitions: 1,
            replication_factor: -1,
            producers: 1,
            consumers: 1,
            amount: Amount {
                records: Some(1_000_000),
                duration: None,
            },
            record_size: 100,
            batch_bytes: 16384,
            acks: 1,
            compression: Compression::None,
            rate: 0,
            max_in_flight: 5,
            idempotent: false,
            fetch_partition_bytes: None,
            idle_timeout: Duration::from_secs(10),
            broker_pid: None,
            consume_only: false,
            loopback: false,
            buffer_bytes: 1024 * 1024,
            idle_connections: 0,
            idle_hold: Duration::from_secs(5),
            group_bench: false,
            members: vec![2, 10, 100],
            groups: 0,
            producer_ids: 0,
        }
    }

    /// Records in one full batch of one producer.
    fn records_per_batch(&self) -> usize {
        let by_bytes = (self.batch_bytes / self.record_size.max(1)).max(1);
        if self.rate == 0 {
            return by_bytes;
        }
        let per_producer = self.rate as f64 / self.producers.max(1) as f64;
        let by_linger = (per_producer * RATE_LINGER.as_secs_f64()).ceil().max(1.0) as usize;
        by_bytes.min(by_linger)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Help,
    Run(Box<Options>),
}

fn parse_args(args: &[String]) -> anyhow::Result<Parsed> {
    fn num<T: std::str::FromStr>(flag: &str, v: &str) -> anyhow::Result<T> {
        v.parse()
            .map_err(|_| anyhow::anyhow!("{flag}: not a valid number: {v:?}"))
    }
    let mut bootstrap = None;
    let mut o = Options::defaults(String::new());
    let mut records = None;
    let mut duration = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> anyhow::Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("{flag} needs a value")),
            }
        };
        match flag {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--bootstrap" => bootstrap = Some(value()?),
            "--topic" => o.topic = value()?,
            "--partitions" => o.partitions = num(flag, &value()?)?,
            "--replication-factor" => o.replication_factor = num(flag, &value()?)?,
            "--producers" => o.producers = num(flag, &value()?)?,
            "--consumers" => o.consumers = num(flag, &value()?)?,
            "--records" => records = Some(num::<u64>(flag, &value()?)?),
            "--duration" => duration = Some(num::<f64>(flag, &value()?)?),
            "--record-size" => o.record_size = num(flag, &value()?)?,
            "--batch-bytes" => o.batch_bytes = num(flag, &value()?)?,
            "--acks" => {
                o.acks = match value()?.as_str() {
                    "0" => 0,
                    "1" => 1,
                    "all" | "-1" => -1,
                    v => bail!("--acks: expected 0, 1 or all, got {v:?}"),
                }
            }
            "--compression" => o.compression = parse_compression(&value()?)?,
            "--rate" => o.rate = num(flag, &value()?)?,
            "--max-in-flight" => o.max_in_flight = num(flag, &value()?)?,
            "--idempotent" => o.idempotent = true,
            "--fetch-partition-bytes" => {
                let n: i32 = num(flag, &value()?)?;
                if n < 1 {
                    bail!("--fetch-partition-bytes must be at least 1");
                }
                o.fetch_partition_bytes = Some(n);
            }
            "--idle-timeout" => {
                let secs: f64 = num(flag, &value()?)?;
                o.idle_timeout = duration_from_secs(flag, secs)?;
            }
            "--broker-pid" => o.broker_pid = Some(num(flag, &value()?)?),
            "--consume-only" => o.consume_only = true,
            "--loopback" => o.loopback = true,
            "--buffer-bytes" => o.buffer_bytes = num(flag, &value()?)?,
            "--idle-connections" => o.idle_connections = num(flag, &value()?)?,
            "--idle-hold" => {
                let secs: f64 = num(flag, &value()?)?;
                o.idle_hold = duration_from_secs(flag, secs)?;
            }
            "--group-bench" => o.group_bench = true,
            "--members" => {
                o.members = value()?
                    .split(',')
                    .map(|v| num(flag, v.trim()))
                    .collect::<anyhow::Result<Vec<usize>>>()?;
                if o.members.iter().any(|m| *m < 2) {
                    bail!("--members: every size must be at least 2");
                }
            }
            "--groups" => o.groups = num(flag, &value()?)?,
            "--producer-ids" => o.producer_ids = num(flag, &value()?)?,
            other => bail!("unknown argument {other:?} (see felice bench --help)"),
        }
    }
    if o.loopback {
        if o.idle_connections > 0 {
            bail!("--loopback and --idle-connections are separate runs");
        }
        if o.buffer_bytes < 1 {
            bail!("--buffer-bytes must be at least 1");
        }
        o.bootstrap = bootstrap.unwrap_or_default();
    } else {
        o.bootstrap =
            bootstrap.ok_or_else(|| anyhow::anyhow!("--bootstrap HOST:PORT is required"))?;
    }
    if records.is_some() || duration.is_some() {
        o.amount = Amount {
            records,
            duration: duration
                .map(|secs| duration_from_secs("--duration", secs))
                .transpose()?,
        };
    }
    if o.partitions < 1 {
        bail!("--partitions must be at least 1");
    }
    if o.producers < 1 {
        bail!("--producers must be at least 1");
    }
    if o.record_size < 1 {
        bail!("--record-size must be at least 1");
    }
    if o.batch_bytes < 1 {
        bail!("--batch-bytes must be at least 1");
    }
    if !(1..=MAX_IN_FLIGHT_PER_CONNECTION).contains(&o.max_in_flight) {
        bail!("--max-in-flight must be between 1 and {MAX_IN_FLIGHT_PER_CONNECTION}");
    }
    if o.consume_only && o.consumers == 0 {
        bail!("--consume-only needs at least one consumer");
    }
    if o.idempotent && (o.acks != -1 || o.max_in_flight > MAX_IDEMPOTENT_IN_FLIGHT) {
        // Kafka's producer refuses the same combinations.
        bail!(
            "--idempotent needs --acks all and --max-in-flight at most {MAX_IDEMPOTENT_IN_FLIGHT}"
        );
    }
    Ok(Parsed::Run(Box::new(o)))
}

fn duration_from_secs(flag: &str, secs: f64) -> anyhow::Result<Duration> {
    if !(secs.is_finite() && secs > 0.0 && secs < 1e9) {
        bail!("{flag}: expected a positive number of seconds, got {secs}");
    }
    Ok(Duration::from_secs_f64(secs))
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
    }
}

fn parse_compression(v: &str) -> anyhow::Result<Compression> {
    Ok(match v {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        _ => bail!("--compression: expected none, gzip, snappy, lz4 or zstd, got {v:?}"),
    })
}

// ---------------------------------------------------------------------------------
// Histogram

/// Log-linear histogram of nanosecond values (HdrHistogram's layout): values below
/// 2^SUB_BITS are exact; above, each power of two is split into 2^(SUB_BITS-1) equal
/// buckets, so a bucket is at most 1/128 of its values wide (< 0.8% error). Fixed size:
/// about 7,000 buckets (57 KiB) cover the whole u64 range.
#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
}

const SUB_BITS: u32 = 8;
const SUB_COUNT: usize = 1 << SUB_BITS;
const HALF_SUB_COUNT: usize = SUB_COUNT / 2;
const BUCKETS: usize = SUB_COUNT + (64 - SUB_BITS as usize) * HALF_SUB_COUNT;

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < SUB_COUNT as u64 {
            return v as usize;
        }
        let msb = 63 - v.leading_zeros(); // >= SUB_BITS
        let shift = msb - (SUB_BITS - 1); // >= 1
        let sub = (v >> shift) as usize; // in [HALF_SUB_COUNT, SUB_COUNT)
        SUB_COUNT + (shift as usize - 1) * HALF_SUB_COUNT + (sub - HALF_SUB_COUNT)
    }

    /// The largest value that maps to bucket `i`.
    fn highest_in(i: usize) -> u64 {
        if i < SUB_COUNT {
            return i as u64;
        }
        let shift = ((i - SUB_COUNT) / HALF_SUB_COUNT + 1) as u32;
        let sub = ((i - SUB_COUNT) % HALF_SUB_COUNT + HALF_SUB_COUNT) as u64;
        let low = sub << shift;
        low.saturating_add((1u64 << shift) - 1)
    }

    fn record_n(&mut self, v: u64, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(c) = self.counts.get_mut(Self::index(v)) {
            *c += n;
        }
        self.total += n;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0..=1): the smallest recorded value v such that at
    /// least `ceil(q * total)` values are <= v, reported as its bucket's upper bound and
    /// clamped to the observed min and max. `None` when empty.
    fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::highest_in(i).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

// ---------------------------------------------------------------------------------
// Broker memory

fn read_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples a process's VmRSS on its own thread (reading /proc blocks, briefly).
struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(u64, u64)>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut peak, mut samples) = (0u64, 0u64);
            while !flag.load(Ordering::Relaxed) {
                if let Some(kib) = read_rss_kib(pid) {
                    peak = peak.max(kib);
                    samples += 1;
                }
                std::thread::sleep(RSS_SAMPLE_PERIOD);
            }
            (peak, samples)
        });
        RssSampler { stop, handle }
    }

    /// Peak KiB and sample count.
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or((0, 0))
    }
}

// ---------------------------------------------------------------------------------
// Run

pub fn main(args: Vec<String>) -> anyhow::Result<()> {
    let opts = match parse_args(&args)? {
        Parsed::Help => {
            print!("{USAGE}");
            return Ok(());
        }
        Parsed::Run(o) => *o,
    };
    if opts.loopback {
        let duration = opts.amount.duration.unwrap_or(LOOPBACK_DEFAULT_DURATION);
        return loopback::run(duration, opts.buffer_bytes);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    if opts.group_bench {
        let duration = opts.amount.duration.unwrap_or(LOOPBACK_DEFAULT_DURATION);
        return runtime.block_on(groups::run(
            &opts.bootstrap,
            &opts.topic,
            &opts.members,
            opts.groups,
            duration,
            opts.broker_pid,
        ));
    }
    if opts.producer_ids > 0 {
        return runtime.block_on(producer_ids::run(
            &opts.bootstrap,
            &opts.topic,
            opts.partitions,
            opts.producer_ids,
            opts.broker_pid,
        ));
    }
    if opts.idle_connections > 0 {
        return runtime.block_on(idle::run(
            &opts.bootstrap,
            opts.idle_connections,
            opts.idle_hold,
            opts.broker_pid,
        ));
    }
    runtime.block_on(run(opts))
}

/// Shared, read-only facts of a run.
struct Run {
    opts: Options,
    topic: TopicInfo,
    epoch: Instant,
    run_id: u64,
    produced: AtomicU64,
    consumed: AtomicU64,
    /// Per-partition fetch limit of the consumers.
    fetch_partition_bytes: i32,
}

impl Run {
    /// The address to reach broker `node`. With a single broker the bootstrap address
    /// is used, which also works when the advertised host is not reachable from here.
    fn addr(&self, node: i32) -> anyhow::Result<String> {
        if self.topic.brokers.len() == 1 {
            return Ok(self.opts.bootstrap.clone());
        }
        self.topic
            .broker_addr(node)
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("broker {node} is not in the metadata"))
    }

    fn leader(&self, partition: i32) -> anyhow::Result<i32> {
        self.topic
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .map(|p| p.leader)
            .ok_or_else(|| anyhow::anyhow!("partition {partition} is not in the metadata"))
    }

    fn stamp_now(&self, at: Instant) -> SendStamp {
        SendStamp {
            run_id: self.run_id,
            nanos: at.saturating_duration_since(self.epoch).as_nanos() as u64,
        }
    }
}

async fn run(opts: Options) -> anyhow::Result<()> {
    if let Some(pid) = opts.broker_pid {
        match read_rss_kib(pid) {
            Some(kib) => println!("broker idle RSS: {:.1} MiB", kib as f64 / 1024.0),
            None => bail!("--broker-pid {pid}: cannot read /proc/{pid}/status"),
        }
    }
    let boot = Connection::connect(&opts.bootstrap)
        .await
        .with_context(|| format!("connecting to {}", opts.bootstrap))?;
    let topic = ensure_topic(&boot, &opts).await?;
    let partitions: Vec<i32> = topic.partitions.iter().map(|p| p.partition).collect();
    if !opts.consume_only && partitions.len() != opts.partitions as usize {
        eprintln!(
            "note: topic {} exists with {} partitions; using them all",
            opts.topic,
            partitions.len()
        );
    }

    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ ((std::process::id() as u64) << 32);
    let mut run = Run {
        opts,
        topic,
        epoch: Instant::now(),
        run_id,
        produced: AtomicU64::new(0),
        consumed: AtomicU64::new(0),
        fetch_partition_bytes: FETCH_PARTITION_MAX_BYTES,
    };
    // Built before the consumers start, whose fetch limit must hold one batch.
    let template = if run.opts.consume_only {
        None
    } else {
        let template = make_template(&run, run.opts.records_per_batch())?;
        let batch_len = template.render(run.stamp_now(Instant::now()), 0)?.len();
        if batch_len > KAFKA_DEFAULT_MESSAGE_MAX_BYTES {
            eprintln!(
                "note: one batch is {batch_len} bytes, more than Kafka's default \
                 message.max.bytes ({KAFKA_DEFAULT_MESSAGE_MAX_BYTES}); a broker with that \
                 default rejects it (MessageTooLarge): lower --batch-bytes or raise the limit"
            );
        }
        run.fetch_partition_bytes = run
            .fetch_partition_bytes
            .max(i32::try_from(batch_len).unwrap_or(i32::MAX));
        Some(Arc::new(template))
    };
    if let Some(n) = run.opts.fetch_partition_bytes {
        run.fetch_partition_bytes = n;
    }
    let run = Arc::new(run);
    let opts = &run.opts;

    let start_offsets = list_offsets(
        &run,
        &partitions,
        if opts.consume_only {
            EARLIEST_TIMESTAMP
        } else {
            LATEST_TIMESTAMP
        },
    )
    .await
    .context("reading start offsets")?;

    print_header(&run);
    let sampler = opts.broker_pid.map(RssSampler::start);
    let progress = tokio::spawn(report_progress(run.clone()));

    // Consumers first, so they are waiting when the first batch lands.
    let (targets_tx, targets_rx) = watch::channel(None);
    if opts.consume_only {
        let ends = list_offsets(&run, &partitions, LATEST_TIMESTAMP).await?;
        targets_tx.send_replace(Some(Arc::new(ends)));
    }
    let mut consumers = Vec::new();
    let mut idle_consumers = 0usize;
    for c in 0..opts.consumers {
        let mine: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|p| *p as usize % opts.consumers == c)
            .collect();
        if mine.is_empty() {
            idle_consumers += 1;
            continue;
        }
        let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
        for p in mine {
            let start = start_offsets.get(&p).copied().unwrap_or(0);
            by_leader
                .entry(run.leader(p)?)
                .or_default()
                .push((p, start));
        }
        for (leader, parts) in by_leader {
            let conn = Connection::connect(&run.addr(leader)?)
                .await
                .context("consumer connect")?;
            consumers.push((
                c,
                tokio::spawn(consume(run.clone(), conn, parts, targets_rx.clone())),
            ));
        }
    }

    let mut producers = Vec::new();
    if let Some(template) = template {
        for i in 0..opts.producers {
            let quota = Amount {
                records: opts.amount.records.map(|n| {
                    let per = n / opts.producers as u64;
                    per + u64::from((i as u64) < n % opts.producers as u64)
                }),
                duration: opts.amount.duration,
            };
            let mine: Vec<i32> = (0..partitions.len())
                .map(|k| partitions[(k + i) % partitions.len()])
                .collect();
            producers.push(tokio::spawn(produce(
                run.clone(),
                template.clone(),
                mine,
                quota,
            )));
        }
    }

    let mut produced = ProducerStats::new();
    for p in producers {
        produced.merge(p.await.context("producer task")??);
    }
    if !opts.consume_only && opts.consumers > 0 {
        let ends = list_offsets(&run, &partitions, LATEST_TIMESTAMP)
            .await
            .context("reading end offsets")?;
        targets_tx.send_replace(Some(Arc::new(ends)));
    }
    // One entry per consumer (a consumer has one task per leader it fetches from).
    let mut per_consumer: BTreeMap<usize, ConsumerStats> = BTreeMap::new();
    for (c, task) in consumers {
        let stats = task.await.context("consumer task")??;
        per_consumer
            .entry(c)
            .or_insert_with(ConsumerStats::new)
            .merge(stats);
    }
    progress.abort();
    let rss = sampler.map(RssSampler::finish);
    let mut consumed = ConsumerStats::new();
    let mut consumer_rates = Vec::new();
    for stats in per_consumer.into_values() {
        if let Some(secs) = span_secs(stats.first_fetch, stats.last_receipt) {
            consumer_rates.push(stats.value_bytes as f64 / 1e6 / secs);
        }
        consumed.merge(stats);
    }
    print_report(&run, &produced, &consumed, rss);
    if opts.consumers > 1 {
        print_consumer_spread(&mut consumer_rates, idle_consumers);
    }
    print_gbps(&run, &produced, &consumed);
    Ok(())
}

async fn ensure_topic(boot: &Connection, opts: &Options) -> anyhow::Result<TopicInfo> {
    let mut created = false;
    let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
    loop {
        match boot.topic_info(&opts.topic).await {
            Ok(info) if info.is_ready() => return Ok(info),
            Ok(_) => {}
            Err(e) if e.kafka_error() == Some(ResponseError::UnknownTopicOrPartition) => {
                if opts.consume_only {
                    bail!("topic {} does not exist", opts.topic);
                }
                if !created {
                    match boot
                        .create_topics(&opts.topic, opts.partitions, opts.replication_factor, &[])
                        .await
                    {
                        Ok(()) => {}
                        Err(e) if e.kafka_error() == Some(ResponseError::TopicAlreadyExists) => {}
                        Err(e) => {
                            return Err(e).with_context(|| format!("creating {}", opts.topic))
                        }
                    }
                    created = true;
                }
            }
            Err(e) if e.kafka_error().is_some_and(|k| k.is_retriable()) => {}
            Err(e) => return Err(e).context("reading topic metadata"),
        }
        if Instant::now() > deadline {
            bail!(
                "topic {} has no leader for every partition after {:?}",
                opts.topic,
                TOPIC_READY_TIMEOUT
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// ListOffsets for `partitions`, asking each leader for its own.
async fn list_offsets(
    run: &Run,
    partitions: &[i32],
    timestamp: i64,
) -> anyhow::Result<HashMap<i32, i64>> {
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for &p in partitions {
        by_leader.entry(run.leader(p)?).or_default().push(p);
    }
    let mut out = HashMap::new();
    for (leader, parts) in by_leader {
        let conn = Connection::connect(&run.addr(leader)?).await?;
        for (p, result) in conn
            .list_offsets(&run.opts.topic, &parts, timestamp)
            .await?
        {
            let offset =
                result.map_err(|e| anyhow::anyhow!("ListOffsets {}-{p}: {e}", run.opts.topic))?;
            out.insert(p, offset);
        }
    }
    Ok(out)
}

/// A full batch of random upper-case values (like Kafka's producer-perf-test).
fn make_template(run: &Run, records: usize) -> anyhow::Result<BatchTemplate> {
    let mut rng = run.run_id | 1;
    let values = (0..records)
        .map(|_| {
            let v: Vec<u8> = (0..run.opts.record_size)
                .map(|_| {
                    // xorshift64
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    b'A' + (rng % 26) as u8
                })
                .collect();
            Bytes::from(v)
        })
        .collect();
    BatchTemplate::new(values, run.opts.compression).context("encoding the record batch")
}

// ---------------------------------------------------------------------------------
// Producer

struct ProducerStats {
    records: u64,
    value_bytes: u64,
    requests: u64,
    errors: BTreeMap<String, u64>,
    first_send: Option<Instant>,
    last_done: Option<Instant>,
    ack_latency: Histogram,
}

impl ProducerStats {
    fn new() -> ProducerStats {
        ProducerStats {
            records: 0,
            value_bytes: 0,
            requests: 0,
            errors: BTreeMap::new(),
            first_send: None,
            last_done: None,
            ack_latency: Histogram::new(),
        }
    }

    fn merge(&mut self, o: ProducerStats) {
        self.records += o.records;
        self.value_bytes += o.value_bytes;
        self.requests += o.requests;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.first_send = min_opt(self.first_send, o.first_send);
        self.last_done = max_opt(self.last_done, o.last_done);
        self.ack_latency.merge(&o.ack_latency);
    }
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// A produce request awaiting its response. A small task per request waits for it so
/// that the arrival time is taken when the response arrives, not when the producer
/// next looks at its window.
struct InFlight {
    response: tokio::task::JoinHandle<(Result<i64, ClientError>, Instant)>,
    sent: Instant,
    records: u64,
    value_bytes: u64,
}

fn await_ack(
    response: ProduceFuture,
) -> tokio::task::JoinHandle<(Result<i64, ClientError>, Instant)> {
    tokio::spawn(async move {
        let result = response.recv().await;
        (result, Instant::now())
    })
}

async fn produce(
    run: Arc<Run>,
    template: Arc<BatchTemplate>,
    partitions: Vec<i32>,
    quota: Amount,
) -> anyhow::Result<ProducerStats> {
    let opts = &run.opts;
    let mut conns: HashMap<i32, Connection> = HashMap::new();
    for &p in &partitions {
        let leader = run.leader(p)?;
        if let std::collections::hash_map::Entry::Vacant(slot) = conns.entry(leader) {
            let conn = Connection::connect(&run.addr(leader)?)
                .await
                .context("producer connect")?;
            slot.insert(conn);
        }
    }
    let topic: TopicRef = run.topic.topic.clone();
    // One producer id per producer task, as one client instance has; batches
    // are numbered per partition from 0.
    let mut producer_id = None;
    if opts.idempotent {
        let conn = conns
            .values()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no connection for InitProducerId"))?;
        producer_id = Some(conn.init_producer_id().await.context("InitProducerId")?);
    }
    let mut sequences: HashMap<i32, i32> = HashMap::new();
    let mut stats = ProducerStats::new();
    let mut window: VecDeque<InFlight> = VecDeque::with_capacity(opts.max_in_flight);
    let mut tail: Option<BatchTemplate> = None;
    let per_record = match opts.rate {
        0 => None,
        r => Some(Duration::from_secs_f64(opts.producers as f64 / r as f64)),
    };
    let start = Instant::now();
    let deadline = quota.duration.map(|d| start + d);
    let mut sent_records = 0u64;
    let mut next_partition = 0usize;
    loop {
        let batch_records = match quota.records {
            Some(n) => (n - sent_records).min(template.record_count() as u64),
            None => template.record_count() as u64,
        };
        if batch_records == 0 {
            break;
        }
        // When this batch is due: records so far at the per-producer rate. Ahead of
        // schedule, we sleep and stamp the wake-up time (the timer's ~1 ms granularity
        // is ours, not the broker's); behind schedule, we stamp the due time, so time
        // lost waiting on the broker counts as latency.
        let scheduled = match per_record {
            Some(gap) => {
                let due = start + gap.mul_f64(sent_records as f64);
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                } else {
                    due
                }
            }
            None => Instant::now(),
        };
        if deadline.is_some_and(|d| scheduled >= d) {
            break;
        }
        let batch_template = if batch_records == template.record_count() as u64 {
            &*template
        } else {
            tail.get_or_insert(make_template(&run, batch_records as usize)?)
        };
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        // Parts: a stamped copy of the header, then the template's shared bytes,
        // written without copying them into the request frame.
        let partition = partitions[next_partition % partitions.len()];
        next_partition += 1;
        let producer = producer_id.map(|(producer_id, producer_epoch)| {
            let seq = sequences.entry(partition).or_insert(0);
            let base_sequence = *seq;
            *seq = next_sequence(base_sequence, batch_records);
            Idempotence {
                producer_id,
                producer_epoch,
                base_sequence,
            }
        });
        let batch = batch_template.render_parts_as(run.stamp_now(scheduled), wall_ms, producer)?;
        let conn = conns
            .get(&run.leader(partition)?)
            .ok_or_else(|| anyhow::anyhow!("no connection for partition {partition}"))?;

        while window.len() >= opts.max_in_flight {
            if let Some(done) = window.pop_front() {
                settle(&run, &mut stats, done).await?;
            }
        }
        let sent = Instant::now();
        stats.first_send.get_or_insert(sent);
        stats.requests += 1;
        let value_bytes = batch_template.payload_bytes() as u64;
        match conn
            .send_produce_parts(&topic, partition, &batch, opts.acks, PRODUCE_TIMEOUT_MS)
            .await?
        {
            Some(response) => window.push_back(InFlight {
                response: await_ack(response),
                sent,
                records: batch_records,
                value_bytes,
            }),
            None => {
                // acks=0: the write is all the acknowledgement there is.
                stats.records += batch_records;
                stats.value_bytes += value_bytes;
                stats.last_done = Some(Instant::now());
                run.produced.fetch_add(batch_records, Ordering::Relaxed);
            }
        }
        sent_records += batch_records;
    }
    while let Some(done) = window.pop_front() {
        settle(&run, &mut stats, done).await?;
    }
    if opts.acks == 0 {
        // A broker handles a connection's requests in order, so once it answers this
        // one it has handled every produce before it; the end offsets read next then
        // include them all, and the produce time includes the broker's work.
        for conn in conns.values() {
            if let Err(e) = conn.api_versions().await {
                eprintln!(
                    "warning: acks=0 end-of-produce barrier failed, end offsets may be short: {e}"
                );
            }
        }
        stats.last_done = Some(Instant::now());
    }
    Ok(stats)
}

/// The sequence after a batch of `records` starting at `base`, wrapping from
/// `i32::MAX` to 0 as Kafka's producer does.
fn next_sequence(base: i32, records: u64) -> i32 {
    let modulus = i64::from(i32::MAX) + 1;
    ((i64::from(base) + (records as i64 % modulus)) % modulus) as i32
}

/// Waits for one produce response and accounts for it. Kafka errors are counted, not
/// fatal; a broken connection is.
async fn settle(run: &Run, stats: &mut ProducerStats, done: InFlight) -> anyhow::Result<()> {
    let (result, now) = done.response.await.context("produce response task")?;
    stats.last_done = max_opt(stats.last_done, Some(now));
    match result {
        Ok(_base_offset) => {
            stats.records += done.records;
            stats.value_bytes += done.value_bytes;
            let nanos = now.saturating_duration_since(done.sent).as_nanos() as u64;
            stats.ack_latency.record_n(nanos, 1);
            run.produced.fetch_add(done.records, Ordering::Relaxed);
        }
        Err(ClientError::Kafka { error, .. }) => {
            *stats.errors.entry(error.to_string()).or_default() += done.records;
        }
        Err(e) => return Err(e).context("produce"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Consumer

struct ConsumerStats {
    records: u64,
    value_bytes: u64,
    first_fetch: Option<Instant>,
    last_receipt: Option<Instant>,
    latency: Histogram,
    /// Records expected but not received before the idle timeout.
    missing: u64,
    errors: BTreeMap<String, u64>,
}

impl ConsumerStats {
    fn new() -> ConsumerStats {
        ConsumerStats {
            records: 0,
            value_bytes: 0,
            first_fetch: None,
            last_receipt: None,
            latency: Histogram::new(),
            missing: 0,
            errors: BTreeMap::new(),
        }
    }

    fn merge(&mut self, o: ConsumerStats) {
        self.records += o.records;
        self.value_bytes += o.value_bytes;
        self.first_fetch = min_opt(self.first_fetch, o.first_fetch);
        self.last_receipt = max_opt(self.last_receipt, o.last_receipt);
        self.latency.merge(&o.latency);
        self.missing += o.missing;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

type Targets = watch::Receiver<Option<Arc<HashMap<i32, i64>>>>;

/// Fetches `parts` (partition, start offset) from one leader until each reaches its
/// target end offset, or nothing arrives for `--idle-timeout` once targets are known.
async fn consume(
    run: Arc<Run>,
    conn: Connection,
    parts: Vec<(i32, i64)>,
    targets: Targets,
) -> anyhow::Result<ConsumerStats> {
    let mut stats = ConsumerStats::new();
    let mut next: BTreeMap<i32, i64> = parts.into_iter().collect();
    let mut last_progress = Instant::now();
    let mut ends_known = false;
    // Each fetch starts one partition further, as real clients rotate: a broker gives
    // a batch larger than the partition limit only to the first partition.
    let mut rotation = 0usize;
    loop {
        let ends = targets.borrow().clone();
        if ends.is_some() && !ends_known {
            // The idle clock starts when production has ended, not before.
            ends_known = true;
            last_progress = last_progress.max(Instant::now());
        }
        let mut wanted: Vec<FetchPartition> = next
            .iter()
            .filter(|(p, off)| match &ends {
                Some(ends) => ends.get(p).is_some_and(|end| **off < *end),
                None => true,
            })
            .map(|(&partition, &offset)| FetchPartition {
                partition,
                offset,
                max_bytes: run.fetch_partition_bytes,
            })
            .collect();
        if wanted.is_empty() {
            break;
        }
        rotation = rotation.wrapping_add(1);
        let shift = rotation % wanted.len();
        wanted.rotate_left(shift);
        if ends.is_some() && last_progress.elapsed() > run.opts.idle_timeout {
            if let Some(ends) = &ends {
                stats.missing += wanted
                    .iter()
                    .map(|w| {
                        ends.get(&w.partition)
                            .map_or(0, |e| (e - w.offset).max(0) as u64)
                    })
                    .sum::<u64>();
            }
            break;
        }
        stats.first_fetch.get_or_insert_with(Instant::now);
        let fetched = conn
            .fetch(
                &run.topic.topic,
                &wanted,
                FETCH_MAX_WAIT_MS,
                1,
                FETCH_MAX_BYTES,
            )
            .await
            .context("fetch")?;
        let now = Instant::now();
        let now_nanos = now.saturating_duration_since(run.epoch).as_nanos() as u64;
        let mut backoff = false;
        for part in fetched {
            if let Some(error) = part.error {
                *stats.errors.entry(error.to_string()).or_default() += 1;
                if !error.is_retriable() {
                    bail!("fetch {}-{}: {error}", run.opts.topic, part.partition);
                }
                backoff = true;
                continue;
            }
            let Some(offset) = next.get_mut(&part.partition) else {
                continue;
            };
            for batch in summarize_batches(part.records, *offset)
                .with_context(|| format!("decoding {}-{}", run.opts.topic, part.partition))?
            {
                if batch.next_offset <= *offset {
                    continue;
                }
                *offset = batch.next_offset;
                stats.records += batch.records;
                stats.value_bytes += batch.value_bytes;
                stats.last_receipt = Some(now);
                last_progress = now;
                run.consumed.fetch_add(batch.records, Ordering::Relaxed);
                if let Some(stamp) = batch.stamp.filter(|s| s.run_id == run.run_id) {
                    stats
                        .latency
                        .record_n(now_nanos.saturating_sub(stamp.nanos), batch.records);
                }
            }
        }
        if backoff {
            // A retriable partition error (e.g. a leader not elected yet) would
            // otherwise be retried in a tight loop.
            tokio::time::sleep(FETCH_ERROR_BACKOFF).await;
        }
    }
    Ok(stats)
}

// ---------------------------------------------------------------------------------
// Output

async fn report_progress(run: Arc<Run>) {
    let mut tick = tokio::time::interval(PROGRESS_PERIOD);
    tick.tick().await;
    let (mut last_p, mut last_c) = (0u64, 0u64);
    loop {
        tick.tick().await;
        let p = run.produced.load(Ordering::Relaxed);
        let c = run.consumed.load(Ordering::Relaxed);
        let secs = PROGRESS_PERIOD.as_secs_f64();
        eprintln!(
            "[{:>6.1}s] produced {p} ({:.0} rec/s), consumed {c} ({:.0} rec/s)",
            run.epoch.elapsed().as_secs_f64(),
            (p - last_p) as f64 / secs,
            (c - last_c) as f64 / secs,
        );
        (last_p, last_c) = (p, c);
    }
}

fn print_header(run: &Run) {
    let o = &run.opts;
    let amount = match (o.amount.records, o.amount.duration) {
        (Some(n), Some(d)) => format!("{n} records (at most {:.1} s)", d.as_secs_f64()),
        (Some(n), None) => format!("{n} records"),
        (None, Some(d)) => format!("{:.1} s", d.as_secs_f64()),
        (None, None) => "nothing".to_string(),
    };
    let rate = match o.rate {
        0 => "unlimited".to_string(),
        r => format!("{r} records/s"),
    };
    let acks = match o.acks {
        -1 => "all".to_string(),
        a => a.to_string(),
    };
    if o.consume_only {
        println!(
            "felice bench: consume {} ({} partitions) with {} consumers from {}",
            o.topic,
            run.topic.partitions.len(),
            o.consumers,
            o.bootstrap
        );
        return;
    }
    println!(
        "felice bench: {} -> {} ({} partitions), {} producers, {} consumers, {amount} of {} B, \
         {} records/batch, acks={acks}{}, compression={}, rate={rate}, in-flight {}",
        o.bootstrap,
        o.topic,
        run.topic.partitions.len(),
        o.producers,
        o.consumers,
        o.record_size,
        o.records_per_batch(),
        if o.idempotent { ", idempotent" } else { "" },
        compression_name(o.compression),
        o.max_in_flight,
    );
    if o.record_size < STAMP_LEN {
        println!("note: --record-size < {STAMP_LEN}: no end-to-end latency figures");
    }
}

fn span_secs(from: Option<Instant>, to: Option<Instant>) -> Option<f64> {
    match (from, to) {
        (Some(a), Some(b)) if b > a => Some(b.duration_since(a).as_secs_f64()),
        _ => None,
    }
}

fn throughput(records: u64, bytes: u64, from: Option<Instant>, to: Option<Instant>) -> String {
    let Some(secs) = span_secs(from, to) else {
        return format!("{records} records");
    };
    format!(
        "{records} records in {secs:.3} s = {:.0} records/s, {:.2} MB/s",
        records as f64 / secs,
        bytes as f64 / 1e6 / secs
    )
}

/// Value-byte GB/s (10^9 bytes) of produce and consume on one line, to set next to
/// `felice bench --loopback`.
fn print_gbps(run: &Run, produced: &ProducerStats, consumed: &ConsumerStats) {
    let gbps = |bytes: u64, from, to| {
        span_secs(from, to).map_or("n/a".to_string(), |secs| {
            format!("{:.3}", bytes as f64 / 1e9 / secs)
        })
    };
    let mut parts = Vec::new();
    if !run.opts.consume_only {
        parts.push(format!(
            "produce GB/s={}",
            gbps(
                produced.value_bytes,
                produced.first_send,
                produced.last_done
            )
        ));
    }
    if run.opts.consumers > 0 {
        parts.push(format!(
            "consume GB/s={}",
            gbps(
                consumed.value_bytes,
                consumed.first_fetch,
                consumed.last_receipt
            )
        ));
    }
    println!("{} (value bytes, 1 GB = 10^9 bytes)", parts.join(" "));
}

/// How evenly the consumers did: each consumer's own MB/s (its bytes over its first
/// fetch to its last receipt); the aggregate figure is in the `consume:` line.
fn print_consumer_spread(rates: &mut [f64], idle_consumers: usize) {
    rates.sort_by(f64::total_cmp);
    if let (Some(min), Some(max)) = (rates.first(), rates.last()) {
        let median = rates[rates.len() / 2];
        println!(
            "consume per consumer: {} consumers with data, MB/s min {min:.2} median {median:.2} \
             max {max:.2}",
            rates.len()
        );
    }
    if idle_consumers > 0 {
        println!(
            "consume: {idle_consumers} consumers had no partition (more consumers than \
             partitions) and opened no connection"
        );
    }
}

fn percentiles(h: &Histogram) -> String {
    let ms = |q: f64| h.quantile(q).map_or(f64::NAN, |v| v as f64 / 1e6);
    format!(
        "p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3} ms",
        ms(0.50),
        ms(0.99),
        ms(0.999),
        ms(1.0)
    )
}

fn print_report(
    run: &Run,
    produced: &ProducerStats,
    consumed: &ConsumerStats,
    rss: Option<(u64, u64)>,
) {
    let o = &run.opts;
    if !o.consume_only {
        println!(
            "produce: {} ({} requests)",
            throughput(
                produced.records,
                produced.value_bytes,
                produced.first_send,
                produced.last_done
            ),
            produced.requests
        );
        if produced.ack_latency.total > 0 {
            println!(
                "produce ack latency: {}",
                percentiles(&produced.ack_latency)
            );
        }
        for (e, n) in &produced.errors {
            println!("produce errors: {e}: {n} records");
        }
    }
    if o.consumers > 0 {
        println!(
            "consume: {}",
            throughput(
                consumed.records,
                consumed.value_bytes,
                consumed.first_fetch,
                consumed.last_receipt
            )
        );
        if consumed.latency.total > 0 {
            println!(
                "end-to-end latency: {} ({} records)",
                percentiles(&consumed.latency),
                consumed.latency.total
            );
        }
        if consumed.missing > 0 {
            println!(
                "consume: {} records not received within the idle timeout",
                consumed.missing
            );
        }
        for (e, n) in &consumed.errors {
            println!("fetch errors: {e}: {n} partition responses");
        }
    }
    if let Some((peak_kib, samples)) = rss {
        println!(
            "broker peak RSS: {:.1} MiB ({samples} samples every {} ms)",
            peak_kib as f64 / 1024.0,
            RSS_SAMPLE_PERIOD.as_millis()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn parse(s: &str) -> anyhow::Result<Options> {
        match parse_args(&args(s))? {
            Parsed::Run(o) => Ok(*o),
            Parsed::Help => bail!("unexpected help"),
        }
    }

    #[test]
    fn defaults() -> anyhow::Result<()> {
        let o = parse("--bootstrap 127.0.0.1:9092")?;
        assert_eq!(o, Options::defaults("127.0.0.1:9092".into()));
        assert_eq!(o.records_per_batch(), 163);
        Ok(())
    }

    #[test]
    fn all_flags() -> anyhow::Result<()> {
        let o = parse(
            "--bootstrap h:1 --topic t --partitions 6 --replication-factor 3 --producers 4 \
             --consumers 0 --duration 2.5 --record-size 1000 --batch-bytes 65536 --acks all \
             --compression zstd --rate 10000 --max-in-flight 10 --idle-timeout 3 \
             --broker-pid 42 --fetch-partition-bytes 2097152",
        )?;
        assert_eq!(o.fetch_partition_bytes, Some(2 << 20));
        assert_eq!(o.bootstrap, "h:1");
        assert_eq!(o.topic, "t");
        assert_eq!(o.partitions, 6);
        assert_eq!(o.replication_factor, 3);
        assert_eq!(o.producers, 4);
        assert_eq!(o.consumers, 0);
        assert_eq!(
            o.amount,
            Amount {
                records: None,
                duration: Some(Duration::from_millis(2500))
            }
        );
        assert_eq!(o.record_size, 1000);
        assert_eq!(o.batch_bytes, 65536);
        assert_eq!(o.acks, -1);
        assert_eq!(o.compression, Compression::Zstd);
        assert_eq!(o.rate, 10000);
        assert_eq!(o.max_in_flight, 10);
        assert_eq!(o.idle_timeout, Duration::from_secs(3));
        assert_eq!(o.broker_pid, Some(42));
        assert!(!o.consume_only);
        // 10000/s over 4 producers = 2500/s each; 5 ms of that is 12.5 -> 13 records.
        assert_eq!(o.records_per_batch(), 13);
        Ok(())
    }

    #[test]
    fn equals_form_and_consume_only() -> anyhow::Result<()> {
        let o = parse("--bootstrap=h:2 --records=500 --acks=0 --consume-only --compression=lz4")?;
        assert_eq!(o.bootstrap, "h:2");
        assert_eq!(
            o.amount,
            Amount {
                records: Some(500),
                duration: None
            }
        );
        assert_eq!(o.acks, 0);
        assert!(o.consume_only);
        assert_eq!(o.compression, Compression::Lz4);
        Ok(())
    }

    #[test]
    fn idempotent_flag_and_sequences() -> anyhow::Result<()> {
        let o = parse("--bootstrap h:1 --idempotent --acks all")?;
        assert!(o.idempotent);
        assert!(parse("--bootstrap h:1 --idempotent --acks 1").is_err());
        assert!(parse("--bootstrap h:1 --idempotent --acks all --max-in-flight 6").is_err());
        assert_eq!(next_sequence(0, 10), 10);
        assert_eq!(next_sequence(i32::MAX, 1), 0);
        assert_eq!(next_sequence(i32::MAX - 1, 5), 3);
        Ok(())
    }

    #[test]
    fn compression_names_round_trip() -> anyhow::Result<()> {
        for name in ["none", "gzip", "snappy", "lz4", "zstd"] {
            assert_eq!(compression_name(parse_compression(name)?), name);
        }
        Ok(())
    }

    #[test]
    fn help_wins() -> anyhow::Result<()> {
        assert_eq!(parse_args(&args("--help"))?, Parsed::Help);
        assert_eq!(parse_args(&args("--bootstrap x:1 -h"))?, Parsed::Help);
        Ok(())
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "--topic t",
            "--loopback --idle-connections 5",
            "--loopback --buffer-bytes 0",
            "--bootstrap h:1 --idle-connections many",
            "--bootstrap h:1 --acks 2",
            "--bootstrap h:1 --compression brotli",
            "--bootstrap h:1 --partitions 0",
            "--bootstrap h:1 --producers 0",
            "--bootstrap h:1 --record-size 0",
            "--bootstrap h:1 --max-in-flight 0",
            "--bootstrap h:1 --fetch-partition-bytes 0",
            "--bootstrap h:1 --max-in-flight 1000",
            "--bootstrap h:1 --duration -1",
            "--bootstrap h:1 --duration nan",
            "--bootstrap h:1 --rate fast",
            "--bootstrap h:1 --consume-only --consumers 0",
            "--bootstrap h:1 --frobnicate",
            "--bootstrap",
        ] {
            assert!(parse_args(&args(bad)).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn modes_and_both_amounts() -> anyhow::Result<()> {
        let o = parse("--loopback --duration 2 --buffer-bytes 65536")?;
        assert!(o.loopback);
        assert_eq!(o.bootstrap, "");
        assert_eq!(o.amount.duration, Some(Duration::from_secs(2)));
        assert_eq!(o.buffer_bytes, 65536);
        let o = parse("--bootstrap h:1 --idle-connections 1000 --idle-hold 2 --broker-pid 7")?;
        assert_eq!(o.idle_connections, 1000);
        assert_eq!(o.idle_hold, Duration::from_secs(2));
        let o = parse("--bootstrap h:1 --records 5 --duration 1")?;
        assert_eq!(
            o.amount,
            Amount {
                records: Some(5),
                duration: Some(Duration::from_secs(1))
            }
        );
        Ok(())
    }

    #[test]
    fn batch_size_never_zero() -> anyhow::Result<()> {
        let o = parse("--bootstrap h:1 --record-size 100000 --batch-bytes 10")?;
        assert_eq!(o.records_per_batch(), 1);
        let o = parse("--bootstrap h:1 --rate 1")?;
        assert_eq!(o.records_per_batch(), 1);
        Ok(())
    }

    #[test]
    fn histogram_buckets_round_trip() {
        let mut v = 0u64;
        while v < u64::MAX / 3 {
            let i = Histogram::index(v);
            assert!(i < BUCKETS, "index {i} of {v} out of range");
            let hi = Histogram::highest_in(i);
            assert!(hi >= v, "bucket {i} upper bound {hi} below {v}");
            assert_eq!(Histogram::index(hi), i, "upper bound {hi} of bucket {i}");
            assert!(
                (hi - v) as f64 <= v as f64 / 128.0 + 1.0,
                "bucket too wide at {v}"
            );
            v = v * 3 / 2 + 1;
        }
        assert_eq!(Histogram::index(u64::MAX), BUCKETS - 1);
        assert_eq!(Histogram::highest_in(BUCKETS - 1), u64::MAX);
    }

    #[test]
    fn quantiles_exact_for_small_values() {
        let mut h = Histogram::new();
        assert_eq!(h.quantile(0.5), None);
        for v in 1..=100 {
            h.record_n(v, 1);
        }
        assert_eq!(h.quantile(0.0), Some(1));
        assert_eq!(h.quantile(0.5), Some(50));
        assert_eq!(h.quantile(0.99), Some(99));
        assert_eq!(h.quantile(0.999), Some(100));
        assert_eq!(h.quantile(1.0), Some(100));
    }

    #[test]
    fn quantiles_within_one_percent() {
        let mut h = Histogram::new();
        // 1 us .. 100 ms in 1 us steps.
        for us in 1..=100_000u64 {
            h.record_n(us * 1000, 1);
        }
        for (q, want) in [
            (0.5, 50_000_000f64),
            (0.99, 99_000_000.0),
            (0.999, 99_900_000.0),
        ] {
            let got = h.quantile(q).unwrap_or(0) as f64;
            assert!((got - want).abs() / want < 0.01, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(1.0), Some(100_000_000));
    }

    #[test]
    fn quantiles_weighted_and_merged() {
        let mut a = Histogram::new();
        a.record_n(1_000, 98);
        let mut b = Histogram::new();
        b.record_n(5_000_000, 2);
        a.merge(&b);
        assert_eq!(a.total, 100);
        // 1000 ns shares a bucket (8 ns wide) with values up to 1007.
        let p98 = a.quantile(0.98).unwrap_or(0);
        assert!((1_000..1_008).contains(&p98), "p98 {p98}");
        let p99 = a.quantile(0.99).unwrap_or(0);
        assert!((4_960_000..=5_000_000).contains(&p99), "p99 {p99}");
        assert_eq!(a.quantile(1.0), Some(5_000_000));
        // Weight zero records nothing.
        a.record_n(7, 0);
        assert_eq!(a.total, 100);
    }
}
