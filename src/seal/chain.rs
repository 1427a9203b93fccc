//! The hash chain: `data_dir/seal/chain.jsonl`, one line per change to a stored object, each
//! naming the hash of the line before it.
//!
//! A line is `HASH SP BODY LF`: `BODY` is one JSON object (`seq`, `prev`, `time`, `record`) and
//! `HASH` the SHA-256 of exactly those bytes, in hex. `prev` is the previous line's `HASH` (zeros
//! for the first), `seq` counts from 1. Records say what changed: bytes appended to a file (a WAL
//! group, audit lines), a file written once (a Parquet segment), a new version of a file
//! replaced whole (the manifest), a file removed on purpose (retention, a flushed WAL file, an
//! evicted cache copy). Each is written after the change it describes is durable, so a crash
//! can leave a change without its line, never a line without its change; the daemon chains
//! such changes at its next start, marked `recovered` (see `recover` in `store`).
//!
//! Lines reach the file with a `write` each and an fsync at every checkpoint and before a
//! removal. A write that fails (a full disk) is cut back and the line kept in memory, written
//! before the next one. `seal/state.json`, saved at each checkpoint, is where the daemon's start
//! resumes reading instead of reading the whole chain.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::digest::{Digest, sha256};
use crate::metrics::SealMetrics;

pub const DIR: &str = "seal";
pub const CHAIN_FILE: &str = "chain.jsonl";
const STATE_FILE: &str = "state.json";
/// Lines kept in memory while the chain file cannot be written; past this the daemon stops
/// keeping them (and says so), rather than growing without bound on a failing disk.
const MAX_PENDING_BYTES: usize = 64 << 20;
/// Longer than any entry logwarden writes (a few hundred bytes): a longer line is not one.
pub const MAX_LINE: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("failed to {op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error(
        "the seal chain {path} is damaged at byte {offset} ({reason}): it is evidence, so the daemon does not \
         write after it; run `logwarden verify`, keep a copy of the data directory, then move {dir} aside to \
         start a new chain"
    )]
    Damaged { path: PathBuf, dir: PathBuf, offset: u64, reason: String },
}

/// Why a file was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteReason {
    /// Retention (`storage.retention_*`, `audit.retention_max_age`).
    Retention,
    /// A WAL file whose events are in a segment the manifest names.
    Flushed,
    /// A local copy of a segment that is in the bucket.
    Evicted,
}

/// One change to a stored object. Objects are named by their path under the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Record {
    /// `len` bytes appended at `offset` (a WAL group; audit lines).
    Append {
        object: String,
        offset: u64,
        len: u64,
        sha256: Digest,
        #[serde(default, skip_serializing_if = "is_false")]
        recovered: bool,
    },
    /// A file written once and never changed (a Parquet segment, with the newest WAL
    /// generation whose events it holds).
    File {
        object: String,
        len: u64,
        sha256: Digest,
        #[serde(default, skip_serializing_if = "is_zero")]
        wal_through: u64,
        #[serde(default, skip_serializing_if = "is_false")]
        recovered: bool,
    },
    /// A new version of a file that is replaced whole (the manifest, `generation` counting up).
    Version {
        object: String,
        generation: u64,
        len: u64,
        sha256: Digest,
        #[serde(default, skip_serializing_if = "is_false")]
        recovered: bool,
    },
    /// A file removed on purpose.
    Delete { object: String, reason: DeleteReason },
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Record {
    pub fn object(&self) -> &str {
        match self {
            Record::Append { object, .. }
            | Record::File { object, .. }
            | Record::Version { object, .. }
            | Record::Delete { object, .. } => object,
        }
    }
}

/// One line's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub seq: u64,
    pub prev: Digest,
    /// When the line was written (RFC 3339, UTC).
    pub time: String,
    pub record: Record,
}

