//! Isolation, in the style of PostgreSQL's isolation suite: two sessions
//! interleaved step by step, for each anomaly at each level a client can ask
//! for. Statements that must wait for a lock run in a task of their own;
//! the test checks that they wait, then lets the other session go on.
//!
//! Expected outcomes, PostgreSQL's per level (see
//! docs/architecture/consistency.md): READ ONLY reads one snapshot; READ
//! COMMITTED reads a snapshot per statement, so it shows non-repeatable
//! reads, read skew and (read, then write back) lost updates; REPEATABLE
//! READ reads one snapshot and fails a write to a row changed since with
//! 40001, but allows write skew; SERIALIZABLE locks what it reads and writes
//! and shows none of them (a younger transaction waits, or fails with
//! 40001).

use crate::cluster::*;
use std::time::Duration;
use tessera::client::{Client, ClientError, StatementResult};
use tokio::task::JoinHandle;

const READ_ONLY: &str = "BEGIN READ ONLY";
const READ_COMMITTED: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";
const REPEATABLE_READ: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ";
const SERIALIZABLE: &str = "BEGIN ISOLATION LEVEL SERIALIZABLE";
const LEVELS: [&str; 4] = [READ_ONLY, READ_COMMITTED, REPEATABLE_READ, SERIALIZABLE];
const PAUSE: Duration = Duration::from_millis(300);

fn spawn(c: &Client, sql: &str) -> JoinHandle<Result<Vec<StatementResult>, ClientError>> {
    let (mut c, sql) = (c.clone(), sql.to_string());
    tokio::spawn(async move { c.execute(&sql).await })
}

fn value(r: &[StatementResult]) -> i64 {
    r.iter().rev().find(|r| !r.rows.is_empty()).unwrap().rows[0][0].to_string().parse().unwrap()
}

async fn reset(c: &mut Client) {
    wait_quiet(c, Duration::from_secs(10)).await;
    exec(c, "UPDATE bank SET balance = 1000 WHERE id IN (1, 2, 3, 100)").await;
}

/// T2 writes row 1 and has not committed; T1 reads it: never T2's value.
async fn dirty_read(level: &str, t1: &mut Client, t2: &mut Client) {
    exec(t2, "BEGIN; UPDATE bank SET balance = 0 WHERE id = 1").await;
    exec(t1, level).await;
    let read = spawn(t1, "SELECT balance FROM bank WHERE id = 1");
    tokio::time::sleep(PAUSE).await;
    exec(t2, "ROLLBACK").await;
    assert_eq!(value(&read.await.unwrap().unwrap()), 1000, "{level}: dirty read");
    exec(t1, "COMMIT").await;
}

/// T1 reads row 1 twice; T2 updates it in between: T1 reads the same value.
async fn non_repeatable_read(level: &str, t1: &mut Client, t2: &mut Client) {
    exec(t1, level).await;
    assert_eq!(balance(t1, 1).await, 1000);
    let write = spawn(t2, "UPDATE bank SET balance = 500 WHERE id = 1");
    tokio::time::sleep(PAUSE).await;
    let expected = if level == READ_COMMITTED { 500 } else { 1000 };
    assert_eq!(balance(t1, 1).await, expected, "{level}: a statement snapshot (READ COMMITTED) sees the update, others do not");
    exec(t1, "COMMIT").await;
    write.await.unwrap().expect("the writer goes on once the reader ends");
    assert_eq!(balance(t1, 1).await, 500);
}

/// T1 and T2 both read row 1 and write back what they read plus their own
/// amount: both amounts land, or the second fails with 40001.
async fn lost_update(level: &str, t1: &mut Client, t2: &mut Client) {
    exec(t1, level).await;
    exec(t2, level).await;
    let seen1 = balance(t1, 1).await;
    let read2 = spawn(t2, "SELECT balance FROM bank WHERE id = 1");
    tokio::time::sleep(PAUSE).await;
    exec(t1, &format!("UPDATE bank SET balance = {} WHERE id = 1; COMMIT", seen1 + 10)).await;
    let second = match read2.await.unwrap() {
        Ok(r) => run_sql(t2, &format!("UPDATE bank SET balance = {} WHERE id = 1; COMMIT", value(&r) + 20)).await,
        Err(e) => Err(e),
    };
    let _ = run_sql(t2, "ROLLBACK").await;
    let end = balance(t1, 1).await;
    match (level, second) {
        // Neither read locked: the second write overwrites the first.
        (READ_COMMITTED, Ok(_)) => assert_eq!(end, 1020, "{level}: the lost update READ COMMITTED allows"),
        // The second read waited for the first transaction.
        (SERIALIZABLE, Ok(_)) => assert_eq!(end, 1030, "{level}: lost update"),
        // The row changed after the second transaction's snapshot.
        (REPEATABLE_READ, Err(e)) => {
            assert_eq!(e.sqlstate.as_deref(), Some("40001"), "{level}: {e}");
            assert!(e.message.contains("concurrent update"), "{e}");
            assert_eq!(end, 1010);
        }
        (_, outcome) => panic!("{level}: unexpected outcome {outcome:?}, balance {end}"),
    }
}

