//! Builds the daemon from its config and owns its lifecycle: open storage (replaying the WAL),
//! bind every listener, report ready, and on SIGTERM/SIGINT shut down in order: stop accepting,
//! drain connections, make everything received durable, then close the admin endpoint.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::Audit;
use crate::config::{Config, ListenerCommon};
use crate::detect::templates::{Shared, TemplateMetrics};
use crate::ingest::connection::{self, StreamSettings};
use crate::ingest::http::HttpIngest;
use crate::ingest::listener::{Gate, Listeners, accept_loop, bind};
use crate::ingest::otlp::grpc::{OtlpCalls, OtlpGrpc};
use crate::ingest::relp::{self, RelpSettings};
use crate::metrics::{Metrics, Pkcs11Metrics, SealMetrics};
use crate::query::{LiveTables, QueryEngine, QueryLimits};
use crate::seal::{Chain, Sealer, SigningKey};
use crate::serve::admin::{self, Readiness};
use crate::serve::flight::{Authenticator, FlightServer, FlightSql};
use crate::serve::grpc::GrpcListener;
use crate::serve::timeouts::Deadlines;
use crate::store::{Pipeline, PipelineOptions, Store};
use crate::tls::{ListenerTls, ServerTls, Tickets};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::LogsServiceServer;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("failed to register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Seal(#[from] crate::seal::chain::ChainError),
    #[error("[seal]: {0}")]
    SealKey(crate::tls::TlsError),
    #[error(transparent)]
    SealExport(#[from] crate::seal::export::ExportError),
    #[error("failed to open storage in {dir}: {source}")]
    Store { dir: String, source: crate::store::StoreError },
    #[error(transparent)]
    Bucket(#[from] crate::store::BucketError),
    #[error(
        "the data directory {dir} holds {events} events of this node not yet in the bucket, but cluster.role = \"query\" \
         uploads nothing: run it once more with role = \"both\" or \"ingest\" until logwarden_upload_backlog_segments \
         is 0, or give the query node a data directory of its own"
    )]
    QueryNodeHoldsData { dir: String, events: String },
    #[error("failed to bind {what} on {addr}: {source}")]
    Bind { what: String, addr: SocketAddr, source: std::io::Error },
    #[error("listener {name}: {reason}")]
    Listener { name: String, reason: String },
    #[error("failed to write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("failed to use the socket systemd passed for {what}: {source}")]
    Passed { what: String, source: std::io::Error },
    #[error(transparent)]
    Sockets(#[from] crate::systemd::SocketError),
    #[error("failed to install the signal handler: {0}")]
    Signal(std::io::Error),
    #[error(transparent)]
    FlightAuth(#[from] crate::serve::flight::auth::AuthError),
    #[error("failed to set up SQL: {0}")]
    Query(#[from] crate::query::QueryError),
    #[error("failed to start the audit trail in {dir}: {source}")]
    Audit { dir: String, source: std::io::Error },
    #[error("failed to load the log templates: {0}")]
    Templates(#[from] crate::detect::templates::TemplatesError),
    #[error("failed to start the rules: {0}")]
    Rules(String),
    #[error("failed to load the alert state: {0}")]
    Alerts(#[from] crate::alert::AlertError),
    #[error("failed to set up alert delivery: {0}")]
    Notify(#[from] crate::alert::notify::NotifyError),
}

mod bucket;
mod detection;
mod service;

use bucket::publish_shared;
pub use bucket::segments_at;

/// Calls one OTLP connection may have in progress at once (an OpenTelemetry Collector sends
/// with 10 consumers by default).
const OTLP_STREAMS_PER_CONNECTION: u32 = 32;
/// HTTP/2 PING on OTLP connections, and how long an answer may take.
const OTLP_KEEPALIVE: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(20));

/// Run the daemon until SIGTERM or SIGINT. `config_file` (or the embedded defaults, without
/// one) is reread on SIGHUP; `sockets` are
/// the listening sockets systemd passed (socket activation).
pub async fn run(
    config: Config,
    config_file: Option<std::path::PathBuf>,
    sockets: crate::systemd::PassedSockets,
) -> Result<(), AppError> {
    let notifier = crate::systemd::Notifier::from_env();
    let registry = Registry::new();
    let metrics = Metrics::new(&registry)?;
    let fips = crate::tls::crypto_provider().fips();
    metrics.crypto_fips.set(i64::from(fips));
    tracing::info!(module = crate::crypto::MODULE, fips, required = config.tls.fips, "cryptography");
    if config.tls.fips {
        // `validate` refuses this in a build without the FIPS module; every TLS configuration
        // built from here on is checked.
        crate::tls::require_fips();
        crate::tls::check_fips("this build", fips)?;
    }
    let cancel = CancellationToken::new();
    let connections = TaskTracker::new();

    let any_tls = config.ingest_listeners().any(|(_, l)| l.tls)
        || (config.flight.enabled && config.flight.tls)
        || config.admin.tls;
    let tls = if any_tls {
        let pkcs11_metrics = config.tls.key.is_some().then(|| Pkcs11Metrics::new(&registry)).transpose()?;
        let tls = ServerTls::load(&config.tls, &config.dev_tls_dir(), pkcs11_metrics)?;
        if let Some(dev) = &tls.dev {
            tracing::warn!(
                ca = %dev.ca_file.display(), created = dev.created,
                "USING A SELF-SIGNED DEVELOPMENT CERTIFICATE: NOT FOR PRODUCTION. Configure [tls] cert_file and key_file; clients may trust the development CA file meanwhile"
            );
        }
        Some(tls)
    } else {
        None
    };

    let started = Instant::now();
    let store_err = |source| AppError::Store { dir: config.data_dir.display().to_string(), source };
    // Replaying a long WAL may take longer than the unit's start timeout allows: ask for more.
    let extender = crate::systemd::StartupExtender::start(&notifier);
    let segments_at = segments_at(&config, Some(&registry)).await?;
    let seal_metrics = config.seal.enabled.then(|| SealMetrics::new(&registry)).transpose()?;
    let chain = match &seal_metrics {
        Some(m) => Some(Arc::new(Chain::open(&config.data_dir, Some(m.clone()))?)),
        None => None,
    };
    let (store, recovery) = Store::open(&config.data_dir, segments_at, Some(metrics.clone()), chain.clone())
        .map_err(store_err)?;
    drop(extender);
    tracing::info!(
        data_dir = %config.data_dir.display(), segments = recovery.segments, wal_files = recovery.wal_files,
        replayed_events = recovery.replayed_rows, torn_bytes = recovery.torn_bytes, took = ?started.elapsed(),
        "storage opened"
    );
    let role = config.cluster.role;
    if !role.ingests() {
        let pending = store.pending_events();
        if pending > 0 {
            return Err(AppError::QueryNodeHoldsData {
                dir: config.data_dir.display().to_string(),
                events: pending.to_string(),
            });
        }
    }
    // Every other node's stored segments are known before the first query (and, on a query
    // node, this first reading is what proves the bucket is reachable).
    let peers_cancel = CancellationToken::new();
    let peers_task = match role.queries() && store.node_id().is_some() {
        true => {
            match store.refresh_peers().await {
                Ok(problems) if problems.is_empty() => {}
                Ok(problems) => {
                    tracing::warn!(problems = %problems.join("; "), "some nodes' objects in the bucket are unusable; queries leave them out until they are");
                }
                // A query node has nothing to answer from without the bucket.
                Err(e) if !role.ingests() => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(error = %e, "failed to list the other nodes in the bucket; queries here cover them from the next reading");
                }
            }
            store.watch_peers(config.cluster.refresh_interval, peers_cancel.clone())
        }
        false => None,
    };
    let opts = PipelineOptions {
        batch_rows: config.batch.rows,
        batch_linger: config.batch.linger,
        max_pending_bytes: config.batch.max_pending_bytes.as_u64() as usize,
        flush_interval: config.storage.flush_interval,
        flush_bytes: config.storage.flush_bytes.as_u64() as usize,
        row_group_rows: config.storage.row_group_rows,
        zstd_level: config.storage.zstd_level,
        retention_max_age: config.storage.retention_max_age,
        retention_max_bytes: config.storage.retention_max_bytes.map(|b| b.as_u64()),
    };

    let audit_dir = config.audit_dir();
    let (audit, audit_writer) = Audit::start(
        &audit_dir,
        config.audit.retention_max_age,
        metrics.audit_dropped.clone(),
        chain.clone(),
    )
    .map_err(|source| AppError::Audit { dir: audit_dir.display().to_string(), source })?;
    let access = crate::access::shared(&config.access);
    let templates = if config.detect.templates.enabled {
        let tm =
            TemplateMetrics { known: metrics.templates.clone(), created: metrics.templates_created.clone() };
        let shared = Shared::load(&config.templates_file(), Some(tm))?;
        tracing::info!(templates = shared.len(), file = %config.templates_file().display(), "log template mining on");
        Some(shared)
    } else {
        None
    };
    let detection = detection::start(&config, &metrics, templates.clone())?;
    let (pipeline, appender) =
        Pipeline::start(store.clone(), recovery.next_generation, opts, Some(detection.tap.clone()))
            .map_err(store_err)?;
    let principal_from: crate::tls::PrincipalFrom =
        Arc::new(arc_swap::ArcSwap::from_pointee(config.identity.principal_from.clone()));
    let ingest_gate = Gate {
        tls: None,
        principal_from: principal_from.clone(),
        access: Some(access.clone()),
        audit: audit.clone(),
        audit_plain: true,
    };

    let mut binder = Binder { bound: BTreeMap::new(), sockets };
    let mut accept_tasks = Vec::new();
    // A query node opens no listeners for shippers, an ingest node no Flight SQL endpoint.
    let (streams, https, otlps, relps) = match role.ingests() {
        true => {
            (config.stream.as_slice(), config.http.as_slice(), config.otlp.as_slice(), config.relp.as_slice())
        }
        false => (&[][..], &[][..], &[][..], &[][..]),
    };
    for l in streams {
        let listener = binder.bind("stream listener (syslog, JSON lines)", &l.name, l.address, l.tls).await?;
        let acceptor = listener_tls(&config, tls.as_ref(), &l.common(), &[], Tickets::OnRequest)?;
        let lm = metrics.listener(&l.name, crate::ingest::event::Protocol::Syslog);
        let settings = Arc::new(StreamSettings {
            templates: templates.clone(),
            listener: l.name.clone(),
            max_frame_bytes: l.max_frame_bytes.as_u64() as usize,
            idle_timeout: l.idle_timeout,
        });
        let (appender, lm2, cancel2) = (appender.clone(), lm.clone(), cancel.clone());
        accept_tasks.push(tokio::spawn(accept_loop(
            listener,
            l.common(),
            Gate { tls: acceptor, ..ingest_gate.clone() },
            lm.conn.clone(),
            cancel.clone(),
            connections.clone(),
            move |io, peer| {
                let (settings, appender, lm, cancel) =
                    (settings.clone(), appender.clone(), lm2.clone(), cancel2.clone());
                async move { connection::serve(io, peer, &settings, appender, lm, cancel).await }
            },
        )));
    }
    let sink = crate::ingest::sink::Sink { appender: appender.clone(), templates: templates.clone() };
    for l in https {
        let listener = binder.bind("HTTP ingest listener (POST /v1/logs)", &l.name, l.address, l.tls).await?;
        let acceptor =
            listener_tls(&config, tls.as_ref(), &l.common(), &[b"h2", b"http/1.1"], Tickets::AfterHandshake)?;
        let protocol_metrics: Vec<_> =
            crate::ingest::http::PROTOCOLS.iter().map(|p| metrics.listener(&l.name, *p)).collect();
        let conn_metrics = metrics.connections(&l.name);
        let ingest = Arc::new(HttpIngest {
            listener: l.name.clone(),
            max_body_bytes: l.max_body_bytes.as_u64() as usize,
            sink: sink.clone(),
            protocol_metrics,
            metrics: metrics.clone(),
            bodies: crate::ingest::budget::Budget::new(
                config.batch.max_pending_bytes.as_u64(),
                l.max_body_bytes.as_u64(),
                metrics.request_memory(&l.name),
            ),
            credentials: crate::ingest::http::Credentials::new(
                &l.tokens,
                &l.users,
                &config.flight.auth_limits,
            )
            .map_err(|reason| AppError::Listener { name: l.name.clone(), reason })?,
            access: Some(access.clone()),
            audit: Some(audit.clone()),
            refusals: Default::default(),
            acks: Default::default(),
        });
        // With credentials, who sends is known per request: the send rules are checked there.
        let per_request = !(l.tokens.is_empty() && l.users.is_empty());
        let cancel2 = cancel.clone();
        let deadlines = Deadlines::new(&l.name, l.header_read_timeout, l.idle_timeout, &metrics);
        let gate = Gate { tls: acceptor, ..ingest_gate.clone() };
        let gate = if per_request { Gate { access: None, ..gate } } else { gate };
        accept_tasks.push(tokio::spawn(accept_loop(
            listener,
            l.common(),
            gate,
            conn_metrics,
            cancel.clone(),
            connections.clone(),
            move |io, peer| {
                let ingest = ingest.clone();
                let cancel = cancel2.clone();
                let deadlines = deadlines.clone();
                let peer = Arc::new(peer);
                async move {
                    let handle = move |req| ingest.clone().handle(req, peer.clone());
                    crate::serve::serve_http(io, cancel, &deadlines, handle).await;
                }
            },
        )));
    }
    for l in otlps {
        let listener =
            binder.bind("OTLP gRPC listener (LogsService/Export)", &l.name, l.address, l.tls).await?;
        let acceptor = listener_tls(&config, tls.as_ref(), &l.common(), &[b"h2"], Tickets::AfterHandshake)?;
        let lm = metrics.listener(&l.name, crate::ingest::event::Protocol::Otlp);
        let max = l.max_message_bytes.as_u64() as usize;
        // One budget for what the listener's calls hold: messages as tonic reads them, then
        // the events decoded from them.
        let budget = crate::ingest::budget::Budget::new(
            config.batch.max_pending_bytes.as_u64(),
            max as u64,
            metrics.request_memory(&l.name),
        );
        let service = LogsServiceServer::new(OtlpGrpc {
            listener: l.name.clone(),
            sink: sink.clone(),
            metrics: lm.clone(),
            budget: budget.clone(),
        })
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .max_decoding_message_size(max);
        let deadlines = Deadlines::new(&l.name, l.header_read_timeout, l.idle_timeout, &metrics);
        let service = crate::serve::grpc::Calls {
            inner: service,
            policy: OtlpCalls {
                listener: l.name.as_str().into(),
                metrics: lm.clone(),
                budget: budget.clone(),
            },
            refused: metrics.access_denied.with_label_values(&[&l.name]),
            deadlines: deadlines.clone(),
        };
        let server = GrpcListener {
            listener,
            common: l.common(),
            gate: Gate { tls: acceptor, ..ingest_gate.clone() },
            connection_metrics: lm.conn.clone(),
            deadlines,
            keepalive: OTLP_KEEPALIVE,
            max_concurrent_streams: Some(OTLP_STREAMS_PER_CONNECTION),
            what: "OTLP",
        };
        accept_tasks.push(tokio::spawn(server.serve(service, cancel.clone(), connections.clone())));
    }
    for l in relps {
        let listener = binder.bind("RELP listener (rsyslog omrelp)", &l.name, l.address, l.tls).await?;
        let acceptor = listener_tls(&config, tls.as_ref(), &l.common(), &[], Tickets::OnRequest)?;
        let lm = metrics.listener(&l.name, crate::ingest::event::Protocol::Relp);
        let settings = Arc::new(RelpSettings {
            listener: l.name.clone(),
            max_frame_bytes: l.max_frame_bytes.as_u64() as usize,
            window: l.window,
            idle_timeout: l.idle_timeout,
            open_timeout: l.handshake_timeout,
            timeouts: relp::Timeouts::new(&l.name, &metrics),
        });
        let (sink, lm2, cancel2) = (sink.clone(), lm.clone(), cancel.clone());
        accept_tasks.push(tokio::spawn(accept_loop(
            listener,
            l.common(),
            Gate { tls: acceptor, ..ingest_gate.clone() },
            lm.conn.clone(),
            cancel.clone(),
            connections.clone(),
            move |io, peer| {
                let (settings, sink, lm, cancel) =
                    (settings.clone(), sink.clone(), lm2.clone(), cancel2.clone());
                async move { relp::serve(io, peer, &settings, sink, lm, cancel).await }
            },
        )));
    }
    let service_state = Arc::new(service::ServiceState::default());
    let supervise_cancel = CancellationToken::new();
    let supervise_task = tokio::spawn(service::supervise(
        notifier.clone(),
        appender.clone(),
        metrics.clone(),
        config.data_dir.clone(),
        service_state.clone(),
        supervise_cancel.clone(),
    ));
    // The pipeline ends when every appender is gone; listeners and the supervisor hold the
    // remaining clones.
    drop(appender);
    drop(sink);

    let mut flight_auth = None;
    let flight_task = if config.flight.enabled && role.queries() {
        let listener =
            binder.bind("Flight SQL endpoint", "flight", config.flight.address, config.flight.tls).await?;
        let gate = Gate { tls: None, access: None, ..ingest_gate.clone() };
        let server = flight_server(
            &config,
            listener,
            &store,
            tls.as_ref(),
            &metrics,
            gate,
            access.clone(),
            LiveTables { templates: templates.clone(), alerts: Some(detection.alerts.clone()) },
        )?;
        flight_auth = Some(server.auth.clone());
        Some(tokio::spawn(server.run(cancel.clone(), connections.clone())))
    } else {
        None
    };

    let admin_cancel = CancellationToken::new();
    let admin_tasks = TaskTracker::new();
    let ready = Readiness::default();
    let admin_common = config.admin.common();
    let admin_listener = binder
        .bind("admin endpoint (/metrics, /healthz, /readyz)", "admin", config.admin.address, config.admin.tls)
        .await?;
    let admin_gate = Gate {
        tls: listener_tls(
            &config,
            tls.as_ref(),
            &admin_common,
            &[b"h2", b"http/1.1"],
            Tickets::AfterHandshake,
        )?,
        access: None,
        audit_plain: false,
        ..ingest_gate.clone()
    };
    let sealer = match (chain, seal_metrics) {
        (Some(chain), Some(m)) => Some(start_sealer(&config, tls.as_ref(), chain, m)?),
        _ => None,
    };
    let seal_cancel = CancellationToken::new();
    let seal_task = sealer.clone().map(|s| {
        let (interval, cancel) = (config.seal.checkpoint_interval, seal_cancel.clone());
        tokio::spawn(async move {
            // What the start chained (recovery) is vouched for at once.
            s.checkpoint_now().await;
            s.run(interval, cancel).await;
        })
    });
    let admin_task = tokio::spawn(admin::run(
        sealer.clone(),
        admin_listener,
        admin_common,
        admin_gate,
        metrics.connections("admin"),
        registry.clone(),
        ready.clone(),
        Deadlines::new("admin", config.admin.header_read_timeout, config.admin.idle_timeout, &metrics),
        admin_cancel.clone(),
        admin_tasks.clone(),
    ));

    drop(ingest_gate);
    drop(audit);
    let trust_task =
        tls.clone().map(|t| tokio::spawn(watch_trust(t, config.tls.trust_reload_interval, cancel.clone())));
    let reload_task = {
        // The text the running config was loaded from: what a reload's restart-only
        // settings are compared with.
        let started_with = config.source.clone();
        let what = service::Reloadable {
            config_file,
            started_with,
            principal_from,
            rules: detection.reloader(),
            detect: config.detect.clone(),
            tls: tls.clone(),
            access: access.clone(),
            flight_auth: flight_auth.clone(),
            alerting: detection.delivery.clone(),
        };
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .inspect_err(
                |e| tracing::warn!(error = %e, "cannot handle SIGHUP; the configuration cannot be reloaded"),
            )
            .ok();
        tokio::spawn(service::reload_on_hangup(
            hup,
            what,
            notifier.clone(),
            service_state.clone(),
            cancel.clone(),
        ))
    };

    // Stopped only after the pipeline has drained, so the last save has every stamped batch.
    let save_cancel = CancellationToken::new();
    let save_task = templates.clone().map(|t| tokio::spawn(save_templates(t, save_cancel.clone())));
    // With a bucket, an ingest node publishes its alerts and templates for the query nodes.
    let publish_task = (role.ingests() && store.node_id().is_some()).then(|| {
        tokio::spawn(publish_shared(
            store.clone(),
            detection.alerts.clone(),
            templates.clone(),
            config.cluster.refresh_interval,
            save_cancel.clone(),
        ))
    });
    drop(templates);

    binder.sockets.ensure_all_claimed(&binder.bound.keys().cloned().collect::<Vec<_>>())?;
    if let Err(e) = write_listeners_file(&config, &binder.bound) {
        // Only tools read it: a full disk must not keep the daemon from starting.
        tracing::warn!(error = %e, "could not write listeners.json; serving all the same");
    }
    // Taken over before the daemon says it is ready: a stop sent right after readiness would
    // otherwise end the process without draining.
    let stop = stop_signals()?;
    ready.set(true);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "logwarden is ready");
    notifier.ready("ready");

    stop.await;
    notifier.stopping();
    let deadline = tokio::time::Instant::now() + config.shutdown_timeout;
    tracing::info!(timeout = ?config.shutdown_timeout, "shutting down: no new connections, draining");
    ready.set(false);
    cancel.cancel();
    for t in accept_tasks {
        let _ = t.await;
    }
    if let Some(t) = flight_task
        && tokio::time::timeout_at(deadline, t).await.is_err()
    {
        tracing::warn!("Flight SQL calls did not finish before the shutdown deadline; closing them");
    }
    connections.close();
    supervise_cancel.cancel();
    let _ = supervise_task.await;
    if tokio::time::timeout_at(deadline, connections.wait()).await.is_err() {
        tracing::warn!("connections did not drain before the shutdown deadline; closing them");
    }
    // Distributed queries the Flight SQL server dropped: their jobs are cancelled on the cluster.
    crate::query::distributed::cancellations_sent(deadline).await;
    // Whatever the connections handed over is made durable before the front ends close.
    let lease = match tokio::time::timeout_at(deadline, pipeline.join()).await {
        Err(_) => {
            tracing::error!(
                "storage did not finish before the shutdown deadline; unfinished batches will not be durable"
            );
            None
        }
        Ok(lease) => {
            tracing::info!("all received events are durable");
            Some(lease)
        }
    };
    if let Some(t) = trust_task {
        let _ = t.await;
    }
    let _ = reload_task.await;
    // The WAL thread has stopped and dropped its tap: the rules have seen every durable event.
    detection.stop(deadline).await;
    save_cancel.cancel();
    if let Some(t) = save_task {
        let _ = tokio::time::timeout_at(deadline, t).await;
    }
    if let Some(t) = publish_task {
        let _ = tokio::time::timeout_at(deadline, t).await;
    }
    // The lease goes last: the final alerts and templates are written while it is held.
    if let Some(lease) = lease {
        let _ = tokio::time::timeout_at(deadline, lease.release()).await;
    }
    peers_cancel.cancel();
    if let Some(t) = peers_task {
        let _ = tokio::time::timeout_at(deadline, t).await;
    }
    admin_cancel.cancel();
    let _ = admin_task.await;
    admin_tasks.close();
    let _ = tokio::time::timeout_at(deadline, admin_tasks.wait()).await;
    // Every audit handle is gone with the listeners, the Flight service (its credentials
    // record refused sign-ins) and the admin endpoint: the writer drains and stops.
    drop(flight_auth);
    let drained = tokio::task::spawn_blocking(move || audit_writer.join());
    if tokio::time::timeout_at(deadline, drained).await.is_err() {
        tracing::warn!("the audit trail was not fully written before the shutdown deadline");
    }
    // Everything that chains has stopped: the last checkpoint vouches for all of it.
    seal_cancel.cancel();
    if let Some(t) = seal_task {
        let _ = t.await;
    }
    if let Some(sealer) = sealer {
        sealer.checkpoint_now().await;
        sealer.drain_exports(deadline.saturating_duration_since(tokio::time::Instant::now())).await;
    }
    tracing::info!("logwarden stopped");
    Ok(())
}

/// The checkpoint writer: signed with `[seal]`'s own key, or with the server's TLS key (loaded
/// for this alone when no listener uses TLS).
fn start_sealer(
    config: &Config,
    tls: Option<&ServerTls>,
    chain: Arc<Chain>,
    metrics: SealMetrics,
) -> Result<Arc<Sealer>, AppError> {
    let key = match config.seal.own_key() {
        Some(cfg) => SigningKey::Own(ServerTls::load_key(&cfg, None).map_err(AppError::SealKey)?),
        None => match tls {
            Some(tls) => SigningKey::Server(tls.clone()),
            None => SigningKey::Server(
                ServerTls::load(&config.tls, &config.dev_tls_dir(), None).map_err(AppError::SealKey)?,
            ),
        },
    };
    let signer = match &key {
        SigningKey::Own(_) => "the [seal] key",
        SigningKey::Server(_) => "the [tls] server key",
    };
    let node = config.cluster.node_id();
    let export = crate::seal::export::Exporter::start(&config.seal.export, &node, Some(metrics.clone()))?;
    tracing::info!(
        entries = chain.head().seq, signed_with = signer, interval = ?config.seal.checkpoint_interval,
        webhook = config.seal.export.webhook.is_some(), syslog = config.seal.export.syslog.as_deref().unwrap_or(""),
        "seal on: stored objects are chained and checkpoints signed"
    );
    Ok(Arc::new(Sealer::new(chain, key, node, export, Some(metrics))))
}

/// The TLS of one listener, or `None` for a plain (loopback-only) one.
fn listener_tls(
    config: &Config,
    tls: Option<&ServerTls>,
    l: &ListenerCommon,
    alpn: &[&[u8]],
    tickets: Tickets,
) -> Result<Option<Arc<ListenerTls>>, AppError> {
    match tls {
        Some(t) if l.tls => Ok(Some(t.listener(&l.name, alpn, config.client_trust(l), tickets)?)),
        _ => Ok(None),
    }
}

/// Reload client-certificate trust when its files change (SIGHUP forces it: `service`).
async fn watch_trust(tls: ServerTls, every: std::time::Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let t = tls.clone();
        let _ = tokio::task::spawn_blocking(move || t.reload_changed_trust()).await;
    }
}

/// Save the mined templates every 10 s while they change, and once more when `cancel` fires
/// (after the pipeline has drained, the caller awaits this task).
async fn save_templates(shared: Arc<Shared>, cancel: CancellationToken) {
    let save = |shared: Arc<Shared>| async move {
        match tokio::task::spawn_blocking(move || shared.save()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "failed to save the log templates"),
            Err(e) => tracing::error!(error = %e, "the template save task failed"),
        }
    };
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => save(shared.clone()).await,
        }
    }
    save(shared).await;
}

