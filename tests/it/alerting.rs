//! Rules and alerts end to end: events with explicit timestamps sent over the plain syslog
//! listener, rule windows closed by event time, and a real Alertmanager (Debian package
//! `prometheus-alertmanager`) on a loopback port receiving the alerts, read back through its
//! own API (`GET /api/v2/alerts`).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::daemon::{Daemon, http_get, wait_until};

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// A real Alertmanager on 127.0.0.1 (`port` 0: any), with a do-nothing receiver.
struct Alertmanager {
    child: Child,
    addr: SocketAddr,
}

impl Alertmanager {
    fn start(dir: &Path, port: u16) -> Alertmanager {
        Self::start_with(dir, port, None)
    }

    /// With `web_config`, Alertmanager's `--web.config.file` (TLS, client certificates).
    fn start_with(dir: &Path, port: u16, web_config: Option<&str>) -> Alertmanager {
        assert!(
            Path::new(ALERTMANAGER).exists(),
            "{ALERTMANAGER} is missing: run scripts/test, which installs prometheus-alertmanager"
        );
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("alertmanager.yml");
        std::fs::write(&config, "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n").unwrap();
        let mut cmd = Command::new(ALERTMANAGER);
        if let Some(web) = web_config {
            let f = dir.join("web.yml");
            std::fs::write(&f, web).unwrap();
            cmd.arg(format!("--web.config.file={}", f.display()));
        }
        let mut child = cmd
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start alertmanager");
        // It logs `msg="Listening on" address=127.0.0.1:PORT` once its API is up.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent
                    && line.contains("msg=\"Listening on\"")
                    && let Some(a) = line.split("address=").nth(1)
                {
                    let _ = tx.send(a.split_whitespace().next().unwrap_or("").to_owned());
                    sent = true;
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(30)).expect("alertmanager did not start listening");
        Alertmanager { child, addr: addr.parse().unwrap() }
    }

