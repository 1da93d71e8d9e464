//! Static types of expressions (coercion into column types is
//! [`crate::plan::write::coerce`]).

use tessera_model::data::expr::{BinaryOp, Expr, Function, UnaryOp};
use tessera_model::data::DataType;

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