/// Rows 2 and 3 must keep a sum of at least 1000. T1 and T2 each check the
/// sum and take 1000 from a different row: at most one of them may.
async fn write_skew(level: &str, t1: &mut Client, t2: &mut Client) {
    let take = |id: i64| format!("UPDATE bank SET balance = balance - 1000 WHERE id = {id}");
    exec(t1, level).await;
    exec(t2, level).await;
    let sum = "SELECT sum(balance) FROM bank WHERE id IN (2, 3)";
    let seen1 = value(&exec(t1, sum).await);
    let read2 = spawn(t2, sum);
    tokio::time::sleep(PAUSE).await;
    if seen1 - 1000 >= 1000 {
        exec(t1, &take(2)).await;
    }
    exec(t1, "COMMIT").await;
    if let Ok(r) = read2.await.unwrap() {
        if value(&r) - 1000 >= 1000 {
            let _ = run_sql(t2, &take(3)).await;
        }
    }
    let _ = run_sql(t2, "COMMIT").await;
    let _ = run_sql(t2, "ROLLBACK").await;
    let end = value(&exec(t1, sum).await);
    if level == SERIALIZABLE {
        assert!(end >= 1000, "{level}: write skew left {end}");
    } else {
        assert_eq!(end, 0, "{level}: both checks passed on their snapshots (the write skew PostgreSQL allows here)");
    }
}

/// T1 reads row 1 (group 1), T2 moves 50 from row 1 to row 100 (group 2)
/// and commits, T1 reads row 100: T1's two reads add up to 2000.
async fn read_skew_across_groups(level: &str, t1: &mut Client, t2: &mut Client) {
    exec(t1, level).await;
    let first = balance(t1, 1).await;
    let transfer = spawn(t2, &transfer_sql(1, 100, 50));
    tokio::time::sleep(PAUSE).await;
    let second = balance(t1, 100).await;
    let expected = if level == READ_COMMITTED { 2050 } else { 2000 };
    assert_eq!(first + second, expected, "{level}: read skew across groups (READ COMMITTED's second statement sees the transfer)");
    exec(t1, "COMMIT").await;
    transfer.await.unwrap().expect("the transfer commits once the reader ends");
    assert_eq!(balance(t1, 1).await + balance(t1, 100).await, 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dirty_and_non_repeatable_reads_and_read_skew_at_each_level() {
    let cluster = TestCluster::start(3);
    let (mut t1, mut t2) = (cluster.client().await, cluster.client().await);
    seed_bank(&mut t1).await;
    for level in LEVELS {
        dirty_read(level, &mut t1, &mut t2).await;
        reset(&mut t1).await;
        non_repeatable_read(level, &mut t1, &mut t2).await;
        reset(&mut t1).await;
        read_skew_across_groups(level, &mut t1, &mut t2).await;
        reset(&mut t1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_updates_and_write_skew_at_each_writing_level() {
    let cluster = TestCluster::start(3);
    let (mut t1, mut t2) = (cluster.client().await, cluster.client().await);
    seed_bank(&mut t1).await;
    for level in &LEVELS[1..] {
        lost_update(level, &mut t1, &mut t2).await;
        reset(&mut t1).await;
        write_skew(level, &mut t1, &mut t2).await;
        reset(&mut t1).await;
    }
    // A READ ONLY transaction cannot write at all.
    exec(&mut t1, "BEGIN READ ONLY").await;
    assert_eq!(fail(&mut t1, "UPDATE bank SET balance = 0 WHERE id = 1").await.sqlstate.as_deref(), Some("25006"));
    exec(&mut t1, "ROLLBACK").await;
}
