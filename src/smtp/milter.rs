//! The session's milters (Postfix's `smtpd_milters`): when each event goes to them,
//! what their verdicts become, and how their changes are made to the message.
//!
//! Order, as Postfix's: at connect, HELO, MAIL and RCPT the stage's rules decide
//! first, and only a command they accept goes to the milters, one after the other in
//! the listener's order; the first refusal is the reply. At the end of the message the
//! milters run *before* the data stage's rules, so that the rules and hooks see what
//! they added (rspamd's `X-Spam-*` headers, OpenDKIM's Authentication-Results). Our
//! own Received: header is never shown to a milter, and stays the first header.
//!
//! A milter that cannot be used (refused connection, timeout, broken protocol) is
//! handled by its `on-failure` action: `tempfail` and `reject` refuse the
//! transaction at hand and every later one of the session (never an accept by
//! accident), `shutdown` says 421 and ends the session, `accept` goes on without it.

use std::sync::Arc;

use tracing::{info, warn};

use super::session::{Disposition, Session};
use crate::logsafe::esc;
use crate::maillog::{Agent, Client};
use crate::message::parse_headers;
use crate::milter::client::{MacroValues, Message};
use crate::milter::codec::Reply;
use crate::milter::{Connection, FailureAction, MacroStage, Milter, MilterError, Verdict, rspamd};
use crate::policy::decision_log::MilterAnswer;

/// Postfix's replies for a milter's reject and tempfail, and for a failed milter.
const REJECT: &str = "550 5.7.1 Command rejected\r\n";
const REJECT_CONNECT: &str = "554 5.7.1 Command rejected\r\n";
const TEMPFAIL: &str = "451 4.7.1 Service unavailable - try again later\r\n";

/// One milter of the session.
pub(super) struct Slot {
    spec: Arc<Milter>,
    conn: Option<Connection>,
    state: SlotState,
    /// A transaction was started with the milter (MAIL sent) and not finished: an
    /// ABORT is due before the next one.
    in_transaction: bool,
    /// A session in memory (`mtactl test-policy`): nothing is sent, what would be is
    /// recorded ([`super::Tapped::Milter`]).
    record: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    /// Talked to.
    Active,
    /// It accepted the session (at connect or HELO): nothing more goes to it.
    Done,
    /// It accepted the message under way: nothing more of it goes to it.
    MessageDone,
    /// It failed; its action stands for the rest of the session.
    Failed(FailureAction),
}

/// A milter's refusal: the reply, whether the session then ends, and whose it was.
pub(super) struct Refusal {
    pub reply: String,
    pub close: bool,
    pub milter: String,
}

/// The events before the message.
pub(super) enum Event<'a> {
    Connect,
    Helo(&'a str),
    /// `<sender>` and its ESMTP parameters.
    Mail(&'a [&'a str]),
    /// `<recipient>` and its parameters; `rejected`: refused by our rules (sent only
    /// to a milter that asked for those, its answer ignored).
    Rcpt {
        args: &'a [&'a str],
        rejected: Option<&'a str>,
    },
}

impl Event<'_> {
    fn name(&self) -> &'static str {
        match self {
            Event::Connect => "CONNECT",
            Event::Helo(_) => "HELO",
            Event::Mail(_) => "MAIL",
            Event::Rcpt { .. } => "RCPT",
        }
    }

    /// Whether a refusal here refuses a transaction (then a failed milter's action
    /// applies), rather than the session's start.
    fn transactional(&self) -> bool {
        matches!(self, Event::Mail(_) | Event::Rcpt { .. })
    }
}

/// What the milters made of a message.
pub(super) enum MessageOutcome {
    /// No milter changed anything.
    Unchanged,
    /// The message as the milters left it (our Received: first), and the envelope.
    Changed {
        message: Vec<u8>,
        sender: String,
        recipients: Vec<String>,
    },
    Refused(Refusal),
}

/// What the rest of the message's filters do after one answered.
enum Answered {
    /// The next filter gets the message.
    Next,
    /// No other filter gets it (discarded).
    Stop,
    Refused(Refusal),
}

/// The session's milters; `record`: a session in memory, which only records.
pub(super) fn slots(milters: &[Arc<Milter>], record: bool) -> Vec<Slot> {
    milters
        .iter()
        .map(|spec| Slot {
            spec: spec.clone(),
            conn: None,
            state: SlotState::Active,
            in_transaction: false,
            record,
        })
        .collect()
}

