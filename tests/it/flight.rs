//! Flight SQL with arrow-flight's `FlightSqlServiceClient` over TLS: statements, prepared
//! statements, metadata, authentication, read-only enforcement and per-query limits.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, RecordBatch, StringArray};
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables};
use arrow_flight::{FlightInfo, Ticket};
use futures::{StreamExt, TryStreamExt};
use logwarden::serve::flight::client::{self, ClientError};
use tokio::io::AsyncWriteExt;
use tonic::transport::Channel;

use crate::client::{connect_tls, octet, post};
use crate::daemon::{Daemon, wait_until};

const T: Duration = Duration::from_secs(30);

async fn connect(d: &Daemon, token: Option<&str>) -> FlightSqlServiceClient<Channel> {
    let token = match token {
        Some(t) => t.to_owned(),
        None => std::fs::read_to_string(d.data_dir().join("flight.token")).unwrap().trim().to_owned(),
    };
    let url = format!("https://localhost:{}", d.addr("flight").port());
    client::connect(&url, Some(&d.ca_file()), Some(&token)).await.unwrap()
}

async fn fetch(
    c: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> Result<Vec<RecordBatch>, ClientError> {
    let mut out = Vec::new();
    for ep in info.endpoint {
        let stream = c.do_get(ep.ticket.unwrap()).await?;
        out.extend(stream.try_collect::<Vec<_>>().await?);
    }
    Ok(out)
}

fn strings(batches: &[RecordBatch], col: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b.column_by_name(col).unwrap_or_else(|| panic!("no column {col}"));
            let a = arrow::compute::cast(a, &arrow::datatypes::DataType::Utf8).unwrap();
            let a = a.as_any().downcast_ref::<StringArray>().unwrap().clone();
            (0..a.len()).map(move |i| a.value(i).to_owned()).collect::<Vec<_>>()
        })
        .collect()
}

