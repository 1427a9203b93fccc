//! Who may do what: the `[access]` rules, evaluated for a principal.
//!
//! Deny by default once rules exist: with no `send` rule every peer that passed the listener's
//! TLS checks may send, and with no `query` rule every authenticated Flight SQL caller may query
//! every table; as soon as one rule of a kind exists, only what some rule allows is allowed.
//! Rules only ever add permissions, so their order does not matter.

use std::collections::BTreeMap;

use crate::config::AccessConfig;
use crate::query::{Reveals, TABLES};

/// Where a principal's name comes from: the prefix of its full form (`edipi:1234567890`,
/// `dns:web-01.example.org`, `token:grafana`, `user:alice`). Certificates give the first six
/// (`[identity] principal_from`), Flight SQL credentials the last two.
pub const PRINCIPAL_KINDS: [&str; 8] = ["edipi", "upn", "email", "dns", "cn", "dn", "token", "user"];

/// The kind of a rule's entry or a principal's name, if it is written in full form.
pub fn kind_of(name: &str) -> Option<&'static str> {
    let (kind, _) = name.split_once(':')?;
    PRINCIPAL_KINDS.iter().copied().find(|k| *k == kind)
}

/// Whether a rule's entry names the principal `who` (always in full form). An entry in full
/// form names exactly that principal; a bare entry (`1234567890`, as written before principals
/// carried their kind) names the principal of that value whatever its kind, which is why
/// `validate` warns about bare entries that more than one kind could produce.
pub fn names(entry: &str, who: &str) -> bool {
    if entry == who {
        return true;
    }
    if kind_of(entry).is_some() {
        return false;
    }
    match kind_of(who) {
        Some(kind) => who[kind.len() + 1..] == *entry,
        None => false,
    }
}

/// The `[access]` rules in force, swapped whole at a reload: a connection is checked against
/// the rules of the moment it arrives, a query against those of the moment it is planned.
pub type SharedAccess = std::sync::Arc<arc_swap::ArcSwap<Access>>;

/// A [`SharedAccess`] holding `cfg`'s rules.
pub fn shared(cfg: &AccessConfig) -> SharedAccess {
    std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(Access::new(cfg)))
}

/// The compiled `[access]` section.
#[derive(Debug, Clone, Default)]
pub struct Access {
    groups: BTreeMap<String, Vec<String>>,
    send: Vec<(Vec<String>, Vec<String>)>,
    query: Vec<(Vec<String>, Vec<String>, Option<String>)>,
}

/// What one principal may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryGrant {
    /// No query rules exist: every table, every row.
    Unrestricted,
    /// The tables the rules grant (`*` expanded to every table served), each with `None` for
    /// every row or `Some(sql)` for the rows matching the condition; and the tables a rule
    /// names but the principal may not read after all, with the reason.
    Tables { tables: BTreeMap<String, Option<String>>, withheld: BTreeMap<String, String> },
}

impl QueryGrant {
    /// `None`: the table is not allowed. `Some(None)`: all rows. `Some(Some(cond))`: only rows
    /// where `cond` holds.
    pub fn table(&self, table: &str) -> Option<Option<&str>> {
        match self {
            QueryGrant::Unrestricted => Some(None),
            QueryGrant::Tables { tables, .. } => tables.get(table).map(|f| f.as_deref()),
        }
    }

    /// The granted tables, each with its row filter if it has one.
    pub fn tables(&self) -> Vec<(&str, Option<&str>)> {
        match self {
            QueryGrant::Unrestricted => TABLES.iter().map(|t| (t.name, None)).collect(),
            QueryGrant::Tables { tables, .. } => {
                tables.iter().map(|(t, f)| (t.as_str(), f.as_deref())).collect()
            }
        }
    }

    /// Whether some granted table has a row filter.
    pub fn filters_rows(&self) -> bool {
        self.tables().iter().any(|(_, f)| f.is_some())
    }

    /// Why `principal` may not query `table`, for the error a client gets.
    pub fn denial(&self, principal: &str, table: &str) -> String {
        match self {
            QueryGrant::Tables { withheld, .. } if withheld.contains_key(table) => {
                format!("{principal} may not query table {table}: {}", withheld[table])
            }
            _ => {
                let allowed: Vec<&str> = self.tables().into_iter().map(|(t, _)| t).collect();
                format!(
                    "{principal} may not query table {table} ([access] query rules allow: {})",
                    if allowed.is_empty() { "no table".to_owned() } else { allowed.join(", ") }
                )
            }
        }
    }
}

