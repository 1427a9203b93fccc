//! `[storage]` (where segments live, the WAL, flushing, retention, the bucket's local cache and
//! backlog) and `[cluster]` (this node's name among the nodes sharing a bucket).

use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use super::Problem;

/// WAL, Parquet segments and retention.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Where segments and their manifest live: unset (or a local directory) for the data
    /// directory, or `s3://BUCKET/PREFIX`. The WAL is always under `data_dir`.
    pub url: Option<String>,
    /// Durable batches are written out as a Parquet segment at least this often...
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// ...or as soon as this much Arrow data waits in memory.
    pub flush_bytes: ByteSize,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Segments whose newest event is older than this are deleted.
    #[serde(with = "humantime_serde")]
    pub retention_max_age: Option<Duration>,
    /// Oldest segments are deleted while the segments together exceed this.
    pub retention_max_bytes: Option<ByteSize>,
    /// zstd level for Parquet pages (1 fastest, 22 smallest).
    pub zstd_level: i32,
    /// With a bucket: local copies of uploaded segments kept for queries (least recently used
    /// first out). Segments not yet uploaded are kept whatever this says.
    pub cache_max_bytes: ByteSize,
    /// With a bucket: segments and WAL waiting for their upload may hold this much local disk;
    /// past it, ingest is refused (HTTP 503) or held back (stream listeners) until uploads
    /// catch up.
    pub upload_backlog_max_bytes: ByteSize,
    // Credentials are never read from the file; these names are here only so that `validate`
    // can say so instead of calling them unknown keys.
    #[serde(default)]
    access_key_id: Option<toml::Value>,
    #[serde(default)]
    secret_access_key: Option<toml::Value>,
    #[serde(default)]
    session_token: Option<toml::Value>,
    #[serde(default)]
    aws_access_key_id: Option<toml::Value>,
    #[serde(default)]
    aws_secret_access_key: Option<toml::Value>,
    #[serde(default)]
    aws_session_token: Option<toml::Value>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            url: None,
            flush_interval: Duration::from_secs(60),
            flush_bytes: ByteSize::mib(128),
            row_group_rows: 131_072,
            retention_max_age: Some(Duration::from_secs(30 * 24 * 3600)),
            retention_max_bytes: None,
            zstd_level: 3,
            cache_max_bytes: ByteSize::gib(10),
            upload_backlog_max_bytes: ByteSize::gib(16),
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            aws_access_key_id: None,
            aws_secret_access_key: None,
            aws_session_token: None,
        }
    }
}

/// Where segments and their manifest live, parsed from `storage.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUrl {
    /// A directory on this machine (`data_dir` by default).
    Local(PathBuf),
    /// An S3 or S3-compatible bucket; `prefix` has no leading or trailing `/` and may be empty.
    S3 { bucket: String, prefix: String },
}

impl std::fmt::Display for StorageUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageUrl::Local(p) => write!(f, "{}", p.display()),
            StorageUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            StorageUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

const NO_SECRETS: &str = "credentials are never read from the config file: give them the standard AWS ways \
     (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the service's environment, e.g. a systemd \
     EnvironmentFile= readable by root only; a shared credentials file; instance or pod identity)";

impl StorageConfig {
    /// `url` parsed; `data_dir` when it is unset.
    pub fn location(&self, data_dir: &std::path::Path) -> Result<StorageUrl, String> {
        match self.url.as_deref() {
            None => Ok(StorageUrl::Local(data_dir.to_path_buf())),
            Some(url) => parse_url(url),
        }
    }

    pub(super) fn validate(&self, data_dir: &std::path::Path, out: &mut Vec<Problem>) {
        match self.location(data_dir) {
            Err(reason) => out.push(Problem::new("storage.url", reason)),
            Ok(StorageUrl::S3 { .. }) if !cfg!(feature = "s3") => {
                out.push(Problem::new("storage.url", crate::store::bucket::NO_S3))
            }
            Ok(_) => {}
        }
        let secrets = [
            ("access_key_id", &self.access_key_id),
            ("secret_access_key", &self.secret_access_key),
            ("session_token", &self.session_token),
            ("aws_access_key_id", &self.aws_access_key_id),
            ("aws_secret_access_key", &self.aws_secret_access_key),
            ("aws_session_token", &self.aws_session_token),
        ];
        for (key, value) in secrets {
            if value.is_some() {
                out.push(Problem::new(format!("storage.{key}"), NO_SECRETS));
            }
        }
        if self.flush_interval.is_zero() {
            out.push(Problem::new("storage.flush_interval", "must be greater than 0"));
        }
        if self.row_group_rows < 1024 {
            out.push(Problem::new("storage.row_group_rows", "must be at least 1024"));
        }
        if !(1..=22).contains(&self.zstd_level) {
            out.push(Problem::new("storage.zstd_level", "must be between 1 and 22"));
        }
        if matches!(self.retention_max_age, Some(d) if d.is_zero()) {
            out.push(Problem::new(
                "storage.retention_max_age",
                "must be greater than 0 (omit it to keep data forever)",
            ));
        }
        if self.upload_backlog_max_bytes.as_u64() < 2 * self.flush_bytes.as_u64() {
            out.push(Problem::new(
                "storage.upload_backlog_max_bytes",
                format!(
                    "must be at least twice storage.flush_bytes ({}), or every flush would stop ingest",
                    self.flush_bytes
                ),
            ));
        }
    }
}

