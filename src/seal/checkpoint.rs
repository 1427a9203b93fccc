//! Signed checkpoints: the chain's head, counts and time, signed with the server's key (on the
//! PKCS#11 token when the key is there) or the `[seal]` signing key.
//!
//! A checkpoint is one JSON line, `{"checkpoint":{...},"signature":{...}}`. The signature is over
//! [`CONTEXT`] followed by the checkpoint's compact JSON as logwarden writes it (fields in their
//! declared order, no unknown fields accepted on reading), so a verifier re-encodes what it
//! parsed and checks the same bytes. The context string keeps a checkpoint signature from being
//! mistaken for any other use of the key (a TLS 1.3 handshake signature starts with 64 spaces and
//! its own context; a TLS 1.2 one with the handshake randoms).
//!
//! `data_dir/seal/checkpoints.jsonl` keeps every checkpoint written, newest last.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rustls::SignatureScheme;
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::chain::Head;
use super::digest::{Digest, sha256};

pub const CHECKPOINTS_FILE: &str = "checkpoints.jsonl";
/// What every checkpoint signature signs first.
pub const CONTEXT: &[u8] = b"logwarden seal checkpoint v1\n";

/// The schemes a checkpoint may be signed with, most preferred first: those a key of each
/// kind offers (the key chooses among them).
const SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ECDSA_NISTP521_SHA512,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
];

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("the signing key offers none of the schemes a checkpoint is signed with ({0})")]
    NoScheme(String),
    #[error("failed to sign a checkpoint: {0}")]
    Sign(rustls::Error),
    #[error("the signing key has no certificate")]
    NoCertificate,
    #[error("failed to {op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
}

/// What a checkpoint vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub version: u32,
    /// The node that wrote it (`cluster.node_id`, the host name by default).
    pub node: String,
    /// Entries in the chain when it was signed, and the last one's hash.
    pub seq: u64,
    pub head: Digest,
    /// When it was signed (RFC 3339, UTC).
    pub time: String,
    /// Segments chained and not removed, and the newest chained manifest's generation.
    pub segments: u64,
    pub manifest_generation: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// The TLS name of the scheme (`ECDSA_NISTP256_SHA256`, `RSA_PSS_SHA256`, ...).
    pub scheme: String,
    /// SHA-256 of the signer's certificate (DER), to tell which certificate checks it.
    pub certificate_sha256: Digest,
    /// Base64 (standard, padded).
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    pub checkpoint: Checkpoint,
    pub signature: Signature,
}

impl Checkpoint {
    pub fn new(node: &str, head: Head, segments: u64, manifest_generation: u64) -> Checkpoint {
        Checkpoint {
            version: 1,
            node: node.to_owned(),
            seq: head.seq,
            head: head.hash,
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            segments,
            manifest_generation,
        }
    }

    /// The bytes a signature covers.
    pub fn message(&self) -> Vec<u8> {
        let mut m = CONTEXT.to_vec();
        // Integers and strings only: serialization cannot fail.
        m.extend_from_slice(&serde_json::to_vec(self).unwrap_or_default());
        m
    }

    /// Sign with `key` (a rustls signing key: a file's, or one on a PKCS#11 token).
    pub fn sign(self, key: &CertifiedKey) -> Result<Signed, CheckpointError> {
        let cert = key.end_entity_cert().map_err(|_| CheckpointError::NoCertificate)?;
        let signer = key
            .key
            .choose_scheme(SCHEMES)
            .ok_or_else(|| CheckpointError::NoScheme(format!("{:?}", key.key.algorithm())))?;
        let value = signer.sign(&self.message()).map_err(CheckpointError::Sign)?;
        Ok(Signed {
            signature: Signature {
                scheme: format!("{:?}", signer.scheme()),
                certificate_sha256: sha256(cert),
                value: base64::engine::general_purpose::STANDARD.encode(value),
            },
            checkpoint: self,
        })
    }
}

