//! The other nodes sharing the bucket: their manifests (so that every node's queries cover
//! every node's stored segments) and the alerts and templates each publishes.
//!
//! A task reads them every `cluster.refresh_interval`: one listing of `PREFIX/nodes/`, then per
//! node a conditional GET of each file (`If-None-Match`), so an idle cluster costs a listing and
//! a few "not modified" answers per interval. The view a query plans against is swapped whole.
//! A failed round keeps the last view (queries go on over what was known) and is logged and
//! counted; the next round tries again.
//!
//! Segments of other nodes are cached like this node's, under `segments/peers/NODE/`; a copy
//! leaves the cache when its node's manifest no longer names it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::bucket::{BucketError, Fetched};
use super::failures::Failures;
use super::manifest::{self, Manifest};
use super::{Remote, SegmentMeta, Store};

/// The files a node publishes for the others besides its manifest.
pub const ALERTS_FILE: &str = "alerts.json";
pub const TEMPLATES_FILE: &str = "templates.json";
const SHARED_FILES: [&str; 2] = [ALERTS_FILE, TEMPLATES_FILE];

/// Failures are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The other nodes as last read from the bucket.
#[derive(Default)]
pub struct PeerView {
    pub nodes: Vec<Arc<PeerNode>>,
}

/// One other node.
pub struct PeerNode {
    pub node: String,
    /// The segments its manifest in the bucket names.
    pub segments: Vec<SegmentMeta>,
    manifest_etag: Option<String>,
    /// Its published files, by name, with their versions.
    files: BTreeMap<&'static str, (Bytes, Option<String>)>,
}

impl PeerNode {
    pub fn file(&self, name: &str) -> Option<&Bytes> {
        self.files.get(name).map(|(b, _)| b)
    }
}

/// Where other nodes' segment copies live under `segments/`.
const PEERS_DIR: &str = "peers/";

/// The cache key (and path under `segments/`) of another node's segment.
pub fn cache_key(node: &str, file: &str) -> String {
    format!("{PEERS_DIR}{node}/{file}")
}

/// A manifest larger than this is not read (one of 100 000 segments is about 25 MB).
const MAX_MANIFEST_BYTES: u64 = 64 << 20;
/// Nor alerts or templates larger than this (nor does a node publish larger ones).
pub(super) const MAX_FILE_BYTES: u64 = 64 << 20;

/// Read the other nodes' manifests and files once, and install what was read. Fails only
/// when the nodes cannot be listed; a node whose objects cannot be read (refused, too large,
/// not a manifest, naming paths logwarden never writes) keeps what was read of it before,
/// and is reported in the returned problems.
pub(super) async fn refresh(remote: &Remote) -> Result<Vec<String>, BucketError> {
    let bucket = &remote.bucket;
    let nodes = bucket.list_nodes().await?;
    let old = remote.peer_view();
    let mut next = Vec::new();
    let mut problems = Vec::new();
    for node in nodes {
        // This node's own segments come from its own manifest (a query node has none).
        if node == bucket.node_id() && !remote.query_only {
            continue;
        }
        let prev = old.nodes.iter().find(|n| n.node == node);
        match read_node(remote, &node, prev, &mut problems).await {
            Ok(Some(n)) => next.push(Arc::new(n)),
            // A node that has stored nothing yet, or a query node.
            Ok(None) => {}
            Err(e) => {
                problems.push(e.to_string());
                if let Some(p) = prev {
                    next.push(p.clone());
                }
            }
        }
    }
    // Copies of segments that no node names any more (retention, a removed node), once no
    // query has used them for a while.
    let named: HashSet<String> =
        next.iter().flat_map(|n| n.segments.iter().map(|s| cache_key(&n.node, &s.file))).collect();
    remote.cache.retire_unnamed(PEERS_DIR, &named);
    if let Some(m) = &remote.metrics {
        m.peers.set(next.iter().filter(|n| n.node != bucket.node_id()).count() as i64);
        m.peer_segments.set(next.iter().map(|n| n.segments.len() as i64).sum());
        if problems.is_empty() {
            m.peers_refreshed.set(chrono::Utc::now().timestamp());
        }
    }
    *remote.peers.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(PeerView { nodes: next });
    Ok(problems)
}

