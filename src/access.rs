//! Who may do what: the `[access]` rules, evaluated for a principal.
//!
//! Deny by default once rules exist: with no `send` rule every peer that passed the listener's
//! TLS checks may send, and with no `query` rule every authenticated Flight SQL caller may query
//! every table; as soon as one rule of a kind exists, only what some rule allows is allowed.
//! Rules only ever add permissions, so their order does not matter.

use std::collections::{BTreeMap, HashMap};

use crate::config::AccessConfig;

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
    /// Per table: `None` for every row, `Some(sql)` for the rows matching the condition.
    Tables(HashMap<String, Option<String>>),
}

impl QueryGrant {
    /// `None`: the table is not allowed. `Some(None)`: all rows. `Some(Some(cond))`: only rows
    /// where `cond` holds.
    pub fn table(&self, table: &str) -> Option<Option<&str>> {
        match self {
            QueryGrant::Unrestricted => Some(None),
            QueryGrant::Tables(t) => t.get(table).or_else(|| t.get("*")).map(|f| f.as_deref()),
        }
    }

    /// The table names this grant names, for error messages.
    pub fn allowed_tables(&self) -> Vec<String> {
        match self {
            QueryGrant::Unrestricted => vec!["*".into()],
            QueryGrant::Tables(t) => {
                let mut v: Vec<String> = t.keys().cloned().collect();
                v.sort();
                v
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

    /// Whether an entry of a rule's `principals` covers `who` (`None`: no certificate).
    fn matches(&self, entry: &str, who: Option<&str>) -> bool {
        if entry == "*" {
            return true;
        }
        let Some(who) = who else { return false };
        match entry.strip_prefix("group:") {
            Some(g) => self.groups.get(g).is_some_and(|members| members.iter().any(|m| m == who)),
            None => entry == who,
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
    /// `row_filter`, otherwise the rows any of the filters allows.
    pub fn query_grant(&self, who: &str) -> QueryGrant {
        if self.query.is_empty() {
            return QueryGrant::Unrestricted;
        }
        let mut tables: HashMap<String, Option<Vec<String>>> = HashMap::new();
        for (principals, names, filter) in &self.query {
            if !principals.iter().any(|p| self.matches(p, Some(who))) {
                continue;
            }
            for t in names {
                match (tables.get_mut(t), filter) {
                    (Some(None), _) => {}
                    (Some(existing), None) => *existing = None,
                    (Some(Some(fs)), Some(f)) => fs.push(f.clone()),
                    (None, f) => {
                        tables.insert(t.clone(), f.as_ref().map(|f| vec![f.clone()]));
                    }
                }
            }
        }
        QueryGrant::Tables(
            tables
                .into_iter()
                .map(|(t, fs)| {
                    let cond = fs.map(|fs| match fs.as_slice() {
                        [one] => one.clone(),
                        many => many.iter().map(|f| format!("({f})")).collect::<Vec<_>>().join(" OR "),
                    });
                    (t, cond)
                })
                .collect(),
        )
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
        assert!(a.may_send(Some("web-01"), "syslog"));
        assert!(!a.may_send(Some("db-01"), "syslog"));
        assert!(!a.may_send(None, "syslog"));
        assert!(a.may_send(None, "open"));
        assert!(!a.may_send(Some("web-01"), "http"));
        assert!(Access::default().may_send(None, "syslog"));
    }

    #[test]
    fn query_grants_combine_rules() {
        let a = access();
        assert_eq!(a.query_grant("alice").table("audit"), Some(None));
        assert_eq!(a.query_grant("bob").table("logs"), Some(Some("(host LIKE 'web-%') OR (app = 'nginx')")));
        assert_eq!(a.query_grant("bob").table("audit"), None);
        assert_eq!(a.query_grant("carol").table("logs"), Some(None));
        assert_eq!(a.query_grant("mallory").table("logs"), None);
        assert_eq!(Access::default().query_grant("anyone").table("logs"), Some(None));
    }
}
