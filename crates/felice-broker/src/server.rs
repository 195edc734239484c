//! Running a broker: bind, open (recovery), serve, housekeeping, and a clean
//! shutdown on SIGTERM or Ctrl-C that closes every log with its recovery
//! checkpoint so the next start recovers nothing.

use crate::broker::{Broker, StartError};
use crate::config::BrokerConfig;
use crate::controller::ControllerContext;
use crate::metadata_source::MetadataSource;
use crate::net;
use felice_metadata::{MetadataObserver, MetadataQuorum, QuorumConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A started broker: its bound address and a handle to stop it.
pub struct RunningBroker {
    pub local_addr: std::net::SocketAddr,
    pub broker: Arc<Broker>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningBroker {
    /// A controlled shutdown: asks the controller to fence this broker (its
    /// partitions lose their leader here, so clients see only a metadata
    /// change), stops accepting, closes connections, then closes every log
    /// cleanly.
    pub async fn stop(self) {
        // Heartbeats asking to shut down until the controller says go: it
        // fences this broker, then waits for this broker to apply that.
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.broker.heartbeat(true)).await {
                Ok(Ok(r)) if r.error_code == 0 && r.should_shut_down => break,
                Ok(Ok(r)) if r.error_code == 0 && Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                other => {
                    tracing::warn!(
                        ?other,
                        "controlled shutdown: the controller did not let this broker go; stopping anyway"
                    );
                    break;
                }
            }
        }
        // The followers learn that commit before this leader goes.
        if let MetadataSource::Voter(q) = &self.broker.metadata {
            q.hand_over(std::time::Duration::from_secs(1)).await;
        }
        self.broker.controller.close();
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let broker = self.broker.clone();
        let _ = tokio::task::spawn_blocking(move || broker.replicas.shutdown()).await;
        if let MetadataSource::Voter(q) = &self.broker.metadata {
            q.shutdown().await;
        }
    }
}

/// A started node that is only a controller (`process.roles=controller`).
pub struct RunningController {
    pub controller: Arc<ControllerContext>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningController {
    pub async fn stop(self) {
        self.controller
            .quorum
            .hand_over(std::time::Duration::from_secs(1))
            .await;
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.controller.quorum.shutdown().await;
    }
}

/// Binds the listener, opens the log dir (recovering it) and starts serving.
pub async fn start(config: BrokerConfig) -> Result<RunningBroker, StartError> {
    start_with_clock(config, crate::clock::system()).await
}

/// Starts a node that is only a controller: its member of the metadata
/// quorum, the controller listener, and the controller's fencing sweep.
pub async fn start_controller(config: BrokerConfig) -> Result<RunningController, StartError> {
    let started = Instant::now();
    let cluster_id = prepare_log_dir(&config).await?;
    let (shutdown, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let (controller, cluster_id) =
        start_quorum(&config, cluster_id, crate::clock::system(), &rx, &mut tasks).await?;
    tasks.push(tokio::spawn(fence_stale_brokers(
        controller.clone(),
        rx.clone(),
    )));
    tracing::info!(
        "felice controller {} on {}, cluster id {cluster_id}, started in {} ms",
        config.node_id,
        config
            .controller_listener
            .as_ref()
            .map_or(String::new(), |l| format!("{}:{}", l.host, l.port)),
        started.elapsed().as_millis()
    );
    Ok(RunningController {
        controller,
        shutdown,
        tasks,
    })
}

fn task_failed(e: tokio::task::JoinError) -> StartError {
    StartError::MetaProperties(format!("start-up task failed: {e}"))
}

async fn prepare_log_dir(config: &BrokerConfig) -> Result<String, StartError> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || Broker::prepare_log_dir(&config))
        .await
        .map_err(task_failed)?
}

/// This node's member of the metadata quorum, with the controller listener
/// serving it; returns once the quorum has a leader and this node's image,
/// with the quorum's cluster id (taken over if this node just joined).
async fn start_quorum(
    config: &BrokerConfig,
    cluster_id: String,
    clock: crate::clock::SharedClock,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<(Arc<ControllerContext>, String), StartError> {
    let (mut quorum_config, transport) = quorum_config(config);
    quorum_config.cluster_id = cluster_id.clone();
    let metadata_dir = Broker::metadata_dir(config);
    let metadata =
        Arc::new(MetadataQuorum::start(&metadata_dir, quorum_config.clone(), transport).await?);
    let controller = Arc::new(ControllerContext::new(
        metadata.clone(),
        config.clone(),
        clock,
    ));
    // The controller listener answers Raft before the quorum can elect.
    if let (Some(l), false) = (&config.controller_listener, config.quorum_voters.is_empty()) {
        let addr = format!("{}:{}", l.host, l.port);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: addr.clone(),
                source,
            })?;
        tasks.push(tokio::spawn(crate::controller_net::serve(
            controller.clone(),
            listener,
            shutdown.clone(),
        )));
    }
    let agreed = metadata.ready(&metadata_dir, &quorum_config).await?;
    let cluster_id = adopt_cluster_id(config, cluster_id, agreed).await?;
    Ok((controller, cluster_id))
}

