//! Replicated shard groups with real processes: failover after SIGKILL in
//! sync and async groups, a prepared transaction surviving its primary,
//! fencing of a paused old primary, replicas catching up from the log and
//! from a snapshot.

use crate::cluster::*;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tessera::client::{Client, Value};
use tessera_proto::v1 as pb;

async fn group(c: &mut Client, id: u32) -> pb::ShardGroup {
    c.shard_map().await.unwrap().shard_groups.into_iter().find(|g| g.id == id).expect("the group exists")
}

async fn primary(c: &mut Client, id: u32) -> String {
    group(c, id).await.members.into_iter().find(|m| m.role == "primary").unwrap().address
}

async fn replica(c: &mut Client, id: u32) -> String {
    group(c, id).await.members.into_iter().find(|m| m.role == "replica").unwrap().address
}

/// Waits until the group's primary is no longer `old`; the new primary.
async fn wait_for_new_primary(c: &mut Client, id: u32, old: &str, timeout: Duration) -> String {
    let started = Instant::now();
    while started.elapsed() < timeout {
        let now = primary(c, id).await;
        if now != old {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("shard group {id} did not fail over from {old} within {timeout:?}");
}

/// Waits until every member answers and every replica has what the primary has.
async fn wait_caught_up(c: &mut Client, id: u32, timeout: Duration) {
    let started = Instant::now();
    // The status comes from heartbeats: wait for a round sent after the
    // writes before this call, so the primary's number includes them.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut last = None;
    while started.elapsed() < timeout {
        let g = group(c, id).await;
        let primary_seq = g.members.iter().find(|m| m.role == "primary").map(|m| m.applied_seq).unwrap_or(0);
        if g.members.iter().all(|m| m.reachable && m.applied_seq == primary_seq) {
            return;
        }
        last = Some(g);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("shard group {id} did not catch up within {timeout:?}: {last:?}");
}

/// Runs `sql` until it succeeds (a failover in progress refuses writes).
async fn retry(c: &mut Client, sql: &str, timeout: Duration) {
    let started = Instant::now();
    loop {
        match c.execute(sql).await {
            Ok(_) => return,
            Err(e) if started.elapsed() < timeout => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{sql}: still failing after {timeout:?}: {e}"),
        }
    }
}

const KV: &str = "CREATE TABLE kv (k BIGINT PRIMARY KEY, v BIGINT NOT NULL) WITH (partitioning = 'hash')";

/// Writers insert distinct keys until stopped; the keys acknowledged.
struct Burst {
    acked: Arc<Mutex<Vec<i64>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Burst {
    async fn start(cluster: &TestCluster, writers: i64) -> Burst {
        let (acked, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let mut tasks = Vec::new();
        for w in 0..writers {
            let mut client = cluster.client().await;
            let (acked, stop) = (acked.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let k = w * 1_000_000 + n;
                    n += 1;
                    if client.execute_with("INSERT INTO kv VALUES ($1, $2)", &[Value::Int(k), Value::Int(n)]).await.is_ok() {
                        acked.lock().unwrap().push(k);
                    } else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }));
        }
        Burst { acked, stop, tasks }
    }

    async fn stop(self) -> Vec<i64> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

async fn present(c: &mut Client) -> BTreeSet<i64> {
    c.query("SELECT k FROM kv", &[]).await.unwrap().iter().map(|r| r.get::<i64>("k").unwrap()).collect()
}

/// Kills a group's primary in the middle of a burst of writes; returns
/// (acknowledged keys, keys present after the failover, lag at the kill).
async fn kill_primary_during_writes(cluster: &mut TestCluster) -> (Vec<i64>, BTreeSet<i64>, pb::ShardMember) {
    let mut c = cluster.client().await;
    c.execute(KV).await.unwrap();
    wait_caught_up(&mut c, 1, Duration::from_secs(20)).await;
    let burst = Burst::start(cluster, 8).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let old = primary(&mut c, 1).await;
    let at_kill = group(&mut c, 1).await.members.into_iter().find(|m| m.role == "replica").unwrap();
    cluster.node(&old).kill();
    let new = wait_for_new_primary(&mut c, 1, &old, Duration::from_secs(30)).await;
    // Writes go on against the new primary for a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acked = burst.stop().await;
    let present = present(&mut c).await;
    println!("failover from {old} to {new}: {} writes acknowledged, {} rows present", acked.len(), present.len());
    (acked, present, at_kill)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_group_failover_loses_no_acknowledged_write() {
    let mut cluster = TestCluster::start_spec(Spec { groups: 1, replicas: 1, replication: "sync", coordinator_toml: Some(FAST_FAILOVER), ..Spec::default() });
    let (acked, present, _) = kill_primary_during_writes(&mut cluster).await;
    assert!(acked.len() > 50, "the burst wrote too little to mean anything: {}", acked.len());
    let lost: Vec<&i64> = acked.iter().filter(|k| !present.contains(k)).collect();
    assert!(lost.is_empty(), "sync replication lost {} acknowledged writes: {:?}", lost.len(), &lost[..lost.len().min(10)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_group_failover_reports_what_it_lost_and_the_old_primary_rejoins() {
    let mut cluster = TestCluster::start_spec(Spec { groups: 1, replicas: 1, replication: "async", coordinator_toml: Some(FAST_FAILOVER), ..Spec::default() });
    let old = {
        let mut c = cluster.client().await;
        primary(&mut c, 1).await
    };
    let (acked, present, at_kill) = kill_primary_during_writes(&mut cluster).await;
    let lost = acked.iter().filter(|k| !present.contains(k)).count();
    println!(
        "async failover: {} acknowledged writes, {lost} lost; at the kill the replica was {} records ({} ms) behind",
        acked.len(),
        at_kill.lag_records,
        at_kill.staleness_ms.map(|s| s.to_string()).unwrap_or("?".into())
    );
    assert!(acked.len() > 50);
    // The old primary comes back as a replica of the new one, drops what it
    // had that the new primary never got, and catches up.
    cluster.node(&old).restart();
    let mut c = cluster.client().await;
    wait_caught_up(&mut c, 1, Duration::from_secs(30)).await;
    assert_eq!(replica(&mut c, 1).await, old);
    // Switched back to it, it serves exactly the new primary's data.
    let before = present;
    c.switchover(1, Some(&old)).await.unwrap();
    assert_eq!(primary(&mut c, 1).await, old);
    assert_eq!(self::present(&mut c).await, before, "the rejoined node holds the new primary's history");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_prepared_on_a_killed_primary_commits_on_the_promoted_replica() {
    let spec = Spec {
        groups: 2,
        replicas: 1,
        replication: "sync",
        coordinator_toml: Some(FAST_FAILOVER),
        shard_failpoints: Some((1, 0, "shard.commit.before_apply")),
        ..Spec::default()
    };
    let mut cluster = TestCluster::start_spec(spec);
    let mut c = cluster.client().await;
    two_group_bank(&mut c).await;
    wait_caught_up(&mut c, 1, Duration::from_secs(20)).await;
    // Two-phase commit: both groups prepare (replicated), the decision is
    // logged, group 2 commits, group 1's primary stops before applying.
    exec(&mut c, &transfer_sql(1, 100, 300)).await;
    let old = primary(&mut c, 1).await;
    cluster.node(&old).wait_for_log("failpoint shard.commit.before_apply reached", Duration::from_secs(30));
    cluster.node(&old).kill();
    let new = wait_for_new_primary(&mut c, 1, &old, Duration::from_secs(30)).await;
    // The promoted replica holds the prepared transaction with its locks;
    // the coordinator delivers COMMIT to it. A sync group acknowledges a
    // durable write (here the WAL sync that lets the coordinator forget the
    // decision) only with a replica: the old primary comes back as one.
    cluster.node(&old).restart();
    wait_quiet(&mut c, Duration::from_secs(30)).await;
    assert_eq!(replica(&mut c, 1).await, old);
    assert_eq!(scalar(&mut c, "SELECT balance FROM bank WHERE id = 1").await, "700", "committed on {new}");
    assert_eq!(scalar(&mut c, "SELECT balance FROM bank WHERE id = 100").await, "1300");
    assert_eq!(scalar(&mut c, "SELECT sum(balance) FROM bank").await, "4000");
    // And the row is writable again: its lock went with the commit.
    c.execute("UPDATE bank SET balance = balance - 1 WHERE id = 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_lost_with_its_primary_before_the_wal_sync_is_delivered_again() {
    // Group 1's first primary acknowledges COMMIT lazily (no fsync, so the
    // record is not shipped) and dies before the WAL sync that would let
    // the coordinator forget the decision. Its replica, promoted, holds the
    // transaction only as prepared: the coordinator must send COMMIT again
    // rather than count the new primary's sync.
    let spec = Spec {
        groups: 2,
        replicas: 1,
        replication: "async",
        coordinator_toml: Some(FAST_FAILOVER),
        shard_failpoints: Some((1, 0, "shard.sync_wal")),
        ..Spec::default()
    };
    let mut cluster = TestCluster::start_spec(spec);
    let mut c = cluster.client().await;
    two_group_bank(&mut c).await;
    exec(&mut c, &transfer_sql(1, 100, 300)).await;
    let old = primary(&mut c, 1).await;
    cluster.node(&old).wait_for_log("failpoint shard.sync_wal reached", Duration::from_secs(30));
    // The replica has everything durable: the prepared transaction.
    wait_caught_up(&mut c, 1, Duration::from_secs(20)).await;
    cluster.node(&old).kill();
    let new = wait_for_new_primary(&mut c, 1, &old, Duration::from_secs(30)).await;
    wait_quiet(&mut c, Duration::from_secs(30)).await;
    assert_eq!(scalar(&mut c, "SELECT balance FROM bank WHERE id = 1").await, "700", "the commit reached {new}");
    assert_eq!(scalar(&mut c, "SELECT sum(balance) FROM bank").await, "4000");
    c.execute("UPDATE bank SET balance = balance - 1 WHERE id = 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_old_primary_cannot_accept_a_write() {
    let mut cluster = TestCluster::start_spec(Spec { groups: 1, replicas: 1, replication: "async", coordinator_toml: Some(FAST_FAILOVER), ..Spec::default() });
    let mut c = cluster.client().await;
    c.execute(KV).await.unwrap();
    c.execute("INSERT INTO kv VALUES (1, 1), (2, 2)").await.unwrap();
    wait_caught_up(&mut c, 1, Duration::from_secs(20)).await;
    let old = primary(&mut c, 1).await;
    let old_epoch = group(&mut c, 1).await.epoch;
    cluster.node(&old).pause();
    let new = wait_for_new_primary(&mut c, 1, &old, Duration::from_secs(30)).await;
    retry(&mut c, "INSERT INTO kv VALUES (3, 3)", Duration::from_secs(20)).await;
    cluster.node(&old).resume();
    // Right after SIGCONT, before any heartbeat reaches it: a write in the
    // old epoch (as a coordinator that missed the failover would send) is
    // refused, because its lease ran out while it was paused.
    let status = direct_write(&old, old_epoch, 99).await.expect_err("the old primary must refuse the write");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("lease") || status.message().contains("epoch") || status.message().contains("replica"), "{}", status.message());
    // It then learns it is a replica in the new epoch, refuses writes of
    // either epoch, and catches up with the new primary.
    wait_caught_up(&mut c, 1, Duration::from_secs(30)).await;
    for epoch in [old_epoch, old_epoch + 1] {
        let status = direct_write(&old, epoch, 98).await.expect_err("a replica takes no writes");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
    assert_eq!(replica(&mut c, 1).await, old);
    assert_eq!(primary(&mut c, 1).await, new);
    let keys = present(&mut c).await;
    assert_eq!(keys, BTreeSet::from([1, 2, 3]), "nothing the paused node was sent is visible");
}

/// A write sent straight to a shard node, as a coordinator would send it.
async fn direct_write(address: &str, epoch: u64, key: i64) -> Result<(), tonic::Status> {
    use tessera_proto::shard as spb;
    let mut client = spb::shard_client::ShardClient::connect(format!("http://{address}")).await.unwrap();
    let row = tessera_model::data::row::encode_row(&[Value::Int(key), Value::Int(key)]);
    let key = tessera_model::data::keys::row_key(1, &Value::Int(key));
    let request = spb::WriteRequest {
        txn: Some(spb::TxnContext { txn_id: format!("direct-{epoch}-{}", rand_suffix()), timestamp: 1, begin: true, coordinator: String::new() }),
        mutations: vec![spb::Mutation { key, op: Some(spb::mutation::Op::Put(row)) }],
    };
    let mut request = tonic::Request::new(request);
    request.metadata_mut().insert(tessera_proto::CLUSTER_SECRET_METADATA_KEY, CLUSTER_SECRET.parse().unwrap());
    request.metadata_mut().insert(tessera_proto::EPOCH_METADATA_KEY, epoch.to_string().parse().unwrap());
    client.write(request).await.map(|_| ())
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_replicas_catch_up_from_the_log_or_from_a_snapshot() {
    let spec = Spec {
        groups: 1,
        replicas: 1,
        replication: "async",
        coordinator_toml: Some(FAST_FAILOVER),
        shard_toml: Some("log_retention_records = 20\n"),
        ..Spec::default()
    };
    let mut cluster = TestCluster::start_spec(spec);
    let mut c = cluster.client().await;
    c.execute(KV).await.unwrap();
    wait_caught_up(&mut c, 1, Duration::from_secs(20)).await;
    let follower = replica(&mut c, 1).await;
    // A short absence: the log still has what it missed.
    cluster.node(&follower).kill();
    for k in 0..10 {
        c.execute_with("INSERT INTO kv VALUES ($1, 0)", &[Value::Int(k)]).await.unwrap();
    }
    cluster.node(&follower).restart();
    wait_caught_up(&mut c, 1, Duration::from_secs(30)).await;
    assert!(!cluster.node(&follower).log_contains("snapshot installed"), "caught up from the log");
    // A long absence: the records it needs were truncated (20 kept).
    cluster.node(&follower).kill();
    for k in 10..110 {
        c.execute_with("INSERT INTO kv VALUES ($1, 0)", &[Value::Int(k)]).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1200)).await; // truncation runs every 500 ms
    cluster.node(&follower).restart();
    wait_caught_up(&mut c, 1, Duration::from_secs(30)).await;
    cluster.node(&follower).wait_for_log("snapshot installed", Duration::from_secs(10));
    // Promoted, it has every row.
    c.switchover(1, Some(&follower)).await.unwrap();
    assert_eq!(primary(&mut c, 1).await, follower);
    assert_eq!(present(&mut c).await, (0..110).collect::<BTreeSet<i64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_reads_say_how_stale_they_are_and_honour_a_bound() {
    // Default failure detection (3 s): a short pause does not fail over.
    let mut cluster = TestCluster::start_spec(Spec { groups: 1, replicas: 1, replication: "async", ..Spec::default() });
    let mut c = cluster.client().await;
    c.execute(KV).await.unwrap();
    c.execute("INSERT INTO kv VALUES (1, 10), (2, 20)").await.unwrap();
    wait_caught_up(&mut c, 1, Duration::from_secs(20)).await;
    // Reads go to the primary by default: no staleness reported.
    assert_eq!(c.execute("SELECT v FROM kv WHERE k = 1").await.unwrap()[0].staleness_ms, None);
    c.execute("SET replica_reads = on").await.unwrap();
    let fresh = c.execute("SELECT sum(v) FROM kv").await.unwrap().remove(0);
    assert_eq!(fresh.rows[0][0].to_string(), "30");
    assert!(fresh.staleness_ms.is_some_and(|s| s < 1_000), "{:?}", fresh.staleness_ms);
    // With the primary frozen, the replica still answers, and says it may be behind.
    let old = primary(&mut c, 1).await;
    cluster.node(&old).pause();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stale = c.execute("SELECT sum(v) FROM kv").await.unwrap().remove(0);
    assert_eq!(stale.rows[0][0].to_string(), "30");
    assert!(stale.staleness_ms.is_some_and(|s| s >= 400), "the replica lost its primary 500 ms ago: {:?}", stale.staleness_ms);
    // A bound it cannot meet: refused (TR001) under the refuse policy.
    c.execute("SET replica_max_staleness = '100ms'; SET replica_stale_policy = 'refuse'").await.unwrap();
    let e = c.execute("SELECT sum(v) FROM kv").await.unwrap_err();
    assert_eq!(e.sqlstate.as_deref(), Some("TR001"), "{e}");
    cluster.node(&old).resume();
    // Back in touch, the replica meets the bound again.
    let started = Instant::now();
    loop {
        match c.execute("SELECT sum(v) FROM kv").await {
            Ok(r) => {
                assert!(r[0].staleness_ms.is_some_and(|s| s <= 100), "{:?}", r[0].staleness_ms);
                break;
            }
            Err(e) if started.elapsed() < Duration::from_secs(10) => {
                assert_eq!(e.sqlstate.as_deref(), Some("TR001"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(primary(&mut c, 1).await, old, "no failover happened");
    // The per-request option of the gRPC API does the same.
    let mut other = cluster.client().await;
    other.set_replica_reads(Some(tessera::client::ReplicaReads { max_staleness: Some(Duration::from_secs(5)), refuse_stale: true }));
    assert!(other.execute("SELECT count(*) FROM kv").await.unwrap()[0].staleness_ms.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_switchover_under_load_loses_nothing_even_in_async_mode() {
    let mut cluster = TestCluster::start_spec(Spec { groups: 1, replicas: 1, replication: "async", coordinator_toml: Some(FAST_FAILOVER), ..Spec::default() });
    let mut c = cluster.client().await;
    c.execute(KV).await.unwrap();
    wait_caught_up(&mut c, 1, Duration::from_secs(20)).await;
    let burst = Burst::start(&cluster, 8).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (old, target) = (primary(&mut c, 1).await, replica(&mut c, 1).await);
    let after = c.switchover(1, None).await.unwrap();
    assert_eq!(primary(&mut c, 1).await, target);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acked = burst.stop().await;
    let present = present(&mut c).await;
    let lost: Vec<&i64> = acked.iter().filter(|k| !present.contains(k)).collect();
    println!("switchover from {old} to {target} (epoch {}): {} writes acknowledged, {} lost", after.epoch, acked.len(), lost.len());
    assert!(acked.len() > 50);
    assert!(lost.is_empty(), "a switchover lost {} acknowledged writes", lost.len());
    // The old primary follows the new one.
    wait_caught_up(&mut c, 1, Duration::from_secs(20)).await;
    assert_eq!(replica(&mut c, 1).await, old);
    let _ = &mut cluster;
}

/// The replicas of a group.
async fn replicas(c: &mut Client, id: u32) -> Vec<String> {
    group(c, id).await.members.into_iter().filter(|m| m.role == "replica").map(|m| m.address).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_group_short_of_replicas_does_not_acknowledge_and_resumes_when_one_returns() {
    // Two replicas, either one enough for a write.
    let spec = Spec {
        groups: 2,
        replicas: 2,
        replication: "sync",
        sync_replicas: Some(1),
        coordinator_toml: Some(FAST_FAILOVER),
        shard_toml: Some("sync_timeout_ms = 1000\n"),
        ..Spec::default()
    };
    let mut cluster = TestCluster::start_spec(spec);
    let mut c = cluster.client().await;
    two_group_bank(&mut c).await;
    wait_caught_up(&mut c, 1, Duration::from_secs(20)).await;
    let [first, second] = <[String; 2]>::try_from(replicas(&mut c, 1).await).unwrap();

    // One replica gone: the other acknowledges; nothing stops.
    cluster.node(&first).kill();
    exec(&mut c, &transfer_sql(1, 100, 100)).await;
    exec(&mut c, "UPDATE bank SET balance = balance + 1 WHERE id = 2").await;
    assert_eq!(balance(&mut c, 1).await, 900);

    // Both gone: a one-phase COMMIT is applied on the primary but not
    // acknowledged, and the client is told its outcome is unknown.
    cluster.node(&second).kill();
    let e = fail(&mut c, "UPDATE bank SET balance = balance + 1 WHERE id = 2").await;
    assert_eq!(e.sqlstate.as_deref(), Some("08007"), "{e}");
    assert!(e.is_unknown_outcome(), "{e}");
    assert!(e.message.contains("shard group 1") && e.message.contains("acknowledged"), "{e}");
    // The other group does not care.
    exec(&mut c, "UPDATE bank SET balance = balance + 1 WHERE id = 101").await;

    // A replica comes back, catches up (the unacknowledged write included:
    // it was on the primary), and writes are acknowledged again.
    cluster.node(&first).restart();
    let mut unknown = 1;
    let started = Instant::now();
    loop {
        match run_sql(&mut c, "UPDATE bank SET balance = balance + 1 WHERE id = 2").await {
            Ok(_) => break,
            Err(e) if e.sqlstate.as_deref() == Some("08007") && started.elapsed() < Duration::from_secs(30) => unknown += 1,
            Err(e) => panic!("writes did not resume: {e}"),
        }
    }
    // Every unacknowledged write had been applied on the primary.
    assert_eq!(balance(&mut c, 2).await, 1000 + 1 + unknown + 1);
    assert_eq!(scalar(&mut c, "SELECT sum(balance) FROM bank").await, (4000 + 1 + unknown + 1 + 1).to_string());
}

/// `bank` over two groups: accounts 1 and 2 on group 1, 100 and 101 on
/// group 2, 1000 in each.
async fn two_group_bank(c: &mut Client) {
    exec(c, "CREATE TABLE bank (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL CHECK (balance >= 0)) WITH (partitioning = 'range', split_points = '100')")
        .await;
    exec(c, "INSERT INTO bank VALUES (1, 1000), (2, 1000)").await;
    exec(c, "INSERT INTO bank VALUES (100, 1000), (101, 1000)").await;
}
