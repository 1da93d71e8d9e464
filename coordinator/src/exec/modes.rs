//! Transaction modes: `BEGIN READ ONLY`, `SET TRANSACTION READ ONLY`,
//! isolation levels, `SET TRANSACTION SNAPSHOT` (reads of the past), and
//! `SHOW transaction_isolation` / `transaction_read_only` /
//! `transaction_snapshot`.
//!
//! A READ ONLY transaction reads every statement at one snapshot, taken at
//! its first read, without locks, and refuses writes (25006). Read-write
//! transactions take PostgreSQL's levels with their meanings: READ
//! COMMITTED (a snapshot per statement), REPEATABLE READ (one snapshot, and
//! 40001 on a concurrent update), SERIALIZABLE (strict two-phase locking,
//! the default); see docs/architecture/consistency.md.

use crate::error::{CoordError, Result};
use crate::result::QueryResult;
use crate::txn::{Isolation, Txn};
use sqlparser::ast::{TransactionAccessMode, TransactionIsolationLevel, TransactionMode};
use tessera_model::data::{DataType, Value};

/// The access mode a list of modes asks for (`None`: not said).
pub fn read_only(modes: &[TransactionMode]) -> Option<bool> {
    modes.iter().rev().find_map(|m| match m {
        TransactionMode::AccessMode(TransactionAccessMode::ReadOnly) => Some(true),
        TransactionMode::AccessMode(TransactionAccessMode::ReadWrite) => Some(false),
        TransactionMode::IsolationLevel(_) => None,
    })
}

/// The isolation level a list of modes asks for (`None`: not said).
/// READ UNCOMMITTED is READ COMMITTED, as in PostgreSQL.
pub fn isolation(modes: &[TransactionMode]) -> Option<Isolation> {
    modes.iter().rev().find_map(|m| match m {
        TransactionMode::IsolationLevel(TransactionIsolationLevel::ReadUncommitted | TransactionIsolationLevel::ReadCommitted) => {
            Some(Isolation::ReadCommitted)
        }
        TransactionMode::IsolationLevel(TransactionIsolationLevel::RepeatableRead | TransactionIsolationLevel::Snapshot) => Some(Isolation::RepeatableRead),
        TransactionMode::IsolationLevel(TransactionIsolationLevel::Serializable) => Some(Isolation::Serializable),
        TransactionMode::AccessMode(_) => None,
    })
}

/// `SET TRANSACTION ...` in an open transaction. The access mode may change
/// only before the transaction has read or written anything (PostgreSQL
/// refuses READ WRITE after a query too).
pub fn set(txn: Option<&mut Txn>, modes: &[TransactionMode]) -> Result<QueryResult> {
    let Some(txn) = txn else {
        // PostgreSQL warns and ignores it outside a transaction block.
        return Ok(QueryResult::command("SET"));
    };
    if let Some(read_only) = read_only(modes) {
        if read_only != txn.read_only && (txn.snapshot.is_some() || !txn.groups().is_empty()) {
            return Err(CoordError::ActiveTransaction("SET TRANSACTION READ ONLY or READ WRITE must be called before any query".into()));
        }
        txn.read_only = read_only;
    }
    if let Some(level) = isolation(modes) {
        if level != txn.isolation && (txn.snapshot.is_some() || !txn.groups().is_empty()) {
            return Err(CoordError::ActiveTransaction("SET TRANSACTION ISOLATION LEVEL must be called before any query".into()));
        }
        txn.isolation = level;
    }
    Ok(QueryResult::command("SET"))
}

/// The timestamp `SET TRANSACTION SNAPSHOT 'value'` asks for: a snapshot
/// timestamp (as `SHOW transaction_snapshot` gives it), or a time before
/// `now` (`'-10s'`, `'-500ms'`). Only in a READ ONLY transaction before its
/// first query; never in the future. Versions older than the
/// garbage-collection retention may be gone (72000 on read).
pub fn snapshot_timestamp(txn: &Txn, value: &sqlparser::ast::Value, now: u64) -> Result<u64> {
    if !txn.read_only {
        return Err(CoordError::Unsupported("SET TRANSACTION SNAPSHOT in a read-write transaction (use BEGIN READ ONLY)".into()));
    }
    if txn.snapshot.is_some() {
        return Err(CoordError::ActiveTransaction("SET TRANSACTION SNAPSHOT must be called before any query".into()));
    }
    let text = match value {
        sqlparser::ast::Value::SingleQuotedString(s) => s.clone(),
        sqlparser::ast::Value::Number(n, _) => n.clone(),
        other => other.to_string(),
    };
    let invalid = |why: &str| {
        CoordError::invalid_value(
            format!("invalid snapshot \"{text}\": {why}; give a timestamp from SHOW transaction_snapshot, or a time in the past such as '-10s'"),
            tessera_model::sqlstate::INVALID_PARAMETER_VALUE,
        )
    };
    let ts = match text.trim().strip_prefix('-') {
        Some(ago) => {
            let ago = super::settings::parse_duration(ago).ok_or_else(|| invalid("not a duration"))?;
            now.saturating_sub(ago.as_micros() as u64)
        }
        None => text.trim().parse::<u64>().map_err(|_| invalid("not a timestamp"))?,
    };
    if ts == 0 || ts > now {
        return Err(invalid("it is in the future"));
    }
    Ok(ts)
}

/// `SHOW transaction_isolation` / `transaction_read_only`; `None` for any
/// other name.
pub fn show(name: &str, txn: Option<&Txn>) -> Option<QueryResult> {
    let shown = match name {
        "transaction_isolation" => txn.map(|t| t.isolation).unwrap_or_default().name(),
        "default_transaction_isolation" => Isolation::default().name(),
        "transaction_read_only" => {
            if txn.is_some_and(|t| t.read_only) {
                "on"
            } else {
                "off"
            }
        }
        "default_transaction_read_only" => "off",
        _ => return None,
    };
    Some(QueryResult::rows(&[(name, DataType::Text)], vec![vec![Value::Text(shown.into())]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::ast::{Set, Statement};
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn modes(sql: &str) -> Vec<TransactionMode> {
        match Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap().remove(0) {
            Statement::StartTransaction { modes, .. } | Statement::Set(Set::SetTransaction { modes, .. }) => modes,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn the_access_mode_is_read_from_begin_and_set_transaction() {
        assert_eq!(read_only(&modes("BEGIN READ ONLY")), Some(true));
        assert_eq!(read_only(&modes("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")), Some(true));
        assert_eq!(read_only(&modes("BEGIN ISOLATION LEVEL SERIALIZABLE")), None);
        assert_eq!(read_only(&modes("SET TRANSACTION READ WRITE")), Some(false));
        assert_eq!(read_only(&modes("SET TRANSACTION READ ONLY")), Some(true));
        assert_eq!(isolation(&modes("BEGIN ISOLATION LEVEL READ COMMITTED")), Some(Isolation::ReadCommitted));
        assert_eq!(isolation(&modes("BEGIN ISOLATION LEVEL READ UNCOMMITTED")), Some(Isolation::ReadCommitted));
        assert_eq!(isolation(&modes("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")), Some(Isolation::RepeatableRead));
        assert_eq!(isolation(&modes("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")), Some(Isolation::Serializable));
        assert_eq!(isolation(&modes("BEGIN READ ONLY")), None);
    }
}