#[allow(clippy::too_many_arguments)]
fn flight_server(
    config: &Config,
    listener: Listeners,
    store: &Store,
    tls: Option<&ServerTls>,
    metrics: &Metrics,
    gate: Gate,
    access: crate::access::SharedAccess,
    live: LiveTables,
) -> Result<FlightServer, AppError> {
    let f = &config.flight;
    let (auth, token_file) = Authenticator::new(f, &config.flight_token_file())?;
    let auth = Arc::new(auth.report_to(metrics, gate.audit.clone()));
    if let Some(path) = token_file {
        tracing::info!(token_file = %path.display(), "Flight SQL accepts the token in this file (no credentials configured); logwarden query --server reads it");
    }
    let common = f.common();
    let mut engine = QueryEngine::new(store.clone())?.with_live(live)?;
    if let (crate::config::Engine::Ballista, Some(scheduler)) = (config.query.engine, &config.query.scheduler)
    {
        tracing::info!(scheduler, "queries over logs alone run on the Ballista cluster");
        engine = engine.with_scheduler(scheduler);
    }
    let service = FlightSql {
        engine,
        auth: auth.clone(),
        limits: QueryLimits {
            memory_bytes: f.limits.memory.as_u64() as usize,
            timeout: f.limits.timeout,
            max_rows: f.limits.max_result_rows,
        },
        max_concurrent: f.limits.max_concurrent,
        running: Arc::new(Semaphore::new(f.limits.max_concurrent)),
        metrics: metrics.clone(),
        access,
        audit: gate.audit.clone(),
    };
    let flight_tls = listener_tls(config, tls, &common, &[b"h2"], Tickets::AfterHandshake)?;
    if let Some(t) = &flight_tls {
        // A session started with a certificate ends when a trust reload revokes it. The hook
        // holds the authenticator weakly: the listener's trust outlives the Flight service at
        // shutdown, and the authenticator's audit handle must go with the service.
        let auth = Arc::downgrade(&auth);
        t.in_use().on_revalidate(move |check| {
            if let Some(auth) = auth.upgrade() {
                auth.end_sessions_failing(check);
            }
        });
    }
    Ok(FlightServer {
        listener,
        common: common.clone(),
        gate: Gate { tls: flight_tls, ..gate },
        service,
        auth,
        connection_metrics: metrics.connections("flight"),
        metrics: metrics.clone(),
        deadlines: Deadlines::new("flight", f.header_read_timeout, f.idle_timeout, metrics),
        keepalive: (f.keepalive_interval, f.keepalive_timeout),
    })
}

