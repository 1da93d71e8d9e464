//! The `tessera.v1.Tessera` service: sessions, statements with parameters,
//! streamed results, explicit transactions and idempotency keys.

use super::convert::{columns_to_pb, protocol_from_pb, result_to_pb, row_to_pb};
use super::principal;
use crate::error::CoordError;
use crate::exec::{Engine, RequestOptions};
use crate::read::ReplicaReads;
use crate::result::QueryResult;
use crate::session::Sessions;
use futures::Stream;
use prost::Message;
use std::pin::Pin;
use std::sync::Arc;
use tessera_model::data::Value;
use tessera_proto::v1 as pb;
use tonic::{Request, Response, Status};

/// Largest row batch of ExecuteStream, in encoded bytes.
const STREAM_BATCH_BYTES: usize = 1024 * 1024;

pub struct TesseraService {
    engine: Arc<Engine>,
    sessions: Arc<Sessions>,
    max_message_bytes: usize,
}

impl TesseraService {
    pub fn new(engine: Arc<Engine>, sessions: Arc<Sessions>, max_message_bytes: usize) -> TesseraService {
        TesseraService { engine, sessions, max_message_bytes }
    }

    /// Runs a request in its session (or a session of its own). The
    /// statements run in a task of their own: a client that goes away must
    /// not cancel a commit protocol halfway (between PREPARE and the
    /// decision, that would leave participants waiting on a transaction the
    /// coordinator still lists as in progress).
    /// The request runs under `trace` (see [`trace_of`]): its log lines and
    /// its calls to shard nodes carry it, and so does the error it may end in.
    async fn run(&self, owner: &str, session_id: &str, sql: String, mut options: RequestOptions, trace: &str) -> Result<Vec<QueryResult>, Status> {
        options.principal = owner.to_string();
        let engine = self.engine.clone();
        let shared = if session_id.is_empty() { None } else { Some(self.sessions.get(session_id, owner)?) };
        let mut fresh = self.sessions.new_session();
        let span = tracing::info_span!("request", trace = %trace, session = %session_id);
        tracing::debug!(parent: &span, sql = %crate::saga::orchestrator::short(&sql), "request");
        let work = super::in_trace(trace.to_string(), span, async move {
            match shared {
                Some(shared) => {
                    let mut session = shared.lock_owned().await;
                    engine.execute_request(&mut session, &sql, &options).await
                }
                None => {
                    // No session: a transaction must end within this call.
                    let results = engine.execute_request(&mut fresh, &sql, &options).await;
                    if let Some(txn) = fresh.txn.take() {
                        engine.txns().rollback(txn).await;
                    }
                    results
                }
            }
        });
        let results = tokio::spawn(work).await.map_err(|e| Status::internal(format!("statement task failed: {e}")))?;
        results.map_err(|e| {
            tracing::debug!(error = %e, "statement failed");
            let mut status = Status::from(e);
            super::put_trace(status.metadata_mut(), trace);
            status
        })
    }

    fn required_session(id: &str, call: &str) -> Result<(), Status> {
        if id.is_empty() {
            return Err(Status::invalid_argument(format!("{call} needs a session_id (from OpenSession)")));
        }
        Ok(())
    }
}

