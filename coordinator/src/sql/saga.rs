//! Planning saga statements: from statements to saga steps, and how each
//! step is undone.
//!
//! A statement becomes one step per shard group it touches, in group order.
//! Its compensation is derived where the inverse is safe, from the before-
//! and after-images the step records on the shard:
//!
//! | statement | compensation |
//! |---|---|
//! | INSERT | DELETE the inserted rows |
//! | DELETE | re-insert the deleted rows (fails if the key was taken since) |
//! | UPDATE `c = c + e` / `c = c - e` | apply the opposite of the recorded delta to the current value |
//! | UPDATE `c = constant` | restore the before-image if the row still holds what the step wrote, else fail visibly |
//! | anything else | `COMPENSATE WITH <statement>`, or the saga is refused before it starts |

use super::write;
use super::{first_word, parse};
use crate::catalog::Catalog;
use crate::error::{CoordError, Result};
use crate::plan::saga::{Compensation, StatementPlan, Undo, WritePlan};
use crate::plan::write::{ModifyKind, ModifyPlan};
use crate::plan::KeyAccess;
use crate::result::OutputColumn;
use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};
use tessera_model::data::expr::{BinaryOp, Expr};
use tessera_model::data::DataType;

/// Parses SQL text, keeping each statement's `COMPENSATE WITH` text.
pub fn parse_with_compensations(sql: &str) -> Result<Vec<(Statement, Option<String>)>> {
    if !sql.to_ascii_lowercase().contains("compensate") {
        return Ok(parse(sql)?.into_iter().map(|s| (s, None)).collect());
    }
    let mut out = Vec::new();
    for (text, compensation) in split_compensations(sql)? {
        let statements = parse(&text)?;
        if compensation.is_some() && statements.len() != 1 {
            return Err(CoordError::Syntax("COMPENSATE WITH must follow exactly one statement".into()));
        }
        out.extend(statements.into_iter().map(|s| (s, compensation.clone())));
    }
    Ok(out)
}

/// True for `SHOW SAGAS`, `SHOW SAGA <id>` and `RESUME SAGA <id>`.
pub fn is_admin(sql: &str) -> bool {
    !admin_columns(sql).is_empty()
}

/// The result columns of an admin text (`SHOW SAGAS`, `SHOW SAGA <id>`,
/// `RESUME SAGA <id>`), for describing it before it runs.
pub fn admin_columns(sql: &str) -> Vec<OutputColumn> {
    let words: Vec<String> = sql.split_whitespace().take(2).map(|w| w.trim_end_matches(';').to_ascii_lowercase()).collect();
    let columns: &[(&str, DataType)] = match words.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["show", "sagas"] => SAGAS_COLUMNS,
        ["show", "saga"] | ["resume", "saga"] => TIMELINE_COLUMNS,
        _ => &[],
    };
    columns.iter().map(|(name, data_type)| OutputColumn { name: name.to_string(), data_type: *data_type }).collect()
}

/// The columns of `SHOW SAGAS`.
pub const SAGAS_COLUMNS: &[(&str, DataType)] = &[
    ("saga_id", DataType::Text),
    ("state", DataType::Text),
    ("progress", DataType::Text),
    ("started", DataType::Text),
    ("finished", DataType::Text),
    ("reason", DataType::Text),
];

/// The columns of a saga's timeline (`SHOW SAGA <id>`, `RESUME SAGA <id>`).
pub const TIMELINE_COLUMNS: &[(&str, DataType)] = &[
    ("step", DataType::BigInt),
    ("shard_group", DataType::BigInt),
    ("action", DataType::Text),
    ("state", DataType::Text),
    ("attempts", DataType::BigInt),
    ("started", DataType::Text),
    ("finished", DataType::Text),
    ("detail", DataType::Text),
];

/// Plans a logged saga statement (its text, its `COMPENSATE WITH` text and
/// the id of the table it started on), parsed again, e.g. after a restart.
/// Refuses a plan whose table is not the one the saga started on (dropped
/// and created again in between: its rows and layout may differ).
pub fn plan_logged(catalog: &Catalog, sql: &str, compensation: Option<&str>, table_id: Option<u32>) -> Result<StatementPlan> {
    let parsed = parse_one(sql)?;
    let plan = plan_parsed(catalog, &parsed, compensation)?;
    match table_id {
        Some(id) if id != plan.table().def.id => Err(CoordError::Invalid(format!(
            "table \"{}\" was dropped and created again since the saga started; its step cannot run on the new table",
            plan.table().name()
        ))),
        _ => Ok(plan),
    }
}

