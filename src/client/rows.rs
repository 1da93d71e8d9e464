//! Typed rows: read a column by name or position as a Rust type.

use super::{ClientError, Column};
use std::sync::Arc;
use tessera_model::data::Value;
use tessera_model::sqlstate;

/// One row of a result, with its columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    columns: Arc<[Column]>,
    values: Vec<Value>,
}

/// A column reference: a name or a 0-based position.
pub trait ColumnIndex {
    fn position(&self, columns: &[Column]) -> Option<usize>;
    fn describe(&self) -> String;
}

impl ColumnIndex for &str {
    fn position(&self, columns: &[Column]) -> Option<usize> {
        columns.iter().position(|c| c.name == *self)
    }
    fn describe(&self) -> String {
        format!("\"{self}\"")
    }
}

impl ColumnIndex for usize {
    fn position(&self, columns: &[Column]) -> Option<usize> {
        (*self < columns.len()).then_some(*self)
    }
    fn describe(&self) -> String {
        format!("number {self}")
    }
}

impl Row {
    pub(crate) fn new(columns: Arc<[Column]>, values: Vec<Value>) -> Row {
        Row { columns, values }
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// The value of a column, converted: `row.get::<i64>("balance")`,
    /// `row.get::<Option<String>>(1)`.
    pub fn get<T: FromValue>(&self, column: impl ColumnIndex) -> Result<T, ClientError> {
        let missing = || ClientError::local(Some(sqlstate::UNDEFINED_COLUMN), format!("the result has no column {}", column.describe()));
        let i = column.position(&self.columns).ok_or_else(missing)?;
        T::from_value(&self.values[i]).map_err(|wanted| {
            ClientError::local(
                Some(sqlstate::DATATYPE_MISMATCH),
                format!("column {} holds {} ({}), which is not a {wanted}", column.describe(), self.values[i], self.values[i].type_name()),
            )
        })
    }
}

/// Rust types a SQL value converts into; the error names the wanted type.
pub trait FromValue: Sized {
    fn from_value(value: &Value) -> Result<Self, &'static str>;
}

impl FromValue for i64 {
    fn from_value(value: &Value) -> Result<Self, &'static str> {
        match value {
            Value::Int(i) => Ok(*i),
            _ => Err("i64"),
        }
    }
}

impl FromValue for i32 {
    fn from_value(value: &Value) -> Result<Self, &'static str> {
        match value {
            Value::Int(i) => i32::try_from(*i).map_err(|_| "i32"),
            _ => Err("i32"),
        }
    }
}

impl FromValue for f64 {
    fn from_value(value: &Value) -> Result<Self, &'static str> {
        match value {
            Value::Double(d) => Ok(*d),
            Value::Int(i) => Ok(*i as f64),
            _ => Err("f64"),
        }
    }
}

impl FromValue for bool {
    fn from_value(value: &Value) -> Result<Self, &'static str> {
        match value {
            Value::Bool(b) => Ok(*b),
            _ => Err("bool"),
        }
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Result<Self, &'static str> {
        match value {
            Value::Text(s) => Ok(s.clone()),
            _ => Err("String"),
        }
    }
}

impl FromValue for Value {
    fn from_value(value: &Value) -> Result<Self, &'static str> {
        Ok(value.clone())
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Result<Self, &'static str> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_read_by_name_and_position_with_clear_errors() {
        let columns: Arc<[Column]> = vec![
            Column { name: "id".into(), data_type: "BIGINT".into() },
            Column { name: "owner".into(), data_type: "TEXT".into() },
            Column { name: "note".into(), data_type: "TEXT".into() },
        ]
        .into();
        let row = Row::new(columns, vec![Value::Int(7), Value::Text("alice".into()), Value::Null]);
        assert_eq!(row.get::<i64>("id").unwrap(), 7);
        assert_eq!(row.get::<String>(1).unwrap(), "alice");
        assert_eq!(row.get::<Option<String>>("note").unwrap(), None);
        let e = row.get::<i64>("owner").unwrap_err();
        assert!(e.message.contains("not a i64") && e.sqlstate.as_deref() == Some("42804"), "{e}");
        assert!(row.get::<i64>("balance").unwrap_err().message.contains("no column \"balance\""));
        assert!(row.get::<String>("note").is_err(), "NULL into a non-Option fails");
    }
}
