//! SQLSTATE codes: the one table of every code Tessera sends, by the
//! condition names PostgreSQL gives them (Appendix A of its manual), plus
//! Tessera's own class `TR`. Code on both sides names codes through these
//! constants; [`known`] turns a code read back (from a saga record, a
//! shard's status) into its constant.

/// `08001` sqlclient_unable_to_establish_sqlconnection.
pub const SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION: &str = "08001";
/// `08003` connection_does_not_exist.
pub const CONNECTION_DOES_NOT_EXIST: &str = "08003";
/// `08006` connection_failure.
pub const CONNECTION_FAILURE: &str = "08006";
/// `08007` transaction_resolution_unknown.
pub const TRANSACTION_RESOLUTION_UNKNOWN: &str = "08007";
/// `08P01` protocol_violation.
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// `0A000` feature_not_supported.
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// `22001` string_data_right_truncation.
pub const STRING_DATA_RIGHT_TRUNCATION: &str = "22001";
/// `22003` numeric_value_out_of_range.
pub const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
/// `22012` division_by_zero.
pub const DIVISION_BY_ZERO: &str = "22012";
/// `2201W` invalid_row_count_in_limit_clause.
pub const INVALID_ROW_COUNT_IN_LIMIT_CLAUSE: &str = "2201W";
/// `22021` character_not_in_repertoire.
pub const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";
/// `22023` invalid_parameter_value.
pub const INVALID_PARAMETER_VALUE: &str = "22023";
/// `22P02` invalid_text_representation.
pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
/// `23502` not_null_violation.
pub const NOT_NULL_VIOLATION: &str = "23502";
/// `23505` unique_violation.
pub const UNIQUE_VIOLATION: &str = "23505";
/// `23514` check_violation.
pub const CHECK_VIOLATION: &str = "23514";
/// `25001` active_sql_transaction.
pub const ACTIVE_SQL_TRANSACTION: &str = "25001";
/// `25006` read_only_sql_transaction.
pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
/// `25P02` in_failed_sql_transaction.
pub const IN_FAILED_SQL_TRANSACTION: &str = "25P02";
/// `28000` invalid_authorization_specification.
pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
/// `28P01` invalid_password.
pub const INVALID_PASSWORD: &str = "28P01";
/// `40000` transaction_rollback.
pub const TRANSACTION_ROLLBACK: &str = "40000";
/// `40001` serialization_failure.
pub const SERIALIZATION_FAILURE: &str = "40001";
/// `40003` statement_completion_unknown.
pub const STATEMENT_COMPLETION_UNKNOWN: &str = "40003";
/// `40P01` deadlock_detected.
pub const DEADLOCK_DETECTED: &str = "40P01";
/// `42601` syntax_error.
pub const SYNTAX_ERROR: &str = "42601";
/// `42703` undefined_column.
pub const UNDEFINED_COLUMN: &str = "42703";
/// `42803` grouping_error.
pub const GROUPING_ERROR: &str = "42803";
/// `42804` datatype_mismatch.
pub const DATATYPE_MISMATCH: &str = "42804";
/// `42883` undefined_function.
pub const UNDEFINED_FUNCTION: &str = "42883";
/// `42P01` undefined_table.
pub const UNDEFINED_TABLE: &str = "42P01";
/// `42P07` duplicate_table.
pub const DUPLICATE_TABLE: &str = "42P07";
/// `42P16` invalid_table_definition.
pub const INVALID_TABLE_DEFINITION: &str = "42P16";
/// `53100` disk_full.
pub const DISK_FULL: &str = "53100";
/// `53300` too_many_connections.
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// `54000` program_limit_exceeded.
pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
/// `54001` statement_too_complex.
pub const STATEMENT_TOO_COMPLEX: &str = "54001";
/// `55000` object_not_in_prerequisite_state.
pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
/// `55P03` lock_not_available.
pub const LOCK_NOT_AVAILABLE: &str = "55P03";
/// `72000` snapshot_too_old.
pub const SNAPSHOT_TOO_OLD: &str = "72000";
/// `57014` query_canceled.
pub const QUERY_CANCELED: &str = "57014";
/// `58030` io_error.
pub const IO_ERROR: &str = "58030";
/// `P0002` no_data_found.
pub const NO_DATA_FOUND: &str = "P0002";
/// `P0003` too_many_rows.
pub const TOO_MANY_ROWS: &str = "P0003";
/// `TR001` replica_too_stale (Tessera: every replica staler than the session allows).
pub const REPLICA_TOO_STALE: &str = "TR001";
/// `XX000` internal_error.
pub const INTERNAL_ERROR: &str = "XX000";
/// `XX001` data_corrupted.
pub const DATA_CORRUPTED: &str = "XX001";

