//! TLS for every listener: the rustls server configuration, built from PEM files or from the
//! development certificate generated on first start.
//!
//! Later the signing key can come from a PKCS#11 token; listeners only ever see the resulting
//! `Arc<ServerConfig>`, so that change stays inside this module.

mod devcert;

pub use devcert::{DevCertificate, ensure_dev_certificate};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

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
    pub fn load(cfg: &TlsConfig, dev_dir: &Path) -> Result<Self, TlsError> {
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
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        // Resumption keeps reconnect storms cheap (and, with a token-held key, off the token).
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
