//! The statement executor: runs parsed statements for a session against
//! the catalog, the shard groups, transactions ([`crate::txn`]), sagas
//! ([`crate::saga`]), idempotency keys and replica reads. It plans with
//! [`crate::sql`] and carries the plans out here.
//!
//! - [`select`]: reads, then filter, aggregate, sort, limit and project on
//!   the coordinator.
//! - [`write`]: INSERT, UPDATE, DELETE within a transaction.
//! - [`saga`]: statements under the saga protocol, SHOW SAGA(S), RESUME SAGA.
//! - [`ddl`]: CREATE TABLE, SHOW TABLES, DESCRIBE.
//! - [`explain`]: EXPLAIN output.
//! - [`settings`]: session settings (`SET statement_timeout`, ...).

pub mod ddl;
pub mod explain;
pub mod modes;
pub mod saga;
pub mod select;
pub mod settings;
pub mod write;

use crate::catalog::Catalog;
use crate::error::{CoordError, Result};
use crate::failover::Failover;
use crate::idempotency::SagaIdempotency;
use crate::idempotency::{self, Idempotency, IdempotencyKey};
use crate::read::{self, ReplicaReads};
use crate::result::QueryResult;
use crate::saga::outcome::saga_outcome;
use crate::saga::Sagas;
use crate::session::Session;
use crate::shards::ShardPool;
use crate::sql::{bind, first_word, params, saga as saga_sql, select as select_sql, write as write_sql};
use crate::txn::{Isolation, Txn, TxnManager};
use futures::FutureExt;
use sqlparser::ast::{self, Statement};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tessera_model::data::keys::{table_end, table_prefix};
use tessera_model::data::{DataType, Value};
use tessera_model::sqlstate;
use tessera_model::txn::Protocol;

/// What [`Engine::execute_each`] ran.
#[derive(Default)]
pub struct EachOutcome {
    /// Each statement's result and whether a transaction is open after it.
    pub results: Vec<(QueryResult, bool)>,
    pub error: Option<CoordError>,
}

/// What a request asks for beyond its SQL text.
#[derive(Debug, Clone, Default)]
pub struct RequestOptions {
    /// Overrides the session's `transaction_protocol` for the transactions
    /// the request begins.
    pub protocol: Option<Protocol>,
    /// Values of `$1`, `$2`, ...
    pub params: Vec<Value>,
    /// See [`crate::idempotency`].
    pub idempotency_key: Option<String>,
    /// Who sends the request (scopes its idempotency keys).
    pub principal: String,
    /// Reads outside transactions may come from replicas, as this says
    /// (overrides the session's `replica_reads`).
    pub replica_reads: Option<ReplicaReads>,
    /// The most bytes of results the request may return (one gRPC
    /// message); checked after each statement, so a request whose response
    /// cannot be sent fails before its commit.
    pub response_budget: Option<usize>,
}

/// The limits the engine enforces per statement.
#[derive(Debug, Clone, Copy)]
pub struct EngineLimits {
    pub max_statement_bytes: usize,
    pub max_result_rows: u64,
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits { max_statement_bytes: 4 * 1024 * 1024, max_result_rows: 1_000_000 }
    }
}

