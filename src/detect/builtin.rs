//! The built-in detectors, each a rule with its own SQL whose window output is judged against
//! learned baselines instead of an `alert_when` condition:
//!
//! - `volume`: events per host, per app and per severity; spikes, drops, a host gone silent;
//! - `error_ratio`: the share of severity 0–3 per app;
//! - `new_templates`: a template first seen in the window at warning or worse, and a known
//!   template's rate jump.
//!
//! Their baselines are kept in `data_dir/detect/baselines.json`, replaced at most every
//! `detect.baselines_save_interval` and at shutdown; each detector keeps at most
//! `detect.max_baseline_keys` keys (the least recently seen are forgotten past it), which bounds
//! both memory and what one save writes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};

use super::baseline::{Baselines, Verdict};
use super::templates::Shared;
use crate::alert::{Instance, rfc3339, window_query};
use crate::config::{BaselineConfig, DetectConfig, RuleConfig, Seasonality};
use crate::stream::WindowOutput;
use crate::stream::rule::displayed_rows as rows;

pub const VOLUME: &str = "volume";
pub const ERROR_RATIO: &str = "error_ratio";
pub const NEW_TEMPLATES: &str = "new_templates";
/// Separates a baseline key from its hour of the day (a byte no host or app name holds).
const SEASON: char = '\u{1f}';
/// Rule names the built-in detectors take.
pub const NAMES: &[&str] = &[VOLUME, ERROR_RATIO, NEW_TEMPLATES];

/// The enabled detectors as rules.
pub fn rules(cfg: &DetectConfig) -> Vec<RuleConfig> {
    let rule = |name: &str, c: &BaselineConfig, sql: &str| RuleConfig {
        name: name.into(),
        window: c.window,
        sql: sql.into(),
        severity: "warning".into(),
        ..RuleConfig::default()
    };
    let mut out = Vec::new();
    if cfg.volume.enabled {
        out.push(rule(
            VOLUME,
            &cfg.volume,
            "SELECT host, app, severity, count(*) AS events FROM events GROUP BY host, app, severity",
        ));
    }
    if cfg.error_ratio.enabled && !error_ratio_from_volume(cfg) {
        out.push(rule(
            ERROR_RATIO,
            &cfg.error_ratio,
            "SELECT app, count(*) AS events, sum(CASE WHEN severity <= 3 THEN 1 ELSE 0 END) AS errors \
             FROM events WHERE app IS NOT NULL GROUP BY app",
        ));
    }
    if cfg.new_templates.enabled && cfg.templates.enabled {
        out.push(rule(
            NEW_TEMPLATES,
            &cfg.new_templates,
            "SELECT template_id, count(*) AS events, min(severity) AS severity, \
             first_value(host) AS host, first_value(app) AS app \
             FROM events WHERE template_id > 0 GROUP BY template_id",
        ));
    }
    out
}

/// (app, events, errors) summed from the volume rule's rows (per host, app and severity).
fn per_app_from_volume(batches: &[RecordBatch]) -> Vec<(String, f64, f64)> {
    let mut per_app: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for row in rows(batches) {
        let (Some(app), Some(n)) = (row.get("app"), number(&row, "events")) else { continue };
        let error = row.get("severity").and_then(|v| v.parse::<u8>().ok()).is_some_and(|s| s <= 3);
        let e = per_app.entry(app.clone()).or_default();
        e.0 += n;
        if error {
            e.1 += n;
        }
    }
    per_app.into_iter().map(|(app, (events, errors))| (app, events, errors)).collect()
}

fn number(row: &HashMap<String, String>, column: &str) -> Option<f64> {
    row.get(column)?.parse().ok()
}

/// With the same window, the volume rule's rows (per host, app and severity) hold the error
/// ratio's numbers too, and the events are aggregated once instead of twice.
fn error_ratio_from_volume(cfg: &DetectConfig) -> bool {
    cfg.volume.enabled && cfg.error_ratio.enabled && cfg.volume.window == cfg.error_ratio.window
}

#[derive(Default, Serialize, Deserialize)]
struct State {
    volume: Baselines,
    error_ratio: Baselines,
    templates: Baselines,
    /// End of the first `new_templates` window: its warm-up counts from there.
    templates_since: Option<i64>,
}

