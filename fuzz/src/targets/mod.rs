//! The fuzz targets: each takes one input and panics when an invariant of the code under test
//! does not hold (a panic is a crash to afl-fuzz).

pub mod config;
pub mod decode;
pub mod framing;
pub mod handle;
pub mod http_body;
pub mod relp_frame;

pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    /// Inputs per process before afl-fuzz starts a fresh one: fewer where a target builds up
    /// state (the template miner, DataFusion sessions).
    pub iterations: u32,
    /// afl-fuzz's per-input time limit, in ms: generous, since a hang must be a real one even
    /// on a loaded machine.
    pub timeout_ms: u32,
}

pub const TARGETS: &[Target] = &[
    Target { name: "framing", run: framing::run, iterations: 100_000, timeout_ms: 1000 },
    Target { name: "decode", run: decode::run, iterations: 20_000, timeout_ms: 1000 },
    Target { name: "http_body", run: http_body::run, iterations: 100_000, timeout_ms: 2000 },
    Target { name: "handle", run: handle::run, iterations: 100_000, timeout_ms: 1000 },
    Target { name: "config", run: config::run, iterations: 1000, timeout_ms: 5000 },
    Target { name: "relp_frame", run: relp_frame::run, iterations: 100_000, timeout_ms: 1000 },
];

pub fn find(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
