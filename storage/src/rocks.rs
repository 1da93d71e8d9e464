//! The RocksDB engine: one database, one column family per keyspace. Synced
//! batches fsync the WAL before returning; RocksDB's write groups let
//! concurrent synced batches share one fsync.

use super::{Engine, Result, Snapshot, Space, StorageError, SyncCounter, Write};
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions, DB};
use std::path::{Path, PathBuf};

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

pub struct RocksEngine {
    db: DB,
    options: Options,
    path: PathBuf,
    syncs: SyncCounter,
}

impl RocksEngine {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<RocksEngine> {
        RocksEngine::open_with(path, false)
    }

    /// Opens the database, with [`small_footprint`] options if `small`.
    pub fn open_with(path: &Path, small: bool) -> Result<RocksEngine> {
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
        Ok(RocksEngine { db, options, path: path.to_path_buf(), syncs: SyncCounter::default() })
    }

    fn cf(&self, space: Space) -> &ColumnFamily {
        let name = match space {
            Space::Data => CF_DATA,
            Space::Txn => CF_TXN,
            Space::Log => CF_LOG,
            Space::Meta => CF_META,
        };
        self.db.cf_handle(name).expect("column family is created at open")
    }

    fn write_batch(&self, mut batch: WriteBatch, writes: Vec<Write>, sync: bool) -> Result<()> {
        for w in writes {
            let cf = self.cf(w.space);
            match w.value {
                Some(v) => batch.put_cf(cf, w.key, v),
                None => batch.delete_cf(cf, w.key),
            }
        }
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        self.db.write_opt(batch, &options).map_err(|e| self.err("write", e))?;
        if sync {
            self.syncs.bump();
        }
        Ok(())
    }

    fn err(&self, op: &str, e: rocksdb::Error) -> StorageError {
        StorageError::classify(format!("RocksDB {op} failed at {}: {e}", self.path.display()))
    }

    fn scan_with(&self, space: Space, start: &[u8], end: &[u8], mut read: ReadOptions, visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        if start >= end {
            return Ok(());
        }
        read.set_iterate_upper_bound(end.to_vec());
        let iter = self.db.iterator_cf_opt(self.cf(space), read, IteratorMode::From(start, Direction::Forward));
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
    snapshot: rocksdb::Snapshot<'a>,
}

impl Snapshot for RocksSnapshot<'_> {
    fn scan(&self, space: Space, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        let mut read = ReadOptions::default();
        read.set_snapshot(&self.snapshot);
        self.engine.scan_with(space, start, end, read, visit)
    }
}

impl Engine for RocksEngine {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(space), key).map_err(|e| self.err("get", e))
    }

    fn scan(&self, space: Space, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        self.scan_with(space, start, end, ReadOptions::default(), visit)
    }

    fn apply(&self, writes: Vec<Write>, sync: bool) -> Result<()> {
        self.write_batch(WriteBatch::default(), writes, sync)
    }

    fn apply_with_range_delete(&self, start: &[u8], end: &[u8], writes: Vec<Write>, sync: bool) -> Result<()> {
        let mut batch = WriteBatch::default();
        if start < end {
            batch.delete_range_cf(self.cf(Space::Data), start, end);
        }
        self.write_batch(batch, writes, sync)
    }

    fn sync_wal(&self) -> Result<()> {
        self.db.flush_wal(true).map_err(|e| self.err("WAL sync", e))?;
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
        let cf = self.cf(space);
        let first = self.db.iterator_cf(cf, IteratorMode::Start).next().transpose().map_err(|e| self.err("clear", e))?;
        let last = self.db.iterator_cf(cf, IteratorMode::End).next().transpose().map_err(|e| self.err("clear", e))?;
        let (Some((first, _)), Some((last, _))) = (first, last) else { return Ok(()) };
        let mut end = last.to_vec();
        end.push(0);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, &first[..], &end[..]);
        self.write_batch(batch, Vec::new(), true)
    }

    fn snapshot(&self) -> Box<dyn Snapshot + '_> {
        Box::new(RocksSnapshot { engine: self, snapshot: self.db.snapshot() })
    }

    fn syncs(&self) -> u64 {
        self.syncs.get()
    }

    fn wal_syncs(&self) -> u64 {
        self.options.get_ticker_count(rocksdb::statistics::Ticker::WalFileSynced)
    }
}
