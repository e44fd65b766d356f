//! The decision log: every decision [`Pipeline::evaluate`] makes for a real session or
//! a local submission, one JSON line each — what the decision read (the client, HELO,
//! TLS and login facts, the envelope, the mail-auth results, the message's header
//! block and digest), every answer from outside it depended on (the [tape]: SQL
//! tables, DNS and DNS lists, policy services, rate counters), and what it decided
//! (verdict, rule with file:line:col, reply). See docs/decision-log.md.
//!
//! A record is a decision that can be made again: [`Record::replay`] rebuilds the
//! context and evaluates it with another policy, the recorded answers given back
//! through the same tape (`mtactl replay`).
//!
//! Dry runs (`mtactl test-policy`, `reload { require-tests }`) are not traffic: they
//! run with a DNS fixture on a [detached](detach_thread) thread, and write nothing.
//! Writing costs the session thread the JSON text only: a thread of its own writes
//! the file and rotates it; when it falls behind by [`QUEUE`] lines, records are
//! dropped (never the session stalled) and a `{"dropped":N}` line says how many.
//!
//! [tape]: crate::lookup::tape

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

/// How long the writer lets lines gather after each write.
const GATHER: std::time::Duration = std::time::Duration::from_millis(20);

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::{Context, Decision, Pipeline, RateKind, RateView, Stage, Verdict};
use crate::config::decision_log::{DecisionLog, DecisionOutput};
use crate::lookup::tape::{self, Answer};
use crate::mailauth::AuthResults;

/// Lines waiting for the writer before records are dropped.
pub const QUEUE: usize = 16_384;
/// Most bytes of a message's header block written.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// One decision, as written (one JSON object per line).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When it was made: RFC 3339, UTC, microseconds.
    pub time: String,
    /// The session (hex, as in the log's `session{id=...}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The transaction's `instance` (from the first RCPT on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The message's queue id, once it has one (data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_id: Option<String>,
    pub listener: String,
    /// The policy's revision ([`Pipeline::revision`]).
    pub revision: String,
    pub stage: String,
    pub client: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// `PROTOCOL CIPHER` of an encrypted session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<(String, String)>,
    /// The SASL login (never the password) and mechanism.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_method: Option<String>,
    /// A local submission's user: `(uid, login)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<(u32, Option<String>)>,
    /// `""` is the null sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rcpt: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The mail-auth results the decision saw (`spf`, `dkim`, `dmarc`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailauth: Option<BTreeMap<String, String>>,
    /// At data: the message's header block as received (non-UTF-8 bytes replaced),
    /// at most [`MAX_HEADER_BLOCK`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<String>,
    /// At data: `sha256:HEX` of the whole message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// At data, when `decision-log { body }` asks: the body's first bytes, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Whether `body` is the whole body.
    #[serde(default, skip_serializing_if = "is_false")]
    pub body_complete: bool,
    /// Every answer from outside the decision depended on, in the order asked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<Answer>,
    /// More answers were asked than a record keeps ([`tape::MAX_ANSWERS`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub answers_cut: bool,
    pub verdict: String,
    /// The deciding rule or hook, `file:line:col`; none: the stage's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The reply of a refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// Why the deciding rule failed closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `mode="warn"` rules that matched: `RULE would VERDICT`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warned: Vec<String>,
    /// What the session's milters answered to this command (after the rules at
    /// connect, helo, mail and rcpt; before them at data), every milter of the
    /// session in order, as far as they were asked ([`MilterAnswer`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub milters: Vec<MilterAnswer>,
    /// At the route stage: where the recipient goes (the transport and next hop, as
    /// `smtp:[10.0.0.5]:25`, `smtp:example.com` for its MX hosts, `lmtp:...`,
    /// `local`); none when it is refused (`verdict`, `reply`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
}

/// Most changes of one milter answer written (a milter rewriting every header).
pub const MAX_MILTER_CHANGES: usize = 32;
/// Most bytes of a milter's reply, or of a header value in a change, written.
pub const MAX_MILTER_TEXT: usize = 512;

/// What one milter answered to one command (a packet: `connect`, `helo`, `mail`,
/// `rcpt`, `end-of-message`), or why it was not asked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MilterAnswer {
    /// The milter's name (`milter "NAME"` or `rspamd "NAME"`).
    pub milter: String,
    pub event: String,
    /// `continue`, `accept`, `reject`, `tempfail`, `discard`, `quarantine`, `reply`
    /// (its own reply), `shutdown`; `failed` (it could not be used: its `on-failure`
    /// action stands); `skipped` (not asked: it accepted the session or the message
    /// before, failed open, or is rspamd, which is asked about the message only).
    pub action: String,
    /// The reply the session answered with because of it (a refusal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// Its changes to the message, summed up (`add-header X-Spam: yes`,
    /// `delete-header Subject`, `replace-body 2048 bytes`, `add-rcpt <a@b>`...), at
    /// most [`MAX_MILTER_CHANGES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    /// How many changes were left out of `changes`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub changes_cut: u32,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// `text` with line breaks as spaces and at most [`MAX_MILTER_TEXT`] bytes.
