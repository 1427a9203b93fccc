//! Delivery of alert notifications to Alertmanager (`POST /api/v2/alerts`) and to webhooks
//! (a JSON body per group of alerts, signed with HMAC-SHA256).
//!
//! Each receiver has an outbox directory, `data_dir/alerts/outbox/<receiver>/`, holding one
//! file per notification, named by sequence number and written atomically before delivery is
//! attempted; a delivered notification's file is deleted. So notifications survive a restart
//! and leave in order. A task per receiver posts the oldest file, retrying with exponential
//! backoff (1 s doubling up to `max_backoff`); an answer of 4xx other than 408 and 429 is
//! final (the body is logged and the file dropped). Beyond `queue_max` files the oldest is
//! dropped and counted.
//!
//! A reload ([`Notifier::reconfigure`]) rebuilds the receivers from the new `[alerting]` (so
//! that changed URLs, CA files and webhook secrets take effect) and swaps them with the
//! settings: each old task is stopped before its successor starts on the same outbox, with the
//! same sequence numbers (a notification in flight at that moment is sent again: at least
//! once); a removed receiver's outbox stays on disk for a later config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::http::{Client, HttpError};
use super::{Alert, Alerts, Status, rfc3339};
use crate::config::{AlertingConfig, ReceiverConfig, receiver_name};

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("alerting receiver {name}: {source}")]
    Client { name: String, source: HttpError },
    #[error("alerting receiver {name}: {reason}")]
    Config { name: String, reason: String },
    #[error("failed to prepare the outbox {path}: {source}")]
    Outbox { path: String, source: std::io::Error },
}

/// Per receiver (label `receiver`).
#[derive(Clone)]
pub struct NotifyMetrics {
    pub sent: prometheus::IntCounterVec,
    pub failed: prometheus::IntCounterVec,
    pub dropped: prometheus::IntCounterVec,
    pub queued: prometheus::IntGaugeVec,
}

enum Kind {
    Alertmanager,
    Webhook { secret: Option<Vec<u8>> },
}

struct Receiver {
    name: String,
    kind: Kind,
    client: Client,
    outbox: PathBuf,
    /// Shared with the receiver of the same name before and after a reload (same outbox).
    next: Arc<AtomicU64>,
    wake: Arc<Notify>,
}

/// The delivery tasks, one per receiver, each with the token that stops it at a reload.
enum Deliveries {
    /// Before [`Notifier::run`].
    NotStarted,
    /// `cancel` is the shutdown token the tasks drain on.
    Running { cancel: CancellationToken, tasks: Vec<(tokio::task::JoinHandle<()>, CancellationToken)> },
    /// Shutdown has taken the tasks: a reload only swaps the settings.
    Closed,
}

/// What a reload replaces whole.
/// Alerting settings built by [`Notifier::prepare`], waiting to be installed.
pub struct PreparedAlerting(Settings);

struct Settings {
    receivers: Vec<Arc<Receiver>>,
    resend: Duration,
    repeat: Duration,
    group_by: Vec<String>,
    queue_max: usize,
    max_backoff: Duration,
}

pub struct Notifier {
    dir: PathBuf,
    settings: arc_swap::ArcSwap<Settings>,
    metrics: NotifyMetrics,
    deliveries: tokio::sync::Mutex<Deliveries>,
    /// Tells the resend loop that the settings changed (its interval, perhaps).
    reconfigured: Notify,
}

impl Notifier {
    pub fn new(cfg: &AlertingConfig, dir: &Path, metrics: NotifyMetrics) -> Result<Notifier, NotifyError> {
        let settings = settings(cfg, dir, &[])?;
        for r in &settings.receivers {
            metrics.queued.with_label_values(&[&r.name]).set(queued(&r.outbox).len() as i64);
        }
        Ok(Notifier {
            dir: dir.to_path_buf(),
            settings: arc_swap::ArcSwap::from_pointee(settings),
            metrics,
            deliveries: tokio::sync::Mutex::new(Deliveries::NotStarted),
            reconfigured: Notify::new(),
        })
    }

    /// Take a reloaded `[alerting]`: receivers added, changed or removed, and its settings.
    /// Nothing changes when a receiver cannot be made (its error is returned).
    pub async fn reconfigure(self: &Arc<Self>, cfg: &AlertingConfig) -> Result<(), NotifyError> {
        let prepared = self.prepare(cfg)?;
        self.install(prepared).await;
        Ok(())
    }

    /// The receivers and settings of `cfg`, built (clients, TLS files, webhook secrets) but not
    /// yet in force: a reload prepares every part before it changes any.
    pub fn prepare(&self, cfg: &AlertingConfig) -> Result<PreparedAlerting, NotifyError> {
        Ok(PreparedAlerting(settings(cfg, &self.dir, &self.settings.load().receivers)?))
    }

