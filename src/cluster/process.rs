//! A cluster of real `tessera` processes on free loopback ports: shard nodes
//! (with replicas) and a coordinator, for benchmarks that kill, pause and
//! restart nodes (`tessera bench ... --kill-primary-at`, chaos mode) and
//! for the end-to-end tests.
//!
//! Each node starts with `--listen 127.0.0.1:0` (or its old address on a
//! restart) and prints its address on stdout; nodes are killed when dropped,
//! and a temporary data directory is removed with the cluster.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tessera_coordinator::config::ReplicationMode;

/// One `tessera` process.
pub struct ProcessNode {
    pub name: String,
    pub address: String,
    binary: PathBuf,
    args: Vec<String>,
    /// Environment every start gets (the cluster secret).
    base_env: Vec<(String, String)>,
    /// Extra environment, e.g. `TESSERA_FAILPOINTS`; used by restarts too.
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    child: Option<Child>,
    /// Lines the process printed on stdout after its address line.
    stdout: Arc<Mutex<Vec<String>>>,
}

impl ProcessNode {
    /// Starts `<binary> <args> --listen <listen>` with `base_env` (kept for
    /// every restart) and `env` (which callers may change), and waits for
    /// its address.
    pub fn start(
        binary: &Path,
        name: &str,
        args: Vec<String>,
        listen: &str,
        log: PathBuf,
        base_env: Vec<(String, String)>,
        env: Vec<(String, String)>,
    ) -> Result<ProcessNode, String> {
        let all: Vec<(String, String)> = base_env.iter().chain(&env).cloned().collect();
        let (child, address, stdout) = spawn(binary, &args, &all, listen, &log)?;
        Ok(ProcessNode { name: name.to_string(), address, binary: binary.to_path_buf(), args, base_env, env, log, child: Some(child), stdout })
    }

    /// The rest of the stdout line that starts with `prefix`, waiting for it.
    pub fn stdout_line(&self, prefix: &str, timeout: Duration) -> Option<String> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(line) = self.stdout.lock().unwrap().iter().find_map(|l| l.strip_prefix(prefix)) {
                return Some(line.trim().to_string());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// True when the node's log contains `needle`.
    pub fn log_contains(&self, needle: &str) -> bool {
        std::fs::read_to_string(&self.log).unwrap_or_default().contains(needle)
    }

    /// Waits until the node's log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if self.log_contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// SIGKILL: no shutdown, no flush beyond what was synced.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same address (retrying while the
    /// port is still held).
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        let mut last = String::new();
        for _ in 0..50 {
            let env: Vec<(String, String)> = self.base_env.iter().chain(&self.env).cloned().collect();
            match spawn(&self.binary, &self.args, &env, &self.address, &self.log) {
                Ok((child, _, stdout)) => {
                    self.child = Some(child);
                    self.stdout = stdout;
                    return Ok(());
                }
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("restart of {} failed: {last}", self.name))
    }

    /// The running process's id (none once it ended or was killed).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        let running = matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)));
        if !running {
            // Reaped: its pid may be reused, so it must never be signalled.
            self.child = None;
        }
        running
    }

    /// SIGSTOP: the process freezes; its connections stay open.
    pub fn pause(&mut self) -> Result<(), String> {
        self.signal("-STOP")
    }

    /// SIGCONT after [`ProcessNode::pause`].
    pub fn resume(&mut self) -> Result<(), String> {
        self.signal("-CONT")
    }

    fn signal(&mut self, signal: &str) -> Result<(), String> {
        if !self.is_running() {
            return Err(format!("{} is not running", self.name));
        }
        let pid = self.child.as_ref().ok_or_else(|| format!("{} is not running", self.name))?.id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill {signal} {pid} failed"))
        }
    }

    /// The last `n` lines of the node's log.
    pub fn log_tail(&self, n: usize) -> Vec<String> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].iter().map(|l| l.to_string()).collect()
    }
}

impl Drop for ProcessNode {
    fn drop(&mut self) {
        // A paused process cannot die of SIGKILL until it runs again.
        let _ = self.signal("-CONT");
        self.kill();
    }
}

type Spawned = (Child, String, Arc<Mutex<Vec<String>>>);

