//! logwarden: a log daemon for sites that keep their logs under strict security.
//!
//! Modules in data-flow order:
//! - [`config`]: the TOML configuration, its defaults and its checks.
//! - [`tls`]: the server's TLS identity (files, or the generated development certificate).
//! - [`ingest`]: listeners, framing, decoders (RFC 5424, RFC 3164, JSON) and HTTP ingest.
//! - [`batch`]: the Arrow schema and events → RecordBatch.
//! - [`store`]: WAL, Parquet segments, manifest, retention and the DataFusion `logs` table.
//! - [`query`]: SQL over the store.
//! - [`detect`]: log template mining (and, next, baselines and anomaly detectors).
//! - [`serve`]: the admin endpoint (metrics, health) and shared HTTP plumbing.
//! - [`metrics`]: every metric, defined once.
//! - [`app`]: wiring and lifecycle; [`cli`]: the command line.

pub mod access;
pub mod alert;
pub mod app;
pub mod audit;
pub mod batch;
pub mod cli;
pub mod config;
pub mod detect;
pub mod ingest;
pub mod jsonl;
pub mod logging;
pub mod metrics;
pub mod query;
pub mod serve;
pub mod store;
pub mod stream;
pub mod systemd;
pub mod tls;
