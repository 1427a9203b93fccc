//! The server key on a SoftHSM2 token: keys are generated on the token (never extractable),
//! certificates are issued for them by a test CA, and real clients (rustls, `openssl s_client`)
//! complete TLS handshakes that the token signs. Wrong PIN, missing module, missing key and an
//! inline PIN fail with messages that name the problem.

use std::path::{Path, PathBuf};
use std::process::Command;

use tokio::io::AsyncWriteExt;

use crate::client::{connect_tls, octet};
use crate::daemon::{BIN, Daemon, run_ok as run, test_config, wait_until};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "314159";

/// A SoftHSM2 token in a temporary directory, with an EC P-256 key (`server`, id 01) and an
/// RSA-2048 key (`server-rsa`, id 02), and a CA that issued a `localhost` certificate for each.
struct SoftHsm {
    dir: tempfile::TempDir,
}

impl SoftHsm {
    fn new() -> SoftHsm {
        assert!(
            Path::new(MODULE).exists(),
            "SoftHSM2 is not installed: run scripts/test, which installs softhsm2 and opensc"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("tokens")).unwrap();
        std::fs::write(
            d.join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                d.join("tokens").display()
            ),
        )
        .unwrap();
        std::fs::write(d.join("pin"), format!("{PIN}\n")).unwrap();
        let hsm = SoftHsm { dir };
        run(hsm.cmd("softhsm2-util").args([
            "--init-token",
            "--free",
            "--label",
            "lw-test",
            "--so-pin",
            "27182818",
            "--pin",
            PIN,
        ]));
        run(hsm
            .cmd("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
            .args(["-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=logwarden test CA", "-days", "2"]));
        std::fs::write(
            hsm.path("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        for (label, id, key_type) in [("server", "01", "EC:prime256v1"), ("server-rsa", "02", "rsa:2048")] {
            run(hsm.tool().args([
                "--login",
                "--pin",
                PIN,
                "--keypairgen",
                "--key-type",
                key_type,
                "--id",
                id,
                "--label",
                label,
            ]));
            run(hsm
                .tool()
                .args(["--read-object", "--type", "pubkey", "--label", label, "-o"])
                .arg(format!("{label}.der")));
            run(hsm.cmd("openssl").args([
                "pkey",
                "-pubin",
                "-inform",
                "DER",
                "-in",
                &format!("{label}.der"),
                "-out",
                &format!("{label}.pub"),
            ]));
            run(hsm
                .cmd("openssl")
                .args(["x509", "-new", "-subj", "/CN=localhost", "-force_pubkey", &format!("{label}.pub")])
                .args([
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-extfile",
                    "ext.cnf",
                    "-days",
                    "2",
                    "-out",
                    &format!("{label}.pem"),
                ]));
        }
        hsm
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn conf(&self) -> String {
        self.path("softhsm2.conf").display().to_string()
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.current_dir(self.dir.path()).env("SOFTHSM2_CONF", self.conf());
        c
    }

    fn tool(&self) -> Command {
        let mut c = self.cmd("pkcs11-tool");
        c.args(["--module", MODULE, "--token-label", "lw-test"]);
        c
    }

    /// The `[tls]` section for the key labelled `label`.
    fn tls_section(&self, label: &str, pin_file: &Path) -> String {
        format!(
            "[tls]\nkey = \"pkcs11:token=lw-test;object={label}\"\npkcs11_module = \"{MODULE}\"\npin_file = \"{}\"\ncert_file = \"{}\"\n",
            pin_file.display(),
            self.path(&format!("{label}.pem")).display()
        )
    }
}

/// `openssl s_client` against `port`; returns its -brief report.
fn s_client(hsm: &SoftHsm, port: u16) -> String {
    let out = hsm
        .cmd("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-CAfile",
            "ca.pem",
            "-verify_return_error",
            "-brief",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_keys_sign_tls_handshakes_for_ec_and_rsa() {
    let hsm = SoftHsm::new();
    for (label, signature) in [("server", "Signature type: ECDSA"), ("server-rsa", "Signature type: RSA-PSS")]
    {
        let d = Daemon::start_with_env(
            &hsm.tls_section(label, &hsm.path("pin")),
            &[("SOFTHSM2_CONF", &hsm.conf())],
        );
        let addr = d.addr("syslog");

        let report = s_client(&hsm, addr.port());
        assert!(report.contains("Verification: OK") && report.contains(signature), "{label}: {report}");

        let mut tls = connect_tls(addr, &hsm.path("ca.pem")).await;
        let msg = format!("<14>1 2026-11-23T10:00:00Z web-1 app 7 - - signed by the {label} token key");
        tls.write_all(&octet(&msg)).await.unwrap();
        tls.shutdown().await.unwrap();
        wait_until(std::time::Duration::from_secs(30), "the event", || {
            d.count(&format!("message = 'signed by the {label} token key'")) == 1
        });
        assert!(d.metric("logwarden_pkcs11_sign_seconds_count") >= 2.0, "{}", d.metrics());
        assert!(d.log_text().contains("TLS private key is on a PKCS#11 token"), "{}", d.log_text());
    }
}

/// `logwarden serve` with `extra` as config; returns (exit code, stderr).
fn serve_fails(hsm: &SoftHsm, extra: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("logwarden.toml");
    std::fs::write(&config, test_config(&dir.path().join("data"), extra)).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("SOFTHSM2_CONF", hsm.conf())
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn token_problems_stop_the_daemon_with_the_reason() {
    let hsm = SoftHsm::new();
    std::fs::write(hsm.path("bad-pin"), "000000\n").unwrap();

    let (code, err) = serve_fails(&hsm, &hsm.tls_section("server", &hsm.path("bad-pin")));
    assert_eq!(code, 3, "a refused PIN has its own exit status: {err}");
    assert!(err.contains("\"lw-test\" refused the PIN") && err.contains("not retrying"), "{err}");

    let missing_key = hsm.tls_section("server", &hsm.path("pin")).replace("object=server", "object=nope");
    let (code, err) = serve_fails(&hsm, &missing_key);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no private key matches pkcs11:token=lw-test;object=nope"), "{err}");

    let missing_module =
        hsm.tls_section("server", &hsm.path("pin")).replace(MODULE, "/nonexistent/libpkcs11.so");
    let (code, err) = serve_fails(&hsm, &missing_module);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("tls.pkcs11_module") && err.contains("/nonexistent/libpkcs11.so"), "{err}");

    let wrong_token = hsm.tls_section("server", &hsm.path("pin")).replace("token=lw-test", "token=other");
    let (_, err) = serve_fails(&hsm, &wrong_token);
    assert!(err.contains("no token matches") && err.contains("\"lw-test\""), "{err}");

    // The certificate of the EC key with the RSA key: refused before any client sees it.
    let mismatch = hsm.tls_section("server-rsa", &hsm.path("pin")).replace("server-rsa.pem", "server.pem");
    let (_, err) = serve_fails(&hsm, &mismatch);
    assert!(err.contains("does not belong to the key"), "{err}");
}

#[test]
fn validate_refuses_a_pin_written_in_the_config() {
    let hsm = SoftHsm::new();
    let dir = tempfile::tempdir().unwrap();
    for (extra, key) in [
        (hsm.tls_section("server", &hsm.path("pin")) + "pin = \"314159\"\n", "tls.pin"),
        (
            hsm.tls_section("server", &hsm.path("pin"))
                .replace("object=server", "object=server?pin-value=314159"),
            "tls.key",
        ),
    ] {
        let config = dir.path().join("logwarden.toml");
        std::fs::write(&config, test_config(&dir.path().join("data"), &extra)).unwrap();
        let out = Command::new(BIN).arg("validate").arg(&config).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(
            text.contains(&format!("{}: {key}:", config.display()))
                && text.contains("PIN may not be written"),
            "{text}"
        );
    }
}

#[test]
fn pkcs11_list_prints_uris_for_the_config() {
    let hsm = SoftHsm::new();
    let out = run(Command::new(BIN)
        .args(["pkcs11", "list", "--module", MODULE, "--pin-file"])
        .arg(hsm.path("pin"))
        .env("SOFTHSM2_CONF", hsm.conf()));
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "private key  EC P-256, not extractable",
        "pkcs11:token=lw-test;id=%01;object=server;type=private",
        "private key  RSA 2048, not extractable",
        "pkcs11:token=lw-test;id=%02;object=server-rsa;type=private",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // Without a PIN the private keys stay hidden and the output says how to see them.
    let out =
        run(Command::new(BIN).args(["pkcs11", "list", "--module", MODULE]).env("SOFTHSM2_CONF", hsm.conf()));
    assert!(String::from_utf8_lossy(&out.stdout).contains("add --pin-file"));
}

/// A "CAC": a second token holds the client's key (generated there, never extractable) and the
/// card's certificate, DoD style, issued by the test CA. `gnutls-cli` signs the client side of
/// the handshake on that token while the daemon signs its side on the server token; the event
/// carries the EDIPI as `client_id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smart_card_client_certificate_identifies_the_sender() {
    const CARD_PIN: &str = "271828";
    let hsm = SoftHsm::new();
    run(hsm.cmd("softhsm2-util").args([
        "--init-token",
        "--free",
        "--label",
        "cac",
        "--so-pin",
        "16180339",
        "--pin",
        CARD_PIN,
    ]));
    let card = |args: &[&str]| {
        let mut c = hsm.cmd("pkcs11-tool");
        c.args(["--module", MODULE, "--token-label", "cac"]).args(args);
        run(&mut c)
    };
    card(&[
        "--login",
        "--pin",
        CARD_PIN,
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--id",
        "11",
        "--label",
        "card-auth",
    ]);

    card(&["--read-object", "--type", "pubkey", "--label", "card-auth", "-o", "card.der"]);
    run(hsm.cmd("openssl").args(["pkey", "-pubin", "-inform", "DER", "-in", "card.der", "-out", "card.pub"]));
    std::fs::write(
        hsm.path("card.cnf"),
        "subjectAltName=email:john.doe@example.mil,otherName:1.3.6.1.4.1.311.20.2.3;UTF8:1234567890@mil\n\
         basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    run(hsm
        .cmd("openssl")
        .args(["x509", "-new", "-subj", "/C=US/O=U.S. Government/OU=DoD/CN=DOE.JOHN.A.1234567890"])
        .args(["-force_pubkey", "card.pub", "-CA", "ca.pem", "-CAkey", "ca.key", "-extfile", "card.cnf"])
        .args(["-days", "2", "-out", "card.pem"]));

    let config = format!(
        "{}client_ca_file = \"{}\"\n{}",
        hsm.tls_section("server", &hsm.path("pin")),
        hsm.path("ca.pem").display(),
        crate::pki::mtls_listener("cac", "required"),
    );
    let d = Daemon::start_with_env(&config, &[("SOFTHSM2_CONF", &hsm.conf())]);
    let port = d.addr("cac").port().to_string();
    let message = "<14>1 2026-11-23T10:00:00Z ws-7 login - - - signed in with a smart card";

    let mut gnutls = hsm
        .cmd("gnutls-cli")
        .args(["--provider", MODULE, "--x509cafile", "ca.pem", "--x509certfile", "card.pem"])
        .args(["--x509keyfile", "pkcs11:token=cac;object=card-auth;type=private", "-p", &port, "127.0.0.1"])
        .env("GNUTLS_PIN", CARD_PIN)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = gnutls.stdin.take().unwrap();
        stdin.write_all(&octet(message)).unwrap();
    }
    wait_until(std::time::Duration::from_secs(30), "the smart card's event", || {
        // gnutls-cli sends what it read and exits 0 at the end of its input.
        if let Ok(Some(status)) = gnutls.try_wait()
            && !status.success()
        {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(gnutls.stderr.as_mut().unwrap(), &mut err);
            let _ = std::io::Read::read_to_string(gnutls.stdout.as_mut().unwrap(), &mut err);
            panic!("gnutls-cli exited ({status}) before the event arrived: {err}");
        }
        d.count("message = 'signed in with a smart card'") == 1
    });
    let _ = gnutls.kill();
    let out = gnutls.wait_with_output().unwrap();
    let rows = d.query("SELECT client_id FROM logs WHERE message = 'signed in with a smart card'");
    assert_eq!(
        rows[0]["client_id"],
        "edipi:1234567890",
        "gnutls-cli: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d.metric("logwarden_pkcs11_sign_seconds_count") >= 1.0);
}

/// The token goes away while the daemon runs (its files vanish, as when a card is pulled or an
/// HSM restarts): handshakes fail with a clear log line and the availability gauge drops; once
/// it is back, the daemon finds it again by itself and handshakes succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_disappears_and_returns_is_found_again() {
    let hsm = SoftHsm::new();
    let d = Daemon::start_with_env(
        &hsm.tls_section("server", &hsm.path("pin")),
        &[("SOFTHSM2_CONF", &hsm.conf())],
    );
    let addr = d.addr("syslog");
    let cfg = || crate::client::tls_config(&hsm.path("ca.pem"), &[]);
    let msg = |text: &str| octet(&format!("<14>1 2026-11-23T10:00:00Z web-1 app - - - {text}"));
    assert!(crate::client::send_with(addr, cfg(), &msg("before")).await);
    assert_eq!(d.metric("logwarden_pkcs11_token_available"), 1.0);

    let token_dir = std::fs::read_dir(hsm.path("tokens")).unwrap().next().unwrap().unwrap().path();
    let away = hsm.path("away");
    std::fs::rename(&token_dir, &away).unwrap();
    assert!(!crate::client::send_with(addr, cfg(), &msg("while away")).await);
    wait_until(std::time::Duration::from_secs(10), "the token to be reported unavailable", || {
        d.metric("logwarden_pkcs11_token_available") == 0.0
    });
    assert!(d.log_text().contains("TLS handshakes fail until the token answers again"), "{}", d.log_text());
    assert!(
        d.metric(r#"logwarden_tls_handshake_failures_total{listener="syslog",reason="signing"}"#) >= 1.0,
        "{}",
        d.metrics()
    );

    std::fs::rename(&away, &token_dir).unwrap();
    crate::daemon::wait_until_async(
        std::time::Duration::from_secs(30),
        "a handshake after the token returned",
        || async { crate::client::send_with(addr, cfg(), &msg("after")).await },
    )
    .await;
    wait_until(std::time::Duration::from_secs(30), "the event after recovery", || {
        d.count("message = 'after'") >= 1
    });
    assert_eq!(d.metric("logwarden_pkcs11_token_available"), 1.0);
    assert!(d.log_text().contains("PKCS#11 token available again"), "{}", d.log_text());
}

/// The seal's checkpoints are signed on the token (EC and RSA keys), and `verify` checks them
/// with the certificate alone.
#[test]
fn seal_checkpoints_are_signed_with_the_key_on_the_token() {
    let hsm = SoftHsm::new();
    for label in ["server", "server-rsa"] {
        let config =
            format!("{}[seal]\ncheckpoint_interval = \"1s\"\n", hsm.tls_section(label, &hsm.path("pin")));
        let mut d = Daemon::start_with_env(&config, &[("SOFTHSM2_CONF", &hsm.conf())]);
        let mut s = std::net::TcpStream::connect(d.addr("plain")).unwrap();
        std::io::Write::write_all(&mut s, b"<14>1 2026-12-03T10:00:00Z h app - - - sealed on the token\n")
            .unwrap();
        drop(s);
        wait_until(std::time::Duration::from_secs(30), "the event", || {
            d.count("message = 'sealed on the token'") == 1
        });
        wait_until(std::time::Duration::from_secs(30), "a checkpoint", || {
            d.metric("logwarden_seal_checkpoints_total") >= 1.0
        });
        d.terminate(std::time::Duration::from_secs(30));
        let out = Command::new(BIN)
            .args(["verify", "--data-dir"])
            .arg(d.data_dir())
            .arg("--cert")
            .arg(hsm.path(&format!("{label}.pem")))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{label}: {text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("signature verified, the chain matches"), "{label}: {text}");
        // Another certificate does not verify them.
        let other = Command::new(BIN)
            .args(["verify", "--data-dir"])
            .arg(d.data_dir())
            .arg("--cert")
            .arg(hsm.path("ca.pem"))
            .output()
            .unwrap();
        assert_eq!(other.status.code(), Some(32), "{}", String::from_utf8_lossy(&other.stdout));
    }
}
