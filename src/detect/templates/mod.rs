//! Online log template mining: each message is matched to a template (its constant words, with
//! `<*>` where values go) or starts a new one, in one pass, with memory bounded by the number of
//! templates rather than the number of messages.
//!
//! The shape is Drain's fixed-depth parse tree: messages are bucketed by token count, then by
//! their first tokens (a token holding a value goes down the `<*>` branch), and a leaf holds the
//! few templates to compare against. A message joins the most similar template if at least
//! `similarity` of its positions agree (a `<*>` agrees with anything) and it differs from it
//! in no plain word: two messages that differ only in `bytes` / `values`, or in `Begin` / `End`,
//! are two statements, not one with a variable. Positions where a joining message differs
//! become `<*>`. Templates are never merged or split afterwards, so a template's id is stable
//! and the id given to a message is final.

pub mod mask;
pub mod shared;
pub mod table;

use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;

pub use mask::{TokenInfo, Tokens, WILDCARD};
pub use shared::{Shared, TemplateMetrics, TemplatesError};

/// `batch` with `template_id` filled in by `templates`, or as it is without a miner.
pub fn stamp(
    batch: arrow::array::RecordBatch,
    templates: Option<&Shared>,
) -> Result<arrow::array::RecordBatch, arrow::error::ArrowError> {
    match templates {
        Some(t) => t.stamp(batch),
        None => Ok(batch),
    }
}

/// Tuning, the same for every source.
#[derive(Debug, Clone)]
pub struct MinerConfig {
    /// Tree depth: the token-count level, then `depth - 2` levels of leading tokens.
    pub depth: usize,
    /// Share of positions that must agree for a message to join a template.
    pub similarity: f64,
    /// Children per tree node; beyond it new tokens share the `<*>` branch.
    pub max_children: usize,
    /// Templates at most; beyond it, messages that match none get [`OVERFLOW`].
    pub max_templates: usize,
    /// A message that differs from a template in a plain word (letters only) never joins it:
    /// `bytes` / `values` or `Begin` / `End` make two statements.
    pub words_split: bool,
}

impl Default for MinerConfig {
    fn default() -> Self {
        MinerConfig {
            depth: 4,
            similarity: 0.6,
            max_children: 100,
            max_templates: 100_000,
            words_split: true,
        }
    }
}

/// Template ids start at 1; 0 means "no template" (the template table is full).
pub type TemplateId = u32;
pub const OVERFLOW: TemplateId = 0;

/// One template and what has been seen of it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Template {
    pub id: TemplateId,
    pub tokens: Vec<Box<str>>,
    pub count: u64,
    /// Event times (ns since the epoch) of the first and the latest message.
    pub first_seen: i64,
    pub last_seen: i64,
    /// The first message that matched.
    pub example: String,
}

impl Template {
    /// The tokens joined by spaces, e.g. `Receiving block blk_<*> src: <*> dest: <*>`.
    pub fn pattern(&self) -> String {
        self.tokens.join(" ")
    }
}

/// What [`Miner::add`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// The message started a new template.
    New(TemplateId),
    /// The message matched a template (which may have gained a `<*>`).
    Known(TemplateId),
}

impl Match {
    pub fn id(self) -> TemplateId {
        match self {
            Match::New(id) | Match::Known(id) => id,
        }
    }
}

/// A template position as compared: by the hash of its token.
#[derive(Debug, Clone, Copy)]
struct Slot {
    hash: u64,
    wildcard: bool,
    word: bool,
}

#[derive(Debug, Default)]
struct Node {
    /// Keyed by the hash of the token (`Miner::wildcard_hash` for the `<*>` branch).
    children: HashMap<u64, Node, RandomState>,
    /// Indexes into `Miner::templates`, at the leaves.
    templates: Vec<usize>,
}

#[derive(Debug)]
pub struct Miner {
    cfg: MinerConfig,
    by_length: HashMap<usize, Node, RandomState>,
    templates: Vec<Template>,
    /// Each template's positions, compared as hashes (parallel to `templates`).
    slots: Vec<Vec<Slot>>,
    /// Keys the token hashes, per process, so that nobody can make two tokens collide.
    hasher: RandomState,
    wildcard_hash: u64,
    scratch: Tokens,
    /// Token sequences seen lately and the template each matched exactly, valid while
    /// `generation` has not moved ([`Recent`]).
    recent: Vec<Recent>,
    /// Bumped whenever a template is created or gains a `<*>`.
    generation: u64,
}

