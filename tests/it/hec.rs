//! Splunk HEC, and the credentials HTTP shippers present: splunk-hec-handler and the
//! Elasticsearch client (API key, basic auth) against the real daemon, indexer acknowledgement,
//! raw events, Splunk's error codes, and `[access] send` rules checked per request.

use std::process::Command;

use logwarden::crypto::password;
use serde_json::Value;

use crate::client::post;
use crate::daemon::{Daemon, python, wait_until};

const T: std::time::Duration = std::time::Duration::from_secs(30);

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A second HTTPS listener with credentials, and send rules for it.
fn config() -> String {
    let hash = password::hash_default("s3cret").unwrap();
    format!(
        r#"[[http]]
name = "creds"
address = "127.0.0.1:0"
tokens = [{{ name = "fw", sha256 = "{fw}" }}, {{ name = "es", sha256 = "{es}" }}, {{ name = "outsider", sha256 = "{out}" }}]
users = [{{ name = "filebeat", password_hash = "{hash}" }}]
[[access.send]]
principals = ["token:fw", "token:es", "user:filebeat"]
listeners = ["creds"]
[[access.send]]
principals = ["*"]
listeners = ["syslog", "plain", "http", "otlp"]
"#,
        fw = sha256_hex("fw-token"),
        es = sha256_hex("key-id:key-secret"),
        out = sha256_hex("outsider-token"),
    )
}

fn python_client(script: &str, env: &[(&str, String)]) -> String {
    let mut cmd = Command::new(python());
    cmd.arg(script);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn shippers_authenticate_with_tokens_api_keys_and_passwords() {
    let d = Daemon::start_with(&config());
    let port = d.addr("creds").port().to_string();
    let ca = d.ca_file().display().to_string();

    let out = python_client(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hec/hec_client.py"),
        &[
            ("LW_PORT", port.clone()),
            ("LW_TOKEN", "fw-token".into()),
            ("LW_RUN", "h1".into()),
            ("LW_COUNT", "30".into()),
            ("REQUESTS_CA_BUNDLE", ca.clone()),
        ],
    );
    assert!(out.contains("hec: all events accepted"), "{out}");
    let filter = "message LIKE 'hec event % of run h1'";
    assert_eq!(d.count(filter), 30);
    let rows =
        d.query(&format!("SELECT DISTINCT host, protocol, listener, client_id FROM logs WHERE {filter}"));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["host"], "hec-host");
    assert_eq!(rows[0]["protocol"], "splunk_hec");
    assert_eq!(rows[0]["client_id"], "token:fw");
    assert_eq!(d.count(&format!("{filter} AND severity = 3")), 6);
    let f = d.query(&format!("SELECT fields FROM logs WHERE {filter} LIMIT 1"));
    let f: Value = serde_json::from_str(f[0]["fields"].as_str().unwrap()).unwrap();
    assert_eq!(
        (f["sourcetype"].as_str(), f["index"].as_str(), f["run"].as_str()),
        (Some("python:logging"), Some("main"), Some("h1")),
        "{f}"
    );

    // The Elasticsearch client with an API key, then with basic auth.
    let es = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/elastic/bulk_client.py");
    let url = format!("https://localhost:{port}");
    let common = |run: &str| {
        vec![
            ("LW_URL", url.clone()),
            ("LW_CA_FILE", ca.clone()),
            ("LW_RUN", run.to_owned()),
            ("LW_COUNT", "20".to_owned()),
        ]
    };
    let mut env = common("key");
    env.push(("LW_API_KEY", "key-id:key-secret".into()));
    python_client(es, &env);
    let mut env = common("basic");
    env.push(("LW_USER", "filebeat".into()));
    env.push(("LW_PASSWORD", "s3cret".into()));
    python_client(es, &env);
    assert_eq!(d.count("message LIKE 'bulk doc % of run key' AND client_id = 'token:es'"), 20);
    assert_eq!(d.count("message LIKE 'bulk doc % of run basic' AND client_id = 'user:filebeat'"), 20);
}

fn auth(v: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![("authorization", v)]
}

