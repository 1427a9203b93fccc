//! The store's side of the seal at start: changes a crash left without their chain entry (the
//! entry is written just after the change is durable) are chained now, marked `recovered`; what
//! cannot be a crash's leftover (a WAL file shorter than its chained appends, a manifest older
//! than the newest chained) is logged as an error for `logwarden verify` to name.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::manifest::{self, Manifest};
use super::{StoreError, wal};
use crate::seal::digest::{sha256, sha256_range};
use crate::seal::{Chain, DeleteReason, Record};

/// Bytes at the start of every WAL file before its first record.
const WAL_MAGIC_LEN: u64 = 8;

/// Remove WAL files whose data is in segments (a crash came between the manifest and their
/// removal), each chained as removed first.
pub(super) fn remove_flushed_wal(chain: Option<&Chain>, files: &[(u64, PathBuf)]) {
    if files.is_empty() {
        return;
    }
    if let Some(chain) = chain {
        for (gen_, _) in files {
            chain.record(Record::Delete { object: wal::object_name(*gen_), reason: DeleteReason::Flushed });
        }
        if let Err(e) = chain.sync() {
            tracing::warn!(error = %e, "failed to fsync the seal chain before removing flushed WAL files");
        }
    }
    for (_, path) in files {
        let _ = std::fs::remove_file(path);
    }
}

/// Before a WAL file is replayed: every chained append must read back as it was written (its
/// records would otherwise be stored again, altered, as a new segment, and the file removed).
pub(super) fn check_wal(chain: &Chain, generation: u64, path: &Path) -> Result<(), StoreError> {
    let object = wal::object_name(generation);
    let ranges = chain.wal_ranges(&object);
    if ranges.is_empty() {
        return Ok(());
    }
    let altered = |from: u64, to: u64| StoreError::AlteredWal {
        path: path.to_path_buf(),
        object: object.clone(),
        from,
        to,
    };
    let file = File::open(path).map_err(|source| wal::WalError::Io {
        op: "open",
        path: path.to_path_buf(),
        source,
    })?;
    for (offset, len, digest) in ranges {
        let end = offset.saturating_add(len);
        match sha256_range(&file, offset, len) {
            Ok((d, n)) if n == len && d == digest => {}
            Ok(_) => return Err(altered(offset, end)),
            Err(source) => {
                return Err(wal::WalError::Io { op: "read", path: path.to_path_buf(), source }.into());
            }
        }
    }
    Ok(())
}

/// Chain what the last run made durable but did not chain.
pub(super) fn recover(chain: &Chain, root: &Path, manifest: &Manifest, live_wal: &[(u64, PathBuf)]) {
    for (gen_, path) in live_wal {
        recover_wal(chain, *gen_, path);
    }
    for s in &manifest.segments {
        let object = format!("segments/{}", s.file);
        if chain.has_file(&object) {
            continue;
        }
        // With a bucket a segment may have no local copy: nothing here to chain.
        let Ok(file) = File::open(root.join("segments").join(&s.file)) else { continue };
        match sha256_range(&file, 0, u64::MAX) {
            Ok((sha256, len)) => {
                tracing::warn!(segment = %s.file, "seal: chaining a segment the last run wrote without chaining it (a crash)");
                chain.record(Record::File {
                    object,
                    len,
                    sha256,
                    wal_through: s.wal_through,
                    recovered: true,
                });
            }
            Err(e) => {
                tracing::error!(segment = %s.file, error = %e, "seal: cannot read a segment to chain it")
            }
        }
    }
    let path = Manifest::path(root);
    let Ok(bytes) = std::fs::read(&path) else { return };
    let digest = sha256(&bytes);
    match chain.manifest() {
        Some((_, chained)) if chained == digest => {}
        chained => {
            if let Some((g, _)) = chained
                && manifest.generation <= g
            {
                tracing::error!(file = %path.display(), generation = manifest.generation, chained_generation = g,
                    "seal: manifest.json is not the newest manifest the chain records: it was replaced with an older or \
                     edited copy; `logwarden verify` names it, and it is chained again from here");
            } else {
                tracing::warn!(
                    generation = manifest.generation,
                    "seal: chaining the manifest the last run wrote without chaining it"
                );
            }
            chain.record(Record::Version {
                object: manifest::FILE_NAME.into(),
                generation: manifest.generation,
                len: bytes.len() as u64,
                sha256: digest,
                recovered: true,
            });
        }
    }
}

fn recover_wal(chain: &Chain, generation: u64, path: &Path) {
    if let Ok(file) = File::open(path) {
        chain.recover_tail(wal::object_name(generation), path, &file, WAL_MAGIC_LEN);
    }
}
