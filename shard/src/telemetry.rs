//! The shard's metrics page (trace ids are [`tessera_model::trace`]'s).

use crate::replication::{Node, Role};
use crate::txn::Participant;
use tessera_model::metrics::Exposition;

/// The shard node's metrics page.
pub fn render(participant: &Participant, node: &Node) -> String {
    let m = &participant.metrics;
    let locks = participant.locks();
    let (active, prepared) = participant.counts();
    let report = node.report();
    let (last, _) = node.log().last();
    let id = node.node_id.as_str();
    let me: &[(&str, &str)] = &[("node", id)];
    let role = match node.role() {
        Role::Primary => "primary",
        Role::Replica { .. } => "replica",
    };
    let mut out = Exposition::new();
    out.counter(
        "tessera_shard_commits_total",
        "Transactions committed on this node, by kind (one_phase: a single-group transaction; two_phase: after PREPARE).",
        &[(&[("node", id), ("kind", "one_phase")], m.one_phase_commits.get()), (&[("node", id), ("kind", "two_phase")], m.two_phase_commits.get())],
    )
    .counter("tessera_shard_prepares_total", "PREPARE votes made durable (yes votes).", &[(me, m.prepares.get())])
    .counter(
        "tessera_shard_aborts_total",
        "Transactions aborted here (by the coordinator, a failed one-phase commit or the idle timeout).",
        &[(me, m.aborts.get())],
    )
    .histogram(
        "tessera_shard_commit_duration_seconds",
        "Time from a COMMIT's arrival to its durable apply, by kind.",
        &[(&[("node", id), ("kind", "one_phase")], &m.one_phase_commit_seconds), (&[("node", id), ("kind", "two_phase")], &m.two_phase_commit_seconds)],
    )
    .histogram("tessera_shard_prepare_duration_seconds", "Time to make a PREPARE vote durable.", &[(me, &m.prepare_seconds)])
    .counter("tessera_shard_lock_waits_total", "Lock requests that waited for another transaction.", &[(me, locks.waits.get())])
    .histogram("tessera_shard_lock_wait_seconds", "How long lock requests waited.", &[(me, &locks.wait_seconds)])
    .counter(
        "tessera_shard_lock_conflicts_total",
        "Transactions failed with 40001 over a lock, by reason (wound_wait: an older transaction needed a lock the younger one held; timeout: lock_timeout_ms passed).",
        &[(&[("node", id), ("reason", "wound_wait")], m.wounds.get()), (&[("node", id), ("reason", "timeout")], m.conflicts_timeout.get())],
    )
    .counter(
        "tessera_shard_intent_waits_total",
        "Snapshot reads that waited for a prepared or committing transaction's decision to be applied.",
        &[(me, m.intent_waits.get())],
    )
    .counter("tessera_shard_gc_versions_total", "Row versions removed by garbage collection.", &[(me, m.gc_versions.get())])
    .counter("tessera_shard_gc_bytes_total", "Bytes (keys and values) of the row versions garbage collection removed.", &[(me, m.gc_bytes.get())])
    .gauge("tessera_shard_gc_horizon", "The garbage-collection horizon: reads below it are refused (72000).", &[(me, participant.gc_horizon() as f64)])
    .counter("tessera_shard_wal_syncs_total", "WAL fsyncs of the storage engine.", &[(me, participant.engine().wal_syncs())])
    .counter("tessera_shard_synced_writes_total", "Writes that asked for durability, before group commit merged them.", &[(me, participant.synced_writes())])
    .histogram("tessera_shard_group_commit_batch_size", "Durable writes merged into one group-commit write and fsync.", &[(me, &m.group_commit.batch)])
    .histogram("tessera_shard_group_commit_write_seconds", "One group-commit write with its fsync.", &[(me, &m.group_commit.write_seconds)])
    .gauge("tessera_shard_active_transactions", "Transactions with statements but no PREPARE yet.", &[(me, active as f64)])
    .gauge("tessera_shard_prepared_transactions", "Prepared transactions waiting for their decision (in doubt here).", &[(me, prepared as f64)])
    .gauge("tessera_shard_locks_held", "Row locks held.", &[(me, participant.locks_held() as f64)])
    .gauge("tessera_shard_role", "1 for this node's role.", &[(&[("node", id), ("role", role)], 1.0)])
    .gauge("tessera_shard_epoch", "The shard group epoch this node is in.", &[(me, node.epoch() as f64)])
    .gauge("tessera_shard_log_last_seq", "Last record in this node's replication log.", &[(me, last as f64)])
    .gauge("tessera_shard_log_durable_seq", "Last durable record in this node's replication log.", &[(me, node.log().durable() as f64)])
    .gauge("tessera_shard_log_first_seq", "First record still kept in the replication log.", &[(me, node.log().first() as f64)]);
    if role == "replica" {
        let staleness = if report.staleness_ms == u64::MAX { f64::INFINITY } else { report.staleness_ms as f64 / 1000.0 };
        out.gauge("tessera_shard_replica_staleness_seconds", "How far this replica may be behind its primary (+Inf: not following).", &[(me, staleness)]);
    }
    let replicas = report.replicas;
    let lag: Vec<(Vec<(&str, &str)>, f64)> = replicas.iter().map(|r| (vec![("node", id), ("replica", r.replica.as_str())], r.lag_records as f64)).collect();
    let stale: Vec<(Vec<(&str, &str)>, f64)> = replicas
        .iter()
        .map(|r| {
            let s = if r.staleness_ms == u64::MAX { f64::INFINITY } else { r.staleness_ms as f64 / 1000.0 };
            (vec![("node", id), ("replica", r.replica.as_str())], s)
        })
        .collect();
    let connected: Vec<(Vec<(&str, &str)>, f64)> =
        replicas.iter().map(|r| (vec![("node", id), ("replica", r.replica.as_str())], if r.connected { 1.0 } else { 0.0 })).collect();
    out.gauge("tessera_shard_replication_lag_records", "Primary: records each replica has not acknowledged.", &borrow(&lag))
        .gauge("tessera_shard_replication_lag_seconds", "Primary: how stale each replica reported itself (+Inf: unknown).", &borrow(&stale))
        .gauge("tessera_shard_replica_connected", "Primary: 1 while the replica's stream is open.", &borrow(&connected));
    out.finish()
}

type Owned<'a> = Vec<(Vec<(&'a str, &'a str)>, f64)>;

fn borrow<'a, 'b>(v: &'b Owned<'a>) -> Vec<(&'b [(&'a str, &'a str)], f64)> {
    v.iter().map(|(l, x)| (l.as_slice(), *x)).collect()
}
