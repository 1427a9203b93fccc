//! HTTPS ingest: every protocol shippers speak over HTTP, on one listener, told apart by
//! path and (on `/v1/logs`) Content-Type:
//!
//! | route | protocol | module |
//! |---|---|---|
//! | `POST /v1/logs`, `application/x-protobuf`, or `application/json` whose first key is `resourceLogs` | OTLP logs | `otlp` |
//! | `POST /v1/logs`, any other type (`application/x-ndjson`, `application/json`, none) | NDJSON | `ndjson` |
//! | `POST /_bulk`, `POST /{index}/_bulk` (or `PUT`); `GET /`, `HEAD /` | Elasticsearch | `elastic` |
//! | `POST /loki/api/v1/push` (snappy protobuf, or JSON) | Loki | `loki` |
//! | `/services/collector[/event\|/raw\|/health\|/ack]` | Splunk HEC | `hec` |
//!
//! Credentials in the `Authorization` header (`credentials`) say who sends, when the listener
//! has `tokens` or `users`; HEC always requires a token.
//!
//! What they share lives here: bodies read within `max_body_bytes` and the listener's budget of
//! bodies held at once (503 past it), `Content-Encoding: gzip` (every member of a concatenated
//! body; `max_body_bytes` bounds the inflated total), and [`Refusal`], the reasons a request is
//! not taken, which each protocol answers in its own shape. Events reach the WAL through
//! [`Sink`]: the answer is a success only once every event of the request is fsynced, and a
//! request is stored whole or not at all.

mod credentials;
mod elastic;
mod hec;
mod loki;
mod ndjson;
mod otlp;
mod refusals;

pub use credentials::Credentials;
use credentials::{AuthFailure, Presented};

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

use super::budget::{Budget, Exceeded, Share};
use super::event::Protocol;
use super::listener::Peer;
use super::sink::{Sink, StoreFailure};
use crate::audit::AuditEntry;
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
    /// What this listener's requests hold at once: their bodies as they are read, then the
    /// events decoded from them, until durable: `batch.max_pending_bytes`, and at least four
    /// of the largest bodies. Without a bound, clients that each send most of a large body and
    /// then trickle the rest could pin `max_connections` × `max_body_bytes` (and HTTP/2
    /// multiplies that by its streams), and a small body could decode to far more than itself
    /// (`ingest::budget`). Past it a request gets 503 and a Retry-After, or 413 when it alone
    /// would take more than the whole budget.
    pub bodies: Budget,
    /// The listener's `tokens` and `users`.
    pub credentials: Credentials,
    /// The `[access] send` rules, checked per request when the listener has credentials.
    pub access: Option<crate::access::SharedAccess>,
    /// Where refused credentials are recorded (`kind = 'authentication'`), as often as
    /// `refusals` lets them.
    pub audit: Option<crate::audit::Audit>,
    pub refusals: refusals::Refusals,
    /// HEC indexer acknowledgement ids issued per channel.
    pub acks: hec::Acks,
}

type Body = Full<Bytes>;

/// A request's context once its body is in hand.
#[derive(Clone, Copy)]
struct Received<'a> {
    from: &'a Peer,
    listener: &'a str,
    protocol: Protocol,
    metrics: &'a ListenerMetrics,
    /// Who sends it (the `client_id` column): the credentials' principal or the certificate's.
    client_id: &'a str,
    /// The receive time stamped on its events.
    now: i64,
}

