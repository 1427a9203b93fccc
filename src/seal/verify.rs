//! `logwarden verify`: read a data directory (or a copy of one) and its chain back, offline, and
//! say of every object whether it is what the chain says was stored.
//!
//! The chain is read first: every line's hash, its link to the line before, its sequence. The
//! changes it records make the expected state: the appends each WAL and audit file is made of,
//! each segment's digest, the manifest's versions, what was removed and why. Then every object
//! is read once and hashed: a range or file whose digest is not the chained one is `modified`,
//! or `reordered` when its digest is one chained for another place (two segments swapped, an
//! older manifest put back); a chained object that is gone without a removal entry, or cut
//! short, is `missing`; a file or bytes the chain never recorded are `unexpected`. Last, the
//! checkpoints: each signature checked with the certificate given, and the chain's entry at
//! each checkpoint's sequence compared with the head it signed, so a chain rewritten or cut
//! back since is told apart from one that only grew.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rustls_pki_types::CertificateDer;

use super::chain::{self, DeleteReason, Entry, Record};
use super::checkpoint::{self, Signed};
use super::digest::{Digest, sha256_range};

/// What became of one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Intact,
    Modified,
    Missing,
    Reordered,
    Unexpected,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Intact => "intact",
            Status::Modified => "modified",
            Status::Missing => "missing",
            Status::Reordered => "reordered",
            Status::Unexpected => "unexpected",
        }
    }

    /// The bit this status sets in `verify`'s exit status.
    pub fn exit_bit(self) -> i32 {
        match self {
            Status::Intact => 0,
            Status::Modified => 2,
            Status::Missing => 4,
            Status::Reordered => 8,
            Status::Unexpected => 16,
        }
    }
}

/// More than any manifest logwarden writes (a few hundred bytes per segment).
const MAX_MANIFEST_BYTES: u64 = 1 << 30;

/// Set in the exit status when a checkpoint does not verify or does not match the chain.
pub const CHECKPOINT_BIT: i32 = 32;

#[derive(Debug, Clone)]
pub struct Finding {
    pub object: String,
    pub status: Status,
    pub detail: String,
}

/// A checkpoint as checked.
#[derive(Debug, Clone)]
pub struct CheckpointCheck {
    /// Where it came from: `FILE` or `FILE:LINE`.
    pub source: String,
    pub seq: Option<u64>,
    pub time: Option<String>,
    /// None when it holds; else why not.
    pub problem: Option<String>,
    /// The signature was checked (a certificate was given).
    pub signature_checked: bool,
}

#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub checkpoints: Vec<CheckpointCheck>,
    /// Entries in the chain, and those after the newest checkpoint that holds.
    pub entries: u64,
    pub unvouched_entries: u64,
    pub removed_objects: usize,
    pub recovered_entries: u64,
    /// What the start after a crash chained (object and range), for the auditor to look at.
    pub recovered: Vec<String>,
    /// Objects removed after the newest checkpoint that holds (not yet vouched for by one).
    pub late_removals: Vec<String>,
    pub bytes_read: u64,
    pub seconds: f64,
    /// No certificate was given: signatures were not checked.
    pub signatures_unchecked: bool,
}

impl Report {
    pub fn exit_status(&self) -> i32 {
        let mut bits = self.findings.iter().fold(0, |b, f| b | f.status.exit_bit());
        if self.checkpoints.iter().any(|c| c.problem.is_some()) {
            bits |= CHECKPOINT_BIT;
        }
        bits
    }

