//! The write path: listeners hand finished batches to an [`Appender`]; a batcher task groups
//! them into batches of `batch.rows` or `batch.linger`; the WAL thread appends each group and
//! fsyncs once (group commit), publishes the batches to queries and acknowledges them; the flush
//! thread writes full WAL generations out as Parquet segments and applies retention.
//!
//! A batch whose sender waits for its answer (HTTP, OTLP, RELP) does not linger: the batcher
//! seals it as soon as the WAL thread has written every group it was handed, together with
//! whatever arrived while that write and its fsync went on. A lone request is durable after one
//! fsync; under load the groups grow with the fsync's latency instead of with `batch.linger`.
//!
//! Memory is bounded by a byte budget: an appender waits for budget (stream listeners and RELP,
//! which turns into TCP backpressure) or fails fast (HTTP, which answers 503). Budget is returned
//! when the batch is durable. The flush queue holds one generation, so a slow disk stalls the WAL
//! thread, then the batcher, then the listeners: nothing is dropped. A full disk is handled in
//! `wal_thread` (failed writes cut back; HTTP refused, stream data kept) and `flush` (segment
//! writes retried).

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use arrow::array::RecordBatch;
use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use super::flush::flush_loop;
use super::wal_thread::{WalCmd, WalThread};
use super::{Store, StoreError};
use crate::batch;

/// Budget unit: permits count KiB, so a u32 of permits covers any sane budget.
const UNIT: usize = 1024;

#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub batch_rows: usize,
    pub batch_linger: Duration,
    pub max_pending_bytes: usize,
    pub flush_interval: Duration,
    pub flush_bytes: usize,
    pub row_group_rows: usize,
    pub zstd_level: i32,
    pub retention_max_age: Option<Duration>,
    pub retention_max_bytes: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("storage is saturated; retry later")]
    Saturated,
    #[error("the storage pipeline has stopped")]
    Closed,
}

pub(super) type Ack = oneshot::Sender<Result<(), Arc<StoreError>>>;

struct Submission {
    batch: RecordBatch,
    ack: Option<Ack>,
    reserved: Reserved,
}

/// What the batcher task receives: batches, and probes that prove the pipeline moves.
enum Input {
    Batch(Submission),
    /// Answered by the WAL thread once the probe has travelled the same queues as a batch.
    Probe(oneshot::Sender<()>),
}

/// A batch's share of the memory budget, held until the batch is durable; it keeps
/// `logwarden_pending_bytes` in step as it is taken and released.
pub(super) struct Reserved {
    _permit: OwnedSemaphorePermit,
    gauge: Option<IntGauge>,
    bytes: i64,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if let Some(g) = &self.gauge {
            g.sub(self.bytes);
        }
    }
}

/// Hands batches to the pipeline. Clone one per connection.
#[derive(Clone)]
pub struct Appender {
    tx: mpsc::Sender<Input>,
    budget: Arc<Semaphore>,
    max_permits: u32,
    store: Store,
    /// True while stream data waits for the disk (see `wal_thread`).
    paused: watch::Receiver<bool>,
}

/// Resolves when the batch is in the WAL and fsynced.
pub struct Durable(oneshot::Receiver<Result<(), Arc<StoreError>>>);

impl Durable {
    pub async fn wait(self) -> Result<(), Arc<StoreError>> {
        self.0.await.unwrap_or_else(|_| Err(Arc::new(StoreError::Stopped)))
    }
}

impl Appender {
    fn permits(&self, batch: &RecordBatch) -> u32 {
        let kib = batch.get_array_memory_size() / UNIT + 1;
        (kib.min(u32::MAX as usize) as u32).min(self.max_permits)
    }

    fn reserve(&self, permit: OwnedSemaphorePermit) -> Reserved {
        let bytes = (permit.num_permits() * UNIT) as i64;
        let gauge = self.store.metrics().map(|m| m.pending_bytes.clone());
        if let Some(g) = &gauge {
            g.add(bytes);
        }
        Reserved { _permit: permit, gauge, bytes }
    }

