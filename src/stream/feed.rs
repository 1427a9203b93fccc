//! The `events` table a rule's SQL reads: a plan leaf that yields whatever batches were put in
//! its slot before the plan runs. A rule's plans are built once and run for every arriving
//! batch (and again at each window close), without replanning.

use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};

/// Batches handed to a plan for one run.
#[derive(Clone, Default)]
pub struct Slot(Arc<Mutex<Vec<RecordBatch>>>);

impl Slot {
    pub fn set(&self, batches: Vec<RecordBatch>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = batches;
    }

    fn take(&self) -> Vec<RecordBatch> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The `events` table of a rule: the `logs` schema, read from a [`Slot`]. Every scan of it
/// shares the one slot, so a rule may read `events` once (a self-join would see the batches
/// only in its first branch, which is why [`super::rule`] refuses joins).
#[derive(Debug)]
pub struct EventsTable {
    schema: SchemaRef,
    slot: Slot,
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Slot")
    }
}

impl EventsTable {
    pub fn new(schema: SchemaRef, slot: Slot) -> Self {
        EventsTable { schema, slot }
    }
}

#[async_trait]
impl TableProvider for EventsTable {
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
        Ok(Arc::new(FeedExec::new(self.schema.clone(), projection.cloned(), self.slot.clone())?))
    }
}

/// A leaf that yields its slot's batches, projected.
#[derive(Debug)]
pub struct FeedExec {
    projection: Option<Vec<usize>>,
    slot: Slot,
    properties: Arc<PlanProperties>,
}

impl FeedExec {
    pub fn new(schema: SchemaRef, projection: Option<Vec<usize>>, slot: Slot) -> Result<Self> {
        let projected = match &projection {
            Some(p) => Arc::new(schema.project(p)?),
            None => schema,
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(projected),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(FeedExec { projection, slot, properties: Arc::new(properties) })
    }
}

impl DisplayAs for FeedExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "FeedExec: projection={:?}", self.projection)
    }
}

impl ExecutionPlan for FeedExec {
    fn name(&self) -> &str {
        "FeedExec"
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

    fn execute(&self, _partition: usize, _context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let batches = self
            .slot
            .take()
            .into_iter()
            .map(|b| match &self.projection {
                Some(p) => b.project(p),
                None => Ok(b),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Box::pin(MemoryStream::try_new(batches, self.schema(), None)?))
    }
}
