//! One token, the user's login on it, the key's handle and a pool of sessions to sign with.
//!
//! The user logs in once (PKCS#11 login state is shared by every session of the application)
//! and sessions are opened as handshakes need them, up to the configured count and the token's
//! own limit. When a call fails the pool is emptied and the next caller restarts the module
//! (`C_Finalize`, `C_Initialize`: a module whose device went away may keep stale state), finds
//! the token, logs in and looks the key up again, so a pulled card or restarted HSM recovers by
//! itself. While the token stays away that is tried at most once per [`RETRY`]; handshakes in
//! between fail at once. A refused PIN is never tried again: smart cards lock after a few
//! attempts.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::{Limit, Slot};
use cryptoki::types::AuthPin;
use rustls::pki_types::CertificateDer;

use super::{PinSource, Pkcs11Error, Pkcs11Uri, load_module};
use crate::metrics::Pkcs11Metrics;

/// How long a handshake waits for a free session before failing.
const SESSION_WAIT: Duration = Duration::from_secs(10);
/// How often a lost token is looked for again.
const RETRY: Duration = Duration::from_secs(1);

/// One token and the key on it.
pub struct Token {
    ctx: Pkcs11,
    module: PathBuf,
    uri: Pkcs11Uri,
    pin: AuthPin,
    /// The configured session count, capped by the token's limit.
    max_sessions: usize,
    state: Mutex<State>,
    freed: Condvar,
    pub(super) metrics: Option<Pkcs11Metrics>,
}

