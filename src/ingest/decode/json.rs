//! JSON decoder: one JSON object per frame, as structured loggers (and log shippers) write.
//!
//! Well-known keys map to event columns (first usable alias wins); every other key, and any
//! mapped key whose value cannot be used (say `"level": "verbose"`), is kept in `fields` as a
//! JSON object, so no input is lost. Strings are owned: serde_json unescapes them.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::parse_rfc3339_prefix;
use crate::ingest::event::{Event, Format};

const TIMESTAMP_KEYS: &[&str] = &["timestamp", "@timestamp", "time", "ts"];
const SEVERITY_KEYS: &[&str] = &["level", "severity", "log_level"];
const MESSAGE_KEYS: &[&str] = &["message", "msg"];
const HOST_KEYS: &[&str] = &["host", "hostname"];
const APP_KEYS: &[&str] = &["app", "service", "appname"];
const PROCID_KEYS: &[&str] = &["pid", "procid"];

/// Decodes a frame holding one JSON object; anything else is returned as [`Event::raw`] with
/// the serde_json error as reason.
pub fn decode_json(line: &str) -> Event<'_> {
    match serde_json::from_str(line) {
        Ok(map) => decode_object(map),
        Err(e) => Event::raw(Cow::Borrowed(line), format!("json: {e}")),
    }
}

/// An event from a JSON object already parsed: well-known keys to columns, the rest to `fields`.
pub fn decode_object(map: Map<String, Value>) -> Event<'static> {
    decode_object_beside(map, Map::new())
}

/// [`decode_object`], with `beside` added to `fields` where the object has no key of the same
/// name (a protocol's envelope keys, such as HEC's `source` and `index`).
pub fn decode_object_beside(mut map: Map<String, Value>, beside: Map<String, Value>) -> Event<'static> {
    let timestamp = take(&mut map, TIMESTAMP_KEYS, timestamp);
    let severity = take(&mut map, SEVERITY_KEYS, severity);
    let facility = take(&mut map, &["facility"], |v| small_int(&v, 23).ok_or(v));
    let message = take(&mut map, MESSAGE_KEYS, |v| Ok(text(v)));
    let host = take(&mut map, HOST_KEYS, string);
    let app = take(&mut map, APP_KEYS, string);
    let procid = take(&mut map, PROCID_KEYS, |v| match v {
        Value::Number(n) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
        v => string(v),
    });
    for (k, v) in beside {
        map.entry(k).or_insert(v);
    }
    let fields = (!map.is_empty()).then(|| Value::Object(map).to_string());
    Event {
        format: Format::Json,
        timestamp,
        severity,
        facility,
        host: host.map(Cow::Owned),
        app: app.map(Cow::Owned),
        procid: procid.map(Cow::Owned),
        msgid: None,
        message: Cow::Owned(message.unwrap_or_default()),
        structured_data: None,
        fields,
        decode_error: None,
        trace_id: None,
        span_id: None,
    }
}

/// Removes the first of `keys` whose value `convert` accepts; a rejected value is put back
/// so that it lands in `fields`.
fn take<T>(
    map: &mut Map<String, Value>,
    keys: &[&str],
    convert: impl Fn(Value) -> Result<T, Value>,
) -> Option<T> {
    for &key in keys {
        if let Some(value) = map.remove(key) {
            match convert(value) {
                Ok(t) => return Some(t),
                Err(value) => {
                    map.insert(key.to_owned(), value);
                }
            }
        }
    }
    None
}

fn string(v: Value) -> Result<String, Value> {
    match v {
        Value::String(s) => Ok(s),
        v => Err(v),
    }
}

fn text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        v => v.to_string(),
    }
}

fn small_int(v: &Value, max: u64) -> Option<u8> {
    v.as_u64().filter(|n| *n <= max).and_then(|n| u8::try_from(n).ok())
}

fn severity(v: Value) -> Result<u8, Value> {
    let level = match &v {
        Value::String(s) => severity_name(s.trim()),
        v => small_int(v, 7),
    };
    level.ok_or(v)
}

pub(crate) fn severity_name(s: &str) -> Option<u8> {
    const NAMES: &[(&str, u8)] = &[
        ("emerg", 0),
        ("emergency", 0),
        ("panic", 0),
        ("alert", 1),
        ("crit", 2),
        ("critical", 2),
        ("fatal", 2),
        ("err", 3),
        ("error", 3),
        ("warn", 4),
        ("warning", 4),
        ("notice", 5),
        ("info", 6),
        ("informational", 6),
        ("debug", 7),
        ("trace", 7),
    ];
    let by_name = NAMES.iter().find(|(name, _)| name.eq_ignore_ascii_case(s));
    // Numeric strings ("3") come from shippers that stringify every value.
    by_name.map(|(_, level)| *level).or_else(|| s.parse::<u8>().ok().filter(|n| *n <= 7))
}

