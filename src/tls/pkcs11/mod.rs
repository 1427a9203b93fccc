//! The server's private key on a PKCS#11 token (HSM, smart card, SoftHSM).
//!
//! The key never leaves the token: rustls asks [`TokenKey`] for a [`Signer`], and every
//! signature is a `C_Sign` call on one of a small pool of sessions. The module is loaded and
//! initialised once per process; the user logs in once (PKCS#11 login state is shared by every
//! session of the application) and sessions are opened as handshakes need them, up to the
//! configured count and the token's own limit.
//!
//! When the token goes away (card pulled, HSM restarted) signing fails, the failure is logged
//! and counted, the pool is emptied, and the next handshake finds the token, logs in and looks
//! the key up again. A refused PIN is never retried: smart cards lock after a few attempts.

mod list;
mod uri;

pub use list::list;
pub use uri::{Pkcs11Uri, UriError};

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::{Limit, Slot};
use cryptoki::types::AuthPin;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};
use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer, alg_id};
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use sha2::Digest;

/// How long a handshake waits for a free session before failing.
const SESSION_WAIT: Duration = Duration::from_secs(10);

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

/// `logwarden_pkcs11_*` metrics.
#[derive(Clone)]
pub struct Pkcs11Metrics {
    sign_seconds: Histogram,
    errors: IntCounterVec,
}

impl Pkcs11Metrics {
    pub fn register(reg: &Registry) -> Result<Self, prometheus::Error> {
        let sign_seconds = Histogram::with_opts(
            HistogramOpts::new("logwarden_pkcs11_sign_seconds", "Time to sign a TLS handshake on the token.")
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                ]),
        )?;
        reg.register(Box::new(sign_seconds.clone()))?;
        let errors = IntCounterVec::new(
            Opts::new("logwarden_pkcs11_errors_total", "Failed PKCS#11 operations, by operation."),
            &["op"],
        )?;
        reg.register(Box::new(errors.clone()))?;
        Ok(Pkcs11Metrics { sign_seconds, errors })
    }
}

/// One token and the key on it.
pub struct Token {
    ctx: Pkcs11,
    module: PathBuf,
    uri: Pkcs11Uri,
    pin: AuthPin,
    max_sessions: usize,
    state: Mutex<State>,
    freed: Condvar,
    metrics: Option<Pkcs11Metrics>,
}

#[derive(Default)]
struct State {
    /// Slot, token label and key handle while the token is known to be present.
    found: Option<Found>,
    idle: Vec<Session>,
    open: usize,
    /// Set when the token refused the PIN: nothing logs in again.
    pin_refused: Option<String>,
}

#[derive(Clone)]
struct Found {
    slot: Slot,
    label: String,
    key: ObjectHandle,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token").field("module", &self.module).field("uri", &self.uri.to_string()).finish()
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

/// The label of every token the module sees (for error messages).
fn present_tokens(ctx: &Pkcs11) -> String {
    let labels: Vec<String> = ctx
        .get_slots_with_initialized_token()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|s| ctx.get_token_info(s).ok().map(|t| format!("{:?} (slot {s})", t.label())))
        .collect();
    if labels.is_empty() { "none".into() } else { labels.join(", ") }
}

impl Token {
    /// Open the token the URI names, log in and find the key. A refused PIN is final.
    pub fn open(
        module: &Path,
        uri: Pkcs11Uri,
        pin: &PinSource,
        max_sessions: usize,
        metrics: Option<Pkcs11Metrics>,
    ) -> Result<Arc<Token>, Pkcs11Error> {
        let ctx = load_module(module)?;
        let pin = pin.read()?;
        let token = Token {
            ctx,
            module: module.to_path_buf(),
            uri,
            pin,
            max_sessions: max_sessions.max(1),
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
            metrics,
        };
        let mut state = token.state.lock().unwrap_or_else(|e| e.into_inner());
        let (session, _) = token.connect(&mut state)?;
        state.idle.push(session);
        state.open = 1;
        drop(state);
        Ok(Arc::new(token))
    }

