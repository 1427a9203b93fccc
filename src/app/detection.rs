//! The streaming half of the daemon, wired: the rule engine fed by the WAL thread, the alert
//! state and its notifier, and rule reloads on SIGHUP.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::AppError;
use crate::alert::Alerts;
use crate::alert::notify::Notifier;
use crate::alert::sink::{AlertSink, Results};
use crate::config::{Config, DetectConfig, RuleConfig};
use crate::detect::builtin::{self, Detectors};
use crate::metrics::Metrics;
use crate::stream::{Engine, Options, Reload, Rule, RuleUpdate, Tap};

pub struct Detection {
    pub tap: Tap,
    pub alerts: Arc<Alerts>,
    /// Alert delivery, reconfigured at a reload.
    pub delivery: Arc<Notifier>,
    reload: Reload,
    engine: std::thread::JoinHandle<()>,
    notifier: JoinHandle<()>,
    notify_cancel: CancellationToken,
}

/// Start rule evaluation and alert delivery. The rules were planned when the config was
/// validated; they are planned again here for the engine's own use.
pub fn start(
    config: &Config,
    metrics: &Metrics,
    templates: Option<Arc<crate::detect::templates::Shared>>,
) -> Result<Detection, AppError> {
    let dir = config.alerts_dir();
    std::fs::create_dir_all(&dir)
        .map_err(|source| AppError::Write { path: dir.display().to_string(), source })?;
    let alerts = Alerts::load(&dir, Some(metrics.alerts_firing.clone()))?;
    let notifier = Arc::new(Notifier::new(&config.alerting, &dir, metrics.notify.clone())?);
    let results = Results::new(config.data_dir.join("rules"), config.detect.results_retention);
    let configs: Vec<RuleConfig> =
        config.rules.iter().cloned().chain(builtin::rules(&config.detect)).collect();
    let (rules, problems) = crate::stream::compile_rules(&configs);
    for p in &problems {
        tracing::error!(problem = %p, "rule not started");
    }
    if !problems.is_empty() {
        // Validation planned every rule already; a rule that fails now is a bug, not a config.
        return Err(AppError::Rules(problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")));
    }
    let rules: Vec<(RuleConfig, Rule)> = configs.into_iter().zip(rules).collect();
    let detect_dir = config.data_dir.join("detect");
    std::fs::create_dir_all(&detect_dir)
        .map_err(|source| AppError::Write { path: detect_dir.display().to_string(), source })?;
    let detectors =
        Detectors::load(&detect_dir, config.detect.clone(), templates, Some(metrics.baselines.clone()));
    let names: Vec<String> = rules.iter().map(|(c, _)| c.name.clone()).collect();
    tracing::info!(rules = ?names, alertmanagers = config.alerting.alertmanagers.len(),
        webhooks = config.alerting.webhooks.len(), firing = alerts.firing().len(), "rule evaluation on");
    let sink = AlertSink {
        alerts: alerts.clone(),
        results,
        notifier: notifier.clone(),
        latency: metrics.alert_latency_seconds.clone(),
        detectors,
    };
    let opts = Options { allowed_lateness: config.detect.allowed_lateness, idle: config.detect.idle_timeout };
    let (tap, reload, engine) = Engine::start(rules, opts, Box::new(sink), metrics.rules.clone())
        .map_err(|source| AppError::Write { path: "thread lw-rules".into(), source })?;
    // Alerts of rules that are no longer configured (removed while the daemon was down) are over.
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    let resolved = alerts.resolve_others(&names.iter().map(String::as_str).collect::<Vec<_>>(), now);
    if !resolved.is_empty() {
        tracing::info!(alerts = resolved.len(), "alerts of rules no longer configured are resolved");
        notifier.enqueue(&resolved, now);
    }
    let notify_cancel = CancellationToken::new();
    let delivery = notifier.clone();
    let notifier = tokio::spawn(notifier.run(alerts.clone(), notify_cancel.clone()));
    Ok(Detection { tap, alerts, delivery, reload, engine, notifier, notify_cancel })
}

impl Detection {
    /// A sender of rule sets for [`watch_rules`].
    pub fn reloader(&self) -> Reload {
        self.reload.clone()
    }

    /// After the pipeline has stopped (so the engine has seen every durable event): let the
    /// engine finish, deliver what is queued until `deadline`, save the alert state.
    pub async fn stop(self, deadline: tokio::time::Instant) {
        let Detection { tap, alerts, reload, engine, notifier, notify_cancel, .. } = self;
        // The engine ends when the last tap (the WAL thread's is gone) and reloader are dropped.
        drop((tap, reload));
        let _ = tokio::time::timeout_at(deadline, tokio::task::spawn_blocking(move || engine.join())).await;
        notify_cancel.cancel();
        if tokio::time::timeout_at(deadline, notifier).await.is_err() {
            tracing::warn!(
                "alert notifications still queued at the shutdown deadline; they are kept for the next start"
            );
        }
        if let Err(e) = alerts.save() {
            tracing::error!(error = %e, "failed to save the alert state");
        }
    }
}

/// Hand the engine every rule of `rules` that compiles (from `file`, named in the log), with
/// the built-in detectors of `detect` (their rules are made from it, and it goes along so that
/// rules and settings change together): rules that plan are (re)started, keeping their open
/// windows when unchanged; a rule that does not is logged with its key and DataFusion's reason,
/// and its running version, if any, stays. False when the engine has stopped.
pub async fn reload_rules(
    file: &str,
    rules: Vec<RuleConfig>,
    reload: &Reload,
    detect: &DetectConfig,
) -> bool {
    let builtins = builtin::rules(detect);
    let mut set = Vec::new();
    let user = rules.len();
    for (i, cfg) in rules.into_iter().chain(builtins).enumerate() {
        if i < user && builtin::NAMES.contains(&cfg.name.as_str()) {
            tracing::error!(file, key = format!("rules[{i}].name"), name = %cfg.name,
                "rule refused at reload: the name is a built-in detector's");
            continue;
        }
        let (mut compiled, problems) = crate::stream::compile_rules(std::slice::from_ref(&cfg));
        for p in &problems {
            let key = p.key.replacen("rules[0]", &format!("rules[{i}]"), 1);
            tracing::error!(file, key, reason = %p.reason,
                "rule refused at reload; its running version (if any) stays");
        }
        let name = cfg.name.clone();
        set.push((name, compiled.pop().map(|r| (cfg, r))));
    }
    reload.send(RuleUpdate { rules: set, detect: detect.clone() }).await.is_ok()
}
