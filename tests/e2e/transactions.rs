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

    // Reads inside a transaction lock their rows: a younger writer fails at
    // once with a serialization failure instead of changing what was read.
    exec(&mut a, "BEGIN; SELECT balance FROM bank WHERE id = 4").await;
    let err = fail(&mut b, "UPDATE bank SET balance = 0 WHERE id = 4").await;
    assert_eq!(err.sqlstate.as_deref(), Some("40001"), "{err}");
    exec(&mut a, "COMMIT").await;
    exec(&mut b, "UPDATE bank SET balance = balance + 0 WHERE id = 4").await;
    wait_quiet(&mut a, Duration::from_secs(10)).await;
    assert_bank_invariant(&mut a).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deadlock_across_two_shards_ends_at_once_with_40001() {
    let cluster = TestCluster::start(3);
    let mut older = cluster.client().await;
    let mut younger = cluster.client().await;
    seed_bank(&mut older).await;
    // The older transaction locks account 1 (group 1), the younger account 100 (group 2).
    exec(&mut older, "BEGIN; UPDATE bank SET balance = balance - 5 WHERE id = 1").await;
    exec(&mut younger, "BEGIN; UPDATE bank SET balance = balance - 7 WHERE id = 100").await;
    // The older one now wants 100 and waits for the younger one...
    let waiting = {
        let mut older = older.clone();
        tokio::spawn(async move { older.execute("UPDATE bank SET balance = balance + 5 WHERE id = 100").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "the older transaction waits for the lock");
    // ...and the younger one wants 1: the cycle is broken by wait-die.
    let err = fail(&mut younger, "UPDATE bank SET balance = balance + 7 WHERE id = 1").await;
    assert_eq!(err.sqlstate.as_deref(), Some("40001"), "{err}");
    assert!(err.message.contains("wait-die"), "ended by wait-die, not by the lock timeout: {err}");
    assert!(err.is_retryable());
    exec(&mut younger, "ROLLBACK").await;
    waiting.await.unwrap().expect("the older transaction proceeds once the younger one is gone");
    exec(&mut older, "COMMIT").await;
    assert_eq!((balance(&mut older, 1).await, balance(&mut older, 100).await), (995, 1005));
    // The retried transaction then commits.
    younger.transaction_sql("UPDATE bank SET balance = balance - 7 WHERE id = 100; UPDATE bank SET balance = balance + 7 WHERE id = 1", 5).await.unwrap();
    assert_eq!((balance(&mut older, 1).await, balance(&mut older, 100).await), (1002, 998));
    wait_quiet(&mut older, Duration::from_secs(10)).await;
    assert_bank_invariant(&mut older).await;
}
