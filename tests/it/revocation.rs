//! Client certificates that stop being valid stop being accepted: a CRL past its `nextUpdate`
//! refuses (unless a grace period is set), and a certificate that a reloaded CRL revokes ends
//! the connections (stream, HTTP, Flight SQL, admin) and the Flight SQL sessions it opened.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::HandshakeRequest;
use logwarden::serve::flight::client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::client::{octet, send_with, tls_config_with_cert};
use crate::daemon::{Daemon, wait_until, wait_until_async};
use crate::pki::{Leaf, Pki, mtls_listener, trust_section};

const T: Duration = Duration::from_secs(30);

fn failures(d: &Daemon, listener: &str, reason: &str) -> f64 {
    d.metric(&format!(
        "logwarden_tls_handshake_failures_total{{listener=\"{listener}\",reason=\"{reason}\"}}"
    ))
}

fn line(text: &str) -> Vec<u8> {
    octet(&format!("<14>1 2026-11-23T10:00:00Z web-01 app - - - {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_crl_refuses_unless_a_grace_period_covers_it() {
    let mut pki = Pki::new("logwarden client CA");
    let web = pki.host("web", "web-01.example.org", false);
    // nextUpdate was 2025-06-01: the CRL may miss every revocation since.
    pki.write_crl_until(&[], (2025, 6, 1));
    let listener = mtls_listener("mtls", "required");

    let d = Daemon::start_with(&format!("{}{listener}", trust_section(&pki, "10s")));
    let cfg = tls_config_with_cert(&d.ca_file(), &web.cert, &web.key);
    assert!(!send_with(d.addr("mtls"), cfg, &line("with an expired CRL")).await);
    wait_until(T, "the crl_expired refusal", || failures(&d, "mtls", "crl_expired") >= 1.0);
    assert_eq!(d.count(""), 0);
    drop(d);

    // A grace period shorter than the CRL's lateness does not help; a longer one does.
    for (grace, accepted) in [("30days", false), ("100000days", true)] {
        let trust = format!("{}crl_expired_grace = \"{grace}\"\n", trust_section(&pki, "10s"));
        let d = Daemon::start_with(&format!("{trust}{listener}"));
        let cfg = tls_config_with_cert(&d.ca_file(), &web.cert, &web.key);
        assert_eq!(send_with(d.addr("mtls"), cfg, &line("within the grace")).await, accepted, "{grace}");
        if accepted {
            wait_until(T, "the event", || d.count("") == 1);
        } else {
            wait_until(T, "the refusal", || failures(&d, "mtls", "crl_expired") >= 1.0);
        }
    }
}

async fn open(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// One HTTP/1.1 request on a kept-alive connection; the status code of the answer.
async fn request(s: &mut TlsStream<TcpStream>, path: &str) -> Option<u16> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 16384];
    let n = tokio::time::timeout(T, s.read(&mut buf)).await.ok()?.ok()?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace().nth(1)?.parse().ok()
}

/// Whether the daemon closed the connection: a read ends (EOF or error) instead of waiting.
async fn closed(s: &mut TlsStream<TcpStream>) -> bool {
    let mut buf = [0u8; 64];
    matches!(tokio::time::timeout(T, s.read(&mut buf)).await, Ok(Ok(0)) | Ok(Err(_)))
}

fn config(pki: &Pki) -> String {
    format!(
        r#"{trust}{stream}
[[http]]
name = "https-mtls"
address = "127.0.0.1:0"
client_auth = "required"
[admin]
address = "127.0.0.1:0"
tls = true
client_auth = "required"
[flight]
address = "127.0.0.1:0"
client_auth = "optional"
"#,
        trust = trust_section(pki, "1h"),
        stream = mtls_listener("mtls", "required"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_ends_its_connections_and_sessions() {
    let mut pki = Pki::new("logwarden client CA");
    let revoked = pki.host("revoked", "web-01.example.org", false);
    let kept = pki.host("kept", "web-02.example.org", false);
    let scraper = pki.host("scraper", "prometheus.example.org", false);
    let d = Daemon::start_with_admin_cert(&config(&pki), &scraper.cert, &scraper.key);
    let ca = d.ca_file();
    let cfg = |leaf: &Leaf| tls_config_with_cert(&ca, &leaf.cert, &leaf.key);

    // Each certificate holds a stream connection, a kept-alive HTTP connection to ingest and one
    // to the admin endpoint.
    let mut streams = Vec::new();
    let mut https = Vec::new();
    let mut admins = Vec::new();
    for leaf in [&revoked, &kept] {
        let mut s = open(d.addr("mtls"), cfg(leaf)).await;
        s.write_all(&line("before")).await.unwrap();
        s.flush().await.unwrap();
        streams.push(s);
        let mut h = open(d.addr("https-mtls"), cfg(leaf)).await;
        assert_eq!(request(&mut h, "/v1/logs").await.map(|c| c != 0), Some(true));
        https.push(h);
        let mut a = open(d.addr("admin"), cfg(leaf)).await;
        assert_eq!(request(&mut a, "/healthz").await, Some(200));
        admins.push(a);
    }
    wait_until(T, "both events", || d.count("message = 'before'") == 2);

    // Flight SQL: a connection that authenticates by certificate, and a session started with it
    // and used from a connection without any certificate.
    let url = format!("https://localhost:{}", d.addr("flight").port());
    let mut card =
        client::connect_with_cert(&url, Some(&ca), None, Some((&revoked.cert, &revoked.key))).await.unwrap();
    assert!(client::query(&mut card, "SELECT 1").await.is_ok());
    let reply =
        card.inner_mut().handshake(futures::stream::iter([HandshakeRequest::default()])).await.unwrap();
    let session = reply.metadata().get("authorization").unwrap().to_str().unwrap().to_owned();
    let session = session.strip_prefix("Bearer ").unwrap().to_owned();
    let mut elsewhere = client::connect(&url, Some(&ca), Some(&session)).await.unwrap();
    assert!(client::query(&mut elsewhere, "SELECT 1").await.is_ok());
    let mut other_card =
        client::connect_with_cert(&url, Some(&ca), None, Some((&kept.cert, &kept.key))).await.unwrap();

    // The CA revokes one certificate; the operator reloads.
    pki.write_crl(&[revoked.serial]);
    d.signal("-HUP");
    wait_until(T, "the revoked connections counted", || {
        ["mtls", "https-mtls", "admin", "flight"]
            .iter()
            .all(|l| d.metric(&format!("logwarden_connections_revoked_total{{listener=\"{l}\"}}")) >= 1.0)
    });

    // The revoked certificate's connections are closed, the other's go on.
    assert!(closed(&mut streams[0]).await, "the revoked stream connection is open");
    assert!(closed(&mut https[0]).await, "the revoked HTTP connection is open");
    assert!(closed(&mut admins[0]).await, "the revoked admin connection is open");
    streams[1].write_all(&line("after")).await.unwrap();
    streams[1].flush().await.unwrap();
    wait_until(T, "the kept certificate's event", || d.count("message = 'after'") == 1);
    assert!(request(&mut https[1], "/v1/logs").await.is_some());
    assert_eq!(request(&mut admins[1], "/healthz").await, Some(200));

    // Flight SQL: the certificate's connection and its session are over; the other card's not.
    assert!(client::query(&mut card, "SELECT 1").await.is_err());
    let err = client::query(&mut elsewhere, "SELECT 1").await.unwrap_err().to_string();
    assert!(err.contains("Unauthenticated"), "{err}");
    assert!(client::query(&mut other_card, "SELECT 1").await.is_ok());

    // Each closing is in the audit trail with its reason.
    wait_until_async(T, "the audit entries", || async {
        let rows = d.query(
            "SELECT listener FROM audit WHERE kind = 'connection' AND outcome = 'closed' \
             AND principal = 'dns:web-01.example.org' AND lower(reason) LIKE '%revoked%'",
        );
        rows.len() >= 4
    })
    .await;
}

/// A handshake still under way when a reload revokes its certificate: the acceptor it started
/// with verified the certificate against the old CRL, and the reload could not see the
/// connection yet. The certificate is checked again against the new trust before admission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_under_way_at_the_revocation_is_refused() {
    use std::io::{Read, Write};
    let mut pki = Pki::new("logwarden client CA");
    let mallory = pki.host("mallory", "mallory.example.org", false);
    let d =
        Daemon::start_with(&format!("{}{}", trust_section(&pki, "1h"), mtls_listener("mtls", "required")));
    let cfg = tls_config_with_cert(&d.ca_file(), &mallory.cert, &mallory.key);
    let addr = d.addr("mtls");
    // Run the client's side of the handshake up to its last flight, and hold that flight.
    let (mut tcp, mut conn, held) = tokio::task::spawn_blocking(move || {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut conn = rustls::ClientConnection::new(cfg, name).unwrap();
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(T)).unwrap();
        conn.write_tls(&mut tcp).unwrap();
        while !conn.wants_write() {
            conn.read_tls(&mut tcp).unwrap();
            conn.process_new_packets().unwrap();
        }
        let mut held = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut held).unwrap();
        }
        (tcp, conn, held)
    })
    .await
    .unwrap();

    pki.write_crl(&[mallory.serial]);
    d.signal("-HUP");
    wait_until(T, "the reload", || d.log_text().contains("configuration reloaded"));

    // Finish the handshake and send: the daemon must refuse, not admit on the old trust.
    let refused = tokio::task::spawn_blocking(move || {
        tcp.write_all(&held).unwrap();
        conn.writer().write_all(&line("after the revocation")).unwrap();
        while conn.wants_write() {
            conn.write_tls(&mut tcp).unwrap();
        }
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf) {
                Ok(0) | Err(_) => return true,
                Ok(n) => {
                    let _ = conn.read_tls(&mut &buf[..n]);
                    if conn.process_new_packets().is_err() {
                        return true;
                    }
                }
            }
        }
    })
    .await
    .unwrap();
    assert!(refused);
    wait_until(T, "the refusal counted", || failures(&d, "mtls", "revoked") >= 1.0);
    d.wait_published();
    assert_eq!(d.count("message = 'after the revocation'"), 0);
}