/// Every code above with its condition name.
pub const TABLE: &[(&str, &str)] = &[
    (SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION, "sqlclient_unable_to_establish_sqlconnection"),
    (CONNECTION_DOES_NOT_EXIST, "connection_does_not_exist"),
    (CONNECTION_FAILURE, "connection_failure"),
    (TRANSACTION_RESOLUTION_UNKNOWN, "transaction_resolution_unknown"),
    (PROTOCOL_VIOLATION, "protocol_violation"),
    (FEATURE_NOT_SUPPORTED, "feature_not_supported"),
    (STRING_DATA_RIGHT_TRUNCATION, "string_data_right_truncation"),
    (NUMERIC_VALUE_OUT_OF_RANGE, "numeric_value_out_of_range"),
    (DIVISION_BY_ZERO, "division_by_zero"),
    (INVALID_ROW_COUNT_IN_LIMIT_CLAUSE, "invalid_row_count_in_limit_clause"),
    (CHARACTER_NOT_IN_REPERTOIRE, "character_not_in_repertoire"),
    (INVALID_PARAMETER_VALUE, "invalid_parameter_value"),
    (INVALID_TEXT_REPRESENTATION, "invalid_text_representation"),
    (NOT_NULL_VIOLATION, "not_null_violation"),
    (UNIQUE_VIOLATION, "unique_violation"),
    (CHECK_VIOLATION, "check_violation"),
    (ACTIVE_SQL_TRANSACTION, "active_sql_transaction"),
    (READ_ONLY_SQL_TRANSACTION, "read_only_sql_transaction"),
    (IN_FAILED_SQL_TRANSACTION, "in_failed_sql_transaction"),
    (INVALID_AUTHORIZATION_SPECIFICATION, "invalid_authorization_specification"),
    (INVALID_PASSWORD, "invalid_password"),
    (TRANSACTION_ROLLBACK, "transaction_rollback"),
    (SERIALIZATION_FAILURE, "serialization_failure"),
    (STATEMENT_COMPLETION_UNKNOWN, "statement_completion_unknown"),
    (DEADLOCK_DETECTED, "deadlock_detected"),
    (SYNTAX_ERROR, "syntax_error"),
    (UNDEFINED_COLUMN, "undefined_column"),
    (GROUPING_ERROR, "grouping_error"),
    (DATATYPE_MISMATCH, "datatype_mismatch"),
    (UNDEFINED_FUNCTION, "undefined_function"),
    (UNDEFINED_TABLE, "undefined_table"),
    (DUPLICATE_TABLE, "duplicate_table"),
    (INVALID_TABLE_DEFINITION, "invalid_table_definition"),
    (DISK_FULL, "disk_full"),
    (TOO_MANY_CONNECTIONS, "too_many_connections"),
    (PROGRAM_LIMIT_EXCEEDED, "program_limit_exceeded"),
    (STATEMENT_TOO_COMPLEX, "statement_too_complex"),
    (OBJECT_NOT_IN_PREREQUISITE_STATE, "object_not_in_prerequisite_state"),
    (LOCK_NOT_AVAILABLE, "lock_not_available"),
    (QUERY_CANCELED, "query_canceled"),
    (IO_ERROR, "io_error"),
    (SNAPSHOT_TOO_OLD, "snapshot_too_old"),
    (NO_DATA_FOUND, "no_data_found"),
    (TOO_MANY_ROWS, "too_many_rows"),
    (REPLICA_TOO_STALE, "replica_too_stale"),
    (INTERNAL_ERROR, "internal_error"),
    (DATA_CORRUPTED, "data_corrupted"),
];

/// The constant for a code Tessera sends (as kept in a saga record or a
/// stored outcome); `None` for any other text.
pub fn known(code: &str) -> Option<&'static str> {
    TABLE.iter().map(|(c, _)| *c).find(|c| *c == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_five_characters_unique_and_known() {
        let mut seen = std::collections::BTreeSet::new();
        for (code, name) in TABLE {
            assert_eq!(code.len(), 5, "{code}");
            assert!(code.chars().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()), "{code}");
            assert!(seen.insert(*code), "{code} twice");
            assert_eq!(known(code), Some(*code));
            assert!(!name.is_empty());
        }
        assert_eq!(known("99999"), None);
    }
}
