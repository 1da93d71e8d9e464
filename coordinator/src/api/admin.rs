//! The `tessera.v1.Admin` service: cluster status, the shard map,
//! transactions and sagas.

use super::convert::{group_to_pb, saga_to_pb};
use crate::catalog::Partitioning;
use crate::exec::Engine;
use crate::session::Sessions;
use std::sync::Arc;
use tessera_proto::v1 as pb;
use tonic::{Request, Response, Status};

pub struct AdminService {
    engine: Arc<Engine>,
    sessions: Arc<Sessions>,
}

impl AdminService {
    pub fn new(engine: Arc<Engine>, sessions: Arc<Sessions>) -> AdminService {
        AdminService { engine, sessions }
    }

    /// Every shard group with its members as the heartbeats see them.
    fn groups_pb(&self) -> Vec<pb::ShardGroup> {
        let failover = self.engine.failover();
        self.engine.shards().records().into_iter().map(|(id, record)| group_to_pb(id, &record, failover.members(id))).collect()
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
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
        let failover = self.engine.failover();
        let groups = self.groups_pb();
        let failovers = failover
            .events()
            .into_iter()
            .map(|e| pb::FailoverEvent { shard_group: e.group, from: e.from, to: e.to, epoch: e.epoch, at_us: e.at_us, reason: e.reason })
            .collect();
        Ok(Response::new(pb::ClusterStatusResponse {
            groups,
            failovers,
            shard_groups,
            decision_log_syncs,
            one_phase_commits,
            two_phase_commits,
            sagas_committed: sagas.committed,
            sagas_rolled_back: sagas.rolled_back,
            compensations_run: sagas.compensations,
            sagas_parked: sagas.parked,
            sessions: self.sessions.count() as u64,
        }))
    }

    async fn shard_map(&self, _request: Request<pb::ShardMapRequest>) -> Result<Response<pb::ShardMapResponse>, Status> {
        let shard_groups = self.groups_pb();
        let tables = self
            .engine
            .catalog()
            .tables()
            .into_iter()
            .map(|t| {
                let (partitioning, split_points, virtual_nodes) = match &t.def.partitioning {
                    Partitioning::Range { split_points } => ("range", split_points.iter().map(|v| v.to_string()).collect(), 0),
                    Partitioning::Hash { virtual_nodes } => ("hash", Vec::new(), *virtual_nodes),
                };
                pb::TablePartitioning {
                    table: t.def.name.clone(),
                    partitioning: partitioning.into(),
                    split_points,
                    virtual_nodes,
                    shard_groups: t.def.groups.clone(),
                }
            })
            .collect();
        Ok(Response::new(pb::ShardMapResponse { shard_groups, tables }))
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
                state: t.state.name().into(),
                participants: t
                    .participants
                    .into_iter()
                    .map(|(shard_group, phase)| pb::TransactionParticipant { shard_group, phase: phase.name().into() })
                    .collect(),
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

    async fn switchover(&self, request: Request<pb::SwitchoverRequest>) -> Result<Response<pb::ShardGroup>, Status> {
        let req = request.into_inner();
        let failover = self.engine.failover().clone();
        let target = (!req.target.is_empty()).then_some(req.target);
        // In a task of its own: a switchover half done is not left to the caller.
        let record = tokio::spawn(async move { failover.switchover(req.shard_group, target.as_deref()).await })
            .await
            .map_err(|e| Status::internal(format!("switchover task failed: {e}")))??;
        Ok(Response::new(group_to_pb(req.shard_group, &record, self.engine.failover().members(req.shard_group))))
    }

    async fn resume_saga(&self, request: Request<pb::ResumeSagaRequest>) -> Result<Response<pb::Saga>, Status> {
        let sagas = self.engine.sagas().clone();
        let id = request.into_inner().saga_id;
        // In a task of its own: the compensations go on if the caller leaves.
        let record = tokio::spawn(async move { sagas.resume(&id).await }).await.map_err(|e| Status::internal(format!("saga task failed: {e}")))??;
        Ok(Response::new(saga_to_pb(&record)))
    }
}