/// A reload that names another CRL file (or CA bundle) applies it: the listeners are rebuilt
/// from the reloaded file's settings, not only from their old files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_a_new_crl_file() {
    let mut pki = Pki::new("logwarden client CA");
    let web = pki.host("web", "web-01.example.org", false);
    let d =
        Daemon::start_with(&format!("{}{}", trust_section(&pki, "1h"), mtls_listener("mtls", "required")));
    let mut open_conn = open(d.addr("mtls"), tls_config_with_cert(&d.ca_file(), &web.cert, &web.key)).await;
    open_conn.write_all(&line("before")).await.unwrap();
    open_conn.flush().await.unwrap();
    wait_until(T, "the event", || d.count("message = 'before'") == 1);

    // A second CRL file, revoking web, named by the reloaded config (the first one unchanged).
    let first = pki.crl();
    let second = pki.path("second.crl.pem");
    let original = std::fs::read(&first).unwrap();
    pki.write_crl(&[web.serial]);
    std::fs::rename(&first, &second).unwrap();
    std::fs::write(&first, original).unwrap();
    let text = std::fs::read_to_string(&d.config).unwrap().replace(
        &format!("crl_files = [\"{}\"]", first.display()),
        &format!("crl_files = [\"{}\"]", second.display()),
    );
    std::fs::write(&d.config, text).unwrap();
    d.signal("-HUP");
    wait_until(T, "the open connection closed", || {
        d.metric("logwarden_connections_revoked_total{listener=\"mtls\"}") == 1.0
    });
    assert!(closed(&mut open_conn).await);
    let cfg = tls_config_with_cert(&d.ca_file(), &web.cert, &web.key);
    assert!(!send_with(d.addr("mtls"), cfg, &line("after")).await);
    assert!(d.log_text().contains("second.crl.pem"), "the reload names the new file");
}
