//! A principal's [`QueryGrant`] as the catalog its statements are planned against: only the
//! tables it may read exist in it, so `information_schema`, `SHOW TABLES` and `DESCRIBE` show
//! no other table, and a table granted with a row filter is a [`RestrictedTable`] whose scan
//! yields the granted rows only (see [`scan`] for why the filter sits inside the scan).

mod scan;

use std::sync::Arc;

use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
    MemorySchemaProvider, SchemaProvider,
};
use datafusion::common::{DFSchema, DataFusionError};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement;

pub use scan::RestrictedTable;

use super::{CATALOG, QueryError, SCHEMA};
use crate::access::QueryGrant;

/// Refuse a statement that names a table `grant` does not allow, with the reason. Without this
/// the planner would only say the table does not exist.
pub fn check_tables(
    state: &SessionState,
    statement: &Statement,
    grant: &QueryGrant,
    principal: &str,
) -> Result<(), QueryError> {
    for table in state.resolve_table_references(statement)? {
        if table.schema() == Some("information_schema") {
            continue;
        }
        if grant.table(table.table()).is_none() {
            return Err(QueryError::Denied(grant.denial(principal, table.table())));
        }
    }
    Ok(())
}

/// Refuse what a planned statement would show beyond the granted rows: `EXPLAIN ANALYZE`
/// reports batches and timings of the work done on every row read, hidden ones included.
pub fn check_plan(plan: &LogicalPlan, grant: &QueryGrant, principal: &str) -> Result<(), QueryError> {
    if matches!(plan, LogicalPlan::Analyze(_)) && grant.filters_rows() {
        return Err(QueryError::Denied(format!(
            "{principal} may not run EXPLAIN ANALYZE: its metrics (batches, timings) describe work on rows that \
             its [access] row_filter hides; EXPLAIN without ANALYZE shows the plan"
        )));
    }
    Ok(())
}

/// The catalogs `principal` plans against: the engine's `logwarden.public` tables that `grant`
/// allows, each under its row filter if it has one.
pub async fn catalogs(
    engine: &dyn CatalogProviderList,
    grant: &QueryGrant,
    state: &SessionState,
) -> Result<Arc<dyn CatalogProviderList>, QueryError> {
    let schema = MemorySchemaProvider::new();
    let source = engine.catalog(CATALOG).and_then(|c| c.schema(SCHEMA));
    for (name, row_filter) in grant.tables() {
        let Some(table) = (match &source {
            Some(s) => s.table(name).await?,
            None => None,
        }) else {
            continue;
        };
        let table = match row_filter {
            None => table,
            Some(sql) => {
                let columns = DFSchema::try_from(table.schema().as_ref().clone())?;
                let filter = state.create_logical_expr(sql, &columns).map_err(|e| {
                    QueryError::Sql(DataFusionError::Plan(format!(
                        "the [access] row_filter {sql:?} does not apply to table {name}: {}",
                        e.strip_backtrace()
                    )))
                })?;
                Arc::new(RestrictedTable::new(name, table, sql, filter, blanked_columns(name)))
            }
        };
        schema.register_table(name.to_owned(), table)?;
    }
    let catalog = MemoryCatalogProvider::new();
    catalog.register_schema(SCHEMA, Arc::new(schema))?;
    let list = MemoryCatalogProviderList::new();
    list.register_catalog(CATALOG.to_owned(), Arc::new(catalog));
    Ok(Arc::new(list))
}

/// Columns a principal with a row filter on `table` reads as nulls: `logs.template_id`, an id
/// handed out in the order templates first appear across every host, so its values (and
/// gaps) tell what hidden rows look like and when they came.
fn blanked_columns(table: &str) -> &'static [&'static str] {
    match table {
        "logs" => &[crate::batch::col::TEMPLATE_ID],
        _ => &[],
    }
}
