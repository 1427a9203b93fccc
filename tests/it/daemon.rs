//! Starting the real `logwarden` binary on port 0 in a temporary directory, finding its
//! addresses (listeners.json), waiting for readiness, stopping or killing it, and querying the
//! data it stored.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_logwarden");

/// Run a command that must succeed (a peer tool: softhsm2-util, promtool, ...); its output.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (run scripts/install-test-deps)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The Python of the test venv (scripts/install-test-deps: the ADBC driver, the OpenTelemetry
/// SDK, the Elasticsearch client...).
pub fn python() -> PathBuf {
    let venv = std::env::var_os("LOGWARDEN_VENV").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/logwarden/venv")
    });
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/install-test-deps (it creates the venv with the Python clients)",
        py.display()
    );
    py
}

/// Poll `cond` until it holds; panic with `what` after `timeout`. Used instead of sleeps.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The async flavour of [`wait_until`].
pub async fn wait_until_async<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct Daemon {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub addrs: HashMap<String, SocketAddr>,
    /// Extra environment for the process (e.g. SOFTHSM2_CONF).
    pub env: Vec<(String, String)>,
    /// With `[admin] tls = true`: the client certificate and key curl presents to it.
    pub admin_cert: Option<(PathBuf, PathBuf)>,
    log: PathBuf,
}

const INGEST_LISTENERS: &str = r#"[[stream]]
name = "syslog"
address = "127.0.0.1:0"
handshake_timeout = "3s"
[[stream]]
name = "plain"
address = "127.0.0.1:0"
tls = false
[[http]]
name = "http"
address = "127.0.0.1:0"
max_body_bytes = "1MiB"
[[otlp]]
name = "otlp"
address = "127.0.0.1:0"
max_message_bytes = "1MiB"
[[relp]]
name = "relp"
address = "127.0.0.1:0"
"#;

/// A config with every listener on port 0; `extra` is appended (TOML).
pub fn test_config(data_dir: &Path, extra: &str) -> String {
    format!(
        r#"data_dir = "{data}"
shutdown_timeout = "15s"
[log]
level = "info,logwarden=debug"
{listeners}{admin}{flight}[batch]
{linger}{extra}
"#,
        data = data_dir.display(),
        // A query node has no listeners for shippers.
        listeners = if extra.contains("role = \"query\"") { "" } else { INGEST_LISTENERS },
        // A test that sets its own [flight] keys writes the whole table (with an address); an
        // ingest node has none.
        flight = if extra.contains("[flight]\n") || extra.contains("role = \"ingest\"") {
            ""
        } else {
            "[flight]\naddress = \"127.0.0.1:0\"\n"
        },
        admin = if extra.contains("[admin]\n") { "" } else { "[admin]\naddress = \"127.0.0.1:0\"\n" },
        // Lines of `extra` before any table header land in [batch]; a test may set its own linger.
        linger = if extra.contains("linger") { "" } else { "linger = \"10ms\"\n" },
    )
}

impl Daemon {
    pub fn start() -> Daemon {
        Self::start_with("")
    }

    pub fn start_with(extra: &str) -> Daemon {
        Self::start_with_env(extra, &[])
    }

    /// Start with an HTTPS admin endpoint (`extra` has the whole `[admin]` table) that curl
    /// reaches with this client certificate and key.
    pub fn start_with_admin_cert(extra: &str, cert: &Path, key: &Path) -> Daemon {
        Self::start_inner(extra, &[], Some((cert.to_owned(), key.to_owned())))
    }

    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> Daemon {
        Self::start_inner(extra, env, None)
    }

    fn start_inner(extra: &str, env: &[(&str, &str)], admin_cert: Option<(PathBuf, PathBuf)>) -> Daemon {
        let mut d = Self::prepare_inner(extra, env, admin_cert);
        d.spawn();
        d
    }

    /// The config written but the process not started: the test prepares the data directory
    /// (e.g. on a file system of its own) and then calls [`Daemon::spawn`].
    pub fn prepare(extra: &str) -> Daemon {
        Self::prepare_inner(extra, &[], None)
    }

