//! A rule compiled once into DataFusion plans that run on each arriving batch.
//!
//! A rule with an aggregation is split where DataFusion itself splits it: the `Partial`
//! aggregate (and the filters and projections below it) runs on every batch and leaves a few
//! rows of accumulator state per group; a `PartialReduce` aggregate folds a pane's states
//! together when they pile up; at a window's close the `Final` aggregate and everything above
//! it (HAVING, ORDER BY, LIMIT, projections) run on the window's states. Stored history is
//! never read. A rule without an aggregation keeps its output rows per batch.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use datafusion::common::DFSchema;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{SessionConfig, SessionContext};

use super::feed::{EventsTable, FeedExec, Slot};
use crate::config::RuleConfig;
use crate::query::group_by::DictionaryGroupByExec;

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{0}")]
    Plan(String),
    #[error("{0}")]
    Unsupported(String),
}

impl From<DataFusionError> for RuleError {
    fn from(e: DataFusionError) -> Self {
        RuleError::Plan(e.strip_backtrace())
    }
}

/// DataFusion's message for `e`, with its hint for an unknown function ("Did you mean 'ln'?")
/// made again deterministically. DataFusion picks the first of the nearest names in its
/// registries' hash order, so the same rule got another hint on each load; here the nearest
/// name of the same kind as DataFusion's pick is taken, the first in alphabetical order.
fn stable_hint(e: DataFusionError, ctx: &SessionContext) -> String {
    use datafusion::common::utils::datafusion_strsim::levenshtein;
    let message = e.strip_backtrace();
    let Some((head, tail)) = message.split_once("Invalid function '") else { return message };
    let Some((name, hint)) = tail.split_once("'.\nDid you mean '") else { return message };
    let Some((picked, rest)) = hint.split_once("'?") else { return message };
    let state = ctx.state();
    let windows = state.window_functions();
    // With OVER, DataFusion looks among aggregate and window functions; otherwise among
    // scalar (and higher-order) and aggregate ones.
    let names: Vec<&String> = if windows.contains_key(picked) {
        state.aggregate_functions().keys().chain(windows.keys()).collect()
    } else {
        let scalar = state.scalar_functions().keys().chain(state.higher_order_functions().keys());
        scalar.chain(state.aggregate_functions().keys()).collect()
    };
    let lower = name.to_lowercase();
    let nearest = names.into_iter().min_by_key(|n| (levenshtein(&n.to_lowercase(), &lower), n.as_str()));
    match nearest {
        Some(nearest) => format!("{head}Invalid function '{name}'.\nDid you mean '{nearest}'?{rest}"),
        None => message,
    }
}

/// Operators that may run on one batch at a time below an aggregation (or make up a rule
/// without one): anything else would see one batch where the SQL means the whole window.
const PER_BATCH: &[&str] =
    &["FeedExec", "CooperativeExec", "FilterExec", "ProjectionExec", "CoalesceBatchesExec"];

pub struct Rule {
    pub name: String,
    /// Window length and step, in ns.
    pub window: i64,
    pub every: i64,
    pub severity: String,
    pub labels: BTreeMap<String, String>,
    pub sql: String,
    /// The output's schema (of `rule_results` rows and alert conditions).
    pub schema: SchemaRef,
    shape: Shape,
    /// The rule's WHERE over `events`, keeping a few columns: sample events for alerts.
    sample: Option<Arc<dyn ExecutionPlan>>,
    input: Slot,
    alert_when: Option<Arc<dyn PhysicalExpr>>,
    task: Arc<TaskContext>,
}

enum Shape {
    Aggregate {
        input: Slot,
        partial: Arc<dyn ExecutionPlan>,
        states: Slot,
        reduce: Arc<dyn ExecutionPlan>,
        finals: Slot,
        top: Arc<dyn ExecutionPlan>,
    },
    Rows {
        input: Slot,
        plan: Arc<dyn ExecutionPlan>,
    },
}

