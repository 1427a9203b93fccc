//! The Elasticsearch `_bulk` API, as Filebeat, Winlogbeat, Logstash, rsyslog's
//! `omelasticsearch` and the official clients send it, and what they probe first:
//!
//! - `GET /` and `HEAD /`: a version document (8.x), so clients that check the cluster's
//!   version and build flavour proceed;
//! - `POST|PUT /_bulk`, `POST|PUT /{index}/_bulk`: newline-delimited action and source lines.
//!   `index` and `create` store their document (an event: `@timestamp`, `message`, `log.level`,
//!   `host.name`, `service.name` and the other keys as the JSON decoder and the ECS names map
//!   them, the index and a given `_id` in `fields` as `_index` and `_id`); `delete` and
//!   `update` are refused per item (logwarden keeps what it was sent). A source line that is
//!   not a JSON object is refused per item with a `document_parsing_exception`, and the other
//!   items are stored. A malformed action line refuses the whole request (400), as
//!   Elasticsearch does: which line is which document is then unknown.
//!
//! Every answer carries `X-Elastic-Product: Elasticsearch`, which current clients require. The
//! per-item response is Elasticsearch's: 201 per stored item, `errors` true when any item
//! failed; the answer comes only once the stored items are fsynced. Clients treat 429 and
//! 5xx as retry-the-request (storage saturated), other 4xx per item as drop.

use std::borrow::Cow;
use std::ops::ControlFlow;
use std::time::Instant;

use bytes::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{Map, Value, json};

use super::{Body, HttpIngest, Received, Refusal, excerpt};
use crate::ingest::budget::Share;
use crate::ingest::decode::json::decode_object;
use crate::ingest::event::Format;
use crate::metrics::FormatCounts;

/// The version this API answers as: 8.x, which Filebeat, Logstash and the 8.x clients accept
/// without their compatibility settings.
const VERSION: &str = "8.17.0";

pub(super) fn product_header(r: &mut Response<Body>) {
    r.headers_mut().insert("x-elastic-product", HeaderValue::from_static("Elasticsearch"));
}

/// `GET /`: the cluster document clients read before sending.
pub(super) fn root(head: bool) -> Response<Body> {
    let doc = json!({
        "name": "logwarden",
        "cluster_name": "logwarden",
        "cluster_uuid": "bG9nd2FyZGVuLWxvZ3dhcg",
        "version": {
            "number": VERSION,
            "build_flavor": "default",
            "build_type": "tar",
            "build_hash": "logwarden",
            "build_date": "2026-01-01T00:00:00.000Z",
            "build_snapshot": false,
            "lucene_version": "9.12.0",
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0"
        },
        "tagline": "You Know, for Search"
    });
    let mut r = es_json(StatusCode::OK, &doc);
    if head {
        *r.body_mut() = Body::new(Bytes::new());
    }
    r
}

/// An Elasticsearch error document (`{"error":{"type","reason"},"status"}`).
pub(super) fn error(status: StatusCode, kind: &str, reason: &str) -> Response<Body> {
    es_json(
        status,
        &json!({ "error": { "root_cause": [{ "type": kind, "reason": reason }], "type": kind, "reason": reason }, "status": status.as_u16() }),
    )
}

pub(super) fn refusal(r: &Refusal) -> Response<Body> {
    let kind = match r.status {
        StatusCode::PAYLOAD_TOO_LARGE => "content_too_long_exception",
        StatusCode::SERVICE_UNAVAILABLE => "es_rejected_execution_exception",
        _ => "illegal_argument_exception",
    };
    // 429 is what Elasticsearch answers when it is saturated, and what every client retries.
    let status =
        if r.status == StatusCode::SERVICE_UNAVAILABLE { StatusCode::TOO_MANY_REQUESTS } else { r.status };
    let mut resp = r.with_retry_after(error(status, kind, &r.message));
    *resp.status_mut() = status;
    resp
}

fn es_json(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Body::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    product_header(&mut r);
    r
}

