//! Password hashes for basic credentials (`[[flight.users]]`, `[[http]] users`), kept as PHC
//! strings. Two schemes are checked: argon2 (what the default build makes) and
//! PBKDF2-HMAC-SHA256 (what the FIPS build makes: argon2 is not a FIPS-approved algorithm,
//! PBKDF2 is, per NIST SP 800-132, and it is computed by the build's crypto module).
//!
//! A PBKDF2 hash is written as `$pbkdf2-sha256$i=ITERATIONS,l=LENGTH$SALT$HASH`, salt and hash
//! in unpadded standard base64 (the PHC string format, as the `pbkdf2` crate writes it).

use std::num::NonZeroU32;

use argon2::password_hash::{self, Ident, ParamsString, PasswordHasher, PasswordVerifier, SaltString};

/// PBKDF2 rounds a new hash gets: OWASP's figure for PBKDF2-HMAC-SHA256 (2023).
pub const PBKDF2_ITERATIONS: NonZeroU32 = NonZeroU32::new(600_000).unwrap();
/// The fewest rounds a PBKDF2 hash may have (SP 800-132 asks for at least 1000).
const PBKDF2_MIN_ITERATIONS: u32 = 1_000;
/// The most: one check must not take the password threads for minutes.
const PBKDF2_MAX_ITERATIONS: u32 = 20_000_000;
/// The shortest salt (SP 800-132: at least 128 bits).
const MIN_SALT: usize = 16;
/// The shortest derived key compared.
const MIN_OUTPUT: usize = 16;
/// The most an argon2 check may cost: 256 MiB, 10 passes, 8 lanes (the default is 19 MiB, 2, 1).
const ARGON2_MAX_MEMORY_KIB: u32 = 256 * 1024;
const ARGON2_MAX_TIME: u32 = 10;
const ARGON2_MAX_LANES: u32 = 8;
/// The shortest salt argon2 verifies with at all.
const ARGON2_MIN_SALT: usize = 8;
/// The shortest password PBKDF2 is an approved service for in AWS-LC's FIPS module.
pub const FIPS_MIN_PASSWORD: usize = 14;

const PBKDF2_SHA256: &str = "pbkdf2-sha256";

/// How a password hash is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scheme {
    /// argon2id (argon2i and argon2d hashes are checked too).
    #[value(name = "argon2id")]
    Argon2,
    /// PBKDF2-HMAC-SHA256, 600 000 rounds, a 16-byte salt.
    #[value(name = "pbkdf2-sha256")]
    Pbkdf2Sha256,
}

impl Scheme {
    /// What this build's `auth hash-password` makes: the approved one in a FIPS build.
    pub const DEFAULT: Scheme = if cfg!(feature = "fips") { Scheme::Pbkdf2Sha256 } else { Scheme::Argon2 };

    pub fn name(self) -> &'static str {
        match self {
            Scheme::Argon2 => "argon2",
            Scheme::Pbkdf2Sha256 => PBKDF2_SHA256,
        }
    }

    /// Whether FIPS 140-3 approves the algorithm.
    pub fn fips_approved(self) -> bool {
        self == Scheme::Pbkdf2Sha256
    }
}

/// Why a string is not a password hash logwarden can check.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("is not a PHC string ({0})")]
    Phc(password_hash::Error),
    #[error("uses an algorithm logwarden does not check (argon2id, argon2i, argon2d, pbkdf2-sha256)")]
    Algorithm,
    #[error("is an argon2 hash whose {0}")]
    Argon2(String),
    #[error("is an {0} hash, which FIPS does not approve, and tls.fips = true")]
    NotApproved(&'static str),
    #[error("is a pbkdf2-sha256 hash whose {0}")]
    Pbkdf2(String),
}

/// A password hash, checked to be one of the schemes above with sound parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordHash {
    scheme: Scheme,
    phc: String,
}

