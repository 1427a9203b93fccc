//! Semantic checks that types alone cannot express: plain TCP off loopback, clashing listener
//! names or addresses, certificate files that are missing or unreadable, zero-sized limits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use super::{ClientAuth, Config, ListenerCommon, Problem};
use crate::query::TABLES;
use crate::tls::Pkcs11Uri;
use crate::tls::identity::is_edipi;

/// Largest RELP window: beyond it one connection could hold more unanswered frames than any
/// client keeps (librelp's default is 128).
const MAX_RELP_WINDOW: usize = 65_536;

impl Config {
    /// The top-level keys the config file sets (none for the embedded defaults).
    fn declared_keys(&self) -> Vec<String> {
        match self.source.parse::<toml::Table>() {
            Ok(t) => t.keys().cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Every semantic problem, each with its key path. Empty means the config can run.
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        self.seal.validate(&mut out);
        let mut names: HashMap<String, String> = HashMap::new();
        let mut addrs: HashMap<SocketAddr, String> = HashMap::new();

        for (key, l) in self.ingest_listeners() {
            if l.name.is_empty() || !l.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)) {
                out.push(Problem::new(
                    format!("{key}.name"),
                    "must be non-empty and use only letters, digits, '-' and '_' (it is a metric label)",
                ));
            }
            if let Some(other) = names.insert(l.name.clone(), key.clone()) {
                out.push(Problem::new(
                    format!("{key}.name"),
                    format!("\"{}\" is already the name of {other}", l.name),
                ));
            }
            if l.address.port() != 0
                && let Some(other) = addrs.insert(l.address, key.clone())
            {
                out.push(Problem::new(
                    format!("{key}.address"),
                    format!("{} is already used by {other}", l.address),
                ));
            }
            if !l.tls && !l.address.ip().is_loopback() {
                out.push(Problem::new(
                    format!("{key}.tls"),
                    format!(
                        "plain TCP is only allowed on a loopback address, not {}; set tls = true or bind 127.0.0.1",
                        l.address
                    ),
                ));
            }
            if l.max_connections == 0 {
                out.push(Problem::new(format!("{key}.max_connections"), "must be at least 1"));
            }
            if l.handshake_timeout.is_zero() {
                out.push(Problem::new(format!("{key}.handshake_timeout"), "must be greater than 0"));
            }
            if l.idle_timeout.is_zero() {
                out.push(Problem::new(format!("{key}.idle_timeout"), "must be greater than 0"));
            }
            self.validate_client_auth(&mut out, &key, &l);
        }
        for (i, l) in self.stream.iter().enumerate() {
            if l.max_frame_bytes.as_u64() < 64 || l.max_frame_bytes.as_u64() > 64 << 20 {
                out.push(Problem::new(
                    format!("stream[{i}].max_frame_bytes"),
                    "must be between 64 B and 64 MiB",
                ));
            }
        }
        for (i, l) in self.http.iter().enumerate() {
            if l.max_body_bytes.as_u64() == 0 {
                out.push(Problem::new(format!("http[{i}].max_body_bytes"), "must be greater than 0"));
            }
            if l.header_read_timeout.is_zero() {
                out.push(Problem::new(format!("http[{i}].header_read_timeout"), "must be greater than 0"));
            }
        }
        for (i, l) in self.otlp.iter().enumerate() {
            if l.max_message_bytes.as_u64() == 0 || l.max_message_bytes.as_u64() > 1 << 30 {
                out.push(Problem::new(
                    format!("otlp[{i}].max_message_bytes"),
                    "must be between 1 B and 1 GiB",
                ));
            }
            if l.header_read_timeout.is_zero() {
                out.push(Problem::new(format!("otlp[{i}].header_read_timeout"), "must be greater than 0"));
            }
        }
        for (i, l) in self.relp.iter().enumerate() {
            if l.max_frame_bytes.as_u64() < 64 || l.max_frame_bytes.as_u64() > 64 << 20 {
                out.push(Problem::new(
                    format!("relp[{i}].max_frame_bytes"),
                    "must be between 64 B and 64 MiB",
                ));
            }
            if l.window == 0 || l.window > MAX_RELP_WINDOW {
                out.push(Problem::new(
                    format!("relp[{i}].window"),
                    format!("must be between 1 and {MAX_RELP_WINDOW}"),
                ));
            }
        }
        if self.admin.address.port() != 0
            && let Some(other) = addrs.get(&self.admin.address)
        {
            out.push(Problem::new(
                "admin.address",
                format!("{} is already used by {other}", self.admin.address),
            ));
        }
        let admin = self.admin.common();
        if admin.max_connections == 0 {
            out.push(Problem::new("admin.max_connections", "must be at least 1"));
        }
        if admin.handshake_timeout.is_zero() {
            out.push(Problem::new("admin.handshake_timeout", "must be greater than 0"));
        }
        if self.admin.header_read_timeout.is_zero() {
            out.push(Problem::new("admin.header_read_timeout", "must be greater than 0"));
        }
        if self.admin.idle_timeout.is_zero() {
            out.push(Problem::new("admin.idle_timeout", "must be greater than 0"));
        }
        self.validate_client_auth(&mut out, "admin", &admin);

