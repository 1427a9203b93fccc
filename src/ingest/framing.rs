//! Splitting a byte stream into syslog frames, auto-detected per frame as rsyslog does:
//! RFC 5425/6587 octet counting (`LEN SP MSG`) when a frame starts with digits and a space,
//! otherwise non-transparent framing ending at LF.
//!
//! Oversize frames are skipped without buffering them: an octet-counted one by its announced
//! length, an LF one up to its next LF. Either way the connection stays usable.

/// Why a frame was refused; the `reason` label of `logwarden_frames_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Longer than `max_frame_bytes`.
    Oversize,
    /// The connection ended inside an octet-counted frame.
    Truncated,
    /// An octet count that cannot be a length (overflow, leading zero).
    Malformed,
}

impl Reject {
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Oversize => "oversize",
            Reject::Truncated => "truncated",
            Reject::Malformed => "malformed",
        }
    }
}

/// Longest octet count accepted as a header: 10 digits is beyond any sane frame already.
const MAX_LEN_DIGITS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    /// Discarding the rest of an oversize octet-counted frame.
    SkipOctets(usize),
    /// Discarding an oversize LF frame up to its LF.
    SkipLine,
}

/// Per-connection framing state.
#[derive(Debug)]
pub struct Framer {
    max_frame: usize,
    state: State,
}

impl Framer {
    pub fn new(max_frame: usize) -> Self {
        Framer { max_frame, state: State::Idle }
    }

    /// Extract every complete frame from `buf`, in order, passing each (or its rejection) to
    /// `on`. Returns how many bytes were consumed; the caller keeps the rest for the next read.
    /// With `eof`, an unterminated LF frame is delivered (rsyslog does the same) and an
    /// incomplete octet-counted frame is rejected as truncated.
    pub fn feed(&mut self, buf: &[u8], eof: bool, mut on: impl FnMut(Result<&[u8], Reject>)) -> usize {
        let mut pos = 0;
        while pos < buf.len() {
            let rest = &buf[pos..];
            match self.state {
                State::SkipOctets(n) => {
                    let k = n.min(rest.len());
                    pos += k;
                    self.state = if k == n { State::Idle } else { State::SkipOctets(n - k) };
                }
                State::SkipLine => match memchr::memchr(b'\n', rest) {
                    Some(i) => {
                        pos += i + 1;
                        self.state = State::Idle;
                    }
                    None => pos = buf.len(),
                },
                State::Idle => match self.next(rest, eof, &mut on) {
                    Some(used) => pos += used,
                    None => break,
                },
            }
        }
        pos
    }

    /// One frame from the start of `rest`: bytes used, or `None` when more input is needed.
    fn next(&mut self, rest: &[u8], eof: bool, on: &mut impl FnMut(Result<&[u8], Reject>)) -> Option<usize> {
        // Blank separators between frames (a stray LF after an octet-counted frame, CRLF
        // line endings) are not messages.
        if rest[0] == b'\n' {
            return Some(1);
        }
        if rest[0] == b'\r' && rest.get(1) == Some(&b'\n') {
            return Some(2);
        }
        if rest[0].is_ascii_digit() {
            let digits = rest.iter().take(MAX_LEN_DIGITS + 1).take_while(|b| b.is_ascii_digit()).count();
            match rest.get(digits) {
                Some(b' ') if digits <= MAX_LEN_DIGITS => return self.octet_counted(rest, digits, eof, on),
                // All digits so far and the buffer ends: the header may continue.
                None if !eof && digits <= MAX_LEN_DIGITS => return None,
                _ => {}
            }
        }
        self.lf_frame(rest, eof, on)
    }

