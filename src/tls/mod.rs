//! TLS for every listener: the rustls server configuration, built from PEM files or from the
//! development certificate generated on first start.
//!
//! Later the signing key can come from a PKCS#11 token; listeners only ever see the resulting
//! `Arc<ServerConfig>`, so that change stays inside this module.

mod devcert;
pub mod pkcs11;

pub use devcert::{DevCertificate, ensure_dev_certificate};
pub use pkcs11::Pkcs11Uri;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};

use crate::config::TlsConfig;
use crate::metrics::Pkcs11Metrics;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to read certificates from {path}: {reason}")]
    Certs { path: PathBuf, reason: String },
    #[error("failed to read the private key from {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the certificate and key do not form a usable TLS identity: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("failed to create the development certificate in {path}: {reason}")]
    DevCert { path: PathBuf, reason: String },
    #[error("tls.key: {0}")]
    Pkcs11(pkcs11::Pkcs11Error),
    #[error("tls.key: {0}")]
    Uri(pkcs11::UriError),
    /// `certificate` says where it came from: the `tls.cert_file` path or the token.
    #[error("the certificate {certificate} does not belong to the key {uri}: {reason}")]
    Mismatch { certificate: String, uri: String, reason: String },
}

// Written out rather than `#[from]`, which would also make the inner error the `source` and
// print its message twice in `{:#}` chains.
impl From<pkcs11::Pkcs11Error> for TlsError {
    fn from(e: pkcs11::Pkcs11Error) -> Self {
        TlsError::Pkcs11(e)
    }
}

impl From<pkcs11::UriError> for TlsError {
    fn from(e: pkcs11::UriError) -> Self {
        TlsError::Uri(e)
    }
}

impl TlsError {
    /// Whether the token refused the PIN: the daemon must not be restarted into another try.
    pub fn is_pin_refused(&self) -> bool {
        matches!(self, TlsError::Pkcs11(pkcs11::Pkcs11Error::PinRefused { .. }))
    }
}

/// The server's TLS identity and the base config every listener derives its own from.
#[derive(Clone)]
pub struct ServerTls {
    base: Arc<ServerConfig>,
    /// Set when running on the generated development certificate.
    pub dev: Option<DevCertificate>,
}

impl ServerTls {
    /// Build from the `[tls]` section; with no files configured, generate (once) and use the
    /// development certificate in `dev_dir`.
    pub fn load(
        cfg: &TlsConfig,
        dev_dir: &Path,
        pkcs11_metrics: Option<Pkcs11Metrics>,
    ) -> Result<Self, TlsError> {
        if let Some(key) = &cfg.key {
            return Self::load_token(cfg, key, pkcs11_metrics);
        }
        let (cert_path, key_path, dev) = match (&cfg.cert_file, &cfg.key_file) {
            (Some(c), Some(k)) => (c.clone(), k.clone(), None),
            _ => {
                let dev = ensure_dev_certificate(dev_dir)?;
                (dev.cert_file.clone(), dev.key_file.clone(), Some(dev))
            }
        };
        let certs = load_certs(&cert_path)?;
        let key = PrivateKeyDer::from_pem_file(&key_path)
            .map_err(|e| TlsError::Key { path: key_path.clone(), reason: e.to_string() })?;
        let config = Self::builder()?.with_single_cert(certs, key)?;
        Self::finish(config, dev)
    }

    /// The key on a PKCS#11 token; the certificate from `cert_file` or from the token.
    fn load_token(cfg: &TlsConfig, key: &str, metrics: Option<Pkcs11Metrics>) -> Result<Self, TlsError> {
        let uri = Pkcs11Uri::parse(key)?;
        let module = cfg.pkcs11_module.clone().or_else(|| uri.module_path.clone()).unwrap_or_default();
        let pin = match (&cfg.pin_file, &cfg.pin_credential, &cfg.pin_env) {
            (Some(f), _, _) => pkcs11::PinSource::File(f.clone()),
            (_, Some(c), _) => pkcs11::PinSource::Credential(c.clone()),
            (_, _, Some(e)) => pkcs11::PinSource::Env(e.clone()),
            _ => {
                return Err(pkcs11::Pkcs11Error::Pin(
                    "set tls.pin_file, tls.pin_credential or tls.pin_env".into(),
                )
                .into());
            }
        };
        let token = pkcs11::Token::open(&module, uri.clone(), &pin, cfg.pkcs11_sessions, metrics)?;
        let (chain, chain_from) = match &cfg.cert_file {
            Some(path) => (load_certs(path)?, path.display().to_string()),
            None => (vec![token.certificate()?], format!("the token's certificate for {uri}")),
        };
        let signing = pkcs11::TokenKey::new(token.clone())?;
        let schemes = signing.scheme_names();
        let certified = CertifiedKey::new(chain, Arc::new(signing));
        match certified.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => tracing::warn!(
                key = %uri, "the token does not expose the public key; cannot check that the certificate matches it"
            ),
            Err(e) => {
                return Err(TlsError::Mismatch {
                    certificate: chain_from,
                    uri: uri.to_string(),
                    reason: e.to_string(),
                });
            }
        }
        tracing::info!(
            key = %uri, module = %module.display(), certificate = %chain_from, ?schemes,
            sessions = token.max_sessions(), "TLS private key is on a PKCS#11 token"
        );
        let config = Self::builder()?.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        Self::finish(config, None)
    }

    fn builder() -> Result<rustls::ConfigBuilder<ServerConfig, rustls::server::WantsServerCert>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth())
    }

    fn finish(mut config: ServerConfig, dev: Option<DevCertificate>) -> Result<Self, TlsError> {
        // Resumption keeps reconnect storms cheap, and with a token-held key off the token:
        // a resumed handshake signs nothing.
        config.ticketer = rustls::crypto::ring::Ticketer::new()?;
        Ok(ServerTls { base: Arc::new(config), dev })
    }

    /// Config for a raw stream listener (no ALPN).
    pub fn stream_config(&self) -> Arc<ServerConfig> {
        self.base.clone()
    }

    /// Config for an HTTP listener: offers h2 and http/1.1.
    pub fn http_config(&self) -> Arc<ServerConfig> {
        let mut c = (*self.base).clone();
        c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(c)
    }

    /// Config for gRPC (Flight SQL): h2 only; gRPC clients refuse a server that selects no ALPN.
    pub fn grpc_config(&self) -> Arc<ServerConfig> {
        let mut c = (*self.base).clone();
        c.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(c)
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Certs { path: path.to_path_buf(), reason };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}
