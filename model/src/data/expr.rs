//! Scalar expressions over a row, with SQL's three-valued logic.
//!
//! The shard evaluates these as scan filters; the coordinator uses the same
//! evaluator for projections, `SET` expressions, defaults and CHECK
//! constraints.

use super::{DataType, Value};
use crate::sqlstate;
use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    And,
    Or,
    Plus,
    Minus,
    Multiply,
    Divide,
    Modulo,
    Concat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    Not,
    Negate,
    IsNull,
    IsNotNull,
}

/// Scalar functions the coordinator evaluates (never pushed to shards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Abs,
    Lower,
    Upper,
    Length,
    Coalesce,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Column(usize),
    Literal(Value),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// `first op1 e1 op2 e2 ...` evaluated left to right, as the left-deep
    /// tree of [`Expr::Binary`] it stands for: a flattened chain of operators
    /// of one precedence (`a OR b OR c`, `x + 1 - y + 2`), so that thousands
    /// of terms cost no recursion. Built by [`Expr::chain`], which keeps two
    /// operands as a plain `Binary`.
    Chain(Box<Expr>, Vec<(BinaryOp, Expr)>),
    Unary(UnaryOp, Box<Expr>),
    Like {
        operand: Box<Expr>,
        pattern: Box<Expr>,
        negated: bool,
        case_insensitive: bool,
    },
    InList {
        operand: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Cast(Box<Expr>, DataType),
    Call(Function, Vec<Expr>),
}

/// Why an expression could not be evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    #[error("operator does not exist: {left} {op} {right}")]
    TypeMismatch { op: &'static str, left: &'static str, right: &'static str },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("bigint out of range")]
    Overflow,
    #[error("division by zero")]
    DivisionByZero,
    #[error("row has no column {0}")]
    NoSuchColumn(usize),
}

impl EvalError {
    /// The PostgreSQL SQLSTATE for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            EvalError::TypeMismatch { .. } => sqlstate::UNDEFINED_FUNCTION,
            EvalError::InvalidArgument(_) => sqlstate::INVALID_PARAMETER_VALUE,
            EvalError::Overflow => sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
            EvalError::DivisionByZero => sqlstate::DIVISION_BY_ZERO,
            EvalError::NoSuchColumn(_) => sqlstate::INTERNAL_ERROR,
        }
    }
}

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Eq => "=",
            BinaryOp::NotEq => "<>",
            BinaryOp::Lt => "<",
            BinaryOp::LtEq => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::GtEq => ">=",
            BinaryOp::And => "AND",
            BinaryOp::Or => "OR",
            BinaryOp::Plus => "+",
            BinaryOp::Minus => "-",
            BinaryOp::Multiply => "*",
            BinaryOp::Divide => "/",
            BinaryOp::Modulo => "%",
            BinaryOp::Concat => "||",
        }
    }
}

impl Expr {
    pub fn binary(op: BinaryOp, left: Expr, right: Expr) -> Expr {
        Expr::Binary(op, Box::new(left), Box::new(right))
    }

    /// `first op1 e1 op2 e2 ...`, left to right: `first` alone, a `Binary`
    /// for two operands, a [`Expr::Chain`] for more.
    pub fn chain(first: Expr, mut rest: Vec<(BinaryOp, Expr)>) -> Expr {
        match rest.len() {
            0 => first,
            1 => {
                let (op, right) = rest.pop().expect("one operand");
                Expr::binary(op, first, right)
            }
            _ => Expr::Chain(Box::new(first), rest),
        }
    }

    /// The AND of `terms` (`None` when there are none).
    pub fn conjunction(terms: Vec<Expr>) -> Option<Expr> {
        let mut terms = terms.into_iter();
        let first = terms.next()?;
        Some(Expr::chain(first, terms.map(|t| (BinaryOp::And, t)).collect()))
    }

    /// How deeply the expression nests; a chain counts as one level.
    #[recursive::recursive]
    pub fn depth(&self) -> usize {
        let mut deepest = 0;
        self.for_each_child(|c| deepest = deepest.max(c.depth()));
        deepest + 1
    }

    /// Calls `f` on each direct sub-expression.
    fn for_each_child<'a>(&'a self, mut f: impl FnMut(&'a Expr)) {
        match self {
            Expr::Column(_) | Expr::Literal(_) => {}
            Expr::Binary(_, l, r) => {
                f(l);
                f(r);
            }
            Expr::Chain(first, rest) => {
                f(first);
                rest.iter().for_each(|(_, e)| f(e));
            }
            Expr::Unary(_, e) | Expr::Cast(e, _) => f(e),
            Expr::Like { operand, pattern, .. } => {
                f(operand);
                f(pattern);
            }
            Expr::InList { operand, list, .. } => {
                f(operand);
                list.iter().for_each(f);
            }
            Expr::Call(_, args) => args.iter().for_each(f),
        }
    }

