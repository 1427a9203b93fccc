//! OpenTelemetry logs (OTLP): the records of an `ExportLogsServiceRequest` as events, for the
//! gRPC listener (`grpc.rs`) and `POST /v1/logs` (`ingest::http::otlp`).
//!
//! The mapping (also in the README):
//!
//! | OTLP | event |
//! |---|---|
//! | `time_unix_nano` (else `observed_time_unix_nano`) | `timestamp` (0 in both: the receive time) |
//! | `severity_number` 1-24 | `severity`: TRACE and DEBUG 7, INFO 6, WARN 4, ERROR 3, FATAL 2 |
//! | `severity_text` (when the number is 0) | `severity` by name (`warn`, `error`...) |
//! | resource `service.name` | `app` |
//! | resource `host.name` | `host` |
//! | resource `process.pid` | `procid` |
//! | `event_name` | `msgid` |
//! | `body` | `message`: a string as it is, any other value as JSON (bytes as base64) |
//! | `trace_id`, `span_id` | `trace_id`, `span_id`, lowercase hex |
//! | `attributes` | `fields`, one key each |
//! | other resource attributes, the scope, `severity_text`, `severity_number`, `flags` | `fields`: `resource`, `scope`, `severity_text`, `severity_number`, `flags` |
//!
//! A record is never dropped: a `trace_id` that is not 16 bytes (or a `span_id` not 8) is left
//! out of its column, kept in `fields` as hex and named in `decode_error`; the answer reports
//! such records as a warning in `partial_success` with no record rejected, as the OTLP
//! specification has a server do when it accepted everything.

pub mod grpc;

use std::borrow::Cow;
use std::ops::ControlFlow;

use base64::Engine as _;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use serde_json::{Map, Value};

use super::event::{Event, Format};
use crate::metrics::FormatCounts;

/// What decoding a request found, for the answer and the metrics.
#[derive(Debug, Default)]
pub struct Decoded {
    pub records: usize,
    pub counts: FormatCounts,
    /// Records kept with a defect (see `decode_error`), and the first defect.
    pub defective: usize,
    pub first_defect: Option<String>,
}

impl Decoded {
    /// The answer to a request whose records are all stored: `partial_success` carries a
    /// warning when some were kept with a defect, and is absent otherwise.
    pub fn response(&self) -> ExportLogsServiceResponse {
        ExportLogsServiceResponse {
            partial_success: self.first_defect.as_ref().map(|first| ExportLogsPartialSuccess {
                rejected_log_records: 0,
                error_message: format!(
                    "{} log record(s) kept with a defect (the first: {first}); see their decode_error",
                    self.defective
                ),
            }),
        }
    }
}

/// Passes every log record of `req` to `each` as an event, until `each` says to stop (a
/// request refused whole, which need not be decoded further: what a resource or scope holds
/// is copied into every record's event, so the events of one request can be far larger than
/// the request).
pub fn decode_request(
    req: &ExportLogsServiceRequest,
    mut each: impl FnMut(&Event<'_>) -> ControlFlow<()>,
) -> Decoded {
    let mut out = Decoded::default();
    for rl in &req.resource_logs {
        let resource = Resource::new(rl.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]));
        for sl in &rl.scope_logs {
            let scope = sl.scope.as_ref().and_then(|s| {
                let mut m = Map::new();
                if !s.name.is_empty() {
                    m.insert("name".into(), Value::String(s.name.clone()));
                }
                if !s.version.is_empty() {
                    m.insert("version".into(), Value::String(s.version.clone()));
                }
                if !s.attributes.is_empty() {
                    m.insert("attributes".into(), Value::Object(attributes(&s.attributes)));
                }
                (!m.is_empty()).then_some(Value::Object(m))
            });
            for record in &sl.log_records {
                let ev = event(record, &resource, scope.as_ref());
                out.records += 1;
                out.counts.add(Format::Otlp, ev.decode_error.is_some());
                if let Some(defect) = &ev.decode_error {
                    out.defective += 1;
                    out.first_defect.get_or_insert_with(|| defect.to_string());
                }
                if each(&ev).is_break() {
                    return out;
                }
            }
        }
    }
    out
}

/// A resource's attributes: those mapped to columns, and the rest for `fields`.
struct Resource {
    host: Option<String>,
    app: Option<String>,
    procid: Option<String>,
    rest: Option<Value>,
}

