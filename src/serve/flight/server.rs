//! The Flight SQL transport: connections come through the shared accept loop (connection cap,
//! handshake timeout, metrics), then tonic serves gRPC on them. Every connection is watched for
//! doing nothing (`serve::timeouts`: a first call within `header_read_timeout`, then
//! `idle_timeout`) and pinged (HTTP/2 keepalive); every call is authenticated before it reaches
//! the service, a password check off the async workers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::transport::server::Connected;

use super::auth::{Authenticator, Identity};
use super::service::FlightSql;
use crate::config::ListenerCommon;
use crate::ingest::listener::{Gate, Io, Listeners, Peer, accept_loop};
use crate::metrics::{ConnectionMetrics, Metrics};
use crate::serve::timeouts::{Activity, Deadlines, InFlight, Watched};
use crate::tls::Principal;
use crate::tls::revalidate::Chain;

/// How long a connection closed for doing nothing may take to go (tonic drops it at its next
/// failed read or write) before its slot is given back regardless.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The peer of a Flight SQL call, in each request's extensions.
#[derive(Debug, Clone)]
pub struct FlightPeer {
    pub addr: SocketAddr,
    /// From the client certificate, when the listener asks for one and it was sent.
    pub principal: Option<Arc<Principal>>,
    /// The client certificate's chain, kept to verify it again when trust is reloaded.
    pub certificate: Option<Chain>,
    /// What the connection has been doing: each call is in progress on it while it runs.
    pub activity: Arc<Activity>,
}

/// A connection handed to tonic. Dropping it (tonic closed the connection) ends the accept
/// loop's task for it, which releases its slot under `max_connections`.
struct FlightConn {
    io: Watched<Box<dyn Io>>,
    peer: Peer,
    activity: Arc<Activity>,
    _open: oneshot::Sender<()>,
}

impl Connected for FlightConn {
    type ConnectInfo = FlightPeer;
    fn connect_info(&self) -> FlightPeer {
        FlightPeer {
            addr: self.peer.addr,
            principal: self.peer.principal.clone(),
            certificate: self.peer.certificate.clone(),
            activity: self.activity.clone(),
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
    pub deadlines: Deadlines,
    /// HTTP/2 PING interval, and how long an answer may take before the connection is closed.
    pub keepalive: (Duration, Duration),
}

async fn identify(
    auth: &Authenticator,
    md: &MetadataMap,
    peer: Option<&FlightPeer>,
) -> Result<Identity, tonic::Status> {
    let cert = peer.and_then(|p| p.principal.as_ref());
    match cert {
        Some(p) if md.get("authorization").is_none() => Ok(Identity {
            name: p.name.clone(),
            method: "certificate",
            generation: auth.generation(),
            certificate: peer.and_then(|p| p.certificate.clone()),
        }),
        _ => {
            let addr = peer.map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |p| p.addr);
            auth.authenticate(md, addr).await
        }
    }
}

/// Every call: in progress on its connection until its response ends, and authenticated (an
/// `authorization` header says who runs it; without one, a verified client certificate does)
/// before the service sees it. An async layer rather than tonic's interceptor, which cannot
/// wait for a password check.
#[derive(Clone)]
struct Calls<S> {
    inner: S,
    auth: Arc<Authenticator>,
    unauthenticated: IntCounter,
    /// Request messages held to a minimum rate, as HTTP request bodies are.
    deadlines: Deadlines,
}

impl<S: NamedService> NamedService for Calls<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Calls<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        // The clone that was made ready serves this call; a fresh clone waits for the next.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let (auth, unauthenticated) = (self.auth.clone(), self.unauthenticated.clone());
        let peer = req.extensions().get::<FlightPeer>().cloned();
        if let Some(p) = &peer {
            req = req.map(|body| Body::new(self.deadlines.min_rate(body, &p.activity)));
        }
        Box::pin(async move {
            let in_flight = peer.as_ref().map(|p| p.activity.request());
            let md = MetadataMap::from_headers(std::mem::take(req.headers_mut()));
            let who = identify(&auth, &md, peer.as_ref()).await;
            *req.headers_mut() = md.into_headers();
            match who {
                Ok(id) => {
                    req.extensions_mut().insert(id);
                }
                Err(status) => {
                    unauthenticated.inc();
                    if let Some(call) = in_flight {
                        call.refused();
                    }
                    return Ok(status.into_http());
                }
            }
            let resp = inner.call(req).await?;
            Ok(resp.map(|body| Body::new(Tracked { body, _in_flight: in_flight })))
        })
    }
}

/// A response body that keeps its call in progress until it ends or is dropped.
struct Tracked {
    body: Body,
    _in_flight: Option<InFlight>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl FlightServer {
    /// Serve until `cancel`, then finish in-flight calls (bounded by the caller's deadline).
    pub async fn run(self, cancel: CancellationToken, tracker: TaskTracker) {
        let (tx, rx) = mpsc::channel::<std::io::Result<FlightConn>>(64);
        let deadlines = self.deadlines;
        let body_deadlines = deadlines.clone();
        let accept = tokio::spawn(accept_loop(
            self.listener,
            self.common.clone(),
            self.gate,
            self.connection_metrics,
            cancel.clone(),
            tracker,
            move |io, peer| {
                let (tx, deadlines) = (tx.clone(), deadlines.clone());
                async move {
                    let activity = Activity::new();
                    let (open, mut closed) = oneshot::channel();
                    let io = Watched::new(io, activity.clone());
                    let conn = FlightConn { io, peer, activity: activity.clone(), _open: open };
                    if tx.send(Ok(conn)).await.is_err() {
                        return;
                    }
                    tokio::select! {
                        _ = &mut closed => {}
                        _ = deadlines.watch(&activity) => {
                            // tonic owns the connection: fail its IO, and it drops it.
                            activity.close();
                            if tokio::time::timeout(CLOSE_GRACE, closed).await.is_err() {
                                tracing::warn!(listener = %deadlines.listener, "a Flight SQL connection closed for doing nothing is still open; its slot is given back");
                            }
                        }
                    }
                }
            },
        ));
        let service = Calls {
            inner: FlightServiceServer::new(self.service),
            auth: self.auth,
            unauthenticated: self.metrics.flight_queries.with_label_values(&["unauthenticated"]),
            deadlines: body_deadlines,
        };
        let (ping, ping_timeout) = self.keepalive;
        let served = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(ping))
            .http2_keepalive_timeout(Some(ping_timeout))
            .add_service(service)
            .serve_with_incoming_shutdown(ReceiverStream::new(rx), cancel.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(listener = %self.common.name, error = %e, "Flight SQL server failed");
        }
        let _ = accept.await;
    }
}
