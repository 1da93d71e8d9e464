//! Idempotency keys: a client that retries a request after a timeout or a
//! lost connection gets the first request's outcome instead of a second
//! transfer.
//!
//! A request with a key must end with its own commit (one statement outside
//! a transaction, `BEGIN ... COMMIT`, or `COMMIT` of the session's
//! transaction). Its outcome is written to the coordinator's journal under
//! `idem/<key>`:
//!
//! - a two-phase or one-group commit writes it in the same fsynced batch as
//!   the COMMIT decision (a keyed commit always logs a decision, so a
//!   single-group transaction pays a PREPARE for it): either both are
//!   durable or neither is, and with neither the transaction aborts
//!   (presumed abort), so a retry may safely run it again;
//! - a saga carries the key in its log record and writes the outcome with
//!   its final state, committed or rolled back; a retry while it is still
//!   running (or resuming after a restart) waits for it;
//! - a request that committed nothing (a read) stores its response after it
//!   ran.
//!
//! A request that failed before its commit changed nothing and is not
//! stored: a retry runs it again. The key is bound to the request's
//! fingerprint (SQL, parameters, protocol): the same key with another
//! request is refused. Outcomes are kept for `idempotency_ttl_s`.

use crate::error::{CoordError, Result};
use crate::result::QueryResult;
use crate::txn::Journal;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tessera_model::clock::now_micros;
use tessera_model::data::Value;
use tessera_model::sqlstate;
use tessera_model::txn::Protocol;

const PREFIX: &str = "idem/";

/// Longest key accepted.
pub const MAX_KEY_BYTES: usize = 256;

/// Largest response a keyed request may return: it is stored.
pub const MAX_STORED_RESPONSE: usize = 1024 * 1024;

/// A request's key and what it was used for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyKey {
    /// Whose key it is (the token's name): keys of different clients never meet.
    #[serde(default)]
    pub owner: String,
    pub key: String,
    /// Hash of the SQL, the parameters and the protocol.
    pub fingerprint: String,
}

impl IdempotencyKey {
    /// Refuses a key first used for a different request.
    pub fn check_fingerprint(&self, stored: &str) -> Result<()> {
        if stored != self.fingerprint {
            return Err(CoordError::invalid_value(
                format!("idempotency key \"{}\" was already used for a different request (other SQL, parameters or protocol)", self.key),
                sqlstate::INVALID_PARAMETER_VALUE,
            ));
        }
        Ok(())
    }

    pub fn new(owner: &str, key: &str, sql: &str, params: &[Value], protocol: Option<Protocol>) -> Result<IdempotencyKey> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES || key.chars().any(char::is_control) {
            return Err(CoordError::invalid_value(
                format!("an idempotency key must be 1 to {MAX_KEY_BYTES} bytes without control characters"),
                sqlstate::INVALID_PARAMETER_VALUE,
            ));
        }
        let mut text = sql.to_string();
        text.push('\0');
        text.push_str(&serde_json::to_string(params).expect("values serialize"));
        text.push('\0');
        text.push_str(protocol.map(Protocol::name).unwrap_or("session"));
        let fingerprint = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(text.as_bytes()));
        Ok(IdempotencyKey { owner: owner.to_string(), key: key.to_string(), fingerprint })
    }

    /// The owner and the key, as one string (the journal key's suffix).
    fn scoped(&self) -> String {
        format!("{}\u{0}{}", self.owner, self.key)
    }

    fn journal_key(&self) -> String {
        format!("{PREFIX}{}", self.scoped())
    }
}

