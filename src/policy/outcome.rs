//! The decisions after the stages' verdicts, made once for the three runners: what
//! becomes of a message the data stage accepted ([`Pipeline::accept`]), and where
//! each of its final recipients goes ([`Pipeline::route_all`]). The session (at the end
//! of DATA), the scheduler (at each attempt) and `mtactl test-policy` call these, and
//! keep to themselves only what is theirs: the spool, the content filter's loop record,
//! the network.

use std::net::IpAddr;

use super::{Context, DataOutput, Decision, Headers, Origin, Pipeline, Route, TlsInfo};
use crate::message::{HeaderChange, RawEdit, apply_header_edits, apply_raw_edits};

/// What becomes of a message the data stage did not refuse.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acceptance {
    /// Byte-range edits of the message as received: the content checks' (IGNORE,
    /// REPLACE, PREPEND, STRIP), then the removal of forged Authentication-Results.
    pub edits: Vec<RawEdit>,
    /// The data hooks' header changes, applied after `edits`.
    pub header_changes: Vec<HeaderChange>,
    /// The recipients after the content checks' REDIRECT and BCC; `None`: unchanged.
    pub recipients: Option<Vec<String>>,
    /// The content filter the message goes through, by name, and the rule (or table
    /// line) that chose it; `None` for the listener's or the server's default.
    pub filter: Option<(String, Option<Origin>)>,
    /// The forged Authentication-Results headers removed (also in `edits`).
    pub forged: usize,
}

impl Acceptance {
    /// The message with every edit applied, in order (content checks' byte ranges
    /// first, then the hooks' by-name changes on the result); the body is untouched.
    pub fn apply(&self, message: &[u8]) -> Option<Vec<u8>> {
        if self.edits.is_empty() && self.header_changes.is_empty() {
            return None;
        }
        let edited = if self.edits.is_empty() {
            message.to_vec()
        } else {
            apply_raw_edits(message, &self.edits)
        };
        Some(if self.header_changes.is_empty() {
            edited
        } else {
            apply_header_edits(&edited, &self.header_changes)
        })
    }
}

impl Pipeline {
    /// What becomes of a message the data stage accepted (`decision`, whose verdict is
    /// not a refusal), received on `listener` with these `headers` (as received) for
    /// these `recipients`: its edits (with Authentication-Results that claim to be ours
    /// removed, [`Pipeline::forged_auth_results`]), its recipients after REDIRECT and
    /// BCC, its content filter (a FILTER action of the content checks unless a REDIRECT
    /// overrides it, else a `filter` rule's, else the listener's, else the server's;
    /// none on a `filtered` listener). The session queues what this says; the dry run
    /// reports it.
    pub fn accept(
        &self,
        listener: &str,
        decision: &Decision,
        headers: &Headers,
        recipients: &[String],
    ) -> Acceptance {
        let none = DataOutput::default();
        let data = decision.data().unwrap_or(&none);
        let checks = &data.checks;
        let mut edits = checks.edits.clone();
        let forged = self.forged_auth_results(listener, headers);
        let forged_count = forged.len();
        edits.extend(forged);
        let chosen = checks
            .filter
            .as_ref()
            .filter(|_| checks.redirect.is_none())
            .or(data.filter.as_ref());
        let filter = self
            .filter_for(listener, chosen.map(|(name, _)| name.as_str()))
            .map(|name| {
                let by = chosen
                    .filter(|(n, _)| n == name)
                    .map(|(_, rule)| rule.clone());
                (name.to_owned(), by)
            });
        Acceptance {
            edits,
            header_changes: data.header_changes.clone(),
            recipients: checks
                .changes_recipients()
                .then(|| checks.recipients(recipients)),
            filter,
            forged: forged_count,
        }
    }
}

/// A queued message as the route stage sees it: who sent it, from where, to whom.
#[derive(Clone, Copy, Debug)]
pub struct RouteInput<'a> {
    pub client_ip: Option<IpAddr>,
    pub listener: &'a str,
    pub helo: &'a str,
    pub tls: Option<&'a TlsInfo>,
    pub auth_user: Option<&'a str>,
    pub sender: &'a str,
    /// Every recipient of the message, as accepted.
    pub recipients: &'a [String],
    /// The recipients are already final (a copy split off after expansion, or a
    /// message back from its content filter whose aliases were expanded): no alias
    /// expansion again.
    pub expanded: bool,
    /// The message's queue id (the scheduler's), for the decision log.
    pub queue_id: Option<&'a str>,
}

/// One final recipient of a message at one attempt.
#[derive(Clone, Debug)]
pub struct Routed {
    /// Which of the message's recipients it comes from (an index into `recipients`).
    pub index: usize,
    /// The address (after alias expansion).
    pub rcpt: String,
    pub outcome: RoutedOutcome,
}

#[derive(Clone, Debug)]
pub enum RoutedOutcome {
    /// Where it goes, and the route-stage decision (its rule, `mode="warn"` matches).
    Route(Route, Box<Decision>),
    /// The same address was reached before in this message (given twice, or given and
    /// reached through an alias): delivered once, as Postfix's duplicate filter does.
    Duplicate,
    /// Alias expansion failed (a table that cannot answer): deferred.
    ExpandFailed(String),
}

impl Pipeline {
    /// Expands and routes the recipients `due` (indexes into `input.recipients`) of a
    /// message: every final address once, each with its route ([`Pipeline::route`]:
    /// the route stage's rules, the default MX route, the `local-recipients` check).
    /// `observed`: the route stage logs and counts as traffic (the scheduler), or not
    /// (the dry run, [`Pipeline::judge`]).
    pub fn route_all(&self, input: &RouteInput<'_>, due: &[usize], observed: bool) -> Vec<Routed> {
        let mut out = Vec::new();
        // every address reached, lowercased
        let mut reached: std::collections::HashSet<String> = std::collections::HashSet::new();
        for &index in due {
            let Some(rcpt) = input.recipients.get(index) else {
                continue;
            };
            let finals = if input.expanded {
                Ok(vec![rcpt.clone()])
            } else {
                self.expand(rcpt)
            };
            let finals = match finals {
                Ok(f) => f,
                Err(e) => {
                    out.push(Routed {
                        index,
                        rcpt: rcpt.clone(),
                        outcome: RoutedOutcome::ExpandFailed(e),
                    });
                    continue;
                }
            };
            for f in finals {
                if !reached.insert(f.to_ascii_lowercase()) {
                    out.push(Routed {
                        index,
                        rcpt: f,
                        outcome: RoutedOutcome::Duplicate,
                    });
                    continue;
                }
                let ctx = Context {
                    helo: Some(input.helo),
                    tls: input.tls,
                    auth_user: input.auth_user,
                    sender: Some(input.sender),
                    rcpt: Some(&f),
                    recipients: input.recipients,
                    queue_id: input.queue_id,
                    ..Context::new(
                        input
                            .client_ip
                            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
                        input.listener,
                    )
                };
                let (d, route) = self.routed(&ctx, observed);
                out.push(Routed {
                    index,
                    rcpt: f,
                    outcome: RoutedOutcome::Route(route, Box::new(d)),
                });
            }
        }
        out
    }
}