/// One node's manifest and files, read again where they changed since `prev`; an unusable
/// manifest is reported in `problems`.
async fn read_node(
    remote: &Remote,
    node: &str,
    prev: Option<&Arc<PeerNode>>,
    problems: &mut Vec<String>,
) -> Result<Option<PeerNode>, BucketError> {
    let bucket = &remote.bucket;
    let key = bucket.peer_key(node, manifest::FILE_NAME);
    let known = prev.and_then(|p| p.manifest_etag.as_deref());
    let (segments, manifest_etag) = match bucket.fetch_if_changed(&key, known, MAX_MANIFEST_BYTES).await? {
        Fetched::Changed { body, etag } => {
            let parsed = serde_json::from_slice::<Manifest>(&body)
                .map_err(|e| format!("{} is not a manifest: {e}", bucket.object_url(&key)))
                .and_then(|m| match m.implausible() {
                    Some(problem) => Err(format!("{} {problem}", bucket.object_url(&key))),
                    None => Ok(m),
                });
            match parsed {
                Ok(m) => (m.segments, etag),
                // Keep what was read before, and remember this version so that it is not
                // downloaded again every round; the node's next write replaces it.
                Err(problem) => {
                    problems.push(problem);
                    (prev.map(|p| p.segments.clone()).unwrap_or_default(), etag)
                }
            }
        }
        Fetched::Unchanged => match prev {
            Some(p) => (p.segments.clone(), p.manifest_etag.clone()),
            None => return Ok(None),
        },
        Fetched::Missing => return Ok(None),
    };
    let mut files = BTreeMap::new();
    for name in SHARED_FILES {
        let known = prev.and_then(|p| p.files.get(name));
        let key = bucket.peer_key(node, name);
        // Each file on its own: one that cannot be read keeps its last version, and never holds
        // back the node's segments.
        match bucket.fetch_if_changed(&key, known.and_then(|(_, e)| e.as_deref()), MAX_FILE_BYTES).await {
            Ok(Fetched::Changed { body, etag }) => {
                files.insert(name, (body, etag));
            }
            Ok(Fetched::Unchanged) => {
                if let Some(k) = known {
                    files.insert(name, k.clone());
                }
            }
            Ok(Fetched::Missing) => {}
            Err(e) => {
                problems.push(e.to_string());
                if let Some(k) = known {
                    files.insert(name, k.clone());
                }
            }
        }
    }
    Ok(Some(PeerNode { node: node.to_owned(), segments, manifest_etag, files }))
}

/// Refresh the view every `every` until `stop`.
pub(super) async fn run(store: Store, every: Duration, stop: CancellationToken) {
    let Some(remote) = store.remote().cloned() else { return };
    let mut failures = Failures::new(LOG_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let round = tokio::select! {
            () = stop.cancelled() => return,
            r = refresh(&remote) => r,
        };
        let failed = match round {
            Ok(problems) if problems.is_empty() => None,
            Ok(problems) => Some(problems.join("; ")),
            Err(e) => Some(e.to_string()),
        };
        match failed {
            None => {
                if let Some(r) = failures.recovered() {
                    tracing::warn!(after = ?r.failing_for, failures = r.failures, "reading the other nodes' manifests works again");
                }
            }
            Some(error) => {
                if let Some(m) = &remote.metrics {
                    m.errors.with_label_values(&["peers"]).inc();
                }
                if let Some(r) = failures.failed() {
                    tracing::error!(error, failures = r.failures, failing_for = ?r.failing_for,
                        "failed to read some of the other nodes' objects from the bucket; queries here go on over what was read of them before");
                }
            }
        }
    }
}
