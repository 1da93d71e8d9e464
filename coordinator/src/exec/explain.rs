//! EXPLAIN: which shard groups a statement reaches, how it reads them, and
//! how it commits.

use crate::catalog::{ShardGroupId, Table};
use crate::plan::write::{InsertPlan, ModifyPlan};
use crate::plan::{Fetch, KeyAccess};
use crate::result::QueryResult;
use crate::shards::ShardPool;
use crate::sql::select::{Body, SelectPlan};
use std::ops::Bound;
use tessera_model::data::{DataType, Value};

fn groups_line(shards: &ShardPool, groups: &[ShardGroupId]) -> String {
    let addresses: std::collections::HashMap<_, _> = shards.groups().into_iter().collect();
    let list: Vec<String> = groups.iter().map(|g| format!("{g} ({})", addresses.get(g).map(String::as_str).unwrap_or("?"))).collect();
    if list.is_empty() {
        "shard groups: none (no key can match)".into()
    } else {
        format!("shard groups: {}", list.join(", "))
    }
}

fn access_line(table: &Table, access: &KeyAccess, targets: &[(ShardGroupId, Fetch)]) -> String {
    let pk = &table.def.pk_column().name;
    match access {
        KeyAccess::Points(points) => {
            let list: Vec<String> = points.iter().map(literal).collect();
            format!("access: point lookup on primary key {pk} IN ({}), {} key(s)", list.join(", "), points.len())
        }
        KeyAccess::Range { lo, hi } => {
            let mut parts = Vec::new();
            match lo {
                Bound::Included(v) => parts.push(format!("{pk} >= {}", literal(v))),
                Bound::Excluded(v) => parts.push(format!("{pk} > {}", literal(v))),
                Bound::Unbounded => {}
            }
            match hi {
                Bound::Included(v) => parts.push(format!("{pk} <= {}", literal(v))),
                Bound::Excluded(v) => parts.push(format!("{pk} < {}", literal(v))),
                Bound::Unbounded => {}
            }
            let how = if table.partitioner.all_groups().len() == targets.len() {
                "range scan on every group (hash partitioning)"
            } else {
                "range scan on the overlapping groups"
            };
            format!("access: {how}, {}", parts.join(" AND "))
        }
        KeyAccess::Full => "access: full scan, scattered to every group in parallel".into(),
    }
}

fn literal(v: &Value) -> String {
    match v {
        Value::Text(s) => format!("'{}'", s.replace('\'', "''")),
        other => other.to_string(),
    }
}

fn lines_result(lines: Vec<String>) -> QueryResult {
    QueryResult::rows(&[("QUERY PLAN", DataType::Text)], lines.into_iter().map(|l| vec![Value::Text(l)]).collect())
}

pub fn explain_select(shards: &ShardPool, plan: &SelectPlan) -> QueryResult {
    let Some(table) = &plan.table else {
        return lines_result(vec!["Result (no table: evaluated on the coordinator)".into()]);
    };
    let groups: Vec<ShardGroupId> = plan.targets.iter().map(|(g, _)| *g).collect();
    let mut lines = vec![
        format!("Select on {}", table.name()),
        format!("  {}", access_line(table, &plan.access, &plan.targets)),
        format!("  {}", groups_line(shards, &groups)),
    ];
    lines.push(match (&plan.pushed, plan.pushed_all) {
        (None, true) => "  filter: none".into(),
        (Some(_), true) => "  filter: evaluated on the shards".into(),
        (Some(_), false) => "  filter: partly on the shards, the rest on the coordinator".into(),
        (None, false) => "  filter: on the coordinator".into(),
    });
    if plan.shard_limit > 0 {
        lines.push(format!("  limit pushed to each shard: {}", plan.shard_limit));
    }
    let mut steps = vec!["merge"];
    if let Body::Aggregate { .. } = plan.body {
        steps.push("aggregate");
    }
    if !plan.order.is_empty() {
        steps.push("sort");
    }
    if plan.distinct {
        steps.push("distinct");
    }
    if plan.limit.is_some() || plan.offset > 0 {
        steps.push("limit");
    }
    lines.push(format!("  coordinator: {}", steps.join(", ")));
    lines.push(if plan.lock {
        "  commit: none (outside a transaction, FOR UPDATE locks are held for the statement only)".into()
    } else {
        "  commit: none (read-only; reads committed data, or locks the rows inside a transaction)".into()
    });
    lines_result(lines)
}

pub fn explain_insert(shards: &ShardPool, plan: &InsertPlan) -> QueryResult {
    let groups: Vec<ShardGroupId> = plan.by_group.keys().copied().collect();
    let mut lines = vec![format!("Insert into {} ({} row(s))", plan.table.name(), plan.rows), format!("  {}", groups_line(shards, &groups))];
    lines.push(commit_line(&groups));
    lines_result(lines)
}

pub fn explain_modify(shards: &ShardPool, plan: &ModifyPlan) -> QueryResult {
    let groups: Vec<ShardGroupId> = plan.targets.iter().map(|(g, _)| *g).collect();
    let mut lines = vec![
        format!("{} on {}", if plan.verb() == "UPDATE" { "Update" } else { "Delete" }, plan.table.name()),
        format!("  {}", access_line(&plan.table, &plan.access, &plan.targets)),
        format!("  {}", groups_line(shards, &groups)),
        "  rows: read with exclusive locks, new values checked on the coordinator".into(),
    ];
    if groups.len() > 1 {
        lines.push("  commit: one phase (1PC) if the matching rows are on one shard group, two-phase commit (2PC) if they span several".into());
    } else {
        lines.push(commit_line(&groups));
    }
    lines_result(lines)
}

fn commit_line(groups: &[ShardGroupId]) -> String {
    match groups {
        [] => "  commit: nothing to write".into(),
        [g] => format!("  commit: one phase (1PC) on shard group {g}"),
        many => format!("  commit: two-phase commit (2PC) across shard groups {}", many.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(", ")),
    }
}
