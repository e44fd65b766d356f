//! `mtactl replay`: what a new policy would have decided of the decisions in a
//! decision log ([`crate::policy::decision_log`]).
//!
//! Every record is evaluated again with the new policy, its answers from outside (SQL
//! tables, DNS, DNS lists, policy services, rate counters) given back from the record
//! ([`Record::replay`]): nothing is asked of the network, so the result is the same on
//! every run. A decision is *changed* when its verdict or its reply is not the same;
//! changes are grouped by (old rule → new rule, old verdict → new verdict) with
//! example envelopes. A decision whose new evaluation needs an answer the record does
//! not hold is *unknown* (never guessed). A new policy that is an open relay
//! ([`super::relay_check`]) is flagged whatever the log holds.
//!
//! Exit status: 0 nothing changed (or only what `--allow` lists), 1 something else
//! changed, was unknown, or the policy is an open relay, 2 the configuration or a log
//! file cannot be read.

use std::collections::BTreeMap;
use std::io::{BufRead as _, Read as _};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::render;
use crate::policy::Pipeline;
use crate::policy::decision_log::{Record, verdict_reply};

/// The longest line read from a log (a record is far smaller; what is longer is not
/// one, and is counted as malformed without being held in memory).
pub const MAX_LINE: usize = 4 * 1024 * 1024;
/// Example envelopes kept per group.
pub const EXAMPLES: usize = 3;

/// What to replay, and against what.
#[derive(Debug, Default)]
pub struct Options {
    pub config: PathBuf,
    pub files: Vec<PathBuf>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub json: bool,
    /// Changes that do not fail the replay (see [`Allow`]).
    pub allow: Vec<String>,
    /// Write the selected decisions as suite cases to this file.
    pub emit_cases: Option<PathBuf>,
}

pub use crate::config::decision_log::ReplayAllow as Allow;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
struct GroupKey {
    stage: String,
    old_rule: String,
    new_rule: String,
    old_verdict: String,
    new_verdict: String,
    old_route: Option<String>,
    new_route: Option<String>,
}

/// One decision shown as an example.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    pub envelope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_reply: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_reply: Option<String>,
    /// For an unknown decision: the answers the record does not hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

/// The decisions of one (old rule → new rule, old verdict → new verdict).
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub stage: String,
    pub old_rule: String,
    pub new_rule: String,
    pub old_verdict: String,
    pub new_verdict: String,
    /// At the route stage: where the recipients went, and would go now (the
    /// transport and next hop; none: refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_route: Option<String>,
    pub count: u64,
    pub allowed: bool,
    pub examples: Vec<Example>,
}

/// What a replay found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The new policy's revision.
    pub revision: String,
    /// The revisions the log's decisions were made with.
    pub logged_revisions: Vec<String>,
    pub replayed: u64,
    pub unchanged: u64,
    pub changed: u64,
    pub unknown: u64,
    /// Lines that are not records (bad JSON, too long) and records that cannot be
    /// replayed (an unknown stage, a bad client address).
    pub malformed: u64,
    /// Records the daemon could not write (its `{"dropped":N}` lines).
    pub dropped: u64,
    /// Records outside `--since`/`--until`.
    pub skipped: u64,
    pub groups: Vec<Group>,
    /// Unknown decisions, by stage and old rule.
    pub unknowns: Vec<Group>,
    /// Why the new policy is an open relay, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_relay: Option<String>,
    /// Whether what was found fails the replay (exit 1).
    pub fails: bool,
}

