//! The shape of a statement, bounded before anything walks it.
//!
//! The parser builds `a OR b OR c ...`, `x + 1 + 1 ...` and
//! `q UNION q UNION ...` as trees that nest one level per operator, and
//! every later walk (binding, cloning, visiting, dropping) recurses once
//! per level. So right after parsing, and before the tree leaves this
//! module:
//!
//! - a long run of one precedence of `OR`, `AND`, `+ -`, `* / %` or `||` is
//!   rebalanced into a tree of logarithmic depth whose in-order reading is
//!   unchanged ([`super::bind`] reads it back as one flat chain, left to
//!   right, so results and errors are those of the original order);
//! - what still nests deeper than `limits.max_expr_depth` expressions (or
//!   set operations) is refused with SQLSTATE 54001, naming the limit.
//!
//! The parser runs with the same limit on its own recursion. Text longer
//! than [`INLINE_BYTES`] is parsed and checked on a stack of its own, sized
//! for the text, because a refused tree is dropped here and dropping it
//! recurses once per level. What leaves this module nests at most
//! `max_expr_depth` levels, which every walk after it can afford.

use crate::error::{CoordError, Result};
use sqlparser::ast::{self, Statement, VisitMut, VisitorMut};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::{Parser, ParserError};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The default of `limits.max_expr_depth`.
pub const DEFAULT_MAX_EXPR_DEPTH: usize = 1000;

static MAX_EXPR_DEPTH: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_EXPR_DEPTH);

/// Text up to this long is parsed on the caller's stack: it cannot nest
/// deeply enough to need more.
pub const INLINE_BYTES: usize = 8 * 1024;

/// Stack for the longest chains a byte of text can make (`=1` is one
/// level per two bytes) and the frames that drop a level.
const STACK_PER_BYTE: usize = 128;

/// Runs of this many operators or more are rebalanced.
const REBALANCE_AT: usize = 8;

/// Sets `limits.max_expr_depth` for this process (from the configuration).
pub fn set_max_expr_depth(depth: usize) {
    MAX_EXPR_DEPTH.store(depth.max(16), Ordering::Relaxed);
}

pub fn max_expr_depth() -> usize {
    MAX_EXPR_DEPTH.load(Ordering::Relaxed)
}

fn too_deep(what: &str) -> CoordError {
    CoordError::TooComplex(format!(
        "statement too complex: {what} nest deeper than limits.max_expr_depth ({}); simplify the statement or raise the limit",
        max_expr_depth()
    ))
}

/// Parses SQL text into statements whose depth is bounded; errors carry
/// the line and column.
pub fn parse(sql: &str) -> Result<Vec<Statement>> {
    on_stack_for(sql, || {
        let limit = max_expr_depth();
        let mut statements =
            Parser::new(&PostgreSqlDialect {}).with_recursion_limit(limit).try_with_sql(sql).and_then(|mut p| p.parse_statements()).map_err(parser_error)?;
        for statement in &mut statements {
            bound(statement)?;
        }
        Ok(statements)
    })
}

/// Parses one expression (stored CHECK and DEFAULT text), bounded the same way.
pub fn parse_expr(sql: &str) -> Result<ast::Expr> {
    on_stack_for(sql, || {
        let mut expr = Parser::new(&PostgreSqlDialect {})
            .with_recursion_limit(max_expr_depth())
            .try_with_sql(sql)
            .and_then(|mut p| p.parse_expr())
            .map_err(parser_error)?;
        bound(&mut expr)?;
        Ok(expr)
    })
}

fn on_stack_for<T>(sql: &str, work: impl FnOnce() -> Result<T>) -> Result<T> {
    if sql.len() <= INLINE_BYTES {
        work()
    } else {
        stacker::grow(sql.len().saturating_mul(STACK_PER_BYTE).max(4 << 20), work)
    }
}

fn parser_error(e: ParserError) -> CoordError {
    match e {
        ParserError::RecursionLimitExceeded => too_deep("parentheses, subqueries or prefix operators"),
        other => CoordError::Syntax(strip_parser_prefix(other.to_string())),
    }
}

/// Drops the parser's prefix and makes sure the message has a position:
/// errors at the end of the input come without one.
fn strip_parser_prefix(message: String) -> String {
    let message = message.strip_prefix("sql parser error: ").map(str::to_string).unwrap_or(message);
    if message.contains("Line: ") {
        message
    } else {
        format!("{message} at the end of the input")
    }
}

