//! The participant's transactions and the timestamp state that snapshot
//! reads and commits share, under one lock.
//!
//! The rule that makes a snapshot stable: a read at `T` first raises the
//! shard's floor to `T` (every commit from then on is above `T`), then waits
//! for every transaction that could still commit below `T` and writes what
//! the read reads: a prepared one whose prepare timestamp is below `T`, and
//! a committing one (timestamp chosen, batch not yet applied) below `T`.
//! Both steps happen under this table's lock, the same lock a PREPARE holds
//! while it picks its timestamp and a COMMIT holds while it picks its own and
//! moves the transaction to `applying`, so no commit slips between them.
//! Active transactions need no wait: they will prepare or commit above the
//! floor.

use super::state::TxnState;
use crate::error::ShardError;
use std::collections::{BTreeMap, HashMap};
use std::ops::{Deref, DerefMut};

/// The highest timestamp a read may ask for: the floor must stay below
/// `u64::MAX` so that a commit above it exists.
pub const MAX_READ_TS: u64 = 1 << 62;

/// The floor a restarted node starts with (and a promoted replica raises
/// to): its wall clock plus a second. Reads served before a crash (or by
/// the old primary) were at oracle timestamps, which follow the
/// coordinator's clock; clocks are assumed to differ by less than that
/// second (leases already assume a bound on clock skew). A new, empty node
/// starts at zero.
pub fn restart_floor() -> u64 {
    tessera_model::clock::now_micros() + 1_000_000
}

/// Refuses a read timestamp that is missing or out of range.
pub fn check_read_ts(read_ts: u64) -> Result<(), ShardError> {
    if read_ts == 0 || read_ts > MAX_READ_TS {
        return Err(ShardError::InvalidRequest(format!("a read outside a transaction needs a read timestamp in 1..={MAX_READ_TS}, not {read_ts}")));
    }
    Ok(())
}

/// Refuses a prepare or commit timestamp out of range (a client's lower
/// bound may be 0: none).
pub fn check_ts(ts: u64, what: &str) -> Result<(), ShardError> {
    if ts > MAX_READ_TS {
        return Err(ShardError::InvalidRequest(format!("the {what} timestamp {ts} is above the largest timestamp, {MAX_READ_TS}")));
    }
    Ok(())
}

/// What a read reads.
pub enum Reads<'a> {
    Keys(&'a [Vec<u8>]),
    /// `[start, end)`.
    Range(&'a [u8], &'a [u8]),
}

impl Reads<'_> {
    fn touches<V>(&self, writes: &BTreeMap<Vec<u8>, V>) -> bool {
        match self {
            Reads::Keys(keys) => keys.iter().any(|k| writes.contains_key(k)),
            Reads::Range(start, end) => start < end && writes.range(start.to_vec()..end.to_vec()).next().is_some(),
        }
    }
}

/// A committed transaction whose batch is being written.
struct Applying {
    commit_ts: u64,
    state: TxnState,
}

pub struct TxnTable {
    txns: HashMap<String, TxnState>,
    applying: HashMap<String, Applying>,
    /// Every commit from now on is above this: the highest timestamp read
    /// at or committed at here.
    floor: u64,
}

impl TxnTable {
    pub fn new(floor: u64) -> TxnTable {
        TxnTable { txns: HashMap::new(), applying: HashMap::new(), floor }
    }

    pub fn raise(&mut self, floor: u64) {
        self.floor = self.floor.max(floor);
    }

    /// A timestamp for a PREPARE or a one-phase COMMIT: at least `min_ts`
    /// and above the floor.
    pub fn next_ts(&mut self, min_ts: u64) -> u64 {
        let ts = min_ts.max(self.floor + 1);
        self.floor = ts;
        ts
    }

    /// A two-phase COMMIT's decided timestamp (at or above the prepare
    /// timestamp, which was above the floor when it was chosen).
    pub fn decided(&mut self, commit_ts: u64) -> u64 {
        self.floor = self.floor.max(commit_ts);
        commit_ts
    }

    /// Moves a committed transaction aside while its batch is written.
    pub fn applying(&mut self, state: TxnState, commit_ts: u64) {
        self.applying.insert(state.id.clone(), Applying { commit_ts, state });
    }

    /// The batch is written (or failed): the transaction's state back.
    pub fn applied(&mut self, id: &str) -> Option<TxnState> {
        self.applying.remove(id).map(|a| a.state)
    }