/// A masked token sequence (by [`sequence_key`]) that matched template `index` in every
/// position. While no template changes, the tree would give that sequence the same template
/// again, so the lookup is skipped: most messages repeat a shape seen moments before.
#[derive(Debug, Clone, Copy, Default)]
struct Recent {
    key: u64,
    generation: u64,
    index: u32,
}

const RECENT_SLOTS: usize = 1024;

/// A key for a sequence of token hashes (themselves keyed per miner).
fn sequence_key(info: &[TokenInfo]) -> u64 {
    info.iter()
        .fold(info.len() as u64, |h, t| (h ^ t.hash).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29))
}

impl Default for Miner {
    fn default() -> Self {
        Miner::new(MinerConfig::default())
    }
}

impl Miner {
    pub fn new(cfg: MinerConfig) -> Self {
        let hasher = RandomState::default();
        let wildcard_hash = hasher.hash_one(WILDCARD.as_bytes());
        Miner {
            cfg,
            by_length: HashMap::default(),
            templates: Vec::new(),
            slots: Vec::new(),
            hasher,
            wildcard_hash,
            scratch: Tokens::default(),
            recent: vec![Recent::default(); RECENT_SLOTS],
            // Above the empty slots' 0, so that they never match.
            generation: 1,
        }
    }

    /// A miner that knows `templates` (as saved from an earlier one) under the same ids.
    pub fn restore(cfg: MinerConfig, mut templates: Vec<Template>) -> Self {
        let mut m = Miner::new(cfg);
        templates.sort_by_key(|t| t.id);
        for t in templates {
            // Ids are 1..=n in order; anything else was not written by this miner.
            if t.id as usize != m.templates.len() + 1 || m.templates.len() >= m.cfg.max_templates {
                continue;
            }
            let info: Vec<TokenInfo> = t.tokens.iter().map(|tok| mask::describe(tok, &m.hasher)).collect();
            let wildcard = m.wildcard_hash;
            let node = leaf(&mut m.by_length, &m.cfg, wildcard, &info);
            node.templates.push(m.templates.len());
            m.slots.push(
                info.iter()
                    .map(|i| Slot { hash: i.hash, wildcard: i.hash == wildcard, word: i.is_word })
                    .collect(),
            );
            m.templates.push(t);
        }
        m
    }

    pub fn templates(&self) -> &[Template] {
        &self.templates
    }

    pub fn get(&self, id: TemplateId) -> Option<&Template> {
        (id as usize).checked_sub(1).and_then(|i| self.templates.get(i))
    }

    /// Match `message` (an event at `time_ns`) to a template, learning as it goes.
    pub fn add(&mut self, message: &str, time_ns: i64) -> Match {
        let mut tokens = std::mem::take(&mut self.scratch);
        tokens.fill(message, &self.hasher);
        let m = self.add_masked(&tokens, 0..tokens.len(), message, time_ns);
        self.scratch = tokens;
        m
    }

    /// The hasher that [`Tokens`] given to [`Miner::add_masked`] must be filled with.
    pub fn hasher(&self) -> &RandomState {
        &self.hasher
    }

