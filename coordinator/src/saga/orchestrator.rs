//! The saga orchestrator: the durable saga log, the forward run, the
//! backward run of compensations, parking, and resuming after a restart.
//!
//! Each saga is one record in the coordinator's journal (`saga/<id>`),
//! rewritten whole and fsynced (group-committed with other sagas and 2PC
//! decisions) before each step or compensation runs; the write before a
//! step also carries the outcome of the one before it. The record is the
//! truth after a crash: a saga `running` resumes forward from its first
//! step not known done, one `compensating` resumes backward. A step or
//! compensation interrupted by the crash runs again, and its marker on the
//! shard makes the repeat harmless.

use super::rules::{self, Next};
use super::step::{self, CompensationOutcome, StepOutcome, StepTarget};
use super::{CompensationState, SagaRecord, SagaState, SagaStatement, StepRecord, StepState};
use crate::background::Background;
use crate::catalog::Catalog;
use crate::error::{CoordError, Result};
use crate::idempotency::SagaIdempotency;
use crate::plan::saga::StatementPlan;
use crate::shards::ShardPool;
use crate::txn::oracle::Oracle;
use crate::txn::Journal;
use rand::Rng;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tessera_model::clock::now_micros;
use tessera_model::txn::TxnContext;

const PREFIX: &str = "saga/";

fn key(id: &str) -> String {
    format!("{PREFIX}{id}")
}

/// Plans a logged saga statement again (when a saga is driven or resumed
/// after a restart). The SQL layer's planner is passed in, so the
/// orchestrator does not depend on the SQL layer.
pub type Planner = fn(&Catalog, &SagaStatement) -> Result<StatementPlan>;

/// Retry budgets and backoff.
#[derive(Debug, Clone)]
pub struct SagaConfig {
    /// Attempts of a step that fails for a passing reason (lock conflict,
    /// unreachable shard) before the saga rolls back.
    pub step_attempts: u32,
    /// Attempts of a compensation before the saga is parked.
    pub compensation_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Finished sagas kept for SHOW SAGA.
    pub retained: usize,
}

impl Default for SagaConfig {
    fn default() -> Self {
        SagaConfig { step_attempts: 5, compensation_attempts: 8, backoff_base: Duration::from_millis(50), backoff_max: Duration::from_secs(2), retained: 1000 }
    }
}

/// Counters for the cluster status and the bench.
#[derive(Debug, Default, Clone, Copy)]
pub struct SagaStats {
    pub committed: u64,
    pub rolled_back: u64,
    pub compensations: u64,
    pub parked: u64,
}

#[derive(Default)]
struct Counters {
    committed: AtomicU64,
    rolled_back: AtomicU64,
    compensations: AtomicU64,
    parked: AtomicU64,
    /// From a saga's start to its end, as its client waits.
    duration: tessera_model::metrics::Histogram,
}

pub struct Sagas {
    catalog: Arc<Catalog>,
    shards: Arc<ShardPool>,
    journal: Arc<Journal>,
    address: String,
    config: SagaConfig,
    planner: Planner,
    records: Mutex<HashMap<String, SagaRecord>>,
    /// Finished sagas in the order they finished (oldest are forgotten).
    finished: Mutex<VecDeque<String>>,
    /// Sagas with a driver task running.
    driving: Mutex<HashSet<String>>,
    /// Sagas that may write to the journal soon (its group-commit gauge).
    in_flight: Arc<AtomicUsize>,
    last_timestamp: AtomicU64,
    oracle: Arc<Oracle>,
    counters: Counters,
    background: Background,
}

/// A saga whose driver stopped with the coordinator: its outcome is not
/// known yet, and a restarted coordinator finishes it from the log.
fn stopping(id: &str) -> CoordError {
    CoordError::OutcomeUnknown(format!("saga {id}: the coordinator is shutting down; the saga finishes from its log when the coordinator restarts"))
}

