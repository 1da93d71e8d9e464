//! Crash tests: SIGKILL a process at the worst moment of two-phase commit,
//! restart it, and check that the bank invariant holds, no lock or prepared
//! transaction is left behind, and every transaction the client saw
//! committed is present.

use crate::cluster::*;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(30);
const FAILPOINT_WAIT: Duration = Duration::from_secs(20);

/// A committed transfer the client saw succeed before the crash.
async fn committed_before(client: &mut tessera::client::Client) {
    exec(client, &transfer_sql(5, 204, 50)).await;
}

async fn check_committed_before(client: &mut tessera::client::Client) {
    assert_eq!((balance(client, 5).await, balance(client, 204).await), (950, 1050));
}

#[tokio::test(flavor = "multi_thread")]
async fn coordinator_killed_after_prepare_before_the_decision_aborts() {
    let mut cluster = TestCluster::start_with_failpoints(3, Some("coordinator.after_prepare"), None);
    let mut c = cluster.client().await;
    seed_bank(&mut c).await;
    exec(&mut c, &transfer_sql(5, 4, 50)).await; // one group: one phase, no failpoint
    let mut victim = cluster.client().await;
    let pending = tokio::spawn(async move { tokio::time::timeout(STATEMENT_TIMEOUT, victim.execute(&transfer_sql(1, 101, 100))).await });
    cluster.coordinator.wait_for_log("failpoint coordinator.after_prepare reached", FAILPOINT_WAIT);
    cluster.coordinator.kill();
    assert!(pending.await.unwrap().expect("the call ends when the coordinator dies").is_err(), "the client never saw COMMIT");
    cluster.coordinator.env.clear();
    cluster.coordinator.restart();
    let mut c = cluster.client().await;
    // No COMMIT record: the participants learn "aborted" and release their locks.
    wait_quiet(&mut c, SETTLE).await;
    assert!(cluster.shards.iter().take(2).all(|s| s.log_contains("resolved in-doubt transaction: aborted")), "the participants asked and aborted");
    assert_eq!((balance(&mut c, 1).await, balance(&mut c, 101).await), (1000, 1000));
    assert_eq!((balance(&mut c, 5).await, balance(&mut c, 4).await), (950, 1050));
    assert_bank_invariant(&mut c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn coordinator_killed_after_logging_commit_finishes_the_commit_on_restart() {
    let mut cluster = TestCluster::start_with_failpoints(3, Some("coordinator.after_commit_logged"), None);
    let mut c = cluster.client().await;
    seed_bank(&mut c).await;
    exec(&mut c, &transfer_sql(5, 4, 50)).await;
    let mut victim = cluster.client().await;
    let pending = tokio::spawn(async move { tokio::time::timeout(STATEMENT_TIMEOUT, victim.execute(&transfer_sql(1, 201, 100))).await });
    cluster.coordinator.wait_for_log("failpoint coordinator.after_commit_logged reached", FAILPOINT_WAIT);
    cluster.coordinator.kill();
    assert!(pending.await.unwrap().expect("the call ends when the coordinator dies").is_err());
    cluster.coordinator.env.clear();
    cluster.coordinator.restart();
    let mut c = cluster.client().await;
    // The COMMIT record was durable: the restarted coordinator re-drives it.
    wait_quiet(&mut c, SETTLE).await;
    assert!(cluster.coordinator.log_contains("re-driving a logged COMMIT"), "the restarted coordinator re-drove the decision");
    assert_eq!((balance(&mut c, 1).await, balance(&mut c, 201).await), (900, 1100));
    assert_eq!((balance(&mut c, 5).await, balance(&mut c, 4).await), (950, 1050));
    assert_bank_invariant(&mut c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_retried_with_its_key_after_the_coordinator_died_applies_once() {
    let mut cluster = TestCluster::start_with_failpoints(3, Some("coordinator.after_commit_logged"), None);
    let mut c = cluster.client().await;
    seed_bank(&mut c).await;
    let transfer = transfer_sql(1, 201, 100);
    let mut victim = cluster.client().await;
    let mut old_session = victim.clone();
    let sql = transfer.clone();
    let pending = tokio::spawn(async move { tokio::time::timeout(STATEMENT_TIMEOUT, victim.execute_idempotent(&sql, &[], "transfer-1")).await });
    // The decision (and the key's record with it) is durable; the answer
    // never leaves.
    cluster.coordinator.wait_for_log("failpoint coordinator.after_commit_logged reached", FAILPOINT_WAIT);
    cluster.coordinator.kill();
    let lost = pending.await.unwrap().expect("the call ends when the coordinator dies").expect_err("no answer");
    assert!(lost.is_unknown_outcome(), "{lost:?}");
    cluster.coordinator.env.clear();
    cluster.coordinator.restart();
    // The old session died with the coordinator.
    let gone = fail(&mut old_session, "SELECT 1").await;
    assert_eq!(gone.sqlstate.as_deref(), Some("08003"), "{gone}");
    // The client retries with the same key, twice: the first outcome each
    // time, and the money moves once.
    let mut c = cluster.client().await;
    for _ in 0..2 {
        let results = c.execute_idempotent(&transfer, &[], "transfer-1").await.unwrap();
        assert_eq!(results.last().unwrap().tag, "COMMIT");
    }
    wait_quiet(&mut c, SETTLE).await;
    assert_eq!((balance(&mut c, 1).await, balance(&mut c, 201).await), (900, 1100));
    assert_bank_invariant(&mut c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn participant_killed_after_voting_yes_commits_after_restart() {
    let mut cluster = TestCluster::start_with_failpoints(3, None, Some((2, "shard.commit.before_apply")));
    let mut c = cluster.client().await;
    seed_bank(&mut c).await;
    committed_before(&mut c).await;
    // Group 2 votes yes, then stops before applying COMMIT. The decision is
    // durable, so the client is told COMMIT.
    exec(&mut c, &transfer_sql(2, 102, 300)).await;
    cluster.shards[1].wait_for_log("failpoint shard.commit.before_apply reached", FAILPOINT_WAIT);
    cluster.shards[1].kill();
    assert_eq!(balance(&mut c, 2).await, 700, "group 1 applied its part");
    cluster.shards[1].env.clear();
    cluster.shards[1].restart();
    // Group 2 reloads the prepared transaction with its locks and gets COMMIT.
    wait_quiet(&mut c, SETTLE).await;
    assert!(cluster.shards[1].log_contains("recovered prepared transaction"), "group 2 reloaded its prepared state");
    assert_eq!((balance(&mut c, 2).await, balance(&mut c, 102).await), (700, 1300));
    check_committed_before(&mut c).await;
    assert_bank_invariant(&mut c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn participant_unreachable_during_prepare_aborts_cleanly() {
    let mut cluster = TestCluster::start(3);
    let mut c = cluster.client().await;
    seed_bank(&mut c).await;
    committed_before(&mut c).await;
    exec(&mut c, "BEGIN; UPDATE bank SET balance = balance - 400 WHERE id = 3; UPDATE bank SET balance = balance + 400 WHERE id = 103").await;
    let address = cluster.shards[1].address.clone();
    cluster.shards[1].kill();
    let err = fail(&mut c, "COMMIT").await;
    assert!(err.message.contains("transaction aborted during PREPARE") && err.message.contains(&format!("shard group 2 ({address})")), "{err}");
    exec(&mut c, "ROLLBACK").await;
    cluster.shards[1].restart();
    wait_quiet(&mut c, SETTLE).await;
    assert_eq!((balance(&mut c, 3).await, balance(&mut c, 103).await), (1000, 1000));
    check_committed_before(&mut c).await;
    assert_bank_invariant(&mut c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_during_prepare_does_not_strand_the_transaction() {
    // Group 2 never answers PREPARE; the client gives up and disconnects.
    let cluster = TestCluster::start_with_failpoints(3, None, Some((2, "shard.prepare.before_vote")));
    let mut c = cluster.client().await;
    seed_bank(&mut c).await;
    let mut impatient = cluster.client().await;
    let gave_up = tokio::time::timeout(Duration::from_millis(500), impatient.execute(&transfer_sql(4, 104, 70))).await;
    assert!(gave_up.is_err(), "PREPARE on group 2 hangs, so the client times out");
    drop(impatient);
    cluster.shards[1].wait_for_log("failpoint shard.prepare.before_vote reached", FAILPOINT_WAIT);
    // The coordinator finishes the protocol anyway: PREPARE times out, the
    // transaction aborts everywhere, and group 1's prepared vote is released.
    wait_quiet(&mut c, SETTLE).await;
    assert_eq!((balance(&mut c, 4).await, balance(&mut c, 104).await), (1000, 1000));
    assert_bank_invariant(&mut c).await;
}
