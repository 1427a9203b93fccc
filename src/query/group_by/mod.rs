//! GROUP BY over the columns logs are grouped by: dictionary-encoded text (`host`, `app`,
//! `msgid`, `peer`, ...) and small integers (`severity`, `facility`).
//!
//! DataFusion groups a dictionary column by turning every row into a row-format key and
//! hashing it, which costs more than the scan itself (on 100 M events, `GROUP BY host` spent
//! 2.2 s of CPU grouping and 0.2 s scanning). Here a group is found once per distinct
//! dictionary entry of a batch and then, per row, by indexing a table with the row's dictionary
//! keys. The aggregates are DataFusion's own [`GroupsAccumulator`]s, so results, partial states
//! and the plan around the operator stay exactly what DataFusion would produce.
//!
//! [`DictionaryGroupBy`] is a physical optimizer rule that runs after DataFusion's own and
//! replaces a raw-input `AggregateExec` (mode `Partial`, `Single` or `SinglePartitioned`) with
//! [`DictionaryGroupByExec`] when every group key is a plain column of a supported type, at
//! least one is a dictionary, and every aggregate has a groups accumulator and no `DISTINCT` or
//! `ORDER BY`. Anything else keeps DataFusion's operator.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, internal_err};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PhysicalExpr, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};

mod grouper;
use grouper::Grouper;

/// The physical optimizer rule; see the module documentation.
#[derive(Debug, Default)]
pub struct DictionaryGroupBy;

