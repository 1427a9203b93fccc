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
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::bucket::{BucketError, Fetched};
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

/// The cache key (and path under `segments/`) of another node's segment.
pub fn cache_key(node: &str, file: &str) -> String {
    format!("peers/{node}/{file}")
}

/// Read the other nodes' manifests and files once, and install what was read.
pub(super) async fn refresh(remote: &Remote) -> Result<(), BucketError> {
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
        let key = bucket.peer_key(&node, manifest::FILE_NAME);
        let (segments, manifest_etag) =
            match bucket.fetch_if_changed(&key, prev.and_then(|p| p.manifest_etag.as_deref())).await? {
                Fetched::Changed { body, etag } => match serde_json::from_slice::<Manifest>(&body) {
                    Ok(m) => (m.segments, etag),
                    Err(e) => {
                        // Keep what was read before; the node's next write replaces the object.
                        problems.push(format!("{} is not a manifest: {e}", bucket.object_url(&key)));
                        match prev {
                            Some(p) => (p.segments.clone(), p.manifest_etag.clone()),
                            None => continue,
                        }
                    }
                },
                Fetched::Unchanged => match prev {
                    Some(p) => (p.segments.clone(), p.manifest_etag.clone()),
                    None => continue,
                },
                // A node that has stored nothing yet, or a query node.
                Fetched::Missing => continue,
            };
        let mut files = BTreeMap::new();
        for name in SHARED_FILES {
            let known = prev.and_then(|p| p.files.get(name));
            let key = bucket.peer_key(&node, name);
            match bucket.fetch_if_changed(&key, known.and_then(|(_, e)| e.as_deref())).await? {
                Fetched::Changed { body, etag } => {
                    files.insert(name, (body, etag));
                }
                Fetched::Unchanged => {
                    if let Some(k) = known {
                        files.insert(name, k.clone());
                    }
                }
                Fetched::Missing => {}
            }
        }
        next.push(Arc::new(PeerNode { node, segments, manifest_etag, files }));
    }
    // Copies of segments that no node names any more (retention, a removed node).
    let named: HashSet<String> =
        next.iter().flat_map(|n| n.segments.iter().map(|s| cache_key(&n.node, &s.file))).collect();
    for n in &old.nodes {
        for s in &n.segments {
            let k = cache_key(&n.node, &s.file);
            if !named.contains(&k) {
                remote.cache.remove(&k);
            }
        }
    }
    if let Some(m) = &remote.metrics {
        m.peers.set(next.len() as i64);
        m.peer_segments.set(next.iter().map(|n| n.segments.len() as i64).sum());
    }
    *remote.peers.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(PeerView { nodes: next });
    if let Some(m) = &remote.metrics {
        m.peers_refreshed.set(chrono::Utc::now().timestamp());
    }
    if problems.is_empty() { Ok(()) } else { Err(BucketError::Peers(problems.join("; "))) }
}

/// Refresh the view every `every` until `stop`.
pub(super) async fn run(store: Store, every: Duration, stop: CancellationToken) {
    let Some(remote) = store.remote().cloned() else { return };
    let mut failing: Option<(Instant, u64, Instant)> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match refresh(&remote).await {
            Ok(()) => {
                if let Some((since, failures, _)) = failing.take() {
                    tracing::warn!(after = ?since.elapsed(), failures, "reading the other nodes' manifests works again");
                }
            }
            Err(e) => {
                if let Some(m) = &remote.metrics {
                    m.errors.with_label_values(&["peers"]).inc();
                }
                let now = Instant::now();
                let (since, failures, logged) = failing.get_or_insert((now, 0, now));
                *failures += 1;
                if *failures == 1 || logged.elapsed() >= LOG_EVERY {
                    *logged = now;
                    tracing::error!(error = %e, failures = *failures, failing_for = ?since.elapsed(),
                        "failed to read the other nodes' manifests from the bucket; queries here go on over what was read before");
                }
            }
        }
    }
}
