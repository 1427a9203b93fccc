//! The audit trail: every accepted and refused connection and every query, written to the log
//! (target `logwarden::audit`) and appended as JSON lines to `data_dir/audit/audit-DATE.jsonl`,
//! which the `audit` table reads.
//!
//! Recording never blocks a handshake or a query: entries go through a bounded channel to one
//! writer thread, which appends and fsyncs them in groups. If the writer falls behind by more
//! than the channel holds, entries are counted in `logwarden_audit_dropped_total` and still
//! logged.
//!
//! With `[audit] retention_max_age`, the writer deletes day files older than that when it
//! starts and whenever it opens a new day's file. A failed write is cut back (a full disk
//! leaves no partial line); a line damaged all the same is skipped by the table (`jsonl`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{SecondsFormat, Utc};
use prometheus::IntCounter;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::seal::{Chain, DeleteReason, Record};

/// Entries waiting for the writer at most.
const QUEUE: usize = 65_536;
/// Entries written (and fsynced) together at most.
const GROUP: usize = 4096;

/// One audit record.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// RFC 3339, UTC.
    pub time: String,
    /// `connection`, `query` or `authentication` (refused credentials, or on an HTTP listener
    /// with credentials a principal the `[access] send` rules refuse: outcome `denied`).
    pub kind: &'static str,
    pub listener: String,
    pub peer: String,
    /// Who: the certificate's (or token's, or user's) principal; `None` when anonymous.
    pub principal: Option<String>,
    /// How the principal was established: `certificate`, `token`, `basic`, `session`, `none`.
    pub auth: &'static str,
    /// The client certificate's subject DN, when one was presented.
    pub subject: Option<String>,
    /// `accepted`, `refused` (connections); `ok`, `denied`, `error` and the like (queries).
    pub outcome: String,
    pub reason: Option<String>,
    pub sql: Option<String>,
    pub rows: Option<u64>,
    pub duration_ms: Option<f64>,
}

impl AuditEntry {
    /// A connection entry stamped now.
    pub fn connection(listener: &str, peer: &str, outcome: &str) -> Self {
        AuditEntry {
            time: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
            kind: "connection",
            listener: listener.to_owned(),
            peer: peer.to_owned(),
            principal: None,
            auth: "none",
            subject: None,
            outcome: outcome.to_owned(),
            reason: None,
            sql: None,
            rows: None,
            duration_ms: None,
        }
    }

    /// Credentials refused (a Flight SQL sign-in, an HTTP ingest request) stamped now: `user`
    /// is the name the client claimed (not a principal: nothing proved it), `auth` how it
    /// tried.
    pub fn authentication(
        listener: &str,
        peer: &str,
        user: Option<String>,
        auth: &'static str,
        reason: &str,
    ) -> Self {
        AuditEntry {
            kind: "authentication",
            principal: user,
            auth,
            reason: Some(reason.to_owned()),
            ..AuditEntry::connection(listener, peer, "refused")
        }
    }

    /// A query entry stamped now.
    pub fn query(peer: &str, principal: &str, auth: &'static str, sql: &str, outcome: &str) -> Self {
        AuditEntry {
            kind: "query",
            principal: Some(principal.to_owned()),
            auth,
            sql: Some(sql.to_owned()),
            ..AuditEntry::connection("flight", peer, outcome)
        }
    }
}

/// The handle components record through. Cheap to clone.
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<AuditEntry>,
    dropped: IntCounter,
}

impl fmt::Debug for Audit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Audit")
    }
}

/// The writer thread; join it after every [`Audit`] handle is gone to have all entries on disk.
pub struct AuditWriter(std::thread::JoinHandle<()>);

impl AuditWriter {
    pub fn join(self) {
        let _ = self.0.join();
    }
}

impl Audit {
    /// Start the writer for `dir` (created if missing), deleting day files older than
    /// `max_age` if one is given.
    /// With `chain`, every group of lines written (and every day file deleted) is chained.
    pub fn start(
        dir: &Path,
        max_age: Option<Duration>,
        dropped: IntCounter,
        chain: Option<Arc<Chain>>,
    ) -> std::io::Result<(Audit, AuditWriter)> {
        std::fs::create_dir_all(dir)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let dir = dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || write_loop(&dir, max_age, rx, chain.as_deref()))?;
        Ok((Audit { tx, dropped }, AuditWriter(thread)))
    }

    /// Log the entry and queue it for the audit files.
    pub fn record(&self, e: AuditEntry) {
        tracing::info!(
            target: "logwarden::audit",
            kind = e.kind, listener = %e.listener, peer = %e.peer,
            principal = e.principal.as_deref().unwrap_or(""), auth = e.auth,
            outcome = %e.outcome, reason = e.reason.as_deref().unwrap_or(""),
            sql = e.sql.as_deref().unwrap_or(""), rows = e.rows, duration_ms = e.duration_ms,
            "audit"
        );
        if self.tx.try_send(e).is_err() {
            self.dropped.inc();
        }
    }
}

