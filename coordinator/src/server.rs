//! Running a coordinator: open the catalog and the journal, connect the
//! shard pool, serve the public gRPC API (with health and reflection), the
//! internal resolver and, when configured, the PostgreSQL protocol, until
//! shut down.

use crate::api::admin::AdminService;
use crate::api::resolver::ResolverService;
use crate::api::tessera::TesseraService;
use crate::auth::Authenticator;
use crate::background::{Background, STOP_WAIT};
use crate::catalog::Catalog;
use crate::config::CoordinatorConfig;
use crate::error::CoordError;
use crate::exec::{Engine, EngineLimits};
use crate::failover::Failover;
use crate::idempotency::Idempotency;
use crate::saga::Sagas;
use crate::session::Sessions;
use crate::shards::ShardPool;
use crate::tls::Tls;
use crate::txn::{Journal, TxnManager};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tessera_model::config::{ConfigError, StartError};
use tessera_proto::shard::resolver_server::ResolverServer;
use tessera_proto::v1::admin_server::AdminServer;
use tessera_proto::v1::tessera_server::TesseraServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;

/// How long a starting coordinator waits for the first heartbeat answers
/// before it serves (a node that does not answer by then is left to the
/// failure detector).
const FIRST_HEARTBEATS: Duration = Duration::from_secs(2);

pub struct CoordinatorHandle {
    pub address: SocketAddr,
    /// Where the PostgreSQL wire protocol is served, if configured.
    pub pg_address: Option<SocketAddr>,
    /// Where Prometheus metrics are served, if configured.
    pub metrics_address: Option<SocketAddr>,
    pub engine: Arc<Engine>,
    pub sessions: Arc<Sessions>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), String>>,
    /// The catalog's and journal's storage engine, to see it closed at shutdown.
    db: std::sync::Weak<dyn tessera_storage::Engine>,
    background: Background,
}

impl CoordinatorHandle {
    pub async fn shutdown(self) -> Result<(), String> {
        let _ = self.shutdown.send(true);
        let served = self.task.await.map_err(|e| e.to_string())?;
        // The database closes (flushing, writing its manifest) when the last
        // task holding it has ended; wait for that, so that whoever removes
        // the data directory next does not race it.
        drop((self.engine, self.sessions));
        if !self.background.join(STOP_WAIT).await {
            tracing::warn!(running = self.background.running(), "background tasks still running {STOP_WAIT:?} after shutdown");
        }
        tessera_storage::wait_closed(&self.db, "the coordinator's database").await;
        served
    }

    pub async fn wait(self) -> Result<(), String> {
        self.task.await.map_err(|e| e.to_string())?
    }
}

/// Binds a TCP listener; the error names the address and the cause.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(address).await.map_err(|source| StartError::Listen { address, source })
}

/// Opens the catalog and starts serving on `listener` (and on
/// `config.pg_listen`, if set).
pub async fn start(config: &CoordinatorConfig, listener: TcpListener) -> Result<CoordinatorHandle, StartError> {
    config.validate()?;
    let catalog = if config.in_memory {
        Catalog::on(Arc::new(tessera_storage::memory::MemoryEngine::default()))
    } else {
        Catalog::open_with(&config.data_dir, config.small_footprint)
    };
    start_on(config, listener, catalog.map_err(|e| StartError::Storage(e.to_string()))?).await
}