/// What would be sent: `NAME: EVENT ARGS; macros NAME=VALUE ...` (the configured
/// macro lists: a milter's own, negotiated, are unknown without contacting it).
fn recorded(
    spec: &Milter,
    event: &str,
    args: &str,
    stage: MacroStage,
    values: &MacroValues,
) -> String {
    let macros: Vec<String> = spec.macros[stage.index()]
        .iter()
        .filter_map(|m| values.get(m.as_str()).map(|v| format!("{m}={v}")))
        .collect();
    let mut line = format!("{}: {event}", spec.name);
    if !args.is_empty() {
        line.push(' ');
        line.push_str(args);
    }
    if !macros.is_empty() {
        line.push_str("; macros ");
        line.push_str(&macros.join(" "));
    }
    crate::logsafe::esc(&line).to_string()
}

/// The reply for a milter's verdict; `None` for the verdicts that let the command
/// through.
fn verdict_reply(verdict: &Verdict, hostname: &str, connect: bool) -> Option<(String, bool)> {
    Some(match verdict {
        Verdict::Continue | Verdict::Accept | Verdict::Discard => return None,
        Verdict::Reject if connect => (REJECT_CONNECT.to_owned(), true),
        Verdict::Reject => (REJECT.to_owned(), false),
        Verdict::Tempfail => (TEMPFAIL.to_owned(), connect),
        Verdict::Reply(text) => {
            let mut t = text.clone();
            if !t.ends_with("\r\n") {
                t.push_str("\r\n");
            }
            (t, connect || text.starts_with("421"))
        }
        Verdict::Shutdown => (
            super::reply::closing(hostname, [4, 7, 0], "Server closing connection"),
            true,
        ),
    })
}

/// The reply for a failed milter, by its action; `None` for `accept`.
fn failure_reply(action: FailureAction, hostname: &str) -> Option<(String, bool)> {
    match action {
        FailureAction::Accept => None,
        FailureAction::Tempfail => Some((TEMPFAIL.to_owned(), false)),
        FailureAction::Reject => Some((REJECT.to_owned(), false)),
        FailureAction::Shutdown => Some((
            super::reply::closing(hostname, [4, 7, 0], "Server closing connection"),
            true,
        )),
    }
}

impl Session {
    /// The macro values this session can give now (a name without a value is not
    /// sent); `rcpt`: the recipient being decided (with the reply our rules refused it
    /// with, for `SMFIP_RCPT_REJ`).
    fn macro_values(&self, rcpt: Option<(&str, Option<&str>)>) -> MacroValues {
        let mut v = MacroValues::new();
        let ip = self.peer.ip();
        v.insert("j", self.listen.settings.hostname.clone());
        v.insert("{daemon_name}", self.listen.name.to_string());
        if let Some(a) = self.listen.address {
            v.insert("{daemon_addr}", a.ip().to_string());
            v.insert("{daemon_port}", a.port().to_string());
        }
        v.insert("v", format!("mtad {}", env!("CARGO_PKG_VERSION")));
        if self.submitter.is_none() {
            v.insert("_", format!("unknown [{ip}]"));
            v.insert("{client_addr}", ip.to_string());
            v.insert("{client_port}", self.peer.port().to_string());
            v.insert("{client_name}", "unknown".to_owned());
            v.insert("{client_ptr}", "unknown".to_owned());
        }
        if let Some(id) = self.next_id {
            v.insert("i", id.to_string());
        }
        if let Some(user) = &self.auth_user {
            v.insert("{auth_authen}", user.clone());
        }
        if let Some(method) = self.sasl_method {
            v.insert("{auth_type}", method.to_owned());
        }
        if let Some(author) = &self.tx.auth_author {
            v.insert("{auth_author}", author.clone());
        }
        if let Some(tls) = &self.tls {
            v.insert("{tls_version}", tls.protocol.clone());
            v.insert("{cipher}", tls.cipher.clone());
        }
        if let Some(sender) = &self.tx.sender {
            v.insert("{mail_addr}", sender.clone());
        }
        if let Some((addr, refused)) = rcpt {
            match refused {
                // as Postfix: the error mailer, the status, the reply text
                Some(reply) => {
                    let text = reply.trim_end();
                    let status = text.split(' ').nth(1).unwrap_or("5.0.0");
                    v.insert("{rcpt_mailer}", "error".to_owned());
                    v.insert("{rcpt_host}", status.to_owned());
                    v.insert("{rcpt_addr}", text.to_owned());
                }
                None => {
                    v.insert("{rcpt_addr}", addr.to_owned());
                    let (mailer, host) = self.resolved(addr);
                    v.insert("{rcpt_mailer}", mailer);
                    v.insert("{rcpt_host}", host);
                }
            }
        }
        v
    }

