//! `logwarden validate`: every shipped config passes; broken ones list each problem with its
//! file, key and reason.

use std::process::Command;

use crate::daemon::BIN;

fn validate(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(BIN).arg("validate").arg(path).output().expect("run validate");
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

/// `text` written to `path`, then `validate`d.
fn validate_text(path: &std::path::Path, text: impl AsRef<[u8]>) -> (bool, String) {
    std::fs::write(path, text).unwrap();
    validate(path)
}

/// Every one of `expected` is in `out`.
fn assert_says<S: AsRef<str>>(out: &str, expected: impl IntoIterator<Item = S>) {
    for e in expected {
        assert!(out.contains(e.as_ref()), "missing {:?} in:\n{out}", e.as_ref());
    }
}

#[test]
fn every_shipped_config_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    // The example config and the ones the container image, compose stack use.
    for dir in [root.join("config"), root.join("deploy")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let (ok, out) = validate(&path);
                assert!(ok, "{} should be valid:\n{out}", path.display());
                n += 1;
            }
        }
    }
    assert!(n >= 3, "configs missing in config/ and deploy/");
}

#[test]
fn broken_configs_name_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    let (ok, out) = validate_text(
        &path,
        r#"
data_dri = "/tmp/x"
[batch]
rows = "lots"
[[stream]]
name = "syslog"
address = "0.0.0.0:6514"
tls = false
[[stream]]
name = "syslog"
address = "not-an-address"
[tls]
cert_file = "/nonexistent/cert.pem"
key_file = "/nonexistent/key.pem"
"#,
    );
    assert!(!ok, "broken config accepted:\n{out}");
    let f = path.display().to_string();
    assert_says(
        &out,
        [
            format!("{f}: data_dri: unknown field"),
            format!("{f}: batch.rows: invalid type"),
            format!("{f}: stream[1].address: "),
            format!("{f}: stream[0].tls: plain TCP is only allowed on a loopback address"),
            format!("{f}: stream[1].name: \"syslog\" is already the name of stream[0]"),
            format!("{f}: tls.cert_file: cannot read /nonexistent/cert.pem"),
        ],
    );
}

#[test]
fn client_auth_and_access_rules_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.toml");
    let (ok, out) = validate_text(
        &path,
        r#"
[tls]
crl_files = ["/nonexistent/ca.crl"]
[[stream]]
name = "syslog"
address = "127.0.0.1:6514"
client_auth = "required"
[[stream]]
name = "plain"
address = "127.0.0.1:6515"
tls = false
client_auth = "optional"
client_ca_file = "/nonexistent/ca.pem"
[admin]
client_auth = "required"
[identity]
principal_from = []
[[access.send]]
principals = ["group:nobody"]
listeners = ["sylsog"]
[[access.query]]
principals = ["*"]
tables = ["logz"]
row_filter = "host LIKE 'web-%' ; DROP TABLE logs"
"#,
    );
    assert!(!ok, "broken config accepted:\n{out}");
    let f = path.display().to_string();
    assert_says(
        &out,
        [
            format!("{f}: tls.crl_files[0]: cannot read /nonexistent/ca.crl"),
            format!("{f}: stream[0].client_ca_file: client_auth = \"required\" needs the CAs"),
            format!("{f}: stream[1].client_auth: client certificates need TLS"),
            format!("{f}: stream[1].client_ca_file: cannot read /nonexistent/ca.pem"),
            format!("{f}: admin.client_auth: client certificates need TLS"),
            format!("{f}: admin.client_ca_file: client_auth = \"required\" needs the CAs"),
            format!("{f}: identity.principal_from: must name at least one source"),
            format!("{f}: access.send[0].principals: names group \"nobody\""),
            format!(
                "{f}: access.send[0].listeners: \"sylsog\" is not the name of a [[stream]], [[http]], [[otlp]] or [[relp]] listener"
            ),
            format!("{f}: access.query[0].tables: \"logz\" is not a table"),
            format!("{f}: access.query[0].row_filter: is not a SQL condition"),
        ],
    );
}

#[test]
fn serve_refuses_an_invalid_config_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[admin]\nadress = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin.adress: unknown field"), "{err}");
}

#[test]
fn query_refuses_a_data_directory_that_does_not_exist() {
    // A mistyped or relative data_dir must not read as an empty store.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let out = Command::new(BIN)
        .args(["query", "--data-dir"])
        .arg(&missing)
        .arg("SELECT count(*) FROM logs")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{} does not exist", missing.display())), "{err}");
    assert!(!missing.exists(), "query created the directory");
}

#[test]
fn flight_credentials_and_limits_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flight.toml");
    let (ok, out) = validate_text(
        &path,
        r#"
[flight]
address = "0.0.0.0:50051"
tls = false
[[flight.tokens]]
name = "grafana"
sha256 = "s3cret-in-plain-text"
[[flight.users]]
name = "alice"
password = "hunter2"
[flight.limits]
max_concurrent = 0
"#,
    );
    assert!(!ok, "accepted:\n{out}");
    let f = path.display().to_string();
    assert_says(
        &out,
        [
            format!("{f}: flight.users[0].password: unknown field"),
            format!("{f}: flight.tls: plain gRPC is only allowed on a loopback address"),
            format!("{f}: flight.tokens[0].sha256: must be the 64 lowercase hex digits"),
            format!("{f}: flight.limits.max_concurrent: must be at least 1"),
        ],
    );
}

