//! Reading a config file and collecting every problem in it, each as `FILE: key.path: reason`.
//!
//! serde stops at the first error, so loading parses the TOML into a table, deserializes, and on
//! an error records it with its key path (serde_path_to_error), removes that key from the table
//! and tries again. Every key has a default, so removing one never causes a second error; the
//! loop ends when the table deserializes, and the semantic checks of `validate` then run on the
//! result.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_path_to_error::Segment;

use super::Config;

/// At most this many structural errors are collected (each costs one deserialization).
const MAX_PROBLEMS: usize = 64;

/// One thing wrong with a config: the dotted key path and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub reason: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Problem { key: key.into(), reason: reason.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}", render(.file, .problems))]
    Invalid { file: String, problems: Vec<Problem> },
}

fn render(file: &str, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| format!("{file}: {}: {}", p.key, p.reason)).collect();
    lines.join("\n")
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// Load and check a config file. `None` gives the embedded defaults (still checked).
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        None => load_str("", "<defaults>"),
        Some(path) => load_str(&read(path)?, &path.display().to_string()),
    }
}

/// A config file's text (a reload reads it once and loads its parts from that).
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })
}

/// Only the `[[rules]]` of config text (for a reload, where each rule is planned on its own).
pub fn rules_from_str(text: &str, file: &str) -> Result<Vec<super::RuleConfig>, ConfigError> {
    #[derive(serde::Deserialize)]
    struct Rules {
        #[serde(default)]
        rules: Vec<super::RuleConfig>,
    }
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Invalid {
        file: file.to_owned(),
        problems: vec![syntax_problem(text, &e)],
    })?;
    let rules = table.get("rules").cloned().unwrap_or(toml::Value::Array(Vec::new()));
    let mut wrapper = toml::Table::new();
    wrapper.insert("rules".into(), rules);
    serde_path_to_error::deserialize::<_, Rules>(toml::Value::Table(wrapper)).map(|r| r.rules).map_err(|e| {
        ConfigError::Invalid {
            file: file.to_owned(),
            problems: vec![Problem::new(e.path().to_string(), e.inner().message().to_owned())],
        }
    })
}

/// Config text loaded and checked without its `[[rules]]` (which come back empty): for a
/// reload whose only problems are in rules, so that the rest (the certificate among it) still
/// applies while each good rule is applied on its own.
pub fn load_str_except_rules(text: &str, file: &str) -> Result<Config, ConfigError> {
    load_text(text, file, true)
}

/// Load and check config text; `file` names it in error messages.
pub fn load_str(text: &str, file: &str) -> Result<Config, ConfigError> {
    load_text(text, file, false)
}

fn load_text(text: &str, file: &str, without_rules: bool) -> Result<Config, ConfigError> {
    let invalid = |problems| ConfigError::Invalid { file: file.to_owned(), problems };
    let mut table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => return Err(invalid(vec![syntax_problem(text, &e)])),
    };
    if without_rules {
        table.remove("rules");
    }
    let mut problems = Vec::new();
    let config = loop {
        let value = toml::Value::Table(table.clone());
        match serde_path_to_error::deserialize::<_, Config>(value) {
            Ok(config) => break Some(config),
            Err(err) => {
                let segments: Vec<Segment> = err.path().iter().cloned().collect();
                let key = err.path().to_string();
                let reason = err.inner().message().to_owned();
                problems.push(Problem::new(if key == "." { "(top level)".into() } else { key }, reason));
                if problems.len() >= MAX_PROBLEMS || !remove_path(&mut table, &segments) {
                    break None;
                }
            }
        }
    };
    match config {
        Some(mut config) => {
            // Set first: validation asks which keys the file itself sets.
            config.source = text.to_owned();
            problems.extend(config.validate());
            if problems.is_empty() { Ok(config) } else { Err(invalid(problems)) }
        }
        None => Err(invalid(problems)),
    }
}

fn syntax_problem(text: &str, e: &toml::de::Error) -> Problem {
    let at = e.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!("line {line} column {col}")
    });
    Problem::new(at.unwrap_or_else(|| "(syntax)".into()), e.message().to_owned())
}

/// Remove the value at `path`; false when nothing could be removed (no progress possible).
fn remove_path(table: &mut toml::Table, path: &[Segment]) -> bool {
    let Some((last, parents)) = path.split_last() else { return false };
    let mut cur: &mut toml::Value = match parents.first() {
        None => return remove_in_table(table, last),
        Some(Segment::Map { key }) => match table.get_mut(key) {
            Some(v) => v,
            None => return false,
        },
        Some(_) => return false,
    };
    for seg in &parents[1..] {
        cur = match (seg, cur) {
            (Segment::Map { key }, toml::Value::Table(t)) => match t.get_mut(key) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Seq { index }, toml::Value::Array(a)) => match a.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, cur) {
        (seg, toml::Value::Table(t)) => remove_in_table(t, seg),
        (Segment::Seq { index }, toml::Value::Array(a)) if *index < a.len() => {
            a.remove(*index);
            true
        }
        _ => false,
    }
}

