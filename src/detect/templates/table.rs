//! The `templates` table: one row per mined template (`id` is what `logs.template_id` holds).
//!
//! In the daemon it reads the live miner; `logwarden query` on a data directory reads the
//! saved `templates.json`.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampNanosecondArray, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use super::{Shared, Template};

/// Where the rows come from.
pub enum Source {
    Live(Arc<Shared>),
    File(PathBuf),
}

pub struct TemplatesTable {
    source: Source,
}

impl std::fmt::Debug for TemplatesTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TemplatesTable")
    }
}

impl TemplatesTable {
    pub fn new(source: Source) -> Self {
        TemplatesTable { source }
    }
}

pub fn schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::UInt32, false),
        Field::new("pattern", DataType::Utf8, false),
        Field::new("count", DataType::UInt64, false),
        Field::new("first_seen", ts(), false),
        Field::new("last_seen", ts(), false),
        Field::new("example", DataType::Utf8, false),
    ]))
}

fn to_batch(templates: &[Template]) -> Result<RecordBatch> {
    let ts = |f: fn(&Template) -> i64| {
        Arc::new(TimestampNanosecondArray::from_iter_values(templates.iter().map(f)).with_timezone("UTC"))
            as ArrayRef
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(templates.iter().map(|t| t.id))),
        Arc::new(StringArray::from_iter_values(templates.iter().map(Template::pattern))),
        Arc::new(UInt64Array::from_iter_values(templates.iter().map(|t| t.count))),
        ts(|t| t.first_seen),
        ts(|t| t.last_seen),
        Arc::new(StringArray::from_iter_values(templates.iter().map(|t| t.example.as_str()))),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}

#[async_trait]
impl TableProvider for TemplatesTable {
    fn schema(&self) -> SchemaRef {
        schema()
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
        let templates = match &self.source {
            Source::Live(shared) => shared.snapshot(),
            Source::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || Shared::load(&path, None).map(|s| s.snapshot()))
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?
                    .map_err(|e| DataFusionError::External(Box::new(e)))?
            }
        };
        Ok(MemorySourceConfig::try_new_exec(&[vec![to_batch(&templates)?]], schema(), projection.cloned())?)
    }
}
