//! The daemon as a service: the watchdog and status loop, and configuration reload on SIGHUP,
//! each reported to the service manager through [`Notifier`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::core::Collector;
use tokio_util::sync::CancellationToken;

use super::detection::reload_rules;
use crate::config::ConfigError;
use crate::metrics::Metrics;
use crate::store::Appender;
use crate::stream::Reload;
use crate::systemd::Notifier;
use crate::tls::ServerTls;

/// What the status line says beyond the numbers: the last reload's failure, until one succeeds.
#[derive(Default)]
pub struct ServiceState {
    reload_error: Mutex<Option<String>>,
}

impl ServiceState {
    fn set_reload_error(&self, e: Option<String>) {
        *self.reload_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    fn reload_error(&self) -> Option<String> {
        self.reload_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// How often the status line is refreshed when there is no watchdog to keep up with.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Every tick: prove the ingest pipeline moves (a probe through the batcher and the WAL thread)
/// and only then send `WATCHDOG=1`; refresh `STATUS=`. Ends, dropping its [`Appender`], when
/// `cancel` fires.
pub async fn supervise(
    notifier: Notifier,
    appender: Appender,
    metrics: Metrics,
    data_dir: PathBuf,
    state: Arc<ServiceState>,
    cancel: CancellationToken,
) {
    let watchdog = notifier.watchdog_interval();
    let every = watchdog.map_or(STATUS_EVERY, |w| (w / 2).min(STATUS_EVERY));
    if let Some(w) = watchdog {
        tracing::info!(watchdog = ?w, ping_every = ?every, "systemd watchdog on: pinged while the ingest pipeline answers probes");
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut probe: Option<tokio::task::JoinHandle<bool>> = None;
    let mut wedged_since: Option<Instant> = None;
    let mut rate = Rate::new(&metrics);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        // The probe sent a tick ago had the whole tick to come back.
        let alive = match probe.take() {
            Some(h) if h.is_finished() => h.await.unwrap_or(false),
            Some(h) => {
                probe = Some(h);
                false
            }
            None => false,
        };
        if probe.is_none() {
            let a = appender.clone();
            probe = Some(tokio::spawn(async move { a.probe().await.is_ok() }));
        }
        match (alive, wedged_since) {
            (true, Some(since)) => {
                tracing::warn!(stalled = ?since.elapsed(), "the ingest pipeline answers again");
                wedged_since = None;
            }
            (false, None) if probe.as_ref().is_some_and(|p| !p.is_finished()) && rate.started() => {
                tracing::warn!(after = ?every,
                    "the ingest pipeline did not answer a probe (WAL or flush stalled?); watchdog pings withheld");
                wedged_since = Some(Instant::now());
            }
            _ => {}
        }
        if alive && watchdog.is_some() {
            notifier.watchdog();
        }
        record_disk(&metrics, &data_dir);
        notifier.status(&rate.status_line(&metrics, wedged_since.is_some(), state.reload_error()));
    }
    if let Some(p) = probe {
        p.abort();
    }
}

/// The data directory's file system, for `logwarden_data_dir_{free,size}_bytes`.
fn record_disk(m: &Metrics, dir: &std::path::Path) {
    if let Ok(st) = rustix::fs::statvfs(dir) {
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        let size = st.f_blocks.saturating_mul(st.f_frsize);
        m.data_dir_free_bytes.set(i64::try_from(free).unwrap_or(i64::MAX));
        m.data_dir_size_bytes.set(i64::try_from(size).unwrap_or(i64::MAX));
    }
}

/// Events made durable per second between two status lines.
struct Rate {
    last: (Instant, u64),
    ticks: u64,
}

impl Rate {
    fn new(m: &Metrics) -> Rate {
        Rate { last: (Instant::now(), m.events_durable.get()), ticks: 0 }
    }

    /// Past the first tick (whose probe had no time yet).
    fn started(&self) -> bool {
        self.ticks > 0
    }

    fn status_line(&mut self, m: &Metrics, wedged: bool, reload_error: Option<String>) -> String {
        let now = (Instant::now(), m.events_durable.get());
        let secs = now.0.duration_since(self.last.0).as_secs_f64().max(1e-3);
        let per_sec = (now.1.saturating_sub(self.last.1)) as f64 / secs;
        self.last = now;
        self.ticks += 1;
        let connections = sum(&m.connections_active);
        let firing = sum(&m.alerts_firing);
        let mut line = if wedged {
            "STALLED: the ingest pipeline does not answer".to_owned()
        } else {
            format!("{per_sec:.0} events/s")
        };
        line.push_str(&format!(", {connections} connections, {firing} alerts firing"));
        if m.storage_writable.get() == 0 {
            line.push_str(&format!(
                "; DISK FULL OR FAILING: WAL writes fail, HTTP gets 503, {} stream events waiting",
                m.wal_retry_events.get()
            ));
        }
        if let Some(e) = reload_error {
            line.push_str(&format!("; last reload {e}"));
        }
        line
    }
}

/// The sum of a gauge vector's series.
fn sum(c: &impl Collector) -> i64 {
    c.collect().iter().flat_map(|f| f.get_metric()).map(|m| m.get_gauge().get_value() as i64).sum()
}

/// What a SIGHUP reloads.
pub struct Reloadable {
    /// `None`: the daemon runs on embedded defaults, which a reload applies again (the
    /// development certificate files may have been replaced).
    pub config_file: Option<PathBuf>,
    /// The file's text the daemon started with: what restart-only keys are compared with.
    pub started_with: String,
    /// `[identity] principal_from`, shared by every listener's accept loop.
    pub principal_from: crate::tls::PrincipalFrom,
    pub rules: Reload,
    /// The `[detect]` in force (the built-in detectors' rules are made from it).
    pub detect: crate::config::DetectConfig,
    pub tls: Option<ServerTls>,
    pub access: crate::access::SharedAccess,
    /// Flight SQL's credentials, when the endpoint is on.
    pub flight_auth: Option<Arc<crate::serve::flight::auth::Authenticator>>,
    pub alerting: Arc<crate::alert::notify::Notifier>,
}

/// On SIGHUP (`systemctl reload`): `RELOADING=1`, reread and check the config file, apply what
/// can change at run time, then `READY=1`. What changes: the server certificate and key
/// (rotation), `[access]`, Flight SQL credentials, `[alerting]` receivers and settings,
/// rules, the built-in detectors' `[detect]` settings, and client-certificate trust and
/// CRLs. Established connections stay. A config that does not load is refused as a whole (the
/// running one stays) and the reason is logged and shown in `STATUS=`; a config whose only
/// problems are rules applies the rest and every other rule, as `logwarden validate` would
/// explain.
///
/// `hup` is SIGHUP, taken over by the caller before the daemon says it is ready: until then
/// a SIGHUP would end the process.
pub async fn reload_on_hangup(
    mut hup: Option<tokio::signal::unix::Signal>,
    mut what: Reloadable,
    notifier: Notifier,
    state: Arc<ServiceState>,
    cancel: CancellationToken,
) {
    let Some(hup) = hup.as_mut() else {
        return;
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            Some(()) = hup.recv() => {}
        }
        notifier.reloading();
        let file =
            what.config_file.as_ref().map_or_else(|| "<defaults>".to_owned(), |f| f.display().to_string());
        tracing::info!(file, "received SIGHUP: reloading the configuration");
        match reload(&mut what, &file).await {
            Reloaded::Applied(problem) => {
                tracing::info!(file, "configuration reloaded");
                let status = match &problem {
                    Some(e) => format!("reloaded, {e}"),
                    None => "reloaded".to_owned(),
                };
                state.set_reload_error(problem.map(|e| format!("applied, but {e}")));
                notifier.ready(&status);
            }
            Reloaded::Refused(why) => {
                tracing::error!(error = why, "configuration not reloaded; the running configuration stays");
                let reason = first_line(&why);
                notifier.ready(&format!("reload refused: {reason}"));
                state.set_reload_error(Some(format!("refused: {reason}")));
            }
            Reloaded::EngineGone => return,
        }
    }
}

/// What became of one reload.
enum Reloaded {
    /// Applied, but for what the problem (if any) says.
    Applied(Option<String>),
    /// Nothing changed, for this reason (all of it: every problem of the file).
    Refused(String),
    /// The rule engine has stopped (shutdown).
    EngineGone,
}

/// The first line of an error (a config error lists every problem on its own line).
fn first_line(e: &impl std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

/// One reload: read the file once, check it whole, prepare every part (the certificate and
/// key, client trust, Flight SQL credentials, alert receivers), and only when all are ready
/// put them in force, with `[access]` and the rules. A part that cannot be prepared refuses
/// the whole reload. The one exception: a file whose only problems are some `[[rules]]`
/// applies everything else and every other rule: a typo in one rule must not hold back a
/// certificate rotation.
async fn reload(what: &mut Reloadable, file: &str) -> Reloaded {
    let text = match &what.config_file {
        Some(path) => match crate::config::read(path) {
            Ok(t) => t,
            Err(e) => return Reloaded::Refused(e.to_string()),
        },
        None => String::new(),
    };
    // The config to apply (None: only the rules can be), and the rule problem that is all that
    // is wrong with the file.
    let (cfg, whole, mut problems) = match crate::config::load_str(&text, file) {
        Ok(cfg) => (Some(cfg), true, Vec::new()),
        Err(ConfigError::Invalid { problems, .. })
            if problems.iter().all(|p| p.key.starts_with("rules[")) =>
        {
            let refused = format!("some rules refused: {file}: {}", problems[0]);
            match crate::config::load_str_except_rules(&text, file) {
                Ok(cfg) => (Some(cfg), false, vec![refused]),
                Err(e) => {
                    tracing::warn!(error = %e, "only the rules are reloaded: the file does not load without them");
                    (None, false, vec![format!("{refused}; nothing else applied: {}", first_line(&e))])
                }
            }
        }
        Err(e) => return Reloaded::Refused(e.to_string()),
    };
    // Installed last, after the rules, as before reloads were prepared whole.
    let mut trust = None;
    if let Some(cfg) = &cfg {
        for w in cfg.warnings() {
            tracing::warn!("{file}: {}: {}", w.key, w.reason);
        }
        let waiting = crate::config::restart_only_changes(&what.started_with, &text);
        if !waiting.is_empty() {
            let keys = waiting.join(", ");
            tracing::warn!(
                file,
                keys,
                "changed settings that apply only after a restart (systemctl restart logwarden)"
            );
            problems.push(format!("needs a restart to apply {keys}"));
        }
        let mut prepared = match prepare(what, cfg).await {
            Ok(p) => p,
            Err(e) => return Reloaded::Refused(format!("{file}: {e}")),
        };
        trust = prepared.trust.take();
        if let (Some(tls), Some(identity)) = (&what.tls, prepared.identity) {
            tls.install_identity(identity);
        }
        what.access.store(Arc::new(crate::access::Access::new(&cfg.access)));
        what.principal_from.store(Arc::new(cfg.identity.principal_from.clone()));
        if let (Some(auth), Some(creds)) = (&what.flight_auth, prepared.credentials) {
            auth.install(creds);
        }
        what.alerting.install(prepared.alerting).await;
    }
    // A file that loaded whole has its rules in `cfg`; otherwise they are read on their own.
    let rules = match &cfg {
        Some(c) if whole => Ok(c.rules.clone()),
        _ => crate::config::rules_from_str(&text, file),
    };
    match rules {
        Ok(rules) => {
            let detect = cfg.as_ref().map_or(&what.detect, |c| &c.detect).clone();
            if !reload_rules(file, rules, &what.rules, &detect).await {
                return Reloaded::EngineGone;
            }
            what.detect = detect;
        }
        Err(e) => {
            tracing::error!(error = %e, "rules not reloaded; the running rules stay");
            problems.push(format!("rules and detectors: {}", first_line(&e)));
        }
    }
    if let (Some(tls), Some(trust)) = (what.tls.clone(), trust) {
        // Revalidating the certificates in use verifies each: off the async workers.
        let _ = tokio::task::spawn_blocking(move || tls.install_trust(trust)).await;
    }
    Reloaded::Applied((!problems.is_empty()).then(|| problems.join("; ")))
}

/// The parts of a reload that can fail, each built and checked before any is applied.
struct Prepared {
    identity: Option<crate::tls::PreparedIdentity>,
    trust: Option<crate::tls::PreparedTrust>,
    credentials: Option<crate::serve::flight::auth::PreparedCredentials>,
    alerting: crate::alert::notify::PreparedAlerting,
}

/// Read everything `cfg` names (files, a token's key) off the async workers; the first part
/// that fails says why the reload is refused.
async fn prepare(what: &Reloadable, cfg: &crate::config::Config) -> Result<Prepared, String> {
    let tls = what.tls.clone();
    let (tls_cfg, dev_dir, trusts) = (cfg.tls.clone(), cfg.dev_tls_dir(), cfg.client_trusts());
    let (identity, trust) = tokio::task::spawn_blocking(move || match tls {
        None => Ok((None, None)),
        Some(tls) => {
            let identity = tls.prepare_identity(&tls_cfg, &dev_dir).map_err(|e| format!("tls: {e}"))?;
            let trust = tls.prepare_trust(&trusts).map_err(|e| format!("client certificate trust: {e}"))?;
            Ok::<_, String>((Some(identity), Some(trust)))
        }
    })
    .await
    .map_err(|e| e.to_string())??;
    let credentials = match &what.flight_auth {
        None => None,
        Some(_) => Some(
            crate::serve::flight::auth::Authenticator::prepare(&cfg.flight, &cfg.flight_token_file())
                .map_err(|e| format!("flight: {e}"))?,
        ),
    };
    let alerting = what.alerting.prepare(&cfg.alerting).map_err(|e| format!("alerting: {e}"))?;
    Ok(Prepared { identity, trust, credentials, alerting })
}
