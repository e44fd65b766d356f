//! `mtactl test-policy`: a dry run of one envelope, or a suite of test files.
//!
//! A suite file is KDL, one `case` per test:
//!
//! ```kdl
//! case "a trusted client may relay anywhere" {
//!     client "127.0.0.1"
//!     from "app@example.test"
//!     rcpt "someone@elsewhere.test"
//!     expect "rcpt" "accept"
//!     outcome "queued"
//! }
//! ```
//!
//! Envelope nodes: `client`, `helo`, `listener`, `auth`, `tls` (`#true`), `from`,
//! `rcpt` (one or more), `message` (the text, `\n` line ends become CRLF) or
//! `message-file` (relative to the suite file); `local "USER" [extract=#true]` makes
//! the case a local submission (`sendmail` run by USER; `from` is its `-f`).
//! Expectations: `expect STAGE VERDICT`
//! with optional `rcpt=` (only that recipient; otherwise every recipient),
//! `reply=` (a prefix of the reply) and `rule=` (a part of the deciding rule's
//! `file:line:col`, or `"default"`), `outcome` (`queued`, `held`, `discarded`,
//! `refused`), `not-reached STAGE`, `route RCPT TRANSPORT` (the route of that
//! recipient, or of what its aliases expanded to) and `header "+ Name: value"` (a header change a data
//! hook made: `+` add, `-` remove, `=` replace) and `cleanup "added Date:"` (a part of
//! an edit a local submission's cleanup made).
//!
//! A case may hold a `session { ... }` instead of an envelope: a transcript
//! ([`crate::smtp::transcript`]) that the real session code plays in memory, with
//! `client "IP" [listener="NAME"]` (and `listener`, `dns`) beside it:
//!
//! ```kdl
//! case "pipelined RCPTs, one refused" {
//!     client "192.0.2.1" listener="mx"
//!     session {
//!         expect "220"
//!         send "EHLO client.example"
//!         expect "250"
//!         send "MAIL FROM:<a@src.test>" "RCPT TO:<x@example.test>" "RCPT TO:<y@foreign.test>"
//!         expect "250" "250" "554 5.7.1 Relay access denied"
//!     }
//! }
//! ```

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kdl::{KdlDocument, KdlNode};
use serde::Serialize;

use crate::config::{AuthCheck, Config, render};
use crate::delivery::scheduler::route_input;
use crate::mailauth::DnsFixture;
use crate::net::tls::TlsInfo;
use crate::policy::{DryEnvelope, DryRunReport, Pipeline, Stage};
use crate::position::Positions;
use crate::smtp::dry_run::{DryRunError, Offline, offline};
use crate::smtp::transcript::{Played, Transcript, crlf};

/// Exit statuses, as documented: everything accepted / passed, something refused /
/// failed, the configuration (or a test file) is broken.
pub const EXIT_OK: u8 = 0;
pub const EXIT_REFUSED: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;

/// Loads and compiles the policy, or prints why it cannot.
fn pipeline(config_path: &Path) -> Result<(Config, Pipeline), u8> {
    Pipeline::load(config_path).map_err(|errors| {
        err!("{}", render(&errors));
        EXIT_CONFIG
    })
}

/// One dry run from command-line options.
pub fn single(config_path: &Path, envelope: &DryEnvelope, json: bool) -> u8 {
    let (config, pipeline) = match pipeline(config_path) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if let Some(why) = unknown_listener(&config, &envelope.listener) {
        err!("mtactl: --listener {why}");
        return EXIT_CONFIG;
    }
    let pipeline = Arc::new(pipeline);
    let report = match offline(|o| dry_run(o, &config, &pipeline, envelope)) {
        Ok(Ok(report)) => report,
        Ok(Err(e)) | Err(e) => {
            err!("mtactl: the dry run: {e}");
            return EXIT_CONFIG;
        }
    };
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        out!("{}", render_report(&report));
    }
    if report.refused_anything() {
        EXIT_REFUSED
    } else {
        EXIT_OK
    }
}

/// The dry run of `env` against `pipeline` (compiled from `config`): mtad's session in
/// memory ([`crate::smtp::dry_run`]) up to the message queued, then the route stage on
/// the queued envelope as the scheduler runs it at the first attempt
/// ([`crate::delivery::scheduler::route_input`], [`Pipeline::report_routes`]).
pub fn dry_run(
    o: &Offline,
    config: &Config,
    pipeline: &Arc<Pipeline>,
    env: &DryEnvelope,
) -> Result<DryRunReport, DryRunError> {
    let session = o.dry_run(config, pipeline, env)?;
    let mut report = session.report;
    if let Some((msg, body)) = &session.queued {
        let queued = &msg.envelope;
        let tls = queued.tls.as_deref().and_then(TlsInfo::from_record);
        let input = route_input(queued, tls.as_ref());
        let origin = pipeline.mail_origin(
            queued.client_ip,
            queued.auth_user.as_deref(),
            &queued.listener,
        );
        pipeline.report_routes(&mut report, &input, !queued.external, origin, body);
    }
    Ok(report)
}

/// Why `name` cannot be the listener of a dry run: `None` when the configuration has
/// it (or no listener is named: the first one is used).
fn unknown_listener(config: &Config, name: &str) -> Option<String> {
    if name.is_empty() || config.listeners.iter().any(|l| l.name == name) {
        return None;
    }
    let known: Vec<String> = config
        .listeners
        .iter()
        .map(|l| format!("\"{}\"", l.name))
        .collect();
    Some(format!(
        "\"{name}\": no such listener (the configuration has {})",
        known.join(", ")
    ))
}

