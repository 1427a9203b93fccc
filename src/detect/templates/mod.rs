//! Online log template mining: each message is matched to a template (its constant words, with
//! `<*>` where values go) or starts a new one, in one pass, with memory bounded by the number of
//! templates rather than the number of messages.
//!
//! The rules go by the shape and the place of tokens, never by particular words, and are the
//! same for every source (users run it on logs nobody tuned it for):
//! - [`mask`]: what has the shape of a value becomes `<*>` before anything is compared: a word
//!   holding a digit, a dotted name (`chrome.exe`, `mail.example.org`), the value of a
//!   `key=value` field (quoted values included);
//! - [`miner`]: Drain's fixed-depth parse tree: messages are bucketed by token count, then by
//!   their first tokens (a token holding a value goes down the `<*>` branch, and a lookup tries
//!   both), and a leaf holds the few templates to compare against. A message joins the most
//!   similar template if at least `similarity` of its positions agree (a `<*>` agrees with
//!   anything) and it differs from it in no plain word: `bytes` / `values`, `Begin` / `End` are
//!   two statements. But a word is a value when it varies: once three templates are one
//!   statement but for a word at one position (`Invalid user admin|guest|oracle from <*>`), they
//!   merge, and that position takes any word from then on. Words in capitals are codes (`GET`,
//!   `RUNNING`): they never merge that way. A template that gains a `<*>` absorbs the templates
//!   it then covers.
//!
//! A template's id is stable; a merged template keeps its id and names the one that took its
//! place (`merged_into`), which later messages get.

pub mod mask;
pub mod miner;
pub mod shared;
pub mod table;

pub use mask::{MaskRules, TokenInfo, Tokens, WILDCARD};
pub use miner::{Explanation, Match, Miner, MinerConfig, OVERFLOW, Template, TemplateId, grouping_accuracy};
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

#[cfg(test)]
mod hostile;
