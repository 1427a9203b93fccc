//! Day files of JSON lines (`audit/audit-DATE.jsonl`, `rules/results-DATE.jsonl`): appended in
//! whole lines, each append fsynced and cut back if it fails, and read as the rows of a table.
//!
//! A line can still be damaged: a crash in the middle of a write, or a disk that failed so
//! badly that even the cut-back failed. One such line must not make the whole table
//! unreadable: it is skipped, and warned about (file and line number) and counted in
//! `logwarden_damaged_lines_total{table}` once each. A last line without its newline is still
//! being written, or was cut short by a crash: readers leave it out, and the writer ends it
//! before appending after it, so that it stays one damaged line instead of spoiling the next.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use datafusion::common::{DataFusionError, Result};
use prometheus::IntCounter;

/// Damaged lines remembered (so each is reported once); past this, further ones go unreported.
const MAX_REMEMBERED: usize = 100_000;

/// Open a day file for appending. If its last line was cut short (a crash), it is ended first.
pub fn open_append(path: &Path) -> io::Result<File> {
    let mut f = OpenOptions::new().create(true).append(true).read(true).open(path)?;
    let len = f.metadata()?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        f.read_exact_at(&mut last, len - 1)?;
        if last[0] != b'\n' {
            f.write_all(b"\n")?;
        }
    }
    Ok(f)
}

/// Append whole lines and fsync; returns the offset they start at. On failure (a full disk)
/// the file is cut back to where it was, so no partial line is left for the next append to run
/// into.
pub fn append_lines(f: &mut File, lines: &[u8]) -> io::Result<u64> {
    let len = f.metadata()?.len();
    let written = f.write_all(lines).and_then(|()| f.sync_data());
    if written.is_err() {
        let _ = f.set_len(len);
    }
    written.map(|()| len)
}

/// The damaged lines of one table's files: each warned about and counted once.
#[derive(Debug)]
pub struct DamagedLines {
    table: &'static str,
    seen: Mutex<HashSet<(PathBuf, usize)>>,
    counter: Option<IntCounter>,
}

impl DamagedLines {
    /// For the table `table`, counting in `counter` (None: `logwarden query`, warnings only).
    pub fn new(table: &'static str, counter: Option<IntCounter>) -> DamagedLines {
        DamagedLines { table, seen: Mutex::default(), counter }
    }

    fn report(&self, path: &Path, line: usize) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_REMEMBERED || !seen.insert((path.to_path_buf(), line)) {
            return;
        }
        drop(seen);
        if let Some(c) = &self.counter {
            c.inc();
        }
        tracing::warn!(table = self.table, file = %path.display(), line,
            "skipped a damaged line (cut short by a crash or a full disk); the rest of the table is read");
    }
}

/// Every complete line of every `*.jsonl` file in `dir` (oldest name first) as rows of
/// `schema`, damaged lines skipped.
pub fn read_dir(dir: &Path, schema: SchemaRef, damaged: &DamagedLines) -> Result<Vec<RecordBatch>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(DataFusionError::External(Box::new(e))),
    };
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let mut bytes = std::fs::read(&path).map_err(|e| {
            DataFusionError::Execution(format!(
                "failed to read {} file {}: {e}",
                damaged.table,
                path.display()
            ))
        })?;
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        bytes.truncate(complete);
        out.extend(read_lines(&path, &bytes, &schema, damaged)?);
    }
    Ok(out)
}

/// The rows of one file's complete lines. The whole file is decoded at once; only when that
/// fails is it decoded line by line to find the damaged ones.
fn read_lines(
    path: &Path,
    bytes: &[u8],
    schema: &SchemaRef,
    damaged: &DamagedLines,
) -> Result<Vec<RecordBatch>> {
    if let Ok(batches) = decode(bytes, schema) {
        return Ok(batches);
    }
    let mut good = Vec::with_capacity(bytes.len());
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match decode(line, schema) {
            Ok(b) if b.iter().any(|b| b.num_rows() > 0) => {
                good.extend_from_slice(line);
                good.push(b'\n');
            }
            _ => damaged.report(path, i + 1),
        }
    }
    decode(&good, schema).map_err(|e| {
        DataFusionError::Execution(format!(
            "{} file {} could not be read: {e}",
            damaged.table,
            path.display()
        ))
    })
}

fn decode(bytes: &[u8], schema: &SchemaRef) -> Result<Vec<RecordBatch>, ArrowError> {
    arrow::json::ReaderBuilder::new(schema.clone()).with_batch_size(8192).build(bytes)?.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("a", DataType::Utf8, false)]))
    }

    #[test]
    fn damaged_lines_are_skipped_and_reported_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t-2026-01-01.jsonl");
        // A line cut short, a line of zeros (a crash on some file systems), a number, and a
        // last line still being written.
        std::fs::write(&file, b"{\"a\":\"1\"}\n{\"a\":\"2\n\0\0\0\n7\n{\"a\":\"3\"}\n{\"a\":").unwrap();
        let counter = IntCounter::new("d", "d").unwrap();
        let damaged = DamagedLines::new("t", Some(counter.clone()));
        for _ in 0..2 {
            let batches = read_dir(dir.path(), schema(), &damaged).unwrap();
            assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 2);
        }
        assert_eq!(counter.get(), 3, "each damaged line counted once");
        let seen = damaged.seen.lock().unwrap();
        assert!(
            seen.contains(&(file.clone(), 2))
                && seen.contains(&(file.clone(), 3))
                && seen.contains(&(file, 4))
        );
    }

    #[test]
    fn an_append_ends_a_line_cut_short_first() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.jsonl");
        std::fs::write(&file, b"{\"a\":\"1\"}\n{\"a\":").unwrap();
        let mut f = open_append(&file).unwrap();
        append_lines(&mut f, b"{\"a\":\"2\"}\n").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"{\"a\":\"1\"}\n{\"a\":\n{\"a\":\"2\"}\n");
    }
}
