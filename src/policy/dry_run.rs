//! A dry run of the pipeline for one envelope: every stage in the order a session runs
//! them, with the verdict and the rule that decided, and nothing sent anywhere. This
//! is what `mtactl test-policy` prints and what its suites compare against.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::config::AuthCheck;
use crate::mailauth::{AuthResults, Checker, Peer};

use super::{
    Context, DataOutput, Decision, HeaderChange, Pipeline, Stage, TlsInfo, Verdict, parse_headers,
};

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
}

/// One stage's outcome (rcpt: one per recipient).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
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
    /// With a message: its header block as it would be queued, after the content
    /// checks' edits and the hooks' header changes (unfolded, one header per entry).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// What the `authentication` checks found (absent when the message is not
    /// checked): `spf`, `spf-helo` from mail; `dkim`, `dmarc`, `dmarc-policy`, `arc`,
    /// `iprev` from data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<std::collections::BTreeMap<&'static str, String>>,
    /// Every rule that decided something in this run (for suite coverage).
    #[serde(skip)]
    pub fired: Vec<String>,
}

impl DryRunReport {
    /// Whether anything was refused (the exit status of `test-policy`).
    pub fn refused_anything(&self) -> bool {
        self.stages
            .iter()
            .any(|s| matches!(s.verdict, "reject" | "defer"))
    }
}

fn result(stage: Stage, rcpt: Option<&str>, decision: &Decision) -> StageResult {
    let reply = match &decision.verdict {
        Verdict::Reject(r) | Verdict::Defer(r) => Some(r.to_string()),
        _ => None,
    };
    let mut header_changes: Vec<String> = Vec::new();
    let mut checks: Vec<String> = Vec::new();
    let none = DataOutput::default();
    let data = decision.data().unwrap_or(&none);
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
        verdict: decision.verdict.name(),
        reply,
        rule: decision.rule.as_ref().map(ToString::to_string),
        error: decision.error.clone(),
        warnings: decision
            .warned
            .iter()
            .map(|(origin, verdict)| format!("{origin} would {}", verdict.name()))
            .collect(),
        header_changes: header_changes
            .into_iter()
            .chain(data.header_changes.iter().map(|c| match c {
                HeaderChange::Add { name, value } => format!("+ {name}: {value}"),
                HeaderChange::Remove { name } => format!("- {name}"),
                HeaderChange::Replace { name, value } => format!("= {name}: {value}"),
            }))
            .collect(),
        checks,
        transport: decision.route_output().and_then(|r| r.transport.clone()),
        route_options: decision
            .route_output()
            .filter(|r| !r.options.is_empty())
            .map(|r| r.options.to_string()),
        alias_of: None,
    }
}

/// The results as `test-policy` shows them (and suites' `authentication` compares):
/// SPF's from mail on, the others from data.
fn summary(r: &AuthResults, data: bool) -> BTreeMap<&'static str, String> {
    let mut m: BTreeMap<&'static str, String> = AuthCheck::ALL
        .into_iter()
        .filter(|c| data || matches!(c, AuthCheck::Spf | AuthCheck::SpfHelo))
        .map(|c| (c.name(), c.of(r).to_string()))
        .collect();
    if data {
        m.insert("dmarc-policy", r.dmarc_policy.as_str().to_owned());
    }
    m
}

/// The queue id in the dry run's Received: header (the daemon's are 16 hex digits too).
const DRY_RUN_ID: &str = "0000000000000000";

fn refuses(decision: &Decision) -> bool {
    matches!(decision.verdict, Verdict::Reject(_) | Verdict::Defer(_))
}

