//! A node's role, epoch and lease rules as plain functions of its state,
//! the request and the time. [`super::node::Node`] persists the state,
//! follows primaries and serves streams; these decide. Each rule has a unit
//! test below.
//!
//! - **Epoch fencing.** A request from an older epoch than the node's is
//!   refused (the group failed over); one from a newer epoch too, until a
//!   heartbeat has told the node of it. A request without an epoch (an
//!   operator's tool) is not checked.
//! - **Replicas.** A replica takes no writes and no primary reads. It serves
//!   a replica read unless it is installing a snapshot, or a staleness bound
//!   was given and it is staler than that or has never caught up.
//! - **Handover.** A primary told to stop accepting writes (a planned
//!   switchover) refuses writes; reads go on.
//! - **Lease.** A primary of a replicated group serves nothing without a
//!   valid lease from the coordinator; a lease runs `lease_ms` from the
//!   heartbeat but never past the coordinator's wall-clock bound, so a late
//!   heartbeat grants less and one past the bound grants nothing.
//! - **Acknowledgement.** A write is acknowledged only if, when it is done,
//!   the node is still primary of the epoch that admitted it, still accepts
//!   writes, and still holds its lease.
//! - **Heartbeats.** A heartbeat from an older epoch is refused; one that
//!   names another role or epoch changes them (durably first); each sets the
//!   lease, the replication mode and whether writes are accepted; one that
//!   keeps a primary but stops its writes makes its log durable so the
//!   handover target can catch up.

use crate::error::ShardError;
use std::time::Duration;
use tessera_proto::shard as pb;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica { primary: String },
}

