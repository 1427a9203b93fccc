//! The Arrow schema of the `logs` table and the builder that turns decoded events into
//! RecordBatches.

mod builder;

pub use builder::{EventBatchBuilder, Origin};

use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, DictionaryArray, Int32Array, RecordBatch, StringBuilder,
    new_null_array,
};
use arrow::datatypes::Int32Type;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

/// Column names, in schema order. Tests and SQL refer to them by these names.
pub mod col {
    pub const TIMESTAMP: &str = "timestamp";
    pub const RECEIVED_AT: &str = "received_at";
    pub const MESSAGE: &str = "message";
    pub const TEMPLATE_ID: &str = "template_id";
    pub const PROTOCOL: &str = "protocol";
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
        // The wire protocol that brought the event (`ingest::event::Protocol`); null for data
        // written before the column existed.
        Field::new(col::PROTOCOL, dict(), true),
        // The OpenTelemetry trace and span of the event, lowercase hex.
        Field::new("trace_id", DataType::Utf8, true),
        Field::new("span_id", DataType::Utf8, true),
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

/// `batches` (each of [`schema`]) as one batch, with the dictionaries made unique (see
/// [`merge_dictionaries`]): a WAL group, or what the rules evaluate at once.
///
/// A lone batch of fewer rows than a builder's first allocation is copied to buffers of its
/// own size: a request of one event comes out of its builder holding room for a thousand
/// (about 90 KiB), and as a WAL group of its own it would keep that in the memtable and count
/// it towards `flush_bytes`.
pub fn combine(batches: &[RecordBatch]) -> Result<RecordBatch, ArrowError> {
    match batches {
        [one] if one.num_rows() < BUILDER_ROWS => merge_dictionaries(compact(one)?),
        [one] => merge_dictionaries(one.clone()),
        _ => merge_dictionaries(arrow::compute::concat_batches(&schema(), batches)?),
    }
}

/// The rows an Arrow builder makes room for when it is created.
const BUILDER_ROWS: usize = 1024;

/// `batch` copied into buffers of its own size, dictionary values too: nothing of it keeps
/// a larger batch it was sliced from, or a builder's spare room, alive.
pub fn compact(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let copy = |a: &ArrayRef| {
        let all = arrow::array::UInt32Array::from_iter_values(0..a.len() as u32);
        arrow::compute::take(a.as_ref(), &all, None)
    };
    let columns = batch
        .columns()
        .iter()
        .map(|c| match c.as_dictionary_opt::<Int32Type>() {
            Some(d) => {
                let keys = copy(&(Arc::new(d.keys().clone()) as ArrayRef))?;
                let keys = keys.as_primitive::<Int32Type>().clone();
                Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(keys, copy(d.values())?)?) as ArrayRef)
            }
            None => copy(c),
        })
        .collect::<Result<Vec<_>, ArrowError>>()?;
    RecordBatch::try_new(batch.schema(), columns)
}

/// `batch` with each dictionary column's values made unique.
///
/// Concatenating batches (as the batcher does for each WAL group) appends their dictionaries
/// one after another, so a group of a few hundred connection batches repeats every host, app
/// and peer hundreds of times. Everything downstream then pays per value: the WAL's bytes, and
/// each rule's GROUP BY, which would look every copy up. One pass here, hashing each value
/// once, makes the group's dictionaries as small as its distinct values.
pub fn merge_dictionaries(batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
    let mut columns: Option<Vec<ArrayRef>> = None;
    for (i, column) in batch.columns().iter().enumerate() {
        let Some(dict) = column.as_dictionary_opt::<Int32Type>() else { continue };
        if let Some(merged) = unique_values(dict)? {
            columns.get_or_insert_with(|| batch.columns().to_vec())[i] = Arc::new(merged);
        }
    }
    match columns {
        Some(columns) => RecordBatch::try_new(batch.schema(), columns),
        None => Ok(batch),
    }
}

