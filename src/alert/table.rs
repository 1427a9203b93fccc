//! The `alerts` and `rule_results` tables: snapshots of the alert state and of the newest rule
//! output rows, built when a query scans them.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::Result;
use datafusion::error::DataFusionError;

use super::{Alert, Alerts};
use crate::query::snapshot::SnapshotTable;
use crate::store::{ALERTS_FILE, Store};

fn ts(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), nullable)
}

pub fn alerts_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("fingerprint", DataType::Utf8, false),
        Field::new("rule", DataType::Utf8, false),
        Field::new("severity", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        ts("starts_at", false),
        ts("ends_at", true),
        ts("window_start", false),
        ts("window_end", false),
        Field::new("labels", DataType::Utf8, false),
        Field::new("summary", DataType::Utf8, true),
        Field::new("annotations", DataType::Utf8, false),
        // The node whose rules raised it (null without a bucket).
        Field::new("node", DataType::Utf8, true),
    ]))
}

pub fn results_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("rule", DataType::Utf8, false),
        ts("window_start", false),
        ts("window_end", false),
        Field::new("alert", DataType::Boolean, false),
        Field::new("row", DataType::Utf8, false),
    ]))
}

fn utc(v: Vec<i64>) -> TimestampNanosecondArray {
    TimestampNanosecondArray::from(v).with_timezone("UTC")
}

fn alerts_batch(alerts: &[Alert], node: Option<&str>) -> Result<RecordBatch, arrow::error::ArrowError> {
    let s = |f: &dyn Fn(&Alert) -> String| StringArray::from_iter_values(alerts.iter().map(f));
    RecordBatch::try_new(
        alerts_schema(),
        vec![
            Arc::new(s(&|a| a.fingerprint.clone())),
            Arc::new(s(&|a| a.rule.clone())),
            Arc::new(s(&|a| a.severity.clone())),
            Arc::new(s(&|a| a.status.as_str().to_owned())),
            Arc::new(utc(alerts.iter().map(|a| a.starts_at).collect())),
            Arc::new(
                TimestampNanosecondArray::from(alerts.iter().map(|a| a.ends_at).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(utc(alerts.iter().map(|a| a.window_start).collect())),
            Arc::new(utc(alerts.iter().map(|a| a.window_end).collect())),
            Arc::new(s(&|a| serde_json::to_string(&a.labels).unwrap_or_default())),
            Arc::new(StringArray::from(
                alerts.iter().map(|a| a.annotations.get("summary").cloned()).collect::<Vec<_>>(),
            )),
            Arc::new(s(&|a| serde_json::to_string(&a.annotations).unwrap_or_default())),
            Arc::new(StringArray::from_iter(alerts.iter().map(|_| node))),
        ],
    )
}

/// Where the `alerts` rows come from.
#[derive(Debug)]
pub enum AlertsSource {
    /// The daemon's state.
    Live(Arc<Alerts>),
    /// `data_dir/alerts`, read when scanned (`logwarden query`).
    Dir(std::path::PathBuf),
}

/// The `alerts` table: this node's from `source`; with a bucket, then those the other nodes
/// published (see [`crate::store::ALERTS_FILE`]), each row with its `node`.
pub fn alerts_table(source: AlertsSource, store: Store) -> SnapshotTable {
    let read = move || {
        let alerts = match &source {
            AlertsSource::Live(a) => a.snapshot(),
            AlertsSource::Dir(dir) => {
                super::saved(dir).map_err(|e| DataFusionError::External(Box::new(e)))?
            }
        };
        let mut batches = vec![alerts_batch(&alerts, store.node_id())?];
        for (node, body) in store.peer_files(ALERTS_FILE) {
            match serde_json::from_slice::<Vec<Alert>>(&body) {
                Ok(a) => batches.push(alerts_batch(&a, Some(&node))?),
                // One node's unreadable file must not hide the rest.
                Err(e) => tracing::warn!(node, error = %e, "skipping another node's alerts"),
            }
        }
        Ok(batches)
    };
    SnapshotTable::new(alerts_schema(), read)
}

/// `rule_results`: the lines of `data_dir/rules/results-*.jsonl`; damaged lines are skipped
/// and counted in `damaged` (see [`crate::jsonl`]).
pub fn results_table(dir: std::path::PathBuf, damaged: Option<prometheus::IntCounter>) -> SnapshotTable {
    let damaged = crate::jsonl::DamagedLines::new("rule_results", damaged);
    let read = move || crate::jsonl::read_dir(&dir, results_schema(), &damaged);
    SnapshotTable::new(results_schema(), read)
}
