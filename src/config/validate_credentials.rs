//! Checks of the basic credentials the front ends sign in with (`[flight]` and `[[http]]`
//! tokens and users): well formed, unique, and what FIPS mode asks of password hashes.

use std::collections::{BTreeSet, HashMap};

use super::{Config, Problem, TokenConfig, UserConfig};
use crate::crypto::password::PasswordHash;

impl Config {
    pub(super) fn validate_credentials(&self, out: &mut Vec<Problem>) {
        let fips = self.fips_strict();
        for (prefix, tokens, users) in self.front_ends() {
            check_credentials(out, &prefix, tokens, users, fips);
        }
    }

    /// Each front end with basic credentials, by its key prefix: `flight` (even with Flight
    /// SQL off in this file: a reload cannot turn it off, a restart does, and the running
    /// server takes these credentials), then each `http[i]`.
    fn front_ends(&self) -> impl Iterator<Item = (String, &[TokenConfig], &[UserConfig])> {
        let flight = ("flight".to_owned(), &self.flight.tokens[..], &self.flight.users[..]);
        let http =
            self.http.iter().enumerate().map(|(i, l)| (format!("http[{i}]"), &l.tokens[..], &l.users[..]));
        std::iter::once(flight).chain(http)
    }

    /// What [`Config::warnings`] says of password hashes.
    pub(super) fn credential_warnings(&self) -> Vec<Problem> {
        let mut out = self.unapproved_password_hashes();
        out.extend(self.mixed_password_costs());
        out
    }

    /// Users of one front end whose hashes cost different amounts to check: a user of a less
    /// common cost answers in another time than a name that does not exist (checked against
    /// a dummy of the most common cost).
    fn mixed_password_costs(&self) -> Vec<Problem> {
        self.front_ends()
            .filter_map(|(prefix, _, users)| {
                let costs: BTreeSet<String> =
                    users.iter().filter_map(|u| PasswordHash::parse(&u.password_hash).ok()).map(|h| h.cost()).collect();
                (costs.len() > 1).then(|| {
                    Problem::new(
                        format!("{prefix}.users"),
                        format!(
                            "the password hashes have {} different costs ({}): the time of a refused sign-in tells a user of a less common one from a name that does not exist; rehash them alike with logwarden auth hash-password",
                            costs.len(),
                            costs.into_iter().collect::<Vec<_>>().join("; ")
                        ),
                    )
                })
            })
            .collect()
    }

    /// `tls.fips = true` in this file, or in force in the running daemon (a reload that sets it
    /// to false does not apply it: the key needs a restart).
    fn fips_strict(&self) -> bool {
        self.tls.fips || crate::tls::fips_required()
    }

    /// In a FIPS build without `tls.fips = true` (which refuses them): password hashes whose
    /// algorithm FIPS does not approve (argon2), checked outside the FIPS module.
    fn unapproved_password_hashes(&self) -> Vec<Problem> {
        if !cfg!(feature = "fips") || self.tls.fips {
            return Vec::new();
        }
        self.front_ends()
            .flat_map(|(prefix, _, users)| {
                users.iter().enumerate().map(move |(j, u)| (format!("{prefix}.users[{j}]"), u))
            })
            .filter_map(|(key, u)| {
                let h = PasswordHash::parse(&u.password_hash).ok()?;
                (!h.scheme().fips_approved()).then(|| {
                    Problem::new(
                        format!("{key}.password_hash"),
                        format!(
                            "is an {} hash: not a FIPS-approved algorithm, so this FIPS build checks it outside the FIPS module; make a pbkdf2-sha256 one with logwarden auth hash-password (tls.fips = true refuses it)",
                            h.scheme().name()
                        ),
                    )
                })
            })
            .collect()
    }
}

/// `PREFIX.tokens` and `PREFIX.users`: digests and hashes well formed, names unique.
fn check_credentials(
    out: &mut Vec<Problem>,
    prefix: &str,
    tokens: &[TokenConfig],
    users: &[UserConfig],
    fips: bool,
) {
    let mut names: HashMap<&str, String> = HashMap::new();
    for (i, t) in tokens.iter().enumerate() {
        let key = format!("{prefix}.tokens[{i}]");
        if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            out.push(Problem::new(
                format!("{key}.sha256"),
                "must be the 64 lowercase hex digits of the token's SHA-256 (logwarden auth new-token prints it); never the token itself",
            ));
        }
        if let Some(other) = names.insert(&t.name, key.clone()) {
            out.push(Problem::new(
                format!("{key}.name"),
                format!("\"{}\" is already used by {other}", t.name),
            ));
        }
    }
    for (i, u) in users.iter().enumerate() {
        let key = format!("{prefix}.users[{i}]");
        match PasswordHash::parse(&u.password_hash) {
            Err(e) => out.push(Problem::new(
                format!("{key}.password_hash"),
                format!("{e}; make one with logwarden auth hash-password"),
            )),
            Ok(h) if fips && !h.scheme().fips_approved() => out.push(Problem::new(
                format!("{key}.password_hash"),
                format!(
                    "is an {} hash, not a FIPS-approved algorithm, and tls.fips = true: make a pbkdf2-sha256 one with logwarden auth hash-password",
                    h.scheme().name()
                ),
            )),
            Ok(_) => {}
        }
        if let Some(other) = names.insert(&u.name, key.clone()) {
            out.push(Problem::new(
                format!("{key}.name"),
                format!("\"{}\" is already used by {other}", u.name),
            ));
        }
    }
}
