//! The write path under storage faults (see `faults`): what a full disk does to WAL appends,
//! WAL rotation, Parquet flushes and the manifest. Each test checks what a restart recovers.

use std::borrow::Cow;
use std::path::Path;
use std::time::{Duration, Instant};

use arrow::array::{Array, RecordBatch, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::faults::{self, Fault};
use super::{Appender, Pipeline, PipelineOptions, SegmentsAt, Store};
use crate::batch::{EventBatchBuilder, Origin};
use crate::ingest::event::Event;

fn options(flush_interval: Duration) -> PipelineOptions {
    PipelineOptions {
        batch_rows: 1,
        batch_linger: Duration::from_millis(1),
        max_pending_bytes: 64 << 20,
        flush_interval,
        flush_bytes: 1 << 30,
        row_group_rows: 1024,
        zstd_level: 1,
        retention_max_age: None,
        retention_max_bytes: None,
    }
}

/// Rows whose messages are `tag 0` .. `tag n-1`.
fn batch(tag: &str, n: usize) -> RecordBatch {
    let mut b = EventBatchBuilder::new(Origin {
        listener: "l".into(),
        peer: "p".into(),
        client_id: "".into(),
        protocol: crate::ingest::event::Protocol::Syslog,
    });
    for i in 0..n {
        let msg = format!("{tag} {i}");
        b.append(&Event::raw(Cow::Borrowed(&msg), "x"), i as i64);
    }
    b.finish().unwrap()
}

fn start(dir: &Path, opts: PipelineOptions) -> (Store, Pipeline, Appender) {
    let (store, rec) = Store::open(dir, SegmentsAt::Local(dir.to_path_buf()), None, None).unwrap();
    let (pipeline, appender) = Pipeline::start(store.clone(), rec.next_generation, opts, None).unwrap();
    (store, pipeline, appender)
}

/// Every message stored in `dir` (segments and WAL), as `logwarden query` would read them.
fn stored(dir: &Path) -> Vec<String> {
    let snap = Store::open_read_only(dir, SegmentsAt::Local(dir.to_path_buf())).unwrap().snapshot();
    let mut batches: Vec<RecordBatch> = snap.mem.into_iter().map(|m| m.batch).collect();
    for s in &snap.segments {
        let f = std::fs::File::open(snap.segments_dir.join(&s.file)).unwrap();
        batches.extend(
            ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap().map(|b| b.unwrap()),
        );
    }
    let mut out = Vec::new();
    for b in batches {
        let m = b.column_by_name("message").unwrap().as_any().downcast_ref::<StringArray>().unwrap().clone();
        out.extend((0..m.len()).map(|i| m.value(i).to_owned()));
    }
    out
}

fn count(messages: &[String], tag: &str) -> usize {
    messages.iter().filter(|m| m.split(' ').next() == Some(tag)).count()
}

/// A pipeline on a disk that refuses every write (1000 times), holding 10 stream rows tagged
/// `tag` that one write already failed to store.
async fn holding_stream_data(dir: &Path, tag: &str) -> (Store, Pipeline, Appender) {
    let wal = dir.join("wal");
    let (store, pipeline, appender) = start(dir, options(Duration::from_secs(3600)));
    faults::inject(&wal, Fault::WalWrite, 1000);
    appender.append(batch(tag, 10)).await.unwrap();
    eventually("a write to fail", || faults::remaining(&wal, Fault::WalWrite) < 1000).await;
    (store, pipeline, appender)
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect()
}

#[tokio::test]
async fn a_failed_append_is_cut_back_before_anything_else_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, pipeline, appender) = start(dir.path(), options(Duration::from_secs(3600)));
    // The disk is full: the append stops half way, and so does the next generation's header.
    faults::inject(&dir.path().join("wal"), Fault::WalWrite, 1);
    faults::inject(&dir.path().join("wal"), Fault::WalCreate, 1);
    let failed = appender.try_append_durable(batch("refused", 200)).unwrap().wait().await;
    assert!(failed.is_err(), "a failed WAL write must not be acknowledged");
    appender.try_append_durable(batch("kept", 100)).unwrap().wait().await.unwrap();
    drop(appender);
    pipeline.join().await;

    let (_, rec) = Store::open(dir.path(), SegmentsAt::Local(dir.path().to_path_buf()), None, None).unwrap();
    assert_eq!(rec.torn_bytes, 0, "the half-written record was left in the WAL");
    let all = stored(dir.path());
    assert_eq!(count(&all, "kept"), 100, "an acknowledged batch was lost after restart");
    assert_eq!(count(&all, "refused"), 0);
}

