//! An in-process cluster for scenario scripts: every shard node and the
//! coordinator run real servers on loopback, each on a tokio runtime of its
//! own, over the crash engine.
//!
//! - A node's runtime names its threads' failpoint scope, so a failpoint is
//!   armed for one node and its hits are reported to the harness
//!   ([`failpoint::wait_hit`]), not read from logs.
//! - Crashing a node shuts its runtime down (every task of the node is
//!   dropped where it stands, as SIGKILL would) and keeps only what its
//!   engine had made durable ([`CrashEngine::crash`]); a restart starts the
//!   node again on that, at the same address.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_coordinator::catalog::Catalog;
use tessera_coordinator::config::{CoordinatorConfig, ReplicationMode, ShardGroupConfig};
use tessera_coordinator::server::{self as coordinator_server, CoordinatorHandle};
use tessera_model::config::StartError;
use tessera_model::failpoint;
use tessera_shard::config::ShardConfig;
use tessera_shard::server::{self as shard_server, ShardHandle};
use tessera_storage::crash::CrashEngine;
use tokio::runtime::Runtime;

/// Gives each cluster's failpoint scopes a unique prefix (tests run in
/// parallel in one process).
static CLUSTERS: AtomicUsize = AtomicUsize::new(0);

/// How long a restarted node may take to get its port back.
const REBIND: Duration = Duration::from_secs(10);

/// A node: its runtime and server while it runs, and its engine, which
/// outlives a crash.
pub struct Node<H> {
    pub name: String,
    pub scope: String,
    pub address: SocketAddr,
    pub engine: Arc<CrashEngine>,
    runtime: Option<Runtime>,
    pub handle: Option<H>,
}

impl<H> Node<H> {
    fn new(name: &str, cluster: usize) -> Node<H> {
        Node {
            name: name.to_string(),
            scope: format!("cluster-{cluster}/{name}"),
            address: "127.0.0.1:0".parse().unwrap(),
            engine: Arc::new(CrashEngine::default()),
            runtime: None,
            handle: None,
        }
    }

    /// Starts the node's runtime and runs `start` on it with a listener on
    /// the node's address (a free port the first time, the same one after).
    fn start<F>(&mut self, start: impl FnOnce(tokio::net::TcpListener, Arc<CrashEngine>) -> F) -> Result<(), StartError>
    where
        F: std::future::Future<Output = Result<H, StartError>>,
    {
        let scope = self.scope.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name(self.name.clone())
            .on_thread_start(move || failpoint::enter_scope(&scope))
            .build()
            .map_err(|e| StartError::Other(format!("no runtime for {}: {e}", self.name)))?;
        let (address, engine) = (self.address, self.engine.clone());
        let handle = runtime.block_on(async move {
            let started = Instant::now();
            let listener = loop {
                match tokio::net::TcpListener::bind(address).await {
                    Ok(listener) => break listener,
                    Err(_) if started.elapsed() < REBIND => tokio::time::sleep(Duration::from_millis(50)).await,
                    Err(source) => return Err(StartError::Listen { address, source }),
                }
            };
            start(listener, engine).await
        })?;
        self.runtime = Some(runtime);
        self.handle = Some(handle);
        Ok(())
    }

    /// Stops the node at once, as SIGKILL would, and keeps only what its
    /// engine had made durable. Its failpoints are disarmed.
    pub fn crash(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
        self.handle = None;
        self.engine = Arc::new(self.engine.crash());
        failpoint::disarm(&self.scope);
    }
}

/// How a cluster is laid out.
pub struct Layout {
    pub groups: usize,
    /// Replicas per group (0: none).
    pub replicas: usize,
    pub replication: ReplicationMode,
}

pub struct Sim {
    secret: String,
    /// Shard nodes by group: `shard-<g>` is the first primary, its replicas
    /// `shard-<g>b`, `shard-<g>c`, ...
    pub groups: Vec<Vec<Node<ShardHandle>>>,
    pub coordinator: Node<CoordinatorHandle>,
    replication: ReplicationMode,
}

impl Sim {
    pub fn start(layout: Layout) -> Result<Sim, StartError> {
        let id = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let mut sim = Sim {
            secret: uuid::Uuid::new_v4().simple().to_string(),
            groups: Vec::new(),
            coordinator: Node::new("coordinator", id),
            replication: if layout.replicas == 0 { ReplicationMode::None } else { layout.replication },
        };
        for g in 1..=layout.groups {
            let mut members = Vec::new();
            for r in 0..=layout.replicas {
                let suffix = if r == 0 { String::new() } else { ((b'a' + r as u8) as char).to_string() };
                members.push(Node::new(&format!("shard-{g}{suffix}"), id));
            }
            sim.groups.push(members);
        }
        for (g, r) in sim.node_indexes() {
            sim.start_shard(g, r)?;
        }
        sim.start_coordinator()?;
        Ok(sim)
    }

