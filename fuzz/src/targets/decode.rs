//! The frame decoders (`ingest::decode`: RFC 5424, RFC 3164, JSON, raw) and the batch a
//! decoded event becomes.
//!
//! Input: one frame. It is decoded at several receive times (RFC 3164 guesses the year from
//! it), at the edges of the i64 range too. Invariants:
//! - decoding is total and deterministic;
//! - severity is at most 7 and facility at most 23; a raw event says why it is raw, and keeps
//!   the whole frame as its message;
//! - `structured_data` and `fields` are JSON objects;
//! - syslog messages are the tail of the frame, and for valid UTF-8 every text field borrows
//!   from the frame (nothing invented, nothing copied);
//! - RFC 5424: the event written back as RFC 5424 decodes to the same fields (structured data,
//!   escapes and repeated parameters included);
//! - JSON: every key of the object is either a column's alias or kept, with its value, in
//!   `fields`; at most one alias per column is taken;
//! - the event goes into a batch of the `logs` schema, and the template miner stamps it.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use logwarden::batch::{EventBatchBuilder, MESSAGE_INDEX, Origin, TEMPLATE_ID_INDEX};
use logwarden::detect::templates::Shared;
use logwarden::ingest::decode::decode;
use logwarden::ingest::event::{Event, Format};
use serde_json::{Map, Value};

/// 2023-10-11T00:00:00Z, then the edges.
const RECEIVED: [i64; 4] = [1_696_982_400_000_000_000, 0, i64::MIN, i64::MAX];

pub fn run(data: &[u8]) {
    for now in RECEIVED {
        let ev = decode(data, now);
        assert_eq!(ev, decode(data, now), "decoding is not deterministic");
        check(data, &ev);
        if now == RECEIVED[0] {
            check_batch(&ev, now);
        }
    }
}

/// The text the decoders see: one trailing CR dropped, invalid UTF-8 replaced.
fn text(frame: &[u8]) -> (Cow<'_, str>, &[u8]) {
    let frame = frame.strip_suffix(b"\r").unwrap_or(frame);
    (String::from_utf8_lossy(frame), frame)
}

fn check(data: &[u8], ev: &Event<'_>) {
    let (line, frame) = text(data);
    assert!(ev.severity.is_none_or(|s| s <= 7), "severity {:?}", ev.severity);
    assert!(ev.facility.is_none_or(|f| f <= 23), "facility {:?}", ev.facility);
    for (name, json) in [("structured_data", &ev.structured_data), ("fields", &ev.fields)] {
        if let Some(json) = json {
            let parsed: Result<Map<String, Value>, _> = serde_json::from_str(json);
            assert!(parsed.is_ok(), "{name} is not a JSON object: {json:?}");
        }
    }
    let valid_utf8 = matches!(line, Cow::Borrowed(_));
    match ev.format {
        Format::Raw => {
            assert!(ev.decode_error.is_some(), "a raw event without a reason");
            assert_eq!(ev.message, line, "a raw event lost part of its frame");
        }
        Format::Rfc5424 | Format::Rfc3164 => {
            assert!(line.ends_with(ev.message.as_ref()), "the message is not the tail of the frame");
            if ev.format == Format::Rfc5424 {
                round_trip_rfc5424(ev);
            }
        }
        Format::Json => {
            // The only note a JSON event carries is the UTF-8 repair.
            let note = (!valid_utf8).then_some("invalid UTF-8 replaced");
            assert_eq!(ev.decode_error.as_deref(), note, "a JSON event with another decode error");
            check_json(&line, ev);
        }
        // Only the protocol decoders (OTLP, Loki, HEC) make these; a frame never does.
        Format::Otlp | Format::Text => panic!("a frame decoded as {:?}", ev.format),
    }
    if valid_utf8 && ev.format != Format::Json {
        let fields =
            [Some(&ev.message), ev.host.as_ref(), ev.app.as_ref(), ev.procid.as_ref(), ev.msgid.as_ref()];
        for f in fields.into_iter().flatten().filter(|f| !f.is_empty()) {
            let Cow::Borrowed(s) = f else { panic!("{f:?} was copied, not borrowed from the frame") };
            let start = (s.as_ptr() as usize).wrapping_sub(frame.as_ptr() as usize);
            assert!(start <= frame.len() && start + s.len() <= frame.len(), "{s:?} is not part of the frame");
        }
    }
}

/// The event as an RFC 5424 frame. The message always gets a BOM, which the decoder drops, so
/// a message that itself starts with one keeps it.
fn rfc5424_line(ev: &Event<'_>) -> String {
    // A message that came without its PRI (loose senders) goes back without one.
    let pri = match (ev.facility, ev.severity) {
        (None, None) => String::new(),
        (f, s) => format!("<{}>", u16::from(f.unwrap_or(0)) * 8 + u16::from(s.unwrap_or(0))),
    };
    let ts = ev.timestamp.map_or_else(
        || "-".to_owned(),
        |ns| chrono::DateTime::from_timestamp_nanos(ns).format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string(),
    );
    let nil = |f: &Option<Cow<'_, str>>| f.as_deref().unwrap_or("-").to_owned();
    let sd = ev.structured_data.as_deref().map_or_else(|| "-".to_owned(), sd_text);
    let mut line =
        format!("{pri}1 {ts} {} {} {} {} {sd}", nil(&ev.host), nil(&ev.app), nil(&ev.procid), nil(&ev.msgid));
    if !ev.message.is_empty() {
        line.push_str(" \u{feff}");
        line.push_str(&ev.message);
    }
    // The decoder takes one trailing CR for the end of a CRLF frame, so a CR that is text
    // needs one after it, as a CRLF sender's frame has.
    if line.ends_with('\r') {
        line.push('\r');
    }
    line
}