    /// `{mail_mailer}`/`{rcpt_mailer}` and `{mail_host}`/`{rcpt_host}` for `address`:
    /// the transport kind and next hop the route stage gives it now (Postfix resolves
    /// the address the same way, through its transport maps): `smtp` and
    /// `[10.0.0.5]:25` or the domain (MX), `lmtp` and its target, `local` and
    /// `virtual` with our hostname, `error` with the status of a refusal.
    fn resolved(&self, address: &str) -> (String, String) {
        let route = self.policy.route(&crate::policy::Context {
            rcpt: Some(address),
            ..self.policy_context()
        });
        match route {
            crate::policy::Route::To { transport, .. } => {
                let kind = transport.kind();
                let shown = transport.to_string();
                let host = match shown.split_once(':') {
                    Some((_, hop)) if !matches!(kind, "virtual") => hop.to_owned(),
                    _ => self.listen.settings.hostname.clone(),
                };
                (kind.to_owned(), host)
            }
            crate::policy::Route::Refused { reply, .. } => {
                let [a, b, c] = reply.enhanced;
                ("error".to_owned(), format!("{a}.{b}.{c}"))
            }
        }
    }

    /// Whether this session's client talks to milters at all.
    pub(super) fn milters_apply(&self) -> bool {
        !self.milters.is_empty()
    }

    /// A milter failed: logged, its connection dropped, its action recorded. The reply
    /// it makes now, if any: `shutdown` at once; `tempfail`/`reject` at a
    /// transaction's commands (MAIL, RCPT, the end of the message).
    fn milter_failed(
        &mut self,
        i: usize,
        event: &str,
        err: &MilterError,
        transactional: bool,
    ) -> Option<Refusal> {
        let slot = &mut self.milters[i];
        let action = slot.spec.on_failure;
        warn!(milter = %slot.spec.name, address = %slot.spec.address, error = %err, on_failure = action.name(), "milter failed");
        crate::metrics::get().milter_failed(&slot.spec.name);
        crate::mail!(
            Agent::Smtpd,
            WARN,
            "warning: milter {}: {}",
            slot.spec.address,
            esc(&err.to_string())
        );
        slot.conn = None;
        slot.state = SlotState::Failed(action);
        let name = slot.spec.name.clone();
        let hostname = self.listen.settings.hostname.clone();
        let refusal = match failure_reply(action, &hostname) {
            Some((reply, true)) => Some(Refusal {
                reply,
                close: true,
                milter: name,
            }),
            Some((reply, false)) if transactional => Some(Refusal {
                reply,
                close: false,
                milter: name,
            }),
            _ => None,
        };
        self.note(i, event, "failed", |a| {
            let a = a.with_error(&err.to_string());
            match &refusal {
                Some(r) => a.with_reply(&r.reply),
                None => a,
            }
        });
        refusal
    }

    /// Notes milter `i`'s answer `action` at `event` (with what `with` adds) for the
    /// decision's record, when the log is on.
    fn note(
        &mut self,
        i: usize,
        event: &str,
        action: &str,
        with: impl FnOnce(MilterAnswer) -> MilterAnswer,
    ) {
        if crate::policy::decision_log::enabled() {
            let a = with(MilterAnswer::new(&self.milters[i].spec.name, event, action));
            self.milter_answers.push(a);
        }
    }

    /// Notes that milter `i` was not asked at `event` (it accepted the session or
    /// the message, failed open, or is rspamd before the message).
    fn note_skipped(&mut self, i: usize, event: &str) {
        self.note(i, event, "skipped", |a| a);
    }

