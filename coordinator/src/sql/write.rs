//! INSERT, UPDATE and DELETE.
//!
//! Every write runs in a transaction ([`crate::txn`]): rows are read with
//! exclusive locks, new values are computed and validated on the coordinator
//! (types, NOT NULL, CHECK), and the writes go to their shard groups. Outside
//! BEGIN the statement is its own transaction: it commits in one phase when
//! it writes to one group and with two-phase commit when it writes to several.

use super::access::KeyAccess;
use super::bind::{self, NoColumns};
use super::ddl::TableScope;
use super::read::{self, Fetch};
use super::select::{bind_condition, pushable};
use super::types;
use crate::catalog::{Catalog, ShardGroupId, Table};
use crate::error::{CoordError, Result};
use crate::shards::ShardPool;
use crate::txn::{Txn, TxnManager};
use sqlparser::ast;
use std::collections::BTreeMap;
use std::sync::Arc;
use tessera_model::data::expr::Expr;
use tessera_model::data::keys::row_key;
use tessera_model::data::row::encode_row;
use tessera_model::data::{DataType, Value};
use tessera_model::txn::{Mutation, MutationOp};

/// Largest number of rows one INSERT may carry.
pub const MAX_INSERT_ROWS: usize = 100_000;

pub struct InsertPlan {
    pub table: Arc<Table>,
    pub by_group: BTreeMap<ShardGroupId, Vec<Mutation>>,
    pub rows: u64,
}

pub enum ModifyKind {
    Update { assignments: Vec<(usize, Expr)> },
    Delete,
}

pub struct ModifyPlan {
    pub table: Arc<Table>,
    pub kind: ModifyKind,
    pub filter: Option<Expr>,
    pub pushed: Option<Expr>,
    pub access: KeyAccess,
    pub targets: Vec<(ShardGroupId, Fetch)>,
}

impl ModifyPlan {
    /// What the statement does to a row it read: `None` when the row fails
    /// the filter, `Some(None)` to delete it, `Some(Some(new))` to update it
    /// (validated).
    pub fn new_row(&self, validator: &RowValidator, values: &[Value]) -> Result<Option<Option<Vec<Value>>>> {
        if let Some(filter) = &self.filter {
            if !filter.matches(values)? {
                return Ok(None);
            }
        }
        match &self.kind {
            ModifyKind::Delete => Ok(Some(None)),
            ModifyKind::Update { assignments } => {
                let mut new = values.to_vec();
                for (col, expr) in assignments {
                    new[*col] = expr.eval(values)?;
                }
                Ok(Some(Some(validator.validate(new)?)))
            }
        }
    }

    pub fn verb(&self) -> &'static str {
        match self.kind {
            ModifyKind::Update { .. } => "UPDATE",
            ModifyKind::Delete => "DELETE",
        }
    }
}

/// Validates a full row for `table`: types, NOT NULL, CHECK constraints.
pub struct RowValidator {
    table: Arc<Table>,
    checks: Vec<(String, Expr)>,
}

impl RowValidator {
    pub fn new(table: Arc<Table>) -> Result<RowValidator> {
        let scope = TableScope { table: &table.def.name, alias: None, columns: &table.def.columns };
        let checks = table.def.checks.iter().map(|c| Ok((c.name.clone(), bind::bind(&super::parse_expr(&c.sql)?, &scope)?))).collect::<Result<Vec<_>>>()?;
        Ok(RowValidator { table, checks })
    }

    pub fn validate(&self, row: Vec<Value>) -> Result<Vec<Value>> {
        let def = &self.table.def;
        let mut out = Vec::with_capacity(row.len());
        for (value, column) in row.into_iter().zip(&def.columns) {
            let value = types::coerce(value, column)?;
            if value.is_null() && !column.nullable {
                return Err(CoordError::NotNullViolation(format!(
                    "null value in column \"{}\" of relation \"{}\" violates not-null constraint",
                    column.name, def.name
                )));
            }
            out.push(value);
        }
        for (name, check) in &self.checks {
            if matches!(check.eval(&out)?, Value::Bool(false)) {
                return Err(CoordError::CheckViolation(format!("new row for relation \"{}\" violates check constraint \"{name}\"", def.name)));
            }
        }
        Ok(out)
    }
}

