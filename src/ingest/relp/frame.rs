//! RELP frames: `TXNR SP COMMAND SP DATALEN [SP DATA] LF`, parsed from the start of a buffer,
//! and the answers a server writes.
//!
//! The parser takes what librelp's own server takes: a TXNR and a DATALEN of 1 to 9 digits, a
//! command of 1 to 32 letters, no data (and no space before the LF) when DATALEN is 0, and
//! exactly one LF after the data. It is stateless: the caller keeps the bytes of an incomplete
//! frame and calls again with more. A frame announcing more data than the limit is refused as
//! soon as its DATALEN shows it, before any of the data is buffered; so is anything that cannot
//! become a frame, before the rest of it arrives. After a refusal there is no telling where
//! the next frame starts, so the connection ends there.

use crate::ingest::framing::Reject;

/// Digits of a TXNR or a DATALEN, at most (librelp writes and reads no more).
const MAX_DIGITS: usize = 9;
/// Letters of a command, at most.
const MAX_COMMAND: usize = 32;
/// The longest header before the data: TXNR, command, DATALEN and their separators.
pub const MAX_HEADER: usize = MAX_DIGITS + 1 + MAX_COMMAND + 1 + MAX_DIGITS + 1;

/// One frame, borrowing the buffer it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub txnr: u32,
    pub command: &'a [u8],
    pub data: &'a [u8],
}

/// Why the bytes at the start of a buffer are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub reason: Reject,
    /// What was wrong, for the log.
    pub what: &'static str,
}

impl Refused {
    fn malformed(what: &'static str) -> Refused {
        Refused { reason: Reject::Malformed, what }
    }
}

/// The frame at the start of `buf` and the bytes it takes, `Ok(None)` while more bytes are
/// needed to tell, or why it is refused. `max_data` bounds DATALEN.
pub fn parse(buf: &[u8], max_data: usize) -> Result<Option<(Frame<'_>, usize)>, Refused> {
    let Some((txnr, mut pos)) = number(buf, 0, "the TXNR is not a number of 1 to 9 digits")? else {
        return Ok(None);
    };
    let command_start = pos;
    loop {
        match buf.get(pos) {
            None if pos - command_start <= MAX_COMMAND => return Ok(None),
            Some(b) if b.is_ascii_alphabetic() && pos - command_start < MAX_COMMAND => pos += 1,
            Some(b' ') if pos > command_start => break,
            _ => return Err(Refused::malformed("the command is not 1 to 32 letters")),
        }
    }
    let command = &buf[command_start..pos];
    pos += 1;
    let len_start = pos;
    let mut len = 0usize;
    loop {
        match buf.get(pos) {
            Some(b) if b.is_ascii_digit() && pos - len_start < MAX_DIGITS => {
                len = len * 10 + usize::from(b - b'0');
                // Refused as soon as the digits so far are too many, not when the rest arrives.
                if len > max_data {
                    return Err(Refused {
                        reason: Reject::Oversize,
                        what: "DATALEN is over max_frame_bytes",
                    });
                }
                pos += 1;
            }
            None if pos - len_start <= MAX_DIGITS => return Ok(None),
            Some(b'\n') if pos > len_start && len == 0 => {
                let frame = Frame { txnr, command, data: &[] };
                return Ok(Some((frame, pos + 1)));
            }
            Some(b' ') if pos > len_start && len > 0 => break,
            _ => {
                return Err(Refused::malformed(
                    "DATALEN is not a number of 1 to 9 digits followed by its data",
                ));
            }
        }
    }
    let data_start = pos + 1;
    let end = data_start + len;
    match buf.get(end) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((Frame { txnr, command, data: &buf[data_start..end] }, end + 1))),
        Some(_) => Err(Refused::malformed("no LF after DATALEN bytes of data")),
    }
}

/// The digits at `buf[start..]` and the position after the space ending them.
fn number(buf: &[u8], start: usize, what: &'static str) -> Result<Option<(u32, usize)>, Refused> {
    let mut n = 0u32;
    let mut pos = start;
    loop {
        match buf.get(pos) {
            Some(b) if b.is_ascii_digit() && pos - start < MAX_DIGITS => {
                n = n * 10 + u32::from(b - b'0');
                pos += 1;
            }
            None if pos - start <= MAX_DIGITS => return Ok(None),
            Some(b' ') if pos > start => return Ok(Some((n, pos + 1))),
            _ => return Err(Refused::malformed(what)),
        }
    }
}

/// `TXNR rsp LEN DATA LF`, appended to `out`.
pub fn write_rsp(out: &mut Vec<u8>, txnr: u32, data: &[u8]) {
    use std::io::Write;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{txnr} rsp {}", data.len());
    if !data.is_empty() {
        out.push(b' ');
        out.extend_from_slice(data);
    }
    out.push(b'\n');
}