#[tokio::test]
async fn a_failed_fsync_is_cut_back_too() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, pipeline, appender) = start(dir.path(), options(Duration::from_secs(3600)));
    faults::inject(&dir.path().join("wal"), Fault::WalSync, 1);
    assert!(appender.try_append_durable(batch("refused", 50)).unwrap().wait().await.is_err());
    appender.try_append_durable(batch("kept", 50)).unwrap().wait().await.unwrap();
    drop(appender);
    pipeline.join().await;
    let all = stored(dir.path());
    assert_eq!(count(&all, "kept"), 50);
    // Answered with an error, so the client sends it again: stored now, it would be stored twice.
    assert_eq!(count(&all, "refused"), 0, "a batch refused to its client was stored");
}

#[tokio::test]
async fn rotation_survives_a_failed_generation_and_flushing_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, pipeline, appender) = start(dir.path(), options(Duration::from_millis(50)));
    faults::inject(&dir.path().join("wal"), Fault::WalCreate, 1);
    appender.try_append_durable(batch("a", 100)).unwrap().wait().await.unwrap();
    eventually("the generation to reach a Parquet segment", || !store.snapshot().segments.is_empty()).await;
    appender.try_append_durable(batch("b", 100)).unwrap().wait().await.unwrap();
    eventually("the next generation to reach a segment", || store.snapshot().mem.is_empty()).await;
    drop(appender);
    pipeline.join().await;
    let all = stored(dir.path());
    assert_eq!((count(&all, "a"), count(&all, "b")), (100, 100));
}

#[tokio::test]
async fn a_failed_segment_write_leaves_no_temporary_file_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let segments = dir.path().join("segments");
    let (store, pipeline, appender) = start(dir.path(), options(Duration::from_millis(50)));
    faults::inject(&segments, Fault::Segment, 1000);
    appender.try_append_durable(batch("a", 100)).unwrap().wait().await.unwrap();
    eventually("a segment write to fail", || faults::remaining(&segments, Fault::Segment) < 1000).await;
    eventually("the partial segment to be removed", || files_ending(&segments, ".tmp").is_empty()).await;
    // Space comes back; no new data arrives, the flush is retried all the same.
    faults::clear(&segments);
    eventually("the flush to be retried", || !store.snapshot().segments.is_empty()).await;
    drop(appender);
    pipeline.join().await;
    assert_eq!(count(&stored(dir.path()), "a"), 100);
}

#[tokio::test]
async fn a_manifest_that_cannot_be_replaced_leaves_no_orphan_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("manifest.json");
    let (store, pipeline, appender) = start(dir.path(), options(Duration::from_millis(50)));
    faults::inject(&manifest, Fault::Replace, 1);
    appender.try_append_durable(batch("a", 100)).unwrap().wait().await.unwrap();
    eventually("the flush to be retried", || !store.snapshot().segments.is_empty()).await;
    drop(appender);
    pipeline.join().await;
    assert!(files_ending(dir.path(), ".tmp").is_empty(), "a half-written manifest was left behind");
    let named: Vec<String> = store.snapshot().segments.iter().map(|s| s.file.clone()).collect();
    let mut on_disk = files_ending(&dir.path().join("segments"), ".parquet");
    on_disk.sort();
    assert_eq!(on_disk, named, "segment files the manifest does not name");
    assert_eq!(count(&stored(dir.path()), "a"), 100);
}

#[tokio::test]
async fn stream_batches_wait_through_failed_writes_instead_of_being_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (store, pipeline, appender) = start(dir.path(), options(Duration::from_secs(3600)));
    faults::inject(&dir.path().join("wal"), Fault::WalWrite, 3);
    // A stream listener's batch: no acknowledgement to give, so nobody would send it again.
    appender.append(batch("stream", 50)).await.unwrap();
    eventually("the stream batch to be written once the disk has room", || {
        store.snapshot().mem.iter().map(|m| m.batch.num_rows()).sum::<usize>() == 50
    })
    .await;
    drop(appender);
    pipeline.join().await;
    assert_eq!(count(&stored(dir.path()), "stream"), 50);
}

