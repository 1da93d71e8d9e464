//! Transaction modes: `BEGIN READ ONLY`, `SET TRANSACTION READ ONLY`,
//! isolation levels, and `SHOW transaction_isolation` /
//! `SHOW transaction_read_only`.
//!
//! A READ ONLY transaction reads every statement at one snapshot, taken at
//! its first read, without locks, and refuses writes (25006). A read-write
//! transaction runs under strict two-phase locking whatever isolation level
//! it names: that is SERIALIZABLE, at least as strong as every level
//! PostgreSQL offers, so `SHOW transaction_isolation` says `serializable`
//! (see docs/architecture/consistency.md).

use crate::error::{CoordError, Result};
use crate::result::QueryResult;
use crate::txn::Txn;
use sqlparser::ast::{TransactionAccessMode, TransactionMode};
use tessera_model::data::{DataType, Value};

/// The access mode a list of modes asks for (`None`: not said).
pub fn read_only(modes: &[TransactionMode]) -> Option<bool> {
    modes.iter().rev().find_map(|m| match m {
        TransactionMode::AccessMode(TransactionAccessMode::ReadOnly) => Some(true),
        TransactionMode::AccessMode(TransactionAccessMode::ReadWrite) => Some(false),
        TransactionMode::IsolationLevel(_) => None,
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
    Ok(QueryResult::command("SET"))
}

/// `SHOW transaction_isolation` / `transaction_read_only`; `None` for any
/// other name.
pub fn show(name: &str, txn: Option<&Txn>) -> Option<QueryResult> {
    let shown = match name {
        "transaction_isolation" | "default_transaction_isolation" => "serializable",
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
    }
}
