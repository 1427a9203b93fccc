//! HTTPS ingest: `POST /v1/logs` with a newline-delimited JSON body (optionally gzip, in one
//! member or several), as Vector's `http` sink and Fluent Bit's `http` output send it.
//!
//! The answer is 200 only once every event of the request is in the WAL and fsynced. A body with
//! a line that is not a JSON object is refused whole (400, naming the line) so a client can fix
//! and resend without duplicates; 413 above `max_body_bytes`; 503 with `Retry-After` while
//! storage is saturated, and when the disk write fails (full disk: nothing of the request is
//! kept, `Retry-After: 5`).

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::decode::decode;
use super::event::{Event, Format};
use super::listener::Peer;
use crate::batch::{EventBatchBuilder, Origin};
use crate::metrics::{FormatCounts, ListenerMetrics, Metrics};
use crate::serve::RequestBody;
use crate::store::{AppendError, Appender, StoreError};

pub struct HttpIngest {
    pub listener: String,
    pub max_body_bytes: usize,
    pub appender: Appender,
    pub listener_metrics: ListenerMetrics,
    pub metrics: Metrics,
    /// The template miner that stamps `template_id` (None: `[detect.templates]` is off).
    pub templates: Option<std::sync::Arc<crate::detect::templates::Shared>>,
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

impl HttpIngest {
    pub async fn handle(self: Arc<Self>, req: Request<RequestBody>, from: Arc<Peer>) -> Response<Body> {
        let resp = self.route(req, &from).await;
        self.metrics.http_requests.with_label_values(&[&self.listener, resp.status().as_str()]).inc();
        resp
    }

    async fn route(&self, req: Request<RequestBody>, from: &Peer) -> Response<Body> {
        match (req.method(), req.uri().path()) {
            (&Method::POST, "/v1/logs") => self.ingest(req, from).await,
            (_, "/v1/logs") => error(StatusCode::METHOD_NOT_ALLOWED, "use POST /v1/logs"),
            _ => error(StatusCode::NOT_FOUND, "not found; logs are accepted at POST /v1/logs"),
        }
    }

    async fn ingest(&self, req: Request<RequestBody>, from: &Peer) -> Response<Body> {
        let peer = from.addr;
        let limit = self.max_body_bytes;
        let too_large = || {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body exceeds max_body_bytes ({limit} bytes)"),
            )
        };
        let gzip = match req.headers().get(CONTENT_ENCODING).map(HeaderValue::to_str) {
            None | Some(Ok("identity")) => false,
            Some(Ok(v)) if v.eq_ignore_ascii_case("gzip") => true,
            Some(_) => {
                return error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "Content-Encoding must be gzip or identity",
                );
            }
        };
        let (body, _held) = match read_body(req.into_body(), limit, &self.bodies).await {
            Ok(b) => b,
            Err(BodyError::Busy) => {
                return unavailable("too many request bodies in progress on this listener; retry later");
            }
            Err(BodyError::TooLarge) => return too_large(),
            Err(BodyError::Read(e)) => {
                return error(StatusCode::BAD_REQUEST, &format!("failed to read the request body: {e}"));
            }
        };
        self.listener_metrics.bytes.inc_by(body.len() as u64);
        let body = if gzip {
            match inflate(&body, limit) {
                Ok(out) => Bytes::from(out),
                Err(InflateError::TooLarge) => return too_large(),
                Err(e @ InflateError::Gzip(_)) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
            }
        } else {
            body
        };

        let origin = Origin {
            listener: self.listener.as_str().into(),
            peer: peer.to_string().into(),
            client_id: from.client_id().into(),
        };
        let mut builder = EventBatchBuilder::new(origin);
        let mut counts = FormatCounts::default();
        let now = super::now_ns();
        let decoded = decode_lines(&body, now, |ev| {
            counts.add(ev.format, ev.decode_error.is_some());
            builder.append(ev, now);
        });
        if let Err(BadLine { line, reason }) = decoded {
            self.listener_metrics.record(&FormatCounts { decode_errors: [0, 0, 0, 1], ..Default::default() });
            tracing::info!(listener = %self.listener, %peer, line, %reason, "HTTP ingest request refused: bad line");
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({ "error": format!("line {line}: {reason}"), "line": line }),
            );
        }
        let rows = builder.len();
        if rows == 0 {
            return json_response(StatusCode::OK, json!({ "accepted": 0 }));
        }
        let batch = match builder
            .finish()
            .and_then(|b| crate::detect::templates::stamp(b, self.templates.as_deref()))
        {
            Ok(b) => b,
            Err(e) => {
                return error(StatusCode::INTERNAL_SERVER_ERROR, &format!("failed to build a batch: {e}"));
            }
        };
        let durable = match self.appender.try_append_durable(batch) {
            Ok(d) => d,
            Err(AppendError::Saturated) => return unavailable("storage is saturated; retry later"),
            Err(AppendError::Closed) => return unavailable("logwarden is shutting down"),
        };
        match durable.wait().await {
            Ok(()) => {
                self.listener_metrics.record(&counts);
                json_response(StatusCode::OK, json!({ "accepted": rows }))
            }
            // The WAL thread logs the failure itself, once per run of failures: a full disk
            // must not add a log line per request.
            Err(e) => {
                tracing::debug!(listener = %self.listener, %peer, error = %e, "events could not be made durable");
                match *e {
                    StoreError::Stopped => unavailable("logwarden is shutting down"),
                    StoreError::Wal(crate::store::wal::WalError::UploadBacklog { .. }) => unavailable_for(
                        "segments waiting for the bucket fill the local backlog; send the events again later",
                        STORAGE_RETRY_AFTER,
                    ),
                    _ => unavailable_for(
                        "the events could not be written to disk (storage full or failing); send them again later",
                        STORAGE_RETRY_AFTER,
                    ),
                }
            }
        }
    }
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

/// The first line of a body that is not a JSON object: its number (from 1) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub reason: String,
}

/// Decodes the lines of a newline-delimited JSON body received at `now`, in order, passing
/// each event to `each`; blank lines are skipped. Stops at the first line that is not a JSON
/// object: the caller refuses the whole body, so events already passed must be discarded.
pub fn decode_lines(body: &[u8], now: i64, mut each: impl FnMut(&Event<'_>)) -> Result<(), BadLine> {
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let ev = decode(line, now);
        if ev.format != Format::Json {
            let reason = ev.decode_error.as_deref().unwrap_or("not a JSON object").to_owned();
            return Err(BadLine { line: i + 1, reason });
        }
        each(&ev);
    }
    Ok(())
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

/// Seconds a client waits after a failed disk write: space seldom comes back within one.
const STORAGE_RETRY_AFTER: &str = "5";

fn unavailable(msg: &str) -> Response<Body> {
    unavailable_for(msg, "1")
}

fn unavailable_for(msg: &str, retry_after: &'static str) -> Response<Body> {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, msg);
    r.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static(retry_after));
    r
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
