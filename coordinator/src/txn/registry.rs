//! What the coordinator knows of its transactions while they run, for
//! SHOW TRANSACTIONS and for phase-two delivery.

use super::log::CommitRecord;
use crate::catalog::ShardGroupId;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// Where a transaction stands, as SHOW TRANSACTIONS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    /// Running statements.
    Active,
    /// Phase one: PREPARE sent to the groups it wrote to.
    Preparing,
    /// Every writer prepared; the decision is being logged.
    Committing,
    /// The COMMIT decision is logged; phase two is being delivered.
    Delivering,
    /// Every participant committed; waiting for their WAL syncs.
    Syncing,
}

impl TxnState {
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Active => "active",
            TxnState::Preparing => "preparing",
            TxnState::Committing => "committing",
            TxnState::Delivering => "committed, delivering",
            TxnState::Syncing => "committed, syncing",
        }
    }

    /// Past the point where it can still abort: committing or committed.
    pub fn is_committing(self) -> bool {
        matches!(self, TxnState::Committing | TxnState::Delivering | TxnState::Syncing)
    }
}

/// Where one participant of a transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Active,
    Preparing,
    Prepared,
    Committed,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Active => "active",
            Phase::Preparing => "preparing",
            Phase::Prepared => "prepared",
            Phase::Committed => "committed",
        }
    }
}

/// What the coordinator knows of a transaction (SHOW TRANSACTIONS).
#[derive(Debug, Clone)]
pub struct TxnInfo {
    pub id: String,
    pub state: TxnState,
    pub participants: BTreeMap<ShardGroupId, Phase>,
    pub started: Instant,
}

pub type Registry = Arc<Mutex<HashMap<String, TxnInfo>>>;

/// Registry entry of a logged commit still being delivered.
pub fn delivering(record: &CommitRecord) -> TxnInfo {
    TxnInfo {
        id: record.txn_id.clone(),
        state: TxnState::Delivering,
        participants: record.participants.iter().map(|g| (*g, Phase::Prepared)).collect(),
        started: Instant::now(),
    }
}
