//! The cluster a benchmark runs against: a coordinator given with `--host`,
//! or one the bench starts itself, in this process or as separate processes
//! (which it can SIGKILL), with the replication asked for.

use crate::client::{Client, ClientBuilder};
use crate::cluster::process::{ProcessCluster, ProcessSpec};
use crate::cluster::{ClusterOptions, LocalCluster};
use std::path::PathBuf;
use std::time::Duration;
use tessera_coordinator::config::ReplicationMode;

pub struct TargetOptions {
    /// An existing coordinator (and its token); the bench starts none.
    pub host: Option<String>,
    pub token: Option<String>,
    pub groups: usize,
    pub replication: ReplicationMode,
    pub replicas: usize,
    /// Start every node as a process (needed to kill one).
    pub processes: bool,
    pub group_commit_window: Option<Duration>,
    /// The `tessera` binary, for process clusters.
    pub binary: PathBuf,
}

pub enum Target {
    External(ClientBuilder),
    Local(Box<LocalCluster>, ClientBuilder),
    Processes(Box<ProcessCluster>, ClientBuilder),
}

impl Target {
    pub async fn start(o: &TargetOptions) -> anyhow::Result<Target> {
        if let Some(host) = &o.host {
            let mut builder = Client::builder(host);
            if let Some(token) = &o.token {
                builder = builder.token(token);
            }
            return Ok(Target::External(builder));
        }
        let replication = if o.replicas == 0 { ReplicationMode::None } else { o.replication };
        if !o.processes {
            let options = ClusterOptions {
                shards: o.groups,
                group_commit_window: o.group_commit_window,
                replicas: if replication == ReplicationMode::None { 0 } else { o.replicas },
                replication,
                ..ClusterOptions::default()
            };
            let cluster = LocalCluster::start(options).await.map_err(anyhow::Error::msg)?;
            let builder = Client::builder(&cluster.address.to_string());
            return Ok(Target::Local(Box::new(cluster), builder));
        }
        let top = o.group_commit_window.map(|w| format!("decision_log_window_us = {}\n", w.as_micros())).unwrap_or_default();
        let shard_toml = o.group_commit_window.map(|w| format!("group_commit_window_us = {}\n", w.as_micros()));
        let (spec, token) = process_spec(&o.binary, o.groups, replication, o.replicas, &top, "", shard_toml);
        let cluster = ProcessCluster::start(spec).map_err(anyhow::Error::msg)?;
        let builder = Client::builder(&cluster.coordinator.address).token(token);
        wait_ready(&builder).await?;
        Ok(Target::Processes(Box::new(cluster), builder))
    }

    pub fn client(&self) -> &ClientBuilder {
        match self {
            Target::External(b) | Target::Local(_, b) | Target::Processes(_, b) => b,
        }
    }

    /// SIGKILLs the current primary of `group`; its address.
    pub async fn kill_primary(&mut self, group: u32) -> anyhow::Result<String> {
        let Target::Processes(cluster, builder) = self else { anyhow::bail!("only a cluster of processes can have a node killed (use --processes)") };
        let mut admin = builder.clone().connect().await?;
        let map = admin.shard_map().await?;
        let primary = map
            .shard_groups
            .iter()
            .find(|g| g.id == group)
            .and_then(|g| g.members.iter().find(|m| m.role == "primary"))
            .map(|m| m.address.clone())
            .ok_or_else(|| anyhow::anyhow!("shard group {group} has no primary"))?;
        cluster.node(&primary).ok_or_else(|| anyhow::anyhow!("no process listens on {primary}"))?.kill();
        Ok(primary)
    }

    pub async fn shutdown(self) {
        if let Target::Local(cluster, _) = self {
            cluster.shutdown().await;
        }
    }
}

/// Waits until every node of the cluster answers the coordinator.
async fn wait_ready(builder: &ClientBuilder) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut client) = builder.clone().connect().await {
            if let Ok(status) = client.cluster_status().await {
                if !status.groups.is_empty() && status.groups.iter().all(|g| g.members.iter().all(|m| m.reachable)) {
                    return Ok(());
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("the cluster's nodes did not all answer within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A bench's cluster of processes: `replicas` per group (none without
/// replication), a fresh secret, and a coordinator config with `top`
/// lines, `limits` lines and a fresh bearer token, which is returned.
pub fn process_spec(
    binary: &std::path::Path,
    groups: usize,
    replication: ReplicationMode,
    replicas: usize,
    top: &str,
    limits: &str,
    shard_toml: Option<String>,
) -> (ProcessSpec, String) {
    let token = uuid::Uuid::new_v4().simple().to_string();
    let coordinator_toml = format!("{top}[limits]\nmax_sessions = 10000\n{limits}[[auth.tokens]]\nname = \"bench\"\ntoken = \"{token}\"\n");
    let spec = ProcessSpec {
        binary: binary.to_path_buf(),
        groups,
        replicas: if replication == ReplicationMode::None { 0 } else { replicas },
        replication,
        // With two or more replicas a sync group waits for any one of them.
        sync_replicas: (replication == ReplicationMode::Sync && replicas > 1).then_some(1),
        coordinator_toml,
        shard_toml,
        shard_env: Vec::new(),
        coordinator_env: Vec::new(),
        secret: uuid::Uuid::new_v4().simple().to_string(),
        dir: None,
        env: Vec::new(),
        front: None,
    };
    (spec, token)
}
