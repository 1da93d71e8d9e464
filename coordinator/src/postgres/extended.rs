//! The extended query protocol: Bind, Describe, Execute of the statements
//! [`super::prepare`] parsed.
//!
//! Parameters are bound as values (see [`crate::sql::params`]). Describe
//! plans the statement to report its result columns without running it.

use super::prepare::{Parser, Prepared};
use super::reply::{believed_from, fields, response, task_failed, user_error};
use super::Backend;
use crate::error::CoordError;
use crate::exec::Call;
use crate::result::OutputColumn;
use crate::session::Session;
use crate::sql::params::bind;
use crate::sql::select;
use async_trait::async_trait;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::ExtendedQueryHandler;
use pgwire::api::results::{DescribePortalResponse, DescribeResponse, DescribeStatementResponse, Response};
use pgwire::api::stmt::StoredStatement;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use sqlparser::ast::Statement;
use std::sync::Arc;
use tessera_model::data::Value;

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
