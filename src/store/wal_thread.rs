//! The `lw-wal` thread: appends what the batcher seals to the current WAL generation with one
//! fsync per round (group commit), then publishes it to queries and rules and acknowledges it;
//! starts new generations and hands full ones to the flush thread.
//!
//! A write that fails (a full disk, an I/O error) is cut back to the last fsync before anything
//! else is written, so no acknowledged record ever sits behind a damaged one; if even that
//! fails, the generation is abandoned and the next write starts a new one. Groups with a sender
//! waiting (HTTP) are refused at once: the sender gets 503 and sends again. Groups without one
//! (stream listeners, whose protocols have no acknowledgement) are kept with their share of the
//! memory budget and written again every [`RETRY`] until it works; while any is kept, stream
//! listeners read nothing more (`paused`: TCP backpressure) instead of dropping what they read.

use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use tokio::sync::{mpsc, oneshot, watch};

use super::failures::Failures;
use super::pipeline::{Ack, Reserved};
use super::wal::{self, WalError, WalWriter};
use super::{MemBatch, Store, StoreError};
use crate::seal::Record;

/// How often data kept after a failed write is tried again when nothing new arrives.
const RETRY: Duration = Duration::from_millis(500);
/// While data waits for the disk, how often the queue is checked for new work.
const POLL: Duration = Duration::from_millis(10);
/// Repeated failures of one kind are logged at most this often (the rest are counted).
const LOG_EVERY: Duration = Duration::from_secs(30);

pub(super) enum WalCmd {
    Append {
        batch: RecordBatch,
        acks: Vec<Ack>,
        permits: Vec<Reserved>,
    },
    /// Seal the current generation (if it holds anything) and hand it to the flusher.
    Rotate,
    Probe(oneshot::Sender<()>),
}

/// One sealed group: its rows, who waits for them, and their share of the memory budget.
struct Group {
    batch: RecordBatch,
    acks: Vec<Ack>,
    _permits: Vec<Reserved>,
}

pub(super) struct WalThread {
    store: Store,
    dir: PathBuf,
    /// None after a generation was abandoned (or could not be started): the next write starts one.
    writer: Option<WalWriter>,
    /// The generation written to last; its data is sealed when the next one starts.
    generation: u64,
    /// Every attempt takes a new number, so a file a failed attempt could not remove never
    /// stands in the way of the next one.
    next_generation: u64,
    /// Arrow bytes written to `generation`.
    gen_bytes: usize,
    flush_bytes: usize,
    flush_tx: std_mpsc::SyncSender<u64>,
    tap: Option<crate::stream::Tap>,
    /// Stream data refused by a failed write, written again before anything newer.
    held: Vec<Group>,
    /// True while `held` is not empty: stream listeners wait before taking more.
    paused: watch::Sender<bool>,
    /// When the last write failed, and why; cleared by a write that works.
    last_failure: Option<(Instant, std::sync::Arc<StoreError>)>,
    /// How many `Append`s have been written (or refused, or kept): the batcher seals what
    /// waits for an answer once this catches up with what it handed over.
    written: watch::Sender<u64>,
    failures: Failures,
    /// Failed rotations (logged; writing goes on in the current generation).
    rotate_failures: Failures,
}

impl WalThread {
    /// The thread's state, with the first generation started if the disk allows it (a full disk
    /// at start is reported and retried at the first write).
    pub(super) fn new(
        store: Store,
        first_generation: u64,
        flush_bytes: usize,
        flush_tx: std_mpsc::SyncSender<u64>,
        tap: Option<crate::stream::Tap>,
        paused: watch::Sender<bool>,
        written: watch::Sender<u64>,
    ) -> Result<WalThread, StoreError> {
        let dir = store.wal_dir();
        let writer = match WalWriter::create(&dir, first_generation) {
            Ok(w) => Some(w),
            Err(e) if e.is_disk_full() => {
                tracing::error!(error = %e, "the disk under data_dir is full: no WAL generation could be started; \
                    ingest is refused (HTTP 503) or held back (stream listeners) until there is room");
                None
            }
            Err(e) => return Err(e.into()),
        };
        let thread = WalThread {
            store,
            dir,
            writer,
            generation: first_generation,
            next_generation: first_generation + 1,
            gen_bytes: 0,
            flush_bytes,
            flush_tx,
            tap,
            held: Vec::new(),
            paused,
            last_failure: None,
            written,
            failures: Failures::new(LOG_EVERY),
            rotate_failures: Failures::new(LOG_EVERY),
        };
        thread.set_writable(thread.writer.is_some());
        Ok(thread)
    }

