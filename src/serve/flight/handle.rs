//! Statement handles: the SQL text and any bound parameters, carried in tickets and prepared
//! statement handles so that any server task can run them and the server keeps no per-client
//! state (closing a prepared statement frees nothing because nothing was held).
//!
//! Layout: `LWQ1`, SQL length (u32 LE), SQL (UTF-8), then an optional Arrow IPC stream holding
//! one row of parameter values.

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::error::ArrowError;
use arrow::ipc::reader::StreamDecoder;
use arrow::ipc::writer::StreamWriter;
use bytes::Bytes;
use datafusion::common::ScalarValue;

use super::ipc_check::IpcCheck;

const MAGIC: &[u8; 4] = b"LWQ1";

#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sql: String,
    /// Positional parameter values (`$1`, `$2`, ... or each `?` in order).
    pub params: Vec<ScalarValue>,
    /// The parameter row as received, re-encoded into the handle.
    params_batch: Option<RecordBatch>,
}

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error("not a logwarden statement handle")]
    Foreign,
    #[error("corrupt statement handle: {0}")]
    Corrupt(String),
    #[error("parameters must be one row, got {0}")]
    Rows(usize),
}

impl Statement {
    pub fn new(sql: impl Into<String>) -> Self {
        Statement { sql: sql.into(), params: Vec::new(), params_batch: None }
    }