impl Access {
    pub fn new(cfg: &AccessConfig) -> Self {
        Access {
            groups: cfg.groups.clone(),
            send: cfg.send.iter().map(|r| (r.principals.clone(), r.listeners.clone())).collect(),
            query: cfg
                .query
                .iter()
                .map(|r| (r.principals.clone(), r.tables.clone(), r.row_filter.clone()))
                .collect(),
        }
    }

    /// Whether an entry of a rule's `principals` (or of a group) covers `who`
    /// (`None`: no certificate).
    fn matches(&self, entry: &str, who: Option<&str>) -> bool {
        if entry == "*" {
            return true;
        }
        let Some(who) = who else { return false };
        match entry.strip_prefix("group:") {
            Some(g) => self.groups.get(g).is_some_and(|members| members.iter().any(|m| names(m, who))),
            None => names(entry, who),
        }
    }

    /// May `who` send to `listener`?
    pub fn may_send(&self, who: Option<&str>, listener: &str) -> bool {
        self.send.is_empty()
            || self.send.iter().any(|(principals, listeners)| {
                listeners.iter().any(|l| l == "*" || l == listener)
                    && principals.iter().any(|p| self.matches(p, who))
            })
    }

    /// What `who` may read. Several rules for one table combine: all rows if any rule has no
    /// `row_filter`, otherwise the rows any of the filters allows. The tables derived from
    /// `logs` (templates, alerts, rule results) hold text of every row, so they are withheld
    /// from a principal that may not read every row of `logs`, whatever the rules name; the
    /// audit trail tells who sent what over all of `logs`, so a principal whose `logs` grant
    /// has a row filter may not read it either.
    pub fn query_grant(&self, who: &str) -> QueryGrant {
        if self.query.is_empty() {
            return QueryGrant::Unrestricted;
        }
        let mut granted: BTreeMap<String, Option<Vec<String>>> = BTreeMap::new();
        for (principals, names, filter) in &self.query {
            if !principals.iter().any(|p| self.matches(p, Some(who))) {
                continue;
            }
            let names: Vec<&str> = if names.iter().any(|t| t == "*") {
                TABLES.iter().map(|t| t.name).collect()
            } else {
                names.iter().map(String::as_str).collect()
            };
            for t in names {
                match (granted.get_mut(t), filter) {
                    (Some(None), _) => {}
                    (Some(existing), None) => *existing = None,
                    (Some(Some(fs)), Some(f)) => fs.push(f.clone()),
                    (None, f) => {
                        granted.insert(t.to_owned(), f.as_ref().map(|f| vec![f.clone()]));
                    }
                }
            }
        }
        let mut tables: BTreeMap<String, Option<String>> = granted
            .into_iter()
            .map(|(t, fs)| {
                let cond = fs.map(|fs| match fs.as_slice() {
                    [one] => one.clone(),
                    many => many.iter().map(|f| format!("({f})")).collect::<Vec<_>>().join(" OR "),
                });
                (t, cond)
            })
            .collect();
        let mut withheld = BTreeMap::new();
        let logs = tables.get("logs").cloned();
        for t in &TABLES {
            let why = match (t.reveals, &logs) {
                (Reveals::Traffic | Reveals::LogText, Some(Some(_))) => {
                    "it tells about every row of logs, and this principal's logs grant has a row_filter"
                }
                (Reveals::LogText, None) => {
                    "it holds text from every row of logs, which this principal may not read"
                }
                _ => continue,
            };
            if tables.remove(t.name).is_some() {
                withheld.insert(t.name.to_owned(), why.to_owned());
            }
        }
        QueryGrant::Tables { tables, withheld }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{QueryRule, SendRule};

    fn access() -> Access {
        let mut cfg = AccessConfig::default();
        cfg.groups.insert("shippers".into(), vec!["web-01".into(), "web-02".into()]);
        cfg.send
            .push(SendRule { principals: vec!["group:shippers".into()], listeners: vec!["syslog".into()] });
        cfg.send.push(SendRule { principals: vec!["*".into()], listeners: vec!["open".into()] });
        let q = |p: &str, t: &str, f: Option<&str>| QueryRule {
            principals: vec![p.into()],
            tables: vec![t.into()],
            row_filter: f.map(Into::into),
        };
        cfg.query = vec![
            q("alice", "*", None),
            q("bob", "logs", Some("host LIKE 'web-%'")),
            q("bob", "logs", Some("app = 'nginx'")),
            q("carol", "logs", Some("host = 'x'")),
            q("carol", "logs", None),
        ];
        Access::new(&cfg)
    }

    #[test]
    fn send_rules_deny_by_default() {
        let a = access();
        assert!(a.may_send(Some("dns:web-01"), "syslog"));
        assert!(!a.may_send(Some("dns:db-01"), "syslog"));
        assert!(!a.may_send(None, "syslog"));
        assert!(a.may_send(None, "open"));
        assert!(!a.may_send(Some("dns:web-01"), "http"));
        assert!(Access::default().may_send(None, "syslog"));
    }

    #[test]
    fn query_grants_combine_rules() {
        let a = access();
        assert_eq!(a.query_grant("user:alice").table("audit"), Some(None));
        assert_eq!(
            a.query_grant("token:bob").table("logs"),
            Some(Some("(host LIKE 'web-%') OR (app = 'nginx')"))
        );
        assert_eq!(a.query_grant("token:bob").table("audit"), None);
        assert_eq!(a.query_grant("cn:carol").table("logs"), Some(None));
        assert_eq!(a.query_grant("user:mallory").table("logs"), None);
        assert_eq!(Access::default().query_grant("anyone").table("logs"), Some(None));
    }

    #[test]
    fn full_names_name_one_kind_and_bare_names_any() {
        assert!(names("edipi:1234567890", "edipi:1234567890"));
        assert!(!names("edipi:1234567890", "cn:1234567890"));
        assert!(!names("token:grafana", "user:grafana"));
        assert!(names("1234567890", "edipi:1234567890"));
        assert!(names("1234567890", "cn:1234567890"));
        assert!(names("CN=a:b,O=c", "dn:CN=a:b,O=c"));
        assert!(!names("dns:web-01", "dns:web-01.example.org"));
        assert!(!names("web-01", "local"));
        let mut cfg = AccessConfig::default();
        cfg.groups.insert("cac".into(), vec!["edipi:1234567890".into()]);
        cfg.send.push(SendRule { principals: vec!["group:cac".into()], listeners: vec!["*".into()] });
        let a = Access::new(&cfg);
        assert!(a.may_send(Some("edipi:1234567890"), "syslog"));
        assert!(!a.may_send(Some("cn:1234567890"), "syslog"), "a CN is not the CAC holder");
    }

    #[test]
    fn tables_telling_about_all_of_logs_need_all_of_logs() {
        let mut cfg = AccessConfig::default();
        let q = |p: &str, t: &[&str], f: Option<&str>| QueryRule {
            principals: vec![p.into()],
            tables: t.iter().map(|&t| t.into()).collect(),
            row_filter: f.map(Into::into),
        };
        cfg.query = vec![
            q("alice", &["*"], None),
            q("bob", &["*"], Some("host LIKE 'web-%'")),
            q("bob", &["audit"], None),
            q("carol", &["templates", "alerts"], None),
            q("dave", &["logs"], Some("host = 'a'")),
            q("dave", &["rule_results"], None),
        ];
        let a = Access::new(&cfg);
        let alice = a.query_grant("alice");
        for t in TABLES {
            assert_eq!(alice.table(t.name), Some(None), "{}", t.name);
        }
        let bob = a.query_grant("bob");
        assert_eq!(bob.table("logs"), Some(Some("host LIKE 'web-%'")));
        for t in ["audit", "templates", "alerts", "rule_results"] {
            assert_eq!(bob.table(t), None, "{t}");
            assert!(bob.denial("bob", t).contains("row_filter"), "{}", bob.denial("bob", t));
        }
        let carol = a.query_grant("carol");
        assert_eq!(carol.table("templates"), None);
        assert!(carol.denial("carol", "alerts").contains("may not read"));
        let dave = a.query_grant("dave");
        assert_eq!(dave.table("rule_results"), None);
        assert_eq!(dave.tables(), vec![("logs", Some("host = 'a'"))]);
        assert!(dave.denial("dave", "audit").contains("allow: logs"), "{}", dave.denial("dave", "audit"));
        // An auditor without any logs grant reads the audit trail (it holds no log text).
        cfg.query = vec![q("erin", &["audit", "templates"], None)];
        let erin = Access::new(&cfg).query_grant("erin");
        assert_eq!(erin.table("audit"), Some(None));
        assert_eq!(erin.table("templates"), None);
    }
}