impl Rule {
    /// Plan `cfg`'s SQL over `events` and its alert condition over the output. The errors
    /// are DataFusion's own messages, or say which part of the SQL a rule cannot hold.
    pub async fn compile(cfg: &RuleConfig) -> Result<Rule, RuleError> {
        let config = SessionConfig::new().with_target_partitions(1).with_information_schema(false);
        let state = SessionStateBuilder::new().with_config(config).with_default_features().build();
        // Partial and Final aggregates must stay two operators: they are run apart.
        let rules: Vec<_> = state
            .physical_optimizers()
            .iter()
            .filter(|r| r.name() != "CombinePartialFinalAggregate")
            .cloned()
            .collect();
        let state =
            SessionStateBuilder::new_from_existing(state).with_physical_optimizer_rules(rules).build();
        let ctx = SessionContext::new_with_state(state);
        let input = Slot::default();
        ctx.register_table("events", Arc::new(EventsTable::new(crate::batch::schema(), input.clone())))?;
        let df = ctx.sql(&cfg.sql).await.map_err(|e| RuleError::Plan(stable_hint(e, &ctx)))?;
        let plan = df.create_physical_plan().await?;
        let schema = plan.schema();
        let task = ctx.task_ctx();

        let shape = match find_partial(&plan)? {
            Some(partial) => {
                check_per_batch(partial.input(), "an aggregation's input")?;
                let states = Slot::default();
                let finals = Slot::default();
                let reduce = reduce_of(&plan, partial, states.clone())?;
                // Grouping by `host`, `app`, `severity` and the like goes through the daemon's
                // own operator, as in queries: same states, a fraction of the cost.
                let partial: Arc<dyn ExecutionPlan> = match DictionaryGroupByExec::replacing(partial) {
                    Some(fast) => Arc::new(fast),
                    None => Arc::new(partial.clone()),
                };
                let leaf: Arc<dyn ExecutionPlan> =
                    Arc::new(FeedExec::new(partial.schema(), None, finals.clone())?);
                let top = replace_partial(&plan, &leaf)?;
                Shape::Aggregate { input, partial, states, reduce, finals, top }
            }
            None => {
                check_per_batch(&plan, "a rule without an aggregation")?;
                Shape::Rows { input, plan }
            }
        };

        let alert_when = match &cfg.alert_when {
            Some(text) => {
                let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
                let expr = ctx
                    .parse_sql_expr(text, &df_schema)
                    .map_err(|e| RuleError::Plan(format!("alert_when: {}", stable_hint(e, &ctx))))?;
                let physical = ctx
                    .create_physical_expr(expr, &df_schema)
                    .map_err(|e| RuleError::Plan(format!("alert_when: {}", e.strip_backtrace())))?;
                let ty = physical.data_type(schema.as_ref())?;
                if ty != arrow::datatypes::DataType::Boolean {
                    return Err(RuleError::Plan(format!("alert_when: is {ty}, not a condition")));
                }
                Some(physical)
            }
            None => None,
        };
        // Samples are a courtesy: a rule whose WHERE cannot stand alone just has none.
        let sample = match sample_sql(&cfg.sql) {
            Some(sql) => match ctx.sql(&sql).await {
                Ok(df) => df.create_physical_plan().await.ok().filter(|p| check_per_batch(p, "").is_ok()),
                Err(_) => None,
            },
            None => None,
        };
        let every = cfg.every.unwrap_or(cfg.window);
        Ok(Rule {
            name: cfg.name.clone(),
            window: cfg.window.as_nanos().min(i64::MAX as u128) as i64,
            every: every.as_nanos().min(i64::MAX as u128) as i64,
            severity: cfg.severity.clone(),
            labels: cfg.labels.clone(),
            sql: cfg.sql.clone(),
            schema,
            input: match &shape {
                Shape::Aggregate { input, .. } | Shape::Rows { input, .. } => input.clone(),
            },
            shape,
            sample,
            alert_when,
            task,
        })
    }

    /// What one batch of events leaves for its window: accumulator states, or output rows.
    pub async fn per_batch(&self, batch: RecordBatch) -> Result<Vec<RecordBatch>, DataFusionError> {
        let (input, plan) = match &self.shape {
            Shape::Aggregate { input, partial, .. } => (input, partial),
            Shape::Rows { input, plan } => (input, plan),
        };
        input.set(vec![batch]);
        let out = collect(plan.clone(), self.task.clone()).await?;
        Ok(out.into_iter().filter(|b| b.num_rows() > 0).collect())
    }