impl Role {
    pub(super) fn encode(&self) -> Vec<u8> {
        match self {
            Role::Primary => b"primary".to_vec(),
            Role::Replica { primary } => format!("replica {primary}").into_bytes(),
        }
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Role> {
        let text = std::str::from_utf8(bytes).ok()?;
        match text.split_once(' ') {
            None if text == "primary" => Some(Role::Primary),
            Some(("replica", primary)) => Some(Role::Replica { primary: primary.to_string() }),
            _ => None,
        }
    }

    pub fn to_pb(&self) -> pb::Role {
        match self {
            Role::Primary => pb::Role::Primary,
            Role::Replica { .. } => pb::Role::Replica,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    None,
    Async,
    Sync { replicas: u32 },
}

/// What a node knows of its place in the group.
#[derive(Debug, Clone)]
pub struct State {
    pub epoch: u64,
    pub role: Role,
    pub mode: Mode,
    pub accept_writes: bool,
    /// Primaries of replicated groups accept writes until then.
    pub lease_required: bool,
    pub lease_until: Option<Instant>,
}

/// What a request is allowed to do.
#[derive(Debug, Clone, Copy)]
pub enum Access {
    /// Transactions: reads with locks, writes, prepare, commit, abort.
    Write,
    /// A committed read on the primary.
    Read,
    /// A committed read a replica may serve, if not staler than this.
    ReplicaRead { max_staleness: Option<Duration> },
}

/// What a replica read depends on besides the state.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplicaView {
    pub installing: bool,
    /// How stale the replica may be; `None` until it first caught up.
    pub staleness: Option<Duration>,
}

/// Admits a request carrying `epoch` for `access`, or says why not; the
/// epoch it was admitted in.
pub fn admit(state: &State, node: &str, epoch: Option<u64>, access: Access, replica: ReplicaView, now: Instant) -> Result<u64, ShardError> {
    if let Some(requested) = epoch {
        if requested < state.epoch {
            return Err(ShardError::Fenced(format!(
                "node {node} is at epoch {}; a request from epoch {requested} is stale (the group failed over)",
                state.epoch
            )));
        }
        if requested > state.epoch {
            return Err(ShardError::Fenced(format!("node {node} is at epoch {} and has not yet been told of epoch {requested}", state.epoch)));
        }
    }
    match (&state.role, access) {
        (Role::Replica { primary }, Access::Write | Access::Read) => {
            return Err(ShardError::Fenced(format!("node {node} is a replica (its primary is {primary}); it takes no writes")))
        }
        (Role::Replica { .. }, Access::ReplicaRead { .. }) if replica.installing => {
            return Err(ShardError::TooStale(format!("replica {node} is installing a snapshot")));
        }
        (Role::Replica { .. }, Access::ReplicaRead { max_staleness }) => {
            if let (Some(max), Some(now)) = (max_staleness, replica.staleness) {
                if now > max {
                    return Err(ShardError::TooStale(format!(
                        "replica {node} may be {} ms behind its primary, more than the {} ms allowed",
                        now.as_millis(),
                        max.as_millis()
                    )));
                }
            }
            if replica.staleness.is_none() && max_staleness.is_some() {
                return Err(ShardError::TooStale(format!("replica {node} has not caught up with its primary yet")));
            }
        }
        (Role::Primary, Access::Write) if !state.accept_writes => {
            return Err(ShardError::Fenced(format!("node {node} is handing over to a new primary and takes no writes")))
        }
        (Role::Primary, _) => lease_valid(state, node, now)?,
    }
    Ok(state.epoch)
}

/// Whether a write admitted in `admitted` may be acknowledged now.
pub fn confirm(state: &State, node: &str, admitted: u64, now: Instant) -> Result<(), ShardError> {
    if state.epoch != admitted || state.role != Role::Primary {
        return Err(ShardError::NotAcknowledged(format!("node {node} left epoch {admitted} while the request ran; it is not acknowledged")));
    }
    if !state.accept_writes {
        return Err(ShardError::NotAcknowledged(format!("node {node} began handing over to a new primary while the request ran; it is not acknowledged")));
    }
    lease_valid(state, node, now).map_err(|e| ShardError::NotAcknowledged(format!("{e}; the request ran but is not acknowledged")))
}

/// Whether a primary's lease lets it serve at `now`.
pub fn lease_valid(state: &State, node: &str, now: Instant) -> Result<(), ShardError> {
    if !state.lease_required {
        return Ok(());
    }
    match state.lease_until {
        Some(until) if now < until => Ok(()),
        Some(_) => Err(ShardError::Fenced(format!("node {node}'s lease from the coordinator ran out; it takes no writes until the coordinator renews it"))),
        None => Err(ShardError::Fenced(format!("node {node} has no lease from the coordinator yet; it takes no writes until it gets one"))),
    }
}

/// When a lease granted at `now` (wall clock `now_unix_ms`) ends:
/// `lease_ms` later, but never after the coordinator's bound.
pub fn lease_end(lease_ms: u64, expires_unix_ms: u64, now: Instant, now_unix_ms: u64) -> Option<Instant> {
    let left = expires_unix_ms.checked_sub(now_unix_ms).filter(|left| *left > 0)?;
    Some(now + Duration::from_millis(left.min(lease_ms)))
}

/// What a heartbeat asks of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// A new role and epoch to take, durably first.
    pub become_: Option<(Role, u64)>,
    pub role: Role,
    pub lease_required: bool,
    pub mode: Mode,
    pub accept_writes: bool,
    /// Make every record so far durable (a handover has begun).
    pub sync_log: bool,
}

/// Reads a heartbeat against the node's state.
pub fn heartbeat(state: &State, node: &str, request: &pb::HeartbeatRequest) -> Result<Heartbeat, ShardError> {
    if request.epoch < state.epoch {
        return Err(ShardError::Fenced(format!("node {node} is at epoch {}; the heartbeat is from epoch {}", state.epoch, request.epoch)));
    }
    let role = match pb::Role::try_from(request.role) {
        Ok(pb::Role::Replica) if !request.primary.is_empty() => Role::Replica { primary: request.primary.clone() },
        Ok(pb::Role::Primary) => Role::Primary,
        _ => return Err(ShardError::InvalidRequest("a heartbeat needs a role (and a primary for a replica)".into())),
    };
    let become_ = (role != state.role || request.epoch != state.epoch).then(|| (role.clone(), request.epoch));
    let mode = match pb::ReplicationMode::try_from(request.mode) {
        Ok(pb::ReplicationMode::Sync) => Mode::Sync { replicas: request.sync_replicas.max(1) },
        Ok(pb::ReplicationMode::Async) => Mode::Async,
        _ => Mode::None,
    };
    let sync_log = role == Role::Primary && !request.accept_writes;
    Ok(Heartbeat { become_, role, lease_required: request.lease_ms > 0, mode, accept_writes: request.accept_writes, sync_log })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary(epoch: u64) -> State {
        State { epoch, role: Role::Primary, mode: Mode::None, accept_writes: true, lease_required: false, lease_until: None }
    }

    fn replica(epoch: u64) -> State {
        State { role: Role::Replica { primary: "p".into() }, ..primary(epoch) }
    }

    fn leased(until: Option<Instant>) -> State {
        State { lease_required: true, lease_until: until, ..primary(3) }
    }

    const CAUGHT_UP: ReplicaView = ReplicaView { installing: false, staleness: Some(Duration::from_millis(10)) };

    #[test]
    fn requests_from_other_epochs_are_fenced() {
        let now = Instant::now();
        let state = primary(3);
        assert!(matches!(admit(&state, "n", Some(2), Access::Write, CAUGHT_UP, now), Err(ShardError::Fenced(m)) if m.contains("stale")));
        assert!(matches!(admit(&state, "n", Some(4), Access::Write, CAUGHT_UP, now), Err(ShardError::Fenced(m)) if m.contains("not yet been told of epoch 4")));
        assert_eq!(admit(&state, "n", Some(3), Access::Write, CAUGHT_UP, now).unwrap(), 3);
        assert_eq!(admit(&state, "n", None, Access::Write, CAUGHT_UP, now).unwrap(), 3, "an operator's tool is not checked");
    }

    #[test]
    fn replicas_serve_only_fresh_enough_replica_reads() {
        let now = Instant::now();
        let state = replica(3);
        assert!(matches!(admit(&state, "n", Some(3), Access::Write, CAUGHT_UP, now), Err(ShardError::Fenced(_))));
        assert!(matches!(admit(&state, "n", Some(3), Access::Read, CAUGHT_UP, now), Err(ShardError::Fenced(_))));
        let any = Access::ReplicaRead { max_staleness: None };
        let bounded = Access::ReplicaRead { max_staleness: Some(Duration::from_millis(100)) };
        assert!(admit(&state, "n", Some(3), any, CAUGHT_UP, now).is_ok());
        assert!(admit(&state, "n", Some(3), bounded, CAUGHT_UP, now).is_ok());
        let behind = ReplicaView { installing: false, staleness: Some(Duration::from_millis(500)) };
        assert!(matches!(admit(&state, "n", Some(3), bounded, behind, now), Err(ShardError::TooStale(_))));
        assert!(admit(&state, "n", Some(3), any, behind, now).is_ok());
        let never = ReplicaView { installing: false, staleness: None };
        assert!(matches!(admit(&state, "n", Some(3), bounded, never, now), Err(ShardError::TooStale(_))));
        assert!(admit(&state, "n", Some(3), any, never, now).is_ok());
        let installing = ReplicaView { installing: true, ..CAUGHT_UP };
        assert!(matches!(admit(&state, "n", Some(3), any, installing, now), Err(ShardError::TooStale(m)) if m.contains("snapshot")));
    }

    #[test]
    fn a_primary_handing_over_refuses_writes_but_serves_reads() {
        let now = Instant::now();
        let state = State { accept_writes: false, ..primary(3) };
        assert!(matches!(admit(&state, "n", Some(3), Access::Write, CAUGHT_UP, now), Err(ShardError::Fenced(m)) if m.contains("handing over")));
        assert!(admit(&state, "n", Some(3), Access::Read, CAUGHT_UP, now).is_ok());
    }

    #[test]
    fn a_leased_primary_serves_nothing_without_a_valid_lease() {
        let now = Instant::now();
        for access in [Access::Write, Access::Read] {
            assert!(admit(&leased(Some(now + Duration::from_secs(1))), "n", Some(3), access, CAUGHT_UP, now).is_ok());
            assert!(matches!(admit(&leased(Some(now)), "n", Some(3), access, CAUGHT_UP, now), Err(ShardError::Fenced(m)) if m.contains("ran out")));
            assert!(matches!(admit(&leased(None), "n", Some(3), access, CAUGHT_UP, now), Err(ShardError::Fenced(m)) if m.contains("no lease")));
        }
    }

    #[test]
    fn a_lease_never_outlives_the_coordinators_bound() {
        let now = Instant::now();
        assert_eq!(lease_end(700, 10_000 + 5_000, now, 10_000), Some(now + Duration::from_millis(700)));
        assert_eq!(lease_end(700, 10_000 + 300, now, 10_000), Some(now + Duration::from_millis(300)), "a late heartbeat grants less");
        assert_eq!(lease_end(700, 10_000, now, 10_000), None, "one past the bound grants nothing");
        assert_eq!(lease_end(700, 9_000, now, 10_000), None);
    }

    #[test]
    fn a_write_is_acknowledged_only_in_the_epoch_role_and_lease_it_was_admitted_in() {
        let now = Instant::now();
        assert!(confirm(&primary(3), "n", 3, now).is_ok());
        assert!(matches!(confirm(&primary(4), "n", 3, now), Err(ShardError::NotAcknowledged(_))));
        assert!(matches!(confirm(&replica(3), "n", 3, now), Err(ShardError::NotAcknowledged(_))));
        assert!(
            matches!(confirm(&State { accept_writes: false, ..primary(3) }, "n", 3, now), Err(ShardError::NotAcknowledged(m)) if m.contains("handing over"))
        );
        assert!(matches!(confirm(&leased(Some(now)), "n", 3, now), Err(ShardError::NotAcknowledged(m)) if m.contains("lease")));
    }

    fn request(epoch: u64, role: pb::Role, primary: &str) -> pb::HeartbeatRequest {
        pb::HeartbeatRequest { epoch, role: role as i32, primary: primary.into(), accept_writes: true, ..Default::default() }
    }

    #[test]
    fn heartbeats_change_role_and_epoch_and_set_lease_mode_and_writes() {
        let state = replica(3);
        assert!(matches!(heartbeat(&state, "n", &request(2, pb::Role::Primary, "")), Err(ShardError::Fenced(_))), "an older epoch is refused");
        assert!(matches!(heartbeat(&state, "n", &request(3, pb::Role::Replica, "")), Err(ShardError::InvalidRequest(_))), "a replica needs a primary");
        let same = heartbeat(&state, "n", &request(3, pb::Role::Replica, "p")).unwrap();
        assert_eq!(same.become_, None);
        let promoted = heartbeat(&state, "n", &request(4, pb::Role::Primary, "")).unwrap();
        assert_eq!(promoted.become_, Some((Role::Primary, 4)));
        let moved = heartbeat(&state, "n", &request(3, pb::Role::Replica, "q")).unwrap();
        assert_eq!(moved.become_, Some((Role::Replica { primary: "q".into() }, 3)), "a new primary to follow");
        let leased = heartbeat(
            &primary(3),
            "n",
            &pb::HeartbeatRequest { lease_ms: 700, mode: pb::ReplicationMode::Sync as i32, sync_replicas: 0, ..request(3, pb::Role::Primary, "") },
        )
        .unwrap();
        assert!(leased.lease_required);
        assert_eq!(leased.mode, Mode::Sync { replicas: 1 }, "sync mode waits for one replica at least");
        assert!(!leased.sync_log);
        let handover = heartbeat(&primary(3), "n", &pb::HeartbeatRequest { accept_writes: false, ..request(3, pb::Role::Primary, "") }).unwrap();
        assert!(!handover.accept_writes);
        assert!(handover.sync_log, "a handover makes the log durable");
    }
}
