//! Positional parameters (`$1`, `$2`, ...): the gRPC API and the
//! PostgreSQL extended protocol bind values by replacing each placeholder
//! with the value as a literal before planning, so a parameter goes through
//! the same type checks as a literal written in its place.

use crate::error::{CoordError, Result};
use sqlparser::ast::{self, Expr, Statement, Visit, VisitMut, Visitor, VisitorMut};
use std::ops::ControlFlow;
use tessera_model::data::Value;
use tessera_model::sqlstate;

/// The most parameters a statement may use (PostgreSQL's protocol limit).
pub const MAX_PARAMETERS: usize = 65535;

/// The text of a placeholder expression, e.g. `$3`.
fn placeholder(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Value(v) => match &v.value {
            ast::Value::Placeholder(p) => Some(p),
            _ => None,
        },
        _ => None,
    }
}

/// The index (0-based) of a `$N` placeholder with 1 <= N <= 65535.
pub fn placeholder_index(expr: &Expr) -> Option<usize> {
    placeholder(expr)?.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()).filter(|n| (1..=MAX_PARAMETERS).contains(n)).map(|n| n - 1)
}

/// Refuses placeholders other than `$1` to `$65535`.
pub fn check_placeholders(statement: &Statement) -> Result<()> {
    struct Bad(Option<String>);
    impl Visitor for Bad {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if let Some(text) = placeholder(expr) {
                if placeholder_index(expr).is_none() {
                    self.0 = Some(text.to_string());
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut bad = Bad(None);
    let _ = Visit::visit(statement, &mut bad);
    match bad.0 {
        Some(text) => Err(CoordError::invalid_value(format!("parameter {text} is not one of $1 to ${MAX_PARAMETERS}"), sqlstate::PROTOCOL_VIOLATION)),
        None => Ok(()),
    }
}

/// The number of parameters a statement uses: its highest `$N`.
pub fn count(statement: &Statement) -> usize {
    struct Counter(usize);
    impl Visitor for Counter {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if let Some(i) = placeholder_index(expr) {
                self.0 = self.0.max(i + 1);
            }
            ControlFlow::Continue(())
        }
    }
    let mut counter = Counter(0);
    let _ = Visit::visit(statement, &mut counter);
    counter.0
}

/// Checks that a request gives exactly the parameters its statements use.
pub fn check_count<'a>(statements: impl IntoIterator<Item = &'a Statement>, given: usize) -> Result<()> {
    let used = statements.into_iter().map(count).max().unwrap_or(0);
    if used != given {
        return Err(CoordError::invalid_value(
            format!("the SQL uses {used} parameter(s) ($1 to ${used}) but the request gives {given}"),
            sqlstate::PROTOCOL_VIOLATION,
        ));
    }
    Ok(())
}

/// Refuses a text value with a NUL byte, as PostgreSQL does (its text
/// cannot hold one).
pub fn check_text(values: &[Value]) -> Result<()> {
    for (i, v) in values.iter().enumerate() {
        if let Value::Text(s) = v {
            if let Some(at) = s.find('\0') {
                return Err(CoordError::invalid_value(
                    format!("invalid byte sequence for encoding \"UTF8\": 0x00 (parameter ${} has a NUL byte at offset {at})", i + 1),
                    sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
                ));
            }
        }
    }
    Ok(())
}

/// Replaces `$N` placeholders with the bound values as literals.
pub fn bind(statement: &mut Statement, values: &[Value]) -> Result<()> {
    check_text(values)?;
    let mut binder = Binder { values, missing: None };
    let _ = VisitMut::visit(statement, &mut binder);
    match binder.missing {
        Some(n) => {
            Err(CoordError::invalid_value(format!("there is no parameter ${n} (the statement was given {})", values.len()), sqlstate::PROTOCOL_VIOLATION))
        }
        None => Ok(()),
    }
}

/// A value as the literal expression that stands for it in SQL text.
pub fn literal(value: &Value) -> Expr {
    let literal = match value {
        Value::Null => ast::Value::Null,
        Value::Int(n) => ast::Value::Number(n.to_string(), false),
        Value::Double(d) if d.is_finite() => ast::Value::Number(format!("{d:?}"), false),
        Value::Double(d) => ast::Value::SingleQuotedString(d.to_string()),
        Value::Text(s) => ast::Value::SingleQuotedString(s.clone()),
        Value::Bool(b) => ast::Value::Boolean(*b),
    };
    // A negative number is a unary minus in SQL text.
    match literal {
        ast::Value::Number(n, long) if n.starts_with('-') => {
            Expr::UnaryOp { op: ast::UnaryOperator::Minus, expr: Box::new(Expr::value(ast::Value::Number(n[1..].to_string(), long))) }
        }
        other => Expr::value(other),
    }
}

struct Binder<'a> {
    values: &'a [Value],
    missing: Option<usize>,
}

impl VisitorMut for Binder<'_> {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let Some(i) = placeholder_index(expr) else { return ControlFlow::Continue(()) };
        let Some(value) = self.values.get(i) else {
            self.missing = Some(i + 1);
            return ControlFlow::Break(());
        };
        *expr = literal(value);
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_literals() {
        let mut statement = crate::sql::parse("UPDATE t SET a = $2, b = $3 WHERE id = $1").unwrap().remove(0);
        assert_eq!(count(&statement), 3);
        bind(&mut statement, &[Value::Int(-5), Value::Text("it's".into()), Value::Null]).unwrap();
        assert_eq!(statement.to_string(), "UPDATE t SET a = 'it''s', b = NULL WHERE id = -5");
        let mut statement = crate::sql::parse("SELECT * FROM t WHERE id = $2").unwrap().remove(0);
        assert!(bind(&mut statement, &[Value::Int(1)]).unwrap_err().to_string().contains("no parameter $2"));
        let huge = crate::sql::parse("SELECT $18446744073709551615").unwrap().remove(0);
        assert!(check_placeholders(&huge).unwrap_err().to_string().contains("not one of $1"));
        assert_eq!(count(&huge), 0);
        let statements = crate::sql::parse("SELECT $1; SELECT $2").unwrap();
        assert!(check_count(&statements, 2).is_ok());
        assert!(check_count(&statements, 3).unwrap_err().to_string().contains("gives 3"));
    }
}
