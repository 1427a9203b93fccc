//! TLS for every listener: the server's identity (PEM files, a PKCS#11 token, or the development
//! certificate generated on first start) and, per listener, the rustls configuration that adds
//! its ALPN and client-certificate checks.
//!
//! Listeners take a fresh `TlsAcceptor` from their [`ListenerTls`] for each connection, so a
//! reload of the CA bundle or CRLs (SIGHUP, or the files changing) applies to the next
//! handshake without restarting anything.

pub mod client_auth;
mod devcert;
pub mod identity;
pub mod pkcs11;
pub mod revalidate;

pub use devcert::{DevCertificate, ensure_dev_certificate};
pub use identity::{Principal, PrincipalError, PrincipalFrom, principal_of};
pub use pkcs11::Pkcs11Uri;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ResolvesServerCert;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::{ClientAuth, ClientTrust, TlsConfig};
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
    /// A client CA bundle or CRL that cannot be used.
    #[error("client certificate trust: {}: {reason}", path.display())]
    Trust { path: PathBuf, reason: String },
    #[error("client_auth needs a CA bundle: set client_ca_file on the listener or in [tls]")]
    NoClientCa,
    #[error(
        "tls.fips = true, but the TLS configuration of {what} is not in FIPS mode (cryptography: {module})"
    )]
    NotFips { what: String, module: &'static str },
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

/// The server's TLS identity, and every listener configuration made from it (for reloads).
#[derive(Clone)]
pub struct ServerTls {
    identity: Arc<Identity>,
    listeners: Arc<Mutex<Vec<Arc<ListenerTls>>>>,
    pkcs11_metrics: Option<Pkcs11Metrics>,
    /// Set when running on the generated development certificate.
    pub dev: Option<DevCertificate>,
}

/// The certificate chain and key every listener presents, replaced whole by a reload: the next
/// handshake on any listener gets the new one, established connections keep theirs.
#[derive(Debug)]
struct Identity(arc_swap::ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Identity {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

impl ServerTls {
    /// Build from the `[tls]` section; with no files configured, generate (once) and use the
    /// development certificate in `dev_dir`.
    pub fn load(
        cfg: &TlsConfig,
        dev_dir: &Path,
        pkcs11_metrics: Option<Pkcs11Metrics>,
    ) -> Result<Self, TlsError> {
        let (certified, dev) = Self::certified(cfg, dev_dir, pkcs11_metrics.clone())?;
        let identity = Arc::new(Identity(arc_swap::ArcSwap::from_pointee(certified)));
        Ok(ServerTls { identity, listeners: Arc::new(Mutex::new(Vec::new())), pkcs11_metrics, dev })
    }

    /// Read the certificate chain and key `cfg` names (rotation; SIGHUP), without using them
    /// yet: a reload prepares every part before it changes any.
    pub fn prepare_identity(&self, cfg: &TlsConfig, dev_dir: &Path) -> Result<PreparedIdentity, TlsError> {
        Ok(PreparedIdentity(Self::certified(cfg, dev_dir, self.pkcs11_metrics.clone())?.0))
    }

    /// Present a prepared identity: every listener's next handshake gets it, connections
    /// already established are untouched.
    pub fn install_identity(&self, prepared: PreparedIdentity) {
        let certified = prepared.0;
        let not_after = certified.end_entity_cert().ok().and_then(|c| {
            x509_parser::parse_x509_certificate(c).ok().map(|(_, c)| c.validity().not_after.to_string())
        });
        self.identity.0.store(Arc::new(certified));
        tracing::info!(
            not_after = not_after.as_deref().unwrap_or("?"),
            "server certificate reloaded; new handshakes use it"
        );
    }

    /// The certificate and key new handshakes get now (checkpoints of the seal are signed with it).
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.identity.0.load_full()
    }

    /// A certificate and key described as `[tls]` describes the server's (files, or a key on a
    /// PKCS#11 token): the seal's own signing key.
    pub fn load_key(
        cfg: &TlsConfig,
        pkcs11_metrics: Option<Pkcs11Metrics>,
    ) -> Result<Arc<CertifiedKey>, TlsError> {
        if cfg.key_file.is_none() && cfg.key.is_none() {
            return Err(TlsError::Key { path: PathBuf::new(), reason: "no key_file or key is set".into() });
        }
        // A dev directory is never used: a key is configured.
        Ok(Arc::new(Self::certified(cfg, Path::new(""), pkcs11_metrics)?.0))
    }

    /// The identity `cfg` describes, and the development certificate when it is that.
    fn certified(
        cfg: &TlsConfig,
        dev_dir: &Path,
        pkcs11_metrics: Option<Pkcs11Metrics>,
    ) -> Result<(CertifiedKey, Option<DevCertificate>), TlsError> {
        if let Some(key) = &cfg.key {
            return Ok((Self::load_token(cfg, key, pkcs11_metrics)?, None));
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
        let provider = crypto_provider();
        let certified = CertifiedKey::from_der(certs, key, &provider).map_err(|e| TlsError::Mismatch {
            certificate: cert_path.display().to_string(),
            uri: key_path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok((certified, dev))
    }

    /// The key on a PKCS#11 token; the certificate from `cert_file` or from the token.
    fn load_token(
        cfg: &TlsConfig,
        key: &str,
        metrics: Option<Pkcs11Metrics>,
    ) -> Result<CertifiedKey, TlsError> {
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
        Ok(certified)
    }

    /// The configuration of one listener: `alpn` protocols, its client-certificate checks and
    /// when it sends session tickets.
    pub fn listener(
        &self,
        name: &str,
        alpn: &[&[u8]],
        trust: ClientTrust,
        tickets: Tickets,
    ) -> Result<Arc<ListenerTls>, TlsError> {
        let stamp = client_auth::fingerprint(&trust);
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let resolver: Arc<dyn ResolvesServerCert> = self.identity.clone();
        let current = build_acceptor(name, &alpn, &resolver, trust, tickets, 0)?;
        let l = ListenerTls {
            name: name.to_owned(),
            alpn,
            resolver,
            tickets,
            current: RwLock::new(current),
            stamp: Mutex::new(stamp),
            in_use: Arc::default(),
        };
        let l = Arc::new(l);
        self.listeners.lock().unwrap_or_else(|e| e.into_inner()).push(l.clone());
        Ok(l)
    }

    /// Reread the CA bundles and CRLs of the listeners whose files changed (the trust
    /// watcher). A file that cannot be used keeps that listener on its previous trust.
    pub fn reload_changed_trust(&self) {
        for l in self.listeners() {
            let trust = l.trust();
            if trust.mode == ClientAuth::None {
                continue;
            }
            let stamp = client_auth::fingerprint(&trust);
            let mut old = l.stamp.lock().unwrap_or_else(|e| e.into_inner());
            if *old == stamp {
                continue;
            }
            match l.build(trust) {
                Ok(current) => {
                    *old = stamp;
                    drop(old);
                    l.install(current);
                }
                Err(e) => tracing::error!(
                    listener = %l.name, error = %e,
                    "client certificate trust not reloaded; the listener keeps the previous CA bundle and CRLs"
                ),
            }
        }
    }

    /// Every listener's trust read again (SIGHUP) as `trusts` (by listener name) now says,
    /// not yet in force: one file that cannot be used refuses the reload.
    pub fn prepare_trust(
        &self,
        trusts: &std::collections::BTreeMap<String, ClientTrust>,
    ) -> Result<PreparedTrust, TlsError> {
        let mut out = Vec::new();
        for l in self.listeners() {
            let old = l.trust();
            let trust = trusts.get(&l.name).cloned().unwrap_or_else(|| old.clone());
            if trust.mode == ClientAuth::None && old.mode == ClientAuth::None {
                continue;
            }
            let seen = l.stamp.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let stamp = client_auth::fingerprint(&trust);
            let current = l.build(trust)?;
            out.push(PreparedListener { listener: l, current, seen, stamp });
        }
        Ok(PreparedTrust(out))
    }

    /// Put prepared trust in force on every listener, but for one whose files the trust
    /// watcher reloaded since they were read: what it installed is newer.
    pub fn install_trust(&self, prepared: PreparedTrust) {
        for p in prepared.0 {
            let mut stamp = p.listener.stamp.lock().unwrap_or_else(|e| e.into_inner());
            if *stamp != p.seen && p.listener.trust() == p.current.trust {
                continue;
            }
            *stamp = p.stamp;
            drop(stamp);
            p.listener.install(p.current);
        }
    }

    fn listeners(&self) -> Vec<Arc<ListenerTls>> {
        self.listeners.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A server certificate and key read by [`ServerTls::prepare_identity`], not yet presented.
pub struct PreparedIdentity(CertifiedKey);

/// Client trust read by [`ServerTls::prepare_trust`], not yet in force.
pub struct PreparedTrust(Vec<PreparedListener>);

struct PreparedListener {
    listener: Arc<ListenerTls>,
    current: Current,
    /// The listener's trust files as last installed, when this was prepared.
    seen: client_auth::Fingerprint,
    /// What this was read from.
    stamp: client_auth::Fingerprint,
}

/// When a listener sends TLS 1.3 session tickets (TLS 1.2 sends them inside the handshake,
/// which every client reads, so it resumes either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tickets {
    /// Two after every handshake (rustls's default): request/response protocols (HTTP, gRPC),
    /// whose clients read the connection anyway.
    AfterHandshake,
    /// Only to a client that asks for them (RFC 9149 `ticket_request`): stream (syslog)
    /// listeners. A syslog client never reads its connection, so anything sent unasked stays
    /// unread in its socket; closing a socket with unread data sends a reset instead of a FIN,
    /// and the reset makes this side's kernel discard whatever logwarden had not read yet.
    OnRequest,
}

/// The most tickets a client gets by asking (RFC 9149), on any listener.
const MAX_REQUESTED_TICKETS: usize = 4;

/// One listener's TLS: rebuilt when its trust files change, read once per connection.
pub struct ListenerTls {
    name: String,
    alpn: Vec<Vec<u8>>,
    resolver: Arc<dyn ResolvesServerCert>,
    tickets: Tickets,
    current: RwLock<Current>,
    stamp: Mutex<client_auth::Fingerprint>,
    in_use: Arc<revalidate::InUse>,
}

/// A listener's acceptor, the client-certificate verifier inside it and the trust it was made
/// from; `generation` counts installs, so a handshake can tell whether trust changed under it.
struct Current {
    acceptor: TlsAcceptor,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    trust: ClientTrust,
    generation: u64,
}

impl ListenerTls {
    /// The acceptor for the next handshake, and the trust generation it belongs to (for
    /// [`ListenerTls::still_trusted`]).
    pub fn acceptor(&self) -> (TlsAcceptor, u64) {
        let c = self.current.read().unwrap_or_else(|e| e.into_inner());
        (c.acceptor.clone(), c.generation)
    }

    /// Whether a chain verified by the acceptor of `generation` is still accepted: trust
    /// reloaded during its handshake may have revoked it, and the reload's revalidation only
    /// saw the connections registered by then. Call it after registering the connection's
    /// claim ([`revalidate::InUse::claim`]), so that every reload either sees the claim or
    /// comes before this check.
    pub fn still_trusted(&self, generation: u64, chain: &revalidate::Chain) -> Result<(), rustls::Error> {
        let c = self.current.read().unwrap_or_else(|e| e.into_inner());
        let (Some(verifier), true) = (&c.verifier, c.generation != generation) else { return Ok(()) };
        let (leaf, intermediates) = chain.split_first().ok_or(rustls::Error::NoCertificatesPresented)?;
        verifier.verify_client_cert(leaf, intermediates, rustls::pki_types::UnixTime::now()).map(|_| ())
    }

    /// The client certificates in use on this listener, verified again at each trust reload.
    pub fn in_use(&self) -> &Arc<revalidate::InUse> {
        &self.in_use
    }

    /// The client-certificate settings in force.
    pub fn trust(&self) -> ClientTrust {
        self.current.read().unwrap_or_else(|e| e.into_inner()).trust.clone()
    }

    pub fn client_auth(&self) -> ClientAuth {
        self.trust().mode
    }

    /// Use `current` for the next handshakes; certificates in use that it no longer accepts
    /// end what they opened.
    fn install(&self, mut current: Current) {
        let verifier = current.verifier.clone();
        let trust = current.trust.clone();
        {
            let mut c = self.current.write().unwrap_or_else(|e| e.into_inner());
            current.generation = c.generation + 1;
            *c = current;
        }
        let ended = verifier.map_or(0, |v| self.in_use.revalidate(v.as_ref()));
        tracing::info!(
            listener = %self.name, client_auth = trust.mode.as_str(), ca_file = ?trust.ca_file,
            crl_files = ?trust.crl_files, connections_ended = ended,
            "client certificate trust reloaded; session tickets issued before are no longer accepted"
        );
    }

    fn build(&self, trust: ClientTrust) -> Result<Current, TlsError> {
        build_acceptor(&self.name, &self.alpn, &self.resolver, trust, self.tickets, 0)
    }
}

fn build_acceptor(
    name: &str,
    alpn: &[Vec<u8>],
    resolver: &Arc<dyn ResolvesServerCert>,
    trust: ClientTrust,
    tickets: Tickets,
    generation: u64,
) -> Result<Current, TlsError> {
    let provider = Arc::new(crypto_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let verifier = client_auth::verifier(&trust)?;
    let builder = match &verifier {
        Some(v) => builder.with_client_cert_verifier(v.clone()),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver.clone());
    // Resumption keeps reconnect storms cheap, and with a token-held key off the token: a
    // resumed handshake signs nothing. Each build has its own ticket key and session cache, so
    // a session verified against older CRLs (or on another listener) cannot resume.
    config.ticketer = ticketer()?;
    config.send_tls13_tickets = match tickets {
        Tickets::AfterHandshake => 2,
        Tickets::OnRequest => 0,
    };
    config.max_tls13_tickets = MAX_REQUESTED_TICKETS;
    config.alpn_protocols = alpn.to_vec();
    check_fips(&format!("the {name} listener"), config.fips())?;
    Ok(Current { acceptor: TlsAcceptor::from(Arc::new(config)), verifier, trust, generation })
}

/// The one cryptographic provider of this build: every TLS configuration (server, client, the
/// Flight SQL and alert clients), every signature check and the checkpoints' signatures use it.
pub fn crypto_provider() -> rustls::crypto::CryptoProvider {
    #[cfg(feature = "fips")]
    return rustls::crypto::default_fips_provider();
    #[cfg(not(feature = "fips"))]
    return rustls::crypto::ring::default_provider();
}

/// Set at start by `[tls] fips = true`: from then on every TLS configuration must be in FIPS
/// mode (see [`check_fips`]). One flag for the process, as the crypto provider is one.
static FIPS_REQUIRED: AtomicBool = AtomicBool::new(false);

/// `[tls] fips = true`: refuse, from now on, any TLS configuration not in FIPS mode.
pub fn require_fips() {
    FIPS_REQUIRED.store(true, Ordering::SeqCst);
}

/// Whether `[tls] fips = true` is in force (a reload cannot lift it: the key is restart-only).
pub fn fips_required() -> bool {
    FIPS_REQUIRED.load(Ordering::SeqCst)
}

/// `what`'s TLS configuration, which reports `fips` (rustls `ServerConfig::fips()`,
/// `ClientConfig::fips()`: the provider is the FIPS module's, with extended master secret
/// required): refused when not in FIPS mode and `[tls] fips = true`.
pub fn check_fips(what: &str, fips: bool) -> Result<(), TlsError> {
    if FIPS_REQUIRED.load(Ordering::SeqCst) && !fips {
        return Err(TlsError::NotFips { what: what.to_owned(), module: crate::crypto::MODULE });
    }
    Ok(())
}

/// Make the build's provider the process default, for what builds TLS configurations of its own
/// (tonic's client for `query --server`): called once, first thing.
pub fn install_crypto_provider() {
    // Fails only when one is installed already: the same one.
    let _ = rustls::crypto::CryptoProvider::install_default(crypto_provider());
}

/// Session ticket keys from the build's provider.
fn ticketer() -> Result<Arc<dyn rustls::server::ProducesTickets>, rustls::Error> {
    #[cfg(feature = "fips")]
    return rustls::crypto::aws_lc_rs::Ticketer::new();
    #[cfg(not(feature = "fips"))]
    return rustls::crypto::ring::Ticketer::new();
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

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{ClientConfig, ClientConnection, HandshakeKind, ServerConnection, SupportedProtocolVersion};

    fn listener(dir: &Path, tickets: Tickets) -> (Arc<ServerConfig>, PathBuf) {
        let tls = ServerTls::load(&TlsConfig::default(), dir, None).unwrap();
        let trust = ClientTrust {
            mode: ClientAuth::None,
            ca_file: None,
            crl_files: Vec::new(),
            crl_expired_grace: std::time::Duration::ZERO,
        };
        let l = tls.listener("syslog", &[], trust, tickets).unwrap();
        (l.acceptor().0.config().clone(), tls.dev.unwrap().ca_file)
    }

    fn client(ca: &Path, version: &'static SupportedProtocolVersion, ask: bool) -> Arc<ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(load_certs(ca).unwrap().remove(0)).unwrap();
        let provider = Arc::new(crypto_provider());
        let mut cfg = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        if ask {
            cfg.send_ticket_request =
                Some(rustls::client::TicketRequest { new_session_count: 2, resumption_count: 2 });
        }
        Arc::new(cfg)
    }

    /// One connection in memory, as a shipper makes it: the handshake, then the client's last
    /// flight reaches the server. Returns the bytes the server then sends that the client never
    /// needed to finish its handshake (and that a shipper, never reading, leaves unread), and
    /// whether the handshake resumed a session. Those bytes are handed to the client, as a
    /// client that reads would take them in.
    fn connect(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) -> (usize, bool) {
        let mut c = ClientConnection::new(client.clone(), "localhost".try_into().unwrap()).unwrap();
        let mut s = ServerConnection::new(server.clone()).unwrap();
        let mut wire = Vec::new();
        let c_to_s = |c: &mut ClientConnection, s: &mut ServerConnection, wire: &mut Vec<u8>| {
            wire.clear();
            while c.wants_write() {
                c.write_tls(wire).unwrap();
            }
            s.read_tls(&mut &wire[..]).unwrap();
            s.process_new_packets().unwrap();
        };
        let s_to_c = |s: &mut ServerConnection, c: &mut ClientConnection, wire: &mut Vec<u8>| {
            wire.clear();
            while s.wants_write() {
                s.write_tls(wire).unwrap();
            }
            let mut rest = &wire[..];
            while !rest.is_empty() {
                c.read_tls(&mut rest).unwrap();
                c.process_new_packets().unwrap();
            }
            wire.len()
        };
        while c.is_handshaking() {
            c_to_s(&mut c, &mut s, &mut wire);
            s_to_c(&mut s, &mut c, &mut wire);
        }
        c_to_s(&mut c, &mut s, &mut wire);
        assert!(!s.is_handshaking());
        let unasked = s_to_c(&mut s, &mut c, &mut wire);
        (unasked, c.handshake_kind() == Some(HandshakeKind::Resumed))
    }

    #[test]
    fn stream_listeners_send_nothing_after_a_tls13_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let (server, ca) = listener(dir.path(), Tickets::OnRequest);
        let client = client(&ca, &rustls::version::TLS13, false);
        assert_eq!(connect(&server, &client), (0, false));
        // Without a ticket there is no TLS 1.3 resumption: the next handshake is full.
        assert_eq!(connect(&server, &client), (0, false));
    }

    #[test]
    fn a_client_that_asks_for_tickets_gets_them_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let (server, ca) = listener(dir.path(), Tickets::OnRequest);
        let client = client(&ca, &rustls::version::TLS13, true);
        let (sent, resumed) = connect(&server, &client);
        assert!(sent > 0 && !resumed);
        let (sent, resumed) = connect(&server, &client);
        assert!(sent > 0 && resumed);
    }

    #[test]
    fn tls12_clients_resume_on_stream_listeners_with_nothing_sent_unasked() {
        let dir = tempfile::tempdir().unwrap();
        let (server, ca) = listener(dir.path(), Tickets::OnRequest);
        let client = client(&ca, &rustls::version::TLS12, false);
        assert_eq!(connect(&server, &client), (0, false));
        assert_eq!(connect(&server, &client), (0, true));
    }

    #[test]
    fn request_response_listeners_send_tickets_after_the_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let (server, ca) = listener(dir.path(), Tickets::AfterHandshake);
        let client = client(&ca, &rustls::version::TLS13, false);
        let (sent, resumed) = connect(&server, &client);
        assert!(sent > 0 && !resumed);
        let (sent, resumed) = connect(&server, &client);
        assert!(sent > 0 && resumed);
    }
}
