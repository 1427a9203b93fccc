//! A table seen through a row filter: [`RestrictedTable`] wraps any table provider, and its
//! scan, [`RestrictedScanExec`], yields only the rows the filter grants.
//!
//! The filter is applied inside the scan, on the wrapped table's own output, and the node
//! hides the wrapped plan from DataFusion (it has no children and no statistics): no optimizer
//! rule can push the caller's predicates under the filter, fuse them with it or reorder them
//! before it, so the caller's expressions only ever see granted rows. An error they raise (a
//! cast, a division) can therefore carry no hidden value, `EXPLAIN ANALYZE` counts granted rows
//! only, and `count(*)` cannot be answered from the wrapped table's statistics. The wrapped
//! scan is given the row filter itself (for pruning and Parquet late materialisation) and
//! those of the caller's filters that cannot fail and reveal nothing: comparisons of a column
//! with a literal of its own type.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::filter::batch_filter;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties,
};
use futures::StreamExt;

/// `inner` restricted to the rows where `filter` holds.
pub struct RestrictedTable {
    name: String,
    inner: Arc<dyn TableProvider>,
    /// The row filter as written in `[access]`, for plans and errors.
    sql: String,
    /// The row filter over `inner`'s (unqualified) schema.
    filter: Expr,
}

impl RestrictedTable {
    pub fn new(name: &str, inner: Arc<dyn TableProvider>, sql: &str, filter: Expr) -> Self {
        RestrictedTable { name: name.to_owned(), inner, sql: sql.to_owned(), filter }
    }
}

impl fmt::Debug for RestrictedTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestrictedTable").field("name", &self.name).field("row_filter", &self.sql).finish()
    }
}

#[async_trait]
impl TableProvider for RestrictedTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        let schema = self.inner.schema();
        Ok(filters
            .iter()
            .map(|f| {
                if harmless(f, &schema) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        // A limit cannot go below the filter: the first n rows may all be hidden ones.
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.inner.schema();
        let wanted: Vec<usize> = projection.cloned().unwrap_or_else(|| (0..schema.fields().len()).collect());
        // The wrapped scan reads what the caller wants plus what the filter needs.
        let mut read = wanted.clone();
        for c in self.filter.column_refs() {
            let i = schema.index_of(&c.name)?;
            if !read.contains(&i) {
                read.push(i);
            }
        }
        let mut pushed = vec![self.filter.clone()];
        pushed.extend(filters.iter().filter(|f| harmless(f, &schema)).cloned());
        let inner = self.inner.scan(state, Some(&read), &pushed, None).await?;
        let read_schema = inner.schema();
        let predicate = state.create_physical_expr(self.filter.clone(), &DFSchema::try_from(read_schema)?)?;
        // `read` starts with `wanted`, in order.
        let output: Vec<usize> = (0..wanted.len()).collect();
        Ok(Arc::new(RestrictedScanExec::new(&self.name, &self.sql, inner, predicate, output)?))
    }
}

/// Whether `e` may be evaluated on rows the caller may not see: it cannot fail, so it can
/// only drop rows, and the row filter runs on whatever it keeps.
fn harmless(e: &Expr, schema: &SchemaRef) -> bool {
    let column_type = |e: &Expr| match e {
        Expr::Column(c) => schema.field_with_name(&c.name).ok().map(|f| f.data_type().clone()),
        _ => None,
    };
    let literal_type = |e: &Expr| match e {
        Expr::Literal(v, _) if !v.is_null() => Some(v.data_type()),
        _ => None,
    };
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::And | Operator::Or, right }) => {
            harmless(left, schema) && harmless(right, schema)
        }
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq | Operator::NotEq | Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq,
            right,
        }) => match (column_type(left), literal_type(right), column_type(right), literal_type(left)) {
            (Some(c), Some(l), _, _) | (_, _, Some(c), Some(l)) => c == l,
            _ => false,
        },
        Expr::Not(inner) => harmless(inner, schema),
        Expr::IsNull(inner) | Expr::IsNotNull(inner) => column_type(inner).is_some(),
        Expr::Between(b) => column_type(&b.expr).is_some_and(|c| {
            literal_type(&b.low).is_some_and(|l| l == c) && literal_type(&b.high).is_some_and(|h| h == c)
        }),
        _ => false,
    }
}

/// The scan of a [`RestrictedTable`]: the wrapped plan, filtered, then projected to what the
/// caller asked for. The wrapped plan is not a child, so the optimizer never sees into it.
pub struct RestrictedScanExec {
    table: String,
    sql: String,
    inner: Arc<dyn ExecutionPlan>,
    predicate: Arc<dyn PhysicalExpr>,
    output: Vec<usize>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl RestrictedScanExec {
    fn new(
        table: &str,
        sql: &str,
        inner: Arc<dyn ExecutionPlan>,
        predicate: Arc<dyn PhysicalExpr>,
        output: Vec<usize>,
    ) -> Result<Self> {
        let schema = Arc::new(inner.schema().project(&output)?);
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(inner.output_partitioning().partition_count()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(RestrictedScanExec {
            table: table.to_owned(),
            sql: sql.to_owned(),
            inner,
            predicate,
            output,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl fmt::Debug for RestrictedScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestrictedScanExec")
            .field("table", &self.table)
            .field("row_filter", &self.sql)
            .finish()
    }
}

impl DisplayAs for RestrictedScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "RestrictedScanExec: table={}, row_filter={}", self.table, self.sql)
    }
}

impl ExecutionPlan for RestrictedScanExec {
    fn name(&self) -> &str {
        "RestrictedScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let input = self.inner.execute(partition, context)?;
        let predicate = self.predicate.clone();
        let output = self.output.clone();
        let table = self.table.clone();
        let sql = self.sql.clone();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let rows = input.map(move |batch| {
            let batch = batch?;
            let _timer = baseline.elapsed_compute().timer();
            let kept = batch_filter(&batch, &predicate).map_err(|e| {
                // The filter is the operator's, but its error could quote a hidden row.
                tracing::error!(table, row_filter = sql, error = %e, "an [access] row_filter failed");
                DataFusionError::Execution(format!(
                    "the [access] row_filter of table {table} failed; the daemon's log has the details"
                ))
            })?;
            let out = kept.project(&output)?;
            baseline.record_output(out.num_rows());
            Ok(out)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema(), rows)))
    }
}