/// Executes SQL against the catalog and the shard groups.
pub struct Engine {
    catalog: Arc<Catalog>,
    shards: Arc<ShardPool>,
    txns: Arc<TxnManager>,
    sagas: Arc<Sagas>,
    idempotency: Arc<Idempotency>,
    failover: Arc<Failover>,
    limits: EngineLimits,
    /// Errors statements returned, by SQLSTATE (metrics).
    errors: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl Engine {
    pub fn new(
        catalog: Arc<Catalog>,
        shards: Arc<ShardPool>,
        txns: Arc<TxnManager>,
        sagas: Arc<Sagas>,
        idempotency: Arc<Idempotency>,
        failover: Arc<Failover>,
        limits: EngineLimits,
    ) -> Engine {
        Engine { catalog, shards, txns, sagas, idempotency, failover, limits, errors: Default::default() }
    }

    pub fn failover(&self) -> &Arc<Failover> {
        &self.failover
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

    pub fn limits(&self) -> EngineLimits {
        self.limits
    }

    /// Refuses SQL text longer than `limits.max_statement_bytes`, or with a
    /// NUL byte (which PostgreSQL's text cannot hold).
    pub fn check_length(&self, sql: &str) -> Result<()> {
        let max = self.limits.max_statement_bytes;
        if sql.len() > max {
            return Err(CoordError::LimitExceeded(format!("SQL text of {} bytes is longer than limits.max_statement_bytes ({max})", sql.len())));
        }
        if let Some(at) = sql.find('\0') {
            return Err(CoordError::invalid_value(
                format!("invalid byte sequence for encoding \"UTF8\": 0x00 (a NUL byte at offset {at} of the SQL text)"),
                sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
            ));
        }
        Ok(())
    }

    /// A statement the protocol layer refused (text that is not UTF-8):
    /// fails the open transaction, as any error in it does.
    pub async fn refuse(&self, session: &mut Session, error: CoordError) -> CoordError {
        if let Some(txn) = session.txn.as_mut() {
            self.txns.fail(txn).await;
        }
        error
    }

    /// Runs every statement of `sql` in order in `session`; stops at the
    /// first error.
    pub async fn execute(&self, session: &mut Session, sql: &str) -> Result<Vec<QueryResult>> {
        self.execute_request(session, sql, &RequestOptions::default()).await
    }

    /// Runs a request: the statements of `sql` in order, with its
    /// parameters, protocol and idempotency key. Stops at the first error.
    pub async fn execute_request(&self, session: &mut Session, sql: &str, options: &RequestOptions) -> Result<Vec<QueryResult>> {
        match AssertUnwindSafe(self.execute_request_unguarded(session, sql, options)).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => Err(self.after_panic(session, panic).await),
        }
    }

    async fn execute_request_unguarded(&self, session: &mut Session, sql: &str, options: &RequestOptions) -> Result<Vec<QueryResult>> {
        self.check_length(sql)?;
        let Some(key) = &options.idempotency_key else {
            return self.run_each(session, sql, options, None).await.into_result();
        };
        if saga_sql::is_admin(sql) {
            return Err(CoordError::Invalid("SHOW SAGA(S) and RESUME SAGA take no idempotency key".into()));
        }
        let key = IdempotencyKey::new(&options.principal, key, sql, &options.params, options.protocol)?;
        let _one_at_a_time = self.idempotency.lock(&key).await;
        if let Some(stored) = self.idempotency.lookup(&key)? {
            tracing::debug!(key = %key.key, "idempotency key seen before: answering with the first outcome");
            return stored.into_response();
        }
        if let Some(saga) = self.sagas.unfinished_with_key(&key)? {
            // Started by an earlier request whose answer was lost (a restart
            // resumed it): its outcome is the answer.
            let saga = self.sagas.wait(&saga.id).await?;
            return match crate::saga::outcome::saga_response(&saga) {
                Some(response) => response,
                None => saga_outcome(&saga).and_then(|_| Err(CoordError::Internal(format!("saga {} ended without an outcome", saga.id)))),
            };
        }
        let mut options = options.clone();
        options.response_budget = Some(options.response_budget.unwrap_or(usize::MAX).min(idempotency::MAX_STORED_RESPONSE));
        let results = self.run_each(session, sql, &options, Some(&key)).await.into_result()?;
        if self.idempotency.lookup(&key)?.is_none() {
            // Nothing committed to carry the record (a read): store it now.
            self.idempotency.store(&key, idempotency::Outcome::Results(results.clone())).await?;
        }
        Ok(results)
    }

    /// Runs statements one by one, as PostgreSQL's simple query protocol
    /// does: the results of those that ran, each with whether a
    /// transaction is open after it, and the error that stopped the rest.
    pub async fn execute_each(&self, session: &mut Session, sql: &str) -> EachOutcome {
        if let Err(e) = self.check_length(sql) {
            return EachOutcome { results: Vec::new(), error: Some(e) };
        }
        let options = RequestOptions::default();
        let work = self.run_each(session, sql, &options, None);
        match AssertUnwindSafe(work).catch_unwind().await {
            Ok(outcome) => outcome,
            Err(panic) => EachOutcome { results: Vec::new(), error: Some(self.after_panic(session, panic).await) },
        }
    }

    /// One parsed statement (the extended query protocol), guarded against
    /// panics as [`Engine::execute_request`] is.
    pub async fn execute_parsed(&self, session: &mut Session, statement: &Statement, call: Call<'_>) -> Result<QueryResult> {
        match AssertUnwindSafe(self.execute_statement(session, statement, call)).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => Err(self.after_panic(session, panic).await),
        }
    }

