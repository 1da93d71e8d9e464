//! The participant side of Tessera's transactions.
//!
//! A transaction's writes live on the shard from its first statement: each
//! mutation takes an exclusive lock on its key and is buffered in the
//! transaction's write set. Reads inside a transaction see its own writes and,
//! with `lock`, take the same exclusive locks (strict two-phase locking).
//!
//! Phases, per transaction id:
//! - **active**: locks held in memory, writes buffered. Lost on restart; the
//!   coordinator learns so because the shard refuses a transaction it does not
//!   know unless the request says `begin`.
//! - **prepared**: the write set is written to the `txn` keyspace with an
//!   fsync before PREPARE answers yes. On restart every prepared record is
//!   reloaded with its locks; it stays until COMMIT or ABORT arrives.
//! - **committed / aborted**: the write set is applied (or dropped) in one
//!   synced batch that also deletes the prepared record, then locks go.
//!
//! The phase machine's rules are plain functions in [`rules`], each with a
//! unit test; the participant carries out what they decide.
//!
//! Idempotency: COMMIT of an unknown transaction is a repeat and succeeds;
//! ABORT of an unknown transaction succeeds; PREPARE of an unknown (aborted,
//! timed-out) transaction is refused.
//!
//! Deadlocks: a transaction that meets a lock waits in the row's queue, in
//! arrival order; an older one also wounds a younger holder (wound-wait on
//! the start timestamps, see [`locks`]): the holder is aborted here unless
//! it has prepared, and its next request fails with a retryable error
//! (40001). Waits end at the lock timeout as a backstop.
//! Idle active transactions are aborted by [`Participant::abort_idle`].
//!
//! Timestamps (see [`table`] and docs/architecture/consistency.md): PREPARE
//! chooses a prepare timestamp and COMMIT writes the write set as versions
//! ([`crate::mvcc`]) at the commit timestamp, both above every timestamp
//! this shard has read at. A snapshot read outside a transaction first waits
//! for prepared or committing transactions that may commit below its
//! timestamp.
//!
//! A yes voter never decides alone: a prepared transaction is never aborted
//! by a timeout. [`Participant::in_doubt`] lists the ones waiting too long, and
//! the resolver (`server.rs`) asks their coordinator for the outcome.

pub mod locks;
pub mod rules;
mod state;
mod table;

use crate::error::{Result, ShardError};
use crate::metrics::ShardMetrics;
use crate::mvcc;
use locks::LockTable;
use rules::{Commit, Prepare};
use state::{Phase, TxnState};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use table::{Reads, TxnTable};
use tessera_model::data::expr::Expr;
use tessera_model::data::row::decode_row;
pub use tessera_model::txn::{Mutation, MutationOp, TxnContext};
use tessera_storage::group::GroupCommit;
use tessera_storage::{Engine, Space, Write};
use tokio::time::Instant;

/// Largest scan response, in bytes of keys and values.
pub const SCAN_BYTE_BUDGET: usize = 4 * 1024 * 1024;

/// How long a snapshot read waits for a prepared transaction's decision
/// before giving up (a node uses the lock timeout when that is longer).
pub const INTENT_WAIT: Duration = Duration::from_secs(10);

/// Timeouts of the participant.
#[derive(Debug, Clone, Copy)]
pub struct TxnLimits {
    pub lock_timeout: Duration,
    pub idle_timeout: Duration,
    /// How long a commit may wait for others to share its fsync.
    pub group_commit_window: Duration,
    /// How long a snapshot read waits for a prepared transaction's decision.
    pub intent_wait: Duration,
}

/// What a scan asks for.
#[derive(Debug, Clone, Default)]
pub struct ScanSpec {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    /// 0 means no limit.
    pub limit: u64,
    pub filter: Option<Expr>,
    pub txn: Option<TxnContext>,
    pub lock: bool,
    /// Outside a transaction: the snapshot to read (see [`crate::mvcc`]).
    pub read_ts: u64,
}

/// Rows of a scan and, if it stopped early, where to resume.
pub struct ScanResult {
    pub rows: Vec<(Vec<u8>, Vec<u8>)>,
    pub resume_key: Option<Vec<u8>>,
}

/// Waits until a durable write is durable on enough replicas too (sync
/// replication); set by the node once it runs.
pub type ReplicationBarrier = Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>> + Send + Sync>;

