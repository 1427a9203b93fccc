//! RFC 5424 decoder: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [MSG]`.
//!
//! Any VERSION of one to three digits is read with version 1's header (the number is kept in
//! `fields` when it is not 1), and a message without its PRI is decoded when all the rest
//! parses; see ARCHITECTURE.md for what else is accepted beyond the RFC and what is not.
//!
//! The hot path of the daemon: header fields and the message borrow from the frame and only
//! STRUCTURED-DATA (rendered as JSON) allocates. STRUCTURED-DATA becomes a JSON object
//! `{"sd-id":{"param":"value"}}`; an SD-ID that appears twice has its params merged into one
//! object, and a param that appears more than once (in one element or across merged ones)
//! keeps every value, in order, as a JSON array `["v1","v2"]`.

use std::borrow::Cow;

use super::parse_pri;
use super::parse_rfc3339_prefix;
use crate::ingest::event::{Event, Format};

const BOM: &str = "\u{feff}";

/// Decodes one RFC 5424 message; anything malformed is returned as [`Event::raw`].
pub fn decode_rfc5424(line: &str) -> Event<'_> {
    let parsed = match parse_pri(line.as_bytes()) {
        Some((pri, len)) => parse(line, len, Some(pri)),
        None => Err("rfc5424: bad PRI"),
    };
    match parsed {
        Ok(event) => event,
        Err(reason) => Event::raw(Cow::Borrowed(line), reason),
    }
}

/// A message of a loose sender that leaves the PRI out (`1 TIMESTAMP HOSTNAME ...`): decoded
/// only when everything else parses, with facility and severity unknown; `None` otherwise.
pub fn decode_rfc5424_without_pri(line: &str) -> Option<Event<'_>> {
    parse(line, 0, None).ok()
}

/// The message after its PRI (`pri`, `pos` bytes long).
fn parse(line: &str, mut pos: usize, pri: Option<u8>) -> Result<Event<'_>, &'static str> {
    let b = line.as_bytes();
    let version = field(line, &mut pos).ok_or("rfc5424: bad VERSION")?;
    let version = parse_version(version).ok_or("rfc5424: unsupported VERSION")?;
    let timestamp = field(line, &mut pos).ok_or("rfc5424: bad TIMESTAMP")?;
    let timestamp = match timestamp {
        "-" => None,
        ts => match parse_rfc3339_prefix(ts.as_bytes(), false) {
            Some(t) if t.len == ts.len() && t.has_offset => Some(t.ns),
            _ => return Err("rfc5424: bad TIMESTAMP"),
        },
    };
    let host = field(line, &mut pos).ok_or("rfc5424: bad HOSTNAME")?;
    let app = field(line, &mut pos).ok_or("rfc5424: bad APP-NAME")?;
    let procid = field(line, &mut pos).ok_or("rfc5424: bad PROCID")?;
    let msgid = field(line, &mut pos).ok_or("rfc5424: bad MSGID")?;

    let structured_data = match b.get(pos) {
        Some(b'-') => {
            pos += 1;
            None
        }
        Some(b'[') => Some(structured_data(line, &mut pos)?),
        _ => return Err("rfc5424: bad STRUCTURED-DATA"),
    };
    let message = match b.get(pos) {
        None => "",
        Some(b' ') => line.get(pos + 1..).unwrap_or_default(),
        Some(_) => return Err("rfc5424: bad STRUCTURED-DATA"),
    };
    // RFC 5424 §6.4: a BOM announces UTF-8 and is not part of the text.
    let message = message.strip_prefix(BOM).unwrap_or(message);

    Ok(Event {
        format: Format::Rfc5424,
        timestamp,
        severity: pri.map(|p| p & 7),
        facility: pri.map(|p| p >> 3),
        host: nil(host),
        app: nil(app),
        procid: nil(procid),
        msgid: nil(msgid),
        message: Cow::Borrowed(message),
        structured_data,
        // Only version 1 exists; a sender's other number is kept, where it costs nothing for
        // every message that says 1 (see ARCHITECTURE.md).
        fields: (version != 1).then(|| format!("{{\"syslog_version\":{version}}}")),
        decode_error: None,
        trace_id: None,
        span_id: None,
    })
}

