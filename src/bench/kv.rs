//! `tessera bench kv`: point inserts for the first half of the run, point
//! reads of the inserted keys for the second half, from `clients`
//! concurrent connections, each key routed to one shard group.

use super::{histogram, per_second, percentiles};
use crate::client::{Client, ClientBuilder};
use hdrhistogram::Histogram;
use rand::Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct KvOptions {
    pub clients: usize,
    pub duration: Duration,
}

/// What one phase measured.
pub struct PhaseReport {
    pub name: &'static str,
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
}

impl PhaseReport {
    pub fn summary(&self) -> String {
        format!(
            "{:<7} {:>8} ops  {:>9.0} ops/s  {}  errors {}",
            self.name,
            self.ops,
            per_second(self.ops, self.elapsed),
            percentiles(&self.latency),
            self.errors
        )
    }
}

#[derive(Clone, Copy)]
enum Phase {
    Insert,
    Read,
}

/// Runs the workload against the coordinator `target` leads to.
pub async fn run(target: &ClientBuilder, options: &KvOptions) -> anyhow::Result<Vec<PhaseReport>> {
    let mut setup = target.clone().connect().await?;
    setup.execute("DROP TABLE IF EXISTS bench_kv").await?;
    setup.execute("CREATE TABLE bench_kv (k BIGINT PRIMARY KEY, v TEXT NOT NULL) WITH (partitioning = 'hash')").await?;
    let half = options.duration / 2;
    println!("bench kv: {} clients, {:?} of inserts then {:?} of point reads, coordinator {}", options.clients, half, half, target.address());
    let inserted = run_phase(target, options.clients, half, Phase::Insert, Arc::new(Vec::new())).await?;
    let counts = Arc::new(inserted.1);
    let read = run_phase(target, options.clients, half, Phase::Read, counts).await?;
    Ok(vec![inserted.0, read.0])
}

async fn run_phase(
    target: &ClientBuilder,
    clients: usize,
    duration: Duration,
    phase: Phase,
    inserted: Arc<Vec<u64>>,
) -> anyhow::Result<(PhaseReport, Vec<u64>)> {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..clients {
        let client = target.clone().connect().await?;
        let (done, inserted) = (done.clone(), inserted.clone());
        workers.push(tokio::spawn(async move { worker_loop(client, worker, clients, start + duration, phase, done, inserted).await }));
    }
    let name = match phase {
        Phase::Insert => "insert",
        Phase::Read => "read",
    };
    let progress = tokio::spawn(progress_lines(name, done.clone(), start, duration));
    let mut latency = histogram();
    let (mut errors, mut per_worker) = (0, Vec::new());
    for w in workers {
        let (h, e, n) = w.await?;
        latency.add(&h)?;
        errors += e;
        per_worker.push(n);
    }
    progress.abort();
    let report = PhaseReport { name, ops: latency.len(), errors, elapsed: start.elapsed(), latency };
    println!("{}", report.summary());
    Ok((report, per_worker))
}

async fn progress_lines(name: &'static str, done: Arc<AtomicU64>, start: Instant, duration: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0;
    while start.elapsed() < duration {
        tick.tick().await;
        let now = done.load(Ordering::Relaxed);
        println!("  {name} {:>4.0}s  {:>8} ops  {:>7} ops/s", start.elapsed().as_secs_f64(), now, now - last);
        last = now;
    }
}

/// Worker `w` of `n` inserts keys w, w+n, w+2n, ...; readers pick random
/// keys among those inserted. Returns (latencies, errors, keys written).
async fn worker_loop(
    mut client: Client,
    w: usize,
    n: usize,
    deadline: Instant,
    phase: Phase,
    done: Arc<AtomicU64>,
    inserted: Arc<Vec<u64>>,
) -> (Histogram<u64>, u64, u64) {
    let mut latency = histogram();
    let (mut errors, mut seq) = (0u64, 0u64);
    while Instant::now() < deadline {
        let sql = match phase {
            Phase::Insert => {
                let k = seq * n as u64 + w as u64;
                format!("INSERT INTO bench_kv VALUES ({k}, 'value-{k}')")
            }
            Phase::Read => {
                let owner = rand::thread_rng().gen_range(0..inserted.len().max(1));
                let count = inserted.get(owner).copied().unwrap_or(0).max(1);
                let k = rand::thread_rng().gen_range(0..count) * inserted.len().max(1) as u64 + owner as u64;
                format!("SELECT v FROM bench_kv WHERE k = {k}")
            }
        };
        let began = Instant::now();
        match client.execute(&sql).await {
            Ok(_) => {
                let _ = latency.record(began.elapsed().as_micros().max(1) as u64);
                seq += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => errors += 1,
        }
    }
    (latency, errors, seq)
}