pub struct Participant {
    engine: Arc<dyn Engine>,
    /// Sync replication: waited for after every durable write.
    replication: std::sync::OnceLock<ReplicationBarrier>,
    /// Set once the participant is shared (see [`Participant::start_group_commit`]).
    group: std::sync::OnceLock<GroupCommit>,
    locks: LockTable,
    /// Transactions by id, with the timestamp state snapshot reads and
    /// commits share (see [`table`]).
    txns: Mutex<TxnTable>,
    /// Woken when a prepared or committing transaction's writes are
    /// applied or dropped (snapshot reads wait for them).
    resolved: tokio::sync::Notify,
    /// Recently aborted transactions, so late requests are refused, with
    /// the transaction that wounded them, if one did.
    aborted: Mutex<HashMap<String, (Instant, Option<String>)>>,
    limits: TxnLimits,
    /// Writes that asked for durability (prepares, one-phase commits, ...),
    /// before group commit merges them.
    synced_writes: std::sync::atomic::AtomicU64,
    /// Garbage collection: the horizon the coordinator allows, the one in
    /// force (snapshot reads below it are refused), and where the next
    /// round starts.
    gc_allowed: AtomicU64,
    gc_horizon: AtomicU64,
    gc_cursor: tokio::sync::Mutex<Vec<u8>>,
    pub metrics: Arc<ShardMetrics>,
}

impl Participant {
    /// Opens the participant and reloads every prepared transaction with its locks.
    pub fn open(engine: Arc<dyn Engine>, limits: TxnLimits) -> Result<Participant> {
        let participant = Participant {
            engine,
            replication: std::sync::OnceLock::new(),
            group: std::sync::OnceLock::new(),
            locks: LockTable::default(),
            txns: Mutex::new(TxnTable::new(0)),
            resolved: tokio::sync::Notify::new(),
            aborted: Mutex::default(),
            limits,
            synced_writes: Default::default(),
            gc_allowed: AtomicU64::new(0),
            gc_horizon: AtomicU64::new(0),
            gc_cursor: tokio::sync::Mutex::new(Vec::new()),
            metrics: Arc::new(ShardMetrics::new()),
        };
        participant.recover()?;
        // A restart: reads may have been served before it.
        participant.raise_floor()?;
        Ok(participant)
    }

    /// Reloads the prepared transactions not yet held here, with their
    /// locks (a replica promoted to primary).
    pub fn reload_prepared(&self) -> Result<()> {
        self.recover()
    }

    /// Forgets every transaction and lock held in memory (a primary that
    /// becomes a replica; its prepared records stay on disk, replicated).
    pub fn demote(&self) {
        self.txns.lock().unwrap().clear();
        self.locks.clear();
        self.resolved.notify_waiters();
    }

    /// A restarted node, or a replica promoted to primary: commits from
    /// now on are above any timestamp a read may have been served at before
    /// (see [`table::restart_floor`]). A node without data has served none.
    pub fn raise_floor(&self) -> Result<()> {
        if self.holds_data()? {
            self.txns.lock().unwrap().raise(table::restart_floor());
        }
        Ok(())
    }

    /// Makes durable writes wait for replicas (sync replication).
    pub fn set_replication(&self, barrier: ReplicationBarrier) {
        let _ = self.replication.set(barrier);
    }

    async fn replicated(&self) -> Result<()> {
        match self.replication.get() {
            Some(barrier) => barrier().await,
            None => Ok(()),
        }
    }

    fn holds_data(&self) -> Result<bool> {
        let mut any = false;
        self.engine.scan(Space::Data, b"", &[0xFF; 64], &mut |_, _| {
            any = true;
            false
        })?;
        Ok(any)
    }

    fn recover(&self) -> Result<()> {
        let mut records = Vec::new();
        self.engine.scan(Space::Txn, b"", &[0xFF; 64], &mut |k, v| {
            records.push((k.to_vec(), v.to_vec()));
            true
        })?;
        let mut txns = self.txns.lock().unwrap();
        for (key, value) in records {
            let state =
                TxnState::decode_prepared(&value).map_err(|e| ShardError::Corrupt(format!("prepared record {}: {e}", String::from_utf8_lossy(&key))))?;
            if txns.contains_key(&state.id) {
                continue;
            }
            for k in state.writes.keys() {
                self.locks.acquire_now(k, &state.id, state.timestamp);
            }
            tracing::info!(txn = %state.id, writes = state.writes.len(), "recovered prepared transaction");
            txns.insert(state.id.clone(), state);
        }
        Ok(())
    }

