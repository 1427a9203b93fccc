//! The miner itself: masked tokens in, a template id out (see the module above for the shape).

use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;

use super::mask::{self, MaskRules, TokenInfo, Tokens, WILDCARD};

mod explain;
pub use explain::Explanation;

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
    /// A message that differs from a template in a plain word (letters only) does not join it:
    /// `bytes` / `values` or `Begin` / `End` make two statements.
    pub words_split: bool,
    /// ...unless this many templates (the message counting as one) are the same statement but
    /// for a plain word at one position: then that word is a value (`Invalid user admin`,
    /// `... user guest`, `... user oracle`) and they merge into one template. 0: never.
    pub merge_after: usize,
    /// Words in capitals are codes (`RUNNING` / `KILLED`, `GET` / `POST`): however many
    /// differ at one position, they stay statements of their own and never merge.
    pub codes_split: bool,
    /// What makes a token a value besides digits.
    pub mask: MaskRules,
}

impl Default for MinerConfig {
    fn default() -> Self {
        MinerConfig {
            depth: 4,
            similarity: 0.6,
            max_children: 100,
            max_templates: 100_000,
            words_split: true,
            mask: MaskRules::default(),
            codes_split: true,
            merge_after: 3,
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
    /// Messages given this id (a template merged into another keeps its own).
    pub count: u64,
    /// Event times (ns since the epoch) of the first and the latest message.
    pub first_seen: i64,
    pub last_seen: i64,
    /// The first message that matched.
    pub example: String,
    /// Set once the template was found to be a variant of another and merged into it: the
    /// template its messages now get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<TemplateId>,
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

/// The `<*>` token, for a template position that takes anything.
fn wildcard_token(hash: u64) -> TokenInfo {
    TokenInfo { hash, is_value: true, is_wildcard: true, is_word: false, is_code: false }
}

#[derive(Debug, Default)]
struct Node {
    /// Keyed by the hash of the token.
    children: HashMap<u64, Node, RandomState>,
    /// The `<*>` branch: values, and tokens past `max_children`.
    wildcard: Option<Box<Node>>,
    /// Indexes into `Miner::templates`, at the leaves.
    templates: Vec<usize>,
    /// At a leaf: the positions where plain words were found to be values (enough templates
    /// differed there only), so that a word there no longer makes a statement of its own.
    value_words: Vec<usize>,
}

#[derive(Debug)]
pub struct Miner {
    cfg: MinerConfig,
    by_length: HashMap<usize, Node, RandomState>,
    templates: Vec<Template>,
    /// Each template's positions, compared as hashes (parallel to `templates`; empty for a
    /// template merged into another).
    slots: Vec<Vec<TokenInfo>>,
    /// Keys the token hashes, per process, so that nobody can make two tokens collide.
    hasher: RandomState,
    wildcard_hash: u64,
    scratch: Tokens,
    /// Token sequences seen lately and the template each matched exactly, valid while
    /// `generation` has not moved ([`Recent`]).
    recent: Vec<Recent>,
    /// Bumped whenever a template is created, gains a `<*>` or is merged.
    generation: u64,
    /// Templates merged into another.
    merged: usize,
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

/// What a message that joins no template on its own does to the table.
enum Outcome {
    /// Merges `variants` (template indexes, the survivor first) and joins the survivor.
    Merge { variants: Vec<usize>, position: usize },
    /// Starts a template.
    New,
}

impl Miner {
    pub fn new(cfg: MinerConfig) -> Self {
        let scratch = Tokens::new(cfg.mask);
        let hasher = RandomState::default();
        let wildcard_hash = hasher.hash_one(WILDCARD.as_bytes());
        Miner {
            cfg,
            by_length: HashMap::default(),
            templates: Vec::new(),
            slots: Vec::new(),
            hasher,
            wildcard_hash,
            scratch,
            recent: vec![Recent::default(); RECENT_SLOTS],
            // Above the empty slots' 0, so that they never match.
            generation: 1,
            merged: 0,
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
            let i = m.templates.len();
            // Merged into an older template, or (a damaged file) live.
            let t = Template { merged_into: t.merged_into.filter(|&into| into > 0 && into < t.id), ..t };
            if t.merged_into.is_some() {
                // Kept for its id; never matched again.
                m.merged += 1;
                m.slots.push(Vec::new());
                m.templates.push(t);
                continue;
            }
            m.slots.push(t.tokens.iter().map(|tok| mask::describe(tok, &m.hasher)).collect());
            m.templates.push(t);
            m.index(i);
        }
        m
    }

    /// Every template, in id order, those merged into another included.
    pub fn templates(&self) -> &[Template] {
        &self.templates
    }

    /// How many templates messages can get: those not merged into another.
    pub fn live(&self) -> usize {
        self.templates.len() - self.merged
    }

    pub fn get(&self, id: TemplateId) -> Option<&Template> {
        (id as usize).checked_sub(1).and_then(|i| self.templates.get(i))
    }

    /// The template that messages given `id` belong to now: `id`, or the live template it was
    /// merged into (through the templates that were merged in turn).
    pub fn canonical(&self, mut id: TemplateId) -> TemplateId {
        // A template is only ever merged into an older one.
        while let Some(into) = self.get(id).and_then(|t| t.merged_into).filter(|&into| into < id) {
            id = into;
        }
        id
    }

    /// Match `message` (an event at `time_ns`) to a template, learning as it goes.
    pub fn add(&mut self, message: &str, time_ns: i64) -> Match {
        let mut tokens = std::mem::take(&mut self.scratch);
        tokens.fill(message, &self.hasher);
        let m = self.add_masked(&tokens, 0..tokens.len(), message, time_ns);
        self.scratch = tokens;
        m
    }

    /// Empty [`Tokens`] masking by this miner's rules, for [`Miner::add_masked`].
    pub fn tokens(&self) -> Tokens {
        Tokens::new(self.cfg.mask)
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
        let info = &tokens.info()[range.clone()];
        let key = sequence_key(info);
        let recent = self.recent[key as usize % RECENT_SLOTS];
        if recent.key == key
            && recent.generation == self.generation
            && matches_exactly(&self.slots[recent.index as usize], info)
        {
            return Match::Known(self.count(recent.index as usize, time_ns));
        }
        if let Some((i, sim, _)) = self.best_candidate(info)
            && sim >= self.cfg.similarity
        {
            let i = self.absorb(i, info);
            self.recent[key as usize % RECENT_SLOTS] =
                Recent { key, generation: self.generation, index: i as u32 };
            return Match::Known(self.count(i, time_ns));
        }
        match self.outcome(info) {
            Outcome::Merge { variants, position } => {
                // In these leaves, a word at `position` is a value from now on.
                let levels = self.levels();
                if let Some(root) = self.by_length.get_mut(&info.len()) {
                    for_each_leaf_mut(root, info, levels, &mut |leaf| {
                        if !leaf.value_words.contains(&position) {
                            leaf.value_words.push(position);
                        }
                    });
                }
                let survivor = self.merge(&variants);
                self.generalize(survivor, info);
                let survivor = self.sweep(survivor);
                Match::Known(self.count(survivor, time_ns))
            }
            Outcome::New if self.templates.len() >= self.cfg.max_templates => Match::Known(OVERFLOW),
            Outcome::New => {
                let i = self.templates.len();
                let id = i as TemplateId + 1;
                self.generation += 1;
                self.recent[key as usize % RECENT_SLOTS] =
                    Recent { key, generation: self.generation, index: i as u32 };
                self.slots.push(info.to_vec());
                let text = mask::masked(message, self.cfg.mask);
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
                    merged_into: None,
                });
                self.index(i);
                Match::New(id)
            }
        }
    }

    /// Count a message at `time_ns` for template `i`; its id.
    fn count(&mut self, i: usize, time_ns: i64) -> TemplateId {
        let t = &mut self.templates[i];
        t.count = t.count.saturating_add(1);
        t.first_seen = t.first_seen.min(time_ns);
        t.last_seen = t.last_seen.max(time_ns);
        t.id
    }

    /// The candidate template `tokens` would join: in the leaves of the tree they lead to, the
    /// most similar, the one with more `<*>` among equals. Its index, similarity and `<*>` count.
    fn best_candidate(&self, tokens: &[TokenInfo]) -> Option<(usize, f64, usize)> {
        let root = self.by_length.get(&tokens.len())?;
        let mut best: Option<(usize, f64, usize)> = None;
        let consider = |leaf: &Node, best: &mut Option<(usize, f64, usize)>| {
            for &i in &leaf.templates {
                if let Ok((sim, params)) = similarity(&self.slots[i], tokens, self.words(leaf))
                    && best.is_none_or(|(_, s, p)| sim > s || (sim == s && params > p))
                {
                    *best = Some((i, sim, params));
                }
            }
        };
        // Most messages join a template on the path of their own tokens; the other leaves
        // are looked at only when none there will do.
        let own = own_leaf(root, tokens, self.levels());
        if let Some(leaf) = own {
            consider(leaf, &mut best);
        }
        if best.is_none_or(|(_, sim, _)| sim < self.cfg.similarity) {
            for_each_leaf(root, tokens, self.levels(), &mut |leaf| {
                if !own.is_some_and(|own| std::ptr::eq(own, leaf)) {
                    consider(leaf, &mut best);
                }
            });
        }
        best
    }

    /// What a message joining no template does: merge the templates it shows to be one
    /// statement with a word for a value, or start a template.
    fn outcome(&self, tokens: &[TokenInfo]) -> Outcome {
        let Some(root) = self.by_length.get(&tokens.len()) else { return Outcome::New };
        let (levels, wildcard) = (self.levels(), self.wildcard_hash);
        if self.cfg.merge_after == 0 || !self.cfg.words_split {
            return Outcome::New;
        }
        // Template indexes by the one position where each differs from `tokens` in a word.
        let mut by_position: Vec<(usize, Vec<usize>)> = Vec::new();
        let mut add = |p: usize, i: usize| match by_position.iter_mut().find(|(q, _)| *q == p) {
            Some((_, v)) => v.push(i),
            None => by_position.push((p, vec![i])),
        };
        let codes = self.cfg.codes_split;
        let may_vary = |t: &TokenInfo| !(t.is_value || codes && t.is_code);
        // In a leading token, whatever differs (the tree put them apart): `(alice) CMD (..)`,
        // with enough constant tokens besides.
        let constants = tokens.iter().filter(|t| !t.is_value).count();
        let leading = if constants > LEADING_CONTEXT { levels.min(tokens.len()) } else { 0 };
        let mut with_wildcard = tokens.to_vec();
        for p in (0..leading).filter(|&p| may_vary(&tokens[p])) {
            with_wildcard[p] = wildcard_token(wildcard);
            for_each_leaf_under(root, &with_wildcard, levels, wildcard, &mut |leaf| {
                for &i in &leaf.templates {
                    if leading_variant(&self.slots[i], tokens, p, &self.cfg) {
                        add(p, i);
                    }
                }
            });
            with_wildcard[p] = tokens[p];
        }
        // Past them, a plain word.
        let words = tokens.iter().skip(levels).any(|t| t.is_word && may_vary(t));
        let mut each_leaf = |leaf: &Node| {
            for &i in &leaf.templates {
                let Some(p) = word_variant(&self.slots[i], tokens, &self.cfg, &leaf.value_words) else {
                    continue;
                };
                // The leading tokens name the statement (they pick the leaf): never a value.
                if p < self.levels() {
                    continue;
                }
                add(p, i);
            }
        };
        if words {
            for_each_leaf(root, tokens, levels, &mut each_leaf);
        }
        match by_position.into_iter().max_by_key(|(_, v)| v.len()) {
            // With the message, `merge_after` different words at one place: a value.
            Some((position, mut variants)) if variants.len() + 1 >= self.cfg.merge_after => {
                variants.sort_unstable();
                Outcome::Merge { variants, position }
            }
            _ => Outcome::New,
        }
    }

    /// Merge templates `variants` into the first (the oldest); its index.
    fn merge(&mut self, variants: &[usize]) -> usize {
        let survivor = variants[0];
        for &v in &variants[1..] {
            self.merge_into(v, survivor);
        }
        survivor
    }

    /// Template `v` becomes part of template `into`, which takes in its tokens (without the
    /// sweep of [`Miner::absorb`]).
    fn merge_into(&mut self, v: usize, into: usize) {
        self.unindex(v);
        let info: Vec<TokenInfo> = std::mem::take(&mut self.slots[v]);
        let into_id = self.templates[into].id;
        let (first, last) = {
            let t = &mut self.templates[v];
            t.merged_into = Some(into_id);
            self.merged += 1;
            (t.first_seen, t.last_seen)
        };
        // Each keeps the count of the messages given its id; the statement is seen since the
        // first of them.
        let t = &mut self.templates[into];
        t.first_seen = t.first_seen.min(first);
        t.last_seen = t.last_seen.max(last);
        self.generation += 1;
        self.generalize(into, &info);
    }

    /// Template `i` takes in `tokens` ([`Miner::generalize`]); then the templates it now covers
    /// merge with it ([`Miner::sweep`]). The index of the template the result lives in.
    fn absorb(&mut self, i: usize, tokens: &[TokenInfo]) -> usize {
        match self.generalize(i, tokens) {
            true => self.sweep(i),
            false => i,
        }
    }

    /// Merge with template `i` the templates it covers: those a message of their shape would
    /// join rather than start. A template that gained a `<*>` can cover one made before it
    /// could (`RSA` and `ECDSA` before the value `ED25519` made that position `<*>`), and
    /// two templates of one statement would split its messages between them. The oldest of two
    /// keeps its id. The index of the template the result lives in.
    fn sweep(&mut self, i: usize) -> usize {
        let covered = self.covered_by(&self.slots[i], i);
        let into = covered.iter().copied().fold(i, usize::min);
        for t in covered.into_iter().chain([i]).filter(|&t| t != into) {
            self.merge_into(t, into);
        }
        into
    }

    /// The live templates other than `i` that `template` covers: `<*>` or the same token in
    /// every position. Merging them changes nothing in what `template` matches, so a sweep
    /// never cascades.
    fn covered_by(&self, template: &[TokenInfo], i: usize) -> Vec<usize> {
        let mut found = Vec::new();
        let Some(root) = self.by_length.get(&template.len()) else { return found };
        for_each_leaf_under(root, template, self.levels(), self.wildcard_hash, &mut |leaf| {
            found.extend(leaf.templates.iter().copied().filter(|&t| {
                t != i && template.iter().zip(&self.slots[t]).all(|(s, o)| s.is_wildcard || s.hash == o.hash)
            }));
        });
        found
    }

    /// The plain-word rule as it applies in `leaf`: off, or the positions where words are values.
    fn words<'a>(&self, leaf: &'a Node) -> Option<&'a [usize]> {
        self.cfg.words_split.then_some(&leaf.value_words[..])
    }

