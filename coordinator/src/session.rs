//! Client sessions: what persists between the calls of one client, which is
//! the open transaction. Statements of a session run one at a time.

use crate::saga::plan::StatementPlan;
use crate::saga::{Protocol, SagaStatement};
use crate::txn::{Txn, TxnManager};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
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
        Session { txn: None, saga: None, protocol: Protocol::default(), last_used: Instant::now() }
    }
}

impl Session {
    pub fn touch(&mut self) {
        self.last_used = Instant::now();
    }
}

pub type SharedSession = Arc<tokio::sync::Mutex<Session>>;

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, SharedSession>>,
}

impl Sessions {
    /// The session with this id, created on first use.
    pub fn get(&self, id: &str) -> SharedSession {
        self.map.lock().unwrap().entry(id.to_string()).or_default().clone()
    }

    /// Rolls back transactions of idle sessions and drops long-idle ones.
    pub async fn reap(&self, txns: &TxnManager) {
        let sessions: Vec<(String, SharedSession)> = self.map.lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
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