/// `s3://BUCKET[/PREFIX]`, `file:///DIR` or an absolute directory.
pub fn parse_url(url: &str) -> Result<StorageUrl, String> {
    if let Some(rest) = url.strip_prefix("file://") {
        return local(rest);
    }
    if url.starts_with('/') {
        return local(url);
    }
    let Some(rest) = url.strip_prefix("s3://") else {
        let scheme = url.split_once("://").map_or(url, |(s, _)| s);
        return Err(format!(
            "`{scheme}` is not a storage location logwarden knows: use s3://BUCKET/PREFIX or an absolute directory"
        ));
    };
    if rest.contains(['?', '#']) {
        return Err(format!(
            "takes no query or fragment ({NO_SECRETS}; the endpoint and region come from AWS_ENDPOINT_URL and AWS_REGION)"
        ));
    }
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.contains('@') {
        return Err(NO_SECRETS.to_owned());
    }
    check_bucket(bucket)?;
    let prefix = prefix.trim_end_matches('/');
    for part in prefix.split('/').filter(|_| !prefix.is_empty()) {
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!("prefix `{prefix}` has an empty, `.` or `..` part"));
        }
        // Characters object_store would percent-encode in a key would make the key differ
        // from the prefix written here (and from what other S3 tools show).
        if !part.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            return Err(format!(
                "prefix `{prefix}` may hold only letters, digits, `.`, `_` and `-` between its `/`"
            ));
        }
    }
    Ok(StorageUrl::S3 { bucket: bucket.to_owned(), prefix: prefix.to_owned() })
}

fn local(path: &str) -> Result<StorageUrl, String> {
    if !path.starts_with('/') {
        return Err(format!("`{path}` must be an absolute directory"));
    }
    Ok(StorageUrl::Local(PathBuf::from(path)))
}

/// S3's bucket naming rules: 3 to 63 lowercase letters, digits, `.` and `-`, starting and
/// ending with a letter or digit.
fn check_bucket(b: &str) -> Result<(), String> {
    let ok_chars = b.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !(3..=63).contains(&b.len()) || !ok_chars || !ends(b.chars().next()) || !ends(b.chars().last()) {
        return Err(format!(
            "`{b}` is not a valid bucket name (3 to 63 lowercase letters, digits, `.` and `-`, starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

/// This node among the nodes that share a bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's name: its segments and manifest live under `nodes/NODE_ID/` in the bucket.
    /// Default: the host name.
    pub node_id: Option<String>,
    /// What this node does: take in events, answer queries, or both.
    pub role: Role,
    /// How often a node reads the other nodes' manifests (and their alerts and templates)
    /// from the bucket: another node's flushed events show up in queries here at most this
    /// much later. Retention waits two of these plus the query time limit before deleting an
    /// object another node may still be reading.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { node_id: None, role: Role::Both, refresh_interval: Duration::from_secs(10) }
    }
}

/// `[cluster] role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Ingest listeners and the Flight SQL endpoint (one machine, or every node alike).
    #[default]
    Both,
    /// Ingest listeners only: events are stored in the bucket for the query nodes.
    Ingest,
    /// The Flight SQL endpoint only, over every node's segments in the bucket: no listeners
    /// for shippers, nothing written to the bucket.
    Query,
}

impl Role {
    pub fn ingests(self) -> bool {
        self != Role::Query
    }

    pub fn queries(self) -> bool {
        self != Role::Ingest
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Both => "both",
            Role::Ingest => "ingest",
            Role::Query => "query",
        }
    }
}

impl ClusterConfig {
    /// The configured `node_id`, or the host name made into one.
    pub fn node_id(&self) -> String {
        match &self.node_id {
            Some(id) => id.clone(),
            None => node_id_from_host(&host_name()),
        }
    }