    /// Put prepared settings in force: each receiver's delivery task restarts on them.
    pub async fn install(self: &Arc<Self>, prepared: PreparedAlerting) {
        let mut deliveries = self.deliveries.lock().await;
        let current = self.settings.load_full();
        // The prepared receivers share sequence numbers and wake-ups with those in force
        // (copied when prepared; reloads come one at a time).
        let new = prepared.0;
        for r in current.receivers.iter().filter(|r| !new.receivers.iter().any(|n| n.name == r.name)) {
            let left = queued(&r.outbox).len();
            tracing::warn!(receiver = %r.name, queued = left, outbox = %r.outbox.display(),
                "alerting receiver removed; its queued notifications stay in its outbox");
        }
        let names: Vec<String> = new.receivers.iter().map(|r| r.name.clone()).collect();
        self.settings.store(Arc::new(new));
        if let Deliveries::Running { cancel, tasks } = &mut *deliveries {
            // Every old task stops before the new ones start, so that an outbox never has two
            // senders.
            for (task, stop) in tasks.drain(..) {
                stop.cancel();
                let _ = task.await;
            }
            *tasks = self.spawn_deliveries(cancel);
        }
        self.reconfigured.notify_one();
        tracing::info!(receivers = ?names, "alerting reloaded");
    }

    /// A delivery task for each receiver in force.
    fn spawn_deliveries(
        self: &Arc<Self>,
        cancel: &CancellationToken,
    ) -> Vec<(tokio::task::JoinHandle<()>, CancellationToken)> {
        let receivers = self.settings.load().receivers.clone();
        receivers
            .into_iter()
            .map(|r| {
                let stop = CancellationToken::new();
                (tokio::spawn(self.clone().deliver(r, cancel.clone(), stop.clone())), stop)
            })
            .collect()
    }

    /// Put notifications of `alerts` (that just fired or resolved) in every receiver's outbox.
    pub fn enqueue(&self, alerts: &[Alert], now: i64) {
        let s = self.settings.load();
        for r in &s.receivers {
            let bodies = match &r.kind {
                Kind::Alertmanager => vec![alertmanager_body(alerts, now, s.resend)],
                Kind::Webhook { .. } => webhook_bodies(&s.group_by, &r.name, alerts),
            };
            for body in bodies {
                self.put(&s, r, &body);
            }
        }
    }

    fn put(&self, s: &Settings, r: &Receiver, body: &[u8]) {
        let mut files = queued(&r.outbox);
        while files.len() >= s.queue_max {
            let oldest = files.remove(0);
            let _ = std::fs::remove_file(&oldest);
            self.metrics.dropped.with_label_values(&[&r.name]).inc();
            tracing::error!(receiver = %r.name, file = %oldest.display(), "alert outbox full; dropped the oldest notification");
        }
        let seq = r.next.fetch_add(1, Ordering::Relaxed);
        let path = r.outbox.join(format!("{seq:020}.json"));
        match crate::store::write_atomic(&path, body) {
            Ok(()) => {
                self.metrics.queued.with_label_values(&[&r.name]).set(files.len() as i64 + 1);
                r.wake.notify_one();
            }
            Err(e) => {
                self.metrics.failed.with_label_values(&[&r.name]).inc();
                tracing::error!(receiver = %r.name, error = %e, path = %path.display(), "failed to queue an alert notification");
            }
        }
    }

