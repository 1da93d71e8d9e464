//! Failure detection and failover of shard groups.
//!
//! Every `heartbeat_interval` the coordinator sends each shard node a
//! heartbeat that states what the node should be: primary or replica (and
//! of whom), the group's epoch, the sync mode, and, for the primary of a
//! replicated group, a lease: the right to take writes for `lease` after
//! the heartbeat arrives. The answers say how far each node has applied the
//! log.
//!
//! Failover ([`decide`] holds the rule): when a primary has not answered for
//! `failover_timeout` (more than the lease, so it no longer takes writes
//! even if it is only cut off or paused), the most up-to-date answering
//! replica is promoted: the group's epoch is raised and the new primary and
//! epoch are written to the catalog (synced) before anything routes there;
//! then every member is told at once. Nodes refuse requests from older
//! epochs, and an old primary that comes back is told by its next heartbeat
//! that it is a replica of the new one, and rejoins from its log (or a
//! snapshot, if it holds records the new primary never had).
//!
//! Switchover (planned, no loss): the primary stops taking writes (its
//! heartbeat says so), the target catches up to the primary's last record,
//! then it is promoted as above.
//!
//! Recovery rule, in one sentence: the catalog's (primary, epoch) is the
//! truth, a node acts only on heartbeats of that epoch, and a primary acts
//! only within its lease.

pub mod decide;

use crate::background::Background;
use crate::catalog::{Catalog, GroupRecord, ReplicationMode, ShardGroupId};
use crate::error::{CoordError, Result};
use crate::shards::{ShardClient, ShardPool};
use decide::{decide, Decision, MemberView};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tessera_proto::shard as pb;
use tokio::time::Instant;

/// Failover events kept for the admin status.
const MAX_EVENTS: usize = 1000;

#[derive(Debug, Clone, Copy)]
pub struct FailoverConfig {
    pub heartbeat_interval: Duration,
    pub lease: Duration,
    pub failover_timeout: Duration,
    pub max_clock_skew: Duration,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            heartbeat_interval: Duration::from_millis(250),
            lease: Duration::from_millis(1500),
            failover_timeout: Duration::from_millis(3000),
            max_clock_skew: Duration::from_millis(250),
        }
    }
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The last heartbeat exchange with one node.
#[derive(Debug, Clone, Default)]
struct Health {
    last_ok: Option<Instant>,
    report: Option<pb::HeartbeatResponse>,
    error: Option<String>,
    in_flight: bool,
    /// The last answer that said the node holds its lease.
    last_leased: Option<Instant>,
    /// How far the node's clock is from the coordinator's (ms, positive:
    /// ahead), measured at the last answer.
    clock_skew_ms: Option<i64>,
    /// The skew was beyond `max_clock_skew` (reported once per change).
    skewed: bool,
}

/// One member of a group as the admin status shows it.
#[derive(Debug, Clone)]
pub struct MemberStatus {
    pub address: String,
    pub role: &'static str,
    pub reachable: bool,
    pub applied_seq: u64,
    /// Records behind the primary.
    pub lag_records: u64,
    /// How stale the member's data may be (replicas; `None`: unknown).
    pub staleness_ms: Option<u64>,
    pub error: Option<String>,
    /// The coordinator's circuit breaker for the node.
    pub circuit: &'static str,
    pub in_flight: usize,
    /// How far its clock is from the coordinator's (ms, positive: ahead).
    pub clock_skew_ms: Option<i64>,
}

/// A failover or switchover that happened.
#[derive(Debug, Clone)]
pub struct Event {
    pub group: ShardGroupId,
    pub from: String,
    pub to: String,
    pub epoch: u64,
    pub at_us: u64,
    pub reason: String,
}

