//! Coordinator configuration: a TOML file with defaults, overridden by flags.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tessera_model::config::ConfigError;

pub use crate::catalog::ReplicationMode;

/// A shard group: its members (the first is the initial primary) and how
/// they replicate.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShardGroupConfig {
    pub id: u32,
    /// A group of one node (no replicas); or
    #[serde(default)]
    pub address: Option<String>,
    /// the group's nodes, primary first.
    #[serde(default)]
    pub members: Vec<String>,
    /// none (one node), async or sync.
    #[serde(default)]
    pub replication: ReplicationMode,
    /// Sync groups: how many replicas must have a write before it is
    /// acknowledged (default: all of them).
    #[serde(default)]
    pub sync_replicas: Option<u32>,
}

impl ShardGroupConfig {
    /// A group of one node.
    pub fn single(id: u32, address: impl Into<String>) -> ShardGroupConfig {
        ShardGroupConfig { id, address: Some(address.into()), members: Vec::new(), replication: ReplicationMode::None, sync_replicas: None }
    }

    /// The group's nodes, primary first.
    pub fn all_members(&self) -> Vec<String> {
        self.address.iter().chain(self.members.iter()).cloned().collect()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let members = self.all_members();
        let group = self.id;
        if members.is_empty() || members.iter().any(|m| m.trim().is_empty()) {
            return Err(format!("coordinator config: shard group {group} has no address (set address, or members)").into());
        }
        let unique: std::collections::HashSet<_> = members.iter().collect();
        if unique.len() != members.len() {
            return Err(format!("coordinator config: shard group {group} lists a member twice").into());
        }
        match (self.replication, members.len()) {
            (ReplicationMode::None, 1) => {}
            (ReplicationMode::None, n) => {
                return Err(format!("coordinator config: shard group {group} has {n} members: set replication = \"sync\" or \"async\"").into())
            }
            (_, 1) => return Err(format!("coordinator config: shard group {group} replicates but has one member; list its replicas in members").into()),
            _ => {}
        }
        if let Some(k) = self.sync_replicas {
            if self.replication != ReplicationMode::Sync || k == 0 || k as usize > members.len() - 1 {
                return Err(
                    format!("coordinator config: shard group {group}: sync_replicas must be between 1 and its number of replicas, in a sync group").into()
                );
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinatorConfig {
    /// gRPC listen address of the public API.
    pub listen: SocketAddr,
    /// Listen address of the PostgreSQL wire protocol (psql, drivers);
    /// none: not served.
    pub pg_listen: Option<SocketAddr>,
    /// Serve Prometheus metrics (`GET /metrics`) on this address.
    pub metrics_listen: Option<SocketAddr>,
    /// Directory of the coordinator's own RocksDB (catalog and journal).
    pub data_dir: PathBuf,
    /// Keep the catalog and the journal in memory only (tests and
    /// experiments; nothing survives a restart, so no decision does either).
    pub in_memory: bool,
    /// Small RocksDB buffers and no large preallocated files (`tessera demo`).
    pub small_footprint: bool,
    /// The shard groups. Recorded in the catalog on first start.
    pub shard_groups: Vec<ShardGroupConfig>,
    /// Deadline of each RPC to a shard.
    pub rpc_timeout_ms: u64,
    /// Deadline to establish a connection to a shard.
    pub connect_timeout_ms: u64,
    /// Address shards use to ask this coordinator about transaction
    /// outcomes; defaults to the address the internal service listens on.
    pub advertise: Option<String>,
    /// Where the internal service for shard nodes listens (plain gRPC,
    /// guarded by the cluster secret). Needed when `[tls]` is set, since
    /// the public port then speaks TLS only; without TLS it defaults to the
    /// public port.
    pub internal_listen: Option<SocketAddr>,
    /// How long a COMMIT decision may wait for concurrent decisions to share
    /// one fsync of the decision log (only while others are preparing).
    pub decision_log_window_us: u64,
    /// How long old row versions are kept for snapshots: a read at a
    /// timestamp older than this (and below every snapshot still open) may
    /// find its versions collected and fails with 72000.
    pub gc_retention_ms: u64,
    /// Attempts of a saga step that fails for a passing reason (lock
    /// conflict, unreachable shard) before the saga rolls back.
    pub saga_step_attempts: u32,
    /// Attempts of a compensation before the saga is parked for an operator.
    pub saga_compensation_attempts: u32,
    /// First retry delay of saga steps and compensations; doubles per
    /// attempt (with jitter) up to `saga_backoff_max_ms`.
    pub saga_backoff_base_ms: u64,
    pub saga_backoff_max_ms: u64,
    /// How long an idempotency key's outcome is kept.
    pub idempotency_ttl_s: u64,
    /// How often the coordinator heartbeats every shard node.
    pub heartbeat_interval_ms: u64,
    /// How long a heartbeat lets a primary of a replicated group take writes.
    pub lease_ms: u64,
    /// A primary that has not answered heartbeats for this long is replaced
    /// by its most up-to-date replica. Must exceed the lease.
    pub failover_timeout_ms: u64,
    /// The most the wall clocks of the coordinator and shard nodes are
    /// assumed to differ by. A lease ends at a wall-clock time the
    /// coordinator names; before promoting a replica it waits until the old
    /// primary's last lease has ended by this much on every clock.
    pub max_clock_skew_ms: u64,
    /// Calls in a row a shard node may leave unanswered before its circuit
    /// breaker opens, and how long it stays open.
    pub breaker_failure_threshold: u32,
    pub breaker_open_ms: u64,
    /// Calls to one shard node in flight at once (bulkhead).
    pub max_in_flight_per_node: usize,
    /// The secret carried by calls between the coordinator and shard nodes;
    /// else `cluster_secret_file`, else `TESSERA_CLUSTER_SECRET`.
    pub cluster_secret: Option<String>,
    pub cluster_secret_file: Option<PathBuf>,
    /// Who may connect (gRPC bearer tokens, PostgreSQL passwords).
    pub auth: AuthConfig,
    /// Certificates for the client endpoints (gRPC and PostgreSQL); none:
    /// plain TCP.
    pub tls: Option<TlsConfig>,
    pub limits: LimitsConfig,
}

/// Client authentication. Required unless `trust` is set: a coordinator
/// with neither users nor tokens refuses to start.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accept every client without credentials (`tessera demo`, tests on a
    /// private machine). Never on a shared network.
    pub trust: bool,
    /// PostgreSQL users (SCRAM-SHA-256).
    pub users: Vec<UserConfig>,
    /// gRPC bearer tokens.
    pub tokens: Vec<TokenConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// The password in clear text; or
    pub password: Option<String>,
    /// a PostgreSQL SCRAM verifier
    /// (`SCRAM-SHA-256$<iterations>:<salt>$<stored key>:<server key>`, as
    /// `tessera passwd` prints), so the file holds no password.
    pub scram: Option<String>,
    /// May use the places `limits.reserved_sessions` keeps free.
    #[serde(default)]
    pub operator: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who the token belongs to (logs, sessions).
    pub name: String,
    /// The token in clear text; or
    pub token: Option<String>,
    /// its SHA-256, hex-encoded.
    pub sha256: Option<String>,
    /// May use the places `limits.reserved_sessions` keeps free.
    #[serde(default)]
    pub operator: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Limits on what one client may ask for; each has its own error.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest gRPC message accepted or sent (a response that would be
    /// larger fails; ExecuteStream splits rows into smaller messages).
    pub max_message_bytes: usize,
    /// Longest SQL text of one request.
    pub max_statement_bytes: usize,
    /// Most rows one statement may return.
    pub max_result_rows: u64,
    /// Most sessions open at once (gRPC sessions plus PostgreSQL connections).
    pub max_sessions: usize,
    /// How deeply a statement's expressions (or set operations) may nest
    /// once long runs of one operator are flattened; deeper fails with
    /// SQLSTATE 54001.
    pub max_expr_depth: usize,
    /// How long a PostgreSQL connection may take to authenticate; then it is
    /// closed (PostgreSQL's `authentication_timeout`).
    pub auth_timeout_ms: u64,
    /// The last places of `max_sessions` kept for users and tokens marked
    /// `operator = true` (PostgreSQL's `superuser_reserved_connections`).
    /// Unset: 3, or fewer when `max_sessions` is below 300 (1 per 100).
    pub reserved_sessions: Option<usize>,
    /// Most PostgreSQL connections authenticating at once: when one more
    /// arrives, the oldest is closed, so connections that never finish
    /// authenticating cannot keep anyone out.
    pub max_authenticating: usize,
    /// Default statement timeout; 0: none. Sessions change it with
    /// `SET statement_timeout`.
    pub statement_timeout_ms: u64,
}

impl LimitsConfig {
    pub fn reserved_sessions(&self) -> usize {
        self.reserved_sessions.unwrap_or((self.max_sessions / 100).min(3))
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_bytes: 64 * 1024 * 1024,
            max_statement_bytes: 4 * 1024 * 1024,
            max_result_rows: 1_000_000,
            max_sessions: 1_000,
            max_expr_depth: crate::sql::shape::DEFAULT_MAX_EXPR_DEPTH,
            auth_timeout_ms: 10_000,
            reserved_sessions: None,
            max_authenticating: 64,
            statement_timeout_ms: 0,
        }
    }
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            listen: "127.0.0.1:7700".parse().unwrap(),
            pg_listen: None,
            metrics_listen: None,
            small_footprint: false,
            data_dir: PathBuf::from("tessera-data/coordinator"),
            in_memory: false,
            shard_groups: Vec::new(),
            rpc_timeout_ms: 5_000,
            connect_timeout_ms: 1_000,
            advertise: None,
            internal_listen: None,
            decision_log_window_us: 1_000,
            gc_retention_ms: 10_000,
            saga_step_attempts: 5,
            saga_compensation_attempts: 8,
            saga_backoff_base_ms: 50,
            saga_backoff_max_ms: 2_000,
            idempotency_ttl_s: 24 * 3600,
            heartbeat_interval_ms: 250,
            lease_ms: 1_500,
            failover_timeout_ms: 3_000,
            max_clock_skew_ms: 250,
            breaker_failure_threshold: 5,
            breaker_open_ms: 2_000,
            max_in_flight_per_node: 256,
            cluster_secret: None,
            cluster_secret_file: None,
            auth: AuthConfig::default(),
            tls: None,
            limits: LimitsConfig::default(),
        }
    }
}

impl CoordinatorConfig {
    /// Reads a config file; the error names the file and the cause.
    pub fn from_file(path: &Path) -> Result<CoordinatorConfig, ConfigError> {
        let config: CoordinatorConfig = ConfigError::read_toml(path)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut ids = std::collections::HashSet::new();
        for g in &self.shard_groups {
            if g.id == 0 {
                return Err("coordinator config: shard group ids start at 1".into());
            }
            if !ids.insert(g.id) {
                return Err(format!("coordinator config: shard group {} is listed twice", g.id).into());
            }
            g.validate()?;
        }
        if self.heartbeat_interval_ms == 0
            || self.failover_timeout_ms < self.lease_ms + 2 * self.heartbeat_interval_ms
            || self.lease_ms < 2 * self.heartbeat_interval_ms
        {
            return Err("coordinator config: need heartbeat_interval_ms > 0, lease_ms >= 2 heartbeats, and failover_timeout_ms >= lease_ms + 2 heartbeats (a primary's lease must run out before its replica is promoted)".into());
        }
        if self.saga_step_attempts == 0 || self.saga_compensation_attempts == 0 {
            return Err("coordinator config: saga_step_attempts and saga_compensation_attempts must be at least 1".into());
        }
        if self.rpc_timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return Err("coordinator config: rpc_timeout_ms and connect_timeout_ms must be positive".into());
        }
        if !self.auth.trust && self.auth.users.is_empty() && self.auth.tokens.is_empty() {
            return Err("coordinator config: clients must authenticate: add [[auth.users]] (PostgreSQL) or [[auth.tokens]] (gRPC), \
                        or set auth.trust = true to accept every client (private machines only)"
                .into());
        }
        for user in &self.auth.users {
            if user.name.trim().is_empty() || user.password.is_some() == user.scram.is_some() {
                return Err(format!("coordinator config: user \"{}\" needs exactly one of password and scram", user.name).into());
            }
        }
        for token in &self.auth.tokens {
            if token.token.is_some() == token.sha256.is_some() {
                return Err(format!("coordinator config: token \"{}\" needs exactly one of token and sha256", token.name).into());
            }
        }
        if self.tls.is_some() && self.internal_listen.is_none() {
            return Err(
                "coordinator config: with [tls], set internal_listen: the plain port shard nodes reach the coordinator on (guarded by the cluster secret)"
                    .into(),
            );
        }
        let l = &self.limits;
        if l.max_message_bytes < 1024 || l.max_statement_bytes == 0 || l.max_result_rows == 0 || l.max_sessions == 0 {
            return Err(
                "coordinator config: limits.max_message_bytes must be at least 1024, and max_statement_bytes, max_result_rows and max_sessions positive".into(),
            );
        }
        if l.auth_timeout_ms == 0 || l.max_authenticating == 0 {
            return Err("coordinator config: limits.auth_timeout_ms and limits.max_authenticating must be positive".into());
        }
        if l.reserved_sessions() >= l.max_sessions {
            return Err("coordinator config: limits.reserved_sessions must be below limits.max_sessions".into());
        }
        if !(16..=10_000).contains(&l.max_expr_depth) {
            return Err("coordinator config: limits.max_expr_depth must be between 16 and 10000".into());
        }
        Ok(())
    }