    /// Evaluates the expression against `row`.
    #[recursive::recursive]
    pub fn eval(&self, row: &[Value]) -> Result<Value, EvalError> {
        match self {
            Expr::Column(i) => row.get(*i).cloned().ok_or(EvalError::NoSuchColumn(*i)),
            Expr::Literal(v) => Ok(v.clone()),
            Expr::Binary(op, l, r) => eval_binary(*op, l, r, row),
            Expr::Chain(first, rest) => eval_chain(first, rest, row),
            Expr::Unary(op, e) => eval_unary(*op, e.eval(row)?),
            Expr::Like { operand, pattern, negated, case_insensitive } => match (operand.eval(row)?, pattern.eval(row)?) {
                (Value::Null, _) | (_, Value::Null) => Ok(Value::Null),
                (Value::Text(s), Value::Text(p)) => {
                    let matched = if *case_insensitive { like(&s.to_lowercase(), &p.to_lowercase()) } else { like(&s, &p) };
                    Ok(Value::Bool(matched != *negated))
                }
                (a, b) => Err(EvalError::TypeMismatch { op: "LIKE", left: a.type_name(), right: b.type_name() }),
            },
            Expr::InList { operand, list, negated } => eval_in_list(operand, list, *negated, row),
            Expr::Cast(e, ty) => cast(e.eval(row)?, *ty),
            Expr::Call(f, args) => {
                let args = args.iter().map(|a| a.eval(row)).collect::<Result<Vec<_>, _>>()?;
                call(*f, args)
            }
        }
    }

    /// True when the expression evaluates to TRUE (not FALSE, not NULL).
    pub fn matches(&self, row: &[Value]) -> Result<bool, EvalError> {
        Ok(matches!(self.eval(row)?, Value::Bool(true)))
    }

    /// True when the expression reads no column (a constant).
    pub fn is_constant(&self) -> bool {
        let mut constant = true;
        self.visit(&mut |e| {
            if matches!(e, Expr::Column(_)) {
                constant = false;
            }
        });
        constant
    }

    /// Calls `f` on this node and every sub-expression.
    #[recursive::recursive]
    pub fn visit(&self, f: &mut dyn FnMut(&Expr)) {
        f(self);
        self.for_each_child(|c| c.visit(f));
    }
}

/// The value of `left op right` once `left` is known: AND and OR look at
/// `right` only when `left` does not decide the result.
fn step(op: BinaryOp, left: Value, right: &Expr, row: &[Value]) -> Result<Value, EvalError> {
    match op {
        BinaryOp::And | BinaryOp::Or => {
            let name = op.symbol();
            let deciding = op == BinaryOp::Or;
            let left = truth(left, name)?;
            if left == Some(deciding) {
                return Ok(Value::Bool(deciding));
            }
            let right = truth(right.eval(row)?, name)?;
            Ok(match (left, right) {
                (_, Some(r)) if r == deciding => Value::Bool(deciding),
                (Some(l), Some(r)) if l == r => Value::Bool(l),
                _ => Value::Null,
            })
        }
        _ => apply_binary(op, left, right.eval(row)?),
    }
}

fn eval_binary(op: BinaryOp, l: &Expr, r: &Expr, row: &[Value]) -> Result<Value, EvalError> {
    step(op, l.eval(row)?, r, row)
}

/// A chain left to right. [`step`] skips the operands after the first FALSE
/// of an AND chain or TRUE of an OR chain, as the nested form would.
fn eval_chain(first: &Expr, rest: &[(BinaryOp, Expr)], row: &[Value]) -> Result<Value, EvalError> {
    let mut acc = first.eval(row)?;
    for (op, operand) in rest {
        acc = step(*op, acc, operand, row)?;
    }
    Ok(acc)
}

fn truth(v: Value, op: &'static str) -> Result<Option<bool>, EvalError> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(b)),
        other => Err(EvalError::TypeMismatch { op, left: other.type_name(), right: "BOOLEAN" }),
    }
}

/// Applies a non-logical binary operator to two values.
pub fn apply_binary(op: BinaryOp, a: Value, b: Value) -> Result<Value, EvalError> {
    if a.is_null() || b.is_null() {
        return Ok(Value::Null);
    }
    let mismatch = |a: &Value, b: &Value| EvalError::TypeMismatch { op: op.symbol(), left: a.type_name(), right: b.type_name() };
    match op {
        BinaryOp::Eq | BinaryOp::NotEq | BinaryOp::Lt | BinaryOp::LtEq | BinaryOp::Gt | BinaryOp::GtEq => {
            let ord = a.sql_cmp(&b).ok_or_else(|| mismatch(&a, &b))?;
            Ok(Value::Bool(match op {
                BinaryOp::Eq => ord == Ordering::Equal,
                BinaryOp::NotEq => ord != Ordering::Equal,
                BinaryOp::Lt => ord == Ordering::Less,
                BinaryOp::LtEq => ord != Ordering::Greater,
                BinaryOp::Gt => ord == Ordering::Greater,
                _ => ord != Ordering::Less,
            }))
        }
        BinaryOp::Concat => Ok(Value::Text(format!("{a}{b}"))),
        BinaryOp::Plus | BinaryOp::Minus | BinaryOp::Multiply | BinaryOp::Divide | BinaryOp::Modulo => arithmetic(op, a, b),
        BinaryOp::And | BinaryOp::Or => Err(mismatch(&a, &b)),
    }
}