pub struct Failover {
    catalog: Arc<Catalog>,
    shards: Arc<ShardPool>,
    config: FailoverConfig,
    health: Mutex<HashMap<(ShardGroupId, String), Health>>,
    /// The latest wall-clock time (Unix ms) up to which each node was ever
    /// granted a lease.
    granted: Mutex<HashMap<(ShardGroupId, String), u64>>,
    /// Primaries being replaced: they get no lease and take no writes.
    fenced: Mutex<HashSet<(ShardGroupId, String)>>,
    /// Groups with a failover under way (one per group at a time).
    failing_over: Mutex<HashSet<ShardGroupId>>,
    /// One promotion at a time.
    promoting: tokio::sync::Mutex<()>,
    started: Instant,
    /// The latest failovers and switchovers (at most [`MAX_EVENTS`]).
    events: Mutex<Vec<Event>>,
    /// Failovers and switchovers per group since the start (metrics).
    counts: Mutex<BTreeMap<ShardGroupId, u64>>,
    background: Background,
    /// The garbage-collection horizon heartbeats carry (none: 0, nothing
    /// is collected).
    gc_horizon: std::sync::OnceLock<GcHorizon>,
}

/// Computes the garbage-collection horizon when a heartbeat leaves.
pub type GcHorizon = Box<dyn Fn() -> u64 + Send + Sync>;

impl Failover {
    /// Starts the heartbeat loop.
    pub fn start(catalog: Arc<Catalog>, shards: Arc<ShardPool>, config: FailoverConfig, background: &Background) -> Arc<Failover> {
        let failover = Arc::new(Failover {
            catalog,
            shards,
            config,
            health: Mutex::default(),
            granted: Mutex::default(),
            fenced: Mutex::default(),
            failing_over: Mutex::default(),
            promoting: tokio::sync::Mutex::new(()),
            started: Instant::now(),
            events: Mutex::default(),
            counts: Mutex::default(),
            gc_horizon: std::sync::OnceLock::new(),
            background: background.clone(),
        });
        let looping = failover.clone();
        background.spawn_until_stopped(async move {
            let mut tick = tokio::time::interval(looping.config.heartbeat_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                looping.tick().await;
            }
        });
        failover
    }

    /// Sends every member its first heartbeat and waits (at most `within`)
    /// for the answers, so that nodes know the group's epoch (and primaries
    /// hold a lease) before the first statement reaches them.
    pub async fn first_round(self: &Arc<Self>, within: Duration) {
        let mut beats = Vec::new();
        for (group, record) in self.shards.records() {
            beats.extend(record.members.iter().filter_map(|member| self.clone().beat(group, member.clone(), true)));
        }
        let _ = tokio::time::timeout(within, futures::future::join_all(beats)).await;
    }

    async fn tick(self: &Arc<Self>) {
        for (group, record) in self.shards.records() {
            for member in &record.members {
                self.clone().beat(group, member.clone(), false);
            }
            match decide(&record, &self.views(group, &record), self.config.failover_timeout) {
                Decision::Keep => {}
                Decision::Promote { .. } => {
                    if !self.failing_over.lock().unwrap().insert(group) {
                        continue; // already under way
                    }
                    let this = self.clone();
                    self.background.spawn_until_stopped(async move {
                        if let Err(e) = this.fail_over(group, &record).await {
                            tracing::error!(group, error = %e, "failover failed");
                        }
                        this.failing_over.lock().unwrap().remove(&group);
                    });
                }
                Decision::Stuck(why) => tracing::warn!(group, "shard group cannot fail over: {why}"),
            }
        }
    }

