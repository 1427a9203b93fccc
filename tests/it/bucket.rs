//! Segments in a bucket, against a real S3 server on loopback: s3s-fs (it checks SigV4
//! signatures and keeps its objects in a directory across restarts, so the tests can stop it,
//! start it again and look at what it holds) and, for bucket policies, moto's server.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::post;
use crate::daemon::{BIN, Daemon, wait_until, wait_until_async};

const ACCESS_KEY: &str = "AKIALOGWARDENTEST";
pub const SECRET_KEY: &str = "logwarden-test-secret";

/// An s3s-fs process serving a temporary directory on a loopback port.
pub struct S3Server {
    child: Option<Child>,
    pub root: tempfile::TempDir,
    pub port: u16,
    log: PathBuf,
}

fn s3s_fs() -> PathBuf {
    let home = PathBuf::from(std::env::var_os("HOME").expect("HOME"));
    let installed = home.join(".cargo/bin/s3s-fs");
    if installed.exists() { installed } else { PathBuf::from("s3s-fs") }
}

impl S3Server {
    pub fn start() -> S3Server {
        let root = tempfile::tempdir().expect("tempdir");
        let log = root.path().join("s3s-fs.log");
        std::fs::create_dir(root.path().join("data")).expect("mkdir");
        let mut s = S3Server { child: None, root, port: 0, log };
        s.spawn(0);
        s
    }

    fn spawn(&mut self, port: u16) {
        let _ = std::fs::remove_file(&self.log);
        let log = std::fs::File::create(&self.log).expect("log");
        let child = Command::new(s3s_fs())
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--access-key", ACCESS_KEY])
            .args(["--secret-key", SECRET_KEY])
            .arg(self.root.path().join("data"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start s3s-fs (scripts/install-test-deps installs it)");
        self.child = Some(child);
        let mut found = 0;
        wait_until(Duration::from_secs(20), "s3s-fs to listen", || {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            found = text
                .split("server is running at http://127.0.0.1:")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            found != 0
        });
        self.port = found;
    }

    /// Kill the server: the bucket is unreachable until [`S3Server::restart`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port, with the objects it held.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port;
        self.spawn(port);
    }

    pub fn create_bucket(&self, name: &str) {
        std::fs::create_dir_all(self.root.path().join("data").join(name)).expect("bucket directory");
    }

    /// The file holding object `key` of `bucket`.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.path().join("data").join(bucket).join(key)
    }

    /// Keys under `prefix` in `bucket`, sorted.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let base = self.root.path().join("data").join(bucket);
        let mut out = Vec::new();
        walk(&base, &base, &mut out);
        out.retain(|k| k.starts_with(prefix));
        out.sort();
        out
    }

    pub fn env(&self, secret: &str) -> Vec<(&'static str, String)> {
        aws_env(self.port, ACCESS_KEY, secret)
    }
}

