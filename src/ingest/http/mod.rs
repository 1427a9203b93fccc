//! HTTPS ingest: every protocol shippers speak over HTTP, on one listener, told apart by
//! path and (on `/v1/logs`) Content-Type:
//!
//! | route | protocol | module |
//! |---|---|---|
//! | `POST /v1/logs`, `application/x-protobuf`, or `application/json` whose first key is `resourceLogs` | OTLP logs | `otlp` |
//! | `POST /v1/logs`, any other type (`application/x-ndjson`, `application/json`, none) | NDJSON | `ndjson` |
//! | `POST /_bulk`, `POST /{index}/_bulk` (or `PUT`); `GET /`, `HEAD /` | Elasticsearch | `elastic` |
//! | `POST /loki/api/v1/push` (snappy protobuf, or JSON) | Loki | `loki` |
//!
//! What they share lives here: bodies read within `max_body_bytes` and the listener's budget of
//! bodies held at once (503 past it), `Content-Encoding: gzip` (every member of a concatenated
//! body; `max_body_bytes` bounds the inflated total), and [`Refusal`], the reasons a request is
//! not taken, which each protocol answers in its own shape. Events reach the WAL through
//! [`Sink`]: the answer is a success only once every event of the request is fsynced, and a
//! request is stored whole or not at all.

mod elastic;
mod loki;
mod ndjson;
mod otlp;

pub use ndjson::{BadLine, decode_lines};

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::json;

use super::event::Protocol;
use super::listener::Peer;
use super::sink::{Sink, StoreFailure};
use crate::batch::{EventBatchBuilder, Origin};
use crate::metrics::{ListenerMetrics, Metrics};
use crate::serve::RequestBody;

/// The protocols an HTTP ingest listener speaks.
pub const PROTOCOLS: [Protocol; 4] =
    [Protocol::Ndjson, Protocol::Otlp, Protocol::Elasticsearch, Protocol::Loki];

pub struct HttpIngest {
    pub listener: String,
    pub max_body_bytes: usize,
    pub sink: Sink,
    /// One per protocol of [`PROTOCOLS`], in that order.
    pub protocol_metrics: Vec<ListenerMetrics>,
    pub metrics: Metrics,
    /// The request bodies this listener holds at once (being read, then until durable), in
    /// KiB: see [`body_budget`].
    pub bodies: Arc<tokio::sync::Semaphore>,
}

/// How many KiB of request bodies one HTTP listener holds at once: `batch.max_pending_bytes`,
/// and at least two of the largest bodies. Without a bound, clients that each send most of a
/// large body and then trickle the rest could pin `max_connections` × `max_body_bytes` (and
/// HTTP/2 multiplies that by its streams); past it a request gets 503 and a Retry-After.
pub fn body_budget(max_pending_bytes: u64, max_body_bytes: u64) -> Arc<tokio::sync::Semaphore> {
    let kib = max_pending_bytes.max(max_body_bytes.saturating_mul(2)).div_ceil(1024);
    let kib = usize::try_from(kib).unwrap_or(usize::MAX).min(tokio::sync::Semaphore::MAX_PERMITS);
    Arc::new(tokio::sync::Semaphore::new(kib))
}

type Body = Full<Bytes>;

/// A request's context once its body is in hand.
#[derive(Clone, Copy)]
struct Received<'a> {
    from: &'a Peer,
    listener: &'a str,
    protocol: Protocol,
    metrics: &'a ListenerMetrics,
    /// The receive time stamped on its events.
    now: i64,
}

impl Received<'_> {
    /// A builder for the request's events, with their origin.
    fn builder(&self) -> EventBatchBuilder {
        EventBatchBuilder::new(Origin {
            listener: self.listener.into(),
            peer: self.from.addr.to_string().into(),
            client_id: self.from.client_id().into(),
            protocol: self.protocol,
        })
    }
}

/// Why a request was not taken (none of its events were stored), before each protocol puts it
/// in its own shape.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
    /// Seconds, for `Retry-After`: the client should send the same request again.
    pub retry_after: Option<u32>,
}