    /// What the milters answered to the command at hand, for its decision's record.
    pub(super) fn take_milter_answers(&mut self) -> Vec<MilterAnswer> {
        std::mem::take(&mut self.milter_answers)
    }

    /// Sends `event` to each milter in order; the first refusal is returned (the
    /// caller answers with it). Discard verdicts set the disposition here.
    pub(super) async fn milter_event(&mut self, event: Event<'_>) -> Option<Refusal> {
        let hostname = self.listen.settings.hostname.clone();
        let rcpt = match &event {
            Event::Rcpt { args, rejected } => args.first().map(|a| {
                (
                    a.trim_start_matches('<').trim_end_matches('>').to_owned(),
                    rejected.map(str::to_owned),
                )
            }),
            _ => None,
        };
        let mut values = self.macro_values(rcpt.as_ref().map(|(a, r)| (a.as_str(), r.as_deref())));
        if let Event::Mail(_) = event
            && let Some(sender) = self.tx.sender.clone().filter(|s| !s.is_empty())
        {
            let (mailer, host) = self.resolved(&sender);
            values.insert("{mail_mailer}", mailer);
            values.insert("{mail_host}", host);
        }
        let rejected_rcpt = matches!(
            event,
            Event::Rcpt {
                rejected: Some(_),
                ..
            }
        );
        let event_name = event.name();
        for i in 0..self.milters.len() {
            if self.milters[i].spec.rspamd.is_some() {
                // rspamd over HTTP is asked once, about the whole message
                self.note_skipped(i, event_name);
                continue;
            }
            match self.milters[i].state {
                SlotState::Done
                | SlotState::MessageDone
                | SlotState::Failed(FailureAction::Accept) => {
                    self.note_skipped(i, event_name);
                    continue;
                }
                SlotState::Failed(action) => {
                    if event.transactional()
                        && !rejected_rcpt
                        && let Some((reply, close)) = failure_reply(action, &hostname)
                    {
                        self.note(i, event_name, "failed", |a| a.with_reply(&reply));
                        return Some(Refusal {
                            reply,
                            close,
                            milter: self.milters[i].spec.name.clone(),
                        });
                    }
                    self.note_skipped(i, event_name);
                    continue;
                }
                SlotState::Active => {}
            }
            if self.milters[i].record {
                let (args, stage) = match &event {
                    Event::Connect => (format!("[{}]", self.peer.ip()), MacroStage::Connect),
                    Event::Helo(name) => (name.to_string(), MacroStage::Helo),
                    Event::Mail(args) => (args.join(" "), MacroStage::Mail),
                    Event::Rcpt {
                        rejected: Some(_), ..
                    } => continue,
                    Event::Rcpt { args, .. } => (args.join(" "), MacroStage::Rcpt),
                };
                let line = recorded(&self.milters[i].spec, event.name(), &args, stage, &values);
                self.core.tap(|| super::Tapped::Milter(line));
                continue;
            }
            if self.milters[i].conn.is_none() {
                if !matches!(event, Event::Connect) {
                    // its connection was lost (a new one would miss the session's start)
                    let err = MilterError::Unexpected("no connection".into());
                    match self.milter_failed(i, event_name, &err, event.transactional()) {
                        Some(r) => return Some(r),
                        None => continue,
                    }
                }
                match Connection::open(self.milters[i].spec.clone()).await {
                    Ok(c) => self.milters[i].conn = Some(c),
                    Err(err) => match self.milter_failed(i, event_name, &err, false) {
                        Some(r) => return Some(r),
                        None => continue,
                    },
                }
            }
            let slot = &mut self.milters[i];
            let Some(conn) = slot.conn.as_mut() else {
                continue;
            };
            let result = match &event {
                Event::Connect => {
                    let (name, addr) = match self.submitter {
                        Some(_) => ("localhost", None),
                        None => ("unknown", Some(self.peer)),
                    };
                    conn.connect(name, addr, &values).await
                }
                Event::Helo(name) => conn.helo(name, &values).await,
                Event::Mail(args) => {
                    if slot.in_transaction {
                        // the last transaction ended without its message (RSET, refusal)
                        if let Err(err) = conn.abort().await {
                            match self.milter_failed(i, event_name, &err, true) {
                                Some(r) => return Some(r),
                                None => continue,
                            }
                        }
                    }
                    let slot = &mut self.milters[i];
                    let Some(conn) = slot.conn.as_mut() else {
                        continue;
                    };
                    slot.in_transaction = true;
                    conn.mail(args, &values).await
                }
                Event::Rcpt { args, rejected } => {
                    conn.rcpt(args, &values, rejected.is_some()).await
                }
            };
            let verdict = match result {
                Ok(v) => v,
                Err(err) => {
                    match self.milter_failed(
                        i,
                        event_name,
                        &err,
                        event.transactional() && !rejected_rcpt,
                    ) {
                        Some(r) => return Some(r),
                        None => continue,
                    }
                }
            };
            let name = self.milters[i].spec.name.clone();
            let connect = matches!(event, Event::Connect);
            let refusal = verdict_reply(&verdict, &hostname, connect);
            self.note(i, event_name, verdict.name(), |a| match &refusal {
                Some((reply, _)) => a.with_reply(reply),
                None => a,
            });
            match verdict {
                Verdict::Continue => continue,
                Verdict::Accept => {
                    self.milters[i].state = match event {
                        Event::Connect | Event::Helo(_) => SlotState::Done,
                        _ => SlotState::MessageDone,
                    };
                    continue;
                }
                Verdict::Discard => {
                    info!(milter = %name, event = event.name(), "milter: discard");
                    match event {
                        Event::Connect | Event::Helo(_) => self.disposition = Disposition::Discard,
                        _ => {
                            self.tx.disposition = Disposition::Discard;
                            self.milters[i].state = SlotState::MessageDone;
                        }
                    }
                    continue;
                }
                _ => {
                    if let Some((reply, close)) = refusal {
                        return Some(Refusal {
                            reply,
                            close,
                            milter: name,
                        });
                    }
                }
            }
        }
        None
    }

