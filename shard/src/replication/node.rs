//! A node's place in its shard group: role (primary or replica), epoch,
//! lease, and the transitions the coordinator's heartbeats ask for.
//!
//! Persisted in the `meta` keyspace before the node acts on them, so a
//! restarted node comes back in the role and epoch it had: a replica goes
//! on following its primary, a primary of a replicated group waits for the
//! coordinator's lease before it takes writes.
//!
//! The rules (fencing, leases, what a heartbeat changes) are plain
//! functions in [`super::rules`]; this module keeps the state, persists it
//! and acts on what they decide.
//!
//! Fencing: every request carries the group's epoch. A node refuses an
//! older epoch, a replica refuses writes, and a primary refuses writes once
//! its lease (renewed by each heartbeat) has run out: a primary cut off
//! from the coordinator (or paused) stops acknowledging writes before the
//! coordinator, which waits longer than the lease, promotes a replica.

use super::log::LoggedEngine;
use super::progress::{ClosedTimestamp, Staleness, Tracker};
use super::rules::{self, ReplicaView, State};
pub use super::rules::{Access, Mode, Role};
use crate::error::ShardError;
use crate::txn::Participant;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tessera_model::secret::ClusterSecret;
use tessera_proto::shard as pb;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const META_EPOCH: &[u8] = b"epoch";
const META_ROLE: &[u8] = b"role";
const META_LEASED: &[u8] = b"lease_required";

/// Proof of admission: the epoch a write was admitted in.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    epoch: u64,
}

/// Starts following a primary as its replica, until told to stop:
/// [`super::replica::spawn`], passed in so the node (role, epoch, lease)
/// does not depend on the replica's stream code.
pub type Follow = fn(Arc<Node>, String, ClusterSecret, watch::Receiver<bool>) -> JoinHandle<()>;

pub struct Node {
    pub node_id: String,
    log: Arc<LoggedEngine>,
    participant: Arc<Participant>,
    secret: ClusterSecret,
    state: Mutex<State>,
    /// Serializes transitions (promotion, demotion, following).
    transition: tokio::sync::Mutex<()>,
    /// Primary side: the replicas' progress.
    pub tracker: Arc<Tracker>,
    /// Replica side: how stale this node's data may be.
    pub staleness: Arc<Staleness>,
    /// Replica side: the timestamp below which this node holds every commit.
    pub closed: Arc<ClosedTimestamp>,
    follower: Mutex<Option<(watch::Sender<bool>, JoinHandle<()>)>>,
    follow: Follow,
    sync_timeout: Duration,
    /// Set when the node shuts down: replication streams end.
    stopping: std::sync::atomic::AtomicBool,
}