    /// `<*>` in template `i` wherever `tokens` differs from it; whether anything changed. A
    /// template that gains a `<*>` where the tree branches moves to the `<*>` branch.
    fn generalize(&mut self, i: usize, tokens: &[TokenInfo]) -> bool {
        let differs = |(s, t): (&TokenInfo, &TokenInfo)| !s.is_wildcard && s.hash != t.hash;
        let Some(first) = self.slots[i].iter().zip(tokens).position(differs) else { return false };
        let moves = first < self.levels();
        if moves {
            self.unindex(i);
        }
        let wildcard = self.wildcard_hash;
        let t = &mut self.templates[i];
        for (pos, (slot, token)) in self.slots[i].iter_mut().zip(tokens).enumerate().skip(first) {
            if !slot.is_wildcard && slot.hash != token.hash {
                *slot = wildcard_token(wildcard);
                t.tokens[pos] = WILDCARD.into();
            }
        }
        if moves {
            self.index(i);
        }
        self.generation += 1;
        true
    }

    /// Tree levels below the token count: the leading tokens that pick a leaf.
    fn levels(&self) -> usize {
        self.cfg.depth.saturating_sub(2)
    }

    /// Put template `i` in the leaf of its tokens.
    fn index(&mut self, i: usize) {
        let info = &self.slots[i];
        let (levels, max_children) = (self.levels(), self.cfg.max_children);
        let mut node = self.by_length.entry(info.len()).or_default();
        for t in info.iter().take(levels) {
            node = match branch(node, t, max_children) {
                Some(key) => node.children.entry(key).or_default(),
                None => node.wildcard.get_or_insert_default(),
            };
        }
        node.templates.push(i);
    }

