//! Frame decoding: picks the decoder for one frame (RFC 5424, RFC 3164 or JSON) and owns the
//! helpers they share (PRI, RFC 3339 timestamps, civil-date arithmetic).
//!
//! Every decoder is total: whatever it cannot make sense of comes back as [`Event::raw`] with a
//! short reason, so a hostile or broken sender can never take the ingest path down.

pub mod json;
pub mod rfc3164;
pub mod rfc5424;

use std::borrow::Cow;

use crate::ingest::event::{Event, Format};

pub use json::decode_json;
pub use rfc3164::decode_rfc3164;
pub use rfc5424::{decode_rfc5424, decode_rfc5424_without_pri};

const NS_PER_SEC: i64 = 1_000_000_000;

/// Decodes one frame (one message, without its framing) received at `received_at_ns`
/// (nanoseconds since the Unix epoch; RFC 3164 needs it to guess the year).
///
/// Dispatch: a first non-blank byte `{` means JSON; `<PRI>` followed by version digits and a
/// space means RFC 5424 (blanks before the `<` are dropped); version digits, a space and a
/// whole RFC 5424 header mean RFC 5424 without its PRI; anything else is RFC 3164, which
/// accepts any text.
pub fn decode(frame: &[u8], received_at_ns: i64) -> Event<'_> {
    // Senders that frame with CRLF leave the CR behind once the transport splits on LF.
    let frame = frame.strip_suffix(b"\r").unwrap_or(frame);
    match std::str::from_utf8(frame) {
        Ok(line) => decode_str(line, received_at_ns),
        Err(_) => {
            // The event cannot borrow from the repaired copy, so it is detached from it.
            let repaired = String::from_utf8_lossy(frame);
            let mut event = Event::into_owned(decode_str(&repaired, received_at_ns));
            if event.decode_error.is_none() {
                event.decode_error = Some(Cow::Borrowed("invalid UTF-8 replaced"));
            }
            event
        }
    }
}

fn decode_str(line: &str, received_at_ns: i64) -> Event<'_> {
    let b = line.as_bytes();
    let first = b.iter().position(|c| !c.is_ascii_whitespace());
    if first.is_some_and(|i| b.get(i) == Some(&b'{')) {
        return decode_json(line);
    }
    // Blanks before a PRI are framing debris (a sender's newline and indentation), not text;
    // a frame that does not decode even so is kept whole.
    match first {
        Some(i) if i > 0 && b.get(i) == Some(&b'<') => {
            let event = decode_after_blanks(line.get(i..).unwrap_or(line), received_at_ns);
            match (event.format, event.decode_error) {
                (Format::Raw, Some(reason)) => Event::raw(Cow::Borrowed(line), reason),
                (_, decode_error) => Event { decode_error, ..event },
            }
        }
        _ => decode_after_blanks(line, received_at_ns),
    }
}

/// A line that starts where its content does: RFC 5424 (with or without PRI), RFC 3164, or raw.
fn decode_after_blanks(line: &str, received_at_ns: i64) -> Event<'_> {
    let b = line.as_bytes();
    if looks_like_rfc5424(b) {
        decode_rfc5424(line)
    } else if has_binary(b) {
        // RFC 3164 takes any text, but not binary: that is a wrong port or a broken sender.
        let at = b.iter().position(|&c| is_binary(c)).unwrap_or(0);
        Event::raw(Cow::Borrowed(line), format!("binary data: control byte 0x{:02x} at offset {at}", b[at]))
    } else if let Some(event) = starts_with_version(b).then(|| decode_rfc5424_without_pri(line)).flatten() {
        event
    } else {
        decode_rfc3164(line, received_at_ns)
    }
}

/// 1-3 digits and a space: what an RFC 5424 message without its PRI starts with.
fn starts_with_version(b: &[u8]) -> bool {
    let n = count_digits(b);
    (1..=3).contains(&n) && b.get(n) == Some(&b' ')
}

/// Whether any byte is binary; a fold without early exit, which the compiler vectorises.
fn has_binary(b: &[u8]) -> bool {
    b.iter().fold(false, |acc, &c| acc | is_binary(c))
}

/// A control byte that no text log line carries (TAB, LF and CR do occur in messages).
fn is_binary(c: u8) -> bool {
    (c < 0x20 && !matches!(c, b'\t' | b'\n' | b'\r')) || c == 0x7f
}

