//! Value coercion into column types, and static types of expressions.

use crate::catalog::{ColumnDef, ColumnType};
use crate::error::{CoordError, Result};
use tessera_model::data::expr::{BinaryOp, Expr, Function, UnaryOp};
use tessera_model::data::{DataType, Value};

/// Converts `value` for storage in `column`, or says why it cannot be.
pub fn coerce(value: Value, column: &ColumnDef) -> Result<Value> {
    let ty = column.column_type;
    let name = &column.name;
    let mismatch = |v: &Value| CoordError::invalid_value(format!("column \"{name}\" is of type {ty} but expression is of type {}", v.type_name()), "42804");
    let value = match (value, ty.data_type) {
        (Value::Null, _) => Value::Null,
        (Value::Int(i), DataType::Int) if i32::try_from(i).is_err() => {
            return Err(CoordError::invalid_value(format!("value {i} is out of range for column \"{name}\" of type INT"), "22003"))
        }
        (Value::Int(i), DataType::Int | DataType::BigInt) => Value::Int(i),
        (Value::Int(i), DataType::Double) => Value::Double(i as f64),
        (Value::Double(d), DataType::Double) => Value::Double(d),
        (Value::Double(d), DataType::Int | DataType::BigInt) if d.fract() == 0.0 && d.abs() < 9.0e18 => return coerce(Value::Int(d as i64), column),
        (Value::Text(s), DataType::Text) => Value::Text(s),
        (Value::Bool(b), DataType::Boolean) => Value::Bool(b),
        (Value::Text(s), DataType::Int | DataType::BigInt | DataType::Double | DataType::Boolean) => {
            // A quoted literal is accepted where its text parses, as in PostgreSQL.
            let parsed = tessera_model::data::expr::cast(Value::Text(s.clone()), ty.data_type)
                .map_err(|_| CoordError::invalid_value(format!("invalid input syntax for type {ty} of column \"{name}\": \"{s}\""), "22P02"))?;
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
            return Err(CoordError::invalid_value(format!("value too long for column \"{name}\" of type VARCHAR({max})"), "22001"));
        }
    }
    Ok(())
}

/// The type an expression produces, given the types of its input columns.
#[recursive::recursive]
pub fn infer(e: &Expr, inputs: &[DataType]) -> DataType {
    match e {
        Expr::Column(i) => inputs.get(*i).copied().unwrap_or(DataType::Text),
        Expr::Literal(v) => v.data_type().unwrap_or(DataType::Text),
        Expr::Binary(op, l, r) => match op {
            BinaryOp::Plus | BinaryOp::Minus | BinaryOp::Multiply | BinaryOp::Divide | BinaryOp::Modulo => match (infer(l, inputs), infer(r, inputs)) {
                (DataType::Double, _) | (_, DataType::Double) => DataType::Double,
                _ => DataType::BigInt,
            },
            BinaryOp::Concat => DataType::Text,
            _ => DataType::Boolean,
        },
        Expr::Chain(first, rest) => match rest.first().map(|(op, _)| *op) {
            Some(BinaryOp::Plus | BinaryOp::Minus | BinaryOp::Multiply | BinaryOp::Divide | BinaryOp::Modulo) => {
                let operands = std::iter::once(first.as_ref()).chain(rest.iter().map(|(_, e)| e));
                match operands.map(|o| infer(o, inputs)).any(|t| t == DataType::Double) {
                    true => DataType::Double,
                    false => DataType::BigInt,
                }
            }
            Some(BinaryOp::Concat) => DataType::Text,
            _ => DataType::Boolean,
        },
        Expr::Unary(UnaryOp::Negate, e) => infer(e, inputs),
        Expr::Unary(..) | Expr::Like { .. } | Expr::InList { .. } => DataType::Boolean,
        Expr::Cast(_, t) => *t,
        Expr::Call(Function::Length, _) => DataType::BigInt,
        Expr::Call(Function::Abs, args) | Expr::Call(Function::Coalesce, args) => args.first().map(|a| infer(a, inputs)).unwrap_or(DataType::Text),
        Expr::Call(Function::Lower | Function::Upper, _) => DataType::Text,
    }
}

/// Normalizes INT to BIGINT for result columns (both travel as 64-bit).
pub fn result_type(t: DataType) -> DataType {
    match t {
        DataType::Int => DataType::BigInt,
        t => t,
    }
}
