//! The Splunk HTTP Event Collector, as universal and heavy forwarders (`httpout`), Splunk
//! logging libraries and appliances send it:
//!
//! - `POST /services/collector`, `/services/collector/event` (and `/1.0`): JSON event
//!   objects, several per body, one after another with or without newlines between them:
//!   `event` (a string, or an object decoded as a JSON log line), `time` (epoch seconds,
//!   fractions allowed), `host`, `source`, `sourcetype`, `index`, `fields` (indexed fields).
//!   `host` and `time` fill their columns; `source`, `sourcetype`, `index` and the indexed
//!   fields go to `fields`.
//! - `POST /services/collector/raw` (and `/1.0`): one event per line, with `host`, `source`,
//!   `sourcetype` and `index` from the query string.
//! - `GET /services/collector/health`: `{"text":"HEC is healthy","code":17}`.
//! - `POST /services/collector/ack`: indexer acknowledgement. A request that names a channel
//!   (`X-Splunk-Request-Channel` or `?channel=`) gets an `ackId`, counted per channel; since
//!   logwarden answers only once the events are fsynced, every `ackId` it hands out is
//!   already durable, and the ack endpoint says so (`true` for each id it issued on the
//!   channel; for a channel it does not know, issued before a restart, `true` as well).
//!
//! A token is required (`Authorization: Splunk <token>`, or basic auth with the token as
//! password), one of the listener's `tokens`. Errors carry Splunk's codes: 2 token required,
//! 3 invalid authorization, 4 invalid token, 5 no data, 6 invalid data format (with
//! `invalid-event-number`), 9 server busy (503, retried), 11 invalid data channel, 12 event
//! field required, 13 event field blank. A body with a bad event is refused whole.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Mutex;

use bytes::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{HeaderMap, Response, StatusCode};
use serde_json::{Map, Value, json};

use super::{Body, HttpIngest, Received, Refusal};
use crate::ingest::budget::Share;
use crate::ingest::decode::json::decode_object_beside;
use crate::ingest::event::{Event, Format};
use crate::metrics::FormatCounts;

/// Channels whose ack ids are counted at most; past it the counts start again (a forgotten
/// channel's ids are answered true, which they are).
const MAX_CHANNELS: usize = 65_536;
/// Longest channel id (Splunk's are GUIDs).
const MAX_CHANNEL: usize = 128;

/// Ack ids issued per channel.
#[derive(Default)]
pub struct Acks(Mutex<HashMap<String, u64>>);

impl Acks {
    fn issue(&self, channel: &str) -> u64 {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !m.contains_key(channel) && m.len() >= MAX_CHANNELS {
            m.clear();
        }
        let next = m.entry(channel.to_owned()).or_insert(0);
        *next += 1;
        *next - 1
    }

    fn durable(&self, channel: &str, id: u64) -> bool {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.get(channel).is_none_or(|next| id < *next)
    }
}

