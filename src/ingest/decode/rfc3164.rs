//! RFC 3164 ("BSD syslog") decoder, for the shapes real devices and daemons send:
//! `[<PRI>][TIMESTAMP ][HOSTNAME ][TAG[PID]: ]MSG`.
//!
//! The TAG is read as rsyslog's parser reads it, since rsyslog is what most often relays to us:
//! it ends at the first `:` or SP (the `:` belongs to it, the SP does not), so after a HOSTNAME
//! the next word is the TAG even without a colon, as rsyslog's default forwarding template
//! writes it for messages that arrived as RFC 5424 (`host app msg`).
//!
//! Everything is optional, so this decoder never rejects: what it cannot recognise is message
//! text. Timestamps are `Mmm dd hh:mm:ss` (optionally with `.frac`, or `Mmm dd yyyy hh:mm:ss`
//! as Cisco sends), taken as UTC with the year that puts them nearest the receive time, or
//! RFC 3339 / ISO 8601 (`T` or space, offset optional, UTC without one).

use std::borrow::Cow;

use memchr::memchr;

use super::{civil_to_ns, digits, fraction, parse_pri, parse_rfc3339_prefix, year_from_days};
use crate::ingest::event::{Event, Format};

/// RFC 3164 §4.3.3: a relay that finds no PRI must assume facility 1 (user), severity 5.
const DEFAULT_PRI: u8 = 13;

const MONTHS: [&[u8; 3]; 12] =
    [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];

/// Decodes one RFC 3164 message received at `received_at_ns`. Always succeeds; a part that is
/// present but broken (PRI, impossible date) is noted in `decode_error`.
pub fn decode_rfc3164(line: &str, received_at_ns: i64) -> Event<'_> {
    let mut decode_error = None;
    let (pri, rest, had_pri) = match parse_pri(line.as_bytes()) {
        Some((pri, len)) => (pri, line.get(len..).unwrap_or_default(), true),
        None => {
            if line.starts_with('<') && line.contains('>') {
                decode_error = Some(Cow::Borrowed("rfc3164: bad PRI"));
            }
            (DEFAULT_PRI, line, false)
        }
    };

    // Some devices (HP ProCurve among them) put a space between the PRI and the timestamp.
    let found = timestamp(rest.as_bytes(), received_at_ns).or_else(|| {
        let after_space = rest.strip_prefix(' ').filter(|_| had_pri)?;
        timestamp(after_space.as_bytes(), received_at_ns).map(|(ts, len)| (ts, len + 1))
    });
    let (timestamp, rest) = match found {
        Some((ts, len)) => {
            if ts.is_none() {
                decode_error = Some(Cow::Borrowed("rfc3164: bad TIMESTAMP"));
            }
            (Some(ts), rest.get(len..).unwrap_or_default().trim_start_matches(' '))
        }
        None => (None, rest),
    };

    let mut host = None;
    let mut tagged = None;
    let first = rest.split(' ').next().unwrap_or_default();
    if first.ends_with(':') || first.contains('[') {
        tagged = tag(rest, false);
    } else if timestamp.is_some() && !first.is_empty() {
        // With a timestamp the next word is the HOSTNAME (§4.1.2); without one it is too
        // ambiguous to take a word of message text for a host.
        host = Some(Cow::Borrowed(first));
        let after = rest.get(first.len()..).unwrap_or_default();
        let after = after.strip_prefix(' ').unwrap_or(after);
        tagged = Some(tag(after, true).unwrap_or((None, None, after)));
    }
    let (app, procid, message) = tagged.unwrap_or((None, None, rest));

    Event {
        format: Format::Rfc3164,
        timestamp: timestamp.flatten(),
        severity: Some(pri & 7),
        facility: Some(pri >> 3),
        host,
        app: app.map(Cow::Borrowed),
        procid: procid.map(Cow::Borrowed),
        msgid: None,
        message: Cow::Borrowed(message),
        structured_data: None,
        fields: None,
        decode_error,
        trace_id: None,
        span_id: None,
    }
}