    /// Take template `i` out of the tree.
    fn unindex(&mut self, i: usize) {
        let info = &self.slots[i];
        let levels = self.levels();
        if let Some(root) = self.by_length.get_mut(&info.len()) {
            for_each_leaf_mut(root, info, levels, &mut |leaf| leaf.templates.retain(|&t| t != i));
        }
    }
}

/// Call `f` on each leaf under `node` that may hold the template of a message of these tokens:
/// at each level, the child of its token and the `<*>` child (where a template went once it
/// had a `<*>` there).
fn for_each_leaf<'a>(node: &'a Node, tokens: &[TokenInfo], levels: usize, f: &mut impl FnMut(&'a Node)) {
    walk(node, tokens, levels, None, f);
}

/// [`for_each_leaf`] for a template's tokens: under a `<*>`, every child (the templates it
/// may cover).
fn for_each_leaf_under<'a>(
    node: &'a Node,
    tokens: &[TokenInfo],
    levels: usize,
    wildcard: u64,
    f: &mut impl FnMut(&'a Node),
) {
    walk(node, tokens, levels, Some(wildcard), f);
}

/// The walk of both: with `under`, a token that is that `<*>` goes down every child.
fn walk<'a>(
    node: &'a Node,
    tokens: &[TokenInfo],
    levels: usize,
    under: Option<u64>,
    f: &mut impl FnMut(&'a Node),
) {
    let Some((t, rest)) = tokens.split_first().filter(|_| levels > 0) else { return f(node) };
    if under == Some(t.hash) {
        for child in node.children.values() {
            walk(child, rest, levels - 1, under, f);
        }
    } else if !t.is_value
        && let Some(child) = node.children.get(&t.hash)
    {
        walk(child, rest, levels - 1, under, f);
    }
    if let Some(child) = &node.wildcard {
        walk(child, rest, levels - 1, under, f);
    }
}