/// The cluster id the metadata names, written to `meta.properties` when it
/// differs from this folder's (a node that joined a cluster takes its id).
async fn adopt_cluster_id(
    config: &BrokerConfig,
    ours: String,
    agreed: String,
) -> Result<String, StartError> {
    if agreed.is_empty() || agreed == ours {
        return Ok(ours);
    }
    let config = config.clone();
    let id = agreed.clone();
    tokio::task::spawn_blocking(move || Broker::adopt_cluster_id(&config, &id))
        .await
        .map_err(task_failed)??;
    Ok(agreed)
}

/// A node that is only a broker: it follows the metadata log as an
/// observer and returns once it has everything committed (from a snapshot
/// and the entries after it), with the cluster's id.
async fn start_observer(
    config: &BrokerConfig,
    cluster_id: String,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<(Arc<MetadataObserver>, String), StartError> {
    let dir = Broker::metadata_dir(config).join("observer");
    let settings = config.metadata_snapshots;
    let observer = {
        let at = dir.clone();
        tokio::task::spawn_blocking(move || MetadataObserver::open(&at, settings))
            .await
            .map_err(task_failed)?
            .map_err(|source| StartError::Io {
                path: dir.display().to_string(),
                source,
            })?
    };
    let observer = Arc::new(observer);
    tasks.push(tokio::spawn(crate::metadata_fetch::follow(
        observer.clone(),
        config.clone(),
        shutdown.clone(),
    )));
    // Bounded by the time a whole cluster may take to come up.
    let deadline = Instant::now() + Duration::from_secs(300);
    let started = Instant::now();
    while !observer.caught_up() || observer.image().cluster_id.is_none() {
        if Instant::now() >= deadline {
            return Err(StartError::Register(
                "no controller served the metadata log in time".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let image = observer.image();
    tracing::info!(
        offset = image.offset,
        partitions = image.partition_count(),
        ms = started.elapsed().as_millis() as u64,
        "caught up with the metadata log"
    );
    let agreed = image.cluster_id.clone().unwrap_or_default();
    let cluster_id = adopt_cluster_id(config, cluster_id, agreed).await?;
    Ok((observer, cluster_id))
}

/// [`start`] with the wall clock the broker reads.
pub async fn start_with_clock(
    config: BrokerConfig,
    clock: crate::clock::SharedClock,
) -> Result<RunningBroker, StartError> {
    if !config.roles.broker {
        return Err(StartError::MetaProperties(
            "process.roles has no broker role: start the node with start_controller".into(),
        ));
    }
    let started = Instant::now();
    let addr = format!("{}:{}", config.listener.host, config.listener.port);
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: addr.clone(),
        source,
    })?;
    let advertised_port = if config.advertised.port == 0 || config.advertised == config.listener {
        local_addr.port()
    } else {
        config.advertised.port
    };
    let cluster_id = prepare_log_dir(&config).await?;
    let (shutdown, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let (source, controller, cluster_id) = if config.roles.controller {
        let (ctx, id) = start_quorum(&config, cluster_id, clock.clone(), &rx, &mut tasks).await?;
        (MetadataSource::Voter(ctx.quorum.clone()), Some(ctx), id)
    } else {
        let (observer, id) = start_observer(&config, cluster_id, &rx, &mut tasks).await?;
        (MetadataSource::Observer(observer), None, id)
    };
    let node_id = config.node_id;
    let broker = {
        let controller = controller.clone();
        tokio::task::spawn_blocking(move || {
            Broker::open(config, cluster_id, source, controller, clock)
        })
        .await
        .map_err(task_failed)??
    };
    let broker = Arc::new(broker);
    // Serve only once this broker is in the image it answers Metadata from.
    // Follow the committed metadata from now on: registration, unfencing.
    let publisher = tokio::spawn(apply_metadata(broker.clone(), rx.clone()));
    let epoch = broker.register(advertised_port).await?;
    tasks.push(tokio::spawn(heartbeats(broker.clone(), rx.clone())));
    tasks.push(tokio::spawn(crate::offline_replicas::report(
        broker.clone(),
        rx.clone(),
    )));
    if let Some(ctx) = controller {
        tasks.push(tokio::spawn(fence_stale_brokers(ctx, rx.clone())));
    }
    // Serve once this broker is registered, unfenced, and its image has that
    // (it answers Metadata from it), as a KRaft broker waits to be unfenced.
    let port = i32::from(advertised_port);
    broker
        .applied_until(
            |i| {
                i.brokers
                    .get(&node_id)
                    .is_some_and(|b| b.port == port && b.epoch == epoch && !b.fenced)
            },
            crate::limits::MAX_CONTROLLER_CALL,
        )
        .await
        .map_err(|_| StartError::Register("this broker was not unfenced in time".into()))?;
    let serve = tokio::spawn(net::serve(broker.clone(), listener, rx.clone()));
    let housekeeping = tokio::spawn(housekeeping(broker.clone(), rx.clone()));
    let group_timers = tokio::spawn(group_timers(broker.clone(), rx.clone()));
    let cleaner = tokio::spawn(log_cleaner(broker.clone(), rx.clone()));
    let isr_expiration = tokio::spawn(isr_expiration(broker.clone(), rx.clone()));
    let fetchers = tokio::spawn(crate::replica_fetcher::run(broker.clone(), rx.clone()));
    tracing::info!(
        "felice listening on {local_addr} (PLAINTEXT), data in {}, cluster id {}, node id {}, {} partitions, started in {} ms",
        broker.config.log_dir.display(),
        broker.cluster_id,
        broker.config.node_id,
        broker.replicas.len(),
        started.elapsed().as_millis()
    );
    Ok(RunningBroker {
        local_addr,
        broker,
        shutdown,
        tasks: {
            tasks.extend([
                serve,
                housekeeping,
                group_timers,
                cleaner,
                isr_expiration,
                fetchers,
                publisher,
            ]);
            tasks
        },
    })
}

/// Kafka's `isr-expiration` task: every `replica.lag.time.max.ms / 2`, each
/// partition this broker leads proposes out the followers that fell
/// behind. Only state is touched (no I/O), so it runs on the runtime.
async fn isr_expiration(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let every = Duration::from_millis((broker.config.replica_lag_time_max_ms / 2).max(1) as u64);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        for p in broker.replicas.all() {
            if let Some(proposal) = p.tick() {
                broker.propose_isr(p, proposal);
            }
        }
    }
}

/// Retention every `log.retention.check.interval.ms`, producer expiry every
/// `producer.id.expiration.check.interval.ms`, due flushes every
/// `log.flush.scheduler.interval.ms`, the high-watermark checkpoint every
/// `replica.high.watermark.checkpoint.interval.ms`, on a blocking thread.
async fn housekeeping(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let retention_every = Duration::from_millis(broker.config.log_retention_check_interval_ms);
    let expiry_every =
        Duration::from_millis(broker.config.producer_id_expiration_check_interval_ms);
    let flush_every =
        Duration::from_millis(broker.config.log_flush_scheduler_interval_ms.max(1) as u64);
    let checkpoint_every = Duration::from_millis(
        broker
            .config
            .replica_high_watermark_checkpoint_interval_ms
            .max(1) as u64,
    );
    let tick = retention_every
        .min(expiry_every)
        .min(flush_every)
        .min(checkpoint_every)
        .min(Duration::from_secs(24 * 3600));
    let mut last_retention = Instant::now();
    let mut last_expiry = Instant::now();
    let mut last_checkpoint = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => return,
        }
        let retention = last_retention.elapsed() >= retention_every;
        if retention {
            last_retention = Instant::now();
        }
        let expiry = last_expiry.elapsed() >= expiry_every;
        if expiry {
            last_expiry = Instant::now();
        }
        let checkpoint = last_checkpoint.elapsed() >= checkpoint_every;
        if checkpoint {
            last_checkpoint = Instant::now();
        }
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || {
            b.replicas.housekeeping(retention, expiry);
            if checkpoint {
                b.replicas.checkpoint_high_watermarks();
            }
        })
        .await;
    }
}

