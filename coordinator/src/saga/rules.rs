//! The saga orchestrator's rules as plain functions of the saga record and
//! what an attempt returned. The orchestrator ([`super::orchestrator`])
//! writes the log, calls the shards and sleeps; these decide. Each rule has
//! a unit test below.
//!
//! - **Next action.** A running saga runs its first step not done, and
//!   commits when every step is done. A compensating saga compensates the
//!   last step that started and whose compensation has not finished (so
//!   compensations run in reverse order, and a step that never started has
//!   nothing to undo); when none is left it has rolled back. A saga in any
//!   other state has nothing to do.
//! - **Step retries.** A step that fails for a passing reason (a lock
//!   conflict, an unreachable shard, an unanswered COMMIT, whose marker makes
//!   a repeat harmless) is tried again until its attempts run out; any other
//!   failure, or the last attempt's, turns the saga to compensating.
//! - **Compensation retries.** A compensation is tried again on any failure
//!   until its attempts run out; then the saga is parked for an operator.
//! - **Backoff.** The wait before attempt `n + 1` is half to all of
//!   `base * 2^(n-1)`, capped at `max`.

use super::{SagaRecord, SagaState, StepState};
use crate::error::CoordError;
use std::time::Duration;

/// What a saga does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Run step `i`.
    Step(usize),
    /// Compensate step `i`.
    Compensate(usize),
    /// End in this state.
    Finish(SagaState),
    /// Nothing: the saga has finished or is parked.
    Stop,
}

/// The next action of `record`.
pub fn next(record: &SagaRecord) -> Next {
    match record.state {
        SagaState::Running => match record.steps.iter().position(|s| s.state != StepState::Done) {
            Some(i) => Next::Step(i),
            None => Next::Finish(SagaState::Committed),
        },
        SagaState::Compensating => match record.steps.iter().rposition(|s| s.started() && !s.compensation_finished()) {
            Some(i) => Next::Compensate(i),
            None => Next::Finish(SagaState::RolledBack),
        },
        _ => Next::Stop,
    }
}

/// Whether a step's failure is worth another attempt: it may pass, and the
/// marker on the shard makes a repeat harmless.
pub fn passing(e: &CoordError) -> bool {
    matches!(e, CoordError::Serialization(_) | CoordError::ShardUnavailable(_) | CoordError::TxnAborted(_) | CoordError::OutcomeUnknown(_))
}

/// After attempt `tries` of a step failed with `e`: try again?
pub fn retry_step(e: &CoordError, tries: u32, attempts: u32) -> bool {
    passing(e) && tries < attempts
}

/// After attempt `tries` of a compensation failed: try again (or park)?
pub fn retry_compensation(tries: u32, attempts: u32) -> bool {
    tries < attempts
}

/// The range the wait after attempt `attempt` is drawn from.
pub fn backoff_range(base: Duration, max: Duration, attempt: u32) -> (Duration, Duration) {
    let full = base.saturating_mul(1 << attempt.saturating_sub(1).min(16)).min(max);
    let half = Duration::from_micros(full.as_micros() as u64 / 2);
    (half, half * 2)
}

#[cfg(test)]
mod tests {
    use super::super::{CompensationState, StepRecord};
    use super::*;

    fn saga(state: SagaState, steps: &[(StepState, CompensationState)]) -> SagaRecord {
        let step = |n: usize, state: StepState, comp_state: CompensationState| StepRecord {
            id: format!("s-{n}"),
            statement: 0,
            group: 1,
            state,
            rows: 0,
            attempts: 0,
            started_us: None,
            finished_us: None,
            error: None,
            compensation: String::new(),
            comp_state,
            comp_attempts: 0,
            comp_started_us: None,
            comp_finished_us: None,
            comp_error: None,
        };
        SagaRecord {
            id: "s".into(),
            timestamp: 1,
            started_us: 0,
            finished_us: None,
            state,
            reason: None,
            cause_sqlstate: None,
            epoch: 0,
            statements: Vec::new(),
            steps: steps.iter().enumerate().map(|(n, (s, c))| step(n, *s, *c)).collect(),
            idempotency: None,
        }
    }

    use CompensationState as C;
    use StepState as S;

    #[test]
    fn a_running_saga_runs_its_first_step_not_done_then_commits() {
        assert_eq!(next(&saga(SagaState::Running, &[(S::Pending, C::None), (S::Pending, C::None)])), Next::Step(0));
        assert_eq!(next(&saga(SagaState::Running, &[(S::Done, C::None), (S::Running, C::None)])), Next::Step(1));
        assert_eq!(next(&saga(SagaState::Running, &[(S::Done, C::None), (S::Done, C::None)])), Next::Finish(SagaState::Committed));
    }

    #[test]
    fn compensations_run_in_reverse_over_started_steps_then_the_saga_rolls_back() {
        let failing_third = [(S::Done, C::None), (S::Done, C::None), (S::Failed, C::None), (S::Pending, C::None)];
        // The failed step may have left changes (an unanswered COMMIT): it is compensated first.
        assert_eq!(next(&saga(SagaState::Compensating, &failing_third)), Next::Compensate(2));
        let second = [(S::Done, C::None), (S::Done, C::None), (S::Failed, C::NothingToUndo), (S::Pending, C::None)];
        assert_eq!(next(&saga(SagaState::Compensating, &second)), Next::Compensate(1));
        let interrupted = [(S::Done, C::None), (S::Done, C::Compensating), (S::Failed, C::Compensated)];
        assert_eq!(next(&saga(SagaState::Compensating, &interrupted)), Next::Compensate(1), "a compensation cut short runs again");
        let done = [(S::Done, C::Compensated), (S::Done, C::Compensated), (S::Failed, C::NothingToUndo), (S::Pending, C::None)];
        assert_eq!(next(&saga(SagaState::Compensating, &done)), Next::Finish(SagaState::RolledBack));
    }

    #[test]
    fn finished_and_parked_sagas_do_nothing() {
        for state in [SagaState::Committed, SagaState::RolledBack, SagaState::NeedsOperator] {
            assert_eq!(next(&saga(state, &[(S::Done, C::Failing)])), Next::Stop, "{state:?}");
        }
    }

    #[test]
    fn only_passing_failures_retry_a_step_within_its_budget() {
        let conflict = CoordError::Serialization("lock conflict".into());
        let check = CoordError::CheckViolation("balance".into());
        assert!(retry_step(&conflict, 1, 3));
        assert!(!retry_step(&conflict, 3, 3));
        assert!(!retry_step(&check, 1, 3));
        assert!(passing(&CoordError::OutcomeUnknown("no answer".into())));
        assert!(passing(&CoordError::ShardUnavailable("down".into())));
    }

    #[test]
    fn compensations_retry_on_any_failure_until_parked() {
        assert!(retry_compensation(1, 5));
        assert!(retry_compensation(4, 5));
        assert!(!retry_compensation(5, 5));
    }

    #[test]
    fn backoff_doubles_from_base_to_the_cap_with_up_to_half_jitter() {
        let (base, max) = (Duration::from_millis(10), Duration::from_millis(200));
        assert_eq!(backoff_range(base, max, 1), (Duration::from_millis(5), Duration::from_millis(10)));
        assert_eq!(backoff_range(base, max, 3), (Duration::from_millis(20), Duration::from_millis(40)));
        assert_eq!(backoff_range(base, max, 30), (Duration::from_millis(100), Duration::from_millis(200)));
    }
}
