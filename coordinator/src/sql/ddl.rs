//! Table definitions from CREATE TABLE (run by [`crate::exec::ddl`]; DROP
//! TABLE, SHOW TABLES and DESCRIBE are there too).
//!
//! Partitioning is chosen per table with a `WITH (...)` option list:
//!
//! ```sql
//! CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance BIGINT CHECK (balance >= 0))
//!   WITH (partitioning = 'range', split_points = '1000,2000');
//! CREATE TABLE events (id TEXT PRIMARY KEY, body TEXT)
//!   WITH (partitioning = 'hash', virtual_nodes = 128);
//! ```
//!
//! Without options a table is hash-partitioned over every shard group.
//! Range tables get one shard group per interval, in group order.

use super::bind::{self, Scope};
use crate::catalog::{CheckDef, ColumnDef, ColumnType, Partitioning, ShardGroupId, TableDef};
use crate::error::{CoordError, Result};
use sqlparser::ast;
use std::cmp::Ordering;
use tessera_model::data::expr::Expr;
use tessera_model::data::{DataType, Value};

pub const DEFAULT_VIRTUAL_NODES: u32 = 256;
const MAX_VIRTUAL_NODES: u32 = 4096;
const MAX_COLUMNS: usize = 1000;

/// Resolves column names of a table being defined.
pub struct TableScope<'a> {
    pub table: &'a str,
    /// The table's alias in FROM, if any (`FROM accounts a`).
    pub alias: Option<&'a str>,
    pub columns: &'a [ColumnDef],
}

impl Scope for TableScope<'_> {
    fn column(&self, qualifier: Option<&str>, name: &str) -> Result<Expr> {
        if let Some(q) = qualifier {
            if q != self.table && Some(q) != self.alias {
                return Err(CoordError::UnknownColumn(format!("missing FROM-clause entry for table \"{q}\"")));
            }
        }
        self.columns
            .iter()
            .position(|c| c.name == name)
            .map(Expr::Column)
            .ok_or_else(|| CoordError::UnknownColumn(format!("table \"{}\" has no column \"{name}\"", self.table)))
    }
}

/// Builds a table definition from CREATE TABLE (without its id).
pub fn table_def(create: &ast::CreateTable, groups: &[ShardGroupId]) -> Result<TableDef> {
    let name = bind::object_name(&create.name)?;
    if create.query.is_some() {
        return Err(CoordError::Unsupported("CREATE TABLE ... AS".into()));
    }
    if create.columns.is_empty() || create.columns.len() > MAX_COLUMNS {
        return Err(CoordError::Invalid(format!("table \"{name}\" must have between 1 and {MAX_COLUMNS} columns")));
    }
    let mut columns = Vec::new();
    let mut pk: Vec<String> = Vec::new();
    let mut check_asts: Vec<(Option<String>, ast::Expr)> = Vec::new();
    for c in &create.columns {
        let col_name = bind::ident(&c.name);
        if columns.iter().any(|x: &ColumnDef| x.name == col_name) {
            return Err(CoordError::Invalid(format!("column \"{col_name}\" specified more than once in table \"{name}\"")));
        }
        let (data_type, max_len) = bind::column_type(&c.data_type)?;
        let mut def = ColumnDef { name: col_name.clone(), column_type: ColumnType { data_type, max_len }, nullable: true, default: None };
        for option in &c.options {
            match &option.option {
                ast::ColumnOption::Null => def.nullable = true,
                ast::ColumnOption::NotNull => def.nullable = false,
                ast::ColumnOption::Default(e) => def.default = Some(e.to_string()),
                ast::ColumnOption::PrimaryKey(_) => pk.push(col_name.clone()),
                ast::ColumnOption::Check(check) => {
                    check_asts.push((check.name.as_ref().map(bind::ident).or(option.name.as_ref().map(bind::ident)), (*check.expr).clone()))
                }
                other => return Err(CoordError::Unsupported(format!("column option {other} (column \"{col_name}\")"))),
            }
        }
        columns.push(def);
    }
    for constraint in &create.constraints {
        match constraint {
            ast::TableConstraint::PrimaryKey(p) => {
                for c in &p.columns {
                    pk.push(match &c.column.expr {
                        ast::Expr::Identifier(i) => bind::ident(i),
                        other => return Err(CoordError::Unsupported(format!("primary key expression {other}"))),
                    });
                }
            }
            ast::TableConstraint::Check(check) => check_asts.push((check.name.as_ref().map(bind::ident), (*check.expr).clone())),
            other => return Err(CoordError::Unsupported(format!("table constraint {other}"))),
        }
    }
    let primary_key = match pk.as_slice() {
        [one] => columns
            .iter()
            .position(|c| &c.name == one)
            .ok_or_else(|| CoordError::UnknownColumn(format!("primary key column \"{one}\" does not exist in table \"{name}\"")))?,
        [] => return Err(CoordError::Invalid(format!("table \"{name}\" needs a PRIMARY KEY: rows are routed to shard groups by it"))),
        _ => return Err(CoordError::Unsupported(format!("a primary key of several columns ({}); use a single-column primary key", pk.join(", ")))),
    };
    columns[primary_key].nullable = false;
    for c in &columns {
        validate_default(c)?;
    }
    let checks = check_defs(&name, &columns, check_asts)?;
    let (partitioning, groups) = partitioning(&create.table_options, &name, &columns[primary_key], groups)?;
    Ok(TableDef { id: 0, name, columns, primary_key, checks, partitioning, groups })
}