    fn node_indexes(&self) -> Vec<(usize, usize)> {
        self.groups.iter().enumerate().flat_map(|(g, members)| (0..members.len()).map(move |r| (g, r))).collect()
    }

    /// The shard node called `name`.
    pub fn shard(&mut self, name: &str) -> Option<&mut Node<ShardHandle>> {
        self.groups.iter_mut().flatten().find(|n| n.name == name)
    }

    pub fn shards(&self) -> impl Iterator<Item = &Node<ShardHandle>> {
        self.groups.iter().flatten()
    }

    fn shard_config(&self, node: &Node<ShardHandle>) -> ShardConfig {
        ShardConfig {
            node_id: node.name.clone(),
            in_memory: true,
            lock_timeout_ms: 1_000,
            cluster_secret: Some(self.secret.clone()),
            sync_timeout_ms: 2_000,
            ..ShardConfig::default()
        }
    }

    pub fn start_shard(&mut self, g: usize, r: usize) -> Result<(), StartError> {
        let config = self.shard_config(&self.groups[g][r]);
        let node = &mut self.groups[g][r];
        node.start(|listener, engine| async move { shard_server::start_on(&config, listener, engine).await })?;
        node.address = node.handle.as_ref().unwrap().address;
        Ok(())
    }

    fn coordinator_config(&self) -> CoordinatorConfig {
        let groups = self
            .groups
            .iter()
            .enumerate()
            .map(|(g, members)| ShardGroupConfig {
                id: g as u32 + 1,
                address: None,
                members: members.iter().map(|n| n.address.to_string()).collect(),
                replication: self.replication,
                sync_replicas: None,
            })
            .collect();
        let mut config = CoordinatorConfig {
            listen: self.coordinator.address,
            in_memory: true,
            shard_groups: groups,
            cluster_secret: Some(self.secret.clone()),
            rpc_timeout_ms: 1_000,
            connect_timeout_ms: 500,
            heartbeat_interval_ms: 100,
            lease_ms: 700,
            failover_timeout_ms: 1_400,
            saga_backoff_base_ms: 20,
            saga_backoff_max_ms: 200,
            ..CoordinatorConfig::default()
        };
        config.auth.trust = true;
        config
    }

    pub fn start_coordinator(&mut self) -> Result<(), StartError> {
        let config = self.coordinator_config();
        self.coordinator.start(|listener, engine| async move {
            let catalog = Catalog::on(engine).map_err(|e| StartError::Storage(e.to_string()))?;
            coordinator_server::start_on(&config, listener, catalog).await
        })?;
        self.coordinator.address = self.coordinator.handle.as_ref().unwrap().address;
        Ok(())
    }

    /// Stops the coordinator the way an operator does (its shutdown: stop
    /// signal, background tasks joined); it keeps all it wrote.
    pub fn stop_coordinator(&mut self) -> Result<(), StartError> {
        let node = &mut self.coordinator;
        let (Some(runtime), Some(handle)) = (node.runtime.take(), node.handle.take()) else { return Ok(()) };
        let stopped = runtime.block_on(handle.shutdown());
        runtime.shutdown_timeout(Duration::from_secs(5));
        failpoint::disarm(&node.scope);
        stopped.map_err(StartError::Other)
    }

    /// Restarts the node called `name` after a crash.
    pub fn restart(&mut self, name: &str) -> Result<(), StartError> {
        if name == "coordinator" {
            return self.start_coordinator();
        }
        let (g, r) =
            self.node_indexes().into_iter().find(|(g, r)| self.groups[*g][*r].name == name).ok_or_else(|| StartError::Other(format!("no node {name}")))?;
        self.start_shard(g, r)
    }

    /// Every node's address with its name, to keep ports out of outputs.
    pub fn names(&self) -> Vec<(String, String)> {
        let mut names: Vec<(String, String)> = self.shards().map(|n| (n.address.to_string(), n.name.clone())).collect();
        names.push((self.coordinator.address.to_string(), "coordinator".into()));
        names
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.coordinator.crash();
        for node in self.groups.iter_mut().flatten() {
            node.crash();
        }
    }
}
