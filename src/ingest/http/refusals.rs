//! Which refused requests reach the audit trail. Refusing a token costs a SHA-256, so a client
//! can be refused tens of thousands of times a second; a row for each would fill the disk the
//! WAL shares and crowd real entries out of the audit queue. The first refusal of an address
//! for a reason is written, then at most one per [`EVERY`], saying how many it stands for;
//! the metrics and the log count every one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One audit row per address and reason at most this often.
const EVERY: Duration = Duration::from_secs(60);
/// Addresses remembered at most; past it (a spray from many addresses) the oldest half is
/// forgotten, which costs at most one more row each.
const MAX_ADDRESSES: usize = 4096;

#[derive(Default)]
pub struct Refusals {
    seen: Mutex<HashMap<(IpAddr, &'static str), Seen>>,
}

struct Seen {
    written: Instant,
    /// Refusals since the last row.
    since: u64,
}

impl Refusals {
    /// `Some(n)` when this refusal gets a row, standing for itself and `n` earlier ones that
    /// got none; `None` when it is only counted.
    pub fn note(&self, ip: IpAddr, reason: &'static str) -> Option<u64> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = seen.get_mut(&(ip, reason)) {
            if now.duration_since(s.written) < EVERY {
                s.since += 1;
                return None;
            }
            let skipped = s.since;
            *s = Seen { written: now, since: 0 };
            return Some(skipped);
        }
        if seen.len() >= MAX_ADDRESSES {
            let mut ages: Vec<Instant> = seen.values().map(|s| s.written).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            seen.retain(|_, s| s.written > cut);
        }
        seen.insert((ip, reason), Seen { written: now, since: 0 });
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_address_and_reason_then_counts() {
        let r = Refusals::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(r.note(a, "bad_token"), Some(0));
        assert_eq!(r.note(a, "bad_token"), None);
        assert_eq!(r.note(a, "bad_token"), None);
        assert_eq!(r.note(a, "denied"), Some(0));
        assert_eq!(r.note(b, "bad_token"), Some(0));
        // Many addresses: bounded, and every new one still gets its row.
        for i in 0..(3 * MAX_ADDRESSES as u32) {
            assert_eq!(r.note(IpAddr::from(i.to_be_bytes()), "bad_token"), Some(0));
        }
        assert!(r.seen.lock().unwrap().len() <= MAX_ADDRESSES);
    }
}