    /// Bind the values of the last row of `batch` (clients send one row per execution).
    pub fn with_params(mut self, batch: RecordBatch) -> Result<Self, HandleError> {
        if batch.num_rows() == 0 {
            return Err(HandleError::Rows(0));
        }
        let row = batch.num_rows() - 1;
        let batch = batch.slice(row, 1);
        self.params = batch
            .columns()
            .iter()
            .map(|c| ScalarValue::try_from_array(c, 0))
            .collect::<Result<_, _>>()
            .map_err(|e| HandleError::Corrupt(e.to_string()))?;
        self.params_batch = Some(batch);
        Ok(self)
    }

    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(8 + self.sql.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.sql.len() as u32).to_le_bytes());
        out.extend_from_slice(self.sql.as_bytes());
        if let Some(batch) = &self.params_batch {
            // Writing to a Vec cannot fail for a batch that was decoded from IPC.
            let mut ipc = Vec::new();
            let written = StreamWriter::try_new(&mut ipc, &batch.schema())
                .and_then(|mut w| w.write(batch).and_then(|_| w.finish()));
            if written.is_ok() {
                out.extend_from_slice(&ipc);
            }
        }
        Bytes::from(out)
    }

    pub fn decode(b: &[u8]) -> Result<Self, HandleError> {
        let rest = b.strip_prefix(MAGIC).ok_or(HandleError::Foreign)?;
        let len = rest.get(..4).ok_or_else(|| HandleError::Corrupt("short".into()))?;
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let sql = rest.get(4..4 + len).ok_or_else(|| HandleError::Corrupt("short SQL".into()))?;
        let sql = std::str::from_utf8(sql).map_err(|e| HandleError::Corrupt(e.to_string()))?;
        let ipc = &rest[4 + len..];
        let stmt = Statement::new(sql);
        if ipc.is_empty() {
            return Ok(stmt);
        }
        // A handle comes from the client. The push decoder holds only the bytes it was given
        // (StreamReader would size buffers from the lengths the stream declares, before
        // reading them), and it runs only on messages whose buffers lie within their bodies.
        IpcCheck::stream(ipc).map_err(HandleError::Corrupt)?;
        let corrupt = |e: ArrowError| HandleError::Corrupt(e.to_string());
        let mut decoder = StreamDecoder::new();
        let mut buffer = Buffer::from(ipc);
        match decoder.decode(&mut buffer).map_err(corrupt)? {
            Some(batch) => stmt.with_params(batch),
            None => {
                decoder.finish().map_err(corrupt)?;
                Ok(stmt)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};

    use super::*;

    /// Found by the `handle` fuzz target: the IPC reader sized its buffers from the lengths a
    /// handle declares before reading them, so an 80-byte handle made the server allocate and
    /// zero 1.7 GB (a metadata length), and a declared body length past what can be allocated
    /// panicked, or aborted the process.
    #[test]
    fn declared_lengths_are_not_trusted() {
        use arrow::datatypes::Schema;
        use arrow::ipc::convert::IpcSchemaEncoder;
        use arrow::ipc::{MessageBuilder, MessageHeader, MetadataVersion};

        // A schema message that declares a body of i64::MAX bytes.
        let mut fbb = Default::default();
        let header = IpcSchemaEncoder::new().schema_to_fb_offset(&mut fbb, &Schema::empty());
        let mut message = MessageBuilder::new(&mut fbb);
        message.add_version(MetadataVersion::V5);
        message.add_header_type(MessageHeader::Schema);
        message.add_header(header.as_union_value());
        message.add_bodyLength(i64::MAX);
        let message = message.finish();
        fbb.finish(message, None);
        let meta = fbb.finished_data();
        let mut handle = b"LWQ1\0\0\0\0\xff\xff\xff\xff".to_vec();
        handle.extend_from_slice(&i32::try_from(meta.len()).unwrap().to_le_bytes());
        handle.extend_from_slice(meta);
        assert!(matches!(Statement::decode(&handle), Err(HandleError::Corrupt(_))));

        // Metadata of 2 GiB announced, 8 bytes sent.
        let handle = b"LWQ1\0\0\0\0\xff\xff\xff\xff\xf0\xff\xff\x7f\0\0\0\0\0\0\0\0";
        assert!(matches!(Statement::decode(handle), Err(HandleError::Corrupt(_))));
    }

    /// Found by the `handle` fuzz target: arrow-ipc slices a record batch's buffers at the
    /// offsets its message declares without checking them against the body, a panic.
    #[test]
    fn buffers_outside_the_body_are_refused() {
        use arrow::datatypes::{DataType, Field, Schema};
        use arrow::ipc::convert::IpcSchemaEncoder;
        use arrow::ipc::{
            Buffer as IpcBuffer, FieldNode, MessageBuilder, MessageHeader, MetadataVersion,
            RecordBatchBuilder,
        };

        let schema = Schema::new(vec![Field::new("0", DataType::Int64, true)]);
        let mut ipc = Vec::new();
        StreamWriter::try_new(&mut ipc, &schema).unwrap(); // writes the schema message
        for (offset, length) in [(1 << 40, 8), (8, 8), (i64::MAX, 8), (-8, 8), (0, -1)] {
            let mut fbb = Default::default();
            // Names the builder's type (flatbuffers is no dependency of logwarden's own).
            let _ = IpcSchemaEncoder::new().schema_to_fb_offset(&mut fbb, &Schema::empty());
            let nodes = fbb.create_vector(&[FieldNode::new(1, 0)]);
            let buffers = fbb.create_vector(&[IpcBuffer::new(0, 0), IpcBuffer::new(offset, length)]);
            let mut batch = RecordBatchBuilder::new(&mut fbb);
            batch.add_length(1);
            batch.add_nodes(nodes);
            batch.add_buffers(buffers);
            let batch = batch.finish();
            let mut message = MessageBuilder::new(&mut fbb);
            message.add_version(MetadataVersion::V5);
            message.add_header_type(MessageHeader::RecordBatch);
            message.add_header(batch.as_union_value());
            message.add_bodyLength(8);
            let message = message.finish();
            fbb.finish(message, None);
            let meta = fbb.finished_data();
            let mut handle = Statement::new("SELECT $1").encode().to_vec();
            handle.extend_from_slice(&ipc);
            handle.extend_from_slice(b"\xff\xff\xff\xff");
            handle.extend_from_slice(&i32::try_from(meta.len()).unwrap().to_le_bytes());
            handle.extend_from_slice(meta);
            handle.extend_from_slice(&[0; 8]);
            let r = Statement::decode(&handle);
            assert!(matches!(r, Err(HandleError::Corrupt(_))), "buffer at {offset} of {length}: {r:?}");
        }
    }

    /// Handles the `handle` fuzz target found, kept as its seeds: schemas arrow-ipc 59's
    /// conversion panics on (an `unwrap` where a field list or a dictionary's index type is
    /// missing, `unimplemented!` for a NONE type, `panic!` for an Int of 65600 bits or a list
    /// without its child), and so did decoding a handle holding one.
    #[test]
    fn a_schema_arrow_cannot_convert_is_refused() {
        let found: [(&str, &[u8]); 5] = [
            ("no field list", include_bytes!("../../../fuzz/seeds/handle/found-schema-without-fields")),
            ("a NONE type", include_bytes!("../../../fuzz/seeds/handle/found-schema-type-none")),
            (
                "an Int of 65600 bits",
                include_bytes!("../../../fuzz/seeds/handle/found-schema-int-65600-bits"),
            ),
            (
                "a list without its child",
                include_bytes!("../../../fuzz/seeds/handle/found-schema-list-without-child"),
            ),
            (
                "a dictionary without an index type",
                include_bytes!("../../../fuzz/seeds/handle/found-schema-dictionary-without-index"),
            ),
        ];
        for (what, handle) in found {
            let r = Statement::decode(handle);
            assert!(matches!(r, Err(HandleError::Corrupt(_))), "a schema with {what}: {r:?}");
        }
    }

    /// Found by the `handle` fuzz target: a column declaring nulls with a validity bitmap
    /// shorter than its rows made arrow-buffer panic while building the array, before arrow
    /// validates it.
    #[test]
    fn a_validity_bitmap_shorter_than_its_column_is_refused() {
        let handle = include_bytes!("../../../fuzz/seeds/handle/found-short-validity-bitmap");
        let r = Statement::decode(handle);
        assert!(matches!(r, Err(HandleError::Corrupt(_))), "{r:?}");
    }

    /// Found by the `handle` fuzz target: arrow-data's validation reads a string column's
    /// offsets as i32 values and asserts the buffer holds whole ones (a panic for 35 bytes),
    /// and arrow-ipc asserts a batch has no more variadic buffer counts than view columns.
    #[test]
    fn buffers_arrow_asserts_on_are_refused() {
        let found: [(&str, &[u8]); 2] = [
            (
                "offsets that are no whole i32s",
                include_bytes!("../../../fuzz/seeds/handle/found-offsets-not-whole-values"),
            ),
            (
                "a variadic buffer count too many",
                include_bytes!("../../../fuzz/seeds/handle/found-surplus-variadic-count"),
            ),
        ];
        for (what, handle) in found {
            let r = Statement::decode(handle);
            assert!(matches!(r, Err(HandleError::Corrupt(_))), "{what}: {r:?}");
        }
    }

    /// A compressed buffer's length prefix is what arrow-ipc reserves before decompressing it:
    /// a prefix of 1 TiB in a few bytes made the allocation fail, which aborts the process.
    #[test]
    fn a_compressed_buffer_declaring_a_huge_length_is_refused() {
        use arrow::datatypes::{DataType, Field, Schema};
        use arrow::ipc::CompressionType;
        use arrow::ipc::writer::IpcWriteOptions;

        let schema = Arc::new(Schema::new(vec![Field::new("0", DataType::Int64, true)]));
        let values = Int64Array::from(vec![Some(0); 1000]);
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(values)]).unwrap();
        let options =
            IpcWriteOptions::default().try_with_compression(Some(CompressionType::LZ4_FRAME)).unwrap();
        let mut ipc = Vec::new();
        let mut writer = StreamWriter::try_new_with_options(&mut ipc, &schema, options).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        drop(writer);
        let mut handle = Statement::new("SELECT $1").encode().to_vec();
        handle.extend_from_slice(&ipc);
        assert!(Statement::decode(&handle).is_ok(), "the honest stream decodes");
        // The values' prefix (8000, LE) before the LZ4 frame's magic number.
        let at = handle.windows(12).position(|w| w == b"\x40\x1f\0\0\0\0\0\0\x04\x22\x4d\x18").unwrap();
        handle[at..at + 8].copy_from_slice(&(1i64 << 40).to_le_bytes());
        let r = Statement::decode(&handle);
        assert!(matches!(r, Err(HandleError::Corrupt(_))), "{r:?}");
    }

    #[test]
    fn round_trips_sql_and_parameters() {
        let s = Statement::new("SELECT * FROM logs WHERE severity <= ? AND app = ?");
        assert_eq!(Statement::decode(&s.encode()).unwrap(), s);
        let batch = RecordBatch::try_from_iter([
            ("0", Arc::new(Int64Array::from(vec![3])) as _),
            ("1", Arc::new(StringArray::from(vec!["sshd"])) as _),
        ])
        .unwrap();
        let bound = s.with_params(batch).unwrap();
        assert_eq!(bound.params, vec![ScalarValue::Int64(Some(3)), ScalarValue::Utf8(Some("sshd".into()))]);
        let back = Statement::decode(&bound.encode()).unwrap();
        assert_eq!(back.params, bound.params);
        assert!(matches!(Statement::decode(b"SELECT 1"), Err(HandleError::Foreign)));
        assert!(Statement::decode(b"LWQ1\xff\xff\xff\xffx").is_err());
    }
}
