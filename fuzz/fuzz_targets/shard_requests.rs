//! A run of shard requests from bytes, as a shard node receives them: each
//! is decoded with prost (as tonic does), converted with the shard's wire
//! decoders and carried out by a participant on the in-memory engine (so
//! filters are evaluated against stored rows and writes are locked,
//! prepared and committed). Refusing a request is fine; a panic is a bug.
//!
//! Input: records of one kind byte, a two-byte length and that many bytes
//! of the request's protobuf encoding.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tessera_model::data::row::encode_row;
use tessera_model::data::Value;
use tessera_model::wire;
use tessera_proto::shard as pb;
use tessera_shard::txn::{Participant, ScanSpec, TxnLimits};
use tessera_storage::memory::MemoryEngine;
use tessera_storage::{Engine, Space, Write};

const LIMITS: TxnLimits =
    TxnLimits {
        lock_timeout: Duration::from_millis(1),
        idle_timeout: Duration::from_secs(60),
        group_commit_window: Duration::from_millis(0),
        intent_wait: Duration::from_millis(1),
    };

/// A participant holding a few committed rows of table 1.
fn participant() -> Arc<Participant> {
    let engine = MemoryEngine::default();
    let rows = (0..4i64).map(|i| Write {
        space: Space::Data,
        key: tessera_model::data::keys::row_key(1, &Value::Int(i)),
        value: Some(encode_row(&[Value::Int(i), Value::Text(format!("row {i}")), Value::Double(i as f64 / 3.0), Value::Null])),
    });
    engine.apply(rows.collect(), true).expect("the memory engine takes writes");
    Arc::new(Participant::open(Arc::new(engine), LIMITS).expect("the participant opens"))
}

/// Carries out one request the way the shard service does.
async fn serve(p: &Arc<Participant>, kind: u8, bytes: &[u8]) {
    match kind % 7 {
        0 => {
            let Ok(req) = pb::GetRequest::decode(bytes) else { return };
            let txn = req.txn.map(wire::txn_from_pb);
            let _ = p.get(req.keys, txn.as_ref(), req.lock, req.read_ts).await;
        }
        1 => {
            let Ok(req) = pb::ScanRequest::decode(bytes) else { return };
            let Ok(filter) = req.filter.map(wire::expr_from_pb).transpose() else { return };
            let spec = ScanSpec {
                start: req.start,
                end: req.end,
                limit: req.limit,
                filter,
                txn: req.txn.map(wire::txn_from_pb),
                lock: req.lock,
                read_ts: req.read_ts,
            };
            let _ = p.scan(spec).await;
        }
        2 => {
            let Ok(req) = pb::WriteRequest::decode(bytes) else { return };
            let Some(txn) = req.txn.map(wire::txn_from_pb) else { return };
            let Ok(mutations) = req.mutations.into_iter().map(wire::mutation_from_pb).collect::<Result<Vec<_>, _>>() else { return };
            let _ = p.write(&txn, mutations).await;
        }
        3 => {
            let Ok(req) = pb::TxnRequest::decode(bytes) else { return };
            let Some(txn) = req.txn.map(wire::txn_from_pb) else { return };
            let _ = p.prepare(&txn, req.min_ts).await;
        }
        4 => {
            let Ok(req) = pb::CommitRequest::decode(bytes) else { return };
            let Some(txn) = req.txn.map(wire::txn_from_pb) else { return };
            let Ok(mutations) = req.mutations.into_iter().map(wire::mutation_from_pb).collect::<Result<Vec<_>, _>>() else { return };
            let _ = p.commit(&txn, req.one_phase, mutations, req.lazy, req.commit_ts).await;
        }
        5 => {
            let Ok(req) = pb::TxnRequest::decode(bytes) else { return };
            let Some(txn) = req.txn.map(wire::txn_from_pb) else { return };
            let _ = p.abort(&txn.id).await;
        }
        _ => {
            let Ok(req) = pb::DeleteRangeRequest::decode(bytes) else { return };
            let _ = p.delete_range(req.start, req.end).await;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime"));
    runtime.block_on(async {
        let p = participant();
        let mut rest = data;
        while rest.len() >= 3 {
            let kind = rest[0];
            let len = (u16::from_be_bytes([rest[1], rest[2]]) as usize).min(rest.len() - 3);
            serve(&p, kind, &rest[3..3 + len]).await;
            rest = &rest[3 + len..];
        }
    });
});
