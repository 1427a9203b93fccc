//! Client certificates: the verifier a listener's `client_auth`, CA bundle and CRLs make, the
//! fingerprint that tells when those files changed, and the reason label a failed handshake is
//! counted under.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, RootCertStore};

use super::TlsError;
use crate::config::{ClientAuth, ClientTrust};

/// The verifier for `trust`, or `None` when the listener does not ask for certificates.
pub fn verifier(trust: &ClientTrust) -> Result<Option<Arc<dyn ClientCertVerifier>>, TlsError> {
    if trust.mode == ClientAuth::None {
        return Ok(None);
    }
    let Some(ca_file) = &trust.ca_file else { return Err(TlsError::NoClientCa) };
    let trust_err = |path: &Path, reason: String| TlsError::Trust { path: path.to_path_buf(), reason };
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| trust_err(ca_file, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| trust_err(ca_file, e.to_string()))?;
    for cert in certs {
        roots.add(cert).map_err(|e| trust_err(ca_file, format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(trust_err(ca_file, "no CERTIFICATE block found".into()));
    }
    let mut crls = Vec::new();
    for path in &trust.crl_files {
        crls.extend(read_crls(path)?);
    }
    let roots = Arc::new(roots);
    let build = |enforce_expiry: bool| {
        let provider = Arc::new(crate::tls::crypto_provider());
        let mut builder = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider);
        if !crls.is_empty() {
            // Every certificate of the chain must be covered by a CRL, as with nginx's ssl_crl:
            // a missing CRL refuses rather than silently skipping the check.
            builder = builder.with_crls(crls.clone());
            if enforce_expiry {
                builder = builder.enforce_revocation_expiration();
            }
        }
        if trust.mode == ClientAuth::Optional {
            builder = builder.allow_unauthenticated();
        }
        builder.build().map_err(|e| {
            let path = trust.crl_files.first().map_or(ca_file.as_path(), PathBuf::as_path);
            trust_err(path, e.to_string())
        })
    };
    let strict = build(true)?;
    if crls.is_empty() || trust.crl_expired_grace.is_zero() {
        return Ok(Some(strict));
    }
    Ok(Some(Arc::new(GraceVerifier { strict, lenient: build(false)?, grace: trust.crl_expired_grace })))
}

/// A verifier that refuses certificates whose CRL is past its `nextUpdate` only once
/// `grace` has also passed: rustls either ignores `nextUpdate` or enforces it to the second.
#[derive(Debug)]
struct GraceVerifier {
    strict: Arc<dyn ClientCertVerifier>,
    /// The same roots and CRLs without the expiry check.
    lenient: Arc<dyn ClientCertVerifier>,
    grace: std::time::Duration,
}

impl ClientCertVerifier for GraceVerifier {
    fn offer_client_auth(&self) -> bool {
        self.strict.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.strict.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.strict.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        match self.strict.verify_client_cert(end_entity, intermediates, now) {
            Err(rustls::Error::InvalidCertificate(CertificateError::ExpiredRevocationListContext {
                time,
                next_update,
            })) if time.as_secs().saturating_sub(next_update.as_secs()) <= self.grace.as_secs() => {
                self.lenient.verify_client_cert(end_entity, intermediates, now)
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.strict.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.strict.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.strict.supported_verify_schemes()
    }
}

/// The CRLs in a PEM file, or the one CRL of a DER file.
fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Trust { path: path.to_path_buf(), reason };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if crls.is_empty() {
        return Err(err("no X509 CRL block found".into()));
    }
    Ok(crls)
}

/// Size, mtime (seconds, nanoseconds) and inode of each trust file; `None` if it is missing.
pub type Fingerprint = Vec<(PathBuf, Option<(u64, i64, i64, u64)>)>;

/// What identifies the current content of the trust files, so that an edit in place and an
/// atomic rename are both noticed.
pub fn fingerprint(trust: &ClientTrust) -> Fingerprint {
    trust
        .ca_file
        .iter()
        .chain(&trust.crl_files)
        .map(|p| {
            let meta = std::fs::metadata(p).ok().map(|m| (m.len(), m.mtime(), m.mtime_nsec(), m.ino()));
            (p.clone(), meta)
        })
        .collect()
}

/// The `reason` label of `logwarden_tls_handshake_failures_total` for a failed handshake.
pub fn failure_reason(e: &std::io::Error) -> &'static str {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(err) => reason_of(err),
        None => "io",
    }
}

/// The `reason` label for a TLS error (a failed handshake, or a certificate that trust
/// reloaded during its handshake no longer accepts).
pub fn reason_of(err: &rustls::Error) -> &'static str {
    match err {
        rustls::Error::NoCertificatesPresented => "no_certificate",
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => "not_yet_valid",
            CertificateError::Revoked => "revoked",
            CertificateError::UnknownIssuer => "unknown_ca",
            CertificateError::BadSignature => "bad_signature",
            CertificateError::UnknownRevocationStatus => "revocation_unknown",
            CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => "crl_expired",
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "wrong_purpose"
            }
            _ => "bad_certificate",
        },
        rustls::Error::AlertReceived(_) => "peer_alert",
        rustls::Error::General(_) | rustls::Error::Other(_) => "signing",
        rustls::Error::PeerIncompatible(_) => "incompatible",
        _ => "protocol",
    }
}
