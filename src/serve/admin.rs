//! The admin endpoint: `/metrics` (Prometheus text format), `/healthz` (the process answers) and
//! `/readyz` (listeners bound and WAL replayed; not ready again once shutdown begins), over
//! plain HTTP or, with `[admin] tls = true`, HTTPS with the daemon's key.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use prometheus::Registry;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::timeouts::Deadlines;
use crate::config::ListenerCommon;
use crate::ingest::listener::{Gate, Listeners, accept_loop};
use crate::metrics::{self, ConnectionMetrics};
use crate::seal::Sealer;

/// Shared readiness flag.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Serve the admin endpoint until `cancel`: over the shared accept loop, so HTTPS, client
/// certificates, the connection limit and the handshake metrics work as on every listener.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    seal: Option<Arc<Sealer>>,
    listener: Listeners,
    cfg: ListenerCommon,
    gate: Gate,
    metrics: ConnectionMetrics,
    registry: Registry,
    ready: Readiness,
    deadlines: Deadlines,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let conn_cancel = cancel.clone();
    accept_loop(listener, cfg, gate, metrics, cancel, tracker, move |io, _peer| {
        let (registry, ready, cancel) = (registry.clone(), ready.clone(), conn_cancel.clone());
        let (deadlines, seal) = (deadlines.clone(), seal.clone());
        async move {
            super::serve_http(io, cancel, &deadlines, move |req| {
                let resp = answer(&req, &registry, &ready, seal.as_deref());
                async move { resp }
            })
            .await;
        }
    })
    .await;
}

fn answer<B>(
    req: &Request<B>,
    registry: &Registry,
    ready: &Readiness,
    seal: Option<&Sealer>,
) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => {
            text(StatusCode::OK, metrics::render(registry), "text/plain; version=0.0.4; charset=utf-8")
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
        "/readyz" if ready.get() => text(StatusCode::OK, "ready\n".into(), "text/plain"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into(), "text/plain"),
        // The newest signed checkpoint of the seal's chain, as one JSON line.
        "/seal/checkpoint" => match seal.map(Sealer::newest) {
            Some(Some(c)) => text(StatusCode::OK, c.to_line() + "\n", "application/json"),
            Some(None) => text(StatusCode::NOT_FOUND, "no checkpoint yet\n".into(), "text/plain"),
            None => {
                text(StatusCode::NOT_FOUND, "the seal is off ([seal] enabled = false)\n".into(), "text/plain")
            }
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz, /readyz or /seal/checkpoint\n".into(),
            "text/plain",
        ),
    }
}

fn text(status: StatusCode, body: String, ctype: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}