    /// [`Miner::add`] for a message already masked: its tokens are `tokens[range]`.
    pub fn add_masked(
        &mut self,
        tokens: &Tokens,
        range: std::ops::Range<usize>,
        message: &str,
        time_ns: i64,
    ) -> Match {
        let wildcard = self.wildcard_hash;
        let info = &tokens.info()[range.clone()];
        let key = sequence_key(info);
        let recent = self.recent[key as usize % RECENT_SLOTS];
        if recent.key == key
            && recent.generation == self.generation
            && matches_exactly(&self.slots[recent.index as usize], info)
        {
            let t = &mut self.templates[recent.index as usize];
            t.count += 1;
            t.first_seen = t.first_seen.min(time_ns);
            t.last_seen = t.last_seen.max(time_ns);
            return Match::Known(t.id);
        }
        let node = leaf(&mut self.by_length, &self.cfg, wildcard, info);

        let best = best_candidate(&self.slots, &node.templates, info, self.cfg.words_split);
        if let Some((i, sim, _)) = best
            && sim >= self.cfg.similarity
        {
            let t = &mut self.templates[i];
            let mut changed = false;
            for (pos, (slot, token)) in self.slots[i].iter_mut().zip(info).enumerate() {
                if !slot.wildcard && slot.hash != token.hash {
                    *slot = Slot { hash: wildcard, wildcard: true, word: false };
                    t.tokens[pos] = WILDCARD.into();
                    changed = true;
                }
            }
            self.generation += u64::from(changed);
            self.recent[key as usize % RECENT_SLOTS] =
                Recent { key, generation: self.generation, index: i as u32 };
            t.count += 1;
            t.first_seen = t.first_seen.min(time_ns);
            t.last_seen = t.last_seen.max(time_ns);
            return Match::Known(t.id);
        }
        if self.templates.len() >= self.cfg.max_templates {
            return Match::Known(OVERFLOW);
        }
        let id = self.templates.len() as TemplateId + 1;
        self.generation += 1;
        self.recent[key as usize % RECENT_SLOTS] =
            Recent { key, generation: self.generation, index: self.templates.len() as u32 };
        node.templates.push(self.templates.len());
        self.slots.push(
            info.iter()
                .map(|t| Slot { hash: t.hash, wildcard: t.hash == wildcard, word: t.is_word })
                .collect(),
        );
        let text = mask::masked(message);
        debug_assert!(
            text.len() == info.len()
                && text.iter().zip(info).all(|(t, i)| self.hasher.hash_one(t.as_bytes()) == i.hash),
            "the text of {message:?} is what was hashed"
        );
        self.templates.push(Template {
            id,
            tokens: text,
            count: 1,
            first_seen: time_ns,
            last_seen: time_ns,
            example: example(message),
        });
        Match::New(id)
    }
}

/// Why a message gets the template it gets, as [`Miner::explain`] tells it before the miner
/// learns from the message.
#[derive(Debug, Clone, PartialEq)]
pub enum Explanation {
    /// Every position agrees with template `id` (a `<*>` agrees with anything).
    Matches { id: TemplateId },
    /// Joins template `id`: `similarity` of the positions agree, at least the threshold, and
    /// no plain word differs; the positions in `generalized` (0-based, with the template's
    /// token and the message's) become `<*>`.
    Joins { id: TemplateId, similarity: f64, threshold: f64, generalized: Vec<(usize, String, String)> },
    /// Starts a template: no template has this many tokens and these leading words.
    NoCandidate { tokens: usize },
    /// Starts a template: the closest candidate, `id`, differs in the plain word at `position`
    /// (the template's word, the message's), and two words make two statements.
    WordDiffers { id: TemplateId, position: usize, template: String, message: String },
    /// Starts a template: the closest candidate, `id`, agrees in too few positions.
    TooDifferent { id: TemplateId, similarity: f64, threshold: f64 },
    /// The template table is full.
    Overflow,
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Explanation::Matches { id } => write!(f, "matches template {id} in every position"),
            Explanation::Joins { id, similarity, threshold, generalized } => {
                write!(
                    f,
                    "joins template {id}: {similarity:.2} of positions agree (threshold {threshold:.2})"
                )?;
                for (pos, was, now) in generalized {
                    write!(f, "; token {} {was:?} vs {now:?} becomes <*>", pos + 1)?;
                }
                Ok(())
            }
            Explanation::NoCandidate { tokens } => {
                write!(f, "new template: none has {tokens} tokens and the same leading words")
            }
            Explanation::WordDiffers { id, position, template, message } => write!(
                f,
                "new template: closest is {id}, but token {} is the word {message:?} where it has {template:?} (different words, different statements)",
                position + 1
            ),
            Explanation::TooDifferent { id, similarity, threshold } => write!(
                f,
                "new template: closest is {id}, but only {similarity:.2} of positions agree (threshold {threshold:.2})"
            ),
            Explanation::Overflow => write!(f, "no template: the template table is full (max_templates)"),
        }
    }
}

