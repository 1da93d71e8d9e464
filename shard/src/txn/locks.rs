//! Exclusive row locks held by transactions until they commit or abort:
//! a queue per locked row, in arrival order, with wound-wait deadlock
//! prevention.
//!
//! Every transaction carries its start timestamp (smaller is older). A
//! request for a lock another transaction holds joins the row's queue and
//! waits; when the holder releases, the lock passes to the first in line.
//! If the requester is *older* than the holder and the lock is not handed
//! to it within [`WOUND_AFTER`] (most holders finish sooner), it
//! **wounds** the holder (see [`LockConflict::Wound`]): the participant
//! aborts the holder unless it has prepared, which frees the lock. So waits only ever go from
//! younger to older transactions (or to prepared ones, which need no lock
//! to finish): no cycle, and no distributed deadlock, can form. A hot row
//! serializes its writers instead of failing them. The deadline is a
//! backstop.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use tessera_model::metrics::{Counter, Histogram};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Who holds or wants a lock: (start timestamp, transaction id).
type Owner = (u64, String);

/// How long an older requester waits in line before it wounds the younger
/// holder: a deadlock lasts at most this long, and a holder that finishes
/// sooner is not aborted.
pub const WOUND_AFTER: std::time::Duration = std::time::Duration::from_millis(50);

struct Entry {
    owner: Owner,
    /// Waiters in arrival order; the lock is handed to the first.
    queue: VecDeque<(Owner, oneshot::Sender<()>)>,
}

#[derive(Default)]
pub struct LockTable {
    rows: Mutex<HashMap<Vec<u8>, Entry>>,
    /// Requests that waited for a holder, and how long (metrics).
    pub waits: Counter,
    pub wait_seconds: Histogram,
}

/// Why a lock was not granted (yet).
#[derive(Debug, PartialEq)]
pub enum LockConflict {
    /// The requester is older than the holder: the caller aborts the
    /// holder (if it has not prepared) and asks again.
    Wound { holder: String },
    /// The requester waited until its deadline.
    Timeout { holder: String },
}

impl LockTable {
    /// Takes the lock on `key` for transaction `txn` started at `ts`,
    /// waiting in line while another holds it. Returns true if newly
    /// taken, false if `txn` already held it. `wounded` lists holders the
    /// caller already tried to wound (they are waited for, not wounded again).
    pub async fn acquire(&self, key: &[u8], txn: &str, ts: u64, deadline: Instant, wounded: &[String]) -> Result<bool, LockConflict> {
        let me: Owner = (ts, txn.to_string());
        let (granted, holder) = {
            let mut rows = self.rows.lock().unwrap();
            let Some(entry) = rows.get_mut(key) else {
                rows.insert(key.to_vec(), Entry { owner: me, queue: VecDeque::new() });
                return Ok(true);
            };
            if entry.owner.1 == txn {
                return Ok(false);
            }
            let holder = entry.owner.1.clone();
            let wounds = me < entry.owner && !wounded.contains(&holder);
            let (tx, rx) = oneshot::channel();
            entry.queue.push_back((me, tx));
            (rx, (holder, wounds))
        };
        let (holder, wounds) = holder;
        let since = Instant::now();
        self.waits.inc();
        // An older requester waits a moment, then wounds the holder.
        let until = if wounds { deadline.min(since + WOUND_AFTER) } else { deadline };
        let outcome = tokio::time::timeout_at(until, granted).await;
        self.wait_seconds.observe_duration(since.elapsed());
        match outcome {
            Ok(Ok(())) => Ok(true),
            // Dropped without a grant: the table was cleared.
            Ok(Err(_)) => Err(LockConflict::Timeout { holder }),
            Err(_) => {
                // Leave the line, unless the lock was handed over meanwhile.
                let mut rows = self.rows.lock().unwrap();
                if rows.get(key).is_some_and(|e| e.owner.1 == txn) {
                    return Ok(true);
                }
                if let Some(entry) = rows.get_mut(key) {
                    entry.queue.retain(|(o, _)| o.1 != txn);
                }
                if wounds && Instant::now() < deadline {
                    return Err(LockConflict::Wound { holder });
                }
                Err(LockConflict::Timeout { holder })
            }
        }
    }

