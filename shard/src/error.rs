//! The shard's errors, and their one mapping to gRPC statuses.

use tessera_model::sqlstate;
use tessera_proto::SQLSTATE_METADATA_KEY;
use tessera_storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// An INSERT found the key already present. Carries the row key.
    #[error("duplicate key")]
    AlreadyExists { key: Vec<u8> },
    /// A lock conflict (wounded by an older transaction, or a lock wait
    /// timeout): retry the transaction.
    #[error("could not obtain lock: transaction {holder} holds it ({reason}); retry the transaction")]
    Conflict { holder: String, reason: &'static str },
    /// The transaction is unknown here or not in the right phase.
    #[error("{0}")]
    TxnState(String),
    /// The request itself is malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A filter could not be evaluated.
    #[error("{message}")]
    Eval { message: String, sqlstate: &'static str },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The node may not serve this request now: an old epoch, a replica
    /// asked to write, a primary without a lease. The coordinator routes
    /// elsewhere.
    #[error("{0}")]
    Fenced(String),
    /// The request was carried out here but may not be acknowledged: sync
    /// replicas did not confirm it in time, or the node lost its epoch or
    /// lease while it ran. Its outcome is unknown to the caller (08007).
    #[error("{0}")]
    NotAcknowledged(String),
    /// A replica read found the replica staler than the request allows.
    #[error("{0}")]
    TooStale(String),
    /// REPEATABLE READ: a row this transaction locks to write was changed
    /// by a transaction that committed after its snapshot.
    #[error("could not serialize access due to concurrent update: the row was changed at timestamp {committed}, after this transaction's snapshot {snapshot}; retry the transaction")]
    WriteConflict { committed: u64, snapshot: u64 },
    /// A read below the garbage-collection horizon: the versions it needs
    /// may be gone.
    #[error("snapshot too old: the read at timestamp {read_ts} is below this node's garbage-collection horizon {horizon}")]
    SnapshotTooOld { read_ts: u64, horizon: u64 },
    /// A snapshot read waited for a prepared transaction's decision longer
    /// than the lock timeout (its coordinator is unreachable).
    #[error("a read at timestamp {read_ts} waited too long for the decision of prepared transaction {txn}; retry the read")]
    Unresolved { txn: String, read_ts: u64 },
}

pub type Result<T> = std::result::Result<T, ShardError>;

impl ShardError {
    /// True when retrying the whole transaction may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ShardError::Conflict { .. } | ShardError::WriteConflict { .. })
    }

    fn sqlstate(&self) -> &'static str {
        match self {
            ShardError::AlreadyExists { .. } => sqlstate::UNIQUE_VIOLATION,
            ShardError::Conflict { .. } => sqlstate::SERIALIZATION_FAILURE,
            ShardError::TxnState(_) => sqlstate::IN_FAILED_SQL_TRANSACTION,
            ShardError::InvalidRequest(_) => sqlstate::PROTOCOL_VIOLATION,
            ShardError::Eval { sqlstate, .. } => sqlstate,
            ShardError::Storage(e) if e.fault == tessera_storage::StorageFault::DiskFull => sqlstate::DISK_FULL,
            ShardError::Storage(_) => sqlstate::IO_ERROR,
            ShardError::Corrupt(_) => sqlstate::DATA_CORRUPTED,
            ShardError::Fenced(_) => sqlstate::CONNECTION_FAILURE,
            ShardError::NotAcknowledged(_) => sqlstate::TRANSACTION_RESOLUTION_UNKNOWN,
            ShardError::TooStale(_) => sqlstate::REPLICA_TOO_STALE,
            ShardError::Unresolved { .. } => sqlstate::LOCK_NOT_AVAILABLE,
            ShardError::SnapshotTooOld { .. } => sqlstate::SNAPSHOT_TOO_OLD,
            ShardError::WriteConflict { .. } => sqlstate::SERIALIZATION_FAILURE,
        }
    }
}

impl From<ShardError> for tonic::Status {
    fn from(e: ShardError) -> tonic::Status {
        let code = match &e {
            ShardError::AlreadyExists { .. } => tonic::Code::AlreadyExists,
            ShardError::Conflict { .. } => tonic::Code::Aborted,
            ShardError::TxnState(_) => tonic::Code::FailedPrecondition,
            ShardError::InvalidRequest(_) | ShardError::Eval { .. } => tonic::Code::InvalidArgument,
            ShardError::Storage(_) | ShardError::Corrupt(_) => tonic::Code::Internal,
            ShardError::Fenced(_) | ShardError::NotAcknowledged(_) => tonic::Code::Unavailable,
            ShardError::TooStale(_) => tonic::Code::OutOfRange,
            ShardError::Unresolved { .. } => tonic::Code::ResourceExhausted,
            ShardError::SnapshotTooOld { .. } => tonic::Code::FailedPrecondition,
            ShardError::WriteConflict { .. } => tonic::Code::Aborted,
        };
        let details = match &e {
            ShardError::AlreadyExists { key } => key.clone(),
            _ => Vec::new(),
        };
        let mut status = tonic::Status::with_details(code, e.to_string(), details.into());
        status.metadata_mut().insert(SQLSTATE_METADATA_KEY, e.sqlstate().parse().expect("ASCII SQLSTATE"));
        status
    }
}
