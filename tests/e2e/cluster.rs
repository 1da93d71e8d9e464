//! A cluster of real `tessera` processes on free loopback ports.
//!
//! Each node starts with `--listen 127.0.0.1:0` (or its old address on a
//! restart) and prints its address on stdout; nodes are killed when dropped,
//! and the data directory is removed with the cluster.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tessera::client::{Client, ClientError, StatementResult};

pub const BIN: &str = env!("CARGO_BIN_EXE_tessera");

pub struct Node {
    child: Option<Child>,
    pub address: String,
    args: Vec<String>,
    log: PathBuf,
}

impl Node {
    /// Starts `tessera <args> --listen <listen>` and waits for its address.
    pub fn start(args: Vec<String>, listen: &str, log: PathBuf) -> Node {
        let (child, address) = spawn(&args, listen, &log).unwrap_or_else(|e| panic!("{e}"));
        Node { child: Some(child), address, args, log }
    }

    /// SIGKILLs the process (no shutdown, no flush beyond what was synced).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same address.
    pub fn restart(&mut self) {
        self.kill();
        let mut last = String::new();
        for _ in 0..50 {
            match spawn(&self.args, &self.address, &self.log) {
                Ok((child, _)) => {
                    self.child = Some(child);
                    return;
                }
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("restart failed: {last}");
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(args: &[String], listen: &str, log: &Path) -> Result<(Child, String), String> {
    let stderr = std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(|e| e.to_string())?;
    let mut child = Command::new(BIN)
        .args(args)
        .args(["--listen", listen])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .spawn()
        .map_err(|e| format!("cannot start {BIN}: {e}"))?;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        // Keep draining so the child never blocks on a full pipe.
        let mut sink = String::new();
        while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
    match line.trim().rsplit_once(" listening on ") {
        Some((_, address)) => Ok((child, address.to_string())),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(log).unwrap_or_default();
            Err(format!("{args:?} did not start; stdout: {line:?}; log tail: {}", log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")))
        }
    }
}

pub struct TestCluster {
    pub shards: Vec<Node>,
    pub coordinator: Node,
    /// Removed with the cluster.
    _dir: tempfile::TempDir,
}

impl TestCluster {
    pub fn start(shards: usize) -> TestCluster {
        let dir = tempfile::Builder::new().prefix("tessera-test-").tempdir().unwrap();
        let mut nodes = Vec::new();
        for i in 1..=shards {
            let data = dir.path().join(format!("shard-{i}"));
            let args = vec!["shard".into(), "--node-id".into(), format!("shard-{i}"), "--data-dir".into(), data.display().to_string()];
            nodes.push(Node::start(args, "127.0.0.1:0", dir.path().join(format!("shard-{i}.log"))));
        }
        let mut args = vec!["coordinator".into(), "--data-dir".into(), dir.path().join("coordinator").display().to_string()];
        for (i, n) in nodes.iter().enumerate() {
            args.push("--shard".into());
            args.push(format!("{}={}", i + 1, n.address));
        }
        let coordinator = Node::start(args, "127.0.0.1:0", dir.path().join("coordinator.log"));
        TestCluster { shards: nodes, coordinator, _dir: dir }
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.coordinator.address).await.expect("connect to coordinator")
    }
}

/// Runs SQL and returns its results, panicking with the error otherwise.
pub async fn exec(client: &mut Client, sql: &str) -> Vec<StatementResult> {
    client.execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Runs SQL expected to fail and returns the error.
pub async fn fail(client: &mut Client, sql: &str) -> ClientError {
    match client.execute(sql).await {
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
