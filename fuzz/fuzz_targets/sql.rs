//! SQL text through parse, bind, plan and evaluate, as the coordinator runs
//! a statement, against a fixed catalog and a few stored rows in place of
//! the shards. Any outcome is fine except a panic (or a stack overflow, an
//! abort): an error is how bad input is answered.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sqlparser::ast::Statement;
use std::sync::OnceLock;
use tessera_coordinator::catalog::{Catalog, Table};
use tessera_coordinator::exec::select::finish;
use tessera_coordinator::sql::{self, params, saga, select, write};
use tessera_model::data::row::{decode_row, encode_row};
use tessera_model::data::{DataType, Value};
use tessera_model::wire;

/// The tables statements run against.
const SCHEMA: &[&str] = &[
    "CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner TEXT NOT NULL, balance BIGINT CHECK (balance >= 0), rate DOUBLE PRECISION, active BOOLEAN)",
    "CREATE TABLE notes (code VARCHAR(8) PRIMARY KEY, n INT DEFAULT 7, body TEXT)",
];

struct Fixture {
    catalog: Catalog,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let catalog = Catalog::open(dir.path()).expect("the catalog opens");
        for create in SCHEMA {
            let Statement::CreateTable(c) = sql::parse(create).expect("the schema parses").remove(0) else { unreachable!() };
            catalog.create_table(sql::ddl::table_def(&c, &[1, 2, 3]).expect("the schema is valid"), false).expect("the table is created");
        }
        Fixture { catalog, _dir: dir }
    })
}

/// A few rows of `table`, as stored: every column's type with edge values
/// and NULLs where the column allows them.
fn rows(table: &Table) -> Vec<Vec<Value>> {
    let sample = |ty: DataType, i: usize, nullable: bool| -> Value {
        if nullable && i == 3 {
            return Value::Null;
        }
        match ty {
            DataType::Int => Value::Int([0, 1, -1, i32::MAX as i64][i % 4]),
            DataType::BigInt => Value::Int([0, 100, i64::MIN, i64::MAX][i % 4]),
            DataType::Text => Value::Text(["", "alice", "b%_\\", "ünï"][i % 4].to_string()),
            DataType::Boolean => Value::Bool(i % 2 == 0),
            DataType::Double => Value::Double([0.0, -1.5, f64::NAN, f64::INFINITY][i % 4]),
        }
    };
    (0..4)
        .map(|i| {
            table.def.columns.iter().enumerate().map(|(c, col)| sample(col.column_type.data_type, i + c, col.nullable && c != table.def.primary_key)).collect()
        })
        .collect()
}

/// What the shards would be sent: the pushed filter crosses the wire and is
/// evaluated there against stored (encoded, decoded) rows.
fn on_the_shards(filter: Option<&tessera_model::data::expr::Expr>, rows: &[Vec<Value>]) {
    let Some(pb) = filter.and_then(wire::expr_to_pb) else { return };
    let bytes = prost::Message::encode_to_vec(&pb);
    let Ok(decoded) = <tessera_proto::shard::Expr as prost::Message>::decode(bytes.as_slice()) else { return };
    let Ok(filter) = wire::expr_from_pb(decoded) else { return };
    for row in rows {
        let stored = decode_row(&encode_row(row)).expect("rows round-trip");
        let _ = filter.matches(&stored);
    }
}

fn run(catalog: &Catalog, statement: &Statement) {
    match statement {
        Statement::Query(q) => {
            let Ok(plan) = select::plan(catalog, q) else { return };
            let input = match &plan.table {
                Some(table) => rows(table),
                None => vec![Vec::new()],
            };
            on_the_shards(plan.pushed.as_ref(), &input);
            let _ = finish(&plan, input, None);
        }
        Statement::Insert(i) => {
            let _ = write::plan_insert(catalog, i);
        }
        Statement::Update(_) | Statement::Delete(_) => {
            let plan = match statement {
                Statement::Update(u) => write::plan_update(catalog, u),
                Statement::Delete(d) => write::plan_delete(catalog, d),
                _ => unreachable!(),
            };
            let Ok(plan) = plan else { return };
            let input = rows(&plan.table);
            on_the_shards(plan.pushed.as_ref(), &input);
            for row in &input {
                let _ = plan.new_row(row);
            }
        }
        Statement::CreateTable(c) => {
            let _ = sql::ddl::table_def(c, &[1, 2]);
        }
        _ => {}
    }
    // The same statement as a saga step: its compensation is derived.
    if matches!(statement, Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)) {
        let _ = saga::plan_parsed(catalog, statement, None);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let catalog = &fixture().catalog;
    let Ok(statements) = sql::parse(text) else { return };
    for mut statement in statements {
        // Parameters get values of several types, as a driver would bind them.
        if params::count(&statement) > 0 {
            let values: Vec<Value> = (0..params::count(&statement))
                .map(|i| [Value::Int(i as i64), Value::Text("x".into()), Value::Null, Value::Double(0.5)][i % 4].clone())
                .collect();
            if params::check_placeholders(&statement).is_err() || params::bind(&mut statement, &values).is_err() {
                continue;
            }
        }
        run(catalog, &statement);
    }
});
