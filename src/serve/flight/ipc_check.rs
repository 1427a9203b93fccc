//! Checks of the Arrow IPC messages a client sends (parameters inside a statement handle, DoPut
//! parameter batches) before arrow-ipc 59 decodes them. arrow-ipc trusts what a message
//! declares in places where a lie is a panic, not an error: it converts a schema with
//! `unwrap`, `panic!` and `unimplemented!`, slices buffers at the declared offsets, reads a
//! compressed buffer's length prefix unchecked, and hands a validity bitmap to arrow-buffer,
//! which panics when it is shorter than its column, before arrow validates the array. Each
//! check here refuses one of those lies with an error; what arrow itself reports is left to it.
//!
//! A statement's parameters are scalar values, so only flat scalar columns are accepted: that
//! keeps the layouts the checks must know to a few.

use std::collections::HashMap;

use arrow::ipc::{Message, MessageHeader, RecordBatch, Type};

/// The checks of one IPC stream, message by message: what they need of the stream's schema
/// (each column's buffer layout, and each dictionary's) is remembered from its schema message.
#[derive(Debug, Default)]
pub struct IpcCheck {
    /// The layout of each column in a record batch, in field order.
    columns: Vec<Layout>,
    /// The layout of each dictionary's values in its dictionary batches, by dictionary id.
    dictionaries: HashMap<i64, Layout>,
}

/// The buffers one column takes in a batch (all flat columns have one field node).
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// Null: no buffers.
    Null,
    /// A validity bitmap, a buffer of values `width` bytes wide (arrow-data reads offsets and
    /// dictionary indices as whole values; 1 where it slices), then `more` buffers.
    Flat { width: usize, more: usize },
    /// Utf8View, BinaryView: a validity bitmap, the 16-byte views, then as many data buffers
    /// as the batch's next variadic buffer count says.
    View,
}

/// The most a message's compressed buffers may say they decompress to, in all: arrow-ipc
/// reserves what the length prefixes say before decompressing, and a failed allocation aborts
/// the process. Parameters are a row of values sent in a message of at most 4 MiB (tonic's
/// limit), so this leaves room for any honest compression.
const MAX_DECOMPRESSED: u64 = 64 << 20;

