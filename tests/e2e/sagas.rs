//! Sagas: cross-shard writes as local steps with compensations. Each test
//! runs real processes; the crash tests SIGKILL the coordinator in the
//! middle of a step or a compensation and check that the restarted one
//! finishes the saga from its log, with every step applied at most once.

use crate::cluster::*;
use std::time::Duration;
use tessera::client::{Client, Protocol};

const SETTLE: Duration = Duration::from_secs(30);
const FAILPOINT_WAIT: Duration = Duration::from_secs(20);

/// A saga transfer: debit `from`, then credit `to`.
fn saga_transfer(from: i64, to: i64, amount: i64) -> String {
    format!(
        "SET transaction_protocol = 'saga'; BEGIN; UPDATE bank SET balance = balance - {amount} WHERE id = {from}; \
         UPDATE bank SET balance = balance + {amount} WHERE id = {to}; COMMIT"
    )
}

/// SHOW SAGA rows: (step, action, state, attempts, detail).
async fn timeline(c: &mut Client, saga_id: &str) -> Vec<(String, String, String, String, String)> {
    rows(c, &format!("SHOW SAGA {saga_id}")).await.into_iter().map(|r| (r[0].clone(), r[2].clone(), r[3].clone(), r[4].clone(), r[7].clone())).collect()
}