impl PasswordHash {
    pub fn parse(phc: &str) -> Result<PasswordHash, HashError> {
        let parsed = password_hash::PasswordHash::new(phc).map_err(HashError::Phc)?;
        let scheme = match parsed.algorithm.as_str() {
            "argon2id" | "argon2i" | "argon2d" => {
                let p = argon2::Params::try_from(&parsed).map_err(HashError::Phc)?;
                // Each check (and the dummy made like it, for every unknown name) costs this.
                if p.m_cost() > ARGON2_MAX_MEMORY_KIB
                    || p.t_cost() > ARGON2_MAX_TIME
                    || p.p_cost() > ARGON2_MAX_LANES
                {
                    return Err(HashError::Argon2(format!(
                        "parameters m={},t={},p={} exceed m={ARGON2_MAX_MEMORY_KIB},t={ARGON2_MAX_TIME},p={ARGON2_MAX_LANES}",
                        p.m_cost(),
                        p.t_cost(),
                        p.p_cost()
                    )));
                }
                // A version or salt argon2 cannot use fails every check at once: that user's
                // refusals would come faster than the dummy's, telling the name exists.
                if let Some(v) = parsed.version {
                    argon2::Version::try_from(v)
                        .map_err(|_| HashError::Argon2(format!("version (v={v}) is not 16 or 19")))?;
                }
                let mut buf = [0u8; 64];
                match parsed.salt.map(|s| s.decode_b64(&mut buf).map(|b| b.len())) {
                    Some(Ok(n)) if n >= ARGON2_MIN_SALT => {}
                    Some(Err(e)) => return Err(HashError::Argon2(format!("salt is not base64 ({e})"))),
                    _ => return Err(HashError::Argon2("salt is missing or shorter than 8 bytes".into())),
                }
                if parsed.hash.is_none() {
                    return Err(HashError::Phc(password_hash::Error::Password));
                }
                Scheme::Argon2
            }
            PBKDF2_SHA256 => {
                Pbkdf2::from_phc(&parsed)?;
                Scheme::Pbkdf2Sha256
            }
            // Not echoed: a password pasted where its hash belongs would end up in the log.
            _ => return Err(HashError::Algorithm),
        };
        Ok(PasswordHash { scheme, phc: phc.to_owned() })
    }