impl PhysicalOptimizerRule for DictionaryGroupBy {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let replaced = node.downcast_ref::<AggregateExec>().and_then(DictionaryGroupByExec::replacing);
            Ok(match replaced {
                Some(exec) => Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>),
                None => Transformed::no(node),
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "dictionary_group_by"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The type of one group key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyKind {
    /// `Dictionary(Int32, Utf8)`.
    Dictionary,
    UInt8,
    Int8,
    Boolean,
}

impl KeyKind {
    fn of(data_type: &DataType) -> Option<KeyKind> {
        match data_type {
            DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
                Some(KeyKind::Dictionary)
            }
            DataType::UInt8 => Some(KeyKind::UInt8),
            DataType::Int8 => Some(KeyKind::Int8),
            DataType::Boolean => Some(KeyKind::Boolean),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Key {
    index: usize,
    name: String,
    kind: KeyKind,
}

/// Groups by dictionary and small-integer columns; see the module documentation.
#[derive(Debug)]
pub struct DictionaryGroupByExec {
    input: Arc<dyn ExecutionPlan>,
    mode: AggregateMode,
    keys: Vec<Key>,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl DictionaryGroupByExec {
    /// The operator that computes what `agg` computes, when `agg` is one it can replace.
    pub(crate) fn replacing(agg: &AggregateExec) -> Option<Self> {
        if !matches!(
            agg.mode(),
            AggregateMode::Partial | AggregateMode::Single | AggregateMode::SinglePartitioned
        ) || agg.limit_options().is_some()
            || !agg.dynamic_expressions_produced().is_empty()
            || *agg.input_order_mode() != InputOrderMode::Linear
        {
            return None;
        }
        let group_by = agg.group_expr();
        if group_by.is_empty() || group_by.has_grouping_set() || !group_by.null_expr().is_empty() {
            return None;
        }
        let input_schema = agg.input_schema();
        let keys = group_by
            .expr()
            .iter()
            .map(|(expr, name)| {
                let column = expr.downcast_ref::<Column>()?;
                let kind = KeyKind::of(input_schema.fields().get(column.index())?.data_type())?;
                Some(Key { index: column.index(), name: name.clone(), kind })
            })
            .collect::<Option<Vec<_>>>()?;
        if !keys.iter().any(|k| k.kind == KeyKind::Dictionary) {
            return None;
        }
        let aggregates = agg.aggr_expr();
        if !aggregates
            .iter()
            .all(|a| a.groups_accumulator_supported() && !a.is_distinct() && a.order_bys().is_empty())
        {
            return None;
        }
        Some(DictionaryGroupByExec {
            input: agg.input().clone(),
            mode: *agg.mode(),
            keys,
            aggregates: aggregates.to_vec(),
            filters: agg.filter_expr().to_vec(),
            properties: agg.properties().clone(),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for DictionaryGroupByExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<&str> = self.keys.iter().map(|k| k.name.as_str()).collect();
        let aggregates: Vec<&str> = self.aggregates.iter().map(|a| a.name()).collect();
        write!(
            f,
            "DictionaryGroupByExec: mode={:?}, gby=[{}], aggr=[{}]",
            self.mode,
            keys.join(", "),
            aggregates.join(", ")
        )
    }
}

impl ExecutionPlan for DictionaryGroupByExec {
    fn name(&self) -> &str {
        "DictionaryGroupByExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        let exprs = self
            .aggregates
            .iter()
            .flat_map(|a| a.expressions())
            .chain(self.filters.iter().flatten().cloned());
        for e in exprs {
            if f(&e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("DictionaryGroupByExec takes one input, got {}", children.len());
        }
        Ok(Arc::new(DictionaryGroupByExec {
            input: children.swap_remove(0),
            mode: self.mode,
            keys: self.keys.clone(),
            aggregates: self.aggregates.clone(),
            filters: self.filters.clone(),
            properties: self.properties.clone(),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context.clone())?;
        let accumulators =
            self.aggregates.iter().map(|a| a.create_groups_accumulator()).collect::<Result<Vec<_>>>()?;
        let run = Run {
            grouper: Grouper::new(self.keys.iter().map(|k| (k.index, k.kind)).collect()),
            accumulators,
            arguments: self
                .aggregates
                .iter()
                .map(|a| a.expressions().into_iter().map(|e| (e, None)).collect())
                .collect(),
            filters: self.filters.clone(),
            reservation: MemoryConsumer::new(format!("DictionaryGroupByExec[{partition}]"))
                .register(context.memory_pool()),
            baseline: BaselineMetrics::new(&self.metrics, partition),
            schema: self.schema(),
            final_values: self.mode != AggregateMode::Partial,
            batch_size: context.session_config().batch_size(),
        };
        let schema = self.schema();
        let output = futures::stream::once(run.consume(input))
            .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok)))
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, output)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// One partition's aggregation.
struct Run {
    grouper: Grouper,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// Each aggregate's arguments, with the array last made for a literal one (`count(*)` is
    /// `count(1)`): a literal is materialised once, not once per batch.
    arguments: Vec<Vec<Argument>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    reservation: MemoryReservation,
    baseline: BaselineMetrics,
    schema: SchemaRef,
    /// Final values (`Single` modes) rather than partial states (`Partial`).
    final_values: bool,
    batch_size: usize,
}

impl Run {
    async fn consume(mut self, mut input: SendableRecordBatchStream) -> Result<Vec<RecordBatch>> {
        while let Some(batch) = input.next().await {
            let batch = batch?;
            let time = self.baseline.elapsed_compute().clone();
            let _timer = time.timer();
            self.update(&batch)?;
        }
        let time = self.baseline.elapsed_compute().clone();
        let _timer = time.timer();
        let output = self.emit()?;
        let rows = output.num_rows();
        self.baseline.record_output(rows);
        let step = self.batch_size.max(1);
        Ok((0..rows).step_by(step).map(|at| output.slice(at, step.min(rows - at))).collect())
    }

    fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        self.grouper.assign(batch);
        let (groups, total) = (&self.grouper.indices, self.grouper.len());
        for ((acc, args), filter) in self.accumulators.iter_mut().zip(&mut self.arguments).zip(&self.filters)
        {
            let values = args.iter_mut().map(|arg| argument(arg, batch)).collect::<Result<Vec<_>>>()?;
            let filter = filter.as_ref().map(|f| f.evaluate(batch)?.into_array(rows)).transpose()?;
            acc.update_batch(&values, groups, filter.as_ref().map(|f| f.as_boolean()), total)?;
        }
        let bytes = self.grouper.size() + self.accumulators.iter().map(|a| a.size()).sum::<usize>();
        self.reservation.try_resize(bytes)
    }

    fn emit(&mut self) -> Result<RecordBatch> {
        let mut columns = self.grouper.key_columns();
        for acc in &mut self.accumulators {
            if self.final_values {
                columns.push(acc.evaluate(EmitTo::All)?);
            } else {
                columns.extend(acc.state(EmitTo::All)?);
            }
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// An aggregate's argument and, for a literal, the array last made of it.
type Argument = (Arc<dyn PhysicalExpr>, Option<ArrayRef>);

/// An aggregate argument evaluated over `batch`.
fn argument((expr, cached): &mut Argument, batch: &RecordBatch) -> Result<ArrayRef> {
    let rows = batch.num_rows();
    if expr.downcast_ref::<Literal>().is_none() {
        return expr.evaluate(batch)?.into_array(rows);
    }
    match cached {
        Some(array) if array.len() >= rows => Ok(array.slice(0, rows)),
        _ => {
            let array = expr.evaluate(batch)?.into_array(rows)?;
            *cached = Some(array.clone());
            Ok(array)
        }
    }
}

/// The id of a null key value in every column.
#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BooleanArray, DictionaryArray, Int8Array, Int32Array, Int64Array, StringArray,
        StringDictionaryBuilder, UInt8Array,
    };
    use arrow::datatypes::Int32Type;
    use arrow::datatypes::{Field, Schema};
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn dict_type() -> DataType {
        DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("host", dict_type(), true),
            Field::new("app", dict_type(), true),
            Field::new("sev", DataType::UInt8, true),
            Field::new("delta", DataType::Int8, true),
            Field::new("flag", DataType::Boolean, true),
            Field::new("n", DataType::Int64, true),
        ]))
    }

    /// Batches shaped like Parquet output: runs of batches share one dictionary (with unused
    /// and null entries), later runs bring new dictionaries with overlapping values, and every
    /// key column has nulls.
    fn partitions(seed: u64, hosts: usize, apps: usize) -> Vec<Vec<RecordBatch>> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut parts = vec![Vec::new(), Vec::new(), Vec::new()];
        for run in 0..6 {
            let host_values: ArrayRef = Arc::new(StringArray::from_iter(
                (0..hosts + 2)
                    .map(|i| (i != hosts / 2).then(|| format!("host-{}", (i * 7 + run * 3) % (hosts + 5)))),
            ));
            let app_values: ArrayRef = Arc::new(StringArray::from_iter_values(
                (0..apps).map(|i| format!("app-{}", (i + run) % (apps + 2))),
            ));
            for b in 0..4 {
                let rows = 500 + 137 * b;
                let keys = |rng: &mut SmallRng, n: usize| -> Int32Array {
                    (0..rows)
                        .map(|_| (!rng.random_bool(0.05)).then(|| rng.random_range(0..n) as i32))
                        .collect()
                };
                let host = DictionaryArray::new(keys(&mut rng, hosts + 2), host_values.clone());
                let app = DictionaryArray::new(keys(&mut rng, apps), app_values.clone());
                let sev: UInt8Array =
                    (0..rows).map(|_| (!rng.random_bool(0.1)).then(|| rng.random_range(0..8u8))).collect();
                let delta: Int8Array =
                    (0..rows).map(|_| (!rng.random_bool(0.1)).then(|| rng.random_range(-3..3i8))).collect();
                let flag: BooleanArray =
                    (0..rows).map(|_| (!rng.random_bool(0.1)).then(|| rng.random_bool(0.5))).collect();
                let n: Int64Array = (0..rows)
                    .map(|_| (!rng.random_bool(0.2)).then(|| rng.random_range(-1000..1000i64)))
                    .collect();
                let columns: Vec<ArrayRef> = vec![
                    Arc::new(host),
                    Arc::new(app),
                    Arc::new(sev),
                    Arc::new(delta),
                    Arc::new(flag),
                    Arc::new(n),
                ];
                let batch = RecordBatch::try_new(schema(), columns).unwrap();
                // A sliced batch, as scans produce: the keys start past offset zero.
                let batch = if b == 3 { batch.slice(17, rows - 40) } else { batch };
                parts[(run + b) % 3].push(batch);
            }
        }
        // A dictionary built per batch, as the in-memory batches of the daemon have.
        let mut host = StringDictionaryBuilder::<Int32Type>::new();
        host.append_value("host-1");
        host.append_null();
        host.append_value("host-new");
        let rest: Vec<ArrayRef> = vec![
            Arc::new(DictionaryArray::<Int32Type>::from_iter([Some("app-1"), None, Some("app-1")])),
            Arc::new(UInt8Array::from(vec![Some(1), Some(1), None])),
            Arc::new(Int8Array::from(vec![Some(-1), None, Some(2)])),
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
            Arc::new(Int64Array::from(vec![Some(5), None, Some(7)])),
        ];
        let mut columns: Vec<ArrayRef> = vec![Arc::new(host.finish())];
        columns.extend(rest);
        parts[0].push(RecordBatch::try_new(schema(), columns).unwrap());
        parts
    }

    /// A session over `parts` as table `t`, with or without the rule, and with a memory pool
    /// of `memory` bytes when given.
    fn context(rule: bool, parts: &[Vec<RecordBatch>], memory: Option<usize>) -> SessionContext {
        let config = SessionConfig::new().with_target_partitions(3).with_batch_size(64);
        let mut state = SessionStateBuilder::new().with_config(config).with_default_features();
        if let Some(bytes) = memory {
            let pool = Arc::new(datafusion::execution::memory_pool::GreedyMemoryPool::new(bytes));
            let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new().with_memory_pool(pool);
            state = state.with_runtime_env(runtime.build_arc().unwrap());
        }
        if rule {
            state = state.with_physical_optimizer_rule(Arc::new(DictionaryGroupBy));
        }
        let ctx = SessionContext::new_with_state(state.build());
        ctx.register_table("t", Arc::new(MemTable::try_new(schema(), parts.to_vec()).unwrap())).unwrap();
        ctx
    }

    async fn run(ctx: &SessionContext, sql: &str) -> (String, String) {
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.clone().create_physical_plan().await.unwrap();
        let plan = displayable(plan.as_ref()).indent(false).to_string();
        let batches = df.collect().await.unwrap();
        (pretty_format_batches(&batches).unwrap().to_string(), plan)
    }

    /// Each query gives exactly DataFusion's own answer, and the fast operator did the work.
    async fn same_as_datafusion(parts: &[Vec<RecordBatch>], queries: &[&str], replaced: bool) {
        let (fast, stock) = (context(true, parts, None), context(false, parts, None));
        for sql in queries {
            let (got, plan) = run(&fast, sql).await;
            let (want, _) = run(&stock, sql).await;
            assert_eq!(got, want, "{sql}\n{plan}");
            assert_eq!(plan.contains("DictionaryGroupByExec"), replaced, "{sql}\n{plan}");
            assert!(want.lines().count() > 5, "{sql} groups too little to test anything:\n{want}");
        }
    }

    #[tokio::test]
    async fn results_match_datafusion_for_dictionary_and_small_integer_keys() {
        let parts = partitions(1, 20, 6);
        same_as_datafusion(
            &parts,
            &[
                "SELECT host, count(*) FROM t GROUP BY host ORDER BY host",
                "SELECT app, sev, count(*), count(n), sum(n), min(n), max(n), avg(n) FROM t \
                 GROUP BY app, sev ORDER BY app, sev",
                "SELECT flag, delta, host, count(*) FILTER (WHERE n > 0), sum(n) FROM t \
                 GROUP BY flag, delta, host ORDER BY flag, delta, host",
                "SELECT host, app, min(sev), max(app) FROM t WHERE n IS NOT NULL \
                 GROUP BY host, app ORDER BY host, app",
                "SELECT host, count(*) AS c FROM t GROUP BY host ORDER BY c DESC, host LIMIT 7",
                "SELECT upper(host) AS h, count(*) FROM t GROUP BY host ORDER BY h",
                // Planned as GROUP BY host, n (kept) under GROUP BY host (replaced).
                "SELECT host, count(DISTINCT n) FROM t GROUP BY host ORDER BY host",
            ],
            true,
        )
        .await;
    }

    #[tokio::test]
    async fn too_many_combinations_for_a_table_are_hashed_per_row() {
        // 700 x 700 host/app combinations exceed the per-batch table.
        let parts = partitions(2, 700, 700);
        same_as_datafusion(
            &parts,
            &["SELECT host, app, count(*), sum(n) FROM t GROUP BY host, app ORDER BY host, app"],
            true,
        )
        .await;
    }

    #[tokio::test]
    async fn other_aggregations_keep_datafusion_operator() {
        let parts = partitions(3, 20, 6);
        same_as_datafusion(
            &parts,
            &[
                "SELECT host, n, count(*) FROM t GROUP BY host, n ORDER BY host, n",
                "SELECT host, app, count(*) FROM t GROUP BY ROLLUP (host, app) ORDER BY host, app",
                "SELECT sev, count(*) FROM t GROUP BY sev ORDER BY sev",
                "SELECT host, array_agg(n ORDER BY n) FROM t GROUP BY host ORDER BY host",
            ],
            false,
        )
        .await;
    }

    #[tokio::test]
    async fn group_state_counts_against_the_memory_pool() {
        let ctx = context(true, &partitions(4, 700, 700), Some(64 * 1024));
        let err =
            ctx.sql("SELECT host, app, count(*) FROM t GROUP BY host, app").await.unwrap().collect().await;
        let err = err.unwrap_err().to_string();
        assert!(err.contains("DictionaryGroupByExec") && err.contains("Resources exhausted"), "{err}");
    }
}
