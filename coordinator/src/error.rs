//! The coordinator's errors. SQLSTATE codes and gRPC status codes are
//! assigned here and nowhere else.

use tessera_proto::SQLSTATE_METADATA_KEY;

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
    /// A shard refused a transaction request (aborted, unknown).
    #[error("{0}")]
    TxnAborted(String),
    /// A statement in a transaction that already failed.
    #[error("current transaction is aborted, commands ignored until end of transaction block")]
    InFailedTransaction,
    /// A statement that may not run inside a transaction block.
    #[error("{0} cannot run inside a transaction block")]
    NotInTransaction(String),
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
            CoordError::TxnAborted(_) => "40003",
            CoordError::InFailedTransaction => "25P02",
            CoordError::NotInTransaction(_) => "25001",
            CoordError::Internal(_) => "XX000",
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
            CoordError::InFailedTransaction | CoordError::NotInTransaction(_) => tonic::Code::FailedPrecondition,
            CoordError::Internal(_) => tonic::Code::Internal,
        }
    }
}

impl From<CoordError> for tonic::Status {
    fn from(e: CoordError) -> tonic::Status {
        let mut status = tonic::Status::new(e.grpc_code(), e.to_string());
        status.metadata_mut().insert(SQLSTATE_METADATA_KEY, e.sqlstate().parse().expect("ASCII SQLSTATE"));
        status
    }
}

impl From<tessera_shard::data::expr::EvalError> for CoordError {
    fn from(e: tessera_shard::data::expr::EvalError) -> CoordError {
        CoordError::invalid_value(e.to_string(), e.sqlstate())
    }
}
