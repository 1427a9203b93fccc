//! With a bucket: the local copies of segments that queries read instead of the bucket.
//!
//! A segment this node writes starts here, pinned until its upload is confirmed; then it is an
//! ordinary entry. A query that needs a segment with no local copy reads it from the bucket
//! and asks for a copy, which a background task downloads (two at a time) when it fits.
//! Entries leave least recently used first once the copies exceed `storage.cache_max_bytes`,
//! but never one a query used within [`IN_USE`] (or the node's query time limit and then some,
//! if longer): a plan names local files when it is made and opens them later, so a copy is
//! kept past the time limit of its last reader.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::bucket::Bucket;
use crate::metrics::BucketMetrics;

/// A copy read by a query this recently is not evicted (at least).
pub const IN_USE: Duration = Duration::from_secs(15 * 60);
/// Downloads in flight at once.
const DOWNLOADS: usize = 2;

struct Entry {
    bytes: u64,
    last_used: Instant,
    /// Not yet in the bucket: the only copy, never evicted.
    pinned: bool,
}

#[derive(Default)]
struct Copies {
    entries: HashMap<String, Entry>,
    /// Bytes of the unpinned entries (what `cache_max_bytes` bounds).
    bytes: u64,
    downloading: HashSet<String>,
}

pub struct SegmentCache {
    dir: PathBuf,
    /// The seal's chain, told when this node's own copies are evicted (they are in the bucket).
    chain: std::sync::OnceLock<Arc<crate::seal::Chain>>,
    max_bytes: u64,
    /// A copy read this recently is not evicted.
    in_use: Duration,
    copies: Mutex<Copies>,
    downloads: Arc<Semaphore>,
    metrics: Option<BucketMetrics>,
}

impl SegmentCache {
    pub fn new(dir: PathBuf, max_bytes: u64, metrics: Option<BucketMetrics>) -> SegmentCache {
        if let Some(m) = &metrics {
            m.cache_max_bytes.set(i64::try_from(max_bytes).unwrap_or(i64::MAX));
        }
        SegmentCache {
            dir,
            chain: std::sync::OnceLock::new(),
            max_bytes,
            in_use: IN_USE,
            copies: Mutex::new(Copies::default()),
            downloads: Arc::new(Semaphore::new(DOWNLOADS)),
            metrics,
        }
    }

    /// Keep copies read within `held` (when longer than [`IN_USE`]): a query may open the files
    /// its plan names until its time limit.
    pub fn kept_in_use_for(mut self, held: Duration) -> SegmentCache {
        self.in_use = self.in_use.max(held);
        self
    }

