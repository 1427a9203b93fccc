//! Every metric logwarden exports, defined once, registered on a registry that `app` passes in.
//!
//! Components record per batch or per read, never per event: each holds the handles it needs
//! (already resolved to its label values, see [`ListenerMetrics`]) and adds counts in bulk.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::ingest::event::{Format, Protocol};

/// Failure to create or register a metric: a programming error (duplicate name), reported at start.
pub type MetricsError = prometheus::Error;

const NS: &str = "logwarden";

/// All instruments. Cheap to clone (handles are reference counted).
#[derive(Clone)]
pub struct Metrics {
    pub events_received: IntCounterVec,
    pub bytes_received: IntCounterVec,
    pub decode_errors: IntCounterVec,
    pub frames_rejected: IntCounterVec,
    pub connections_active: IntGaugeVec,
    pub connections_total: IntCounterVec,
    pub connections_refused: IntCounterVec,
    pub connections_timed_out: IntCounterVec,
    pub tls_handshake_failures: IntCounterVec,
    pub tls_handshakes: IntCounterVec,
    pub access_denied: IntCounterVec,
    pub ingest_auth_failures: IntCounterVec,
    pub connections_revoked: IntCounterVec,
    pub audit_dropped: IntCounter,
    pub damaged_lines: IntCounterVec,
    pub templates: IntGauge,
    pub templates_created: IntCounter,
    pub http_requests: IntCounterVec,
    pub batch_flush_seconds: Histogram,
    pub wal_fsync_seconds: Histogram,
    pub wal_bytes: IntGauge,
    pub events_durable: IntCounter,
    pub pending_bytes: IntGauge,
    pub memtable_rows: IntGauge,
    pub segment_write_seconds: Histogram,
    pub storage_bytes: IntGauge,
    pub storage_segments: IntGauge,
    pub storage_rows: IntGauge,
    pub retention_deleted_segments: IntCounter,
    pub wal_replayed_events: IntCounter,
    pub wal_torn_tails: IntCounter,
    pub storage_errors: IntCounterVec,
    pub storage_writable: IntGauge,
    pub crypto_fips: IntGauge,
    pub wal_retry_events: IntGauge,
    pub flight_queries: IntCounterVec,
    pub flight_query_seconds: Histogram,
    pub flight_rows_sent: IntCounter,
    pub flight_active_queries: IntGauge,
    pub flight_auth_failures: IntCounterVec,
    pub flight_password_checks: IntCounter,
    pub rules: crate::stream::RuleMetrics,
    pub baselines: crate::detect::builtin::BaselineMetrics,
    pub notify: crate::alert::notify::NotifyMetrics,
    pub alerts_firing: IntGaugeVec,
    /// The file system holding `data_dir`: space left to the daemon, and its size.
    pub data_dir_free_bytes: IntGauge,
    pub data_dir_size_bytes: IntGauge,
    pub alert_latency_seconds: Histogram,
    /// Per HTTP or OTLP gRPC listener: request memory held now, and its budget.
    request_memory_bytes: IntGaugeVec,
    request_memory_max_bytes: IntGaugeVec,
}

/// A listener's request memory gauges (`ingest::budget`), with labels bound.
pub struct RequestMemoryGauges {
    pub held: IntGauge,
    pub max: IntGauge,
}

fn name(n: &str) -> String {
    format!("{NS}_{n}")
}