    /// [`PasswordHash::parse`], refusing a scheme FIPS does not approve while `[tls] fips =
    /// true` is in force: what the credentials checked at sign-in are read with.
    pub fn parse_in_force(phc: &str) -> Result<PasswordHash, HashError> {
        let h = PasswordHash::parse(phc)?;
        if crate::tls::fips_required() && !h.scheme.fips_approved() {
            return Err(HashError::NotApproved(h.scheme.name()));
        }
        Ok(h)
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    pub fn as_str(&self) -> &str {
        &self.phc
    }

    pub fn into_string(self) -> String {
        self.phc
    }

    /// Whether `password` is the one hashed (slow on purpose: run it off the async workers).
    pub fn verify(&self, password: &[u8]) -> bool {
        // Parsed once already, so these do not fail.
        let Ok(parsed) = password_hash::PasswordHash::new(&self.phc) else { return false };
        match self.scheme {
            Scheme::Argon2 => argon2::Argon2::default().verify_password(password, &parsed).is_ok(),
            Scheme::Pbkdf2Sha256 => match Pbkdf2::from_phc(&parsed) {
                Ok(p) => super::pbkdf2_sha256_verify(p.iterations, &p.salt, password, &p.hash),
                Err(_) => false,
            },
        }
    }

    /// What a check costs, written alike for hashes that cost alike: the algorithm, its
    /// version and parameters (argon2's defaults filled in) and the output length (PBKDF2 runs
    /// once per 32 bytes of it); no salt or hash.
    pub fn cost(&self) -> String {
        let Ok(p) = password_hash::PasswordHash::new(&self.phc) else { return String::new() };
        let length = p.hash.map_or(0, |h| h.len());
        match self.scheme {
            Scheme::Argon2 => {
                let version = p.version.unwrap_or(argon2::Version::default() as password_hash::Decimal);
                match argon2::Params::try_from(&p) {
                    Ok(a) => format!(
                        "{}$v={version}$m={},t={},p={},l={length}",
                        p.algorithm,
                        a.m_cost(),
                        a.t_cost(),
                        a.p_cost()
                    ),
                    Err(_) => String::new(),
                }
            }
            Scheme::Pbkdf2Sha256 => match Pbkdf2::from_phc(&p) {
                Ok(k) => format!("{}$i={},l={length}", p.algorithm, k.iterations),
                Err(_) => String::new(),
            },
        }
    }

    /// A hash that costs what checking this one costs (the same algorithm, version and
    /// parameters) and that no password matches: a new random salt and a random output. Made
    /// without running the algorithm, so a reload with costly hashes costs nothing.
    fn like(&self) -> Result<PasswordHash, HashError> {
        let parsed = password_hash::PasswordHash::new(&self.phc).map_err(HashError::Phc)?;
        let length = parsed.hash.map_or(DUMMY_OUTPUT, |h| h.len());
        unmatchable(parsed.algorithm, parsed.version, parsed.params.clone(), length)
    }
}

/// The output length of a dummy when no configured hash says one.
const DUMMY_OUTPUT: usize = 32;

/// A PHC string with `algorithm`, `version` and `params`, a random salt and a random output of
/// `length` bytes: checking a password against it does the algorithm's whole work and fails
/// (but with odds of 2^-128 or less).
fn unmatchable(
    algorithm: Ident<'_>,
    version: Option<password_hash::Decimal>,
    params: ParamsString,
    length: usize,
) -> Result<PasswordHash, HashError> {
    let salt = SaltString::encode_b64(&super::random::<MIN_SALT>()).map_err(HashError::Phc)?;
    let output: [u8; password_hash::Output::MAX_LENGTH] = super::random();
    let output = &output[..length.clamp(MIN_OUTPUT, password_hash::Output::MAX_LENGTH)];
    let phc = password_hash::PasswordHash {
        algorithm,
        version,
        params,
        salt: Some(salt.as_salt()),
        hash: Some(password_hash::Output::new(output).map_err(HashError::Phc)?),
    }
    .to_string();
    PasswordHash::parse(&phc)
}

/// What `auth hash-password` would make with `scheme`, as an [`unmatchable`] hash.
fn default_dummy(scheme: Scheme) -> Result<PasswordHash, HashError> {
    let mut params = ParamsString::new();
    match scheme {
        Scheme::Argon2 => {
            let p = argon2::Params::default();
            params.add_decimal("m", p.m_cost()).map_err(HashError::Phc)?;
            params.add_decimal("t", p.t_cost()).map_err(HashError::Phc)?;
            params.add_decimal("p", p.p_cost()).map_err(HashError::Phc)?;
            let version = argon2::Version::default() as password_hash::Decimal;
            unmatchable(argon2::ARGON2ID_IDENT, Some(version), params, DUMMY_OUTPUT)
        }
        Scheme::Pbkdf2Sha256 => {
            params.add_decimal("i", PBKDF2_ITERATIONS.get()).map_err(HashError::Phc)?;
            params.add_decimal("l", DUMMY_OUTPUT as u32).map_err(HashError::Phc)?;
            let algorithm = Ident::new(PBKDF2_SHA256).map_err(HashError::Phc)?;
            unmatchable(algorithm, None, params, DUMMY_OUTPUT)
        }
    }
}

/// The configured users' password hashes, by name, and the dummy a name that is not among them
/// is checked against: what both front ends with basic credentials (Flight SQL, HTTP ingest)
/// sign users in with.
#[derive(Debug)]
pub struct Users {
    by_name: std::collections::HashMap<String, PasswordHash>,
    dummy: PasswordHash,
}

/// Why configured users cannot be signed in.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("user {user:?}: the password_hash {source}")]
    Hash { user: String, source: HashError },
    #[error("user {0:?} is named twice")]
    Duplicate(String),
    #[error("failed to make the dummy password hash names that are not users are checked against: {0}")]
    Dummy(HashError),
}