    fn octet_counted(
        &mut self,
        rest: &[u8],
        digits: usize,
        eof: bool,
        on: &mut impl FnMut(Result<&[u8], Reject>),
    ) -> Option<usize> {
        let header = digits + 1;
        let len = std::str::from_utf8(&rest[..digits]).ok().and_then(|s| s.parse::<usize>().ok());
        let len = match len {
            Some(l) if !(digits > 1 && rest[0] == b'0') => l,
            _ => {
                on(Err(Reject::Malformed));
                // Without a usable length the frame's end is unknown: resynchronise at LF.
                self.state = State::SkipLine;
                return Some(header);
            }
        };
        if len > self.max_frame {
            on(Err(Reject::Oversize));
            self.state = State::SkipOctets(len);
            return Some(header);
        }
        if rest.len() >= header + len {
            // Some senders (rsyslog's RFC 5424 templates among them) end the counted message
            // with a line ending of their own; it is framing, not content.
            let frame = trim_line_end(&rest[header..header + len]);
            if !frame.is_empty() {
                on(Ok(frame));
            }
            return Some(header + len);
        }
        if eof {
            on(Err(Reject::Truncated));
            return Some(rest.len());
        }
        None
    }

    fn lf_frame(
        &mut self,
        rest: &[u8],
        eof: bool,
        on: &mut impl FnMut(Result<&[u8], Reject>),
    ) -> Option<usize> {
        let window = &rest[..rest.len().min(self.max_frame + 2)];
        match memchr::memchr(b'\n', window) {
            Some(i) => {
                let frame = trim_line_end(&rest[..i]);
                if frame.len() > self.max_frame {
                    on(Err(Reject::Oversize));
                } else {
                    on(Ok(frame));
                }
                Some(i + 1)
            }
            // Without its LF yet, a final CR may be the first half of the line's CRLF, which
            // is not content: the frame is oversize only past that.
            None if rest.len() > self.max_frame + usize::from(!eof && rest.last() == Some(&b'\r')) => {
                on(Err(Reject::Oversize));
                self.state = State::SkipLine;
                Some(window.len())
            }
            None if eof => {
                on(Ok(rest));
                Some(rest.len())
            }
            None => None,
        }
    }
}

