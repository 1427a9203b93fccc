//! Reloads are all or nothing, and answer the service manager even on embedded defaults.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use logwarden::serve::flight::auth::sha256_hex;
use logwarden::serve::flight::client;

use crate::daemon::{BIN, Daemon, wait_until};

const T: Duration = Duration::from_secs(30);

fn section(tokens: &str, tables: &str) -> String {
    format!(
        "[flight]\naddress = \"127.0.0.1:0\"\n{tokens}[[access.query]]\nprincipals = [\"token:analyst\", \"token:token-file\"]\ntables = [{tables}]\n"
    )
}

/// The Flight SQL part of the file fails only when the reload reads the token file, after
/// `[access]` was checked: the new access rule must not be applied without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_fails_in_its_last_part_changes_nothing() {
    let token =
        format!("[[flight.tokens]]\nname = \"analyst\"\nsha256 = \"{}\"\n", sha256_hex("analyst-token"));
    let before = section(&token, r#""logs""#);
    let d = Daemon::start_with(&before);
    let url = format!("https://localhost:{}", d.addr("flight").port());
    let mut analyst = client::connect(&url, Some(&d.ca_file()), Some("analyst-token")).await.unwrap();
    let err = client::query(&mut analyst, "SELECT count(*) FROM audit").await.unwrap_err().to_string();
    assert!(err.contains("may not query table audit"), "{err}");

    // The new file grants audit and drops the configured token for the token file, which is
    // empty: the credentials cannot be read, so the reload must be refused whole.
    std::fs::write(d.data_dir().join("flight.token"), "").unwrap();
    let text =
        std::fs::read_to_string(&d.config).unwrap().replace(&before, &section("", r#""logs", "audit""#));
    std::fs::write(&d.config, text).unwrap();
    d.signal("-HUP");
    wait_until(T, "the refusal", || d.log_text().contains("configuration not reloaded"));
    assert!(d.log_text().contains("flight.token"), "the refusal names the file");

    // Nothing of the file applied: not the access rule, not the credentials.
    let err = client::query(&mut analyst, "SELECT count(*) FROM audit").await.unwrap_err().to_string();
    assert!(err.contains("may not query table audit"), "the [access] part was applied: {err}");
    assert!(client::query(&mut analyst, "SELECT count(*) FROM logs").await.is_ok());
}

/// Without a config file, SIGHUP still reloads what it can (the development certificate) and
/// answers `RELOADING=1` and `READY=1`. The daemon binds its default ports, so it runs in a
/// network namespace of its own.
#[test]
fn sighup_on_embedded_defaults_reloads_and_answers_the_manager() {
    let tmp = tempfile::tempdir().unwrap();
    let sock_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let log = std::fs::File::create(tmp.path().join("daemon.log")).unwrap();
    let spawned = Command::new("unshare")
        .args(["--net", "--", "sh", "-c", "ip link set lo up && exec \"$0\" serve", BIN])
        .current_dir(tmp.path())
        .env("NOTIFY_SOCKET", &sock_path)
        .env_remove("LISTEN_FDS")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn();
    let Ok(mut child) = spawned else {
        eprintln!("SKIPPED: cannot run unshare --net here");
        return;
    };
    let mut seen = Vec::new();
    let mut until = |what: &str, pred: &dyn Fn(&str) -> bool| {
        let start = Instant::now();
        let mut buf = vec![0u8; 4096];
        while start.elapsed() < T {
            if let Ok(n) = sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                seen.push(msg.clone());
                if pred(&msg) {
                    return;
                }
            }
        }
        let log = std::fs::read_to_string(tmp.path().join("daemon.log")).unwrap_or_default();
        panic!("no {what} within {T:?}; received {seen:#?}; log:\n{log}");
    };
    until("READY=1", &|m| m.lines().any(|l| l == "READY=1"));
    let _ = Command::new("kill").args(["-HUP", &child.id().to_string()]).status();
    until("RELOADING=1", &|m| m.lines().any(|l| l == "RELOADING=1"));
    until("READY=1 after the reload", &|m| {
        m.lines().any(|l| l == "READY=1") && m.contains("STATUS=reloaded")
    });
    let log = std::fs::read_to_string(tmp.path().join("daemon.log")).unwrap();
    assert!(log.contains("server certificate reloaded") && log.contains("configuration reloaded"), "{log}");
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