/// Plans a statement as a saga statement; refuses what cannot be undone.
pub fn plan_parsed(catalog: &Catalog, statement: &Statement, compensation: Option<&str>) -> Result<StatementPlan> {
    let write = plan_write(catalog, statement)?;
    let required = match &write {
        WritePlan::Modify(ModifyPlan { access: KeyAccess::Points(points), .. }) => points.clone(),
        _ => Vec::new(),
    };
    let compensation = match compensation {
        Some(text) => {
            let parsed = parse_one(text).map_err(|e| match e {
                CoordError::Syntax(m) => CoordError::Syntax(format!("in COMPENSATE WITH: {m}")),
                other => other,
            })?;
            let plan = plan_write(catalog, &parsed).map_err(|e| match e {
                CoordError::Unsupported(what) => CoordError::Unsupported(format!("{what} as a compensation")),
                other => other,
            })?;
            // Each step runs its compensation on its own shard group; a
            // compensation reaching groups the statement does not would
            // leave those parts undone.
            let groups = write.groups();
            if let Some(g) = plan.groups().into_iter().find(|g| !groups.contains(g)) {
                return Err(CoordError::Invalid(format!(
                    "COMPENSATE WITH {text} writes to shard group {g}, where the statement it undoes does not write; \
                     a compensation may only touch the shard groups of its statement"
                )));
            }
            Compensation::Explicit(parsed.to_string(), Box::new(plan))
        }
        None => derive(&write)?,
    };
    Ok(StatementPlan { write, compensation, required })
}

fn plan_write(catalog: &Catalog, statement: &Statement) -> Result<WritePlan> {
    match statement {
        Statement::Insert(i) => Ok(WritePlan::Insert(write::plan_insert(catalog, i)?)),
        Statement::Update(u) => Ok(WritePlan::Modify(write::plan_update(catalog, u)?)),
        Statement::Delete(d) => Ok(WritePlan::Modify(write::plan_delete(catalog, d)?)),
        other => Err(CoordError::Unsupported(format!("{} in a saga (only INSERT, UPDATE and DELETE become saga steps)", first_word(other)))),
    }
}

fn parse_one(text: &str) -> Result<Statement> {
    let mut statements = parse(text)?;
    if statements.len() != 1 {
        return Err(CoordError::Invalid(format!("expected one statement, found {}: {text}", statements.len())));
    }
    Ok(statements.remove(0))
}

/// The derived compensation, or an error naming what cannot be undone.
fn derive(write: &WritePlan) -> Result<Compensation> {
    let modify = match write {
        WritePlan::Insert(_) => return Ok(Compensation::DeleteInserted),
        WritePlan::Modify(m) => m,
    };
    let assignments = match &modify.kind {
        ModifyKind::Delete => return Ok(Compensation::Reinsert),
        ModifyKind::Update { assignments } => assignments,
    };
    let mut undo = Vec::new();
    for (col, expr) in assignments {
        let how = if is_delta(*col, expr) {
            Undo::Delta
        } else if expr.is_constant() {
            Undo::Restore
        } else {
            let name = &modify.table.def.columns[*col].name;
            return Err(CoordError::Unsupported(format!(
                "a saga step that sets \"{name}\" to an expression that is neither \"{name} + e\", \"{name} - e\" nor a constant cannot be compensated \
                 automatically; add COMPENSATE WITH <statement> after it"
            )));
        };
        undo.push((*col, how));
    }
    Ok(Compensation::Revert(undo))
}

/// `c + e`, `e + c` or `c - e`.
fn is_delta(col: usize, expr: &Expr) -> bool {
    match expr {
        Expr::Binary(BinaryOp::Plus, l, r) => matches!(**l, Expr::Column(c) if c == col) || matches!(**r, Expr::Column(c) if c == col),
        Expr::Binary(BinaryOp::Minus, l, _) => matches!(**l, Expr::Column(c) if c == col),
        _ => false,
    }
}

