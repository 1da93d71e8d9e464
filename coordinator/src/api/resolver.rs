//! The internal `tessera.shard.v1.Resolver` service: participants holding a
//! prepared transaction ask for its outcome. Calls carry the cluster secret.

use crate::exec::Engine;
use crate::txn::Outcome;
use std::sync::Arc;
use tessera_proto::shard as pb;
use tonic::{Request, Response, Status};

pub struct ResolverService {
    engine: Arc<Engine>,
}

impl ResolverService {
    pub fn new(engine: Arc<Engine>) -> ResolverService {
        ResolverService { engine }
    }
}

#[tonic::async_trait]
impl pb::resolver_server::Resolver for ResolverService {
    async fn outcome(&self, request: Request<pb::OutcomeRequest>) -> Result<Response<pb::OutcomeResponse>, Status> {
        let id = request.into_inner().txn_id;
        let (outcome, commit_ts) = self.engine.txns().outcome(&id)?;
        let outcome = match outcome {
            Outcome::Committed => pb::Outcome::Committed,
            Outcome::Aborted => pb::Outcome::Aborted,
            Outcome::InProgress => pb::Outcome::InProgress,
        };
        tracing::debug!(txn = %id, ?outcome, "a participant asked for an outcome");
        Ok(Response::new(pb::OutcomeResponse { outcome: outcome as i32, commit_ts }))
    }
}