/// A line read back: its hash as written, and its body. The hash is checked against the body.
pub fn parse_line(line: &[u8]) -> Result<(Digest, Entry), String> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let Some(space) = line.iter().position(|b| *b == b' ') else {
        return Err("no space between the hash and the entry".into());
    };
    let (hash, body) = (&line[..space], &line[space + 1..]);
    let hash = std::str::from_utf8(hash)
        .ok()
        .and_then(Digest::from_hex)
        .ok_or_else(|| "the line does not start with a SHA-256 in hex".to_string())?;
    let entry: Entry = serde_json::from_slice(body).map_err(|e| format!("the entry does not parse: {e}"))?;
    if sha256(body) != hash {
        return Err("the entry's bytes do not hash to the hash written before them".into());
    }
    Ok((hash, entry))
}

/// The head of a chain: how many entries, and the last one's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: Digest,
}

/// What the daemon needs to know of the chain to go on writing it and to recover after a crash:
/// where appends end, which files and which manifest are chained. Saved as `state.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct View {
    head: Head,
    /// Bytes of `chain.jsonl` this view covers.
    offset: u64,
    ends: BTreeMap<String, u64>,
    /// The chained appends of WAL files not yet removed: checked before a start replays them.
    wal_ranges: BTreeMap<String, Vec<(u64, u64, Digest)>>,
    files: BTreeSet<String>,
    manifest: Option<(u64, Digest)>,
}

impl View {
    fn apply(&mut self, hash: Digest, e: &Entry, line_len: u64) {
        self.head = Head { seq: e.seq, hash };
        self.offset += line_len;
        match &e.record {
            Record::Append { object, offset, len, sha256, .. } => {
                self.ends.insert(object.clone(), offset.saturating_add(*len));
                if object.starts_with("wal/") {
                    self.wal_ranges.entry(object.clone()).or_default().push((*offset, *len, *sha256));
                }
            }
            Record::File { object, .. } => {
                self.files.insert(object.clone());
            }
            Record::Version { generation, sha256, .. } => self.manifest = Some((*generation, *sha256)),
            Record::Delete { object, .. } => {
                self.ends.remove(object);
                self.wal_ranges.remove(object);
                self.files.remove(object);
            }
        }
    }
}

/// The chain the daemon appends to, shared by the threads that change stored objects.
pub struct Chain {
    dir: PathBuf,
    inner: Mutex<Writer>,
    metrics: Option<SealMetrics>,
}

struct Writer {
    file: File,
    path: PathBuf,
    /// Bytes of the file known written.
    written: u64,
    /// Lines made but not yet written (the file could not take them).
    pending: Vec<u8>,
    /// Includes the pending lines.
    view: View,
    failing: bool,
}