impl Refusal {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal { status, message: message.into(), retry_after: None }
    }

    fn unavailable(message: impl Into<String>, retry_after: u32) -> Self {
        Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            retry_after: Some(retry_after),
        }
    }

    /// `{"error": message}` with the status (and `Retry-After`).
    fn json(&self) -> Response<Body> {
        self.with_retry_after(json_response(self.status, json!({ "error": self.message })))
    }

    /// The message as plain text with the status (and `Retry-After`), as Loki answers.
    fn text(&self) -> Response<Body> {
        let mut r = Response::new(Body::new(Bytes::from(format!("{}\n", self.message))));
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        self.with_retry_after(r)
    }

    fn with_retry_after(&self, mut r: Response<Body>) -> Response<Body> {
        *r.status_mut() = self.status;
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

impl From<StoreFailure> for Refusal {
    fn from(e: StoreFailure) -> Self {
        match e {
            StoreFailure::Batch(_) => Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            e => Refusal::unavailable(e.to_string(), e.retry_after()),
        }
    }
}

impl HttpIngest {
    pub async fn handle(self: Arc<Self>, req: Request<RequestBody>, from: Arc<Peer>) -> Response<Body> {
        let (protocol, resp) = self.route(req, &from).await;
        let protocol = protocol.map_or("none", Protocol::as_str);
        self.metrics
            .http_requests
            .with_label_values(&[&self.listener, protocol, resp.status().as_str()])
            .inc();
        resp
    }

    fn received<'a>(&'a self, from: &'a Peer, protocol: Protocol) -> Received<'a> {
        let i = PROTOCOLS.iter().position(|p| *p == protocol).unwrap_or(0);
        Received {
            from,
            listener: &self.listener,
            protocol,
            metrics: &self.protocol_metrics[i],
            now: super::now_ns(),
        }
    }

    async fn route(&self, req: Request<RequestBody>, from: &Peer) -> (Option<Protocol>, Response<Body>) {
        match (req.method(), req.uri().path()) {
            (&Method::POST, "/v1/logs") => {
                let ct = media_type(req.headers());
                if otlp::is_protobuf(&ct) {
                    let r = self.received(from, Protocol::Otlp);
                    return (Some(Protocol::Otlp), self.otlp(req, otlp::Encoding::Protobuf, r).await);
                }
                // NDJSON (of any declared type) or OTLP/JSON: the body tells.
                let ndjson = self.received(from, Protocol::Ndjson);
                let body = match self.body(req, ndjson.metrics).await {
                    Ok((body, _held)) => body,
                    Err(refusal) => return (Some(Protocol::Ndjson), refusal.json()),
                };
                if ct == "application/json" && otlp::is_otlp_json(&body) {
                    let r = self.received(from, Protocol::Otlp);
                    return (Some(Protocol::Otlp), self.otlp_body(body, otlp::Encoding::Json, r).await);
                }
                (Some(Protocol::Ndjson), self.ndjson(body, ndjson).await)
            }
            (_, "/v1/logs") => (None, error(StatusCode::METHOD_NOT_ALLOWED, "use POST /v1/logs")),
            (&Method::POST, "/loki/api/v1/push") => {
                let r = self.received(from, Protocol::Loki);
                let json = media_type(req.headers()) == "application/json";
                let headers = req.headers().clone();
                let resp = match self.body(req, r.metrics).await {
                    Ok((body, _held)) => self.loki(body, json, &headers, r).await,
                    Err(refusal) => refusal.text(),
                };
                (Some(Protocol::Loki), resp)
            }
            (&Method::GET, "/") => (Some(Protocol::Elasticsearch), elastic::root(false)),
            (&Method::HEAD, "/") => (Some(Protocol::Elasticsearch), elastic::root(true)),
            (&Method::POST | &Method::PUT, path) if bulk_index(path).is_some() => {
                let index = bulk_index(path).flatten().map(str::to_owned);
                let r = self.received(from, Protocol::Elasticsearch);
                let resp = match self.body(req, r.metrics).await {
                    Ok((body, _held)) => self.bulk(body, index.as_deref(), r).await,
                    Err(refusal) => elastic::refusal(&refusal),
                };
                (Some(Protocol::Elasticsearch), resp)
            }
            _ => (
                None,
                error(
                    StatusCode::NOT_FOUND,
                    "not found; logs are accepted at POST /v1/logs (NDJSON, OTLP), POST /_bulk and POST /loki/api/v1/push",
                ),
            ),
        }
    }

    /// The request's body, inflated, with its share of the listener's body budget (held until
    /// dropped: keep it until the answer), and counted in `bytes_received_total`.
    async fn body(
        &self,
        req: Request<RequestBody>,
        metrics: &ListenerMetrics,
    ) -> Result<(Bytes, Option<tokio::sync::OwnedSemaphorePermit>), Refusal> {
        let limit = self.max_body_bytes;
        let too_large = || {
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds max_body_bytes ({limit} bytes)"),
            )
        };
        let gzip = match req.headers().get(CONTENT_ENCODING).map(HeaderValue::to_str) {
            None | Some(Ok("identity")) => false,
            Some(Ok(v)) if v.eq_ignore_ascii_case("gzip") => true,
            Some(_) => {
                return Err(Refusal::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "Content-Encoding must be gzip or identity",
                ));
            }
        };
        let (body, held) = match read_body(req.into_body(), limit, &self.bodies).await {
            Ok(b) => b,
            Err(BodyError::Busy) => {
                return Err(Refusal::unavailable(
                    "too many request bodies in progress on this listener; retry later",
                    1,
                ));
            }
            Err(BodyError::TooLarge) => return Err(too_large()),
            Err(BodyError::Read(e)) => {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("failed to read the request body: {e}"),
                ));
            }
        };
        metrics.bytes.inc_by(body.len() as u64);
        if !gzip {
            return Ok((body, held));
        }
        match inflate(&body, limit) {
            Ok(out) => Ok((Bytes::from(out), held)),
            Err(InflateError::TooLarge) => Err(too_large()),
            Err(e @ InflateError::Gzip(_)) => Err(Refusal::new(StatusCode::BAD_REQUEST, e.to_string())),
        }
    }
}

