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

/// A byte of a word: ASCII letters and digits, and every byte of a non-ASCII character (so
/// `Grüße` is one word; non-ASCII punctuation is rare enough to be treated the same).
fn word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80
}

/// What the miner needs to know of a token besides its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenInfo {
    start: usize,
    end: usize,
    /// Hash of the text (keyed per miner): tokens are compared by it.
    pub hash: u64,
    /// Holds a `<*>`.
    pub is_value: bool,
    /// Letters and word punctuation only: two such tokens that differ make two templates.
    pub is_word: bool,
}

/// The masked tokens of one or more messages, in one reused buffer: a batch is masked
/// before the miner's lock is taken, so that the costly part runs on every core at once.
#[derive(Debug, Default)]
pub struct Tokens {
    text: String,
    info: Vec<TokenInfo>,
    /// Index of the first token of the message being appended.
    first: usize,
}

impl Tokens {
    pub fn len(&self) -> usize {
        self.info.len()
    }

    pub fn is_empty(&self) -> bool {
        self.info.is_empty()
    }

    pub fn get(&self, i: usize) -> &str {
        &self.text[self.info[i].start..self.info[i].end]
    }

    pub fn info(&self) -> &[TokenInfo] {
        &self.info
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).map(|i| self.get(i))
    }

    /// The last token of the message being appended.
    fn last(&self) -> Option<&str> {
        (self.info.len() > self.first).then(|| self.get(self.info.len() - 1))
    }

    /// Room for `bytes` of message text in `tokens` tokens without reallocating.
    pub fn with_capacity(bytes: usize, tokens: usize) -> Self {
        Tokens { text: String::with_capacity(bytes), info: Vec::with_capacity(tokens), first: 0 }
    }

    pub fn clear(&mut self) {
        self.text.clear();
        self.info.clear();
        self.first = 0;
    }

    /// Mask `message` into `self` alone; `hasher` keys the token hashes.
    pub fn fill(&mut self, message: &str, hasher: &impl BuildHasher) {
        self.clear();
        self.append(message, hasher);
    }

    /// Mask `message` after what `self` holds; returns the indexes of its tokens.
    ///
    /// One pass over the bytes finds each token and classifies it; only tokens holding a
    /// digit are masked, the rest are copied as they are.
    pub fn append(&mut self, message: &str, hasher: &impl BuildHasher) -> std::ops::Range<usize> {
        self.first = self.info.len();
        let b = message.as_bytes();
        let mut i = 0;
        loop {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i == b.len() || self.info.len() - self.first >= MAX_TOKENS {
                break;
            }
            let raw_start = i;
            let (mut any, mut all) = (0u8, WORD);
            while i < b.len() && !b[i].is_ascii_whitespace() {
                let c = CLASS[b[i] as usize];
                any |= c;
                all &= c;
                i += 1;
            }
            let raw = &message[raw_start..i];
            let start = self.text.len();
            if any & DIGIT != 0 {
                mask_value(raw, &mut self.text);
                // A run of the same masked token is one token.
                if self.last() == Some(&self.text[start..]) {
                    self.text.truncate(start);
                    continue;
                }
                self.push(start, true, false, hasher);
                continue;
            }
            // A unit (with trailing punctuation) after a value belongs to it.
            let bare = raw.trim_end_matches([',', '.', ';', ')']);
            if is_unit(bare) && self.last().is_some_and(|t| t.ends_with(WILDCARD)) {
                self.text.push_str(&raw[bare.len()..]);
                if let Some(prev) = self.info.pop() {
                    self.push(prev.start, true, false, hasher);
                }
                continue;
            }
            self.text.push_str(raw);
            // `is_word(raw)`, from the classes already gathered.
            let word = b[raw_start].is_ascii_alphabetic() && all == WORD;
            self.push(start, false, word, hasher);
        }
        self.first..self.info.len()
    }

    fn push(&mut self, start: usize, is_value: bool, is_word: bool, hasher: &impl BuildHasher) {
        let token = &self.text[start..];
        self.info.push(TokenInfo {
            start,
            end: self.text.len(),
            hash: hasher.hash_one(token.as_bytes()),
            is_value,
            is_word,
        });
    }
}