pub(super) fn answer(status: StatusCode, body: &Value) -> Response<Body> {
    let mut r = Response::new(Body::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=UTF-8"));
    r
}

pub(super) fn fail(status: StatusCode, code: u32, text: &str) -> Response<Body> {
    answer(status, &json!({ "text": text, "code": code }))
}

pub(super) fn refusal(r: &Refusal) -> Response<Body> {
    let (status, code) = match r.status {
        StatusCode::SERVICE_UNAVAILABLE => (StatusCode::SERVICE_UNAVAILABLE, 9),
        StatusCode::PAYLOAD_TOO_LARGE => (StatusCode::PAYLOAD_TOO_LARGE, 6),
        StatusCode::INTERNAL_SERVER_ERROR => (StatusCode::INTERNAL_SERVER_ERROR, 8),
        _ => (StatusCode::BAD_REQUEST, 6),
    };
    let mut resp = r.with_retry_after(fail(status, code, &r.message));
    *resp.status_mut() = status;
    resp
}

pub(super) fn health() -> Response<Body> {
    answer(StatusCode::OK, &json!({ "text": "HEC is healthy", "code": 17 }))
}

/// A channel id that is not plausible (answered with code 11).
pub(super) struct BadChannel;

impl BadChannel {
    pub(super) fn answer(&self) -> Response<Body> {
        fail(StatusCode::BAD_REQUEST, 11, "Invalid data channel")
    }
}

/// The request's channel: the header, else `?channel=`.
pub(super) fn channel(headers: &HeaderMap, query: Option<&str>) -> Result<Option<String>, BadChannel> {
    let from_header =
        headers.get("x-splunk-request-channel").map(|v| v.to_str().unwrap_or("\u{0}").to_owned());
    let ch = from_header.or_else(|| query_param(query, "channel"));
    match ch {
        Some(c)
            if c.is_empty()
                || c.len() > MAX_CHANNEL
                || !c.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
        {
            Err(BadChannel)
        }
        c => Ok(c),
    }
}

/// A query parameter, percent-decoded (`+` as space).
pub(super) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit() => {
                let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(b[i + 1]) << 4 | hex(b[i + 2]));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why an event body was refused: Splunk's code and text, and the event's number (from 0).
struct BadEvent {
    code: u32,
    text: &'static str,
    number: usize,
}

/// The envelope keys of an event object.
struct Envelope {
    time: Option<i64>,
    host: Option<String>,
    /// `source`, `sourcetype`, `index` and the indexed `fields`, for the `fields` column.
    extra: Map<String, Value>,
}

fn envelope(obj: &mut Map<String, Value>) -> Result<Envelope, ()> {
    let time = match obj.remove("time") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(secs_to_ns(&n.to_string()).ok_or(())?),
        Some(Value::String(s)) => Some(secs_to_ns(s.trim()).ok_or(())?),
        Some(_) => return Err(()),
    };
    let host = match obj.remove("host") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(v) => Some(v.to_string()),
    };
    let mut extra = Map::new();
    for key in ["source", "sourcetype", "index"] {
        if let Some(v) = obj.remove(key) {
            extra.insert(key.into(), v);
        }
    }
    if let Some(fields) = obj.remove("fields") {
        let Value::Object(fields) = fields else { return Err(()) };
        extra.extend(fields);
    }
    Ok(Envelope { time, host, extra })
}