/// The leaf of the path a message's tokens take first: a token's own child where there is
/// one, else the `<*>` child.
fn own_leaf<'a>(mut node: &'a Node, tokens: &[TokenInfo], levels: usize) -> Option<&'a Node> {
    for t in tokens.iter().take(levels) {
        let own = (!t.is_value).then(|| node.children.get(&t.hash)).flatten();
        node = own.or(node.wildcard.as_deref())?;
    }
    Some(node)
}

/// [`for_each_leaf`], to change the leaves.
fn for_each_leaf_mut(node: &mut Node, tokens: &[TokenInfo], levels: usize, f: &mut impl FnMut(&mut Node)) {
    let Some((t, rest)) = tokens.split_first().filter(|_| levels > 0) else { return f(node) };
    if !t.is_value
        && let Some(child) = node.children.get_mut(&t.hash)
    {
        for_each_leaf_mut(child, rest, levels - 1, f);
    }
    if let Some(child) = &mut node.wildcard {
        for_each_leaf_mut(child, rest, levels - 1, f);
    }
}

/// The child of `node` that token `t` goes down: its own (by hash), or (`None`) the `<*>`
/// branch for a value or for a new token once `node` has `max_children`.
fn branch(node: &Node, t: &TokenInfo, max_children: usize) -> Option<u64> {
    let own = !t.is_value && (node.children.contains_key(&t.hash) || node.children.len() < max_children);
    own.then_some(t.hash)
}