/// The one driver slot of a saga: taken before anything changes the saga,
/// released (with the in-flight gauge) when the drive ends.
struct Driving {
    sagas: Arc<Sagas>,
    id: String,
}

impl Drop for Driving {
    fn drop(&mut self) {
        self.sagas.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.sagas.driving.lock().unwrap().remove(&self.id);
    }
}

impl Sagas {
    /// Loads the saga log and resumes every unfinished saga in the
    /// background. `in_flight` is the journal's group-commit gauge.
    #[allow(clippy::too_many_arguments)] // collaborators, passed once by server.rs
    pub fn start(
        catalog: Arc<Catalog>,
        shards: Arc<ShardPool>,
        journal: Arc<Journal>,
        oracle: Arc<Oracle>,
        in_flight: Arc<AtomicUsize>,
        address: String,
        config: SagaConfig,
        planner: Planner,
        background: &Background,
    ) -> Result<Arc<Sagas>> {
        let mut loaded: Vec<SagaRecord> = Vec::new();
        for (k, v) in journal.scan_prefix(PREFIX).map_err(|e| e.context("cannot read the saga log"))? {
            loaded.push(serde_json::from_slice(&v).map_err(|e| CoordError::Internal(format!("corrupt saga record {k}: {e}")))?);
        }
        let mut finished: Vec<&SagaRecord> = loaded.iter().filter(|r| r.state.is_finished()).collect();
        finished.sort_by_key(|r| r.finished_us);
        let finished: VecDeque<String> = finished.into_iter().map(|r| r.id.clone()).collect();
        let resume: Vec<String> = loaded.iter().filter(|r| matches!(r.state, SagaState::Running | SagaState::Compensating)).map(|r| r.id.clone()).collect();
        let sagas = Arc::new(Sagas {
            catalog,
            shards,
            journal,
            address,
            config,
            planner,
            records: Mutex::new(loaded.into_iter().map(|r| (r.id.clone(), r)).collect()),
            finished: Mutex::new(finished),
            driving: Mutex::default(),
            in_flight,
            last_timestamp: AtomicU64::new(0),
            oracle,
            counters: Counters::default(),
            background: background.clone(),
        });
        for id in resume {
            tracing::info!(saga = %id, "resuming an unfinished saga from the log");
            if let Some(slot) = sagas.reserve(&id) {
                sagas.background.spawn_until_stopped(async move { slot.sagas.clone().drive(slot, true).await });
            }
        }
        Ok(sagas)
    }

    /// Takes the saga's driver slot; `None` when a driver already has it.
    fn reserve(self: &Arc<Self>, id: &str) -> Option<Driving> {
        if !self.driving.lock().unwrap().insert(id.to_string()) {
            return None;
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Driving { sagas: self.clone(), id: id.to_string() })
    }

