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
mod dry_run;
mod message;
pub mod script;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use regex::Regex;
use tracing::{debug, warn};

use crate::config::{ClientRef, Condition, Config, RuleAction, RuleConfig};
use crate::lookup::{DomainSet, NetworkSet};

pub use crate::config::{Origin, Reply, Stage};
pub use address::routing_domain;
pub use dry_run::{DryEnvelope, DryRunReport, StageResult};
pub use message::{HeaderEdit, HeaderLine, apply_header_edits, parse_headers};

/// Longest address echoed back in a reply.
pub const MAX_ECHOED_ADDRESS: usize = 256;

/// What a stage decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead (the command is accepted).
    Accept,
    /// Refuse with this reply (4xx or 5xx).
    Reject(Reply),
    /// Refuse for now (always 4xx).
    Defer(Reply),
    /// Accept, then drop the message.
    Discard,
    /// Accept, and keep the message on hold in the queue.
    Hold,
    /// No decision: the next rule runs.
    Next,
}

impl Verdict {
    /// The verb as rules write it.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Reject(_) => "reject",
            Verdict::Defer(_) => "defer",
            Verdict::Discard => "discard",
            Verdict::Hold => "hold",
            Verdict::Next => "next",
        }
    }
}

/// A stage's verdict and the rule that made it (`None`: no rule decided and the
/// stage's default applied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub rule: Option<Origin>,
    /// `mode="warn"` rules that matched on the way, with what they would have done.
    pub warned: Vec<(Origin, Verdict)>,
}

/// What a stage can see. Fields that do not exist yet at a stage are `None` / empty;
/// the configuration refuses conditions that would read them there.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub client_ip: IpAddr,
    pub listener: &'a str,
    pub helo: Option<&'a str>,
    pub tls: bool,
    pub auth_user: Option<&'a str>,
    /// `Some("")` is the null sender.
    pub sender: Option<&'a str>,
    pub rcpt: Option<&'a str>,
    /// The recipients accepted so far (all of them at data).
    pub recipients: &'a [String],
    /// At mail, the SIZE= the client declared (if any); at data, the message size.
    pub size: Option<u64>,
    /// At data, the message's header lines, unfolded.
    pub headers: &'a [HeaderLine],
}

impl<'a> Context<'a> {
    /// A connect-stage context: only the client is known.
    pub fn new(client_ip: IpAddr, listener: &'a str) -> Self {
        Self {
            client_ip,
            listener,
            helo: None,
            tls: false,
            auth_user: None,
            sender: None,
            rcpt: None,
            recipients: &[],
            size: None,
            headers: &[],
        }
    }
}

/// The context of the first policy, kept for callers that only check recipients.
#[derive(Clone, Copy, Debug)]
pub struct RcptContext<'a> {
    pub client_ip: IpAddr,
    pub rcpt: &'a str,
}

/// The compiled policy: per stage, an ordered list of rules.
#[derive(Debug, Default)]
pub struct Pipeline {
    stages: [Vec<Rule>; Stage::COUNT],
}

#[derive(Debug)]
struct Rule {
    verdict: Verdict,
    conditions: Box<[Test]>,
    warn: bool,
    origin: Origin,
}

#[derive(Debug)]
struct Test {
    negate: bool,
    check: Check,
}

/// A condition with its sets resolved and its patterns compiled.
#[derive(Debug)]
enum Check {
    Client(Arc<NetworkSet>),
    Listener(String),
    Helo(String),
    HeloMatches(Regex),
    Tls(bool),
    Authenticated(bool),
    AuthUser(String),
    Sender(String),
    SenderDomain(Arc<DomainSet>),
    SenderMatches(Regex),
    Rcpt(String),
    RcptDomain(Arc<DomainSet>),
    RcptMatches(Regex),
    SizeOver(u64),
    HeaderMatches(Regex),
}

impl Check {
    /// Whether the condition holds. A value the stage does not have never matches
    /// (and so a negated condition on it does).
    fn holds(&self, ctx: &Context<'_>) -> bool {
        match self {
            Check::Client(set) => set.contains(ctx.client_ip),
            Check::Listener(name) => ctx.listener == name,
            Check::Helo(name) => ctx.helo.is_some_and(|h| h.eq_ignore_ascii_case(name)),
            Check::HeloMatches(re) => ctx.helo.is_some_and(|h| re.is_match(h)),
            Check::Tls(want) => ctx.tls == *want,
            Check::Authenticated(want) => ctx.auth_user.is_some() == *want,
            Check::AuthUser(user) => ctx.auth_user == Some(user.as_str()),
            Check::Sender(addr) => ctx.sender.is_some_and(|s| s.eq_ignore_ascii_case(addr)),
            Check::SenderDomain(set) => ctx
                .sender
                .and_then(|s| s.rsplit_once('@'))
                .is_some_and(|(_, d)| set.contains(d)),
            Check::SenderMatches(re) => ctx.sender.is_some_and(|s| re.is_match(s)),
            Check::Rcpt(addr) => ctx.rcpt.is_some_and(|r| r.eq_ignore_ascii_case(addr)),
            Check::RcptDomain(set) => ctx
                .rcpt
                .and_then(routing_domain)
                .is_some_and(|d| set.contains(&d)),
            Check::RcptMatches(re) => ctx.rcpt.is_some_and(|r| re.is_match(r)),
            Check::SizeOver(limit) => ctx.size.is_some_and(|s| s > *limit),
            Check::HeaderMatches(re) => ctx.headers.iter().any(|h| re.is_match(h.line())),
        }
    }
}

