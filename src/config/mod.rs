//! The daemon's configuration: serde structs with embedded defaults, loading from TOML, and the
//! semantic checks behind `logwarden validate`.
//!
//! Every struct denies unknown keys and every key has a default, so an empty file (or no file)
//! is the embedded development configuration. Loading never stops at the first problem: see
//! [`load`] for how all of them are collected.

mod access;
mod detect;
mod flight;
mod load;
mod query;
mod restart;
mod rules;
mod seal;
mod storage;
mod validate;
mod validate_credentials;
mod validate_rules;

pub use access::{
    AccessConfig, ClientAuth, ClientTrust, IdentityConfig, PrincipalSource, QueryRule, SendRule,
};
pub use detect::{BaselineConfig, DetectConfig, Seasonality, TemplatesConfig};
pub use flight::{AuthLimitsConfig, FlightConfig, QueryLimitsConfig, TokenConfig, UserConfig};
pub use load::{ConfigError, Problem, load, load_str, load_str_except_rules, read, rules_from_str};
pub use query::{Engine, QueryConfig, scheduler_address};
pub use restart::restart_only_changes;
pub use rules::{AlertingConfig, ReceiverConfig, RuleConfig};
pub use seal::{SealConfig, SealExportConfig};
pub use storage::{ClusterConfig, Role, StorageConfig, StorageUrl, check_node_id};
pub use validate_rules::receiver_name;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

/// Top level of `logwarden.toml`. Relative paths are relative to the working directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the WAL, Parquet segments, manifest and development certificate live.
    pub data_dir: PathBuf,
    /// Deadline for a clean stop after SIGTERM/SIGINT; keep it below systemd's TimeoutStopSec.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    pub log: LogConfig,
    pub tls: TlsConfig,
    /// TLS (or loopback-only plain TCP) listeners for syslog and JSON lines.
    pub stream: Vec<StreamListenerConfig>,
    /// HTTPS ingest endpoints (`POST /v1/logs`: NDJSON and OTLP).
    pub http: Vec<HttpListenerConfig>,
    /// OTLP logs over gRPC (`LogsService/Export`).
    pub otlp: Vec<OtlpListenerConfig>,
    /// RELP (rsyslog's `omrelp`): every message answered once it is durable.
    pub relp: Vec<RelpListenerConfig>,
    pub admin: AdminConfig,
    /// Arrow Flight SQL for analysts (ADBC, JDBC, Grafana).
    pub flight: FlightConfig,
    /// Where SQL over `logs` runs (this process, or a Ballista cluster).
    pub query: QueryConfig,
    pub batch: BatchConfig,
    pub storage: StorageConfig,
    pub cluster: ClusterConfig,
    pub identity: IdentityConfig,
    pub access: AccessConfig,
    pub audit: AuditConfig,
    /// Tamper evidence: the hash chain over stored objects and its signed checkpoints.
    pub seal: SealConfig,
    pub detect: DetectConfig,
    /// Continuous SQL over the arriving events, each with its window and alert condition.
    pub rules: Vec<RuleConfig>,
    pub alerting: AlertingConfig,
    /// The text this config was loaded from (empty for the embedded defaults): a reload
    /// compares the settings only a restart applies with it.
    #[serde(skip)]
    pub source: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: default_data_dir(),
            shutdown_timeout: Duration::from_secs(20),
            log: LogConfig::default(),
            tls: TlsConfig::default(),
            stream: vec![StreamListenerConfig::default()],
            http: vec![HttpListenerConfig::default()],
            otlp: vec![OtlpListenerConfig::default()],
            relp: vec![RelpListenerConfig::default()],
            admin: AdminConfig::default(),
            flight: FlightConfig::default(),
            query: QueryConfig::default(),
            batch: BatchConfig::default(),
            storage: StorageConfig::default(),
            cluster: ClusterConfig::default(),
            identity: IdentityConfig::default(),
            access: AccessConfig::default(),
            audit: AuditConfig::default(),
            seal: SealConfig::default(),
            detect: DetectConfig::default(),
            rules: Vec::new(),
            alerting: AlertingConfig::default(),
            source: String::new(),
        }
    }
}

