//! `--protocol`: the same generated events over each protocol shippers speak, so their ingest
//! rates can be compared in one run. Every event carries the same message text (the
//! generated RFC 5424 line, `--event-bytes` long) whatever the protocol wraps it in:
//!
//! - `ndjson`: `POST /v1/logs`, `{"message": LINE}` per line;
//! - `otlp-http`: `POST /v1/logs`, an `ExportLogsServiceRequest` in protobuf, the line as a
//!   record's string body, one resource per request;
//! - `otlp-grpc`: the same message, `LogsService/Export` on the OTLP listener;
//! - `bulk`: `POST /_bulk`, `{"create":{}}` and `{"message": LINE}` per event;
//! - `loki`: `POST /loki/api/v1/push`, one stream per request, snappy protobuf;
//! - `hec`: `POST /services/collector/event`, `{"event": LINE}` objects back to back.
//!
//! Each connection sends `--batch` events per request, one request at a time (as a shipper
//! with one worker per connection does), over HTTP/1.1 keep-alive or one HTTP/2 connection
//! for gRPC. Request bodies are built before the clock starts, as the syslog corpus is.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// The stream listener (octet counting or LF, `--framing`).
    Syslog,
    Ndjson,
    OtlpHttp,
    OtlpGrpc,
    Bulk,
    Loki,
    Hec,
    /// RELP over TLS (`relp.rs`): at most 128 frames unanswered per connection.
    Relp,
}

/// The token the started daemon accepts for HEC.
pub const HEC_TOKEN: &str = "loadgen-hec-token";

/// One request: its path, headers and body.
pub struct Request {
    path: &'static str,
    content_type: &'static str,
    body: Bytes,
}

impl Request {
    /// Bytes of its body.
    pub fn len(&self) -> usize {
        self.body.len()
    }
}

/// The requests of one connection, `batch` events each.
pub fn requests(protocol: Protocol, lines: &[&str], batch: usize) -> Vec<Request> {
    lines.chunks(batch.max(1)).map(|chunk| request(protocol, chunk)).collect()
}

fn json_line(line: &str) -> String {
    serde_json::json!({ "message": line }).to_string()
}

fn request(protocol: Protocol, lines: &[&str]) -> Request {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    match protocol {
        Protocol::Syslog | Protocol::Relp => unreachable!("stream protocols are sent their framed corpus"),
        Protocol::Ndjson => {
            let mut body = String::new();
            for l in lines {
                body.push_str(&json_line(l));
                body.push('\n');
            }
            Request { path: "/v1/logs", content_type: "application/x-ndjson", body: body.into() }
        }
        Protocol::OtlpHttp | Protocol::OtlpGrpc => {
            let attr = |k: &str, v: &str| KeyValue {
                key: k.into(),
                value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
                ..Default::default()
            };
            let records = lines
                .iter()
                .map(|l| LogRecord {
                    time_unix_nano: now,
                    severity_number: 9,
                    body: Some(AnyValue { value: Some(any_value::Value::StringValue((*l).into())) }),
                    ..Default::default()
                })
                .collect();
            let req = ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    resource: Some(Resource {
                        attributes: vec![attr("service.name", "loadgen"), attr("host.name", "loadgen-host")],
                        ..Default::default()
                    }),
                    scope_logs: vec![ScopeLogs { log_records: records, ..Default::default() }],
                    ..Default::default()
                }],
            };
            let pb = req.encode_to_vec();
            if protocol == Protocol::OtlpHttp {
                return Request { path: "/v1/logs", content_type: "application/x-protobuf", body: pb.into() };
            }
            let mut framed = Vec::with_capacity(pb.len() + 5);
            framed.push(0);
            framed.extend_from_slice(&(pb.len() as u32).to_be_bytes());
            framed.extend_from_slice(&pb);
            Request {
                path: "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                content_type: "application/grpc",
                body: framed.into(),
            }
        }
        Protocol::Bulk => {
            let mut body = String::new();
            for l in lines {
                body.push_str("{\"create\":{\"_index\":\"loadgen\"}}\n");
                body.push_str(&json_line(l));
                body.push('\n');
            }
            Request { path: "/_bulk", content_type: "application/x-ndjson", body: body.into() }
        }
        Protocol::Loki => {
            // logproto.PushRequest by hand: streams=1 {labels=1, entries=2 {timestamp=1, line=2}}.
            fn field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
                out.push(tag << 3 | 2);
                varint(out, bytes.len() as u64);
                out.extend_from_slice(bytes);
            }
            fn varint(out: &mut Vec<u8>, mut n: u64) {
                while n >= 0x80 {
                    out.push((n as u8) | 0x80);
                    n >>= 7;
                }
                out.push(n as u8);
            }
            let mut stream = Vec::new();
            field(&mut stream, 1, br#"{job="loadgen", host="loadgen-host"}"#);
            let mut ts = vec![0x08];
            varint(&mut ts, now / 1_000_000_000);
            ts.push(0x10);
            varint(&mut ts, now % 1_000_000_000);
            for l in lines {
                let mut entry = Vec::new();
                field(&mut entry, 1, &ts);
                field(&mut entry, 2, l.as_bytes());
                field(&mut stream, 2, &entry);
            }
            let mut req = Vec::new();
            field(&mut req, 1, &stream);
            let body = snap::raw::Encoder::new().compress_vec(&req).unwrap_or_default();
            Request { path: "/loki/api/v1/push", content_type: "application/x-protobuf", body: body.into() }
        }
        Protocol::Hec => {
            let mut body = String::new();
            for l in lines {
                body.push_str(&serde_json::json!({ "event": l }).to_string());
            }
            Request { path: "/services/collector/event", content_type: "application/json", body: body.into() }
        }
    }
}