impl Users {
    /// `(name, PHC string)` pairs, read with [`PasswordHash::parse_in_force`].
    pub fn parse<'a>(users: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Users, UsersError> {
        let mut by_name = std::collections::HashMap::new();
        for (name, phc) in users {
            let h = PasswordHash::parse_in_force(phc)
                .map_err(|source| UsersError::Hash { user: name.to_owned(), source })?;
            // One name, one hash: which of two would be checked is not left to the order.
            if by_name.insert(name.to_owned(), h).is_some() {
                return Err(UsersError::Duplicate(name.to_owned()));
            }
        }
        let dummy = dummy(by_name.values()).map_err(UsersError::Dummy)?;
        Ok(Users { by_name, dummy })
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&PasswordHash> {
        self.by_name.get(name)
    }

    /// The hash `name`'s password is checked against, and whether `name` is a user: a name
    /// that is not gets the dummy, the same work, so the time of the answer does not tell
    /// which names exist. A sign-in succeeds only when the check passes and the name is known.
    pub fn hash_for(&self, name: &str) -> (PasswordHash, bool) {
        match self.by_name.get(name) {
            Some(h) => (h.clone(), true),
            None => (self.dummy.clone(), false),
        }
    }
}

/// The same names with the same hashes (the dummies, random, are not compared).
impl PartialEq for Users {
    fn eq(&self, other: &Users) -> bool {
        self.by_name == other.by_name
    }
}

/// What a user that does not exist is checked against, so that the time of the refusal does
/// not tell which names exist: a hash that costs what the most common of `hashes` costs (the
/// build's default when there are none).
pub fn dummy<'a>(hashes: impl IntoIterator<Item = &'a PasswordHash>) -> Result<PasswordHash, HashError> {
    let mut counts: std::collections::HashMap<String, (usize, &PasswordHash)> = Default::default();
    for h in hashes {
        counts.entry(h.cost()).or_insert((0, h)).0 += 1;
    }
    // The most common; among as common, the first by cost (not by the map's random order).
    let most = counts.into_iter().max_by(|a, b| a.1.0.cmp(&b.1.0).then_with(|| b.0.cmp(&a.0)));
    match most {
        Some((_, (_, h))) => h.like(),
        None => default_dummy(Scheme::DEFAULT),
    }
}

/// A new hash of `password` in this build's default scheme, as the PHC string a `[[users]]`
/// entry's `password_hash` holds.
pub fn hash_default(password: &str) -> Result<String, HashError> {
    hash(password, Scheme::DEFAULT).map(PasswordHash::into_string)
}

/// A new hash of `password` with a random salt.
pub fn hash(password: &str, scheme: Scheme) -> Result<PasswordHash, HashError> {
    let salt: [u8; MIN_SALT] = super::random();
    let phc = match scheme {
        Scheme::Argon2 => {
            let salt = SaltString::encode_b64(&salt).map_err(HashError::Phc)?;
            argon2::Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map_err(HashError::Phc)?
                .to_string()
        }
        Scheme::Pbkdf2Sha256 => {
            return pbkdf2_phc(PBKDF2_ITERATIONS, &salt, 32, password);
        }
    };
    PasswordHash::parse(&phc)
}

/// A PBKDF2-HMAC-SHA256 hash of `password`, `length` bytes (at most 64).
fn pbkdf2_phc(
    rounds: NonZeroU32,
    salt: &[u8],
    length: usize,
    password: &str,
) -> Result<PasswordHash, HashError> {
    let derived: [u8; 64] = super::pbkdf2_sha256(rounds, salt, password.as_bytes());
    let derived = &derived[..length.min(64)];
    let mut params = ParamsString::new();
    params.add_decimal("i", rounds.get()).map_err(HashError::Phc)?;
    params.add_decimal("l", derived.len() as u32).map_err(HashError::Phc)?;
    let salt = SaltString::encode_b64(salt).map_err(HashError::Phc)?;
    let phc = password_hash::PasswordHash {
        algorithm: Ident::new(PBKDF2_SHA256).map_err(HashError::Phc)?,
        version: None,
        params,
        salt: Some(salt.as_salt()),
        hash: Some(password_hash::Output::new(derived).map_err(HashError::Phc)?),
    }
    .to_string();
    PasswordHash::parse(&phc)
}