    pub fn count(&self, status: Status) -> usize {
        self.findings.iter().filter(|f| f.status == status).count()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{path} is not a logwarden data directory with a seal chain ({source}); pass --data-dir")]
    NoChain { path: PathBuf, source: std::io::Error },
    #[error("failed to read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
}

pub struct Options {
    pub data_dir: PathBuf,
    /// Checkpoints from elsewhere (an export); the newest of them must match the chain.
    pub checkpoint: Option<PathBuf>,
    pub cert: Option<PathBuf>,
}

/// One chained range of an append-only file.
struct Range {
    offset: u64,
    len: u64,
    sha256: Digest,
    seq: u64,
}

#[derive(Default)]
struct Expected {
    appends: BTreeMap<String, Vec<Range>>,
    /// Segments: digest, length, entry.
    files: BTreeMap<String, (Digest, u64, u64)>,
    /// Manifest versions, oldest first: generation, digest, entry.
    versions: BTreeMap<String, Vec<(u64, Digest, u64)>>,
    removed: BTreeMap<String, (DeleteReason, u64)>,
    /// The newest WAL generation a chained segment holds, so far in the chain.
    wal_in_segments: u64,
    /// The length of the largest file chained (a bound on reading any one).
    largest_file: u64,
    recovered: Vec<String>,
    /// Every chained digest and where it belongs, to tell reordering from modification.
    places: HashMap<Digest, String>,
}

/// Whether `object` is a name logwarden gives what it chains: anything else (a path out of the
/// data directory, a device) is never opened.
fn is_object_name(object: &str) -> bool {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if object == crate::store::MANIFEST_FILE {
        return true;
    }
    if let Some(f) = object.strip_prefix("wal/").and_then(|f| f.strip_suffix(".wal")) {
        return digits(f, 16);
    }
    if let Some(f) = object.strip_prefix("segments/").and_then(|f| f.strip_suffix(".parquet")) {
        return digits(f, 16);
    }
    if let Some(day) = object.strip_prefix("audit/audit-").and_then(|f| f.strip_suffix(".jsonl")) {
        let b = day.as_bytes();
        return b.len() == 10
            && b.iter()
                .enumerate()
                .all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() });
    }
    false
}

impl Expected {
    fn apply(&mut self, e: &Entry, findings: &mut Vec<Finding>, recovered: &mut u64) {
        let chain_file = || format!("{}/{}", chain::DIR, chain::CHAIN_FILE);
        let object = e.record.object();
        let refuse = |findings: &mut Vec<Finding>, status, why: String| {
            findings.push(Finding { object: chain_file(), status, detail: format!("entry {}: {why}", e.seq) })
        };
        if !is_object_name(object) {
            return refuse(
                findings,
                Status::Modified,
                format!("names {object:?}, which logwarden never writes"),
            );
        }
        // What logwarden never does: write a segment twice, append to a file it removed, evict
        // anything but a segment copy.
        match &e.record {
            Record::File { .. } if self.files.contains_key(object) => {
                return refuse(
                    findings,
                    Status::Modified,
                    format!("chains {object} a second time (a segment is written once)"),
                );
            }
            Record::Append { .. } | Record::File { .. } if self.removed.contains_key(object) => {
                let (reason, at) = self.removed[object];
                return refuse(
                    findings,
                    Status::Modified,
                    format!("writes {object} after its removal ({reason:?}) at entry {at}"),
                );
            }
            Record::Delete { reason: DeleteReason::Evicted, .. } if !object.starts_with("segments/") => {
                return refuse(
                    findings,
                    Status::Modified,
                    format!("evicts {object}, which is no segment copy"),
                );
            }
            Record::Delete { reason: DeleteReason::Flushed, .. } if self.appends.contains_key(object) => {
                let generation = object
                    .strip_prefix("wal/")
                    .and_then(|f| f.strip_suffix(".wal"))
                    .and_then(|g| g.parse::<u64>().ok())
                    .unwrap_or(u64::MAX);
                if generation > self.wal_in_segments {
                    findings.push(Finding {
                        object: object.to_owned(),
                        status: Status::Missing,
                        detail: format!(
                            "removed as flushed at entry {}, but no segment chained before it holds WAL generation {generation} \
                             (the newest reaches {}): its events are in no segment",
                            e.seq, self.wal_in_segments
                        ),
                    });
                }
            }
            _ => {}
        }
        match &e.record {
            Record::Append { object, offset, len, sha256, recovered: r } => {
                *recovered += u64::from(*r);
                if *r {
                    self.recovered.push(format!(
                        "{object} bytes {offset}..{} (entry {})",
                        offset.saturating_add(*len),
                        e.seq
                    ));
                }
                self.places
                    .insert(*sha256, format!("{object} bytes {offset}..{}", offset.saturating_add(*len)));
                self.appends.entry(object.clone()).or_default().push(Range {
                    offset: *offset,
                    len: *len,
                    sha256: *sha256,
                    seq: e.seq,
                });
            }
            Record::File { object, len, sha256, wal_through, recovered: r } => {
                *recovered += u64::from(*r);
                if *r {
                    self.recovered.push(format!("{object} (entry {})", e.seq));
                }
                self.wal_in_segments = self.wal_in_segments.max(*wal_through);
                self.largest_file = self.largest_file.max(*len);
                self.places.insert(*sha256, object.clone());
                self.files.insert(object.clone(), (*sha256, *len, e.seq));
            }
            Record::Version { object, generation, sha256, recovered: r, .. } => {
                *recovered += u64::from(*r);
                if *r {
                    self.recovered.push(format!("{object} generation {generation} (entry {})", e.seq));
                }
                let versions = self.versions.entry(object.clone()).or_default();
                if let Some((last, _, last_seq)) = versions.last()
                    && generation <= last
                {
                    findings.push(Finding {
                        object: object.clone(),
                        status: Status::Reordered,
                        detail: format!(
                            "entry {} chains generation {generation} after generation {last} (entry {last_seq}): \
                             the daemon was started on an older copy",
                            e.seq
                        ),
                    });
                }
                self.places.insert(*sha256, format!("{object} generation {generation}"));
                versions.push((*generation, *sha256, e.seq));
            }
            Record::Delete { object, reason } => {
                self.removed.insert(object.clone(), (*reason, e.seq));
                if *reason != DeleteReason::Evicted {
                    self.appends.remove(object);
                }
            }
        }
    }
}

