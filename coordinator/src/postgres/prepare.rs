//! Parse in the extended query protocol: one statement per Parse, checked
//! and parsed once, with its parameter types. Types are inferred from where
//! a parameter stands (`id = $1` takes the type of `id`, the N-th VALUES
//! entry the type of the N-th column, LIMIT a BIGINT; TEXT otherwise),
//! unless the client gave them.

use super::reply::{pg_type, refused_text, user_error};
use crate::catalog::Catalog;
use crate::error::CoordError;
use crate::exec::Engine;
use crate::sql::params::placeholder_index;
use crate::sql::saga::parse_with_compensations;
use async_trait::async_trait;
use pgwire::api::portal::Format;
use pgwire::api::results::FieldInfo;
use pgwire::api::stmt::QueryParser;
use pgwire::api::{ClientInfo, Type};
use pgwire::error::PgWireResult;
use sqlparser::ast::{self, Expr, Statement, Visit, Visitor};
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;

/// A statement of the extended protocol, parsed once at Parse.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub(super) sql: String,
    /// `None` for text the engine handles before parsing (SHOW SAGAS ...).
    pub(super) statement: Option<Arc<(Statement, Option<String>)>>,
    pub(super) parameters: Vec<Type>,
}

pub struct Parser {
    engine: Arc<Engine>,
}

impl Parser {
    pub fn new(engine: Arc<Engine>) -> Parser {
        Parser { engine }
    }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(&self, _client: &C, sql: &str, types: &[Option<Type>]) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        if let Some(e) = refused_text(sql) {
            return Err(user_error(&e));
        }
        self.engine.check_length(sql).map_err(|e| user_error(&e))?;
        let words: Vec<String> = sql.split_whitespace().take(2).map(|w| w.to_ascii_lowercase()).collect();
        if matches!(words.iter().map(String::as_str).collect::<Vec<_>>().as_slice(), ["show", "sagas" | "sagas;" | "saga"] | ["resume", "saga"]) {
            return Ok(Some(Prepared { sql: sql.to_string(), statement: None, parameters: Vec::new() }));
        }
        let mut statements = parse_with_compensations(sql).map_err(|e| user_error(&e))?;
        if statements.len() > 1 {
            return Err(user_error(&CoordError::Syntax("cannot insert multiple commands into a prepared statement".into())));
        }
        let Some(statement) = statements.pop() else { return Ok(None) };
        crate::sql::params::check_placeholders(&statement.0).map_err(|e| user_error(&e))?;
        let mut parameters = infer_parameters(self.engine.catalog(), &statement.0);
        for (i, t) in types.iter().enumerate().take(crate::sql::params::MAX_PARAMETERS) {
            if let Some(t) = t.as_ref().filter(|t| **t != Type::UNKNOWN) {
                if i >= parameters.len() {
                    parameters.resize(i + 1, Type::TEXT);
                }
                parameters[i] = t.clone();
            }
        }
        Ok(Some(Prepared { sql: sql.to_string(), statement: Some(Arc::new(statement)), parameters }))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(stmt.parameters.clone())
    }

    fn get_result_schema(&self, _stmt: &Prepared, _format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        Ok(Vec::new())
    }
}

