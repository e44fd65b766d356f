//! Can this policy make mtad an open relay? Proved or refuted from the compiled rules.
//!
//! The question (Postfix's `reject_unauth_destination`, asked of the whole policy): can
//! a client that is neither trusted nor authenticated get a recipient in a domain that
//! is not ours accepted (or held) at the `rcpt` stage?
//!
//! - **The attacker** connects from any address that is not loopback and not in a
//!   network the policy trusts: one that an `accept`/`hold` rule (or a hook or policy
//!   service) names with `client=`, or a `reject`/`defer` rule with `not-client=`; unless that network is wider than a /8 (IPv4) or a /16 (IPv6): such
//!   a network trusts "everyone" and is reported. It uses any listener that does not
//!   require AUTH, never authenticates, says any HELO, may or may not start TLS, gives
//!   any sender and any SIZE, and may get any SPF/DMARC result and be listed or not on
//!   any DNS list.
//! - **Not ours**: a recipient domain in no `domains` set (nor a map table's keys such a
//!   set reads), and not the server's host name or origin. `rcpt-domain=` is false for
//!   it by definition.
//!
//! Each condition the `rcpt` rules test splits the attacker's choices in two; the
//! analysis enumerates every satisfiable combination per input (client addresses by the
//! boundaries of every network named; strings by [`strings::atoms`], complete over an
//! address alphabet; the rest by their finite values), takes one witness of each, and
//! runs the rules in order on every combination with the same condition code the
//! daemon runs ([`Check::holds`]). An `accept` or `hold` reached is a counterexample:
//! a concrete envelope and the rules it went past. A hook or a policy service reached
//! "may" accept (their code is not analysed): a warning naming it. When every
//! combination was tried and none accepts, the policy is **proved** closed for this
//! attacker; when a pattern or the number of combinations is beyond the analysis, it
//! says so instead of claiming a proof.

mod strings;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::{AuthMode, Config, Origin, Stage};
use crate::lookup::{DomainSet, TableKind};
use crate::mailauth::{AuthResult, AuthResults, DmarcPolicy};

use super::{Action, Check, Context, Pipeline, Rule, Verdict};
use strings::{Incomplete, Pred};

/// Combinations run through the rules at most: the examples need about ten, and this
/// bounds the time a hostile configuration takes at load to seconds.
const MAX_COMBINATIONS: u64 = 500_000;

/// What [`Pipeline::relay_analysis`] found.
#[derive(Debug, Default)]
pub struct RelayAnalysis {
    /// Envelopes an untrusted, unauthenticated client gets accepted for a domain that
    /// is not ours, one per deciding rule.
    pub findings: Vec<RelayFinding>,
    /// Trust given to networks wider than a /8 (IPv4) or /16 (IPv6).
    pub wide_trust: Vec<WideTrust>,
    /// Why the search is not a proof (empty: it is).
    pub incomplete: Vec<String>,
    /// Combinations of the attacker's choices that were run through the rules.
    pub combinations: u64,
}

impl RelayAnalysis {
    /// A proven open relay that no `open-relay="intended"` covers.
    pub fn refuses(&self) -> Option<&RelayFinding> {
        self.findings.iter().find(|f| f.certain && !f.intended)
    }

    /// No accepting path, every combination tried.
    pub fn proved_closed(&self) -> bool {
        self.findings.is_empty() && self.incomplete.is_empty()
    }
}

/// A network wider than a /8 (/16) in a trust position.
#[derive(Debug, Clone)]
pub struct WideTrust {
    pub network: ipnet::IpNet,
    pub rule: Origin,
}

/// One way through the `rcpt` rules to an acceptance.
#[derive(Debug, Clone)]
pub struct RelayFinding {
    /// `false`: a hook or policy service decides there, and may accept.
    pub certain: bool,
    /// The rule (or the listener) says the relay is intended: `open-relay="intended"`.
    pub intended: bool,
    /// The deciding rule, and what it is (`accept`, `hold`, `hook FILE:FN`, ...).
    pub rule: Origin,
    pub action: String,
    pub envelope: Envelope,
    /// The rules before it that the envelope went past, each with the condition that
    /// did not hold.
    pub passed: Vec<(Origin, String)>,
    /// What the envelope also needs from outside: `spf=pass`, `listed on DNS list X`,
    /// `sender domain in table X` (a database the analysis cannot read).
    pub assuming: Vec<String>,
}

