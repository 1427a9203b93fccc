//! The Flight SQL client behind `logwarden query --server`: run SQL on a running daemon and
//! collect the result (the same rows `logwarden query` reads from the directory). Credentials
//! travel only over TLS, or in plain text to a loopback address.

use std::net::IpAddr;
use std::path::Path;

use arrow::array::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad server URL {url}: {reason}")]
    Url { url: String, reason: String },
    #[error(
        "refusing to send credentials to {url}: plain http:// (or grpc://) is only for a loopback address, and {host} is not one; use https://{authority} (or grpc+tls://), or a daemon on 127.0.0.1, ::1 or localhost"
    )]
    Plaintext { url: String, host: String, authority: String },
    #[error("failed to read the CA file {path}: {source}")]
    Ca { path: String, source: std::io::Error },
    #[error("failed to read the client certificate or key {path}: {source}")]
    ClientCert { path: String, source: std::io::Error },
    #[error("failed to connect to {url}: {source}")]
    Connect { url: String, source: tonic::transport::Error },
    /// The server's answer: gRPC status code and message.
    #[error("{0}")]
    Server(String),
}

impl From<arrow_flight::error::FlightError> for ClientError {
    fn from(e: arrow_flight::error::FlightError) -> Self {
        match e {
            arrow_flight::error::FlightError::Tonic(s) => {
                ClientError::Server(format!("{:?}: {}", s.code(), s.message()))
            }
            other => ClientError::Server(other.to_string()),
        }
    }
}

/// Connect to `url` (`https://host:port` or `grpc+tls://host:port`; `http://` or `grpc://` for
/// a plaintext endpoint on a loopback address, refused for any other host, since every call
/// carries credentials), trusting `ca` when given and sending `token` as the bearer token
/// (without one, call `handshake` with a user name and password).
pub async fn connect(
    url: &str,
    ca: Option<&Path>,
    token: Option<&str>,
) -> Result<FlightSqlServiceClient<Channel>, ClientError> {
    connect_with_cert(url, ca, token, None).await
}

/// [`connect`], presenting a client certificate (`(cert PEM, key PEM)`): on a listener with
/// `client_auth`, its principal runs the queries when no token is sent.
pub async fn connect_with_cert(
    url: &str,
    ca: Option<&Path>,
    token: Option<&str>,
    cert: Option<(&Path, &Path)>,
) -> Result<FlightSqlServiceClient<Channel>, ClientError> {
    let bad = |reason: &str| ClientError::Url { url: url.to_owned(), reason: reason.to_owned() };
    let (tls, rest) =
        if let Some(r) = url.strip_prefix("https://").or_else(|| url.strip_prefix("grpc+tls://")) {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://").or_else(|| url.strip_prefix("grpc://")) {
            (false, r)
        } else {
            return Err(bad("use https://host:port (or grpc+tls://host:port)"));
        };
    let scheme = if tls { "https" } else { "http" };
    let uri: tonic::codegen::http::Uri =
        format!("{scheme}://{rest}").parse().map_err(|e| bad(&format!("{e}")))?;
    let host = uri.host().ok_or_else(|| bad("no host"))?.trim_matches(['[', ']']).to_owned();
    if !tls && !is_loopback(&host) {
        let authority = uri.authority().map_or(rest, |a| a.as_str()).to_owned();
        return Err(ClientError::Plaintext { url: url.to_owned(), host, authority });
    }
    let mut endpoint =
        Endpoint::from_shared(format!("{scheme}://{rest}")).map_err(|e| bad(&e.to_string()))?;
    if tls {
        let mut cfg = ClientTlsConfig::new().domain_name(host.clone());
        if let Some(ca) = ca {
            let pem = std::fs::read(ca)
                .map_err(|source| ClientError::Ca { path: ca.display().to_string(), source })?;
            cfg = cfg.ca_certificate(Certificate::from_pem(pem));
        }
        if let Some((cert, key)) = cert {
            let read = |p: &Path| {
                std::fs::read(p)
                    .map_err(|source| ClientError::ClientCert { path: p.display().to_string(), source })
            };
            cfg = cfg.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint
            .tls_config(cfg)
            .map_err(|source| ClientError::Connect { url: url.to_owned(), source })?;
    }
    let channel =
        endpoint.connect().await.map_err(|source| ClientError::Connect { url: url.to_owned(), source })?;
    let mut client = FlightSqlServiceClient::new(channel);
    if let Some(token) = token {
        client.set_token(token.to_owned());
    }
    Ok(client)
}

/// `localhost` or a loopback IP address: where plain text never leaves the machine.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Run one statement and collect every batch of every endpoint.
pub async fn query(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>, ClientError> {
    let info = client.execute(sql.to_owned(), None).await?;
    let mut out = Vec::new();
    for ep in info.endpoint {
        let Some(ticket) = ep.ticket else { continue };
        let stream = client.do_get(ticket).await?;
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        out.extend(batches);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plain_text_goes_to_loopback_only() {
        for url in [
            "http://192.0.2.1:50051",
            "grpc://logs.example.org:50051",
            "http://127.0.0.1@192.0.2.1:50051",
            "http://localhost.example.org:50051",
            "http://[2001:db8::1]:50051",
        ] {
            match connect(url, None, Some("s3cret")).await {
                Err(e @ ClientError::Plaintext { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains(url) && msg.contains("https://"), "{msg}");
                }
                other => panic!("{url}: {:?}", other.map(|_| ())),
            }
        }
        // Loopback passes the check (and then finds nothing listening on port 1).
        for url in ["http://127.0.0.1:1", "grpc://localhost:1", "http://[::1]:1"] {
            match connect(url, None, Some("s3cret")).await {
                Err(ClientError::Connect { .. }) => {}
                other => panic!("{url}: {:?}", other.map(|_| ())),
            }
        }
    }
}
