//! The extended query protocol: Parse, Bind, Describe, Execute.
//!
//! One statement per Parse, with `$1`, `$2` ... parameters bound as values
//! (see [`crate::sql::params`]). Parameter types are inferred from where a
//! parameter stands (`id = $1` takes the type of `id`, the N-th VALUES
//! entry the type of the N-th column, LIMIT a BIGINT; TEXT otherwise),
//! unless the client gave them. Describe plans the statement to report its
//! result columns without running it.

use super::{believed_from, fields, pg_type, response, task_failed, user_error, Backend};
use crate::catalog::Catalog;
use crate::error::CoordError;
use crate::session::Session;
use crate::sql::params::{bind, placeholder_index};
use crate::sql::{saga::parse_with_compensations, select, Call, Engine, OutputColumn};
use async_trait::async_trait;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::ExtendedQueryHandler;
use pgwire::api::results::{DescribePortalResponse, DescribeResponse, DescribeStatementResponse, FieldInfo, Response};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use sqlparser::ast::{self, Expr, Statement, Visit, Visitor};
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use tessera_model::data::Value;

/// A statement of the extended protocol, parsed once at Parse.
#[derive(Clone, Debug)]
pub struct Prepared {
    sql: String,
    /// `None` for text the engine handles before parsing (SHOW SAGAS ...).
    statement: Option<Arc<(Statement, Option<String>)>>,
    parameters: Vec<Type>,
}

pub struct Parser {
    engine: Arc<Engine>,
}

impl Parser {
    pub fn new(engine: Arc<Engine>) -> Parser {
        Parser { engine }
    }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(&self, _client: &C, sql: &str, types: &[Option<Type>]) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        if let Some(e) = super::refused_text(sql) {
            return Err(user_error(&e));
        }
        self.engine.check_length(sql).map_err(|e| user_error(&e))?;
        let words: Vec<String> = sql.split_whitespace().take(2).map(|w| w.to_ascii_lowercase()).collect();
        if matches!(words.iter().map(String::as_str).collect::<Vec<_>>().as_slice(), ["show", "sagas" | "sagas;" | "saga"] | ["resume", "saga"]) {
            return Ok(Some(Prepared { sql: sql.to_string(), statement: None, parameters: Vec::new() }));
        }
        let mut statements = parse_with_compensations(sql).map_err(|e| user_error(&e))?;
        if statements.len() > 1 {
            return Err(user_error(&CoordError::Syntax("cannot insert multiple commands into a prepared statement".into())));
        }
        let Some(statement) = statements.pop() else { return Ok(None) };
        crate::sql::params::check_placeholders(&statement.0).map_err(|e| user_error(&e))?;
        let mut parameters = infer_parameters(self.engine.catalog(), &statement.0);
        for (i, t) in types.iter().enumerate().take(crate::sql::params::MAX_PARAMETERS) {
            if let Some(t) = t.as_ref().filter(|t| **t != Type::UNKNOWN) {
                if i >= parameters.len() {
                    parameters.resize(i + 1, Type::TEXT);
                }
                parameters[i] = t.clone();
            }
        }
        Ok(Some(Prepared { sql: sql.to_string(), statement: Some(Arc::new(statement)), parameters }))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(stmt.parameters.clone())
    }

    fn get_result_schema(&self, _stmt: &Prepared, _format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        Ok(Vec::new())
    }
}

#[async_trait]
impl ExtendedQueryHandler for Backend {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<Prepared>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + futures::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: pgwire::api::store::PortalStore<Statement = Prepared>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        let mut believed = believed_from(client.transaction_status());
        let (engine, session) = (self.engine.clone(), self.session.clone());
        let Some(parsed) = prepared.statement.clone() else {
            let sql = prepared.sql.clone();
            let outcome = tokio::spawn(crate::api::traced_task(async move {
                let mut session = session.lock_owned().await;
                engine.execute_each(&mut session, &sql).await
            }))
            .await
            .map_err(task_failed)?;
            if let Some(e) = outcome.error {
                return Err(user_error(&e));
            }
            let (result, in_txn) = outcome.results.into_iter().next().ok_or_else(|| PgWireError::ApiError("no result".into()))?;
            return response(result, &portal.result_column_format, &mut believed, in_txn);
        };
        let values = parameters(portal, &prepared.parameters)?;
        let mut statement = parsed.0.clone();
        bind(&mut statement, &values).map_err(|e| user_error(&e))?;
        let compensation = parsed.1.clone();
        let (result, in_txn) = tokio::spawn(crate::api::traced_task(async move {
            let mut session = session.lock_owned().await;
            let call = Call::new(session.protocol, compensation.as_deref());
            let result = engine.execute_parsed(&mut session, &statement, call).await;
            (result, session.in_transaction())
        }))
        .await
        .map_err(task_failed)?;
        response(result.map_err(|e| user_error(&e))?, &portal.result_column_format, &mut believed, in_txn)
    }

    async fn do_describe_statement<C>(&self, _client: &mut C, target: &StoredStatement<Prepared>) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + futures::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: pgwire::api::store::PortalStore<Statement = Prepared>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let columns = self.describe(&target.statement).await?;
        if columns.is_empty() {
            let mut response = DescribeStatementResponse::no_data();
            response.parameters = target.statement.parameters.clone();
            return Ok(response);
        }
        Ok(DescribeStatementResponse::new(target.statement.parameters.clone(), fields(&columns, &Format::UnifiedBinary)))
    }

    async fn do_describe_portal<C>(&self, _client: &mut C, target: &Portal<Prepared>) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + futures::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: pgwire::api::store::PortalStore<Statement = Prepared>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let columns = self.describe(&target.statement.statement).await?;
        if columns.is_empty() {
            return Ok(DescribePortalResponse::no_data());
        }
        Ok(DescribePortalResponse::new(fields(&columns, &target.result_column_format)))
    }
}

