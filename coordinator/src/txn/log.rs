//! The coordinator's journal and the 2PC decision log on it: one durable
//! COMMIT record per committed multi-group transaction, in the
//! coordinator's storage engine (RocksDB; memory in tests). The saga log
//! and idempotency records share the journal.
//!
//! Presumed abort: only COMMIT decisions are logged; no record means abort.
//! A record is fsynced before the decision is acted on (the commit point) and
//! deleted, without a sync, once every participant has acknowledged.
//!
//! Group commit: callers queue their records; one writer task drains the
//! queue into a single atomic batch and one synced write, so concurrent
//! commits share an fsync.

use crate::background::Background;
use crate::catalog::ShardGroupId;
use crate::error::CoordError;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tessera_model::metrics::Histogram;
use tessera_model::sqlstate;
use tessera_storage::group::gather;
use tessera_storage::{scan_prefix, Engine, Space, StorageError, StorageFault, Write};
use tokio::sync::{mpsc, oneshot};

const PREFIX: &str = "txnlog/";

/// A logged COMMIT decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub txn_id: String,
    pub timestamp: u64,
    /// The decided commit timestamp: every participant writes its versions
    /// at it.
    pub commit_ts: u64,
    /// The participants that must apply the commit.
    pub participants: Vec<ShardGroupId>,
}

/// Why the journal could not read or write.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    /// The writer task has ended (the coordinator is stopping).
    #[error("the coordinator's journal writer has stopped")]
    Stopped,
    /// The storage engine failed (disk full, I/O error, ...).
    #[error("coordinator journal: {0}")]
    Storage(#[from] StorageError),
    #[error("corrupt journal record {key}: {cause}")]
    Corrupt { key: String, cause: String },
}

impl JournalError {
    /// The error a client gets for it, saying what could not be done:
    /// 53100 or 58030 for a full disk or an I/O error, XX000 otherwise.
    pub fn context(self, what: &str) -> CoordError {
        match self {
            JournalError::Storage(e) => {
                let sqlstate = match e.fault {
                    StorageFault::DiskFull => sqlstate::DISK_FULL,
                    StorageFault::Io => sqlstate::IO_ERROR,
                    StorageFault::Other => return CoordError::Internal(format!("{what}: {e}")),
                };
                CoordError::Storage { message: format!("{what}: the coordinator's journal: {e}"), sqlstate }
            }
            other => CoordError::Internal(format!("{what}: {other}")),
        }
    }
}

type JournalResult<T> = std::result::Result<T, JournalError>;

/// One write to the journal: a synced put (answered once durable) or an
/// unsynced delete that rides along with the next synced write.
enum Request {
    Put(Vec<(String, Vec<u8>)>, oneshot::Sender<JournalResult<()>>),
    Delete(String),
}

/// The coordinator's durable log, shared by the 2PC decision log and the
/// saga log: queued puts are merged into one batch and one fsync.
pub struct Journal {
    engine: Arc<dyn Engine>,
    queue: mpsc::UnboundedSender<Request>,
    syncs: Arc<AtomicU64>,
    /// Durable puts per fsync, and the time of each write with its fsync.
    pub batch_sizes: Arc<Histogram>,
    pub write_seconds: Arc<Histogram>,
}

impl Journal {
    /// Starts the writer task, which waits up to `window` for more records
    /// while `in_flight()` says other callers may be about to write. Must
    /// run inside a tokio runtime. The writer ends once every holder of the
    /// journal has let go of it, after writing what was queued.
    pub fn start(engine: Arc<dyn Engine>, window: Duration, in_flight: InFlight, background: &Background) -> Journal {
        let (queue, requests) = mpsc::unbounded_channel();
        let syncs = Arc::new(AtomicU64::new(0));
        let batch_sizes = Arc::new(Histogram::sizes());
        let write_seconds = Arc::new(Histogram::latency());
        let meters = (batch_sizes.clone(), write_seconds.clone());
        background.spawn(writer(engine.clone(), requests, syncs.clone(), window, in_flight, meters));
        Journal { engine, queue, syncs, batch_sizes, write_seconds }
    }