/// The hint a server sends before it closes a session (TXNR 0: it expects no answer).
pub const SERVERCLOSE: &[u8] = b"0 serverclose 0\n";

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 64;

    fn one(input: &[u8]) -> Result<Option<(Frame<'_>, usize)>, Refused> {
        parse(input, MAX)
    }

    fn frame<'a>(txnr: u32, command: &'a str, data: &'a str) -> Frame<'a> {
        Frame { txnr, command: command.as_bytes(), data: data.as_bytes() }
    }

    fn reason(input: &[u8]) -> Reject {
        match one(input) {
            Err(r) => r.reason,
            other => panic!("{:?} was not refused: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    #[test]
    fn parses_librelps_open_syslog_and_close() {
        let open = b"1 open 86 relp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog\n";
        let (f, used) = parse(open, 1024).unwrap().unwrap();
        assert_eq!(used, open.len());
        assert_eq!((f.txnr, f.command), (1, &b"open"[..]));
        assert!(f.data.starts_with(b"relp_version=0\n") && f.data.ends_with(b"commands=syslog"));
        assert_eq!(one(b"2 syslog 5 <13>x\n"), Ok(Some((frame(2, "syslog", "<13>x"), 17))));
        assert_eq!(one(b"3 close 0\n"), Ok(Some((frame(3, "close", ""), 10))));
    }

    #[test]
    fn data_may_hold_any_byte_including_lf() {
        let input = b"7 syslog 4 a\nb\xff\n";
        assert_eq!(one(input), Ok(Some((Frame { txnr: 7, command: b"syslog", data: b"a\nb\xff" }, 16))));
    }

    #[test]
    fn several_frames_in_one_buffer_come_one_at_a_time() {
        let input = b"1 syslog 1 a\n2 syslog 2 bc\n3 close 0\n";
        let mut pos = 0;
        let mut got = Vec::new();
        while let Some((f, used)) = one(&input[pos..]).unwrap() {
            got.push((f.txnr, String::from_utf8_lossy(f.data).into_owned()));
            pos += used;
        }
        assert_eq!(pos, input.len());
        assert_eq!(got, vec![(1, "a".into()), (2, "bc".into()), (3, "".into())]);
    }

    #[test]
    fn every_prefix_of_a_frame_asks_for_more() {
        let input = b"123456789 syslog 12 hello world!\n";
        for cut in 0..input.len() {
            assert_eq!(one(&input[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(one(input).unwrap().unwrap().1, input.len());
        let close = b"4 close 0\n";
        for cut in 0..close.len() {
            assert_eq!(one(&close[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn a_frame_split_across_reads_is_whole_once_the_rest_arrives() {
        let input = b"5 syslog 11 hello there\n6 syslog 1 x\n";
        for split in 1..input.len() {
            let mut buf = input[..split].to_vec();
            let mut got = Vec::new();
            let mut pos = 0;
            while let Some((f, used)) = one(&buf[pos..]).unwrap() {
                got.push(f.txnr);
                pos += used;
            }
            buf.drain(..pos);
            buf.extend_from_slice(&input[split..]);
            pos = 0;
            while let Some((f, used)) = one(&buf[pos..]).unwrap() {
                got.push(f.txnr);
                pos += used;
            }
            assert_eq!((got, pos), (vec![5, 6], buf.len()), "split at {split}");
        }
    }

    #[test]
    fn oversize_is_refused_from_the_digits_alone() {
        assert_eq!(one(b"1 syslog 64 "), Ok(None), "exactly the limit is taken");
        assert_eq!(reason(b"1 syslog 65"), Reject::Oversize);
        // The data never needs to arrive: six digits already exceed 64.
        assert_eq!(reason(b"1 syslog 999999"), Reject::Oversize);
        assert_eq!(reason(b"1 open 100 "), Reject::Oversize);
        // A generous limit still bounds DATALEN at nine digits.
        assert_eq!(parse(b"1 syslog 1234567890 ", usize::MAX).map_err(|r| r.reason), Err(Reject::Malformed));
    }

    #[test]
    fn malformed_headers_are_refused_before_the_rest_arrives() {
        for bad in [
            &b"open 1 0\n"[..],                         // no TXNR
            b"GET / HTTP/1.1\r\n",                      // not RELP at all
            b"\x16\x03\x01\x00",                        // a TLS ClientHello on a plain listener
            b"1234567890 syslog 1 x\n",                 // ten-digit TXNR
            b"-1 syslog 1 x\n",                         // sign
            b" 1 syslog 1 x\n",                         // leading space
            b"1  syslog 1 x\n",                         // empty command
            b"1 sys-log 1 x\n",                         // not a letter
            b"1 syslog2 1 x\n",                         // digit in the command
            b"1 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 0\n", // 33 letters
            b"1 syslog x\n",                            // DATALEN not a number
            b"1 syslog  1 x\n",                         // empty DATALEN
            b"1 syslog 0 \n",                           // a space with no data
            b"1 syslog 3\nabc\n",                       // data without its space
            b"1 close 0x",                              // no LF after DATALEN 0
            b"1 syslog 3 abcd\n",                       // data longer than announced: no LF after it
            b"1 syslog 3 ab\nX", // shorter: the LF is data, the byte after it is not LF
        ] {
            assert_eq!(reason(bad), Reject::Malformed, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(one(b"1 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 0\n").unwrap().unwrap().0.command.len(), 32);
    }

    #[test]
    fn txnrs_are_taken_as_written() {
        assert_eq!(one(b"999999999 syslog 1 x\n").unwrap().unwrap().0.txnr, 999_999_999);
        assert_eq!(one(b"0 syslog 1 x\n").unwrap().unwrap().0.txnr, 0);
        assert_eq!(one(b"007 syslog 1 x\n").unwrap().unwrap().0.txnr, 7);
    }

    #[test]
    fn answers_are_librelps() {
        let mut out = Vec::new();
        write_rsp(&mut out, 42, b"200 OK");
        write_rsp(&mut out, 43, b"");
        assert_eq!(out, b"42 rsp 6 200 OK\n43 rsp 0\n");
        assert_eq!(one(SERVERCLOSE).unwrap().unwrap().0, frame(0, "serverclose", ""));
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        let mut seed = 0x9E3779B97F4A7C15u64;
        for _ in 0..5000 {
            let mut buf = Vec::new();
            for _ in 0..48 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                buf.push(b"0123456789 \nsyslogc\xff"[(seed % 20) as usize]);
            }
            let mut pos = 0;
            while let Ok(Some((_, used))) = parse(&buf[pos..], 16) {
                assert!(used > 0);
                pos += used;
            }
        }
    }
}
