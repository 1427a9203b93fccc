//! The uploader, a task on the runtime (with a bucket only): segments waiting for the bucket
//! are uploaded oldest first, each followed by the bucket's manifest naming it and only then by
//! the local manifest saying so and the deletion of the WAL it came from. So at every instant
//! each acknowledged event is in the WAL, a local segment, or a segment the bucket's manifest
//! names, and a crash between any two steps repeats an upload (same key, same bytes) rather
//! than losing or doubling a row.
//!
//! With nothing to upload it deletes the objects retention dropped, after a manifest that no
//! longer names them is in the bucket and `delete_grace` has passed (other nodes plan queries
//! from the manifest they read last). Failures are retried with a backoff (1 s doubling to a
//! minute) while ingest goes on; a delete the bucket refuses is tried again an hour later.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use object_store::path::Path;
use tokio_util::sync::CancellationToken;

use super::bucket::{BucketError, FailureKind};
use super::failures::Failures;
use super::flush::delete_wal_through;
use super::manifest::{Manifest, ManifestError};
use super::{Remote, SegmentMeta, Store};

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// A delete the bucket refused is tried again after this long.
const REFUSED_RETRY: Duration = Duration::from_secs(3600);
/// With nothing to do, look again this often (refused deletes come due, gauges age).
const IDLE: Duration = Duration::from_secs(30);
/// Deletes per round: uploads come first, and the next round deletes more.
const DELETES_PER_ROUND: usize = 100;
/// Repeated failures are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Bucket(#[from] BucketError),
    #[error("failed to record the upload in the local manifest: {0}")]
    Manifest(#[from] ManifestError),
    #[error("a blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error(
        "this node's lease {0} is not held (lost to another daemon, or not renewed in time): nothing is written to the bucket"
    )]
    NoLease(String),
}

struct Uploader {
    store: Store,
    remote: std::sync::Arc<Remote>,
    /// The segment ids of the manifest last written to the bucket.
    published: Option<Vec<u64>>,
    /// Objects whose delete the bucket refused, and when to try again.
    refused: HashMap<String, Instant>,
    /// When this run first saw each object retention dropped.
    dropped_at: HashMap<String, Instant>,
    failures: Failures,
    /// The wait before the next try after a failure: 1 s, doubling to a minute.
    backoff: Duration,
}

/// Run until `stop`; then one last round to upload what the final flush wrote.
pub(super) async fn run(store: Store, stop: CancellationToken) {
    let Some(remote) = store.remote().cloned() else { return };
    let mut up = Uploader {
        store,
        remote,
        published: None,
        refused: HashMap::new(),
        dropped_at: HashMap::new(),
        failures: Failures::new(LOG_EVERY),
        backoff: FIRST_RETRY,
    };
    loop {
        let wait = match up.round().await {
            Ok(true) => {
                up.recovered();
                continue;
            }
            Ok(false) => {
                up.recovered();
                None
            }
            Err(e) => Some(up.failed(&e)),
        };
        if stop.is_cancelled() {
            break;
        }
        let remote = up.remote.clone();
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(wait.unwrap_or(IDLE)) => {}
            // A new segment wakes an idle uploader, not one backing off from a failure.
            () = remote.wake.notified(), if wait.is_none() => {}
        }
    }
}

/// Upload every pending segment now and return how many went up (`logwarden storage migrate`);
/// the first failure ends it, and running it again resumes.
pub(super) async fn drain(store: &Store) -> Result<usize, UploadError> {
    let Some(remote) = store.remote().cloned() else { return Ok(0) };
    let mut up = Uploader {
        store: store.clone(),
        remote,
        published: None,
        refused: HashMap::new(),
        dropped_at: HashMap::new(),
        failures: Failures::new(LOG_EVERY),
        backoff: FIRST_RETRY,
    };
    let mut uploaded = 0;
    loop {
        let pending = store.manifest().segments.iter().filter(|s| s.pending_upload).count();
        if !up.round().await? {
            return Ok(uploaded);
        }
        uploaded += pending - store.manifest().segments.iter().filter(|s| s.pending_upload).count();
    }
}