/// VERSION is NONZERO-DIGIT 0*2DIGIT. Every version is read with version 1's header, as the
/// peers' parsers do: no other version has been defined.
fn parse_version(v: &str) -> Option<u16> {
    let b = v.as_bytes();
    let digits = (1..=3).contains(&b.len()) && b.iter().all(u8::is_ascii_digit);
    if !digits || b.first() == Some(&b'0') {
        return None;
    }
    v.parse().ok()
}

/// A header field: the non-empty text up to the next SP, which is consumed too. Every header
/// field is followed by SP, since STRUCTURED-DATA is mandatory.
fn field<'a>(line: &'a str, pos: &mut usize) -> Option<&'a str> {
    let rest = line.as_bytes().get(*pos..)?;
    // Header fields are a few bytes long: a plain scan beats memchr's setup cost here.
    let len = rest.iter().position(|&c| c == b' ').filter(|&n| n > 0)?;
    let token = line.get(*pos..*pos + len)?;
    *pos += len + 1;
    Some(token)
}

fn nil(field: &str) -> Option<Cow<'_, str>> {
    (field != "-").then_some(Cow::Borrowed(field))
}

/// SD-NAME: PRINTUSASCII except `=`, SP, `]` and `"`, and (beyond RFC 5424, as the Rust
/// peers accept it) any non-ASCII character; returns its end.
fn name_end(b: &[u8], from: usize) -> usize {
    let tail = b.get(from..).unwrap_or_default();
    let n = tail.iter().take_while(|&&c| c > 32 && c != 127 && !matches!(c, b'=' | b']' | b'"')).count();
    from + n
}

/// One SD-ELEMENT start (`param: None`) or one SD-PARAM, in wire order.
struct SdEntry<'a> {
    id: &'a str,
    param: Option<(&'a str, Cow<'a, str>)>,
}

/// Parses one or more SD-ELEMENTs starting at the `[` under `pos` and renders them as JSON.
fn structured_data(line: &str, pos: &mut usize) -> Result<String, &'static str> {
    let b = line.as_bytes();
    let mut entries = Vec::with_capacity(8);
    while b.get(*pos) == Some(&b'[') {
        let id_end = name_end(b, *pos + 1);
        let id = line.get(*pos + 1..id_end).filter(|id| !id.is_empty()).ok_or("rfc5424: bad SD-ID")?;
        *pos = id_end;
        entries.push(SdEntry { id, param: None });
        loop {
            match b.get(*pos) {
                Some(b']') => {
                    *pos += 1;
                    break;
                }
                Some(b' ') => entries.push(SdEntry { id, param: Some(param(line, pos)?) }),
                _ => return Err("rfc5424: bad STRUCTURED-DATA"),
            }
        }
    }
    render(entries).ok_or("rfc5424: bad STRUCTURED-DATA")
}

/// Writes the JSON object directly rather than through a `serde_json::Map`, which costs an
/// allocation per key and value; serde_json still does the string escaping. A stable sort
/// groups repeated SD-IDs and params (keeping wire order among equal keys) and yields the
/// same sorted keys a `Map` would.
fn render(mut entries: Vec<SdEntry<'_>>) -> Option<String> {
    entries.sort_by(|a, b| (a.id, a.param.as_ref().map(|p| p.0)).cmp(&(b.id, b.param.as_ref().map(|p| p.0))));
    let mut out = Vec::with_capacity(64 + entries.len() * 32);
    out.push(b'{');
    let mut rest = entries.as_slice();
    while let Some(first) = rest.first() {
        let id = first.id;
        let len = rest.iter().take_while(|e| e.id == id).count();
        let (element, tail) = rest.split_at(len);
        rest = tail;
        if out.len() > 1 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, id).ok()?;
        out.extend_from_slice(b":{");
        let mut params = element.iter().filter_map(|e| e.param.as_ref()).peekable();
        let mut first_param = true;
        while let Some((name, value)) = params.next() {
            if !first_param {
                out.push(b',');
            }
            first_param = false;
            serde_json::to_writer(&mut out, name).ok()?;
            out.push(b':');
            if params.peek().is_some_and(|(next, _)| next == name) {
                out.push(b'[');
                serde_json::to_writer(&mut out, value.as_ref()).ok()?;
                while let Some((_, value)) = params.next_if(|(next, _)| next == name) {
                    out.push(b',');
                    serde_json::to_writer(&mut out, value.as_ref()).ok()?;
                }
                out.push(b']');
            } else {
                serde_json::to_writer(&mut out, value.as_ref()).ok()?;
            }
        }
        out.push(b'}');
    }
    out.push(b'}');
    String::from_utf8(out).ok()
}