    /// Replaces the silent primary of `record`: fences it, waits until its
    /// last lease has ended on every clock, asks the replicas afresh how far
    /// they got, and promotes the most up-to-date one.
    async fn fail_over(self: &Arc<Self>, group: ShardGroupId, record: &GroupRecord) -> Result<()> {
        let _one_at_a_time = self.promoting.lock().await;
        let old = record.primary.clone();
        let fence = (group, old.clone());
        self.fenced.lock().unwrap().insert(fence.clone());
        let outcome = async {
            self.wait_lease_ended(group, &old).await;
            // Fresh answers: a replica may have received more since the
            // last heartbeat (the old primary could still ship).
            let beats: Vec<_> = record.members.iter().filter(|m| **m != old).filter_map(|m| self.clone().beat(group, m.clone(), true)).collect();
            for beat in beats {
                let _ = beat.await;
            }
            let current = self.shards.record(group).ok_or_else(|| CoordError::Internal(format!("shard group {group} is not configured")))?;
            if current.primary != old {
                return Ok(None); // moved meanwhile
            }
            match decide(&current, &self.views(group, &current), self.config.failover_timeout) {
                Decision::Promote { target } => {
                    let answering = self
                        .health
                        .lock()
                        .unwrap()
                        .get(&(group, old.clone()))
                        .and_then(|h| h.last_ok)
                        .is_some_and(|t| t.elapsed() < self.config.failover_timeout);
                    let why = if answering {
                        format!(
                            "its primary {old} answers but held no lease for {} ms (its clock is off: see clock_skew_ms in SHOW SHARDS)",
                            self.config.failover_timeout.as_millis()
                        )
                    } else {
                        format!("its primary {old} missed heartbeats for {} ms", self.config.failover_timeout.as_millis())
                    };
                    self.promote_locked(group, &target, &why, Some(&old)).map(Some)
                }
                Decision::Keep => Ok(None),
                Decision::Stuck(why) => Err(CoordError::ShardUnavailable(format!("shard group {group} cannot fail over: {why}"))),
            }
        }
        .await;
        if let Ok(Some(updated)) = &outcome {
            self.announce(group, updated).await;
        }
        self.fenced.lock().unwrap().remove(&fence);
        outcome.map(|_| ())
    }

    /// Waits until no lease granted to `member` can still be running on its
    /// clock.
    async fn wait_lease_ended(&self, group: ShardGroupId, member: &str) {
        let granted = self.granted.lock().unwrap().get(&(group, member.to_string())).copied().unwrap_or(0);
        let until = granted + self.config.max_clock_skew.as_millis() as u64;
        let now = now_unix_ms();
        if until > now {
            tokio::time::sleep(Duration::from_millis(until - now)).await;
        }
    }

    fn views(&self, group: ShardGroupId, record: &GroupRecord) -> Vec<MemberView> {
        let health = self.health.lock().unwrap();
        // A primary fenced for a switchover has no lease on purpose; one
        // fenced by a failover still counts as failed.
        let handing_over = self.fenced.lock().unwrap().contains(&(group, record.primary.clone())) && !self.failing_over.lock().unwrap().contains(&group);
        record
            .members
            .iter()
            .map(|m| {
                let h = health.get(&(group, m.clone()));
                // Silence counts from the coordinator's start at the latest.
                let silent = h.and_then(|h| h.last_ok).unwrap_or(self.started).elapsed();
                let report = h.and_then(|h| h.report.as_ref());
                // A primary that must hold a lease but cannot (its clock runs
                // ahead) takes no writes: it counts as failed, as if silent.
                let needs_lease = *m == record.primary && record.members.len() > 1 && !handing_over;
                let leaseless_for = needs_lease.then(|| h.and_then(|h| h.last_leased).unwrap_or(self.started).elapsed());
                MemberView {
                    address: m.clone(),
                    silent_for: Some(leaseless_for.map_or(silent, |l| silent.max(l))),
                    applied_seq: report.map(|r| r.applied_seq).unwrap_or(0),
                    applied_epoch: report.map(|r| r.applied_epoch).unwrap_or(0),
                    installing: report.is_some_and(|r| r.installing_snapshot),
                }
            })
            .collect()
    }

