//! The coordinator's errors. Each kind's SQLSTATE and gRPC status code are
//! assigned here; the codes themselves are the one table in
//! [`tessera_model::sqlstate`].

use tessera_model::sqlstate;
use tessera_proto::{SAGA_METADATA_KEY, SQLSTATE_METADATA_KEY};

#[derive(Debug, Clone, thiserror::Error)]
pub enum CoordError {
    /// Malformed SQL; the message carries the position.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// Valid SQL that Tessera does not implement; names the feature.
    #[error("{0} is not supported")]
    Unsupported(String),
    /// A feature that a later version brings; the message says what to do.
    #[error("{0}")]
    NotYet(String),
    #[error("table \"{0}\" does not exist")]
    UnknownTable(String),
    #[error("table \"{0}\" already exists")]
    TableExists(String),
    #[error("{0}")]
    UnknownColumn(String),
    /// Type mismatch or bad value; SQLSTATE chosen by the caller.
    #[error("{message}")]
    InvalidValue { message: String, sqlstate: &'static str },
    #[error("{0}")]
    NotNullViolation(String),
    #[error("{0}")]
    CheckViolation(String),
    #[error("{0}")]
    UniqueViolation(String),
    /// A shard found an inserted key already present. The statement layer
    /// turns it into a [`CoordError::UniqueViolation`] naming the table's
    /// constraint (see `Engine::execute_statement`).
    #[error("duplicate key value violates unique constraint: Key=({key}) already exists")]
    DuplicateKey { table_id: u32, key: String },
    /// A statement or definition that is wrong as written.
    #[error("{0}")]
    Invalid(String),
    /// Lock timeout or conflict: retry the transaction.
    #[error("{0}")]
    Serialization(String),
    /// A shard group cannot be reached; names the group and its address.
    #[error("{0}")]
    ShardUnavailable(String),
    /// A COMMIT went out and its answer was lost: it may or may not have
    /// been applied (like PostgreSQL's 08007, transaction resolution unknown).
    #[error("{0}")]
    OutcomeUnknown(String),
    /// A shard refused a transaction request (aborted, unknown).
    #[error("{0}")]
    TxnAborted(String),
    /// A statement in a transaction that already failed.
    #[error("current transaction is aborted, commands ignored until end of transaction block")]
    InFailedTransaction,
    /// A statement that may not run inside a transaction block.
    #[error("{0} cannot run inside a transaction block")]
    NotInTransaction(String),
    /// A statement that may not run at this point of a transaction (25001).
    #[error("{0}")]
    ActiveTransaction(String),
    /// A row a saga statement names by primary key is missing or fails the
    /// statement's condition.
    #[error("{0}")]
    NoData(String),
    /// A saga step that arrived after its compensation and was refused.
    #[error("{0}")]
    Fenced(String),
    /// A saga that did not commit: rolled back by its compensations, or
    /// parked for an operator when a compensation kept failing.
    #[error("{message}")]
    /// `cause` is the SQLSTATE of the step failure that rolled a saga back
    /// (a CHECK violation stays 23514, so clients can tell it apart).
    Saga { saga_id: String, message: String, parked: bool, cause: Option<&'static str> },
    /// `limits.max_sessions` are open.
    #[error("{0}")]
    TooManySessions(String),
    /// A request over one of the limits (statement length, result rows,
    /// message size); names the limit.
    #[error("{0}")]
    LimitExceeded(String),
    /// A statement nested deeper than `limits.max_expr_depth` (PostgreSQL's
    /// 54001, statement too complex); names the limit.
    #[error("{0}")]
    TooComplex(String),
    /// A statement ran longer than the session's `statement_timeout`.
    #[error("{0}")]
    StatementTimeout(String),
    /// A gRPC session id that is not open (closed, expired, someone else's).
    #[error("{0}")]
    SessionNotFound(String),
    /// A replica read found every replica staler than the session allows.
    #[error("{0}")]
    ReplicaTooStale(String),
    /// A snapshot older than the garbage-collection horizon (72000).
    #[error("{0}")]
    SnapshotTooOld(String),
    /// A write in a READ ONLY transaction; names the statement.
    #[error("cannot execute {0} in a read-only transaction")]
    ReadOnly(String),
    /// A snapshot read waited too long for a prepared transaction's
    /// decision (its coordinator unreachable); retry the read.
    #[error("{0}")]
    LockNotAvailable(String),
    /// A shard node's storage failed: disk full (53100) or an I/O error
    /// (58030).
    #[error("{message}")]
    Storage { message: String, sqlstate: &'static str },
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, CoordError>;

impl CoordError {
    pub fn invalid_value(message: impl Into<String>, sqlstate: &'static str) -> CoordError {
        CoordError::InvalidValue { message: message.into(), sqlstate }
    }

    /// Prefixes the message with what was going on, keeping the kind.
    pub fn context(self, what: &str) -> CoordError {
        let wrap = |m: String| format!("{what}: {m}");
        match self {
            CoordError::Serialization(m) => CoordError::Serialization(wrap(m)),
            CoordError::ShardUnavailable(m) => CoordError::ShardUnavailable(wrap(m)),
            CoordError::OutcomeUnknown(m) => CoordError::OutcomeUnknown(wrap(m)),
            CoordError::TxnAborted(m) => CoordError::TxnAborted(wrap(m)),
            CoordError::Internal(m) => CoordError::Internal(wrap(m)),
            e @ (CoordError::UniqueViolation(_) | CoordError::DuplicateKey { .. }) => e,
            other => CoordError::TxnAborted(wrap(other.to_string())),
        }
    }

    /// True when retrying the same transaction may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CoordError::Serialization(_))
    }

    /// The PostgreSQL SQLSTATE of this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            CoordError::Syntax(_) => sqlstate::SYNTAX_ERROR,
            CoordError::Unsupported(_) | CoordError::NotYet(_) => sqlstate::FEATURE_NOT_SUPPORTED,
            CoordError::UnknownTable(_) => sqlstate::UNDEFINED_TABLE,
            CoordError::TableExists(_) => sqlstate::DUPLICATE_TABLE,
            CoordError::UnknownColumn(_) => sqlstate::UNDEFINED_COLUMN,
            CoordError::InvalidValue { sqlstate, .. } => sqlstate,
            CoordError::NotNullViolation(_) => sqlstate::NOT_NULL_VIOLATION,
            CoordError::CheckViolation(_) => sqlstate::CHECK_VIOLATION,
            CoordError::UniqueViolation(_) | CoordError::DuplicateKey { .. } => sqlstate::UNIQUE_VIOLATION,
            CoordError::Invalid(_) => sqlstate::INVALID_TABLE_DEFINITION,
            CoordError::Serialization(_) => sqlstate::SERIALIZATION_FAILURE,
            CoordError::ShardUnavailable(_) => sqlstate::CONNECTION_FAILURE,
            CoordError::OutcomeUnknown(_) => sqlstate::TRANSACTION_RESOLUTION_UNKNOWN,
            CoordError::TxnAborted(_) => sqlstate::STATEMENT_COMPLETION_UNKNOWN,
            CoordError::InFailedTransaction => sqlstate::IN_FAILED_SQL_TRANSACTION,
            CoordError::NotInTransaction(_) | CoordError::ActiveTransaction(_) => sqlstate::ACTIVE_SQL_TRANSACTION,
            CoordError::NoData(_) => sqlstate::NO_DATA_FOUND,
            CoordError::Fenced(_) => sqlstate::TRANSACTION_ROLLBACK,
            CoordError::Saga { parked: false, cause, .. } => cause.unwrap_or(sqlstate::TRANSACTION_ROLLBACK),
            CoordError::Saga { parked: true, .. } => sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            CoordError::TooManySessions(_) => sqlstate::TOO_MANY_CONNECTIONS,
            CoordError::LimitExceeded(_) => sqlstate::PROGRAM_LIMIT_EXCEEDED,
            CoordError::TooComplex(_) => sqlstate::STATEMENT_TOO_COMPLEX,
            CoordError::StatementTimeout(_) => sqlstate::QUERY_CANCELED,
            CoordError::SessionNotFound(_) => sqlstate::CONNECTION_DOES_NOT_EXIST,
            CoordError::ReplicaTooStale(_) => sqlstate::REPLICA_TOO_STALE,
            CoordError::ReadOnly(_) => sqlstate::READ_ONLY_SQL_TRANSACTION,
            CoordError::SnapshotTooOld(_) => sqlstate::SNAPSHOT_TOO_OLD,
            CoordError::LockNotAvailable(_) => sqlstate::LOCK_NOT_AVAILABLE,
            CoordError::Storage { sqlstate, .. } => sqlstate,
            CoordError::Internal(_) => sqlstate::INTERNAL_ERROR,
        }
    }

    fn grpc_code(&self) -> tonic::Code {
        match self {
            CoordError::Syntax(_) | CoordError::UnknownColumn(_) | CoordError::InvalidValue { .. } | CoordError::Invalid(_) => tonic::Code::InvalidArgument,
            CoordError::Unsupported(_) | CoordError::NotYet(_) => tonic::Code::Unimplemented,
            CoordError::UnknownTable(_) => tonic::Code::NotFound,
            CoordError::TableExists(_) | CoordError::UniqueViolation(_) | CoordError::DuplicateKey { .. } => tonic::Code::AlreadyExists,
            CoordError::NotNullViolation(_) | CoordError::CheckViolation(_) => tonic::Code::FailedPrecondition,
            CoordError::Serialization(_) | CoordError::TxnAborted(_) => tonic::Code::Aborted,
            CoordError::ShardUnavailable(_) => tonic::Code::Unavailable,
            CoordError::OutcomeUnknown(_) => tonic::Code::Unknown,
            CoordError::InFailedTransaction | CoordError::NotInTransaction(_) | CoordError::ActiveTransaction(_) => tonic::Code::FailedPrecondition,
            CoordError::NoData(_) => tonic::Code::NotFound,
            CoordError::Fenced(_) => tonic::Code::Aborted,
            CoordError::Saga { parked: false, .. } => tonic::Code::Aborted,
            CoordError::Saga { parked: true, .. } => tonic::Code::FailedPrecondition,
            CoordError::TooManySessions(_) | CoordError::LimitExceeded(_) | CoordError::TooComplex(_) => tonic::Code::ResourceExhausted,
            CoordError::StatementTimeout(_) => tonic::Code::DeadlineExceeded,
            CoordError::SessionNotFound(_) => tonic::Code::NotFound,
            CoordError::ReplicaTooStale(_) => tonic::Code::Unavailable,
            CoordError::ReadOnly(_) | CoordError::SnapshotTooOld(_) => tonic::Code::FailedPrecondition,
            CoordError::LockNotAvailable(_) => tonic::Code::Unavailable,
            CoordError::Storage { .. } => tonic::Code::Unavailable,
            CoordError::Internal(_) => tonic::Code::Internal,
        }
    }
}

/// The status a failed call returns: the gRPC code, the message, the
/// SQLSTATE (and saga id) as a `google.rpc.ErrorInfo` detail and as
/// metadata.
impl From<CoordError> for tonic::Status {
    fn from(e: CoordError) -> tonic::Status {
        let mut info = std::collections::HashMap::from([("sqlstate".to_string(), e.sqlstate().to_string())]);
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert(SQLSTATE_METADATA_KEY, e.sqlstate().parse().expect("ASCII SQLSTATE"));
        if let CoordError::Saga { saga_id, .. } = &e {
            info.insert("saga_id".to_string(), saga_id.clone());
            if let Ok(value) = saga_id.parse() {
                metadata.insert(SAGA_METADATA_KEY, value);
            }
        }
        let details = tonic_types::ErrorDetails::with_error_info(e.sqlstate(), tessera_proto::ERROR_DOMAIN, info);
        <tonic::Status as tonic_types::StatusExt>::with_error_details_and_metadata(e.grpc_code(), e.to_string(), details, metadata)
    }
}

impl From<tessera_model::data::expr::EvalError> for CoordError {
    fn from(e: tessera_model::data::expr::EvalError) -> CoordError {
        CoordError::invalid_value(e.to_string(), e.sqlstate())
    }
}
