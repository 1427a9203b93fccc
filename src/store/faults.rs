//! Faults injected into storage writes, for unit tests only: the next few operations of a kind
//! on files under a path fail as a full disk makes them fail (ENOSPC), after doing what such a
//! failure leaves behind (half a record written, an empty file created).
//!
//! Keyed by path so that tests running in parallel, each in its own temporary directory, never
//! see each other's faults.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A WAL append writes half its bytes, then fails.
    WalWrite,
    /// A WAL fsync fails (the bytes are in the file, not known to be durable).
    WalSync,
    /// A new WAL generation file is created, then writing its header fails.
    WalCreate,
    /// A Parquet segment's temporary file is written in part, then the write fails.
    Segment,
    /// An atomic replace (manifest, state files) writes half its temporary file, then fails.
    Replace,
}

static FAULTS: Mutex<Vec<(PathBuf, Fault, u32)>> = Mutex::new(Vec::new());

/// The next `times` operations of kind `fault` on files under `under` fail.
pub fn inject(under: &Path, fault: Fault, times: u32) {
    FAULTS.lock().unwrap_or_else(|e| e.into_inner()).push((under.to_path_buf(), fault, times));
}

/// Whether this operation of kind `fault` on `path` fails (using up one injected fault).
pub fn hit(path: &Path, fault: Fault) -> bool {
    let mut all = FAULTS.lock().unwrap_or_else(|e| e.into_inner());
    let Some(i) = all.iter().position(|(p, f, n)| *f == fault && *n > 0 && path.starts_with(p)) else {
        return false;
    };
    all[i].2 -= 1;
    true
}

/// Faults of kind `fault` under `under` not used up yet.
pub fn remaining(under: &Path, fault: Fault) -> u32 {
    let all = FAULTS.lock().unwrap_or_else(|e| e.into_inner());
    all.iter().filter(|(p, f, _)| *f == fault && p == under).map(|(_, _, n)| n).sum()
}

/// Space came back: no more faults under `under`.
pub fn clear(under: &Path) {
    FAULTS.lock().unwrap_or_else(|e| e.into_inner()).retain(|(p, _, _)| !p.starts_with(under));
}

/// The error a full disk gives.
pub fn enospc() -> std::io::Error {
    std::io::Error::from_raw_os_error(28)
}