/// What the attacker sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub client: IpAddr,
    pub listener: String,
    pub helo: String,
    pub tls: bool,
    pub sender: String,
    pub rcpt: String,
    pub size: Option<u64>,
}

impl std::fmt::Display for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "client {} on listener `{}`, HELO {}, {}MAIL FROM:<{}>{} RCPT TO:<{}>",
            self.client,
            self.listener,
            self.helo,
            if self.tls { "STARTTLS, " } else { "" },
            self.sender,
            self.size.map(|s| format!(" SIZE={s}")).unwrap_or_default(),
            self.rcpt
        )
    }
}

impl std::fmt::Display for RelayFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.certain {
            "accepts"
        } else {
            "may accept"
        };
        writeln!(
            f,
            "{}: `{}` {how}: {}",
            self.rule, self.action, self.envelope
        )?;
        for (origin, why) in &self.passed {
            writeln!(f, "    past {origin}: {why}")?;
        }
        for a in &self.assuming {
            writeln!(f, "    assuming {a}")?;
        }
        Ok(())
    }
}

/// A condition the attacker's choice of strings decides, per input.
struct StringInput {
    preds: Vec<Pred>,
    /// The witnesses, one per satisfiable combination.
    witnesses: Vec<String>,
}

/// What the attacker may additionally get that the analysis cannot derive: a DNS list
/// listing (or not), a sender domain in a set it cannot enumerate.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Oracle {
    Dnsbl(usize, usize),
    SenderSet(usize, usize),
}

impl Pipeline {
    /// Whether an untrusted, unauthenticated client can relay (see the module docs).
    /// `config` gives the listeners and the domain sets the policy was compiled from.
    pub fn relay_analysis(&self, config: &Config) -> RelayAnalysis {
        let rules = &self.stages[Stage::Rcpt.index()];
        let mut out = RelayAnalysis::default();
        let listeners: Vec<&crate::config::Listener> = config
            .listeners
            .iter()
            .filter(|l| l.auth != AuthMode::Required)
            .collect();
        if listeners.is_empty() {
            return out;
        }

        // Networks: trusted ones (narrow, positive, in an accepting rule) are not the
        // attacker's; every network named splits the address space.
        let mut trusted: Vec<ipnet::IpNet> = Vec::new();
        let mut bounds = Bounds::default();
        for net in ["127.0.0.0/8", "::1/128", "0.0.0.0/32", "::/128"] {
            bounds.add(&net.parse().expect("literal network"));
        }
        for rule in rules {
            let accepting = accepting(&rule.action);
            let refusing = matches!(
                rule.action,
                Action::Verdict(Verdict::Reject(_) | Verdict::Defer(_))
            );
            for t in rule.conditions.iter() {
                if let Check::Client(set) = &t.check {
                    for net in set.nets() {
                        bounds.add(net);
                        // `accept client="X"` and `reject not-client="X"` both trust X
                        let trusts = if t.negate { refusing } else { accepting };
                        if trusts && !rule.warn {
                            if is_wide(net) {
                                out.wide_trust.push(WideTrust {
                                    network: *net,
                                    rule: rule.origin.clone(),
                                });
                            } else {
                                trusted.push(*net);
                            }
                        }
                    }
                }
            }
        }
        let mut clients: Vec<IpAddr> = bounds
            .representatives()
            .into_iter()
            .filter(|ip| {
                !ip.is_loopback() && !ip.is_unspecified() && !trusted.iter().any(|n| n.contains(ip))
            })
            .collect();
        // documentation addresses first: the first envelope found is the one shown
        clients.sort_by_key(|ip| !is_documentation(ip));
        if clients.is_empty() {
            return out;
        }

        // Strings.
        let known = match self.known_domains(config) {
            Ok(known) => known,
            Err(e) => {
                out.incomplete.push(e.to_string());
                return out;
            }
        };
        let helo = string_input(rules, &[], "attacker.example", |c| match c {
            Check::Helo(h) => Some(Pred::literal(h)),
            Check::HeloMatches(re) => Some(Pred::regex(re.as_str())),
            _ => None,
        });
        let sender = string_input(
            rules,
            &[(address_shape(), true)],
            "someone@attacker.example",
            |c| match c {
                Check::Sender(s) => Some(Pred::literal(s)),
                Check::SenderMatches(re) => Some(Pred::regex(re.as_str())),
                Check::SenderDomain(set) if enumerable(set) => Some(domain_pred(set)),
                _ => None,
            },
        );
        let rcpt = string_input(
            rules,
            &[(address_shape(), true), (known, false)],
            "victim@elsewhere.example",
            |c| match c {
                Check::Rcpt(r) => Some(Pred::literal(r)),
                Check::RcptMatches(re) => Some(Pred::regex(re.as_str())),
                _ => None,
            },
        );
        let (helo, mut sender, rcpt) = match (helo, sender, rcpt) {
            (Ok(h), Ok(s), Ok(r)) => (h, s, r),
            (h, s, r) => {
                for e in [h.err(), s.err(), r.err()].into_iter().flatten() {
                    out.incomplete.push(e.to_string());
                }
                return out;
            }
        };
        sender.witnesses.push(String::new());
        let rcpts: Vec<String> = rcpt
            .witnesses
            .iter()
            .filter(|w| self.recipient(w).is_ok_and(|r| &r.address == *w))
            .cloned()
            .collect();

        // The finite inputs.
        let tls = if any_check(rules, |c| matches!(c, Check::Tls(_))) {
            vec![false, true]
        } else {
            vec![false]
        };
        let mut sizes: BTreeSet<Option<u64>> = BTreeSet::from([None]);
        let mut auth_checks = BTreeSet::new();
        let mut dmarc_policy = false;
        let mut oracles = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            for (j, t) in rule.conditions.iter().enumerate() {
                match &t.check {
                    Check::SizeOver(limit) => {
                        sizes.insert(Some(*limit));
                        sizes.insert(limit.checked_add(1));
                    }
                    Check::Auth(check, _) => {
                        auth_checks.insert(check.name());
                    }
                    Check::DmarcPolicy(_) => dmarc_policy = true,
                    Check::Dnsbl(_) => oracles.push(Oracle::Dnsbl(i, j)),
                    Check::SenderDomain(set) if !enumerable(set) => {
                        oracles.push(Oracle::SenderSet(i, j))
                    }
                    _ => {}
                }
            }
        }
        let auths = auth_combinations(&auth_checks, dmarc_policy);
        let listener_names: Vec<&str> = if any_check(rules, |c| matches!(c, Check::Listener(_))) {
            listeners.iter().map(|l| l.name.as_str()).collect()
        } else {
            vec![listeners[0].name.as_str()]
        };
        let oracle_count = 1u64 << oracles.len().min(20);
        let dims = [
            clients.len() as u64,
            listener_names.len() as u64,
            helo.witnesses.len() as u64,
            tls.len() as u64,
            sender.witnesses.len() as u64,
            rcpts.len() as u64,
            sizes.len() as u64,
            auths.len() as u64,
            oracle_count,
        ];
        let total = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        match total {
            Some(t) if t <= MAX_COMBINATIONS && oracles.len() <= 20 => {}
            _ => {
                out.incomplete.push(format!(
                    "the rcpt rules combine into more than {MAX_COMBINATIONS} cases"
                ));
                return out;
            }
        }

