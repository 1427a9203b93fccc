//! The bucket: this node's segments and manifest in S3 or an S3-compatible server, through the
//! `object_store` crate that DataFusion reads Parquet with.
//!
//! Layout under `s3://BUCKET/PREFIX/`: `nodes/NODE_ID/manifest.json` (the segments of that node
//! that are in the bucket), `nodes/NODE_ID/segments/ID.parquet`, and `nodes/NODE_ID/node.json`
//! (written at start: it proves the bucket exists and takes writes from these credentials),
//! `nodes/NODE_ID/lease.json` (see `lease`), and `nodes/NODE_ID/alerts.json` and
//! `templates.json` (what the node's rules and template miner hold, for queries on other nodes).
//! Each node writes under its own prefix only, so no two writers ever update one object; every
//! node reads all of them (see `peers`).
//!
//! Endpoint, region and credentials come from the environment (`AWS_*`), the shared
//! credentials file, or instance and pod identity: never from the config file.

use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;

use super::manifest::Manifest;

/// Why a build without the `s3` feature (the FIPS build) cannot open a bucket.
pub const NO_S3: &str = "this build of logwarden has no S3 client: it was built without the `s3` feature, \
     as the FIPS build is (object_store signs requests and makes TLS connections with ring, outside the \
     FIPS module); keep segments in a directory, or run a default build";

/// Files above this size are uploaded in parts.
const MULTIPART_ABOVE: u64 = 16 << 20;
/// Size of one part (S3 wants at least 5 MiB for all but the last).
const PART_BYTES: usize = 8 << 20;
/// Parts in flight at once for one upload.
const PARTS_IN_FLIGHT: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    #[error("failed to {op} {object}: {cause}")]
    Object { op: &'static str, object: String, cause: String, kind: FailureKind },
    #[error("failed to set up the bucket {url}: {source}")]
    Setup { url: String, source: object_store::Error },
    #[error("{url}: {NO_S3}")]
    NoS3 { url: String },
    #[error("failed to read {path} to upload it as {object}: {source}")]
    Local { path: std::path::PathBuf, object: String, source: std::io::Error },
    #[error("this node's {name} is {bytes} bytes, more than the {max} other nodes read: not published")]
    TooLarge { name: String, bytes: u64, max: u64 },
    #[error("failed to write {path}, the local copy of {object}: {source}")]
    Copy { path: std::path::PathBuf, object: String, source: std::io::Error },
    #[error("manifest {object} is corrupt: {source}")]
    CorruptManifest { object: String, source: serde_json::Error },
    #[error("{key}: {reason}")]
    Config { key: &'static str, reason: String },
    #[error("{0}")]
    /// An object in the bucket that is not what logwarden writes (unreadable, too large, naming
    /// paths it never would): left unused.
    Untrusted(String),
    #[error(
        "node {node} is in use: {object} is held by {holder}. Two daemons with the same cluster.node_id on one \
         bucket would overwrite each other's segments: give this one another [cluster] node_id, or stop the \
         other (a lease its daemon could not give up expires {ttl} s after its last renewal)"
    )]
    LeaseHeld { node: String, object: String, holder: String, ttl: u64 },
    #[error("{object} changed under every attempt to take it: another daemon is starting as this node")]
    LeaseContended { object: String },
}

/// What kind of failure the bucket reported, for choosing what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The object (or the bucket) does not exist.
    NotFound,
    /// The bucket refused the request: a policy, Object Lock, a legal hold.
    Refused,
    /// The credentials were refused.
    Credentials,
    /// Anything else: unreachable, timeouts, server errors.
    Other,
}

impl BucketError {
    pub fn kind(&self) -> FailureKind {
        match self {
            BucketError::Object { kind, .. } => *kind,
            _ => FailureKind::Other,
        }
    }
}

/// This node's place in a bucket, and the client that reaches it.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    /// `PREFIX/nodes`.
    nodes_prefix: String,
    /// `PREFIX/nodes/NODE_ID`.
    node_prefix: String,
    node_id: String,
}

/// An object read only if it changed since the version named by `etag`.
pub enum Fetched {
    Changed { body: Bytes, etag: Option<String> },
    Unchanged,
    Missing,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bucket({})", self.location())
    }
}

