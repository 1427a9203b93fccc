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
use std::hash::BuildHasher;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, DictionaryArray, Int8Array, Int32Array, RecordBatch, StringArray,
    UInt8Array,
};
use arrow::datatypes::{DataType, Int8Type, Int32Type, SchemaRef, UInt8Type};
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
enum KeyKind {
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
const NULL_ID: u32 = u32::MAX;
/// A table slot whose group has not been looked up yet.
const UNSET: u32 = u32::MAX;
/// The largest per-batch table of key combinations (entries); past it rows are hashed.
const MAX_TABLE: usize = 1 << 18;

/// Assigns group indices to rows.
///
/// Each key column gives every row a *local code*: the dictionary key (its values' length for
/// null), or the integer value (256 for null). Local codes map to column ids that are stable
/// for the whole run (interned dictionary strings; the value itself for integers), and a tuple
/// of column ids is a group. Combinations of local codes index a table of groups that is kept
/// while the batches share their dictionaries, which Parquet batches of one row group do.
struct Grouper {
    columns: Vec<(usize, KeyKind)>,
    strings: Vec<Interner>,
    /// Group indices, hashed by their column ids (which `group_keys` holds): no allocation
    /// per group.
    groups: hashbrown::HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    /// Column ids of every group, `columns.len()` per group.
    group_keys: Vec<u32>,
    table: Vec<u32>,
    /// The dictionaries `table` and `local_ids` were built for.
    table_dicts: Vec<Option<ArrayRef>>,
    /// Per column, local code to column id (`UNSET` until needed).
    local_ids: Vec<Vec<u32>>,
    combined: Vec<u32>,
    /// One column's local codes, while they are added into `combined`.
    scratch: Vec<u32>,
    indices: Vec<usize>,
    key_buf: Vec<u32>,
}

#[derive(Default)]
struct Interner {
    ids: foldhash::HashMap<Box<str>, u32>,
    values: Vec<Box<str>>,
    bytes: usize,
}

impl Interner {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.values.len() as u32;
        self.values.push(s.into());
        self.ids.insert(s.into(), id);
        self.bytes += 2 * s.len() + 48;
        id
    }
}

impl Grouper {
    fn new(columns: Vec<(usize, KeyKind)>) -> Self {
        let n = columns.len();
        Grouper {
            columns,
            strings: (0..n).map(|_| Interner::default()).collect(),
            groups: hashbrown::HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            group_keys: Vec::new(),
            table: Vec::new(),
            table_dicts: vec![None; n],
            local_ids: vec![Vec::new(); n],
            combined: Vec::new(),
            scratch: Vec::new(),
            indices: Vec::new(),
            key_buf: vec![0; n],
        }
    }

    fn len(&self) -> usize {
        self.group_keys.len() / self.columns.len()
    }

    fn size(&self) -> usize {
        self.strings.iter().map(|s| s.bytes).sum::<usize>()
            + self.groups.capacity() * 5
            + self.group_keys.capacity() * 4
            + self.table.capacity() * 4
            + self.local_ids.iter().map(|l| l.capacity() * 4).sum::<usize>()
            + (self.combined.capacity() + self.scratch.capacity()) * 4
            + self.indices.capacity() * 8
    }

    /// Sets `indices` to the group index of every row of `batch`.
    fn assign(&mut self, batch: &RecordBatch) {
        let rows = batch.num_rows();
        let arrays: Vec<&ArrayRef> = self.columns.iter().map(|&(i, _)| batch.column(i)).collect();

        // Radix of each column's local codes, and whether the cached table still applies.
        let mut radix = Vec::with_capacity(arrays.len());
        let mut same = !self.table.is_empty();
        for (c, (array, &(_, kind))) in arrays.iter().zip(&self.columns).enumerate() {
            let dict = match kind {
                KeyKind::Dictionary => Some(array.as_dictionary::<Int32Type>().values().clone()),
                _ => None,
            };
            radix.push(match (kind, &dict) {
                (KeyKind::Dictionary, Some(values)) => values.len() + 1,
                (KeyKind::Boolean, _) => 3,
                _ => 257,
            });
            let unchanged = match (&dict, &self.table_dicts[c]) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if !unchanged {
                same = false;
                self.table_dicts[c] = dict;
            }
        }
        if !same {
            for (ids, &r) in self.local_ids.iter_mut().zip(&radix) {
                ids.clear();
                ids.resize(r, UNSET);
            }
        }
        let product = radix.iter().try_fold(1usize, |p, &r| p.checked_mul(r)).filter(|&p| p <= MAX_TABLE);

        self.indices.clear();
        match product {
            Some(product) => {
                if !same || self.table.len() != product {
                    self.table.clear();
                    self.table.resize(product, UNSET);
                }
                self.combined.clear();
                self.combined.resize(rows, 0);
                let mut stride = 1u32;
                for (c, array) in arrays.iter().enumerate().rev() {
                    local_codes(array, self.columns[c].1, &mut self.scratch);
                    for (o, &code) in self.combined.iter_mut().zip(&self.scratch) {
                        *o += code * stride;
                    }
                    stride *= radix[c] as u32;
                }
                // Buffers leave `self` for the loop so that `resolve` can borrow it.
                let mut table = std::mem::take(&mut self.table);
                let combined = std::mem::take(&mut self.combined);
                self.indices.resize(rows, 0);
                let mut indices = std::mem::take(&mut self.indices);
                for (&code, out) in combined.iter().zip(indices.iter_mut()) {
                    let mut g = table[code as usize];
                    if g == UNSET {
                        let mut rest = code as usize;
                        for c in (0..arrays.len()).rev() {
                            self.key_buf[c] = (rest % radix[c]) as u32;
                            rest /= radix[c];
                        }
                        g = self.resolve(&arrays);
                        table[code as usize] = g;
                    }
                    *out = g as usize;
                }
                (self.table, self.combined, self.indices) = (table, combined, indices);
            }
            None => {
                // Too many combinations for a table: look every row up.
                self.table.clear();
                let codes: Vec<Vec<u32>> = arrays
                    .iter()
                    .zip(&self.columns)
                    .map(|(array, &(_, kind))| {
                        let mut codes = Vec::with_capacity(rows);
                        local_codes(array, kind, &mut codes);
                        codes
                    })
                    .collect();
                for r in 0..rows {
                    for (c, codes) in codes.iter().enumerate() {
                        self.key_buf[c] = codes[r];
                    }
                    let g = self.resolve(&arrays);
                    self.indices.push(g as usize);
                }
            }
        }
    }

