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
    /// An OpenTelemetry log record (OTLP).
    Otlp,
    /// A line kept as its sender gave it, by a protocol that carries plain text with its own
    /// metadata beside it (a Loki entry, a Splunk HEC raw line or string event).
    Text,
}

impl Format {
    pub const ALL: [Format; 6] =
        [Format::Rfc5424, Format::Rfc3164, Format::Json, Format::Raw, Format::Otlp, Format::Text];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Rfc5424 => "rfc5424",
            Format::Rfc3164 => "rfc3164",
            Format::Json => "json",
            Format::Raw => "raw",
            Format::Otlp => "otlp",
            Format::Text => "text",
        }
    }

    /// Position in [`Format::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The wire protocol that brought an event: the `protocol` column and the `protocol` label of
/// the ingest metrics. A listener speaks one (stream, OTLP gRPC, RELP) or several (HTTPS,
/// told apart by path and Content-Type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// A stream listener: octet-counted or LF-framed syslog (RFC 5425/6587), or JSON lines.
    Syslog,
    /// `POST /v1/logs` with newline-delimited JSON (Vector, Fluent Bit).
    Ndjson,
    /// OpenTelemetry logs: gRPC `LogsService/Export`, or `POST /v1/logs` in protobuf or JSON.
    Otlp,
    /// The Elasticsearch `_bulk` API (Filebeat, Winlogbeat, Logstash).
    Elasticsearch,
    /// Loki's push API (Grafana Alloy, Promtail, the Docker driver).
    Loki,
    /// The Splunk HTTP Event Collector.
    SplunkHec,
    /// The Reliable Event Logging Protocol (rsyslog `omrelp`).
    Relp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Syslog => "syslog",
            Protocol::Ndjson => "ndjson",
            Protocol::Otlp => "otlp",
            Protocol::Elasticsearch => "elasticsearch",
            Protocol::Loki => "loki",
            Protocol::SplunkHec => "splunk_hec",
            Protocol::Relp => "relp",
        }
    }

    /// The formats this protocol's events come in: their metric series are exported from the
    /// start (at 0), any other only once it occurs.
    pub fn formats(self) -> &'static [Format] {
        match self {
            Protocol::Syslog | Protocol::Relp => {
                &[Format::Rfc5424, Format::Rfc3164, Format::Json, Format::Raw]
            }
            Protocol::Ndjson | Protocol::Elasticsearch => &[Format::Json],
            Protocol::Otlp => &[Format::Otlp],
            Protocol::Loki => &[Format::Text],
            Protocol::SplunkHec => &[Format::Json, Format::Text],
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
    /// The trace and span the event belongs to (OTLP), as lowercase hex.
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
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
            trace_id: None,
            span_id: None,
        }
    }

    /// An event holding a line as its sender gave it ([`Format::Text`]), nothing decoded.
    pub fn text(message: Cow<'a, str>) -> Self {
        Event { format: Format::Text, decode_error: None, ..Event::raw(message, "") }
    }

    /// The event with every borrowed field copied.
    pub fn into_owned(self) -> Event<'static> {
        let e = self;
        fn own(c: Option<Cow<'_, str>>) -> Option<Cow<'static, str>> {
            c.map(|c| Cow::Owned(c.into_owned()))
        }
        Event {
            format: e.format,
            timestamp: e.timestamp,
            severity: e.severity,
            facility: e.facility,
            host: own(e.host),
            app: own(e.app),
            procid: own(e.procid),
            msgid: own(e.msgid),
            message: Cow::Owned(e.message.into_owned()),
            structured_data: e.structured_data,
            fields: e.fields,
            decode_error: e.decode_error,
            trace_id: e.trace_id,
            span_id: e.span_id,
        }
    }
}
