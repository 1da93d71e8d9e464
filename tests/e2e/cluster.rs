//! A cluster of real `tessera` processes on free loopback ports.
//!
//! Each node starts with `--listen 127.0.0.1:0` (or its old address on a
//! restart) and prints its address on stdout; nodes are killed when dropped,
//! and the data directory is removed with the cluster.

use std::path::PathBuf;
use std::time::Duration;
use tessera::client::{Client, ClientError, StatementResult};
use tessera::cluster::process::{ProcessCluster, ProcessNode, ProcessSpec};
use tessera_coordinator::config::ReplicationMode;

pub const BIN: &str = env!("CARGO_BIN_EXE_tessera");

/// The cluster secret of test clusters (shards refuse calls without it).
pub const CLUSTER_SECRET: &str = "test-cluster-secret-0123456789";
/// The bearer token test coordinators accept.
pub const TOKEN: &str = "test-token-0123456789";
/// The PostgreSQL user and password test coordinators accept.
pub const PG_USER: &str = "tessera";
pub const PG_PASSWORD: &str = "test-password";

/// The coordinator config lines every test cluster uses: a token and a user.
pub fn auth_toml() -> String {
    format!("[[auth.tokens]]\nname = \"test\"\ntoken = \"{TOKEN}\"\n\n[[auth.users]]\nname = \"{PG_USER}\"\npassword = \"{PG_PASSWORD}\"\n")
}

/// A `tessera` process whose failures fail the test.
pub struct Node(pub ProcessNode);

impl std::ops::Deref for Node {
    type Target = ProcessNode;
    fn deref(&self) -> &ProcessNode {
        &self.0
    }
}

impl std::ops::DerefMut for Node {
    fn deref_mut(&mut self) -> &mut ProcessNode {
        &mut self.0
    }
}

impl Node {
    /// The rest of the stdout line that starts with `prefix`, waiting for it.
    pub fn stdout_line(&self, prefix: &str, timeout: Duration) -> String {
        self.0.stdout_line(prefix, timeout).unwrap_or_else(|| panic!("no stdout line starting with {prefix:?} within {timeout:?}"))
    }

    /// Waits until the node's log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        assert!(self.0.wait_for_log(needle, timeout), "{needle:?} did not appear in {} within {timeout:?}", self.0.log.display());
    }

    /// Starts the process again on the same address.
    pub fn restart(&mut self) {
        self.0.restart().unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn pause(&mut self) {
        self.0.pause().unwrap();
    }

    pub fn resume(&mut self) {
        self.0.resume().unwrap();
    }
}

/// What a test cluster looks like.
pub struct Spec<'a> {
    pub groups: usize,
    /// Replicas per group, and how they replicate ("sync" or "async").
    pub replicas: usize,
    pub replication: &'a str,
    pub coordinator_failpoints: Option<&'a str>,
    /// (group, member: 0 the first primary, 1.. its replicas, failpoints).
    pub shard_failpoints: Option<(usize, usize, &'a str)>,
    pub coordinator_toml: Option<&'a str>,
    /// A config file for every shard node.
    pub shard_toml: Option<&'a str>,
    /// `RUST_LOG` for every process.
    pub log_filter: Option<&'a str>,
    /// Sync groups: replicas that must have each write (default: all).
    pub sync_replicas: Option<u32>,
    /// Extra environment for one shard node: (group, member, name, value).
    pub shard_var: Option<(usize, usize, &'a str, &'a str)>,
    /// Where data and logs go (a temporary directory otherwise).
    pub dir: Option<PathBuf>,
}

impl Default for Spec<'_> {
    fn default() -> Self {
        Spec {
            groups: 3,
            replicas: 0,
            replication: "sync",
            coordinator_failpoints: None,
            shard_failpoints: None,
            coordinator_toml: None,
            shard_toml: None,
            log_filter: None,
            sync_replicas: None,
            shard_var: None,
            dir: None,
        }
    }
}

/// Fast failure detection for tests (the defaults are 250 ms, 1.5 s, 3 s).
pub const FAST_FAILOVER: &str = "heartbeat_interval_ms = 100\nlease_ms = 700\nfailover_timeout_ms = 1400\n";

pub struct TestCluster {
    /// Every shard node, group by group, each group's first primary first.
    pub shards: Vec<Node>,
    pub coordinator: Node,
    /// Removed with the cluster.
    _dir: Option<tempfile::TempDir>,
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
    }
}

impl TestCluster {
    pub fn start(shards: usize) -> TestCluster {
        TestCluster::start_with_failpoints(shards, None, None)
    }