    /// Starts group commit: synced writes of concurrent transactions share
    /// fsyncs. Without it every commit syncs on its own.
    pub fn start_group_commit(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let in_flight = Arc::new(move || weak.upgrade().map(|p| p.txns.lock().unwrap().len()).unwrap_or(0));
        let _ = self.group.set(GroupCommit::start(self.engine.clone(), self.limits.group_commit_window, in_flight, self.metrics.group_commit.clone()));
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// (active, prepared) transaction counts.
    pub fn counts(&self) -> (usize, usize) {
        let txns = self.txns.lock().unwrap();
        let prepared = txns.values().filter(|t| t.phase == Phase::Prepared).count();
        (txns.len() - prepared, prepared)
    }

    /// Ids of prepared transactions (in doubt until the coordinator decides).
    pub fn prepared_ids(&self) -> Vec<String> {
        self.txns.lock().unwrap().values().filter(|t| t.phase == Phase::Prepared).map(|t| t.id.clone()).collect()
    }

    /// Point reads. Outside a transaction, the rows as of `read_ts` (a
    /// snapshot). In one, its own writes win, and: with `lock`, each row is
    /// locked and its newest committed version read (and with `read_ts`,
    /// REPEATABLE READ's write check: a version committed at or after
    /// `read_ts` fails with 40001); without `lock`, the rows as of `read_ts`
    /// (READ COMMITTED and REPEATABLE READ reads), or the newest without it.
    pub async fn get(&self, keys: Vec<Vec<u8>>, txn: Option<&TxnContext>, lock: bool, read_ts: u64) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let Some(txn) = txn else {
            if lock {
                return Err(ShardError::InvalidRequest("a locking read needs a transaction".into()));
            }
            return self.get_at(keys, read_ts).await;
        };
        self.touch(txn)?;
        let snapshot = !lock && read_ts > 0;
        if snapshot {
            self.wait_for_intents(Reads::Keys(&keys), read_ts).await?;
        }
        let mut rows = Vec::with_capacity(keys.len());
        for key in keys {
            if lock {
                self.lock_key(txn, &key).await?;
                self.check_write_conflict(txn, &key, read_ts)?;
            }
            let value = if snapshot { self.read_key_at(txn, &key, read_ts)? } else { self.read_key(Some(txn), &key)? };
            if let Some(value) = value {
                rows.push((key, value));
            }
        }
        Ok(rows)
    }

    /// REPEATABLE READ (`snapshot` > 0): a row about to be written must not
    /// have a version committed at or after the transaction's snapshot.
    fn check_write_conflict(&self, txn: &TxnContext, key: &[u8], snapshot: u64) -> Result<()> {
        if snapshot == 0 || self.txns.lock().unwrap().get(&txn.id).is_some_and(|t| t.writes.contains_key(key)) {
            return Ok(());
        }
        match mvcc::newest_ts(self.engine.as_ref(), key)? {
            Some(committed) if committed >= snapshot => Err(ShardError::WriteConflict { committed, snapshot }),
            _ => Ok(()),
        }
    }

    /// A row as of `read_ts`, the transaction's own write winning.
    fn read_key_at(&self, txn: &TxnContext, key: &[u8], read_ts: u64) -> Result<Option<Vec<u8>>> {
        let own = self.txns.lock().unwrap().get(&txn.id).and_then(|t| t.writes.get(key).cloned());
        match own {
            Some(own) => Ok(own),
            None => Ok(mvcc::get_at(self.engine.as_ref(), key, read_ts)?),
        }
    }

    /// Closes timestamps up to now (see [`table::TxnTable::close`]);
    /// returns the closed timestamp and `last_seq()`, read under the same
    /// lock: every commit below the timestamp is in the log up to it.
    pub fn close_timestamps(&self, last_seq: impl FnOnce() -> u64) -> (u64, u64) {
        let mut txns = self.txns.lock().unwrap();
        let closed = txns.close(tessera_model::clock::now_micros());
        (closed, last_seq())
    }

    /// The coordinator allows collecting versions no read at or above
    /// `horizon` needs (a replica only refuses reads below it).
    pub fn allow_gc(&self, horizon: u64, collects: bool) {
        self.gc_allowed.fetch_max(horizon, Ordering::AcqRel);
        if !collects {
            self.gc_horizon.fetch_max(horizon, Ordering::AcqRel);
        }
    }

    /// Snapshot reads below this are refused (72000).
    pub fn gc_horizon(&self) -> u64 {
        self.gc_horizon.load(Ordering::Acquire)
    }

