//! The compiled policy: one immutable [`Pipeline`] that every SMTP stage consults.
//!
//! [`Pipeline::compile`] turns a validated [`Config`] into per-stage rule lists
//! (an array indexed by [`Stage`]), with set names resolved to shared sets, so that
//! evaluating a rule is a few lookups and no string matching on names. A pipeline
//! never changes once built: it is shared by `Arc` and a reload compiles a new one
//! and swaps it whole (DESIGN §5.6).
//!
//! Rules run in order and the first one whose conditions all match decides. Every
//! [`Decision`] names the rule that made it (file:line:col), which is what
//! `mtactl test-policy` and the logs show.
//!
//! Safe by default (DESIGN §5.3):
//! - with no deciding rule, a recipient is refused with
//!   `554 5.7.1 <rcpt>: Relay access denied`: an empty policy is never an open relay;
//! - `rcpt-domain` looks at the domain the address will actually be routed to, and
//!   does not match at all when the local part carries routing syntax (`%` hack,
//!   `!` bang path, a quoted `@`, a source route), like Postfix's
//!   `allow_untrusted_routing = no`;
//! - reply text is printable ASCII only, and the recipient echoed in a reply is
//!   sanitised and bounded.

mod address;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::config::{ClientRef, ConditionConfig, Config, RuleAction, RuleConfig};
use crate::lookup::{DomainSet, NetworkSet};

pub use crate::config::{Origin, Reply, Stage};
pub use address::routing_domain;

/// Longest recipient echoed back in a reply, in bytes.
pub const MAX_ECHOED_ADDRESS: usize = 256;

/// What a stage decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Accept (this recipient, this command).
    Accept,
    /// Refuse with this reply (4xx temporary, 5xx permanent).
    Reject(Reply),
    /// No decision: the next rule runs. Never the result of a whole stage.
    Next,
}

/// A verdict and the rule that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What to do.
    pub verdict: Verdict,
    /// The deciding rule's place in the configuration; `None` when no rule decided
    /// and the stage's default applied.
    pub rule: Option<Origin>,
}

/// What the rcpt stage knows about a recipient.
#[derive(Clone, Copy, Debug)]
pub struct RcptContext<'a> {
    /// The client's address as the socket reports it (IPv4-mapped IPv6 is fine).
    pub client_ip: IpAddr,
    /// The recipient, `local@domain`, without angle brackets.
    pub rcpt: &'a str,
}

/// The compiled policy of every stage.
#[derive(Debug, Default)]
pub struct Pipeline {
    /// Rules per stage, indexed by [`Stage::index`].
    stages: [Vec<Rule>; Stage::COUNT],
}

#[derive(Debug)]
struct Rule {
    /// `Accept` or `Reject`; never `Next`.
    verdict: Verdict,
    /// All must match.
    conditions: Box<[Condition]>,
    origin: Origin,
}

#[derive(Debug)]
enum Condition {
    /// The client IP is in the set.
    Client(Arc<NetworkSet>),
    /// The recipient's routing domain is in the set.
    RcptDomain(Arc<DomainSet>),
}

impl Pipeline {
    /// Compiles the rules of a validated configuration.
    ///
    /// Set references were checked by [`Config::parse`]. Should a hand-built
    /// `Config` name a set that does not exist, the rule is compiled to fail closed:
    /// reaching it answers `451 4.3.5` (try later), and an error is logged.
    pub fn compile(config: &Config) -> Pipeline {
        let networks: BTreeMap<&str, Arc<NetworkSet>> = config
            .networks
            .iter()
            .map(|(name, set)| (name.as_str(), Arc::new(set.clone())))
            .collect();
        let domains: BTreeMap<&str, Arc<DomainSet>> = config
            .domains
            .iter()
            .map(|(name, set)| (name.as_str(), Arc::new(set.clone())))
            .collect();

        let mut pipeline = Pipeline::default();
        pipeline.stages[Stage::Rcpt.index()] = config
            .rcpt_rules
            .iter()
            .map(|rule| compile_rule(rule, &networks, &domains))
            .collect();
        pipeline
    }

    /// Decides on one recipient: the first rule whose conditions all match, else
    /// `554 5.7.1 <rcpt>: Relay access denied`.
    pub fn rcpt(&self, ctx: &RcptContext<'_>) -> Decision {
        let domain = routing_domain(ctx.rcpt);
        for rule in &self.stages[Stage::Rcpt.index()] {
            let matched = rule.conditions.iter().all(|c| match c {
                Condition::Client(set) => set.contains(ctx.client_ip),
                Condition::RcptDomain(set) => domain.as_deref().is_some_and(|d| set.contains(d)),
            });
            if matched {
                tracing::debug!(rule = %rule.origin, verdict = ?rule.verdict, "rcpt rule matched");
                return Decision {
                    verdict: rule.verdict.clone(),
                    rule: Some(rule.origin.clone()),
                };
            }
        }
        Decision {
            verdict: Verdict::Reject(relay_denied(ctx.rcpt)),
            rule: None,
        }
    }

    /// How many rules a stage holds.
    pub fn rule_count(&self, stage: Stage) -> usize {
        self.stages[stage.index()].len()
    }
}

/// The default refusal of the rcpt stage, Postfix's wording.
pub fn relay_denied(rcpt: &str) -> Reply {
    Reply::new(
        554,
        [5, 7, 1],
        &format!("<{}>: Relay access denied", echo(rcpt)),
    )
}

/// `text` made safe to echo inside a reply: printable ASCII (anything else becomes
/// `?`) and at most [`MAX_ECHOED_ADDRESS`] bytes.
pub fn echo(text: &str) -> String {
    crate::config::sanitize_text(text, MAX_ECHOED_ADDRESS)
}

fn compile_rule(
    rule: &RuleConfig,
    networks: &BTreeMap<&str, Arc<NetworkSet>>,
    domains: &BTreeMap<&str, Arc<DomainSet>>,
) -> Rule {
    let verdict = match &rule.action {
        RuleAction::Accept => Verdict::Accept,
        RuleAction::Reject(reply) => Verdict::Reject(reply.clone()),
    };
    let mut conditions = Vec::with_capacity(rule.conditions.len());
    for condition in &rule.conditions {
        let compiled = match condition {
            ConditionConfig::Client(ClientRef::Net(net)) => {
                Some(Condition::Client(Arc::new(NetworkSet::new(vec![*net]))))
            }
            ConditionConfig::Client(ClientRef::Set(name)) => {
                networks.get(name.as_str()).cloned().map(Condition::Client)
            }
            ConditionConfig::RcptDomain(name) => domains
                .get(name.as_str())
                .cloned()
                .map(Condition::RcptDomain),
        };
        match compiled {
            Some(c) => conditions.push(c),
            None => {
                tracing::error!(rule = %rule.origin, ?condition, "rule refers to an undefined set; it will tempfail");
                return Rule {
                    verdict: Verdict::Reject(Reply::new(
                        451,
                        [4, 3, 5],
                        "Server configuration error",
                    )),
                    conditions: Box::new([]),
                    origin: rule.origin.clone(),
                };
            }
        }
    }
    Rule {
        verdict,
        conditions: conditions.into_boxed_slice(),
        origin: rule.origin.clone(),
    }
}

#[cfg(test)]
mod tests;
