//! syslog-ng (Debian's 3.38, unpacked by scripts/install-test-deps because its package
//! conflicts with rsyslog's) forwards over TLS into logwarden with both of its destinations:
//! `network()` (BSD syslog, LF framing) and `syslog()` (RFC 5424, RFC 5425 octet counting).
//! Every line arrives once, with its host and program.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::daemon::{Daemon, wait_until};

const LINES: usize = 100;

fn root() -> PathBuf {
    std::env::var_os("LOGWARDEN_SYSLOG_NG").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/logwarden/syslog-ng")
    })
}

struct SyslogNg {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for SyslogNg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let out = std::fs::read_to_string(self.dir.path().join("syslog-ng.out")).unwrap_or_default();
            eprintln!("--- syslog-ng output ---\n{out}");
        }
    }
}

fn start(d: &Daemon) -> SyslogNg {
    let root = root();
    let bin = root.join("usr/sbin/syslog-ng");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/install-test-deps (it unpacks syslog-ng)",
        bin.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let input = |name: &str| {
        let path = dir.path().join(format!("{name}.log"));
        let lines: String = (0..LINES)
            .map(|i| {
                format!("<14>Dec  3 10:00:{:02} sng-host sngapp[42]: syslog-ng line {i} via {name}\n", i % 60)
            })
            .collect();
        std::fs::write(&path, lines).unwrap();
        path
    };
    let (bsd, ietf) = (input("network"), input("syslog"));
    let port = d.addr("syslog").port();
    let ca = d.ca_file();
    let conf = format!(
        r#"@version: 3.38
options {{ keep-hostname(yes); stats-freq(0); }};
source s_bsd {{ file("{bsd}" follow-freq(1)); }};
source s_ietf {{ file("{ietf}" follow-freq(1)); }};
destination d_network {{
  network("localhost" port({port}) transport("tls") persist-name("lw-network")
    tls(ca-file("{ca}") peer-verify(required-trusted)));
}};
destination d_syslog {{
  syslog("localhost" port({port}) transport("tls") persist-name("lw-syslog")
    tls(ca-file("{ca}") peer-verify(required-trusted)));
}};
log {{ source(s_bsd); destination(d_network); }};
log {{ source(s_ietf); destination(d_syslog); }};
"#,
        bsd = bsd.display(),
        ietf = ietf.display(),
        ca = ca.display(),
    );
    let conf_path = dir.path().join("syslog-ng.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let out = std::fs::File::create(dir.path().join("syslog-ng.out")).unwrap();
    let child = Command::new(&bin)
        .arg("-F")
        .arg("--no-caps")
        .arg(format!("--cfgfile={}", conf_path.display()))
        .arg(format!("--module-path={}", root.join("usr/lib/syslog-ng/3.38").display()))
        .arg(format!("--persist-file={}", dir.path().join("persist").display()))
        .arg(format!("--pidfile={}", dir.path().join("pid").display()))
        .arg(format!("--control={}", dir.path().join("ctl").display()))
        .env("LD_LIBRARY_PATH", root.join("usr/lib/syslog-ng"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start syslog-ng");
    SyslogNg { child, dir }
}

#[test]
fn syslog_ng_forwards_with_network_and_syslog_destinations() {
    let d = Daemon::start();
    let mut sng = start(&d);
    for via in ["network", "syslog"] {
        let filter = format!("message LIKE 'syslog-ng line % via {via}'");
        wait_until(Duration::from_secs(60), &format!("the lines sent with {via}()"), || {
            if let Ok(Some(status)) = sng.child.try_wait() {
                panic!("syslog-ng exited with {status}");
            }
            d.count(&filter) >= LINES as i64
        });
        assert_eq!(d.count(&filter), LINES as i64, "{via}: each line once");
        assert_eq!(
            d.count(&format!("{filter} AND host = 'sng-host' AND app = 'sngapp' AND procid = '42' AND severity = 6 AND decode_error IS NULL AND protocol = 'syslog'")),
            LINES as i64,
            "{via}: host, program, pid and severity kept"
        );
    }
    assert_eq!(d.count("message LIKE 'syslog-ng line 7 via %'"), 2);
}