#[test]
fn row_filters_must_fit_their_tables_and_bare_principals_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.toml");
    let (ok, out) = validate_text(
        &path,
        r#"
[[flight.tokens]]
name = "grafana"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
[[access.query]]
principals = ["edipi:1234567890"]
tables = ["audit"]
row_filter = "host LIKE 'web-%'"
[[access.query]]
principals = ["token:grafana"]
tables = ["logs", "alerts", "rule_results", "templates"]
"#,
    );
    assert!(!ok, "a row filter over columns the table lacks was accepted:\n{out}");
    let f = path.display().to_string();
    assert!(
        out.contains(&format!("{f}: access.query[0].row_filter: does not apply to table audit")),
        "{out}"
    );
    assert!(!out.contains("access.query[1]"), "every table the daemon serves may be named:\n{out}");

    // Bare names load (nothing is locked out by the upgrade) but are warned about with the
    // full names to choose from.
    let (ok, out) = validate_text(
        &path,
        r#"
[[flight.tokens]]
name = "grafana"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
[access.groups]
shippers = ["web-01.example.org", "dns:web-02.example.org"]
[[access.query]]
principals = ["grafana", "1234567890", "token:ci"]
tables = ["logs"]
"#,
    );
    assert!(ok, "bare names must still load:\n{out}");
    assert_says(
        &out,
        [
            format!("{f}: access.groups.shippers: warning: \"web-01.example.org\" is a bare name"),
            format!("{f}: access.query[0].principals: warning: \"grafana\" is a bare name"),
            "token:grafana".to_owned(),
            "edipi:1234567890".to_owned(),
        ],
    );
    assert!(!out.contains("web-02") && !out.contains("token:ci:"), "full names are not warned about:\n{out}");

    // A kind in another case or a name with spaces around it cannot mean what it says (it
    // would be a bare name matching a CN "EDIPI:1234567890"): refused. A prefix that is no
    // kind at all is warned about.
    let (ok, out) = validate_text(
        &path,
        r#"
[access.groups]
admins = [" edipi:1234567890"]
[[access.send]]
principals = ["EDIPI:1234567890", "Dns:web-01.example.org"]
listeners = ["*"]
[[access.query]]
principals = ["uid:alice"]
tables = ["logs"]
"#,
    );
    assert!(!ok, "kinds in the wrong case were accepted:\n{out}");
    assert_says(
        &out,
        [
            format!("{f}: access.groups.admins: \" edipi:1234567890\" has spaces or invisible characters"),
            format!(
                "{f}: access.send[0].principals: \"EDIPI:1234567890\": kinds are written in lowercase, without spaces: \"edipi:1234567890\""
            ),
            "\"dns:web-01.example.org\"".to_owned(),
        ],
    );

    // Other spellings that could never match the principal meant, each refused with why:
    // a nested group, spaces around the colon, an invisible character, an empty value, an
    // EDIPI that is not ten digits. A user that no [[flight.users]] entry has is warned about.
    let (ok, out) = validate_text(
        &path,
        "[[flight.users]]\nname = \"alice\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g\"\n\
         [access.groups]\nops = [\"edipi:1234567890\"]\nall = [\"group:ops\"]\n\
         [[access.query]]\nprincipals = [\"edipi :1234567890\", \"edipi: 1234567890\", \"edipi:1234567890\\u200b\", \"edipi:\", \":alice\", \"edipi:12345\"]\ntables = [\"logs\"]\n",
    );
    assert!(!ok, "{out}");
    assert_says(
        &out,
        [
            "access.groups.all: \"group:ops\": groups do not nest",
            "\"edipi :1234567890\": kinds are written in lowercase, without spaces",
            "\"edipi: 1234567890\" has spaces after its kind",
            "\"edipi:1234567890\\u{200b}\" has spaces or invisible characters",
            "\"edipi:\" names no one",
            "\":alice\" names no one",
            "\"edipi:12345\": an EDIPI is ten digits",
        ],
    );
    let (ok, out) = validate_text(
        &path,
        "[[access.query]]\nprincipals = [\"uid:alice\", \"user:Alice\"]\ntables = [\"logs\"]\n",
    );
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "{f}: access.query[0].principals: warning: \"uid:alice\": \"uid\" is not a kind of principal"
        )),
        "{out}"
    );
    assert!(out.contains("warning: \"user:Alice\" names no [[flight.users]] entry"), "{out}");
}

/// An alert receiver's CA file that holds no certificate would load and then fail every
/// delivery's handshake: refused, naming the key and the file.
#[test]
fn an_alert_receivers_ca_file_must_hold_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("bad-ca.pem");
    std::fs::write(&ca, "garbage\n").unwrap();
    let path = dir.path().join("alerts.toml");
    let (ok, out) = validate_text(
        &path,
        format!(
            "[[alerting.webhooks]]\nurl = \"https://127.0.0.1:9443/hook\"\nca_file = \"{}\"\n",
            ca.display()
        ),
    );
    assert!(!ok, "{out}");
    let expected = format!(
        "{}: alerting.webhooks[0].ca_file: {} holds no PEM CERTIFICATE",
        path.display(),
        ca.display()
    );
    assert!(out.contains(&expected), "{out}");

    // A certificate request is no certificate, an encrypted key cannot be read: both would
    // stop the daemon at its next start, so validate refuses them now.
    std::fs::write(&ca, "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n")
        .unwrap();
    let key = dir.path().join("client.key");
    std::fs::write(
        &key,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let (ok, out) = validate_text(
        &path,
        format!(
            "[[alerting.webhooks]]\nurl = \"https://127.0.0.1:9443/hook\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            ca.display(),
            ca.display(),
            key.display()
        ),
    );
    assert!(!ok, "{out}");
    for k in ["ca_file", "cert_file"] {
        assert!(
            out.contains(&format!("alerting.webhooks[0].{k}: {} holds no PEM CERTIFICATE", ca.display())),
            "{out}"
        );
    }
    assert!(
        out.contains(&format!("alerting.webhooks[0].key_file: {} holds no PEM PRIVATE KEY", key.display())),
        "{out}"
    );
}