    pub fn uri(&self) -> &Pkcs11Uri {
        &self.uri
    }

    fn call_err(&self, op: &'static str, label: &str, source: CkError) -> Pkcs11Error {
        if let Some(m) = &self.metrics {
            m.errors.with_label_values(&[op]).inc();
        }
        Pkcs11Error::Call { op, token: label.to_string(), error: source }
    }

    /// Find the slot, open a session, log in and find the key. Leaves `state.found` set and
    /// returns the (logged-in) session.
    fn connect(&self, state: &mut State) -> Result<(Session, Found), Pkcs11Error> {
        if let Some(reason) = &state.pin_refused {
            let token = self.uri.token.clone().unwrap_or_default();
            return Err(Pkcs11Error::PinRefused { token, reason: reason.clone() });
        }
        let slot = self.find_slot()?;
        let info = self.ctx.get_token_info(slot).map_err(|e| self.call_err("get_token_info", "?", e))?;
        let label = info.label().to_string();
        let session = self.ctx.open_ro_session(slot).map_err(|e| self.call_err("open_session", &label, e))?;
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(
                rv @ (RvError::PinIncorrect | RvError::PinLocked | RvError::PinExpired),
                _,
            )) => {
                let reason = format!("{rv}");
                state.pin_refused = Some(reason.clone());
                if let Some(m) = &self.metrics {
                    m.errors.with_label_values(&["login"]).inc();
                }
                return Err(Pkcs11Error::PinRefused { token: label, reason });
            }
            Err(e) => return Err(self.call_err("login", &label, e)),
        }
        let key = self.find_key(&session, &label)?;
        let found = Found { slot, label, key };
        state.found = Some(found.clone());
        Ok((session, found))
    }

    fn find_slot(&self) -> Result<Slot, Pkcs11Error> {
        let slots = self
            .ctx
            .get_slots_with_initialized_token()
            .map_err(|e| self.call_err("get_slot_list", "?", e))?;
        for slot in slots {
            if self.uri.slot_id.is_some_and(|id| id != slot.id()) {
                continue;
            }
            let Ok(t) = self.ctx.get_token_info(slot) else { continue };
            if self.uri.matches_token(t.label(), t.manufacturer_id(), t.model(), t.serial_number()) {
                return Ok(slot);
            }
        }
        Err(Pkcs11Error::NoToken {
            uri: self.uri.to_string(),
            module: self.module.clone(),
            present: present_tokens(&self.ctx),
        })
    }

    fn template(&self, class: ObjectClass) -> Vec<Attribute> {
        let mut t = vec![Attribute::Class(class)];
        if let Some(l) = &self.uri.object {
            t.push(Attribute::Label(l.as_bytes().to_vec()));
        }
        if let Some(id) = &self.uri.id {
            t.push(Attribute::Id(id.clone()));
        }
        t
    }

    fn find_key(&self, session: &Session, label: &str) -> Result<ObjectHandle, Pkcs11Error> {
        let keys = session
            .find_objects(&self.template(ObjectClass::PRIVATE_KEY))
            .map_err(|e| self.call_err("find_objects", label, e))?;
        match keys.as_slice() {
            [k] => Ok(*k),
            [] => Err(Pkcs11Error::NoKey { uri: self.uri.to_string(), token: label.into() }),
            _ => Err(Pkcs11Error::AmbiguousKey {
                uri: self.uri.to_string(),
                token: label.into(),
                count: keys.len(),
            }),
        }
    }

    fn label(&self) -> String {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .found
            .as_ref()
            .map(|f| f.label.clone())
            .unwrap_or_else(|| self.uri.token.clone().unwrap_or_default())
    }

    /// Run `f` on a pooled session with the key's handle.
    fn with_session<T>(
        &self,
        f: impl Fn(&Session, ObjectHandle) -> Result<T, CkError>,
    ) -> Result<T, Pkcs11Error> {
        let (session, found) = self.checkout()?;
        match f(&session, found.key) {
            Ok(v) => {
                self.checkin(session);
                Ok(v)
            }
            Err(CkError::Pkcs11(RvError::UserNotLoggedIn, _)) => {
                // The token forgot the login (some do after a while): log in once more.
                let relogin = session.login(UserType::User, Some(&self.pin));
                match relogin {
                    Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
                    Err(e) => {
                        self.lost(session);
                        return Err(self.call_err("login", &found.label, e));
                    }
                }
                let r = f(&session, found.key);
                match r {
                    Ok(v) => {
                        self.checkin(session);
                        Ok(v)
                    }
                    Err(e) => {
                        self.lost(session);
                        Err(self.call_err("sign", &found.label, e))
                    }
                }
            }
            Err(e) => {
                // Any other failure may mean the token went away or restarted: start over
                // on the next handshake (new slot lookup, login, key handle).
                self.lost(session);
                let e = self.call_err("sign", &found.label, e);
                tracing::error!(token = %found.label, error = %e, "signing on the PKCS#11 token failed; TLS handshakes fail until it works again");
                Err(e)
            }
        }
    }

    fn checkout(&self) -> Result<(Session, Found), Pkcs11Error> {
        let deadline = Instant::now() + SESSION_WAIT;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let Some(found) = state.found.clone() else {
                // The token was lost: find it again (this handshake pays for it).
                state.idle.clear();
                state.open = 0;
                let (session, found) = self.connect(&mut state)?;
                state.open = 1;
                tracing::info!(token = %self.uri, "PKCS#11 token available again");
                return Ok((session, found));
            };
            if let Some(s) = state.idle.pop() {
                return Ok((s, found));
            }
            if state.open < self.max_sessions {
                let s = self
                    .ctx
                    .open_ro_session(found.slot)
                    .map_err(|e| self.call_err("open_session", &found.label, e))?;
                state.open += 1;
                return Ok((s, found));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.call_err(
                    "open_session",
                    &found.label,
                    CkError::Pkcs11(RvError::SessionCount, cryptoki::context::Function::OpenSession),
                ));
            }
            state = self.freed.wait_timeout(state, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    fn checkin(&self, session: Session) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.idle.push(session);
        drop(state);
        self.freed.notify_one();
    }

    /// Drop a failed session and every idle one; the next checkout reconnects.
    fn lost(&self, session: Session) {
        drop(session);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.found = None;
        state.idle.clear();
        state.open = 0;
        drop(state);
        self.freed.notify_all();
    }

    /// Read attributes of the key and of its public half and certificate on the token.
    fn attributes(&self, class: ObjectClass, types: &[AttributeType]) -> Result<Vec<Attribute>, Pkcs11Error> {
        let template = self.template(class);
        let label = self.label();
        self.with_session(|s, key| {
            let object = if class == ObjectClass::PRIVATE_KEY {
                Some(key)
            } else {
                s.find_objects(&template)?.into_iter().next()
            };
            match object {
                Some(o) => s.get_attributes(o, types),
                None => Ok(Vec::new()),
            }
        })
        .map_err(|e| match e {
            Pkcs11Error::Call { op, error, .. } => Pkcs11Error::Call { op, token: label, error },
            e => e,
        })
    }

    /// The certificate stored beside the key (same id or label), DER.
    pub fn certificate(&self) -> Result<CertificateDer<'static>, Pkcs11Error> {
        let attrs = self.attributes(ObjectClass::CERTIFICATE, &[AttributeType::Value])?;
        attrs
            .into_iter()
            .find_map(|a| match a {
                Attribute::Value(v) => Some(CertificateDer::from(v)),
                _ => None,
            })
            .ok_or_else(|| Pkcs11Error::NoCertificate { uri: self.uri.to_string(), token: self.label() })
    }

    fn mechanisms(&self) -> Vec<MechanismType> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(found) = state.found.clone() else { return Vec::new() };
        drop(state);
        self.ctx.get_mechanism_list(found.slot).unwrap_or_default()
    }

    /// The maximum number of sessions worth opening: the configured count, capped by the token.
    pub fn session_limit(&self) -> usize {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let slot = state.found.as_ref().map(|f| f.slot);
        drop(state);
        let cap = slot.and_then(|s| self.ctx.get_token_info(s).ok()).map(|t| t.max_session_count());
        match cap {
            Some(Limit::Max(n)) => self.max_sessions.min(n as usize).max(1),
            _ => self.max_sessions,
        }
    }
}

