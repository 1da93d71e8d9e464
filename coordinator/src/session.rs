//! Client sessions: what persists between the calls of one client (the open
//! transaction and the session's settings). Statements of a session run one
//! at a time.
//!
//! gRPC sessions are opened and closed explicitly and belong to the
//! principal that opened them; a PostgreSQL connection is a session for as
//! long as it lasts. Both count against `limits.max_sessions`.

use crate::error::{CoordError, Result};
use crate::plan::saga::StatementPlan;
use crate::read::ReplicaReads;
use crate::saga::SagaStatement;
use crate::txn::{Txn, TxnManager};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tessera_model::txn::Protocol;
use tokio::time::Instant;

/// A session with an open transaction idle this long is rolled back.
pub const IDLE_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// A session without a transaction idle this long is dropped.
pub const IDLE_SESSION_TIMEOUT: Duration = Duration::from_secs(600);

pub struct Session {
    /// The transaction opened by BEGIN, if any.
    pub txn: Option<Txn>,
    /// The saga opened by BEGIN under the saga protocol, if any.
    pub saga: Option<SagaDraft>,
    /// `SET transaction_protocol`: how multi-group transactions commit.
    pub protocol: Protocol,
    /// `SET statement_timeout`: how long one statement may run (commits
    /// excepted); `None`: no limit.
    pub statement_timeout: Option<Duration>,
    /// `SET replica_reads = on`: reads outside transactions may be served
    /// by replicas, as `replica` says.
    pub replica_reads: bool,
    /// `SET replica_max_staleness`, `SET replica_stale_policy`.
    pub replica: ReplicaReads,
    last_used: Instant,
}

/// A saga being written: its statements run at COMMIT.
#[derive(Default)]
pub struct SagaDraft {
    pub statements: Vec<SagaStatement>,
    pub plans: Vec<StatementPlan>,
    /// A statement failed: COMMIT rolls back (as in PostgreSQL).
    pub failed: bool,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            txn: None,
            saga: None,
            protocol: Protocol::default(),
            statement_timeout: None,
            replica_reads: false,
            replica: ReplicaReads::default(),
            last_used: Instant::now(),
        }
    }
}

impl Session {
    /// A session whose statements time out after `timeout` (none if zero).
    pub fn with_timeout(timeout: Duration) -> Session {
        Session { statement_timeout: (!timeout.is_zero()).then_some(timeout), ..Session::default() }
    }

    pub fn touch(&mut self) {
        self.last_used = Instant::now();
    }

    /// How this session's reads may use replicas (`None`: primaries only).
    pub fn replica_reads(&self) -> Option<ReplicaReads> {
        self.replica_reads.then_some(self.replica)
    }

    /// True while a transaction or a saga is open.
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some() || self.saga.is_some()
    }
}

pub type SharedSession = Arc<tokio::sync::Mutex<Session>>;

struct Entry {
    owner: String,
    session: SharedSession,
}

/// Every open session.
pub struct Sessions {
    map: Mutex<HashMap<String, Entry>>,
    /// PostgreSQL connections (sessions outside the map).
    connections: Arc<AtomicUsize>,
    max: usize,
    default_timeout: Duration,
    /// The last `reserved` places are for `operators` only (PostgreSQL's
    /// `superuser_reserved_connections`).
    reserved: usize,
    operators: std::collections::HashSet<String>,
}