/// The report as an operator reads it: a line per stage (per recipient at rcpt).
pub fn render_report(report: &DryRunReport) -> String {
    let mut out = String::new();
    for edit in &report.cleanup {
        let _ = writeln!(out, "{:<32} {:<8} {edit}", "cleanup", "edit");
    }
    for s in &report.stages {
        let stage = match (&s.rcpt, &s.alias_of) {
            (Some(rcpt), Some(from)) => format!("{} <{from}> -> <{rcpt}>", s.stage),
            (Some(rcpt), None) => format!("{} <{rcpt}>", s.stage),
            _ => s.stage.to_owned(),
        };
        let rule = s.rule.as_deref().unwrap_or("default");
        let reply = s
            .reply
            .as_deref()
            .map(|r| format!("  {r}"))
            .unwrap_or_default();
        let verdict = match &s.transport {
            Some(t) => t.as_str(),
            None => s.verdict,
        };
        let _ = writeln!(out, "{stage:<32} {verdict:<8} {rule}{reply}");
        if let Some(error) = &s.error {
            let _ = writeln!(out, "{:<32} {:<8} {error}", "", "error");
        }
        if let Some(options) = &s.route_options {
            let _ = writeln!(out, "{:<32} {:<8} {options}", "", "options");
        }
        if let Some(tls) = &s.tls_policy {
            let _ = writeln!(out, "{:<32} {:<8} {tls}", "", "tls");
        }
        for check in &s.checks {
            let _ = writeln!(out, "{:<32} {:<8} {check}", "", "check");
        }
        for change in &s.header_changes {
            let _ = writeln!(out, "{:<32} {:<8} {change}", "", "header");
        }
        for w in &s.warnings {
            let _ = writeln!(
                out,
                "{:<32} {:<8} {w} (mode=\"warn\": not enforced)",
                "", "warn"
            );
        }
    }
    for stage in &report.not_reached {
        let _ = writeln!(out, "{stage:<32} -        not reached");
    }
    for line in &report.milters {
        let _ = writeln!(out, "milter (not contacted): {line}");
    }
    if !report.headers.is_empty() {
        let _ = writeln!(out, "headers as queued:");
        for h in &report.headers {
            let _ = writeln!(out, "    {h}");
        }
    }
    if let Some(filter) = &report.filter {
        let _ = writeln!(
            out,
            "filter: {filter}; the routes above apply when it injects the message again"
        );
    }
    if let Some(auth) = &report.auth {
        let results: Vec<String> = auth.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "authentication: {}", results.join(" "));
    }
    if !report.dkim.is_empty() {
        let _ = writeln!(out, "dkim: {}", report.dkim.join(", "));
    }
    if !report.dkim_unsigned.is_empty() {
        let label = if report.dkim.is_empty() {
            "dkim: not signed"
        } else {
            "dkim: not signed on some routes"
        };
        let _ = writeln!(out, "{label}: {}", report.dkim_unsigned.join("; "));
    }
    if let Some(origin) = &report.dkim_origin {
        let _ = writeln!(out, "dkim-origin: {origin}");
    }
    let _ = writeln!(out, "outcome: {}", report.outcome);
    out
}

// ---- suites -----------------------------------------------------------------------

/// One test case, read from a suite file.
#[derive(Debug)]
struct Case {
    name: String,
    /// file:line of the case, for messages.
    at: String,
    envelope: DryEnvelope,
    expects: Vec<Expect>,
    outcome: Option<String>,
    not_reached: Vec<String>,
    /// (recipient, transport) a route hook must choose.
    routes: Vec<(String, String)>,
    /// Header changes the data stage must make, as `+ Name: value`, `- Name`, `= Name: value`.
    headers: Vec<String>,
    /// Parts of the edits a local submission's cleanup must make (`added Date:`).
    cleanup: Vec<String>,
    /// The content filter the message must go through (`none`: none).
    filter: Option<String>,
    /// `authentication spf="pass" dmarc="fail" ...`: results the checks must give.
    auth: Vec<(String, String, String)>,
    /// `session { ... }`: a transcript played against the real session instead of the
    /// envelope's dry run.
    session: Option<Transcript>,
}

#[derive(Debug)]
struct Expect {
    stage: String,
    verdict: String,
    rcpt: Option<String>,
    reply: Option<String>,
    rule: Option<String>,
    at: String,
}

#[derive(Serialize)]
struct CaseResult {
    name: String,
    at: String,
    passed: bool,
    failures: Vec<String>,
    /// An envelope case's dry run.
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<DryRunReport>,
    /// A session case's exchanges: `> command` and `< reply` lines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    transcript: Vec<String>,
}

#[derive(Serialize)]
struct SuiteResult {
    cases: Vec<CaseResult>,
    passed: usize,
    failed: usize,
    /// Rules that decided nothing in any case.
    never_fired: Vec<String>,
}

