//! Phase two: deliver COMMIT to every participant of a logged decision, keep
//! re-sending with exponential backoff and jitter (the rules are in
//! [`super::rules`]) until each one has
//! acknowledged, then make the commits durable and forget the record.
//!
//! Participants apply COMMIT lazily (without an fsync). A decision is
//! forgotten only after a later WAL sync on each of its participants, so
//! until then a participant that crashed and lost its commit still finds its
//! prepared record and the coordinator still answers COMMITTED. One sync per
//! shard every [`SYNC_INTERVAL`] covers every commit delivered in between.
//! COMMIT is idempotent on shards, so re-sending is always safe.
//!
//! A sync counts only if it reached the primary that acknowledged the
//! COMMIT: each acknowledgement remembers the group's epoch, and if the
//! group failed over since (its new primary may hold the transaction only
//! as prepared, the lazy commit having died with the old one), COMMIT is
//! sent again to the new primary before its sync can let the decision go.

use super::abort_everywhere;
use super::log::{CommitRecord, DecisionLog};
use super::registry::{delivering, Registry};
use super::rules::{self, Settle};
use crate::background::Background;
use crate::catalog::ShardGroupId;
use crate::shards::ShardPool;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tessera_model::txn::TxnContext;
use tokio::sync::mpsc;

/// How often delivered commits are made durable on their participants.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// The background tasks of phase two.
#[derive(Clone)]
pub struct PhaseTwo {
    pub redrive: mpsc::UnboundedSender<CommitRecord>,
    pub sync: mpsc::UnboundedSender<Delivered>,
}

/// A decision whose COMMIT every participant acknowledged, with the epoch
/// each group was in when it did.
pub struct Delivered {
    pub record: CommitRecord,
    pub acked: BTreeMap<ShardGroupId, u64>,
}

/// Sends COMMIT to each participant of `record` and ABORT to the read-only
/// groups; hands the record to the sync task, or to the redrive loop if a
/// participant did not acknowledge.
pub async fn deliver(shards: Arc<ShardPool>, registry: Registry, tasks: PhaseTwo, record: CommitRecord, readers: Vec<ShardGroupId>, ctx: TxnContext) {
    let ctx = TxnContext { begin: false, ..ctx };
    let (acked, missing) = commit_round(&shards, &record.participants, &ctx, record.commit_ts).await;
    abort_everywhere(&shards, &ctx, readers.into_iter()).await;
    let (state, phases) = rules::after_delivery(&record.participants, &missing);
    if missing.is_empty() {
        if let Some(info) = registry.lock().unwrap().get_mut(&record.txn_id) {
            info.state = state;
            info.participants.extend(phases);
        }
        let _ = tasks.sync.send(Delivered { record, acked });
        return;
    }
    let mut info = delivering(&record);
    info.state = state;
    info.participants.extend(phases);
    if let Some(old) = registry.lock().unwrap().get(&record.txn_id) {
        info.started = old.started;
    }
    registry.lock().unwrap().insert(record.txn_id.clone(), info);
    let _ = tasks.redrive.send(record);
}