fn bounded(text: &str) -> String {
    let one_line = text
        .trim_end()
        .replace("\r\n", " ")
        .replace(['\r', '\n'], " ");
    crate::message::mime::cut(&one_line, MAX_MILTER_TEXT).to_owned()
}

impl MilterAnswer {
    /// `milter`'s answer `action` at `event`.
    pub fn new(milter: &str, event: &str, action: &str) -> MilterAnswer {
        MilterAnswer {
            milter: milter.to_owned(),
            event: event.to_ascii_lowercase(),
            action: action.to_owned(),
            ..MilterAnswer::default()
        }
    }

    /// With the reply the session answered because of it.
    pub fn with_reply(mut self, reply: &str) -> MilterAnswer {
        self.reply = Some(bounded(reply));
        self
    }

    /// With why it failed.
    pub fn with_error(mut self, error: &str) -> MilterAnswer {
        self.error = Some(bounded(error));
        self
    }

    /// With its changes, summed up (at most [`MAX_MILTER_CHANGES`] kept).
    pub fn with_changes(mut self, changes: impl IntoIterator<Item = String>) -> MilterAnswer {
        for c in changes {
            if self.changes.len() < MAX_MILTER_CHANGES {
                self.changes.push(bounded(&c));
            } else {
                self.changes_cut = self.changes_cut.saturating_add(1);
            }
        }
        self
    }

    /// The refusal it made: a 5xx is a reject, a 4xx a deferral. The reply as the
    /// milter or the session wrote it (`550 5.7.1 Command rejected`, a milter's own
    /// `554 Go away`, a multi-line one): its first code, its enhanced code (or one
    /// of the code's class), its texts.
    fn refusal(&self) -> Option<Verdict> {
        let text = self.reply.as_deref()?.trim();
        let code: u16 = text
            .get(..3)?
            .parse()
            .ok()
            .filter(|c| (400..600).contains(c))?;
        let rest = text.get(3..).unwrap_or_default();
        let rest = rest.strip_prefix(['-', ' ']).unwrap_or(rest);
        let class = (code / 100) as u8;
        let (enhanced, words) = match rest.split_once(' ') {
            Some((first, words)) => (crate::config::Reply::parse_enhanced(first), words),
            None => (crate::config::Reply::parse_enhanced(rest), ""),
        };
        let (enhanced, words) = match enhanced.filter(|e| e[0] == class) {
            Some(e) => (e, words),
            None => ([class, 7, 1], rest),
        };
        let reply = crate::config::Reply::new(code, enhanced, words.trim());
        Some(if code >= 500 {
            Verdict::Reject(reply)
        } else {
            Verdict::Defer(reply)
        })
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The line the writer inserts when it had to drop records.
#[derive(Debug, Serialize, Deserialize)]
pub struct Dropped {
    pub dropped: u64,
}

thread_local! {
    static DETACHED: Cell<bool> = const { Cell::new(false) };
}

/// From now on, decisions made on this thread are not written: dry runs and suites
/// run on threads of their own (with [`crate::metrics::detach_thread`]).
pub fn detach_thread() {
    DETACHED.set(true);
}

struct Sink {
    to: Output,
    body: u64,
    dropped: std::sync::Arc<AtomicU64>,
}

enum Output {
    File(SyncSender<String>),
    Log,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Why the decision log cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("decision log {path}: {source}")]
pub struct DecisionLogError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Starts writing decisions as `settings` say (the daemon, once, at start; later calls
/// change nothing). Nothing is written before, nor with `output "off"`.
pub fn install(settings: &DecisionLog) -> Result<(), DecisionLogError> {
    let to = match settings.output {
        DecisionOutput::Off => return Ok(()),
        DecisionOutput::Log => Output::Log,
        DecisionOutput::File => {
            let err = |source| DecisionLogError {
                path: settings.path.clone(),
                source,
            };
            let mut writer =
                FileWriter::open(&settings.path, settings.max_size, settings.keep).map_err(err)?;
            let (tx, rx) = std::sync::mpsc::sync_channel::<String>(QUEUE);
            let dropped = std::sync::Arc::new(AtomicU64::new(0));
            let counter = dropped.clone();
            std::thread::Builder::new()
                .name("mtad-decisions".into())
                .spawn(move || writer.run(rx, &counter))
                .map_err(err)?;
            let _ = SINK.set(Sink {
                to: Output::File(tx),
                body: settings.body,
                dropped,
            });
            return Ok(());
        }
    };
    let _ = SINK.set(Sink {
        to,
        body: settings.body,
        dropped: Default::default(),
    });
    Ok(())
}

/// Whether a decision with this context is written: a log is installed, the thread is
/// not a dry run's, and the session is not one in memory (a DNS fixture).
pub(super) fn wanted(ctx: &Context<'_>) -> bool {
    ctx.dns_fixture.is_none() && !DETACHED.get() && SINK.get().is_some()
}

/// The record of a decision, written when the [`Logged`] is finished or dropped.
pub(super) fn logged(
    pipeline: &Pipeline,
    stage: Stage,
    ctx: &Context<'_>,
    decision: &Decision,
    recorded: tape::Recorded,
) -> Logged {
    let Some(sink) = SINK.get() else {
        return Logged::default();
    };
    Logged(Some(Box::new(Record::of(
        pipeline, stage, ctx, decision, recorded, sink.body,
    ))))
}

/// Whether decisions are written at all (a log is installed): the session collects
/// its milters' answers only then.
pub fn enabled() -> bool {
    SINK.get().is_some() && !DETACHED.get()
}

/// Sends a record to the writer (or the log stream).
fn send(record: &Record) {
    let Some(sink) = SINK.get() else {
        return;
    };
    let Ok(line) = serde_json::to_string(record) else {
        return;
    };
    match &sink.to {
        Output::Log => {
            tracing::info!(target: "mtad::decision", decision = %line, "policy decision")
        }
        Output::File(tx) => match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                sink.dropped.fetch_add(1, Ordering::Relaxed);
            }
        },
    }
}

/// A decision's record not written yet: what comes after the rules and belongs to
/// the decision is added first — the milters' answers to the command
/// ([`Logged::finish`]), where the route stage sends the recipient. Written when
/// finished, or as it is when dropped (a session that ends meanwhile). Empty when the
/// decision is not logged.
#[derive(Debug, Default)]
#[must_use = "a decision's record is written when it is finished or dropped"]
pub struct Logged(Option<Box<Record>>);

impl Logged {
    /// Adds what the session's milters answered to the command, the outcome being what
    /// the client got ([`milters_effect`]), and writes the record.
    pub fn finish(mut self, answers: Vec<MilterAnswer>) {
        if let Some(r) = &mut self.0
            && !answers.is_empty()
        {
            r.add_milters(answers);
        }
    }

