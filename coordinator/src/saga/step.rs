//! One step or compensation: a one-phase local transaction on one shard
//! group, with the step's marker row written in the same transaction.
//!
//! The marker (`marker_key(step id)`, in a key space no table uses) is read
//! with an exclusive lock first, so the decision below and the commit are
//! atomic on the shard:
//!
//! | marker | step | compensation |
//! |---|---|---|
//! | none | run it, write `Applied` with the before/after images | write `Compensated` with nothing to undo (fences out a late step) |
//! | `Applied` | already ran: answer as before, change nothing | undo from the recorded images, write `Compensated` |
//! | `Compensated` | refused: the step arrived after its compensation | already done |

use crate::catalog::ShardGroupId;
use crate::error::{CoordError, Result};
use crate::plan::saga::{Compensation, StatementPlan, Undo, WritePlan};
use crate::plan::Fetch;
use crate::read;
use crate::shards::{ShardClient, ShardPool};
use crate::txn::oracle::Oracle;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use tessera_model::data::expr::apply_binary;
use tessera_model::data::expr::BinaryOp;
use tessera_model::data::keys::{decode_row_key, row_key};
use tessera_model::data::row::{decode_row, encode_row};
use tessera_model::data::Value;
use tessera_model::failpoint;
use tessera_model::txn::{Mutation, MutationOp, TxnContext};

/// The reserved table id of step markers (the catalog never hands it out).
pub const MARKER_TABLE: u32 = u32::MAX;

pub fn marker_key(step_id: &str) -> Vec<u8> {
    row_key(MARKER_TABLE, &Value::Text(step_id.to_string()))
}

