//! The last step every acknowledging protocol shares (HTTP ingest, OTLP over gRPC, RELP): a
//! request's events sealed into one batch, stamped with templates, appended to the WAL, and
//! the answer given only once that batch is fsynced. A batch someone waits for does not sit
//! out `batch.linger`: it goes to the WAL as soon as the WAL thread is free, with whatever
//! else waited meanwhile (group commit). Either all of a request is durable or
//! none of it is, so a client that resends after a failure makes no duplicates.

use std::sync::Arc;

use crate::batch::EventBatchBuilder;
use crate::detect::templates::Shared;
use arrow::array::RecordBatch;

use crate::store::{AppendError, Appender, Durable, StoreError};

/// Where one listener's acknowledged requests go.
#[derive(Clone)]
pub struct Sink {
    pub appender: Appender,
    /// The template miner that stamps `template_id` (None: `[detect.templates]` is off).
    pub templates: Option<Arc<Shared>>,
}

/// Why a request's events were not stored; nothing of them was. Each protocol answers it in
/// its own terms (HTTP 503 with `Retry-After`, gRPC `UNAVAILABLE`, RELP `500`).
#[derive(Debug, thiserror::Error)]
pub enum StoreFailure {
    #[error("storage is saturated; retry later")]
    Saturated,
    #[error("logwarden is shutting down")]
    ShuttingDown,
    #[error("segments waiting for the bucket fill the local backlog; send the events again later")]
    Backlog,
    #[error("the events could not be written to disk (storage full or failing); send them again later")]
    Disk,
    #[error("failed to build a batch: {0}")]
    Batch(#[from] arrow::error::ArrowError),
}

impl StoreFailure {
    /// Seconds a client should wait before sending again: space seldom comes back within one
    /// after a failed disk write; saturation passes within a batch or two.
    pub fn retry_after(&self) -> u32 {
        match self {
            StoreFailure::Backlog | StoreFailure::Disk => 5,
            _ => 1,
        }
    }
}

impl Sink {
    /// Seal `builder`'s rows into a batch and wait until it is durable; the number of events
    /// stored. Fails at once when storage is over its memory budget (`Saturated`): a client
    /// is told to come back rather than held.
    pub async fn store(&self, builder: &mut EventBatchBuilder) -> Result<usize, StoreFailure> {
        let Some((batch, rows)) = self.seal(builder)? else { return Ok(0) };
        let durable = self.appender.try_append_durable(batch).map_err(append_failure)?;
        Stored { durable, rows }.wait().await
    }

    /// Seal `builder`'s rows into a batch and hand it to storage, waiting while storage is over
    /// its memory budget (the sender is slowed down, not refused); `None` when it holds no rows.
    /// For RELP, whose connection reads its next frames while this one is written and answers
    /// once [`Stored::wait`] resolves.
    pub async fn submit_waiting(
        &self,
        builder: &mut EventBatchBuilder,
    ) -> Result<Option<Stored>, StoreFailure> {
        let Some((batch, rows)) = self.seal(builder)? else { return Ok(None) };
        let durable = self.appender.append_durable(batch).await.map_err(append_failure)?;
        Ok(Some(Stored { durable, rows }))
    }

    fn seal(&self, builder: &mut EventBatchBuilder) -> Result<Option<(RecordBatch, usize)>, StoreFailure> {
        let rows = builder.len();
        if rows == 0 {
            return Ok(None);
        }
        let batch = crate::detect::templates::stamp(builder.finish()?, self.templates.as_deref())?;
        Ok(Some((batch, rows)))
    }
}

/// A batch handed to storage, not yet known to be durable.
pub struct Stored {
    durable: Durable,
    rows: usize,
}

impl Stored {
    /// Wait until the batch is durable; the number of events it holds.
    pub async fn wait(self) -> Result<usize, StoreFailure> {
        // The WAL thread logs a failure itself, once per run of failures: a full disk must not
        // add a log line per request.
        self.durable.wait().await.map_err(|e| match *e {
            StoreError::Stopped => StoreFailure::ShuttingDown,
            StoreError::Wal(crate::store::wal::WalError::UploadBacklog { .. }) => StoreFailure::Backlog,
            _ => StoreFailure::Disk,
        })?;
        Ok(self.rows)
    }
}

fn append_failure(e: AppendError) -> StoreFailure {
    match e {
        AppendError::Saturated => StoreFailure::Saturated,
        AppendError::Closed => StoreFailure::ShuttingDown,
    }
}