    /// Answers with a milter's refusal at `event` and logs Postfix's `milter-reject`
    /// line. `true`: the session ends.
    pub(super) fn milter_refused(
        &mut self,
        event: &str,
        refusal: Refusal,
        address: Option<&str>,
    ) -> super::session::Flow {
        use super::session::Flow;
        let stage = match event {
            "MAIL" => crate::policy::Stage::Mail,
            "RCPT" => crate::policy::Stage::Rcpt,
            "CONNECT" => crate::policy::Stage::Connect,
            _ => crate::policy::Stage::Helo,
        };
        crate::mail!(
            Agent::Smtpd,
            INFO,
            milter = %refusal.milter,
            "NOQUEUE: milter-reject: {event} from {}: {}; {}",
            Client(self.peer.ip()),
            refusal.reply.trim_end().replace("\r\n", " "),
            self.envelope_summary(stage, address)
        );
        if refusal.close {
            self.push(&refusal.reply);
            return Flow::Close;
        }
        self.fail(&refusal.reply)
    }

    /// The transaction ended without its message (RSET, a new HELO, a refused DATA):
    /// the milters hear ABORT before the next MAIL; the ones that accepted the
    /// message are back.
    pub(super) fn milters_new_transaction(&mut self) {
        for slot in &mut self.milters {
            if slot.state == SlotState::MessageDone {
                slot.state = SlotState::Active;
            }
        }
    }

