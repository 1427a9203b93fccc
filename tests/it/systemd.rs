//! The daemon under a service manager: the sd_notify protocol read from a real Unix datagram
//! socket set as `NOTIFY_SOCKET`, the watchdog withheld while the pipeline is stalled, reload
//! on SIGHUP, and listening sockets passed through `LISTEN_FDS` (handed over by `sh`, as
//! systemd would, without binding anything in the daemon).

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::{BIN, Daemon, test_config, wait_until};

const T: Duration = Duration::from_secs(30);

/// The service manager's end of `NOTIFY_SOCKET`: every message received, in order.
struct Manager {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Manager {
    fn bind(path: &std::path::Path) -> Manager {
        let socket = UnixDatagram::bind(path).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        Manager { socket, seen: Vec::new() }
    }

    /// Receive until a message satisfies `pred` (returned), failing after `T`.
    fn until(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        let mut buf = vec![0u8; 4096];
        while start.elapsed() < T {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(msg.clone());
                if pred(&msg) {
                    return msg;
                }
            }
        }
        panic!("no {what} from the daemon within {T:?}; received: {:#?}", self.seen);
    }

    /// The messages received after the `from`-th.
    fn since(&self, from: usize) -> &[String] {
        &self.seen[from..]
    }
}

fn has(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

#[test]
fn notify_ready_watchdog_reload_stall_and_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("notify.sock");
    let stall = tmp.path().join("stall");
    let mut manager = Manager::bind(&sock);
    let mut d = Daemon::start_with_env(
        "",
        &[
            ("NOTIFY_SOCKET", sock.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
            ("LOGWARDEN_TEST_STALL_WAL", stall.to_str().unwrap()),
        ],
    );

    let ready = manager.until("READY=1", |m| has(m, "READY=1"));
    assert!(ready.contains("STATUS="), "{ready}");
    for _ in 0..2 {
        manager.until("WATCHDOG=1", |m| has(m, "WATCHDOG=1"));
    }
    wait_until(T, "the data directory's disk in /metrics", || {
        d.metric("logwarden_data_dir_size_bytes") > 0.0 && d.metric("logwarden_data_dir_free_bytes") > 0.0
    });
    let status = manager.until("a status line with the rate", |m| m.contains(" events/s, "));
    assert!(status.contains("connections") && status.contains("alerts firing"), "{status}");

    // Reload: RELOADING=1 with the monotonic time, then READY=1.
    d.signal("-HUP");
    let reloading = manager.until("RELOADING=1", |m| has(m, "RELOADING=1"));
    assert!(reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")), "{reloading}");
    let after = manager.until("READY=1 after the reload", |m| has(m, "READY=1"));
    assert!(after.contains("STATUS=reloaded"), "{after}");

    // An invalid config is refused: READY=1 again, the reason in STATUS=, the old config runs.
    let good = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, format!("{good}\n[storage]\nzstd_level = 99\n")).unwrap();
    d.signal("-HUP");
    manager.until("RELOADING=1", |m| has(m, "RELOADING=1"));
    let refused = manager.until("READY=1 after the refused reload", |m| has(m, "READY=1"));
    assert!(refused.contains("reload refused") && refused.contains("zstd_level"), "{refused}");
    let later = manager.until("a status line", |m| m.contains(" events/s, "));
    assert!(later.contains("last reload refused"), "{later}");
    let mut s = std::net::TcpStream::connect(d.addr("plain")).unwrap();
    s.write_all(b"<13>Oct 11 22:14:15 h app: after a refused reload\n").unwrap();
    // (`logwarden query` reads the file too: give it back the good one first.)
    std::fs::write(&d.config, good).unwrap();
    wait_until(T, "the event, on the old config", || d.count("message = 'after a refused reload'") == 1);

    // A setting read only at start is applied by no reload: the reload says which keys wait
    // for a restart, and the status line keeps saying so.
    let good = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, good.replace("shutdown_timeout = \"15s\"", "shutdown_timeout = \"16s\""))
        .unwrap();
    d.signal("-HUP");
    manager.until("RELOADING=1", |m| has(m, "RELOADING=1"));
    let applied = manager.until("READY=1 after the reload", |m| has(m, "READY=1"));
    assert!(applied.contains("STATUS=reloaded, needs a restart to apply shutdown_timeout"), "{applied}");
    let later = manager.until("a status line", |m| m.contains(" events/s, "));
    assert!(later.contains("last reload applied, but needs a restart to apply shutdown_timeout"), "{later}");
    std::fs::write(&d.config, good).unwrap();

    // A stalled WAL thread stops the pings; they come back when it moves again.
    std::fs::write(&stall, b"").unwrap();
    manager.until("STATUS= saying the pipeline stalled", |m| m.contains("STALLED"));
    let from = manager.seen.len();
    for _ in 0..3 {
        manager.until("a status line", |m| m.contains("STATUS="));
    }
    assert!(
        !manager.since(from).iter().any(|m| has(m, "WATCHDOG=1")),
        "pinged while stalled: {:#?}",
        manager.since(from)
    );
    std::fs::remove_file(&stall).unwrap();
    manager.until("WATCHDOG=1 after the stall", |m| has(m, "WATCHDOG=1"));
    assert!(d.log_text().contains("watchdog pings withheld"));

    let status = d.terminate(T);
    assert!(status.success(), "{status}");
    manager.until("STOPPING=1", |m| has(m, "STOPPING=1"));
}