        let tls_info = super::TlsInfo {
            protocol: "TLSv1.3".into(),
            cipher: "TLS_AES_128_GCM_SHA256".into(),
        };
        let mut decided_by: BTreeSet<usize> = BTreeSet::new();
        let sizes: Vec<Option<u64>> = sizes.into_iter().collect();
        // every combination, the client varying slowest (documentation addresses
        // first) and the oracles fastest
        for n in 0..total.unwrap_or(0) {
            let mut rest = n;
            let mut pick = |len: u64| {
                let i = rest % len;
                rest /= len;
                i as usize
            };
            let o = pick(oracle_count) as u64;
            let a = &auths[pick(dims[7])];
            let size = sizes[pick(dims[6])];
            let r = &rcpts[pick(dims[5])];
            let s = &sender.witnesses[pick(dims[4])];
            let t = tls[pick(dims[3])];
            let h = &helo.witnesses[pick(dims[2])];
            let listener = listener_names[pick(dims[1])];
            let client = clients[pick(dims[0])];
            out.combinations += 1;
            let mut ctx = Context::new(client, listener);
            ctx.helo = Some(h);
            ctx.tls = t.then_some(&tls_info);
            ctx.sender = Some(s);
            ctx.rcpt = Some(r);
            ctx.size = size;
            ctx.auth = Some(a);
            let oracle = |which: Oracle| {
                oracles
                    .iter()
                    .position(|&x| x == which)
                    .is_some_and(|k| o >> k & 1 == 1)
            };
            if let Some(f) = self.walk(rules, &ctx, &oracle)
                && decided_by.insert(f.index)
            {
                out.findings
                    .push(self.finding(config, rules, f, &ctx, a, &oracle, &oracles));
            }
        }
        out
    }

    /// Runs the rules on one attacker context: the first rule that accepts (or a hook
    /// or policy service that may), or `None` when a rule refuses or none decides.
    fn walk(
        &self,
        rules: &[Rule],
        ctx: &Context<'_>,
        oracle: &dyn Fn(Oracle) -> bool,
    ) -> Option<Walked> {
        let mut passed = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let failed = rule.conditions.iter().enumerate().find(|(j, t)| {
                let holds = match &t.check {
                    Check::Dnsbl(_) => oracle(Oracle::Dnsbl(i, *j)),
                    Check::SenderDomain(set) if !enumerable(set) => {
                        oracle(Oracle::SenderSet(i, *j))
                    }
                    // not ours, by definition (sets read from a database included)
                    Check::RcptDomain(_) => false,
                    check => check.holds(ctx, &self.services).unwrap_or(false),
                };
                holds == t.negate
            });
            if let Some((j, _)) = failed {
                passed.push((i, j));
                continue;
            }
            if rule.warn {
                continue;
            }
            match &rule.action {
                Action::Verdict(Verdict::Accept | Verdict::Hold) => {
                    return Some(Walked {
                        index: i,
                        certain: true,
                        passed,
                    });
                }
                Action::Verdict(Verdict::Next) => {}
                Action::Verdict(_) => return None,
                Action::Hook(_) | Action::PolicyService(_) => {
                    return Some(Walked {
                        index: i,
                        certain: false,
                        passed,
                    });
                }
                _ => {}
            }
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn finding(
        &self,
        config: &Config,
        rules: &[Rule],
        walked: Walked,
        ctx: &Context<'_>,
        auth: &AuthResults,
        oracle: &dyn Fn(Oracle) -> bool,
        oracles: &[Oracle],
    ) -> RelayFinding {
        let rule = &rules[walked.index];
        let mut assuming = Vec::new();
        let mut read = |check: &Check| match check {
            Check::Auth(c, _) => assuming.push(format!("{}={}", c.name(), c.of(auth).as_str())),
            Check::DmarcPolicy(_) => {
                assuming.push(format!("dmarc-policy={}", auth.dmarc_policy.as_str()))
            }
            _ => {}
        };
        for t in rule.conditions.iter() {
            read(&t.check);
        }
        for &(i, j) in &walked.passed {
            read(&rules[i].conditions[j].check);
        }
        assuming.sort();
        assuming.dedup();
        for &o in oracles {
            let (i, j) = match o {
                Oracle::Dnsbl(i, j) | Oracle::SenderSet(i, j) => (i, j),
            };
            let relevant = i == walked.index || walked.passed.contains(&(i, j));
            if !relevant {
                continue;
            }
            let yes = oracle(o);
            assuming.push(match (&rules[i].conditions[j].check, o) {
                (Check::Dnsbl(name), _) => {
                    format!(
                        "DNS list `{name}` {}",
                        if yes {
                            "lists the client"
                        } else {
                            "does not list the client"
                        }
                    )
                }
                _ => format!(
                    "the sender's domain is {}in the set of {} (a table the analysis cannot read)",
                    if yes { "" } else { "not " },
                    rules[i].origin
                ),
            });
        }
        let action = match &rule.action {
            Action::Hook(h) => format!("hook {}:{}", h.file(), h.function()),
            Action::PolicyService(name) => format!("check-policy-service {name}"),
            Action::Verdict(v) => v.name().to_owned(),
            _ => "?".to_owned(),
        };
        let listener_intended = config
            .listeners
            .iter()
            .any(|l| l.name == ctx.listener && l.open_relay);
        RelayFinding {
            certain: walked.certain,
            intended: rule.open_relay || listener_intended,
            rule: rule.origin.clone(),
            action,
            envelope: Envelope {
                client: ctx.client_ip,
                listener: ctx.listener.to_owned(),
                helo: ctx.helo.unwrap_or_default().to_owned(),
                tls: ctx.tls.is_some(),
                sender: ctx.sender.unwrap_or_default().to_owned(),
                rcpt: ctx.rcpt.unwrap_or_default().to_owned(),
                size: ctx.size,
            },
            passed: walked
                .passed
                .iter()
                .map(|&(i, j)| {
                    let t = &rules[i].conditions[j];
                    let name = t.check.name();
                    let why = if t.negate {
                        format!("not-{name} holds")
                    } else {
                        format!("{name} does not hold")
                    };
                    (rules[i].origin.clone(), why)
                })
                .collect(),
            assuming,
        }
    }

    /// The language of recipients in our domains: any `domains` set's names (and a map
    /// table's keys it reads), its parents' subdomains, the host name and the origin.
    fn known_domains(&self, config: &Config) -> Result<Pred, Incomplete> {
        let mut exact: BTreeSet<String> = BTreeSet::new();
        let mut parents: BTreeSet<String> = BTreeSet::new();
        exact.insert(config.server.hostname.to_ascii_lowercase());
        exact.insert(self.origin().to_ascii_lowercase());
        for set in config.domains.values() {
            collect(set, &mut exact, &mut parents);
        }
        Pred::regex(&domains_pattern(&exact, &parents))
    }
}

