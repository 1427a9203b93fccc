//! Alerts: their identity (a fingerprint of the labels), the firing → resolved lifecycle, the
//! state kept in `data_dir/alerts/state.json` so that a restart neither forgets a firing alert
//! nor announces it again, and the `alerts` table.
//!
//! Rules report, at each window's close, the complete set of alert instances that hold for
//! that window ([`Alerts::evaluate`]); an instance that is new fires, one that is missing
//! resolves. Notifications leave through [`notify::Notifier`].

pub mod http;
pub mod notify;
pub mod sink;
pub mod table;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

/// Resolved alerts kept for the `alerts` table, newest last.
const HISTORY: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// One alert: an instance of a rule (or detector) for one set of label values.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Alert {
    pub fingerprint: String,
    pub rule: String,
    pub severity: String,
    pub status: Status,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Wall-clock ns: when it started firing, when it resolved.
    pub starts_at: i64,
    pub ends_at: Option<i64>,
    /// The event-time window (ns) that last found it.
    pub window_start: i64,
    pub window_end: i64,
    /// Wall-clock ns of the last webhook notification about it.
    #[serde(default)]
    pub notified_at: i64,
}

/// An alert as a rule found it in one window.
pub struct Instance {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// A stable identity for a set of labels: the first 16 hex digits of SHA-256 over the sorted
/// `name=value` pairs.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut h = crate::crypto::Sha256::new();
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update(&[0xff]);
        h.update(v.as_bytes());
        h.update(&[0xfe]);
    }
    h.finish().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("failed to {op} {path}: {source}")]
    Io { op: &'static str, path: String, source: std::io::Error },
    #[error("{path} is not an alert state file this version can read: {source}")]
    Format { path: String, source: serde_json::Error },
}

#[derive(Default, Serialize, Deserialize)]
struct State {
    firing: BTreeMap<String, Alert>,
    history: VecDeque<Alert>,
}