    /// The alerts Alertmanager holds as active (resolved ones are not listed).
    fn alerts(&self) -> Vec<Value> {
        let (status, body) = http_get(self.addr, "/api/v2/alerts");
        if status != 200 {
            return Vec::new();
        }
        serde_json::from_str(body.split("\r\n\r\n").last().unwrap_or(&body)).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 2026-01-01T00:00:00Z plus `s` seconds, as RFC 3339.
fn at(s: u32) -> String {
    format!("2026-01-01T00:{:02}:{:02}Z", s / 60, s % 60)
}

/// RFC 5424 lines over the plain (loopback) stream listener.
fn send(d: &Daemon, lines: &[(u32, &str, &str, &str)]) {
    let mut s = TcpStream::connect(d.addr("plain")).unwrap();
    for (t, host, app, msg) in lines {
        writeln!(s, "<38>1 {} {host} {app} - - - {msg}", at(*t)).unwrap();
    }
    s.flush().unwrap();
}

fn rules_config(am: SocketAddr) -> String {
    format!(
        r#"[detect]
allowed_lateness = "2s"
[[rules]]
name = "ssh_bruteforce"
window = "10s"
sql = """SELECT host, count(*) AS failures FROM events
         WHERE app = 'sshd' AND message LIKE 'Failed password%' GROUP BY host"""
alert_when = "failures > 3"
severity = "warning"
labels = {{ team = "secops" }}
[alerting]
resend_interval = "1s"
[[alerting.alertmanagers]]
url = "http://{am}"
"#
    )
}

const FAIL: &str = "Failed password for root from 10.0.0.9 port 4242 ssh2";

#[test]
fn a_brute_force_alert_reaches_alertmanager_and_resolves() {
    let tmp = tempfile::tempdir().unwrap();
    let am = Alertmanager::start(&tmp.path().join("am"), 0);
    let d = Daemon::start_with(&rules_config(am.addr));

    let mut lines: Vec<(u32, &str, &str, &str)> = (1..=5).map(|t| (t, "web1", "sshd", FAIL)).collect();
    lines.push((6, "web2", "sshd", FAIL));
    lines.push((7, "web2", "sshd", "Accepted password for bob"));
    send(&d, &lines);
    // An event 13 s in moves the watermark (less 2 s of lateness) past the window's end.
    send(&d, &[(13, "web3", "cron", "tick")]);

    wait_until(Duration::from_secs(30), "the alert in Alertmanager", || !am.alerts().is_empty());
    let alerts = am.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let labels = &alerts[0]["labels"];
    assert_eq!(labels["alertname"], "ssh_bruteforce");
    assert_eq!(labels["host"], "web1");
    assert_eq!(labels["severity"], "warning");
    assert_eq!(labels["team"], "secops");
    let summary = alerts[0]["annotations"]["summary"].as_str().unwrap();
    assert!(summary.contains("failures=5"), "{summary}");
    assert!(summary.contains("2026-01-01T00:00:00.000Z"), "{summary}");
    let samples = alerts[0]["annotations"]["samples"].as_str().unwrap();
    assert_eq!(samples.lines().count(), 3, "{samples}");
    assert!(samples.lines().all(|l| l.contains(" web1 sshd[6]: Failed password for root")), "{samples}");
    let query = alerts[0]["annotations"]["query"].as_str().unwrap();
    assert!(query.contains("host = 'web1'"), "{query}");
    assert_eq!(d.metric(r#"logwarden_alerts_firing{rule="ssh_bruteforce",severity="warning"}"#), 1.0);

    // The next window has no failures: the alert resolves, in Alertmanager too.
    send(&d, &[(25, "web3", "cron", "tick")]);
    wait_until(Duration::from_secs(30), "the alert to resolve in Alertmanager", || am.alerts().is_empty());
    assert_eq!(d.metric(r#"logwarden_alerts_firing{rule="ssh_bruteforce",severity="warning"}"#), 0.0);
    let sent = format!(r#"logwarden_alert_notifications_sent_total{{receiver="{}"}}"#, am.addr);
    assert!(d.metric(&sent) >= 2.0, "firing and resolved were both sent");

    // The windows' rows are in rule_results, read over Flight SQL from the running daemon.
    let url = format!("https://localhost:{}", d.addr("flight").port());
    let out = Command::new(crate::daemon::BIN)
        .args(["query", "--config"])
        .arg(&d.config)
        .args(["--server", &url, "--format", "json"])
        .arg("SELECT window_start, alert, \"row\" FROM rule_results WHERE rule = 'ssh_bruteforce' ORDER BY window_start, \"row\"")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let got: Vec<(bool, &str)> =
        rows.iter().map(|r| (r["alert"].as_bool().unwrap(), r["row"].as_str().unwrap())).collect();
    assert_eq!(got, [(true, r#"{"host":"web1","failures":5}"#), (false, r#"{"host":"web2","failures":1}"#)]);

    // The alert is a row of alerts.
    let rows = d.query("SELECT status, labels, summary FROM alerts");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["status"], "resolved");
    assert!(rows[0]["labels"].as_str().unwrap().contains(r#""host":"web1""#));
}

#[test]
fn queued_alerts_survive_a_restart_and_reach_alertmanager_later() {
    let tmp = tempfile::tempdir().unwrap();
    // Learn a free port from an Alertmanager, then stop it: the receiver is down.
    let port = {
        let am = Alertmanager::start(&tmp.path().join("am1"), 0);
        am.addr.port()
    };
    let am_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut d = Daemon::start_with(&rules_config(am_addr));
    let mut lines: Vec<(u32, &str, &str, &str)> = (1..=4).map(|t| (t, "db1", "sshd", FAIL)).collect();
    lines.push((13, "web3", "cron", "tick"));
    send(&d, &lines);
    let queued = format!(r#"logwarden_alert_notifications_queued{{receiver="{am_addr}"}}"#);
    wait_until(Duration::from_secs(30), "a queued notification", || d.metric(&queued) >= 1.0);
    assert!(
        d.metric(&format!(r#"logwarden_alert_notifications_failed_total{{receiver="{am_addr}"}}"#)) >= 1.0
    );

    assert!(d.terminate(Duration::from_secs(30)).success());
    let outbox = d.data_dir().join("alerts/outbox");
    assert!(std::fs::read_dir(&outbox).unwrap().next().is_some());
    d.spawn();
    let am = Alertmanager::start(&tmp.path().join("am2"), port);
    wait_until(Duration::from_secs(60), "the queued alert in Alertmanager", || {
        am.alerts().iter().any(|a| a["labels"]["host"] == "db1")
    });
    // Still firing after the restart: the state was kept, so it was not announced as new.
    assert_eq!(d.metric(r#"logwarden_alerts_firing{rule="ssh_bruteforce",severity="warning"}"#), 1.0);
}

#[test]
fn a_bad_rule_is_refused_by_validate_with_its_name_and_datafusion_message() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("bad.toml");
    std::fs::write(
        &file,
        r#"[[rules]]
name = "good"
sql = "SELECT host, count(*) AS n FROM events GROUP BY host"
[[rules]]
name = "typo"
sql = "SELECT hots, count(*) AS n FROM events GROUP BY hots"
[[rules]]
name = "bad_condition"
sql = "SELECT host, count(*) AS n FROM events GROUP BY host"
alert_when = "m > 3"
"#,
    )
    .unwrap();
    let out = Command::new(crate::daemon::BIN).arg("validate").arg(&file).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}: rules[1].sql: rule \"typo\": ", file.display())), "{err}");
    assert!(err.contains("hots"), "{err}");
    assert!(err.contains("rules[2].alert_when: rule \"bad_condition\": "), "{err}");
    assert!(!err.contains("rules[0]"), "{err}");
}

/// Requests received: the signature header and the body.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// A webhook receiver on loopback: every request's signature header and body.
struct Hook {
    addr: SocketAddr,
    got: Received,
}

impl Hook {
    fn start() -> Hook {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Received::default();
        let g = got.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { break };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let (mut len, mut sig) = (0usize, String::new());
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if lower.starts_with("x-logwarden-signature:") {
                        sig = line.split_once(':').unwrap().1.trim().to_owned();
                    }
                    line.clear();
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                g.lock().unwrap().push((sig, body));
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            }
        });
        Hook { addr, got }
    }

    fn bodies(&self) -> Vec<(String, Value)> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(s, b)| (s.clone(), serde_json::from_slice(b).unwrap()))
            .collect()
    }
}

fn hook_config(hook: SocketAddr, secret: &Path, rules: &str) -> String {
    format!(
        r#"[detect]
allowed_lateness = "2s"
{rules}
[alerting]
group_by = ["alertname"]
resend_interval = "1s"
repeat_interval = "1s"
[[alerting.webhooks]]
name = "ops"
url = "http://{hook}/logwarden"
secret_file = "{}"
"#,
        secret.display()
    )
}

const BRUTE_RULE: &str = r#"[[rules]]
name = "ssh_bruteforce"
window = "10s"
sql = "SELECT host, count(*) AS failures FROM events WHERE app = 'sshd' AND message LIKE 'Failed password%' GROUP BY host"
alert_when = "failures > 3"
"#;

#[test]
fn webhooks_get_grouped_alerts_signed_with_hmac() {
    use hmac::{Hmac, Mac};
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("webhook.secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let hook = Hook::start();
    let d = Daemon::start_with(&hook_config(hook.addr, &secret, BRUTE_RULE));
    let mut lines: Vec<(u32, &str, &str, &str)> = Vec::new();
    for host in ["web1", "web2"] {
        lines.extend((1..=4).map(|t| (t, host, "sshd", FAIL)));
    }
    lines.push((13, "web3", "cron", "tick"));
    send(&d, &lines);
    wait_until(Duration::from_secs(30), "a webhook notification", || !hook.bodies().is_empty());
    let (sig, body) = hook.bodies().remove(0);
    // Both hosts' alerts share the alertname: one notification.
    assert_eq!(body["status"], "firing");
    assert_eq!(body["receiver"], "ops");
    assert_eq!(body["groupLabels"]["alertname"], "ssh_bruteforce");
    let hosts: Vec<&str> =
        body["alerts"].as_array().unwrap().iter().map(|a| a["labels"]["host"].as_str().unwrap()).collect();
    assert_eq!(hosts, ["web1", "web2"]);
    // The signature is HMAC-SHA256 of the body as sent, with the key without its newline.
    let raw = hook.got.lock().unwrap()[0].1.clone();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(&raw);
    let want: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(sig, format!("sha256={want}"));

    // Still firing after repeat_interval: the webhook hears of it again.
    wait_until(Duration::from_secs(30), "a repeated notification", || {
        hook.bodies().iter().filter(|(_, b)| b["status"] == "firing").count() >= 2
    });
}

#[test]
fn sighup_reloads_rules_and_a_bad_one_does_not_stop_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("webhook.secret");
    std::fs::write(&secret, "k").unwrap();
    let hook = Hook::start();
    let d = Daemon::start_with(&hook_config(hook.addr, &secret, BRUTE_RULE));
    // A broken rule and a new good one; the brute-force rule unchanged.
    let more = format!(
        "{BRUTE_RULE}[[rules]]\nname = \"broken\"\nsql = \"SELECT nosuch FROM events\"\n\
         [[rules]]\nname = \"criticals\"\nwindow = \"10s\"\nsql = \"SELECT host, count(*) AS n FROM events WHERE severity <= 2 GROUP BY host\"\n"
    );
    let text = std::fs::read_to_string(&d.config).unwrap().replace(BRUTE_RULE, &more);
    std::fs::write(&d.config, text).unwrap();
    d.signal("-HUP");
    wait_until(Duration::from_secs(30), "the refusal in the log", || {
        let log = d.log_text();
        log.contains("rule refused at reload") && log.contains("rules[1].sql") && log.contains("broken")
            // The engine took the new set (the refusal is logged before it is handed over).
            && log.contains("rules reloaded")
    });
    let mut lines: Vec<(u32, &str, &str, &str)> = (1..=4).map(|t| (t, "web1", "sshd", FAIL)).collect();
    send(&d, &lines);
    lines = vec![(13, "web3", "cron", "tick")];
    // A critical event: <34> is auth.crit.
    let mut s = TcpStream::connect(d.addr("plain")).unwrap();
    writeln!(s, "<34>1 {} db1 kernel - - - disk failure", at(2)).unwrap();
    drop(s);
    send(&d, &lines);
    wait_until(Duration::from_secs(30), "both rules' alerts", || {
        let names: Vec<String> = hook
            .bodies()
            .iter()
            .flat_map(|(_, b)| b["alerts"].as_array().cloned().unwrap_or_default())
            .map(|a| a["labels"]["alertname"].as_str().unwrap_or("").to_owned())
            .collect();
        names.iter().any(|n| n == "ssh_bruteforce") && names.iter().any(|n| n == "criticals")
    });

    // A rule taken out of the config: its alert is over.
    let text = std::fs::read_to_string(&d.config).unwrap().replacen(BRUTE_RULE, "", 1);
    std::fs::write(&d.config, text).unwrap();
    d.signal("-HUP");
    wait_until(Duration::from_secs(30), "the removed rule's alert to resolve", || {
        hook.bodies()
            .iter()
            .flat_map(|(_, b)| b["alerts"].as_array().cloned().unwrap_or_default())
            .any(|a| a["labels"]["alertname"] == "ssh_bruteforce" && a["status"] == "resolved")
    });
}

#[test]
fn alerts_reach_an_alertmanager_over_tls_with_a_client_certificate() {
    let mut pki = crate::pki::Pki::new("alerting CA");
    let server = pki.server("alertmanager");
    let client = pki.issue("logwarden", &[(rcgen::DnType::CommonName, "logwarden")], Vec::new(), false);
    let web = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n",
        server.cert.display(),
        server.key.display(),
        pki.ca().display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let am = Alertmanager::start_with(&tmp.path().join("am"), 0, Some(&web));
    let rules = rules_config(am.addr).replace(
        &format!("url = \"http://{}\"", am.addr),
        &format!(
            "url = \"https://localhost:{}\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"",
            am.addr.port(),
            pki.ca().display(),
            client.cert.display(),
            client.key.display()
        ),
    );
    let d = Daemon::start_with(&rules);
    let mut lines: Vec<(u32, &str, &str, &str)> = (1..=4).map(|t| (t, "web9", "sshd", FAIL)).collect();
    lines.push((13, "web3", "cron", "tick"));
    send(&d, &lines);
    // Read back over TLS too, as the daemon's client certificate's peer would.
    let get = || {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5", "--cacert"])
            .arg(pki.ca())
            .arg("--cert")
            .arg(&client.cert)
            .arg("--key")
            .arg(&client.key)
            .arg(format!("https://localhost:{}/api/v2/alerts", am.addr.port()))
            .output()
            .unwrap();
        serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap_or_default()
    };
    wait_until(Duration::from_secs(30), "the alert in Alertmanager over TLS", || {
        get().iter().any(|a| a["labels"]["host"] == "web9")
    });
    let sent =
        format!(r#"logwarden_alert_notifications_sent_total{{receiver="localhost:{}"}}"#, am.addr.port());
    assert!(d.metric(&sent) >= 1.0);
}

/// A reload adds an Alertmanager (and shortens the resend interval): alerts already firing
/// reach it. It also switches a built-in detector off.
#[test]
fn sighup_reloads_alerting_receivers_and_detector_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let am = Alertmanager::start(&tmp.path().join("am"), 0);
    let full = rules_config(am.addr);
    let without_receivers = &full[..full.find("[alerting]").unwrap()];
    let d = Daemon::start_with(without_receivers);
    let mut lines: Vec<(u32, &str, &str, &str)> = (1..=4).map(|t| (t, "web1", "sshd", FAIL)).collect();
    lines.push((13, "web3", "cron", "tick"));
    send(&d, &lines);
    wait_until(Duration::from_secs(30), "the alert firing (no receiver yet)", || {
        d.metric(r#"logwarden_alerts_firing{rule="ssh_bruteforce",severity="warning"}"#) == 1.0
    });
    assert!(am.alerts().is_empty());

    let text = format!(
        "{}\n[detect.volume]\nenabled = false\n[alerting]\nresend_interval = \"1s\"\n[[alerting.alertmanagers]]\nurl = \"http://{}\"\n",
        std::fs::read_to_string(&d.config).unwrap(),
        am.addr
    );
    std::fs::write(&d.config, text).unwrap();
    d.signal("-HUP");
    wait_until(Duration::from_secs(30), "the firing alert at the new Alertmanager", || {
        am.alerts().iter().any(|a| a["labels"]["alertname"] == "ssh_bruteforce")
    });
    let log = d.log_text();
    assert!(log.contains("alerting reloaded"), "{log}");
    let reloaded = log.lines().rfind(|l| l.contains("rules reloaded")).unwrap_or_default();
    assert!(reloaded.contains("ssh_bruteforce") && !reloaded.contains("\"volume\""), "{reloaded}");
}
