//! Per-transaction state on a participant and its durable prepared record.

use prost::Message;
use std::collections::BTreeMap;
use tessera_model::txn::TxnContext;
use tessera_proto::shard as pb;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Active,
    Prepared,
}

pub struct TxnState {
    pub id: String,
    pub timestamp: u64,
    pub phase: Phase,
    /// Buffered writes: `Some` puts, `None` deletes.
    pub writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Keys this transaction holds locks on.
    pub locked: Vec<Vec<u8>>,
    pub last_active: Instant,
    /// The coordinator that decides the outcome (known once prepared).
    pub coordinator: String,
    /// Set by PREPARE: the transaction commits at or above it, so snapshot
    /// reads at or above it wait for the decision.
    pub prepare_ts: Option<u64>,
}

impl TxnState {
    pub fn new(txn: &TxnContext) -> TxnState {
        TxnState {
            id: txn.id.clone(),
            timestamp: txn.timestamp,
            phase: Phase::Active,
            writes: BTreeMap::new(),
            locked: Vec::new(),
            last_active: Instant::now(),
            coordinator: txn.coordinator.clone(),
            prepare_ts: None,
        }
    }

    /// The durable record written by PREPARE.
    pub fn encode_prepared(&self) -> Vec<u8> {
        let mutations = self
            .writes
            .iter()
            .map(|(k, v)| pb::Mutation {
                key: k.clone(),
                op: Some(match v {
                    Some(v) => pb::mutation::Op::Put(v.clone()),
                    None => pb::mutation::Op::Delete(true),
                }),
            })
            .collect();
        pb::PreparedTxn {
            txn: Some(pb::TxnContext { txn_id: self.id.clone(), timestamp: self.timestamp, begin: false, coordinator: self.coordinator.clone() }),
            mutations,
            prepare_ts: self.prepare_ts.unwrap_or_default(),
        }
        .encode_to_vec()
    }

    /// Rebuilds a prepared transaction from its record; it holds locks on
    /// every key it writes.
    pub fn decode_prepared(bytes: &[u8]) -> Result<TxnState, String> {
        let record = pb::PreparedTxn::decode(bytes).map_err(|e| e.to_string())?;
        let txn = record.txn.ok_or("record has no transaction")?;
        if record.prepare_ts == 0 {
            return Err("record has no prepare timestamp (written by storage format 1)".into());
        }
        let mut writes = BTreeMap::new();
        for m in record.mutations {
            let value = match m.op {
                Some(pb::mutation::Op::Put(v)) | Some(pb::mutation::Op::Insert(v)) => Some(v),
                Some(pb::mutation::Op::Delete(_)) => None,
                None => return Err("mutation without an operation".into()),
            };
            writes.insert(m.key, value);
        }
        let locked = writes.keys().cloned().collect();
        Ok(TxnState {
            id: txn.txn_id,
            timestamp: txn.timestamp,
            phase: Phase::Prepared,
            writes,
            locked,
            last_active: Instant::now(),
            coordinator: txn.coordinator,
            prepare_ts: Some(record.prepare_ts),
        })
    }
}
