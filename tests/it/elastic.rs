//! The Elasticsearch `_bulk` API: the official Python client (cluster check, bulk helper,
//! per-item results) against the real daemon, and hand-made bodies for what it never sends.

use std::process::Command;

use serde_json::Value;

use crate::client::post;
use crate::daemon::{Daemon, python};

fn client(d: &Daemon, run: &str, env: &[(&str, &str)]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/elastic/bulk_client.py");
    let mut cmd = Command::new(python());
    cmd.arg(script)
        .env("LW_URL", format!("https://localhost:{}", d.addr("http").port()))
        .env("LW_CA_FILE", d.ca_file())
        .env("LW_RUN", run)
        .env("LW_COUNT", "100");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "Elasticsearch client failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("elastic: all checks passed"), "{stdout}");
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn the_elasticsearch_client_bulk_indexes() {
    let d = Daemon::start();
    client(&d, "es1", &[]);
    let filter = "message LIKE 'bulk doc % of run es1'";
    assert_eq!(d.count(filter), 100);
    assert_eq!(d.count(&format!("{filter} AND severity = 3")), 10);
    let rows = d.query(&format!(
        "SELECT DISTINCT host, app, protocol, listener, fields::text LIKE '%\"_index\":\"filebeat-test\"%' AS indexed FROM logs WHERE {filter}"
    ));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["host"], "es-host");
    assert_eq!(rows[0]["app"], "billing");
    assert_eq!(rows[0]["protocol"], "elasticsearch");
    assert_eq!(rows[0]["listener"], "http");
    assert_eq!(rows[0]["indexed"], true);
    let ts = d.query(&format!("SELECT min(timestamp) AS t FROM {} WHERE {filter}", "logs"));
    assert!(ts[0]["t"].as_str().unwrap().starts_with("2026-12-03T10:00:00"), "{ts:?}");
    let doc = d.query("SELECT fields FROM logs WHERE message = 'path index doc of run es1'");
    let fields: Value = serde_json::from_str(doc[0]["fields"].as_str().unwrap()).unwrap();
    assert_eq!(fields["_index"], "path-index");
    assert_eq!(fields["_id"], "es1-x");
    assert_eq!(
        d.metric(
            r#"logwarden_events_received_total{format="json",listener="http",protocol="elasticsearch"}"#
        ),
        101.0
    );
}

/// A bad document in the middle is refused alone; a bad action line refuses the request and
/// stores nothing; every answer says it is Elasticsearch.
#[tokio::test(flavor = "multi_thread")]
async fn bad_lines_in_a_bulk_body() {
    let d = Daemon::start();
    let (http, ca) = (d.addr("http"), d.ca_file());
    let ndjson = vec![("content-type", "application/x-ndjson")];
    let body = "{\"index\":{\"_index\":\"a\"}}\n{\"message\":\"good one\"}\n\
                {\"index\":{\"_index\":\"a\"}}\n{\"message\": truncated\n\
                {\"create\":{\"_index\":\"a\"}}\n{\"message\":\"good two\"}\n";
    let r = post(http, ca.clone(), "/_bulk", ndjson.clone(), body.into()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["x-elastic-product"], "Elasticsearch");
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["errors"], true);
    let statuses: Vec<u64> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_object().unwrap().values().next().unwrap()["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 400, 201]);
    assert_eq!(v["items"][1]["index"]["error"]["type"], "document_parsing_exception");
    assert_eq!(d.count("message IN ('good one', 'good two')"), 2);

    let body =
        "{\"index\":{\"_index\":\"a\"}}\n{\"message\":\"not stored\"}\nnot an action\n{\"message\":\"x\"}\n";
    let r = post(http, ca.clone(), "/logs-b/_bulk", ndjson.clone(), body.into()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.headers["x-elastic-product"], "Elasticsearch");
    assert!(r.body.contains("Malformed action/metadata line [3]"), "{}", r.body);
    assert_eq!(d.count("message = 'not stored'"), 0);

    // Over max_body_bytes (1 MiB in the tests): 413 in Elasticsearch's shape.
    let big = format!("{{\"index\":{{}}}}\n{{\"message\":\"{}\"}}\n", "x".repeat(2 << 20));
    let r = post(http, ca.clone(), "/logs-b/_bulk", ndjson, big.into_bytes()).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.contains("content_too_long_exception"), "{}", r.body);

    let refused =
        d.metric(r#"logwarden_decode_errors_total{format="json",listener="http",protocol="elasticsearch"}"#);
    assert_eq!(refused, 2.0);
}
