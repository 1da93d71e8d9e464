//! The Rust client library: connect to a coordinator over gRPC and run SQL.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tessera::ClientError> {
//! use tessera::{Client, Value};
//! let mut client = Client::builder("127.0.0.1:7700").token("my-token").connect().await?;
//! let rows = client.query("SELECT owner, balance FROM accounts WHERE id = $1", &[Value::Int(7)]).await?;
//! let balance: i64 = rows[0].get("balance")?;
//! // A transfer in a transaction, retried when it loses a conflict (40001).
//! client
//!     .transaction(async |tx| {
//!         tx.execute("UPDATE accounts SET balance = balance - $1 WHERE id = $2", &[Value::Int(10), Value::Int(7)]).await?;
//!         tx.execute("UPDATE accounts SET balance = balance + $1 WHERE id = $2", &[Value::Int(10), Value::Int(250)]).await?;
//!         Ok(())
//!     })
//!     .await?;
//! # let _ = balance; Ok(()) }
//! ```

mod rows;

pub use rows::{FromValue, Row};
pub use tessera_model::data::Value;

use futures::{Stream, StreamExt};
use rand::Rng;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tessera_model::sqlstate;
use tessera_proto::v1 as pb;
use tessera_proto::v1::admin_client::AdminClient;
use tessera_proto::v1::tessera_client::TesseraClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Largest response the client accepts (rows of one statement; larger
/// results can be read with [`Client::query_stream`]).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

pub use tessera_model::txn::Protocol;

fn protocol_to_pb(protocol: Option<Protocol>) -> i32 {
    (match protocol {
        None => pb::Protocol::Unspecified,
        Some(Protocol::TwoPhaseCommit) => pb::Protocol::TwoPhaseCommit,
        Some(Protocol::Saga) => pb::Protocol::Saga,
    }) as i32
}

/// A column of a result set.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    /// SQL type name: INT, BIGINT, TEXT, BOOLEAN or DOUBLE.
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
    /// Rows read from replicas: how stale they may be (milliseconds).
    pub staleness_ms: Option<u64>,
}

impl StatementResult {
    /// The rows as [`Row`]s, which read columns by name.
    pub fn typed_rows(&self) -> Vec<Row> {
        let columns: Arc<[Column]> = self.columns.clone().into();
        self.rows.iter().map(|values| Row::new(columns.clone(), values.clone())).collect()
    }
}

/// An error from the coordinator (with its SQLSTATE) or from the connection.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientError {
    /// The PostgreSQL SQLSTATE, when the coordinator sent one.
    pub sqlstate: Option<String>,
    pub message: String,
    /// The saga that failed, rolled back or was parked, when the failed
    /// statement ran as a saga; `Client::saga_status` shows its timeline.
    pub saga_id: Option<String>,
    /// The gRPC status code of the failed call.
    pub code: Option<tonic::Code>,
    /// The trace id the coordinator ran the request under (grep the
    /// coordinator's and the shards' logs for it).
    pub trace_id: Option<String>,
}

impl ClientError {
    fn local(sqlstate: Option<&str>, message: String) -> ClientError {
        ClientError { sqlstate: sqlstate.map(str::to_string), message, saga_id: None, code: None, trace_id: None }
    }

    /// True when retrying the same transaction may succeed (SQLSTATE 40001/40P01).
    pub fn is_retryable(&self) -> bool {
        matches!(self.sqlstate.as_deref(), Some(sqlstate::SERIALIZATION_FAILURE) | Some(sqlstate::DEADLOCK_DETECTED))
    }