fn counter_vec(reg: &Registry, n: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, MetricsError> {
    let c = IntCounterVec::new(Opts::new(name(n), help), labels)?;
    reg.register(Box::new(c.clone()))?;
    Ok(c)
}

fn counter(reg: &Registry, n: &str, help: &str) -> Result<IntCounter, MetricsError> {
    let c = IntCounter::with_opts(Opts::new(name(n), help))?;
    reg.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge_vec(reg: &Registry, n: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec, MetricsError> {
    let g = IntGaugeVec::new(Opts::new(name(n), help), labels)?;
    reg.register(Box::new(g.clone()))?;
    Ok(g)
}

fn gauge(reg: &Registry, n: &str, help: &str) -> Result<IntGauge, MetricsError> {
    let g = IntGauge::with_opts(Opts::new(name(n), help))?;
    reg.register(Box::new(g.clone()))?;
    Ok(g)
}

fn histogram(reg: &Registry, n: &str, help: &str, buckets: Vec<f64>) -> Result<Histogram, MetricsError> {
    let h = Histogram::with_opts(HistogramOpts::new(name(n), help).buckets(buckets))?;
    reg.register(Box::new(h.clone()))?;
    Ok(h)
}

/// 100 µs to ~10 s, for fsyncs, batch flushes and segment writes.
fn io_buckets() -> Vec<f64> {
    vec![
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
}

impl Metrics {
    pub fn new(reg: &Registry) -> Result<Self, MetricsError> {
        let build = IntGaugeVec::new(
            Opts::new(name("build_info"), "Build information; the value is always 1."),
            &["version", "rustc", "target"],
        )?;
        reg.register(Box::new(build.clone()))?;
        build
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                option_env!("LOGWARDEN_RUSTC").unwrap_or("unknown"),
                std::env::consts::ARCH,
            ])
            .set(1);
        let connections_active = IntGaugeVec::new(
            Opts::new(name("connections_active"), "Open connections per listener."),
            &["listener"],
        )?;
        reg.register(Box::new(connections_active.clone()))?;
        Ok(Metrics {
            events_received: counter_vec(
                reg,
                "events_received_total",
                "Events decoded and accepted, by listener, protocol and message format.",
                &["listener", "protocol", "format"],
            )?,
            bytes_received: counter_vec(
                reg,
                "bytes_received_total",
                "Payload bytes read from peers (after TLS, before decompressing and decoding), by listener and protocol.",
                &["listener", "protocol"],
            )?,
            decode_errors: counter_vec(
                reg,
                "decode_errors_total",
                "Messages kept as raw text because they did not decode, decoded with a defect, or refused as malformed, by listener, protocol and format.",
                &["listener", "protocol", "format"],
            )?,
            frames_rejected: counter_vec(
                reg,
                "frames_rejected_total",
                "Frames refused by framing (oversize, truncated, malformed).",
                &["listener", "reason"],
            )?,
            connections_active,
            connections_total: counter_vec(reg, "connections_total", "Connections accepted.", &["listener"])?,
            connections_timed_out: counter_vec(
                reg,
                "connections_timed_out_total",
                "Connections closed because they did nothing in time: no request within header_read_timeout (no_request), none in progress for idle_timeout (idle), or one in progress with no bytes moving for idle_timeout (stalled), or a request body slower than 240 bytes/s (slow_body). RELP: no open within handshake_timeout (no_request), no complete frame for idle_timeout (idle), answers not taken for idle_timeout (stalled).",
                &["listener", "reason"],
            )?,
            connections_refused: counter_vec(
                reg,
                "connections_refused_total",
                "Connections closed at once because the listener was at max_connections.",
                &["listener"],
            )?,
            tls_handshake_failures: counter_vec(
                reg,
                "tls_handshake_failures_total",
                "TLS handshakes that failed or timed out, by reason (timeout, no_certificate, no_principal, ambiguous_identity, unknown_ca, expired, not_yet_valid, revoked, bad_signature, revocation_unknown, crl_expired, wrong_purpose, bad_certificate, peer_alert, signing, incompatible, protocol, io).",
                &["listener", "reason"],
            )?,
            tls_handshakes: counter_vec(
                reg,
                "tls_handshakes_total",
                "TLS handshakes by result: full, resumed (no signature needed) or failed.",
                &["listener", "result"],
            )?,
            access_denied: counter_vec(
                reg,
                "access_denied_total",
                "Connections, HTTP ingest requests or queries refused by the [access] rules.",
                &["listener"],
            )?,
            ingest_auth_failures: counter_vec(
                reg,
                "ingest_auth_failures_total",
                "HTTP ingest requests refused for their credentials (missing, malformed, bad_token, wrong_password, rate_limited, busy); those refused by [access] send rules count in access_denied_total.",
                &["listener", "reason"],
            )?,
            connections_revoked: counter_vec(
                reg,
                "connections_revoked_total",
                "Open connections closed because their client certificate stopped verifying at a trust reload (revoked, expired).",
                &["listener"],
            )?,
            audit_dropped: counter(
                reg,
                "audit_dropped_total",
                "Audit entries not written to the audit files because the writer fell behind (they are still logged).",
            )?,
            damaged_lines: {
                let c = counter_vec(
                    reg,
                    "damaged_lines_total",
                    "Lines of the audit and rule_results day files skipped when read because they are not complete JSON (a crash or a full disk cut them short); each counted once.",
                    &["table"],
                )?;
                for table in ["audit", "rule_results"] {
                    c.with_label_values(&[table]);
                }
                c
            },
            templates: gauge(
                reg,
                "templates",
                "Log templates messages are given (rows of the templates table not merged into another).",
            )?,
            templates_created: counter(
                reg,
                "templates_created_total",
                "Log templates created since start: a message matching no known template.",
            )?,
            http_requests: counter_vec(
                reg,
                "http_requests_total",
                "HTTP ingest requests by protocol (none: no route matched) and status code.",
                &["listener", "protocol", "code"],
            )?,
            batch_flush_seconds: histogram(
                reg,
                "batch_flush_seconds",
                "Time to make one group of batches durable (WAL write and fsync).",
                io_buckets(),
            )?,
            wal_fsync_seconds: histogram(
                reg,
                "wal_fsync_seconds",
                "Time spent in one WAL fsync.",
                io_buckets(),
            )?,
            wal_bytes: gauge(reg, "wal_bytes", "Bytes in WAL files not yet written out as Parquet.")?,
            events_durable: counter(reg, "events_durable_total", "Events written to the WAL and fsynced.")?,
            pending_bytes: gauge(
                reg,
                "pending_bytes",
                "Decoded data waiting to become durable (bounded by batch.max_pending_bytes).",
            )?,
            memtable_rows: gauge(
                reg,
                "memtable_rows",
                "Durable rows held in memory until the next Parquet segment.",
            )?,
            segment_write_seconds: histogram(
                reg,
                "segment_write_seconds",
                "Time to write one Parquet segment and commit the manifest.",
                io_buckets(),
            )?,
            storage_bytes: gauge(reg, "storage_bytes", "Bytes of Parquet segments on disk.")?,
            storage_segments: gauge(reg, "storage_segments", "Parquet segments on disk.")?,
            storage_rows: gauge(reg, "storage_rows", "Rows in Parquet segments on disk.")?,
            retention_deleted_segments: counter(
                reg,
                "retention_deleted_segments_total",
                "Segments deleted by retention.",
            )?,
            wal_replayed_events: counter(
                reg,
                "wal_replayed_events_total",
                "Events recovered from the WAL at start.",
            )?,
            wal_torn_tails: counter(
                reg,
                "wal_torn_tails_total",
                "WAL files whose incomplete tail was truncated at start.",
            )?,
            storage_errors: counter_vec(
                reg,
                "storage_errors_total",
                "Storage failures by operation: wal (a group not written, cut back), wal_rollback (a failed write could not be cut back: generation closed), wal_create (no new WAL generation), segment and manifest (a Parquet flush, retried), batch.",
                &["op"],
            )?,
            crypto_fips: gauge(
                reg,
                "crypto_fips",
                "1 when the build's crypto module runs in FIPS mode (the fips build, AWS-LC's FIPS module), 0 otherwise.",
            )?,
            storage_writable: gauge(
                reg,
                "storage_writable",
                "1 while WAL writes succeed; 0 from a failed WAL write (disk full, I/O error) until one succeeds.",
            )?,
            wal_retry_events: gauge(
                reg,
                "wal_retry_events",
                "Events from stream listeners kept in memory after a failed WAL write, written when the disk has room.",
            )?,
            flight_queries: counter_vec(
                reg,
                "flight_queries_total",
                "Flight SQL queries by outcome (ok, invalid, denied, unauthenticated, resource_exhausted, timeout, unavailable, cancelled, error).",
                &["status"],
            )?,
            flight_query_seconds: histogram(
                reg,
                "flight_query_seconds",
                "Flight SQL query time, from planning to the last batch sent.",
                io_buckets(),
            )?,
            flight_rows_sent: counter(reg, "flight_rows_sent_total", "Rows sent to Flight SQL clients.")?,
            flight_active_queries: gauge(reg, "flight_active_queries", "Flight SQL queries running now.")?,
            flight_auth_failures: counter_vec(
                reg,
                "flight_auth_failures_total",
                "Flight SQL sign-ins refused: wrong_password (or a user that does not exist: one label, so the counter does not tell which names exist), bad_token, malformed, rate_limited (the client address is over [flight.auth_limits] max_failures), busy (too many password checks waiting).",
                &["reason"],
            )?,
            flight_password_checks: counter(
                reg,
                "flight_password_checks_total",
                "Password hash checks run for Flight SQL basic credentials (a user that does not exist is checked too).",
            )?,
            rules: crate::stream::RuleMetrics {
                late: counter_vec(
                    reg,
                    "rule_late_events_total",
                    "Events not evaluated by a rule because they arrived after their window had closed (beyond detect.allowed_lateness) or were stamped more than 5 minutes ahead of the clock; stored all the same.",
                    &["rule"],
                )?,
                windows: counter_vec(
                    reg,
                    "rule_windows_total",
                    "Rule windows closed and evaluated.",
                    &["rule"],
                )?,
                errors: counter_vec(reg, "rule_errors_total", "Rule evaluations that failed.", &["rule"])?,
                evaluation: histogram(
                    reg,
                    "rule_evaluation_seconds",
                    "Time to evaluate a closed window: the final step, alert conditions and alert state.",
                    io_buckets(),
                )?,
                dropped: counter(
                    reg,
                    "rule_dropped_events_total",
                    "Durable events that rules did not see because rule evaluation fell behind.",
                )?,
            },
            baselines: crate::detect::builtin::BaselineMetrics {
                evicted: counter_vec(
                    reg,
                    "detect_baselines_evicted_total",
                    "Baselines a built-in detector forgot because it had more keys than detect.max_baseline_keys (the least recently seen go first).",
                    &["detector"],
                )?,
                keys: gauge_vec(
                    reg,
                    "detect_baseline_keys",
                    "Keys a built-in detector keeps a baseline for (at most detect.max_baseline_keys).",
                    &["detector"],
                )?,
            },
            notify: crate::alert::notify::NotifyMetrics {
                sent: counter_vec(
                    reg,
                    "alert_notifications_sent_total",
                    "Alert notifications a receiver accepted.",
                    &["receiver"],
                )?,
                failed: counter_vec(
                    reg,
                    "alert_notifications_failed_total",
                    "Alert notification attempts that failed (retried unless the receiver refused them).",
                    &["receiver"],
                )?,
                dropped: counter_vec(
                    reg,
                    "alert_notifications_dropped_total",
                    "Alert notifications dropped because the receiver's outbox was full.",
                    &["receiver"],
                )?,
                queued: gauge_vec(
                    reg,
                    "alert_notifications_queued",
                    "Alert notifications waiting in a receiver's outbox.",
                    &["receiver"],
                )?,
            },
            alerts_firing: gauge_vec(reg, "alerts_firing", "Alerts firing now.", &["rule", "severity"])?,
            data_dir_free_bytes: gauge(
                reg,
                "data_dir_free_bytes",
                "Space available to the daemon on the file system holding data_dir.",
            )?,
            data_dir_size_bytes: gauge(
                reg,
                "data_dir_size_bytes",
                "Size of the file system holding data_dir.",
            )?,
            alert_latency_seconds: histogram(
                reg,
                "alert_latency_seconds",
                "From a window's close (the watermark passing its end) to its alert notifications being queued.",
                io_buckets(),
            )?,
            request_memory_bytes: gauge_vec(
                reg,
                "request_memory_bytes",
                "Memory the requests in progress on an HTTP or OTLP gRPC listener hold: bodies being read and the events decoded from them, until durable.",
                &["listener"],
            )?,
            request_memory_max_bytes: gauge_vec(
                reg,
                "request_memory_max_bytes",
                "The listener's budget for request_memory_bytes; past it a request is answered 503 (UNAVAILABLE) and retried.",
                &["listener"],
            )?,
        })
    }

    /// The request memory gauges of one listener.
    pub fn request_memory(&self, listener: &str) -> RequestMemoryGauges {
        RequestMemoryGauges {
            held: self.request_memory_bytes.with_label_values(&[listener]),
            max: self.request_memory_max_bytes.with_label_values(&[listener]),
        }
    }

    /// Handles for one protocol on one listener, resolved once so the hot path does no label
    /// hashing. The formats the protocol brings are exported at 0 from the start.
    pub fn listener(&self, listener: &str, protocol: Protocol) -> ListenerMetrics {
        let p = protocol.as_str();
        let per_format = |v: &IntCounterVec| {
            Format::ALL.map(|f| {
                let cell = std::sync::OnceLock::new();
                if protocol.formats().contains(&f) {
                    let _ = cell.set(v.with_label_values(&[listener, p, f.as_str()]));
                }
                cell
            })
        };
        let rejected = |reason: &str| self.frames_rejected.with_label_values(&[listener, reason]);
        ListenerMetrics {
            events: per_format(&self.events_received),
            decode_errors: per_format(&self.decode_errors),
            events_vec: self.events_received.clone(),
            decode_errors_vec: self.decode_errors.clone(),
            bytes: self.bytes_received.with_label_values(&[listener, p]),
            rejected_oversize: rejected("oversize"),
            rejected_truncated: rejected("truncated"),
            rejected_malformed: rejected("malformed"),
            conn: self.connections(listener),
            listener: listener.into(),
            protocol,
        }
    }

    /// Connection-level handles only, for listeners that do not ingest (Flight SQL), so that
    /// no always-zero event series are exported for them.
    pub fn connections(&self, listener: &str) -> ConnectionMetrics {
        // The reasons every TLS listener can see are exported at 0 from the start, so rate()
        // and alerts work before the first failure.
        for reason in ["timeout", "protocol", "io"] {
            self.tls_handshake_failures.with_label_values(&[listener, reason]);
        }
        ConnectionMetrics {
            active: self.connections_active.with_label_values(&[listener]),
            total: self.connections_total.with_label_values(&[listener]),
            refused: self.connections_refused.with_label_values(&[listener]),
            handshakes_full: self.tls_handshakes.with_label_values(&[listener, "full"]),
            handshakes_resumed: self.tls_handshakes.with_label_values(&[listener, "resumed"]),
            handshakes_failed: self.tls_handshakes.with_label_values(&[listener, "failed"]),
            handshake_failures: self.tls_handshake_failures.clone(),
            denied: self.access_denied.with_label_values(&[listener]),
            revoked: self.connections_revoked.with_label_values(&[listener]),
            listener: listener.to_owned(),
        }
    }
}

/// A listener's connection instruments with labels bound (used by the accept loop).
#[derive(Clone)]
pub struct ConnectionMetrics {
    pub active: IntGauge,
    pub total: IntCounter,
    pub refused: IntCounter,
    pub handshakes_full: IntCounter,
    pub handshakes_resumed: IntCounter,
    pub handshakes_failed: IntCounter,
    handshake_failures: IntCounterVec,
    pub denied: IntCounter,
    pub revoked: IntCounter,
    listener: String,
}

impl ConnectionMetrics {
    /// Count a failed handshake under `reason` (rare enough to resolve the label here).
    pub fn handshake_failed(&self, reason: &str) {
        self.handshakes_failed.inc();
        self.handshake_failures.with_label_values(&[&self.listener, reason]).inc();
    }
}

/// The instruments of one protocol on one listener, with labels bound.
#[derive(Clone)]
pub struct ListenerMetrics {
    /// Per format (by [`Format::index`]): bound at creation for the protocol's own formats,
    /// at first use for any other.
    events: [std::sync::OnceLock<IntCounter>; Format::ALL.len()],
    decode_errors: [std::sync::OnceLock<IntCounter>; Format::ALL.len()],
    events_vec: IntCounterVec,
    decode_errors_vec: IntCounterVec,
    pub bytes: IntCounter,
    pub rejected_oversize: IntCounter,
    pub rejected_truncated: IntCounter,
    pub rejected_malformed: IntCounter,
    pub conn: ConnectionMetrics,
    listener: std::sync::Arc<str>,
    protocol: Protocol,
}

/// Per-format tallies a connection accumulates over one read (or a request) and records at once.
#[derive(Debug, Default, Clone, Copy)]
pub struct FormatCounts {
    pub events: [u64; Format::ALL.len()],
    pub decode_errors: [u64; Format::ALL.len()],
}

impl FormatCounts {
    pub fn add(&mut self, f: Format, decode_error: bool) {
        self.events[f.index()] += 1;
        if decode_error {
            self.decode_errors[f.index()] += 1;
        }
    }

    /// One message of format `f` refused as malformed (counted as a decode error only).
    pub fn refused(f: Format, n: u64) -> Self {
        let mut c = FormatCounts::default();
        c.decode_errors[f.index()] = n;
        c
    }
}

impl ListenerMetrics {
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    pub fn record(&self, counts: &FormatCounts) {
        for f in Format::ALL {
            let i = f.index();
            if counts.events[i] > 0 {
                self.bound(&self.events[i], &self.events_vec, f).inc_by(counts.events[i]);
            }
            if counts.decode_errors[i] > 0 {
                self.bound(&self.decode_errors[i], &self.decode_errors_vec, f)
                    .inc_by(counts.decode_errors[i]);
            }
        }
    }

    fn bound<'a>(
        &self,
        cell: &'a std::sync::OnceLock<IntCounter>,
        vec: &IntCounterVec,
        f: Format,
    ) -> &'a IntCounter {
        cell.get_or_init(|| vec.with_label_values(&[&self.listener, self.protocol.as_str(), f.as_str()]))
    }
}

