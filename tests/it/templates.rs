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

/// A word that varies at one place is a value: the lines of templates merged since print the
/// template they ended up in, and the list has only the live one.
#[test]
fn lines_get_the_template_they_end_up_in() {
    let log = "Invalid user admin from 10.0.0.1 port 22\n\
               Invalid user guest from 10.0.0.2 port 22\n\
               Invalid user oracle from 10.0.0.3 port 22\n\
               Invalid user guest from 10.0.0.4 port 22\n";
    let mut child = Command::new(BIN)
        .args(["templates", "--explain", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(log.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (lines, templates) = text.split_once("\n\n").unwrap();
    let ids: Vec<&str> = lines.lines().skip(1).map(|l| l.split('\t').nth(1).unwrap()).collect();
    assert_eq!(ids, ["1", "1", "1", "1"], "{text}");
    assert!(lines.contains("templates 1, 2 and this line differ only in the word at token 3"), "{text}");
    assert_eq!(templates, "template_id\tcount\tpattern\n1\t4\tInvalid user <*> from <*> port <*>\n");
}

/// The daemon mines what arrives: every event in `logs` carries its `template_id`, the
/// `templates` table lists the patterns (live over Flight SQL, saved for `logwarden query`),
/// and ids stay the same after a restart.
#[tokio::test(flavor = "multi_thread")]
async fn events_carry_template_ids_that_survive_a_restart() {
    use arrow::util::pretty::pretty_format_batches;
    use logwarden::serve::flight::client;
    use tokio::io::AsyncWriteExt;

    use crate::client::{connect_tls, octet};
    use crate::daemon::{Daemon, wait_until};

    let mut d = Daemon::start();
    let mut s = connect_tls(d.addr("syslog"), &d.ca_file()).await;
    for i in 0..30 {
        let line = format!(
            "<38>1 - db-1 sshd - - - Failed password for root from 203.0.113.{i} port {} ssh2",
            40000 + i
        );
        s.write_all(&octet(&line)).await.unwrap();
        s.write_all(&octet(&format!("<30>1 - db-1 kernel - - - disk sda{i} is {}% full", 90 + i % 10)))
            .await
            .unwrap();
    }
    s.shutdown().await.unwrap();
    wait_until(std::time::Duration::from_secs(30), "60 events", || d.count("") == 60);
    d.wait_published();

    let token = std::fs::read_to_string(d.data_dir().join("flight.token")).unwrap();
    let url = format!("https://localhost:{}", d.addr("flight").port());
    let mut c = client::connect(&url, Some(&d.ca_file()), Some(token.trim())).await.unwrap();
    let sql = "SELECT t.id, t.pattern, t.count, count(*) AS n FROM logs l JOIN templates t ON l.template_id = t.id \
               GROUP BY t.id, t.pattern, t.count ORDER BY t.id";
    let live = pretty_format_batches(&client::query(&mut c, sql).await.unwrap()).unwrap().to_string();
    assert!(live.contains("| 1  | Failed password for root from <*> port <*> | 30    | 30 |"), "{live}");
    assert!(live.contains("| 2  | disk <*> is <*>% full                      | 30    | 30 |"), "{live}");

    assert_eq!(d.metric("logwarden_templates"), 2.0);
    assert_eq!(d.metric("logwarden_templates_created_total"), 2.0);

    // After a restart the saved templates keep their ids: new events join them.
    drop(c);
    assert!(d.terminate(std::time::Duration::from_secs(20)).success());
    d.spawn();
    let mut s = connect_tls(d.addr("syslog"), &d.ca_file()).await;
    s.write_all(&octet("<30>1 - db-2 kernel - - - disk sdb1 is 99% full")).await.unwrap();
    s.shutdown().await.unwrap();
    wait_until(std::time::Duration::from_secs(30), "the event after the restart", || {
        d.count("host = 'db-2' AND template_id = 2") == 1
    });
    assert_eq!(d.metric("logwarden_templates"), 2.0, "loaded from the saved file");
    assert_eq!(d.metric("logwarden_templates_created_total"), 0.0);
    // `logwarden query` reads the saved file (written every 10 s and at shutdown).
    let saved = d.query("SELECT id, pattern FROM templates ORDER BY id");
    assert_eq!(saved.len(), 2, "{saved:?}");
    assert_eq!(saved[1]["pattern"], "disk <*> is <*>% full");
}

/// Templates found to be one statement merge in the daemon: events keep the id they were given,
/// the `templates` table names the template that took its place, and `logwarden_templates`
/// counts live templates.
#[tokio::test(flavor = "multi_thread")]
async fn merged_templates_name_the_template_that_took_their_place() {
    use tokio::io::AsyncWriteExt;

    use crate::client::{connect_tls, octet};
    use crate::daemon::{Daemon, wait_until};

    let mut d = Daemon::start();
    let mut s = connect_tls(d.addr("syslog"), &d.ca_file()).await;
    let users = ["admin", "guest", "oracle", "tomcat", "git"];
    for i in 0..25 {
        let line = format!(
            "<38>1 - gw sshd - - - Invalid user {} from 198.51.100.{i} port {}",
            users[i % users.len()],
            40000 + i
        );
        s.write_all(&octet(&line)).await.unwrap();
    }
    s.shutdown().await.unwrap();
    wait_until(std::time::Duration::from_secs(30), "25 events", || d.count("") == 25);
    wait_until(std::time::Duration::from_secs(30), "one live template", || {
        d.metric("logwarden_templates") == 1.0
    });
    assert_eq!(d.metric("logwarden_templates_created_total"), 2.0, "admin, then guest; oracle merged them");
    assert!(d.terminate(std::time::Duration::from_secs(20)).success());
    let templates = d.query("SELECT id, pattern, count, merged_into FROM templates ORDER BY id");
    assert_eq!(templates.len(), 2, "{templates:?}");
    assert_eq!(templates[0]["pattern"], "Invalid user <*> from <*> port <*>");
    // Each counts the events given its id: together, all of them.
    assert_eq!(templates[0]["count"].as_u64().unwrap() + templates[1]["count"].as_u64().unwrap(), 25);
    assert!(templates[0]["merged_into"].is_null(), "{templates:?}");
    assert_eq!(templates[1]["merged_into"], 1, "{templates:?}");
    let grouped = d.query(
        "SELECT coalesce(t.merged_into, t.id) AS template, count(*) AS n FROM logs l \
         JOIN templates t ON l.template_id = t.id GROUP BY 1",
    );
    assert_eq!(grouped.len(), 1, "{grouped:?}");
    assert_eq!(grouped[0]["n"], 25);
}
