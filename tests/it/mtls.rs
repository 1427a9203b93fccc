//! Client certificates as identity: a listener with `client_auth = "required"` maps each
//! verified certificate to a principal stamped on its events as `client_id`, refuses missing,
//! revoked, expired and foreign certificates with the reason in the metrics and the audit
//! table, resumes sessions, picks up a new CRL when the file changes or on SIGHUP, and applies
//! the `[access]` send and query rules.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, Int64Array, RecordBatch};
use logwarden::serve::flight::auth::sha256_hex;
use logwarden::serve::flight::client;

use crate::client::{octet, send_with, tls_config_with_cert};
use crate::daemon::{Daemon, http_get, wait_until, wait_until_async};
use crate::pki::{Leaf, Pki, mtls_listener, trust_section};

const T: Duration = Duration::from_secs(30);

fn msg(text: &str) -> Vec<u8> {
    octet(&format!("<14>1 2026-11-23T10:00:00Z web-1 app - - - {text}"))
}

fn cfg(d: &Daemon, leaf: &Leaf) -> Arc<rustls::ClientConfig> {
    tls_config_with_cert(&d.ca_file(), &leaf.cert, &leaf.key)
}

fn failures(d: &Daemon, listener: &str, reason: &str) -> f64 {
    d.metric(&format!(
        "logwarden_tls_handshake_failures_total{{listener=\"{listener}\",reason=\"{reason}\"}}"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_become_principals_and_bad_ones_are_refused_with_the_reason() {
    let mut pki = Pki::new("logwarden client CA");
    let cac = pki.cac("cac", "DOE.JOHN.A.1234567890", "john.doe@example.mil", "1234567890@mil");
    let host = pki.host("web", "web-01.example.org", false);
    let revoked = pki.host("revoked", "web-66.example.org", false);
    let expired = pki.host("expired", "web-99.example.org", true);
    pki.write_crl(&[revoked.serial]);
    let mut rogue_ca = Pki::new("some other CA");
    let rogue = rogue_ca.host("rogue", "web-01.example.org", false);

    let d =
        Daemon::start_with(&format!("{}{}", trust_section(&pki, "10s"), mtls_listener("mtls", "required")));
    let addr = d.addr("mtls");

    // Accepted: the principal is the EDIPI for the CAC, the DNS name for the host certificate.
    let cac_cfg = cfg(&d, &cac);
    assert!(send_with(addr, cac_cfg.clone(), &msg("from the card")).await);
    assert!(send_with(addr, cfg(&d, &host), &msg("from the host")).await);
    wait_until(T, "both events", || d.count("listener = 'mtls'") == 2);
    let rows = d.query("SELECT message, client_id FROM logs WHERE listener = 'mtls' ORDER BY message");
    assert_eq!(rows[0]["client_id"], "edipi:1234567890", "{rows:?}");
    assert_eq!(rows[1]["client_id"], "dns:web-01.example.org", "{rows:?}");

    // The same client config resumes its session: no new signature, same principal.
    assert!(send_with(addr, cac_cfg, &msg("resumed")).await);
    wait_until(T, "the resumed session's event", || {
        d.count("message = 'resumed' AND client_id = 'edipi:1234567890'") == 1
    });
    assert!(d.metric("logwarden_tls_handshakes_total{listener=\"mtls\",result=\"resumed\"}") >= 1.0);
    assert!(d.metric("logwarden_tls_handshakes_total{listener=\"mtls\",result=\"full\"}") >= 2.0);

    // Refused, each with its reason.
    let anonymous = crate::client::tls_config(&d.ca_file(), &[]);
    for (what, config, reason) in [
        ("no certificate", anonymous, "no_certificate"),
        ("revoked", cfg(&d, &revoked), "revoked"),
        ("expired", cfg(&d, &expired), "expired"),
        ("untrusted CA", cfg(&d, &rogue), "unknown_ca"),
    ] {
        assert!(!send_with(addr, config, &msg(&format!("must not arrive: {what}"))).await, "{what}");
        wait_until(T, reason, || failures(&d, "mtls", reason) == 1.0);
    }
    assert_eq!(d.count("message LIKE 'must not arrive%'"), 0);
    let log = d.log_text();
    assert!(log.contains("TLS handshake failed") && log.contains("revoked"), "{log}");

    // The audit table has every connection, accepted or not, with peer, principal and reason.
    wait_until(T, "audit entries", || {
        d.query("SELECT count(*) AS n FROM audit WHERE listener = 'mtls'")[0]["n"].as_i64() == Some(7)
    });
    let audit = d.query(
        "SELECT outcome, principal, auth, subject, reason, peer FROM audit WHERE listener = 'mtls' ORDER BY time",
    );
    assert_eq!(audit[0]["outcome"], "accepted");
    assert_eq!(audit[0]["principal"], "edipi:1234567890");
    assert_eq!(audit[0]["auth"], "certificate");
    assert_eq!(audit[0]["subject"], "CN=DOE.JOHN.A.1234567890,OU=DoD,O=U.S. Government,C=US");
    assert!(audit[0]["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{audit:?}");
    let refused: Vec<&str> = audit[3..].iter().map(|r| r["reason"].as_str().unwrap_or("")).collect();
    for (row, reason) in refused.iter().zip(["no_certificate", "revoked", "expired", "unknown_ca"]) {
        assert!(row.starts_with(reason), "{refused:?}");
    }
    assert!(audit[3..].iter().all(|r| r["outcome"] == "refused"), "{audit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_crl_applies_when_the_file_changes_and_on_sighup() {
    for (interval, by_signal) in [("100ms", false), ("1h", true)] {
        let mut pki = Pki::new("logwarden client CA");
        let host = pki.host("web", "web-01.example.org", false);
        let d = Daemon::start_with(&format!(
            "{}{}",
            trust_section(&pki, interval),
            mtls_listener("mtls", "required")
        ));
        let addr = d.addr("mtls");
        assert!(send_with(addr, cfg(&d, &host), &msg("before revocation")).await);
        wait_until(T, "the first event", || d.count("message = 'before revocation'") == 1);

        pki.write_crl(&[host.serial]);
        if by_signal {
            d.signal("-HUP");
        }
        // Each attempt is a new client (no session to resume): once the CRL is in, it fails.
        wait_until_async(T, "the certificate to be refused as revoked", || async {
            let _ = send_with(addr, cfg(&d, &host), &msg("after revocation")).await;
            failures(&d, "mtls", "revoked") >= 1.0
        })
        .await;
        assert!(d.log_text().contains("client certificate trust reloaded"), "{}", d.log_text());
    }
}

/// `[admin] tls = true` with `client_auth = "required"`: curl (as Prometheus would, with its
/// `tls_config`) scrapes over HTTPS with a certificate; without one, or over plain HTTP, the
/// connection is refused and counted; the scraper's connections are in the audit table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_endpoint_serves_https_to_scrapers_with_a_certificate() {
    let mut pki = Pki::new("scraper CA");
    let scraper = pki.host("prometheus", "prometheus.example.org", false);
    let admin = "[admin]\naddress = \"127.0.0.1:0\"\ntls = true\nclient_auth = \"required\"\n";
    // Starting waits for /readyz over HTTPS with the scraper's certificate.
    let d = Daemon::start_with_admin_cert(
        &format!("{}{admin}", trust_section(&pki, "10s")),
        &scraper.cert,
        &scraper.key,
    );
    let addr = d.addr("admin");
    assert_eq!(d.admin_get("/healthz"), (200, "ok\n".to_owned()));
    assert!(d.metric(r#"logwarden_tls_handshakes_total{listener="admin",result="full"}"#) >= 1.0);

    let without_cert = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(d.ca_file())
        .arg(format!("https://{addr}/metrics"))
        .output()
        .unwrap();
    assert!(!without_cert.status.success(), "a scrape without a certificate must fail");
    assert_eq!(http_get(addr, "/metrics").0, 0, "plain HTTP must get no HTTP answer");
    wait_until(T, "the refusals in the metrics", || {
        failures(&d, "admin", "no_certificate") >= 1.0 && failures(&d, "admin", "protocol") >= 1.0
    });
    let accepted = "SELECT count(*) AS n FROM audit WHERE listener = 'admin' AND outcome = 'accepted' \
                    AND principal = 'dns:prometheus.example.org'";
    wait_until(T, "the scraper in the audit table", || d.query(accepted)[0]["n"].as_i64().unwrap_or(0) >= 1);
}

fn count_of(batches: &[RecordBatch]) -> i64 {
    let a = batches[0].column(0).as_any().downcast_ref::<Int64Array>().unwrap();
    a.value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_rules_decide_who_sends_and_what_they_read() {
    let mut pki = Pki::new("logwarden client CA");
    let cac = pki.cac("cac", "DOE.JOHN.A.1234567890", "john.doe@example.mil", "1234567890@mil");
    let host = pki.host("web", "web-01.example.org", false);
    let extra = format!(
        r#"{trust}{listener}
[flight]
address = "127.0.0.1:0"
client_auth = "optional"
[[flight.tokens]]
name = "analyst"
sha256 = "{analyst}"
[[flight.tokens]]
name = "auditor"
sha256 = "{auditor}"
[access.groups]
shippers = ["web-01.example.org"]
[[access.send]]
principals = ["group:shippers"]
listeners = ["mtls"]
[[access.send]]
principals = ["*"]
listeners = ["plain"]
[[access.query]]
principals = ["analyst"]
tables = ["logs"]
row_filter = "host LIKE 'web-%'"
[[access.query]]
principals = ["auditor"]
tables = ["audit"]
[[access.query]]
principals = ["1234567890"]
tables = ["*"]
"#,
        trust = trust_section(&pki, "10s"),
        listener = mtls_listener("mtls", "required"),
        analyst = sha256_hex("analyst-token"),
        auditor = sha256_hex("auditor-token"),
    );
    let d = Daemon::start_with(&extra);

    // Send rules: the host certificate is a shipper, the CAC is not; `syslog` has no rule.
    assert!(send_with(d.addr("mtls"), cfg(&d, &host), &msg("shipped")).await);
    assert!(!send_with(d.addr("mtls"), cfg(&d, &cac), &msg("not a shipper")).await);
    let anonymous = crate::client::tls_config(&d.ca_file(), &[]);
    assert!(!send_with(d.addr("syslog"), anonymous, &msg("no rule for this listener")).await);
    let mut plain = tokio::net::TcpStream::connect(d.addr("plain")).await.unwrap();
    for host in ["web-1", "web-2", "db-1"] {
        let line = format!("<14>1 2026-11-23T10:00:00Z {host} app - - - plain from {host}");
        tokio::io::AsyncWriteExt::write_all(&mut plain, &octet(&line)).await.unwrap();
    }
    drop(plain);
    wait_until(T, "the allowed events", || d.count("") == 4);
    d.wait_published();
    assert_eq!(d.count("message IN ('not a shipper', 'no rule for this listener')"), 0);
    wait_until(T, "the denials counted", || {
        d.metric("logwarden_access_denied_total{listener=\"mtls\"}") == 1.0
            && d.metric("logwarden_access_denied_total{listener=\"syslog\"}") == 1.0
    });

    // Query rules: the analyst sees only web-% rows, whatever the SQL; the audit table is not theirs.
    let url = format!("https://localhost:{}", d.addr("flight").port());
    let ca = d.ca_file();
    let mut analyst = client::connect(&url, Some(&ca), Some("analyst-token")).await.unwrap();
    for sql in [
        "SELECT count(*) FROM logs",
        "SELECT count(*) FROM (SELECT * FROM logs) t WHERE host LIKE '%'",
        "SELECT count(*) FROM logs WHERE host = 'db-1' OR true",
    ] {
        let n = count_of(&client::query(&mut analyst, sql).await.unwrap());
        assert_eq!(n, 3, "{sql}: the row filter must hold (web-1, web-2 and the shipped web-1 event)");
    }
    let err = client::query(&mut analyst, "SELECT * FROM audit").await.unwrap_err().to_string();
    assert!(err.contains("PermissionDenied") && err.contains("may not query table audit"), "{err}");
    let err =
        client::query(&mut analyst, "SELECT count(*) FROM logs WHERE host IN (SELECT principal FROM audit)")
            .await
            .unwrap_err()
            .to_string();
    assert!(err.contains("may not query table audit"), "{err}");

    // Metadata shows a principal only the tables it may read.
    let info = analyst
        .get_tables(arrow_flight::sql::CommandGetTables {
            db_schema_filter_pattern: Some("public".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut names = Vec::new();
    for ep in info.endpoint {
        let batches: Vec<RecordBatch> =
            futures::TryStreamExt::try_collect(analyst.do_get(ep.ticket.unwrap()).await.unwrap())
                .await
                .unwrap();
        for b in &batches {
            let col = arrow::compute::cast(
                b.column_by_name("table_name").unwrap(),
                &arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            let col = col.as_any().downcast_ref::<arrow::array::StringArray>().unwrap().clone();
            names.extend((0..col.len()).map(|i| col.value(i).to_owned()));
        }
    }
    assert_eq!(names, vec!["logs".to_owned()], "the analyst's GetTables");

    let mut auditor = client::connect(&url, Some(&ca), Some("auditor-token")).await.unwrap();
    let err = client::query(&mut auditor, "SELECT count(*) FROM logs").await.unwrap_err().to_string();
    assert!(err.contains("may not query table logs"), "{err}");
    assert!(count_of(&client::query(&mut auditor, "SELECT count(*) FROM audit").await.unwrap()) > 0);

    // A client certificate without a token: its principal runs the query (every table).
    let mut card =
        client::connect_with_cert(&url, Some(&ca), None, Some((&cac.cert, &cac.key))).await.unwrap();
    assert_eq!(count_of(&client::query(&mut card, "SELECT count(*) FROM logs").await.unwrap()), 4);

    // Every query is in the audit trail with its principal, outcome and rows.
    wait_until(T, "query audit entries", || {
        let rows = d.query(
            "SELECT principal, auth, outcome, rows FROM audit WHERE kind = 'query' AND principal = 'edipi:1234567890'",
        );
        rows.len() == 1
            && rows[0]["auth"] == "certificate"
            && rows[0]["outcome"] == "ok"
            && rows[0]["rows"] == 1
    });
    let denied = d.query(
        "SELECT reason FROM audit WHERE kind = 'query' AND principal = 'token:auditor' AND outcome = 'denied'",
    );
    assert!(
        denied.iter().any(|r| r["reason"].as_str().unwrap_or("").contains("may not query table logs")),
        "{denied:?}"
    );
    assert!(d.log_text().contains("logwarden::audit"), "audit entries are logged too");
}

/// `systemctl reload` changes who may send and query, and revokes a rotated Flight SQL token,
/// without dropping a connection that is already sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_access_rules_and_flight_tokens() {
    use tokio::io::AsyncWriteExt;
    let mut pki = Pki::new("logwarden client CA");
    let web = pki.host("web", "web-01.example.org", false);
    let db = pki.host("db", "db-01.example.org", false);
    let section = |shippers: &str, token: &str, tables: &str| {
        format!(
            r#"{trust}{listener}
[flight]
address = "127.0.0.1:0"
[[flight.tokens]]
name = "analyst"
sha256 = "{token}"
[access.groups]
shippers = [{shippers}]
[[access.send]]
principals = ["group:shippers"]
listeners = ["mtls"]
[[access.send]]
principals = ["*"]
listeners = ["plain"]
[[access.query]]
principals = ["analyst"]
tables = [{tables}]
"#,
            trust = trust_section(&pki, "10s"),
            listener = mtls_listener("mtls", "required"),
            token = sha256_hex(token),
        )
    };
    let d = Daemon::start_with(&section(r#""web-01.example.org""#, "first-token", r#""logs""#));
    assert!(send_with(d.addr("mtls"), cfg(&d, &web), &msg("web before")).await);
    assert!(!send_with(d.addr("mtls"), cfg(&d, &db), &msg("db before")).await);
    // web keeps a connection open across the reload.
    let tcp = tokio::net::TcpStream::connect(d.addr("mtls")).await.unwrap();
    let mut open = tokio_rustls::TlsConnector::from(cfg(&d, &web))
        .connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    open.write_all(&msg("web open before")).await.unwrap();
    open.flush().await.unwrap();
    wait_until(T, "web's events", || d.count("message LIKE 'web%'") == 2);

    let url = format!("https://localhost:{}", d.addr("flight").port());
    let ca = d.ca_file();
    let mut analyst = client::connect(&url, Some(&ca), Some("first-token")).await.unwrap();
    let err = client::query(&mut analyst, "SELECT count(*) FROM audit").await.unwrap_err().to_string();
    assert!(err.contains("may not query table audit"), "{err}");

    // db replaces web among the shippers; the analyst's token is rotated and may read audit.
    let text = std::fs::read_to_string(&d.config).unwrap().replace(
        &section(r#""web-01.example.org""#, "first-token", r#""logs""#),
        &section(r#""db-01.example.org""#, "second-token", r#""logs", "audit""#),
    );
    std::fs::write(&d.config, text).unwrap();
    d.signal("-HUP");
    wait_until(T, "the reload", || {
        let log = d.log_text();
        log.contains("Flight SQL credentials reloaded") && log.contains("configuration reloaded")
    });

    assert!(send_with(d.addr("mtls"), cfg(&d, &db), &msg("db after")).await);
    assert!(!send_with(d.addr("mtls"), cfg(&d, &web), &msg("web after")).await);
    // The connection web opened before the reload was not dropped.
    open.write_all(&msg("web open after")).await.unwrap();
    open.flush().await.unwrap();
    wait_until(T, "db's event and web's on its open connection", || {
        d.count("message IN ('db after', 'web open after')") == 2
    });
    assert_eq!(d.count("message IN ('db before', 'web after')"), 0);

    // The old token no longer authenticates, on a new connection or the existing one.
    let err = client::query(&mut analyst, "SELECT count(*) FROM logs").await.unwrap_err().to_string();
    assert!(err.contains("Unauthenticated"), "{err}");
    let refused = match client::connect(&url, Some(&ca), Some("first-token")).await {
        Err(_) => true,
        Ok(mut c) => client::query(&mut c, "SELECT 1").await.is_err(),
    };
    assert!(refused, "a new connection with the old token was served");
    let mut rotated = client::connect(&url, Some(&ca), Some("second-token")).await.unwrap();
    assert!(count_of(&client::query(&mut rotated, "SELECT count(*) FROM audit").await.unwrap()) > 0);
}

/// A certificate that could pass for a CAC holder (a CN ending in an EDIPI without a DoD-style
/// name, a CN that is only an EDIPI, two CNs) is refused and audited with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_that_could_pose_as_someone_else_are_refused() {
    use rcgen::{DnType, SanType};
    let mut pki = Pki::new("logwarden client CA");
    let dns = |h: &str| vec![SanType::DnsName(h.try_into().unwrap())];
    let posers = [
        pki.issue(
            "suffix",
            &[(DnType::CommonName, "web.prod.1234567890")],
            dns("web.prod.example.org"),
            false,
        ),
        pki.issue("bare", &[(DnType::CommonName, "1234567890")], dns("bare.example.org"), false),
        pki.issue(
            "two",
            &[
                (DnType::CommonName, "web-01"),
                (DnType::CustomDnType(vec![2, 5, 4, 3]), "DOE.JOHN.A.1234567890"),
            ],
            dns("two.example.org"),
            false,
        ),
    ];
    let d =
        Daemon::start_with(&format!("{}{}", trust_section(&pki, "10s"), mtls_listener("mtls", "required")));
    for (i, leaf) in posers.iter().enumerate() {
        assert!(!send_with(d.addr("mtls"), cfg(&d, leaf), &msg("posing")).await, "poser {i} accepted");
        wait_until(T, "the refusal", || failures(&d, "mtls", "ambiguous_identity") == (i + 1) as f64);
    }
    assert_eq!(d.count(""), 0);
    wait_until(T, "the audit entries", || {
        d.query(
            "SELECT count(*) AS n FROM audit WHERE outcome = 'refused' AND reason LIKE 'ambiguous_identity%'",
        )[0]["n"]
            .as_i64()
            == Some(3)
    });
}
