//! A message → the tokens the template miner compares: split on whitespace, with what varies
//! between two occurrences of the same statement replaced by `<*>`.
//!
//! One set of rules for every source (operators cannot tune per source):
//! - an alphanumeric word that holds a digit is a value: `blk_-4213`, `10.0.0.1:50010`,
//!   `0x7fed806e`, `6.1.7601.23505`, `attempt_1445_m_0001` keep their letters-only words and
//!   lose the rest (`blk_<*>`, `<*>`, `<*>`, `<*>`, `attempt_<*>_m_<*>`); values joined by
//!   `.:-_/` become one `<*>`, and a sign before a value is part of it;
//! - a run of identical masked tokens is one token, so a list of any length (`@0x.. @0x..`)
//!   has one shape;
//! - a unit after a value (`12 ms`, `3.5 KB`) is part of the value.
//!
//! Tokens without a digit are kept as they are: whether a word is a variable is decided later,
//! by the miner, when two messages differ there.

use std::hash::BuildHasher;

/// The wildcard.
pub const WILDCARD: &str = "<*>";

/// Separators through which adjacent values join into one `<*>`.
fn joins(b: u8) -> bool {
    matches!(b, b'.' | b':' | b'-' | b'_' | b'/')
}

/// What the miner needs to know of a token besides its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenInfo {
    /// Hash of the masked text (keyed per miner): tokens are compared by it.
    pub hash: u64,
    /// Holds a `<*>`.
    pub is_value: bool,
    /// Letters and word punctuation only: two such tokens that differ make two templates.
    pub is_word: bool,
}

/// The masked tokens of one or more messages, as hashes: a batch is masked before the miner's
/// lock is taken, so that the costly part runs on every core at once. The masked text itself
/// is built only for a message that starts a template ([`masked`]), which is rare.
///
/// A `Tokens` remembers what the values it masked became ([`Cache`]): most tokens that hold a
/// digit recur verbatim (`HTTP/1.1`, `ssh2:`, `x86_64`, status codes), and a lookup is cheaper
/// than masking again. Reuse one per thread, with one hasher.
#[derive(Debug, Default)]
pub struct Tokens {
    info: Vec<TokenInfo>,
    scratch: Scratch,
    cache: Cache,
}

impl Tokens {
    pub fn len(&self) -> usize {
        self.info.len()
    }

    pub fn is_empty(&self) -> bool {
        self.info.is_empty()
    }

    pub fn info(&self) -> &[TokenInfo] {
        &self.info
    }

    pub fn clear(&mut self) {
        self.info.clear();
    }

    /// Mask `message` into `self` alone; `hasher` keys the token hashes.
    pub fn fill(&mut self, message: &str, hasher: &impl BuildHasher) {
        self.clear();
        self.append(message, hasher);
    }

    /// Mask `message` after what `self` holds; returns the indexes of its tokens.
    pub fn append(&mut self, message: &str, hasher: &impl BuildHasher) -> std::ops::Range<usize> {
        let first = self.info.len();
        let info = &mut self.info;
        scan(message.as_bytes(), hasher, &mut self.scratch, Some(&mut self.cache), &mut |t, _| info.push(t));
        first..self.info.len()
    }
}

/// The masked tokens of `message` as text, the same as [`Tokens::append`] hashes.
pub fn masked(message: &str) -> Vec<Box<str>> {
    let mut out = Vec::new();
    let hasher = foldhash::fast::FixedState::default();
    scan(message.as_bytes(), &hasher, &mut Scratch::default(), None, &mut |_, text| {
        out.push(String::from_utf8_lossy(text).into())
    });
    out
}

/// Buffers for the value being masked and the one before it (which a unit may still join).
#[derive(Debug, Default)]
struct Scratch {
    cur: Vec<u8>,
    prev: Vec<u8>,
}

/// Raw value token (by hash) → its masked hash, direct-mapped: a miss costs one probe, and a
/// token that stops recurring is overwritten by the next that lands on its slot.
#[derive(Debug, Default)]
struct Cache {
    /// Allocated on first use, so that an unused `Tokens` costs nothing.
    slots: Vec<CacheSlot>,
}

#[derive(Debug, Clone, Copy, Default)]
struct CacheSlot {
    raw: u64,
    masked: u64,
    ends_with_wildcard: bool,
    used: bool,
}

const CACHE_SLOTS: usize = 4096;

impl Cache {
    fn slot(&mut self, raw: u64) -> &mut CacheSlot {
        if self.slots.is_empty() {
            self.slots = vec![CacheSlot::default(); CACHE_SLOTS];
        }
        &mut self.slots[raw as usize % CACHE_SLOTS]
    }
}

