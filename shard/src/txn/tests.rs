//! The participant's protocol rules, on in-memory engines.

use super::*;
use tessera_model::data::keys::row_key;
use tessera_model::data::row::encode_row;
use tessera_model::data::Value;
use tessera_storage::crash::CrashEngine;
use tessera_storage::memory::MemoryEngine;

fn limits() -> TxnLimits {
    TxnLimits {
        lock_timeout: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(60),
        group_commit_window: Duration::ZERO,
        intent_wait: Duration::from_millis(200),
    }
}

fn ctx(id: &str, begin: bool) -> TxnContext {
    TxnContext { id: id.into(), timestamp: 1, begin, coordinator: "127.0.0.1:1".into() }
}

fn put(k: i64, v: i64) -> Mutation {
    Mutation { key: row_key(1, &Value::Int(k)), op: MutationOp::Put(encode_row(&[Value::Int(k), Value::Int(v)])) }
}

fn read(engine: &dyn Engine, k: i64) -> Option<Vec<u8>> {
    crate::mvcc::get_at(engine, &row_key(1, &Value::Int(k)), crate::mvcc::LATEST).unwrap()
}

#[tokio::test]
async fn commit_and_abort_are_idempotent_and_prepare_after_abort_is_refused() {
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::default());
    let p = Participant::open(engine.clone(), limits()).unwrap();
    p.write(&ctx("t1", true), vec![put(1, 10)]).await.unwrap();
    p.prepare(&ctx("t1", false), 10).await.unwrap();
    p.prepare(&ctx("t1", false), 10).await.unwrap();
    p.commit(&ctx("t1", false), false, Vec::new(), false, 20).await.unwrap();
    p.commit(&ctx("t1", false), false, Vec::new(), false, 20).await.unwrap();
    assert!(read(engine.as_ref(), 1).is_some());

    p.write(&ctx("t2", true), vec![put(2, 20)]).await.unwrap();
    p.abort("t2").await.unwrap();
    p.abort("t2").await.unwrap();
    assert!(p.prepare(&ctx("t2", false), 10).await.is_err(), "PREPARE after ABORT is refused");
    assert!(p.write(&ctx("t2", true), vec![put(2, 20)]).await.is_err(), "an aborted transaction does not begin again");
    assert!(read(engine.as_ref(), 2).is_none());
    assert_eq!(p.locks_held(), 0);
}

#[tokio::test]
async fn an_unknown_transaction_is_refused_unless_the_request_begins_it() {
    let p = Participant::open(Arc::new(MemoryEngine::default()), limits()).unwrap();
    let err = p.write(&ctx("lost", false), vec![put(1, 1)]).await.unwrap_err();
    assert!(err.to_string().contains("unknown"), "{err}");
    assert!(p.commit(&ctx("lost", false), true, vec![put(1, 1)], false, 1).await.is_err(), "a one-phase commit of a lost transaction is refused");
    p.write(&ctx("fresh", true), vec![put(1, 1)]).await.unwrap();
}

#[tokio::test]
async fn a_restarted_participant_holds_its_prepared_transactions_and_locks() {
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::default());
    {
        let p = Participant::open(engine.clone(), limits()).unwrap();
        p.write(&ctx("t", true), vec![put(1, 10), put(2, 20)]).await.unwrap();
        p.prepare(&ctx("t", false), 10).await.unwrap();
        p.write(&ctx("unprepared", true), vec![put(3, 30)]).await.unwrap();
    }
    let p = Participant::open(engine.clone(), limits()).unwrap();
    assert_eq!(p.counts(), (0, 1), "the prepared transaction survives, the active one does not");
    assert_eq!(p.locks_held(), 2);
    // Its locks still exclude others until the decision arrives.
    let other = TxnContext { timestamp: 0, ..ctx("older", true) };
    assert!(p.write(&other, vec![put(1, 99)]).await.is_err());
    p.commit(&ctx("t", false), false, Vec::new(), false, 20).await.unwrap();
    assert_eq!(p.locks_held(), 0);
    assert_eq!(read(engine.as_ref(), 2), Some(encode_row(&[Value::Int(2), Value::Int(20)])));
}

#[tokio::test]
async fn a_lazy_commit_lost_in_a_power_failure_leaves_the_prepared_record() {
    let engine = Arc::new(CrashEngine::default());
    let p = Participant::open(engine.clone(), limits()).unwrap();
    p.write(&ctx("t", true), vec![put(1, 10)]).await.unwrap();
    p.prepare(&ctx("t", false), 10).await.unwrap();
    p.commit(&ctx("t", false), false, Vec::new(), true, 20).await.unwrap();
    assert!(read(engine.as_ref(), 1).is_some(), "the lazy commit is visible at once");
    // Power fails before the next WAL sync: only synced writes remain.
    let durable: Arc<dyn Engine> = Arc::new(engine.crash());
    let restarted = Participant::open(durable.clone(), limits()).unwrap();
    assert!(read(durable.as_ref(), 1).is_none(), "the unsynced commit is gone");
    assert_eq!(restarted.counts(), (0, 1), "but the prepared record survives, with its locks");
    assert_eq!(restarted.in_doubt(Duration::ZERO), vec![("t".to_string(), "127.0.0.1:1".to_string())], "and it knows whom to ask");
    // The coordinator still holds the decision (it forgets only after a sync): COMMIT again.
    restarted.commit(&ctx("t", false), false, Vec::new(), false, 20).await.unwrap();
    assert!(read(durable.as_ref(), 1).is_some());

    // After a sync the lazy commit survives the same failure.
    let engine = Arc::new(CrashEngine::default());
    let p = Participant::open(engine.clone(), limits()).unwrap();
    p.write(&ctx("u", true), vec![put(5, 50)]).await.unwrap();
    p.prepare(&ctx("u", false), 10).await.unwrap();
    p.commit(&ctx("u", false), false, Vec::new(), true, 20).await.unwrap();
    p.sync_wal().await.unwrap();
    let durable: Arc<dyn Engine> = Arc::new(engine.crash());
    let restarted = Participant::open(durable.clone(), limits()).unwrap();
    assert!(read(durable.as_ref(), 5).is_some());
    assert_eq!(restarted.counts(), (0, 0));
}
