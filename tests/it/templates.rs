//! `logwarden templates FILE`: offline template mining, one message per line, CRLF or LF,
//! from a file or stdin.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::daemon::BIN;

const LOG: &str = "Accepted password for alice from 10.0.0.1 port 50022 ssh2\r\n\
Failed password for root from 203.0.113.9 port 40100 ssh2\r\n\
Accepted password for alice from 10.0.0.2 port 50023 ssh2\r\n\
Failed password for root from 203.0.113.9 port 40102 ssh2\r\n\
Connection closed by 10.0.0.3 port 50100 [preauth]\r\n";

#[test]
fn a_file_is_mined_into_line_ids_and_a_template_list() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("auth.log");
    std::fs::write(&file, LOG).unwrap();
    let out = Command::new(BIN).arg("templates").arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (lines, templates) = text.split_once("\n\n").unwrap();
    assert_eq!(lines, "line\ttemplate_id\n1\t1\n2\t2\n3\t1\n4\t2\n5\t3");
    assert_eq!(
        templates,
        "template_id\tcount\tpattern\n\
         1\t2\tAccepted password for alice from <*> port <*>\n\
         2\t2\tFailed password for root from <*> port <*>\n\
         3\t1\tConnection closed by <*> port <*> [preauth]\n"
    );

    let mut child = Command::new(BIN)
        .args(["templates", "--only", "templates", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(LOG.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), templates);

    let missing = Command::new(BIN).args(["templates", "/nonexistent/x.log"]).output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot open /nonexistent/x.log"));
}
