//! The failover rule as a pure function of what the heartbeats showed, so
//! it is tested without a network.
//!
//! Rule: when a group's primary has not answered heartbeats for the
//! failover timeout (longer than its lease, so it has stopped taking
//! writes), promote the replica that has applied the most of the log, among
//! those that answer. A sync group is failed over only if enough replicas
//! answer that one of them must hold every acknowledged write (with `k` of
//! `r` replicas acknowledging each write, any `r - k + 1` of them include
//! one that acknowledged it).

use crate::catalog::{GroupRecord, ReplicationMode};
use std::time::Duration;

/// What the heartbeats showed of one member.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberView {
    pub address: String,
    /// How long ago it last answered a heartbeat (`None`: never).
    pub silent_for: Option<Duration>,
    /// The last log record it had applied when it answered, and its epoch.
    pub applied_seq: u64,
    pub applied_epoch: u64,
    /// It is installing a snapshot: its data is incomplete.
    pub installing: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Keep,
    Promote {
        target: String,
    },
    /// The primary is gone but no replica may take over; says why.
    Stuck(String),
}

/// What to do about a group, given its members' views.
pub fn decide(record: &GroupRecord, views: &[MemberView], failover_timeout: Duration) -> Decision {
    if record.members.len() < 2 {
        return Decision::Keep;
    }
    let answers = |v: &MemberView| v.silent_for.is_some_and(|s| s < failover_timeout);
    let primary_answers = views.iter().any(|v| v.address == record.primary && answers(v));
    if primary_answers {
        return Decision::Keep;
    }
    let alive: Vec<&MemberView> = views.iter().filter(|v| v.address != record.primary && answers(v) && !v.installing).collect();
    let replicas = record.members.len() - 1;
    if alive.is_empty() {
        return Decision::Stuck(format!("its primary {} is silent and none of its {replicas} replica(s) answers", record.primary));
    }
    if record.mode == ReplicationMode::Sync {
        let needed = replicas.saturating_sub(record.sync_replicas.max(1) as usize) + 1;
        if alive.len() < needed {
            return Decision::Stuck(format!(
                "its primary {} is silent and only {} of the {needed} replicas needed to be sure of every acknowledged write answer",
                record.primary,
                alive.len()
            ));
        }
    }
    // The most up-to-date (a later epoch's history beats a longer older
    // one); among equals, the first in member order.
    let position = |v: &MemberView| (v.applied_epoch, v.applied_seq);
    let best = alive.iter().map(|v| position(v)).max().unwrap_or((0, 0));
    let target = record.members.iter().find(|m| alive.iter().any(|v| v.address == **m && position(v) == best)).cloned().unwrap_or_default();
    Decision::Promote { target }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(mode: ReplicationMode, members: &[&str], sync_replicas: u32) -> GroupRecord {
        GroupRecord { members: members.iter().map(|m| m.to_string()).collect(), primary: members[0].into(), epoch: 1, mode, sync_replicas }
    }

    fn view(address: &str, silent_ms: Option<u64>, applied_seq: u64) -> MemberView {
        MemberView { address: address.into(), silent_for: silent_ms.map(Duration::from_millis), applied_seq, applied_epoch: 1, installing: false }
    }

    const TIMEOUT: Duration = Duration::from_secs(3);

    #[test]
    fn a_silent_primary_is_replaced_by_the_most_up_to_date_replica() {
        let r = record(ReplicationMode::Async, &["p", "a", "b"], 0);
        let views = [view("p", Some(5_000), 90), view("a", Some(100), 80), view("b", Some(100), 85)];
        assert_eq!(decide(&r, &views, TIMEOUT), Decision::Promote { target: "b".into() });
        let tie = [view("p", None, 0), view("a", Some(100), 85), view("b", Some(100), 85)];
        assert_eq!(decide(&r, &tie, TIMEOUT), Decision::Promote { target: "a".into() }, "ties go to member order");
    }

    #[test]
    fn an_answering_primary_or_a_single_node_group_is_kept() {
        let r = record(ReplicationMode::Sync, &["p", "a"], 1);
        assert_eq!(decide(&r, &[view("p", Some(2_000), 9), view("a", Some(10), 9)], TIMEOUT), Decision::Keep);
        let single = record(ReplicationMode::None, &["p"], 0);
        assert_eq!(decide(&single, &[view("p", None, 0)], TIMEOUT), Decision::Keep);
    }

    #[test]
    fn without_enough_replicas_a_group_is_stuck_rather_than_losing_writes() {
        let r = record(ReplicationMode::Async, &["p", "a"], 0);
        assert!(matches!(decide(&r, &[view("p", None, 0), view("a", Some(9_000), 3)], TIMEOUT), Decision::Stuck(_)));
        // Sync, one of two replicas acknowledges each write: both must answer.
        let r = record(ReplicationMode::Sync, &["p", "a", "b"], 1);
        let one = [view("p", None, 0), view("a", Some(10), 7), view("b", None, 0)];
        assert!(matches!(decide(&r, &one, TIMEOUT), Decision::Stuck(_)));
        let both = [view("p", None, 0), view("a", Some(10), 7), view("b", Some(10), 9)];
        assert_eq!(decide(&r, &both, TIMEOUT), Decision::Promote { target: "b".into() });
        // Sync with every replica acknowledging: any one of them will do.
        let r = record(ReplicationMode::Sync, &["p", "a", "b"], 2);
        assert_eq!(decide(&r, &one, TIMEOUT), Decision::Promote { target: "a".into() });
    }

    #[test]
    fn a_later_epoch_beats_a_longer_log_and_a_half_installed_snapshot_never_wins() {
        let r = record(ReplicationMode::Async, &["p", "a", "b"], 0);
        // `a` is an old primary that rejoined with records of epoch 1 the
        // others never had; `b` holds epoch 2's writes.
        let mut a = view("a", Some(10), 1000);
        let mut b = view("b", Some(10), 950);
        b.applied_epoch = 2;
        assert_eq!(decide(&r, &[view("p", None, 0), a.clone(), b.clone()], TIMEOUT), Decision::Promote { target: "b".into() });
        b.installing = true;
        a.applied_epoch = 1;
        assert_eq!(decide(&r, &[view("p", None, 0), a, b.clone()], TIMEOUT), Decision::Promote { target: "a".into() });
        assert!(matches!(decide(&r, &[view("p", None, 0), view("a", None, 0), b], TIMEOUT), Decision::Stuck(_)));
    }
}
