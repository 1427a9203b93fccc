//! Sessions driven over an in-memory pipe against a real storage pipeline: what is answered,
//! when, in which order, and what is stored; hostile peers (no reading, no `open`, trickled
//! bytes, bad frames).

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, StringArray};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;

use super::frame::parse;
use super::{RelpSettings, Timeouts, serve};
use crate::ingest::event::Protocol;
use crate::ingest::listener::Peer;
use crate::ingest::sink::Sink;
use crate::metrics::Metrics;
use crate::store::{Pipeline, PipelineOptions, SegmentsAt, Store};

const OPEN: &[u8] =
    b"1 open 86 relp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog\n";

struct Server {
    _dir: tempfile::TempDir,
    wal: std::path::PathBuf,
    store: Store,
    pipeline: Option<Pipeline>,
    metrics: Metrics,
    registry: prometheus::Registry,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

struct Client {
    io: DuplexStream,
    buf: Vec<u8>,
}

/// A session with `window` and these timeouts over a pipe holding `pipe` bytes each way, on a
/// pipeline that lingers for an hour (so only sealing at once answers anything).
fn start(window: usize, pipe: usize, open_timeout: Duration, idle_timeout: Duration) -> (Server, Client) {
    let dir = tempfile::tempdir().unwrap();
    let (store, rec) =
        Store::open(dir.path(), SegmentsAt::Local(dir.path().to_path_buf()), None, None).unwrap();
    let opts = PipelineOptions {
        batch_rows: 1 << 20,
        batch_linger: Duration::from_secs(3600),
        max_pending_bytes: 64 << 20,
        flush_interval: Duration::from_secs(3600),
        flush_bytes: 1 << 30,
        row_group_rows: 1024,
        zstd_level: 1,
        retention_max_age: None,
        retention_max_bytes: None,
    };
    let (pipeline, appender) = Pipeline::start(store.clone(), rec.next_generation, opts, None).unwrap();
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry).unwrap();
    let settings = Arc::new(RelpSettings {
        listener: "relp".into(),
        max_frame_bytes: 1024,
        window,
        idle_timeout,
        open_timeout,
        timeouts: Timeouts::new("relp", &metrics),
    });
    let lm = metrics.listener("relp", Protocol::Relp);
    let (client, server) = tokio::io::duplex(pipe);
    let cancel = CancellationToken::new();
    let peer = Peer { addr: "192.0.2.7:40000".parse().unwrap(), principal: None, certificate: None };
    let sink = Sink { appender, templates: None };
    let c = cancel.clone();
    let task = tokio::spawn(async move { serve(Box::new(server), peer, &settings, sink, lm, c).await });
    let wal = dir.path().join("wal");
    let server = Server { _dir: dir, wal, store, pipeline: Some(pipeline), metrics, registry, cancel, task };
    (server, Client { io: client, buf: Vec::new() })
}

fn session(window: usize) -> (Server, Client) {
    start(window, 1 << 20, Duration::from_secs(30), Duration::from_secs(30))
}

impl Server {
    /// Messages durable so far, in order.
    fn stored(&self) -> Vec<String> {
        let mut out = Vec::new();
        for m in self.store.snapshot().mem {
            let col = m.batch.column_by_name("message").unwrap();
            let s = col.as_any().downcast_ref::<StringArray>().unwrap();
            out.extend((0..s.len()).map(|i| s.value(i).to_owned()));
        }
        out
    }

    fn metric(&self, series: &str) -> f64 {
        crate::metrics::render(&self.registry)
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    async fn finish(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(20), &mut self.task).await.expect("session ended");
        drop(self.metrics);
        if let Some(p) = self.pipeline.take() {
            p.join().await;
        }
    }
}