    /// One round of garbage collection: scans up to `budget` versions from
    /// where the last round stopped and deletes the ones no read at or
    /// above the allowed horizon needs ([`mvcc::collectable`]), in one
    /// replicated batch. Returns (versions, bytes) removed.
    pub async fn collect_garbage(self: &Arc<Self>, budget: usize) -> Result<(u64, u64)> {
        let horizon = self.gc_allowed.load(Ordering::Acquire);
        if horizon == 0 {
            return Ok((0, 0));
        }
        // From now on reads below the horizon are refused, before anything goes.
        self.gc_horizon.fetch_max(horizon, Ordering::AcqRel);
        let mut cursor = self.gc_cursor.lock().await;
        let (engine, start) = (self.engine.clone(), cursor.clone());
        let (deletes, next, bytes) = tokio::task::spawn_blocking(move || mvcc::plan_collection(engine.as_ref(), &start, horizon, budget))
            .await
            .map_err(|e| ShardError::InvalidRequest(format!("garbage collection task failed: {e}")))??;
        let versions = deletes.len() as u64;
        if !deletes.is_empty() {
            let batch = deletes.into_iter().map(|key| Write { space: Space::Data, key, value: None }).collect();
            self.apply_unsynced(batch).await?;
        }
        *cursor = next;
        self.metrics.gc_versions.add(versions);
        self.metrics.gc_bytes.add(bytes);
        Ok((versions, bytes))
    }