    /// `declared`: the top-level keys the config file sets (listeners a query node would not open).
    /// `storage`: where segments go, if `storage.url` parses; `flight`: whether the Flight SQL
    /// endpoint is enabled.
    pub(super) fn validate(
        &self,
        storage: Option<&StorageUrl>,
        declared: &[&str],
        flight: bool,
        out: &mut Vec<Problem>,
    ) {
        if let Some(id) = &self.node_id
            && let Err(reason) = check_node_id(id)
        {
            out.push(Problem::new("cluster.node_id", reason));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.refresh_interval) {
            out.push(Problem::new("cluster.refresh_interval", "must be between 1s and 1h"));
        }
        if self.role == Role::Query && !flight {
            out.push(Problem::new(
                "flight.enabled",
                "a query node (cluster.role = \"query\") answers only over Flight SQL: enable it",
            ));
        }
        if self.role != Role::Both && matches!(storage, Some(StorageUrl::Local(_))) {
            out.push(Problem::new(
                "cluster.role",
                format!(
                    "role = \"{}\" shares segments through a bucket: set storage.url = \"s3://BUCKET/PREFIX\" (or role = \"both\" for one machine)",
                    self.role.as_str()
                ),
            ));
        }
        let refused: &[(&str, &str)] = match self.role {
            Role::Both => &[],
            Role::Ingest if flight => &[("flight", "an ingest node answers no queries: remove [flight]")],
            Role::Ingest => &[],
            Role::Query => &[
                ("stream", "a query node opens no listeners for shippers: remove [[stream]]"),
                ("http", "a query node opens no listeners for shippers: remove [[http]]"),
                ("otlp", "a query node opens no listeners for shippers: remove [[otlp]]"),
                ("relp", "a query node opens no listeners for shippers: remove [[relp]]"),
                ("rules", "rules run where events arrive, on ingest nodes: remove [[rules]] here"),
            ],
        };
        for (key, reason) in refused {
            if declared.contains(key) {
                out.push(Problem::new(
                    *key,
                    format!("{reason}, or set cluster.role = \"both\" (it is \"{}\")", self.role.as_str()),
                ));
            }
        }
    }
}

/// 1 to 63 letters, digits, `.`, `_` and `-`, starting with a letter or digit: safe in an object
/// key and a metric label.
pub fn check_node_id(id: &str) -> Result<(), String> {
    let first_ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if id.len() > 63 || !first_ok || !id.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Err(format!(
            "`{id}` is not a valid node id (1 to 63 letters, digits, `.`, `_` and `-`, starting with a letter or digit)"
        ));
    }
    Ok(())
}

fn host_name() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

/// The host name's characters that a node id allows, lowercased; `node` for an empty one.
fn node_id_from_host(host: &str) -> String {
    let id: String = host
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' })
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .take(63)
        .collect();
    if id.is_empty() { "node".into() } else { id }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_or_say_why_not() {
        assert_eq!(
            parse_url("s3://logs-prod/site-a/").unwrap(),
            StorageUrl::S3 { bucket: "logs-prod".into(), prefix: "site-a".into() }
        );
        assert_eq!(
            parse_url("s3://logs").unwrap(),
            StorageUrl::S3 { bucket: "logs".into(), prefix: "".into() }
        );
        assert_eq!(parse_url("file:///srv/lw").unwrap(), StorageUrl::Local("/srv/lw".into()));
        assert_eq!(parse_url("/srv/lw").unwrap(), StorageUrl::Local("/srv/lw".into()));
        for (bad, why) in [
            ("s3://AKIA:secret@logs/p", "credentials are never read"),
            ("s3://logs/p?access_key_id=x", "no query"),
            ("s3://Logs/p", "not a valid bucket name"),
            ("s3://lo/p", "not a valid bucket name"),
            ("s3://logs/a//b", "empty"),
            ("s3://logs/a/../b", "`..`"),
            ("s3://logs/t~x", "only letters"),
            ("s3://logs/a%20b", "only letters"),
            ("gs://logs/p", "`gs` is not a storage location"),
            ("relative/dir", "not a storage location"),
            ("file://relative", "absolute"),
        ] {
            let e = parse_url(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn node_ids_come_from_host_names() {
        assert_eq!(node_id_from_host("Log-01.example.org"), "log-01.example.org");
        assert_eq!(node_id_from_host("_weird host"), "weird-host");
        assert_eq!(node_id_from_host(""), "node");
        assert!(check_node_id(&node_id_from_host(&"x".repeat(300))).is_ok());
        assert!(check_node_id("a/b").is_err());
        assert!(check_node_id("-a").is_err());
        assert!(check_node_id("").is_err());
        assert!(check_node_id(&node_id_from_host(&host_name())).is_ok());
    }
}