    /// Deliver until `cancel`, then until the outboxes are empty or `deadline`; re-announce
    /// firing alerts (to Alertmanager every `resend_interval`, to webhooks after
    /// `repeat_interval`).
    pub async fn run(self: Arc<Self>, alerts: Arc<Alerts>, cancel: CancellationToken) {
        {
            let mut deliveries = self.deliveries.lock().await;
            let tasks = self.spawn_deliveries(&cancel);
            *deliveries = Deliveries::Running { cancel: cancel.clone(), tasks };
        }
        let mut period = self.settings.load().resend;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => self.resend(&alerts),
                _ = self.reconfigured.notified() => {}
            }
            let now = self.settings.load().resend;
            if now != period {
                // At once: what Alertmanager holds was sent to end 4 old periods after its
                // send, which a longer new period could outlast.
                period = now;
                tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
        }
        let deliveries = std::mem::replace(&mut *self.deliveries.lock().await, Deliveries::Closed);
        if let Deliveries::Running { tasks, .. } = deliveries {
            for (task, _) in tasks {
                let _ = task.await;
            }
        }
    }

    fn resend(&self, alerts: &Alerts) {
        let firing = alerts.firing();
        if firing.is_empty() {
            return;
        }
        let s = self.settings.load();
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let due: Vec<Alert> =
            firing.iter().filter(|a| now - a.notified_at >= s.repeat.as_nanos() as i64).cloned().collect();
        for r in &s.receivers {
            match &r.kind {
                // A backlog already re-announces: re-sends would only pile up behind it.
                Kind::Alertmanager if !queued(&r.outbox).is_empty() => {}
                Kind::Alertmanager => self.put(&s, r, &alertmanager_body(&firing, now, s.resend)),
                Kind::Webhook { .. } if !due.is_empty() => {
                    for body in webhook_bodies(&s.group_by, &r.name, &due) {
                        self.put(&s, r, &body);
                    }
                }
                Kind::Webhook { .. } => {}
            }
        }
        if !due.is_empty() {
            alerts.mark_notified(&due.iter().map(|a| a.fingerprint.clone()).collect::<Vec<_>>(), now);
        }
    }

    /// Post `r`'s outbox in order until shutdown (`cancel`, then the outbox empties) or a
    /// reload replaces it (`stop`, at once).
    async fn deliver(self: Arc<Self>, r: Arc<Receiver>, cancel: CancellationToken, stop: CancellationToken) {
        let mut backoff = Duration::from_secs(1);
        let queued_gauge = self.metrics.queued.with_label_values(&[&r.name]);
        // The outbox is listed again only once what was listed has gone out, not per file.
        let mut listed = std::collections::VecDeque::new();
        loop {
            if listed.is_empty() {
                listed = queued(&r.outbox).into();
                queued_gauge.set(listed.len() as i64);
            }
            let Some(path) = listed.front().cloned() else {
                if cancel.is_cancelled() {
                    return;
                }
                tokio::select! {
                    _ = r.wake.notified() => continue,
                    _ = cancel.cancelled() => continue,
                    _ = stop.cancelled() => return,
                }
            };
            let body = match std::fs::read(&path) {
                Ok(b) => Bytes::from(b),
                // Dropped meanwhile to make room (the outbox was full).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    listed.pop_front();
                    continue;
                }
                Err(e) => {
                    tracing::error!(receiver = %r.name, error = %e, path = %path.display(), "unreadable alert notification; dropped");
                    let _ = std::fs::remove_file(&path);
                    listed.pop_front();
                    queued_gauge.dec();
                    continue;
                }
            };
            let (target, headers) = match &r.kind {
                Kind::Alertmanager => ("/api/v2/alerts", Vec::new()),
                Kind::Webhook { secret } => ("", signature(secret.as_deref(), &body)),
            };
            let outcome = tokio::select! {
                o = r.client.post(target, body, &headers) => o,
                _ = stop.cancelled() => return,
            };
            // Whether this notification is finished with (sent, or refused for good).
            let done = match outcome {
                Ok(a) if (200..300).contains(&a.status) => {
                    self.metrics.sent.with_label_values(&[&r.name]).inc();
                    backoff = Duration::from_secs(1);
                    true
                }
                Ok(a) if (400..500).contains(&a.status) && a.status != 408 && a.status != 429 => {
                    self.metrics.failed.with_label_values(&[&r.name]).inc();
                    tracing::error!(receiver = %r.name, status = a.status, answer = %a.body,
                        "the receiver refused an alert notification; dropped (not retried)");
                    true
                }
                Ok(a) => {
                    self.metrics.failed.with_label_values(&[&r.name]).inc();
                    tracing::warn!(receiver = %r.name, status = a.status, answer = %a.body, retry_in = ?backoff,
                        "alert notification not accepted; will retry");
                    false
                }
                Err(e) => {
                    self.metrics.failed.with_label_values(&[&r.name]).inc();
                    tracing::warn!(receiver = %r.name, error = %e, retry_in = ?backoff, "alert notification not delivered; will retry");
                    false
                }
            };
            if done {
                let _ = std::fs::remove_file(&path);
                listed.pop_front();
                queued_gauge.dec();
            } else {
                if cancel.is_cancelled() {
                    // Shutting down: what is left stays queued for the next start.
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(self.settings.load().max_backoff);
            }
        }
    }
}

