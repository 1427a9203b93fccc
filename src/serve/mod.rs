//! Front ends that answer requests: the admin HTTP endpoint, and the hyper plumbing shared with
//! HTTP ingest.

pub mod admin;
pub mod flight;
pub mod grpc;
pub mod timeouts;

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio_util::sync::CancellationToken;

use self::timeouts::{Activity, Deadlines, Expired, Watched};
use crate::ingest::listener::Io;

/// A request body as handlers read it: held to a minimum rate (see [`timeouts::MinRate`]).
pub type RequestBody = timeouts::MinRate<Incoming>;

/// How long an idle connection gets to take its leave (HTTP/2 GOAWAY) before it is dropped.
const GOODBYE: std::time::Duration = std::time::Duration::from_secs(1);

/// Serve HTTP/1.1 or HTTP/2 on one connection until it ends, `cancel` fires (then finish the
/// requests in flight and close) or one of its `deadlines` passes (then close it).
pub async fn serve_http<F, Fut>(io: Box<dyn Io>, cancel: CancellationToken, deadlines: &Deadlines, handler: F)
where
    F: Fn(Request<RequestBody>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let activity = Activity::new();
    let io = Watched::new(io, activity.clone());
    let requests = activity.clone();
    let body_deadlines = deadlines.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let h = handler.clone();
        let in_flight = requests.request();
        let req = req.map(|body| body_deadlines.min_rate(body, &requests));
        async move {
            let resp = h(req).await;
            drop(in_flight);
            Ok::<_, Infallible>(resp)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper enforces its HTTP/1.1 header timeout only with a timer; it covers each request head
    // after the first and the wait for it on a kept-alive connection. (The first request of
    // either protocol is `deadlines`' business: the auto builder waits for the first bytes
    // without a timeout.)
    builder.http1().timer(TokioTimer::new()).header_read_timeout(deadlines.first_request);
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        }
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
        why = deadlines.watch(&activity) => {
            if why == Expired::Idle {
                // Nothing in progress: HTTP/2 clients get a GOAWAY, so they do not send a
                // request into a closing connection.
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(GOODBYE, conn).await;
            }
        }
    }
}