/// The daemon's alerts, shared by the rule thread, the notifier and queries.
pub struct Alerts {
    state: Mutex<State>,
    path: PathBuf,
    firing_gauge: Option<prometheus::IntGaugeVec>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Alerts {
    /// The alerts saved in `dir/state.json`, or none.
    pub fn load(
        dir: &Path,
        firing_gauge: Option<prometheus::IntGaugeVec>,
    ) -> Result<Arc<Alerts>, AlertError> {
        let path = dir.join("state.json");
        let state = read_state(&path)?;
        let alerts = Alerts { state: Mutex::new(state), path, firing_gauge };
        alerts.count_firing(&alerts.lock());
        Ok(Arc::new(alerts))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every firing alert and the recent resolved ones, for the `alerts` table.
    pub fn snapshot(&self) -> Vec<Alert> {
        let s = self.lock();
        s.history.iter().chain(s.firing.values()).cloned().collect()
    }

    pub fn firing(&self) -> Vec<Alert> {
        self.lock().firing.values().cloned().collect()
    }

    /// Record that webhooks heard of these alerts at `now`.
    pub fn mark_notified(&self, fingerprints: &[String], now: i64) {
        let mut s = self.lock();
        for f in fingerprints {
            if let Some(a) = s.firing.get_mut(f) {
                a.notified_at = now;
            }
        }
    }

    /// The instances (each labelled with its `severity`) `rule` finds in window `[start, end)`, against what was firing: returns
    /// the alerts that started firing and those that resolved (to notify), having updated the
    /// rest.
    pub fn evaluate(&self, rule: &str, window: (i64, i64), instances: Vec<Instance>, now: i64) -> Vec<Alert> {
        let mut s = self.lock();
        let mut changed = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for inst in instances {
            let fp = fingerprint(&inst.labels);
            seen.insert(fp.clone());
            match s.firing.get_mut(&fp) {
                Some(a) => {
                    a.annotations = inst.annotations;
                    a.window_start = window.0;
                    a.window_end = window.1;
                }
                None => {
                    let a = Alert {
                        fingerprint: fp.clone(),
                        rule: rule.to_owned(),
                        severity: inst.labels.get("severity").cloned().unwrap_or_default(),
                        status: Status::Firing,
                        labels: inst.labels,
                        annotations: inst.annotations,
                        starts_at: now,
                        ends_at: None,
                        window_start: window.0,
                        window_end: window.1,
                        notified_at: now,
                    };
                    changed.push(a.clone());
                    s.firing.insert(fp, a);
                }
            }
        }
        let gone: Vec<String> = s
            .firing
            .iter()
            .filter(|(fp, a)| a.rule == rule && !seen.contains(*fp))
            .map(|(fp, _)| fp.clone())
            .collect();
        for fp in gone {
            if let Some(mut a) = s.firing.remove(&fp) {
                a.status = Status::Resolved;
                a.ends_at = Some(now);
                a.window_start = window.0;
                a.window_end = window.1;
                changed.push(a.clone());
                s.history.push_back(a);
                if s.history.len() > HISTORY {
                    s.history.pop_front();
                }
            }
        }
        self.count_firing(&s);
        if !changed.is_empty()
            && let Err(e) = write_state(&self.path, &s)
        {
            tracing::error!(error = %e, "failed to save the alert state; a restart may announce these alerts again");
        }
        changed
    }

    /// Resolve every firing alert of `rule` (taken out of the config).
    pub fn resolve_rule(&self, rule: &str, now: i64) -> Vec<Alert> {
        let window =
            self.lock().firing.values().find(|a| a.rule == rule).map(|a| (a.window_start, a.window_end));
        match window {
            Some(w) => self.evaluate(rule, w, Vec::new(), now),
            None => Vec::new(),
        }
    }

    /// Resolve every firing alert of the rules not in `keep`.
    pub fn resolve_others(&self, keep: &[&str], now: i64) -> Vec<Alert> {
        let gone: std::collections::BTreeSet<String> = self
            .lock()
            .firing
            .values()
            .map(|a| a.rule.clone())
            .filter(|r| !keep.contains(&r.as_str()))
            .collect();
        gone.iter().flat_map(|rule| self.resolve_rule(rule, now)).collect()
    }

    fn count_firing(&self, s: &State) {
        let Some(g) = &self.firing_gauge else { return };
        let mut counts: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for a in s.firing.values() {
            *counts.entry((&a.rule, &a.severity)).or_default() += 1;
        }
        // Series of rules that no longer fire go to 0 rather than vanish.
        g.reset();
        for ((rule, severity), n) in counts {
            g.with_label_values(&[rule, severity]).set(n);
        }
    }

    /// Save now (at shutdown, after `mark_notified`).
    pub fn save(&self) -> Result<(), AlertError> {
        write_state(&self.path, &self.lock())
    }
}

fn read_state(path: &Path) -> Result<State, AlertError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|source| AlertError::Format { path: path.display().to_string(), source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(source) => Err(AlertError::Io { op: "read", path: path.display().to_string(), source }),
    }
}

/// Read-only: the saved alerts (for `logwarden query`).
pub fn saved(dir: &Path) -> Result<Vec<Alert>, AlertError> {
    let s = read_state(&dir.join("state.json"))?;
    Ok(s.history.into_iter().chain(s.firing.into_values()).collect())
}

fn write_state(path: &Path, s: &State) -> Result<(), AlertError> {
    let io = |op, source| AlertError::Io { op, path: path.display().to_string(), source };
    let bytes = serde_json::to_vec(s).map_err(|e| io("encode", std::io::Error::other(e)))?;
    crate::store::write_atomic(path, &bytes).map_err(|e| io("write", e))
}

/// The query an alert offers to see its events: the window's `logs` rows matching `filters`
/// (SQL conditions), oldest first.
pub fn window_query(start: i64, end: i64, filters: &[String]) -> String {
    let mut q = format!(
        "SELECT * FROM logs WHERE timestamp >= '{}' AND timestamp < '{}'",
        rfc3339(start),
        rfc3339(end)
    );
    for f in filters {
        q.push_str(" AND ");
        q.push_str(f);
    }
    q.push_str(" ORDER BY timestamp LIMIT 100");
    q
}

/// RFC 3339 (UTC, ms) for ns since the epoch.
pub fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