impl Received<'_> {
    /// A builder for the request's events, with their origin.
    fn builder(&self) -> EventBatchBuilder {
        EventBatchBuilder::new(Origin {
            listener: self.listener.into(),
            peer: self.from.addr.to_string().into(),
            client_id: self.client_id.into(),
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

impl Refusal {
    /// A request whose events outgrew its share of the listener's budget.
    fn exceeded(e: Exceeded) -> Self {
        match e {
            Exceeded::Busy => Refusal::unavailable(
                "too many requests in progress on this listener hold its memory budget; retry later",
                1,
            ),
            Exceeded::TooLarge => Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request's events take more memory than this listener holds at once (batch.max_pending_bytes); send fewer per request",
            ),
        }
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

    fn received<'a>(&'a self, from: &'a Peer, protocol: Protocol, client_id: &'a str) -> Received<'a> {
        let i = PROTOCOLS.iter().position(|p| *p == protocol).unwrap_or(0);
        Received {
            from,
            listener: &self.listener,
            protocol,
            metrics: &self.protocol_metrics[i],
            client_id,
            now: super::now_ns(),
        }
    }

    async fn route(&self, req: Request<RequestBody>, from: &Peer) -> (Option<Protocol>, Response<Body>) {
        let Some(route) = Route::of(req.method(), req.uri().path(), req.headers()) else {
            let resp = match req.uri().path() {
                "/v1/logs" => error(StatusCode::METHOD_NOT_ALLOWED, "use POST /v1/logs"),
                _ => error(
                    StatusCode::NOT_FOUND,
                    "not found; logs are accepted at POST /v1/logs (NDJSON, OTLP), POST /_bulk, POST /loki/api/v1/push and POST /services/collector",
                ),
            };
            return (None, resp);
        };
        let protocol = route.protocol();
        if route == Route::HecHealth {
            return (Some(protocol), hec::health());
        }
        let client_id = match self.authorize(protocol, req.headers(), from).await {
            Ok(who) => who,
            Err(denied) => return (Some(protocol), self.unauthorized(protocol, &denied, from)),
        };
        let r = self.received(from, protocol, &client_id);
        let resp = match route {
            Route::EsRoot { head } => elastic::root(head),
            Route::HecHealth => hec::health(),
            Route::V1Logs { protobuf: true } => self.otlp(req, otlp::Encoding::Protobuf, r).await,
            Route::V1Logs { protobuf: false } => {
                // NDJSON (of any declared type) or OTLP/JSON: the body tells.
                let json = media_type(req.headers()) == "application/json";
                // The share is held until the answer, like every protocol's.
                let (body, mut held) = match self.body(req, r.metrics).await {
                    Ok(b) => b,
                    Err(refusal) => return (Some(Protocol::Ndjson), refusal.json()),
                };
                if json && otlp::is_otlp_json(&body) {
                    let r = self.received(from, Protocol::Otlp, &client_id);
                    let resp = self.otlp_body(body, otlp::Encoding::Json, r, &mut held).await;
                    return (Some(Protocol::Otlp), resp);
                }
                self.ndjson(body, r, &mut held).await
            }
            Route::Loki => {
                let json = media_type(req.headers()) == "application/json";
                let headers = req.headers().clone();
                match self.body(req, r.metrics).await {
                    Ok((body, mut held)) => self.loki(body, json, &headers, r, &mut held).await,
                    Err(refusal) => refusal.text(),
                }
            }
            Route::Bulk { index } => match self.body(req, r.metrics).await {
                Ok((body, mut held)) => self.bulk(body, index.as_deref(), r, &mut held).await,
                Err(refusal) => elastic::refusal(&refusal),
            },
            route @ (Route::HecEvent { .. } | Route::HecAck) => {
                let query = req.uri().query().map(str::to_owned);
                let channel = match hec::channel(req.headers(), query.as_deref()) {
                    Ok(c) => c,
                    Err(bad) => return (Some(protocol), bad.answer()),
                };
                match self.body(req, r.metrics).await {
                    Ok((body, mut held)) => match route {
                        Route::HecAck => self.hec_ack(&body, channel),
                        Route::HecEvent { raw } => {
                            self.hec(body, raw, query.as_deref(), channel, r, &mut held).await
                        }
                        _ => hec::health(),
                    },
                    Err(refusal) => hec::refusal(&refusal),
                }
            }
        };
        (Some(protocol), resp)
    }

    /// Who sends a request: the principal of the credentials in its `Authorization` header, or
    /// without one the client certificate's ("" for none). With credentials configured on the
    /// listener, the `[access] send` rules are checked here, per request (the accept loop left
    /// them to it); HEC requires a token in any case.
    async fn authorize(
        &self,
        protocol: Protocol,
        headers: &HeaderMap,
        from: &Peer,
    ) -> Result<String, Unauthorized> {
        let certificate = from.client_id().to_owned();
        let presented = Presented::from_headers(headers);
        if protocol == Protocol::SplunkHec && presented == Presented::None {
            return Err(Unauthorized::Missing);
        }
        if self.credentials.is_empty() && protocol != Protocol::SplunkHec {
            return Ok(certificate);
        }
        let method = match presented {
            Presented::None if !certificate.is_empty() => "certificate",
            ref p => p.method(),
        };
        // A token put where the user name goes is refused; it must not reach the audit trail.
        let user = match &presented {
            Presented::Basic { user, .. } if self.credentials.is_token(user) => None,
            p => p.claimed(),
        };
        let attempt = Attempt { method, user };
        let who = match self.credentials.check(presented, from.addr).await {
            Ok(Some(principal)) => principal,
            Ok(None) => certificate,
            Err(f) => return Err(Unauthorized::Failed(f, attempt)),
        };
        if !self.credentials.is_empty()
            && let Some(access) = &self.access
            && !access.load().may_send(Some(who.as_str()).filter(|w| !w.is_empty()), &self.listener)
        {
            return Err(Unauthorized::Denied(who, attempt));
        }
        Ok(who)
    }

    /// A refused request in the audit trail (see `refusals` for how often).
    fn audit_refusal(&self, why: &Unauthorized, reason: &'static str, from: &Peer) {
        let Some(audit) = &self.audit else { return };
        let (attempt, outcome, principal, text) = match why {
            Unauthorized::Missing => return,
            Unauthorized::Failed(f, attempt) => (attempt, "refused", attempt.user.clone(), f.to_string()),
            Unauthorized::Denied(who, attempt) => (
                attempt,
                "denied",
                Some(who.clone()).filter(|w| !w.is_empty()),
                "not allowed to send to this listener ([access] send rules)".to_owned(),
            ),
        };
        let Some(skipped) = self.refusals.note(from.addr.ip(), reason) else { return };
        let text = match skipped {
            0 => text,
            n => format!("{text} (and {n} more refusals for this from the address since its last row)"),
        };
        audit.record(AuditEntry {
            outcome: outcome.into(),
            principal,
            ..AuditEntry::authentication(&self.listener, &from.addr.to_string(), None, attempt.method, &text)
        });
    }

    /// A refused request's answer in its protocol's shape, counted and logged.
    fn unauthorized(&self, protocol: Protocol, why: &Unauthorized, from: &Peer) -> Response<Body> {
        let (status, reason) = match why {
            Unauthorized::Missing => (StatusCode::UNAUTHORIZED, "missing"),
            Unauthorized::Failed(AuthFailure::Limited(_), _) => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
            }
            Unauthorized::Failed(AuthFailure::Busy, _) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            Unauthorized::Failed(f, _) => (StatusCode::UNAUTHORIZED, f.label()),
            Unauthorized::Denied(..) => (StatusCode::FORBIDDEN, "denied"),
        };
        match why {
            Unauthorized::Denied(who, _) => {
                self.metrics.access_denied.with_label_values(&[&self.listener]).inc();
                tracing::warn!(listener = %self.listener, peer = %from.addr, principal = %who, "HTTP ingest request refused: the principal may not send to this listener ([access] send rules)");
            }
            _ => {
                self.metrics.ingest_auth_failures.with_label_values(&[&self.listener, reason]).inc();
                tracing::info!(listener = %self.listener, peer = %from.addr, reason, "HTTP ingest request refused: credentials");
            }
        }
        self.audit_refusal(why, reason, from);
        let message = match why {
            Unauthorized::Missing => "credentials are required".to_owned(),
            Unauthorized::Failed(f, _) => f.to_string(),
            Unauthorized::Denied(..) => "not allowed to send to this listener".to_owned(),
        };
        match protocol {
            Protocol::SplunkHec => {
                let (code, text) = match why {
                    Unauthorized::Missing => (2, "Token is required"),
                    Unauthorized::Failed(AuthFailure::Malformed(_), _) => (3, "Invalid authorization"),
                    Unauthorized::Failed(AuthFailure::Limited(_) | AuthFailure::Busy, _) => {
                        (9, "Server is busy")
                    }
                    Unauthorized::Failed(..) => (4, "Invalid token"),
                    Unauthorized::Denied(..) => (4, "Invalid token"),
                };
                let status = match code {
                    2 | 3 => StatusCode::UNAUTHORIZED,
                    9 => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::FORBIDDEN,
                };
                hec::fail(status, code, text)
            }
            Protocol::Elasticsearch => {
                let mut r = elastic::error(status, "security_exception", &message);
                if status == StatusCode::UNAUTHORIZED {
                    r.headers_mut().insert(
                        hyper::header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"security\" charset=\"UTF-8\", ApiKey"),
                    );
                }
                r
            }
            Protocol::Loki => Refusal::new(status, message).text(),
            _ => Refusal::new(status, message).json(),
        }
    }

    /// The request's body, inflated, with its share of the listener's budget (held until
    /// dropped: keep it until the answer, and grow it with the events decoded), and counted in
    /// `bytes_received_total`.
    async fn body(
        &self,
        req: Request<RequestBody>,
        metrics: &ListenerMetrics,
    ) -> Result<(Bytes, Share), Refusal> {
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
            Ok(out) => {
                let mut held = held;
                held.cover(out.len()).map_err(Refusal::exceeded)?;
                Ok((Bytes::from(out), held))
            }
            Err(InflateError::TooLarge) => Err(too_large()),
            Err(e @ InflateError::Gzip(_)) => Err(Refusal::new(StatusCode::BAD_REQUEST, e.to_string())),
        }
    }
}

