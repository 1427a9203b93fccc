//! The daemon's one miner, shared by every connection: it stamps each sealed batch with its
//! rows' `template_id`, and keeps its templates in `data_dir/templates.json` so that ids stay
//! the same across restarts.
//!
//! A connection takes the lock once per batch (one read's worth of events), not per event.
//! The file is replaced atomically (write, fsync, rename) by [`Shared::save`], which the daemon
//! calls periodically and at shutdown; templates learned after the last save are learned again
//! after a crash, possibly under new ids.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arrow::array::{AsArray, RecordBatch, StringArray, TimestampNanosecondArray, UInt32Builder};
use arrow::datatypes::TimestampNanosecondType;
use arrow::error::ArrowError;
use serde::{Deserialize, Serialize};

use super::{Match, Miner, MinerConfig, OVERFLOW, Template, Tokens};
use crate::batch::{MESSAGE_INDEX, TEMPLATE_ID_INDEX, TIMESTAMP_INDEX};

#[derive(Debug, thiserror::Error)]
pub enum TemplatesError {
    #[error("failed to {op} {path}: {source}")]
    Io { op: &'static str, path: String, source: std::io::Error },
    #[error("{path} is not a template file this version can read: {source}")]
    Format { path: String, source: serde_json::Error },
    #[error(
        "{path} is damaged: template ids must run 1, 2, 3... in order, but id {found} comes where {expected} should"
    )]
    Ids { path: String, found: u32, expected: u32 },
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    templates: Vec<Template>,
}

const VERSION: u32 = 1;

/// What the miner reports: `logwarden_templates` and `logwarden_templates_created_total`.
#[derive(Clone)]
pub struct TemplateMetrics {
    pub known: prometheus::IntGauge,
    pub created: prometheus::IntCounter,
}

thread_local! {
    /// Each thread's masking buffers and value cache, for the miner (by [`Shared::id`]) whose
    /// hasher filled them.
    static SCRATCH: RefCell<Option<(u64, Tokens)>> = const { RefCell::new(None) };
}

/// Numbers each [`Shared`] of the process.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

pub struct Shared {
    id: u64,
    miner: Mutex<Miner>,
    metrics: Option<TemplateMetrics>,
    /// The miner's token hasher, for masking outside the lock.
    hasher: foldhash::fast::RandomState,
    path: PathBuf,
    /// Bumped by every batch stamped; `save` writes only when it moved.
    changes: AtomicU64,
    saved: AtomicU64,
}

