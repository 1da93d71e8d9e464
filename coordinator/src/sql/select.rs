//! Planning SELECT against one table (or none): which shard groups the key
//! access reaches, what the shards filter and limit, and the filter,
//! aggregates, order, limit and projection the coordinator applies
//! ([`crate::exec::select`] runs the plan).

use super::access;
use super::aggregate::{AggCall, AggScope};
use super::bind::{self, NoColumns, Scope};
use super::ddl::TableScope;
use super::types;
use crate::catalog::{Catalog, ShardGroupId, Table};
use crate::error::{CoordError, Result};
use crate::plan::{Fetch, KeyAccess};
use crate::result::OutputColumn;
use sqlparser::ast;
use std::sync::Arc;
use tessera_model::data::expr::Expr;
use tessera_model::data::{DataType, Value};
use tessera_model::sqlstate;

pub struct OrderKey {
    pub expr: Expr,
    pub desc: bool,
    pub nulls_first: bool,
}

pub enum Body {
    /// Projection over table rows.
    Plain,
    /// Grouping, then projection over grouped rows.
    Aggregate { group_by: Vec<Expr>, calls: Vec<AggCall>, having: Option<Expr> },
}

pub struct SelectPlan {
    pub table: Option<Arc<Table>>,
    pub filter: Option<Expr>,
    /// The conjuncts of the filter that shards evaluate.
    pub pushed: Option<Expr>,
    pub pushed_all: bool,
    pub access: KeyAccess,
    pub targets: Vec<(ShardGroupId, Fetch)>,
    /// Row limit sent to each shard (0 = none).
    pub shard_limit: u64,
    /// SELECT ... FOR UPDATE: lock the rows read.
    pub lock: bool,
    pub body: Body,
    pub projection: Vec<Expr>,
    pub order: Vec<OrderKey>,
    pub distinct: bool,
    pub limit: Option<u64>,
    pub offset: u64,
    pub columns: Vec<OutputColumn>,
}

/// Plans a query.
pub fn plan(catalog: &Catalog, query: &ast::Query) -> Result<SelectPlan> {
    if query.with.is_some() {
        return Err(CoordError::Unsupported("WITH queries".into()));
    }
    if query.fetch.is_some() || !query.pipe_operators.is_empty() {
        return Err(CoordError::Unsupported("FETCH and pipe operators".into()));
    }
    let select = match query.body.as_ref() {
        ast::SetExpr::Select(s) => s,
        ast::SetExpr::SetOperation { .. } => return Err(CoordError::Unsupported("UNION, INTERSECT and EXCEPT".into())),
        ast::SetExpr::Values(_) => return Err(CoordError::Unsupported("a VALUES list as a query".into())),
        ast::SetExpr::Query(_) => return Err(CoordError::Unsupported("parenthesized subqueries".into())),
        other => return Err(CoordError::Unsupported(format!("query {other}"))),
    };
    check_select_shape(select)?;
    let (table, alias) = from_table(catalog, select)?;
    let columns_def = table.as_ref().map(|t| t.def.columns.clone()).unwrap_or_default();
    let table_name = table.as_ref().map(|t| t.def.name.clone()).unwrap_or_default();
    let scope_holder = TableScope { table: &table_name, alias: alias.as_deref(), columns: &columns_def };
    let scope: &dyn Scope = if table.is_some() { &scope_holder } else { &NoColumns };
    let input_types: Vec<DataType> = columns_def.iter().map(|c| c.column_type.data_type).collect();

    let filter = select.selection.as_ref().map(|w| bind_condition(w, scope, &input_types, "WHERE")).transpose()?;
    let items = expand_projection(select, table.as_deref())?;
    let grouping = !matches!(&select.group_by, ast::GroupByExpr::Expressions(g, _) if g.is_empty())
        || items.iter().any(|(e, _)| bind::contains_aggregate(e))
        || select.having.is_some();
    let order_asts: Vec<&ast::OrderByExpr> = match &query.order_by {
        None => Vec::new(),
        Some(ob) => match &ob.kind {
            ast::OrderByKind::Expressions(list) => list.iter().collect(),
            ast::OrderByKind::All(_) => return Err(CoordError::Unsupported("ORDER BY ALL".into())),
        },
    };

    let (body, projection, order, output_types) = if grouping {
        plan_grouped(select, &items, &order_asts, scope, &input_types)?
    } else {
        let projection = items.iter().map(|(e, _)| bind::bind(e, scope)).collect::<Result<Vec<_>>>()?;
        let order = order_keys(&order_asts, &items, &projection, scope)?;
        let types = projection.iter().map(|e| types::result_type(types::infer(e, &input_types))).collect();
        (Body::Plain, projection, order, types)
    };
    let columns = items.iter().zip(output_types).map(|((_, name), data_type)| OutputColumn { name: name.clone(), data_type }).collect();
    let distinct = match &select.distinct {
        None | Some(ast::Distinct::All) => false,
        Some(ast::Distinct::Distinct) => true,
        Some(ast::Distinct::On(_)) => return Err(CoordError::Unsupported("DISTINCT ON".into())),
    };
    let (limit, offset) = limit_offset(query)?;
    let lock = !query.locks.is_empty();

    let (access, targets, pushed, pushed_all) = match &table {
        Some(t) => {
            let access = access::analyze(filter.as_ref(), t.def.primary_key, t.def.pk_column().column_type.data_type);
            let targets = crate::plan::targets(t, &access);
            let (pushed, all) = pushable(filter.as_ref());
            (access, targets, pushed, all)
        }
        None => (KeyAccess::Full, Vec::new(), None, true),
    };
    let simple = matches!(body, Body::Plain) && order.is_empty() && !distinct && pushed_all;
    let shard_limit = match limit {
        Some(l) if simple => l.saturating_add(offset).max(1),
        _ => 0,
    };
    Ok(SelectPlan { table, filter, pushed, pushed_all, access, targets, shard_limit, lock, body, projection, order, distinct, limit, offset, columns })
}

