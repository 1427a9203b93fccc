//! RELP: a real rsyslog forwards with omrelp over TLS (both of librelp's TLS libraries);
//! `kill -9` in the middle of a stream loses nothing; hand-made frames for what rsyslog
//! never sends.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use logwarden::ingest::relp::frame::parse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::connect_tls;
use crate::daemon::{Daemon, wait_until, wait_until_async};
use crate::pki::{Pki, trust_section};
use crate::rsyslog::Rsyslog;

const T: Duration = Duration::from_secs(60);
/// librelp's default window: frames a client keeps unanswered.
const WINDOW: i64 = 128;

fn rsyslog(tls_lib: &str, port: u16, ca: &Path, client: Option<(&Path, &Path)>) -> Rsyslog {
    let client_tls = client.map_or(String::new(), |(cert, key)| {
        format!("tls.myCert=\"{}\" tls.myPrivKey=\"{}\"", cert.display(), key.display())
    });
    Rsyslog::start_rendered(
        include_str!("../fixtures/rsyslog-relp.conf.in"),
        &[
            ("@TLSLIB@", tls_lib),
            ("@TARGET_PORT@", &port.to_string()),
            ("@CA_FILE@", &ca.display().to_string()),
            ("@CLIENT_TLS@", &client_tls),
        ],
    )
}

/// Write `lines` to rsyslog's plain imtcp input.
fn feed(rs: &mut Rsyslog, lines: impl Iterator<Item = String>) {
    let mut s = TcpStream::connect(("127.0.0.1", rs.port())).unwrap();
    let mut buf = Vec::new();
    for l in lines {
        buf.extend_from_slice(l.as_bytes());
        buf.push(b'\n');
    }
    s.write_all(&buf).unwrap();
    s.flush().unwrap();
}

fn events(d: &Daemon, listener: &str) -> f64 {
    ["rfc5424", "rfc3164", "json", "raw"]
        .iter()
        .map(|f| {
            d.metric(&format!(
                r#"logwarden_events_received_total{{format="{f}",listener="{listener}",protocol="relp"}}"#
            ))
        })
        .sum()
}

