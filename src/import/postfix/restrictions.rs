//! Postfix restriction lists (`smtpd_*_restrictions`) → ordered mtad rules.
//!
//! Postfix evaluates several lists one after the other (with `smtpd_delay_reject =
//! yes`, all of them at RCPT): a restriction that refuses ends everything, a `permit`
//! ends only its own list, and a recipient nothing refused is accepted. An mtad stage
//! is one list where the first decisive rule wins. The lists are joined like this:
//!
//! - in the last list, `permit X` is `accept X`, a refusal is its rule, and the stage
//!   ends with `accept` (what no restriction refused is accepted);
//! - in an earlier list, `permit X` is no rule of its own: it becomes `not-X` on every
//!   later rule of the same list (a guard), since the lists after it still run.
//!
//! What cannot be written that way (a permit with two conditions in an earlier list, two
//! guards on one property, a restriction mtad has no equivalent of) becomes a `defer`
//! rule where it stood, marked in the output and the report: never a rule dropped, so
//! the result is never more permissive than Postfix.

use super::kdl::{Cond, q};

/// What a rule does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Accept,
    Reject {
        code: u16,
        enhanced: String,
        text: String,
    },
    Defer {
        code: u16,
        enhanced: String,
        text: String,
    },
    Discard,
    Hold,
    CheckPolicyService(String),
    RejectDnsbl(String),
    /// A restriction that is not translated: refuses for now (`450 4.7.1`) whatever
    /// reaches it.
    Unsupported(String),
}

/// One mtad rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    pub conds: Vec<Cond>,
    pub warn: bool,
    /// Written above the rule: the Postfix restriction it comes from.
    pub comment: String,
}

impl Rule {
    pub fn new(action: Action, conds: Vec<Cond>, comment: impl Into<String>) -> Rule {
        Rule {
            action,
            conds,
            warn: false,
            comment: comment.into(),
        }
    }

    /// The rule as one KDL line (without indentation).
    pub fn render(&self) -> String {
        let mut line = match &self.action {
            Action::Accept => "accept".to_owned(),
            Action::Reject {
                code,
                enhanced,
                text,
            } => format!("reject {code} {} {}", q(enhanced), q(text)),
            Action::Defer {
                code,
                enhanced,
                text,
            } => format!("defer {code} {} {}", q(enhanced), q(text)),
            Action::Discard => "discard".to_owned(),
            Action::Hold => "hold".to_owned(),
            Action::CheckPolicyService(name) => format!("check-policy-service {}", q(name)),
            Action::RejectDnsbl(name) => format!("reject-dnsbl {}", q(name)),
            Action::Unsupported(what) => format!(
                "defer 450 \"4.7.1\" {}",
                q(&format!("Service unavailable: {what} is not translated"))
            ),
        };
        for c in &self.conds {
            line.push(' ');
            line.push_str(&c.render());
        }
        if self.warn {
            line.push_str(" mode=\"warn\"");
        }
        line
    }

    /// Whether the rule decides whatever reaches it (no condition, not a check that
    /// may answer "no decision").
    pub fn is_final(&self) -> bool {
        self.conds.is_empty()
            && !self.warn
            && matches!(
                self.action,
                Action::Accept
                    | Action::Reject { .. }
                    | Action::Defer { .. }
                    | Action::Discard
                    | Action::Unsupported(_)
            )
    }
}

/// One restriction, translated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// `permit_*`: when all these conditions hold, the list permits.
    Permit { conds: Vec<Cond>, comment: String },
    /// Anything else that may decide; `may_permit` for a check whose answer can be OK
    /// (a policy service), which an earlier list cannot hold.
    Decide { rule: Rule, may_permit: bool },
    /// A list of its own, spliced in (a restriction class, an access table's entries).
    Many(Vec<Item>),
}

/// A restriction list, translated, with the parameter it came from.
#[derive(Clone, Debug)]
pub struct List {
    pub parameter: String,
    pub items: Vec<Item>,
}

/// A problem found while joining the lists (reported as unsupported).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinProblem {
    pub parameter: String,
    pub message: String,
}

fn flatten(items: &[Item], out: &mut Vec<Item>) {
    for i in items {
        match i {
            Item::Many(inner) => flatten(inner, out),
            other => out.push(other.clone()),
        }
    }
}

