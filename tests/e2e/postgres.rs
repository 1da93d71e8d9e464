//! The PostgreSQL wire protocol: psql (`-c` and `-f`), a driver
//! (tokio-postgres) with parameters, SCRAM authentication, TLS.

use crate::cluster::*;
use std::process::{Command, Output};
use std::time::Duration;

/// Runs psql against `conninfo` with extra arguments.
fn psql(conninfo: &str, args: &[&str]) -> Output {
    Command::new("psql")
        .arg(conninfo)
        .args(["-X", "-w", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .env_remove("PGPASSWORD")
        .output()
        .expect("psql is installed (dev.sh installs postgresql-client)")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn psql_runs_ddl_dml_and_a_transaction() {
    let cluster = TestCluster::start(3);
    let conninfo = cluster.pg_conninfo();
    let out = psql(&conninfo, &["-c", &ACCOUNTS.replace('\n', " ")]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("CREATE TABLE"), "{}", text(&out));
    let out = psql(&conninfo, &["-c", "INSERT INTO accounts (id, owner, balance) VALUES (1, 'alice', 100), (150, 'bob', 50), (250, 'carol', 70)"]);
    assert!(text(&out).contains("INSERT 0 3"), "{}", text(&out));

    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("transfer.sql");
    std::fs::write(
        &script,
        "BEGIN;\nUPDATE accounts SET balance = balance - 30 WHERE id = 1;\nUPDATE accounts SET balance = balance + 30 WHERE id = 250;\nCOMMIT;\n\
         SELECT id, owner, balance FROM accounts ORDER BY id;\n",
    )
    .unwrap();
    let out = psql(&conninfo, &["-f", script.to_str().unwrap()]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    for expected in ["BEGIN", "UPDATE 1", "COMMIT", "alice |      70", "carol |     100", "(3 rows)"] {
        assert!(shown.contains(expected), "{expected:?} missing from:\n{shown}");
    }
    // Errors carry their SQLSTATE and stop a script.
    let out = psql(&conninfo, &["-v", "VERBOSITY=verbose", "-c", "UPDATE accounts SET balance = balance - 1000 WHERE id = 1"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("23514") && text(&out).contains("accounts_check"), "{}", text(&out));
    let out = psql(&conninfo, &["-c", "SELECT * FROM nowhere"]);
    assert!(text(&out).contains("relation \"nowhere\" does not exist") || text(&out).contains("table \"nowhere\" does not exist"), "{}", text(&out));
    // A failed transaction behaves as in PostgreSQL.
    let out = psql(&conninfo, &["-c", "BEGIN; UPDATE accounts SET balance = -5 WHERE id = 150; COMMIT"]);
    assert!(!out.status.success());
    let out = psql(&conninfo, &["-A", "-t", "-c", "SELECT balance FROM accounts WHERE id = 150"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "50");
    // What the shell shows, psql shows: EXPLAIN and SHOW TABLES.
    let out = psql(&conninfo, &["-c", "EXPLAIN UPDATE accounts SET balance = balance + 1 WHERE id = 150"]);
    assert!(text(&out).contains("one phase (1PC) on shard group 2"), "{}", text(&out));
    let out = psql(&conninfo, &["-c", "SHOW TABLES"]);
    assert!(text(&out).contains("accounts"), "{}", text(&out));
    // psql's own \d and \d table describe Tessera's tables.
    let out = psql(&conninfo, &["-c", "\\d"]);
    assert!(text(&out).contains("public | accounts | table"), "{}", text(&out));
    let out = psql(&conninfo, &["-c", "\\d accounts"]);
    let shown = text(&out);
    for expected in
        ["Table \"public.accounts\"", "balance | bigint", "character varying(20)", "\"accounts_pkey\" PRIMARY KEY, btree (id)", "CHECK (balance >= 0)"]
    {
        assert!(shown.contains(expected), "{expected:?} missing from:\n{shown}");
    }
}

#[test]
fn wrong_or_missing_passwords_are_refused() {
    let cluster = TestCluster::start(1);
    let address = cluster.pg_address();
    let (host, port) = address.rsplit_once(':').unwrap();
    let wrong = format!("host={host} port={port} user={PG_USER} password=wrong dbname=tessera sslmode=disable");
    let out = psql(&wrong, &["-c", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("password authentication failed for user \"tessera\""), "{}", text(&out));
    let stranger = format!("host={host} port={port} user=mallory password={PG_PASSWORD} dbname=tessera sslmode=disable");
    let out = psql(&stranger, &["-c", "SELECT 1"]);
    assert!(text(&out).contains("password authentication failed for user \"mallory\""), "{}", text(&out));
    let none = format!("host={host} port={port} user={PG_USER} dbname=tessera sslmode=disable");
    let out = psql(&none, &["-c", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("no password supplied"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_binds_parameters_and_sees_sqlstates() {
    let cluster = TestCluster::start(3);
    let (mut client, connection) = tokio_postgres::connect(&cluster.pg_conninfo(), tokio_postgres::NoTls).await.expect("connect with SCRAM");
    tokio::spawn(connection);
    client.batch_execute(&ACCOUNTS.replace('\n', " ")).await.unwrap();
    let insert = client.prepare("INSERT INTO accounts (id, owner, balance, vip, rate) VALUES ($1, $2, $3, $4, $5)").await.unwrap();
    for (id, owner) in [(7i64, "alice"), (107, "bob"), (207, "carol")] {
        client.execute(&insert, &[&id, &owner, &100i64, &true, &1.5f64]).await.unwrap();
    }
    let row = client.query_one("SELECT owner, balance, vip, rate FROM accounts WHERE id = $1", &[&107i64]).await.unwrap();
    assert_eq!(row.get::<_, String>("owner"), "bob");
    assert_eq!(row.get::<_, i64>("balance"), 100);
    assert!(row.get::<_, bool>("vip"));
    assert_eq!(row.get::<_, f64>("rate"), 1.5);
    let rows = client.query("SELECT id FROM accounts WHERE balance >= $1 AND owner <> $2 ORDER BY id LIMIT $3", &[&50i64, &"bob", &10i64]).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>(), vec![7, 207]);
    // A transaction across shard groups through the driver.
    let txn = client.transaction().await.unwrap();
    txn.execute("UPDATE accounts SET balance = balance - $1 WHERE id = $2", &[&40i64, &7i64]).await.unwrap();
    txn.execute("UPDATE accounts SET balance = balance + $1 WHERE id = $2", &[&40i64, &207i64]).await.unwrap();
    txn.commit().await.unwrap();
    let total: i64 = client.query_one("SELECT sum(balance) FROM accounts", &[]).await.unwrap().get(0);
    assert_eq!(total, 300);
    let e = client.execute("UPDATE accounts SET balance = balance - $1 WHERE id = $2", &[&1000i64, &7i64]).await.unwrap_err();
    assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION), "{e}");
    let e = client.execute("INSERT INTO accounts (id, owner) VALUES ($1, $2)", &[&7i64, &"again"]).await.unwrap_err();
    assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION), "{e}");
    // The connection is still usable after errors.
    assert_eq!(client.query_one("SELECT count(*) FROM accounts", &[]).await.unwrap().get::<_, i64>(0), 3);
}

/// A certificate authority and a certificate for localhost signed by it.
pub fn test_certificates(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Tessera test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap().signed_by(&key, &ca).unwrap();
    let (cert_path, key_path) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path, ca.pem().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_grpc_and_postgres_when_certificates_are_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = test_certificates(dir.path());
    let toml = format!("internal_listen = \"127.0.0.1:0\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n", cert.display(), key.display());
    let cluster = TestCluster::start_configured(1, None, None, Some(&toml));
    let address = cluster.coordinator.address.clone();
    let mut c = tessera::Client::builder(&address).token(TOKEN).tls_ca_pem(ca.clone()).tls_domain("localhost").connect().await.expect("a TLS client");
    assert_eq!(c.execute("SHOW TABLES").await.unwrap()[0].tag, "SELECT 0");
    // Plain text is not spoken on a TLS port, and an untrusted CA fails.
    let plain = tessera::Client::builder(&address).token(TOKEN).connect_timeout(Duration::from_secs(3)).request_timeout(Duration::from_secs(5)).connect().await;
    assert!(plain.is_err(), "a plain-text client must not get through");
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (_, _, other_ca) = test_certificates(&other);
    let untrusted = tessera::Client::builder(&address).token(TOKEN).tls_ca_pem(other_ca).tls_domain("localhost").connect().await;
    assert!(untrusted.is_err(), "a client that does not trust the server's CA must fail");
    // psql verifies the certificate, and plain-text PostgreSQL is refused.
    let ca_path = dir.path().join("ca.crt");
    std::fs::write(&ca_path, &ca).unwrap();
    let verified = cluster.pg_conninfo().replace("sslmode=disable", &format!("sslmode=verify-full sslrootcert={}", ca_path.display()));
    let out = psql(&verified, &["-A", "-t", "-c", "SHOW TABLES"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = psql(&cluster.pg_conninfo(), &["-c", "SHOW TABLES"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("requires TLS"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_on_the_public_port_shards_still_resolve_in_doubt_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = test_certificates(dir.path());
    // A fixed internal port: prepared records name it, and the restarted
    // coordinator must answer there.
    let internal = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let toml = format!("internal_listen = \"{internal}\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n", cert.display(), key.display());
    let mut cluster = TestCluster::start_configured(3, Some("coordinator.after_prepare"), None, Some(&toml));
    let address = cluster.coordinator.address.clone();
    let connect = || tessera::Client::builder(&address).token(TOKEN).tls_ca_pem(ca.clone()).tls_domain("localhost").connect();
    let mut c = connect().await.unwrap();
    seed_bank(&mut c).await;
    let mut stuck = connect().await.unwrap();
    let transfer = tokio::spawn(async move { stuck.execute(&transfer_sql(1, 100, 10)).await });
    cluster.coordinator.wait_for_log("failpoint coordinator.after_prepare reached", Duration::from_secs(30));
    // The coordinator dies between PREPARE and its decision.
    cluster.coordinator.env.clear();
    cluster.coordinator.restart();
    assert!(transfer.await.unwrap().is_err());
    // The participants ask the restarted coordinator, on its internal port,
    // learn ABORTED (nothing was logged) and release their locks.
    let mut c = connect().await.unwrap();
    wait_quiet(&mut c, Duration::from_secs(30)).await;
    assert_bank_invariant(&mut c).await;
    assert_eq!(balance(&mut c, 1).await, 1000);
}