    /// What `member` should be, as a heartbeat.
    fn desired(&self, group: ShardGroupId, record: &GroupRecord, member: &str) -> pb::HeartbeatRequest {
        let primary = member == record.primary;
        let replicated = record.members.len() > 1;
        let mode = match record.mode {
            ReplicationMode::None => pb::ReplicationMode::None,
            ReplicationMode::Async => pb::ReplicationMode::Async,
            ReplicationMode::Sync => pb::ReplicationMode::Sync,
        };
        let fenced = primary && self.fenced.lock().unwrap().contains(&(group, member.to_string()));
        let lease = primary && replicated;
        // The lease is granted (and remembered) as the heartbeat leaves.
        let lease_expires_unix_ms = if lease && !fenced {
            let until = now_unix_ms() + self.config.lease.as_millis() as u64;
            let mut granted = self.granted.lock().unwrap();
            let latest = granted.entry((group, member.to_string())).or_default();
            *latest = (*latest).max(until);
            until
        } else {
            0
        };
        pb::HeartbeatRequest {
            gc_horizon: self.gc_horizon.get().map(|f| f()).unwrap_or(0),
            group,
            epoch: record.epoch,
            role: if primary { pb::Role::Primary } else { pb::Role::Replica } as i32,
            primary: if primary { String::new() } else { record.primary.clone() },
            lease_ms: if lease { self.config.lease.as_millis() as u64 } else { 0 },
            mode: mode as i32,
            sync_replicas: record.sync_replicas,
            accept_writes: !fenced,
            lease_expires_unix_ms,
        }
    }

    /// Sends one heartbeat to a member (in the background unless `wait`).
    fn beat(self: Arc<Self>, group: ShardGroupId, member: String, wait: bool) -> Option<tokio::task::JoinHandle<Option<Result<pb::HeartbeatResponse>>>> {
        {
            let mut health = self.health.lock().unwrap();
            let h = health.entry((group, member.clone())).or_default();
            if h.in_flight && !wait {
                return None;
            }
            h.in_flight = true;
        }
        // A heartbeat cut short by shutdown changes nothing.
        let task = self.background.clone().spawn_until_stopped(async move {
            let sent = now_unix_ms();
            let outcome = self.heartbeat_once(group, &member).await;
            let received = now_unix_ms();
            let mut health = self.health.lock().unwrap();
            let h = health.entry((group, member.clone())).or_default();
            h.in_flight = false;
            match &outcome {
                Ok(report) => {
                    h.last_ok = Some(Instant::now());
                    if report.lease_held {
                        h.last_leased = h.last_ok;
                    }
                    h.report = Some(report.clone());
                    h.error = None;
                    self.measure_skew(group, &member, h, report.node_unix_ms, sent, received);
                }
                Err(e) => h.error = Some(e.to_string()),
            }
            outcome
        });
        Some(task)
    }

    /// Records how far `member`'s clock is from ours: its time against the
    /// middle of the round trip, give or take half of it. Beyond
    /// `max_clock_skew` it cannot hold leases safely: said in the log once.
    fn measure_skew(&self, group: ShardGroupId, member: &str, h: &mut Health, node_unix_ms: u64, sent: u64, received: u64) {
        if node_unix_ms == 0 {
            return;
        }
        let middle = (sent + received) / 2;
        let skew = node_unix_ms as i64 - middle as i64;
        let uncertainty = (received.saturating_sub(sent) / 2) as i64;
        h.clock_skew_ms = Some(skew);
        let bound = self.config.max_clock_skew.as_millis() as i64;
        let skewed = skew.abs() > bound + uncertainty;
        if skewed && !h.skewed {
            tracing::warn!(
                group,
                node = member,
                skew_ms = skew,
                max_clock_skew_ms = bound,
                "node's clock is off by more than max_clock_skew_ms: it cannot hold a lease"
            );
        } else if !skewed && h.skewed {
            tracing::info!(group, node = member, skew_ms = skew, "node's clock is back within max_clock_skew_ms");
        }
        h.skewed = skewed;
    }

    async fn heartbeat_once(&self, group: ShardGroupId, member: &str) -> Result<pb::HeartbeatResponse> {
        let record = self.shards.record(group).ok_or_else(|| CoordError::Internal(format!("shard group {group} is not configured")))?;
        let client = self.client(group, member)?;
        let deadline = self.config.heartbeat_interval.max(Duration::from_millis(200)) * 4;
        client.heartbeat(self.desired(group, &record, member), deadline.min(self.config.lease)).await
    }

