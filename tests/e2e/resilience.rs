//! Circuit breakers, bulkheads and chaos mode, against real processes.

use crate::cluster::*;
use std::time::{Duration, Instant};
use tessera::client::Client;

/// The member of group 1 as the shard map shows it: (circuit, calls in flight).
async fn guard_of(client: &mut Client, address: &str) -> (String, u32) {
    let map = client.shard_map().await.unwrap();
    let member = map.shard_groups.iter().flat_map(|g| g.members.iter()).find(|m| m.address == address).unwrap().clone();
    (member.circuit, member.in_flight)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_opens_its_breaker_fails_fast_and_recovers() {
    let toml = "rpc_timeout_ms = 1000\nbreaker_failure_threshold = 3\nbreaker_open_ms = 60000\n";
    let mut cluster = TestCluster::start_spec(Spec { groups: 2, coordinator_toml: Some(toml), ..Spec::default() });
    let mut client = cluster.client().await;
    two_group_accounts(&mut client).await;
    let address = cluster.shards[0].address.clone();
    cluster.shards[0].pause();

    // Calls go out and time out until the breaker opens.
    let started = Instant::now();
    let first = fail(&mut client, "SELECT balance FROM accounts WHERE id = 1").await;
    let timed_out = started.elapsed();
    assert_eq!(first.sqlstate.as_deref(), Some("08006"), "{first}");
    let mut refused = None;
    for _ in 0..5 {
        let started = Instant::now();
        let e = fail(&mut client, "SELECT balance FROM accounts WHERE id = 1").await;
        if e.message.contains("circuit breaker opened") {
            refused = Some((e, started.elapsed()));
            break;
        }
    }
    let (refused, fast) = refused.expect("the breaker never opened");
    assert_eq!(refused.sqlstate.as_deref(), Some("08006"));
    assert!(refused.message.contains(&format!("shard group 1 ({address})")), "the error names the node: {refused}");
    // Refused without a call: far quicker than a call that timed out.
    assert!(fast * 5 < timed_out, "refused in {fast:?}, a timed-out call took {timed_out:?}");
    assert_eq!(guard_of(&mut client, &address).await.0, "open");
    // The other group is not affected.
    assert_eq!(scalar(&mut client, "SELECT balance FROM accounts WHERE id = 150").await, "100");

    // Once the node answers heartbeats again, the breaker closes.
    cluster.shards[0].resume();
    let started = Instant::now();
    loop {
        match run_sql(&mut client, "SELECT balance FROM accounts WHERE id = 1").await {
            Ok(_) => break,
            Err(e) if started.elapsed() < Duration::from_secs(20) => {
                assert!(e.message.contains("circuit breaker") || e.sqlstate.as_deref() == Some("08006"), "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the breaker did not close: {e}"),
        }
    }
    assert_eq!(guard_of(&mut client, &address).await.0, "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bulkhead_bounds_calls_to_a_slow_node() {
    let toml = "rpc_timeout_ms = 4000\nbreaker_failure_threshold = 1000\nmax_in_flight_per_node = 2\n";
    let mut cluster = TestCluster::start_spec(Spec { groups: 2, coordinator_toml: Some(toml), ..Spec::default() });
    let mut client = cluster.client().await;
    two_group_accounts(&mut client).await;
    let address = cluster.shards[0].address.clone();
    cluster.shards[0].pause();
    let mut waiting = Vec::new();
    for _ in 0..6 {
        let mut c = cluster.client().await;
        waiting.push(tokio::spawn(async move { run_sql(&mut c, "SELECT balance FROM accounts WHERE id = 1").await }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // While two calls hang on the node, the rest are refused at once, and
    // the other group serves as usual.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, in_flight) = guard_of(&mut client, &address).await;
    assert_eq!(in_flight, 2, "calls in flight to the paused node");
    assert_eq!(scalar(&mut client, "SELECT balance FROM accounts WHERE id = 150").await, "100");
    let mut full = 0;
    for w in waiting {
        let e = w.await.unwrap().expect_err("the node is paused");
        if e.message.contains("bulkhead limit") {
            assert!(e.message.contains(&format!("shard group 1 ({address})")), "{e}");
            full += 1;
        }
    }
    assert!(full >= 4, "{full} of 6 calls refused by the bulkhead");
    cluster.shards[0].resume();
    let started = Instant::now();
    while run_sql(&mut client, "SELECT balance FROM accounts WHERE id = 1").await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "the node did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// About a minute of chaos: both protocols, sync replicas, every fault.
#[test]
fn a_short_chaos_run_finds_no_anomaly() {
    let output = std::process::Command::new(BIN)
        .args(["bench", "bank", "--chaos", "all", "--protocol", "both", "--replication", "sync", "--duration", "24"])
        .args(["--fault-interval", "3.5", "--fault-hold", "1.5", "--clients", "8", "--accounts", "120"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "chaos run failed:\n{stdout}\n{stderr}");
    assert_eq!(stdout.matches("anomalies: 0").count(), 2, "{stdout}");
    for fault in ["kill-primary", "kill-replica", "kill-coordinator", "pause-primary", "partition", "delay"] {
        let injected = stdout.lines().filter(|l| l.contains(&format!("] {fault} ")) && !l.contains("skipped")).count();
        assert_eq!(injected, 2, "{fault} was not injected in each run:\n{stdout}");
    }
    // Both protocols committed transfers under the faults.
    assert_eq!(stdout.lines().filter(|l| l.starts_with("operations: ") && !l.contains(": ok 0 ")).count(), 2, "{stdout}");
    println!("{stdout}");
}

/// Async replicas: losses a failover explains are listed apart; anything
/// else still fails the run. Faults are held past the failover timeout so
/// groups fail over.
#[test]
fn a_short_async_chaos_run_finds_no_anomaly() {
    let output = std::process::Command::new(BIN)
        .args(["bench", "bank", "--chaos", "kill-primary,pause-primary,partition", "--protocol", "2pc", "--replication", "async"])
        .args(["--duration", "24", "--fault-interval", "6", "--fault-hold", "4", "--clients", "8", "--accounts", "120"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "chaos run failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("anomalies: 0"), "{stdout}");
    let failovers = stdout.lines().find_map(|l| l.strip_prefix("failovers during the run: ")).and_then(|n| n.trim().parse::<u64>().ok());
    assert!(failovers.is_some_and(|n| n >= 1), "the kills and pauses of primaries fail groups over:\n{stdout}");
    println!("{stdout}");
}
