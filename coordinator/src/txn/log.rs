//! The 2PC decision log: one durable COMMIT record per committed
//! multi-group transaction, in the coordinator's RocksDB.
//!
//! Presumed abort: only COMMIT decisions are logged; no record means abort.
//! A record is fsynced before the decision is acted on (the commit point) and
//! deleted, without a sync, once every participant has acknowledged.
//!
//! Group commit: callers queue their records; one writer task drains the
//! queue into a single `WriteBatch` and one synced write, so concurrent
//! commits share an fsync.

use crate::catalog::ShardGroupId;
use rocksdb::{WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tessera_shard::storage::group::gather;
use tokio::sync::{mpsc, oneshot};

const PREFIX: &str = "txnlog/";

/// A logged COMMIT decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub txn_id: String,
    pub timestamp: u64,
    /// The participants that must apply the commit.
    pub participants: Vec<ShardGroupId>,
}

enum Request {
    Commit(CommitRecord, oneshot::Sender<Result<(), String>>),
    Forget(String),
}

pub struct DecisionLog {
    db: Arc<DB>,
    queue: mpsc::UnboundedSender<Request>,
    syncs: Arc<AtomicU64>,
}

fn key(txn_id: &str) -> String {
    format!("{PREFIX}{txn_id}")
}

impl DecisionLog {
    /// Starts the writer task. Must run inside a tokio runtime.
    pub fn new(db: Arc<DB>) -> DecisionLog {
        DecisionLog::with_window(db, Duration::ZERO, Arc::new(|| 0))
    }

    /// A log whose writer waits up to `window` for more decisions while
    /// `in_flight()` says other transactions may be about to decide.
    pub fn with_window(db: Arc<DB>, window: Duration, in_flight: InFlight) -> DecisionLog {
        let (queue, requests) = mpsc::unbounded_channel();
        let syncs = Arc::new(AtomicU64::new(0));
        tokio::spawn(writer(db.clone(), requests, syncs.clone(), window, in_flight));
        DecisionLog { db, queue, syncs }
    }

    /// Durably records a COMMIT decision; returns once it is fsynced.
    pub async fn log_commit(&self, record: CommitRecord) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.queue.send(Request::Commit(record, done)).map_err(|_| "decision log writer stopped".to_string())?;
        wait.await.map_err(|_| "decision log writer stopped".to_string())?
    }

    /// Drops a record whose commit every participant acknowledged.
    pub fn forget(&self, txn_id: &str) {
        let _ = self.queue.send(Request::Forget(txn_id.to_string()));
    }

    /// True when a COMMIT decision is logged for the transaction.
    pub fn is_committed(&self, txn_id: &str) -> Result<bool, String> {
        Ok(self.db.get(key(txn_id)).map_err(|e| e.to_string())?.is_some())
    }

    /// Every logged decision not yet forgotten (read at startup).
    pub fn pending(&self) -> Result<Vec<CommitRecord>, String> {
        let mut records = Vec::new();
        for item in self.db.prefix_iterator(PREFIX.as_bytes()) {
            let (k, v) = item.map_err(|e| e.to_string())?;
            if !k.starts_with(PREFIX.as_bytes()) {
                break;
            }
            records.push(serde_json::from_slice(&v).map_err(|e| format!("corrupt decision record {}: {e}", String::from_utf8_lossy(&k)))?);
        }
        Ok(records)
    }

    /// fsyncs performed by the log since it started.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

/// How many transactions may be about to log a decision.
pub type InFlight = Arc<dyn Fn() -> usize + Send + Sync>;

async fn writer(db: Arc<DB>, mut requests: mpsc::UnboundedReceiver<Request>, syncs: Arc<AtomicU64>, window: Duration, in_flight: InFlight) {
    while let Some(first) = requests.recv().await {
        let batch = gather(first, &mut requests, window, in_flight.as_ref(), usize::MAX).await;
        let mut write = WriteBatch::default();
        let mut waiters = Vec::new();
        for request in batch {
            match request {
                Request::Commit(record, done) => {
                    write.put(key(&record.txn_id), serde_json::to_vec(&record).expect("records serialize"));
                    waiters.push(done);
                }
                Request::Forget(id) => write.delete(key(&id)),
            }
        }
        let sync = !waiters.is_empty();
        let db = db.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let mut options = WriteOptions::default();
            options.set_sync(sync);
            db.write_opt(write, &options).map_err(|e| format!("decision log write failed: {e}"))
        })
        .await
        .unwrap_or_else(|e| Err(format!("decision log write task failed: {e}")));
        if sync {
            syncs.fetch_add(1, Ordering::Relaxed);
        }
        for done in waiters {
            let _ = done.send(outcome.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> CommitRecord {
        CommitRecord { txn_id: id.into(), timestamp: 1, participants: vec![1, 2] }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_share_fsyncs_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(DB::open_default(dir.path()).unwrap());
        let log = Arc::new(DecisionLog::new(db.clone()));
        let commits = (0..200).map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.log_commit(record(&format!("t{i}"))).await })
        });
        for c in futures::future::join_all(commits).await {
            c.unwrap().unwrap();
        }
        let syncs = log.syncs();
        println!("200 concurrent commit records took {syncs} fsyncs");
        assert!(syncs < 200, "group commit batches concurrent decisions ({syncs} fsyncs)");
        assert!(log.is_committed("t7").unwrap());
        log.forget("t7");
        log.log_commit(record("after")).await.unwrap();
        assert!(!log.is_committed("t7").unwrap());
        assert!(!log.is_committed("never").unwrap());
        assert_eq!(log.pending().unwrap().len(), 200);
        drop(log);
        drop(db);
        // The writer task lets go of the database once its queue closes.
        let mut reopened = DB::open_default(dir.path());
        for _ in 0..100 {
            if reopened.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            reopened = DB::open_default(dir.path());
        }
        let db = Arc::new(reopened.unwrap());
        let reopened = DecisionLog::new(db);
        assert_eq!(reopened.pending().unwrap().len(), 200, "decisions survive a restart");
    }
}