#[test]
fn listening_sockets_are_taken_from_listen_fds() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = tmp.path().join("logwarden.toml");
    // The listener's configured address is a port nobody could bind twice: it must not be used.
    std::fs::write(&config, test_config(&data, "")).unwrap();
    // Two sockets under the listener's name, as a socket unit with two ListenStream= for one
    // FileDescriptorName= passes them (on IPv4 and IPv6, say): both are served.
    let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let second = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (addr, addr2) = (first.local_addr().unwrap(), second.local_addr().unwrap());
    let log = std::fs::File::create(tmp.path().join("daemon.log")).unwrap();
    // As systemd does: the sockets are fds 3 and 4, LISTEN_PID is the daemon's own pid (sh
    // execs it). They arrive as the shell's stdin and stdout.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(
            r#"exec 3<&0 4>&1 0</dev/null 1>&2; LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=plain:plain exec "$0" serve --config "$1""#,
        )
        .arg(BIN)
        .arg(&config)
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(first)))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(second)))
        .stderr(log)
        .spawn()
        .unwrap();
    let listeners = data.join("listeners.json");
    wait_until(T, "listeners.json", || {
        assert!(child.try_wait().unwrap().is_none(), "exited early");
        listeners.exists()
    });
    let bound: std::collections::HashMap<String, std::net::SocketAddr> =
        serde_json::from_str(&std::fs::read_to_string(&listeners).unwrap()).unwrap();
    assert_eq!(bound["plain"], addr, "the passed socket serves the listener");

    for (to, message) in [(addr, "through a passed socket"), (addr2, "through the second passed socket")] {
        let mut s = std::net::TcpStream::connect(to).unwrap();
        s.write_all(format!("<13>Oct 11 22:14:15 h app: {message}\n").as_bytes()).unwrap();
        drop(s);
        wait_until(T, message, || {
            let sql =
                format!("SELECT count(*) AS n FROM logs WHERE message = '{message}' AND listener = 'plain'");
            crate::daemon::query(&config, &sql)[0]["n"] == 1
        });
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(tmp.path().join("daemon.log")).unwrap();
    assert!(text.contains("using the listening sockets passed by systemd"), "{text}");
}

/// The daemon with stderr to a new file at `log_path` that `JOURNAL_STREAM` names, as systemd
/// sets it when stderr is the journal.
fn journal_stream_command(log_path: &std::path::Path) -> Command {
    use std::os::unix::fs::MetadataExt;
    let log = std::fs::File::create(log_path).unwrap();
    let meta = log.metadata().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    cmd
}

#[test]
fn logs_to_the_journal_carry_priorities_and_no_timestamps() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = tmp.path().join("logwarden.toml");
    std::fs::write(&config, test_config(&data, "")).unwrap();
    let log_path = tmp.path().join("journal-stream.log");
    let mut child =
        journal_stream_command(&log_path).args(["serve", "--config"]).arg(&config).spawn().unwrap();
    wait_until(T, "ready", || {
        assert!(child.try_wait().unwrap().is_none(), "exited early");
        std::fs::read_to_string(&log_path).unwrap_or_default().contains("logwarden is ready")
    });
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log_path).unwrap();
    for line in text.lines() {
        let prio = line.strip_prefix('<').and_then(|l| l.split_once('>')).map(|(p, _)| p);
        assert!(matches!(prio, Some("3" | "4" | "6" | "7")), "no priority prefix: {line}");
        assert!(!line.contains("\x1b["), "colour codes: {line}");
    }
    // The development certificate warning is a warning; readiness is information.
    assert!(text.lines().any(|l| l.starts_with("<4>") && l.contains("NOT FOR PRODUCTION")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("<6>") && l.contains("logwarden is ready")), "{text}");
    // No timestamp of the daemon's own (the journal stamps each line): after the prefix comes
    // the target, not a date.
    assert!(
        text.lines().all(|l| l.split_once('>').is_some_and(|(_, rest)| rest.starts_with("logwarden"))),
        "{text}"
    );
}