/// The group coordinator's clock: session, join and sync deadlines every
/// `coordinator::TICK`, offset expiry every `offsets.retention.check.interval.ms`.
async fn group_timers(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let expire_every = Duration::from_millis(broker.config.offsets_retention_check_interval_ms);
    let mut last_expiry = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(crate::coordinator::TICK) => {}
            _ = shutdown.changed() => return,
        }
        let expire = last_expiry.elapsed() >= expire_every;
        if expire {
            last_expiry = Instant::now();
        }
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || {
            b.groups.tick(&*b);
            if expire {
                b.groups.expire_offsets(&*b);
            }
        })
        .await;
    }
}

/// Compaction of `cleanup.policy=compact` logs every `log.cleaner.backoff.ms`
/// (one partition after another, on a blocking thread).
async fn log_cleaner(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    if !broker.config.log_cleaner_enable {
        return;
    }
    let every = Duration::from_millis(broker.config.log_cleaner_backoff_ms);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || b.replicas.clean_logs()).await;
    }
}

/// Applies every committed image, in order of arrival, until shutdown. A
/// watcher that falls behind skips to the newest image (each image is the
/// whole state, so nothing is lost).
async fn apply_metadata(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let mut committed = broker.metadata.subscribe();
    loop {
        let image = committed.borrow_and_update().clone();
        if image.offset > broker.image().offset {
            let b = broker.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || b.apply(image)).await {
                tracing::error!(error = %e, "applying a metadata image failed");
            }
        }
        tokio::select! {
            r = committed.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// The quorum this node takes part in: its voters (`controller.quorum.voters`,
/// or this node alone) and, with peers, the TCP transport to them.
fn quorum_config(
    config: &BrokerConfig,
) -> (
    QuorumConfig,
    Option<Arc<dyn felice_metadata::raft::network::RaftTransport>>,
) {
    let mut q = QuorumConfig::single(config.node_id as u64);
    q.snapshots = config.metadata_snapshots;
    q.election_timeout_ms = config.controller_quorum_election_timeout_ms;
    if config.quorum_voters.is_empty() {
        return (q, None);
    }
    q.voters = config
        .quorum_voters
        .iter()
        .map(|(id, (host, port))| {
            (
                *id as u64,
                felice_metadata::raft::BasicNode::new(format!("{host}:{port}")),
            )
        })
        .collect();
    // A cluster waits for its peers as long as it takes them to start.
    q.start_timeout = Duration::from_secs(300);
    let transport = crate::raft_transport::TcpRaftTransport::new(
        config.node_id,
        config.socket_request_max_bytes,
    );
    (q, Some(Arc::new(transport)))
}

/// BrokerHeartbeat to the active controller every
/// `broker.heartbeat.interval.ms`, and every 50 ms while this broker is
/// fenced or catching up (so an unfence does not wait a whole interval).
async fn heartbeats(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let interval = Duration::from_millis(broker.config.broker_heartbeat_interval_ms);
    loop {
        let delay = match broker.heartbeat(false).await {
            Ok(r) if r.error_code == 0 && !r.is_fenced => interval,
            Ok(r) if r.error_code != 0 => {
                tracing::debug!(code = r.error_code, "heartbeat refused");
                interval.min(Duration::from_millis(500))
            }
            Ok(_) => Duration::from_millis(50),
            Err(e) => {
                tracing::warn!(error = %e, "no heartbeat to the controller");
                interval.min(Duration::from_millis(500))
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// How often the active controller looks for leaderless partitions of
/// topics with `unclean.leader.election.enable`.
const UNCLEAN_ELECTION_EVERY: Duration = Duration::from_secs(5);

/// The active controller's fencing sweep, several times per session
/// timeout (on other nodes it does nothing).
async fn fence_stale_brokers(ctx: Arc<ControllerContext>, mut shutdown: watch::Receiver<bool>) {
    // Often enough for the liveness probe's thresholds (hundreds of ms).
    let every = Duration::from_millis((ctx.config.broker_session_timeout_ms / 8).clamp(50, 100));
    // Unclean elections for leaderless partitions, every few seconds.
    let mut unclean_at = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        crate::broker_lifecycle::fence_stale_brokers(&ctx).await;
        if unclean_at.elapsed() >= UNCLEAN_ELECTION_EVERY {
            unclean_at = Instant::now();
            crate::broker_lifecycle::unclean_elections(&ctx).await;
        }
    }
}

/// Runs until SIGTERM or Ctrl-C.
pub async fn run(config: BrokerConfig) -> Result<(), StartError> {
    if !config.roles.broker {
        let running = start_controller(config).await?;
        wait_for_signal().await;
        tracing::info!("shutting down");
        running.stop().await;
        tracing::info!("stopped cleanly");
        return Ok(());
    }
    let running = start(config).await?;
    wait_for_signal().await;
    tracing::info!("shutting down");
    running.stop().await;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
