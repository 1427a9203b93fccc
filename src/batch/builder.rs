//! Appends decoded events to Arrow column builders and seals them into a RecordBatch.
//!
//! One builder lives in each connection (or HTTP request), so decoding and building run in
//! parallel across connections and the writer only concatenates finished batches. Columns that
//! are constant for a connection (peer, client identity, listener) are not appended per row:
//! they become single-entry dictionaries when the batch is sealed.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, DictionaryArray, Int32Array, RecordBatch, StringBuilder, StringDictionaryBuilder,
    TimestampNanosecondBuilder, UInt8Builder,
};
use arrow::datatypes::Int32Type;
use arrow::error::ArrowError;

use crate::ingest::event::{Event, Protocol};

/// Where events came from; the same for every row of a builder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub listener: Arc<str>,
    /// `ip:port` of the peer.
    pub peer: Arc<str>,
    /// TLS client identity; empty until client certificates are in use.
    pub client_id: Arc<str>,
    pub protocol: Protocol,
}

pub struct EventBatchBuilder {
    origin: Origin,
    timestamp: TimestampNanosecondBuilder,
    received_at: TimestampNanosecondBuilder,
    severity: UInt8Builder,
    facility: UInt8Builder,
    host: StringDictionaryBuilder<Int32Type>,
    app: StringDictionaryBuilder<Int32Type>,
    procid: StringBuilder,
    msgid: StringDictionaryBuilder<Int32Type>,
    message: StringBuilder,
    structured_data: StringBuilder,
    fields: StringBuilder,
    decode_error: StringDictionaryBuilder<Int32Type>,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    rows: usize,
    /// Payload bytes appended, a cheap estimate of the batch's size before it is sealed.
    bytes: usize,
}

impl EventBatchBuilder {
    pub fn new(origin: Origin) -> Self {
        EventBatchBuilder {
            origin,
            timestamp: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            received_at: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            severity: UInt8Builder::new(),
            facility: UInt8Builder::new(),
            host: StringDictionaryBuilder::new(),
            app: StringDictionaryBuilder::new(),
            procid: StringBuilder::new(),
            msgid: StringDictionaryBuilder::new(),
            message: StringBuilder::new(),
            structured_data: StringBuilder::new(),
            fields: StringBuilder::new(),
            decode_error: StringDictionaryBuilder::new(),
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            rows: 0,
            bytes: 0,
        }
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Approximate bytes appended so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn append(&mut self, ev: &Event<'_>, received_at: i64) {
        self.timestamp.append_value(ev.timestamp.unwrap_or(received_at));
        self.received_at.append_value(received_at);
        self.severity.append_option(ev.severity);
        self.facility.append_option(ev.facility);
        self.host.append_option(ev.host.as_deref());
        self.app.append_option(ev.app.as_deref());
        self.procid.append_option(ev.procid.as_deref());
        self.msgid.append_option(ev.msgid.as_deref());
        self.message.append_value(&ev.message);
        self.structured_data.append_option(ev.structured_data.as_deref());
        self.fields.append_option(ev.fields.as_deref());
        self.decode_error.append_option(ev.decode_error.as_deref());
        self.trace_id.append_option(ev.trace_id.as_deref());
        self.span_id.append_option(ev.span_id.as_deref());
        self.rows += 1;
        self.bytes += 40
            + ev.message.len()
            + ev.host.as_deref().map_or(0, str::len)
            + ev.app.as_deref().map_or(0, str::len)
            + ev.structured_data.as_deref().map_or(0, str::len)
            + ev.fields.as_deref().map_or(0, str::len);
    }

    /// Seal the rows appended so far into a batch and start afresh (keeping the origin).
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let n = self.rows;
        let constant = |v: &str| -> ArrayRef {
            let keys = Int32Array::from(vec![0; n]);
            let values = Arc::new(arrow::array::StringArray::from(vec![v]));
            match DictionaryArray::<Int32Type>::try_new(keys, values) {
                Ok(a) => Arc::new(a),
                // Unreachable: key 0 always indexes the one value.
                Err(_) => Arc::new(DictionaryArray::<Int32Type>::from_iter(std::iter::repeat_n(Some(v), n))),
            }
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.timestamp.finish()),
            Arc::new(self.received_at.finish()),
            Arc::new(self.severity.finish()),
            Arc::new(self.facility.finish()),
            Arc::new(self.host.finish()),
            Arc::new(self.app.finish()),
            Arc::new(self.procid.finish()),
            Arc::new(self.msgid.finish()),
            Arc::new(self.message.finish()),
            Arc::new(self.structured_data.finish()),
            Arc::new(self.fields.finish()),
            constant(&self.origin.peer),
            constant(&self.origin.client_id),
            constant(&self.origin.listener),
            Arc::new(self.decode_error.finish()),
            // Filled in by the template miner, when it runs (`detect::templates::Shared::stamp`).
            arrow::array::new_null_array(&arrow::datatypes::DataType::UInt32, n),
            constant(self.origin.protocol.as_str()),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
        ];
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(super::schema(), columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::event::Format;
    use std::borrow::Cow;

    #[test]
    fn builds_a_batch_with_the_schema_and_constant_columns() {
        let origin = Origin {
            listener: "syslog".into(),
            peer: "127.0.0.1:5000".into(),
            client_id: "".into(),
            protocol: Protocol::Syslog,
        };
        let mut b = EventBatchBuilder::new(origin);
        let mut ev = Event::raw(Cow::Borrowed("hello"), "no decoder");
        b.append(&ev, 10);
        ev.format = Format::Rfc5424;
        ev.timestamp = Some(5);
        ev.host = Some(Cow::Borrowed("web-1"));
        ev.decode_error = None;
        b.append(&ev, 11);
        let batch = b.finish().unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), super::super::schema());
        assert!(b.is_empty());
        let pretty = arrow::util::pretty::pretty_format_batches(&[batch]).unwrap().to_string();
        assert!(pretty.contains("127.0.0.1:5000"), "{pretty}");
        assert!(pretty.contains("no decoder"), "{pretty}");
        assert!(pretty.contains("1970-01-01T00:00:00.000000005Z"), "{pretty}");
    }
}