    /// A request panicked (a bug): log it under the request's trace, roll
    /// back the session's transaction so no lock outlives the request, and
    /// answer XX000. The session stays usable.
    async fn after_panic(&self, session: &mut Session, panic: Box<dyn std::any::Any + Send>) -> CoordError {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        tracing::error!(panic = %message, "a request panicked; its transaction is rolled back");
        if let Some(txn) = session.txn.take() {
            self.txns.rollback(txn).await;
        }
        session.saga = None;
        *self.errors.lock().unwrap_or_else(|p| p.into_inner()).entry(sqlstate::INTERNAL_ERROR).or_default() += 1;
        CoordError::Internal(format!("the request stopped on an internal error ({message}); its transaction, if any, was rolled back"))
    }

    async fn run_each(&self, session: &mut Session, sql: &str, options: &RequestOptions, key: Option<&IdempotencyKey>) -> EachOutcome {
        let mut outcome = EachOutcome::default();
        if let Some(result) = self.saga_admin(sql).await {
            match result {
                Ok(r) => outcome.results.push((r, session.in_transaction())),
                Err(e) => outcome.error = Some(e),
            }
            return outcome;
        }
        let statements = match self.prepare_request(session, sql, options, key) {
            Ok(statements) => statements,
            Err(e) => {
                outcome.error = Some(e);
                return outcome;
            }
        };
        let mut prior: Vec<QueryResult> = Vec::new();
        let mut budget = options.response_budget.unwrap_or(usize::MAX);
        for (i, (statement, compensation)) in statements.iter().enumerate() {
            let idempotency = key.filter(|_| i + 1 == statements.len()).map(|key| KeyedCommit { key, prior: &prior });
            let replica = options.replica_reads.or(session.replica_reads());
            let call = Call { protocol: options.protocol.unwrap_or(session.protocol), compensation: compensation.as_deref(), idempotency, replica };
            let result = self.execute_statement(session, statement, call).await.and_then(|r| {
                budget = budget.checked_sub(r.approximate_bytes()).ok_or_else(|| self.over_budget(options, key.is_some()))?;
                Ok(r)
            });
            match result {
                Ok(r) => {
                    // Only a keyed commit stores the results before it.
                    if key.is_some() {
                        prior.push(r.clone());
                    }
                    outcome.results.push((r, session.in_transaction()))
                }
                Err(e) => {
                    if let (CoordError::LimitExceeded(_), Some(txn)) = (&e, session.txn.as_mut()) {
                        // As for any error in a transaction: it fails.
                        self.txns.fail(txn).await;
                    }
                    outcome.error = Some(e);
                    break;
                }
            }
        }
        outcome
    }

    fn over_budget(&self, options: &RequestOptions, keyed: bool) -> CoordError {
        let limit = options.response_budget.unwrap_or(usize::MAX);
        if keyed && limit == idempotency::MAX_STORED_RESPONSE {
            CoordError::LimitExceeded(format!("a request with an idempotency key may return at most {limit} bytes (its response is stored)"))
        } else {
            CoordError::LimitExceeded(format!(
                "the results would be larger than limits.max_message_bytes ({limit}); read them with ExecuteStream, or add a LIMIT"
            ))
        }
    }

    /// Parses a request, binds its parameters and checks its shape.
    fn prepare_request(
        &self,
        session: &Session,
        sql: &str,
        options: &RequestOptions,
        key: Option<&IdempotencyKey>,
    ) -> Result<Vec<(Statement, Option<String>)>> {
        let mut statements = saga_sql::parse_with_compensations(sql)?;
        if !options.params.is_empty() || sql.contains('$') {
            for (statement, _) in &statements {
                params::check_placeholders(statement)?;
            }
            params::check_count(statements.iter().map(|(s, _)| s), options.params.len())?;
            for (statement, _) in statements.iter_mut() {
                params::bind(statement, &options.params)?;
            }
        }
        if key.is_some() {
            let parsed: Vec<Statement> = statements.iter().map(|(s, _)| s.clone()).collect();
            idempotency::check_shape(&parsed, session.in_transaction())?;
        }
        Ok(statements)
    }

    #[tracing::instrument(skip_all, fields(statement = %first_word(statement)))]
    pub async fn execute_statement(&self, session: &mut Session, statement: &Statement, call: Call<'_>) -> Result<QueryResult> {
        self.run_statement(session, statement, call).await.map_err(|e| {
            let e = self.name_duplicate(e);
            *self.errors.lock().unwrap().entry(e.sqlstate()).or_default() += 1;
            e
        })
    }

