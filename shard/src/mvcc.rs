//! Multi-version rows: how versions are laid out in the `data` keyspace and
//! read at a timestamp.
//!
//! Layout (storage format 2): every committed write of a row is a version
//! stored under `row key ++ !commit_ts` (the commit timestamp, bit-inverted,
//! 8 bytes big-endian), so the versions of a row sort newest first right
//! after each other. Row keys are prefix-free (see
//! `tessera_model::data::keys`), so the versions of different rows never
//! interleave. A version's value is the encoded row; a DELETE is a version
//! with an empty value (a tombstone: an encoded row is never empty).
//!
//! Visibility: a read at timestamp `T` sees, for each row, its newest
//! version committed strictly below `T`; if that is a tombstone, or there is
//! none, the row does not exist at `T`.
//!
//! A range of row keys `[start, end)` is not quite the range of raw keys
//! `[start, end)`: a bound may be the successor of a row key (`k ++ 0x00`),
//! which sorts below `k`'s versions. Scans therefore read raw keys from
//! `start` to `end` without its trailing `0x00` bytes `++ 0xFF * 9` (above
//! every version of a row key below `end`) and keep the versions whose row
//! key lies in `[start, end)`. A whole table's range (`table id` to `table id + 1`)
//! holds exactly its versions, so DROP TABLE's range delete and a replica's
//! snapshot copy work on raw keys unchanged.

use tessera_storage::{Engine, Result, Space, Write};

/// Bytes of the timestamp suffix.
pub const TS_LEN: usize = 8;

/// The storage format this node writes, kept in the `meta` keyspace.
pub const FORMAT: &[u8] = b"2";
/// The `meta` key holding the storage format.
pub const FORMAT_KEY: &[u8] = b"storage_format";

/// A read that sees every committed version (a locking read, which holds
/// the row's lock, so no version can appear under it).
pub const LATEST: u64 = u64::MAX;

/// Checks the storage format of a node's engine before anything reads it;
/// an empty node records the current one. Data written by an earlier
/// format is refused, not misread.
pub fn check_format(engine: &dyn Engine, data_dir: &str) -> std::result::Result<(), String> {
    match engine.get(Space::Meta, FORMAT_KEY).map_err(|e| e.to_string())? {
        Some(format) if format == FORMAT => Ok(()),
        Some(format) => Err(format!(
            "data directory {data_dir} holds storage format {}, which this version of Tessera cannot read (it reads format {})",
            String::from_utf8_lossy(&format),
            String::from_utf8_lossy(FORMAT)
        )),
        None => {
            let mut holds_data = false;
            for space in [Space::Data, Space::Txn] {
                engine
                    .scan(space, b"", &[0xFF; 64], &mut |_, _| {
                        holds_data = true;
                        false
                    })
                    .map_err(|e| e.to_string())?;
            }
            if holds_data {
                return Err(format!(
                    "data directory {data_dir} holds rows in storage format 1 (one version per row), written by an earlier version of Tessera; \
                     this version reads format 2 (multi-version rows) only: export the tables with the earlier version and load them into a new data directory"
                ));
            }
            engine.apply(vec![Write { space: Space::Meta, key: FORMAT_KEY.to_vec(), value: Some(FORMAT.to_vec()) }], true).map_err(|e| e.to_string())
        }
    }
}

/// The key of `key`'s version committed at `ts`.
pub fn version_key(key: &[u8], ts: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + TS_LEN);
    out.extend_from_slice(key);
    out.extend_from_slice(&(!ts).to_be_bytes());
    out
}

/// Splits a version key into the row key and the commit timestamp.
pub fn split(raw: &[u8]) -> Option<(&[u8], u64)> {
    let at = raw.len().checked_sub(TS_LEN)?;
    let (key, ts) = raw.split_at(at);
    Some((key, !u64::from_be_bytes(ts.try_into().ok()?)))
}

/// The value a version stores for a write (`None` deletes).
pub fn version_value(value: Option<&Vec<u8>>) -> Vec<u8> {
    value.cloned().unwrap_or_default()
}

/// The row `key` as of `read_ts`: its newest version below `read_ts`,
/// unless that is a tombstone.
pub fn get_at(engine: &dyn Engine, key: &[u8], read_ts: u64) -> Result<Option<Vec<u8>>> {
    if read_ts == 0 {
        return Ok(None);
    }
    let start = version_key(key, read_ts - 1);
    let mut end = version_key(key, 0);
    end.push(0);
    let mut found = None;
    engine.scan(Space::Data, &start, &end, &mut |_, v| {
        found = Some(v.to_vec());
        false
    })?;
    Ok(found.filter(|v| !v.is_empty()))
}

/// The newest commit timestamp of `key`'s versions (tombstones included).
pub fn newest_ts(engine: &dyn Engine, key: &[u8]) -> Result<Option<u64>> {
    let start = version_key(key, u64::MAX);
    let mut end = version_key(key, 0);
    end.push(0);
    let mut found = None;
    engine.scan(Space::Data, &start, &end, &mut |raw, _| {
        found = split(raw).map(|(_, ts)| ts);
        false
    })?;
    Ok(found)
}

