//! The SQL layer: parse with sqlparser (PostgreSQL dialect) and plan
//! against the catalog. It builds plans and talks to nothing else: the
//! executor ([`crate::exec`]) runs them, and the rule that `sql/` imports
//! only the catalog, errors, plans, results and the model is checked by
//! `tests/layout.rs`.
//!
//! - [`shape`]: parsing with bounded depth (long runs rebalanced, 54001
//!   past the limit).
//! - [`bind`]: names and expressions to bound [`Expr`] trees.
//! - [`types`]: static types of expressions.
//! - [`access`]: primary-key access paths (point, range, full).
//! - [`select`], [`aggregate`]: planning queries; grouping and aggregates.
//! - [`write`]: planning INSERT, UPDATE and DELETE.
//! - [`ddl`]: table definitions from CREATE TABLE.
//! - [`saga`]: planning saga statements and deriving their compensations.
//! - [`params`]: binding `$1`, `$2`, ... parameters.
//!
//! [`Expr`]: tessera_model::data::expr::Expr

pub mod access;
pub mod aggregate;
pub mod bind;
pub mod ddl;
pub mod params;
pub mod saga;
pub mod select;
pub mod shape;
pub mod types;
pub mod write;

use crate::error::Result;
use sqlparser::ast::Statement;
use tessera_model::data::Value;

pub use shape::{parse, parse_expr};

/// Evaluates a DEFAULT expression (constants only).
pub fn eval_default(sql: &str) -> Result<Value> {
    Ok(bind::bind(&parse_expr(sql)?, &bind::NoColumns)?.eval(&[])?)
}

/// The statement's first keyword, upper-cased (`INSERT`, `SHOW`, ...).
pub fn first_word(statement: &Statement) -> String {
    statement.to_string().split_whitespace().next().unwrap_or("").to_uppercase()
}