/// Runs every case of every file; prints a line per case, a diff per failure, the
/// totals and the rules no case exercised.
pub fn suite(config_path: &Path, files: &[PathBuf], json: bool) -> u8 {
    let (config, pipeline) = match pipeline(config_path) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let summary = match run(&config, &Arc::new(pipeline), files) {
        Ok(s) => s,
        Err(errors) => {
            for e in errors {
                errln!("{e}");
            }
            return EXIT_CONFIG;
        }
    };
    let (passed, failed) = (summary.passed, summary.failed);
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        );
    } else {
        for r in &summary.cases {
            outln!(
                "{} {}  ({})",
                if r.passed { "ok  " } else { "FAIL" },
                r.name,
                r.at
            );
            for f in &r.failures {
                outln!("       {f}");
            }
            if !r.passed {
                let report = r.report.as_ref().map(render_report).unwrap_or_default();
                for line in report
                    .lines()
                    .chain(r.transcript.iter().map(String::as_str))
                {
                    outln!("       | {line}");
                }
            }
        }
        outln!("{passed} passed, {failed} failed");
        if !summary.never_fired.is_empty() {
            outln!("rules no case exercised:");
            for r in &summary.never_fired {
                outln!("  {r}");
            }
        }
    }
    if failed > 0 { EXIT_REFUSED } else { EXIT_OK }
}

/// Runs every case of every file against `pipeline` (compiled from `config`); `Err`
/// with every problem when a file cannot be read or is not a valid suite.
///
/// Every case is the real session in memory ([`crate::smtp::dry_run`]): an envelope
/// case is sent as a client would send it, a `session` case is played as written;
/// each with a fresh server state (rate limits and connection counts start at zero).
fn run(
    config: &Config,
    pipeline: &Arc<Pipeline>,
    files: &[PathBuf],
) -> Result<SuiteResult, Vec<String>> {
    let mut cases = Vec::new();
    let mut broken = Vec::new();
    for file in files {
        match load_cases(file) {
            Ok(mut c) => cases.append(&mut c),
            Err(mut errors) => broken.append(&mut errors),
        }
    }
    if !broken.is_empty() {
        return Err(broken);
    }
    let ran = offline(|o| {
        cases
            .iter()
            .map(|case| run_case(o, config, pipeline, case))
            .collect::<Vec<_>>()
    });
    let ran = match ran {
        Ok(r) => r,
        Err(e) => return Err(vec![format!("the suites cannot run: {e}")]),
    };
    let mut results = Vec::new();
    let mut fired = BTreeSet::new();
    for (case, (failures, report, transcript, rules)) in cases.iter().zip(ran) {
        fired.extend(rules);
        results.push(CaseResult {
            name: case.name.clone(),
            at: case.at.clone(),
            passed: failures.is_empty(),
            failures,
            report,
            transcript,
        });
    }
    let never_fired: Vec<String> = pipeline
        .rules()
        .filter(|(_, origin)| !fired.contains(origin))
        .map(|(stage, origin)| format!("{origin} (stage {stage})"))
        .collect();
    let passed = results.iter().filter(|r| r.passed).count();
    Ok(SuiteResult {
        failed: results.len() - passed,
        cases: results,
        passed,
        never_fired,
    })
}

/// One case, run: its failures, its report (an envelope case) or exchanges (a
/// session case), and the rules that decided something in it.
type CaseRun = (Vec<String>, Option<DryRunReport>, Vec<String>, Vec<String>);

fn run_case(o: &Offline, config: &Config, pipeline: &Arc<Pipeline>, case: &Case) -> CaseRun {
    if let Some(why) = unknown_listener(config, &case.envelope.listener) {
        // no session can be on a listener that does not exist
        return (
            vec![format!("listener {why}")],
            None,
            Vec::new(),
            Vec::new(),
        );
    }
    if let Some(t) = &case.session {
        let env = &case.envelope;
        let ip = env.client_ip.unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let played = o
            .session(config, pipeline, &env.listener, ip, env.dns.clone(), t)
            .map_err(|e| e.to_string());
        let rules = played.as_ref().map(|p| p.fired.clone()).unwrap_or_default();
        let (failures, lines) = check_session(played);
        return (failures, None, lines, rules);
    }
    match dry_run(o, config, pipeline, &case.envelope) {
        Ok(report) => {
            let rules = report.fired.clone();
            (check(case, &report), Some(report), Vec::new(), rules)
        }
        Err(e) => (
            vec![format!("the dry run: {e}")],
            None,
            Vec::new(),
            Vec::new(),
        ),
    }
}

/// The gate of `reload { require-tests ... }`: every case of the suites `config`
/// requires must pass against `pipeline` before it goes live. `Ok` with the number of
/// cases run; `Err` with a line per failure (the case's file:line:col first) or per
/// broken suite.
pub fn required(config: &Config, pipeline: &Arc<Pipeline>) -> Result<usize, Vec<String>> {
    let files = &config.reload.require_tests;
    if files.is_empty() {
        return Ok(0);
    }
    let summary = run(config, pipeline, files)?;
    let failures: Vec<String> = summary
        .cases
        .iter()
        .filter(|c| !c.passed)
        .flat_map(|c| {
            c.failures
                .iter()
                .map(move |f| format!("{}: required test \"{}\" fails: {f}", c.at, c.name))
        })
        .collect();
    if failures.is_empty() {
        Ok(summary.cases.len())
    } else {
        Err(failures)
    }
}

