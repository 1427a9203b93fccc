//! OTLP logs over HTTP: `POST /v1/logs` with an `ExportLogsServiceRequest` in protobuf
//! (`application/x-protobuf`) or in OTLP/JSON (`application/json`, told from an NDJSON body by
//! its first key, `resourceLogs`). The answer is in the request's encoding: an
//! `ExportLogsServiceResponse` once the records are fsynced, or a `google.rpc.Status` with 400
//! (malformed: exporters drop it), 413, or 503 with `Retry-After` (exporters retry).

use std::ops::ControlFlow;

use bytes::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use prost::Message as _;

use super::{Body, HttpIngest, Received, Refusal};
use crate::ingest::budget::Share;
use crate::ingest::event::Format;
use crate::metrics::FormatCounts;
use crate::serve::RequestBody;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    Protobuf,
    Json,
}

pub(super) fn is_protobuf(media_type: &str) -> bool {
    matches!(media_type, "application/x-protobuf" | "application/protobuf")
}

/// Whether a JSON body is one OTLP/JSON request rather than newline-delimited JSON: its first
/// key is `resourceLogs` (the only key OTLP defines, which exporters write first).
pub(super) fn is_otlp_json(body: &[u8]) -> bool {
    let rest = body.trim_ascii_start();
    let Some(rest) = rest.strip_prefix(b"{") else { return false };
    rest.trim_ascii_start().starts_with(b"\"resourceLogs\"")
}

/// `google.rpc.Status`, the body of OTLP/HTTP errors.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

impl HttpIngest {
    pub(super) async fn otlp(
        &self,
        req: Request<RequestBody>,
        enc: Encoding,
        r: Received<'_>,
    ) -> Response<Body> {
        match self.body(req, r.metrics).await {
            Ok((body, mut held)) => self.otlp_body(body, enc, r, &mut held).await,
            Err(refusal) => answer_error(&refusal, enc),
        }
    }

    pub(super) async fn otlp_body(
        &self,
        body: Bytes,
        enc: Encoding,
        r: Received<'_>,
        held: &mut Share,
    ) -> Response<Body> {
        let size = body.len();
        let req = match enc {
            Encoding::Protobuf => ExportLogsServiceRequest::decode(body).map_err(|e| e.to_string()),
            Encoding::Json => {
                serde_json::from_slice::<ExportLogsServiceRequest>(&body).map_err(|e| e.to_string())
            }
        };
        let req = match req {
            Ok(req) => req,
            Err(reason) => {
                r.metrics.record(&FormatCounts::refused(Format::Otlp, 1));
                tracing::info!(listener = %self.listener, peer = %r.from.addr, %reason, "OTLP request refused: malformed");
                let refusal =
                    Refusal::new(StatusCode::BAD_REQUEST, format!("not an OTLP logs request: {reason}"));
                return answer_error(&refusal, enc);
            }
        };
        let mut builder = r.builder();
        let mut exceeded = None;
        let decoded = crate::ingest::otlp::decode_request(&req, |ev| {
            builder.append(ev, r.now);
            exceeded = held.cover(size + builder.bytes()).err();
            if exceeded.is_some() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        });
        drop(req);
        if let Some(e) = exceeded {
            return answer_error(&Refusal::exceeded(e), enc);
        }
        match self.sink.store(&mut builder).await {
            Ok(_) => {
                r.metrics.record(&decoded.counts);
                let resp = decoded.response();
                match enc {
                    Encoding::Protobuf => answer(StatusCode::OK, resp.encode_to_vec(), enc),
                    Encoding::Json => answer(StatusCode::OK, response_json(&resp).into_bytes(), enc),
                }
            }
            Err(e) => answer_error(&Refusal::from(e), enc),
        }
    }
}

fn answer(status: StatusCode, body: Vec<u8>, enc: Encoding) -> Response<Body> {
    let mut r = Response::new(Body::new(Bytes::from(body)));
    *r.status_mut() = status;
    let ct = match enc {
        Encoding::Protobuf => "application/x-protobuf",
        Encoding::Json => "application/json",
    };
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

/// A refusal as `google.rpc.Status` (code: the gRPC equivalent of the HTTP status).
fn answer_error(refusal: &Refusal, enc: Encoding) -> Response<Body> {
    let code = match refusal.status {
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => tonic::Code::InvalidArgument,
        StatusCode::PAYLOAD_TOO_LARGE => tonic::Code::InvalidArgument,
        StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable,
        _ => tonic::Code::Internal,
    } as i32;
    let status = RpcStatus { code, message: refusal.message.clone() };
    let body = match enc {
        Encoding::Protobuf => status.encode_to_vec(),
        Encoding::Json => {
            serde_json::to_vec(&serde_json::json!({ "code": code, "message": refusal.message }))
                .unwrap_or_default()
        }
    };
    refusal.with_retry_after(answer(refusal.status, body, enc))
}

/// An `ExportLogsServiceResponse` in OTLP/JSON: fields at their default left out (as the
/// protobuf JSON mapping writes them), 64-bit integers as strings.
fn response_json(resp: &ExportLogsServiceResponse) -> String {
    let Some(p) = &resp.partial_success else { return "{}".into() };
    let mut partial = serde_json::Map::new();
    if p.rejected_log_records != 0 {
        partial.insert("rejectedLogRecords".into(), p.rejected_log_records.to_string().into());
    }
    if !p.error_message.is_empty() {
        partial.insert("errorMessage".into(), p.error_message.clone().into());
    }
    serde_json::json!({ "partialSuccess": partial }).to_string()
}
