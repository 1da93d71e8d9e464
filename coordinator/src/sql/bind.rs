//! Binding: turns sqlparser expressions into [`Expr`] trees whose columns
//! are indexes, resolving names through a [`Scope`].

use crate::error::{CoordError, Result};
use sqlparser::ast;
use tessera_model::data::expr::{BinaryOp, Expr, Function, UnaryOp};
use tessera_model::data::{DataType, Value};
use tessera_model::sqlstate;

/// Resolves names (and, after aggregation, whole expressions) to columns.
pub trait Scope {
    /// Resolves `qualifier.name` or `name` to an expression.
    fn column(&self, qualifier: Option<&str>, name: &str) -> Result<Expr>;

    /// Resolves an expression as a whole before looking inside it (used for
    /// GROUP BY expressions and aggregate calls). `None` means "look inside".
    fn whole(&self, _expr: &ast::Expr) -> Result<Option<Expr>> {
        Ok(None)
    }
}

/// A scope with no columns: constants only (VALUES, DEFAULT).
pub struct NoColumns;

impl Scope for NoColumns {
    fn column(&self, _qualifier: Option<&str>, name: &str) -> Result<Expr> {
        Err(CoordError::UnknownColumn(format!("column \"{name}\" cannot be referenced here")))
    }
}

