//! `tessera bench bank`: money transfers between accounts on different (or
//! the same) shard groups, from concurrent clients, each transfer one
//! transaction. Ends by checking the bank invariant: the total is unchanged
//! and no balance is negative.
//!
//! With `--readers N` the run has two halves: writers alone, then writers
//! with N readers that sum every balance (half as single statements, half
//! in `BEGIN READ ONLY` transactions). Every sum must equal the total: a
//! wrong one means a read saw part of a transfer. The report gives the
//! readers' rate, the wrong sums, failed READ ONLY reads and the writers'
//! commits/s in each half.
//!
//! With `--protocol saga` each transfer is a saga (debit step, then credit
//! step), and a fraction of them (`--failing`) credit an account that does
//! not exist: their credit step fails and the debit is compensated, so the
//! invariant also checks that every compensation ran.

use super::{histogram, per_second, percentiles};
use crate::client::{Client, ClientBuilder, ClientError, Protocol};
use hdrhistogram::Histogram;
use rand::Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_model::sqlstate;
use tessera_proto::v1::ClusterStatusResponse;

pub struct BankOptions {
    pub clients: usize,
    pub duration: Duration,
    pub accounts: u64,
    /// Fraction of transfers between accounts on different shard groups.
    pub cross_shard: f64,
    pub protocol: Protocol,
    /// Saga protocol only: fraction of transfers to a missing account.
    pub failing: f64,
    /// Watches the first transfer touching a group after its primary died.
    pub probe: Option<Arc<FailoverProbe>>,
    /// Clients summing every balance during the second half of the run.
    pub readers: usize,
}

/// What a run measured, for comparing runs.
pub struct BankReport {
    pub invariant_holds: bool,
    /// p50 latency of committed cross-shard transfers, microseconds.
    pub cross_p50_us: u64,
    pub commits_per_second: f64,
    /// Latency of every committed transfer, microseconds.
    pub p50_us: u64,
    pub p99_us: u64,
    /// From the kill of a primary to the first committed transfer that
    /// touched its group.
    pub failover: Option<Duration>,
    /// Sums (of readers) that did not equal the total.
    pub wrong_sums: u64,
}

/// Times a failover as clients see it: from the kill of a group's primary
/// to the first committed transfer, begun after the kill, that touches the
/// group.
pub struct FailoverProbe {
    pub group: u64,
    killed_at: std::sync::OnceLock<Instant>,
    first_write: std::sync::OnceLock<Instant>,
}

impl FailoverProbe {
    pub fn new(group: u64) -> FailoverProbe {
        FailoverProbe { group, killed_at: Default::default(), first_write: Default::default() }
    }

    /// The primary was killed (once per probe).
    pub fn killed(&self) {
        let _ = self.killed_at.set(Instant::now());
    }

    /// A transfer that began at `began` and touched `groups` committed.
    /// Only one begun after the kill counts: one already in flight may have
    /// been decided before it.
    fn committed(&self, groups: [u64; 2], began: Instant) {
        if !groups.contains(&self.group) || self.killed_at.get().is_none_or(|k| began < *k) {
            return;
        }
        self.first_write.get_or_init(Instant::now);
    }

    /// Kill to first write, once both happened.
    pub fn failover_time(&self) -> Option<Duration> {
        Some(self.first_write.get()?.duration_since(*self.killed_at.get()?))
    }
}

pub const INITIAL_BALANCE: i64 = 1_000;
const MAX_AMOUNT: i64 = 100;
const MAX_ATTEMPTS: usize = 20;

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    retries: AtomicU64,
    refused: AtomicU64,
    /// Sagas rolled back because a step failed (the missing-account ones).
    rolled_back: AtomicU64,
    errors: AtomicU64,
}

struct WorkerResult {
    single: Histogram<u64>,
    cross: Histogram<u64>,
    last_error: Option<String>,
}

