//! Session settings: `SET` and `SHOW` of `statement_timeout`, replica
//! reads (`replica_reads`, `replica_max_staleness`,
//! `replica_stale_policy`), and the
//! settings PostgreSQL drivers send on connect (`client_encoding`,
//! `application_name`, `extra_float_digits`, `DateStyle`, ...), which are
//! accepted and have no effect. `transaction_protocol` lives in
//! [`super::saga`].

use crate::error::{CoordError, Result};
use crate::result::QueryResult;
use crate::session::Session;
use sqlparser::ast::{self, Statement};
use std::time::Duration;
use tessera_model::data::{DataType, Value};
use tessera_model::sqlstate;

/// Settings drivers set that do not change what Tessera does.
const ACCEPTED: &[&str] =
    &["client_encoding", "application_name", "extra_float_digits", "datestyle", "timezone", "search_path", "client_min_messages", "intervalstyle"];

/// `SET` / `SHOW` of a session setting; `None` for any other statement.
pub fn statement(session: &mut Session, statement: &Statement) -> Option<Result<QueryResult>> {
    match statement {
        Statement::Set(ast::Set::SingleAssignment { variable, values, .. }) => {
            let name = variable.to_string().to_ascii_lowercase();
            if name == "statement_timeout" {
                return Some(set_timeout(session, values));
            }
            if matches!(name.as_str(), "replica_reads" | "replica_max_staleness" | "replica_stale_policy") {
                return Some(set_replica(session, &name, &value_text(values)));
            }
            ACCEPTED.contains(&name.as_str()).then(|| Ok(QueryResult::command("SET")))
        }
        Statement::ShowVariable { variable } if variable.len() == 1 => {
            let name = variable[0].value.to_ascii_lowercase();
            let shown = match name.as_str() {
                "statement_timeout" => session.statement_timeout.map(|d| format!("{}ms", d.as_millis())).unwrap_or("0".into()),
                "replica_reads" => if session.replica_reads { "on" } else { "off" }.into(),
                "replica_max_staleness" => session.replica.max_staleness.map(|d| format!("{}ms", d.as_millis())).unwrap_or("0".into()),
                "replica_stale_policy" => if session.replica.refuse_stale { "refuse" } else { "fallback" }.into(),
                _ => return None,
            };
            Some(Ok(QueryResult::rows(&[(name.as_str(), DataType::Text)], vec![vec![Value::Text(shown)]])))
        }
        _ => None,
    }
}

/// The value of `SET name = value` as text.
fn value_text(values: &[ast::Expr]) -> String {
    match values {
        [ast::Expr::Value(v)] => match &v.value {
            ast::Value::SingleQuotedString(s) => s.clone(),
            ast::Value::Number(n, _) => n.clone(),
            ast::Value::Boolean(b) => if *b { "on" } else { "off" }.into(),
            other => other.to_string(),
        },
        [ast::Expr::Identifier(i)] => i.value.clone(),
        _ => String::new(),
    }
}

fn set_replica(session: &mut Session, name: &str, value: &str) -> Result<QueryResult> {
    let invalid =
        |hint: &str| CoordError::invalid_value(format!("invalid value for parameter \"{name}\": \"{value}\" ({hint})"), sqlstate::INVALID_PARAMETER_VALUE);
    let lower = value.to_ascii_lowercase();
    match name {
        "replica_reads" => {
            session.replica_reads = match lower.as_str() {
                "on" | "true" | "1" => true,
                "off" | "false" | "0" | "default" => false,
                _ => return Err(invalid("use on or off")),
            }
        }
        "replica_max_staleness" => {
            let d = parse_duration(value).ok_or_else(|| invalid("use milliseconds, or a number with ms, s, min or h; 0 allows any"))?;
            session.replica.max_staleness = (!d.is_zero()).then_some(d);
        }
        _ => {
            session.replica.refuse_stale = match lower.as_str() {
                "refuse" => true,
                "fallback" | "default" => false,
                _ => return Err(invalid("use fallback or refuse")),
            }
        }
    }
    Ok(QueryResult::command("SET"))
}

fn set_timeout(session: &mut Session, values: &[ast::Expr]) -> Result<QueryResult> {
    let text = match value_text(values) {
        v if v.eq_ignore_ascii_case("default") => "0".into(),
        v => v,
    };
    let timeout = parse_duration(&text).ok_or_else(|| {
        CoordError::invalid_value(
            format!("invalid value for parameter \"statement_timeout\": \"{text}\" (use milliseconds, or a number with ms, s, min or h)"),
            sqlstate::INVALID_PARAMETER_VALUE,
        )
    })?;
    session.statement_timeout = (!timeout.is_zero()).then_some(timeout);
    Ok(QueryResult::command("SET"))
}

/// `500`, `500ms`, `2s`, `1min`, `1h` (a bare number is milliseconds, as
/// in PostgreSQL).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let ms = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" => n,
        "s" => n.checked_mul(1_000)?,
        "min" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_postgres() {
        assert_eq!(parse_duration("250"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1 min"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("5 days"), None);
    }

    #[test]
    fn set_and_show_statement_timeout() {
        let mut session = Session::default();
        let set = crate::sql::parse("SET statement_timeout = '1500ms'").unwrap().remove(0);
        statement(&mut session, &set).unwrap().unwrap();
        assert_eq!(session.statement_timeout, Some(Duration::from_millis(1500)));
        let show = crate::sql::parse("SHOW statement_timeout").unwrap().remove(0);
        assert_eq!(statement(&mut session, &show).unwrap().unwrap().rows[0][0].to_string(), "1500ms");
        let bad = crate::sql::parse("SET statement_timeout = 'soon'").unwrap().remove(0);
        assert!(statement(&mut session, &bad).unwrap().is_err());
        let driver = crate::sql::parse("SET extra_float_digits = 3").unwrap().remove(0);
        assert!(statement(&mut session, &driver).unwrap().is_ok());
        let other = crate::sql::parse("SET work_mem = '4MB'").unwrap().remove(0);
        assert!(statement(&mut session, &other).is_none());
        for sql in ["SET replica_reads = on", "SET replica_max_staleness = '2s'", "SET replica_stale_policy = 'refuse'"] {
            statement(&mut session, &crate::sql::parse(sql).unwrap().remove(0)).unwrap().unwrap();
        }
        let reads = session.replica_reads().unwrap();
        assert_eq!((reads.max_staleness, reads.refuse_stale), (Some(Duration::from_secs(2)), true));
        let bad = crate::sql::parse("SET replica_reads = sometimes").unwrap().remove(0);
        assert!(statement(&mut session, &bad).unwrap().is_err());
    }
}
