//! The shard's gRPC service: validates requests, converts them to domain
//! types and calls the [`Participant`].

use crate::error::ShardError;
use crate::txn::{Participant, ScanSpec, TxnContext};
use crate::wire;
use std::sync::Arc;
use tessera_proto::shard as pb;
use tonic::{Request, Response, Status};

pub struct ShardService {
    participant: Arc<Participant>,
    node_id: String,
    data_dir: String,
}

impl ShardService {
    pub fn new(participant: Arc<Participant>, node_id: String, data_dir: String) -> ShardService {
        ShardService { participant, node_id, data_dir }
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

#[tonic::async_trait]
impl pb::shard_server::Shard for ShardService {
    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let req = request.into_inner();
        let txn = req.txn.map(wire::txn_from_pb);
        let rows = self.participant.get(req.keys, txn.as_ref(), req.lock).await?;
        Ok(Response::new(pb::GetResponse { rows: rows_to_pb(rows) }))
    }

    async fn scan(&self, request: Request<pb::ScanRequest>) -> Result<Response<pb::ScanResponse>, Status> {
        let req = request.into_inner();
        let filter = req.filter.map(wire::expr_from_pb).transpose().map_err(invalid)?;
        let spec = ScanSpec { start: req.start, end: req.end, limit: req.limit, filter, txn: req.txn.map(wire::txn_from_pb), lock: req.lock };
        let result = self.participant.scan(spec).await?;
        Ok(Response::new(pb::ScanResponse { rows: rows_to_pb(result.rows), resume_key: result.resume_key.unwrap_or_default() }))
    }

    async fn write(&self, request: Request<pb::WriteRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let req = request.into_inner();
        let txn = required_txn(req.txn)?;
        let mutations = req.mutations.into_iter().map(wire::mutation_from_pb).collect::<Result<Vec<_>, _>>().map_err(invalid)?;
        self.participant.write(&txn, mutations).await?;
        Ok(Response::new(pb::WriteResponse {}))
    }

    async fn prepare(&self, request: Request<pb::TxnRequest>) -> Result<Response<pb::PrepareResponse>, Status> {
        let txn = required_txn(request.into_inner().txn)?;
        self.participant.prepare(&txn).await?;
        Ok(Response::new(pb::PrepareResponse {}))
    }

    async fn commit(&self, request: Request<pb::CommitRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let req = request.into_inner();
        let txn = required_txn(req.txn)?;
        let mutations = req.mutations.into_iter().map(wire::mutation_from_pb).collect::<Result<Vec<_>, _>>().map_err(invalid)?;
        self.participant.commit(&txn, req.one_phase, mutations, req.lazy).await?;
        Ok(Response::new(pb::TxnResponse {}))
    }

    async fn abort(&self, request: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let txn = required_txn(request.into_inner().txn)?;
        self.participant.abort(&txn.id).await?;
        Ok(Response::new(pb::TxnResponse {}))
    }

    async fn sync_wal(&self, _request: Request<pb::SyncWalRequest>) -> Result<Response<pb::SyncWalResponse>, Status> {
        self.participant.sync_wal().await?;
        Ok(Response::new(pb::SyncWalResponse {}))
    }

    async fn delete_range(&self, request: Request<pb::DeleteRangeRequest>) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let req = request.into_inner();
        self.participant.delete_range(req.start, req.end).await?;
        Ok(Response::new(pb::DeleteRangeResponse {}))
    }

    async fn status(&self, _request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let (active, prepared) = self.participant.counts();
        Ok(Response::new(pb::StatusResponse {
            node_id: self.node_id.clone(),
            data_dir: self.data_dir.clone(),
            active_transactions: active as u64,
            prepared_transactions: prepared as u64,
            locks_held: self.participant.locks_held() as u64,
            wal_syncs: self.participant.engine().wal_syncs(),
            synced_writes: self.participant.synced_writes(),
        }))
    }
}
