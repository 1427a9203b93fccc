//! `[access]` query grants hold against everything the SQL engine offers: a principal with a row
//! filter learns nothing of a hidden row through errors, plans, metadata or derived tables, on
//! fresh (in-memory) and stored (Parquet) data alike.

use std::time::Duration;

use arrow::array::{Array, RecordBatch};
use arrow_flight::sql::client::FlightSqlServiceClient;
use logwarden::serve::flight::auth::sha256_hex;
use logwarden::serve::flight::client;
use tonic::transport::Channel;

use crate::client::octet;
use crate::daemon::{Daemon, wait_until};

const T: Duration = Duration::from_secs(30);
/// The hidden row's message: not a number, so any cast of it fails and would quote it.
const SECRET: &str = "the db password is swordfish";

fn config(flush_interval: &str) -> String {
    format!(
        r#"[storage]
flush_interval = "{flush_interval}"
[flight]
address = "127.0.0.1:0"
[[flight.tokens]]
name = "bob"
sha256 = "{bob}"
[[flight.tokens]]
name = "root"
sha256 = "{root}"
[[access.query]]
principals = ["bob"]
tables = ["logs"]
row_filter = "host LIKE 'web-%'"
[[access.query]]
principals = ["bob"]
tables = ["audit", "templates", "alerts", "rule_results"]
[[access.query]]
principals = ["root"]
tables = ["*"]
"#,
        bob = sha256_hex("bob-token"),
        root = sha256_hex("root-token"),
    )
}

/// Three granted rows whose messages are numbers (100, 200, 300) and one hidden row.
async fn send_rows(d: &Daemon) {
    let mut plain = tokio::net::TcpStream::connect(d.addr("plain")).await.unwrap();
    // The hidden row also has an app and a MSGID of its own: dictionary values in the same
    // batch as the granted rows.
    for (host, app, msgid, message) in [
        ("web-01", "11", "-", "100"),
        ("web-02", "22", "-", "200"),
        ("web-03", "33", "-", "300"),
        ("db-01", "payroll-export", "SECRET-MSGID", SECRET),
    ] {
        let line = format!("<14>1 2026-11-23T10:00:00Z {host} {app} - {msgid} - {message}");
        tokio::io::AsyncWriteExt::write_all(&mut plain, &octet(&line)).await.unwrap();
    }
    drop(plain);
    wait_until(T, "the four rows", || d.count("") == 4);
    d.wait_published();
}

async fn connect(d: &Daemon, token: &str) -> FlightSqlServiceClient<Channel> {
    let url = format!("https://localhost:{}", d.addr("flight").port());
    client::connect(&url, Some(&d.ca_file()), Some(token)).await.unwrap()
}

/// The first column of a result as text, one entry per row.
fn column(batches: &[RecordBatch]) -> Vec<String> {
    column_at(batches, 0)
}

fn column_at(batches: &[RecordBatch], i: usize) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let a = arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8).unwrap();
        let a = a.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
        out.extend(
            (0..a.len()).map(|i| if a.is_null(i) { "NULL".to_owned() } else { a.value(i).to_owned() }),
        );
    }
    out
}

