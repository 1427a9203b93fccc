//! The DataFusion table `logs`: Parquet segments plus the durable batches still in memory, as
//! one table. With a bucket, the other nodes' segments too (see `peers`); segments with a
//! local copy are read from it and the others from the bucket.
//!
//! Each scan takes a [`Snapshot`], keeps only the segments and batches whose time range can
//! match the query's `timestamp` predicates, and unions a Parquet scan (which also prunes row
//! groups and pages by statistics) with an in-memory scan. Filters are reported as `Inexact`, so
//! DataFusion re-applies them above the union.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{Result, ScalarValue};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown, col};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;

use super::{BucketSegment, Remote, Store};
use crate::batch::{self, col as column};

/// The `logs` table over a [`Store`].
pub struct LogsTable {
    store: Store,
}

impl LogsTable {
    pub fn new(store: Store) -> Self {
        LogsTable { store }
    }
}

impl fmt::Debug for LogsTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogsTable").field("data_dir", &self.store.data_dir()).finish()
    }
}

#[async_trait]
impl TableProvider for LogsTable {
    fn schema(&self) -> SchemaRef {
        batch::schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let snap = self.store.snapshot();
        let (lo, hi) = time_bounds(filters);
        let overlaps = |min: i64, max: i64| max >= lo && min <= hi;
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();

        // With a bucket, a segment without a local copy is read from the bucket (and copied
        // here in the background for the next query); other nodes' segments likewise.
        let mut local: Vec<PathBuf> = Vec::new();
        let mut remote: Vec<BucketSegment<'_>> = Vec::new();
        match &snap.remote {
            None => local.extend(
                snap.segments
                    .iter()
                    .filter(|s| overlaps(s.min_ts, s.max_ts))
                    .map(|s| snap.segments_dir.join(&s.file)),
            ),
            Some(r) => {
                for s in snap.bucket_segments().into_iter().filter(|s| overlaps(s.meta.min_ts, s.meta.max_ts))
                {
                    match r.cache.lookup(&s.cache_key) {
                        true => local.push(snap.segments_dir.join(&s.cache_key)),
                        false => remote.push(s),
                    }
                }
            }
        }
        let files: Vec<ListingTableUrl> =
            local.iter().map(|p| ListingTableUrl::parse(p.to_string_lossy())).collect::<Result<_>>()?;
        if !files.is_empty() {
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet")
                .with_file_sort_order(vec![vec![col(column::TIMESTAMP).sort(true, false)]]);
            let config = ListingTableConfig::new_with_multi_paths(files)
                .with_listing_options(options)
                .with_schema(batch::schema());
            // Segments never change once written: their statistics are cached across scans.
            let table = ListingTable::try_new(config)?
                .with_cache(state.runtime_env().cache_manager.get_file_statistic_cache());
            inputs.push(table.scan(state, projection, filters, limit).await?);
        }
        if let Some(r) = snap.remote.as_ref().filter(|_| !remote.is_empty()) {
            inputs.push(remote_scan(state, r, &remote, projection, limit).await?);
        }

        let mem: Vec<_> =
            snap.mem.into_iter().filter(|b| overlaps(b.min_ts, b.max_ts)).map(|b| b.batch).collect();
        if !mem.is_empty() {
            // Spread the batches over the session's partitions so a scan uses every core.
            let n = state.config().target_partitions().max(1).min(mem.len());
            let mut parts = vec![Vec::new(); n];
            for (i, b) in mem.into_iter().enumerate() {
                parts[i % n].push(b);
            }
            inputs.push(MemorySourceConfig::try_new_exec(&parts, batch::schema(), projection.cloned())?);
        }

        if inputs.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(batch::schema().project(p)?),
                None => batch::schema(),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        UnionExec::try_new(inputs)
    }
}

/// A Parquet scan of `segments` straight from the bucket. The files and their sizes come from
/// the manifests, so nothing is listed or probed first, and a segment missing from the bucket
/// fails the query with the object's name rather than reading as no rows.
async fn remote_scan(
    state: &dyn Session,
    remote: &Arc<Remote>,
    segments: &[BucketSegment<'_>],
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let url = ObjectStoreUrl::parse(remote.bucket.store_url())?;
    state.runtime_env().register_object_store(url.as_ref(), remote.bucket.object_store());
    let n = state.config().target_partitions().max(1).min(segments.len());
    let mut groups = vec![Vec::new(); n];
    for (i, s) in segments.iter().enumerate() {
        remote.cache.fetch_later(&remote.bucket, &s.cache_key, s.key.clone(), s.meta.bytes);
        groups[i % n].push(PartitionedFile::new(s.key.to_string(), s.meta.bytes));
    }
    let format = ParquetFormat::default();
    let source = format.file_source(TableSchema::from(batch::schema()));
    let config = FileScanConfigBuilder::new(url, source)
        .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
        .with_projection_indices(projection.cloned())?
        .with_limit(limit)
        .build();
    format.create_physical_plan(state, config).await
}

/// The inclusive `[lo, hi]` range of `timestamp` (ns) that the conjunctive filters allow.
fn time_bounds(filters: &[Expr]) -> (i64, i64) {
    let mut lo = i64::MIN;
    let mut hi = i64::MAX;
    for f in filters {
        narrow(f, &mut lo, &mut hi);
    }
    (lo, hi)
}

fn narrow(e: &Expr, lo: &mut i64, hi: &mut i64) {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
            narrow(left, lo, hi);
            narrow(right, lo, hi);
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (op, v) = match (is_ts_column(left), is_ts_column(right)) {
                (true, false) => (*op, literal_ns(right)),
                (false, true) => match op.swap() {
                    Some(op) => (op, literal_ns(left)),
                    None => return,
                },
                _ => return,
            };
            let Some(v) = v else { return };
            match op {
                Operator::Eq => {
                    *lo = (*lo).max(v);
                    *hi = (*hi).min(v);
                }
                Operator::Gt | Operator::GtEq => *lo = (*lo).max(v),
                Operator::Lt | Operator::LtEq => *hi = (*hi).min(v),
                _ => {}
            }
        }
        Expr::Between(b) if !b.negated && is_ts_column(&b.expr) => {
            if let Some(v) = literal_ns(&b.low) {
                *lo = (*lo).max(v);
            }
            if let Some(v) = literal_ns(&b.high) {
                *hi = (*hi).min(v);
            }
        }
        _ => {}
    }
}

fn is_ts_column(e: &Expr) -> bool {
    match e {
        Expr::Column(c) => c.name == column::TIMESTAMP,
        Expr::Cast(c) => is_ts_column(&c.expr),
        _ => false,
    }
}

/// A timestamp literal in ns, rounded outward is unnecessary: bounds are used inclusively and
/// finer units are exact multiples.
fn literal_ns(e: &Expr) -> Option<i64> {
    let Expr::Literal(v, _) = e else { return None };
    match v {
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::lit;

    fn ts(v: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(Some(v), Some("UTC".into())))
    }

    #[test]
    fn time_bounds_follow_comparisons_and_between() {
        let f = vec![col("timestamp").gt_eq(ts(10)), ts(50).gt(col("timestamp")), col("host").eq(lit("a"))];
        assert_eq!(time_bounds(&f), (10, 50));
        let b = vec![col("timestamp").between(ts(3), ts(7))];
        assert_eq!(time_bounds(&b), (3, 7));
        assert_eq!(time_bounds(&[]), (i64::MIN, i64::MAX));
    }
}
