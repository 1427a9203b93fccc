//! Integration tests: the real `logwarden` binary on loopback, driven by real clients (rustls,
//! hyper, rsyslog, promtool, arrow-flight's Flight SQL client).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod adbc;
mod alerting;
mod amplification;
mod authz;
mod ballista;
mod bucket;
mod client;
mod config;
mod crash;
mod daemon;
mod deploy;
mod disk_full;
mod elastic;
mod fips;
mod flight;
mod hec;
mod ingest;
mod loki;
mod malformed;
mod metrics;
mod mtls;
mod otlp;
mod pkcs11;
mod pki;
mod reload;
mod relp;
mod revocation;
mod rsyslog;
mod seal;
mod syslog_ng;
mod systemd;
mod templates;
mod timeouts;