impl Signed {
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Check the signature with `cert` (DER). The error says why it does not hold.
    pub fn verify(&self, cert: &CertificateDer<'_>) -> Result<(), String> {
        let fingerprint = sha256(cert);
        if fingerprint != self.signature.certificate_sha256 {
            return Err(format!(
                "signed by the certificate with SHA-256 {}, not the one given ({fingerprint})",
                self.signature.certificate_sha256
            ));
        }
        let scheme = SCHEMES.iter().find(|s| format!("{s:?}") == self.signature.scheme).ok_or_else(|| {
            format!("the signature scheme {:?} is not one checkpoints use", self.signature.scheme)
        })?;
        let value = base64::engine::general_purpose::STANDARD
            .decode(&self.signature.value)
            .map_err(|e| format!("the signature is not base64: {e}"))?;
        let end_entity = webpki::EndEntityCert::try_from(cert)
            .map_err(|e| format!("the certificate does not parse: {e}"))?;
        let algorithms = crate::tls::crypto_provider().signature_verification_algorithms;
        let candidates = algorithms
            .mapping
            .iter()
            .find(|(s, _)| s == scheme)
            .map(|(_, algs)| *algs)
            .ok_or_else(|| format!("this build cannot check {:?} signatures", self.signature.scheme))?;
        let message = self.checkpoint.message();
        let mut last = None;
        for alg in candidates {
            match end_entity.verify_signature(*alg, &message, &value) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(webpki::Error::InvalidSignatureForPublicKey) | None => {
                "the signature does not verify: the checkpoint was altered or signed with another key".into()
            }
            Some(e) => format!("the signature does not verify: {e}"),
        })
    }
}

/// Every checkpoint in a file of checkpoint lines (blank lines skipped), with the line number of
/// any that does not parse.
pub fn read_file(path: &Path) -> Result<Vec<Result<Signed, String>>, std::io::Error> {
    // A year of checkpoints a minute apart is about 25 MiB.
    const MAX: u64 = 256 << 20;
    if std::fs::metadata(path)?.len() > MAX {
        return Err(std::io::Error::other(format!("larger than {MAX} bytes: not a file of checkpoints")));
    }
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l.trim()).map_err(|e| format!("line {}: not a checkpoint: {e}", i + 1))
        })
        .collect())
}

/// Append `signed` to `seal/checkpoints.jsonl` and fsync it.
pub fn append(seal_dir: &Path, signed: &Signed) -> Result<(), CheckpointError> {
    let path = seal_dir.join(CHECKPOINTS_FILE);
    let io = |op, source| CheckpointError::Io { op, path: path.clone(), source };
    let mut f = crate::jsonl::open_append(&path).map_err(|e| io("open", e))?;
    let mut line = signed.to_line().into_bytes();
    line.push(b'\n');
    crate::jsonl::append_lines(&mut f, &line).map_err(|e| io("append to", e))?;
    f.flush().map_err(|e| io("write", e))
}

/// The newest checkpoint in `seal/checkpoints.jsonl`, if any parses.
pub fn newest(seal_dir: &Path) -> Option<Signed> {
    read_file(&seal_dir.join(CHECKPOINTS_FILE)).ok()?.into_iter().rev().find_map(Result::ok)
}

/// Where checkpoints are signed: the server's TLS key as it is now (a reload may replace it), or
/// a key of their own.
#[derive(Clone)]
pub enum SigningKey {
    Server(crate::tls::ServerTls),
    Own(Arc<CertifiedKey>),
}

impl SigningKey {
    pub fn current(&self) -> Arc<CertifiedKey> {
        match self {
            SigningKey::Server(tls) => tls.certified_key(),
            SigningKey::Own(key) => key.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (CertifiedKey, CertificateDer<'static>) {
        let k = rcgen::generate_simple_self_signed(vec!["seal.test".into()]).unwrap();
        let cert = k.cert.der().clone();
        let der = rustls_pki_types::PrivateKeyDer::Pkcs8(k.signing_key.serialize_der().into());
        let certified =
            CertifiedKey::from_der(vec![cert.clone()], der, &crate::tls::crypto_provider()).unwrap();
        (certified, cert)
    }

    #[test]
    fn a_signed_checkpoint_verifies_and_any_change_breaks_it() {
        let (k, cert) = key();
        let (_, other) = key();
        let c = Checkpoint::new("n1", Head { seq: 3, hash: sha256(b"x") }, 2, 5);
        let signed = c.sign(&k).unwrap();
        signed.verify(&cert).unwrap();
        let parsed: Signed = serde_json::from_str(&signed.to_line()).unwrap();
        parsed.verify(&cert).unwrap();
        let mut altered = parsed.clone();
        altered.checkpoint.seq = 4;
        assert!(altered.verify(&cert).unwrap_err().contains("does not verify"));
        assert!(parsed.verify(&other).unwrap_err().contains("not the one given"));
        // Another key claiming this certificate's fingerprint.
        let (k2, _) = key();
        let mut forged = Checkpoint::new("n1", Head { seq: 3, hash: sha256(b"x") }, 2, 5).sign(&k2).unwrap();
        forged.signature.certificate_sha256 = sha256(&cert);
        assert!(forged.verify(&cert).unwrap_err().contains("does not verify"));
    }
}
