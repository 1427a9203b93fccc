//! Sign-in attempts under attack. Password hashes are slow on purpose, so password checks run on a few
//! blocking threads of their own (`password_checks` at once, `password_queue` more waiting, the
//! rest refused at once), never on the runtime's workers that also serve ingest. A user that
//! does not exist costs the same check, against a dummy hash, so the time of a refusal does not
//! tell whether a name exists. Failed sign-ins are counted per client address (IPv6 per /64):
//! past `max_failures` within `failure_window`, that address's password attempts are refused
//! unchecked. Every failure is counted in `logwarden_flight_auth_failures_total{reason}` and
//! written to the audit trail, except the repeats of an address already over its limit (the
//! first refusal is written; the rest are only counted, so a flood cannot flood the trail).
//! Attempts admitted before the limit was reached are still checked, so one address gets at
//! most `max_failures + password_checks + password_queue` checks per window.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::crypto::password::PasswordHash;
use prometheus::IntCounter;
use tokio::sync::Semaphore;
use tonic::Status;

use crate::audit::{Audit, AuditEntry};
use crate::config::AuthLimitsConfig;
use crate::metrics::Metrics;

/// Client addresses tracked at most; beyond it, addresses with no failure inside the window go
/// first, then any (so a spray from many addresses costs memory once, not without bound).
const MAX_PEERS: usize = 65_536;
/// Longest attempted user name kept in the audit trail.
const MAX_NAME: usize = 128;

/// Why a sign-in failed: the `reason` label and the audit trail's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    WrongPassword,
    UnknownUser,
    BadToken,
    Malformed,
    RateLimited,
    Busy,
}

impl Failure {
    const ALL: [Failure; 6] = [
        Failure::WrongPassword,
        Failure::UnknownUser,
        Failure::BadToken,
        Failure::Malformed,
        Failure::RateLimited,
        Failure::Busy,
    ];

    /// The `reason` label. A name that does not exist is counted as a wrong password: a
    /// label of its own would tell a /metrics reader, watching the counter while they try
    /// names, which names exist (what the dummy hash keeps the time of a refusal from telling).
    /// The audit trail, for the administrators, keeps the difference.
    pub fn label(self) -> &'static str {
        match self {
            Failure::WrongPassword | Failure::UnknownUser => "wrong_password",
            Failure::BadToken => "bad_token",
            Failure::Malformed => "malformed",
            Failure::RateLimited => "rate_limited",
            Failure::Busy => "busy",
        }
    }

    fn text(self) -> &'static str {
        match self {
            Failure::WrongPassword => "wrong password",
            Failure::UnknownUser => "unknown user",
            Failure::BadToken => "invalid or expired bearer token",
            Failure::Malformed => "malformed authorization header",
            Failure::RateLimited => "too many failed sign-ins from this address",
            Failure::Busy => "too many password checks waiting",
        }
    }
}

/// Where failures are reported.
struct Report {
    failures: [IntCounter; 6],
    checks: IntCounter,
    audit: Audit,
}

/// The failures of one client address inside the window, oldest first.
#[derive(Default)]
struct Failures {
    times: VecDeque<Instant>,
    /// The address's first refusal over the limit is in the audit trail already.
    noted: bool,
}

pub struct SignIn {
    limits: AuthLimitsConfig,
    /// One permit per check running.
    checks: Arc<Semaphore>,
    /// One permit per attempt running or waiting.
    admitted: Arc<Semaphore>,
    peers: Mutex<HashMap<IpAddr, Failures>>,
    report: Option<Report>,
    /// Password checks run so far.
    checked: AtomicU64,
    /// Whose sign-ins these are, for the log ("Flight SQL", "HTTP ingest").
    what: &'static str,
}

/// The address failures are counted under: IPv4 as is, IPv6 by its /64 (one host usually has a
/// whole /64 to pick addresses from).
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// A name fit for a log line and the audit trail: bounded, control characters replaced.
pub(crate) fn printable(name: &str) -> String {
    name.chars().take(MAX_NAME).map(|c| if c.is_control() { '?' } else { c }).collect()
}