impl Client {
    async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    /// The next frame from the server as (TXNR, command, data), `None` once it has closed.
    async fn next(&mut self) -> Option<(u32, String, String)> {
        loop {
            if let Some((f, used)) = parse(&self.buf, 1 << 20).unwrap() {
                let got = (
                    f.txnr,
                    String::from_utf8_lossy(f.command).into_owned(),
                    String::from_utf8_lossy(f.data).into_owned(),
                );
                self.buf.drain(..used);
                return Some(got);
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(20), self.io.read(&mut chunk))
                .await
                .expect("an answer or the end")
                .unwrap_or(0);
            if n == 0 {
                assert!(
                    self.buf.is_empty(),
                    "cut off inside a frame: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn expect(&mut self, txnr: u32, data: &str) {
        let got = self.next().await;
        assert_eq!(got, Some((txnr, "rsp".into(), data.into())));
    }

    async fn opened(&mut self) {
        self.send(OPEN).await;
        let (txnr, cmd, data) = self.next().await.unwrap();
        assert_eq!((txnr, cmd.as_str()), (1, "rsp"));
        assert!(data.starts_with("200 OK\nrelp_version=0\nrelp_software=logwarden,"), "{data}");
        assert!(data.ends_with("\ncommands=syslog"), "{data}");
    }
}

fn syslog(txnr: u32, msg: &str) -> Vec<u8> {
    match msg {
        "" => format!("{txnr} syslog 0\n").into_bytes(),
        _ => format!("{txnr} syslog {} {msg}\n", msg.len()).into_bytes(),
    }
}

#[tokio::test]
async fn open_syslog_and_close_are_answered_in_order_once_durable() {
    let (server, mut c) = session(128);
    c.opened().await;
    let mut frames = syslog(2, "<165>1 2024-03-01T12:00:00Z web-1 nginx 81 ID - first");
    frames.extend(syslog(3, "<13>Mar  1 12:00:01 web-1 sshd[7]: second"));
    frames.extend(syslog(4, "{\"message\":\"third\"}"));
    frames.extend(syslog(5, "")); // an empty message: answered, nothing stored
    frames.extend(b"6 close 0\n");
    c.send(&frames).await;
    for t in 2..=5 {
        c.expect(t, "200 OK").await;
    }
    c.expect(6, "").await;
    assert_eq!(c.next().await, None);
    // Answered means durable: already visible, without waiting for the hour of linger.
    assert_eq!(server.stored(), ["first", "second", "third"]);
    assert_eq!(
        server.metric(r#"logwarden_events_received_total{format="rfc5424",listener="relp",protocol="relp"}"#),
        1.0
    );
    assert_eq!(
        server.metric(r#"logwarden_events_received_total{format="json",listener="relp",protocol="relp"}"#),
        1.0
    );
    server.finish().await;
}

#[tokio::test]
async fn a_message_that_does_not_decode_is_stored_raw_and_answered() {
    let (server, mut c) = session(128);
    c.opened().await;
    c.send(b"2 syslog 12 \x00\xffnot syslog\n").await;
    c.expect(2, "200 OK").await;
    assert_eq!(server.stored().len(), 1);
    assert_eq!(
        server.metric(r#"logwarden_events_received_total{format="raw",listener="relp",protocol="relp"}"#),
        1.0
    );
    assert_eq!(
        server.metric(r#"logwarden_decode_errors_total{format="raw",listener="relp",protocol="relp"}"#),
        1.0
    );
    drop(c);
    server.finish().await;
}

#[tokio::test]
async fn a_frame_split_into_single_bytes_is_taken_whole() {
    let (server, mut c) = session(128);
    let mut all = OPEN.to_vec();
    all.extend(syslog(2, "<13>1 - h app - - - trickled"));
    for b in all {
        c.send(&[b]).await;
    }
    let (t, _, _) = c.next().await.unwrap();
    assert_eq!(t, 1);
    c.expect(2, "200 OK").await;
    assert_eq!(server.stored(), ["trickled"]);
    drop(c);
    server.finish().await;
}

#[tokio::test]
async fn syslog_before_open_is_refused_and_open_still_works() {
    let (server, mut c) = session(128);
    c.send(&syslog(1, "too early")).await;
    let (t, cmd, data) = c.next().await.unwrap();
    assert_eq!((t, cmd.as_str()), (1, "rsp"));
    assert!(data.starts_with("500 "), "{data}");
    c.send(b"2").await;
    c.send(&OPEN[1..]).await;
    let (t, _, data) = c.next().await.unwrap();
    assert!(t == 2 && data.starts_with("200 OK"), "{t} {data}");
    c.send(&syslog(3, "on time")).await;
    c.expect(3, "200 OK").await;
    assert_eq!(server.stored(), ["on time"]);
    drop(c);
    server.finish().await;
}

#[tokio::test]
async fn an_open_without_the_syslog_command_is_refused_and_closed() {
    let (server, mut c) = session(128);
    let offers = "relp_version=0\ncommands=somethingelse";
    c.send(format!("1 open {} {offers}\n", offers.len()).as_bytes()).await;
    c.expect(1, "500 required command not supported by client").await;
    assert_eq!(c.next().await, None);
    server.finish().await;
}

#[tokio::test]
async fn txnrs_are_answered_as_sent_even_when_they_go_backwards() {
    let (server, mut c) = session(128);
    c.opened().await;
    let mut frames = syslog(999_999_999, "a");
    frames.extend(syslog(1, "b"));
    frames.extend(syslog(1, "c"));
    frames.extend(syslog(0, "d"));
    c.send(&frames).await;
    for t in [999_999_999, 1, 1, 0] {
        c.expect(t, "200 OK").await;
    }
    assert_eq!(server.stored(), ["a", "b", "c", "d"]);
    drop(c);
    server.finish().await;
}

#[tokio::test]
async fn a_peer_that_reads_no_answers_holds_at_most_a_window() {
    // 8 frames of window, 256 bytes of pipe each way: once the pipe is full of answers the
    // session must stop reading, so the flood below cannot be written whole.
    let (server, c) = start(8, 256, Duration::from_secs(30), Duration::from_secs(60));
    let mut flood = OPEN.to_vec();
    for t in 2..5002 {
        flood.extend(syslog(t, &format!("flood {t}")));
    }
    let (mut rd, mut wr) = tokio::io::split(c.io);
    let writer = tokio::spawn(async move {
        wr.write_all(&flood).await.unwrap();
        wr
    });
    // Wait until nothing more is stored over 300 ms. (Should that come early on a slow machine,
    // the bound below holds all the same: it is what the session can take, not a timing.)
    let mut last = usize::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = server.stored().len();
        if now == last {
            break;
        }
        last = now;
    }
    eprintln!("taken while no answer was read: {last}");
    assert!(!writer.is_finished(), "5000 frames were taken without their answers being read");
    // At most: the window, one window's answers being written, and what the pipe holds.
    assert!(last <= 8 + 8 + 256 / 10, "{last} frames taken while no answer was read");

    // Reading the answers lets everything through, answered in order.
    let mut buf = Vec::new();
    let mut next = 1u32;
    let mut chunk = [0u8; 8192];
    while next < 5002 {
        let n = rd.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed after answering {next}");
        buf.extend_from_slice(&chunk[..n]);
        while let Some((f, used)) = parse(&buf, 1 << 20).unwrap() {
            assert_eq!(f.txnr, next);
            next += 1;
            buf.drain(..used);
        }
    }
    let _ = writer.await.unwrap();
    assert_eq!(server.stored().len(), 5000);
    server.cancel.cancel();
    server.finish().await;
}

#[tokio::test]
async fn an_oversize_frame_closes_the_session_after_the_answers_before_it() {
    let (server, mut c) = session(128);
    c.opened().await;
    let mut frames = syslog(2, "kept");
    // 1024 is the limit: the DATALEN alone refuses it, its data never needs to arrive.
    frames.extend(b"3 syslog 1025 ");
    c.send(&frames).await;
    c.expect(2, "200 OK").await;
    assert_eq!(c.next().await, None);
    assert_eq!(server.metric(r#"logwarden_frames_rejected_total{listener="relp",reason="oversize"}"#), 1.0);
    assert_eq!(server.stored(), ["kept"]);
    server.finish().await;
}

#[tokio::test]
async fn garbage_unknown_commands_and_missing_trailers_close_the_session() {
    for (opened, input) in [
        (false, &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]),
        (true, b"2 rsp 6 200 OK\n"),  // a command no client sends
        (true, b"2 syslog 5 helloX"), // no LF after the data
    ] {
        let (server, mut c) = session(128);
        if opened {
            c.opened().await;
        }
        c.send(input).await;
        assert_eq!(c.next().await, None, "{:?}", String::from_utf8_lossy(input));
        assert_eq!(
            server.metric(r#"logwarden_frames_rejected_total{listener="relp",reason="malformed"}"#),
            1.0
        );
        assert!(server.stored().is_empty());
        server.finish().await;
    }
}

#[tokio::test]
async fn shutdown_answers_what_is_durable_then_sends_serverclose() {
    let (server, mut c) = session(128);
    c.opened().await;
    c.send(&syslog(2, "before the end")).await;
    c.expect(2, "200 OK").await;
    server.cancel.cancel();
    assert_eq!(c.next().await, Some((0, "serverclose".into(), "".into())));
    assert_eq!(c.next().await, None);
    server.finish().await;
}

#[tokio::test]
async fn a_storage_failure_is_not_answered_and_ends_the_session() {
    let (server, mut c) = session(128);
    c.opened().await;
    crate::store::faults::inject(&server.wal, crate::store::faults::Fault::WalWrite, 1);
    c.send(&syslog(2, "refused by the disk")).await;
    // librelp drops a frame answered 500: no answer, so the client sends it again.
    assert_eq!(c.next().await, Some((0, "serverclose".into(), "".into())));
    assert_eq!(c.next().await, None);
    assert!(server.stored().is_empty());
    server.finish().await;
}

#[tokio::test]
async fn trickled_bytes_do_not_keep_a_session_without_open_alive() {
    let (server, mut c) = start(128, 1 << 16, Duration::from_millis(300), Duration::from_secs(60));
    // One byte of an open every 50 ms: bytes keep coming, no frame ever completes.
    let closed = trickle(&mut c, OPEN).await;
    assert!(closed, "the session outlived its open timeout");
    assert_eq!(
        server.metric(r#"logwarden_connections_timed_out_total{listener="relp",reason="no_request"}"#),
        1.0
    );
    server.finish().await;
}

#[tokio::test]
async fn trickled_bytes_do_not_keep_an_idle_session_alive() {
    let (server, mut c) = start(128, 1 << 16, Duration::from_secs(60), Duration::from_millis(300));
    c.opened().await;
    let closed = trickle(&mut c, &syslog(2, &"x".repeat(500))).await;
    assert!(closed, "the session outlived its idle timeout");
    assert_eq!(server.metric(r#"logwarden_connections_timed_out_total{listener="relp",reason="idle"}"#), 1.0);
    assert!(server.stored().is_empty());
    server.finish().await;
}

/// Send `bytes` one every 50 ms; whether the server closed the session before they were all
/// sent (it answers `serverclose` first).
async fn trickle(c: &mut Client, bytes: &[u8]) -> bool {
    for b in bytes {
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The server sends nothing here but its serverclose before closing.
        let mut peek = [0u8; 64];
        if tokio::time::timeout(Duration::from_millis(1), c.io.read(&mut peek)).await.is_ok() {
            return true;
        }
        if c.io.write_all(&[*b]).await.is_err() {
            return true;
        }
    }
    false
}
