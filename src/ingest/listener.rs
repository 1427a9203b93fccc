//! Accept loops shared by every listener: connection limit, TLS handshake with a timeout, the
//! peer's principal from its client certificate, the `[access]` send check, the audit entry for
//! each accepted or refused connection, accept errors retried with backoff, and a drop-guard
//! that keeps the active gauge true.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::SharedAccess;
use crate::audit::{Audit, AuditEntry};
use crate::config::{ListenerCommon, PrincipalSource};
use crate::metrics::ConnectionMetrics;
use crate::tls::revalidate::{Chain, Revocable};
use crate::tls::{ListenerTls, Principal, PrincipalError, PrincipalFrom, client_auth, principal_of};

/// A connection after the handshake: TLS or (loopback-only) plain TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// From a verified client certificate; `None` for anonymous peers.
    pub principal: Option<Arc<Principal>>,
    /// That certificate's chain (for checks made later, such as a Flight SQL session's).
    pub certificate: Option<Chain>,
}

impl Peer {
    /// The principal's name, or "" for an anonymous peer (the `client_id` column).
    pub fn client_id(&self) -> &str {
        self.principal.as_ref().map_or("", |p| p.name.as_str())
    }

    /// Where this peer's events come from, as every row of their batches records it.
    pub fn origin(&self, listener: &str, protocol: crate::ingest::event::Protocol) -> crate::batch::Origin {
        crate::batch::Origin {
            listener: listener.into(),
            peer: self.addr.to_string().into(),
            client_id: self.client_id().into(),
            protocol,
        }
    }
}

/// How the accept loop admits a connection: the listener's TLS (`None`: plain TCP on
/// loopback), then who the peer is and whether it may come in.
#[derive(Clone)]
pub struct Gate {
    pub tls: Option<Arc<ListenerTls>>,
    /// How a certificate becomes a principal (`[identity] principal_from`).
    pub principal_from: PrincipalFrom,
    /// The send rules, for ingest listeners; `None` where they do not apply (Flight SQL).
    pub access: Option<SharedAccess>,
    pub audit: Audit,
    /// Whether plain-TCP connections are audited too: yes where events come in, no on the
    /// admin endpoint, where every plain scrape would be an anonymous entry.
    pub audit_plain: bool,
}

/// Decrements `connections_active` however the connection task ends.
struct ActiveGuard(prometheus::IntGauge);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Accept connections until `cancel` fires, handing each (after TLS) to `handle`.
pub async fn accept_loop<H, F>(
    mut listener: Listeners,
    cfg: ListenerCommon,
    gate: Gate,
    metrics: ConnectionMetrics,
    cancel: CancellationToken,
    tracker: TaskTracker,
    handle: H,
) where
    H: Fn(Box<dyn Io>, Peer) -> F + Send + Sync + 'static,
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
        let handle = handle.clone();
        let name = cfg.name.clone();
        let timeout = cfg.handshake_timeout;
        let m = metrics.clone();
        let cancel = cancel.clone();
        let gate = gate.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let _guard = guard;
            let sources = gate.principal_from.load_full();
            let shaken = tokio::select! {
                _ = cancel.cancelled() => return,
                r = handshake(tcp, gate.tls.clone(), timeout, &sources) => r,
            };
            // One audit entry per connection, whatever becomes of it.
            let audit = |outcome: &str, reason: &str, principal: Option<&Principal>| {
                if gate.tls.is_none() && !gate.audit_plain {
                    return;
                }
                let mut e = AuditEntry::connection(&name, &peer.to_string(), outcome);
                e.reason = Some(reason.to_owned());
                if let Some(p) = principal {
                    e.principal = Some(p.name.clone());
                    e.subject = Some(p.subject.clone());
                    e.auth = "certificate";
                }
                gate.audit.record(e);
            };
            let refuse = |reason: &str, principal: Option<&Principal>| audit("refused", reason, principal);
            let Shaken { io, principal, certificate, kind, generation } = match shaken {
                Ok(ok) => ok,
                Err(HandshakeError::Timeout) => {
                    m.handshake_failed("timeout");
                    tracing::warn!(listener = %name, %peer, reason = "timeout", "TLS handshake timed out");
                    refuse("handshake timeout", None);
                    return;
                }
                Err(HandshakeError::Principal(e)) => {
                    let reason = e.reason();
                    m.handshake_failed(reason);
                    tracing::warn!(listener = %name, %peer, reason, "connection refused: {e}");
                    refuse(&format!("{reason}: {e}"), None);
                    return;
                }
                Err(HandshakeError::Failed(e)) => {
                    let reason = client_auth::failure_reason(&e);
                    m.handshake_failed(reason);
                    tracing::warn!(listener = %name, %peer, reason, error = %e, "TLS handshake failed");
                    refuse(&format!("{reason}: {e}"), None);
                    return;
                }
            };
            match kind {
                Some(Resumption::Resumed) => m.handshakes_resumed.inc(),
                Some(Resumption::Full) => m.handshakes_full.inc(),
                None => {}
            }
            // A certificate that a reloaded CRL revokes ends the connection it opened: claimed
            // now, and checked once more if trust was reloaded during the handshake (that
            // reload could not see this connection yet).
            let claim = gate.tls.as_ref().zip(certificate.clone()).map(|(tls, chain)| tls.in_use().claim(chain));
            if let (Some(tls), Some(chain)) = (&gate.tls, &certificate)
                && let Err(e) = tls.still_trusted(generation, chain)
            {
                let reason = client_auth::reason_of(&e);
                m.handshake_failed(reason);
                tracing::warn!(listener = %name, %peer, reason, error = %e, "connection refused: trust reloaded during its handshake no longer accepts its certificate");
                refuse(&format!("{reason}: {e}"), principal.as_deref());
                return;
            }
            let who = principal.as_deref().map(|p| p.name.as_str());
            if let Some(access) = &gate.access
                && !access.load().may_send(who, &name)
            {
                m.denied.inc();
                tracing::warn!(listener = %name, %peer, principal = who.unwrap_or(""), "connection refused: the principal may not send to this listener ([access] send rules)");
                refuse("not allowed to send to this listener", principal.as_deref());
                return;
            }
            audit("accepted", kind.map_or("plain TCP", Resumption::as_str), principal.as_deref());
            let io: Box<dyn Io> = match &claim {
                Some(c) => Box::new(Revocable::new(io, c.token())),
                None => io,
            };
            let who = principal.clone();
            handle(io, Peer { addr: peer, principal, certificate }).await;
            if let Some(reason) = claim.as_ref().and_then(|c| c.revoked()) {
                m.revoked.inc();
                tracing::warn!(listener = %name, %peer, principal = who.as_deref().map_or("", |p| p.name.as_str()), reason, "connection closed: its client certificate no longer verifies");
                audit("closed", &format!("certificate no longer valid: {reason}"), who.as_deref());
            }
        });
    }
    tracing::debug!(listener = %cfg.name, "stopped accepting");
}