/// Runs the workload against the coordinator `target` leads to; returns false if
/// the invariant does not hold.
pub async fn run(target: &ClientBuilder, options: &BankOptions) -> anyhow::Result<BankReport> {
    let mut admin = target.clone().connect().await?;
    let groups = admin.cluster_status().await?.shard_groups.len().max(1) as u64;
    let per_group = (options.accounts / groups).max(2);
    let accounts = per_group * groups;
    setup(&mut admin, groups, per_group).await?;
    println!(
        "bench bank ({}): {accounts} accounts over {groups} shard groups, {} clients, {:?}, {:.0}% cross-shard transfers{}, coordinator {}",
        protocol_name(options.protocol),
        options.clients,
        options.duration,
        options.cross_shard * 100.0,
        match options.protocol {
            Protocol::Saga => format!(", {:.1}% to a missing account", options.failing * 100.0),
            Protocol::TwoPhaseCommit => String::new(),
        },
        target.address()
    );
    let before = admin.cluster_status().await?;
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let mut workers = Vec::new();
    let shape = Shape { groups, per_group, cross_shard: options.cross_shard, failing: if options.protocol == Protocol::Saga { options.failing } else { 0.0 } };
    for _ in 0..options.clients {
        let mut client = target.clone().connect().await?;
        client.set_protocol(Some(options.protocol));
        let counters = counters.clone();
        let deadline = start + options.duration;
        let probe = options.probe.clone();
        workers.push(tokio::spawn(async move { worker(client, shape, deadline, counters, probe).await }));
    }
    let progress = tokio::spawn(progress(counters.clone(), start, options.duration));
    let readers = if options.readers > 0 {
        let half = start + options.duration / 2;
        let total = accounts as i64 * INITIAL_BALANCE;
        Some(tokio::spawn(readers(target.clone(), options.readers, half, start + options.duration, total, counters.clone())))
    } else {
        None
    };
    let (mut single, mut cross) = (histogram(), histogram());
    let mut last_error = None;
    for w in workers {
        let r = w.await?;
        single.add(&r.single)?;
        cross.add(&r.cross)?;
        last_error = r.last_error.or(last_error);
    }
    let elapsed = start.elapsed();
    progress.abort();
    let mut admin = target.clone().connect().await?;
    let after = admin.cluster_status().await?;
    report(&counters, elapsed, &single, &cross, &before, &after, last_error);
    let wrong_sums = match readers {
        Some(task) => task.await??.report(),
        None => 0,
    };
    let failover = options.probe.as_ref().and_then(|p| p.failover_time());
    if let Some(probe) = &options.probe {
        match failover {
            Some(t) => {
                println!("failover: shard group {}'s primary killed; first committed transfer touching the group {} ms later", probe.group, t.as_millis())
            }
            None => println!("failover: no transfer touching shard group {} committed after its primary was killed", probe.group),
        }
    }
    let invariant_holds = check_invariant(&mut admin, accounts).await? && wrong_sums == 0;
    let mut all = single.clone();
    all.add(&cross)?;
    Ok(BankReport {
        invariant_holds,
        cross_p50_us: cross.value_at_quantile(0.5),
        commits_per_second: per_second(counters.commits.load(Ordering::Relaxed), elapsed),
        p50_us: all.value_at_quantile(0.5),
        p99_us: all.value_at_quantile(0.99),
        failover,
        wrong_sums,
    })
}

/// What the readers saw, and the writers' commits in each half.
struct ReadReport {
    readers: usize,
    reads: u64,
    read_only_reads: u64,
    wrong: u64,
    read_only_failed: u64,
    last_problem: Option<String>,
    writers_alone: (u64, Duration),
    writers_with_readers: (u64, Duration),
}

impl ReadReport {
    /// Prints the report; returns the wrong sums.
    fn report(&self) -> u64 {
        let (alone, alone_t) = self.writers_alone;
        let (with, with_t) = self.writers_with_readers;
        println!(
            "snapshot reads: {} readers, {} sums in {:.1}s = {:.0}/s ({} in READ ONLY transactions); wrong sums: {}; failed READ ONLY reads: {}",
            self.readers,
            self.reads,
            with_t.as_secs_f64(),
            per_second(self.reads, with_t),
            self.read_only_reads,
            self.wrong,
            self.read_only_failed
        );
        println!(
            "writers: {:.0} commits/s alone, {:.0} commits/s with the readers ({:.2}x)",
            per_second(alone, alone_t),
            per_second(with, with_t),
            per_second(with, with_t) / per_second(alone, alone_t).max(1e-9)
        );
        if let Some(problem) = &self.last_problem {
            println!("  last wrong or failed read: {problem}");
        }
        self.wrong + self.read_only_failed
    }
}

