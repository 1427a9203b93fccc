//! Who is asking: bearer tokens (kept as SHA-256 digests), basic credentials (password hashes), and
//! session tokens handed out by the Flight handshake.
//!
//! Every call carries an `authorization` header; the check runs before any service method and
//! leaves an [`Identity`] in the request's extensions. Client certificates will become a third
//! source of identity here.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use tonic::Status;
use tonic::metadata::MetadataMap;

use super::signin::{Failure, SignIn};
use crate::audit::Audit;
use crate::config::FlightConfig;
use crate::crypto::password::{PasswordHash, Users, UsersError};
use crate::metrics::Metrics;

/// How long a handshake session token, or a verified basic credential, stays valid.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest go first (a client that handshakes in a loop cannot grow it).
const MAX_SESSIONS: usize = 10_000;

/// The authenticated caller, available to every service method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub method: &'static str,
    /// The credentials' generation it was checked against: a session is not remembered for
    /// an identity checked before a reload that happened meanwhile.
    pub generation: u64,
    /// The client certificate that proved it (method `certificate`, and sessions started so):
    /// a session ends when a trust reload finds the certificate no longer valid.
    pub certificate: Option<crate::tls::revalidate::Chain>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("failed to read the Flight SQL token file {path}: {source}")]
    ReadToken { path: PathBuf, source: std::io::Error },
    #[error("failed to create the Flight SQL token file {path}: {source}")]
    WriteToken { path: PathBuf, source: std::io::Error },
    #[error("the Flight SQL token file {path} is empty")]
    EmptyToken { path: PathBuf },
    #[error("[[flight.users]] {0}")]
    Users(UsersError),
}

type Digest32 = [u8; 32];

pub struct Authenticator {
    /// Swapped whole (under the sessions lock) at a reload that changes them.
    creds: arc_swap::ArcSwap<Credentials>,
    sessions: Mutex<HashMap<Digest32, (Identity, Instant)>>,
    /// Password checks off the async workers, failures limited per address and audited.
    signin: SignIn,
}

/// Credentials read by [`Authenticator::prepare`], waiting to be installed.
pub struct PreparedCredentials(Credentials);

/// The principal of the token generated into `flight.token` when no credentials are
/// configured.
pub const GENERATED_TOKEN: &str = "token:token-file";

/// The configured (or generated) credentials.
struct Credentials {
    tokens: HashMap<Digest32, String>,
    users: Users,
    /// The token file in use when no credentials are configured.
    token_file: Option<PathBuf>,
    /// One more than the credentials it replaced: an identity checked against these carries it.
    generation: u64,
}

impl Credentials {
    fn from_config(cfg: &FlightConfig, token_file: &Path) -> Result<Credentials, AuthError> {
        let mut tokens: HashMap<Digest32, String> = cfg
            .tokens
            .iter()
            .filter_map(|t| Some((from_hex(&t.sha256)?, format!("token:{}", t.name))))
            .collect();
        let users = Users::parse(cfg.users.iter().map(|u| (u.name.as_str(), u.password_hash.as_str())))
            .map_err(AuthError::Users)?;
        let mut generated = None;
        if cfg.tokens.is_empty() && cfg.users.is_empty() {
            let token = load_or_create_token(token_file)?;
            tokens.insert(sha256(token.as_bytes()), GENERATED_TOKEN.into());
            generated = Some(token_file.to_path_buf());
        }
        Ok(Credentials { tokens, users, token_file: generated, generation: 0 })
    }

    /// The same tokens, users and token file (whatever the generation).
    fn same_as(&self, other: &Credentials) -> bool {
        self.tokens == other.tokens && self.users == other.users && self.token_file == other.token_file
    }

    /// What proves to be `name` (`token:NAME`, `user:NAME`): its token digests and password
    /// hash. A session of a name whose proof changed at a reload ends.
    fn proof(&self, name: &str) -> (Vec<&Digest32>, Option<&PasswordHash>) {
        let mut digests: Vec<&Digest32> =
            self.tokens.iter().filter(|(_, n)| *n == name).map(|(d, _)| d).collect();
        digests.sort();
        (digests, name.strip_prefix("user:").and_then(|user| self.users.get(user)))
    }
}