    /// Adds where the route stage sends the recipient: the route as delivery takes it,
    /// after the built-in checks (a `local` recipient that does not exist is refused).
    pub(super) fn route(mut self, route: &super::Route) {
        if let Some(r) = &mut self.0 {
            match route {
                super::Route::To { transport, .. } => r.route = Some(transport.to_string()),
                super::Route::Refused { reply, rule } => {
                    let verdict = if reply.code >= 500 {
                        Verdict::Reject(reply.clone())
                    } else {
                        Verdict::Defer(reply.clone())
                    };
                    r.verdict = verdict.name().to_owned();
                    r.reply = Some(reply.to_string());
                    r.rule = rule.as_ref().map(ToString::to_string);
                }
            }
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            send(&r);
        }
    }
}

/// The record of a command the milters refused before the rules ran (the end of the
/// message: milters run first there), written at once.
pub fn milters_refused(
    pipeline: &Pipeline,
    stage: Stage,
    ctx: &Context<'_>,
    answers: Vec<MilterAnswer>,
) {
    if !wanted(ctx) {
        return;
    }
    logged(
        pipeline,
        stage,
        ctx,
        &Decision::built_in(Verdict::Accept),
        tape::Recorded::default(),
    )
    .finish(answers);
}

/// What the milters' answers make of a command, in the session's order: each milter
/// it runs (`running`, in order) gets what the rules let through; the first refusal
/// is the reply; a discard or a quarantine (a hold) is the message's fate, and a
/// discard at the end of the message stops the rest. The effect (`None`: none) with
/// the milter that made it, and the milters that would be asked whose answer
/// `answers` does not hold (then the effect is unknown from there on).
pub fn milters_effect(
    answers: &[MilterAnswer],
    running: &[String],
) -> (Option<(Verdict, String)>, Vec<String>) {
    let mut effect: Option<(Verdict, String)> = None;
    for name in running {
        let Some(a) = answers.iter().find(|a| &a.milter == name) else {
            return (effect, vec![format!("milter {name}'s answer")]);
        };
        if let Some(refusal) = a.refusal() {
            return (Some((refusal, name.clone())), Vec::new());
        }
        let fate = match a.action.as_str() {
            "discard" => Verdict::Discard,
            "quarantine" => Verdict::Hold,
            _ => continue,
        };
        if effect
            .as_ref()
            .is_none_or(|(v, _)| weight(&fate) > weight(v))
        {
            effect = Some((fate.clone(), name.clone()));
        }
        if fate == Verdict::Discard && a.event == "end-of-message" {
            break;
        }
    }
    (effect, Vec::new())
}

/// How much a verdict weighs against another: a message's fate (deliver, hold,
/// discard), a refusal above all.
fn weight(v: &Verdict) -> u8 {
    match v {
        Verdict::Accept | Verdict::Next => 0,
        Verdict::Hold => 1,
        Verdict::Discard => 2,
        Verdict::Reject(_) | Verdict::Defer(_) => 3,
    }
}

/// The verdict the client got, and the rule that made it: the rules' (`rules`), unless
/// they let the command through and a milter refused it, or a milter's discard or
/// quarantine weighs more than the rules' accept or hold (the rule is then
/// `milter:NAME`).
fn combine(
    rules: (Verdict, Option<String>),
    effect: Option<(Verdict, String)>,
) -> (Verdict, Option<String>) {
    match effect {
        Some((v, milter)) if weight(&v) > weight(&rules.0) => (v, Some(format!("milter:{milter}"))),
        _ => rules,
    }
}

/// The milters of each listener's sessions (and of local submissions), as the
/// configuration names them: what a replay gives the recorded answers of.
#[derive(Debug, Default)]
pub struct Milters {
    by_listener: BTreeMap<String, (Vec<String>, Option<crate::lookup::NetworkSet>)>,
}

impl Milters {
    pub fn of(config: &crate::config::Config) -> Milters {
        let mut by_listener: BTreeMap<String, (Vec<String>, Option<crate::lookup::NetworkSet>)> =
            config
                .listeners
                .iter()
                .map(|l| {
                    let skip = l
                        .milter_skip
                        .as_ref()
                        .and_then(|set| config.networks.get(set))
                        .cloned();
                    (l.name.clone(), (l.milters.clone(), skip))
                })
                .collect();
        if let Some(local) = &config.local_submission {
            by_listener.insert(
                super::local::LISTENER.to_owned(),
                (local.milters.clone(), None),
            );
        }
        Milters { by_listener }
    }

