//! Hostile and broken input: the daemon counts and logs it, keeps running, and other
//! connections keep flowing.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{connect_tls, octet};
use crate::daemon::{Daemon, http_get, wait_until};

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn bad_frames_are_counted_and_do_not_disturb_other_peers() {
    let d = Daemon::start_with("");
    let addr = d.addr("syslog");
    let ca = d.ca_file();

    // A client that connects and never finishes (or starts) the handshake.
    let _stalled = TcpStream::connect(addr).await.unwrap();
    // A client that speaks garbage instead of TLS.
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage.write_all(b"\x16\x03\x01\x00\x05hello this is not TLS at all\r\n\r\n").await.unwrap();
    let mut sink = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_secs(5), garbage.read(&mut sink)).await;

    let mut bad = connect_tls(addr, &ca).await;
    // Oversize octet-counted frame (64 KiB limit), then a good one on the same connection.
    let mut big = b"70000 ".to_vec();
    big.extend(std::iter::repeat_n(b'A', 70_000));
    bad.write_all(&big).await.unwrap();
    bad.write_all(&octet("<14>1 - h app - - - after oversize")).await.unwrap();
    // Invalid UTF-8 and binary garbage as LF frames.
    bad.write_all(b"<14>1 - h app - - - bad utf8 \xff\xfe here\n").await.unwrap();
    bad.write_all(b"\x00\x01\x02\x03\x7f binary\n").await.unwrap();
    // An oversize LF frame.
    let mut long = vec![b'B'; 70_000];
    long.push(b'\n');
    bad.write_all(&long).await.unwrap();
    bad.write_all(b"<14>1 - h app - - - after long line\n").await.unwrap();
    // A frame whose octet count is larger than what follows, cut by the end of the stream.
    bad.write_all(b"500 <14>1 - h app - - - truncated").await.unwrap();
    bad.flush().await.unwrap();
    bad.shutdown().await.unwrap();

    // Meanwhile a well-behaved peer is served.
    let mut good = connect_tls(addr, &ca).await;
    for i in 0..100 {
        good.write_all(&octet(&format!("<14>1 - h app - - - good {i}"))).await.unwrap();
    }
    // A frame close to the 64 KiB limit: the connection's buffer starts much smaller and grows.
    good.write_all(&octet(&format!("<14>1 - h app - - - large {}", "L".repeat(60_000)))).await.unwrap();
    good.shutdown().await.unwrap();

    wait_until(T, "good events", || d.count("message LIKE 'good %'") == 100);
    wait_until(T, "the large frame", || d.count("message LIKE 'large %' AND length(message) = 60006") == 1);
    wait_until(T, "events after bad frames", || {
        d.count("message IN ('after oversize', 'after long line')") == 2
    });
    let utf8 = d.query("SELECT message, decode_error FROM logs WHERE message LIKE 'bad utf8%'");
    assert_eq!(utf8.len(), 1, "{utf8:?}");
    assert!(utf8[0]["decode_error"].as_str().unwrap().contains("UTF-8"), "{utf8:?}");
    assert_eq!(d.count("message LIKE '%binary'"), 1, "binary garbage is kept as raw text");

    wait_until(T, "rejection metrics", || {
        d.metric(r#"logwarden_frames_rejected_total{listener="syslog",reason="oversize"}"#) >= 2.0
            && d.metric(r#"logwarden_frames_rejected_total{listener="syslog",reason="truncated"}"#) >= 1.0
            && d.metric(r#"logwarden_tls_handshake_failures_total{listener="syslog",reason="protocol"}"#)
                >= 1.0
    });
    assert!(
        d.metric(r#"logwarden_decode_errors_total{format="raw",listener="syslog",protocol="syslog"}"#) >= 1.0
    );
    assert!(d.log_text().contains("frame rejected"));
    assert_eq!(http_get(d.addr("admin"), "/healthz").0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handshake_that_never_finishes_times_out() {
    let d = Daemon::start_with("");
    // The test config sets handshake_timeout = "3s" on this listener.
    let _stalled = TcpStream::connect(d.addr("syslog")).await.unwrap();
    wait_until(Duration::from_secs(30), "handshake timeout metric", || {
        d.metric(r#"logwarden_tls_handshake_failures_total{listener="syslog",reason="timeout"}"#) >= 1.0
    });
}
