//! psql-style aligned output of statement results.
//!
//! ```text
//!  id | owner | balance
//! ----+-------+---------
//!   1 | alice |     100
//!   2 | bob   |      50
//! (2 rows)
//! ```
//!
//! Headers are centered, numeric columns right-aligned, everything else
//! left-aligned; NULL prints as an empty cell. The last column is never padded
//! on the right, so lines carry no trailing blanks.

use crate::client::{StatementResult, Value};

/// How a cell is placed within its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
    Center,
}

/// Formats one result: a table with a row count for row-returning
/// statements, otherwise just the command tag (e.g. `INSERT 0 3`).
/// The text has no trailing newline.
pub fn format_result(result: &StatementResult) -> String {
    if result.columns.is_empty() {
        return result.tag.clone();
    }
    let count = result.columns.len();
    let header: Vec<String> = result.columns.iter().map(|c| c.name.clone()).collect();
    let rows: Vec<Vec<String>> = result.rows.iter().map(|row| row_cells(row, count)).collect();
    let widths = column_widths(&header, &rows);
    let aligns: Vec<Align> = (0..count).map(|i| column_align(result, i)).collect();

    let mut lines = Vec::with_capacity(rows.len() + 3);
    lines.push(render_line(&header, &widths, &vec![Align::Center; count]));
    lines.push(separator(&widths));
    for row in &rows {
        lines.push(render_line(row, &widths, &aligns));
    }
    lines.push(row_count(rows.len()));
    if let Some(ms) = result.staleness_ms {
        lines.push(format!("(read from replicas: at most {ms} ms behind the primaries)"));
    }
    lines.join("\n")
}

/// `(1 row)` or `(N rows)`.
fn row_count(rows: usize) -> String {
    if rows == 1 {
        "(1 row)".to_string()
    } else {
        format!("({rows} rows)")
    }
}

/// The text of each cell of a row, padded or cut to `count` cells.
fn row_cells(row: &[Value], count: usize) -> Vec<String> {
    (0..count).map(|i| row.get(i).map(Value::to_string).unwrap_or_default()).collect()
}

/// Display width of a cell (one column per character).
fn width(text: &str) -> usize {
    text.chars().count()
}

/// The widest cell of each column, header included.
fn column_widths(header: &[String], rows: &[Vec<String>]) -> Vec<usize> {
    header.iter().enumerate().map(|(i, name)| rows.iter().map(|row| width(&row[i])).fold(width(name), usize::max)).collect()
}

/// Numbers are right-aligned. Known type names decide; for an unknown type
/// the values do (all non-NULL values numeric, at least one of them).
fn column_align(result: &StatementResult, column: usize) -> Align {
    let data_type = result.columns[column].data_type.to_ascii_uppercase();
    let numeric = match data_type.as_str() {
        "BIGINT" | "INT" | "INTEGER" | "SMALLINT" | "DOUBLE" | "DOUBLE PRECISION" | "REAL" | "FLOAT" | "NUMERIC" | "DECIMAL" => true,
        "TEXT" | "VARCHAR" | "BOOLEAN" | "BOOL" => false,
        _ => values_are_numeric(result, column),
    };
    if numeric {
        Align::Right
    } else {
        Align::Left
    }
}

fn values_are_numeric(result: &StatementResult, column: usize) -> bool {
    let mut values = result.rows.iter().filter_map(|row| row.get(column)).filter(|v| !v.is_null()).peekable();
    values.peek().is_some() && values.all(|v| matches!(v, Value::Int(_) | Value::Double(_)))
}

/// The dashed line under the header: `----+-------`.
fn separator(widths: &[usize]) -> String {
    widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("+")
}