/// Rebalances long runs and checks the depth of `node`.
fn bound<V: VisitMut>(node: &mut V) -> Result<()> {
    let mut shaper = Shaper { depth: 0, max: max_expr_depth() };
    match node.visit(&mut shaper) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(what) => Err(too_deep(what)),
    }
}

struct Shaper {
    depth: usize,
    max: usize,
}

impl VisitorMut for Shaper {
    type Break = &'static str;

    fn pre_visit_query(&mut self, query: &mut ast::Query) -> ControlFlow<&'static str> {
        // Set operations nest like operators but are not expressions.
        if set_expr_depth(&query.body) > self.max {
            return ControlFlow::Break("set operations (UNION, INTERSECT, EXCEPT)");
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &mut ast::Expr) -> ControlFlow<&'static str> {
        rebalance(expr);
        self.depth += 1;
        if self.depth > self.max {
            return ControlFlow::Break("expressions");
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _expr: &mut ast::Expr) -> ControlFlow<&'static str> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

/// How deeply set operations nest in `body`, without recursion.
fn set_expr_depth(body: &ast::SetExpr) -> usize {
    let mut deepest = 0;
    let mut todo = vec![(body, 1)];
    while let Some((e, depth)) = todo.pop() {
        deepest = deepest.max(depth);
        if let ast::SetExpr::SetOperation { left, right, .. } = e {
            todo.push((left, depth + 1));
            todo.push((right, depth + 1));
        }
    }
    deepest
}

/// Same-precedence operators: a run of them reads the same however it is
/// parenthesized, as long as the order of operands and operators is kept.
fn run_class(e: &ast::Expr) -> Option<u8> {
    match e {
        ast::Expr::BinaryOp { op, .. } => super::bind::chain_class(op),
        _ => None,
    }
}

/// Turns a long left-deep run `((a op b) op c) op d ...` into a balanced
/// tree with the same operands and operators in the same order.
fn rebalance(e: &mut ast::Expr) {
    let Some(class) = run_class(e) else { return };
    // A run the parser made has operands of other kinds on its right; a
    // rebalanced one has runs there, and stays as it is.
    if let ast::Expr::BinaryOp { right, .. } = &*e {
        if run_class(right) == Some(class) {
            return;
        }
    }
    let mut length = 0;
    let mut node = &*e;
    while let ast::Expr::BinaryOp { left, .. } = node {
        if run_class(node) != Some(class) {
            break;
        }
        length += 1;
        node = left;
    }
    if length < REBALANCE_AT {
        return;
    }
    // Take the run apart from the top: the right operands come out last
    // first, and the leftmost operand is what remains at the bottom.
    let mut tail: Vec<(ast::BinaryOperator, ast::Expr)> = Vec::with_capacity(length);
    let mut rest = std::mem::replace(e, placeholder());
    for _ in 0..length {
        match rest {
            ast::Expr::BinaryOp { left, op, right } => {
                tail.push((op, *right));
                rest = *left;
            }
            other => {
                rest = other;
                break;
            }
        }
    }
    tail.reverse();
    let (ops, rights): (Vec<_>, Vec<_>) = tail.into_iter().unzip();
    let mut operands: Vec<Option<ast::Expr>> = std::iter::once(rest).chain(rights).map(Some).collect();
    *e = balanced(&mut operands, &ops);
}

fn placeholder() -> ast::Expr {
    ast::Expr::value(ast::Value::Null)
}

/// `operands[0] ops[0] operands[1] ops[1] ...` as a balanced tree.
fn balanced(operands: &mut [Option<ast::Expr>], ops: &[ast::BinaryOperator]) -> ast::Expr {
    if operands.len() == 1 {
        return operands[0].take().expect("each operand is used once");
    }
    let mid = operands.len() / 2;
    let (lo, hi) = operands.split_at_mut(mid);
    let left = balanced(lo, &ops[..mid - 1]);
    let right = balanced(hi, &ops[mid..]);
    ast::Expr::BinaryOp { left: Box::new(left), op: ops[mid - 1].clone(), right: Box::new(right) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_of(e: &ast::Expr) -> usize {
        match e {
            ast::Expr::BinaryOp { left, right, .. } => 1 + depth_of(left).max(depth_of(right)),
            ast::Expr::Nested(e) => 1 + depth_of(e),
            _ => 1,
        }
    }

    fn chain(op: &str, terms: usize) -> String {
        let mut sql = String::from("SELECT 1");
        for _ in 1..terms {
            sql.push_str(op);
            sql.push('1');
        }
        sql
    }

    fn projection(statement: &Statement) -> &ast::Expr {
        let Statement::Query(q) = statement else { panic!("not a query") };
        let ast::SetExpr::Select(s) = q.body.as_ref() else { panic!("not a select") };
        let ast::SelectItem::UnnamedExpr(e) = &s.projection[0] else { panic!("not an expression") };
        e
    }

    #[test]
    fn long_runs_are_rebalanced_keeping_their_text() {
        let sql = "SELECT 1 + 2 - 3 + 4 - 5 + 6 - 7 + 8 - 9 + 10 - 11 + 12";
        let statements = parse(sql).unwrap();
        let e = projection(&statements[0]);
        assert!(depth_of(e) <= 5, "depth {}", depth_of(e));
        assert_eq!(statements[0].to_string(), sql);
    }

    #[test]
    fn short_runs_and_parentheses_are_left_alone() {
        let sql = "SELECT (1 + 2) + 3 - 4";
        assert_eq!(parse(sql).unwrap()[0].to_string(), sql);
        let statements = parse(sql).unwrap();
        assert_eq!(depth_of(projection(&statements[0])), 5);
    }

    #[test]
    fn a_hundred_thousand_terms_parse_shallow() {
        for op in [" + ", " OR ", " || "] {
            let statements = parse(&chain(op, 100_000)).unwrap();
            let depth = depth_of(projection(&statements[0]));
            assert!(depth <= 20, "{op}: depth {depth}");
        }
    }

    #[test]
    fn chains_that_cannot_be_rebalanced_are_refused_with_54001() {
        let casts = format!("SELECT 1{}", "::int".repeat(100_000));
        let parens = format!("SELECT {}1{}", "(".repeat(5_000), ")".repeat(5_000));
        for sql in [chain(" = ", 5_000), chain("=", 1_000_000), casts, parens] {
            let e = parse(&sql).unwrap_err();
            assert_eq!(e.sqlstate(), "54001", "{e}");
            assert!(e.to_string().contains("limits.max_expr_depth"), "{e}");
        }
        let unions = vec!["SELECT 1"; 3_000].join(" UNION ");
        assert_eq!(parse(&unions).unwrap_err().sqlstate(), "54001");
    }

    #[test]
    fn a_syntax_error_after_a_long_chain_is_reported() {
        let sql = format!("{} FROM", chain(" = ", 200_000));
        assert_eq!(parse(&sql).unwrap_err().sqlstate(), "42601");
    }

    fn eval(sql: &str) -> Result<tessera_model::data::Value> {
        let statements = parse(sql)?;
        let bound = super::super::bind::bind(projection(&statements[0]), &super::super::bind::NoColumns)?;
        Ok(bound.eval(&[])?)
    }

    #[test]
    fn rebalanced_runs_evaluate_left_to_right() {
        use tessera_model::data::Value;
        assert_eq!(eval(&format!("SELECT 100{}", " - 1".repeat(50))).unwrap(), Value::Int(50));
        assert_eq!(eval(&format!("SELECT 2{}", " * 2 / 2".repeat(40))).unwrap(), Value::Int(2));
        // Left to right, the first step overflows, as in PostgreSQL.
        let e = eval(&format!("SELECT 9223372036854775807 + 1{}", " - 1".repeat(20))).unwrap_err();
        assert_eq!(e.sqlstate(), "22003", "{e}");
        assert_eq!(eval(&format!("SELECT false{}", " OR false".repeat(30))).unwrap(), Value::Bool(false));
        assert_eq!(eval(&format!("SELECT false{} OR true", " OR NULL".repeat(30))).unwrap(), Value::Bool(true));
        assert_eq!(eval(&format!("SELECT true{} AND 1 = 1 OR false", " AND true".repeat(30))).unwrap(), Value::Bool(true));
        let text = eval(&format!("SELECT 'a'{}", (0..20).map(|i| format!(" || '{i}'")).collect::<String>())).unwrap();
        assert_eq!(text, Value::Text(format!("a{}", (0..20).map(|i| i.to_string()).collect::<String>())));
    }
}
