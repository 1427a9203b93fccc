//! Checkpoints sent off the box (`[seal.export]`): to a webhook (the checkpoint line as the JSON
//! body of a POST) and to a syslog collector (RFC 5424 over TCP or TLS, octet-counted framing as
//! RFC 6587 and RFC 5425 have it, facility log audit). Whoever controls the box can cut the
//! newest entries off the chain and its checkpoints file; a checkpoint already elsewhere shows it.
//!
//! Each target has a task that sends the newest checkpoint; a failed send is tried again with a
//! backoff (1 s doubling to a minute) until it works or a newer checkpoint replaces it (the newer
//! one vouches for everything the older one did).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::checkpoint::Signed;
use crate::config::SealExportConfig;
use crate::metrics::SealMetrics;

const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("seal.export.webhook: {0}")]
    Webhook(#[from] crate::alert::http::HttpError),
    #[error("seal.export.syslog: {0}")]
    Syslog(String),
}

/// The export targets' tasks, fed the newest checkpoint.
pub struct Exporter {
    tx: watch::Sender<Option<Signed>>,
    /// Per target: the newest checkpoint (its entry count) it has sent.
    delivered: Vec<watch::Receiver<u64>>,
    tasks: std::sync::Mutex<JoinSet<()>>,
}

impl Exporter {
    /// No targets: checkpoints stay on the box (and in the log).
    pub fn none() -> Exporter {
        Exporter {
            tx: watch::channel(None).0,
            delivered: Vec::new(),
            tasks: std::sync::Mutex::new(JoinSet::new()),
        }
    }

    /// Start a task per configured target (on the current runtime).
    pub fn start(
        cfg: &SealExportConfig,
        node: &str,
        metrics: Option<SealMetrics>,
    ) -> Result<Exporter, ExportError> {
        let (tx, _) = watch::channel(None);
        let mut targets = Vec::new();
        if let Some(webhook) = &cfg.webhook {
            targets.push(Target::Webhook(Arc::new(crate::alert::http::Client::new(webhook, TIMEOUT)?)));
        }
        if let Some(url) = &cfg.syslog {
            targets.push(Target::Syslog(Arc::new(Syslog::new(url, cfg.syslog_ca_file.as_deref(), node)?)));
        }
        let mut tasks = JoinSet::new();
        let mut delivered = Vec::new();
        for target in targets {
            let (done_tx, done_rx) = watch::channel(0);
            delivered.push(done_rx);
            tasks.spawn(deliver(target, tx.subscribe(), done_tx, metrics.clone()));
        }
        Ok(Exporter { tx, delivered, tasks: std::sync::Mutex::new(tasks) })
    }

    pub fn send(&self, signed: Signed) {
        self.tx.send_replace(Some(signed));
    }

    /// At shutdown: give every target up to `deadline` to send the newest checkpoint, then stop.
    pub async fn drain(&self, deadline: Duration) {
        let want = self.tx.borrow().as_ref().map(|s| s.checkpoint.seq);
        if let Some(want) = want {
            let all = futures::future::join_all(self.delivered.iter().cloned().map(|mut d| async move {
                let _ = d.wait_for(|seq| *seq >= want).await;
            }));
            if tokio::time::timeout(deadline, all).await.is_err() {
                tracing::warn!(
                    entries = want,
                    "shutdown: the newest seal checkpoint was not exported to every target in time"
                );
            }
        }
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).abort_all();
    }
}

enum Target {
    Webhook(Arc<crate::alert::http::Client>),
    Syslog(Arc<Syslog>),
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::Webhook(_) => "webhook",
            Target::Syslog(_) => "syslog",
        }
    }

    async fn send(&self, signed: &Signed) -> Result<(), String> {
        match self {
            Target::Webhook(client) => {
                let body = Bytes::from(signed.to_line());
                let headers = [("Content-Type", "application/json".to_string())];
                let answer = client.post("", body, &headers).await.map_err(|e| e.to_string())?;
                match answer.status {
                    200..=299 => Ok(()),
                    s => Err(format!("answered {s}: {}", answer.body)),
                }
            }
            Target::Syslog(s) => s.send(signed).await,
        }
    }
}

