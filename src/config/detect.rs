//! `[detect]`: the built-in detectors and the event-time clock that every rule window uses.

use std::time::Duration;

use serde::Deserialize;

/// Built-in detection over the arriving events, and the event-time clock rules share.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    pub templates: TemplatesConfig,
    /// How far behind the newest event `timestamp` an event may be and still count in its
    /// window; later ones are counted in `logwarden_rule_late_events_total`.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// With no newer event for this long, the event-time clock moves on with the wall clock,
    /// so windows close when traffic stops.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Event rate per host, per app and per severity against each one's baseline: spikes,
    /// drops, and a host gone silent.
    pub volume: BaselineConfig,
    /// The share of events at severity error or worse (0–3) per app against its baseline.
    pub error_ratio: BaselineConfig,
    /// A template never seen before at warning or worse, and a known template's rate jump.
    pub new_templates: BaselineConfig,
    /// How long the rows of `rule_results` (day files in `data_dir/rules/`) are kept.
    #[serde(with = "humantime_serde")]
    pub results_retention: Duration,
    /// Keys (a host, an app, a template...; with daily seasonality each hour of each) a
    /// built-in detector keeps a baseline for. Past it, the keys seen least recently are
    /// forgotten (`logwarden_detect_baselines_evicted_total`), so memory and the size of
    /// `baselines.json` stay bounded however many distinct hosts and apps arrive.
    pub max_baseline_keys: usize,
    /// The learned baselines are written to `data_dir/detect/baselines.json` at most this
    /// often, and at shutdown: a crash forgets at most this much learning.
    #[serde(with = "humantime_serde")]
    pub baselines_save_interval: Duration,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            templates: TemplatesConfig::default(),
            allowed_lateness: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            volume: BaselineConfig::default(),
            error_ratio: BaselineConfig { min_events: 10, ..BaselineConfig::default() },
            new_templates: BaselineConfig { warmup: Duration::from_secs(3600), ..BaselineConfig::default() },
            results_retention: Duration::from_secs(7 * 24 * 3600),
            max_baseline_keys: 50_000,
            baselines_save_interval: Duration::from_secs(300),
        }
    }
}

/// A detector that compares each window with a learned baseline.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineConfig {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// A baseline may alert only once it has been learned for this long (event time).
    #[serde(with = "humantime_serde")]
    pub warmup: Duration,
    /// How many deviations from the baseline make an anomaly.
    pub sensitivity: f64,
    /// Fewer events (errors, for the error ratio) than this never alert: a spike must reach
    /// it, and a drop or silence needs a baseline at least this high.
    pub min_events: u64,
    /// How many windows the baseline averages over (an exponentially weighted mean).
    pub memory: u32,
    /// `daily`: a baseline per hour of the day (UTC), for traffic that follows office hours
    /// (volume only). Each hour then warms up on its own.
    pub seasonality: Seasonality,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Seasonality {
    #[default]
    None,
    Daily,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            enabled: true,
            window: Duration::from_secs(60),
            warmup: Duration::from_secs(1800),
            sensitivity: 4.0,
            min_events: 20,
            memory: 30,
            seasonality: Seasonality::None,
        }
    }
}

/// Log template mining: every event's `template_id`, and the `templates` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemplatesConfig {
    pub enabled: bool,
}

impl Default for TemplatesConfig {
    fn default() -> Self {
        TemplatesConfig { enabled: true }
    }
}
