//! Replication progress both roles keep: the primary's [`Tracker`] of each
//! replica's acknowledged record, and a replica's [`Staleness`] (how far
//! behind its primary it may be). The node holds both; [`super::primary`]
//! and [`super::replica`] move them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;
use tessera_proto::shard as pb;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Too few replicas acknowledged a durable write in time.
#[derive(Debug, thiserror::Error)]
#[error(
    "sync replication: {have} of the {needed} required replica(s) acknowledged record {seq} within {} ms; the write is durable here but not acknowledged",
    timeout.as_millis()
)]
pub struct Unacknowledged {
    pub have: usize,
    pub needed: usize,
    pub seq: u64,
    pub timeout: Duration,
}

struct Progress {
    /// The stream the progress belongs to; an older stream's news is ignored.
    stream: u64,
    acked: u64,
    staleness_ms: u64,
    connected: bool,
}

/// Every replica's acknowledged record. A replica's progress starts at
/// zero on each new stream and moves only when the primary has checked
/// where the replica stands (it continues from the log) or the replica
/// acknowledges records it was sent.
#[derive(Default)]
pub struct Tracker {
    replicas: Mutex<BTreeMap<String, Progress>>,
    changed: Notify,
    streams: std::sync::atomic::AtomicU64,
}

impl Tracker {
    /// A new stream from `replica`; its id.
    pub(super) fn open_stream(&self, replica: &str) -> u64 {
        let stream = self.streams.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        self.replicas.lock().unwrap().insert(replica.to_string(), Progress { stream, acked: 0, staleness_ms: u64::MAX, connected: true });
        stream
    }

    /// The replica was found to hold the log up to `seq` (it continues from there).
    pub(super) fn start_at(&self, replica: &str, stream: u64, seq: u64) {
        self.update(replica, stream, |p| p.acked = seq);
    }

    /// An acknowledgement, capped at what the primary has written.
    pub(super) fn ack(&self, replica: &str, stream: u64, seq: u64, staleness_ms: u64, last: u64) {
        self.update(replica, stream, |p| {
            p.acked = p.acked.max(seq.min(last));
            p.staleness_ms = staleness_ms;
        });
    }

    pub(super) fn close_stream(&self, replica: &str, stream: u64) {
        self.update(replica, stream, |p| p.connected = false);
    }

    fn update(&self, replica: &str, stream: u64, change: impl FnOnce(&mut Progress)) {
        let mut replicas = self.replicas.lock().unwrap();
        if let Some(p) = replicas.get_mut(replica).filter(|p| p.stream == stream) {
            change(p);
        }
        drop(replicas);
        self.changed.notify_waiters();
    }

    /// Forgets everything (a node that becomes primary starts afresh).
    pub fn reset(&self) {
        self.replicas.lock().unwrap().clear();
    }

    /// Waits until `needed` connected replicas acknowledged `seq`.
    pub async fn wait(&self, seq: u64, needed: usize, timeout: Duration) -> Result<(), Unacknowledged> {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let have = self.replicas.lock().unwrap().values().filter(|p| p.connected && p.acked >= seq).count();
            if have >= needed {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(Unacknowledged { have, needed, seq, timeout });
            }
        }
    }

    /// Each replica's progress against the primary's last record.
    pub fn progress(&self, last: u64) -> Vec<pb::ReplicaProgress> {
        self.replicas
            .lock()
            .unwrap()
            .iter()
            .map(|(id, p)| pb::ReplicaProgress {
                replica: id.clone(),
                acked_seq: p.acked,
                connected: p.connected,
                lag_records: last.saturating_sub(p.acked),
                staleness_ms: p.staleness_ms,
            })
            .collect()
    }
}

#[derive(Default)]
struct StalenessState {
    /// When this replica was last known to have everything the primary had.
    caught_up_at: Option<Instant>,
    /// Heartbeats (primary's record, arrival) not yet caught up with.
    pending: VecDeque<(u64, Instant)>,
    applied: u64,
}

/// How far behind its primary a replica may be.
#[derive(Default)]
pub struct Staleness(Mutex<StalenessState>);

impl Staleness {
    /// A heartbeat said the primary's last record was `seq`.
    pub fn heartbeat(&self, seq: u64) {
        let mut s = self.0.lock().unwrap();
        let now = Instant::now();
        if s.applied >= seq {
            s.caught_up_at = Some(now);
            s.pending.clear();
        } else {
            s.pending.push_back((seq, now));
            while s.pending.len() > 64 {
                s.pending.pop_front();
            }
        }
    }

