//! Continuous SQL rules over the arriving events.
//!
//! The WAL thread hands every durable group of batches to [`Tap::send`] (never blocking: a
//! full queue drops the group for detection only, counted); the `lw-rules` thread assigns each
//! event to its rule windows by its own `timestamp`, runs the rules' per-batch plans, and when
//! the watermark passes a window's end runs the rule's final step and hands the rows to
//! [`Sink`]: the `rule_results` table and the alert manager.

pub mod feed;
pub mod rule;
pub mod window;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{BooleanArray, RecordBatch};
use tokio::sync::mpsc;

pub use rule::{Rule, RuleError};
use window::{COMPACT_AT, Clock, Windows};

use crate::config::{Config, Problem, RuleConfig};

/// How far ahead of the wall clock an event's timestamp may be and still count in rules.
const MAX_AHEAD_NS: i64 = 5 * 60 * 1_000_000_000;

/// A window's output, as the rule's sinks see it.
pub struct WindowOutput<'a> {
    pub rule: &'a Rule,
    /// `[start, end)` in ns of event time.
    pub start: i64,
    pub end: i64,
    /// Events the window held.
    pub events: u64,
    pub batches: &'a [RecordBatch],
    /// Per batch, which rows are alerts.
    pub alerting: &'a [BooleanArray],
    /// Some events the rule's WHERE selected (`timestamp`, `host`, `app`, `severity`,
    /// `message`), for alert annotations.
    pub samples: &'a [RecordBatch],
    /// When the watermark passed the window's end.
    pub closed_at: Instant,
}

/// Where window outputs go.
pub trait Sink: Send + 'static {
    fn window_closed(&mut self, out: &WindowOutput<'_>);
    /// A rule stopped (taken out of the config at a reload): what it raised is over.
    fn rule_removed(&mut self, _rule: &str) {}
    /// A reload brought a new `[detect]`, applied together with the rule set it came with.
    fn detect_changed(&mut self, _cfg: &crate::config::DetectConfig) {}
    /// The engine is stopping: save what is kept in memory.
    fn stopped(&mut self) {}
}

#[derive(Clone)]
pub struct RuleMetrics {
    pub late: prometheus::IntCounterVec,
    pub windows: prometheus::IntCounterVec,
    pub errors: prometheus::IntCounterVec,
    pub evaluation: prometheus::Histogram,
    pub dropped: prometheus::IntCounter,
}

impl RuleMetrics {
    /// Instruments on no registry (tests).
    #[cfg(test)]
    pub fn unregistered() -> RuleMetrics {
        let v = |n: &str| {
            prometheus::IntCounterVec::new(prometheus::Opts::new(n, n), &["rule"])
                .unwrap_or_else(|e| panic!("{e}"))
        };
        RuleMetrics {
            late: v("late"),
            windows: v("windows"),
            errors: v("errors"),
            evaluation: prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("e", "e"))
                .unwrap_or_else(|e| panic!("{e}")),
            dropped: prometheus::IntCounter::new("d", "d").unwrap_or_else(|e| panic!("{e}")),
        }
    }
}

/// Compile every rule of `config`; each failure is a problem at `rules[i].<key>` naming the rule.
pub fn compile_rules(rules: &[RuleConfig]) -> (Vec<Rule>, Vec<Problem>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, cfg) in rules.iter().enumerate() {
        match futures::executor::block_on(Rule::compile(cfg)) {
            Ok(r) => out.push(r),
            Err(e) => {
                let msg = e.to_string();
                let key = if msg.starts_with("alert_when:") { "alert_when" } else { "sql" };
                let msg = msg.strip_prefix("alert_when: ").unwrap_or(&msg).to_owned();
                problems
                    .push(Problem::new(format!("rules[{i}].{key}"), format!("rule \"{}\": {msg}", cfg.name)));
            }
        }
    }
    (out, problems)
}

/// The problems of the rules in `config` (for `validate`).
pub fn check(config: &Config) -> Vec<Problem> {
    compile_rules(&config.rules).1
}

