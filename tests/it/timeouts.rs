//! Connections that do nothing must not hold the door: silent connections to HTTP ingest, the
//! admin endpoint and Flight SQL, as many as `max_connections`, are closed once their
//! `header_read_timeout` passes (or, if they never finish TLS, their `handshake_timeout`), and
//! then a real client gets in; a connection that made a request and went quiet is closed after
//! `idle_timeout`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::client::{post, tls_config};
use crate::daemon::{Daemon, http_get, wait_until, wait_until_async};

const T: Duration = Duration::from_secs(30);

/// Small limits and timeouts, so that the door is easy to hold and opens again quickly.
const CONFIG: &str = r#"
[[http]]
name = "door"
address = "127.0.0.1:0"
max_connections = 8
handshake_timeout = "1s"
header_read_timeout = "1s"
idle_timeout = "2s"
[admin]
address = "127.0.0.1:0"
max_connections = 4
header_read_timeout = "1s"
idle_timeout = "2s"
[flight]
address = "127.0.0.1:0"
max_connections = 4
handshake_timeout = "1s"
header_read_timeout = "1s"
idle_timeout = "2s"
"#;

/// A TLS connection that completes the handshake (offering `alpn`) and then says nothing.
async fn silent_tls(addr: SocketAddr, ca: &Path, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    TlsConnector::from(tls_config(ca, alpn))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake")
}