    /// Queue a batch, waiting while the pipeline is over its memory budget or while earlier
    /// batches wait for a disk that refused them (stream listeners: TCP backpressure).
    pub async fn append(&self, batch: RecordBatch) -> Result<(), AppendError> {
        if self.paused.clone().wait_for(|p| !*p).await.is_err() {
            return Err(AppendError::Closed);
        }
        let n = self.permits(&batch);
        let permit = self.budget.clone().acquire_many_owned(n).await.map_err(|_| AppendError::Closed)?;
        let reserved = self.reserve(permit);
        self.tx
            .send(Input::Batch(Submission { batch, ack: None, reserved }))
            .await
            .map_err(|_| AppendError::Closed)
    }

    /// Queue a batch, waiting as [`Appender::append`] does, and get a handle that resolves once
    /// it is durable (RELP: its frames are answered then). Like every batch with a handle, it
    /// is sealed as soon as the WAL thread is free (see `batch_loop`).
    pub async fn append_durable(&self, batch: RecordBatch) -> Result<Durable, AppendError> {
        if self.paused.clone().wait_for(|p| !*p).await.is_err() {
            return Err(AppendError::Closed);
        }
        let n = self.permits(&batch);
        let permit = self.budget.clone().acquire_many_owned(n).await.map_err(|_| AppendError::Closed)?;
        let reserved = self.reserve(permit);
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Input::Batch(Submission { batch, ack: Some(tx), reserved }))
            .await
            .map_err(|_| AppendError::Closed)?;
        Ok(Durable(rx))
    }

    /// Queue a batch and get a handle that resolves once it is durable; fails at once with
    /// `Saturated` when the pipeline is over its memory budget or its queue is full.
    pub fn try_append_durable(&self, batch: RecordBatch) -> Result<Durable, AppendError> {
        let n = self.permits(&batch);
        let permit = self.budget.clone().try_acquire_many_owned(n).map_err(|e| match e {
            tokio::sync::TryAcquireError::Closed => AppendError::Closed,
            tokio::sync::TryAcquireError::NoPermits => AppendError::Saturated,
        })?;
        let reserved = self.reserve(permit);
        let (tx, rx) = oneshot::channel();
        self.tx.try_send(Input::Batch(Submission { batch, ack: Some(tx), reserved })).map_err(
            |e| match e {
                mpsc::error::TrySendError::Full(_) => AppendError::Saturated,
                mpsc::error::TrySendError::Closed(_) => AppendError::Closed,
            },
        )?;
        Ok(Durable(rx))
    }

    /// Send a probe through the batcher and the WAL thread, the path every batch takes; it
    /// resolves when the WAL thread has seen it. A pipeline wedged anywhere on that path (a
    /// stuck fsync, a flush thread that stopped draining) never answers: the watchdog's proof
    /// that ingest is alive.
    pub async fn probe(&self) -> Result<(), AppendError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Input::Probe(tx)).await.map_err(|_| AppendError::Closed)?;
        rx.await.map_err(|_| AppendError::Closed)
    }
}

/// The running pipeline: join it after every [`Appender`] is dropped.
pub struct Pipeline {
    batcher: tokio::task::JoinHandle<()>,
    wal_thread: JoinHandle<()>,
    flush_thread: JoinHandle<()>,
    /// With a bucket: the uploader, and what stops it once the threads are done.
    uploader: Option<(tokio::task::JoinHandle<()>, tokio_util::sync::CancellationToken)>,
    /// With a bucket: the task renewing the node's lease, stopped (and the lease given up) last.
    lease: Option<(tokio::task::JoinHandle<()>, tokio_util::sync::CancellationToken)>,
}

