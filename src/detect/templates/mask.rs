//! A message → the tokens the template miner compares: split on whitespace, with what varies
//! between two occurrences of the same statement replaced by `<*>`.
//!
//! One set of rules for every source (operators cannot tune per source), each by the shape of a
//! token; [`MaskRules`] turns them off one by one for measuring:
//! - an alphanumeric word that holds a digit is a value: `blk_-4213`, `10.0.0.1:50010`,
//!   `0x7fed806e`, `6.1.7601.23505`, `attempt_1445_m_0001` keep their letters-only words and
//!   lose the rest (`blk_<*>`, `<*>`, `<*>`, `<*>`, `attempt_<*>_m_<*>`); values joined by
//!   `.:-_/` become one `<*>`, and a sign before a value is part of it;
//! - a dotted name is a value: `chrome.exe`, `man-db.service`, `org.acme.Main` (`names`);
//! - the value of a `key=value` field is a value, whatever it looks like, quoted with spaces
//!   included: `user=alice`, `msg="shim disconnected"` (`fields`);
//! - a run of identical masked tokens is one token, so a list of any length (`@0x.. @0x..`)
//!   has one shape (`runs`);
//! - a unit after a value (`12 ms`, `3.5 KB`) is part of the value (`units`).
//!
//! Other tokens are kept as they are: whether a word is a variable is decided later, by the
//! miner, from how it varies. A token says whether it is a plain word (letters and word
//! punctuation) and whether it is a code (capitals and `_`: `RUNNING`, `GET`).

use std::hash::BuildHasher;

/// The wildcard.
pub const WILDCARD: &str = "<*>";

/// Separators through which adjacent values join into one `<*>`.
fn joins(b: u8) -> bool {
    matches!(b, b'.' | b':' | b'-' | b'_' | b'/')
}

/// Which shapes besides digits make a value. Each can be turned off to measure what it is worth
/// (`cargo bench --bench templates`); the daemon runs with all on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaskRules {
    /// A dotted name is a value: `chrome.exe`, `mail.example.org`, `org.acme.Main`,
    /// `nginx.service` (letters or digits on both sides of each inner dot).
    pub names: bool,
    /// The value of a `key=value` field is a value, whatever its shape: `user=alice`,
    /// `state=running`, `(uid=0)`.
    pub fields: bool,
    /// A run of the same masked token is one token: a list of any length has one shape.
    pub runs: bool,
    /// A unit after a value is part of it: `12 ms`, `3.5 KB`.
    pub units: bool,
}

impl Default for MaskRules {
    fn default() -> Self {
        MaskRules { names: true, fields: true, runs: true, units: true }
    }
}

/// What the miner needs to know of a token besides its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenInfo {
    /// Hash of the masked text (keyed per miner): tokens are compared by it.
    pub hash: u64,
    /// Holds a `<*>`.
    pub is_value: bool,
    /// Is `<*>` itself: anything agrees with it in a template.
    pub is_wildcard: bool,
    /// Letters and word punctuation only: two such tokens that differ make two templates.
    pub is_word: bool,
    /// A word in capitals (`RUNNING`, `GET`, `FAILED`): a code, which names a state or a
    /// kind of event rather than someone or something.
    pub is_code: bool,
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
    rules: MaskRules,
    info: Vec<TokenInfo>,
    scratch: Scratch,
    cache: Cache,
}

impl Tokens {
    pub fn new(rules: MaskRules) -> Self {
        Tokens { rules, ..Tokens::default() }
    }

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
        let rules = self.rules;
        scan(message.as_bytes(), rules, hasher, &mut self.scratch, Some(&mut self.cache), &mut |t, _| {
            info.push(t)
        });
        first..self.info.len()
    }
}

