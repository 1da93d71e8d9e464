//! The RocksDB engine: one database, one column family per keyspace. Synced
//! batches fsync the WAL before returning; RocksDB's write groups let
//! concurrent synced batches share one fsync.

use super::{Engine, Result, Snapshot, Space, StorageError, StorageFault, SyncCounter, Write};
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions, DB};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

const CF_DATA: &str = "default";
const CF_TXN: &str = "txn";
const CF_LOG: &str = "log";
const CF_META: &str = "meta";

/// Options for a node that holds little data (`tessera demo`): RocksDB
/// preallocates each WAL file to its write buffer's size (64 MiB by
/// default) and the manifest to 4 MiB, so an idle default node takes
/// about 75 MB of disk; with these, a few MB.
pub fn small_footprint(options: &mut Options) {
    options.set_write_buffer_size(1 << 20);
    options.set_max_write_buffer_number(2);
    options.set_manifest_preallocation_size(64 << 10);
    options.set_keep_log_file_num(2);
    options.set_max_log_file_size(1 << 20);
}

/// One open database and the options it was opened with (their statistics
/// count its WAL fsyncs).
struct Open {
    db: DB,
    options: Options,
}

type DbSnapshot<'a> = rocksdb::Snapshot<'a>;

self_cell::self_cell!(
    /// A RocksDB snapshot together with the open database it reads, so that
    /// a snapshot keeps its database open across a recovery.
    struct HeldSnapshot {
        owner: Arc<Open>,
        #[covariant]
        dependent: DbSnapshot,
    }
);

/// How often a failed engine tries to reopen its database.
pub const RECOVERY_INTERVAL: Duration = Duration::from_secs(1);

/// Bytes written (and removed) to check that the disk has room again
/// before a failed database is reopened: opening flushes the recovered
/// write buffer and starts a new WAL and manifest.
const PROBE_BYTES: usize = 8 << 20;

/// The RocksDB engine. After a write fails because the disk is full or for
/// an I/O error, RocksDB keeps the database read-only; the engine then
/// reopens it (at most every [`RECOVERY_INTERVAL`], once a probe file shows
/// the disk has room again and nothing holds the old database), so writes
/// resume without restarting the node. Reopening replays the WAL exactly as
/// a restart would: every acknowledged write is kept, and the write that
/// failed was never acknowledged.
pub struct RocksEngine {
    db: RwLock<Option<Arc<Open>>>,
    small: bool,
    path: PathBuf,
    syncs: SyncCounter,
    /// WAL fsyncs of databases closed by a recovery.
    earlier_wal_syncs: AtomicU64,
    /// Since when (or since the last reopen attempt) the database is failed.
    failed: Mutex<Option<Instant>>,
    /// Whether `failed` is set: every write reads this, not the mutex.
    failing: AtomicBool,
    /// Databases reopened after a failure.
    recoveries: AtomicU64,
}

fn open_db(path: &Path, small: bool) -> Result<Open> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    options.enable_statistics();
    let mut cf_options = Options::default();
    if small {
        small_footprint(&mut options);
        small_footprint(&mut cf_options);
    }
    let cfs = [CF_DATA, CF_TXN, CF_LOG, CF_META].map(|name| ColumnFamilyDescriptor::new(name, cf_options.clone()));
    let db = DB::open_cf_descriptors(&options, path, cfs).map_err(|e| StorageError::classify(format!("cannot open RocksDB at {}: {e}", path.display())))?;
    Ok(Open { db, options })
}

fn cf(db: &DB, space: Space) -> &ColumnFamily {
    let name = match space {
        Space::Data => CF_DATA,
        Space::Txn => CF_TXN,
        Space::Log => CF_LOG,
        Space::Meta => CF_META,
    };
    db.cf_handle(name).expect("column family is created at open")
}

impl RocksEngine {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<RocksEngine> {
        RocksEngine::open_with(path, false)
    }

    /// Opens the database, with [`small_footprint`] options if `small`.
    pub fn open_with(path: &Path, small: bool) -> Result<RocksEngine> {
        let open = open_db(path, small)?;
        Ok(RocksEngine {
            db: RwLock::new(Some(Arc::new(open))),
            small,
            path: path.to_path_buf(),
            syncs: SyncCounter::default(),
            earlier_wal_syncs: AtomicU64::new(0),
            failed: Mutex::new(None),
            failing: AtomicBool::new(false),
            recoveries: AtomicU64::new(0),
        })
    }

    /// How many times the database was reopened after a storage failure.
    pub fn recoveries(&self) -> u64 {
        self.recoveries.load(Ordering::Relaxed)
    }

    /// The open database, or why there is none (a reopen after a failure
    /// has not succeeded yet).
    fn current(&self) -> Result<Arc<Open>> {
        match &*self.db.read().unwrap_or_else(|e| e.into_inner()) {
            Some(open) => Ok(open.clone()),
            None => Err(StorageError {
                fault: StorageFault::DiskFull,
                message: format!("RocksDB at {} is closed after a storage failure and could not be reopened yet", self.path.display()),
            }),
        }
    }