        if self.flight.enabled {
            self.validate_flight(&mut out, &addrs);
        }

        self.validate_credentials(&mut out);
        self.validate_tls(&mut out);
        self.validate_access(&mut out);
        if self.batch.rows == 0 {
            out.push(Problem::new("batch.rows", "must be at least 1"));
        }
        if self.batch.linger.is_zero() {
            out.push(Problem::new("batch.linger", "must be greater than 0"));
        }
        if self.batch.max_pending_bytes.as_u64() < 1 << 20 {
            out.push(Problem::new("batch.max_pending_bytes", "must be at least 1 MiB"));
        }
        self.storage.validate(&self.data_dir, &mut out);
        let storage = self.storage.location(&self.data_dir).ok();
        let declared = self.declared_keys();
        let declared: Vec<&str> = declared.iter().map(String::as_str).collect();
        self.cluster.validate(storage.as_ref(), &declared, self.flight.enabled, &mut out);
        self.query.validate(storage.as_ref(), &mut out);
        if matches!(self.audit.retention_max_age, Some(d) if d < std::time::Duration::from_secs(24 * 3600)) {
            out.push(Problem::new(
                "audit.retention_max_age",
                "must be at least 1 day (audit files hold one day each); leave it out to keep them all",
            ));
        }
        if self.shutdown_timeout.is_zero() {
            out.push(Problem::new("shutdown_timeout", "must be greater than 0"));
        }
        if self.data_dir.as_os_str().is_empty() {
            out.push(Problem::new("data_dir", "must not be empty"));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            out.push(Problem::new("log.level", format!("is not a valid filter: {e}")));
        }
        self.validate_rules(&mut out);
        self.validate_alerting(&mut out);
        out
    }
}

