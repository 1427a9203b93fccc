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

/// The wildcard.
pub const WILDCARD: &str = "<*>";

/// Separators through which adjacent values join into one `<*>`.
fn joins(c: char) -> bool {
    matches!(c, '.' | ':' | '-' | '_' | '/')
}

/// Units absorbed by a value before them.
const UNITS: &[&str] =
    &["B", "KB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "ms", "us", "ns", "s", "sec", "secs", "bytes", "%"];

/// The masked tokens of one message, in one reused buffer.
#[derive(Debug, Default)]
pub struct Tokens {
    text: String,
    ends: Vec<usize>,
}

impl Tokens {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).map(|i| self.get(i))
    }

    fn last(&self) -> Option<&str> {
        self.len().checked_sub(1).map(|i| self.get(i))
    }

    /// Mask `message` into `self` (cleared first).
    pub fn fill(&mut self, message: &str) {
        self.text.clear();
        self.ends.clear();
        for raw in message.split_whitespace() {
            let start = self.text.len();
            mask_token(raw, &mut self.text);
            let token = &self.text[start..];
            let is_var = token.contains(WILDCARD);
            // A run of the same masked token is one token.
            if is_var && self.last() == Some(token) {
                self.text.truncate(start);
                continue;
            }
            // A unit (with trailing punctuation) after a value belongs to it.
            let bare = token.trim_end_matches([',', '.', ';', ')']);
            if !is_var && UNITS.contains(&bare) && self.last().is_some_and(|t| t.ends_with(WILDCARD)) {
                let tail = token[bare.len()..].to_owned();
                self.text.truncate(start);
                self.ends.pop();
                self.text.push_str(&tail);
                self.ends.push(self.text.len());
                continue;
            }
            self.ends.push(self.text.len());
        }
    }
}

/// Append `token` masked to `out`.
fn mask_token(token: &str, out: &mut String) {
    let base = out.len();
    // Whether the last thing written is a `<*>`, possibly followed by one joining separator.
    let mut after_value = false;
    let mut sep_after_value: Option<usize> = None;
    let mut chars = token.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c.is_alphanumeric() {
            let mut end = i + c.len_utf8();
            let mut digit = c.is_ascii_digit();
            while let Some(&(j, d)) = chars.peek() {
                if !d.is_alphanumeric() {
                    break;
                }
                digit |= d.is_ascii_digit();
                end = j + d.len_utf8();
                chars.next();
            }
            if !digit {
                out.push_str(&token[i..end]);
                after_value = false;
                sep_after_value = None;
                continue;
            }
            if let Some(at) = sep_after_value {
                // `<*>.` + value: the separator and the value join the previous `<*>`.
                out.truncate(at);
            } else if !after_value {
                // A sign right before a value, itself after a non-word character, is the value's.
                let bytes = out.as_bytes();
                let len = bytes.len();
                if len > base
                    && matches!(bytes[len - 1], b'-' | b'+')
                    && (len - 1 == base || !(bytes[len - 2] as char).is_alphanumeric())
                {
                    out.truncate(len - 1);
                }
                out.push_str(WILDCARD);
            }
            after_value = true;
            sep_after_value = None;
        } else {
            if after_value && sep_after_value.is_none() && joins(c) {
                sep_after_value = Some(out.len());
            } else {
                after_value = false;
                sep_after_value = None;
            }
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(msg: &str) -> Vec<String> {
        let mut t = Tokens::default();
        t.fill(msg);
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
    fn empty_and_unicode_messages() {
        assert!(masked("   ").is_empty());
        assert_eq!(masked("Grüße 3 Straße"), ["Grüße", "<*>", "Straße"]);
    }
}