/// A value held back until the next token shows whether a unit joins it.
struct Pending {
    hash: u64,
    ends_with_wildcard: bool,
    /// Where it is in the message.
    raw: (usize, usize),
    /// `Scratch::prev` holds its masked text.
    in_prev: bool,
}

/// Split `b` into tokens, mask each, and hand them to `emit` with their masked text when
/// `cache` is `None` (with a cache, the text of a token found in it is not rebuilt and
/// `emit` gets an empty slice for it).
///
/// One pass finds each token and classifies its bytes; only a token holding a digit is
/// rewritten (into the scratch buffer), the others are hashed as slices of `b`.
fn scan(
    b: &[u8],
    hasher: &impl BuildHasher,
    s: &mut Scratch,
    mut cache: Option<&mut Cache>,
    emit: &mut impl FnMut(TokenInfo, &[u8]),
) {
    let mut emitted = 0;
    let mut pending: Option<Pending> = None;
    // Hash of the last token, emitted or pending: a run of the same masked token is one token.
    let mut last: Option<u64> = None;
    let flush = |p: Pending, s: &Scratch, emit: &mut dyn FnMut(TokenInfo, &[u8])| {
        let info = TokenInfo { hash: p.hash, is_value: true, is_word: false };
        emit(info, if p.in_prev { &s.prev } else { &[] });
    };
    let mut i = 0;
    loop {
        while i < b.len() && class(b[i]) & SPACE != 0 {
            i += 1;
        }
        if i == b.len() || emitted + usize::from(pending.is_some()) >= MAX_TOKENS {
            break;
        }
        let start = i;
        let (mut any, mut all) = (0u8, WORD | NUMBER);
        while i < b.len() {
            let c = class(b[i]);
            if c & SPACE != 0 {
                break;
            }
            any |= c;
            all &= c;
            i += 1;
        }
        let raw = &b[start..i];
        if any & DIGIT != 0 {
            // A number, address or time (digits and separators only) seldom recurs verbatim:
            // masking it is cheaper than a cache lookup that would miss, and keeping it out
            // leaves the cache to the tokens that do recur.
            let (hash, ends_with_wildcard, in_cur) = match cache.as_deref_mut() {
                Some(cache) if all & NUMBER == 0 => {
                    let key = hasher.hash_one(raw);
                    let slot = cache.slot(key);
                    if slot.used && slot.raw == key {
                        (slot.masked, slot.ends_with_wildcard, false)
                    } else {
                        let (hash, ends) = mask_into(raw, &mut s.cur, hasher);
                        *slot = CacheSlot { raw: key, masked: hash, ends_with_wildcard: ends, used: true };
                        (hash, ends, true)
                    }
                }
                _ => {
                    let (hash, ends) = mask_into(raw, &mut s.cur, hasher);
                    (hash, ends, true)
                }
            };
            if last == Some(hash) {
                continue;
            }
            if let Some(p) = pending.take() {
                flush(p, s, emit);
                emitted += 1;
            }
            if in_cur {
                std::mem::swap(&mut s.cur, &mut s.prev);
            }
            pending = Some(Pending { hash, ends_with_wildcard, raw: (start, i), in_prev: in_cur });
            last = Some(hash);
            continue;
        }
        // A unit (with trailing punctuation) after a value belongs to it.
        if let Some(p) = &mut pending
            && p.ends_with_wildcard
        {
            let bare = trim_unit_punctuation(raw);
            if is_unit(bare) {
                if !p.in_prev {
                    s.prev.clear();
                    mask_value(&b[p.raw.0..p.raw.1], &mut s.prev);
                    p.in_prev = true;
                }
                s.prev.extend_from_slice(&raw[bare.len()..]);
                p.hash = hasher.hash_one(&s.prev[..]);
                p.ends_with_wildcard = s.prev.ends_with(WILDCARD.as_bytes());
                last = Some(p.hash);
                continue;
            }
        }
        if let Some(p) = pending.take() {
            flush(p, s, emit);
            emitted += 1;
        }
        let hash = hasher.hash_one(raw);
        emit(
            TokenInfo { hash, is_value: false, is_word: raw[0].is_ascii_alphabetic() && all & WORD != 0 },
            raw,
        );
        emitted += 1;
        last = Some(hash);
    }
    if let Some(p) = pending {
        flush(p, s, emit);
    }
}