fn timestamp(v: Value) -> Result<i64, Value> {
    let ns = match &v {
        Value::String(s) => {
            let s = s.trim();
            match parse_rfc3339_prefix(s.as_bytes(), true) {
                Some(t) if t.len == s.len() => Some(t.ns),
                _ => epoch_ns(s),
            }
        }
        // Display keeps integers exact and writes floats in their shortest round-trip form,
        // which `epoch_ns` reads exactly.
        Value::Number(n) => epoch_ns(&n.to_string()),
        _ => None,
    };
    ns.ok_or(v)
}

/// A decimal epoch time (`1697062455`, `1697062455.123`, `1.697062455123e12`) to ns. The unit
/// follows the magnitude: below 1e11 seconds, below 1e14 milliseconds, below 1e17
/// microseconds, else nanoseconds (each cut-off is around the year 5000 in the smaller unit).
fn epoch_ns(s: &str) -> Option<i64> {
    const MANTISSA_CAP: i128 = 10i128.pow(30);
    let b = s.as_bytes();
    let (negative, mut i) = match b.first() {
        Some(b'-') => (true, 1),
        Some(b'+') => (false, 1),
        _ => (false, 0),
    };
    let mut mantissa: i128 = 0;
    let mut exp: i32 = 0;
    let mut seen_digit = false;
    let mut in_fraction = false;
    while let Some(&c) = b.get(i) {
        match c {
            b'0'..=b'9' => {
                seen_digit = true;
                if mantissa < MANTISSA_CAP {
                    mantissa = mantissa * 10 + i128::from(c - b'0');
                    exp -= i32::from(in_fraction);
                } else {
                    exp += i32::from(!in_fraction);
                }
            }
            b'.' if !in_fraction => in_fraction = true,
            _ => break,
        }
        i += 1;
    }
    if !seen_digit {
        return None;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        let e: i32 = s.get(i + 1..)?.parse().ok()?;
        exp = exp.checked_add(e)?;
    } else if i != b.len() {
        return None;
    }
    if mantissa == 0 {
        return Some(0);
    }
    let digits = i32::try_from(mantissa.ilog10()).ok()? + 1;
    // mantissa × 10^exp < 10^k exactly when digits + exp <= k.
    let magnitude = digits.checked_add(exp)?;
    let scale = match magnitude {
        ..=11 => 9,
        12..=14 => 6,
        15..=17 => 3,
        _ => 0,
    };
    let shift = exp + scale;
    let ns = if shift >= 0 {
        mantissa.checked_mul(10i128.checked_pow(u32::try_from(shift).ok()?)?)?
    } else {
        let div = u32::try_from(shift.checked_neg()?).ok()?;
        10i128.checked_pow(div).map_or(0, |d| mantissa / d)
    };
    let ns = i64::try_from(ns).ok()?;
    Some(if negative { -ns } else { ns })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_697_062_455;

    fn fields(e: &Event<'_>) -> Value {
        serde_json::from_str(e.fields.as_deref().unwrap_or("null")).unwrap()
    }

    #[test]
    fn common_shape() {
        let e = decode_json(
            r#"{"@timestamp":"2023-10-11T22:14:15.123Z","level":"WARN","message":"disk \"/\" 91%","host":"db-2","service":"pg","pid":4711,"user":"bob","n":3}"#,
        );
        assert_eq!(e.format, Format::Json);
        assert_eq!(e.timestamp, Some(SEC * 1_000_000_000 + 123_000_000));
        assert_eq!(e.severity, Some(4));
        assert_eq!(e.message, "disk \"/\" 91%");
        assert_eq!(e.host.as_deref(), Some("db-2"));
        assert_eq!(e.app.as_deref(), Some("pg"));
        assert_eq!(e.procid.as_deref(), Some("4711"));
        assert_eq!(fields(&e), serde_json::json!({"user": "bob", "n": 3}));
        assert_eq!(e.decode_error, None);
    }

    #[test]
    fn key_variants() {
        let e = decode_json(
            r#"{"time":"2023-10-11 22:14:15+02:00","severity":3,"msg":"m","hostname":"h","appname":"a","procid":"p1","facility":16}"#,
        );
        assert_eq!(e.timestamp, Some((SEC - 7200) * 1_000_000_000));
        assert_eq!((e.severity, e.facility), (Some(3), Some(16)));
        assert_eq!((e.message.as_ref(), e.host.as_deref()), ("m", Some("h")));
        assert_eq!((e.app.as_deref(), e.procid.as_deref()), (Some("a"), Some("p1")));
        assert_eq!(e.fields, None);
        let e = decode_json(r#"{"ts":1697062455,"app":"x"}"#);
        assert_eq!(e.timestamp, Some(SEC * 1_000_000_000));
        assert_eq!(e.message, "");
    }

    #[test]
    fn severity_names() {
        for (name, level) in [
            ("emerg", 0),
            ("Emergency", 0),
            ("PANIC", 0),
            ("alert", 1),
            ("crit", 2),
            ("critical", 2),
            ("Fatal", 2),
            ("err", 3),
            ("ERROR", 3),
            ("warn", 4),
            ("warning", 4),
            ("notice", 5),
            ("info", 6),
            ("informational", 6),
            ("debug", 7),
            ("TRACE", 7),
            ("5", 5),
        ] {
            let line = format!(r#"{{"level":"{name}"}}"#);
            let e = decode_json(&line);
            assert_eq!(e.severity, Some(level), "{name}");
            assert_eq!(e.fields, None);
        }
    }

    #[test]
    fn unusable_mapped_values_stay_in_fields() {
        let e = decode_json(
            r#"{"level":"verbose","severity":"info","facility":99,"time":"soon","host":7,"pid":1.5,"ts":0}"#,
        );
        assert_eq!(e.severity, Some(6));
        assert_eq!((e.facility, &e.host, &e.procid), (None, &None, &None));
        assert_eq!(e.timestamp, Some(0));
        assert_eq!(
            fields(&e),
            serde_json::json!({"level": "verbose", "facility": 99, "time": "soon", "host": 7, "pid": 1.5})
        );
        let e = decode_json(r#"{"level":8,"facility":-1}"#);
        assert_eq!((e.severity, e.facility), (None, None));
        assert_eq!(fields(&e), serde_json::json!({"level": 8, "facility": -1}));
    }

    #[test]
    fn epoch_magnitudes() {
        let ns = SEC * 1_000_000_000;
        for (ts, want) in [
            ("1697062455", ns),
            ("1697062455.5", ns + 500_000_000),
            ("1697062455123", ns + 123_000_000),
            ("1697062455123.5", ns + 123_500_000),
            ("1697062455123456", ns + 123_456_000),
            ("1697062455123456789", ns + 123_456_789),
            ("1.697062455e9", ns),
            ("1.697062455123E12", ns + 123_000_000),
            ("\"1697062455.25\"", ns + 250_000_000),
            ("\"1697062455123\"", ns + 123_000_000),
            ("-86400", -86_400_000_000_000),
            ("0.5", 500_000_000),
        ] {
            let line = format!(r#"{{"timestamp":{ts}}}"#);
            let e = decode_json(&line);
            assert_eq!(e.timestamp, Some(want), "{ts}");
        }
        for bad in ["1e300", "\"12x\"", "\"\"", "true", "99999999999999999999999"] {
            let line = format!(r#"{{"timestamp":{bad}}}"#);
            let e = decode_json(&line);
            assert_eq!(e.timestamp, None, "{bad}");
            assert!(e.fields.is_some(), "{bad}");
        }
    }

    #[test]
    fn non_string_messages_render_as_json() {
        let e = decode_json(r#"{"message":{"a":[1,2]},"msg":"second"}"#);
        assert_eq!(e.message, r#"{"a":[1,2]}"#);
        assert_eq!(fields(&e), serde_json::json!({"msg": "second"}));
        assert_eq!(decode_json(r#"{"msg":42}"#).message, "42");
    }

    #[test]
    fn non_objects_are_raw() {
        for line in ["{", "{\"a\":1} x", "[1,2]", "{\"a\":}", "{'a':1}"] {
            let e = decode_json(line);
            assert_eq!(e.format, Format::Raw, "{line}");
            assert_eq!(e.message, line);
            assert!(e.decode_error.as_deref().unwrap_or("").starts_with("json: "), "{line}");
        }
        let e = decode_json("[1]");
        assert_eq!(
            e.decode_error.as_deref(),
            Some("json: invalid type: sequence, expected a map at line 1 column 0")
        );
    }
}
