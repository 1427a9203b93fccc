//! The server's private key on a PKCS#11 token (HSM, smart card, SoftHSM).
//!
//! The key never leaves the token: rustls asks [`TokenKey`] for a signer, and every signature
//! is a `C_Sign` on one of [`Token`]'s pooled sessions. The module is loaded and initialised
//! once per process. `list` is `logwarden pkcs11 list`; `uri` parses RFC 7512 URIs.

mod key;
mod list;
mod token;
mod uri;

pub use key::TokenKey;
pub use list::list;
pub use token::Token;
pub use uri::{Pkcs11Uri, UriError};

use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::types::AuthPin;

#[derive(Debug, thiserror::Error)]
pub enum Pkcs11Error {
    #[error("cannot load the PKCS#11 module {module}: {reason}")]
    Module { module: PathBuf, reason: String },
    #[error("no token matches {uri} (module {module}); tokens present: {present}")]
    NoToken { uri: String, module: PathBuf, present: String },
    #[error("the token {token:?} refused the PIN ({reason}); not retrying, so that the token does not lock")]
    PinRefused { token: String, reason: String },
    #[error("no private key matches {uri} on token {token:?}")]
    NoKey { uri: String, token: String },
    #[error("{count} private keys match {uri} on token {token:?}; add id= or object= to pick one")]
    AmbiguousKey { uri: String, token: String, count: usize },
    #[error("no certificate for {uri} on token {token:?}; set tls.cert_file")]
    NoCertificate { uri: String, token: String },
    #[error("the key {uri} is {kind}: logwarden signs with EC P-256/P-384 or RSA of 2048 bits or more")]
    UnsupportedKey { uri: String, kind: String },
    #[error("the token {token:?} offers no mechanism to sign with {uri} ({needed})")]
    NoMechanism { uri: String, token: String, needed: String },
    #[error("cannot read the PIN: {0}")]
    Pin(String),
    #[error(
        "the token {token} is unavailable since a PKCS#11 call failed; next attempt to find it in {retry_in:?}"
    )]
    Unavailable { token: String, retry_in: std::time::Duration },
    #[error("PKCS#11 {op} failed on token {token:?}: {error}")]
    Call { op: &'static str, token: String, error: CkError },
}

/// Where the user PIN comes from (never the config itself).
#[derive(Debug, Clone)]
pub enum PinSource {
    File(PathBuf),
    /// A systemd credential: `$CREDENTIALS_DIRECTORY/<name>`.
    Credential(String),
    Env(String),
}

impl PinSource {
    fn read(&self) -> Result<AuthPin, Pkcs11Error> {
        let text = match self {
            PinSource::File(p) => std::fs::read_to_string(p)
                .map_err(|e| Pkcs11Error::Pin(format!("tls.pin_file {}: {e}", p.display())))?,
            PinSource::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    Pkcs11Error::Pin(format!(
                        "tls.pin_credential {name:?}: $CREDENTIALS_DIRECTORY is not set (LoadCredential= in the unit)"
                    ))
                })?;
                let p = Path::new(&dir).join(name);
                std::fs::read_to_string(&p)
                    .map_err(|e| Pkcs11Error::Pin(format!("tls.pin_credential {}: {e}", p.display())))?
            }
            PinSource::Env(var) => std::env::var(var)
                .map_err(|_| Pkcs11Error::Pin(format!("tls.pin_env: ${var} is not set or not UTF-8")))?,
        };
        let pin = text.trim_end_matches(['\n', '\r']);
        if pin.is_empty() {
            return Err(Pkcs11Error::Pin(format!("{self:?} is empty")));
        }
        Ok(AuthPin::from(pin))
    }
}

/// Load and initialise a module.
pub fn load_module(module: &Path) -> Result<Pkcs11, Pkcs11Error> {
    let err = |reason: String| Pkcs11Error::Module { module: module.to_path_buf(), reason };
    if !module.is_file() {
        return Err(err("no such file".into()));
    }
    let ctx = Pkcs11::new(module).map_err(|e| err(e.to_string()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(ctx),
        Err(e) => Err(err(e.to_string())),
    }
}