fn arithmetic(op: BinaryOp, a: Value, b: Value) -> Result<Value, EvalError> {
    match (&a, &b) {
        (Value::Int(x), Value::Int(y)) => {
            let (x, y) = (*x, *y);
            let result = match op {
                BinaryOp::Plus => x.checked_add(y),
                BinaryOp::Minus => x.checked_sub(y),
                BinaryOp::Multiply => x.checked_mul(y),
                BinaryOp::Divide if y == 0 => return Err(EvalError::DivisionByZero),
                BinaryOp::Divide => x.checked_div(y),
                BinaryOp::Modulo if y == 0 => return Err(EvalError::DivisionByZero),
                _ => x.checked_rem(y),
            };
            result.map(Value::Int).ok_or(EvalError::Overflow)
        }
        (Value::Int(_) | Value::Double(_), Value::Int(_) | Value::Double(_)) => {
            let x = as_f64(&a);
            let y = as_f64(&b);
            if matches!(op, BinaryOp::Divide | BinaryOp::Modulo) && y == 0.0 {
                return Err(EvalError::DivisionByZero);
            }
            Ok(Value::Double(match op {
                BinaryOp::Plus => x + y,
                BinaryOp::Minus => x - y,
                BinaryOp::Multiply => x * y,
                BinaryOp::Divide => x / y,
                _ => x % y,
            }))
        }
        _ => Err(EvalError::TypeMismatch { op: op.symbol(), left: a.type_name(), right: b.type_name() }),
    }
}

fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Double(d) => *d,
        _ => f64::NAN,
    }
}

fn eval_unary(op: UnaryOp, v: Value) -> Result<Value, EvalError> {
    match op {
        UnaryOp::IsNull => Ok(Value::Bool(v.is_null())),
        UnaryOp::IsNotNull => Ok(Value::Bool(!v.is_null())),
        UnaryOp::Not => Ok(match truth(v, "NOT")? {
            Some(b) => Value::Bool(!b),
            None => Value::Null,
        }),
        UnaryOp::Negate => match v {
            Value::Null => Ok(Value::Null),
            Value::Int(i) => i.checked_neg().map(Value::Int).ok_or(EvalError::Overflow),
            Value::Double(d) => Ok(Value::Double(-d)),
            other => Err(EvalError::TypeMismatch { op: "-", left: "", right: other.type_name() }),
        },
    }
}

fn eval_in_list(operand: &Expr, list: &[Expr], negated: bool, row: &[Value]) -> Result<Value, EvalError> {
    let needle = operand.eval(row)?;
    if needle.is_null() {
        return Ok(Value::Null);
    }
    let mut saw_null = false;
    for item in list {
        match apply_binary(BinaryOp::Eq, needle.clone(), item.eval(row)?)? {
            Value::Bool(true) => return Ok(Value::Bool(!negated)),
            Value::Null => saw_null = true,
            _ => {}
        }
    }
    Ok(if saw_null { Value::Null } else { Value::Bool(negated) })
}

/// SQL LIKE with `%` and `_`; no escape character.
pub fn like(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let (mut ti, mut pi) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '_' || (p[pi] != '%' && p[pi] == t[ti])) {
            ti += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '%' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '%')
}