/// Splits SQL text into statements, each with the text of its
/// `COMPENSATE WITH` clause if it has one. Works on tokens, so the words in
/// strings, quoted names and comments do not count; the pieces returned are
/// slices of the original text, so quoting and escapes stay as written.
pub fn split_compensations(text: &str) -> Result<Vec<(String, Option<String>)>> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, text).tokenize_with_location().map_err(|e| CoordError::Syntax(e.to_string()))?;
    // Byte offset of each token's first character (the tokenizer counts
    // lines from 1 and characters within a line from 1).
    let mut offsets = std::collections::HashMap::new();
    let (mut line, mut column) = (1u64, 1u64);
    for (at, ch) in text.char_indices() {
        offsets.insert((line, column), at);
        if ch == '\n' {
            (line, column) = (line + 1, 1);
        } else {
            column += 1;
        }
    }
    let starts: Vec<usize> = tokens
        .iter()
        .map(|t| offsets.get(&(t.span.start.line, t.span.start.column)).copied().unwrap_or(text.len()))
        .chain(std::iter::once(text.len()))
        .collect();
    // The text of tokens[from..to], trimmed.
    let slice = |from: usize, to: usize| text[starts[from]..starts[to]].trim().to_string();
    let is_word = |t: &Token, w: &str| matches!(t, Token::Word(word) if word.quote_style.is_none() && word.value.eq_ignore_ascii_case(w));
    let mut out = Vec::new();
    let mut begin = 0;
    for end in 0..=tokens.len() {
        if end < tokens.len() && !matches!(tokens[end].token, Token::SemiColon) {
            continue;
        }
        let significant: Vec<usize> = (begin..end).filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_))).collect();
        let clause = significant.windows(2).find(|w| is_word(&tokens[w[0]].token, "COMPENSATE") && is_word(&tokens[w[1]].token, "WITH"));
        let (statement, compensation) = match clause {
            Some(w) => {
                let compensation = slice(w[1] + 1, end);
                if compensation.is_empty() {
                    return Err(CoordError::Syntax("COMPENSATE WITH needs a statement after it".into()));
                }
                (slice(begin, w[0]), Some(compensation))
            }
            None => (slice(begin, end), None),
        };
        begin = end + 1;
        if significant.is_empty() || statement.is_empty() {
            if compensation.is_some() {
                return Err(CoordError::Syntax("COMPENSATE WITH must follow a statement".into()));
            }
            continue;
        }
        out.push((statement, compensation));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_model::data::Value;

    #[test]
    fn compensate_with_is_found_outside_strings_only() {
        let split = split_compensations(
            "UPDATE t SET n = n * 2 WHERE id = 1 COMPENSATE WITH UPDATE t SET n = n / 2 WHERE id = 1; \
             INSERT INTO t VALUES (2, 'compensate with'); -- compensate with\nDELETE FROM t",
        )
        .unwrap();
        assert_eq!(split.len(), 3);
        assert_eq!(split[0].0, "UPDATE t SET n = n * 2 WHERE id = 1");
        assert_eq!(split[0].1.as_deref(), Some("UPDATE t SET n = n / 2 WHERE id = 1"));
        assert_eq!(split[1].1, None);
        assert!(split[1].0.contains("'compensate with'"));
        assert!(split[2].0.ends_with("DELETE FROM t"));
        assert!(split_compensations("UPDATE t SET n = 1 COMPENSATE WITH").is_err());
        // Pieces are the original text: escapes stay escaped.
        let split =
            split_compensations("INSERT INTO t VALUES (1, 'x''); DROP TABLE t; -- compensate'); SELECT 'é' COMPENSATE WITH DELETE FROM t WHERE s = 'a''b'")
                .unwrap();
        assert_eq!(split.len(), 2, "{split:?}");
        assert_eq!(split[0].0, "INSERT INTO t VALUES (1, 'x''); DROP TABLE t; -- compensate')");
        assert_eq!(split[1].0, "SELECT 'é'");
        assert_eq!(split[1].1.as_deref(), Some("DELETE FROM t WHERE s = 'a''b'"));
        assert!(split_compensations("COMPENSATE WITH DELETE FROM t").is_err());
    }

    #[test]
    fn deltas_are_recognised() {
        let c = || Box::new(Expr::Column(2));
        let e = || Box::new(Expr::Literal(Value::Int(5)));
        assert!(is_delta(2, &Expr::Binary(BinaryOp::Plus, c(), e())));
        assert!(is_delta(2, &Expr::Binary(BinaryOp::Plus, e(), c())));
        assert!(is_delta(2, &Expr::Binary(BinaryOp::Minus, c(), e())));
        assert!(!is_delta(2, &Expr::Binary(BinaryOp::Minus, e(), c())));
        assert!(!is_delta(2, &Expr::Binary(BinaryOp::Multiply, c(), e())));
        assert!(!is_delta(1, &Expr::Binary(BinaryOp::Plus, c(), e())));
    }
}