/// Epoch seconds with an optional fraction (`1700000000.25`) as ns, exactly for plain decimals
/// (a double would round the nanoseconds), through a double for exponents.
fn secs_to_ns(s: &str) -> Option<i64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let plain = !int.is_empty()
        && int.trim_start_matches('-').bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit());
    if !plain {
        let f = s.parse::<f64>().ok().filter(|f| f.is_finite())?;
        return Some((f * 1e9).clamp(i64::MIN as f64, i64::MAX as f64) as i64);
    }
    let secs: i64 = int.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nanos: i64 = digits.parse().ok()?;
    let nanos = if int.starts_with('-') { -nanos } else { nanos };
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Passes the events of an `/event` body to `each`, in order, until it says to stop; how many
/// it passed, or the first bad one (the caller then discards those passed: a body is taken
/// whole or not at all).
fn events(body: &[u8], mut each: impl FnMut(&Event<'_>) -> ControlFlow<()>) -> Result<usize, BadEvent> {
    let mut number = 0;
    let mut stream = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    loop {
        let obj = match stream.next() {
            None => break,
            Some(Ok(Value::Object(o))) => o,
            Some(_) => return Err(BadEvent { code: 6, text: "Invalid data format", number }),
        };
        let mut obj = obj;
        let mut env =
            envelope(&mut obj).map_err(|()| BadEvent { code: 6, text: "Invalid data format", number })?;
        let mut ev = match obj.remove("event") {
            None | Some(Value::Null) => {
                return Err(BadEvent { code: 12, text: "Event field is required", number });
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                return Err(BadEvent { code: 13, text: "Event field cannot be blank", number });
            }
            Some(Value::String(s)) => Event::text(Cow::Owned(s)),
            // The event's own keys win over the envelope's.
            Some(Value::Object(o)) => decode_object_beside(o, std::mem::take(&mut env.extra)),
            Some(other) => Event::text(Cow::Owned(other.to_string())),
        };
        if env.time.is_some() {
            ev.timestamp = env.time;
        }
        if let Some(h) = env.host {
            ev.host = Some(Cow::Owned(h));
        }
        if !env.extra.is_empty() {
            ev.fields = Some(Value::Object(env.extra).to_string());
        }
        number += 1;
        if each(&ev).is_break() {
            break;
        }
    }
    if number == 0 {
        return Err(BadEvent { code: 5, text: "No data", number: 0 });
    }
    Ok(number)
}

impl HttpIngest {
    /// `/services/collector[/event]` (`raw` false) or `/services/collector/raw` (`raw` true).
    pub(super) async fn hec(
        &self,
        body: Bytes,
        raw: bool,
        query: Option<&str>,
        channel: Option<String>,
        r: Received<'_>,
        held: &mut Share,
    ) -> Response<Body> {
        let mut builder = r.builder();
        let mut counts = FormatCounts::default();
        let mut exceeded = None;
        // What a raw request's query string says is copied into each line's row.
        let each = |ev: &Event<'_>| {
            counts.add(ev.format, false);
            builder.append(ev, r.now);
            exceeded = held.cover(body.len() + builder.bytes()).err();
            if exceeded.is_some() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        };
        let passed = if raw { Ok(raw_events(&body, query, each)) } else { events(&body, each) };
        if let Some(e) = exceeded {
            return refusal(&Refusal::exceeded(e));
        }
        match passed {
            Ok(n) if n > 0 => {}
            Ok(_) => return fail(StatusCode::BAD_REQUEST, 5, "No data"),
            Err(BadEvent { code, text, number }) => {
                r.metrics.record(&FormatCounts::refused(Format::Json, 1));
                tracing::info!(listener = %self.listener, peer = %r.from.addr, code, reason = text, event = number, "HEC request refused");
                return answer(
                    StatusCode::BAD_REQUEST,
                    &json!({ "text": text, "code": code, "invalid-event-number": number }),
                );
            }
        }
        if let Err(e) = self.sink.store(&mut builder).await {
            return refusal(&Refusal::from(e));
        }
        r.metrics.record(&counts);
        match channel {
            Some(ch) => answer(
                StatusCode::OK,
                &json!({ "text": "Success", "code": 0, "ackId": self.acks.issue(&ch) }),
            ),
            None => answer(StatusCode::OK, &json!({ "text": "Success", "code": 0 })),
        }
    }

    /// `POST /services/collector/ack`: `{"acks":[ids]}` → `{"acks":{"id":bool}}`.
    pub(super) fn hec_ack(&self, body: &[u8], channel: Option<String>) -> Response<Body> {
        let Some(channel) = channel else {
            return fail(StatusCode::BAD_REQUEST, 10, "Data channel is missing");
        };
        #[derive(serde::Deserialize)]
        struct Query {
            acks: Vec<u64>,
        }
        let Ok(q) = serde_json::from_slice::<Query>(body) else {
            return fail(StatusCode::BAD_REQUEST, 6, "Invalid data format");
        };
        let acks: Map<String, Value> =
            q.acks.iter().map(|id| (id.to_string(), Value::Bool(self.acks.durable(&channel, *id)))).collect();
        answer(StatusCode::OK, &json!({ "acks": acks }))
    }
}

