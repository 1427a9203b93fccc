use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;

use super::*;
use crate::batch::{EventBatchBuilder, Origin};
use crate::ingest::event::Event;

const S: i64 = 1_000_000_000;
/// 2026-01-01T00:00:00Z: event times are explicit, far from the wall clock.
const T0: i64 = 1_767_225_600 * S;

fn events(rows: &[(i64, &str, &str, u8, &str)]) -> RecordBatch {
    let mut b = EventBatchBuilder::new(Origin {
        listener: "l".into(),
        peer: "p".into(),
        client_id: "".into(),
        protocol: crate::ingest::event::Protocol::Syslog,
    });
    for (ts, host, app, sev, msg) in rows {
        let mut ev = Event::raw(Cow::Borrowed(*msg), "");
        ev.decode_error = None;
        ev.timestamp = Some(T0 + ts);
        ev.host = Some(Cow::Borrowed(*host));
        ev.app = Some(Cow::Borrowed(*app));
        ev.severity = Some(*sev);
        b.append(&ev, 0);
    }
    b.finish().unwrap()
}

/// Every window output as `rule [start,end) row; row` in seconds after T0, alerting rows
/// marked with `!`.
#[derive(Clone, Default)]
struct Record(Arc<Mutex<Vec<String>>>);

impl Sink for Record {
    fn window_closed(&mut self, out: &WindowOutput<'_>) {
        let mut rows = Vec::new();
        for (b, a) in out.batches.iter().zip(out.alerting) {
            let text =
                arrow::util::pretty::pretty_format_batches(std::slice::from_ref(b)).unwrap().to_string();
            let lines: Vec<&str> = text.lines().filter(|l| l.starts_with('|')).skip(1).collect();
            for (i, l) in lines.iter().enumerate() {
                let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
                rows.push(format!("{}{}", if a.value(i) { "!" } else { "" }, cells.join(",")));
            }
        }
        rows.sort();
        self.0.lock().unwrap().push(format!(
            "{} [{},{}) {}",
            out.rule.name,
            (out.start - T0) / S,
            (out.end - T0) / S,
            rows.join("; ")
        ));
    }
}

fn rule(
    name: &str,
    window: u64,
    every: Option<u64>,
    sql: &str,
    alert_when: Option<&str>,
) -> (RuleConfig, Rule) {
    let cfg = RuleConfig {
        name: name.into(),
        window: Duration::from_secs(window),
        every: every.map(Duration::from_secs),
        sql: sql.into(),
        alert_when: alert_when.map(Into::into),
        ..RuleConfig::default()
    };
    let r = futures::executor::block_on(Rule::compile(&cfg)).unwrap();
    (cfg, r)
}

fn engine(rules: Vec<(RuleConfig, Rule)>, lateness: u64) -> (Engine, Record, RuleMetrics) {
    let rec = Record::default();
    let m = RuleMetrics::unregistered();
    let opts = Options { allowed_lateness: Duration::from_secs(lateness), idle: Duration::from_secs(3600) };
    (Engine::new(rules, opts, Box::new(rec.clone()), m.clone()), rec, m)
}

async fn feed(e: &mut Engine, rows: &[(i64, &str, &str, u8, &str)]) {
    e.ingest(&[events(rows)]).await;
    e.close_due(Instant::now()).await;
}

fn taken(rec: &Record) -> Vec<String> {
    std::mem::take(&mut *rec.0.lock().unwrap())
}

const BRUTE: &str = "SELECT host, count(*) AS failures FROM events \
    WHERE app = 'sshd' AND message LIKE 'Failed password%' GROUP BY host";

#[tokio::test]
async fn brute_force_alerts_per_host_when_its_window_closes() {
    let (mut e, rec, _) = engine(vec![rule("ssh_bruteforce", 60, None, BRUTE, Some("failures > 3"))], 5);
    let fail = "Failed password for root from 10.0.0.9 port 4242 ssh2";
    let mut rows = Vec::new();
    for i in 0..5 {
        rows.push((i * S, "web1", "sshd", 4, fail));
    }
    rows.push((10 * S, "web2", "sshd", 4, fail));
    rows.push((11 * S, "web2", "sshd", 6, "Accepted password for bob"));
    rows.push((12 * S, "web2", "cron", 6, fail));
    feed(&mut e, &rows).await;
    assert!(taken(&rec).is_empty(), "nothing closes before the watermark passes 60 s");
    // 64 s less 5 s of lateness: not yet.
    feed(&mut e, &[(64 * S, "web3", "sshd", 6, "hello")]).await;
    assert!(taken(&rec).is_empty());
    feed(&mut e, &[(65 * S, "web3", "sshd", 6, "hello")]).await;
    assert_eq!(taken(&rec), ["ssh_bruteforce [0,60) !web1,5; web2,1"]);
}