/// Visits the rows in `[start, end)` as of `read_ts`, in key order, until
/// `visit` returns false. Rows deleted at `read_ts` are skipped.
pub fn scan_at(engine: &dyn Engine, start: &[u8], end: &[u8], read_ts: u64, visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
    if start >= end {
        return Ok(());
    }
    // The row whose visible version was taken (one buffer, reused: no
    // allocation per row).
    let mut done: Option<Vec<u8>> = None;
    let trimmed = end.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let mut raw_end = end[..trimmed].to_vec();
    raw_end.extend_from_slice(&[0xFF; TS_LEN + 1]);
    engine.scan(Space::Data, start, &raw_end, &mut |raw, value| {
        let Some((key, ts)) = split(raw) else { return true };
        if key >= end {
            return false;
        }
        if key < start || ts >= read_ts || done.as_deref() == Some(key) {
            return true;
        }
        let buffer = done.get_or_insert_with(Vec::new);
        buffer.clear();
        buffer.extend_from_slice(key);
        value.is_empty() || visit(key, value)
    })
}

/// What garbage collection at `horizon` removes from the versions of one
/// row, given newest first as (commit timestamp, is a tombstone): every
/// version older than the newest one below the horizon (a read at or above
/// the horizon never needs them), and that one too if it is a tombstone (a
/// read then finds nothing below, which also means "no row"). Returns the
/// indexes to delete.
pub fn collectable(versions: &[(u64, bool)], horizon: u64) -> Vec<usize> {
    let Some(keep) = versions.iter().position(|(ts, _)| *ts < horizon) else { return Vec::new() };
    let from = if versions[keep].1 { keep } else { keep + 1 };
    (from..versions.len()).collect()
}