fn envelope(r: &Record) -> String {
    let mut e = format!("client {}", r.client);
    if r.listener.is_empty() {
        e.push_str(" (no listener)");
    } else {
        e.push_str(&format!(" on {}", r.listener));
    }
    if let Some(h) = &r.helo {
        e.push_str(&format!(", HELO {h}"));
    }
    if r.tls.is_some() {
        e.push_str(", TLS");
    }
    if let Some(u) = &r.auth_user {
        e.push_str(&format!(", AUTH {u}"));
    }
    if let Some((uid, login)) = &r.local {
        e.push_str(&format!(
            ", local {}",
            login.clone().unwrap_or_else(|| format!("uid:{uid}"))
        ));
    }
    if let Some(s) = &r.sender {
        e.push_str(&format!(", MAIL FROM:<{s}>"));
    }
    if let Some(rcpt) = &r.rcpt {
        e.push_str(&format!(" RCPT TO:<{rcpt}>"));
    } else if !r.recipients.is_empty() {
        e.push_str(&format!(" RCPT TO:<{}>", r.recipients.join(">,<")));
    }
    if let Some(q) = &r.queue_id {
        e.push_str(&format!(" (queue id {q})"));
    }
    crate::logsafe::esc(&e).to_string()
}

/// A route decision logged before routes were (an accept without its route): its
/// route is not compared.
fn legacy_route(r: &Record) -> bool {
    r.stage == "route" && r.route.is_none() && r.verdict != "reject" && r.verdict != "defer"
}

