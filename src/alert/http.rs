//! A small HTTP/1.1 client for posting notifications: one connection per request (alerts are
//! few), plain or TLS with the receiver's own CA bundle and optional client certificate.
//!
//! The status line decides what happened to a notification; of the body only the first
//! [`ANSWER_BYTES`] are read, for the log, within [`ANSWER_WAIT`], so a receiver that answers
//! with a huge, endless or stalled body costs neither memory nor a retry.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::task::JoinHandle;

use crate::config::ReceiverConfig;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid URL {url}: {reason}")]
    Url { url: String, reason: String },
    #[error("failed to read {path}: {reason}")]
    File { path: String, reason: String },
    #[error("failed to connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls { addr: String, source: std::io::Error },
    #[error("HTTP exchange with {addr} failed: {source}")]
    Http { addr: String, source: hyper::Error },
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
}

/// How much of a receiver's answer body is read (for the log).
const ANSWER_BYTES: usize = 512;
/// How long the body may take after the status arrived (within the request's timeout).
const ANSWER_WAIT: Duration = Duration::from_secs(2);

pub struct Client {
    host: String,
    port: u16,
    path: String,
    /// The base URL's query (`?token=…`), sent with every request.
    query: Option<String>,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    timeout: Duration,
}

/// The status and the start of the body of an answer.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Client {
    /// A client for `cfg.url`, whose path is joined with the `path` of each request.
    pub fn new(cfg: &ReceiverConfig, timeout: Duration) -> Result<Client, HttpError> {
        let bad = |reason: &str| HttpError::Url { url: cfg.url.clone(), reason: reason.into() };
        let uri: Uri = cfg.url.parse().map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("must start with http:// or https://")),
        };
        let host = uri.host().ok_or_else(|| bad("has no host"))?.trim_matches(['[', ']']).to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = uri.path().trim_end_matches('/').to_owned();
        let query = uri.query().map(str::to_owned);
        let tls = if https {
            let ca = cfg.ca_file.as_deref().ok_or_else(|| bad("an https URL needs ca_file"))?;
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| file_err(ca, e))? {
                roots.add(c.map_err(|e| file_err(ca, e))?).map_err(|e| file_err(ca, e))?;
            }
            if roots.is_empty() {
                // Otherwise every delivery would fail its handshake, long after the reload.
                return Err(file_err(
                    ca,
                    "no PEM certificate in it (ca_file must hold the CA that signs the receiver's certificate)",
                ));
            }
            let provider = Arc::new(crate::tls::crypto_provider());
            let builder = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| bad(&e.to_string()))?
                .with_root_certificates(roots);
            let config = match (&cfg.cert_file, &cfg.key_file) {
                (Some(cert), Some(key)) => {
                    let chain = CertificateDer::pem_file_iter(cert)
                        .map_err(|e| file_err(cert, e))?
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| file_err(cert, e))?;
                    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e))?;
                    builder.with_client_auth_cert(chain, key).map_err(|e| file_err(cert, e))?
                }
                _ => builder.with_no_client_auth(),
            };
            crate::tls::check_fips("its HTTPS client", config.fips()).map_err(|e| bad(&e.to_string()))?;
            let name = ServerName::try_from(host.clone()).map_err(|e| bad(&e.to_string()))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Client { host, port, path, query, tls, timeout })
    }

    /// `host:port` as the Host header and messages write it: an IPv6 address in brackets.
    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// POST `body` (JSON) to the base URL's path joined with `path`.
    pub async fn post(
        &self,
        path: &str,
        body: Bytes,
        headers: &[(&str, String)],
    ) -> Result<Answer, HttpError> {
        let addr = self.addr();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let (status, answer, conn) =
            match tokio::time::timeout_at(deadline, self.exchange(path, body, headers)).await {
                Ok(r) => r?,
                Err(_) => return Err(HttpError::Timeout { addr, timeout: self.timeout }),
            };
        let until = deadline.min(tokio::time::Instant::now() + ANSWER_WAIT);
        let body = answer_start(answer, until).await;
        conn.abort();
        Ok(Answer { status, body })
    }

    /// Connects, sends, and returns the status, the body still to read, and the connection's
    /// task (which must live while the body is read).
    async fn exchange(
        &self,
        path: &str,
        body: Bytes,
        headers: &[(&str, String)],
    ) -> Result<(u16, Incoming, JoinHandle<()>), HttpError> {
        let addr = self.addr();
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| HttpError::Connect { addr: addr.clone(), source })?;
        let _ = tcp.set_nodelay(true);
        let mut target = format!("{}{path}", self.path);
        if target.is_empty() {
            target.push('/');
        }
        if let Some(q) = &self.query {
            target = format!("{target}?{q}");
        }
        let mut req = hyper::Request::post(target)
            .header(hyper::header::HOST, addr.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, concat!("logwarden/", env!("CARGO_PKG_VERSION")));
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| HttpError::Url { url: addr.clone(), reason: e.to_string() })?;
        match &self.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|source| HttpError::Tls { addr: addr.clone(), source })?;
                send(TokioIo::new(tls), req, &addr).await
            }
            None => send(TokioIo::new(tcp), req, &addr).await,
        }
    }
}

async fn send<IO>(
    io: IO,
    req: hyper::Request<Full<Bytes>>,
    addr: &str,
) -> Result<(u16, Incoming, JoinHandle<()>), HttpError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let http = |source| HttpError::Http { addr: addr.to_owned(), source };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(http)?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    match sender.send_request(req).await {
        Ok(resp) => Ok((resp.status().as_u16(), resp.into_body(), conn)),
        Err(e) => {
            conn.abort();
            Err(http(e))
        }
    }
}

