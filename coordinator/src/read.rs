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
/// group), reads run in that transaction and `lock` takes exclusive locks;
/// without, every group is read at the snapshot `read_ts`.
#[allow(clippy::too_many_arguments)]
pub async fn fetch(
    shards: &ShardPool,
    table: &Table,
    targets: &[(ShardGroupId, Fetch)],
    filter: Option<&Expr>,
    limit: u64,
    txn: Option<&HashMap<ShardGroupId, TxnContext>>,
    lock: bool,
    read_ts: u64,
) -> Result<Vec<FetchedRow>> {
    let requests = targets.iter().map(|(group, fetch)| async move {
        let txn = txn.and_then(|contexts| contexts.get(group));
        Ok::<_, CoordError>((*group, from_primary(shards, *group, fetch, filter, limit, txn, lock, read_ts).await?))
    });
    let mut rows = Vec::new();
    for (group, raw) in try_join_all(requests).await? {
        decode(table, group, raw, &mut rows)?;
    }
    Ok(rows)
}

/// One group's part of a read, from its primary.
#[allow(clippy::too_many_arguments)]
async fn from_primary(
    shards: &ShardPool,
    group: ShardGroupId,
    fetch: &Fetch,
    filter: Option<&Expr>,
    limit: u64,
    txn: Option<&TxnContext>,
    lock: bool,
    read_ts: u64,
) -> Result<RawRows> {
    let client = shards.get(group)?;
    match fetch {
        Fetch::Keys(keys) => client.get_rows(keys.clone(), txn, lock, read_ts).await,
        Fetch::Range { start, end } => client.scan(start.clone(), end.clone(), filter, limit, txn, lock, read_ts).await,
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

/// The snapshot a replica read takes: the freshest timestamp below which
/// every group has a replica known to hold every commit (`closed`, the
/// smallest over the groups), or, under a staleness bound, no older than
/// the bound allows (replicas wait a moment for it). `None`: no replica
/// can serve; read the primaries.
pub fn replica_read_ts(now_us: u64, bound: Option<Duration>, closed: Option<u64>) -> Option<u64> {
    let oldest_allowed = bound.map(|b| now_us.saturating_sub(b.as_micros() as u64));
    match (closed, oldest_allowed) {
        (Some(c), Some(o)) => Some(c.max(o)),
        (c, o) => c.or(o),
    }
}

/// Snapshot reads served by replicas, all groups at one timestamp (see
/// [`replica_read_ts`]); a group without a replica that can serve it is
/// read from its primary at the same timestamp (unless
/// `reads.refuse_stale`). Returns the rows and how old the snapshot was
/// when the read began (milliseconds). With no replica to read at all, the
/// primaries are read at `fresh_ts`.
#[allow(clippy::too_many_arguments)]
pub async fn fetch_from_replicas(
    shards: &ShardPool,
    failover: &Failover,
    table: &Table,
    targets: &[(ShardGroupId, Fetch)],
    filter: Option<&Expr>,
    limit: u64,
    reads: ReplicaReads,
    fresh_ts: u64,
) -> Result<(Vec<FetchedRow>, u64)> {
    let now = tessera_model::clock::now_micros();
    let members: Vec<Vec<(String, u64)>> = targets.iter().map(|(group, _)| failover.replica_closed(*group)).collect();
    let closed = members.iter().filter(|m| !m.is_empty()).map(|m| m.iter().map(|(_, c)| *c).max().unwrap_or(0)).min().filter(|c| *c > 0);
    let Some(read_ts) = replica_read_ts(now, reads.max_staleness, closed).filter(|_| members.iter().any(|m| !m.is_empty())) else {
        let rows = fetch(shards, table, targets, filter, limit, None, false, fresh_ts).await?;
        return Ok((rows, 0));
    };
    let requests = targets.iter().zip(members).map(|((group, fetch), mut replicas)| async move {
        let count = replicas.len();
        if count > 0 {
            replicas.rotate_left(NEXT_REPLICA.fetch_add(1, Ordering::Relaxed) % count);
        }
        let mut last_error = None;
        for (address, _) in &replicas {
            let Some(client) = shards.member(*group, address) else { continue };
            let answer = match fetch {
                Fetch::Keys(keys) => client.replica_get(keys.clone(), reads.max_staleness, read_ts).await,
                Fetch::Range { start, end } => client.replica_scan(start.clone(), end.clone(), filter, limit, reads.max_staleness, read_ts).await,
            };
            match answer {
                Ok((raw, _)) => return Ok::<_, CoordError>((*group, raw)),
                Err(e) => last_error = Some(e),
            }
        }
        if reads.refuse_stale && !replicas.is_empty() {
            let bound = reads.max_staleness.map(|d| format!("{} ms", d.as_millis())).unwrap_or("any staleness".into());
            let why = last_error.map(|e| e.to_string()).unwrap_or_default();
            return Err(CoordError::ReplicaTooStale(format!("no replica of shard group {group} could serve the read within {bound}: {why}")));
        }
        // No replica (or none fresh enough): the primary, at the same snapshot.
        Ok((*group, from_primary(shards, *group, fetch, filter, limit, None, false, read_ts).await?))
    });
    let mut rows = Vec::new();
    for (group, raw) in try_join_all(requests).await? {
        decode(table, group, raw, &mut rows)?;
    }
    Ok((rows, now.saturating_sub(read_ts) / 1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_read_takes_the_freshest_snapshot_the_replicas_hold_within_the_bound() {
        let s = 1_000_000;
        assert_eq!(replica_read_ts(10 * s, None, Some(9 * s)), Some(9 * s), "as fresh as every group's replica holds");
        assert_eq!(replica_read_ts(10 * s, Some(Duration::from_millis(100)), Some(9 * s)), Some(10 * s - 100_000), "no older than the bound");
        assert_eq!(replica_read_ts(10 * s, Some(Duration::from_secs(5)), Some(9 * s)), Some(9 * s));
        assert_eq!(replica_read_ts(10 * s, None, None), None, "nothing known: the primaries");
    }
}