    fn prepare_inner(extra: &str, env: &[(&str, &str)], admin_cert: Option<(PathBuf, PathBuf)>) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("logwarden.toml");
        std::fs::write(&config, test_config(&dir.path().join("data"), extra)).expect("write config");
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Daemon {
            child: None,
            log: dir.path().join("daemon.log"),
            dir,
            config,
            addrs: HashMap::new(),
            env,
            admin_cert,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn ca_file(&self) -> PathBuf {
        self.data_dir().join("tls/ca.pem")
    }

    pub fn addr(&self, name: &str) -> SocketAddr {
        *self.addrs.get(name).unwrap_or_else(|| panic!("no listener {name} in {:?}", self.addrs))
    }

    /// Start (or restart) the process and wait until /readyz answers 200.
    pub fn spawn(&mut self) {
        let listeners = self.data_dir().join("listeners.json");
        let _ = std::fs::remove_file(&listeners);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start logwarden");
        self.child = Some(child);
        wait_until(Duration::from_secs(60), "listeners.json", || {
            self.check_alive();
            listeners.exists()
        });
        let text = std::fs::read_to_string(&listeners).expect("read listeners.json");
        self.addrs = serde_json::from_str(&text).expect("parse listeners.json");
        wait_until(Duration::from_secs(30), "/readyz", || self.admin_get("/readyz").0 == 200);
    }

    fn check_alive(&mut self) {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!("logwarden exited early with {status}:\n{}", self.log_text());
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.pid().to_string()]).status().expect("kill").success();
        assert!(ok, "kill {sig} failed");
    }

    /// SIGTERM and wait for the exit, at most `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal("-TERM");
        let child = self.child.as_mut().expect("running");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return status;
            }
            assert!(start.elapsed() < timeout, "logwarden did not exit within {timeout:?} of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: a crash.
    pub fn kill9(&mut self) {
        self.signal("-KILL");
        let _ = self.child.take().expect("running").wait();
    }

    /// Run `logwarden query --format json` against the data directory; one JSON object per row.
    pub fn query(&self, sql: &str) -> Vec<Value> {
        query_env(&self.config, &self.env, sql)
    }

    /// `SELECT count(*)` with an optional WHERE clause.
    pub fn count(&self, filter: &str) -> i64 {
        let sql = if filter.is_empty() {
            "SELECT count(*) AS n FROM logs".to_string()
        } else {
            format!("SELECT count(*) AS n FROM logs WHERE {filter}")
        };
        self.query(&sql)[0]["n"].as_i64().expect("count")
    }

    /// Wait until the daemon's own queries (Flight SQL) see every event the data directory
    /// holds. `count` and `query` read the WAL files, where a write shows before its fsync;
    /// the daemon publishes a batch to queries after the fsync and then counts it in
    /// `logwarden_events_durable_total`. (For a daemon that has not restarted.)
    pub fn wait_published(&self) {
        let on_disk = self.count("") as f64;
        wait_until(Duration::from_secs(30), "the daemon to publish what the WAL holds", || {
            self.metric("logwarden_events_durable_total") >= on_disk
        });
    }

    pub fn metrics(&self) -> String {
        self.admin_get("/metrics").1
    }

    /// GET from the admin endpoint: plain HTTP, or HTTPS through curl with the client
    /// certificate when the daemon was started with one.
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        let addr = self.addr("admin");
        let Some((cert, key)) = &self.admin_cert else { return http_get(addr, path) };
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}", "--cacert"])
            .arg(self.ca_file())
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .arg(format!("https://{addr}{path}"))
            .output()
            .expect("curl (Debian package curl) must be installed: run scripts/test");
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        (status.trim().parse().unwrap_or(0), body.to_owned())
    }

    /// The value of one sample (`name{labels}` exactly as exported), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
                    .map(|v| v.trim().parse().unwrap_or(0.0))
            })
            .unwrap_or(0.0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- logwarden log (last lines) ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Minimal blocking HTTP/1.0 GET for the plain admin endpoint: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").is_err() {
        return (0, String::new());
    }
    let mut buf = String::new();
    if s.read_to_string(&mut buf).is_err() {
        return (0, String::new());
    }
    let status = buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Run `logwarden query --format json` with the config file `config`; one JSON object per row.
pub fn query(config: &Path, sql: &str) -> Vec<Value> {
    query_env(config, &[], sql)
}

/// [`query`] with extra environment (a bucket's endpoint and credentials).
pub fn query_env(config: &Path, env: &[(String, String)], sql: &str) -> Vec<Value> {
    let out = Command::new(BIN)
        .args(["query", "--config"])
        .arg(config)
        .args(["--format", "json", sql])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run logwarden query");
    assert!(out.status.success(), "query failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("json row"))
        .collect()
}