/// The lists, in the order Postfix evaluates them, as one stage's rules; `extra` is
/// added to every rule (a `listener=` condition). With `end_accept`, the rules end
/// with an `accept` when the last one does not decide everything (rcpt: Postfix
/// accepts what nothing refused, mtad's rcpt stage would refuse it).
pub fn join(
    lists: &[List],
    extra: &[Cond],
    end_accept: bool,
    problems: &mut Vec<JoinProblem>,
) -> Vec<Rule> {
    let lists: Vec<(&str, Vec<Item>)> = lists
        .iter()
        .map(|l| {
            let mut flat = Vec::new();
            flatten(&l.items, &mut flat);
            (l.parameter.as_str(), flat)
        })
        .filter(|(_, items)| !items.is_empty())
        .collect();
    let mut rules = Vec::new();
    let count = lists.len();
    'lists: for (index, (parameter, items)) in lists.into_iter().enumerate() {
        let last = index + 1 == count;
        let mut guards: Vec<Cond> = Vec::new();
        for item in items {
            match item {
                Item::Permit { conds, comment } if last => {
                    let mut all = extra.to_vec();
                    all.extend(conds);
                    rules.push(Rule::new(
                        Action::Accept,
                        all,
                        format!("{parameter}: {comment}"),
                    ));
                }
                Item::Permit { conds, comment } => {
                    match conds.as_slice() {
                        [] => continue 'lists, // the rest of this list never runs
                        [c] => {
                            let guard = c.negate();
                            let same = guards.iter().position(|g| g.property() == guard.property());
                            let merged =
                                same.and_then(|i| Some((i, guards[i].merge_negated(&guard)?)));
                            if let Some((i, merged)) = merged {
                                // two pattern permits: neither pattern may match
                                guards[i] = merged;
                                continue;
                            }
                            if same.is_some() {
                                refuse(
                                    &mut rules,
                                    problems,
                                    parameter,
                                    &comment,
                                    with(extra, &guards),
                                    format!(
                                        "`{comment}` permits on the same property as an earlier permit of this list ({}), and a later list still runs: not expressible as mtad conditions",
                                        guard.key
                                    ),
                                );
                                continue 'lists;
                            }
                            guards.push(guard);
                        }
                        _ => {
                            refuse(
                                &mut rules,
                                problems,
                                parameter,
                                &comment,
                                with(extra, &guards),
                                format!(
                                    "`{comment}` permits on several conditions at once, and a later list still runs: not expressible as mtad conditions"
                                ),
                            );
                            continue 'lists;
                        }
                    }
                }
                Item::Decide { rule, may_permit } => {
                    if may_permit && !last {
                        refuse(
                            &mut rules,
                            problems,
                            parameter,
                            &rule.comment,
                            with(extra, &guards),
                            format!(
                                "`{}` may answer OK, which in Postfix ends only this list; in mtad it would accept outright, skipping the lists after it",
                                rule.comment
                            ),
                        );
                        continue;
                    }
                    let mut conds = with(extra, &guards);
                    let mut clash = None;
                    for c in &rule.conds {
                        match conds.iter().position(|g| g.property() == c.property()) {
                            Some(i) => match conds[i].merge_negated(c) {
                                Some(merged) => conds[i] = merged,
                                None => clash = Some(c.property()),
                            },
                            None => conds.push(c.clone()),
                        }
                    }
                    if let Some(p) = clash {
                        refuse(
                            &mut rules,
                            problems,
                            parameter,
                            &rule.comment,
                            with(extra, &guards),
                            format!(
                                "`{}` needs `{p}` while an earlier permit of the list already guards it",
                                rule.comment
                            ),
                        );
                        continue;
                    }
                    rules.push(Rule {
                        conds,
                        comment: format!("{parameter}: {}", rule.comment),
                        ..rule
                    });
                }
                Item::Many(_) => unreachable!("flattened above"),
            }
        }
    }
    if end_accept && !rules.last().is_some_and(|r| r.is_final_with(extra)) {
        rules.push(Rule::new(
            Action::Accept,
            extra.to_vec(),
            "what no restriction refused, Postfix accepts",
        ));
    }
    rules
}

/// Where a restriction cannot be joined: a problem for the report, and a refusal
/// (`defer`) in its place under the conditions that reach it.
fn refuse(
    rules: &mut Vec<Rule>,
    problems: &mut Vec<JoinProblem>,
    parameter: &str,
    what: &str,
    conds: Vec<Cond>,
    message: String,
) {
    problems.push(JoinProblem {
        parameter: parameter.to_owned(),
        message,
    });
    rules.push(Rule::new(
        Action::Unsupported(format!("{parameter} ({what})")),
        conds,
        format!("{parameter}: {what} (NOT TRANSLATED: see the report)"),
    ));
}

fn with(extra: &[Cond], guards: &[Cond]) -> Vec<Cond> {
    let mut v = extra.to_vec();
    v.extend(guards.iter().cloned());
    v
}

impl Rule {
    /// [`Rule::is_final`], not counting the conditions every rule of the block has.
    fn is_final_with(&self, extra: &[Cond]) -> bool {
        Rule {
            conds: self
                .conds
                .iter()
                .filter(|c| !extra.contains(c))
                .cloned()
                .collect(),
            ..self.clone()
        }
        .is_final()
    }
}
