//! The `lw-flush` thread: writes sealed WAL generations out as one Parquet segment, commits the
//! manifest, deletes the flushed WAL files, and applies retention.
//!
//! A flush that fails (a full disk) leaves nothing behind: no temporary file, no segment the
//! manifest does not name. Its data stays in memory and in the WAL, and the flush is tried
//! again with a backoff (from `flush_interval`, at most 1 s, up to a minute) whether or not new
//! generations arrive, so flushing resumes by itself once there is room.

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use super::pipeline::PipelineOptions;
use super::segment::{self, SegmentOptions};
use super::{Store, StoreError, retention, wal};
use crate::seal::{DeleteReason, Record};

/// The longest wait between two tries of a failed flush.
const MAX_RETRY: Duration = Duration::from_secs(60);

pub(super) fn flush_loop(store: Store, rx: std_mpsc::Receiver<u64>, opts: PipelineOptions) {
    let seg_opts = SegmentOptions { row_group_rows: opts.row_group_rows, zstd_level: opts.zstd_level };
    let retention_every = Duration::from_secs(60).min(opts.flush_interval);
    let first_retry = Duration::from_secs(1).min(opts.flush_interval).max(Duration::from_millis(10));
    // The newest generation a failed flush was to reach, and when to try again.
    let mut failed: Option<(u64, Duration)> = None;
    loop {
        let wait = failed.map_or(retention_every, |(_, backoff)| backoff.min(retention_every));
        let through = match rx.recv_timeout(wait) {
            Ok(through) => Some(through.max(failed.map_or(0, |(t, _)| t))),
            Err(std_mpsc::RecvTimeoutError::Timeout) => failed.map(|(t, _)| t),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if let Some(through) = through {
            match flush(&store, through, &seg_opts) {
                Ok(()) => {
                    if failed.take().is_some() {
                        tracing::warn!(through_generation = through, "Parquet flushing works again");
                    }
                }
                Err(e) => {
                    let op = if matches!(e, StoreError::Manifest(_)) { "manifest" } else { "segment" };
                    let backoff = failed.map_or(first_retry, |(_, b)| (b * 2).min(MAX_RETRY));
                    tracing::error!(error = %e, through_generation = through, retry_in = ?backoff,
                        "failed to write a Parquet segment; the data stays in memory and in the WAL, and the flush is retried");
                    if let Some(m) = store.metrics() {
                        m.storage_errors.with_label_values(&[op]).inc();
                    }
                    failed = Some((through, backoff));
                }
            }
        }
        retention::apply(&store, opts.retention_max_age, opts.retention_max_bytes);
    }
}

/// Write every in-memory generation up to `through` as one segment and commit it. Without a
/// bucket the flushed WAL files go at once; with one, they stay until the segment is uploaded.
fn flush(store: &Store, through: u64, opts: &SegmentOptions) -> Result<(), StoreError> {
    let started = Instant::now();
    let batches = store.mem_through(through);
    let manifest = store.manifest();
    if through <= manifest.wal_flushed_through {
        return Ok(());
    }
    // Only this thread adds segments, so the id read here is still free at the commit.
    let id = manifest.next_segment_id;
    let bucket = store.remote().is_some();
    let written = segment::write(&store.segments_dir(), id, &batches, opts)?;
    let digest = written.as_ref().map(|(_, d)| *d);
    let meta = written.map(|(mut m, _)| {
        m.wal_through = through;
        m.pending_upload = bucket;
        m
    });
    let committed = store.update_manifest(|manifest| {
        manifest.next_segment_id = id + 1;
        manifest.wal_flushed_through = through;
        if let Some(meta) = meta.clone() {
            manifest.segments.push(meta);
        }
        Ok::<_, StoreError>(())
    });
    if let Err(e) = committed {
        // No manifest names the new segment: remove it, so it holds no space while the disk is
        // full (the next try writes it again under the same id).
        if let Some(meta) = &meta {
            let _ = std::fs::remove_file(store.segments_dir().join(&meta.file));
        }
        return Err(e);
    }
    if let (Some(chain), Some(meta), Some(sha256)) = (store.chain(), &meta, digest) {
        chain.record(Record::File {
            object: format!("segments/{}", meta.file),
            len: meta.bytes,
            sha256,
            wal_through: meta.wal_through,
            recovered: false,
        });
    }
    match store.remote() {
        Some(remote) => {
            if let Some(meta) = &meta {
                remote.cache.insert(&meta.file, meta.bytes, true);
            }
            remote.wake.notify_one();
            store.refresh_backlog();
        }
        None => delete_wal_through(store, through),
    }
    if let Some(m) = store.metrics() {
        m.segment_write_seconds.observe(started.elapsed().as_secs_f64());
        m.wal_bytes.set(wal_bytes(&store.wal_dir()) as i64);
    }
    if let Some(meta) = meta {
        tracing::debug!(
            segment = meta.id,
            rows = meta.rows,
            bytes = meta.bytes,
            through_generation = through,
            "wrote segment"
        );
    }
    Ok(())
}

/// Delete the WAL files of generations up to `through` (their data is stored).
pub(super) fn delete_wal_through(store: &Store, through: u64) {
    let files = match wal::list(&store.wal_dir()) {
        Ok(files) => files,
        Err(e) => {
            tracing::warn!(error = %e, "failed to list the WAL directory to delete flushed files");
            return;
        }
    };
    let files: Vec<_> = files.into_iter().filter(|(gen_, _)| *gen_ <= through).collect();
    // Chained as removed, durably, before they go: a removal the chain does not record is an attack's.
    if let Some(chain) = store.chain()
        && !files.is_empty()
    {
        for (gen_, _) in &files {
            chain.record(Record::Delete { object: wal::object_name(*gen_), reason: DeleteReason::Flushed });
        }
        if let Err(e) = chain.sync() {
            tracing::warn!(error = %e, "failed to fsync the seal chain before removing flushed WAL files");
        }
    }
    for (_, path) in files {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(file = %path.display(), error = %e, "failed to remove flushed WAL file");
        }
    }
}

pub(super) fn wal_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|it| it.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}