/// Send `requests` in order on one connection to `addr`, each answered before the next; the
/// wire bytes sent.
pub async fn send(
    protocol: Protocol,
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    requests: Vec<Request>,
) -> Result<usize> {
    let grpc = protocol == Protocol::OtlpGrpc;
    let mut tls = (*tls).clone();
    tls.alpn_protocols = vec![if grpc { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let stream = TlsConnector::from(Arc::new(tls)).connect(ServerName::try_from("localhost")?, tcp).await?;
    let io = TokioIo::new(stream);
    let mut bytes = 0;
    if grpc {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        for r in requests {
            bytes += r.body.len();
            let req = hyper::Request::post(format!("https://localhost{}", r.path))
                .header("content-type", r.content_type)
                .header("te", "trailers")
                .body(Full::new(r.body))?;
            let (parts, body) = sender.send_request(req).await?.into_parts();
            let trailers = body.collect().await?.trailers().cloned().unwrap_or_default();
            let status = parts.headers.get("grpc-status").or(trailers.get("grpc-status"));
            if status.map(|v| v.as_bytes()) != Some(b"0") {
                bail!("OTLP export failed: {parts:?} {trailers:?}");
            }
        }
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        for r in requests {
            bytes += r.body.len();
            let mut req = hyper::Request::post(r.path)
                .header("host", "localhost")
                .header("content-type", r.content_type);
            if protocol == Protocol::Hec {
                req = req.header("authorization", format!("Splunk {HEC_TOKEN}"));
            }
            let resp = sender.send_request(req.body(Full::new(r.body))?).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            if !status.is_success() {
                bail!("{} answered {status}: {}", r.path, String::from_utf8_lossy(&body));
            }
            if protocol == Protocol::Bulk && body.windows(14).any(|w| w == b"\"errors\":true") {
                bail!("_bulk items failed: {}", String::from_utf8_lossy(&body[..body.len().min(500)]));
            }
        }
    }
    Ok(bytes)
}

/// The daemon config lines the protocols need: an OTLP listener on an OS-chosen port and the
/// HEC token.
pub fn daemon_config() -> String {
    let digest: String =
        logwarden::crypto::sha256(HEC_TOKEN.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "tokens = [{{ name = \"loadgen\", sha256 = \"{digest}\" }}]\n[[otlp]]\nname = \"otlp\"\naddress = \"127.0.0.1:0\"\n"
    )
}

/// Where a protocol is sent.
pub fn listener(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Syslog => "syslog",
        Protocol::OtlpGrpc => "otlp",
        Protocol::Relp => "relp",
        _ => "http",
    }
}
