//! Durable storage: the WAL, Parquet segments with their manifest, retention, and the shared
//! state that queries read (segments plus durable batches not yet written as Parquet).
//!
//! Writers go through [`Appender`] (see `pipeline`); readers take a [`Snapshot`]. A batch becomes
//! visible to queries in the same step that makes it durable, and moves from memory to a segment
//! atomically, so a query never sees a row twice or misses one.

#[cfg(test)]
mod faults;
mod flush;
mod manifest;
mod pipeline;
mod retention;
mod segment;
mod table;
#[cfg(test)]
mod tests;
pub mod wal;
mod wal_thread;

pub use manifest::{Manifest, SegmentMeta};
pub use pipeline::{AppendError, Appender, Durable, Pipeline, PipelineOptions};
pub use table::LogsTable;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use arrow::array::{Array, RecordBatch, TimestampNanosecondArray};

use crate::batch::TIMESTAMP_INDEX;
use crate::metrics::Metrics;

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
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub segments_dir: PathBuf,
    pub segments: Vec<SegmentMeta>,
    pub mem: Vec<MemBatch>,
}

/// Shared handle to the storage state. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    data_dir: PathBuf,
    state: RwLock<State>,
    metrics: Option<Metrics>,
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
        self.inner.data_dir.join("segments")
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.inner.data_dir.join("wal")
    }

    /// Open for the daemon: create directories, replay the WAL (truncating torn tails) and drop
    /// WAL files that the manifest says are already in segments.
    pub fn open(data_dir: &Path, metrics: Option<Metrics>) -> Result<(Store, Recovery), StoreError> {
        for dir in [data_dir.to_path_buf(), data_dir.join("wal"), data_dir.join("segments")] {
            std::fs::create_dir_all(&dir)
                .map_err(|source| StoreError::CreateDir { path: dir.clone(), source })?;
        }
        let manifest = Manifest::load(data_dir)?;
        segment::remove_temporaries(&data_dir.join("segments"));
        let mut rec = Recovery { segments: manifest.segments.len(), ..Default::default() };
        let mut state = State::default();
        let mut last_gen = manifest.wal_flushed_through;
        for (gen_, path) in wal::list(&data_dir.join("wal"))? {
            last_gen = last_gen.max(gen_);
            if gen_ <= manifest.wal_flushed_through {
                // Flushed before a crash that came ahead of the file's removal.
                let _ = std::fs::remove_file(&path);
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
            inner: Arc::new(Inner { data_dir: data_dir.to_path_buf(), state: RwLock::new(state), metrics }),
        };
        if let Some(m) = &store.inner.metrics {
            m.wal_replayed_events.inc_by(rec.replayed_rows as u64);
        }
        store.update_gauges();
        Ok((store, rec))
    }

    /// Open a data directory that a running daemon may be writing, without changing anything:
    /// for `logwarden query`. A torn WAL tail is skipped, not truncated.
    pub fn open_read_only(data_dir: &Path) -> Result<Store, StoreError> {
        // A reader never creates the directory: a wrong path must not read as "no events".
        if !data_dir.is_dir() {
            return Err(StoreError::NoDataDir { path: data_dir.to_path_buf() });
        }
        // The daemon may flush and delete a WAL file between our listing and reading it;
        // a consistent view is the manifest read *after* the WAL files, so retry on a miss.
        for _ in 0..5 {
            match Self::read_view(data_dir) {
                Ok(state) => {
                    return Ok(Store {
                        inner: Arc::new(Inner {
                            data_dir: data_dir.to_path_buf(),
                            state: RwLock::new(state),
                            metrics: None,
                        }),
                    });
                }
                Err(StoreError::Wal(wal::WalError::Io { source, .. }))
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Self::read_view(data_dir).map(|state| Store {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_path_buf(),
                state: RwLock::new(state),
                metrics: None,
            }),
        })
    }

    fn read_view(data_dir: &Path) -> Result<State, StoreError> {
        let mut state = State::default();
        let files = wal::list(&data_dir.join("wal"))?;
        let mut read = Vec::new();
        for (gen_, path) in files {
            read.push((gen_, wal::read(&path)?));
        }
        let manifest = Manifest::load(data_dir)?;
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
            segments: st.manifest.segments.clone(),
            mem: st.mem.values().flatten().cloned().collect(),
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

    /// Install a manifest that now covers generations up to `flushed_through`: those batches
    /// leave memory in the same step.
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
