//! `tessera bench`: workloads that measure a running cluster (or one started
//! in-process) and print throughput and latency percentiles.
//!
//! - [`kv`]: point inserts, then point reads, from N concurrent clients.
//! - [`bank`]: transfers between accounts, single- and cross-shard, with the
//!   bank invariant checked at the end.
//! - [`chaos`]: the bank workload under injected faults, with the checks
//!   that nothing was lost.
//! - [`target`]: the cluster measured: `--host`, or one started here (in
//!   this process or as processes), with the replication asked for.
//! - [`run`]: one run per replication mode, compared in one table; the
//!   option that kills a primary during the run.

pub mod bank;
pub mod chaos;
pub mod kv;
pub mod run;
pub mod target;

use hdrhistogram::Histogram;
use std::time::Duration;

/// A latency histogram in microseconds, 1 µs to 60 s.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// "p50 0.42 ms  p99 1.90 ms  p999 4.10 ms"
pub fn percentiles(h: &Histogram<u64>) -> String {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    format!("p50 {:.2} ms  p99 {:.2} ms  p999 {:.2} ms  max {:.2} ms", ms(0.50), ms(0.99), ms(0.999), h.max() as f64 / 1000.0)
}

pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}
