//! Transactions on the coordinator: one-phase commit for a single shard
//! group, two-phase commit across groups, and the decision log.
//!
//! The protocol's rules (which commit a transaction gets, presumed abort,
//! when a delivered decision may be forgotten, redelivery backoff) are
//! plain functions in [`rules`] with a unit test each; [`TxnManager`] and
//! phase two carry out what they decide.
//!
//! ## Two-phase commit
//!
//! 1. **Execute.** Each statement sends its writes to the participants with
//!    the transaction id and start timestamp; they lock rows (wound-wait) and
//!    buffer the writes. Reads inside an explicit transaction lock the rows
//!    they read (strict two-phase locking).
//! 2. **Prepare.** On COMMIT, if more than one group wrote, PREPARE goes to
//!    every writing group in parallel. A participant answers yes only after
//!    its write set and locks are fsynced.
//! 3. **Decide.** All yes: the COMMIT record is written to the decision log
//!    and fsynced (group commit). That write is the commit point; the client
//!    is answered only after it. Any no, error or timeout: abort, with no log
//!    record (presumed abort).
//! 4. **Deliver.** COMMIT (or ABORT) goes to every participant and is re-sent
//!    until acknowledged ([`redrive`]); then the record is forgotten.
//!
//! ## Failures and the recovery rule
//!
//! - *Coordinator dies before the decision is logged*: no record, so the
//!   outcome is abort. Prepared participants ask ([`TxnManager::outcome`])
//!   and abort.
//! - *Coordinator dies after logging COMMIT*: on restart it reads every record
//!   and re-delivers COMMIT; participants asking meanwhile are told COMMITTED.
//! - *Participant dies after voting yes*: it reloads its prepared record with
//!   its locks on restart and gets COMMIT from the redrive loop, or asks.
//! - *Participant unreachable during PREPARE*: the vote is missing, so the
//!   coordinator aborts everywhere; the participant lost its unprepared state.
//!
//! Recovery rule, in one sentence: a transaction is committed if and only if
//! the decision log holds its COMMIT record, and that record is kept until
//! every participant has applied it.
//!
//! Left out: a read-only participant is released after the decision rather
//! than at PREPARE, and a participant's locks are exclusive only.

mod log;
mod manager;
pub mod oracle;
mod redrive;
mod registry;
pub mod rules;

pub use log::{CommitRecord, DecisionLog, Journal, JournalError};
pub use manager::TxnManager;
pub use registry::{Phase, TxnInfo, TxnState};
pub use rules::Outcome;

use crate::catalog::ShardGroupId;
use crate::shards::ShardPool;
use std::collections::{BTreeMap, HashMap};
use tessera_model::txn::{Mutation, TxnContext};
use tokio::time::Instant;

/// The isolation level of a read-write transaction, with PostgreSQL's
/// meanings (see docs/architecture/consistency.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Each statement reads a fresh snapshot; writes lock the rows they
    /// change and act on their newest version.
    ReadCommitted,
    /// Every statement reads the snapshot taken at the first one; writing a
    /// row changed since then fails with 40001.
    RepeatableRead,
    /// Reads and writes lock their rows to the end (strict two-phase
    /// locking): Tessera's default.
    #[default]
    Serializable,
}

impl Isolation {
    /// The name `SHOW transaction_isolation` gives.
    pub fn name(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read committed",
            Isolation::RepeatableRead => "repeatable read",
            Isolation::Serializable => "serializable",
        }
    }
}

