//! gRPC over the shared accept loop, for every gRPC listener (Flight SQL, OTLP): connections
//! come through `ingest::listener::accept_loop` (connection cap, TLS handshake, principal,
//! send rules, audit), each is watched for doing nothing (`serve::timeouts`: a first call
//! within `header_read_timeout`, then `idle_timeout`) and pinged (HTTP/2 keepalive), and tonic
//! serves the listener's service on them.
//!
//! [`Calls`] is the layer every gRPC service sits behind: each call holds its request body to
//! the minimum rate and stays in progress on its connection until its response ends.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;
use tonic::transport::server::Connected;

use super::timeouts::{Activity, Deadlines, InFlight, Watched};
use crate::config::ListenerCommon;
use crate::ingest::listener::{Gate, Io, Listeners, Peer, accept_loop};
use crate::metrics::ConnectionMetrics;
use crate::tls::Principal;
use crate::tls::revalidate::Chain;

/// How long a connection closed for doing nothing may take to go (tonic drops it at its next
/// failed read or write) before its slot is given back regardless.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The peer of a gRPC call, in each request's extensions.
#[derive(Debug, Clone)]
pub struct GrpcPeer {
    pub addr: SocketAddr,
    /// From the client certificate, when the listener asks for one and it was sent.
    pub principal: Option<Arc<Principal>>,
    /// The client certificate's chain, kept to verify it again when trust is reloaded.
    pub certificate: Option<Chain>,
    /// What the connection has been doing: each call is in progress on it while it runs.
    pub activity: Arc<Activity>,
}

impl GrpcPeer {
    /// The principal's name, or "" without a client certificate (the `client_id` column).
    pub fn client_id(&self) -> &str {
        self.principal.as_ref().map_or("", |p| p.name.as_str())
    }
}

/// A connection handed to tonic. Dropping it (tonic closed the connection) ends the accept
/// loop's task for it, which releases its slot under `max_connections`.
struct GrpcConn {
    io: Watched<Box<dyn Io>>,
    peer: Peer,
    activity: Arc<Activity>,
    _open: oneshot::Sender<()>,
}

impl Connected for GrpcConn {
    type ConnectInfo = GrpcPeer;
    fn connect_info(&self) -> GrpcPeer {
        GrpcPeer {
            addr: self.peer.addr,
            principal: self.peer.principal.clone(),
            certificate: self.peer.certificate.clone(),
            activity: self.activity.clone(),
        }
    }
}

impl AsyncRead for GrpcConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for GrpcConn {
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

/// One gRPC listener: where it accepts, how it admits, and how it watches its connections.
pub struct GrpcListener {
    pub listener: Listeners,
    pub common: ListenerCommon,
    pub gate: Gate,
    pub connection_metrics: ConnectionMetrics,
    pub deadlines: Deadlines,
    /// HTTP/2 PING interval, and how long an answer may take before the connection is closed.
    pub keepalive: (Duration, Duration),
    /// Calls one connection may have in progress at once (HTTP/2 streams).
    pub max_concurrent_streams: Option<u32>,
    /// What the listener serves, for the log ("Flight SQL", "OTLP").
    pub what: &'static str,
}

impl GrpcListener {
    /// Serve `service` until `cancel`, then finish in-flight calls (bounded by the caller's
    /// deadline).
    pub async fn serve<S>(self, service: S, cancel: CancellationToken, tracker: TaskTracker)
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<std::io::Result<GrpcConn>>(64);
        let deadlines = self.deadlines;
        let what = self.what;
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
                    let conn = GrpcConn { io, peer, activity: activity.clone(), _open: open };
                    if tx.send(Ok(conn)).await.is_err() {
                        return;
                    }
                    tokio::select! {
                        _ = &mut closed => {}
                        _ = deadlines.watch(&activity) => {
                            // tonic owns the connection: fail its IO, and it drops it.
                            activity.close();
                            if tokio::time::timeout(CLOSE_GRACE, closed).await.is_err() {
                                tracing::warn!(listener = %deadlines.listener, "a {what} connection closed for doing nothing is still open; its slot is given back");
                            }
                        }
                    }
                }
            },
        ));
        let (ping, ping_timeout) = self.keepalive;
        let served = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(ping))
            .http2_keepalive_timeout(Some(ping_timeout))
            .max_concurrent_streams(self.max_concurrent_streams)
            .add_service(service)
            .serve_with_incoming_shutdown(ReceiverStream::new(rx), cancel.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(listener = %self.common.name, error = %e, "{what} server failed");
        }
        let _ = accept.await;
    }
}

/// What a listener decides about each call around its service: before it (Flight SQL: who
/// runs it; `Err` is the answer instead) and after (OTLP: malformed messages counted and
/// their status put in OTLP's terms).
pub trait CallPolicy: Clone + Send + Sync + 'static {
    fn admit(
        &self,
        _req: &mut http::Request<Body>,
        _peer: Option<&GrpcPeer>,
    ) -> impl Future<Output = Result<(), tonic::Status>> + Send {
        async { Ok(()) }
    }

    fn answered(&self, resp: http::Response<Body>, _peer: Option<&GrpcPeer>) -> http::Response<Body> {
        resp
    }
}

/// The layer before a gRPC service: each call's request body held to a minimum rate, the call
/// in progress on its connection until its response ends, and the listener's [`CallPolicy`]
/// asked first and told of the answer (an async layer rather than tonic's interceptor, which
/// cannot wait, say, for a password check).
#[derive(Clone)]
pub struct Calls<S, A> {
    pub inner: S,
    pub policy: A,
    /// Counted when the policy refuses a call.
    pub refused: prometheus::IntCounter,
    /// Request messages held to a minimum rate, as HTTP request bodies are.
    pub deadlines: Deadlines,
}

impl<S: NamedService, A> NamedService for Calls<S, A> {
    const NAME: &'static str = S::NAME;
}

impl<S, A> Service<http::Request<Body>> for Calls<S, A>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    A: CallPolicy,
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
        let (policy, refused) = (self.policy.clone(), self.refused.clone());
        let peer = req.extensions().get::<GrpcPeer>().cloned();
        if let Some(p) = &peer {
            req = req.map(|body| Body::new(self.deadlines.min_rate(body, &p.activity)));
        }
        Box::pin(async move {
            let in_flight = peer.as_ref().map(|p| p.activity.request());
            if let Err(status) = policy.admit(&mut req, peer.as_ref()).await {
                refused.inc();
                if let Some(call) = in_flight {
                    call.refused();
                }
                return Ok(status.into_http());
            }
            let resp = policy.answered(inner.call(req).await?, peer.as_ref());
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