fn write_loop(
    dir: &Path,
    max_age: Option<Duration>,
    mut rx: mpsc::Receiver<AuditEntry>,
    chain: Option<&Chain>,
) {
    if let Some(age) = max_age {
        prune(dir, age, chain);
    }
    let mut open: Option<(String, std::fs::File)> = None;
    // Entries lost to failed writes since the last success: the first failure of a run is
    // logged, then the recovery with the count (a full disk must not log once per group).
    let mut lost: Option<usize> = None;
    let mut group = Vec::with_capacity(GROUP);
    while rx.blocking_recv_many(&mut group, GROUP) > 0 {
        let mut lines: Vec<(String, Vec<u8>)> = Vec::new();
        for e in group.drain(..) {
            let day = e.time.get(..10).unwrap_or("unknown").to_owned();
            let mut line = serde_json::to_vec(&e).unwrap_or_default();
            line.push(b'\n');
            match lines.last_mut() {
                Some((d, buf)) if *d == day => buf.extend_from_slice(&line),
                _ => lines.push((day, line)),
            }
        }
        for (day, buf) in lines {
            if open.as_ref().is_none_or(|(d, _)| *d != day) {
                let path = dir.join(format!("audit-{day}.jsonl"));
                if let Some(age) = max_age
                    && open.is_some()
                {
                    prune(dir, age, chain);
                }
                match crate::jsonl::open_append(&path) {
                    Ok(f) => {
                        // What a crash left unchained (or the line end `open_append` added).
                        if let Some(chain) = chain {
                            chain.recover_tail(object_name(&day), &path, &f, 0);
                        }
                        open = Some((day.clone(), f));
                    }
                    Err(e) => {
                        let entries = buf.iter().filter(|b| **b == b'\n').count();
                        if lost.is_none() {
                            tracing::error!(path = %path.display(), error = %e,
                                "cannot open the audit file; entries are lost from the audit table until it can (they are still logged)");
                        }
                        *lost.get_or_insert(0) += entries;
                        open = None;
                        continue;
                    }
                }
            }
            let Some((day, f)) = &mut open else { continue };
            match crate::jsonl::append_lines(f, &buf) {
                Ok(offset) => {
                    if let Some(chain) = chain {
                        chain.record(Record::Append {
                            object: object_name(day),
                            offset,
                            len: buf.len() as u64,
                            sha256: crate::seal::digest::sha256(&buf),
                            recovered: false,
                        });
                    }
                    if let Some(n) = lost.take() {
                        tracing::warn!(dir = %dir.display(), lost_entries = n, "audit entries are written again");
                    }
                }
                Err(e) => {
                    if lost.is_none() {
                        tracing::error!(dir = %dir.display(), error = %e,
                            "failed to write audit entries (cut back); entries are lost from the audit table until writes succeed (they are still logged)");
                    }
                    *lost.get_or_insert(0) += buf.iter().filter(|b| **b == b'\n').count();
                }
            }
        }
    }
}

/// A day file as the seal's chain names it.
fn object_name(day: &str) -> String {
    format!("audit/audit-{day}.jsonl")
}

/// Delete the day files whose whole day is older than `max_age` (each chained as removed first).
fn prune(dir: &Path, max_age: Duration, chain: Option<&Chain>) {
    let Ok(age) = chrono::Duration::from_std(max_age) else { return };
    let Some(cutoff) = Utc::now().checked_sub_signed(age) else { return };
    let cutoff = cutoff.format("%Y-%m-%d").to_string();
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(day) = name.to_str().and_then(|n| n.strip_prefix("audit-")?.strip_suffix(".jsonl")) else {
            continue;
        };
        // ISO dates compare as strings; a file for `day` holds nothing newer than that day.
        if day.len() == 10 && day < cutoff.as_str() {
            if let Some(chain) = chain {
                chain.record(Record::Delete { object: object_name(day), reason: DeleteReason::Retention });
                if let Err(e) = chain.sync() {
                    tracing::warn!(error = %e, "failed to fsync the seal chain before removing an audit file");
                }
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(file = %entry.path().display(), "audit file past audit.retention_max_age deleted")
                }
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "cannot delete an expired audit file")
                }
            }
        }
    }
}