/// A transaction as the coordinator tracks it during execution.
pub struct Txn {
    pub id: String,
    pub timestamp: u64,
    /// Opened by BEGIN (writes go to shards at once) rather than a single
    /// autocommit statement (writes are buffered until commit).
    pub explicit: bool,
    /// Set when a statement failed: only ROLLBACK (or COMMIT, which rolls
    /// back) is accepted afterwards, as in PostgreSQL.
    pub failed: bool,
    /// READ ONLY: every statement reads one snapshot without locks, and
    /// writes are refused.
    pub read_only: bool,
    pub isolation: Isolation,
    /// The snapshot of a READ ONLY or REPEATABLE READ transaction, taken at
    /// its first statement and held against garbage collection until the
    /// transaction ends (see [`Txn::snapshot_ts`]).
    pub snapshot: Option<oracle::SnapshotHold>,
    /// Groups that have seen the transaction, and whether each has writes.
    participants: BTreeMap<ShardGroupId, bool>,
    /// Autocommit writes not yet sent.
    pending: BTreeMap<ShardGroupId, Vec<Mutation>>,
    pub started: Instant,
    coordinator: String,
}

impl Txn {
    fn new(id: String, timestamp: u64, explicit: bool, coordinator: String) -> Txn {
        Txn {
            id,
            timestamp,
            explicit,
            failed: false,
            read_only: false,
            isolation: Isolation::default(),
            snapshot: None,
            participants: BTreeMap::new(),
            pending: BTreeMap::new(),
            started: Instant::now(),
            coordinator,
        }
    }

    /// The transaction's snapshot timestamp, once taken.
    pub fn snapshot_ts(&self) -> Option<u64> {
        self.snapshot.as_ref().map(|hold| hold.ts())
    }

    /// The context for a request to `group`; the first one begins the
    /// transaction there.
    pub fn context(&mut self, group: ShardGroupId) -> TxnContext {
        let begin = !self.participants.contains_key(&group);
        self.participants.entry(group).or_insert(false);
        TxnContext { id: self.id.clone(), timestamp: self.timestamp, begin, coordinator: self.coordinator.clone() }
    }

    /// Contexts for a request to each of `groups`.
    pub fn contexts(&mut self, groups: impl IntoIterator<Item = ShardGroupId>) -> HashMap<ShardGroupId, TxnContext> {
        groups.into_iter().map(|g| (g, self.context(g))).collect()
    }

    /// A context that begins nothing (for ABORT and COMMIT).
    pub fn plain_context(&self) -> TxnContext {
        TxnContext { id: self.id.clone(), timestamp: self.timestamp, begin: false, coordinator: self.coordinator.clone() }
    }

    fn mark_written(&mut self, group: ShardGroupId) {
        self.participants.insert(group, true);
    }

    /// Groups with writes.
    pub fn writers(&self) -> Vec<ShardGroupId> {
        let mut groups: Vec<ShardGroupId> = self.participants.iter().filter(|(_, w)| **w).map(|(g, _)| *g).collect();
        for g in self.pending.keys() {
            if !groups.contains(g) {
                groups.push(*g);
            }
        }
        groups.sort_unstable();
        groups
    }

    /// Groups the transaction touched without writing.
    pub fn readers(&self) -> Vec<ShardGroupId> {
        self.participants.iter().filter(|(g, w)| !**w && !self.pending.contains_key(g)).map(|(g, _)| *g).collect()
    }

    /// Every group the transaction touched.
    pub fn groups(&self) -> Vec<ShardGroupId> {
        let mut groups: Vec<ShardGroupId> = self.participants.keys().chain(self.pending.keys()).copied().collect();
        groups.sort_unstable();
        groups.dedup();
        groups
    }
}

/// Aborts `txn` on each group, ignoring failures: a shard that misses the
/// abort releases the locks when the transaction's idle timeout runs out.
pub(crate) async fn abort_everywhere(shards: &ShardPool, txn: &TxnContext, groups: impl Iterator<Item = ShardGroupId>) {
    let aborts = groups.filter_map(|g| shards.get(g).ok()).map(|client| {
        let txn = txn.clone();
        async move {
            if let Err(e) = client.abort(&txn).await {
                tracing::warn!(txn = %txn.id, group = client.group, error = %e, "abort failed; the shard's idle timeout will release the locks");
            }
        }
    });
    futures::future::join_all(aborts).await;
}