/// One header or data line: ` a | b | c`.
fn render_line(cells: &[String], widths: &[usize], aligns: &[Align]) -> String {
    let mut line = String::new();
    for (i, text) in cells.iter().enumerate() {
        line.push_str(if i == 0 { " " } else { " | " });
        let last = i + 1 == cells.len();
        let pad = widths[i].saturating_sub(width(text));
        let (left, right) = match aligns[i] {
            Align::Left => (0, pad),
            Align::Right => (pad, 0),
            Align::Center => (pad / 2, pad - pad / 2),
        };
        push_spaces(&mut line, left);
        line.push_str(text);
        if !last {
            push_spaces(&mut line, right);
        }
    }
    line
}

fn push_spaces(line: &mut String, count: usize) {
    line.extend(std::iter::repeat_n(' ', count));
}

#[cfg(test)]
mod tests {
    use super::format_result;
    use crate::client::{Column, StatementResult, Value};

    fn column(name: &str, data_type: &str) -> Column {
        Column { name: name.to_string(), data_type: data_type.to_string() }
    }

    fn result(columns: Vec<Column>, rows: Vec<Vec<Value>>) -> StatementResult {
        let tag = format!("SELECT {}", rows.len());
        let rows_affected = rows.len() as u64;
        StatementResult { tag, columns, rows, rows_affected, staleness_ms: None }
    }

    #[test]
    fn aligned_table_like_psql() {
        let r = result(
            vec![column("id", "BIGINT"), column("owner", "TEXT"), column("balance", "BIGINT")],
            vec![vec![Value::Int(1), Value::Text("alice".into()), Value::Int(100)], vec![Value::Int(2), Value::Text("bob".into()), Value::Int(50)]],
        );
        let expected = " id | owner | balance\n\
                        ----+-------+---------\n\
                        \x20 1 | alice |     100\n\
                        \x20 2 | bob   |      50\n\
                        (2 rows)";
        assert_eq!(format_result(&r), expected);
    }

    #[test]
    fn headers_centered_null_empty_booleans_short() {
        let r = result(
            vec![column("n", "TEXT"), column("ok", "BOOLEAN")],
            vec![vec![Value::Text("abcde".into()), Value::Bool(true)], vec![Value::Null, Value::Bool(false)]],
        );
        let expected = "   n   | ok\n-------+----\n abcde | t\n       | f\n(2 rows)";
        assert_eq!(format_result(&r), expected);
    }

    #[test]
    fn doubles_right_aligned_and_single_row() {
        let r = result(vec![column("avg", "DOUBLE")], vec![vec![Value::Double(12.5)]]);
        assert_eq!(format_result(&r), " avg\n------\n 12.5\n(1 row)");
    }

    #[test]
    fn unknown_type_uses_values_for_alignment() {
        let r = result(vec![column("count", "UNKNOWN"), column("x", "")], vec![vec![Value::Int(7), Value::Text("a".into())]]);
        assert_eq!(format_result(&r), " count | x\n-------+---\n     7 | a\n(1 row)");
    }

    #[test]
    fn empty_result_still_has_header() {
        let r = result(vec![column("id", "BIGINT"), column("name", "TEXT")], vec![]);
        assert_eq!(format_result(&r), " id | name\n----+------\n(0 rows)");
    }

    #[test]
    fn statements_without_columns_print_their_tag() {
        let insert = StatementResult { tag: "INSERT 0 3".into(), columns: vec![], rows: vec![], rows_affected: 3, staleness_ms: None };
        assert_eq!(format_result(&insert), "INSERT 0 3");
        let create = StatementResult { tag: "CREATE TABLE".into(), columns: vec![], rows: vec![], rows_affected: 0, staleness_ms: None };
        assert_eq!(format_result(&create), "CREATE TABLE");
    }

    #[test]
    fn width_counts_characters_not_bytes() {
        let r = result(vec![column("name", "TEXT"), column("v", "BIGINT")], vec![vec![Value::Text("žluť".into()), Value::Int(1)]]);
        assert_eq!(format_result(&r), " name | v\n------+---\n žluť | 1\n(1 row)");
    }
}
