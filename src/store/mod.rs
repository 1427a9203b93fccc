//! Durable storage: the WAL, Parquet segments with their manifest, retention, and the shared
//! state that queries read (segments plus durable batches not yet written as Parquet).
//!
//! Writers go through [`Appender`] (see `pipeline`); readers take a [`Snapshot`]. A batch becomes
//! visible to queries in the same step that makes it durable, and moves from memory to a segment
//! atomically, so a query never sees a row twice or misses one.

#[cfg(feature = "s3")]
mod aws_profile;
pub mod bucket;
mod cache;
mod failures;
#[cfg(test)]
pub(crate) mod faults;
mod flush;
mod lease;
mod manifest;
mod migrate;
mod peers;
mod pipeline;
mod remote;
mod retention;
mod seal;
mod segment;
mod table;
#[cfg(test)]
mod tests;
mod upload;
pub mod wal;
mod wal_thread;

pub use bucket::{Bucket, BucketError};
pub use lease::Lease;
pub use manifest::FILE_NAME as MANIFEST_FILE;
pub use manifest::{Manifest, SegmentMeta};
pub use migrate::{Migrated, migrate_to_bucket};
pub use peers::{ALERTS_FILE, TEMPLATES_FILE};
pub use pipeline::{AppendError, Appender, Durable, HeldLease, Pipeline, PipelineOptions};
pub use remote::BucketSetup;
pub(crate) use remote::Remote;
pub use table::LogsTable;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use arrow::array::{Array, RecordBatch, TimestampNanosecondArray};

use crate::batch::TIMESTAMP_INDEX;
use crate::metrics::{BucketMetrics, Metrics};
use crate::seal::{Chain, Record};
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
        "WAL file {path} does not hold what the seal chain says was written to it (bytes {from}..{to}, entry of \
         {object}): it was altered after it was written, and is not replayed; keep a copy and run `logwarden verify`. \
         To start without it, move it out of the wal directory (its events are then missing, and verify says so)"
    )]
    AlteredWal { path: PathBuf, object: String, from: u64, to: u64 },
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
    /// The seal's hash chain, told of every durable change to the WAL, segments and manifest.
    chain: Option<Arc<Chain>>,
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
    /// With `chain`, what a crash left unchained is chained (see `seal.rs`).
    pub fn open(
        data_dir: &Path,
        at: SegmentsAt,
        metrics: Option<Metrics>,
        chain: Option<Arc<Chain>>,
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
        let mut live_wal = Vec::new();
        let mut flushed_wal = Vec::new();
        for (gen_, path) in wal::list(&data_dir.join("wal"))? {
            last_gen = last_gen.max(gen_);
            if gen_ <= deletable {
                // Flushed before a crash that came ahead of the file's removal.
                flushed_wal.push((gen_, path));
                continue;
            }
            live_wal.push((gen_, path.clone()));
            if gen_ <= manifest.wal_flushed_through {
                continue;
            }
            if let Some(chain) = &chain {
                seal::check_wal(chain, gen_, &path)?;
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
        // Recovery first: a segment a crash left unchained is chained before the WAL files it
        // holds are chained as removed.
        if let Some(chain) = &chain {
            seal::recover(chain, &root, &manifest, &live_wal);
            if let Some(remote) = &remote {
                remote.cache.set_chain(chain.clone());
            }
        }
        seal::remove_flushed_wal(chain.as_deref(), &flushed_wal);
        state.manifest = manifest;
        let store = Store {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_path_buf(),
                root,
                state: RwLock::new(state),
                manifest_lock: Mutex::new(()),
                metrics,
                remote,
                chain,
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
                chain: None,
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
        let (len, sha256) = manifest.store(self.root())?;
        if let Some(chain) = self.chain() {
            chain.record(Record::Version {
                object: manifest::FILE_NAME.into(),
                generation: manifest.generation,
                len,
                sha256,
                recovered: false,
            });
        }
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

    pub(crate) fn chain(&self) -> Option<&Arc<Chain>> {
        self.inner.chain.as_ref()
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
        if body.len() as u64 > peers::MAX_FILE_BYTES {
            return Err(BucketError::TooLarge {
                name: name.to_owned(),
                bytes: body.len() as u64,
                max: peers::MAX_FILE_BYTES,
            });
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