    pub fn set_chain(&self, chain: Arc<crate::seal::Chain>) {
        let _ = self.chain.set(chain);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Copies> {
        self.copies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of `file` is on disk (written here or found at start); `pinned` while it is not
    /// yet in the bucket.
    pub fn insert(&self, file: &str, bytes: u64, pinned: bool) {
        let mut c = self.lock();
        if let Some(old) =
            c.entries.insert(file.to_owned(), Entry { bytes, last_used: Instant::now(), pinned })
            && !old.pinned
        {
            c.bytes -= old.bytes;
        }
        if !pinned {
            c.bytes += bytes;
        }
        drop(c);
        self.evict();
    }

    /// `file` is in the bucket now: its copy may be evicted.
    pub fn unpin(&self, file: &str) {
        let mut c = self.lock();
        let Some(e) = c.entries.get_mut(file) else { return };
        if e.pinned {
            e.pinned = false;
            let bytes = e.bytes;
            c.bytes += bytes;
        }
        drop(c);
        self.evict();
    }

    /// Forget and delete the copies under `prefix` whose keys are not in `named` and that no
    /// query used within [`IN_USE`] (a plan opens the files it names later); the others are
    /// looked at again next time.
    pub fn retire_unnamed(&self, prefix: &str, named: &HashSet<String>) {
        let gone: Vec<String> = {
            let mut c = self.lock();
            let gone: Vec<String> = c
                .entries
                .iter()
                .filter(|(k, e)| {
                    k.starts_with(prefix) && !named.contains(*k) && e.last_used.elapsed() >= self.in_use
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in &gone {
                if let Some(e) = c.entries.remove(k)
                    && !e.pinned
                {
                    c.bytes -= e.bytes;
                }
            }
            gone
        };
        for k in &gone {
            self.remove_file(k);
        }
        if !gone.is_empty() {
            self.update_gauge();
        }
    }

    /// Retention dropped `file`: forget and delete its copy.
    pub fn remove(&self, file: &str) {
        let mut c = self.lock();
        if let Some(e) = c.entries.remove(file)
            && !e.pinned
        {
            c.bytes -= e.bytes;
        }
        drop(c);
        self.remove_file(file);
        self.update_gauge();
    }

    /// Whether a query can read `file` locally; counts a hit or a miss and marks it used.
    pub fn lookup(&self, file: &str) -> bool {
        let mut c = self.lock();
        let hit = match c.entries.get_mut(file) {
            Some(e) => {
                e.last_used = Instant::now();
                true
            }
            None => false,
        };
        drop(c);
        if let Some(m) = &self.metrics {
            if hit { m.cache_hits.inc() } else { m.cache_misses.inc() }
        }
        hit
    }

    /// Download `file` (object `key`, `bytes` long) in the background if it can fit.
    pub fn fetch_later(
        self: &Arc<Self>,
        bucket: &Bucket,
        file: &str,
        key: object_store::path::Path,
        bytes: u64,
    ) {
        if bytes > self.max_bytes || !is_relative_below(file) {
            return;
        }
        {
            let mut c = self.lock();
            if c.entries.contains_key(file) || !c.downloading.insert(file.to_owned()) {
                return;
            }
        }
        let (cache, bucket, file) = (self.clone(), bucket.clone(), file.to_owned());
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.lock().downloading.remove(&file);
            return;
        };
        rt.spawn(async move {
            let _slot = cache.downloads.clone().acquire_owned().await;
            if let Err(e) = cache.download(&bucket, &file, &key, bytes).await {
                tracing::warn!(object = %bucket.object_url(&key), error = %e, "failed to copy a segment into the local cache; queries read it from the bucket");
                if let Some(m) = &cache.metrics {
                    m.errors.with_label_values(&["cache_fill"]).inc();
                }
            }
            cache.lock().downloading.remove(&file);
        });
    }

    async fn download(
        &self,
        bucket: &Bucket,
        file: &str,
        key: &object_store::path::Path,
        bytes: u64,
    ) -> anyhow::Result<()> {
        // Make room first: a copy that cannot fit beside what is in use is not made.
        if !self.make_room(bytes) {
            return Ok(());
        }
        let path = self.dir.join(file);
        let tmp = self.dir.join(format!("{file}.download"));
        if let Some(parent) = tmp.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let copied = match bucket.download_to(key, bytes, &tmp).await {
            Ok(()) => tokio::fs::rename(&tmp, &path).await.map_err(anyhow::Error::from),
            Err(e) => Err(e.into()),
        };
        if copied.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        copied?;
        if let Some(m) = &self.metrics {
            m.cache_filled_bytes.inc_by(bytes);
        }
        self.insert(file, bytes, false);
        Ok(())
    }

    /// Evict until `extra` more bytes fit; false if copies in use leave no room.
    fn make_room(&self, extra: u64) -> bool {
        self.evict_to(self.max_bytes.saturating_sub(extra));
        self.lock().bytes + extra <= self.max_bytes
    }

    fn evict(&self) {
        self.evict_to(self.max_bytes);
    }

    fn evict_to(&self, limit: u64) {
        let mut gone = Vec::new();
        {
            let mut c = self.lock();
            if c.bytes > limit {
                let mut victims: Vec<(Instant, String, u64)> = c
                    .entries
                    .iter()
                    .filter(|(_, e)| !e.pinned && e.last_used.elapsed() >= self.in_use)
                    .map(|(f, e)| (e.last_used, f.clone(), e.bytes))
                    .collect();
                victims.sort();
                for (_, file, bytes) in victims {
                    if c.bytes <= limit {
                        break;
                    }
                    c.entries.remove(&file);
                    c.bytes -= bytes;
                    gone.push((file, bytes));
                }
            }
        }
        for (file, bytes) in &gone {
            // This node's own segments are chained; other nodes' copies (`peers/...`) are not.
            if let Some(chain) = self.chain.get()
                && !file.contains('/')
            {
                chain.record(crate::seal::Record::Delete {
                    object: format!("segments/{file}"),
                    reason: crate::seal::DeleteReason::Evicted,
                });
            }
            self.remove_file(file);
            if let Some(m) = &self.metrics {
                m.cache_evicted_bytes.inc_by(*bytes);
            }
        }
        self.update_gauge();
    }

    fn remove_file(&self, file: &str) {
        if !is_relative_below(file) {
            return;
        }
        if let Err(e) = std::fs::remove_file(self.dir.join(file))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = %self.dir.join(file).display(), error = %e, "failed to delete a cached segment copy");
        }
    }

    fn update_gauge(&self) {
        if let Some(m) = &self.metrics {
            m.cache_bytes.set(i64::try_from(self.lock().bytes).unwrap_or(i64::MAX));
        }
    }
}

/// Whether `key` names a path below the cache directory (only plain names between `/`): keys
/// come from manifests, which the callers check, and this keeps a bad one off the file system
/// all the same.
fn is_relative_below(key: &str) -> bool {
    let path = Path::new(key);
    !key.is_empty() && path.components().all(|c| matches!(c, std::path::Component::Normal(_)))
}
