//! `logwarden storage migrate`: a data directory's segments moved into the bucket that
//! `[storage] url` names, with the daemon stopped.
//!
//! Without a bucket the data directory holds `manifest.json` and `segments/` exactly where a
//! node with a bucket keeps its upload queue, so moving is marking every segment as waiting
//! for upload, tying the manifest to the bucket, and uploading as the daemon would. An
//! interrupted run is resumed by running it again (or by starting the daemon, whose uploader
//! finishes the queue).

use std::path::Path;

use super::manifest::Manifest;
use super::{BucketSetup, SegmentsAt, Store, StoreError, upload};

/// What a migration moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub segments: usize,
    pub bytes: u64,
}

pub async fn migrate_to_bucket(data_dir: &Path, setup: BucketSetup) -> Result<Migrated, StoreError> {
    if !data_dir.is_dir() {
        return Err(StoreError::NoDataDir { path: data_dir.to_path_buf() });
    }
    let location = setup.bucket.location();
    let mut manifest = Manifest::load(data_dir)?;
    // Tied already: moved before, maybe not to the end; finish the uploads.
    if !super::remote::tied_to(&manifest, &location, data_dir)? {
        if setup.remote_manifest.as_ref().is_some_and(|m| !m.segments.is_empty()) {
            return Err(StoreError::BucketNotEmpty {
                dir: data_dir.to_path_buf(),
                node: setup.bucket.node_id().to_owned(),
                location,
            });
        }
        // A segment missing or cut short cannot be moved, and nothing could rebuild it
        // later: say which before anything changes.
        for s in &manifest.segments {
            let path = data_dir.join("segments").join(&s.file);
            if !std::fs::metadata(&path).is_ok_and(|m| m.len() == s.bytes) {
                return Err(StoreError::DamagedSegment { path, bytes: s.bytes });
            }
        }
        for s in &mut manifest.segments {
            s.pending_upload = true;
            // Their WAL went when they were written.
            s.wal_through = 0;
        }
        manifest.wal_uploaded_through = manifest.wal_flushed_through;
        manifest.location = Some(location);
        manifest.store(data_dir)?;
    }
    // Renewed while the uploads run, and given up at the end.
    let keeper = setup.lease.clone().map(|lease| {
        let stop = tokio_util::sync::CancellationToken::new();
        let keep = stop.clone();
        (tokio::spawn(async move { lease.keep(keep).await }), stop)
    });
    let (store, _) = Store::open(data_dir, SegmentsAt::Bucket(Box::new(setup)), None, None)?;
    let bytes = store.manifest().segments.iter().filter(|s| s.pending_upload).map(|s| s.bytes).sum();
    let moved = upload::drain(&store).await;
    if let Some((task, stop)) = keeper {
        stop.cancel();
        let _ = task.await;
    }
    Ok(Migrated { segments: moved?, bytes })
}
