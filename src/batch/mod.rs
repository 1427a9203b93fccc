//! The Arrow schema of the `logs` table and the builder that turns decoded events into
//! RecordBatches.

mod builder;

pub use builder::{EventBatchBuilder, Origin};

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Column names, in schema order. Tests and SQL refer to them by these names.
pub mod col {
    pub const TIMESTAMP: &str = "timestamp";
    pub const RECEIVED_AT: &str = "received_at";
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
        Field::new("message", DataType::Utf8, false),
        Field::new("structured_data", DataType::Utf8, true),
        Field::new("fields", DataType::Utf8, true),
        Field::new("peer", dict(), false),
        Field::new("client_id", dict(), false),
        Field::new("listener", dict(), false),
        Field::new("decode_error", dict(), true),
    ]))
});

/// The schema of every batch and of the `logs` table.
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// Index of the `timestamp` column.
pub const TIMESTAMP_INDEX: usize = 0;