impl Miner {
    /// Why [`Miner::add`] would give `message` the template it would, without learning from it.
    pub fn explain(&self, message: &str) -> Explanation {
        let mut tokens = Tokens::default();
        tokens.fill(message, &self.hasher);
        let info = tokens.info();
        let Some(node) = find_leaf(&self.by_length, &self.cfg, self.wildcard_hash, info) else {
            return self.new_one(Explanation::NoCandidate { tokens: info.len() });
        };
        let best = best_candidate(&self.slots, &node.templates, info, self.cfg.words_split);
        let text = mask::masked(message);
        let token_at =
            |tokens: &[Box<str>], pos: usize| tokens.get(pos).map(|t| t.to_string()).unwrap_or_default();
        if let Some((i, sim, _)) = best
            && sim >= self.cfg.similarity
        {
            let id = self.templates[i].id;
            let generalized: Vec<(usize, String, String)> = self.slots[i]
                .iter()
                .zip(info)
                .enumerate()
                .filter(|(_, (slot, t))| !slot.wildcard && slot.hash != t.hash)
                .map(|(pos, _)| (pos, token_at(&self.templates[i].tokens, pos), token_at(&text, pos)))
                .collect();
            return match generalized.is_empty() {
                true => Explanation::Matches { id },
                false => {
                    Explanation::Joins { id, similarity: sim, threshold: self.cfg.similarity, generalized }
                }
            };
        }
        // The candidate agreeing in most positions, the plain-word rule aside: what kept the
        // message from it.
        let share = |i: usize| similarity(&self.slots[i], info, false).map_or(0.0, |(s, _)| s);
        let closest = node.templates.iter().copied().max_by(|&a, &b| share(a).total_cmp(&share(b)));
        let Some(i) = closest else {
            return self.new_one(Explanation::NoCandidate { tokens: info.len() });
        };
        let id = self.templates[i].id;
        self.new_one(match similarity(&self.slots[i], info, self.cfg.words_split) {
            Err(position) => Explanation::WordDiffers {
                id,
                position,
                template: token_at(&self.templates[i].tokens, position),
                message: token_at(&text, position),
            },
            Ok((similarity, _)) => {
                Explanation::TooDifferent { id, similarity, threshold: self.cfg.similarity }
            }
        })
    }

    /// `why`, unless no new template can be made.
    fn new_one(&self, why: Explanation) -> Explanation {
        match self.templates.len() >= self.cfg.max_templates {
            true => Explanation::Overflow,
            false => why,
        }
    }
}

/// The leaf [`leaf`] would give these tokens, if it exists, without making it.
fn find_leaf<'a>(
    by_length: &'a HashMap<usize, Node, RandomState>,
    cfg: &MinerConfig,
    wildcard: u64,
    info: &[TokenInfo],
) -> Option<&'a Node> {
    let mut node = by_length.get(&info.len())?;
    for t in info.iter().take(cfg.depth.saturating_sub(2)) {
        node = node.children.get(&branch(node, t, cfg, wildcard))?;
    }
    Some(node)
}

/// The leaf for a message of these tokens: by token count, then by the leading tokens (a value
/// goes down the `<*>` branch, as does any new token once a node is full).
fn leaf<'a>(
    by_length: &'a mut HashMap<usize, Node, RandomState>,
    cfg: &MinerConfig,
    wildcard: u64,
    info: &[TokenInfo],
) -> &'a mut Node {
    let mut node = by_length.entry(info.len()).or_default();
    for t in info.iter().take(cfg.depth.saturating_sub(2)) {
        let key = branch(node, t, cfg, wildcard);
        node = node.children.entry(key).or_default();
    }
    node
}

/// The child of `node` that token `t` goes down: its own, or the `<*>` branch for a value or
/// for a new token once `node` is full.
fn branch(node: &Node, t: &TokenInfo, cfg: &MinerConfig, wildcard: u64) -> u64 {
    let key = if t.is_value { wildcard } else { t.hash };
    match key != wildcard && !node.children.contains_key(&key) && node.children.len() >= cfg.max_children {
        true => wildcard,
        false => key,
    }
}

/// Longest example kept per template.
const MAX_EXAMPLE_BYTES: usize = 1024;

/// `message`, cut at a character boundary to at most [`MAX_EXAMPLE_BYTES`].
fn example(message: &str) -> String {
    let mut end = message.len().min(MAX_EXAMPLE_BYTES);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_owned()
}

/// Whether every position of `tokens` agrees with `template` (a `<*>` agrees with anything).
fn matches_exactly(template: &[Slot], tokens: &[TokenInfo]) -> bool {
    template.len() == tokens.len() && template.iter().zip(tokens).all(|(s, t)| s.wildcard || s.hash == t.hash)
}