/// Binds the listeners, or takes the sockets systemd passed under their names, and records
/// the addresses actually bound (port 0 resolved) for `listeners.json`.
struct Binder {
    bound: BTreeMap<String, SocketAddr>,
    sockets: crate::systemd::PassedSockets,
}

impl Binder {
    async fn bind(
        &mut self,
        what: &str,
        name: &str,
        configured: SocketAddr,
        tls: bool,
    ) -> Result<Listeners, AppError> {
        let full = format!("{what} {name}");
        let mut passed = self.sockets.take(name);
        if passed.is_empty() {
            passed.extend(self.sockets.take_by_address(configured));
        }
        let listener = if passed.is_empty() {
            Listeners::from(bind_named(&full, configured).await?)
        } else {
            let err = |source| AppError::Passed { what: full.clone(), source };
            let mut sockets = Vec::with_capacity(passed.len());
            for fd in passed {
                let std = std::net::TcpListener::from(fd);
                std.set_nonblocking(true).map_err(err)?;
                sockets.push(TcpListener::from_std(std).map_err(err)?);
            }
            let listeners = Listeners::new(sockets);
            tracing::info!(listener = %name, addrs = ?listeners.local_addrs(),
                "using the listening sockets passed by systemd; the configured address is not bound");
            listeners
        };
        let addr = local_addr(&listener, configured);
        self.bound.insert(name.to_owned(), addr);
        tracing::info!(listener = %name, %addr, tls, "{what} ready");
        Ok(listener)
    }
}

async fn bind_named(what: &str, addr: SocketAddr) -> Result<TcpListener, AppError> {
    bind(addr).await.map_err(|source| AppError::Bind { what: what.into(), addr, source })
}

fn local_addr(l: &Listeners, configured: SocketAddr) -> SocketAddr {
    l.local_addr().unwrap_or(configured)
}

/// `listeners.json` in the data directory: the addresses actually bound (port 0 resolved), for
/// tests, scripts and `logwarden query --server` later.
fn write_listeners_file(config: &Config, bound: &BTreeMap<String, SocketAddr>) -> Result<(), AppError> {
    let path = config.listeners_file();
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_string_pretty(bound).unwrap_or_default();
    let err = |source| AppError::Write { path: path.display().to_string(), source };
    let written = std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(err)
}

/// SIGTERM and SIGINT, handled from now on (no longer ending the process): the future
/// resolves at the first.
fn stop_signals() -> Result<impl std::future::Future<Output = ()>, AppError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(AppError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AppError::Signal)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("received SIGTERM"),
            _ = int.recv() => tracing::info!("received SIGINT"),
        }
    })
}