/// ` name="value"` with `pos` on the SP; returns the name and the unescaped value, borrowed
/// unless it had escapes.
fn param<'a>(line: &'a str, pos: &mut usize) -> Result<(&'a str, Cow<'a, str>), &'static str> {
    let b = line.as_bytes();
    let start = *pos + 1;
    let end = name_end(b, start);
    let name = line.get(start..end).filter(|n| !n.is_empty()).ok_or("rfc5424: bad SD-PARAM")?;
    if b.get(end) != Some(&b'=') {
        return Err("rfc5424: bad SD-PARAM");
    }
    // Spaces between `=` and the quote are not RFC 5424, but unambiguous: some senders write them.
    let mut i = end + 1;
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    if b.get(i) != Some(&b'"') {
        return Err("rfc5424: bad SD-PARAM");
    }
    i += 1;
    let mut value = Cow::Borrowed("");
    let mut run_start = i;
    loop {
        let rest = b.get(i..).unwrap_or_default();
        let at = memchr::memchr2(b'"', b'\\', rest).ok_or("rfc5424: unterminated SD-PARAM")?;
        i += at;
        let run = line.get(run_start..i).ok_or("rfc5424: bad SD-PARAM")?;
        if value.is_empty() {
            value = Cow::Borrowed(run);
        } else {
            value.to_mut().push_str(run);
        }
        if b.get(i) == Some(&b'"') {
            *pos = i + 1;
            return Ok((name, value));
        }
        // Only `\"`, `\\` and `\]` are escapes; any other backslash is literal (§6.3.3).
        match b.get(i + 1) {
            Some(&c @ (b'"' | b'\\' | b']')) => {
                value.to_mut().push(char::from(c));
                i += 2;
            }
            _ => {
                value.to_mut().push('\\');
                i += 1;
            }
        }
        run_start = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn ok(line: &str) -> Event<'_> {
        let e = decode_rfc5424(line);
        assert_eq!(e.format, Format::Rfc5424, "{e:?}");
        e
    }

    fn err(line: &str) -> String {
        let e = decode_rfc5424(line);
        assert_eq!(e.format, Format::Raw, "{e:?}");
        assert_eq!(e.message, line);
        e.decode_error.map(|r| r.into_owned()).unwrap_or_default()
    }

    #[test]
    fn rfc_example_1_bom_and_nil_procid() {
        let line = "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \u{feff}'su root' failed for lonvick on /dev/pts/8";
        let e = ok(line);
        assert_eq!(e.facility, Some(4));
        assert_eq!(e.severity, Some(2));
        assert_eq!(e.timestamp, Some(1_065_910_455_003_000_000));
        assert_eq!(e.host.as_deref(), Some("mymachine.example.com"));
        assert_eq!(e.app.as_deref(), Some("su"));
        assert_eq!(e.procid, None);
        assert_eq!(e.msgid.as_deref(), Some("ID47"));
        assert_eq!(e.structured_data, None);
        assert_eq!(e.message, "'su root' failed for lonvick on /dev/pts/8");
        assert!(matches!(e.message, Cow::Borrowed(_)));
        assert!(matches!(e.host, Some(Cow::Borrowed(_))));
    }

    #[test]
    fn rfc_example_2_offset_and_microseconds() {
        let e = ok(
            "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.",
        );
        assert_eq!((e.facility, e.severity), (Some(20), Some(5)));
        // 2003-08-24T12:14:15.000003Z
        assert_eq!(e.timestamp, Some(1_061_727_255_000_003_000));
        assert_eq!(e.procid.as_deref(), Some("8710"));
        assert_eq!(e.msgid, None);
        assert_eq!(e.message, "%% It's time to make the do-nuts.");
    }

    #[test]
    fn rfc_example_3_sd_and_message() {
        let e = ok(
            r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] An application event log entry..."#,
        );
        assert_eq!(
            e.structured_data.as_deref(),
            Some(r#"{"exampleSDID@32473":{"eventID":"1011","eventSource":"Application","iut":"3"}}"#)
        );
        assert_eq!(e.message, "An application event log entry...");
    }

    #[test]
    fn rfc_example_4_two_elements_no_message() {
        let e = ok(
            r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"]"#,
        );
        let sd: Value = serde_json::from_str(e.structured_data.as_deref().unwrap_or("")).unwrap();
        assert_eq!(sd["examplePriority@32473"]["class"], "high");
        assert_eq!(sd["exampleSDID@32473"]["iut"], "3");
        assert_eq!(e.message, "");
    }

    #[test]
    fn escaped_sd_values() {
        let e = ok(r#"<13>1 - h a - - [x@1 v="a\"b\\c\]d\e" w="ü]" z=""] m"#);
        let sd: Value = serde_json::from_str(e.structured_data.as_deref().unwrap_or("")).unwrap();
        assert_eq!(sd["x@1"]["v"], r#"a"b\c]d\e"#);
        assert_eq!(sd["x@1"]["w"], "ü]");
        assert_eq!(sd["x@1"]["z"], "");
        assert_eq!(e.message, "m");
    }

    #[test]
    fn repeated_ids_merge_and_repeated_params_collect() {
        let e = ok(r#"<13>1 - - - - - [a k="1" k="2"][b x="y"][a k="3" j="4"]"#);
        assert_eq!(e.structured_data.as_deref(), Some(r#"{"a":{"j":"4","k":["1","2","3"]},"b":{"x":"y"}}"#));
        let e = ok("<13>1 - - - - - [id]");
        assert_eq!(e.structured_data.as_deref(), Some(r#"{"id":{}}"#));
    }

    #[test]
    fn nil_values_everywhere() {
        let e = ok("<0>1 - - - - - -");
        assert_eq!((e.facility, e.severity, e.timestamp), (Some(0), Some(0), None));
        assert_eq!((e.host, e.app, e.procid, e.msgid), (None, None, None, None));
        assert_eq!(e.message, "");
        let e = ok("<191>1 - - - - - - ");
        assert_eq!((e.facility, e.severity), (Some(23), Some(7)));
        assert_eq!(e.message, "");
    }

    #[test]
    fn timestamps() {
        let ts = |t: &str| ok(&format!("<13>1 {t} h a p m - x")).timestamp;
        assert_eq!(ts("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(ts("1970-01-01T00:00:00.5Z"), Some(500_000_000));
        assert_eq!(ts("1970-01-01T00:00:00.123456789Z"), Some(123_456_789));
        assert_eq!(ts("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(ts("1969-12-31T19:30:00-04:30"), Some(0));
        assert_eq!(ts("2024-02-29T12:00:00z"), Some(1_709_208_000_000_000_000));
        assert_eq!(ts("1965-01-01T00:00:00Z"), Some(-157_766_400_000_000_000));
        for bad in [
            "2003-10-11T22:14:15",
            "2003-10-11T22:14:15.Z",
            "2003-10-11T22:14:15.0123456789Z",
            "2003-13-11T22:14:15Z",
            "2023-02-29T22:14:15Z",
            "2003-10-11T24:14:15Z",
            "2003-10-11T22:14:15+2:00",
            "2003-10-11T22:14:15Zjunk",
            "9999-10-11T22:14:15Z",
            "Oct 11 22:14:15",
        ] {
            assert_eq!(err(&format!("<13>1 {bad} h a p m - x")), "rfc5424: bad TIMESTAMP", "{bad}");
        }
    }

    #[test]
    fn any_version_is_decoded_with_the_version_1_header_and_kept() {
        let e = ok("<165>2 2003-08-24T05:14:15.000003-07:00 - - - - -");
        assert_eq!(e.timestamp, Some(1_061_727_255_000_003_000));
        assert_eq!(e.fields.as_deref(), Some(r#"{"syslog_version":2}"#));
        let e = ok(r#"<191>999 2018-12-31T23:59:59.999999-23:59 h a p m [an@id key1="val1"] Some message"#);
        assert_eq!((e.facility, e.severity, e.host.as_deref()), (Some(23), Some(7), Some("h")));
        assert_eq!(e.fields.as_deref(), Some(r#"{"syslog_version":999}"#));
        assert_eq!(e.message, "Some message");
        let e = ok("<13>10 - h a - - - x");
        assert_eq!((e.fields.as_deref(), e.message.as_ref()), (Some(r#"{"syslog_version":10}"#), "x"));
        // Version 1, the only one defined, needs no note.
        assert_eq!(ok("<13>1 - h a - - - x").fields, None);
        // VERSION is NONZERO-DIGIT 0*2DIGIT.
        for bad in ["<13>0 - - - - - -", "<13>01 - - - - - -", "<13>1000 - - - - - -", "<13>1a - - - - - -"] {
            assert_eq!(err(bad), "rfc5424: unsupported VERSION", "{bad}");
        }
    }

    #[test]
    fn space_after_the_equals_sign_of_a_param() {
        let e = ok(
            r#"<165>1 - h a - ID47 [exampleSDID@32473 iut="3" eventSource= "Application" eventID="1011"][examplePriority@32473 class="high"] m"#,
        );
        let sd: Value = serde_json::from_str(e.structured_data.as_deref().unwrap_or("")).unwrap();
        assert_eq!(sd["exampleSDID@32473"]["eventSource"], "Application");
        assert_eq!(sd["examplePriority@32473"]["class"], "high");
        assert_eq!(e.message, "m");
    }

    #[test]
    fn sd_names_beyond_ascii() {
        let e = ok(r#"<13>1 - h a - - [météo@32473 température="3"] m"#);
        assert_eq!(e.structured_data.as_deref(), Some(r#"{"météo@32473":{"température":"3"}}"#));
    }

    #[test]
    fn without_pri() {
        let e = decode_rfc5424_without_pri(
            "1 2020-05-22T14:59:09.250-03:00 OX-MX204 OX-CONTEUDO:rpd 6589 - - bgp: x",
        )
        .unwrap();
        assert_eq!((e.format, e.facility, e.severity), (Format::Rfc5424, None, None));
        assert_eq!(
            (e.host.as_deref(), e.app.as_deref(), e.procid.as_deref()),
            (Some("OX-MX204"), Some("OX-CONTEUDO:rpd"), Some("6589"))
        );
        assert_eq!(e.message, "bgp: x");
        // Anything short of a whole header is not taken for RFC 5424.
        for text in ["1 - - - - -", "1 2020-05-22T14:59:09Z only words", "2 apples", r#"1 - h a - - [x y] m"#]
        {
            assert_eq!(decode_rfc5424_without_pri(text), None, "{text}");
        }
    }

    #[test]
    fn rejections_have_reasons() {
        assert_eq!(err("<192>1 - - - - - -"), "rfc5424: bad PRI");
        assert_eq!(err("<13>0 - - - - - -"), "rfc5424: unsupported VERSION");
        assert_eq!(err("<13>1 - h a p"), "rfc5424: bad PROCID");
        assert_eq!(err("<13>1 - h a p m"), "rfc5424: bad MSGID");
        assert_eq!(err("<13>1 - h a p m "), "rfc5424: bad STRUCTURED-DATA");
        assert_eq!(err("<13>1 - h a p m -x"), "rfc5424: bad STRUCTURED-DATA");
        assert_eq!(err("<13>1 - h a p m [] x"), "rfc5424: bad SD-ID");
        assert_eq!(err(r#"<13>1 - h a p m [a b=c] x"#), "rfc5424: bad SD-PARAM");
        assert_eq!(err(r#"<13>1 - h a p m [a b="c] x"#), "rfc5424: unterminated SD-PARAM");
        assert_eq!(err(r#"<13>1 - h a p m [a b="c"x"#), "rfc5424: bad STRUCTURED-DATA");
        assert_eq!(err("<13>1  h a p m - x"), "rfc5424: bad TIMESTAMP");
    }
}