/// Share of agreeing positions and the number of `<*>` in the template, or the position of
/// the first plain word that differs (with `words_split`).
fn similarity(template: &[Slot], tokens: &[TokenInfo], words_split: bool) -> Result<(f64, usize), usize> {
    let (mut agree, mut params) = (0usize, 0usize);
    for (pos, (slot, token)) in template.iter().zip(tokens).enumerate() {
        if slot.wildcard {
            params += 1;
            agree += 1;
        } else if slot.hash == token.hash {
            agree += 1;
        } else if words_split && slot.word && token.is_word {
            return Err(pos);
        }
    }
    Ok((agree as f64 / tokens.len().max(1) as f64, params))
}

/// The candidate template `tokens` would join: the most similar, the one with more `<*>` among
/// equals. Its index, similarity and number of `<*>`.
fn best_candidate(
    slots: &[Vec<Slot>],
    candidates: &[usize],
    tokens: &[TokenInfo],
    words_split: bool,
) -> Option<(usize, f64, usize)> {
    let mut best: Option<(usize, f64, usize)> = None;
    for &i in candidates {
        if let Ok((sim, params)) = similarity(&slots[i], tokens, words_split)
            && best.is_none_or(|(_, s, p)| sim > s || (sim == s && params > p))
        {
            best = Some((i, sim, params));
        }
    }
    best
}