/// One row a step changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub key: Vec<u8>,
    pub before: Option<Vec<u8>>,
    pub after: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Marker {
    Applied { changes: Vec<Change> },
    Compensated { undone: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    Applied(u64),
    /// The marker says the step already ran (a repeated delivery).
    AlreadyApplied(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompensationOutcome {
    Undone(u64),
    /// The step never ran here; its marker now fences it out.
    NothingToUndo,
    AlreadyCompensated,
}

/// Where a step runs: its group, its local transaction, its marker.
pub struct StepTarget<'a> {
    pub shards: &'a ShardPool,
    /// Each step commits at a timestamp of its own.
    pub oracle: &'a Oracle,
    pub group: ShardGroupId,
    pub step_id: &'a str,
    pub ctx: TxnContext,
}

impl StepTarget<'_> {
    fn client(&self) -> Result<ShardClient> {
        self.shards.get(self.group)
    }

    /// Begins the local transaction by locking and reading the marker.
    async fn lock_marker(&mut self) -> Result<Option<Marker>> {
        let rows = self.client()?.get_rows(vec![marker_key(self.step_id)], Some(&self.ctx), true, 0).await?;
        self.ctx.begin = false;
        rows.first()
            .map(|(_, v)| {
                serde_json::from_slice(v)
                    .map_err(|e| CoordError::Internal(format!("step {}: unreadable marker on shard group {}: {e}", self.step_id, self.group)))
            })
            .transpose()
    }

    async fn commit(&self, mut mutations: Vec<Mutation>, marker: &Marker) -> Result<()> {
        mutations.push(Mutation { key: marker_key(self.step_id), op: MutationOp::Put(serde_json::to_vec(marker).expect("markers serialize")) });
        let min_ts = self.oracle.next().await.map_err(|e| e.context("cannot take a commit timestamp"))?;
        let commit_ts = self.client()?.commit_one_phase(&self.ctx, &mutations, min_ts).await?;
        self.oracle.observe(commit_ts).await.map_err(|e| e.context("the step committed, but its timestamp could not be recorded"))
    }

    /// Ends the local transaction without writing (idempotent).
    pub async fn abort(&self) {
        if let Ok(client) = self.client() {
            let _ = client.abort(&TxnContext { begin: false, ..self.ctx.clone() }).await;
        }
    }
}

/// Runs the step: `plan` restricted to the target's group.
pub async fn run_step(target: &mut StepTarget<'_>, plan: &StatementPlan) -> Result<StepOutcome> {
    let outcome = run_step_inner(target, plan).await;
    if outcome.is_err() || matches!(outcome, Ok(StepOutcome::AlreadyApplied(_))) {
        target.abort().await;
    }
    outcome
}

async fn run_step_inner(target: &mut StepTarget<'_>, plan: &StatementPlan) -> Result<StepOutcome> {
    match target.lock_marker().await? {
        Some(Marker::Applied { changes }) => return Ok(StepOutcome::AlreadyApplied(changes.len() as u64)),
        Some(Marker::Compensated { .. }) => {
            return Err(CoordError::Fenced(format!("step {} arrived on shard group {} after its compensation and was refused", target.step_id, target.group)))
        }
        None => {}
    }
    let changes = changes_on_group(target, &plan.write).await?;
    check_required(target, plan, &changes)?;
    failpoint::hit("saga.step.before_commit").await;
    let rows = changes.len() as u64;
    let mutations = changes.iter().map(|(m, _)| m.clone()).collect();
    target.commit(mutations, &Marker::Applied { changes: changes.into_iter().map(|(_, c)| c).collect() }).await?;
    failpoint::hit("saga.step.after_commit").await;
    Ok(StepOutcome::Applied(rows))
}

/// Runs the step's compensation.
pub async fn compensate(target: &mut StepTarget<'_>, plan: &StatementPlan) -> Result<CompensationOutcome> {
    let outcome = compensate_inner(target, plan).await;
    if outcome.is_err() || matches!(outcome, Ok(CompensationOutcome::AlreadyCompensated)) {
        target.abort().await;
    }
    outcome
}

async fn compensate_inner(target: &mut StepTarget<'_>, plan: &StatementPlan) -> Result<CompensationOutcome> {
    let changes = match target.lock_marker().await? {
        Some(Marker::Compensated { .. }) => return Ok(CompensationOutcome::AlreadyCompensated),
        None => {
            target.commit(Vec::new(), &Marker::Compensated { undone: 0 }).await?;
            return Ok(CompensationOutcome::NothingToUndo);
        }
        Some(Marker::Applied { changes }) => changes,
    };
    failpoint::fail("saga.compensation.error").map_err(CoordError::ShardUnavailable)?;
    let mutations = match &plan.compensation {
        Compensation::Explicit(_, write) => changes_on_group(target, write).await?.into_iter().map(|(m, _)| m).collect(),
        Compensation::DeleteInserted => changes.iter().filter(|c| c.after.is_some()).map(|c| Mutation { key: c.key.clone(), op: MutationOp::Delete }).collect(),
        Compensation::Reinsert => {
            changes.iter().filter_map(|c| c.before.clone().map(|before| Mutation { key: c.key.clone(), op: MutationOp::Insert(before) })).collect()
        }
        Compensation::Revert(undo) => revert(target, plan, undo, &changes).await?,
    };
    failpoint::hit("saga.compensation.before_commit").await;
    let undone = mutations.len() as u64;
    target.commit(mutations, &Marker::Compensated { undone }).await?;
    Ok(CompensationOutcome::Undone(undone))
}

/// Undoes an UPDATE row by row against the current (locked) rows.
async fn revert(target: &StepTarget<'_>, plan: &StatementPlan, undo: &[(usize, Undo)], changes: &[Change]) -> Result<Vec<Mutation>> {
    let table = plan.table();
    let keys: Vec<Vec<u8>> = changes.iter().map(|c| c.key.clone()).collect();
    let current: HashMap<Vec<u8>, Vec<u8>> = target.client()?.get_rows(keys, Some(&target.ctx), true, 0).await?.into_iter().collect();
    let validator = plan.write.validator();
    let decode = |bytes: &[u8]| decode_row(bytes).map_err(|e| CoordError::Internal(format!("table \"{}\" on shard group {}: {e}", table.name(), target.group)));
    let mut mutations = Vec::new();
    for change in changes {
        let (Some(before), Some(after)) = (&change.before, &change.after) else { continue };
        let describe = || describe_key(&change.key, &table.def.pk_column().name);
        let Some(now) = current.get(&change.key) else {
            return Err(CoordError::TxnAborted(format!("cannot compensate: the row of \"{}\" with {} was deleted after the step", table.name(), describe())));
        };
        let (before, after, mut row) = (decode(before)?, decode(after)?, decode(now)?);
        let width = table.def.columns.len();
        if before.len() != width || after.len() != width || row.len() != width {
            return Err(CoordError::Internal(format!(
                "cannot compensate: the row of \"{}\" with {} does not have the table's {width} columns",
                table.name(),
                describe()
            )));
        }
        for (col, how) in undo {
            let name = &table.def.columns[*col].name;
            // A delta through NULL loses the old value (NULL - x is NULL):
            // such a column is restored instead, if no one changed it since.
            let delta = *how == Undo::Delta && !before[*col].is_null() && !after[*col].is_null();
            row[*col] = match how {
                _ if delta => {
                    let delta = apply_binary(BinaryOp::Minus, after[*col].clone(), before[*col].clone())?;
                    apply_binary(BinaryOp::Minus, row[*col].clone(), delta)?
                }
                _ if same(&row[*col], &after[*col]) => before[*col].clone(),
                _ => {
                    return Err(CoordError::TxnAborted(format!(
                        "cannot compensate: column \"{name}\" of the row of \"{}\" with {} is now {} but the step set it to {}; \
                         someone changed it since, so restoring {} would lose that change",
                        table.name(),
                        describe(),
                        row[*col],
                        after[*col],
                        before[*col]
                    )))
                }
            };
        }
        let row = validator.validate(row).map_err(|e| e.context(&format!("compensating the row of \"{}\" with {}", table.name(), describe())))?;
        mutations.push(Mutation { key: change.key.clone(), op: MutationOp::Put(encode_row(&row)) });
    }
    Ok(mutations)
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        _ => a.sql_cmp(b) == Some(std::cmp::Ordering::Equal),
    }
}

