//! Consistent snapshots: readers never see half of a two-phase commit,
//! READ ONLY transactions read one snapshot without locks, and the
//! timestamp order survives restarts.

use crate::cluster::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera::client::Client;

const SUM: &str = "SELECT sum(balance), count(*) FROM bank";

/// A small deterministic generator (no dependency for a test's dice).
struct Dice(u64);

impl Dice {
    fn roll(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

const ACCOUNTS: [i64; 15] = [1, 2, 3, 4, 5, 100, 101, 102, 103, 104, 200, 201, 202, 203, 204];

/// Moves money between random accounts (mostly across groups) until `stop`.
async fn writer(mut c: Client, seed: u64, stop: Arc<AtomicBool>, commits: Arc<AtomicU64>) {
    let mut dice = Dice(seed);
    while !stop.load(Ordering::Relaxed) {
        let from = ACCOUNTS[dice.roll(15) as usize];
        let to = ACCOUNTS[dice.roll(15) as usize];
        if from == to {
            continue;
        }
        if run_sql(&mut c, &transfer_sql(from, to, 1 + dice.roll(20) as i64)).await.is_ok() {
            commits.fetch_add(1, Ordering::Relaxed);
        } else {
            let _ = run_sql(&mut c, "ROLLBACK").await;
        }
    }
}

/// What one reader saw.
#[derive(Debug, Default)]
struct Seen {
    reads: u64,
    wrong: Vec<String>,
    failed: Vec<String>,
}

/// Sums every balance until `stop`, each read as `mode` says: a statement,
/// a READ ONLY transaction, a replica read, or a READ ONLY transaction half
/// a second in the past (`SET TRANSACTION SNAPSHOT`).
async fn reader(mut c: Client, mode: &'static str, stop: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen::default();
    let sql = match mode {
        "read only" => format!("BEGIN READ ONLY; {SUM}; SELECT sum(balance) FROM bank WHERE id < 100; {SUM}; COMMIT"),
        // Tessera's AS OF SYSTEM TIME: a snapshot half a second in the past.
        "as of" => format!("BEGIN READ ONLY; SET TRANSACTION SNAPSHOT '-500ms'; {SUM}; COMMIT"),
        _ => SUM.to_string(),
    };
    if mode == "as of" {
        // Half a second after the accounts were loaded, the past holds them.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    if mode == "replica" {
        exec(&mut c, "SET replica_reads = on").await;
        // A replica read takes a snapshot every replica has closed, which
        // may be from before the accounts were loaded: wait until the
        // replicas' snapshots include them (they never go back).
        let started = Instant::now();
        while scalar(&mut c, "SELECT count(*) FROM bank").await != "15" {
            assert!(started.elapsed() < Duration::from_secs(10), "the replicas' snapshots never reached the loaded accounts");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    while !stop.load(Ordering::Relaxed) {
        match run_sql(&mut c, &sql).await {
            Ok(results) => {
                seen.reads += 1;
                for r in results.iter().filter(|r| r.columns.len() == 2) {
                    let (sum, count) = (r.rows[0][0].to_string(), r.rows[0][1].to_string());
                    if sum != BANK_TOTAL.to_string() || count != "15" {
                        seen.wrong.push(format!("{mode}: sum {sum}, count {count}"));
                    }
                }
            }
            Err(e) => {
                seen.failed.push(format!("{mode}: {e}"));
                let _ = run_sql(&mut c, "ROLLBACK").await;
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sums_across_three_groups_are_exact_while_transfers_commit_in_every_read_mode() {
    let cluster = TestCluster::start_spec(Spec { groups: 3, replicas: 1, replication: "sync", ..Spec::default() });
    let mut c = cluster.client().await;
    seed_bank(&mut c).await;
    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for seed in 0..8 {
        writers.push(tokio::spawn(writer(cluster.client().await, seed + 1, stop.clone(), commits.clone())));
    }
    let mut readers = Vec::new();
    for mode in ["autocommit", "read only", "replica", "as of"] {
        readers.push(tokio::spawn(reader(cluster.client().await, mode, stop.clone())));
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let mut total_reads = 0;
    for r in readers {
        let seen = r.await.unwrap();
        assert!(seen.wrong.is_empty(), "{} wrong sums out of {}: {:?}", seen.wrong.len(), seen.reads, &seen.wrong[..seen.wrong.len().min(5)]);
        assert!(seen.failed.is_empty(), "{} reads failed: {:?}", seen.failed.len(), &seen.failed[..seen.failed.len().min(5)]);
        assert!(seen.reads >= 20, "{seen:?}");
        total_reads += seen.reads;
    }
    let commits = commits.load(Ordering::Relaxed);
    assert!(commits >= 100, "the writers committed only {commits} transfers in 30 s");
    eprintln!("{commits} transfers committed, {total_reads} consistent reads");
    wait_quiet(&mut c, Duration::from_secs(10)).await;
    assert_bank_invariant(&mut c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_transaction_reads_one_snapshot_takes_no_locks_and_refuses_writes() {
    let cluster = TestCluster::start(3);
    let mut reader = cluster.client().await;
    let mut writer = cluster.client().await;
    seed_bank(&mut writer).await;
    exec(&mut reader, "BEGIN READ ONLY").await;
    assert_eq!(scalar(&mut reader, "SHOW transaction_read_only").await, "on");
    assert_eq!(balance(&mut reader, 1).await, 1000);
    // A writer is not blocked by the reader and commits across two groups.
    exec(&mut writer, &transfer_sql(1, 100, 10)).await;
    // The reader still sees its snapshot, on both groups.
    assert_eq!((balance(&mut reader, 1).await, balance(&mut reader, 100).await), (1000, 1000));
    for (sql, word) in [("UPDATE bank SET balance = 0 WHERE id = 1", "UPDATE"), ("INSERT INTO bank VALUES (9, 1)", "INSERT")] {
        let e = fail(&mut reader, sql).await;
        assert_eq!(e.sqlstate.as_deref(), Some("25006"), "{e}");
        assert!(e.to_string().contains(&format!("cannot execute {word} in a read-only transaction")), "{e}");
        // As in PostgreSQL the transaction is now failed.
        exec(&mut reader, "ROLLBACK; BEGIN READ ONLY").await;
    }
    exec(&mut reader, "ROLLBACK").await;
    // A fresh statement sees the transfer.
    assert_eq!((balance(&mut reader, 1).await, balance(&mut reader, 100).await), (990, 1010));
    // SET TRANSACTION READ ONLY works before the first query, not after.
    exec(&mut reader, "BEGIN; SET TRANSACTION READ ONLY").await;
    assert_eq!(fail(&mut reader, "DELETE FROM bank WHERE id = 2").await.sqlstate.as_deref(), Some("25006"));
    exec(&mut reader, "ROLLBACK; BEGIN").await;
    balance(&mut reader, 2).await;
    assert_eq!(fail(&mut reader, "SET TRANSACTION READ ONLY").await.sqlstate.as_deref(), Some("25001"));
    exec(&mut reader, "ROLLBACK").await;
    wait_quiet(&mut writer, Duration::from_secs(10)).await;
    assert_bank_invariant(&mut writer).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_acknowledged_before_a_coordinator_restart_is_seen_by_every_read_after_it() {
    let mut cluster = TestCluster::start(2);
    let mut c = cluster.client().await;
    two_group_accounts(&mut c).await;
    let started = Instant::now();
    let mut expected = 100;
    for round in 0..3 {
        for _ in 0..5 {
            expected += 1;
            exec(&mut c, "UPDATE accounts SET balance = balance + 1 WHERE id = 150").await;
        }
        // SIGKILL: the oracle restarts from its durable high-water mark, so
        // no read timestamp after the restart is below an acknowledged commit.
        cluster.coordinator.kill();
        cluster.coordinator.restart();
        c = cluster.client().await;
        assert_eq!(scalar(&mut c, "SELECT balance FROM accounts WHERE id = 150").await, expected.to_string(), "round {round}");
        exec(&mut c, "BEGIN READ ONLY").await;
        assert_eq!(scalar(&mut c, "SELECT sum(balance) FROM accounts").await, (expected + 100).to_string());
        exec(&mut c, "COMMIT").await;
    }
    assert!(started.elapsed() < Duration::from_secs(120));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_read_waits_for_a_prepared_transfer_even_across_a_participant_crash() {
    let mut cluster = TestCluster::start_with_failpoints(2, Some("coordinator.after_commit_logged"), None);
    let mut c = cluster.client().await;
    exec(&mut c, "CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL) WITH (partitioning = 'range', split_points = '100')").await;
    // One group per statement: one-phase commits, which pass no failpoint.
    exec(&mut c, "INSERT INTO accounts VALUES (1, 100)").await;
    exec(&mut c, "INSERT INTO accounts VALUES (150, 100)").await;
    // The transfer's COMMIT is logged, then the coordinator's task stops:
    // both participants hold it prepared, with intents on both rows.
    let mut w = cluster.client().await;
    let transfer = "BEGIN; UPDATE accounts SET balance = balance - 30 WHERE id = 1; UPDATE accounts SET balance = balance + 30 WHERE id = 150; COMMIT";
    let _pending = tokio::spawn(async move { run_sql(&mut w, transfer).await });
    cluster.coordinator.wait_for_log("failpoint coordinator.after_commit_logged reached", Duration::from_secs(20));
    let mut r = cluster.client().await;
    let reader = tokio::spawn(async move { run_sql(&mut r, "SELECT sum(balance) FROM accounts").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!reader.is_finished(), "a snapshot read above the prepare timestamps waits for the decision");
    // SIGKILL one participant while the read waits; it restarts with the
    // transfer still prepared, and its resolver learns the outcome.
    cluster.shards[1].kill();
    cluster.shards[1].restart();
    match reader.await.unwrap() {
        Ok(r) => assert_eq!(r[0].rows[0][0].to_string(), "200", "the waiting read saw all of the transfer or none of it"),
        Err(e) => assert_eq!(e.sqlstate.as_deref(), Some("08006"), "only the dead node may fail the read: {e}"),
    }
    // The in-doubt resolvers commit the transfer on both groups; every read
    // sees the total, and then the transfer whole.
    let started = Instant::now();
    loop {
        match run_sql(&mut c, "SELECT balance FROM accounts ORDER BY id").await {
            Ok(r) => {
                let got: Vec<String> = r[0].rows.iter().map(|row| row[0].to_string()).collect();
                assert!(got == ["100", "100"] || got == ["70", "130"], "half of a two-phase commit was visible: {got:?}");
                if got == ["70", "130"] {
                    break;
                }
            }
            Err(e) => assert!(started.elapsed() < Duration::from_secs(30), "{e}"),
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the transfer was never resolved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_collection_keeps_what_an_open_snapshot_reads_long_past_the_retention() {
    let cluster = TestCluster::start_spec(Spec { groups: 2, coordinator_toml: Some("gc_retention_ms = 300"), ..Spec::default() });
    let mut c = cluster.client().await;
    let mut reader = cluster.client().await;
    two_group_accounts(&mut c).await;
    exec(&mut reader, "BEGIN READ ONLY").await;
    assert_eq!(scalar(&mut reader, "SELECT sum(balance) FROM accounts").await, "200");
    // Many versions of both rows, then several retention periods and
    // collection rounds.
    for _ in 0..50 {
        exec(&mut c, "UPDATE accounts SET balance = balance + 1 WHERE id = 1").await;
        exec(&mut c, "UPDATE accounts SET balance = balance - 1 WHERE id = 150").await;
        exec(&mut c, "DELETE FROM accounts WHERE id = 2").await;
        exec(&mut c, "INSERT INTO accounts VALUES (2, 0)").await;
    }
    exec(&mut c, "DELETE FROM accounts WHERE id = 2").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The held snapshot still reads exactly what it read.
    assert_eq!(rows(&mut reader, "SELECT id, balance FROM accounts ORDER BY id").await, vec![vec!["1", "100"], vec!["150", "100"]]);
    exec(&mut reader, "COMMIT").await;
    assert_eq!(rows(&mut c, "SELECT id, balance FROM accounts ORDER BY id").await, vec![vec!["1", "150"], vec!["150", "50"]]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Collected or not, what a fresh snapshot reads is unchanged.
    assert_eq!(rows(&mut c, "SELECT id, balance FROM accounts ORDER BY id").await, vec![vec!["1", "150"], vec!["150", "50"]]);
    assert_eq!(scalar(&mut c, "SELECT count(*) FROM accounts WHERE id = 2").await, "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn set_transaction_snapshot_reads_the_past_and_refuses_the_future() {
    let cluster = TestCluster::start(2);
    let mut c = cluster.client().await;
    let mut past = cluster.client().await;
    two_group_accounts(&mut c).await;
    exec(&mut past, "BEGIN READ ONLY").await;
    let snapshot = scalar(&mut past, "SHOW transaction_snapshot").await;
    exec(&mut past, "COMMIT").await;
    exec(&mut c, "BEGIN; UPDATE accounts SET balance = 0 WHERE id = 1; UPDATE accounts SET balance = 200 WHERE id = 150; COMMIT").await;
    // Another transaction imports the earlier snapshot: the transfer is not there yet.
    exec(&mut past, &format!("BEGIN READ ONLY; SET TRANSACTION SNAPSHOT '{snapshot}'")).await;
    assert_eq!(rows(&mut past, "SELECT id, balance FROM accounts ORDER BY id").await, vec![vec!["1", "100"], vec!["150", "100"]]);
    exec(&mut past, "COMMIT").await;
    // A relative time: a millisecond ago, so after the transfer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    exec(&mut past, "BEGIN READ ONLY; SET TRANSACTION SNAPSHOT '-1ms'").await;
    assert_eq!(scalar(&mut past, "SELECT balance FROM accounts WHERE id = 1").await, "0");
    exec(&mut past, "COMMIT").await;
    for (sql, state) in [
        ("BEGIN; SET TRANSACTION SNAPSHOT '-1s'", "0A000"),
        ("BEGIN READ ONLY; SET TRANSACTION SNAPSHOT '99999999999999999'", "22023"),
        ("BEGIN READ ONLY; SET TRANSACTION SNAPSHOT 'yesterday'", "22023"),
    ] {
        let e = fail(&mut past, sql).await;
        assert_eq!(e.sqlstate.as_deref(), Some(state), "{sql}: {e}");
        exec(&mut past, "ROLLBACK").await;
    }
}
