//! Coordinator configuration: a TOML file with defaults, overridden by flags.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A shard group and the address of its primary.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShardGroupConfig {
    pub id: u32,
    pub address: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinatorConfig {
    /// gRPC listen address of the public API.
    pub listen: SocketAddr,
    /// Directory of the coordinator's own RocksDB (catalog).
    pub data_dir: PathBuf,
    /// The shard groups. Recorded in the catalog on first start.
    pub shard_groups: Vec<ShardGroupConfig>,
    /// Deadline of each RPC to a shard.
    pub rpc_timeout_ms: u64,
    /// Deadline to establish a connection to a shard.
    pub connect_timeout_ms: u64,
    /// Address shards use to ask this coordinator about transaction
    /// outcomes; defaults to the address it listens on.
    pub advertise: Option<String>,
    /// How long a COMMIT decision may wait for concurrent decisions to share
    /// one fsync of the decision log (only while others are preparing).
    pub decision_log_window_us: u64,
    /// Attempts of a saga step that fails for a passing reason (lock
    /// conflict, unreachable shard) before the saga rolls back.
    pub saga_step_attempts: u32,
    /// Attempts of a compensation before the saga is parked for an operator.
    pub saga_compensation_attempts: u32,
    /// First retry delay of saga steps and compensations; doubles per
    /// attempt (with jitter) up to `saga_backoff_max_ms`.
    pub saga_backoff_base_ms: u64,
    pub saga_backoff_max_ms: u64,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            listen: "127.0.0.1:7700".parse().unwrap(),
            data_dir: PathBuf::from("tessera-data/coordinator"),
            shard_groups: Vec::new(),
            rpc_timeout_ms: 5_000,
            connect_timeout_ms: 1_000,
            advertise: None,
            decision_log_window_us: 1_000,
            saga_step_attempts: 5,
            saga_compensation_attempts: 8,
            saga_backoff_base_ms: 50,
            saga_backoff_max_ms: 2_000,
        }
    }
}

impl CoordinatorConfig {
    /// Reads a config file; the error names the file and the cause.
    pub fn from_file(path: &Path) -> Result<CoordinatorConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        let config: CoordinatorConfig = toml::from_str(&text).map_err(|e| format!("invalid config file {}: {e}", path.display()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), String> {
        let mut ids = std::collections::HashSet::new();
        for g in &self.shard_groups {
            if g.id == 0 {
                return Err("coordinator config: shard group ids start at 1".into());
            }
            if !ids.insert(g.id) {
                return Err(format!("coordinator config: shard group {} is listed twice", g.id));
            }
            if g.address.trim().is_empty() {
                return Err(format!("coordinator config: shard group {} has no address", g.id));
            }
        }
        if self.saga_step_attempts == 0 || self.saga_compensation_attempts == 0 {
            return Err("coordinator config: saga_step_attempts and saga_compensation_attempts must be at least 1".into());
        }
        if self.rpc_timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return Err("coordinator config: rpc_timeout_ms and connect_timeout_ms must be positive".into());
        }
        Ok(())
    }

    pub fn decision_log_window(&self) -> Duration {
        Duration::from_micros(self.decision_log_window_us)
    }

    pub fn saga(&self) -> crate::saga::SagaConfig {
        crate::saga::SagaConfig {
            step_attempts: self.saga_step_attempts,
            compensation_attempts: self.saga_compensation_attempts,
            backoff_base: Duration::from_millis(self.saga_backoff_base_ms),
            backoff_max: Duration::from_millis(self.saga_backoff_max_ms.max(self.saga_backoff_base_ms)),
            ..Default::default()
        }
    }

    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_millis(self.rpc_timeout_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coordinator.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:7000\"\n[[shard_groups]]\nid = 1\naddress = \"127.0.0.1:7001\"\n").unwrap();
        assert_eq!(CoordinatorConfig::from_file(&path).unwrap().shard_groups.len(), 1);
        std::fs::write(&path, "[[shard_groups]]\nid = 1\naddress = \"a\"\n[[shard_groups]]\nid = 1\naddress = \"b\"\n").unwrap();
        assert!(CoordinatorConfig::from_file(&path).unwrap_err().contains("twice"));
        std::fs::write(&path, "listen = [").unwrap();
        assert!(CoordinatorConfig::from_file(&path).unwrap_err().contains("coordinator.toml"));
    }
}