    /// Snapshot point reads at `read_ts`.
    async fn get_at(&self, keys: Vec<Vec<u8>>, read_ts: u64) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.wait_for_intents(Reads::Keys(&keys), read_ts).await?;
        let mut rows = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(value) = mvcc::get_at(self.engine.as_ref(), &key, read_ts)? {
                rows.push((key, value));
            }
        }
        Ok(rows)
    }

    /// Makes the snapshot at `read_ts` stable for `reads`: no commit from now
    /// on gets a timestamp at or below it, and every prepared or committing
    /// transaction that may commit below it and writes what is read is
    /// waited for (its decision applied or dropped).
    async fn wait_for_intents(&self, reads: Reads<'_>, read_ts: u64) -> Result<()> {
        table::check_read_ts(read_ts)?;
        let horizon = self.gc_horizon();
        if read_ts < horizon {
            return Err(ShardError::SnapshotTooOld { read_ts, horizon });
        }
        let deadline = Instant::now() + self.limits.intent_wait;
        let mut waited = false;
        loop {
            let resolved = self.resolved.notified();
            tokio::pin!(resolved);
            resolved.as_mut().enable();
            let Some(txn) = self.txns.lock().unwrap().register_read(&reads, read_ts) else { return Ok(()) };
            if !waited {
                waited = true;
                self.metrics.intent_waits.inc();
            }
            if tokio::time::timeout_at(deadline, resolved).await.is_err() {
                return Err(ShardError::Unresolved { txn, read_ts });
            }
        }
    }

    /// A range scan with an optional filter, limit, and locks.
    pub async fn scan(self: &Arc<Self>, spec: ScanSpec) -> Result<ScanResult> {
        let snapshot = !spec.lock && (spec.txn.is_none() || spec.read_ts > 0);
        if let Some(txn) = &spec.txn {
            self.touch(txn)?;
        } else if spec.lock {
            return Err(ShardError::InvalidRequest("a locking scan needs a transaction".into()));
        }
        if snapshot {
            self.wait_for_intents(Reads::Range(&spec.start, &spec.end), spec.read_ts).await?;
        }
        let read_ts = if snapshot { spec.read_ts } else { mvcc::LATEST };
        let overlay = spec.txn.as_ref().map(|t| self.writes_in_range(&t.id, &spec.start, &spec.end)).unwrap_or_default();
        let this = self.clone();
        let unbounded = spec.lock || !overlay.is_empty();
        let (start, end, filter, limit) = (spec.start.clone(), spec.end.clone(), spec.filter.clone(), spec.limit);
        let mut result =
            tokio::task::spawn_blocking(move || this.scan_committed(&start, &end, read_ts, filter.as_ref(), if unbounded { 0 } else { limit }, !unbounded))
                .await
                .map_err(|e| ShardError::InvalidRequest(format!("scan task failed: {e}")))??;
        if !overlay.is_empty() {
            apply_overlay(&mut result.rows, overlay, spec.filter.as_ref())?;
        }
        if spec.lock {
            result.rows = self.lock_rows(spec.txn.as_ref().unwrap(), result.rows, spec.filter.as_ref(), spec.read_ts).await?;
        }
        if unbounded && spec.limit > 0 && result.rows.len() as u64 > spec.limit {
            result.rows.truncate(spec.limit as usize);
            result.resume_key = result.rows.last().map(|(k, _)| tessera_model::data::keys::successor(k.clone()));
        }
        Ok(result)
    }

    fn scan_committed(&self, start: &[u8], end: &[u8], read_ts: u64, filter: Option<&Expr>, limit: u64, budget: bool) -> Result<ScanResult> {
        let mut rows = Vec::new();
        let mut bytes = 0usize;
        let mut resume_key = None;
        let mut failure = None;
        mvcc::scan_at(self.engine.as_ref(), start, end, read_ts, &mut |k, v| {
            match row_matches(filter, v) {
                Ok(false) => return true,
                Ok(true) => {}
                Err(e) => {
                    failure = Some(e);
                    return false;
                }
            }
            if (limit > 0 && rows.len() as u64 >= limit) || (budget && bytes >= SCAN_BYTE_BUDGET) {
                resume_key = Some(k.to_vec());
                return false;
            }
            bytes += k.len() + v.len();
            rows.push((k.to_vec(), v.to_vec()));
            true
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(ScanResult { rows, resume_key })
    }

    /// Locks each candidate row, then re-reads it and re-checks the filter.
    async fn lock_rows(&self, txn: &TxnContext, candidates: Vec<(Vec<u8>, Vec<u8>)>, filter: Option<&Expr>, snapshot: u64) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut rows = Vec::with_capacity(candidates.len());
        for (key, _) in candidates {
            self.lock_key(txn, &key).await?;
            self.check_write_conflict(txn, &key, snapshot)?;
            if let Some(value) = self.read_key(Some(txn), &key)? {
                if row_matches(filter, &value)? {
                    rows.push((key, value));
                }
            }
        }
        Ok(rows)
    }

    /// Buffers mutations in the transaction after locking their keys.
    pub async fn write(&self, txn: &TxnContext, mutations: Vec<Mutation>) -> Result<()> {
        self.touch(txn)?;
        for m in mutations {
            self.lock_key(txn, &m.key).await?;
            if matches!(m.op, MutationOp::Insert(_)) && self.read_key(Some(txn), &m.key)?.is_some() {
                return Err(ShardError::AlreadyExists { key: m.key });
            }
            let value = match m.op {
                MutationOp::Put(v) | MutationOp::Insert(v) => Some(v),
                MutationOp::Delete => None,
            };
            self.with_txn(&txn.id, |t| {
                t.writes.insert(m.key, value);
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Makes the write set and locks durable: the participant's yes vote.
    /// Returns the prepare timestamp, at least `min_ts`: the transaction
    /// will commit at or above it.
    pub async fn prepare(&self, txn: &TxnContext, min_ts: u64) -> Result<u64> {
        table::check_ts(min_ts, "prepare")?;
        let (record, prepare_ts) = {
            let mut txns = self.txns.lock().unwrap();
            match rules::prepare(txns.get(&txn.id).map(|t| t.phase)) {
                Prepare::Unknown => return Err(self.unknown(&txn.id, "PREPARE")),
                Prepare::AlreadyPrepared => return Ok(txns.get(&txn.id).and_then(|t| t.prepare_ts).unwrap_or(min_ts)),
                Prepare::WriteRecord => {}
            }
            // From here readers at or above the timestamp wait for the decision.
            let prepare_ts = match txns.get(&txn.id).and_then(|t| t.prepare_ts) {
                Some(ts) => ts,
                None => txns.next_ts(min_ts),
            };
            let state = txns.get_mut(&txn.id).expect("held: checked above");
            state.prepare_ts = Some(prepare_ts);
            if state.coordinator.is_empty() {
                state.coordinator = txn.coordinator.clone();
            }
            (state.encode_prepared(), prepare_ts)
        };
        tessera_model::failpoint::hit("shard.prepare.before_vote").await;
        let started = Instant::now();
        let write = Write { space: Space::Txn, key: txn.id.as_bytes().to_vec(), value: Some(record) };
        self.apply(vec![write]).await?;
        self.metrics.prepares.inc();
        self.metrics.prepare_seconds.observe_duration(started.elapsed());
        tracing::debug!(txn = %txn.id, prepare_ts, "prepared");
        self.with_txn(&txn.id, |t| {
            t.phase = Phase::Prepared;
            t.last_active = Instant::now();
            Ok(())
        })?;
        Ok(prepare_ts)
    }

    /// Prepared transactions whose decision has not arrived for `patience`:
    /// (transaction id, coordinator address).
    pub fn in_doubt(&self, patience: Duration) -> Vec<(String, String)> {
        let now = Instant::now();
        let txns = self.txns.lock().unwrap();
        txns.values().filter(|t| rules::in_doubt(t.phase, now.duration_since(t.last_active), patience)).map(|t| (t.id.clone(), t.coordinator.clone())).collect()
    }

    /// Commits: one phase (with optional final mutations) or after PREPARE.
    /// A `lazy` two-phase commit is applied without an fsync: until the next
    /// [`Participant::sync_wal`] a crash may undo it, leaving the durable
    /// prepared record, which is resolved again from the coordinator's log.
    ///
    /// `commit_ts` is the decided timestamp of a two-phase commit, and the
    /// lowest acceptable one of a one-phase commit, which commits above
    /// every timestamp this shard has read or committed at. Returns the
    /// timestamp the writes were committed at.
    pub async fn commit(&self, txn: &TxnContext, one_phase: bool, mutations: Vec<Mutation>, lazy: bool, commit_ts: u64) -> Result<u64> {
        let started = Instant::now();
        if one_phase {
            if let Err(e) = self.write(txn, mutations).await {
                // A one-phase commit that fails leaves nothing behind.
                let _ = self.abort(&txn.id).await;
                return Err(e);
            }
        } else if !mutations.is_empty() {
            return Err(ShardError::InvalidRequest("mutations may only accompany a one-phase commit".into()));
        }
        if !one_phase {
            tessera_model::failpoint::hit("shard.commit.before_apply").await;
        }
        table::check_ts(commit_ts, "commit")?;
        if !one_phase && commit_ts == 0 {
            return Err(ShardError::InvalidRequest(format!("the two-phase COMMIT of transaction {} carries no commit timestamp", txn.id)));
        }
        let (commit_ts, batch) = {
            let mut txns = self.txns.lock().unwrap();
            let delete_prepared_record = match rules::commit(txns.get(&txn.id).map(|t| t.phase), one_phase) {
                Commit::Unknown => return Err(self.unknown(&txn.id, "COMMIT")),
                Commit::AlreadyCommitted => return Ok(commit_ts),
                Commit::NotPrepared => return Err(ShardError::TxnState(format!("transaction {} cannot commit in two phases: it was not prepared", txn.id))),
                Commit::Apply { delete_prepared_record } => delete_prepared_record,
            };
            if let Some(prepared) = txns.get(&txn.id).and_then(|t| t.prepare_ts).filter(|p| !one_phase && commit_ts < *p) {
                return Err(ShardError::InvalidRequest(format!(
                    "the COMMIT of transaction {} at timestamp {commit_ts} is below its prepare timestamp {prepared}",
                    txn.id
                )));
            }
            let commit_ts = if one_phase { txns.next_ts(commit_ts) } else { txns.decided(commit_ts) };
            let state = txns.remove(&txn.id).expect("held: checked above");
            let mut batch: Vec<Write> = state
                .writes
                .iter()
                .map(|(k, v)| Write { space: Space::Data, key: mvcc::version_key(k, commit_ts), value: Some(mvcc::version_value(v.as_ref())) })
                .collect();
            if delete_prepared_record {
                batch.push(Write { space: Space::Txn, key: state.id.as_bytes().to_vec(), value: None });
            }
            // Until applied, readers above `commit_ts` wait for these writes.
            txns.applying(state, commit_ts);
            (commit_ts, batch)
        };
        let outcome = if lazy && !one_phase { self.apply_unsynced(batch).await } else { self.apply(batch).await };
        let state = self.txns.lock().unwrap().applied(&txn.id).expect("held by this commit");
        self.resolved.notify_waiters();
        if outcome.is_err() && rules::keep_after_failed_apply(state.phase) {
            // The decision stands; keep the prepared state so a retry can commit.
            self.txns.lock().unwrap().insert(state.id.clone(), state);
            return outcome.map(|_| commit_ts);
        }
        self.locks.release(&state.id, state.locked.iter());
        if outcome.is_ok() {
            let (count, seconds) = if one_phase {
                (&self.metrics.one_phase_commits, &self.metrics.one_phase_commit_seconds)
            } else {
                (&self.metrics.two_phase_commits, &self.metrics.two_phase_commit_seconds)
            };
            count.inc();
            seconds.observe_duration(started.elapsed());
            tracing::debug!(txn = %txn.id, one_phase, commit_ts, "committed");
        }
        outcome.map(|_| commit_ts)
    }

    /// Drops the transaction's writes and releases its locks. Idempotent.
    pub async fn abort(&self, txn_id: &str) -> Result<()> {
        let state = self.txns.lock().unwrap().remove(txn_id);
        self.aborted.lock().unwrap().entry(txn_id.to_string()).or_insert((Instant::now(), None));
        let Some(state) = state else { return Ok(()) };
        self.metrics.aborts.inc();
        tracing::debug!(txn = %txn_id, prepared = state.phase == Phase::Prepared, "aborted");
        if rules::abort_deletes_record(Some(state.phase)) {
            let write = Write { space: Space::Txn, key: txn_id.as_bytes().to_vec(), value: None };
            if let Err(e) = self.apply(vec![write]).await {
                self.txns.lock().unwrap().insert(state.id.clone(), state);
                return Err(e);
            }
        }
        self.locks.release(&state.id, state.locked.iter());
        self.resolved.notify_waiters();
        Ok(())
    }

    /// Aborts active transactions idle for longer than the idle timeout.
    pub async fn abort_idle(&self) -> usize {
        let now = Instant::now();
        let idle: Vec<String> = {
            let txns = self.txns.lock().unwrap();
            txns.values().filter(|t| t.phase == Phase::Active && now.duration_since(t.last_active) > self.limits.idle_timeout).map(|t| t.id.clone()).collect()
        };
        for id in &idle {
            tracing::info!(txn = %id, "aborting idle transaction");
            let _ = self.abort(id).await;
        }
        self.aborted.lock().unwrap().retain(|_, (at, _)| now.duration_since(*at) < Duration::from_secs(600));
        idle.len()
    }

    /// Deletes committed data in `[start, end)`, durably.
    pub async fn delete_range(&self, start: Vec<u8>, end: Vec<u8>) -> Result<()> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.delete_range(&start, &end)).await.map_err(|e| ShardError::InvalidRequest(e.to_string()))??;
        self.replicated().await
    }

    async fn apply_unsynced(&self, writes: Vec<Write>) -> Result<()> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.apply(writes, false)).await.map_err(|e| ShardError::InvalidRequest(e.to_string()))??;
        Ok(())
    }

    /// Makes every write applied so far durable (on sync replicas too).
    pub async fn sync_wal(&self) -> Result<()> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.sync_wal()).await.map_err(|e| ShardError::InvalidRequest(e.to_string()))??;
        self.replicated().await
    }

    /// Synced writes requested since the participant opened.
    pub fn synced_writes(&self) -> u64 {
        self.synced_writes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A durable write: fsynced here (with others, by group commit) and,
    /// in sync mode, applied by enough replicas.
    async fn apply(&self, writes: Vec<Write>) -> Result<()> {
        self.synced_writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(group) = self.group.get() {
            group.apply(writes).await?;
        } else {
            let engine = self.engine.clone();
            tokio::task::spawn_blocking(move || engine.apply(writes, true)).await.map_err(|e| ShardError::InvalidRequest(e.to_string()))??;
        }
        self.replicated().await
    }

    /// Registers activity, creating the transaction when the request begins it.
    fn touch(&self, txn: &TxnContext) -> Result<()> {
        if txn.id.is_empty() {
            return Err(ShardError::InvalidRequest("transaction id is empty".into()));
        }
        let mut txns = self.txns.lock().unwrap();
        if let Some(state) = txns.get_mut(&txn.id) {
            if state.phase == Phase::Prepared {
                return Err(ShardError::TxnState(format!("transaction {} is prepared and takes no more statements", txn.id)));
            }
            state.last_active = Instant::now();
            return Ok(());
        }
        if !txn.begin || self.aborted.lock().unwrap().contains_key(&txn.id) {
            return Err(self.unknown(&txn.id, "statement"));
        }
        txns.insert(txn.id.clone(), TxnState::new(txn));
        Ok(())
    }

    fn unknown(&self, id: &str, what: &str) -> ShardError {
        match self.aborted.lock().unwrap().get(id) {
            Some((_, Some(by))) => ShardError::Conflict { holder: by.clone(), reason: "wound-wait: it is older and needed a lock this transaction held" },
            Some((_, None)) => ShardError::TxnState(format!("{what} refused for transaction {id}: it was aborted")),
            None => ShardError::TxnState(format!("{what} refused for transaction {id}: it is unknown here (aborted, timed out, or lost in a restart)")),
        }
    }

    async fn lock_key(&self, txn: &TxnContext, key: &[u8]) -> Result<()> {
        let deadline = Instant::now() + self.limits.lock_timeout;
        let mut wounded = Vec::new();
        let fresh = loop {
            match self.locks.acquire(key, &txn.id, txn.timestamp, deadline, &wounded).await {
                Ok(fresh) => break fresh,
                Err(locks::LockConflict::Wound { holder }) => {
                    self.wound(&holder, &txn.id);
                    wounded.push(holder);
                }
                Err(locks::LockConflict::Timeout { holder }) => {
                    self.metrics.conflicts_timeout.inc();
                    return Err(ShardError::Conflict { holder, reason: "lock wait timeout" });
                }
            }
        };
        if fresh {
            let recorded = self.with_txn(&txn.id, |t| {
                t.locked.push(key.to_vec());
                Ok(())
            });
            if recorded.is_err() {
                // The transaction ended while we waited; give the lock back.
                self.locks.release(&txn.id, [&key.to_vec()]);
                return recorded;
            }
        }
        Ok(())
    }

    /// Wound-wait: aborts `holder` here for the older transaction `by`,
    /// unless it has begun to prepare (a prepared transaction finishes on
    /// its own; the older one waits for it). The holder's next request
    /// fails with 40001.
    fn wound(&self, holder: &str, by: &str) {
        let state = {
            let mut txns = self.txns.lock().unwrap();
            match txns.get(holder) {
                Some(t) if t.phase == Phase::Active && t.prepare_ts.is_none() => txns.remove(holder),
                _ => None,
            }
        };
        let Some(state) = state else { return };
        self.aborted.lock().unwrap().insert(holder.to_string(), (Instant::now(), Some(by.to_string())));
        self.metrics.wounds.inc();
        self.metrics.aborts.inc();
        tracing::debug!(txn = %holder, by, "wounded by an older transaction");
        self.locks.release(&state.id, state.locked.iter());
    }

    fn read_key(&self, txn: Option<&TxnContext>, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(txn) = txn {
            let own = self.txns.lock().unwrap().get(&txn.id).and_then(|t| t.writes.get(key).cloned());
            if let Some(own) = own {
                return Ok(own);
            }
        }
        Ok(mvcc::get_at(self.engine.as_ref(), key, mvcc::LATEST)?)
    }

    fn writes_in_range(&self, id: &str, start: &[u8], end: &[u8]) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let txns = self.txns.lock().unwrap();
        let Some(t) = txns.get(id) else { return Vec::new() };
        if start >= end {
            return Vec::new();
        }
        t.writes.range(start.to_vec()..end.to_vec()).map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn with_txn<T>(&self, id: &str, f: impl FnOnce(&mut TxnState) -> Result<T>) -> Result<T> {
        let mut txns = self.txns.lock().unwrap();
        match txns.get_mut(id) {
            Some(t) => f(t),
            None => Err(match self.aborted.lock().unwrap().get(id) {
                Some((_, Some(by))) => ShardError::Conflict { holder: by.clone(), reason: "wound-wait: it is older and needed a lock this transaction held" },
                _ => ShardError::TxnState(format!("transaction {id} was aborted while the statement ran")),
            }),
        }
    }

    /// Total locks held (for status and tests).
    pub fn locks_held(&self) -> usize {
        self.locks.len()
    }

    /// The lock table (its wait counters, for metrics).
    pub fn locks(&self) -> &LockTable {
        &self.locks
    }
}

fn row_matches(filter: Option<&Expr>, value: &[u8]) -> Result<bool> {
    let Some(filter) = filter else { return Ok(true) };
    let row = decode_row(value).map_err(|e| ShardError::Corrupt(e.to_string()))?;
    filter.matches(&row).map_err(|e| ShardError::Eval { message: e.to_string(), sqlstate: e.sqlstate() })
}

/// Merges a transaction's own writes into committed scan results.
fn apply_overlay(rows: &mut Vec<(Vec<u8>, Vec<u8>)>, overlay: Vec<(Vec<u8>, Option<Vec<u8>>)>, filter: Option<&Expr>) -> Result<()> {
    let mut merged: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = std::mem::take(rows).into_iter().collect();
    for (k, v) in overlay {
        match v {
            Some(v) if row_matches(filter, &v)? => {
                merged.insert(k, v);
            }
            _ => {
                merged.remove(&k);
            }
        }
    }
    *rows = merged.into_iter().collect();
    Ok(())
}

#[cfg(test)]
mod tests;
