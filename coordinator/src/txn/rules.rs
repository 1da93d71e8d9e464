//! The 2PC coordinator's rules as plain functions of what it knows. The
//! manager ([`super::manager`]) and phase two ([`super::redrive`]) call the
//! shards, the decision log and the clock, and do what these return. Each
//! rule has a unit test below.
//!
//! - **Commit plan.** A transaction that wrote nothing releases the groups
//!   it read (an abort that only drops locks) and records its journal
//!   entries, if it has any, alone. One writing group and no journal
//!   entries: one-phase commit there. Otherwise two-phase commit over the
//!   writers; the groups it only read are released after the decision.
//! - **One-phase release.** After a one-phase commit the other groups are
//!   released; after one that failed (or whose answer never came), every
//!   group is, the writer included.
//! - **Presumed abort.** A participant asking about a prepared transaction
//!   hears COMMITTED if the decision is in the log, IN PROGRESS while the
//!   coordinator still holds the transaction, and ABORTED otherwise.
//! - **Delivery.** After a COMMIT round, a transaction whose participants
//!   all acknowledged is `committed, syncing` with every participant
//!   committed; otherwise it is `committed, delivering`, and the groups that
//!   did not acknowledge are still prepared and get COMMIT again.
//! - **Settling.** A decision is forgotten only when every participant has
//!   synced its WAL in the epoch it acknowledged COMMIT in. A participant
//!   that synced in another epoch (its group failed over since, and the lazy
//!   commit may have died with the old primary) gets COMMIT again; one that
//!   did not sync is waited for.
//! - **Backoff.** Redelivery waits double from [`FIRST_BACKOFF`] up to
//!   [`MAX_BACKOFF`], plus up to half as much again of jitter, and start
//!   over once the loop has been idle.

use super::registry::{Phase, TxnState};
use crate::catalog::ShardGroupId;
use std::collections::BTreeMap;
use std::time::Duration;

pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The answer to a participant asking about a prepared transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Committed,
    Aborted,
    InProgress,
}

/// How a transaction commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitPlan {
    /// Nothing written: release `groups`; record the journal entries alone.
    Release { groups: Vec<ShardGroupId> },
    /// One writer, no journal entries.
    OnePhase { group: ShardGroupId },
    /// Several writers (or journal entries to record with the decision).
    TwoPhase { writers: Vec<ShardGroupId> },
}

/// The commit plan for a transaction that touched `touched` and wrote to
/// `writers`, with or without journal entries to record.
pub fn commit_plan(touched: &[ShardGroupId], writers: &[ShardGroupId], journal_entries: bool) -> CommitPlan {
    match writers {
        [] => CommitPlan::Release { groups: touched.to_vec() },
        [group] if !journal_entries => CommitPlan::OnePhase { group: *group },
        _ => CommitPlan::TwoPhase { writers: writers.to_vec() },
    }
}

/// The groups released after a one-phase commit on `writer`.
pub fn one_phase_release(touched: &[ShardGroupId], writer: ShardGroupId, committed: bool) -> Vec<ShardGroupId> {
    touched.iter().copied().filter(|g| *g != writer || !committed).collect()
}

/// The answer to a participant asking about a prepared transaction.
/// The commit timestamp of a two-phase commit: a fresh timestamp taken
/// after every participant prepared, raised to the highest prepare
/// timestamp (each participant promised to commit at or above its own).
pub fn commit_timestamp(fresh: u64, highest_prepare_ts: u64) -> u64 {
    fresh.max(highest_prepare_ts)
}

pub fn outcome(decision_logged: bool, still_held: bool) -> Outcome {
    match (decision_logged, still_held) {
        (true, _) => Outcome::Committed,
        (false, true) => Outcome::InProgress,
        (false, false) => Outcome::Aborted,
    }
}

/// Where a transaction stands after a COMMIT round that `missing` did not
/// acknowledge.
pub fn after_delivery(participants: &[ShardGroupId], missing: &[ShardGroupId]) -> (TxnState, BTreeMap<ShardGroupId, Phase>) {
    let state = if missing.is_empty() { TxnState::Syncing } else { TxnState::Delivering };
    let phases = participants.iter().map(|g| (*g, if missing.contains(g) { Phase::Prepared } else { Phase::Committed })).collect();
    (state, phases)
}

/// What to do with a delivered decision after a round of WAL syncs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// Every participant synced in the epoch it acknowledged in.
    Forget,
    /// These groups failed over since they acknowledged: COMMIT again.
    Resend(Vec<ShardGroupId>),
    /// Some participant has not synced yet.
    Wait,
}