impl Uploader {
    /// One step; `Ok(true)` when there may be more to do at once.
    async fn round(&mut self) -> Result<bool, UploadError> {
        // A query node writes nothing to the bucket, whatever its data directory holds.
        if !self.remote.uploads() {
            return Ok(false);
        }
        if let Some(lease) = self.remote.lease.as_ref().filter(|l| !l.held()) {
            return Err(UploadError::NoLease(lease.object_url()));
        }
        let manifest = self.store.manifest();
        if let Some(seg) = manifest.segments.iter().find(|s| s.pending_upload).cloned() {
            self.upload(&seg).await?;
            return Ok(true);
        }
        if self.published.as_ref() != Some(&uploaded_ids(&manifest)) {
            self.publish(&manifest).await?;
        }
        if manifest.wal_uploaded_through < manifest.wal_flushed_through {
            self.record(None).await?;
        }
        self.delete_expired(&manifest).await?;
        self.store.refresh_backlog();
        Ok(false)
    }

    async fn upload(&mut self, seg: &SegmentMeta) -> Result<(), UploadError> {
        let started = Instant::now();
        let key = self.remote.bucket.segment_key(&seg.file);
        let bytes = self.remote.bucket.upload(&self.store.segments_dir().join(&seg.file), &key).await?;
        #[cfg(debug_assertions)]
        test_stall_after_upload().await;
        let mut manifest = self.store.manifest();
        if let Some(s) = manifest.segments.iter_mut().find(|s| s.id == seg.id) {
            s.pending_upload = false;
        }
        self.publish(&manifest).await?;
        self.record(Some(seg)).await?;
        self.remote.cache.unpin(&seg.file);
        if let Some(m) = &self.remote.metrics {
            m.uploaded_segments.inc();
            m.uploaded_bytes.inc_by(bytes);
            m.upload_seconds.observe(started.elapsed().as_secs_f64());
        }
        self.store.refresh_backlog();
        tracing::debug!(segment = seg.id, bytes, object = %self.remote.bucket.object_url(&key), took = ?started.elapsed(), "uploaded segment");
        Ok(())
    }

    /// Write the bucket's manifest: the segments of `manifest` that are in the bucket.
    async fn publish(&mut self, manifest: &Manifest) -> Result<(), UploadError> {
        let view = Manifest {
            version: manifest.version,
            next_segment_id: manifest.next_segment_id,
            segments: manifest.segments.iter().filter(|s| !s.pending_upload).cloned().collect(),
            ..Manifest::default()
        };
        self.remote.bucket.store_manifest(&view).await?;
        self.published = Some(uploaded_ids(manifest));
        Ok(())
    }

    /// Record in the local manifest that `seg` (if any) is uploaded, then delete the WAL files
    /// that only segments in the bucket needed.
    async fn record(&self, seg: Option<&SegmentMeta>) -> Result<(), UploadError> {
        let store = self.store.clone();
        let (id, file, through) =
            seg.map_or((None, String::new(), 0), |s| (Some(s.id), s.file.clone(), s.wal_through));
        let key = self.remote.bucket.segment_key(&file).to_string();
        tokio::task::spawn_blocking(move || {
            let through = store.update_manifest(|m| {
                if let Some(id) = id {
                    match m.segments.iter_mut().find(|s| s.id == id) {
                        Some(s) => s.pending_upload = false,
                        // Retention dropped it during the upload: the object goes too.
                        None => m.pending_deletes.push(key),
                    }
                }
                // Uploads go oldest first, so everything before the oldest segment still waiting is in the bucket.
                m.wal_uploaded_through = if m.segments.iter().any(|s| s.pending_upload) {
                    m.wal_uploaded_through.max(through)
                } else {
                    m.wal_flushed_through
                };
                Ok::<_, ManifestError>(m.wal_uploaded_through)
            })?;
            delete_wal_through(&store, through);
            Ok::<_, UploadError>(())
        })
        .await?
    }