/// At shutdown the uploader gets this long for segments already written; the rest go up at the
/// next start (they are durable on local disk meanwhile).
const LAST_UPLOADS: Duration = Duration::from_secs(5);

impl Pipeline {
    /// Start the pipeline on a store opened with [`Store::open`]. Every group made durable is
    /// also handed to `tap` (the rules), never waiting on it.
    pub fn start(
        store: Store,
        first_generation: u64,
        opts: PipelineOptions,
        tap: Option<crate::stream::Tap>,
    ) -> Result<(Pipeline, Appender), StoreError> {
        let max_permits = (opts.max_pending_bytes / UNIT).clamp(1, u32::MAX as usize >> 3) as u32;
        let budget = Arc::new(Semaphore::new(max_permits as usize));
        let (tx, rx) = mpsc::channel::<Input>(1024);
        let (wal_tx, wal_rx) = mpsc::channel::<WalCmd>(4);
        let (flush_tx, flush_rx) = std_mpsc::sync_channel::<u64>(1);
        let (paused_tx, paused) = watch::channel(false);
        let (written_tx, written) = watch::channel(0u64);
        let wal = WalThread::new(
            store.clone(),
            first_generation,
            opts.flush_bytes,
            flush_tx,
            tap,
            paused_tx,
            written_tx,
        )?;

        let flush_thread = {
            let store = store.clone();
            let opts = opts.clone();
            std::thread::Builder::new()
                .name("lw-flush".into())
                .spawn(move || flush_loop(store, flush_rx, opts))
                .map_err(|source| StoreError::CreateDir { path: "thread lw-flush".into(), source })?
        };
        let wal_thread = std::thread::Builder::new()
            .name("lw-wal".into())
            .spawn(move || wal.run(wal_rx))
            .map_err(|source| StoreError::CreateDir { path: "thread lw-wal".into(), source })?;
        let batcher = tokio::spawn(batch_loop(rx, wal_tx, written, opts, store.clone()));
        let uploader = store.remote().is_some_and(|r| r.uploads()).then(|| {
            let stop = tokio_util::sync::CancellationToken::new();
            (tokio::spawn(super::upload::run(store.clone(), stop.clone())), stop)
        });
        let lease = store.remote().and_then(|r| r.lease.clone()).map(|lease| {
            let stop = tokio_util::sync::CancellationToken::new();
            let keep = stop.clone();
            (tokio::spawn(async move { lease.keep(keep).await }), stop)
        });
        Ok((
            Pipeline { batcher, wal_thread, flush_thread, uploader, lease },
            Appender { tx, budget, max_permits, store, paused },
        ))
    }

    /// Wait until everything appended so far is durable and the threads have stopped. Callers
    /// drop every `Appender` first; that is what lets the batcher see the end of its input.
    /// With a bucket the node's lease is still held: the caller releases it after the last
    /// objects it writes (or drops it, which gives it up in the background).
    pub async fn join(self) -> HeldLease {
        let _ = self.batcher.await;
        let _ = tokio::task::spawn_blocking(move || {
            let _ = self.wal_thread.join();
            let _ = self.flush_thread.join();
        })
        .await;
        if let Some((task, stop)) = self.uploader {
            stop.cancel();
            if tokio::time::timeout(LAST_UPLOADS, task).await.is_err() {
                tracing::warn!("segments still waiting for the bucket are uploaded at the next start");
            }
        }
        HeldLease(self.lease)
    }
}

/// The node's lease after [`Pipeline::join`], renewed until released.
pub struct HeldLease(Option<(tokio::task::JoinHandle<()>, tokio_util::sync::CancellationToken)>);

impl HeldLease {
    /// Give the lease up and wait (boundedly) until the bucket has it.
    pub async fn release(mut self) {
        if let Some((task, stop)) = self.0.take() {
            stop.cancel();
            let _ = tokio::time::timeout(LAST_UPLOADS, task).await;
        }
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        if let Some((_, stop)) = self.0.take() {
            stop.cancel();
        }
    }
}