async fn deliver(
    target: Target,
    mut rx: watch::Receiver<Option<Signed>>,
    delivered: watch::Sender<u64>,
    metrics: Option<SealMetrics>,
) {
    let mut backoff = Duration::from_secs(1);
    let mut failing = false;
    while rx.changed().await.is_ok() {
        loop {
            let Some(signed) = rx.borrow_and_update().clone() else { break };
            match target.send(&signed).await {
                Ok(()) => {
                    if std::mem::take(&mut failing) {
                        tracing::warn!(target_kind = target.name(), "seal checkpoints are exported again");
                    }
                    if let Some(m) = &metrics {
                        m.exported.with_label_values(&[target.name()]).inc();
                    }
                    delivered.send_replace(signed.checkpoint.seq);
                    backoff = Duration::from_secs(1);
                    break;
                }
                Err(e) => {
                    if let Some(m) = &metrics {
                        m.export_failures.with_label_values(&[target.name()]).inc();
                    }
                    if !std::mem::replace(&mut failing, true) {
                        tracing::error!(target_kind = target.name(), error = %e, entries = signed.checkpoint.seq,
                            "failed to export a seal checkpoint; retrying until it is sent or a newer one replaces it");
                    }
                    // A newer checkpoint ends the wait (and is sent instead).
                    if tokio::time::timeout(backoff, rx.changed()).await.is_ok_and(|r| r.is_err()) {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// A syslog collector: `tcp://HOST:PORT` or `tls://HOST:PORT` (with the CA file that signs it).
struct Syslog {
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    hostname: String,
}

impl Syslog {
    fn new(url: &str, ca_file: Option<&std::path::Path>, node: &str) -> Result<Syslog, ExportError> {
        let bad = |reason: &str| ExportError::Syslog(format!("{url}: {reason}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("must start with tcp:// or tls://"))?;
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("must name a port (HOST:PORT)"))?;
        let port: u16 = port.trim_end_matches('/').parse().map_err(|_| bad("the port is not a number"))?;
        let host = host.trim_matches(['[', ']']).to_owned();
        let tls = match scheme {
            "tcp" => None,
            "tls" => {
                let ca = ca_file.ok_or_else(|| bad("a tls:// collector needs seal.export.syslog_ca_file"))?;
                let mut roots = rustls::RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(ca)
                    .map_err(|e| bad(&format!("{}: {e}", ca.display())))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(&format!("{}: {e}", ca.display())))?;
                roots.add_parsable_certificates(certs);
                if roots.is_empty() {
                    return Err(bad(&format!("{}: no PEM certificate in it", ca.display())));
                }
                let config =
                    rustls::ClientConfig::builder_with_provider(Arc::new(crate::tls::crypto_provider()))
                        .with_safe_default_protocol_versions()
                        .map_err(|e| bad(&e.to_string()))?
                        .with_root_certificates(roots)
                        .with_no_client_auth();
                crate::tls::check_fips("the checkpoint syslog export", config.fips())
                    .map_err(|e| bad(&e.to_string()))?;
                let name = ServerName::try_from(host.clone()).map_err(|e| bad(&e.to_string()))?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
            _ => return Err(bad("must start with tcp:// or tls://")),
        };
        Ok(Syslog { host, port, tls, hostname: node.to_owned() })
    }

    /// RFC 5424: `<110>1 TIME HOST logwarden - seal-checkpoint - MSG` (facility 13, log audit;
    /// severity 6), framed `LEN SP MSG`.
    fn frame(&self, signed: &Signed) -> Vec<u8> {
        let msg = format!(
            "<110>1 {} {} logwarden - seal-checkpoint - {}",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            if self.hostname.is_empty() { "-" } else { &self.hostname },
            signed.to_line()
        );
        format!("{} {msg}", msg.len()).into_bytes()
    }

    async fn send(&self, signed: &Signed) -> Result<(), String> {
        let frame = self.frame(signed);
        let addr = format!("{}:{}", self.host, self.port);
        let work = async {
            let tcp =
                tokio::net::TcpStream::connect(&addr).await.map_err(|e| format!("connect to {addr}: {e}"))?;
            match &self.tls {
                None => write_all_and_close(tcp, &frame).await,
                Some((connector, name)) => {
                    let tls = connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
                    write_all_and_close(tls, &frame).await
                }
            }
            .map_err(|e| format!("send to {addr}: {e}"))
        };
        tokio::time::timeout(TIMEOUT, work)
            .await
            .map_err(|_| format!("no progress with {addr} within {TIMEOUT:?}"))?
    }
}

async fn write_all_and_close<S: tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    bytes: &[u8],
) -> std::io::Result<()> {
    s.write_all(bytes).await?;
    s.flush().await?;
    s.shutdown().await
}