    /// The end of the message: every milter still in the transaction gets it (each
    /// sees the changes of those before it); their changes are made, their verdicts
    /// applied (discard and quarantine through the transaction's disposition).
    pub(super) async fn milter_message(
        &mut self,
        id: crate::queue::QueueId,
        message: &[u8],
        trace_len: usize,
    ) -> MessageOutcome {
        let hostname = self.listen.settings.hostname.clone();
        let mut values = self.macro_values(None);
        values.insert("i", id.to_string());
        let max_body = self.listen.settings.limits.message_size;
        let mut draft = Draft::new(
            message,
            trace_len,
            self.tx.sender.clone().unwrap_or_default(),
            self.tx.recipients.clone(),
        );
        let queue_id = id.to_string();
        const EOM: &str = "END-OF-MESSAGE";
        for i in 0..self.milters.len() {
            let slot = &mut self.milters[i];
            let was_in = std::mem::replace(&mut slot.in_transaction, false);
            match slot.state {
                SlotState::Done | SlotState::Failed(FailureAction::Accept) => {
                    self.note_skipped(i, EOM);
                    continue;
                }
                SlotState::MessageDone => {
                    slot.state = SlotState::Active;
                    self.note_skipped(i, EOM);
                    continue;
                }
                SlotState::Failed(action) => {
                    if let Some((reply, close)) = failure_reply(action, &hostname) {
                        let milter = slot.spec.name.clone();
                        self.note(i, EOM, "failed", |a| a.with_reply(&reply));
                        return MessageOutcome::Refused(Refusal {
                            reply,
                            close,
                            milter,
                        });
                    }
                    self.note_skipped(i, EOM);
                    continue;
                }
                SlotState::Active => {}
            }
            if let Some(settings) = slot.spec.rspamd.clone() {
                let spec = slot.spec.clone();
                let record = slot.record;
                let headers = draft.visible_headers();
                let text = draft.render_visible();
                let hostname_macro = values.get("{client_name}").cloned();
                let request = rspamd::Request {
                    queue_id: &queue_id,
                    ip: self.submitter.is_none().then(|| self.peer.ip()),
                    helo: self.helo.as_deref(),
                    hostname: hostname_macro.as_deref(),
                    user: self.auth_user.as_deref(),
                    from: &draft.sender,
                    rcpts: &draft.recipients,
                    mta_name: &hostname,
                    mta_tag: &self.listen.name,
                    tls_version: self.tls.as_ref().map(|t| t.protocol.as_str()),
                    tls_cipher: self.tls.as_ref().map(|t| t.cipher.as_str()),
                };
                if record {
                    let fields: Vec<String> = request
                        .headers()
                        .into_iter()
                        .map(|(k, v)| format!("{k}: {v}"))
                        .collect();
                    let line = esc(&format!(
                        "{}: POST {}{} ({}; a {}-byte message)",
                        spec.name,
                        spec.address,
                        settings.path,
                        fields.join(", "),
                        text.len()
                    ))
                    .to_string();
                    self.core.tap(|| super::Tapped::Milter(line));
                    continue;
                }
                let outcome = rspamd::check(&spec, &settings, &request, &headers, text).await;
                let (verdict, changes) = match outcome {
                    Ok(o) => {
                        info!(queue_id = %queue_id, milter = %spec.name, action = o.action.name(), score = o.score, required = o.required, "rspamd");
                        (o.verdict, o.changes)
                    }
                    Err(err) => {
                        let refusal = self.milter_failed(i, EOM, &err, true);
                        // each message is a request of its own: the next one tries again
                        self.milters[i].state = SlotState::Active;
                        match refusal {
                            Some(r) => return MessageOutcome::Refused(r),
                            None => continue,
                        }
                    }
                };
                match self.milter_answered(i, &queue_id, verdict, changes, false, &mut draft) {
                    Answered::Next => continue,
                    Answered::Stop => break,
                    Answered::Refused(r) => return MessageOutcome::Refused(r),
                }
            }
            if slot.record {
                let (headers, body) = (draft.fields.len(), draft.body.len());
                let line = recorded(
                    &slot.spec,
                    "END-OF-MESSAGE",
                    &format!("({headers} headers, a {body}-byte body)"),
                    MacroStage::EndOfMessage,
                    &values,
                );
                self.core.tap(|| super::Tapped::Milter(line));
                continue;
            }
            if !was_in || slot.conn.is_none() {
                self.note_skipped(i, EOM);
                continue;
            }
            let slot = &mut self.milters[i];
            let Some(conn) = slot.conn.as_mut() else {
                continue;
            };
            let lead = conn.negotiated().steps & crate::milter::codec::step::HDR_LEADSPC != 0;
            let headers = draft.visible_headers();
            let body = draft.body();
            let msg = Message {
                headers: &headers,
                body: &body,
                max_body,
            };
            let result = conn.message(&msg, &values).await;
            let (verdict, changes) = match result {
                Ok(r) => r,
                Err(err) => match self.milter_failed(i, EOM, &err, true) {
                    Some(r) => return MessageOutcome::Refused(r),
                    None => continue,
                },
            };
            match self.milter_answered(i, &queue_id, verdict, changes, lead, &mut draft) {
                Answered::Next => {}
                Answered::Stop => break,
                Answered::Refused(r) => return MessageOutcome::Refused(r),
            }
        }
        if !draft.changed {
            return MessageOutcome::Unchanged;
        }
        MessageOutcome::Changed {
            message: draft.render(),
            sender: draft.sender,
            recipients: draft.recipients,
        }
    }

