//! What a statement returns: its command tag, columns and rows.

use tessera_model::data::{DataType, Value};

/// A result column: its name and type.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OutputColumn {
    pub name: String,
    pub data_type: DataType,
}

/// The outcome of one statement.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueryResult {
    pub tag: String,
    pub columns: Vec<OutputColumn>,
    pub rows: Vec<Vec<Value>>,
    pub rows_affected: u64,
    /// Rows read from replicas: how stale they may be, in milliseconds.
    #[serde(default)]
    pub staleness_ms: Option<u64>,
}

impl QueryResult {
    /// About how many bytes the result takes on the wire.
    pub fn approximate_bytes(&self) -> usize {
        let value = |v: &Value| match v {
            Value::Text(s) => s.len() + 4,
            _ => 10,
        };
        let rows: usize = self.rows.iter().map(|r| r.iter().map(value).sum::<usize>() + 4).sum();
        self.tag.len() + self.columns.iter().map(|c| c.name.len() + 4).sum::<usize>() + rows + 8
    }

    pub fn command(tag: &str) -> QueryResult {
        QueryResult { tag: tag.into(), columns: Vec::new(), rows: Vec::new(), rows_affected: 0, staleness_ms: None }
    }

    pub fn modified(tag: String, rows_affected: u64) -> QueryResult {
        QueryResult { tag, columns: Vec::new(), rows: Vec::new(), rows_affected, staleness_ms: None }
    }

    pub fn rows(columns: &[(&str, DataType)], rows: Vec<Vec<Value>>) -> QueryResult {
        let columns = columns.iter().map(|(n, t)| OutputColumn { name: n.to_string(), data_type: *t }).collect();
        QueryResult { tag: format!("SELECT {}", rows.len()), rows_affected: rows.len() as u64, columns, rows, staleness_ms: None }
    }
}