    /// True when the outcome is unknown: the call timed out, the connection
    /// broke, or a COMMIT went unacknowledged (08007), so the request may or
    /// may not have taken effect.
    /// Retry it with the same idempotency key to learn the outcome.
    pub fn is_unknown_outcome(&self) -> bool {
        self.sqlstate.as_deref() == Some(sqlstate::TRANSACTION_RESOLUTION_UNKNOWN)
            || (self.sqlstate.is_none()
                && matches!(self.code, Some(tonic::Code::DeadlineExceeded | tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown)))
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
            tonic::Code::Unauthenticated => format!("authentication failed: {}", status.message()),
            _ => status.message().to_string(),
        };
        let sqlstate = sqlstate.or_else(|| (status.code() == tonic::Code::Unauthenticated).then(|| sqlstate::INVALID_AUTHORIZATION_SPECIFICATION.to_string()));
        let saga_id = status.metadata().get(tessera_proto::SAGA_METADATA_KEY).and_then(|v| v.to_str().ok()).map(str::to_string);
        let trace_id = status.metadata().get(tessera_proto::TRACE_METADATA_KEY).and_then(|v| v.to_str().ok()).map(str::to_string);
        ClientError { sqlstate, message, saga_id, code: Some(status.code()), trace_id }
    }
}

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Credentials(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("authorization", token.clone());
        }
        Ok(request)
    }
}

type Channelled = InterceptedService<Channel, Credentials>;

/// How to reach a coordinator: address, token, TLS, timeouts.
#[derive(Clone)]
pub struct ClientBuilder {
    address: String,
    token: Option<String>,
    tls_ca_pem: Option<Vec<u8>>,
    tls_domain: Option<String>,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
}

impl ClientBuilder {
    /// The coordinator's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// A bearer token from the coordinator's `[[auth.tokens]]`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Connect with TLS, trusting the certificate authority in this PEM.
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_ca_pem = Some(pem.into());
        self
    }

    /// The name the server's certificate must carry (default: the host).
    pub fn tls_domain(mut self, domain: impl Into<String>) -> Self {
        self.tls_domain = Some(domain.into());
        self
    }

    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// A deadline for every call; a call past it fails with an unknown
    /// outcome ([`ClientError::is_unknown_outcome`]).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// Connects and opens a session.
    pub async fn connect(self) -> Result<Client, ClientError> {
        let address = self.address.clone();
        let scheme = if self.tls_ca_pem.is_some() { "https" } else { "http" };
        let url = if address.contains("://") { address.clone() } else { format!("{scheme}://{address}") };
        let mut endpoint = Endpoint::from_shared(url)
            .map_err(|e| ClientError::local(None, format!("invalid address \"{address}\": {e}")))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        if let Some(timeout) = self.request_timeout {
            endpoint = endpoint.timeout(timeout);
        }
        if let Some(pem) = &self.tls_ca_pem {
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
            if let Some(domain) = &self.tls_domain {
                tls = tls.domain_name(domain.clone());
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| ClientError::local(None, format!("TLS: {}", source_chain(&e))))?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            ClientError::local(
                Some(sqlstate::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
                format!("cannot connect to coordinator at {address}: {}", source_chain(&e)),
            )
        })?;
        let token = match &self.token {
            Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| ClientError::local(None, "the token holds characters metadata cannot carry".into()))?),
            None => None,
        };
        let credentials = Credentials(token);
        let tessera = TesseraClient::with_interceptor(channel.clone(), credentials.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let admin = AdminClient::with_interceptor(channel, credentials).max_decoding_message_size(MAX_MESSAGE_BYTES);
        let mut client = Client { tessera, admin, address, session_id: String::new(), protocol: None, replica_reads: None, builder: self, trace_id: None };
        client.session_id = client.tessera.open_session(pb::OpenSessionRequest {}).await?.into_inner().session_id;
        Ok(client)
    }
}

/// A connection to a coordinator with its own session: a transaction
/// opened with BEGIN stays open across calls until COMMIT or ROLLBACK.
/// Clones share the session.
#[derive(Clone)]
pub struct Client {
    tessera: TesseraClient<Channelled>,
    admin: AdminClient<Channelled>,
    address: String,
    session_id: String,
    protocol: Option<Protocol>,
    replica_reads: Option<ReplicaReads>,
    builder: ClientBuilder,
    /// Sent as `x-tessera-trace-id` with each statement, when set.
    trace_id: Option<String>,
}

/// Reads outside transactions served by replicas (see
/// [`Client::set_replica_reads`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplicaReads {
    /// Skip replicas that may be staler than this (`None`: any staleness).
    pub max_staleness: Option<Duration>,
    /// When no replica is fresh enough: fail (SQLSTATE TR001) instead of
    /// reading from the primary.
    pub refuse_stale: bool,
}

