//! The timestamp oracle: one order for every read and commit in the
//! cluster.
//!
//! Timestamps are microseconds of the coordinator's clock, made unique and
//! strictly increasing: `next` hands out `max(now, last + 1)`. They stay
//! increasing across restarts because a high-water mark is made durable in
//! the journal before any timestamp at or above it is handed out (as TiDB's
//! PD does): the oracle persists `ts + WINDOW` when it reaches the mark, and
//! a restarted oracle starts above the persisted mark. So one fsync covers
//! about `WINDOW` of timestamps.
//!
//! Commit timestamps are chosen with the shards (see `txn/mod.rs`): a
//! one-phase commit sends a fresh timestamp as the least it accepts and the
//! shard commits above every timestamp it has served a read at; a two-phase
//! commit takes the largest of a fresh timestamp and the participants'
//! prepare timestamps. The coordinator then [`Oracle::observe`]s the commit
//! timestamp before it answers the client, so every timestamp handed out
//! after a commit was acknowledged is above it: a read that starts after a
//! commit returned sees it.

use super::log::{Journal, JournalError};
use std::sync::Arc;
use tokio::sync::Mutex;

/// How far ahead of the timestamps handed out the durable mark is set.
pub const WINDOW_MICROS: u64 = 3_000_000;

const KEY: &str = "oracle/high_water";

struct State {
    /// The last timestamp handed out or observed.
    last: u64,
    /// Durable: no timestamp at or above it has been handed out.
    high_water: u64,
}

pub struct Oracle {
    state: Mutex<State>,
    journal: Arc<Journal>,
}

impl Oracle {
    /// Opens the oracle above the high-water mark its journal holds.
    pub fn open(journal: Arc<Journal>) -> Result<Oracle, JournalError> {
        let high_water = match journal.get(KEY)? {
            None => 0,
            Some(bytes) => {
                let bytes: [u8; 8] =
                    bytes.as_slice().try_into().map_err(|_| JournalError::Corrupt { key: KEY.into(), cause: format!("{} bytes, not 8", bytes.len()) })?;
                u64::from_be_bytes(bytes)
            }
        };
        Ok(Oracle { state: Mutex::new(State { last: high_water, high_water }), journal })
    }

    /// A fresh timestamp, above every one handed out or observed before,
    /// including before a restart.
    pub async fn next(&self) -> Result<u64, JournalError> {
        let mut state = self.state.lock().await;
        let ts = tessera_model::clock::now_micros().max(state.last + 1);
        self.cover(&mut state, ts).await?;
        state.last = ts;
        Ok(ts)
    }

    /// Notes a timestamp chosen elsewhere (a shard's commit timestamp):
    /// every timestamp handed out from now on is above it.
    pub async fn observe(&self, ts: u64) -> Result<(), JournalError> {
        let mut state = self.state.lock().await;
        if ts > state.last {
            self.cover(&mut state, ts).await?;
            state.last = ts;
        }
        Ok(())
    }

    /// The last timestamp handed out or observed (for status).
    pub async fn last(&self) -> u64 {
        self.state.lock().await.last
    }

    /// Makes the high-water mark durable above `ts` before `ts` is used.
    async fn cover(&self, state: &mut State, ts: u64) -> Result<(), JournalError> {
        if ts < state.high_water {
            return Ok(());
        }
        let mark = ts + WINDOW_MICROS;
        self.journal.put(KEY.into(), mark.to_be_bytes().to_vec()).await?;
        state.high_water = mark;
        Ok(())
    }
}

/// The snapshots READ ONLY transactions hold: garbage collection keeps
/// every version they read.
#[derive(Default)]
pub struct Snapshots {
    held: std::sync::Mutex<std::collections::BTreeMap<u64, usize>>,
}

/// One held snapshot, released when dropped (the transaction ended).
pub struct SnapshotHold {
    ts: u64,
    snapshots: Arc<Snapshots>,
}

impl Snapshots {
    pub fn hold(self: &Arc<Self>, ts: u64) -> SnapshotHold {
        *self.held.lock().unwrap().entry(ts).or_default() += 1;
        SnapshotHold { ts, snapshots: self.clone() }
    }

    pub fn oldest(&self) -> Option<u64> {
        self.held.lock().unwrap().keys().next().copied()
    }

    /// The garbage-collection horizon: `retention` before now, and never
    /// above a held snapshot.
    pub fn gc_horizon(&self, retention: std::time::Duration) -> u64 {
        let horizon = tessera_model::clock::now_micros().saturating_sub(retention.as_micros() as u64);
        self.oldest().map_or(horizon, |oldest| horizon.min(oldest))
    }
}

impl SnapshotHold {
    /// The snapshot's timestamp.
    pub fn ts(&self) -> u64 {
        self.ts
    }
}

impl Drop for SnapshotHold {
    fn drop(&mut self) {
        let mut held = self.snapshots.held.lock().unwrap();
        if let Some(count) = held.get_mut(&self.ts) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.ts);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::background::Background;
    use std::time::Duration;
    use tessera_storage::memory::MemoryEngine;

    fn journal(engine: &Arc<MemoryEngine>) -> Arc<Journal> {
        Arc::new(Journal::start(engine.clone(), Duration::ZERO, Arc::new(|| 0), &Background::detached()))
    }

    #[tokio::test]
    async fn timestamps_increase_and_a_restart_starts_above_every_one_handed_out() {
        let engine = Arc::new(MemoryEngine::default());
        let oracle = Oracle::open(journal(&engine)).unwrap();
        let mut last = 0;
        for _ in 0..1000 {
            let ts = oracle.next().await.unwrap();
            assert!(ts > last);
            last = ts;
        }
        // A commit timestamp far ahead (a shard's clock) is observed.
        let far = last + 10 * WINDOW_MICROS;
        oracle.observe(far).await.unwrap();
        assert!(oracle.next().await.unwrap() > far);
        drop(oracle);
        let restarted = Oracle::open(journal(&engine)).unwrap();
        assert!(restarted.next().await.unwrap() > far, "no timestamp is handed out twice across a restart");
    }

    #[test]
    fn the_gc_horizon_stays_below_every_held_snapshot() {
        let snapshots = Arc::new(Snapshots::default());
        let retention = Duration::from_secs(10);
        let now = tessera_model::clock::now_micros();
        assert!(snapshots.gc_horizon(retention) >= now - 10_000_000);
        let old = snapshots.hold(now - 60_000_000);
        let twice = snapshots.hold(now - 60_000_000);
        assert_eq!(snapshots.gc_horizon(retention), now - 60_000_000);
        drop(old);
        assert_eq!(snapshots.gc_horizon(retention), now - 60_000_000, "still held once");
        drop(twice);
        assert!(snapshots.gc_horizon(retention) >= now - 10_000_000);
    }

    #[tokio::test]
    async fn the_mark_is_written_once_per_window_not_per_timestamp() {
        let engine = Arc::new(MemoryEngine::default());
        let journal = journal(&engine);
        let oracle = Oracle::open(journal.clone()).unwrap();
        for _ in 0..100 {
            oracle.next().await.unwrap();
        }
        assert!(journal.syncs() <= 2, "{} syncs for 100 timestamps", journal.syncs());
    }
}