/// Starts serving on `listener` with the given catalog, whose storage
/// engine also holds the journal (the in-process scenario harness passes
/// one on a crash engine).
pub async fn start_on(config: &CoordinatorConfig, listener: TcpListener, catalog: Catalog) -> Result<CoordinatorHandle, StartError> {
    config.validate()?;
    let secret = config.secret().map_err(ConfigError::from)?;
    let auth = Arc::new(Authenticator::from_config(&config.auth).map_err(StartError::Security)?);
    let tls = config.tls.as_ref().map(Tls::load).transpose().map_err(StartError::Security)?;
    let failed = |e: CoordError| StartError::Other(e.to_string());
    let no_address = |e: std::io::Error| StartError::Other(format!("a listener has no address: {e}"));
    let catalog = Arc::new(catalog);
    if !config.shard_groups.is_empty() {
        catalog.set_shard_groups(&config.shard_groups).map_err(|e| StartError::Config(ConfigError::Invalid(e.to_string())))?;
    }
    if catalog.shard_groups().is_empty() {
        return Err(ConfigError::Invalid("coordinator: no shard groups configured (add [[shard_groups]] entries with id and address)".into()).into());
    }
    let shards =
        Arc::new(ShardPool::new(&catalog.shard_groups(), config.rpc_timeout(), config.connect_timeout(), secret.clone(), config.guards()).map_err(failed)?);
    let address = listener.local_addr().map_err(no_address)?;
    // Shard nodes call the resolver: on the public port, or (with TLS
    // there) on a plain internal port of its own.
    let internal = match config.internal_listen {
        Some(internal) => Some(bind(internal).await?),
        None => None,
    };
    let internal_address = internal.as_ref().map(|l| l.local_addr().map_err(no_address)).transpose()?.unwrap_or(address);
    let advertise = config.advertise.clone().unwrap_or_else(|| internal_address.to_string());
    // One journal for 2PC decisions, the saga log and idempotency records;
    // its group commit waits for callers counted in `in_flight` (preparing
    // transactions and running sagas).
    let in_flight = Arc::new(AtomicUsize::new(0));
    let gauge = in_flight.clone();
    let (shutdown, mut signal) = watch::channel(false);
    let background = Background::new(shutdown.subscribe());
    let db = Arc::downgrade(&catalog.engine());
    let journal = Arc::new(Journal::start(catalog.engine(), config.decision_log_window(), Arc::new(move || gauge.load(Ordering::Relaxed)), &background));
    let txns = TxnManager::start(shards.clone(), journal.clone(), in_flight.clone(), advertise.clone(), &background).map_err(failed)?;
    let oracle = txns.oracle().clone();
    let sagas = Sagas::start(catalog.clone(), shards.clone(), journal.clone(), oracle, in_flight, advertise, config.saga(), plan_saga_statement, &background)
        .map_err(failed)?;
    let idempotency = Arc::new(Idempotency::new(journal, Duration::from_secs(config.idempotency_ttl_s)));
    crate::sql::shape::set_max_expr_depth(config.limits.max_expr_depth);
    let limits = EngineLimits { max_statement_bytes: config.limits.max_statement_bytes, max_result_rows: config.limits.max_result_rows };
    let failover = Failover::start(catalog.clone(), shards.clone(), config.failover(), &background);
    let (snapshots, retention) = (txns.snapshots().clone(), config.gc_retention());
    failover.set_gc_horizon(Box::new(move || snapshots.gc_horizon(retention)));
    failover.first_round(FIRST_HEARTBEATS).await;
    let engine = Arc::new(Engine::new(catalog, shards, txns, sagas, idempotency.clone(), failover, limits));
    let operators = config.auth.users.iter().filter(|u| u.operator).map(|u| u.name.clone());
    let operators: Vec<String> = operators.chain(config.auth.tokens.iter().filter(|t| t.operator).map(|t| t.name.clone())).collect();
    let sessions = Sessions::new(config.limits.max_sessions, Duration::from_millis(config.limits.statement_timeout_ms));
    let sessions = Arc::new(sessions.with_reserved(config.limits.reserved_sessions(), operators));
    idempotency.spawn_gc(&background);
    spawn_session_reaper(sessions.clone(), engine.clone(), &background);
    let max_message = config.limits.max_message_bytes;
    let tessera = TesseraServer::new(TesseraService::new(engine.clone(), sessions.clone(), max_message))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let admin =
        AdminServer::new(AdminService::new(engine.clone(), sessions.clone())).max_decoding_message_size(max_message).max_encoding_message_size(max_message);
    let resolver = ResolverServer::new(ResolverService::new(engine.clone()));
    let (health_reporter, health) = tonic_health::server::health_reporter();
    for service in ["tessera.v1.Tessera", "tessera.v1.Admin", ""] {
        health_reporter.set_service_status(service, tonic_health::ServingStatus::Serving).await;
    }
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tessera_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().map_err(|e| StartError::Other(format!("reflection: {e}")))?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(|e| StartError::Other(format!("reflection: {e}")))?;
    let pg_address = match config.pg_listen {
        Some(pg_listen) => {
            let pg_listener = bind(pg_listen).await?;
            let pg_address = pg_listener.local_addr().map_err(no_address)?;
            let limits = crate::postgres::ConnectionLimits {
                auth_timeout: Duration::from_millis(config.limits.auth_timeout_ms),
                max_message: config.limits.max_message_bytes,
                max_authenticating: config.limits.max_authenticating,
            };
            let front = crate::postgres::Frontend::new(engine.clone(), sessions.clone(), auth.clone(), tls.as_ref().map(Tls::acceptor), limits);
            background.spawn(crate::postgres::serve(pg_listener, Arc::new(front), background.clone()));
            tracing::info!(address = %pg_address, tls = tls.is_some(), "serving the PostgreSQL wire protocol");
            Some(pg_address)
        }
        None => None,
    };
    let metrics_address = match config.metrics_listen {
        Some(at) => {
            let listener = tessera_model::metrics::bind(at).await.map_err(|source| StartError::Listen { address: at, source })?;
            let bound = listener.local_addr().map_err(no_address)?;
            let (e, s) = (engine.clone(), sessions.clone());
            let served = tessera_model::metrics::serve(listener, Arc::new(move || crate::metrics::render(&e, &s)), shutdown.subscribe());
            background.spawn(served);
            tracing::info!(address = %bound, "serving metrics");
            Some(bound)
        }
        None => None,
    };
    let mut builder = tonic::transport::Server::builder().tcp_nodelay(true);
    if let Some(tls) = &tls {
        builder = builder.tls_config(tls.grpc()).map_err(|e| StartError::Security(format!("tls: {e}")))?;
    }
    let resolver = InterceptedService::new(resolver, secret.server_check());
    let mut router = builder
        .add_service(InterceptedService::new(tessera, crate::api::bearer_check(auth.clone())))
        .add_service(InterceptedService::new(admin, crate::api::bearer_check(auth)))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    match internal {
        None => router = router.add_service(resolver),
        Some(internal) => {
            let mut stop = shutdown.subscribe();
            let internal_server = tonic::transport::Server::builder().tcp_nodelay(true).add_service(resolver).serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(internal),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            );
            background.spawn(async move {
                if let Err(e) = internal_server.await {
                    tracing::error!(error = %e, "the internal service stopped");
                }
            });
            tracing::info!(address = %internal_address, "internal service for shard nodes");
        }
    }
    let task = tokio::spawn(async move {
        let result = router
            .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async move {
                let _ = signal.wait_for(|stop| *stop).await;
            })
            .await
            .map_err(|e| format!("coordinator stopped: {e}"));
        result
    });
    tracing::info!(%address, tls = config.tls.is_some(), "coordinator serving");
    Ok(CoordinatorHandle { address, pg_address, metrics_address, engine, sessions, shutdown, task, db, background })
}

