//! An in-memory engine: ordered maps behind a lock. Nothing survives a restart.

use super::{Engine, Result, Snapshot, Space, SyncCounter, Write};
use std::collections::BTreeMap;
use std::sync::RwLock;

type Spaces = [BTreeMap<Vec<u8>, Vec<u8>>; 4];

#[derive(Default)]
pub struct MemoryEngine {
    spaces: RwLock<Spaces>,
    syncs: SyncCounter,
}

fn index(space: Space) -> usize {
    space.number() as usize
}

fn scan_map(map: &BTreeMap<Vec<u8>, Vec<u8>>, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) {
    if start >= end {
        return;
    }
    for (k, v) in map.range(start.to_vec()..end.to_vec()) {
        if !visit(k, v) {
            break;
        }
    }
}

/// A copy of the maps: small engines only (tests, `--in-memory`).
struct MemorySnapshot(Spaces);

impl Snapshot for MemorySnapshot {
    fn scan(&self, space: Space, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        scan_map(&self.0[index(space)], start, end, visit);
        Ok(())
    }
}

impl Engine for MemoryEngine {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.spaces.read().unwrap()[index(space)].get(key).cloned())
    }

    fn scan(&self, space: Space, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        scan_map(&self.spaces.read().unwrap()[index(space)], start, end, visit);
        Ok(())
    }

    fn apply(&self, writes: Vec<Write>, sync: bool) -> Result<()> {
        self.apply_with_range_delete(&[], &[], writes, sync)
    }

    fn apply_with_range_delete(&self, start: &[u8], end: &[u8], writes: Vec<Write>, sync: bool) -> Result<()> {
        let mut spaces = self.spaces.write().unwrap();
        if start < end {
            let map = &mut spaces[index(Space::Data)];
            let doomed: Vec<Vec<u8>> = map.range(start.to_vec()..end.to_vec()).map(|(k, _)| k.clone()).collect();
            for k in doomed {
                map.remove(&k);
            }
        }
        for w in writes {
            let map = &mut spaces[index(w.space)];
            match w.value {
                Some(v) => map.insert(w.key, v),
                None => map.remove(&w.key),
            };
        }
        if sync {
            self.syncs.bump();
        }
        Ok(())
    }

    fn sync_wal(&self) -> Result<()> {
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
        self.spaces.write().unwrap()[index(space)].clear();
        self.syncs.bump();
        Ok(())
    }

    fn snapshot(&self) -> Box<dyn Snapshot + '_> {
        Box::new(MemorySnapshot(self.spaces.read().unwrap().clone()))
    }

    fn syncs(&self) -> u64 {
        self.syncs.get()
    }
}
