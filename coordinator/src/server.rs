//! Running a coordinator: open the catalog, connect the shard pool, serve
//! the public gRPC API until shut down.

use crate::catalog::Catalog;
use crate::config::CoordinatorConfig;
use crate::service::TesseraService;
use crate::shards::ShardPool;
use crate::sql::Engine;
use std::net::SocketAddr;
use std::sync::Arc;
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
    let engine = Arc::new(Engine::new(catalog, shards));
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let (shutdown, mut signal) = watch::channel(false);
    let service =
        TesseraServer::new(TesseraService::new(engine.clone())).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES);
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(service)
            .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async move {
                let _ = signal.wait_for(|stop| *stop).await;
            })
            .await
            .map_err(|e| format!("coordinator stopped: {e}"))
    });
    tracing::info!(%address, "coordinator serving");
    Ok(CoordinatorHandle { address, engine, shutdown, task })
}