/// Rolls back the transactions of idle sessions every few seconds.
fn spawn_session_reaper(sessions: Arc<Sessions>, engine: Arc<Engine>, background: &Background) {
    background.spawn_until_stopped(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            sessions.reap(engine.txns()).await;
        }
    });
}

/// The saga orchestrator's planner: the SQL layer plans a logged statement.
fn plan_saga_statement(catalog: &crate::catalog::Catalog, statement: &crate::saga::SagaStatement) -> crate::error::Result<crate::plan::saga::StatementPlan> {
    crate::sql::saga::plan_logged(catalog, &statement.sql, statement.compensation.as_deref(), statement.table_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ShardGroupConfig;
    use tokio::io::AsyncReadExt;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_stops_and_joins_every_background_task() {
        // One shard group at an address nobody serves: heartbeats fail, and
        // the coordinator runs all the same.
        let group = ShardGroupConfig { id: 1, address: Some("127.0.0.1:1".into()), members: Vec::new(), replication: Default::default(), sync_replicas: None };
        let mut config = CoordinatorConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            pg_listen: Some("127.0.0.1:0".parse().unwrap()),
            in_memory: true,
            shard_groups: vec![group],
            cluster_secret: Some("a-test-secret-long-enough-for-the-check".into()),
            ..CoordinatorConfig::default()
        };
        config.auth.trust = true;
        let handle = start(&config, bind(config.listen).await.unwrap()).await.unwrap();
        let background = handle.background.clone();
        // The journal writer, redelivery, WAL sync, heartbeats, idempotency
        // GC, the session reaper and the PostgreSQL listener at least.
        assert!(background.running() >= 7, "{} background tasks", background.running());
        // A client connected over the PostgreSQL protocol and silent.
        let mut idle = tokio::net::TcpStream::connect(handle.pg_address.unwrap()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        handle.shutdown().await.unwrap();
        assert_eq!(background.running(), 0, "every background task ended");
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut byte)).await.expect("the connection was closed");
        assert_eq!(read.unwrap_or(0), 0, "the idle connection was closed");
    }
}
