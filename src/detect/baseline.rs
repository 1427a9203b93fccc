//! A learned baseline per key (a host, an app, a template...): an exponentially weighted mean
//! of its value per window and of the absolute deviation from it, which a single outlier moves
//! little. An anomalous value is learned clamped to the band, so an incident does not teach the
//! baseline that it is normal.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::config::BaselineConfig;

/// Keys followed per detector; beyond it new keys are not learned.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    pub mean: f64,
    pub dev: f64,
    /// Event time (ns) of the first window that saw the key.
    pub since: i64,
    pub windows: u64,
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
    /// Judge `value` for `key` in the window ending at `end`, then learn it. `floor` is the
    /// smallest deviation the band uses (counts: their square root; ratios: a fixed share).
    pub fn observe(&mut self, key: &str, value: f64, end: i64, cfg: &BaselineConfig, floor: f64) -> Verdict {
        let alpha = 2.0 / (f64::from(cfg.memory.max(1)) + 1.0);
        if !self.keys.contains_key(key) {
            if self.keys.len() >= MAX_KEYS {
                return Verdict::Warming;
            }
            let since = end.saturating_sub(cfg.window.as_nanos().min(i64::MAX as u128) as i64);
            self.keys.insert(key.to_owned(), Baseline { mean: value, dev: 0.0, since, windows: 0 });
        }
        let Some(b) = self.keys.get_mut(key) else { return Verdict::Warming };
        let sigma = (b.dev * 1.25).max(floor);
        let (lo, hi) = (b.mean - cfg.sensitivity * sigma, b.mean + cfg.sensitivity * sigma);
        let warm = b.windows > 0 && end.saturating_sub(b.since) as u128 >= cfg.warmup.as_nanos();
        let verdict = if !warm {
            Verdict::Warming
        } else if value > hi {
            Verdict::Spike(value, b.mean)
        } else if value < lo {
            Verdict::Drop(value, b.mean)
        } else {
            Verdict::Normal
        };
        let learned = if warm { value.clamp(lo.max(0.0), hi) } else { value };
        let diff = learned - b.mean;
        b.mean += alpha * diff;
        b.dev += alpha * (diff.abs() - b.dev);
        b.windows += 1;
        verdict
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
}
