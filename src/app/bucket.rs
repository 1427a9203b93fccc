//! The daemon's side of a bucket: where the config puts segments (checked at start), and this
//! node's alerts and templates published for the other nodes.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::AppError;
use crate::config::Config;
use crate::detect::templates::Shared;
use crate::store::Store;

/// Where the config puts segments. With a bucket, the bucket is checked (a write under this
/// node's prefix) and this node's manifest read, so a wrong bucket, endpoint or credentials stop
/// the daemon at start with the object and the cause named. `registry` is None for readers.
pub async fn segments_at(
    config: &Config,
    registry: Option<&prometheus::Registry>,
) -> Result<crate::store::SegmentsAt, AppError> {
    use crate::config::StorageUrl;
    use crate::store::{Bucket, BucketSetup, SegmentsAt};
    let location = config.storage.location(&config.data_dir).map_err(|reason| {
        AppError::Bucket(crate::store::BucketError::Config { key: "storage.url", reason })
    })?;
    let (bucket, prefix) = match location {
        StorageUrl::Local(dir) => return Ok(SegmentsAt::Local(dir)),
        StorageUrl::S3 { bucket, prefix } => (bucket, prefix),
    };
    let bucket = Bucket::open(&bucket, &prefix, &config.cluster.node_id())?;
    // A daemon (or `storage migrate`) that writes checks the bucket and takes the node's lease;
    // a query node writes nothing (its first reading of the nodes' manifests checks the bucket).
    let writes = registry.is_some() && config.cluster.role.ingests();
    let lease = match writes {
        true => {
            bucket.check().await?;
            Some(Arc::new(crate::store::Lease::acquire(&bucket, &config.data_dir).await?))
        }
        false => None,
    };
    // Readers (`logwarden query`) go by the data directory's manifest and need no bucket round trip.
    let remote_manifest = match writes {
        true => bucket.load_manifest().await?,
        false => None,
    };
    tracing::info!(bucket = %bucket.location(), role = config.cluster.role.as_str(),
        segments = remote_manifest.as_ref().map_or(0, |m| m.segments.len()), "segments are stored in the bucket");
    Ok(SegmentsAt::Bucket(Box::new(BucketSetup {
        bucket,
        remote_manifest,
        cache_max_bytes: config.storage.cache_max_bytes.as_u64(),
        backlog_max_bytes: config.storage.upload_backlog_max_bytes.as_u64(),
        metrics: registry.map(crate::metrics::BucketMetrics::new).transpose()?,
        lease,
        query_only: !config.cluster.role.ingests(),
        delete_grace: delete_grace(config),
    })))
}

/// How long an object retention dropped stays in the bucket: other nodes plan from the
/// manifest they read last (up to a refresh interval old, twice with a slow reading) and a
/// query may read for up to its time limit.
fn delete_grace(config: &Config) -> std::time::Duration {
    let refresh = config.cluster.refresh_interval;
    (refresh.saturating_mul(2).saturating_add(config.flight.limits.timeout)).max(refresh.saturating_mul(3))
}

/// Publish this node's alerts and templates in the bucket every `every` while they change,
/// and tries once more when `cancel` fires (nothing is written once the lease is given up).
pub(super) async fn publish_shared(
    store: Store,
    alerts: Arc<crate::alert::Alerts>,
    templates: Option<Arc<Shared>>,
    every: std::time::Duration,
    cancel: CancellationToken,
) {
    let mut sent: [Option<Vec<u8>>; 2] = [None, None];
    let mut failures = 0u64;
    loop {
        let stopping = cancel.is_cancelled();
        let bodies = [
            (crate::store::ALERTS_FILE, serde_json::to_vec(&alerts.snapshot()).ok()),
            (crate::store::TEMPLATES_FILE, templates.as_ref().and_then(|t| t.encode().ok())),
        ];
        for (i, (name, body)) in bodies.into_iter().enumerate() {
            let Some(body) = body.filter(|b| sent[i].as_ref() != Some(b)) else { continue };
            match store.publish_file(name, body.clone()).await {
                Ok(()) => {
                    sent[i] = Some(body);
                    failures = 0;
                }
                Err(e) => {
                    failures += 1;
                    if let Some(m) = store.bucket_metrics() {
                        m.errors.with_label_values(&["publish"]).inc();
                    }
                    // The uploader reports a bucket outage; this says which file waits.
                    if failures == 1 {
                        tracing::warn!(error = %e, "failed to publish this node's {name} for the other nodes; trying again");
                    }
                }
            }
        }
        if stopping {
            return;
        }
        tokio::select! {
            () = cancel.cancelled() => {}
            () = tokio::time::sleep(every) => {}
        }
    }
}