    /// Durably stores `value` under `key`; returns once it is fsynced.
    pub async fn put(&self, key: String, value: Vec<u8>) -> JournalResult<()> {
        self.put_many(vec![(key, value)]).await
    }

    /// Durably stores every entry, atomically (all or none after a crash);
    /// returns once they are fsynced.
    pub async fn put_many(&self, entries: Vec<(String, Vec<u8>)>) -> JournalResult<()> {
        let (done, wait) = oneshot::channel();
        self.queue.send(Request::Put(entries, done)).map_err(|_| JournalError::Stopped)?;
        wait.await.map_err(|_| JournalError::Stopped)?
    }

    /// Deletes `key` without waiting; durable with the next synced put.
    pub fn delete(&self, key: String) {
        let _ = self.queue.send(Request::Delete(key));
    }

    pub fn get(&self, key: &str) -> JournalResult<Option<Vec<u8>>> {
        Ok(self.engine.get(Space::Data, key.as_bytes())?)
    }

    /// Every (key, value) under `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &str) -> JournalResult<Vec<(String, Vec<u8>)>> {
        let entries = scan_prefix(self.engine.as_ref(), Space::Data, prefix.as_bytes())?;
        Ok(entries.into_iter().map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v)).collect())
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
    pub fn new(engine: Arc<dyn Engine>) -> DecisionLog {
        DecisionLog::on(Arc::new(Journal::start(engine, Duration::ZERO, Arc::new(|| 0), &Background::detached())))
    }

    pub fn on(journal: Arc<Journal>) -> DecisionLog {
        DecisionLog { journal }
    }

    /// Durably records a COMMIT decision, with `extra` entries (an
    /// idempotency record) in the same atomic batch; returns once it is
    /// fsynced.
    pub async fn log_commit(&self, record: CommitRecord, extra: Vec<(String, Vec<u8>)>) -> JournalResult<()> {
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

    /// The commit timestamp of the transaction's logged COMMIT decision,
    /// if there is one.
    pub fn committed_at(&self, txn_id: &str) -> JournalResult<Option<u64>> {
        let key = key(txn_id);
        let Some(bytes) = self.journal.get(&key)? else { return Ok(None) };
        let record: CommitRecord = serde_json::from_slice(&bytes).map_err(|e| JournalError::Corrupt { key, cause: e.to_string() })?;
        Ok(Some(record.commit_ts))
    }

    /// Every logged decision not yet forgotten (read at startup).
    pub fn pending(&self) -> JournalResult<Vec<CommitRecord>> {
        self.journal
            .scan_prefix(PREFIX)?
            .into_iter()
            .map(|(key, v)| serde_json::from_slice(&v).map_err(|e| JournalError::Corrupt { key, cause: e.to_string() }))
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
    engine: Arc<dyn Engine>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    syncs: Arc<AtomicU64>,
    window: Duration,
    in_flight: InFlight,
    (batch_sizes, write_seconds): (Arc<Histogram>, Arc<Histogram>),
) {
    while let Some(first) = requests.recv().await {
        let batch = gather(first, &mut requests, window, in_flight.as_ref(), usize::MAX).await;
        let mut writes = Vec::new();
        let mut waiters = Vec::new();
        for request in batch {
            match request {
                Request::Put(entries, done) => {
                    writes.extend(entries.into_iter().map(|(key, value)| Write { space: Space::Data, key: key.into_bytes(), value: Some(value) }));
                    waiters.push(done);
                }
                Request::Delete(key) => writes.push(Write { space: Space::Data, key: key.into_bytes(), value: None }),
            }
        }
        let sync = !waiters.is_empty();
        let engine = engine.clone();
        let started = std::time::Instant::now();
        let outcome = tokio::task::spawn_blocking(move || engine.apply(writes, sync).map_err(JournalError::from))
            .await
            .unwrap_or_else(|e| Err(JournalError::Storage(StorageError::other(format!("the journal's write task failed: {e}")))));
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
    use tessera_storage::rocks::RocksEngine;

    fn record(id: &str) -> CommitRecord {
        CommitRecord { txn_id: id.into(), timestamp: 1, commit_ts: 2, participants: vec![1, 2] }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_share_fsyncs_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let engine: Arc<dyn Engine> = Arc::new(RocksEngine::open(dir.path()).unwrap());
        let log = Arc::new(DecisionLog::new(engine.clone()));
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
        assert!(log.committed_at("t7").unwrap().is_some());
        log.forget("t7");
        log.log_commit(record("after"), vec![("idem/k".into(), b"v".to_vec())]).await.unwrap();
        assert_eq!(log.journal().get("idem/k").unwrap(), Some(b"v".to_vec()), "extra entries are written with the decision");
        assert!(log.committed_at("t7").unwrap().is_none());
        assert!(log.committed_at("never").unwrap().is_none());
        assert_eq!(log.pending().unwrap().len(), 200);
        drop(log);
        // The writer task lets go of the database once its queue closes.
        let held = Arc::downgrade(&engine);
        drop(engine);
        tessera_storage::wait_closed(&held, "the journal's engine").await;
        let reopened = DecisionLog::new(Arc::new(RocksEngine::open(dir.path()).unwrap()));
        assert_eq!(reopened.pending().unwrap().len(), 200, "decisions survive a restart");
    }

    #[tokio::test]
    async fn a_decision_survives_a_power_loss_the_moment_it_is_acknowledged_and_a_forget_may_not() {
        let engine = Arc::new(tessera_storage::crash::CrashEngine::default());
        let log = DecisionLog::new(engine.clone());
        log.log_commit(record("t1"), Vec::new()).await.unwrap();
        // Acknowledged means durable: a crash right now keeps it.
        let after = DecisionLog::new(Arc::new(engine.crash()));
        assert_eq!(after.pending().unwrap(), vec![record("t1")]);
        // Forgetting is not synced: lost in a crash, the decision is
        // delivered again after the restart (deliveries are idempotent).
        log.forget("t1");
        while log.committed_at("t1").unwrap().is_some() {
            tokio::task::yield_now().await;
        }
        assert_eq!(DecisionLog::new(Arc::new(engine.crash())).pending().unwrap(), vec![record("t1")]);
        // The next synced write carries the forget with it.
        log.log_commit(record("t2"), Vec::new()).await.unwrap();
        assert_eq!(DecisionLog::new(Arc::new(engine.crash())).pending().unwrap(), vec![record("t2")]);
    }

    /// An engine whose disk is full: reads work, writes fail.
    struct FullDisk(tessera_storage::memory::MemoryEngine);

    impl Engine for FullDisk {
        fn get(&self, space: Space, key: &[u8]) -> tessera_storage::Result<Option<Vec<u8>>> {
            self.0.get(space, key)
        }
        fn scan(&self, space: Space, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> tessera_storage::Result<()> {
            self.0.scan(space, start, end, visit)
        }
        fn apply(&self, _: Vec<Write>, _: bool) -> tessera_storage::Result<()> {
            Err(StorageError { fault: StorageFault::DiskFull, message: "No space left on device".into() })
        }
        fn sync_wal(&self) -> tessera_storage::Result<()> {
            Ok(())
        }
        fn delete_range(&self, _: &[u8], _: &[u8]) -> tessera_storage::Result<()> {
            self.apply(Vec::new(), true)
        }
        fn clear(&self, _: Space) -> tessera_storage::Result<()> {
            self.apply(Vec::new(), true)
        }
        fn snapshot(&self) -> Box<dyn tessera_storage::Snapshot + '_> {
            self.0.snapshot()
        }
        fn syncs(&self) -> u64 {
            0
        }
    }

    #[tokio::test]
    async fn a_decision_that_cannot_be_logged_for_a_full_disk_is_53100() {
        let log = DecisionLog::new(Arc::new(FullDisk(Default::default())));
        let e = log.log_commit(record("t1"), Vec::new()).await.unwrap_err();
        assert!(matches!(e, JournalError::Storage(_)), "{e}");
        let e = e.context("transaction aborted");
        assert_eq!(e.sqlstate(), sqlstate::DISK_FULL, "{e}");
        assert!(e.to_string().contains("journal") && e.to_string().contains("No space left"), "{e}");
        assert!(log.committed_at("t1").unwrap().is_none(), "nothing was logged: presumed abort");
    }
}