/// The one plain-word position where `tokens` differs from `template`, if without it the
/// message would join (at least `threshold` of positions agree, the word counting against).
fn word_variant(
    template: &[TokenInfo],
    tokens: &[TokenInfo],
    cfg: &MinerConfig,
    values: &[usize],
) -> Option<usize> {
    let (mut agree, mut word) = (0usize, None);
    for (pos, (slot, token)) in template.iter().zip(tokens).enumerate() {
        if slot.is_wildcard || slot.hash == token.hash {
            agree += 1;
        } else if slot.is_word && token.is_word && !values.contains(&pos) {
            if word.is_some() || (cfg.codes_split && (slot.is_code || token.is_code)) {
                return None;
            }
            word = Some(pos);
        }
    }
    word.filter(|_| agree as f64 / tokens.len().max(1) as f64 >= cfg.similarity)
}

/// `templates` (in id order, as [`Miner::templates`] gives them) with each `merged_into` naming
/// the live template in the end, for readers that follow one step (`coalesce(merged_into, id)`).
pub fn resolve_merges(templates: &mut [Template]) {
    for i in 0..templates.len() {
        if let Some(into) = templates[i].merged_into {
            // Ids are 1..=n in order and `into` is older: resolved already, if merged in turn.
            // Anything else (another node's file is input) names no template.
            let older = (into as usize).checked_sub(1).filter(|&j| j < i).map(|j| &templates[j]);
            templates[i].merged_into = older.filter(|t| t.id == into).map(|t| t.merged_into.unwrap_or(into));
        }
    }
}

