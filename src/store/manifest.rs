//! The manifest: which Parquet segments make up the stored data, and up to which WAL generation
//! their contents reach. Replaced atomically (write, fsync, rename, fsync directory).
//!
//! `wal_flushed_through` is what makes a flush exactly-once across a crash: WAL generations at or
//! below it are already in segments, so replay skips them even if their files still exist.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const FILE_NAME: &str = "manifest.json";

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("failed to {op} manifest {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("manifest {path} is corrupt: {source}")]
    Corrupt { path: PathBuf, source: serde_json::Error },
}

/// One Parquet file of sorted events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    pub id: u64,
    /// File name inside the segments directory.
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    /// Smallest and largest `timestamp` (ns, UTC), for pruning and retention.
    pub min_ts: i64,
    pub max_ts: i64,
    /// Largest `received_at` in the segment.
    pub max_received_at: i64,
    /// The newest WAL generation this segment holds (with a bucket: the WAL up to here may go
    /// once the segment is uploaded). 0 in manifests written before buckets.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wal_through: u64,
    /// With a bucket: written here but not yet uploaded (or its upload not yet confirmed by the
    /// bucket's manifest).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending_upload: bool,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// Counts every write of this manifest (the seal's chain tells an older copy put back by
    /// it). 0 in manifests written before it.
    #[serde(default)]
    pub generation: u64,
    pub next_segment_id: u64,
    /// Every WAL generation up to and including this one is contained in `segments`.
    pub wal_flushed_through: u64,
    pub segments: Vec<SegmentMeta>,
    /// With a bucket: where the segments not pending upload are (`s3://BUCKET/PREFIX/nodes/NODE`),
    /// so that a data directory is never taken for another bucket's or node's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// With a bucket: WAL generations up to here are in uploaded segments and may be deleted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wal_uploaded_through: u64,
    /// With a bucket: objects retention removed from the manifest and still to delete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_deletes: Vec<String>,
}

impl Manifest {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE_NAME)
    }

    /// The manifest in `data_dir`, or an empty one on a fresh directory.
    pub fn load(data_dir: &Path) -> Result<Manifest, ManifestError> {
        let path = Self::path(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| ManifestError::Corrupt { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Manifest { version: 1, ..Default::default() })
            }
            Err(source) => Err(ManifestError::Io { op: "read", path, source }),
        }
    }

    /// Write the next generation of this manifest (atomically). Returns its bytes' length and
    /// SHA-256, as the seal chains them.
    pub fn store(&mut self, data_dir: &Path) -> Result<(u64, crate::seal::Digest), ManifestError> {
        let path = Self::path(data_dir);
        self.generation += 1;
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|source| ManifestError::Corrupt { path: path.clone(), source })?;
        super::write_atomic(&path, &bytes).map_err(|source| ManifestError::Io {
            op: "replace",
            path,
            source,
        })?;
        Ok((bytes.len() as u64, crate::seal::digest::sha256(&bytes)))
    }

    /// What makes this manifest one logwarden never writes, if anything: a segment file name
    /// that is not one of its own (a manifest from the bucket is another program's word until
    /// checked: its names become local paths and its sizes downloads), an empty segment, or a
    /// time range that ends before it starts (it would match every query's time filter).
    pub fn implausible(&self) -> Option<String> {
        self.segments.iter().find_map(|s| {
            if !super::segment::is_file_name(&s.file) {
                Some(format!("names a segment file {:?} logwarden never writes", s.file))
            } else if s.bytes == 0 || s.rows == 0 {
                Some(format!("gives segment {} no rows or no bytes", s.file))
            } else if s.min_ts > s.max_ts {
                Some(format!("gives segment {} a time range that ends before it starts", s.file))
            } else {
                None
            }
        })
    }

    pub fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    pub fn total_rows(&self) -> u64 {
        self.segments.iter().map(|s| s.rows).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::load(dir.path()).unwrap();
        assert!(m.segments.is_empty());
        let mut m2 = Manifest {
            version: 1,
            next_segment_id: 2,
            wal_flushed_through: 5,
            segments: vec![SegmentMeta {
                id: 1,
                file: "a.parquet".into(),
                rows: 3,
                bytes: 10,
                min_ts: 1,
                max_ts: 2,
                max_received_at: 3,
                wal_through: 0,
                pending_upload: false,
            }],
            ..Default::default()
        };
        m2.store(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), m2);
    }
}
