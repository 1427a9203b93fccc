//! Credentials shippers present in HTTP headers, per HTTPS ingest listener (`[[http]] tokens`
//! and `users`): Splunk HEC tokens (`Authorization: Splunk T`), bearer tokens, Elasticsearch
//! API keys (`ApiKey base64(id:key)`; the configured token is `id:key`), and basic-auth users
//! (Elasticsearch clients; HEC clients that put the token in the password). Tokens are kept as
//! SHA-256 digests; passwords as password hashes (argon2, or PBKDF2 in a FIPS build: see
//! [`crate::crypto::password`]), checked off the async workers with the failure
//! limits of Flight SQL sign-ins (`[flight.auth_limits]`, counted separately), and a verified
//! user and password remembered by digest for 15 minutes, so a shipper sending basic auth on
//! every request pays the hash once. The principal (`token:NAME`, `user:NAME`) is what
//! `[access] send` rules name.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;

use crate::config::{AuthLimitsConfig, TokenConfig, UserConfig};
use crate::crypto::password::Users;
use crate::serve::flight::signin::{Failure, SignIn};

type Digest32 = [u8; 32];

/// How long a verified user and password are taken without another hash check.
const VERIFIED_FOR: Duration = Duration::from_secs(15 * 60);
/// Verified passwords remembered at most (then forgotten all at once: each costs one check).
const MAX_VERIFIED: usize = 4096;

/// What a request's `Authorization` header holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented {
    None,
    /// `Splunk`, `Bearer` or `ApiKey` (decoded to `id:key`).
    Token(String),
    Basic {
        user: String,
        password: String,
    },
    /// A header that is none of those, or does not decode.
    Malformed(&'static str),
}

impl Presented {
    /// How the client tried to authenticate, for the audit trail's `auth`.
    pub fn method(&self) -> &'static str {
        match self {
            Presented::None => "none",
            Presented::Token(_) => "token",
            Presented::Basic { .. } => "basic",
            Presented::Malformed(_) => "malformed",
        }
    }

    /// The user a basic `Authorization` names (`user:NAME`, made printable), claimed and not
    /// proved; never the token or password.
    pub fn claimed(&self) -> Option<String> {
        match self {
            Presented::Basic { user, .. } => {
                Some(format!("user:{}", crate::serve::flight::signin::printable(user)))
            }
            _ => None,
        }
    }

    pub fn from_headers(headers: &HeaderMap) -> Presented {
        let Some(value) = headers.get(AUTHORIZATION) else { return Presented::None };
        let Ok(value) = value.to_str() else {
            return Presented::Malformed("the Authorization header is not text");
        };
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        match scheme.to_ascii_lowercase().as_str() {
            "splunk" | "bearer" if !rest.is_empty() => Presented::Token(rest.to_owned()),
            "apikey" => match STANDARD.decode(rest).ok().and_then(|b| String::from_utf8(b).ok()) {
                Some(key) if key.contains(':') => Presented::Token(key),
                _ => Presented::Malformed("an ApiKey is base64 of id:key"),
            },
            "basic" => match STANDARD.decode(rest).ok().and_then(|b| String::from_utf8(b).ok()) {
                Some(pair) => match pair.split_once(':') {
                    Some((user, password)) => {
                        Presented::Basic { user: user.to_owned(), password: password.to_owned() }
                    }
                    None => Presented::Malformed("basic credentials are base64 of user:password"),
                },
                None => Presented::Malformed("basic credentials are base64 of user:password"),
            },
            _ => Presented::Malformed("the Authorization scheme is not Splunk, Bearer, ApiKey or Basic"),
        }
    }
}

/// Why credentials were refused: the `reason` label of `logwarden_ingest_auth_failures_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    Malformed(&'static str),
    /// A token no `tokens` entry has.
    BadToken,
    /// A user that does not exist, or the wrong password.
    BadPassword,
    /// The address used up its failures: retry later (the message says when).
    Limited(String),
    /// Password checks are all busy.
    Busy,
}

impl AuthFailure {
    pub fn label(&self) -> &'static str {
        match self {
            AuthFailure::Malformed(_) => "malformed",
            AuthFailure::BadToken => "bad_token",
            AuthFailure::BadPassword => "wrong_password",
            AuthFailure::Limited(_) => "rate_limited",
            AuthFailure::Busy => "busy",
        }
    }
}

impl std::fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthFailure::Malformed(why) => f.write_str(why),
            AuthFailure::BadToken => f.write_str("the token is not valid"),
            AuthFailure::BadPassword => f.write_str("the user name or password is not valid"),
            AuthFailure::Limited(why) => f.write_str(why),
            AuthFailure::Busy => f.write_str("too many password checks are waiting; retry in a moment"),
        }
    }
}

pub struct Credentials {
    tokens: HashMap<Digest32, String>,
    users: Users,
    verified: Mutex<HashMap<Digest32, (String, Instant)>>,
    signin: Option<SignIn>,
}

fn sha256(bytes: &[u8]) -> Digest32 {
    crate::crypto::sha256(bytes)
}

