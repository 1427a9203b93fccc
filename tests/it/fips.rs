//! What TLS offers, per build. The FIPS build (`--no-default-features --features fips`, with
//! `[tls] fips = true`) offers FIPS-approved cipher suites, key exchange groups and signature
//! schemes only; the default build offers ChaCha20-Poly1305 and X25519 besides (and no ML-DSA).
//! Probed from outside with `openssl s_client`: one handshake per suite and per group, and the
//! signature schemes the server asks a client certificate to be signed with.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::daemon::Daemon;
use crate::pki::{Pki, mtls_listener, trust_section};

/// Whether a handshake with these `openssl s_client` options completes.
fn handshake(port: u16, ca: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-verify_return_error"])
        .arg("-CAfile")
        .arg(ca)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl (scripts/install-test-deps installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success() && text.contains("Verify return code: 0 (ok)"), text)
}

/// Of `candidates`, those a handshake with `option candidate` (and `fixed`) completes with.
fn accepted<'a>(port: u16, ca: &Path, fixed: &[&str], option: &str, candidates: &[&'a str]) -> Vec<&'a str> {
    candidates
        .iter()
        .copied()
        .filter(|c| {
            let mut args = fixed.to_vec();
            args.extend([option, c]);
            handshake(port, ca, &args).0
        })
        .collect()
}

/// The signature schemes the server lists in its CertificateRequest, as openssl names them.
fn requested_signature_schemes(port: u16, ca: &Path, version: &str) -> Vec<String> {
    let (ok, text) = handshake(port, ca, &[version]);
    assert!(ok, "{text}");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Requested Signature Algorithms: "))
        .unwrap_or_else(|| panic!("no CertificateRequest: {text}"));
    line.split(':').map(str::to_owned).collect()
}

/// The signature schemes a client certificate may be signed with in the FIPS build (TLS 1.2;
/// TLS 1.3 adds ML-DSA), in the order the server lists them.
const SIGNATURES_FIPS: [&str; 10] = [
    "ECDSA+SHA384",
    "ECDSA+SHA256",
    "ECDSA+SHA512",
    "ed25519",
    "RSA-PSS+SHA512",
    "RSA-PSS+SHA384",
    "RSA-PSS+SHA256",
    "RSA+SHA512",
    "RSA+SHA384",
    "RSA+SHA256",
];

#[test]
fn tls_offers_only_what_the_build_approves() {
    let fips = cfg!(feature = "fips");
    let pki = Pki::new("client CA");
    let extra = format!(
        "{}{}{}",
        mtls_listener("mtls", "optional"),
        trust_section(&pki, "1h"),
        if fips { "fips = true\n" } else { "" }
    );
    let d = Daemon::start_with(&extra);
    assert_eq!(d.metric("logwarden_crypto_fips"), if fips { 1.0 } else { 0.0 });
    let log = d.log_text();
    assert!(log.contains(&format!("fips={fips}")) && log.contains("cryptography"), "{log}");
    let (port, ca) = (d.addr("mtls").port(), d.ca_file());

    let tls13 = accepted(
        port,
        &ca,
        &["-tls1_3"],
        "-ciphersuites",
        &["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"],
    );
    // The development certificate's key is ECDSA P-256.
    let tls12 = accepted(
        port,
        &ca,
        &["-tls1_2"],
        "-cipher",
        &[
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            "ECDHE-ECDSA-AES128-SHA256",
            "ECDHE-ECDSA-AES128-SHA",
        ],
    );
    // Probed over TLS 1.3 only: in TLS 1.2 openssl's -groups also limits the curves it takes
    // the server certificate's key on.
    let groups = accepted(
        port,
        &ca,
        &["-tls1_3"],
        "-groups",
        &["P-256", "P-384", "P-521", "X25519", "X448", "ffdhe2048"],
    );
    let sigs13 = requested_signature_schemes(port, &ca, "-tls1_3");
    let sigs12 = requested_signature_schemes(port, &ca, "-tls1_2");
    let offered = format!(
        "TLS 1.3 {tls13:?}, TLS 1.2 {tls12:?}, groups {groups:?}, signatures {sigs13:?} / {sigs12:?}"
    );

    if fips {
        assert_eq!(tls13, ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"], "{offered}");
        assert_eq!(tls12, ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384"], "{offered}");
        assert_eq!(groups, ["P-256", "P-384"], "{offered}");
        // FIPS 186-5 approves ECDSA, RSA and EdDSA; FIPS 204 ML-DSA (0x0904..0x0906, which
        // openssl 3.0 has no names for), in TLS 1.3 only.
        let ml_dsa = ["0x04+0x09", "0x05+0x09", "0x06+0x09"];
        assert_eq!(sigs13, [&SIGNATURES_FIPS[..], &ml_dsa[..]].concat(), "{offered}");
        assert_eq!(sigs12, SIGNATURES_FIPS, "{offered}");
    } else {
        assert_eq!(tls13.len(), 3, "{offered}");
        assert_eq!(
            tls12,
            [
                "ECDHE-ECDSA-AES128-GCM-SHA256",
                "ECDHE-ECDSA-AES256-GCM-SHA384",
                "ECDHE-ECDSA-CHACHA20-POLY1305"
            ],
            "{offered}"
        );
        assert_eq!(groups, ["P-256", "P-384", "X25519"], "{offered}");
        let ring: Vec<&str> = SIGNATURES_FIPS.iter().copied().filter(|s| *s != "ECDSA+SHA512").collect();
        assert_eq!(sigs13, ring, "{offered}");
        assert_eq!(sigs12, ring, "{offered}");
    }
    // Neither build: CBC suites, P-521, X448, finite-field groups, SHA-1 signatures (above).
}

/// `[tls] fips = true` in a build without the FIPS module is refused, naming the key and the way
/// out; in the FIPS build, so is an argon2 password hash.
#[test]
fn fips_mode_refuses_what_it_cannot_keep() {
    let argon2 =
        logwarden::crypto::password::hash("pw", logwarden::crypto::password::Scheme::Argon2).unwrap();
    let users = format!("[[flight.users]]\nname = \"a\"\npassword_hash = \"{}\"\n", argon2.as_str());
    let d = Daemon::prepare(&format!("{users}[tls]\nfips = true\n"));
    let out = Command::new(crate::daemon::BIN).args(["validate"]).arg(&d.config).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("flight.users[0].password_hash") && err.contains("not a FIPS-approved"), "{err}");
    assert_eq!(err.contains("tls.fips") && err.contains("--features fips"), !cfg!(feature = "fips"), "{err}");
}