/// From `half` to `end`, `n` clients sum every balance: single statements
/// and READ ONLY transactions in turn. Counts sums that differ from `total`.
async fn readers(target: ClientBuilder, n: usize, half: Instant, end: Instant, total: i64, counters: Arc<Counters>) -> anyhow::Result<ReadReport> {
    let started = Instant::now();
    tokio::time::sleep_until(half.into()).await;
    let at_half = counters.commits.load(Ordering::Relaxed);
    let mut tasks = Vec::new();
    for i in 0..n {
        let mut client = target.clone().connect().await?;
        tasks.push(tokio::spawn(async move {
            let (mut reads, mut read_only, mut wrong, mut failed, mut problem) = (0u64, 0u64, 0u64, 0u64, None);
            let mut turn = i;
            while Instant::now() < end {
                turn += 1;
                let in_txn = turn % 2 == 0;
                let sql = if in_txn {
                    "BEGIN READ ONLY; SELECT sum(balance), count(*) FROM bench_bank; COMMIT"
                } else {
                    "SELECT sum(balance), count(*) FROM bench_bank"
                };
                match client.execute(sql).await {
                    Ok(results) => {
                        reads += 1;
                        read_only += in_txn as u64;
                        let r = results.iter().find(|r| r.columns.len() == 2);
                        let sum = r.map(|r| r.rows[0][0].to_string()).unwrap_or_default();
                        if sum != total.to_string() {
                            wrong += 1;
                            problem = Some(format!("sum {sum}, expected {total}"));
                        }
                    }
                    Err(e) => {
                        let _ = client.execute("ROLLBACK").await;
                        if in_txn {
                            failed += 1;
                            problem = Some(e.to_string());
                        }
                    }
                }
            }
            (reads, read_only, wrong, failed, problem)
        }));
    }
    let mut report = ReadReport {
        readers: n,
        reads: 0,
        read_only_reads: 0,
        wrong: 0,
        read_only_failed: 0,
        last_problem: None,
        writers_alone: (at_half, half.saturating_duration_since(started)),
        writers_with_readers: (0, Duration::ZERO),
    };
    for task in tasks {
        let (reads, read_only, wrong, failed, problem) = task.await?;
        report.reads += reads;
        report.read_only_reads += read_only;
        report.wrong += wrong;
        report.read_only_failed += failed;
        report.last_problem = problem.or(report.last_problem);
    }
    report.writers_with_readers = (counters.commits.load(Ordering::Relaxed) - at_half, end.saturating_duration_since(half));
    Ok(report)
}

pub fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::TwoPhaseCommit => "2pc",
        Protocol::Saga => "saga",
    }
}

/// How transfers are picked.
#[derive(Clone, Copy)]
struct Shape {
    groups: u64,
    per_group: u64,
    cross_shard: f64,
    failing: f64,
}

async fn setup(admin: &mut Client, groups: u64, per_group: u64) -> anyhow::Result<()> {
    admin.execute("DROP TABLE IF EXISTS bench_bank").await?;
    create_accounts(admin, "bench_bank", groups, per_group).await
}

/// Creates `table` with `groups * per_group` accounts of
/// [`INITIAL_BALANCE`], range-partitioned `per_group` to a shard group.
pub async fn create_accounts(admin: &mut Client, table: &str, groups: u64, per_group: u64) -> anyhow::Result<()> {
    let splits: Vec<String> = (1..groups).map(|g| (g * per_group).to_string()).collect();
    admin
        .execute(&format!(
            "CREATE TABLE {table} (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL CHECK (balance >= 0)) WITH (partitioning = 'range', split_points = '{}')",
            splits.join(",")
        ))
        .await?;
    let ids: Vec<u64> = (0..groups * per_group).collect();
    for chunk in ids.chunks(1000) {
        let rows: Vec<String> = chunk.iter().map(|id| format!("({id}, {INITIAL_BALANCE})")).collect();
        admin.execute(&format!("INSERT INTO {table} VALUES {}", rows.join(", "))).await?;
    }
    Ok(())
}

