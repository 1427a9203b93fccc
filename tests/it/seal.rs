//! Tamper evidence: the daemon chains what it stores and signs checkpoints; `logwarden verify`
//! reads a stopped daemon's data directory (a copy of it for each attack) and names every change
//! an attacker with the disk could make: a flipped byte in a segment, a segment deleted, two
//! swapped, the WAL's tail cut, an audit line edited, an older manifest put back, a forged
//! checkpoint, the chain's newest entries cut off. A directory after `kill -9` and recovery, and
//! after retention, verifies clean.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::client::post;
use crate::daemon::{BIN, Daemon, test_config, wait_until};

/// `logwarden verify --data-dir DIR --cert CERT ARGS`: (exit status, stdout).
fn verify(data: &Path, cert: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["verify", "--data-dir"])
        .arg(data)
        .arg("--cert")
        .arg(cert)
        .args(args)
        .output()
        .expect("run logwarden verify");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

/// A copy of `data` to attack.
fn copy(data: &Path, to: &Path) -> PathBuf {
    let dst = to.join(format!("copy-{}", std::fs::read_dir(to).unwrap().count()));
    let ok = Command::new("cp").arg("-a").arg(data).arg(&dst).status().unwrap().success();
    assert!(ok, "cp -a {} failed", data.display());
    dst
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Post `n` NDJSON events tagged `tag`, answered once durable.
async fn send(d: &Daemon, tag: &str, n: usize) {
    let body: String =
        (0..n).map(|i| format!("{{\"message\":\"{tag} event {i}\",\"host\":\"h{}\"}}\n", i % 7)).collect();
    let r = post(d.addr("http"), d.ca_file(), "/v1/logs", vec![], body.into_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// The line `verify` printed for `object` with `status`, if any.
fn line<'a>(out: &'a str, status: &str, object: &str) -> Option<&'a str> {
    out.lines().find(|l| {
        l.starts_with(status)
            && l.split_whitespace().nth(1).is_some_and(|o| o.trim_end_matches(':') == object)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_every_kind_of_tampering() {
    // First run: segments flushed quickly, the manifest copied between two of its generations.
    let mut d = Daemon::start_with("[storage]\nflush_interval = \"200ms\"\n");
    let data = d.data_dir();
    send(&d, "first", 500).await;
    wait_until(Duration::from_secs(30), "a segment", || d.metric("logwarden_storage_segments") >= 1.0);
    let old_manifest = std::fs::read(data.join("manifest.json")).unwrap();
    send(&d, "second", 500).await;
    wait_until(Duration::from_secs(30), "two segments", || d.metric("logwarden_storage_segments") >= 2.0);
    // A query: an audit line.
    assert_eq!(d.count("message LIKE 'first%'"), 500);
    d.terminate(Duration::from_secs(30));

    // Second run: the WAL keeps what arrives (no flush before the stop), the audit trail grows.
    std::fs::write(&d.config, test_config(&data, "[storage]\nflush_interval = \"1h\"\n")).unwrap();
    d.spawn();
    for i in 0..3 {
        send(&d, &format!("wal{i}"), 200).await;
    }
    let (status, checkpoint) = d.admin_get("/seal/checkpoint");
    assert_eq!(status, 200, "{checkpoint}");
    assert!(checkpoint.contains("\"signature\""), "{checkpoint}");
    d.terminate(Duration::from_secs(30));
    assert!(d.log_text().contains("seal checkpoint"), "checkpoints are logged");

    let cert = data.join("tls/server.pem");
    let work = tempfile::tempdir().unwrap();
    let exported = work.path().join("exported-checkpoint.jsonl");
    std::fs::copy(data.join("seal/checkpoints.jsonl"), &exported).unwrap();

    // Clean: everything intact, every checkpoint verified.
    let (code, out) = verify(&data, &cert, &["--checkpoint", exported.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("signature verified, the chain matches"), "{out}");
    assert!(line(&out, "intact", "manifest.json").is_some(), "{out}");
    let segments = files(&data.join("segments"), ".parquet");
    let wal = files(&data.join("wal"), ".wal")
        .into_iter()
        .filter(|p| p.metadata().unwrap().len() > 8)
        .collect::<Vec<_>>();
    let audit = files(&data.join("audit"), ".jsonl");
    assert!(segments.len() >= 2 && !wal.is_empty() && !audit.is_empty(), "{out}");
    for s in &segments {
        assert!(line(&out, "intact", &format!("segments/{}", name(s))).is_some(), "{out}");
    }

    // One byte flipped in a segment.
    let c = copy(&data, work.path());
    let seg = c.join("segments").join(name(&segments[0]));
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&seg, bytes).unwrap();
    let (code, out) = verify(&c, &cert, &[]);
    assert!(line(&out, "modified", &format!("segments/{}", name(&segments[0]))).is_some(), "{out}");
    assert_eq!(code, 2, "{out}");

    // A segment deleted.
    let c = copy(&data, work.path());
    std::fs::remove_file(c.join("segments").join(name(&segments[1]))).unwrap();
    let (code, out) = verify(&c, &cert, &[]);
    assert!(line(&out, "missing", &format!("segments/{}", name(&segments[1]))).is_some(), "{out}");
    assert_eq!(code, 4, "{out}");

    // Two segments swapped.
    let c = copy(&data, work.path());
    let (a, b) = (c.join("segments").join(name(&segments[0])), c.join("segments").join(name(&segments[1])));
    std::fs::rename(&a, c.join("swap")).unwrap();
    std::fs::rename(&b, &a).unwrap();
    std::fs::rename(c.join("swap"), &b).unwrap();
    let (code, out) = verify(&c, &cert, &[]);
    for s in &segments[..2] {
        assert!(line(&out, "reordered", &format!("segments/{}", name(s))).is_some(), "{out}");
    }
    assert_eq!(code, 8, "{out}");

    // The WAL's tail cut off.
    let c = copy(&data, work.path());
    let w = c.join("wal").join(name(wal.last().unwrap()));
    let len = w.metadata().unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&w).unwrap().set_len(len - 100).unwrap();
    let (code, out) = verify(&c, &cert, &[]);
    assert!(line(&out, "missing", &format!("wal/{}", name(&w))).is_some(), "{out}");
    assert_eq!(code & 4, 4, "{out}");

    // An audit line edited.
    let c = copy(&data, work.path());
    let a = c.join("audit").join(name(&audit[0]));
    let text = std::fs::read_to_string(&a).unwrap();
    let edited = text.replacen("127.0.0.1", "127.0.0.2", 1);
    assert_ne!(edited, text);
    std::fs::write(&a, edited).unwrap();
    let (code, out) = verify(&c, &cert, &[]);
    assert!(line(&out, "modified", &format!("audit/{}", name(&a))).is_some(), "{out}");
    assert_eq!(code, 2, "{out}");

    // An older manifest put back.
    let c = copy(&data, work.path());
    std::fs::write(c.join("manifest.json"), &old_manifest).unwrap();
    let (code, out) = verify(&c, &cert, &[]);
    let l = line(&out, "reordered", "manifest.json").unwrap_or_else(|| panic!("{out}"));
    assert!(l.contains("older"), "{l}");
    assert_eq!(code, 8, "{out}");

    // A checkpoint forged with another key (claiming the server certificate).
    let forged = work.path().join("forged.jsonl");
    let text = std::fs::read_to_string(&exported).unwrap();
    let mut signed: logwarden::seal::Signed = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["attacker".into()]).unwrap();
    let other_key = rustls::sign::CertifiedKey::from_der(
        vec![other.cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(other.signing_key.serialize_der().into()),
        &logwarden::tls::crypto_provider(),
    )
    .unwrap();
    signed.checkpoint.seq += 5;
    let claimed = signed.signature.certificate_sha256;
    let mut forgery = signed.checkpoint.clone().sign(&other_key).unwrap();
    forgery.signature.certificate_sha256 = claimed;
    std::fs::write(&forged, forgery.to_line() + "\n").unwrap();
    let (code, out) = verify(&data, &cert, &["--checkpoint", forged.to_str().unwrap()]);
    assert!(out.contains("FAILED: the signature does not verify"), "{out}");
    assert_eq!(code, 32, "{out}");

    // The chain's newest entries cut off (with the data directory's own checkpoints): the
    // exported checkpoint still vouches for them.
    let c = copy(&data, work.path());
    let chain = c.join("seal/chain.jsonl");
    let text = std::fs::read_to_string(&chain).unwrap();
    let keep: Vec<&str> = text.lines().collect();
    let cut = keep[..keep.len() - 3].join("\n") + "\n";
    std::fs::write(&chain, cut).unwrap();
    std::fs::write(c.join("seal/checkpoints.jsonl"), "").unwrap();
    let (code, out) = verify(&c, &cert, &["--checkpoint", exported.to_str().unwrap()]);
    assert!(out.contains("entries were removed from its end"), "{out}");
    assert_eq!(code & 32, 32, "{out}");

    // An edited WAL record: the daemon refuses to replay it rather than store the altered
    // events as a new segment and remove the evidence.
    let c = copy(&data, work.path());
    let w = c.join("wal").join(name(wal.last().unwrap()));
    let mut bytes = std::fs::read(&w).unwrap();
    let i = bytes.len() - 10;
    bytes[i] ^= 0x01;
    std::fs::write(&w, bytes).unwrap();
    let config = work.path().join("edited.toml");
    std::fs::write(&config, test_config(&c, "")).unwrap();
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("does not hold what the seal chain says was written to it"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_verifies_clean_after_kill_9_and_after_retention() {
    let mut d = Daemon::start_with("[storage]\nflush_interval = \"200ms\"\nretention_max_age = \"2s\"\n");
    let data = d.data_dir();
    send(&d, "old", 300).await;
    wait_until(Duration::from_secs(60), "retention to delete a segment", || {
        d.metric("logwarden_retention_deleted_segments_total") >= 1.0
    });
    // Writes in flight at the crash: some acknowledged, some not.
    let addr = d.addr("http");
    let ca = d.ca_file();
    let senders: Vec<_> = (0..3)
        .map(|w| {
            let ca = ca.clone();
            tokio::spawn(async move {
                for i in 0..200 {
                    let body = format!("{{\"message\":\"crash {w} {i}\"}}\n").repeat(50);
                    // In a task of its own: a request the crash cuts off ends that task, not this loop's.
                    let sent = tokio::spawn(post(addr, ca.clone(), "/v1/logs", vec![], body.into_bytes()));
                    if !matches!(tokio::time::timeout(Duration::from_secs(5), sent).await, Ok(Ok(r)) if r.status == 200) {
                        break;
                    }
                }
            })
        })
        .collect();
    wait_until(Duration::from_secs(30), "events durable", || {
        d.metric("logwarden_events_durable_total") >= 2000.0
    });
    d.kill9();
    for s in senders {
        let _ = s.await;
    }
    d.spawn();
    send(&d, "after", 10).await;
    d.terminate(Duration::from_secs(30));
    let (code, out) = verify(&data, &data.join("tls/server.pem"), &[]);
    assert_eq!(code, 0, "{out}");
    let removed: usize = out
        .lines()
        .find_map(|l| l.split("; ").nth(1)?.strip_suffix(" objects removed on purpose")?.parse().ok())
        .unwrap_or(0);
    assert!(removed >= 1, "retention's removals are in the chain: {out}");
}
