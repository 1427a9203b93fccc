//! The HTTP ingest body path (`ingest::http::{inflate, decode_lines}`), what `POST /v1/logs`
//! does between reading the body and building the batch.
//!
//! Input: byte 0 picks where a gzip stream is cut, byte 1 the body limit (8..=2040 bytes, or
//! 1 MiB for 0), the rest is the body. Invariants:
//! - the body gzip-compressed inflates back to itself when it fits the limit, and is refused as
//!   too large when it does not; a cut or damaged gzip stream is refused, never taken in part;
//! - the input itself taken as gzip never yields more than the limit;
//! - a body is accepted exactly when every non-blank line is a JSON object, with one JSON event
//!   per such line, in order; otherwise the refusal names the first other line, and says why.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use logwarden::ingest::decode::decode;
use logwarden::ingest::event::Format;
use logwarden::ingest::http::{BadLine, InflateError, decode_lines, inflate};

const NOW: i64 = 1_696_982_400_000_000_000;

pub fn run(data: &[u8]) {
    let [cut, limit, body @ ..] = data else { return };
    let limit = if *limit == 0 { 1 << 20 } else { usize::from(*limit) * 8 };
    check_gzip(body, limit, *cut);
    if let Ok(out) = inflate(body, limit) {
        assert!(out.len() <= limit, "inflated {} bytes past the limit {limit}", out.len());
    }
    check_lines(body);
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(body).expect("gzip into memory");
    enc.finish().expect("gzip into memory")
}

fn check_gzip(body: &[u8], limit: usize, cut: u8) {
    let gz = gzip(body);
    match inflate(&gz, limit) {
        Ok(out) => assert!(out == body, "gzip round trip changed the body"),
        Err(InflateError::TooLarge) => {
            assert!(body.len() > limit, "a body within the limit refused as too large")
        }
        Err(e) => panic!("a well-formed gzip body refused: {e}"),
    }
    if body.len() > limit {
        assert!(matches!(inflate(&gz, limit), Err(InflateError::TooLarge)), "a body over the limit accepted");
    }
    // An empty body is no gzip stream at all; any other prefix must be refused.
    let at = (usize::from(cut) * gz.len() / 256).max(1);
    match inflate(&gz[..at], limit) {
        Ok(_) => panic!("a gzip body cut at {at} of {} bytes accepted", gz.len()),
        Err(InflateError::TooLarge | InflateError::Gzip(_)) => {}
    }
    // The trailer's CRC-32 and length: any change must be noticed.
    let mut damaged = gz.clone();
    let at = damaged.len() - 1 - usize::from(cut % 8);
    damaged[at] ^= 1;
    match inflate(&damaged, limit) {
        Ok(_) => panic!("a gzip body with a damaged trailer (byte {at}) accepted"),
        Err(InflateError::TooLarge | InflateError::Gzip(_)) => {}
    }
}

fn check_lines(body: &[u8]) {
    let mut events = 0usize;
    let result = decode_lines(body, NOW, |ev| {
        assert_eq!(ev.format, Format::Json, "a line that is not JSON passed on");
        events += 1;
    });
    // The same thing line by line: which lines count, and which is the first bad one.
    let mut json_lines = 0usize;
    let mut first_bad = None;
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if decode(line, NOW).format == Format::Json {
            json_lines += 1;
        } else {
            first_bad = Some(i + 1);
            break;
        }
    }
    match (result, first_bad) {
        (Ok(()), None) => assert_eq!(events, json_lines, "events passed on do not match the JSON lines"),
        (Err(BadLine { line, reason }), Some(bad)) => {
            assert_eq!(line, bad, "the refusal names another line than the first bad one");
            assert!(!reason.is_empty(), "a refusal without a reason");
            assert_eq!(events, json_lines, "events passed on before the bad line do not match");
        }
        (r, bad) => panic!("body refused or accepted wrongly: {r:?}, first bad line {bad:?}"),
    }
}