/// Reads the records of `files` in order, calling `each` on every record (and counting
/// what is not one in `report`).
fn read_records(
    files: &[PathBuf],
    report: &mut Report,
    mut each: impl FnMut(Record, &mut Report),
) -> Result<(), String> {
    for path in files {
        let file = std::fs::File::open(path)
            .map_err(|e| format!("mtactl replay: {}: {e}", path.display()))?;
        let mut reader = std::io::BufReader::with_capacity(256 * 1024, file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = (&mut reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(|e| format!("mtactl replay: {}: {e}", path.display()))?;
            if n == 0 {
                break;
            }
            if line.len() > MAX_LINE && !line.ends_with(b"\n") {
                // too long: skip to its end without holding it
                report.malformed += 1;
                let mut sink = Vec::new();
                loop {
                    sink.clear();
                    let m = (&mut reader)
                        .take(MAX_LINE as u64)
                        .read_until(b'\n', &mut sink)
                        .map_err(|e| format!("mtactl replay: {}: {e}", path.display()))?;
                    if m == 0 || sink.ends_with(b"\n") {
                        break;
                    }
                }
                continue;
            }
            let text = line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Record>(text) {
                Ok(record) => each(record, report),
                Err(_) => {
                    match serde_json::from_slice::<crate::policy::decision_log::Dropped>(text) {
                        Ok(d) => report.dropped = report.dropped.saturating_add(d.dropped),
                        Err(_) => report.malformed += 1,
                    }
                }
            }
        }
    }
    Ok(())
}

/// A time for `--since`/`--until`: RFC 3339 (`2026-12-05T10:00:00Z`), or a duration
/// before `now` (`-2h`, `-30m`, `-1d`).
pub fn parse_time(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Some(ago) = text.strip_prefix('-') {
        let d = humantime::parse_duration(ago).map_err(|e| e.to_string())?;
        let d = chrono::Duration::from_std(d).map_err(|e| e.to_string())?;
        return now
            .checked_sub_signed(d)
            .ok_or_else(|| "too long ago".to_owned());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{e} (write RFC 3339, such as 2026-12-05T10:00:00Z, or -2h)"))
}

fn in_window(r: &Record, o: &Options) -> Option<bool> {
    if o.since.is_none() && o.until.is_none() {
        return Some(true);
    }
    let at = DateTime::parse_from_rfc3339(&r.time)
        .ok()?
        .with_timezone(&Utc);
    Some(o.since.is_none_or(|s| at >= s) && o.until.is_none_or(|u| at < u))
}

fn push_example(examples: &mut Vec<Example>, make: impl FnOnce() -> Example) {
    if examples.len() < EXAMPLES {
        examples.push(make());
    }
}

/// Replays the records of `o.files` against `pipeline` (compiled from `o.config`),
/// allowing `allow`.
pub fn run(pipeline: &Pipeline, o: &Options, allow: &[Allow]) -> Result<Report, String> {
    let mut report = Report {
        revision: pipeline.revision().to_owned(),
        ..Report::default()
    };
    let mut groups: BTreeMap<GroupKey, Group> = BTreeMap::new();
    let mut unknowns: BTreeMap<GroupKey, Group> = BTreeMap::new();
    read_records(&o.files, &mut report, |record, report| {
        match in_window(&record, o) {
            Some(true) => {}
            Some(false) => {
                report.skipped += 1;
                return;
            }
            None => {
                report.malformed += 1;
                return;
            }
        }
        let Some(replayed) = record.replay(pipeline) else {
            report.malformed += 1;
            return;
        };
        report.replayed += 1;
        if !report.logged_revisions.contains(&record.revision) {
            report.logged_revisions.push(record.revision.clone());
        }
        let (verdict, reply) = verdict_reply(&replayed.verdict);
        let new_rule = replayed.rule.unwrap_or_else(|| "default".to_owned());
        let missing = replayed.unknown;
        let key = GroupKey {
            stage: record.stage.clone(),
            old_rule: record.rule.clone().unwrap_or_else(|| "default".to_owned()),
            new_rule,
            old_verdict: record.verdict.clone(),
            new_verdict: verdict.to_owned(),
            old_route: record.route.clone(),
            new_route: replayed.route,
        };
        let (target, counter) = if !missing.is_empty() {
            (&mut unknowns, &mut report.unknown)
        } else if record.verdict == verdict
            && record.reply == reply
            && (record.route == key.new_route || legacy_route(&record))
        {
            report.unchanged += 1;
            return;
        } else {
            (&mut groups, &mut report.changed)
        };
        *counter += 1;
        let group = target.entry(key.clone()).or_insert_with(|| Group {
            stage: key.stage.clone(),
            old_rule: key.old_rule.clone(),
            new_rule: key.new_rule.clone(),
            old_verdict: key.old_verdict.clone(),
            new_verdict: key.new_verdict.clone(),
            old_route: key.old_route.clone(),
            new_route: key.new_route.clone(),
            count: 0,
            allowed: false,
            examples: Vec::new(),
        });
        group.count += 1;
        push_example(&mut group.examples, || Example {
            time: record.time.clone(),
            session: record.session.clone(),
            envelope: envelope(&record),
            old_reply: record.reply.clone(),
            new_reply: reply,
            missing,
        });
    })?;
    let unknown_allowed = allow.contains(&Allow::Unknown);
    report.groups = groups
        .into_iter()
        .map(|(k, mut g)| {
            g.allowed = allow
                .iter()
                .any(|a| a.covers(&k.old_verdict, &k.new_verdict, &k.old_rule, &k.new_rule));
            g
        })
        .collect();
    report.unknowns = unknowns
        .into_values()
        .map(|mut g| {
            g.allowed = unknown_allowed;
            g
        })
        .collect();
    report.fails =
        report.groups.iter().any(|g| !g.allowed) || (report.unknown > 0 && !unknown_allowed);
    Ok(report)
}

/// `mtactl replay`: the exit status (see the module's documentation).
pub fn replay(o: &Options) -> u8 {
    let allow: Vec<Allow> = match o.allow.iter().map(|a| Allow::parse(a)).collect() {
        Ok(a) => a,
        Err(e) => {
            errln!("mtactl replay: --allow {e}");
            return 2;
        }
    };
    let (config, pipeline) = match Pipeline::load(&o.config) {
        Ok((config, pipeline)) => (config, std::sync::Arc::new(pipeline)),
        Err(errors) => {
            err!("{}", render(&errors));
            return 2;
        }
    };
    let open_relay = match super::relay_check(&config, &pipeline) {
        Ok(_) => None,
        Err(refusal) => Some(refusal.render().trim_end().to_owned()),
    };
    let mut report = match run(&pipeline, o, &allow) {
        Ok(r) => r,
        Err(e) => {
            errln!("{e}");
            return 2;
        }
    };
    if open_relay.is_some() && !allow.contains(&Allow::OpenRelay) {
        report.fails = true;
    }
    report.open_relay = open_relay;
    if let Some(path) = &o.emit_cases {
        match emit_cases(o, path) {
            Ok(n) => errln!("mtactl replay: {n} case(s) written to {}", path.display()),
            Err(e) => {
                errln!("{e}");
                return 2;
            }
        }
    }
    if o.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => outln!("{text}"),
            Err(e) => {
                errln!("mtactl replay: {e}");
                return 2;
            }
        }
    } else {
        print_text(&report, &o.config);
    }
    u8::from(report.fails)
}

