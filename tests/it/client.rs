//! Clients the tests use to talk to the daemon: a rustls TLS stream and an HTTPS POST.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub fn tls_config(ca: &Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("read CA") {
        roots.add(c.expect("CA cert")).expect("add CA");
    }
    let provider = Arc::new(logwarden::tls::crypto_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// A client config that presents `cert` (PEM chain) with `key` (PEM). Reusing one config
/// reuses its session cache, so a second connection resumes the first one's session: it asks
/// for session tickets (RFC 9149), which stream listeners send only on request.
pub fn tls_config_with_cert(ca: &Path, cert: &Path, key: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("read CA") {
        roots.add(c.expect("CA cert")).expect("add CA");
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert).expect("read cert").map(|c| c.expect("cert")).collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).expect("read key");
    let provider = Arc::new(logwarden::tls::crypto_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client cert");
    cfg.send_ticket_request =
        Some(rustls::client::TicketRequest { new_session_count: 2, resumption_count: 2 });
    Arc::new(cfg)
}

/// Connect with `cfg` and send `payload`; then close and read until the server closes.
/// Returns whether the server accepted the connection: a refused client certificate shows as
/// a failed handshake or, in TLS 1.3, as an alert on the first read.
pub async fn send_with(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>, payload: &[u8]) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let Ok(mut tls) = TlsConnector::from(cfg).connect(name, tcp).await else { return false };
    if tls.write_all(payload).await.is_err() || tls.shutdown().await.is_err() {
        return false;
    }
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest).await.is_ok()
}

pub async fn connect_tls(addr: SocketAddr, ca: &Path) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    TlsConnector::from(tls_config(ca, &[]))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake")
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

/// POST over HTTPS/1.1 with the given extra headers.
pub async fn post(
    addr: SocketAddr,
    ca: PathBuf,
    path: &str,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
) -> HttpResponse {
    request(hyper::Method::POST, addr, &ca, path, headers, body).await
}

/// GET over HTTPS/1.1.
pub async fn get(addr: SocketAddr, ca: &Path, path: &str) -> HttpResponse {
    request(hyper::Method::GET, addr, ca, path, vec![], Vec::new()).await
}

async fn request(
    method: hyper::Method,
    addr: SocketAddr,
    ca: &Path,
    path: &str,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
) -> HttpResponse {
    let tls = connect_tls_alpn(addr, ca).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .expect("http handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::builder().method(method).uri(path).header("host", "localhost");
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp =
        sender.send_request(req.body(Full::new(Bytes::from(body))).expect("request")).await.expect("send");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    HttpResponse { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

async fn connect_tls_alpn(addr: SocketAddr, ca: &Path) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    TlsConnector::from(tls_config(ca, &[b"http/1.1"]))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake")
}

/// An RFC 5425 octet-counted frame.
pub fn octet(msg: &str) -> Vec<u8> {
    let mut f = format!("{} ", msg.len()).into_bytes();
    f.extend_from_slice(msg.as_bytes());
    f
}

/// One unary gRPC call made by hand over HTTP/2 and TLS: `message` framed as gRPC (flag byte
/// `compressed`, then its length), so tests can send what no generated client would. The
/// `grpc-status` and `grpc-message` of the answer (from its headers or its trailers).
pub async fn grpc_call(
    addr: SocketAddr,
    ca: &Path,
    path: &str,
    message: &[u8],
    compressed: Option<&'static str>,
) -> (String, String) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let tls = TlsConnector::from(tls_config(ca, &[b"h2"]))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.expect("h2");
    tokio::spawn(conn);
    let mut framed = vec![u8::from(compressed.is_some())];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    let mut req = hyper::Request::post(format!("https://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(enc) = compressed {
        req = req.header("grpc-encoding", enc);
    }
    let resp =
        send.send_request(req.body(Full::new(Bytes::from(framed))).expect("request")).await.expect("send");
    let (parts, body) = resp.into_parts();
    let trailers = body.collect().await.expect("body").trailers().cloned().unwrap_or_default();
    let get = |name: &str| {
        parts
            .headers
            .get(name)
            .or(trailers.get(name))
            .map_or(String::new(), |v| v.to_str().unwrap_or("").to_owned())
    };
    (get("grpc-status"), get("grpc-message"))
}