/// What a request asks for, by method, path and Content-Type.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    /// `POST /v1/logs`: OTLP protobuf, or NDJSON / OTLP JSON (the body tells).
    V1Logs {
        protobuf: bool,
    },
    Loki,
    EsRoot {
        head: bool,
    },
    Bulk {
        index: Option<String>,
    },
    HecEvent {
        raw: bool,
    },
    HecHealth,
    HecAck,
}

impl Route {
    fn of(method: &Method, path: &str, headers: &HeaderMap) -> Option<Route> {
        let path = path.strip_suffix("/1.0").filter(|p| p.starts_with("/services/collector")).unwrap_or(path);
        Some(match (method, path) {
            (&Method::POST, "/v1/logs") => {
                Route::V1Logs { protobuf: otlp::is_protobuf(&media_type(headers)) }
            }
            (&Method::POST, "/loki/api/v1/push") => Route::Loki,
            (&Method::GET, "/") => Route::EsRoot { head: false },
            (&Method::HEAD, "/") => Route::EsRoot { head: true },
            (&Method::POST, "/services/collector" | "/services/collector/event") => {
                Route::HecEvent { raw: false }
            }
            (&Method::POST, "/services/collector/raw") => Route::HecEvent { raw: true },
            (&Method::GET, "/services/collector/health") => Route::HecHealth,
            (&Method::POST, "/services/collector/ack") => Route::HecAck,
            (&Method::POST | &Method::PUT, path) => {
                Route::Bulk { index: bulk_index(path)?.map(str::to_owned) }
            }
            _ => return None,
        })
    }