/// `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`) or `./logwarden-data`.
fn default_data_dir() -> PathBuf {
    match std::env::var_os("STATE_DIRECTORY") {
        // systemd passes a colon-separated list when several directories are configured.
        Some(dirs) if !dirs.is_empty() => {
            let first = dirs.to_string_lossy().split(':').next().unwrap_or("").to_owned();
            PathBuf::from(first)
        }
        _ => PathBuf::from("./logwarden-data"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter (`info`, `logwarden=debug,warn`); `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), format: LogFormat::Human }
    }
}

/// The server certificate and key. With none of `cert_file`, `key_file` and `key` set, a
/// development CA and certificate are generated in `data_dir/tls/` on first start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. With a token key it may be left out: the certificate
    /// is then read from the token (the object with the key's id or label).
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// The private key on a PKCS#11 token, as an RFC 7512 URI
    /// (`pkcs11:token=logwarden;object=server`). Exclusive with `key_file`.
    pub key: Option<String>,
    /// The PKCS#11 module (shared library) that drives the token.
    pub pkcs11_module: Option<PathBuf>,
    /// The token's user PIN: a file holding it (trailing newline ignored)...
    pub pin_file: Option<PathBuf>,
    /// ... or the name of a systemd credential (`$CREDENTIALS_DIRECTORY/<name>`,
    /// `LoadCredential=`/`LoadCredentialEncrypted=` in the unit) ...
    pub pin_credential: Option<String>,
    /// ... or the name of an environment variable.
    pub pin_env: Option<String>,
    /// Never accepted: present only so that `validate` can say why.
    pub pin: Option<toml::Value>,
    /// Logged-in sessions kept open on the token for signing (capped by the token's limit).
    pub pkcs11_sessions: usize,
    /// Refuse to start unless every TLS configuration is in FIPS mode (only FIPS-approved
    /// suites, groups and signature schemes, from the FIPS module): needs the FIPS build
    /// (`--features fips`); password hashes must then be PBKDF2 and segments may not go to a
    /// bucket (whose client is outside the module). Restart to change.
    pub fips: bool,
    /// CAs that issue client certificates (PEM bundle), for listeners with `client_auth` set
    /// and no `client_ca_file` of their own.
    pub client_ca_file: Option<PathBuf>,
    /// Certificate revocation lists (PEM or DER) checked for client certificates, unless a
    /// listener names its own.
    pub crl_files: Vec<PathBuf>,
    /// How often the CA and CRL files are checked for changes (SIGHUP reloads at once).
    #[serde(with = "humantime_serde")]
    pub trust_reload_interval: Duration,
    /// How long past its `nextUpdate` a CRL is still accepted. 0 (the default): an expired
    /// CRL refuses every certificate it covers (`crl_expired`), since it may miss revocations.
    #[serde(with = "humantime_serde")]
    pub crl_expired_grace: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: None,
            key_file: None,
            key: None,
            pkcs11_module: None,
            pin_file: None,
            pin_credential: None,
            pin_env: None,
            pin: None,
            pkcs11_sessions: 4,
            fips: false,
            client_ca_file: None,
            crl_files: Vec::new(),
            trust_reload_interval: Duration::from_secs(10),
            crl_expired_grace: Duration::ZERO,
        }
    }
}

impl TlsConfig {
    pub fn is_development(&self) -> bool {
        self.cert_file.is_none() && self.key_file.is_none() && self.key.is_none()
    }
}

/// Settings every listener shares.
///
/// (The listener structs repeat these fields rather than `#[serde(flatten)]` them, because
/// flatten disables `deny_unknown_fields`.)
#[derive(Debug, Clone)]
pub struct ListenerCommon {
    /// Label in metrics and in the `listener` column.
    pub name: String,
    pub address: SocketAddr,
    /// Plain TCP is allowed only when this is false *and* the address is loopback.
    pub tls: bool,
    pub max_connections: usize,
    /// A connection with no bytes for this long is closed.
    pub idle_timeout: Duration,
    /// A TLS handshake not finished within this is abandoned.
    pub handshake_timeout: Duration,
    pub client_auth: ClientAuth,
    pub client_ca_file: Option<PathBuf>,
    pub crl_files: Option<Vec<PathBuf>>,
}

fn yes() -> bool {
    true
}
fn default_max_connections() -> usize {
    1024
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl ListenerCommon {
    fn named(name: &str, address: SocketAddr) -> Self {
        ListenerCommon {
            name: name.into(),
            address,
            tls: true,
            max_connections: default_max_connections(),
            idle_timeout: default_idle_timeout(),
            handshake_timeout: default_handshake_timeout(),
            client_auth: ClientAuth::None,
            client_ca_file: None,
            crl_files: None,
        }
    }
}

/// Syslog (RFC 5425/6587 framing, RFC 5424/3164) and JSON lines over TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    #[serde(default = "yes")]
    pub tls: bool,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// `none`, `optional` or `required`: whether peers present a client certificate.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// CAs for client certificates on this listener (default: `tls.client_ca_file`).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// CRLs for this listener (default: `tls.crl_files`).
    #[serde(default)]
    pub crl_files: Option<Vec<PathBuf>>,
    /// Larger frames are rejected and counted in `logwarden_frames_rejected_total`.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: ByteSize,
}

fn default_max_frame_bytes() -> ByteSize {
    ByteSize::kib(64)
}

impl Default for StreamListenerConfig {
    fn default() -> Self {
        let c = ListenerCommon::named("syslog", loopback(6514));
        StreamListenerConfig {
            name: c.name,
            address: c.address,
            tls: c.tls,
            max_connections: c.max_connections,
            idle_timeout: c.idle_timeout,
            handshake_timeout: c.handshake_timeout,
            client_auth: c.client_auth,
            client_ca_file: c.client_ca_file,
            crl_files: c.crl_files,
            max_frame_bytes: default_max_frame_bytes(),
        }
    }
}

impl StreamListenerConfig {
    pub fn common(&self) -> ListenerCommon {
        ListenerCommon {
            name: self.name.clone(),
            address: self.address,
            tls: self.tls,
            max_connections: self.max_connections,
            idle_timeout: self.idle_timeout,
            handshake_timeout: self.handshake_timeout,
            client_auth: self.client_auth,
            client_ca_file: self.client_ca_file.clone(),
            crl_files: self.crl_files.clone(),
        }
    }
}

/// `POST /v1/logs` with an NDJSON body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    #[serde(default = "yes")]
    pub tls: bool,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// `none`, `optional` or `required`: whether peers present a client certificate.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// CAs for client certificates on this listener (default: `tls.client_ca_file`).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// CRLs for this listener (default: `tls.crl_files`).
    #[serde(default)]
    pub crl_files: Option<Vec<PathBuf>>,
    /// Request bodies above this (after decompression) are answered 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: ByteSize,
    /// A connection's first request head must arrive within this of its TLS handshake, and on
    /// HTTP/1.1 each next one within this of the previous answer.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Tokens shippers present in the `Authorization` header: Splunk HEC tokens (`Splunk T`),
    /// bearer tokens, Elasticsearch API keys (`ApiKey`, the token being `id:key`); SHA-256 in
    /// hex. The principal is `token:NAME`. With any credential here, `[access] send` rules
    /// are checked per request (the credential's principal, else the certificate's).
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Basic-auth users (Elasticsearch clients): password hashes; the principal is `user:NAME`.
    #[serde(default)]
    pub users: Vec<UserConfig>,
}

fn default_max_body_bytes() -> ByteSize {
    ByteSize::mib(16)
}

pub(crate) fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for HttpListenerConfig {
    fn default() -> Self {
        let c = ListenerCommon::named("http", loopback(8088));
        HttpListenerConfig {
            name: c.name,
            address: c.address,
            tls: c.tls,
            max_connections: c.max_connections,
            idle_timeout: c.idle_timeout,
            handshake_timeout: c.handshake_timeout,
            client_auth: c.client_auth,
            client_ca_file: c.client_ca_file,
            crl_files: c.crl_files,
            max_body_bytes: default_max_body_bytes(),
            header_read_timeout: default_header_read_timeout(),
            tokens: Vec::new(),
            users: Vec::new(),
        }
    }
}

impl HttpListenerConfig {
    pub fn common(&self) -> ListenerCommon {
        ListenerCommon {
            name: self.name.clone(),
            address: self.address,
            tls: self.tls,
            max_connections: self.max_connections,
            idle_timeout: self.idle_timeout,
            handshake_timeout: self.handshake_timeout,
            client_auth: self.client_auth,
            client_ca_file: self.client_ca_file.clone(),
            crl_files: self.crl_files.clone(),
        }
    }
}

/// OTLP logs over gRPC: OpenTelemetry Collectors' and SDKs' `otlp` exporters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    #[serde(default = "yes")]
    pub tls: bool,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// `none`, `optional` or `required`: whether peers present a client certificate.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// CAs for client certificates on this listener (default: `tls.client_ca_file`).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// CRLs for this listener (default: `tls.crl_files`).
    #[serde(default)]
    pub crl_files: Option<Vec<PathBuf>>,
    /// Larger export messages (after decompression) are refused (`INVALID_ARGUMENT`).
    #[serde(default = "default_max_body_bytes")]
    pub max_message_bytes: ByteSize,
    /// A connection's first call must arrive within this of its TLS handshake.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
}

impl Default for OtlpListenerConfig {
    fn default() -> Self {
        let c = ListenerCommon::named("otlp", loopback(4317));
        OtlpListenerConfig {
            name: c.name,
            address: c.address,
            tls: c.tls,
            max_connections: c.max_connections,
            idle_timeout: c.idle_timeout,
            handshake_timeout: c.handshake_timeout,
            client_auth: c.client_auth,
            client_ca_file: c.client_ca_file,
            crl_files: c.crl_files,
            max_message_bytes: default_max_body_bytes(),
            header_read_timeout: default_header_read_timeout(),
        }
    }
}

impl OtlpListenerConfig {
    pub fn common(&self) -> ListenerCommon {
        ListenerCommon {
            name: self.name.clone(),
            address: self.address,
            tls: self.tls,
            max_connections: self.max_connections,
            idle_timeout: self.idle_timeout,
            handshake_timeout: self.handshake_timeout,
            client_auth: self.client_auth,
            client_ca_file: self.client_ca_file.clone(),
            crl_files: self.crl_files.clone(),
        }
    }
}

/// RELP, the Reliable Event Logging Protocol of rsyslog's `omrelp`: each message is answered
/// once it is durable, and the client resends what was not answered after a reconnect.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelpListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    #[serde(default = "yes")]
    pub tls: bool,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A session with no complete frame for this long is closed.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A TLS handshake, and then the session's `open`, not done within this is abandoned.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// `none`, `optional` or `required`: whether peers present a client certificate.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// CAs for client certificates on this listener (default: `tls.client_ca_file`).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// CRLs for this listener (default: `tls.crl_files`).
    #[serde(default)]
    pub crl_files: Option<Vec<PathBuf>>,
    /// A frame announcing more data than this is refused, counted in
    /// `logwarden_frames_rejected_total`, and its connection closed.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: ByteSize,
    /// Frames read from one connection and not yet answered, at most; reading pauses there
    /// until their answers are written. The client proposes its own window (omrelp's
    /// `windowSize`, librelp's default 128) and RELP has no way to tell it ours, so this is
    /// set above what clients use: below a client's window it would cap that client's rate.
    #[serde(default = "default_relp_window")]
    pub window: usize,
}

