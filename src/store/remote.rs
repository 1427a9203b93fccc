//! The bucket side of a store: what the daemon found in the bucket at start, how a data
//! directory is tied to it, and the state the uploader, the peers' reader and the scans share.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use super::cache::SegmentCache;
use super::{Bucket, Lease, Manifest, SegmentMeta, StoreError, peers};
use crate::metrics::BucketMetrics;

/// A bucket to store segments in, as the daemon found it at start.
pub struct BucketSetup {
    pub bucket: Bucket,
    /// This node's manifest in the bucket, read at start: adopted by an empty data directory
    /// (a node that lost its disk), and never letting segment ids go back.
    pub remote_manifest: Option<Manifest>,
    pub cache_max_bytes: u64,
    pub backlog_max_bytes: u64,
    pub metrics: Option<BucketMetrics>,
    /// The node's lease, for a daemon (or command) that writes; None for readers.
    pub lease: Option<Arc<Lease>>,
    /// A query node (`cluster.role = "query"`): it uploads nothing and reads every node's
    /// segments, its own node id's included.
    pub query_only: bool,
    /// How long an object retention dropped from the manifest stays in the bucket, so that
    /// other nodes, which read the manifest every `cluster.refresh_interval`, stop naming it
    /// in their plans first.
    pub delete_grace: std::time::Duration,
}

/// The bucket side of a store.
pub(crate) struct Remote {
    pub(crate) bucket: Bucket,
    pub(crate) cache: Arc<SegmentCache>,
    pub(super) backlog_max_bytes: u64,
    pub(super) backlog_full: AtomicBool,
    /// Wakes the uploader: a segment was written, or retention has objects to delete.
    pub(super) wake: tokio::sync::Notify,
    pub(super) metrics: Option<BucketMetrics>,
    pub(crate) lease: Option<Arc<Lease>>,
    pub(super) query_only: bool,
    pub(super) delete_grace: std::time::Duration,
    /// The other nodes' segments and files, as last read.
    pub(super) peers: RwLock<Arc<peers::PeerView>>,
}

impl Remote {
    pub(super) fn new(setup: BucketSetup, cache: SegmentCache) -> Remote {
        if let Some(m) = &setup.metrics {
            m.backlog_max_bytes.set(i64::try_from(setup.backlog_max_bytes).unwrap_or(i64::MAX));
        }
        Remote {
            bucket: setup.bucket,
            cache: Arc::new(cache),
            backlog_max_bytes: setup.backlog_max_bytes,
            backlog_full: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            metrics: setup.metrics,
            lease: setup.lease,
            query_only: setup.query_only,
            delete_grace: setup.delete_grace,
            peers: RwLock::default(),
        }
    }

