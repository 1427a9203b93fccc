//! `[seal]`: the hash chain over stored objects, its signed checkpoints, and where else they go.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Problem, ReceiverConfig, TlsConfig};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SealConfig {
    /// Chain every WAL group, segment, manifest and audit file, and sign checkpoints of it.
    pub enabled: bool,
    /// How often a checkpoint is signed while the chain grows (and always at shutdown).
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// A signing key of its own (PEM certificate and key, or a key on a PKCS#11 token with the
    /// same keys as `[tls]`); unset, checkpoints are signed with the `[tls]` server key.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub key: Option<String>,
    pub pkcs11_module: Option<PathBuf>,
    pub pin_file: Option<PathBuf>,
    pub pin_credential: Option<String>,
    pub pin_env: Option<String>,
    pub export: SealExportConfig,
}

impl Default for SealConfig {
    fn default() -> Self {
        SealConfig {
            enabled: true,
            checkpoint_interval: Duration::from_secs(60),
            cert_file: None,
            key_file: None,
            key: None,
            pkcs11_module: None,
            pin_file: None,
            pin_credential: None,
            pin_env: None,
            export: SealExportConfig::default(),
        }
    }
}

/// Where checkpoints go besides the data directory and the log.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SealExportConfig {
    /// POST each checkpoint (its JSON line) to this URL.
    pub webhook: Option<ReceiverConfig>,
    /// Send each checkpoint as an RFC 5424 message to a syslog collector: `tcp://HOST:PORT` or
    /// `tls://HOST:PORT`.
    pub syslog: Option<String>,
    /// The CA bundle (PEM) that verifies a `tls://` collector.
    pub syslog_ca_file: Option<PathBuf>,
}

impl SealConfig {
    /// The `[tls]`-shaped description of the signing key of its own, if one is configured.
    pub fn own_key(&self) -> Option<TlsConfig> {
        (self.key_file.is_some() || self.key.is_some()).then(|| TlsConfig {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            key: self.key.clone(),
            pkcs11_module: self.pkcs11_module.clone(),
            pin_file: self.pin_file.clone(),
            pin_credential: self.pin_credential.clone(),
            pin_env: self.pin_env.clone(),
            ..TlsConfig::default()
        })
    }

    pub(super) fn validate(&self, out: &mut Vec<Problem>) {
        if self.checkpoint_interval < Duration::from_secs(1) {
            out.push(Problem::new("seal.checkpoint_interval", "must be at least 1s"));
        }
        if self.key_file.is_some() && self.key.is_some() {
            out.push(Problem::new("seal.key", "set key_file or key (a PKCS#11 URI), not both"));
        }
        if self.key_file.is_some() && self.cert_file.is_none() {
            out.push(Problem::new(
                "seal.cert_file",
                "a key_file needs the certificate that verifies its signatures",
            ));
        }
        if self.key.is_none() && self.key_file.is_none() {
            for (key, set) in [("cert_file", self.cert_file.is_some()), ("pin_file", self.pin_file.is_some())]
            {
                if set {
                    out.push(Problem::new(
                        format!("seal.{key}"),
                        "has no effect without seal.key_file or seal.key (checkpoints are signed with the [tls] key)",
                    ));
                }
            }
        }
        for (key, path) in [
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
            ("export.syslog_ca_file", &self.export.syslog_ca_file),
        ] {
            if let Some(p) = path
                && !p.is_file()
            {
                out.push(Problem::new(
                    format!("seal.{key}"),
                    format!("{} is not a readable file", p.display()),
                ));
            }
        }
        if let Some(url) = &self.export.syslog {
            let ok = url.strip_prefix("tcp://").or_else(|| url.strip_prefix("tls://")).is_some_and(|rest| {
                rest.rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.trim_end_matches('/').parse::<u16>().is_ok())
            });
            if !ok {
                out.push(Problem::new(
                    "seal.export.syslog",
                    format!("{url:?} is not tcp://HOST:PORT or tls://HOST:PORT"),
                ));
            } else if url.starts_with("tls://") && self.export.syslog_ca_file.is_none() {
                out.push(Problem::new(
                    "seal.export.syslog_ca_file",
                    "a tls:// collector needs the CA bundle that verifies it",
                ));
            }
        }
        if let Some(w) = &self.export.webhook
            && !(w.url.starts_with("http://") || w.url.starts_with("https://"))
        {
            out.push(Problem::new("seal.export.webhook.url", "must start with http:// or https://"));
        }
    }
}
