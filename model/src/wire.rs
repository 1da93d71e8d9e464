//! Conversions between the shard protocol's protobuf types and domain types.
//! The coordinator uses the `*_to_pb` direction, the shard service the other.

use crate::data::expr::{BinaryOp, Expr, UnaryOp};
use crate::data::Value;
use crate::txn::{Mutation, MutationOp, TxnContext};
use tessera_proto::shard as pb;

/// How deeply protobuf messages may nest in a request: prost refuses to
/// decode more than 100 levels, so nothing deeper is ever sent.
const MAX_MESSAGE_DEPTH: usize = 90;

/// Nesting limit for filter expressions from the wire (each level of an
/// expression is at least two protobuf messages).
const MAX_EXPR_DEPTH: usize = MAX_MESSAGE_DEPTH / 2;

/// `Value` to and from a protobuf `Value` message. The shard protocol and
/// the public API each have one (their packages version separately), with
/// the same fields; one conversion serves both.
macro_rules! value_conversions {
    ($($message:ty, $($kind:ident)::+;)+) => {$(
        impl From<Value> for $message {
            fn from(v: Value) -> $message {
                use $($kind)::+ as Kind;
                let kind = match v {
                    Value::Null => Kind::Null(true),
                    Value::Int(i) => Kind::Int(i),
                    Value::Text(s) => Kind::Text(s),
                    Value::Bool(b) => Kind::Boolean(b),
                    Value::Double(d) => Kind::Double(d),
                };
                Self { kind: Some(kind) }
            }
        }

        impl From<$message> for Value {
            fn from(v: $message) -> Value {
                use $($kind)::+ as Kind;
                match v.kind {
                    None | Some(Kind::Null(_)) => Value::Null,
                    Some(Kind::Int(i)) => Value::Int(i),
                    Some(Kind::Text(s)) => Value::Text(s),
                    Some(Kind::Boolean(b)) => Value::Bool(b),
                    Some(Kind::Double(d)) => Value::Double(d),
                }
            }
        }
    )+};
}