type Tagged<'a> = (Option<&'a str>, Option<&'a str>, &'a str);

/// rsyslog's longest TAG (`CONF_TAG_MAXSIZE` less the terminator and the colon).
const MAX_TAG: usize = 510;

/// The TAG at the start of `s`: up to the first `:` or SP, the `:` consumed with it, then one
/// SP; the app is the TAG up to a `[pid]`, which must close it (`app[42: x` is no TAG). After
/// a HOSTNAME (`colonless`) any such word is a TAG, as in rsyslog; before one, a TAG must end
/// in `:` or carry a `[pid]`, which is what tells it from message text. A word longer than
/// rsyslog's limit is message text rather than a TAG cut in two. Returns app, procid and the
/// message.
fn tag(s: &str, colonless: bool) -> Option<Tagged<'_>> {
    let b = s.as_bytes();
    let end = memchr::memchr2(b':', b' ', b).unwrap_or(b.len());
    if end > MAX_TAG {
        return None;
    }
    let word = s.get(..end)?;
    let colon = b.get(end) == Some(&b':');
    if word.is_empty() {
        // A bare `:` (rsyslog reads it as an empty TAG): no app, the message follows.
        let rest = s.get(end + 1..).filter(|_| colon)?;
        return Some((None, None, rest.strip_prefix(' ').unwrap_or(rest)));
    }
    let (app, procid) = match memchr(b'[', word.as_bytes()) {
        Some(open) => {
            let pid = word.get(open + 1..)?.strip_suffix(']')?;
            (word.get(..open)?, Some(pid).filter(|p| !p.is_empty()))
        }
        None if colon || colonless => (word, None),
        None => return None,
    };
    if app.is_empty() {
        return None;
    }
    let mut i = end + usize::from(colon);
    if b.get(i) == Some(&b' ') {
        i += 1;
    }
    Some((Some(app), procid, s.get(i..).unwrap_or_default()))
}

/// Recognises a timestamp at the start of `b`; returns its time (`None` when it has the shape
/// but names no real date) and its length. The timestamp must end the text or precede a SP.
fn timestamp(b: &[u8], received_at_ns: i64) -> Option<(Option<i64>, usize)> {
    let (ts, len) = if b.first().is_some_and(u8::is_ascii_digit) {
        let t = parse_rfc3339_prefix(b, true)?;
        (Some(t.ns), t.len)
    } else {
        bsd_timestamp(b, received_at_ns)?
    };
    matches!(b.get(len), None | Some(b' ')).then_some((ts, len))
}

