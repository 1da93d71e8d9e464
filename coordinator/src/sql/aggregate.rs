//! Aggregation on the coordinator: GROUP BY keys, COUNT/SUM/MIN/MAX/AVG
//! accumulators, and the scope that binds expressions over grouped rows.
//!
//! A grouped row is `[group key values..., aggregate results...]`; HAVING,
//! the select list and ORDER BY are bound against it by [`AggScope`].

use super::bind::{self, Scope};
use crate::error::{CoordError, Result};
use sqlparser::ast;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use tessera_model::data::expr::{apply_binary, BinaryOp, Expr};
use tessera_model::data::{DataType, Value};
use tessera_model::sqlstate;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFunc {
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

/// One aggregate call; `arg` is `None` for `COUNT(*)`.
#[derive(Debug, Clone, PartialEq)]
pub struct AggCall {
    pub func: AggFunc,
    pub arg: Option<Expr>,
    pub distinct: bool,
}

impl AggCall {
    pub fn result_type(&self, inputs: &[DataType]) -> DataType {
        match self.func {
            AggFunc::Count => DataType::BigInt,
            AggFunc::Avg => DataType::Double,
            _ => self.arg.as_ref().map(|a| super::types::result_type(super::types::infer(a, inputs))).unwrap_or(DataType::BigInt),
        }
    }
}

/// Binds expressions over grouped rows.
pub struct AggScope<'a> {
    pub inner: &'a dyn Scope,
    pub group_by: Vec<Expr>,
    pub calls: RefCell<Vec<AggCall>>,
}

impl AggScope<'_> {
    fn group_column(&self, bound: &Expr) -> Option<Expr> {
        self.group_by.iter().position(|g| g == bound).map(Expr::Column)
    }

    fn aggregate(&self, f: &ast::Function) -> Result<Expr> {
        let name = f.name.to_string().to_lowercase();
        let func = match name.as_str() {
            "count" => AggFunc::Count,
            "sum" => AggFunc::Sum,
            "min" => AggFunc::Min,
            "max" => AggFunc::Max,
            _ => AggFunc::Avg,
        };
        let ast::FunctionArguments::List(list) = &f.args else {
            return Err(CoordError::Invalid(format!("{name}() needs an argument")));
        };
        let distinct = matches!(list.duplicate_treatment, Some(ast::DuplicateTreatment::Distinct));
        let arg = match list.args.as_slice() {
            [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard)] if func == AggFunc::Count && !distinct => None,
            [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e))] => {
                if bind::contains_aggregate(e) {
                    return Err(CoordError::invalid_value("aggregate function calls cannot be nested", sqlstate::GROUPING_ERROR));
                }
                Some(bind::bind(e, self.inner)?)
            }
            _ => return Err(CoordError::Invalid(format!("{name}() takes exactly one argument"))),
        };
        let call = AggCall { func, arg, distinct };
        let mut calls = self.calls.borrow_mut();
        let index = calls.iter().position(|c| *c == call).unwrap_or_else(|| {
            calls.push(call);
            calls.len() - 1
        });
        Ok(Expr::Column(self.group_by.len() + index))
    }
}

impl Scope for AggScope<'_> {
    fn column(&self, qualifier: Option<&str>, name: &str) -> Result<Expr> {
        let bound = self.inner.column(qualifier, name)?;
        self.group_column(&bound).ok_or_else(|| {
            CoordError::invalid_value(
                format!("column \"{name}\" must appear in the GROUP BY clause or be used in an aggregate function"),
                sqlstate::GROUPING_ERROR,
            )
        })
    }

    fn whole(&self, e: &ast::Expr) -> Result<Option<Expr>> {
        if let ast::Expr::Function(f) = e {
            if bind::is_aggregate(f) {
                return self.aggregate(f).map(Some);
            }
        }
        if matches!(e, ast::Expr::Identifier(_) | ast::Expr::CompoundIdentifier(_) | ast::Expr::Value(_)) || bind::contains_aggregate(e) {
            return Ok(None);
        }
        match bind::bind(e, self.inner) {
            Ok(bound) => Ok(self.group_column(&bound)),
            Err(_) => Ok(None),
        }
    }
}

