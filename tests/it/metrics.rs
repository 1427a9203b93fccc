//! The admin endpoint: health, readiness, and a /metrics page that `promtool check metrics`
//! (Prometheus' own linter) accepts.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::client::{connect_tls, octet};
use crate::daemon::{Daemon, http_get, wait_until};

#[tokio::test(flavor = "multi_thread")]
async fn metrics_pass_promtool_and_count_traffic() {
    let d = Daemon::start();
    let mut s = connect_tls(d.addr("syslog"), &d.ca_file()).await;
    for i in 0..10 {
        s.write_all(&octet(&format!("<14>1 - h app - - - metric {i}"))).await.unwrap();
    }
    s.write_all(b"{not json}\n").await.unwrap();
    s.shutdown().await.unwrap();
    wait_until(Duration::from_secs(30), "events counted", || {
        d.metric(r#"logwarden_events_received_total{format="rfc5424",listener="syslog",protocol="syslog"}"#)
            >= 10.0
    });
    let page = d.metrics();
    for name in [
        "logwarden_events_received_total",
        "logwarden_bytes_received_total",
        "logwarden_decode_errors_total",
        "logwarden_frames_rejected_total",
        "logwarden_connections_active",
        "logwarden_tls_handshake_failures_total",
        "logwarden_batch_flush_seconds_bucket",
        "logwarden_wal_fsync_seconds_bucket",
        "logwarden_storage_bytes",
        "logwarden_storage_segments",
        "logwarden_build_info",
    ] {
        assert!(page.contains(name), "{name} missing from /metrics");
    }

    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed: run scripts/test");
    child.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "promtool check metrics complained:\n{report}");

    assert_eq!(http_get(d.addr("admin"), "/healthz").0, 200);
    assert_eq!(http_get(d.addr("admin"), "/readyz").0, 200);
    assert_eq!(http_get(d.addr("admin"), "/nope").0, 404);
}