/// Normalizes an identifier: unquoted names fold to lower case.
pub fn ident(i: &ast::Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

/// The last part of an object name (`schema.table` -> `table`).
pub fn object_name(name: &ast::ObjectName) -> Result<String> {
    match name.0.last() {
        Some(ast::ObjectNamePart::Identifier(i)) => Ok(ident(i)),
        _ => Err(CoordError::Unsupported(format!("object name {name}"))),
    }
}

/// Is this a call to an aggregate function?
pub fn is_aggregate(f: &ast::Function) -> bool {
    let name = f.name.to_string().to_lowercase();
    matches!(name.as_str(), "count" | "sum" | "min" | "max" | "avg")
}

/// True when the expression contains an aggregate call.
pub fn contains_aggregate(e: &ast::Expr) -> bool {
    let mut found = false;
    let _ = sqlparser::ast::visit_expressions(e, |e| {
        if let ast::Expr::Function(f) = e {
            if is_aggregate(f) {
                found = true;
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    found
}

#[recursive::recursive]
pub fn bind(e: &ast::Expr, scope: &dyn Scope) -> Result<Expr> {
    if let Some(bound) = scope.whole(e)? {
        return Ok(bound);
    }
    let b = |e: &ast::Expr| bind(e, scope).map(Box::new);
    Ok(match e {
        ast::Expr::BinaryOp { op, .. } if chain_class(op).is_some() => bind_chain(e, scope)?,
        ast::Expr::Identifier(i) => scope.column(None, &ident(i))?,
        ast::Expr::CompoundIdentifier(parts) if parts.len() == 2 => scope.column(Some(&ident(&parts[0])), &ident(&parts[1]))?,
        ast::Expr::Value(v) => Expr::Literal(literal(&v.value)?),
        ast::Expr::Nested(inner) => bind(inner, scope)?,
        ast::Expr::BinaryOp { left, op, right } => Expr::binary(binary_op(op)?, bind(left, scope)?, bind(right, scope)?),
        ast::Expr::UnaryOp { op, expr } => match op {
            ast::UnaryOperator::Not => Expr::Unary(UnaryOp::Not, b(expr)?),
            ast::UnaryOperator::Minus => negate(bind(expr, scope)?),
            ast::UnaryOperator::Plus => bind(expr, scope)?,
            other => return Err(CoordError::Unsupported(format!("unary operator {other}"))),
        },
        ast::Expr::IsNull(e) => Expr::Unary(UnaryOp::IsNull, b(e)?),
        ast::Expr::IsNotNull(e) => Expr::Unary(UnaryOp::IsNotNull, b(e)?),
        ast::Expr::IsTrue(e) => is_bool(bind(e, scope)?, true, false),
        ast::Expr::IsFalse(e) => is_bool(bind(e, scope)?, false, false),
        ast::Expr::IsNotTrue(e) => is_bool(bind(e, scope)?, true, true),
        ast::Expr::IsNotFalse(e) => is_bool(bind(e, scope)?, false, true),
        ast::Expr::InList { expr, list, negated } => {
            Expr::InList { operand: b(expr)?, list: list.iter().map(|e| bind(e, scope)).collect::<Result<_>>()?, negated: *negated }
        }
        ast::Expr::Between { expr, negated, low, high } => {
            let operand = bind(expr, scope)?;
            let range = Expr::binary(
                BinaryOp::And,
                Expr::binary(BinaryOp::GtEq, operand.clone(), bind(low, scope)?),
                Expr::binary(BinaryOp::LtEq, operand, bind(high, scope)?),
            );
            if *negated {
                Expr::Unary(UnaryOp::Not, Box::new(range))
            } else {
                range
            }
        }
        ast::Expr::Like { negated, any: false, expr, pattern, escape_char: None } => {
            Expr::Like { operand: b(expr)?, pattern: b(pattern)?, negated: *negated, case_insensitive: false }
        }
        ast::Expr::ILike { negated, any: false, expr, pattern, escape_char: None } => {
            Expr::Like { operand: b(expr)?, pattern: b(pattern)?, negated: *negated, case_insensitive: true }
        }
        ast::Expr::Cast { expr, data_type, .. } => Expr::Cast(b(expr)?, column_type(data_type)?.0),
        ast::Expr::Function(f) => function(f, scope)?,
        other => return Err(CoordError::Unsupported(format!("expression {other}"))),
    })
}

/// Operators that chain: the same class means the same precedence, and a
/// run of them binds as one flat [`Expr::Chain`].
pub fn chain_class(op: &ast::BinaryOperator) -> Option<u8> {
    use ast::BinaryOperator as B;
    match op {
        B::Or => Some(0),
        B::And => Some(1),
        B::Plus | B::Minus => Some(2),
        B::Multiply | B::Divide | B::Modulo => Some(3),
        B::StringConcat => Some(4),
        _ => None,
    }
}

/// Binds a run of same-precedence operators as one chain, reading the
/// operands in order without recursion: the parser nests `a + b + c` to
/// the left, and the statement checker ([`super::shape`]) may have
/// rebalanced a long run into a shallow tree with the same order.
/// Parentheses (`Nested`) end a run, and so does a part of the run that
/// the scope resolves as a whole (`a + b` in `GROUP BY a + b`).
fn bind_chain(e: &ast::Expr, scope: &dyn Scope) -> Result<Expr> {
    let ast::Expr::BinaryOp { op: root_op, .. } = e else { return bind(e, scope) };
    let class = chain_class(root_op);
    let mut operands: Vec<Expr> = Vec::new();
    let mut ops: Vec<BinaryOp> = Vec::new();
    let mut pending: Vec<(&ast::Expr, &ast::BinaryOperator)> = Vec::new();
    let mut node = Some(e);
    loop {
        while let Some(n) = node.take() {
            match n {
                ast::Expr::BinaryOp { left, op, right } if chain_class(op) == class => {
                    let whole = if std::ptr::eq(n, e) { None } else { scope.whole(n)? };
                    match whole {
                        Some(bound) => operands.push(bound),
                        None => {
                            pending.push((right, op));
                            node = Some(left);
                        }
                    }
                }
                other => operands.push(bind(other, scope)?),
            }
        }
        let Some((right, op)) = pending.pop() else { break };
        ops.push(binary_op(op)?);
        node = Some(right);
    }
    let mut operands = operands.into_iter();
    let first = operands.next().expect("a chain has operands");
    Ok(Expr::chain(first, ops.into_iter().zip(operands).collect()))
}

fn negate(e: Expr) -> Expr {
    match e {
        Expr::Literal(Value::Int(i)) if i != i64::MIN => Expr::Literal(Value::Int(-i)),
        Expr::Literal(Value::Double(d)) => Expr::Literal(Value::Double(-d)),
        other => Expr::Unary(UnaryOp::Negate, Box::new(other)),
    }
}

/// `x IS [NOT] TRUE/FALSE`: never NULL.
fn is_bool(e: Expr, target: bool, negated: bool) -> Expr {
    let eq = Expr::binary(BinaryOp::Eq, e, Expr::Literal(Value::Bool(target)));
    let known = Expr::Call(Function::Coalesce, vec![eq, Expr::Literal(Value::Bool(false))]);
    if negated {
        Expr::Unary(UnaryOp::Not, Box::new(known))
    } else {
        known
    }
}

fn function(f: &ast::Function, scope: &dyn Scope) -> Result<Expr> {
    let name = f.name.to_string().to_lowercase();
    if is_aggregate(f) {
        return Err(CoordError::Invalid(format!("aggregate function {name}() is not allowed here")));
    }
    let function = match name.as_str() {
        "abs" => Function::Abs,
        "lower" => Function::Lower,
        "upper" => Function::Upper,
        "length" | "char_length" => Function::Length,
        "coalesce" => Function::Coalesce,
        _ => return Err(CoordError::Unsupported(format!("function {name}()"))),
    };
    let args = function_args(f)?.iter().map(|a| bind(a, scope)).collect::<Result<Vec<_>>>()?;
    Ok(Expr::Call(function, args))
}

/// Plain positional arguments of a call; `*` is returned as `None` entries by
/// [`aggregate_args`] instead.
pub fn function_args(f: &ast::Function) -> Result<Vec<&ast::Expr>> {
    let list = match &f.args {
        ast::FunctionArguments::None => return Ok(Vec::new()),
        ast::FunctionArguments::List(list) => list,
        ast::FunctionArguments::Subquery(_) => return Err(CoordError::Unsupported("subqueries".into())),
    };
    list.args
        .iter()
        .map(|a| match a {
            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => Ok(e),
            other => Err(CoordError::Unsupported(format!("function argument {other}"))),
        })
        .collect()
}

fn binary_op(op: &ast::BinaryOperator) -> Result<BinaryOp> {
    use ast::BinaryOperator as B;
    Ok(match op {
        B::Eq => BinaryOp::Eq,
        B::NotEq => BinaryOp::NotEq,
        B::Lt => BinaryOp::Lt,
        B::LtEq => BinaryOp::LtEq,
        B::Gt => BinaryOp::Gt,
        B::GtEq => BinaryOp::GtEq,
        B::And => BinaryOp::And,
        B::Or => BinaryOp::Or,
        B::Plus => BinaryOp::Plus,
        B::Minus => BinaryOp::Minus,
        B::Multiply => BinaryOp::Multiply,
        B::Divide => BinaryOp::Divide,
        B::Modulo => BinaryOp::Modulo,
        B::StringConcat => BinaryOp::Concat,
        other => return Err(CoordError::Unsupported(format!("operator {other}"))),
    })
}

/// A SQL literal as a value.
pub fn literal(v: &ast::Value) -> Result<Value> {
    Ok(match v {
        ast::Value::Number(n, _) => match n.parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Double(n.parse().map_err(|_| CoordError::invalid_value(format!("invalid number {n}"), sqlstate::INVALID_TEXT_REPRESENTATION))?),
        },
        ast::Value::SingleQuotedString(s) | ast::Value::EscapedStringLiteral(s) if s.contains('\0') => {
            return Err(CoordError::invalid_value(
                "invalid byte sequence for encoding \"UTF8\": 0x00 (a NUL byte in a string literal)",
                sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
            ))
        }
        ast::Value::SingleQuotedString(s) | ast::Value::EscapedStringLiteral(s) => Value::Text(s.clone()),
        ast::Value::Boolean(b) => Value::Bool(*b),
        ast::Value::Null => Value::Null,
        ast::Value::Placeholder(p) => return Err(CoordError::Unsupported(format!("query parameter {p}"))),
        other => return Err(CoordError::Unsupported(format!("literal {other}"))),
    })
}

/// Maps a SQL type to a column type: (type, VARCHAR length).
pub fn column_type(t: &ast::DataType) -> Result<(DataType, Option<u32>)> {
    use ast::DataType as T;
    Ok(match t {
        T::Int(_) | T::Integer(_) | T::Int4(_) | T::SmallInt(_) | T::Int2(_) => (DataType::Int, None),
        T::BigInt(_) | T::Int8(_) | T::Int64 => (DataType::BigInt, None),
        T::Text | T::String(None) => (DataType::Text, None),
        T::Varchar(len) | T::CharacterVarying(len) => {
            let max = match len {
                Some(ast::CharacterLength::IntegerLength { length, .. }) => {
                    Some(u32::try_from(*length).map_err(|_| CoordError::Invalid(format!("length {length} for VARCHAR is too large")))?)
                }
                _ => None,
            };
            (DataType::Text, max)
        }
        T::Boolean | T::Bool => (DataType::Boolean, None),
        T::Double(_) | T::DoublePrecision | T::Float8 | T::Float64 | T::Real | T::Float4 | T::Float(_) => (DataType::Double, None),
        other => return Err(CoordError::Unsupported(format!("type {other}"))),
    })
}
