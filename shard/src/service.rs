//! The shard's gRPC service: checks each request against the node's role,
//! epoch and lease ([`Node::admit`]), converts it to domain types and calls
//! the [`Participant`]. A write is acknowledged only if the node is still
//! the primary of the epoch it admitted the write in ([`Node::confirm`]).

use crate::error::ShardError;
use crate::replication::{Access, Node};
use crate::txn::{Participant, ScanSpec, TxnContext};
use std::sync::Arc;
use std::time::Duration;
use tessera_model::wire;
use tessera_proto::shard as pb;
use tonic::{Request, Response, Status};

pub struct ShardService {
    participant: Arc<Participant>,
    node: Arc<Node>,
    data_dir: String,
}

impl ShardService {
    pub fn new(participant: Arc<Participant>, node: Arc<Node>, data_dir: String) -> ShardService {
        ShardService { participant, node, data_dir }
    }
}

fn invalid(message: impl Into<String>) -> Status {
    ShardError::InvalidRequest(message.into()).into()
}

fn required_txn(txn: Option<pb::TxnContext>) -> Result<TxnContext, Status> {
    txn.map(wire::txn_from_pb).ok_or_else(|| invalid("transaction context is missing"))
}

fn rows_to_pb(rows: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<pb::KeyValue> {
    rows.into_iter().map(|(key, value)| pb::KeyValue { key, value }).collect()
}

/// The group epoch a request carries, if any.
fn epoch<T>(request: &Request<T>) -> Result<Option<u64>, Status> {
    match request.metadata().get(tessera_proto::EPOCH_METADATA_KEY) {
        None => Ok(None),
        Some(v) => v.to_str().ok().and_then(|s| s.parse().ok()).map(Some).ok_or_else(|| invalid("the epoch metadata is not a number")),
    }
}

/// What a read may be served from.
fn read_access(txn: bool, replica: Option<&pb::ReplicaRead>) -> Access {
    match (txn, replica) {
        (false, Some(r)) => Access::ReplicaRead { max_staleness: (r.max_staleness_ms > 0).then(|| Duration::from_millis(r.max_staleness_ms)) },
        (true, _) => Access::Write,
        (false, None) => Access::Read,
    }
}

impl ShardService {
    /// Admits a transactional request, runs it, and confirms the node may
    /// still acknowledge it. The work runs in a task of its own, to its end
    /// even if the caller goes away (its deadline passed, the connection
    /// broke): a COMMIT or ABORT dropped halfway would leave its locks held.
    async fn admitted<R, F, Fut>(&self, epoch: Option<u64>, work: F) -> Result<R, Status>
    where
        F: FnOnce(Arc<Participant>) -> Fut,
        Fut: std::future::Future<Output = Result<R, ShardError>> + Send + 'static,
        R: Send + 'static,
    {
        let ticket = self.node.admit(epoch, Access::Write)?;
        let task = tokio::spawn(tracing::Instrument::in_current_span(work(self.participant.clone())));
        let result = task.await.map_err(|e| Status::internal(format!("request task failed: {e}")))??;
        self.node.confirm(ticket)?;
        Ok(result)
    }
}

#[tonic::async_trait]
impl pb::shard_server::Shard for ShardService {
    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let access = read_access(request.get_ref().txn.is_some(), request.get_ref().replica_read.as_ref());
        let ticket = self.node.admit(epoch(&request)?, access)?;
        let req = request.into_inner();
        if let Some(replica) = &req.replica_read {
            self.node.wait_closed(req.read_ts, Duration::from_millis(replica.wait_ms)).await?;
        }
        let txn = req.txn.map(wire::txn_from_pb);
        let rows = self.participant.get(req.keys, txn.as_ref(), req.lock, req.read_ts).await?;
        if txn.is_some() {
            self.node.confirm(ticket)?;
        }
        Ok(Response::new(pb::GetResponse { rows: rows_to_pb(rows), staleness_ms: self.node.staleness_ms() }))
    }

    async fn scan(&self, request: Request<pb::ScanRequest>) -> Result<Response<pb::ScanResponse>, Status> {
        let access = read_access(request.get_ref().txn.is_some(), request.get_ref().replica_read.as_ref());
        let ticket = self.node.admit(epoch(&request)?, access)?;
        let req = request.into_inner();
        if let Some(replica) = &req.replica_read {
            self.node.wait_closed(req.read_ts, Duration::from_millis(replica.wait_ms)).await?;
        }
        let filter = req.filter.map(wire::expr_from_pb).transpose().map_err(|e| invalid(e.to_string()))?;
        let in_txn = req.txn.is_some();
        let spec =
            ScanSpec { start: req.start, end: req.end, limit: req.limit, filter, txn: req.txn.map(wire::txn_from_pb), lock: req.lock, read_ts: req.read_ts };
        let result = self.participant.scan(spec).await?;
        if in_txn {
            self.node.confirm(ticket)?;
        }
        Ok(Response::new(pb::ScanResponse {
            rows: rows_to_pb(result.rows),
            resume_key: result.resume_key.unwrap_or_default(),
            staleness_ms: self.node.staleness_ms(),
        }))
    }

    async fn write(&self, request: Request<pb::WriteRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let ticket = self.node.admit(epoch(&request)?, Access::Write)?;
        let req = request.into_inner();
        let txn = required_txn(req.txn)?;
        let mutations = req.mutations.into_iter().map(wire::mutation_from_pb).collect::<Result<Vec<_>, _>>().map_err(|e| invalid(e.to_string()))?;
        self.participant.write(&txn, mutations).await?;
        self.node.confirm(ticket)?;
        Ok(Response::new(pb::WriteResponse {}))
    }

    async fn prepare(&self, request: Request<pb::TxnRequest>) -> Result<Response<pb::PrepareResponse>, Status> {
        let epoch = epoch(&request)?;
        let req = request.into_inner();
        let txn = required_txn(req.txn)?;
        let prepare_ts = self.admitted(epoch, move |p| async move { p.prepare(&txn, req.min_ts).await }).await?;
        Ok(Response::new(pb::PrepareResponse { prepare_ts }))
    }

    async fn commit(&self, request: Request<pb::CommitRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let epoch = epoch(&request)?;
        let req = request.into_inner();
        let txn = required_txn(req.txn)?;
        let mutations = req.mutations.into_iter().map(wire::mutation_from_pb).collect::<Result<Vec<_>, _>>().map_err(|e| invalid(e.to_string()))?;
        let commit_ts = self.admitted(epoch, move |p| async move { p.commit(&txn, req.one_phase, mutations, req.lazy, req.commit_ts).await }).await?;
        Ok(Response::new(pb::TxnResponse { commit_ts }))
    }

    async fn abort(&self, request: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let epoch = epoch(&request)?;
        let txn = required_txn(request.into_inner().txn)?;
        self.admitted(epoch, move |p| async move { p.abort(&txn.id).await }).await?;
        Ok(Response::new(pb::TxnResponse { commit_ts: 0 }))
    }

    async fn sync_wal(&self, request: Request<pb::SyncWalRequest>) -> Result<Response<pb::SyncWalResponse>, Status> {
        tessera_model::failpoint::hit("shard.sync_wal").await;
        self.admitted(epoch(&request)?, |p| async move { p.sync_wal().await }).await?;
        Ok(Response::new(pb::SyncWalResponse {}))
    }

    async fn delete_range(&self, request: Request<pb::DeleteRangeRequest>) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let epoch = epoch(&request)?;
        let req = request.into_inner();
        self.admitted(epoch, move |p| async move { p.delete_range(req.start, req.end).await }).await?;
        Ok(Response::new(pb::DeleteRangeResponse {}))
    }

    async fn status(&self, _request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let (active, prepared) = self.participant.counts();
        Ok(Response::new(pb::StatusResponse {
            node_id: self.node.node_id.clone(),
            data_dir: self.data_dir.clone(),
            active_transactions: active as u64,
            prepared_transactions: prepared as u64,
            locks_held: self.participant.locks_held() as u64,
            wal_syncs: self.participant.engine().wal_syncs(),
            synced_writes: self.participant.synced_writes(),
            role: self.node.role().to_pb() as i32,
            epoch: self.node.epoch(),
            applied_seq: self.node.log().last().0,
        }))
    }

    async fn heartbeat(&self, request: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        Ok(Response::new(self.node.heartbeat(request.into_inner()).await?))
    }
}