fn validate_default(column: &ColumnDef) -> Result<()> {
    if let Some(sql) = &column.default {
        let value = super::eval_default(sql)?;
        crate::plan::write::coerce(value, column).map_err(|e| CoordError::Invalid(format!("default for column \"{}\": {e}", column.name)))?;
    }
    Ok(())
}

fn check_defs(table: &str, columns: &[ColumnDef], asts: Vec<(Option<String>, ast::Expr)>) -> Result<Vec<CheckDef>> {
    let scope = TableScope { table, alias: None, columns };
    let mut checks = Vec::new();
    for (i, (name, expr)) in asts.into_iter().enumerate() {
        let bound = bind::bind(&expr, &scope)?;
        let types: Vec<DataType> = columns.iter().map(|c| c.column_type.data_type).collect();
        if super::types::infer(&bound, &types) != DataType::Boolean {
            return Err(CoordError::Invalid(format!("CHECK ({expr}) on table \"{table}\" must be a boolean condition")));
        }
        let name = name.unwrap_or_else(|| if i == 0 { format!("{table}_check") } else { format!("{table}_check{i}") });
        checks.push(CheckDef { name, sql: expr.to_string() });
    }
    Ok(checks)
}

fn option_text(value: &ast::Expr) -> String {
    match value {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        ast::Expr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    }
}

fn partitioning(options: &ast::CreateTableOptions, table: &str, pk: &ColumnDef, groups: &[ShardGroupId]) -> Result<(Partitioning, Vec<ShardGroupId>)> {
    if groups.is_empty() {
        return Err(CoordError::Invalid("the cluster has no shard groups configured".into()));
    }
    let list: &[ast::SqlOption] = match options {
        ast::CreateTableOptions::None => &[],
        ast::CreateTableOptions::With(list) => list,
        _ => return Err(CoordError::Unsupported("table options other than WITH (...)".into())),
    };
    let (mut kind, mut splits, mut vnodes) = (None, None, None);
    for option in list {
        let ast::SqlOption::KeyValue { key, value } = option else {
            return Err(CoordError::Unsupported(format!("table option {option}")));
        };
        match bind::ident(key).as_str() {
            "partitioning" => kind = Some(option_text(value).to_lowercase()),
            "split_points" => splits = Some(option_text(value)),
            "virtual_nodes" => vnodes = Some(option_text(value)),
            other => return Err(CoordError::Invalid(format!("unknown table option \"{other}\" (known: partitioning, split_points, virtual_nodes)"))),
        }
    }
    match kind.as_deref().unwrap_or(if splits.is_some() { "range" } else { "hash" }) {
        "hash" => {
            if splits.is_some() {
                return Err(CoordError::Invalid("split_points applies only to partitioning = 'range'".into()));
            }
            let virtual_nodes = match vnodes {
                None => DEFAULT_VIRTUAL_NODES,
                Some(v) => v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_VIRTUAL_NODES).contains(n))
                    .ok_or_else(|| CoordError::Invalid(format!("virtual_nodes must be an integer from 1 to {MAX_VIRTUAL_NODES}, got \"{v}\"")))?,
            };
            Ok((Partitioning::Hash { virtual_nodes }, groups.to_vec()))
        }
        "range" => {
            if vnodes.is_some() {
                return Err(CoordError::Invalid("virtual_nodes applies only to partitioning = 'hash'".into()));
            }
            let split_points = parse_split_points(splits.as_deref().unwrap_or(""), pk)?;
            if split_points.len() + 1 > groups.len() {
                return Err(CoordError::Invalid(format!(
                    "table \"{table}\": {} split points make {} ranges but the cluster has {} shard groups",
                    split_points.len(),
                    split_points.len() + 1,
                    groups.len()
                )));
            }
            let used = groups[..split_points.len() + 1].to_vec();
            Ok((Partitioning::Range { split_points }, used))
        }
        other => Err(CoordError::Invalid(format!("unknown partitioning \"{other}\" (use 'range' or 'hash')"))),
    }
}

fn parse_split_points(text: &str, pk: &ColumnDef) -> Result<Vec<Value>> {
    let mut points = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let value = crate::plan::write::coerce(Value::Text(part.to_string()), pk).map_err(|e| CoordError::Invalid(format!("split point \"{part}\": {e}")))?;
        if let Some(prev) = points.last() {
            if Value::sort_cmp(prev, &value) != Ordering::Less {
                return Err(CoordError::Invalid(format!("split points must be strictly increasing: \"{part}\" follows {prev}")));
            }
        }
        points.push(value);
    }
    Ok(points)
}