impl IpcCheck {
    /// Checks the messages of an IPC stream. Framing errors (a cut message, a bad flatbuffer)
    /// are left to the decoder to report.
    pub fn stream(mut ipc: &[u8]) -> Result<(), String> {
        let mut check = IpcCheck::default();
        let word = |b: &[u8]| b.get(..4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
        while let Some(mut len) = word(ipc) {
            ipc = &ipc[4..];
            if len == u32::MAX {
                let Some(l) = word(ipc) else { return Ok(()) };
                (len, ipc) = (l, &ipc[4..]);
            }
            if len == 0 {
                return Ok(());
            }
            let Some((meta, rest)) = ipc.split_at_checked(len as usize) else { return Ok(()) };
            let Ok(message) = arrow::ipc::root_as_message(meta) else { return Ok(()) };
            let declared = message.bodyLength();
            let body_len = usize::try_from(declared)
                .map_err(|_| format!("IPC message with a body length of {declared}"))?;
            let Some((body, rest)) = rest.split_at_checked(body_len) else { return Ok(()) };
            check.message(message, body)?;
            ipc = rest;
        }
        Ok(())
    }

    /// Checks one Flight data message: its flatbuffer header and the body sent beside it.
    pub fn flight_data(&mut self, meta: &[u8], body: &[u8]) -> Result<(), String> {
        match arrow::ipc::root_as_message(meta) {
            Ok(message) => self.message(message, body),
            Err(_) => Ok(()),
        }
    }

    fn message(&mut self, message: Message<'_>, body: &[u8]) -> Result<(), String> {
        match message.header_type() {
            MessageHeader::Schema => match message.header_as_schema() {
                Some(schema) => self.schema(schema),
                None => Ok(()),
            },
            MessageHeader::RecordBatch => match message.header_as_record_batch() {
                Some(batch) => check_batch(batch, &self.columns, body),
                None => Ok(()),
            },
            MessageHeader::DictionaryBatch => {
                let Some(dictionary) = message.header_as_dictionary_batch() else { return Ok(()) };
                let Some(batch) = dictionary.data() else { return Ok(()) };
                // An unknown id is the decoder's error to report; its buffers are still checked.
                let layout = self.dictionaries.get(&dictionary.id()).copied();
                check_batch(batch, layout.as_slice(), body)
            }
            _ => Ok(()),
        }
    }

    fn schema(&mut self, schema: arrow::ipc::Schema<'_>) -> Result<(), String> {
        let fields = schema.fields().ok_or("IPC schema without a field list")?;
        let big_endian = schema.endianness() == arrow::ipc::Endianness::Big;
        self.columns.clear();
        self.dictionaries.clear();
        for field in fields {
            check_parameter_field(field, big_endian)?;
            let values = match field.type_type() {
                Type::Null => Layout::Null,
                Type::Utf8 | Type::Binary => Layout::Flat { width: 4, more: 1 },
                Type::LargeUtf8 | Type::LargeBinary => Layout::Flat { width: 8, more: 1 },
                Type::Utf8View | Type::BinaryView => Layout::View,
                _ => Layout::Flat { width: 1, more: 0 },
            };
            match field.dictionary() {
                // A dictionary-encoded column holds its indices; its values come in batches
                // of their own. (The index width was checked: 8 to 64 bits.)
                Some(dictionary) => {
                    self.dictionaries.insert(dictionary.id(), values);
                    let bits = dictionary.indexType().map_or(8, |i| i.bitWidth());
                    let width = usize::try_from(bits / 8).unwrap_or(1);
                    self.columns.push(Layout::Flat { width, more: 0 });
                }
                None => self.columns.push(values),
            }
        }
        Ok(())
    }
}

/// Checks a record batch's buffers against its body, and against what arrow asserts of them
/// for each column (`columns` are the layouts the stream's schema gave).
fn check_batch(batch: RecordBatch<'_>, columns: &[Layout], body: &[u8]) -> Result<(), String> {
    let compressed = batch.compression().is_some();
    let buffers: Vec<_> = batch.buffers().iter().flat_map(|v| v.iter()).collect();
    // Each buffer's bytes, as arrow-ipc reads them; all are checked before any is used.
    let mut bytes = Vec::with_capacity(buffers.len());
    let mut decompressed = 0u64;
    for buf in buffers {
        let (offset, length) = (buf.offset(), buf.length());
        let Some(b) = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(length).ok())
            .and_then(|(o, l)| body.get(o..o.checked_add(l)?))
        else {
            return Err(format!("IPC buffer at {offset} of {length} bytes outside a body of {}", body.len()));
        };
        if compressed {
            let Some(prefix) = b.first_chunk::<8>().map(|p| i64::from_le_bytes(*p)) else {
                if b.is_empty() {
                    bytes.push(Some(0));
                    continue;
                }
                return Err(format!(
                    "compressed IPC buffer of {length} bytes, shorter than its length prefix"
                ));
            };
            decompressed = decompressed.saturating_add(u64::try_from(prefix).unwrap_or(0));
            if decompressed > MAX_DECOMPRESSED {
                return Err(format!("compressed IPC buffers said to hold over {MAX_DECOMPRESSED} bytes"));
            }
        }
        bytes.push(decoded_len(b, compressed));
    }

    // Columns missing nodes or buffers are the decoder's to report.
    let mut variadic = batch.variadicBufferCounts().into_iter().flatten();
    let mut next = 0usize;
    for (i, (layout, node)) in columns.iter().zip(batch.nodes().into_iter().flatten()).enumerate() {
        let (rows, nulls) = (node.length(), node.null_count());
        if rows < 0 || nulls < 0 {
            return Err(format!("parameter column {i}: {rows} rows with {nulls} nulls"));
        }
        let (bitmap, values) = (next, next.saturating_add(1));
        let width;
        (width, next) = match *layout {
            Layout::Null => continue,
            Layout::Flat { width, more } => (width, values.saturating_add(1 + more)),
            Layout::View => {
                let Some(count) = variadic.next() else { return Ok(()) };
                let count = usize::try_from(count)
                    .map_err(|_| format!("parameter column {i}: a variadic buffer count of {count}"))?;
                (16, values.saturating_add(1).saturating_add(count))
            }
        };
        // Without nulls arrow ignores the bitmap; with them, arrow-buffer asserts it is long enough.
        if nulls > 0
            && let Some(Some(len)) = bytes.get(bitmap)
            && (rows as u64).div_ceil(8) > *len as u64
        {
            return Err(format!("parameter column {i}: a validity bitmap of {len} bytes for {rows} rows"));
        }
        // arrow-data views offsets, views and indices as whole values, and asserts they are.
        if let Some(Some(len)) = bytes.get(values)
            && len % width != 0
        {
            return Err(format!("parameter column {i}: {len} bytes of values {width} bytes wide"));
        }
    }
    // arrow-ipc asserts each count went to a view column.
    if variadic.next().is_some() {
        return Err("more variadic buffer counts than view columns".into());
    }
    Ok(())
}

