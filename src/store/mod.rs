//! Durable storage: the WAL, Parquet segments with their manifest, retention, and the shared
//! state that queries read (segments plus durable batches not yet written as Parquet).
//!
//! Writers go through [`Appender`] (see `pipeline`); readers take a [`Snapshot`]. A batch becomes
//! visible to queries in the same step that makes it durable, and moves from memory to a segment
//! atomically, so a query never sees a row twice or misses one.

mod aws_profile;
pub mod bucket;
mod cache;
mod failures;
#[cfg(test)]
mod faults;
mod flush;
mod lease;
mod manifest;
mod migrate;
mod peers;
mod pipeline;
mod retention;
mod segment;
mod table;
#[cfg(test)]
mod tests;
mod upload;
pub mod wal;
mod wal_thread;

pub use bucket::{Bucket, BucketError};
pub use lease::Lease;
pub use manifest::{Manifest, SegmentMeta};
pub use migrate::{Migrated, migrate_to_bucket};
pub use peers::{ALERTS_FILE, TEMPLATES_FILE};
pub use pipeline::{AppendError, Appender, Durable, Pipeline, PipelineOptions};
pub use table::LogsTable;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use arrow::array::{Array, RecordBatch, TimestampNanosecondArray};

use crate::batch::TIMESTAMP_INDEX;
use crate::metrics::{BucketMetrics, Metrics};
use cache::SegmentCache;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error(transparent)]
    Segment(#[from] segment::SegmentError),
    #[error("failed to create data directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("the storage pipeline has stopped")]
    Stopped,
    #[error("{path} does not exist: not a logwarden data directory (set data_dir, or pass --data-dir)")]
    NoDataDir { path: PathBuf },
    #[error(
        "the data directory {dir} holds segments of {found}, but storage.url and cluster.node_id say {configured}: \
         set them back, or move the data with `logwarden storage migrate`"
    )]
    OtherLocation { dir: PathBuf, found: String, configured: String },
    #[error(transparent)]
    Upload(#[from] upload::UploadError),
    #[error(
        "segment {path} is missing or not the {bytes} bytes the manifest says: restore it from a backup, \
         or remove its entry from manifest.json to move the rest"
    )]
    DamagedSegment { path: PathBuf, bytes: u64 },
    #[error(
        "the bucket already holds segments of node {node} under {location}: moving {dir} there would mix two histories; \
         choose another cluster.node_id or storage.url prefix"
    )]
    BucketNotEmpty { dir: PathBuf, node: String, location: String },
}

/// Where a store keeps its segments and manifest.
pub enum SegmentsAt {
    /// `manifest.json` and `segments/` in this directory (the data directory by default).
    Local(PathBuf),
    /// In a bucket, with the data directory as the upload queue and local cache.
    Bucket(Box<BucketSetup>),
}

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
    backlog_max_bytes: u64,
    backlog_full: AtomicBool,
    /// Wakes the uploader: a segment was written, or retention has objects to delete.
    wake: tokio::sync::Notify,
    metrics: Option<BucketMetrics>,
    pub(crate) lease: Option<Arc<Lease>>,
    query_only: bool,
    delete_grace: std::time::Duration,
    /// The other nodes' segments and files, as last read.
    peers: RwLock<Arc<peers::PeerView>>,
}

/// The segments in a bucket, as [`Store::segments_in_bucket`] finds them.
pub struct BucketSegments {
    /// `s3://BUCKET`.
    pub url: String,
    pub client: Arc<dyn object_store::ObjectStore>,
    /// Object keys and sizes.
    pub keys: Vec<(object_store::path::Path, u64)>,
}

/// A durable batch held in memory, with its time range for pruning.
#[derive(Debug, Clone)]
pub struct MemBatch {
    pub batch: RecordBatch,
    pub min_ts: i64,
    pub max_ts: i64,
}

impl MemBatch {
    pub fn new(batch: RecordBatch) -> Self {
        let ts = batch.column(TIMESTAMP_INDEX).as_any().downcast_ref::<TimestampNanosecondArray>();
        let min_ts = ts.and_then(arrow::compute::min).unwrap_or(i64::MIN);
        let max_ts = ts.and_then(arrow::compute::max).unwrap_or(i64::MAX);
        MemBatch { batch, min_ts, max_ts }
    }
}

#[derive(Debug, Default)]
struct State {
    manifest: Manifest,
    /// Durable batches by WAL generation, not yet in a segment.
    mem: BTreeMap<u64, Vec<MemBatch>>,
    mem_bytes: usize,
    mem_rows: usize,
}

