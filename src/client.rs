//! The Rust client library: connect to a coordinator and run SQL.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tessera::client::ClientError> {
//! let mut client = tessera::client::Client::connect("127.0.0.1:7700").await?;
//! let results = client.execute("SELECT count(*) FROM accounts").await?;
//! println!("{}", results[0].rows[0][0]);
//! # Ok(()) }
//! ```

use std::fmt;
use std::time::Duration;
use tessera_proto::v1 as pb;
use tessera_proto::v1::tessera_client::TesseraClient;
use tonic::transport::{Channel, Endpoint};

pub use tessera_shard::data::Value;

/// Largest response the client accepts (rows of one statement).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A connection to a coordinator with its own session: a transaction
/// opened with BEGIN stays open across `execute` calls until COMMIT or
/// ROLLBACK. Clones share the session.
#[derive(Clone)]
pub struct Client {
    inner: TesseraClient<Channel>,
    address: String,
    session_id: String,
    protocol: Option<Protocol>,
}

/// How a multi-shard write commits. See `docs/architecture/sagas.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Two-phase commit: atomic and isolated; blocks while a shard is down.
    TwoPhaseCommit,
    /// A saga: one local commit per shard group, undone by compensations
    /// if a later step fails. Not isolated: others see partial progress.
    Saga,
}

/// A column of a result set.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    /// SQL type name: BIGINT, TEXT, BOOLEAN or DOUBLE.
    pub data_type: String,
}

/// The outcome of one statement.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementResult {
    /// PostgreSQL-style command tag, e.g. `SELECT 3` or `INSERT 0 2`.
    pub tag: String,
    /// Empty for statements that return no rows.
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
    pub rows_affected: u64,
}

/// An error from the coordinator (with its SQLSTATE) or from the connection.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientError {
    /// The PostgreSQL SQLSTATE, when the coordinator sent one.
    pub sqlstate: Option<String>,
    pub message: String,
    /// The saga that failed, rolled back or was parked, when the failed
    /// statement ran as a saga; `Client::saga` shows its timeline.
    pub saga_id: Option<String>,
}

impl ClientError {
    /// True when retrying the same transaction may succeed (SQLSTATE 40001/40P01).
    pub fn is_retryable(&self) -> bool {
        matches!(self.sqlstate.as_deref(), Some("40001") | Some("40P01"))
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.sqlstate {
            Some(code) => write!(f, "ERROR: {} (SQLSTATE {code})", self.message),
            None => write!(f, "ERROR: {}", self.message),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        let sqlstate = status.metadata().get(tessera_proto::SQLSTATE_METADATA_KEY).and_then(|v| v.to_str().ok()).map(str::to_string);
        let message = match status.code() {
            tonic::Code::Unavailable if sqlstate.is_none() => format!("coordinator unavailable: {}", status.message()),
            tonic::Code::DeadlineExceeded if sqlstate.is_none() => "coordinator did not answer in time".to_string(),
            _ => status.message().to_string(),
        };
        let saga_id = status.metadata().get(tessera_proto::SAGA_METADATA_KEY).and_then(|v| v.to_str().ok()).map(str::to_string);
        ClientError { sqlstate, message, saga_id }
    }
}

impl Client {
    /// Connects to the coordinator at `address` (`host:port` or a URL).
    pub async fn connect(address: &str) -> Result<Client, ClientError> {
        let url = if address.contains("://") { address.to_string() } else { format!("http://{address}") };
        let endpoint =
            Endpoint::from_shared(url).map_err(|e| ClientError { sqlstate: None, message: format!("invalid address \"{address}\": {e}"), saga_id: None })?;
        let channel = endpoint.connect_timeout(Duration::from_secs(5)).tcp_nodelay(true).connect().await.map_err(|e| ClientError {
            sqlstate: Some("08001".into()),
            message: format!("cannot connect to coordinator at {address}: {}", source_chain(&e)),
            saga_id: None,
        })?;
        let inner = TesseraClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Client { inner, address: address.to_string(), session_id: uuid::Uuid::new_v4().to_string(), protocol: None })
    }

    /// The address this client connected to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Makes this client's transactions (and autocommit writes) run with
    /// `protocol`, overriding the session's `transaction_protocol` setting;
    /// `None` goes back to the session setting (2PC unless changed with
    /// `SET transaction_protocol`).
    pub fn set_protocol(&mut self, protocol: Option<Protocol>) {
        self.protocol = protocol;
    }

    /// The protocol set with [`Client::set_protocol`].
    pub fn protocol(&self) -> Option<Protocol> {
        self.protocol
    }