/// Whether `tokens` differs from `template` in leading token `p` alone, neither being a value
/// or (with `codes_split`) a code, with at least [`LEADING_CONTEXT`] other constant tokens the
/// same: a leading token usually names the statement (`boot (command <*>)`, `wait (command
/// <*>)`), and only a statement with enough words of its own shows it is not one.
fn leading_variant(template: &[TokenInfo], tokens: &[TokenInfo], p: usize, cfg: &MinerConfig) -> bool {
    let (slot, token) = (&template[p], &tokens[p]);
    let apart = !slot.is_value && !token.is_value && slot.hash != token.hash;
    let mut constants = 0;
    let same = template.iter().zip(tokens).enumerate().all(|(q, (s, t))| {
        constants += usize::from(q != p && !s.is_value && s.hash == t.hash);
        q == p || s.is_wildcard || s.hash == t.hash
    });
    apart && same && constants >= LEADING_CONTEXT && !(cfg.codes_split && (slot.is_code || token.is_code))
}

/// Constant tokens that must agree besides a leading token taken for a value.
const LEADING_CONTEXT: usize = 3;

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
fn matches_exactly(template: &[TokenInfo], tokens: &[TokenInfo]) -> bool {
    template.len() == tokens.len()
        && template.iter().zip(tokens).all(|(s, t)| s.is_wildcard || s.hash == t.hash)
}