    /// Notes a failure that leaves RocksDB read-only, so the next writes
    /// try to recover.
    fn note(&self, e: &StorageError) {
        if matches!(e.fault, StorageFault::DiskFull | StorageFault::Io) {
            let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
            if failed.is_none() {
                tracing::warn!(path = %self.path.display(), "storage failed, writes are refused until it recovers: {e}");
                *failed = Some(Instant::now());
                self.failing.store(true, Ordering::Release);
            }
        }
    }

    /// If the database failed, reopens it once the disk has room again.
    fn recover(&self) {
        if !self.failing.load(Ordering::Acquire) {
            return;
        }
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        match *failed {
            Some(at) if at.elapsed() >= RECOVERY_INTERVAL => *failed = Some(Instant::now()),
            _ => return,
        }
        if let Err(e) = self.probe() {
            tracing::debug!(path = %self.path.display(), "storage has not recovered yet: {e}");
            return;
        }
        let mut slot = self.db.write().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = &*slot {
            // A snapshot or a scan still reads the old database; try later.
            if Arc::strong_count(open) > 1 {
                return;
            }
            let synced = open.options.get_ticker_count(rocksdb::statistics::Ticker::WalFileSynced);
            self.earlier_wal_syncs.fetch_add(synced, Ordering::Relaxed);
        }
        // The old database must be closed (its lock released) before the
        // directory is opened again.
        *slot = None;
        match open_db(&self.path, self.small) {
            Ok(open) => {
                *slot = Some(Arc::new(open));
                *failed = None;
                self.failing.store(false, Ordering::Release);
                self.recoveries.fetch_add(1, Ordering::Relaxed);
                tracing::info!(path = %self.path.display(), "storage recovered: the database was reopened and takes writes again");
            }
            Err(e) => tracing::warn!(path = %self.path.display(), "reopening the database after a storage failure failed: {e}"),
        }
    }

    /// Writes and removes a file of [`PROBE_BYTES`] next to the database.
    fn probe(&self) -> std::io::Result<()> {
        let probe = self.path.join("SPACE_PROBE");
        let result = (|| {
            let mut file = std::fs::File::create(&probe)?;
            file.write_all(&vec![0u8; PROBE_BYTES])?;
            file.sync_all()
        })();
        let _ = std::fs::remove_file(&probe);
        result
    }

    fn write_batch(&self, build: impl FnOnce(&DB, &mut WriteBatch), writes: Vec<Write>, sync: bool) -> Result<()> {
        self.recover();
        let open = self.current()?;
        let db = &open.db;
        let mut batch = WriteBatch::default();
        build(db, &mut batch);
        for w in writes {
            let cf = cf(db, w.space);
            match w.value {
                Some(v) => batch.put_cf(cf, w.key, v),
                None => batch.delete_cf(cf, w.key),
            }
        }
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        db.write_opt(batch, &options).map_err(|e| self.failure("write", e))?;
        if sync {
            self.syncs.bump();
        }
        Ok(())
    }

    fn err(&self, op: &str, e: rocksdb::Error) -> StorageError {
        StorageError::classify(format!("RocksDB {op} failed at {}: {e}", self.path.display()))
    }

    /// A write's error, noted so that the engine recovers from it.
    fn failure(&self, op: &str, e: rocksdb::Error) -> StorageError {
        let e = self.err(op, e);
        self.note(&e);
        e
    }

    fn scan_with(&self, db: &DB, space: Space, start: &[u8], end: &[u8], mut read: ReadOptions, visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        if start >= end {
            return Ok(());
        }
        read.set_iterate_upper_bound(end.to_vec());
        let iter = db.iterator_cf_opt(cf(db, space), read, IteratorMode::From(start, Direction::Forward));
        for item in iter {
            let (k, v) = item.map_err(|e| self.err("scan", e))?;
            if !visit(&k, &v) {
                break;
            }
        }
        Ok(())
    }
}

/// A RocksDB snapshot: reads see the database as it was when it was taken.
struct RocksSnapshot<'a> {
    engine: &'a RocksEngine,
    held: Result<HeldSnapshot>,
}

impl Snapshot for RocksSnapshot<'_> {
    fn scan(&self, space: Space, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        let held = self.held.as_ref().map_err(Clone::clone)?;
        let mut read = ReadOptions::default();
        read.set_snapshot(held.borrow_dependent());
        self.engine.scan_with(&held.borrow_owner().db, space, start, end, read, visit)
    }
}