/// Events waiting for the rules at most; past it the WAL thread's groups are stored but not
/// evaluated (counted in `logwarden_rule_dropped_events_total`). Bounded by events, not by
/// groups: with group commit a fast disk writes thousands of small groups a second. The
/// batches are the ones the memtable holds, so waiting costs little memory of its own.
const MAX_QUEUED_ROWS: usize = 1 << 20;

/// The WAL thread's side of the rules' queue.
#[derive(Clone)]
pub struct Tap {
    tx: mpsc::UnboundedSender<Vec<RecordBatch>>,
    /// Rows sent and not yet taken by the rules thread.
    queued: Arc<std::sync::atomic::AtomicUsize>,
    dropped: prometheus::IntCounter,
    /// When a drop was last logged (at most one warning per 10 s; the metric counts all).
    warned: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl Tap {
    pub fn send(&self, batches: &[RecordBatch]) {
        use std::sync::atomic::Ordering;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let room = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q + rows <= MAX_QUEUED_ROWS).then_some(q + rows)
            })
            .is_ok();
        if room && self.tx.send(batches.to_vec()).is_ok() {
            return;
        }
        if room {
            // The rules thread is gone: nothing to evaluate with.
            self.queued.fetch_sub(rows, Ordering::AcqRel);
            return;
        }
        self.dropped.inc_by(rows as u64);
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            *warned = Some(Instant::now());
            tracing::warn!(
                events = rows,
                total = self.dropped.get(),
                "rule evaluation is behind; events are stored but not evaluated (logwarden_rule_dropped_events_total)"
            );
        }
    }
}

/// The rules thread's side of the queue.
struct Queue {
    rx: mpsc::UnboundedReceiver<Vec<RecordBatch>>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

impl Queue {
    async fn recv(&mut self) -> Option<Vec<RecordBatch>> {
        let got = self.rx.recv().await?;
        let rows: usize = got.iter().map(RecordBatch::num_rows).sum();
        self.queued.fetch_sub(rows, std::sync::atomic::Ordering::AcqRel);
        Some(got)
    }
}

pub struct Options {
    pub allowed_lateness: Duration,
    pub idle: Duration,
}

/// The rules evaluate what the WAL wrote over this long at once, or [`GATHER_ROWS`] as soon
/// as that much has come. Each rule runs a plan per batch, whose fixed cost dwarfs a small
/// group's rows: with a fast disk every RELP window or HTTP request can be a WAL group of its
/// own, and evaluating each alone made this thread the daemon's busiest. Windows are seconds
/// to hours long; alerts wait at most this much longer.
const GATHER: Duration = Duration::from_millis(20);
const GATHER_ROWS: usize = 64 * 1024;
/// ... or this much Arrow memory (the copy combining makes stays small).
const GATHER_BYTES: usize = 32 << 20;

/// WAL groups gathered for the rules' next step (they share the groups' buffers: no copy).
#[derive(Default)]
struct Gathered {
    batches: Vec<RecordBatch>,
    rows: usize,
    bytes: usize,
    /// When the first of them came.
    since: Option<tokio::time::Instant>,
}

impl Gathered {
    fn add(&mut self, batches: Vec<RecordBatch>) {
        self.since.get_or_insert_with(tokio::time::Instant::now);
        self.rows += batches.iter().map(RecordBatch::num_rows).sum::<usize>();
        self.bytes += batches.iter().map(RecordBatch::get_array_memory_size).sum::<usize>();
        self.batches.extend(batches);
    }

    fn full(&self) -> bool {
        self.rows >= GATHER_ROWS || self.bytes >= GATHER_BYTES
    }

