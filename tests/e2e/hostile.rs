//! Hostile input, tried as a hostile client would: long and deeply nested
//! expressions over both protocols, malformed PostgreSQL messages, text that
//! is not UTF-8 or holds NUL bytes, and a panic inside a request. Each gets
//! an answer (a result or an error with its SQLSTATE) and the servers keep
//! serving.

use crate::cluster::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use tessera::client::ClientError;

/// `n` terms joined by `op`, each made by `term(i)`.
fn joined(n: usize, op: &str, term: impl Fn(usize) -> String) -> String {
    (0..n).map(term).collect::<Vec<_>>().join(op)
}

/// The statements of each shape at `n` terms, with the answer each must
/// give when it runs (first column of the first row).
fn shapes(n: usize) -> Vec<(String, String)> {
    let existing_ids = [1usize, 2, 3, 100, 101, 102, 200, 201, 202].iter().filter(|id| **id < n).count();
    vec![
        (format!("SELECT {}", joined(n, " + ", |_| "1".into())), n.to_string()),
        (format!("SELECT count(*) FROM accounts WHERE balance {} > 0", joined(n, " ", |_| "+ 0".into())), "9".into()),
        (format!("SELECT count(*) FROM accounts WHERE {}", joined(n, " OR ", |i| format!("id = {i}"))), existing_ids.to_string()),
        (format!("SELECT count(*) FROM accounts WHERE {}", joined(n, " AND ", |_| "id > 0".into())), "9".into()),
        (format!("SELECT count(*) FROM accounts WHERE id IN ({})", joined(n, ", ", |i| i.to_string())), existing_ids.to_string()),
        (format!("SELECT length({})", joined(n, " || ", |_| "'a'".into())), n.to_string()),
        (format!("UPDATE accounts SET balance = balance {} WHERE id = 1", joined(n, " ", |_| "+ 0".into())), String::new()),
        // Shapes that cannot be flattened: 54001 past limits.max_expr_depth.
        (format!("SELECT 1{}", "::int".repeat(n)), "1".into()),
        (format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n)), "1".into()),
        (format!("SELECT count(*) FROM accounts WHERE {}", joined(n, " = ", |_| "true".into())), String::new()),
    ]
}

fn check_answer(sql: &str, expected: &str, outcome: Result<String, (Option<String>, String)>) {
    match outcome {
        Ok(got) => assert!(expected.is_empty() || got == expected, "{}...: got {got}, expected {expected}", &sql[..60.min(sql.len())]),
        Err((state, message)) => {
            let allowed = ["54001", "42883", "42804"];
            assert!(state.as_deref().is_some_and(|s| allowed.contains(&s)), "{}...: {state:?} {message}", &sql[..60.min(sql.len())]);
            if state.as_deref() == Some("54001") {
                assert!(message.contains("limits.max_expr_depth"), "{message}");
            }
        }
    }
}

