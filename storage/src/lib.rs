//! The storage engine behind a shard and the coordinator: an ordered
//! key-value store with four keyspaces and atomic, durable batches.
//!
//! - [`rocks`]: RocksDB on disk (the real engine).
//! - [`memory`]: a `BTreeMap` engine for tests and `--in-memory` nodes.
//! - [`crash`]: an in-memory engine that loses unsynced writes in a
//!   simulated power loss, for crash tests without processes.
//! - [`group`]: group commit of concurrent synced batches.
//! - [`conformance`]: the suite every engine passes (the shard's logging
//!   engine and the crash engine included), public so that engines in other
//!   crates run it too.
//!
//! The coordinator keeps its catalog and journal on the same trait.

pub mod conformance;
pub mod crash;
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

/// Every (key, value) of `space` whose key starts with `prefix`, in order.
pub fn scan_prefix(engine: &dyn Engine, space: Space, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let end = prefix_end(prefix);
    let end = end.as_deref().unwrap_or(&[0xFF; 64]);
    engine.scan(space, prefix, end, &mut |k, v| {
        if !k.starts_with(prefix) {
            return false;
        }
        out.push((k.to_vec(), v.to_vec()));
        true
    })?;
    Ok(out)
}

/// The first key after every key that starts with `prefix`, if there is one
/// (a prefix of 0xFF bytes only has none).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
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
    use super::*;

    #[test]
    fn memory_engine_conforms() {
        conformance::check(&memory::MemoryEngine::default());
    }

    #[test]
    fn rocksdb_engine_conforms_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = rocks::RocksEngine::open(dir.path()).unwrap();
            conformance::check(&engine);
        }
        conformance::check_rows_after(&rocks::RocksEngine::open(dir.path()).unwrap());
    }

    #[test]
    fn prefixes_end_after_every_key_they_start() {
        assert_eq!(prefix_end(b"table/"), Some(b"table0".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }
}