/// What a keyed request ended with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Results(Vec<QueryResult>),
    /// A saga that rolled back (its steps ran and were compensated).
    SagaRolledBack {
        saga_id: String,
        sqlstate: String,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredOutcome {
    pub fingerprint: String,
    pub created_us: u64,
    pub outcome: Outcome,
}

impl StoredOutcome {
    /// The response the first request got.
    pub fn into_response(self) -> Result<Vec<QueryResult>> {
        match self.outcome {
            Outcome::Results(results) => Ok(results),
            Outcome::SagaRolledBack { saga_id, sqlstate, message } => {
                Err(CoordError::Saga { saga_id, message, parked: false, cause: tessera_model::sqlstate::known(&sqlstate) })
            }
        }
    }
}

/// The journal entry recording `outcome` for `key`.
pub fn record(key: &IdempotencyKey, outcome: Outcome) -> (String, Vec<u8>) {
    let stored = StoredOutcome { fingerprint: key.fingerprint.clone(), created_us: now_micros(), outcome };
    (key.journal_key(), serde_json::to_vec(&stored).expect("outcomes serialize"))
}

/// What a keyed saga needs to write its outcome when it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaIdempotency {
    pub key: IdempotencyKey,
    /// Results of the request's statements before the one that ran the saga.
    pub prior: Vec<QueryResult>,
    /// The last statement's tag: `COMMIT`, or the verb of an autocommit
    /// write (`UPDATE`, `INSERT`, `DELETE`) whose row count the saga gives.
    pub last: String,
}

impl SagaIdempotency {
    /// The response of the request once the saga committed with `rows`.
    pub fn committed_response(&self, rows: u64) -> Vec<QueryResult> {
        let last = match self.last.as_str() {
            "COMMIT" => QueryResult::command("COMMIT"),
            "INSERT" => QueryResult::modified(format!("INSERT 0 {rows}"), rows),
            verb => QueryResult::modified(format!("{verb} {rows}"), rows),
        };
        let mut results = self.prior.clone();
        results.push(last);
        results
    }
}