fn first_cell(results: &[tessera::client::StatementResult]) -> String {
    results.last().and_then(|r| r.rows.first()).and_then(|row| row.first()).map(|v| v.to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn long_and_deep_expressions_answer_or_fail_with_54001_on_both_protocols() {
    let mut cluster = TestCluster::start(3);
    let mut c = cluster.client().await;
    seed_accounts(&mut c, 3).await;
    let (pg, connection) = tokio_postgres::connect(&cluster.pg_conninfo(), tokio_postgres::NoTls).await.expect("connect over the PostgreSQL protocol");
    tokio::spawn(connection);
    for n in [1_000, 10_000, 100_000] {
        for (sql, expected) in shapes(n) {
            let grpc = run_sql(&mut c, &sql).await.map(|r| first_cell(&r)).map_err(|e: ClientError| (e.sqlstate.clone(), e.message.clone()));
            check_answer(&sql, &expected, grpc);
            let simple = pg.simple_query(&sql).await;
            let simple = simple
                .map(|messages| {
                    messages
                        .iter()
                        .find_map(|m| match m {
                            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
                            _ => None,
                        })
                        .unwrap_or_default()
                })
                .map_err(|e| (e.code().map(|c| c.code().to_string()), e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string())));
            check_answer(&sql, &expected, simple);
            // Both servers still answer.
            assert_eq!(scalar(&mut c, "SELECT 2").await, "2");
        }
    }
    assert_eq!(scalar(&mut c, "SELECT balance FROM accounts WHERE id = 1").await, "10");
    assert!(cluster.coordinator.is_running());
}

/// A raw PostgreSQL connection that has finished startup (trust auth).
fn raw_connection(address: &str) -> TcpStream {
    let mut s = TcpStream::connect(address).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut body = Vec::new();
    body.extend_from_slice(&196608i32.to_be_bytes());
    for part in ["user", "raw", "database", "tessera", ""] {
        body.extend_from_slice(part.as_bytes());
        body.push(0);
    }
    let mut startup = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    startup.extend(body);
    s.write_all(&startup).unwrap();
    read_until(&mut s, b'Z');
    s
}

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Reads backend messages until one of type `until` (or the end); returns
/// the SQLSTATEs of the errors seen and whether the stream ended.
fn read_until(s: &mut TcpStream, until: u8) -> (Vec<String>, bool) {
    let mut states = Vec::new();
    loop {
        let mut head = [0u8; 5];
        if s.read_exact(&mut head).is_err() {
            return (states, true);
        }
        let len = i32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        if s.read_exact(&mut body).is_err() {
            return (states, true);
        }
        if head[0] == b'E' {
            let code = body.split(|b| *b == 0).find(|f| f.first() == Some(&b'C')).map(|f| String::from_utf8_lossy(&f[1..]).into_owned());
            states.extend(code);
        }
        if head[0] == until {
            return (states, false);
        }
    }
}

fn bind_body(formats: &[i16], count: i16, params: &[(i32, &[u8])]) -> Vec<u8> {
    let mut b = vec![0u8, 0u8];
    b.extend_from_slice(&(formats.len() as i16).to_be_bytes());
    for f in formats {
        b.extend_from_slice(&f.to_be_bytes());
    }
    b.extend_from_slice(&count.to_be_bytes());
    for (len, data) in params {
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(data);
    }
    b.extend_from_slice(&0i16.to_be_bytes());
    b
}

#[test]
fn malformed_messages_get_08p01_and_bad_text_gets_22021() {
    let cluster = TestCluster::start_configured(3, None, None, Some("auth.trust = true\n"));
    let address = cluster.pg_address();
    let parse = message(b'P', b"\0SELECT $1::text\0\0\0");
    let mut format_flood = vec![0u8, 0u8];
    format_flood.extend_from_slice(&(-1i16).to_be_bytes());
    let malformed: Vec<(&str, Vec<u8>)> = vec![
        ("more parameters announced than sent", message(b'B', &bind_body(&[], 3, &[(1, b"7")]))),
        ("a parameter length of 2^31-1", message(b'B', &bind_body(&[], 1, &[(i32::MAX, b"")]))),
        ("a format count of 65535 with no data", message(b'B', &format_flood)),
        ("a length word below 4", vec![b'Q', 0, 0, 0, 1]),
        ("an unknown message type", message(b'y', b"")),
        ("an Execute without its row count", message(b'E', b"\0")),
    ];
    for (what, bytes) in malformed {
        let mut s = raw_connection(&address);
        s.write_all(&parse).unwrap();
        s.write_all(&bytes).unwrap();
        s.write_all(&message(b'S', b"")).unwrap();
        let (states, ended) = read_until(&mut s, b'Z');
        assert!(states.contains(&"08P01".to_string()), "{what}: {states:?}");
        assert!(ended, "{what}: the connection is closed after a malformed message");
    }
    // Text that is not UTF-8, and NUL bytes: refused, the connection goes on.
    let mut s = raw_connection(&address);
    s.write_all(&message(b'Q', b"CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT)\0")).unwrap();
    assert_eq!(read_until(&mut s, b'Z').0, Vec::<String>::new());
    s.write_all(&message(b'Q', b"INSERT INTO notes VALUES (1, '\xff\xfe\xc3\x28')\0")).unwrap();
    assert_eq!(read_until(&mut s, b'Z').0, vec!["22021".to_string()]);
    s.write_all(&message(b'Q', b"SELECT 1\0SELECT 2\0")).unwrap();
    assert_eq!(read_until(&mut s, b'Z').0, vec!["08P01".to_string()]);
    let insert = message(b'P', b"\0INSERT INTO notes VALUES (2, $1)\0\0\0");
    s.write_all(&insert).unwrap();
    s.write_all(&message(b'B', &bind_body(&[], 1, &[(3, b"a\0b")]))).unwrap();
    s.write_all(&message(b'E', b"\0\0\0\0\0")).unwrap();
    s.write_all(&message(b'S', b"")).unwrap();
    assert_eq!(read_until(&mut s, b'Z').0, vec!["22021".to_string()]);
    s.write_all(&message(b'Q', b"SELECT count(*) FROM notes\0")).unwrap();
    let (states, ended) = read_until(&mut s, b'Z');
    assert!(states.is_empty() && !ended, "{states:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_in_a_request_answers_xx000_and_leaves_no_lock() {
    let mut cluster = TestCluster::start_with_failpoints(3, Some("coordinator.after_modify_read=panic*1"), None);
    let mut c = cluster.client().await;
    seed_accounts(&mut c, 3).await;
    exec(&mut c, "BEGIN").await;
    let err = fail(&mut c, "UPDATE accounts SET balance = balance + 1 WHERE id = 1").await;
    assert_eq!(err.sqlstate.as_deref(), Some("XX000"), "{err}");
    assert!(err.message.contains("injected panic"), "{err}");
    // The row is not locked: another session updates it at once.
    let mut other = cluster.client().await;
    let started = std::time::Instant::now();
    exec(&mut other, "UPDATE accounts SET balance = balance + 5 WHERE id = 1").await;
    assert!(started.elapsed() < Duration::from_secs(5), "the update waited {:?} for a leaked lock", started.elapsed());
    // The first session goes on.
    exec(&mut c, "ROLLBACK").await;
    assert_eq!(scalar(&mut c, "SELECT balance FROM accounts WHERE id = 1").await, "15");
    wait_quiet(&mut c, Duration::from_secs(30)).await;
    assert!(cluster.coordinator.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_unauthenticated_connections_locks_out_neither_clients_nor_operators() {
    let limits = "[limits]\nmax_sessions = 30\nreserved_sessions = 2\nmax_authenticating = 8\nauth_timeout_ms = 60000\n\n\
                  [[auth.users]]\nname = \"ops\"\npassword = \"ops-password\"\noperator = true\n";
    let cluster = TestCluster::start_configured(3, None, None, Some(limits));
    let address = cluster.pg_address();
    let conninfo = cluster.pg_conninfo();
    // 200 connections that send a startup packet and then never answer the
    // SCRAM challenge.
    let mut parked = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(&address).unwrap();
        let mut body = 196608i32.to_be_bytes().to_vec();
        for part in ["user", PG_USER, ""] {
            body.extend_from_slice(part.as_bytes());
            body.push(0);
        }
        let mut startup = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        startup.extend(body);
        s.write_all(&startup).unwrap();
        parked.push(s);
    }
    let connect = |conninfo: String| async move {
        let (client, connection) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok::<_, tokio_postgres::Error>(client)
    };
    // A client gets in, and more until only the reserved places are left.
    let mut clients = Vec::new();
    let refusal = loop {
        match connect(conninfo.clone()).await {
            Ok(client) => clients.push(client),
            Err(e) => break e,
        }
        assert!(clients.len() <= 30, "max_sessions is not enforced");
    };
    assert!(clients.len() >= 20, "only {} clients got in past the flood", clients.len());
    assert_eq!(refusal.code(), Some(&tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS), "{refusal}");
    // An operator still gets in.
    let ops = conninfo.replace(&format!("user={PG_USER} password={PG_PASSWORD}"), "user=ops password=ops-password");
    let operator = connect(ops).await.expect("an operator gets a reserved place");
    let row = operator.query_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    drop(parked);
}

#[test]
fn demo_removes_its_data_on_sigterm() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut demo = Command::new(BIN).args(["demo", "--shards", "1"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = demo.stdout.take().unwrap();
    let mut data = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("data: ") {
            data = Some(std::path::PathBuf::from(rest.split(" (").next().unwrap()));
            break;
        }
    }
    let data = data.expect("the demo names its data directory");
    assert!(data.exists());
    // Allocated blocks, not lengths: preallocated WAL space counts.
    let size: u64 = walk(&data).iter().map(|p| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512).unwrap_or(0)).sum();
    assert!(size < 40 << 20, "a one-group demo takes {size} bytes on disk");
    // Keep stdin open while waiting (`wait` would close it, and the shell
    // would end on that end of input instead of on the signal).
    let _stdin = demo.stdin.take();
    Command::new("kill").args(["-TERM", &demo.id().to_string()]).status().unwrap();
    let status = demo.wait().unwrap();
    assert!(!status.success());
    assert!(!data.exists(), "{} is left behind", data.display());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn a_primary_whose_clock_runs_ahead_is_reported_and_failed_over() {
    let spec = Spec {
        groups: 1,
        replicas: 1,
        coordinator_toml: Some(FAST_FAILOVER),
        // The first primary's clock runs 1.5 s ahead: every lease it is
        // granted has ended on its clock before it arrives.
        shard_var: Some((1, 0, "TESSERA_CLOCK_OFFSET_MS", "1500")),
        ..Spec::default()
    };
    let cluster = TestCluster::start_spec(spec);
    let skewed = cluster.shards[0].address.clone();
    let mut c = cluster.client().await;
    let started = std::time::Instant::now();
    // The group fails over to the replica, whose clock is right, and takes writes.
    loop {
        match run_sql(&mut c, "CREATE TABLE IF NOT EXISTS k (id BIGINT PRIMARY KEY, v BIGINT); INSERT INTO k VALUES (1, 1)").await {
            Ok(_) => break,
            // An earlier attempt went through after all.
            Err(e) if e.sqlstate.as_deref() == Some("23505") => break,
            Err(e) => assert!(started.elapsed() < Duration::from_secs(60), "no write went through: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let shards = rows(&mut c, "SHOW SHARDS").await;
    let row = shards.iter().find(|r| r[1] == skewed).expect("the skewed node is listed");
    assert_eq!(row[2], "replica", "{shards:?}");
    let skew: i64 = row[9].parse().unwrap_or_else(|_| panic!("clock_skew_ms of {skewed}: {:?}", row[9]));
    assert!((1000..2500).contains(&skew), "measured skew {skew} ms");
    cluster.coordinator.wait_for_log("clock is off by more than max_clock_skew", Duration::from_secs(10));
    assert_eq!(scalar(&mut c, "SELECT v FROM k WHERE id = 1").await, "1");
}

/// A tmpfs of `mb` MiB mounted on a temporary directory, unmounted on drop.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(mb: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"]).arg(dir.path()).status();
        assert!(status.is_ok_and(|s| s.success()), "this test mounts a tmpfs: it needs root (CAP_SYS_ADMIN)");
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").args(["-l"]).arg(self.0.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_answers_53100_recovers_without_a_restart_and_loses_no_acknowledged_row() {
    let disk = SmallDisk::mount(48);
    let data = disk.0.path().join("cluster");
    let filler = disk.0.path().join("filler");
    let spec = Spec { groups: 1, dir: Some(data), ..Spec::default() };
    let mut cluster = TestCluster::start_spec(spec);
    let mut c = cluster.client().await;
    exec(&mut c, "CREATE TABLE blobs (id BIGINT PRIMARY KEY, body TEXT)").await;
    // Leave a few MB free, then write until the disk is full.
    let free = fs_free(disk.0.path());
    std::fs::write(&filler, vec![0u8; free.saturating_sub(6 << 20) as usize]).unwrap();
    let body = "x".repeat(256 * 1024);
    let mut acknowledged = 0;
    let mut refused = None;
    for id in 0..200 {
        match run_sql(&mut c, &format!("INSERT INTO blobs VALUES ({id}, '{body}')")).await {
            Ok(_) => acknowledged += 1,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("the disk filled up");
    assert_eq!(e.sqlstate.as_deref(), Some("53100"), "{e}");
    assert!(e.message.contains("disk is full") && !e.message.contains("storage error: storage error"), "{e}");
    assert!(cluster.shards[0].is_running() && cluster.coordinator.is_running());
    // Reads still work while the disk is full.
    assert_eq!(scalar(&mut c, "SELECT count(*) FROM blobs").await, acknowledged.to_string());
    // Space comes back: the node reopens its database by itself (RocksDB
    // stays read-only after a failed WAL write) and takes writes again,
    // without a restart, with every acknowledged row there.
    let pid = cluster.shards[0].pid();
    std::fs::remove_file(&filler).unwrap();
    let started = std::time::Instant::now();
    loop {
        match run_sql(&mut c, "INSERT INTO blobs VALUES (1000, 'after')").await {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(e.sqlstate.as_deref(), Some("53100"), "{e}");
                assert!(started.elapsed() < Duration::from_secs(60), "writes did not resume: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.shards[0].wait_for_log("storage recovered", Duration::from_secs(5));
    assert!(cluster.shards[0].is_running());
    assert_eq!(cluster.shards[0].pid(), pid, "the node was not restarted");
    assert_eq!(scalar(&mut c, "SELECT count(*) FROM blobs").await, (acknowledged + 1).to_string());
    drop(cluster);
    drop(disk);
}

fn fs_free(path: &std::path::Path) -> u64 {
    let out = std::process::Command::new("df").args(["--output=avail", "-B1"]).arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or(0)
}