    fn client(&self, group: ShardGroupId, member: &str) -> Result<ShardClient> {
        self.shards.member(group, member).ok_or_else(|| CoordError::Invalid(format!("{member} is not a member of shard group {group}")))
    }

    /// Makes `target` the primary of `group` in a new epoch (the caller
    /// holds `promoting`).
    fn promote_locked(&self, group: ShardGroupId, target: &str, why: &str, expected_primary: Option<&str>) -> Result<GroupRecord> {
        let record = self.shards.record(group).ok_or_else(|| CoordError::Internal(format!("shard group {group} is not configured")))?;
        if expected_primary.is_some_and(|p| p != record.primary) || record.primary == target {
            return Ok(record); // someone else already moved it
        }
        let epoch = record.epoch + 1;
        // Durable first: after a restart the coordinator routes by this.
        let updated = self.catalog.set_primary(group, target, epoch)?;
        self.shards.set_primary(group, target, epoch);
        tracing::warn!(group, from = %record.primary, to = %target, epoch, "shard group failed over: {why}");
        let at_us = tessera_model::clock::now_micros();
        {
            let mut events = self.events.lock().unwrap();
            if events.len() >= MAX_EVENTS {
                events.remove(0);
            }
            events.push(Event { group, from: record.primary.clone(), to: target.to_string(), epoch, at_us, reason: why.to_string() });
        }
        *self.counts.lock().unwrap().entry(group).or_default() += 1;
        Ok(updated)
    }

    /// Tells every member of a group its (new) role now.
    async fn announce(self: &Arc<Self>, group: ShardGroupId, record: &GroupRecord) {
        let beats: Vec<_> = record.members.iter().filter_map(|m| self.clone().beat(group, m.clone(), true)).collect();
        for beat in beats {
            let _ = beat.await;
        }
    }

    /// A planned switchover with no loss: the primary is fenced (no lease,
    /// no writes), its last lease runs out, `target` (or the most
    /// up-to-date replica) catches up to the primary's last durable record,
    /// then takes over.
    pub async fn switchover(self: &Arc<Self>, group: ShardGroupId, target: Option<&str>) -> Result<GroupRecord> {
        let _one_at_a_time = self.promoting.lock().await;
        let record = self.shards.record(group).ok_or_else(|| CoordError::Invalid(format!("shard group {group} does not exist")))?;
        let replicas: Vec<String> = record.replicas().cloned().collect();
        if replicas.is_empty() {
            return Err(CoordError::Invalid(format!("shard group {group} has no replica to switch over to")));
        }
        let target = match target {
            Some(t) if replicas.iter().any(|r| r == t) => t.to_string(),
            Some(t) => return Err(CoordError::Invalid(format!("{t} is not a replica of shard group {group} (its replicas: {})", replicas.join(", ")))),
            None => self.most_up_to_date(group, &replicas),
        };
        let fence = (group, record.primary.clone());
        self.fenced.lock().unwrap().insert(fence.clone());
        let outcome = self.hand_over(group, &record, &target).await;
        if let Ok(updated) = &outcome {
            self.clone().announce(group, updated).await;
        }
        self.fenced.lock().unwrap().remove(&fence);
        outcome
    }

