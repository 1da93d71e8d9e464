//! Write plans: an INSERT's rows, an UPDATE's or DELETE's reads and row
//! changes, and the validation every new row passes (types, NOT NULL,
//! CHECK).

use super::{Fetch, KeyAccess};
use crate::catalog::{ColumnDef, ColumnType, ShardGroupId, Table};
use crate::error::{CoordError, Result};
use std::collections::BTreeMap;
use std::sync::Arc;
use tessera_model::data::expr::Expr;
use tessera_model::data::{DataType, Value};
use tessera_model::sqlstate;
use tessera_model::txn::Mutation;

/// Largest number of rows one INSERT may carry.
pub const MAX_INSERT_ROWS: usize = 100_000;

/// An INSERT: its rows, validated and encoded, by shard group.
pub struct InsertPlan {
    pub table: Arc<Table>,
    pub by_group: BTreeMap<ShardGroupId, Vec<Mutation>>,
    pub rows: u64,
    pub validator: RowValidator,
}

pub enum ModifyKind {
    Update { assignments: Vec<(usize, Expr)> },
    Delete,
}

/// An UPDATE or DELETE: which rows it reads, and what it does to each.
pub struct ModifyPlan {
    pub table: Arc<Table>,
    pub kind: ModifyKind,
    pub filter: Option<Expr>,
    pub pushed: Option<Expr>,
    pub access: KeyAccess,
    pub targets: Vec<(ShardGroupId, Fetch)>,
    pub validator: RowValidator,
}

impl ModifyPlan {
    /// What the statement does to a row it read: `None` when the row fails
    /// the filter, `Some(None)` to delete it, `Some(Some(new))` to update it
    /// (validated).
    pub fn new_row(&self, values: &[Value]) -> Result<Option<Option<Vec<Value>>>> {
        if let Some(filter) = &self.filter {
            if !filter.matches(values)? {
                return Ok(None);
            }
        }
        match &self.kind {
            ModifyKind::Delete => Ok(Some(None)),
            ModifyKind::Update { assignments } => {
                let mut new = values.to_vec();
                for (col, expr) in assignments {
                    new[*col] = expr.eval(values)?;
                }
                Ok(Some(Some(self.validator.validate(new)?)))
            }
        }
    }

    pub fn verb(&self) -> &'static str {
        match self.kind {
            ModifyKind::Update { .. } => "UPDATE",
            ModifyKind::Delete => "DELETE",
        }
    }
}

/// Validates a full row for `table`: types, NOT NULL, CHECK constraints.
pub struct RowValidator {
    table: Arc<Table>,
    checks: Vec<(String, Expr)>,
}

impl RowValidator {
    /// A validator for `table` with its CHECK constraints, bound (by name).
    pub fn new(table: Arc<Table>, checks: Vec<(String, Expr)>) -> RowValidator {
        RowValidator { table, checks }
    }

    pub fn validate(&self, row: Vec<Value>) -> Result<Vec<Value>> {
        let def = &self.table.def;
        let mut out = Vec::with_capacity(row.len());
        for (value, column) in row.into_iter().zip(&def.columns) {
            let value = coerce(value, column)?;
            if value.is_null() && !column.nullable {
                return Err(CoordError::NotNullViolation(format!(
                    "null value in column \"{}\" of relation \"{}\" violates not-null constraint",
                    column.name, def.name
                )));
            }
            out.push(value);
        }
        for (name, check) in &self.checks {
            if matches!(check.eval(&out)?, Value::Bool(false)) {
                return Err(CoordError::CheckViolation(format!("new row for relation \"{}\" violates check constraint \"{name}\"", def.name)));
            }
        }
        Ok(out)
    }
}

/// Converts `value` for storage in `column`, or says why it cannot be.
pub fn coerce(value: Value, column: &ColumnDef) -> Result<Value> {
    let ty = column.column_type;
    let name = &column.name;
    let mismatch = |v: &Value| {
        CoordError::invalid_value(format!("column \"{name}\" is of type {ty} but expression is of type {}", v.type_name()), sqlstate::DATATYPE_MISMATCH)
    };
    let value = match (value, ty.data_type) {
        (Value::Null, _) => Value::Null,
        (Value::Int(i), DataType::Int) if i32::try_from(i).is_err() => {
            return Err(CoordError::invalid_value(format!("value {i} is out of range for column \"{name}\" of type INT"), sqlstate::NUMERIC_VALUE_OUT_OF_RANGE))
        }
        (Value::Int(i), DataType::Int | DataType::BigInt) => Value::Int(i),
        (Value::Int(i), DataType::Double) => Value::Double(i as f64),
        (Value::Double(d), DataType::Double) => Value::Double(d),
        (Value::Double(d), DataType::Int | DataType::BigInt) if d.fract() == 0.0 && d.abs() < 9.0e18 => return coerce(Value::Int(d as i64), column),
        (Value::Text(s), DataType::Text) => Value::Text(s),
        (Value::Bool(b), DataType::Boolean) => Value::Bool(b),
        (Value::Text(s), DataType::Int | DataType::BigInt | DataType::Double | DataType::Boolean) => {
            // A quoted literal is accepted where its text parses, as in PostgreSQL.
            let parsed = tessera_model::data::expr::cast(Value::Text(s.clone()), ty.data_type).map_err(|_| {
                CoordError::invalid_value(format!("invalid input syntax for type {ty} of column \"{name}\": \"{s}\""), sqlstate::INVALID_TEXT_REPRESENTATION)
            })?;
            return coerce(parsed, column);
        }
        (v, _) => return Err(mismatch(&v)),
    };
    check_length(&value, ty, name)?;
    Ok(value)
}

fn check_length(value: &Value, ty: ColumnType, name: &str) -> Result<()> {
    if let (Value::Text(s), Some(max)) = (value, ty.max_len) {
        if s.chars().count() > max as usize {
            return Err(CoordError::invalid_value(
                format!("value too long for column \"{name}\" of type VARCHAR({max})"),
                sqlstate::STRING_DATA_RIGHT_TRUNCATION,
            ));
        }
    }
    Ok(())
}
