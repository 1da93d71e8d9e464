//! Bad input gets a clear error naming the object and the cause, and the
//! servers keep running after each.

use crate::cluster::*;
use std::process::Command;

#[tokio::test(flavor = "multi_thread")]
async fn sql_errors_name_the_object_and_cause() {
    let mut cluster = TestCluster::start(3);
    let mut c = cluster.client().await;
    seed_accounts(&mut c, 3).await;
    let cases: &[(&str, &str, &str)] = &[
        ("SELEKT * FROM accounts", "42601", "Line: 1, Column: 1"),
        ("SELECT * FROM accounts WHERE", "42601", "at the end of the input"),
        ("SELECT * FROM nope", "42P01", "table \"nope\" does not exist"),
        ("SELECT balanse FROM accounts", "42703", "table \"accounts\" has no column \"balanse\""),
        ("INSERT INTO accounts (id, owner, bogus) VALUES (1, 'a', 1)", "42703", "no column \"bogus\""),
        ("INSERT INTO accounts (id, owner) VALUES ('abc', 'x')", "22P02", "invalid input syntax for type BIGINT of column \"id\""),
        ("INSERT INTO accounts (id, owner) VALUES (5, 42)", "42804", "column \"owner\" is of type VARCHAR(20) but expression is of type BIGINT"),
        ("INSERT INTO accounts (id, owner) VALUES (5, 'a-name-longer-than-twenty')", "22001", "value too long"),
        ("SELECT * FROM accounts WHERE owner + 1 > 0", "42883", "operator does not exist"),
        ("INSERT INTO accounts (id) VALUES (5)", "23502", "null value in column \"owner\" of relation \"accounts\" violates not-null constraint"),
        ("INSERT INTO accounts (id, owner, balance) VALUES (5, 'x', -1)", "23514", "violates check constraint \"accounts_check\""),
        ("UPDATE accounts SET balance = balance - 1000 WHERE id = 1", "23514", "violates check constraint"),
        (
            "INSERT INTO accounts (id, owner) VALUES (1, 'dup')",
            "23505",
            "duplicate key value violates unique constraint \"accounts_pkey\": Key (id)=(1) already exists",
        ),
        ("INSERT INTO accounts (id, owner) VALUES (7, 'a'), (7, 'b')", "23505", "Key (id)=(7)"),
        ("SELECT a.id, b.id FROM accounts a JOIN accounts b ON a.id = b.id", "0A000", "joins"),
        ("SELECT * FROM accounts UNION SELECT * FROM accounts", "0A000", "UNION"),
        ("CREATE TABLE t (a INT, b INT)", "42P16", "needs a PRIMARY KEY"),
        ("CREATE TABLE t (a INT PRIMARY KEY) WITH (partitioning = 'range', split_points = '1,2,3,4')", "42P16", "5 ranges but the cluster has 3 shard groups"),
        ("CREATE TABLE t (a INT PRIMARY KEY) WITH (partitioning = 'zigzag')", "42P16", "unknown partitioning \"zigzag\""),
        ("CREATE TABLE t (a INT PRIMARY KEY, b BYTEA)", "0A000", "type BYTEA"),
        ("CREATE TABLE accounts (a INT PRIMARY KEY)", "42P07", "table \"accounts\" already exists"),
        ("UPDATE accounts SET id = 5 WHERE id = 1", "0A000", "updating the primary key column \"id\""),
        ("SELECT 1 / 0", "22012", "division by zero"),
        ("BEGIN; CREATE TABLE t2 (a INT PRIMARY KEY)", "25001", "CREATE TABLE cannot run inside a transaction block"),
        ("ROLLBACK; SAVEPOINT s", "0A000", "SAVEPOINT"),
        (
            "INSERT INTO accounts (id, owner) VALUES (3000000000, 'x'); CREATE TABLE small (a INT PRIMARY KEY); INSERT INTO small VALUES (3000000000)",
            "22003",
            "out of range for column \"a\" of type INT",
        ),
    ];
    for (sql, state, needle) in cases {
        let err = fail(&mut c, sql).await;
        assert_eq!(err.sqlstate.as_deref(), Some(*state), "{sql}: {err}");
        assert!(err.message.contains(needle), "{sql}: expected {needle:?} in {err}");
    }
    // Nothing above broke the cluster or left locks behind.
    assert_eq!(scalar(&mut c, "SELECT count(*) FROM accounts").await, "10");
    exec(&mut c, "UPDATE accounts SET balance = balance + 1 WHERE id = 1").await;
    assert!(cluster.coordinator.is_running());
    assert!(cluster.shards.iter_mut().all(|s| s.is_running()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_shard_fails_fast_with_its_name_and_address() {
    let mut cluster = TestCluster::start(3);
    let mut c = cluster.client().await;
    seed_accounts(&mut c, 3).await;
    let address = cluster.shards[2].address.clone();
    cluster.shards[2].kill();
    // `fail` gives up after the harness's statement timeout: no hang.
    let err = fail(&mut c, "SELECT count(*) FROM accounts").await;
    assert!(err.message.contains(&format!("shard group 3 ({address}) unreachable")), "{err}");
    assert_eq!(err.sqlstate.as_deref(), Some("08006"));
    let err = fail(&mut c, "INSERT INTO accounts (id, owner) VALUES (250, 'x')").await;
    assert!(err.message.contains("shard group 3"), "{err}");
    // Groups that are up still serve.
    assert_eq!(scalar(&mut c, "SELECT owner FROM accounts WHERE id = 2").await, "owner2");
}

#[test]
fn bad_configs_and_busy_ports_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).env_remove("TESSERA_CLUSTER_SECRET").output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let missing = dir.path().join("missing.toml");
    let (ok, err) = run(&["shard", "--config", missing.to_str().unwrap()]);
    assert!(!ok && err.contains("cannot read config file") && err.contains("missing.toml"), "{err}");

    let corrupt = dir.path().join("corrupt.toml");
    std::fs::write(&corrupt, "listen = [1, 2\nnode_id = ").unwrap();
    let (ok, err) = run(&["coordinator", "--config", corrupt.to_str().unwrap()]);
    assert!(!ok && err.contains("invalid config file") && err.contains("corrupt.toml"), "{err}");

    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "node_id = \"a\"\nlisten_adress = \"127.0.0.1:1\"\n").unwrap();
    let (ok, err) = run(&["shard", "--config", unknown.to_str().unwrap()]);
    assert!(!ok && err.contains("listen_adress"), "{err}");

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().to_string();
    let data = dir.path().join("data");
    let (ok, err) = run(&["shard", "--listen", &port, "--data-dir", data.to_str().unwrap()]);
    assert!(!ok && err.contains(&format!("cannot listen on {port}")), "{err}");

    // Without the cluster secret a shard does not start, and a coordinator
    // without credentials for its clients does not either.
    let (ok, err) = run(&["shard", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()]);
    assert!(!ok && err.contains("no cluster secret"), "{err}");
    let (ok, err) = run(&["coordinator", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap(), "--shard", "1=127.0.0.1:1"]);
    assert!(!ok && err.contains("clients must authenticate"), "{err}");
}