    /// Runs one or more `;`-separated statements and returns one result each.
    pub async fn execute(&mut self, sql: &str) -> Result<Vec<StatementResult>, ClientError> {
        let protocol = match self.protocol {
            None => pb::Protocol::Unspecified,
            Some(Protocol::TwoPhaseCommit) => pb::Protocol::TwoPhaseCommit,
            Some(Protocol::Saga) => pb::Protocol::Saga,
        };
        let request = pb::ExecuteRequest { sql: sql.to_string(), session_id: self.session_id.clone(), protocol: protocol as i32 };
        let response = self.inner.execute(request).await?;
        Ok(response.into_inner().results.into_iter().map(statement_from_pb).collect())
    }

    /// Runs `body` inside BEGIN ... COMMIT, retrying the whole transaction
    /// when it fails with a serialization failure (SQLSTATE 40001), up to
    /// `attempts` times. Any other error rolls back and is returned.
    pub async fn transaction(&mut self, body: &str, attempts: usize) -> Result<Vec<StatementResult>, ClientError> {
        let mut last = None;
        for _ in 0..attempts.max(1) {
            match self.execute(&format!("BEGIN; {body}; COMMIT")).await {
                Ok(results) => return Ok(results),
                Err(e) => {
                    let _ = self.execute("ROLLBACK").await;
                    if !e.is_retryable() {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// Shard groups, their counters, and the coordinator's commit counters.
    pub async fn cluster_status(&mut self) -> Result<pb::ClusterStatusResponse, ClientError> {
        Ok(self.inner.cluster_status(pb::ClusterStatusRequest {}).await?.into_inner())
    }

    /// Runs `body` (`;`-separated writes) as one saga: BEGIN ... COMMIT with
    /// the saga protocol. A failure rolls the saga back with compensations
    /// and the error carries its id ([`ClientError::saga_id`]).
    pub async fn saga(&mut self, body: &str) -> Result<Vec<StatementResult>, ClientError> {
        let previous = self.protocol.replace(Protocol::Saga);
        let outcome = self.execute(&format!("BEGIN; {body}; COMMIT")).await;
        if outcome.is_err() {
            let _ = self.execute("ROLLBACK").await;
        }
        self.protocol = previous;
        outcome
    }

    /// The sagas the coordinator remembers: unfinished ones and recent
    /// finished ones, oldest first.
    pub async fn sagas(&mut self) -> Result<Vec<pb::Saga>, ClientError> {
        Ok(self.inner.list_sagas(pb::ListSagasRequest {}).await?.into_inner().sagas)
    }

    /// One saga with its timeline of steps and compensations.
    pub async fn saga_status(&mut self, saga_id: &str) -> Result<pb::Saga, ClientError> {
        Ok(self.inner.get_saga(pb::GetSagaRequest { saga_id: saga_id.to_string() }).await?.into_inner())
    }

    /// Resumes a saga parked as needs_operator (after the operator fixed
    /// what made its compensation fail): retries its compensations with a
    /// fresh budget and returns the saga as it ended.
    pub async fn resume_saga(&mut self, saga_id: &str) -> Result<pb::Saga, ClientError> {
        Ok(self.inner.resume_saga(pb::ResumeSagaRequest { saga_id: saga_id.to_string() }).await?.into_inner())
    }

    /// Transactions in flight and in doubt.
    pub async fn transactions(&mut self) -> Result<Vec<pb::TransactionInfo>, ClientError> {
        Ok(self.inner.list_transactions(pb::ListTransactionsRequest {}).await?.into_inner().transactions)
    }
}

/// Formats an error with its causes, e.g. "transport error: connection refused".
pub fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

fn statement_from_pb(result: pb::StatementResult) -> StatementResult {
    StatementResult {
        tag: result.tag,
        columns: result
            .columns
            .into_iter()
            .map(|c| Column {
                name: c.name,
                data_type: match pb::DataType::try_from(c.r#type).unwrap_or(pb::DataType::Unspecified) {
                    pb::DataType::Bigint => "BIGINT",
                    pb::DataType::Text => "TEXT",
                    pb::DataType::Boolean => "BOOLEAN",
                    pb::DataType::Double => "DOUBLE",
                    pb::DataType::Unspecified => "UNKNOWN",
                }
                .to_string(),
            })
            .collect(),
        rows: result.rows.into_iter().map(|r| r.values.into_iter().map(value_from_pb).collect()).collect(),
        rows_affected: result.rows_affected,
    }
}

fn value_from_pb(value: pb::Value) -> Value {
    use pb::value::Kind;
    match value.kind {
        None | Some(Kind::Null(_)) => Value::Null,
        Some(Kind::Int(i)) => Value::Int(i),
        Some(Kind::Text(s)) => Value::Text(s),
        Some(Kind::Boolean(b)) => Value::Bool(b),
        Some(Kind::Double(d)) => Value::Double(d),
    }
}
