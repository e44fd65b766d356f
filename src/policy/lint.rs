//! The static warnings `mtactl check` prints besides the open-relay analysis
//! ([`super::relay_proof`]): rules that can never decide (shadowed by an earlier rule,
//! or with contradictory conditions), sets and tables defined but never used, and
//! `accept`/`hold` rules at rcpt that neither look at the recipient's domain nor
//! restrict the client. Each names the place and suggests a fix; `--strict` makes them
//! errors. See docs/policy-analysis.md.

use crate::config::{
    ClientRef, Condition, ConditionConfig, Config, Origin, RuleAction, RuleConfig, Stage,
};

/// One warning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lint {
    /// Where (a rule, or a set's definition).
    pub at: Origin,
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

impl std::fmt::Display for Lint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}; {}", self.at, self.message, self.fix)
    }
}

/// Whether a rule that matches always ends its stage (so no later rule it covers runs).
fn decides(rule: &RuleConfig) -> bool {
    !rule.warn
        && matches!(
            rule.action,
            RuleAction::Accept
                | RuleAction::Reject(_)
                | RuleAction::Defer(_)
                | RuleAction::Discard
                | RuleAction::Hold
                | RuleAction::Relay(_)
        )
}

/// The first pair of conditions of `rule` that cannot both hold (`tls=#true
/// not-tls=#true`), if any.
fn contradiction(rule: &RuleConfig) -> Option<(&ConditionConfig, &ConditionConfig)> {
    let c = &rule.conditions;
    for (i, a) in c.iter().enumerate() {
        for b in &c[i + 1..] {
            // the same test, once negated (a property cannot be written twice)
            let opposite = a.test == b.test && a.negate != b.negate;
            if opposite {
                return Some((a, b));
            }
        }
    }
    None
}

/// A condition as written (`client="trusted"`, `not-tls=#true`).
fn written(c: &ConditionConfig) -> String {
    let (name, value) = match &c.test {
        Condition::Client(ClientRef::Set(s)) => ("client", s.clone()),
        Condition::Client(ClientRef::Net(n)) => ("client", n.to_string()),
        Condition::Listener(v) => ("listener", v.clone()),
        Condition::Helo(v) => ("helo", v.clone()),
        Condition::Tls(b) => ("tls", format!("#{b}")),
        Condition::Authenticated(b) => ("authenticated", format!("#{b}")),
        Condition::AuthUser(v) => ("auth-user", v.clone()),
        Condition::Sender(v) => ("sender", v.clone()),
        Condition::Rcpt(v) => ("rcpt", v.clone()),
        other => return format!("{}{other:?}", if c.negate { "not-" } else { "" }),
    };
    let value = if value.starts_with('#') {
        value
    } else {
        format!("{value:?}")
    };
    format!("{}{name}={value}", if c.negate { "not-" } else { "" })
}

/// Rules that can never decide: contradictory conditions, or an earlier rule of the
/// stage that decides whenever this one would match (its conditions are a part of
/// this one's).
fn never_fire(config: &Config, out: &mut Vec<Lint>) {
    for stage in Stage::ALL {
        let rules = config.rules(stage);
        for (i, rule) in rules.iter().enumerate() {
            if let Some((a, b)) = contradiction(rule) {
                out.push(Lint {
                    at: rule.origin.clone(),
                    message: format!(
                        "this rule can never match: {} and {} cannot both hold",
                        written(a),
                        written(b)
                    ),
                    fix: "remove one of the two conditions, or the rule".to_owned(),
                });
                continue;
            }
            let shadow = rules[..i].iter().find(|earlier| {
                decides(earlier)
                    && earlier
                        .conditions
                        .iter()
                        .all(|c| rule.conditions.contains(c))
            });
            if let Some(earlier) = shadow {
                out.push(Lint {
                    at: rule.origin.clone(),
                    message: format!(
                        "this rule can never decide: the rule at {} decides first whenever it would match",
                        earlier.origin
                    ),
                    fix: "move it before that rule, or remove it".to_owned(),
                });
            }
        }
    }
}

/// Whether `rule` restricts who gets it: trusted networks, authenticated clients.
fn restricts_client(rule: &RuleConfig) -> bool {
    rule.conditions.iter().any(|c| {
        matches!(
            (&c.test, c.negate),
            (Condition::Client(_), false)
                | (Condition::Authenticated(true), false)
                | (Condition::Authenticated(false), true)
                | (Condition::AuthUser(_), false)
                | (Condition::SenderLogin(_), false)
        )
    })
}