/// The store of outcomes and the per-key locks of requests in flight.
pub struct Idempotency {
    journal: Arc<Journal>,
    ttl: Duration,
    /// One lock per key in flight: a second request with the key waits for
    /// the first.
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl Idempotency {
    pub fn new(journal: Arc<Journal>, ttl: Duration) -> Idempotency {
        Idempotency { journal, ttl, locks: Mutex::default() }
    }

    /// Waits until no other request with this key runs here.
    pub async fn lock(&self, key: &IdempotencyKey) -> tokio::sync::OwnedMutexGuard<()> {
        self.lock_scoped(&key.scoped()).await
    }

    async fn lock_scoped(&self, scoped: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap();
            locks.retain(|_, weak| weak.strong_count() > 0);
            match locks.get(scoped).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(scoped.to_string(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }

    /// The stored outcome of `key`, if it has one that has not expired. The
    /// same key with another request is refused.
    pub fn lookup(&self, key: &IdempotencyKey) -> Result<Option<StoredOutcome>> {
        let Some(bytes) = self.journal.get(&key.journal_key()).map_err(|e| e.context("cannot read the idempotency record"))? else { return Ok(None) };
        let stored: StoredOutcome =
            serde_json::from_slice(&bytes).map_err(|e| CoordError::Internal(format!("corrupt idempotency record \"{}\": {e}", key.key)))?;
        if self.expired(&stored) {
            return Ok(None);
        }
        key.check_fingerprint(&stored.fingerprint)?;
        Ok(Some(stored))
    }

    /// Durably stores the outcome of a request that committed nothing.
    pub async fn store(&self, key: &IdempotencyKey, outcome: Outcome) -> Result<()> {
        let (k, v) = record(key, outcome);
        self.journal.put_many(vec![(k, v)]).await.map_err(|e| e.context("cannot store the idempotency record"))
    }

    fn expired(&self, stored: &StoredOutcome) -> bool {
        now_micros().saturating_sub(stored.created_us) > self.ttl.as_micros() as u64
    }

    fn expired_bytes(&self, bytes: &[u8]) -> bool {
        serde_json::from_slice::<StoredOutcome>(bytes).map(|s| self.expired(&s)).unwrap_or(true)
    }

    /// Deletes expired outcomes; returns how many. Each is re-read under
    /// its key's lock first, so a request that just stored a new outcome
    /// under the key keeps it.
    pub async fn collect_garbage(&self) -> usize {
        let journal = self.journal.clone();
        let Ok(Ok(entries)) = tokio::task::spawn_blocking(move || journal.scan_prefix(PREFIX)).await else { return 0 };
        let mut removed = 0;
        for (k, v) in entries {
            if !self.expired_bytes(&v) {
                continue;
            }
            let _one_at_a_time = self.lock_scoped(&k[PREFIX.len()..]).await;
            if self.journal.get(&k).ok().flatten().is_some_and(|v| self.expired_bytes(&v)) {
                self.journal.delete(k);
                removed += 1;
            }
        }
        removed
    }

    /// Collects garbage every minute until the coordinator stops.
    pub fn spawn_gc(self: &Arc<Self>, background: &crate::background::Background) {
        let this = self.clone();
        background.spawn_until_stopped(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let removed = this.collect_garbage().await;
                if removed > 0 {
                    tracing::info!(removed, "expired idempotency records deleted");
                }
            }
        });
    }
}

/// Checks that a keyed request ends with its own commit. `open` says
/// whether the session has a transaction open before the request.
pub fn check_shape(statements: &[sqlparser::ast::Statement], open: bool) -> Result<()> {
    use sqlparser::ast::Statement as S;
    let control = |s: &S| matches!(s, S::StartTransaction { .. } | S::Commit { .. } | S::Rollback { .. });
    // DDL takes effect outside the commit that records the outcome.
    if statements.iter().any(|s| matches!(s, S::CreateTable(_) | S::Drop { .. } | S::Set(_))) {
        return Err(CoordError::Invalid("CREATE, DROP and SET take no idempotency key (their effect is not recorded with a commit)".into()));
    }
    let ok = match statements {
        [] => false,
        [single] if !open => !control(single),
        [first, middle @ .., S::Commit { .. }] if !open => matches!(first, S::StartTransaction { .. }) && !middle.iter().any(control),
        [before @ .., S::Commit { .. }] => open && !before.iter().any(control),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(CoordError::Invalid(
            "a request with an idempotency key must end with its own commit: one statement outside a transaction, \
             BEGIN; ...; COMMIT, or COMMIT of the session's open transaction"
                .into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(sql: &str, open: bool) -> bool {
        check_shape(&crate::sql::parse(sql).unwrap(), open).is_ok()
    }

    #[test]
    fn keyed_requests_must_end_with_their_commit() {
        assert!(shape("UPDATE t SET a = 1 WHERE id = 1", false));
        assert!(shape("BEGIN; UPDATE t SET a = 1 WHERE id = 1; UPDATE t SET a = 2 WHERE id = 2; COMMIT", false));
        assert!(shape("COMMIT", true));
        assert!(shape("UPDATE t SET a = 1 WHERE id = 1; COMMIT", true));
        assert!(!shape("UPDATE t SET a = 1 WHERE id = 1", true), "a statement in an open transaction commits nothing");
        assert!(!shape("BEGIN; UPDATE t SET a = 1 WHERE id = 1", false));
        assert!(!shape("BEGIN; COMMIT; UPDATE t SET a = 1 WHERE id = 1", false));
        assert!(!shape("UPDATE t SET a = 1 WHERE id = 1; UPDATE t SET a = 1 WHERE id = 2", false));
        assert!(!shape("BEGIN; ROLLBACK; BEGIN; COMMIT", false));
        assert!(!shape("COMMIT", false), "nothing to commit");
        assert!(!shape("DROP TABLE t", false), "DDL is not recorded with a commit");
    }

    #[test]
    fn fingerprints_tell_requests_apart() {
        let a = IdempotencyKey::new("app", "k", "UPDATE t SET a = $1", &[Value::Int(1)], None).unwrap();
        let b = IdempotencyKey::new("app", "k", "UPDATE t SET a = $1", &[Value::Int(2)], None).unwrap();
        let c = IdempotencyKey::new("app", "k", "UPDATE t SET a = $1", &[Value::Int(1)], Some(Protocol::Saga)).unwrap();
        assert_ne!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
        assert_eq!(a, IdempotencyKey::new("app", "k", "UPDATE t SET a = $1", &[Value::Int(1)], None).unwrap());
        let other_owner = IdempotencyKey::new("ops", "k", "UPDATE t SET a = $1", &[Value::Int(1)], None).unwrap();
        assert_ne!(a.journal_key(), other_owner.journal_key(), "keys are scoped to their owner");
        assert!(IdempotencyKey::new("app", "", "x", &[], None).is_err());
        assert!(IdempotencyKey::new("app", &"k".repeat(300), "x", &[], None).is_err());
    }
}
