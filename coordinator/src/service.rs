//! The gRPC services: the public `tessera.v1.Tessera` API, and the internal
//! `tessera.shard.v1.Resolver` that participants ask about outcomes. Requests
//! and results are converted between protobuf and domain types here.

use crate::saga::{Protocol, SagaRecord};
use crate::session::{Session, Sessions};
use crate::sql::{Engine, QueryResult};
use crate::txn::Outcome;
use std::sync::Arc;
use tessera_proto::shard as shard_pb;
use tessera_proto::v1 as pb;
use tessera_shard::data::{DataType, Value};
use tonic::{Request, Response, Status};

pub struct TesseraService {
    engine: Arc<Engine>,
    sessions: Arc<Sessions>,
}

impl TesseraService {
    pub fn new(engine: Arc<Engine>, sessions: Arc<Sessions>) -> TesseraService {
        TesseraService { engine, sessions }
    }
}

fn data_type_to_pb(t: DataType) -> pb::DataType {
    match t {
        DataType::Int | DataType::BigInt => pb::DataType::Bigint,
        DataType::Text => pb::DataType::Text,
        DataType::Boolean => pb::DataType::Boolean,
        DataType::Double => pb::DataType::Double,
    }
}

fn value_to_pb(v: Value) -> pb::Value {
    use pb::value::Kind;
    pb::Value {
        kind: Some(match v {
            Value::Null => Kind::Null(true),
            Value::Int(i) => Kind::Int(i),
            Value::Text(s) => Kind::Text(s),
            Value::Bool(b) => Kind::Boolean(b),
            Value::Double(d) => Kind::Double(d),
        }),
    }
}