#[test]
fn errors_that_end_the_process_reach_the_journal_at_error_priority() {
    // `logwarden validate` in ExecStartPre= and a failed `serve`: `journalctl -p err` must show
    // why, every line of it.
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("bad.toml");
    std::fs::write(&config, "[admin]\nadress = \"127.0.0.1:1\"\n[storage]\nzstd_level = 99\n").unwrap();
    for args in [&["validate"][..], &["serve", "--config"][..]] {
        let log_path = tmp.path().join("journal-stream.log");
        let status = journal_stream_command(&log_path).args(args).arg(&config).status().unwrap();
        assert!(!status.success(), "{args:?}");
        let text = std::fs::read_to_string(&log_path).unwrap();
        assert!(
            text.contains("admin.adress: unknown field") && text.contains("storage.zstd_level"),
            "{text}"
        );
        assert!(text.lines().all(|l| l.starts_with("<3>")), "{args:?}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_rotates_the_certificate_and_rules_under_an_open_connection() {
    use tokio::io::AsyncWriteExt;
    use tokio_rustls::TlsConnector;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};

    let mut pki = crate::pki::Pki::new("rotation CA");
    let first = pki.server("first");
    let d = Daemon::start_with(&format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        first.cert.display(),
        first.key.display()
    ));
    let connector = TlsConnector::from(crate::client::tls_config(&pki.ca(), &[]));
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(d.addr("syslog")).await.unwrap();
        connector.clone().connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap()
    };
    let presented = |s: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        s.get_ref().1.peer_certificates().unwrap()[0].as_ref().to_vec()
    };
    let der = |p: &std::path::Path| CertificateDer::from_pem_file(p).unwrap().as_ref().to_vec();
    let line = |m: &str| crate::client::octet(&format!("<13>1 2026-01-01T00:00:00Z h app - - - {m}"));

    let first_der = der(&first.cert);
    let mut open = connect().await;
    assert_eq!(presented(&open), first_der);
    open.write_all(&line("before the reload")).await.unwrap();
    open.flush().await.unwrap();
    wait_until(T, "the first event", || d.count("message = 'before the reload'") == 1);

    // Rotation as operators do it: new files over the old paths, a new rule, then SIGHUP.
    let second = pki.server("second");
    std::fs::copy(&second.cert, &first.cert).unwrap();
    std::fs::copy(&second.key, &first.key).unwrap();
    let rule = "\n[[rules]]\nname = \"after_reload\"\nwindow = \"1m\"\nsql = \"SELECT host, count(*) AS n FROM events GROUP BY host\"\n";
    let mut text = std::fs::read_to_string(&d.config).unwrap();
    text.push_str(rule);
    std::fs::write(&d.config, text).unwrap();
    d.signal("-HUP");
    wait_until(T, "the reload", || {
        let log = d.log_text();
        log.contains("server certificate reloaded")
            && log.contains("rules reloaded")
            && log.contains("\"after_reload\"")
    });

    // The connection made before the reload keeps flowing; a new one gets the new certificate.
    open.write_all(&line("after the reload")).await.unwrap();
    open.flush().await.unwrap();
    wait_until(T, "the event on the old connection", || d.count("message = 'after the reload'") == 1);
    let fresh = connect().await;
    assert_eq!(presented(&fresh), der(&second.cert));
    assert_eq!(presented(&open), first_der, "the open connection keeps its session");

    // A reload whose only problem is a rule: the rule is refused, the rest applies, the next
    // certificate among it.
    let third = pki.server("third");
    std::fs::copy(&third.cert, &first.cert).unwrap();
    std::fs::copy(&third.key, &first.key).unwrap();
    let mut text = std::fs::read_to_string(&d.config).unwrap();
    text.push_str("\n[[rules]]\nname = \"broken\"\nwindow = \"1m\"\nsql = \"SELECT FROM WHERE\"\n");
    std::fs::write(&d.config, text).unwrap();
    d.signal("-HUP");
    wait_until(T, "the second reload", || d.log_text().matches("server certificate reloaded").count() == 2);
    wait_until(T, "the refused rule in the log", || d.log_text().contains("rules[1]"));
    let rotated = connect().await;
    assert_eq!(presented(&rotated), der(&third.cert));
}