/// The environment a daemon reaches a loopback S3 server on `port` with.
fn aws_env(port: u16, key: &str, secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", key.into()),
        ("AWS_SECRET_ACCESS_KEY", secret.into()),
        ("AWS_REGION", "us-east-1".into()),
        // A shared credentials file in the test's HOME must not be read.
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent".into()),
        ("AWS_CONFIG_FILE", "/nonexistent".into()),
    ]
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(base, &p, out);
        } else if let Ok(rel) = p.strip_prefix(base) {
            let rel = rel.to_string_lossy().into_owned();
            // s3s-fs keeps its own bookkeeping in dot-files beside the objects.
            if !rel.split('/').any(|part| part.starts_with('.')) {
                out.push(rel);
            }
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- s3s-fs log ---\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

/// A daemon storing segments in `s3://logs/site-a` as node `n1`, flushing often; `extra` holds
/// more `[storage]` keys, replacing these defaults.
fn bucket_config(extra: &str) -> String {
    node_config("n1", "", extra)
}

/// [`bucket_config`] for node `node`, with more `[cluster]` keys (`role`).
fn node_config(node: &str, cluster: &str, extra: &str) -> String {
    let storage = defaults(
        &[
            ("flush_interval", "\"300ms\""),
            ("flush_bytes", "\"2MiB\""),
            ("upload_backlog_max_bytes", "\"64MiB\""),
        ],
        extra,
    );
    let refresh = defaults(&[("refresh_interval", "\"1s\"")], cluster);
    format!(
        "[storage]\nurl = \"s3://logs/site-a\"\n{storage}{extra}[cluster]\nnode_id = \"{node}\"\n{refresh}{cluster}"
    )
}

/// `key = value` lines for the `defaults` that `given` does not set itself.
fn defaults(defaults: &[(&str, &str)], given: &str) -> String {
    let sets = |key: &str| given.lines().any(|l| l.split('=').next().is_some_and(|k| k.trim() == key));
    defaults.iter().filter(|(key, _)| !sets(key)).map(|(key, value)| format!("{key} = {value}\n")).collect()
}

fn start_on(s3: &S3Server, extra: &str) -> Daemon {
    start_node(s3, "n1", "", extra)
}

pub fn start_node(s3: &S3Server, node: &str, cluster: &str, extra: &str) -> Daemon {
    let env = s3.env(SECRET_KEY);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Daemon::start_with_env(&node_config(node, cluster, extra), &env)
}

/// `sql` through the daemon's Flight SQL endpoint (`logwarden query --server`).
pub fn server_query(d: &Daemon, sql: &str) -> Vec<serde_json::Value> {
    server_query_result(d, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// `sql` through the daemon's Flight SQL endpoint: its rows, or what the command printed on
/// failure.
pub fn server_query_result(d: &Daemon, sql: &str) -> Result<Vec<serde_json::Value>, String> {
    let url = format!("https://localhost:{}", d.addr("flight").port());
    let out = Command::new(BIN)
        .args(["query", "--config"])
        .arg(&d.config)
        .args(["--server", &url, "--format", "json", sql])
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect())
}

fn server_count(d: &Daemon) -> i64 {
    server_query(d, "SELECT count(*) AS n FROM logs")[0]["n"].as_i64().unwrap()
}

/// POST `n` requests of `per` events each, tagged `tag REQ I`; returns when all are acknowledged.
async fn send(d: &Daemon, tag: &str, first: usize, n: usize, per: usize) {
    for req in first..first + n {
        let body: String = (0..per).map(|i| format!("{{\"message\":\"{tag} {req} {i}\"}}\n")).collect();
        let r = post(d.addr("http"), d.ca_file(), "/v1/logs", vec![], body.into_bytes()).await;
        assert_eq!(r.status, 200, "request {req}: {}", r.body);
    }
}

/// Wait until everything the daemon holds is flushed and uploaded, and it uploaded something.
pub fn wait_uploaded(d: &Daemon) {
    wait_settled(d, 1.0);
}

/// Wait until everything the daemon holds is flushed and uploaded, and it uploaded at least
/// `uploads` segments itself.
pub fn wait_settled(d: &Daemon, uploads: f64) {
    wait_until(Duration::from_secs(60), "every segment uploaded", || {
        let m = d.metrics();
        let value = |name: &str| {
            m.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
                .unwrap_or(-1.0)
        };
        value("logwarden_upload_backlog_segments") == 0.0
            && value("logwarden_bucket_uploaded_segments_total") >= uploads
            && value("logwarden_memtable_rows") == 0.0
    });
}

/// Counts per request number of the events tagged `tag`.
fn per_request(d: &Daemon, tag: &str) -> HashMap<String, i64> {
    d.query(&format!(
        "SELECT split_part(message, ' ', 2) AS req, count(*) AS n FROM logs WHERE message LIKE '{tag} %' GROUP BY 1"
    ))
    .iter()
    .map(|r| (r["req"].as_str().unwrap().to_string(), r["n"].as_i64().unwrap()))
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn segments_go_to_the_bucket_and_come_back_from_it() {
    let s3 = S3Server::start();
    s3.create_bucket("logs");
    let mut d = start_on(&s3, "");
    send(&d, "up", 0, 20, 100).await;
    wait_uploaded(&d);

    let keys = s3.keys("logs", "site-a/nodes/n1/");
    assert!(keys.contains(&"site-a/nodes/n1/manifest.json".to_string()), "{keys:?}");
    assert!(keys.contains(&"site-a/nodes/n1/node.json".to_string()), "{keys:?}");
    assert!(
        keys.iter().any(|k| k.starts_with("site-a/nodes/n1/segments/") && k.ends_with(".parquet")),
        "{keys:?}"
    );
    // The WAL of uploaded segments is gone.
    let wal: Vec<_> = std::fs::read_dir(d.data_dir().join("wal")).unwrap().flatten().collect();
    assert!(wal.len() <= 2, "WAL files left after upload: {wal:?}");
    assert_eq!(d.count("message LIKE 'up %'"), 2000);
    assert!(d.metric("logwarden_segment_cache_hits_total") >= 0.0);

    // Cold cache: without local copies, the daemon's queries read the bucket.
    d.terminate(Duration::from_secs(30));
    for e in std::fs::read_dir(d.data_dir().join("segments")).unwrap().flatten() {
        std::fs::remove_file(e.path()).unwrap();
    }
    d.spawn();
    let url = format!("https://localhost:{}", d.addr("flight").port());
    let server_count = || {
        let out = Command::new(BIN)
            .args(["query", "--config"])
            .arg(&d.config)
            .args([
                "--server",
                &url,
                "--format",
                "json",
                "SELECT count(*) AS n FROM logs WHERE message LIKE 'up %'",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(server_count().contains("2000"), "{}", server_count());
    assert!(d.metric("logwarden_segment_cache_misses_total") >= 1.0);
    // The misses were copied into the cache in the background; the next query hits.
    wait_until(Duration::from_secs(30), "the cache to fill", || {
        d.metric("logwarden_segment_cache_filled_bytes_total") > 0.0
    });
    let hits = d.metric("logwarden_segment_cache_hits_total");
    assert!(server_count().contains("2000"));
    assert!(d.metric("logwarden_segment_cache_hits_total") > hits);
    d.terminate(Duration::from_secs(30));

    // A node that lost its disk takes its segments from the bucket's manifest.
    std::fs::remove_dir_all(d.data_dir()).unwrap();
    d.spawn();
    assert_eq!(d.count("message LIKE 'up %'"), 2000);
    send(&d, "after", 0, 5, 10).await;
    wait_uploaded(&d);
    assert_eq!(d.count(""), 2050);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bucket_down_for_30_s_under_load_loses_nothing_and_doubles_nothing() {
    let mut s3 = S3Server::start();
    s3.create_bucket("logs");
    let mut d = start_on(&s3, "");
    let acked: Arc<Mutex<Vec<usize>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for worker in 0..2usize {
        let (addr, ca, acked, stop) = (d.addr("http"), d.ca_file(), acked.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            // Bounded: at most 2000 requests per worker, or until told to stop.
            for n in 0..2000usize {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let req = worker * 10_000 + n;
                let body: String = (0..50).map(|i| format!("{{\"message\":\"load {req} {i}\"}}\n")).collect();
                let r = post(addr, ca.clone(), "/v1/logs", vec![], body.into_bytes()).await;
                if r.status == 200 {
                    acked.lock().unwrap().push(req);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    let acked_now = || acked.lock().unwrap().len();
    wait_until_async(Duration::from_secs(60), "the first uploads", || {
        let up = d.metric("logwarden_bucket_uploaded_segments_total");
        async move { up >= 1.0 }
    })
    .await;
    s3.stop();
    let down = Instant::now();
    let before = acked_now();
    // Ingest goes on while the bucket is away; segments wait on local disk.
    wait_until_async(Duration::from_secs(60), "the bucket to be down for 30 s", || {
        let gone = down.elapsed() >= Duration::from_secs(30);
        async move { gone }
    })
    .await;
    assert!(acked_now() > before + 50, "ingest stalled while the bucket was down");
    assert!(d.metric("logwarden_upload_backlog_segments") >= 1.0);
    assert_eq!(d.metric("logwarden_bucket_up"), 0.0);
    s3.restart();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    wait_uploaded(&d);
    assert_eq!(d.metric("logwarden_bucket_up"), 1.0);

    // Everything acknowledged is in the bucket, once: a new data directory reads it all back.
    d.terminate(Duration::from_secs(30));
    std::fs::remove_dir_all(d.data_dir()).unwrap();
    d.spawn();
    let counts = per_request(&d, "load");
    let acked = acked.lock().unwrap().clone();
    for req in &acked {
        assert_eq!(counts.get(&req.to_string()), Some(&50), "request {req}");
    }
    assert_eq!(counts.len(), acked.len(), "rows of requests that were never acknowledged");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_between_upload_and_manifest_loses_and_doubles_nothing() {
    let s3 = S3Server::start();
    s3.create_bucket("logs");
    let stall = tempfile::tempdir().unwrap();
    let gate = stall.path().join("stall");
    std::fs::write(&gate, b"").unwrap();
    let mut env: Vec<(String, String)> =
        s3.env(SECRET_KEY).into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    env.push(("LOGWARDEN_TEST_STALL_UPLOAD".into(), gate.display().to_string()));
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut d = Daemon::start_with_env(&bucket_config(""), &envs);
    send(&d, "kill", 0, 10, 100).await;
    let reached = stall.path().join("stall.reached");
    wait_until(Duration::from_secs(60), "an upload to reach the failpoint", || reached.exists());
    // The object is in the bucket; no manifest names it yet.
    let objects: Vec<String> = s3
        .keys("logs", "site-a/nodes/n1/segments/")
        .into_iter()
        .filter(|k| k.ends_with(".parquet"))
        .collect();
    assert!(!objects.is_empty());
    d.kill9();

    std::fs::remove_file(&gate).unwrap();
    d.env.retain(|(k, _)| k != "LOGWARDEN_TEST_STALL_UPLOAD");
    d.spawn();
    send(&d, "kill", 10, 2, 100).await;
    wait_uploaded(&d);
    let counts = per_request(&d, "kill");
    assert_eq!(counts.len(), 12);
    assert!(counts.values().all(|n| *n == 100), "{counts:?}");
    // The bucket alone holds them once.
    d.terminate(Duration::from_secs(30));
    std::fs::remove_dir_all(d.data_dir()).unwrap();
    d.spawn();
    let counts = per_request(&d, "kill");
    assert_eq!(counts.len(), 12);
    assert!(counts.values().all(|n| *n == 100), "{counts:?}");
}

/// `logwarden serve` with this storage setup must exit at start; its output.
fn failed_start(extra: &str, env: &[(&'static str, String)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("logwarden.toml");
    std::fs::write(&config, crate::daemon::test_config(&dir.path().join("data"), &bucket_config(extra)))
        .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("logwarden started with a bad bucket setup");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    assert!(!status.success());
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn wrong_credentials_and_a_missing_bucket_stop_the_start_with_the_object_named() {
    let s3 = S3Server::start();
    s3.create_bucket("logs");
    let out = failed_start("", &s3.env("not-the-secret"));
    assert!(out.contains("s3://logs/site-a/nodes/n1"), "{out}");
    assert!(out.contains("refused the credentials"), "{out}");
    assert!(out.contains("SignatureDoesNotMatch"), "{out}");

    let out = failed_start("", &{
        let mut env = s3.env(SECRET_KEY);
        env.retain(|(k, _)| *k != "AWS_ENDPOINT_URL");
        env.push(("AWS_ENDPOINT_URL", "http://127.0.0.1:9".into()));
        env
    });
    assert!(out.contains("s3://logs/site-a/nodes/n1"), "{out}");

    let missing = S3Server::start();
    let out = failed_start("", &missing.env(SECRET_KEY));
    assert!(out.contains("the bucket does not exist"), "{out}");
    assert!(out.contains("s3://logs/site-a/nodes/n1"), "{out}");
}

#[test]
fn validate_refuses_credentials_in_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("logwarden.toml");
    for (toml, key) in [
        ("[storage]\nurl = \"s3://logs/p\"\nsecret_access_key = \"x\"\n", "storage.secret_access_key"),
        ("[storage]\nurl = \"s3://AKIA:secret@logs/p\"\n", "storage.url"),
    ] {
        std::fs::write(&config, toml).unwrap();
        let out = Command::new(BIN).arg("validate").arg(&config).output().unwrap();
        assert!(!out.status.success());
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains(&format!(
                "{}: {key}: credentials are never read from the config file",
                config.display()
            )),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_segment_object_fails_the_query_with_its_name() {
    let s3 = S3Server::start();
    s3.create_bucket("logs");
    let mut d = start_on(&s3, "");
    send(&d, "gone", 0, 5, 100).await;
    wait_uploaded(&d);
    d.terminate(Duration::from_secs(30));
    let segment = s3
        .keys("logs", "site-a/nodes/n1/segments/")
        .into_iter()
        .find(|k| k.ends_with(".parquet"))
        .expect("a segment in the bucket");
    std::fs::remove_file(s3.object_path("logs", &segment)).unwrap();
    for e in std::fs::read_dir(d.data_dir().join("segments")).unwrap().flatten() {
        std::fs::remove_file(e.path()).unwrap();
    }
    let out = Command::new(BIN)
        .args(["query", "--config"])
        .arg(&d.config)
        .arg("SELECT count(*) FROM logs")
        .envs(d.env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains(&segment), "{text}");
    assert!(text.contains("not found"), "{text}");
}

/// Rewrite a stopped local-storage daemon's config for the bucket, with the bucket's environment.
fn point_at_bucket(d: &mut Daemon, s3: &S3Server) {
    std::fs::write(&d.config, crate::daemon::test_config(&d.data_dir(), &bucket_config(""))).unwrap();
    d.env = s3.env(SECRET_KEY).into_iter().map(|(k, v)| (k.to_string(), v)).collect();
}

/// `logwarden storage migrate` with the daemon's config and environment.
fn migrate(d: &Daemon) -> std::process::Output {
    Command::new(BIN)
        .args(["storage", "migrate", "--config"])
        .arg(&d.config)
        .envs(d.env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_migrate_moves_a_local_data_directory_into_the_bucket() {
    let s3 = S3Server::start();
    s3.create_bucket("logs");
    let mut d = Daemon::start_with("[storage]\nflush_interval = \"300ms\"\n");
    send(&d, "mig", 0, 10, 100).await;
    wait_until(Duration::from_secs(30), "segments on local disk", || {
        d.metric("logwarden_storage_segments") >= 1.0 && d.metric("logwarden_memtable_rows") == 0.0
    });
    d.terminate(Duration::from_secs(30));

    point_at_bucket(&mut d, &s3);
    let out = migrate(&d);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("into s3://logs/site-a/nodes/n1"), "{text}");
    assert!(s3.keys("logs", "site-a/nodes/n1/segments/").iter().any(|k| k.ends_with(".parquet")));
    // Run again: nothing left to move.
    let again = migrate(&d);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stdout).contains("moved 0 segments"));

    d.spawn();
    assert_eq!(d.count("message LIKE 'mig %'"), 1000);
    wait_settled(&d, 0.0);
    d.terminate(Duration::from_secs(30));
    std::fs::remove_dir_all(d.data_dir()).unwrap();
    d.spawn();
    assert_eq!(d.count("message LIKE 'mig %'"), 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_directory_of_another_bucket_or_node_refuses_to_start() {
    let s3 = S3Server::start();
    s3.create_bucket("logs");
    let mut d = start_on(&s3, "");
    send(&d, "x", 0, 1, 10).await;
    wait_uploaded(&d);
    d.terminate(Duration::from_secs(30));
    let config = crate::daemon::test_config(
        &d.data_dir(),
        &bucket_config("").replace("node_id = \"n1\"", "node_id = \"n2\""),
    );
    std::fs::write(&d.config, config).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&d.config)
        .envs(d.env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("holds segments of s3://logs/site-a/nodes/n1"), "{text}");
    assert!(text.contains("s3://logs/site-a/nodes/n2"), "{text}");
}

/// moto's S3 server on a loopback port, from the test venv (scripts/install-test-deps).
struct Moto {
    child: Child,
    port: u16,
}

fn venv_bin(name: &str) -> PathBuf {
    let venv = std::env::var_os("LOGWARDEN_VENV").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/logwarden/venv")
    });
    venv.join("bin").join(name)
}

impl Moto {
    fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(venv_bin("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server (scripts/install-test-deps installs it)");
        wait_until(Duration::from_secs(30), "moto to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Moto { child, port }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        aws_env(self.port, "AKIAMOTO", "moto")
    }

    /// Run `code` with `s3`, a boto3 client of this server, in scope; its stdout.
    fn python(&self, code: &str) -> String {
        let script = format!(
            "import boto3, json\ns3 = boto3.client('s3', endpoint_url='http://127.0.0.1:{}', \
             aws_access_key_id='AKIAMOTO', aws_secret_access_key='moto', region_name='us-east-1')\n{code}",
            self.port
        );
        let out = Command::new(venv_bin("python")).args(["-c", &script]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_the_bucket_refuses_is_counted_and_never_blocks_ingest() {
    let moto = Moto::start();
    // A bucket whose policy keeps every object, as a legal hold or WORM policy would.
    moto.python(
        "s3.create_bucket(Bucket='logs')\n\
         s3.put_bucket_policy(Bucket='logs', Policy=json.dumps({'Version': '2012-10-17', 'Statement': [\
         {'Effect': 'Deny', 'Principal': '*', 'Action': 's3:DeleteObject', 'Resource': 'arn:aws:s3:::logs/*'}]}))",
    );
    let env = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Retention deletes once other nodes' queries are done with an object: refresh interval
    // and query time limit.
    let d = Daemon::start_with_env(
        &bucket_config("retention_max_age = \"2s\"\n[flight.limits]\ntimeout = \"3s\"\n"),
        &env,
    );
    send(&d, "worm", 0, 5, 100).await;
    wait_until(Duration::from_secs(60), "a refused delete", || {
        d.metric("logwarden_bucket_deletes_refused_total") >= 1.0
    });
    // Retention dropped the segments from the manifest; the bucket kept the objects.
    let listed = moto.python(
        "print('\\n'.join(o['Key'] for o in s3.list_objects_v2(Bucket='logs', Prefix='site-a/nodes/n1/segments/').get('Contents', [])))",
    );
    assert!(listed.lines().any(|k| k.ends_with(".parquet")), "{listed}");
    assert!(d.log_text().contains("the bucket refused to delete an expired segment"));
    assert!(d.log_text().contains("s3://logs/site-a/nodes/n1/segments/"));
    // Ingest and uploads go on.
    let uploaded = d.metric("logwarden_bucket_uploaded_segments_total");
    send(&d, "worm-after", 0, 2, 10).await;
    wait_until(Duration::from_secs(30), "uploads after the refusal", || {
        d.metric("logwarden_bucket_uploaded_segments_total") > uploaded
    });
    send(&d, "worm-later", 0, 2, 10).await;
    wait_until(Duration::from_secs(30), "another upload", || {
        d.metric("logwarden_bucket_uploaded_segments_total") > uploaded + 1.0
    });
    // Each object is refused once and then left for an hour: no retry loop.
    let refused = d.metric("logwarden_bucket_deletes_refused_total");
    let uploaded = d.metric("logwarden_bucket_uploaded_segments_total");
    assert!(refused <= uploaded, "{refused} refusals for {uploaded} objects");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_upload_backlog_refuses_ingest_until_the_bucket_is_back() {
    let mut s3 = S3Server::start();
    s3.create_bucket("logs");
    let d = start_on(&s3, "flush_bytes = \"1MiB\"\nupload_backlog_max_bytes = \"3MiB\"\n");
    s3.stop();
    let body = |req: usize| -> Vec<u8> {
        (0..500)
            .map(|i| format!("{{\"message\":\"backlog {req} {i} {}\"}}\n", "x".repeat(100)))
            .collect::<String>()
            .into_bytes()
    };
    let mut acked = Vec::new();
    let mut refused = None;
    // Bounded: the backlog limit is a few hundred requests away.
    for req in 0..2000 {
        let r = post(d.addr("http"), d.ca_file(), "/v1/logs", vec![], body(req)).await;
        match r.status {
            200 => acked.push(req),
            503 => {
                refused = Some(r.body);
                break;
            }
            s => panic!("request {req}: {s} {}", r.body),
        }
    }
    let refused = refused.expect("the backlog limit refused a request");
    assert!(refused.contains("waiting for the bucket"), "{refused}");
    assert!(d.metric("logwarden_upload_backlog_bytes") >= 3.0 * 1024.0 * 1024.0);
    s3.restart();
    let mut req = 10_000;
    wait_until_async(Duration::from_secs(120), "ingest to be accepted again", || {
        req += 1;
        let (addr, ca, b) = (d.addr("http"), d.ca_file(), body(req));
        async move { post(addr, ca, "/v1/logs", vec![], b).await.status == 200 }
    })
    .await;
    acked.push(req);
    wait_uploaded(&d);
    let counts = per_request(&d, "backlog");
    for r in &acked {
        assert_eq!(counts.get(&r.to_string()), Some(&500), "request {r}");
    }
    assert_eq!(counts.len(), acked.len());
}

#[test]
fn a_second_daemon_with_the_same_node_id_refuses_to_start_and_names_the_holder() {
    let s3 = S3Server::start();
    s3.create_bucket("logs");
    let d = start_on(&s3, "");
    let out = failed_start("", &s3.env(SECRET_KEY));
    assert!(out.contains("node n1 is in use"), "{out}");
    assert!(out.contains("s3://logs/site-a/nodes/n1/lease.json"), "{out}");
    assert!(out.contains(&format!("pid {}", d.pid())), "{out}");
    assert!(out.contains(&d.data_dir().display().to_string()), "{out}");
    // The first one is unharmed and still writes.
    assert!(d.metric("logwarden_bucket_up") == 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_directory_restored_from_an_older_copy_keeps_what_the_bucket_has_since() {
    let s3 = S3Server::start();
    s3.create_bucket("logs");
    let mut d = start_on(&s3, "");
    send(&d, "old", 0, 3, 100).await;
    wait_uploaded(&d);
    d.terminate(Duration::from_secs(30));
    let backup = tempfile::tempdir().unwrap();
    let copy = |from: &Path, to: &Path| {
        let ok = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap().success();
        assert!(ok);
    };
    copy(&d.data_dir(), &backup.path().join("data"));
    d.spawn();
    send(&d, "new", 0, 3, 100).await;
    wait_uploaded(&d);
    d.terminate(Duration::from_secs(30));
    std::fs::remove_dir_all(d.data_dir()).unwrap();
    copy(&backup.path().join("data"), &d.data_dir());
    d.spawn();
    assert_eq!(d.count("message LIKE 'old %'"), 300);
    assert_eq!(d.count("message LIKE 'new %'"), 300);
    // New segments take new ids: nothing the bucket holds is written over.
    send(&d, "newer", 0, 2, 100).await;
    wait_uploaded(&d);
    d.terminate(Duration::from_secs(30));
    std::fs::remove_dir_all(d.data_dir()).unwrap();
    d.spawn();
    assert_eq!(d.count(""), 800);
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_migrate_refuses_a_missing_segment_and_changes_nothing() {
    let s3 = S3Server::start();
    s3.create_bucket("logs");
    let mut d = Daemon::start_with("[storage]\nflush_interval = \"300ms\"\n");
    for round in 0..3 {
        send(&d, "m", round * 10, 2, 100).await;
        wait_until(Duration::from_secs(30), "a segment", || {
            d.metric("logwarden_storage_segments") >= (round + 1) as f64
                && d.metric("logwarden_memtable_rows") == 0.0
        });
    }
    d.terminate(Duration::from_secs(30));
    let manifest_before = std::fs::read_to_string(d.data_dir().join("manifest.json")).unwrap();
    let first = d.data_dir().join("segments/0000000000000000.parquet");
    std::fs::remove_file(&first).unwrap();
    point_at_bucket(&mut d, &s3);
    let out = migrate(&d);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains(&first.display().to_string()), "{text}");
    assert!(text.contains("missing"), "{text}");
    assert_eq!(std::fs::read_to_string(d.data_dir().join("manifest.json")).unwrap(), manifest_before);
    assert_eq!(std::fs::read_dir(d.data_dir().join("segments")).unwrap().count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_copy_cut_short_is_read_from_the_bucket_instead() {
    let s3 = S3Server::start();
    s3.create_bucket("logs");
    let mut d = start_on(&s3, "");
    send(&d, "short", 0, 5, 100).await;
    wait_uploaded(&d);
    d.terminate(Duration::from_secs(30));
    // A crash during a cache fill, or a damaged disk: copies of the wrong size.
    let mut copies: Vec<PathBuf> =
        std::fs::read_dir(d.data_dir().join("segments")).unwrap().flatten().map(|e| e.path()).collect();
    copies.sort();
    std::fs::write(&copies[0], b"").unwrap();
    d.spawn();
    assert_eq!(d.count("message LIKE 'short %'"), 500);
    assert!(!copies[0].exists() || std::fs::metadata(&copies[0]).unwrap().len() > 0);
}

/// A rule that raises an alert for any event in a 1 s window.
const ANY_EVENT_RULE: &str = r#"[detect]
allowed_lateness = "1s"
[[rules]]
name = "any_event"
window = "1s"
sql = "SELECT count(*) AS n FROM events"
alert_when = "n > 0"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn nodes_on_one_bucket_answer_for_all_and_a_later_query_node_sees_all_history() {
    let s3 = S3Server::start();
    s3.create_bucket("logs");
    let a = start_node(&s3, "a", "", ANY_EVENT_RULE);
    let b = start_node(&s3, "b", "", "");
    send(&a, "from-a", 0, 10, 50).await;
    send(&b, "from-b", 0, 7, 50).await;
    wait_uploaded(&a);
    wait_uploaded(&b);
    // Each node answers for both, over Flight SQL and through `logwarden query` on its data
    // directory, once it has read the other's manifest again.
    for d in [&a, &b] {
        wait_until(Duration::from_secs(30), "both nodes' events", || server_count(d) == 850);
        assert_eq!(d.count("message LIKE 'from-a %'"), 500);
        assert_eq!(d.count("message LIKE 'from-b %'"), 350);
        assert_eq!(d.metric("logwarden_cluster_peers"), 1.0);
    }

    // A query node started later: no listeners for shippers, all history at once.
    let q = start_node(&s3, "q", "role = \"query\"\n", "");
    assert!(!q.addrs.contains_key("http") && !q.addrs.contains_key("syslog"), "{:?}", q.addrs);
    assert_eq!(server_count(&q), 850);
    assert_eq!(q.metric("logwarden_cluster_peers"), 2.0);
    let keys = s3.keys("logs", "site-a/nodes/");
    assert!(!keys.iter().any(|k| k.starts_with("site-a/nodes/q/")), "a query node wrote {keys:?}");
    // Events stored after it started show up within the refresh interval.
    send(&b, "later-b", 0, 3, 10).await;
    wait_settled(&b, 2.0);
    wait_until(Duration::from_secs(30), "b's new events on the query node", || server_count(&q) == 880);
    // Duplicate nothing from the cache: the second reading is served locally and agrees.
    wait_until(Duration::from_secs(30), "the query node's cache to fill", || {
        q.metric("logwarden_segment_cache_filled_bytes_total") > 0.0
    });
    assert_eq!(server_count(&q), 880);

    // Alerts and templates of the ingest nodes are readable on the query node, by node.
    wait_until(Duration::from_secs(60), "a's alert on the query node", || {
        server_query(&q, "SELECT node FROM alerts WHERE rule = 'any_event'").iter().any(|r| r["node"] == "a")
    });
    let nodes: Vec<String> = server_query(&q, "SELECT DISTINCT node FROM templates ORDER BY node")
        .iter()
        .map(|r| r["node"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(nodes, ["a", "b"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_raised_just_before_a_stop_are_published_before_the_lease_goes() {
    let s3 = S3Server::start();
    s3.create_bucket("logs");
    // Published at start and then only at the stop: the hour never passes in this test.
    let mut a = start_node(&s3, "a", "refresh_interval = \"1h\"\n", ANY_EVENT_RULE);
    let published = s3.object_path("logs", "site-a/nodes/a/alerts.json");
    wait_until(Duration::from_secs(30), "the first publish", || published.exists());
    send(&a, "late", 0, 1, 5).await;
    wait_until(Duration::from_secs(30), "the alert", || {
        !server_query(&a, "SELECT rule FROM alerts WHERE rule = 'any_event'").is_empty()
    });
    let before = std::fs::read_to_string(&published).unwrap();
    assert!(!before.contains("any_event"), "published before the stop: {before}");
    assert!(a.terminate(Duration::from_secs(60)).success());
    let after = std::fs::read_to_string(&published).unwrap();
    assert!(after.contains("any_event"), "the stop did not publish the alert: {after}");
    // And the lease was given up after it: the node starts again at once.
    let _ = start_node(&s3, "a", "", "");
}

#[test]
fn roles_need_a_bucket_and_refuse_what_they_would_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str| {
        let file = dir.path().join("c.toml");
        std::fs::write(&file, text).unwrap();
        let out = Command::new(BIN).arg("validate").arg(&file).output().unwrap();
        assert!(!out.status.success(), "{text}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = check("[cluster]\nrole = \"query\"\n");
    assert!(e.contains("c.toml") && e.contains("cluster.role") && e.contains("storage.url"), "{e}");
    let e = check(
        "[storage]\nurl = \"s3://logs/p\"\n[cluster]\nrole = \"query\"\n[[stream]]\nname = \"s\"\naddress = \"127.0.0.1:0\"\n",
    );
    assert!(e.contains("stream") && e.contains("no listeners for shippers"), "{e}");
    let e =
        check("[storage]\nurl = \"s3://logs/p\"\n[cluster]\nrole = \"ingest\"\n[flight]\nenabled = true\n");
    assert!(e.contains("flight") && e.contains("answers no queries"), "{e}");
}

/// Put `body` at object `key` of bucket `logs` (s3s-fs keeps objects as plain files).
fn put_object(s3: &S3Server, key: &str, body: &[u8]) {
    let p = s3.object_path("logs", key);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

/// A manifest naming `files` (name, bytes), each of one row over every time.
fn manifest_naming(files: &[(&str, u64)]) -> Vec<u8> {
    manifest_of_rows(files, 1)
}

/// A manifest naming `files` (name, bytes), each of `rows` rows over every time.
fn manifest_of_rows(files: &[(&str, u64)], rows: u64) -> Vec<u8> {
    let segments: Vec<serde_json::Value> = files
        .iter()
        .enumerate()
        .map(|(i, (f, bytes))| {
            serde_json::json!({"id": i + 1, "file": f, "rows": rows, "bytes": bytes,
                "min_ts": 0, "max_ts": i64::MAX / 2, "max_received_at": 0})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"version": 1, "next_segment_id": 9,
        "wal_flushed_through": 0, "segments": segments}))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_peer_manifest_reaches_no_file_outside_the_cache() {
    let s3 = S3Server::start();
    s3.create_bucket("logs");
    let a = start_node(&s3, "a", "", "");
    send(&a, "own", 0, 2, 10).await;
    wait_uploaded(&a);
    let outside = a.dir.path().join("escaped.txt");
    let canary = a.dir.path().join("canary.txt");
    std::fs::write(&canary, b"precious").unwrap();
    let payload = b"written by a hostile peer";
    // object_store encodes `..` parts of a key as %2E%2E.
    put_object(&s3, "site-a/nodes/evil/segments/%2E%2E/%2E%2E/%2E%2E/%2E%2E/escaped.txt", payload);
    put_object(
        &s3,
        "site-a/nodes/evil/manifest.json",
        &manifest_naming(&[("../../../../escaped.txt", payload.len() as u64), ("../../../../canary.txt", 8)]),
    );
    // The manifest is refused and counted; queries go on over the good nodes.
    wait_until(Duration::from_secs(30), "the hostile manifest refused", || {
        a.metric("logwarden_bucket_errors_total{op=\"peers\"}") >= 1.0
    });
    assert_eq!(server_count(&a), 20);
    let log = a.log_text();
    assert!(log.contains("escaped.txt") && log.contains("logwarden never writes"), "{log}");
    // The peer drops the names again: nothing is deleted on its word either.
    put_object(&s3, "site-a/nodes/evil/manifest.json", &manifest_naming(&[]));
    let refreshed = a.metric("logwarden_cluster_peers_refreshed_timestamp_seconds");
    wait_until(Duration::from_secs(30), "a clean reading of the peers", || {
        a.metric("logwarden_cluster_peers_refreshed_timestamp_seconds") > refreshed + 1.0
    });
    assert!(!outside.exists(), "a peer wrote outside the cache");
    assert!(canary.exists(), "a peer's manifest deleted a file outside the cache");
    assert_eq!(server_count(&a), 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_file_too_large_holds_back_nothing_and_a_lying_size_is_never_downloaded() {
    let s3 = S3Server::start();
    s3.create_bucket("logs");
    let a = start_node(&s3, "a", "", "");
    send(&a, "own", 0, 2, 10).await;
    wait_uploaded(&a);
    let own = s3.keys("logs", "site-a/nodes/a/segments/");
    let segment = std::fs::read(s3.object_path("logs", &own[0])).unwrap();
    let file = "0000000000000001.parquet";

    // A peer whose templates.json is over the size nodes read: its segments still count.
    put_object(&s3, &format!("site-a/nodes/big/segments/{file}"), &segment);
    put_object(&s3, "site-a/nodes/big/templates.json", &vec![b' '; (64 << 20) + 1]);
    put_object(&s3, "site-a/nodes/big/manifest.json", &manifest_of_rows(&[(file, segment.len() as u64)], 20));
    wait_until(Duration::from_secs(30), "the peer's segment in queries", || server_count(&a) == 40);
    wait_until(Duration::from_secs(30), "the oversized file reported", || {
        a.log_text().contains("big/templates.json")
    });

    // A peer whose manifest says a segment is 100 bytes: the object is larger, and no copy of
    // it is made (nor read whole into memory); the query fails with the object's name.
    put_object(&s3, &format!("site-a/nodes/liar/segments/{file}"), &segment);
    put_object(&s3, "site-a/nodes/liar/manifest.json", &manifest_of_rows(&[(file, 100)], 20));
    wait_until(Duration::from_secs(30), "the lying size refused", || {
        let url = format!("https://localhost:{}", a.addr("flight").port());
        let _ = Command::new(BIN)
            .args(["query", "--config"])
            .arg(&a.config)
            .args(["--server", &url, "SELECT count(*) FROM logs"])
            .output();
        a.log_text().contains("not the 100 its manifest says")
    });
    let copy = a.dir.path().join("data/segments/peers/liar").join(file);
    assert!(!copy.exists(), "a copy of an object whose size the manifest misstates");
    assert!(a.metric("logwarden_bucket_errors_total{op=\"cache_fill\"}") >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_migrate_refuses_a_query_node_config() {
    let s3 = S3Server::start();
    s3.create_bucket("logs");
    let a = start_node(&s3, "a", "", "");
    send(&a, "from-a", 0, 2, 10).await;
    wait_uploaded(&a);
    let before = std::fs::read(s3.object_path("logs", "site-a/nodes/a/manifest.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("query.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[storage]\nurl = \"s3://logs/site-a\"\n[cluster]\nnode_id = \"a\"\nrole = \"query\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["storage", "migrate", "--config"])
        .arg(&config)
        .envs(s3.env(SECRET_KEY))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cluster.role") && err.contains("query.toml"), "{err}");
    assert_eq!(std::fs::read(s3.object_path("logs", "site-a/nodes/a/manifest.json")).unwrap(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_the_bucket_will_not_let_us_read_leaves_the_others_fresh() {
    let moto = Moto::start();
    moto.python("s3.create_bucket(Bucket='logs')");
    let env = moto.env();
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Daemon::start_with_env(&node_config("a", "", ""), &envs);
    let b = Daemon::start_with_env(&node_config("b", "", ""), &envs);
    send(&b, "b1", 0, 2, 10).await;
    wait_uploaded(&b);
    wait_until(Duration::from_secs(30), "a to see b", || server_count(&a) == 20);
    // A prefix this node may not read (another team's node, a KMS key it lacks, ...).
    moto.python(
        "s3.put_object(Bucket='logs', Key='site-a/nodes/other/manifest.json', Body=b'{}')\n\
         s3.put_bucket_policy(Bucket='logs', Policy=json.dumps({'Version': '2012-10-17', 'Statement': [\
         {'Effect': 'Deny', 'Principal': '*', 'Action': 's3:GetObject', 'Resource': 'arn:aws:s3:::logs/site-a/nodes/other/*'}]}))",
    );
    send(&b, "b2", 0, 3, 10).await;
    wait_settled(&b, 2.0);
    wait_until(Duration::from_secs(30), "b's new events on a", || server_count(&a) == 50);
    assert!(a.metric("logwarden_bucket_errors_total{op=\"peers\"}") >= 1.0);
    // A node starting now starts, and sees b.
    let c = Daemon::start_with_env(&node_config("c", "", ""), &envs);
    assert_eq!(server_count(&c), 50);
}