/// Plans one garbage-collection round: from raw key `start`, the versions
/// to delete among about `budget` scanned (whole rows only), where the next
/// round starts (empty: from the beginning), and the bytes deleted.
pub fn plan_collection(engine: &dyn Engine, start: &[u8], horizon: u64, budget: usize) -> Result<(Vec<Vec<u8>>, Vec<u8>, u64)> {
    let mut deletes = Vec::new();
    let mut bytes = 0u64;
    let mut row: Vec<(Vec<u8>, u64, bool, usize)> = Vec::new();
    let mut seen = 0usize;
    let mut next = Vec::new();
    let mut flush = |row: &mut Vec<(Vec<u8>, u64, bool, usize)>| {
        let versions: Vec<(u64, bool)> = row.iter().map(|(_, ts, tombstone, _)| (*ts, *tombstone)).collect();
        for i in collectable(&versions, horizon) {
            bytes += row[i].3 as u64;
            deletes.push(std::mem::take(&mut row[i].0));
        }
        row.clear();
    };
    engine.scan(Space::Data, start, &[0xFF; 64], &mut |raw, value| {
        let Some((key, ts)) = split(raw) else { return true };
        let same_row = row.first().is_some_and(|(k, _, _, _)| split(k).is_some_and(|(first, _)| first == key));
        if !same_row {
            flush(&mut row);
            if seen >= budget {
                next = raw.to_vec();
                return false;
            }
        }
        seen += 1;
        row.push((raw.to_vec(), ts, value.is_empty(), raw.len() + value.len()));
        true
    })?;
    flush(&mut row);
    Ok((deletes, next, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_storage::memory::MemoryEngine;

    fn put(engine: &MemoryEngine, key: &[u8], ts: u64, value: &[u8]) {
        engine.apply(vec![Write { space: Space::Data, key: version_key(key, ts), value: Some(value.to_vec()) }], false).unwrap();
    }

    #[test]
    fn a_read_sees_the_newest_version_below_its_timestamp() {
        let engine = MemoryEngine::default();
        put(&engine, b"k", 10, b"v10");
        put(&engine, b"k", 20, b"v20");
        put(&engine, b"k", 30, b"");
        assert_eq!(get_at(&engine, b"k", 10).unwrap(), None, "committed at 10 is not below 10");
        assert_eq!(get_at(&engine, b"k", 11).unwrap(), Some(b"v10".to_vec()));
        assert_eq!(get_at(&engine, b"k", 30).unwrap(), Some(b"v20".to_vec()));
        assert_eq!(get_at(&engine, b"k", 31).unwrap(), None, "deleted at 30");
        assert_eq!(get_at(&engine, b"k", LATEST).unwrap(), None);
        assert_eq!(newest_ts(&engine, b"k").unwrap(), Some(30));
        assert_eq!(newest_ts(&engine, b"j").unwrap(), None);
    }

    #[test]
    fn a_scan_takes_one_version_per_row_and_skips_deleted_rows() {
        let engine = MemoryEngine::default();
        put(&engine, b"a", 5, b"a5");
        put(&engine, b"a", 15, b"a15");
        put(&engine, b"b", 5, b"b5");
        put(&engine, b"b", 12, b"");
        put(&engine, b"c", 20, b"c20");
        let rows = |ts| {
            let mut rows = Vec::new();
            scan_at(&engine, b"a", b"d", ts, &mut |k, v| {
                rows.push((k.to_vec(), v.to_vec()));
                true
            })
            .unwrap();
            rows
        };
        assert_eq!(rows(10), vec![(b"a".to_vec(), b"a5".to_vec()), (b"b".to_vec(), b"b5".to_vec())]);
        assert_eq!(rows(16), vec![(b"a".to_vec(), b"a15".to_vec())]);
        assert_eq!(rows(LATEST), vec![(b"a".to_vec(), b"a15".to_vec()), (b"c".to_vec(), b"c20".to_vec())]);
    }

    #[test]
    fn successor_bounds_include_and_exclude_exactly_their_row() {
        let engine = MemoryEngine::default();
        for (k, ts) in [(&b"a"[..], 1u64 << 50), (b"b", 1 << 50), (b"c", 1)] {
            put(&engine, k, ts, k);
        }
        let keys = |start: &[u8], end: &[u8]| {
            let mut keys = Vec::new();
            scan_at(&engine, start, end, LATEST, &mut |k, _| {
                keys.push(k.to_vec());
                true
            })
            .unwrap();
            keys
        };
        // `a <= k <= b` is [a, b ++ 0x00); `a < k < c` is [a ++ 0x00, c).
        assert_eq!(keys(b"a", b"b\0"), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(keys(b"a\0", b"c"), vec![b"b".to_vec()]);
        assert_eq!(keys(b"b", b"b"), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn a_range_of_row_keys_holds_exactly_their_versions() {
        let engine = MemoryEngine::default();
        put(&engine, b"a", u64::MAX - 1, b"a");
        put(&engine, b"b", 1, b"b");
        let mut keys = Vec::new();
        scan_at(&engine, b"a", b"b", LATEST, &mut |k, _| {
            keys.push(k.to_vec());
            true
        })
        .unwrap();
        assert_eq!(keys, vec![b"a".to_vec()]);
        assert_eq!(split(&version_key(b"xyz", 42)), Some((&b"xyz"[..], 42)));
    }

    #[test]
    fn a_node_written_by_format_1_is_refused_and_an_empty_one_takes_format_2() {
        let empty = MemoryEngine::default();
        check_format(&empty, "/d").unwrap();
        assert_eq!(empty.get(Space::Meta, FORMAT_KEY).unwrap(), Some(FORMAT.to_vec()));
        check_format(&empty, "/d").unwrap();

        let old = MemoryEngine::default();
        old.apply(vec![Write { space: Space::Data, key: b"\0\0\0\x01\x02k".to_vec(), value: Some(b"row".to_vec()) }], true).unwrap();
        let err = check_format(&old, "/old").unwrap_err();
        assert!(err.contains("/old") && err.contains("storage format 1"), "{err}");

        let future = MemoryEngine::default();
        future.apply(vec![Write { space: Space::Meta, key: FORMAT_KEY.to_vec(), value: Some(b"9".to_vec()) }], true).unwrap();
        assert!(check_format(&future, "/f").unwrap_err().contains("storage format 9"));
    }

    #[test]
    fn a_collection_round_removes_what_no_read_above_the_horizon_needs_and_resumes() {
        let engine = MemoryEngine::default();
        for ts in [10, 20, 30] {
            put(&engine, b"a", ts, b"a");
        }
        put(&engine, b"b", 5, b"b");
        put(&engine, b"b", 15, b"");
        put(&engine, b"c", 40, b"c");
        // One row per round with a budget of 1.
        let (deletes, next, _) = plan_collection(&engine, b"", 25, 1).unwrap();
        assert_eq!(deletes, vec![version_key(b"a", 10)], "a read at 25 or above needs a@20, not a@10");
        assert_eq!(next, version_key(b"b", 15));
        let (deletes, _, bytes) = plan_collection(&engine, &next, 25, 100).unwrap();
        assert_eq!(deletes, vec![version_key(b"b", 15), version_key(b"b", 5)], "a row deleted below the horizon goes entirely");
        assert!(bytes > 0);
        for key in deletes {
            engine.apply(vec![Write { space: Space::Data, key, value: None }], false).unwrap();
        }
        assert_eq!(get_at(&engine, b"b", 26).unwrap(), None);
        assert_eq!(get_at(&engine, b"c", LATEST).unwrap(), Some(b"c".to_vec()));
    }

    #[test]
    fn collection_keeps_the_newest_version_below_the_horizon() {
        // Newest first: (ts, tombstone).
        let versions = [(40, false), (30, false), (20, true), (10, false)];
        assert_eq!(collectable(&versions, 35), vec![2, 3], "30 is what a read at 35 sees");
        assert_eq!(collectable(&versions, 25), vec![2, 3], "the tombstone at 20 and what it hides");
        assert_eq!(collectable(&versions, 5), Vec::<usize>::new());
        assert_eq!(collectable(&[(20, true), (10, false)], 25), vec![0, 1], "a row deleted below the horizon goes entirely");
    }
}