impl Client {
    /// How to connect to the coordinator at `address` (`host:port` or a URL).
    pub fn builder(address: &str) -> ClientBuilder {
        ClientBuilder {
            address: address.to_string(),
            token: None,
            tls_ca_pem: None,
            tls_domain: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: None,
        }
    }

    /// Connects without credentials (a coordinator with `auth.trust`).
    pub async fn connect(address: &str) -> Result<Client, ClientError> {
        Client::builder(address).connect().await
    }

    /// A new connection with the same settings and a session of its own.
    pub async fn reconnect(&self) -> Result<Client, ClientError> {
        let mut client = self.builder.clone().connect().await?;
        client.protocol = self.protocol;
        Ok(client)
    }

    /// The address this client connected to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The session's id on the coordinator.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Makes this client's transactions (and autocommit writes) run with
    /// `protocol`, overriding the session's `transaction_protocol` setting;
    /// `None` goes back to the session setting (2PC unless changed with
    /// `SET transaction_protocol`).
    pub fn set_protocol(&mut self, protocol: Option<Protocol>) {
        self.protocol = protocol;
    }

    /// Lets this client's reads outside transactions be served by replicas
    /// (`None`: the session's `replica_reads` setting). Each result's
    /// `staleness_ms` says how stale its rows may be.
    pub fn set_replica_reads(&mut self, reads: Option<ReplicaReads>) {
        self.replica_reads = reads;
    }

    /// The protocol set with [`Client::set_protocol`].
    pub fn protocol(&self) -> Option<Protocol> {
        self.protocol
    }

    /// Runs the following statements under this trace id (the coordinator
    /// makes one per request otherwise); `None` goes back to that.
    pub fn set_trace_id(&mut self, trace_id: Option<String>) {
        self.trace_id = trace_id;
    }

    fn request(&self, sql: &str, params: &[Value], key: Option<&str>) -> tonic::Request<pb::ExecuteRequest> {
        let mut request = tonic::Request::new(self.execute_request(sql, params, key));
        if let Some(value) = self.trace_id.as_ref().and_then(|t| t.parse().ok()) {
            request.metadata_mut().insert(tessera_proto::TRACE_METADATA_KEY, value);
        }
        request
    }

    fn execute_request(&self, sql: &str, params: &[Value], key: Option<&str>) -> pb::ExecuteRequest {
        pb::ExecuteRequest {
            sql: sql.to_string(),
            session_id: self.session_id.clone(),
            protocol: protocol_to_pb(self.protocol),
            params: params.iter().cloned().map(pb::Value::from).collect(),
            idempotency_key: key.unwrap_or_default().to_string(),
            replica_reads: self.replica_reads.map(|r| pb::ReplicaReadOptions {
                max_staleness_ms: r.max_staleness.map(|d| d.as_millis().max(1) as u64).unwrap_or(0),
                refuse_stale: r.refuse_stale,
            }),
        }
    }

    /// Runs one or more `;`-separated statements and returns one result each.
    pub async fn execute(&mut self, sql: &str) -> Result<Vec<StatementResult>, ClientError> {
        self.execute_with(sql, &[]).await
    }

    /// Like [`Client::execute`], with `$1`, `$2`, ... bound to `params`.
    pub async fn execute_with(&mut self, sql: &str, params: &[Value]) -> Result<Vec<StatementResult>, ClientError> {
        let response = self.tessera.execute(self.request(sql, params, None)).await?;
        Ok(response.into_inner().results.into_iter().map(statement_from_pb).collect())
    }

    /// Runs a request that ends with its own commit (one statement, or
    /// `BEGIN; ...; COMMIT`) under an idempotency key: sending it again with
    /// the same key, after a timeout or a lost connection, returns the
    /// first outcome instead of applying it twice.
    pub async fn execute_idempotent(&mut self, sql: &str, params: &[Value], key: &str) -> Result<Vec<StatementResult>, ClientError> {
        let response = self.tessera.execute(self.request(sql, params, Some(key))).await?;
        Ok(response.into_inner().results.into_iter().map(statement_from_pb).collect())
    }

    /// The rows of the (last) statement, typed by column name.
    pub async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, ClientError> {
        let results = self.execute_with(sql, params).await?;
        Ok(results.last().map(StatementResult::typed_rows).unwrap_or_default())
    }