/// The length of a buffer once arrow-ipc has read it; `None` when arrow-ipc refuses it (a
/// negative length). A compressed buffer starts with its length uncompressed (i64 LE), which
/// arrow-ipc checks decompression yields; -1 means not compressed, and an empty buffer is
/// taken as it is.
fn decoded_len(buffer: &[u8], compressed: bool) -> Option<usize> {
    let Some(prefix) = buffer.first_chunk::<8>().filter(|_| compressed) else { return Some(buffer.len()) };
    match i64::from_le_bytes(*prefix) {
        -1 => Some(buffer.len() - 8),
        n => usize::try_from(n).ok(),
    }
}

/// Refuses a parameter field arrow-ipc 59's schema conversion would panic on (types, widths,
/// units and child counts it does not support, all values the message declares), or whose
/// layout the checks do not know: only scalar columns are accepted (a dictionary of scalars
/// too), each checked for what the conversion reads from it.
fn check_parameter_field(field: arrow::ipc::Field<'_>, big_endian: bool) -> Result<(), String> {
    use arrow::ipc::{DateUnit, IntervalUnit, Precision, TimeUnit};
    let refuse = |what: &str| Err(format!("parameter {:?}: {what}", field.name().unwrap_or_default()));
    let int_width = |w: i32| matches!(w, 8 | 16 | 32 | 64);
    if let Some(dictionary) = field.dictionary()
        && !dictionary.indexType().is_some_and(|i| int_width(i.bitWidth()))
    {
        return refuse("a dictionary without an 8, 16, 32 or 64-bit index type");
    }
    if field.children().is_some_and(|c| !c.is_empty()) {
        return refuse("a nested type; parameters are scalar values");
    }
    let unit = |u: TimeUnit| {
        matches!(u, TimeUnit::SECOND | TimeUnit::MILLISECOND | TimeUnit::MICROSECOND | TimeUnit::NANOSECOND)
    };
    let supported = match field.type_type() {
        Type::Null
        | Type::Bool
        | Type::Binary
        | Type::BinaryView
        | Type::LargeBinary
        | Type::Utf8
        | Type::Utf8View
        | Type::LargeUtf8 => true,
        Type::Int => field.type_as_int().is_some_and(|i| int_width(i.bitWidth())),
        Type::FixedSizeBinary => field.type_as_fixed_size_binary().is_some_and(|b| b.byteWidth() >= 0),
        Type::FloatingPoint => field.type_as_floating_point().is_some_and(|f| {
            matches!(f.precision(), Precision::HALF | Precision::SINGLE | Precision::DOUBLE)
        }),
        Type::Date => {
            field.type_as_date().is_some_and(|d| matches!(d.unit(), DateUnit::DAY | DateUnit::MILLISECOND))
        }
        Type::Time => field.type_as_time().is_some_and(|t| match t.bitWidth() {
            32 => matches!(t.unit(), TimeUnit::SECOND | TimeUnit::MILLISECOND),
            64 => matches!(t.unit(), TimeUnit::MICROSECOND | TimeUnit::NANOSECOND),
            _ => false,
        }),
        Type::Timestamp => field.type_as_timestamp().is_some_and(|t| unit(t.unit())),
        Type::Duration => field.type_as_duration().is_some_and(|d| unit(d.unit())),
        Type::Interval => field.type_as_interval().is_some_and(|i| {
            matches!(
                i.unit(),
                IntervalUnit::YEAR_MONTH | IntervalUnit::DAY_TIME | IntervalUnit::MONTH_DAY_NANO
            )
        }),
        Type::Decimal => {
            !big_endian
                && field.type_as_decimal().is_some_and(|d| {
                    matches!(d.bitWidth(), 32 | 64 | 128 | 256)
                        && u8::try_from(d.precision()).is_ok()
                        && i8::try_from(d.scale()).is_ok()
                })
        }
        // Lists, structs, maps, unions, run-end encoding, and types this arrow does not know.
        _ => false,
    };
    if supported {
        Ok(())
    } else {
        refuse(&format!("type {:?} is not a supported parameter type", field.type_type()))
    }
}
