//! `POST /v1/logs` with newline-delimited JSON, as Vector's `http` sink and Fluent Bit's `http`
//! output send it: one JSON object per line, decoded as the stream listeners decode JSON lines.
//! A body with a line that is not a JSON object is refused whole (400, naming the line) so a
//! client can fix and resend without duplicates.

use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde_json::json;

use super::{Body, HttpIngest, Received, json_response};
use crate::ingest::budget::Share;
use crate::ingest::decode::decode;
use crate::ingest::event::{Event, Format};
use crate::metrics::FormatCounts;

impl HttpIngest {
    pub(super) async fn ndjson(&self, body: Bytes, r: Received<'_>, held: &mut Share) -> Response<Body> {
        let mut builder = r.builder();
        let mut counts = FormatCounts::default();
        let mut exceeded = None;
        let decoded = decode_lines(&body, r.now, |ev| {
            if exceeded.is_some() {
                return;
            }
            counts.add(ev.format, ev.decode_error.is_some());
            builder.append(ev, r.now);
            exceeded = held.cover(body.len() + builder.bytes()).err();
        });
        if let (Ok(()), Some(e)) = (&decoded, exceeded) {
            return super::Refusal::exceeded(e).json();
        }
        if let Err(BadLine { line, reason }) = decoded {
            r.metrics.record(&FormatCounts::refused(Format::Raw, 1));
            tracing::info!(listener = %self.listener, peer = %r.from.addr, line, %reason, "NDJSON request refused: bad line");
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({ "error": format!("line {line}: {reason}"), "line": line }),
            );
        }
        match self.sink.store(&mut builder).await {
            Ok(rows) => {
                r.metrics.record(&counts);
                json_response(StatusCode::OK, json!({ "accepted": rows }))
            }
            Err(e) => super::Refusal::from(e).json(),
        }
    }
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