/// Mask `raw` into `out` (cleared first); the masked text's hash and whether it ends in `<*>`.
fn mask_into(raw: &[u8], out: &mut Vec<u8>, hasher: &impl BuildHasher) -> (u64, bool) {
    out.clear();
    mask_value(raw, out);
    (hasher.hash_one(&out[..]), out.ends_with(WILDCARD.as_bytes()))
}

fn trim_unit_punctuation(mut t: &[u8]) -> &[u8] {
    while let [rest @ .., b',' | b'.' | b';' | b')'] = t {
        t = rest;
    }
    t
}

/// Tokens of a message that count for its template; the rest of a longer message is not
/// compared, which bounds a template's size whatever a sender writes.
pub const MAX_TOKENS: usize = 256;

/// Byte classes, as bits of [`CLASS`].
const DIGIT: u8 = 1;
/// A byte a plain word may hold: ASCII letters and `'.,:;()[]`.
const WORD: u8 = 2;
/// A byte of a run that is masked whole when it holds a digit: ASCII letters and digits, and
/// every byte of a non-ASCII character (so `Grüße` is one run; non-ASCII punctuation is rare
/// enough to be treated the same).
const RUN: u8 = 4;
/// What tokens are split on: ASCII whitespace (as `u8::is_ascii_whitespace`).
const SPACE: u8 = 8;
/// A byte of a number, address or time: ASCII digits and the separators values join through.
const NUMBER: u8 = 16;
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = if c.is_ascii_digit() {
            DIGIT | RUN | NUMBER
        } else if c.is_ascii_alphabetic() {
            WORD | RUN
        } else if matches!(c, b'.' | b':') {
            WORD | NUMBER
        } else if matches!(c, b'-' | b'_' | b'/') {
            NUMBER
        } else if matches!(c, b'\'' | b',' | b';' | b'(' | b')' | b'[' | b']') {
            WORD
        } else if c >= 0x80 {
            RUN
        } else if c.is_ascii_whitespace() {
            SPACE
        } else {
            0
        };
        i += 1;
    }
    t
};

fn class(b: u8) -> u8 {
    CLASS[b as usize]
}

fn is_unit(s: &[u8]) -> bool {
    matches!(
        s,
        b"B" | b"KB"
            | b"MB"
            | b"GB"
            | b"TB"
            | b"KiB"
            | b"MiB"
            | b"GiB"
            | b"ms"
            | b"us"
            | b"ns"
            | b"s"
            | b"sec"
            | b"secs"
            | b"bytes"
            | b"%"
    )
}

/// A stored template token described as [`Tokens::fill`] would have (for restoring a miner).
pub fn describe(token: &str, hasher: &impl BuildHasher) -> TokenInfo {
    let is_value = token.contains(WILDCARD);
    TokenInfo { hash: hasher.hash_one(token.as_bytes()), is_value, is_word: !is_value && is_word(token) }
}

/// Letters and the punctuation words carry (`bytes`, `End.`, `(null)`).
pub fn is_word(token: &str) -> bool {
    let b = token.as_bytes();
    b.first().is_some_and(u8::is_ascii_alphabetic) && b.iter().all(|&c| class(c) & WORD != 0)
}

