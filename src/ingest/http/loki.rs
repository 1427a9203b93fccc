//! Loki's push API, `POST /loki/api/v1/push`, as Grafana Alloy, Promtail, the Docker driver and
//! Loki client libraries send it: snappy-compressed protobuf (`logproto.PushRequest`, the
//! default) or JSON (`Content-Type: application/json`, optionally gzip).
//!
//! Each stream's labels map into the schema: `host` (or `hostname`) to `host`; `app` (else
//! `service_name`, `service`, `job`) to `app`; `level` (or `severity`, `detected_level`) to
//! `severity`; every label, and each entry's structured metadata, into `fields` (metadata
//! beside the labels; the tenant, `X-Scope-OrgID`, as `tenant`). The line is the message, kept
//! as sent (`format` `text`). Success is 204 once fsynced; a request that does not decode is
//! 400 (clients drop it), saturation 503 with `Retry-After` (they retry 429 and 5xx), all or
//! nothing.

use std::borrow::Cow;

use bytes::Bytes;
use hyper::{HeaderMap, Response, StatusCode};
use prost::Message as _;
use serde_json::{Map, Value};

use super::{Body, HttpIngest, Received, Refusal, excerpt};
use crate::ingest::budget::Share;
use crate::ingest::event::{Event, Format};
use crate::metrics::FormatCounts;

