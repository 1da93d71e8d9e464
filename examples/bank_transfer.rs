//! Money transfers across shards as sagas, including one that fails and is
//! compensated.
//!
//! ```text
//! cargo run --example bank_transfer
//! ```
//!
//! Starts a whole cluster in this process (three shard nodes with RocksDB
//! under a temporary directory, and a coordinator, all on loopback ports),
//! creates an `accounts` table split over the three shard groups, and runs
//! two transfers with the saga protocol:
//!
//! 1. alice (group 1) pays bob (group 2) 30: the debit and the credit each
//!    commit on their own shard; the saga commits.
//! 2. alice pays 50 to account 250, which does not exist: the debit commits
//!    on group 1, the credit fails on group 3, so the saga runs the debit's
//!    compensation (it adds the 50 back) and rolls back.
//!
//! It prints the balances after each transfer and each saga's timeline.

use tessera::client::{Client, ClientError, Protocol, StatementResult};
use tessera::cluster::{ClusterOptions, LocalCluster};
use tessera::shell::format_result;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cluster = LocalCluster::start(ClusterOptions::default()).await?;
    println!("cluster: coordinator on {}, shard groups on {:?}\n", cluster.address, cluster.shard_addresses());
    let outcome = run(&cluster.address.to_string()).await;
    cluster.shutdown().await;
    outcome
}

async fn run(address: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut client = Client::connect(address).await?;
    client
        .execute(
            "CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner TEXT NOT NULL, balance BIGINT NOT NULL CHECK (balance >= 0))
             WITH (partitioning = 'range', split_points = '100,200');
             INSERT INTO accounts VALUES (1, 'alice', 100);
             INSERT INTO accounts VALUES (101, 'bob', 20);
             INSERT INTO accounts VALUES (201, 'carol', 70)",
        )
        .await?;
    // Every transaction of this client runs as a saga (the same as
    // `SET transaction_protocol = 'saga'` in SQL).
    client.set_protocol(Some(Protocol::Saga));
    show(&mut client, "SELECT * FROM accounts ORDER BY id").await?;

    let transfer = |from: i64, to: i64, amount: i64| {
        format!("UPDATE accounts SET balance = balance - {amount} WHERE id = {from}; UPDATE accounts SET balance = balance + {amount} WHERE id = {to}")
    };

    // EXPLAIN inside a saga's BEGIN numbers the steps after the queued ones.
    println!("== What the transfer saga will do (EXPLAIN, nothing runs):");
    client.execute("BEGIN").await?;
    show(&mut client, "EXPLAIN UPDATE accounts SET balance = balance - 30 WHERE id = 1").await?;
    client.execute("UPDATE accounts SET balance = balance - 30 WHERE id = 1").await?;
    show(&mut client, "EXPLAIN UPDATE accounts SET balance = balance + 30 WHERE id = 101").await?;
    client.execute("ROLLBACK").await?;

    println!("== Transfer 1: alice pays bob 30 (shard group 1 -> shard group 2)");
    client.saga(&transfer(1, 101, 30)).await?;
    println!("COMMIT\n");
    show(&mut client, "SELECT * FROM accounts ORDER BY id").await?;
    let committed = client.sagas().await?.last().map(|s| s.saga_id.clone()).ok_or("no saga recorded")?;
    show(&mut client, &format!("SHOW SAGA {committed}")).await?;

    println!("== Transfer 2: alice pays 50 to account 250, which does not exist (group 1 -> group 3)");
    match client.saga(&transfer(1, 250, 50)).await {
        Ok(_) => return Err("the transfer to a missing account should have failed".into()),
        Err(ClientError { saga_id: Some(id), message, sqlstate, .. }) => {
            println!("ERROR: {message} (SQLSTATE {})\n", sqlstate.unwrap_or_default());
            show(&mut client, &format!("SHOW SAGA {id}")).await?;
        }
        Err(e) => return Err(e.into()),
    }
    show(&mut client, "SELECT * FROM accounts ORDER BY id").await?;
    show(&mut client, "SELECT sum(balance) AS total FROM accounts").await?;
    Ok(())
}

async fn show(client: &mut Client, sql: &str) -> Result<Vec<StatementResult>, ClientError> {
    let results = client.execute(sql).await?;
    for result in &results {
        println!("{}\n", format_result(result));
    }
    Ok(results)
}