#[tokio::test]
async fn the_pipeline_starts_on_a_full_disk_and_writes_once_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let (store, rec) =
        Store::open(dir.path(), SegmentsAt::Local(dir.path().to_path_buf()), None, None).unwrap();
    faults::inject(&dir.path().join("wal"), Fault::WalCreate, 1);
    let (pipeline, appender) =
        Pipeline::start(store, rec.next_generation, options(Duration::from_secs(3600)), None).unwrap();
    appender.try_append_durable(batch("a", 10)).unwrap().wait().await.unwrap();
    drop(appender);
    pipeline.join().await;
    assert_eq!(count(&stored(dir.path()), "a"), 10);
}

#[tokio::test]
async fn stream_listeners_wait_while_their_data_waits_for_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal");
    let (store, pipeline, appender) = holding_stream_data(dir.path(), "first").await;
    // The budget has room, but the disk has none: the next read must not be taken.
    let next = tokio::time::timeout(Duration::from_millis(300), appender.append(batch("second", 10))).await;
    assert!(next.is_err(), "a stream batch was taken while the disk refused writes");
    faults::clear(&wal);
    appender.append(batch("second", 10)).await.unwrap();
    eventually("both batches to be written", || {
        store.snapshot().mem.iter().map(|m| m.batch.num_rows()).sum::<usize>() == 20
    })
    .await;
    drop(appender);
    pipeline.join().await;
}

#[tokio::test]
async fn a_batch_whose_sender_waits_is_sealed_without_lingering() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(Duration::from_secs(3600));
    opts.batch_rows = 1 << 20;
    opts.batch_linger = Duration::from_secs(3600);
    let (_store, pipeline, appender) = start(dir.path(), opts);
    // With an hour of linger and a million rows per batch, only sealing at once answers them:
    // RELP's waiting append, and HTTP's, one after the other and then many at once.
    let durable = appender.append_durable(batch("relp", 10)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), durable.wait()).await.expect("the batch lingered").unwrap();
    let durable = appender.try_append_durable(batch("http", 10)).unwrap();
    tokio::time::timeout(Duration::from_secs(20), durable.wait()).await.expect("the batch lingered").unwrap();
    let many: Vec<_> = (0..50).map(|_| appender.try_append_durable(batch("burst", 10)).unwrap()).collect();
    for durable in many {
        tokio::time::timeout(Duration::from_secs(20), durable.wait())
            .await
            .expect("the batch lingered")
            .unwrap();
    }
    drop(appender);
    pipeline.join().await;
    let all = stored(dir.path());
    assert_eq!((count(&all, "relp"), count(&all, "http"), count(&all, "burst")), (10, 10, 500));
}

#[tokio::test]
async fn a_waiting_durable_append_waits_while_stream_data_waits_for_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal");
    let (_store, pipeline, appender) = holding_stream_data(dir.path(), "stream").await;
    // Held, not refused: the sender is slowed down instead of told to send again.
    let waiting =
        tokio::time::timeout(Duration::from_millis(300), appender.append_durable(batch("relp", 10)));
    assert!(waiting.await.is_err(), "a durable append was taken while the disk refused writes");
    faults::clear(&wal);
    appender.append_durable(batch("relp", 10)).await.unwrap().wait().await.unwrap();
    drop(appender);
    pipeline.join().await;
    let all = stored(dir.path());
    assert_eq!((count(&all, "stream"), count(&all, "relp")), (10, 10));
}

#[tokio::test]
async fn while_stream_data_waits_for_the_disk_requests_are_refused_without_a_write_each() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal");
    let (_store, pipeline, appender) = holding_stream_data(dir.path(), "stream").await;
    let before = faults::remaining(&wal, Fault::WalWrite);
    for _ in 0..20 {
        assert!(appender.try_append_durable(batch("refused", 10)).unwrap().wait().await.is_err());
    }
    // Each request would have written the held data again; only the retries every 500 ms do.
    let attempts = before - faults::remaining(&wal, Fault::WalWrite);
    assert!(attempts <= 3, "{attempts} writes for 20 requests while the disk refused them");
    // Once there is room, the next retry writes the held data and requests go through again.
    faults::clear(&wal);
    let deadline = Instant::now() + Duration::from_secs(20);
    while appender.try_append_durable(batch("after", 10)).unwrap().wait().await.is_err() {
        assert!(Instant::now() < deadline, "requests still refused after the disk had room");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(appender);
    pipeline.join().await;
    let all = stored(dir.path());
    assert_eq!((count(&all, "stream"), count(&all, "refused"), count(&all, "after")), (10, 0, 10));
}