impl Shared {
    /// The miner with the templates saved in `path`, or an empty one if there is no file.
    pub fn load(path: &Path, metrics: Option<TemplateMetrics>) -> Result<Arc<Shared>, TemplatesError> {
        let templates = match std::fs::read(path) {
            Ok(bytes) => Self::decode(&bytes, &path.display().to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(TemplatesError::Io { op: "read", path: path.display().to_string(), source });
            }
        };
        let miner = Miner::restore(MinerConfig::default(), templates);
        if let Some(m) = &metrics {
            m.known.set(miner.live() as i64);
        }
        Ok(Arc::new(Shared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            metrics,
            hasher: miner.hasher().clone(),
            miner: Mutex::new(miner),
            path: path.to_path_buf(),
            changes: AtomicU64::new(0),
            saved: AtomicU64::new(0),
        }))
    }

    /// The templates in a `templates.json` body; `origin` names it in the error.
    pub fn decode(body: &[u8], origin: &str) -> Result<Vec<Template>, TemplatesError> {
        let templates = serde_json::from_slice::<File>(body)
            .map(|f| f.templates)
            .map_err(|source| TemplatesError::Format { path: origin.to_owned(), source })?;
        // Events hold these ids: a file with one missing would have new statements take the
        // ids of old ones.
        for (i, t) in templates.iter().enumerate() {
            let expected = i as u32 + 1;
            if t.id != expected {
                return Err(TemplatesError::Ids { path: origin.to_owned(), found: t.id, expected });
            }
        }
        Ok(templates)
    }

    fn lock(&self) -> MutexGuard<'_, Miner> {
        // A panic while mining leaves the miner usable: at worst one template is half-updated.
        self.miner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `batch` (in the `logs` schema) with its `template_id` column filled in.
    pub fn stamp(&self, batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
        let messages = batch.column(MESSAGE_INDEX).as_string::<i32>();
        let times = batch.column(TIMESTAMP_INDEX).as_primitive::<TimestampNanosecondType>();
        let mut ids = UInt32Builder::with_capacity(batch.num_rows());
        // Masking, most of the work, runs outside the lock (on every connection's core).
        SCRATCH.with_borrow_mut(|scratch| {
            let tokens = match scratch {
                Some((owner, tokens)) if *owner == self.id => tokens,
                _ => &mut scratch.insert((self.id, self.lock().tokens())).1,
            };
            tokens.clear();
            let ranges: Vec<_> =
                (0..batch.num_rows()).map(|i| tokens.append(messages.value(i), &self.hasher)).collect();
            self.mine(tokens, ranges, messages, times, &mut ids);
        });
        self.changes.fetch_add(1, Ordering::Relaxed);
        let mut columns = batch.columns().to_vec();
        columns[TEMPLATE_ID_INDEX] = Arc::new(ids.finish());
        RecordBatch::try_new(batch.schema(), columns)
    }

    /// Match the masked messages to templates, under the lock.
    fn mine(
        &self,
        tokens: &Tokens,
        ranges: Vec<std::ops::Range<usize>>,
        messages: &StringArray,
        times: &TimestampNanosecondArray,
        ids: &mut UInt32Builder,
    ) {
        let mut created = 0u64;
        let known = {
            let mut miner = self.lock();
            for (i, range) in ranges.into_iter().enumerate() {
                let m = miner.add_masked(tokens, range, messages.value(i), times.value(i));
                created += u64::from(matches!(m, Match::New(_)));
                match m.id() {
                    OVERFLOW => ids.append_null(),
                    id => ids.append_value(id),
                }
            }
            miner.live()
        };
        if let Some(m) = &self.metrics {
            m.created.inc_by(created);
            m.known.set(known as i64);
        }
    }

    /// How many templates the miner knows.
    pub fn len(&self) -> usize {
        self.lock().templates().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of one template.
    pub fn get(&self, id: super::TemplateId) -> Option<Template> {
        self.lock().get(id).cloned()
    }

    /// A copy of the templates, in id order.
    pub fn snapshot(&self) -> Vec<Template> {
        self.lock().templates().to_vec()
    }

    /// The templates as `templates.json` holds them (what a node publishes for the others).
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&File { version: VERSION, templates: self.snapshot() })
    }

    /// Write the templates if anything was stamped since the last save.
    pub fn save(&self) -> Result<(), TemplatesError> {
        let changes = self.changes.load(Ordering::Relaxed);
        if changes == self.saved.load(Ordering::Relaxed) {
            return Ok(());
        }
        let body = self
            .encode()
            .map_err(|source| TemplatesError::Format { path: self.path.display().to_string(), source })?;
        crate::store::write_atomic(&self.path, &body).map_err(|source| TemplatesError::Io {
            op: "replace",
            path: self.path.display().to_string(),
            source,
        })?;
        self.saved.store(changes, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{EventBatchBuilder, Origin};
    use crate::ingest::event::Event;
    use arrow::array::Array;
    use std::borrow::Cow;

    fn batch(messages: &[&str]) -> RecordBatch {
        let mut b = EventBatchBuilder::new(Origin {
            listener: "l".into(),
            peer: "p".into(),
            client_id: "".into(),
            protocol: crate::ingest::event::Protocol::Syslog,
        });
        for (i, m) in messages.iter().enumerate() {
            let mut ev = Event::raw(Cow::Borrowed(*m), "");
            ev.decode_error = None;
            b.append(&ev, i as i64);
        }
        b.finish().unwrap()
    }

    fn ids(b: &RecordBatch) -> Vec<Option<u32>> {
        let c = b.column(TEMPLATE_ID_INDEX).as_primitive::<arrow::datatypes::UInt32Type>();
        (0..c.len()).map(|i| c.is_valid(i).then(|| c.value(i))).collect()
    }

    #[test]
    fn batches_are_stamped_and_ids_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("templates.json");
        let shared = Shared::load(&path, None).unwrap();
        let b = shared.stamp(batch(&["disk sda1 full", "user root logged in", "disk sdb2 full"])).unwrap();
        assert_eq!(ids(&b), [Some(1), Some(2), Some(1)]);
        shared.save().unwrap();

        let again = Shared::load(&path, None).unwrap();
        let b = again.stamp(batch(&["user root logged in", "disk sdc3 full", "a new statement"])).unwrap();
        assert_eq!(ids(&b), [Some(2), Some(1), Some(3)]);
        let t = again.snapshot();
        assert_eq!(t[0].pattern(), "disk <*> full");
        assert_eq!(t[0].count, 3);
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("templates.json");
        std::fs::write(&path, "{not json").unwrap();
        let e = Shared::load(&path, None).err().unwrap().to_string();
        assert!(e.contains("templates.json is not a template file"), "{e}");
    }
}
