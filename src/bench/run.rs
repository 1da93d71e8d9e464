//! Running a benchmark once per replication mode asked for, each on a
//! fresh cluster, and comparing them in one table.

use super::bank::{self, BankOptions, FailoverProbe};
use super::kv::{self, KvOptions};
use super::target::{Target, TargetOptions};
use crate::client::Protocol;
use std::sync::Arc;
use std::time::Duration;
use tessera_coordinator::config::ReplicationMode;

pub enum Workload {
    Kv(KvOptions),
    /// The bank workload, once per protocol.
    Bank {
        options: BankOptions,
        protocols: Vec<Protocol>,
    },
}

pub struct Plan {
    pub workload: Workload,
    pub target: TargetOptions,
    /// One run per mode, each on a fresh cluster.
    pub modes: Vec<ReplicationMode>,
    /// SIGKILL the primary of shard group 1 this long into each run.
    pub kill_primary_at: Option<Duration>,
}

/// One line of the comparison.
struct Summary {
    label: String,
    throughput: f64,
    p50_us: u64,
    p99_us: u64,
    failover: Option<Duration>,
}

/// Runs the plan; false when an invariant failed.
pub async fn run(mut plan: Plan) -> anyhow::Result<bool> {
    let mut ok = true;
    let mut summaries = Vec::new();
    for mode in plan.modes.clone() {
        plan.target.replication = mode;
        let mut target = Target::start(&plan.target).await?;
        if plan.target.host.is_none() {
            let replicas = if mode == ReplicationMode::None { 0 } else { plan.target.replicas };
            let how = if plan.target.processes { "separate processes" } else { "in this process" };
            println!("== replication {}: {} shard groups, {replicas} replica(s) each, {how}", mode.name(), plan.target.groups);
        }
        let (run_ok, mut runs) = run_workload(&mut plan, &mut target).await?;
        ok &= run_ok;
        for s in runs.iter_mut() {
            s.label = format!("{} {}", mode.name(), s.label).trim().to_string();
        }
        summaries.extend(runs);
        target.shutdown().await;
        println!();
    }
    if summaries.len() > 1 {
        println!("{:<22} {:>12} {:>10} {:>10} {:>12}", "run", "per second", "p50 ms", "p99 ms", "failover ms");
        for s in &summaries {
            let failover = s.failover.map(|d| d.as_millis().to_string()).unwrap_or_default();
            println!("{:<22} {:>12.0} {:>10.2} {:>10.2} {:>12}", s.label, s.throughput, s.p50_us as f64 / 1000.0, s.p99_us as f64 / 1000.0, failover);
        }
    }
    Ok(ok)
}

async fn run_workload(plan: &mut Plan, target: &mut Target) -> anyhow::Result<(bool, Vec<Summary>)> {
    let builder = target.client().clone();
    match &mut plan.workload {
        Workload::Kv(options) => {
            let reports = kv::run(&builder, options).await?;
            let ok = reports.iter().all(|r| r.ops > 0);
            let summaries = reports
                .iter()
                .map(|r| Summary {
                    label: format!("kv {}", r.name),
                    throughput: super::per_second(r.ops, r.elapsed),
                    p50_us: r.latency.value_at_quantile(0.5),
                    p99_us: r.latency.value_at_quantile(0.99),
                    failover: None,
                })
                .collect();
            Ok((ok, summaries))
        }
        Workload::Bank { options, protocols } => {
            let mut ok = true;
            let mut summaries = Vec::new();
            let mut p50s = Vec::new();
            for protocol in protocols.clone() {
                options.protocol = protocol;
                let probe = plan.kill_primary_at.map(|_| Arc::new(FailoverProbe::new(1)));
                options.probe = probe.clone();
                let killer = async {
                    let (Some(at), Some(probe)) = (plan.kill_primary_at, probe) else { return Ok(None) };
                    tokio::time::sleep(at).await;
                    let killed = target.kill_primary(1).await?;
                    probe.killed();
                    println!("  -- SIGKILLed shard group 1's primary {killed}; it stays down for the rest of the run");
                    Ok::<_, anyhow::Error>(Some(killed))
                };
                let (report, killed) = tokio::join!(bank::run(&builder, options), killer);
                let report = report?;
                killed?;
                ok &= report.invariant_holds;
                p50s.push(report.cross_p50_us);
                summaries.push(Summary {
                    label: format!("bank {}", bank::protocol_name(protocol)),
                    throughput: report.commits_per_second,
                    p50_us: report.p50_us,
                    p99_us: report.p99_us,
                    failover: report.failover,
                });
                println!();
            }
            if let [two_phase, saga] = p50s.as_slice() {
                println!(
                    "cross-shard p50: 2pc {:.2} ms, saga {:.2} ms; saga / 2pc = {:.2}",
                    *two_phase as f64 / 1000.0,
                    *saga as f64 / 1000.0,
                    *saga as f64 / (*two_phase).max(1) as f64
                );
            }
            Ok((ok, summaries))
        }
    }
}
