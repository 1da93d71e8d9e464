//! Exclusive row locks held by transactions until they commit or abort, with
//! wait-die deadlock prevention.
//!
//! Every transaction carries its start timestamp. When a lock is held by
//! another transaction, an older requester waits (until the lock is released
//! or its deadline passes) and a younger requester dies at once. Waits
//! therefore only ever go from older to younger transactions, so no cycle, and
//! no distributed deadlock, can form. The deadline is a backstop.

use std::collections::HashMap;
use std::sync::Mutex;
use tessera_model::metrics::{Counter, Histogram};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Who holds a lock: (start timestamp, transaction id). Smaller is older.
type Owner = (u64, String);

#[derive(Default)]
pub struct LockTable {
    owners: Mutex<HashMap<Vec<u8>, Owner>>,
    released: Notify,
    /// Requests that waited for a holder, and how long (metrics).
    pub waits: Counter,
    pub wait_seconds: Histogram,
}

/// Why a lock was not granted.
#[derive(Debug, PartialEq)]
pub enum LockConflict {
    /// The requester is younger than the holder and must abort (wait-die).
    Die { holder: String },
    /// The requester waited until its deadline.
    Timeout { holder: String },
}

impl LockTable {
    /// Takes the lock on `key` for transaction `txn` started at `ts`.
    /// Returns true if newly taken, false if `txn` already held it.
    pub async fn acquire(&self, key: &[u8], txn: &str, ts: u64, deadline: Instant) -> Result<bool, LockConflict> {
        let me: Owner = (ts, txn.to_string());
        let mut waiting_since: Option<Instant> = None;
        let waited = |since: Option<Instant>| {
            if let Some(since) = since {
                self.wait_seconds.observe_duration(since.elapsed());
            }
        };
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let holder = {
                let mut owners = self.owners.lock().unwrap();
                match owners.get(key) {
                    None => {
                        owners.insert(key.to_vec(), me);
                        drop(owners);
                        waited(waiting_since);
                        return Ok(true);
                    }
                    Some(owner) if owner.1 == txn => return Ok(false),
                    Some(owner) if me > *owner => {
                        let holder = owner.1.clone();
                        drop(owners);
                        waited(waiting_since);
                        return Err(LockConflict::Die { holder });
                    }
                    Some(owner) => owner.1.clone(),
                }
            };
            if waiting_since.is_none() {
                waiting_since = Some(Instant::now());
                self.waits.inc();
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                waited(waiting_since);
                return Err(LockConflict::Timeout { holder });
            }
        }
    }

    /// Takes a lock that must be free (recovery of prepared transactions).
    pub fn acquire_now(&self, key: &[u8], txn: &str, ts: u64) -> bool {
        let mut owners = self.owners.lock().unwrap();
        match owners.get(key) {
            None => {
                owners.insert(key.to_vec(), (ts, txn.to_string()));
                true
            }
            Some(owner) => owner.1 == txn,
        }
    }

    /// Releases the locks `txn` holds on `keys` and wakes waiters.
    pub fn release<'a>(&self, txn: &str, keys: impl IntoIterator<Item = &'a Vec<u8>>) {
        {
            let mut owners = self.owners.lock().unwrap();
            for key in keys {
                if owners.get(key).is_some_and(|o| o.1 == txn) {
                    owners.remove(key);
                }
            }
        }
        self.released.notify_waiters();
    }

    /// Drops every lock and wakes every waiter (a primary that becomes a
    /// replica: its transactions are gone).
    pub fn clear(&self) {
        self.owners.lock().unwrap().clear();
        self.released.notify_waiters();
    }

    /// Number of keys currently locked.
    pub fn len(&self) -> usize {
        self.owners.lock().unwrap().len()
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
    async fn an_older_waiter_gets_the_lock_when_it_is_released() {
        let table = Arc::new(LockTable::default());
        assert!(table.acquire(b"k", "young", 20, far()).await.unwrap());
        assert!(!table.acquire(b"k", "young", 20, far()).await.unwrap());
        let waiter = {
            let table = table.clone();
            tokio::spawn(async move { table.acquire(b"k", "old", 10, far()).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "the older transaction waits");
        table.release("young", [&b"k".to_vec()]);
        assert_eq!(waiter.await.unwrap(), Ok(true));
    }

    #[tokio::test]
    async fn a_younger_requester_dies_at_once() {
        let table = LockTable::default();
        table.acquire(b"k", "old", 10, far()).await.unwrap();
        // Die, not Timeout: the requester did not wait for its deadline.
        assert_eq!(table.acquire(b"k", "young", 20, far()).await, Err(LockConflict::Die { holder: "old".into() }));
    }

    #[tokio::test]
    async fn a_wait_ends_at_the_deadline_and_only_the_owner_releases() {
        let table = LockTable::default();
        table.acquire(b"k", "young", 20, far()).await.unwrap();
        let soon = Instant::now() + Duration::from_millis(30);
        assert_eq!(table.acquire(b"k", "old", 10, soon).await, Err(LockConflict::Timeout { holder: "young".into() }));
        table.release("old", [&b"k".to_vec()]);
        assert_eq!(table.len(), 1);
    }

    #[tokio::test]
    async fn opposite_order_locking_cannot_deadlock() {
        // T1 (older) holds a, T2 (younger) holds b; each then wants the other.
        let table = Arc::new(LockTable::default());
        table.acquire(b"a", "t1", 1, far()).await.unwrap();
        table.acquire(b"b", "t2", 2, far()).await.unwrap();
        let t1 = {
            let table = table.clone();
            tokio::spawn(async move { table.acquire(b"b", "t1", 1, far()).await })
        };
        // T2 dies instead of waiting; aborting it releases b and T1 proceeds.
        assert!(matches!(table.acquire(b"a", "t2", 2, far()).await, Err(LockConflict::Die { .. })));
        table.release("t2", [&b"b".to_vec()]);
        assert_eq!(t1.await.unwrap(), Ok(true));
    }
}