value_conversions! {
    pb::Value, pb::value::Kind;
    tessera_proto::v1::Value, tessera_proto::v1::value::Kind;
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

/// A shard request the wire decoders refuse: a malformed expression or
/// mutation. The shard answers it as an invalid request (08P01).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("unknown {kind} operator {code}")]
    UnknownOperator { kind: &'static str, code: i32 },
    #[error("{0} operator is unspecified")]
    UnspecifiedOperator(&'static str),
    #[error("filter nests deeper than {MAX_EXPR_DEPTH} levels")]
    TooDeep,
    #[error("filter {0} is missing")]
    Missing(&'static str),
    #[error("filter expression is empty")]
    EmptyExpression,
    #[error("filter chain has no operators")]
    EmptyChain,
    #[error("mutation key is empty")]
    EmptyKey,
    #[error("mutation has no operation")]
    NoOperation,
}

fn binary_from_pb(op: i32) -> Result<BinaryOp, WireError> {
    Ok(match pb::BinaryOp::try_from(op).map_err(|_| WireError::UnknownOperator { kind: "binary", code: op })? {
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
        pb::BinaryOp::Unspecified => return Err(WireError::UnspecifiedOperator("binary")),
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

fn unary_from_pb(op: i32) -> Result<UnaryOp, WireError> {
    Ok(match pb::UnaryOp::try_from(op).map_err(|_| WireError::UnknownOperator { kind: "unary", code: op })? {
        pb::UnaryOp::Not => UnaryOp::Not,
        pb::UnaryOp::Negate => UnaryOp::Negate,
        pb::UnaryOp::IsNull => UnaryOp::IsNull,
        pb::UnaryOp::IsNotNull => UnaryOp::IsNotNull,
        pb::UnaryOp::Unspecified => return Err(WireError::UnspecifiedOperator("unary")),
    })
}

/// Converts a filter for the wire; `None` if it uses something shards do not
/// evaluate (casts and functions stay on the coordinator) or nests too
/// deeply for a shard to decode.
pub fn expr_to_pb(e: &Expr) -> Option<pb::Expr> {
    // The request is the first message, the filter the second.
    let pb = expr_to_pb_at(e, 2)?;
    // A huge filter (an IN list of 100,000 values) is cheaper to evaluate
    // on the coordinator than to send to every shard in every scan page.
    (prost::Message::encoded_len(&pb) <= MAX_FILTER_BYTES).then_some(pb)
}

/// The largest filter sent to shards, encoded.
const MAX_FILTER_BYTES: usize = 256 * 1024;

/// `depth` counts the protobuf messages from the request down to `e`.
fn expr_to_pb_at(e: &Expr, depth: usize) -> Option<pb::Expr> {
    use pb::expr::Kind;
    if depth + 2 > MAX_MESSAGE_DEPTH {
        return None;
    }
    // A part that cannot be sent makes the whole expression stay home.
    let sub = |e: &Expr| expr_to_pb_at(e, depth + 2);
    let boxed = |e: &Expr| sub(e).map(Box::new);
    let kind = match e {
        Expr::Column(i) => Kind::Column(u32::try_from(*i).ok()?),
        Expr::Literal(v) => Kind::Literal(v.clone().into()),
        Expr::Binary(op, l, r) => Kind::Binary(Box::new(pb::BinaryExpr { op: binary_to_pb(*op) as i32, left: Some(boxed(l)?), right: Some(boxed(r)?) })),
        Expr::Chain(first, rest) => {
            let rest = rest
                .iter()
                .map(|(op, e)| Some(pb::ChainStep { op: binary_to_pb(*op) as i32, operand: Some(expr_to_pb_at(e, depth + 3)?) }))
                .collect::<Option<_>>()?;
            Kind::Chain(Box::new(pb::ChainExpr { first: Some(boxed(first)?), rest }))
        }
        Expr::Unary(op, e) => Kind::Unary(Box::new(pb::UnaryExpr { op: unary_to_pb(*op) as i32, operand: Some(boxed(e)?) })),
        Expr::Like { operand, pattern, negated, case_insensitive } => Kind::Like(Box::new(pb::LikeExpr {
            operand: Some(boxed(operand)?),
            pattern: Some(boxed(pattern)?),
            negated: *negated,
            case_insensitive: *case_insensitive,
        })),
        Expr::InList { operand, list, negated } => {
            Kind::InList(Box::new(pb::InListExpr { operand: Some(boxed(operand)?), list: list.iter().map(sub).collect::<Option<_>>()?, negated: *negated }))
        }
        Expr::Cast(..) | Expr::Call(..) => return None,
    };
    Some(pb::Expr { kind: Some(kind) })
}

/// Converts a filter from the wire, rejecting malformed trees.
pub fn expr_from_pb(e: pb::Expr) -> Result<Expr, WireError> {
    expr_from_pb_at(e, 0)
}

fn expr_from_pb_at(e: pb::Expr, depth: usize) -> Result<Expr, WireError> {
    use pb::expr::Kind;
    if depth > MAX_EXPR_DEPTH {
        return Err(WireError::TooDeep);
    }
    let sub = |e: Option<Box<pb::Expr>>, what: &'static str| -> Result<Box<Expr>, WireError> {
        expr_from_pb_at(*e.ok_or(WireError::Missing(what))?, depth + 1).map(Box::new)
    };
    Ok(match e.kind.ok_or(WireError::EmptyExpression)? {
        Kind::Column(i) => Expr::Column(i as usize),
        Kind::Literal(v) => Expr::Literal(v.into()),
        Kind::Binary(b) => Expr::Binary(binary_from_pb(b.op)?, sub(b.left, "left operand")?, sub(b.right, "right operand")?),
        Kind::Chain(c) => {
            let first = sub(c.first, "first operand of a chain")?;
            if c.rest.is_empty() {
                return Err(WireError::EmptyChain);
            }
            let rest =
                c.rest.into_iter().map(|s| Ok((binary_from_pb(s.op)?, *sub(s.operand.map(Box::new), "chain operand")?))).collect::<Result<_, WireError>>()?;
            Expr::Chain(first, rest)
        }
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

pub fn mutation_from_pb(m: pb::Mutation) -> Result<Mutation, WireError> {
    use pb::mutation::Op;
    if m.key.is_empty() {
        return Err(WireError::EmptyKey);
    }
    let op = match m.op.ok_or(WireError::NoOperation)? {
        Op::Put(v) => MutationOp::Put(v),
        Op::Insert(v) => MutationOp::Insert(v),
        Op::Delete(_) => MutationOp::Delete,
    };
    Ok(Mutation { key: m.key, op })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::expr::Function;
    use prost::Message;

    fn lit(i: i64) -> Expr {
        Expr::Literal(Value::Int(i))
    }

    #[test]
    fn chains_round_trip_flat() {
        let e = Expr::chain(Expr::Column(0), (0..10_000).map(|i| (BinaryOp::Plus, lit(i))).collect());
        let pb = expr_to_pb(&e).expect("a flat chain is sent");
        let decoded = pb::Expr::decode(pb.encode_to_vec().as_slice()).expect("prost decodes it");
        assert_eq!(expr_from_pb(decoded).unwrap(), e);
    }

    #[test]
    fn a_part_shards_cannot_evaluate_keeps_the_whole_filter_home() {
        let e = Expr::binary(BinaryOp::Gt, Expr::Call(Function::Abs, vec![Expr::Column(1)]), lit(5));
        assert_eq!(expr_to_pb(&e), None);
        let deep = (0..100).fold(Expr::Column(0), |e, _| Expr::Unary(UnaryOp::Not, Box::new(e)));
        assert_eq!(expr_to_pb(&deep), None, "deeper than a shard decodes");
        let huge = Expr::InList { operand: Box::new(Expr::Column(0)), list: (0..100_000).map(lit).collect(), negated: false };
        assert_eq!(expr_to_pb(&huge), None, "larger than a filter is sent");
    }

    #[test]
    fn hostile_nesting_from_the_wire_is_refused_not_a_crash() {
        // 10,000 nested NOTs, encoded by hand (prost's encoder would recurse).
        let mut bytes = pb::Expr { kind: Some(pb::expr::Kind::Column(0)) }.encode_to_vec();
        for _ in 0..10_000 {
            let unary = [vec![0x08, 0x01], field(2, &bytes)].concat();
            bytes = field(4, &unary);
        }
        assert!(pb::Expr::decode(bytes.as_slice()).is_err());
    }

    /// A length-delimited protobuf field.
    fn field(number: u32, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(body.len() as u64, &mut out);
        out.extend_from_slice(body);
        out
    }
}