async fn batch_loop(
    mut rx: mpsc::Receiver<Input>,
    wal_tx: mpsc::Sender<WalCmd>,
    mut written: watch::Receiver<u64>,
    opts: PipelineOptions,
    store: Store,
) {
    let mut pending: Vec<Submission> = Vec::new();
    let mut rows = 0usize;
    // Some pending submission has a sender waiting for its answer.
    let mut awaited = false;
    // Groups handed to the WAL thread; it has written them all when `written` reaches this.
    let mut sent = 0u64;
    let mut deadline = tokio::time::Instant::now();
    let mut next_rotate = tokio::time::Instant::now() + opts.flush_interval;
    loop {
        let wal_free = *written.borrow_and_update() >= sent;
        if !pending.is_empty() && (rows >= opts.batch_rows || (awaited && wal_free)) {
            sent += seal(&mut pending, &wal_tx, &store).await;
            (rows, awaited) = (0, false);
            continue;
        }
        tokio::select! {
            sub = rx.recv() => match sub {
                Some(Input::Probe(p)) => {
                    if wal_tx.send(WalCmd::Probe(p)).await.is_err() {
                        break;
                    }
                }
                Some(Input::Batch(s)) => {
                    if pending.is_empty() {
                        deadline = tokio::time::Instant::now() + opts.batch_linger;
                    }
                    rows += s.batch.num_rows();
                    awaited |= s.ack.is_some();
                    pending.push(s);
                }
                None => break,
            },
            // The WAL thread finished a round: what waits for an answer goes next.
            changed = written.changed(), if awaited && !wal_free => {
                if changed.is_err() {
                    break;
                }
            }
            _ = tokio::time::sleep_until(deadline), if !pending.is_empty() => {
                sent += seal(&mut pending, &wal_tx, &store).await;
                (rows, awaited) = (0, false);
            }
            _ = tokio::time::sleep_until(next_rotate) => {
                next_rotate = tokio::time::Instant::now() + opts.flush_interval;
                if wal_tx.send(WalCmd::Rotate).await.is_err() {
                    break;
                }
            }
        }
    }
    seal(&mut pending, &wal_tx, &store).await;
}

/// Hand the pending submissions to the WAL thread: those with a sender waiting for the answer
/// (HTTP) and those without (stream listeners) as two groups, because a failed write refuses
/// the first and keeps the second.
/// The number of groups handed over.
async fn seal(pending: &mut Vec<Submission>, wal_tx: &mpsc::Sender<WalCmd>, store: &Store) -> u64 {
    let (acked, unacked): (Vec<Submission>, Vec<Submission>) =
        std::mem::take(pending).into_iter().partition(|s| s.ack.is_some());
    let mut sent = 0;
    for subs in [acked, unacked] {
        if !subs.is_empty() && seal_group(subs, wal_tx, store).await {
            sent += 1;
        }
    }
    sent
}

/// Whether the group reached the WAL thread.
async fn seal_group(subs: Vec<Submission>, wal_tx: &mpsc::Sender<WalCmd>, store: &Store) -> bool {
    let mut batches = Vec::with_capacity(subs.len());
    let mut acks = Vec::new();
    let mut permits = Vec::with_capacity(subs.len());
    for s in subs {
        batches.push(s.batch);
        acks.extend(s.ack);
        permits.push(s.reserved);
    }
    let batch = match batch::combine(&batches) {
        Ok(b) => b,
        Err(e) => {
            // Every batch is built against the one schema, so this is a bug: say so loudly and
            // fail the acknowledgements rather than lose the data silently.
            tracing::error!(error = %e, "failed to combine batches for the WAL");
            if let Some(m) = store.metrics() {
                m.storage_errors.with_label_values(&["batch"]).inc();
            }
            return false;
        }
    };
    wal_tx.send(WalCmd::Append { batch, acks, permits }).await.is_ok()
}
