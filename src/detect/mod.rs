//! Detection over the arriving events: log templates mined online ([`templates`]).
//!
//! Runs beside ingest and never re-reads stored history.

pub mod templates;
