//! [`Miner::explain`]: why a message gets the template it gets, told before the miner learns
//! from it (`logwarden templates --explain`), by the same rules and candidates as
//! [`Miner::add`].

use super::{Miner, Outcome, TemplateId, TokenInfo, for_each_leaf, similarity, wildcard_token};
use crate::detect::templates::mask;

/// Why a message gets the template it gets, as [`Miner::explain`] tells it before the miner
/// learns from the message.
#[derive(Debug, Clone, PartialEq)]
pub enum Explanation {
    /// Every position agrees with template `id` (a `<*>` agrees with anything).
    Matches { id: TemplateId },
    /// Joins template `id`: `similarity` of the positions agree, at least the threshold, and
    /// no plain word differs; the positions in `generalized` (0-based, with the template's
    /// token and the message's) become `<*>`. The message ends in `ends_in`: `id`, or an
    /// older template that `id` then covers and merges into.
    Joins {
        id: TemplateId,
        similarity: f64,
        threshold: f64,
        generalized: Vec<(usize, String, String)>,
        ends_in: TemplateId,
    },
    /// Templates `variants` and the message are one statement but for the plain word at
    /// `position`, which differs in each: that word is a value, and they merge into the first
    /// (or an older template they then cover: `ends_in`).
    Merges { variants: Vec<TemplateId>, position: usize, word: String, ends_in: TemplateId },
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

/// What [`Explanation`] adds when the template a message joined then merges into an older one.
fn then_merges(f: &mut std::fmt::Formatter<'_>, joined: TemplateId, ends_in: TemplateId) -> std::fmt::Result {
    match joined == ends_in {
        true => Ok(()),
        false => write!(f, "; template {joined} then covers template {ends_in}, older, and merges into it"),
    }
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Explanation::Matches { id } => write!(f, "matches template {id} in every position"),
            Explanation::Joins { id, similarity, threshold, generalized, ends_in } => {
                write!(
                    f,
                    "joins template {id}: {similarity:.2} of positions agree (threshold {threshold:.2})"
                )?;
                for (pos, was, now) in generalized {
                    write!(f, "; token {} {was:?} vs {now:?} becomes <*>", pos + 1)?;
                }
                then_merges(f, *id, *ends_in)
            }
            Explanation::Merges { variants, position, word, ends_in } => {
                let ids: Vec<String> = variants.iter().map(|id| id.to_string()).collect();
                write!(
                    f,
                    "joins template {}: templates {} and this line differ only in the word at token {} (now {word:?}), so it is a value and they merge",
                    variants[0],
                    ids.join(", "),
                    position + 1
                )?;
                then_merges(f, variants[0], *ends_in)
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
        let mut tokens = self.tokens();
        tokens.fill(message, &self.hasher);
        let info = tokens.info();
        let text = mask::masked(message, self.cfg.mask);
        let token_at =
            |tokens: &[Box<str>], pos: usize| tokens.get(pos).map(|t| t.to_string()).unwrap_or_default();
        if let Some((i, sim, _)) = self.best_candidate(info)
            && sim >= self.cfg.similarity
        {
            let id = self.templates[i].id;
            let generalized: Vec<(usize, String, String)> = self.slots[i]
                .iter()
                .zip(info)
                .enumerate()
                .filter(|(_, (slot, t))| !slot.is_wildcard && slot.hash != t.hash)
                .map(|(pos, _)| (pos, token_at(&self.templates[i].tokens, pos), token_at(&text, pos)))
                .collect();
            if generalized.is_empty() {
                return Explanation::Matches { id };
            }
            let ends_in = self.templates[self.ends_in(i, &self.generalized(i, &[info]))].id;
            return Explanation::Joins {
                id,
                similarity: sim,
                threshold: self.cfg.similarity,
                generalized,
                ends_in,
            };
        }
        if let Outcome::Merge { variants, position } = self.outcome(info) {
            let mut all: Vec<Vec<TokenInfo>> = variants[1..].iter().map(|&v| self.slots[v].clone()).collect();
            all.push(info.to_vec());
            let all: Vec<&[TokenInfo]> = all.iter().map(Vec::as_slice).collect();
            let ends_in = self.templates[self.ends_in(variants[0], &self.generalized(variants[0], &all))].id;
            let variants = variants.iter().map(|&i| self.templates[i].id).collect();
            return Explanation::Merges { variants, position, word: token_at(&text, position), ends_in };
        }
        // The candidate agreeing in most positions, the plain-word rule aside: what kept the
        // message from it.
        let share = |i: usize| similarity(&self.slots[i], info, None).map_or(0.0, |(s, _)| s);
        let mut closest: Option<(usize, f64, Option<&[usize]>)> = None;
        if let Some(root) = self.by_length.get(&info.len()) {
            for_each_leaf(root, info, self.levels(), &mut |leaf| {
                for &i in &leaf.templates {
                    if closest.is_none_or(|(_, s, _)| share(i) > s) {
                        closest = Some((i, share(i), self.words(leaf)));
                    }
                }
            });
        }
        let Some((i, _, words)) = closest else {
            return self.new_one(Explanation::NoCandidate { tokens: info.len() });
        };
        let id = self.templates[i].id;
        self.new_one(match similarity(&self.slots[i], info, words) {
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

    /// Template `i`'s slots once it has taken in each of `others` (as [`Miner::generalize`]).
    fn generalized(&self, i: usize, others: &[&[TokenInfo]]) -> Vec<TokenInfo> {
        let mut slots = self.slots[i].clone();
        for tokens in others {
            for (slot, t) in slots.iter_mut().zip(*tokens) {
                if !slot.is_wildcard && slot.hash != t.hash {
                    *slot = wildcard_token(self.wildcard_hash);
                }
            }
        }
        slots
    }

    /// The template a message ends in when template `i` takes it in as `generalized` (its slots
    /// then): `i`, or an older template it then covers ([`Miner::sweep`]).
    fn ends_in(&self, i: usize, generalized: &[TokenInfo]) -> usize {
        self.covered_by(generalized, i).into_iter().fold(i, usize::min)
    }

    /// `why`, unless no new template can be made.
    fn new_one(&self, why: Explanation) -> Explanation {
        match self.templates.len() >= self.cfg.max_templates {
            true => Explanation::Overflow,
            false => why,
        }
    }
}