enum HandshakeError {
    Timeout,
    Failed(std::io::Error),
    /// The certificate verified but names no principal, or an ambiguous one.
    Principal(PrincipalError),
}

#[derive(Debug, Clone, Copy)]
enum Resumption {
    Full,
    Resumed,
}

impl Resumption {
    fn as_str(self) -> &'static str {
        match self {
            Resumption::Full => "full handshake",
            Resumption::Resumed => "resumed session",
        }
    }
}

/// A connection after a successful handshake.
struct Shaken {
    io: Box<dyn Io>,
    principal: Option<Arc<Principal>>,
    certificate: Option<Chain>,
    /// `None` for plain TCP.
    kind: Option<Resumption>,
    /// The trust generation of the acceptor that verified the certificate.
    generation: u64,
}

async fn handshake(
    tcp: TcpStream,
    tls: Option<Arc<ListenerTls>>,
    timeout: Duration,
    identity: &[PrincipalSource],
) -> Result<Shaken, HandshakeError> {
    let Some(tls) = tls else {
        return Ok(Shaken {
            io: Box::new(tcp),
            principal: None,
            certificate: None,
            kind: None,
            generation: 0,
        });
    };
    let (acceptor, generation) = tls.acceptor();
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Err(_) => Err(HandshakeError::Timeout),
        Ok(Err(e)) => Err(HandshakeError::Failed(e)),
        Ok(Ok(s)) => {
            let conn = s.get_ref().1;
            let kind = match conn.handshake_kind() {
                Some(rustls::HandshakeKind::Resumed) => Resumption::Resumed,
                _ => Resumption::Full,
            };
            // The verifier already checked the chain; only the end-entity names the peer.
            let chain = conn.peer_certificates().filter(|c| !c.is_empty());
            let (principal, certificate) = match chain {
                None => (None, None),
                Some(chain) => {
                    let p = principal_of(&chain[0], identity).map_err(HandshakeError::Principal)?;
                    let owned: Vec<_> = chain.iter().map(|c| c.clone().into_owned()).collect();
                    (Some(Arc::new(p)), Some(Arc::new(owned)))
                }
            };
            Ok(Shaken { io: Box::new(s), principal, certificate, kind: Some(kind), generation })
        }
    }
}

/// Bind a listener's address (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// The sockets one configured listener accepts on: the address it bound, or every socket
/// systemd passed under its name (a socket unit may listen on several addresses for one
/// listener, e.g. an IPv4 and an IPv6 one).
pub struct Listeners {
    sockets: Vec<TcpListener>,
    /// Where the next accept starts polling, so that a busy socket cannot starve the others.
    next: usize,
}

impl Listeners {
    pub fn new(sockets: Vec<TcpListener>) -> Listeners {
        assert!(!sockets.is_empty(), "a listener needs at least one socket");
        Listeners { sockets, next: 0 }
    }

    /// The first socket's address (what `listeners.json` records).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.sockets[0].local_addr()
    }

    /// Every socket's address.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets.iter().filter_map(|s| s.local_addr().ok()).collect()
    }

    /// The next connection on any of the sockets.
    pub async fn accept(&mut self) -> std::io::Result<(TcpStream, SocketAddr)> {
        let n = self.sockets.len();
        std::future::poll_fn(|cx| {
            for k in 0..n {
                let i = (self.next + k) % n;
                if let std::task::Poll::Ready(r) = self.sockets[i].poll_accept(cx) {
                    self.next = (i + 1) % n;
                    return std::task::Poll::Ready(r);
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}

impl From<TcpListener> for Listeners {
    fn from(l: TcpListener) -> Listeners {
        Listeners::new(vec![l])
    }
}
