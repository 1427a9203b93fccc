//! A small HTTP/1.1 client for posting notifications: one connection per request (alerts are
//! few), plain or TLS with the receiver's own CA bundle and optional client certificate.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

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

pub struct Client {
    host: String,
    port: u16,
    path: String,
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
        let tls = if https {
            let ca = cfg.ca_file.as_deref().ok_or_else(|| bad("an https URL needs ca_file"))?;
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| file_err(ca, e))? {
                roots.add(c.map_err(|e| file_err(ca, e))?).map_err(|e| file_err(ca, e))?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
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
            let name = ServerName::try_from(host.clone()).map_err(|e| bad(&e.to_string()))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Client { host, port, path, tls, timeout })
    }

    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// POST `body` (JSON) to the base URL's path joined with `path`.
    pub async fn post(
        &self,
        path: &str,
        body: Bytes,
        headers: &[(&str, String)],
    ) -> Result<Answer, HttpError> {
        let addr = self.addr();
        match tokio::time::timeout(self.timeout, self.exchange(path, body, headers)).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout { addr, timeout: self.timeout }),
        }
    }

    async fn exchange(
        &self,
        path: &str,
        body: Bytes,
        headers: &[(&str, String)],
    ) -> Result<Answer, HttpError> {
        let addr = self.addr();
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| HttpError::Connect { addr: addr.clone(), source })?;
        let _ = tcp.set_nodelay(true);
        let mut req = hyper::Request::post(format!("{}{path}", self.path))
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

async fn send<IO>(io: IO, req: hyper::Request<Full<Bytes>>, addr: &str) -> Result<Answer, HttpError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let http = |source| HttpError::Http { addr: addr.to_owned(), source };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(http)?;
    let conn = tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(http)?;
    let status = resp.status().as_u16();
    // Only the start of an error body is kept, for the log.
    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    conn.abort();
    let body = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
    Ok(Answer { status, body })
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> HttpError {
    HttpError::File { path: path.display().to_string(), reason: e.to_string() }
}