#[derive(Clone, PartialEq, prost::Message)]
struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    streams: Vec<StreamAdapter>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StreamAdapter {
    /// Prometheus-style `{name="value", ...}`.
    #[prost(string, tag = "1")]
    labels: String,
    #[prost(message, repeated, tag = "2")]
    entries: Vec<EntryAdapter>,
    #[prost(uint64, tag = "3")]
    hash: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    line: String,
    #[prost(message, repeated, tag = "3")]
    structured_metadata: Vec<LabelPair>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LabelPair {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Timestamp {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// One stream, whichever encoding it came in.
#[derive(Debug)]
struct Stream {
    labels: Vec<(String, String)>,
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    ns: i64,
    line: String,
    metadata: Vec<(String, String)>,
}

impl HttpIngest {
    pub(super) async fn loki(
        &self,
        body: Bytes,
        json: bool,
        headers: &HeaderMap,
        r: Received<'_>,
        held: &mut Share,
    ) -> Response<Body> {
        let decoded = if json { from_json(&body) } else { from_protobuf(&body, self.max_body_bytes) };
        let streams = match decoded {
            Ok(s) => s,
            Err(reason) => {
                r.metrics.record(&FormatCounts::refused(Format::Text, 1));
                tracing::info!(listener = %self.listener, peer = %r.from.addr, %reason, "Loki push refused: malformed");
                return Refusal::new(StatusCode::BAD_REQUEST, reason).text();
            }
        };
        let tenant = headers.get("x-scope-orgid").and_then(|v| v.to_str().ok());
        let mut builder = r.builder();
        let mut counts = FormatCounts::default();
        // A stream's labels are copied into each of its entries' rows.
        for stream in &streams {
            let columns = StreamColumns::of(stream, tenant);
            for entry in &stream.entries {
                let ev = columns.event(entry);
                counts.add(ev.format, false);
                builder.append(&ev, r.now);
                if let Err(e) = held.cover(body.len() + builder.bytes()) {
                    return Refusal::exceeded(e).text();
                }
            }
        }
        match self.sink.store(&mut builder).await {
            Ok(_) => {
                r.metrics.record(&counts);
                let mut resp = Response::new(Body::new(Bytes::new()));
                *resp.status_mut() = StatusCode::NO_CONTENT;
                resp
            }
            Err(e) => Refusal::from(e).text(),
        }
    }
}

fn from_protobuf(body: &[u8], limit: usize) -> Result<Vec<Stream>, String> {
    let len = snap::raw::decompress_len(body).map_err(|e| format!("not snappy-compressed protobuf: {e}"))?;
    if len > limit {
        return Err(format!(
            "the decompressed push request ({len} bytes) exceeds max_body_bytes ({limit} bytes)"
        ));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("not snappy-compressed protobuf: {e}"))?;
    let req = PushRequest::decode(raw.as_slice()).map_err(|e| format!("not a Loki PushRequest: {e}"))?;
    req.streams
        .into_iter()
        .map(|s| {
            let labels = parse_labels(&s.labels)?;
            let entries = s
                .entries
                .into_iter()
                .map(|e| Entry {
                    ns: e.timestamp.map_or(0, |t| {
                        t.seconds.saturating_mul(1_000_000_000).saturating_add(i64::from(t.nanos))
                    }),
                    line: e.line,
                    metadata: e.structured_metadata.into_iter().map(|p| (p.name, p.value)).collect(),
                })
                .collect();
            Ok(Stream { labels, entries })
        })
        .collect()
}

fn from_json(body: &[u8]) -> Result<Vec<Stream>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Push {
        streams: Vec<JsonStream>,
    }
    #[derive(serde::Deserialize)]
    struct JsonStream {
        #[serde(default)]
        stream: Map<String, Value>,
        values: Vec<Vec<Value>>,
    }
    let push: Push = serde_json::from_slice(body).map_err(|e| format!("not a Loki push request: {e}"))?;
    push.streams
        .into_iter()
        .map(|s| {
            let labels = s
                .stream
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(v) => Ok((k, v)),
                    v => Err(format!("label {} is not a string: {}", excerpt(&k), excerpt(&v.to_string()))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let entries = s
                .values
                .into_iter()
                .map(|v| {
                    let mut v = v.into_iter();
                    let (Some(Value::String(ts)), Some(Value::String(line))) = (v.next(), v.next()) else {
                        return Err("each value is [\"<unix ns>\", \"<line>\"(, {metadata})]".to_owned());
                    };
                    let ns = ts.parse::<i64>().map_err(|_| {
                        format!("timestamp {} is not nanoseconds since the epoch", excerpt(&ts))
                    })?;
                    let metadata = match v.next() {
                        None => Vec::new(),
                        Some(Value::Object(m)) => m
                            .into_iter()
                            .map(|(k, v)| match v {
                                Value::String(v) => Ok((k, v)),
                                v => Err(format!(
                                    "structured metadata {} is not a string: {}",
                                    excerpt(&k),
                                    excerpt(&v.to_string())
                                )),
                            })
                            .collect::<Result<_, _>>()?,
                        Some(other) => {
                            return Err(format!(
                                "structured metadata is not an object: {}",
                                excerpt(&other.to_string())
                            ));
                        }
                    };
                    if v.next().is_some() {
                        return Err("a value has more than three elements".into());
                    }
                    Ok(Entry { ns, line, metadata })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Stream { labels, entries })
        })
        .collect()
}

/// `{name="value", other="with \"quotes\""}` as pairs; Prometheus' label syntax, escapes `\\`,
/// `\"` and `\n` in values.
fn parse_labels(s: &str) -> Result<Vec<(String, String)>, String> {
    let bad = |why: &str| format!("labels {}: {why}", excerpt(s));
    let inner =
        s.trim().strip_prefix('{').and_then(|r| r.strip_suffix('}')).ok_or_else(|| bad("not in braces"))?;
    let mut out = Vec::new();
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let name_end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        let (name, after) = rest.split_at(name_end);
        if name.is_empty() {
            return Err(bad("a label has no name"));
        }
        let after = after.trim_start().strip_prefix('=').ok_or_else(|| bad("a name is not followed by ="))?;
        let mut chars =
            after.trim_start().strip_prefix('"').ok_or_else(|| bad("a value is not quoted"))?.char_indices();
        let mut value = String::new();
        loop {
            match chars.next() {
                None => return Err(bad("a value is not closed")),
                Some((_, '"')) => break,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => return Err(bad("unknown escape")),
                },
                Some((_, c)) => value.push(c),
            }
        }
        out.push((name.to_owned(), value));
        rest = chars.as_str().trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return Err(bad("labels are not separated by commas"));
        }
    }
    Ok(out)
}

/// What a stream gives each of its entries, worked out once per stream: the columns its labels
/// fill, and `fields` (the labels and the tenant) ready made for entries without metadata.
struct StreamColumns<'a> {
    host: Option<&'a str>,
    app: Option<&'a str>,
    severity: Option<u8>,
    fields: Map<String, Value>,
    fields_json: Option<String>,
    tenant: Option<&'a str>,
}