/// The registry in Prometheus text format.
pub fn render(reg: &Registry) -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    let enc = prometheus::TextEncoder::new();
    if let Err(e) = enc.encode(&reg.gather(), &mut buf) {
        tracing::error!(error = %e, "failed to encode metrics");
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// `logwarden_pkcs11_*`: registered only when the server key is on a PKCS#11 token.
#[derive(Clone)]
pub struct Pkcs11Metrics {
    pub sign_seconds: Histogram,
    pub errors: IntCounterVec,
    pub available: IntGauge,
}

impl Pkcs11Metrics {
    pub fn new(reg: &Registry) -> Result<Self, MetricsError> {
        Ok(Pkcs11Metrics {
            sign_seconds: histogram(
                reg,
                "pkcs11_sign_seconds",
                "Time to sign a TLS handshake on the token.",
                io_buckets(),
            )?,
            errors: counter_vec(
                reg,
                "pkcs11_errors_total",
                "Failed PKCS#11 operations, by operation.",
                &["op"],
            )?,
            available: gauge(
                reg,
                "pkcs11_token_available",
                "1 while the token holding the TLS key answers, 0 after a failed call until it is found again.",
            )?,
        })
    }
}

/// `logwarden_bucket_*`, `logwarden_upload_backlog_*` and `logwarden_segment_cache_*`:
/// registered only when segments go to a bucket.
#[derive(Clone)]
pub struct BucketMetrics {
    pub up: IntGauge,
    pub uploaded_segments: IntCounter,
    pub uploaded_bytes: IntCounter,
    pub upload_seconds: Histogram,
    pub errors: IntCounterVec,
    pub deleted_objects: IntCounter,
    pub deletes_refused: IntCounter,
    pub backlog_bytes: IntGauge,
    pub backlog_max_bytes: IntGauge,
    pub backlog_segments: IntGauge,
    pub backlog_oldest_seconds: IntGauge,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub cache_bytes: IntGauge,
    pub cache_max_bytes: IntGauge,
    pub cache_filled_bytes: IntCounter,
    pub cache_evicted_bytes: IntCounter,
    pub peers: IntGauge,
    pub peer_segments: IntGauge,
    pub peers_refreshed: IntGauge,
}

impl BucketMetrics {
    pub fn new(reg: &Registry) -> Result<Self, MetricsError> {
        let errors = counter_vec(
            reg,
            "bucket_errors_total",
            "Failed bucket operations, by operation (upload, manifest, delete, local_manifest, cache_fill, lease, peers, publish).",
            &["op"],
        )?;
        for op in
            ["upload", "manifest", "delete", "local_manifest", "cache_fill", "lease", "peers", "publish"]
        {
            errors.with_label_values(&[op]);
        }
        let up = gauge(
            reg,
            "bucket_up",
            "1 while the uploader's last bucket operation succeeded, 0 after a failure.",
        )?;
        up.set(1);
        Ok(BucketMetrics {
            up,
            uploaded_segments: counter(
                reg,
                "bucket_uploaded_segments_total",
                "Segments uploaded to the bucket.",
            )?,
            uploaded_bytes: counter(
                reg,
                "bucket_uploaded_bytes_total",
                "Bytes of segments uploaded to the bucket.",
            )?,
            upload_seconds: histogram(
                reg,
                "bucket_upload_seconds",
                "Time to upload one segment, with the bucket's manifest naming it.",
                io_buckets(),
            )?,
            errors,
            deleted_objects: counter(
                reg,
                "bucket_deleted_objects_total",
                "Segments retention deleted from the bucket.",
            )?,
            deletes_refused: counter(
                reg,
                "bucket_deletes_refused_total",
                "Deletes of expired segments the bucket refused (Object Lock, legal hold, policy); each is tried again an hour later.",
            )?,
            backlog_bytes: gauge(
                reg,
                "upload_backlog_bytes",
                "Local disk held by segments waiting for upload and by the WAL kept for them.",
            )?,
            backlog_max_bytes: gauge(
                reg,
                "upload_backlog_max_bytes",
                "storage.upload_backlog_max_bytes: at this backlog, ingest is refused until uploads catch up.",
            )?,
            backlog_segments: gauge(reg, "upload_backlog_segments", "Segments waiting for upload.")?,
            backlog_oldest_seconds: gauge(
                reg,
                "upload_backlog_oldest_seconds",
                "Age of the newest event in the oldest segment waiting for upload (0 with none waiting).",
            )?,
            cache_hits: counter(
                reg,
                "segment_cache_hits_total",
                "Segments a query read from their local copy.",
            )?,
            cache_misses: counter(
                reg,
                "segment_cache_misses_total",
                "Segments a query read from the bucket, having no local copy.",
            )?,
            cache_bytes: gauge(
                reg,
                "segment_cache_bytes",
                "Local copies of uploaded segments (bounded by storage.cache_max_bytes).",
            )?,
            cache_max_bytes: gauge(reg, "segment_cache_max_bytes", "storage.cache_max_bytes.")?,
            cache_filled_bytes: counter(
                reg,
                "segment_cache_filled_bytes_total",
                "Bytes downloaded from the bucket into the local cache.",
            )?,
            cache_evicted_bytes: counter(
                reg,
                "segment_cache_evicted_bytes_total",
                "Bytes of local copies evicted, least recently used first.",
            )?,
            peers: gauge(
                reg,
                "cluster_peers",
                "Other nodes (node ids besides this node's own) whose segments this node's queries read, as of the last reading of the bucket.",
            )?,
            peer_segments: gauge(
                reg,
                "cluster_peer_segments",
                "Segments of other nodes this node's queries read.",
            )?,
            peers_refreshed: gauge(
                reg,
                "cluster_peers_refreshed_timestamp_seconds",
                "When the other nodes' manifests were last all read from the bucket (Unix time; 0 before the first).",
            )?,
        })
    }
}

/// `logwarden_seal_*`: the hash chain over stored objects and its signed checkpoints.
#[derive(Clone)]
pub struct SealMetrics {
    pub entries: IntCounter,
    pub errors: IntCounterVec,
    pub checkpoints: IntCounter,
    pub checkpoint_entries: IntGauge,
    pub checkpoint_time: IntGauge,
    pub sign_seconds: Histogram,
    pub exported: IntCounterVec,
    pub export_failures: IntCounterVec,
}

impl SealMetrics {
    pub fn new(reg: &Registry) -> Result<Self, MetricsError> {
        let errors = counter_vec(
            reg,
            "seal_errors_total",
            "Failures of the seal, by operation (chain_write, chain_fsync, chain_dropped, sign, checkpoint_write).",
            &["op"],
        )?;
        for op in ["chain_write", "chain_fsync", "chain_dropped", "sign", "checkpoint_write"] {
            errors.with_label_values(&[op]);
        }
        Ok(SealMetrics {
            entries: counter(
                reg,
                "seal_chain_entries_total",
                "Entries appended to the seal chain by this run.",
            )?,
            errors,
            checkpoints: counter(reg, "seal_checkpoints_total", "Signed checkpoints written by this run.")?,
            checkpoint_entries: gauge(
                reg,
                "seal_checkpoint_entries",
                "Entries of the chain the newest signed checkpoint vouches for.",
            )?,
            checkpoint_time: gauge(
                reg,
                "seal_last_checkpoint_timestamp_seconds",
                "When the newest checkpoint of this run was signed (Unix time).",
            )?,
            sign_seconds: histogram(
                reg,
                "seal_checkpoint_seconds",
                "Time to sign and store one checkpoint (a PKCS#11 signature when the key is on a token).",
                io_buckets(),
            )?,
            exported: counter_vec(
                reg,
                "seal_exported_total",
                "Checkpoints sent off the box, by target (webhook, syslog).",
                &["target"],
            )?,
            export_failures: counter_vec(
                reg,
                "seal_export_failures_total",
                "Failed attempts to send a checkpoint off the box, by target.",
                &["target"],
            )?,
        })
    }
}