    fn protocol(&self) -> Protocol {
        match self {
            Route::V1Logs { protobuf: true } => Protocol::Otlp,
            Route::V1Logs { protobuf: false } => Protocol::Ndjson,
            Route::Loki => Protocol::Loki,
            Route::EsRoot { .. } | Route::Bulk { .. } => Protocol::Elasticsearch,
            Route::HecEvent { .. } | Route::HecHealth | Route::HecAck => Protocol::SplunkHec,
        }
    }
}

/// Why a request's sender was refused.
#[derive(Debug)]
enum Unauthorized {
    /// HEC without a token.
    Missing,
    Failed(AuthFailure, Attempt),
    /// The principal may not send to this listener.
    Denied(String, Attempt),
}

/// What refused credentials claimed, for the audit trail.
#[derive(Debug)]
struct Attempt {
    /// `token`, `basic`, `malformed`, `certificate` (nothing presented; a client certificate
    /// says who) or `none`.
    method: &'static str,
    /// The user a basic header named, unproved.
    user: Option<String>,
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
    budget: &Budget,
) -> Result<(Bytes, Share), BodyError> {
    let declared = body.size_hint().exact().and_then(|n| usize::try_from(n).ok());
    let mut buf = Vec::new();
    let mut held = budget.share();
    if declared.is_none_or(|n| n <= limit) {
        loop {
            let Some(frame) = body.frame().await else { return Ok((Bytes::from(buf), held)) };
            if let Ok(data) = frame.map_err(BodyError::Read)?.into_data() {
                if buf.len() + data.len() > limit {
                    break;
                }
                held.cover(buf.len() + data.len()).map_err(|_| BodyError::Busy)?;
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

/// Text from a request, for an error message and the log line that reports it: quoted and
/// escaped (a line break in it cannot start a forged log line) and cut short (a label or key
/// of megabytes is not written out again), `...` after the quotes when cut.
fn excerpt(s: &str) -> String {
    const MAX: usize = 64;
    let mut cut = s.char_indices().nth(MAX).map_or(s, |(i, _)| &s[..i]);
    if cut.len() == s.len() {
        cut = s;
    }
    let mut out = format!("{cut:?}");
    if cut.len() < s.len() {
        out.push_str("...");
    }
    out
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
    fn excerpts_are_escaped_and_short() {
        assert_eq!(excerpt("job"), "\"job\"");
        assert_eq!(excerpt("a\nFAKE log line"), "\"a\\nFAKE log line\"");
        let long = "é".repeat(1000);
        let e = excerpt(&long);
        assert!(e.len() < 200 && e.ends_with("\"...") && !e.contains('\n'), "{e}");
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