impl Pipeline {
    /// Compiles a validated configuration (set references were checked by config).
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
        for stage in Stage::ALL {
            pipeline.stages[stage.index()] = config
                .rules(stage)
                .iter()
                .map(|rule| compile_rule(rule, &networks, &domains))
                .collect();
        }
        pipeline
    }

    /// Runs one stage: the first rule whose conditions all hold and whose verdict is
    /// not `next` decides; `mode="warn"` rules only log. With no decision, rcpt
    /// refuses (`554 5.7.1 Relay access denied`: never an open relay) and every
    /// other stage accepts.
    pub fn evaluate(&self, stage: Stage, ctx: &Context<'_>) -> Decision {
        let mut warned = Vec::new();
        for rule in &self.stages[stage.index()] {
            if !rule
                .conditions
                .iter()
                .all(|t| t.check.holds(ctx) != t.negate)
            {
                continue;
            }
            if rule.verdict == Verdict::Next {
                continue;
            }
            if rule.warn {
                warn!(%stage, rule = %rule.origin, would = rule.verdict.name(), "warn-mode rule matched; not enforced");
                warned.push((rule.origin.clone(), rule.verdict.clone()));
                continue;
            }
            debug!(%stage, rule = %rule.origin, verdict = rule.verdict.name(), "rule decided");
            return Decision {
                verdict: rule.verdict.clone(),
                rule: Some(rule.origin.clone()),
                warned,
            };
        }
        let verdict = match (stage, ctx.rcpt) {
            (Stage::Rcpt, Some(rcpt)) => Verdict::Reject(relay_denied(rcpt)),
            (Stage::Rcpt, None) => Verdict::Reject(relay_denied("")),
            _ => Verdict::Accept,
        };
        Decision {
            verdict,
            rule: None,
            warned,
        }
    }

    /// The rcpt stage for a client and one recipient.
    pub fn rcpt(&self, ctx: &RcptContext<'_>) -> Decision {
        let recipients: [String; 0] = [];
        let context = Context {
            rcpt: Some(ctx.rcpt),
            sender: Some(""),
            recipients: &recipients,
            ..Context::new(ctx.client_ip, "")
        };
        self.evaluate(Stage::Rcpt, &context)
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
        RuleAction::Defer(reply) => Verdict::Defer(reply.clone()),
        RuleAction::Discard => Verdict::Discard,
        RuleAction::Hold => Verdict::Hold,
        // Hooks are compiled by `build`; a pipeline made without it fails closed.
        RuleAction::Hook(_) => {
            Verdict::Defer(Reply::new(451, [4, 3, 0], "Error: policy hook unavailable"))
        }
    };
    let mut conditions = Vec::with_capacity(rule.conditions.len());
    for condition in &rule.conditions {
        let check = match &condition.test {
            Condition::Client(ClientRef::Net(net)) => {
                Some(Check::Client(Arc::new(NetworkSet::new(vec![*net]))))
            }
            Condition::Client(ClientRef::Set(name)) => {
                networks.get(name.as_str()).cloned().map(Check::Client)
            }
            Condition::RcptDomain(name) => {
                domains.get(name.as_str()).cloned().map(Check::RcptDomain)
            }
            Condition::SenderDomain(name) => {
                domains.get(name.as_str()).cloned().map(Check::SenderDomain)
            }
            Condition::Listener(v) => Some(Check::Listener(v.clone())),
            Condition::Helo(v) => Some(Check::Helo(v.clone())),
            Condition::HeloMatches(p) => Some(Check::HeloMatches(p.0.clone())),
            Condition::Tls(b) => Some(Check::Tls(*b)),
            Condition::Authenticated(b) => Some(Check::Authenticated(*b)),
            Condition::AuthUser(v) => Some(Check::AuthUser(v.clone())),
            Condition::Sender(v) => Some(Check::Sender(v.clone())),
            Condition::SenderMatches(p) => Some(Check::SenderMatches(p.0.clone())),
            Condition::Rcpt(v) => Some(Check::Rcpt(v.clone())),
            Condition::RcptMatches(p) => Some(Check::RcptMatches(p.0.clone())),
            Condition::SizeOver(n) => Some(Check::SizeOver(*n)),
            Condition::HeaderMatches(p) => Some(Check::HeaderMatches(p.0.clone())),
        };
        match check {
            Some(check) => conditions.push(Test {
                negate: condition.negate,
                check,
            }),
            None => {
                tracing::error!(rule = %rule.origin, ?condition, "rule refers to an undefined set; it will tempfail");
                return Rule {
                    verdict: Verdict::Defer(Reply::new(
                        451,
                        [4, 3, 5],
                        "Server configuration error",
                    )),
                    conditions: Box::new([]),
                    warn: false,
                    origin: rule.origin.clone(),
                };
            }
        }
    }
    Rule {
        verdict,
        conditions: conditions.into_boxed_slice(),
        warn: rule.warn,
        origin: rule.origin.clone(),
    }
}

#[cfg(test)]
mod tests;