type ExecuteStream = Pin<Box<dyn Stream<Item = Result<pb::ExecuteStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::tessera_server::Tessera for TesseraService {
    async fn open_session(&self, request: Request<pb::OpenSessionRequest>) -> Result<Response<pb::OpenSessionResponse>, Status> {
        let session_id = self.sessions.open(&principal(&request))?;
        Ok(Response::new(pb::OpenSessionResponse { session_id }))
    }

    async fn close_session(&self, request: Request<pb::CloseSessionRequest>) -> Result<Response<pb::CloseSessionResponse>, Status> {
        let owner = principal(&request);
        self.sessions.close(&request.into_inner().session_id, &owner, self.engine.txns()).await?;
        Ok(Response::new(pb::CloseSessionResponse {}))
    }

    async fn execute(&self, request: Request<pb::ExecuteRequest>) -> Result<Response<pb::ExecuteResponse>, Status> {
        let owner = principal(&request);
        let trace = trace_of(&request);
        let req = request.into_inner();
        let mut options = options(req.protocol, req.params, req.idempotency_key, req.replica_reads)?;
        // The results must fit in one message: checked as they are made,
        // so a request that could not be answered fails before its commit.
        options.response_budget = Some(self.max_message_bytes * 9 / 10);
        let results = self.run(&owner, &req.session_id, req.sql, options, &trace).await?;
        let response = pb::ExecuteResponse { results: results.into_iter().map(result_to_pb).collect() };
        let size = response.encoded_len();
        if size > self.max_message_bytes {
            return Err(CoordError::LimitExceeded(format!(
                "the response is {size} bytes, more than limits.max_message_bytes ({}); read it with ExecuteStream, or add a LIMIT",
                self.max_message_bytes
            ))
            .into());
        }
        Ok(traced(Response::new(response), &trace))
    }

    type ExecuteStreamStream = ExecuteStream;

    async fn execute_stream(&self, request: Request<pb::ExecuteRequest>) -> Result<Response<ExecuteStream>, Status> {
        let owner = principal(&request);
        let trace = trace_of(&request);
        let req = request.into_inner();
        let options = options(req.protocol, req.params, req.idempotency_key, req.replica_reads)?;
        let results = self.run(&owner, &req.session_id, req.sql, options, &trace).await?;
        // Batches stay well under the message limit.
        let budget = STREAM_BATCH_BYTES.min(self.max_message_bytes / 4);
        let items: Vec<Result<pb::ExecuteStreamResponse, Status>> = results.into_iter().flat_map(|r| stream_items(r, budget)).map(Ok).collect();
        Ok(traced(Response::new(Box::pin(futures::stream::iter(items))), &trace))
    }

    async fn begin(&self, request: Request<pb::BeginRequest>) -> Result<Response<pb::BeginResponse>, Status> {
        let owner = principal(&request);
        let trace = trace_of(&request);
        let req = request.into_inner();
        Self::required_session(&req.session_id, "Begin")?;
        let options = RequestOptions { protocol: protocol_from_pb(req.protocol)?, ..Default::default() };
        self.run(&owner, &req.session_id, "BEGIN".into(), options, &trace).await?;
        Ok(traced(Response::new(pb::BeginResponse {}), &trace))
    }

    async fn commit(&self, request: Request<pb::CommitRequest>) -> Result<Response<pb::CommitResponse>, Status> {
        let owner = principal(&request);
        let trace = trace_of(&request);
        let req = request.into_inner();
        Self::required_session(&req.session_id, "Commit")?;
        let options = RequestOptions { idempotency_key: (!req.idempotency_key.is_empty()).then_some(req.idempotency_key), ..Default::default() };
        let results = self.run(&owner, &req.session_id, "COMMIT".into(), options, &trace).await?;
        let tag = results.into_iter().last().map(|r| r.tag).unwrap_or_else(|| "COMMIT".into());
        Ok(traced(Response::new(pb::CommitResponse { tag }), &trace))
    }

    async fn rollback(&self, request: Request<pb::RollbackRequest>) -> Result<Response<pb::RollbackResponse>, Status> {
        let owner = principal(&request);
        let trace = trace_of(&request);
        let req = request.into_inner();
        Self::required_session(&req.session_id, "Rollback")?;
        self.run(&owner, &req.session_id, "ROLLBACK".into(), RequestOptions::default(), &trace).await?;
        Ok(traced(Response::new(pb::RollbackResponse {}), &trace))
    }
}

/// The request's trace id: the client's `x-tessera-trace-id` if it is a
/// sane one, else a new one.
pub fn trace_of<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get(tessera_proto::TRACE_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(tessera_model::trace::clean_id)
        .unwrap_or_else(super::new_trace_id)
}

/// Returns the trace id to the client with the answer.
fn traced<T>(mut response: Response<T>, trace: &str) -> Response<T> {
    super::put_trace(response.metadata_mut(), trace);
    response
}

fn options(protocol: i32, params: Vec<pb::Value>, key: String, replica: Option<pb::ReplicaReadOptions>) -> Result<RequestOptions, Status> {
    Ok(RequestOptions {
        protocol: protocol_from_pb(protocol)?,
        params: params.into_iter().map(Value::from).collect(),
        idempotency_key: (!key.is_empty()).then_some(key),
        principal: String::new(), // set by `run`
        response_budget: None,
        replica_reads: replica.map(|r| ReplicaReads {
            max_staleness: (r.max_staleness_ms > 0).then(|| std::time::Duration::from_millis(r.max_staleness_ms)),
            refuse_stale: r.refuse_stale,
        }),
    })
}

/// One statement's result as stream items: header, row batches, end.
fn stream_items(result: QueryResult, budget: usize) -> Vec<pb::ExecuteStreamResponse> {
    use pb::execute_stream_response::Item;
    let item = |i: Item| pb::ExecuteStreamResponse { item: Some(i) };
    let mut items = vec![item(Item::Header(pb::ResultHeader { columns: columns_to_pb(result.columns) }))];
    let mut batch = Vec::new();
    let mut bytes = 0;
    for row in result.rows {
        let row = row_to_pb(row);
        bytes += row.encoded_len() + 4;
        batch.push(row);
        if bytes >= budget {
            items.push(item(Item::Rows(pb::RowBatch { rows: std::mem::take(&mut batch) })));
            bytes = 0;
        }
    }
    if !batch.is_empty() {
        items.push(item(Item::Rows(pb::RowBatch { rows: batch })));
    }
    items.push(item(Item::End(pb::StatementEnd { tag: result.tag, rows_affected: result.rows_affected, staleness_ms: result.staleness_ms })));
    items
}
