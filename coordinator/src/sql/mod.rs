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
//! - [`saga`]: statements under the saga protocol, SHOW SAGA(S), RESUME SAGA.

pub mod access;
pub mod aggregate;
pub mod bind;
pub mod ddl;
pub mod explain;
pub mod read;
pub mod saga;
pub mod select;
pub mod types;
pub mod write;

use crate::catalog::{Catalog, ShardGroupId};
use crate::error::{CoordError, Result};
use crate::saga::{Protocol, Sagas};
use crate::session::Session;
use crate::shards::ShardPool;
use crate::txn::{Txn, TxnManager};
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
    txns: Arc<TxnManager>,
    sagas: Arc<Sagas>,
}

impl Engine {
    pub fn new(catalog: Arc<Catalog>, shards: Arc<ShardPool>, txns: Arc<TxnManager>, sagas: Arc<Sagas>) -> Engine {
        Engine { catalog, shards, txns, sagas }
    }

    pub fn sagas(&self) -> &Arc<Sagas> {
        &self.sagas
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn shards(&self) -> &Arc<ShardPool> {
        &self.shards
    }

    pub fn txns(&self) -> &Arc<TxnManager> {
        &self.txns
    }

    /// Runs every statement of `sql` in order in `session`; stops at the
    /// first error.
    pub async fn execute(&self, session: &mut Session, sql: &str) -> Result<Vec<QueryResult>> {
        self.execute_with(session, sql, None).await
    }

    /// Like [`Engine::execute`]; `protocol` overrides the session's
    /// setting for the transactions these statements begin.
    pub async fn execute_with(&self, session: &mut Session, sql: &str, protocol: Option<Protocol>) -> Result<Vec<QueryResult>> {
        if let Some(result) = self.saga_admin(sql).await {
            return result.map(|r| vec![r]);
        }
        let statements = saga::parse_with_compensations(sql)?;
        let mut results = Vec::with_capacity(statements.len());
        for (statement, compensation) in &statements {
            let call = Call { protocol: protocol.unwrap_or(session.protocol), compensation: compensation.as_deref() };
            results.push(self.execute_statement(session, statement, call).await?);
        }
        Ok(results)
    }

    #[tracing::instrument(skip_all, fields(statement = %first_word(statement)))]
    pub async fn execute_statement(&self, session: &mut Session, statement: &Statement, call: Call<'_>) -> Result<QueryResult> {
        self.run_statement(session, statement, call).await.map_err(|e| self.name_duplicate(e))
    }

    async fn run_statement(&self, session: &mut Session, statement: &Statement, call: Call<'_>) -> Result<QueryResult> {
        session.touch();
        if call.compensation.is_some() && !matches!(statement, Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) | Statement::Explain { .. }) {
            return Err(CoordError::Invalid("COMPENSATE WITH may only follow an INSERT, UPDATE or DELETE".into()));
        }
        if let Some(result) = self.protocol_statement(session, statement).await {
            return result;
        }
        if session.saga.is_some() {
            return self.in_saga(session, statement, call).await;
        }
        match statement {
            Statement::StartTransaction { .. } => {
                if session.txn.is_none() {
                    if call.protocol == Protocol::Saga {
                        session.saga = Some(Default::default());
                    } else {
                        session.txn = Some(self.txns.begin(true));
                    }
                }
                Ok(QueryResult::command("BEGIN"))
            }
            Statement::Commit { chain: false, .. } => match session.txn.take() {
                None => Ok(QueryResult::command("COMMIT")),
                Some(txn) if txn.failed => {
                    self.txns.rollback(txn).await;
                    Ok(QueryResult::command("ROLLBACK"))
                }
                Some(txn) => self.txns.commit(txn).await.map(|_| QueryResult::command("COMMIT")),
            },
            Statement::Rollback { chain: false, savepoint: None } => {
                if let Some(txn) = session.txn.take() {
                    self.txns.rollback(txn).await;
                }
                Ok(QueryResult::command("ROLLBACK"))
            }
            Statement::Commit { .. } | Statement::Rollback { .. } => Err(CoordError::Unsupported("AND CHAIN and savepoints".into())),
            Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) if session.txn.is_none() && call.protocol == Protocol::Saga => {
                self.autocommit_saga(statement, call).await
            }
            Statement::Explain { statement: inner, analyze: false, .. } if call.protocol == Protocol::Saga && session.txn.is_none() => {
                self.explain_saga(inner, call.compensation, 0)
            }
            _ if call.compensation.is_some() => Err(CoordError::Invalid(
                "COMPENSATE WITH applies to statements of a saga; run SET transaction_protocol = 'saga' first (or BEGIN a saga)".into(),
            )),
            _ => match session.txn.as_mut() {
                None => self.autocommit(statement).await,
                Some(txn) if txn.failed => Err(CoordError::InFailedTransaction),
                Some(txn) => {
                    let result = self.in_transaction(txn, statement).await;
                    if result.is_err() {
                        // As in PostgreSQL the transaction is now failed; its locks go at once.
                        txn.failed = true;
                        self.txns.release(txn).await;
                    } else {
                        self.txns.touch(txn);
                    }
                    result
                }
            },
        }
    }

    /// A statement outside BEGIN: its own transaction, committed at once.
    async fn autocommit(&self, statement: &Statement) -> Result<QueryResult> {
        match statement {
            // A plain read needs no transaction: it reads committed data.
            Statement::Query(q) if q.locks.is_empty() => select::execute(&self.shards, &select::plan(&self.catalog, q)?, None).await,
            // Reads FOR UPDATE and writes: commit releases the locks of a
            // read (nothing written) and commits a write in one or two phases.
            Statement::Query(_) | Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => {
                let mut txn = self.txns.begin(false);
                match self.in_transaction(&mut txn, statement).await {
                    Ok(result) => self.txns.commit(txn).await.map(|_| result),
                    Err(e) => {
                        self.txns.rollback(txn).await;
                        Err(e)
                    }
                }
            }
            other => self.utility(other).await,
        }
    }

    /// A statement inside a transaction (BEGIN ... COMMIT, or its own).
    pub(crate) async fn in_transaction(&self, txn: &mut Txn, statement: &Statement) -> Result<QueryResult> {
        match statement {
            Statement::Query(q) => select::execute(&self.shards, &select::plan(&self.catalog, q)?, Some(txn)).await,
            Statement::Insert(i) => {
                let rows = write::insert(&self.txns, txn, write::plan_insert(&self.catalog, i)?).await?;
                Ok(QueryResult::modified(format!("INSERT 0 {rows}"), rows))
            }
            Statement::Update(_) | Statement::Delete(_) => {
                let plan = self.plan_modify(statement)?;
                let rows = write::modify(&self.shards, &self.txns, txn, &plan).await?;
                Ok(QueryResult::modified(format!("{} {rows}", plan.verb()), rows))
            }
            Statement::CreateTable(_) | Statement::Drop { .. } => Err(CoordError::NotInTransaction(first_word(statement) + " TABLE")),
            other => self.utility(other).await,
        }
    }

    /// Names the table's primary-key constraint in a duplicate-key error.
    fn name_duplicate(&self, e: CoordError) -> CoordError {
        let CoordError::DuplicateKey { table_id, key } = &e else { return e };
        match self.catalog.table_by_id(*table_id) {
            Some(table) => CoordError::UniqueViolation(format!(
                "duplicate key value violates unique constraint \"{}\": Key ({})=({key}) already exists",
                table.def.pk_constraint_name(),
                table.def.pk_column().name
            )),
            None => e,
        }
    }

    fn plan_modify(&self, statement: &Statement) -> Result<write::ModifyPlan> {
        match statement {
            Statement::Update(u) => write::plan_update(&self.catalog, u),
            Statement::Delete(d) => write::plan_delete(&self.catalog, d),
            _ => Err(CoordError::Internal("not an UPDATE or DELETE".into())),
        }
    }

    /// Statements that do not touch rows: DDL, SHOW, DESCRIBE, EXPLAIN.
    async fn utility(&self, statement: &Statement) -> Result<QueryResult> {
        match statement {
            Statement::CreateTable(c) => ddl::create_table(&self.catalog, c),
            Statement::Drop { object_type: ast::ObjectType::Table, if_exists, names, .. } => self.drop_tables(names, *if_exists).await,
            Statement::ShowTables { .. } => Ok(ddl::show_tables(&self.catalog)),
            Statement::ShowVariable { variable } if variable.len() == 1 && bind::ident(&variable[0]) == "transactions" => Ok(self.show_transactions()),
            Statement::ExplainTable { table_name, .. } => ddl::describe(&self.catalog, &bind::object_name(table_name)?),
            Statement::Explain { statement, analyze, .. } => {
                if *analyze {
                    return Err(CoordError::Unsupported("EXPLAIN ANALYZE".into()));
                }
                self.explain(statement)
            }
            other => Err(CoordError::Unsupported(format!("the {} statement", first_word(other)))),
        }
    }

    /// SHOW TRANSACTIONS: in flight and in doubt, with each participant's phase.
    fn show_transactions(&self) -> QueryResult {
        let rows = self
            .txns
            .list()
            .into_iter()
            .map(|t| {
                let participants = t.participants.iter().map(|(g, phase)| format!("{g}:{phase}")).collect::<Vec<_>>().join(", ");
                vec![Value::Text(t.id), Value::Text(t.state.into()), Value::Text(participants), Value::Int(t.started.elapsed().as_millis() as i64)]
            })
            .collect();
        QueryResult::rows(&[("txn_id", DataType::Text), ("state", DataType::Text), ("participants", DataType::Text), ("age_ms", DataType::BigInt)], rows)
    }

    pub(crate) fn explain(&self, statement: &Statement) -> Result<QueryResult> {
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

/// How one statement of a call runs.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The protocol of a transaction the statement begins.
    pub protocol: Protocol,
    /// Its `COMPENSATE WITH` clause.
    pub compensation: Option<&'a str>,
}

pub fn first_word(statement: &Statement) -> String {
    statement.to_string().split_whitespace().next().unwrap_or("").to_uppercase()
}