    pub(super) fn run(mut self, mut rx: mpsc::Receiver<WalCmd>) {
        while let Some(cmds) = self.next(&mut rx) {
            #[cfg(debug_assertions)]
            test_stall();
            let mut rotate = false;
            let mut groups = std::mem::take(&mut self.held);
            // Data held after a failed write is tried again every RETRY, not whenever a new
            // group comes: groups someone waits for are sealed as soon as this thread is free,
            // and each attempt would write all that is held again.
            let retry_later = match &self.last_failure {
                Some((at, e)) if !groups.is_empty() && at.elapsed() < RETRY => Some(e.clone()),
                _ => None,
            };
            let mut probes = Vec::new();
            let mut appended = 0u64;
            for c in cmds {
                match c {
                    WalCmd::Rotate => rotate = true,
                    WalCmd::Probe(p) => probes.push(p),
                    WalCmd::Append { batch, acks, permits } => {
                        appended += 1;
                        let g = Group { batch, acks, _permits: permits };
                        match &retry_later {
                            // Refused as the write would refuse it: the sender sends again.
                            Some(e) if !g.acks.is_empty() => {
                                for a in g.acks {
                                    let _ = a.send(Err(e.clone()));
                                }
                            }
                            _ => groups.push(g),
                        }
                    }
                }
            }
            if retry_later.is_some() {
                self.held = groups;
            } else if !groups.is_empty() {
                self.write(groups);
            }
            if appended > 0 {
                self.written.send_modify(|n| *n += appended);
            }
            for p in probes {
                let _ = p.send(());
            }
            if (rotate && self.gen_bytes > 0) || self.gen_bytes >= self.flush_bytes {
                self.rotate();
            }
        }
        if !self.held.is_empty() {
            // Shutdown: one last try for what stream listeners handed over.
            let held = std::mem::take(&mut self.held);
            self.write(held);
            let rows: usize = self.held.iter().map(|g| g.batch.num_rows()).sum();
            if rows > 0 {
                tracing::error!(
                    events = rows,
                    "stopping with events from stream listeners that could not be written \
                    (the disk under data_dir is still full or failing); they are lost"
                );
            }
        }
        tracing::debug!(generation = self.generation, "WAL writer stopped");
    }

    /// Everything queued, waiting for the first command; `None` once the batcher has stopped.
    /// While data waits for the disk, returns after [`RETRY`] even with nothing new.
    fn next(&self, rx: &mut mpsc::Receiver<WalCmd>) -> Option<Vec<WalCmd>> {
        let first = if self.held.is_empty() {
            rx.blocking_recv()?
        } else {
            let deadline = Instant::now() + RETRY;
            loop {
                match rx.try_recv() {
                    Ok(c) => break c,
                    Err(mpsc::error::TryRecvError::Disconnected) => return None,
                    Err(mpsc::error::TryRecvError::Empty) if Instant::now() >= deadline => {
                        return Some(Vec::new());
                    }
                    Err(mpsc::error::TryRecvError::Empty) => std::thread::sleep(POLL),
                }
            }
        };
        let mut cmds = vec![first];
        while let Ok(c) = rx.try_recv() {
            cmds.push(c);
        }
        Some(cmds)
    }

    /// Write `groups` with one fsync; then publish and acknowledge them, or refuse or keep them.
    fn write(&mut self, groups: Vec<Group>) {
        let started = Instant::now();
        let batches: Vec<RecordBatch> = groups.iter().map(|g| g.batch.clone()).collect();
        let result = self.append(&batches);
        if let Some(m) = self.store.metrics() {
            m.batch_flush_seconds.observe(started.elapsed().as_secs_f64());
        }
        match result {
            Ok(written) => {
                self.last_failure = None;
                self.recovered();
                let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                self.gen_bytes += batches.iter().map(RecordBatch::get_array_memory_size).sum::<usize>();
                if let Some(tap) = &self.tap {
                    tap.send(&batches);
                }
                self.store.publish(self.generation, batches.into_iter().map(MemBatch::new).collect());
                if let Some(m) = self.store.metrics() {
                    m.events_durable.inc_by(rows as u64);
                    m.wal_bytes.add(i64::try_from(written).unwrap_or(i64::MAX));
                }
                for g in groups {
                    for a in g.acks {
                        let _ = a.send(Ok(()));
                    }
                }
            }
            Err(e) => {
                // Encoding failures are not the disk's: trying again would fail the same way.
                let keep = e.is_transient();
                let e = std::sync::Arc::new(StoreError::from(e));
                self.last_failure = Some((Instant::now(), e.clone()));
                let mut refused = 0;
                for g in groups {
                    if keep && g.acks.is_empty() {
                        self.held.push(g);
                    } else {
                        refused += g.batch.num_rows();
                        for a in g.acks {
                            let _ = a.send(Err(e.clone()));
                        }
                    }
                }
                self.failed(&e, refused);
            }
        }
        if let Some(m) = self.store.metrics() {
            m.wal_retry_events.set(self.held.iter().map(|g| g.batch.num_rows() as i64).sum());
        }
        let pause = !self.held.is_empty();
        self.paused.send_if_modified(|p| std::mem::replace(p, pause) != pause);
    }

