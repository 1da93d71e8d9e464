//! An in-memory engine with a simulated power loss: what was applied
//! without a sync and not yet covered by a later sync (or a WAL sync) is
//! lost by [`CrashEngine::crash`], as unsynced WAL records are when a
//! machine loses power. Writes become durable in the order they were
//! applied, as in a write-ahead log: a synced batch makes every earlier
//! batch durable too.
//!
//! It lets crash tests run in one process: kill a node at the worst moment
//! by dropping it, then reopen its engine from what was durable.

use super::memory::MemoryEngine;
use super::{Engine, Result, Snapshot, Space, Write};
use std::sync::Mutex;

/// One batch applied without a sync, waiting to become durable.
struct Pending {
    range: Option<(Vec<u8>, Vec<u8>)>,
    writes: Vec<Write>,
}

/// See the module page.
#[derive(Default)]
pub struct CrashEngine {
    /// What readers see.
    live: MemoryEngine,
    /// What survives a crash.
    durable: MemoryEngine,
    /// Batches applied to `live` but not yet to `durable`, in order. Held
    /// during every write so that both maps change in the same order.
    pending: Mutex<Vec<Pending>>,
}

impl CrashEngine {
    /// What a restart after a power loss finds: a new engine holding only
    /// the durable writes.
    pub fn crash(&self) -> CrashEngine {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let engine = CrashEngine::default();
        let mut copy = Vec::new();
        for space in Space::ALL {
            self.durable
                .scan(space, b"", &[0xFF; 64], &mut |k, v| {
                    copy.push(Write { space, key: k.to_vec(), value: Some(v.to_vec()) });
                    true
                })
                .expect("memory scans do not fail");
        }
        drop(pending);
        engine.live.apply(copy.clone(), true).expect("memory writes do not fail");
        engine.durable.apply(copy, true).expect("memory writes do not fail");
        engine
    }

    /// Number of batches that a crash now would lose.
    pub fn unsynced(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn write(&self, range: Option<(&[u8], &[u8])>, writes: Vec<Write>, sync: bool) -> Result<()> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let (start, end) = range.unwrap_or((&[], &[]));
        self.live.apply_with_range_delete(start, end, writes.clone(), sync)?;
        pending.push(Pending { range: range.map(|(s, e)| (s.to_vec(), e.to_vec())), writes });
        if sync {
            self.make_durable(&mut pending)?;
        }
        Ok(())
    }

    fn make_durable(&self, pending: &mut Vec<Pending>) -> Result<()> {
        for batch in pending.drain(..) {
            let (start, end) = batch.range.as_ref().map(|(s, e)| (s.as_slice(), e.as_slice())).unwrap_or((&[], &[]));
            self.durable.apply_with_range_delete(start, end, batch.writes, false)?;
        }
        Ok(())
    }
}

impl Engine for CrashEngine {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.live.get(space, key)
    }

    fn scan(&self, space: Space, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        self.live.scan(space, start, end, visit)
    }

    fn apply(&self, writes: Vec<Write>, sync: bool) -> Result<()> {
        self.write(None, writes, sync)
    }

    fn apply_with_range_delete(&self, start: &[u8], end: &[u8], writes: Vec<Write>, sync: bool) -> Result<()> {
        self.write(Some((start, end)), writes, sync)
    }

    fn sync_wal(&self) -> Result<()> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        self.make_durable(&mut pending)?;
        self.live.sync_wal()
    }

    fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<()> {
        self.write(Some((start, end)), Vec::new(), true)
    }

    fn clear(&self, space: Space) -> Result<()> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        self.make_durable(&mut pending)?;
        self.live.clear(space)?;
        self.durable.clear(space)
    }

    fn snapshot(&self) -> Box<dyn Snapshot + '_> {
        self.live.snapshot()
    }

    fn syncs(&self) -> u64 {
        self.live.syncs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &[u8], v: &[u8]) -> Write {
        Write { space: Space::Data, key: k.to_vec(), value: Some(v.to_vec()) }
    }

    #[test]
    fn the_crash_engine_conforms() {
        crate::conformance::check(&CrashEngine::default());
    }

    #[test]
    fn a_crash_loses_exactly_the_unsynced_tail() {
        let engine = CrashEngine::default();
        engine.apply(vec![put(b"a", b"1")], false).unwrap();
        engine.apply(vec![put(b"b", b"2")], true).unwrap();
        engine.apply(vec![put(b"c", b"3")], false).unwrap();
        engine.delete_range(b"a", b"b").unwrap();
        engine.apply(vec![put(b"d", b"4"), put(b"b", b"5")], false).unwrap();
        assert_eq!(engine.unsynced(), 1);
        assert_eq!(engine.get(Space::Data, b"d").unwrap(), Some(b"4".to_vec()), "readers see unsynced writes");
        let after = engine.crash();
        // a: written, then range-deleted durably; b: synced (its later
        // unsynced value is lost); c: made durable by the synced range
        // delete after it; d: lost.
        assert_eq!(after.get(Space::Data, b"a").unwrap(), None);
        assert_eq!(after.get(Space::Data, b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(after.get(Space::Data, b"c").unwrap(), Some(b"3".to_vec()));
        assert_eq!(after.get(Space::Data, b"d").unwrap(), None);
        assert_eq!(after.unsynced(), 0);
        // A WAL sync makes everything before it durable.
        engine.sync_wal().unwrap();
        assert_eq!(engine.crash().get(Space::Data, b"d").unwrap(), Some(b"4".to_vec()));
    }
}
