//! CREATE TABLE, SHOW TABLES and DESCRIBE against the catalog.

use crate::catalog::{Catalog, Partitioning, ShardGroupId};
use crate::error::{CoordError, Result};
use crate::result::QueryResult;
use crate::sql::ddl::table_def;
use sqlparser::ast;
use tessera_model::data::{DataType, Value};

/// CREATE TABLE: the definition is planned by [`crate::sql::ddl`].
pub fn create_table(catalog: &Catalog, create: &ast::CreateTable) -> Result<QueryResult> {
    if create.or_replace || create.temporary || create.external {
        return Err(CoordError::Unsupported("CREATE OR REPLACE / TEMPORARY / EXTERNAL TABLE".into()));
    }
    let groups: Vec<ShardGroupId> = catalog.shard_groups().keys().copied().collect();
    let def = table_def(create, &groups)?;
    catalog.create_table(def, create.if_not_exists)?;
    Ok(QueryResult::command("CREATE TABLE"))
}

/// SHOW TABLES: each table, its partitioning and its shard groups.
pub fn show_tables(catalog: &Catalog) -> QueryResult {
    let rows = catalog
        .tables()
        .iter()
        .map(|t| {
            let partitioning = match &t.def.partitioning {
                Partitioning::Range { split_points } => format!("range ({})", split_points.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")),
                Partitioning::Hash { virtual_nodes } => format!("hash ({virtual_nodes} virtual nodes)"),
            };
            let groups = t.def.groups.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(", ");
            vec![Value::Text(t.def.name.clone()), Value::Text(partitioning), Value::Text(groups)]
        })
        .collect();
    QueryResult::rows(&[("table_name", DataType::Text), ("partitioning", DataType::Text), ("shard_groups", DataType::Text)], rows)
}

/// DESCRIBE: the columns and constraints of a table.
pub fn describe(catalog: &Catalog, name: &str) -> Result<QueryResult> {
    let table = catalog.get(name)?;
    let def = &table.def;
    let mut rows: Vec<Vec<Value>> = def
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let key = if i == def.primary_key { "PRIMARY KEY" } else { "" };
            vec![
                Value::Text(c.name.clone()),
                Value::Text(c.column_type.to_string()),
                Value::Bool(c.nullable),
                c.default.clone().map(Value::Text).unwrap_or(Value::Null),
                Value::Text(key.into()),
            ]
        })
        .collect();
    for check in &def.checks {
        rows.push(vec![
            Value::Text(format!("CONSTRAINT {}", check.name)),
            Value::Text(format!("CHECK ({})", check.sql)),
            Value::Null,
            Value::Null,
            Value::Text(String::new()),
        ]);
    }
    Ok(QueryResult::rows(
        &[
            ("column_name", DataType::Text),
            ("data_type", DataType::Text),
            ("is_nullable", DataType::Boolean),
            ("column_default", DataType::Text),
            ("key", DataType::Text),
        ],
        rows,
    ))
}
