//! The coordinator's Prometheus page (`GET /metrics` on `metrics_listen`):
//! transactions by protocol and outcome, commit latencies, in-doubt
//! transactions, sagas by state, errors by SQLSTATE (40001 retries among
//! them), decision-log fsyncs and batch sizes, and per shard node its
//! circuit breaker, calls in flight, liveness and replication lag.

use crate::exec::Engine;
use crate::saga::SagaState;
use crate::session::Sessions;
use std::collections::BTreeMap;
use tessera_model::metrics::{Exposition, Histogram};

type Owned = Vec<(Vec<(String, String)>, f64)>;
type LabelSets<'a> = Vec<Vec<(&'a str, &'a str)>>;

/// Borrowed label sets for [`Exposition`].
fn samples(owned: &Owned) -> (LabelSets<'_>, Vec<f64>) {
    owned.iter().map(|(labels, v)| (labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(), *v)).unzip()
}

fn gauge(out: &mut Exposition, name: &str, help: &str, owned: &Owned) {
    let (labels, values) = samples(owned);
    let list: Vec<(&[(&str, &str)], f64)> = labels.iter().map(Vec::as_slice).zip(values).collect();
    out.gauge(name, help, &list);
}

fn counter(out: &mut Exposition, name: &str, help: &str, owned: &Owned) {
    let (labels, values) = samples(owned);
    let list: Vec<(&[(&str, &str)], u64)> = labels.iter().map(Vec::as_slice).zip(values.into_iter().map(|v| v as u64)).collect();
    out.counter(name, help, &list);
}

fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Renders the page from the engine's state.
pub fn render(engine: &Engine, sessions: &Sessions) -> String {
    let txns = engine.txns();
    let t = &txns.metrics;
    let sagas = engine.sagas();
    let saga_stats = sagas.stats();
    let mut out = Exposition::new();
    let outcomes: Owned = vec![
        (l(&[("protocol", "one_phase"), ("outcome", "committed")]), t.one_phase_committed.get() as f64),
        (l(&[("protocol", "one_phase"), ("outcome", "aborted")]), t.one_phase_aborted.get() as f64),
        (l(&[("protocol", "one_phase"), ("outcome", "unknown")]), t.one_phase_unknown.get() as f64),
        (l(&[("protocol", "2pc"), ("outcome", "committed")]), t.two_phase_committed.get() as f64),
        (l(&[("protocol", "2pc"), ("outcome", "aborted")]), t.two_phase_aborted.get() as f64),
        (l(&[("protocol", "saga"), ("outcome", "committed")]), saga_stats.committed as f64),
        (l(&[("protocol", "saga"), ("outcome", "rolled_back")]), saga_stats.rolled_back as f64),
        (l(&[("protocol", "saga"), ("outcome", "parked")]), saga_stats.parked as f64),
    ];
    counter(
        &mut out,
        "tessera_transactions_total",
        "Transactions that reached COMMIT, by protocol (one_phase: one writing group; 2pc; saga) and outcome (unknown: the COMMIT's answer was lost).",
        &outcomes,
    );
    let histograms: [(&str, &Histogram); 3] = [("one_phase", &t.one_phase_seconds), ("2pc", &t.two_phase_seconds), ("saga", sagas.durations())];
    let labels: Vec<[(&str, &str); 1]> = histograms.iter().map(|(p, _)| [("protocol", *p)]).collect();
    let list: Vec<(&[(&str, &str)], &Histogram)> = labels.iter().zip(histograms.iter()).map(|(l, (_, h))| (l.as_slice(), *h)).collect();
    out.histogram("tessera_commit_duration_seconds", "Time from COMMIT to its answer, by protocol (a saga: its whole run).", &list);
    out.gauge(
        "tessera_in_doubt_transactions",
        "Transactions past their commit point whose COMMIT has not reached every participant yet.",
        &[(&[], txns.in_doubt() as f64)],
    );
    let mut by_state: BTreeMap<&str, u64> = [SagaState::Running, SagaState::Compensating, SagaState::NeedsOperator].iter().map(|s| (s.name(), 0)).collect();
    for saga in sagas.list() {
        if let Some(n) = by_state.get_mut(saga.state.name()) {
            *n += 1;
        }
    }
    let owned: Owned = by_state.iter().map(|(s, n)| (l(&[("state", s)]), *n as f64)).collect();
    gauge(&mut out, "tessera_sagas", "Unfinished sagas by state (needs_operator: parked, waiting for RESUME SAGA).", &owned);
    out.counter("tessera_saga_compensations_total", "Saga compensations run.", &[(&[], saga_stats.compensations)]);
    let errors: Owned = engine.errors_by_sqlstate().into_iter().map(|(code, n)| (l(&[("sqlstate", code)]), n as f64)).collect();
    counter(&mut out, "tessera_statement_errors_total", "Statements that failed, by SQLSTATE (40001: serialization failures clients retry).", &errors);
    let journal = txns.journal();
    out.counter("tessera_decision_log_fsyncs_total", "fsyncs of the coordinator's journal (2PC decisions, saga log).", &[(&[], journal.syncs())])
        .histogram("tessera_decision_log_batch_size", "Durable journal writes sharing one fsync.", &[(&[], &journal.batch_sizes)])
        .histogram("tessera_decision_log_write_seconds", "One journal write with its fsync.", &[(&[], &journal.write_seconds)]);
    let failover = engine.failover();
    let (mut primary, mut skews) = (Owned::new(), Owned::new());
    let (mut up, mut circuit, mut in_flight, mut refused, mut opened, mut lag, mut stale, mut epochs) =
        (Owned::new(), Owned::new(), Owned::new(), Owned::new(), Owned::new(), Owned::new(), Owned::new(), Owned::new());
    for (group, record) in engine.shards().records() {
        let g = group.to_string();
        epochs.push((l(&[("group", &g)]), record.epoch as f64));
        for m in failover.members(group) {
            let node = [("group", g.as_str()), ("node", m.address.as_str())];
            up.push((l(&node), if m.reachable { 1.0 } else { 0.0 }));
            primary.push((l(&node), if m.role == "primary" { 1.0 } else { 0.0 }));
            for state in ["closed", "open", "half-open"] {
                circuit.push((l(&[node[0], node[1], ("state", state)]), if m.circuit == state { 1.0 } else { 0.0 }));
            }
            in_flight.push((l(&node), m.in_flight as f64));
            if let Some(skew) = m.clock_skew_ms {
                skews.push((l(&node), skew as f64 / 1000.0));
            }
            if let Some(client) = engine.shards().member(group, &m.address) {
                let (r, o) = client.guard().counters();
                refused.push((l(&node), r as f64));
                opened.push((l(&node), o as f64));
            }
            if m.role == "replica" {
                lag.push((l(&node), m.lag_records as f64));
                stale.push((l(&node), m.staleness_ms.map(|s| s as f64 / 1000.0).unwrap_or(f64::INFINITY)));
            }
        }
    }
    gauge(&mut out, "tessera_shard_node_up", "1 when the node answered heartbeats within the failover timeout.", &up);
    gauge(&mut out, "tessera_shard_node_primary", "1 for the primary of each shard group, 0 for its replicas.", &primary);
    gauge(&mut out, "tessera_circuit_breaker_state", "1 for the state of each shard node's circuit breaker.", &circuit);
    counter(&mut out, "tessera_circuit_breaker_opened_total", "Times a shard node's circuit breaker opened.", &opened);
    counter(&mut out, "tessera_shard_calls_refused_total", "Calls refused without being sent (breaker open or bulkhead full).", &refused);
    gauge(&mut out, "tessera_shard_calls_in_flight", "Calls in flight to each shard node (bounded by max_in_flight_per_node).", &in_flight);
    gauge(&mut out, "tessera_replication_lag_records", "Records each replica is behind its primary, from the last heartbeats.", &lag);
    gauge(&mut out, "tessera_replication_staleness_seconds", "How stale each replica reported itself (+Inf: unknown).", &stale);
    gauge(
        &mut out,
        "tessera_node_clock_skew_seconds",
        "How far each node's clock is from the coordinator's (positive: ahead), from the last heartbeat.",
        &skews,
    );
    gauge(&mut out, "tessera_shard_group_epoch", "Each shard group's epoch (raised by every failover).", &epochs);
    let mut failovers: BTreeMap<String, u64> = engine.shards().records().into_iter().map(|(g, _)| (g.to_string(), 0)).collect();
    for (group, n) in failover.counts() {
        failovers.insert(group.to_string(), n);
    }
    let owned: Owned = failovers.iter().map(|(g, n)| (l(&[("group", g)]), *n as f64)).collect();
    counter(&mut out, "tessera_failovers_total", "Failovers and switchovers since the coordinator started.", &owned);
    out.gauge("tessera_sessions", "Open client sessions.", &[(&[], sessions.count() as f64)]);
    out.finish()
}