#[tokio::test]
async fn states_fold_across_many_batches_and_averages_stay_exact() {
    let sql = "SELECT host, count(*) AS n, avg(severity) AS sev, min(message) AS first, \
               count(DISTINCT app) AS apps FROM events GROUP BY host";
    let (mut e, rec, _) = engine(vec![rule("r", 60, None, sql, None)], 0);
    // Enough batches in one pane that its states are folded several times.
    for i in 0..(window::COMPACT_AT as i64 * 3) {
        let sev = if i % 2 == 0 { 2 } else { 4 };
        let app = if i % 3 == 0 { "a" } else { "b" };
        e.ingest(&[events(&[
            (i * S / 10, "h", app, sev, &format!("m{i:03}")),
            (i * S / 10, "g", "a", 7, "x"),
        ])])
        .await;
    }
    feed(&mut e, &[(61 * S, "z", "a", 0, "tick")]).await;
    assert_eq!(taken(&rec), ["r [0,60) !g,96,7.0,x,1; !h,96,3.0,m000,2"]);
}

#[tokio::test]
async fn hopping_windows_share_their_panes() {
    let sql = "SELECT count(*) AS n FROM events";
    let (mut e, rec, _) = engine(vec![rule("hop", 60, Some(20), sql, Some("n >= 3"))], 0);
    for t in [5, 25, 45, 65, 85] {
        feed(&mut e, &[(t * S, "h", "a", 6, "x")]).await;
    }
    feed(&mut e, &[(125 * S, "h", "a", 6, "x")]).await;
    assert_eq!(
        taken(&rec),
        [
            "hop [-40,20) 1",
            "hop [-20,40) 2",
            "hop [0,60) !3",
            "hop [20,80) !3",
            "hop [40,100) !3",
            "hop [60,120) 2"
        ]
    );
}

#[tokio::test]
async fn late_events_are_counted_and_out_of_order_ones_still_count() {
    let (mut e, rec, m) = engine(vec![rule("n", 10, None, "SELECT count(*) AS n FROM events", None)], 5);
    feed(&mut e, &[(S, "h", "a", 6, "x"), (12 * S, "h", "a", 6, "x")]).await;
    // Out of order but within the allowed lateness: window [0,10) is still open.
    feed(&mut e, &[(3 * S, "h", "a", 6, "x")]).await;
    feed(&mut e, &[(16 * S, "h", "a", 6, "x")]).await;
    assert_eq!(taken(&rec), ["n [0,10) !2"]);
    // Window [0,10) is closed: an event for it now is late, counted, and changes nothing.
    feed(&mut e, &[(4 * S, "h", "a", 6, "x"), (14 * S, "h", "a", 6, "x")]).await;
    assert_eq!(m.late.with_label_values(&["n"]).get(), 1);
    feed(&mut e, &[(26 * S, "h", "a", 6, "x")]).await;
    assert_eq!(taken(&rec), ["n [10,20) !3"]);
}

#[tokio::test]
async fn duplicate_events_count_as_delivered() {
    // Syslog has no event ids: a shipper's resend is two events, as in `logs`.
    let (mut e, rec, _) =
        engine(vec![rule("n", 10, None, "SELECT host, count(*) AS n FROM events GROUP BY host", None)], 0);
    let row = (S, "h", "a", 6, "same");
    feed(&mut e, &[row, row]).await;
    feed(&mut e, &[row]).await;
    feed(&mut e, &[(10 * S, "x", "a", 6, "tick")]).await;
    assert_eq!(taken(&rec), ["n [0,10) !h,3"]);
}