async fn answer(c: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Result<Vec<String>, String> {
    client::query(c, sql).await.map(|b| column(&b)).map_err(|e| e.to_string())
}

/// Probes that evaluate an expression on the hidden row which fails there (and so would quote
/// it in the error) or counts it: each must answer as if the row did not exist.
const PROBES: &[(&str, &str)] = &[
    (
        "SELECT count(*) FROM logs WHERE CASE WHEN host = 'db-01' THEN CAST(message AS INT) ELSE 0 END = 0",
        "3",
    ),
    ("SELECT sum(CAST(message AS INT)) FROM logs", "600"),
    ("SELECT sum(arrow_cast(message, 'Int64')) FROM logs", "600"),
    ("SELECT count(*) FROM logs WHERE 1 / CASE WHEN host = 'db-01' THEN 0 ELSE 1 END = 1", "3"),
    (
        "SELECT count(*) FROM logs WHERE regexp_like(host, CASE WHEN host = 'db-01' THEN '(' ELSE '.' END)",
        "3",
    ),
    ("SELECT count(*) FROM logs WHERE message ~ 'swordfish'", "0"),
    ("SELECT count(*) FROM logs WHERE host = 'db-01' OR true", "3"),
    ("SELECT count(*) FROM logs a JOIN logs b ON a.host = b.host WHERE CAST(b.message AS INT) > 0", "3"),
    ("SELECT count(*) FROM logs WHERE host IN (SELECT host FROM logs WHERE CAST(message AS INT) >= 0)", "3"),
    ("SELECT (SELECT max(CAST(message AS INT)) FROM logs)", "300"),
    (
        "SELECT count(*) FROM logs l WHERE EXISTS (SELECT 1 FROM logs m WHERE CAST(m.message AS INT) = 100)",
        "3",
    ),
    ("SELECT count(*) FROM (SELECT CAST(message AS BIGINT) AS v FROM logs) t", "3"),
    ("WITH x AS (SELECT * FROM logs) SELECT count(*) FROM x WHERE CAST(message AS INT) > 0", "3"),
    ("SELECT count(*) FROM logs WHERE timestamp > TIMESTAMP '2000-01-01T00:00:00Z'", "3"),
    ("SELECT max(length(message)) FROM logs", "3"),
];

async fn row_filters_hold(stored: bool) {
    let d = Daemon::start_with(&config(if stored { "200ms" } else { "1h" }));
    send_rows(&d).await;
    if stored {
        wait_until(T, "all four rows in Parquet", || d.metric("logwarden_storage_rows") == 4.0);
    }
    let mut bob = connect(&d, "bob-token").await;
    let mut root = connect(&d, "root-token").await;

    // The probe is real: without a row filter the hidden row's text comes back in the error.
    let err = answer(&mut root, PROBES[0].0).await.unwrap_err();
    assert!(err.contains(SECRET), "the unrestricted probe should fail on the hidden row: {err}");
    // The audit trail, which an auditor without any logs grant may read, keeps that failure
    // without the row it quoted.
    let failed =
        "SELECT reason FROM audit WHERE kind = 'query' AND principal = 'token:root' AND outcome <> 'ok'";
    wait_until(T, "root's failed query in the audit trail", || !d.query(failed).is_empty());
    let reasons = d.query(failed);
    assert!(reasons.iter().all(|r| !r["reason"].as_str().unwrap_or("").contains("swordfish")), "{reasons:?}");

    for (sql, want) in PROBES {
        match answer(&mut bob, sql).await {
            Ok(got) => assert_eq!(got, vec![want.to_string()], "{sql}"),
            Err(e) => panic!("{sql}: {e}"),
        }
    }

    // EXPLAIN ANALYZE's metrics describe work on hidden rows too: refused, saying why. EXPLAIN
    // shows the plan, without the filter's text.
    let err = answer(&mut bob, "EXPLAIN ANALYZE SELECT count(*) FROM logs").await.unwrap_err();
    assert!(err.contains("PermissionDenied") && err.contains("may not run EXPLAIN ANALYZE"), "{err}");
    let plan = client::query(&mut bob, "EXPLAIN SELECT count(*) FROM logs").await.unwrap();
    let plan = column_at(&plan, 1).join("\n");
    assert!(plan.contains("RestrictedScanExec") && !plan.contains("web-%"), "{plan}");

    // The hidden row's dictionary values (host, app, msgid) are gone from what bob's
    // expressions see, and template ids (handed out across every host) read as null.
    for (sql, want) in [
        ("SELECT count(*) FROM logs WHERE CAST(msgid AS INT) IS NULL", "3"),
        ("SELECT sum(CAST(app AS INT)) FROM logs", "66"),
        ("SELECT count(template_id) FROM logs", "0"),
        ("SELECT count(*) FROM logs WHERE template_id IS NOT NULL", "0"),
    ] {
        assert_eq!(answer(&mut bob, sql).await, Ok(vec![want.to_owned()]), "{sql}");
    }

    // Catalog metadata shows only what bob may read.
    let tables = answer(
        &mut bob,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name",
    )
    .await
    .unwrap();
    assert_eq!(tables, vec!["logs"]);
    let columns =
        answer(&mut bob, "SELECT column_name FROM information_schema.columns WHERE table_name = 'audit'")
            .await
            .unwrap();
    assert!(columns.is_empty(), "{columns:?}");
    let err = answer(&mut bob, "DESCRIBE audit").await.unwrap_err();
    assert!(err.contains("may not query table audit"), "{err}");
    let described = answer(&mut bob, "DESCRIBE logs").await.unwrap();
    assert!(described.contains(&"message".to_owned()), "{described:?}");

    // Derived tables hold text of every row (root's template examples include the secret), so
    // bob, whose logs grant has a row filter, may not read them although a rule names them.
    let examples = answer(&mut root, "SELECT example FROM templates").await.unwrap();
    assert!(examples.iter().any(|e| e.contains(SECRET)), "{examples:?}");
    for table in ["audit", "templates", "alerts", "rule_results"] {
        let err = answer(&mut bob, &format!("SELECT * FROM {table}")).await.unwrap_err();
        assert!(err.contains("PermissionDenied") && err.contains("row_filter"), "{table}: {err}");
    }
    let err = answer(&mut bob, "SELECT count(*) FROM logs l JOIN templates t ON l.template_id = t.id")
        .await
        .unwrap_err();
    assert!(err.contains("may not query table templates"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_filters_hold_against_every_probe_on_fresh_data() {
    row_filters_hold(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_filters_hold_against_every_probe_on_stored_data() {
    row_filters_hold(true).await;
}
