//! The `tessera` command: servers, the SQL shell, the demo and benchmarks.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tessera::client::{Client, ClientBuilder};
use tessera::cluster::{ClusterOptions, LocalCluster};
use tessera::shell::{self, ShellOptions};
use tessera_coordinator::config::{CoordinatorConfig, ReplicationMode, ShardGroupConfig};
use tessera_shard::config::ShardConfig;

const DEFAULT_COORDINATOR: &str = "127.0.0.1:7700";

#[derive(Parser)]
#[command(name = "tessera", version, about = "A sharded SQL transaction coordinator over RocksDB shard nodes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a shard node: one RocksDB database served over gRPC.
    Shard(ShardArgs),
    /// Run the coordinator: SQL, catalog, routing.
    Coordinator(CoordinatorArgs),
    /// Open the SQL shell against a coordinator.
    Sql(SqlArgs),
    /// Start a whole cluster in this process with sample data and open the shell.
    Demo(DemoArgs),
    /// Measure a cluster.
    Bench {
        #[command(subcommand)]
        workload: BenchCommand,
    },
    /// Operate a running cluster: status, switchover.
    Admin {
        #[command(flatten)]
        connect: Connect,
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Print a SCRAM verifier for a PostgreSQL password (for `[[auth.users]]`
    /// scram = "..."); reads the password from stdin.
    Passwd,
    /// Make a random bearer token and print it with the config lines that
    /// accept it (`[[auth.tokens]]`).
    Token {
        /// Whose token it is.
        #[arg(long, default_value = "app")]
        name: String,
    },
}

#[derive(Subcommand)]
enum AdminAction {
    /// Shard groups: members, roles, epochs, replication lag; failovers.
    Status,
    /// Move a shard group's primary to a replica with no loss.
    Switchover {
        /// The shard group.
        #[arg(long)]
        group: u32,
        /// The replica to promote (default: the most up-to-date).
        #[arg(long)]
        to: Option<String>,
    },
}

/// How to reach and authenticate to a coordinator.
#[derive(Args, Clone)]
struct Connect {
    /// Coordinator address.
    #[arg(long, default_value = DEFAULT_COORDINATOR)]
    host: String,
    /// Bearer token (one of the coordinator's `[[auth.tokens]]`).
    #[arg(long, env = "TESSERA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Use TLS, trusting the certificate authority in this PEM file.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
}

impl Connect {
    fn builder(&self) -> anyhow::Result<ClientBuilder> {
        let mut builder = Client::builder(&self.host);
        if let Some(token) = &self.token {
            builder = builder.token(token);
        }
        if let Some(ca) = &self.tls_ca {
            let pem = std::fs::read(ca).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", ca.display()))?;
            builder = builder.tls_ca_pem(pem);
        }
        Ok(builder)
    }
}

#[derive(Args)]
struct ShardArgs {
    /// TOML config file; flags override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address (port 0 picks a free port; the address is printed).
    #[arg(long)]
    listen: Option<SocketAddr>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    node_id: Option<String>,
    /// Keep data in memory only (nothing survives a restart).
    #[arg(long)]
    in_memory: bool,
    /// Serve Prometheus metrics (GET /metrics) here.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
}

#[derive(Args)]
struct CoordinatorArgs {
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    listen: Option<SocketAddr>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A shard group as ID=ADDRESS, or ID=PRIMARY,REPLICA,... with
    /// --replication; repeatable.
    #[arg(long = "shard", value_parser = parse_group)]
    shards: Vec<ShardGroupConfig>,
    /// How the groups given with --shard replicate: async or sync.
    #[arg(long, value_parser = ["async", "sync"])]
    replication: Option<String>,
    /// Sync groups: replicas that must have a write before it is
    /// acknowledged (default: all).
    #[arg(long)]
    sync_replicas: Option<u32>,
    /// Also serve the PostgreSQL wire protocol here (psql, drivers).
    #[arg(long)]
    pg_listen: Option<SocketAddr>,
    /// Serve Prometheus metrics (GET /metrics) here.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
}

#[derive(Args)]
struct SqlArgs {
    #[command(flatten)]
    connect: Connect,
    /// Run these statements and exit (non-zero on error).
    #[arg(short = 'e', long = "execute")]
    execute: Option<String>,
}

#[derive(Args)]
struct DemoArgs {
    /// Keep the cluster's data here instead of a temporary directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Number of shard groups.
    #[arg(long, default_value_t = 3)]
    shards: usize,
    /// Replicas per shard group.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// How the replicas follow their primary: sync or async.
    #[arg(long, default_value = "sync", value_parser = ["sync", "async"])]
    replication: String,
    /// Run these statements and exit instead of opening the shell.
    #[arg(short = 'e', long = "execute")]
    execute: Option<String>,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Point inserts then point reads from concurrent clients.
    Kv {
        #[command(flatten)]
        run: BenchRun,
    },
    /// Transfers between accounts in transactions; checks the bank invariant.
    Bank {
        #[command(flatten)]
        run: BenchRun,
        #[arg(long, default_value_t = 3000)]
        accounts: u64,
        /// Fraction of transfers between different shard groups (0.0 to 1.0).
        #[arg(long, default_value_t = 1.0)]
        cross_shard: f64,
        /// How transfers commit: 2pc, saga, or both (2pc, then saga on the
        /// same cluster, with the p50 ratio).
        #[arg(long, default_value = "2pc", value_parser = ["2pc", "saga", "both"])]
        protocol: String,
        /// Saga runs: fraction of transfers sent to a missing account, so
        /// their credit step fails and the debit is compensated.
        #[arg(long, default_value_t = 0.02)]
        failing: f64,
        /// Clients summing every balance (single statements and READ ONLY
        /// transactions) in the second half of the run; every sum must
        /// equal the total. Reports reads/s, wrong sums and the writers'
        /// commits/s with and without them.
        #[arg(long, default_value_t = 0)]
        readers: usize,
        /// Chaos mode: inject these faults (all, or a list of kill-primary,
        /// kill-replica, kill-coordinator, pause-primary, partition, delay)
        /// into a cluster of processes, then check nothing was lost.
        #[arg(long)]
        chaos: Option<String>,
        /// Chaos mode: seconds between the starts of two faults.
        #[arg(long, default_value_t = 8.0)]
        fault_interval: f64,
        /// Chaos mode: seconds each fault lasts before it is healed.
        #[arg(long, default_value_t = 3.0)]
        fault_hold: f64,
        /// Chaos mode: latency the delay fault adds, in milliseconds.
        #[arg(long, default_value_t = 100)]
        fault_delay_ms: u64,
        /// Chaos mode: seed of the fault targets and transfers.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// What every benchmark takes: where to run, how many clients, how long.
#[derive(Args)]
struct BenchRun {
    /// Coordinator to measure; without it a 3-shard cluster starts in-process.
    #[arg(long)]
    host: Option<String>,
    /// Bearer token for `--host`.
    #[arg(long, env = "TESSERA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Run time in seconds (kv: half inserts, half reads).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Group-commit window (microseconds) of the bench's cluster's shards
    /// and decision log; default: their configured defaults.
    #[arg(long)]
    group_commit_us: Option<u64>,
    /// Replication of the bench's cluster: none, async or sync; a list
    /// (none,async,sync) runs each on a fresh cluster and compares them.
    #[arg(long, default_value = "none")]
    replication: String,
    /// Replicas per shard group when replicated (a sync group with two or
    /// more waits for any one of them).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Run the bench's cluster as separate processes instead of in this one.
    #[arg(long)]
    processes: bool,
    /// SIGKILL shard group 1's primary this many seconds into the run and
    /// report the failover time (kill to the first committed write to the
    /// group); implies --processes.
    #[arg(long)]
    kill_primary_at: Option<f64>,
}

impl BenchRun {
    fn modes(&self) -> anyhow::Result<Vec<ReplicationMode>> {
        self.replication
            .split(',')
            .map(|m| match m.trim() {
                "none" => Ok(ReplicationMode::None),
                "async" => Ok(ReplicationMode::Async),
                "sync" => Ok(ReplicationMode::Sync),
                other => Err(anyhow::anyhow!("--replication: \"{other}\" is not none, async or sync")),
            })
            .collect()
    }
}

fn parse_group(text: &str) -> Result<ShardGroupConfig, String> {
    let (id, addresses) = text.split_once('=').ok_or_else(|| format!("expected ID=ADDRESS or ID=PRIMARY,REPLICA,..., got \"{text}\""))?;
    let id = id.trim().parse().map_err(|_| format!("shard group id \"{id}\" is not a number"))?;
    let members: Vec<String> = addresses.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
    Ok(match members.as_slice() {
        [one] => ShardGroupConfig::single(id, one.clone()),
        _ => ShardGroupConfig { id, address: None, members, replication: ReplicationMode::Async, sync_replicas: None },
    })
}

/// Tessera's own crates, which a bare level in `RUST_LOG` is about.
const OWN_CRATES: [&str; 6] = ["tessera", "tessera_coordinator", "tessera_shard", "tessera_storage", "tessera_model", "tessera_proto"];

/// Scopes the bare levels of a `RUST_LOG` value to Tessera's crates: with
/// `RUST_LOG=debug` other crates (the SQL parser's token traces, HTTP/2
/// frames) stay at `info` unless named, as in `RUST_LOG=debug,h2=trace`.
fn scoped_log_filter(spec: &str) -> String {
    let mut directives = Vec::new();
    for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match d.to_ascii_lowercase().as_str() {
            level @ ("trace" | "debug") => {
                directives.extend(OWN_CRATES.iter().map(|c| format!("{c}={level}")));
                directives.push("info".to_string());
            }
            _ => directives.push(d.to_string()),
        }
    }
    directives.join(",")
}

fn init_logging(default: &str) {
    let spec = std::env::var("RUST_LOG").ok().filter(|s| !s.trim().is_empty());
    let filter =
        spec.and_then(|s| tracing_subscriber::EnvFilter::try_new(scoped_log_filter(&s)).ok()).unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default));
    // Colors only on a terminal: log files stay greppable.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Shard(args) => run_shard(args).await,
        Command::Coordinator(args) => run_coordinator(args).await,
        Command::Sql(args) => run_sql(args).await,
        Command::Demo(args) => run_demo(args).await,
        Command::Bench { workload } => run_bench(workload).await,
        Command::Admin { connect, action } => run_admin(connect, action).await,
        Command::Passwd => run_passwd(),
        Command::Token { name } => run_token(&name),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn run_shard(args: ShardArgs) -> anyhow::Result<bool> {
    init_logging("info");
    let mut config = match &args.config {
        Some(path) => ShardConfig::from_file(path).map_err(anyhow::Error::msg)?,
        None => ShardConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(id) = args.node_id {
        config.node_id = id;
    }
    config.in_memory |= args.in_memory;
    if args.metrics_listen.is_some() {
        config.metrics_listen = args.metrics_listen;
    }
    config.validate().map_err(anyhow::Error::msg)?;
    let listener = tessera_shard::server::bind(config.listen).await.map_err(anyhow::Error::msg)?;
    let handle = tessera_shard::server::start(&config, listener).await.map_err(anyhow::Error::msg)?;
    println!("shard {} listening on {}", config.node_id, handle.address);
    if let Some(metrics) = handle.metrics_address {
        println!("shard {} metrics on {metrics}", config.node_id);
    }
    tokio::select! {
        result = async { handle.wait().await } => { result.map_err(anyhow::Error::msg)?; }
        _ = shutdown_signal() => {}
    }
    Ok(true)
}

async fn run_coordinator(args: CoordinatorArgs) -> anyhow::Result<bool> {
    init_logging("info");
    let mut config = match &args.config {
        Some(path) => CoordinatorConfig::from_file(path).map_err(anyhow::Error::msg)?,
        None => CoordinatorConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if !args.shards.is_empty() {
        config.shard_groups = args.shards;
        if let Some(mode) = &args.replication {
            let mode = if mode == "sync" { ReplicationMode::Sync } else { ReplicationMode::Async };
            for group in config.shard_groups.iter_mut().filter(|g| g.all_members().len() > 1) {
                group.replication = mode;
                group.sync_replicas = args.sync_replicas.filter(|_| mode == ReplicationMode::Sync);
            }
        }
    }
    if let Some(pg_listen) = args.pg_listen {
        config.pg_listen = Some(pg_listen);
    }
    if args.metrics_listen.is_some() {
        config.metrics_listen = args.metrics_listen;
    }
    config.validate().map_err(anyhow::Error::msg)?;
    let listener = tessera_coordinator::server::bind(config.listen).await.map_err(anyhow::Error::msg)?;
    let handle = tessera_coordinator::server::start(&config, listener).await.map_err(anyhow::Error::msg)?;
    // Scripts and tests read the address from the first line.
    println!("coordinator listening on {}", handle.address);
    if let Some(pg) = handle.pg_address {
        println!("coordinator postgres protocol on {pg}");
    }
    if let Some(metrics) = handle.metrics_address {
        println!("coordinator metrics on {metrics}");
    }
    tokio::select! {
        result = async { handle.wait().await } => { result.map_err(anyhow::Error::msg)?; }
        _ = shutdown_signal() => {}
    }
    Ok(true)
}

async fn run_sql(args: SqlArgs) -> anyhow::Result<bool> {
    init_logging("warn");
    let client = args.connect.builder()?.connect().await?;
    shell::run(client, ShellOptions { execute: args.execute, echo_banner: true }).await
}

const DEMO_SCHEMA: &str = "CREATE TABLE accounts (
    id BIGINT PRIMARY KEY,
    owner TEXT NOT NULL,
    balance BIGINT NOT NULL DEFAULT 0 CHECK (balance >= 0)
) WITH (partitioning = 'range', split_points = '100,200')";

const OWNERS: [&str; 8] = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"];

/// Creates and fills `accounts` unless it exists: 300 accounts, ids 1..=300
/// spread over three range partitions (one INSERT per shard group).
async fn seed_demo(client: &mut Client) -> anyhow::Result<()> {
    let tables = client.execute("SHOW TABLES").await?;
    if tables[0].rows.iter().any(|r| r[0].to_string() == "accounts") {
        return Ok(());
    }
    client.execute(DEMO_SCHEMA).await?;
    for (lo, hi) in [(1, 100), (100, 200), (200, 301)] {
        let rows: Vec<String> = (lo..hi).map(|id| format!("({id}, '{}{id}', {})", OWNERS[id as usize % OWNERS.len()], 100 + (id * 37) % 900)).collect();
        client.execute(&format!("INSERT INTO accounts VALUES {}", rows.join(", "))).await?;
    }
    Ok(())
}

async fn run_demo(args: DemoArgs) -> anyhow::Result<bool> {
    init_logging("warn");
    if args.shards == 0 || args.shards > 16 {
        anyhow::bail!("--shards must be between 1 and 16");
    }
    let replication = if args.replication == "async" { ReplicationMode::Async } else { ReplicationMode::Sync };
    // The handlers go in before the cluster starts: a SIGTERM that comes
    // while it starts, or just after the banner names the data directory,
    // must still stop it and remove that directory, not kill the process
    // outright.
    let signals = termination_signal();
    let options = ClusterOptions {
        shards: args.shards,
        data_dir: args.data_dir.clone(),
        postgres: true,
        replicas: args.replicas,
        replication,
        small_footprint: true,
        ..ClusterOptions::default()
    };
    let cluster = LocalCluster::start(options).await.map_err(anyhow::Error::msg)?;
    let mut client = Client::connect(&cluster.address.to_string()).await?;
    if args.shards >= 3 {
        seed_demo(&mut client).await?;
    }
    if args.execute.is_none() {
        let nodes = args.shards * (1 + args.replicas);
        println!("Tessera demo: a coordinator and {nodes} shard nodes on loopback ({} shard groups).", args.shards);
        for group in &cluster.groups {
            let replicas: Vec<String> = group.members[1..].iter().map(|a| a.to_string()).collect();
            match replicas.as_slice() {
                [] => println!("  shard group {}: primary {}", group.id, group.members[0]),
                _ => println!("  shard group {}: primary {}, {} replica {}", group.id, group.members[0], cluster.replication.name(), replicas.join(", ")),
            }
        }
        println!("  coordinator: {}   (connect another shell: tessera sql --host {})", cluster.address, cluster.address);
        if let Some(pg) = cluster.pg_address {
            println!("  postgres:    {pg}   (psql \"host={} port={} user=demo sslmode=disable\")", pg.ip(), pg.port());
        }
        println!("  data: {}{}", cluster.data_dir().display(), if args.data_dir.is_some() { "" } else { " (removed on exit; keep it with --data-dir)" });
        println!("Sample table: accounts (300 rows, range-partitioned at 100 and 200). Try: EXPLAIN SELECT * FROM accounts WHERE id = 150;");
    }
    // SIGTERM and SIGINT stop the cluster as `\q` does, removing its
    // temporary data.
    // A signal that is already in wins over the shell ending at the same
    // moment.
    let outcome = tokio::select! {
        biased;
        signal = signals => {
            eprintln!("tessera demo: {signal}: stopping the cluster");
            None
        }
        ok = shell::run(client, ShellOptions { execute: args.execute, echo_banner: true }) => Some(ok),
    };
    cluster.shutdown().await;
    match outcome {
        Some(ok) => Ok(ok?),
        // The shell may be blocked reading the terminal: leave without it.
        None => std::process::exit(1),
    }
}

/// Installs SIGTERM and SIGINT handlers now, and gives a future that
/// waits for either and names the one that came. A signal that arrives
/// before the future is first polled is kept, not lost.
fn termination_signal() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
}

async fn run_admin(connect: Connect, action: AdminAction) -> anyhow::Result<bool> {
    init_logging("warn");
    let mut client = connect.builder()?.connect().await?;
    match action {
        AdminAction::Status => {
            let status = client.cluster_status().await?;
            for group in &status.groups {
                print_group(group);
            }
            for f in &status.failovers {
                println!("failover: shard group {} {} -> {} (epoch {}): {}", f.shard_group, f.from, f.to, f.epoch, f.reason);
            }
        }
        AdminAction::Switchover { group, to } => {
            let started = std::time::Instant::now();
            let after = client.switchover(group, to.as_deref()).await?;
            println!("switched over in {} ms", started.elapsed().as_millis());
            print_group(&after);
        }
    }
    Ok(true)
}

fn print_group(group: &tessera_proto::v1::ShardGroup) {
    println!("shard group {} (epoch {}, replication {}):", group.id, group.epoch, group.replication);
    for m in &group.members {
        let staleness = m.staleness_ms.map(|s| format!(", at most {s} ms stale")).unwrap_or_default();
        let state = if m.reachable { "up" } else { "down" };
        println!(
            "  {:<8} {:<22} {state}, applied {}, {} behind{staleness}; circuit {}, {} calls in flight",
            m.role, m.address, m.applied_seq, m.lag_records, m.circuit, m.in_flight
        );
    }
}

fn run_passwd() -> anyhow::Result<bool> {
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    let password = password.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        anyhow::bail!("no password on stdin (try: echo 'secret' | tessera passwd)");
    }
    let verifier = tessera_coordinator::auth::ScramVerifier::from_password(password);
    println!("scram = \"{}\"", verifier.to_text());
    Ok(true)
}

