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

/// Writes the record of a decision (see [`wanted`]).
pub(super) fn write(
    pipeline: &Pipeline,
    stage: Stage,
    ctx: &Context<'_>,
    decision: &Decision,
    recorded: tape::Recorded,
) {
    let Some(sink) = SINK.get() else {
        return;
    };
    let record = Record::of(pipeline, stage, ctx, decision, recorded, sink.body);
    let Ok(line) = serde_json::to_string(&record) else {
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
struct NoRates;

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
    let reply = match &d.verdict {
        Verdict::Reject(r) | Verdict::Defer(r) => Some(r.to_string()),
        _ => None,
    };
    (d.verdict.name(), reply)
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

    /// Evaluates this decision again with `pipeline`: the context rebuilt from the
    /// record, every answer from outside given back from it (nothing is asked: no
    /// DNS, no database, no policy server). The new decision, and the questions the
    /// record has no answer for (the decision then is unknown, not a guess). `None`:
    /// the record is not one of a decision (an unknown stage or client).
    pub fn replay(&self, pipeline: &Pipeline) -> Option<(Decision, Vec<String>)> {
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
        let on_tape = tape::replay(self.answers.clone());
        let decision = pipeline.judge(stage, &ctx);
        let (_, mut unknown) = on_tape.finish();
        if stage == Stage::Data && !whole && pipeline.reads_body(stage) {
            unknown.push("the message body (not in the log: decision-log { body })".to_owned());
        }
        Some((decision, unknown))
    }
}

impl Record {
    /// The decision as a `mtactl test-policy` suite case that expects what was
    /// decided: the envelope, the message as recorded, the DNS answers and policy
    /// services' actions as the case's fixtures. Answers a suite has no fixture for
    /// (SQL tables, rate counters) and the mail-auth results are listed in comments:
    /// the dry run asks those itself. `None` for a stage a session does not run.
    pub fn suite_case(&self) -> Option<String> {
        use std::fmt::Write as _;
        let stage = self.stage()?;
        if stage == Stage::Route {
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
        for a in &self.answers {
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
                    "// table {table} {key:?} answered {} (asked live by the dry run)",
                    match (value, error) {
                        (_, Some(e)) => format!("an error: {e}"),
                        (Some(v), None) => format!("{v:?}"),
                        (None, None) => "nothing".to_owned(),
                    }
                )),
                Answer::Rate { rate, count } => line(format!(
                    "// rate {rate} was {} (not a fixture)",
                    count.map_or_else(|| "unlimited".to_owned(), |n| n.to_string())
                )),
            }
        }
        if !dns.is_empty() {
            line("dns {".to_owned());
            for d in dns {
                line(format!("    {d}"));
            }
            line("}".to_owned());
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
