//! A table whose rows are read whole when a query scans it, off the async workers: the small
//! side tables (`audit`, `templates`, `alerts`, `rule_results`), each a schema and a reader.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

pub type Reader = Arc<dyn Fn() -> Result<Vec<RecordBatch>> + Send + Sync>;

pub struct SnapshotTable {
    schema: SchemaRef,
    read: Reader,
}

impl SnapshotTable {
    /// Rows of `schema`, from `read` at every scan (a blocking call: it may read files).
    pub fn new(
        schema: SchemaRef,
        read: impl Fn() -> Result<Vec<RecordBatch>> + Send + Sync + 'static,
    ) -> Self {
        SnapshotTable { schema, read: Arc::new(read) }
    }
}

impl std::fmt::Debug for SnapshotTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotTable").field("schema", &self.schema).finish_non_exhaustive()
    }
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
