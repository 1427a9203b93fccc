//! Small requests whose events are large: metadata a request states once (an OTLP resource, a
//! Loki stream's labels, a HEC raw query string, an Elasticsearch index) is copied into the row
//! of each event it covers. The events one request decodes to are bounded by the listener's
//! budget (`batch.max_pending_bytes`): past it the request is refused whole, nothing stored.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;

use crate::client::{grpc_call, post};
use crate::daemon::Daemon;

const EXPORT: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// One resource of `resource_bytes` and `records` log records saying `body`.
fn otlp(resource_bytes: usize, records: usize, body: &str) -> Vec<u8> {
    let text = |s: String| Some(AnyValue { value: Some(any_value::Value::StringValue(s)) });
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "k8s.pod.labels".into(),
                    value: text("x".repeat(resource_bytes)),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord { body: text(body.into()), ..Default::default() }; records],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn events_one_request_decodes_to_are_bounded_by_the_listener_budget() {
    let token = logwarden::serve::flight::auth::sha256_hex("amp-token");
    let d = Daemon::start_with(&format!(
        r#"max_pending_bytes = "1MiB"
[[http]]
name = "small"
address = "127.0.0.1:0"
max_body_bytes = "128KiB"
tokens = [{{ name = "hec", sha256 = "{token}" }}]
"#
    ));
    let (small, ca) = (d.addr("small"), d.ca_file());
    let big = "x".repeat(60 * 1024);

    // Loki: a 60 KiB label on each of 100 entries (6 MB of rows from a 61 KB body).
    let values: Vec<String> = (0..100).map(|_| r#"["1","amp-loki"]"#.to_owned()).collect();
    let push = format!(r#"{{"streams":[{{"stream":{{"pod":"{big}"}},"values":[{}]}}]}}"#, values.join(","));
    let r = post(
        small,
        ca.clone(),
        "/loki/api/v1/push",
        vec![("content-type", "application/json")],
        push.into_bytes(),
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.contains("max_pending_bytes"), "{}", r.body);

    // OTLP over HTTP: a 60 KiB resource over 100 records.
    let r = post(
        small,
        ca.clone(),
        "/v1/logs",
        vec![("content-type", "application/x-protobuf")],
        otlp(60 * 1024, 100, "amp-otlp-http"),
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.body);

    // OTLP over gRPC (max_message_bytes 1 MiB, so a budget of 4 MiB): 200 KiB over 40 records.
    let (status, message) =
        grpc_call(d.addr("otlp"), &ca, EXPORT, &otlp(200 * 1024, 40, "amp-otlp-grpc"), None).await;
    assert_eq!(status, "3", "{message}");

    // HEC raw: a 30 KiB host and source on each of 100 lines of two bytes.
    let query = format!("/services/collector/raw?host={}&source={}", &big[..30 * 1024], &big[..30 * 1024]);
    let r = post(small, ca.clone(), &query, vec![("authorization", "Splunk amp-token")], b"a\n".repeat(100))
        .await;
    assert_eq!(r.status, 413, "{}", r.body);

    // Elasticsearch: an index name longer than Elasticsearch takes, in the path (the request)
    // or an action (the item); and many empty documents each carrying the longest it takes.
    let r =
        post(small, ca.clone(), &format!("/{}/_bulk", &big[..256]), vec![], b"{\"index\":{}}\n{}\n".to_vec())
            .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("invalid_index_name_exception"), "{}", r.body);
    let body = format!("{{\"index\":{{\"_index\":\"{}\"}}}}\n{{\"message\":\"amp-es\"}}\n", &big[..256]);
    let r = post(small, ca.clone(), "/_bulk", vec![], body.into_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains(r#""errors":true"#) && r.body.contains("invalid_index_name_exception"),
        "{}",
        r.body
    );
    let r = post(
        small,
        ca.clone(),
        &format!("/{}/_bulk", &big[..255]),
        vec![],
        b"{\"index\":{}}\n{}\n".repeat(8000),
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.contains("content_too_long_exception"), "{}", r.body);

    assert_eq!(d.count("message LIKE 'amp-%' OR host LIKE 'xxx%' OR fields LIKE '%xxxxxxxx%'"), 0);

    // What fits is taken.
    let r = post(
        small,
        ca.clone(),
        "/v1/logs",
        vec![("content-type", "application/x-protobuf")],
        otlp(1024, 10, "amp-ok"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(d.count("message = 'amp-ok'"), 10);
}