/// Where [`Pipeline::walk`] stopped.
struct Walked {
    index: usize,
    certain: bool,
    /// (rule, condition that did not hold) for each rule gone past.
    passed: Vec<(usize, usize)>,
}

fn accepting(action: &Action) -> bool {
    matches!(
        action,
        Action::Verdict(Verdict::Accept | Verdict::Hold)
            | Action::Hook(_)
            | Action::PolicyService(_)
    )
}

/// In RFC 5737's or RFC 3849's documentation networks.
fn is_documentation(ip: &IpAddr) -> bool {
    [
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "2001:db8::/32",
    ]
    .iter()
    .any(|n| n.parse::<ipnet::IpNet>().is_ok_and(|n| n.contains(ip)))
}

/// Wider than a /8 (IPv4) or a /16 (IPv6): trusting it trusts much of the Internet.
fn is_wide(net: &ipnet::IpNet) -> bool {
    match net {
        ipnet::IpNet::V4(n) => n.prefix_len() < 8,
        ipnet::IpNet::V6(n) => n.prefix_len() < 16,
    }
}

/// A set whose every member the analysis can list (no table, or a map table).
fn enumerable(set: &DomainSet) -> bool {
    set.parts().2.is_none_or(|t| t.kind() == TableKind::Map)
}

