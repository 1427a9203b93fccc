//! Accept loops shared by the stream and HTTP listeners: connection limit, TLS handshake with a
//! timeout, accept errors retried with backoff, and a drop-guard that keeps the active gauge true.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ListenerCommon;
use crate::metrics::ConnectionMetrics;

/// A connection after the handshake: TLS or (loopback-only) plain TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Decrements `connections_active` however the connection task ends.
struct ActiveGuard(prometheus::IntGauge);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Accept connections until `cancel` fires, handing each (after TLS) to `handle`.
pub async fn accept_loop<H, F>(
    listener: TcpListener,
    cfg: ListenerCommon,
    tls: Option<TlsAcceptor>,
    metrics: ConnectionMetrics,
    cancel: CancellationToken,
    tracker: TaskTracker,
    handle: H,
) where
    H: Fn(Box<dyn Io>, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(cfg.max_connections));
    let handle = Arc::new(handle);
    let mut backoff = Duration::from_millis(5);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => {
                    backoff = Duration::from_millis(5);
                    c
                }
                Err(e) => {
                    // EMFILE and friends: wait for descriptors to free up instead of spinning.
                    tracing::warn!(listener = %cfg.name, error = %e, retry_in = ?backoff, "accept failed");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            metrics.refused.inc();
            tracing::warn!(listener = %cfg.name, %peer, max_connections = cfg.max_connections, "connection refused: listener is at max_connections");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        metrics.total.inc();
        metrics.active.inc();
        let guard = ActiveGuard(metrics.active.clone());
        let tls = tls.clone();
        let handle = handle.clone();
        let name = cfg.name.clone();
        let timeout = cfg.handshake_timeout;
        let m = metrics.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let _guard = guard;
            let io = tokio::select! {
                _ = cancel.cancelled() => return,
                io = handshake(tcp, tls, timeout) => io,
            };
            match io {
                Ok(io) => handle(io, peer).await,
                Err(HandshakeError::Timeout) => {
                    m.handshake_timeout.inc();
                    tracing::warn!(listener = %name, %peer, "TLS handshake timed out");
                }
                Err(HandshakeError::Failed(e)) => {
                    m.handshake_error.inc();
                    tracing::warn!(listener = %name, %peer, error = %e, "TLS handshake failed");
                }
            }
        });
    }
    tracing::debug!(listener = %cfg.name, "stopped accepting");
}

enum HandshakeError {
    Timeout,
    Failed(std::io::Error),
}

async fn handshake(
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    timeout: Duration,
) -> Result<Box<dyn Io>, HandshakeError> {
    let Some(acceptor) = tls else { return Ok(Box::new(tcp)) };
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Err(_) => Err(HandshakeError::Timeout),
        Ok(Err(e)) => Err(HandshakeError::Failed(e)),
        Ok(Ok(s)) => Ok(Box::new(s)),
    }
}

/// Bind a listener's address (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