/// The schema of the `audit` table.
pub fn schema() -> SchemaRef {
    let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    Arc::new(Schema::new(vec![
        Field::new("time", DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), false),
        s("kind", false),
        s("listener", false),
        s("peer", false),
        s("principal", true),
        s("auth", false),
        s("subject", true),
        s("outcome", false),
        s("reason", true),
        s("sql", true),
        Field::new("rows", DataType::UInt64, true),
        Field::new("duration_ms", DataType::Float64, true),
    ]))
}

/// The `audit` table: every complete line of the audit files in `dir`; damaged lines are
/// skipped and counted in `damaged` (see [`crate::jsonl`]).
pub fn audit_table(dir: PathBuf, damaged: Option<IntCounter>) -> crate::query::snapshot::SnapshotTable {
    let damaged = crate::jsonl::DamagedLines::new("audit", damaged);
    crate::query::snapshot::SnapshotTable::new(schema(), move || {
        crate::jsonl::read_dir(&dir, schema(), &damaged)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::RecordBatch;
    use datafusion::common::Result;
    use std::io::Write;

    fn read_all(dir: &Path) -> Result<Vec<RecordBatch>> {
        crate::jsonl::read_dir(dir, schema(), &crate::jsonl::DamagedLines::new("audit", None))
    }

    #[tokio::test]
    async fn entries_are_written_and_read_back_as_a_table() {
        let dir = tempfile::tempdir().unwrap();
        let counter = IntCounter::new("d", "d").unwrap();
        let (audit, writer) = Audit::start(dir.path(), None, counter, None).unwrap();
        let mut e = AuditEntry::connection("syslog", "127.0.0.1:5000", "refused");
        e.reason = Some("revoked".into());
        audit.record(e);
        let mut q = AuditEntry::query("127.0.0.1:6000", "alice", "token", "SELECT 1", "ok");
        q.rows = Some(1);
        audit.record(q);
        drop(audit);
        tokio::task::spawn_blocking(move || writer.join()).await.unwrap();
        // A torn last line (a crash mid-write) is ignored.
        let file = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
        std::fs::OpenOptions::new().append(true).open(&file).unwrap().write_all(b"{\"time\":").unwrap();

        let batches = read_all(dir.path()).unwrap();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 2);
        let text = arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
        assert!(text.contains("revoked") && text.contains("SELECT 1") && text.contains("alice"), "{text}");
    }

    #[test]
    fn a_damaged_line_is_skipped_and_the_rest_of_the_table_reads() {
        let dir = tempfile::tempdir().unwrap();
        let line = |outcome: &str| {
            let mut l =
                serde_json::to_vec(&AuditEntry::connection("syslog", "127.0.0.1:1", outcome)).unwrap();
            l.push(b'\n');
            l
        };
        // A crash cut the second entry short, and the writer went on after it on the same line.
        let mut text = line("first");
        let cut = line("cut");
        text.extend_from_slice(&cut[..cut.len() / 2]);
        text.extend(line("merged"));
        text.extend(line("last"));
        std::fs::write(dir.path().join("audit-2026-01-01.jsonl"), &text).unwrap();
        let batches = read_all(dir.path()).expect("one damaged line must not fail the whole table");
        let text = arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 2, "{text}");
        assert!(text.contains("first") && text.contains("last"), "{text}");
    }

    #[tokio::test]
    async fn day_files_past_the_retention_age_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let day = |d: chrono::DateTime<Utc>| format!("audit-{}.jsonl", d.format("%Y-%m-%d"));
        let now = Utc::now();
        let old = day(now - chrono::Duration::days(40));
        let kept = day(now - chrono::Duration::days(20));
        for name in [&old, &kept, &"notes.txt".to_owned()] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let counter = IntCounter::new("d", "d").unwrap();
        let (audit, writer) =
            Audit::start(dir.path(), Some(Duration::from_secs(30 * 86_400)), counter, None).unwrap();
        audit.record(AuditEntry::connection("syslog", "127.0.0.1:5000", "accepted"));
        drop(audit);
        tokio::task::spawn_blocking(move || writer.join()).await.unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec![kept, day(now), "notes.txt".to_owned()]);
    }
}