fn result_to_pb(r: QueryResult) -> pb::StatementResult {
    pb::StatementResult {
        tag: r.tag,
        columns: r.columns.into_iter().map(|c| pb::Column { name: c.name, r#type: data_type_to_pb(c.data_type) as i32 }).collect(),
        rows: r.rows.into_iter().map(|row| pb::Row { values: row.into_iter().map(value_to_pb).collect() }).collect(),
        rows_affected: r.rows_affected,
    }
}

#[tonic::async_trait]
impl pb::tessera_server::Tessera for TesseraService {
    async fn execute(&self, request: Request<pb::ExecuteRequest>) -> Result<Response<pb::ExecuteResponse>, Status> {
        let request = request.into_inner();
        // The statements run in a task of their own: a client that goes away
        // must not cancel a commit protocol halfway (between PREPARE and the
        // decision, that would leave participants waiting on a transaction
        // the coordinator still lists as in progress).
        let engine = self.engine.clone();
        let session = (!request.session_id.is_empty()).then(|| self.sessions.get(&request.session_id));
        let protocol = match pb::Protocol::try_from(request.protocol) {
            Ok(pb::Protocol::Unspecified) => None,
            Ok(pb::Protocol::TwoPhaseCommit) => Some(Protocol::TwoPhase),
            Ok(pb::Protocol::Saga) => Some(Protocol::Saga),
            Err(_) => return Err(Status::invalid_argument(format!("unknown transaction protocol {}", request.protocol))),
        };
        let task = tokio::spawn(async move {
            match session {
                Some(shared) => {
                    let mut session = shared.lock_owned().await;
                    engine.execute_with(&mut session, &request.sql, protocol).await
                }
                None => {
                    // No session: a transaction must end within this call.
                    let mut session = Session::default();
                    let results = engine.execute_with(&mut session, &request.sql, protocol).await;
                    if let Some(txn) = session.txn.take() {
                        engine.txns().rollback(txn).await;
                    }
                    results
                }
            }
        });
        let results = task.await.map_err(|e| Status::internal(format!("statement task failed: {e}")))?;
        let results = results.map_err(|e| {
            tracing::debug!(error = %e, "statement failed");
            Status::from(e)
        })?;
        Ok(Response::new(pb::ExecuteResponse { results: results.into_iter().map(result_to_pb).collect() }))
    }

    async fn cluster_status(&self, _request: Request<pb::ClusterStatusRequest>) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let shards = self.engine.shards();
        let checks = shards.groups().into_iter().map(|(id, address)| async move {
            let mut status = pb::ShardGroupStatus { id, address, ..Default::default() };
            match shards.get(id) {
                Ok(client) => match client.status().await {
                    Ok(s) => {
                        status.reachable = true;
                        status.active_transactions = s.active_transactions;
                        status.prepared_transactions = s.prepared_transactions;
                        status.locks_held = s.locks_held;
                        status.wal_syncs = s.wal_syncs;
                        status.synced_writes = s.synced_writes;
                    }
                    Err(e) => status.error = e.to_string(),
                },
                Err(e) => status.error = e.to_string(),
            }
            status
        });
        let shard_groups = futures::future::join_all(checks).await;
        let (decision_log_syncs, one_phase_commits, two_phase_commits) = self.engine.txns().stats();
        let sagas = self.engine.sagas().stats();
        Ok(Response::new(pb::ClusterStatusResponse {
            shard_groups,
            decision_log_syncs,
            one_phase_commits,
            two_phase_commits,
            sagas_committed: sagas.committed,
            sagas_rolled_back: sagas.rolled_back,
            compensations_run: sagas.compensations,
            sagas_parked: sagas.parked,
        }))
    }

    async fn list_transactions(&self, _request: Request<pb::ListTransactionsRequest>) -> Result<Response<pb::ListTransactionsResponse>, Status> {
        let transactions = self
            .engine
            .txns()
            .list()
            .into_iter()
            .map(|t| pb::TransactionInfo {
                age_ms: t.started.elapsed().as_millis() as u64,
                txn_id: t.id,
                state: t.state.into(),
                participants: t.participants.into_iter().map(|(shard_group, phase)| pb::TransactionParticipant { shard_group, phase: phase.into() }).collect(),
            })
            .collect();
        Ok(Response::new(pb::ListTransactionsResponse { transactions }))
    }

    async fn list_sagas(&self, _request: Request<pb::ListSagasRequest>) -> Result<Response<pb::ListSagasResponse>, Status> {
        Ok(Response::new(pb::ListSagasResponse { sagas: self.engine.sagas().list().iter().map(saga_to_pb).collect() }))
    }

    async fn get_saga(&self, request: Request<pb::GetSagaRequest>) -> Result<Response<pb::Saga>, Status> {
        Ok(Response::new(saga_to_pb(&self.engine.sagas().get(&request.into_inner().saga_id)?)))
    }

    async fn resume_saga(&self, request: Request<pb::ResumeSagaRequest>) -> Result<Response<pb::Saga>, Status> {
        let sagas = self.engine.sagas().clone();
        let id = request.into_inner().saga_id;
        // In a task of its own: the compensations go on if the caller leaves.
        let record = tokio::spawn(async move { sagas.resume(&id).await }).await.map_err(|e| Status::internal(format!("saga task failed: {e}")))??;
        Ok(Response::new(saga_to_pb(&record)))
    }
}

fn saga_to_pb(r: &SagaRecord) -> pb::Saga {
    pb::Saga {
        saga_id: r.id.clone(),
        state: r.state.name().into(),
        reason: r.reason.clone().unwrap_or_default(),
        statements: r.statements.iter().map(|s| s.sql.clone()).collect(),
        started_us: r.started_us,
        finished_us: r.finished_us.unwrap_or(0),
        steps: r
            .steps
            .iter()
            .enumerate()
            .map(|(n, s)| pb::SagaStep {
                number: n as u32 + 1,
                statement: s.statement as u32 + 1,
                shard_group: s.group,
                state: s.state.name().into(),
                rows: s.rows,
                attempts: s.attempts,
                started_us: s.started_us.unwrap_or(0),
                finished_us: s.finished_us.unwrap_or(0),
                error: s.error.clone().unwrap_or_default(),
                compensation: s.compensation.clone(),
                compensation_state: s.comp_state.name().into(),
                compensation_attempts: s.comp_attempts,
                compensation_started_us: s.comp_started_us.unwrap_or(0),
                compensation_finished_us: s.comp_finished_us.unwrap_or(0),
                compensation_error: s.comp_error.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

/// Answers participants asking for the outcome of a prepared transaction.
pub struct ResolverService {
    engine: Arc<Engine>,
}

impl ResolverService {
    pub fn new(engine: Arc<Engine>) -> ResolverService {
        ResolverService { engine }
    }
}

#[tonic::async_trait]
impl shard_pb::resolver_server::Resolver for ResolverService {
    async fn outcome(&self, request: Request<shard_pb::OutcomeRequest>) -> Result<Response<shard_pb::OutcomeResponse>, Status> {
        let id = request.into_inner().txn_id;
        let outcome = match self.engine.txns().outcome(&id)? {
            Outcome::Committed => shard_pb::Outcome::Committed,
            Outcome::Aborted => shard_pb::Outcome::Aborted,
            Outcome::InProgress => shard_pb::Outcome::InProgress,
        };
        tracing::debug!(txn = %id, ?outcome, "a participant asked for an outcome");
        Ok(Response::new(shard_pb::OutcomeResponse { outcome: outcome as i32 }))
    }
}
