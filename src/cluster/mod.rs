//! Whole clusters on loopback.
//!
//! - This file: [`LocalCluster`], shard nodes and a coordinator in one
//!   process, each on its own free port, with RocksDB under one directory
//!   (`tessera demo`, `tessera bench`).
//! - [`process`]: [`process::ProcessCluster`], every node a `tessera`
//!   process that can be killed, paused and restarted (benchmarks that
//!   inject faults, the end-to-end tests).

pub mod process;
pub mod proxy;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tessera_coordinator::config::{CoordinatorConfig, ReplicationMode, ShardGroupConfig};
use tessera_coordinator::server::{self as coordinator_server, CoordinatorHandle};
use tessera_model::config::StartError;
use tessera_shard::config::ShardConfig;
use tessera_shard::server::{self as shard_server, ShardHandle};

pub struct ClusterOptions {
    pub shards: usize,
    /// Group-commit window of shards and of the decision log; None keeps
    /// the defaults.
    pub group_commit_window: Option<std::time::Duration>,
    /// Keep data here; a temporary directory (removed on shutdown) otherwise.
    pub data_dir: Option<PathBuf>,
    /// Also serve the PostgreSQL protocol on a free loopback port.
    pub postgres: bool,
    /// Replicas per shard group, and how they replicate (ignored without
    /// replicas).
    pub replicas: usize,
    pub replication: ReplicationMode,
    /// Small RocksDB buffers and files on every node (the demo).
    pub small_footprint: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            shards: 3,
            group_commit_window: None,
            data_dir: None,
            postgres: false,
            replicas: 0,
            replication: ReplicationMode::None,
            small_footprint: false,
        }
    }
}

/// One shard group of a local cluster: its nodes, primary first.
pub struct LocalGroup {
    pub id: u32,
    pub members: Vec<SocketAddr>,
}

pub struct LocalCluster {
    pub address: SocketAddr,
    /// Where the PostgreSQL protocol is served, if asked for.
    pub pg_address: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub groups: Vec<LocalGroup>,
    pub replication: ReplicationMode,
    coordinator: CoordinatorHandle,
    shards: Vec<ShardHandle>,
    _temp: Option<tempfile::TempDir>,
}

impl LocalCluster {
    pub async fn start(options: ClusterOptions) -> Result<LocalCluster, StartError> {
        let (temp, data_dir) = match options.data_dir {
            Some(dir) => (None, dir),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("tessera-demo-")
                    .tempdir()
                    .map_err(|e| StartError::Storage(format!("cannot create a temporary directory: {e}")))?;
                let path = temp.path().to_path_buf();
                (Some(temp), path)
            }
        };
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        // The nodes of one process share a random secret; clients need no
        // credentials (the cluster listens on loopback only).
        let secret = Some(uuid::Uuid::new_v4().simple().to_string());
        let mut shards = Vec::new();
        let mut groups = Vec::new();
        let mut local = Vec::new();
        let replication = if options.replicas == 0 { ReplicationMode::None } else { options.replication };
        for i in 1..=options.shards {
            let mut members = Vec::new();
            for r in 0..=options.replicas {
                let name = if r == 0 { format!("shard-{i}") } else { format!("shard-{i}-replica-{r}") };
                let mut config = ShardConfig {
                    node_id: name.clone(),
                    listen: loopback,
                    data_dir: data_dir.join(&name),
                    cluster_secret: secret.clone(),
                    small_footprint: options.small_footprint,
                    ..ShardConfig::default()
                };
                if let Some(window) = options.group_commit_window {
                    config.group_commit_window_us = window.as_micros() as u64;
                }
                let handle = shard_server::start(&config, shard_server::bind(loopback).await?).await?;
                members.push(handle.address);
                shards.push(handle);
            }
            let addresses: Vec<String> = members.iter().map(|a| a.to_string()).collect();
            groups.push(ShardGroupConfig { id: i as u32, address: None, members: addresses, replication, sync_replicas: None });
            local.push(LocalGroup { id: i as u32, members });
        }
        let mut config = CoordinatorConfig {
            listen: loopback,
            pg_listen: options.postgres.then_some(loopback),
            data_dir: data_dir.join("coordinator"),
            shard_groups: groups,
            cluster_secret: secret,
            small_footprint: options.small_footprint,
            ..CoordinatorConfig::default()
        };
        config.auth.trust = true;
        if let Some(window) = options.group_commit_window {
            config.decision_log_window_us = window.as_micros() as u64;
        }
        let coordinator = coordinator_server::start(&config, coordinator_server::bind(loopback).await?).await?;
        let cluster = LocalCluster {
            address: coordinator.address,
            pg_address: coordinator.pg_address,
            data_dir,
            groups: local,
            replication,
            coordinator,
            shards,
            _temp: temp,
        };
        cluster.wait_for_roles().await.map_err(StartError::Other)?;
        Ok(cluster)
    }

    /// Waits until every primary has its first lease (writes are refused
    /// until then) and every replica follows.
    async fn wait_for_roles(&self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            let ready = self.groups.iter().all(|g| {
                self.coordinator.engine.failover().members(g.id).iter().all(|m| m.reachable)
                    && self.shards.iter().filter(|s| g.members.contains(&s.address)).all(|s| s.node.epoch() >= 1)
            });
            if ready {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Err("the shard nodes did not take up their roles within 30 s".into())
    }

    /// Addresses of the shard groups' primaries, in group order.
    pub fn shard_addresses(&self) -> Vec<SocketAddr> {
        self.groups.iter().map(|g| g.members[0]).collect()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the coordinator, then the shards; removes a temporary directory.
    pub async fn shutdown(self) {
        let _ = self.coordinator.shutdown().await;
        for shard in self.shards {
            let _ = shard.shutdown().await;
        }
    }
}