type Planned = (Body, Vec<Expr>, Vec<OrderKey>, Vec<DataType>);

fn plan_grouped(
    select: &ast::Select,
    items: &[(ast::Expr, String)],
    order_asts: &[&ast::OrderByExpr],
    scope: &dyn Scope,
    input_types: &[DataType],
) -> Result<Planned> {
    let group_asts: Vec<ast::Expr> = match &select.group_by {
        ast::GroupByExpr::Expressions(list, modifiers) if modifiers.is_empty() => list.clone(),
        _ => return Err(CoordError::Unsupported("GROUP BY ALL and grouping modifiers".into())),
    };
    let mut group_by = Vec::new();
    for g in &group_asts {
        let g = match position(g, items.len())? {
            Some(i) => items[i].0.clone(),
            None => g.clone(),
        };
        if bind::contains_aggregate(&g) {
            return Err(CoordError::invalid_value("aggregate functions are not allowed in GROUP BY", sqlstate::GROUPING_ERROR));
        }
        group_by.push(bind::bind(&g, scope)?);
    }
    let agg_scope = AggScope { inner: scope, group_by: group_by.clone(), calls: Default::default() };
    let projection = items.iter().map(|(e, _)| bind::bind(e, &agg_scope)).collect::<Result<Vec<_>>>()?;
    let having = select.having.as_ref().map(|h| bind::bind(h, &agg_scope)).transpose()?;
    let order = order_keys(order_asts, items, &projection, &agg_scope)?;
    let calls = agg_scope.calls.into_inner();
    let mut grouped_types: Vec<DataType> = group_by.iter().map(|g| types::infer(g, input_types)).collect();
    grouped_types.extend(calls.iter().map(|c| c.result_type(input_types)));
    let types = projection.iter().map(|e| types::result_type(types::infer(e, &grouped_types))).collect();
    Ok((Body::Aggregate { group_by, calls, having }, projection, order, types))
}

fn check_select_shape(select: &ast::Select) -> Result<()> {
    if select.top.is_some()
        || select.into.is_some()
        || !select.lateral_views.is_empty()
        || select.prewhere.is_some()
        || select.qualify.is_some()
        || !select.named_window.is_empty()
    {
        return Err(CoordError::Unsupported("TOP, INTO, LATERAL VIEW, QUALIFY and WINDOW clauses".into()));
    }
    if !select.cluster_by.is_empty() || !select.distribute_by.is_empty() || !select.sort_by.is_empty() || !select.connect_by.is_empty() {
        return Err(CoordError::Unsupported("CLUSTER BY, DISTRIBUTE BY, SORT BY and CONNECT BY".into()));
    }
    Ok(())
}

fn from_table(catalog: &Catalog, select: &ast::Select) -> Result<(Option<Arc<Table>>, Option<String>)> {
    match select.from.as_slice() {
        [] => Ok((None, None)),
        [from] if from.joins.is_empty() => match &from.relation {
            ast::TableFactor::Table { name, alias, args: None, .. } => {
                let table = catalog.get(&bind::object_name(name)?)?;
                Ok((Some(table), alias.as_ref().map(|a| bind::ident(&a.name))))
            }
            ast::TableFactor::Derived { .. } => Err(CoordError::Unsupported("subqueries in FROM".into())),
            other => Err(CoordError::Unsupported(format!("FROM {other}"))),
        },
        _ => Err(CoordError::Unsupported("joins (a query reads one table)".into())),
    }
}

/// The select list with `*` expanded, each item with its output name.
fn expand_projection(select: &ast::Select, table: Option<&Table>) -> Result<Vec<(ast::Expr, String)>> {
    let mut items = Vec::new();
    for item in &select.projection {
        match item {
            ast::SelectItem::Wildcard(_) | ast::SelectItem::QualifiedWildcard(..) => {
                let table = table.ok_or_else(|| CoordError::Invalid("SELECT * with no table specified".into()))?;
                for c in &table.def.columns {
                    items.push((ast::Expr::Identifier(ast::Ident::with_quote('"', c.name.clone())), c.name.clone()));
                }
            }
            ast::SelectItem::UnnamedExpr(e) => items.push((e.clone(), output_name(e))),
            ast::SelectItem::ExprWithAlias { expr, alias } => items.push((expr.clone(), bind::ident(alias))),
            other => return Err(CoordError::Unsupported(format!("select item {other}"))),
        }
    }
    Ok(items)
}

