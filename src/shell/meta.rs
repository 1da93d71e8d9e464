//! Backslash meta-commands of the shell (`\q`, `\?`, `\d`, `\timing`).

/// A parsed meta-command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Meta {
    /// `\q`: leave the shell.
    Quit,
    /// `\?`: print the help text.
    Help,
    /// `\timing [on|off]`: set, or toggle when `None`, the timing line.
    Timing(Option<bool>),
    /// A meta-command that stands for SQL (`\d` -> `SHOW TABLES`).
    Sql(String),
    /// A known command used wrongly; the text explains.
    Usage(String),
    /// An unknown command, e.g. `\x`.
    Invalid(String),
}

/// Help printed by `\?`.
pub(crate) const HELP: &str = r#"General
  \q                quit the shell
  \?                show this help
  \timing [on|off]  toggle (or set) the "Time: ... ms" line after each statement

Informational
  \d                list tables (runs SHOW TABLES)
  \d NAME           describe a table (runs DESCRIBE NAME)

SQL (end each statement with ;  statements may span several lines)
  CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner TEXT, balance BIGINT)
      WITH (partitioning = 'range', split_points = '100,200');
  CREATE TABLE events (id BIGINT PRIMARY KEY, kind TEXT)
      WITH (partitioning = 'hash', virtual_nodes = 64);
  INSERT INTO accounts VALUES (1, 'alice', 100), (2, 'bob', 50);
  SELECT * FROM accounts WHERE id = 1;
  UPDATE accounts SET balance = balance - 10 WHERE id = 1;
  DELETE FROM accounts WHERE id = 2;
  EXPLAIN <statement>;   shows the shard groups involved and the commit protocol
  SHOW TABLES;
  DESCRIBE accounts;

Transactions
  BEGIN; ... COMMIT;    (or ROLLBACK;) atomic across shard groups: two-phase
                        commit when several groups were written. Rows read and
                        written inside are locked until the end.
  SQLSTATE 40001        serialization failure (a lock conflict): run the whole
                        transaction again.
  SHOW TRANSACTIONS;    transactions in flight and in doubt, per participant.
  Statements outside BEGIN are transactions of their own.

Sagas (cross-shard writes without 2PC; NOT isolated: others see each step)
  SET transaction_protocol = 'saga';   (or '2pc', the default; SET LOCAL
                        after BEGIN switches one transaction)
  BEGIN; UPDATE ...; UPDATE ...; COMMIT;   writes are queued, checked, and
                        run at COMMIT as one local commit per shard group;
                        if a step fails, the finished ones are compensated
                        in reverse and the timeline is printed.
  UPDATE ... COMPENSATE WITH UPDATE ...;   give the undo yourself where it
                        cannot be derived (e.g. SET balance = 0).
  EXPLAIN <write>;      shows the saga steps and their compensations.
  SHOW SAGAS;           unfinished, parked and recent sagas.
  SHOW SAGA <id>;       one saga's timeline of steps and compensations.
  RESUME SAGA <id>;     retry a saga parked as needs_operator."#;

/// Parses a line that starts with `\`.
pub(crate) fn parse_meta(line: &str) -> Meta {
    let line = line.trim();
    let (command, argument) = match line.split_once(char::is_whitespace) {
        Some((command, argument)) => (command, argument.trim()),
        None => (line, ""),
    };
    let argument = argument.trim_end_matches(';').trim();
    match command {
        "\\q" | "\\quit" => Meta::Quit,
        "\\?" | "\\h" | "\\help" => Meta::Help,
        "\\timing" => parse_timing(argument),
        "\\d" | "\\dt" if argument.is_empty() => Meta::Sql("SHOW TABLES".to_string()),
        "\\d" => Meta::Sql(format!("DESCRIBE {argument}")),
        "\\dt" => Meta::Usage("\\dt takes no argument; use \\d NAME to describe a table.".to_string()),
        _ => Meta::Invalid(command.to_string()),
    }
}

fn parse_timing(argument: &str) -> Meta {
    match argument.to_ascii_lowercase().as_str() {
        "" => Meta::Timing(None),
        "on" => Meta::Timing(Some(true)),
        "off" => Meta::Timing(Some(false)),
        other => Meta::Usage(format!("\\timing: unrecognized value \"{other}\": Boolean expected (on or off).")),
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_meta, Meta};

    #[test]
    fn quit_and_help() {
        assert_eq!(parse_meta("\\q"), Meta::Quit);
        assert_eq!(parse_meta("  \\q  "), Meta::Quit);
        assert_eq!(parse_meta("\\?"), Meta::Help);
    }

    #[test]
    fn describe_commands_become_sql() {
        assert_eq!(parse_meta("\\d"), Meta::Sql("SHOW TABLES".into()));
        assert_eq!(parse_meta("\\d accounts"), Meta::Sql("DESCRIBE accounts".into()));
        assert_eq!(parse_meta("\\d  accounts ;"), Meta::Sql("DESCRIBE accounts".into()));
        assert_eq!(parse_meta("\\dt"), Meta::Sql("SHOW TABLES".into()));
    }

    #[test]
    fn timing_toggles_or_sets() {
        assert_eq!(parse_meta("\\timing"), Meta::Timing(None));
        assert_eq!(parse_meta("\\timing on"), Meta::Timing(Some(true)));
        assert_eq!(parse_meta("\\timing OFF"), Meta::Timing(Some(false)));
        assert!(matches!(parse_meta("\\timing maybe"), Meta::Usage(_)));
    }

    #[test]
    fn unknown_command_is_invalid() {
        assert_eq!(parse_meta("\\x"), Meta::Invalid("\\x".into()));
        assert_eq!(parse_meta("\\dx foo"), Meta::Invalid("\\dx".into()));
    }
}