/// The required suite case that pins what a hook or policy service does for the
/// envelope the open-relay analysis reports (`finding`, docs/policy-analysis.md): a
/// case of a `reload { require-tests }` suite that sends that envelope — the same
/// client address, sender and recipient, on that listener (named, or the first one) —
/// expects the rcpt stage to refuse that recipient, and whose dry run against
/// `pipeline` passes with the recipient refused by that very rule. `Some` with the
/// case's name and place. The case pins one envelope: it is the hook's code that
/// decides for the others.
pub fn pin(
    config: &Config,
    pipeline: &Arc<Pipeline>,
    finding: &crate::policy::RelayFinding,
) -> Option<String> {
    let env = &finding.envelope;
    let rule = finding.rule.to_string();
    let first = config.listeners.first().map(|l| l.name.as_str());
    let candidates: Vec<Case> = config
        .reload
        .require_tests
        .iter()
        .filter_map(|f| load_cases(f).ok())
        .flatten()
        .filter(|c| {
            let e = &c.envelope;
            let listener = if e.listener.is_empty() {
                first
            } else {
                Some(e.listener.as_str())
            };
            c.session.is_none()
                && e.local.is_none()
                && e.auth_user.is_none()
                && e.client_ip == Some(env.client)
                && listener == Some(env.listener.as_str())
                && e.sender.eq_ignore_ascii_case(&env.sender)
                && e.recipients.iter().any(|r| same_recipient(r, &env.rcpt))
                && c.expects.iter().any(|x| {
                    x.stage == "rcpt"
                        && matches!(x.verdict.as_str(), "reject" | "defer")
                        && x.rcpt
                            .as_deref()
                            .is_none_or(|r| same_recipient(r, &env.rcpt))
                })
        })
        .collect();
    if candidates.is_empty() {
        return None;
    }
    offline(|o| {
        candidates.iter().find_map(|case| {
            let report = dry_run(o, config, pipeline, &case.envelope).ok()?;
            let refused = report.stages.iter().any(|s| {
                s.stage == "rcpt"
                    && s.rcpt
                        .as_deref()
                        .is_some_and(|r| same_recipient(&env.rcpt, r))
                    && matches!(s.verdict, "reject" | "defer")
                    && s.rule.as_deref() == Some(rule.as_str())
            });
            (refused && check(case, &report).is_empty())
                .then(|| format!("case \"{}\" ({})", case.name, case.at))
        })
    })
    .ok()
    .flatten()
}

/// A session case's failures (its mismatch) and its exchanges, as `> sent` / `< reply`.
fn check_session(played: Result<Played, String>) -> (Vec<String>, Vec<String>) {
    let played = match played {
        Ok(p) => p,
        Err(why) => return (vec![format!("session: {why}")], Vec::new()),
    };
    let mut lines = Vec::new();
    for e in &played.replies {
        lines.push(format!("> {}", e.sent));
        for l in &e.reply.lines {
            lines.push(format!("< {l}"));
        }
    }
    let failures = played
        .mismatch
        .iter()
        .map(|m| format!("session: {m}"))
        .collect();
    (failures, lines)
}

/// Whether a suite's `rcpt=`/`route` address names the recipient the run reports
/// (in canonical form: `"root"@host` is `root@host`, case aside; a bare `root` is
/// `root@` any domain, as the run qualifies it with the origin).
fn same_recipient(want: &str, got: &str) -> bool {
    let want = crate::policy::canonical_or_same(want);
    if want.eq_ignore_ascii_case(got) {
        return true;
    }
    !want.contains('@')
        && got.len() > want.len()
        && got.as_bytes()[want.len()] == b'@'
        && got.is_char_boundary(want.len())
        && got[..want.len()].eq_ignore_ascii_case(&want)
}

/// The differences between what a case expects and what the run did.
fn check(case: &Case, report: &DryRunReport) -> Vec<String> {
    let mut failures = Vec::new();
    for e in &case.expects {
        let results: Vec<_> = report
            .stages
            .iter()
            .filter(|s| s.stage == e.stage)
            .filter(|s| match (&e.rcpt, &s.rcpt) {
                (Some(want), Some(got)) => same_recipient(want, got),
                _ => true,
            })
            .collect();
        let what = match &e.rcpt {
            Some(r) => format!("{} <{r}>", e.stage),
            None => e.stage.clone(),
        };
        if results.is_empty() {
            failures.push(format!(
                "{what}: expected {}, but the stage was not reached ({})",
                e.verdict, e.at
            ));
            continue;
        }
        for s in results {
            let rule = s.rule.as_deref().unwrap_or("default");
            let label = match &s.rcpt {
                Some(r) => format!("{} <{r}>", s.stage),
                None => s.stage.to_owned(),
            };
            if s.verdict != e.verdict {
                failures.push(format!(
                    "{label}: expected {}, got {} by {rule} ({})",
                    e.verdict, s.verdict, e.at
                ));
                continue;
            }
            if let Some(want) = &e.reply {
                let got = s.reply.as_deref().unwrap_or("");
                if !got.starts_with(want.as_str()) {
                    failures.push(format!(
                        "{label}: expected reply {want:?}..., got {got:?} ({})",
                        e.at
                    ));
                }
            }
            if let Some(want) = &e.rule
                && !rule.contains(want.as_str())
            {
                failures.push(format!(
                    "{label}: expected rule {want}, decided by {rule} ({})",
                    e.at
                ));
            }
        }
    }
    if let Some(want) = &case.outcome
        && want != report.outcome
    {
        failures.push(format!("outcome: expected {want}, got {}", report.outcome));
    }
    for (rcpt, want) in &case.routes {
        // the recipient as routed, or as accepted before alias expansion
        let got = report.stages.iter().find(|s| {
            s.stage == "route"
                && [&s.rcpt, &s.alias_of]
                    .into_iter()
                    .any(|r| r.as_deref().is_some_and(|r| same_recipient(rcpt, r)))
        });
        match got.and_then(|s| s.transport.as_deref()) {
            Some(t) if t == want => {}
            Some(t) => failures.push(format!("route <{rcpt}>: expected {want}, got {t}")),
            None => failures.push(format!(
                "route <{rcpt}>: expected {want}, but no route rule chose one"
            )),
        }
    }
    let made: Vec<&String> = report
        .stages
        .iter()
        .flat_map(|s| &s.header_changes)
        .collect();
    for want in &case.headers {
        if !made.contains(&want) {
            failures.push(format!(
                "header: expected {want:?}, the data stage made {made:?}"
            ));
        }
    }
    for want in &case.cleanup {
        if !report.cleanup.iter().any(|e| e.contains(want.as_str())) {
            failures.push(format!(
                "cleanup: expected an edit with {want:?}, cleanup made {:?}",
                report.cleanup
            ));
        }
    }
    if let Some(want) = &case.filter {
        let got = report
            .filter
            .as_deref()
            .and_then(|f| f.split_whitespace().next())
            .unwrap_or("none");
        if got != want {
            failures.push(format!("filter: expected {want}, got {got}"));
        }
    }
    for (key, want, at) in &case.auth {
        let got = report
            .auth
            .as_ref()
            .and_then(|a| a.get(key.as_str()))
            .map_or("skipped", String::as_str);
        if got != want {
            failures.push(format!(
                "authentication {key}: expected {want}, got {got} ({at})"
            ));
        }
    }
    for stage in &case.not_reached {
        if !report.not_reached.iter().any(|s| s == stage) {
            failures.push(format!("{stage}: expected not to be reached, but it ran"));
        }
    }
    failures
}

