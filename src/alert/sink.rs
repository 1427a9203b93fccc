//! Where a rule's closed window goes: its rows into `rule_results`, its alerting rows into
//! alert instances (text columns become labels, the others values in the summary), and the
//! alerts that changed to the notifier.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, RecordBatch};

use super::notify::Notifier;
use super::{Alerts, Instance, rfc3339, window_query};
use crate::stream::rule::{displayed_rows, text_columns};
use crate::stream::{Sink, WindowOutput};

/// One output row of a rule's window, as a line of `data_dir/rules/results-DATE.jsonl`.
#[derive(serde::Serialize)]
pub struct ResultRow {
    pub rule: String,
    /// RFC 3339.
    pub window_start: String,
    pub window_end: String,
    pub alert: bool,
    /// The row as a JSON object of its columns.
    pub row: String,
}

/// The `rule_results` files: one per UTC day (of writing), appended and fsynced at each
/// window's close, as the audit files are (a failed append is cut back, see `jsonl`); day
/// files older than the retention are deleted when a new day starts.
pub struct Results {
    dir: PathBuf,
    retention: Duration,
    file: Option<(String, std::fs::File)>,
    /// Rows lost to failed writes since the last success (None: the last write succeeded).
    lost: Option<usize>,
}

impl Results {
    pub fn new(dir: PathBuf, retention: Duration) -> Results {
        Results { dir, retention, file: None, lost: None }
    }

    fn push(&mut self, rows: &[ResultRow]) {
        if rows.is_empty() {
            return;
        }
        let mut text = String::new();
        for r in rows {
            if let Ok(line) = serde_json::to_string(r) {
                text.push_str(&line);
                text.push('\n');
            }
        }
        match self.append(text.as_bytes()) {
            Ok(()) => {
                if let Some(n) = self.lost.take() {
                    tracing::warn!(dir = %self.dir.display(), lost_rows = n, "rule results are written again");
                }
            }
            Err(e) => {
                // Logged once per run of failures: a full disk fails every window.
                if self.lost.is_none() {
                    tracing::warn!(dir = %self.dir.display(), error = %e,
                        "failed to write rule results; their rows are missing from rule_results until writes succeed");
                }
                *self.lost.get_or_insert(0) += rows.len();
            }
        }
    }

    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
        if self.file.as_ref().is_none_or(|(d, _)| *d != day) {
            std::fs::create_dir_all(&self.dir)?;
            let path = self.dir.join(format!("results-{day}.jsonl"));
            let f = crate::jsonl::open_append(&path)?;
            self.file = Some((day, f));
            self.prune();
        }
        match &mut self.file {
            Some((_, f)) => crate::jsonl::append_lines(f, bytes).map(drop),
            None => Ok(()),
        }
    }

    /// Delete day files whose day ended more than the retention ago.
    fn prune(&self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return };
        let cutoff =
            chrono::Utc::now() - chrono::Duration::from_std(self.retention).unwrap_or(chrono::Duration::MAX);
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(day) = name.strip_prefix("results-").and_then(|n| n.strip_suffix(".jsonl")) else {
                continue;
            };
            if let Ok(d) = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
                && let Some(end) = d.succ_opt().and_then(|n| n.and_hms_opt(0, 0, 0))
                && end.and_utc() < cutoff
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

pub struct AlertSink {
    pub alerts: Arc<Alerts>,
    pub results: Results,
    pub notifier: Arc<Notifier>,
    /// Seconds from a window's close to its notifications being queued.
    pub latency: prometheus::Histogram,
    /// The built-in detectors, which judge their rules' rows themselves.
    pub detectors: crate::detect::builtin::Detectors,
}

/// Columns of `logs` that a label may filter on in an alert's query.
const LOG_COLUMNS: &[&str] = &["host", "app", "procid", "msgid", "peer", "client_id", "listener"];

impl Sink for AlertSink {
    fn detect_changed(&mut self, cfg: &crate::config::DetectConfig) {
        self.detectors.reconfigure(cfg.clone());
    }

    fn stopped(&mut self) {
        self.detectors.save();
    }

    fn rule_removed(&mut self, rule: &str) {
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let resolved = self.alerts.resolve_rule(rule, now);
        if !resolved.is_empty() {
            tracing::info!(rule, alerts = resolved.len(), "rule removed; its alerts are resolved");
            self.notifier.enqueue(&resolved, now);
        }
    }

