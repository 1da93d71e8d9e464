//! The `tessera sql` shell in its non-interactive modes.

use crate::cluster::*;
use std::io::Write;
use std::process::{Command, Stdio};

#[tokio::test(flavor = "multi_thread")]
async fn execute_mode_prints_tables_and_exits_nonzero_on_error() {
    let cluster = TestCluster::start(2);
    let host = cluster.coordinator.address.clone();
    let sql = |args: &[&str]| Command::new(BIN).env("TESSERA_TOKEN", TOKEN).args(["sql", "--host", &host]).args(args).stdin(Stdio::null()).output().unwrap();

    let out = sql(&["-e", "CREATE TABLE t (id INT PRIMARY KEY, name TEXT) WITH (partitioning = 'range'); INSERT INTO t VALUES (1, 'one'), (2, 'two'); SELECT * FROM t ORDER BY id"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(" id | name\n----+------\n  1 | one\n  2 | two\n(2 rows)"), "{stdout}");

    let out = sql(&["-e", "SELECT * FROM missing"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("table \"missing\" does not exist"));

    let mut child = Command::new(BIN)
        .env("TESSERA_TOKEN", TOKEN)
        .args(["sql", "--host", &host])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"INSERT INTO t\n  VALUES (3, 'three');\n\\d t\nSELECT count(*)\nFROM t;\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("INSERT 0 1") && stdout.contains("column_name") && stdout.contains("     3\n(1 row)"), "{stdout}");
}

#[test]
fn demo_runs_a_statement_and_exits() {
    let out = Command::new(BIN).args(["demo", "-e", "SELECT count(*) FROM accounts"]).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("300"), "{}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolled_back_saga_prints_its_timeline() {
    let cluster = TestCluster::start(3);
    let mut c = cluster.client().await;
    seed_bank(&mut c).await;
    let host = cluster.coordinator.address.clone();
    let script = "SET transaction_protocol = 'saga';
BEGIN;
UPDATE bank SET balance = balance - 10 WHERE id = 1;
UPDATE bank SET balance = balance + 10 WHERE id = 150;
COMMIT;";
    let out = Command::new(BIN).env("TESSERA_TOKEN", TOKEN).args(["sql", "--host", &host, "-e", script]).stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success());
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(stderr.contains("rolled back") && stderr.contains("SQLSTATE P0002"), "{stderr}");
    assert!(stdout.contains("QUEUED UPDATE"), "{stdout}");
    assert!(stdout.contains("compensation | compensated") && stdout.contains("step         | failed"), "the timeline follows the error: {stdout}");
    assert_eq!(balance(&mut c, 1).await, 1000);
}