/// What a query reads: the segments and in-memory batches at one instant.
#[derive(Clone)]
pub struct Snapshot {
    pub segments_dir: PathBuf,
    pub segments: Vec<SegmentMeta>,
    pub mem: Vec<MemBatch>,
    /// With a bucket: where segments without a local copy are read.
    pub(crate) remote: Option<Arc<Remote>>,
    /// With a bucket: the other nodes' segments.
    pub(crate) peers: Arc<peers::PeerView>,
}

/// A segment of this node or another one, as a store with a bucket reads it.
pub(crate) struct BucketSegment<'a> {
    pub(crate) meta: &'a SegmentMeta,
    /// Its name in the local cache (and path under `segments/`).
    pub(crate) cache_key: String,
    /// Its object in the bucket.
    pub(crate) key: object_store::path::Path,
}

impl Snapshot {
    /// With a bucket: this node's segments and the other nodes', each with its cache key and
    /// object key (empty without a bucket).
    pub(crate) fn bucket_segments(&self) -> Vec<BucketSegment<'_>> {
        let Some(r) = &self.remote else { return Vec::new() };
        let own = self.segments.iter().map(|s| BucketSegment {
            meta: s,
            cache_key: s.file.clone(),
            key: r.bucket.segment_key(&s.file),
        });
        let others = self.peers.nodes.iter().flat_map(|n| {
            n.segments.iter().map(|s| BucketSegment {
                meta: s,
                cache_key: peers::cache_key(&n.node, &s.file),
                key: r.bucket.peer_segment_key(&n.node, &s.file),
            })
        });
        own.chain(others).collect()
    }
}

/// Shared handle to the storage state. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// The WAL, and with a bucket the manifest and segment copies.
    data_dir: PathBuf,
    /// `manifest.json` and `segments/`.
    root: PathBuf,
    state: RwLock<State>,
    /// Held across a manifest's read, change, write and install (flush, retention, uploads).
    manifest_lock: Mutex<()>,
    metrics: Option<Metrics>,
    remote: Option<Arc<Remote>>,
}

/// What recovery found, for the start-up log.
#[derive(Debug, Default, Clone)]
pub struct Recovery {
    pub segments: usize,
    pub wal_files: usize,
    pub replayed_rows: usize,
    pub torn_bytes: u64,
    /// The first WAL generation the writer may use.
    pub next_generation: u64,
}

impl Store {
    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    pub fn segments_dir(&self) -> PathBuf {
        self.inner.root.join("segments")
    }

    /// The directory holding `manifest.json`.
    fn root(&self) -> &Path {
        &self.inner.root
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.inner.data_dir.join("wal")
    }