    /// The milters a session of `client` on `listener` talks to, in order.
    pub fn running(&self, listener: &str, client: IpAddr) -> &[String] {
        match self.by_listener.get(listener) {
            Some((_, Some(skip))) if skip.contains(client.to_canonical()) => &[],
            Some((names, _)) => names,
            None => &[],
        }
    }
}

/// The file writer: appends lines, rotates by size.
struct FileWriter {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    size: u64,
    max_size: u64,
    keep: u32,
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
}

impl FileWriter {
    fn open(path: &Path, max_size: u64, keep: u32) -> std::io::Result<FileWriter> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.exists()
        {
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(FileWriter {
            path: path.to_path_buf(),
            file: std::io::BufWriter::with_capacity(64 * 1024, file),
            size,
            max_size,
            keep,
        })
    }

    fn run(&mut self, rx: Receiver<String>, dropped: &AtomicU64) {
        while let Ok(first) = rx.recv() {
            self.line(&first);
            // what else is waiting, then one flush
            while let Ok(more) = rx.try_recv() {
                self.line(&more);
            }
            let lost = dropped.swap(0, Ordering::Relaxed);
            if lost > 0
                && let Ok(text) = serde_json::to_string(&Dropped { dropped: lost })
            {
                self.line(&text);
            }
            if let Err(e) = self.file.flush() {
                tracing::error!(path = %self.path.display(), error = %e, "decision log: cannot write");
            }
            // let lines gather: a writer woken for every line costs the sessions a
            // thread wakeup and this thread a write per decision (measured: a third
            // more CPU per relayed message); this way it wakes at most 50 times a
            // second. The queue holds far more than arrives meanwhile.
            std::thread::sleep(GATHER);
        }
    }

    fn line(&mut self, line: &str) {
        if self.size >= self.max_size {
            self.rotate();
        }
        let ok = self
            .file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.write_all(b"\n"));
        if ok.is_ok() {
            self.size += line.len() as u64 + 1;
        }
    }

    /// `NAME` becomes `NAME.1`, `NAME.1` `NAME.2`..., the oldest beyond `keep` goes.
    fn rotate(&mut self) {
        let _ = self.file.flush();
        let numbered = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        let _ = std::fs::remove_file(numbered(self.keep));
        for n in (1..self.keep).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        if let Err(e) = std::fs::rename(&self.path, numbered(1)) {
            tracing::error!(path = %self.path.display(), error = %e, "decision log: cannot rotate");
        }
        match open_append(&self.path) {
            Ok(f) => {
                self.file = std::io::BufWriter::with_capacity(64 * 1024, f);
                self.size = 0;
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "decision log: cannot reopen after rotation");
            }
        }
    }
}

