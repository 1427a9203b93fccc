//! Detection over the arriving events: log templates mined online ([`templates`]), and the
//! built-in detectors ([`builtin`]) judging rule windows against learned [`baseline`]s.
//!
//! Runs beside ingest and never re-reads stored history.

pub mod baseline;
pub mod builtin;
pub mod templates;

#[cfg(test)]
mod tests;
