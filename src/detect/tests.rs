//! Scenarios: event streams with known patterns through the rule engine and the built-in
//! detectors, asserting exactly which alerts fire and resolve after each window. Windows are
//! 10 s of explicit event time; feeding window k closes window k-1.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use super::builtin::{self, Detectors};
use super::templates::Shared;
use crate::alert::Alerts;
use crate::alert::notify::{Notifier, NotifyMetrics};
use crate::alert::sink::{AlertSink, Results};
use crate::batch::{EventBatchBuilder, Origin};
use crate::config::{AlertingConfig, BaselineConfig, DetectConfig, RuleConfig};
use crate::ingest::event::Event;
use crate::stream::{Engine, Options, Rule, RuleMetrics};

const S: i64 = 1_000_000_000;
const T0: i64 = 1_767_225_600 * S;
const W: i64 = 10;

struct Scenario {
    engine: Engine,
    alerts: Arc<Alerts>,
    templates: Arc<Shared>,
    window: i64,
    /// Window length in seconds.
    w: i64,
    _dir: tempfile::TempDir,
}

fn notify_metrics() -> NotifyMetrics {
    let v = |n: &str| prometheus::IntCounterVec::new(prometheus::Opts::new(n, n), &["receiver"]).unwrap();
    NotifyMetrics {
        sent: v("s"),
        failed: v("f"),
        dropped: v("d"),
        queued: prometheus::IntGaugeVec::new(prometheus::Opts::new("q", "q"), &["receiver"]).unwrap(),
    }
}

impl Scenario {
    fn new(user: Vec<RuleConfig>) -> Scenario {
        Self::in_dir(user, tempfile::tempdir().unwrap(), 0)
    }

    /// A daemon restarted on `dir` (its saved templates, baselines and alerts) at `window`.
    fn in_dir(user: Vec<RuleConfig>, dir: tempfile::TempDir, window: i64) -> Scenario {
        Self::configured(user, dir, window, |_| {})
    }

    fn configured(
        user: Vec<RuleConfig>,
        dir: tempfile::TempDir,
        window: i64,
        tweak: impl Fn(&mut DetectConfig),
    ) -> Scenario {
        let quick = BaselineConfig {
            window: Duration::from_secs(W as u64),
            warmup: Duration::from_secs(60),
            memory: 10,
            ..BaselineConfig::default()
        };
        let mut detect = DetectConfig {
            volume: quick.clone(),
            error_ratio: BaselineConfig { min_events: 10, ..quick.clone() },
            new_templates: quick,
            allowed_lateness: Duration::ZERO,
            ..DetectConfig::default()
        };
        tweak(&mut detect);
        let configs: Vec<RuleConfig> = user.into_iter().chain(builtin::rules(&detect)).collect();
        let rules: Vec<(RuleConfig, Rule)> = configs
            .into_iter()
            .map(|c| {
                let r = futures::executor::block_on(Rule::compile(&c)).unwrap();
                (c, r)
            })
            .collect();
        let templates = Shared::load(&dir.path().join("templates.json"), None).unwrap();
        let alerts = Alerts::load(dir.path(), None).unwrap();
        let sink = AlertSink {
            alerts: alerts.clone(),
            results: Results::new(dir.path().join("rules"), Duration::from_secs(86_400)),
            notifier: Arc::new(
                Notifier::new(&AlertingConfig::default(), dir.path(), notify_metrics()).unwrap(),
            ),
            latency: prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("l", "l")).unwrap(),
            detectors: Detectors::load(dir.path(), detect.clone(), Some(templates.clone()), None),
        };
        let opts = Options { allowed_lateness: Duration::ZERO, idle: Duration::from_secs(3600) };
        let engine = Engine::new(rules, opts, Box::new(sink), RuleMetrics::unregistered());
        let w = detect.volume.window.as_secs() as i64;
        Scenario { engine, alerts, templates, window, w, _dir: dir }
    }

    /// Feed the next window's events (host, app, severity, message, how many), spread over
    /// it, and return the alerts firing once the previous window has closed, as
    /// `alertname{label=value,...}` (without the labels every alert has).
    fn step(&mut self, events: &[(&str, &str, u8, &str, usize)]) -> Vec<String> {
        let mut b = EventBatchBuilder::new(Origin {
            listener: "l".into(),
            peer: "p".into(),
            client_id: "".into(),
            protocol: crate::ingest::event::Protocol::Syslog,
        });
        let total: usize = events.iter().map(|e| e.4).sum();
        let mut i = 0;
        for (host, app, sev, msg, n) in events {
            for _ in 0..*n {
                let mut ev = Event::raw(Cow::Borrowed(*msg), "");
                ev.decode_error = None;
                ev.timestamp =
                    Some(T0 + self.window * self.w * S + (i as i64 * self.w * S) / total.max(1) as i64);
                ev.host = Some(Cow::Borrowed(*host));
                ev.app = Some(Cow::Borrowed(*app));
                ev.severity = Some(*sev);
                b.append(&ev, 0);
                i += 1;
            }
        }
        let batch = self.templates.stamp(b.finish().unwrap()).unwrap();
        futures::executor::block_on(async {
            self.engine.ingest(&[batch]).await;
            self.engine.close_due(std::time::Instant::now()).await;
        });
        self.window += 1;
        self.firing()
    }

    fn firing(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .alerts
            .firing()
            .iter()
            .map(|a| {
                let labels: Vec<String> = a
                    .labels
                    .iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "severity" | "detector"))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                format!("{}{{{}}}", a.labels["alertname"], labels.join(","))
            })
            .collect();
        out.sort();
        out
    }
}