#[derive(Default)]
struct State {
    /// Slot, token label and key handle while the token is known to be present.
    found: Option<Found>,
    idle: Vec<Session>,
    open: usize,
    /// Set when the token refused the PIN: nothing logs in again.
    pin_refused: Option<String>,
    /// Counts losses; a session from an earlier generation is not returned to the pool.
    generation: u64,
    /// While the token is lost: no new attempt to find it before this.
    retry_at: Option<Instant>,
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
        let mut token = Token {
            ctx,
            module: module.to_path_buf(),
            uri,
            pin,
            max_sessions: max_sessions.max(1),
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
            metrics,
        };
        let mut state = token.lock();
        let (session, found) = token.connect(&mut state)?;
        state.idle.push(session);
        state.open = 1;
        drop(state);
        token.set_available(true);
        if let Ok(Limit::Max(n)) = token.ctx.get_token_info(found.slot).map(|t| t.max_session_count()) {
            token.max_sessions = token.max_sessions.min(n as usize).max(1);
        }
        Ok(Arc::new(token))
    }

    pub fn uri(&self) -> &Pkcs11Uri {
        &self.uri
    }

    /// Sessions the pool may hold.
    pub fn max_sessions(&self) -> usize {
        self.max_sessions
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_available(&self, up: bool) {
        if let Some(m) = &self.metrics {
            m.available.set(i64::from(up));
        }
    }

    fn count_error(&self, op: &str) {
        if let Some(m) = &self.metrics {
            m.errors.with_label_values(&[op]).inc();
        }
    }

    fn call_err(&self, op: &'static str, label: &str, error: CkError) -> Pkcs11Error {
        self.count_error(op);
        Pkcs11Error::Call { op, token: label.to_string(), error }
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
                let reason = rv.to_string();
                state.pin_refused = Some(reason.clone());
                self.count_error("login");
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

    /// The token's label as last seen (the URI's `token=` before that).
    pub fn label(&self) -> String {
        self.label_of(&self.lock())
    }

    /// Run `f` on a pooled session with the key's handle; `op` names it in errors and metrics.
    /// A session whose login the token forgot logs in once more; any other failure may mean
    /// the token went away or restarted, so the pool starts over on the next call.
    pub(super) fn with_session<T>(
        &self,
        op: &'static str,
        f: impl Fn(&Session, ObjectHandle) -> Result<T, CkError>,
    ) -> Result<T, Pkcs11Error> {
        let (session, found, generation) = self.checkout()?;
        let mut failed_op = op;
        let mut result = f(&session, found.key);
        if let Err(CkError::Pkcs11(RvError::UserNotLoggedIn, _)) = result {
            result = match session.login(UserType::User, Some(&self.pin)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => f(&session, found.key),
                Err(e) => {
                    failed_op = "login";
                    Err(e)
                }
            };
        }
        match result {
            Ok(v) => {
                self.checkin(session, generation);
                Ok(v)
            }
            Err(e) => {
                let first = self.lost(session, generation);
                let e = self.call_err(failed_op, &found.label, e);
                if first {
                    tracing::error!(token = %found.label, error = %e, "PKCS#11 call failed: TLS handshakes fail until the token answers again; looking for it every second");
                }
                Err(e)
            }
        }
    }

    fn checkout(&self) -> Result<(Session, Found, u64), Pkcs11Error> {
        let deadline = Instant::now() + SESSION_WAIT;
        let mut state = self.lock();
        loop {
            let Some(found) = state.found.clone() else {
                return self.reconnect(&mut state);
            };
            if let Some(s) = state.idle.pop() {
                return Ok((s, found, state.generation));
            }
            if state.open < self.max_sessions {
                let s = self
                    .ctx
                    .open_ro_session(found.slot)
                    .map_err(|e| self.call_err("open_session", &found.label, e))?;
                state.open += 1;
                return Ok((s, found, state.generation));
            }
            let now = Instant::now();
            if now >= deadline {
                let busy = CkError::Pkcs11(RvError::SessionCount, Function::OpenSession);
                return Err(self.call_err("open_session", &found.label, busy));
            }
            state = self.freed.wait_timeout(state, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// The token was lost: restart the module and find it again (this caller pays for it), at
    /// most once per [`RETRY`].
    fn reconnect(&self, state: &mut State) -> Result<(Session, Found, u64), Pkcs11Error> {
        let now = Instant::now();
        if let Some(at) = state.retry_at
            && now < at
        {
            return Err(Pkcs11Error::Unavailable { token: self.uri.to_string(), retry_in: at - now });
        }
        state.retry_at = Some(now + RETRY);
        // Sessions of the old generation die with the finalize; none is in the pool any more.
        let _ = self.ctx.clone().finalize();
        match self.ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => {
                let e = self.call_err("initialize", &self.label_of(state), e);
                tracing::warn!(token = %self.uri, error = %e, "PKCS#11 token still unavailable");
                return Err(e);
            }
        }
        match self.connect(state) {
            Ok((session, found)) => {
                state.open = 1;
                state.retry_at = None;
                self.set_available(true);
                tracing::info!(token = %self.uri, "PKCS#11 token available again");
                Ok((session, found, state.generation))
            }
            Err(e) => {
                tracing::warn!(token = %self.uri, error = %e, "PKCS#11 token still unavailable");
                Err(e)
            }
        }
    }

    fn label_of(&self, state: &State) -> String {
        state
            .found
            .as_ref()
            .map(|f| f.label.clone())
            .unwrap_or_else(|| self.uri.token.clone().unwrap_or_default())
    }

    fn checkin(&self, session: Session, generation: u64) {
        let mut state = self.lock();
        if generation == state.generation {
            state.idle.push(session);
            drop(state);
            self.freed.notify_one();
        }
    }

    /// Drop a failed session and every idle one; the next checkout reconnects. Returns whether
    /// this is the first failure of its generation (the one worth logging).
    fn lost(&self, session: Session, generation: u64) -> bool {
        drop(session);
        let mut state = self.lock();
        if generation != state.generation {
            return false;
        }
        state.generation += 1;
        state.found = None;
        state.idle.clear();
        state.open = 0;
        state.retry_at = None;
        drop(state);
        self.set_available(false);
        self.freed.notify_all();
        true
    }

    /// Attributes of the key itself (`PRIVATE_KEY`) or of the object of `class` beside it
    /// (same id or label); empty when there is none or the token hides them.
    pub(super) fn attributes(
        &self,
        class: ObjectClass,
        types: &[AttributeType],
    ) -> Result<Vec<Attribute>, Pkcs11Error> {
        let template = self.template(class);
        self.with_session("get_attributes", |s, key| {
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

    /// The mechanisms the token lists (empty while it is away).
    pub(super) fn mechanisms(&self) -> Vec<MechanismType> {
        let Some(slot) = self.lock().found.as_ref().map(|f| f.slot) else { return Vec::new() };
        self.ctx.get_mechanism_list(slot).unwrap_or_default()
    }
}