    /// Everything gathered, as one batch when it can be.
    fn take(&mut self) -> Vec<RecordBatch> {
        let all = std::mem::take(self).batches;
        if all.len() < 2 {
            return all;
        }
        match crate::batch::combine(&all) {
            Ok(one) => vec![one],
            // Text past Arrow's 2 GiB offsets, say: the rules see each batch instead.
            Err(e) => {
                tracing::debug!(error = %e, "WAL groups not combined for the rules");
                all
            }
        }
    }
}

struct Running {
    rule: Rule,
    config: RuleConfig,
    windows: Windows,
}

pub struct Engine {
    rules: Vec<Running>,
    clock: Clock,
    sink: Box<dyn Sink>,
    metrics: RuleMetrics,
}

/// A new rule set, by name: `None` keeps the running version of a rule that failed to plan.
/// An unchanged rule keeps its open windows; rules not named stop.
pub type RuleSet = Vec<(String, Option<(RuleConfig, Rule)>)>;

/// What a reload hands the engine: the rule set, and the `[detect]` settings of the built-in
/// detectors (whose rules are in the set), applied at the same point of the stream.
pub struct RuleUpdate {
    pub rules: RuleSet,
    pub detect: crate::config::DetectConfig,
}
pub type Reload = mpsc::Sender<RuleUpdate>;

fn as_set(rules: Vec<(RuleConfig, Rule)>) -> RuleSet {
    rules.into_iter().map(|(c, r)| (c.name.clone(), Some((c, r)))).collect()
}

impl Engine {
    /// Start the `lw-rules` thread; it ends when every [`Tap`] is dropped.
    pub fn start(
        rules: Vec<(RuleConfig, Rule)>,
        opts: Options,
        sink: Box<dyn Sink>,
        metrics: RuleMetrics,
    ) -> std::io::Result<(Tap, Reload, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let rx = Queue { rx, queued: queued.clone() };
        let (reload_tx, reload_rx) = mpsc::channel(4);
        let tap = Tap { tx, queued, dropped: metrics.dropped.clone(), warned: Arc::default() };
        let mut engine =
            Engine { rules: Vec::new(), clock: Clock::new(opts.allowed_lateness, opts.idle), sink, metrics };
        engine.replace(as_set(rules));
        let handle = std::thread::Builder::new().name("lw-rules".into()).spawn(move || {
            match tokio::runtime::Builder::new_current_thread().enable_time().build() {
                Ok(rt) => rt.block_on(engine.run(rx, reload_rx)),
                Err(e) => {
                    tracing::error!(error = %e, "failed to start the rule thread; rules are not evaluated")
                }
            }
        })?;
        Ok((tap, reload_tx, handle))
    }

    /// An engine driven by the caller (tests): feed with [`Self::ingest`], close with
    /// [`Self::close_due`].
    pub fn new(
        rules: Vec<(RuleConfig, Rule)>,
        opts: Options,
        sink: Box<dyn Sink>,
        metrics: RuleMetrics,
    ) -> Self {
        let mut engine =
            Engine { rules: Vec::new(), clock: Clock::new(opts.allowed_lateness, opts.idle), sink, metrics };
        engine.replace(as_set(rules));
        engine
    }

    fn replace(&mut self, rules: RuleSet) {
        let mut old: HashMap<String, Running> =
            self.rules.drain(..).map(|r| (r.config.name.clone(), r)).collect();
        for (name, new) in rules {
            match (new, old.remove(&name)) {
                (Some((config, rule)), prev) => {
                    let windows = match prev {
                        Some(r) if r.config == config => r.windows,
                        _ => Windows::new(rule.window, rule.every),
                    };
                    self.rules.push(Running { rule, config, windows });
                }
                (None, Some(prev)) => self.rules.push(prev),
                (None, None) => {}
            }
        }
        for name in old.keys() {
            self.sink.rule_removed(name);
        }
    }