/// Picks (from, to, crosses groups).
fn pick(groups: u64, per_group: u64, cross_shard: f64) -> (u64, u64, bool) {
    let mut rng = rand::thread_rng();
    let cross = groups > 1 && rng.gen_bool(cross_shard.clamp(0.0, 1.0));
    let g1 = rng.gen_range(0..groups);
    let g2 = if cross { (g1 + rng.gen_range(1..groups)) % groups } else { g1 };
    let from = g1 * per_group + rng.gen_range(0..per_group);
    let mut to = g2 * per_group + rng.gen_range(0..per_group);
    if to == from {
        to = g2 * per_group + (to - g2 * per_group + 1) % per_group;
    }
    (from, to, cross)
}

async fn worker(mut client: Client, shape: Shape, deadline: Instant, counters: Arc<Counters>, probe: Option<Arc<FailoverProbe>>) -> WorkerResult {
    let mut result = WorkerResult { single: histogram(), cross: histogram(), last_error: None };
    while Instant::now() < deadline {
        let (from, mut to, cross) = pick(shape.groups, shape.per_group, shape.cross_shard);
        if shape.failing > 0.0 && rand::thread_rng().gen_bool(shape.failing.min(1.0)) {
            // Past the last account: the credit step finds no row.
            to = shape.groups * shape.per_group + rand::thread_rng().gen_range(0..1000);
        }
        let amount = rand::thread_rng().gen_range(1..=MAX_AMOUNT);
        let body =
            format!("UPDATE bench_bank SET balance = balance - {amount} WHERE id = {from}; UPDATE bench_bank SET balance = balance + {amount} WHERE id = {to}");
        let began = Instant::now();
        match transfer(&mut client, &body, &counters).await {
            Ok(()) => {
                counters.commits.fetch_add(1, Ordering::Relaxed);
                if let Some(probe) = &probe {
                    probe.committed([from / shape.per_group + 1, to / shape.per_group + 1], began);
                }
                let micros = began.elapsed().as_micros().max(1) as u64;
                let _ = if cross { result.cross.record(micros) } else { result.single.record(micros) };
            }
            Err(e) if e.sqlstate.as_deref() == Some(sqlstate::CHECK_VIOLATION) => {
                counters.refused.fetch_add(1, Ordering::Relaxed);
            }
            // A saga rolled back, or (when both accounts were on one group)
            // a local transaction refused, because the credit found no row.
            Err(e) if e.sqlstate.as_deref() == Some(sqlstate::NO_DATA_FOUND) => {
                counters.rolled_back.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                result.last_error = Some(e.to_string());
            }
        }
    }
    result
}

/// One transfer, retried on serialization failures.
async fn transfer(client: &mut Client, body: &str, counters: &Counters) -> Result<(), ClientError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match client.execute(&format!("BEGIN; {body}; COMMIT")).await {
            Ok(_) => return Ok(()),
            Err(e) => {
                let _ = client.execute("ROLLBACK").await;
                if !e.is_retryable() || attempt >= MAX_ATTEMPTS {
                    return Err(e);
                }
                counters.retries.fetch_add(1, Ordering::Relaxed);
                let backoff = rand::thread_rng().gen_range(0..=(1u64 << attempt.min(6)));
                tokio::time::sleep(Duration::from_millis(backoff)).await;
            }
        }
    }
}

async fn progress(counters: Arc<Counters>, start: Instant, duration: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0;
    while start.elapsed() < duration {
        tick.tick().await;
        let commits = counters.commits.load(Ordering::Relaxed);
        println!(
            "  {:>4.0}s  {:>8} commits  {:>6} commits/s  retries {}",
            start.elapsed().as_secs_f64(),
            commits,
            commits - last,
            counters.retries.load(Ordering::Relaxed)
        );
        last = commits;
    }
}