/// A running aggregate.
enum Acc {
    Count(i64),
    Sum(Value),
    Min(Value),
    Max(Value),
    Avg(f64, i64),
}

struct Accumulator {
    acc: Acc,
    seen: Option<HashSet<Value>>,
}

impl Accumulator {
    fn new(call: &AggCall) -> Accumulator {
        let acc = match call.func {
            AggFunc::Count => Acc::Count(0),
            AggFunc::Sum => Acc::Sum(Value::Null),
            AggFunc::Min => Acc::Min(Value::Null),
            AggFunc::Max => Acc::Max(Value::Null),
            AggFunc::Avg => Acc::Avg(0.0, 0),
        };
        Accumulator { acc, seen: call.distinct.then(HashSet::new) }
    }

    fn add(&mut self, v: Value) -> Result<()> {
        if v.is_null() {
            return Ok(());
        }
        if let Some(seen) = &mut self.seen {
            if !seen.insert(v.clone()) {
                return Ok(());
            }
        }
        let type_error =
            |v: &Value, what: &str| CoordError::invalid_value(format!("function {what}({}) does not exist", v.type_name()), sqlstate::UNDEFINED_FUNCTION);
        match &mut self.acc {
            Acc::Count(n) => *n += 1,
            Acc::Sum(total) => {
                if !matches!(v, Value::Int(_) | Value::Double(_)) {
                    return Err(type_error(&v, "sum"));
                }
                *total = if total.is_null() { v } else { apply_binary(BinaryOp::Plus, total.clone(), v)? };
            }
            Acc::Min(m) => {
                if m.is_null() || v.sql_cmp(m) == Some(std::cmp::Ordering::Less) {
                    *m = v;
                }
            }
            Acc::Max(m) => {
                if m.is_null() || v.sql_cmp(m) == Some(std::cmp::Ordering::Greater) {
                    *m = v;
                }
            }
            Acc::Avg(sum, n) => match v {
                Value::Int(i) => {
                    *sum += i as f64;
                    *n += 1;
                }
                Value::Double(d) => {
                    *sum += d;
                    *n += 1;
                }
                other => return Err(type_error(&other, "avg")),
            },
        }
        Ok(())
    }

    fn finish(self) -> Value {
        match self.acc {
            Acc::Count(n) => Value::Int(n),
            Acc::Sum(v) | Acc::Min(v) | Acc::Max(v) => v,
            Acc::Avg(_, 0) => Value::Null,
            Acc::Avg(sum, n) => Value::Double(sum / n as f64),
        }
    }
}

/// Groups `rows` and computes the aggregates. Without GROUP BY there is
/// always exactly one group, even over no rows.
pub fn aggregate(rows: &[Vec<Value>], group_by: &[Expr], calls: &[AggCall]) -> Result<Vec<Vec<Value>>> {
    let mut order: Vec<Vec<Value>> = Vec::new();
    let mut groups: HashMap<Vec<Value>, Vec<Accumulator>> = HashMap::new();
    if group_by.is_empty() {
        order.push(Vec::new());
        groups.insert(Vec::new(), calls.iter().map(Accumulator::new).collect());
    }
    for row in rows {
        let key = group_by.iter().map(|g| g.eval(row)).collect::<std::result::Result<Vec<_>, _>>()?;
        let accs = groups.entry(key.clone()).or_insert_with(|| {
            order.push(key);
            calls.iter().map(Accumulator::new).collect()
        });
        for (acc, call) in accs.iter_mut().zip(calls) {
            let value = match &call.arg {
                None => Value::Bool(true),
                Some(arg) => arg.eval(row)?,
            };
            acc.add(value)?;
        }
    }
    Ok(order
        .into_iter()
        .map(|key| {
            let accs = groups.remove(&key).unwrap_or_default();
            let mut out = key;
            out.extend(accs.into_iter().map(Accumulator::finish));
            out
        })
        .collect())
}