/// Waits until no saga is running or compensating; returns them all.
async fn wait_sagas_settled(c: &mut Client) -> Vec<tessera_proto::v1::Saga> {
    let started = std::time::Instant::now();
    loop {
        if let Ok(sagas) = c.sagas().await {
            if sagas.iter().all(|s| !matches!(s.state.as_str(), "running" | "compensating")) {
                return sagas;
            }
            assert!(started.elapsed() < SETTLE, "sagas did not settle: {sagas:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn saga_transfer_commits_step_by_step_and_shows_its_timeline() {
    let cluster = TestCluster::start(3);
    let mut c = cluster.client().await;
    seed_bank(&mut c).await;
    assert_eq!(scalar(&mut c, "SHOW transaction_protocol").await, "2pc");

    // EXPLAIN shows the steps and their compensations before anything runs.
    exec(&mut c, "SET transaction_protocol = 'saga'").await;
    let plan = explain(&mut c, "UPDATE bank SET balance = balance + 5 WHERE id IN (1, 101)").await;
    assert!(plan.contains("protocol: saga"), "{plan}");
    assert!(plan.contains("step 1: UPDATE on shard group 1") && plan.contains("step 2: UPDATE on shard group 2"), "{plan}");
    assert!(plan.contains("compensation: take the change back out of balance"), "{plan}");

    // Inside BEGIN the writes are queued and run at COMMIT.
    let results = exec(&mut c, "BEGIN; UPDATE bank SET balance = balance - 100 WHERE id = 1; UPDATE bank SET balance = balance + 100 WHERE id = 101").await;
    assert_eq!(results[1].tag, "QUEUED UPDATE");
    assert_eq!(scalar(&mut c, "SHOW transaction_protocol").await, "saga");
    assert_eq!(exec(&mut c, "COMMIT").await[0].tag, "COMMIT");
    assert_eq!((balance(&mut c, 1).await, balance(&mut c, 101).await), (900, 1100));

    let sagas = c.sagas().await.unwrap();
    assert_eq!(sagas.len(), 1);
    assert_eq!(sagas[0].state, "committed");
    let steps = timeline(&mut c, &sagas[0].saga_id).await;
    assert_eq!(steps.len(), 2, "two steps and no compensation: {steps:?}");
    assert!(steps.iter().all(|s| s.1 == "step" && s.2 == "done"), "{steps:?}");

    // The gRPC field (through the client) picks the protocol per request.
    let mut app = cluster.client().await;
    app.set_protocol(Some(Protocol::Saga));
    exec(&mut app, "UPDATE bank SET balance = balance + 1 WHERE id IN (2, 102, 202)").await;
    app.saga("UPDATE bank SET balance = balance - 10 WHERE id = 3; UPDATE bank SET balance = balance + 10 WHERE id = 203").await.unwrap();
    assert_eq!((balance(&mut c, 2).await, balance(&mut c, 102).await, balance(&mut c, 202).await), (1001, 1001, 1001));
    assert_eq!((balance(&mut c, 3).await, balance(&mut c, 203).await), (990, 1010));
    let status = c.cluster_status().await.unwrap();
    assert_eq!((status.sagas_committed, status.sagas_rolled_back, status.compensations_run), (3, 0, 0));
    wait_quiet(&mut c, SETTLE).await;
}

/// A three-step saga (debit on group 1, credits on groups 2 and 3) whose
/// step `failing` names an account that does not exist.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_step_at_each_position_is_compensated_in_reverse() {
    let cluster = TestCluster::start(3);
    let mut c = cluster.client().await;
    seed_bank(&mut c).await;
    for failing in 1..=3 {
        let ids = [if failing == 1 { 50 } else { 1 }, if failing == 2 { 150 } else { 101 }, if failing == 3 { 250 } else { 201 }];
        let sql = format!(
            "SET transaction_protocol = 'saga'; BEGIN; UPDATE bank SET balance = balance - 60 WHERE id = {}; \
             UPDATE bank SET balance = balance + 30 WHERE id = {}; UPDATE bank SET balance = balance + 30 WHERE id = {}; COMMIT",
            ids[0], ids[1], ids[2]
        );
        let e = fail(&mut c, &sql).await;
        assert_eq!(e.sqlstate.as_deref(), Some("P0002"), "the missing row is the cause: {e}");
        assert!(e.message.contains(&format!("step {failing}")) && e.message.contains("rolled back"), "{e}");
        let id = e.saga_id.clone().expect("the error names the saga");
        let steps = timeline(&mut c, &id).await;
        let compensations: Vec<_> = steps.iter().filter(|s| s.1 == "compensation" && s.2 == "compensated").map(|s| s.0.clone()).collect();
        let expected: Vec<String> = (1..failing).rev().map(|n| n.to_string()).collect();
        assert_eq!(compensations, expected, "finished steps undone in reverse: {steps:?}");
        assert!(steps.iter().any(|s| s.0 == failing.to_string() && s.1 == "step" && s.2 == "failed"), "{steps:?}");
        assert_eq!((balance(&mut c, 1).await, balance(&mut c, 101).await, balance(&mut c, 201).await), (1000, 1000, 1000), "step {failing} failed");
        assert_bank_invariant(&mut c).await;
    }
    // A CHECK violation in the last step keeps its SQLSTATE and undoes the rest.
    let e = fail(
        &mut c,
        "SET transaction_protocol = 'saga'; BEGIN; UPDATE bank SET balance = balance + 5000 WHERE id = 1; \
         UPDATE bank SET balance = balance - 5000 WHERE id = 101; COMMIT",
    )
    .await;
    assert_eq!(e.sqlstate.as_deref(), Some("23514"), "{e}");
    assert_eq!(balance(&mut c, 1).await, 1000);
    let status = c.cluster_status().await.unwrap();
    assert_eq!((status.sagas_committed, status.sagas_rolled_back, status.compensations_run), (0, 4, 1 + 2 + 1));
    wait_quiet(&mut c, SETTLE).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn inserts_deletes_and_assignments_have_their_compensations() {
    let cluster = TestCluster::start(3);
    let mut c = cluster.client().await;
    seed_accounts(&mut c, 3).await;
    let before = rows(&mut c, "SELECT * FROM accounts ORDER BY id").await;
    exec(&mut c, "SET transaction_protocol = 'saga'").await;
    // Not derivable: refused before anything runs.
    let e = fail(&mut c, "UPDATE accounts SET balance = balance * 2 WHERE id IN (1, 101)").await;
    assert_eq!(e.sqlstate.as_deref(), Some("0A000"), "{e}");
    assert!(e.message.contains("COMPENSATE WITH") && e.message.contains("balance"), "{e}");
    // INSERT -> DELETE, DELETE -> re-insert, SET constant -> restore,
    // and an explicit compensation; then a step that fails.
    let e = fail(
        &mut c,
        "BEGIN;
         INSERT INTO accounts (id, owner, balance) VALUES (10, 'new', 5);
         DELETE FROM accounts WHERE id = 101;
         UPDATE accounts SET owner = 'renamed', vip = true WHERE id = 201;
         UPDATE accounts SET balance = balance * 2 WHERE id = 2 COMPENSATE WITH UPDATE accounts SET balance = balance / 2 WHERE id = 2;
         UPDATE accounts SET rate = rate + NULL WHERE id = 102;
         UPDATE accounts SET balance = balance + 1 WHERE id = 299;
         COMMIT",
    )
    .await;
    let id = e.saga_id.clone().expect("saga id");
    let steps = timeline(&mut c, &id).await;
    let undone: Vec<_> = steps.iter().filter(|s| s.1 == "compensation").map(|s| (s.0.as_str(), s.2.as_str())).collect();
    // The failed step 6 gets an empty compensation (its marker fences out a late commit).
    assert_eq!(
        undone,
        vec![("6", "nothing_to_undo"), ("5", "compensated"), ("4", "compensated"), ("3", "compensated"), ("2", "compensated"), ("1", "compensated")],
        "{steps:?}"
    );
    // (rate + NULL made rate NULL: no delta to take back, so it is restored.)
    assert_eq!(rows(&mut c, "SELECT * FROM accounts ORDER BY id").await, before, "every change was undone");
    // An explicit compensation may not reach groups its statement does not.
    let e =
        fail(&mut c, "UPDATE accounts SET balance = balance * 2 WHERE id = 1 COMPENSATE WITH UPDATE accounts SET balance = balance / 2 WHERE id = 101").await;
    assert!(e.message.contains("shard group 2"), "{e}");
}

/// A SET-to-constant step is undone by restoring the old value only if no
/// one changed the row since; otherwise the compensation fails visibly
/// (and the saga parks) rather than overwrite someone else's write.
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_over_a_later_change_fails_visibly() {
    // The first compensation attempt fails (injected); the long backoff
    // leaves time for another client to change the row.
    let toml = "saga_compensation_attempts = 2\nsaga_backoff_base_ms = 2000\nsaga_backoff_max_ms = 2000\n";
    let cluster = TestCluster::start_configured(3, Some("saga.compensation.error=error*1"), None, Some(toml));
    let mut c = cluster.client().await;
    seed_accounts(&mut c, 3).await;
    let mut victim = cluster.client().await;
    victim.set_protocol(Some(Protocol::Saga));
    let pending = tokio::spawn(async move { victim.execute("UPDATE accounts SET owner = 'saga' WHERE id IN (1, 150)").await });
    cluster.coordinator.wait_for_log("failpoint saga.compensation.error failed an operation", FAILPOINT_WAIT);
    exec(&mut c, "UPDATE accounts SET owner = 'someone' WHERE id = 1").await;
    let e = pending.await.unwrap().unwrap_err();
    assert_eq!(e.sqlstate.as_deref(), Some("55000"), "{e}");
    let steps = timeline(&mut c, e.saga_id.as_deref().unwrap()).await;
    let compensation = steps.iter().find(|s| s.0 == "1" && s.1 == "compensation").unwrap();
    assert_eq!(compensation.2, "failing", "{steps:?}");
    assert!(compensation.4.contains("changed it since"), "{steps:?}");
    assert_eq!(scalar(&mut c, "SELECT owner FROM accounts WHERE id = 1").await, "someone", "the later write is kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn coordinator_killed_before_a_step_commits_resumes_forward() {
    let mut cluster = TestCluster::start_with_failpoints(3, Some("saga.step.before_commit"), None);
    let mut c = cluster.client().await;
    seed_bank(&mut c).await;
    let mut victim = cluster.client().await;
    let pending = tokio::spawn(async move { tokio::time::timeout(STATEMENT_TIMEOUT, victim.execute(&saga_transfer(1, 101, 100))).await });
    cluster.coordinator.wait_for_log("failpoint saga.step.before_commit reached", FAILPOINT_WAIT);
    cluster.coordinator.kill();
    assert!(pending.await.unwrap().expect("the call ends when the coordinator dies").is_err());
    cluster.coordinator.env.clear();
    cluster.coordinator.restart();
    let mut c = cluster.client().await;
    let sagas = wait_sagas_settled(&mut c).await;
    assert!(cluster.coordinator.log_contains("resuming an unfinished saga from the log"));
    assert_eq!(sagas.len(), 1);
    assert_eq!(sagas[0].state, "committed", "{sagas:?}");
    assert_eq!((balance(&mut c, 1).await, balance(&mut c, 101).await), (900, 1100));
    assert_bank_invariant(&mut c).await;
    wait_quiet(&mut c, SETTLE).await;
}

/// The step committed on the shard but the coordinator died before logging
/// it: the restarted coordinator delivers the step again, and the marker on
/// the shard makes the second delivery a no-op.
#[tokio::test(flavor = "multi_thread")]
async fn a_step_delivered_twice_is_applied_once() {
    let mut cluster = TestCluster::start_with_failpoints(3, Some("saga.step.after_commit"), None);
    let mut c = cluster.client().await;
    seed_bank(&mut c).await;
    let mut victim = cluster.client().await;
    let pending = tokio::spawn(async move { tokio::time::timeout(STATEMENT_TIMEOUT, victim.execute(&saga_transfer(2, 202, 100))).await });
    cluster.coordinator.wait_for_log("failpoint saga.step.after_commit reached", FAILPOINT_WAIT);
    assert_eq!(balance(&mut c, 2).await, 900, "step 1 committed on its shard");
    cluster.coordinator.kill();
    assert!(pending.await.unwrap().expect("the call ends when the coordinator dies").is_err());
    cluster.coordinator.env.clear();
    cluster.coordinator.restart();
    let mut c = cluster.client().await;
    let sagas = wait_sagas_settled(&mut c).await;
    assert_eq!(sagas[0].state, "committed", "{sagas:?}");
    assert_eq!(sagas[0].steps[0].attempts, 2, "step 1 was delivered twice");
    assert_eq!((balance(&mut c, 2).await, balance(&mut c, 202).await), (900, 1100), "applied once");
    assert_bank_invariant(&mut c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn coordinator_killed_during_a_compensation_finishes_rolling_back() {
    let mut cluster = TestCluster::start_with_failpoints(3, Some("saga.compensation.before_commit"), None);
    let mut c = cluster.client().await;
    seed_bank(&mut c).await;
    let mut victim = cluster.client().await;
    // Credit to a missing account: step 2 fails, step 1's debit is undone.
    let pending = tokio::spawn(async move { tokio::time::timeout(STATEMENT_TIMEOUT, victim.execute(&saga_transfer(3, 299, 100))).await });
    cluster.coordinator.wait_for_log("failpoint saga.compensation.before_commit reached", FAILPOINT_WAIT);
    assert_eq!(balance(&mut c, 3).await, 900, "the debit committed and is not undone yet");
    cluster.coordinator.kill();
    assert!(pending.await.unwrap().expect("the call ends when the coordinator dies").is_err());
    cluster.coordinator.env.clear();
    cluster.coordinator.restart();
    let mut c = cluster.client().await;
    let sagas = wait_sagas_settled(&mut c).await;
    assert_eq!(sagas[0].state, "rolled_back", "{sagas:?}");
    assert_eq!(balance(&mut c, 3).await, 1000, "compensated exactly once");
    assert_bank_invariant(&mut c).await;
    wait_quiet(&mut c, SETTLE).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compensation_that_fails_twice_is_retried_until_it_succeeds() {
    let cluster = TestCluster::start_configured(3, Some("saga.compensation.error=error*2"), None, Some("saga_backoff_base_ms = 10\n"));
    let mut c = cluster.client().await;
    seed_bank(&mut c).await;
    let e = fail(&mut c, &saga_transfer(4, 150, 100)).await;
    assert!(e.message.contains("rolled back"), "{e}");
    let steps = timeline(&mut c, e.saga_id.as_deref().unwrap()).await;
    let compensation = steps.iter().find(|s| s.0 == "1" && s.1 == "compensation").expect("step 1 was compensated");
    assert_eq!((compensation.2.as_str(), compensation.3.as_str()), ("compensated", "3"), "{steps:?}");
    assert_eq!(balance(&mut c, 4).await, 1000);
    assert_bank_invariant(&mut c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compensation_that_keeps_failing_parks_the_saga_until_an_operator_resumes_it() {
    let toml = "saga_compensation_attempts = 3\nsaga_backoff_base_ms = 10\n";
    let cluster = TestCluster::start_configured(3, Some("saga.compensation.error=error*3"), None, Some(toml));
    let mut c = cluster.client().await;
    seed_bank(&mut c).await;
    let e = fail(&mut c, &saga_transfer(5, 150, 100)).await;
    assert_eq!(e.sqlstate.as_deref(), Some("55000"), "{e}");
    assert!(e.message.contains("needs an operator") && e.message.contains("RESUME SAGA"), "{e}");
    let id = e.saga_id.clone().unwrap();
    let listed = rows(&mut c, "SHOW SAGAS").await;
    assert!(listed.iter().any(|r| r[0] == id && r[1] == "needs_operator"), "{listed:?}");
    assert_eq!(balance(&mut c, 5).await, 900, "the debit is not undone yet");
    assert_eq!(c.cluster_status().await.unwrap().sagas_parked, 1);

    // The cause is gone (the failpoint's three failures are used up).
    let resumed = c.resume_saga(&id).await.expect("resume");
    assert_eq!(resumed.state, "rolled_back", "{resumed:?}");
    assert_eq!(balance(&mut c, 5).await, 1000);
    let again = c.resume_saga(&id).await.unwrap_err();
    assert!(again.message.contains("nothing to resume"), "{again}");
    assert_bank_invariant(&mut c).await;
    wait_quiet(&mut c, SETTLE).await;
}
