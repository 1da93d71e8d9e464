//! Point, range and scatter routing, checked with EXPLAIN and results.

use crate::cluster::*;

#[tokio::test(flavor = "multi_thread")]
async fn explain_shows_the_groups_each_statement_reaches() {
    let cluster = TestCluster::start(3);
    let mut c = cluster.client().await;
    seed_accounts(&mut c, 5).await;
    let g = |i: usize| format!("{} ({})", i + 1, cluster.shards[i].address);

    let point = explain(&mut c, "SELECT * FROM accounts WHERE id = 150").await;
    assert!(point.contains("point lookup") && point.contains(&format!("shard groups: {}", g(1))), "{point}");

    let range = explain(&mut c, "SELECT * FROM accounts WHERE id >= 150 AND id < 250").await;
    assert!(range.contains("range scan") && range.contains(&format!("shard groups: {}, {}", g(1), g(2))), "{range}");
    assert_eq!(rows(&mut c, "SELECT id FROM accounts WHERE id >= 150 AND id < 250 ORDER BY id").await.len(), 5);

    let low = explain(&mut c, "SELECT * FROM accounts WHERE id < 100").await;
    assert!(low.contains(&format!("shard groups: {}\n", g(0))), "{low}");

    let scatter = explain(&mut c, "SELECT owner FROM accounts WHERE balance > 10 ORDER BY owner LIMIT 2").await;
    assert!(scatter.contains("full scan") && scatter.contains(&format!("{}, {}, {}", g(0), g(1), g(2))), "{scatter}");
    assert!(scatter.contains("filter: evaluated on the shards") && scatter.contains("sort, limit"), "{scatter}");

    let limited = explain(&mut c, "SELECT * FROM accounts WHERE balance > 10 LIMIT 2").await;
    assert!(limited.contains("limit pushed to each shard: 2"), "{limited}");
    assert_eq!(rows(&mut c, "SELECT * FROM accounts WHERE balance > 10 LIMIT 2").await.len(), 2);

    let update = explain(&mut c, "UPDATE accounts SET balance = balance + 1 WHERE id = 3").await;
    assert!(update.contains(&format!("shard groups: {}", g(0))) && update.contains("one phase (1PC) on shard group 1"), "{update}");

    let insert = explain(&mut c, "INSERT INTO accounts (id, owner) VALUES (260, 'x'), (270, 'y')").await;
    assert!(insert.contains(&format!("shard groups: {}", g(2))) && insert.contains("one phase (1PC) on shard group 3"), "{insert}");

    let spanning = explain(&mut c, "INSERT INTO accounts (id, owner) VALUES (60, 'x'), (160, 'y')").await;
    assert!(spanning.contains("two-phase commit (2PC) across shard groups 1, 2"), "{spanning}");
    let none = explain(&mut c, "SELECT * FROM accounts WHERE id = 1 AND id = 2").await;
    assert!(none.contains("shard groups: none"), "{none}");
}

#[tokio::test(flavor = "multi_thread")]
async fn statements_that_write_to_several_groups_commit_atomically() {
    let cluster = TestCluster::start(3);
    let mut c = cluster.client().await;
    seed_accounts(&mut c, 3).await;
    let r = exec(&mut c, "INSERT INTO accounts (id, owner) VALUES (60, 'x'), (160, 'y'), (260, 'z')").await;
    assert_eq!(r[0].tag, "INSERT 0 3");
    let r = exec(&mut c, "UPDATE accounts SET balance = balance + 1").await;
    assert_eq!(r[0].tag, "UPDATE 12");
    assert_eq!(scalar(&mut c, "SELECT sum(balance) FROM accounts").await, (10 + 20 + 30 + 1000 + 1010 + 1020 + 2000 + 2010 + 2020 + 12).to_string());
    // A duplicate on one group aborts the rows headed for the others too.
    let err = fail(&mut c, "INSERT INTO accounts (id, owner) VALUES (61, 'a'), (161, 'b'), (260, 'dup')").await;
    assert_eq!(err.sqlstate.as_deref(), Some("23505"), "{err}");
    assert!(err.message.contains("Key (id)=(260)"), "{err}");
    assert_eq!(scalar(&mut c, "SELECT count(*) FROM accounts WHERE id IN (61, 161)").await, "0");
    // A CHECK violation on one group leaves every group unchanged.
    let err = fail(&mut c, "UPDATE accounts SET balance = balance - 15").await;
    assert_eq!(err.sqlstate.as_deref(), Some("23514"), "{err}");
    assert_eq!(scalar(&mut c, "SELECT sum(balance) FROM accounts").await, (10 + 20 + 30 + 1000 + 1010 + 1020 + 2000 + 2010 + 2020 + 12).to_string());
    let status = c.cluster_status().await.unwrap();
    assert!(status.two_phase_commits >= 2, "{status:?}");
    assert!(status.shard_groups.iter().all(|g| g.locks_held == 0 && g.prepared_transactions == 0), "{status:?}");
}