    /// Events of `batch` that the rule's WHERE selects (`timestamp`, `host`, `app`,
    /// `severity`, `message`), at most `max` of them.
    pub async fn sample(&self, batch: RecordBatch, max: usize) -> Vec<RecordBatch> {
        let Some(plan) = &self.sample else { return Vec::new() };
        self.input.set(vec![batch]);
        let Ok(out) = collect(plan.clone(), self.task.clone()).await else { return Vec::new() };
        let mut left = max;
        out.into_iter()
            .filter(|b| b.num_rows() > 0)
            .map_while(|b| {
                if left == 0 {
                    return None;
                }
                let n = b.num_rows().min(left);
                left -= n;
                // Copied: a slice would keep the whole batch (up to what the rules gathered)
                // alive for as long as the window is open.
                crate::batch::compact(&b.slice(0, n)).ok()
            })
            .collect()
    }

    /// Many batches of what [`Self::per_batch`] left, folded into fewer.
    pub async fn compact(&self, parts: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, DataFusionError> {
        match &self.shape {
            Shape::Aggregate { states, reduce, .. } => {
                states.set(parts);
                collect(reduce.clone(), self.task.clone()).await
            }
            Shape::Rows { .. } => {
                let Some(first) = parts.first() else { return Ok(parts) };
                Ok(vec![arrow::compute::concat_batches(&first.schema(), &parts)?])
            }
        }
    }

    /// A window's output from its panes' parts.
    pub async fn finish(&self, parts: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, DataFusionError> {
        match &self.shape {
            Shape::Aggregate { finals, top, .. } => {
                finals.set(parts);
                let out = collect(top.clone(), self.task.clone()).await?;
                Ok(out.into_iter().filter(|b| b.num_rows() > 0).collect())
            }
            Shape::Rows { .. } => Ok(parts),
        }
    }

    /// Which of `batch`'s output rows are alerts.
    pub fn alerting(&self, batch: &RecordBatch) -> Result<BooleanArray, DataFusionError> {
        let Some(expr) = &self.alert_when else {
            return Ok(BooleanArray::from(vec![true; batch.num_rows()]));
        };
        let value = expr.evaluate(batch)?.into_array(batch.num_rows())?;
        let b = value.as_boolean();
        // A null condition (a null count, say) is not an alert.
        Ok(b.iter().map(|v| Some(v.unwrap_or(false))).collect())
    }

    /// An aggregate without GROUP BY: every batch leaves a row, matched or not.
    pub fn always_one_row(&self) -> bool {
        match &self.shape {
            Shape::Aggregate { partial, .. } => (partial.as_ref() as &dyn std::any::Any)
                .downcast_ref::<AggregateExec>()
                .is_some_and(|a| a.group_expr().is_empty()),
            Shape::Rows { .. } => false,
        }
    }
}

/// `SELECT timestamp, host, app, severity, message FROM events WHERE <the rule's WHERE>`.
fn sample_sql(sql: &str) -> Option<String> {
    use datafusion::sql::sqlparser::ast::{SetExpr, Statement};
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let statements = Parser::parse_sql(&GenericDialect {}, sql).ok()?;
    let [Statement::Query(q)] = statements.as_slice() else { return None };
    let SetExpr::Select(select) = q.body.as_ref() else { return None };
    let filter = select.selection.as_ref().map(|e| format!(" WHERE {e}")).unwrap_or_default();
    Some(format!("SELECT timestamp, host, app, severity, message FROM events{filter}"))
}

/// The plan's `Partial` aggregate, if it has one; an error for shapes a rule cannot run.
fn find_partial(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<&AggregateExec>, RuleError> {
    let mut aggregates = Vec::new();
    collect_aggregates(plan, &mut aggregates);
    match aggregates.as_slice() {
        [] => Ok(None),
        [f, p] if matches!(f.mode(), AggregateMode::Final) && matches!(p.mode(), AggregateMode::Partial) => {
            Ok(Some(*p))
        }
        _ => Err(RuleError::Unsupported(
            "a rule may aggregate once (one GROUP BY level, no nested aggregation or DISTINCT aggregates)"
                .into(),
        )),
    }
}

fn collect_aggregates<'a>(plan: &'a Arc<dyn ExecutionPlan>, out: &mut Vec<&'a AggregateExec>) {
    if let Some(a) = (plan.as_ref() as &dyn std::any::Any).downcast_ref::<AggregateExec>() {
        out.push(a);
    }
    for c in plan.children() {
        collect_aggregates(c, out);
    }
}

fn check_per_batch(plan: &Arc<dyn ExecutionPlan>, what: &str) -> Result<(), RuleError> {
    if !PER_BATCH.contains(&plan.name()) {
        return Err(RuleError::Unsupported(format!(
            "{what} may only filter and compute columns of `events` (found {}: joins, unions, \
             window functions, ORDER BY and LIMIT belong after the GROUP BY)",
            plan.name()
        )));
    }
    plan.children().into_iter().try_for_each(|c| check_per_batch(c, what))
}

/// The plan with its `Partial` aggregate (and what is below it) replaced by `leaf`.
fn replace_partial(
    plan: &Arc<dyn ExecutionPlan>,
    leaf: &Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>, RuleError> {
    if let Some(a) = (plan.as_ref() as &dyn std::any::Any).downcast_ref::<AggregateExec>()
        && matches!(a.mode(), AggregateMode::Partial)
    {
        return Ok(leaf.clone());
    }
    let children =
        plan.children().into_iter().map(|c| replace_partial(c, leaf)).collect::<Result<Vec<_>, _>>()?;
    if children.is_empty() {
        return Ok(plan.clone());
    }
    Ok(replace_children_if_necessary(plan.clone(), children)?)
}

/// A `PartialReduce` aggregate over states in the shape `partial` leaves, folding them as the
/// plan's `Final` aggregate would, but keeping them states.
fn reduce_of(
    plan: &Arc<dyn ExecutionPlan>,
    p: &AggregateExec,
    slot: Slot,
) -> Result<Arc<dyn ExecutionPlan>, RuleError> {
    let mut aggregates = Vec::new();
    collect_aggregates(plan, &mut aggregates);
    let Some(final_) = aggregates.first() else {
        return Err(RuleError::Unsupported("no aggregation to fold".into()));
    };
    let feed: Arc<dyn ExecutionPlan> = Arc::new(FeedExec::new(p.schema(), None, slot)?);
    let reduce = AggregateExec::try_new(
        AggregateMode::PartialReduce,
        p.group_expr().as_final(),
        final_.aggr_expr().to_vec(),
        vec![None; final_.aggr_expr().len()],
        feed,
        final_.input_schema(),
    )?;
    Ok(Arc::new(reduce))
}

/// The output columns that label an alert: the text ones (group keys such as `host`).
pub fn text_columns(batch: &RecordBatch) -> Vec<usize> {
    (0..batch.num_columns())
        .filter(|&i| {
            matches!(
                batch.column(i).data_type(),
                arrow::datatypes::DataType::Utf8
                    | arrow::datatypes::DataType::LargeUtf8
                    | arrow::datatypes::DataType::Utf8View
                    | arrow::datatypes::DataType::Dictionary(_, _)
            )
        })
        .collect()
}

/// The rows of `batches` as column name → displayed value; null cells are left out.
pub fn displayed_rows(batches: &[RecordBatch]) -> Vec<std::collections::HashMap<String, String>> {
    use arrow::array::Array;
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let opts = FormatOptions::default();
    let mut out = Vec::new();
    for b in batches {
        let schema = b.schema();
        let Ok(fmts) = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<Result<Vec<_>, _>>()
        else {
            continue;
        };
        for i in 0..b.num_rows() {
            out.push(
                schema
                    .fields()
                    .iter()
                    .zip(&fmts)
                    .zip(b.columns())
                    .filter(|(_, c)| c.is_valid(i))
                    .map(|((f, fmt), _)| (f.name().clone(), fmt.value(i).to_string()))
                    .collect(),
            );
        }
    }
    out
}
