//! Scenario scripts: protocol cases as readable text files of commands and
//! their expected output (`tests/scripts/*.txt`, run with the
//! `goldenscript` crate, one test per file), against an in-process cluster
//! on the crash engine ([`sim`]). They cover what needs no real process:
//! 2PC with a participant or the coordinator crashed at each step, sagas
//! crashed at each position, failover. The real-process tests keep what
//! needs SIGKILL, fsync and real ports.
//!
//! Commands (NODE is `coordinator`, `shard-1`, `shard-1b` (a replica), ...):
//!
//! - `cluster [groups=N] [replicas=N] [replication=none|sync|async]`:
//!   start a cluster (hash- or range-partitioned tables are created with
//!   SQL).
//! - `sql [session=S] "SQL"`: run statements and print their results, or
//!   the error as `error SQLSTATE: message`.
//! - `submit NAME [session=S] "SQL"`, `await NAME`: run statements in the
//!   background (they may block at a failpoint); print their outcome later.
//! - `arm NODE FAILPOINT [action=block|error|error*N|panic*N]`,
//!   `wait NODE FAILPOINT`: arm a failpoint on one node; wait until the
//!   node has reached a blocking one.
//! - `crash NODE`, `restart NODE`: kill a node where it stands, keeping what
//!   it had made durable; start it again. `stop coordinator`: shut the
//!   coordinator down as an operator does.
//! - `settle`: wait until no shard node holds a lock or a prepared
//!   transaction and no saga is running or compensating.
//! - `nodes`: each shard node's role, epoch, active and prepared
//!   transactions and locks. `groups`: each group's primary and epoch, as
//!   the coordinator records them. `sagas`: each saga's state and steps.
//! - `wait_primary GROUP NODE`: wait until the coordinator has promoted NODE.
//!   `wait_role NODE ROLE`: wait until a shard node has taken up a role
//!   (`Primary`, `Replica`).

mod sim;

use goldenscript::{Command, Runner};
use sim::{Layout, Sim};
use std::collections::BTreeMap;
use std::error::Error;
use std::time::{Duration, Instant};
use tessera::client::{Client, ClientError, StatementResult};
use tessera_coordinator::config::ReplicationMode;
use tessera_model::failpoint;
use tokio::task::JoinHandle;

type Outcome = Result<Vec<StatementResult>, ClientError>;

/// How long `wait`, `settle` and `wait_primary` wait.
const WAIT: Duration = Duration::from_secs(30);

struct ScenarioRunner {
    /// The harness's own runtime: clients and background statements.
    runtime: tokio::runtime::Runtime,
    sim: Option<Sim>,
    sessions: BTreeMap<String, Client>,
    submitted: BTreeMap<String, JoinHandle<Outcome>>,
}

impl ScenarioRunner {
    fn new() -> ScenarioRunner {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
        ScenarioRunner { runtime, sim: None, sessions: BTreeMap::new(), submitted: BTreeMap::new() }
    }

    fn sim(&mut self) -> Result<&mut Sim, Box<dyn Error>> {
        self.sim.as_mut().ok_or_else(|| "no cluster: start one with `cluster`".into())
    }

    /// The session's client, connected on first use (and again after the
    /// coordinator restarted).
    fn client(&mut self, session: &str) -> Result<Client, Box<dyn Error>> {
        if let Some(client) = self.sessions.remove(session) {
            return Ok(client);
        }
        let address = self.sim()?.coordinator.address.to_string();
        Ok(self.runtime.block_on(Client::connect(&address))?)
    }