impl Node {
    /// Reads the persisted role; a replica starts following its primary.
    pub fn open(
        node_id: String,
        log: Arc<LoggedEngine>,
        participant: Arc<Participant>,
        secret: ClusterSecret,
        sync_timeout: Duration,
        follow: Follow,
    ) -> Result<Arc<Node>, ShardError> {
        let epoch = log.meta(META_EPOCH)?.and_then(|v| v.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
        let role = log.meta(META_ROLE)?.and_then(|v| Role::decode(&v)).unwrap_or(Role::Primary);
        let lease_required = log.meta(META_LEASED)?.is_some_and(|v| v == [1]);
        if role == Role::Primary {
            log.open_writes(epoch);
        }
        let state = State { epoch, role: role.clone(), mode: Mode::None, accept_writes: true, lease_required, lease_until: None };
        let node = Arc::new(Node {
            node_id,
            log,
            participant,
            secret,
            state: Mutex::new(state),
            transition: tokio::sync::Mutex::new(()),
            tracker: Arc::new(Tracker::default()),
            staleness: Arc::new(Staleness::default()),
            closed: Arc::default(),
            follower: Mutex::new(None),
            follow,
            sync_timeout,
            stopping: std::sync::atomic::AtomicBool::new(false),
        });
        if let Role::Replica { primary } = role {
            tracing::info!(node = %node.node_id, %primary, epoch, "restarting as a replica");
            node.participant.demote();
            node.start_following(primary);
        }
        Ok(node)
    }

    /// Stops following and ends the replication streams this node serves,
    /// so a graceful shutdown does not wait for them.
    pub async fn shutdown(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::Release);
        self.stop_following().await;
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn log(&self) -> &Arc<LoggedEngine> {
        &self.log
    }

    pub fn epoch(&self) -> u64 {
        self.state.lock().unwrap().epoch
    }

    pub fn role(&self) -> Role {
        self.state.lock().unwrap().role.clone()
    }

    pub fn is_primary(&self) -> bool {
        self.state.lock().unwrap().role == Role::Primary
    }

    /// Checks a request before it runs. `epoch` is the group epoch the
    /// request carries (none: an operator's tool; not checked).
    pub fn admit(&self, epoch: Option<u64>, access: Access) -> Result<Ticket, ShardError> {
        let state = self.state.lock().unwrap();
        // Only a replica read looks at the replica's progress.
        let replica = match (&state.role, access) {
            (Role::Replica { .. }, Access::ReplicaRead { .. }) => ReplicaView { installing: self.log.installing(), staleness: self.staleness.current() },
            _ => ReplicaView::default(),
        };
        rules::admit(&state, &self.node_id, epoch, access, replica, Instant::now()).map(|epoch| Ticket { epoch })
    }

    /// Checks, before a write is acknowledged, that the node is still the
    /// primary of the epoch it admitted the write in, with a valid lease.
    pub fn confirm(&self, ticket: Ticket) -> Result<(), ShardError> {
        rules::confirm(&self.state.lock().unwrap(), &self.node_id, ticket.epoch, Instant::now())
    }

    /// Primary side: a closed timestamp to promise replicas, with the last
    /// record it covers (see [`Participant::close_timestamps`]).
    pub fn close_timestamps(&self) -> (u64, u64) {
        self.participant.close_timestamps(|| self.log.last().0)
    }

    /// A snapshot read at `read_ts` on a replica: waits up to `patience`
    /// for the replica to hold every commit below `read_ts`.
    pub async fn wait_closed(&self, read_ts: u64, patience: Duration) -> Result<(), ShardError> {
        if self.is_primary() || self.closed.wait_for(read_ts, patience).await {
            return Ok(());
        }
        Err(ShardError::TooStale(format!(
            "replica {} holds every commit below timestamp {} only, not yet below the read's {read_ts}",
            self.node_id,
            self.closed.current()
        )))
    }

    /// Staleness of this node's data (zero on a primary).
    pub fn staleness_ms(&self) -> u64 {
        match self.role() {
            Role::Primary => 0,
            Role::Replica { .. } => self.staleness.current().map(|d| d.as_millis() as u64).unwrap_or(u64::MAX),
        }
    }

    /// Sync mode: waits until enough replicas have every durable record so far.
    pub async fn wait_replicated(&self) -> Result<(), ShardError> {
        let (mode, role) = {
            let state = self.state.lock().unwrap();
            (state.mode, state.role.clone())
        };
        let Mode::Sync { replicas } = mode else { return Ok(()) };
        if role != Role::Primary || replicas == 0 {
            return Ok(());
        }
        // Only durable records are shipped, and the caller's durable write
        // is among them; an unsynced (lazy) write logged since must not be
        // waited for, as no replica gets it before the next sync.
        let seq = self.log.durable();
        self.tracker.wait(seq, replicas as usize, self.sync_timeout).await.map_err(|e| ShardError::NotAcknowledged(format!("node {}: {e}", self.node_id)))
    }

    /// Applies the coordinator's heartbeat: role, epoch, lease and mode.
    pub async fn heartbeat(self: &Arc<Self>, request: pb::HeartbeatRequest) -> Result<pb::HeartbeatResponse, ShardError> {
        let _one_at_a_time = self.transition.lock().await;
        let current = self.state.lock().unwrap().clone();
        let asked = rules::heartbeat(&current, &self.node_id, &request)?;
        if let Some((role, epoch)) = asked.become_ {
            self.become_(role, epoch).await?;
        }
        if asked.lease_required != current.lease_required {
            self.log.set_meta(META_LEASED, vec![asked.lease_required as u8])?;
        }
        {
            let mut state = self.state.lock().unwrap();
            state.lease_required = asked.lease_required;
            let now = (Instant::now(), tessera_model::clock::now_unix_ms());
            state.lease_until = asked.lease_required.then(|| rules::lease_end(request.lease_ms, request.lease_expires_unix_ms, now.0, now.1)).flatten();
            state.mode = asked.mode;
            state.accept_writes = asked.accept_writes;
        }
        self.participant.allow_gc(request.gc_horizon, self.is_primary());
        if asked.sync_log {
            // Handing over: every record written so far becomes durable, so
            // it can be shipped and the target can catch up to it.
            self.log.sync()?;
        }
        Ok(self.report())
    }

    /// This node's replication state, as a heartbeat answer.
    pub fn report(&self) -> pb::HeartbeatResponse {
        let state = self.state.lock().unwrap().clone();
        let (last_seq, applied_epoch) = self.log.last();
        // A primary reports what it can ship: its durable records.
        let applied_seq = if state.role == Role::Primary { self.log.durable() } else { last_seq };
        pb::HeartbeatResponse {
            node_id: self.node_id.clone(),
            epoch: state.epoch,
            role: state.role.to_pb() as i32,
            applied_seq,
            applied_epoch,
            staleness_ms: self.staleness_ms(),
            replicas: if state.role == Role::Primary { self.tracker.progress(applied_seq) } else { Vec::new() },
            log_start: self.log.first(),
            installing_snapshot: self.log.installing(),
            closed_ts: if state.role == Role::Primary { 0 } else { self.closed.current() },
            node_unix_ms: tessera_model::clock::now_unix_ms(),
            lease_held: state.role == Role::Primary && state.lease_required && rules::lease_valid(&state, &self.node_id, Instant::now()).is_ok(),
        }
    }

    /// Changes role and epoch, durably first.
    async fn become_(self: &Arc<Self>, role: Role, epoch: u64) -> Result<(), ShardError> {
        let was = self.role();
        tracing::info!(node = %self.node_id, from = ?was, to = ?role, epoch, "changing role");
        let incomplete = || ShardError::Fenced(format!("node {} holds an incomplete snapshot and cannot become primary", self.node_id));
        if role == Role::Primary && self.log.installing() {
            return Err(incomplete());
        }
        // No write of the participant lands from here on (one half done is
        // finished first), and the follower has applied its last batch.
        self.log.close_writes();
        self.stop_following().await;
        if role == Role::Primary && self.log.installing() {
            if let Role::Replica { primary } = was {
                self.start_following(primary);
            }
            return Err(incomplete());
        }
        {
            // Requests are refused while the role changes.
            let mut state = self.state.lock().unwrap();
            state.role = Role::Replica { primary: String::new() };
        }
        self.log.set_meta(META_EPOCH, epoch.to_be_bytes().to_vec())?;
        self.log.set_meta(META_ROLE, role.encode())?;
        match &role {
            Role::Primary => {
                // The prepared transactions replicated here come back with their locks.
                self.participant.demote();
                self.participant.reload_prepared()?;
                self.participant.raise_floor()?;
                self.tracker.reset();
                self.log.open_writes(epoch);
            }
            Role::Replica { .. } => self.participant.demote(),
        }
        {
            let mut state = self.state.lock().unwrap();
            state.epoch = epoch;
            state.role = role.clone();
        }
        if let Role::Replica { primary } = role {
            self.start_following(primary);
        }
        Ok(())
    }

    fn start_following(self: &Arc<Self>, primary: String) {
        let (stop, stopped) = watch::channel(false);
        let task = (self.follow)(self.clone(), primary, self.secret.clone(), stopped);
        if let Some((old, _)) = self.follower.lock().unwrap().replace((stop, task)) {
            let _ = old.send(true);
        }
    }

    async fn stop_following(&self) {
        let follower = self.follower.lock().unwrap().take();
        if let Some((stop, task)) = follower {
            let _ = stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}
