//! Scalar values and their SQL types.

use std::cmp::Ordering;
use std::fmt;

/// The storage type of a value. `Int` and `BigInt` share the 64-bit
/// representation; `Int` is range-checked to 32 bits when stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DataType {
    Int,
    BigInt,
    Text,
    Boolean,
    Double,
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataType::Int => "INT",
            DataType::BigInt => "BIGINT",
            DataType::Text => "TEXT",
            DataType::Boolean => "BOOLEAN",
            DataType::Double => "DOUBLE",
        })
    }
}

/// A SQL scalar value.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
    Double(f64),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The natural type of a non-null value.
    pub fn data_type(&self) -> Option<DataType> {
        match self {
            Value::Null => None,
            Value::Int(_) => Some(DataType::BigInt),
            Value::Text(_) => Some(DataType::Text),
            Value::Bool(_) => Some(DataType::Boolean),
            Value::Double(_) => Some(DataType::Double),
        }
    }

    /// The name of the value's type as SQL users know it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "BIGINT",
            Value::Text(_) => "TEXT",
            Value::Bool(_) => "BOOLEAN",
            Value::Double(_) => "DOUBLE",
        }
    }

    /// SQL comparison: `None` when either side is NULL or the types cannot be
    /// compared. Integers and doubles compare numerically.
    pub fn sql_cmp(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::Int(a), Value::Double(b)) => (*a as f64).partial_cmp(b),
            (Value::Double(a), Value::Int(b)) => a.partial_cmp(&(*b as f64)),
            (Value::Double(a), Value::Double(b)) => Some(a.total_cmp(b)),
            (Value::Text(a), Value::Text(b)) => Some(a.cmp(b)),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// A total order for sorting: NULLs last, then by type, then by value.
    pub fn sort_cmp(&self, other: &Value) -> Ordering {
        fn rank(v: &Value) -> u8 {
            match v {
                Value::Bool(_) => 0,
                Value::Int(_) | Value::Double(_) => 1,
                Value::Text(_) => 2,
                Value::Null => 3,
            }
        }
        match self.sql_cmp(other) {
            Some(o) => o,
            None => rank(self).cmp(&rank(other)),
        }
    }
}

impl PartialEq for Value {
    /// Grouping equality: NULL equals NULL, numbers compare numerically.
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            _ => self.sql_cmp(other) == Some(Ordering::Equal),
        }
    }
}

impl Eq for Value {}

impl std::hash::Hash for Value {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            Value::Null => 0u8.hash(state),
            Value::Int(i) => {
                // Integral doubles hash like the equal integer.
                1u8.hash(state);
                (*i as f64).to_bits().hash(state)
            }
            Value::Double(d) => {
                1u8.hash(state);
                d.to_bits().hash(state)
            }
            Value::Text(s) => {
                2u8.hash(state);
                s.hash(state)
            }
            Value::Bool(b) => {
                3u8.hash(state);
                b.hash(state)
            }
        }
    }
}

impl fmt::Display for Value {
    /// PostgreSQL's text output: `t`/`f` for booleans, empty for NULL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => Ok(()),
            Value::Int(i) => write!(f, "{i}"),
            Value::Text(s) => f.write_str(s),
            Value::Bool(b) => f.write_str(if *b { "t" } else { "f" }),
            Value::Double(d) => {
                if d.is_finite() && d.fract() == 0.0 && d.abs() < 1e15 {
                    write!(f, "{d:.0}")
                } else {
                    write!(f, "{d}")
                }
            }
        }
    }
}
