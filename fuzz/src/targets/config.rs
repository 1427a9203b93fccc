//! Config loading (`config::load_str` and the reload's `load_str_except_rules` and
//! `rules_from_str`): TOML parsing, the structural-problem loop, and `validate` (rules planned
//! with DataFusion, listener and TLS checks).
//!
//! Input: the file's text (invalid UTF-8 is refused before parsing, by `read`). Invariants:
//! - loading never panics, and gives the same answer twice;
//! - a refusal lists at least one problem, each with a key and a reason, each line of the
//!   message naming the file; a syntax error is the only problem and names a line of the text;
//! - a file that loads also loads without its rules, and its rules load on their own, the same
//!   number (a reload relies on both).

use logwarden::config::{ConfigError, load_str, load_str_except_rules, rules_from_str};

const FILE: &str = "fuzz.toml";

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let loaded = load_str(text, FILE);
    let again = load_str(text, FILE);
    assert_eq!(render(&loaded), render(&again), "loading is not deterministic");
    match loaded {
        Ok(config) => {
            assert!(load_str_except_rules(text, FILE).is_ok(), "a valid file refused without its rules");
            match rules_from_str(text, FILE) {
                Ok(rules) => assert_eq!(rules.len(), config.rules.len(), "the rules load to another count"),
                Err(e) => panic!("the rules of a valid file refused on their own: {e}"),
            }
        }
        Err(ConfigError::Invalid { file, problems }) => {
            assert_eq!(file, FILE);
            assert!(!problems.is_empty(), "refused without a problem");
            for p in &problems {
                assert!(!p.key.is_empty() && !p.reason.is_empty(), "a problem without key or reason: {p:?}");
            }
            let message = ConfigError::Invalid { file, problems: problems.clone() }.to_string();
            assert!(
                message.lines().all(|l| l.starts_with("fuzz.toml: "))
                    || problems.iter().any(|p| p.reason.contains('\n')),
                "a line of the message does not name the file: {message}"
            );
            if toml::from_str::<toml::Table>(text).is_err() {
                assert_eq!(problems.len(), 1, "a syntax error with more than one problem: {problems:?}");
                let key = &problems[0].key;
                if let Some(rest) = key.strip_prefix("line ") {
                    let line: usize =
                        rest.split(' ').next().and_then(|n| n.parse().ok()).expect("a line number");
                    assert!(
                        line >= 1 && line <= text.lines().count() + 1,
                        "syntax error at line {line}, past the text"
                    );
                } else {
                    assert_eq!(key, "(syntax)", "a syntax error without a place");
                }
            }
        }
        Err(e) => panic!("loading text failed as if reading a file: {e}"),
    }
}

fn render(r: &Result<logwarden::config::Config, ConfigError>) -> String {
    match r {
        Ok(c) => format!("ok: {} rules", c.rules.len()),
        Err(e) => e.to_string(),
    }
}