/// Share of agreeing positions and the number of `<*>` in the template, or the position of
/// the first plain word that differs, with `words` (the plain-word rule: the positions where
/// words are values).
fn similarity(
    template: &[TokenInfo],
    tokens: &[TokenInfo],
    words: Option<&[usize]>,
) -> Result<(f64, usize), usize> {
    let (mut agree, mut params) = (0usize, 0usize);
    for (pos, (slot, token)) in template.iter().zip(tokens).enumerate() {
        if slot.is_wildcard {
            params += 1;
            agree += 1;
        } else if slot.hash == token.hash {
            agree += 1;
        } else if slot.is_word && token.is_word && words.is_some_and(|values| !values.contains(&pos)) {
            return Err(pos);
        }
    }
    // An empty message is the empty template in every position.
    let share = if tokens.is_empty() { 1.0 } else { agree as f64 / tokens.len() as f64 };
    Ok((share, params))
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
            "Invalid user admin from 10.0.0.1 port 22",
            "Invalid user guest from 10.0.0.1 port 22",
            "Invalid user oracle from 10.0.0.1 port 22",
            "Invalid user tomcat from 10.0.0.1 port 22",
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
                (
                    Match::Known(id),
                    Explanation::Matches { id: e }
                    | Explanation::Joins { ends_in: e, .. }
                    | Explanation::Merges { ends_in: e, .. },
                ) => assert_eq!(id, *e, "{line}"),
                (got, _) => panic!("{line}: add gave {got:?}, explain said {why:?}"),
            }
        }
    }

    #[test]
    fn a_word_that_varies_enough_is_a_value() {
        let mut m = Miner::default();
        assert_eq!(m.add("Invalid user admin from 10.0.0.1 port 22", 1), Match::New(1));
        assert_eq!(
            m.add("Invalid user guest from 10.0.0.2 port 23", 2),
            Match::New(2),
            "two words may be two statements"
        );
        assert_eq!(m.add("Invalid user admin from 10.0.0.3 port 24", 3), Match::Known(1));
        let why = m.explain("Invalid user oracle from 10.0.0.4 port 25");
        assert_eq!(
            why,
            Explanation::Merges { variants: vec![1, 2], position: 2, word: "oracle".into(), ends_in: 1 }
        );
        assert!(why.to_string().contains("differ only in the word at token 3"), "{why}");
        assert_eq!(
            m.add("Invalid user oracle from 10.0.0.4 port 25", 4),
            Match::Known(1),
            "a third: a value"
        );
        assert_eq!(m.add("Invalid user tomcat from 10.0.0.5 port 26", 5), Match::Known(1));
        let t = m.get(1).unwrap();
        assert_eq!(t.pattern(), "Invalid user <*> from <*> port <*>");
        // Each keeps the count of the messages given its id.
        assert_eq!((t.count, t.first_seen, t.last_seen), (4, 1, 5));
        assert_eq!(m.get(2).unwrap().merged_into, Some(1));
        assert_eq!(m.get(2).unwrap().count, 1);
        assert_eq!((m.canonical(2), m.canonical(1), m.live(), m.templates().len()), (1, 1, 1, 2));
        // Two words at one place stay two statements.
        m.add("Block 1 stored as bytes in memory now", 0);
        m.add("Block 2 stored as values in memory now", 0);
        assert_eq!(m.live(), 3);
    }

    #[test]
    fn templates_left_behind_merge_once_a_position_is_a_value() {
        let mut m = Miner::default();
        for user in ["alice", "bob", "carol"] {
            m.add(&format!("su failed for {user} by root"), 0);
        }
        assert_eq!(m.live(), 1, "{:?}", m.templates());
        // Another caller and user: no template agrees in all but one word, so a new one...
        assert_eq!(m.add("su failed for dave by admin", 0), Match::New(3));
        // ...which the next variant of the caller merges with the first.
        assert_eq!(m.add("su failed for erin by guest", 0), Match::Known(1));
        assert_eq!(m.get(1).unwrap().pattern(), "su failed for <*> by <*>");
        assert_eq!((m.live(), m.canonical(3)), (1, 1));
        // A template made before a position became `<*>` by a value merges with it too.
        let mut m = Miner::default();
        assert_eq!(m.add("key type RSA accepted for alice now", 0), Match::New(1));
        assert_eq!(m.add("key type ECDSA accepted for alice now", 0), Match::New(2));
        assert_eq!(m.add("key type ED25519 accepted for alice now", 0), Match::Known(1));
        assert_eq!((m.live(), m.canonical(2)), (1, 1), "{:?}", m.templates());
    }

    #[test]
    fn codes_never_merge() {
        let mut m = Miner::default();
        for state in ["RUNNING", "KILLED", "FAILED", "SUCCEEDED"] {
            m.add(&format!("task 7 went from NEW to {state} today"), 0);
        }
        assert_eq!(m.live(), 4);
        let mut m = Miner::new(MinerConfig { codes_split: false, ..MinerConfig::default() });
        for state in ["RUNNING", "KILLED", "FAILED", "SUCCEEDED"] {
            m.add(&format!("task 7 went from NEW to {state} today"), 0);
        }
        assert_eq!(m.live(), 1);
    }

    #[test]
    fn a_leading_word_is_a_value_only_with_enough_context() {
        let mut m = Miner::default();
        for user in ["alice", "bob", "carol", "dave"] {
            m.add(&format!("{user} : TTY=pts/0 ; PWD=/home ; USER=root ; COMMAND=/bin/ls"), 0);
        }
        assert_eq!(m.live(), 1, "{:?}", m.templates());
        assert_eq!(m.templates()[0].pattern(), "<*> : TTY=<*> ; PWD=<*> ; USER=<*> ; COMMAND=<*>");
        // A short statement named by its first word: each word its own.
        let mut m = Miner::default();
        for verb in ["boot", "wait", "halt", "reset"] {
            m.add(&format!("{verb} (command 12)"), 0);
        }
        assert_eq!(m.live(), 4);
    }

    #[test]
    fn merges_resolve_to_the_live_template() {
        let t = |id: TemplateId, merged_into: Option<TemplateId>| Template {
            id,
            tokens: Vec::new(),
            count: 1,
            first_seen: 0,
            last_seen: 0,
            example: String::new(),
            merged_into,
        };
        let mut chain = vec![t(1, None), t(2, Some(1)), t(3, Some(2)), t(4, Some(3)), t(5, None)];
        resolve_merges(&mut chain);
        let into: Vec<_> = chain.iter().map(|t| t.merged_into).collect();
        assert_eq!(into, [None, Some(1), Some(1), Some(1), None]);
        // A damaged file: a template merged into itself or a newer one is live again, and no
        // lookup loops.
        let m = Miner::restore(MinerConfig::default(), vec![t(1, Some(1)), t(2, Some(3)), t(3, Some(1))]);
        assert_eq!(m.templates().iter().map(|t| t.merged_into).collect::<Vec<_>>(), [None, None, Some(1)]);
        assert_eq!((m.canonical(1), m.canonical(2), m.canonical(3), m.live()), (1, 2, 1, 2));
    }

    #[test]
    fn merged_templates_are_restored_as_merged() {
        let mut m = Miner::default();
        for user in ["admin", "guest", "oracle"] {
            m.add(&format!("Invalid user {user} from 10.0.0.1 port 22"), 0);
        }
        let saved = m.templates().to_vec();
        assert_eq!(saved.iter().filter(|t| t.merged_into.is_some()).count(), 1);
        let mut m = Miner::restore(MinerConfig::default(), saved);
        assert_eq!((m.live(), m.canonical(2)), (1, 1));
        assert_eq!(m.add("Invalid user guest from 10.0.0.9 port 2", 0), Match::Known(1));
        assert_eq!(m.add("Invalid user zed from 10.0.0.9 port 2", 0), Match::Known(1));
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
/// A reproducible random source for tests: `rng(n)` is in `0..n` (xorshift).
#[cfg(test)]
pub(super) fn test_rng(mut seed: u64) -> impl FnMut(usize) -> usize {
    move |n| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    }
}