/// A PostgreSQL connection's place in the session count, given back on drop.
pub struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Sessions {
    pub fn new(max: usize, default_timeout: Duration) -> Sessions {
        Sessions { map: Mutex::default(), connections: Arc::default(), max, default_timeout, reserved: 0, operators: Default::default() }
    }

    /// Keeps the last `reserved` places for the named operators.
    pub fn with_reserved(mut self, reserved: usize, operators: impl IntoIterator<Item = String>) -> Sessions {
        self.reserved = reserved.min(self.max.saturating_sub(1));
        self.operators = operators.into_iter().collect();
        self
    }

    /// Refuses the place `open + 1` to `who` if it is full or reserved.
    fn admit(&self, open: usize, who: &str) -> Result<()> {
        if open >= self.max {
            return Err(self.full(open));
        }
        if open >= self.max - self.reserved && !self.operators.contains(who) {
            return Err(CoordError::TooManySessions(format!(
                "remaining connection slots are reserved for operators: {open} sessions are open, limits.max_sessions is {} and limits.reserved_sessions {}",
                self.max, self.reserved
            )));
        }
        Ok(())
    }

    /// Sessions open now (gRPC sessions and PostgreSQL connections).
    pub fn count(&self) -> usize {
        self.map.lock().unwrap().len() + self.connections.load(Ordering::Relaxed)
    }

    fn full(&self, open: usize) -> CoordError {
        CoordError::TooManySessions(format!("too many sessions: {open} are open and limits.max_sessions is {}", self.max))
    }

    /// A new session for `owner`; its id.
    pub fn open(&self, owner: &str) -> Result<String> {
        let mut map = self.map.lock().unwrap();
        let open = map.len() + self.connections.load(Ordering::Relaxed);
        self.admit(open, owner)?;
        let id = uuid::Uuid::new_v4().to_string();
        let session = Arc::new(tokio::sync::Mutex::new(self.new_session()));
        map.insert(id.clone(), Entry { owner: owner.to_string(), session });
        Ok(id)
    }

    /// A session that lives outside the map (one call without a session id).
    pub fn new_session(&self) -> Session {
        Session::with_timeout(self.default_timeout)
    }

    /// A place for a PostgreSQL connection of `user`.
    pub fn connection(&self, user: &str) -> Result<ConnectionSlot> {
        let map = self.map.lock().unwrap();
        let open = map.len() + self.connections.fetch_add(1, Ordering::Relaxed);
        let slot = ConnectionSlot(self.connections.clone());
        self.admit(open, user)?;
        Ok(slot)
    }

    /// The session `id` of `owner`.
    pub fn get(&self, id: &str, owner: &str) -> Result<SharedSession> {
        match self.map.lock().unwrap().get(id) {
            Some(entry) if entry.owner == owner => Ok(entry.session.clone()),
            _ => Err(CoordError::SessionNotFound(format!(
                "session \"{id}\" does not exist: it was closed, expired after {} s idle, or belongs to someone else (open one with OpenSession)",
                IDLE_SESSION_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Closes a session, rolling back its open transaction.
    pub async fn close(&self, id: &str, owner: &str, txns: &TxnManager) -> Result<()> {
        let shared = self.get(id, owner)?;
        self.map.lock().unwrap().remove(id);
        let mut session = shared.lock().await;
        if let Some(txn) = session.txn.take() {
            txns.rollback(txn).await;
        }
        session.saga = None;
        Ok(())
    }

    /// Rolls back transactions of idle sessions and drops long-idle ones.
    pub async fn reap(&self, txns: &TxnManager) {
        let sessions: Vec<(String, SharedSession)> = self.map.lock().unwrap().iter().map(|(k, v)| (k.clone(), v.session.clone())).collect();
        let now = Instant::now();
        for (id, shared) in sessions {
            let Ok(mut session) = shared.try_lock() else { continue };
            let idle = now.duration_since(session.last_used);
            if session.txn.is_some() && idle >= IDLE_TRANSACTION_TIMEOUT {
                if let Some(txn) = session.txn.take() {
                    tracing::info!(session = %id, txn = %txn.id, "rolling back the transaction of an idle session");
                    txns.rollback(txn).await;
                }
            }
            if session.saga.is_some() && idle >= IDLE_TRANSACTION_TIMEOUT {
                tracing::info!(session = %id, "dropping the unfinished saga of an idle session (none of it ran)");
                session.saga = None;
            }
            if session.txn.is_none() && session.saga.is_none() && idle >= IDLE_SESSION_TIMEOUT {
                self.map.lock().unwrap().remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_and_connections_share_the_limit_and_belong_to_their_owner() {
        let sessions = Sessions::new(2, Duration::ZERO);
        let id = sessions.open("app").unwrap();
        assert!(sessions.get(&id, "app").is_ok());
        assert!(matches!(sessions.get(&id, "other"), Err(CoordError::SessionNotFound(_))));
        let slot = sessions.connection("app").unwrap();
        assert_eq!(sessions.count(), 2);
        assert!(matches!(sessions.open("app"), Err(CoordError::TooManySessions(_))));
        assert!(matches!(sessions.connection("app"), Err(CoordError::TooManySessions(_))));
        assert_eq!(sessions.count(), 2, "a refused connection gives its place back");
        drop(slot);
        assert!(sessions.open("app").is_ok());
    }

    #[test]
    fn reserved_places_admit_operators_only() {
        let sessions = Sessions::new(3, Duration::ZERO).with_reserved(1, ["ops".to_string()]);
        let _a = sessions.connection("app").unwrap();
        let _b = sessions.open("app").unwrap();
        let refused = sessions.connection("app").err().unwrap();
        assert!(refused.to_string().contains("reserved for operators"), "{refused}");
        let _ops = sessions.connection("ops").unwrap();
        assert!(matches!(sessions.open("ops"), Err(CoordError::TooManySessions(_))), "the limit holds for operators too");
    }
}
