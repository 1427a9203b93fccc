//! The Arrow schema of the `logs` table and the builder that turns decoded events into
//! RecordBatches.

mod builder;

pub use builder::{EventBatchBuilder, Origin};

use std::sync::{Arc, LazyLock};

use arrow::array::{RecordBatch, new_null_array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

/// Column names, in schema order. Tests and SQL refer to them by these names.
pub mod col {
    pub const TIMESTAMP: &str = "timestamp";
    pub const RECEIVED_AT: &str = "received_at";
    pub const MESSAGE: &str = "message";
    pub const TEMPLATE_ID: &str = "template_id";
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// Low-cardinality text: dictionary encoded in memory and in Parquet.
fn dict() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(col::TIMESTAMP, ts(), false),
        Field::new(col::RECEIVED_AT, ts(), false),
        Field::new("severity", DataType::UInt8, true),
        Field::new("facility", DataType::UInt8, true),
        Field::new("host", dict(), true),
        Field::new("app", dict(), true),
        Field::new("procid", DataType::Utf8, true),
        Field::new("msgid", dict(), true),
        Field::new(col::MESSAGE, DataType::Utf8, false),
        Field::new("structured_data", DataType::Utf8, true),
        Field::new("fields", DataType::Utf8, true),
        Field::new("peer", dict(), false),
        Field::new("client_id", dict(), false),
        Field::new("listener", dict(), false),
        Field::new("decode_error", dict(), true),
        // The message's template (the `templates` table); null where mining was off, or for
        // data written before the column existed.
        Field::new(col::TEMPLATE_ID, DataType::UInt32, true),
    ]))
});

/// The schema of every batch and of the `logs` table.
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// Index of the `timestamp` column.
pub const TIMESTAMP_INDEX: usize = 0;
/// Index of the `message` column.
pub const MESSAGE_INDEX: usize = 8;
/// Index of the `template_id` column.
pub const TEMPLATE_ID_INDEX: usize = 15;

/// A batch in the current schema, from one written by an earlier version (WAL replay): columns
/// it lacks (all nullable) are filled with nulls; a batch already in the schema is returned as is.
pub fn conform(batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
    let schema = schema();
    if batch.schema() == schema {
        return Ok(batch);
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => Ok(c.clone()),
            None if f.is_nullable() => Ok(new_null_array(f.data_type(), batch.num_rows())),
            None => Err(ArrowError::SchemaError(format!("a stored batch has no {} column", f.name()))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema, columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_indexes_match_the_schema() {
        let s = schema();
        assert_eq!(s.index_of(col::TIMESTAMP).unwrap(), TIMESTAMP_INDEX);
        assert_eq!(s.index_of(col::MESSAGE).unwrap(), MESSAGE_INDEX);
        assert_eq!(s.index_of(col::TEMPLATE_ID).unwrap(), TEMPLATE_ID_INDEX);
    }

    #[test]
    fn a_batch_from_an_older_schema_gains_null_columns() {
        let mut b =
            EventBatchBuilder::new(Origin { listener: "l".into(), peer: "p".into(), client_id: "".into() });
        b.append(&crate::ingest::event::Event::raw(std::borrow::Cow::Borrowed("m"), ""), 1);
        let current = b.finish().unwrap();
        // A batch as written before template_id existed: every column but the last.
        let old = current.project(&(0..TEMPLATE_ID_INDEX).collect::<Vec<_>>()).unwrap();
        assert_ne!(old.schema(), schema());
        let c = conform(old).unwrap();
        assert_eq!(c.schema(), schema());
        assert_eq!(c.column(TEMPLATE_ID_INDEX).null_count(), 1);
        assert_eq!(c.column(MESSAGE_INDEX), current.column(MESSAGE_INDEX));
    }
}
