//! The replication log: an [`Engine`] wrapper that gives every batch the
//! participant writes a sequence number and stores it, in the same atomic
//! RocksDB batch, as a record in the `log` keyspace, together with the node's
//! last applied record in `meta`. Record order is write order (one lock
//! around numbering and writing), so replicas that apply records in order
//! reach the same state.
//!
//! On a replica the same store is written by [`LoggedEngine::apply_records`]
//! (records received from the primary, with their own numbers) and by the
//! snapshot installer; the participant does not write there.

use prost::Message;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tessera_proto::shard as pb;
use tessera_storage::{Engine, Result, Snapshot, Space, StorageError, Write};
use tokio::sync::watch;

const APPLIED: &[u8] = b"applied";
const SNAPSHOT_IN_PROGRESS: &[u8] = b"snapshot_in_progress";

/// The key of log record `seq`.
pub fn seq_key(seq: u64) -> Vec<u8> {
    seq.to_be_bytes().to_vec()
}

fn seq_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

fn applied_value(seq: u64, epoch: u64) -> Vec<u8> {
    [seq.to_be_bytes(), epoch.to_be_bytes()].concat()
}

fn corrupt(what: &str) -> StorageError {
    StorageError::other(format!("corrupt replication state: {what}"))
}

/// Where the log stands. Written under `writer`; read without it.
#[derive(Default)]
struct Position {
    /// The last record written here and the epoch it was written in.
    last_seq: AtomicU64,
    last_epoch: AtomicU64,
    /// The last record known to be on disk (records after it are lazy
    /// commits not yet synced; they are not shipped, so a replica never has
    /// a record its primary could lose in a power failure).
    durable_seq: AtomicU64,
    /// The first record still in the log (`last_seq + 1` when empty).
    first_seq: AtomicU64,
    /// The epoch new records are written in.
    epoch: AtomicU64,
}

pub struct LoggedEngine {
    inner: Arc<dyn Engine>,
    /// Serializes numbering and writing.
    writer: Mutex<()>,
    at: Position,
    /// Whether the participant may write (a primary); closed while a node is
    /// a replica or changing role, so no record is written in an epoch the
    /// node does not lead.
    open: AtomicBool,
    /// A snapshot is being installed: the data here is incomplete.
    installing: AtomicBool,
    /// The last durable record's number, for shippers waiting for more.
    written: watch::Sender<u64>,
}

impl LoggedEngine {
    /// Opens the log over `inner`, reading where it stands. Writes are
    /// closed until the node knows it is a primary ([`LoggedEngine::open_writes`]).
    pub fn open(inner: Arc<dyn Engine>) -> Result<Arc<LoggedEngine>> {
        let (last_seq, last_epoch) = match inner.get(Space::Meta, APPLIED)? {
            Some(v) if v.len() == 16 => (u64::from_be_bytes(v[..8].try_into().unwrap()), u64::from_be_bytes(v[8..].try_into().unwrap())),
            Some(_) => return Err(corrupt("meta/applied")),
            None => (0, 0),
        };
        let mut first_seq = last_seq + 1;
        inner.scan(Space::Log, b"", &[0xFF; 9], &mut |k, _| {
            first_seq = seq_of(k).unwrap_or(first_seq);
            false
        })?;
        let interrupted = inner.get(Space::Meta, SNAPSHOT_IN_PROGRESS)?.is_some();
        let at = Position::default();
        at.last_seq.store(last_seq, Ordering::SeqCst);
        at.last_epoch.store(last_epoch, Ordering::SeqCst);
        // What was written before a restart is what survived it.
        at.durable_seq.store(last_seq, Ordering::SeqCst);
        at.first_seq.store(first_seq, Ordering::SeqCst);
        at.epoch.store(last_epoch, Ordering::SeqCst);
        let (written, _) = watch::channel(last_seq);
        Ok(Arc::new(LoggedEngine { inner, writer: Mutex::new(()), at, open: AtomicBool::new(false), installing: AtomicBool::new(interrupted), written }))
    }