/// The first [`ANSWER_BYTES`] of `body`, or what of them arrived by `until`.
async fn answer_start(mut body: Incoming, until: tokio::time::Instant) -> String {
    let mut kept = Vec::with_capacity(ANSWER_BYTES);
    let _ = tokio::time::timeout_at(until, async {
        while kept.len() < ANSWER_BYTES {
            let Some(Ok(frame)) = body.frame().await else { break };
            if let Some(data) = frame.data_ref() {
                let room = ANSWER_BYTES - kept.len();
                kept.extend_from_slice(&data[..data.len().min(room)]);
            }
        }
    })
    .await;
    String::from_utf8_lossy(&kept).into_owned()
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> HttpError {
    HttpError::File { path: path.display().to_string(), reason: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    fn client(url: &str, timeout: Duration) -> Client {
        let cfg = ReceiverConfig {
            name: None,
            url: url.into(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            secret_file: None,
        };
        Client::new(&cfg, timeout).unwrap()
    }

    /// Reads a request's head; returns its request line and its Host header.
    async fn request_head(s: &mut TcpStream) -> (String, String) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).await.unwrap(), 1, "request ended early");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let host = head.lines().find_map(|l| l.strip_prefix("host: ").or_else(|| l.strip_prefix("Host: ")));
        (head.lines().next().unwrap_or_default().to_owned(), host.unwrap_or_default().to_owned())
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "garbage\n").unwrap();
        let cfg = ReceiverConfig {
            name: None,
            url: "https://127.0.0.1:9093".into(),
            ca_file: Some(ca.clone()),
            cert_file: None,
            key_file: None,
            secret_file: None,
        };
        let Err(e) = Client::new(&cfg, Duration::from_secs(1)) else {
            panic!("an empty CA bundle was accepted")
        };
        let e = e.to_string();
        assert!(e.contains(&ca.display().to_string()) && e.contains("no PEM certificate"), "{e}");
    }

    #[tokio::test]
    async fn an_ipv6_receiver_gets_a_bracketed_host() {
        let Ok(listener) = TcpListener::bind("[::1]:0").await else {
            eprintln!("skipped: no IPv6 loopback (::1) on this machine");
            return;
        };
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let head = request_head(&mut s).await;
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
            head
        });
        let c = client(&format!("http://[::1]:{port}/hook?team=ops"), Duration::from_secs(10));
        let a = c.post("", Bytes::from_static(b"{}"), &[]).await.unwrap();
        assert_eq!((a.status, a.body.as_str()), (200, "ok"));
        let (line, host) = server.await.unwrap();
        assert_eq!(host, format!("[::1]:{port}"));
        assert_eq!(line, "POST /hook?team=ops HTTP/1.1");
    }

    /// A receiver that accepts and then sends an endless body: the answer counts, only the
    /// start of the body is read, and the connection is dropped.
    #[tokio::test]
    async fn an_endless_answer_is_cut_after_its_start() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            request_head(&mut s).await;
            s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await.unwrap();
            let chunk = format!("{:x}\r\n{}\r\n", 64 << 10, "y".repeat(64 << 10));
            let mut sent = 0usize;
            while s.write_all(chunk.as_bytes()).await.is_ok() {
                sent += chunk.len();
            }
            sent
        });
        let c = client(&format!("http://127.0.0.1:{port}"), Duration::from_secs(10));
        let a = c.post("/api/v2/alerts", Bytes::from_static(b"[]"), &[]).await.unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.body, "y".repeat(ANSWER_BYTES));
        // The client went away: the server's writes failed long before memory ran out.
        assert!(server.await.unwrap() < 256 << 20);
    }

    /// A receiver that accepts and never answers: after the timeout the connection is closed,
    /// not left open in a task of its own for every retry.
    #[tokio::test]
    async fn a_silent_receiver_is_disconnected_at_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            request_head(&mut s).await;
            // Read on (the request body) until the client closes, or give up.
            let mut rest = [0u8; 64];
            loop {
                match tokio::time::timeout(Duration::from_secs(60), s.read(&mut rest)).await {
                    Ok(Ok(0) | Err(_)) => return true,
                    Ok(Ok(_)) => continue,
                    Err(_) => return false,
                }
            }
        });
        let c = client(&format!("http://127.0.0.1:{port}"), Duration::from_millis(300));
        let e = c.post("", Bytes::from_static(b"{}"), &[]).await.err().unwrap();
        assert!(matches!(e, HttpError::Timeout { .. }), "{e}");
        assert!(server.await.unwrap(), "the connection stayed open after the timeout");
    }

    /// A 2xx whose body never comes is still an answer: the notification was accepted. (And a
    /// base URL without a path is posted to `/`.)
    #[tokio::test]
    async fn a_stalled_body_after_the_status_does_not_fail_the_delivery() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (done, wait) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let (line, _) = request_head(&mut s).await;
            assert_eq!(line, "POST / HTTP/1.1");
            s.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 100\r\n\r\npartial").await.unwrap();
            let _ = wait.await;
        });
        let c = client(&format!("http://127.0.0.1:{port}"), Duration::from_secs(30));
        let a = c.post("", Bytes::from_static(b"{}"), &[]).await.unwrap();
        assert_eq!((a.status, a.body.as_str()), (202, "partial"));
        let _ = done.send(());
        server.await.unwrap();
    }
}