impl Bucket {
    /// The client for `s3://bucket/prefix`, configured from the environment; nothing is sent yet.
    pub fn open(bucket: &str, prefix: &str, node_id: &str) -> Result<Bucket, BucketError> {
        let url =
            if prefix.is_empty() { format!("s3://{bucket}") } else { format!("s3://{bucket}/{prefix}") };
        let store = Self::client(bucket, url)?;
        let nodes_prefix = if prefix.is_empty() { "nodes".to_owned() } else { format!("{prefix}/nodes") };
        Ok(Bucket {
            store,
            bucket: bucket.to_owned(),
            node_prefix: format!("{nodes_prefix}/{node_id}"),
            nodes_prefix,
            node_id: node_id.to_owned(),
        })
    }

    #[cfg(not(feature = "s3"))]
    fn client(_bucket: &str, url: String) -> Result<Arc<dyn ObjectStore>, BucketError> {
        Err(BucketError::NoS3 { url })
    }

    #[cfg(feature = "s3")]
    fn client(bucket: &str, url: String) -> Result<Arc<dyn ObjectStore>, BucketError> {
        use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
        use object_store::{ClientConfigKey, RetryConfig};
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            // Requests that hang (a stopped server) fail within these; the uploader retries.
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout), "5s")
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "60s")
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: std::time::Duration::from_secs(30),
                ..RetryConfig::default()
            });
        for (key, value) in super::aws_profile::from_files() {
            builder = builder.with_config(key, value);
        }
        let store = builder.build().map_err(|source| BucketError::Setup { url, source })?;
        Ok(Arc::new(store))
    }

    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// `s3://BUCKET`: the URL DataFusion finds this client under.
    pub fn store_url(&self) -> String {
        format!("s3://{}", self.bucket)
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// `s3://BUCKET/PREFIX/nodes/NODE_ID`: what a data directory's manifest is tied to.
    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.node_prefix)
    }

    pub fn segment_key(&self, file: &str) -> Path {
        self.peer_segment_key(&self.node_id, file)
    }

    /// `PREFIX/nodes/NODE/segments/FILE`: a segment of any node.
    pub fn peer_segment_key(&self, node: &str, file: &str) -> Path {
        Path::from(format!("{}/{node}/segments/{file}", self.nodes_prefix))
    }

    /// `PREFIX/nodes/NODE_ID/NAME`.
    pub(super) fn node_key(&self, name: &str) -> Path {
        Path::from(format!("{}/{name}", self.node_prefix))
    }

    /// `PREFIX/nodes/NODE/NAME`: a file of any node.
    pub(super) fn peer_key(&self, node: &str, name: &str) -> Path {
        Path::from(format!("{}/{node}/{name}", self.nodes_prefix))
    }

    /// The node ids under `PREFIX/nodes/` (those that ever wrote to this bucket).
    pub async fn list_nodes(&self) -> Result<Vec<String>, BucketError> {
        let prefix = Path::from(self.nodes_prefix.as_str());
        let listed = self
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|e| self.failed("list", &prefix, e))?;
        let mut nodes: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            // Another tool's directories under the prefix are no node of ours.
            .filter(|n| crate::config::check_node_id(n).is_ok())
            .collect();
        nodes.sort();
        Ok(nodes)
    }

    /// `key` if it changed since `etag` (every read when `etag` is None); an object larger
    /// than `max_bytes` is an error, not read.
    pub(super) async fn fetch_if_changed(
        &self,
        key: &Path,
        etag: Option<&str>,
        max_bytes: u64,
    ) -> Result<Fetched, BucketError> {
        let opts = object_store::GetOptions { if_none_match: etag.map(str::to_owned), ..Default::default() };
        match self.store.get_opts(key, opts).await {
            Ok(r) => {
                if r.meta.size > max_bytes {
                    return Err(BucketError::Untrusted(format!(
                        "{} is {} bytes, more than the {max_bytes} a node writes: not read",
                        self.object_url(key),
                        r.meta.size
                    )));
                }
                let etag = r.meta.e_tag.clone();
                let body = r.bytes().await.map_err(|e| self.failed("read", key, e))?;
                Ok(Fetched::Changed { body, etag })
            }
            Err(object_store::Error::NotModified { .. }) => Ok(Fetched::Unchanged),
            Err(object_store::Error::NotFound { .. }) => Ok(Fetched::Missing),
            Err(e) => Err(self.failed("read", key, e)),
        }
    }

    /// Replace this node's `NAME` with `body`.
    pub async fn put_node_file(&self, name: &str, body: Vec<u8>) -> Result<(), BucketError> {
        let key = self.node_key(name);
        self.store
            .put(&key, PutPayload::from(body))
            .await
            .map(|_| ())
            .map_err(|e| self.failed("write", &key, e))
    }

    fn manifest_key(&self) -> Path {
        Path::from(format!("{}/{}", self.node_prefix, super::manifest::FILE_NAME))
    }

    /// `s3://BUCKET/KEY`, for messages.
    pub fn object_url(&self, key: &Path) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    pub(super) fn failed(&self, op: &'static str, key: &Path, e: object_store::Error) -> BucketError {
        let (kind, cause) = describe(&e);
        BucketError::Object { op, object: self.object_url(key), cause, kind }
    }

    /// List this node's prefix and write `nodes/NODE_ID/node.json`: proves the bucket exists, is
    /// reachable and takes this node's reads and writes, so that a wrong bucket, endpoint or
    /// credentials stop the daemon at start. (Listing comes first: some S3-compatible servers
    /// create a missing bucket on a PUT.)
    pub async fn check(&self) -> Result<(), BucketError> {
        let prefix = Path::from(self.node_prefix.as_str());
        self.store.list_with_delimiter(Some(&prefix)).await.map_err(|e| self.failed("list", &prefix, e))?;
        let key = Path::from(format!("{}/node.json", self.node_prefix));
        let body = serde_json::json!({
            "node_id": self.node_id,
            "version": env!("CARGO_PKG_VERSION"),
            "started_at": chrono::Utc::now().to_rfc3339(),
        });
        self.store
            .put(&key, PutPayload::from(body.to_string().into_bytes()))
            .await
            .map(|_| ())
            .map_err(|e| self.failed("write", &key, e))
    }

    /// This node's manifest in the bucket; `None` when it has none yet.
    pub async fn load_manifest(&self) -> Result<Option<Manifest>, BucketError> {
        let key = self.manifest_key();
        let bytes = match self.store.get(&key).await {
            Ok(r) => r.bytes().await.map_err(|e| self.failed("read", &key, e))?,
            Err(e) => {
                let err = self.failed("read", &key, e);
                // A missing bucket is reported as not found too: only a missing object is "none yet".
                if err.kind() == FailureKind::NotFound && !err.to_string().contains("NoSuchBucket") {
                    return Ok(None);
                }
                return Err(err);
            }
        };
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|source| BucketError::CorruptManifest { object: self.object_url(&key), source })?;
        if let Some(problem) = manifest.implausible() {
            return Err(BucketError::Untrusted(format!(
                "manifest {} {problem}: refusing it",
                self.object_url(&key)
            )));
        }
        Ok(Some(manifest))
    }

    /// Replace this node's manifest in the bucket (a PUT replaces an object whole).
    pub async fn store_manifest(&self, manifest: &Manifest) -> Result<(), BucketError> {
        let key = self.manifest_key();
        let bytes = serde_json::to_vec_pretty(manifest)
            .map_err(|source| BucketError::CorruptManifest { object: self.object_url(&key), source })?;
        self.store
            .put(&key, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.failed("write", &key, e))
    }

    /// Upload the file at `path` as `key`: in one request, or in parts above 16 MiB. A failed
    /// multipart upload is aborted, so its parts hold no space in the bucket.
    pub async fn upload(&self, path: &FsPath, key: &Path) -> Result<u64, BucketError> {
        let local =
            |source| BucketError::Local { path: path.to_path_buf(), object: self.object_url(key), source };
        let mut file = tokio::fs::File::open(path).await.map_err(local)?;
        let size = file.metadata().await.map_err(local)?.len();
        if size <= MULTIPART_ABOVE {
            let mut buf = Vec::with_capacity(size as usize);
            file.read_to_end(&mut buf).await.map_err(local)?;
            let opts = PutOptions { mode: PutMode::Overwrite, ..Default::default() };
            self.store
                .put_opts(key, PutPayload::from(buf), opts)
                .await
                .map_err(|e| self.failed("upload", key, e))?;
            return Ok(size);
        }
        let upload =
            self.store.put_multipart(key).await.map_err(|e| self.failed("start uploading", key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut buf = vec![0u8; PART_BYTES];
        let sent: Result<(), BucketError> = async {
            loop {
                let n = file.read(&mut buf).await.map_err(local)?;
                if n == 0 {
                    return Ok(());
                }
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| self.failed("upload a part of", key, e))?;
                writer.write(&buf[..n]);
            }
        }
        .await;
        match sent {
            Ok(()) => {
                writer.finish().await.map_err(|e| self.failed("complete the upload of", key, e))?;
                Ok(size)
            }
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(object = %self.object_url(key), error = %abort, "failed to abort a multipart upload; the bucket's lifecycle rule for incomplete uploads removes its parts");
                }
                Err(e)
            }
        }
    }

    /// Copy `key` into the new file `to` (synced), which must come out `bytes` long, the size a
    /// manifest gives: an object of another size is refused before its body is read, and the
    /// body goes to the file as it arrives, never whole into memory.
    pub async fn download_to(&self, key: &Path, bytes: u64, to: &FsPath) -> Result<(), BucketError> {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let r = self.store.get(key).await.map_err(|e| self.failed("download", key, e))?;
        let untrusted = |size: u64| {
            BucketError::Untrusted(format!(
                "{} is {size} bytes, not the {bytes} its manifest says: left unread",
                self.object_url(key)
            ))
        };
        if r.meta.size != bytes {
            return Err(untrusted(r.meta.size));
        }
        let copy =
            |source| BucketError::Copy { path: to.to_path_buf(), object: self.object_url(key), source };
        let mut file = tokio::fs::File::create(to).await.map_err(copy)?;
        let mut body = r.into_stream();
        let mut got = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.failed("download", key, e))?;
            got += chunk.len() as u64;
            if got > bytes {
                return Err(untrusted(got));
            }
            file.write_all(&chunk).await.map_err(copy)?;
        }
        if got != bytes {
            return Err(untrusted(got));
        }
        file.sync_all().await.map_err(copy)
    }

    /// Delete `key`; deleting an object that is already gone succeeds.
    pub async fn delete(&self, key: &Path) -> Result<(), BucketError> {
        match self.store.delete(key).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed("delete", key, e)),
        }
    }
}