/// One action of a bulk body, and what became of it.
enum Item {
    /// Stored: its action (`index`/`create`), index and id.
    Stored { action: &'static str, index: String, id: String },
    Failed {
        action: String,
        index: String,
        id: Option<String>,
        status: u16,
        kind: &'static str,
        reason: String,
    },
}

/// Why a bulk body was refused whole.
#[derive(Debug)]
struct Malformed {
    line: usize,
    reason: String,
}

impl HttpIngest {
    pub(super) async fn bulk(
        &self,
        body: Bytes,
        default_index: Option<&str>,
        r: Received<'_>,
        held: &mut Share,
    ) -> Response<Body> {
        let started = Instant::now();
        if let Some(index) = default_index
            && let Err(reason) = valid_index(index)
        {
            return error(StatusCode::BAD_REQUEST, "invalid_index_name_exception", &reason);
        }
        let mut builder = r.builder();
        let mut counts = FormatCounts::default();
        let ids = IdSource::new();
        let mut exceeded = None;
        let parsed = parse(&body, default_index, &ids, |map| {
            let ev = decode_document(map);
            counts.add(ev.format, ev.decode_error.is_some());
            builder.append(&ev, r.now);
            exceeded = held.cover(body.len() + builder.bytes()).err();
            if exceeded.is_some() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        });
        if let Some(e) = exceeded {
            return refusal(&Refusal::exceeded(e));
        }
        let items = match parsed {
            Ok(items) => items,
            Err(Malformed { line, reason }) => {
                r.metrics.record(&FormatCounts::refused(Format::Json, 1));
                tracing::info!(listener = %self.listener, peer = %r.from.addr, line, %reason, "_bulk request refused: malformed action line");
                let reason = format!("Malformed action/metadata line [{line}]: {reason}");
                return error(StatusCode::BAD_REQUEST, "illegal_argument_exception", &reason);
            }
        };
        let failed = items.iter().filter(|i| matches!(i, Item::Failed { .. })).count();
        if failed > 0 {
            r.metrics.record(&FormatCounts::refused(Format::Json, failed as u64));
            tracing::debug!(listener = %self.listener, peer = %r.from.addr, failed, "_bulk items refused");
        }
        if let Err(e) = self.sink.store(&mut builder).await {
            return refusal(&Refusal::from(e));
        }
        r.metrics.record(&counts);
        let took = started.elapsed().as_millis() as u64;
        let mut r = Response::new(Body::new(Bytes::from(answer(took, failed > 0, items))));
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        product_header(&mut r);
        r
    }
}

/// The answer to a bulk request, written item by item: a document per item would take tens
/// of times the memory of the item's two lines of request.
fn answer(took: u64, errors: bool, items: Vec<Item>) -> Vec<u8> {
    let mut out = format!(r#"{{"took":{took},"errors":{errors},"items":["#).into_bytes();
    let mut seq = 0u64;
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let item = match item {
            Item::Stored { action, index, id } => {
                seq += 1;
                json!({ action: {
                    "_index": index, "_id": id, "_version": 1, "result": "created",
                    "_shards": { "total": 1, "successful": 1, "failed": 0 },
                    "_seq_no": seq - 1, "_primary_term": 1, "status": 201
                }})
            }
            Item::Failed { action, index, id, status, kind, reason } => {
                json!({ action: {
                    "_index": index, "_id": id, "status": status,
                    "error": { "type": kind, "reason": reason }
                }})
            }
        };
        // Writing a Value to a Vec does not fail.
        let _ = serde_json::to_writer(&mut out, &item);
    }
    out.extend_from_slice(b"]}");
    out
}

/// Longest index name Elasticsearch takes, in bytes.
const MAX_INDEX: usize = 255;

/// Elasticsearch's bound on an index name's length (each stored document carries its index).
fn valid_index(index: &str) -> Result<(), String> {
    if index.len() > MAX_INDEX {
        let head: String = index.chars().take(32).collect();
        return Err(format!(
            "Invalid index name [{head}...], index name is too long, ({} > {MAX_INDEX})",
            index.len()
        ));
    }
    Ok(())
}

/// Ids for documents sent without one: 20 characters like Elasticsearch's, unique per
/// request (a random prefix) and per item.
struct IdSource {
    prefix: u64,
    next: std::cell::Cell<u64>,
}

impl IdSource {
    fn new() -> Self {
        IdSource { prefix: rand::random(), next: std::cell::Cell::new(0) }
    }