/// A rate view whose every reading goes through the tape (recorded, or replayed).
pub(super) struct TapedRates<'a>(pub &'a dyn RateView);

impl std::fmt::Debug for TapedRates<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TapedRates")
    }
}

impl RateView for TapedRates<'_> {
    fn count(&self, kind: RateKind, client: IpAddr) -> Option<u32> {
        tape::rate(kind.as_str(), || self.0.count(kind, client))
    }
}

/// No counters (a replay reads them from the tape).
#[derive(Debug)]
pub(super) struct NoRates;

impl RateView for NoRates {
    fn count(&self, _: RateKind, _: IpAddr) -> Option<u32> {
        None
    }
}

/// The names of the mail-auth results a record keeps.
fn auth_map(r: &AuthResults) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = crate::config::AuthCheck::ALL
        .into_iter()
        .map(|c| (c.name().to_owned(), c.of(r).to_string()))
        .collect();
    m.insert("dmarc-policy".into(), r.dmarc_policy.as_str().to_owned());
    for (k, v) in [
        ("spf-domain", &r.spf_domain),
        ("dmarc-domain", &r.dmarc_domain),
        ("iprev-name", &r.iprev_name),
    ] {
        if !v.is_empty() {
            m.insert(k.into(), v.clone());
        }
    }
    m
}

fn auth_of(m: &BTreeMap<String, String>) -> AuthResults {
    let mut r = AuthResults::default();
    for c in crate::config::AuthCheck::ALL {
        if let Some(v) = m.get(c.name()).and_then(|v| v.parse().ok()) {
            *c.of_mut(&mut r) = v;
        }
    }
    if let Some(p) = m.get("dmarc-policy").and_then(|v| v.parse().ok()) {
        r.dmarc_policy = p;
    }
    r.spf_domain = m.get("spf-domain").cloned().unwrap_or_default();
    r.dmarc_domain = m.get("dmarc-domain").cloned().unwrap_or_default();
    r.iprev_name = m.get("iprev-name").cloned().unwrap_or_default();
    r
}

/// The verdict and reply of a decision, as records write them.
pub fn verdict_of(d: &Decision) -> (&'static str, Option<String>) {
    verdict_reply(&d.verdict)
}

/// A verdict's name and the reply of a refusal, as records write them.
pub fn verdict_reply(v: &Verdict) -> (&'static str, Option<String>) {
    let reply = match v {
        Verdict::Reject(r) | Verdict::Defer(r) => Some(r.to_string()),
        _ => None,
    };
    (v.name(), reply)
}

impl Record {
    /// The record of `decision`, made by `pipeline` at `stage` in `ctx` with the
    /// answers `recorded`; `body`: how many bytes of the body to keep.
    pub fn of(
        pipeline: &Pipeline,
        stage: Stage,
        ctx: &Context<'_>,
        decision: &Decision,
        recorded: tape::Recorded,
        body: u64,
    ) -> Record {
        let (verdict, reply) = verdict_of(decision);
        let mut r = Record {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            session: ctx.session.map(|s| format!("{s:x}")),
            instance: ctx.instance.map(str::to_owned),
            queue_id: ctx.queue_id.map(str::to_owned),
            listener: ctx.listener.to_owned(),
            revision: pipeline.revision().to_owned(),
            stage: stage.as_str().to_owned(),
            client: ctx.client_ip.to_string(),
            port: ctx.client_port,
            helo: ctx.helo.map(str::to_owned),
            protocol: ctx.protocol.map(str::to_owned),
            tls: ctx.tls.map(|t| (t.protocol.clone(), t.cipher.clone())),
            auth_user: ctx.auth_user.map(str::to_owned),
            sasl_method: ctx.sasl_method.map(str::to_owned),
            local: ctx.submitter.map(|s| (s.uid, s.login.clone())),
            sender: ctx.sender.map(str::to_owned),
            rcpt: ctx.rcpt.map(str::to_owned),
            recipients: if stage == Stage::Data {
                ctx.recipients.to_vec()
            } else {
                Vec::new()
            },
            size: ctx.size,
            mailauth: ctx.auth.map(auth_map),
            answers: recorded.answers,
            answers_cut: recorded.cut,
            verdict: verdict.to_owned(),
            rule: decision.rule.as_ref().map(ToString::to_string),
            reply,
            error: decision.error.clone(),
            warned: decision
                .warned
                .iter()
                .map(|(o, v)| format!("{o} would {}", v.name()))
                .collect(),
            ..Record::default()
        };
        if let Some(message) = ctx.body {
            let end = ctx.headers.iter().next_back().map_or(0, |h| h.raw().end);
            let block = message.get(..end).unwrap_or_default();
            let text = String::from_utf8_lossy(block);
            r.headers = Some(crate::message::mime::cut(&text, MAX_HEADER_BLOCK).to_owned());
            r.digest = Some(format!("sha256:{}", hex(&sha2::Sha256::digest(message))));
            if body > 0 {
                let rest = super::body_of(message, ctx.headers);
                let keep = rest.len().min(usize::try_from(body).unwrap_or(usize::MAX));
                r.body = Some(base64::engine::general_purpose::STANDARD.encode(&rest[..keep]));
                r.body_complete = keep == rest.len();
            }
        }
        r
    }