/// One body per group of `alerts` (by the `group_by` labels), in the shape of
/// Alertmanager's own webhook notifications.
fn webhook_bodies(group_by: &[String], receiver: &str, alerts: &[Alert]) -> Vec<Vec<u8>> {
    let mut groups: BTreeMap<Vec<(String, String)>, Vec<&Alert>> = BTreeMap::new();
    for a in alerts {
        let key = group_by.iter().filter_map(|l| a.labels.get(l).map(|v| (l.clone(), v.clone()))).collect();
        groups.entry(key).or_default().push(a);
    }
    groups
        .into_iter()
        .map(|(key, alerts)| {
            let firing = alerts.iter().any(|a| a.status == Status::Firing);
            let group_labels: BTreeMap<_, _> = key.into_iter().collect();
            let body = json!({
                "version": "4",
                "receiver": receiver,
                "status": if firing { "firing" } else { "resolved" },
                "groupLabels": group_labels,
                "groupKey": serde_json::to_string(&group_labels).unwrap_or_default(),
                "alerts": alerts.iter().map(|a| json!({
                    "status": a.status.as_str(),
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": rfc3339(a.starts_at),
                    "endsAt": a.ends_at.map(rfc3339),
                    "fingerprint": a.fingerprint,
                })).collect::<Vec<_>>(),
            });
            serde_json::to_vec(&body).unwrap_or_default()
        })
        .collect()
}

/// The settings `cfg` describes. A receiver with the outbox of one of `current` shares its
/// sequence numbers and wake-up.
fn settings(cfg: &AlertingConfig, dir: &Path, current: &[Arc<Receiver>]) -> Result<Settings, NotifyError> {
    let mut receivers = Vec::new();
    let all = cfg.alertmanagers.iter().map(|r| (r, true)).chain(cfg.webhooks.iter().map(|r| (r, false)));
    for (r, is_am) in all {
        let mut new = receiver(r, is_am, cfg.timeout, dir)?;
        if let Some(c) = current.iter().find(|c| c.outbox == new.outbox) {
            new.next = c.next.clone();
            new.wake = c.wake.clone();
        }
        receivers.push(Arc::new(new));
    }
    Ok(Settings {
        receivers,
        resend: cfg.resend_interval,
        repeat: cfg.repeat_interval,
        group_by: cfg.group_by.clone(),
        queue_max: cfg.queue_max,
        max_backoff: cfg.max_backoff,
    })
}

fn receiver(r: &ReceiverConfig, is_am: bool, timeout: Duration, dir: &Path) -> Result<Receiver, NotifyError> {
    let name = receiver_name(r).map_err(|reason| NotifyError::Config { name: r.url.clone(), reason })?;
    let client =
        Client::new(r, timeout).map_err(|source| NotifyError::Client { name: name.clone(), source })?;
    let kind = if is_am {
        Kind::Alertmanager
    } else {
        let secret = match &r.secret_file {
            Some(f) => Some(
                std::fs::read(f)
                    .map(|mut s| {
                        // A trailing newline from `echo secret > file` is not part of the key.
                        while s.last().is_some_and(|c| c.is_ascii_whitespace()) {
                            s.pop();
                        }
                        s
                    })
                    .map_err(|e| NotifyError::Config {
                        name: name.clone(),
                        reason: format!("cannot read secret_file {}: {e}", f.display()),
                    })?,
            ),
            None => None,
        };
        Kind::Webhook { secret }
    };
    let outbox = dir.join("outbox").join(outbox_name(&name));
    std::fs::create_dir_all(&outbox)
        .map_err(|source| NotifyError::Outbox { path: outbox.display().to_string(), source })?;
    let next = queued(&outbox)
        .last()
        .and_then(|p| p.file_stem()?.to_str()?.parse::<u64>().ok())
        .map_or(0, |n| n + 1);
    Ok(Receiver {
        name,
        kind,
        client,
        outbox,
        next: Arc::new(AtomicU64::new(next)),
        wake: Arc::new(Notify::new()),
    })
}

/// The outbox directory's name for a receiver name (`:` is not safe in every file system):
/// two receivers whose names map to one are refused by validation.
pub fn outbox_name(receiver: &str) -> String {
    receiver.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}

/// The outbox's notification files, oldest first.
fn queued(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Alertmanager's `postableAlerts`: a firing alert is said to end `4 × resend` from now
/// unless re-sent (as Prometheus does), a resolved one at its end.
fn alertmanager_body(alerts: &[Alert], now: i64, resend: Duration) -> Vec<u8> {
    let horizon = now.saturating_add(4 * resend.as_nanos().min(i64::MAX as u128 / 4) as i64);
    let list: Vec<_> = alerts
        .iter()
        .map(|a| {
            json!({
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": rfc3339(a.starts_at),
                "endsAt": rfc3339(a.ends_at.unwrap_or(horizon)),
            })
        })
        .collect();
    serde_json::to_vec(&list).unwrap_or_default()
}

/// `X-Logwarden-Signature: sha256=<hex of HMAC-SHA256(secret, body)>`.
fn signature(secret: Option<&[u8]>, body: &[u8]) -> Vec<(&'static str, String)> {
    let Some(secret) = secret else { return Vec::new() };
    let hex: String = crate::crypto::hmac_sha256(secret, body).iter().map(|b| format!("{b:02x}")).collect();
    vec![("x-logwarden-signature", format!("sha256={hex}"))]
}