/// Tokens of a message that count for its template; the rest of a longer message is not
/// compared, which bounds a template's size whatever a sender writes.
pub const MAX_TOKENS: usize = 256;

const DIGIT: u8 = 1;
/// A byte a word may hold: ASCII letters and `'.,:;()[]`.
const WORD: u8 = 2;
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = if c.is_ascii_digit() {
            DIGIT
        } else if c.is_ascii_alphabetic()
            || matches!(c, b'\'' | b'.' | b',' | b':' | b';' | b'(' | b')' | b'[' | b']')
        {
            WORD
        } else {
            0
        };
        i += 1;
    }
    t
};

fn is_unit(s: &str) -> bool {
    matches!(
        s,
        "B" | "KB"
            | "MB"
            | "GB"
            | "TB"
            | "KiB"
            | "MiB"
            | "GiB"
            | "ms"
            | "us"
            | "ns"
            | "s"
            | "sec"
            | "secs"
            | "bytes"
            | "%"
    )
}

/// A stored template token described as [`Tokens::fill`] would have (for restoring a miner).
pub fn describe(token: &str, hasher: &impl BuildHasher) -> TokenInfo {
    let is_value = token.contains(WILDCARD);
    TokenInfo {
        start: 0,
        end: 0,
        hash: hasher.hash_one(token.as_bytes()),
        is_value,
        is_word: !is_value && is_word(token),
    }
}

/// Letters and the punctuation words carry (`bytes`, `End.`, `(null)`).
pub fn is_word(token: &str) -> bool {
    let b = token.as_bytes();
    b.first().is_some_and(u8::is_ascii_alphabetic) && b.iter().all(|&c| CLASS[c as usize] == WORD)
}

/// Append `token`, which holds a digit, masked to `out`.
fn mask_value(token: &str, out: &mut String) {
    let bytes = token.as_bytes();
    let base = out.len();
    // The last thing written is a `<*>`, possibly followed by one joining separator (at that
    // offset in `out`).
    let mut after_value = false;
    let mut sep_after_value: Option<usize> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !word_byte(b) {
            // A run of punctuation (ASCII: every non-ASCII byte is a word byte), copied whole.
            let start = i;
            while i < bytes.len() && !word_byte(bytes[i]) {
                i += 1;
            }
            if after_value && i - start == 1 && joins(b) {
                sep_after_value = Some(out.len());
            } else {
                after_value = false;
                sep_after_value = None;
            }
            out.push_str(&token[start..i]);
            continue;
        }
        let start = i;
        let mut digit = false;
        while i < bytes.len() && word_byte(bytes[i]) {
            digit |= bytes[i].is_ascii_digit();
            i += 1;
        }
        if !digit {
            out.push_str(&token[start..i]);
            after_value = false;
            sep_after_value = None;
            continue;
        }
        if let Some(at) = sep_after_value {
            // `<*>.` + value: the separator and the value join the previous `<*>`.
            out.truncate(at);
        } else if !after_value {
            // A sign right before a value, itself after a non-word character, is the value's.
            let o = out.as_bytes();
            let len = o.len();
            if len > base && matches!(o[len - 1], b'-' | b'+') && (len - 1 == base || !word_byte(o[len - 2]))
            {
                out.truncate(len - 1);
            }
            out.push_str(WILDCARD);
        }
        after_value = true;
        sep_after_value = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(msg: &str) -> Vec<String> {
        let mut t = Tokens::default();
        t.fill(msg, &foldhash::fast::RandomState::default());
        t.iter().map(str::to_owned).collect()
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
        let text = |r: std::ops::Range<usize>| r.map(|i| t.get(i).to_owned()).collect::<Vec<_>>();
        assert_eq!(text(a), ["took", "<*>"]);
        assert_eq!(text(b), ["<*>", "left"], "no collapse or unit across messages");
        assert!(c.is_empty());
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