/// `frame` without one trailing LF or CRLF.
pub(crate) fn trim_line_end(frame: &[u8]) -> &[u8] {
    let frame = frame.strip_suffix(b"\n").unwrap_or(frame);
    frame.strip_suffix(b"\r").unwrap_or(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(f: &mut Framer, input: &[u8], eof: bool) -> (Vec<Result<String, Reject>>, usize) {
        let mut out = Vec::new();
        let used = f.feed(input, eof, |r| out.push(r.map(|b| String::from_utf8_lossy(b).into_owned())));
        (out, used)
    }

    #[test]
    fn mixes_octet_counted_and_lf_frames() {
        let mut f = Framer::new(100);
        let input = b"5 hello<13>plain line\n3 abc\n{\"a\":1}\r\n";
        let (out, used) = frames(&mut f, input, false);
        assert_eq!(
            out,
            vec![Ok("hello".into()), Ok("<13>plain line".into()), Ok("abc".into()), Ok("{\"a\":1}".into())]
        );
        assert_eq!(used, input.len());
    }

    #[test]
    fn waits_for_the_rest_of_a_frame() {
        let mut f = Framer::new(100);
        let (out, used) = frames(&mut f, b"10 hello", false);
        assert!(out.is_empty());
        assert_eq!(used, 0);
        let (out, _) = frames(&mut f, b"12", false);
        assert!(out.is_empty());
        let (out, used) = frames(&mut f, b"partial line", false);
        assert!(out.is_empty());
        assert_eq!(used, 0);
    }

    #[test]
    fn oversize_frames_are_skipped_and_the_stream_goes_on() {
        let mut f = Framer::new(8);
        let mut input = b"20 ".to_vec();
        input.extend_from_slice(&[b'x'; 20]);
        input.extend_from_slice(b"2 ok");
        let (out, used) = frames(&mut f, &input, false);
        assert_eq!(out, vec![Err(Reject::Oversize), Ok("ok".into())]);
        assert_eq!(used, input.len());

        // Across reads: the skip carries over.
        let mut f = Framer::new(8);
        let (out, _) = frames(&mut f, b"20 xxxxxxxxxx", false);
        assert_eq!(out, vec![Err(Reject::Oversize)]);
        let (out, _) = frames(&mut f, b"xxxxxxxxxx2 ok", false);
        assert_eq!(out, vec![Ok("ok".into())]);

        let mut f = Framer::new(8);
        let (out, _) = frames(&mut f, b"a very long line without end", false);
        assert_eq!(out, vec![Err(Reject::Oversize)]);
        let (out, _) = frames(&mut f, b" still going\nnext\n", false);
        assert_eq!(out, vec![Ok("next".into())]);

        // An oversize line and the next one in the same read.
        let mut f = Framer::new(8);
        let (out, used) = frames(&mut f, b"a very long line\nnext\n", false);
        assert_eq!(out, vec![Err(Reject::Oversize), Ok("next".into())]);
        assert_eq!(used, 22);
    }

    #[test]
    fn a_line_ending_inside_a_counted_frame_is_not_content() {
        let mut f = Framer::new(100);
        let (out, _) = frames(&mut f, b"6 hello\n7 hello\r\n", false);
        assert_eq!(out, vec![Ok("hello".into()), Ok("hello".into())]);
    }

    #[test]
    fn end_of_stream_keeps_a_last_line_and_rejects_a_cut_frame() {
        let mut f = Framer::new(100);
        let (out, _) = frames(&mut f, b"last line without LF", true);
        assert_eq!(out, vec![Ok("last line without LF".into())]);
        let mut f = Framer::new(100);
        let (out, _) = frames(&mut f, b"50 too short", true);
        assert_eq!(out, vec![Err(Reject::Truncated)]);
    }

    #[test]
    fn digits_without_a_space_are_an_lf_frame() {
        let mut f = Framer::new(100);
        let (out, _) = frames(&mut f, b"2023-10-11T22:14:15Z host app: x\n", false);
        assert_eq!(out, vec![Ok("2023-10-11T22:14:15Z host app: x".into())]);
        let (out, _) = frames(&mut f, b"0123 x\n", false);
        assert_eq!(out, vec![Err(Reject::Malformed)]);
    }

    /// Found by the `framing` fuzz target: a CRLF line of exactly `max_frame_bytes` was refused
    /// as oversize when a read ended between its CR and its LF, and delivered otherwise.
    #[test]
    fn a_full_size_crlf_line_split_between_cr_and_lf_is_delivered() {
        let mut f = Framer::new(3);
        let (out, used) = frames(&mut f, b"abc\r", false);
        assert_eq!((out, used), (vec![], 0));
        let (out, used) = frames(&mut f, b"abc\r\nnext\n", false);
        assert_eq!(out, vec![Ok("abc".into()), Err(Reject::Oversize)]);
        assert_eq!(used, 10);
        // One byte more than the limit, or no LF after the CR, is still oversize.
        let mut f = Framer::new(3);
        let (out, _) = frames(&mut f, b"abc\rx", false);
        assert_eq!(out, vec![Err(Reject::Oversize)]);
        let mut f = Framer::new(3);
        let (out, _) = frames(&mut f, b"abcd\r", false);
        assert_eq!(out, vec![Err(Reject::Oversize)]);
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        let mut seed = 0x2545F4914F6CDD1Du64;
        for _ in 0..2000 {
            let mut f = Framer::new(16);
            let mut buf = Vec::new();
            for _ in 0..64 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                buf.push(b"0123456789 \n\rab{"[(seed % 16) as usize]);
            }
            let mut pos = 0;
            while pos < buf.len() {
                let used = f.feed(&buf[pos..], false, |_| {});
                if used == 0 {
                    break;
                }
                pos += used;
            }
            f.feed(&buf[pos..], true, |_| {});
        }
    }
}