/// Verify `opts.data_dir`.
pub fn verify(opts: &Options) -> Result<Report, VerifyError> {
    let started = Instant::now();
    let seal_dir = opts.data_dir.join(chain::DIR);
    let cert = match &opts.cert {
        Some(path) => Some(read_certificate(path)?),
        None => None,
    };
    let mut report = Report { signatures_unchecked: cert.is_none(), ..Default::default() };

    // Checkpoints first: the chain is read once, keeping the hashes at their sequences.
    let mut checkpoints: Vec<(String, Result<Signed, String>, bool)> = Vec::new();
    let own = seal_dir.join(checkpoint::CHECKPOINTS_FILE);
    if own.exists() {
        let read =
            checkpoint::read_file(&own).map_err(|source| VerifyError::Read { path: own.clone(), source })?;
        checkpoints.extend(
            read.into_iter().enumerate().map(|(i, c)| (format!("{}:{}", own.display(), i + 1), c, false)),
        );
    }
    if let Some(path) = &opts.checkpoint {
        let read =
            checkpoint::read_file(path).map_err(|source| VerifyError::Read { path: path.clone(), source })?;
        if read.is_empty() {
            report.checkpoints.push(CheckpointCheck {
                source: path.display().to_string(),
                seq: None,
                time: None,
                problem: Some("holds no checkpoint".into()),
                signature_checked: false,
            });
        }
        let many = read.len() > 1;
        checkpoints.extend(read.into_iter().enumerate().map(|(i, c)| {
            let source =
                if many { format!("{}:{}", path.display(), i + 1) } else { path.display().to_string() };
            (source, c, true)
        }));
    }
    let wanted: std::collections::HashSet<u64> =
        checkpoints.iter().filter_map(|(_, c, _)| c.as_ref().ok().map(|s| s.checkpoint.seq)).collect();

    let (expected, at_seq) = read_chain(&seal_dir, &wanted, &mut report)?;
    report.removed_objects = expected.removed.len();
    report.recovered = expected.recovered.clone();
    evictions_need_a_bucket(&opts.data_dir, &expected, &mut report);

    check_appends(&opts.data_dir, &expected, &mut report);
    check_files(&opts.data_dir, &expected, &mut report);
    check_versions(&opts.data_dir, &expected, &mut report);
    check_unchained(&opts.data_dir, &expected, &mut report);

    // The newest checkpoint that holds vouches for the chain up to it.
    // Given checkpoints from elsewhere, only those count: whoever controls the box can sign
    // with its key.
    let any_external = checkpoints.iter().any(|(_, _, external)| *external);
    let mut newest_good = 0;
    for (source, parsed, external) in checkpoints {
        let mut check =
            CheckpointCheck { source, seq: None, time: None, problem: None, signature_checked: false };
        match parsed {
            Err(e) => check.problem = Some(e),
            Ok(signed) => {
                let c = &signed.checkpoint;
                check.seq = Some(c.seq);
                check.time = Some(c.time.clone());
                if let Some(cert) = &cert {
                    check.signature_checked = true;
                    if let Err(e) = signed.verify(cert) {
                        check.problem = Some(e);
                    }
                }
                if check.problem.is_none() {
                    check.problem = match at_seq.get(&c.seq) {
                        None => Some(format!(
                            "it vouches for {} entries but the chain holds {}: entries were removed from its end",
                            c.seq, report.entries
                        )),
                        Some(h) if *h != c.head => Some(format!(
                            "the chain's entry {} is not the one signed (hash {h}, signed {}): the chain was rewritten",
                            c.seq, c.head
                        )),
                        Some(_) => None,
                    };
                }
                if check.problem.is_none() && (external || !any_external) {
                    newest_good = newest_good.max(c.seq);
                }
            }
        }
        report.checkpoints.push(check);
    }
    report.unvouched_entries = report.entries.saturating_sub(newest_good);
    report.late_removals = expected
        .removed
        .iter()
        .filter(|(_, (_, seq))| *seq > newest_good)
        .map(|(object, (reason, seq))| format!("{object} ({reason:?}, entry {seq})"))
        .collect();
    report.findings.sort_by(|a, b| a.object.cmp(&b.object).then(a.status.cmp(&b.status)));
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn read_certificate(path: &Path) -> Result<CertificateDer<'static>, VerifyError> {
    use rustls_pki_types::pem::PemObject;
    let bad = |reason: String| VerifyError::Certificate { path: path.to_path_buf(), reason };
    let bytes =
        std::fs::read(path).map_err(|source| VerifyError::Read { path: path.to_path_buf(), source })?;
    match CertificateDer::pem_slice_iter(&bytes).next() {
        Some(Ok(c)) => Ok(c.into_owned()),
        Some(Err(e)) => Err(bad(format!("not a PEM certificate: {e}"))),
        // DER as it is.
        None if bytes.first() == Some(&0x30) => Ok(CertificateDer::from(bytes)),
        None => Err(bad("holds no certificate (PEM or DER)".into())),
    }
}