    /// Text with node addresses replaced by node names, and ids (of
    /// transactions, sagas) replaced by `<id>`.
    fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        if let Some(sim) = &self.sim {
            for (address, name) in sim.names() {
                out = out.replace(&address, &name);
            }
        }
        // The operating system's words for a lost connection vary with the
        // moment it was lost.
        if let Some(at) = out.find("unreachable: ") {
            out.truncate(at + "unreachable".len());
        }
        mask_ids(&out)
    }

    fn format(&self, outcome: Outcome) -> String {
        match outcome {
            Ok(results) => results.iter().map(format_result).collect::<Vec<_>>().join(""),
            Err(e) if e.is_unknown_outcome() && e.sqlstate.is_none() => "error: no answer (outcome unknown)\n".into(),
            Err(e) => format!("error {}: {}\n", e.sqlstate.as_deref().unwrap_or("-"), self.mask(&e.message)),
        }
    }

    /// Waits until `done` holds, checking every 50 ms for at most [`WAIT`].
    fn wait_until(&mut self, what: &str, mut done: impl FnMut(&mut Self) -> Result<bool, Box<dyn Error>>) -> Result<(), Box<dyn Error>> {
        let started = Instant::now();
        while !done(self)? {
            if started.elapsed() > WAIT {
                return Err(format!("timed out waiting for {what}").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn nodes(&mut self) -> Result<String, Box<dyn Error>> {
        let mut out = String::new();
        for node in self.sim()?.shards() {
            match &node.handle {
                None => out.push_str(&format!("{}: down\n", node.name)),
                Some(h) => {
                    let (active, prepared) = h.participant.counts();
                    out.push_str(&format!(
                        "{}: {:?} epoch={} active={active} prepared={prepared} locks={}\n",
                        node.name,
                        h.node.role(),
                        h.node.epoch(),
                        h.participant.locks_held()
                    ));
                }
            }
        }
        Ok(self.mask(&out))
    }

    fn groups(&mut self) -> Result<String, Box<dyn Error>> {
        let sim = self.sim()?;
        let handle = sim.coordinator.handle.as_ref().ok_or("the coordinator is down")?;
        let records = handle.engine.catalog().shard_groups();
        let out: Vec<String> = records.iter().map(|(id, r)| format!("group {id}: primary={} epoch={}\n", r.primary, r.epoch)).collect();
        Ok(self.mask(&out.concat()))
    }

    /// True when no shard node holds a lock or a prepared transaction, no
    /// saga is running or compensating, and the coordinator reaches every
    /// running node (its circuit breaker closed).
    fn settled(&mut self) -> Result<bool, Box<dyn Error>> {
        let sim = self.sim()?;
        let quiet = sim.shards().filter_map(|n| n.handle.as_ref()).all(|h| h.participant.counts() == (0, 0) && h.participant.locks_held() == 0);
        let running: Vec<String> = sim.shards().filter(|n| n.handle.is_some()).map(|n| n.address.to_string()).collect();
        if !quiet {
            return Ok(false);
        }
        let mut client = self.client("settle")?;
        let sagas = self.runtime.block_on(client.sagas());
        let status = self.runtime.block_on(client.cluster_status());
        self.sessions.insert("settle".into(), client);
        let reached = status?.groups.iter().flat_map(|g| &g.members).filter(|m| running.contains(&m.address)).all(|m| m.reachable && m.circuit == "closed");
        Ok(reached && sagas?.iter().all(|s| !matches!(s.state.as_str(), "running" | "compensating")))
    }

    fn sagas(&mut self) -> Result<String, Box<dyn Error>> {
        let mut client = self.client("sagas")?;
        let sagas = self.runtime.block_on(client.sagas())?;
        let mut out = String::new();
        for (n, saga) in sagas.iter().enumerate() {
            out.push_str(&format!("saga {}: {}\n", n + 1, saga.state));
            let timeline = self.runtime.block_on(client.execute(&format!("SHOW SAGA {}", saga.saga_id)))?;
            for row in timeline.last().map(|r| r.rows.clone()).unwrap_or_default() {
                // step, group, action, state, attempts (the rest has times).
                let cells: Vec<String> = row.iter().take(5).map(|v| v.to_string()).collect();
                out.push_str(&format!("  {}\n", cells.join(" ")));
            }
        }
        self.sessions.insert("sagas".into(), client);
        Ok(out)
    }
}

fn format_result(result: &StatementResult) -> String {
    if result.columns.is_empty() {
        return format!("{}\n", result.tag);
    }
    let mut out = result.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>().join(" | ") + "\n";
    for row in &result.rows {
        out.push_str(&(row.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(" | ") + "\n"));
    }
    out
}

/// Replaces UUIDs (with or without dashes) and saga ids (16 hex digits)
/// by `<id>`.
fn mask_ids(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let id_len = [36, 32, 16].into_iter().find(|&n| {
            bytes.len() >= i + n
                && bytes[i..i + n].iter().enumerate().all(|(j, b)| if n == 36 && [8, 13, 18, 23].contains(&j) { *b == b'-' } else { b.is_ascii_hexdigit() })
                && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric())
                && bytes.get(i + n).is_none_or(|b| !b.is_ascii_alphanumeric())
        });
        match id_len {
            Some(n) => {
                out.push_str("<id>");
                i += n;
            }
            None => {
                let c = text[i..].chars().next().unwrap();
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

/// The positional argument at `at`, or an error naming it.
fn arg<'a>(command: &'a Command, at: usize, what: &str) -> Result<&'a str, Box<dyn Error>> {
    let positional: Vec<&str> = command.args.iter().filter(|a| a.key.is_none()).map(|a| a.value.as_str()).collect();
    positional.get(at).copied().ok_or_else(|| format!("{}: missing {what}", command.name).into())
}

/// The value of `key=...`, if given.
fn key<'a>(command: &'a Command, key: &str) -> Option<&'a str> {
    command.args.iter().find(|a| a.key.as_deref() == Some(key)).map(|a| a.value.as_str())
}

/// Each command's number of positional arguments and its keys.
const ARGS: &[(&str, usize, &[&str])] = &[
    ("cluster", 0, &["groups", "replicas", "replication"]),
    ("sql", 1, &["session"]),
    ("submit", 2, &["session"]),
    ("await", 1, &[]),
    ("arm", 2, &["action"]),
    ("wait", 2, &[]),
    ("crash", 1, &[]),
    ("stop", 1, &[]),
    ("restart", 1, &[]),
    ("settle", 0, &[]),
    ("wait_primary", 2, &[]),
    ("wait_role", 2, &[]),
    ("nodes", 0, &[]),
    ("groups", 0, &[]),
    ("sagas", 0, &[]),
];

/// Refuses an unknown command, a missing or extra positional argument and
/// an unknown key (a misspelt key would otherwise be ignored).
fn check_args(command: &Command) -> Result<(), Box<dyn Error>> {
    let (_, positional, keys) = ARGS.iter().find(|(name, ..)| *name == command.name).ok_or_else(|| format!("unknown command {}", command.name))?;
    let mut args = command.consume_args();
    for key in *keys {
        args.lookup(key);
    }
    let given = args.rest_pos().len();
    if given != *positional {
        return Err(format!("{} takes {positional} positional argument(s), not {given}", command.name).into());
    }
    args.reject_rest()
}

impl Runner for ScenarioRunner {
    fn run(&mut self, command: &Command) -> Result<String, Box<dyn Error>> {
        check_args(command)?;
        match command.name.as_str() {
            "cluster" => {
                let number = |k: &str, default: usize| key(command, k).map(str::parse).transpose().map(|v| v.unwrap_or(default));
                let replication = match key(command, "replication").unwrap_or("sync") {
                    "none" => ReplicationMode::None,
                    "sync" => ReplicationMode::Sync,
                    "async" => ReplicationMode::Async,
                    other => return Err(format!("unknown replication {other}").into()),
                };
                let layout = Layout { groups: number("groups", 2)?, replicas: number("replicas", 0)?, replication };
                self.sim = Some(Sim::start(layout)?);
                Ok(String::new())
            }
            "sql" => {
                let session = key(command, "session").unwrap_or("main").to_string();
                let sql = arg(command, 0, "SQL")?.to_string();
                let mut client = self.client(&session)?;
                let outcome = self.runtime.block_on(client.execute(&sql));
                self.sessions.insert(session, client);
                Ok(self.format(outcome))
            }
            "submit" => {
                let name = arg(command, 0, "a name")?.to_string();
                let sql = arg(command, 1, "SQL")?.to_string();
                let session = key(command, "session").unwrap_or(&name).to_string();
                let mut client = self.client(&session)?;
                self.submitted.insert(name, self.runtime.spawn(async move { client.execute(&sql).await }));
                Ok(String::new())
            }
            "await" => {
                let name = arg(command, 0, "a name")?;
                let task = self.submitted.remove(name).ok_or_else(|| format!("nothing was submitted as {name}"))?;
                let outcome = self.runtime.block_on(async { tokio::time::timeout(WAIT, task).await });
                match outcome {
                    Ok(Ok(outcome)) => Ok(self.format(outcome)),
                    Ok(Err(e)) => Err(format!("{name} failed: {e}").into()),
                    Err(_) => Err(format!("{name} did not finish within {WAIT:?}").into()),
                }
            }
            "arm" => {
                let scope = self.scope(arg(command, 0, "a node")?)?;
                failpoint::arm(&scope, arg(command, 1, "a failpoint")?, key(command, "action").unwrap_or("block"))?;
                Ok(String::new())
            }
            "wait" => {
                let (node, name) = (arg(command, 0, "a node")?, arg(command, 1, "a failpoint")?);
                let scope = self.scope(node)?;
                if !failpoint::wait_hit(&scope, name, WAIT) {
                    return Err(format!("{node} did not reach {name}").into());
                }
                Ok(format!("{node} reached {name}\n"))
            }
            "crash" => {
                let node = arg(command, 0, "a node")?;
                let sim = self.sim()?;
                if node == "coordinator" {
                    sim.coordinator.crash();
                    // Its sessions died with it.
                    self.sessions.clear();
                } else {
                    sim.shard(node).ok_or_else(|| format!("no node {node}"))?.crash();
                }
                Ok(String::new())
            }
            "stop" => {
                if arg(command, 0, "a node")? != "coordinator" {
                    return Err("only the coordinator can be stopped (crash shard nodes)".into());
                }
                self.sim()?.stop_coordinator()?;
                self.sessions.clear();
                Ok(String::new())
            }
            "restart" => {
                let node = arg(command, 0, "a node")?.to_string();
                self.sim()?.restart(&node)?;
                Ok(String::new())
            }
            "settle" => {
                self.wait_until("the cluster to settle", |r| r.settled())?;
                Ok(String::new())
            }
            "wait_primary" => {
                let group: u32 = arg(command, 0, "a group")?.parse()?;
                let node = arg(command, 1, "a node")?.to_string();
                self.wait_until(&format!("{node} to lead group {group}"), |r| Ok(r.groups()?.contains(&format!("group {group}: primary={node} "))))?;
                Ok(String::new())
            }
            "wait_role" => {
                let node = arg(command, 0, "a node")?.to_string();
                let role = arg(command, 1, "a role")?.to_string();
                self.wait_until(&format!("{node} to become {role}"), |r| {
                    let sim = r.sim()?;
                    let handle = sim.shard(&node).ok_or_else(|| format!("no node {node}"))?.handle.as_ref().ok_or_else(|| format!("{node} is down"))?;
                    Ok(format!("{:?}", handle.node.role()).split([' ', '{']).next() == Some(role.as_str()))
                })?;
                Ok(String::new())
            }
            "nodes" => self.nodes(),
            "groups" => self.groups(),
            "sagas" => self.sagas(),
            other => Err(format!("unknown command {other}").into()),
        }
    }

    fn end_script(&mut self) -> Result<(), Box<dyn Error>> {
        // Background statements end with the cluster; nodes stop outside
        // the harness's runtime.
        self.sessions.clear();
        for (_, task) in std::mem::take(&mut self.submitted) {
            task.abort();
        }
        self.sim = None;
        Ok(())
    }
}

impl ScenarioRunner {
    /// The failpoint scope of the node called `name`.
    fn scope(&mut self, name: &str) -> Result<String, Box<dyn Error>> {
        let sim = self.sim()?;
        if name == "coordinator" {
            return Ok(sim.coordinator.scope.clone());
        }
        Ok(sim.shard(name).ok_or_else(|| format!("no node {name}"))?.scope.clone())
    }
}

/// Runs one script of `tests/scripts`.
fn run_script(name: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts").join(name);
    let mut runner = ScenarioRunner::new();
    goldenscript::run(&mut runner, &path).expect("the script's output matches");
}

#[test]
fn twopc_coordinator_crashes() {
    run_script("twopc_coordinator_crashes.txt");
}

#[test]
fn twopc_participant_crashes() {
    run_script("twopc_participant_crashes.txt");
}

#[test]
fn saga_crashes() {
    run_script("saga_crashes.txt");
}

#[test]
fn failover() {
    run_script("failover.txt");
}
