//! The Python ADBC Flight SQL driver (what notebooks, DBeaver-like tools and Grafana's
//! plugin build on) against the real daemon over TLS. The checks live in
//! tests/adbc/flight_client.py; scripts/install-test-deps installs the driver in a venv.

use std::process::Command;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::client::{connect_tls, octet, post};
use crate::daemon::{Daemon, python, wait_until};

#[tokio::test(flavor = "multi_thread")]
async fn adbc_python_client_queries_browses_and_binds_parameters() {
    let d = Daemon::start();
    let body = "{\"message\":\"login ok\",\"service\":\"api\",\"level\":\"info\"}\n\
                {\"message\":\"login failed\",\"service\":\"api\",\"level\":\"err\"}\n\
                {\"message\":\"disk full\",\"service\":\"kernel\",\"level\":\"crit\"}\n";
    let r = post(d.addr("http"), d.ca_file(), "/v1/logs", vec![], body.as_bytes().to_vec()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut s = connect_tls(d.addr("syslog"), &d.ca_file()).await;
    s.write_all(&octet("<14>1 - web-1 nginx - - - just arrived")).await.unwrap();
    s.flush().await.unwrap();
    wait_until(Duration::from_secs(30), "the stream event", || d.count("app = 'nginx'") == 1);
    d.wait_published();

    let token = std::fs::read_to_string(d.data_dir().join("flight.token")).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/adbc/flight_client.py");
    let out = Command::new(python())
        .arg(script)
        .env("LW_FLIGHT_URI", format!("grpc+tls://localhost:{}", d.addr("flight").port()))
        .env("LW_CA_FILE", d.ca_file())
        .env("LW_TOKEN", token.trim())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ADBC client failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("adbc: all checks passed"), "{stdout}");
}

/// ADBC with a client certificate and no token: the certificate's principal runs the query
/// (here a CAC holder allowed to read `logs` by an [access] rule).
#[tokio::test(flavor = "multi_thread")]
async fn adbc_authenticates_with_a_client_certificate() {
    let mut pki = crate::pki::Pki::new("logwarden client CA");
    let cac = pki.cac("cac", "DOE.JOHN.A.1234567890", "john.doe@example.mil", "1234567890@mil");
    let d = Daemon::start_with(&format!(
        "{}[flight]\naddress = \"127.0.0.1:0\"\nclient_auth = \"required\"\n\
         [[access.query]]\nprincipals = [\"1234567890\"]\ntables = [\"logs\"]\n",
        crate::pki::trust_section(&pki, "10s"),
    ));
    let mut s = connect_tls(d.addr("syslog"), &d.ca_file()).await;
    s.write_all(&octet("<14>1 - web-1 nginx - - - for the card holder")).await.unwrap();
    s.flush().await.unwrap();
    wait_until(Duration::from_secs(30), "the event", || d.count("") == 1);
    d.wait_published();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/adbc/mtls_client.py");
    let out = Command::new(python())
        .arg(script)
        .env("LW_FLIGHT_URI", format!("grpc+tls://localhost:{}", d.addr("flight").port()))
        .env("LW_CA_FILE", d.ca_file())
        .env("LW_CERT", &cac.cert)
        .env("LW_KEY", &cac.key)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ADBC mTLS client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("adbc mtls: count = 1"), "{stdout}");
    wait_until(Duration::from_secs(30), "the query in the audit trail", || {
        let rows = d.query("SELECT principal, auth FROM audit WHERE kind = 'query' AND outcome = 'ok'");
        rows.iter().any(|r| r["principal"] == "edipi:1234567890" && r["auth"] == "certificate")
    });
}