    async fn hand_over(self: &Arc<Self>, group: ShardGroupId, record: &GroupRecord, target: &str) -> Result<GroupRecord> {
        let context = format!("switchover of shard group {group}");
        // Told first, so it stops taking writes at once; after its last
        // lease has run out nothing can make it take one again.
        self.heartbeat_once(group, &record.primary).await.map_err(|e| e.context(&context))?;
        self.wait_lease_ended(group, &record.primary).await;
        // The primary, now taking no writes, syncs its log and says where it
        // ends.
        let last = self.heartbeat_once(group, &record.primary).await.map_err(|e| e.context(&context))?.applied_seq;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let replica = self.heartbeat_once(group, target).await.map_err(|e| e.context(&context))?;
            if replica.applied_seq >= last && !replica.installing_snapshot {
                break;
            }
            if Instant::now() > deadline {
                return Err(CoordError::ShardUnavailable(format!(
                    "{context}: {target} did not catch up to record {last} in time (it has {})",
                    replica.applied_seq
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.promote_locked(group, target, "planned switchover", Some(&record.primary))
    }

    fn most_up_to_date(&self, group: ShardGroupId, replicas: &[String]) -> String {
        let health = self.health.lock().unwrap();
        let seq = |m: &String| health.get(&(group, m.clone())).and_then(|h| h.report.as_ref()).map(|r| r.applied_seq).unwrap_or(0);
        replicas.iter().max_by_key(|m| (seq(m), std::cmp::Reverse((*m).clone()))).cloned().unwrap_or_default()
    }

    /// Each member of a group as the last heartbeats showed it.
    pub fn members(&self, group: ShardGroupId) -> Vec<MemberStatus> {
        let Some(record) = self.shards.record(group) else { return Vec::new() };
        let health = self.health.lock().unwrap();
        let primary_seq = health.get(&(group, record.primary.clone())).and_then(|h| h.report.as_ref()).map(|r| r.applied_seq).unwrap_or(0);
        record
            .members
            .iter()
            .map(|m| {
                let h = health.get(&(group, m.clone())).cloned().unwrap_or_default();
                let reachable = self.reachable(&h);
                let applied_seq = h.report.as_ref().map(|r| r.applied_seq).unwrap_or(0);
                let primary = *m == record.primary;
                let guard = self.shards.member(group, m).map(|c| c.guard().clone());
                MemberStatus {
                    circuit: guard.as_ref().map(|g| g.state()).unwrap_or("closed"),
                    in_flight: guard.as_ref().map(|g| g.in_flight()).unwrap_or(0),
                    address: m.clone(),
                    role: if primary { "primary" } else { "replica" },
                    reachable,
                    applied_seq,
                    lag_records: if primary { 0 } else { primary_seq.saturating_sub(applied_seq) },
                    staleness_ms: if primary { Some(0) } else { h.report.as_ref().map(|r| r.staleness_ms).filter(|s| *s != u64::MAX) },
                    error: h.error.clone(),
                    clock_skew_ms: h.clock_skew_ms,
                }
            })
            .collect()
    }

    /// The replicas of a group that answer, for replica reads.
    /// (On every replica read: reads the heartbeat table only.)
    pub fn live_replicas(&self, group: ShardGroupId) -> Vec<String> {
        let Some(record) = self.shards.record(group) else { return Vec::new() };
        let health = self.health.lock().unwrap();
        record.replicas().filter(|m| health.get(&(group, (*m).clone())).is_some_and(|h| self.reachable(h))).cloned().collect()
    }

    /// The replicas of a group that answer, each with the timestamp below
    /// which it held every commit at its last heartbeat.
    pub fn replica_closed(&self, group: ShardGroupId) -> Vec<(String, u64)> {
        let Some(record) = self.shards.record(group) else { return Vec::new() };
        let health = self.health.lock().unwrap();
        record
            .replicas()
            .filter_map(|m| {
                let h = health.get(&(group, m.clone())).filter(|h| self.reachable(h))?;
                Some((m.clone(), h.report.as_ref().map(|r| r.closed_ts).unwrap_or(0)))
            })
            .collect()
    }

    /// Sets how heartbeats compute the garbage-collection horizon.
    pub fn set_gc_horizon(&self, horizon: GcHorizon) {
        let _ = self.gc_horizon.set(horizon);
    }

    /// It answered heartbeats lately, and the last one.
    fn reachable(&self, h: &Health) -> bool {
        h.last_ok.is_some_and(|t| t.elapsed() < self.config.failover_timeout) && h.error.is_none()
    }

    /// Failovers and switchovers per group since the coordinator started.
    pub fn counts(&self) -> BTreeMap<ShardGroupId, u64> {
        self.counts.lock().unwrap().clone()
    }

    /// The latest failovers and switchovers since the coordinator started.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}