impl Backend {
    /// The result columns of a statement, without running it (SELECT is
    /// planned; statements that only report, like SHOW and EXPLAIN, are run
    /// in a throwaway session; writes and commands return none).
    async fn describe(&self, prepared: &Prepared) -> PgWireResult<Vec<OutputColumn>> {
        let Some(parsed) = &prepared.statement else {
            return Ok(crate::sql::saga::admin_columns(&prepared.sql));
        };
        let mut statement = parsed.0.clone();
        let placeholders: Vec<Value> = prepared.parameters.iter().map(sample_value).collect();
        bind(&mut statement, &placeholders).map_err(|e| user_error(&e))?;
        match &statement {
            Statement::Query(q) => Ok(select::plan(self.engine.catalog(), q).map_err(|e| user_error(&e))?.columns),
            Statement::ShowTables { .. }
            | Statement::ShowVariable { .. }
            | Statement::ExplainTable { .. }
            | Statement::Explain { .. }
            | Statement::ShowColumns { .. } => {
                let mut scratch = Session::default();
                let call = Call::new(Default::default(), parsed.1.as_deref());
                match self.engine.execute_statement(&mut scratch, &statement, call).await {
                    Ok(result) => Ok(result.columns),
                    Err(e) => Err(user_error(&e)),
                }
            }
            _ => Ok(Vec::new()),
        }
    }
}

/// A value of the parameter's type to plan with at Describe.
fn sample_value(t: &Type) -> Value {
    match *t {
        Type::INT2 | Type::INT4 | Type::INT8 => Value::Int(1),
        Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC => Value::Double(1.0),
        Type::BOOL => Value::Bool(true),
        _ => Value::Text(String::new()),
    }
}