/// With a bucket (`location` in the manifest), the segment files its manifest names; `None`
/// for a data directory without one.
fn bucket_segments(data_dir: &Path) -> Option<Vec<String>> {
    let m = std::fs::read(data_dir.join(crate::store::MANIFEST_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter(|m| m.get("location").is_some_and(|l| l.is_string()))?;
    let segments = m.get("segments").and_then(|s| s.as_array()).cloned().unwrap_or_default();
    Some(segments.iter().filter_map(|s| s.get("file")?.as_str().map(str::to_owned)).collect())
}

/// An evicted copy is one of a segment in a bucket: without a bucket (no `location` in the
/// manifest) an eviction is a removal logwarden never makes.
fn evictions_need_a_bucket(data_dir: &Path, expected: &Expected, report: &mut Report) {
    let evicted: Vec<_> = expected.removed.iter().filter(|(_, (r, _))| *r == DeleteReason::Evicted).collect();
    if evicted.is_empty() {
        return;
    }
    if bucket_segments(data_dir).is_none() {
        for (object, (_, seq)) in evicted {
            report.findings.push(Finding {
                object: object.clone(),
                status: Status::Missing,
                detail: format!(
                    "removed as a cache copy at entry {seq}, but this data directory has no bucket"
                ),
            });
        }
    }
}

/// Read the chain: check every line and link, build the expected state, and keep the hash at
/// each of `wanted`'s sequences.
fn read_chain(
    seal_dir: &Path,
    wanted: &std::collections::HashSet<u64>,
    report: &mut Report,
) -> Result<(Expected, HashMap<u64, Digest>), VerifyError> {
    let path = seal_dir.join(chain::CHAIN_FILE);
    let file = File::open(&path).map_err(|source| VerifyError::NoChain { path: path.clone(), source })?;
    let object = format!("{}/{}", chain::DIR, chain::CHAIN_FILE);
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut expected = Expected::default();
    // Before the first entry: the empty chain.
    let mut at_seq = HashMap::from([(0, Digest::ZERO)]);
    let (mut seq, mut head) = (0u64, Digest::ZERO);
    let mut line = Vec::new();
    let mut offset = 0u64;
    let mut broken = 0usize;
    loop {
        line.clear();
        let n = (&mut r)
            .take(chain::MAX_LINE)
            .read_until(b'\n', &mut line)
            .map_err(|source| VerifyError::Read { path: path.clone(), source })?;
        if n == 0 {
            break;
        }
        report.bytes_read += n as u64;
        if line.last() != Some(&b'\n') && n as u64 == chain::MAX_LINE {
            report.findings.push(Finding {
                object: object.clone(),
                status: Status::Modified,
                detail: format!(
                    "a line longer than any entry ({} bytes) at byte {offset}: not reading further",
                    chain::MAX_LINE
                ),
            });
            break;
        }
        if line.last() != Some(&b'\n') {
            report.findings.push(Finding {
                object: object.clone(),
                status: Status::Unexpected,
                detail: format!("ends in {n} bytes that are no whole entry (a write cut short; the daemon removes them at its next start)"),
            });
            break;
        }
        match chain::parse_line(&line) {
            Err(reason) => {
                broken += 1;
                report.findings.push(Finding {
                    object: object.clone(),
                    status: Status::Modified,
                    detail: format!("the entry after entry {seq} (byte {offset}): {reason}"),
                });
                // Its successor cannot link to it; count it and go on.
                seq += 1;
                head = Digest::ZERO;
            }
            Ok((hash, entry)) => {
                if entry.seq != seq + 1 || entry.prev != head {
                    broken += 1;
                    let status = if entry.seq <= seq { Status::Reordered } else { Status::Missing };
                    let detail = if entry.seq != seq + 1 {
                        format!("entry {} follows entry {seq} (byte {offset})", entry.seq)
                    } else {
                        format!(
                            "entry {} does not name entry {seq}'s hash (byte {offset}): an entry was changed or replaced",
                            entry.seq
                        )
                    };
                    if head != Digest::ZERO || entry.seq != seq + 1 {
                        report.findings.push(Finding { object: object.clone(), status, detail });
                    }
                }
                seq = entry.seq;
                head = hash;
                if wanted.contains(&seq) {
                    at_seq.insert(seq, hash);
                }
                expected.apply(&entry, &mut report.findings, &mut report.recovered_entries);
            }
        }
        offset += n as u64;
        if broken > 1000 {
            report.findings.push(Finding {
                object: object.clone(),
                status: Status::Modified,
                detail: "more than 1000 broken entries: not reading further".into(),
            });
            break;
        }
    }
    report.entries = seq;
    Ok((expected, at_seq))
}

/// Open `path` only if it is a regular file: a FIFO would block the open, a device or a link out
/// of the directory would be read instead of the object.
fn open_regular(path: &Path) -> std::io::Result<File> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not a regular file"));
    }
    File::open(path)
}