/// Settles a decision: `acked` holds the epoch each participant
/// acknowledged COMMIT in, `synced` the epoch each group synced in.
pub fn settle(participants: &[ShardGroupId], acked: &BTreeMap<ShardGroupId, u64>, synced: &BTreeMap<ShardGroupId, u64>) -> Settle {
    if participants.iter().all(|g| synced.get(g).is_some_and(|e| acked.get(g) == Some(e))) {
        return Settle::Forget;
    }
    let moved: Vec<ShardGroupId> = participants.iter().copied().filter(|g| synced.get(g).is_some_and(|e| acked.get(g).is_some_and(|a| a != e))).collect();
    if moved.is_empty() {
        Settle::Wait
    } else {
        Settle::Resend(moved)
    }
}

/// The wait before a redelivery round: `backoff` (back to the first after
/// an idle loop) and the most jitter to add.
pub fn redelivery_wait(backoff: Duration, idle: bool) -> (Duration, Duration) {
    let backoff = if idle { FIRST_BACKOFF } else { backoff };
    (backoff, backoff / 2)
}

/// The backoff after a round.
pub fn next_backoff(backoff: Duration) -> Duration {
    (backoff * 2).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_plan_depends_on_the_writers_and_journal_entries() {
        assert_eq!(commit_plan(&[1, 2], &[], false), CommitPlan::Release { groups: vec![1, 2] });
        assert_eq!(commit_plan(&[1, 2], &[], true), CommitPlan::Release { groups: vec![1, 2] });
        assert_eq!(commit_plan(&[1, 2], &[2], false), CommitPlan::OnePhase { group: 2 });
        // A journal entry must share the decision's batch: two phases even on one group.
        assert_eq!(commit_plan(&[2], &[2], true), CommitPlan::TwoPhase { writers: vec![2] });
        assert_eq!(commit_plan(&[1, 2, 3], &[1, 3], false), CommitPlan::TwoPhase { writers: vec![1, 3] });
    }

    #[test]
    fn a_failed_one_phase_commit_releases_the_writer_too() {
        assert_eq!(one_phase_release(&[1, 2, 3], 2, true), vec![1, 3]);
        assert_eq!(one_phase_release(&[1, 2, 3], 2, false), vec![1, 2, 3]);
        assert_eq!(one_phase_release(&[2], 2, true), Vec::<ShardGroupId>::new());
    }

    #[test]
    fn presumed_abort() {
        assert_eq!(outcome(true, true), Outcome::Committed);
        assert_eq!(outcome(true, false), Outcome::Committed);
        assert_eq!(outcome(false, true), Outcome::InProgress);
        assert_eq!(outcome(false, false), Outcome::Aborted);
    }

    #[test]
    fn delivery_marks_who_acknowledged() {
        let (state, phases) = after_delivery(&[1, 2], &[]);
        assert_eq!(state, TxnState::Syncing);
        assert_eq!(phases, BTreeMap::from([(1, Phase::Committed), (2, Phase::Committed)]));
        let (state, phases) = after_delivery(&[1, 2, 3], &[2]);
        assert_eq!(state, TxnState::Delivering);
        assert_eq!(phases, BTreeMap::from([(1, Phase::Committed), (2, Phase::Prepared), (3, Phase::Committed)]));
    }

    #[test]
    fn a_decision_is_forgotten_only_after_syncs_in_the_acknowledged_epochs() {
        let acked = BTreeMap::from([(1, 4), (2, 7)]);
        assert_eq!(settle(&[1, 2], &acked, &BTreeMap::from([(1, 4), (2, 7)])), Settle::Forget);
        // Group 2 has not synced yet.
        assert_eq!(settle(&[1, 2], &acked, &BTreeMap::from([(1, 4)])), Settle::Wait);
        // Group 2 failed over since it acknowledged: COMMIT again there.
        assert_eq!(settle(&[1, 2], &acked, &BTreeMap::from([(1, 4), (2, 8)])), Settle::Resend(vec![2]));
        assert_eq!(settle(&[1, 2], &acked, &BTreeMap::from([(1, 5), (2, 8)])), Settle::Resend(vec![1, 2]));
        // One moved, the other not yet synced: the moved one is resent.
        assert_eq!(settle(&[1, 2], &acked, &BTreeMap::from([(2, 8)])), Settle::Resend(vec![2]));
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_restarts_after_idle() {
        assert_eq!(redelivery_wait(Duration::from_secs(4), true), (FIRST_BACKOFF, FIRST_BACKOFF / 2));
        assert_eq!(redelivery_wait(Duration::from_secs(4), false), (Duration::from_secs(4), Duration::from_secs(2)));
        assert_eq!(next_backoff(FIRST_BACKOFF), Duration::from_millis(400));
        assert_eq!(next_backoff(Duration::from_secs(4)), MAX_BACKOFF);
        assert_eq!(next_backoff(MAX_BACKOFF), MAX_BACKOFF);
    }
}
