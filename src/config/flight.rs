//! `[flight]`: the Arrow Flight SQL endpoint, who may use it, and what one query may cost.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use super::{ClientAuth, ListenerCommon, loopback};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlightConfig {
    /// `false` turns the endpoint off.
    pub enabled: bool,
    pub address: SocketAddr,
    /// TLS with the daemon's server certificate; `false` only on a loopback address.
    pub tls: bool,
    pub max_connections: usize,
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// `none`, `optional` or `required`: client certificates; a verified certificate's
    /// principal runs the query when the call carries no `authorization` header.
    pub client_auth: ClientAuth,
    /// CAs for client certificates (default: `tls.client_ca_file`).
    pub client_ca_file: Option<PathBuf>,
    /// CRLs (default: `tls.crl_files`).
    pub crl_files: Option<Vec<PathBuf>>,
    /// Bearer tokens, stored as the SHA-256 of the token (`logwarden auth new-token` makes both).
    pub tokens: Vec<TokenConfig>,
    /// Basic-auth users, stored as password hashes (`logwarden auth hash-password`).
    pub users: Vec<UserConfig>,
    /// With no tokens and no users configured, a random token is created once in this file
    /// (mode 0600; default `data_dir/flight.token`) and is the only credential accepted.
    pub token_file: Option<PathBuf>,
    /// The first call must arrive within this of the TLS handshake.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no call in progress for this long, or no bytes moving during one,
    /// is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// HTTP/2 PING to the client this often; no answer within `keepalive_timeout` closes the
    /// connection (a client that went away without closing).
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    pub limits: QueryLimitsConfig,
    pub auth_limits: AuthLimitsConfig,
}

impl Default for FlightConfig {
    fn default() -> Self {
        FlightConfig {
            enabled: true,
            address: loopback(50051),
            tls: true,
            max_connections: 256,
            handshake_timeout: Duration::from_secs(10),
            client_auth: ClientAuth::None,
            client_ca_file: None,
            crl_files: None,
            tokens: Vec::new(),
            users: Vec::new(),
            token_file: None,
            header_read_timeout: super::default_header_read_timeout(),
            idle_timeout: Duration::from_secs(600),
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            limits: QueryLimitsConfig::default(),
            auth_limits: AuthLimitsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who the token belongs to (logged with each query).
    pub name: String,
    /// Lowercase hex SHA-256 of the token.
    pub sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// A PHC string: argon2 (`$argon2id$v=19$m=19456,t=2,p=1$...`) or PBKDF2-HMAC-SHA256
    /// (`$pbkdf2-sha256$i=600000,l=32$...`, what a FIPS build makes).
    pub password_hash: String,
}

impl FlightConfig {
    pub fn common(&self) -> ListenerCommon {
        ListenerCommon {
            name: "flight".into(),
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

/// What a single query may use; going over a limit fails that query with the limit named.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryLimitsConfig {
    /// Memory for sorts, joins and aggregations of one query (DataFusion memory pool).
    pub memory: ByteSize,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Queries running at once; more are refused with RESOURCE_EXHAUSTED.
    pub max_concurrent: usize,
    /// Rows one result may have.
    pub max_result_rows: u64,
}

impl Default for QueryLimitsConfig {
    fn default() -> Self {
        QueryLimitsConfig {
            memory: ByteSize::mib(512),
            timeout: Duration::from_secs(300),
            max_concurrent: 8,
            max_result_rows: 10_000_000,
        }
    }
}

/// What sign-in attempts may cost: password checks (slow on purpose) run on their own
/// threads, a few at a time, and an address that keeps failing is refused for a while.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthLimitsConfig {
    /// Password checks running at once, each on a thread of its own (never on the threads that
    /// serve ingest).
    pub password_checks: usize,
    /// Attempts that may wait for a check; more are refused at once with UNAVAILABLE.
    pub password_queue: usize,
    /// Failed sign-ins (wrong password, unknown user, bad token) one client address may have
    /// within `failure_window`; past it, its password attempts are refused unchecked with
    /// RESOURCE_EXHAUSTED until the oldest failure is older than the window. IPv6 addresses
    /// count per /64.
    pub max_failures: usize,
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
}

impl Default for AuthLimitsConfig {
    fn default() -> Self {
        AuthLimitsConfig {
            password_checks: 1,
            password_queue: 16,
            max_failures: 10,
            failure_window: Duration::from_secs(60),
        }
    }
}
