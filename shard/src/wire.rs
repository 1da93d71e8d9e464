//! Conversions between the shard protocol's protobuf types and domain types.
//! The coordinator uses the `*_to_pb` direction, the shard service the other.

use crate::data::expr::{BinaryOp, Expr, UnaryOp};
use crate::data::Value;
use crate::txn::{Mutation, MutationOp, TxnContext};
use tessera_proto::shard as pb;

/// Nesting limit for filter expressions from the wire.
const MAX_EXPR_DEPTH: usize = 128;

pub fn value_to_pb(v: &Value) -> pb::Value {
    use pb::value::Kind;
    pb::Value {
        kind: Some(match v {
            Value::Null => Kind::Null(true),
            Value::Int(i) => Kind::Int(*i),
            Value::Text(s) => Kind::Text(s.clone()),
            Value::Bool(b) => Kind::Boolean(*b),
            Value::Double(d) => Kind::Double(*d),
        }),
    }
}

pub fn value_from_pb(v: pb::Value) -> Value {
    use pb::value::Kind;
    match v.kind {
        None | Some(Kind::Null(_)) => Value::Null,
        Some(Kind::Int(i)) => Value::Int(i),
        Some(Kind::Text(s)) => Value::Text(s),
        Some(Kind::Boolean(b)) => Value::Bool(b),
        Some(Kind::Double(d)) => Value::Double(d),
    }
}

fn binary_to_pb(op: BinaryOp) -> pb::BinaryOp {
    match op {
        BinaryOp::Eq => pb::BinaryOp::Eq,
        BinaryOp::NotEq => pb::BinaryOp::NotEq,
        BinaryOp::Lt => pb::BinaryOp::Lt,
        BinaryOp::LtEq => pb::BinaryOp::LtEq,
        BinaryOp::Gt => pb::BinaryOp::Gt,
        BinaryOp::GtEq => pb::BinaryOp::GtEq,
        BinaryOp::And => pb::BinaryOp::And,
        BinaryOp::Or => pb::BinaryOp::Or,
        BinaryOp::Plus => pb::BinaryOp::Plus,
        BinaryOp::Minus => pb::BinaryOp::Minus,
        BinaryOp::Multiply => pb::BinaryOp::Multiply,
        BinaryOp::Divide => pb::BinaryOp::Divide,
        BinaryOp::Modulo => pb::BinaryOp::Modulo,
        BinaryOp::Concat => pb::BinaryOp::Concat,
    }
}

fn binary_from_pb(op: i32) -> Result<BinaryOp, String> {
    Ok(match pb::BinaryOp::try_from(op).map_err(|_| format!("unknown binary operator {op}"))? {
        pb::BinaryOp::Eq => BinaryOp::Eq,
        pb::BinaryOp::NotEq => BinaryOp::NotEq,
        pb::BinaryOp::Lt => BinaryOp::Lt,
        pb::BinaryOp::LtEq => BinaryOp::LtEq,
        pb::BinaryOp::Gt => BinaryOp::Gt,
        pb::BinaryOp::GtEq => BinaryOp::GtEq,
        pb::BinaryOp::And => BinaryOp::And,
        pb::BinaryOp::Or => BinaryOp::Or,
        pb::BinaryOp::Plus => BinaryOp::Plus,
        pb::BinaryOp::Minus => BinaryOp::Minus,
        pb::BinaryOp::Multiply => BinaryOp::Multiply,
        pb::BinaryOp::Divide => BinaryOp::Divide,
        pb::BinaryOp::Modulo => BinaryOp::Modulo,
        pb::BinaryOp::Concat => BinaryOp::Concat,
        pb::BinaryOp::Unspecified => return Err("binary operator is unspecified".into()),
    })
}

fn unary_to_pb(op: UnaryOp) -> pb::UnaryOp {
    match op {
        UnaryOp::Not => pb::UnaryOp::Not,
        UnaryOp::Negate => pb::UnaryOp::Negate,
        UnaryOp::IsNull => pb::UnaryOp::IsNull,
        UnaryOp::IsNotNull => pb::UnaryOp::IsNotNull,
    }
}

fn unary_from_pb(op: i32) -> Result<UnaryOp, String> {
    Ok(match pb::UnaryOp::try_from(op).map_err(|_| format!("unknown unary operator {op}"))? {
        pb::UnaryOp::Not => UnaryOp::Not,
        pb::UnaryOp::Negate => UnaryOp::Negate,
        pb::UnaryOp::IsNull => UnaryOp::IsNull,
        pb::UnaryOp::IsNotNull => UnaryOp::IsNotNull,
        pb::UnaryOp::Unspecified => return Err("unary operator is unspecified".into()),
    })
}