/// Five web hosts and a database, 40 events each per window.
fn steady() -> Vec<(&'static str, &'static str, u8, &'static str, usize)> {
    vec![
        ("web1", "nginx", 6, "GET /index.html 200", 40),
        ("web2", "nginx", 6, "GET /index.html 200", 40),
        ("web3", "nginx", 6, "GET /index.html 200", 40),
        ("web4", "nginx", 6, "GET /index.html 200", 40),
        ("db1", "postgres", 6, "checkpoint complete", 40),
    ]
}

/// The steady stream plus 200 `api` requests of which `errors` fail (severity 3).
fn with_errors(errors: usize) -> Vec<(&'static str, &'static str, u8, &'static str, usize)> {
    let mut e = steady();
    e.push(("api1", "api", 6, "request ok", 200 - errors));
    e.push(("api1", "api", 3, "request failed: upstream timeout", errors));
    e
}

fn warm_up(s: &mut Scenario) {
    for _ in 0..9 {
        assert_eq!(s.step(&steady()), Vec::<String>::new());
    }
}

#[test]
fn a_burst_fires_volume_spikes_that_resolve_when_it_ends() {
    let mut s = Scenario::new(Vec::new());
    warm_up(&mut s);
    let mut burst = steady();
    burst[0].4 = 400;
    assert!(s.step(&burst).is_empty());
    assert_eq!(
        s.step(&steady()),
        [
            // The burst is all one template, whose rate jumps too.
            "log_template_rate{template_id=1}",
            "log_volume_spike{app=nginx}",
            "log_volume_spike{host=web1}",
            "log_volume_spike{log_severity=6}"
        ]
    );
    assert_eq!(s.step(&steady()), Vec::<String>::new());
}

#[test]
fn baselines_survive_a_restart() {
    let mut s = Scenario::new(Vec::new());
    warm_up(&mut s);
    s.step(&steady());
    s.templates.save().unwrap();
    s.engine.stop();
    let (dir, window) = (s._dir, s.window);
    let mut s = Scenario::in_dir(Vec::new(), dir, window);
    // No second warm-up: a silence right after the restart is noticed.
    let without_db: Vec<_> = steady().into_iter().filter(|e| e.0 != "db1").collect();
    s.step(&without_db);
    assert_eq!(s.step(&without_db), ["host_silent{host=db1}", "log_volume_drop{app=postgres}"]);
}

