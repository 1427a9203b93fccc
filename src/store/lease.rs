//! The node lease: `nodes/NODE_ID/lease.json` in the bucket, taken at start with a conditional
//! write (`If-None-Match: *`, or `If-Match` on an expired lease's ETag) and renewed the same way
//! while the daemon runs. Two daemons given one node id on one bucket would write the same
//! objects; with the lease the second refuses to start and names the holder, and a daemon that
//! loses its lease (another took it after it could not renew) stops writing to the bucket.
//!
//! A lease expires [`TTL`] after its last renewal by the holder's clock. A daemon restarting on
//! the same host and data directory after a crash takes its old lease at once when the process
//! that held it is gone, so a restart does not wait for the expiry.

use std::path::Path as FsPath;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::bucket::{Bucket, BucketError};

/// A lease not renewed for this long may be taken by another daemon.
pub const TTL: Duration = Duration::from_secs(60);
/// How often the holder renews it.
const RENEW_EVERY: Duration = Duration::from_secs(15);
/// The holder stops writing this long before its lease could expire.
const MARGIN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Holder {
    host: String,
    pid: u32,
    data_dir: String,
    started_at: String,
    /// Unix seconds of the last renewal.
    renewed_at: i64,
    ttl_seconds: u64,
}

impl Holder {
    fn describe(&self) -> String {
        format!(
            "host {} (pid {}, data directory {}, started {}, renewed {})",
            self.host,
            self.pid,
            self.data_dir,
            self.started_at,
            chrono::DateTime::from_timestamp(self.renewed_at, 0)
                .map_or_else(|| "?".into(), |t| t.to_rfc3339())
        )
    }

    fn expired(&self, now: i64) -> bool {
        now > self.renewed_at.saturating_add(i64::try_from(self.ttl_seconds).unwrap_or(i64::MAX))
    }

    /// An earlier run of this daemon on this host and data directory, whose process is gone.
    fn is_dead_predecessor(&self, me: &Holder) -> bool {
        self.host == me.host
            && self.data_dir == me.data_dir
            // In a container the new process often has the old one's pid (1).
            && (self.pid == me.pid || !FsPath::new(&format!("/proc/{}", self.pid)).exists())
    }
}

/// The lease this daemon holds.
pub struct Lease {
    bucket: Bucket,
    key: Path,
    me: Mutex<Holder>,
    etag: Mutex<Option<String>>,
    /// Writes to the bucket stop after this (the last renewal plus TTL less a margin).
    good_until: Mutex<Instant>,
    lost: AtomicBool,
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Lease {
    /// Take the node's lease, or say who holds it.
    pub async fn acquire(bucket: &Bucket, data_dir: &FsPath) -> Result<Lease, BucketError> {
        let key = bucket.node_key("lease.json");
        let me = Holder {
            host: rustix::system::uname().nodename().to_string_lossy().into_owned(),
            pid: std::process::id(),
            data_dir: std::path::absolute(data_dir)
                .unwrap_or_else(|_| data_dir.to_path_buf())
                .display()
                .to_string(),
            started_at: chrono::Utc::now().to_rfc3339(),
            renewed_at: now_unix(),
            ttl_seconds: TTL.as_secs(),
        };
        let store = bucket.object_store();
        // A few rounds: another daemon may create or take the lease between our read and write.
        for _ in 0..3 {
            let mode = match store.get(&key).await {
                Err(object_store::Error::NotFound { .. }) => PutMode::Create,
                Err(e) => return Err(bucket.failed("read", &key, e)),
                Ok(r) => {
                    let version =
                        UpdateVersion { e_tag: r.meta.e_tag.clone(), version: r.meta.version.clone() };
                    let bytes = r.bytes().await.map_err(|e| bucket.failed("read", &key, e))?;
                    let held: Option<Holder> = serde_json::from_slice(&bytes).ok();
                    match held {
                        Some(h) if !h.expired(now_unix()) && !h.is_dead_predecessor(&me) => {
                            return Err(BucketError::LeaseHeld {
                                node: bucket.node_id().to_owned(),
                                object: bucket.object_url(&key),
                                holder: h.describe(),
                                ttl: TTL.as_secs(),
                            });
                        }
                        // Expired, left by this daemon's previous run, or unreadable: take it over.
                        _ => PutMode::Update(version),
                    }
                }
            };
            let lease = Lease {
                bucket: bucket.clone(),
                key: key.clone(),
                me: Mutex::new(me.clone()),
                etag: Mutex::new(None),
                good_until: Mutex::new(Instant::now()),
                lost: AtomicBool::new(false),
            };
            match lease.write(mode).await {
                Ok(()) => return Ok(lease),
                Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                    continue;
                }
                Err(e) => return Err(bucket.failed("write", &key, e)),
            }
        }
        Err(BucketError::LeaseContended { object: bucket.object_url(&key) })
    }

    async fn write(&self, mode: PutMode) -> Result<(), object_store::Error> {
        let started = Instant::now();
        let body = {
            let mut me = self.me.lock().unwrap_or_else(|e| e.into_inner());
            me.renewed_at = now_unix();
            serde_json::to_vec_pretty(&*me).unwrap_or_default()
        };
        let opts = PutOptions { mode, ..Default::default() };
        let r = self.bucket.object_store().put_opts(&self.key, PutPayload::from(body), opts).await?;
        *self.etag.lock().unwrap_or_else(|e| e.into_inner()) = r.e_tag;
        *self.good_until.lock().unwrap_or_else(|e| e.into_inner()) = started + TTL - MARGIN;
        Ok(())
    }

    /// Renew: a conditional write on the ETag of the last one. Another daemon having written
    /// the lease since means it is lost for good.
    async fn renew(&self) -> Result<(), BucketError> {
        let e_tag = self.etag.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match self.write(PutMode::Update(UpdateVersion { e_tag, version: None })).await {
            Ok(()) => Ok(()),
            Err(e @ object_store::Error::Precondition { .. }) => {
                self.lost.store(true, Ordering::Relaxed);
                Err(self.bucket.failed("renew the lease", &self.key, e))
            }
            Err(e) => Err(self.bucket.failed("renew the lease", &self.key, e)),
        }
    }

    /// Whether this daemon may write to the bucket now.
    pub fn held(&self) -> bool {
        !self.lost.load(Ordering::Relaxed)
            && Instant::now() < *self.good_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn object_url(&self) -> String {
        self.bucket.object_url(&self.key)
    }

    /// Renew every 15 s until `stop`, then give the lease up so a restart need not wait.
    pub async fn keep(&self, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(RENEW_EVERY) => {}
            }
            if self.lost.load(Ordering::Relaxed) {
                continue;
            }
            if let Err(e) = self.renew().await {
                if self.lost.load(Ordering::Relaxed) {
                    tracing::error!(error = %e, "another daemon took this node's lease: nothing more is written to the bucket; \
                        segments wait on local disk. Two daemons share a cluster.node_id: give each its own and restart this one");
                } else {
                    tracing::warn!(error = %e, "failed to renew this node's lease; bucket writes stop if it is not renewed in time");
                }
            }
        }
        if !self.lost.load(Ordering::Relaxed)
            && let Err(e) = self.bucket.object_store().delete(&self.key).await
        {
            tracing::warn!(object = %self.object_url(), error = %e, "failed to give up the node lease; it expires by itself");
        }
        // Given up: nothing more is written under this node's prefix, so a successor's objects
        // are never overwritten by this run's last steps.
        self.lost.store(true, Ordering::Relaxed);
    }
}