fn default_relp_window() -> usize {
    1024
}

impl Default for RelpListenerConfig {
    fn default() -> Self {
        let c = ListenerCommon::named("relp", loopback(2514));
        RelpListenerConfig {
            name: c.name,
            address: c.address,
            tls: c.tls,
            max_connections: c.max_connections,
            idle_timeout: c.idle_timeout,
            handshake_timeout: c.handshake_timeout,
            client_auth: c.client_auth,
            client_ca_file: c.client_ca_file,
            crl_files: c.crl_files,
            max_frame_bytes: default_max_frame_bytes(),
            window: default_relp_window(),
        }
    }
}

impl RelpListenerConfig {
    pub fn common(&self) -> ListenerCommon {
        ListenerCommon {
            name: self.name.clone(),
            address: self.address,
            tls: self.tls,
            max_connections: self.max_connections,
            idle_timeout: self.idle_timeout,
            handshake_timeout: self.handshake_timeout,
            client_auth: self.client_auth,
            client_ca_file: self.client_ca_file.clone(),
            crl_files: self.crl_files.clone(),
        }
    }
}

/// `/metrics`, `/healthz`, `/readyz`: plain HTTP by default (on loopback), or HTTPS with the
/// daemon's certificate and key (the token key too) when `tls = true`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub address: SocketAddr,
    /// HTTPS with the `[tls]` certificate; Prometheus scrapes with `scheme: https`.
    pub tls: bool,
    /// `none`, `optional` or `required`: client certificates from the scraper (Prometheus'
    /// `tls_config` `cert_file`/`key_file`). Any certificate the CA issued is let in.
    pub client_auth: ClientAuth,
    /// CAs for client certificates (default: `tls.client_ca_file`).
    pub client_ca_file: Option<PathBuf>,
    /// CRLs (default: `tls.crl_files`).
    pub crl_files: Option<Vec<PathBuf>>,
    pub max_connections: usize,
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// The first request head must arrive within this of the connection (and of its TLS
    /// handshake); on HTTP/1.1 each next one within this of the previous answer.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no request for this long, or no bytes moving during one, is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            address: loopback(9898),
            tls: false,
            client_auth: ClientAuth::None,
            client_ca_file: None,
            crl_files: None,
            max_connections: 64,
            handshake_timeout: default_handshake_timeout(),
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