    /// Starts a cluster whose coordinator, or shard group `shard.0`, has
    /// failpoints armed.
    pub fn start_with_failpoints(shards: usize, coordinator: Option<&str>, shard: Option<(usize, &str)>) -> TestCluster {
        TestCluster::start_configured(shards, coordinator, shard, None)
    }

    /// Like [`TestCluster::start_with_failpoints`], with extra lines for the
    /// coordinator's TOML config file (e.g. `saga_compensation_attempts = 3`).
    pub fn start_configured(shards: usize, coordinator: Option<&str>, shard: Option<(usize, &str)>, coordinator_toml: Option<&str>) -> TestCluster {
        let spec = Spec {
            groups: shards,
            coordinator_failpoints: coordinator,
            shard_failpoints: shard.map(|(group, f)| (group, 0, f)),
            coordinator_toml,
            ..Spec::default()
        };
        TestCluster::start_spec(spec)
    }

    /// Starts a cluster as `spec` describes.
    pub fn start_spec(spec: Spec) -> TestCluster {
        let failpoints = |name: &str| vec![("TESSERA_FAILPOINTS".to_string(), name.to_string())];
        let process = ProcessSpec {
            binary: PathBuf::from(BIN),
            groups: spec.groups,
            replicas: spec.replicas,
            replication: if spec.replication == "async" { ReplicationMode::Async } else { ReplicationMode::Sync },
            sync_replicas: spec.sync_replicas,
            // Top-level keys first: the auth tables come after them.
            coordinator_toml: format!("{}\n{}", spec.coordinator_toml.unwrap_or(""), auth_toml()),
            shard_toml: spec.shard_toml.map(str::to_string),
            shard_env: spec
                .shard_failpoints
                .map(|(g, m, f)| (g, m, failpoints(f)))
                .into_iter()
                .chain(spec.shard_var.map(|(g, m, name, value)| (g, m, vec![(name.to_string(), value.to_string())])))
                .collect(),
            coordinator_env: spec.coordinator_failpoints.map(failpoints).unwrap_or_default(),
            secret: CLUSTER_SECRET.into(),
            dir: spec.dir,
            env: spec.log_filter.map(|f| vec![("RUST_LOG".to_string(), f.to_string())]).unwrap_or_default(),
            front: None,
        };
        let (shards, coordinator, dir) = ProcessCluster::start(process).unwrap_or_else(|e| panic!("{e}")).into_parts();
        TestCluster { shards: shards.into_iter().map(Node).collect(), coordinator: Node(coordinator), _dir: dir }
    }

    /// The node listening on `address`.
    pub fn node(&mut self, address: &str) -> &mut Node {
        self.shards.iter_mut().find(|n| n.address == address).unwrap_or_else(|| panic!("no shard node on {address}"))
    }

    /// Prints the end of every process's log (when a test fails).
    fn print_logs(&self) {
        for node in self.shards.iter().chain(std::iter::once(&self.coordinator)) {
            eprintln!("---- {} ({}), last lines:", node.log.display(), node.address);
            for line in node.log_tail(40) {
                eprintln!("  {line}");
            }
        }
    }

    /// A client with the test token.
    pub async fn client(&self) -> Client {
        Client::builder(&self.coordinator.address).token(TOKEN).connect().await.expect("connect to coordinator")
    }

    /// Where the coordinator serves the PostgreSQL protocol.
    pub fn pg_address(&self) -> String {
        self.coordinator.stdout_line("coordinator postgres protocol on ", Duration::from_secs(30))
    }

    /// A libpq connection string for psql and tokio-postgres.
    pub fn pg_conninfo(&self) -> String {
        let address = self.pg_address();
        let (host, port) = address.rsplit_once(':').unwrap();
        format!("host={host} port={port} user={PG_USER} password={PG_PASSWORD} dbname=tessera sslmode=disable")
    }
}

/// No statement in a test may take longer than this.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

async fn run(client: &mut Client, sql: &str) -> Result<Vec<StatementResult>, ClientError> {
    tokio::time::timeout(STATEMENT_TIMEOUT, client.execute(sql)).await.unwrap_or_else(|_| panic!("{sql}: no answer within {STATEMENT_TIMEOUT:?}"))
}