#[test]
fn rsyslog_omrelp_delivers_every_message_with_its_fields() {
    // librelp's default TLS library (gnutls) needs a certificate of its own: the listener
    // requires one, and its principal is the events' client_id.
    let mut pki = Pki::new("shippers");
    let leaf = pki.host("shipper", "shipper.example.org", false);
    let d = Daemon::start_with(&format!(
        "{}[[relp]]\nname = \"relp-mtls\"\naddress = \"127.0.0.1:0\"\nclient_auth = \"required\"\n",
        trust_section(&pki, "10s")
    ));
    let mut rs = rsyslog("gnutls", d.addr("relp-mtls").port(), &d.ca_file(), Some((&leaf.cert, &leaf.key)));
    // And openssl, which needs no client certificate, to the listener that asks for none.
    let mut anon = rsyslog("openssl", d.addr("relp").port(), &d.ca_file(), None);
    const N: usize = 200;
    let line = |i: usize, tag: &str| {
        format!("<165>1 2024-03-01T12:00:{:02}.250Z web-7 nginx 812 ACCESS - {tag} message {i}", i % 60)
    };
    feed(&mut rs, (0..N).map(|i| line(i, "relp")));
    feed(&mut anon, (0..N).map(|i| line(i, "anonymous")));

    wait_until(T, "every message over RELP", || {
        let n = d.count("message LIKE 'relp message %' OR message LIKE 'anonymous message %'");
        assert!(n <= 2 * N as i64, "more events than sent: {n}");
        n == 2 * N as i64
    });
    let rows = d.query(
        "SELECT host, app, procid, message, protocol, listener, client_id, decode_error FROM logs \
         WHERE message IN ('relp message 7', 'anonymous message 7') ORDER BY message DESC",
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in &rows {
        assert_eq!(r["host"], "web-7", "{r}");
        assert_eq!(r["app"], "nginx", "{r}");
        assert_eq!(r["procid"], "812", "{r}");
        assert_eq!(r["protocol"], "relp", "{r}");
        assert!(r["decode_error"].is_null(), "{r}");
    }
    assert_eq!(
        (&rows[0]["listener"], &rows[0]["client_id"]),
        (&"relp-mtls".into(), &"dns:shipper.example.org".into())
    );
    assert_eq!((&rows[1]["listener"], &rows[1]["client_id"]), (&"relp".into(), &"".into()));
    assert_eq!(d.count("protocol = 'relp'"), 2 * N as i64);
    assert_eq!(events(&d, "relp-mtls"), N as f64);
    assert_eq!(events(&d, "relp"), N as f64);
}

#[test]
fn kill_9_in_the_middle_of_a_relp_stream_loses_nothing() {
    let mut d = Daemon::start();
    let port = d.addr("relp").port();
    let mut rs = rsyslog("openssl", port, &d.ca_file(), None);
    const N: usize = 20_000;
    let line = |i: usize| format!("<14>1 2024-03-01T12:00:00Z web-7 app - - - crash line {i}");
    feed(&mut rs, (0..N / 2).map(line));
    wait_until(T, "the stream to be under way", || d.metric("logwarden_events_durable_total") >= 2000.0);
    d.kill9();
    let at_kill = d.count("message LIKE 'crash line %'");
    // The rest arrives while logwarden is down: rsyslog's queue keeps it.
    feed(&mut rs, (N / 2..N).map(line));
    // Same data directory, same port: rsyslog reconnects and sends again what was not answered.
    let config = std::fs::read_to_string(&d.config).unwrap();
    let fixed = config.replacen(
        "name = \"relp\"\naddress = \"127.0.0.1:0\"",
        &format!("name = \"relp\"\naddress = \"127.0.0.1:{port}\""),
        1,
    );
    assert_ne!(config, fixed, "the test config's relp listener moved");
    std::fs::write(&d.config, fixed).unwrap();
    d.spawn();
    assert_eq!(d.addr("relp").port(), port);
    wait_until(Duration::from_secs(120), "every line stored at least once", || {
        d.query("SELECT count(DISTINCT message) AS n FROM logs WHERE message LIKE 'crash line %'")[0]["n"]
            .as_i64()
            .unwrap()
            == N as i64
    });
    let total = d.count("message LIKE 'crash line %'");
    let duplicates = total - N as i64;
    eprintln!(
        "RELP kill -9: {N} lines sent, {at_kill} in the WAL at the kill, {total} stored after the restart: {duplicates} duplicates"
    );
    assert!(duplicates <= WINDOW, "{duplicates} duplicates: more than librelp's window of {WINDOW}");
}

/// One TLS connection speaking RELP by hand.
struct Peer {
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    buf: Vec<u8>,
}

impl Peer {
    async fn connect(d: &Daemon) -> Peer {
        Peer { tls: connect_tls(d.addr("relp"), &d.ca_file()).await, buf: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tls.write_all(bytes).await.unwrap();
        self.tls.flush().await.unwrap();
    }

    async fn open(&mut self) {
        let offers =
            "relp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog";
        self.send(format!("1 open {} {offers}\n", offers.len()).as_bytes()).await;
        let (txnr, data) = self.answer().await.expect("the answer to open");
        assert!(txnr == 1 && data.starts_with("200 OK\n"), "{txnr} {data}");
    }

    /// The next frame from the server as (TXNR, data) (`serverclose` as data), or `None`
    /// once the server has closed the connection.
    async fn answer(&mut self) -> Option<(u32, String)> {
        loop {
            if let Some((f, used)) = parse(&self.buf, 1 << 20).unwrap() {
                let data = match f.command {
                    b"rsp" => String::from_utf8_lossy(f.data).into_owned(),
                    other => String::from_utf8_lossy(other).into_owned(),
                };
                let txnr = f.txnr;
                self.buf.drain(..used);
                return Some((txnr, data));
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(T, self.tls.read(&mut chunk)).await.expect("an answer or the close") {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

fn syslog(txnr: u32, msg: &str) -> Vec<u8> {
    format!("{txnr} syslog {} {msg}\n", msg.len()).into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_frames_close_their_connection_and_are_counted_and_nothing_of_them_is_stored() {
    let d = Daemon::start();
    let rejected = |reason: &str| {
        d.metric(&format!(r#"logwarden_frames_rejected_total{{listener="relp",reason="{reason}"}}"#))
    };

    // Garbage instead of open.
    let mut p = Peer::connect(&d).await;
    p.send(b"hello logwarden, this is not RELP\n").await;
    assert_eq!(p.answer().await, None);

    // A DATALEN over max_frame_bytes (64 KiB): refused from the header, the data never sent.
    let mut p = Peer::connect(&d).await;
    p.open().await;
    p.send(b"2 syslog 70000 <14>1 - h app - - - oversize").await;
    assert_eq!(p.answer().await, None);

    // Data without its LF trailer.
    let mut p = Peer::connect(&d).await;
    p.open().await;
    let mut frame = syslog(2, "<14>1 - h app - - - no trailer");
    *frame.last_mut().unwrap() = b'X';
    p.send(&frame).await;
    assert_eq!(p.answer().await, None);

    // syslog before open: refused with 500; the session stays usable.
    let mut p = Peer::connect(&d).await;
    p.send(&syslog(1, "<14>1 - h app - - - too early")).await;
    let (txnr, data) = p.answer().await.unwrap();
    assert!(txnr == 1 && data.starts_with("500 "), "{txnr} {data}");

    // Another connection is served meanwhile.
    let mut good = Peer::connect(&d).await;
    good.open().await;
    good.send(&syslog(2, "<14>1 - h app - - - still served")).await;
    assert_eq!(good.answer().await, Some((2, "200 OK".into())));
    good.send(b"3 close 0\n").await;
    assert_eq!(good.answer().await, Some((3, String::new())));
    assert_eq!(good.answer().await, None);

    wait_until_async(T, "the rejections counted", || async {
        rejected("malformed") >= 2.0 && rejected("oversize") >= 1.0
    })
    .await;
    assert_eq!(rejected("malformed"), 2.0);
    assert_eq!(rejected("oversize"), 1.0);
    // Answered means durable, and therefore queryable.
    assert_eq!(d.count("message = 'still served'"), 1);
    assert_eq!(d.count("protocol = 'relp'"), 1, "something of a refused frame was stored");
    assert!(d.log_text().contains("RELP frame rejected"));
}

#[test]
fn sigterm_answers_relp_sessions_with_serverclose_and_exits_cleanly() {
    let mut d = Daemon::start();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut p = rt.block_on(async {
        let mut p = Peer::connect(&d).await;
        p.open().await;
        p.send(&syslog(2, "<14>1 - h app - - - before sigterm")).await;
        assert_eq!(p.answer().await, Some((2, "200 OK".into())));
        p
    });
    // An idle session must not hold the daemon past its deadline.
    let status = d.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status}");
    rt.block_on(async {
        assert_eq!(p.answer().await, Some((0, "serverclose".into())));
        assert_eq!(p.answer().await, None);
    });
}
