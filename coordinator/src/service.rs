//! The public gRPC service (`tessera.v1.Tessera`): converts requests and
//! results between protobuf and the SQL engine's types.

use crate::sql::{Engine, QueryResult};
use std::sync::Arc;
use tessera_proto::v1 as pb;
use tessera_shard::data::{DataType, Value};
use tonic::{Request, Response, Status};

pub struct TesseraService {
    engine: Arc<Engine>,
}

impl TesseraService {
    pub fn new(engine: Arc<Engine>) -> TesseraService {
        TesseraService { engine }
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
        let sql = request.into_inner().sql;
        let results = self.engine.execute(&sql).await.map_err(|e| {
            tracing::debug!(error = %e, "statement failed");
            Status::from(e)
        })?;
        Ok(Response::new(pb::ExecuteResponse { results: results.into_iter().map(result_to_pb).collect() }))
    }

    async fn cluster_status(&self, _request: Request<pb::ClusterStatusRequest>) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let shards = self.engine.shards();
        let checks = shards.groups().into_iter().map(|(id, address)| async move {
            let outcome = match shards.get(id) {
                Ok(client) => client.status().await.map(|_| ()),
                Err(e) => Err(e),
            };
            pb::ShardGroupStatus { id, address, reachable: outcome.is_ok(), error: outcome.err().map(|e| e.to_string()).unwrap_or_default() }
        });
        let shard_groups = futures::future::join_all(checks).await;
        Ok(Response::new(pb::ClusterStatusResponse { shard_groups }))
    }
}