    fn next(&self) -> String {
        use base64::Engine as _;
        let n = self.next.get();
        self.next.set(n + 1);
        let mut raw = [0u8; 15];
        raw[..8].copy_from_slice(&self.prefix.to_be_bytes());
        raw[8..].copy_from_slice(&n.to_be_bytes()[1..]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }
}

/// Walks a bulk body: each action line, and the source line after `index`, `create` and
/// `update`; `store` gets each document to keep, with `_index` (and a given `_id`) added, and
/// may stop the walk (the items are then those before).
fn parse(
    body: &[u8],
    default_index: Option<&str>,
    ids: &IdSource,
    mut store: impl FnMut(Map<String, Value>) -> ControlFlow<()>,
) -> Result<Vec<Item>, Malformed> {
    let mut items = Vec::new();
    let mut lines = body
        .split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix(b"\r").unwrap_or(l)))
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace));
    while let Some((n, line)) = lines.next() {
        let action: Map<String, Value> = serde_json::from_slice(line)
            .map_err(|e| Malformed { line: n, reason: format!("not a JSON object: {e}") })?;
        let mut entries = action.into_iter();
        let (Some((name, meta)), None) = (entries.next(), entries.next()) else {
            return Err(Malformed { line: n, reason: "an action line has exactly one key".into() });
        };
        let Value::Object(meta) = meta else {
            return Err(Malformed {
                line: n,
                reason: format!("the {} action's metadata is not an object", excerpt(&name)),
            });
        };
        let index = match meta.get("_index") {
            Some(Value::String(s)) => Some(s.as_str()),
            None => None,
            Some(_) => return Err(Malformed { line: n, reason: "_index is not a string".into() }),
        }
        .or(default_index);
        let given_id = match meta.get("_id") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            None | Some(Value::Null) => None,
            Some(_) => return Err(Malformed { line: n, reason: "_id is not a string".into() }),
        };
        let checked = match index {
            None => Err((
                "action_request_validation_exception",
                "Validation Failed: 1: index is missing;".to_owned(),
            )),
            Some(i) => valid_index(i).map(|()| i.to_owned()).map_err(|r| ("invalid_index_name_exception", r)),
        };
        let index = match checked {
            Ok(index) => index,
            // Elasticsearch fails such an item, not the request; its document is skipped.
            Err((kind, reason)) => {
                if name != "delete" {
                    lines.next();
                }
                items.push(Item::Failed {
                    action: name,
                    index: String::new(),
                    id: given_id,
                    status: 400,
                    kind,
                    reason,
                });
                continue;
            }
        };
        let action = match name.as_str() {
            "index" => "index",
            "create" => "create",
            "delete" | "update" => {
                if name == "update" {
                    lines.next();
                }
                items.push(Item::Failed {
                    action: name,
                    index,
                    id: given_id,
                    status: 400,
                    kind: "illegal_argument_exception",
                    reason: "logwarden keeps the events it was sent: delete and update are not supported"
                        .into(),
                });
                continue;
            }
            other => {
                return Err(Malformed {
                    line: n,
                    reason: format!(
                        "unknown action [{}]; expected index, create, delete or update",
                        excerpt(other)
                    ),
                });
            }
        };
        let Some((_, source)) = lines.next() else {
            return Err(Malformed {
                line: n + 1,
                reason: "the request ends before the document of the last action".into(),
            });
        };
        match serde_json::from_slice::<Map<String, Value>>(source) {
            Ok(mut doc) => {
                let id = match given_id {
                    Some(id) => {
                        doc.insert("_id".into(), Value::String(id.clone()));
                        id
                    }
                    None => ids.next(),
                };
                doc.insert("_index".into(), Value::String(index.clone()));
                let flow = store(doc);
                items.push(Item::Stored { action, index, id });
                if flow.is_break() {
                    break;
                }
            }
            Err(e) => items.push(Item::Failed {
                action: action.to_owned(),
                index,
                id: given_id,
                status: 400,
                kind: "document_parsing_exception",
                reason: format!("failed to parse: {e}"),
            }),
        }
    }
    Ok(items)
}

