//! Restarts: acknowledged rows and the catalog survive a SIGKILL.

use crate::cluster::*;

#[tokio::test(flavor = "multi_thread")]
async fn coordinator_and_shard_restarts_keep_data() {
    let mut cluster = TestCluster::start(3);
    let mut c = cluster.client().await;
    seed_accounts(&mut c, 20).await;
    exec(&mut c, "UPDATE accounts SET balance = balance + 5 WHERE id = 110").await;
    exec(&mut c, "DELETE FROM accounts WHERE id = 210").await;
    let before = rows(&mut c, "SELECT id, owner, balance FROM accounts ORDER BY id").await;
    assert_eq!(before.len(), 59);

    // SIGKILL the coordinator: the catalog must come back from its RocksDB.
    cluster.coordinator.kill();
    assert!(c.execute("SELECT 1").await.is_err(), "the coordinator is down");
    cluster.coordinator.restart();
    let mut c = cluster.client().await;
    assert_eq!(rows(&mut c, "SELECT id, owner, balance FROM accounts ORDER BY id").await, before);
    assert_eq!(rows(&mut c, "SHOW TABLES").await.len(), 1);

    // SIGKILL a shard: every acknowledged write was synced to its WAL.
    cluster.shards[1].kill();
    let err = fail(&mut c, "SELECT * FROM accounts WHERE id = 110").await;
    assert!(err.message.contains(&format!("shard group 2 ({})", cluster.shards[1].address)), "{err}");
    cluster.shards[1].restart();
    assert_eq!(scalar(&mut c, "SELECT balance FROM accounts WHERE id = 110").await, "1105");
    assert_eq!(rows(&mut c, "SELECT id, owner, balance FROM accounts ORDER BY id").await, before);
    // And it takes writes again.
    exec(&mut c, "INSERT INTO accounts (id, owner) VALUES (199, 'late')").await;
    assert_eq!(scalar(&mut c, "SELECT owner FROM accounts WHERE id = 199").await, "late");
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_acknowledged_just_before_a_kill_survive() {
    let mut cluster = TestCluster::start(1);
    let mut c = cluster.client().await;
    exec(&mut c, "CREATE TABLE t (id INT PRIMARY KEY, v INT)").await;
    // Kill the shard right after a stream of acknowledged single-row writes.
    let mut acknowledged = 0;
    for i in 0..200 {
        exec(&mut c, &format!("INSERT INTO t VALUES ({i}, {i})")).await;
        acknowledged += 1;
    }
    cluster.shards[0].kill();
    cluster.shards[0].restart();
    assert_eq!(scalar(&mut c, "SELECT count(*) FROM t").await, acknowledged.to_string());
}
