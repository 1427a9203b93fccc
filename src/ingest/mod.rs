//! Everything between a peer's socket and a finished RecordBatch: listeners and their limits,
//! framing, decoding, and each protocol shippers speak (stream syslog and JSON lines, the HTTP
//! protocols in `http`, OTLP over gRPC in `otlp`, RELP in `relp`), with the acknowledged path
//! they share (`sink`).

pub mod budget;
pub mod connection;
pub mod decode;
pub mod event;
pub mod framing;
pub mod http;
pub mod listener;
pub mod otlp;
pub mod relp;
pub mod sink;

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in ns since the epoch: the receive time stamped on events.
pub fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64)
}
