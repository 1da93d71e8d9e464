//! From the executor's results and errors to PostgreSQL messages: field
//! descriptions, data rows, command tags with the transaction status the
//! client believes, and ErrorResponse fields with the SQLSTATE.

use super::frames;
use crate::error::CoordError;
use crate::result::{OutputColumn, QueryResult};
use futures::stream;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::Type;
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use std::sync::Arc;
use tessera_model::data::{DataType, Value};
use tessera_model::sqlstate;

/// The error of a Query or Parse text that [`super::frames`] marked as refused.
pub(super) fn refused_text(text: &str) -> Option<CoordError> {
    let (code, message) = frames::rejected_text(text)?;
    let code = if code == sqlstate::CHARACTER_NOT_IN_REPERTOIRE { sqlstate::CHARACTER_NOT_IN_REPERTOIRE } else { sqlstate::PROTOCOL_VIOLATION };
    Some(CoordError::invalid_value(message, code))
}

pub(super) fn error_info(e: &CoordError) -> ErrorInfo {
    ErrorInfo::new("ERROR".to_string(), e.sqlstate().to_string(), e.to_string())
}

pub(super) fn user_error(e: &CoordError) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(e)))
}

pub(super) fn task_failed(e: tokio::task::JoinError) -> PgWireError {
    PgWireError::ApiError(format!("statement task failed: {e}").into())
}

pub(super) fn pg_type(t: DataType) -> Type {
    match t {
        DataType::Int => Type::INT4,
        DataType::BigInt => Type::INT8,
        DataType::Text => Type::TEXT,
        DataType::Boolean => Type::BOOL,
        DataType::Double => Type::FLOAT8,
    }
}

pub(super) fn fields(columns: &[OutputColumn], format: &Format) -> Vec<FieldInfo> {
    columns.iter().enumerate().map(|(i, c)| FieldInfo::new(c.name.clone(), None, None, pg_type(c.data_type), format.format_for(i))).collect()
}

/// What pgwire believes the transaction status is, to keep it in step with
/// the session (it only learns of BEGIN and COMMIT through the response kind).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Believed {
    Idle,
    InTransaction,
    Failed,
}

pub(super) fn believed_from(status: pgwire::messages::response::TransactionStatus) -> Believed {
    use pgwire::messages::response::TransactionStatus as S;
    match status {
        S::Idle => Believed::Idle,
        S::Transaction => Believed::InTransaction,
        S::Error => Believed::Failed,
    }
}

/// Turns a statement's result into the response pgwire sends.
pub(super) fn response(result: QueryResult, format: &Format, believed: &mut Believed, in_txn: bool) -> PgWireResult<Response> {
    if result.columns.is_empty() {
        let tag = Tag::new(&result.tag);
        return Ok(match (*believed, in_txn) {
            (Believed::Idle, true) => {
                *believed = Believed::InTransaction;
                Response::TransactionStart(tag)
            }
            (Believed::InTransaction | Believed::Failed, false) => {
                *believed = Believed::Idle;
                Response::TransactionEnd(tag)
            }
            _ => Response::Execution(tag),
        });
    }
    let schema = Arc::new(fields(&result.columns, format));
    let mut encoder = DataRowEncoder::new(schema.clone());
    let mut rows = Vec::with_capacity(result.rows.len());
    for row in result.rows {
        for (value, column) in row.iter().zip(&result.columns) {
            match (value, column.data_type) {
                (Value::Null, _) => encoder.encode_field(&None::<i64>)?,
                (Value::Int(i), DataType::Int) => {
                    let narrow = i32::try_from(*i).map_err(|_| PgWireError::ApiError(format!("{i} is out of range for INT").into()))?;
                    encoder.encode_field(&narrow)?
                }
                (Value::Int(i), _) => encoder.encode_field(i)?,
                (Value::Text(s), _) => encoder.encode_field(s)?,
                (Value::Bool(b), _) => encoder.encode_field(b)?,
                (Value::Double(d), _) => encoder.encode_field(d)?,
            }
        }
        rows.push(Ok(encoder.take_row()));
    }
    Ok(Response::Query(QueryResponse::new(schema, stream::iter(rows))))
}