fn describe_key(key: &[u8], pk: &str) -> String {
    match decode_row_key(key) {
        Some((_, value)) => format!("{pk} = {value}"),
        None => "an undecodable key".into(),
    }
}

/// The writes `write` makes on the target's group within its transaction,
/// with the images of each changed row.
async fn changes_on_group(target: &StepTarget<'_>, write: &WritePlan) -> Result<Vec<(Mutation, Change)>> {
    match write {
        WritePlan::Insert(plan) => Ok(plan
            .by_group
            .get(&target.group)
            .into_iter()
            .flatten()
            .map(|m| {
                let after = match &m.op {
                    MutationOp::Insert(v) | MutationOp::Put(v) => Some(v.clone()),
                    MutationOp::Delete => None,
                };
                (m.clone(), Change { key: m.key.clone(), before: None, after })
            })
            .collect()),
        WritePlan::Modify(plan) => {
            let targets: Vec<(ShardGroupId, Fetch)> = plan.targets.iter().filter(|(g, _)| *g == target.group).cloned().collect();
            let contexts = HashMap::from([(target.group, target.ctx.clone())]);
            let fetched = read::fetch(target.shards, &plan.table, &targets, plan.pushed.as_ref(), 0, Some(&contexts), true, 0).await?;
            let mut out = Vec::new();
            for row in fetched {
                let Some(new) = plan.new_row(&row.values)? else { continue };
                let before = Some(encode_row(&row.values));
                let (op, after) = match new {
                    None => (MutationOp::Delete, None),
                    Some(new) => {
                        let bytes = encode_row(&new);
                        (MutationOp::Put(bytes.clone()), Some(bytes))
                    }
                };
                out.push((Mutation { key: row.key.clone(), op }, Change { key: row.key, before, after }));
            }
            Ok(out)
        }
    }
}

/// A point UPDATE or DELETE in a saga fails when a named row is missing.
fn check_required(target: &StepTarget<'_>, plan: &StatementPlan, changes: &[(Mutation, Change)]) -> Result<()> {
    let table = plan.table();
    let changed: HashSet<&[u8]> = changes.iter().map(|(_, c)| c.key.as_slice()).collect();
    for pk in plan.required_on(target.group) {
        if !changed.contains(row_key(table.def.id, pk).as_slice()) {
            return Err(CoordError::NoData(format!(
                "saga step {} on shard group {}: no row of \"{}\" with {} = {pk} matches the {}",
                target.step_id,
                target.group,
                table.name(),
                table.def.pk_column().name,
                plan.write.verb()
            )));
        }
    }
    Ok(())
}
