use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_json::{Value, json};

use super::*;

fn s(v: &str) -> Option<AnyValue> {
    Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) })
}

fn kv(key: &str, value: Option<AnyValue>) -> KeyValue {
    KeyValue { key: key.into(), value, ..Default::default() }
}

fn request(resource: Vec<KeyValue>, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource { attributes: resource, ..Default::default() }),
            scope_logs: vec![ScopeLogs {
                scope: Some(opentelemetry_proto::tonic::common::v1::InstrumentationScope {
                    name: "checkout".into(),
                    version: "1.2".into(),
                    ..Default::default()
                }),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Each event as (column values, fields) for comparison.
fn events(req: &ExportLogsServiceRequest) -> (Vec<Event<'static>>, Decoded) {
    let mut out = Vec::new();
    let d = decode_request(req, |ev| {
        out.push(ev.clone().into_owned());
        std::ops::ControlFlow::Continue(())
    });
    (out, d)
}

fn fields(ev: &Event<'_>) -> Value {
    ev.fields.as_deref().map_or(Value::Null, |f| serde_json::from_str(f).unwrap())
}

#[test]
fn resource_and_record_map_into_the_schema() {
    let req = request(
        vec![
            kv("service.name", s("checkout")),
            kv("host.name", s("web-1")),
            kv("process.pid", Some(AnyValue { value: Some(any_value::Value::IntValue(4242)) })),
            kv("deployment.environment", s("prod")),
        ],
        vec![LogRecord {
            time_unix_nano: 1_700_000_000_123_456_789,
            observed_time_unix_nano: 1_700_000_001_000_000_000,
            severity_number: 17,
            severity_text: "ERROR".into(),
            event_name: "payment.failed".into(),
            body: s("card declined"),
            attributes: vec![
                kv("order.id", Some(AnyValue { value: Some(any_value::Value::IntValue(17)) })),
                kv("retry", Some(AnyValue { value: Some(any_value::Value::BoolValue(true)) })),
            ],
            trace_id: (1..=16).collect(),
            span_id: (1..=8).collect(),
            flags: 1,
            ..Default::default()
        }],
    );
    let (evs, d) = events(&req);
    assert_eq!((d.records, d.defective), (1, 0));
    assert!(d.response().partial_success.is_none());
    let ev = &evs[0];
    assert_eq!(ev.format, Format::Otlp);
    assert_eq!(ev.timestamp, Some(1_700_000_000_123_456_789));
    assert_eq!(ev.severity, Some(3));
    assert_eq!(ev.app.as_deref(), Some("checkout"));
    assert_eq!(ev.host.as_deref(), Some("web-1"));
    assert_eq!(ev.procid.as_deref(), Some("4242"));
    assert_eq!(ev.msgid.as_deref(), Some("payment.failed"));
    assert_eq!(ev.message, "card declined");
    assert_eq!(ev.trace_id.as_deref(), Some("0102030405060708090a0b0c0d0e0f10"));
    assert_eq!(ev.span_id.as_deref(), Some("0102030405060708"));
    assert_eq!(
        fields(ev),
        json!({
            "order.id": 17,
            "retry": true,
            "resource": {"deployment.environment": "prod"},
            "scope": {"name": "checkout", "version": "1.2"},
            "severity_text": "ERROR",
            "severity_number": 17,
            "flags": 1
        })
    );
}

#[test]
fn bodies_of_every_type_are_kept() {
    let kvlist = AnyValue {
        value: Some(any_value::Value::KvlistValue(KeyValueList {
            values: vec![
                kv("user", s("alice")),
                kv("n", Some(AnyValue { value: Some(any_value::Value::DoubleValue(1.5)) })),
            ],
        })),
    };
    let array = AnyValue {
        value: Some(any_value::Value::ArrayValue(ArrayValue {
            values: vec![
                s("a").unwrap(),
                AnyValue { value: Some(any_value::Value::BytesValue(vec![0, 255])) },
            ],
        })),
    };
    let nan = AnyValue { value: Some(any_value::Value::DoubleValue(f64::NAN)) };
    let record = |body: Option<AnyValue>| LogRecord { body, ..Default::default() };
    let req =
        request(vec![], vec![record(Some(kvlist)), record(Some(array)), record(Some(nan)), record(None)]);
    let (evs, _) = events(&req);
    let messages: Vec<&str> = evs.iter().map(|e| e.message.as_ref()).collect();
    assert_eq!(messages, [r#"{"n":1.5,"user":"alice"}"#, r#"["a","AP8="]"#, r#""NaN""#, ""]);
    // No time at all: the receive time; no severity either way.
    assert_eq!((evs[3].timestamp, evs[3].severity), (None, None));
}

#[test]
fn severity_numbers_and_names() {
    for (number, text, want) in [
        (1, "", Some(7)),
        (5, "", Some(7)),
        (9, "", Some(6)),
        (13, "", Some(4)),
        (21, "", Some(2)),
        (0, "warn", Some(4)),
        (0, "", None),
        (99, "", None),
    ] {
        assert_eq!(severity(number, text), want, "{number} {text}");
    }
}

#[test]
fn ids_of_the_wrong_length_are_kept_in_fields_and_reported() {
    let req = request(
        vec![],
        vec![
            LogRecord {
                body: s("short"),
                trace_id: vec![1, 2, 3],
                span_id: vec![0; 8],
                ..Default::default()
            },
            LogRecord { body: s("fine"), ..Default::default() },
        ],
    );
    let (evs, d) = events(&req);
    assert_eq!((d.records, d.defective), (2, 1));
    assert_eq!(evs[0].trace_id, None);
    // An all-zero id is "no id" in OTLP, not a defect.
    assert_eq!(evs[0].span_id, None);
    assert_eq!(evs[0].decode_error.as_deref(), Some("trace_id is 3 bytes, not 16"));
    assert_eq!(fields(&evs[0])["trace_id"], "010203");
    let partial = d.response().partial_success.unwrap();
    assert_eq!(partial.rejected_log_records, 0);
    assert!(partial.error_message.contains("trace_id is 3 bytes"), "{}", partial.error_message);
    assert_eq!(d.counts.decode_errors[Format::Otlp.index()], 1);
    assert_eq!(d.counts.events[Format::Otlp.index()], 2);
}

/// OTLP/JSON as the specification writes it: ids in hex, 64-bit integers as strings, enums
/// as numbers.
#[test]
fn otlp_json_decodes() {
    let body = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}}]},
        "scopeLogs":[{"scope":{"name":"s"},"logRecords":[{"timeUnixNano":"1700000000000000000","severityNumber":9,
        "body":{"stringValue":"hello"},"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
        "attributes":[{"key":"count","value":{"intValue":"3"}}]}]}]}]}"#;
    let req: ExportLogsServiceRequest = serde_json::from_str(body).unwrap();
    let (evs, _) = events(&req);
    assert_eq!(evs[0].app.as_deref(), Some("api"));
    assert_eq!(evs[0].severity, Some(6));
    assert_eq!(evs[0].trace_id.as_deref(), Some("5b8efff798038103d269b633813fc60c"));
    assert_eq!(fields(&evs[0])["count"], 3);
}