/// A KDL file of test-policy's, read and parsed, that names places in it as
/// `file:line:col`.
struct KdlFile {
    name: String,
    text: Positions,
}

impl KdlFile {
    /// Reads and parses `path`; a syntax error is `file:line:col: syntax error: ...`.
    fn read(path: &Path) -> Result<(KdlFile, KdlDocument), Vec<String>> {
        let name = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| vec![format!("{name}: cannot read: {e}")])?;
        let file = KdlFile {
            name,
            text: Positions::new(text),
        };
        let doc = KdlDocument::parse_v2(file.text.text()).map_err(|e| {
            e.diagnostics
                .iter()
                .map(|d| {
                    format!(
                        "{}: syntax error: {}",
                        file.at(d.span.offset()),
                        d.message.as_deref().unwrap_or("invalid KDL")
                    )
                })
                .collect::<Vec<_>>()
        })?;
        Ok((file, doc))
    }

    /// `file:line:col` of a byte offset (columns count characters).
    fn at(&self, offset: usize) -> String {
        self.text.at(&self.name, offset)
    }
}

/// Every envelope case of a suite file (not the session transcripts, which run the
/// session itself), with its name and file:line:col: what the agreement test runs
/// through a live daemon too.
pub fn envelopes(path: &Path) -> Result<Vec<(String, String, DryEnvelope)>, Vec<String>> {
    Ok(load_cases(path)?
        .into_iter()
        .filter(|c| c.session.is_none())
        .map(|c| (c.name, c.at, c.envelope))
        .collect())
}

