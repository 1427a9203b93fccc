//! OTLP logs: the OpenTelemetry Python SDK's exporters (gRPC and HTTP/protobuf, gzip, over TLS)
//! against the real daemon, and hand-made requests for what no SDK sends: truncated protobuf,
//! oversize and undecodable messages, OTLP/JSON beside NDJSON on the same path.

use std::process::Command;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message as _;
use serde_json::Value;

use crate::client::{grpc_call, post};
use crate::daemon::{Daemon, python, wait_until};

const EXPORT: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

fn sdk(d: &Daemon, protocol: &str, endpoint: &str, run: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/otlp/otlp_client.py");
    let out = Command::new(python())
        .arg(script)
        .env("LW_PROTOCOL", protocol)
        .env("LW_ENDPOINT", endpoint)
        .env("LW_CA_FILE", d.ca_file())
        .env("LW_COUNT", "50")
        .env("LW_RUN", run)
        // requests lets these override the exporter's own CA file (session.verify).
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "OTLP {protocol} client failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("otlp: all exports succeeded"), "{stdout}");
    stdout
}

fn one(d: &Daemon, sql: &str) -> Value {
    let rows = d.query(sql);
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    rows[0].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_opentelemetry_sdk_exports_over_grpc_and_http() {
    let d = Daemon::start();
    let grpc = sdk(&d, "grpc", &format!("localhost:{}", d.addr("otlp").port()), "grpc-run");
    let http = sdk(&d, "http", &format!("https://localhost:{}/v1/logs", d.addr("http").port()), "http-run");

    for (run, listener, stdout) in [("grpc-run", "otlp", &grpc), ("http-run", "http", &http)] {
        // Acknowledged means stored: no waiting for what the exporter was told is durable.
        let filter = format!("message LIKE '%of run {run} placed'");
        assert_eq!(d.count(&filter), 50, "{run}");
        let row = one(
            &d,
            &format!(
                "SELECT DISTINCT app, host, protocol, listener, trace_id, span_id, client_id FROM logs WHERE {filter}"
            ),
        );
        let trace = stdout.split_whitespace().find_map(|w| w.strip_prefix("trace_id=")).unwrap();
        let span = stdout.split_whitespace().find_map(|w| w.strip_prefix("span_id=")).unwrap();
        assert_eq!(row["app"], "checkout", "{row}");
        assert_eq!(row["host"], "otel-host", "{row}");
        assert_eq!(row["protocol"], "otlp", "{row}");
        assert_eq!(row["listener"], listener, "{row}");
        assert_eq!(row["trace_id"], trace, "{row}");
        assert_eq!(row["span_id"], span, "{row}");
        // Python's ERROR is OTLP severity 17: syslog err (3); the rest INFO (6).
        assert_eq!(d.count(&format!("{filter} AND severity = 3")), 5, "{run}");
        assert_eq!(d.count(&format!("{filter} AND severity = 6")), 45, "{run}");
        let fields = one(&d, &format!("SELECT fields FROM logs WHERE {filter} AND message LIKE 'order 7 %'"));
        let fields: Value = serde_json::from_str(fields["fields"].as_str().unwrap()).unwrap();
        assert_eq!(fields["order.id"], 7, "{fields}");
        assert_eq!(fields["run"], run, "{fields}");
        assert_eq!(fields["resource"]["deployment.environment"], "test", "{fields}");
        assert_eq!(fields["severity_text"], "INFO", "{fields}");
        let series = format!(
            r#"logwarden_events_received_total{{format="otlp",listener="{listener}",protocol="otlp"}}"#
        );
        assert_eq!(d.metric(&series), 50.0, "{series}");
    }
}

fn record(body: &str) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    body: Some(AnyValue { value: Some(any_value::Value::StringValue(body.into())) }),
                    trace_id: vec![7; 5],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// What an SDK never sends, each answered in OTLP's terms and counted, nothing of it stored;
/// and the two JSON bodies `/v1/logs` tells apart.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_otlp_is_refused_and_counted() {
    let d = Daemon::start();
    let (http, otlp, ca) = (d.addr("http"), d.addr("otlp"), d.ca_file());
    let protobuf = vec![("content-type", "application/x-protobuf")];
    let refused = |listener: &str| {
        d.metric(&format!(
            r#"logwarden_decode_errors_total{{format="otlp",listener="{listener}",protocol="otlp"}}"#
        ))
    };

    // HTTP: truncated protobuf is a 400 with a google.rpc.Status, nothing stored.
    let good = record("kept with a short trace id").encode_to_vec();
    let r = post(http, ca.clone(), "/v1/logs", protobuf.clone(), good[..good.len() - 3].to_vec()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/x-protobuf");
    assert!(r.body.contains("not an OTLP logs request"), "{}", r.body);
    assert_eq!(refused("http"), 1.0);

    // A record with a defect is stored, and the answer warns in partial_success.
    let r = post(http, ca.clone(), "/v1/logs", protobuf.clone(), good.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("trace_id is 5 bytes, not 16"), "{}", r.body);
    assert_eq!(
        d.count("message = 'kept with a short trace id' AND trace_id IS NULL AND decode_error IS NOT NULL"),
        1
    );
    // Counted as decoded with a defect.
    assert_eq!(refused("http"), 2.0);

    // OTLP/JSON and NDJSON, both declared application/json.
    let json = vec![("content-type", "application/json")];
    let otlp_json = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"otlp json"},"severityNumber":13}]}]}]}"#;
    let r = post(http, ca.clone(), "/v1/logs", json.clone(), otlp_json.into()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "{}");
    let r =
        post(http, ca.clone(), "/v1/logs", json.clone(), b"{\"message\":\"ndjson line\"}\n".to_vec()).await;
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"accepted":1}"#));
    assert_eq!(d.count("message = 'otlp json' AND protocol = 'otlp' AND severity = 4"), 1);
    assert_eq!(d.count("message = 'ndjson line' AND protocol = 'ndjson'"), 1);
    let r = post(http, ca.clone(), "/v1/logs", json, br#"{"resourceLogs": 5}"#.to_vec()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(refused("http"), 3.0);

    // gRPC: not protobuf, gzip that does not inflate, larger than max_message_bytes (1 MiB):
    // INVALID_ARGUMENT, which exporters do not retry.
    let (status, message) = grpc_call(otlp, &ca, EXPORT, &good[..good.len() - 3], None).await;
    assert_eq!(status, "3", "{message}");
    let (status, message) = grpc_call(otlp, &ca, EXPORT, b"not gzip at all", Some("gzip")).await;
    assert_eq!(status, "3", "{message}");
    let big = record(&"x".repeat(2 << 20)).encode_to_vec();
    let (status, message) = grpc_call(otlp, &ca, EXPORT, &big, None).await;
    assert_eq!(status, "3", "{message}");
    wait_until(Duration::from_secs(5), "three gRPC refusals counted", || refused("otlp") == 3.0);
    // And the listener still takes a good one.
    let (status, message) =
        grpc_call(otlp, &ca, EXPORT, &record("after the bad ones").encode_to_vec(), None).await;
    assert_eq!(status, "0", "{message}");
    assert_eq!(d.count("message = 'after the bad ones' AND listener = 'otlp'"), 1);
    assert_eq!(d.count("message LIKE 'xxxx%'"), 0);
}