#[tokio::test(flavor = "multi_thread")]
async fn hec_acks_raw_events_and_error_codes() {
    let d = Daemon::start_with(&config());
    let (addr, ca) = (d.addr("creds"), d.ca_file());
    let json = |s: &str| -> Value { serde_json::from_str(s).unwrap() };

    // Two events without a newline between them, on a channel: an ackId, and the ack says true.
    let mut h = auth("Splunk fw-token");
    h.push(("x-splunk-request-channel", "0f6b4a3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"));
    let body = r#"{"event":"first acked","time":"1700000000.25","host":"fw-1"}{"event":{"message":"second acked","level":"warning"},"sourcetype":"json"}"#;
    let r = post(addr, ca.clone(), "/services/collector/event", h.clone(), body.into()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r.body), json(r#"{"text":"Success","code":0,"ackId":0}"#));
    let r = post(
        addr,
        ca.clone(),
        "/services/collector/event/1.0",
        h.clone(),
        br#"{"event":"third acked"}"#.to_vec(),
    )
    .await;
    assert_eq!(json(&r.body)["ackId"], 1);
    let r =
        post(addr, ca.clone(), "/services/collector/ack", h.clone(), br#"{"acks":[0,1,2]}"#.to_vec()).await;
    assert_eq!(json(&r.body), json(r#"{"acks":{"0":true,"1":true,"2":false}}"#));
    assert_eq!(d.count("message LIKE '% acked' AND protocol = 'splunk_hec'"), 3);
    assert_eq!(
        d.count(
            "message = 'first acked' AND host = 'fw-1' AND timestamp = TIMESTAMP '2023-11-14T22:13:20.25Z'"
        ),
        1
    );
    assert_eq!(d.count("message = 'second acked' AND severity = 4"), 1);

    // Raw: one event per line, metadata from the query string; basic auth with the token as
    // password, as some forwarders send.
    let r = post(
        addr,
        ca.clone(),
        "/services/collector/raw?host=raw-host&sourcetype=access_combined",
        auth("Basic eDpmdy10b2tlbg=="),
        b"raw one\nraw two\n".to_vec(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(d.count("message LIKE 'raw %' AND host = 'raw-host' AND fields LIKE '%access_combined%'"), 2);

    let r = crate::client::get(addr, &ca, "/services/collector/health").await;
    assert_eq!((r.status, json(&r.body)), (200, json(r#"{"text":"HEC is healthy","code":17}"#)));

    // Splunk's codes: no token, a malformed header, an unknown token, a token the send rules
    // refuse here, a bad event among good ones (nothing of the body stored), no data, a bad
    // channel, an ack query without one.
    let ev = br#"{"event":"never stored"}"#.to_vec();
    for (headers, status, code) in [
        (vec![], 401, 2),
        (auth("Splunk"), 401, 3),
        (auth("Splunk nope"), 403, 4),
        (auth("Splunk outsider-token"), 403, 4),
    ] {
        let r = post(addr, ca.clone(), "/services/collector/event", headers.clone(), ev.clone()).await;
        assert_eq!(
            (r.status, json(&r.body)["code"].as_u64()),
            (status, Some(code)),
            "{headers:?}: {}",
            r.body
        );
    }
    let bad = br#"{"event":"never stored"}{"event":""}{"event":"nor this"}"#.to_vec();
    let r = post(addr, ca.clone(), "/services/collector", auth("Splunk fw-token"), bad).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        json(&r.body),
        json(r#"{"text":"Event field cannot be blank","code":13,"invalid-event-number":1}"#)
    );
    let r = post(addr, ca.clone(), "/services/collector", auth("Splunk fw-token"), b"  ".to_vec()).await;
    assert_eq!(json(&r.body)["code"], 5);
    let mut h = auth("Splunk fw-token");
    h.push(("x-splunk-request-channel", "not a guid!"));
    let r = post(addr, ca.clone(), "/services/collector", h, ev.clone()).await;
    assert_eq!(json(&r.body)["code"], 11);
    let r = post(
        addr,
        ca.clone(),
        "/services/collector/ack",
        auth("Splunk fw-token"),
        br#"{"acks":[0]}"#.to_vec(),
    )
    .await;
    assert_eq!(json(&r.body)["code"], 10);
    assert_eq!(d.count("message IN ('never stored', 'nor this')"), 0);

    // The other protocols on a listener with credentials: a wrong password is 401 in the
    // protocol's shape, the send rules apply to whoever the credentials say.
    let r = post(
        addr,
        ca.clone(),
        "/_bulk",
        auth("Basic ZmlsZWJlYXQ6d3Jvbmc="),
        b"{\"index\":{}}\n{}\n".to_vec(),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.headers["x-elastic-product"], "Elasticsearch");
    assert!(r.headers.contains_key("www-authenticate"));
    let r =
        post(addr, ca.clone(), "/v1/logs", auth("Bearer outsider-token"), b"{\"message\":\"x\"}\n".to_vec())
            .await;
    assert_eq!(r.status, 403, "{}", r.body);
    // No credentials and no certificate: not among the principals allowed on this listener.
    let r = post(addr, ca.clone(), "/v1/logs", vec![], b"{\"message\":\"anonymous\"}\n".to_vec()).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = post(
        addr,
        ca.clone(),
        "/v1/logs",
        auth("Bearer fw-token"),
        b"{\"message\":\"with a token\"}\n".to_vec(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(d.count("message = 'with a token' AND client_id = 'token:fw' AND protocol = 'ndjson'"), 1);
    assert_eq!(d.metric(r#"logwarden_ingest_auth_failures_total{listener="creds",reason="missing"}"#), 1.0);
    assert_eq!(d.metric(r#"logwarden_ingest_auth_failures_total{listener="creds",reason="bad_token"}"#), 1.0);
    assert_eq!(
        d.metric(r#"logwarden_ingest_auth_failures_total{listener="creds",reason="wrong_password"}"#),
        1.0
    );
    assert_eq!(d.metric(r#"logwarden_access_denied_total{listener="creds"}"#), 3.0);

    // Refused credentials and refused principals are in the audit trail, with the user a
    // basic header claimed and never a token or password; one row per address and reason
    // (malformed, bad_token, wrong_password, denied), not one per request.
    let sql = "SELECT principal, auth, outcome, reason FROM audit \
               WHERE kind = 'authentication' AND listener = 'creds' ORDER BY time";
    wait_until(T, "the refusals in the audit trail", || d.query(sql).len() >= 4);
    let rows = d.query(sql);
    let has = |principal: Option<&str>, auth: &str, outcome: &str| {
        rows.iter()
            .any(|r| r["principal"].as_str() == principal && r["auth"] == auth && r["outcome"] == outcome)
    };
    assert!(has(None, "token", "refused"), "{rows:?}");
    assert!(has(Some("user:filebeat"), "basic", "refused"), "{rows:?}");
    assert!(has(Some("token:outsider"), "token", "denied"), "{rows:?}");
    assert_eq!(rows.len(), 4, "three denials from one address make one row: {rows:?}");
    let text = format!("{rows:?}");
    assert!(!text.contains("wrong") && !text.contains("nope"), "a secret in the audit trail: {text}");
}