    fn timestamp(&self) -> u64 {
        let now = now_micros();
        let next = |last: u64| now.max(last + 1);
        next(self.last_timestamp.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(next(last))).expect("always Some"))
    }

    /// Logs a new saga, runs it to its end (committed, rolled back or
    /// parked) and returns its record. The run goes on if the caller leaves.
    pub async fn run(self: &Arc<Self>, statements: Vec<SagaStatement>, plans: &[StatementPlan], idempotency: Option<SagaIdempotency>) -> Result<SagaRecord> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
        let mut steps = Vec::new();
        for (i, plan) in plans.iter().enumerate() {
            for group in plan.write.groups() {
                steps.push(StepRecord {
                    id: format!("{id}.{}", steps.len() + 1),
                    statement: i,
                    group,
                    state: StepState::Pending,
                    rows: 0,
                    attempts: 0,
                    started_us: None,
                    finished_us: None,
                    error: None,
                    compensation: plan.describe_compensation(),
                    comp_state: CompensationState::None,
                    comp_attempts: 0,
                    comp_started_us: None,
                    comp_finished_us: None,
                    comp_error: None,
                });
            }
        }
        let record = SagaRecord {
            id: id.clone(),
            timestamp: self.timestamp(),
            started_us: now_micros(),
            finished_us: None,
            state: SagaState::Running,
            reason: None,
            cause_sqlstate: None,
            epoch: 0,
            statements,
            steps,
            idempotency,
        };
        self.records.lock().unwrap().insert(id.clone(), record);
        let slot = self.reserve(&id).expect("a new saga has no driver");
        let sagas = self.clone();
        let started = std::time::Instant::now();
        let driver = self.background.spawn_until_stopped(tessera_model::trace::inherit(async move { sagas.drive(slot, false).await }));
        let outcome = driver.await.map_err(|e| CoordError::Internal(format!("saga task failed: {e}")))?.unwrap_or_else(|| Err(stopping(&id)));
        self.counters.duration.observe_duration(started.elapsed());
        if outcome.is_err() && self.journal.get(&key(&id)).ok().flatten().is_none() {
            // Never logged (the first log write failed): nothing ran, and
            // nothing may resume it later.
            self.records.lock().unwrap().remove(&id);
        }
        outcome
    }

    /// Parks → compensating again with a fresh retry budget, then drives
    /// the saga to its end. Also restarts a saga whose driver stopped.
    pub async fn resume(self: &Arc<Self>, id: &str) -> Result<SagaRecord> {
        let id = self.get(id)?.id;
        let Some(slot) = self.reserve(&id) else {
            return Err(CoordError::Invalid(format!("saga {id} is {} and its driver is still running", self.get(&id)?.state.name())));
        };
        let record = self.get(&id)?;
        match record.state {
            SagaState::Committed | SagaState::RolledBack => {
                return Err(CoordError::Invalid(format!("saga {id} is {}; there is nothing to resume", record.state.name())))
            }
            SagaState::NeedsOperator => {
                let resumed = self.update(&id, |r| {
                    r.state = SagaState::Compensating;
                    for s in r.steps.iter_mut().filter(|s| s.comp_state == CompensationState::Failing) {
                        s.comp_state = CompensationState::Compensating;
                    }
                });
                if let Err(e) = self.persist(&resumed).await {
                    self.update(&id, |r| *r = record.clone());
                    return Err(e);
                }
            }
            SagaState::Running | SagaState::Compensating => {}
        }
        tracing::info!(saga = %id, "resuming a saga on an operator's request");
        let sagas = self.clone();
        let driver = self.background.spawn_until_stopped(tessera_model::trace::inherit(async move { sagas.drive(slot, true).await }));
        driver.await.map_err(|e| CoordError::Internal(format!("saga task failed: {e}")))?.unwrap_or_else(|| Err(stopping(&id)))
    }

    /// The unfinished saga (running, compensating or parked) started by a
    /// request with this idempotency key; the same key with another
    /// request is refused.
    pub fn unfinished_with_key(&self, key: &crate::idempotency::IdempotencyKey) -> Result<Option<SagaRecord>> {
        let records = self.records.lock().unwrap();
        let found =
            records.values().find(|r| !r.state.is_finished() && r.idempotency.as_ref().is_some_and(|i| i.key.key == key.key && i.key.owner == key.owner));
        if let Some(idem) = found.and_then(|r| r.idempotency.as_ref()) {
            key.check_fingerprint(&idem.key.fingerprint)?;
        }
        Ok(found.cloned())
    }

    /// Waits until the saga has finished or parked; its record then. A
    /// saga that nothing drives any more fails the wait.
    pub async fn wait(&self, id: &str) -> Result<SagaRecord> {
        loop {
            let record = self.get(id)?;
            if !matches!(record.state, SagaState::Running | SagaState::Compensating) {
                return Ok(record);
            }
            if !self.driving.lock().unwrap().contains(id) {
                return Err(CoordError::Internal(format!("saga {id} is {} but nothing drives it; RESUME SAGA {id}", record.state.name())));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn get(&self, id: &str) -> Result<SagaRecord> {
        let id = id.trim().trim_matches('\'');
        self.records
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| CoordError::NoData(format!("saga \"{id}\" does not exist (or finished long ago and was forgotten)")))
    }

    /// Every remembered saga, oldest first.
    pub fn list(&self) -> Vec<SagaRecord> {
        let mut list: Vec<SagaRecord> = self.records.lock().unwrap().values().cloned().collect();
        list.sort_by_key(|r| r.started_us);
        list
    }

    /// How long sagas took, start to end, as their clients waited.
    pub fn durations(&self) -> &tessera_model::metrics::Histogram {
        &self.counters.duration
    }

    pub fn stats(&self) -> SagaStats {
        let c = &self.counters;
        SagaStats {
            committed: c.committed.load(Ordering::Relaxed),
            rolled_back: c.rolled_back.load(Ordering::Relaxed),
            compensations: c.compensations.load(Ordering::Relaxed),
            parked: c.parked.load(Ordering::Relaxed),
        }
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut SagaRecord)) -> SagaRecord {
        let mut records = self.records.lock().unwrap();
        let record = records.get_mut(id).expect("a driven saga is registered");
        f(record);
        record.clone()
    }

    async fn persist(&self, record: &SagaRecord) -> Result<()> {
        let bytes = serde_json::to_vec(record).expect("saga records serialize");
        self.journal.put(key(&record.id), bytes).await.map_err(|e| e.context(&format!("saga {}: cannot write the saga log", record.id)))
    }

    /// Runs the saga from where its record says until it finishes or parks.
    async fn drive(self: Arc<Self>, slot: Driving, resumed: bool) -> Result<SagaRecord> {
        let id = slot.id.clone();
        let record = self.get(&id)?;
        if resumed {
            self.fence_stale_attempts(&record).await;
            self.update(&id, |r| r.epoch += 1);
        }
        let plans: Vec<Result<StatementPlan>> = record.statements.iter().map(|s| (self.planner)(&self.catalog, s)).collect();
        loop {
            let record = self.get(&id)?;
            match rules::next(&record) {
                Next::Step(i) => self.forward(&record, i, &plans[record.steps[i].statement]).await?,
                Next::Compensate(i) => {
                    if !self.backward(&record, i, &plans[record.steps[i].statement]).await? {
                        return self.finish(&id, SagaState::NeedsOperator).await;
                    }
                }
                Next::Finish(state) => return self.finish(&id, state).await,
                Next::Stop => return Ok(record),
            }
        }
    }

    /// After a restart, aborts the local transactions the interrupted step
    /// or compensation may have left open, so their locks go at once.
    async fn fence_stale_attempts(&self, record: &SagaRecord) {
        for s in &record.steps {
            let mut ids = Vec::new();
            if matches!(s.state, StepState::Running | StepState::Failed) {
                ids.extend((1..=s.attempts + self.config.step_attempts).map(|n| attempt_id(&s.id, record.epoch, 's', n)));
            }
            if matches!(s.comp_state, CompensationState::Compensating | CompensationState::Failing) {
                ids.extend((1..=s.comp_attempts + self.config.compensation_attempts).map(|n| attempt_id(&s.id, record.epoch, 'c', n)));
            }
            self.abort_attempts(record, s.group, ids).await;
        }
    }

    /// Aborts local transactions by id on a group (best effort: an unknown
    /// id is a no-op on the shard).
    async fn abort_attempts(&self, record: &SagaRecord, group: crate::catalog::ShardGroupId, ids: Vec<String>) {
        let Ok(client) = self.shards.get(group) else { return };
        for txn in ids {
            let ctx = TxnContext { id: txn, timestamp: record.timestamp, begin: false, coordinator: self.address.clone() };
            let _ = client.abort(&ctx).await;
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let (least, most) = rules::backoff_range(self.config.backoff_base, self.config.backoff_max, attempt);
        Duration::from_micros(rand::thread_rng().gen_range(least.as_micros() as u64..=most.as_micros() as u64))
    }

    fn context(&self, record: &SagaRecord, txn_id: String) -> TxnContext {
        TxnContext { id: txn_id, timestamp: record.timestamp, begin: true, coordinator: self.address.clone() }
    }

    /// Runs step `i`; on a lasting failure turns the saga to compensating.
    async fn forward(&self, record: &SagaRecord, i: usize, plan: &Result<StatementPlan>) -> Result<()> {
        let id = &record.id;
        // The first attempt is counted in the log write before it, so an
        // attempt cut short by a crash still shows after the restart.
        let logged = self.update(id, |r| {
            let s = &mut r.steps[i];
            s.state = StepState::Running;
            s.attempts += 1;
            s.started_us.get_or_insert_with(now_micros);
        });
        self.persist(&logged).await?;
        let step = &logged.steps[i];
        let mut tries = 0;
        let failure = loop {
            tries += 1;
            let attempt = if tries == 1 { logged.steps[i].attempts } else { self.update(id, |r| r.steps[i].attempts += 1).steps[i].attempts };
            let outcome = match plan {
                Ok(plan) => {
                    let mut target = StepTarget {
                        shards: &self.shards,
                        oracle: &self.oracle,
                        group: step.group,
                        step_id: &step.id,
                        ctx: self.context(&logged, attempt_id(&step.id, logged.epoch, 's', attempt)),
                    };
                    step::run_step(&mut target, plan).await
                }
                Err(e) => Err(e.clone()),
            };
            match outcome {
                Ok(StepOutcome::Applied(rows) | StepOutcome::AlreadyApplied(rows)) => {
                    self.update(id, |r| {
                        let s = &mut r.steps[i];
                        s.state = StepState::Done;
                        s.rows = rows;
                        s.error = None;
                        s.finished_us = Some(now_micros());
                    });
                    return Ok(());
                }
                Err(e) if rules::retry_step(&e, tries, self.config.step_attempts) => {
                    tracing::debug!(saga = %id, step = %step.id, error = %e, "saga step failed; retrying");
                    self.update(id, |r| r.steps[i].error = Some(e.to_string()));
                    tokio::time::sleep(self.backoff(tries)).await;
                }
                Err(e) => break e,
            }
        };
        tracing::info!(saga = %id, step = %step.id, error = %failure, "saga step failed; compensating");
        let statement = &logged.statements[step.statement].sql;
        self.update(id, |r| {
            let s = &mut r.steps[i];
            s.state = StepState::Failed;
            s.error = Some(failure.to_string());
            s.finished_us = Some(now_micros());
            r.state = SagaState::Compensating;
            r.reason = Some(format!("step {} ({} on shard group {}) failed: {failure}", i + 1, short(statement), step.group));
            r.cause_sqlstate = Some(failure.sqlstate().to_string());
        });
        Ok(())
    }

    /// Runs the compensation of step `i`; false when its budget ran out.
    async fn backward(&self, record: &SagaRecord, i: usize, plan: &Result<StatementPlan>) -> Result<bool> {
        let id = &record.id;
        let logged = self.update(id, |r| {
            let s = &mut r.steps[i];
            s.comp_state = CompensationState::Compensating;
            s.comp_attempts += 1;
            s.comp_started_us.get_or_insert_with(now_micros);
        });
        self.persist(&logged).await?;
        let step = &logged.steps[i];
        if step.state != StepState::Done {
            // An attempt of the step that failed may still be open on the
            // shard (its abort was lost with the connection), holding the
            // marker's lock against this compensation.
            let ids = (1..=step.attempts).map(|n| attempt_id(&step.id, logged.epoch, 's', n)).collect();
            self.abort_attempts(&logged, step.group, ids).await;
        }
        let mut tries = 0;
        loop {
            tries += 1;
            let attempt = if tries == 1 { logged.steps[i].comp_attempts } else { self.update(id, |r| r.steps[i].comp_attempts += 1).steps[i].comp_attempts };
            let outcome = match plan {
                Ok(plan) => {
                    let mut target = StepTarget {
                        shards: &self.shards,
                        oracle: &self.oracle,
                        group: step.group,
                        step_id: &step.id,
                        ctx: self.context(&logged, attempt_id(&step.id, logged.epoch, 'c', attempt)),
                    };
                    step::compensate(&mut target, plan).await
                }
                Err(e) => Err(e.clone()),
            };
            match outcome {
                Ok(outcome) => {
                    let state = match outcome {
                        CompensationOutcome::NothingToUndo => CompensationState::NothingToUndo,
                        CompensationOutcome::Undone(_) | CompensationOutcome::AlreadyCompensated => CompensationState::Compensated,
                    };
                    if let CompensationOutcome::Undone(_) = outcome {
                        self.counters.compensations.fetch_add(1, Ordering::Relaxed);
                    }
                    self.update(id, |r| {
                        let s = &mut r.steps[i];
                        s.comp_state = state;
                        s.comp_error = None;
                        s.comp_finished_us = Some(now_micros());
                    });
                    return Ok(true);
                }
                Err(e) if rules::retry_compensation(tries, self.config.compensation_attempts) => {
                    tracing::info!(saga = %id, step = %step.id, attempt, error = %e, "compensation failed; retrying");
                    self.update(id, |r| r.steps[i].comp_error = Some(e.to_string()));
                    tokio::time::sleep(self.backoff(tries)).await;
                }
                Err(e) => {
                    tracing::warn!(saga = %id, step = %step.id, attempts = attempt, error = %e, "compensation keeps failing; parking the saga for an operator");
                    self.update(id, |r| {
                        let s = &mut r.steps[i];
                        s.comp_state = CompensationState::Failing;
                        s.comp_error = Some(e.to_string());
                        r.reason = Some(format!("the compensation of step {} on shard group {} failed {tries} times: {e}", i + 1, step.group));
                    });
                    return Ok(false);
                }
            }
        }
    }

    async fn finish(&self, id: &str, state: SagaState) -> Result<SagaRecord> {
        // Durable first, then visible: whoever sees the final state may
        // answer from it.
        let mut record = self.get(id)?;
        record.state = state;
        if state.is_finished() {
            record.finished_us = Some(now_micros());
        }
        // A keyed saga's outcome is written with its final state.
        let mut entries = vec![(key(&record.id), serde_json::to_vec(&record).expect("saga records serialize"))];
        entries.extend(super::outcome::for_finished_saga(&record));
        self.journal.put_many(entries).await.map_err(|e| e.context(&format!("saga {}: cannot write the saga log", record.id)))?;
        self.update(id, |r| *r = record.clone());
        let counter = match state {
            SagaState::Committed => &self.counters.committed,
            SagaState::RolledBack => &self.counters.rolled_back,
            _ => &self.counters.parked,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if state.is_finished() {
            let evicted = {
                let mut finished = self.finished.lock().unwrap();
                finished.push_back(id.to_string());
                let mut evicted = Vec::new();
                while finished.len() > self.config.retained {
                    evicted.extend(finished.pop_front());
                }
                evicted
            };
            for old in evicted {
                self.records.lock().unwrap().remove(&old);
                self.journal.delete(key(&old));
            }
        }
        Ok(record)
    }
}

/// The local transaction id of one attempt: step or compensation (`kind`).
fn attempt_id(step_id: &str, epoch: u32, kind: char, attempt: u32) -> String {
    format!("{step_id}/{epoch}{kind}{attempt}")
}

/// The first line of a statement, cut to a readable length.
pub fn short(sql: &str) -> String {
    let line = sql.lines().next().unwrap_or("").trim();
    if line.chars().count() > 60 {
        format!("{}...", line.chars().take(57).collect::<String>())
    } else {
        line.to_string()
    }
}