/// Converts a filter for the wire; `None` if it uses something shards do not
/// evaluate (casts and functions stay on the coordinator).
pub fn expr_to_pb(e: &Expr) -> Option<pb::Expr> {
    use pb::expr::Kind;
    let boxed = |e: &Expr| expr_to_pb(e).map(Box::new);
    let kind = match e {
        Expr::Column(i) => Kind::Column(u32::try_from(*i).ok()?),
        Expr::Literal(v) => Kind::Literal(value_to_pb(v)),
        Expr::Binary(op, l, r) => Kind::Binary(Box::new(pb::BinaryExpr { op: binary_to_pb(*op) as i32, left: boxed(l), right: boxed(r) })),
        Expr::Unary(op, e) => Kind::Unary(Box::new(pb::UnaryExpr { op: unary_to_pb(*op) as i32, operand: boxed(e) })),
        Expr::Like { operand, pattern, negated, case_insensitive } => {
            Kind::Like(Box::new(pb::LikeExpr { operand: boxed(operand), pattern: boxed(pattern), negated: *negated, case_insensitive: *case_insensitive }))
        }
        Expr::InList { operand, list, negated } => {
            Kind::InList(Box::new(pb::InListExpr { operand: boxed(operand), list: list.iter().map(expr_to_pb).collect::<Option<_>>()?, negated: *negated }))
        }
        Expr::Cast(..) | Expr::Call(..) => return None,
    };
    Some(pb::Expr { kind: Some(kind) })
}

/// Converts a filter from the wire, rejecting malformed trees.
pub fn expr_from_pb(e: pb::Expr) -> Result<Expr, String> {
    expr_from_pb_at(e, 0)
}

fn expr_from_pb_at(e: pb::Expr, depth: usize) -> Result<Expr, String> {
    use pb::expr::Kind;
    if depth > MAX_EXPR_DEPTH {
        return Err(format!("filter nests deeper than {MAX_EXPR_DEPTH} levels"));
    }
    let sub = |e: Option<Box<pb::Expr>>, what: &str| -> Result<Box<Expr>, String> {
        expr_from_pb_at(*e.ok_or_else(|| format!("filter {what} is missing"))?, depth + 1).map(Box::new)
    };
    Ok(match e.kind.ok_or("filter expression is empty")? {
        Kind::Column(i) => Expr::Column(i as usize),
        Kind::Literal(v) => Expr::Literal(value_from_pb(v)),
        Kind::Binary(b) => Expr::Binary(binary_from_pb(b.op)?, sub(b.left, "left operand")?, sub(b.right, "right operand")?),
        Kind::Unary(u) => Expr::Unary(unary_from_pb(u.op)?, sub(u.operand, "operand")?),
        Kind::Like(l) => Expr::Like {
            operand: sub(l.operand, "LIKE operand")?,
            pattern: sub(l.pattern, "LIKE pattern")?,
            negated: l.negated,
            case_insensitive: l.case_insensitive,
        },
        Kind::InList(l) => Expr::InList {
            operand: sub(l.operand, "IN operand")?,
            list: l.list.into_iter().map(|e| expr_from_pb_at(e, depth + 1)).collect::<Result<_, _>>()?,
            negated: l.negated,
        },
    })
}

pub fn txn_to_pb(t: &TxnContext) -> pb::TxnContext {
    pb::TxnContext { txn_id: t.id.clone(), timestamp: t.timestamp, begin: t.begin, coordinator: t.coordinator.clone() }
}

pub fn txn_from_pb(t: pb::TxnContext) -> TxnContext {
    TxnContext { id: t.txn_id, timestamp: t.timestamp, begin: t.begin, coordinator: t.coordinator }
}

pub fn mutation_to_pb(m: &Mutation) -> pb::Mutation {
    use pb::mutation::Op;
    pb::Mutation {
        key: m.key.clone(),
        op: Some(match &m.op {
            MutationOp::Put(v) => Op::Put(v.clone()),
            MutationOp::Insert(v) => Op::Insert(v.clone()),
            MutationOp::Delete => Op::Delete(true),
        }),
    }
}

pub fn mutation_from_pb(m: pb::Mutation) -> Result<Mutation, String> {
    use pb::mutation::Op;
    if m.key.is_empty() {
        return Err("mutation key is empty".into());
    }
    let op = match m.op.ok_or("mutation has no operation")? {
        Op::Put(v) => MutationOp::Put(v),
        Op::Insert(v) => MutationOp::Insert(v),
        Op::Delete(_) => MutationOp::Delete,
    };
    Ok(Mutation { key: m.key, op })
}