/// Whether the server closes the connection within `within` (whatever it sends before, such
/// as TLS session tickets or HTTP/2 settings, is read and ignored).
async fn closed_by_server(mut s: impl AsyncRead + Unpin, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

fn active(d: &Daemon, listener: &str) -> f64 {
    d.metric(&format!("logwarden_connections_active{{listener=\"{listener}\"}}"))
}

fn timed_out(d: &Daemon, listener: &str, reason: &str) -> f64 {
    d.metric(&format!("logwarden_connections_timed_out_total{{listener=\"{listener}\",reason=\"{reason}\"}}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_a_real_client_then_gets_in() {
    let d = Daemon::start_with(CONFIG);
    let ca = d.ca_file();

    // HTTP ingest: six connections finish TLS (HTTP/1.1 and HTTP/2 offered) and say nothing,
    // two never start TLS. Together they are max_connections.
    let door = d.addr("door");
    let mut tls = Vec::new();
    for alpn in [&b"http/1.1"[..], b"h2", b"http/1.1", b"h2", b"http/1.1", b"h2"] {
        tls.push(silent_tls(door, &ca, &[alpn]).await);
    }
    let mut raw = Vec::new();
    for _ in 0..2 {
        raw.push(TcpStream::connect(door).await.unwrap());
    }
    wait_until(T, "the door held by 8 silent connections", || active(&d, "door") == 8.0);
    // Held: the next connection is closed at once.
    let refused = TcpStream::connect(door).await.unwrap();
    assert!(closed_by_server(refused, T).await);
    assert!(d.metric("logwarden_connections_refused_total{listener=\"door\"}") >= 1.0);
    for s in tls {
        assert!(closed_by_server(s, T).await, "a silent TLS connection to HTTP ingest was not closed");
    }
    for s in raw {
        assert!(closed_by_server(s, T).await, "a connection that never started TLS was not closed");
    }
    let r = post(door, ca.clone(), "/v1/logs", vec![], b"{\"message\":\"got in\"}\n".to_vec()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(timed_out(&d, "door", "no_request") >= 6.0);

    // Flight SQL: three silent TLS connections and one that never starts TLS.
    let flight = d.addr("flight");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(silent_tls(flight, &ca, &[b"h2"]).await);
    }
    let never = TcpStream::connect(flight).await.unwrap();
    wait_until(T, "Flight SQL held by 4 silent connections", || active(&d, "flight") == 4.0);
    for s in held {
        assert!(closed_by_server(s, T).await, "a silent TLS connection to Flight SQL was not closed");
    }
    assert!(closed_by_server(never, T).await);
    let token = std::fs::read_to_string(d.data_dir().join("flight.token")).unwrap();
    let url = format!("https://localhost:{}", flight.port());
    let mut c = logwarden::serve::flight::client::connect(&url, Some(&ca), Some(token.trim())).await.unwrap();
    let rows = logwarden::serve::flight::client::query(&mut c, "SELECT 1 AS one").await.unwrap();
    assert_eq!(rows[0].num_rows(), 1);
    assert!(timed_out(&d, "flight", "no_request") >= 3.0);

    // The admin endpoint (plain HTTP, as Kubernetes probes it): four silent connections.
    let admin = d.addr("admin");
    let mut quiet = Vec::new();
    for _ in 0..4 {
        quiet.push(TcpStream::connect(admin).await.unwrap());
    }
    for s in quiet {
        assert!(closed_by_server(s, T).await, "a silent connection to the admin endpoint was not closed");
    }
    wait_until(T, "/healthz", || http_get(admin, "/healthz").0 == 200);
    assert!(timed_out(&d, "admin", "no_request") >= 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_goes_quiet_after_a_request_is_closed() {
    let d = Daemon::start_with(CONFIG);
    let ca = d.ca_file();

    // HTTP/2 to HTTP ingest: one request, then nothing; idle_timeout closes it.
    let tls = silent_tls(d.addr("door"), &ca, &[b"h2"]).await;
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .expect("HTTP/2 handshake");
    let conn = tokio::spawn(conn);
    let req = hyper::Request::post("https://localhost/v1/logs")
        .body(Full::new(Bytes::from_static(b"{\"message\":\"one request\"}\n")))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await;
    tokio::time::timeout(T, conn).await.expect("the idle HTTP/2 connection was not closed").unwrap().ok();
    wait_until(T, "the idle close counted", || timed_out(&d, "door", "idle") >= 1.0);

    // HTTP/1.1 keep-alive: the next request head must come within header_read_timeout.
    let tls = silent_tls(d.addr("door"), &ca, &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    let conn = tokio::spawn(conn);
    let req = hyper::Request::post("/v1/logs")
        .header("host", "localhost")
        .body(Full::new(Bytes::from_static(b"{\"message\":\"keep-alive\"}\n")))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await;
    tokio::time::timeout(T, conn).await.expect("the kept-alive HTTP/1.1 connection was not closed").ok();

    // Flight SQL: an HTTP/2 connection that makes one call, then nothing: idle_timeout closes
    // it. Calls refused for want of credentials do not count: such a connection is closed as
    // one that never made a request. One that finishes HTTP/2's own handshake and makes no call
    // is closed by header_read_timeout.
    let token = std::fs::read_to_string(d.data_dir().join("flight.token")).unwrap();
    for (auth, reason, status) in [(Some(token.trim()), "idle", "0"), (None, "no_request", "16")] {
        let before = timed_out(&d, "flight", reason);
        let tls = silent_tls(d.addr("flight"), &ca, &[b"h2"]).await;
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
        let conn = tokio::spawn(conn);
        let mut req =
            hyper::Request::post("https://localhost/arrow.flight.protocol.FlightService/ListActions")
                .header("content-type", "application/grpc")
                .header("te", "trailers");
        if let Some(t) = auth {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]))).unwrap();
        let (parts, body) = send.send_request(req).await.unwrap().into_parts();
        // The gRPC status: in the headers of a refusal, in the trailers of an answer.
        let trailers = body.collect().await.unwrap().trailers().cloned().unwrap_or_default();
        let grpc = parts.headers.get("grpc-status").or(trailers.get("grpc-status"));
        assert_eq!(grpc.map(|v| v.to_str().unwrap()), Some(status), "{parts:?} {trailers:?}");
        tokio::time::timeout(T, conn)
            .await
            .expect("the quiet Flight SQL connection was not closed")
            .unwrap()
            .ok();
        wait_until(T, reason, || timed_out(&d, "flight", reason) > before);
    }

    let tls = silent_tls(d.addr("flight"), &ca, &[b"h2"]).await;
    let (send, conn) =
        hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    tokio::time::timeout(T, conn)
        .await
        .expect("an HTTP/2 connection without a call was not closed")
        .unwrap()
        .ok();
    drop(send);
}

/// Slowloris: a request body trickled a byte at a time keeps bytes moving, so no idle rule
/// closes it; the minimum body rate (240 bytes/s after a 5 s grace) does, and the door opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickled_below_the_minimum_rate_is_closed() {
    use tokio::io::AsyncWriteExt;

    let d = Daemon::start_with(CONFIG);
    let ca = d.ca_file();
    let door = d.addr("door");
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..8 {
        let s = silent_tls(door, &ca, &[b"http/1.1"]).await;
        let (r, mut w) = tokio::io::split(s);
        let head = "POST /v1/logs HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100000\r\n\r\n";
        w.write_all(head.as_bytes()).await.unwrap();
        readers.push(r);
        // A byte every half second, well inside idle_timeout (2 s), until the server closes
        // the connection or the test's time is up.
        writers.push(tokio::spawn(async move {
            let until = tokio::time::Instant::now() + T;
            while tokio::time::Instant::now() < until && w.write_all(b"{").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
    }
    wait_until(T, "the door held by 8 trickling requests", || active(&d, "door") == 8.0);
    for r in readers {
        assert!(closed_by_server(r, T).await, "a trickled request body held its connection");
    }
    assert_eq!(timed_out(&d, "door", "slow_body"), 8.0);
    assert_eq!(timed_out(&d, "door", "stalled"), 0.0, "bytes kept moving: not the stalled rule");
    let r = post(door, ca, "/v1/logs", vec![], b"{\"message\":\"got in\"}\n".to_vec()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    for w in writers {
        w.abort();
    }
}

/// Open `n` HTTP/1.1 requests on `door` that declare `declared` bytes, send `first` at once
/// and then a byte every half second until the server closes them or `until`.
async fn trickling(
    door: SocketAddr,
    ca: &Path,
    n: usize,
    declared: usize,
    first: usize,
    until: Duration,
) -> Vec<tokio::io::ReadHalf<TlsStream<TcpStream>>> {
    use tokio::io::AsyncWriteExt;
    let mut readers = Vec::new();
    for _ in 0..n {
        let s = silent_tls(door, ca, &[b"http/1.1"]).await;
        let (r, mut w) = tokio::io::split(s);
        let head = format!("POST /v1/logs HTTP/1.1\r\nhost: localhost\r\ncontent-length: {declared}\r\n\r\n");
        w.write_all(head.as_bytes()).await.unwrap();
        w.write_all(&vec![b' '; first]).await.unwrap();
        readers.push(r);
        tokio::spawn(async move {
            let until = tokio::time::Instant::now() + until;
            while tokio::time::Instant::now() < until && w.write_all(b" ").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
    readers
}

/// Sending ahead buys a body at most 30 s of pause: 72 000 bytes at once (five minutes at
/// 240 bytes/s) and then a trickle is closed within the cap, not after five minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_start_does_not_pay_for_a_long_trickle() {
    let d = Daemon::start_with(CONFIG);
    let ca = d.ca_file();
    let readers = trickling(d.addr("door"), &ca, 2, 1_000_000, 72_000, Duration::from_secs(120)).await;
    for r in readers {
        assert!(closed_by_server(r, Duration::from_secs(50)).await, "a fast start paid for a long trickle");
    }
    assert_eq!(timed_out(&d, "door", "slow_body"), 2.0);
}

/// The request bodies one listener holds at once are bounded (here by a small
/// batch.max_pending_bytes): bodies held open fill it, the next request gets 503 with a
/// Retry-After instead of more memory, and a client slow to send an oversize body still
/// gets its 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_held_open_are_bounded_per_listener() {
    let d = Daemon::start_with(
        r#"max_pending_bytes = "1MiB"
[[http]]
name = "door"
address = "127.0.0.1:0"
max_body_bytes = "256KiB"
"#,
    );
    let ca = d.ca_file();
    let door = d.addr("door");
    // Four bodies of 255 KiB and a bit, sent but for their last bytes, hold 1020 of the
    // 1024 KiB once the daemon has read them (request_memory_bytes says when); a fifth
    // request then finds no room. A request sent before they are read would take room they
    // need, and they would be the ones refused.
    let held = trickling(door, &ca, 4, 256 * 1024, 255 * 1024, Duration::from_secs(60)).await;
    assert_eq!(d.metric("logwarden_request_memory_max_bytes{listener=\"door\"}"), 1024.0 * 1024.0);
    wait_until_async(T, "the four bodies to be read", || async {
        d.metric("logwarden_request_memory_bytes{listener=\"door\"}") >= 1020.0 * 1024.0
    })
    .await;
    // Larger than the 4 KiB left, small enough to sit whole in the socket's buffers: the
    // daemon refuses it by its length and closes, and a body still being written when the
    // close lands would fail the client's send (EPIPE) before it reads the 503.
    let body = vec![b'\n'; 16 * 1024];
    let refused = post(door, ca.clone(), "/v1/logs", vec![], body).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.body.contains("too many request bodies"), "{}", refused.body);
    drop(held);

    // An oversize body sent slowly: drained without the rate, then refused with 413.
    use tokio::io::AsyncWriteExt;
    let mut s = silent_tls(door, &ca, &[b"http/1.1"]).await;
    s.write_all(b"POST /v1/logs HTTP/1.1\r\nhost: localhost\r\ncontent-length: 1000000\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let deadline = tokio::time::Instant::now() + T;
    while !answer.windows(3).any(|w| w == b"413") && tokio::time::Instant::now() < deadline {
        let _ = s.write_all(b" ").await;
        let mut buf = [0u8; 1024];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    }
    assert!(answer.starts_with(b"HTTP/1.1 413"), "{:?}", String::from_utf8_lossy(&answer));
}
