//! Running a planned SELECT: read from the shard groups the key access
//! reaches, then filter, aggregate, sort, limit and project on the
//! coordinator.

use crate::catalog::Table;
use crate::error::Result;
use crate::read;
use crate::result::QueryResult;
use crate::shards::ShardPool;
use crate::sql::aggregate;
use crate::sql::select::{Body, OrderKey, SelectPlan};
use crate::txn::Txn;
use std::cmp::Ordering;
use tessera_model::data::expr::Expr;
use tessera_model::data::Value;

/// Runs a planned SELECT: inside a (read-write) transaction every row read
/// is locked; outside one, every shard group is read at `read_ts`.
pub async fn execute(shards: &ShardPool, plan: &SelectPlan, txn: Option<&mut Txn>, from: read::ReadFrom<'_>, read_ts: u64) -> Result<QueryResult> {
    let (rows, staleness_ms) = match &plan.table {
        None => (vec![Vec::new()], None),
        Some(table) => read_rows(shards, table, plan, txn, from, read_ts).await?,
    };
    finish(plan, rows, staleness_ms)
}

/// What the coordinator does with the rows a plan read: filter, aggregate,
/// sort, deduplicate, limit and project.
pub fn finish(plan: &SelectPlan, rows: Vec<Vec<Value>>, staleness_ms: Option<u64>) -> Result<QueryResult> {
    let mut rows = filter_rows(rows, plan.filter.as_ref())?;
    if let Body::Aggregate { group_by, calls, having } = &plan.body {
        rows = filter_rows(aggregate::aggregate(&rows, group_by, calls)?, having.as_ref())?;
    }
    let mut out: Vec<(Vec<Value>, Vec<Value>)> = Vec::with_capacity(rows.len());
    for row in &rows {
        let keys = plan.order.iter().map(|k| k.expr.eval(row)).collect::<std::result::Result<Vec<_>, _>>()?;
        let values = plan.projection.iter().map(|e| e.eval(row)).collect::<std::result::Result<Vec<_>, _>>()?;
        out.push((keys, values));
    }
    if !plan.order.is_empty() {
        out.sort_by(|a, b| compare_keys(&a.0, &b.0, &plan.order));
    }
    let mut values: Vec<Vec<Value>> = out.into_iter().map(|(_, v)| v).collect();
    if plan.distinct {
        let mut seen = std::collections::HashSet::new();
        values.retain(|row| seen.insert(row.clone()));
    }
    let values: Vec<Vec<Value>> = values.into_iter().skip(plan.offset as usize).take(plan.limit.map(|l| l as usize).unwrap_or(usize::MAX)).collect();
    Ok(QueryResult { tag: format!("SELECT {}", values.len()), columns: plan.columns.clone(), rows_affected: values.len() as u64, rows: values, staleness_ms })
}

/// The rows the plan reads, and how stale they may be (replica reads).
async fn read_rows(
    shards: &ShardPool,
    table: &Table,
    plan: &SelectPlan,
    txn: Option<&mut Txn>,
    from: read::ReadFrom<'_>,
    read_ts: u64,
) -> Result<(Vec<Vec<Value>>, Option<u64>)> {
    if let (None, read::ReadFrom::Replicas { failover, reads }) = (&txn, from) {
        let (rows, staleness) =
            read::fetch_from_replicas(shards, failover, table, &plan.targets, plan.pushed.as_ref(), plan.shard_limit, reads, read_ts).await?;
        return Ok((rows.into_iter().map(|r| r.values).collect(), Some(staleness)));
    }
    let contexts = txn.map(|t| t.contexts(plan.targets.iter().map(|(g, _)| *g)));
    // In a transaction, a read with a snapshot (READ COMMITTED, REPEATABLE
    // READ) takes no locks; one without locks what it reads.
    let lock = contexts.is_some() && read_ts == 0;
    let rows = read::fetch(shards, table, &plan.targets, plan.pushed.as_ref(), plan.shard_limit, contexts.as_ref(), lock, read_ts).await?;
    Ok((rows.into_iter().map(|r| r.values).collect(), None))
}

pub fn filter_rows(rows: Vec<Vec<Value>>, filter: Option<&Expr>) -> Result<Vec<Vec<Value>>> {
    let Some(filter) = filter else { return Ok(rows) };
    let mut kept = Vec::with_capacity(rows.len());
    for row in rows {
        if filter.matches(&row)? {
            kept.push(row);
        }
    }
    Ok(kept)
}

fn compare_keys(a: &[Value], b: &[Value], order: &[OrderKey]) -> Ordering {
    for ((x, y), key) in a.iter().zip(b).zip(order) {
        let ord = match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => {
                if key.nulls_first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (false, true) => {
                if key.nulls_first {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            _ => {
                let o = x.sort_cmp(y);
                if key.desc {
                    o.reverse()
                } else {
                    o
                }
            }
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}