    /// The stage of the record.
    pub fn stage(&self) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.as_str() == self.stage)
    }

    /// The message as recorded: the header block, and the body when it was written
    /// whole (`false`: the body is not in the record).
    pub fn message(&self) -> (Vec<u8>, bool) {
        let mut m = Vec::new();
        if let Some(h) = &self.headers {
            m.extend_from_slice(h.as_bytes());
            m.extend_from_slice(b"\r\n");
        }
        let body = self
            .body
            .as_ref()
            .filter(|_| self.body_complete)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
        let whole = body.is_some();
        if let Some(b) = body {
            m.extend_from_slice(&b);
        }
        (m, whole)
    }

    /// Adds the milters' answers to the command, the record's verdict becoming what
    /// the client got ([`milters_effect`] of every milter answered, in order).
    fn add_milters(&mut self, answers: Vec<MilterAnswer>) {
        let mut running: Vec<String> = Vec::new();
        for a in &answers {
            if !running.contains(&a.milter) {
                running.push(a.milter.clone());
            }
        }
        let (effect, _) = milters_effect(&answers, &running);
        self.milters = answers;
        let rules = match (self.verdict.as_str(), &self.reply) {
            ("reject" | "defer", _) => return,
            ("hold", _) => Verdict::Hold,
            ("discard", _) => Verdict::Discard,
            _ => Verdict::Accept,
        };
        let (verdict, rule) = combine((rules, self.rule.clone()), effect);
        let (name, reply) = verdict_reply(&verdict);
        if name != self.verdict || rule != self.rule {
            self.verdict = name.to_owned();
            self.reply = reply;
            self.rule = rule;
        }
    }

    /// Evaluates this decision again with `pipeline`: the context rebuilt from the
    /// record, every answer from outside given back from it (nothing is asked: no
    /// DNS, no database, no policy server, no milter). What the client would get,
    /// with the questions the record has no answer for (the decision then is unknown,
    /// not a guess). `None`: the record is not one of a decision (an unknown stage or
    /// client).
    ///
    /// The milters the new policy runs for the session get the command as the session
    /// gives it to them (after the rules; at data, before them), each answering as
    /// recorded: a milter the new policy no longer runs changes nothing, one the record
    /// has no answer of makes the decision unknown. At the route stage, the route is
    /// the one delivery would take ([`Pipeline::checked_route`]).
    pub fn replay(&self, pipeline: &Pipeline) -> Option<Replayed> {
        let stage = self.stage()?;
        let client: IpAddr = self.client.parse().ok()?;
        let tls = self.tls.as_ref().map(|(protocol, cipher)| super::TlsInfo {
            protocol: protocol.clone(),
            cipher: cipher.clone(),
        });
        let submitter = self
            .local
            .as_ref()
            .map(|(uid, login)| super::local::Submitter {
                uid: *uid,
                login: login.clone(),
                gecos: None,
            });
        let auth = self.mailauth.as_ref().map(auth_of);
        let (message, whole) = self.message();
        let headers = match stage {
            Stage::Data => crate::message::parse_headers(&message).0,
            _ => crate::message::Headers::default(),
        };
        let recipients: Vec<String> = self.recipients.clone();
        let sasl: Option<&'static str> = match self.sasl_method.as_deref() {
            Some("PLAIN") => Some("PLAIN"),
            Some("LOGIN") => Some("LOGIN"),
            Some(_) => Some("UNKNOWN"),
            None => None,
        };
        let rates = TapedRates(&NoRates);
        let ctx = Context {
            client_port: self.port,
            helo: self.helo.as_deref(),
            tls: tls.as_ref(),
            auth_user: self.auth_user.as_deref(),
            submitter: submitter.as_ref(),
            sender: self.sender.as_deref(),
            rcpt: self.rcpt.as_deref(),
            recipients: &recipients,
            size: self.size,
            headers: &headers,
            body: (stage == Stage::Data).then_some(message.as_slice()),
            rates: Some(&rates),
            auth: auth.as_ref(),
            instance: self.instance.as_deref(),
            protocol: self.protocol.as_deref(),
            sasl_method: sasl,
            ..Context::new(client, &self.listener)
        };
        let running: &[String] = match stage {
            Stage::Route => &[],
            _ => pipeline.milters.running(&self.listener, client),
        };
        let (effect, milters_unknown) = milters_effect(&self.milters, running);
        if stage == Stage::Data
            && let Some((refusal @ (Verdict::Reject(_) | Verdict::Defer(_)), milter)) = &effect
        {
            // the milters refuse the message before the rules see it
            return Some(Replayed {
                verdict: refusal.clone(),
                rule: Some(format!("milter:{milter}")),
                error: None,
                route: None,
                unknown: milters_unknown,
            });
        }
        let on_tape = tape::replay(self.answers.clone());
        let decision = pipeline.judge(stage, &ctx);
        let route = (stage == Stage::Route)
            .then(|| pipeline.checked_route(decision.clone(), self.rcpt.as_deref().unwrap_or("")));
        let (_, mut unknown) = on_tape.finish();
        if stage == Stage::Data && !whole && pipeline.reads_body(stage) {
            unknown.push("the message body (not in the log: decision-log { body })".to_owned());
        }
        let rules = (
            decision.verdict.clone(),
            decision.rule.as_ref().map(ToString::to_string),
        );
        let refused = matches!(rules.0, Verdict::Reject(_) | Verdict::Defer(_));
        if !refused || stage == Stage::Data {
            // the milters were asked (at data, before the rules)
            unknown.extend(milters_unknown);
        }
        let (mut verdict, mut rule) = combine(rules, effect);
        let mut shown_route = None;
        match route {
            Some(super::Route::To { transport, .. }) => shown_route = Some(transport.to_string()),
            Some(super::Route::Refused { reply, rule: by }) => {
                verdict = if reply.code >= 500 {
                    Verdict::Reject(reply)
                } else {
                    Verdict::Defer(reply)
                };
                rule = by.as_ref().map(ToString::to_string);
            }
            None => {}
        }
        Some(Replayed {
            verdict,
            rule,
            error: decision.error,
            route: shown_route,
            unknown,
        })
    }
}

