//! Retention: delete whole segments that are older than `retention_max_age` (by their newest
//! event) or, oldest first, while all segments exceed `retention_max_bytes`.
//!
//! The manifest without them is committed first and the files are removed after, so a crash in
//! between leaves only unreferenced files, never a manifest naming a missing file. With a bucket,
//! the manifest records the objects to delete (`pending_deletes`), and the uploader deletes them
//! once the bucket's manifest no longer names them; a delete the bucket refuses (Object Lock, a
//! legal hold, a policy) is logged, counted and tried again an hour later, never blocking ingest.

use std::time::Duration;

use super::Store;
use super::manifest::{ManifestError, SegmentMeta};
use crate::seal::{DeleteReason, Record};

/// Which segments to drop, given the current time in ns.
pub fn select(
    segments: &[SegmentMeta],
    now_ns: i64,
    max_age: Option<Duration>,
    max_bytes: Option<u64>,
) -> Vec<u64> {
    let mut drop_ids = Vec::new();
    if let Some(age) = max_age {
        let cutoff = now_ns.saturating_sub(age.as_nanos().min(i64::MAX as u128) as i64);
        drop_ids.extend(
            segments.iter().filter(|s| s.max_ts < cutoff && s.max_received_at < cutoff).map(|s| s.id),
        );
    }
    if let Some(limit) = max_bytes {
        let mut kept: Vec<&SegmentMeta> = segments.iter().filter(|s| !drop_ids.contains(&s.id)).collect();
        kept.sort_by_key(|s| (s.max_ts, s.id));
        let mut total: u64 = kept.iter().map(|s| s.bytes).sum();
        for s in kept {
            if total <= limit {
                break;
            }
            total -= s.bytes;
            drop_ids.push(s.id);
        }
    }
    drop_ids
}

pub fn apply(store: &Store, max_age: Option<Duration>, max_bytes: Option<u64>) {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    if select(&store.manifest().segments, now, max_age, max_bytes).is_empty() {
        return;
    }
    let committed = store.update_manifest(|manifest| {
        let ids = select(&manifest.segments, now, max_age, max_bytes);
        let (gone, kept): (Vec<SegmentMeta>, Vec<SegmentMeta>) =
            std::mem::take(&mut manifest.segments).into_iter().partition(|s| ids.contains(&s.id));
        manifest.segments = kept;
        if let Some(remote) = store.remote() {
            // Deleted from the bucket by the uploader, once the bucket's manifest no longer names them.
            let uploaded = gone.iter().filter(|s| !s.pending_upload);
            manifest.pending_deletes.extend(uploaded.map(|s| remote.bucket.segment_key(&s.file).to_string()));
        }
        Ok::<_, ManifestError>(gone)
    });
    let gone = match committed {
        Ok(gone) if gone.is_empty() => return,
        Ok(gone) => gone,
        Err(e) => {
            tracing::error!(error = %e, "retention could not commit the manifest; no segment was deleted");
            return;
        }
    };
    if let Some(chain) = store.chain() {
        for s in &gone {
            chain.record(Record::Delete {
                object: format!("segments/{}", s.file),
                reason: DeleteReason::Retention,
            });
        }
        if let Err(e) = chain.sync() {
            tracing::warn!(error = %e, "failed to fsync the seal chain before retention's removals");
        }
    }
    match store.remote() {
        Some(remote) => {
            for s in &gone {
                remote.cache.remove(&s.file);
            }
            remote.wake.notify_one();
            store.refresh_backlog();
        }
        None => {
            let dir = store.segments_dir();
            for s in &gone {
                if let Err(e) = std::fs::remove_file(dir.join(&s.file)) {
                    tracing::warn!(segment = %s.file, error = %e, "failed to delete an expired segment");
                }
            }
        }
    }
    if let Some(m) = store.metrics() {
        m.retention_deleted_segments.inc_by(gone.len() as u64);
    }
    tracing::info!(
        segments = gone.len(),
        bytes = gone.iter().map(|s| s.bytes).sum::<u64>(),
        "retention deleted segments"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(id: u64, max_ts: i64, bytes: u64) -> SegmentMeta {
        SegmentMeta {
            id,
            file: format!("{id}"),
            rows: 1,
            bytes,
            min_ts: 0,
            max_ts,
            max_received_at: max_ts,
            wal_through: 0,
            pending_upload: false,
        }
    }

    #[test]
    fn drops_by_age_then_oldest_first_by_size() {
        let s = vec![seg(1, 10, 100), seg(2, 50, 100), seg(3, 90, 100)];
        assert_eq!(select(&s, 100, Some(Duration::from_nanos(60)), None), vec![1]);
        assert_eq!(select(&s, 100, None, Some(150)), vec![1, 2]);
        assert_eq!(select(&s, 100, Some(Duration::from_nanos(60)), Some(150)), vec![1, 2]);
        assert!(select(&s, 100, None, None).is_empty());
    }
}
