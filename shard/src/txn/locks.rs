//! Exclusive row locks held by transactions until they commit or abort.
//!
//! A waiter parks on a `Notify` that every release wakes, and gives up at its
//! deadline with a retryable lock timeout, so no wait can hang.

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Default)]
pub struct LockTable {
    owners: Mutex<HashMap<Vec<u8>, String>>,
    released: Notify,
}

/// The lock could not be taken before the deadline; names the holder.
#[derive(Debug)]
pub struct LockTimeout {
    pub holder: String,
}

impl LockTable {
    /// Takes the lock on `key` for `txn`, waiting until `deadline` at most.
    /// Returns true if the lock was newly taken, false if `txn` already held it.
    pub async fn acquire(&self, key: &[u8], txn: &str, deadline: Instant) -> Result<bool, LockTimeout> {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let holder = {
                let mut owners = self.owners.lock().unwrap();
                match owners.get(key) {
                    None => {
                        owners.insert(key.to_vec(), txn.to_string());
                        return Ok(true);
                    }
                    Some(owner) if owner == txn => return Ok(false),
                    Some(owner) => owner.clone(),
                }
            };
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return Err(LockTimeout { holder });
            }
        }
    }

    /// Takes a lock that must be free (recovery of prepared transactions).
    pub fn acquire_now(&self, key: &[u8], txn: &str) -> bool {
        let mut owners = self.owners.lock().unwrap();
        match owners.get(key) {
            None => {
                owners.insert(key.to_vec(), txn.to_string());
                true
            }
            Some(owner) => owner == txn,
        }
    }

    /// Releases the locks `txn` holds on `keys` and wakes waiters.
    pub fn release<'a>(&self, txn: &str, keys: impl IntoIterator<Item = &'a Vec<u8>>) {
        {
            let mut owners = self.owners.lock().unwrap();
            for key in keys {
                if owners.get(key).is_some_and(|o| o == txn) {
                    owners.remove(key);
                }
            }
        }
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

    #[tokio::test]
    async fn a_waiter_gets_the_lock_when_it_is_released() {
        let table = Arc::new(LockTable::default());
        let far = Instant::now() + Duration::from_secs(10);
        assert!(table.acquire(b"k", "t1", far).await.unwrap());
        assert!(!table.acquire(b"k", "t1", far).await.unwrap());
        let waiter = {
            let table = table.clone();
            tokio::spawn(async move { table.acquire(b"k", "t2", far).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        table.release("t1", [&b"k".to_vec()]);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn a_waiter_times_out_and_learns_the_holder() {
        let table = LockTable::default();
        let soon = Instant::now() + Duration::from_millis(30);
        table.acquire(b"k", "t1", soon).await.unwrap();
        let err = table.acquire(b"k", "t2", soon).await.unwrap_err();
        assert_eq!(err.holder, "t1");
        table.release("t2", [&b"k".to_vec()]);
        assert_eq!(table.len(), 1, "only the owner releases a lock");
    }
}