    /// Records up to `seq` are applied here.
    pub fn applied(&self, seq: u64) {
        let mut s = self.0.lock().unwrap();
        s.applied = seq;
        while let Some(&(wanted, at)) = s.pending.front() {
            if wanted > seq {
                break;
            }
            s.caught_up_at = Some(at);
            s.pending.pop_front();
        }
    }

    /// The replica lost its primary: it can no longer vouch for anything.
    pub fn disconnected(&self) {
        let mut s = self.0.lock().unwrap();
        s.pending.clear();
    }

    /// How stale reads here may be; `None` before the first catch-up.
    pub fn current(&self) -> Option<Duration> {
        self.0.lock().unwrap().caught_up_at.map(|at| at.elapsed())
    }
}

/// Replica side: the closed timestamp, below which this replica holds
/// every commit. The primary's heartbeats promise "every commit below `ts`
/// is in the records up to `seq`"; the promise holds here once `seq` is
/// applied.
#[derive(Default)]
pub struct ClosedTimestamp {
    state: Mutex<ClosedState>,
    advanced: tokio::sync::Notify,
}

#[derive(Default)]
struct ClosedState {
    closed: u64,
    /// Promises (seq, ts) not yet applied, in seq order.
    pending: VecDeque<(u64, u64)>,
    applied: u64,
}

impl ClosedTimestamp {
    /// The primary promised that every commit below `ts` is in the records
    /// up to `seq`.
    pub fn promised(&self, seq: u64, ts: u64) {
        let mut s = self.state.lock().unwrap();
        if s.applied >= seq {
            s.closed = s.closed.max(ts);
            self.advanced.notify_waiters();
        } else {
            s.pending.push_back((seq, ts));
            while s.pending.len() > 256 {
                s.pending.pop_front();
            }
        }
    }

    /// Records up to `seq` are applied here.
    pub fn applied(&self, seq: u64) {
        let mut s = self.state.lock().unwrap();
        s.applied = s.applied.max(seq);
        let mut advanced = false;
        while let Some(&(wanted, ts)) = s.pending.front() {
            if wanted > seq {
                break;
            }
            s.closed = s.closed.max(ts);
            s.pending.pop_front();
            advanced = true;
        }
        if advanced {
            self.advanced.notify_waiters();
        }
    }

    pub fn current(&self) -> u64 {
        self.state.lock().unwrap().closed
    }

    /// Waits until every commit below `read_ts` is here (the closed
    /// timestamp reaches `read_ts`), at most `patience`; false if it did not.
    pub async fn wait_for(&self, read_ts: u64, patience: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let advanced = self.advanced.notified();
            tokio::pin!(advanced);
            advanced.as_mut().enable();
            if self.current() >= read_ts {
                return true;
            }
            if tokio::time::timeout_at(deadline, advanced).await.is_err() {
                return self.current() >= read_ts;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_replica_closes_a_timestamp_once_it_applied_the_records_promised_with_it() {
        let closed = ClosedTimestamp::default();
        closed.promised(5, 100);
        assert_eq!(closed.current(), 0, "records up to 5 are not applied yet");
        closed.applied(4);
        assert_eq!(closed.current(), 0);
        closed.applied(5);
        assert_eq!(closed.current(), 100);
        closed.promised(5, 150);
        assert_eq!(closed.current(), 150, "nothing new to apply: closed at once");
        assert!(closed.wait_for(150, Duration::ZERO).await);
        assert!(!closed.wait_for(151, Duration::from_millis(10)).await, "nothing promised 151");
        let waiter = async { closed.wait_for(200, Duration::from_secs(5)).await };
        let promise = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            closed.promised(6, 300);
            closed.applied(6);
        };
        let (served, ()) = tokio::join!(waiter, promise);
        assert!(served);
    }

    #[test]
    fn staleness_counts_from_the_heartbeat_a_replica_caught_up_with() {
        let s = Staleness::default();
        assert_eq!(s.current(), None, "never caught up: unknown");
        s.heartbeat(5);
        assert_eq!(s.current(), None, "behind the first heartbeat");
        s.applied(4);
        assert_eq!(s.current(), None);
        s.applied(5);
        assert!(s.current().unwrap() < Duration::from_secs(1));
        s.heartbeat(3);
        assert!(s.current().is_some());
    }
}
