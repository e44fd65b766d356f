//! What a dry run reports: every stage in the order a session runs them, with the
//! verdict, the reply and the rule that decided, then each recipient's route. This is
//! what `mtactl test-policy` prints and what its suites compare against.
//!
//! The run itself is the real SMTP session, in memory ([`crate::smtp::dry_run`]): this
//! module only turns what the session decided ([`Decision`]s) and what the route stage
//! decides for the queued message ([`Pipeline::route_all`]) into a report.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::config::AuthCheck;
use crate::mailauth::AuthResults;

use super::{DataOutput, Decision, HeaderChange, Pipeline, RouteInput, Stage, Verdict};

/// The envelope (and optional message) to run.
#[derive(Clone, Debug, Default)]
pub struct DryEnvelope {
    pub client_ip: Option<IpAddr>,
    pub listener: String,
    pub helo: Option<String>,
    pub tls: bool,
    pub auth_user: Option<String>,
    pub sender: String,
    pub recipients: Vec<String>,
    /// The message as the client would send it (headers and body); `None` runs the
    /// data stage on an empty message.
    pub message: Option<Vec<u8>>,
    /// The DNS the `authentication` checks see: these answers, every other name
    /// NXDOMAIN. A dry run never queries the network.
    pub dns: crate::mailauth::DnsFixture,
    /// A local submission instead of an SMTP client (`--local USER`): what `sendmail`
    /// run by that user would submit. `client_ip`, `listener`, `helo`, `tls`,
    /// `auth_user` and `sender` do not apply; the recipients are `sendmail`'s
    /// command-line recipients.
    pub local: Option<LocalDry>,
}

/// The submission of a [`DryEnvelope::local`] dry run, as `sendmail`'s options give it.
#[derive(Clone, Debug, Default)]
pub struct LocalDry {
    /// The submitting user's login (the password database must know it).
    pub user: String,
    /// `-f`: the envelope sender as given; `None`: the user's own address.
    pub sender: Option<String>,
    /// `-t`: recipients from the message's To/Cc/Bcc too.
    pub extract: bool,
}

/// One stage's outcome (rcpt: one per recipient).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct StageResult {
    pub stage: &'static str,
    /// The recipient, for rcpt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rcpt: Option<String>,
    /// accept, reject, defer, discard, hold.
    pub verdict: &'static str,
    /// The reply a client would get for reject and defer (`554 5.7.1 text`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// file:line:col of the rule that decided, or `None` when the stage's default applied.
    pub rule: Option<String>,
    /// Why the rule failed closed with a 451 (a hook's error with its file:line:col and
    /// cause, a table that cannot answer): what the daemon logs beside the reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `mode="warn"` rules that matched: `file:line:col would VERDICT`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Data hooks' header changes: `+ Name: value` (add), `- Name` (remove),
    /// `= Name: value` (replace).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub header_changes: Vec<String>,
    /// Data: each content check that matched: `table:line:col header "text" ACTION`,
    /// then `redirect -> addr` and `bcc + addr`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
    /// At route: the transport chosen for the recipient.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// At route: the rule's `auth=`, `tls=` and `fallback=`, as written in a rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_options: Option<String>,
    /// At route: the recipient as accepted, when alias expansion changed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias_of: Option<String>,
    /// At route, for SMTP: the configured TLS level of the destination and where it
    /// came from ([`crate::config::tls_policy::choose`]); what DNSSEC adds is
    /// `mtactl tls-probe`'s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_policy: Option<String>,
}