/// Grouping accuracy, the measure used on Loghub: a message counts as correct when the set of
/// messages given its template equals the set sharing its true template.
pub fn grouping_accuracy<T: std::hash::Hash + Eq, U: std::hash::Hash + Eq>(
    predicted: &[T],
    truth: &[U],
) -> f64 {
    let mut by_pred: HashMap<&T, Vec<usize>> = HashMap::new();
    let mut truth_sizes: HashMap<&U, usize> = HashMap::new();
    for (i, (p, t)) in predicted.iter().zip(truth).enumerate() {
        by_pred.entry(p).or_default().push(i);
        *truth_sizes.entry(t).or_default() += 1;
    }
    let mut correct = 0;
    for lines in by_pred.values() {
        let first = &truth[lines[0]];
        if lines.iter().all(|&i| &truth[i] == first) && truth_sizes[first] == lines.len() {
            correct += lines.len();
        }
    }
    correct as f64 / truth.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_generalise_and_words_split() {
        let mut m = Miner::default();
        let a =
            m.add("Block broadcast_1 stored as bytes in memory (estimated size 32.5 KB, free 317.5 MB)", 1);
        let b = m.add("Block rdd_2_3 stored as bytes in memory (estimated size 8 B, free 317.4 MB)", 2);
        let c = m.add("Block broadcast_4 stored as values in memory (estimated size 1.2 KB, free 300 MB)", 3);
        assert!(matches!(a, Match::New(1)));
        assert_eq!(b, Match::Known(1));
        assert_eq!(c, Match::New(2), "bytes / values are two statements");
        let t = m.get(1).unwrap();
        assert_eq!(t.pattern(), "Block <*> stored as bytes in memory (estimated size <*>, free <*>)");
        assert_eq!((t.count, t.first_seen, t.last_seen), (2, 1, 2));
        assert!(t.example.starts_with("Block broadcast_1"));
    }

    #[test]
    fn explanations_say_why_a_line_joined_or_split() {
        let mut m = Miner::default();
        let first = "Block broadcast_1 stored as bytes in memory (estimated size 32.5 KB, free 317.5 MB)";
        assert_eq!(m.explain(first), Explanation::NoCandidate { tokens: 12 });
        m.add(first, 0);
        assert_eq!(m.explain(first), Explanation::Matches { id: 1 });
        let Explanation::Joins { id: 1, generalized, .. } =
            m.explain("Block rdd_2_3 stored as bytes in memory (estimated size 8 B, free 317.4 MB)")
        else {
            panic!("a new value should join template 1");
        };
        assert_eq!(generalized.iter().map(|(p, _, _)| *p).collect::<Vec<_>>(), [1]);
        assert_eq!(generalized[0].1, "broadcast_<*>");
        let split =
            m.explain("Block broadcast_4 stored as values in memory (estimated size 1.2 KB, free 300 MB)");
        assert_eq!(
            split,
            Explanation::WordDiffers {
                id: 1,
                position: 4,
                template: "bytes".into(),
                message: "values".into()
            }
        );
        assert!(
            split.to_string().contains("token 5 is the word \"values\" where it has \"bytes\""),
            "{split}"
        );
        m.add("open now a b c d e", 0);
        let far = m.explain("open now 1 b 2 d 3");
        assert!(matches!(far, Explanation::TooDifferent { id: 2, .. }), "{far:?}");
    }

    #[test]
    fn explanations_agree_with_what_add_does() {
        let lines = [
            "open session for alice@example port 22",
            "open session for bob@example port 23",
            "close session for bob@example port 23",
            "open session for carol@example port 25",
            "connection from 10.0.0.1 closed",
            "connection from 10.0.0.2 closed",
            "connection to 10.0.0.2 closed",
        ];
        let mut m = Miner::default();
        for line in lines {
            let why = m.explain(line);
            match (m.add(line, 0), &why) {
                (
                    Match::New(_),
                    Explanation::NoCandidate { .. }
                    | Explanation::WordDiffers { .. }
                    | Explanation::TooDifferent { .. },
                ) => {}
                (Match::Known(id), Explanation::Matches { id: e } | Explanation::Joins { id: e, .. }) => {
                    assert_eq!(id, *e, "{line}")
                }
                (got, _) => panic!("{line}: add gave {got:?}, explain said {why:?}"),
            }
        }
    }

    #[test]
    fn a_repeated_shape_counts_as_the_tree_would() {
        let mut m = Miner::default();
        assert_eq!(m.add("open session for alice@example port 22", 1), Match::New(1));
        // The same shape again: answered from the recent sequences.
        assert_eq!(m.add("open session for alice@example port 23", 2), Match::Known(1));
        // A different value generalises the template, which invalidates what was remembered.
        assert_eq!(m.add("open session for bob@example port 22", 3), Match::Known(1));
        assert_eq!(m.add("open session for alice@example port 24", 4), Match::Known(1));
        assert_eq!(m.add("close session for alice@example port 24", 5), Match::New(2));
        assert_eq!(m.add("open session for carol@example port 25", 6), Match::Known(1));
        let t = m.get(1).unwrap();
        assert_eq!(t.pattern(), "open session for <*> port <*>");
        assert_eq!((t.count, t.first_seen, t.last_seen), (5, 1, 6));
        assert_eq!(m.get(2).unwrap().count, 1);
    }

    #[test]
    fn different_lengths_and_first_words_never_mix() {
        let mut m = Miner::default();
        assert_eq!(m.add("normal", 0), Match::New(1));
        assert_eq!(m.add("warning", 0), Match::New(2));
        assert_eq!(m.add("normal", 0), Match::Known(1));
        assert_eq!(m.add("connection from 10.0.0.1 closed", 0), Match::New(3));
        assert_eq!(m.add("connection from 10.0.0.2 closed by peer", 0), Match::New(4));
        assert_eq!(m.add("", 0), Match::New(5));
    }

    #[test]
    fn examples_are_cut_at_a_character_boundary() {
        let mut m = Miner::default();
        let long = format!("start {}", "é".repeat(MAX_EXAMPLE_BYTES));
        let id = m.add(&long, 0).id();
        let ex = &m.get(id).unwrap().example;
        assert!(ex.len() <= MAX_EXAMPLE_BYTES && ex.len() >= MAX_EXAMPLE_BYTES - 1, "{}", ex.len());
        assert!(long.starts_with(ex.as_str()));
    }

    #[test]
    fn the_template_table_is_bounded() {
        let mut m = Miner::new(MinerConfig { max_templates: 2, ..MinerConfig::default() });
        m.add("alpha one", 0);
        m.add("beta two", 0);
        assert_eq!(m.add("gamma three", 0), Match::Known(OVERFLOW));
        assert_eq!(m.templates().len(), 2);
    }

    #[test]
    fn grouping_accuracy_counts_whole_groups() {
        assert_eq!(grouping_accuracy(&[1, 1, 2, 3], &["a", "a", "b", "b"]), 0.5);
        assert_eq!(grouping_accuracy(&[1, 1, 2], &["a", "a", "b"]), 1.0);
    }
}