/// `Mmm dd hh:mm:ss[.frac]` or `Mmm dd yyyy hh:mm:ss[.frac]`; the day may be `dd`, ` d` or `d`.
fn bsd_timestamp(b: &[u8], received_at_ns: i64) -> Option<(Option<i64>, usize)> {
    let mon = b.get(..3)?;
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(mon))?;
    let month = u32::try_from(month + 1).ok()?;
    if b.get(3) != Some(&b' ') {
        return None;
    }
    let (day, mut i) = match (b.get(4), b.get(5)) {
        (Some(b' '), _) => (digits(b, 5, 1)?, 6),
        (_, Some(b' ')) => (digits(b, 4, 1)?, 5),
        _ => (digits(b, 4, 2)?, 6),
    };
    if b.get(i) != Some(&b' ') {
        return None;
    }
    i += 1;
    let mut year = None;
    if b.get(i + 4) == Some(&b' ') {
        year = Some(i64::from(digits(b, i, 4)?));
        i += 5;
    }
    let h = digits(b, i, 2)?;
    let mi = digits(b, i + 3, 2)?;
    let s = digits(b, i + 6, 2)?;
    if b.get(i + 2) != Some(&b':') || b.get(i + 5) != Some(&b':') {
        return None;
    }
    i += 8;
    // Devices send milliseconds or microseconds; more than 9 digits are only truncated.
    let (frac, frac_len) = fraction(b, i, usize::MAX)?;
    i += frac_len;
    let ns = |y| civil_to_ns(y, month, day, h, mi, s, frac);
    let ts = match year {
        Some(y) => ns(y),
        None => {
            let received_year = year_from_days(received_at_ns.div_euclid(86_400 * 1_000_000_000));
            (received_year - 1..=received_year + 1).filter_map(ns).min_by_key(|t| t.abs_diff(received_at_ns))
        }
    };
    Some((ts, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2023-10-12T00:00:00Z
    const RECV: i64 = 1_697_068_800_000_000_000;
    /// 2023-10-11T22:14:15Z
    const OCT11: i64 = 1_697_062_455_000_000_000;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        let t = chrono::NaiveDate::from_ymd_opt(y, mo, d).and_then(|d| d.and_hms_opt(h, mi, s));
        t.unwrap().and_utc().timestamp_nanos_opt().unwrap()
    }

    #[test]
    fn constants_match_chrono() {
        assert_eq!(RECV, utc(2023, 10, 12, 0, 0, 0));
        assert_eq!(OCT11, utc(2023, 10, 11, 22, 14, 15));
    }

    fn d(line: &str) -> Event<'_> {
        let e = decode_rfc3164(line, RECV);
        assert_eq!(e.format, Format::Rfc3164);
        e
    }

    fn parts<'a>(e: &'a Event<'_>) -> (Option<&'a str>, Option<&'a str>, Option<&'a str>, &'a str) {
        (e.host.as_deref(), e.app.as_deref(), e.procid.as_deref(), &e.message)
    }

    #[test]
    fn rsyslog_forwarding_format() {
        let e = d("<30>Nov 23 09:00:01 web-1 nginx[812]: GET /");
        assert_eq!((e.facility, e.severity), (Some(3), Some(6)));
        assert_eq!(parts(&e), (Some("web-1"), Some("nginx"), Some("812"), "GET /"));
        // Nov 23 is nearer to 2023-10-12 in 2023 than in 2022.
        assert_eq!(e.timestamp, Some(utc(2023, 11, 23, 9, 0, 1)));
        assert_eq!(e.decode_error, None);
    }

    #[test]
    fn rfc_examples() {
        let e = d("<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8");
        assert_eq!((e.facility, e.severity, e.timestamp), (Some(4), Some(2), Some(OCT11)));
        assert_eq!(
            parts(&e),
            (Some("mymachine"), Some("su"), None, "'su root' failed for lonvick on /dev/pts/8")
        );
        // §5.4 calls all of "Use the BFG!" CONTENT; rsyslog (and syslog-ng, and §4.1.3's own
        // grammar) read "Use" as the TAG. We read as rsyslog does: see ARCHITECTURE.md.
        let e = d("<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!");
        assert_eq!(parts(&e), (Some("10.0.0.99"), Some("Use"), None, "the BFG!"));
        // Nearest to 2023-10-12 is the coming February, not the past one.
        assert_eq!(e.timestamp, Some(utc(2024, 2, 5, 17, 32, 18)));
    }

    #[test]
    fn no_pri_defaults_to_user_notice() {
        let e = d("Oct 11 22:14:15 host app[1]: hi");
        assert_eq!((e.facility, e.severity, e.timestamp), (Some(1), Some(5), Some(OCT11)));
        assert_eq!(parts(&e), (Some("host"), Some("app"), Some("1"), "hi"));
        let e = d("just some text");
        assert_eq!((e.facility, e.severity, e.timestamp), (Some(1), Some(5), None));
        assert_eq!(parts(&e), (None, None, None, "just some text"));
    }

    #[test]
    fn no_host() {
        let e = d("<13>Oct 11 22:14:15 su[123]: msg");
        assert_eq!(parts(&e), (None, Some("su"), Some("123"), "msg"));
        let e = d("<13>Oct 11 22:14:15 kernel: [  1.0] eth0 up");
        assert_eq!(parts(&e), (None, Some("kernel"), None, "[  1.0] eth0 up"));
    }

    #[test]
    fn padded_and_single_digit_days() {
        let oct1 = utc(2023, 10, 1, 22, 14, 15);
        for line in ["<13>Oct  1 22:14:15 h a: m", "<13>Oct 01 22:14:15 h a: m", "<13>Oct 1 22:14:15 h a: m"]
        {
            let e = d(line);
            assert_eq!(e.timestamp, Some(oct1), "{line}");
            assert_eq!(parts(&e), (Some("h"), Some("a"), None, "m"));
        }
    }

    #[test]
    fn iso_timestamps() {
        let e = d("<13>2023-10-11T22:14:15.123+02:00 host app[9]: m");
        assert_eq!(e.timestamp, Some(OCT11 - 7_200_000_000_000 + 123_000_000));
        assert_eq!(parts(&e), (Some("host"), Some("app"), Some("9"), "m"));
        let e = d("<13>2023-10-11 22:14:15 host app: m");
        assert_eq!(e.timestamp, Some(OCT11));
        assert_eq!(parts(&e), (Some("host"), Some("app"), None, "m"));
        let e = d("<13>2023-10-11T22:14:15.123456Z app: m");
        assert_eq!(e.timestamp, Some(OCT11 + 123_456_000));
        assert_eq!(parts(&e), (None, Some("app"), None, "m"));
    }

    #[test]
    fn year_rollover() {
        let jan1 = 1_704_067_200_000_000_000; // 2024-01-01T00:00:00Z
        let e = decode_rfc3164("<13>Dec 31 23:59:58 h a: m", jan1);
        assert_eq!(e.timestamp, Some(jan1 - 2_000_000_000));
        let dec31 = jan1 - 60_000_000_000;
        let e = decode_rfc3164("<13>Jan  1 00:00:05 h a: m", dec31);
        assert_eq!(e.timestamp, Some(jan1 + 5_000_000_000));
        // Feb 29 has no nearby valid year from 2022: shape recognised, time dropped.
        let e = decode_rfc3164("<13>Feb 29 00:00:00 h a: m", 1_656_633_600_000_000_000);
        assert_eq!(e.timestamp, None);
        assert_eq!(e.decode_error.as_deref(), Some("rfc3164: bad TIMESTAMP"));
        assert_eq!(parts(&e), (Some("h"), Some("a"), None, "m"));
    }

    #[test]
    fn cisco_variants() {
        let e = d("<189>Oct 11 2023 22:14:15 router1 %LINK-3-UPDOWN: down");
        assert_eq!(e.timestamp, Some(OCT11));
        assert_eq!(parts(&e), (Some("router1"), Some("%LINK-3-UPDOWN"), None, "down"));
        let e = d("<189>Oct 11 22:14:15.250 router1 x: y");
        assert_eq!(e.timestamp, Some(OCT11 + 250_000_000));
    }

    #[test]
    fn nothing_after_pri_parses() {
        let e = d("<13>hello world");
        assert_eq!((e.timestamp, e.severity), (None, Some(5)));
        assert_eq!(parts(&e), (None, None, None, "hello world"));
        let e = d("<13>");
        assert_eq!(parts(&e), (None, None, None, ""));
        let e = d("<13>Oct 11 22:14:15");
        assert_eq!((e.timestamp, parts(&e)), (Some(OCT11), (None, None, None, "")));
        let e = d("<13>Oct 11 22:14:15x h");
        assert_eq!((e.timestamp, parts(&e)), (None, (None, None, None, "Oct 11 22:14:15x h")));
        let e = d("<999>x");
        assert_eq!(e.decode_error.as_deref(), Some("rfc3164: bad PRI"));
        assert_eq!(e.message, "<999>x");
    }

    #[test]
    fn tag_variants() {
        let e = d("<13>Oct 11 22:14:15 h app[42] text");
        assert_eq!(parts(&e), (Some("h"), Some("app"), Some("42"), "text"));
        let e = d("<13>Oct 11 22:14:15 h app[]: text");
        assert_eq!(parts(&e), (Some("h"), Some("app"), None, "text"));
        let e = d("<13>app: text");
        assert_eq!(parts(&e), (None, Some("app"), None, "text"));
        let e = d("<13>Oct 11 22:14:15 h app[42: text");
        assert_eq!(parts(&e), (Some("h"), None, None, "app[42: text"));
    }

    #[test]
    fn a_tag_without_colon_after_the_hostname() {
        // rsyslog's RSYSLOG_TraditionalForwardFormat for a message that arrived as RFC 5424.
        let e = d("<13>Dec  2 03:24:41 vm rsyslogtest hello 1");
        assert_eq!(parts(&e), (Some("vm"), Some("rsyslogtest"), None, "hello 1"));
        let e = d("<13>Dec  2 03:24:41 vm rsyslogtest[4242] hello 1");
        assert_eq!(parts(&e), (Some("vm"), Some("rsyslogtest"), Some("4242"), "hello 1"));
        let e = d("<13>Dec  2 03:24:41 vm rsyslogtest");
        assert_eq!(parts(&e), (Some("vm"), Some("rsyslogtest"), None, ""));
        let e = d("<46>Jan 5 10:01:00 Übergröße außerplanmäßig größenordnungsmäßig");
        assert_eq!(parts(&e), (Some("Übergröße"), Some("außerplanmäßig"), None, "größenordnungsmäßig"));
        // Without a HOSTNAME before it, a colonless word is message text.
        let e = d("<13>just words here");
        assert_eq!(parts(&e), (None, None, None, "just words here"));
    }

    #[test]
    fn tag_ends_at_colon_or_space_as_in_rsyslog() {
        let e = d("<13>Oct 11 22:14:15 h postfix/smtpd[99]: x");
        assert_eq!(parts(&e), (Some("h"), Some("postfix/smtpd"), Some("99"), "x"));
        let e = d("<13>Oct 11 22:14:15 h my-app.v2:x");
        assert_eq!(parts(&e), (Some("h"), Some("my-app.v2"), None, "x"));
        // A colon inside a word ends the TAG there, as rsyslog reads it.
        let e = d("<13>Oct 11 22:14:15 h http://example.org/ down");
        assert_eq!(parts(&e), (Some("h"), Some("http"), None, "//example.org/ down"));
        // No word after the HOSTNAME (two spaces): no TAG.
        let e = d("<13>Oct 11 22:14:15 h  [x] y");
        assert_eq!(parts(&e), (Some("h"), None, None, " [x] y"));
    }

    #[test]
    fn an_empty_tag_before_a_colon() {
        let e = d("<34>Oct 11 22:14:15 : a message");
        assert_eq!((e.timestamp, parts(&e)), (Some(OCT11), (None, None, None, "a message")));
        let e = d("<54>Oct 11 22:14:15 host :");
        assert_eq!(parts(&e), (Some("host"), None, None, ""));
    }

    #[test]
    fn a_space_between_pri_and_timestamp() {
        // HP ProCurve switches, among others.
        let e = d("<54> 1970-01-01T00:01:31+00:00 host app: m");
        assert_eq!((e.timestamp, parts(&e)), (Some(91_000_000_000), (Some("host"), Some("app"), None, "m")));
        let e = d("<13> Oct 11 22:14:15 h a: m");
        assert_eq!((e.timestamp, parts(&e)), (Some(OCT11), (Some("h"), Some("a"), None, "m")));
        // Not a timestamp after all: the text is kept as it came.
        assert_eq!(d("<13> hello").message, " hello");
    }

    #[test]
    fn a_tag_is_at_most_510_bytes() {
        let longest = "a".repeat(MAX_TAG);
        let line = format!("<13>Oct 11 22:14:15 h {longest} m");
        assert_eq!(parts(&d(&line)), (Some("h"), Some(longest.as_str()), None, "m"));
        let longer = "a".repeat(MAX_TAG + 1);
        let line = format!("<13>Oct 11 22:14:15 h {longer} m");
        let rest = format!("{longer} m");
        assert_eq!(parts(&d(&line)), (Some("h"), None, None, rest.as_str()));
    }
}
