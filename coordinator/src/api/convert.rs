//! Conversions between the public API's protobuf types and domain types.

use crate::result::{OutputColumn, QueryResult};
use crate::saga::SagaRecord;
use tessera_model::data::{DataType, Value};
use tessera_model::txn::Protocol;
use tessera_proto::v1 as pb;
use tonic::Status;

pub fn data_type_to_pb(t: DataType) -> pb::DataType {
    match t {
        DataType::Int => pb::DataType::Int,
        DataType::BigInt => pb::DataType::Bigint,
        DataType::Text => pb::DataType::Text,
        DataType::Boolean => pb::DataType::Boolean,
        DataType::Double => pb::DataType::Double,
    }
}

pub fn columns_to_pb(columns: Vec<OutputColumn>) -> Vec<pb::Column> {
    columns.into_iter().map(|c| pb::Column { name: c.name, r#type: data_type_to_pb(c.data_type) as i32 }).collect()
}

pub fn row_to_pb(row: Vec<Value>) -> pb::Row {
    pb::Row { values: row.into_iter().map(pb::Value::from).collect() }
}

pub fn result_to_pb(r: QueryResult) -> pb::StatementResult {
    pb::StatementResult {
        tag: r.tag,
        columns: columns_to_pb(r.columns),
        rows: r.rows.into_iter().map(row_to_pb).collect(),
        rows_affected: r.rows_affected,
        staleness_ms: r.staleness_ms,
    }
}

/// The protocol a request asks for; `None` keeps the session's.
pub fn protocol_from_pb(protocol: i32) -> Result<Option<Protocol>, Status> {
    match pb::Protocol::try_from(protocol) {
        Ok(pb::Protocol::Unspecified) => Ok(None),
        Ok(pb::Protocol::TwoPhaseCommit) => Ok(Some(Protocol::TwoPhaseCommit)),
        Ok(pb::Protocol::Saga) => Ok(Some(Protocol::Saga)),
        Err(_) => Err(Status::invalid_argument(format!("unknown transaction protocol {protocol}"))),
    }
}

pub fn saga_to_pb(r: &SagaRecord) -> pb::Saga {
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

/// A shard group as the admin API shows it.
pub fn group_to_pb(id: crate::catalog::ShardGroupId, record: &crate::catalog::GroupRecord, members: Vec<crate::failover::MemberStatus>) -> pb::ShardGroup {
    pb::ShardGroup {
        id,
        epoch: record.epoch,
        replication: record.mode.name().into(),
        sync_replicas: record.sync_replicas,
        members: members
            .into_iter()
            .map(|m| pb::ShardMember {
                address: m.address,
                role: m.role.into(),
                reachable: m.reachable,
                applied_seq: m.applied_seq,
                lag_records: m.lag_records,
                staleness_ms: m.staleness_ms,
                error: m.error.unwrap_or_default(),
                circuit: m.circuit.into(),
                in_flight: m.in_flight as u32,
            })
            .collect(),
    }
}