    /// Takes a lock that must be free (recovery of prepared transactions).
    pub fn acquire_now(&self, key: &[u8], txn: &str, ts: u64) -> bool {
        let mut rows = self.rows.lock().unwrap();
        match rows.get(key) {
            None => {
                rows.insert(key.to_vec(), Entry { owner: (ts, txn.to_string()), queue: VecDeque::new() });
                true
            }
            Some(entry) => entry.owner.1 == txn,
        }
    }

    /// Releases the locks `txn` holds on `keys`, handing each to the first
    /// waiter still waiting.
    pub fn release<'a>(&self, txn: &str, keys: impl IntoIterator<Item = &'a Vec<u8>>) {
        let mut rows = self.rows.lock().unwrap();
        for key in keys {
            let Some(entry) = rows.get_mut(key) else { continue };
            if entry.owner.1 != txn {
                continue;
            }
            loop {
                match entry.queue.pop_front() {
                    None => {
                        rows.remove(key);
                        break;
                    }
                    Some((next, granted)) => {
                        entry.owner = next;
                        if granted.send(()).is_ok() {
                            break;
                        }
                        // That waiter gave up; try the next one.
                    }
                }
            }
        }
    }

    /// Drops every lock and ends every wait (a primary that becomes a
    /// replica: its transactions are gone).
    pub fn clear(&self) {
        self.rows.lock().unwrap().clear();
    }

    /// Number of keys currently locked.
    pub fn len(&self) -> usize {
        self.rows.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[tokio::test]
    async fn younger_requesters_queue_and_get_the_lock_in_arrival_order() {
        let table = Arc::new(LockTable::default());
        assert!(table.acquire(b"k", "t1", 1, far(), &[]).await.unwrap());
        assert!(!table.acquire(b"k", "t1", 1, far(), &[]).await.unwrap());
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for (i, name) in ["t2", "t3", "t4"].into_iter().enumerate() {
            let (table, order) = (table.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                table.acquire(b"k", name, 2 + i as u64, far(), &[]).await.unwrap();
                order.lock().unwrap().push(name);
                tokio::time::sleep(Duration::from_millis(5)).await;
                table.release(name, [&b"k".to_vec()]);
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(order.lock().unwrap().is_empty(), "everyone waits for the holder");
        table.release("t1", [&b"k".to_vec()]);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec!["t2", "t3", "t4"]);
        assert!(table.is_empty());
    }

    #[tokio::test]
    async fn an_older_requester_wounds_the_holder_then_waits_for_it() {
        let table = Arc::new(LockTable::default());
        table.acquire(b"k", "young", 20, far(), &[]).await.unwrap();
        let started = Instant::now();
        assert_eq!(table.acquire(b"k", "old", 10, far(), &[]).await, Err(LockConflict::Wound { holder: "young".into() }));
        assert!(started.elapsed() >= WOUND_AFTER, "it waited a moment before wounding");
        assert_eq!(table.len(), 1, "and left the line");
        // The holder could not be aborted (it prepared): the older one waits.
        let waiter = {
            let table = table.clone();
            tokio::spawn(async move { table.acquire(b"k", "old", 10, far(), &["young".to_string()]).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        table.release("young", [&b"k".to_vec()]);
        assert_eq!(waiter.await.unwrap(), Ok(true));
    }

    #[tokio::test]
    async fn a_holder_that_finishes_within_the_moment_is_not_wounded() {
        let table = Arc::new(LockTable::default());
        table.acquire(b"k", "young", 20, far(), &[]).await.unwrap();
        let release = {
            let table = table.clone();
            tokio::spawn(async move {
                tokio::time::sleep(WOUND_AFTER / 5).await;
                table.release("young", [&b"k".to_vec()]);
            })
        };
        assert_eq!(table.acquire(b"k", "old", 10, far(), &[]).await, Ok(true));
        release.await.unwrap();
    }

    #[tokio::test]
    async fn a_wait_ends_at_the_deadline_leaves_the_line_and_only_the_owner_releases() {
        let table = LockTable::default();
        table.acquire(b"k", "t1", 1, far(), &[]).await.unwrap();
        let soon = Instant::now() + Duration::from_millis(30);
        assert_eq!(table.acquire(b"k", "t2", 2, soon, &[]).await, Err(LockConflict::Timeout { holder: "t1".into() }));
        table.release("t2", [&b"k".to_vec()]);
        assert_eq!(table.len(), 1);
        table.release("t1", [&b"k".to_vec()]);
        assert!(table.is_empty(), "the timed-out waiter left the line: nobody inherits the lock");
    }
}
