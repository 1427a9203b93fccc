//! A full disk under the data directory: the data directory is a small tmpfs that the test
//! mounts and fills while the daemon ingests over HTTPS and a stream listener, then frees.
//! Every batch answered 200 must be stored exactly once after `kill -9` and a restart, the
//! stream events read while the disk was full must be stored once space returns, and Parquet
//! flushing must resume.
//!
//! Mounting needs root (or CAP_SYS_ADMIN); where it is refused the test says so on stderr and
//! passes without running.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::client::post;
use crate::daemon::Daemon;

const EVENTS_PER_BATCH: usize = 1000;
const STREAM_EVENTS: usize = 1000;
const T: Duration = Duration::from_secs(30);

/// Written past the test harness's output capture, so that a skip is seen in every run.
fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// A tmpfs mounted on a temporary directory, unmounted when dropped (also on a panic).
struct Tmpfs {
    dir: Option<tempfile::TempDir>,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir: Some(dir) }),
            Ok(o) => {
                say(&format!(
                    "SKIPPED disk_full: cannot mount a tmpfs on {} ({}); run the tests as root \
                     (CAP_SYS_ADMIN) to check durability on a full disk",
                    dir.path().display(),
                    String::from_utf8_lossy(&o.stderr).trim().replace('\n', " ")
                ));
                None
            }
            Err(e) => {
                say(&format!("SKIPPED disk_full: cannot run mount(8): {e}"));
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.as_ref().map(|d| d.path()).expect("mounted")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let ok = Command::new("umount").arg(dir.path()).status().is_ok_and(|s| s.success());
        if !ok {
            // Something still holds a file there: detach it now, it goes when released.
            let _ = Command::new("umount").arg("-l").arg(dir.path()).status();
        }
    }
}

/// Fill the file system at `dir` with one file until a write fails, then give back `leave`
/// bytes, so the daemon's next large write fails part way through.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    let path = dir.join("filler");
    let mut f = File::create(&path).expect("create filler");
    let chunk = vec![0xa5u8; 1 << 20];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let len = f.metadata().expect("stat filler").len();
    f.set_len(len.saturating_sub(leave)).expect("shrink filler");
    path
}

fn batch_body(phase: &str, n: usize) -> Vec<u8> {
    // About 130 bytes per event: a batch is far larger than the space left on the full disk.
    (0..EVENTS_PER_BATCH)
        .map(|i| {
            format!(
                "{{\"message\":\"full {phase}{n} {i} {pad}\",\"host\":\"disk-{}\"}}\n",
                i % 7,
                pad = "x".repeat(64)
            )
        })
        .collect::<String>()
        .into_bytes()
}