/// An object that could not be opened: gone, or something else in its place.
fn unopened(e: &std::io::Error) -> Status {
    if e.kind() == std::io::ErrorKind::NotFound { Status::Missing } else { Status::Modified }
}

/// Where a mismatched digest belongs, if it is chained anywhere.
fn misplaced<'a>(expected: &'a Expected, digest: &Digest) -> Option<&'a str> {
    expected.places.get(digest).map(String::as_str)
}

fn check_appends(data_dir: &Path, expected: &Expected, report: &mut Report) {
    for (object, ranges) in &expected.appends {
        if let Some((reason, seq)) = expected.removed.get(object) {
            if data_dir.join(object).exists() && *reason != DeleteReason::Evicted {
                report.findings.push(Finding {
                    object: object.clone(),
                    status: Status::Unexpected,
                    detail: format!("removed ({reason:?}) at entry {seq} but present"),
                });
            }
            continue;
        }
        let path = data_dir.join(object);
        let file = match open_regular(&path) {
            Ok(f) => f,
            Err(e) => {
                report.findings.push(Finding {
                    object: object.clone(),
                    status: unopened(&e),
                    detail: format!(
                        "chained at entries {}..{} and not removed: {e}",
                        first_seq(ranges),
                        last_seq(ranges)
                    ),
                });
                continue;
            }
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let start = if object.starts_with("wal/") { 8 } else { 0 };
        let mut problems: Vec<(Status, String)> = Vec::new();
        if start > 0 {
            match sha256_range(&file, 0, 8) {
                Ok(_) if len < 8 => problems.push((Status::Modified, "shorter than the WAL magic".into())),
                Ok(_) => {
                    let mut magic = [0u8; 8];
                    use std::os::unix::fs::FileExt;
                    if file.read_exact_at(&mut magic, 0).is_err() || &magic != b"LWWAL001" {
                        problems.push((Status::Modified, "bytes 0..8 are not the WAL magic".into()));
                    }
                }
                Err(e) => problems.push((Status::Missing, format!("unreadable: {e}"))),
            }
        }
        let mut at = start;
        for r in ranges {
            if r.offset != at {
                let what = if r.offset > at { "a gap" } else { "an overlap" };
                problems.push((
                    Status::Unexpected,
                    format!("{what} before entry {} (bytes {at}..{})", r.seq, r.offset),
                ));
            }
            at = r.offset.saturating_add(r.len);
            if r.offset >= len {
                problems.push((
                    Status::Missing,
                    format!(
                        "cut short: entries {}.. chain bytes {}..{} and the file ends at {len}",
                        r.seq,
                        r.offset,
                        last_end(ranges)
                    ),
                ));
                break;
            }
            match sha256_range(&file, r.offset, r.len) {
                Ok((_, n)) if n < r.len => {
                    problems.push((
                        Status::Missing,
                        format!(
                            "cut short: entry {} chains bytes {}..{} and the file ends at {len}",
                            r.seq,
                            r.offset,
                            r.offset.saturating_add(r.len)
                        ),
                    ));
                    report.bytes_read += n;
                    break;
                }
                Ok((d, n)) => {
                    report.bytes_read += n;
                    if d != r.sha256 {
                        let range = format!(
                            "bytes {}..{} (entry {})",
                            r.offset,
                            r.offset.saturating_add(r.len),
                            r.seq
                        );
                        problems.push(match misplaced(expected, &d) {
                            Some(place) => {
                                (Status::Reordered, format!("{range} hold what was chained as {place}"))
                            }
                            None => (Status::Modified, format!("{range} are not what was written")),
                        });
                    }
                }
                Err(e) => problems.push((Status::Missing, format!("unreadable at byte {}: {e}", r.offset))),
            }
        }
        if len > at && problems.iter().all(|(s, _)| *s != Status::Missing) {
            problems.push((Status::Unexpected, format!("bytes {at}..{len} were never chained")));
        }
        push_object(report, object, problems);
    }
}

fn first_seq(ranges: &[Range]) -> u64 {
    ranges.first().map_or(0, |r| r.seq)
}

fn last_seq(ranges: &[Range]) -> u64 {
    ranges.last().map_or(0, |r| r.seq)
}

fn last_end(ranges: &[Range]) -> u64 {
    ranges.last().map_or(0, |r| r.offset.saturating_add(r.len))
}

/// One finding for an object: intact, or its worst problems (at most five details).
fn push_object(report: &mut Report, object: &str, mut problems: Vec<(Status, String)>) {
    if problems.is_empty() {
        report.findings.push(Finding {
            object: object.to_owned(),
            status: Status::Intact,
            detail: String::new(),
        });
        return;
    }
    problems.sort_by_key(|(s, _)| std::cmp::Reverse(*s == Status::Modified));
    let mut by_status: BTreeMap<Status, Vec<String>> = BTreeMap::new();
    for (s, d) in problems {
        by_status.entry(s).or_default().push(d);
    }
    for (status, details) in by_status {
        let more = details.len().saturating_sub(5);
        let mut detail = details.into_iter().take(5).collect::<Vec<_>>().join("; ");
        if more > 0 {
            detail.push_str(&format!("; and {more} more"));
        }
        report.findings.push(Finding { object: object.to_owned(), status, detail });
    }
}

/// SHA-256 of each file's first `limit` bytes, on as many threads as there are cores: the
/// segments are most of what verify reads.
fn hash_files(files: Vec<(&str, File, u64)>) -> HashMap<String, std::io::Result<(Digest, u64)>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(files.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let files = &files;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((object, file, limit)) = files.get(i) else { break };
                        out.push((object.to_string(), sha256_range(file, 0, *limit)));
                    }
                    out
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_default()).collect()
    })
}