    /// Open for the daemon: create directories, replay the WAL (truncating torn tails) and drop
    /// WAL files whose data is stored (with a bucket: uploaded).
    pub fn open(
        data_dir: &Path,
        at: SegmentsAt,
        metrics: Option<Metrics>,
    ) -> Result<(Store, Recovery), StoreError> {
        let root = match &at {
            SegmentsAt::Local(dir) => dir.clone(),
            SegmentsAt::Bucket(_) => data_dir.to_path_buf(),
        };
        for dir in [data_dir.to_path_buf(), data_dir.join("wal"), root.clone(), root.join("segments")] {
            std::fs::create_dir_all(&dir)
                .map_err(|source| StoreError::CreateDir { path: dir.clone(), source })?;
        }
        let mut manifest = Manifest::load(&root)?;
        segment::remove_temporaries(&root.join("segments"));
        let remote = match at {
            SegmentsAt::Local(_) => None,
            SegmentsAt::Bucket(setup) => {
                let (remote, changed) = Remote::open(*setup, &root, &mut manifest)?;
                if changed {
                    manifest.store(&root)?;
                }
                Some(Arc::new(remote))
            }
        };
        let mut rec = Recovery { segments: manifest.segments.len(), ..Default::default() };
        let mut state = State::default();
        let mut last_gen = manifest.wal_flushed_through;
        // With a bucket, WAL files stay until the segments holding them are uploaded.
        let deletable =
            if remote.is_some() { manifest.wal_uploaded_through } else { manifest.wal_flushed_through };
        for (gen_, path) in wal::list(&data_dir.join("wal"))? {
            last_gen = last_gen.max(gen_);
            if gen_ <= deletable {
                // Flushed before a crash that came ahead of the file's removal.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if gen_ <= manifest.wal_flushed_through {
                continue;
            }
            let r = wal::read(&path)?;
            if r.torn_bytes > 0 {
                tracing::warn!(file = %path.display(), torn_bytes = r.torn_bytes, kept_bytes = r.good_len,
                    "WAL file has an incomplete tail (interrupted write); truncating it");
                wal::truncate(&path, r.good_len)?;
                rec.torn_bytes += r.torn_bytes;
                if let Some(m) = &metrics {
                    m.wal_torn_tails.inc();
                }
            }
            rec.wal_files += 1;
            for b in r.batches {
                rec.replayed_rows += b.num_rows();
                state.add(gen_, MemBatch::new(b));
            }
        }
        rec.next_generation = last_gen + 1;
        state.manifest = manifest;
        let store = Store {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_path_buf(),
                root,
                state: RwLock::new(state),
                manifest_lock: Mutex::new(()),
                metrics,
                remote,
            }),
        };
        if let Some(m) = &store.inner.metrics {
            m.wal_replayed_events.inc_by(rec.replayed_rows as u64);
        }
        store.update_gauges();
        store.refresh_backlog();
        Ok((store, rec))
    }

    /// Open a data directory that a running daemon may be writing, without changing anything:
    /// for `logwarden query`. A torn WAL tail is skipped, not truncated. With a bucket, segments
    /// without a local copy are read from the bucket.
    pub fn open_read_only(data_dir: &Path, at: SegmentsAt) -> Result<Store, StoreError> {
        // A reader never creates the directory: a wrong path must not read as "no events".
        if !data_dir.is_dir() {
            return Err(StoreError::NoDataDir { path: data_dir.to_path_buf() });
        }
        let (root, remote) = match at {
            SegmentsAt::Local(dir) => (dir, None),
            SegmentsAt::Bucket(setup) => {
                let cache = SegmentCache::new(data_dir.join("segments"), 0, None);
                (data_dir.to_path_buf(), Some(Arc::new(Remote::new(*setup, cache))))
            }
        };
        // The daemon may flush and delete a WAL file between our listing and reading it;
        // a consistent view is the manifest read *after* the WAL files, so retry on a miss.
        let mut tries = 0;
        let state = loop {
            tries += 1;
            match Self::read_view(data_dir, &root) {
                Err(StoreError::Wal(wal::WalError::Io { source, .. }))
                    if source.kind() == std::io::ErrorKind::NotFound && tries < 6 => {}
                other => break other?,
            }
        };
        if let Some(r) = &remote {
            for s in &state.manifest.segments {
                if std::fs::metadata(root.join("segments").join(&s.file)).is_ok_and(|m| m.len() == s.bytes) {
                    r.cache.insert(&s.file, s.bytes, true);
                }
            }
        }
        Ok(Store {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_path_buf(),
                root,
                state: RwLock::new(state),
                manifest_lock: Mutex::new(()),
                metrics: None,
                remote,
            }),
        })
    }

    fn read_view(data_dir: &Path, root: &Path) -> Result<State, StoreError> {
        let mut state = State::default();
        let files = wal::list(&data_dir.join("wal"))?;
        let mut read = Vec::new();
        for (gen_, path) in files {
            read.push((gen_, wal::read(&path)?));
        }
        let manifest = Manifest::load(root)?;
        for (gen_, r) in read {
            if gen_ > manifest.wal_flushed_through {
                for b in r.batches {
                    state.add(gen_, MemBatch::new(b));
                }
            }
        }
        state.manifest = manifest;
        Ok(state)
    }

    pub fn snapshot(&self) -> Snapshot {
        let st = self.read_state();
        Snapshot {
            segments_dir: self.segments_dir(),
            // A query node reads its own node id's segments with the other nodes' (it holds
            // none of its own: it refuses a data directory with events not in the bucket).
            segments: match &self.inner.remote {
                Some(r) if r.query_only => Vec::new(),
                _ => st.manifest.segments.clone(),
            },
            mem: st.mem.values().flatten().cloned().collect(),
            remote: self.inner.remote.clone(),
            peers: self.inner.remote.as_ref().map(|r| r.peer_view()).unwrap_or_default(),
        }
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated in a way readers
        // could misuse (updates are single assignments), so a poisoned lock is still usable.
        self.inner.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.inner.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Durable batches of WAL generation `gen_` become visible to queries.
    fn publish(&self, gen_: u64, batches: Vec<MemBatch>) {
        let mut st = self.write_state();
        for b in batches {
            st.add(gen_, b);
        }
        drop(st);
        self.update_gauges();
    }

    /// The in-memory batches of every generation up to `through`.
    fn mem_through(&self, through: u64) -> Vec<RecordBatch> {
        let st = self.read_state();
        st.mem.range(..=through).flat_map(|(_, v)| v).map(|b| b.batch.clone()).collect()
    }

    fn manifest(&self) -> Manifest {
        self.read_state().manifest.clone()
    }

    /// Change the manifest: `change` edits a copy, which is written (atomically) and then
    /// installed; batches of the generations it now covers leave memory in the same step.
    /// `change` returning an error, or a failed write, changes nothing.
    fn update_manifest<T, E>(&self, change: impl FnOnce(&mut Manifest) -> Result<T, E>) -> Result<T, E>
    where
        E: From<manifest::ManifestError>,
    {
        let _one_writer = self.inner.manifest_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut manifest = self.manifest();
        let out = change(&mut manifest)?;
        manifest.store(self.root())?;
        self.commit(manifest);
        Ok(out)
    }

    fn commit(&self, manifest: Manifest) {
        let mut st = self.write_state();
        let through = manifest.wal_flushed_through;
        let keep = st.mem.split_off(&(through + 1));
        st.mem = keep;
        st.mem_bytes = st.mem.values().flatten().map(|b| b.batch.get_array_memory_size()).sum();
        st.mem_rows = st.mem.values().flatten().map(|b| b.batch.num_rows()).sum();
        st.manifest = manifest;
        drop(st);
        self.update_gauges();
    }

    fn update_gauges(&self) {
        let Some(m) = &self.inner.metrics else { return };
        let st = self.read_state();
        m.storage_bytes.set(st.manifest.total_bytes() as i64);
        m.storage_segments.set(st.manifest.segments.len() as i64);
        m.storage_rows.set(st.manifest.total_rows() as i64);
        m.memtable_rows.set(st.mem_rows as i64);
    }

    pub(crate) fn metrics(&self) -> Option<&Metrics> {
        self.inner.metrics.as_ref()
    }

    pub(crate) fn remote(&self) -> Option<&Arc<Remote>> {
        self.inner.remote.as_ref()
    }

    /// Events of this data directory not yet in the bucket (or, without one, not in a
    /// segment): in the WAL or in segments waiting for upload. What a query node must not hold.
    pub fn pending_events(&self) -> u64 {
        let st = self.read_state();
        let waiting: u64 = st.manifest.segments.iter().filter(|s| s.pending_upload).map(|s| s.rows).sum();
        st.mem_rows as u64 + waiting
    }

    pub(crate) fn bucket_metrics(&self) -> Option<&BucketMetrics> {
        self.inner.remote.as_ref()?.metrics.as_ref()
    }

    /// With a bucket: this node's id.
    pub fn node_id(&self) -> Option<&str> {
        self.inner.remote.as_ref().map(|r| r.bucket.node_id())
    }

    /// With a bucket: read the other nodes' manifests and published files now (at start, so
    /// that the first query already covers them). An error: the nodes could not be listed;
    /// otherwise what could not be read of single nodes.
    pub async fn refresh_peers(&self) -> Result<Vec<String>, BucketError> {
        match &self.inner.remote {
            Some(r) => peers::refresh(r).await,
            None => Ok(Vec::new()),
        }
    }

    /// With a bucket: keep reading the other nodes' manifests every `every` until `stop`.
    pub fn watch_peers(
        &self,
        every: std::time::Duration,
        stop: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.inner.remote.as_ref()?;
        Some(tokio::spawn(peers::run(self.clone(), every, stop)))
    }

    /// With a bucket: every segment of every node that is in the bucket (this node's uploaded
    /// ones and the other nodes'), with the client that reaches them. What a distributed query
    /// reads.
    pub fn segments_in_bucket(&self) -> Option<BucketSegments> {
        let r = self.inner.remote.as_ref()?;
        let keys = self
            .snapshot()
            .bucket_segments()
            .into_iter()
            .filter(|s| !s.meta.pending_upload)
            .map(|s| (s.key, s.meta.bytes))
            .collect();
        Some(BucketSegments { url: r.bucket.store_url(), client: r.bucket.object_store(), keys })
    }

    /// The file `name` each other node published, by node id.
    pub fn peer_files(&self, name: &str) -> Vec<(String, bytes::Bytes)> {
        let Some(r) = &self.inner.remote else { return Vec::new() };
        r.peer_view().nodes.iter().filter_map(|n| Some((n.node.clone(), n.file(name)?.clone()))).collect()
    }

    /// With a bucket: publish this node's file `name` for the other nodes (while the lease is held).
    pub async fn publish_file(&self, name: &str, body: Vec<u8>) -> Result<(), BucketError> {
        let Some(r) = &self.inner.remote else { return Ok(()) };
        if r.query_only || r.lease.as_ref().is_some_and(|l| !l.held()) {
            return Ok(());
        }
        r.bucket.put_node_file(name, body).await
    }

    /// With a bucket: whether segments and WAL waiting for upload have reached
    /// `storage.upload_backlog_max_bytes`, so that WAL writes are refused until uploads catch up.
    pub(crate) fn upload_backlog_full(&self) -> Option<(u64, u64)> {
        let r = self.inner.remote.as_ref()?;
        if !r.backlog_full.load(Ordering::Relaxed) {
            return None;
        }
        Some((self.upload_backlog_bytes(), r.backlog_max_bytes))
    }

    /// Bytes of segments not yet uploaded plus the WAL kept for them. WAL not yet flushed is
    /// left out: it is bounded by `flush_bytes`, and counting it could keep the WAL refusing
    /// the very writes whose rotation would flush it.
    fn upload_backlog_bytes(&self) -> u64 {
        let (pending, flushed_through): (u64, u64) = {
            let st = self.read_state();
            let pending = st.manifest.segments.iter().filter(|s| s.pending_upload).map(|s| s.bytes).sum();
            (pending, st.manifest.wal_flushed_through)
        };
        let kept: u64 = wal::list(&self.wal_dir())
            .unwrap_or_default()
            .into_iter()
            .filter(|(gen_, _)| *gen_ <= flushed_through)
            .filter_map(|(_, path)| std::fs::metadata(path).ok())
            .map(|m| m.len())
            .sum();
        pending + kept
    }

    /// Recompute the upload backlog and its gauges (after a flush, an upload, a WAL rotation).
    pub(crate) fn refresh_backlog(&self) {
        let Some(r) = &self.inner.remote else { return };
        let bytes = self.upload_backlog_bytes();
        let (segments, oldest) = {
            let st = self.read_state();
            let pending = st.manifest.segments.iter().filter(|s| s.pending_upload);
            (pending.clone().count(), pending.map(|s| s.max_received_at).min())
        };
        let full = bytes >= r.backlog_max_bytes;
        let was = r.backlog_full.swap(full, Ordering::Relaxed);
        if full != was {
            if full {
                tracing::error!(backlog_bytes = bytes, limit = r.backlog_max_bytes, bucket = %r.bucket.location(),
                    "segments waiting for the bucket have reached storage.upload_backlog_max_bytes: ingest is refused \
                     (HTTP 503) or held back (stream listeners) until uploads catch up");
            } else {
                tracing::warn!(
                    backlog_bytes = bytes,
                    "the upload backlog is below its limit again: ingest goes on"
                );
            }
        }
        if let Some(m) = &r.metrics {
            m.backlog_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
            m.backlog_segments.set(segments as i64);
            let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
            let age = oldest.map_or(0, |t| now.saturating_sub(t).max(0) / 1_000_000_000);
            m.backlog_oldest_seconds.set(age);
        }
    }
}