    /// Delete the objects retention dropped at least `delete_grace` ago, unless the bucket
    /// refused them less than an hour ago.
    async fn delete_expired(&mut self, manifest: &Manifest) -> Result<(), UploadError> {
        let now = Instant::now();
        let listed: std::collections::HashSet<&str> =
            manifest.pending_deletes.iter().map(String::as_str).collect();
        self.dropped_at.retain(|k, _| listed.contains(k.as_str()));
        for k in &manifest.pending_deletes {
            self.dropped_at.entry(k.clone()).or_insert(now);
        }
        let grace = self.remote.delete_grace;
        let due: Vec<String> = manifest
            .pending_deletes
            .iter()
            .filter(|k| self.dropped_at.get(*k).is_none_or(|t| t.elapsed() >= grace))
            .filter(|k| self.refused.get(*k).is_none_or(|t| *t <= now))
            .take(DELETES_PER_ROUND)
            .cloned()
            .collect();
        let mut done = Vec::new();
        let mut failure = None;
        for key in due {
            match self.remote.bucket.delete(&Path::from(key.as_str())).await {
                Ok(()) => {
                    self.refused.remove(&key);
                    done.push(key);
                }
                Err(e) if e.kind() == FailureKind::Refused => {
                    tracing::warn!(error = %e, retry_in = ?REFUSED_RETRY,
                        "the bucket refused to delete an expired segment (Object Lock retention, a legal hold or a policy keep it); ingest goes on, and the delete is tried again later");
                    if let Some(m) = &self.remote.metrics {
                        m.deletes_refused.inc();
                    }
                    self.refused.insert(key, now + REFUSED_RETRY);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if !done.is_empty() {
            if let Some(m) = &self.remote.metrics {
                m.deleted_objects.inc_by(done.len() as u64);
            }
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || {
                store.update_manifest(|m| {
                    m.pending_deletes.retain(|k| !done.contains(k));
                    Ok::<_, ManifestError>(())
                })
            })
            .await??;
        }
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    fn failed(&mut self, e: &UploadError) -> Duration {
        let op = match e {
            UploadError::Bucket(BucketError::Object { op: "delete", .. }) => "delete",
            UploadError::Bucket(BucketError::Object { object, .. }) if object.ends_with("/manifest.json") => {
                "manifest"
            }
            UploadError::Bucket(_) => "upload",
            UploadError::Manifest(_) | UploadError::Join(_) => "local_manifest",
            UploadError::NoLease(_) => "lease",
        };
        if let Some(m) = &self.remote.metrics {
            m.errors.with_label_values(&[op]).inc();
            m.up.set(0);
        }
        let wait = self.backoff;
        if let Some(r) = self.failures.failed() {
            tracing::error!(error = %e, failures = r.failures, failing_for = ?r.failing_for, retry_in = ?wait,
                "the bucket did not take an upload; segments wait on local disk and ingest goes on (up to storage.upload_backlog_max_bytes)");
        }
        self.backoff = (self.backoff * 2).min(MAX_RETRY);
        wait
    }

    fn recovered(&mut self) {
        if let Some(m) = &self.remote.metrics {
            m.up.set(1);
        }
        self.backoff = FIRST_RETRY;
        if let Some(r) = self.failures.recovered() {
            tracing::warn!(after = ?r.failing_for, failures = r.failures, "uploads to the bucket work again");
        }
    }
}

fn uploaded_ids(m: &Manifest) -> Vec<u64> {
    m.segments.iter().filter(|s| !s.pending_upload).map(|s| s.id).collect()
}

/// A failpoint for the crash test, in debug builds only: with `LOGWARDEN_TEST_STALL_UPLOAD` set
/// to a path, each upload, once the object is in the bucket and before any manifest names it,
/// creates `PATH.reached` and waits while `PATH` exists (the test kills the daemon meanwhile).
#[cfg(debug_assertions)]
async fn test_stall_after_upload() {
    let Some(path) = std::env::var_os("LOGWARDEN_TEST_STALL_UPLOAD") else { return };
    let path = std::path::PathBuf::from(path);
    let mut reached = path.clone().into_os_string();
    reached.push(".reached");
    let _ = std::fs::write(&reached, b"");
    while path.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