/// How a signature is made on the token.
#[derive(Debug, Clone, Copy)]
enum How {
    /// `CKM_ECDSA` over a hash computed here; the token returns r||s.
    EcdsaPrehashed(Hash),
    /// `CKM_ECDSA_SHA*` over the message.
    Ecdsa(Hash),
    /// `CKM_SHA*_RSA_PKCS_PSS` over the message.
    RsaPss(Hash),
    /// `CKM_RSA_PKCS_PSS` over a hash computed here.
    RsaPssPrehashed(Hash),
    /// `CKM_SHA*_RSA_PKCS` over the message.
    RsaPkcs1(Hash),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn digest(self, m: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => sha2::Sha256::digest(m).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(m).to_vec(),
            Hash::Sha512 => sha2::Sha512::digest(m).to_vec(),
        }
    }

    fn pss(self) -> PkcsPssParams {
        let (hash_alg, mgf, len) = match self {
            Hash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32u64),
            Hash::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384, 48),
            Hash::Sha512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512, 64),
        };
        PkcsPssParams { hash_alg, mgf, s_len: len.into() }
    }
}

/// The private key on a token, as rustls sees it.
#[derive(Debug)]
pub struct TokenKey {
    token: Arc<Token>,
    algorithm: SignatureAlgorithm,
    /// Schemes in order of preference, with how each is made.
    schemes: Vec<(SignatureScheme, How)>,
    spki: Option<SubjectPublicKeyInfoDer<'static>>,
}