/// A decision made again from its record ([`Record::replay`]).
#[derive(Debug)]
pub struct Replayed {
    /// What the client would get (with the reply of a refusal).
    pub verdict: Verdict,
    /// The deciding rule or hook (`file:line:col`), or `milter:NAME`; none: the
    /// stage's default.
    pub rule: Option<String>,
    /// Why the deciding rule failed closed.
    pub error: Option<String>,
    /// At the route stage: where the recipient would go (none: refused).
    pub route: Option<String>,
    /// The questions the record has no answer for (the decision is unknown).
    pub unknown: Vec<String>,
}

impl Record {
    /// The milter that made the decision (refused the command, discarded or
    /// quarantined the message), if one did: a suite case cannot pin that (a dry run
    /// does not ask milters).
    pub fn milter_decided(&self) -> Option<&str> {
        self.rule.as_deref()?.strip_prefix("milter:")
    }

    /// The decision as a `mtactl test-policy` suite case that expects what was
    /// decided: the envelope, the message as recorded, the DNS answers, policy
    /// services' actions, SQL tables' answers and rate counters as the case's
    /// fixtures, so that the case asks nothing outside. The mail-auth results are
    /// listed in a comment (the dry run computes them from the DNS fixture), and so
    /// are the milters' answers. `None` for a stage a
    /// session does not run (route), and for a decision a milter made
    /// ([`Record::milter_decided`]).
    pub fn suite_case(&self) -> Option<String> {
        self.suite_case_with(&[])
    }