/// Messages tonic is still reading count against the listener's memory budget: with 1 MiB
/// messages and a smaller `max_pending_bytes` the budget is 4 MiB, so a fifth call holding most of a message
/// while four others do is refused UNAVAILABLE (retry), where without the bound every call
/// on every connection could hold `max_message_bytes`.
#[tokio::test(flavor = "multi_thread")]
async fn messages_being_read_are_held_to_the_listener_budget() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    // [batch] max_pending_bytes below four messages: the budget is then four messages.
    let d = Daemon::start_with("max_pending_bytes = \"1MiB\"\n");
    let tcp = tokio::net::TcpStream::connect(d.addr("otlp")).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(crate::client::tls_config(&d.ca_file(), &[b"h2"]))
        .connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    // A message header announcing 1000 KiB, then 900 KiB of it, and the rest never sent.
    let mut open = Vec::new();
    let mut answers = Vec::new();
    for _ in 0..5 {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(16);
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut head = vec![0u8];
        head.extend_from_slice(&(1000u32 * 1024).to_be_bytes());
        tx.send(Ok(Frame::data(Bytes::from(head)))).await.unwrap();
        for _ in 0..9 {
            tx.send(Ok(Frame::data(Bytes::from(vec![0x0a; 100 * 1024])))).await.unwrap();
        }
        let req = hyper::Request::post(format!("https://localhost{EXPORT}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(body)
            .unwrap();
        let mut send = send.clone();
        answers.push(tokio::spawn(async move {
            let resp = send.send_request(req).await.unwrap();
            let (parts, body) = resp.into_parts();
            let trailers =
                body.collect().await.map(|c| c.trailers().cloned().unwrap_or_default()).unwrap_or_default();
            parts
                .headers
                .get("grpc-status")
                .or(trailers.get("grpc-status"))
                .map(|v| v.to_str().unwrap().to_owned())
        }));
        open.push(tx);
    }
    // One of the five is refused at once (which one depends on the order the server reads
    // them); the others wait for the rest of their message.
    let refused = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            for a in &answers {
                if a.is_finished() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "no call was refused: five calls held 4.5 MiB of a 4 MiB budget");
    let mut statuses = Vec::new();
    for a in answers.into_iter().filter(|a| a.is_finished()) {
        statuses.push(a.await.unwrap());
    }
    // A call refused gives its share back only when tonic drops its body, so a second one
    // reading at that moment may be refused too; never all of them, and each UNAVAILABLE.
    assert!(statuses.len() < 5, "every call was refused: {statuses:?}");
    assert!(
        statuses.iter().all(|s| s.as_deref() == Some("14")),
        "UNAVAILABLE for calls over the budget: {statuses:?}"
    );
    drop(open);
}