impl TokenKey {
    /// Inspect the key and the token's mechanisms; offer only schemes the token can make.
    pub fn new(token: Arc<Token>) -> Result<Self, Pkcs11Error> {
        let uri = token.uri.to_string();
        let label = token.label();
        let attrs = token.attributes(
            ObjectClass::PRIVATE_KEY,
            &[
                AttributeType::KeyType,
                AttributeType::EcParams,
                AttributeType::Modulus,
                AttributeType::PublicExponent,
            ],
        )?;
        let get = |t: AttributeType| attrs.iter().find(|a| a.attribute_type() == t);
        let mechs = token.mechanisms();
        let has = |m: MechanismType| mechs.contains(&m);
        let (algorithm, schemes, spki) = match get(AttributeType::KeyType) {
            Some(Attribute::KeyType(k)) if *k == KeyType::EC => {
                let params = match get(AttributeType::EcParams) {
                    Some(Attribute::EcParams(p)) => p.clone(),
                    _ => Vec::new(),
                };
                let (scheme, hash, mech, alg) = match params.as_slice() {
                    [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07] => (
                        SignatureScheme::ECDSA_NISTP256_SHA256,
                        Hash::Sha256,
                        MechanismType::ECDSA_SHA256,
                        alg_id::ECDSA_P256,
                    ),
                    [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22] => (
                        SignatureScheme::ECDSA_NISTP384_SHA384,
                        Hash::Sha384,
                        MechanismType::ECDSA_SHA384,
                        alg_id::ECDSA_P384,
                    ),
                    _ => {
                        return Err(Pkcs11Error::UnsupportedKey {
                            uri,
                            kind: "an EC key on a curve other than P-256/P-384".into(),
                        });
                    }
                };
                let how = if has(MechanismType::ECDSA) {
                    How::EcdsaPrehashed(hash)
                } else if has(mech) {
                    How::Ecdsa(hash)
                } else {
                    return Err(Pkcs11Error::NoMechanism {
                        uri,
                        token: label,
                        needed: format!("CKM_ECDSA or {mech}"),
                    });
                };
                let point = token
                    .attributes(ObjectClass::PUBLIC_KEY, &[AttributeType::EcPoint])?
                    .into_iter()
                    .find_map(|a| match a {
                        Attribute::EcPoint(p) => Some(unwrap_octet_string(p)),
                        _ => None,
                    });
                let spki = point.map(|p| rustls::sign::public_key_to_spki(&alg, p));
                (SignatureAlgorithm::ECDSA, vec![(scheme, how)], spki)
            }
            Some(Attribute::KeyType(k)) if *k == KeyType::RSA => {
                let (n, e) = match (get(AttributeType::Modulus), get(AttributeType::PublicExponent)) {
                    (Some(Attribute::Modulus(n)), Some(Attribute::PublicExponent(e))) => {
                        (n.clone(), e.clone())
                    }
                    _ => (Vec::new(), Vec::new()),
                };
                let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
                if !n.is_empty() && bits < 2048 {
                    return Err(Pkcs11Error::UnsupportedKey { uri, kind: format!("RSA of {bits} bits") });
                }
                let mut schemes = Vec::new();
                for (scheme, hash, mech) in [
                    (SignatureScheme::RSA_PSS_SHA256, Hash::Sha256, MechanismType::SHA256_RSA_PKCS_PSS),
                    (SignatureScheme::RSA_PSS_SHA384, Hash::Sha384, MechanismType::SHA384_RSA_PKCS_PSS),
                    (SignatureScheme::RSA_PSS_SHA512, Hash::Sha512, MechanismType::SHA512_RSA_PKCS_PSS),
                ] {
                    if has(mech) {
                        schemes.push((scheme, How::RsaPss(hash)));
                    } else if has(MechanismType::RSA_PKCS_PSS) {
                        schemes.push((scheme, How::RsaPssPrehashed(hash)));
                    }
                }
                for (scheme, hash, mech) in [
                    (SignatureScheme::RSA_PKCS1_SHA256, Hash::Sha256, MechanismType::SHA256_RSA_PKCS),
                    (SignatureScheme::RSA_PKCS1_SHA384, Hash::Sha384, MechanismType::SHA384_RSA_PKCS),
                    (SignatureScheme::RSA_PKCS1_SHA512, Hash::Sha512, MechanismType::SHA512_RSA_PKCS),
                ] {
                    if has(mech) {
                        schemes.push((scheme, How::RsaPkcs1(hash)));
                    }
                }
                if schemes.is_empty() {
                    return Err(Pkcs11Error::NoMechanism {
                        uri,
                        token: label,
                        needed: "CKM_SHA256_RSA_PKCS_PSS, CKM_RSA_PKCS_PSS or CKM_SHA256_RSA_PKCS".into(),
                    });
                }
                let spki = (!n.is_empty()).then(|| {
                    let der = yasna::construct_der(|w| {
                        w.write_sequence(|s| {
                            s.next().write_bigint_bytes(&n, true);
                            s.next().write_bigint_bytes(&e, true);
                        })
                    });
                    rustls::sign::public_key_to_spki(&alg_id::RSA_ENCRYPTION, der)
                });
                (SignatureAlgorithm::RSA, schemes, spki)
            }
            other => {
                let kind = match other {
                    Some(Attribute::KeyType(k)) => format!("a {k} key"),
                    _ => "a key of unknown type".into(),
                };
                return Err(Pkcs11Error::UnsupportedKey { uri, kind });
            }
        };
        Ok(TokenKey { token, algorithm, schemes, spki })
    }