    pub(super) fn peer_view(&self) -> Arc<peers::PeerView> {
        self.peers.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether this store uploads (not on a query node).
    pub(crate) fn uploads(&self) -> bool {
        !self.query_only
    }

    /// Tie the local manifest to the bucket (adopting the bucket's on an empty data directory),
    /// check that segments waiting for upload are still here, and list the local copies.
    /// Returns whether the manifest changed.
    pub(super) fn open(
        setup: BucketSetup,
        root: &Path,
        manifest: &mut Manifest,
    ) -> Result<(Remote, bool), StoreError> {
        let location = setup.bucket.location();
        let mut changed = false;
        match tied_to(manifest, &location, root)? {
            true => {}
            false if !manifest.segments.is_empty() => {
                return Err(StoreError::OtherLocation {
                    dir: root.to_path_buf(),
                    found: "local storage (no bucket)".into(),
                    configured: location,
                });
            }
            false => {
                if let Some(adopted) = &setup.remote_manifest {
                    // A node that lost its disk: its segments are in the bucket. WAL numbers are
                    // this disk's own and start again.
                    manifest.segments = adopted.segments.clone();
                    for s in &mut manifest.segments {
                        s.wal_through = 0;
                        s.pending_upload = false;
                    }
                    tracing::warn!(segments = manifest.segments.len(), bucket = %location,
                        "the data directory is new: took this node's segments from the bucket's manifest");
                }
                manifest.location = Some(location.clone());
                changed = true;
            }
        }
        // Segment ids never go back, so a data directory restored from an old copy can never
        // write over an object the bucket has; and the segments the bucket names that such a
        // copy does not know (written after it was taken) are taken into its manifest, unless
        // retention is deleting them.
        if let Some(r) = &setup.remote_manifest {
            if r.next_segment_id > manifest.next_segment_id {
                manifest.next_segment_id = r.next_segment_id;
                changed = true;
            }
            let known: std::collections::HashSet<u64> = manifest.segments.iter().map(|s| s.id).collect();
            let deleting: std::collections::HashSet<&str> =
                manifest.pending_deletes.iter().map(String::as_str).collect();
            let missing: Vec<SegmentMeta> = r
                .segments
                .iter()
                .filter(|s| !known.contains(&s.id))
                .filter(|s| !deleting.contains(setup.bucket.segment_key(&s.file).as_ref()))
                .map(|s| SegmentMeta { wal_through: 0, pending_upload: false, ..s.clone() })
                .collect();
            if !missing.is_empty() {
                tracing::warn!(segments = missing.len(), bucket = %location,
                    "the bucket names segments this data directory does not know (restored from an older copy?); they are taken into its manifest");
                manifest.segments.extend(missing);
                manifest.segments.sort_by_key(|s| s.id);
                changed = true;
            }
        }
        changed |= drop_lost_pending(root, manifest);
        // Retention's grace covers the query time limit: copies are kept in use as long.
        let cache = SegmentCache::new(root.join("segments"), setup.cache_max_bytes, setup.metrics.clone())
            .kept_in_use_for(setup.delete_grace);
        let named: std::collections::HashSet<&str> =
            manifest.segments.iter().map(|s| s.file.as_str()).collect();
        for s in &manifest.segments {
            let path = root.join("segments").join(&s.file);
            match std::fs::metadata(&path) {
                Ok(meta) if meta.len() == s.bytes => cache.insert(&s.file, s.bytes, s.pending_upload),
                // A copy cut short (a crash during a cache fill): read the bucket instead.
                Ok(_) => {
                    let _ = std::fs::remove_file(&path);
                }
                Err(_) => {}
            }
        }
        // Copies of other nodes' segments: which are still wanted is known after the first
        // reading of their manifests, so the cache starts without them.
        let peers_dir = root.join("segments").join("peers");
        if let Err(e) = std::fs::remove_dir_all(&peers_dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %peers_dir.display(), error = %e, "failed to clear the copies of other nodes' segments");
        }
        // Copies of segments retention removed while the daemon was down.
        if let Ok(entries) = std::fs::read_dir(root.join("segments")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".parquet") && !named.contains(name.as_str()) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok((Remote::new(setup, cache), changed))
    }
}

/// Whether `manifest` is tied to the bucket location `location` already (false: to none yet);
/// tied to another one is an error.
pub(super) fn tied_to(manifest: &Manifest, location: &str, dir: &Path) -> Result<bool, StoreError> {
    match manifest.location.as_deref() {
        None => Ok(false),
        Some(l) if l == location => Ok(true),
        Some(other) => Err(StoreError::OtherLocation {
            dir: dir.to_path_buf(),
            found: other.to_owned(),
            configured: location.to_owned(),
        }),
    }
}

/// A segment waiting for upload whose file is gone or cut short (a lost or repaired disk)
/// cannot be uploaded: it and every later one leave the manifest, and the WAL they came from
/// (kept until upload) is replayed instead. Returns whether the manifest changed.
fn drop_lost_pending(root: &Path, manifest: &mut Manifest) -> bool {
    let intact = |s: &SegmentMeta| {
        std::fs::metadata(root.join("segments").join(&s.file)).is_ok_and(|m| m.len() == s.bytes)
    };
    let Some(first_lost) = manifest.segments.iter().position(|s| s.pending_upload && !intact(s)) else {
        return false;
    };
    if manifest.segments[first_lost].wal_through == 0 {
        // Its WAL went long ago (a segment moved in by `storage migrate`): nothing can rebuild
        // it, and the segments after it are no business of the WAL either.
        let (lost, kept): (Vec<SegmentMeta>, Vec<SegmentMeta>) = std::mem::take(&mut manifest.segments)
            .into_iter()
            .partition(|s| s.pending_upload && s.wal_through == 0 && !intact(s));
        manifest.segments = kept;
        tracing::error!(segments = ?lost.iter().map(|s| &s.file).collect::<Vec<_>>(),
            "segments waiting for upload are missing or damaged and have no WAL to rebuild them from; they are left out");
        return true;
    }
    let lost = manifest.segments.split_off(first_lost);
    manifest.wal_flushed_through = manifest
        .segments
        .last()
        .map_or(manifest.wal_uploaded_through, |s| s.wal_through.max(manifest.wal_uploaded_through));
    tracing::error!(segments = ?lost.iter().map(|s| &s.file).collect::<Vec<_>>(), replay_from_generation = manifest.wal_flushed_through + 1,
        "segments waiting for upload are missing or damaged; they are rebuilt from the WAL");
    for s in lost {
        let _ = std::fs::remove_file(root.join("segments").join(&s.file));
    }
    true
}
