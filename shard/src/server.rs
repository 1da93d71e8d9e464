//! Running a shard node: open the engine and its replication log, take up
//! the persisted role, bind the port, serve gRPC (the shard API and the
//! replication stream), abort idle transactions, truncate the log, stop on
//! a shutdown signal.

use crate::config::ShardConfig;
use crate::error::ShardError;
use crate::replication::primary::ReplicationService;
use crate::replication::{LoggedEngine, Node};
use crate::service::ShardService;
use crate::txn::{Participant, TxnLimits, INTENT_WAIT};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tessera_model::config::{ConfigError, StartError};
use tessera_proto::shard::replication_server::ReplicationServer;
use tessera_proto::shard::shard_server::ShardServer;
use tessera_storage::{memory::MemoryEngine, rocks::RocksEngine, Engine};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;

/// Largest gRPC message a shard accepts or sends.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A running shard node.
pub struct ShardHandle {
    pub address: SocketAddr,
    /// Where Prometheus metrics are served, if configured.
    pub metrics_address: Option<SocketAddr>,
    pub participant: Arc<Participant>,
    pub node: Arc<Node>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), String>>,
}

impl ShardHandle {
    /// Stops serving and waits for in-flight requests to finish.
    pub async fn shutdown(self) -> Result<(), String> {
        self.node.shutdown().await;
        let _ = self.shutdown.send(true);
        let served = self.task.await.map_err(|e| e.to_string())?;
        // The storage engine closes when the last task holding it has ended
        // (a replica's follower, the resolver, group commit). Wait for that,
        // so that whoever removes the data directory next does not race a
        // database that is still open and writing.
        let engine = Arc::downgrade(self.node.log());
        drop((self.node, self.participant));
        tessera_storage::wait_closed(&engine, "the shard's storage engine").await;
        served
    }

    /// Waits until the server stops (it runs until shut down or it fails).
    pub async fn wait(self) -> Result<(), String> {
        self.task.await.map_err(|e| e.to_string())?
    }
}

/// Binds a TCP listener; the error names the address and the cause.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(address).await.map_err(|source| StartError::Listen { address, source })
}

/// Opens the storage engine and starts serving on `listener`.
pub async fn start(config: &ShardConfig, listener: TcpListener) -> Result<ShardHandle, StartError> {
    config.validate()?;
    let engine: Arc<dyn Engine> = if config.in_memory {
        Arc::new(MemoryEngine::default())
    } else {
        let storage = |e: String| StartError::Storage(e);
        std::fs::create_dir_all(&config.data_dir).map_err(|e| storage(format!("cannot create data directory {}: {e}", config.data_dir.display())))?;
        Arc::new(RocksEngine::open_with(&config.data_dir, config.small_footprint).map_err(|e| storage(e.to_string()))?)
    };
    start_on(config, listener, engine).await
}

