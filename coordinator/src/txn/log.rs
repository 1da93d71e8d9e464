//! The coordinator's journal and the 2PC decision log on it: one durable
//! COMMIT record per committed multi-group transaction, in the
//! coordinator's RocksDB. The saga log shares the journal.
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
use tessera_model::metrics::Histogram;
use tessera_storage::group::gather;
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

/// One write to the journal: a synced put (answered once durable) or an
/// unsynced delete that rides along with the next synced write.
enum Request {
    Put(Vec<(String, Vec<u8>)>, oneshot::Sender<Result<(), String>>),
    Delete(String),
}

/// The coordinator's durable log, shared by the 2PC decision log and the
/// saga log: queued puts are merged into one `WriteBatch` and one fsync.
pub struct Journal {
    db: Arc<DB>,
    queue: mpsc::UnboundedSender<Request>,
    syncs: Arc<AtomicU64>,
    /// Durable puts per fsync, and the time of each write with its fsync.
    pub batch_sizes: Arc<Histogram>,
    pub write_seconds: Arc<Histogram>,
}

impl Journal {
    /// Starts the writer task, which waits up to `window` for more records
    /// while `in_flight()` says other callers may be about to write. Must
    /// run inside a tokio runtime.
    pub fn start(db: Arc<DB>, window: Duration, in_flight: InFlight) -> Journal {
        let (queue, requests) = mpsc::unbounded_channel();
        let syncs = Arc::new(AtomicU64::new(0));
        let batch_sizes = Arc::new(Histogram::sizes());
        let write_seconds = Arc::new(Histogram::latency());
        let meters = (batch_sizes.clone(), write_seconds.clone());
        tokio::spawn(writer(db.clone(), requests, syncs.clone(), window, in_flight, meters));
        Journal { db, queue, syncs, batch_sizes, write_seconds }
    }

    /// Durably stores `value` under `key`; returns once it is fsynced.
    pub async fn put(&self, key: String, value: Vec<u8>) -> Result<(), String> {
        self.put_many(vec![(key, value)]).await
    }

    /// Durably stores every entry, atomically (all or none after a crash);
    /// returns once they are fsynced.
    pub async fn put_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.queue.send(Request::Put(entries, done)).map_err(|_| "coordinator log writer stopped".to_string())?;
        wait.await.map_err(|_| "coordinator log writer stopped".to_string())?
    }

    /// Deletes `key` without waiting; durable with the next synced put.
    pub fn delete(&self, key: String) {
        let _ = self.queue.send(Request::Delete(key));
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.db.get(key).map_err(|e| e.to_string())
    }

    /// Every (key, value) under `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator(prefix.as_bytes()) {
            let (k, v) = item.map_err(|e| e.to_string())?;
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            out.push((String::from_utf8_lossy(&k).into_owned(), v.to_vec()));
        }
        Ok(out)
    }

    /// fsyncs performed since the journal started.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

pub struct DecisionLog {
    journal: Arc<Journal>,
}

fn key(txn_id: &str) -> String {
    format!("{PREFIX}{txn_id}")
}

impl DecisionLog {
    /// A decision log with a journal of its own, without a window.
    pub fn new(db: Arc<DB>) -> DecisionLog {
        DecisionLog::on(Arc::new(Journal::start(db, Duration::ZERO, Arc::new(|| 0))))
    }

    pub fn on(journal: Arc<Journal>) -> DecisionLog {
        DecisionLog { journal }
    }

    /// Durably records a COMMIT decision, with `extra` entries (an
    /// idempotency record) in the same atomic batch; returns once it is
    /// fsynced.
    pub async fn log_commit(&self, record: CommitRecord, extra: Vec<(String, Vec<u8>)>) -> Result<(), String> {
        let mut entries = vec![(key(&record.txn_id), serde_json::to_vec(&record).expect("records serialize"))];
        entries.extend(extra);
        self.journal.put_many(entries).await
    }

    /// The journal the log writes to.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// Drops a record whose commit every participant acknowledged.
    pub fn forget(&self, txn_id: &str) {
        self.journal.delete(key(txn_id));
    }

    /// True when a COMMIT decision is logged for the transaction.
    pub fn is_committed(&self, txn_id: &str) -> Result<bool, String> {
        Ok(self.journal.get(&key(txn_id))?.is_some())
    }

    /// Every logged decision not yet forgotten (read at startup).
    pub fn pending(&self) -> Result<Vec<CommitRecord>, String> {
        self.journal
            .scan_prefix(PREFIX)?
            .into_iter()
            .map(|(k, v)| serde_json::from_slice(&v).map_err(|e| format!("corrupt decision record {k}: {e}")))
            .collect()
    }

    /// fsyncs of the shared journal since it started.
    pub fn syncs(&self) -> u64 {
        self.journal.syncs()
    }
}

/// How many callers may be about to write.
pub type InFlight = Arc<dyn Fn() -> usize + Send + Sync>;

async fn writer(
    db: Arc<DB>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    syncs: Arc<AtomicU64>,
    window: Duration,
    in_flight: InFlight,
    (batch_sizes, write_seconds): (Arc<Histogram>, Arc<Histogram>),
) {
    while let Some(first) = requests.recv().await {
        let batch = gather(first, &mut requests, window, in_flight.as_ref(), usize::MAX).await;
        let mut write = WriteBatch::default();
        let mut waiters = Vec::new();
        for request in batch {
            match request {
                Request::Put(entries, done) => {
                    for (key, value) in entries {
                        write.put(key, value);
                    }
                    waiters.push(done);
                }
                Request::Delete(key) => write.delete(key),
            }
        }
        let sync = !waiters.is_empty();
        let db = db.clone();
        let started = std::time::Instant::now();
        let outcome = tokio::task::spawn_blocking(move || {
            let mut options = WriteOptions::default();
            options.set_sync(sync);
            db.write_opt(write, &options).map_err(|e| format!("coordinator log write failed: {e}"))
        })
        .await
        .unwrap_or_else(|e| Err(format!("coordinator log write task failed: {e}")));
        if sync {
            syncs.fetch_add(1, Ordering::Relaxed);
            batch_sizes.observe(waiters.len() as f64);
            write_seconds.observe_duration(started.elapsed());
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
            tokio::spawn(async move { log.log_commit(record(&format!("t{i}")), Vec::new()).await })
        });
        for c in futures::future::join_all(commits).await {
            c.unwrap().unwrap();
        }
        let syncs = log.syncs();
        println!("200 concurrent commit records took {syncs} fsyncs");
        assert!(syncs < 200, "group commit batches concurrent decisions ({syncs} fsyncs)");
        assert!(log.is_committed("t7").unwrap());
        log.forget("t7");
        log.log_commit(record("after"), vec![("idem/k".into(), b"v".to_vec())]).await.unwrap();
        assert_eq!(log.journal().get("idem/k").unwrap(), Some(b"v".to_vec()), "extra entries are written with the decision");
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