/// Poll `cond` until it holds or `timeout` passes; whether it held.
async fn poll<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !cond().await {
        if start.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

/// The sum of every series of `name` that carries `label`.
fn metric_sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_batches_survive_a_full_disk_and_kill_9() {
    let Some(fs) = Tmpfs::mount("48m") else { return };
    let mut d = Daemon::prepare("[storage]\nflush_interval = \"2s\"\nflush_bytes = \"4MiB\"\n");
    std::os::unix::fs::symlink(fs.path(), d.data_dir()).expect("data_dir on the tmpfs");
    d.spawn();
    let (addr, ca) = (d.addr("http"), d.ca_file());
    let mut problems: Vec<String> = Vec::new();
    // Batch name -> acknowledged.
    let mut acked: Vec<String> = Vec::new();

    // Before: the disk has room.
    for n in 0..5 {
        let r = post(addr, ca.clone(), "/v1/logs", vec![], batch_body("a", n)).await;
        assert_eq!(r.status, 200, "before the disk filled: {}", r.body);
        acked.push(format!("a{n}"));
    }

    // Full: a batch no longer fits.
    // Filled right after the last batch, so that its generation is not in Parquet yet either.
    let filler = fill(fs.path(), 8 << 10);
    // Rows not in Parquet yet when the disk filled: their flush must fail cleanly and be retried.
    let unflushed = d.metric("logwarden_memtable_rows");
    let mut refused = 0;
    for n in 0..10 {
        let r = post(addr, ca.clone(), "/v1/logs", vec![], batch_body("b", n)).await;
        match r.status {
            200 => acked.push(format!("b{n}")),
            503 if r.headers.contains_key("retry-after") => refused += 1,
            s => problems.push(format!("while full: batch b{n} answered {s} ({})", r.body)),
        }
    }
    // A syslog shipper keeps sending: what the daemon reads must wait, not vanish.
    let mut stream = tokio::net::TcpStream::connect(d.addr("plain")).await.expect("connect plain");
    let lines: String = (0..STREAM_EVENTS)
        .map(|i| format!("<13>Oct 11 22:14:15 disk-s app: stream-full {i} {}\n", "y".repeat(64)))
        .collect();
    stream.write_all(lines.as_bytes()).await.expect("stream send");
    // What the daemon read is kept for a retry (and it reads no more until that is written).
    let held = poll(T, || {
        let waiting = d.metric("logwarden_wal_retry_events");
        async move { waiting > 0.0 }
    })
    .await;
    if !held {
        problems.push("stream events read while the disk was full were not kept for a retry".into());
    }
    if unflushed > 0.0 {
        let segment_failed = poll(T, || {
            let m = d.metrics();
            async move { metric_sum(&m, "logwarden_storage_errors_total", "op=\"segment\"") >= 1.0 }
        })
        .await;
        if !segment_failed {
            problems.push("no failed Parquet flush was counted while the disk was full".into());
        }
    }
    let m = d.metrics();
    if metric_sum(&m, "logwarden_storage_errors_total", "op=\"wal\"") < 1.0 {
        problems.push("no WAL write failure was counted while the disk was full".into());
    }
    if d.admin_get("/healthz").0 != 200 {
        problems.push("/healthz failed while the disk was full".into());
    }

    // Space comes back.
    std::fs::remove_file(&filler).expect("free the disk");
    for n in 0..20 {
        let body = batch_body("c", n);
        // Retry as a shipper would, until accepted (a write may still meet the last of the full disk).
        let start = std::time::Instant::now();
        loop {
            let r = post(addr, ca.clone(), "/v1/logs", vec![], body.clone()).await;
            if r.status == 200 {
                break;
            }
            assert!(
                start.elapsed() < T,
                "batch c{n} not accepted once space was back: {} {}",
                r.status,
                r.body
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        acked.push(format!("c{n}"));
    }
    let mut stream_stored = 0;
    poll(T, || {
        stream_stored = d.count("message LIKE 'stream-full %'");
        async move { stream_stored >= STREAM_EVENTS as i64 }
    })
    .await;
    if stream_stored != STREAM_EVENTS as i64 {
        problems.push(format!(
            "stream events read while the disk was full: {stream_stored} of {STREAM_EVENTS} stored after space came back"
        ));
    }
    drop(stream);
    // Flushing resumes: everything durable reaches a Parquet segment.
    let acked_rows = (acked.len() * EVENTS_PER_BATCH) as f64;
    let flushed = poll(T, || {
        let done =
            d.metric("logwarden_memtable_rows") == 0.0 && d.metric("logwarden_storage_rows") >= acked_rows;
        async move { done }
    })
    .await;
    if !flushed {
        problems.push(format!(
            "Parquet flushing did not resume: {} rows still only in the WAL, {} in segments",
            d.metric("logwarden_memtable_rows"),
            d.metric("logwarden_storage_rows")
        ));
    }

    let leftovers: Vec<String> = std::fs::read_dir(d.data_dir().join("segments"))
        .expect("segments dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    if !leftovers.is_empty() {
        problems.push(format!("temporary segment files left behind: {leftovers:?}"));
    }

    d.kill9();
    d.spawn();
    let rows = d.query(
        "SELECT split_part(message, ' ', 2) AS batch, count(*) AS n FROM logs \
         WHERE message LIKE 'full %' GROUP BY 1",
    );
    let stored: HashMap<String, i64> = rows
        .iter()
        .map(|r| (r["batch"].as_str().unwrap_or_default().to_owned(), r["n"].as_i64().unwrap_or(0)))
        .collect();
    let intact = acked.iter().filter(|b| stored.get(*b) == Some(&(EVENTS_PER_BATCH as i64))).count();
    for b in &acked {
        if stored.get(b) != Some(&(EVENTS_PER_BATCH as i64)) {
            problems.push(format!(
                "acknowledged batch {b}: {} of {EVENTS_PER_BATCH} events stored after kill -9",
                stored.get(b).copied().unwrap_or(0)
            ));
        }
    }
    for (b, n) in &stored {
        if !acked.contains(b) && *n != 0 && *n != EVENTS_PER_BATCH as i64 {
            problems.push(format!("unacknowledged batch {b} stored in part: {n} events"));
        }
    }
    let stream_after = d.count("message LIKE 'stream-full %'");
    say(&format!(
        "disk_full: {} batches of {EVENTS_PER_BATCH} acknowledged (5 before, {} while full, 20 after), \
         {refused} refused with 503 while full; after kill -9: {intact} of them stored whole; \
         stream events {stream_after} of {STREAM_EVENTS} stored; {unflushed} rows were waiting for Parquet \
         when the disk filled",
        acked.len(),
        acked.iter().filter(|b| b.starts_with('b')).count()
    ));
    assert!(problems.is_empty(), "on a full disk:\n{}", problems.join("\n"));
}
