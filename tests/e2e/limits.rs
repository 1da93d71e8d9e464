//! Each limit a client can hit returns its own clear error: message size,
//! statement length, rows returned, concurrent sessions, statement timeout.

use crate::cluster::*;
use std::time::Duration;
use tessera::client::{Client, Value};

const LIMITS: &str = "[limits]\nmax_message_bytes = 65536\nmax_statement_bytes = 2000\nmax_result_rows = 50\nmax_sessions = 4\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_returns_its_error() {
    let cluster = TestCluster::start_configured(1, None, None, Some(LIMITS));
    let mut c = cluster.client().await;
    c.execute("CREATE TABLE docs (id BIGINT PRIMARY KEY, body TEXT)").await.unwrap();

    // Statement length.
    let long = format!("SELECT * FROM docs WHERE body = '{}'", "x".repeat(3000));
    let e = c.execute(&long).await.unwrap_err();
    assert_eq!(e.sqlstate.as_deref(), Some("54000"), "{e}");
    assert!(e.message.contains("max_statement_bytes (2000)"), "{e}");

    // Message size: a request larger than the limit is refused before it runs.
    let huge = Value::Text("y".repeat(100_000));
    let e = c.execute_with("INSERT INTO docs VALUES (1, $1)", &[huge]).await.unwrap_err();
    assert!(matches!(e.code, Some(tonic::Code::OutOfRange | tonic::Code::ResourceExhausted)), "{e:?}");
    assert!(e.message.contains("message length too large"), "{e}");
    // ... and a response that would be larger fails with a hint.
    for id in 0..40 {
        c.execute_with("INSERT INTO docs VALUES ($1, $2)", &[Value::Int(id), Value::Text("z".repeat(2_000))]).await.unwrap();
    }
    let e = c.execute("SELECT * FROM docs").await.unwrap_err();
    assert_eq!(e.sqlstate.as_deref(), Some("54000"), "{e}");
    assert!(e.message.contains("max_message_bytes") && e.message.contains("ExecuteStream"), "{e}");
    // ExecuteStream splits the same result into messages under the limit.
    use futures::StreamExt;
    let streamed: Vec<_> = c.query_stream("SELECT * FROM docs", &[]).await.unwrap().collect().await;
    assert_eq!(streamed.len(), 40);
    assert!(streamed.iter().all(|r| r.as_ref().is_ok_and(|r| r.get::<String>("body").unwrap().len() == 2_000)));

    // Rows returned.
    for id in 40..60 {
        c.execute_with("INSERT INTO docs VALUES ($1, 'short')", &[Value::Int(id)]).await.unwrap();
    }
    let e = c.execute("SELECT id FROM docs").await.unwrap_err();
    assert_eq!(e.sqlstate.as_deref(), Some("54000"), "{e}");
    assert!(e.message.contains("max_result_rows (50)"), "{e}");
    assert_eq!(c.query("SELECT id FROM docs LIMIT 50", &[]).await.unwrap().len(), 50);

    // Statement timeout: a younger transaction waits in line for an older
    // one's lock (wound-wait lets it wait) longer than its statement timeout.
    let mut older = cluster.client().await;
    older.execute("BEGIN; UPDATE docs SET body = 'held' WHERE id = 1").await.unwrap();
    let mut younger = cluster.client().await;
    younger.execute("BEGIN; SELECT * FROM docs WHERE id = 59").await.unwrap();
    younger.execute("SET statement_timeout = '300ms'").await.unwrap();
    assert_eq!(younger.query_one("SHOW statement_timeout", &[]).await.unwrap().get::<String>(0).unwrap(), "300ms");
    let started = std::time::Instant::now();
    let e = younger.execute("UPDATE docs SET body = 'waited' WHERE id = 1").await.unwrap_err();
    assert_eq!(e.sqlstate.as_deref(), Some("57014"), "{e}");
    assert!(e.message.contains("statement timeout"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(30));
    younger.execute("ROLLBACK").await.unwrap();
    older.execute("COMMIT").await.unwrap();

    // Sessions: four are open (c, older, younger, and this one); a fifth
    // is refused on both protocols until one closes.
    let fourth = cluster.client().await;
    let e = Client::builder(&cluster.coordinator.address).token(TOKEN).connect().await.err().expect("over max_sessions");
    assert_eq!(e.sqlstate.as_deref(), Some("53300"), "{e}");
    assert!(e.message.contains("max_sessions is 4"), "{e}");
    let pg = tokio_postgres::connect(&cluster.pg_conninfo(), tokio_postgres::NoTls).await;
    let e = pg.err().expect("a PostgreSQL connection counts too");
    assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS), "{e}");
    fourth.close().await.unwrap();
    Client::builder(&cluster.coordinator.address).token(TOKEN).connect().await.expect("a place is free again");
}
