//! Writing one Parquet segment: the batches of one or more WAL generations, sorted by
//! `timestamp`, zstd compressed, written to a temporary name, fsynced and renamed into place.
//! A write that fails removes what it wrote.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, RecordBatch, TimestampNanosecondArray};
use arrow::compute::{SortOptions, concat_batches, sort_to_indices, take_record_batch};
use arrow::error::ArrowError;
use parquet::arrow::ArrowWriter;

use crate::seal::Digest;
use crate::seal::digest::HashingWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::manifest::SegmentMeta;
use crate::batch::{self, TIMESTAMP_INDEX};

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("failed to {op} segment {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("failed to sort batches for segment {id}: {source}")]
    Sort { id: u64, source: ArrowError },
    #[error("failed to write Parquet segment {path}: {source}")]
    Parquet { path: PathBuf, source: ParquetError },
}

pub struct SegmentOptions {
    pub row_group_rows: usize,
    pub zstd_level: i32,
}

pub fn file_name(id: u64) -> String {
    format!("{id:016}.parquet")
}

/// Whether `name` is a segment file name as [`file_name`] makes them: a manifest read from the
/// bucket (another node's, or this node's adopted after a disk loss) names local paths, so a
/// name with a `/` or `..` must never reach the file system.
pub fn is_file_name(name: &str) -> bool {
    name.strip_suffix(".parquet").is_some_and(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_digit()))
}

/// Write `batches` as segment `id` in `dir`. Returns `None` when there are no rows; else the
/// segment and the SHA-256 of its file, taken as it was written.
pub fn write(
    dir: &Path,
    id: u64,
    batches: &[RecordBatch],
    opts: &SegmentOptions,
) -> Result<Option<(SegmentMeta, Digest)>, SegmentError> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows == 0 {
        return Ok(None);
    }
    let sorted = sort_by_timestamp(batches).map_err(|source| SegmentError::Sort { id, source })?;
    let ts = sorted
        .column(TIMESTAMP_INDEX)
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .map(|a| (a.value(0), a.value(a.len() - 1)));
    let (min_ts, max_ts) = ts.unwrap_or((0, 0));
    let max_received_at = sorted
        .column(1)
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .and_then(arrow::compute::max)
        .unwrap_or(max_ts);

    let name = file_name(id);
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}.tmp"));
    let level = ZstdLevel::try_new(opts.zstd_level)
        .map_err(|source| SegmentError::Parquet { path: path.clone(), source })?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(opts.row_group_rows.max(1)))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(Some(vec![SortingColumn {
            column_idx: TIMESTAMP_INDEX as i32,
            descending: false,
            nulls_first: false,
        }]));
    // Sorted timestamps and receive times close to them differ by small steps: delta encoding
    // stores those steps in a few bits where a dictionary or plain values need eight bytes.
    let props = [batch::col::TIMESTAMP, batch::col::RECEIVED_AT]
        .into_iter()
        .fold(props, |p, c| {
            let c = ColumnPath::from(c);
            p.set_column_dictionary_enabled(c.clone(), false)
                .set_column_encoding(c, Encoding::DELTA_BINARY_PACKED)
        })
        .build();
    let written = write_file(dir, &tmp, &path, &sorted, props, opts.row_group_rows);
    let (bytes, digest) = match written {
        Ok(written) => written,
        Err(e) => {
            // Nothing names this segment yet: what a failure left (a full disk) must not hold space.
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    };
    let meta = SegmentMeta {
        id,
        file: name,
        rows: rows as u64,
        bytes,
        min_ts,
        max_ts,
        max_received_at,
        wal_through: 0,
        pending_upload: false,
    };
    Ok(Some((meta, digest)))
}

/// Write `sorted` to `tmp`, fsync, rename it to `path` and fsync `dir`; the file's size and
/// SHA-256.
fn write_file(
    dir: &Path,
    tmp: &Path,
    path: &Path,
    sorted: &RecordBatch,
    props: WriterProperties,
    row_group_rows: usize,
) -> Result<(u64, Digest), SegmentError> {
    let io = |op, p: &Path| {
        let p = p.to_path_buf();
        move |source| SegmentError::Io { op, path: p, source }
    };
    let file = File::create(tmp).map_err(io("create", tmp))?;
    let parquet_err = |source| SegmentError::Parquet { path: tmp.to_path_buf(), source };
    let file = HashingWriter::new(file);
    let mut w = ArrowWriter::try_new(file, batch::schema(), Some(props)).map_err(parquet_err)?;
    // Hand the writer slices of a row group's size so it never holds more than it must.
    let rows = sorted.num_rows();
    let mut offset = 0;
    while offset < rows {
        let n = row_group_rows.max(1).min(rows - offset);
        w.write(&sorted.slice(offset, n)).map_err(parquet_err)?;
        offset += n;
    }
    #[cfg(test)]
    if super::faults::hit(tmp, super::faults::Fault::Segment) {
        return Err(SegmentError::Io {
            op: "write",
            path: tmp.to_path_buf(),
            source: super::faults::enospc(),
        });
    }
    let (file, digest, _) = w.into_inner().map_err(parquet_err)?.into_parts();
    file.sync_all().map_err(io("fsync", tmp))?;
    let bytes = file.metadata().map_err(io("stat", tmp))?.len();
    drop(file);
    std::fs::rename(tmp, path).map_err(io("rename", tmp))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync directory of", path))?;
    Ok((bytes, digest))
}

fn sort_by_timestamp(batches: &[RecordBatch]) -> Result<RecordBatch, ArrowError> {
    let all = concat_batches(&batch::schema(), batches)?;
    let indices = sort_to_indices(
        all.column(TIMESTAMP_INDEX),
        Some(SortOptions { descending: false, nulls_first: false }),
        None,
    )?;
    take_record_batch(&all, &indices)
}

/// Remove leftovers of a segment write that a crash interrupted.
pub fn remove_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // `.download`: a cache fill (with a bucket) a crash interrupted.
        if name.ends_with(".parquet.tmp") || name.ends_with(".parquet.download") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