fn run_token(name: &str) -> anyhow::Result<bool> {
    let token = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    println!("token: {token}");
    println!("\n[[auth.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"", tessera_coordinator::auth::token_digest_hex(&token));
    Ok(true)
}

/// `--protocol`: 2pc, saga, or both (2PC first).
fn bench_protocols(protocol: &str) -> Vec<tessera::client::Protocol> {
    use tessera::client::Protocol;
    match protocol {
        "saga" => vec![Protocol::Saga],
        "both" => vec![Protocol::TwoPhaseCommit, Protocol::Saga],
        _ => vec![Protocol::TwoPhaseCommit],
    }
}

async fn run_bench(workload: BenchCommand) -> anyhow::Result<bool> {
    use tessera::bench::run::{Plan, Workload};
    init_logging("warn");
    let run = match &workload {
        BenchCommand::Kv { run } | BenchCommand::Bank { run, .. } => run,
    };
    if run.clients == 0 || run.duration == 0 {
        anyhow::bail!("--clients and --duration must be positive");
    }
    let modes = run.modes()?;
    if let BenchCommand::Bank { chaos: Some(faults), protocol, accounts, fault_interval, fault_hold, fault_delay_ms, seed, readers, .. } = &workload {
        use tessera::bench::chaos::{ChaosOptions, FaultKind};
        if run.host.is_some() || modes.len() != 1 || modes[0] == ReplicationMode::None || run.replicas == 0 {
            anyhow::bail!("--chaos runs its own cluster with replicas: give --replication async or sync (one), and no --host");
        }
        if !(*fault_hold > 0.0 && fault_interval > fault_hold) {
            anyhow::bail!("--fault-hold must be positive and shorter than --fault-interval");
        }
        let protocols = bench_protocols(protocol);
        let options = ChaosOptions {
            binary: std::env::current_exe()?,
            faults: FaultKind::parse_list(faults).map_err(anyhow::Error::msg)?,
            protocols,
            replication: modes[0],
            replicas: run.replicas,
            clients: run.clients,
            duration: Duration::from_secs(run.duration),
            interval: Duration::from_secs_f64(*fault_interval),
            hold: Duration::from_secs_f64(*fault_hold),
            accounts: (*accounts).max(6),
            delay: Duration::from_millis(*fault_delay_ms),
            seed: *seed,
            readers: if *readers > 0 { *readers } else { 2 },
        };
        return tessera::bench::chaos::run(options).await;
    }
    let kill_primary_at = run.kill_primary_at.map(Duration::from_secs_f64);
    if kill_primary_at.is_some() && (run.host.is_some() || modes.contains(&ReplicationMode::None)) {
        anyhow::bail!("--kill-primary-at needs the bench's own cluster with replicas: --replication async or sync");
    }
    let (clients, duration) = (run.clients, Duration::from_secs(run.duration));
    let workload = match &workload {
        BenchCommand::Kv { .. } => Workload::Kv(tessera::bench::kv::KvOptions { clients, duration }),
        BenchCommand::Bank { accounts, cross_shard, protocol, failing, readers, .. } => {
            if *accounts < 2 || !(0.0..=1.0).contains(cross_shard) || !(0.0..=1.0).contains(failing) {
                anyhow::bail!("--accounts must be at least 2, and --cross-shard and --failing between 0 and 1");
            }
            let protocols = bench_protocols(protocol);
            let options = tessera::bench::bank::BankOptions {
                clients,
                duration,
                accounts: *accounts,
                cross_shard: *cross_shard,
                protocol: protocols[0],
                failing: *failing,
                probe: None,
                readers: *readers,
            };
            Workload::Bank { options, protocols }
        }
    };
    let target = tessera::bench::target::TargetOptions {
        host: run.host.clone(),
        token: run.token.clone(),
        groups: 3,
        replication: modes[0],
        replicas: run.replicas,
        processes: run.processes || kill_primary_at.is_some(),
        group_commit_window: run.group_commit_us.map(Duration::from_micros),
        binary: std::env::current_exe()?,
    };
    tessera::bench::run::run(Plan { workload, target, modes, kill_primary_at }).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn bare_debug_levels_stay_in_tessera() {
        let scoped = super::scoped_log_filter("debug");
        assert!(scoped.contains("tessera_coordinator=debug") && scoped.ends_with(",info"), "{scoped}");
        assert_eq!(super::scoped_log_filter("warn,h2=trace"), "warn,h2=trace");
    }
}
