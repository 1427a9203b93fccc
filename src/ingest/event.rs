//! The decoded event: one log message as the decoders see it, borrowing from the frame.
//!
//! Decoders fill an [`Event`] without allocating where the wire bytes can be used as they are;
//! the batch builder copies it into Arrow buffers. Fields the message does not carry stay `None`
//! and become NULL (or, for `timestamp`, the receive time).

use std::borrow::Cow;

/// Which decoder produced an event; also the `format` label of the ingest metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Rfc5424,
    Rfc3164,
    Json,
    /// Kept as raw text because no decoder accepted it (see `decode_error`).
    Raw,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Rfc5424, Format::Rfc3164, Format::Json, Format::Raw];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Rfc5424 => "rfc5424",
            Format::Rfc3164 => "rfc3164",
            Format::Json => "json",
            Format::Raw => "raw",
        }
    }
}

/// One decoded message. String fields borrow from the frame unless the decoder had to rewrite
/// them (JSON unescaping, structured data rendered as JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    pub format: Format,
    /// Event time in nanoseconds since the Unix epoch, UTC. `None`: use the receive time.
    pub timestamp: Option<i64>,
    pub severity: Option<u8>,
    pub facility: Option<u8>,
    pub host: Option<Cow<'a, str>>,
    pub app: Option<Cow<'a, str>>,
    pub procid: Option<Cow<'a, str>>,
    pub msgid: Option<Cow<'a, str>>,
    pub message: Cow<'a, str>,
    /// RFC 5424 STRUCTURED-DATA rendered as a JSON object `{"id": {"param": "value"}}`.
    pub structured_data: Option<String>,
    /// JSON input: every key not mapped to a column, as a JSON object.
    pub fields: Option<String>,
    /// Why the frame was kept as raw text (or what part of it could not be decoded).
    pub decode_error: Option<Cow<'static, str>>,
}

impl<'a> Event<'a> {
    /// An event holding only the raw text of a frame that no decoder accepted.
    pub fn raw(message: Cow<'a, str>, reason: impl Into<Cow<'static, str>>) -> Self {
        Event {
            format: Format::Raw,
            timestamp: None,
            severity: None,
            facility: None,
            host: None,
            app: None,
            procid: None,
            msgid: None,
            message,
            structured_data: None,
            fields: None,
            decode_error: Some(reason.into()),
        }
    }
}
