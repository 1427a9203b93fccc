//! The write-ahead log: numbered files of checksummed, length-prefixed records, each record one
//! Arrow IPC stream holding one batch.
//!
//! File `wal/<generation>.wal` = magic, then records `len:u32le crc32c:u32le payload`. A record is
//! acknowledged only after the fsync that follows it. At start every file is read back; a record
//! that is short, has an impossible length or a wrong checksum marks a torn tail: the file is
//! truncated there (a crash mid-write) and the rest is used.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::error::ArrowError;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

const MAGIC: &[u8; 8] = b"LWWAL001";
/// A record larger than this is treated as corruption rather than allocated.
const MAX_RECORD: u32 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("failed to {op} WAL file {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error("failed to encode a batch for the WAL: {0}")]
    Encode(ArrowError),
    #[error("WAL file {path} is not a logwarden WAL (bad magic)")]
    BadMagic { path: PathBuf },
    #[error("no WAL generation is open: the last one could not be started")]
    NoGeneration,
    #[error(
        "segments waiting for the bucket hold {bytes} bytes of local disk, at storage.upload_backlog_max_bytes ({limit}): \
         nothing more is written until uploads catch up"
    )]
    UploadBacklog { bytes: u64, limit: u64 },
}

impl WalError {
    /// The file system is full (or the daemon's quota is): space may come back.
    /// Writing again later may work: the disk or the bucket may come back.
    pub fn is_transient(&self) -> bool {
        matches!(self, WalError::Io { .. } | WalError::UploadBacklog { .. })
    }

