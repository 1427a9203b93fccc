//! The development certificate: a throwaway CA and a server certificate for localhost, made on
//! first start when no certificate is configured, and reused after. Clients trust `ca.pem`.
//!
//! Not for production: the CA key is discarded, so the certificate cannot be rotated, and
//! nothing but file permissions protects the server key.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::TlsError;

#[derive(Debug, Clone)]
pub struct DevCertificate {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// True when this start generated it.
    pub created: bool,
}

/// Reuse the development certificate in `dir`, or create it.
pub fn ensure_dev_certificate(dir: &Path) -> Result<DevCertificate, TlsError> {
    let dev = DevCertificate {
        ca_file: dir.join("ca.pem"),
        cert_file: dir.join("server.pem"),
        key_file: dir.join("server.key"),
        created: false,
    };
    if dev.ca_file.exists() && dev.cert_file.exists() && dev.key_file.exists() {
        return Ok(dev);
    }
    let err = |reason: String| TlsError::DevCert { path: dir.to_path_buf(), reason };
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;

    let ca_key = KeyPair::generate().map_err(|e| err(e.to_string()))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| err(e.to_string()))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(DnType::CommonName, "logwarden development CA (not for production)");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| err(e.to_string()))?;
    let issuer = Issuer::new(ca, ca_key);

    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() && h != "localhost" {
            names.push(h.to_string());
        }
    }
    let key = KeyPair::generate().map_err(|e| err(e.to_string()))?;
    let mut leaf = CertificateParams::new(names).map_err(|e| err(e.to_string()))?;
    leaf.distinguished_name.push(DnType::CommonName, "logwarden development server");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &issuer).map_err(|e| err(e.to_string()))?;

    write_file(&dev.ca_file, ca_cert.pem().as_bytes(), 0o644).map_err(|e| err(e.to_string()))?;
    write_file(&dev.cert_file, format!("{}{}", cert.pem(), ca_cert.pem()).as_bytes(), 0o644)
        .map_err(|e| err(e.to_string()))?;
    write_file(&dev.key_file, key.serialize_pem().as_bytes(), 0o600).map_err(|e| err(e.to_string()))?;
    Ok(DevCertificate { created: true, ..dev })
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(mode).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
