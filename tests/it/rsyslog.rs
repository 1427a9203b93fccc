//! A real rsyslog (Debian's package) forwards over TLS into logwarden, once with RFC 5424 and
//! octet counting, once with the traditional RFC 3164 format and LF framing, and once with
//! omfwd's defaults; every message arrives with its fields.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::daemon::{Daemon, wait_until};

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";
const MESSAGES: usize = 50;

/// A running rsyslogd with a config rendered from a template in tests/fixtures; stopped on drop.
pub struct Rsyslog {
    child: Child,
    dir: tempfile::TempDir,
}

impl Rsyslog {
    fn start(ca_file: &Path, target_port: u16) -> Rsyslog {
        Self::start_with(include_str!("../fixtures/rsyslog.conf.in"), ca_file, target_port)
    }

    fn start_with(template: &str, ca_file: &Path, target_port: u16) -> Rsyslog {
        let (ca, port) = (ca_file.display().to_string(), target_port.to_string());
        Self::start_rendered(
            template,
            &[("@CA_FILE@", &ca), ("@TARGET_PORT_LF@", &port), ("@TARGET_PORT@", &port)],
        )
    }

    /// Start rsyslogd on `template` with `@WORKDIR@` (a temporary directory), `@PORTFILE@`
    /// (where its imtcp writes its port) and `vars` replaced.
    pub fn start_rendered(template: &str, vars: &[(&str, &str)]) -> Rsyslog {
        assert!(
            Path::new(RSYSLOGD).exists(),
            "rsyslogd is not installed: run scripts/test, which installs it"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut conf = template
            .replace("@WORKDIR@", &dir.path().display().to_string())
            .replace("@PORTFILE@", &dir.path().join("port").display().to_string());
        for (k, v) in vars {
            conf = conf.replace(k, v);
        }
        let conf_path = dir.path().join("rsyslog.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::File::create(dir.path().join("rsyslogd.out")).unwrap();
        let child = Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(&conf_path)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start rsyslogd");
        Rsyslog { child, dir }
    }

    /// The port of its imtcp input (plain TCP on loopback), once it listens.
    pub fn port(&mut self) -> u16 {
        let file = self.dir.path().join("port");
        wait_until(Duration::from_secs(30), "rsyslog's imtcp port file", || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("rsyslogd exited with {status}: {}", self.diagnostics());
            }
            std::fs::read_to_string(&file).is_ok_and(|s| s.trim().parse::<u16>().is_ok())
        });
        let port: u16 = std::fs::read_to_string(&file).unwrap().trim().parse().unwrap();
        // rsyslog writes the file once the port is bound, which may be before it listens (seen
        // refused on a loaded machine): wait until a connection is taken.
        wait_until(Duration::from_secs(30), "rsyslog's imtcp to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        port
    }

    fn diagnostics(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!("stdout/stderr:\n{}\ninternal log:\n{}", read("rsyslogd.out"), read("rsyslog-internal.log"))
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- rsyslog ---\n{}", self.diagnostics());
        }
    }
}

#[test]
fn rsyslog_forwards_over_tls_in_both_framings() {
    let d = Daemon::start();
    let mut rs = Rsyslog::start(&d.ca_file(), d.addr("syslog").port());
    let port = rs.port();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    for i in 0..MESSAGES {
        writeln!(s, "<165>1 2024-03-01T12:00:{:02}.250Z web-7 nginx 812 ACCESS [req@32473 path=\"/x\" status=\"200\"] rsyslog message {i}", i % 60).unwrap();
    }
    s.flush().unwrap();
    drop(s);

    wait_until(Duration::from_secs(60), "every message in both framings", || {
        let n = d.count("message LIKE 'rsyslog message %'");
        if n > 2 * MESSAGES as i64 {
            panic!("more events than sent: {n}");
        }
        n == 2 * MESSAGES as i64
    });

    // RFC 5424 over octet counting keeps every header field and the structured data.
    let rows = d.query("SELECT * FROM logs WHERE message = 'rsyslog message 7' ORDER BY msgid NULLS LAST");
    assert_eq!(rows.len(), 2, "{rows:?}");
    let full = &rows[0];
    assert_eq!(full["msgid"], "ACCESS", "{full}");
    assert_eq!(full["host"], "web-7");
    assert_eq!(full["app"], "nginx");
    assert_eq!(full["procid"], "812");
    assert_eq!(full["facility"], 20);
    assert_eq!(full["severity"], 5);
    assert!(full["timestamp"].as_str().unwrap().starts_with("2024-03-01T12:00:07.250"), "{full}");
    let sd: serde_json::Value = serde_json::from_str(full["structured_data"].as_str().unwrap()).unwrap();
    assert_eq!(sd["req@32473"]["status"], "200");

    // The traditional format carries fewer fields; those it has must arrive.
    let trad = &rows[1];
    assert_eq!(trad["host"], "web-7", "{trad}");
    assert_eq!(trad["app"], "nginx");
    assert_eq!(trad["procid"], "812");
    assert_eq!(trad["facility"], 20);
    assert_eq!(trad["severity"], 5);
    assert!(trad["decode_error"].is_null(), "{trad}");
    assert_eq!(d.count("message LIKE 'rsyslog message %' AND decode_error IS NOT NULL"), 0);
}

/// `logger --rfc5424 -t rsyslogtest` into rsyslog, which forwards with omfwd's default template
/// (RSYSLOG_TraditionalForwardFormat): the TAG arrives followed by a space, not a colon, and is
/// still the app (rsyslog's own parser reads it so).
#[test]
fn rsyslog_default_forwarding_keeps_the_tag_as_app() {
    let d = Daemon::start();
    let template = include_str!("../fixtures/rsyslog-default-template.conf.in");
    let mut rs = Rsyslog::start_with(template, &d.ca_file(), d.addr("syslog").port());
    let port = rs.port().to_string();
    for i in 0..MESSAGES {
        let mut logger = Command::new("logger");
        logger.args(["--rfc5424", "--tcp", "--server", "127.0.0.1", "--port", &port, "-t", "rsyslogtest"]);
        if i % 2 == 1 {
            logger.arg("--id=4242");
        }
        let status =
            logger.arg(format!("hello {i}")).status().expect("logger (util-linux) must be installed");
        assert!(status.success(), "logger failed: {status}");
    }

    wait_until(Duration::from_secs(60), "every message", || {
        d.count("message LIKE 'hello %' OR message LIKE '%rsyslogtest%'") >= MESSAGES as i64
    });
    let rows = d.query("SELECT host, app, procid, message, decode_error FROM logs ORDER BY received_at");
    assert_eq!(rows.len(), MESSAGES, "{rows:?}");
    for r in &rows {
        assert_eq!(r["app"], "rsyslogtest", "{r}");
        assert!(r["message"].as_str().unwrap().starts_with("hello "), "{r}");
        assert!(r["host"].as_str().is_some_and(|h| !h.is_empty()), "{r}");
        assert!(r["decode_error"].is_null(), "{r}");
    }
    assert_eq!(d.count("procid = '4242'"), MESSAGES as i64 / 2);
}