fn print_text(r: &Report, config: &Path) {
    outln!(
        "replayed {} decision(s) of revision(s) {} against {} (revision {})",
        r.replayed,
        if r.logged_revisions.is_empty() {
            "-".to_owned()
        } else {
            r.logged_revisions.join(", ")
        },
        config.display(),
        r.revision
    );
    outln!(
        "unchanged {}, changed {}, unknown {}",
        r.unchanged,
        r.changed,
        r.unknown
    );
    if r.skipped > 0 {
        outln!("outside --since/--until: {}", r.skipped);
    }
    if r.dropped > 0 {
        outln!("not in the log (the daemon dropped them): {}", r.dropped);
    }
    if r.malformed > 0 {
        outln!("lines that are not decisions: {}", r.malformed);
    }
    if let Some(why) = &r.open_relay {
        outln!("OPEN RELAY: the new policy is an open relay:");
        for l in why.lines() {
            outln!("  {l}");
        }
    }
    for (title, groups) in [("changed", &r.groups), ("unknown", &r.unknowns)] {
        if groups.is_empty() {
            continue;
        }
        outln!("{title}:");
        for g in groups {
            let allowed = if g.allowed { "  (allowed)" } else { "" };
            outln!(
                "  {:>6}  {:<7} {} -> {}  {} -> {}{allowed}",
                g.count,
                g.stage,
                g.old_rule,
                g.new_rule,
                g.old_verdict,
                g.new_verdict
            );
            if g.old_route.is_some() || g.new_route.is_some() {
                let shown =
                    |r: &Option<String>| r.clone().unwrap_or_else(|| "(refused)".to_owned());
                outln!(
                    "          route {} -> {}",
                    crate::logsafe::esc(&shown(&g.old_route)),
                    crate::logsafe::esc(&shown(&g.new_route))
                );
            }
            for e in &g.examples {
                outln!("          {} {}", e.time, e.envelope);
                if e.old_reply != e.new_reply {
                    outln!(
                        "            was {}, now {}",
                        e.old_reply.as_deref().unwrap_or("(no refusal)"),
                        e.new_reply.as_deref().unwrap_or("(no refusal)")
                    );
                }
                for m in &e.missing {
                    outln!("            not recorded: {m}");
                }
            }
        }
    }
}

/// `--emit-cases FILE`: the selected decisions as suite cases (see
/// [`crate::policy::decision_log::Record::suite_case`]): written as they were decided,
/// so that `mtactl test-policy` holds the policy to them.
fn emit_cases(o: &Options, path: &Path) -> Result<usize, String> {
    let mut text = String::from(
        "// suite cases from a decision log (mtactl replay --emit-cases): each pins the\n\
         // decision as it was made; the answers from outside are the case's fixtures\n",
    );
    // what each session's decisions got (a case runs the whole session): the answers
    // of its other decisions are the case's fixtures too
    let mut sessions: BTreeMap<String, Vec<crate::lookup::tape::Answer>> = BTreeMap::new();
    let mut scratch = Report::default();
    read_records(&o.files, &mut scratch, |record, _| {
        if in_window(&record, o) != Some(true) || record.stage == "route" {
            return;
        }
        if let Some(s) = record.session.clone() {
            let answers = sessions.entry(s).or_default();
            for a in record.answers {
                if answers.len() < crate::lookup::tape::MAX_ANSWERS && !answers.contains(&a) {
                    answers.push(a);
                }
            }
        }
    })?;
    let mut n = 0usize;
    read_records(&o.files, &mut scratch, |record, _| {
        if in_window(&record, o) != Some(true) {
            return;
        }
        let session = record
            .session
            .as_ref()
            .and_then(|s| sessions.get(s))
            .map_or(&[][..], Vec::as_slice);
        if let Some(case) = record.suite_case_with(session) {
            n += 1;
            text.push('\n');
            text.push_str(&case);
        } else if let Some(milter) = record.milter_decided() {
            // a dry run does not ask milters: what one decided is not a case
            let line = format!(
                "{} {} {}: {} by the milter {milter}{}, not a case (a dry run does not ask milters)",
                record.time,
                record.stage,
                record
                    .rcpt
                    .as_deref()
                    .map_or_else(String::new, |r| format!("<{r}>")),
                record.verdict,
                record
                    .reply
                    .as_deref()
                    .map_or_else(String::new, |r| format!(" ({r})")),
            );
            text.push_str("\n// ");
            text.extend(line.chars().map(|c| if c.is_control() { '?' } else { c }));
            text.push('\n');
        }
    })?;
    std::fs::write(path, text).map_err(|e| format!("mtactl replay: {}: {e}", path.display()))?;
    Ok(n)
}

