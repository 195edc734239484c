//! `felice bench --idle-connections N`: what a broker spends on connected but silent
//! clients. Opens N connections (at most [`OPEN_CONCURRENCY`] handshakes at a time),
//! each completing one ApiVersions round trip and then sending nothing; holds them
//! for `--idle-hold` seconds while sampling the broker's VmRSS (`--broker-pid`); checks
//! the broker kept them all open; closes them.
//!
//! The client side of an idle connection is one socket and no task
//! ([`IdleConnection`]), so this process needs N + a few file descriptors; the soft
//! RLIMIT_NOFILE is checked first (raise it with `ulimit -n`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use felice_client::IdleConnection;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{read_rss_kib, RssSampler, RSS_SAMPLE_PERIOD};

/// Handshakes in progress at once (well under a default listen backlog).
const OPEN_CONCURRENCY: usize = 64;
/// Give up on one connection's connect + ApiVersions after this long.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Descriptors this process needs besides the idle connections.
const FD_HEADROOM: u64 = 64;
/// Pause after closing, before the last RSS sample, so the broker notices the EOFs.
const AFTER_CLOSE_PAUSE: Duration = Duration::from_secs(1);

/// The soft RLIMIT_NOFILE of this process, from /proc/self/limits.
fn soft_nofile_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

/// Open descriptors of `pid`, if /proc lets us list them.
pub(super) fn count_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("unknown".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn num(v: Option<u64>) -> String {
    v.map_or("unknown".into(), |v| v.to_string())
}

pub async fn run(
    bootstrap: &str,
    n: usize,
    hold: Duration,
    broker_pid: Option<u32>,
) -> anyhow::Result<()> {
    if let Some(soft) = soft_nofile_limit() {
        if n as u64 + FD_HEADROOM > soft {
            bail!(
                "--idle-connections {n} needs about {} file descriptors but the soft \
                 RLIMIT_NOFILE is {soft}; raise it (ulimit -n) and run again",
                n as u64 + FD_HEADROOM
            );
        }
    }
    let rss_kib = || broker_pid.and_then(read_rss_kib);
    let fds = || broker_pid.and_then(count_fds);
    if let Some(pid) = broker_pid {
        if read_rss_kib(pid).is_none() {
            bail!("--broker-pid {pid}: cannot read /proc/{pid}/status");
        }
    }
    let (rss_before, fds_before) = (rss_kib(), fds());
    println!(
        "felice bench: {n} idle connections to {bootstrap}, held {:.1} s",
        hold.as_secs_f64()
    );

    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let permits = permits.clone();
        let addr = bootstrap.to_string();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let r = tokio::time::timeout(OPEN_TIMEOUT, IdleConnection::open(&addr)).await;
            (i, r)
        });
    }
    let mut conns = Vec::with_capacity(n);
    let mut first_error: Option<String> = None;
    let mut failed = 0usize;
    while let Some(joined) = tasks.join_next().await {
        let (i, r) = joined.context("idle connection task")?;
        match r {
            Ok(Ok(c)) => conns.push(c),
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(format!("connection {i}: {e}"));
            }
            Err(_) => {
                failed += 1;
                first_error.get_or_insert(format!(
                    "connection {i}: no ApiVersions answer within {OPEN_TIMEOUT:?}"
                ));
            }
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    if let Some(e) = first_error {
        drop(conns);
        bail!(
            "opened {} of {n} idle connections ({failed} failed); first error: {e}",
            n - failed
        );
    }
    eprintln!("opened {n} connections in {open_secs:.2} s; holding");

    let sampler = broker_pid.map(RssSampler::start);
    tokio::time::sleep(hold).await;
    let (rss_held, fds_held) = (rss_kib(), fds());
    let peak = sampler.map(RssSampler::finish);
    let open = conns.iter().filter(|c| c.is_open()).count();
    drop(conns);
    tokio::time::sleep(AFTER_CLOSE_PAUSE).await;
    let rss_after = rss_kib();

    println!("idle_connections={n} broker_rss_mb={}", mib(rss_held));
    let per_conn = match (rss_before, rss_held) {
        (Some(b), Some(h)) if n > 0 => {
            format!("{:.1}", (h as f64 - b as f64) / n as f64)
        }
        _ => "unknown".into(),
    };
    println!(
        "idle connections: opened in {open_secs:.2} s, {open} of {n} still open after the hold; \
         broker RSS MiB before {} / held {} / peak while held {} / after close {} \
         ({per_conn} KiB per connection); broker fds before {} / held {} \
         (RSS sampled every {} ms; MiB = 2^20 bytes)",
        mib(rss_before),
        mib(rss_held),
        mib(peak.map(|(k, _)| k)),
        mib(rss_after),
        num(fds_before),
        num(fds_held),
        RSS_SAMPLE_PERIOD.as_millis(),
    );
    if open < n {
        println!(
            "idle connections: the broker closed {} of them during the hold",
            n - open
        );
    }
    Ok(())
}