    async fn run(mut self, mut rx: Queue, mut reload: mpsc::Receiver<RuleUpdate>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut gathered = Gathered::default();
        loop {
            let due = gathered.since.map(|t| t + GATHER);
            tokio::select! {
                got = rx.recv() => match got {
                    Some(batches) => {
                        gathered.add(batches);
                        if gathered.full() {
                            self.ingest(&gathered.take()).await;
                            self.close_due(Instant::now()).await;
                        }
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                    self.ingest(&gathered.take()).await;
                    self.close_due(Instant::now()).await;
                }
                _ = tick.tick() => {
                    // Nothing gathered may miss the window it belongs to.
                    self.ingest(&gathered.take()).await;
                    self.close_due(Instant::now()).await;
                }
                Some(update) = reload.recv() => {
                    // The rules that were running see what came before the reload.
                    self.ingest(&gathered.take()).await;
                    self.replace(update.rules);
                    self.sink.detect_changed(&update.detect);
                    let names: Vec<&str> = self.rules.iter().map(|r| r.config.name.as_str()).collect();
                    tracing::info!(rules = ?names, "rules reloaded");
                }
            }
        }
        self.ingest(&gathered.take()).await;
        self.stop();
    }

    /// The engine stops (the end of `run`; tests call it to stop as the daemon does).
    pub fn stop(&mut self) {
        self.sink.stopped();
    }

    pub async fn ingest(&mut self, batches: &[RecordBatch]) {
        let now = Instant::now();
        let horizon =
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX).saturating_add(MAX_AHEAD_NS);
        for batch in batches {
            // One sender with its clock years ahead must not close everyone's windows: events
            // stamped further ahead of the wall clock than MAX_AHEAD are left out of the rules
            // (stored all the same) and counted with the late ones.
            let (batch, ahead) = window::before(batch, horizon);
            self.clock.observe(&batch, now);
            for r in &mut self.rules {
                let (parts, late) = r.windows.assign(&batch);
                if late + ahead > 0 {
                    self.metrics.late.with_label_values(&[&r.config.name]).inc_by(late + ahead);
                }
                for (pane, rows) in parts {
                    let n = rows.num_rows() as u64;
                    match r.rule.per_batch(rows.clone()).await {
                        Ok(out) => {
                            // Samples cost a second pass of the WHERE: taken only while the
                            // pane needs them and the batch had matches (or, for an aggregate
                            // without groups, which always has a row, from its first batches).
                            let p = r.windows.pane(pane);
                            let want = window::SAMPLES.saturating_sub(p.sampled);
                            let matched =
                                if r.rule.always_one_row() { p.sample_tries < 8 } else { !out.is_empty() };
                            if want > 0 && matched {
                                p.sample_tries += 1;
                                let samples = r.rule.sample(rows, want).await;
                                let p = r.windows.pane(pane);
                                p.sampled += samples.iter().map(RecordBatch::num_rows).sum::<usize>();
                                p.samples.extend(samples);
                            }
                            let p = r.windows.pane(pane);
                            p.parts.extend(out);
                            p.events += n;
                            if p.parts.len() >= COMPACT_AT {
                                let parts = std::mem::take(&mut p.parts);
                                match r.rule.compact(parts).await {
                                    Ok(c) => r.windows.pane(pane).parts = c,
                                    Err(e) => {
                                        error(&self.metrics, &r.config.name, "fold a window's states", &e)
                                    }
                                }
                            }
                        }
                        Err(e) => error(&self.metrics, &r.config.name, "evaluate a batch", &e),
                    }
                }
            }
        }
    }

    pub async fn close_due(&mut self, now: Instant) {
        let Some(watermark) = self.clock.watermark(now) else { return };
        for r in &mut self.rules {
            while let Some(closed) = r.windows.close_next(watermark) {
                let started = Instant::now();
                self.metrics.windows.with_label_values(&[&r.config.name]).inc();
                let batches = match r.rule.finish(closed.parts).await {
                    Ok(b) => b,
                    Err(e) => {
                        error(&self.metrics, &r.config.name, "finish a window", &e);
                        continue;
                    }
                };
                let alerting = match batches.iter().map(|b| r.rule.alerting(b)).collect::<Result<Vec<_>, _>>()
                {
                    Ok(a) => a,
                    Err(e) => {
                        error(&self.metrics, &r.config.name, "evaluate alert_when", &e);
                        continue;
                    }
                };
                self.sink.window_closed(&WindowOutput {
                    rule: &r.rule,
                    start: closed.start,
                    end: closed.end,
                    events: closed.events,
                    batches: &batches,
                    alerting: &alerting,
                    samples: &closed.samples,
                    closed_at: now,
                });
                self.metrics.evaluation.observe(started.elapsed().as_secs_f64());
            }
        }
    }
}

fn error(metrics: &RuleMetrics, rule: &str, what: &str, e: &datafusion::error::DataFusionError) {
    metrics.errors.with_label_values(&[rule]).inc();
    tracing::error!(rule, error = %e.strip_backtrace(), "failed to {what}");
}

#[cfg(test)]
mod tests;