/// `<` 1-3 digits `>` 1-3 digits SP: the only shape RFC 3164 senders never produce, since
/// their PRI is followed by a month name, an ISO date (`2023-`) or the message.
fn looks_like_rfc5424(b: &[u8]) -> bool {
    let Some(rest) = b.strip_prefix(b"<") else {
        return false;
    };
    let pri_len = count_digits(rest);
    if !(1..=3).contains(&pri_len) || rest.get(pri_len) != Some(&b'>') {
        return false;
    }
    let rest = rest.get(pri_len + 1..).unwrap_or_default();
    let ver_len = count_digits(rest);
    (1..=3).contains(&ver_len) && rest.get(ver_len) == Some(&b' ')
}

fn count_digits(b: &[u8]) -> usize {
    b.iter().take_while(|c| c.is_ascii_digit()).count()
}

/// Parses `<PRI>` at the start of `b`: returns the value (0..=191) and the bytes consumed.
pub(crate) fn parse_pri(b: &[u8]) -> Option<(u8, usize)> {
    let rest = b.strip_prefix(b"<")?;
    let len = count_digits(rest);
    if !(1..=3).contains(&len) || rest.get(len) != Some(&b'>') {
        return None;
    }
    let value = rest.get(..len)?.iter().fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    let value = u8::try_from(value).ok().filter(|v| *v <= 191)?;
    Some((value, len + 2))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm; exact, no
/// tables, valid far beyond the i64-nanosecond range).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The year of a day count from [`days_from_civil`].
pub(crate) fn year_from_days(z: i64) -> i64 {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // March-based years: January and February belong to the next civil year.
    yoe + era * 400 + i64::from(mp >= 10)
}

pub(crate) fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

/// Nanoseconds since the epoch of a UTC civil time; `None` for an invalid date or a time
/// outside the i64 range (years before 1677 or after 2262).
pub(crate) fn civil_to_ns(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32, frac: i64) -> Option<i64> {
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // A leap second (ss = 60) lands on the first second of the next minute.
    let secs = days_from_civil(y, mo, d) * 86_400 + i64::from(h * 3600 + mi * 60 + s);
    secs.checked_mul(NS_PER_SEC)?.checked_add(frac)
}

pub(crate) fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let s = b.get(at..at + n)?;
    s.iter().try_fold(0u32, |acc, c| c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0')))
}

/// Reads `.digits` at `at`, returning nanoseconds and the bytes consumed. Digits past the
/// ninth are refused when `max_digits` is 9 and silently dropped when it is larger.
pub(crate) fn fraction(b: &[u8], at: usize, max_digits: usize) -> Option<(i64, usize)> {
    if b.get(at) != Some(&b'.') {
        return Some((0, 0));
    }
    let tail = b.get(at + 1..).unwrap_or_default();
    let n = count_digits(tail);
    if n == 0 || n > max_digits {
        return None;
    }
    let mut ns = 0i64;
    for i in 0..9 {
        let d = tail.get(i).filter(|_| i < n).map_or(0, |c| i64::from(c - b'0'));
        ns = ns * 10 + d;
    }
    Some((ns, n + 1))
}

/// A timestamp read by [`parse_rfc3339_prefix`].
pub(crate) struct Rfc3339 {
    pub ns: i64,
    /// Bytes consumed.
    pub len: usize,
    /// Whether a `Z` or `±hh:mm` offset was present (without one the time is taken as UTC).
    pub has_offset: bool,
}

/// Reads an RFC 3339 timestamp at the start of `b`: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±hh:mm)`,
/// with `T`/`t`, or with a space too when `allow_space`, and up to 9 fraction digits. The
/// offset may be missing; callers that need it check `has_offset`.
pub(crate) fn parse_rfc3339_prefix(b: &[u8], allow_space: bool) -> Option<Rfc3339> {
    let y = digits(b, 0, 4)?;
    let mo = digits(b, 5, 2)?;
    let d = digits(b, 8, 2)?;
    let sep = *b.get(10)?;
    let sep_ok = sep == b'T' || sep == b't' || (allow_space && sep == b' ');
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || !sep_ok {
        return None;
    }
    let h = digits(b, 11, 2)?;
    let mi = digits(b, 14, 2)?;
    let s = digits(b, 17, 2)?;
    if b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
        return None;
    }
    let (frac, frac_len) = fraction(b, 19, 9)?;
    let mut len = 19 + frac_len;
    let offset_secs = match b.get(len) {
        Some(b'Z' | b'z') => {
            len += 1;
            Some(0)
        }
        Some(sign @ (b'+' | b'-')) => {
            let oh = digits(b, len + 1, 2)?;
            let om = digits(b, len + 4, 2)?;
            if b.get(len + 3) != Some(&b':') || oh > 23 || om > 59 {
                return None;
            }
            len += 6;
            let secs = i64::from(oh * 3600 + om * 60);
            Some(if *sign == b'+' { secs } else { -secs })
        }
        _ => None,
    };
    let ns = civil_to_ns(i64::from(y), mo, d, h, mi, s, frac)?;
    let ns = ns.checked_sub(offset_secs.unwrap_or(0).checked_mul(NS_PER_SEC)?)?;
    Some(Rfc3339 { ns, len, has_offset: offset_secs.is_some() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::event::Format;

    const RECV: i64 = 1_697_068_800_000_000_000;

    #[test]
    fn dispatch() {
        let d = |s: &str| decode(s.as_bytes(), RECV).format;
        assert_eq!(d("<13>1 - - - - - - m"), Format::Rfc5424);
        assert_eq!(d("<13>1 - - - - - - m\r"), Format::Rfc5424);
        assert_eq!(d("<13>Oct 11 22:14:15 h a: m"), Format::Rfc3164);
        assert_eq!(d("<13>2023-10-11T22:14:15Z h a: m"), Format::Rfc3164);
        assert_eq!(d("hello"), Format::Rfc3164);
        assert_eq!(d(""), Format::Rfc3164);
        assert_eq!(d("  {\"msg\":\"x\"}"), Format::Json);
        assert_eq!(d("{not json"), Format::Raw);
        assert_eq!(d("<13>0 - - - - - -"), Format::Raw);
        assert_eq!(d("<13>2 - - - - - -"), Format::Rfc5424);
        assert_eq!(d("<999>1 - - - - - -"), Format::Raw);
        assert_eq!(d("\0\x01\x02 binary"), Format::Raw);
        assert_eq!(d("multi\tline\r\ntext"), Format::Rfc3164);
    }

    #[test]
    fn rfc5424_without_pri_from_loose_senders() {
        let e = decode(
            b"1 2020-05-22T14:59:09.250-03:00 OX-MX204 OX-CONTEUDO:rpd 6589 - - bgp_listen_accept: x",
            RECV,
        );
        assert_eq!((e.format, e.severity, e.facility), (Format::Rfc5424, None, None));
        assert_eq!((e.host.as_deref(), e.app.as_deref()), (Some("OX-MX204"), Some("OX-CONTEUDO:rpd")));
        assert_eq!(e.message, "bgp_listen_accept: x");
        // Text that only starts like it stays RFC 3164 text.
        let e = decode(b"1 2020-05-22T14:59:09Z was a good day", RECV);
        assert_eq!(
            (e.format, e.message.as_ref()),
            (Format::Rfc3164, "1 2020-05-22T14:59:09Z was a good day")
        );
        assert_eq!(decode(b"2 apples and 3 pears", RECV).format, Format::Rfc3164);
    }

    #[test]
    fn blanks_before_a_pri_are_skipped() {
        let e = decode(b"\n   <13>1 2019-02-13T19:48:34+00:00 74794bfb6795 root 8449 - [meta sequenceId=\"1\"] i am foobar", RECV);
        assert_eq!(
            (e.format, e.host.as_deref(), e.message.as_ref()),
            (Format::Rfc5424, Some("74794bfb6795"), "i am foobar")
        );
        let e = decode(b"  <13>Oct 11 22:14:15 h a: m", RECV);
        assert_eq!(
            (e.format, e.host.as_deref(), e.app.as_deref(), e.message.as_ref()),
            (Format::Rfc3164, Some("h"), Some("a"), "m")
        );
        // Blanks before text that is no PRI are part of the message.
        assert_eq!(decode(b"  indented text", RECV).message, "  indented text");
        // A frame that does not decode after its blanks is kept whole, blanks and all.
        let e = decode(b"\r<13>1 -  h - - - bad header", RECV);
        assert_eq!((e.format, e.message.as_ref()), (Format::Raw, "\r<13>1 -  h - - - bad header"));
    }

    #[test]
    fn trailing_cr_trimmed_once() {
        let e = decode(b"<13>1 - - - - - - m\r\r", RECV);
        assert_eq!(e.message, "m\r");
        let e = decode(b"<13>Oct 11 22:14:15 h a: m\r", RECV);
        assert_eq!(e.message, "m");
    }

    #[test]
    fn invalid_utf8_is_replaced_and_still_parsed() {
        let e = decode(b"<13>1 - host app - - - caf\xe9", RECV);
        assert_eq!(e.format, Format::Rfc5424);
        assert_eq!(e.host.as_deref(), Some("host"));
        assert_eq!(e.message, "caf\u{fffd}");
        assert_eq!(e.decode_error.as_deref(), Some("invalid UTF-8 replaced"));
        // A decoder's own reason wins over the UTF-8 note.
        let e = decode(b"<13>1 bad \xff - - - -", RECV);
        assert_eq!(e.format, Format::Raw);
        assert_eq!(e.decode_error.as_deref(), Some("rfc5424: bad TIMESTAMP"));
        let e = decode(b"{\"msg\":\"\xff\"}", RECV);
        assert_eq!((e.format, e.message.as_ref()), (Format::Json, "\u{fffd}"));
    }

    #[test]
    fn borrows_from_the_frame() {
        let e = decode(b"<13>1 2023-10-11T22:14:15Z h a p m - text", RECV);
        assert!(matches!(e.message, Cow::Borrowed(_)));
        assert!(matches!(e.msgid, Some(Cow::Borrowed(_))));
        let e = decode(b"<30>Nov 23 09:00:01 web-1 nginx[812]: GET /", RECV);
        assert!(matches!(e.message, Cow::Borrowed(_)));
        assert!(matches!(e.app, Some(Cow::Borrowed(_))));
    }

    #[test]
    fn civil_helpers_agree_with_chrono() {
        for days in (-800_000..800_000).step_by(97) {
            let date = chrono::DateTime::from_timestamp(days * 86_400, 0).unwrap().date_naive();
            use chrono::Datelike;
            let (y, m, d) = (i64::from(date.year()), date.month(), date.day());
            assert_eq!(days_from_civil(y, m, d), days);
            assert_eq!(year_from_days(days), y);
        }
    }

    /// xorshift64*: deterministic, dependency-free randomness for the fuzz-style tests.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap()
        }
    }

    const SAMPLES: &[&str] = &[
        r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"] msg"#,
        "<34>1 2003-10-11T22:14:15.003+02:00 mymachine su - ID47 - \u{feff}'su root' failed",
        r#"<13>1 - - - - - [a b="c\"d\\e\]f"] x"#,
        "<30>Nov 23 09:00:01 web-1 nginx[812]: GET /",
        "<13>Oct  1 2023 22:14:15.123 h app[1] m",
        "<13>2023-10-11 22:14:15.123456+02:00 su[123]: msg",
        r#"{"@timestamp":"2023-10-11T22:14:15.123Z","level":"warn","msg":"m","ts":1.5e12,"pid":3}"#,
    ];

    #[test]
    fn every_truncation_of_valid_messages_decodes() {
        for sample in SAMPLES {
            let b = sample.as_bytes();
            for end in 0..=b.len() {
                for start in [0, 1, 3, 4] {
                    if let Some(part) = b.get(start..end) {
                        let e = decode(part, RECV);
                        if e.format == Format::Raw {
                            assert!(e.decode_error.is_some());
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn random_bytes_and_mutations_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let alphabet = b"<>[]{}\"\\=:- .T+Z0123456789aAzOct\r\xef\xbb\xbf\xff";
        for _ in 0..200_000 {
            let mut buf: Vec<u8> = match rng.below(3) {
                0 => (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
                1 => (0..rng.below(64)).map(|_| alphabet[rng.below(alphabet.len())]).collect(),
                _ => SAMPLES[rng.below(SAMPLES.len())].as_bytes().to_vec(),
            };
            for _ in 0..rng.below(4) {
                if buf.is_empty() {
                    break;
                }
                let at = rng.below(buf.len());
                match rng.below(3) {
                    0 => buf[at] = alphabet[rng.below(alphabet.len())],
                    1 => {
                        buf.remove(at);
                    }
                    _ => buf.insert(at, rng.next() as u8),
                }
            }
            let received = (rng.next() as i64) >> rng.below(64);
            let _ = decode(&buf, received);
            let _ = decode(&buf, i64::MIN);
            let _ = decode(&buf, i64::MAX);
        }
    }
}