#[tokio::test]
async fn a_rule_without_aggregation_keeps_its_rows() {
    let sql = "SELECT host, message FROM events WHERE severity <= 2";
    let (mut e, rec, _) = engine(vec![rule("crit", 10, None, sql, None)], 0);
    feed(&mut e, &[(S, "h", "a", 2, "disk on fire"), (2 * S, "h", "a", 6, "fine")]).await;
    feed(&mut e, &[(3 * S, "g", "a", 0, "power lost")]).await;
    feed(&mut e, &[(10 * S, "h", "a", 6, "tick")]).await;
    assert_eq!(taken(&rec), ["crit [0,10) !g,power lost; !h,disk on fire"]);
}

#[tokio::test]
async fn a_silent_window_still_closes_with_a_zero_count() {
    let sql = "SELECT count(*) AS n FROM events WHERE host = 'db1'";
    let (mut e, rec, _) = engine(vec![rule("silent", 10, None, sql, Some("n = 0"))], 0);
    feed(&mut e, &[(S, "db1", "a", 6, "x")]).await;
    feed(&mut e, &[(11 * S, "web", "a", 6, "x")]).await;
    feed(&mut e, &[(21 * S, "web", "a", 6, "x")]).await;
    assert_eq!(taken(&rec), ["silent [0,10) 1", "silent [10,20) !0"]);
}

fn problem(sql: &str, alert_when: Option<&str>) -> String {
    let cfg = RuleConfig {
        name: "bad".into(),
        sql: sql.into(),
        alert_when: alert_when.map(Into::into),
        ..RuleConfig::default()
    };
    let (_, p) = compile_rules(&[cfg]);
    assert_eq!(p.len(), 1, "{sql}");
    p[0].to_string()
}

#[test]
fn bad_rules_are_refused_with_their_name_and_the_reason() {
    let p = problem("SELECT hots FROM events", None);
    assert!(p.starts_with("rules[0].sql: rule \"bad\": "), "{p}");
    assert!(p.contains("hots"), "{p}");
    let p = problem("SELECT sum(message) FROM events", None);
    assert!(p.contains("rules[0].sql") && p.contains("sum(Utf8)"), "{p}");
    let p = problem("SELECT a.host FROM events a JOIN events b ON a.host = b.host", None);
    assert!(p.contains("joins"), "{p}");
    let p = problem("SELECT count(*) FROM (SELECT host, count(*) AS n FROM events GROUP BY host)", None);
    assert!(p.contains("aggregate once"), "{p}");
    let p = problem("SELECT host, count(*) AS n FROM events GROUP BY host", Some("m > 3"));
    assert!(p.starts_with("rules[0].alert_when: rule \"bad\": "), "{p}");
    let p = problem("SELECT host, count(*) AS n FROM events GROUP BY host", Some("n + 1"));
    assert!(p.contains("not a condition"), "{p}");
}

/// Found by the `config` fuzz target: DataFusion suggests a function for an unknown one among
/// the nearest names in hash order, so loading the same file twice gave two different errors.
#[test]
fn an_unknown_function_is_refused_with_the_same_hint_every_time() {
    let first = problem("SELECT nt(*) AS n FROM events", None);
    assert!(first.contains("Invalid function 'nt'") && first.contains("Did you mean"), "{first}");
    for _ in 0..20 {
        assert_eq!(problem("SELECT nt(*) AS n FROM events", None), first);
    }
    let p = problem("SELECT host, countt(*) AS n FROM events GROUP BY host", None);
    assert!(p.contains("Did you mean 'count'?"), "{p}");
}

#[tokio::test]
async fn an_event_from_the_far_future_does_not_close_everyones_windows() {
    let (mut e, rec, m) = engine(vec![rule("n", 10, None, "SELECT count(*) AS n FROM events", None)], 0);
    feed(&mut e, &[(S, "h", "a", 6, "x")]).await;
    // A sender whose clock says 2100.
    let far = 4_102_444_800 * S - T0;
    feed(&mut e, &[(far, "skewed", "a", 6, "from the future"), (2 * S, "h", "a", 6, "x")]).await;
    assert!(taken(&rec).is_empty(), "the window [0,10) is still open");
    assert_eq!(m.late.with_label_values(&["n"]).get(), 1);
    feed(&mut e, &[(11 * S, "h", "a", 6, "x")]).await;
    assert_eq!(taken(&rec), ["n [0,10) !2"]);
}