/// Converts a value to `ty` the way an explicit CAST does.
pub fn cast(v: Value, ty: DataType) -> Result<Value, EvalError> {
    let fail = |v: &Value| EvalError::InvalidArgument(format!("cannot cast {} value \"{v}\" to {ty}", v.type_name()));
    Ok(match (v, ty) {
        (Value::Null, _) => Value::Null,
        (Value::Int(i), DataType::Int | DataType::BigInt) => Value::Int(i),
        (Value::Int(i), DataType::Double) => Value::Double(i as f64),
        (Value::Double(d), DataType::Int | DataType::BigInt) => {
            let r = d.round();
            if !r.is_finite() || r < i64::MIN as f64 || r > i64::MAX as f64 {
                return Err(EvalError::Overflow);
            }
            Value::Int(r as i64)
        }
        (Value::Double(d), DataType::Double) => Value::Double(d),
        (Value::Bool(b), DataType::Boolean) => Value::Bool(b),
        (Value::Bool(b), DataType::Int | DataType::BigInt) => Value::Int(b as i64),
        (v, DataType::Text) => Value::Text(v.to_string()),
        (Value::Text(s), DataType::Int | DataType::BigInt) => Value::Int(s.trim().parse().map_err(|_| fail(&Value::Text(s.clone())))?),
        (Value::Text(s), DataType::Double) => Value::Double(s.trim().parse().map_err(|_| fail(&Value::Text(s.clone())))?),
        (Value::Text(s), DataType::Boolean) => match s.trim().to_ascii_lowercase().as_str() {
            "t" | "true" | "yes" | "on" | "1" => Value::Bool(true),
            "f" | "false" | "no" | "off" | "0" => Value::Bool(false),
            _ => return Err(fail(&Value::Text(s))),
        },
        (v, _) => return Err(fail(&v)),
    })
}

fn call(f: Function, args: Vec<Value>) -> Result<Value, EvalError> {
    let arity = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err(EvalError::InvalidArgument(format!("function {f:?} takes {n} argument(s), got {}", args.len())))
        }
    };
    match f {
        Function::Coalesce => Ok(args.into_iter().find(|v| !v.is_null()).unwrap_or(Value::Null)),
        Function::Abs => {
            arity(1)?;
            match &args[0] {
                Value::Null => Ok(Value::Null),
                Value::Int(i) => i.checked_abs().map(Value::Int).ok_or(EvalError::Overflow),
                Value::Double(d) => Ok(Value::Double(d.abs())),
                v => Err(EvalError::InvalidArgument(format!("abs() needs a number, got {}", v.type_name()))),
            }
        }
        Function::Lower | Function::Upper | Function::Length => {
            arity(1)?;
            match &args[0] {
                Value::Null => Ok(Value::Null),
                Value::Text(s) => Ok(match f {
                    Function::Lower => Value::Text(s.to_lowercase()),
                    Function::Upper => Value::Text(s.to_uppercase()),
                    _ => Value::Int(s.chars().count() as i64),
                }),
                v => Err(EvalError::InvalidArgument(format!("{f:?}() needs text, got {}", v.type_name()).to_lowercase())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(v: Value) -> Expr {
        Expr::Literal(v)
    }

    #[test]
    fn three_valued_logic() {
        let null = lit(Value::Null);
        let t = lit(Value::Bool(true));
        let f = lit(Value::Bool(false));
        let and = |a: &Expr, b: &Expr| Expr::binary(BinaryOp::And, a.clone(), b.clone()).eval(&[]).unwrap();
        let or = |a: &Expr, b: &Expr| Expr::binary(BinaryOp::Or, a.clone(), b.clone()).eval(&[]).unwrap();
        assert_eq!(and(&null, &f), Value::Bool(false));
        assert_eq!(and(&null, &t), Value::Null);
        assert_eq!(or(&null, &t), Value::Bool(true));
        assert_eq!(or(&null, &f), Value::Null);
        assert!(!Expr::binary(BinaryOp::Eq, null.clone(), null).matches(&[]).unwrap());
    }

    #[test]
    fn arithmetic_checks_overflow_and_division_by_zero() {
        let e = Expr::binary(BinaryOp::Plus, lit(Value::Int(i64::MAX)), lit(Value::Int(1)));
        assert_eq!(e.eval(&[]), Err(EvalError::Overflow));
        let e = Expr::binary(BinaryOp::Divide, Expr::Column(0), lit(Value::Int(0)));
        assert_eq!(e.eval(&[Value::Int(3)]), Err(EvalError::DivisionByZero));
        let e = Expr::binary(BinaryOp::Minus, Expr::Column(0), lit(Value::Double(0.5)));
        assert_eq!(e.eval(&[Value::Int(3)]), Ok(Value::Double(2.5)));
        let e = Expr::binary(BinaryOp::Plus, lit(Value::Text("a".into())), lit(Value::Int(1)));
        assert!(matches!(e.eval(&[]), Err(EvalError::TypeMismatch { .. })));
    }

    #[test]
    fn like_patterns() {
        assert!(like("hello", "h%o"));
        assert!(like("hello", "_ello"));
        assert!(like("", "%"));
        assert!(!like("hello", "h_o"));
        assert!(like("a%b", "a%b"));
    }

    #[test]
    fn in_list_with_nulls() {
        let e = Expr::InList { operand: Box::new(Expr::Column(0)), list: vec![lit(Value::Int(1)), lit(Value::Null)], negated: false };
        assert_eq!(e.eval(&[Value::Int(1)]), Ok(Value::Bool(true)));
        assert_eq!(e.eval(&[Value::Int(2)]), Ok(Value::Null));
    }
}