fn sha256(bytes: &[u8]) -> Digest32 {
    crate::crypto::sha256(bytes)
}

/// Lowercase hex SHA-256 of a secret, as the config stores tokens.
pub fn sha256_hex(secret: &str) -> String {
    sha256(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn from_hex(s: &str) -> Option<Digest32> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A new random token: 32 bytes, URL-safe base64.
pub fn new_token() -> String {
    let bytes: [u8; 32] = crate::crypto::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Authenticator {
    /// Credentials from the config; with none configured, the token in `token_file` (created
    /// with a new random token on first start). Returns the file when it is in use.
    pub fn new(cfg: &FlightConfig, token_file: &Path) -> Result<(Self, Option<PathBuf>), AuthError> {
        let creds = Credentials::from_config(cfg, token_file)?;
        let generated = creds.token_file.clone();
        let auth = Authenticator {
            creds: arc_swap::ArcSwap::from_pointee(creds),
            sessions: Mutex::new(HashMap::new()),
            signin: SignIn::new(&cfg.auth_limits),
        };
        Ok((auth, generated))
    }

    /// Count refused sign-ins in `metrics` and write them to `audit`.
    pub fn report_to(mut self, metrics: &Metrics, audit: Audit) -> Self {
        self.signin.report_to(metrics, audit);
        self
    }

    /// The credentials' current generation.
    pub fn generation(&self) -> u64 {
        self.creds.load().generation
    }

    /// Take the credentials of a reloaded config. Sessions (handshakes, remembered basic
    /// credentials) of a name whose token or password changed or went away end; others go on.
    /// True when anything changed.
    pub fn reload(&self, cfg: &FlightConfig, token_file: &Path) -> Result<bool, AuthError> {
        Ok(self.install(Self::prepare(cfg, token_file)?))
    }

    /// The credentials of `cfg`, read (the token file) but not yet in force.
    pub fn prepare(cfg: &FlightConfig, token_file: &Path) -> Result<PreparedCredentials, AuthError> {
        Ok(PreparedCredentials(Credentials::from_config(cfg, token_file)?))
    }

    /// Put prepared credentials in force (see [`Authenticator::reload`]).
    pub fn install(&self, prepared: PreparedCredentials) -> bool {
        let mut new = prepared.0;
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.creds.load_full();
        if old.same_as(&new) {
            return false;
        }
        let before = sessions.len();
        sessions.retain(|_, (id, _)| old.proof(&id.name) == new.proof(&id.name));
        let ended = before - sessions.len();
        // A check made against the old credentials carries the old generation: its session
        // is not remembered (see `remember`).
        new.generation = old.generation + 1;
        self.creds.store(std::sync::Arc::new(new));
        drop(sessions);
        tracing::info!(sessions_ended = ended, "Flight SQL credentials reloaded");
        true
    }

    /// Check the `authorization` header of a call from `peer`. Refusals are counted per client
    /// address, limited and audited (see [`SignIn`]).
    pub async fn authenticate(&self, md: &MetadataMap, peer: SocketAddr) -> Result<Identity, Status> {
        let malformed = |what: String| {
            self.signin.failed(peer, "none", None, Failure::Malformed);
            Status::unauthenticated(what)
        };
        let header = md
            .get("authorization")
            .ok_or_else(|| {
                Status::unauthenticated("no authorization header: send a bearer token or basic credentials")
            })?
            .to_str()
            .map_err(|_| malformed("authorization header is not ASCII".into()))?;
        let (scheme, value) = header.split_once(' ').unwrap_or((header, ""));
        let value = value.trim();
        // The whole Arc, not a guard: a password check awaits.
        let creds = self.creds.load_full();
        if scheme.eq_ignore_ascii_case("bearer") {
            let digest = sha256(value.as_bytes());
            if let Some(name) = creds.tokens.get(&digest) {
                return Ok(Identity {
                    name: name.clone(),
                    method: "token",
                    generation: creds.generation,
                    certificate: None,
                });
            }
            if let Some(id) = self.session(&digest, creds.generation) {
                return Ok(id);
            }
            self.signin.failed(peer, "token", None, Failure::BadToken);
            Err(Status::unauthenticated("invalid or expired bearer token"))
        } else if scheme.eq_ignore_ascii_case("basic") {
            self.check_basic(value, &creds, peer).await
        } else {
            Err(malformed(format!("unsupported authorization scheme {scheme:?}; use Bearer or Basic")))
        }
    }

    async fn check_basic(
        &self,
        value: &str,
        creds: &Credentials,
        peer: SocketAddr,
    ) -> Result<Identity, Status> {
        let bad = || Status::unauthenticated("invalid user name or password");
        // Password hashes are slow on purpose; a verified credential is remembered by its digest.
        let digest = sha256(format!("basic:{value}").as_bytes());
        if let Some(id) = self.session(&digest, creds.generation) {
            return Ok(id);
        }
        let decoded = STANDARD.decode(value).ok().and_then(|d| String::from_utf8(d).ok());
        let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
            self.signin.failed(peer, "basic", None, Failure::Malformed);
            return Err(bad());
        };
        self.signin.refuse_if_limited(peer, user)?;
        let (hash, known) = creds.users.hash_for(user);
        if !(self.signin.verify(hash, password.to_owned()).await? && known) {
            let why = if known { Failure::WrongPassword } else { Failure::UnknownUser };
            self.signin.failed(peer, "basic", Some(user), why);
            return Err(bad());
        }
        let id = Identity {
            name: format!("user:{user}"),
            method: "basic",
            generation: creds.generation,
            certificate: None,
        };
        self.remember(digest, id.clone());
        Ok(id)
    }

    /// A bearer token for the rest of a handshaken session.
    pub fn start_session(&self, id: &Identity) -> String {
        let token = new_token();
        let session = Identity { method: "session", ..id.clone() };
        self.remember(sha256(token.as_bytes()), session);
        token
    }

    fn session(&self, digest: &Digest32, generation: u64) -> Option<Identity> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        match sessions.get(digest) {
            Some((id, since)) if since.elapsed() < SESSION_TTL => Some(Identity { generation, ..id.clone() }),
            _ => None,
        }
    }

    /// End the sessions started with a client certificate that `check` now refuses (a
    /// reloaded CRL revoked it). Returns how many ended.
    pub fn end_sessions_failing(&self, check: crate::tls::revalidate::Check<'_>) -> usize {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let before = sessions.len();
        sessions.retain(|_, (id, _)| match &id.certificate {
            Some(chain) => match check(chain) {
                Ok(()) => true,
                Err(reason) => {
                    tracing::warn!(principal = %id.name, reason, "Flight SQL session ended: its client certificate no longer verifies");
                    false
                }
            },
            None => true,
        });
        before - sessions.len()
    }

    /// Remember a session, unless the credentials changed since `id` was checked (a reload
    /// ended the sessions it had to, and this one would escape it).
    fn remember(&self, digest: Digest32, id: Identity) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if id.generation != self.generation() {
            return;
        }
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, (_, since)| since.elapsed() < SESSION_TTL);
            if sessions.len() >= MAX_SESSIONS
                && let Some(oldest) = sessions.iter().min_by_key(|(_, (_, since))| *since).map(|(k, _)| *k)
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(digest, (id, Instant::now()));
    }
}

