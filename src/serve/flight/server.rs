//! The Flight SQL transport: connections come through the shared accept loop (connection cap,
//! handshake timeout, metrics), then tonic serves gRPC on them. Every call is authenticated
//! before it reaches the service.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::Connected;

use super::auth::{Authenticator, Identity};
use super::service::FlightSql;
use crate::config::ListenerCommon;
use crate::ingest::listener::{Gate, Io, Listeners, Peer, accept_loop};
use crate::metrics::{ConnectionMetrics, Metrics};
use crate::tls::Principal;
use crate::tls::revalidate::Chain;

/// The peer of a Flight SQL call, in each request's extensions.
#[derive(Debug, Clone)]
pub struct FlightPeer {
    pub addr: SocketAddr,
    /// From the client certificate, when the listener asks for one and it was sent.
    pub principal: Option<Arc<Principal>>,
    pub certificate: Option<Chain>,
}

/// A connection handed to tonic. Dropping it (tonic closed the connection) ends the accept
/// loop's task for it, which releases its slot under `max_connections`.
struct FlightConn {
    io: Box<dyn Io>,
    peer: Peer,
    _open: oneshot::Sender<()>,
}

impl Connected for FlightConn {
    type ConnectInfo = FlightPeer;
    fn connect_info(&self) -> FlightPeer {
        FlightPeer {
            addr: self.peer.addr,
            principal: self.peer.principal.clone(),
            certificate: self.peer.certificate.clone(),
        }
    }
}

impl AsyncRead for FlightConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for FlightConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

pub struct FlightServer {
    pub listener: Listeners,
    pub common: ListenerCommon,
    pub gate: Gate,
    pub service: FlightSql,
    pub auth: Arc<Authenticator>,
    pub connection_metrics: ConnectionMetrics,
    pub metrics: Metrics,
}

fn identify(auth: &Authenticator, req: &tonic::Request<()>) -> Result<Identity, tonic::Status> {
    let peer = req.extensions().get::<FlightPeer>();
    match peer.and_then(|p| p.principal.as_ref()) {
        Some(p) if req.metadata().get("authorization").is_none() => Ok(Identity {
            name: p.name.clone(),
            method: "certificate",
            generation: auth.generation(),
            certificate: peer.and_then(|p| p.certificate.clone()),
        }),
        _ => auth.check(req.metadata()),
    }
}

impl FlightServer {
    /// Serve until `cancel`, then finish in-flight calls (bounded by the caller's deadline).
    pub async fn run(self, cancel: CancellationToken, tracker: TaskTracker) {
        let (tx, rx) = mpsc::channel::<std::io::Result<FlightConn>>(64);
        let accept = tokio::spawn(accept_loop(
            self.listener,
            self.common.clone(),
            self.gate,
            self.connection_metrics,
            cancel.clone(),
            tracker,
            move |io, peer| {
                let tx = tx.clone();
                async move {
                    let (open, closed) = oneshot::channel();
                    if tx.send(Ok(FlightConn { io, peer, _open: open })).await.is_ok() {
                        let _ = closed.await;
                    }
                }
            },
        ));
        let auth = self.auth;
        let unauthenticated = self.metrics.flight_queries.with_label_values(&["unauthenticated"]);
        // An `authorization` header says who runs the call; without one, a verified client
        // certificate does.
        let check = move |mut req: tonic::Request<()>| match identify(&auth, &req) {
            Ok(id) => {
                req.extensions_mut().insert(id);
                Ok(req)
            }
            Err(status) => {
                unauthenticated.inc();
                Err(status)
            }
        };
        let service = FlightServiceServer::with_interceptor(self.service, check);
        let served = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(ReceiverStream::new(rx), cancel.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(listener = %self.common.name, error = %e, "Flight SQL server failed");
        }
        let _ = accept.await;
    }
}