fn remove_in_table(t: &mut toml::Table, seg: &Segment) -> bool {
    match seg {
        Segment::Map { key } => t.remove(key).is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match load_str(text, "t.toml") {
            Ok(_) => vec![],
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.into_iter().map(|p| p.to_string()).collect()
            }
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = load_str("", "t.toml").unwrap();
        assert_eq!(c.stream[0].address.port(), 6514);
        assert_eq!(c.http[0].address.port(), 8088);
        assert_eq!(c.admin.address.port(), 9898);
        assert_eq!(c.batch.rows, 8192);
    }

    #[test]
    fn fips_mode_refuses_what_the_fips_module_does_not_do() {
        let argon2 = crate::crypto::password::hash("pw", crate::crypto::password::Scheme::Argon2).unwrap();
        let pbkdf2 =
            crate::crypto::password::hash("pw", crate::crypto::password::Scheme::Pbkdf2Sha256).unwrap();
        let users = format!(
            "[[flight.users]]\nname = \"a\"\npassword_hash = \"{}\"\n[[flight.users]]\nname = \"p\"\npassword_hash = \"{}\"\n",
            argon2.as_str(),
            pbkdf2.as_str()
        );
        let p = problems(&format!("[tls]\nfips = true\n[storage]\nurl = \"s3://logs/a\"\n{users}"));
        let has = |prefix: &str, text: &str| p.iter().any(|l| l.starts_with(prefix) && l.contains(text));
        assert!(has("flight.users[0].password_hash", "is an argon2 hash, not a FIPS-approved"), "{p:?}");
        assert!(!p.iter().any(|l| l.starts_with("flight.users[1]")), "{p:?}");
        assert!(has("storage.url", "outside the FIPS module"), "{p:?}");
        // This build has the FIPS module or says how to get one.
        assert_eq!(has("tls.fips", "--features fips"), !cfg!(feature = "fips"), "{p:?}");
        // Without tls.fips, both kinds load; a FIPS build warns about argon2.
        let c = load_str(&users, "t.toml").unwrap();
        let warned = c.warnings().iter().any(|w| w.key == "flight.users[0].password_hash");
        assert_eq!(warned, cfg!(feature = "fips"));
        // Two costs: a refusal's time tells the minority's users from unknown names.
        let mixed = c.warnings().into_iter().find(|w| w.key == "flight.users").unwrap();
        assert!(
            mixed.reason.contains("2 different costs") && mixed.reason.contains("pbkdf2-sha256$i=600000"),
            "{}",
            mixed.reason
        );
    }

    #[test]
    fn every_structural_problem_is_listed_with_its_key() {
        let p = problems(
            "shutdown_timeot = \"5s\"\n[batch]\nrows = \"many\"\n[[stream]]\nname = \"a\"\naddress = \"nowhere\"\n",
        );
        assert!(p.iter().any(|l| l.starts_with("shutdown_timeot: unknown field")), "{p:?}");
        assert!(p.iter().any(|l| l.starts_with("batch.rows: invalid type")), "{p:?}");
        assert!(p.iter().any(|l| l.starts_with("stream[0].address: ")), "{p:?}");
    }

    #[test]
    fn receivers_sharing_an_outbox_are_refused() {
        // `am:9093` is the default name of the first; its outbox directory is `am_9093`.
        let p = problems(
            "[[alerting.alertmanagers]]\nurl = \"http://am:9093\"\n[[alerting.webhooks]]\nurl = \"http://hooks/x\"\nname = \"am_9093\"\n",
        );
        assert!(
            p.iter().any(|l| l.starts_with(
                "alerting.webhooks[0].name: \"am_9093\" already names alerting.alertmanagers[0]"
            )),
            "{p:?}"
        );
    }

    #[test]
    fn relp_listeners_are_ingest_listeners() {
        let c = load_str("", "t.toml").unwrap();
        assert_eq!((c.relp[0].name.as_str(), c.relp[0].address.port()), ("relp", 2514));
        assert_eq!((c.relp[0].window, c.relp[0].max_frame_bytes.as_u64()), (1024, 64 * 1024));
        assert!(c.relp[0].tls);
        let p = problems(
            "[[relp]]\nname = \"syslog\"\naddress = \"0.0.0.0:2514\"\ntls = false\nwindow = 0\nmax_frame_bytes = \"10B\"\n\
             [[access.send]]\nprincipals = [\"*\"]\nlisteners = [\"syslog\", \"nowhere\"]\n",
        );
        for key in ["relp[0].name", "relp[0].tls", "relp[0].window", "relp[0].max_frame_bytes"] {
            assert!(
                p.iter()
                    .any(|l| l.starts_with(&format!("t.toml: {key}:")) || l.starts_with(&format!("{key}:"))),
                "{key}: {p:?}"
            );
        }
        // The [access] send rules know the listener, not a name nobody has.
        assert!(!p.iter().any(|l| l.contains("\"syslog\" is not")), "{p:?}");
        assert!(p.iter().any(|l| l.contains("\"nowhere\" is not")), "{p:?}");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let p = problems("[batch\nrows = 1\n");
        assert!(p[0].starts_with("line 1 column"), "{p:?}");
    }
}
