//! The read path: send a plan's per-group requests in parallel, to the
//! primaries or (committed reads outside transactions) to replicas, and
//! decode the rows.

use crate::catalog::{ShardGroupId, Table};
use crate::error::{CoordError, Result};
use crate::failover::Failover;
use crate::plan::Fetch;
use crate::shards::{RawRows, ShardPool};
use futures::future::try_join_all;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tessera_model::data::expr::Expr;
use tessera_model::data::row::decode_row;
use tessera_model::data::Value;
use tessera_model::txn::TxnContext;

/// How reads may use replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplicaReads {
    /// Refuse a replica staler than this (`None`: any staleness).
    pub max_staleness: Option<Duration>,
    /// When every replica is too stale: read from the primary (`false`) or
    /// fail with SQLSTATE TR001 (`true`).
    pub refuse_stale: bool,
}

/// A row read from a shard: its group, key and column values.
pub struct FetchedRow {
    pub group: ShardGroupId,
    pub key: Vec<u8>,
    pub values: Vec<Value>,
}

/// Reads from every target in parallel. `filter` is pushed to range scans;
/// `limit` (0 = none) caps each group's rows. With `txn` (a context per
/// group), reads run in that transaction and `lock` takes exclusive locks.
pub async fn fetch(
    shards: &ShardPool,
    table: &Table,
    targets: &[(ShardGroupId, Fetch)],
    filter: Option<&Expr>,
    limit: u64,
    txn: Option<&HashMap<ShardGroupId, TxnContext>>,
    lock: bool,
) -> Result<Vec<FetchedRow>> {
    let requests = targets.iter().map(|(group, fetch)| async move {
        let txn = txn.and_then(|contexts| contexts.get(group));
        Ok::<_, CoordError>((*group, from_primary(shards, *group, fetch, filter, limit, txn, lock).await?))
    });
    let mut rows = Vec::new();
    for (group, raw) in try_join_all(requests).await? {
        decode(table, group, raw, &mut rows)?;
    }
    Ok(rows)
}

/// One group's part of a read, from its primary.
async fn from_primary(
    shards: &ShardPool,
    group: ShardGroupId,
    fetch: &Fetch,
    filter: Option<&Expr>,
    limit: u64,
    txn: Option<&TxnContext>,
    lock: bool,
) -> Result<RawRows> {
    let client = shards.get(group)?;
    match fetch {
        Fetch::Keys(keys) => client.get_rows(keys.clone(), txn, lock).await,
        Fetch::Range { start, end } => client.scan(start.clone(), end.clone(), filter, limit, txn, lock).await,
    }
}

fn decode(table: &Table, group: ShardGroupId, raw: RawRows, rows: &mut Vec<FetchedRow>) -> Result<()> {
    for (key, value) in raw {
        let values = decode_row(&value).map_err(|e| CoordError::Internal(format!("table \"{}\" on shard group {group}: {e}", table.name())))?;
        if values.len() != table.def.columns.len() {
            return Err(CoordError::Internal(format!(
                "table \"{}\" on shard group {group}: row has {} columns, expected {}",
                table.name(),
                values.len(),
                table.def.columns.len()
            )));
        }
        rows.push(FetchedRow { group, key, values });
    }
    Ok(())
}

/// Where committed reads outside transactions come from.
#[derive(Clone, Copy)]
pub enum ReadFrom<'a> {
    Primary,
    /// A replica of each group that answers and is fresh enough; the
    /// primary when none is (unless `reads.refuse_stale`).
    Replicas {
        failover: &'a Failover,
        reads: ReplicaReads,
    },
}

/// Spreads replica reads over a group's replicas.
static NEXT_REPLICA: AtomicUsize = AtomicUsize::new(0);

/// Committed reads served by replicas: the rows, and the most any of them
/// may be stale (milliseconds; 0 for rows read from a primary).
pub async fn fetch_from_replicas(
    shards: &ShardPool,
    failover: &Failover,
    table: &Table,
    targets: &[(ShardGroupId, Fetch)],
    filter: Option<&Expr>,
    limit: u64,
    reads: ReplicaReads,
) -> Result<(Vec<FetchedRow>, u64)> {
    let requests = targets.iter().map(|(group, fetch)| async move {
        let mut replicas = failover.live_replicas(*group);
        let count = replicas.len();
        if count > 0 {
            replicas.rotate_left(NEXT_REPLICA.fetch_add(1, Ordering::Relaxed) % count);
        }
        let mut last_error = None;
        for address in &replicas {
            let Some(client) = shards.member(*group, address) else { continue };
            let answer = match fetch {
                Fetch::Keys(keys) => client.replica_get(keys.clone(), reads.max_staleness).await,
                Fetch::Range { start, end } => client.replica_scan(start.clone(), end.clone(), filter, limit, reads.max_staleness).await,
            };
            match answer {
                Ok((raw, staleness)) => return Ok::<_, CoordError>((*group, raw, staleness)),
                Err(e) => last_error = Some(e),
            }
        }
        if reads.refuse_stale && !replicas.is_empty() {
            let bound = reads.max_staleness.map(|d| format!("{} ms", d.as_millis())).unwrap_or("any staleness".into());
            let why = last_error.map(|e| e.to_string()).unwrap_or_default();
            return Err(CoordError::ReplicaTooStale(format!("no replica of shard group {group} could serve the read within {bound}: {why}")));
        }
        // No replica (or none fresh enough): the primary.
        Ok((*group, from_primary(shards, *group, fetch, filter, limit, None, false).await?, 0))
    });
    let mut rows = Vec::new();
    let mut staleness = 0;
    for (group, raw, s) in try_join_all(requests).await? {
        staleness = staleness.max(s);
        decode(table, group, raw, &mut rows)?;
    }
    Ok((rows, staleness))
}