fn check_files(data_dir: &Path, expected: &Expected, report: &mut Report) {
    // Read no further than the largest chained file (and a byte): enough to tell another
    // segment's bytes, without reading a huge file whole.
    let mut opened = Vec::new();
    let mut hashes = HashMap::new();
    for (object, (_, len, _)) in &expected.files {
        match open_regular(&data_dir.join(object)) {
            Ok(f) => opened.push((object.as_str(), f, expected.largest_file.max(*len).saturating_add(1))),
            Err(e) => {
                hashes.insert(object.clone(), Err(e));
            }
        }
    }
    hashes.extend(hash_files(opened));
    for (object, (digest, len, seq)) in &expected.files {
        let removed = expected.removed.get(object);
        let Some(hashed) = hashes.remove(object) else { continue };
        let (d, n) = match hashed {
            Ok(h) => h,
            Err(_) if removed.is_some() => continue,
            Err(e) => {
                report.findings.push(Finding {
                    object: object.clone(),
                    status: unopened(&e),
                    detail: format!("chained at entry {seq} and not removed: {e}"),
                });
                continue;
            }
        };
        report.bytes_read += n;
        let problem = if d == *digest && n == *len {
            None
        } else {
            match misplaced(expected, &d) {
                Some(place) if place != object => {
                    Some((Status::Reordered, format!("holds what was chained as {place}")))
                }
                _ if n > *len => {
                    Some((Status::Modified, format!("longer than the {len} bytes chained at entry {seq}")))
                }
                _ => Some((Status::Modified, format!("not the {len} bytes chained at entry {seq}"))),
            }
        };
        match (problem, removed) {
            // A file removed for retention whose unlink a crash interrupted: still what it was.
            (None, Some((reason, at))) if *reason != DeleteReason::Evicted => report.findings.push(Finding {
                object: object.clone(),
                status: Status::Intact,
                detail: format!("removed ({reason:?}) at entry {at}, the file is still there"),
            }),
            (p, _) => push_object(report, object, p.into_iter().collect()),
        }
    }
}