impl SignIn {
    pub fn new(limits: &AuthLimitsConfig) -> SignIn {
        let checks = limits.password_checks.max(1);
        SignIn {
            limits: limits.clone(),
            checks: Arc::new(Semaphore::new(checks)),
            admitted: Arc::new(Semaphore::new(checks + limits.password_queue)),
            peers: Mutex::new(HashMap::new()),
            report: None,
            checked: AtomicU64::new(0),
            what: "Flight SQL",
        }
    }

    /// The same checks for another front end's sign-ins (named in the log).
    pub fn named(mut self, what: &'static str) -> SignIn {
        self.what = what;
        self
    }

    /// Count failures in `metrics` and write them to `audit`.
    pub fn report_to(&mut self, metrics: &Metrics, audit: Audit) {
        self.report = Some(Report {
            failures: Failure::ALL.map(|f| metrics.flight_auth_failures.with_label_values(&[f.label()])),
            checks: metrics.flight_password_checks.clone(),
            audit,
        });
    }

    /// Password checks run so far (a user that does not exist is checked too).
    #[cfg(test)]
    fn checked(&self) -> u64 {
        self.checked.load(Ordering::Relaxed)
    }

    /// Refuse a password attempt from `peer` (claiming to be `user`) unchecked when the address
    /// has used up its failures.
    pub fn refuse_if_limited(&self, peer: SocketAddr, user: &str) -> Result<(), Status> {
        let window = self.limits.failure_window;
        let (first, retry) = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let Some(f) = peers.get_mut(&peer_key(peer.ip())) else { return Ok(()) };
            while f.times.front().is_some_and(|t| t.elapsed() >= window) {
                f.times.pop_front();
            }
            if f.times.len() < self.limits.max_failures {
                f.noted = false;
                return Ok(());
            }
            let retry = f.times.front().map_or(window, |t| window.saturating_sub(t.elapsed()));
            let first = !f.noted;
            f.noted = true;
            (first, retry)
        };
        self.count(Failure::RateLimited);
        if first {
            self.write(peer, "basic", Some(user), Failure::RateLimited);
        }
        Err(Status::resource_exhausted(format!(
            "too many failed sign-ins from {} ({} within {}; [flight.auth_limits] max_failures); retry in {}s",
            peer.ip(),
            self.limits.max_failures,
            humantime::format_duration(window),
            retry.as_secs().max(1)
        )))
    }

    /// Check `password` against `hash` on a blocking thread (for a user that does not exist,
    /// the caller passes a dummy hash of the same cost: see [`crate::crypto::password::Users::hash_for`]).
    /// Refused with UNAVAILABLE at once when `password_checks` are running and
    /// `password_queue` more are waiting.
    pub async fn verify(&self, hash: PasswordHash, password: String) -> Result<bool, Status> {
        let Ok(_admitted) = self.admitted.clone().try_acquire_owned() else {
            self.count(Failure::Busy);
            return Err(Status::unavailable(
                "too many password checks are waiting ([flight.auth_limits] password_checks, password_queue); retry in a moment",
            ));
        };
        let permit =
            self.checks.clone().acquire_owned().await.map_err(|_| {
                Status::unavailable("password checks have stopped: the daemon is shutting down")
            })?;
        self.checked.fetch_add(1, Ordering::Relaxed);
        if let Some(r) = &self.report {
            r.checks.inc();
        }
        // The permit moves into the thread: a caller that goes away does not free it before
        // the check it started has finished.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            hash.verify(password.as_bytes())
        })
        .await
        .map_err(|e| Status::internal(format!("the password check failed: {e}")))
    }

    /// A failed sign-in from `peer` by `method` (`basic`, `token`, `none`), claiming `user`.
    pub fn failed(&self, peer: SocketAddr, method: &'static str, user: Option<&str>, why: Failure) {
        self.count(why);
        let window = self.limits.failure_window;
        let over = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let key = peer_key(peer.ip());
            if !peers.contains_key(&key) && peers.len() >= MAX_PEERS {
                peers.retain(|_, f| f.times.back().is_some_and(|t| t.elapsed() < window));
                if peers.len() >= MAX_PEERS
                    && let Some(k) = peers.keys().next().copied()
                {
                    peers.remove(&k);
                }
            }
            let f = peers.entry(key).or_default();
            while f.times.front().is_some_and(|t| t.elapsed() >= window) {
                f.times.pop_front();
            }
            let over = f.times.len() >= self.limits.max_failures;
            if !over {
                f.times.push_back(Instant::now());
            }
            over
        };
        if !over {
            self.write(peer, method, user, why);
        }
    }

    fn count(&self, why: Failure) {
        if let Some(r) = &self.report
            && let Some(i) = Failure::ALL.iter().position(|f| *f == why)
        {
            r.failures[i].inc();
        }
    }

    fn write(&self, peer: SocketAddr, method: &'static str, user: Option<&str>, why: Failure) {
        // The name a rule or the audit table would give this user (`user:NAME`), though it
        // signed in as no one.
        let user = user.map(|u| format!("user:{}", printable(u)));
        tracing::warn!(%peer, method, user = user.as_deref().unwrap_or(""), reason = why.text(), "{} sign-in refused", self.what);
        if let Some(r) = &self.report {
            r.audit.record(AuditEntry::authentication("flight", &peer.to_string(), user, method, why.text()));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits(max_failures: usize) -> AuthLimitsConfig {
        AuthLimitsConfig { max_failures, ..AuthLimitsConfig::default() }
    }

    #[tokio::test]
    async fn every_check_is_counted() {
        let s = SignIn::new(&limits(10));
        let real = crate::crypto::password::hash("pw", crate::crypto::password::Scheme::DEFAULT).unwrap();
        assert!(s.verify(real.clone(), "pw".into()).await.unwrap());
        assert_eq!(s.checked(), 1);
        assert!(!s.verify(real, "wrong".into()).await.unwrap());
        assert_eq!(s.checked(), 2);
    }

    #[tokio::test]
    async fn failures_are_limited_per_address_and_per_ipv6_64() {
        let s = SignIn::new(&limits(3));
        let a: SocketAddr = "192.0.2.7:1000".parse().unwrap();
        let b: SocketAddr = "192.0.2.8:1000".parse().unwrap();
        for _ in 0..3 {
            assert!(s.refuse_if_limited(a, "alice").is_ok());
            s.failed(a, "basic", Some("alice"), Failure::WrongPassword);
        }
        let err = s.refuse_if_limited(SocketAddr::new(a.ip(), 2000), "alice").unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("192.0.2.7") && err.message().contains("max_failures"), "{err}");
        assert!(s.refuse_if_limited(b, "alice").is_ok(), "another address is not limited");

        let v6 = |s: &str| -> SocketAddr { s.parse().unwrap() };
        for port in 1..=3 {
            s.failed(v6(&format!("[2001:db8:1:2::{port}]:443")), "token", None, Failure::BadToken);
        }
        assert!(s.refuse_if_limited(v6("[2001:db8:1:2:ffff::9]:443"), "x").is_err(), "same /64");
        assert!(s.refuse_if_limited(v6("[2001:db8:1:3::1]:443"), "x").is_ok(), "another /64");
        // An IPv4 client seen through an IPv4-mapped IPv6 socket is the same address.
        assert!(s.refuse_if_limited(v6("[::ffff:192.0.2.7]:443"), "x").is_err());
    }

    #[tokio::test]
    async fn failures_older_than_the_window_are_forgotten() {
        let s = SignIn::new(&AuthLimitsConfig {
            max_failures: 1,
            failure_window: Duration::from_millis(50),
            ..AuthLimitsConfig::default()
        });
        let a: SocketAddr = "192.0.2.7:1000".parse().unwrap();
        s.failed(a, "basic", Some("alice"), Failure::WrongPassword);
        assert!(s.refuse_if_limited(a, "alice").is_err());
        let start = Instant::now();
        while s.refuse_if_limited(a, "alice").is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "the failure was never forgotten");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn checks_beyond_the_queue_are_refused_at_once() {
        let s = Arc::new(SignIn::new(&AuthLimitsConfig {
            password_checks: 1,
            password_queue: 0,
            ..AuthLimitsConfig::default()
        }));
        // Hold the one check slot; the next attempt has nowhere to wait.
        let held = s.admitted.clone().try_acquire_owned().unwrap();
        let hash = crate::crypto::password::dummy([]).unwrap();
        let err = s.verify(hash.clone(), "pw".into()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert!(err.message().contains("password_queue"), "{err}");
        drop(held);
        assert!(!s.verify(hash, "pw".into()).await.unwrap());
    }
}