fn report(
    counters: &Counters,
    elapsed: Duration,
    single: &Histogram<u64>,
    cross: &Histogram<u64>,
    before: &ClusterStatusResponse,
    after: &ClusterStatusResponse,
    last_error: Option<String>,
) {
    let commits = counters.commits.load(Ordering::Relaxed);
    let rate = per_second(commits, elapsed);
    println!("committed transfers: {commits} in {:.1}s = {rate:.0}/s", elapsed.as_secs_f64());
    if !cross.is_empty() {
        println!("  cross-shard  {:>7}  {}", cross.len(), percentiles(cross));
    }
    if !single.is_empty() {
        println!("  single-shard {:>7}  {}", single.len(), percentiles(single));
    }
    println!(
        "retries (40001): {}  refused (insufficient funds): {}  rolled back (missing account): {}  errors: {}",
        counters.retries.load(Ordering::Relaxed),
        counters.refused.load(Ordering::Relaxed),
        counters.rolled_back.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed)
    );
    if let Some(e) = last_error {
        println!("  last error: {e}");
    }
    let log_syncs = after.decision_log_syncs - before.decision_log_syncs;
    let two_phase = after.two_phase_commits - before.two_phase_commits;
    let one_phase = after.one_phase_commits - before.one_phase_commits;
    let sagas = after.sagas_committed - before.sagas_committed;
    let rolled_back = after.sagas_rolled_back - before.sagas_rolled_back;
    println!(
        "commits: {two_phase} two-phase, {one_phase} one-phase, {} sagas; coordinator log fsyncs: {log_syncs} ({:.3} per two-phase commit or saga)",
        sagas + rolled_back,
        log_syncs as f64 / (two_phase + sagas + rolled_back).max(1) as f64
    );
    if sagas + rolled_back > 0 {
        println!(
            "sagas: {sagas} committed, {rolled_back} rolled back, {} compensations run, {} parked for an operator",
            after.compensations_run - before.compensations_run,
            after.sagas_parked
        );
    }
    let mut total_wal = 0;
    let mut max_wal_rate: f64 = 0.0;
    for (b, a) in before.shard_groups.iter().zip(&after.shard_groups) {
        let wal = a.wal_syncs.saturating_sub(b.wal_syncs);
        let writes = a.synced_writes.saturating_sub(b.synced_writes);
        total_wal += wal;
        max_wal_rate = max_wal_rate.max(per_second(wal, elapsed));
        println!("  shard group {}: {wal} WAL fsyncs for {writes} synced writes ({:.0} fsyncs/s)", a.id, per_second(wal, elapsed));
    }
    println!(
        "fsyncs per commit: {:.3} (decision log + all shards); commits/s / busiest shard's fsyncs/s = {:.2}",
        (log_syncs + total_wal) as f64 / commits.max(1) as f64,
        rate / max_wal_rate.max(1e-9)
    );
    if !cross.is_empty() && !single.is_empty() {
        let ratio = cross.value_at_quantile(0.5) as f64 / single.value_at_quantile(0.5).max(1) as f64;
        println!("cross-shard p50 / single-shard p50 = {ratio:.2}");
    }
}

/// Checks the bank invariant, and that no transaction or lock is left.
async fn check_invariant(admin: &mut Client, accounts: u64) -> anyhow::Result<bool> {
    let results = admin.execute("SELECT count(*), sum(balance), min(balance) FROM bench_bank").await?;
    let row = &results[0].rows[0];
    let (count, sum, min) = (row[0].to_string(), row[1].to_string(), row[2].to_string());
    let expected = accounts as i64 * INITIAL_BALANCE;
    let ok = count == accounts.to_string() && sum == expected.to_string() && min.parse::<i64>().map(|m| m >= 0).unwrap_or(false);
    let mut leftovers = (0, 0);
    let mut unfinished = 0;
    // In-doubt transactions of a failed-over group take a few seconds.
    for _ in 0..300 {
        let status = admin.cluster_status().await?;
        leftovers = status.shard_groups.iter().fold((0, 0), |(p, l), g| (p + g.prepared_transactions, l + g.locks_held));
        unfinished = admin.sagas().await?.iter().filter(|s| !matches!(s.state.as_str(), "committed" | "rolled_back")).count();
        if leftovers == (0, 0) && unfinished == 0 && admin.transactions().await?.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let clean = leftovers == (0, 0) && unfinished == 0;
    println!(
        "invariant: {} accounts, sum {sum} (expected {expected}), min balance {min}; prepared transactions left {}, locks left {}, unfinished sagas {unfinished} => {}",
        count,
        leftovers.0,
        leftovers.1,
        if ok && clean { "OK" } else { "VIOLATED" }
    );
    Ok(ok && clean)
}