fn check_versions(data_dir: &Path, expected: &Expected, report: &mut Report) {
    for (object, versions) in &expected.versions {
        let Some((generation, digest, seq)) = versions.last() else { continue };
        let path = data_dir.join(object);
        // A manifest is small; a file far larger is none of its versions, and is not read whole.
        let problem = match open_regular(&path).and_then(|f| sha256_range(&f, 0, MAX_MANIFEST_BYTES)) {
            Err(e) => Some((Status::Missing, format!("generation {generation} chained at entry {seq}: {e}"))),
            Ok((d, n)) => {
                report.bytes_read += n;
                if d == *digest {
                    None
                } else if let Some((g, _, s)) = versions.iter().find(|(_, v, _)| *v == d) {
                    Some((
                        Status::Reordered,
                        format!(
                            "holds generation {g} (entry {s}), an older one; the newest chained is generation {generation} (entry {seq})"
                        ),
                    ))
                } else {
                    Some((Status::Modified, format!("not generation {generation} as chained at entry {seq}")))
                }
            }
        };
        push_object(report, object, problem.into_iter().collect());
    }
}

/// Files where the daemon keeps chained objects that the chain never mentions.
fn check_unchained(data_dir: &Path, expected: &Expected, report: &mut Report) {
    let bucket_segments = bucket_segments(data_dir).unwrap_or_default();
    let bucket_segments: std::collections::HashSet<&str> =
        bucket_segments.iter().map(String::as_str).collect();
    let known = |o: &str| {
        expected.appends.contains_key(o)
            || expected.files.contains_key(o)
            || expected.versions.contains_key(o)
            || expected.removed.contains_key(o)
    };
    for (dir, is_object) in [
        ("wal", (|n: &str| n.ends_with(".wal")) as fn(&str) -> bool),
        ("segments", |n: &str| n.ends_with(".parquet")),
        ("audit", |n: &str| n.starts_with("audit-") && n.ends_with(".jsonl")),
    ] {
        let Ok(entries) = std::fs::read_dir(data_dir.join(dir)) else { continue };
        let mut names: Vec<String> =
            entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        for name in names.into_iter().filter(|n| is_object(n)) {
            let object = format!("{dir}/{name}");
            if known(&object) {
                continue;
            }
            let len = std::fs::metadata(data_dir.join(&object)).map(|m| m.len()).unwrap_or(0);
            if dir == "segments" && bucket_segments.contains(name.as_str()) {
                // A copy of a segment in the bucket that this directory never wrote (a manifest
                // adopted from the bucket): the bucket's, not chained here.
                report.findings.push(Finding {
                    object,
                    status: Status::Intact,
                    detail:
                        "a copy from the bucket, which this data directory did not write (not chained here)"
                            .into(),
                });
                continue;
            }
            // A WAL generation started with nothing written yet, an audit file just opened.
            let empty = if dir == "wal" { len <= 8 } else { len == 0 };
            if !empty {
                report.findings.push(Finding {
                    object,
                    status: Status::Unexpected,
                    detail: format!("{len} bytes the chain never recorded"),
                });
            }
        }
    }
    if !expected.versions.contains_key(crate::store::MANIFEST_FILE)
        && data_dir.join(crate::store::MANIFEST_FILE).exists()
    {
        report.findings.push(Finding {
            object: crate::store::MANIFEST_FILE.into(),
            status: Status::Unexpected,
            detail: "the chain never recorded a manifest".into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::digest::sha256;

    #[test]
    fn names_logwarden_never_writes_are_reported_and_not_opened() {
        assert!(is_object_name("wal/0000000000000001.wal"));
        assert!(is_object_name("audit/audit-2026-12-03.jsonl"));
        for bad in [
            "../../dev/zero",
            "wal/../../x.wal",
            "segments/1.parquet",
            "audit/audit-2026-1-03.jsonl",
            "/etc/passwd",
        ] {
            assert!(!is_object_name(bad), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let chain = chain::Chain::open(dir.path(), None).unwrap();
        chain.record(Record::File {
            object: "../../dev/zero".into(),
            len: 1,
            sha256: sha256(b"x"),
            wal_through: 0,
            recovered: false,
        });
        // Hostile offsets must not overflow.
        chain.record(Record::Append {
            object: "wal/0000000000000001.wal".into(),
            offset: u64::MAX,
            len: u64::MAX,
            sha256: sha256(b"x"),
            recovered: false,
        });
        drop(chain);
        let opts = Options { data_dir: dir.path().to_path_buf(), checkpoint: None, cert: None };
        let report = verify(&opts).unwrap();
        assert!(
            report.findings.iter().any(|f| f.status == Status::Modified && f.detail.contains("never writes")),
            "{:?}",
            report.findings
        );
        assert!(
            report
                .findings
                .iter()
                .any(|f| f.object == "wal/0000000000000001.wal" && f.status == Status::Missing)
        );
    }

    #[test]
    fn entries_logwarden_never_writes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let chain = chain::Chain::open(dir.path(), None).unwrap();
        let seg = "segments/0000000000000001.parquet";
        let file = |wal_through| Record::File {
            object: seg.into(),
            len: 1,
            sha256: sha256(b"a"),
            wal_through,
            recovered: false,
        };
        let wal = "wal/0000000000000007.wal";
        chain.record(Record::Append {
            object: wal.into(),
            offset: 8,
            len: 1,
            sha256: sha256(b"x"),
            recovered: false,
        });
        chain.record(file(3));
        // A second write of a segment; a WAL file removed as flushed that no segment holds.
        chain.record(file(9));
        chain.record(Record::Delete { object: wal.into(), reason: DeleteReason::Flushed });
        // Appending to a removed file; an eviction without a bucket.
        chain.record(Record::Append {
            object: wal.into(),
            offset: 0,
            len: 1,
            sha256: sha256(b"y"),
            recovered: false,
        });
        chain.record(Record::Delete { object: seg.into(), reason: DeleteReason::Evicted });
        drop(chain);
        let opts = Options { data_dir: dir.path().to_path_buf(), checkpoint: None, cert: None };
        let r = verify(&opts).unwrap();
        let has = |object: &str, status, text: &str| {
            r.findings.iter().any(|f| f.object == object && f.status == status && f.detail.contains(text))
        };
        assert!(has("seal/chain.jsonl", Status::Modified, "a second time"), "{:?}", r.findings);
        assert!(has(wal, Status::Missing, "in no segment"), "{:?}", r.findings);
        assert!(has("seal/chain.jsonl", Status::Modified, "after its removal"), "{:?}", r.findings);
        assert!(has(seg, Status::Missing, "no bucket"), "{:?}", r.findings);
    }
}