/// Runs SQL and returns its results, panicking with the error otherwise.
pub async fn exec(client: &mut Client, sql: &str) -> Vec<StatementResult> {
    run(client, sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Runs SQL expected to fail and returns the error.
pub async fn fail(client: &mut Client, sql: &str) -> ClientError {
    match run(client, sql).await {
        Ok(r) => panic!("{sql} should fail but returned {r:?}"),
        Err(e) => e,
    }
}

/// The rows of the last statement as display strings.
pub async fn rows(client: &mut Client, sql: &str) -> Vec<Vec<String>> {
    let results = exec(client, sql).await;
    results.last().unwrap().rows.iter().map(|r| r.iter().map(|v| v.to_string()).collect()).collect()
}

/// A single value.
pub async fn scalar(client: &mut Client, sql: &str) -> String {
    let r = rows(client, sql).await;
    assert_eq!(r.len(), 1, "{sql} returned {r:?}");
    r[0][0].clone()
}

/// EXPLAIN output as one string.
pub async fn explain(client: &mut Client, sql: &str) -> String {
    rows(client, &format!("EXPLAIN {sql}")).await.into_iter().map(|r| r.join(" ")).collect::<Vec<_>>().join("\n")
}

pub const ACCOUNTS: &str = "CREATE TABLE accounts (
    id BIGINT PRIMARY KEY,
    owner VARCHAR(20) NOT NULL,
    balance BIGINT NOT NULL DEFAULT 0 CHECK (balance >= 0),
    vip BOOLEAN DEFAULT false,
    rate DOUBLE
) WITH (partitioning = 'range', split_points = '100,200')";

/// Creates the range-partitioned `accounts` table with rows 1..=n per range:
/// ids 1..=n, 100..100+n, 200..200+n.
pub async fn seed_accounts(client: &mut Client, n: i64) {
    exec(client, ACCOUNTS).await;
    for base in [0, 100, 200] {
        let start = if base == 0 { 1 } else { base };
        let values: Vec<String> = (start..start + n).map(|id| format!("({id}, 'owner{id}', {}, {}, {}.5)", id * 10, id % 2 == 0, id)).collect();
        exec(client, &format!("INSERT INTO accounts (id, owner, balance, vip, rate) VALUES {}", values.join(", "))).await;
    }
}

/// Waits until every shard answers and holds no lock, no prepared and no
/// active transaction, and the coordinator tracks no transaction.
pub async fn wait_quiet(client: &mut Client, timeout: Duration) {
    let started = std::time::Instant::now();
    let mut last = String::new();
    while started.elapsed() < timeout {
        if let (Ok(status), Ok(txns)) = (client.cluster_status().await, client.transactions().await) {
            let quiet = status.shard_groups.iter().all(|g| g.reachable && g.locks_held == 0 && g.prepared_transactions == 0 && g.active_transactions == 0);
            if quiet && txns.is_empty() {
                return;
            }
            last = format!("{:?} {:?}", status.shard_groups, txns);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the cluster did not settle within {timeout:?}: {last}");
}

pub const BANK: &str =
    "CREATE TABLE bank (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL CHECK (balance >= 0)) WITH (partitioning = 'range', split_points = '100,200')";
pub const BANK_TOTAL: i64 = 15 * 1000;

/// Fifteen accounts with 1000 each: ids 1-5 on group 1, 100-104 on group 2,
/// 200-204 on group 3.
pub async fn seed_bank(client: &mut Client) {
    exec(client, BANK).await;
    // One statement per group: one-phase commits, so no 2PC failpoint fires.
    for base in [1, 100, 200] {
        let rows: Vec<String> = (base..base + 5).map(|id| format!("({id}, 1000)")).collect();
        exec(client, &format!("INSERT INTO bank VALUES {}", rows.join(", "))).await;
    }
}

/// `accounts` over two groups: account 1 on group 1 and 150 on group 2,
/// 100 in each.
pub async fn two_group_accounts(client: &mut Client) {
    exec(client, "CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL) WITH (partitioning = 'range', split_points = '100')").await;
    exec(client, "INSERT INTO accounts VALUES (1, 100), (150, 100)").await;
}

/// The SQL of a transfer.
pub fn transfer_sql(from: i64, to: i64, amount: i64) -> String {
    format!("BEGIN; UPDATE bank SET balance = balance - {amount} WHERE id = {from}; UPDATE bank SET balance = balance + {amount} WHERE id = {to}; COMMIT")
}

/// Asserts the bank invariant: the total is unchanged, nothing is negative.
pub async fn assert_bank_invariant(client: &mut Client) {
    let r = rows(client, "SELECT count(*), sum(balance), min(balance) FROM bank").await;
    assert_eq!(r[0][0], "15");
    assert_eq!(r[0][1], BANK_TOTAL.to_string(), "money was created or destroyed");
    assert!(r[0][2].parse::<i64>().unwrap() >= 0, "negative balance");
}

pub async fn balance(client: &mut Client, id: i64) -> i64 {
    scalar(client, &format!("SELECT balance FROM bank WHERE id = {id}")).await.parse().unwrap()
}

/// Runs SQL and returns the outcome.
pub async fn run_sql(client: &mut Client, sql: &str) -> Result<Vec<StatementResult>, ClientError> {
    run(client, sql).await
}