    /// One filter's answer to the message, a milter's or rspamd's over HTTP alike:
    /// its changes made to the draft (header values written with a leading space
    /// unless `lead`), quarantine as a hold, discard, and a refusal with Postfix's
    /// log line.
    fn milter_answered(
        &mut self,
        i: usize,
        queue_id: &str,
        verdict: Verdict,
        changes: Vec<Reply>,
        lead: bool,
        draft: &mut Draft,
    ) -> Answered {
        let hostname = self.listen.settings.hostname.clone();
        let name = self.milters[i].spec.name.clone();
        let n = changes.len();
        let mut quarantine = None;
        let logging = crate::policy::decision_log::enabled();
        let mut summary = Vec::new();
        for change in changes {
            if let Reply::Quarantine(reason) = &change {
                quarantine = Some(reason.clone());
            }
            if logging && let Some(s) = change.summary() {
                summary.push(s);
            }
            draft.apply(change, lead);
        }
        let refusal = verdict_reply(&verdict, &hostname, false);
        let action = match (&verdict, &quarantine) {
            (Verdict::Continue | Verdict::Accept, Some(_)) => "quarantine",
            (v, _) => v.name(),
        };
        self.note(i, "END-OF-MESSAGE", action, |a| {
            let a = a.with_changes(summary);
            match &refusal {
                Some((reply, _)) => a.with_reply(reply),
                None => a,
            }
        });
        info!(queue_id = %queue_id, milter = %name, verdict = verdict.name(), changes = n, "milter");
        if let Some(reason) = quarantine {
            self.tx.disposition = self.tx.disposition.max(Disposition::Hold);
            crate::mail!(
                Agent::Cleanup,
                INFO,
                "{queue_id}: milter-hold: END-OF-MESSAGE from {}: {}; {}",
                Client(self.peer.ip()),
                esc(&reason),
                self.envelope_summary(crate::policy::Stage::Data, None)
            );
        }
        match verdict {
            Verdict::Continue | Verdict::Accept => Answered::Next,
            Verdict::Discard => {
                self.tx.disposition = Disposition::Discard;
                crate::mail!(
                    Agent::Cleanup,
                    INFO,
                    "{queue_id}: milter-discard: END-OF-MESSAGE from {}: milter triggers DISCARD action; {}",
                    Client(self.peer.ip()),
                    self.envelope_summary(crate::policy::Stage::Data, None)
                );
                Answered::Stop
            }
            _ => match refusal {
                Some((reply, close)) => {
                    crate::mail!(
                        Agent::Cleanup,
                        INFO,
                        milter = %name,
                        "{queue_id}: milter-reject: END-OF-MESSAGE from {}: {}; {}",
                        Client(self.peer.ip()),
                        reply.trim_end().replace("\r\n", " "),
                        self.envelope_summary(crate::policy::Stage::Data, None)
                    );
                    Answered::Refused(Refusal {
                        reply,
                        close,
                        milter: name,
                    })
                }
                None => Answered::Next,
            },
        }
    }

    /// The session ends: QUIT to every milter still connected.
    pub(super) async fn milters_quit(&mut self) {
        for slot in &mut self.milters {
            if let Some(conn) = slot.conn.take() {
                conn.quit().await;
            }
        }
    }
}

/// A header of the message being filtered: its name and value as the milters see
/// them, and its original lines while it is unchanged.
struct Field {
    name: String,
    /// After the colon, the leading space kept, folds as `\n`.
    value: String,
    raw: Option<Vec<u8>>,
}

/// The message as the milters change it.
struct Draft {
    /// Our Received: header, hidden from the milters, kept first.
    trace: Vec<u8>,
    fields: Vec<Field>,
    body: Vec<u8>,
    sender: String,
    recipients: Vec<String>,
    changed: bool,
    /// A replacement body has started (its chunks follow one another).
    replacing: bool,
}

fn strip_brackets(s: &str) -> String {
    let s = s.trim();
    s.strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(s)
        .to_owned()
}

/// Line ends as CRLF: a bare LF or CR from a milter becomes CRLF, so nothing it
/// writes can end up as a line break of another kind on the way out.
fn crlf(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 16);
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'\r' if text.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