    /// [`Record::suite_case`], with the answers the session's other decisions got
    /// (`siblings`: their SQL tables' answers, rate counters and DNS answers) as fixtures
    /// too: a case runs the whole session, and the stages before the recorded one ask
    /// what they asked then (the rcpt stage's table, for a case of the data stage).
    pub fn suite_case_with(&self, siblings: &[Answer]) -> Option<String> {
        use std::fmt::Write as _;
        let stage = self.stage()?;
        if stage == Stage::Route || self.milter_decided().is_some() {
            return None;
        }
        let q = crate::config::settings::quote;
        let mut c = String::new();
        let what = self
            .rcpt
            .as_ref()
            .map_or_else(String::new, |r| format!(" <{r}>"));
        let session = self
            .session
            .as_ref()
            .map_or_else(String::new, |s| format!(" session {s}"));
        let _ = writeln!(
            c,
            "case {} {{",
            q(&format!("{}{session} {}{what}", self.time, self.stage))
        );
        let mut line = |text: String| {
            c.push_str("    ");
            if text.starts_with("//") {
                // a comment ends at a line break: what a record holds (a mail-auth
                // result, a DNS name, a table key) must not end it and become KDL
                c.extend(text.chars().map(|ch| {
                    if ch.is_control() || matches!(ch, '\u{2028}' | '\u{2029}') {
                        '?'
                    } else {
                        ch
                    }
                }));
            } else {
                c.push_str(&text);
            }
            c.push('\n');
        };
        match &self.local {
            Some((uid, login)) => line(format!(
                "local {}",
                q(&login.clone().unwrap_or_else(|| format!("uid:{uid}")))
            )),
            None => {
                line(format!("client {}", q(&self.client)));
                if !self.listener.is_empty() {
                    line(format!("listener {}", q(&self.listener)));
                }
                if let Some(h) = &self.helo {
                    line(format!("helo {}", q(h)));
                }
                if self.tls.is_some() {
                    line("tls #true".to_owned());
                }
                if let Some(u) = &self.auth_user {
                    line(format!("auth {}", q(u)));
                }
            }
        }
        line(format!("from {}", q(self.sender.as_deref().unwrap_or(""))));
        let rcpts: Vec<&str> = match (&self.rcpt, stage) {
            (Some(r), _) => vec![r.as_str()],
            (None, Stage::Data) => self.recipients.iter().map(String::as_str).collect(),
            // a stage before RCPT: a recipient every policy takes (RFC 5321 §4.5.1)
            (None, _) => vec!["postmaster"],
        };
        for r in rcpts {
            line(format!("rcpt {}", q(r)));
        }
        if stage == Stage::Data {
            let (message, _) = self.message();
            line(format!("message {}", q(&String::from_utf8_lossy(&message))));
        }
        let mut dns = Vec::new();
        let others = siblings.iter().filter(|a| {
            matches!(
                a,
                Answer::Table { .. } | Answer::Rate { .. } | Answer::Dns { .. }
            ) && !self.answers.contains(*a)
        });
        for a in self.answers.iter().chain(others) {
            match a {
                Answer::Dns {
                    name,
                    error: Some(_),
                    ..
                } => dns.push(format!("fail {}", q(name))),
                Answer::Dns {
                    name,
                    query,
                    records,
                    error: None,
                } => {
                    for r in records {
                        match query.as_str() {
                            "a" | "aaaa" | "txt" => {
                                dns.push(format!("{query} {} {}", q(name), q(r)))
                            }
                            _ => line(format!("// dns {query} {name}: {r} (no fixture)")),
                        }
                    }
                }
                Answer::Policy {
                    service, action, ..
                } => {
                    line(format!("policy-service {} {}", q(service), q(action)));
                }
                Answer::Table {
                    table,
                    key,
                    value,
                    error,
                } => line(format!(
                    "table {} {} {}",
                    q(table),
                    q(key),
                    match (value, error) {
                        (_, Some(e)) => format!(
                            "error={}",
                            q(if e.trim().is_empty() { "failed" } else { e })
                        ),
                        (Some(v), None) => q(v),
                        (None, None) => "#null".to_owned(),
                    }
                )),
                Answer::Rate { rate, count }
                    if RateKind::ALL.iter().any(|k| k.as_str() == rate) =>
                {
                    line(format!(
                        "rate {} {}",
                        q(rate),
                        count.map_or_else(|| "#null".to_owned(), |n| n.to_string())
                    ))
                }
                Answer::Rate { rate, .. } => line(format!("// rate {rate}: no such counter")),
            }
        }
        if !dns.is_empty() {
            line("dns {".to_owned());
            for d in dns {
                line(format!("    {d}"));
            }
            line("}".to_owned());
        }
        for m in &self.milters {
            line(format!(
                "// milter {} answered {} at {} (a dry run does not ask milters)",
                m.milter, m.action, m.event
            ));
        }
        if let Some(m) = &self.mailauth {
            let shown: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
            line(format!("// mail-auth results then: {}", shown.join(" ")));
        }
        let mut expect = format!("expect {} {}", q(&self.stage), q(&self.verdict));
        if let Some(r) = &self.rcpt {
            let _ = write!(expect, " rcpt={}", q(r));
        }
        if let Some(reply) = &self.reply {
            // the code and enhanced status: the text may echo what varies
            let prefix: String = reply.split(' ').take(2).collect::<Vec<_>>().join(" ");
            let _ = write!(expect, " reply={}", q(&prefix));
        }
        // the rule's file by its name (`rule=` is a part of the place): the case
        // holds wherever the configuration is
        let rule = self.rule.as_deref().unwrap_or("default");
        let rule = rule.rsplit('/').next().unwrap_or(rule);
        let _ = write!(expect, " rule={}", q(rule));
        line(expect);
        c.push_str("}\n");
        Some(c)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
