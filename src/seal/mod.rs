//! Tamper evidence for stored logs: one append-only SHA-256 chain over every WAL group, Parquet
//! segment, manifest generation and audit day file, with removals as entries of their own
//! (`chain`); checkpoints of its head signed with the server's key or a key of their own
//! (`checkpoint`), written at an interval and at shutdown, kept in `data_dir/seal/`, logged,
//! served by the admin endpoint and sent off the box (`export`); and `logwarden verify`, which
//! reads a data directory back offline (`verify`).
//!
//! What writes stored objects calls the chain after each change is durable: the WAL thread per
//! group, the flush thread per segment and manifest, retention and the uploader per removal, the
//! audit writer per group of lines. [`Sealer`] writes the checkpoints.

pub mod chain;
pub mod checkpoint;
pub mod digest;
pub mod export;
pub mod verify;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use chain::{Chain, DeleteReason, Head, Record};
pub use checkpoint::{Checkpoint, Signed, SigningKey};
pub use digest::Digest;

use crate::metrics::SealMetrics;

/// Writes checkpoints of a chain and keeps the newest.
pub struct Sealer {
    chain: Arc<Chain>,
    key: SigningKey,
    node: String,
    newest: Mutex<Option<Signed>>,
    export: export::Exporter,
    metrics: Option<SealMetrics>,
}

impl Sealer {
    pub fn new(
        chain: Arc<Chain>,
        key: SigningKey,
        node: String,
        export: export::Exporter,
        metrics: Option<SealMetrics>,
    ) -> Sealer {
        let newest = checkpoint::newest(chain.dir());
        if let (Some(m), Some(n)) = (&metrics, &newest) {
            m.checkpoint_entries.set(n.checkpoint.seq as i64);
        }
        Sealer { chain, key, node, newest: Mutex::new(newest), export, metrics }
    }

    pub fn chain(&self) -> &Arc<Chain> {
        &self.chain
    }

    /// The newest checkpoint written (by this run or an earlier one).
    pub fn newest(&self) -> Option<Signed> {
        self.newest.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Write a checkpoint if the chain grew since the last one: fsync the chain, sign its head,
    /// append the checkpoint to `seal/checkpoints.jsonl`, log it. Blocking (file I/O, and a
    /// signature that may be a PKCS#11 call). Returns the checkpoint written, if any.
    pub fn checkpoint(&self) -> Result<Option<Signed>, SealError> {
        let head = self.chain.sync()?;
        // An empty chain has nothing to vouch for.
        if head.seq == 0
            || self.newest().is_some_and(|n| n.checkpoint.seq == head.seq && n.checkpoint.head == head.hash)
        {
            return Ok(None);
        }
        let generation = self.chain.manifest().map_or(0, |(g, _)| g);
        let started = std::time::Instant::now();
        let signed = Checkpoint::new(&self.node, head, self.chain.files() as u64, generation)
            .sign(&self.key.current())
            .inspect_err(|_| self.count_error("sign"))?;
        checkpoint::append(self.chain.dir(), &signed)
            .inspect_err(|_| self.count_error("checkpoint_write"))?;
        if let Some(m) = &self.metrics {
            m.checkpoints.inc();
            m.checkpoint_entries.set(head.seq as i64);
            m.checkpoint_time.set(chrono::Utc::now().timestamp());
            m.sign_seconds.observe(started.elapsed().as_secs_f64());
        }
        tracing::info!(target: "logwarden::seal", checkpoint = %signed.to_line(), entries = head.seq, "seal checkpoint");
        *self.newest.lock().unwrap_or_else(|e| e.into_inner()) = Some(signed.clone());
        Ok(Some(signed))
    }

    fn count_error(&self, op: &str) {
        if let Some(m) = &self.metrics {
            m.errors.with_label_values(&[op]).inc();
        }
    }

    /// Checkpoint every `interval` while the chain grows, until `cancel`; the caller writes the
    /// last one at shutdown, after everything that chains has stopped.
    pub async fn run(self: Arc<Self>, interval: Duration, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.checkpoint_now().await;
        }
    }

    /// One checkpoint off the async workers, exported when one was written; failures logged.
    pub async fn checkpoint_now(self: &Arc<Self>) {
        let me = self.clone();
        match tokio::task::spawn_blocking(move || me.checkpoint()).await {
            Ok(Ok(Some(signed))) => self.export.send(signed),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "failed to write a seal checkpoint; the next interval tries again")
            }
            Err(e) => tracing::error!(error = %e, "the seal checkpoint task failed"),
        }
    }

    /// Wait (up to `deadline`) for exports in progress to finish.
    pub async fn drain_exports(&self, deadline: Duration) {
        self.export.drain(deadline).await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Chain(#[from] chain::ChainError),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
}
