//! The `felice` binary: `felice server` runs a broker, `felice bench` drives any
//! Kafka-compatible broker and prints throughput and latency figures.

mod bench;
mod dev_cluster;

use anyhow::Context;
use felice_broker::BrokerConfig;

const USAGE: &str = "usage:
  felice server [--config FILE] [--override KEY=VALUE]... [--print-config]
      Runs a broker. With no arguments: listener PLAINTEXT://127.0.0.1:9092,
      data in ./data. Keys are Kafka's broker config names.
  felice dev cluster [--nodes 3] [--dir DIR]
      Starts a local cluster, each node its own process; prints the
      bootstrap list; Ctrl-C stops it.
  felice bench --help
      Drives any Kafka-compatible broker and prints throughput and latency.";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("server") => server(&args[1..]),
        Some("bench") => bench::main(args[1..].to_vec()),
        Some("dev") => dev_cluster::main(&args[1..]),
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2)
        }
    }
}

fn server(args: &[String]) -> anyhow::Result<()> {
    let mut file = None;
    let mut overrides = Vec::new();
    let mut print = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => file = Some(it.next().context("--config needs a FILE")?.clone()),
            "--override" => {
                overrides.push(it.next().context("--override needs KEY=VALUE")?.clone())
            }
            "--print-config" => print = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    let config = match BrokerConfig::load(file.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("felice: invalid configuration: {e}");
            std::process::exit(1);
        }
    };
    if print {
        print!("{}", config.render());
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FELICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("felice")
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(felice_broker::server::run(config));
    // Everything durable is closed by now; a blocking task still waiting on
    // the stopped quorum (a metadata request that came in during shutdown)
    // must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    if let Err(e) = result {
        tracing::error!("felice server stopped: {e}");
        eprintln!("felice server: {e}");
        std::process::exit(1);
    }
    Ok(())
}

/// Each partition holds an open segment file and each client a socket: raise
/// the soft open-files limit to the hard one, as a broker's start script
/// would, and say what it is.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
    }
}