/// The bound parameters as values, decoded by their types.
fn parameters(portal: &Portal<Prepared>, types: &[Type]) -> PgWireResult<Vec<Value>> {
    let mut values = Vec::with_capacity(portal.parameter_len());
    for i in 0..portal.parameter_len() {
        let t = types.get(i).cloned().unwrap_or(Type::TEXT);
        let value = match t {
            Type::INT8 => portal.parameter::<i64>(i, &t)?.map(Value::Int),
            Type::INT4 => portal.parameter::<i32>(i, &t)?.map(|v| Value::Int(v as i64)),
            Type::INT2 => portal.parameter::<i16>(i, &t)?.map(|v| Value::Int(v as i64)),
            Type::FLOAT8 => portal.parameter::<f64>(i, &t)?.map(Value::Double),
            Type::FLOAT4 => portal.parameter::<f32>(i, &t)?.map(|v| Value::Double(v as f64)),
            Type::BOOL => portal.parameter::<bool>(i, &t)?.map(Value::Bool),
            _ => {
                if let Some((code, message)) = portal.parameters.get(i).and_then(|p| p.as_deref()).and_then(super::frames::text_error) {
                    return Err(user_error(&CoordError::invalid_value(format!("{message} (parameter ${})", i + 1), code)));
                }
                portal.parameter::<String>(i, &Type::TEXT)?.map(Value::Text)
            }
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(values)
}

/// Infers parameter types from where each `$N` stands.
fn infer_parameters(catalog: &Catalog, statement: &Statement) -> Vec<Type> {
    let table = statement_table(statement).and_then(|name| catalog.get(&name).ok());
    let column_type = |name: &str| -> Option<Type> {
        let table = table.as_ref()?;
        let i = table.def.column_index(&name.to_ascii_lowercase())?;
        Some(pg_type(table.def.columns[i].column_type.data_type))
    };
    let mut found = Inference { types: BTreeMap::new(), count: 0, column_type: &column_type };
    let _ = Visit::visit(statement, &mut found);
    match statement {
        Statement::Insert(insert) => {
            if let Some(ast::SetExpr::Values(values)) = insert.source.as_ref().map(|s| s.body.as_ref()) {
                let names: Vec<String> = match (&insert.columns, &table) {
                    (columns, _) if !columns.is_empty() => columns.iter().map(|c| c.to_string().trim_matches('"').to_ascii_lowercase()).collect(),
                    (_, Some(t)) => t.def.columns.iter().map(|c| c.name.clone()).collect(),
                    _ => Vec::new(),
                };
                for row in &values.rows {
                    for (expr, name) in row.iter().zip(&names) {
                        if let (Some(i), Some(t)) = (placeholder_index(expr), column_type(name)) {
                            found.types.entry(i).or_insert(t);
                        }
                    }
                }
            }
        }
        Statement::Update(update) => {
            for a in &update.assignments {
                if let (ast::AssignmentTarget::ColumnName(name), Some(i)) = (&a.target, placeholder_index(&a.value)) {
                    if let Some(t) = name.0.last().and_then(|p| p.as_ident()).and_then(|id| column_type(&id.value)) {
                        found.types.entry(i).or_insert(t);
                    }
                }
            }
        }
        Statement::Query(q) => {
            for e in q.limit_clause.iter().flat_map(limit_exprs) {
                if let Some(i) = placeholder_index(e) {
                    found.types.entry(i).or_insert(Type::INT8);
                }
            }
        }
        _ => {}
    }
    (0..found.count).map(|i| found.types.get(&i).cloned().unwrap_or(Type::TEXT)).collect()
}

fn limit_exprs(clause: &ast::LimitClause) -> Vec<&Expr> {
    match clause {
        ast::LimitClause::LimitOffset { limit, offset, .. } => limit.iter().chain(offset.iter().map(|o| &o.value)).collect(),
        ast::LimitClause::OffsetCommaLimit { offset, limit } => vec![offset, limit],
    }
}

struct Inference<'a> {
    types: BTreeMap<usize, Type>,
    /// Number of parameters: the highest `$N` seen.
    count: usize,
    column_type: &'a dyn Fn(&str) -> Option<Type>,
}

fn column_name(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Identifier(id) => Some(&id.value),
        Expr::CompoundIdentifier(parts) => parts.last().map(|id| id.value.as_str()),
        Expr::Nested(inner) => column_name(inner),
        _ => None,
    }
}

impl Visitor for Inference<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Some(i) = placeholder_index(expr) {
            self.count = self.count.max(i + 1);
            return ControlFlow::Continue(());
        }
        let mut pair = |column: &Expr, other: &Expr| {
            if let (Some(name), Some(i)) = (column_name(column), placeholder_index(other)) {
                if let Some(t) = (self.column_type)(name) {
                    self.types.entry(i).or_insert(t);
                }
            }
        };
        match expr {
            Expr::BinaryOp { left, right, .. } => {
                pair(left, right);
                pair(right, left);
            }
            Expr::InList { expr: column, list, .. } => list.iter().for_each(|e| pair(column, e)),
            Expr::Between { expr: column, low, high, .. } => {
                pair(column, low);
                pair(column, high);
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// The table a statement reads or writes, by name.
fn statement_table(statement: &Statement) -> Option<String> {
    let name = match statement {
        Statement::Insert(i) => match &i.table {
            ast::TableObject::TableName(name) => name.to_string(),
            _ => return None,
        },
        Statement::Update(u) => match &u.table.relation {
            ast::TableFactor::Table { name, .. } => name.to_string(),
            _ => return None,
        },
        Statement::Delete(d) => {
            let from = match &d.from {
                ast::FromTable::WithFromKeyword(t) | ast::FromTable::WithoutKeyword(t) => t,
            };
            match from.first().map(|t| &t.relation) {
                Some(ast::TableFactor::Table { name, .. }) => name.to_string(),
                _ => return None,
            }
        }
        Statement::Query(q) => match q.body.as_ref() {
            ast::SetExpr::Select(s) => match s.from.first().map(|t| &t.relation) {
                Some(ast::TableFactor::Table { name, .. }) => name.to_string(),
                _ => return None,
            },
            _ => return None,
        },
        _ => return None,
    };
    Some(name.trim_matches('"').to_ascii_lowercase())
}