fn collect(set: &DomainSet, exact: &mut BTreeSet<String>, parents: &mut BTreeSet<String>) {
    let (e, p, table) = set.parts();
    exact.extend(e.map(str::to_owned));
    parents.extend(p.map(str::to_owned));
    if let Some(t) = table {
        exact.extend(t.map_entries().map(|(k, _)| k.to_ascii_lowercase()));
    }
}

/// Addresses whose domain is one of `exact`, or a proper subdomain of one of `parents`
/// (one trailing dot allowed, as [`DomainSet::contains`] ignores it).
fn domains_pattern(exact: &BTreeSet<String>, parents: &BTreeSet<String>) -> String {
    let alt = |names: &BTreeSet<String>| {
        names
            .iter()
            .map(|n| regex::escape(n))
            .collect::<Vec<_>>()
            .join("|")
    };
    let mut parts = Vec::new();
    if !exact.is_empty() {
        parts.push(format!("@(?:{})\\.?$", alt(exact)));
    }
    if !parents.is_empty() {
        parts.push(format!("@[^@]*\\.(?:{})\\.?$", alt(parents)));
    }
    if parts.is_empty() {
        // matches nothing
        "[^\\x00-\\x{10FFFF}]".to_owned()
    } else {
        parts.join("|")
    }
}

fn domain_pred(set: &DomainSet) -> Result<Pred, Incomplete> {
    let mut exact = BTreeSet::new();
    let mut parents = BTreeSet::new();
    collect(set, &mut exact, &mut parents);
    Pred::regex(&domains_pattern(&exact, &parents))
}

/// What an address looks like: a local part and a dotted domain name.
fn address_shape() -> Pred {
    Pred::regex(r"^[a-z0-9._+%!-]+@[a-z0-9-]+(\.[a-z0-9-]+)+$").expect("a fixed pattern")
}

fn any_check(rules: &[Rule], f: impl Fn(&Check) -> bool) -> bool {
    rules
        .iter()
        .any(|r| r.conditions.iter().any(|t| f(&t.check)))
}