/// The whole run.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DryRunReport {
    pub stages: Vec<StageResult>,
    /// Where the run stopped early (a refusal at connect, helo, mail, or every
    /// recipient refused), the stages that were not reached.
    pub not_reached: Vec<&'static str>,
    /// What becomes of the message: "queued", "held", "discarded" or "refused".
    pub outcome: &'static str,
    /// The content filter the message goes through before delivery: `NAME TRANSPORT`
    /// and what chose it (a rule's place, or `listener`/`server`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// The DKIM signatures the message would get on its way out over SMTP:
    /// `d=DOMAIN s=SELECTOR ALGORITHM`, per signer (see [`crate::mailauth::dkim::signers_for`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dkim: Vec<String>,
    /// Where the message comes from for DKIM signing ([`super::MailOrigin`]), when a
    /// `dkim` node exists and the message leaves over SMTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dkim_origin: Option<String>,
    /// Why a route's mail is not signed (`not mail from us`, `no dkim node for
    /// DOMAIN`, ...), one per reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dkim_unsigned: Vec<String>,
    /// A local submission's cleanup: each edit (`added Date:`, `qualified To: root →
    /// root@example.jp`), in the order made.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cleanup: Vec<String>,
    /// With a message: its header block as it would be queued, after the content
    /// checks' edits and the hooks' header changes (unfolded, one header per entry).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// What the `authentication` checks found (absent when the message is not
    /// checked): `spf`, `spf-helo` from mail; `dkim`, `dmarc`, `dmarc-policy`, `arc`,
    /// `iprev` from data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<std::collections::BTreeMap<&'static str, String>>,
    /// What would be sent to the listener's milters, event by event (`NAME: EVENT
    /// ARGS; macros NAME=VALUE ...`): a dry run never contacts a milter.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub milters: Vec<String>,
    /// Every rule that decided something in this run (for suite coverage).
    #[serde(skip)]
    pub fired: Vec<String>,
}

impl DryRunReport {
    /// A report with nothing in it yet (the message queued, unless a stage says
    /// otherwise).
    pub fn new() -> Self {
        DryRunReport {
            stages: Vec::new(),
            not_reached: Vec::new(),
            outcome: "queued",
            filter: None,
            dkim: Vec::new(),
            dkim_origin: None,
            dkim_unsigned: Vec::new(),
            milters: Vec::new(),
            cleanup: Vec::new(),
            headers: Vec::new(),
            auth: None,
            fired: Vec::new(),
        }
    }

    /// Whether anything was refused (the exit status of `test-policy`).
    pub fn refused_anything(&self) -> bool {
        self.stages
            .iter()
            .any(|s| matches!(s.verdict, "reject" | "defer"))
    }

    /// The run stopped after `stage` refused: the message is refused and the later
    /// stages (but route, which only queued mail reaches) were not reached.
    pub fn stopped_after(&mut self, stage: Stage) {
        self.outcome = "refused";
        self.not_reached = Stage::ALL
            .into_iter()
            .filter(|s| *s > stage && *s != Stage::Route)
            .map(Stage::as_str)
            .collect();
    }

    /// A local submission was refused before any stage: by the `local-submission`
    /// policy (`by`) or by cleanup, with the words `sendmail` would say.
    pub fn refused_at_submission(&mut self, by: &str, why: String) {
        self.stages.push(StageResult {
            stage: "submit",
            verdict: "reject",
            reply: Some(why),
            rule: Some(by.to_owned()),
            ..StageResult::default()
        });
        self.outcome = "refused";
        self.not_reached = Stage::ALL
            .into_iter()
            .filter(|s| *s != Stage::Route)
            .map(Stage::as_str)
            .collect();
    }

    /// Adds a stage's result, and the rules that decided it to [`DryRunReport::fired`].
    pub fn push(&mut self, result: StageResult, decision: Option<&Decision>) {
        if let Some(d) = decision {
            if let Some(rule) = &d.rule {
                self.fired.push(rule.to_string());
            }
            self.fired
                .extend(d.warned.iter().map(|(o, _)| o.to_string()));
        }
        self.stages.push(result);
    }

    /// What the `authentication` checks found, as `test-policy` shows them (and suites'
    /// `authentication` compares): SPF's from MAIL on, the others from the end of DATA.
    pub fn set_auth(&mut self, r: &AuthResults, data: bool) {
        let mut m: BTreeMap<&'static str, String> = AuthCheck::ALL
            .into_iter()
            .filter(|c| data || matches!(c, AuthCheck::Spf | AuthCheck::SpfHelo))
            .map(|c| (c.name(), c.of(r).to_string()))
            .collect();
        if data {
            m.insert("dmarc-policy", r.dmarc_policy.as_str().to_owned());
        }
        self.auth = Some(m);
    }
}

