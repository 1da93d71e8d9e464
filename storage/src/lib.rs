//! The storage engine behind a shard: an ordered key-value store with two
//! keyspaces and atomic, durable batches.
//!
//! - [`rocks`]: RocksDB on disk (the real engine).
//! - [`memory`]: a `BTreeMap` engine for tests and `--in-memory` nodes.
//! - [`group`]: group commit of concurrent synced batches.
//!
//! Both pass the same conformance suite (`tests` below).

pub mod group;
pub mod memory;
pub mod rocks;

use std::sync::atomic::{AtomicU64, Ordering};

/// The keyspaces of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Space {
    /// Committed rows, keyed by `table id ++ primary key`.
    Data,
    /// Durable records of prepared transactions, keyed by transaction id.
    Txn,
    /// The replication log: records keyed by their sequence number
    /// (8 bytes, big-endian).
    Log,
    /// The node's own state: epoch, role, last applied record.
    Meta,
}

impl Space {
    pub const ALL: [Space; 4] = [Space::Data, Space::Txn, Space::Log, Space::Meta];

    /// The number a log record uses for the space.
    pub fn number(self) -> u32 {
        match self {
            Space::Data => 0,
            Space::Txn => 1,
            Space::Log => 2,
            Space::Meta => 3,
        }
    }

    pub fn from_number(n: u32) -> Option<Space> {
        Space::ALL.into_iter().find(|s| s.number() == n)
    }
}

/// A consistent, point-in-time view of an engine.
pub trait Snapshot {
    /// Visits keys in `[start, end)` as they were when the snapshot was taken.
    fn scan(&self, space: Space, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()>;
}

/// One write in a batch: `Some(value)` puts, `None` deletes.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub space: Space,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// What kind of storage failure happened: clients are told apart by
/// PostgreSQL's classes (53100 disk full, 58030 I/O error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFault {
    DiskFull,
    Io,
    Other,
}

/// Storage failures. The message names the path or operation.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StorageError {
    pub fault: StorageFault,
    pub message: String,
}

impl StorageError {
    pub fn other(message: impl Into<String>) -> StorageError {
        StorageError { fault: StorageFault::Other, message: message.into() }
    }