/// The token in `path`, or a new one written there with mode 0600.
fn load_or_create_token(path: &Path) -> Result<String, AuthError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim().to_owned();
            if token.is_empty() {
                return Err(AuthError::EmptyToken { path: path.into() });
            }
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = new_token();
            let err = |source| AuthError::WriteToken { path: path.into(), source };
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(err)?;
            f.write_all(format!("{token}\n").as_bytes()).map_err(err)?;
            f.sync_all().map_err(err)?;
            Ok(token)
        }
        Err(source) => Err(AuthError::ReadToken { path: path.into(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{TokenConfig, UserConfig};

    impl Authenticator {
        /// [`Authenticator::authenticate`] from a loopback peer, for tests that are not async.
        fn check(&self, md: &MetadataMap) -> Result<Identity, Status> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(self.authenticate(md, "127.0.0.1:1".parse().unwrap()))
        }
    }

    fn md(v: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", v.parse().unwrap());
        m
    }

    #[test]
    fn tokens_users_and_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = FlightConfig {
            tokens: vec![TokenConfig { name: "grafana".into(), sha256: sha256_hex("s3cret") }],
            users: vec![UserConfig {
                name: "alice".into(),
                password_hash: crate::crypto::password::hash_default("pw").unwrap(),
            }],
            ..FlightConfig::default()
        };
        let (auth, file) = Authenticator::new(&cfg, &dir.path().join("t")).unwrap();
        assert!(file.is_none());
        assert_eq!(auth.check(&md("Bearer s3cret")).unwrap().name, "token:grafana");
        assert!(auth.check(&md("Bearer nope")).is_err());
        assert!(auth.check(&MetadataMap::new()).is_err());
        let basic = STANDARD.encode("alice:pw");
        let id = auth.check(&md(&format!("Basic {basic}"))).unwrap();
        assert_eq!(id.name, "user:alice");
        assert!(auth.check(&md(&format!("Basic {}", STANDARD.encode("alice:wrong")))).is_err());
        let session = auth.start_session(&id);
        assert_eq!(auth.check(&md(&format!("Bearer {session}"))).unwrap().method, "session");
    }

    #[test]
    fn token_file_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flight.token");
        let (auth, file) = Authenticator::new(&FlightConfig::default(), &path).unwrap();
        assert_eq!(file.as_deref(), Some(path.as_path()));
        let token = std::fs::read_to_string(&path).unwrap().trim().to_owned();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(auth.check(&md(&format!("Bearer {token}"))).is_ok());
        let (again, _) = Authenticator::new(&FlightConfig::default(), &path).unwrap();
        assert!(again.check(&md(&format!("Bearer {token}"))).is_ok());
    }

    #[test]
    fn a_reload_revokes_changed_credentials_and_their_sessions_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        let cfg = FlightConfig {
            tokens: vec![
                TokenConfig { name: "grafana".into(), sha256: sha256_hex("s3cret") },
                TokenConfig { name: "ci".into(), sha256: sha256_hex("ci-token") },
            ],
            users: vec![UserConfig {
                name: "alice".into(),
                password_hash: crate::crypto::password::hash_default("pw").unwrap(),
            }],
            ..FlightConfig::default()
        };
        let (auth, _) = Authenticator::new(&cfg, &file).unwrap();
        let grafana_session = auth.start_session(&auth.check(&md("Bearer s3cret")).unwrap());
        let ci_session = auth.start_session(&auth.check(&md("Bearer ci-token")).unwrap());
        let basic = format!("Basic {}", STANDARD.encode("alice:pw"));
        assert!(auth.check(&md(&basic)).is_ok());
        assert!(!auth.reload(&cfg, &file).unwrap(), "the same config changes nothing");

        // grafana's token is replaced, ci's is untouched, alice's password is unchanged.
        let mut next = cfg.clone();
        next.tokens[0].sha256 = sha256_hex("rotated");
        assert!(auth.reload(&next, &file).unwrap());
        assert!(auth.check(&md("Bearer s3cret")).is_err(), "the old token still works");
        assert!(
            auth.check(&md(&format!("Bearer {grafana_session}"))).is_err(),
            "the old token's session lives on"
        );
        assert_eq!(auth.check(&md("Bearer rotated")).unwrap().name, "token:grafana");
        assert_eq!(auth.check(&md(&format!("Bearer {ci_session}"))).unwrap().name, "token:ci");
        assert!(auth.check(&md(&basic)).is_ok());

        // alice is removed: her remembered basic credential ends with her.
        next.users.clear();
        assert!(auth.reload(&next, &file).unwrap());
        assert!(auth.check(&md(&basic)).is_err());

        // A handshake checked before a reload and finished after it gets no session.
        let checked = auth.check(&md("Bearer rotated")).unwrap();
        next.tokens[0].sha256 = sha256_hex("rotated again");
        assert!(auth.reload(&next, &file).unwrap());
        let late = auth.start_session(&checked);
        assert!(auth.check(&md(&format!("Bearer {late}"))).is_err(), "a session escaped the reload");
    }
}
