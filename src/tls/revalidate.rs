//! Client certificates in use, verified again whenever their listener's trust is reloaded: a
//! certificate that a new CRL revokes (or that no longer verifies for any other reason) ends
//! the connections it opened and the Flight SQL sessions it started, instead of keeping them
//! until the peer hangs up.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// A verified client certificate chain, end entity first.
pub type Chain = Arc<Vec<CertificateDer<'static>>>;

/// Whether a chain still verifies: `Err` says why not.
pub type Check<'a> = &'a dyn Fn(&Chain) -> Result<(), String>;

type Hook = Box<dyn Fn(Check<'_>) + Send + Sync>;

/// Why and whether a connection's certificate was found invalid.
#[derive(Default)]
struct Revocation {
    token: CancellationToken,
    reason: OnceLock<String>,
}

/// The certificates in use on one listener.
#[derive(Default)]
pub struct InUse {
    connections: Mutex<HashMap<u64, (Chain, Arc<Revocation>)>>,
    next: AtomicU64,
    /// Others holding certificates of this listener (Flight SQL sessions).
    hooks: Mutex<Vec<Hook>>,
}

/// One connection's claim on its certificate: forgotten when dropped.
pub struct Claim {
    id: u64,
    registry: Arc<InUse>,
    revocation: Arc<Revocation>,
}

impl Claim {
    /// Cancelled when the certificate stops verifying.
    pub fn token(&self) -> CancellationToken {
        self.revocation.token.clone()
    }

    /// Why the certificate stopped verifying, once it has.
    pub fn revoked(&self) -> Option<&str> {
        self.revocation.reason.get().map(String::as_str)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.registry.connections.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

impl InUse {
    /// Track a connection that presented `chain`.
    pub fn claim(self: &Arc<Self>, chain: Chain) -> Claim {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let revocation = Arc::new(Revocation::default());
        self.connections.lock().unwrap_or_else(|e| e.into_inner()).insert(id, (chain, revocation.clone()));
        Claim { id, registry: self.clone(), revocation }
    }

    /// Run `hook` with the new check at every revalidation (a holder of certificates other
    /// than connections, such as the Flight SQL sessions).
    pub fn on_revalidate(&self, hook: impl Fn(Check<'_>) + Send + Sync + 'static) {
        self.hooks.lock().unwrap_or_else(|e| e.into_inner()).push(Box::new(hook));
    }

    /// Verify every claimed chain with `verifier`; end the connections whose chain fails.
    /// Returns how many were ended.
    pub fn revalidate(&self, verifier: &dyn ClientCertVerifier) -> usize {
        let check = |chain: &Chain| -> Result<(), String> {
            let (leaf, intermediates) = chain.split_first().ok_or("no certificate")?;
            verifier
                .verify_client_cert(leaf, intermediates, UnixTime::now())
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let mut ended = 0;
        let connections: Vec<(Chain, Arc<Revocation>)> =
            self.connections.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        for (chain, revocation) in connections {
            if revocation.token.is_cancelled() {
                continue;
            }
            if let Err(reason) = check(&chain) {
                let _ = revocation.reason.set(reason);
                revocation.token.cancel();
                ended += 1;
            }
        }
        for hook in self.hooks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            hook(&check);
        }
        ended
    }
}

/// A connection that fails its next read or write once its certificate is revoked, so any
/// protocol on top of it (a stream reader, hyper, tonic) closes it the way it closes a
/// connection the peer broke.
pub struct Revocable<T> {
    io: T,
    revoked: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<T> Revocable<T> {
    pub fn new(io: T, token: CancellationToken) -> Self {
        Revocable { io, revoked: Box::pin(token.cancelled_owned()) }
    }

    /// The error once revoked; polling also registers the task to wake at revocation.
    fn check(&mut self, cx: &mut Context<'_>) -> Result<(), std::io::Error> {
        match self.revoked.as_mut().poll(cx) {
            Poll::Ready(()) => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the client certificate was revoked",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Revocable<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Revocable<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_pending_read_fails_when_revoked() {
        let (client, server) = tokio::io::duplex(64);
        let token = CancellationToken::new();
        let mut io = Revocable::new(server, token.clone());
        let read = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            io.read(&mut buf).await
        });
        token.cancel();
        let err = read.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted);
        drop(client);
    }

    #[test]
    fn a_claim_is_forgotten_when_dropped() {
        let in_use = Arc::new(InUse::default());
        let claim = in_use.claim(Arc::new(vec![CertificateDer::from(vec![1, 2, 3])]));
        assert_eq!(in_use.connections.lock().unwrap().len(), 1);
        assert!(claim.revoked().is_none());
        drop(claim);
        assert!(in_use.connections.lock().unwrap().is_empty());
    }
}
