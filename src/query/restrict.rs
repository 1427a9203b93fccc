//! Enforcing a principal's [`QueryGrant`] on a planned statement: every table scan, including
//! those in subqueries, must be of an allowed table, and a table granted with a row filter is
//! replaced by itself under that filter before the optimiser runs. The filter wraps the table
//! itself, so nothing in the caller's SQL can get around it.

use std::sync::Arc;

use datafusion::common::DFSchema;
use datafusion::common::tree_node::Transformed;
use datafusion::error::DataFusionError;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{Filter, LogicalPlan, LogicalPlanBuilder, TableScan, TableScanBuilder};

use super::QueryError;
use crate::access::QueryGrant;

/// `plan` with the grant applied, or `QueryError::Denied` naming the first table not allowed.
pub fn restrict(
    plan: LogicalPlan,
    grant: &QueryGrant,
    principal: &str,
    state: &SessionState,
) -> Result<LogicalPlan, QueryError> {
    if *grant == QueryGrant::Unrestricted {
        return Ok(plan);
    }
    let rewritten = plan.transform_up_with_subqueries(|node| {
        let LogicalPlan::TableScan(scan) = node else { return Ok(Transformed::no(node)) };
        // Catalog metadata (table and column names) is open to every caller.
        if scan.table_name.schema() == Some("information_schema") {
            return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
        }
        let table = scan.table_name.table().to_owned();
        match grant.table(&table) {
            None => Err(DataFusionError::External(Box::new(QueryError::Denied(format!(
                "{principal} may not query table {table} ([access] query rules allow: {})",
                grant.allowed_tables().join(", ")
            ))))),
            Some(None) => Ok(Transformed::no(LogicalPlan::TableScan(scan))),
            Some(Some(cond)) => filtered(scan, cond, state).map(Transformed::yes),
        }
    });
    match rewritten {
        Ok(t) => Ok(t.data),
        Err(DataFusionError::External(e)) if e.is::<QueryError>() => match e.downcast::<QueryError>() {
            Ok(q) => Err(*q),
            Err(e) => Err(QueryError::Sql(DataFusionError::External(e))),
        },
        Err(e) => Err(QueryError::Sql(e)),
    }
}

/// `scan` under `cond`, with the scan's own projection (if any) applied above the filter.
fn filtered(scan: TableScan, cond: &str, state: &SessionState) -> Result<LogicalPlan, DataFusionError> {
    let full = TableScanBuilder::new(scan.table_name.clone(), scan.source.clone())
        .with_filters(scan.filters.clone())
        .build()?;
    let schema: DFSchema = full.projected_schema.as_ref().clone();
    let predicate = state.create_logical_expr(cond, &schema).map_err(|e| {
        DataFusionError::Plan(format!(
            "the [access] row_filter {cond:?} does not apply to {}: {e}",
            scan.table_name
        ))
    })?;
    let filter = LogicalPlan::Filter(Filter::try_new(predicate, Arc::new(LogicalPlan::TableScan(full)))?);
    let Some(projection) = &scan.projection else { return Ok(filter) };
    let columns: Vec<_> =
        projection.iter().map(|&i| datafusion::prelude::Expr::Column(schema.columns()[i].clone())).collect();
    LogicalPlanBuilder::from(filter).project(columns)?.build()
}