/// `Some(None)` for `/_bulk`, `Some(Some(index))` for `/{index}/_bulk`, `None` for any other
/// path. An index name has no `/` and is not empty.
fn bulk_index(path: &str) -> Option<Option<&str>> {
    let rest = path.strip_suffix("/_bulk")?;
    match rest.strip_prefix('/') {
        None if rest.is_empty() => Some(None),
        Some(index) if !index.is_empty() && !index.contains('/') => Some(Some(index)),
        _ => None,
    }
}

/// The media type of a request, lowercase, without parameters (`application/json; charset=utf-8`
/// is `application/json`); empty when there is none.
fn media_type(headers: &HeaderMap) -> String {
    let ct = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Why a gzip body was refused.
#[derive(Debug, thiserror::Error)]
pub enum InflateError {
    #[error("inflated body exceeds max_body_bytes")]
    TooLarge,
    #[error("invalid gzip body: {0}")]
    Gzip(#[source] std::io::Error),
}

/// A `Content-Encoding: gzip` body inflated: every gzip member, one after another (`cat a.gz
/// b.gz`, streaming compressors), or `TooLarge` as soon as the inflated total passes `limit`
/// bytes (a small body may inflate to gigabytes, so the output is bounded while inflating,
/// and a bomb split across members is refused too); invalid when what follows a member is
/// not another member.
pub fn inflate(body: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    let mut out = Vec::new();
    let mut dec = flate2::read::MultiGzDecoder::new(body).take(limit as u64 + 1);
    dec.read_to_end(&mut out).map_err(InflateError::Gzip)?;
    if out.len() > limit {
        return Err(InflateError::TooLarge);
    }
    Ok(out)
}

enum BodyError {
    TooLarge,
    /// The listener holds its budget of request bodies.
    Busy,
    Read(Box<dyn std::error::Error + Send + Sync>),
}

/// How much of an oversize body is read and discarded so that the client, still sending, sees
/// the 413 instead of a reset connection (what nginx calls a lingering close).
const DISCARD_BYTES: usize = 64 << 20;
const DISCARD_TIME: Duration = Duration::from_secs(10);

/// The whole body, and its share of the listener's `budget` (held until dropped), or
/// `TooLarge` once it passes `limit`, or `Busy` when the budget is spent.
async fn read_body(
    mut body: RequestBody,
    limit: usize,
    budget: &Arc<tokio::sync::Semaphore>,
) -> Result<(Bytes, Option<tokio::sync::OwnedSemaphorePermit>), BodyError> {
    let declared = body.size_hint().exact().and_then(|n| usize::try_from(n).ok());
    let mut buf = Vec::new();
    let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
    if declared.is_none_or(|n| n <= limit) {
        loop {
            let Some(frame) = body.frame().await else { return Ok((Bytes::from(buf), held)) };
            if let Ok(data) = frame.map_err(BodyError::Read)?.into_data() {
                if buf.len() + data.len() > limit {
                    break;
                }
                let need = (buf.len() + data.len()).div_ceil(1024);
                let have = held.as_ref().map_or(0, tokio::sync::OwnedSemaphorePermit::num_permits);
                if need > have {
                    let more = u32::try_from(need - have).map_err(|_| BodyError::Busy)?;
                    let p = budget.clone().try_acquire_many_owned(more).map_err(|_| BodyError::Busy)?;
                    match &mut held {
                        Some(h) => h.merge(p),
                        None => held = Some(p),
                    }
                }
                buf.extend_from_slice(&data);
            }
        }
    }
    // Refused already: the drain has its own bounds, and a slow client must get its 413.
    let mut body = body.into_inner();
    let mut discarded = 0usize;
    let _ = tokio::time::timeout(DISCARD_TIME, async {
        while discarded < DISCARD_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => discarded += frame.data_ref().map_or(0, Bytes::len),
                _ => break,
            }
        }
    })
    .await;
    Err(BodyError::TooLarge)
}

fn json_response(status: StatusCode, v: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, msg: &str) -> Response<Body> {
    json_response(status, json!({ "error": msg }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn member(text: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn every_member_is_read() {
        let mut body = member(b"a\n");
        body.extend(member(b""));
        body.extend(member(b"b\nc\n"));
        assert_eq!(inflate(&body, 100).ok(), Some(b"a\nb\nc\n".to_vec()));
    }

    #[test]
    fn the_limit_counts_all_members() {
        let body: Vec<u8> = (0..3).flat_map(|_| member(&[b'x'; 1000])).collect();
        assert_eq!(inflate(&body, 3000).map(|o| o.len()).ok(), Some(3000));
        assert!(matches!(inflate(&body, 2999), Err(InflateError::TooLarge)));
    }

    #[test]
    fn trailing_bytes_and_truncation_are_invalid() {
        let mut body = member(b"a\n");
        body.extend_from_slice(b"junk");
        assert!(matches!(inflate(&body, 100), Err(InflateError::Gzip(_))));
        let body = member(b"abcdef");
        assert!(matches!(inflate(&body[..body.len() - 3], 100), Err(InflateError::Gzip(_))));
    }
}