impl Remote {
    fn new(setup: BucketSetup, cache: SegmentCache) -> Remote {
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

    fn peer_view(&self) -> Arc<peers::PeerView> {
        self.peers.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether this store uploads (not on a query node).
    pub(crate) fn uploads(&self) -> bool {
        !self.query_only
    }

    /// Tie the local manifest to the bucket (adopting the bucket's on an empty data directory),
    /// check that segments waiting for upload are still here, and list the local copies.
    /// Returns whether the manifest changed.
    fn open(setup: BucketSetup, root: &Path, manifest: &mut Manifest) -> Result<(Remote, bool), StoreError> {
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
        let cache = SegmentCache::new(root.join("segments"), setup.cache_max_bytes, setup.metrics.clone());
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
fn tied_to(manifest: &Manifest, location: &str, dir: &Path) -> Result<bool, StoreError> {
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

impl State {
    fn add(&mut self, gen_: u64, b: MemBatch) {
        self.mem_bytes += b.batch.get_array_memory_size();
        self.mem_rows += b.batch.num_rows();
        self.mem.entry(gen_).or_default().push(b);
    }
}

/// Replace `path` with `bytes` so that a crash leaves the old or the new content, never a
/// mix: write a temporary file beside it, fsync, rename over, fsync the directory. A failure
/// (a full disk) removes the temporary file, so it holds no space; `path` is unchanged.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let replaced = replace_with(path, &tmp, bytes);
    if replaced.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    replaced
}

fn replace_with(path: &Path, tmp: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(tmp)?;
    #[cfg(test)]
    if faults::hit(path, faults::Fault::Replace) {
        let _ = f.write_all(&bytes[..bytes.len() / 2]);
        return Err(faults::enospc());
    }
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