impl<'a> StreamColumns<'a> {
    fn of(stream: &'a Stream, tenant: Option<&'a str>) -> Self {
        let label = |names: &[&str]| {
            names.iter().find_map(|n| stream.labels.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str()))
        };
        let mut fields: Map<String, Value> =
            stream.labels.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        if let Some(t) = tenant {
            fields.insert("tenant".into(), Value::String(t.to_owned()));
        }
        StreamColumns {
            host: label(&["host", "hostname"]),
            app: label(&["app", "service_name", "service", "job"]),
            severity: label(&["level", "severity", "detected_level"])
                .and_then(crate::ingest::decode::json::severity_name),
            fields_json: (!fields.is_empty()).then(|| Value::Object(fields.clone()).to_string()),
            fields,
            tenant,
        }
    }

    /// An entry's event: its line and time, the stream's columns; its structured metadata
    /// beside the labels (over a label of the same name; the tenant over both).
    fn event<'e>(&'e self, entry: &'e Entry) -> Event<'e> {
        let fields = match entry.metadata.is_empty() {
            true => self.fields_json.clone(),
            false => {
                let mut fields = self.fields.clone();
                for (k, v) in &entry.metadata {
                    fields.insert(k.clone(), Value::String(v.clone()));
                }
                if let Some(t) = self.tenant {
                    fields.insert("tenant".into(), Value::String(t.to_owned()));
                }
                Some(Value::Object(fields).to_string())
            }
        };
        Event {
            timestamp: (entry.ns != 0).then_some(entry.ns),
            severity: self.severity,
            host: self.host.map(Cow::Borrowed),
            app: self.app.map(Cow::Borrowed),
            fields,
            ..Event::text(Cow::Borrowed(&entry.line))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_with_escapes() {
        let l = parse_labels(r#"{job="varlogs", host="web-1",msg="say \"hi\"\n", path="C:\\x"}"#).unwrap();
        let want = [("job", "varlogs"), ("host", "web-1"), ("msg", "say \"hi\"\n"), ("path", "C:\\x")];
        assert_eq!(l, want.map(|(a, b)| (a.to_owned(), b.to_owned())));
        assert_eq!(parse_labels("{}").unwrap(), []);
        for bad in ["job=\"x\"", "{job=x}", "{job=\"x}", "{=\"x\"}", "{a=\"1\" b=\"2\"}", "{a=\"\\q\"}"] {
            assert!(parse_labels(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_labels_are_quoted_short() {
        let hostile = format!("{{job=\"x\", {}\nlevel=error forged=\"", "a".repeat(1 << 20));
        let e = parse_labels(&hostile).unwrap_err();
        assert!(e.len() < 200 && !e.contains('\n'), "{}", &e[..e.len().min(300)]);
    }

    #[test]
    fn protobuf_and_json_decode_alike() {
        let req = PushRequest {
            streams: vec![StreamAdapter {
                labels: r#"{app="api", host="h1", level="warn", filename="/var/log/api.log"}"#.into(),
                entries: vec![EntryAdapter {
                    timestamp: Some(Timestamp { seconds: 1_700_000_000, nanos: 5 }),
                    line: "GET /x 200".into(),
                    structured_metadata: vec![LabelPair { name: "trace".into(), value: "abc".into() }],
                }],
                hash: 0,
            }],
        };
        let body = snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).unwrap();
        let p = from_protobuf(&body, 1 << 20).unwrap();
        let json =
            br#"{"streams":[{"stream":{"app":"api","host":"h1","level":"warn","filename":"/var/log/api.log"},
            "values":[["1700000000000000005","GET /x 200",{"trace":"abc"}]]}]}"#;
        let j = from_json(json).unwrap();
        for streams in [&p, &j] {
            let columns = StreamColumns::of(&streams[0], Some("team-a"));
            let ev = columns.event(&streams[0].entries[0]);
            assert_eq!(ev.timestamp, Some(1_700_000_000_000_000_005));
            assert_eq!(
                (ev.host.as_deref(), ev.app.as_deref(), ev.severity),
                (Some("h1"), Some("api"), Some(4))
            );
            assert_eq!(ev.message, "GET /x 200");
            let f: Value = serde_json::from_str(ev.fields.as_deref().unwrap()).unwrap();
            assert_eq!(f["filename"], "/var/log/api.log");
            assert_eq!(f["trace"], "abc");
            assert_eq!(f["tenant"], "team-a");
        }
    }

    #[test]
    fn bad_bodies_are_refused() {
        assert!(from_protobuf(b"\xff\xff\xff\xff\x0f", 1 << 20).is_err());
        // A snappy header announcing more than the limit is refused before decompressing.
        let big = snap::raw::Encoder::new().compress_vec(&vec![b'a'; 4096]).unwrap();
        assert!(from_protobuf(&big, 1024).unwrap_err().contains("exceeds max_body_bytes"));
        let garbage = snap::raw::Encoder::new().compress_vec(b"\x0a\x05{a=1}").unwrap();
        assert!(from_protobuf(&garbage, 1 << 20).is_err());
        for json in
            [&b"{}"[..], br#"{"streams":[{"values":[["x","y"]]}]}"#, br#"{"streams":[{"values":[[1,"y"]]}]}"#]
        {
            assert!(from_json(json).is_err(), "{}", String::from_utf8_lossy(json));
        }
    }
}
