//! Running a coordinator: open the catalog, connect the shard pool, serve
//! the public gRPC API until shut down.

use crate::catalog::Catalog;
use crate::config::CoordinatorConfig;
use crate::saga::Sagas;
use crate::service::{ResolverService, TesseraService};
use crate::session::Sessions;
use crate::shards::ShardPool;
use crate::sql::Engine;
use crate::txn::{Journal, TxnManager};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tessera_proto::shard::resolver_server::ResolverServer;
use tessera_proto::v1::tessera_server::TesseraServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Largest gRPC message the coordinator accepts or sends.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

pub struct CoordinatorHandle {
    pub address: SocketAddr,
    pub engine: Arc<Engine>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), String>>,
}

impl CoordinatorHandle {
    pub async fn shutdown(self) -> Result<(), String> {
        let _ = self.shutdown.send(true);
        self.task.await.map_err(|e| e.to_string())?
    }

    pub async fn wait(self) -> Result<(), String> {
        self.task.await.map_err(|e| e.to_string())?
    }
}

/// Binds a TCP listener; the error names the address and the cause.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(address).await.map_err(|e| format!("cannot listen on {address}: {e}"))
}

/// Opens the catalog and starts serving on `listener`.
pub async fn start(config: &CoordinatorConfig, listener: TcpListener) -> Result<CoordinatorHandle, String> {
    config.validate()?;
    let catalog = Arc::new(Catalog::open(&config.data_dir).map_err(|e| e.to_string())?);
    if !config.shard_groups.is_empty() {
        catalog.set_shard_groups(&config.shard_groups).map_err(|e| e.to_string())?;
    }
    if catalog.shard_groups().is_empty() {
        return Err("coordinator: no shard groups configured (add [[shard_groups]] entries with id and address)".into());
    }
    let shards = Arc::new(ShardPool::new(&catalog.shard_groups(), config.rpc_timeout(), config.connect_timeout()).map_err(|e| e.to_string())?);
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let advertise = config.advertise.clone().unwrap_or_else(|| address.to_string());
    // One journal for 2PC decisions and the saga log; its group commit
    // waits for callers counted in `in_flight` (preparing transactions and
    // running sagas).
    let in_flight = Arc::new(AtomicUsize::new(0));
    let gauge = in_flight.clone();
    let journal = Arc::new(Journal::start(catalog.db(), config.decision_log_window(), Arc::new(move || gauge.load(Ordering::Relaxed))));
    let txns = TxnManager::start(shards.clone(), journal.clone(), in_flight.clone(), advertise.clone()).map_err(|e| e.to_string())?;
    let sagas = Sagas::start(catalog.clone(), shards.clone(), journal, in_flight, advertise, config.saga()).map_err(|e| e.to_string())?;
    let engine = Arc::new(Engine::new(catalog, shards, txns, sagas));
    let sessions = Arc::new(Sessions::default());
    let (shutdown, mut signal) = watch::channel(false);
    let reaper = spawn_session_reaper(sessions.clone(), engine.clone(), shutdown.subscribe());
    let service = TesseraServer::new(TesseraService::new(engine.clone(), sessions))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let resolver = ResolverServer::new(ResolverService::new(engine.clone()));
    let task = tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(service)
            .add_service(resolver)
            .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async move {
                let _ = signal.wait_for(|stop| *stop).await;
            })
            .await
            .map_err(|e| format!("coordinator stopped: {e}"));
        reaper.abort();
        result
    });
    tracing::info!(%address, "coordinator serving");
    Ok(CoordinatorHandle { address, engine, shutdown, task })
}

/// Rolls back the transactions of idle sessions every few seconds.
fn spawn_session_reaper(sessions: Arc<Sessions>, engine: Arc<Engine>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => sessions.reap(engine.txns()).await,
                _ = stop.changed() => return,
            }
        }
    })
}