/// The masked tokens of `message` as text, the same as [`Tokens::append`] hashes.
pub fn masked(message: &str, rules: MaskRules) -> Vec<Box<str>> {
    let mut out = Vec::new();
    let hasher = foldhash::fast::FixedState::default();
    scan(message.as_bytes(), rules, &hasher, &mut Scratch::default(), None, &mut |_, text| {
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
    wildcard: bool,
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
    /// Is `<*>` itself.
    wildcard: bool,
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
    rules: MaskRules,
    hasher: &impl BuildHasher,
    s: &mut Scratch,
    mut cache: Option<&mut Cache>,
    emit: &mut impl FnMut(TokenInfo, &[u8]),
) {
    let mut emitted = 0;
    let mut pending: Option<Pending> = None;
    // Hash of the last token, emitted or pending: a run of the same masked token is one token.
    let mut last: Option<u64> = None;
    let mut quotes = Quotes::default();
    let flush = |p: Pending, s: &Scratch, emit: &mut dyn FnMut(TokenInfo, &[u8])| {
        let info = TokenInfo {
            hash: p.hash,
            is_value: true,
            is_wildcard: p.wildcard,
            is_word: false,
            is_code: false,
        };
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
        if any & FIELD != 0
            && rules.fields
            && let Some(end) = quoted_field_end(b, start, i, &mut quotes)
        {
            // `msg="cleaning up dead shim"`: one field, one value, however many words.
            i = end;
            all = 0;
        }
        let raw = &b[start..i];
        if raw.len() > MAX_TOKEN_BYTES
            && !(rules.fields && any & FIELD != 0 && field_value(raw).is_some_and(|(at, _)| at <= 64))
        {
            // Data, whatever its shape: a template never holds a sender's kilobytes.
            let hash = hasher.hash_one(WILDCARD.as_bytes());
            if rules.runs && last == Some(hash) {
                continue;
            }
            if let Some(p) = pending.take() {
                flush(p, s, emit);
                emitted += 1;
            }
            s.prev.clear();
            s.prev.extend_from_slice(WILDCARD.as_bytes());
            pending = Some(Pending {
                hash,
                ends_with_wildcard: true,
                wildcard: true,
                raw: (start, i),
                in_prev: true,
            });
            last = Some(hash);
            continue;
        }
        if any & DIGIT != 0 || (any & (DOT | FIELD) != 0 && has_value_shape(raw, any, rules)) {
            // A number, address or time (digits and separators only) seldom recurs verbatim:
            // masking it is cheaper than a cache lookup that would miss, and keeping it out
            // leaves the cache to the tokens that do recur.
            let (hash, ends_with_wildcard, wildcard, in_cur) = match cache.as_deref_mut() {
                Some(cache) if all & NUMBER == 0 => {
                    let key = hasher.hash_one(raw);
                    let slot = cache.slot(key);
                    if slot.used && slot.raw == key {
                        (slot.masked, slot.ends_with_wildcard, slot.wildcard, false)
                    } else {
                        let (hash, ends, wildcard) = mask_into(raw, rules, any, &mut s.cur, hasher);
                        *slot = CacheSlot {
                            raw: key,
                            masked: hash,
                            ends_with_wildcard: ends,
                            wildcard,
                            used: true,
                        };
                        (hash, ends, wildcard, true)
                    }
                }
                _ => {
                    let (hash, ends, wildcard) = mask_into(raw, rules, any, &mut s.cur, hasher);
                    (hash, ends, wildcard, true)
                }
            };
            if rules.runs && last == Some(hash) {
                continue;
            }
            if let Some(p) = pending.take() {
                flush(p, s, emit);
                emitted += 1;
            }
            if in_cur {
                std::mem::swap(&mut s.cur, &mut s.prev);
            }
            pending = Some(Pending { hash, ends_with_wildcard, wildcard, raw: (start, i), in_prev: in_cur });
            last = Some(hash);
            continue;
        }
        // A unit (with trailing punctuation) after a value belongs to it.
        if let Some(p) = &mut pending
            && p.ends_with_wildcard
            && rules.units
        {
            let bare = trim_unit_punctuation(raw);
            if is_unit(bare) {
                if !p.in_prev {
                    s.prev.clear();
                    mask_value(&b[p.raw.0..p.raw.1], rules, DOT | FIELD, &mut s.prev);
                    p.in_prev = true;
                }
                s.prev.extend_from_slice(&raw[bare.len()..]);
                p.hash = hasher.hash_one(&s.prev[..]);
                p.ends_with_wildcard = s.prev.ends_with(WILDCARD.as_bytes());
                p.wildcard = s.prev == WILDCARD.as_bytes();
                last = Some(p.hash);
                continue;
            }
        }
        if let Some(p) = pending.take() {
            flush(p, s, emit);
            emitted += 1;
        }
        // A sender's literal `<*>` is text, not the wildcard: it is kept escaped as `<\*>`.
        let literal =
            all & WORD == 0 && raw.contains(&b'*') && raw.windows(3).any(|w| w == WILDCARD.as_bytes());
        let raw = match literal {
            true => {
                s.cur.clear();
                escape_wildcards(raw, &mut s.cur);
                &s.cur[..]
            }
            false => raw,
        };
        let hash = hasher.hash_one(raw);
        emit(
            {
                let is_code = any & LOWER == 0 && raw[0].is_ascii_uppercase() && is_code(raw);
                let is_word = is_code || (raw[0].is_ascii_alphabetic() && all & WORD != 0);
                TokenInfo { hash, is_value: false, is_wildcard: false, is_word, is_code }
            },
            raw,
        );
        emitted += 1;
        last = Some(hash);
    }
    if let Some(p) = pending {
        flush(p, s, emit);
    }
}

/// Mask `raw` into `out` (cleared first); the masked text's hash, whether it ends in `<*>`, and
/// whether it is `<*>`.
fn mask_into(
    raw: &[u8],
    rules: MaskRules,
    any: u8,
    out: &mut Vec<u8>,
    hasher: &impl BuildHasher,
) -> (u64, bool, bool) {
    out.clear();
    mask_value(raw, rules, any, out);
    (hasher.hash_one(&out[..]), out.ends_with(WILDCARD.as_bytes()), out == WILDCARD.as_bytes())
}

fn trim_unit_punctuation(mut t: &[u8]) -> &[u8] {
    while let [rest @ .., b',' | b'.' | b';' | b')'] = t {
        t = rest;
    }
    t
}

/// A token longer than this is a value, whatever its shape.
pub const MAX_TOKEN_BYTES: usize = 128;

/// `raw` into `out` with each `<*>` written `<\*>`.
fn escape_wildcards(mut raw: &[u8], out: &mut Vec<u8>) {
    while let Some(at) = raw.windows(3).position(|w| w == WILDCARD.as_bytes()) {
        out.extend_from_slice(&raw[..at]);
        out.extend_from_slice(b"<\\*>");
        raw = &raw[at + 3..];
    }
    out.extend_from_slice(raw);
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
/// `.`: a token holding one may be a dotted name ([`has_value_shape`]).
const DOT: u8 = 32;
/// Lower-case ASCII letters (a word without any is a code).
const LOWER: u8 = 64;
/// `=` and `"`: a token holding one may be a field, or open a quoted one.
const FIELD: u8 = 128;
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = if c.is_ascii_digit() {
            DIGIT | RUN | NUMBER
        } else if c.is_ascii_lowercase() {
            WORD | RUN | LOWER
        } else if c.is_ascii_alphabetic() {
            WORD | RUN
        } else if c == b'.' {
            WORD | NUMBER | DOT
        } else if c == b':' {
            WORD | NUMBER
        } else if matches!(c, b'=' | b'"') {
            FIELD
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

fn is_run(b: u8) -> bool {
    class(b) & RUN != 0
}

/// Whether `token`, which holds no digit and the byte classes `any`, is or holds a value by
/// `rules`: a dotted name, or a `key=value` field.
fn has_value_shape(token: &[u8], any: u8, rules: MaskRules) -> bool {
    (rules.fields && any & FIELD != 0 && field_value(token).is_some())
        || (rules.names && any & DOT != 0 && has_dotted_name(token))
}

/// Longest quoted field value followed across spaces ([`quoted_field_end`]).
const MAX_QUOTED: usize = 512;

/// What one message's search for closing quotes has found so far, so that tokens which open a
/// quote and never close it cost one pass over the message between them, not one each.
#[derive(Default)]
struct Quotes {
    /// Searched from `from` up to `to`: the first `"` there is at `found`.
    from: usize,
    to: usize,
    found: Option<usize>,
}

impl Quotes {
    /// The first `"` in `b[at..limit]`.
    fn first(&mut self, b: &[u8], at: usize, limit: usize) -> Option<usize> {
        if at >= self.from {
            match self.found {
                Some(q) if q >= at => return (q < limit).then_some(q),
                None if self.to >= limit => return None,
                _ => {}
            }
        }
        let start = if at >= self.from && self.found.is_none() { at.max(self.to) } else { at };
        let found = b[start..limit].iter().position(|&c| c == b'"').map(|q| start + q);
        *self = Quotes { from: at, to: limit, found };
        found
    }
}

/// When `b[start..end]` opens a quoted field value it does not close (`msg="cleaning`), the end
/// of the token that closes it (`shim"` or `shim",`), if within [`MAX_QUOTED`] bytes.
fn quoted_field_end(b: &[u8], start: usize, end: usize, quotes: &mut Quotes) -> Option<usize> {
    let token = &b[start..end];
    // The field's `=` (the first, as [`field_value`] takes it) opens the quote.
    let eq = token.iter().position(|&c| c == b'=')?;
    if eq == 0
        || !is_run(token[eq - 1])
        || token.get(eq + 1) != Some(&b'"')
        || token[eq + 2..].contains(&b'"')
    {
        return None;
    }
    let close = quotes.first(b, end, b.len().min(end + MAX_QUOTED))?;
    let after = close + b[close..].iter().position(|&c| class(c) & SPACE != 0).unwrap_or(b.len() - close);
    Some(after)
}

/// Where the value of a `key=value` field is in `token`: after the first `=` that follows a
/// letter or digit, up to the closing punctuation at its end; `None` if that is empty.
fn field_value(token: &[u8]) -> Option<(usize, usize)> {
    let eq = token.iter().position(|&c| c == b'=')?;
    if eq == 0 || !is_run(token[eq - 1]) {
        return None;
    }
    let value = trim_closing(&token[eq + 1..]);
    (!value.is_empty()).then_some((eq + 1, eq + 1 + value.len()))
}

fn trim_closing(mut t: &[u8]) -> &[u8] {
    while let [rest @ .., b',' | b';' | b')' | b']' | b'}' | b'.'] = t {
        t = rest;
    }
    t
}

/// Whether `token` holds a dotted name: a `.` with a letter or digit on each side.
fn has_dotted_name(token: &[u8]) -> bool {
    token.windows(3).any(|w| w[1] == b'.' && is_run(w[0]) && is_run(w[2]))
}

/// Where the name whose first run of letters and digits ends at `i` ends (it goes on through
/// single `.-_@`), and whether it holds an inner dot: `chrome.exe`, `man-db.service`,
/// `user@1000.service`.
fn dotted_name_end(token: &[u8], mut i: usize) -> (usize, bool) {
    let mut dotted = false;
    loop {
        match token.get(i..i + 2) {
            Some([sep @ (b'.' | b'-' | b'_' | b'@'), next]) if is_run(*next) => {
                dotted |= *sep == b'.';
                i += 1;
                while i < token.len() && is_run(token[i]) {
                    i += 1;
                }
            }
            _ => return (i, dotted),
        }
    }
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
    let is_code = !is_value && is_code(token.as_bytes());
    let is_word = is_code || (!is_value && is_word(token));
    let is_wildcard = token == WILDCARD;
    TokenInfo { hash: hasher.hash_one(token.as_bytes()), is_value, is_wildcard, is_word, is_code }
}

/// A code: capitals and `_` (and the punctuation words carry), at least two letters, such as
/// `RUNNING`, `GET`, `SUCCESS_CONTAINER_CLEANUP,`.
fn is_code(token: &[u8]) -> bool {
    token.first().is_some_and(u8::is_ascii_uppercase)
        && token.iter().filter(|c| c.is_ascii_uppercase()).count() > 1
        && token.iter().all(|&c| {
            c.is_ascii_uppercase() || c == b'_' || (class(c) & WORD != 0 && !c.is_ascii_alphabetic())
        })
}

/// Letters and the punctuation words carry (`bytes`, `End.`, `(null)`).
pub fn is_word(token: &str) -> bool {
    let b = token.as_bytes();
    b.first().is_some_and(u8::is_ascii_alphabetic) && b.iter().all(|&c| class(c) & WORD != 0)
}

/// Append `token`, which holds a digit, masked to `out`: each run of letters and digits that
/// holds a digit becomes `<*>`, other runs and punctuation are kept; values joined by a single
/// separator (`10.0.0.1:80`) become one `<*>`, and a sign right before a value is the value's.
fn mask_value(token: &[u8], rules: MaskRules, any: u8, out: &mut Vec<u8>) {
    out.reserve(token.len() + WILDCARD.len());
    if rules.fields
        && any & FIELD != 0
        && let Some((start, end)) = field_value(token)
    {
        out.extend_from_slice(&token[..start]);
        out.extend_from_slice(WILDCARD.as_bytes());
        out.extend_from_slice(&token[end..]);
        return;
    }
    let base = out.len();
    let names = rules.names && any & DOT != 0;
    // Where the last name found without an inner dot ends: no run before it starts one.
    let mut undotted_until = 0;
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
        while i < n && is_run(token[i]) {
            any |= class(token[i]);
            i += 1;
        }
        // A dotted name is one value, through its inner `-_@` too: `man-db.service`.
        // (A run holding a digit is a value already, and joins what follows through `.`.)
        if names && any & DIGIT == 0 && i >= undotted_until {
            match dotted_name_end(token, i) {
                (end, true) => {
                    any = DIGIT;
                    i = end;
                }
                (end, false) => undotted_until = end,
            }
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
        let text: Vec<String> =
            super::masked(msg, MaskRules::default()).into_iter().map(String::from).collect();
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
            let want: Vec<u64> =
                super::masked(msg, MaskRules::default()).iter().map(|s| h.hash_one(s.as_bytes())).collect();
            assert_eq!(got, want, "{msg}");
        }
    }

    #[test]
    fn dotted_names_are_values() {
        assert_eq!(
            masked("chrome.exe - proxy.example.org:5070 close, 1190 bytes sent"),
            ["<*>", "-", "<*>", "close,", "<*>", "sent"]
        );
        assert_eq!(masked("man-db.service: Succeeded."), ["<*>:", "Succeeded."]);
        assert_eq!(masked("Started user@1000.service."), ["Started", "<*>."]);
        assert_eq!(masked("5 (n.leader), at java.lang.Thread.run"), ["<*>", "(<*>),", "at", "<*>"]);
        // A dot that ends a sentence or stands alone joins nothing.
        assert_eq!(masked("End. of ... story."), ["End.", "of", "...", "story."]);
    }

    #[test]
    fn field_values_are_values_quoted_or_not() {
        assert_eq!(
            masked("status=ok pod=api (uid=0) logname= tty=ssh a==b"),
            ["status=<*>", "pod=<*>", "(uid=<*>)", "logname=", "tty=<*>", "a=<*>"]
        );
        assert_eq!(
            masked(r#"level=info msg="cleaning up dead shim" container=ab namespace=moby"#),
            ["level=<*>", "msg=<*>", "container=<*>", "namespace=<*>"]
        );
        assert_eq!(masked(r#"tag="View Lock", name=x"#), ["tag=<*>,", "name=<*>"]);
        // A quote never closed is not followed: the rest of the message keeps its words.
        assert_eq!(masked(r#"msg="never closed here"#), ["msg=<*>", "closed", "here"]);
        // `=` with nothing before it is not a field.
        assert_eq!(masked("== done"), ["==", "done"]);
    }

    #[test]
    fn unclosed_quotes_cost_one_pass() {
        // Each `k="` searches on for its closing quote; what one found is not searched again.
        let mut q = Quotes::default();
        let b = b"a=\"x b=\"y c d \" e";
        assert_eq!(q.first(b, 4, b.len()), Some(7));
        assert_eq!(q.first(b, 8, b.len()), Some(14));
        assert_eq!(q.first(b, 9, b.len()), Some(14));
        assert_eq!(q.first(b, 9, 12), None);
        assert_eq!(q.first(b, 15, b.len()), None);
        assert_eq!(q.first(b, 16, b.len()), None);
        let hostile = "k=\"x ".repeat(2000);
        assert_eq!(masked(&hostile).len(), 1, "one token, repeated");
        let quoted = format!("{hostile}end\"");
        assert!(masked(&quoted).len() <= MAX_TOKENS);
    }

    #[test]
    fn words_in_capitals_are_codes() {
        let h = foldhash::fast::RandomState::default();
        let mut t = Tokens::default();
        t.fill("RUNNING SUCCESS_CONTAINER_CLEANUP, Running A GET x_Y OK.", &h);
        let codes: Vec<(bool, bool)> = t.info().iter().map(|i| (i.is_word, i.is_code)).collect();
        assert_eq!(
            codes,
            [
                (true, true),
                (true, true),
                (true, false),
                (true, false),
                (true, true),
                (false, false),
                (true, true)
            ]
        );
    }

    #[test]
    fn each_rule_can_be_turned_off() {
        let none = MaskRules { names: false, fields: false, runs: false, units: false };
        let text = |msg: &str| super::masked(msg, none).into_iter().map(String::from).collect::<Vec<_>>();
        assert_eq!(text("chrome.exe state=ok"), ["chrome.exe", "state=ok"]);
        assert_eq!(text("a 1 2 in 12 ms"), ["a", "<*>", "<*>", "in", "<*>", "ms"]);
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