    fn window_closed(&mut self, out: &WindowOutput<'_>) {
        let rule = out.rule;
        let mut rows = Vec::new();
        let mut instances = Vec::new();
        let samples = sample_lines(out.samples);
        for (batch, alerting) in out.batches.iter().zip(out.alerting) {
            let json = rows_as_json(batch);
            let text = text_columns(batch);
            let schema = batch.schema();
            let shown = displayed_rows(std::slice::from_ref(batch));
            for (i, cells) in shown.iter().enumerate() {
                let alert = alerting.is_valid(i) && alerting.value(i);
                rows.push(ResultRow {
                    rule: rule.name.clone(),
                    window_start: rfc3339(out.start),
                    window_end: rfc3339(out.end),
                    alert,
                    row: json.get(i).cloned().unwrap_or_default(),
                });
                if !alert {
                    continue;
                }
                let mut labels = BTreeMap::new();
                labels.insert("alertname".to_owned(), rule.name.clone());
                labels.insert("severity".to_owned(), rule.severity.clone());
                labels.extend(rule.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
                let mut values = Vec::new();
                let mut filters = Vec::new();
                for (c, f) in schema.fields().iter().enumerate() {
                    let v = cells.get(f.name());
                    match (text.contains(&c), v) {
                        (true, Some(v)) => {
                            if LOG_COLUMNS.contains(&f.name().as_str()) {
                                filters.push(format!("{} = '{}'", f.name(), v.replace('\'', "''")));
                            }
                            labels.insert(f.name().clone(), v.clone());
                        }
                        (true, None) => {}
                        (false, v) => {
                            values.push(format!("{}={}", f.name(), v.map_or("null", String::as_str)))
                        }
                    }
                }
                let mut annotations = BTreeMap::new();
                let keys: Vec<String> = text
                    .iter()
                    .filter_map(|&c| {
                        labels.get(schema.field(c).name()).map(|v| format!("{}={v}", schema.field(c).name()))
                    })
                    .collect();
                annotations.insert(
                    "summary".to_owned(),
                    format!(
                        "{}{}: {} in {} .. {} ({} events in the window)",
                        rule.name,
                        if keys.is_empty() { String::new() } else { format!(" {{{}}}", keys.join(", ")) },
                        if values.is_empty() { "matched".to_owned() } else { values.join(", ") },
                        rfc3339(out.start),
                        rfc3339(out.end),
                        out.events
                    ),
                );
                let query = window_query(out.start, out.end, &filters);
                annotations.insert("query".to_owned(), query);
                annotations.insert("rule_sql".to_owned(), rule.sql.clone());
                // Events of this instance: samples agreeing with its labels on host and app.
                let mine: Vec<&str> = samples
                    .iter()
                    .filter(|(cols, _)| {
                        ["host", "app"].iter().all(|c| match (labels.get(*c), cols.get(*c)) {
                            (Some(want), Some(got)) => want == got,
                            _ => true,
                        })
                    })
                    .take(3)
                    .map(|(_, line)| line.as_str())
                    .collect();
                if !mine.is_empty() {
                    annotations.insert("samples".to_owned(), mine.join("\n"));
                }
                instances.push(Instance { labels, annotations });
            }
        }
        self.results.push(&rows);
        if let Some(found) = self.detectors.evaluate(out) {
            instances = found;
        }
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let changed = self.alerts.evaluate(&rule.name, (out.start, out.end), instances, now);
        if !changed.is_empty() {
            self.notifier.enqueue(&changed, now);
            self.latency.observe(out.closed_at.elapsed().as_secs_f64());
        }
    }
}

/// Sample events as (host/app values, `timestamp host app[severity]: message`).
fn sample_lines(batches: &[RecordBatch]) -> Vec<(std::collections::HashMap<String, String>, String)> {
    displayed_rows(batches)
        .into_iter()
        .map(|mut r| {
            let get = |r: &std::collections::HashMap<String, String>, k: &str| {
                r.get(k).map_or("-", String::as_str).to_owned()
            };
            let line = format!(
                "{} {} {}[{}]: {}",
                get(&r, "timestamp"),
                get(&r, "host"),
                get(&r, "app"),
                get(&r, "severity"),
                get(&r, "message")
            );
            r.retain(|k, _| k == "host" || k == "app");
            (r, line)
        })
        .collect()
}

/// Each row of `batch` as a JSON object.
fn rows_as_json(batch: &RecordBatch) -> Vec<String> {
    let mut buf = Vec::new();
    let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
    if w.write(batch).and_then(|_| w.finish()).is_err() {
        return Vec::new();
    }
    String::from_utf8_lossy(&buf).lines().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(rule: &str) -> ResultRow {
        ResultRow {
            rule: rule.into(),
            window_start: "2026-01-01T00:00:00.000Z".into(),
            window_end: "2026-01-01T00:01:00.000Z".into(),
            alert: false,
            row: "{}".into(),
        }
    }

    #[test]
    fn rows_after_a_line_cut_short_stay_readable() {
        let dir = tempfile::tempdir().unwrap();
        // A crash (or a full disk) left today's file ending in the middle of a line.
        let day = chrono::Utc::now().format("%Y-%m-%d");
        std::fs::write(dir.path().join(format!("results-{day}.jsonl")), b"{\"rule\":\"cut\",\"window_st")
            .unwrap();
        let mut results = Results::new(dir.path().to_path_buf(), Duration::from_secs(86_400));
        results.push(&[row("after")]);
        let damaged = crate::jsonl::DamagedLines::new("rule_results", None);
        let batches = crate::jsonl::read_dir(dir.path(), crate::alert::table::results_schema(), &damaged)
            .expect("the table must stay readable");
        let text = arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 1, "{text}");
        assert!(text.contains("after"), "{text}");
    }
}
