//! Key access analysis: from a bound WHERE clause, find which primary keys
//! a statement can touch, so it reaches only the shard groups that hold them.
//!
//! Only top-level AND terms comparing the primary key with constants count:
//! `pk = c`, `pk IN (c, ...)`, `pk < c` (and the other comparisons, including
//! BETWEEN). Everything else is left to the filter.

use crate::plan::KeyAccess;
use std::cmp::Ordering;
use std::ops::Bound;
use tessera_model::data::expr::{BinaryOp, Expr};
use tessera_model::data::{DataType, Value};

/// Splits an expression into its top-level AND terms.
pub fn conjuncts(e: &Expr) -> Vec<&Expr> {
    let mut terms = Vec::new();
    let mut todo = vec![e];
    while let Some(e) = todo.pop() {
        match e {
            Expr::Binary(BinaryOp::And, l, r) => todo.extend([r.as_ref(), l.as_ref()]),
            Expr::Chain(first, rest) if rest.iter().all(|(op, _)| *op == BinaryOp::And) => {
                todo.extend(rest.iter().rev().map(|(_, e)| e));
                todo.push(first);
            }
            other => terms.push(other),
        }
    }
    terms
}

/// Converts a constant to the primary key's type, if it is one exactly.
fn key_value(e: &Expr, pk_type: DataType) -> Option<Value> {
    if !e.is_constant() {
        return None;
    }
    let v = e.eval(&[]).ok()?;
    match (v, pk_type) {
        (Value::Int(i), DataType::Int | DataType::BigInt) => Some(Value::Int(i)),
        (Value::Double(d), DataType::Int | DataType::BigInt) if d.fract() == 0.0 && d.abs() < 9.0e18 => Some(Value::Int(d as i64)),
        (Value::Int(i), DataType::Double) => Some(Value::Double(i as f64)),
        (Value::Double(d), DataType::Double) => Some(Value::Double(d)),
        (Value::Text(s), DataType::Text) => Some(Value::Text(s)),
        (Value::Bool(b), DataType::Boolean) => Some(Value::Bool(b)),
        _ => None,
    }
}

fn flip(op: BinaryOp) -> BinaryOp {
    match op {
        BinaryOp::Lt => BinaryOp::Gt,
        BinaryOp::LtEq => BinaryOp::GtEq,
        BinaryOp::Gt => BinaryOp::Lt,
        BinaryOp::GtEq => BinaryOp::LtEq,
        other => other,
    }
}

struct Narrowing {
    points: Option<Vec<Value>>,
    lo: Bound<Value>,
    hi: Bound<Value>,
}

impl Narrowing {
    fn points(&mut self, values: Vec<Value>) {
        self.points = Some(match self.points.take() {
            None => values,
            Some(prev) => prev.into_iter().filter(|v| values.contains(v)).collect(),
        });
    }

    fn lower(&mut self, b: Bound<Value>) {
        if tighter_lower(&b, &self.lo) {
            self.lo = b;
        }
    }

    fn upper(&mut self, b: Bound<Value>) {
        if tighter_upper(&b, &self.hi) {
            self.hi = b;
        }
    }

    fn term(&mut self, op: BinaryOp, v: Value) {
        match op {
            BinaryOp::Eq => self.points(vec![v]),
            BinaryOp::Gt => self.lower(Bound::Excluded(v)),
            BinaryOp::GtEq => self.lower(Bound::Included(v)),
            BinaryOp::Lt => self.upper(Bound::Excluded(v)),
            BinaryOp::LtEq => self.upper(Bound::Included(v)),
            _ => {}
        }
    }
}

fn tighter_lower(new: &Bound<Value>, old: &Bound<Value>) -> bool {
    match (new, old) {
        (Bound::Unbounded, _) => false,
        (_, Bound::Unbounded) => true,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => match a.sort_cmp(b) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => matches!(new, Bound::Excluded(_)),
        },
    }
}

fn tighter_upper(new: &Bound<Value>, old: &Bound<Value>) -> bool {
    match (new, old) {
        (Bound::Unbounded, _) => false,
        (_, Bound::Unbounded) => true,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => match a.sort_cmp(b) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal => matches!(new, Bound::Excluded(_)),
        },
    }
}