/// The kind of an object_store error and a cause that says what to check.
fn describe(e: &object_store::Error) -> (FailureKind, String) {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    let has = |code: &str| text.contains(code);
    if has("NoSuchBucket") {
        return (FailureKind::NotFound, format!("the bucket does not exist (NoSuchBucket): {text}"));
    }
    if ["InvalidAccessKeyId", "SignatureDoesNotMatch", "NotSignedUp", "ExpiredToken", "InvalidToken"]
        .iter()
        .any(|c| has(c))
    {
        return (
            FailureKind::Credentials,
            format!(
                "the bucket refused the credentials (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or the identity the node runs with): {text}"
            ),
        );
    }
    match e {
        object_store::Error::NotFound { .. } => (FailureKind::NotFound, format!("no such object: {text}")),
        object_store::Error::Unauthenticated { .. } => (
            FailureKind::Credentials,
            format!(
                "the bucket refused the credentials (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or the identity the node runs with): {text}"
            ),
        ),
        object_store::Error::PermissionDenied { .. } => (
            FailureKind::Refused,
            format!("the bucket refused it (a bucket policy, Object Lock retention or a legal hold): {text}"),
        ),
        _ if has("AccessDenied") || has("ObjectLocked") || has("InvalidRequest") && has("Object Lock") => (
            FailureKind::Refused,
            format!("the bucket refused it (a bucket policy, Object Lock retention or a legal hold): {text}"),
        ),
        _ => (FailureKind::Other, text),
    }
}