fn json_lines(batches: &[RecordBatch]) -> Vec<serde_json::Value> {
    let mut buf = Vec::new();
    let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
    for b in batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
    String::from_utf8(buf).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

async fn ingest_sample(d: &Daemon) {
    let body = "{\"message\":\"login ok\",\"service\":\"api\",\"level\":\"info\",\"host\":\"a\"}\n\
                {\"message\":\"login failed\",\"service\":\"api\",\"level\":\"warn\",\"host\":\"b\"}\n\
                {\"message\":\"disk full\",\"service\":\"kernel\",\"level\":\"crit\",\"host\":\"b\"}\n";
    let r = post(d.addr("http"), d.ca_file(), "/v1/logs", vec![], body.as_bytes().to_vec()).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn statements_prepared_statements_and_metadata() {
    let d = Daemon::start();
    ingest_sample(&d).await;
    let mut c = connect(&d, None).await;

    // A statement gives the same rows as `logwarden query` on the same data.
    let sql = "SELECT app, host, severity, message FROM logs ORDER BY message";
    let info = c.execute(sql.into(), None).await.unwrap();
    let via_flight = fetch(&mut c, info).await.unwrap();
    assert_eq!(json_lines(&via_flight), d.query(sql));
    assert_eq!(strings(&via_flight, "message"), ["disk full", "login failed", "login ok"]);

    // Events sent over TLS a moment ago are visible.
    let mut s = connect_tls(d.addr("syslog"), &d.ca_file()).await;
    s.write_all(&octet("<11>1 - web-1 nginx - - - just arrived")).await.unwrap();
    s.flush().await.unwrap();
    // Queries see an event once its WAL write is fsynced; a reader of the WAL file (as
    // `logwarden query` is) may see it a moment earlier, so wait on Flight SQL itself.
    let start = std::time::Instant::now();
    loop {
        let info =
            c.execute("SELECT host FROM logs WHERE message = 'just arrived'".into(), None).await.unwrap();
        if strings(&fetch(&mut c, info).await.unwrap(), "host") == ["web-1"] {
            break;
        }
        assert!(start.elapsed() < T, "timed out waiting for the new event over Flight SQL");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A prepared statement with a bound parameter.
    let mut stmt =
        c.prepare("SELECT message FROM logs WHERE app = ? ORDER BY message".into(), None).await.unwrap();
    let param = RecordBatch::try_from_iter([("0", Arc::new(StringArray::from(vec!["api"])) as _)]).unwrap();
    stmt.set_parameters(param).unwrap();
    let info = stmt.execute().await.unwrap();
    assert_eq!(strings(&fetch(&mut c, info).await.unwrap(), "message"), ["login failed", "login ok"]);
    stmt.close().await.unwrap();

    // Catalogs, schemas, tables (with their schemas).
    let info = c.get_catalogs().await.unwrap();
    assert_eq!(strings(&fetch(&mut c, info).await.unwrap(), "catalog_name"), ["logwarden"]);
    let info = c
        .get_db_schemas(CommandGetDbSchemas {
            catalog: Some("logwarden".into()),
            db_schema_filter_pattern: None,
        })
        .await
        .unwrap();
    let schemas = strings(&fetch(&mut c, info).await.unwrap(), "db_schema_name");
    assert!(schemas.contains(&"public".to_owned()), "{schemas:?}");
    let info = c
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: Some("public".into()),
            table_name_filter_pattern: Some("log%".into()),
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let tables = fetch(&mut c, info).await.unwrap();
    assert_eq!(strings(&tables, "table_name"), ["logs"]);
    assert_eq!(strings(&tables, "table_type"), ["TABLE"]);
    let ipc = tables[0].column_by_name("table_schema").unwrap();
    let ipc = ipc.as_any().downcast_ref::<arrow::array::BinaryArray>().unwrap().value(0).to_vec();
    let schema = arrow::datatypes::Schema::try_from(arrow_flight::IpcMessage(ipc.into())).unwrap();
    assert!(schema.field_with_name("message").is_ok() && schema.field_with_name("timestamp").is_ok());

    // The schema announced in FlightInfo matches the batches sent.
    let info = c.execute("SELECT host, app, timestamp FROM logs".into(), None).await.unwrap();
    let announced = info.clone().try_decode_schema().unwrap();
    let batches = fetch(&mut c, info).await.unwrap();
    assert_eq!(batches[0].schema().as_ref(), &announced);

    wait_until(T, "query metrics", || d.metric(r#"logwarden_flight_queries_total{status="ok"}"#) >= 4.0);
    assert!(d.metric("logwarden_flight_rows_sent_total") >= 7.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_bad_tokens_and_writes() {
    let d = Daemon::start();
    let mut bad = connect(&d, Some("not-the-token")).await;
    let err = ClientError::from(bad.execute("SELECT 1".into(), None).await.unwrap_err()).to_string();
    assert!(err.contains("Unauthenticated"), "{err}");

    let mut c = connect(&d, None).await;
    for sql in
        ["DROP TABLE logs", "INSERT INTO logs SELECT * FROM logs", "CREATE TABLE t AS SELECT 1", "SET x = 1"]
    {
        let err = ClientError::from(c.execute(sql.into(), None).await.unwrap_err()).to_string();
        assert!(err.contains("PermissionDenied") && err.contains("read-only"), "{sql}: {err}");
    }
    let err = ClientError::from(c.execute("SELEC nonsense".into(), None).await.unwrap_err()).to_string();
    assert!(err.contains("InvalidArgument"), "{err}");
    assert!(d.metric(r#"logwarden_flight_queries_total{status="unauthenticated"}"#) >= 1.0);
    assert!(d.metric(r#"logwarden_flight_queries_total{status="denied"}"#) >= 4.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_and_row_limits_fail_the_query_with_the_limit_named() {
    let d = Daemon::start_with("[flight.limits]\nmemory = \"1MiB\"\nmax_result_rows = 1000\n");
    let mut c = connect(&d, None).await;

    // Over the memory limit: an aggregate that has to hold ten million values.
    let info =
        c.execute("SELECT array_agg(value) FROM generate_series(1, 10000000)".into(), None).await.unwrap();
    let err = fetch(&mut c, info).await.unwrap_err().to_string();
    assert!(err.contains("ResourceExhausted") && err.contains("flight.limits.memory"), "{err}");

    // Over the row limit.
    let info = c.execute("SELECT value FROM generate_series(1, 5000)".into(), None).await.unwrap();
    let err = fetch(&mut c, info).await.unwrap_err().to_string();
    assert!(err.contains("ResourceExhausted") && err.contains("max_result_rows"), "{err}");
    wait_until(T, "limit metrics", || {
        d.metric(r#"logwarden_flight_queries_total{status="resource_exhausted"}"#) >= 2.0
    });
    assert_eq!(d.metric("logwarden_flight_active_queries"), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_stream_frees_its_slot_and_a_slow_query_times_out() {
    let d = Daemon::start_with("[flight.limits]\nmax_concurrent = 1\ntimeout = \"3s\"\n");
    let mut c = connect(&d, None).await;

    // A client that reads one batch of an endless result and goes away frees its slot: with
    // max_concurrent = 1 the next query runs.
    let info = c
        .execute(
            "SELECT s.value FROM generate_series(1, 1000000000) s WHERE s.value < 0 OR s.value > 0".into(),
            None,
        )
        .await
        .unwrap();
    let ticket: Ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = c.do_get(ticket).await.unwrap();
    let first = stream.next().await;
    assert!(first.is_some());
    wait_until(T, "one running query", || d.metric("logwarden_flight_active_queries") == 1.0);
    drop(stream);
    wait_until(T, "the cancelled query to be freed", || d.metric("logwarden_flight_active_queries") == 0.0);
    assert!(d.metric(r#"logwarden_flight_queries_total{status="cancelled"}"#) >= 1.0);
    let info = c.execute("SELECT 1 AS one".into(), None).await.unwrap();
    assert_eq!(fetch(&mut c, info).await.unwrap()[0].num_rows(), 1);

    // Past flight.limits.timeout: DEADLINE_EXCEEDED with the limit named, slot freed.
    let info =
        c.execute("SELECT count(*) FROM generate_series(1, 1000000000000)".into(), None).await.unwrap();
    let err = fetch(&mut c, info).await.unwrap_err().to_string();
    assert!(err.contains("DeadlineExceeded") && err.contains("flight.limits.timeout"), "{err}");
    wait_until(T, "the timed-out query to be freed", || d.metric("logwarden_flight_active_queries") == 0.0);
    assert!(d.metric(r#"logwarden_flight_queries_total{status="timeout"}"#) >= 1.0);
}

/// The `[[flight.users]]` entry `logwarden auth hash-password` prints for `name`.
fn user_entry(name: &str, password: &str) -> String {
    let mut hash = std::process::Command::new(crate::daemon::BIN)
        .args(["auth", "hash-password", name])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        hash.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    }
    String::from_utf8(hash.wait_with_output().unwrap().stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_credentials_through_the_handshake_give_a_session_token() {
    let entry = user_entry("alice", "correct horse battery");
    // The build's scheme: PBKDF2 where argon2 is not approved.
    let scheme = if cfg!(feature = "fips") { "$pbkdf2-sha256$i=600000,l=32$" } else { "$argon2id$" };
    assert!(entry.contains("[[flight.users]]") && entry.contains(scheme), "{entry}");
    let d = Daemon::start_with(&entry);
    assert!(!d.data_dir().join("flight.token").exists(), "no token file when users are configured");
    let url = format!("https://localhost:{}", d.addr("flight").port());

    let mut c = client::connect(&url, Some(&d.ca_file()), None).await.unwrap();
    let err = c.handshake("alice", "wrong").await.unwrap_err();
    assert!(
        err.to_string().contains("Unauthenticated") || err.to_string().contains("authentication"),
        "{err}"
    );
    c.handshake("alice", "correct horse battery").await.unwrap();
    let info = c.execute("SELECT 1 AS one".into(), None).await.unwrap();
    assert_eq!(fetch(&mut c, info).await.unwrap()[0].num_rows(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn query_server_prints_what_query_prints() {
    let d = Daemon::start();
    ingest_sample(&d).await;
    let sql = "SELECT host, app, severity, message FROM logs ORDER BY message";
    let url = format!("https://localhost:{}", d.addr("flight").port());
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(crate::daemon::BIN)
            .args(["query", "--config"])
            .arg(&d.config)
            .args(extra)
            .args(["--format", "json", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    // The token and CA come from the data directory named by the config.
    let remote = run(&["--server", &url]);
    assert_eq!(remote, run(&[]));
    assert_eq!(remote.lines().count(), 3, "{remote}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_times_out_frees_its_slot_and_gets_deadline_exceeded() {
    let d = Daemon::start_with("[flight.limits]\nmax_concurrent = 1\ntimeout = \"2s\"\n");
    let mut c = connect(&d, None).await;

    // A result far larger than what HTTP/2 flow control lets the daemon send ahead; the client
    // reads one batch and then stops reading, keeping the stream open.
    let sql = "SELECT value, repeat('x', 200) AS pad FROM generate_series(1, 1000000000)";
    let info = c.execute(sql.into(), None).await.unwrap();
    let mut stream = c.do_get(info.endpoint[0].ticket.clone().unwrap()).await.unwrap();
    assert!(stream.next().await.unwrap().is_ok());

    // The time limit counts while the daemon waits for the client: the query stops, its slot
    // is freed (with max_concurrent = 1 another query runs) and it is audited as a timeout.
    wait_until(T, "the stalled query to be freed", || d.metric("logwarden_flight_active_queries") == 0.0);
    assert!(d.metric(r#"logwarden_flight_queries_total{status="timeout"}"#) >= 1.0);
    let mut other = connect(&d, None).await;
    let info = other.execute("SELECT 1 AS one".into(), None).await.unwrap();
    assert_eq!(fetch(&mut other, info).await.unwrap()[0].num_rows(), 1);
    wait_until(T, "the timeout in the audit trail", || {
        let q =
            "SELECT reason FROM audit WHERE kind = 'query' AND outcome = 'timeout' AND sql LIKE '%repeat%'";
        d.query(q).iter().any(|r| r["reason"].as_str().unwrap_or("").contains("flight.limits.timeout"))
    });

    // Reading again: whatever was already on its way, then DEADLINE_EXCEEDED, never an end
    // that looks like a complete result.
    let end = loop {
        match tokio::time::timeout(T, stream.next()).await.expect("the stalled stream never ended") {
            Some(Ok(_)) => continue,
            Some(Err(e)) => break Err(ClientError::from(e).to_string()),
            None => break Ok(()),
        }
    };
    let err = end.expect_err("the stalled query ended as if its result were complete");
    assert!(err.contains("DeadlineExceeded") && err.contains("flight.limits.timeout"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_sign_ins_are_audited_and_limited_per_peer() {
    let d = Daemon::start_with(&format!(
        "{}[[flight.tokens]]\nname = \"grafana\"\nsha256 = \"{}\"\n",
        user_entry("alice", "correct horse battery"),
        logwarden::serve::flight::auth::sha256_hex("grafana-token")
    ));
    let url = format!("https://localhost:{}", d.addr("flight").port());
    let ca = d.ca_file();

    // Ten failures from this address (the default flight.auth_limits.max_failures): wrong
    // passwords, a user that does not exist, a bearer token that is not configured.
    for _ in 0..8 {
        let mut c = client::connect(&url, Some(&ca), None).await.unwrap();
        let err = c.handshake("alice", "Tr0ub4dor&3").await.unwrap_err().to_string();
        assert!(err.contains("invalid user name or password"), "{err}");
    }
    let mut c = client::connect(&url, Some(&ca), None).await.unwrap();
    let err = c.handshake("mallory", "Tr0ub4dor&3").await.unwrap_err().to_string();
    assert!(
        err.contains("invalid user name or password"),
        "unknown users must look like wrong passwords: {err}"
    );
    let mut c = client::connect(&url, Some(&ca), Some("not-a-token")).await.unwrap();
    let err = ClientError::from(c.execute("SELECT 1".into(), None).await.unwrap_err()).to_string();
    assert!(err.contains("Unauthenticated"), "{err}");

    // Now this address is refused without a check, even with the right password, and says why.
    let mut c = client::connect(&url, Some(&ca), None).await.unwrap();
    let err = c.handshake("alice", "correct horse battery").await.unwrap_err().to_string();
    assert!(err.contains("too many failed") && err.contains("max_failures"), "{err}");
    // A valid token still works: it costs nothing to check and cannot be guessed.
    let mut ok = client::connect(&url, Some(&ca), Some("grafana-token")).await.unwrap();
    let info = ok.execute("SELECT 1 AS one".into(), None).await.unwrap();
    assert_eq!(fetch(&mut ok, info).await.unwrap()[0].num_rows(), 1);
    wait_until(T, "the failures in the metrics", || {
        // The unknown user counts as a wrong password: /metrics does not tell which names exist.
        d.metric(r#"logwarden_flight_auth_failures_total{reason="wrong_password"}"#) == 9.0
            && d.metric(r#"logwarden_flight_auth_failures_total{reason="bad_token"}"#) == 1.0
            && d.metric(r#"logwarden_flight_auth_failures_total{reason="rate_limited"}"#) == 1.0
    });
    assert!(!d.metrics().contains("unknown_user"), "a reason of its own tells which names exist");

    // Each failure is in the audit table: kind, peer, the user name tried (as a rule names a
    // basic-auth user: `user:NAME`), the reason.
    let sql = "SELECT principal, auth, outcome, reason, peer FROM audit WHERE kind = 'authentication' ORDER BY time";
    wait_until(T, "11 authentication entries", || d.query(sql).len() == 11);
    let rows = d.query(sql);
    for r in &rows[..8] {
        assert_eq!((r["principal"].as_str(), r["auth"].as_str()), (Some("user:alice"), Some("basic")), "{r}");
        assert_eq!(r["reason"], "wrong password", "{r}");
    }
    assert_eq!(
        (rows[8]["principal"].as_str(), rows[8]["reason"].as_str()),
        (Some("user:mallory"), Some("unknown user"))
    );
    assert_eq!(rows[9]["auth"], "token");
    assert!(rows[9]["reason"].as_str().unwrap().contains("bearer token"), "{}", rows[9]);
    assert_eq!(rows[10]["principal"], "user:alice");
    assert!(rows[10]["reason"].as_str().unwrap().contains("too many failed"), "{}", rows[10]);
    assert!(
        rows.iter()
            .all(|r| r["outcome"] == "refused" && r["peer"].as_str().unwrap().starts_with("127.0.0.1:")),
        "{rows:?}"
    );
}

/// An address of this machine that is not loopback (where the test can listen), if any.
fn non_loopback_address() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn query_server_sends_the_token_only_over_tls_or_to_loopback() {
    use std::io::Read;
    let Some(ip) = non_loopback_address() else {
        eprintln!("skipped: this machine has no non-loopback address to listen on");
        return;
    };
    // Something listening on plain TCP off loopback: it must never see a connection.
    let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    for server in [url.clone(), url.replace("http://", "grpc://")] {
        let mut child = std::process::Command::new(crate::daemon::BIN)
            .args(["query", "--token", "s3cret-token", "--server", &server, "SELECT 1"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > T {
                child.kill().unwrap();
                panic!("logwarden query --server {server} did not give up: it went on talking to the server");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        assert!(!status.success(), "{server}: {stderr}");
        assert!(stderr.contains(&server) && stderr.contains("https://"), "{server}: {stderr}");
    }
    match listener.accept() {
        Ok((mut s, peer)) => {
            let mut got = Vec::new();
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = s.read_to_end(&mut got);
            panic!("the client connected from {peer} and sent {:?}", String::from_utf8_lossy(&got));
        }
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
    }
}

/// Parameters for a prepared statement whose batch message places a buffer outside its body
/// are refused as an invalid argument (arrow-ipc would panic slicing it), and the server goes
/// on serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_parameter_batch_with_a_buffer_outside_its_body_is_refused() {
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::ipc::convert::IpcSchemaEncoder;
    use arrow::ipc::{Buffer, FieldNode, MessageBuilder, MessageHeader, MetadataVersion, RecordBatchBuilder};
    use arrow_flight::sql::{CommandPreparedStatementQuery, ProstMessageExt};
    use arrow_flight::{FlightData, FlightDescriptor};
    use logwarden::serve::flight::handle::Statement;
    use prost::Message;

    let d = Daemon::start();
    let mut c = connect(&d, None).await;
    let schema = Schema::new(vec![Field::new("0", DataType::Int64, true)]);
    let mut data = arrow_flight::utils::batches_to_flight_data(&schema, vec![]).unwrap();
    let cmd =
        CommandPreparedStatementQuery { prepared_statement_handle: Statement::new("SELECT $1").encode() };
    data[0].flight_descriptor = Some(FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec()));
    // One row of Int64 whose values are said to be 1 TiB into an 8-byte body.
    let mut fbb = Default::default();
    let _ = IpcSchemaEncoder::new().schema_to_fb_offset(&mut fbb, &Schema::empty()); // names fbb's type
    let nodes = fbb.create_vector(&[FieldNode::new(1, 0)]);
    let buffers = fbb.create_vector(&[Buffer::new(0, 0), Buffer::new(1 << 40, 8)]);
    let mut batch = RecordBatchBuilder::new(&mut fbb);
    batch.add_length(1);
    batch.add_nodes(nodes);
    batch.add_buffers(buffers);
    let batch = batch.finish();
    let mut message = MessageBuilder::new(&mut fbb);
    message.add_version(MetadataVersion::V5);
    message.add_header_type(MessageHeader::RecordBatch);
    message.add_header(batch.as_union_value());
    message.add_bodyLength(8);
    let message = message.finish();
    fbb.finish(message, None);
    data.push(FlightData {
        data_header: fbb.finished_data().to_vec().into(),
        data_body: vec![0u8; 8].into(),
        ..Default::default()
    });

    let err = match c.do_put(futures::stream::iter(data)).await {
        Err(e) => e.to_string(),
        Ok(mut results) => match results.next().await {
            Some(Err(e)) => e.to_string(),
            other => panic!("a batch with a buffer outside its body was accepted: {other:?}"),
        },
    };
    assert!(err.contains("invalid argument") && err.contains("outside a body"), "{err}");
    let info = c.execute("SELECT 1 AS one".into(), None).await.unwrap();
    assert_eq!(strings(&fetch(&mut c, info).await.unwrap(), "one"), ["1"]);
}

/// Parameters for a prepared statement whose column declares nulls with a validity bitmap
/// shorter than its rows (the schema and batch of a handle the `handle` fuzz target found, sent
/// as Flight data) are refused as an invalid argument: arrow-buffer would panic building the
/// array. The check knows which buffer is the bitmap from the schema message sent before.
#[tokio::test(flavor = "multi_thread")]
async fn a_parameter_batch_with_a_short_validity_bitmap_is_refused() {
    use arrow_flight::sql::{CommandPreparedStatementQuery, ProstMessageExt};
    use arrow_flight::{FlightData, FlightDescriptor};
    use logwarden::serve::flight::handle::Statement;
    use prost::Message;

    // The handle's IPC stream (after `LWQ1`, the SQL length and the SQL), message by message.
    let handle = include_bytes!("../../fuzz/seeds/handle/found-short-validity-bitmap");
    let sql_len = u32::from_le_bytes(handle[4..8].try_into().unwrap()) as usize;
    let mut ipc = &handle[8 + sql_len..];
    let mut data = Vec::new();
    while ipc.len() >= 8 && ipc[..4] == [0xff; 4] {
        let len = u32::from_le_bytes(ipc[4..8].try_into().unwrap()) as usize;
        let meta = &ipc[8..8 + len];
        let body_len = arrow::ipc::root_as_message(meta).unwrap().bodyLength() as usize;
        let body = &ipc[8 + len..8 + len + body_len];
        data.push(FlightData {
            data_header: meta.to_vec().into(),
            data_body: body.to_vec().into(),
            ..Default::default()
        });
        ipc = &ipc[8 + len + body_len..];
    }
    assert_eq!(data.len(), 2, "a schema and a record batch");
    let cmd =
        CommandPreparedStatementQuery { prepared_statement_handle: Statement::new("SELECT $1").encode() };
    data[0].flight_descriptor = Some(FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec()));

    let d = Daemon::start();
    let mut c = connect(&d, None).await;
    let err = match c.do_put(futures::stream::iter(data)).await {
        Err(e) => e.to_string(),
        Ok(mut results) => match results.next().await {
            Some(Err(e)) => e.to_string(),
            other => panic!("a batch with a short validity bitmap was accepted: {other:?}"),
        },
    };
    assert!(err.contains("invalid argument") && err.contains("validity bitmap"), "{err}");
    let info = c.execute("SELECT 1 AS one".into(), None).await.unwrap();
    assert_eq!(strings(&fetch(&mut c, info).await.unwrap(), "one"), ["1"]);
}