impl AdminConfig {
    pub fn common(&self) -> ListenerCommon {
        ListenerCommon {
            name: "admin".into(),
            address: self.address,
            tls: self.tls,
            max_connections: self.max_connections,
            idle_timeout: self.idle_timeout,
            handshake_timeout: self.handshake_timeout,
            client_auth: self.client_auth,
            client_ca_file: self.client_ca_file.clone(),
            crl_files: self.crl_files.clone(),
        }
    }
}

/// The audit trail's files (`data_dir/audit/audit-DATE.jsonl`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Day files older than this are deleted; unset (the default) keeps the trail for good.
    #[serde(with = "humantime_serde")]
    pub retention_max_age: Option<Duration>,
}

/// How arriving events are grouped before the WAL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// A batch is written when it holds this many rows...
    pub rows: usize,
    /// ...or when its first event has waited this long (stream data; a batch someone waits
    /// for is written as soon as the WAL is free).
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Decoded but not yet durable data above this makes listeners stop reading and HTTP answer 503.
    pub max_pending_bytes: ByteSize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { rows: 8192, linger: Duration::from_millis(50), max_pending_bytes: ByteSize::mib(256) }
    }
}

impl Config {
    pub fn wal_dir(&self) -> PathBuf {
        self.data_dir.join("wal")
    }
    pub fn segments_dir(&self) -> PathBuf {
        self.data_dir.join("segments")
    }
    pub fn dev_tls_dir(&self) -> PathBuf {
        self.data_dir.join("tls")
    }
    /// The generated Flight SQL token, when no credentials are configured.
    pub fn flight_token_file(&self) -> PathBuf {
        self.flight.token_file.clone().unwrap_or_else(|| self.data_dir.join("flight.token"))
    }
    /// The client-certificate settings of a listener, with `[tls]` defaults filled in.
    pub fn client_trust(&self, l: &ListenerCommon) -> ClientTrust {
        ClientTrust {
            mode: l.client_auth,
            ca_file: l.client_ca_file.clone().or_else(|| self.tls.client_ca_file.clone()),
            crl_files: l.crl_files.clone().unwrap_or_else(|| self.tls.crl_files.clone()),
            crl_expired_grace: self.tls.crl_expired_grace,
        }
    }
    /// Every listener shippers send to, with its key path (`stream[0]`, `http[1]`, `otlp[0]`,
    /// `relp[0]`).
    pub fn ingest_listeners(&self) -> impl Iterator<Item = (String, ListenerCommon)> + '_ {
        let stream = self.stream.iter().enumerate().map(|(i, l)| (format!("stream[{i}]"), l.common()));
        let http = self.http.iter().enumerate().map(|(i, l)| (format!("http[{i}]"), l.common()));
        let otlp = self.otlp.iter().enumerate().map(|(i, l)| (format!("otlp[{i}]"), l.common()));
        let relp = self.relp.iter().enumerate().map(|(i, l)| (format!("relp[{i}]"), l.common()));
        stream.chain(http).chain(otlp).chain(relp)
    }

    /// The client-certificate settings of every TLS listener, by listener name (what a reload
    /// applies to the running listeners).
    pub fn client_trusts(&self) -> std::collections::BTreeMap<String, ClientTrust> {
        let mut out = std::collections::BTreeMap::new();
        let all = self
            .ingest_listeners()
            .map(|(_, l)| l)
            .chain(self.flight.enabled.then(|| self.flight.common()))
            .chain(std::iter::once(self.admin.common()));
        for l in all.filter(|l| l.tls) {
            out.insert(l.name.clone(), self.client_trust(&l));
        }
        out
    }

    /// Audit files (`audit-YYYY-MM-DD.jsonl`), the `audit` table.
    pub fn audit_dir(&self) -> PathBuf {
        self.data_dir.join("audit")
    }
    /// The mined templates, kept across restarts.
    pub fn alerts_dir(&self) -> PathBuf {
        self.data_dir.join("alerts")
    }

    pub fn templates_file(&self) -> PathBuf {
        self.data_dir.join("templates.json")
    }
    /// Where the daemon writes the addresses it actually bound (useful with port 0).
    pub fn listeners_file(&self) -> PathBuf {
        self.data_dir.join("listeners.json")
    }
}
