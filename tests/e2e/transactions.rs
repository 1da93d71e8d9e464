//! Explicit transactions: commit, rollback, isolation, the failed state,
//! SHOW TRANSACTIONS, and deadlocks across shards.

use crate::cluster::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn explicit_transactions_commit_roll_back_and_isolate() {
    let cluster = TestCluster::start(3);
    let mut a = cluster.client().await;
    let mut b = cluster.client().await;
    seed_bank(&mut a).await;

    // A transfer across groups 1 and 2, seen only after COMMIT.
    exec(&mut a, "BEGIN; UPDATE bank SET balance = balance - 10 WHERE id = 1; UPDATE bank SET balance = balance + 10 WHERE id = 100").await;
    assert_eq!(balance(&mut a, 1).await, 990, "a transaction reads its own writes");
    assert_eq!(scalar(&mut b, "SELECT balance FROM bank WHERE id = 100").await, "1000", "others read committed data");
    let shown = rows(&mut b, "SHOW TRANSACTIONS").await;
    assert!(shown.iter().any(|r| r[1] == "active" && r[2].contains("1:active") && r[2].contains("2:active")), "{shown:?}");
    exec(&mut a, "COMMIT").await;
    assert_eq!((balance(&mut b, 1).await, balance(&mut b, 100).await), (990, 1010));

    // ROLLBACK undoes everything.
    exec(&mut a, "BEGIN; UPDATE bank SET balance = 0 WHERE id = 2; DELETE FROM bank WHERE id = 200; INSERT INTO bank VALUES (7, 5)").await;
    exec(&mut a, "ROLLBACK").await;
    assert_eq!(scalar(&mut b, "SELECT count(*) FROM bank").await, "15");
    assert_bank_invariant(&mut b).await;

    // After an error the transaction only accepts its end; COMMIT rolls back.
    exec(&mut a, "BEGIN; UPDATE bank SET balance = balance + 1 WHERE id = 3").await;
    let err = fail(&mut a, "INSERT INTO bank VALUES (100, 1)").await;
    assert_eq!(err.sqlstate.as_deref(), Some("23505"));
    let err = fail(&mut a, "SELECT 1").await;
    assert_eq!(err.sqlstate.as_deref(), Some("25P02"), "{err}");
    assert_eq!(exec(&mut a, "COMMIT").await[0].tag, "ROLLBACK");
    assert_eq!(balance(&mut a, 3).await, 1000);

    // Reads inside a transaction lock their rows: a younger writer waits in
    // line until the reader ends instead of changing what was read.
    exec(&mut a, "BEGIN; SELECT balance FROM bank WHERE id = 4").await;
    let writer = {
        let mut b = b.clone();
        tokio::spawn(async move { b.execute("UPDATE bank SET balance = balance + 0 WHERE id = 4").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!writer.is_finished(), "the younger writer waits for the reader's lock");
    assert_eq!(balance(&mut a, 4).await, 1000);
    exec(&mut a, "COMMIT").await;
    writer.await.unwrap().expect("the writer gets the lock once the reader commits");
    wait_quiet(&mut a, Duration::from_secs(10)).await;
    assert_bank_invariant(&mut a).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deadlock_across_two_shards_is_broken_by_wound_wait_with_40001() {
    let cluster = TestCluster::start(3);
    let mut older = cluster.client().await;
    let mut younger = cluster.client().await;
    seed_bank(&mut older).await;
    // The older transaction locks account 1 (group 1), the younger account 100 (group 2).
    exec(&mut older, "BEGIN; UPDATE bank SET balance = balance - 5 WHERE id = 1").await;
    exec(&mut younger, "BEGIN; UPDATE bank SET balance = balance - 7 WHERE id = 100").await;
    // The older one now wants 100: it wounds the younger holder (which has
    // not prepared) and takes the lock at once.
    let started = std::time::Instant::now();
    exec(&mut older, "UPDATE bank SET balance = balance + 5 WHERE id = 100").await;
    assert!(started.elapsed() < Duration::from_secs(2), "the older transaction did not wait for the lock timeout");
    // The younger one wants 1 and waits in line for the older one...
    let waiting = {
        let mut younger = younger.clone();
        tokio::spawn(async move { younger.execute("UPDATE bank SET balance = balance + 7 WHERE id = 1").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "the younger transaction waits for the lock");
    exec(&mut older, "COMMIT").await;
    // ...and, wounded on group 2, fails with a retryable 40001 (at the
    // statement, or at its COMMIT).
    let err = match waiting.await.unwrap() {
        Err(e) => e,
        Ok(_) => fail(&mut younger, "COMMIT").await,
    };
    assert_eq!(err.sqlstate.as_deref(), Some("40001"), "{err}");
    assert!(err.message.contains("wound-wait"), "ended by wound-wait, not by the lock timeout: {err}");
    assert!(err.is_retryable());
    exec(&mut younger, "ROLLBACK").await;
    assert_eq!((balance(&mut older, 1).await, balance(&mut older, 100).await), (995, 1005));
    // The retried transaction then commits.
    younger.transaction_sql("UPDATE bank SET balance = balance - 7 WHERE id = 100; UPDATE bank SET balance = balance + 7 WHERE id = 1", 5).await.unwrap();
    assert_eq!((balance(&mut older, 1).await, balance(&mut older, 100).await), (1002, 998));
    wait_quiet(&mut older, Duration::from_secs(10)).await;
    assert_bank_invariant(&mut older).await;
}
