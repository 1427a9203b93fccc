//! What a reload cannot apply: settings read once at start (listeners' addresses and limits,
//! the data directory, batching, storage, ...). A reload that changes one of them applies the
//! rest and says which keys wait for a restart, instead of leaving the operator to believe
//! that, say, `[admin] tls = true` is in force. Values are compared as written: `"600s"` for
//! `"10m"` is reported too.

use std::collections::BTreeSet;

use toml::{Table, Value};

/// Whole top-level keys that need a restart.
const RESTART_ONLY: [&str; 9] =
    ["data_dir", "shutdown_timeout", "log", "batch", "storage", "cluster", "query", "audit", "seal"];
/// The keys of a listener's table that a reload applies (client trust); the rest need a
/// restart.
const LISTENER_RELOADABLE: [&str; 3] = ["client_auth", "client_ca_file", "crl_files"];
/// `[flight]`: client trust and the credentials.
const FLIGHT_RELOADABLE: [&str; 6] =
    ["client_auth", "client_ca_file", "crl_files", "tokens", "users", "token_file"];
/// The keys of `[detect]` that need a restart.
const DETECT_RESTART_ONLY: [&str; 4] = ["templates", "allowed_lateness", "idle_timeout", "results_retention"];
/// The keys of `[tls]` that need a restart.
const TLS_RESTART_ONLY: [&str; 2] = ["trust_reload_interval", "fips"];

/// The keys, as `validate` names them, whose value differs between the file the daemon
/// started with (`running`) and `new`, and which a reload does not apply. Files that do not
/// parse compare as empty (a reload refuses those anyway).
pub fn restart_only_changes(running: &str, new: &str) -> Vec<String> {
    let (a, b) = (parse(running), parse(new));
    let mut out: Vec<String> =
        RESTART_ONLY.iter().filter(|k| a.get(**k) != b.get(**k)).map(|k| (*k).to_owned()).collect();
    for list in ["stream", "http", "otlp", "relp"] {
        let (x, y) = (array(&a, list), array(&b, list));
        if x.len() != y.len() {
            out.push(list.to_owned());
            continue;
        }
        for (i, (p, q)) in x.iter().zip(y).enumerate() {
            out.extend(changed(Some(p), Some(q), &LISTENER_RELOADABLE).map(|k| format!("{list}[{i}].{k}")));
        }
    }
    out.extend(changed(a.get("admin"), b.get("admin"), &LISTENER_RELOADABLE).map(|k| format!("admin.{k}")));
    out.extend(changed(a.get("flight"), b.get("flight"), &FLIGHT_RELOADABLE).map(|k| format!("flight.{k}")));
    for (section, keys) in [("detect", &DETECT_RESTART_ONLY[..]), ("tls", &TLS_RESTART_ONLY[..])] {
        let table = |t: &Table| t.get(section).and_then(Value::as_table).cloned().unwrap_or_default();
        let (sa, sb) = (table(&a), table(&b));
        out.extend(keys.iter().filter(|k| sa.get(**k) != sb.get(**k)).map(|k| format!("{section}.{k}")));
    }
    out
}

fn parse(text: &str) -> Table {
    toml::from_str(text).unwrap_or_default()
}

fn array<'a>(t: &'a Table, key: &str) -> &'a [Value] {
    t.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// The keys of two tables whose values differ, but for `except`.
fn changed<'a>(
    a: Option<&'a Value>,
    b: Option<&'a Value>,
    except: &'a [&str],
) -> impl Iterator<Item = String> + 'a {
    let table = |v: Option<&'a Value>| v.and_then(Value::as_table);
    let (ta, tb) = (table(a), table(b));
    let keys: BTreeSet<&String> = ta.into_iter().chain(tb).flat_map(|t| t.keys()).collect();
    keys.into_iter()
        .filter(move |k| {
            !except.contains(&k.as_str()) && ta.and_then(|t| t.get(*k)) != tb.and_then(|t| t.get(*k))
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_a_reload_cannot_apply_are_named() {
        let running = r#"
data_dir = "/var/lib/logwarden"
[admin]
address = "127.0.0.1:9100"
[[http]]
name = "h"
address = "0.0.0.0:8443"
[flight.auth_limits]
max_failures = 10
"#;
        let new = r#"
data_dir = "/var/lib/logwarden"
[admin]
address = "127.0.0.1:9100"
tls = true
[[http]]
name = "h"
address = "0.0.0.0:8443"
client_auth = "required"
[flight]
tokens = []
[flight.auth_limits]
max_failures = 5
[[rules]]
name = "r"
"#;
        assert_eq!(restart_only_changes(running, new), ["admin.tls", "flight.auth_limits"]);
        assert!(restart_only_changes(running, running).is_empty());
        assert!(restart_only_changes("", "").is_empty());
        let more = format!("{running}\n[[http]]\nname = \"h2\"\n");
        assert_eq!(restart_only_changes(running, &more), ["http"]);
        let read_once = format!(
            "{running}\n[tls]\ntrust_reload_interval = \"1m\"\n[detect]\nresults_retention = \"1d\"\n"
        );
        assert_eq!(
            restart_only_changes(running, &read_once),
            ["detect.results_retention", "tls.trust_reload_interval"]
        );
    }
}