    /// Closes timestamps below `now`: raises the floor to it and returns
    /// the closed timestamp, below which every commit has been applied (no
    /// prepared or committing transaction can still commit below it).
    pub fn close(&mut self, now: u64) -> u64 {
        self.floor = self.floor.max(now);
        let prepared = self.txns.values().filter_map(|t| t.prepare_ts);
        let applying = self.applying.values().map(|a| a.commit_ts);
        prepared.chain(applying).fold(self.floor + 1, u64::min)
    }

    /// Raises the floor to `read_ts` and names a transaction the read must
    /// wait for, if any (see the module page).
    pub fn register_read(&mut self, reads: &Reads<'_>, read_ts: u64) -> Option<String> {
        self.floor = self.floor.max(read_ts);
        let prepared = self.txns.values().find(|t| t.prepare_ts.is_some_and(|p| p < read_ts) && reads.touches(&t.writes));
        if let Some(t) = prepared {
            return Some(t.id.clone());
        }
        self.applying.values().find(|a| a.commit_ts < read_ts && reads.touches(&a.state.writes)).map(|a| a.state.id.clone())
    }
}

impl Deref for TxnTable {
    type Target = HashMap<String, TxnState>;

    fn deref(&self) -> &Self::Target {
        &self.txns
    }
}

impl DerefMut for TxnTable {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.txns
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_model::txn::TxnContext;

    fn txn(id: &str, key: &[u8], prepare_ts: Option<u64>) -> TxnState {
        let mut state = TxnState::new(&TxnContext { id: id.into(), timestamp: 1, begin: true, coordinator: String::new() });
        state.writes.insert(key.to_vec(), Some(b"v".to_vec()));
        state.prepare_ts = prepare_ts;
        state
    }

    #[test]
    fn a_read_waits_only_for_prepared_writes_below_its_timestamp() {
        let mut table = TxnTable::new(0);
        table.insert("active".into(), txn("active", b"a", None));
        table.insert("low".into(), txn("low", b"b", Some(10)));
        table.insert("high".into(), txn("high", b"c", Some(50)));
        assert_eq!(table.register_read(&Reads::Keys(&[b"a".to_vec()]), 20), None, "an active transaction commits above the floor");
        assert_eq!(table.register_read(&Reads::Keys(&[b"b".to_vec()]), 20), Some("low".into()));
        assert_eq!(table.register_read(&Reads::Range(b"c", b"d"), 20), None, "prepared at 50: commits above the read");
        assert_eq!(table.register_read(&Reads::Range(b"a", b"z"), 51).as_deref().map(|id| id == "low" || id == "high"), Some(true));
        assert_eq!(table.register_read(&Reads::Keys(&[b"b".to_vec()]), 10), None, "prepared at 10 commits at or above 10");
    }

    #[test]
    fn commits_land_above_every_read_and_commit_before_them() {
        let mut table = TxnTable::new(0);
        table.register_read(&Reads::Keys(&[]), 100);
        assert_eq!(table.next_ts(40), 101, "above the read at 100");
        assert_eq!(table.next_ts(500), 500);
        assert_eq!(table.decided(300), 300, "a decided timestamp is kept");
        assert_eq!(table.next_ts(1), 501, "a later commit on the same key lands above both");
    }

    #[test]
    fn the_closed_timestamp_stops_below_every_undecided_transaction() {
        let mut table = TxnTable::new(0);
        assert_eq!(table.close(100), 101);
        assert_eq!(table.next_ts(1), 101, "nothing commits below what was closed");
        table.insert("p".into(), txn("p", b"k", Some(150)));
        assert_eq!(table.close(200), 150, "a prepared transaction may still commit at 150");
        table.applying(txn("c", b"j", None), 120);
        assert_eq!(table.close(200), 120);
    }

    #[test]
    fn a_committing_transaction_blocks_reads_above_it_until_applied() {
        let mut table = TxnTable::new(0);
        table.applying(txn("t", b"k", Some(5)), 7);
        assert_eq!(table.register_read(&Reads::Keys(&[b"k".to_vec()]), 8), Some("t".into()));
        assert_eq!(table.register_read(&Reads::Keys(&[b"k".to_vec()]), 7), None);
        assert!(table.applied("t").is_some());
        assert_eq!(table.register_read(&Reads::Keys(&[b"k".to_vec()]), 8), None);
    }
}
