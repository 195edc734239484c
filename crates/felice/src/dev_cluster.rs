//! `felice dev cluster --nodes N`: a local cluster in one command. Each node
//! is its own `felice server` process (this same binary) with its own data
//! folder and ports on 127.0.0.1, every node a broker and a controller
//! voter. The bootstrap list goes to stdout on one line once every node
//! listens; SIGTERM or Ctrl-C stops every node cleanly (SIGTERM to each,
//! then waits). The ports are kept in the folder's `cluster.properties`, so
//! running again with the same folder brings the same cluster back.
//!
//! Files: `DIR/cluster.properties`, and per node `DIR/node-I/data` (its
//! log.dirs), `DIR/node-I/server.log` (its output), `DIR/node-I/pid`.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const USAGE: &str = "usage:
  felice dev cluster [--nodes N] [--dir DIR] [--base-port PORT] [--override KEY=VALUE]...
      Starts N nodes (default 3) as separate processes, data under DIR
      (default ./dev-cluster), client ports PORT.. (default 19092) and
      controller ports PORT+100.. ; prints the bootstrap list; Ctrl-C or
      SIGTERM stops them all. The same DIR brings the same cluster back.";

/// How long the nodes get to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a node gets to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

struct Layout {
    nodes: u32,
    base_port: u16,
}

impl Layout {
    fn client_port(&self, node: u32) -> u16 {
        self.base_port + (node - 1) as u16
    }
    fn controller_port(&self, node: u32) -> u16 {
        self.base_port + 100 + (node - 1) as u16
    }
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("cluster") => cluster(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2)
        }
    }
}

fn cluster(args: &[String]) -> anyhow::Result<()> {
    let mut nodes: Option<u32> = None;
    let mut dir = PathBuf::from("dev-cluster");
    let mut base_port: Option<u16> = None;
    let mut overrides = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--nodes" => nodes = Some(value()?.parse().context("--nodes")?),
            "--dir" => dir = PathBuf::from(value()?),
            "--base-port" => base_port = Some(value()?.parse().context("--base-port")?),
            "--override" => overrides.push(value()?.clone()),
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let layout = load_or_save_layout(&dir, nodes, base_port)?;
    if !(1..=9).contains(&layout.nodes) {
        bail!("--nodes must be between 1 and 9");
    }
    let voters: Vec<String> = (1..=layout.nodes)
        .map(|n| format!("{n}@127.0.0.1:{}", layout.controller_port(n)))
        .collect();
    let exe = std::env::current_exe().context("finding this binary")?;
    let mut children: Vec<(u32, Child)> = Vec::new();
    for n in 1..=layout.nodes {
        match start_node(&exe, &dir, &layout, n, &voters.join(","), &overrides) {
            Ok(child) => children.push((n, child)),
            Err(e) => {
                stop_all(&mut children);
                return Err(e);
            }
        }
    }
    let bootstrap: Vec<String> = (1..=layout.nodes)
        .map(|n| format!("127.0.0.1:{}", layout.client_port(n)))
        .collect();
    if let Err(e) = wait_listening(&bootstrap, &mut children) {
        stop_all(&mut children);
        return Err(e);
    }
    println!("{}", bootstrap.join(","));
    eprintln!(
        "felice dev cluster: {} nodes up, data and logs in {}; Ctrl-C stops them",
        layout.nodes,
        dir.display()
    );
    wait_for_signal()?;
    eprintln!("felice dev cluster: stopping");
    stop_all(&mut children);
    Ok(())
}

/// The cluster's ports, fixed on first use and read back afterwards.
fn load_or_save_layout(
    dir: &Path,
    nodes: Option<u32>,
    base_port: Option<u16>,
) -> anyhow::Result<Layout> {
    let path = dir.join("cluster.properties");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let get = |key: &str| {
                text.lines()
                    .filter_map(|l| l.split_once('='))
                    .find(|(k, _)| k.trim() == key)
                    .map(|(_, v)| v.trim().to_string())
            };
            let stored = Layout {
                nodes: get("nodes").context("cluster.properties: nodes")?.parse()?,
                base_port: get("base.port")
                    .context("cluster.properties: base.port")?
                    .parse()?,
            };
            if nodes.is_some_and(|n| n != stored.nodes)
                || base_port.is_some_and(|p| p != stored.base_port)
            {
                bail!(
                    "{} holds a cluster of {} nodes from port {}; use another --dir for another shape",
                    dir.display(),
                    stored.nodes,
                    stored.base_port
                );
            }
            Ok(stored)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let layout = Layout {
                nodes: nodes.unwrap_or(3),
                base_port: base_port.unwrap_or(19092),
            };
            std::fs::write(
                &path,
                format!("nodes={}\nbase.port={}\n", layout.nodes, layout.base_port),
            )?;
            Ok(layout)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn start_node(
    exe: &Path,
    dir: &Path,
    layout: &Layout,
    n: u32,
    voters: &str,
    extra: &[String],
) -> anyhow::Result<Child> {
    let node_dir = dir.join(format!("node-{n}"));
    std::fs::create_dir_all(&node_dir)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(node_dir.join("server.log"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("server");
    let settings = [
        format!("node.id={n}"),
        "process.roles=broker,controller".to_string(),
        format!(
            "listeners=PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
            layout.client_port(n),
            layout.controller_port(n)
        ),
        "controller.listener.names=CONTROLLER".to_string(),
        format!("controller.quorum.voters={voters}"),
        format!("log.dirs={}", node_dir.join("data").display()),
    ];
    for s in settings.iter().chain(extra) {
        cmd.arg("--override").arg(s);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting node {n}"))?;
    std::fs::write(node_dir.join("pid"), child.id().to_string())?;
    Ok(child)
}

/// Waits until every node answers Metadata listing every node (it has
/// registered and seen the others' registrations).
fn wait_listening(bootstrap: &[String], children: &mut [(u32, Child)]) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    for addr in bootstrap {
        loop {
            if broker_count(addr).is_some_and(|n| n == bootstrap.len()) {
                break;
            }
            for (n, child) in children.iter_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("node {n} exited during start-up ({status}); see its server.log");
                }
            }
            if Instant::now() >= deadline {
                bail!("{addr} did not listen within {} s", START_TIMEOUT.as_secs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// The number of brokers a Metadata v0 answer from `addr` lists.
fn broker_count(addr: &str) -> Option<usize> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    // api key 3, version 0, correlation id 1, client id "dev", no topics.
    let mut req = vec![0, 3, 0, 0, 0, 0, 0, 1, 0, 3, b'd', b'e', b'v'];
    req.extend_from_slice(&0i32.to_be_bytes());
    let mut frame = (req.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&req);
    s.write_all(&frame).ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    // [length][correlation id][broker count]...
    let count = i32::from_be_bytes([head[8], head[9], head[10], head[11]]);
    usize::try_from(count).ok()
}

fn wait_for_signal() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(())
    })
}

/// SIGTERM to every node (a clean shutdown each), then waits; a node still
/// running after `STOP_TIMEOUT` is killed.
fn stop_all(children: &mut [(u32, Child)]) {
    for (n, child) in children.iter() {
        // The child is ours and not reaped yet, so its pid is still its own.
        let pid = rustix::process::Pid::from_child(child);
        if let Err(e) = rustix::process::kill_process(pid, rustix::process::Signal::TERM) {
            eprintln!("felice dev cluster: SIGTERM to node {n}: {e}");
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for (n, child) in children.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    eprintln!("felice dev cluster: node {n} did not stop; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}