/// Sends COMMIT to `groups` in parallel; returns the epoch each group that
/// acknowledged was in, and the groups that did not.
async fn commit_round(shards: &ShardPool, groups: &[ShardGroupId], ctx: &TxnContext, commit_ts: u64) -> (BTreeMap<ShardGroupId, u64>, Vec<ShardGroupId>) {
    let sends = groups.iter().map(|group| async move {
        let outcome = match shards.get(*group) {
            // An answer is trusted only if the epoch did not move while
            // the call ran, so the epoch read before it is the one it
            // was acknowledged in.
            Ok(client) => {
                let epoch = client.epoch();
                client.commit_two_phase(ctx, true, commit_ts).await.map(|()| epoch)
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &outcome {
            tracing::warn!(txn = %ctx.id, group, error = %e, "COMMIT not acknowledged; will re-send");
        }
        (*group, outcome.ok())
    });
    let mut acked = BTreeMap::new();
    let mut missing = Vec::new();
    for (group, epoch) in futures::future::join_all(sends).await {
        match epoch {
            Some(epoch) => {
                acked.insert(group, epoch);
            }
            None => missing.push(group),
        }
    }
    (acked, missing)
}

fn context(record: &CommitRecord, address: &str) -> TxnContext {
    TxnContext { id: record.txn_id.clone(), timestamp: record.timestamp, begin: false, coordinator: address.to_string() }
}

/// Adds queued records to `waiting`, first waiting for one if it is empty.
/// `None` when the queue is closed; `Some(true)` when the task was idle.
async fn take_work<T>(incoming: &mut mpsc::UnboundedReceiver<T>, waiting: &mut Vec<T>) -> Option<bool> {
    let idle = waiting.is_empty();
    if idle {
        waiting.push(incoming.recv().await?);
    }
    take_queued(incoming, waiting);
    Some(idle)
}

fn take_queued<T>(incoming: &mut mpsc::UnboundedReceiver<T>, waiting: &mut Vec<T>) {
    while let Ok(record) = incoming.try_recv() {
        waiting.push(record);
    }
}

/// Starts the redrive loop and the sync task. Both stop with the
/// coordinator: what they had not finished is in the journal, and a
/// restarted coordinator delivers it again.
pub fn spawn(shards: Arc<ShardPool>, log: Arc<DecisionLog>, registry: Registry, address: String, background: &Background) -> PhaseTwo {
    let sync = spawn_sync(shards.clone(), log, registry, address.clone(), background);
    let (redrive, incoming) = mpsc::unbounded_channel::<CommitRecord>();
    background.spawn_until_stopped(redrive_loop(shards, address, incoming, sync.clone()));
    PhaseTwo { redrive, sync }
}

async fn redrive_loop(shards: Arc<ShardPool>, address: String, mut incoming: mpsc::UnboundedReceiver<CommitRecord>, sync: mpsc::UnboundedSender<Delivered>) {
    let mut backoff = rules::FIRST_BACKOFF;
    let mut waiting: Vec<CommitRecord> = Vec::new();
    loop {
        let Some(idle) = take_work(&mut incoming, &mut waiting).await else { return };
        let (wait, most_jitter) = rules::redelivery_wait(backoff, idle);
        backoff = wait;
        let jitter = rand::thread_rng().gen_range(0..=most_jitter.as_millis() as u64);
        tokio::time::sleep(wait + Duration::from_millis(jitter)).await;
        let mut still = Vec::new();
        for record in waiting.drain(..) {
            let (acked, missing) = commit_round(&shards, &record.participants, &context(&record, &address), record.commit_ts).await;
            if missing.is_empty() {
                tracing::info!(txn = %record.txn_id, "COMMIT delivered to every participant");
                let _ = sync.send(Delivered { record, acked });
            } else {
                still.push(record);
            }
        }
        waiting = still;
        backoff = rules::next_backoff(backoff);
    }
}

/// Every [`SYNC_INTERVAL`], syncs the WAL of each group with delivered
/// commits, then forgets the decisions whose participants all synced in the
/// epoch they acknowledged COMMIT in. A participant whose group failed over
/// since gets COMMIT again (from its new primary) first.
fn spawn_sync(shards: Arc<ShardPool>, log: Arc<DecisionLog>, registry: Registry, address: String, background: &Background) -> mpsc::UnboundedSender<Delivered> {
    let (sender, mut incoming) = mpsc::unbounded_channel::<Delivered>();
    background.spawn_until_stopped(async move {
        let mut waiting: Vec<Delivered> = Vec::new();
        loop {
            if take_work(&mut incoming, &mut waiting).await.is_none() {
                return;
            }
            tokio::time::sleep(SYNC_INTERVAL).await;
            take_queued(&mut incoming, &mut waiting);
            let groups: BTreeSet<ShardGroupId> = waiting.iter().flat_map(|d| d.record.participants.iter().copied()).collect();
            let syncs = groups.into_iter().map(|g| {
                let shards = shards.clone();
                async move {
                    let client = shards.get(g).ok()?;
                    let epoch = client.epoch();
                    match client.sync_wal().await {
                        Ok(()) => Some((g, epoch)),
                        Err(e) => {
                            tracing::warn!(group = g, error = %e, "WAL sync failed; the decision is kept until it succeeds");
                            None
                        }
                    }
                }
            });
            let synced: BTreeMap<ShardGroupId, u64> = futures::future::join_all(syncs).await.into_iter().flatten().collect();
            let mut still = Vec::new();
            for mut delivered in waiting.drain(..) {
                match rules::settle(&delivered.record.participants, &delivered.acked, &synced) {
                    Settle::Forget => {
                        log.forget(&delivered.record.txn_id);
                        registry.lock().unwrap().remove(&delivered.record.txn_id);
                        continue;
                    }
                    Settle::Resend(moved) => {
                        tracing::info!(txn = %delivered.record.txn_id, groups = ?moved, "shard groups failed over after acknowledging COMMIT; sending it again");
                        let (acked, _) = commit_round(&shards, &moved, &context(&delivered.record, &address), delivered.record.commit_ts).await;
                        delivered.acked.extend(acked);
                    }
                    Settle::Wait => {}
                }
                still.push(delivered);
            }
            waiting = still;
        }
    });
    sender
}