    /// Exactly one row, or an error saying how many there were.
    pub async fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<Row, ClientError> {
        let mut rows = self.query(sql, params).await?;
        match rows.len() {
            1 => Ok(rows.remove(0)),
            n => Err(ClientError::local(
                Some(if n == 0 { sqlstate::NO_DATA_FOUND } else { sqlstate::TOO_MANY_ROWS }),
                format!("expected one row, the query returned {n}"),
            )),
        }
    }

    /// The rows of the (last) statement as they arrive, in batches; for
    /// results larger than one message.
    pub async fn query_stream(&mut self, sql: &str, params: &[Value]) -> Result<impl Stream<Item = Result<Row, ClientError>> + use<>, ClientError> {
        use pb::execute_stream_response::Item;
        let stream = self.tessera.execute_stream(self.request(sql, params, None)).await?.into_inner();
        let mut columns: Arc<[Column]> = Arc::from(Vec::new());
        Ok(stream.flat_map(move |item| {
            let rows: Vec<Result<Row, ClientError>> = match item {
                Err(status) => vec![Err(status.into())],
                Ok(pb::ExecuteStreamResponse { item: Some(Item::Header(h)) }) => {
                    columns = h.columns.into_iter().map(column_from_pb).collect::<Vec<_>>().into();
                    Vec::new()
                }
                Ok(pb::ExecuteStreamResponse { item: Some(Item::Rows(batch)) }) => {
                    batch.rows.into_iter().map(|r| Ok(Row::new(columns.clone(), r.values.into_iter().map(Value::from).collect()))).collect()
                }
                Ok(_) => Vec::new(),
            };
            futures::stream::iter(rows)
        }))
    }

    /// BEGIN, with the protocol this client is set to.
    pub async fn begin(&mut self) -> Result<(), ClientError> {
        self.tessera.begin(pb::BeginRequest { session_id: self.session_id.clone(), protocol: protocol_to_pb(self.protocol) }).await?;
        Ok(())
    }

    /// COMMIT; with a key, a retried commit returns the first outcome.
    /// Returns the tag: `COMMIT`, or `ROLLBACK` if the transaction had failed.
    pub async fn commit(&mut self, idempotency_key: Option<&str>) -> Result<String, ClientError> {
        let request = pb::CommitRequest { session_id: self.session_id.clone(), idempotency_key: idempotency_key.unwrap_or_default().to_string() };
        Ok(self.tessera.commit(request).await?.into_inner().tag)
    }

    pub async fn rollback(&mut self) -> Result<(), ClientError> {
        self.tessera.rollback(pb::RollbackRequest { session_id: self.session_id.clone() }).await?;
        Ok(())
    }

    /// Runs `body` in a transaction and commits it, retrying the whole
    /// transaction (with backoff and jitter) while it fails with a
    /// serialization failure (SQLSTATE 40001), up to 10 attempts. Any other
    /// error rolls back and is returned.
    pub async fn transaction<T>(&mut self, body: impl AsyncFnMut(&mut Transaction) -> Result<T, ClientError>) -> Result<T, ClientError> {
        self.transaction_with(10, body).await
    }