    /// How many statements failed, by SQLSTATE.
    pub fn errors_by_sqlstate(&self) -> Vec<(&'static str, u64)> {
        self.errors.lock().unwrap().iter().map(|(k, v)| (*k, *v)).collect()
    }

    async fn run_statement(&self, session: &mut Session, statement: &Statement, call: Call<'_>) -> Result<QueryResult> {
        session.touch();
        if call.compensation.is_some() && !matches!(statement, Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) | Statement::Explain { .. }) {
            return Err(CoordError::Invalid("COMPENSATE WITH may only follow an INSERT, UPDATE or DELETE".into()));
        }
        if let Some(result) = self.protocol_statement(session, statement).await {
            return result;
        }
        match statement {
            Statement::Set(ast::Set::SetTransaction { modes, snapshot, session: false }) => {
                modes::set(session.txn.as_mut(), modes)?;
                if let (Some(snapshot), Some(txn)) = (snapshot, session.txn.as_mut()) {
                    let now = self.txns.read_timestamp().await?;
                    let ts = modes::snapshot_timestamp(txn, &snapshot.value, now)?;
                    txn.snapshot = Some(self.txns.snapshots().hold(ts));
                }
                return Ok(QueryResult::command("SET"));
            }
            Statement::ShowVariable { variable } if variable.len() == 1 && variable[0].value.eq_ignore_ascii_case("transaction_snapshot") => {
                return self.show_snapshot(session.txn.as_mut()).await;
            }
            Statement::ShowVariable { variable } if variable.len() == 1 => {
                if let Some(result) = modes::show(&variable[0].value.to_ascii_lowercase(), session.txn.as_ref()) {
                    return Ok(result);
                }
            }
            _ => {}
        }
        if let Some(result) = settings::statement(session, statement) {
            return result;
        }
        if session.saga.is_some() {
            return self.in_saga(session, statement, call).await;
        }
        let timeout = session.statement_timeout;
        match statement {
            Statement::StartTransaction { modes, .. } => {
                let read_only = modes::read_only(modes) == Some(true);
                if session.txn.is_none() {
                    if call.protocol == Protocol::Saga && !read_only {
                        session.saga = Some(Default::default());
                    } else {
                        let mut txn = self.txns.begin(true);
                        txn.read_only = read_only;
                        txn.isolation = modes::isolation(modes).unwrap_or_default();
                        session.txn = Some(txn);
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
                Some(txn) => {
                    let done = QueryResult::command("COMMIT");
                    self.txns.commit_with(txn, call.keyed_record(&done)).await.map(|_| done)
                }
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
                None => self.autocommit(statement, call, timeout).await,
                Some(txn) if txn.failed => Err(CoordError::InFailedTransaction),
                Some(txn) => {
                    let result = bounded(timeout, self.in_transaction(txn, statement)).await;
                    if result.is_err() {
                        // As in PostgreSQL the transaction is now failed; its locks go at once.
                        self.txns.fail(txn).await;
                    } else {
                        self.txns.touch(txn);
                    }
                    result
                }
            },
        }
    }

    /// A statement outside BEGIN: its own transaction, committed at once.
    /// The statement may time out; its commit, once begun, runs to the end.
    async fn autocommit(&self, statement: &Statement, call: Call<'_>, timeout: Option<Duration>) -> Result<QueryResult> {
        match statement {
            // A plain read needs no transaction: it reads committed data,
            // from replicas if the session allows.
            Statement::Query(q) if q.locks.is_empty() => bounded(timeout, self.select(q, None, call.replica)).await,
            // Reads FOR UPDATE and writes: commit releases the locks of a
            // read (nothing written) and commits a write in one or two phases.
            Statement::Query(_) | Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => {
                let mut txn = self.txns.begin(false);
                match bounded(timeout, self.in_transaction(&mut txn, statement)).await {
                    Ok(result) => {
                        let extra = call.keyed_record(&result);
                        self.txns.commit_with(txn, extra).await.map(|_| result)
                    }
                    Err(e) => {
                        self.txns.rollback(txn).await;
                        Err(e)
                    }
                }
            }
            other => self.utility(other).await,
        }
    }

    /// `SHOW transaction_snapshot`: the READ ONLY transaction's snapshot
    /// timestamp (taken now if it has none yet), to import elsewhere with
    /// `SET TRANSACTION SNAPSHOT`.
    async fn show_snapshot(&self, txn: Option<&mut Txn>) -> Result<QueryResult> {
        let Some(txn) = txn.filter(|t| t.read_only) else {
            return Err(CoordError::Unsupported("SHOW transaction_snapshot outside a READ ONLY transaction".into()));
        };
        let ts = self.snapshot_of(txn).await?;
        Ok(QueryResult::rows(&[("transaction_snapshot", DataType::Text)], vec![vec![Value::Text(ts.to_string())]]))
    }

    /// A SELECT, refused when it returns more than `limits.max_result_rows`.
    /// Outside a transaction it reads a fresh snapshot; in a READ ONLY one,
    /// the transaction's snapshot; in a read-write one, with locks.
    async fn select(&self, query: &ast::Query, txn: Option<&mut Txn>, replica: Option<ReplicaReads>) -> Result<QueryResult> {
        let plan = select_sql::plan(&self.catalog, query)?;
        let (txn, read_ts) = match txn {
            Some(t) if t.read_only => {
                if !query.locks.is_empty() {
                    return Err(CoordError::ReadOnly("SELECT FOR UPDATE".into()));
                }
                let ts = self.snapshot_of(t).await?;
                (None, ts)
            }
            // REPEATABLE READ: the transaction's snapshot; READ COMMITTED: the
            // statement's own. Both see the transaction's writes, and lock nothing.
            Some(t) if t.isolation == Isolation::RepeatableRead && query.locks.is_empty() => {
                let ts = self.snapshot_of(t).await?;
                (Some(t), ts)
            }
            Some(t) if t.isolation == Isolation::ReadCommitted && query.locks.is_empty() => (Some(t), self.txns.read_timestamp().await?),
            Some(t) => (Some(t), 0),
            None => (None, self.txns.read_timestamp().await?),
        };
        let from = match (replica, txn.is_some()) {
            (Some(reads), false) => read::ReadFrom::Replicas { failover: &self.failover, reads },
            _ => read::ReadFrom::Primary,
        };
        let result = select::execute(&self.shards, &plan, txn, from, read_ts).await?;
        let max = self.limits.max_result_rows;
        if result.rows.len() as u64 > max {
            return Err(CoordError::LimitExceeded(format!(
                "the query returns {} rows, more than limits.max_result_rows ({max}); add a LIMIT or a narrower WHERE",
                result.rows.len()
            )));
        }
        Ok(result)
    }

    /// The transaction's snapshot, taken (and held against garbage
    /// collection) at its first use.
    async fn snapshot_of(&self, txn: &mut Txn) -> Result<u64> {
        if let Some(ts) = txn.snapshot_ts() {
            return Ok(ts);
        }
        let ts = self.txns.read_timestamp().await?;
        txn.snapshot = Some(self.txns.snapshots().hold(ts));
        Ok(ts)
    }

    /// A statement inside a transaction (BEGIN ... COMMIT, or its own).
    pub(crate) async fn in_transaction(&self, txn: &mut Txn, statement: &Statement) -> Result<QueryResult> {
        if txn.isolation == Isolation::RepeatableRead && !txn.read_only {
            // The snapshot is the first statement's, whatever it is.
            self.snapshot_of(txn).await?;
        }
        if txn.read_only && matches!(statement, Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)) {
            return Err(CoordError::ReadOnly(first_word(statement)));
        }
        match statement {
            Statement::Query(q) => self.select(q, Some(txn), None).await,
            Statement::Insert(i) => {
                let rows = write::insert(&self.txns, txn, write_sql::plan_insert(&self.catalog, i)?).await?;
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

    fn plan_modify(&self, statement: &Statement) -> Result<crate::plan::write::ModifyPlan> {
        match statement {
            Statement::Update(u) => write_sql::plan_update(&self.catalog, u),
            Statement::Delete(d) => write_sql::plan_delete(&self.catalog, d),
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
            Statement::ShowVariable { variable } if variable.len() == 1 && bind::ident(&variable[0]) == "shards" => Ok(self.show_shards()),
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

    /// SHOW SHARDS: every group's members with their roles, the group's
    /// epoch and replication mode, and each member's replication progress.
    fn show_shards(&self) -> QueryResult {
        let mut rows = Vec::new();
        for (id, record) in self.shards.records() {
            for m in self.failover.members(id) {
                rows.push(vec![
                    Value::Int(id as i64),
                    Value::Text(m.address),
                    Value::Text(m.role.into()),
                    Value::Int(record.epoch as i64),
                    Value::Text(record.mode.name().into()),
                    Value::Bool(m.reachable),
                    Value::Int(m.applied_seq as i64),
                    Value::Int(m.lag_records as i64),
                    m.staleness_ms.map(|s| Value::Int(s as i64)).unwrap_or(Value::Null),
                    m.clock_skew_ms.map(Value::Int).unwrap_or(Value::Null),
                ]);
            }
        }
        QueryResult::rows(
            &[
                ("shard_group", DataType::BigInt),
                ("address", DataType::Text),
                ("role", DataType::Text),
                ("epoch", DataType::BigInt),
                ("replication", DataType::Text),
                ("reachable", DataType::Boolean),
                ("applied_seq", DataType::BigInt),
                ("lag_records", DataType::BigInt),
                ("staleness_ms", DataType::BigInt),
                ("clock_skew_ms", DataType::BigInt),
            ],
            rows,
        )
    }

    /// SHOW TRANSACTIONS: in flight and in doubt, with each participant's phase.
    fn show_transactions(&self) -> QueryResult {
        let rows = self
            .txns
            .list()
            .into_iter()
            .map(|t| {
                let participants = t.participants.iter().map(|(g, phase)| format!("{g}:{}", phase.name())).collect::<Vec<_>>().join(", ");
                vec![Value::Text(t.id), Value::Text(t.state.name().into()), Value::Text(participants), Value::Int(t.started.elapsed().as_millis() as i64)]
            })
            .collect();
        QueryResult::rows(&[("txn_id", DataType::Text), ("state", DataType::Text), ("participants", DataType::Text), ("age_ms", DataType::BigInt)], rows)
    }

    pub(crate) fn explain(&self, statement: &Statement) -> Result<QueryResult> {
        match statement {
            Statement::Query(q) => Ok(explain::explain_select(&self.shards, &select_sql::plan(&self.catalog, q)?)),
            Statement::Insert(i) => Ok(explain::explain_insert(&self.shards, &write_sql::plan_insert(&self.catalog, i)?)),
            Statement::Update(u) => Ok(explain::explain_modify(&self.shards, &write_sql::plan_update(&self.catalog, u)?)),
            Statement::Delete(d) => Ok(explain::explain_modify(&self.shards, &write_sql::plan_delete(&self.catalog, d)?)),
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
    /// Set on the last statement of a keyed request: its commit records
    /// the request's outcome.
    pub idempotency: Option<KeyedCommit<'a>>,
    /// Reads outside transactions may come from replicas.
    pub replica: Option<ReplicaReads>,
}

impl<'a> Call<'a> {
    pub fn new(protocol: Protocol, compensation: Option<&'a str>) -> Call<'a> {
        Call { protocol, compensation, idempotency: None, replica: None }
    }

    /// The idempotency record to write with this statement's commit, whose
    /// result is `last`.
    fn keyed_record(&self, last: &QueryResult) -> Vec<(String, Vec<u8>)> {
        let Some(keyed) = self.idempotency else { return Vec::new() };
        let mut results = keyed.prior.to_vec();
        results.push(last.clone());
        vec![idempotency::record(keyed.key, idempotency::Outcome::Results(results))]
    }

    /// What a saga run by this statement records when it ends.
    pub(crate) fn saga_idempotency(&self, last: &str) -> Option<SagaIdempotency> {
        self.idempotency.map(|k| SagaIdempotency { key: k.key.clone(), prior: k.prior.to_vec(), last: last.to_string() })
    }
}

/// The idempotency key of a request and the results of its statements
/// before the one that commits.
#[derive(Debug, Clone, Copy)]
pub struct KeyedCommit<'a> {
    pub key: &'a IdempotencyKey,
    pub prior: &'a [QueryResult],
}

impl EachOutcome {
    /// The results, or the error that stopped the request.
    pub fn into_result(self) -> Result<Vec<QueryResult>> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.results.into_iter().map(|(r, _)| r).collect()),
        }
    }
}

/// Runs `work` within the statement timeout, if there is one.
async fn bounded<T>(timeout: Option<Duration>, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    match timeout {
        None => work.await,
        Some(limit) => tokio::time::timeout(limit, work)
            .await
            .unwrap_or_else(|_| Err(CoordError::StatementTimeout(format!("canceling statement due to statement timeout ({} ms)", limit.as_millis())))),
    }
}