    /// The last record applied here: (sequence number, epoch).
    pub fn last(&self) -> (u64, u64) {
        (self.at.last_seq.load(Ordering::SeqCst), self.at.last_epoch.load(Ordering::SeqCst))
    }

    /// The last record on disk here.
    pub fn durable(&self) -> u64 {
        self.at.durable_seq.load(Ordering::SeqCst)
    }

    /// The first record still kept.
    pub fn first(&self) -> u64 {
        self.at.first_seq.load(Ordering::SeqCst)
    }

    /// True while a snapshot is being installed (or was cut short).
    pub fn installing(&self) -> bool {
        self.installing.load(Ordering::SeqCst)
    }

    /// Lets the participant write, in `epoch` (the node became primary).
    pub fn open_writes(&self, epoch: u64) {
        let _writer = self.writer.lock().unwrap();
        self.at.epoch.store(epoch, Ordering::SeqCst);
        self.open.store(true, Ordering::SeqCst);
    }

    /// Stops participant writes; returns once no write is half done.
    pub fn close_writes(&self) {
        let _writer = self.writer.lock().unwrap();
        self.open.store(false, Ordering::SeqCst);
    }

    /// Notified with the last durable record's number as it grows.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.written.subscribe()
    }

    pub fn inner(&self) -> &Arc<dyn Engine> {
        &self.inner
    }

    fn durable_up_to(&self, seq: u64) {
        if self.at.durable_seq.fetch_max(seq, Ordering::SeqCst) < seq {
            self.written.send_replace(seq);
        }
    }

    /// Writes a batch as the next record. `delete` is a data range deleted
    /// in the same atomic write (DROP TABLE).
    fn log_and_apply(&self, writes: Vec<Write>, delete: Option<(Vec<u8>, Vec<u8>)>, sync: bool) -> Result<u64> {
        let _writer = self.writer.lock().unwrap();
        if !self.open.load(Ordering::SeqCst) {
            return Err(StorageError::other("this node is not the primary of its shard group (or is changing role): it takes no writes"));
        }
        let seq = self.at.last_seq.load(Ordering::SeqCst) + 1;
        let epoch = self.at.epoch.load(Ordering::SeqCst);
        let entry = pb::LogEntry {
            seq,
            epoch,
            writes: writes.iter().map(logged_write).collect(),
            delete_start: delete.as_ref().map(|d| d.0.clone()).unwrap_or_default(),
            delete_end: delete.as_ref().map(|d| d.1.clone()).unwrap_or_default(),
        };
        let mut batch = writes;
        batch.push(Write { space: Space::Log, key: seq_key(seq), value: Some(entry.encode_to_vec()) });
        batch.push(Write { space: Space::Meta, key: APPLIED.to_vec(), value: Some(applied_value(seq, epoch)) });
        match &delete {
            Some((start, end)) => self.inner.apply_with_range_delete(start, end, batch, sync)?,
            None => self.inner.apply(batch, sync)?,
        }
        self.at.last_seq.store(seq, Ordering::SeqCst);
        self.at.last_epoch.store(epoch, Ordering::SeqCst);
        if sync {
            // Everything up to this record is on disk now.
            self.durable_up_to(seq);
        }
        Ok(seq)
    }

    /// Up to `max_bytes` of durable records from `from` on, in order.
    pub fn records(&self, from: u64, max_bytes: usize) -> Result<Vec<pb::LogEntry>> {
        let durable = self.durable();
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut failure = None;
        if from > durable {
            return Ok(out);
        }
        self.inner.scan(Space::Log, &seq_key(from), &seq_key(durable.saturating_add(1)), &mut |_, v| {
            match pb::LogEntry::decode(v) {
                Ok(e) => out.push(e),
                Err(e) => {
                    failure = Some(corrupt(&format!("log record: {e}")));
                    return false;
                }
            }
            bytes += v.len();
            bytes < max_bytes
        })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// The epoch record `seq` was written in, if it is still in the log.
    pub fn epoch_of(&self, seq: u64) -> Result<Option<u64>> {
        match self.inner.get(Space::Log, &seq_key(seq))? {
            Some(v) => Ok(Some(pb::LogEntry::decode(v.as_slice()).map_err(|e| corrupt(&e.to_string()))?.epoch)),
            None => Ok(None),
        }
    }

    /// Drops records before `seq` (replicas that need them get a snapshot).
    pub fn truncate_before(&self, seq: u64) -> Result<usize> {
        let first = self.first();
        let seq = seq.min(self.durable().saturating_add(1));
        if seq <= first {
            return Ok(0);
        }
        let writes: Vec<Write> = (first..seq).map(|s| Write { space: Space::Log, key: seq_key(s), value: None }).collect();
        let n = writes.len();
        self.inner.apply(writes, false)?;
        self.at.first_seq.fetch_max(seq, Ordering::SeqCst);
        Ok(n)
    }

    /// A consistent view of the data and the record it holds everything up
    /// to; everything it holds is made durable first.
    pub fn snapshot(&self) -> Result<(u64, u64, Box<dyn Snapshot + '_>)> {
        let _writer = self.writer.lock().unwrap();
        // Taken under the lock: no record is half-written.
        self.inner.sync_wal()?;
        let (seq, epoch) = self.last();
        self.durable_up_to(seq);
        Ok((seq, epoch, self.inner.snapshot()))
    }

    /// Makes every record written so far durable.
    pub fn sync(&self) -> Result<()> {
        let seq = self.at.last_seq.load(Ordering::SeqCst);
        self.inner.sync_wal()?;
        self.durable_up_to(seq);
        Ok(())
    }

    /// Replicas: applies records from the primary, in order and durably.
    pub fn apply_records(&self, records: &[pb::LogEntry]) -> Result<()> {
        let _writer = self.writer.lock().unwrap();
        let (mut last_seq, mut last_epoch) = self.last();
        let mut batch = Vec::new();
        let mut deleted = None;
        for record in records {
            if record.seq <= last_seq {
                continue; // sent again after a reconnect
            }
            if record.seq != last_seq + 1 {
                return Err(StorageError::other(format!("replication gap: record {} arrived after {last_seq}", record.seq)));
            }
            if !record.delete_start.is_empty() {
                // A range delete goes in a batch of its own, with its record.
                self.flush_records(std::mem::take(&mut batch), deleted.take(), last_seq, last_epoch)?;
                deleted = Some((record.delete_start.clone(), record.delete_end.clone()));
            }
            for w in &record.writes {
                batch.push(write_from_log(w)?);
            }
            batch.push(Write { space: Space::Log, key: seq_key(record.seq), value: Some(record.encode_to_vec()) });
            last_seq = record.seq;
            last_epoch = record.epoch;
            if deleted.is_some() {
                self.flush_records(std::mem::take(&mut batch), deleted.take(), last_seq, last_epoch)?;
            }
        }
        self.flush_records(batch, deleted, last_seq, last_epoch)
    }

    /// Writes applied records durably; only then does the position move.
    fn flush_records(&self, mut batch: Vec<Write>, deleted: Option<(Vec<u8>, Vec<u8>)>, seq: u64, epoch: u64) -> Result<()> {
        if batch.is_empty() && deleted.is_none() {
            return Ok(());
        }
        batch.push(Write { space: Space::Meta, key: APPLIED.to_vec(), value: Some(applied_value(seq, epoch)) });
        match deleted {
            Some((start, end)) => self.inner.apply_with_range_delete(&start, &end, batch, true)?,
            None => self.inner.apply(batch, true)?,
        }
        self.at.last_seq.store(seq, Ordering::SeqCst);
        self.at.last_epoch.store(epoch, Ordering::SeqCst);
        self.durable_up_to(seq);
        Ok(())
    }

    /// True when a snapshot was being installed and did not finish.
    pub fn snapshot_interrupted(&self) -> Result<bool> {
        Ok(self.inner.get(Space::Meta, SNAPSHOT_IN_PROGRESS)?.is_some())
    }

    /// Replicas: starts installing a snapshot; everything here is dropped.
    pub fn begin_snapshot(&self) -> Result<()> {
        let _writer = self.writer.lock().unwrap();
        self.installing.store(true, Ordering::SeqCst);
        self.inner.apply(vec![Write { space: Space::Meta, key: SNAPSHOT_IN_PROGRESS.to_vec(), value: Some(vec![1]) }], true)?;
        // Until it is complete this node holds nothing it can vouch for.
        self.at.last_seq.store(0, Ordering::SeqCst);
        self.at.last_epoch.store(0, Ordering::SeqCst);
        for space in [Space::Data, Space::Txn, Space::Log] {
            self.inner.clear(space)?;
        }
        Ok(())
    }

    /// Replicas: one chunk of a snapshot.
    pub fn snapshot_chunk(&self, writes: &[pb::LoggedWrite]) -> Result<()> {
        let batch = writes.iter().map(write_from_log).collect::<Result<Vec<_>>>()?;
        self.inner.apply(batch, false)
    }

    /// Replicas: the snapshot is complete up to record `seq`.
    pub fn finish_snapshot(&self, seq: u64, epoch: u64) -> Result<()> {
        let _writer = self.writer.lock().unwrap();
        let batch = vec![
            Write { space: Space::Meta, key: APPLIED.to_vec(), value: Some(applied_value(seq, epoch)) },
            Write { space: Space::Meta, key: SNAPSHOT_IN_PROGRESS.to_vec(), value: None },
        ];
        self.inner.apply(batch, true)?;
        self.at.last_seq.store(seq, Ordering::SeqCst);
        self.at.last_epoch.store(epoch, Ordering::SeqCst);
        self.at.first_seq.store(seq.saturating_add(1), Ordering::SeqCst);
        self.at.durable_seq.store(seq, Ordering::SeqCst);
        self.installing.store(false, Ordering::SeqCst);
        self.written.send_replace(seq);
        Ok(())
    }

    /// A value in the node's own keyspace.
    pub fn meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(Space::Meta, key)
    }

    /// Durably stores a value in the node's own keyspace.
    pub fn set_meta(&self, key: &[u8], value: Vec<u8>) -> Result<()> {
        self.inner.apply(vec![Write { space: Space::Meta, key: key.to_vec(), value: Some(value) }], true)
    }
}

