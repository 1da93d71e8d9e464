//! The PostgreSQL wire protocol front end, so `psql`, `pgbench` and
//! ordinary drivers can talk to the coordinator.
//!
//! - [`startup`]: TLS (SSLRequest), SCRAM-SHA-256 authentication (or trust),
//!   and the `max_sessions` limit, which a connection counts against.
//! - This file: accepting connections, the simple query protocol
//!   (`;`-separated statements run in order, each sends its result, the
//!   first error ends the batch, as in PostgreSQL) and the responses.
//! - [`extended`]: the extended query protocol (Parse, Bind, Describe,
//!   Execute) with `$1`, `$2`, ... parameters.
//! - [`catalog`]: answers to psql's `\d` queries from Tessera's catalog.
//!
//! Each connection is a [`Session`]: a transaction opened by BEGIN lives as
//! long as the connection, and closing the connection rolls it back.
//! Statements run in a task of their own, as over gRPC: a client that
//! disconnects does not cancel a commit halfway. Errors carry the SQLSTATE
//! of [`CoordError::sqlstate`].

mod catalog;
mod extended;
mod startup;

use crate::auth::Authenticator;
use crate::error::CoordError;
use crate::session::{Session, Sessions};
use crate::sql::{Engine, OutputColumn, QueryResult};
use async_trait::async_trait;
use futures::stream;
use pgwire::api::portal::Format;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{DataRowEncoder, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use std::sync::Arc;
use tessera_shard::data::{DataType, Value};
use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex};

/// What every connection shares.
pub struct Frontend {
    engine: Arc<Engine>,
    sessions: Arc<Sessions>,
    auth: Arc<Authenticator>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Frontend {
    pub fn new(engine: Arc<Engine>, sessions: Arc<Sessions>, auth: Arc<Authenticator>, tls: Option<tokio_rustls::TlsAcceptor>) -> Frontend {
        Frontend { engine, sessions, auth, tls }
    }
}

/// Accepts PostgreSQL connections until `shutdown` turns true.
pub async fn serve(listener: TcpListener, front: Arc<Frontend>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    let connection = Arc::new(Connection::new(front.clone()));
                    let tls = front.tls.clone();
                    tokio::spawn(async move {
                        if let Err(e) = pgwire::tokio::process_socket(socket, tls, connection).await {
                            tracing::debug!(%peer, error = %e, "postgres connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a postgres connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// The handlers of one connection.
struct Connection {
    startup: Arc<startup::Startup>,
    backend: Arc<Backend>,
}

impl Connection {
    fn new(front: Arc<Frontend>) -> Connection {
        let startup = Arc::new(startup::Startup::new(front.sessions.clone(), front.auth.clone(), front.tls.is_some()));
        let backend = Arc::new(Backend::new(front.engine.clone(), front.sessions.new_session()));
        Connection { startup, backend }
    }
}

impl PgWireServerHandlers for Connection {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.backend.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.backend.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.startup.clone()
    }

    fn error_handler(&self) -> Arc<impl pgwire::api::ErrorHandler> {
        Arc::new(startup::NameTheUser)
    }
}

/// One connection's session and statement parser.
struct Backend {
    engine: Arc<Engine>,
    session: Arc<Mutex<Session>>,
    parser: Arc<extended::Parser>,
}

impl Backend {
    fn new(engine: Arc<Engine>, session: Session) -> Backend {
        let parser = Arc::new(extended::Parser::new(engine.clone()));
        Backend { engine, session: Arc::new(Mutex::new(session)), parser }
    }
}

impl Drop for Backend {
    /// The connection is gone: roll back its open transaction, if any.
    fn drop(&mut self) {
        let Some(txn) = self.session.try_lock().ok().and_then(|mut s| s.txn.take()) else { return };
        let engine = self.engine.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { engine.txns().rollback(txn).await });
        }
    }
}

fn error_info(e: &CoordError) -> ErrorInfo {
    ErrorInfo::new("ERROR".to_string(), e.sqlstate().to_string(), e.to_string())
}

fn user_error(e: &CoordError) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(e)))
}

fn task_failed(e: tokio::task::JoinError) -> PgWireError {
    PgWireError::ApiError(format!("statement task failed: {e}").into())
}

fn pg_type(t: DataType) -> Type {
    match t {
        DataType::Int => Type::INT4,
        DataType::BigInt => Type::INT8,
        DataType::Text => Type::TEXT,
        DataType::Boolean => Type::BOOL,
        DataType::Double => Type::FLOAT8,
    }
}

fn fields(columns: &[OutputColumn], format: &Format) -> Vec<FieldInfo> {
    columns.iter().enumerate().map(|(i, c)| FieldInfo::new(c.name.clone(), None, None, pg_type(c.data_type), format.format_for(i))).collect()
}

/// What pgwire believes the transaction status is, to keep it in step with
/// the session (it only learns of BEGIN and COMMIT through the response kind).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Believed {
    Idle,
    InTransaction,
    Failed,
}

fn believed_from(status: pgwire::messages::response::TransactionStatus) -> Believed {
    use pgwire::messages::response::TransactionStatus as S;
    match status {
        S::Idle => Believed::Idle,
        S::Transaction => Believed::InTransaction,
        S::Error => Believed::Failed,
    }
}

/// Turns a statement's result into the response pgwire sends.
fn response(result: QueryResult, format: &Format, believed: &mut Believed, in_txn: bool) -> PgWireResult<Response> {
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

#[async_trait]
impl SimpleQueryHandler for Backend {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + futures::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: pgwire::api::store::PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let mut believed = believed_from(client.transaction_status());
        if let Err(e) = self.engine.check_length(query) {
            return Ok(vec![Response::Error(Box::new(error_info(&e)))]);
        }
        if let Some(result) = catalog::answer(query, self.engine.catalog()) {
            return Ok(vec![response(result, &Format::UnifiedText, &mut believed, false)?]);
        }
        let (engine, session, sql) = (self.engine.clone(), self.session.clone(), query.to_string());
        let outcome = tokio::spawn(crate::api::traced_task(async move {
            let mut session = session.lock_owned().await;
            engine.execute_each(&mut session, &sql).await
        }))
        .await
        .map_err(task_failed)?;
        let mut responses = Vec::new();
        for (result, in_txn) in outcome.results {
            responses.push(response(result, &Format::UnifiedText, &mut believed, in_txn)?);
        }
        if let Some(e) = outcome.error {
            responses.push(Response::Error(Box::new(error_info(&e))));
        }
        Ok(responses)
    }
}