/// Whether `rule` looks at where the recipient is.
fn restricts_domain(rule: &RuleConfig) -> bool {
    rule.conditions.iter().any(|c| {
        !c.negate
            && matches!(
                c.test,
                Condition::RcptDomain(_) | Condition::Rcpt(_) | Condition::RcptMatches(_)
            )
    })
}

/// `accept` or `hold` at rcpt without a domain condition, for clients it does not
/// restrict (the open-relay analysis proves whether that is a relay; this says the
/// rule reads as one).
fn domainless_accepts(config: &Config, out: &mut Vec<Lint>) {
    // a listener where every client has logged in (`auth="required"`)
    let logged_in = |rule: &RuleConfig| {
        rule.conditions.iter().any(|c| match (&c.test, c.negate) {
            (Condition::Listener(name), false) => config
                .listeners
                .iter()
                .any(|l| &l.name == name && matches!(l.auth, crate::config::AuthMode::Required)),
            _ => false,
        })
    };
    // an earlier refusal of the recipients outside some domains already restricts
    let mut domains_refused = false;
    for rule in config.rules(Stage::Rcpt) {
        if !rule.warn
            && matches!(rule.action, RuleAction::Reject(_) | RuleAction::Defer(_))
            && rule.conditions.iter().any(|c| {
                c.negate && matches!(c.test, Condition::RcptDomain(_) | Condition::RcptMatches(_))
            })
        {
            domains_refused = true;
        }
        if domains_refused
            || rule.warn
            || rule.open_relay
            || !matches!(rule.action, RuleAction::Accept | RuleAction::Hold)
            || restricts_domain(rule)
            || restricts_client(rule)
            || logged_in(rule)
        {
            continue;
        }
        let verb = if matches!(rule.action, RuleAction::Hold) {
            "hold"
        } else {
            "accept"
        };
        out.push(Lint {
            at: rule.origin.clone(),
            message: format!(
                "`{verb}` at rcpt for any recipient domain, and for clients it does not restrict"
            ),
            fix: "add rcpt-domain=\"local\" (or the domains you relay for), or client=/authenticated=#true; if relaying for anyone is meant, open-relay=\"intended\"".to_owned(),
        });
    }
}

/// `"NAME"` in `text` (a definition or a reference: a quoted name).
fn mentions(text: &str, name: &str) -> usize {
    text.matches(&format!("\"{name}\"")).count()
}

/// Sets and tables defined and never used. A name is used when it is quoted again
/// anywhere in the configuration's files or its hooks (a rule's condition, a
/// setting's `exempt "trusted"`, a hook's `mta::listed("trusted", ...)`), or is one
/// mtad reads by itself (`domains "local"`). `texts`: every file the policy was built
/// from.
fn unused(config: &Config, texts: &[(String, String)], out: &mut Vec<Lint>) {
    let count = |name: &str| texts.iter().map(|(_, t)| mentions(t, name)).sum::<usize>();
    let kinds = [
        ("networks", config.networks.keys().collect::<Vec<_>>()),
        ("domains", config.domains.keys().collect()),
        ("table", config.tables.keys().collect()),
    ];
    for (kind, names) in kinds {
        for name in names {
            if kind == "domains" && name == "local" {
                continue;
            }
            if count(name) <= 1 {
                out.push(Lint {
                    at: definition(config, texts, kind, name),
                    message: format!("{kind} \"{name}\" is defined but never used"),
                    fix: "use it in a rule, or remove it".to_owned(),
                });
            }
        }
    }
}

/// Where `KIND "NAME"` is written (the main file's first line when it cannot be found).
fn definition(config: &Config, texts: &[(String, String)], kind: &str, name: &str) -> Origin {
    let needle = format!("{kind} \"{name}\"");
    for (file, text) in texts {
        if let Some(at) = text.find(&needle) {
            let line = text[..at].matches('\n').count() + 1;
            let column = at - text[..at].rfind('\n').map_or(0, |n| n + 1) + 1;
            return Origin {
                file: file.as_str().into(),
                line: u32::try_from(line).unwrap_or(u32::MAX),
                column: u32::try_from(column).unwrap_or(u32::MAX),
            };
        }
    }
    Origin {
        file: config.path.display().to_string().into(),
        line: 1,
        column: 1,
    }
}

/// Every warning of `config` whose files (configuration, includes, tables, hooks) are
/// `texts`: `(name, text)`.
pub fn lints(config: &Config, texts: &[(String, String)]) -> Vec<Lint> {
    let mut out = Vec::new();
    never_fire(config, &mut out);
    domainless_accepts(config, &mut out);
    unused(config, texts, &mut out);
    out
}
