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

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, new_null_array};
use arrow::datatypes::{DataType, SchemaRef};
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
    /// Columns whose values derive from rows the filter hides (`logs.template_id`: ids are
    /// handed out across every host), read as nulls.
    blanked: Vec<String>,
}

impl RestrictedTable {
    pub fn new(name: &str, inner: Arc<dyn TableProvider>, sql: &str, filter: Expr, blanked: &[&str]) -> Self {
        let blanked = blanked.iter().map(|c| (*c).to_owned()).collect();
        RestrictedTable { name: name.to_owned(), inner, sql: sql.to_owned(), filter, blanked }
    }

    /// Whether a caller's filter may run in the wrapped scan: it cannot fail, and it reads
    /// no blanked column (whose real values would decide which rows come out).
    fn may_push(&self, e: &Expr) -> bool {
        harmless(e, &self.inner.schema()) && e.column_refs().iter().all(|c| !self.blanked.contains(&c.name))
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
        Ok(filters
            .iter()
            .map(|f| {
                if self.may_push(f) {
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
        pushed.extend(filters.iter().filter(|f| self.may_push(f)).cloned());
        let inner = self.inner.scan(state, Some(&read), &pushed, None).await?;
        let read_schema = inner.schema();
        let predicate = state.create_physical_expr(self.filter.clone(), &DFSchema::try_from(read_schema)?)?;
        // `read` starts with `wanted`, in order.
        let output: Vec<usize> = (0..wanted.len()).collect();
        let blanked: Vec<usize> = wanted
            .iter()
            .enumerate()
            .filter(|(_, i)| self.blanked.contains(schema.field(**i).name()))
            .map(|(o, _)| o)
            .collect();
        Ok(Arc::new(RestrictedScanExec::new(&self.name, &self.sql, inner, predicate, output, blanked)?))
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
    /// Output columns read as nulls.
    blanked: Vec<usize>,
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
        blanked: Vec<usize>,
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
            blanked,
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
        // The filter itself is not shown: a deny-list (`host NOT IN (...)`) would name what
        // it hides.
        write!(f, "RestrictedScanExec: table={} (rows of the caller's [access] grant)", self.table)
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
        let blanked = self.blanked.clone();
        let rows = input
            .map(move |batch| {
                let batch = batch?;
                let _timer = baseline.elapsed_compute().timer();
                let kept = batch_filter(&batch, &predicate).map_err(|e| {
                    // The filter is the operator's, but its error could quote a hidden row.
                    tracing::error!(table, row_filter = sql, error = %e, "an [access] row_filter failed");
                    DataFusionError::Execution(format!(
                        "the [access] row_filter of table {table} failed; the daemon's log has the details"
                    ))
                })?;
                let out = only_granted(&kept.project(&output)?, &blanked)?;
                baseline.record_output(out.num_rows());
                Ok(out)
            })
            // A batch whose rows were all hidden is not passed on: its count would tell.
            .filter(|r: &Result<RecordBatch>| std::future::ready(!matches!(r, Ok(b) if b.num_rows() == 0)));
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema(), rows)))
    }
}

/// `batch` holding nothing of the rows filtered out of it. Filtering keeps a dictionary
/// column's whole dictionary (only its keys are filtered) and a view column's whole buffers,
/// so the values of hidden rows would still reach an expression such as `CAST(host AS INT)`,
/// which casts every dictionary value; they are dropped here. Blanked columns become nulls.
fn only_granted(batch: &RecordBatch, blanked: &[usize]) -> Result<RecordBatch> {
    let schema = batch.schema();
    let columns = batch
        .columns()
        .iter()
        .enumerate()
        .map(|(i, c)| -> Result<ArrayRef> {
            if blanked.contains(&i) {
                return Ok(new_null_array(c.data_type(), c.len()));
            }
            Ok(match c.data_type() {
                DataType::Dictionary(..) => match c.as_any_dictionary_opt() {
                    Some(d) => arrow_select::dictionary::garbage_collect_any_dictionary(d)?,
                    None => c.clone(),
                },
                DataType::Utf8View => Arc::new(c.as_string_view().gc()),
                DataType::BinaryView => Arc::new(c.as_binary_view().gc()),
                _ => c.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new_with_options(
        schema,
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}