    /// The signature schemes offered, in preference order (for logs).
    pub fn scheme_names(&self) -> Vec<String> {
        self.schemes.iter().map(|(s, _)| format!("{s:?}")).collect()
    }
}

/// The content of a DER OCTET STRING, or the input when it is not one (some tokens return the
/// raw point).
fn unwrap_octet_string(v: Vec<u8>) -> Vec<u8> {
    // Uncompressed P-256, P-384 and P-521 points are 65, 97 and 133 bytes long.
    if [65, 97, 133].contains(&v.len()) {
        return v;
    }
    match v.as_slice() {
        [0x04, len, rest @ ..] if (*len as usize) == rest.len() && *len < 0x80 => rest.to_vec(),
        [0x04, 0x81, len, rest @ ..] if (*len as usize) == rest.len() => rest.to_vec(),
        _ => v,
    }
}

impl SigningKey for TokenKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let (scheme, how) = self.schemes.iter().find(|(s, _)| offered.contains(s))?;
        Some(Box::new(TokenSigner { token: self.token.clone(), scheme: *scheme, how: *how }))
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        self.spki.clone()
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }
}

#[derive(Debug)]
struct TokenSigner {
    token: Arc<Token>,
    scheme: SignatureScheme,
    how: How,
}

impl Signer for TokenSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let started = Instant::now();
        let (input, ecdsa) = match self.how {
            How::EcdsaPrehashed(h) | How::RsaPssPrehashed(h) => {
                (h.digest(message), matches!(self.how, How::EcdsaPrehashed(_)))
            }
            How::Ecdsa(_) => (message.to_vec(), true),
            How::RsaPss(_) | How::RsaPkcs1(_) => (message.to_vec(), false),
        };
        let how = self.how;
        let signed = self.token.with_session(|s, key| {
            let pss;
            let mechanism = match how {
                How::EcdsaPrehashed(_) => Mechanism::Ecdsa,
                How::Ecdsa(Hash::Sha256) => Mechanism::EcdsaSha256,
                How::Ecdsa(Hash::Sha384) => Mechanism::EcdsaSha384,
                How::Ecdsa(Hash::Sha512) => Mechanism::EcdsaSha512,
                How::RsaPss(h) => {
                    pss = h.pss();
                    match h {
                        Hash::Sha256 => Mechanism::Sha256RsaPkcsPss(pss),
                        Hash::Sha384 => Mechanism::Sha384RsaPkcsPss(pss),
                        Hash::Sha512 => Mechanism::Sha512RsaPkcsPss(pss),
                    }
                }
                How::RsaPssPrehashed(h) => {
                    pss = h.pss();
                    Mechanism::RsaPkcsPss(pss)
                }
                How::RsaPkcs1(Hash::Sha256) => Mechanism::Sha256RsaPkcs,
                How::RsaPkcs1(Hash::Sha384) => Mechanism::Sha384RsaPkcs,
                How::RsaPkcs1(Hash::Sha512) => Mechanism::Sha512RsaPkcs,
            };
            s.sign(&mechanism, key, &input)
        });
        if let Some(m) = &self.token.metrics {
            m.sign_seconds.observe(started.elapsed().as_secs_f64());
        }
        let sig = signed.map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(if ecdsa { ecdsa_der(&sig) } else { sig })
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// DER `Ecdsa-Sig-Value` from the raw r||s a token returns.
fn ecdsa_der(raw: &[u8]) -> Vec<u8> {
    let (r, s) = raw.split_at(raw.len() / 2);
    yasna::construct_der(|w| {
        w.write_sequence(|seq| {
            seq.next().write_bigint_bytes(r, true);
            seq.next().write_bigint_bytes(s, true);
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_signatures_become_der_integers() {
        // High bit set on r (needs a 0x00 sign byte) and leading zeros on s (dropped).
        let mut raw = vec![0x80; 32];
        raw.extend([0u8, 0, 0x12].iter().chain([0x34; 29].iter()));
        let der = ecdsa_der(&raw);
        assert_eq!(&der[..5], &[0x30, 0x43, 0x02, 0x21, 0x00]);
        assert_eq!(&der[37..40], &[0x02, 0x1e, 0x12]);
        assert_eq!(der.len(), 2 + 0x43);
    }

    #[test]
    fn ec_points_lose_their_octet_string_wrapper() {
        let point = [0x04u8; 65].to_vec();
        let mut wrapped = vec![0x04, 65];
        wrapped.extend(&point);
        assert_eq!(unwrap_octet_string(wrapped), point);
        assert_eq!(unwrap_octet_string(point.clone()), point);
    }
}