/// The file must exist, be readable and hold at least one PEM block whose label contains `label`.
pub(super) fn check_pem(out: &mut Vec<Problem>, key: &str, path: &Path, label: &str) {
    match std::fs::read_to_string(path) {
        Err(e) => out.push(Problem::new(key, format!("cannot read {}: {e}", path.display()))),
        Ok(text) => {
            // The label exactly (`CERTIFICATE`, not `CERTIFICATE REQUEST` or `TRUSTED
            // CERTIFICATE`); a key's label may name its algorithm (`EC PRIVATE KEY`) but not
            // `ENCRYPTED PRIVATE KEY`, which nothing here can decrypt.
            let found = text
                .lines()
                .filter_map(|l| l.trim_end().strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
                .any(|l| {
                    if label == "PRIVATE KEY" {
                        l.ends_with(label) && !l.starts_with("ENCRYPTED")
                    } else {
                        l == label
                    }
                });
            if !found {
                out.push(Problem::new(key, format!("{} holds no PEM {label}", path.display())));
            }
        }
    }
}

/// A CRL file: readable, and PEM with an `X509 CRL` block or DER.
fn check_crl(out: &mut Vec<Problem>, key: &str, path: &Path) {
    match std::fs::read(path) {
        Err(e) => out.push(Problem::new(key, format!("cannot read {}: {e}", path.display()))),
        Ok(bytes) if bytes.first() == Some(&0x30) => {}
        Ok(bytes) => {
            if !String::from_utf8_lossy(&bytes).contains("-----BEGIN X509 CRL-----") {
                out.push(Problem::new(
                    key,
                    format!("{} holds no PEM X509 CRL (nor a DER CRL)", path.display()),
                ));
            }
        }
    }
}

impl Config {
    /// `client_auth` needs TLS and a CA bundle; the files must be usable.
    fn validate_client_auth(&self, out: &mut Vec<Problem>, key: &str, l: &ListenerCommon) {
        if let Some(ca) = &l.client_ca_file {
            check_pem(out, &format!("{key}.client_ca_file"), ca, "CERTIFICATE");
        }
        for (i, crl) in l.crl_files.iter().flatten().enumerate() {
            check_crl(out, &format!("{key}.crl_files[{i}]"), crl);
        }
        if l.client_auth == ClientAuth::None {
            return;
        }
        if !l.tls {
            out.push(Problem::new(
                format!("{key}.client_auth"),
                "client certificates need TLS: set tls = true or client_auth = \"none\"",
            ));
        }
        if self.client_trust(l).ca_file.is_none() {
            out.push(Problem::new(
                format!("{key}.client_ca_file"),
                format!(
                    "client_auth = \"{}\" needs the CAs that issue client certificates: set client_ca_file here or in [tls]",
                    l.client_auth.as_str()
                ),
            ));
        }
    }

    fn validate_access(&self, out: &mut Vec<Problem>) {
        if self.identity.principal_from.is_empty() {
            out.push(Problem::new("identity.principal_from", "must name at least one source"));
        }
        let a = &self.access;
        let check_principals = |out: &mut Vec<Problem>, key: String, principals: &[String]| {
            if principals.is_empty() {
                out.push(Problem::new(&key, "must name at least one principal, group:NAME or \"*\""));
            }
            for p in principals {
                check_principal_name(out, &key, p);
                if let Some(g) = p.strip_prefix("group:")
                    && !a.groups.contains_key(g)
                {
                    out.push(Problem::new(
                        &key,
                        format!("names group {g:?}, which [access.groups] does not define"),
                    ));
                }
            }
        };
        let listeners: Vec<String> = self.ingest_listeners().map(|(_, l)| l.name).collect();
        for (g, members) in &a.groups {
            for m in members {
                let key = format!("access.groups.{g}");
                if m.starts_with("group:") {
                    out.push(Problem::new(&key, format!("{m:?}: groups do not nest; list its members here")));
                }
                check_principal_name(out, &key, m);
            }
        }
        for (i, r) in a.send.iter().enumerate() {
            check_principals(out, format!("access.send[{i}].principals"), &r.principals);
            if r.listeners.is_empty() {
                out.push(Problem::new(
                    format!("access.send[{i}].listeners"),
                    "must name at least one listener or \"*\"",
                ));
            }
            for l in &r.listeners {
                if l != "*" && !listeners.contains(l) {
                    out.push(Problem::new(
                        format!("access.send[{i}].listeners"),
                        format!(
                            "{l:?} is not the name of a [[stream]], [[http]], [[otlp]] or [[relp]] listener (they are: {})",
                            listeners.join(", ")
                        ),
                    ));
                }
            }
        }
        for (i, r) in a.query.iter().enumerate() {
            check_principals(out, format!("access.query[{i}].principals"), &r.principals);
            if r.tables.is_empty() {
                out.push(Problem::new(
                    format!("access.query[{i}].tables"),
                    "must name at least one table or \"*\"",
                ));
            }
            let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
            for t in &r.tables {
                if t != "*" && !names.contains(&t.as_str()) {
                    out.push(Problem::new(
                        format!("access.query[{i}].tables"),
                        format!("{t:?} is not a table (tables: {}; or \"*\")", names.join(", ")),
                    ));
                }
            }
            if let Some(f) = &r.row_filter {
                check_row_filter(out, &format!("access.query[{i}].row_filter"), f, &r.tables);
            }
        }
    }

    fn validate_tls(&self, out: &mut Vec<Problem>) {
        let t = &self.tls;
        if let Some(ca) = &t.client_ca_file {
            check_pem(out, "tls.client_ca_file", ca, "CERTIFICATE");
        }
        for (i, crl) in t.crl_files.iter().enumerate() {
            check_crl(out, &format!("tls.crl_files[{i}]"), crl);
        }
        if t.trust_reload_interval.is_zero() {
            out.push(Problem::new("tls.trust_reload_interval", "must be greater than 0"));
        }
        if t.fips && !cfg!(feature = "fips") {
            out.push(Problem::new(
                "tls.fips",
                format!(
                    "this build's cryptography is {}, which has no FIPS 140-3 validation: build logwarden with `--no-default-features --features fips` for AWS-LC's FIPS module (its certificate status: docs/operations.md, Compliance)",
                    crate::crypto::MODULE
                ),
            ));
        }
        if t.fips && matches!(self.storage.location(&self.data_dir), Ok(super::StorageUrl::S3 { .. })) {
            out.push(Problem::new(
                "storage.url",
                "tls.fips = true, but the bucket's client (object_store) signs requests and makes TLS connections with ring, outside the FIPS module: keep segments in a directory",
            ));
        }
        if t.pin.is_some() {
            out.push(Problem::new(
                "tls.pin",
                "a PIN may not be written in the config; use pin_file, pin_credential (systemd credential) or pin_env",
            ));
        }
        let Some(key) = &t.key else {
            match (&t.cert_file, &t.key_file) {
                (Some(_), None) => {
                    out.push(Problem::new("tls.key_file", "is required when tls.cert_file is set"))
                }
                (None, Some(_)) => {
                    out.push(Problem::new("tls.cert_file", "is required when tls.key_file is set"))
                }
                (Some(cert), Some(key)) => {
                    check_pem(out, "tls.cert_file", cert, "CERTIFICATE");
                    check_pem(out, "tls.key_file", key, "PRIVATE KEY");
                }
                (None, None) => {}
            }
            for (k, set) in [
                ("tls.pkcs11_module", t.pkcs11_module.is_some()),
                ("tls.pin_file", t.pin_file.is_some()),
                ("tls.pin_credential", t.pin_credential.is_some()),
                ("tls.pin_env", t.pin_env.is_some()),
            ] {
                if set {
                    out.push(Problem::new(k, "only applies to a token key: set tls.key to a pkcs11: URI"));
                }
            }
            return;
        };
        if t.key_file.is_some() {
            out.push(Problem::new(
                "tls.key_file",
                "cannot be combined with tls.key (a pkcs11: URI); keep one",
            ));
        }
        match Pkcs11Uri::parse(key) {
            Err(e) => out.push(Problem::new("tls.key", e.to_string())),
            Ok(uri) => {
                if uri.has_pin_value {
                    out.push(Problem::new(
                        "tls.key",
                        "the URI carries pin-value; a PIN may not be written in the config, use pin_file, pin_credential or pin_env",
                    ));
                }
                if uri.object.is_none() && uri.id.is_none() {
                    out.push(Problem::new(
                        "tls.key",
                        "the URI must name the key with object= (label) or id=",
                    ));
                }
                if t.pkcs11_module.is_none() && uri.module_path.is_none() {
                    out.push(Problem::new(
                        "tls.pkcs11_module",
                        "is required with a token key (e.g. /usr/lib/softhsm/libsofthsm2.so), unless the URI has module-path",
                    ));
                }
            }
        }
        if let Some(m) = &t.pkcs11_module
            && !m.is_file()
        {
            out.push(Problem::new(
                "tls.pkcs11_module",
                format!("{} does not exist or is not a file", m.display()),
            ));
        }
        let sources = [t.pin_file.is_some(), t.pin_credential.is_some(), t.pin_env.is_some()];
        match sources.iter().filter(|s| **s).count() {
            0 => out.push(Problem::new(
                "tls.pin_file",
                "a token key needs its PIN from one of pin_file, pin_credential or pin_env",
            )),
            1 => {}
            _ => {
                out.push(Problem::new("tls.pin_file", "set only one of pin_file, pin_credential and pin_env"))
            }
        }
        if let Some(f) = &t.pin_file
            && let Err(e) = std::fs::metadata(f)
        {
            out.push(Problem::new("tls.pin_file", format!("cannot read {}: {e}", f.display())));
        }
        if let Some(c) = &t.cert_file {
            check_pem(out, "tls.cert_file", c, "CERTIFICATE");
        }
        if t.pkcs11_sessions == 0 {
            out.push(Problem::new("tls.pkcs11_sessions", "must be at least 1"));
        }
    }

    fn validate_flight(&self, out: &mut Vec<Problem>, addrs: &HashMap<SocketAddr, String>) {
        let f = &self.flight;
        if f.address.port() != 0
            && let Some(other) = addrs.get(&f.address)
        {
            out.push(Problem::new("flight.address", format!("{} is already used by {other}", f.address)));
        }
        if f.address.port() != 0 && f.address == self.admin.address {
            out.push(Problem::new("flight.address", format!("{} is already used by admin", f.address)));
        }
        if !f.tls && !f.address.ip().is_loopback() {
            out.push(Problem::new(
                "flight.tls",
                format!(
                    "plain gRPC is only allowed on a loopback address, not {}; set tls = true or bind 127.0.0.1",
                    f.address
                ),
            ));
        }
        if f.max_connections == 0 {
            out.push(Problem::new("flight.max_connections", "must be at least 1"));
        }
        self.validate_client_auth(out, "flight", &f.common());
        if f.handshake_timeout.is_zero() {
            out.push(Problem::new("flight.handshake_timeout", "must be greater than 0"));
        }
        let l = &f.limits;
        if l.memory.as_u64() < 1 << 20 {
            out.push(Problem::new("flight.limits.memory", "must be at least 1 MiB"));
        }
        if l.timeout.is_zero() {
            out.push(Problem::new("flight.limits.timeout", "must be greater than 0"));
        }
        if l.max_concurrent == 0 {
            out.push(Problem::new("flight.limits.max_concurrent", "must be at least 1"));
        }
        if l.max_result_rows == 0 {
            out.push(Problem::new("flight.limits.max_result_rows", "must be at least 1"));
        }
        for (key, d) in [
            ("flight.header_read_timeout", f.header_read_timeout),
            ("flight.idle_timeout", f.idle_timeout),
            ("flight.keepalive_interval", f.keepalive_interval),
            ("flight.keepalive_timeout", f.keepalive_timeout),
            ("flight.auth_limits.failure_window", f.auth_limits.failure_window),
        ] {
            if d.is_zero() {
                out.push(Problem::new(key, "must be greater than 0"));
            }
        }
        let a = &f.auth_limits;
        if a.password_checks == 0 {
            out.push(Problem::new("flight.auth_limits.password_checks", "must be at least 1"));
        }
        if !(1..=1000).contains(&a.max_failures) {
            out.push(Problem::new("flight.auth_limits.max_failures", "must be between 1 and 1000"));
        }
    }
}

/// A row filter must be one SQL condition over the columns of every table its rule names.
fn check_row_filter(out: &mut Vec<Problem>, key: &str, filter: &str, tables: &[String]) {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    use datafusion::sql::sqlparser::tokenizer::Token;
    let parsed = Parser::new(&GenericDialect {}).try_with_sql(filter).and_then(|mut p| {
        p.parse_expr()?;
        match p.peek_token().token {
            Token::EOF => Ok(()),
            t => Err(datafusion::sql::sqlparser::parser::ParserError::ParserError(format!(
                "unexpected {t} after the condition"
            ))),
        }
    });
    if let Err(e) = parsed {
        out.push(Problem::new(key, format!("is not a SQL condition: {e}")));
        return;
    }
    let state = datafusion::prelude::SessionContext::new().state();
    let every = tables.iter().any(|t| t == "*");
    let covers = |name: &str| every || tables.iter().any(|n| n == name);
    // A rule filtering `logs` withholds the tables that tell about all of it (see
    // `Access::query_grant`).
    let withheld =
        |t: &crate::query::ServedTable| t.reveals != crate::query::Reveals::Nothing && covers("logs");
    let applies = |t: &&crate::query::ServedTable| covers(t.name) && !withheld(t);
    for t in TABLES.iter().filter(applies) {
        let Ok(columns) = datafusion::common::DFSchema::try_from((t.schema)().as_ref().clone()) else {
            continue;
        };
        if let Err(e) = state.create_logical_expr(filter, &columns) {
            let hint = if every { "; name the tables it applies to instead of \"*\"" } else { "" };
            out.push(Problem::new(
                key,
                format!("does not apply to table {}: {}{hint}", t.name, e.strip_backtrace()),
            ));
        }
    }
}

/// A rule's entry that cannot mean what it says, so that it would lock out the principal
/// meant or match another: spaces or invisible characters around a name or its value (names
/// are compared exactly), a kind written in another case or with spaces (`EDIPI:…`,
/// `edipi :…`, taken for a bare name, would match a CN of that text), an empty value, an
/// EDIPI that is not ten digits.
fn check_principal_name(out: &mut Vec<Problem>, key: &str, name: &str) {
    let invisible =
        |c: char| c.is_control() || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2060}' | '\u{feff}');
    if name.trim() != name || name.chars().any(invisible) {
        out.push(Problem::new(
            key,
            format!(
                "{name:?} has spaces or invisible characters around it or in it; names are compared exactly"
            ),
        ));
        return;
    }
    let Some((prefix, value)) = name.split_once(':') else { return };
    let lower = prefix.trim().to_ascii_lowercase();
    let known = crate::access::PRINCIPAL_KINDS.contains(&lower.as_str()) || lower == "group";
    if known && prefix != lower {
        out.push(Problem::new(
            key,
            format!("{name:?}: kinds are written in lowercase, without spaces: \"{lower}:{}\"", value.trim()),
        ));
    } else if prefix.is_empty() || (known && value.is_empty()) {
        out.push(Problem::new(
            key,
            format!("{name:?} names no one: write KIND:VALUE, such as edipi:1234567890"),
        ));
    } else if known && value.trim() != value {
        out.push(Problem::new(
            key,
            format!("{name:?} has spaces after its kind; names are compared exactly"),
        ));
    } else if lower == "edipi" && !is_edipi(value) {
        out.push(Problem::new(key, format!("{name:?}: an EDIPI is ten digits")));
    }
}

