//! Metrics endpoints and trace ids across processes.

use crate::cluster::*;
use std::time::Duration;
use tessera_model::metrics::{sample_value, scrape};

const METRICS: &str = "metrics_listen = \"127.0.0.1:0\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_and_shards_serve_metrics_that_follow_the_work() {
    let spec = Spec { groups: 2, replicas: 1, coordinator_toml: Some(METRICS), shard_toml: Some(METRICS), ..Spec::default() };
    let cluster = TestCluster::start_spec(spec);
    let coordinator_metrics = cluster.coordinator.stdout_line("coordinator metrics on ", Duration::from_secs(10));
    let shard_metrics = cluster.shards[0].stdout_line("shard shard-1 metrics on ", Duration::from_secs(10));
    let replica_metrics = cluster.shards[1].stdout_line("shard shard-1-replica-1 metrics on ", Duration::from_secs(10));
    let mut client = cluster.client().await;
    exec(
        &mut client,
        "CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL CHECK (balance >= 0)) WITH (partitioning = 'range', split_points = '100')",
    )
    .await;
    exec(&mut client, "INSERT INTO accounts VALUES (1, 100), (150, 100)").await;
    // A cross-group transfer (2PC), a single-group one, and a CHECK failure.
    exec(&mut client, "BEGIN; UPDATE accounts SET balance = balance - 10 WHERE id = 1; UPDATE accounts SET balance = balance + 10 WHERE id = 150; COMMIT")
        .await;
    exec(&mut client, "UPDATE accounts SET balance = balance + 1 WHERE id = 1").await;
    let error = fail(&mut client, "UPDATE accounts SET balance = balance - 1000 WHERE id = 1").await;
    assert_eq!(error.sqlstate.as_deref(), Some("23514"));

    // Phase two finishes in the background; then nothing is in doubt.
    let started = std::time::Instant::now();
    let text = loop {
        let text = scrape(&coordinator_metrics).await.unwrap();
        if sample_value(&text, "tessera_in_doubt_transactions", &[]) == Some(0.0) || started.elapsed() > Duration::from_secs(15) {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let value = |name: &str, labels: &[(&str, &str)]| sample_value(&text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"));
    assert!(value("tessera_transactions_total", &[("protocol", "2pc"), ("outcome", "committed")]) >= 2.0);
    assert!(value("tessera_transactions_total", &[("protocol", "one_phase"), ("outcome", "committed")]) >= 1.0);
    assert!(value("tessera_commit_duration_seconds_count", &[("protocol", "2pc")]) >= 1.0);
    assert_eq!(value("tessera_statement_errors_total", &[("sqlstate", "23514")]), 1.0);
    assert_eq!(value("tessera_in_doubt_transactions", &[]), 0.0);
    assert!(value("tessera_decision_log_fsyncs_total", &[]) >= 1.0);
    assert_eq!(value("tessera_sagas", &[("state", "needs_operator")]), 0.0);
    let primary = cluster.shards[0].address.clone();
    assert_eq!(value("tessera_circuit_breaker_state", &[("group", "1"), ("node", &primary), ("state", "closed")]), 1.0);
    assert_eq!(value("tessera_shard_group_epoch", &[("group", "1")]), 1.0);
    assert!(text.contains("tessera_replication_lag_records{group=\"1\""), "{text}");

    let text = scrape(&shard_metrics).await.unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| sample_value(&text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"));
    let node = ("node", "shard-1");
    assert!(value("tessera_shard_commits_total", &[node, ("kind", "two_phase")]) >= 1.0);
    assert!(value("tessera_shard_prepares_total", &[node]) >= 1.0);
    assert!(value("tessera_shard_wal_syncs_total", &[node]) >= 1.0);
    assert!(value("tessera_shard_group_commit_batch_size_count", &[node]) >= 1.0);
    assert_eq!(value("tessera_shard_role", &[node, ("role", "primary")]), 1.0);
    assert_eq!(value("tessera_shard_locks_held", &[node]), 0.0);
    assert_eq!(value("tessera_shard_replica_connected", &[node, ("replica", "shard-1-replica-1")]), 1.0);
    assert!(value("tessera_shard_replication_lag_records", &[node, ("replica", "shard-1-replica-1")]).is_finite());

    let text = scrape(&replica_metrics).await.unwrap();
    assert_eq!(sample_value(&text, "tessera_shard_role", &[("node", "shard-1-replica-1"), ("role", "replica")]), Some(1.0), "{text}");
    assert!(sample_value(&text, "tessera_shard_replica_staleness_seconds", &[("node", "shard-1-replica-1")]).is_some(), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_id_follows_a_transaction_through_every_process() {
    let filter = "info,tessera_shard=debug,tessera_coordinator=debug";
    let spec = Spec { groups: 2, log_filter: Some(filter), ..Spec::default() };
    let cluster = TestCluster::start_spec(spec);
    let mut client = cluster.client().await;
    two_group_accounts(&mut client).await;
    let trace = "transfer-7f3a9c";
    client.set_trace_id(Some(trace.to_string()));
    exec(&mut client, "BEGIN; UPDATE accounts SET balance = balance - 10 WHERE id = 1; UPDATE accounts SET balance = balance + 10 WHERE id = 150; COMMIT")
        .await;
    // The same id comes back on an error, for the client to report.
    let error = fail(&mut client, "SELECT * FROM missing").await;
    assert_eq!(error.trace_id.as_deref(), Some(trace));
    client.set_trace_id(None);
    let needle = format!("trace={trace}");
    cluster.coordinator.wait_for_log(&needle, Duration::from_secs(10));
    for shard in &cluster.shards {
        // Each participant logged its prepare and commit under the trace id,
        // with the transaction id beside it.
        shard.wait_for_log(&needle, Duration::from_secs(10));
        let log = std::fs::read_to_string(&shard.log).unwrap();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&needle)).collect();
        assert!(lines.iter().any(|l| l.contains("method=Prepare") && l.contains("prepared") && l.contains("txn=")), "{}:\n{}", shard.name, lines.join("\n"));
        assert!(lines.iter().any(|l| l.contains("method=Commit") && l.contains("committed")), "{}:\n{}", shard.name, lines.join("\n"));
    }
    // The transaction id the shards logged is the one the coordinator logged.
    let shard_log = std::fs::read_to_string(&cluster.shards[0].log).unwrap();
    let txn = shard_log
        .lines()
        .find(|l| l.contains(&needle) && l.contains("method=Prepare"))
        .and_then(|l| l.split("txn=").nth(1))
        .map(|t| t[..36].to_string())
        .unwrap();
    assert!(cluster.coordinator.log_contains(&txn), "the coordinator's log does not name transaction {txn}");
}