/// A raw body: one event per non-blank line, the query string's metadata on each, passed to
/// `each` until it says to stop; how many it passed.
fn raw_events(
    body: &[u8],
    query: Option<&str>,
    mut each: impl FnMut(&Event<'_>) -> ControlFlow<()>,
) -> usize {
    let host = query_param(query, "host");
    let mut extra = Map::new();
    for key in ["source", "sourcetype", "index"] {
        if let Some(v) = query_param(query, key) {
            extra.insert(key.into(), Value::String(v));
        }
    }
    let fields = (!extra.is_empty()).then(|| Value::Object(extra).to_string());
    let mut passed = 0;
    let lines = body
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace));
    for l in lines {
        let mut ev = Event::text(String::from_utf8_lossy(l));
        ev.host = host.as_deref().map(Cow::Borrowed);
        ev.fields = fields.clone();
        passed += 1;
        if each(&ev).is_break() {
            break;
        }
    }
    passed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(body: &[u8]) -> Result<Vec<Event<'static>>, BadEvent> {
        let mut out = Vec::new();
        super::events(body, |ev| {
            out.push(ev.clone().into_owned());
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    fn raw_events(body: &[u8], query: Option<&str>) -> Vec<Event<'static>> {
        let mut out = Vec::new();
        super::raw_events(body, query, |ev| {
            out.push(ev.clone().into_owned());
            ControlFlow::Continue(())
        });
        out
    }

    #[test]
    fn concatenated_events_with_and_without_newlines() {
        let body = br#"{"time":1700000000.5,"host":"fw-1","source":"/var/log/fw","sourcetype":"syslog","index":"net","event":"deny tcp 10.0.0.1","fields":{"site":"a"}}{"event":{"message":"login","level":"error","user":"bob"}}
        {"event":"third"}"#;
        let evs = events(body).ok().unwrap();
        assert_eq!(evs.len(), 3);
        assert_eq!(evs[0].timestamp, Some(1_700_000_000_500_000_000));
        assert_eq!(evs[0].host.as_deref(), Some("fw-1"));
        assert_eq!(evs[0].message, "deny tcp 10.0.0.1");
        assert_eq!(evs[0].format, Format::Text);
        let f: Value = serde_json::from_str(evs[0].fields.as_deref().unwrap()).unwrap();
        assert_eq!(f, json!({"source":"/var/log/fw","sourcetype":"syslog","index":"net","site":"a"}));
        assert_eq!(
            (evs[1].message.as_ref(), evs[1].severity, evs[1].format),
            ("login", Some(3), Format::Json)
        );
        assert_eq!(evs[2].message, "third");
    }

    #[test]
    fn bad_events_name_their_number_and_code() {
        let code = |b: &[u8]| events(b).err().map(|e| (e.code, e.number));
        assert_eq!(code(b""), Some((5, 0)));
        assert_eq!(code(br#"{"event":"a"}{"time":1}"#), Some((12, 1)));
        assert_eq!(code(br#"{"event":"a"}{"event":"  "}"#), Some((13, 1)));
        assert_eq!(code(br#"{"event":"a"}{"event":"b"}{"event":"#), Some((6, 2)));
        assert_eq!(code(br#"{"event":"a","time":"soon"}"#), Some((6, 0)));
        assert_eq!(code(br#"[1]"#), Some((6, 0)));
    }

    #[test]
    fn raw_lines_take_the_query_metadata() {
        let evs = raw_events(b"one\r\n\ntwo\n", Some("channel=x&host=h%201&sourcetype=access_combined"));
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].host.as_deref(), Some("h 1"));
        assert_eq!(evs[1].message, "two");
        assert!(evs[0].fields.as_deref().unwrap().contains("access_combined"));
    }

    #[test]
    fn times() {
        assert_eq!(secs_to_ns("1700000000.25"), Some(1_700_000_000_250_000_000));
        assert_eq!(secs_to_ns("1700000000"), Some(1_700_000_000_000_000_000));
        assert_eq!(secs_to_ns("1.7e9"), Some(1_700_000_000_000_000_000));
        assert_eq!(secs_to_ns("99999999999999999999"), None);
        assert_eq!(secs_to_ns("soon"), None);
    }

    #[test]
    fn acks_per_channel() {
        let a = Acks::default();
        assert_eq!((a.issue("c1"), a.issue("c1"), a.issue("c2")), (0, 1, 0));
        assert!(a.durable("c1", 1));
        assert!(!a.durable("c1", 2));
        assert!(a.durable("unknown", 7));
    }
}