    pub fn is_disk_full(&self) -> bool {
        matches!(self, WalError::Io { source, .. }
            if matches!(source.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded))
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::Io { op, path: path.to_path_buf(), source }
}

pub fn file_name(generation: u64) -> String {
    format!("{generation:016}.wal")
}

/// WAL files in `dir` with their generations, oldest first.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(gen_) = name.strip_suffix(".wal").and_then(|g| g.parse::<u64>().ok()) {
            out.push((gen_, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Encode one batch as a WAL record payload.
pub fn encode(batch: &RecordBatch) -> Result<Vec<u8>, WalError> {
    let mut buf = Vec::with_capacity(batch.get_array_memory_size() / 2 + 1024);
    let mut w = StreamWriter::try_new(&mut buf, &batch.schema()).map_err(WalError::Encode)?;
    w.write(batch).map_err(WalError::Encode)?;
    w.finish().map_err(WalError::Encode)?;
    drop(w);
    Ok(buf)
}

/// Records appended by one [`WalWriter::append`].
#[derive(Debug, Clone, Copy)]
pub struct Appended {
    pub offset: u64,
    pub len: u64,
    pub sha256: crate::seal::Digest,
}

/// A WAL file's name under the data directory (`wal/GENERATION.wal`).
pub fn object_name(generation: u64) -> String {
    format!("wal/{}", file_name(generation))
}

/// An open WAL file being appended to.
pub struct WalWriter {
    file: File,
    path: PathBuf,
    generation: u64,
    len: u64,
    /// The length at the last successful fsync: what a restart is sure to find.
    synced: u64,
}

impl WalWriter {
    /// Create a new, empty generation file (fails if it exists: generations never repeat). A
    /// file that could not be completed (a full disk) is removed again, so it neither holds
    /// space nor looks like a generation.
    pub fn create(dir: &Path, generation: u64) -> Result<Self, WalError> {
        let path = dir.join(file_name(generation));
        let mut file =
            OpenOptions::new().create_new(true).write(true).open(&path).map_err(io_err("create", &path))?;
        let started = Self::start(&mut file, &path).and_then(|()| sync_dir(dir));
        if let Err(e) = started {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let len = MAGIC.len() as u64;
        Ok(WalWriter { file, path, generation, len, synced: len })
    }

    fn start(file: &mut File, path: &Path) -> Result<(), WalError> {
        #[cfg(test)]
        if super::faults::hit(path, super::faults::Fault::WalCreate) {
            return Err(io_err("write", path)(super::faults::enospc()));
        }
        file.write_all(MAGIC).map_err(io_err("write", path))?;
        file.sync_all().map_err(io_err("fsync", path))
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn size(&self) -> u64 {
        self.len
    }

    /// Append encoded payloads as records (not yet durable: call [`WalWriter::sync`]). After a
    /// failure the file may hold part of them: call [`WalWriter::rollback`] before anything else.
    /// Returns where the records went and the SHA-256 of their bytes (for the seal's chain).
    pub fn append(&mut self, payloads: &[Vec<u8>]) -> Result<Appended, WalError> {
        let total: usize = payloads.iter().map(|p| p.len() + 8).sum();
        let mut buf = Vec::with_capacity(total);
        for p in payloads {
            buf.extend_from_slice(&(p.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32c::crc32c(p).to_le_bytes());
            buf.extend_from_slice(p);
        }
        #[cfg(test)]
        if super::faults::hit(&self.path, super::faults::Fault::WalWrite) {
            let _ = self.file.write_all(&buf[..buf.len() / 2]);
            return Err(io_err("write", &self.path)(super::faults::enospc()));
        }
        self.file.write_all(&buf).map_err(io_err("write", &self.path))?;
        let appended =
            Appended { offset: self.len, len: buf.len() as u64, sha256: crate::seal::digest::sha256(&buf) };
        self.len += buf.len() as u64;
        Ok(appended)
    }

    /// The file's name under the data directory, as the seal's chain names it.
    pub fn object(&self) -> String {
        object_name(self.generation)
    }

    /// Make every appended record durable.
    pub fn sync(&mut self) -> Result<(), WalError> {
        #[cfg(test)]
        if super::faults::hit(&self.path, super::faults::Fault::WalSync) {
            return Err(io_err("fsync", &self.path)(super::faults::enospc()));
        }
        self.file.sync_data().map_err(io_err("fsync", &self.path))?;
        self.synced = self.len;
        Ok(())
    }

    /// Cut the file back to its last fsync, after a failed append or fsync: a record written
    /// in part (a full disk) would otherwise end every later record's replay, and a record
    /// whose fsync failed was refused to its sender, who will send it again. Returns the bytes
    /// removed. If this fails too, the file must not be appended to again.
    pub fn rollback(&mut self) -> Result<u64, WalError> {
        let cut = self.file.metadata().map_err(io_err("stat", &self.path))?.len().saturating_sub(self.synced);
        self.file.set_len(self.synced).map_err(io_err("truncate", &self.path))?;
        // The file offset stays where the failed write left it; the next record goes at the end.
        self.file.seek(SeekFrom::Start(self.synced)).map_err(io_err("seek", &self.path))?;
        self.file.sync_all().map_err(io_err("fsync", &self.path))?;
        self.len = self.synced;
        Ok(cut)
    }
}

pub fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync directory", dir))
}

/// What reading one WAL file found.
pub struct Recovered {
    pub batches: Vec<RecordBatch>,
    /// Byte offset of the end of the last good record.
    pub good_len: u64,
    /// Bytes after `good_len` that did not form a complete, valid record.
    pub torn_bytes: u64,
}

/// Read every intact record of a WAL file. Stops at the first bad record (a torn tail).
pub fn read(path: &Path) -> Result<Recovered, WalError> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let file_len = file.metadata().map_err(io_err("stat", path))?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    match r.read_exact(&mut magic) {
        Ok(()) if &magic == MAGIC => {}
        // A crash between create and the magic's fsync leaves a short file: nothing to recover.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Ok(Recovered { batches: vec![], good_len: 0, torn_bytes: file_len });
        }
        Err(e) => return Err(io_err("read", path)(e)),
        Ok(()) => return Err(WalError::BadMagic { path: path.to_path_buf() }),
    }
    let mut good = MAGIC.len() as u64;
    let mut batches = Vec::new();
    let mut payload = Vec::new();
    loop {
        let mut head = [0u8; 8];
        match r.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(io_err("read", path)(e)),
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_RECORD || good + 8 + u64::from(len) > file_len {
            break;
        }
        payload.resize(len as usize, 0);
        match r.read_exact(&mut payload) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(io_err("read", path)(e)),
        }
        if crc32c::crc32c(&payload) != crc {
            break;
        }
        // Batches from an earlier schema gain its later (nullable) columns as nulls.
        let decoded: Result<Vec<RecordBatch>, ArrowError> =
            StreamReader::try_new(io::Cursor::new(&payload), None)
                .and_then(|rd| rd.map(|b| b.and_then(crate::batch::conform)).collect());
        match decoded {
            Ok(b) => batches.extend(b),
            // A checksummed record that does not decode was written by a different version:
            // stop here like a torn tail rather than guess.
            Err(_) => break,
        }
        good += 8 + u64::from(len);
    }
    Ok(Recovered { batches, good_len: good, torn_bytes: file_len - good })
}

/// Cut a file back to its last good record.
pub fn truncate(path: &Path, len: u64) -> Result<(), WalError> {
    let f = OpenOptions::new().write(true).open(path).map_err(io_err("open", path))?;
    f.set_len(len).map_err(io_err("truncate", path))?;
    let mut f = f;
    f.seek(SeekFrom::End(0)).map_err(io_err("seek", path))?;
    f.sync_all().map_err(io_err("fsync", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{EventBatchBuilder, Origin};
    use crate::ingest::event::Event;
    use std::borrow::Cow;

    fn batch(n: usize) -> RecordBatch {
        let mut b = EventBatchBuilder::new(Origin {
            listener: "l".into(),
            peer: "p".into(),
            client_id: "".into(),
            protocol: crate::ingest::event::Protocol::Syslog,
        });
        for i in 0..n {
            let msg = format!("message {i}");
            b.append(&Event::raw(Cow::Borrowed(&msg), "x"), i as i64);
        }
        b.finish().unwrap()
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 7).unwrap();
        w.append(&[encode(&batch(3)).unwrap(), encode(&batch(2)).unwrap()]).unwrap();
        w.sync().unwrap();
        let good = w.size();
        // Half a record: what a crash in the middle of a write leaves.
        let third = encode(&batch(4)).unwrap();
        w.append(&[third]).unwrap();
        let path = dir.path().join(file_name(7));
        let full = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(good + (full - good) / 2).unwrap();

        let rec = read(&path).unwrap();
        assert_eq!(rec.batches.iter().map(|b| b.num_rows()).sum::<usize>(), 5);
        assert_eq!(rec.good_len, good);
        assert!(rec.torn_bytes > 0);
        truncate(&path, rec.good_len).unwrap();
        let again = read(&path).unwrap();
        assert_eq!(again.torn_bytes, 0);
        assert_eq!(list(dir.path()).unwrap(), vec![(7, path)]);
    }

    #[test]
    fn a_rollback_cuts_a_half_written_record_so_the_next_one_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 3).unwrap();
        w.append(&[encode(&batch(2)).unwrap()]).unwrap();
        w.sync().unwrap();
        crate::store::faults::inject(dir.path(), crate::store::faults::Fault::WalWrite, 1);
        assert!(w.append(&[encode(&batch(50)).unwrap()]).is_err());
        assert!(w.rollback().unwrap() > 0, "the failed write left nothing to cut");
        w.append(&[encode(&batch(3)).unwrap()]).unwrap();
        w.sync().unwrap();
        let rec = read(&dir.path().join(file_name(3))).unwrap();
        assert_eq!(rec.batches.iter().map(RecordBatch::num_rows).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(rec.torn_bytes, 0);
    }

    #[test]
    fn a_generation_that_cannot_be_started_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        crate::store::faults::inject(dir.path(), crate::store::faults::Fault::WalCreate, 1);
        assert!(WalWriter::create(dir.path(), 4).is_err());
        assert!(list(dir.path()).unwrap().is_empty(), "a failed start left its file");
        WalWriter::create(dir.path(), 4).unwrap();
    }

    #[test]
    fn a_flipped_byte_ends_recovery_at_that_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 1).unwrap();
        w.append(&[encode(&batch(1)).unwrap()]).unwrap();
        let first = w.size();
        w.append(&[encode(&batch(1)).unwrap()]).unwrap();
        w.sync().unwrap();
        let path = dir.path().join(file_name(1));
        let mut bytes = std::fs::read(&path).unwrap();
        let i = first as usize + 20;
        bytes[i] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let rec = read(&path).unwrap();
        assert_eq!(rec.batches.len(), 1);
        assert_eq!(rec.good_len, first);
    }
}