impl Default for DryRunReport {
    fn default() -> Self {
        Self::new()
    }
}

impl StageResult {
    /// A stage's result from the decision a session applied: `reply` is what the client
    /// was answered (shown for a refusal). A refusal the session made before any rule
    /// ran (a syntax error, a limit) has no decision: its verdict is the reply's class.
    pub fn of(
        stage: Stage,
        rcpt: Option<&str>,
        decision: Option<&Decision>,
        reply: Option<&str>,
    ) -> StageResult {
        let by_reply = || match reply.and_then(|r| r.as_bytes().first()) {
            Some(b'4') => "defer",
            Some(b'5') => "reject",
            _ => "accept",
        };
        let none = DataOutput::default();
        let (verdict, data) = match decision {
            // the session answers what the decision says, unless something after it
            // (the spool) failed: the reply is what the client got
            Some(d) if !refuses(d) && matches!(by_reply(), "defer" | "reject") => {
                (by_reply(), &none)
            }
            Some(d) => (d.verdict.name(), d.data().unwrap_or(&none)),
            None => (by_reply(), &none),
        };
        let reply = matches!(verdict, "reject" | "defer")
            .then(|| reply.map(str::to_owned))
            .flatten();
        let mut header_changes: Vec<String> = Vec::new();
        let mut checks: Vec<String> = Vec::new();
        for m in &data.checks.matches {
            let part = m
                .part
                .as_ref()
                .map_or_else(String::new, |p| format!(" {p}"));
            checks.push(format!(
                "{} {}{part} {:?} {}",
                m.entry,
                m.content.as_str(),
                m.text,
                m.action
            ));
            let (word, rest) = m.action.split_once(' ').unwrap_or((&m.action, ""));
            // content checks' edits of headers, in the notation of hooks' changes
            if m.content.is_header() && m.part.is_none() && !m.action.contains("(") {
                match word.to_ascii_uppercase().as_str() {
                    "IGNORE" | "STRIP" => {
                        header_changes.push(format!("- {}", m.text.replace('\n', "")))
                    }
                    "REPLACE" => header_changes.push(format!("= {}", rest.trim())),
                    "PREPEND" => header_changes.push(format!("+ {}", rest.trim())),
                    _ => {}
                }
            }
        }
        if let Some(to) = &data.checks.redirect {
            checks.push(format!("redirect -> {to}"));
        }
        for b in &data.checks.bcc {
            checks.push(format!("bcc + {b}"));
        }
        StageResult {
            stage: stage.as_str(),
            rcpt: rcpt.map(str::to_owned),
            verdict,
            reply,
            rule: decision.and_then(|d| d.rule.as_ref().map(ToString::to_string)),
            error: decision.and_then(|d| d.error.clone()),
            warnings: decision
                .map(|d| {
                    d.warned
                        .iter()
                        .map(|(origin, verdict)| format!("{origin} would {}", verdict.name()))
                        .collect()
                })
                .unwrap_or_default(),
            header_changes: header_changes
                .into_iter()
                .chain(data.header_changes.iter().map(|c| match c {
                    HeaderChange::Add { name, value } => format!("+ {name}: {value}"),
                    HeaderChange::Remove { name } => format!("- {name}"),
                    HeaderChange::Replace { name, value } => format!("= {name}: {value}"),
                }))
                .collect(),
            checks,
            transport: decision
                .and_then(|d| d.route_output())
                .and_then(|r| r.transport.clone()),
            route_options: decision
                .and_then(|d| d.route_output())
                .filter(|r| !r.options.is_empty())
                .map(|r| r.options.to_string()),
            alias_of: None,
            tls_policy: None,
        }
    }
}

fn refuses(decision: &Decision) -> bool {
    matches!(decision.verdict, Verdict::Reject(_) | Verdict::Defer(_))
}

