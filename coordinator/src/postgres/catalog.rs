//! Answers to the `pg_catalog` queries psql sends for `\d`, `\dt` and
//! `\d <table>`, built from Tessera's catalog, so psql describes tables as
//! the `tessera sql` shell does. Tessera has no `pg_catalog` tables: these
//! queries are recognized by their shape, and any other query that reads
//! `pg_catalog` gets an empty result (psql then shows nothing for that
//! part, e.g. foreign keys, which Tessera does not have).
//!
//! Tables appear in schema `public` with oid `16384 + table id`.

use crate::catalog::{Catalog, Table};
use crate::result::QueryResult;
use std::sync::Arc;
use tessera_model::data::{DataType, Value};

const OID_BASE: u32 = 16384;

/// psql's answer for `sql`, if it is a read of `pg_catalog` tables;
/// `None` for anything else (which the engine runs).
pub fn answer(sql: &str, catalog: &Catalog) -> Option<QueryResult> {
    // Checked before the text is copied: most queries are not catalog reads.
    if !sql.trim_start().get(..6).is_some_and(|w| w.eq_ignore_ascii_case("select")) {
        return None;
    }
    let lower = sql.trim_start().to_ascii_lowercase();
    if !lower.contains("from pg_catalog.") {
        return None;
    }
    let tables = catalog.tables();
    Some(if lower.contains("c.relkind in") && lower.contains("as \"name\"") {
        list_relations(&tables, pattern(sql).as_deref())
    } else if lower.starts_with("select c.oid,") && lower.contains("c.relname") {
        find_relation(&tables, pattern(sql).as_deref())
    } else if lower.contains("c.relchecks") {
        by_oid(&tables, &lower).map(|t| relation_info(&t)).unwrap_or_else(empty)
    } else if lower.contains("from pg_catalog.pg_attribute a") {
        by_oid(&tables, &lower).map(|t| columns(&t)).unwrap_or_else(empty)
    } else if lower.contains("pg_catalog.pg_index i") && lower.contains("indisprimary") {
        by_oid(&tables, &lower).map(|t| primary_key(&t)).unwrap_or_else(empty)
    } else if lower.contains("from pg_catalog.pg_constraint r") && lower.contains("r.contype = 'c'") {
        by_oid(&tables, &lower).map(|t| checks(&t)).unwrap_or_else(empty)
    } else {
        empty()
    })
}

/// No rows (a result with a column, so clients see a row set).
fn empty() -> QueryResult {
    QueryResult::rows(&[("?column?", DataType::Text)], Vec::new())
}

fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

fn oid(table: &Table) -> u32 {
    OID_BASE + table.def.id
}

/// The table whose oid the query names as a quoted literal
/// (`c.oid = '16385'`, `a.attrelid = '16385'`, ...).
fn by_oid(tables: &[Arc<Table>], lower: &str) -> Option<Arc<Table>> {
    let quoted = lower.split('\'').skip(1).step_by(2);
    quoted.filter_map(|s| s.parse::<u32>().ok()).find_map(|wanted| tables.iter().find(|t| oid(t) == wanted).cloned())
}

/// The name pattern of `c.relname OPERATOR(pg_catalog.~) '^(pattern)$'`.
fn pattern(sql: &str) -> Option<String> {
    let start = sql.find("OPERATOR(pg_catalog.~) '^(")? + "OPERATOR(pg_catalog.~) '^(".len();
    let end = sql[start..].find(")$'")? + start;
    Some(sql[start..end].to_string())
}

/// One element of a psql name pattern.
#[derive(Clone, Copy, PartialEq)]
enum Token {
    Char(char),
    Any,
    AnyRun,
}

/// Matches psql's regular expressions for names: literal characters, `.`
/// for any character, `.*` for any run, `\` escapes. Linear backtracking
/// over the last `.*` only, so no pattern is expensive.
fn matches(pattern: &str, name: &str) -> bool {
    let mut tokens = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '\\' => Token::Char(chars.next().unwrap_or('\\')),
            '.' if chars.peek() == Some(&'*') => {
                chars.next();
                Token::AnyRun
            }
            '.' => Token::Any,
            c => Token::Char(c),
        });
    }
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    let mut resume: Option<(usize, usize)> = None;
    while n < name.len() {
        match tokens.get(p) {
            Some(Token::AnyRun) => {
                resume = Some((p, n));
                p += 1;
            }
            Some(Token::Any) => {
                p += 1;
                n += 1;
            }
            Some(Token::Char(c)) if *c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match resume {
                Some((rp, rn)) => {
                    p = rp + 1;
                    n = rn + 1;
                    resume = Some((rp, rn + 1));
                }
                None => return false,
            },
        }
    }
    tokens[p..].iter().all(|t| *t == Token::AnyRun)
}

fn selected<'a>(tables: &'a [Arc<Table>], pattern: Option<&str>) -> impl Iterator<Item = &'a Arc<Table>> {
    let pattern = pattern.map(str::to_string);
    tables.iter().filter(move |t| pattern.as_deref().is_none_or(|p| matches(p, t.name())))
}