fn output_name(e: &ast::Expr) -> String {
    match e {
        ast::Expr::Identifier(i) => bind::ident(i),
        ast::Expr::CompoundIdentifier(parts) => parts.last().map(bind::ident).unwrap_or_default(),
        ast::Expr::Function(f) => f.name.to_string().to_lowercase(),
        ast::Expr::Cast { expr, .. } | ast::Expr::Nested(expr) => output_name(expr),
        _ => "?column?".into(),
    }
}

/// `ORDER BY 2` / `GROUP BY 1`: a 1-based position in the select list.
fn position(e: &ast::Expr, len: usize) -> Result<Option<usize>> {
    if let ast::Expr::Value(v) = e {
        if let ast::Value::Number(n, _) = &v.value {
            let i: usize = n.parse().map_err(|_| CoordError::Invalid(format!("position {n} is not an integer")))?;
            if i == 0 || i > len {
                return Err(CoordError::Invalid(format!("position {i} is not in select list")));
            }
            return Ok(Some(i - 1));
        }
    }
    Ok(None)
}

fn order_keys(asts: &[&ast::OrderByExpr], items: &[(ast::Expr, String)], projection: &[Expr], scope: &dyn Scope) -> Result<Vec<OrderKey>> {
    let mut keys = Vec::new();
    for o in asts {
        let expr = if let Some(i) = position(&o.expr, items.len())? {
            projection[i].clone()
        } else if let Some(i) = match &o.expr {
            ast::Expr::Identifier(id) => items.iter().position(|(_, name)| *name == bind::ident(id)),
            _ => None,
        } {
            projection[i].clone()
        } else {
            bind::bind(&o.expr, scope)?
        };
        let desc = matches!(o.options.sort, Some(ast::OrderBySort::Desc));
        keys.push(OrderKey { expr, desc, nulls_first: o.options.nulls_first.unwrap_or(desc) });
    }
    Ok(keys)
}

fn limit_offset(query: &ast::Query) -> Result<(Option<u64>, u64)> {
    let count = |e: &ast::Expr, what: &str| -> Result<u64> {
        let v = bind::bind(e, &NoColumns)?.eval(&[])?;
        match v {
            Value::Int(i) if i >= 0 => Ok(i as u64),
            other => Err(CoordError::invalid_value(format!("{what} must be a non-negative integer, got {other}"), sqlstate::INVALID_ROW_COUNT_IN_LIMIT_CLAUSE)),
        }
    };
    match &query.limit_clause {
        None => Ok((None, 0)),
        Some(ast::LimitClause::LimitOffset { limit, offset, limit_by }) => {
            if !limit_by.is_empty() {
                return Err(CoordError::Unsupported("LIMIT BY".into()));
            }
            let limit = match limit {
                Some(ast::Expr::Value(v)) if matches!(v.value, ast::Value::Null) => None,
                Some(e) => Some(count(e, "LIMIT")?),
                None => None,
            };
            let offset = offset.as_ref().map(|o| count(&o.value, "OFFSET")).transpose()?.unwrap_or(0);
            Ok((limit, offset))
        }
        Some(ast::LimitClause::OffsetCommaLimit { offset, limit }) => Ok((Some(count(limit, "LIMIT")?), count(offset, "OFFSET")?)),
    }
}

/// Binds a condition and checks it is boolean.
pub fn bind_condition(e: &ast::Expr, scope: &dyn Scope, input_types: &[DataType], clause: &str) -> Result<Expr> {
    if bind::contains_aggregate(e) {
        return Err(CoordError::invalid_value(format!("aggregate functions are not allowed in {clause}"), sqlstate::GROUPING_ERROR));
    }
    let bound = bind::bind(e, scope)?;
    let t = types::infer(&bound, input_types);
    if t != DataType::Boolean && !matches!(bound, Expr::Literal(Value::Null)) {
        return Err(CoordError::invalid_value(format!("argument of {clause} must be type BOOLEAN, not type {t}"), sqlstate::DATATYPE_MISMATCH));
    }
    Ok(bound)
}

/// The part of a filter shards can evaluate, and whether that is all of it.
pub fn pushable(filter: Option<&Expr>) -> (Option<Expr>, bool) {
    let Some(filter) = filter else { return (None, true) };
    let terms = access::conjuncts(filter);
    let total = terms.len();
    let shipped: Vec<Expr> = terms.into_iter().filter(|t| tessera_model::wire::expr_to_pb(t).is_some()).cloned().collect();
    let all = shipped.len() == total;
    match Expr::conjunction(shipped) {
        // Joined, the terms may nest one level too deep for the wire.
        Some(pushed) if tessera_model::wire::expr_to_pb(&pushed).is_none() => (None, false),
        pushed => (pushed, all),
    }
}
