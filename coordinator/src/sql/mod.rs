//! The SQL front end: parse with sqlparser (PostgreSQL dialect), plan
//! against the catalog, route and execute on the shard groups.
//!
//! - [`bind`]: names and expressions to bound [`Expr`] trees.
//! - [`types`]: value coercion into column types, expression types.
//! - [`access`]: primary-key access paths (point, range, full).
//! - [`read`]: parallel reads from shard groups.
//! - [`select`], [`aggregate`]: queries.
//! - [`write`]: INSERT, UPDATE, DELETE with one-phase commit.
//! - [`ddl`]: CREATE/DROP TABLE, SHOW TABLES, DESCRIBE.
//! - [`explain`]: EXPLAIN output.

pub mod access;
pub mod aggregate;
pub mod bind;
pub mod ddl;
pub mod explain;
pub mod read;
pub mod select;
pub mod types;
pub mod write;

use crate::catalog::{Catalog, ShardGroupId};
use crate::error::{CoordError, Result};
use crate::shards::ShardPool;
use sqlparser::ast::{self, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::sync::Arc;
use tessera_shard::data::keys::{table_end, table_prefix};
use tessera_shard::data::{DataType, Value};
use tessera_shard::txn::TxnContext;

/// Largest SQL text accepted in one request.
pub const MAX_SQL_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct OutputColumn {
    pub name: String,
    pub data_type: DataType,
}

/// The outcome of one statement.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    pub tag: String,
    pub columns: Vec<OutputColumn>,
    pub rows: Vec<Vec<Value>>,
    pub rows_affected: u64,
}

impl QueryResult {
    pub fn command(tag: &str) -> QueryResult {
        QueryResult { tag: tag.into(), columns: Vec::new(), rows: Vec::new(), rows_affected: 0 }
    }

    pub fn modified(tag: String, rows_affected: u64) -> QueryResult {
        QueryResult { tag, columns: Vec::new(), rows: Vec::new(), rows_affected }
    }

    pub fn rows(columns: &[(&str, DataType)], rows: Vec<Vec<Value>>) -> QueryResult {
        let columns = columns.iter().map(|(n, t)| OutputColumn { name: n.to_string(), data_type: *t }).collect();
        QueryResult { tag: format!("SELECT {}", rows.len()), rows_affected: rows.len() as u64, columns, rows }
    }
}

/// Parses SQL text into statements; errors carry the line and column.
pub fn parse(sql: &str) -> Result<Vec<Statement>> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(CoordError::Invalid(format!("SQL text of {} bytes exceeds the limit of {MAX_SQL_BYTES} bytes", sql.len())));
    }
    Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| CoordError::Syntax(strip_parser_prefix(e.to_string())))
}

/// Drops the parser's prefix and makes sure the message has a position:
/// errors at the end of the input come without one.
fn strip_parser_prefix(message: String) -> String {
    let message = message.strip_prefix("sql parser error: ").map(str::to_string).unwrap_or(message);
    if message.contains("Line: ") {
        message
    } else {
        format!("{message} at the end of the input")
    }
}

/// Parses one expression (stored CHECK and DEFAULT text).
pub fn parse_expr(sql: &str) -> Result<ast::Expr> {
    Parser::new(&PostgreSqlDialect {}).try_with_sql(sql).and_then(|mut p| p.parse_expr()).map_err(|e| CoordError::Syntax(strip_parser_prefix(e.to_string())))
}

/// Evaluates a DEFAULT expression (constants only).
pub fn eval_default(sql: &str) -> Result<Value> {
    Ok(bind::bind(&parse_expr(sql)?, &bind::NoColumns)?.eval(&[])?)
}

pub fn now_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Aborts `txn` on each group, ignoring failures: a shard that misses the
/// abort releases the locks when the transaction's idle timeout runs out.
pub async fn abort_everywhere(shards: &ShardPool, txn: &TxnContext, groups: impl Iterator<Item = ShardGroupId>) {
    let aborts = groups.filter_map(|g| shards.get(g).ok()).map(|client| {
        let txn = txn.clone();
        async move {
            if let Err(e) = client.abort(&txn).await {
                tracing::warn!(txn = %txn.id, group = client.group, error = %e, "abort failed; the shard's idle timeout will release the locks");
            }
        }
    });
    futures::future::join_all(aborts).await;
}