impl Engine for RocksEngine {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let open = self.current()?;
        open.db.get_cf(cf(&open.db, space), key).map_err(|e| self.err("get", e))
    }

    fn scan(&self, space: Space, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        let open = self.current()?;
        self.scan_with(&open.db, space, start, end, ReadOptions::default(), visit)
    }

    fn apply(&self, writes: Vec<Write>, sync: bool) -> Result<()> {
        self.write_batch(|_, _| {}, writes, sync)
    }

    fn apply_with_range_delete(&self, start: &[u8], end: &[u8], writes: Vec<Write>, sync: bool) -> Result<()> {
        let build = |db: &DB, batch: &mut WriteBatch| {
            if start < end {
                batch.delete_range_cf(cf(db, Space::Data), start, end);
            }
        };
        self.write_batch(build, writes, sync)
    }

    fn sync_wal(&self) -> Result<()> {
        self.recover();
        let open = self.current()?;
        open.db.flush_wal(true).map_err(|e| self.failure("WAL sync", e))?;
        self.syncs.bump();
        Ok(())
    }

    fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<()> {
        if start >= end {
            return Ok(());
        }
        self.apply_with_range_delete(start, end, Vec::new(), true)
    }

    fn clear(&self, space: Space) -> Result<()> {
        let bounds = {
            let open = self.current()?;
            let cf = cf(&open.db, space);
            let first = open.db.iterator_cf(cf, IteratorMode::Start).next().transpose().map_err(|e| self.err("clear", e))?;
            let last = open.db.iterator_cf(cf, IteratorMode::End).next().transpose().map_err(|e| self.err("clear", e))?;
            match (first, last) {
                (Some((first, _)), Some((last, _))) => (first.to_vec(), last.to_vec()),
                _ => return Ok(()),
            }
        };
        let (first, mut end) = bounds;
        end.push(0);
        self.write_batch(|db, batch| batch.delete_range_cf(cf(db, space), &first[..], &end[..]), Vec::new(), true)
    }

    fn snapshot(&self) -> Box<dyn Snapshot + '_> {
        let held = self.current().map(|open| HeldSnapshot::new(open, |open| open.db.snapshot()));
        Box::new(RocksSnapshot { engine: self, held })
    }

    fn syncs(&self) -> u64 {
        self.syncs.get()
    }

    fn wal_syncs(&self) -> u64 {
        let current = self.current().map(|open| open.options.get_ticker_count(rocksdb::statistics::Ticker::WalFileSynced)).unwrap_or(0);
        self.earlier_wal_syncs.load(Ordering::Relaxed) + current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &[u8], v: &[u8]) -> Write {
        Write { space: Space::Data, key: k.to_vec(), value: Some(v.to_vec()) }
    }

    /// Marks the engine failed long enough ago that the next write tries to
    /// recover (the full-disk end-to-end test fills a real tmpfs).
    fn fail(engine: &RocksEngine) {
        engine.note(&StorageError { fault: StorageFault::DiskFull, message: "No space left on device".into() });
        *engine.failed.lock().unwrap() = Some(Instant::now() - RECOVERY_INTERVAL);
    }

    #[test]
    fn a_failed_database_is_reopened_once_nothing_reads_it_and_keeps_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let engine = RocksEngine::open(dir.path()).unwrap();
        engine.apply(vec![put(b"a", b"1")], true).unwrap();
        // An error that is not about the disk or the device does not fail it.
        engine.note(&StorageError::other("bad request"));
        assert!(engine.failed.lock().unwrap().is_none());
        fail(&engine);
        // A snapshot holds the old database: no reopen yet, and it still reads.
        let snapshot = engine.snapshot();
        engine.apply(vec![put(b"b", b"2")], true).unwrap();
        assert_eq!(engine.recoveries(), 0);
        assert_eq!(crate::conformance::snapshot_keys(snapshot.as_ref(), Space::Data), vec![b"a".to_vec()]);
        drop(snapshot);
        // The next attempt (one interval later) reopens; nothing is lost.
        *engine.failed.lock().unwrap() = Some(Instant::now() - RECOVERY_INTERVAL);
        engine.apply(vec![put(b"c", b"3")], true).unwrap();
        assert_eq!(engine.recoveries(), 1);
        assert!(engine.failed.lock().unwrap().is_none());
        for (k, v) in [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")] {
            assert_eq!(engine.get(Space::Data, k).unwrap(), Some(v.to_vec()));
        }
        assert!(!dir.path().join("SPACE_PROBE").exists());
        drop(engine);
        let engine = RocksEngine::open(dir.path()).unwrap();
        assert_eq!(engine.get(Space::Data, b"c").unwrap(), Some(b"3".to_vec()));
    }

    #[test]
    fn a_failed_database_is_not_reopened_before_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let engine = RocksEngine::open(dir.path()).unwrap();
        engine.note(&StorageError { fault: StorageFault::Io, message: "Input/output error".into() });
        engine.apply(vec![put(b"a", b"1")], true).unwrap();
        assert_eq!(engine.recoveries(), 0);
    }
}