/// `reload { replay }`: the decisions of the last `since` in the logs (the
/// `decision-log` file and its rotated ones unless named) replayed against
/// `pipeline`; `Err` with what changed beyond `allow`, for the reload's refusal. Runs
/// on a thread of its own whose log and metrics are not the process's (a replay is not
/// traffic; the rules' error lines for unknown answers would read as real ones).
pub fn gate(config: &crate::config::Config, pipeline: &Pipeline) -> Result<u64, Vec<String>> {
    let Some(g) = &config.reload.replay else {
        return Ok(0);
    };
    let files: Vec<PathBuf> = if g.files.is_empty() {
        let base = &config.decision_log.path;
        let mut files: Vec<PathBuf> = (1..=config.decision_log.keep)
            .rev()
            .map(|n| {
                let mut p = base.clone().into_os_string();
                p.push(format!(".{n}"));
                PathBuf::from(p)
            })
            .collect();
        files.push(base.clone());
        files
    } else {
        g.files.clone()
    };
    let files: Vec<PathBuf> = files.into_iter().filter(|f| f.exists()).collect();
    let since = chrono::Duration::from_std(g.since)
        .ok()
        .and_then(|d| Utc::now().checked_sub_signed(d));
    let o = Options {
        files,
        since,
        ..Options::default()
    };
    let report = std::thread::scope(|s| {
        s.spawn(|| {
            let _quiet =
                tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
            crate::metrics::detach_thread();
            crate::policy::decision_log::detach_thread();
            run(pipeline, &o, &g.allow)
        })
        .join()
        .unwrap_or_else(|_| Err("the replay panicked".to_owned()))
    })
    .map_err(|e| vec![format!("reload replay: {e}")])?;
    if !report.fails {
        return Ok(report.replayed);
    }
    let mut why = Vec::new();
    for grp in report.groups.iter().filter(|g| !g.allowed) {
        let example = grp.examples.first().map_or_else(String::new, |e| {
            format!(", such as {} at {}", e.envelope, e.time)
        });
        let route = match (&grp.old_route, &grp.new_route) {
            (None, None) => String::new(),
            (old, new) => format!(
                ", route {} -> {}",
                old.as_deref().unwrap_or("(refused)"),
                new.as_deref().unwrap_or("(refused)")
            ),
        };
        why.push(format!(
            "reload replay: {} {} decision(s) of the last {} would change: {} -> {}, {} -> {}{route}{example}",
            grp.count,
            grp.stage,
            humantime::format_duration(g.since),
            grp.old_rule,
            grp.new_rule,
            grp.old_verdict,
            grp.new_verdict
        ));
    }
    for grp in report.unknowns.iter().filter(|g| !g.allowed) {
        let missing = grp
            .examples
            .first()
            .and_then(|e| e.missing.first())
            .cloned()
            .unwrap_or_default();
        why.push(format!(
            "reload replay: {} {} decision(s) cannot be replayed: the log lacks {missing} (allow=\"unknown\" to go on)",
            grp.count, grp.stage
        ));
    }
    Err(why)
}