    /// The group of the local codes in `key_buf`, created when new.
    fn resolve(&mut self, arrays: &[&ArrayRef]) -> u32 {
        for (c, array) in arrays.iter().enumerate() {
            let local = self.key_buf[c] as usize;
            let mut id = self.local_ids[c][local];
            if id == UNSET {
                id = match self.columns[c].1 {
                    KeyKind::Dictionary => {
                        let values = array.as_dictionary::<Int32Type>().values().as_string::<i32>();
                        if local >= values.len() || values.is_null(local) {
                            NULL_ID
                        } else {
                            self.strings[c].intern(values.value(local))
                        }
                    }
                    KeyKind::Boolean if local == 2 => NULL_ID,
                    _ if local == 256 => NULL_ID,
                    _ => local as u32,
                };
                self.local_ids[c][local] = id;
            }
            self.key_buf[c] = id;
        }
        let n = self.columns.len();
        let (hasher, keys) = (&self.hasher, &self.group_keys);
        let key_of = |g: u32| &keys[g as usize * n..(g as usize + 1) * n];
        let hash = hasher.hash_one(&self.key_buf[..]);
        match self.groups.entry(hash, |&g| key_of(g) == &self.key_buf[..], |&g| hasher.hash_one(key_of(g))) {
            hashbrown::hash_table::Entry::Occupied(e) => *e.get(),
            hashbrown::hash_table::Entry::Vacant(e) => {
                let g = (keys.len() / n) as u32;
                e.insert(g);
                self.group_keys.extend_from_slice(&self.key_buf);
                g
            }
        }
    }

    /// The key columns of every group, in group order, with the input's types.
    fn key_columns(&self) -> Vec<ArrayRef> {
        let n = self.columns.len();
        self.columns
            .iter()
            .enumerate()
            .map(|(c, &(_, kind))| {
                let ids = self.group_keys.iter().skip(c).step_by(n).map(|&id| (id != NULL_ID).then_some(id));
                match kind {
                    KeyKind::Dictionary => {
                        let keys: Int32Array = ids.map(|id| id.map(|id| id as i32)).collect();
                        let values = StringArray::from_iter_values(self.strings[c].values.iter());
                        Arc::new(DictionaryArray::<Int32Type>::new(keys, Arc::new(values))) as ArrayRef
                    }
                    KeyKind::UInt8 => Arc::new(ids.map(|id| id.map(|id| id as u8)).collect::<UInt8Array>()),
                    KeyKind::Int8 => {
                        Arc::new(ids.map(|id| id.map(|id| id as u8 as i8)).collect::<Int8Array>())
                    }
                    KeyKind::Boolean => {
                        Arc::new(ids.map(|id| id.map(|id| id == 1)).collect::<BooleanArray>())
                    }
                }
            })
            .collect()
    }
}

/// Sets `codes` to each row's local code in `array`: the dictionary key or the value, and for
/// a null the column's null code (the dictionary's length, 256 for 8-bit integers, 2 for
/// booleans).
fn local_codes(array: &ArrayRef, kind: KeyKind, codes: &mut Vec<u32>) {
    codes.clear();
    let (null_code, nulls) = match kind {
        KeyKind::Dictionary => {
            let dict = array.as_dictionary::<Int32Type>();
            // Keys of null slots may hold anything; they are replaced below.
            codes.extend(dict.keys().values().iter().map(|&k| k as u32));
            (dict.values().len() as u32, dict.keys().nulls())
        }
        KeyKind::UInt8 => {
            codes.extend(array.as_primitive::<UInt8Type>().values().iter().map(|&v| v as u32));
            (256, array.nulls())
        }
        KeyKind::Int8 => {
            codes.extend(array.as_primitive::<Int8Type>().values().iter().map(|&v| v as u8 as u32));
            (256, array.nulls())
        }
        KeyKind::Boolean => {
            codes.extend(array.as_boolean().values().iter().map(u32::from));
            (2, array.nulls())
        }
    };
    if let Some(nulls) = nulls.filter(|n| n.null_count() > 0) {
        for (code, valid) in codes.iter_mut().zip(nulls.iter()) {
            if !valid {
                *code = null_code;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringDictionaryBuilder};
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
