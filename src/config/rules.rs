//! `[[rules]]` (continuous SQL over the arriving events) and `[alerting]` (where alerts go).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// One continuous SQL rule. Every key has a default so that the loader can drop a bad key and
/// go on; `validate` then reports an empty `name` or `sql`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConfig {
    /// Names the alerts (`alertname`), the rule's rows in `rule_results`, its metrics.
    pub name: String,
    /// The window's length; events are assigned to windows by their own `timestamp`.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How often a window closes; unset means `window` (tumbling windows). Shorter gives
    /// hopping windows, and `window` must then be a whole multiple of it.
    #[serde(with = "humantime_serde")]
    pub every: Option<Duration>,
    /// A query over the table `events` (the `logs` columns). Its output rows are the rule's
    /// results for a window; with an aggregation they are computed incrementally.
    pub sql: String,
    /// A SQL condition over the output columns; rows that meet it are alerts. Unset: every
    /// output row is an alert.
    pub alert_when: Option<String>,
    pub severity: String,
    /// Added to each alert's labels (the output's text columns are labels too).
    pub labels: BTreeMap<String, String>,
}

impl Default for RuleConfig {
    fn default() -> Self {
        RuleConfig {
            name: String::new(),
            window: Duration::from_secs(60),
            every: None,
            sql: String::new(),
            alert_when: None,
            severity: "warning".into(),
            labels: BTreeMap::new(),
        }
    }
}

/// How alerts are kept and delivered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// Firing alerts are posted to Alertmanager again this often (it forgets an alert that is
    /// not re-sent); each post says the alert ends 4 intervals later unless renewed.
    #[serde(with = "humantime_serde")]
    pub resend_interval: Duration,
    /// Webhooks hear of a still-firing alert again after this long.
    #[serde(with = "humantime_serde")]
    pub repeat_interval: Duration,
    /// Labels whose values group alerts into one webhook notification.
    pub group_by: Vec<String>,
    /// Notifications waiting for a receiver, per receiver, on disk; the oldest are dropped
    /// (and counted) beyond it.
    pub queue_max: usize,
    /// Longest wait between two delivery attempts (backoff doubles from 1 s up to it).
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// One HTTP request's deadline.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub alertmanagers: Vec<ReceiverConfig>,
    pub webhooks: Vec<ReceiverConfig>,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            resend_interval: Duration::from_secs(60),
            repeat_interval: Duration::from_secs(4 * 3600),
            group_by: vec!["alertname".into()],
            queue_max: 10_000,
            max_backoff: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
            alertmanagers: Vec::new(),
            webhooks: Vec::new(),
        }
    }
}

/// An Alertmanager (`url` is its base, `http://host:9093`) or a webhook (`url` is posted to).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiverConfig {
    /// Names the receiver's queue directory and its metrics; defaults to the URL's host:port.
    pub name: Option<String>,
    pub url: String,
    /// CA bundle (PEM) that verifies an `https` receiver; required for `https`.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for receivers that require one.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Webhooks: a file holding the HMAC-SHA256 key; the body's signature is sent as
    /// `X-Logwarden-Signature: sha256=<hex>`.
    pub secret_file: Option<PathBuf>,
}
