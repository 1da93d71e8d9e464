//! The gRPC API from the Rust client: sessions, parameters, typed rows,
//! streaming, explicit transactions, idempotency keys, error details,
//! health and reflection, and who gets refused.

use crate::cluster::*;
use futures::StreamExt;
use std::time::Duration;
use tessera::client::{Client, Protocol, Value};
use tessera_proto::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_typed_rows_streams_and_transactions() {
    let cluster = TestCluster::start(3);
    let mut c = cluster.client().await;
    seed_accounts(&mut c, 5).await;
    let rows = c.query("SELECT id, owner, balance, vip, rate FROM accounts WHERE id = $1", &[Value::Int(102)]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<i64>("id").unwrap(), 102);
    assert_eq!(rows[0].get::<String>("owner").unwrap(), "owner102");
    assert!(rows[0].get::<bool>("vip").unwrap());
    assert_eq!(rows[0].get::<f64>("rate").unwrap(), 102.5);
    // A text parameter with a quote is a value, not SQL.
    c.execute_with("UPDATE accounts SET owner = $1 WHERE id = $2", &[Value::Text("o'brien; DROP t".into()), Value::Int(1)]).await.unwrap();
    assert_eq!(c.query_one("SELECT owner FROM accounts WHERE id = $1", &[Value::Int(1)]).await.unwrap().get::<String>(0).unwrap(), "o'brien; DROP t");
    let e = c.execute_with("SELECT * FROM accounts WHERE id = $2", &[Value::Int(1)]).await.unwrap_err();
    assert_eq!(e.sqlstate.as_deref(), Some("08P01"), "{e}");
    let e = c.execute_with("SELECT * FROM accounts WHERE id = $1", &[Value::Text("abc".into())]).await.unwrap_err();
    assert_eq!(e.sqlstate.as_deref(), Some("42883"), "a text parameter is compared as text: {e}");

    // Streaming returns every row, in batches.
    c.execute("CREATE TABLE blobs (id BIGINT PRIMARY KEY, body TEXT) WITH (partitioning = 'hash')").await.unwrap();
    let values: Vec<String> = (0..3000).map(|id| format!("({id}, '{}')", "x".repeat(1000))).collect();
    c.execute(&format!("INSERT INTO blobs VALUES {}", values.join(", "))).await.unwrap();
    let stream = c.query_stream("SELECT id, body FROM blobs ORDER BY id", &[]).await.unwrap();
    let rows: Vec<_> = stream.collect::<Vec<_>>().await.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 3000);
    assert_eq!(rows[2999].get::<i64>("id").unwrap(), 2999);

    // Explicit transactions through Begin/Commit and the retrying closure.
    c.begin().await.unwrap();
    c.execute("UPDATE accounts SET balance = balance - 5 WHERE id = 1; UPDATE accounts SET balance = balance + 5 WHERE id = 200").await.unwrap();
    assert_eq!(c.commit(None).await.unwrap(), "COMMIT");
    let moved = c
        .transaction(async |tx| {
            let from = tx.query_one("SELECT balance FROM accounts WHERE id = $1", &[Value::Int(2)]).await?.get::<i64>("balance")?;
            tx.execute("UPDATE accounts SET balance = $1 WHERE id = $2", &[Value::Int(from - 7), Value::Int(2)]).await?;
            tx.execute("UPDATE accounts SET balance = balance + 7 WHERE id = $1", &[Value::Int(101)]).await?;
            Ok(from)
        })
        .await
        .unwrap();
    assert_eq!(moved, 20);
    assert_eq!(scalar(&mut c, "SELECT balance FROM accounts WHERE id = 2").await, "13");
    // The closure's error rolls back and comes back as is.
    let e = c
        .transaction(async |tx| {
            tx.execute("UPDATE accounts SET balance = balance - 1 WHERE id = 3", &[]).await?;
            tx.execute("UPDATE accounts SET balance = balance - 1000000 WHERE id = 4", &[]).await?;
            Ok(())
        })
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate.as_deref(), Some("23514"));
    assert_eq!(scalar(&mut c, "SELECT balance FROM accounts WHERE id = 3").await, "30");
    // The saga option.
    c.set_protocol(Some(Protocol::Saga));
    c.execute("UPDATE accounts SET balance = balance - 1 WHERE id = 3; UPDATE accounts SET balance = balance + 1 WHERE id = 103").await.unwrap();
    c.set_protocol(None);
    assert_eq!(scalar(&mut c, "SELECT balance FROM accounts WHERE id = 103").await, "1031");
    wait_quiet(&mut c, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_commit_with_the_same_idempotency_key_applies_once() {
    let cluster = TestCluster::start(3);
    let mut c = cluster.client().await;
    seed_bank(&mut c).await;
    let transfer = "BEGIN; UPDATE bank SET balance = balance - $1 WHERE id = 1; UPDATE bank SET balance = balance + $1 WHERE id = 200; COMMIT";
    let first = c.execute_idempotent(transfer, &[Value::Int(100)], "transfer-1").await.unwrap();
    // The client retries (it never saw the answer): same key, same request.
    let again = c.execute_idempotent(transfer, &[Value::Int(100)], "transfer-1").await.unwrap();
    assert_eq!(first, again, "the retry gets the first outcome");
    assert_eq!(balance(&mut c, 1).await, 900, "applied once");
    assert_eq!(balance(&mut c, 200).await, 1100);
    // From another connection, too.
    let mut other = cluster.client().await;
    other.execute_idempotent(transfer, &[Value::Int(100)], "transfer-1").await.unwrap();
    assert_eq!(balance(&mut c, 1).await, 900);
    // A single-group autocommit write is keyed the same way.
    for _ in 0..3 {
        c.execute_idempotent("UPDATE bank SET balance = balance + 1 WHERE id = 2", &[], "bonus-2").await.unwrap();
    }
    assert_eq!(balance(&mut c, 2).await, 1001);
    c.execute("UPDATE bank SET balance = balance - 1 WHERE id = 2").await.unwrap();
    // The key belongs to its request.
    let e = c.execute_idempotent(transfer, &[Value::Int(5)], "transfer-1").await.unwrap_err();
    assert!(e.message.contains("different request") && e.sqlstate.as_deref() == Some("22023"), "{e}");
    // DDL and saga admin statements take no key.
    let e = c.execute_idempotent("DROP TABLE bank", &[], "ddl").await.unwrap_err();
    assert!(e.message.contains("take no idempotency key"), "{e}");
    // A keyed request must end with its own commit.
    let e = c.execute_idempotent("BEGIN; UPDATE bank SET balance = 0 WHERE id = 3", &[], "half").await.unwrap_err();
    assert!(e.message.contains("must end with its own commit"), "{e}");
    // The Commit RPC with a key: the retry answers COMMIT without a second commit.
    c.begin().await.unwrap();
    c.execute("UPDATE bank SET balance = balance - 50 WHERE id = 100; UPDATE bank SET balance = balance + 50 WHERE id = 4").await.unwrap();
    assert_eq!(c.commit(Some("commit-key")).await.unwrap(), "COMMIT");
    assert_eq!(c.commit(Some("commit-key")).await.unwrap(), "COMMIT");
    assert_eq!(balance(&mut c, 100).await, 950);
    // A keyed saga that rolled back answers the retry with the same error.
    c.set_protocol(Some(Protocol::Saga));
    let missing = "BEGIN; UPDATE bank SET balance = balance - 10 WHERE id = 5; UPDATE bank SET balance = balance + 10 WHERE id = 999; COMMIT";
    let e1 = c.execute_idempotent(missing, &[], "saga-1").await.unwrap_err();
    let e2 = c.execute_idempotent(missing, &[], "saga-1").await.unwrap_err();
    c.set_protocol(None);
    assert_eq!(e1.saga_id, e2.saga_id);
    assert!(e1.saga_id.is_some());
    assert_eq!(c.sagas().await.unwrap().len(), 1, "the retry did not start a second saga");
    assert_bank_invariant(&mut c).await;
    // The outcome survives a coordinator restart.
    let mut cluster = cluster;
    cluster.coordinator.restart();
    let mut c = cluster.client().await;
    c.execute_idempotent(transfer, &[Value::Int(100)], "transfer-1").await.unwrap();
    assert_eq!(balance(&mut c, 1).await, 900);
    wait_quiet(&mut c, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_sqlstate_details_and_sessions_belong_to_their_client() {
    let cluster = TestCluster::start(1);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.coordinator.address)).unwrap().connect().await.unwrap();
    let token: tonic::metadata::MetadataValue<_> = format!("Bearer {TOKEN}").parse().unwrap();
    let auth = move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", token.clone());
        Ok(r)
    };
    let mut raw = pb::tessera_client::TesseraClient::with_interceptor(channel.clone(), auth.clone());
    let status = raw.execute(pb::ExecuteRequest { sql: "SELECT * FROM nowhere".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let info = tonic_types::StatusExt::get_details_error_info(&status).expect("an ErrorInfo detail");
    assert_eq!(info.reason, "42P01");
    assert_eq!(info.domain, "tessera.v1");
    assert_eq!(info.metadata.get("sqlstate").map(String::as_str), Some("42P01"));
    // A session id that was never opened is refused with NOT_FOUND.
    let status = raw.execute(pb::ExecuteRequest { sql: "SELECT 1".into(), session_id: "made-up".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    // Closing a session rolls back its transaction.
    let session = raw.open_session(pb::OpenSessionRequest {}).await.unwrap().into_inner().session_id;
    let run = |sql: &str| pb::ExecuteRequest { sql: sql.into(), session_id: session.clone(), ..Default::default() };
    raw.execute(run("CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT)")).await.unwrap();
    raw.execute(run("BEGIN; INSERT INTO t VALUES (1, 1)")).await.unwrap();
    raw.close_session(pb::CloseSessionRequest { session_id: session.clone() }).await.unwrap();
    let mut c = cluster.client().await;
    assert_eq!(scalar(&mut c, "SELECT count(*) FROM t").await, "0");
    wait_quiet(&mut c, Duration::from_secs(10)).await;

    // Health and reflection answer, so grpcurl can list the services.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let serving = health.check(tonic_health::pb::HealthCheckRequest { service: "tessera.v1.Tessera".into() }).await.unwrap().into_inner();
    assert_eq!(serving.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    let services = list_services(channel).await;
    for expected in ["tessera.v1.Tessera", "tessera.v1.Admin", "grpc.health.v1.Health"] {
        assert!(services.iter().any(|s| s == expected), "{expected} missing from {services:?}");
    }
}

async fn list_services(channel: tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
    let mut responses = client.server_reflection_info(futures::stream::iter(vec![request])).await.unwrap().into_inner();
    let response = responses.next().await.unwrap().unwrap();
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => list.service.into_iter().map(|s| s.name).collect(),
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_credentials_are_refused() {
    let cluster = TestCluster::start(1);
    let address = cluster.coordinator.address.clone();
    let e = Client::connect(&address).await.err().expect("no token is refused");
    assert_eq!(e.code, Some(tonic::Code::Unauthenticated), "{e}");
    assert!(e.message.contains("authentication required"), "{e}");
    let e = Client::builder(&address).token("wrong-token").connect().await.err().expect("a wrong token is refused");
    assert!(e.message.contains("invalid bearer token"), "{e}");
    let mut ok = Client::builder(&address).token(TOKEN).connect().await.unwrap();
    ok.execute("SHOW TABLES").await.unwrap();

    // A client that reaches a shard port directly is refused, and so is one
    // with a wrong secret.
    let shard = format!("http://{}", cluster.shards[0].address);
    let mut direct = tessera_proto::shard::shard_client::ShardClient::connect(shard.clone()).await.unwrap();
    let status = direct.get(tessera_proto::shard::GetRequest { keys: vec![vec![0, 0, 0, 1]], ..Default::default() }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(status.message().contains("cluster secret"), "{}", status.message());
    let mut request = tonic::Request::new(tessera_proto::shard::StatusRequest {});
    request.metadata_mut().insert(tessera_proto::CLUSTER_SECRET_METADATA_KEY, "not-the-secret-at-all".parse().unwrap());
    let status = direct.status(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let mut request = tonic::Request::new(tessera_proto::shard::StatusRequest {});
    request.metadata_mut().insert(tessera_proto::CLUSTER_SECRET_METADATA_KEY, CLUSTER_SECRET.parse().unwrap());
    assert!(direct.status(request).await.is_ok(), "the secret opens the door");
    // The coordinator's internal resolver is guarded the same way.
    let mut resolver = tessera_proto::shard::resolver_client::ResolverClient::connect(format!("http://{address}")).await.unwrap();
    let status = resolver.outcome(tessera_proto::shard::OutcomeRequest { txn_id: "x".into() }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}
