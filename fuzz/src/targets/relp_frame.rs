//! The RELP frame parser (`ingest::relp::frame::parse`), which reads every byte a RELP client
//! sends before anything else looks at it.
//!
//! Input: byte 0 picks the DATALEN limit (0..=255, or 64 KiB for 255), byte 1 where the buffer
//! is cut, the rest is what the client sent. Invariants:
//! - a frame parsed takes at least its header and no more than the buffer, and its data is
//!   exactly DATALEN bytes of the buffer, followed by the LF it consumed;
//! - the parser is stateless over a growing buffer: a prefix of the bytes never yields a
//!   different frame than the whole, and once a prefix is refused the whole is refused for the
//!   same reason (a connection reading in pieces sees what one reading it whole sees);
//! - a frame written back in canonical form parses to the same frame;
//! - frames are taken one after another until the buffer is used up, needs more, or is refused.

use logwarden::ingest::relp::frame::{Frame, MAX_HEADER, parse, write_rsp};

pub fn run(data: &[u8]) {
    let [limit, cut, buf @ ..] = data else { return };
    let max = if *limit == 255 { 64 << 10 } else { usize::from(*limit) };
    let whole = parse(buf, max);
    if let Ok(Some((f, used))) = whole {
        assert!(used <= buf.len(), "took {used} of {} bytes", buf.len());
        assert!(f.data.len() <= max, "{} bytes of data past the limit {max}", f.data.len());
        assert_eq!(buf[used - 1], b'\n', "a frame not ended by LF");
        if !f.data.is_empty() {
            assert_eq!(&buf[used - 1 - f.data.len()..used - 1], f.data, "data not where DATALEN says");
        }
        assert_canonical(&f);
    }
    // One cut of the buffer, and the frame's own prefixes when it is short.
    let at = usize::from(*cut) * buf.len() / 256;
    check_prefix(&buf[..at], buf, max);
    if buf.len() <= 2 * MAX_HEADER {
        for at in 0..buf.len() {
            check_prefix(&buf[..at], buf, max);
        }
    }
    // A stream of frames: each parse moves on, none loops.
    let mut rest = buf;
    while let Ok(Some((_, used))) = parse(rest, max) {
        assert!(used > 0, "a frame of 0 bytes");
        rest = &rest[used..];
    }
}

fn check_prefix(prefix: &[u8], whole: &[u8], max: usize) {
    match (parse(prefix, max), parse(whole, max)) {
        (Ok(None), _) => {}
        (Ok(Some(a)), Ok(Some(b))) => assert_eq!(a, b, "a prefix parsed to another frame"),
        (Ok(Some(a)), other) => panic!("a prefix parsed to {a:?}, the whole to {other:?}"),
        (Err(a), Err(b)) => assert_eq!(a, b, "a prefix refused for another reason"),
        (Err(a), other) => panic!("a prefix refused ({}), the whole taken: {other:?}", a.what),
    }
}

/// `f` written as a client writes it parses whole to the same frame.
fn assert_canonical(f: &Frame<'_>) {
    let mut out = Vec::new();
    if f.command == b"rsp" {
        write_rsp(&mut out, f.txnr, f.data);
    } else {
        out.extend_from_slice(format!("{} ", f.txnr).as_bytes());
        out.extend_from_slice(f.command);
        out.extend_from_slice(format!(" {}", f.data.len()).as_bytes());
        if !f.data.is_empty() {
            out.push(b' ');
            out.extend_from_slice(f.data);
        }
        out.push(b'\n');
    }
    match parse(&out, usize::MAX) {
        Ok(Some((g, used))) if used == out.len() => {
            assert_eq!(&g, f, "the canonical form parses to another frame")
        }
        other => panic!("the canonical form of {f:?} does not parse whole: {other:?}"),
    }
}
