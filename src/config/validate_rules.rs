//! Checks of `[[rules]]` (including planning each rule's SQL with DataFusion) and `[alerting]`.

use std::collections::HashMap;
use std::time::Duration;

use super::{Config, Problem, ReceiverConfig};

/// Rule names and label names: what Prometheus and Alertmanager accept as label values/names.
fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Config {
    pub(super) fn validate_rules(&self, out: &mut Vec<Problem>) {
        if self.detect.idle_timeout.is_zero() {
            out.push(Problem::new("detect.idle_timeout", "must be greater than 0"));
        }
        if self.detect.max_baseline_keys == 0 {
            out.push(Problem::new("detect.max_baseline_keys", "must be at least 1 (the default is 50000)"));
        }
        for (name, d) in [
            ("volume", &self.detect.volume),
            ("error_ratio", &self.detect.error_ratio),
            ("new_templates", &self.detect.new_templates),
        ] {
            if d.window < Duration::from_secs(1) {
                out.push(Problem::new(format!("detect.{name}.window"), "must be at least 1s"));
            }
            if !(d.sensitivity > 0.0 && d.sensitivity.is_finite()) {
                out.push(Problem::new(
                    format!("detect.{name}.sensitivity"),
                    "must be a number greater than 0",
                ));
            }
            if d.memory == 0 {
                out.push(Problem::new(format!("detect.{name}.memory"), "must be at least 1 window"));
            }
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut plannable = true;
        for (i, r) in self.rules.iter().enumerate() {
            let key = |k: &str| format!("rules[{i}].{k}");
            if r.name.is_empty() || !r.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)) {
                out.push(Problem::new(
                    key("name"),
                    "must be non-empty and use only letters, digits, '-' and '_' (it names alerts and metrics)",
                ));
            } else if crate::detect::builtin::NAMES.contains(&r.name.as_str()) {
                out.push(Problem::new(
                    key("name"),
                    format!("\"{}\" is the name of a built-in detector ([detect.{}])", r.name, r.name),
                ));
            } else if let Some(other) = names.insert(&r.name, i) {
                out.push(Problem::new(
                    key("name"),
                    format!("\"{}\" is already the name of rules[{other}]", r.name),
                ));
            }
            if r.sql.trim().is_empty() {
                out.push(Problem::new(
                    key("sql"),
                    format!("rule \"{}\": must be a query over `events`", r.name),
                ));
                plannable = false;
            }
            if r.window < Duration::from_millis(100) {
                out.push(Problem::new(key("window"), "must be at least 100ms"));
                plannable = false;
            }
            if let Some(every) = r.every {
                let (w, e) = (r.window.as_nanos(), every.as_nanos());
                if every < Duration::from_millis(100) || e > w || w % e != 0 {
                    out.push(Problem::new(
                        key("every"),
                        format!(
                            "must be at least 100ms and divide window ({}) evenly",
                            humantime::format_duration(r.window)
                        ),
                    ));
                    plannable = false;
                }
            }
            if !matches!(r.severity.as_str(), "critical" | "error" | "warning" | "info") {
                out.push(Problem::new(key("severity"), "must be one of critical, error, warning, info"));
            }
            for l in r.labels.keys() {
                if !is_label_name(l) || matches!(l.as_str(), "alertname" | "severity") {
                    out.push(Problem::new(
                        format!("rules[{i}].labels.{l}"),
                        "is not a label name this rule may set (letters, digits and '_'; not alertname or severity)",
                    ));
                }
            }
        }
        if plannable {
            out.extend(crate::stream::check(self));
        }
    }

    pub(super) fn validate_alerting(&self, out: &mut Vec<Problem>) {
        let a = &self.alerting;
        if a.resend_interval < Duration::from_secs(1) {
            out.push(Problem::new("alerting.resend_interval", "must be at least 1s"));
        }
        if a.queue_max == 0 {
            out.push(Problem::new("alerting.queue_max", "must be at least 1"));
        }
        if a.timeout.is_zero() {
            out.push(Problem::new("alerting.timeout", "must be greater than 0"));
        }
        if a.max_backoff < Duration::from_secs(1) {
            out.push(Problem::new("alerting.max_backoff", "must be at least 1s"));
        }
        let mut names: HashMap<String, String> = HashMap::new();
        let receivers = a
            .alertmanagers
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("alerting.alertmanagers[{i}]"), r))
            .chain(a.webhooks.iter().enumerate().map(|(i, r)| (format!("alerting.webhooks[{i}]"), r)));
        for (key, r) in receivers {
            match receiver_name(r) {
                Ok(name) => {
                    // Compared as outbox directory names: `a:1` and `a_1` would share one.
                    if let Some(other) = names.insert(crate::alert::notify::outbox_name(&name), key.clone()) {
                        out.push(Problem::new(
                            format!("{key}.name"),
                            format!("\"{name}\" already names {other} (':' counts as '_')"),
                        ));
                    }
                }
                Err(reason) => {
                    out.push(Problem::new(format!("{key}.url"), reason));
                    continue;
                }
            }
            if r.url.starts_with("https://") && r.ca_file.is_none() {
                out.push(Problem::new(
                    format!("{key}.ca_file"),
                    "is required for an https URL (the CA that verifies it)",
                ));
            }
            if r.cert_file.is_some() != r.key_file.is_some() {
                out.push(Problem::new(format!("{key}.key_file"), "cert_file and key_file go together"));
            }
            // PEM files must hold what they are for: a CA file without a certificate would
            // load and fail every delivery's handshake, a CSR or an encrypted key would stop
            // the daemon at its next start. Each is read as the receiver's client reads it.
            let before = out.len();
            for (k, f, label) in [
                ("ca_file", &r.ca_file, "CERTIFICATE"),
                ("cert_file", &r.cert_file, "CERTIFICATE"),
                ("key_file", &r.key_file, "PRIVATE KEY"),
            ] {
                if let Some(f) = f {
                    super::validate::check_pem(out, &format!("{key}.{k}"), f, label);
                }
            }
            if out.len() == before
                && r.url.starts_with("https://")
                && let Err(e) = crate::alert::http::Client::new(r, a.timeout)
            {
                out.push(Problem::new(key.clone(), e.to_string()));
            }
            if let Some(f) = &r.secret_file
                && let Err(e) = std::fs::metadata(f)
            {
                out.push(Problem::new(
                    format!("{key}.secret_file"),
                    format!("cannot read {}: {e}", f.display()),
                ));
            }
        }
        for (i, r) in a.alertmanagers.iter().enumerate() {
            if r.secret_file.is_some() {
                out.push(Problem::new(
                    format!("alerting.alertmanagers[{i}].secret_file"),
                    "is for webhooks; Alertmanager takes no signature",
                ));
            }
        }
    }
}

/// A receiver's name: its own, or `host:port` of its URL; an error if the URL is not one the
/// notifier can post to.
pub fn receiver_name(r: &ReceiverConfig) -> Result<String, String> {
    let uri: hyper::Uri = r.url.parse().map_err(|e| format!("is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("must start with http:// or https://".into()),
    }
    let Some(auth) = uri.authority() else { return Err("has no host".into()) };
    match &r.name {
        Some(n) if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) => {
            Err(format!("names the receiver \"{n}\", which may only use letters, digits and '-_.:'"))
        }
        Some(n) => Ok(n.clone()),
        None => Ok(auth.as_str().to_owned()),
    }
}