fn spawn(binary: &Path, args: &[String], env: &[(String, String)], listen: &str, log: &Path) -> Result<Spawned, String> {
    let stderr = std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(|e| e.to_string())?;
    let mut child = Command::new(binary)
        .args(args)
        .args(["--listen", listen])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let later = lines.clone();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        // Keep draining so the child never blocks on a full pipe.
        let mut next = String::new();
        while reader.read_line(&mut next).map(|n| n > 0).unwrap_or(false) {
            later.lock().unwrap().push(next.trim_end().to_string());
            next.clear();
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
    match line.trim().rsplit_once(" listening on ") {
        Some((_, address)) => Ok((child, address.to_string(), lines)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(log).unwrap_or_default();
            Err(format!("{args:?} did not start; stdout: {line:?}; log tail: {}", log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")))
        }
    }
}

/// Environment for one shard node: (group, member (0 = the first primary),
/// variables).
pub type NodeEnv = (usize, usize, Vec<(String, String)>);

/// What a process cluster looks like.
pub struct ProcessSpec {
    /// The `tessera` binary.
    pub binary: PathBuf,
    pub groups: usize,
    /// Replicas per group and how they replicate.
    pub replicas: usize,
    pub replication: ReplicationMode,
    /// Sync groups: replicas that must have each write (default: all).
    pub sync_replicas: Option<u32>,
    /// The coordinator's config file (top-level keys first, then tables;
    /// shard groups come from flags).
    pub coordinator_toml: String,
    /// A config file for every shard node.
    pub shard_toml: Option<String>,
    /// Extra environment for some shard nodes.
    pub shard_env: Vec<NodeEnv>,
    pub coordinator_env: Vec<(String, String)>,
    /// The cluster secret every node gets (through the environment).
    pub secret: String,
    /// Where data and logs go; a temporary directory otherwise.
    pub dir: Option<PathBuf>,
    /// Environment for every process (e.g. `RUST_LOG`).
    pub env: Vec<(String, String)>,
    /// The address the coordinator is given for each shard node (e.g. a
    /// fault-injecting proxy in front of it); the node's own otherwise.
    pub front: Option<Front>,
}

/// Maps a shard node's address to the one the coordinator uses.
pub type Front = Box<dyn FnMut(&str) -> Result<String, String> + Send>;

/// A running cluster of processes.
pub struct ProcessCluster {
    /// Every shard node, group by group, each group's first primary first.
    pub shards: Vec<ProcessNode>,
    /// Each group's node indices into `shards`.
    pub groups: Vec<Vec<usize>>,
    pub coordinator: ProcessNode,
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl ProcessCluster {
    pub fn start(spec: ProcessSpec) -> Result<ProcessCluster, String> {
        let (temp, dir) = match spec.dir {
            Some(dir) => (None, dir),
            None => {
                let temp = tempfile::Builder::new().prefix("tessera-cluster-").tempdir().map_err(|e| e.to_string())?;
                let dir = temp.path().to_path_buf();
                (Some(temp), dir)
            }
        };
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let secret = ("TESSERA_CLUSTER_SECRET".to_string(), spec.secret.clone());
        let base: Vec<(String, String)> = std::iter::once(secret.clone()).chain(spec.env.iter().cloned()).collect();
        let shard_config = match &spec.shard_toml {
            Some(toml) => {
                let path = dir.join("shard.toml");
                std::fs::write(&path, toml).map_err(|e| e.to_string())?;
                Some(path)
            }
            None => None,
        };
        let mut shards = Vec::new();
        let mut groups = Vec::new();
        for g in 1..=spec.groups {
            let mut members = Vec::new();
            for r in 0..=spec.replicas {
                let name = if r == 0 { format!("shard-{g}") } else { format!("shard-{g}-replica-{r}") };
                let mut args = vec!["shard".into(), "--node-id".into(), name.clone(), "--data-dir".into(), dir.join(&name).display().to_string()];
                if let Some(config) = &shard_config {
                    args.extend(["--config".into(), config.display().to_string()]);
                }
                let env = spec.shard_env.iter().filter(|(sg, sm, _)| *sg == g && *sm == r).flat_map(|(_, _, vars)| vars.clone()).collect();
                members.push(shards.len());
                shards.push(ProcessNode::start(&spec.binary, &name, args, "127.0.0.1:0", dir.join(format!("{name}.log")), base.clone(), env)?);
            }
            groups.push(members);
        }
        let config = dir.join("coordinator.toml");
        std::fs::write(&config, &spec.coordinator_toml).map_err(|e| e.to_string())?;
        let mut args = vec![
            "coordinator".into(),
            "--data-dir".into(),
            dir.join("coordinator").display().to_string(),
            "--config".into(),
            config.display().to_string(),
            "--pg-listen".into(),
            "127.0.0.1:0".into(),
        ];
        let mut front = spec.front;
        for (g, members) in groups.iter().enumerate() {
            let mut addresses = Vec::new();
            for i in members {
                let own = shards[*i].address.clone();
                addresses.push(match front.as_mut() {
                    Some(front) => front(&own)?,
                    None => own,
                });
            }
            args.extend(["--shard".into(), format!("{}={}", g + 1, addresses.join(","))]);
        }
        if spec.replicas > 0 {
            args.extend(["--replication".into(), spec.replication.name().into()]);
            if let Some(k) = spec.sync_replicas {
                args.extend(["--sync-replicas".into(), k.to_string()]);
            }
        }
        let coordinator = ProcessNode::start(&spec.binary, "coordinator", args, "127.0.0.1:0", dir.join("coordinator.log"), base, spec.coordinator_env)?;
        Ok(ProcessCluster { shards, groups, coordinator, dir, _temp: temp })
    }

    /// The shard nodes, the coordinator and the temporary directory (if
    /// any), which is removed when dropped.
    pub fn into_parts(self) -> (Vec<ProcessNode>, ProcessNode, Option<tempfile::TempDir>) {
        (self.shards, self.coordinator, self._temp)
    }

    /// The node listening on `address`.
    pub fn node(&mut self, address: &str) -> Option<&mut ProcessNode> {
        self.shards.iter_mut().find(|n| n.address == address)
    }
}