/// Reads a suite file. Errors are `file:line:col: message`, all of them.
fn load_cases(path: &Path) -> Result<Vec<Case>, Vec<String>> {
    let (file, doc) = KdlFile::read(path)?;
    let at = |offset: usize| file.at(offset);
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut errors = Vec::new();
    let mut cases = Vec::new();
    // `dns { ... }` outside the cases: the answers of every case of the file
    let mut dns = DnsFixture::default();
    for node in doc.nodes() {
        match node.name().value() {
            "dns" => read_dns(
                node.children().map(KdlDocument::nodes).unwrap_or_default(),
                &mut dns,
                &at,
                &mut errors,
            ),
            "policy-service" => read_policy_answer(node, &mut dns, &at, &mut errors),
            "greylist" => read_greylist(node, &mut dns, &at, &mut errors),
            "table" => read_table_answer(node, &mut dns, &at, &mut errors),
            "rate" => read_rate(node, &mut dns, &at, &mut errors),
            _ => {}
        }
    }
    for node in doc.nodes() {
        let here = at(node.name().span().offset());
        match node.name().value() {
            "case" => {}
            "dns" | "policy-service" | "greylist" | "table" | "rate" => continue,
            other => {
                errors.push(format!(
                    "{here}: unknown node `{other}` (a suite holds `case` nodes, `dns`, `policy-service`, `greylist`, `table` and `rate`)"
                ));
                continue;
            }
        }
        match read_case(node, &here, dir, &at, &dns) {
            Ok(case) => cases.push(case),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(cases)
    } else {
        Err(errors)
    }
}

fn read_case(
    node: &KdlNode,
    here: &str,
    dir: &Path,
    at: &dyn Fn(usize) -> String,
    dns: &DnsFixture,
) -> Result<Case, Vec<String>> {
    let mut errors = Vec::new();
    let name = first_string(node).unwrap_or_else(|| {
        errors.push(format!(
            "{here}: `case` needs a name: case \"what it tests\" {{ ... }}"
        ));
        String::new()
    });
    let mut case = Case {
        name,
        at: here.to_owned(),
        envelope: DryEnvelope::default(),
        expects: Vec::new(),
        outcome: None,
        not_reached: Vec::new(),
        routes: Vec::new(),
        headers: Vec::new(),
        cleanup: Vec::new(),
        filter: None,
        auth: Vec::new(),
        session: None,
    };
    // `from` is sendmail's -f in a `local` case: known once every node is read
    let mut from = None;
    // the places of nodes a `local` case may not hold
    let mut client_nodes = Vec::new();
    case.envelope.dns = dns.clone();
    let Some(children) = node.children() else {
        errors.push(format!(
            "{here}: `case` needs a block with the envelope and expectations"
        ));
        return Err(errors);
    };
    // the places of the nodes a session case may not hold (the session sends its own
    // envelope, and says what it expects itself)
    let mut envelope_nodes = Vec::new();
    for child in children.nodes() {
        let where_ = at(child.name().span().offset());
        let strings: Vec<String> = child
            .entries()
            .iter()
            .filter(|e| e.name().is_none())
            .filter_map(|e| e.value().as_string().map(str::to_owned))
            .collect();
        let prop = |key: &str| {
            child
                .entries()
                .iter()
                .find(|e| e.name().is_some_and(|n| n.value() == key))
                .and_then(|e| e.value().as_string().map(str::to_owned))
        };
        let one = |errors: &mut Vec<String>| match strings.as_slice() {
            [one] => Some(one.clone()),
            _ => {
                errors.push(format!(
                    "{where_}: `{}` takes one string",
                    child.name().value()
                ));
                None
            }
        };
        let name = child.name().value();
        if ![
            "client", "listener", "dns", "greylist", "table", "rate", "session",
        ]
        .contains(&name)
        {
            envelope_nodes.push(where_.clone());
        }
        if ["client", "listener", "helo", "auth", "tls", "dns"].contains(&name) {
            client_nodes.push((name.to_owned(), where_.clone()));
        }
        match name {
            "session" => {
                let nodes = child.children().map(KdlDocument::nodes).unwrap_or_default();
                match Transcript::from_kdl(nodes, at) {
                    Ok(t) if t.steps.is_empty() => {
                        errors.push(format!("{where_}: `session` needs a block of steps"));
                    }
                    Ok(t) => case.session = Some(t),
                    Err(mut e) => errors.append(&mut e),
                }
            }
            "client" => {
                if let Some(listener) = prop("listener") {
                    case.envelope.listener = listener;
                }
                if let Some(ip) = one(&mut errors) {
                    match ip.parse::<IpAddr>() {
                        Ok(ip) => case.envelope.client_ip = Some(ip),
                        Err(_) => errors.push(format!("{where_}: `{ip}` is not an IP address")),
                    }
                }
            }
            "helo" => case.envelope.helo = one(&mut errors),
            "listener" => case.envelope.listener = one(&mut errors).unwrap_or_default(),
            "auth" => case.envelope.auth_user = one(&mut errors),
            "tls" => {
                case.envelope.tls = child.entries().first().and_then(|e| e.value().as_bool()).unwrap_or(true)
            }
            "from" => from = one(&mut errors),
            "local" => {
                case.envelope.local = one(&mut errors).map(|user| crate::policy::LocalDry {
                    user,
                    sender: None,
                    extract: child
                        .entries()
                        .iter()
                        .find(|e| e.name().is_some_and(|n| n.value() == "extract"))
                        .and_then(|e| e.value().as_bool())
                        .unwrap_or(false),
                });
            }
            "cleanup" => case.cleanup.extend(strings.iter().cloned()),
            "rcpt" => {
                if strings.is_empty() {
                    errors.push(format!("{where_}: `rcpt` takes one or more addresses"));
                }
                case.envelope.recipients.extend(strings.iter().cloned());
            }
            "message" => {
                case.envelope.message = one(&mut errors).map(|m| crlf(&m).into_bytes());
            }
            "message-file" => {
                if let Some(file) = one(&mut errors) {
                    match std::fs::read(dir.join(&file)) {
                        Ok(bytes) => case.envelope.message = Some(bytes),
                        Err(e) => errors.push(format!("{where_}: cannot read `{file}`: {e}")),
                    }
                }
            }
            "expect" => match strings.as_slice() {
                [stage, verdict] => {
                    if Stage::from_name(stage).is_none() && stage != "submit" {
                        errors.push(format!("{where_}: unknown stage `{stage}`"));
                    }
                    if !["accept", "reject", "defer", "discard", "hold"].contains(&verdict.as_str()) {
                        errors.push(format!("{where_}: unknown verdict `{verdict}`"));
                    }
                    case.expects.push(Expect {
                        stage: stage.clone(),
                        verdict: verdict.clone(),
                        rcpt: prop("rcpt"),
                        reply: prop("reply"),
                        rule: prop("rule"),
                        at: where_.clone(),
                    });
                }
                _ => errors.push(format!(
                    "{where_}: expect STAGE VERDICT [rcpt=\"a@b\"] [reply=\"554 5.7.1\"] [rule=\"file:line\"]"
                )),
            },
            "outcome" => case.outcome = one(&mut errors),
            "route" => match strings.as_slice() {
                [rcpt, transport] => case.routes.push((rcpt.clone(), transport.clone())),
                _ => errors.push(format!("{where_}: route \"RCPT\" \"TRANSPORT\"")),
            },
            "header" => case.headers.extend(strings.iter().cloned()),
            "filter" => case.filter = one(&mut errors),
            "not-reached" => case.not_reached.extend(strings.iter().cloned()),
            "dns" => read_dns(
                child.children().map(KdlDocument::nodes).unwrap_or_default(),
                &mut case.envelope.dns,
                at,
                &mut errors,
            ),
            "policy-service" => {
                read_policy_answer(child, &mut case.envelope.dns, at, &mut errors)
            }
            "greylist" => read_greylist(child, &mut case.envelope.dns, at, &mut errors),
            "table" => read_table_answer(child, &mut case.envelope.dns, at, &mut errors),
            "rate" => read_rate(child, &mut case.envelope.dns, at, &mut errors),
            "authentication" => {
                for e in child.entries() {
                    let (Some(key), Some(value)) = (e.name(), e.value().as_string()) else {
                        errors.push(format!(
                            "{where_}: authentication spf=\"pass\" dkim=\"pass\" dmarc=\"fail\" dmarc-policy=\"reject\" ..."
                        ));
                        continue;
                    };
                    if !is_auth_key(key.value()) {
                        errors.push(format!(
                            "{where_}: unknown check `{}`; one of {}, dmarc-policy",
                            key.value(),
                            AuthCheck::ALL.map(AuthCheck::name).join(", ")
                        ));
                        continue;
                    }
                    case.auth.push((key.value().to_owned(), value.to_owned(), where_.clone()));
                }
            }
            other => errors.push(format!("{where_}: unknown node `{other}` in a case")),
        }
    }
    if case.session.is_some() {
        for place in envelope_nodes {
            errors.push(format!(
                "{place}: a `session` case holds `client`, `listener`, `dns` and the `session` itself; \
                 its envelope and expectations are in the transcript"
            ));
        }
    } else if let Some(local) = &mut case.envelope.local {
        local.sender = from;
        for (name, place) in client_nodes {
            errors.push(format!(
                "{place}: a `local` case is a submission through sendmail; `{name}` is an SMTP client's"
            ));
        }
        if case.envelope.recipients.is_empty() && !local.extract {
            errors.push(format!(
                "{here}: the case has no `rcpt` (nor `local \"USER\" extract=#true`)"
            ));
        }
    } else if case.envelope.recipients.is_empty() {
        errors.push(format!("{here}: the case has no `rcpt`"));
    } else {
        case.envelope.sender = from.unwrap_or_default();
    }
    if errors.is_empty() {
        Ok(case)
    } else {
        Err(errors)
    }
}

/// Whether a case's `authentication` node may name `key` (the keys of
/// [`DryRunReport::auth`]: the checks' condition names, and `dmarc-policy`).
fn is_auth_key(key: &str) -> bool {
    key == "dmarc-policy" || AuthCheck::ALL.iter().any(|c| c.name() == key)
}

/// Reads DNS answers for the `authentication` checks into `dns`:
///
/// ```kdl
/// txt "example.com" "v=spf1 ip4:192.0.2.0/24 -all"
/// a "mail.example.com" "192.0.2.1"       // aaaa likewise
/// mx "example.com" 10 "mail.example.com"
/// ptr "192.0.2.1" "mail.example.com"
/// fail "broken.example"                  // every query fails: temperror
/// ```
pub fn read_dns(
    nodes: &[KdlNode],
    dns: &mut DnsFixture,
    at: &dyn Fn(usize) -> String,
    errors: &mut Vec<String>,
) {
    for node in nodes {
        let where_ = at(node.name().span().offset());
        let args: Vec<&kdl::KdlValue> = node
            .entries()
            .iter()
            .filter(|e| e.name().is_none())
            .map(|e| e.value())
            .collect();
        let strings: Vec<&str> = args.iter().filter_map(|v| v.as_string()).collect();
        let kind = node.name().value();
        let ok = match (kind, strings.as_slice(), args.len()) {
            ("txt", [name, value], 2) => {
                dns.txt(name, value);
                true
            }
            ("a", [name, ip], 2) => match ip.parse() {
                Ok(ip) => {
                    dns.a(name, ip);
                    true
                }
                Err(_) => false,
            },
            ("aaaa", [name, ip], 2) => match ip.parse() {
                Ok(ip) => {
                    dns.aaaa(name, ip);
                    true
                }
                Err(_) => false,
            },
            ("mx", [name, host], 3) => match args[1].as_integer().map(u16::try_from) {
                Some(Ok(pref)) => {
                    dns.mx(name, pref, host);
                    true
                }
                _ => false,
            },
            ("ptr", [ip, name], 2) => match ip.parse() {
                Ok(ip) => {
                    dns.ptr(ip, name);
                    true
                }
                Err(_) => false,
            },
            ("fail", [name], 1) => {
                dns.fail(name);
                true
            }
            _ => false,
        };
        if !ok {
            errors.push(format!(
                "{where_}: `{kind}`: expected one of: txt \"NAME\" \"TEXT\"; a|aaaa \"NAME\" \"IP\"; mx \"NAME\" PREFERENCE \"HOST\"; ptr \"IP\" \"NAME\"; fail \"NAME\""
            ));
        }
    }
}

/// `policy-service "NAME" "ACTION"`: what that policy service answers in the case (or
/// in every case of the file), an access(5) action as a server would send it after
/// `action=`; a service without one is not asked (`DUNNO`).
fn read_policy_answer(
    node: &KdlNode,
    dns: &mut DnsFixture,
    at: &dyn Fn(usize) -> String,
    errors: &mut Vec<String>,
) {
    let args: Vec<Option<&str>> = node
        .entries()
        .iter()
        .map(|e| e.name().is_none().then(|| e.value().as_string()).flatten())
        .collect();
    match args.as_slice() {
        [Some(name), Some(action)] if !action.trim().is_empty() => {
            dns.policy_answer(name, action.trim());
        }
        _ => errors.push(format!(
            "{}: expected policy-service \"NAME\" \"ACTION\" (what that service answers: \"DUNNO\", \"DEFER_IF_PERMIT Greylisted\", \"550 5.7.1 No\"...)",
            at(node.name().span().offset())
        )),
    }
}

/// `table "NAME" "KEY" "VALUE"`: what the SQL table `NAME` answers for `KEY` in the
/// case (or in every case of the file) instead of asking the database; `#null`:
/// nothing found; `error="WHY"` instead of the value: the database fails (the rule
/// defers). Keys not given are asked as usual.
fn read_table_answer(
    node: &KdlNode,
    dns: &mut DnsFixture,
    at: &dyn Fn(usize) -> String,
    errors: &mut Vec<String>,
) {
    let mut args = Vec::new();
    let mut error = None;
    let mut bad = false;
    for e in node.entries() {
        match (e.name().map(|n| n.value()), e.value()) {
            (None, value) => args.push(value),
            (Some("error"), kdl::KdlValue::String(why)) if !why.trim().is_empty() => {
                error = Some(why.trim().to_owned())
            }
            _ => bad = true,
        }
    }
    let answer = match (args.as_slice(), error) {
        (
            [
                kdl::KdlValue::String(t),
                kdl::KdlValue::String(k),
                kdl::KdlValue::String(v),
            ],
            None,
        ) => Some((t, k, Ok(Some(v.clone())))),
        (
            [
                kdl::KdlValue::String(t),
                kdl::KdlValue::String(k),
                kdl::KdlValue::Null,
            ],
            None,
        ) => Some((t, k, Ok(None))),
        ([kdl::KdlValue::String(t), kdl::KdlValue::String(k)], Some(why)) => Some((t, k, Err(why))),
        _ => None,
    };
    match answer {
        Some((table, key, answer)) if !bad && !table.is_empty() => {
            dns.table_answer(table, key, answer);
        }
        _ => errors.push(format!(
            "{}: expected table \"NAME\" \"KEY\" \"VALUE\" (what that SQL table answers for KEY; #null: nothing; or error=\"WHY\" instead of the value)",
            at(node.name().span().offset())
        )),
    }
}

/// `rate "KIND" N`: what the client's rate counter of `KIND` (`messages`,
/// `recipients`...) reads in the case (or in every case of the file); `#null`: no
/// limit of that kind.
fn read_rate(
    node: &KdlNode,
    dns: &mut DnsFixture,
    at: &dyn Fn(usize) -> String,
    errors: &mut Vec<String>,
) {
    let kinds = crate::policy::RateKind::ALL.map(crate::policy::RateKind::as_str);
    let values: Vec<&kdl::KdlValue> = node
        .entries()
        .iter()
        .filter(|e| e.name().is_none())
        .map(|e| e.value())
        .collect();
    let named = node.entries().iter().any(|e| e.name().is_some());
    let count = match values.as_slice() {
        [kdl::KdlValue::String(kind), n] if !named && kinds.contains(&kind.as_str()) => match n {
            kdl::KdlValue::Null => Some((kind, None)),
            kdl::KdlValue::Integer(n) => u32::try_from(*n).ok().map(|n| (kind, Some(n))),
            _ => None,
        },
        _ => None,
    };
    match count {
        Some((kind, count)) => {
            dns.rate(kind, count);
        }
        None => errors.push(format!(
            "{}: expected rate \"KIND\" N (what the client's counter reads; KIND one of {}; #null: no limit)",
            at(node.name().span().offset()),
            kinds.join(", ")
        )),
    }
}

/// `greylist [seen="6m"] [passed=#true] [client-passes=N]`: the greylisting state of
/// the case's triplets (or of every case of the file): first seen that long ago (not
/// written: never), passed already or not, and how many passes its client address
/// has (the auto-allowlist's count).
fn read_greylist(
    node: &KdlNode,
    dns: &mut DnsFixture,
    at: &dyn Fn(usize) -> String,
    errors: &mut Vec<String>,
) {
    let usage = "expected greylist [seen=\"6m\"] [passed=#true] [client-passes=5] (the state of the case's triplets)";
    let here = at(node.name().span().offset());
    let mut state = crate::mailauth::GreylistFixture::default();
    for e in node.entries() {
        let key = e.name().map(|n| n.value());
        match (key, e.value()) {
            (Some("seen"), kdl::KdlValue::String(ago)) => match humantime::parse_duration(ago) {
                Ok(d) => state.seen = Some(d),
                Err(err) => errors.push(format!("{here}: seen={ago:?}: {err}")),
            },
            (Some("passed"), kdl::KdlValue::Bool(b)) => state.passed = *b,
            (Some("client-passes"), kdl::KdlValue::Integer(n)) => match u32::try_from(*n) {
                Ok(n) => state.client_passes = n,
                Err(_) => errors.push(format!("{here}: client-passes={n}: out of range")),
            },
            _ => errors.push(format!("{here}: {usage}")),
        }
    }
    if state.passed && state.seen.is_none() {
        errors.push(format!(
            "{here}: greylist passed=#true needs seen=\"...\" (when it was first seen)"
        ));
    }
    dns.greylist(state);
}

/// `mtactl test-policy --dns FILE`: a KDL file of [`read_dns`] records.
pub fn dns_file(path: &Path) -> Result<DnsFixture, Vec<String>> {
    let (file, doc) = KdlFile::read(path)?;
    let at = |offset: usize| file.at(offset);
    let mut dns = DnsFixture::default();
    let mut errors = Vec::new();
    read_dns(doc.nodes(), &mut dns, &at, &mut errors);
    if errors.is_empty() {
        Ok(dns)
    } else {
        Err(errors)
    }
}

fn first_string(node: &KdlNode) -> Option<String> {
    node.entries()
        .iter()
        .find(|e| e.name().is_none())
        .and_then(|e| e.value().as_string().map(str::to_owned))
}