#[test]
fn a_host_that_goes_silent_is_noticed_and_clears_when_it_is_back() {
    let mut s = Scenario::new(Vec::new());
    warm_up(&mut s);
    let without_db: Vec<_> = steady().into_iter().filter(|e| e.0 != "db1").collect();
    assert!(s.step(&without_db).is_empty());
    assert_eq!(s.step(&without_db), ["host_silent{host=db1}", "log_volume_drop{app=postgres}"]);
    assert_eq!(s.step(&without_db), ["host_silent{host=db1}", "log_volume_drop{app=postgres}"]);
    s.step(&steady());
    assert_eq!(s.step(&steady()), Vec::<String>::new());
}

#[test]
fn a_new_error_template_fires_once_a_new_info_template_does_not() {
    let mut s = Scenario::new(Vec::new());
    warm_up(&mut s);
    let mut e = steady();
    e.push(("db1", "kernel", 3, "EXT4-fs error (device sda1): unable to read inode block 4242", 1));
    e.push(("web2", "nginx", 6, "worker process 77 started", 1));
    s.step(&e);
    let firing = s.step(&steady());
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert!(firing[0].starts_with("new_log_template{app=kernel,template_id="), "{firing:?}");
    let a = &s.alerts.firing()[0];
    assert!(
        a.annotations["summary"].contains("<*>-fs error (device <*>): unable to read inode block <*>"),
        "{:?}",
        a.annotations
    );
    assert_eq!(a.annotations["example"], "EXT4-fs error (device sda1): unable to read inode block 4242");
    // Seen again later, it is no longer new.
    let mut again = steady();
    again.push(("db1", "kernel", 3, "EXT4-fs error (device sdb2): unable to read inode block 7", 1));
    s.step(&again);
    assert_eq!(s.step(&steady()), Vec::<String>::new());
}

#[test]
fn variants_of_a_known_statement_are_not_new() {
    let mut s = Scenario::new(Vec::new());
    let mut known = steady();
    known.push(("gw", "sshd", 4, "Invalid user admin from 203.0.113.9 port 22", 1));
    for _ in 0..9 {
        s.step(&known);
    }
    // A second user makes a template of its own; a third shows the word is a value, and the
    // two merge: the second was a variant of the known statement, never a new one.
    let mut e = known.clone();
    e.push(("gw", "sshd", 4, "Invalid user guest from 203.0.113.9 port 22", 1));
    e.push(("gw", "sshd", 4, "Invalid user oracle from 203.0.113.9 port 22", 1));
    s.step(&e);
    let firing = s.step(&known);
    assert!(!firing.iter().any(|f| f.starts_with("new_log_template")), "{firing:?}");
}

#[test]
fn nothing_is_new_during_the_warm_up() {
    let mut s = Scenario::new(Vec::new());
    let mut e = steady();
    e.push(("db1", "kernel", 2, "disk failure imminent on sda", 1));
    s.step(&e);
    assert_eq!(s.step(&steady()), Vec::<String>::new());
}

#[test]
fn an_error_ratio_jump_fires_for_its_app_only() {
    let mut s = Scenario::new(Vec::new());
    for _ in 0..9 {
        assert_eq!(s.step(&with_errors(4)), Vec::<String>::new());
    }
    s.step(&with_errors(100));
    assert_eq!(
        s.step(&with_errors(4)),
        [
            "error_ratio_high{app=api}",
            // The failure message's template, errors overall, and info events fewer.
            "log_template_rate{template_id=4}",
            "log_volume_drop{log_severity=6}",
            "log_volume_spike{log_severity=3}"
        ]
    );
    assert_eq!(s.step(&with_errors(4)), Vec::<String>::new());
}

#[test]
fn a_brute_force_rule_fires_beside_the_detectors() {
    let rule = RuleConfig {
        name: "ssh_bruteforce".into(),
        window: Duration::from_secs(W as u64),
        sql: "SELECT host, count(*) AS failures FROM events WHERE app = 'sshd' AND message LIKE 'Failed password%' GROUP BY host".into(),
        alert_when: Some("failures > 20".into()),
        ..RuleConfig::default()
    };
    let mut s = Scenario::new(vec![rule]);
    let mut attack = steady();
    attack.push(("bastion", "sshd", 5, "Failed password for root from 203.0.113.9 port 50022 ssh2", 25));
    attack.push(("web1", "sshd", 5, "Failed password for bob from 10.1.1.1 port 40000 ssh2", 3));
    s.step(&attack);
    assert_eq!(s.step(&steady()), ["ssh_bruteforce{host=bastion}"]);
    assert_eq!(s.step(&steady()), Vec::<String>::new());
}

