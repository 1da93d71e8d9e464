//! The coordinator's errors. SQLSTATE codes and gRPC status codes are
//! assigned here and nowhere else.

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
            CoordError::Syntax(_) => "42601",
            CoordError::Unsupported(_) | CoordError::NotYet(_) => "0A000",
            CoordError::UnknownTable(_) => "42P01",
            CoordError::TableExists(_) => "42P07",
            CoordError::UnknownColumn(_) => "42703",
            CoordError::InvalidValue { sqlstate, .. } => sqlstate,
            CoordError::NotNullViolation(_) => "23502",
            CoordError::CheckViolation(_) => "23514",
            CoordError::UniqueViolation(_) | CoordError::DuplicateKey { .. } => "23505",
            CoordError::Invalid(_) => "42P16",
            CoordError::Serialization(_) => "40001",
            CoordError::ShardUnavailable(_) => "08006",
            CoordError::OutcomeUnknown(_) => "08007",
            CoordError::TxnAborted(_) => "40003",
            CoordError::InFailedTransaction => "25P02",
            CoordError::NotInTransaction(_) => "25001",
            CoordError::NoData(_) => "P0002",
            CoordError::Fenced(_) => "40000",
            CoordError::Saga { parked: false, cause, .. } => cause.unwrap_or("40000"),
            CoordError::Saga { parked: true, .. } => "55000",
            CoordError::TooManySessions(_) => "53300",
            CoordError::LimitExceeded(_) => "54000",
            CoordError::TooComplex(_) => "54001",
            CoordError::StatementTimeout(_) => "57014",
            CoordError::SessionNotFound(_) => "08003",
            CoordError::ReplicaTooStale(_) => "TR001",
            CoordError::Storage { sqlstate, .. } => sqlstate,
            CoordError::Internal(_) => "XX000",
        }
    }

    /// The static form of a SQLSTATE this coordinator sends (as kept in a
    /// saga record); `None` for anything else.
    pub fn known_sqlstate(code: &str) -> Option<&'static str> {
        const KNOWN: &[&str] = &[
            "08006", "08007", "0A000", "22001", "22003", "22012", "2201W", "22023", "22P02", "23502", "23505", "23514", "25001", "25P02", "40000", "40001",
            "40003", "42601", "42703", "42803", "42804", "42883", "42P01", "42P07", "42P16", "53100", "53300", "54000", "54001", "55000", "58030", "57014",
            "08003", "P0002", "TR001", "XX000",
        ];
        KNOWN.iter().copied().find(|k| *k == code)
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
            CoordError::InFailedTransaction | CoordError::NotInTransaction(_) => tonic::Code::FailedPrecondition,
            CoordError::NoData(_) => tonic::Code::NotFound,
            CoordError::Fenced(_) => tonic::Code::Aborted,
            CoordError::Saga { parked: false, .. } => tonic::Code::Aborted,
            CoordError::Saga { parked: true, .. } => tonic::Code::FailedPrecondition,
            CoordError::TooManySessions(_) | CoordError::LimitExceeded(_) | CoordError::TooComplex(_) => tonic::Code::ResourceExhausted,
            CoordError::StatementTimeout(_) => tonic::Code::DeadlineExceeded,
            CoordError::SessionNotFound(_) => tonic::Code::NotFound,
            CoordError::ReplicaTooStale(_) => tonic::Code::Unavailable,
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