impl Credentials {
    pub fn new(
        tokens: &[TokenConfig],
        users: &[UserConfig],
        limits: &AuthLimitsConfig,
    ) -> Result<Self, String> {
        let tokens = tokens
            .iter()
            .filter_map(|t| {
                Some((crate::serve::flight::auth::from_hex(&t.sha256)?, format!("token:{}", t.name)))
            })
            .collect();
        let users = Users::parse(users.iter().map(|u| (u.name.as_str(), u.password_hash.as_str())))
            .map_err(|e| e.to_string())?;
        let signin = (!users.is_empty()).then(|| SignIn::new(limits).named("HTTP ingest"));
        Ok(Credentials { tokens, users, verified: Mutex::new(HashMap::new()), signin })
    }

    /// Whether any credential is configured (else headers are not looked at, but for HEC).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.users.is_empty()
    }

    /// The principal `presented` proves (`None` when nothing was presented).
    pub async fn check(&self, presented: Presented, peer: SocketAddr) -> Result<Option<String>, AuthFailure> {
        match presented {
            Presented::None => Ok(None),
            Presented::Malformed(why) => Err(AuthFailure::Malformed(why)),
            Presented::Token(t) => self.token(&t).map(Some).ok_or(AuthFailure::BadToken),
            Presented::Basic { user, password } => {
                // HEC clients put the token in the password (any user name).
                if let Some(p) = self.token(&password) {
                    return Ok(Some(p));
                }
                self.password(&user, password, peer).await.map(Some)
            }
        }
    }

    /// Whether `secret` is one of the listener's tokens.
    pub fn is_token(&self, secret: &str) -> bool {
        self.token(secret).is_some()
    }

    fn token(&self, secret: &str) -> Option<String> {
        self.tokens.get(&sha256(secret.as_bytes())).cloned()
    }

    async fn password(&self, user: &str, password: String, peer: SocketAddr) -> Result<String, AuthFailure> {
        let Some(signin) = &self.signin else {
            return Err(AuthFailure::BadPassword);
        };
        let mut key = crate::crypto::Sha256::new();
        key.update(user.as_bytes());
        key.update(&[0]);
        key.update(password.as_bytes());
        let key: Digest32 = key.finish();
        {
            let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((principal, at)) = verified.get(&key)
                && at.elapsed() < VERIFIED_FOR
            {
                return Ok(principal.clone());
            }
        }
        signin.refuse_if_limited(peer, user).map_err(|s| AuthFailure::Limited(s.message().to_owned()))?;
        let (hash, known) = self.users.hash_for(user);
        let ok = signin.verify(hash, password).await.map_err(|_| AuthFailure::Busy)?;
        if !(ok && known) {
            let why = if known { Failure::WrongPassword } else { Failure::UnknownUser };
            signin.failed(peer, "basic", Some(user), why);
            return Err(AuthFailure::BadPassword);
        }
        let principal = format!("user:{user}");
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= MAX_VERIFIED {
            verified.clear();
        }
        verified.insert(key, (principal.clone(), Instant::now()));
        Ok(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn schemes() {
        assert_eq!(Presented::from_headers(&HeaderMap::new()), Presented::None);
        assert_eq!(Presented::from_headers(&headers("Splunk abc")), Presented::Token("abc".into()));
        assert_eq!(Presented::from_headers(&headers("Bearer abc")), Presented::Token("abc".into()));
        let key = STANDARD.encode("id1:secret");
        assert_eq!(
            Presented::from_headers(&headers(&format!("ApiKey {key}"))),
            Presented::Token("id1:secret".into())
        );
        let basic = STANDARD.encode("fb:pw:with:colons");
        assert_eq!(
            Presented::from_headers(&headers(&format!("Basic {basic}"))),
            Presented::Basic { user: "fb".into(), password: "pw:with:colons".into() }
        );
        for bad in ["Splunk", "Digest x", "Basic !!!", "ApiKey bm9jb2xvbg=="] {
            assert!(matches!(Presented::from_headers(&headers(bad)), Presented::Malformed(_)), "{bad}");
        }
    }

    #[tokio::test]
    async fn tokens_and_passwords() {
        let hash = crate::crypto::password::hash_default("pw").unwrap();
        let c = Credentials::new(
            &[TokenConfig { name: "fw".into(), sha256: crate::serve::flight::auth::sha256_hex("t0k") }],
            &[UserConfig { name: "fb".into(), password_hash: hash }],
            &AuthLimitsConfig::default(),
        )
        .unwrap();
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(c.check(Presented::Token("t0k".into()), peer).await, Ok(Some("token:fw".into())));
        assert_eq!(c.check(Presented::Token("nope".into()), peer).await, Err(AuthFailure::BadToken));
        let basic = |u: &str, p: &str| Presented::Basic { user: u.into(), password: p.into() };
        assert_eq!(c.check(basic("fb", "pw"), peer).await, Ok(Some("user:fb".into())));
        // Remembered: the second costs no check (and still needs the right password).
        assert_eq!(c.check(basic("fb", "pw"), peer).await, Ok(Some("user:fb".into())));
        assert_eq!(c.check(basic("fb", "wrong"), peer).await, Err(AuthFailure::BadPassword));
        assert_eq!(c.check(basic("ghost", "pw"), peer).await, Err(AuthFailure::BadPassword));
        assert_eq!(c.check(basic("x", "t0k"), peer).await, Ok(Some("token:fw".into())));
    }
}