impl Pipeline {
    /// Reports each recipient's route of a queued message, as the scheduler routes it at
    /// its first attempt ([`Pipeline::route_all`], with no route rule: the recipient
    /// domain's MX), and the DKIM signatures each SMTP route gives `message`
    /// ([`Pipeline::message_dkim_plan`]; `ours`: the origin recorded at receipt,
    /// `origin` how it was decided). Evaluated with [`Pipeline::judge`]: no log line,
    /// no metric.
    pub fn report_routes(
        &self,
        report: &mut DryRunReport,
        input: &RouteInput<'_>,
        ours: bool,
        origin: super::MailOrigin,
        message: &[u8],
    ) {
        let due: Vec<usize> = (0..input.recipients.len()).collect();
        // the signing options of each SMTP route
        let mut signed_by: Vec<crate::config::route::RouteOptions> = Vec::new();
        for routed in self.route_all(input, &due, false) {
            let original = &input.recipients[routed.index];
            let rcpt = routed.rcpt;
            let alias_of = (!rcpt.eq_ignore_ascii_case(original)).then(|| original.clone());
            match routed.outcome {
                // an address reached twice is delivered once
                super::RoutedOutcome::Duplicate => {}
                super::RoutedOutcome::ExpandFailed(e) => {
                    // what the scheduler records for the recipient
                    let reply = format!("451 4.3.0 alias expansion failed: {e}");
                    let result = StageResult::of(Stage::Route, Some(&rcpt), None, Some(&reply));
                    report.push(result, None);
                }
                super::RoutedOutcome::Route(route, mut d) => {
                    let mut tls_policy = None;
                    match route {
                        super::Route::To {
                            transport, options, ..
                        } => {
                            if matches!(transport, crate::config::route::Transport::Smtp(_))
                                && !signed_by.iter().any(|o| {
                                    o.dkim == options.dkim && o.dkim_sign == options.dkim_sign
                                })
                            {
                                signed_by.push(options.clone());
                            }
                            if matches!(transport, crate::config::route::Transport::Smtp(_)) {
                                let c = crate::config::tls_policy::choose(
                                    options.tls,
                                    self.tls_policy.1.as_deref(),
                                    self.tls_policy.0,
                                    &transport,
                                );
                                tls_policy = Some(format!("{} from {}", c.rule, c.source));
                            }
                            d.output = super::Output::Route(super::RouteOutput {
                                transport: Some(transport.to_string()),
                                options,
                            });
                        }
                        // the built-in checks (an unknown local user): what delivery does
                        super::Route::Refused { reply, rule: None }
                            if matches!(d.verdict, Verdict::Accept) =>
                        {
                            d.verdict = if reply.code >= 500 {
                                Verdict::Reject(reply)
                            } else {
                                Verdict::Defer(reply)
                            };
                        }
                        super::Route::Refused { .. } => {}
                    }
                    let reply = match &d.verdict {
                        Verdict::Reject(r) | Verdict::Defer(r) => Some(r.to_string()),
                        _ => None,
                    };
                    let mut result =
                        StageResult::of(Stage::Route, Some(&rcpt), Some(&d), reply.as_deref());
                    result.alias_of = alias_of;
                    result.tls_policy = tls_policy;
                    report.push(result, Some(&d));
                }
            }
        }
        if self.dkim.is_empty() || signed_by.is_empty() {
            return;
        }
        report.dkim_origin = Some(origin.to_string());
        for route in &signed_by {
            let plan = self.message_dkim_plan(ours, message, input.sender, route);
            for s in plan.signers {
                let line = format!("d={} s={} {}", s.domain, s.selector, s.key.algorithm());
                if !report.dkim.contains(&line) {
                    report.dkim.push(line);
                }
            }
            if let Some(why) = plan.unsigned
                && !report.dkim_unsigned.contains(&why)
            {
                report.dkim_unsigned.push(why);
            }
        }
    }

    /// Every rule, with its stage and place, in order (for suite coverage).
    pub fn rules(&self) -> impl Iterator<Item = (Stage, String)> + '_ {
        Stage::ALL.into_iter().flat_map(move |stage| {
            self.stages[stage.index()]
                .iter()
                .map(move |rule| (stage, rule.origin.to_string()))
        })
    }
}