/// A document as an event: the JSON decoder's keys, then the Elastic Common Schema names
/// shippers use for the columns it left empty (the objects stay in `fields` as sent):
/// `host.name` (or `host.hostname`), `service.name` (or `process.name`,
/// `winlog.provider_name`), `log.level`, `process.pid`. The names are looked up in the
/// document before it is decoded, so `fields` is not parsed back.
fn decode_document(doc: Map<String, Value>) -> crate::ingest::event::Event<'static> {
    let path = |p: &str| -> Option<&Value> {
        let mut parts = p.split('.');
        let mut v = doc.get(parts.next()?)?;
        for part in parts {
            v = v.get(part)?;
        }
        Some(v)
    };
    let text = |p: &str| path(p).and_then(Value::as_str).map(str::to_owned);
    let host = text("host.name").or_else(|| text("host.hostname"));
    let app = text("service.name").or_else(|| text("process.name")).or_else(|| text("winlog.provider_name"));
    let severity = text("log.level").and_then(|l| crate::ingest::decode::json::severity_name(&l));
    let procid = path("process.pid").filter(|v| v.is_u64()).map(Value::to_string);
    let mut ev = decode_object(doc);
    ev.host = ev.host.or(host.map(Cow::Owned));
    ev.app = ev.app.or(app.map(Cow::Owned));
    ev.severity = ev.severity.or(severity);
    ev.procid = ev.procid.or(procid.map(Cow::Owned));
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parsed = (Result<Vec<Item>, Malformed>, Vec<Map<String, Value>>);

    fn run(body: &str) -> Parsed {
        let mut docs = Vec::new();
        let r = parse(body.as_bytes(), Some("fallback"), &IdSource::new(), |d| {
            docs.push(d);
            ControlFlow::Continue(())
        });
        (r, docs)
    }

    #[test]
    fn index_and_create_store_delete_and_update_fail_per_item() {
        let body = "{\"index\":{\"_index\":\"logs-a\",\"_id\":\"1\"}}\n{\"message\":\"one\"}\n\
                    {\"delete\":{\"_index\":\"logs-a\",\"_id\":\"1\"}}\n\
                    {\"create\":{}}\n{\"message\":\"two\"}\n\
                    {\"update\":{\"_id\":\"1\"}}\n{\"doc\":{\"x\":1}}\n\
                    {\"index\":{}}\n[1,2]\n";
        let (items, docs) = run(body);
        let items = items.unwrap();
        assert_eq!(items.len(), 5);
        assert!(
            matches!(&items[0], Item::Stored { action: "index", index, id } if index == "logs-a" && id == "1")
        );
        assert!(matches!(&items[1], Item::Failed { status: 400, action, .. } if action == "delete"));
        assert!(
            matches!(&items[2], Item::Stored { action: "create", index, id } if index == "fallback" && id.len() == 20)
        );
        assert!(matches!(&items[3], Item::Failed { action, .. } if action == "update"));
        assert!(matches!(&items[4], Item::Failed { kind: "document_parsing_exception", .. }));
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["_index"], "logs-a");
        assert_eq!(docs[0]["_id"], "1");
        assert_eq!(docs[1]["_index"], "fallback");
        assert!(docs[1].get("_id").is_none());
    }

    #[test]
    fn a_malformed_action_line_refuses_the_request() {
        for (body, line) in [
            ("{\"index\":{}}\n{\"m\":1}\nnot json\n{\"m\":2}\n", 3),
            ("{\"index\":{},\"create\":{}}\n{}\n", 1),
            ("{\"upsert\":{}}\n{}\n", 1),
            ("{\"index\":{}}\n", 2),
        ] {
            let (r, _) = run(body);
            assert_eq!(r.err().map(|m| m.line), Some(line), "{body:?}");
        }
    }

    #[test]
    fn action_names_in_errors_are_quoted_short() {
        let body = format!("{{\"{}\\nforged line\":{{}}}}\n{{}}\n", "a".repeat(1 << 16));
        let reason = run(&body).0.err().unwrap().reason;
        assert!(reason.len() < 200 && !reason.contains('\n'), "{reason}");
    }

    #[test]
    fn generated_ids_differ() {
        let ids = IdSource::new();
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        assert_eq!(a.len(), 20);
    }

    #[test]
    fn ecs_names_fill_the_columns() {
        let doc: Map<String, Value> = serde_json::from_str(
            r#"{"@timestamp":"2026-12-03T10:00:00Z","message":"m","host":{"name":"win-1"},"log":{"level":"warning"},"winlog":{"provider_name":"Security"},"process":{"pid":42}}"#,
        )
        .unwrap();
        let ev = decode_document(doc);
        assert_eq!(ev.host.as_deref(), Some("win-1"));
        assert_eq!(ev.app.as_deref(), Some("Security"));
        assert_eq!(ev.severity, Some(4));
        assert_eq!(ev.procid.as_deref(), Some("42"));
        assert!(ev.timestamp.is_some());
    }
}
