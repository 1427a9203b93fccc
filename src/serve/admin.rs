//! The admin endpoint: `/metrics` (Prometheus text format), `/healthz` (the process answers) and
//! `/readyz` (listeners bound and WAL replayed; not ready again once shutdown begins).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics;

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

pub async fn run(
    listener: TcpListener,
    registry: Registry,
    ready: Readiness,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (tcp, _peer): (_, SocketAddr) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let registry = registry.clone();
        let ready = ready.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            super::serve_http(Box::new(tcp), cancel, move |req| {
                let resp = answer(&req, &registry, &ready);
                async move { resp }
            })
            .await;
        });
    }
}

fn answer<B>(req: &Request<B>, registry: &Registry, ready: &Readiness) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => {
            text(StatusCode::OK, metrics::render(registry), "text/plain; version=0.0.4; charset=utf-8")
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
        "/readyz" if ready.get() => text(StatusCode::OK, "ready\n".into(), "text/plain"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into(), "text/plain"),
        _ => {
            text(StatusCode::NOT_FOUND, "not found: try /metrics, /healthz or /readyz\n".into(), "text/plain")
        }
    }
}

fn text(status: StatusCode, body: String, ctype: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}