impl Pipeline {
    /// Runs connect, helo, mail, rcpt (per recipient) and data as a session would,
    /// stopping where a session would stop.
    ///
    /// A dry run is not traffic: it writes no log line (what a rule, a content check
    /// or a hook's `print` would log goes nowhere: the report says what happened) and
    /// counts in no metric, so the suites `reload { require-tests }` runs inside the
    /// daemon leave its log and `/metrics` as they were. The log is silenced for this
    /// call on this thread only (a scoped subscriber), never for the sessions running
    /// meanwhile; the metrics are skipped by evaluating with [`Pipeline::judge`].
    pub fn dry_run(&self, env: &DryEnvelope) -> DryRunReport {
        tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
            self.dry_run_unlogged(env)
        })
    }

    fn dry_run_unlogged(&self, env: &DryEnvelope) -> DryRunReport {
        // the sender as the session reads MAIL FROM (one canonical form); the
        // envelope is copied only when that changes it
        let sender = super::address::canonical_or_same(&env.sender);
        // no listener named: the first one, where a client reaching the server's main
        // address connects (a session is always on some listener)
        let listener = if env.listener.is_empty() {
            self.default_listener()
        } else {
            &env.listener
        };
        let canonical;
        let env = if sender == env.sender && listener == env.listener {
            env
        } else {
            canonical = DryEnvelope {
                sender,
                listener: listener.to_owned(),
                ..env.clone()
            };
            &canonical
        };
        let client_ip = env.client_ip.unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let mut report = DryRunReport {
            stages: Vec::new(),
            not_reached: Vec::new(),
            outcome: "queued",
            filter: None,
            dkim: Vec::new(),
            dkim_origin: None,
            dkim_unsigned: Vec::new(),
            headers: Vec::new(),
            auth: None,
            fired: Vec::new(),
        };
        let mut hold = false;
        let mut discard = false;
        let mut record =
            |report: &mut DryRunReport, stage: Stage, rcpt: Option<&str>, d: &Decision| {
                report.stages.push(result(stage, rcpt, d));
                if let Some(rule) = &d.rule {
                    report.fired.push(rule.to_string());
                }
                report
                    .fired
                    .extend(d.warned.iter().map(|(o, _)| o.to_string()));
                hold |= d.verdict == Verdict::Hold;
                discard |= d.verdict == Verdict::Discard;
            };
        let stop = |report: &mut DryRunReport, after: Stage| {
            report.outcome = "refused";
            report.not_reached = Stage::ALL
                .into_iter()
                .filter(|s| *s > after && *s != Stage::Route)
                .map(Stage::as_str)
                .collect();
        };

        // `--tls`: the parameters of a typical TLS 1.3 session
        let tls = env.tls.then(|| TlsInfo {
            protocol: "TLSv1.3".into(),
            cipher: "TLS_AES_256_GCM_SHA384".into(),
        });
        let base = Context {
            tls: tls.as_ref(),
            auth_user: env.auth_user.as_deref(),
            ..Context::new(client_ip, &env.listener)
        };
        let d = self.judge(Stage::Connect, &base);
        record(&mut report, Stage::Connect, None, &d);
        if refuses(&d) {
            stop(&mut report, Stage::Connect);
            return report;
        }
        let helo = env.helo.as_deref().unwrap_or("client.example");
        let with_helo = Context {
            helo: Some(helo),
            ..base
        };
        let d = self.judge(Stage::Helo, &with_helo);
        record(&mut report, Stage::Helo, None, &d);
        if refuses(&d) {
            stop(&mut report, Stage::Helo);
            return report;
        }
        let size = env.message.as_ref().map(|m| m.len() as u64);
        // the `authentication` checks, with the case's DNS answers
        let auth = self
            .authentication()
            .filter(|a| a.applies(client_ip, &env.listener, env.auth_user.is_some()))
            .map(|a| (a, Checker::fixture(&env.dns)));
        let peer = Peer {
            ip: client_ip,
            helo,
            sender: &env.sender,
        };
        // (a fixture checker finishes at its first poll: `Checker::now` is Some)
        let spf = auth.as_ref().map(|(a, checker)| {
            Checker::now(checker.spf(a.checks, peer, &a.authserv_id)).unwrap_or_default()
        });
        if let Some(spf) = &spf {
            report.auth = Some(summary(&spf.results, false));
        }
        let with_helo = Context {
            auth: spf.as_ref().map(|s| &s.results),
            ..with_helo
        };
        let d = self.judge(
            Stage::Mail,
            &Context {
                sender: Some(&env.sender),
                size,
                ..with_helo
            },
        );
        record(&mut report, Stage::Mail, None, &d);
        if refuses(&d) {
            stop(&mut report, Stage::Mail);
            return report;
        }
        let mut accepted: Vec<String> = Vec::new();
        for written in &env.recipients {
            // read as the session reads RCPT TO: canonical form, or a 501
            let d = match self.recipient(written) {
                Err(reply) => {
                    let d = Decision::built_in(Verdict::Reject(reply));
                    record(&mut report, Stage::Rcpt, Some(written), &d);
                    continue;
                }
                Ok(r) if r.bare_postmaster => {
                    let d = Decision::built_in(Verdict::Accept);
                    record(&mut report, Stage::Rcpt, Some(&r.address), &d);
                    (r.address, d)
                }
                Ok(r) => {
                    let d = self.judge(
                        Stage::Rcpt,
                        &Context {
                            sender: Some(&env.sender),
                            rcpt: Some(&r.address),
                            recipients: &accepted,
                            ..with_helo
                        },
                    );
                    record(&mut report, Stage::Rcpt, Some(&r.address), &d);
                    (r.address, d)
                }
            };
            let (rcpt, d) = d;
            // the same recipient twice is one recipient (Postfix's duplicate filter)
            if !refuses(&d) && !accepted.iter().any(|a| a.eq_ignore_ascii_case(&rcpt)) {
                accepted.push(rcpt);
            }
        }
        if accepted.is_empty() {
            stop(&mut report, Stage::Rcpt);
            return report;
        }
        // the message as the daemon holds it when the data stage runs: our Received:
        // on top (content checks and hooks see it; the queue id is a placeholder)
        let mut received = super::trace::received_header(super::trace::ReceivedInfo {
            helo,
            ip: client_ip,
            hostname: &self.rewriter.hostname,
            protocol: &super::trace::protocol(true, false, tls.is_some(), env.auth_user.is_some()),
            tls: tls.as_ref(),
            auth_user: env.auth_user.as_deref(),
            id: DRY_RUN_ID,
            rcpt: (accepted.len() == 1).then(|| accepted[0].as_str()),
        })
        .into_bytes();
        received.extend_from_slice(env.message.as_deref().unwrap_or(b""));
        let message = &received[..];
        let (headers, _) = parse_headers(message);
        // a mail loop is refused before the data stage, as the session does
        if let Some((_, reply)) = self.too_many_hops(&headers) {
            let d = Decision::built_in(Verdict::Reject(reply));
            record(&mut report, Stage::Data, None, &d);
            stop(&mut report, Stage::Data);
            return report;
        }
        let verified = match (&auth, &spf) {
            (Some((a, checker)), Some(spf)) => Some(
                Checker::now(checker.message(a.checks, peer, spf, message, &a.authserv_id))
                    .unwrap_or_default(),
            ),
            _ => None,
        };
        if let Some(v) = &verified {
            report.auth = Some(summary(&v.results, true));
        }
        let d = self.judge(
            Stage::Data,
            &Context {
                sender: Some(&env.sender),
                recipients: &accepted,
                size: Some(message.len() as u64),
                headers: &headers,
                body: Some(message),
                auth: verified.as_ref().map(|v| &v.results),
                ..with_helo
            },
        );
        record(&mut report, Stage::Data, None, &d);
        if refuses(&d) {
            stop(&mut report, Stage::Data);
            return report;
        }
        // what becomes of the message, as the session decides it
        let accepted_msg = self.accept(&env.listener, &d, &headers, &accepted);
        let mut from_domain = None;
        if env.message.is_some() {
            let mut edited = accepted_msg
                .apply(message)
                .unwrap_or_else(|| message.to_vec());
            if let Some(v) = &verified {
                edited.splice(0..0, v.header.bytes());
            }
            from_domain = crate::mailauth::dkim::from_domain(&edited);
            report.headers = parse_headers(&edited)
                .0
                .iter()
                .map(|h| h.unfolded().into_owned())
                .collect();
        }
        if let Some(rcpts) = accepted_msg.recipients {
            accepted = rcpts;
        }
        if let Some((name, by)) = &accepted_msg.filter
            && let Some(filter) = self.content_filter(name)
        {
            let by = match by {
                Some(rule) => {
                    report.fired.push(rule.to_string());
                    rule.to_string()
                }
                None => "the listener or server default".to_owned(),
            };
            report.filter = Some(format!("{name} {} ({by})", filter.transport));
        }
        // each recipient's route after alias expansion (with no route rule: the
        // recipient domain's MX), as the scheduler routes it at the first attempt
        let tls_record = tls.as_ref();
        let input = super::RouteInput {
            client_ip: Some(client_ip),
            listener: &env.listener,
            helo,
            tls: tls_record,
            auth_user: env.auth_user.as_deref(),
            sender: &env.sender,
            recipients: &accepted,
            expanded: false,
        };
        let due: Vec<usize> = (0..accepted.len()).collect();
        // the signing options of each SMTP route
        let mut signed_by: Vec<crate::config::route::RouteOptions> = Vec::new();
        for routed in self.route_all(&input, &due, false) {
            let original = &accepted[routed.index];
            let rcpt = routed.rcpt;
            let alias_of = (!rcpt.eq_ignore_ascii_case(original)).then(|| original.clone());
            match routed.outcome {
                // an address reached twice is delivered once
                super::RoutedOutcome::Duplicate => {}
                super::RoutedOutcome::ExpandFailed(e) => report.stages.push(StageResult {
                    stage: Stage::Route.as_str(),
                    rcpt: Some(rcpt),
                    verdict: "defer",
                    // what the scheduler records for the recipient
                    reply: Some(format!("451 4.3.0 alias expansion failed: {e}")),
                    rule: None,
                    error: None,
                    warnings: Vec::new(),
                    header_changes: Vec::new(),
                    checks: Vec::new(),
                    transport: None,
                    route_options: None,
                    alias_of: None,
                }),
                super::RoutedOutcome::Route(route, mut d) => {
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
                    record(&mut report, Stage::Route, Some(&rcpt), &d);
                    if let Some(last) = report.stages.last_mut() {
                        last.alias_of = alias_of;
                    }
                }
            }
        }
        let domain = from_domain.or_else(|| {
            env.sender
                .rsplit_once('@')
                .map(|(_, d)| d.to_ascii_lowercase())
        });
        // the origin as the daemon records it at receipt, and the scheduler's choice
        if !self.dkim.is_empty() && !signed_by.is_empty() {
            let origin = self.mail_origin(env.client_ip, env.auth_user.as_deref(), &env.listener);
            report.dkim_origin = Some(origin.to_string());
            for route in &signed_by {
                let plan = self.dkim_plan(origin.is_ours(), domain.as_deref(), route);
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
        report.outcome = if discard {
            "discarded"
        } else if hold {
            "held"
        } else {
            "queued"
        };
        report
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
