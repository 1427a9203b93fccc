//! A learned baseline per key (a host, an app, a template...): an exponentially weighted mean
//! of its value per window and of the absolute deviation from it, which a single outlier moves
//! little. An anomalous value is learned clamped to the band, so an incident does not teach the
//! baseline that it is normal.
//!
//! The keys are bounded ([`Baselines::trim`]): past the limit, the keys seen least recently are
//! forgotten, and among those seen equally recently the youngest, so a flood of new names
//! (random hostnames) displaces other new names before any established baseline.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::config::BaselineConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    pub mean: f64,
    pub dev: f64,
    /// Event time (ns) of the first window that saw the key.
    pub since: i64,
    pub windows: u64,
    /// Event time (ns) of the end of the last window in which the key had events (0 in files
    /// written before it existed: taken as `since` when loaded).
    #[serde(default)]
    pub seen: i64,
}

impl Baseline {
    fn judge(&mut self, value: f64, end: i64, cfg: &BaselineConfig, floor: f64) -> Verdict {
        let alpha = 2.0 / (f64::from(cfg.memory.max(1)) + 1.0);
        let sigma = (self.dev * 1.25).max(floor);
        let (lo, hi) = (self.mean - cfg.sensitivity * sigma, self.mean + cfg.sensitivity * sigma);
        let warm = self.windows > 0 && end.saturating_sub(self.since) as u128 >= cfg.warmup.as_nanos();
        let verdict = if !warm {
            Verdict::Warming
        } else if value > hi {
            Verdict::Spike(value, self.mean)
        } else if value < lo {
            Verdict::Drop(value, self.mean)
        } else {
            Verdict::Normal
        };
        let learned = if warm { value.clamp(lo.max(0.0), hi) } else { value };
        let diff = learned - self.mean;
        self.mean += alpha * diff;
        self.dev += alpha * (diff.abs() - self.dev);
        self.windows += 1;
        verdict
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Not learned long enough to judge.
    Warming,
    Normal,
    /// Above the band: value, expected.
    Spike(f64, f64),
    /// Below the band: value, expected.
    Drop(f64, f64),
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Baselines {
    pub keys: HashMap<String, Baseline>,
}

impl Baselines {
    /// Judge `value` for `key` in the window ending at `end`, then learn it; the key counts
    /// as seen in this window. `floor` is the smallest deviation the band uses (counts: their
    /// square root; ratios: a fixed share).
    pub fn observe(&mut self, key: &str, value: f64, end: i64, cfg: &BaselineConfig, floor: f64) -> Verdict {
        if !self.keys.contains_key(key) {
            let since = end.saturating_sub(cfg.window.as_nanos().min(i64::MAX as u128) as i64);
            self.keys
                .insert(key.to_owned(), Baseline { mean: value, dev: 0.0, since, windows: 0, seen: end });
        }
        let Some(b) = self.keys.get_mut(key) else { return Verdict::Warming };
        b.seen = end;
        b.judge(value, end, cfg, floor)
    }

    /// Judge a known key that had no events in the window ending at `end` (a value of 0),
    /// without counting it as seen.
    pub fn observe_absent(&mut self, key: &str, end: i64, cfg: &BaselineConfig, floor: f64) -> Verdict {
        match self.keys.get_mut(key) {
            Some(b) => b.judge(0.0, end, cfg, floor),
            None => Verdict::Warming,
        }
    }

    /// Forget keys beyond `max`: those seen least recently, and of those the youngest first.
    /// Returns how many were forgotten.
    pub fn trim(&mut self, max: usize) -> usize {
        let excess = self.keys.len().saturating_sub(max);
        if excess == 0 {
            return 0;
        }
        let mut order: Vec<(i64, std::cmp::Reverse<i64>, &String)> =
            self.keys.iter().map(|(k, b)| (b.seen, std::cmp::Reverse(b.since), k)).collect();
        order.select_nth_unstable(excess - 1);
        let gone: Vec<String> = order[..excess].iter().map(|(_, _, k)| (*k).clone()).collect();
        for k in &gone {
            self.keys.remove(k);
        }
        excess
    }

    /// Baselines loaded from a file that predates `seen` count as seen when they started.
    pub fn fill_in_seen(&mut self) {
        for b in self.keys.values_mut().filter(|b| b.seen == 0) {
            b.seen = b.since;
        }
    }

    /// Keys whose baseline has decayed to nothing (gone for good) are forgotten.
    pub fn forget_faded(&mut self) {
        self.keys.retain(|_, b| b.mean >= 0.05 || b.windows < 3);
    }

    pub fn mean(&self, key: &str) -> Option<f64> {
        self.keys.get(key).map(|b| b.mean)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIN: i64 = 60_000_000_000;

    fn cfg() -> BaselineConfig {
        BaselineConfig { warmup: Duration::from_secs(600), ..BaselineConfig::default() }
    }

    #[test]
    fn a_steady_rate_is_normal_and_a_burst_or_a_drop_is_not() {
        let mut b = Baselines::default();
        let c = cfg();
        for i in 0..9 {
            assert_eq!(b.observe("h", 100.0, (i + 1) * MIN, &c, 10.0), Verdict::Warming);
        }
        for i in 9..40 {
            let v = if i % 2 == 0 { 95.0 } else { 105.0 };
            assert_eq!(b.observe("h", v, (i + 1) * MIN, &c, 10.0), Verdict::Normal, "window {i}");
        }
        assert!(matches!(b.observe("h", 400.0, 41 * MIN, &c, 10.0), Verdict::Spike(400.0, _)));
        // The burst was learned clamped: the baseline barely moved.
        assert!((b.mean("h").unwrap() - 100.0).abs() < 10.0, "{:?}", b.mean("h"));
        assert!(matches!(b.observe("h", 0.0, 42 * MIN, &c, 10.0), Verdict::Drop(0.0, _)));
        assert_eq!(b.observe("h", 100.0, 43 * MIN, &c, 10.0), Verdict::Normal);
    }

    #[test]
    fn past_the_limit_the_keys_seen_least_recently_go_and_new_names_before_old_ones() {
        let mut b = Baselines::default();
        let c = cfg();
        // Established: seen from the first window on, one of them not since window 5.
        for w in 1..=10 {
            for k in ["web1", "web2", "db1"] {
                if k != "db1" || w <= 5 {
                    b.observe(k, 100.0, w * MIN, &c, 10.0);
                }
            }
            if w > 5 {
                b.observe_absent("db1", w * MIN, &c, 10.0);
            }
        }
        // A flood of new names in window 10, as many as the limit.
        for i in 0..4 {
            b.observe(&format!("rnd{i}"), 1.0, 10 * MIN, &c, 1.0);
        }
        assert_eq!(b.trim(4), 3);
        let mut kept: Vec<&str> = b.keys.keys().map(String::as_str).collect();
        kept.sort_unstable();
        // db1 was seen least recently (a window of absence does not count as seen); then the
        // new names go before the established web1 and web2.
        assert_eq!(kept.len(), 4);
        assert!(kept.contains(&"web1") && kept.contains(&"web2"), "{kept:?}");
        assert!(!kept.contains(&"db1"), "{kept:?}");
        assert_eq!(b.trim(4), 0);
    }
}