#[test]
fn with_daily_seasonality_each_hour_has_its_own_baseline() {
    let hourly = |d: &mut DetectConfig| {
        d.volume.window = Duration::from_secs(3600);
        d.volume.seasonality = crate::config::Seasonality::Daily;
        d.error_ratio.enabled = false;
        d.new_templates.enabled = false;
    };
    let mut s = Scenario::configured(Vec::new(), tempfile::tempdir().unwrap(), 0, hourly);
    // Quiet nights (00-07), ten times the traffic by day: learned per hour, never an anomaly.
    let at = |hour: i64| -> Vec<_> {
        steady()
            .into_iter()
            .map(|mut e| {
                if hour % 24 >= 8 {
                    e.4 *= 10;
                }
                e
            })
            .collect()
    };
    for hour in 0..24 {
        s.step(&at(hour));
    }
    for hour in 24..74 {
        assert_eq!(s.step(&at(hour)), Vec::<String>::new(), "hour {hour}");
    }
    // A daytime level at night is a spike.
    s.step(&at(12));
    assert_eq!(
        s.step(&at(75)),
        [
            "log_volume_spike{app=nginx}",
            "log_volume_spike{app=postgres}",
            "log_volume_spike{host=db1}",
            "log_volume_spike{host=web1}",
            "log_volume_spike{host=web2}",
            "log_volume_spike{host=web3}",
            "log_volume_spike{host=web4}",
            "log_volume_spike{log_severity=6}"
        ]
    );
}

#[test]
fn the_error_ratio_runs_as_its_own_rule_without_the_volume_detector() {
    let mut s =
        Scenario::configured(Vec::new(), tempfile::tempdir().unwrap(), 0, |d| d.volume.enabled = false);
    for _ in 0..9 {
        assert_eq!(s.step(&with_errors(4)), Vec::<String>::new());
    }
    s.step(&with_errors(100));
    assert_eq!(s.step(&with_errors(4)), ["error_ratio_high{app=api}", "log_template_rate{template_id=4}"]);
}

/// The saved baselines of one detector (`volume`, `error_ratio`, `templates`): key → baseline.
fn saved_keys(s: &Scenario, detector: &str) -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read(s._dir.path().join("baselines.json")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
    v[detector]["keys"].as_object().cloned().unwrap_or_default()
}

#[test]
fn baselines_are_saved_at_most_once_per_interval() {
    let mut s = Scenario::new(Vec::new());
    s.step(&steady());
    s.step(&steady());
    let first = std::fs::read(s._dir.path().join("baselines.json")).expect("saved after the first window");
    for _ in 0..5 {
        s.step(&steady());
    }
    let later = std::fs::read(s._dir.path().join("baselines.json")).unwrap();
    assert!(first == later, "baselines.json was rewritten within baselines_save_interval");
}

#[test]
fn baseline_keys_stay_bounded_however_many_hosts_arrive_and_established_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::configured(Vec::new(), dir, 0, |d| d.max_baseline_keys = 12);
    // An established fleet (8 volume keys), then a flood of names never seen again.
    for _ in 0..3 {
        s.step(&steady());
    }
    for w in 0..6 {
        let names: Vec<String> = (0..10).map(|i| format!("rnd-{w}-{i}")).collect();
        let mut events = steady();
        events.extend(names.iter().map(|n| (n.as_str(), "nginx", 6, "GET /index.html 200", 1)));
        s.step(&events);
    }
    s.engine.stop();
    let keys = saved_keys(&s, "volume");
    assert!(keys.len() <= 12, "{} volume keys kept: {:?}", keys.len(), keys.keys());
    for k in ["host=web1", "host=db1", "app=nginx", "app=postgres", "severity=6"] {
        assert!(keys.contains_key(k), "established key {k} was forgotten: {:?}", keys.keys());
    }
}
