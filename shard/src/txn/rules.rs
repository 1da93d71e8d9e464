//! The participant's phase machine as plain functions of a transaction's
//! phase (`None`: the participant does not hold it). [`super::Participant`]
//! locks rows, writes RocksDB and counts; these decide. Each rule has a unit
//! test below.
//!
//! - **PREPARE** of an unknown transaction is refused (it was aborted, or
//!   its state died with a restart before it prepared: the coordinator must
//!   abort); a repeated PREPARE of a prepared one answers yes again without
//!   writing; an active one writes its prepared record, then is prepared.
//! - **COMMIT in one phase** needs the transaction held here (its writes
//!   were sent with it or before it); it applies the writes.
//! - **COMMIT in two phases** of a transaction no longer held is a repeat
//!   of a COMMIT that already applied: it answers yes without doing
//!   anything. An active one is refused: it was never prepared. A prepared
//!   one applies its writes and deletes its prepared record in one batch.
//! - **A failed apply**: a prepared transaction stays prepared (the
//!   decision stands, and a retry or the coordinator's redelivery commits
//!   it); an active one is dropped with its locks.
//! - **ABORT** is idempotent; a prepared transaction's record is deleted
//!   with it, and if that write fails the transaction stays prepared.
//! - **In doubt**: a prepared transaction without a decision for longer
//!   than the patience asks its coordinator for the outcome.

use super::state::Phase;
use std::time::Duration;

/// What PREPARE does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepare {
    Unknown,
    AlreadyPrepared,
    WriteRecord,
}

pub fn prepare(phase: Option<Phase>) -> Prepare {
    match phase {
        None => Prepare::Unknown,
        Some(Phase::Prepared) => Prepare::AlreadyPrepared,
        Some(Phase::Active) => Prepare::WriteRecord,
    }
}

/// What COMMIT does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Refused: the transaction is not held here.
    Unknown,
    /// Refused: a two-phase COMMIT of a transaction that never prepared.
    NotPrepared,
    /// A repeated two-phase COMMIT of a transaction already committed.
    AlreadyCommitted,
    /// Apply the writes (and delete the prepared record, if there is one).
    Apply { delete_prepared_record: bool },
}

pub fn commit(phase: Option<Phase>, one_phase: bool) -> Commit {
    match (phase, one_phase) {
        (None, true) => Commit::Unknown,
        (None, false) => Commit::AlreadyCommitted,
        (Some(Phase::Active), false) => Commit::NotPrepared,
        (Some(phase), _) => Commit::Apply { delete_prepared_record: phase == Phase::Prepared },
    }
}

/// Whether a transaction whose commit (or abort) failed to apply is kept.
pub fn keep_after_failed_apply(phase: Phase) -> bool {
    phase == Phase::Prepared
}

/// Whether ABORT deletes a durable prepared record.
pub fn abort_deletes_record(phase: Option<Phase>) -> bool {
    phase == Some(Phase::Prepared)
}

/// Whether a transaction idle for `idle` is in doubt.
pub fn in_doubt(phase: Phase, idle: Duration, patience: Duration) -> bool {
    phase == Phase::Prepared && idle >= patience
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_is_refused_when_unknown_and_repeats_harmlessly() {
        assert_eq!(prepare(None), Prepare::Unknown);
        assert_eq!(prepare(Some(Phase::Prepared)), Prepare::AlreadyPrepared);
        assert_eq!(prepare(Some(Phase::Active)), Prepare::WriteRecord);
    }

    #[test]
    fn commit_follows_the_phase() {
        assert_eq!(commit(None, true), Commit::Unknown);
        assert_eq!(commit(None, false), Commit::AlreadyCommitted, "COMMIT is idempotent");
        assert_eq!(commit(Some(Phase::Active), false), Commit::NotPrepared);
        assert_eq!(commit(Some(Phase::Active), true), Commit::Apply { delete_prepared_record: false });
        assert_eq!(commit(Some(Phase::Prepared), false), Commit::Apply { delete_prepared_record: true });
    }

    #[test]
    fn a_prepared_transaction_survives_a_failed_apply() {
        assert!(keep_after_failed_apply(Phase::Prepared));
        assert!(!keep_after_failed_apply(Phase::Active));
    }

    #[test]
    fn abort_deletes_only_a_prepared_record() {
        assert!(abort_deletes_record(Some(Phase::Prepared)));
        assert!(!abort_deletes_record(Some(Phase::Active)));
        assert!(!abort_deletes_record(None));
    }

    #[test]
    fn only_prepared_transactions_past_the_patience_are_in_doubt() {
        let patience = Duration::from_secs(2);
        assert!(in_doubt(Phase::Prepared, Duration::from_secs(2), patience));
        assert!(!in_doubt(Phase::Prepared, Duration::from_secs(1), patience));
        assert!(!in_doubt(Phase::Active, Duration::from_secs(60), patience));
    }
}
