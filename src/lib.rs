//! logwarden: a log daemon for sites that keep their logs under strict security.
//!
//! Modules in data-flow order:
//! - [`config`]: the TOML configuration, its defaults, its checks and warnings.
//! - [`tls`]: the server's TLS identity (files, a PKCS#11 token, or the generated development
//!   certificate), per-listener client-certificate checks, certificate → principal, and the
//!   revalidation of certificates in use when trust is reloaded.
//! - [`access`]: the `[access]` rules: who may send to which listener, who may read what.
//! - [`ingest`]: the shared accept loop, stream connections, framing, decoders (RFC 5424,
//!   RFC 3164, JSON) and HTTP ingest.
//! - [`batch`]: the Arrow schema and events → RecordBatch.
//! - [`store`]: WAL, Parquet segments, manifest, retention and the DataFusion `logs` table.
//! - [`stream`]: continuous SQL rules over arriving batches, windowed by event time.
//! - [`detect`]: log template mining, baselines and the built-in anomaly detectors.
//! - [`alert`]: alert state, `rule_results`, notifications to Alertmanager and webhooks.
//! - [`query`]: SQL over the store and the side tables, a principal's grant as its catalog.
//! - [`serve`]: Flight SQL, the admin endpoint (metrics, health) and shared HTTP plumbing.
//! - [`audit`]: the audit trail of connections and queries, and its table; [`jsonl`]: the
//!   append-only day files (audit, `rule_results`) that skip and count a damaged line.
//! - [`seal`]: the hash chain over stored objects, signed checkpoints, `logwarden verify`;
//!   [`crypto`]: hashes, HMAC and random bytes from the build's one crypto module.
//! - [`metrics`]: every metric, defined once; [`logging`]: stderr and the journal.
//! - [`app`]: wiring, lifecycle, the supervisor and reloads; [`systemd`]: sd_notify and socket
//!   activation; [`cli`]: the command line.

pub mod access;
pub mod alert;
pub mod app;
pub mod audit;
pub mod batch;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod detect;
pub mod ingest;
pub mod jsonl;
pub mod logging;
pub mod metrics;
pub mod query;
pub mod seal;
pub mod serve;
pub mod store;
pub mod stream;
pub mod systemd;
pub mod tls;