/// Infers parameter types from where each `$N` stands.
fn infer_parameters(catalog: &Catalog, statement: &Statement) -> Vec<Type> {
    let table = statement_table(statement).and_then(|name| catalog.get(&name).ok());
    let column_type = |name: &str| -> Option<Type> {
        let table = table.as_ref()?;
        let i = table.def.column_index(&name.to_ascii_lowercase())?;
        Some(pg_type(table.def.columns[i].column_type.data_type))
    };
    let mut found = Inference { types: BTreeMap::new(), count: 0, column_type: &column_type };
    let _ = Visit::visit(statement, &mut found);
    match statement {
        Statement::Insert(insert) => {
            if let Some(ast::SetExpr::Values(values)) = insert.source.as_ref().map(|s| s.body.as_ref()) {
                let names: Vec<String> = match (&insert.columns, &table) {
                    (columns, _) if !columns.is_empty() => columns.iter().map(|c| c.to_string().trim_matches('"').to_ascii_lowercase()).collect(),
                    (_, Some(t)) => t.def.columns.iter().map(|c| c.name.clone()).collect(),
                    _ => Vec::new(),
                };
                for row in &values.rows {
                    for (expr, name) in row.iter().zip(&names) {
                        if let (Some(i), Some(t)) = (placeholder_index(expr), column_type(name)) {
                            found.types.entry(i).or_insert(t);
                        }
                    }
                }
            }
        }
        Statement::Update(update) => {
            for a in &update.assignments {
                if let (ast::AssignmentTarget::ColumnName(name), Some(i)) = (&a.target, placeholder_index(&a.value)) {
                    if let Some(t) = name.0.last().and_then(|p| p.as_ident()).and_then(|id| column_type(&id.value)) {
                        found.types.entry(i).or_insert(t);
                    }
                }
            }
        }
        Statement::Query(q) => {
            for e in q.limit_clause.iter().flat_map(limit_exprs) {
                if let Some(i) = placeholder_index(e) {
                    found.types.entry(i).or_insert(Type::INT8);
                }
            }
        }
        _ => {}
    }
    (0..found.count).map(|i| found.types.get(&i).cloned().unwrap_or(Type::TEXT)).collect()
}

fn limit_exprs(clause: &ast::LimitClause) -> Vec<&Expr> {
    match clause {
        ast::LimitClause::LimitOffset { limit, offset, .. } => limit.iter().chain(offset.iter().map(|o| &o.value)).collect(),
        ast::LimitClause::OffsetCommaLimit { offset, limit } => vec![offset, limit],
    }
}

struct Inference<'a> {
    types: BTreeMap<usize, Type>,
    /// Number of parameters: the highest `$N` seen.
    count: usize,
    column_type: &'a dyn Fn(&str) -> Option<Type>,
}

fn column_name(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Identifier(id) => Some(&id.value),
        Expr::CompoundIdentifier(parts) => parts.last().map(|id| id.value.as_str()),
        Expr::Nested(inner) => column_name(inner),
        _ => None,
    }
}

impl Visitor for Inference<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Some(i) = placeholder_index(expr) {
            self.count = self.count.max(i + 1);
            return ControlFlow::Continue(());
        }
        let mut pair = |column: &Expr, other: &Expr| {
            if let (Some(name), Some(i)) = (column_name(column), placeholder_index(other)) {
                if let Some(t) = (self.column_type)(name) {
                    self.types.entry(i).or_insert(t);
                }
            }
        };
        match expr {
            Expr::BinaryOp { left, right, .. } => {
                pair(left, right);
                pair(right, left);
            }
            Expr::InList { expr: column, list, .. } => list.iter().for_each(|e| pair(column, e)),
            Expr::Between { expr: column, low, high, .. } => {
                pair(column, low);
                pair(column, high);
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// The table a statement reads or writes, by name.
fn statement_table(statement: &Statement) -> Option<String> {
    let name = match statement {
        Statement::Insert(i) => match &i.table {
            ast::TableObject::TableName(name) => name.to_string(),
            _ => return None,
        },
        Statement::Update(u) => match &u.table.relation {
            ast::TableFactor::Table { name, .. } => name.to_string(),
            _ => return None,
        },
        Statement::Delete(d) => {
            let from = match &d.from {
                ast::FromTable::WithFromKeyword(t) | ast::FromTable::WithoutKeyword(t) => t,
            };
            match from.first().map(|t| &t.relation) {
                Some(ast::TableFactor::Table { name, .. }) => name.to_string(),
                _ => return None,
            }
        }
        Statement::Query(q) => match q.body.as_ref() {
            ast::SetExpr::Select(s) => match s.from.first().map(|t| &t.relation) {
                Some(ast::TableFactor::Table { name, .. }) => name.to_string(),
                _ => return None,
            },
            _ => return None,
        },
        _ => return None,
    };
    Some(name.trim_matches('"').to_ascii_lowercase())
}