impl Chain {
    /// Open `data_dir/seal/`, creating it on a fresh directory, and read the chain from where
    /// the last saved state ends. A last line cut short (a crash mid-write) is removed; any other
    /// damage refuses the start.
    pub fn open(data_dir: &Path, metrics: Option<SealMetrics>) -> Result<Chain, ChainError> {
        let dir = data_dir.join(DIR);
        std::fs::create_dir_all(&dir).map_err(|source| ChainError::Io {
            op: "create",
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(CHAIN_FILE);
        let io = |op, source| ChainError::Io { op, path: path.clone(), source };
        let mut file =
            OpenOptions::new().create(true).read(true).append(true).open(&path).map_err(|e| io("open", e))?;
        let len = file.metadata().map_err(|e| io("stat", e))?.len();
        let mut view = load_state(&dir).filter(|v| v.offset <= len).unwrap_or_default();
        file.seek(SeekFrom::Start(view.offset)).map_err(|e| io("seek", e))?;
        let mut reader = std::io::BufReader::with_capacity(1 << 20, &file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line).map_err(|e| io("read", e))?;
            if n == 0 {
                break;
            }
            let offset = view.offset;
            if line.last() != Some(&b'\n') {
                if n as u64 == MAX_LINE {
                    return Err(ChainError::Damaged {
                        path: path.clone(),
                        dir: dir.clone(),
                        offset,
                        reason: format!("a line longer than {MAX_LINE} bytes"),
                    });
                }
                tracing::warn!(file = %path.display(), bytes = n, "the seal chain ends in a line cut short (a crash mid-write); removing it");
                drop(reader);
                file.set_len(view.offset).map_err(|e| io("truncate", e))?;
                break;
            }
            let line = &line[..];
            let damaged =
                |reason: String| ChainError::Damaged { path: path.clone(), dir: dir.clone(), offset, reason };
            let (hash, entry) = parse_line(line).map_err(damaged)?;
            if entry.prev != view.head.hash || entry.seq != view.head.seq + 1 {
                return Err(damaged(format!(
                    "entry {} does not follow entry {} (its prev is not that entry's hash)",
                    entry.seq, view.head.seq
                )));
            }
            view.apply(hash, &entry, line.len() as u64);
        }
        let written = view.offset;
        Ok(Chain {
            dir,
            inner: Mutex::new(Writer { file, path, written, pending: Vec::new(), view, failing: false }),
            metrics,
        })
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Chain `record`. Never fails: a line the file cannot take waits in memory and goes first
    /// with the next one (the failure is logged and counted).
    pub fn record(&self, record: Record) -> Head {
        let mut w = self.writer();
        let entry = Entry {
            seq: w.view.head.seq + 1,
            prev: w.view.head.hash,
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            record,
        };
        // An Entry of strings and integers always serializes.
        let body = serde_json::to_vec(&entry).unwrap_or_default();
        let hash = sha256(&body);
        let line_len = 64 + 1 + body.len() + 1;
        if w.pending.len() + line_len > MAX_PENDING_BYTES {
            tracing::error!(file = %w.path.display(), "the seal chain has not been writable for {MAX_PENDING_BYTES} bytes of entries; \
                this change is not chained (verify will report its object)");
            self.count_error("chain_dropped");
            return w.view.head;
        }
        w.pending.extend_from_slice(hash.to_hex().as_bytes());
        w.pending.push(b' ');
        w.pending.extend_from_slice(&body);
        w.pending.push(b'\n');
        w.view.apply(hash, &entry, line_len as u64);
        if let Some(m) = &self.metrics {
            m.entries.inc();
        }
        self.write_pending(&mut w);
        w.view.head
    }

    fn write_pending(&self, w: &mut Writer) {
        if w.pending.is_empty() {
            return;
        }
        let Writer { file, pending, .. } = &mut *w;
        match file.write_all(pending) {
            Ok(()) => {
                w.written += w.pending.len() as u64;
                w.pending.clear();
                if std::mem::take(&mut w.failing) {
                    tracing::warn!(file = %w.path.display(), "the seal chain is written again");
                }
            }
            Err(e) => {
                // Cut back so that a line written in part is not followed by the next one.
                let _ = w.file.set_len(w.written);
                self.count_error("chain_write");
                if !std::mem::replace(&mut w.failing, true) {
                    tracing::error!(file = %w.path.display(), error = %e,
                        "failed to write the seal chain; entries wait in memory until it can be written");
                }
            }
        }
    }

    /// Write what waits and fsync the chain, then save the state the next start resumes from.
    /// Returns the head now durable.
    pub fn sync(&self) -> Result<Head, ChainError> {
        let mut w = self.writer();
        self.write_pending(&mut w);
        let io = |op, path: &Path, source| ChainError::Io { op, path: path.to_path_buf(), source };
        if !w.pending.is_empty() {
            return Err(io("write", &w.path, io::Error::other("entries still wait to be written")));
        }
        w.file.sync_data().map_err(|e| {
            self.count_error("chain_fsync");
            io("fsync", &w.path, e)
        })?;
        let state = serde_json::to_vec(&w.view).unwrap_or_default();
        let state_path = self.dir.join(STATE_FILE);
        crate::store::write_atomic(&state_path, &state).map_err(|e| io("replace", &state_path, e))?;
        Ok(w.view.head)
    }

    pub fn head(&self) -> Head {
        self.writer().view.head
    }

    /// Where the chained appends to `object` end, if any are chained.
    pub fn appended_end(&self, object: &str) -> Option<u64> {
        self.writer().view.ends.get(object).copied()
    }

    /// The chained appends (offset, length, digest) of a WAL file not removed.
    pub fn wal_ranges(&self, object: &str) -> Vec<(u64, u64, Digest)> {
        self.writer().view.wal_ranges.get(object).cloned().unwrap_or_default()
    }

    /// At a start: chain, marked recovered, the bytes of an append-only `object` past its last
    /// chained append (from `start` when none is): what a crash left between a write and its
    /// entry. A file shorter than its chained appends lost records, which is logged as an error.
    pub fn recover_tail(&self, object: String, path: &Path, file: &File, start: u64) {
        let Ok(len) = file.metadata().map(|m| m.len()) else { return };
        let end = self.appended_end(&object).unwrap_or(start);
        if len > end {
            match super::digest::sha256_range(file, end, len - end) {
                Ok((sha256, n)) => {
                    tracing::warn!(file = %path.display(), from = end, bytes = n,
                        "seal: chaining what the last run wrote without chaining it (a crash); verify lists it as recovered");
                    self.record(Record::Append { object, offset: end, len: n, sha256, recovered: true });
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "seal: cannot read bytes to chain them")
                }
            }
        } else if len < end {
            tracing::error!(file = %path.display(), len, chained = end,
                "seal: a file is shorter than what the chain says was written to it: it was cut back; \
                 `logwarden verify` names it");
        }
    }

    /// Whether `object` is chained as a file written once (and not removed since).
    pub fn has_file(&self, object: &str) -> bool {
        self.writer().view.files.contains(object)
    }

    /// The generation and digest of the newest chained manifest.
    pub fn manifest(&self) -> Option<(u64, Digest)> {
        self.writer().view.manifest
    }

    /// How many files written once are chained and not removed (a checkpoint's count).
    pub fn files(&self) -> usize {
        self.writer().view.files.len()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn count_error(&self, op: &str) {
        if let Some(m) = &self.metrics {
            m.errors.with_label_values(&[op]).inc();
        }
    }
}

fn load_state(dir: &Path) -> Option<View> {
    let path = dir.join(STATE_FILE);
    let bytes = std::fs::read(&path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "the seal state does not parse; reading the whole chain");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(object: &str, offset: u64) -> Record {
        Record::Append { object: object.into(), offset, len: 3, sha256: sha256(b"abc"), recovered: false }
    }

    #[test]
    fn entries_link_and_a_reopened_chain_goes_on_from_its_head() {
        let dir = tempfile::tempdir().unwrap();
        let chain = Chain::open(dir.path(), None).unwrap();
        let h1 = chain.record(append("wal/1.wal", 8));
        let h2 = chain.record(append("wal/1.wal", 11));
        assert_eq!((h1.seq, h2.seq), (1, 2));
        assert_eq!(chain.appended_end("wal/1.wal"), Some(14));
        drop(chain);
        let text = std::fs::read(dir.path().join("seal/chain.jsonl")).unwrap();
        let lines: Vec<_> = text.split_inclusive(|b| *b == b'\n').collect();
        let (a, ea) = parse_line(lines[0]).unwrap();
        let (b, eb) = parse_line(lines[1]).unwrap();
        assert_eq!((ea.prev, eb.prev, b), (Digest::ZERO, a, h2.hash));

        let chain = Chain::open(dir.path(), None).unwrap();
        assert_eq!(chain.head(), h2);
        chain.sync().unwrap();
        let h3 = chain.record(Record::Delete { object: "wal/1.wal".into(), reason: DeleteReason::Flushed });
        drop(chain);
        // From the saved state: the lines after it are read.
        let chain = Chain::open(dir.path(), None).unwrap();
        assert_eq!((chain.head(), chain.appended_end("wal/1.wal")), (h3, None));
    }

    #[test]
    fn a_torn_last_line_is_removed_and_an_edited_line_refuses_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let chain = Chain::open(dir.path(), None).unwrap();
        let h = chain.record(append("audit/a.jsonl", 0));
        drop(chain);
        let path = dir.path().join("seal/chain.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"0123 {\"seq\"").unwrap();
        let chain = Chain::open(dir.path(), None).unwrap();
        assert_eq!(chain.head(), h);
        chain.record(append("audit/a.jsonl", 3));
        drop(chain);
        let text = std::fs::read_to_string(&path).unwrap().replace("\"offset\":3", "\"offset\":4");
        std::fs::write(&path, text).unwrap();
        let err = Chain::open(dir.path(), None).err().unwrap();
        assert!(err.to_string().contains("damaged at byte "), "{err}");
    }
}
