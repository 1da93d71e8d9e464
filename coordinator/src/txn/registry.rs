//! What the coordinator knows of its transactions while they run, for
//! SHOW TRANSACTIONS and for phase-two delivery.

use super::log::CommitRecord;
use crate::catalog::ShardGroupId;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// What the coordinator knows of a transaction (SHOW TRANSACTIONS).
#[derive(Debug, Clone)]
pub struct TxnInfo {
    pub id: String,
    pub state: &'static str,
    pub participants: BTreeMap<ShardGroupId, &'static str>,
    pub started: Instant,
}

pub type Registry = Arc<Mutex<HashMap<String, TxnInfo>>>;

/// Registry entry of a logged commit still being delivered.
pub fn delivering(record: &CommitRecord) -> TxnInfo {
    TxnInfo {
        id: record.txn_id.clone(),
        state: "committed, delivering",
        participants: record.participants.iter().map(|g| (*g, "prepared")).collect(),
        started: Instant::now(),
    }
}