fn is_default_keyword(e: &ast::Expr) -> bool {
    matches!(e, ast::Expr::Identifier(i) if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default"))
}

pub fn plan_insert(catalog: &Catalog, insert: &ast::Insert) -> Result<InsertPlan> {
    if insert.on.is_some() || insert.returning.is_some() || insert.or.is_some() || insert.ignore || insert.overwrite {
        return Err(CoordError::Unsupported("ON CONFLICT, RETURNING and INSERT modifiers".into()));
    }
    let ast::TableObject::TableName(name) = &insert.table else {
        return Err(CoordError::Unsupported("INSERT into a table function".into()));
    };
    let table = catalog.get(&bind::object_name(name)?)?;
    let def = &table.def;
    let targets: Vec<usize> = if insert.columns.is_empty() {
        (0..def.columns.len()).collect()
    } else {
        insert
            .columns
            .iter()
            .map(|c| {
                let name = bind::object_name(c)?;
                def.column_index(&name).ok_or_else(|| CoordError::UnknownColumn(format!("table \"{}\" has no column \"{name}\"", def.name)))
            })
            .collect::<Result<_>>()?
    };
    let rows = values_rows(insert)?;
    if rows.len() > MAX_INSERT_ROWS {
        return Err(CoordError::Invalid(format!("INSERT has {} rows; at most {MAX_INSERT_ROWS} are allowed per statement", rows.len())));
    }
    let defaults: Vec<Value> =
        def.columns.iter().map(|c| c.default.as_deref().map(super::eval_default).transpose().map(|d| d.unwrap_or(Value::Null))).collect::<Result<_>>()?;
    let validator = RowValidator::new(table.clone())?;
    let mut by_group: BTreeMap<ShardGroupId, Vec<Mutation>> = BTreeMap::new();
    for exprs in &rows {
        if exprs.len() != targets.len() {
            let which = if exprs.len() > targets.len() { "more" } else { "fewer" };
            return Err(CoordError::Invalid(format!("INSERT has {which} expressions than target columns ({} vs {})", exprs.len(), targets.len())));
        }
        let mut row = defaults.clone();
        for (e, &col) in exprs.iter().zip(&targets) {
            if !is_default_keyword(e) {
                row[col] = bind::bind(e, &NoColumns)?.eval(&[])?;
            }
        }
        let row = validator.validate(row)?;
        let pk = &row[def.primary_key];
        let key = row_key(def.id, pk);
        by_group.entry(table.route(pk)).or_default().push(Mutation { key, op: MutationOp::Insert(encode_row(&row)) });
    }
    let rows = rows.len() as u64;
    Ok(InsertPlan { table, by_group, rows })
}

fn values_rows(insert: &ast::Insert) -> Result<Vec<Vec<ast::Expr>>> {
    let source = insert.source.as_ref().ok_or_else(|| CoordError::Unsupported("INSERT without VALUES".into()))?;
    match source.body.as_ref() {
        ast::SetExpr::Values(values) => Ok(values.rows.iter().map(|r| r.content.clone()).collect()),
        _ => Err(CoordError::Unsupported("INSERT ... SELECT".into())),
    }
}

/// Sends an INSERT's rows within `txn`; returns the row count.
pub async fn insert(txns: &TxnManager, txn: &mut Txn, plan: InsertPlan) -> Result<u64> {
    txns.write(txn, plan.by_group).await?;
    Ok(plan.rows)
}

pub fn plan_update(catalog: &Catalog, update: &ast::Update) -> Result<ModifyPlan> {
    if update.from.is_some() || update.returning.is_some() || update.limit.is_some() || !update.order_by.is_empty() {
        return Err(CoordError::Unsupported("UPDATE with FROM, RETURNING, ORDER BY or LIMIT".into()));
    }
    let (table, alias) = single_table(catalog, &update.table)?;
    let scope = TableScope { table: &table.def.name, alias: alias.as_deref(), columns: &table.def.columns };
    let mut assignments = Vec::new();
    for a in &update.assignments {
        let ast::AssignmentTarget::ColumnName(name) = &a.target else {
            return Err(CoordError::Unsupported("tuple assignment in UPDATE".into()));
        };
        let name = bind::object_name(name)?;
        let col = table.def.column_index(&name).ok_or_else(|| CoordError::UnknownColumn(format!("table \"{}\" has no column \"{name}\"", table.def.name)))?;
        if col == table.def.primary_key {
            return Err(CoordError::Unsupported(format!("updating the primary key column \"{name}\" (delete the row and insert it again)")));
        }
        if bind::contains_aggregate(&a.value) {
            return Err(CoordError::invalid_value("aggregate functions are not allowed in UPDATE", "42803"));
        }
        assignments.push((col, bind::bind(&a.value, &scope)?));
    }
    modify_plan(table, alias, update.selection.as_ref(), ModifyKind::Update { assignments })
}

pub fn plan_delete(catalog: &Catalog, delete: &ast::Delete) -> Result<ModifyPlan> {
    if delete.using.is_some() || delete.returning.is_some() || delete.limit.is_some() || !delete.order_by.is_empty() || !delete.tables.is_empty() {
        return Err(CoordError::Unsupported("DELETE with USING, RETURNING, ORDER BY, LIMIT or several tables".into()));
    }
    let from = match &delete.from {
        ast::FromTable::WithFromKeyword(f) | ast::FromTable::WithoutKeyword(f) => f,
    };
    let [from] = from.as_slice() else {
        return Err(CoordError::Unsupported("DELETE from several tables".into()));
    };
    let (table, alias) = single_table(catalog, from)?;
    modify_plan(table, alias, delete.selection.as_ref(), ModifyKind::Delete)
}

fn single_table(catalog: &Catalog, from: &ast::TableWithJoins) -> Result<(Arc<Table>, Option<String>)> {
    if !from.joins.is_empty() {
        return Err(CoordError::Unsupported("joins in UPDATE or DELETE".into()));
    }
    match &from.relation {
        ast::TableFactor::Table { name, alias, .. } => Ok((catalog.get(&bind::object_name(name)?)?, alias.as_ref().map(|a| bind::ident(&a.name)))),
        other => Err(CoordError::Unsupported(format!("target {other}"))),
    }
}

fn modify_plan(table: Arc<Table>, alias: Option<String>, selection: Option<&ast::Expr>, kind: ModifyKind) -> Result<ModifyPlan> {
    let scope = TableScope { table: &table.def.name, alias: alias.as_deref(), columns: &table.def.columns };
    let types: Vec<DataType> = table.def.columns.iter().map(|c| c.column_type.data_type).collect();
    let filter = selection.map(|w| bind_condition(w, &scope, &types, "WHERE")).transpose()?;
    let access = super::access::analyze(filter.as_ref(), table.def.primary_key, table.def.pk_column().column_type.data_type);
    let targets = read::targets(&table, &access);
    let (pushed, _) = pushable(filter.as_ref());
    Ok(ModifyPlan { table, kind, filter, pushed, access, targets })
}

/// Reads the matching rows under locks within `txn`, computes and
/// validates the new rows, and sends the writes; returns the row count.
pub async fn modify(shards: &ShardPool, txns: &TxnManager, txn: &mut Txn, plan: &ModifyPlan) -> Result<u64> {
    let contexts = txn.contexts(plan.targets.iter().map(|(g, _)| *g));
    let fetched = read::fetch(shards, &plan.table, &plan.targets, plan.pushed.as_ref(), 0, Some(&contexts), true).await?;
    tessera_model::failpoint::fail("coordinator.after_modify_read").map_err(CoordError::Internal)?;
    let validator = RowValidator::new(plan.table.clone())?;
    let mut by_group: BTreeMap<ShardGroupId, Vec<Mutation>> = BTreeMap::new();
    let mut count = 0u64;
    for row in fetched {
        let op = match plan.new_row(&validator, &row.values)? {
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