/// Append `token`, which holds a digit, masked to `out`: each run of letters and digits that
/// holds a digit becomes `<*>`, other runs and punctuation are kept; values joined by a single
/// separator (`10.0.0.1:80`) become one `<*>`, and a sign right before a value is the value's.
fn mask_value(token: &[u8], out: &mut Vec<u8>) {
    out.reserve(token.len() + WILDCARD.len());
    let base = out.len();
    // The last thing written is a `<*>`, possibly followed by one joining separator (at that
    // offset in `out`).
    let mut after_value = false;
    let mut sep_after_value: Option<usize> = None;
    let n = token.len();
    let mut i = 0;
    while i < n {
        let start = i;
        if class(token[i]) & RUN == 0 {
            // A run of punctuation, copied whole.
            i += 1;
            while i < n && class(token[i]) & RUN == 0 {
                i += 1;
            }
            if after_value && i - start == 1 && joins(token[start]) {
                sep_after_value = Some(out.len());
            } else {
                after_value = false;
                sep_after_value = None;
            }
            out.extend_from_slice(&token[start..i]);
            continue;
        }
        let mut any = 0;
        while i < n {
            let c = class(token[i]);
            if c & RUN == 0 {
                break;
            }
            any |= c;
            i += 1;
        }
        if any & DIGIT == 0 {
            out.extend_from_slice(&token[start..i]);
            after_value = false;
            sep_after_value = None;
            continue;
        }
        if let Some(at) = sep_after_value {
            // `<*>.` + value: the separator and the value join the previous `<*>`.
            out.truncate(at);
        } else if !after_value {
            // A sign right before a value, itself after a non-word character, is the value's.
            let len = out.len();
            if len > base
                && matches!(out[len - 1], b'-' | b'+')
                && (len - 1 == base || class(out[len - 2]) & RUN == 0)
            {
                out.truncate(len - 1);
            }
            out.extend_from_slice(WILDCARD.as_bytes());
        }
        after_value = true;
        sep_after_value = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(msg: &str) -> Vec<String> {
        let text: Vec<String> = super::masked(msg).into_iter().map(String::from).collect();
        // The hashes are those of the text.
        let h = foldhash::fast::RandomState::default();
        let mut t = Tokens::default();
        t.fill(msg, &h);
        let hashes: Vec<u64> = t.info().iter().map(|i| i.hash).collect();
        assert_eq!(hashes, text.iter().map(|s| h.hash_one(s.as_bytes())).collect::<Vec<_>>(), "{msg}");
        text
    }

    #[test]
    fn values_are_masked_and_words_kept() {
        assert_eq!(
            masked("PacketResponder 1 for block blk_-6952295868487656571 terminating"),
            ["PacketResponder", "<*>", "for", "block", "blk_<*>", "terminating"]
        );
        assert_eq!(masked("Connected to 10.250.19.102:50010"), ["Connected", "to", "<*>"]);
        assert_eq!(masked("Session: 30546173_4261722401 initialized"), ["Session:", "<*>", "initialized"]);
        assert_eq!(
            masked("ambient=32 attempt_1445144423722_0020_m_000000_0"),
            ["ambient=<*>", "attempt_<*>_m_<*>"]
        );
        assert_eq!(
            masked("node node-23 via interface alt0"),
            ["node", "node-<*>", "via", "interface", "<*>"]
        );
        assert_eq!(masked("took -12 and (x-3)"), ["took", "<*>", "and", "(x-<*>)"]);
    }

    #[test]
    fn lists_collapse_and_units_join_their_value() {
        assert_eq!(masked("(stack @0x7fed806eb5d @0x7fef9fb9b6d @0xff83e97c)"), ["(stack", "@<*>", "@<*>)"]);
        assert_eq!(masked("a 1 2 3 b"), ["a", "<*>", "b"]);
        assert_eq!(
            masked("(estimated size 32.5 KB, free 317.5 MB)"),
            ["(estimated", "size", "<*>,", "free", "<*>)"]
        );
        assert_eq!(masked("in 12 ms"), ["in", "<*>"]);
        assert_eq!(masked("B is a letter"), ["B", "is", "a", "letter"]);
    }

    #[test]
    fn messages_appended_together_keep_their_own_tokens() {
        let h = foldhash::fast::RandomState::default();
        let mut t = Tokens::default();
        let a = t.append("took 5", &h);
        let b = t.append("7 KB left", &h);
        let c = t.append("", &h);
        let hashes = |r: std::ops::Range<usize>| r.map(|i| t.info()[i].hash).collect::<Vec<_>>();
        let of = |words: &[&str]| words.iter().map(|w| h.hash_one(w.as_bytes())).collect::<Vec<_>>();
        assert_eq!(hashes(a), of(&["took", "<*>"]));
        assert_eq!(hashes(b), of(&["<*>", "left"]), "no collapse or unit across messages");
        assert!(c.is_empty());
    }

    #[test]
    fn cached_values_hash_as_their_text() {
        let h = foldhash::fast::RandomState::default();
        let mut t = Tokens::default();
        let messages = [
            "took 12 ms, then 12 ms and 3.5 KB)",
            "took 12 ms 12 ms",
            "rv:128.0) Gecko/20100101 x86_64; 12 12 -3 +4",
            "12 ms",
            "x86_64; 12 ms. <*> 5 <*>",
        ];
        // Twice: the second round finds every value in the cache.
        for msg in messages.iter().chain(&messages) {
            let r = t.append(msg, &h);
            let got: Vec<u64> = t.info()[r].iter().map(|i| i.hash).collect();
            let want: Vec<u64> = super::masked(msg).iter().map(|s| h.hash_one(s.as_bytes())).collect();
            assert_eq!(got, want, "{msg}");
        }
    }

    #[test]
    fn long_messages_count_only_their_first_tokens() {
        let long = "word ".repeat(MAX_TOKENS + 50);
        assert_eq!(masked(&long).len(), MAX_TOKENS);
    }

    #[test]
    fn empty_and_unicode_messages() {
        assert!(masked("   ").is_empty());
        assert_eq!(masked("Grüße 3 Straße"), ["Grüße", "<*>", "Straße"]);
    }
}
