//! DDL and every DML form, checked by their results.

use crate::cluster::*;

#[tokio::test(flavor = "multi_thread")]
async fn create_show_describe_drop() {
    let cluster = TestCluster::start(3);
    let mut c = cluster.client().await;
    exec(&mut c, ACCOUNTS).await;
    exec(&mut c, "CREATE TABLE events (name TEXT PRIMARY KEY, n INT) WITH (partitioning = 'hash', virtual_nodes = 32)").await;
    exec(&mut c, "CREATE TABLE IF NOT EXISTS events (x INT PRIMARY KEY)").await;
    let tables = rows(&mut c, "SHOW TABLES").await;
    assert_eq!(
        tables,
        vec![
            vec!["accounts".to_string(), "range (100, 200)".into(), "1, 2, 3".into()],
            vec!["events".to_string(), "hash (32 virtual nodes)".into(), "1, 2, 3".into()],
        ]
    );
    let described = rows(&mut c, "DESCRIBE accounts").await;
    assert_eq!(described[0], vec!["id", "BIGINT", "f", "", "PRIMARY KEY"]);
    assert_eq!(described[1], vec!["owner", "VARCHAR(20)", "f", "", ""]);
    assert_eq!(described[2], vec!["balance", "BIGINT", "f", "0", ""]);
    assert!(described.iter().any(|r| r[0] == "CONSTRAINT accounts_check" && r[1] == "CHECK (balance >= 0)"), "{described:?}");
    exec(&mut c, "INSERT INTO events VALUES ('a', 1)").await;
    exec(&mut c, "DROP TABLE events").await;
    let err = fail(&mut c, "SELECT * FROM events").await;
    assert_eq!(err.sqlstate.as_deref(), Some("42P01"));
    exec(&mut c, "DROP TABLE IF EXISTS events").await;
    // A new table with the old name starts empty.
    exec(&mut c, "CREATE TABLE events (name TEXT PRIMARY KEY, n INT) WITH (partitioning = 'range')").await;
    assert_eq!(scalar(&mut c, "SELECT count(*) FROM events").await, "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn insert_select_update_delete() {
    let cluster = TestCluster::start(3);
    let mut c = cluster.client().await;
    seed_accounts(&mut c, 10).await;
    assert_eq!(scalar(&mut c, "SELECT count(*) FROM accounts").await, "30");
    // Defaults fill omitted columns.
    exec(&mut c, "INSERT INTO accounts (id, owner) VALUES (50, 'zed')").await;
    assert_eq!(rows(&mut c, "SELECT balance, vip, rate FROM accounts WHERE id = 50").await, vec![vec!["0", "f", ""]]);
    // Projections, expressions, aliases, filters, ORDER BY, LIMIT, OFFSET.
    let r = rows(&mut c, "SELECT id, balance * 2 AS twice, owner || '!' FROM accounts WHERE balance > 1000 AND vip ORDER BY id DESC LIMIT 3 OFFSET 1").await;
    assert_eq!(r, vec![vec!["206", "4120", "owner206!"], vec!["204", "4080", "owner204!"], vec!["202", "4040", "owner202!"]]);
    assert_eq!(
        rows(&mut c, "SELECT id FROM accounts WHERE owner LIKE 'owner10%' ORDER BY 1").await,
        vec![vec!["10"], vec!["100"], vec!["101"], vec!["102"], vec!["103"], vec!["104"], vec!["105"], vec!["106"], vec!["107"], vec!["108"], vec!["109"]]
    );
    assert_eq!(rows(&mut c, "SELECT id FROM accounts WHERE id IN (3, 103, 999) ORDER BY id").await, vec![vec!["3"], vec!["103"]]);
    assert_eq!(
        rows(&mut c, "SELECT id FROM accounts WHERE id BETWEEN 8 AND 101 AND id <> 50 ORDER BY id").await,
        vec![vec!["8"], vec!["9"], vec!["10"], vec!["100"], vec!["101"]]
    );
    // Aggregates, GROUP BY, HAVING.
    assert_eq!(
        rows(&mut c, "SELECT count(*), sum(balance), min(id), max(owner), avg(rate) FROM accounts WHERE id < 100 AND id <> 50").await,
        vec![vec!["10", "550", "1", "owner9", "6"]]
    );
    let grouped = rows(&mut c, "SELECT vip, count(*) AS n, sum(balance) FROM accounts WHERE id <> 50 GROUP BY vip HAVING count(*) > 1 ORDER BY vip").await;
    assert_eq!(grouped, vec![vec!["f", "15", "15750"], vec!["t", "15", "15700"]]);
    assert_eq!(
        rows(&mut c, "SELECT id / 100 AS bucket, count(*) FROM accounts GROUP BY id / 100 ORDER BY bucket DESC").await,
        vec![vec!["2", "10"], vec!["1", "10"], vec!["0", "11"]]
    );
    assert_eq!(rows(&mut c, "SELECT count(*), sum(balance) FROM accounts WHERE id > 5000").await, vec![vec!["0", ""]]);
    assert_eq!(rows(&mut c, "SELECT DISTINCT vip FROM accounts ORDER BY vip").await, vec![vec!["f"], vec!["t"]]);
    assert_eq!(rows(&mut c, "SELECT 1 + 2, upper('x')").await, vec![vec!["3", "X"]]);
    // UPDATE with expressions; DELETE with a filter.
    let r = exec(&mut c, "UPDATE accounts SET balance = balance - 10, vip = NOT vip WHERE id = 7").await;
    assert_eq!(r[0].tag, "UPDATE 1");
    assert_eq!(rows(&mut c, "SELECT balance, vip FROM accounts WHERE id = 7").await, vec![vec!["60", "t"]]);
    let r = exec(&mut c, "UPDATE accounts SET rate = rate * 2 WHERE id >= 100 AND id < 105").await;
    assert_eq!(r[0].tag, "UPDATE 5");
    assert_eq!(scalar(&mut c, "SELECT sum(rate) FROM accounts WHERE id >= 100 AND id < 105").await, "1025");
    let r = exec(&mut c, "DELETE FROM accounts WHERE id > 205 AND id < 300").await;
    assert_eq!(r[0].tag, "DELETE 4");
    assert_eq!(scalar(&mut c, "SELECT count(*) FROM accounts").await, "27");
    let r = exec(&mut c, "UPDATE accounts SET balance = 1 WHERE id = 12345").await;
    assert_eq!(r[0].tag, "UPDATE 0");
    // Several statements in one call.
    let r = exec(&mut c, "DELETE FROM accounts WHERE id = 1; SELECT count(*) FROM accounts").await;
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].rows[0][0].to_string(), "26");
}

#[tokio::test(flavor = "multi_thread")]
async fn hash_tables_route_and_scan() {
    let cluster = TestCluster::start(3);
    let mut c = cluster.client().await;
    exec(&mut c, "CREATE TABLE kv (k TEXT PRIMARY KEY, v INT NOT NULL)").await;
    // Each single-row INSERT lands on one group.
    for i in 0..30 {
        exec(&mut c, &format!("INSERT INTO kv VALUES ('key{i}', {i})")).await;
    }
    assert_eq!(scalar(&mut c, "SELECT count(*) FROM kv").await, "30");
    assert_eq!(scalar(&mut c, "SELECT v FROM kv WHERE k = 'key17'").await, "17");
    assert_eq!(scalar(&mut c, "SELECT sum(v) FROM kv WHERE k >= 'key2' AND k < 'key3'").await, (2 + (20..30).sum::<i32>()).to_string());
    let first = rows(&mut c, "SELECT k FROM kv ORDER BY k LIMIT 2").await;
    assert_eq!(first, vec![vec!["key0"], vec!["key1"]]);
}
