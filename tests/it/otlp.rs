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
