//! The transaction manager: begins transactions, sends their writes, and
//! commits them in one phase or two (see the module page for the protocol).

use super::log::{CommitRecord, DecisionLog, Journal};
use super::oracle::{Oracle, Snapshots};
use super::registry::{delivering, Phase, Registry, TxnInfo, TxnState};
use super::rules::{self, CommitPlan, Outcome};
use super::{abort_everywhere, redrive, Txn};
use crate::background::Background;
use crate::catalog::ShardGroupId;
use crate::error::{CoordError, Result};
use crate::shards::ShardPool;
use futures::future::try_join_all;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tessera_model::failpoint;
use tessera_model::metrics::{Counter, Histogram};
use tessera_model::txn::{Mutation, TxnContext};

/// How long COMMIT waits for phase two before answering the client; the
/// decision is already durable, and delivery goes on in the background.
const DELIVERY_WAIT: Duration = Duration::from_secs(1);

pub struct TxnManager {
    shards: Arc<ShardPool>,
    log: Arc<DecisionLog>,
    registry: Registry,
    phase_two: redrive::PhaseTwo,
    /// The address participants use to ask for outcomes.
    address: String,
    /// Transactions between PREPARE and their decision (the decision log
    /// waits for them to share an fsync).
    preparing: Arc<AtomicUsize>,
    last_timestamp: AtomicU64,
    oracle: Arc<Oracle>,
    snapshots: Arc<Snapshots>,
    background: Background,
    /// Outcomes and commit latencies, by protocol.
    pub metrics: TxnMetrics,
}

/// Transaction outcomes and commit latencies, by protocol (`one_phase`:
/// one writing group; `2pc`: several).
#[derive(Default)]
pub struct TxnMetrics {
    pub one_phase_committed: Counter,
    pub one_phase_aborted: Counter,
    /// The COMMIT went out and no answer came: it may or may not have applied.
    pub one_phase_unknown: Counter,
    pub two_phase_committed: Counter,
    pub two_phase_aborted: Counter,
    pub one_phase_seconds: Histogram,
    pub two_phase_seconds: Histogram,
}

impl TxnManager {
    /// Starts the manager and re-drives every COMMIT left in the log.
    /// `preparing` counts transactions about to log a decision; the
    /// journal's group-commit window waits for them.
    pub fn start(
        shards: Arc<ShardPool>,
        journal: Arc<Journal>,
        preparing: Arc<AtomicUsize>,
        address: String,
        background: &Background,
    ) -> Result<Arc<TxnManager>> {
        let registry: Registry = Arc::default();
        let oracle = Arc::new(Oracle::open(journal.clone()).map_err(|e| e.context("cannot read the timestamp oracle's high-water mark"))?);
        let log = Arc::new(DecisionLog::on(journal));
        let pending = log.pending().map_err(|e| e.context("cannot read the decision log"))?;
        let phase_two = redrive::spawn(shards.clone(), log.clone(), registry.clone(), address.clone(), background);
        for record in pending {
            tracing::info!(txn = %record.txn_id, participants = ?record.participants, "re-driving a logged COMMIT");
            registry.lock().unwrap().insert(record.txn_id.clone(), delivering(&record));
            let _ = phase_two.redrive.send(record);
        }
        Ok(Arc::new(TxnManager {
            shards,
            log,
            registry,
            phase_two,
            address,
            preparing,
            last_timestamp: AtomicU64::new(0),
            oracle,
            snapshots: Arc::default(),
            background: background.clone(),
            metrics: TxnMetrics::default(),
        }))
    }

    /// The cluster's timestamp oracle.
    pub fn oracle(&self) -> &Arc<Oracle> {
        &self.oracle
    }

    /// The snapshots READ ONLY transactions hold.
    pub fn snapshots(&self) -> &Arc<Snapshots> {
        &self.snapshots
    }

    /// A fresh timestamp of the oracle: a snapshot that sees every commit
    /// acknowledged before it was taken.
    pub async fn read_timestamp(&self) -> Result<u64> {
        self.oracle.next().await.map_err(|e| e.context("cannot take a timestamp"))
    }

