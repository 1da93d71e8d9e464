//! Shard node configuration: a TOML file with defaults, overridden by flags.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tessera_model::config::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShardConfig {
    /// Name of this node in logs and status.
    pub node_id: String,
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// RocksDB directory.
    pub data_dir: PathBuf,
    /// Keep data in memory only (tests and experiments; nothing is durable).
    pub in_memory: bool,
    /// How long a statement waits for a row lock before failing with 40001.
    pub lock_timeout_ms: u64,
    /// Active transactions idle this long are aborted and their locks freed.
    pub idle_txn_timeout_ms: u64,
    /// How long a commit may wait for concurrent commits to share one WAL
    /// fsync (only while other transactions are in flight); 0 disables.
    pub group_commit_window_us: u64,
    /// The secret every internal call carries (see `secret.rs`); else
    /// `cluster_secret_file`, else the `TESSERA_CLUSTER_SECRET` variable.
    pub cluster_secret: Option<String>,
    pub cluster_secret_file: Option<PathBuf>,
    /// Replication log records kept for replicas that fall behind; a
    /// replica that needs an older one gets a snapshot.
    pub log_retention_records: u64,
    /// Sync replication: how long a durable write waits for its replicas
    /// before it fails.
    pub sync_timeout_ms: u64,
    /// Serve Prometheus metrics (`GET /metrics`) on this address.
    pub metrics_listen: Option<SocketAddr>,
    /// Small RocksDB buffers and no large preallocated files, for a node
    /// that holds little data (`tessera demo`).
    pub small_footprint: bool,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            node_id: "shard-1".into(),
            listen: "127.0.0.1:7701".parse().unwrap(),
            data_dir: PathBuf::from("tessera-data/shard-1"),
            in_memory: false,
            lock_timeout_ms: 2_000,
            idle_txn_timeout_ms: 30_000,
            group_commit_window_us: 1_000,
            cluster_secret: None,
            cluster_secret_file: None,
            log_retention_records: 100_000,
            sync_timeout_ms: 5_000,
            metrics_listen: None,
            small_footprint: false,
        }
    }
}

impl ShardConfig {
    /// Reads a config file; the error names the file and the cause.
    pub fn from_file(path: &Path) -> Result<ShardConfig, ConfigError> {
        let config: ShardConfig = ConfigError::read_toml(path)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id.trim().is_empty() {
            return Err("shard config: node_id must not be empty".into());
        }
        if !self.in_memory && self.data_dir.as_os_str().is_empty() {
            return Err("shard config: data_dir must be set unless in_memory = true".into());
        }
        if self.lock_timeout_ms == 0 || self.idle_txn_timeout_ms == 0 || self.sync_timeout_ms == 0 {
            return Err("shard config: lock_timeout_ms, idle_txn_timeout_ms and sync_timeout_ms must be positive".into());
        }
        if self.log_retention_records == 0 {
            return Err("shard config: log_retention_records must be at least 1".into());
        }
        Ok(())
    }

    /// The cluster secret from the config or the environment.
    pub fn secret(&self) -> Result<tessera_model::secret::ClusterSecret, tessera_model::secret::SecretError> {
        tessera_model::secret::ClusterSecret::resolve(self.cluster_secret.as_deref(), self.cluster_secret_file.as_deref(), &format!("shard {}", self.node_id))
    }

    pub fn lock_timeout(&self) -> Duration {
        Duration::from_millis(self.lock_timeout_ms)
    }

    pub fn group_commit_window(&self) -> Duration {
        Duration::from_micros(self.group_commit_window_us)
    }

    pub fn idle_txn_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_txn_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/shard.toml");
        let config = ShardConfig::from_file(&path).unwrap();
        assert!(config.secret().is_ok());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard.toml");
        std::fs::write(&path, "node_id = \"a\"\nlisten = \"127.0.0.1:1\"\nbogus = 1\n").unwrap();
        let err = ShardConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("shard.toml") && err.contains("bogus"), "{err}");
        std::fs::write(&path, "listen = \"not an address\"\n").unwrap();
        assert!(ShardConfig::from_file(&path).unwrap_err().to_string().contains("listen"));
        std::fs::write(&path, "node_id = \"a\"\nlock_timeout_ms = 5\n").unwrap();
        assert_eq!(ShardConfig::from_file(&path).unwrap().lock_timeout_ms, 5);
        assert!(ShardConfig::from_file(&dir.path().join("missing.toml")).unwrap_err().to_string().contains("missing.toml"));
    }
}