#[cfg(test)]
mod attack_invariants {
    use super::*;

    fn leaves<'a>(n: &'a Node, out: &mut Vec<&'a Node>) {
        if n.children.is_empty() && n.wildcard.is_none() {
            out.push(n);
        }
        for c in n.children.values() {
            leaves(c, out);
        }
        if let Some(w) = &n.wildcard {
            leaves(w, out);
        }
    }

    /// Random lines from a small vocabulary; after every line the tree, the counts and the
    /// merges must be consistent, and explain() must have said what add() did.
    #[test]
    fn random_lines_keep_the_invariants() {
        let vocab = [
            "open",
            "close",
            "user",
            "alice",
            "bob",
            "carol",
            "dave",
            "from",
            "port",
            "GET",
            "POST",
            "x#",
            "y#",
            "1",
            "22",
            "a=b",
            "k=\"v",
            "w\"",
            "chrome.exe",
            "done",
            "failed",
            "to",
            "<*>",
        ];
        let mut rnd = test_rng(0x2545F4914F6CDD1D);
        let mut m = Miner::default();
        let (mut disagree, mut total) = (0, 0u64);
        for n in 0..20_000 {
            let len = 3 + rnd(5);
            let line: Vec<&str> = (0..len).map(|_| vocab[rnd(vocab.len())]).collect();
            let line = line.join(" ");
            let why = m.explain(&line);
            let got = m.add(&line, n);
            total += 1;
            let agrees = match (&why, got) {
                (
                    Explanation::Matches { id }
                    | Explanation::Joins { ends_in: id, .. }
                    | Explanation::Merges { ends_in: id, .. },
                    Match::Known(g),
                ) => *id == g,
                (
                    Explanation::NoCandidate { .. }
                    | Explanation::WordDiffers { .. }
                    | Explanation::TooDifferent { .. },
                    Match::New(_),
                ) => true,
                _ => false,
            };
            if !agrees && disagree < 6 {
                println!("DISAGREE {line:?}: explain {why:?} add {got:?}");
            }
            disagree += usize::from(!agrees);
            // The id given is live.
            assert_eq!(m.get(got.id()).unwrap().merged_into, None, "{line}");
            // Each live template in exactly one leaf, no merged one in any.
            let mut all = Vec::new();
            for root in m.by_length.values() {
                leaves(root, &mut all);
            }
            let mut seen = vec![0; m.templates.len()];
            for l in &all {
                for &i in &l.templates {
                    seen[i] += 1;
                }
            }
            for (i, t) in m.templates.iter().enumerate() {
                assert_eq!(
                    seen[i],
                    usize::from(t.merged_into.is_none()),
                    "template {} in {} leaves",
                    t.id,
                    seen[i]
                );
                if let Some(into) = t.merged_into {
                    assert!(into < t.id);
                }
            }
            assert_eq!(m.live(), m.templates.iter().filter(|t| t.merged_into.is_none()).count());
            // Each template counts the messages given its id.
            assert_eq!(m.templates.iter().map(|t| t.count).sum::<u64>(), total, "counts are conserved");
        }
        // A restart keeps every id's canonical template.
        let r = Miner::restore(MinerConfig::default(), m.templates().to_vec());
        for t in m.templates() {
            assert_eq!(r.canonical(t.id), m.canonical(t.id));
        }
        println!("templates {} live {} explain/add disagreements {disagree}", m.templates.len(), m.live());
        assert_eq!(disagree, 0);
    }
}