/// Starts serving on `listener` with the given storage engine (the
/// in-process scenario harness passes its crash engines; `config`'s
/// data_dir and in_memory are then only shown in status).
pub async fn start_on(config: &ShardConfig, listener: TcpListener, engine: Arc<dyn Engine>) -> Result<ShardHandle, StartError> {
    config.validate()?;
    let secret = config.secret().map_err(ConfigError::from)?;
    let storage = |e: tessera_storage::StorageError| StartError::Storage(e.to_string());
    let failed = |e: ShardError| StartError::Other(e.to_string());
    let shown = if config.in_memory { "(in memory)".to_string() } else { config.data_dir.display().to_string() };
    crate::mvcc::check_format(engine.as_ref(), &shown).map_err(StartError::Storage)?;
    // Every durable batch the participant writes goes through the log.
    let log = LoggedEngine::open(engine).map_err(storage)?;
    let limits = TxnLimits {
        lock_timeout: config.lock_timeout(),
        idle_timeout: config.idle_txn_timeout(),
        group_commit_window: config.group_commit_window(),
        intent_wait: INTENT_WAIT.max(config.lock_timeout()),
    };
    let participant = Arc::new(Participant::open(log.clone(), limits).map_err(failed)?);
    participant.start_group_commit();
    let sync_timeout = Duration::from_millis(config.sync_timeout_ms);
    let node = Node::open(config.node_id.clone(), log.clone(), participant.clone(), secret.clone(), sync_timeout, crate::replication::replica::spawn)
        .map_err(failed)?;
    let barrier = Arc::downgrade(&node);
    participant.set_replication(Arc::new(move || {
        let node = barrier.clone();
        Box::pin(async move {
            match node.upgrade() {
                Some(node) => node.wait_replicated().await,
                None => Ok(()),
            }
        })
    }));
    let address = listener.local_addr().map_err(|e| StartError::Other(format!("the listener has no address: {e}")))?;
    let data_dir = if config.in_memory { "(in memory)".to_string() } else { config.data_dir.display().to_string() };
    let service = ShardService::new(participant.clone(), node.clone(), data_dir);
    let (shutdown, mut signal) = watch::channel(false);
    let metrics_address = match config.metrics_listen {
        Some(at) => {
            let listener = tessera_model::metrics::bind(at).await.map_err(|source| StartError::Listen { address: at, source })?;
            let bound = listener.local_addr().map_err(|source| StartError::Listen { address: at, source })?;
            let (p, n) = (participant.clone(), node.clone());
            tessera_model::metrics::serve(listener, Arc::new(move || crate::telemetry::render(&p, &n)), shutdown.subscribe());
            Some(bound)
        }
        None => None,
    };
    let reaper = spawn_idle_reaper(participant.clone(), shutdown.subscribe());
    let collector = spawn_gc(participant.clone(), node.clone(), shutdown.subscribe());
    let resolver = crate::resolver::spawn(participant.clone(), node.clone(), secret.clone(), shutdown.subscribe());
    let truncator = spawn_log_truncation(log, config.log_retention_records, shutdown.subscribe());
    let node_id = config.node_id.clone();
    let replication = ReplicationServer::new(ReplicationService::new(node.clone())).max_encoding_message_size(MAX_MESSAGE_BYTES);
    let task = tokio::spawn(async move {
        let server = ShardServer::new(service).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES);
        // Only callers with the cluster secret get past these.
        let server = InterceptedService::new(server, secret.server_check());
        let replication = InterceptedService::new(replication, secret.server_check());
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        // Keepalives end half-open replication streams.
        let result = tonic::transport::Server::builder()
            .trace_fn(tessera_model::trace::call_span)
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(1)))
            .http2_keepalive_timeout(Some(Duration::from_secs(3)))
            .add_service(server)
            .add_service(replication)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = signal.wait_for(|stop| *stop).await;
            })
            .await
            .map_err(|e| format!("shard {node_id} stopped: {e}"));
        reaper.abort();
        collector.abort();
        resolver.abort();
        truncator.abort();
        result
    });
    tracing::info!(node = %config.node_id, %address, role = ?node.role(), epoch = node.epoch(), "shard node serving");
    Ok(ShardHandle { address, metrics_address, participant, node, shutdown, task })
}

/// Keeps the last `retention` records of the replication log.
fn spawn_log_truncation(log: Arc<LoggedEngine>, retention: u64, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let keep_from = log.last().0.saturating_sub(retention) + 1;
                    let log = log.clone();
                    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || log.truncate_before(keep_from)).await {
                        tracing::warn!(error = %e, "cannot truncate the replication log");
                    }
                }
                _ = stop.changed() => return,
            }
        }
    })
}

/// How often a primary runs a garbage-collection round, and how many
/// versions a round looks at.
const GC_INTERVAL: Duration = Duration::from_millis(500);
const GC_BUDGET: usize = 50_000;

/// Collects old row versions while this node is a primary (replicas apply
/// the deletions from the log).
fn spawn_gc(participant: Arc<Participant>, node: Arc<Node>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(GC_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => if node.is_primary() {
                    if let Err(e) = participant.collect_garbage(GC_BUDGET).await {
                        tracing::debug!(error = %e, "garbage collection round failed; will try again");
                    }
                },
                _ = stop.changed() => return,
            }
        }
    })
}

fn spawn_idle_reaper(participant: Arc<Participant>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tick.tick() => { participant.abort_idle().await; }
                _ = stop.changed() => return,
            }
        }
    })
}