/// `logwarden_detect_baselines_evicted_total` and `logwarden_detect_baseline_keys`, by detector.
#[derive(Clone)]
pub struct BaselineMetrics {
    pub evicted: prometheus::IntCounterVec,
    pub keys: prometheus::IntGaugeVec,
}

pub struct Detectors {
    cfg: DetectConfig,
    state: State,
    path: PathBuf,
    templates: Option<Arc<Shared>>,
    metrics: Option<BaselineMetrics>,
    /// Learned since the last save.
    dirty: bool,
    last_save: Option<Instant>,
    /// Whether reaching `max_baseline_keys` has been logged.
    told_full: bool,
}

impl Detectors {
    /// The detectors with the baselines saved in `dir` (none if the file is missing or does
    /// not parse: baselines are learned again, and the error is logged).
    pub fn load(
        dir: &Path,
        cfg: DetectConfig,
        templates: Option<Arc<Shared>>,
        metrics: Option<BaselineMetrics>,
    ) -> Detectors {
        let path = dir.join("baselines.json");
        let mut state: State = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::error!(path = %path.display(), error = %e, "unreadable detector baselines; learning them again");
                State::default()
            }),
            Err(_) => State::default(),
        };
        for b in [&mut state.volume, &mut state.error_ratio, &mut state.templates] {
            b.fill_in_seen();
        }
        let mut d = Detectors {
            cfg,
            state,
            path,
            templates,
            metrics,
            dirty: false,
            last_save: None,
            told_full: false,
        };
        // A lower limit than the file was written with applies at once.
        d.trim();
        d
    }

    /// Write the baselines if anything was learned since the last save (at shutdown, and
    /// every `baselines_save_interval`). A failed write (a full disk) is logged and tried
    /// again at the next save; the file keeps its previous content.
    pub fn save(&mut self) {
        if !self.dirty {
            return;
        }
        self.last_save = Some(Instant::now());
        let written = serde_json::to_vec(&self.state)
            .map_err(std::io::Error::other)
            .and_then(|bytes| crate::store::write_atomic(&self.path, &bytes));
        match written {
            Ok(()) => self.dirty = false,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e,
                    "failed to save the detector baselines; tried again at the next save")
            }
        }
    }

    /// Each detector down to `max_baseline_keys`, counting what is forgotten.
    fn trim(&mut self) {
        let max = self.cfg.max_baseline_keys.max(1);
        let detectors = [
            (VOLUME, &mut self.state.volume),
            (ERROR_RATIO, &mut self.state.error_ratio),
            (NEW_TEMPLATES, &mut self.state.templates),
        ];
        for (name, b) in detectors {
            let evicted = b.trim(max);
            if evicted > 0 && !self.told_full {
                self.told_full = true;
                tracing::warn!(
                    detector = name,
                    max_baseline_keys = max,
                    "a detector has more keys than detect.max_baseline_keys; the baselines seen least recently are forgotten (counted in logwarden_detect_baselines_evicted_total)"
                );
            }
            if let Some(m) = &self.metrics {
                if evicted > 0 {
                    m.evicted.with_label_values(&[name]).inc_by(evicted as u64);
                }
                m.keys.with_label_values(&[name]).set(b.keys.len() as i64);
            }
        }
    }

    /// New thresholds, windows and switches from a reload. The learned baselines stay, but
    /// for a detector whose window changed: they count events per window.
    pub fn reconfigure(&mut self, cfg: DetectConfig) {
        if cfg.volume.window != self.cfg.volume.window {
            self.state.volume = Baselines::default();
        }
        if cfg.error_ratio.window != self.cfg.error_ratio.window {
            self.state.error_ratio = Baselines::default();
        }
        if cfg.new_templates.window != self.cfg.new_templates.window {
            self.state.templates = Baselines::default();
        }
        self.cfg = cfg;
    }

    /// The alert instances of a built-in detector's window, or `None` for other rules.
    pub fn evaluate(&mut self, out: &WindowOutput<'_>) -> Option<Vec<Instance>> {
        let instances = match out.rule.name.as_str() {
            VOLUME if error_ratio_from_volume(&self.cfg) => {
                let mut found = self.volume(out);
                found.extend(self.error_ratio(out, per_app_from_volume(out.batches)));
                found
            }
            VOLUME => self.volume(out),
            ERROR_RATIO => {
                let per_app = rows(out.batches)
                    .into_iter()
                    .filter_map(|r| {
                        Some((r.get("app")?.clone(), number(&r, "events")?, number(&r, "errors")?))
                    })
                    .collect();
                self.error_ratio(out, per_app)
            }
            NEW_TEMPLATES => self.new_templates(out),
            _ => return None,
        };
        self.trim();
        self.dirty = true;
        if self.last_save.is_none_or(|t| t.elapsed() >= self.cfg.baselines_save_interval) {
            self.save();
        }
        Some(instances)
    }

    fn volume(&mut self, out: &WindowOutput<'_>) -> Vec<Instance> {
        let cfg = &self.cfg.volume;
        let mut counts: BTreeMap<String, f64> = BTreeMap::new();
        for row in rows(out.batches) {
            let n = row.get("events").and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            for dim in ["host", "app", "severity"] {
                if let Some(v) = row.get(dim).filter(|v| !v.is_empty()) {
                    *counts.entry(format!("{dim}={v}")).or_default() += n;
                }
            }
        }
        // With daily seasonality each key has a baseline per hour of the day (UTC), and a
        // window is judged against its own hour's.
        let suffix = match cfg.seasonality {
            Seasonality::None => String::new(),
            Seasonality::Daily => {
                format!("{SEASON}{:02}", out.start.div_euclid(3_600_000_000_000).rem_euclid(24))
            }
        };
        // Keys with events in the window (Some), and known keys without (None: judged as 0).
        let mut counts: BTreeMap<String, Option<f64>> =
            counts.into_iter().map(|(k, n)| (k + &suffix, Some(n))).collect();
        let b = &mut self.state.volume;
        for k in b.keys.keys().filter(|k| k.ends_with(&suffix) && (!suffix.is_empty() || !k.contains(SEASON)))
        {
            counts.entry(k.clone()).or_insert(None);
        }
        let mut found = Vec::new();
        for (key, n) in counts {
            let floor = b.mean(&key).unwrap_or(n.unwrap_or(0.0)).sqrt().max(1.0);
            let verdict = match n {
                Some(n) => b.observe(&key, n, out.end, cfg, floor),
                None => b.observe_absent(&key, out.end, cfg, floor),
            };
            let key = key.strip_suffix(suffix.as_str()).unwrap_or(&key);
            let (dim, value) = key.split_once('=').unwrap_or((key, ""));
            let (name, what) = match verdict {
                Verdict::Spike(v, m) if v >= cfg.min_events as f64 => {
                    ("log_volume_spike", format!("{v} events, baseline {m:.1}"))
                }
                Verdict::Drop(v, m) if m >= cfg.min_events as f64 => {
                    if v == 0.0 && dim == "host" {
                        ("host_silent", format!("no events, baseline {m:.1}"))
                    } else {
                        ("log_volume_drop", format!("{v} events, baseline {m:.1}"))
                    }
                }
                _ => continue,
            };
            // The alert's own `severity` label is taken: the dimension is `log_severity`.
            let (label, filter) = if dim == "severity" {
                ("log_severity", format!("severity = {value}"))
            } else {
                (dim, format!("{dim} = '{}'", value.replace('\'', "''")))
            };
            found.push(instance(
                out,
                VOLUME,
                name,
                &[(label, value)],
                &format!("{label}={value}: {what}"),
                &filter,
                None,
            ));
        }
        b.forget_faded();
        found
    }

    /// `per_app`: (app, events, errors) of the window.
    fn error_ratio(&mut self, out: &WindowOutput<'_>, per_app: Vec<(String, f64, f64)>) -> Vec<Instance> {
        let cfg = &self.cfg.error_ratio;
        let b = &mut self.state.error_ratio;
        let mut found = Vec::new();
        for (app, events, errors) in per_app {
            if app.is_empty() || events <= 0.0 {
                continue;
            }
            let ratio = errors / events;
            if let Verdict::Spike(r, m) = b.observe(&format!("app={app}"), ratio, out.end, cfg, 0.02)
                && errors >= cfg.min_events as f64
            {
                let what = format!(
                    "{:.1}% of events are errors ({errors} of {events}), baseline {:.1}%",
                    r * 100.0,
                    m * 100.0
                );
                found.push(instance(
                    out,
                    ERROR_RATIO,
                    "error_ratio_high",
                    &[("app", &app)],
                    &format!("app={app}: {what}"),
                    &format!("app = '{}' AND severity <= 3", app.replace('\'', "''")),
                    None,
                ));
            }
        }
        found
    }

    fn new_templates(&mut self, out: &WindowOutput<'_>) -> Vec<Instance> {
        let cfg = &self.cfg.new_templates;
        let since = *self.state.templates_since.get_or_insert(out.end);
        let warm = out.end.saturating_sub(since) as u128 >= cfg.warmup.as_nanos();
        let mut counts: BTreeMap<String, Option<f64>> = BTreeMap::new();
        let mut found = Vec::new();
        for row in rows(out.batches) {
            let Some(id) = row.get("template_id").and_then(|v| v.parse::<u32>().ok()) else { continue };
            let events = row.get("events").and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            counts.insert(format!("template_id={id}"), Some(events));
            let severity = row.get("severity").and_then(|v| v.parse::<u8>().ok());
            let Some(t) = self.templates.as_ref().and_then(|s| s.get(id)) else { continue };
            // A template merged since into an older one is a variant of a known statement.
            let first_here = (out.start..out.end).contains(&t.first_seen) && t.merged_into.is_none();
            if warm && first_here && severity.is_some_and(|s| s <= 4) {
                let host = row.get("host").cloned().unwrap_or_default();
                let app = row.get("app").cloned().unwrap_or_default();
                let what = format!(
                    "template {id} first seen at severity {} from {host}/{app} ({events} events): {}",
                    severity.unwrap_or(0),
                    t.pattern()
                );
                let id = id.to_string();
                found.push(instance(
                    out,
                    NEW_TEMPLATES,
                    "new_log_template",
                    &[("template_id", &id), ("app", &app)],
                    &what,
                    &format!("template_id = {id}"),
                    Some(&t.example),
                ));
            }
        }
        let b = &mut self.state.templates;
        for k in b.keys.keys() {
            counts.entry(k.clone()).or_insert(None);
        }
        for (key, n) in counts {
            let floor = b.mean(&key).unwrap_or(n.unwrap_or(0.0)).sqrt().max(1.0);
            let verdict = match n {
                Some(n) => b.observe(&key, n, out.end, cfg, floor),
                None => b.observe_absent(&key, out.end, cfg, floor),
            };
            if let Verdict::Spike(v, m) = verdict
                && v >= cfg.min_events as f64
            {
                let id = key.trim_start_matches("template_id=").to_owned();
                let id_num = id.parse::<u32>().unwrap_or(0);
                let t = self.templates.as_ref().and_then(|s| s.get(id_num));
                let pattern = t.as_ref().map(|t| t.pattern()).unwrap_or_default();
                found.push(instance(
                    out,
                    NEW_TEMPLATES,
                    "log_template_rate",
                    &[("template_id", &id)],
                    &format!("template {id}: {v} events, baseline {m:.1}: {pattern}"),
                    &format!("template_id = {id}"),
                    t.as_ref().map(|t| t.example.as_str()),
                ));
            }
        }
        b.forget_faded();
        found
    }
}

/// An alert instance of a detector: labels, a summary with the numbers, a query for the
/// window's matching events, and a sample event when there is one.
fn instance(
    out: &WindowOutput<'_>,
    detector: &str,
    alertname: &str,
    labels: &[(&str, &str)],
    what: &str,
    filter: &str,
    example: Option<&str>,
) -> Instance {
    let mut l = BTreeMap::new();
    l.insert("alertname".to_owned(), alertname.to_owned());
    l.insert("severity".to_owned(), out.rule.severity.clone());
    l.insert("detector".to_owned(), detector.to_owned());
    for (k, v) in labels {
        if !v.is_empty() {
            l.insert((*k).to_owned(), (*v).to_owned());
        }
    }
    let (start, end) = (rfc3339(out.start), rfc3339(out.end));
    let mut a = BTreeMap::new();
    a.insert("summary".to_owned(), format!("{what} in {start} .. {end}"));
    a.insert("query".to_owned(), window_query(out.start, out.end, &[filter.to_owned()]));
    if let Some(e) = example {
        a.insert("example".to_owned(), e.to_owned());
    }
    Instance { labels: l, annotations: a }
}