    /// Append and fsync; on failure cut the file back, or abandon it if that fails too. Once
    /// durable, the group is chained. Returns the bytes added to the WAL.
    fn append(&mut self, batches: &[RecordBatch]) -> Result<u64, WalError> {
        if let Some((bytes, limit)) = self.store.upload_backlog_full() {
            return Err(WalError::UploadBacklog { bytes, limit });
        }
        let payloads = batches.iter().map(wal::encode).collect::<Result<Vec<_>, _>>()?;
        if self.writer.is_none() {
            self.start_generation()?;
        }
        let Some(w) = self.writer.as_mut() else { return Err(WalError::NoGeneration) };
        let before = w.size();
        let metrics = self.store.metrics();
        let result = w.append(&payloads).and_then(|appended| {
            let t = Instant::now();
            w.sync()?;
            if let Some(m) = metrics {
                m.wal_fsync_seconds.observe(t.elapsed().as_secs_f64());
            }
            Ok(appended)
        });
        match result {
            Ok(a) => {
                if let Some(chain) = self.store.chain() {
                    chain.record(Record::Append {
                        object: w.object(),
                        offset: a.offset,
                        len: a.len,
                        sha256: a.sha256,
                        recovered: false,
                    });
                }
                Ok(w.size() - before)
            }
            Err(e) => {
                if let Err(rollback) = w.rollback() {
                    tracing::error!(error = %rollback, generation = w.generation(),
                        "a failed WAL write could not be cut back; this generation is closed and the next write starts a new one");
                    if let Some(m) = self.store.metrics() {
                        m.storage_errors.with_label_values(&["wal_rollback"]).inc();
                    }
                    self.writer = None;
                }
                Err(e)
            }
        }
    }

    /// Start the next generation; the one before, if it holds data, goes to the flush thread.
    fn start_generation(&mut self) -> Result<(), WalError> {
        let generation = self.next_generation;
        self.next_generation += 1;
        let writer = WalWriter::create(&self.dir, generation)?;
        let (sealed, had_data) = (self.generation, self.gen_bytes > 0);
        self.writer = Some(writer);
        self.generation = generation;
        self.gen_bytes = 0;
        // Blocks while the flusher is behind by a whole generation: backpressure.
        if had_data && self.flush_tx.send(sealed).is_err() {
            tracing::error!("flush thread stopped; WAL generations will be replayed at next start");
        }
        Ok(())
    }

    fn rotate(&mut self) {
        if let Err(e) = self.start_generation() {
            if let Some(m) = self.store.metrics() {
                m.storage_errors.with_label_values(&["wal_create"]).inc();
            }
            if let Some(r) = self.rotate_failures.failed() {
                tracing::error!(error = %e, generation = self.generation, repeated = r.repeated,
                    "failed to start a new WAL generation; writing on in the current one, which is flushed to Parquet once a new one starts");
            }
        }
    }

    fn failed(&mut self, e: &StoreError, refused: usize) {
        self.set_writable(false);
        if let Some(m) = self.store.metrics() {
            m.storage_errors.with_label_values(&["wal"]).inc();
        }
        if let Some(r) = self.failures.failed() {
            let repeated = r.repeated;
            let waiting: usize = self.held.iter().map(|g| g.batch.num_rows()).sum();
            tracing::error!(error = %e, refused_events = refused, waiting_events = waiting, repeated,
                "WAL write refused: HTTP senders get 503 and send again; events stream listeners read wait \
                 in memory, and those listeners read nothing more until they are written (once the disk \
                 under data_dir has room, or the upload backlog is below its limit)");
        }
    }

    fn recovered(&mut self) {
        if let Some(r) = self.failures.recovered() {
            tracing::warn!(after = ?r.failing_for, failed_writes = r.failures, "WAL writes succeed again");
        }
        self.set_writable(true);
    }

    fn set_writable(&self, ok: bool) {
        if let Some(m) = self.store.metrics() {
            m.storage_writable.set(i64::from(ok));
        }
    }
}

/// A failpoint for the watchdog test, in debug builds only: while the file named by
/// `LOGWARDEN_TEST_STALL_WAL` exists, the WAL thread stalls as a hung disk would.
#[cfg(debug_assertions)]
fn test_stall() {
    let Some(path) = std::env::var_os("LOGWARDEN_TEST_STALL_WAL") else { return };
    while std::path::Path::new(&path).exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
}