fn within(v: &Value, lo: &Bound<Value>, hi: &Bound<Value>) -> bool {
    let above = match lo {
        Bound::Unbounded => true,
        Bound::Included(b) => v.sort_cmp(b) != Ordering::Less,
        Bound::Excluded(b) => v.sort_cmp(b) == Ordering::Greater,
    };
    let below = match hi {
        Bound::Unbounded => true,
        Bound::Included(b) => v.sort_cmp(b) != Ordering::Greater,
        Bound::Excluded(b) => v.sort_cmp(b) == Ordering::Less,
    };
    above && below
}

/// Finds the key access path of `filter` for primary-key column `pk`.
pub fn analyze(filter: Option<&Expr>, pk: usize, pk_type: DataType) -> KeyAccess {
    let Some(filter) = filter else { return KeyAccess::Full };
    let mut n = Narrowing { points: None, lo: Bound::Unbounded, hi: Bound::Unbounded };
    for term in conjuncts(filter) {
        match term {
            Expr::Binary(op, l, r) => {
                if let (Expr::Column(c), Some(v)) = (l.as_ref(), key_value(r, pk_type)) {
                    if *c == pk {
                        n.term(*op, v);
                    }
                } else if let (Some(v), Expr::Column(c)) = (key_value(l, pk_type), r.as_ref()) {
                    if *c == pk {
                        n.term(flip(*op), v);
                    }
                }
            }
            Expr::InList { operand, list, negated: false } if matches!(operand.as_ref(), Expr::Column(c) if *c == pk) => {
                let values: Option<Vec<Value>> = list.iter().map(|e| key_value(e, pk_type)).collect();
                if let Some(mut values) = values {
                    values.sort_by(|a, b| a.sort_cmp(b));
                    values.dedup();
                    n.points(values);
                }
            }
            _ => {}
        }
    }
    match n.points {
        Some(points) => KeyAccess::Points(points.into_iter().filter(|v| within(v, &n.lo, &n.hi)).collect()),
        None if matches!((&n.lo, &n.hi), (Bound::Unbounded, Bound::Unbounded)) => KeyAccess::Full,
        None => KeyAccess::Range { lo: n.lo, hi: n.hi },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col() -> Expr {
        Expr::Column(0)
    }
    fn int(i: i64) -> Expr {
        Expr::Literal(Value::Int(i))
    }
    fn and(a: Expr, b: Expr) -> Expr {
        Expr::binary(BinaryOp::And, a, b)
    }

    #[test]
    fn equality_and_in_lists_are_points() {
        let e = Expr::binary(BinaryOp::Eq, col(), int(5));
        assert_eq!(analyze(Some(&e), 0, DataType::BigInt), KeyAccess::Points(vec![Value::Int(5)]));
        let e = Expr::InList { operand: Box::new(col()), list: vec![int(3), int(1), int(3)], negated: false };
        assert_eq!(analyze(Some(&e), 0, DataType::BigInt), KeyAccess::Points(vec![Value::Int(1), Value::Int(3)]));
        let e = and(Expr::binary(BinaryOp::Eq, col(), int(1)), Expr::binary(BinaryOp::Eq, col(), int(2)));
        assert_eq!(analyze(Some(&e), 0, DataType::BigInt), KeyAccess::Points(vec![]));
    }

    #[test]
    fn comparisons_make_ranges_and_other_terms_are_ignored() {
        let e = and(
            and(Expr::binary(BinaryOp::GtEq, col(), int(10)), Expr::binary(BinaryOp::Gt, int(20), col())),
            Expr::binary(BinaryOp::Eq, Expr::Column(1), int(7)),
        );
        assert_eq!(analyze(Some(&e), 0, DataType::BigInt), KeyAccess::Range { lo: Bound::Included(Value::Int(10)), hi: Bound::Excluded(Value::Int(20)) });
        let e = Expr::binary(BinaryOp::Or, Expr::binary(BinaryOp::Eq, col(), int(1)), Expr::binary(BinaryOp::Eq, col(), int(2)));
        assert_eq!(analyze(Some(&e), 0, DataType::BigInt), KeyAccess::Full);
        let e = Expr::binary(BinaryOp::Eq, col(), Expr::Literal(Value::Text("x".into())));
        assert_eq!(analyze(Some(&e), 0, DataType::BigInt), KeyAccess::Full, "a type mismatch is left to the filter");
    }
}