/// An entry's prefix that looks like a kind but is none (`uid:alice`, `user_name:alice`): the
/// entry is then a bare name, matched against every kind's value.
fn unknown_kind(name: &str) -> Option<&str> {
    let (prefix, _) = name.split_once(':')?;
    let word = !prefix.is_empty()
        && prefix.chars().count() <= 16
        && prefix.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    let known = crate::access::PRINCIPAL_KINDS.iter().any(|k| k.eq_ignore_ascii_case(prefix))
        || prefix.eq_ignore_ascii_case("group");
    (word && !known).then_some(prefix)
}

impl Config {
    /// What loads and runs but is likely not what the operator meant: bare principal names in
    /// `[access]` that more than one kind of principal could carry (see `access::names`).
    pub fn warnings(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let a = &self.access;
        let entries = a
            .groups
            .iter()
            .map(|(g, members)| (format!("access.groups.{g}"), members))
            .chain(
                a.send
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (format!("access.send[{i}].principals"), &r.principals)),
            )
            .chain(
                a.query
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (format!("access.query[{i}].principals"), &r.principals)),
            );
        for (key, names) in entries {
            for name in names {
                if let Some(why) = self.names_no_credential(name) {
                    out.push(Problem::new(&key, why));
                    continue;
                }
                if name == "*" || name.starts_with("group:") || crate::access::kind_of(name).is_some() {
                    continue;
                }
                if let Some(prefix) = unknown_kind(name) {
                    out.push(Problem::new(
                        &key,
                        format!(
                            "{name:?}: {prefix:?} is not a kind of principal ({}); the entry is a bare name, matched against the value of every kind",
                            crate::access::PRINCIPAL_KINDS.join(", ")
                        ),
                    ));
                    continue;
                }
                let kinds = self.kinds_that_could_name(name);
                if kinds.len() > 1 {
                    let full: Vec<String> = kinds.iter().map(|k| format!("{k}:{name}")).collect();
                    out.push(Problem::new(
                        &key,
                        format!(
                            "{name:?} is a bare name: it matches a {} of that value alike; write the one meant ({})",
                            kinds.join(", a "),
                            full.join(", ")
                        ),
                    ));
                }
            }
        }
        out.extend(self.credential_warnings());
        out
    }

    /// Why `token:NAME` or `user:NAME` names no Flight SQL credential of this file (names
    /// are compared exactly: `user:Alice` is not `user:alice`).
    fn names_no_credential(&self, name: &str) -> Option<String> {
        let f = &self.flight;
        if let Some(user) = name.strip_prefix("user:") {
            let known = f.users.iter().any(|u| u.name == user);
            return (!known)
                .then(|| format!("{name:?} names no [[flight.users]] entry (names are compared exactly)"));
        }
        let token = name.strip_prefix("token:")?;
        let generated = f.tokens.is_empty()
            && f.users.is_empty()
            && Some(token) == crate::serve::flight::auth::GENERATED_TOKEN.strip_prefix("token:");
        let known = generated || f.tokens.iter().any(|t| t.name == token);
        (!known).then(|| format!("{name:?} names no [[flight.tokens]] entry (names are compared exactly)"))
    }

    /// The kinds of principal whose value could be `name`.
    fn kinds_that_could_name(&self, name: &str) -> Vec<&'static str> {
        let hostname =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        let mut kinds: Vec<&'static str> = self
            .identity
            .principal_from
            .iter()
            .map(|s| s.as_str())
            .filter(|k| match *k {
                "edipi" => is_edipi(name),
                "upn" | "email" => name.contains('@'),
                "dns" => hostname,
                "dn" => name.contains('='),
                // A CN of ten digits is refused (it would pass for an EDIPI).
                "cn" => !is_edipi(name),
                _ => true,
            })
            .collect();
        if self.flight.tokens.iter().any(|t| t.name == name) {
            kinds.push("token");
        }
        if self.flight.users.iter().any(|u| u.name == name) {
            kinds.push("user");
        }
        kinds
    }
}
