//! Carrying out INSERT, UPDATE and DELETE plans.
//!
//! Every write runs in a transaction ([`crate::txn`]): rows are read with
//! exclusive locks, new values are computed and validated on the coordinator
//! (types, NOT NULL, CHECK), and the writes go to their shard groups. Outside
//! BEGIN the statement is its own transaction: it commits in one phase when
//! it writes to one group and with two-phase commit when it writes to several.

use crate::catalog::ShardGroupId;
use crate::error::{CoordError, Result};
use crate::plan::write::{InsertPlan, ModifyPlan};
use crate::read;
use crate::shards::ShardPool;
use crate::txn::{Txn, TxnManager};
use std::collections::BTreeMap;
use tessera_model::data::row::encode_row;
use tessera_model::txn::{Mutation, MutationOp};

/// Sends an INSERT's rows within `txn`; returns the row count.
pub async fn insert(txns: &TxnManager, txn: &mut Txn, plan: InsertPlan) -> Result<u64> {
    txns.write(txn, plan.by_group).await?;
    Ok(plan.rows)
}

/// Reads the matching rows under locks within `txn`, computes and
/// validates the new rows, and sends the writes; returns the row count.
pub async fn modify(shards: &ShardPool, txns: &TxnManager, txn: &mut Txn, plan: &ModifyPlan) -> Result<u64> {
    let contexts = txn.contexts(plan.targets.iter().map(|(g, _)| *g));
    // REPEATABLE READ: a row changed since the snapshot fails with 40001.
    let write_check = if txn.isolation == crate::txn::Isolation::RepeatableRead { txn.snapshot_ts().unwrap_or(0) } else { 0 };
    let fetched = read::fetch(shards, &plan.table, &plan.targets, plan.pushed.as_ref(), 0, Some(&contexts), true, write_check).await?;
    tessera_model::failpoint::fail("coordinator.after_modify_read").map_err(CoordError::Internal)?;
    let mut by_group: BTreeMap<ShardGroupId, Vec<Mutation>> = BTreeMap::new();
    let mut count = 0u64;
    for row in fetched {
        let op = match plan.new_row(&row.values)? {
            None => continue,
            Some(None) => MutationOp::Delete,
            Some(Some(new)) => MutationOp::Put(encode_row(&new)),
        };
        by_group.entry(row.group).or_default().push(Mutation { key: row.key, op });
        count += 1;
    }
    txns.write(txn, by_group).await?;
    Ok(count)
}