/// Executes SQL against the catalog and the shard groups.
pub struct Engine {
    catalog: Arc<Catalog>,
    shards: Arc<ShardPool>,
}

impl Engine {
    pub fn new(catalog: Arc<Catalog>, shards: Arc<ShardPool>) -> Engine {
        Engine { catalog, shards }
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn shards(&self) -> &Arc<ShardPool> {
        &self.shards
    }

    /// Runs every statement of `sql` in order; stops at the first error.
    pub async fn execute(&self, sql: &str) -> Result<Vec<QueryResult>> {
        let statements = parse(sql)?;
        let mut results = Vec::with_capacity(statements.len());
        for statement in &statements {
            results.push(self.execute_statement(statement).await?);
        }
        Ok(results)
    }

    #[tracing::instrument(skip_all, fields(statement = %first_word(statement)))]
    pub async fn execute_statement(&self, statement: &Statement) -> Result<QueryResult> {
        match statement {
            Statement::Query(q) => select::execute(&self.shards, &select::plan(&self.catalog, q)?).await,
            Statement::Insert(i) => write::execute_insert(&self.shards, &write::plan_insert(&self.catalog, i)?).await,
            Statement::Update(u) => write::execute_modify(&self.shards, &write::plan_update(&self.catalog, u)?).await,
            Statement::Delete(d) => write::execute_modify(&self.shards, &write::plan_delete(&self.catalog, d)?).await,
            Statement::CreateTable(c) => ddl::create_table(&self.catalog, c),
            Statement::Drop { object_type: ast::ObjectType::Table, if_exists, names, .. } => self.drop_tables(names, *if_exists).await,
            Statement::ShowTables { .. } => Ok(ddl::show_tables(&self.catalog)),
            Statement::ExplainTable { table_name, .. } => ddl::describe(&self.catalog, &bind::object_name(table_name)?),
            Statement::Explain { statement, analyze, .. } => {
                if *analyze {
                    return Err(CoordError::Unsupported("EXPLAIN ANALYZE".into()));
                }
                self.explain(statement)
            }
            Statement::StartTransaction { .. } | Statement::Commit { .. } | Statement::Rollback { .. } => {
                Err(CoordError::NotYet(format!("{}: explicit transactions are not available yet; each statement commits on its own", first_word(statement))))
            }
            other => Err(CoordError::Unsupported(format!("the {} statement", first_word(other)))),
        }
    }

    fn explain(&self, statement: &Statement) -> Result<QueryResult> {
        match statement {
            Statement::Query(q) => Ok(explain::explain_select(&self.shards, &select::plan(&self.catalog, q)?)),
            Statement::Insert(i) => Ok(explain::explain_insert(&self.shards, &write::plan_insert(&self.catalog, i)?)),
            Statement::Update(u) => Ok(explain::explain_modify(&self.shards, &write::plan_update(&self.catalog, u)?)),
            Statement::Delete(d) => Ok(explain::explain_modify(&self.shards, &write::plan_delete(&self.catalog, d)?)),
            other => Err(CoordError::Unsupported(format!("EXPLAIN of {}", first_word(other)))),
        }
    }

    async fn drop_tables(&self, names: &[ast::ObjectName], if_exists: bool) -> Result<QueryResult> {
        for name in names {
            let name = bind::object_name(name)?;
            let table = match self.catalog.drop_table(&name) {
                Ok(t) => t,
                Err(CoordError::UnknownTable(_)) if if_exists => continue,
                Err(e) => return Err(e),
            };
            // The table id is never reused, so rows a shard fails to delete
            // now stay unreachable; they are only wasted space.
            for group in table.partitioner.all_groups() {
                let client = self.shards.get(group)?;
                if let Err(e) = client.delete_range(table_prefix(table.def.id), table_end(table.def.id)).await {
                    tracing::warn!(table = %name, group, error = %e, "could not delete the dropped table's rows");
                }
            }
        }
        Ok(QueryResult::command("DROP TABLE"))
    }
}

fn first_word(statement: &Statement) -> String {
    statement.to_string().split_whitespace().next().unwrap_or("").to_uppercase()
}
