//! Planning INSERT, UPDATE and DELETE: bind against the catalog, evaluate
//! and validate an INSERT's rows, find which keys an UPDATE or DELETE reads.
//! [`crate::exec::write`] carries the plans out.

use super::bind::{self, NoColumns};
use super::ddl::TableScope;
use super::select::{bind_condition, pushable};
use crate::catalog::{Catalog, ShardGroupId, Table};
use crate::error::{CoordError, Result};
use crate::plan::write::{InsertPlan, ModifyKind, ModifyPlan, RowValidator, MAX_INSERT_ROWS};
use sqlparser::ast;
use std::collections::BTreeMap;
use std::sync::Arc;
use tessera_model::data::keys::row_key;
use tessera_model::data::row::encode_row;
use tessera_model::data::{DataType, Value};
use tessera_model::sqlstate;
use tessera_model::txn::{Mutation, MutationOp};

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
    let validator = validator(table.clone())?;
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
    Ok(InsertPlan { table, by_group, rows, validator })
}

fn values_rows(insert: &ast::Insert) -> Result<Vec<Vec<ast::Expr>>> {
    let source = insert.source.as_ref().ok_or_else(|| CoordError::Unsupported("INSERT without VALUES".into()))?;
    match source.body.as_ref() {
        ast::SetExpr::Values(values) => Ok(values.rows.iter().map(|r| r.content.clone()).collect()),
        _ => Err(CoordError::Unsupported("INSERT ... SELECT".into())),
    }
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
            return Err(CoordError::invalid_value("aggregate functions are not allowed in UPDATE", sqlstate::GROUPING_ERROR));
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
    let targets = crate::plan::targets(&table, &access);
    let (pushed, _) = pushable(filter.as_ref());
    let validator = validator(table.clone())?;
    Ok(ModifyPlan { table, kind, filter, pushed, access, targets, validator })
}

/// The validator of `table`'s new rows, with its CHECK constraints bound.
pub fn validator(table: Arc<Table>) -> Result<RowValidator> {
    let scope = TableScope { table: &table.def.name, alias: None, columns: &table.def.columns };
    let checks = table.def.checks.iter().map(|c| Ok((c.name.clone(), bind::bind(&super::parse_expr(&c.sql)?, &scope)?))).collect::<Result<Vec<_>>>()?;
    Ok(RowValidator::new(table, checks))
}
