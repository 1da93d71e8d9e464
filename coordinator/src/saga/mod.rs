//! Orchestrated sagas: a transaction run as a chain of local transactions,
//! each undone by a compensation if a later one fails.
//!
//! - [`crate::sql::saga`] plans statements as steps (one per shard group a
//!   statement touches) and derives how each step is compensated (INSERT ->
//!   DELETE, `col = col ± e` -> the opposite delta, DELETE -> re-insert, SET
//!   to a constant -> restore if unchanged) unless `COMPENSATE WITH` gives
//!   it; the plans are [`crate::plan::saga`].
//! - [`step`]: running one step or compensation as a one-phase local
//!   transaction on its shard, with the step's marker row written in the
//!   same transaction (idempotence, empty compensations, hanging steps).
//! - [`orchestrator`]: the saga log, the forward and backward runs with
//!   retries, parking, resuming after a restart, and the timelines.
//! - [`rules`]: what the orchestrator does next and when it retries, as
//!   plain functions with a unit test each.
//! - [`outcome`]: how a saga's end reaches its caller and its idempotency
//!   key.
//!
//! The essay is docs/architecture/sagas.md.

pub mod orchestrator;
pub mod outcome;
pub mod rules;
pub mod step;

pub use orchestrator::{SagaConfig, Sagas};

use crate::catalog::ShardGroupId;
use serde::{Deserialize, Serialize};

/// A statement of a saga as the log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaStatement {
    pub sql: String,
    /// The explicit compensation (`COMPENSATE WITH ...`), if any.
    pub compensation: Option<String>,
    /// The id of the table written when the saga was planned.
    #[serde(default)]
    pub table_id: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaState {
    Running,
    Compensating,
    Committed,
    RolledBack,
    NeedsOperator,
}

impl SagaState {
    pub fn name(self) -> &'static str {
        match self {
            SagaState::Running => "running",
            SagaState::Compensating => "compensating",
            SagaState::Committed => "committed",
            SagaState::RolledBack => "rolled_back",
            SagaState::NeedsOperator => "needs_operator",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, SagaState::Committed | SagaState::RolledBack)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompensationState {
    None,
    Compensating,
    Compensated,
    /// The step had not run: the compensation only fenced it out.
    NothingToUndo,
    /// Attempts failed; the saga is parked until an operator resumes it.
    Failing,
}

impl StepState {
    pub fn name(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Done => "done",
            StepState::Failed => "failed",
        }
    }
}

impl CompensationState {
    pub fn name(self) -> &'static str {
        match self {
            CompensationState::None => "none",
            CompensationState::Compensating => "compensating",
            CompensationState::Compensated => "compensated",
            CompensationState::NothingToUndo => "nothing_to_undo",
            CompensationState::Failing => "failing",
        }
    }
}

/// One step: the part of a statement that runs on one shard group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// `<saga id>.<number>`: also the key of the step's marker on the shard.
    pub id: String,
    pub statement: usize,
    pub group: ShardGroupId,
    pub state: StepState,
    pub rows: u64,
    pub attempts: u32,
    pub started_us: Option<u64>,
    pub finished_us: Option<u64>,
    pub error: Option<String>,
    /// What undoes the step, in words.
    pub compensation: String,
    pub comp_state: CompensationState,
    pub comp_attempts: u32,
    pub comp_started_us: Option<u64>,
    pub comp_finished_us: Option<u64>,
    pub comp_error: Option<String>,
}

impl StepRecord {
    /// A step that may have run and so must be compensated when the saga
    /// rolls back (a failed or interrupted step may still have committed,
    /// or arrive late; its compensation then fences it out).
    pub fn started(&self) -> bool {
        self.state != StepState::Pending
    }

    pub fn compensation_finished(&self) -> bool {
        matches!(self.comp_state, CompensationState::Compensated | CompensationState::NothingToUndo)
    }
}

/// A saga as the log keeps it; rewritten whole at each transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaRecord {
    pub id: String,
    /// Start timestamp for lock ordering (wound-wait) on the shards.
    pub timestamp: u64,
    pub started_us: u64,
    pub finished_us: Option<u64>,
    pub state: SagaState,
    pub reason: Option<String>,
    /// SQLSTATE of the step failure that made the saga roll back.
    #[serde(default)]
    pub cause_sqlstate: Option<String>,
    /// Raised each time a driver takes the saga up again after a restart or
    /// a park; part of the local transaction ids, so the ids of attempts a
    /// crashed driver may have left open can be aborted without reuse.
    #[serde(default)]
    pub epoch: u32,
    pub statements: Vec<SagaStatement>,
    pub steps: Vec<StepRecord>,
    /// The idempotency key of the request that started the saga; its
    /// outcome is recorded with the saga's final state.
    #[serde(default)]
    pub idempotency: Option<crate::idempotency::SagaIdempotency>,
}

impl SagaRecord {
    /// "2/2 done", "1 compensated", ...
    pub fn progress(&self) -> String {
        let done = self.steps.iter().filter(|s| s.state == StepState::Done).count();
        let compensated = self.steps.iter().filter(|s| s.comp_state == CompensationState::Compensated).count();
        match self.state {
            SagaState::Running | SagaState::Committed => format!("{done}/{} steps done", self.steps.len()),
            _ => format!("{done}/{} steps done, {compensated} compensated", self.steps.len()),
        }
    }
}
