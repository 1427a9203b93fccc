//! Who a peer is and what it may do: client-certificate checks per listener, how a certificate
//! becomes a principal (`[identity]`), and the allow rules of `[access]`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// Whether a TLS listener asks for a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No certificate requested; peers are anonymous (or authenticate otherwise, e.g. Flight tokens).
    #[default]
    None,
    /// A certificate is requested and, when sent, must verify; peers without one are anonymous.
    Optional,
    /// The handshake fails without a certificate that verifies.
    Required,
}

impl ClientAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "required",
        }
    }
}

/// One source of a principal in a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalSource {
    /// The EDIPI: the 10 digits ending a DoD-style CN such as `DOE.JOHN.A.1234567890`.
    Edipi,
    /// SAN otherName UPN (1.3.6.1.4.1.311.20.2.3), e.g. `1234567890@mil` on PIV certificates.
    Upn,
    /// SAN rfc822Name, else the subject's emailAddress attribute.
    Email,
    /// The first SAN dNSName (host certificates of shippers).
    Dns,
    /// The subject's most specific common name.
    Cn,
    /// The whole subject DN in RFC 4514 form (`CN=...,OU=...,O=...,C=US`).
    Dn,
}

impl PrincipalSource {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalSource::Edipi => "edipi",
            PrincipalSource::Upn => "upn",
            PrincipalSource::Email => "email",
            PrincipalSource::Dns => "dns",
            PrincipalSource::Cn => "cn",
            PrincipalSource::Dn => "dn",
        }
    }
}

/// `[identity]`: how a verified client certificate becomes the principal stamped on events as
/// `client_id` and checked against `[access]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Tried in order; the first source the certificate has gives the principal.
    pub principal_from: Vec<PrincipalSource>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        use PrincipalSource::*;
        IdentityConfig { principal_from: vec![Edipi, Upn, Email, Dns, Cn, Dn] }
    }
}

/// `[access]`: allow rules. With no `send` rule every peer that passes the listener's TLS
/// checks may send; once one exists, only principals a rule names may send, and the same holds
/// for `query` rules and SQL.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Named sets of principals, referred to as `group:NAME` in rules.
    pub groups: BTreeMap<String, Vec<String>>,
    pub send: Vec<SendRule>,
    pub query: Vec<QueryRule>,
}

/// Principals that may send to listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRule {
    /// Principals, `group:NAME`, or `*` (anyone, including peers without a certificate).
    pub principals: Vec<String>,
    /// Stream and HTTP listener names, or `*`.
    pub listeners: Vec<String>,
}

/// Principals that may query tables, optionally only some rows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRule {
    pub principals: Vec<String>,
    /// Table names (`logs`, `audit`, `templates`, `alerts`, `rule_results`), or `*` for all.
    /// The last three are derived from every row of `logs` and are withheld from a principal
    /// whose `logs` grant has a row filter.
    pub tables: Vec<String>,
    /// A SQL condition on the table's columns the daemon adds to every scan of these tables for
    /// these principals, e.g. `host LIKE 'web-%'`.
    pub row_filter: Option<String>,
}

/// The client-certificate settings of one listener, with `[tls]` defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTrust {
    pub mode: ClientAuth,
    /// PEM bundle of the CAs that issue client certificates.
    pub ca_file: Option<PathBuf>,
    /// PEM (or DER) certificate revocation lists.
    pub crl_files: Vec<PathBuf>,
    /// How long past its `nextUpdate` a CRL still counts (`tls.crl_expired_grace`).
    pub crl_expired_grace: std::time::Duration,
}