impl Draft {
    fn new(message: &[u8], trace_len: usize, sender: String, recipients: Vec<String>) -> Self {
        let trace_len = trace_len.min(message.len());
        let (trace, rest) = message.split_at(trace_len);
        let (headers, body_start) = parse_headers(rest);
        let fields = headers
            .iter()
            .map(|h| {
                let raw = rest.get(h.raw()).unwrap_or_default();
                let colon = raw.iter().position(|&b| b == b':').unwrap_or(raw.len());
                let value = raw.get(colon + 1..).unwrap_or_default();
                let value = value.strip_suffix(b"\r\n").unwrap_or(value);
                Field {
                    name: h.name().trim_end().to_owned(),
                    value: String::from_utf8_lossy(value).replace("\r\n", "\n"),
                    raw: Some(raw.to_vec()),
                }
            })
            .collect();
        Self {
            trace: trace.to_vec(),
            fields,
            body: rest.get(body_start..).unwrap_or_default().to_vec(),
            sender,
            recipients,
            changed: false,
            replacing: false,
        }
    }

    fn visible_headers(&self) -> Vec<(String, String)> {
        self.fields
            .iter()
            .map(|f| (f.name.clone(), f.value.clone()))
            .collect()
    }

    fn body(&self) -> Vec<u8> {
        self.body.clone()
    }

    fn field(name: String, value: String, lead: bool) -> Field {
        // without HDR_LEADSPC the milter gives the value without the space after the
        // colon, and Postfix writes one
        let value = if lead { value } else { format!(" {value}") };
        Field {
            name,
            value,
            raw: None,
        }
    }

    /// Makes one change, with Postfix's semantics: header indexes count the headers
    /// the milter saw (our Received: is not one of them).
    fn apply(&mut self, change: Reply, lead: bool) {
        self.changed = true;
        match change {
            Reply::AddHeader { name, value } => self.fields.push(Self::field(name, value, lead)),
            Reply::InsertHeader { index, name, value } => {
                let at = (index as usize).min(self.fields.len());
                self.fields.insert(at, Self::field(name, value, lead));
            }
            Reply::ChangeHeader { index, name, value } => {
                let nth = (index as usize).max(1);
                let found = self
                    .fields
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.name.eq_ignore_ascii_case(&name))
                    .nth(nth - 1)
                    .map(|(i, _)| i);
                match (found, value.is_empty()) {
                    (Some(i), true) => {
                        self.fields.remove(i);
                    }
                    (Some(i), false) => self.fields[i] = Self::field(name, value, lead),
                    // no such header: a change adds it, as Sendmail and Postfix do
                    (None, false) => self.fields.push(Self::field(name, value, lead)),
                    (None, true) => {}
                }
            }
            Reply::ReplaceBody(chunk) => {
                if !std::mem::replace(&mut self.replacing, true) {
                    self.body.clear();
                }
                self.body.extend_from_slice(&chunk);
            }
            Reply::ChangeFrom { sender, .. } => self.sender = strip_brackets(&sender),
            Reply::AddRcpt { rcpt, .. } => {
                let rcpt = strip_brackets(&rcpt);
                if !rcpt.is_empty()
                    && !self
                        .recipients
                        .iter()
                        .any(|r| r.eq_ignore_ascii_case(&rcpt))
                {
                    self.recipients.push(rcpt);
                }
            }
            Reply::DelRcpt(rcpt) => {
                let rcpt = strip_brackets(&rcpt);
                self.recipients.retain(|r| !r.eq_ignore_ascii_case(&rcpt));
            }
            // the disposition: by the caller
            _ => {}
        }
    }

    fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.trace.len() + self.body.len() + 4096);
        out.extend_from_slice(&self.trace);
        self.render_into(&mut out);
        out
    }

    /// The message as the filters see it (without our Received:).
    fn render_visible(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 4096);
        self.render_into(&mut out);
        out
    }

    fn render_into(&self, out: &mut Vec<u8>) {
        for f in &self.fields {
            match &f.raw {
                Some(raw) => out.extend_from_slice(raw),
                None => {
                    out.extend_from_slice(f.name.as_bytes());
                    out.push(b':');
                    out.extend_from_slice(&crlf(f.value.as_bytes()));
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&crlf(&self.body));
    }
}