    /// The cluster secret from the config or the environment.
    pub fn secret(&self) -> Result<tessera_model::secret::ClusterSecret, tessera_model::secret::SecretError> {
        tessera_model::secret::ClusterSecret::resolve(self.cluster_secret.as_deref(), self.cluster_secret_file.as_deref(), "coordinator")
    }

    pub fn guards(&self) -> crate::resilience::GuardConfig {
        crate::resilience::GuardConfig {
            failure_threshold: self.breaker_failure_threshold.max(1),
            open_for: Duration::from_millis(self.breaker_open_ms),
            max_in_flight: self.max_in_flight_per_node.max(1),
            ..Default::default()
        }
    }

    pub fn failover(&self) -> crate::failover::FailoverConfig {
        crate::failover::FailoverConfig {
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval_ms),
            lease: Duration::from_millis(self.lease_ms),
            failover_timeout: Duration::from_millis(self.failover_timeout_ms),
            max_clock_skew: Duration::from_millis(self.max_clock_skew_ms),
        }
    }

    pub fn gc_retention(&self) -> Duration {
        Duration::from_millis(self.gc_retention_ms)
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
    fn the_sample_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/coordinator.toml");
        let config = CoordinatorConfig::from_file(&path).unwrap();
        assert_eq!(config.shard_groups.len(), 3);
        assert!(config.pg_listen.is_some() && !config.auth.trust && config.secret().is_ok());
    }

    #[test]
    fn config_files_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coordinator.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:7000\"\nauth.trust = true\n[[shard_groups]]\nid = 1\naddress = \"127.0.0.1:7001\"\n").unwrap();
        assert_eq!(CoordinatorConfig::from_file(&path).unwrap().shard_groups.len(), 1);
        std::fs::write(&path, "[[shard_groups]]\nid = 1\naddress = \"a\"\n[[shard_groups]]\nid = 1\naddress = \"b\"\n").unwrap();
        assert!(CoordinatorConfig::from_file(&path).unwrap_err().to_string().contains("twice"));
        let group = |body: &str| {
            std::fs::write(&path, format!("auth.trust = true\n[[shard_groups]]\nid = 1\n{body}")).unwrap();
            CoordinatorConfig::from_file(&path)
        };
        assert!(group("members = [\"a\", \"b\"]\nreplication = \"sync\"\n").is_ok());
        assert!(group("members = [\"a\", \"b\"]\n").unwrap_err().to_string().contains("set replication"));
        assert!(group("members = [\"a\"]\nreplication = \"async\"\n").unwrap_err().to_string().contains("one member"));
        assert!(group("members = [\"a\", \"a\"]\nreplication = \"sync\"\n").unwrap_err().to_string().contains("twice"));
        assert!(group("members = [\"a\", \"b\"]\nreplication = \"sync\"\nsync_replicas = 2\n").unwrap_err().to_string().contains("sync_replicas"));
        assert!(group("members = [\"a\", \"b\"]\nreplication = \"quorum\"\n").unwrap_err().to_string().contains("replication"));
        std::fs::write(&path, "listen = [").unwrap();
        assert!(CoordinatorConfig::from_file(&path).unwrap_err().to_string().contains("coordinator.toml"));
        std::fs::write(&path, "[[shard_groups]]\nid = 1\naddress = \"a\"\n").unwrap();
        assert!(CoordinatorConfig::from_file(&path).unwrap_err().to_string().contains("authenticate"), "credentials are required by default");
        std::fs::write(&path, "[[auth.users]]\nname = \"app\"\n").unwrap();
        assert!(CoordinatorConfig::from_file(&path).unwrap_err().to_string().contains("exactly one of password and scram"));
        std::fs::write(&path, "[[auth.tokens]]\nname = \"app\"\ntoken = \"t\"\n[limits]\nmax_sessions = 0\n").unwrap();
        assert!(CoordinatorConfig::from_file(&path).unwrap_err().to_string().contains("max_sessions"));
    }
}
