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

use crate::storage::{Engine, Result, Snapshot, Space, StorageError, Write};
use prost::Message;
use std::sync::{Arc, Mutex};
use tessera_proto::shard as pb;
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
    StorageError(format!("corrupt replication state: {what}"))
}

struct State {
    /// The last record written here and the epoch it was written in.
    last_seq: u64,
    last_epoch: u64,
    /// The epoch new records are written in.
    epoch: u64,
    /// The first record still in the log (`last_seq + 1` when empty).
    first_seq: u64,
}

pub struct LoggedEngine {
    inner: Arc<dyn Engine>,
    state: Mutex<State>,
    /// The last record's number, for shippers waiting for more.
    written: watch::Sender<u64>,
}

impl LoggedEngine {
    /// Opens the log over `inner`, reading where it stands.
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
        let state = State { last_seq, last_epoch, epoch: last_epoch, first_seq };
        let (written, _) = watch::channel(last_seq);
        Ok(Arc::new(LoggedEngine { inner, state: Mutex::new(state), written }))
    }

    /// The last record applied here: (sequence number, epoch).
    pub fn last(&self) -> (u64, u64) {
        let s = self.state.lock().unwrap();
        (s.last_seq, s.last_epoch)
    }

    /// The first record still kept.
    pub fn first(&self) -> u64 {
        self.state.lock().unwrap().first_seq
    }

    /// New records are written in this epoch.
    pub fn set_epoch(&self, epoch: u64) {
        self.state.lock().unwrap().epoch = epoch;
    }

    /// Notified with the last record's number whenever one is written.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.written.subscribe()
    }

    pub fn inner(&self) -> &Arc<dyn Engine> {
        &self.inner
    }

    /// Writes a batch as the next record. `delete` is a data range to
    /// delete too (DROP TABLE), done before the batch.
    fn log_and_apply(&self, writes: Vec<Write>, delete: Option<(Vec<u8>, Vec<u8>)>, sync: bool) -> Result<u64> {
        let mut state = self.state.lock().unwrap();
        let seq = state.last_seq + 1;
        let entry = pb::LogEntry {
            seq,
            epoch: state.epoch,
            writes: writes.iter().map(logged_write).collect(),
            delete_start: delete.as_ref().map(|d| d.0.clone()).unwrap_or_default(),
            delete_end: delete.as_ref().map(|d| d.1.clone()).unwrap_or_default(),
        };
        if let Some((start, end)) = &delete {
            self.inner.delete_range(start, end)?;
        }
        let mut batch = writes;
        batch.push(Write { space: Space::Log, key: seq_key(seq), value: Some(entry.encode_to_vec()) });
        batch.push(Write { space: Space::Meta, key: APPLIED.to_vec(), value: Some(applied_value(seq, entry.epoch)) });
        self.inner.apply(batch, sync)?;
        state.last_seq = seq;
        state.last_epoch = entry.epoch;
        drop(state);
        self.written.send_replace(seq);
        Ok(seq)
    }

    /// Up to `max_bytes` of records from `from` on, in order.
    pub fn records(&self, from: u64, max_bytes: usize) -> Result<Vec<pb::LogEntry>> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut failure = None;
        self.inner.scan(Space::Log, &seq_key(from), &[0xFF; 9], &mut |_, v| {
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
        if seq <= first {
            return Ok(0);
        }
        let writes: Vec<Write> = (first..seq).map(|s| Write { space: Space::Log, key: seq_key(s), value: None }).collect();
        let n = writes.len();
        self.inner.apply(writes, false)?;
        let mut state = self.state.lock().unwrap();
        state.first_seq = state.first_seq.max(seq);
        Ok(n)
    }

    /// A consistent view of the data and the record it holds everything up to.
    pub fn snapshot(&self) -> (u64, u64, Box<dyn Snapshot + '_>) {
        let state = self.state.lock().unwrap();
        // Taken under the lock: no record is half-written.
        let snapshot = self.inner.snapshot();
        (state.last_seq, state.last_epoch, snapshot)
    }

    /// Replicas: applies records from the primary, in order and durably.
    pub fn apply_records(&self, records: &[pb::LogEntry]) -> Result<()> {
        let mut state = self.state.lock().unwrap();
        let mut batch = Vec::new();
        for record in records {
            if record.seq <= state.last_seq {
                continue; // sent again after a reconnect
            }
            if record.seq != state.last_seq + 1 {
                return Err(StorageError(format!("replication gap: record {} arrived after {}", record.seq, state.last_seq)));
            }
            if !record.delete_start.is_empty() {
                self.inner.apply(std::mem::take(&mut batch), false)?;
                self.inner.delete_range(&record.delete_start, &record.delete_end)?;
            }
            for w in &record.writes {
                batch.push(write_from_log(w)?);
            }
            batch.push(Write { space: Space::Log, key: seq_key(record.seq), value: Some(record.encode_to_vec()) });
            state.last_seq = record.seq;
            state.last_epoch = record.epoch;
        }
        batch.push(Write { space: Space::Meta, key: APPLIED.to_vec(), value: Some(applied_value(state.last_seq, state.last_epoch)) });
        self.inner.apply(batch, true)?;
        let last = state.last_seq;
        drop(state);
        self.written.send_replace(last);
        Ok(())
    }

    /// True when a snapshot was being installed and did not finish.
    pub fn snapshot_interrupted(&self) -> Result<bool> {
        Ok(self.inner.get(Space::Meta, SNAPSHOT_IN_PROGRESS)?.is_some())
    }

    /// Replicas: starts installing a snapshot; everything here is dropped.
    pub fn begin_snapshot(&self) -> Result<()> {
        let _state = self.state.lock().unwrap();
        self.inner.apply(vec![Write { space: Space::Meta, key: SNAPSHOT_IN_PROGRESS.to_vec(), value: Some(vec![1]) }], true)?;
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
        let mut state = self.state.lock().unwrap();
        let batch = vec![
            Write { space: Space::Meta, key: APPLIED.to_vec(), value: Some(applied_value(seq, epoch)) },
            Write { space: Space::Meta, key: SNAPSHOT_IN_PROGRESS.to_vec(), value: None },
        ];
        self.inner.apply(batch, true)?;
        state.last_seq = seq;
        state.last_epoch = epoch;
        state.first_seq = seq + 1;
        drop(state);
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
        self.inner.sync_wal()
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
    use crate::storage::memory::MemoryEngine;

    fn put(k: &[u8]) -> Write {
        Write { space: Space::Data, key: k.to_vec(), value: Some(k.to_vec()) }
    }

    #[test]
    fn records_are_numbered_in_write_order_and_replay_on_a_replica() {
        let primary = LoggedEngine::open(Arc::new(MemoryEngine::default())).unwrap();
        primary.set_epoch(3);
        primary.apply(vec![put(b"a")], true).unwrap();
        primary.apply(vec![put(b"b"), Write { space: Space::Txn, key: b"t1".to_vec(), value: Some(b"p".to_vec()) }], false).unwrap();
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
        let (seq, epoch, snapshot) = primary.snapshot();
        let mut rows = Vec::new();
        snapshot
            .scan(Space::Data, b"", b"\xff", &mut |k, v| {
                rows.push(pb::LoggedWrite { space: 0, key: k.to_vec(), value: Some(v.to_vec()) });
                true
            })
            .unwrap();
        let fresh = LoggedEngine::open(Arc::new(MemoryEngine::default())).unwrap();
        fresh.begin_snapshot().unwrap();
        assert!(fresh.snapshot_interrupted().unwrap());
        fresh.snapshot_chunk(&rows).unwrap();
        fresh.finish_snapshot(seq, epoch).unwrap();
        assert!(!fresh.snapshot_interrupted().unwrap());
        assert_eq!((fresh.last(), fresh.first()), ((3, 3), 4));
        assert_eq!(fresh.get(Space::Data, b"b").unwrap(), Some(b"b".to_vec()));
    }
}
