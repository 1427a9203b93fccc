//! Every cryptographic primitive logwarden uses outside TLS, from the build's one crypto module:
//! hashes (the seal's chain, token digests, PKCS#11 signing input), HMAC (webhook signatures) and
//! random bytes (tokens, salts). TLS itself takes the same module through
//! [`crate::tls::crypto_provider`].
//!
//! The module is ring, or with the `fips` feature AWS-LC in FIPS mode (aws-lc-rs, which keeps
//! ring's API): the `use` below is the one line that differs. Password hashes for basic
//! credentials are in [`password`].

pub mod password;

#[cfg(all(feature = "fips", feature = "ring"))]
compile_error!(
    "build with one crypto module: `--no-default-features --features fips` for FIPS, the default for ring"
);
#[cfg(not(any(feature = "fips", feature = "ring")))]
compile_error!("build with a crypto module: the default features (ring), or `--features fips`");

#[cfg(feature = "fips")]
use aws_lc_rs::{digest, hmac, pbkdf2, rand};
#[cfg(all(feature = "ring", not(feature = "fips")))]
use ring::{digest, hmac, pbkdf2, rand};

/// The module, as the startup log names it.
#[cfg(feature = "fips")]
pub const MODULE: &str = "AWS-LC FIPS (aws-lc-fips-sys)";
#[cfg(not(feature = "fips"))]
pub const MODULE: &str = "ring";

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-384 and SHA-512 of `bytes` (signing input for keys on a PKCS#11 token).
pub fn sha384(bytes: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA384, bytes).as_ref().to_vec()
}

pub fn sha512(bytes: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA512, bytes).as_ref().to_vec()
}

/// SHA-256 over bytes given in parts.
#[derive(Clone)]
pub struct Sha256(digest::Context);

impl Default for Sha256 {
    fn default() -> Self {
        Sha256(digest::Context::new(&digest::SHA256))
    }
}

impl Sha256 {
    pub fn new() -> Sha256 {
        Sha256::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }
}

/// HMAC-SHA256 of `message` with `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Whether PBKDF2-HMAC-SHA256 of `password` with `salt` over `iterations` rounds is
/// `expected` (compared in constant time).
pub fn pbkdf2_sha256_verify(
    iterations: std::num::NonZeroU32,
    salt: &[u8],
    password: &[u8],
    expected: &[u8],
) -> bool {
    pbkdf2::verify(pbkdf2::PBKDF2_HMAC_SHA256, iterations, salt, password, expected).is_ok()
}

/// PBKDF2-HMAC-SHA256 of `password` with `salt` over `iterations` rounds, `N` bytes long.
pub fn pbkdf2_sha256<const N: usize>(
    iterations: std::num::NonZeroU32,
    salt: &[u8],
    password: &[u8],
) -> [u8; N] {
    let mut out = [0u8; N];
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, salt, password, &mut out);
    out
}

/// `N` bytes from the module's random generator (the operating system's, through it).
pub fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // The generator fails only where the operating system offers no randomness at all; a
    // token made without it must not exist, so that is the end of the process.
    if rand::SecureRandom::fill(&rand::SystemRandom::new(), &mut out).is_err() {
        tracing::error!("the operating system's random generator failed");
        std::process::abort();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(hex(&sha256(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let mut h = Sha256::new();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), sha256(b"abc"));
        // RFC 4231, test case 2.
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_ne!(random::<16>(), random::<16>());
        // RFC 7914, section 11 (PBKDF2-HMAC-SHA256, P="passwd", S="salt", c=1).
        let one = std::num::NonZeroU32::new(1).unwrap();
        let dk: [u8; 64] = pbkdf2_sha256(one, b"salt", b"passwd");
        assert_eq!(
            hex(&dk),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783"
        );
        assert!(pbkdf2_sha256_verify(one, b"salt", b"passwd", &dk));
        assert!(!pbkdf2_sha256_verify(one, b"salt", b"passwe", &dk));
    }
}