pub fn logged_write(w: &Write) -> pb::LoggedWrite {
    pb::LoggedWrite { space: w.space.number(), key: w.key.clone(), value: w.value.clone() }
}

pub fn write_from_log(w: &pb::LoggedWrite) -> Result<Write> {
    let space = Space::from_number(w.space)
        .filter(|s| matches!(s, Space::Data | Space::Txn))
        .ok_or_else(|| corrupt(&format!("record writes to keyspace {}", w.space)))?;
    Ok(Write { space, key: w.key.clone(), value: w.value.clone() })
}

impl Engine for LoggedEngine {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(space, key)
    }

    fn scan(&self, space: Space, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        self.inner.scan(space, start, end, visit)
    }

    fn apply(&self, writes: Vec<Write>, sync: bool) -> Result<()> {
        self.log_and_apply(writes, None, sync).map(|_| ())
    }

    fn sync_wal(&self) -> Result<()> {
        self.sync()
    }

    fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<()> {
        self.log_and_apply(Vec::new(), Some((start.to_vec(), end.to_vec())), true).map(|_| ())
    }

    fn clear(&self, space: Space) -> Result<()> {
        self.inner.clear(space)
    }

    fn snapshot(&self) -> Box<dyn Snapshot + '_> {
        self.inner.snapshot()
    }

    fn syncs(&self) -> u64 {
        self.inner.syncs()
    }

    fn wal_syncs(&self) -> u64 {
        self.inner.wal_syncs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_storage::memory::MemoryEngine;

    fn put(k: &[u8]) -> Write {
        Write { space: Space::Data, key: k.to_vec(), value: Some(k.to_vec()) }
    }

    #[test]
    fn the_logging_engine_conforms_and_logs_every_batch() {
        let engine = LoggedEngine::open(Arc::new(MemoryEngine::default())).unwrap();
        engine.open_writes(1);
        tessera_storage::conformance::check_rows(engine.as_ref());
        let replica = LoggedEngine::open(Arc::new(MemoryEngine::default())).unwrap();
        replica.apply_records(&engine.records(1, usize::MAX).unwrap()).unwrap();
        tessera_storage::conformance::check_rows_after(replica.as_ref());
    }

    #[test]
    fn records_are_numbered_in_write_order_and_replay_on_a_replica() {
        let primary = LoggedEngine::open(Arc::new(MemoryEngine::default())).unwrap();
        assert!(primary.apply(vec![put(b"x")], true).is_err(), "writes are closed until the node is a primary");
        primary.open_writes(3);
        primary.apply(vec![put(b"a")], true).unwrap();
        primary.apply(vec![put(b"b"), Write { space: Space::Txn, key: b"t1".to_vec(), value: Some(b"p".to_vec()) }], false).unwrap();
        assert_eq!(primary.records(1, usize::MAX).unwrap().len(), 1, "an unsynced record is not shipped");
        primary.delete_range(b"a", b"b").unwrap();
        assert_eq!(primary.last(), (3, 3));
        let records = primary.records(1, usize::MAX).unwrap();
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3]);

        let replica = LoggedEngine::open(Arc::new(MemoryEngine::default())).unwrap();
        replica.apply_records(&records[..2]).unwrap();
        replica.apply_records(&records).unwrap(); // a repeat is skipped
        assert_eq!(replica.last(), (3, 3));
        assert_eq!(replica.get(Space::Data, b"a").unwrap(), None, "the range delete replayed");
        assert_eq!(replica.get(Space::Data, b"b").unwrap(), Some(b"b".to_vec()));
        assert_eq!(replica.get(Space::Txn, b"t1").unwrap(), Some(b"p".to_vec()));
        assert!(replica.apply_records(&[pb::LogEntry { seq: 9, epoch: 3, ..Default::default() }]).is_err(), "gaps are refused");
        // Reopening reads where the log stands.
        let reopened = LoggedEngine::open(replica.inner().clone()).unwrap();
        assert_eq!(reopened.last(), (3, 3));
        assert_eq!(reopened.epoch_of(2).unwrap(), Some(3));

        // Truncation and snapshots.
        assert_eq!(primary.truncate_before(3).unwrap(), 2);
        assert_eq!(primary.first(), 3);
        assert!(primary.records(1, usize::MAX).unwrap().iter().all(|r| r.seq >= 3));
        let (seq, epoch, snapshot) = primary.snapshot().unwrap();
        let mut rows = Vec::new();
        snapshot
            .scan(Space::Data, b"", b"\xff", &mut |k, v| {
                rows.push(pb::LoggedWrite { space: 0, key: k.to_vec(), value: Some(v.to_vec()) });
                true
            })
            .unwrap();
        let fresh = LoggedEngine::open(Arc::new(MemoryEngine::default())).unwrap();
        fresh.begin_snapshot().unwrap();
        assert!(fresh.snapshot_interrupted().unwrap() && fresh.installing());
        assert_eq!(fresh.last(), (0, 0), "a node installing a snapshot vouches for nothing");
        fresh.snapshot_chunk(&rows).unwrap();
        fresh.finish_snapshot(seq, epoch).unwrap();
        assert!(!fresh.snapshot_interrupted().unwrap() && !fresh.installing());
        assert_eq!((fresh.last(), fresh.first()), ((3, 3), 4));
        assert_eq!(fresh.get(Space::Data, b"b").unwrap(), Some(b"b".to_vec()));
    }
}