/// `dict` over unique values, or `None` when its values already are (or are not plain text).
fn unique_values(
    dict: &DictionaryArray<Int32Type>,
) -> Result<Option<DictionaryArray<Int32Type>>, ArrowError> {
    let Some(values) = dict.values().as_string_opt::<i32>() else { return Ok(None) };
    if values.len() < 2 || values.null_count() > 0 {
        return Ok(None);
    }
    let mut seen: foldhash::HashMap<&str, i32> = foldhash::HashMap::default();
    seen.reserve(values.len().min(1024));
    let mut unique = StringBuilder::new();
    let remap: Vec<i32> = values
        .iter()
        .map(|v| {
            let v = v.unwrap_or_default();
            *seen.entry(v).or_insert_with(|| {
                unique.append_value(v);
                (unique.len() - 1) as i32
            })
        })
        .collect();
    if unique.len() == values.len() {
        return Ok(None);
    }
    // Keys under a null slot may hold anything: map them to 0 rather than index out of range.
    let keys = dict.keys();
    let new_keys: Vec<i32> =
        keys.values().iter().map(|&k| remap.get(k as usize).copied().unwrap_or(0)).collect();
    let new_keys = Int32Array::new(new_keys.into(), keys.nulls().cloned());
    DictionaryArray::try_new(new_keys, Arc::new(unique.finish())).map(Some)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_lone_small_batch_is_combined_into_buffers_of_its_size() {
        use crate::ingest::event::{Event, Protocol};
        let mut b = EventBatchBuilder::new(Origin {
            listener: "l".into(),
            peer: "p".into(),
            client_id: "".into(),
            protocol: Protocol::Ndjson,
        });
        b.append(&Event::raw(std::borrow::Cow::Borrowed("one event"), "x"), 1);
        let one = b.finish().unwrap();
        let combined = super::combine(std::slice::from_ref(&one)).unwrap();
        assert_eq!(combined.num_rows(), 1);
        assert!(
            combined.get_array_memory_size() * 4 < one.get_array_memory_size(),
            "{} bytes from a builder's {}",
            combined.get_array_memory_size(),
            one.get_array_memory_size()
        );
    }

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
        let mut b = EventBatchBuilder::new(Origin {
            listener: "l".into(),
            peer: "p".into(),
            client_id: "".into(),
            protocol: crate::ingest::event::Protocol::Syslog,
        });
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

    #[test]
    fn concatenated_dictionaries_are_merged_to_unique_values() {
        let one = |host: Option<&str>, peer: &str| {
            let mut b = EventBatchBuilder::new(Origin {
                listener: "l".into(),
                peer: peer.into(),
                client_id: "".into(),
                protocol: crate::ingest::event::Protocol::Syslog,
            });
            let mut e = crate::ingest::event::Event::raw(std::borrow::Cow::Borrowed("m"), "");
            e.host = host.map(|h| std::borrow::Cow::Owned(h.to_owned()));
            b.append(&e, 1);
            b.append(&crate::ingest::event::Event::raw(std::borrow::Cow::Borrowed("n"), ""), 2);
            b.finish().unwrap()
        };
        let parts = [one(Some("a"), "p1"), one(Some("b"), "p1"), one(Some("a"), "p2"), one(None, "p1")];
        let concat = arrow::compute::concat_batches(&schema(), &parts).unwrap();
        let host = concat.schema().index_of("host").unwrap();
        let peer = concat.schema().index_of("peer").unwrap();
        let values_of = |b: &RecordBatch, c: usize| b.column(c).as_dictionary::<Int32Type>().values().len();
        assert_eq!(values_of(&concat, peer), 4, "concat keeps every part's dictionary");

        let merged = merge_dictionaries(concat.clone()).unwrap();
        assert_eq!(values_of(&merged, peer), 2);
        assert_eq!(values_of(&merged, host), 2);
        let text = |b: &RecordBatch, c: usize| {
            let a = arrow::compute::cast(b.column(c), &DataType::Utf8).unwrap();
            a.as_string::<i32>().iter().map(|v| v.map(str::to_owned)).collect::<Vec<_>>()
        };
        for c in 0..concat.num_columns() {
            assert_eq!(merged.column(c).len(), concat.column(c).len());
            if let DataType::Dictionary(..) = concat.schema().field(c).data_type() {
                assert_eq!(text(&merged, c), text(&concat, c), "column {c}");
            } else {
                assert_eq!(merged.column(c), concat.column(c));
            }
        }
        assert_eq!(
            text(&merged, host),
            [Some("a"), None, Some("b"), None, Some("a"), None, None, None].map(|v| v.map(str::to_owned))
        );
    }
}