    /// [`Client::transaction`] with a bound on attempts.
    pub async fn transaction_with<T>(
        &mut self,
        attempts: usize,
        mut body: impl AsyncFnMut(&mut Transaction) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let mut backoff = Duration::from_millis(5);
        let mut last = None;
        for _ in 0..attempts.max(1) {
            self.begin().await?;
            let mut tx = Transaction { client: self.clone() };
            let outcome = match body(&mut tx).await {
                Ok(value) => self.commit(None).await.and_then(|tag| match tag.as_str() {
                    "COMMIT" => Ok(value),
                    _ => Err(ClientError::local(Some(sqlstate::STATEMENT_COMPLETION_UNKNOWN), "the transaction failed and was rolled back".into())),
                }),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(value) => return Ok(value),
                Err(e) => {
                    let _ = self.rollback().await;
                    if !e.is_retryable() {
                        return Err(e);
                    }
                    last = Some(e);
                    let jitter = rand::thread_rng().gen_range(0..=backoff.as_micros() as u64);
                    tokio::time::sleep(backoff + Duration::from_micros(jitter)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// Runs `body` (`;`-separated statements) inside BEGIN ... COMMIT in one
    /// call, retrying on 40001 up to `attempts` times.
    pub async fn transaction_sql(&mut self, body: &str, attempts: usize) -> Result<Vec<StatementResult>, ClientError> {
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

    /// Closes the session on the coordinator (an open transaction rolls back).
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.tessera.close_session(pb::CloseSessionRequest { session_id: self.session_id.clone() }).await?;
        Ok(())
    }

    /// Shard groups, their counters, and the coordinator's commit counters.
    pub async fn cluster_status(&mut self) -> Result<pb::ClusterStatusResponse, ClientError> {
        Ok(self.admin.cluster_status(pb::ClusterStatusRequest {}).await?.into_inner())
    }

    /// Shard groups with their members, roles and epochs, and every table's
    /// partitioning.
    pub async fn shard_map(&mut self) -> Result<pb::ShardMapResponse, ClientError> {
        Ok(self.admin.shard_map(pb::ShardMapRequest {}).await?.into_inner())
    }

    /// The sagas the coordinator remembers: unfinished ones and recent
    /// finished ones, oldest first.
    pub async fn sagas(&mut self) -> Result<Vec<pb::Saga>, ClientError> {
        Ok(self.admin.list_sagas(pb::ListSagasRequest {}).await?.into_inner().sagas)
    }

    /// One saga with its timeline of steps and compensations.
    pub async fn saga_status(&mut self, saga_id: &str) -> Result<pb::Saga, ClientError> {
        Ok(self.admin.get_saga(pb::GetSagaRequest { saga_id: saga_id.to_string() }).await?.into_inner())
    }

    /// Resumes a saga parked as needs_operator (after the operator fixed
    /// what made its compensation fail): retries its compensations with a
    /// fresh budget and returns the saga as it ended.
    pub async fn resume_saga(&mut self, saga_id: &str) -> Result<pb::Saga, ClientError> {
        Ok(self.admin.resume_saga(pb::ResumeSagaRequest { saga_id: saga_id.to_string() }).await?.into_inner())
    }

    /// A planned switchover of a shard group to `target` (a replica's
    /// address), or to its most up-to-date replica; returns the group after.
    pub async fn switchover(&mut self, shard_group: u32, target: Option<&str>) -> Result<pb::ShardGroup, ClientError> {
        let request = pb::SwitchoverRequest { shard_group, target: target.unwrap_or_default().to_string() };
        Ok(self.admin.switchover(request).await?.into_inner())
    }

    /// Transactions in flight and in doubt.
    pub async fn transactions(&mut self) -> Result<Vec<pb::TransactionInfo>, ClientError> {
        Ok(self.admin.list_transactions(pb::ListTransactionsRequest {}).await?.into_inner().transactions)
    }
}

/// An open transaction inside [`Client::transaction`].
pub struct Transaction {
    client: Client,
}

impl Transaction {
    /// Runs statements in the transaction.
    pub async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<Vec<StatementResult>, ClientError> {
        self.client.execute_with(sql, params).await
    }

    /// The rows of the (last) statement, read in the transaction (locked).
    pub async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, ClientError> {
        self.client.query(sql, params).await
    }

    pub async fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<Row, ClientError> {
        self.client.query_one(sql, params).await
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

fn column_from_pb(c: pb::Column) -> Column {
    let data_type = match pb::DataType::try_from(c.r#type).unwrap_or(pb::DataType::Unspecified) {
        pb::DataType::Int => "INT",
        pb::DataType::Bigint => "BIGINT",
        pb::DataType::Text => "TEXT",
        pb::DataType::Boolean => "BOOLEAN",
        pb::DataType::Double => "DOUBLE",
        pb::DataType::Unspecified => "UNKNOWN",
    };
    Column { name: c.name, data_type: data_type.to_string() }
}

fn statement_from_pb(result: pb::StatementResult) -> StatementResult {
    StatementResult {
        tag: result.tag,
        columns: result.columns.into_iter().map(column_from_pb).collect(),
        rows: result.rows.into_iter().map(|r| r.values.into_iter().map(Value::from).collect()).collect(),
        rows_affected: result.rows_affected,
        staleness_ms: result.staleness_ms,
    }
}
