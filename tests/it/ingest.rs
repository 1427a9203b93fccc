//! Messages of every format arrive over TLS and HTTPS and are queryable with their fields.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::client::{connect_tls, octet, post};
use crate::daemon::{Daemon, wait_until};

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn syslog_and_json_over_tls_are_decoded_into_columns() {
    let d = Daemon::start();
    let mut s = connect_tls(d.addr("syslog"), &d.ca_file()).await;
    let rfc5424 = r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] An application event log entry"#;
    s.write_all(&octet(rfc5424)).await.unwrap();
    s.write_all(b"<34>1 2003-10-11T22:14:15.003-07:00 lf-host su 123 - - lf framed 5424\n").await.unwrap();
    s.write_all(b"<13>Oct 11 22:14:15 bsd-host sshd[4242]: Failed password for root\n").await.unwrap();
    s.write_all(b"{\"@timestamp\":\"2024-05-01T10:00:00Z\",\"level\":\"error\",\"message\":\"json line\",\"host\":\"vec-1\",\"service\":\"api\",\"trace_id\":\"abc\"}\n").await.unwrap();
    s.flush().await.unwrap();
    s.shutdown().await.unwrap();

    wait_until(T, "4 events", || d.count("") == 4);
    let rows = d.query("SELECT * FROM logs ORDER BY message");
    let by_msg = |m: &str| {
        rows.iter().find(|r| r["message"] == m).unwrap_or_else(|| panic!("no row {m}: {rows:?}")).clone()
    };

    let r = by_msg("An application event log entry");
    assert_eq!(r["host"], "mymachine.example.com");
    assert_eq!(r["app"], "evntslog");
    assert_eq!(r["msgid"], "ID47");
    assert_eq!(r["severity"], 5);
    assert_eq!(r["facility"], 20);
    assert_eq!(r["listener"], "syslog");
    assert!(r["timestamp"].as_str().unwrap().starts_with("2003-10-11T22:14:15.003"), "{r}");
    let sd: serde_json::Value = serde_json::from_str(r["structured_data"].as_str().unwrap()).unwrap();
    assert_eq!(sd["exampleSDID@32473"]["eventID"], "1011");
    assert!(r["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(r.get("decode_error").is_none() || r["decode_error"].is_null(), "{r}");

    let r = by_msg("lf framed 5424");
    assert_eq!(r["procid"], "123");
    assert!(r["timestamp"].as_str().unwrap().starts_with("2003-10-12T05:14:15.003"), "offset applied: {r}");

    let r = by_msg("Failed password for root");
    assert_eq!(r["host"], "bsd-host");
    assert_eq!(r["app"], "sshd");
    assert_eq!(r["procid"], "4242");
    assert_eq!(r["severity"], 5);
    assert_eq!(r["facility"], 1);

    let r = by_msg("json line");
    assert_eq!(r["severity"], 3);
    assert_eq!(r["host"], "vec-1");
    assert_eq!(r["app"], "api");
    assert!(r["timestamp"].as_str().unwrap().starts_with("2024-05-01T10:00:00"));
    let fields: serde_json::Value = serde_json::from_str(r["fields"].as_str().unwrap()).unwrap();
    assert_eq!(fields["trace_id"], "abc");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_that_vanishes_without_close_notify_loses_no_complete_frame() {
    let d = Daemon::start();
    let mut s = connect_tls(d.addr("syslog"), &d.ca_file()).await;
    let mut batch = Vec::new();
    for i in 0..500 {
        batch.extend(octet(&format!("<14>1 - host app - - - abrupt {i}")));
    }
    s.write_all(&batch).await.unwrap();
    s.flush().await.unwrap();
    // Drop the TCP connection under TLS: no close_notify is sent.
    let (tcp, _) = s.into_inner();
    drop(tcp);
    wait_until(T, "500 events", || d.count("message LIKE 'abrupt %'") == 500);
}

/// A syslog client never reads from its connection. Whatever the server sends it unasked (TLS
/// 1.3 session tickets after the handshake) stays unread, so the client's close() answers with
/// a reset, and the reset makes the server's kernel discard everything logwarden has not read
/// yet. The client here does what shippers do: handshake, send, close() without close_notify
/// and without a single read.
#[test]
fn a_client_that_sends_and_closes_without_reading_loses_no_frame() {
    use std::io::Write as _;
    const FRAMES: usize = 100_000;
    let d = Daemon::start();
    let mut data = Vec::new();
    for i in 0..FRAMES {
        data.extend(octet(&format!("<14>1 - host app - - - unread close {i}")));
    }
    let mut sock = std::net::TcpStream::connect(d.addr("syslog")).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = rustls::ClientConnection::new(crate::client::tls_config(&d.ca_file(), &[]), name).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut sock).unwrap();
    }
    // Write only: encrypt a piece, push it to the socket, never read.
    for piece in data.chunks(16 * 1024) {
        let mut at = 0;
        while at < piece.len() {
            at += tls.writer().write(&piece[at..]).unwrap();
            while tls.wants_write() {
                tls.write_tls(&mut sock).unwrap();
            }
        }
    }
    sock.flush().unwrap();
    drop(tls);
    drop(sock);

    wait_until(T, "the connection to end", || {
        d.metric("logwarden_connections_active{listener=\"syslog\"}") == 0.0
    });
    // Everything read is stored within moments; wait for it, and say how much arrived if not.
    let start = std::time::Instant::now();
    loop {
        let stored = d.count("message LIKE 'unread close %'");
        if stored == FRAMES as i64 {
            break;
        }
        assert!(start.elapsed() < T, "{stored} of {FRAMES} complete frames stored");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http_ingest_acknowledges_durable_events_and_refuses_bad_bodies() {
    let d = Daemon::start();
    let addr = d.addr("http");
    let ca = || d.ca_file();
    let body = (0..100)
        .map(|i| format!("{{\"msg\":\"http event {i}\",\"level\":\"warn\",\"ts\":1700000000123}}\n"))
        .collect::<String>();
    let r =
        post(addr, ca(), "/v1/logs", vec![("content-type", "application/x-ndjson")], body.into_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"accepted\":100"), "{}", r.body);
    // Acknowledged means durable and visible: no waiting needed.
    assert_eq!(d.count("message LIKE 'http event %'"), 100);
    let row = &d.query("SELECT timestamp, severity FROM logs WHERE message = 'http event 7'")[0];
    assert!(row["timestamp"].as_str().unwrap().starts_with("2023-11-14T22:13:20.123"), "{row}");
    assert_eq!(row["severity"], 4);

    // gzip
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, b"{\"message\":\"zipped\"}\n{\"message\":\"zipped\"}\n").unwrap();
    let r = post(addr, ca(), "/v1/logs", vec![("content-encoding", "gzip")], gz.finish().unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(d.count("message = 'zipped'"), 2);

    // A bad line refuses the whole body and names the line.
    let r = post(addr, ca(), "/v1/logs", vec![], b"{\"message\":\"fine\"}\nnot json\n".to_vec()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("line 2"), "{}", r.body);
    assert_eq!(d.count("message = 'fine'"), 0);

    // Over max_body_bytes (1 MiB in the test config), declared or streamed.
    let big = vec![b'x'; 2 << 20];
    let r = post(addr, ca(), "/v1/logs", vec![], big).await;
    assert_eq!(r.status, 413, "{}", r.body);

    let r = post(addr, ca(), "/elsewhere", vec![], b"{}".to_vec()).await;
    assert_eq!(r.status, 404);
}

/// `cat a.gz b.gz` and streaming compressors send several gzip members in one body; every one
/// is read, and the decompressed limit (1 MiB here) counts them all.
#[tokio::test(flavor = "multi_thread")]
async fn http_ingest_reads_every_gzip_member_within_the_size_limit() {
    let d = Daemon::start();
    let addr = d.addr("http");
    let member = |text: &str| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, text.as_bytes()).unwrap();
        gz.finish().unwrap()
    };
    let gzip = vec![("content-encoding", "gzip")];

    let mut body = member("{\"message\":\"member 1\"}\n");
    body.extend(member("{\"message\":\"member 2\"}\n{\"message\":\"member 2\"}\n"));
    body.extend(member("{\"message\":\"member 3\"}\n"));
    let r = post(addr, d.ca_file(), "/v1/logs", gzip.clone(), body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"accepted\":4"), "{}", r.body);
    assert_eq!(d.count("message LIKE 'member %'"), 4);

    // Three members of 400 KiB each: every one under max_body_bytes, together over it.
    let lines: String =
        (0..4000).map(|i| format!("{{\"message\":\"bomb {i:05} {}\"}}\n", "x".repeat(80))).collect();
    assert!(lines.len() > 400 << 10 && lines.len() < 1 << 20);
    let bomb: Vec<u8> = (0..3).flat_map(|_| member(&lines)).collect();
    assert!(bomb.len() < 100 << 10);
    let r = post(addr, d.ca_file(), "/v1/logs", gzip.clone(), bomb).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(d.count("message LIKE 'bomb %'"), 0);

    // Bytes after the last member that are not another member: the body is refused, not cut.
    let mut body = member("{\"message\":\"trailing\"}\n");
    body.extend_from_slice(b"not gzip");
    let r = post(addr, d.ca_file(), "/v1/logs", gzip, body).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(d.count("message = 'trailing'"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn http_ingest_answers_503_with_retry_after_while_storage_is_saturated() {
    // A budget of 1 MiB for data not yet durable, and a WAL thread held (as a hung disk would
    // hold it) while its file exists, which keeps the first body pending.
    let stall = tempfile::tempdir().unwrap();
    let gate = stall.path().join("stall");
    let d = Daemon::start_with_env(
        "max_pending_bytes = \"1MiB\"",
        &[("LOGWARDEN_TEST_STALL_WAL", gate.to_str().unwrap())],
    );
    std::fs::write(&gate, b"").unwrap();
    let addr = d.addr("http");
    let body = |tag: &str| {
        (0..7000)
            .map(|i| format!("{{\"message\":\"{tag} {i:05} {}\"}}\n", "x".repeat(110)))
            .collect::<String>()
    };
    let first = tokio::spawn(post(addr, d.ca_file(), "/v1/logs", vec![], body("first").into_bytes()));
    wait_until(T, "the first body to be pending", || d.metric("logwarden_pending_bytes") > 0.0);

    let r = post(addr, d.ca_file(), "/v1/logs", vec![], body("second").into_bytes()).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.headers.get("retry-after").map(|v| v.to_str().unwrap()), Some("1"));

    std::fs::remove_file(&gate).unwrap();
    let r = first.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    // Once the first is durable, the retry goes through; nothing of the refused body was kept.
    assert_eq!(d.count("message LIKE 'second %'"), 0);
    let r = post(addr, d.ca_file(), "/v1/logs", vec![], body("second").into_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(d.count(""), 14_000);
    assert_eq!(d.metric("logwarden_pending_bytes"), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_tcp_listener_works_on_loopback() {
    let d = Daemon::start();
    let mut s = tokio::net::TcpStream::connect(d.addr("plain")).await.unwrap();
    s.write_all(b"<13>Oct 11 22:14:15 h app: over plain tcp\n").await.unwrap();
    s.shutdown().await.unwrap();
    wait_until(T, "plain event", || d.count("message = 'over plain tcp' AND listener = 'plain'") == 1);
}

#[test]
fn sigterm_stops_the_daemon_cleanly_within_the_deadline() {
    let mut d = Daemon::start();
    let status = d.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");
    let log = d.log_text();
    assert!(log.contains("logwarden stopped"));
    // Nothing was left to wait for: no step ran into the deadline.
    assert!(!log.contains("before the shutdown deadline"), "{log}");
}
