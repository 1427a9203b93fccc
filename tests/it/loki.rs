//! Loki push: python-logging-loki (JSON) against the real daemon, a snappy-compressed protobuf
//! push as Alloy and Promtail send, and the malformed cases.

use std::process::Command;

use serde_json::Value;

use crate::client::post;
use crate::daemon::{Daemon, python};

const PUSH: &str = "/loki/api/v1/push";

#[tokio::test(flavor = "multi_thread")]
async fn loki_clients_push_json_and_snappy_protobuf() {
    let d = Daemon::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/loki/loki_client.py");
    let out = Command::new(python())
        .arg(script)
        .env("LW_URL", format!("https://localhost:{}{PUSH}", d.addr("http").port()))
        .env("LW_RUN", "lk1")
        .env("LW_COUNT", "40")
        .env("REQUESTS_CA_BUNDLE", d.ca_file())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains("all pushes answered 204"), "{stdout}\n{stderr}");
    let filter = "message LIKE 'loki line % of run lk1'";
    assert_eq!(d.count(filter), 40);
    assert_eq!(
        d.count(&format!("{filter} AND severity = 4 AND app = 'loki-app' AND host = 'loki-host'")),
        10
    );
    assert_eq!(d.count(&format!("{filter} AND protocol = 'loki' AND listener = 'http'")), 40);
    let f = d.query(&format!("SELECT fields FROM logs WHERE {filter} AND message LIKE 'loki line 4 %'"));
    let f: Value = serde_json::from_str(f[0]["fields"].as_str().unwrap()).unwrap();
    assert_eq!(f["request"], "r4", "{f}");

    // Protobuf, snappy block format, as Alloy's loki.write sends.
    let push = logwarden_loki_push(
        r#"{job="varlogs", hostname="pb-host", level="error"}"#,
        "from protobuf",
        1_700_000_000,
    );
    let r =
        post(d.addr("http"), d.ca_file(), PUSH, vec![("content-type", "application/x-protobuf")], push).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        d.count("message = 'from protobuf' AND app = 'varlogs' AND host = 'pb-host' AND severity = 3"),
        1
    );
    let rows = d.query("SELECT CAST(timestamp AS VARCHAR) AS t FROM logs WHERE message = 'from protobuf'");
    assert!(rows[0]["t"].as_str().unwrap().starts_with("2023-11-14T22:13:20"), "{rows:?}");
    assert_eq!(
        d.metric(r#"logwarden_events_received_total{format="text",listener="http",protocol="loki"}"#),
        41.0
    );
}

/// A PushRequest with one stream of one entry, protobuf in snappy's block format, encoded by
/// hand (field numbers from Loki's push.proto).
fn logwarden_loki_push(labels: &str, line: &str, seconds: i64) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
        out.push(tag << 3 | 2);
        let mut n = bytes.len();
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
        out.extend_from_slice(bytes);
    }
    let mut ts = vec![0x08];
    let mut s = seconds as u64;
    while s >= 0x80 {
        ts.push((s as u8) | 0x80);
        s >>= 7;
    }
    ts.push(s as u8);
    let mut entry = Vec::new();
    field(&mut entry, 1, &ts);
    field(&mut entry, 2, line.as_bytes());
    let mut stream = Vec::new();
    field(&mut stream, 1, labels.as_bytes());
    field(&mut stream, 2, &entry);
    let mut req = Vec::new();
    field(&mut req, 1, &stream);
    snap::raw::Encoder::new().compress_vec(&req).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_pushes_are_refused_whole() {
    let d = Daemon::start();
    let (http, ca) = (d.addr("http"), d.ca_file());
    let pb = vec![("content-type", "application/x-protobuf")];
    // Not snappy; snappy of garbage; labels that do not parse; one bad value among good ones.
    let r = post(http, ca.clone(), PUSH, pb.clone(), b"plainly not snappy".to_vec()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let garbage = snap::raw::Encoder::new().compress_vec(b"\x0a\x03abc\xff").unwrap();
    let r = post(http, ca.clone(), PUSH, pb.clone(), garbage).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post(http, ca.clone(), PUSH, pb, logwarden_loki_push("{job=unquoted}", "never stored", 1)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("not quoted"), "{}", r.body);
    let json = r#"{"streams":[{"stream":{"job":"j"},"values":[["1700000000000000000","never stored"],["soon","bad"]]}]}"#;
    let r = post(http, ca.clone(), PUSH, vec![("content-type", "application/json")], json.into()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("\"soon\""), "{}", r.body);
    assert_eq!(d.count("message = 'never stored'"), 0);
    assert_eq!(
        d.metric(r#"logwarden_decode_errors_total{format="text",listener="http",protocol="loki"}"#),
        4.0
    );
}