impl Resource {
    fn new(attrs: &[KeyValue]) -> Self {
        let (mut host, mut app, mut procid) = (None, None, None);
        let mut rest = Map::new();
        for kv in attrs {
            let v = kv.value.as_ref();
            match (kv.key.as_str(), v.and_then(|v| v.value.as_ref())) {
                ("host.name", Some(any_value::Value::StringValue(s))) if host.is_none() => {
                    host = Some(s.clone())
                }
                ("service.name", Some(any_value::Value::StringValue(s))) if app.is_none() => {
                    app = Some(s.clone())
                }
                ("process.pid", Some(any_value::Value::IntValue(n))) if procid.is_none() => {
                    procid = Some(n.to_string());
                }
                ("process.pid", Some(any_value::Value::StringValue(s))) if procid.is_none() => {
                    procid = Some(s.clone());
                }
                (key, _) => {
                    rest.insert(key.to_owned(), v.map_or(Value::Null, json));
                }
            }
        }
        Resource { host, app, procid, rest: (!rest.is_empty()).then_some(Value::Object(rest)) }
    }
}

/// OTLP severity numbers (1-24, four per level) as syslog severities.
fn severity(number: i32, text: &str) -> Option<u8> {
    match number {
        1..=8 => Some(7),
        9..=12 => Some(6),
        13..=16 => Some(4),
        17..=20 => Some(3),
        21..=24 => Some(2),
        _ => super::decode::json::severity_name(text.trim()),
    }
}

/// An id of `len` bytes as lowercase hex; `Err` names what is wrong with another length.
fn id(bytes: &[u8], len: usize, name: &str) -> Result<Option<String>, String> {
    match bytes.len() {
        0 => Ok(None),
        n if n == len && bytes.iter().any(|b| *b != 0) => Ok(Some(hex(bytes))),
        n if n == len => Ok(None),
        n => Err(format!("{name} is {n} bytes, not {len}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn event<'a>(r: &LogRecord, resource: &Resource, scope: Option<&Value>) -> Event<'a> {
    let mut fields = attributes(&r.attributes);
    let mut defects: Vec<String> = Vec::new();
    let mut ids = |bytes: &[u8], len, name: &str, fields: &mut Map<String, Value>| match id(bytes, len, name)
    {
        Ok(id) => id,
        Err(defect) => {
            fields.insert(name.to_owned(), Value::String(hex(bytes)));
            defects.push(defect);
            None
        }
    };
    let trace_id = ids(&r.trace_id, 16, "trace_id", &mut fields);
    let span_id = ids(&r.span_id, 8, "span_id", &mut fields);
    if let Some(rest) = &resource.rest {
        fields.insert("resource".into(), rest.clone());
    }
    if let Some(scope) = scope {
        fields.insert("scope".into(), scope.clone());
    }
    if !r.severity_text.is_empty() {
        fields.insert("severity_text".into(), Value::String(r.severity_text.clone()));
    }
    if r.severity_number != 0 {
        fields.insert("severity_number".into(), Value::from(r.severity_number));
    }
    if r.flags != 0 {
        fields.insert("flags".into(), Value::from(r.flags));
    }
    let time = if r.time_unix_nano != 0 { r.time_unix_nano } else { r.observed_time_unix_nano };
    let message = match r.body.as_ref().and_then(|b| b.value.as_ref()) {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(_) => r.body.as_ref().map_or(Value::Null, json).to_string(),
    };
    Event {
        format: Format::Otlp,
        timestamp: (time != 0).then(|| i64::try_from(time).unwrap_or(i64::MAX)),
        severity: severity(r.severity_number, &r.severity_text),
        facility: None,
        host: resource.host.clone().map(Cow::Owned),
        app: resource.app.clone().map(Cow::Owned),
        procid: resource.procid.clone().map(Cow::Owned),
        msgid: (!r.event_name.is_empty()).then(|| Cow::Owned(r.event_name.clone())),
        message: Cow::Owned(message),
        structured_data: None,
        fields: (!fields.is_empty()).then(|| Value::Object(fields).to_string()),
        decode_error: (!defects.is_empty()).then(|| Cow::Owned(defects.join("; "))),
        trace_id,
        span_id,
    }
}

/// Attributes as a JSON object (the last of a repeated key wins).
fn attributes(kvs: &[KeyValue]) -> Map<String, Value> {
    kvs.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, json))).collect()
}

/// An `AnyValue` as JSON: strings, booleans, integers and doubles as themselves (a double that
/// JSON cannot hold, NaN or infinite, as its text), arrays and key-value lists as arrays and
/// objects, bytes as base64, an empty value as null. Depth is bounded by the decoders (prost's
/// and serde_json's recursion limits).
fn json(v: &AnyValue) -> Value {
    match &v.value {
        None | Some(any_value::Value::StringValueStrindex(_)) => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(n)) => Value::from(*n),
        Some(any_value::Value::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or_else(|| Value::String(d.to_string()), Value::Number)
        }
        Some(any_value::Value::ArrayValue(a)) => Value::Array(a.values.iter().map(json).collect()),
        Some(any_value::Value::KvlistValue(kv)) => Value::Object(attributes(&kv.values)),
        Some(any_value::Value::BytesValue(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
    }
}

#[cfg(test)]
mod tests;
