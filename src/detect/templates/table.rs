//! The `templates` table: one row per mined template (`id` is what `logs.template_id` holds;
//! events given a template that was later merged keep its id, and `merged_into` names the
//! template that took its place: `coalesce(merged_into, id)` groups them).
//!
//! In the daemon it reads the live miner; `logwarden query` on a data directory reads the
//! saved `templates.json`. With a bucket, the templates other nodes published follow, each row
//! with its `node` (ids are per node: `logs.template_id` refers to the templates of the node that
//! took the event in).

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampNanosecondArray, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::{DataFusionError, Result};

use super::{Shared, Template};
use crate::query::snapshot::SnapshotTable;
use crate::store::{Store, TEMPLATES_FILE};

/// Where the rows come from.
pub enum Source {
    Live(Arc<Shared>),
    File(PathBuf),
}

/// The `templates` table: this node's from `source`, the other nodes' from `store`.
pub fn templates_table(source: Source, store: Store) -> SnapshotTable {
    SnapshotTable::new(schema(), move || {
        let templates = match &source {
            Source::Live(shared) => shared.snapshot(),
            Source::File(path) => {
                Shared::load(path, None).map_err(|e| DataFusionError::External(Box::new(e)))?.snapshot()
            }
        };
        let mut batches = vec![to_batch(&templates, store.node_id())?];
        for (node, body) in store.peer_files(TEMPLATES_FILE) {
            match Shared::decode(&body, &format!("the templates of node {node}")) {
                Ok(t) => batches.push(to_batch(&t, Some(&node))?),
                // One node's unreadable file must not hide the rest.
                Err(e) => tracing::warn!(node, error = %e, "skipping another node's templates"),
            }
        }
        Ok(batches)
    })
}

pub fn schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::UInt32, false),
        Field::new("pattern", DataType::Utf8, false),
        Field::new("count", DataType::UInt64, false),
        Field::new("first_seen", ts(), false),
        Field::new("last_seen", ts(), false),
        Field::new("example", DataType::Utf8, false),
        // The node whose miner holds the template (null without a bucket).
        Field::new("node", DataType::Utf8, true),
        // The template this one was merged into, once found to be the same statement with a
        // word for a value: its events since then have that id (null for a live template).
        Field::new("merged_into", DataType::UInt32, true),
    ]))
}

fn to_batch(templates: &[Template], node: Option<&str>) -> Result<RecordBatch> {
    let mut templates = templates.to_vec();
    super::miner::resolve_merges(&mut templates);
    let templates = &templates[..];
    let ts = |f: fn(&Template) -> i64| {
        Arc::new(TimestampNanosecondArray::from_iter_values(templates.iter().map(f)).with_timezone("UTC"))
            as ArrayRef
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(templates.iter().map(|t| t.id))),
        Arc::new(StringArray::from_iter_values(templates.iter().map(Template::pattern))),
        Arc::new(UInt64Array::from_iter_values(templates.iter().map(|t| t.count))),
        ts(|t| t.first_seen),
        ts(|t| t.last_seen),
        Arc::new(StringArray::from_iter_values(templates.iter().map(|t| t.example.as_str()))),
        Arc::new(StringArray::from_iter(templates.iter().map(|_| node))),
        Arc::new(UInt32Array::from_iter(templates.iter().map(|t| t.merged_into))),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}