/// The conditions of `rules` that `pred` turns into string predicates, solved.
fn string_input(
    rules: &[Rule],
    required: &[(Pred, bool)],
    readable: &str,
    pred: impl Fn(&Check) -> Option<Result<Pred, Incomplete>>,
) -> Result<StringInput, Incomplete> {
    let mut input = StringInput {
        preds: Vec::new(),
        witnesses: Vec::new(),
    };
    for t in rules.iter().flat_map(|r| r.conditions.iter()) {
        if let Some(p) = pred(&t.check) {
            input.preds.push(p?);
        }
    }
    let mut atoms = strings::atoms(&input.preds, required)?;
    // an example that reads as one stands for its combination
    if required
        .iter()
        .all(|(p, want)| strings::values(std::slice::from_ref(p), readable) == [*want])
    {
        let key = strings::values(&input.preds, readable);
        if let Some(w) = atoms.get_mut(&key) {
            *w = readable.to_owned();
        }
    }
    input.witnesses = atoms.into_values().collect();
    // the readable example first: the first envelope found is the one shown
    input
        .witnesses
        .sort_by_key(|w| (w != readable, w.len(), w.clone()));
    Ok(input)
}

/// Every combination of values of the authentication checks the rules read.
fn auth_combinations(checks: &BTreeSet<&'static str>, dmarc_policy: bool) -> Vec<AuthResults> {
    let mut out = vec![AuthResults::default()];
    for check in crate::config::AuthCheck::ALL {
        if !checks.contains(check.name()) {
            continue;
        }
        out = out
            .into_iter()
            .flat_map(|a| {
                AuthResult::ALL.into_iter().map(move |v| {
                    let mut a = a.clone();
                    *check.of_mut(&mut a) = v;
                    a
                })
            })
            .collect();
    }
    if dmarc_policy {
        out = out
            .into_iter()
            .flat_map(|a| {
                DmarcPolicy::ALL.into_iter().map(move |p| AuthResults {
                    dmarc_policy: p,
                    ..a.clone()
                })
            })
            .collect();
    }
    out
}

/// The boundaries of every network named: between two consecutive ones, every address
/// is in the same networks, so one address per interval stands for all.
#[derive(Default)]
struct Bounds {
    v4: BTreeSet<u32>,
    v6: BTreeSet<u128>,
}

impl Bounds {
    fn add(&mut self, net: &ipnet::IpNet) {
        match net {
            ipnet::IpNet::V4(n) => {
                self.v4.insert(u32::from(n.network()));
                if let Some(after) = u32::from(n.broadcast()).checked_add(1) {
                    self.v4.insert(after);
                }
            }
            ipnet::IpNet::V6(n) => {
                self.v6.insert(u128::from(n.network()));
                if let Some(after) = u128::from(n.broadcast()).checked_add(1) {
                    self.v6.insert(after);
                }
            }
        }
    }

    /// One address per interval: a documentation address (RFC 5737, RFC 3849) when
    /// the interval has one, so that counterexamples read as examples, else its first.
    /// IPv4-mapped IPv6 addresses are their IPv4 address (as [`NetworkSet`] reads them)
    /// and are left out.
    ///
    /// [`NetworkSet`]: crate::lookup::NetworkSet
    fn representatives(&self) -> Vec<IpAddr> {
        const DOC4: [u32; 3] = [0xC000_0201, 0xC633_6401, 0xCB00_7101];
        const DOC6: u128 = 0x2001_0db8_0000_0000_0000_0000_0000_0001;
        let mut out = Vec::new();
        let mut v4: Vec<u32> = self.v4.iter().copied().collect();
        if v4.first() != Some(&0) {
            v4.insert(0, 0);
        }
        for (k, &start) in v4.iter().enumerate() {
            let end = v4.get(k + 1).map_or(u32::MAX, |e| e - 1);
            let ip = DOC4
                .into_iter()
                .find(|d| (start..=end).contains(d))
                .unwrap_or(start);
            out.push(IpAddr::V4(Ipv4Addr::from(ip)));
        }
        let mut v6: Vec<u128> = self.v6.iter().copied().collect();
        for mapped in [0xffff_0000_0000u128, 0x1_0000_0000_0000] {
            if !v6.contains(&mapped) {
                v6.push(mapped);
            }
        }
        v6.sort_unstable();
        if v6.first() != Some(&0) {
            v6.insert(0, 0);
        }
        for (k, &start) in v6.iter().enumerate() {
            let end = v6.get(k + 1).map_or(u128::MAX, |e| e - 1);
            let ip = if (start..=end).contains(&DOC6) {
                DOC6
            } else {
                start
            };
            let ip = Ipv6Addr::from(ip);
            if ip.to_ipv4_mapped().is_none() {
                out.push(IpAddr::V6(ip));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