    /// Classifies an error the operating system or RocksDB reported.
    pub fn classify(message: String) -> StorageError {
        let lower = message.to_ascii_lowercase();
        let fault = if lower.contains("no space left") || lower.contains("enospc") || lower.contains("disk quota") {
            StorageFault::DiskFull
        } else if lower.contains("io error") || lower.contains("input/output error") {
            StorageFault::Io
        } else {
            StorageFault::Other
        };
        StorageError { fault, message }
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// An ordered key-value store. Batches are atomic; `apply` with `sync`
/// returns only after the batch is on stable storage.
pub trait Engine: Send + Sync + 'static {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Visits keys in `[start, end)` in order until `visit` returns false.
    fn scan(&self, space: Space, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()>;

    /// Applies all writes atomically; with `sync`, durably (WAL fsync).
    fn apply(&self, writes: Vec<Write>, sync: bool) -> Result<()>;

    /// Makes every write applied so far durable (fsyncs the WAL).
    fn sync_wal(&self) -> Result<()>;

    /// Deletes every data key in `[start, end)`, durably.
    fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<()>;

    /// Deletes every data key in `[start, end)` and applies `writes`, in
    /// one atomic batch (with `sync`, durably). Engines that cannot do it
    /// atomically fall back to two steps.
    fn apply_with_range_delete(&self, start: &[u8], end: &[u8], writes: Vec<Write>, sync: bool) -> Result<()> {
        self.delete_range(start, end)?;
        self.apply(writes, sync)
    }

    /// Deletes every key of a keyspace, durably.
    fn clear(&self, space: Space) -> Result<()>;

    /// A point-in-time view, for shipping a snapshot to a replica.
    fn snapshot(&self) -> Box<dyn Snapshot + '_>;

    /// Number of durable (synced) batches applied since the engine opened.
    fn syncs(&self) -> u64;

    /// Number of WAL fsyncs performed since the engine opened. Concurrent
    /// synced batches may share one (group commit), so this can be lower
    /// than [`Engine::syncs`].
    fn wal_syncs(&self) -> u64 {
        self.syncs()
    }
}

/// Counts synced writes for status and benchmarks.
#[derive(Default, Debug)]
pub(crate) struct SyncCounter(AtomicU64);

impl SyncCounter {
    pub(crate) fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// How long [`wait_closed`] waits.
pub const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits (at most [`CLOSE_WAIT`]) until the last holder of an engine or
/// database has let go of it, so that it is closed (flushed, its files
/// released) before its directory is removed; warns naming `what` if it is
/// still held by then.
pub async fn wait_closed<T: ?Sized>(held: &std::sync::Weak<T>, what: &str) {
    let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
    while held.strong_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    if held.strong_count() > 0 {
        tracing::warn!("{what} is still in use {CLOSE_WAIT:?} after shutdown");
    }
}

#[cfg(test)]
mod tests {
    //! The conformance suite every engine passes.
    use super::*;

    fn put(space: Space, k: &[u8], v: &[u8]) -> Write {
        Write { space, key: k.to_vec(), value: Some(v.to_vec()) }
    }

    fn keys(engine: &dyn Engine, space: Space, start: &[u8], end: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        engine
            .scan(space, start, end, &mut |k, _| {
                out.push(k.to_vec());
                true
            })
            .unwrap();
        out
    }

    fn conformance(engine: &dyn Engine) {
        engine
            .apply(vec![put(Space::Data, b"b", b"2"), put(Space::Data, b"a", b"1"), put(Space::Data, b"c", b"3"), put(Space::Txn, b"a", b"t")], true)
            .unwrap();
        assert_eq!(engine.get(Space::Data, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(engine.get(Space::Txn, b"a").unwrap(), Some(b"t".to_vec()));
        assert_eq!(engine.get(Space::Data, b"zz").unwrap(), None);
        // Keyspaces are separate and scans are ordered and half-open.
        assert_eq!(keys(engine, Space::Data, b"a", b"c"), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(keys(engine, Space::Txn, b"", b"\xff"), vec![b"a".to_vec()]);
        // The visitor can stop early.
        let mut seen = 0;
        engine
            .scan(Space::Data, b"", b"\xff", &mut |_, _| {
                seen += 1;
                false
            })
            .unwrap();
        assert_eq!(seen, 1);
        // Deletes and puts in one batch.
        engine.apply(vec![Write { space: Space::Data, key: b"a".to_vec(), value: None }, put(Space::Data, b"d", b"4")], true).unwrap();
        assert_eq!(keys(engine, Space::Data, b"", b"\xff"), vec![b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]);
        engine.delete_range(b"b", b"d").unwrap();
        assert_eq!(keys(engine, Space::Data, b"", b"\xff"), vec![b"d".to_vec()]);
        assert_eq!(keys(engine, Space::Txn, b"", b"\xff"), vec![b"a".to_vec()]);
        assert!(engine.syncs() >= 2);
        // A snapshot does not see later writes.
        engine.apply(vec![put(Space::Log, b"\x00\x01", b"e1")], true).unwrap();
        {
            let snapshot = engine.snapshot();
            engine.apply(vec![put(Space::Log, b"\x00\x02", b"e2"), put(Space::Data, b"z", b"9")], true).unwrap();
            let mut seen = Vec::new();
            snapshot
                .scan(Space::Log, b"", b"\xff", &mut |k, _| {
                    seen.push(k.to_vec());
                    true
                })
                .unwrap();
            assert_eq!(seen, vec![b"\x00\x01".to_vec()]);
        }
        assert_eq!(keys(engine, Space::Log, b"", b"\xff").len(), 2);
        // Clearing one keyspace leaves the others.
        engine.clear(Space::Log).unwrap();
        assert!(keys(engine, Space::Log, b"", b"\xff").is_empty());
        assert_eq!(keys(engine, Space::Data, b"", b"\xff"), vec![b"d".to_vec(), b"z".to_vec()]);
    }

    #[test]
    fn memory_engine_conforms() {
        conformance(&memory::MemoryEngine::default());
    }

    #[test]
    fn rocksdb_engine_conforms_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = rocks::RocksEngine::open(dir.path()).unwrap();
            conformance(&engine);
        }
        let engine = rocks::RocksEngine::open(dir.path()).unwrap();
        assert_eq!(engine.get(Space::Data, b"d").unwrap(), Some(b"4".to_vec()));
        assert_eq!(engine.get(Space::Txn, b"a").unwrap(), Some(b"t".to_vec()));
    }
}
