//! The conformance suite every [`Engine`] passes: the RocksDB and memory
//! engines here, the crash engine, and the shard's replication-logging
//! engine in its own crate. Call [`check`] on a new, empty engine.

use super::{scan_prefix, Engine, Snapshot, Space, Write};

fn put(space: Space, k: &[u8], v: &[u8]) -> Write {
    Write { space, key: k.to_vec(), value: Some(v.to_vec()) }
}

/// Every key of `space` a snapshot holds, in order.
pub fn snapshot_keys(snapshot: &dyn Snapshot, space: Space) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    snapshot
        .scan(space, b"", &[0xFF; 64], &mut |k, _| {
            out.push(k.to_vec());
            true
        })
        .unwrap();
    out
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

/// Runs the whole suite on `engine`, which must start empty; panics with
/// the rule that failed. It leaves `d` = `4` and `z` = `9` in the data
/// keyspace and `a` = `t` in the txn keyspace, for a caller that reopens a
/// durable engine to check they survived.
pub fn check(engine: &dyn Engine) {
    check_rows(engine);
    // Prefix scans see exactly the keys under the prefix.
    engine
        .apply(vec![put(Space::Meta, b"p/1", b"x"), put(Space::Meta, b"p/2", b"y"), put(Space::Meta, b"p0", b"z"), put(Space::Meta, b"o", b"w")], false)
        .unwrap();
    let under: Vec<Vec<u8>> = scan_prefix(engine, Space::Meta, b"p/").unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(under, vec![b"p/1".to_vec(), b"p/2".to_vec()]);
    engine.sync_wal().unwrap();
    // Clearing one keyspace leaves the others.
    engine.apply(vec![put(Space::Log, b"\x00\x01", b"e1"), put(Space::Log, b"\x00\x02", b"e2")], true).unwrap();
    engine.clear(Space::Log).unwrap();
    engine.clear(Space::Meta).unwrap();
    assert!(keys(engine, Space::Log, b"", b"\xff").is_empty());
    assert!(keys(engine, Space::Meta, b"", b"\xff").is_empty());
    assert_eq!(keys(engine, Space::Data, b"", b"\xff"), vec![b"d".to_vec(), b"z".to_vec()]);
    assert_eq!(keys(engine, Space::Txn, b"", b"\xff"), vec![b"a".to_vec()]);
}

/// The part of the suite that uses only the data and txn keyspaces, for
/// engines that keep the log and meta keyspaces to themselves (the shard's
/// replication-logging engine). Same start and end state as [`check`].
pub fn check_rows(engine: &dyn Engine) {
    engine.apply(vec![put(Space::Data, b"b", b"2"), put(Space::Data, b"a", b"1"), put(Space::Data, b"c", b"3"), put(Space::Txn, b"a", b"t")], true).unwrap();
    assert_eq!(engine.get(Space::Data, b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(engine.get(Space::Txn, b"a").unwrap(), Some(b"t".to_vec()));
    assert_eq!(engine.get(Space::Data, b"zz").unwrap(), None);
    // Keyspaces are separate and scans are ordered and half-open.
    assert_eq!(keys(engine, Space::Data, b"a", b"c"), vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(keys(engine, Space::Txn, b"", b"\xff"), vec![b"a".to_vec()]);
    assert!(keys(engine, Space::Data, b"c", b"a").is_empty(), "an empty range");
    // The visitor can stop early.
    let mut seen = 0;
    engine
        .scan(Space::Data, b"", b"\xff", &mut |_, _| {
            seen += 1;
            false
        })
        .unwrap();
    assert_eq!(seen, 1);
    // Deletes and puts in one batch; a later write of a key wins.
    engine
        .apply(vec![Write { space: Space::Data, key: b"a".to_vec(), value: None }, put(Space::Data, b"d", b"0"), put(Space::Data, b"d", b"4")], true)
        .unwrap();
    assert_eq!(keys(engine, Space::Data, b"", b"\xff"), vec![b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]);
    assert_eq!(engine.get(Space::Data, b"d").unwrap(), Some(b"4".to_vec()));
    // Unsynced writes are read at once; a WAL sync makes them durable.
    engine.apply(vec![put(Space::Data, b"u", b"5")], false).unwrap();
    assert_eq!(engine.get(Space::Data, b"u").unwrap(), Some(b"5".to_vec()));
    engine.sync_wal().unwrap();
    engine.apply(vec![Write { space: Space::Data, key: b"u".to_vec(), value: None }], true).unwrap();
    // A range delete touches the data keyspace only.
    engine.delete_range(b"b", b"d").unwrap();
    assert_eq!(keys(engine, Space::Data, b"", b"\xff"), vec![b"d".to_vec()]);
    assert_eq!(keys(engine, Space::Txn, b"", b"\xff"), vec![b"a".to_vec()]);
    // A range delete and writes in one batch.
    engine.apply_with_range_delete(b"d", b"e", vec![put(Space::Data, b"d2", b"5"), put(Space::Txn, b"b", b"u")], true).unwrap();
    assert_eq!(keys(engine, Space::Data, b"", b"\xff"), vec![b"d2".to_vec()], "the batch's own write survives its range delete");
    engine
        .apply(
            vec![
                put(Space::Data, b"d", b"4"),
                Write { space: Space::Data, key: b"d2".to_vec(), value: None },
                Write { space: Space::Txn, key: b"b".to_vec(), value: None },
            ],
            true,
        )
        .unwrap();
    assert!(engine.syncs() >= 2);
    // A snapshot does not see later writes.
    {
        let snapshot = engine.snapshot();
        engine.apply(vec![put(Space::Data, b"z", b"9")], true).unwrap();
        assert_eq!(snapshot_keys(snapshot.as_ref(), Space::Data), vec![b"d".to_vec()]);
    }
    assert_eq!(keys(engine, Space::Data, b"", b"\xff"), vec![b"d".to_vec(), b"z".to_vec()]);
}

/// Checks that `engine` holds what [`check_rows`] leaves behind (a replica
/// that replayed the log of an engine the suite ran on, or an engine
/// reopened after it).
pub fn check_rows_after(engine: &dyn Engine) {
    assert_eq!(keys(engine, Space::Data, b"", b"\xff"), vec![b"d".to_vec(), b"z".to_vec()]);
    assert_eq!(engine.get(Space::Data, b"d").unwrap(), Some(b"4".to_vec()));
    assert_eq!(keys(engine, Space::Txn, b"", b"\xff"), vec![b"a".to_vec()]);
}
