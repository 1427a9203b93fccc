//! The `alerts` and `rule_results` tables: snapshots of the alert state and of the newest rule
//! output rows, built when a query scans them.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use super::{Alert, Alerts};

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

fn alerts_batch(alerts: &[Alert]) -> Result<RecordBatch, arrow::error::ArrowError> {
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

/// A table whose rows are read whole when a query scans it (off the async workers): the
/// `alerts` state and the `rule_results` files are small.
pub struct SnapshotTable {
    schema: SchemaRef,
    read: Arc<dyn Fn() -> Result<Vec<RecordBatch>> + Send + Sync>,
}

impl std::fmt::Debug for SnapshotTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotTable").field("schema", &self.schema).finish_non_exhaustive()
    }
}

/// The `alerts` table.
pub fn alerts_table(source: AlertsSource) -> SnapshotTable {
    let read = move || {
        let alerts = match &source {
            AlertsSource::Live(a) => a.snapshot(),
            AlertsSource::Dir(dir) => {
                super::saved(dir).map_err(|e| DataFusionError::External(Box::new(e)))?
            }
        };
        Ok(vec![alerts_batch(&alerts)?])
    };
    SnapshotTable { schema: alerts_schema(), read: Arc::new(read) }
}

/// `rule_results`: the lines of `data_dir/rules/results-*.jsonl`.
pub fn results_table(dir: std::path::PathBuf) -> SnapshotTable {
    let read = move || crate::audit::read_jsonl_dir(&dir, results_schema(), "rule results");
    SnapshotTable { schema: results_schema(), read: Arc::new(read) }
}

#[async_trait]
impl TableProvider for SnapshotTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let read = self.read.clone();
        let batches = tokio::task::spawn_blocking(move || read())
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))??;
        Ok(MemorySourceConfig::try_new_exec(&[batches], self.schema.clone(), projection.cloned())?)
    }
}