/// `{"id":{"name":"v"|["v1","v2"]}}` back to `[id name="v"]...`.
fn sd_text(json: &str) -> String {
    let sd: Map<String, Value> = serde_json::from_str(json).expect("structured_data is JSON");
    let mut out = String::new();
    for (id, params) in &sd {
        out.push('[');
        out.push_str(id);
        let params = params.as_object().expect("an SD-ELEMENT is a JSON object");
        for (name, value) in params {
            let values = match value {
                Value::Array(vs) => {
                    assert!(vs.len() >= 2, "a repeated SD-PARAM with fewer than two values: {json}");
                    vs.iter().collect()
                }
                v => vec![v],
            };
            for v in values {
                let v = v.as_str().expect("SD-PARAM values are strings");
                out.push(' ');
                out.push_str(name);
                out.push_str("=\"");
                for c in v.chars() {
                    if matches!(c, '"' | '\\' | ']') {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
        out.push(']');
    }
    out
}

fn round_trip_rfc5424(ev: &Event<'_>) {
    let line = rfc5424_line(ev);
    let back = decode(line.as_bytes(), RECEIVED[0]);
    assert_eq!(back.format, Format::Rfc5424, "{line:?} does not decode as RFC 5424: {:?}", back.decode_error);
    let fields = |e: &Event<'_>| {
        (
            e.timestamp,
            e.severity,
            e.facility,
            e.host.as_deref().map(str::to_owned),
            e.app.as_deref().map(str::to_owned),
            e.procid.as_deref().map(str::to_owned),
            e.msgid.as_deref().map(str::to_owned),
            e.message.to_string(),
            e.structured_data.clone(),
        )
    };
    assert_eq!(fields(ev), fields(&back), "RFC 5424 round trip through {line:?}");
}

/// Column aliases, in the decoder's order of preference.
const ALIASES: &[&[&str]] = &[
    &["timestamp", "@timestamp", "time", "ts"],
    &["level", "severity"],
    &["facility"],
    &["message", "msg"],
    &["host", "hostname"],
    &["app", "service", "appname"],
    &["pid", "procid"],
];

fn check_json(line: &str, ev: &Event<'_>) {
    let input: Map<String, Value> =
        serde_json::from_str(line).expect("a JSON event's frame is a JSON object");
    let kept: Map<String, Value> = match &ev.fields {
        Some(f) => serde_json::from_str(f).expect("fields is a JSON object"),
        None => Map::new(),
    };
    assert!(ev.fields.is_none() || !kept.is_empty(), "fields present but empty");
    for (k, v) in &kept {
        let same = input.get(k).is_some_and(|i| same_value(i, v));
        assert!(same, "fields holds {k:?} = {v} where the input has {:?}", input.get(k));
    }
    for group in ALIASES {
        let taken = group.iter().filter(|k| input.contains_key(**k) && !kept.contains_key(**k)).count();
        assert!(taken <= 1, "more than one of {group:?} taken");
    }
    for k in input.keys() {
        let alias = ALIASES.iter().any(|g| g.contains(&k.as_str()));
        assert!(alias || kept.contains_key(k), "key {k:?} lost");
    }
    // Every column but the message, which is always set (empty without a key).
    let columns = [
        (ev.timestamp.is_some(), ALIASES[0]),
        (ev.severity.is_some(), ALIASES[1]),
        (ev.facility.is_some(), ALIASES[2]),
        (ev.host.is_some(), ALIASES[4]),
        (ev.app.is_some(), ALIASES[5]),
        (ev.procid.is_some(), ALIASES[6]),
    ];
    for (present, group) in columns {
        let taken = group.iter().any(|k| input.contains_key(*k) && !kept.contains_key(*k));
        assert_eq!(present, taken, "column of {group:?} set without a key taken, or the reverse");
    }
}

fn templates() -> &'static Arc<Shared> {
    static MINER: OnceLock<Arc<Shared>> = OnceLock::new();
    MINER.get_or_init(|| {
        // A path that does not exist: an empty miner, never saved.
        Shared::load(std::path::Path::new("/nonexistent/logwarden-fuzz/templates.json"), None)
            .expect("an empty template miner")
    })
}

fn check_batch(ev: &Event<'_>, now: i64) {
    let origin = Origin {
        listener: "fuzz".into(),
        peer: "127.0.0.1:1".into(),
        client_id: "".into(),
        protocol: logwarden::ingest::event::Protocol::Syslog,
    };
    let mut builder = EventBatchBuilder::new(origin);
    builder.append(ev, now);
    let batch = builder.finish().expect("one event makes a batch");
    assert_eq!(batch.schema(), logwarden::batch::schema(), "the batch is not in the logs schema");
    let batch = templates().stamp(batch).expect("the template miner stamps the batch");
    assert_eq!(batch.num_rows(), 1);
    let message = batch.column(MESSAGE_INDEX).as_any().downcast_ref::<arrow::array::StringArray>();
    assert_eq!(message.map(|m| m.value(0)), Some(ev.message.as_ref()), "the batch holds another message");
    assert!(batch.column(TEMPLATE_ID_INDEX).is_valid(0), "no template id stamped");
}

/// JSON values equal, numbers up to the last bits of an f64: a number with more digits than an
/// f64 holds is rounded when parsed, and serde_json's default parser rounds such a number's
/// text and its shortest re-printing to neighbouring f64s (not a loss the decoder adds).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            x == y || (x - y).abs() <= x.abs().max(y.abs()) * 1e-15
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}