    /// A unique, increasing start timestamp (microseconds): the age that
    /// orders lock conflicts, not a snapshot.
    fn timestamp(&self) -> u64 {
        let now = tessera_model::clock::now_micros();
        let next = |last: u64| now.max(last + 1);
        let previous =
            self.last_timestamp.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(next(last))).expect("the closure always returns Some");
        next(previous)
    }

    pub fn begin(&self, explicit: bool) -> Txn {
        let txn = Txn::new(uuid::Uuid::new_v4().to_string(), self.timestamp(), explicit, self.address.clone());
        let info = TxnInfo { id: txn.id.clone(), state: TxnState::Active, participants: BTreeMap::new(), started: txn.started };
        self.registry.lock().unwrap().insert(txn.id.clone(), info);
        txn
    }

    /// Records which groups an active transaction has touched.
    pub fn touch(&self, txn: &Txn) {
        if let Some(info) = self.registry.lock().unwrap().get_mut(&txn.id) {
            info.participants = txn.groups().into_iter().map(|g| (g, Phase::Active)).collect();
        }
    }

    fn set_state(&self, id: &str, state: TxnState, groups: &[ShardGroupId], phase: Phase) {
        if let Some(info) = self.registry.lock().unwrap().get_mut(id) {
            info.state = state;
            for g in groups {
                info.participants.insert(*g, phase);
            }
        }
    }

    fn forget(&self, id: &str) {
        self.registry.lock().unwrap().remove(id);
    }

    /// Sends writes: at once in an explicit transaction (locks are taken and
    /// duplicate keys reported by this statement), buffered until commit in
    /// an autocommit one.
    pub async fn write(&self, txn: &mut Txn, by_group: BTreeMap<ShardGroupId, Vec<Mutation>>) -> Result<()> {
        if !txn.explicit {
            for (group, mutations) in by_group {
                txn.pending.entry(group).or_default().extend(mutations);
            }
            return Ok(());
        }
        self.send_writes(txn, by_group).await?;
        self.touch(txn);
        Ok(())
    }

    /// Sends each group its writes, in parallel.
    async fn send_writes(&self, txn: &mut Txn, by_group: BTreeMap<ShardGroupId, Vec<Mutation>>) -> Result<()> {
        let mut sends = Vec::new();
        for (group, mutations) in by_group {
            let ctx = txn.context(group);
            txn.mark_written(group);
            let client = self.shards.get(group)?;
            sends.push(async move { client.write(&ctx, &mutations).await });
        }
        try_join_all(sends).await?;
        Ok(())
    }

    /// Commits: nothing to do without writes, one phase on a single writing
    /// group, two-phase commit across several.
    pub async fn commit(&self, txn: Txn) -> Result<()> {
        self.commit_with(txn, Vec::new()).await
    }

    /// Commits and durably records `extra` journal entries (an idempotency
    /// record) if and only if the transaction commits: they are written in
    /// the batch of the COMMIT decision, so a transaction with extras logs
    /// a decision even when it wrote to one group.
    pub async fn commit_with(&self, mut txn: Txn, extra: Vec<(String, Vec<u8>)>) -> Result<()> {
        match rules::commit_plan(&txn.groups(), &txn.writers(), !extra.is_empty()) {
            CommitPlan::Release { groups } => {
                abort_everywhere(&self.shards, &txn.plain_context(), groups.into_iter()).await;
                self.forget(&txn.id);
                if !extra.is_empty() {
                    self.log.journal().put_many(extra).await.map_err(|e| CoordError::Internal(format!("cannot write the commit record: {e}")))?;
                }
                Ok(())
            }
            CommitPlan::OnePhase { group } => self.commit_one_phase(&mut txn, group).await,
            CommitPlan::TwoPhase { writers } => self.commit_two_phase(txn, writers, extra).await,
        }
    }

    async fn commit_one_phase(&self, txn: &mut Txn, group: ShardGroupId) -> Result<()> {
        let started = std::time::Instant::now();
        let mutations = txn.pending.remove(&group).unwrap_or_default();
        let ctx = txn.context(group);
        let min_ts = self.read_timestamp().await?;
        // An unanswered COMMIT comes back as OutcomeUnknown (08007).
        let outcome = match self.shards.get(group)?.commit_one_phase(&ctx, &mutations, min_ts).await {
            // Reads that start after the client hears of the commit see it.
            Ok(commit_ts) => self.oracle.observe(commit_ts).await.map_err(|e| e.context("the commit applied, but its timestamp could not be recorded")),
            Err(e) => Err(e),
        };
        let release = rules::one_phase_release(&txn.groups(), group, outcome.is_ok());
        abort_everywhere(&self.shards, &ctx, release.into_iter()).await;
        self.forget(&txn.id);
        match &outcome {
            Ok(()) => {
                self.metrics.one_phase_committed.inc();
                self.metrics.one_phase_seconds.observe_duration(started.elapsed());
            }
            Err(CoordError::OutcomeUnknown(_) | CoordError::Internal(_)) => self.metrics.one_phase_unknown.inc(),
            Err(_) => self.metrics.one_phase_aborted.inc(),
        }
        outcome
    }

    #[tracing::instrument(skip_all, fields(txn = %txn.id, groups = ?writers))]
    async fn commit_two_phase(&self, mut txn: Txn, writers: Vec<ShardGroupId>, extra: Vec<(String, Vec<u8>)>) -> Result<()> {
        let started = std::time::Instant::now();
        self.set_state(&txn.id, TxnState::Preparing, &writers, Phase::Preparing);
        self.preparing.fetch_add(1, Ordering::Relaxed);
        let decided = self.prepare_and_decide(&mut txn, &writers, extra).await;
        self.preparing.fetch_sub(1, Ordering::Relaxed);
        let record = match decided {
            Ok(record) => record,
            Err(e) => {
                self.metrics.two_phase_aborted.inc();
                tracing::debug!(txn = %txn.id, error = %e, "aborted before the commit point");
                self.rollback(txn).await;
                return Err(e);
            }
        };
        // The commit point has passed: the outcome is COMMIT whatever happens next.
        failpoint::hit("coordinator.after_commit_logged").await;
        self.metrics.two_phase_committed.inc();
        self.set_state(&txn.id, TxnState::Committing, &writers, Phase::Prepared);
        let ctx = txn.plain_context();
        let delivery = self.background.spawn(tessera_model::trace::inherit(redrive::deliver(
            self.shards.clone(),
            self.registry.clone(),
            self.phase_two.clone(),
            record,
            txn.readers(),
            ctx,
        )));
        let _ = tokio::time::timeout(DELIVERY_WAIT, delivery).await;
        self.metrics.two_phase_seconds.observe_duration(started.elapsed());
        tracing::debug!(txn = %txn.id, "committed");
        Ok(())
    }

    /// Up to the commit point: PREPARE everywhere, choose the commit
    /// timestamp, then log the COMMIT decision with it. An error means the
    /// transaction must abort.
    async fn prepare_and_decide(&self, txn: &mut Txn, writers: &[ShardGroupId], extra: Vec<(String, Vec<u8>)>) -> Result<CommitRecord> {
        let prepared = self.prepare_all(txn, writers).await.map_err(|e| e.context("transaction aborted during PREPARE"))?;
        failpoint::hit("coordinator.after_prepare").await;
        let commit_ts = rules::commit_timestamp(self.read_timestamp().await?, prepared);
        self.oracle.observe(commit_ts).await.map_err(|e| e.context("transaction aborted: its commit timestamp could not be recorded"))?;
        let record = CommitRecord { txn_id: txn.id.clone(), timestamp: txn.timestamp, commit_ts, participants: writers.to_vec() };
        self.log.log_commit(record.clone(), extra).await.map_err(|e| e.context("transaction aborted: its COMMIT decision could not be logged"))?;
        Ok(record)
    }

    /// Sends buffered writes, then PREPARE, to every writer in parallel;
    /// returns the highest prepare timestamp.
    async fn prepare_all(&self, txn: &mut Txn, writers: &[ShardGroupId]) -> Result<u64> {
        let pending = std::mem::take(&mut txn.pending);
        self.send_writes(txn, pending).await?;
        let min_ts = self.read_timestamp().await?;
        let mut prepares = Vec::new();
        for group in writers {
            let ctx = TxnContext { begin: false, ..txn.context(*group) };
            let client = self.shards.get(*group)?;
            prepares.push(async move { client.prepare(&ctx, min_ts).await });
        }
        Ok(try_join_all(prepares).await?.into_iter().max().unwrap_or(min_ts))
    }

    /// Aborts the transaction on every group it touched and forgets it.
    pub async fn rollback(&self, mut txn: Txn) {
        self.release(&mut txn).await;
        self.forget(&txn.id);
    }

    /// Aborts the transaction on every group, releasing its locks, but keeps
    /// it registered (an explicit transaction in the failed state).
    /// Marks `txn` failed, as any error inside a transaction does: its
    /// locks go at once, and only ROLLBACK (or COMMIT, which rolls back)
    /// ends it.
    pub async fn fail(&self, txn: &mut Txn) {
        txn.failed = true;
        self.release(txn).await;
    }

    pub async fn release(&self, txn: &mut Txn) {
        txn.pending.clear();
        abort_everywhere(&self.shards, &txn.plain_context(), txn.groups().into_iter()).await;
    }

    /// The outcome of a transaction, for a participant that prepared it,
    /// and with COMMITTED its commit timestamp.
    pub fn outcome(&self, txn_id: &str) -> Result<(Outcome, u64)> {
        let logged = self.log.committed_at(txn_id).map_err(|e| e.context("cannot read the decision log"))?;
        Ok((rules::outcome(logged.is_some(), self.registry.lock().unwrap().contains_key(txn_id)), logged.unwrap_or(0)))
    }

    /// Transactions in flight and commits still being delivered.
    pub fn list(&self) -> Vec<TxnInfo> {
        let mut list: Vec<TxnInfo> = self.registry.lock().unwrap().values().cloned().collect();
        list.sort_by_key(|t| t.started);
        list
    }

    /// The journal the decision log is on.
    pub fn journal(&self) -> &Arc<Journal> {
        self.log.journal()
    }

    /// Transactions past their commit point whose COMMIT has not reached
    /// every participant yet (their participants hold them prepared).
    pub fn in_doubt(&self) -> usize {
        self.registry.lock().unwrap().values().filter(|t| t.state.is_committing()).count()
    }

    /// (decision log fsyncs, one-phase commits, two-phase commits)
    pub fn stats(&self) -> (u64, u64, u64) {
        (self.log.syncs(), self.metrics.one_phase_committed.get(), self.metrics.two_phase_committed.get())
    }
}
