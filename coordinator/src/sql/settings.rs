//! Session settings: `SET` and `SHOW` of `statement_timeout`, and the
//! settings PostgreSQL drivers send on connect (`client_encoding`,
//! `application_name`, `extra_float_digits`, `DateStyle`, ...), which are
//! accepted and have no effect. `transaction_protocol` lives in
//! [`super::saga`].

use super::QueryResult;
use crate::error::{CoordError, Result};
use crate::session::Session;
use sqlparser::ast::{self, Statement};
use std::time::Duration;
use tessera_shard::data::{DataType, Value};

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
            ACCEPTED.contains(&name.as_str()).then(|| Ok(QueryResult::command("SET")))
        }
        Statement::ShowVariable { variable } if variable.len() == 1 && variable[0].value.eq_ignore_ascii_case("statement_timeout") => {
            let shown = match session.statement_timeout {
                None => "0".to_string(),
                Some(d) => format!("{}ms", d.as_millis()),
            };
            Some(Ok(QueryResult::rows(&[("statement_timeout", DataType::Text)], vec![vec![Value::Text(shown)]])))
        }
        _ => None,
    }
}

fn set_timeout(session: &mut Session, values: &[ast::Expr]) -> Result<QueryResult> {
    let text = match values {
        [ast::Expr::Value(v)] => match &v.value {
            ast::Value::SingleQuotedString(s) => s.clone(),
            ast::Value::Number(n, _) => n.clone(),
            other => other.to_string(),
        },
        [ast::Expr::Identifier(i)] if i.value.eq_ignore_ascii_case("default") => "0".into(),
        _ => String::new(),
    };
    let timeout = parse_duration(&text).ok_or_else(|| {
        CoordError::invalid_value(
            format!("invalid value for parameter \"statement_timeout\": \"{text}\" (use milliseconds, or a number with ms, s, min or h)"),
            "22023",
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
    }
}