fn list_relations(tables: &[Arc<Table>], pattern: Option<&str>) -> QueryResult {
    let rows = selected(tables, pattern).map(|t| vec![text("public"), text(t.name()), text("table"), text("tessera")]).collect();
    QueryResult::rows(&[("Schema", DataType::Text), ("Name", DataType::Text), ("Type", DataType::Text), ("Owner", DataType::Text)], rows)
}

fn find_relation(tables: &[Arc<Table>], pattern: Option<&str>) -> QueryResult {
    let rows = selected(tables, pattern).map(|t| vec![text(oid(t).to_string()), text("public"), text(t.name())]).collect();
    QueryResult::rows(&[("oid", DataType::Text), ("nspname", DataType::Text), ("relname", DataType::Text)], rows)
}

fn relation_info(table: &Table) -> QueryResult {
    let b = |v: bool| Value::Bool(v);
    let row = vec![
        Value::Int(table.def.checks.len() as i64),
        text("r"),
        b(true),
        b(false),
        b(false),
        b(false),
        b(false),
        b(false),
        b(false),
        text(""),
        text("0"),
        text(""),
        text("p"),
        text("d"),
        text("heap"),
    ];
    let names = [
        ("relchecks", DataType::BigInt),
        ("relkind", DataType::Text),
        ("relhasindex", DataType::Boolean),
        ("relhasrules", DataType::Boolean),
        ("relhastriggers", DataType::Boolean),
        ("relrowsecurity", DataType::Boolean),
        ("relforcerowsecurity", DataType::Boolean),
        ("relhasoids", DataType::Boolean),
        ("relispartition", DataType::Boolean),
        ("reloptions", DataType::Text),
        ("reltablespace", DataType::Text),
        ("reloftype", DataType::Text),
        ("relpersistence", DataType::Text),
        ("relreplident", DataType::Text),
        ("amname", DataType::Text),
    ];
    QueryResult::rows(&names, vec![row])
}

/// The type as PostgreSQL's `format_type` spells it.
fn pg_type_name(table: &Table, i: usize) -> String {
    let column = &table.def.columns[i].column_type;
    match (column.data_type, column.max_len) {
        (DataType::Int, _) => "integer".into(),
        (DataType::BigInt, _) => "bigint".into(),
        (DataType::Text, Some(n)) => format!("character varying({n})"),
        (DataType::Text, None) => "text".into(),
        (DataType::Boolean, _) => "boolean".into(),
        (DataType::Double, _) => "double precision".into(),
    }
}

fn columns(table: &Table) -> QueryResult {
    let rows = table
        .def
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let default = c.default.clone().map(Value::Text).unwrap_or(Value::Null);
            vec![
                text(c.name.clone()),
                text(pg_type_name(table, i)),
                default,
                Value::Bool(!c.nullable || i == table.def.primary_key),
                Value::Null,
                text(""),
                text(""),
            ]
        })
        .collect();
    QueryResult::rows(
        &[
            ("attname", DataType::Text),
            ("format_type", DataType::Text),
            ("pg_get_expr", DataType::Text),
            ("attnotnull", DataType::Boolean),
            ("attcollation", DataType::Text),
            ("attidentity", DataType::Text),
            ("attgenerated", DataType::Text),
        ],
        rows,
    )
}

fn primary_key(table: &Table) -> QueryResult {
    let name = table.def.pk_constraint_name();
    let pk = &table.def.pk_column().name;
    let row = vec![
        text(name.clone()),
        Value::Bool(true),
        Value::Bool(true),
        Value::Bool(false),
        Value::Bool(true),
        text(format!("CREATE UNIQUE INDEX {name} ON public.{} USING btree ({pk})", table.name())),
        text(format!("PRIMARY KEY ({pk})")),
        text("p"),
        Value::Bool(false),
        Value::Bool(false),
        Value::Bool(false),
        text("0"),
    ];
    let names = [
        ("relname", DataType::Text),
        ("indisprimary", DataType::Boolean),
        ("indisunique", DataType::Boolean),
        ("indisclustered", DataType::Boolean),
        ("indisvalid", DataType::Boolean),
        ("pg_get_indexdef", DataType::Text),
        ("pg_get_constraintdef", DataType::Text),
        ("contype", DataType::Text),
        ("condeferrable", DataType::Boolean),
        ("condeferred", DataType::Boolean),
        ("indisreplident", DataType::Boolean),
        ("reltablespace", DataType::Text),
    ];
    QueryResult::rows(&names, vec![row])
}

fn checks(table: &Table) -> QueryResult {
    let rows = table.def.checks.iter().map(|c| vec![text(c.name.clone()), text(format!("CHECK ({})", c.sql))]).collect();
    QueryResult::rows(&[("conname", DataType::Text), ("pg_get_constraintdef", DataType::Text)], rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psql_name_patterns() {
        assert!(matches("accounts", "accounts"));
        assert!(matches("acc.*", "accounts"));
        assert!(!matches("acc.*", "bank"));
        assert!(matches("a.c", "abc"));
        assert!(matches(".*count.*", "accounts"));
        let nasty = format!("{}x", ".*".repeat(40));
        assert!(!matches(&nasty, &"a".repeat(200)), "no exponential backtracking");
        assert!(!matches("accounts", "accounts2"));
        assert_eq!(pattern("WHERE c.relname OPERATOR(pg_catalog.~) '^(accounts)$' COLLATE"), Some("accounts".into()));
    }
}