/// A PBKDF2 hash's parameters, bounds checked.
struct Pbkdf2 {
    iterations: NonZeroU32,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

impl Pbkdf2 {
    fn from_phc(parsed: &password_hash::PasswordHash<'_>) -> Result<Pbkdf2, HashError> {
        let bad = |why: String| HashError::Pbkdf2(why);
        if parsed.version.is_some() {
            return Err(bad("has a version field (v=), which pbkdf2-sha256 has not".into()));
        }
        let mut iterations = None;
        let mut length = None;
        for (name, value) in parsed.params.iter() {
            let n =
                value.decimal().map_err(|_| bad(format!("parameter {} is not a number", name.as_str())))?;
            match name.as_str() {
                "i" => iterations = Some(n),
                "l" => length = Some(n as usize),
                other => return Err(bad(format!("parameter {other:?} is unknown (i= rounds, l= length)"))),
            }
        }
        let iterations = iterations.ok_or_else(|| bad("rounds (i=) are missing".into()))?;
        if !(PBKDF2_MIN_ITERATIONS..=PBKDF2_MAX_ITERATIONS).contains(&iterations) {
            return Err(bad(format!(
                "rounds (i={iterations}) are outside {PBKDF2_MIN_ITERATIONS}..={PBKDF2_MAX_ITERATIONS}"
            )));
        }
        let salt = parsed.salt.ok_or_else(|| bad("salt is missing".into()))?;
        let mut buf = [0u8; 64];
        let salt = salt.decode_b64(&mut buf).map_err(|e| bad(format!("salt is not base64 ({e})")))?.to_vec();
        if salt.len() < MIN_SALT {
            return Err(bad(format!("salt has {} bytes; at least {MIN_SALT} are needed", salt.len())));
        }
        let hash = parsed.hash.ok_or_else(|| bad("hash is missing".into()))?.as_bytes().to_vec();
        if hash.len() < MIN_OUTPUT {
            return Err(bad(format!("hash has {} bytes; at least {MIN_OUTPUT} are needed", hash.len())));
        }
        // Each 32 bytes of output is a run of its own.
        if u64::from(iterations) * hash.len().div_ceil(32) as u64 > u64::from(PBKDF2_MAX_ITERATIONS) {
            return Err(bad(format!(
                "rounds (i={iterations}) times its {} output blocks exceed {PBKDF2_MAX_ITERATIONS}",
                hash.len().div_ceil(32)
            )));
        }
        if length.is_some_and(|l| l != hash.len()) {
            return Err(bad(format!("length (l=) does not match the hash's {} bytes", hash.len())));
        }
        let iterations = NonZeroU32::new(iterations).ok_or_else(|| bad("rounds (i=0) are zero".into()))?;
        Ok(Pbkdf2 { iterations, salt, hash })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scheme_hashes_and_verifies() {
        for scheme in [Scheme::Argon2, Scheme::Pbkdf2Sha256] {
            let h = hash("correct horse", scheme).unwrap();
            assert_eq!(h.scheme(), scheme);
            assert!(h.verify(b"correct horse"), "{scheme:?}");
            assert!(!h.verify(b"correct horsf"), "{scheme:?}");
            assert!(!h.verify(b""), "{scheme:?}");
            assert_eq!(PasswordHash::parse(h.as_str()).unwrap(), h);
        }
        let p = hash("x", Scheme::Pbkdf2Sha256).unwrap();
        assert!(p.as_str().starts_with("$pbkdf2-sha256$i=600000,l=32$"), "{}", p.as_str());
    }

    #[test]
    fn the_dummy_costs_what_most_users_cost() {
        let cost = |h: &PasswordHash| h.cost();
        assert_eq!(dummy([]).unwrap().scheme(), Scheme::DEFAULT);
        for scheme in [Scheme::Argon2, Scheme::Pbkdf2Sha256] {
            let (d, made) = (default_dummy(scheme).unwrap(), hash("pw", scheme).unwrap());
            assert_eq!((d.scheme(), cost(&d)), (scheme, cost(&made)));
            assert!(!d.verify(b"pw") && !d.verify(b""), "{scheme:?}");
        }
        let cheap = "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHRzYWx0$LbJzOj2ZQVc8tHVjVr+NBw";
        let cheap = hash_like_test(cheap);
        let p = PasswordHash::parse(
            "$pbkdf2-sha256$i=1000,l=32$AAECAwQFBgcICQoLDA0ODw$JeuGrMduQwGPGLmo+Qwv7UYtHHmeg9SK49fGkEamC2c",
        )
        .unwrap();
        let d = dummy([&cheap, &p, &cheap]).unwrap();
        assert_eq!(cost(&d), cost(&cheap));
        assert_ne!(d, cheap);
        let d = dummy([&p, &cheap, &p]).unwrap();
        assert_eq!(cost(&d), "pbkdf2-sha256$i=1000,l=32");
        assert!(!d.verify(b"password"));
        // Made without running the algorithm: the most rounds allowed cost nothing here.
        let slow = format!("$pbkdf2-sha256$i={PBKDF2_MAX_ITERATIONS},l=32$AAECAwQFBgcICQoLDA0ODw$");
        let slow = PasswordHash::parse(&format!("{slow}{}", "A".repeat(43))).unwrap();
        let d = dummy([&slow]).unwrap();
        assert_eq!((cost(&d), d.as_str().len()), (cost(&slow), slow.as_str().len()));
    }

    #[test]
    fn hashes_that_cost_alike_have_one_cost() {
        let cost = |phc: &str| PasswordHash::parse(phc).unwrap().cost();
        let (salt, out) = ("AAECAwQFBgcICQoLDA0ODw", "JeuGrMduQwGPGLmo+Qwv7UYtHHmeg9SK49fGkEamC2c");
        // l= is optional; what counts is the output's length (one run per 32 bytes).
        let with_l = cost(&format!("$pbkdf2-sha256$i=1000,l=32${salt}${out}"));
        assert_eq!(with_l, cost(&format!("$pbkdf2-sha256$i=1000${salt}${out}")));
        assert_ne!(with_l, cost(&format!("$pbkdf2-sha256$i=1000${salt}${}", "A".repeat(86))));
        // argon2's parameters default when left out, and its version is part of the cost.
        let (salt, out) = ("c2FsdHNhbHRzYWx0", "LbJzOj2ZQVc8tHVjVr+NBw");
        let defaults = cost(&format!("$argon2id$v=19${salt}${out}"));
        assert_eq!(defaults, cost(&format!("$argon2id$v=19$m=19456,t=2,p=1${salt}${out}")));
        assert_eq!(defaults, cost(&format!("$argon2id$m=19456,t=2,p=1${salt}${out}")));
        assert_ne!(defaults, cost(&format!("$argon2id$v=16$m=19456,t=2,p=1${salt}${out}")));
        assert_ne!(defaults, cost(&format!("$argon2i$v=19$m=19456,t=2,p=1${salt}${out}")));
    }

    #[test]
    fn users_have_one_hash_each() {
        let h =
            "$pbkdf2-sha256$i=1000,l=32$AAECAwQFBgcICQoLDA0ODw$JeuGrMduQwGPGLmo+Qwv7UYtHHmeg9SK49fGkEamC2c";
        let users = Users::parse([("alice", h), ("bob", h)]).unwrap();
        let (hash, known) = users.hash_for("alice");
        assert!(known && hash.verify(b"password"));
        let (hash, known) = users.hash_for("mallory");
        assert!(!known && !hash.verify(b"password"));
        assert_eq!(hash.cost(), users.get("bob").unwrap().cost());
        let e = Users::parse([("alice", h), ("alice", h)]).unwrap_err().to_string();
        assert!(e.contains("\"alice\" is named twice"), "{e}");
        let e = Users::parse([("alice", "hunter2")]).unwrap_err().to_string();
        assert!(
            e.starts_with("user \"alice\": the password_hash is not a PHC string") && !e.contains("hunter2"),
            "{e}"
        );
    }

    /// An argon2 hash with the parameters of `phc` (cheap ones keep the test fast).
    fn hash_like_test(phc: &str) -> PasswordHash {
        let parsed = password_hash::PasswordHash::new(phc).unwrap();
        let params = argon2::Params::try_from(&parsed).unwrap();
        let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
        let phc = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        PasswordHash::parse(&phc).unwrap()
    }

    #[test]
    fn a_pbkdf2_hash_made_elsewhere_verifies() {
        // Python: hashlib.pbkdf2_hmac("sha256", b"password", bytes(range(16)), 1000), in the
        // PHC format (unpadded base64).
        let phc =
            "$pbkdf2-sha256$i=1000,l=32$AAECAwQFBgcICQoLDA0ODw$JeuGrMduQwGPGLmo+Qwv7UYtHHmeg9SK49fGkEamC2c";
        let h = PasswordHash::parse(phc).unwrap();
        assert!(h.verify(b"password"));
        assert!(!h.verify(b"Password"));
    }

    #[test]
    fn unsound_hashes_are_refused_with_the_reason() {
        let salt = "AAECAwQFBgcICQoLDA0ODw";
        let out = "JeuGrMduQwGPGLmo+Qwv7UYtHHmeg9SK49fGkEamC2c";
        for (phc, why) in [
            ("plain", "not a PHC string"),
            ("$hunter2$AAECAwQFBgcICQoLDA0ODw$JeuGrMduQwGPGLmo", "an algorithm logwarden does not check"),
            (&format!("$pbkdf2-sha256$i=999,l=32${salt}${out}"), "outside 1000"),
            (&format!("$pbkdf2-sha256$i=4000000000,l=32${salt}${out}"), "outside"),
            (&format!("$pbkdf2-sha256$l=32${salt}${out}"), "rounds (i=) are missing"),
            (&format!("$pbkdf2-sha256$i=1000,l=16${salt}${out}"), "does not match"),
            (&format!("$pbkdf2-sha256$i=1000,x=1${salt}${out}"), "\"x\" is unknown"),
            (&format!("$pbkdf2-sha256$i=1000$AAECAwQFBgc${out}"), "at least 16"),
            (&format!("$pbkdf2-sha256$i=1000${salt}"), "hash is missing"),
            (&format!("$pbkdf2-sha256$i=1000${salt}$AAECAwQFBgcICQoL"), "at least 16"),
            ("$argon2id$v=19$m=8,t=4294967295,p=1$c2FsdHNhbHRzYWx0$LbJzOj2ZQVc8tHVjVr+NBw", "exceed"),
            ("$argon2id$v=19$m=4294967295,t=1,p=1$c2FsdHNhbHRzYWx0$LbJzOj2ZQVc8tHVjVr+NBw", "exceed"),
            ("$argon2id$v=19$m=8,t=1,p=1$c2FsdA$LbJzOj2ZQVc8tHVjVr+NBw", "shorter than 8 bytes"),
            ("$argon2id$v=99$m=8,t=1,p=1$c2FsdHNhbHRzYWx0$LbJzOj2ZQVc8tHVjVr+NBw", "version (v=99)"),
            ("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHRz-Wx0$LbJzOj2ZQVc8tHVjVr+NBw", "salt is not base64"),
            ("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHRzY$LbJzOj2ZQVc8tHVjVr+NBw", "salt is not base64"),
            ("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ", "not a PHC string"),
        ] {
            let e = PasswordHash::parse(phc).unwrap_err().to_string();
            assert!(e.contains(why) && !e.contains("hunter2"), "{phc}: {e}");
        }
    }
}
