//! One SMTP session: its state, the envelope so far, and the `ingest` loop that feeds
//! bytes to whichever receiver the protocol state calls for. The verbs extend
//! [`Session`] in their own files.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use smtp_proto::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout_at};
use tracing::{debug, info, warn};

use super::auth::SaslStep;
use super::dot::DotReceiver;
use super::inflight::{Reservation, TextError, TextScan};
use super::line::{LineEvent, LineReader};
use super::reply;
use super::{Core, Listen};
use crate::config::{Limits, ListenerTls};
use crate::maillog::{Agent, Client};
use crate::net::stream::{ServerIo, ServerStream};
use crate::net::tls::TlsInfo;
use crate::policy::{Context, Decision, Pipeline, Stage, Verdict};
use crate::queue::MessageRecord;

/// Bytes read from the socket at a time. Memory per idle session is this buffer plus
/// the small line buffer; message bodies grow only while DATA is being received.
const READ_BUFFER: usize = 8 * 1024;

/// What a message takes of `data-memory` when its data starts; it grows from there as
/// the data arrives.
pub(super) const INITIAL_DATA_MEMORY: usize = 64 * 1024;

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// A short id for log lines, unique within the process.
pub fn next_session_id() -> u64 {
    NEXT_SESSION.fetch_add(1, Ordering::Relaxed)
}

/// Which receiver the next bytes belong to.
pub(super) enum State {
    /// Command lines, through the [`LineReader`].
    Command,
    /// DATA content, until `CRLF.CRLF`.
    Data(DotReceiver),
    /// A BDAT chunk: exactly `left` more bytes, then a reply.
    Bdat { left: usize, last: bool },
    /// A BDAT chunk that was refused up front: read to its end and dropped, so its
    /// bytes are never read as commands.
    SkipBdat { left: usize },
}

/// The envelope and message being built.
#[derive(Default)]
pub(super) struct Transaction {
    pub sender: Option<String>,
    pub recipients: Vec<String>,
    pub body_8bit: bool,
    pub smtputf8: bool,
    /// Created when DATA or the first BDAT starts; the body is appended straight into it.
    pub record: Option<MessageRecord>,
    /// The message broke a limit (size, header size, line length, memory): the rest is
    /// read and dropped, then this is the reply.
    pub refusal: Option<&'static str>,
    /// The message's size so far (our Received: header included), also of the part
    /// not stored because the message is refused: `message-size` is checked on it.
    pub received: u64,
    /// The message's share of `data-memory`, held until it is queued or dropped.
    pub memory: Option<Reservation>,
    /// The header-size and line-length checks, fed as the data arrives.
    pub text: Option<TextScan>,
    /// BDAT was used; DATA is then out of sequence.
    pub bdat: bool,
    /// The length of our Received: header at the top of the record (hidden from
    /// milters).
    pub trace_len: usize,
    /// When DATA/BDAT started, for the data deadline.
    pub data_started: Option<Instant>,
    /// The SIZE= the client declared at MAIL, for `size-over` at the mail stage.
    pub declared_size: Option<u64>,
    /// What policy said should become of this message (discard, hold) so far.
    pub disposition: Disposition,
    /// The `authentication` checks of this transaction, from MAIL on.
    pub auth: Option<TxAuth>,
    /// The transaction's `instance` (Postfix's form: pid, time, sequence in hex), made
    /// when MAIL is accepted (so, as in Postfix, the mail stage sees none): what policy
    /// servers see the transaction through, from RCPT to the end of the message.
    pub instance: String,
    /// Header lines policy services asked to add (`PREPEND`) at mail and rcpt, put
    /// above our Received: header.
    pub prepend: Vec<String>,
    /// MAIL FROM's `AUTH=` from an authenticated client (not `<>`):
    /// the milters' `{auth_author}`, as Postfix's `sasl_sender`.
    pub auth_author: Option<String>,
    /// In a cluster, the recipient counted ahead for the first RCPT (given back if
    /// the transaction ends without using it).
    pub rcpt_slot: Option<super::shared::Slot>,
}

impl Transaction {
    /// Refuses the message being received with `reply` at its end: what was stored is
    /// dropped and its memory given back; the rest of the data will be read and dropped.
    pub fn refuse(&mut self, reply: &'static str) {
        if self.refusal.is_some() {
            return;
        }
        self.refusal = Some(reply);
        if let Some(record) = self.record.as_mut() {
            record.truncate_body();
            let buf = record.body_mut();
            buf.shrink_to_fit();
            if let Some(memory) = self.memory.as_mut() {
                memory.shrink_to(buf.capacity());
            }
        }
    }

    /// Makes room for `n` more bytes of data within the `data-memory` budget before
    /// they are stored (so the buffer never grows unaccounted), or refuses the message
    /// with `451 4.3.1`.
    fn make_room(&mut self, n: usize, limits: &Limits) {
        if self.refusal.is_some() {
            return;
        }
        let (Some(record), Some(memory)) = (self.record.as_mut(), self.memory.as_mut()) else {
            return;
        };
        let prefix = record.body_mut().len() - record.body_len();
        let buf = record.body_mut();
        let need = buf.len().saturating_add(n);
        if need <= buf.capacity() {
            return;
        }
        // double as a Vec would, but never past what the size limit lets in
        let ceiling = prefix + limits.message_size + READ_BUFFER;
        let target = buf
            .capacity()
            .saturating_mul(2)
            .clamp(need, need.max(ceiling));
        // near the end of the budget, no more than is needed now
        for target in [target, need] {
            if memory.grow_to(target, limits.data_memory) {
                buf.reserve_exact(target - buf.len());
                return;
            }
        }
        warn!(
            budget = limits.data_memory,
            "data-memory used up: message refused"
        );
        self.refuse(reply::NO_DATA_MEMORY);
    }

    /// The reply for a message that broke a limit: being too big comes first (the
    /// reply a client that sent too much expects), then the first limit broken.
    pub fn refusal_reply(&self, limits: &Limits) -> Option<&'static str> {
        if self.received > limits.message_size as u64 {
            Some(reply::MESSAGE_TOO_BIG)
        } else {
            self.refusal
        }
    }

    /// Body bytes stored so far (where the next check starts).
    fn stored(&self) -> usize {
        self.record.as_ref().map_or(0, MessageRecord::body_len)
    }

    /// Runs the text checks over the data stored since `from`.
    fn check_text(&mut self, from: usize) {
        if self.refusal.is_some() {
            return;
        }
        let (Some(record), Some(scan)) = (self.record.as_ref(), self.text.as_mut()) else {
            return;
        };
        scan.feed(record.body().get(from..).unwrap_or_default());
        self.refuse_for_text();
    }

    /// The end of the data: its last line is measured too.
    pub fn finish_text(&mut self) {
        if let Some(scan) = self.text.as_mut() {
            scan.finish();
        }
        self.refuse_for_text();
    }

    fn refuse_for_text(&mut self) {
        match self.text.as_ref().and_then(|s| s.error) {
            Some(TextError::HeaderTooBig) => self.refuse(reply::HEADER_TOO_BIG),
            Some(TextError::LineTooLong) => self.refuse(reply::TEXT_LINE_TOO_LONG),
            None => {}
        }
    }
}

/// A transaction's checks: how they run, and SPF's outcome from MAIL.
pub(super) struct TxAuth {
    pub settings: Arc<crate::policy::AuthSettings>,
    pub checker: crate::mailauth::Checker,
    pub spf: crate::mailauth::SpfState,
}

/// What becomes of an accepted message. Policy may only make it stricter within a
/// session: a discard is never turned back into a delivery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Disposition {
    #[default]
    Deliver,
    Hold,
    Discard,
}

/// Whether the session goes on after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    Close,
    /// STARTTLS was accepted: send the 220, then the handshake.
    StartTls,
}

pub struct Session {
    pub(super) io: ServerStream,
    pub(super) core: Arc<Core>,
    /// The policy snapshot this session runs with: taken at its start for the connect
    /// and helo stages, and again at each MAIL, so a reload applies from the next
    /// transaction while the one under way keeps its policy to its end.
    pub(super) policy: Arc<Pipeline>,
    pub(super) peer: SocketAddr,
    pub(super) listen: Arc<Listen>,
    /// Set once the TLS handshake is done.
    pub(super) tls: Option<TlsInfo>,
    /// The SASL identity once AUTH succeeded.
    pub(super) auth_user: Option<String>,
    /// An in-memory session's given identity ([`super::transcript::Memory`]'s
    /// `authenticated`, a dry run's `--auth`): it holds from the start and again after
    /// STARTTLS. Always `None` for a network client, who logs in with AUTH.
    pub(super) logged_in_as: Option<String>,
    /// An AUTH exchange waiting for the client's next line.
    pub(super) sasl: Option<SaslStep>,
    pub(super) helo: Option<String>,
    pub(super) esmtp: bool,
    pub(super) state: State,
    pub(super) tx: Transaction,
    pub(super) lines: LineReader,
    /// Replies waiting to be written: with PIPELINING, the replies to every command in
    /// one read go out in one write.
    pub(super) out: Vec<u8>,
    pub(super) errors: u32,
    /// NOOP, RSET, VRFY, ETRN, HELO, EHLO since the last message (`junk-commands`).
    pub(super) junk: u32,
    pub(super) messages: u32,
    /// Set by the connect or helo stage: applies to every message of the session.
    pub(super) disposition: Disposition,
    /// A local submission's submitter ([`super::local`]): rules and hooks see it, and
    /// the trace header is pickup's.
    pub(super) submitter: Option<crate::policy::local::Submitter>,
    /// The queue id the next message gets, chosen by the caller (the pickup claims
    /// its drop file for it before the message is queued).
    pub(super) next_id: Option<crate::queue::QueueId>,
    /// This client's bare LFs are read as CRLF (`bare-newline="normalize"`), in
    /// commands and in DATA.
    pub(super) normalize_lf: bool,
    /// The commands so far, for the `disconnect` line.
    pub(super) commands: crate::maillog::Commands,
    /// The address of the MAIL or RCPT being decided, for the log line of a refusal.
    pub(super) address_in_hand: Option<String>,
    /// What the cluster's Redis last said of this client's counts (hooks'
    /// `ctx.rate(kind)`); empty without a cluster.
    pub(super) seen: super::shared::Seen,
    /// In a cluster, the message and recipient counted ahead for the next MAIL.
    pub(super) ahead: super::shared::Ahead,
    /// The SASL mechanism of a successful AUTH (`sasl_method` for policy servers).
    pub(super) sasl_method: Option<&'static str>,
    /// The milters this session talks to (none for a client in the listener's
    /// `milter-skip-clients`).
    pub(super) milters: Vec<super::milter::Slot>,
    /// The session's log id (`session{id=...}`), which its decisions are logged with.
    pub(super) id: u64,
    /// What the milters answered to the command at hand, for its decision's record
    /// (collected only while the decision log is on).
    pub(super) milter_answers: Vec<crate::policy::decision_log::MilterAnswer>,
    /// In a cluster, the RCPT line a client pipelined right behind its MAIL: MAIL's
    /// call to Redis reads the greylisting records that RCPT will need.
    pub(super) rcpt_behind: Option<Vec<u8>>,
}

impl Session {
    /// A session over `io`: what a listener accepted, or one end of an in-memory pipe
    /// ([`super::transcript`]); `peer` is the client as policy sees it.
    pub fn new(io: impl ServerIo, core: Arc<Core>, peer: SocketAddr, listen: Arc<Listen>) -> Self {
        let policy = core.policy.load_full();
        let normalize_lf = listen.normalize_lf.applies_to(peer.ip());
        let skipped = listen
            .milter_skip
            .as_ref()
            .is_some_and(|set| set.contains(super::server::canonical_ip(peer.ip())));
        let milters = if skipped {
            Vec::new()
        } else {
            // a session in memory (a dry run) records what it would send, never sends
            super::milter::slots(&listen.milters, core.tap.is_some())
        };
        let lines =
            LineReader::new(listen.settings.limits.line_length).normalize_bare_lf(normalize_lf);
        Self {
            io: ServerStream::new(io),
            core,
            policy,
            peer,
            listen,
            tls: None,
            auth_user: None,
            logged_in_as: None,
            sasl: None,
            helo: None,
            esmtp: false,
            state: State::Command,
            tx: Transaction::default(),
            lines,
            out: Vec::with_capacity(512),
            errors: 0,
            junk: 0,
            messages: 0,
            disposition: Disposition::Deliver,
            submitter: None,
            next_id: None,
            normalize_lf,
            commands: Default::default(),
            address_in_hand: None,
            seen: Default::default(),
            ahead: Default::default(),
            sasl_method: None,
            milters,
            id: next_session_id(),
            milter_answers: Vec::new(),
            rcpt_behind: None,
        }
    }

    /// Runs the session to its end: greeting, commands, QUIT, timeout or shutdown.
    pub async fn run(mut self) {
        let open = crate::metrics::get().session(&self.listen.name);
        // a local submission is logged by the pickup, as Postfix's is
        let smtpd_lines = self.submitter.is_none();
        if smtpd_lines {
            crate::mail!(
                Agent::Smtpd,
                INFO,
                "connect from {}",
                Client(self.peer.ip())
            );
        }
        if self.listen.tls == ListenerTls::Implicit && !self.handshake().await {
            return;
        }
        let (decision, logged) = self
            .policy
            .evaluate_logged(Stage::Connect, &self.policy_context());
        let greeting = self.listen.settings.greeting.clone();
        // the stage's rules first, then the milters (as Postfix's smtpd)
        let refused = matches!(decision.verdict, Verdict::Reject(_) | Verdict::Defer(_));
        let milter = match !refused && self.milters_apply() {
            true => self.milter_event(super::milter::Event::Connect).await,
            false => None,
        };
        logged.finish(self.take_milter_answers());
        let flow = match milter {
            Some(r) => self.milter_refused("CONNECT", r, None),
            None => self.apply(Stage::Connect, decision, &greeting),
        };
        if flow == Flow::Close {
            self.milters_quit().await;
            let mut buf = [0u8; 1024];
            self.linger(&mut buf).await;
            if smtpd_lines {
                crate::mail!(
                    Agent::Smtpd,
                    INFO,
                    reason = "refused at connect",
                    "disconnect from {}{}",
                    Client(self.peer.ip()),
                    self.commands
                );
            }
            return;
        }
        let mut shutdown = self.core.shutdown.clone();
        let mut buf = vec![0u8; READ_BUFFER];
        // (why, whether we close first and so must linger for the client's last bytes)
        let (close_reason, linger): (String, bool) = loop {
            if let Err(why) = self.write_out().await {
                break (why, false);
            }
            let in_message = !matches!(self.state, State::Command);
            if !in_message && *shutdown.borrow() {
                self.push(&reply::closing(
                    &self.listen.settings.hostname,
                    reply::SHUTTING_DOWN,
                    "Service shutting down, closing transmission channel",
                ));
                break ("shutdown".into(), true);
            }
            let (deadline, what) = self.read_deadline();
            let read = tokio::select! {
                biased;
                changed = shutdown.changed(), if !in_message => {
                    if changed.is_err() {
                        // The server is gone; treat it as a shutdown.
                        break ("server gone".into(), true);
                    }
                    continue;
                }
                read = timeout_at(deadline, self.io.read(&mut buf)) => read,
            };
            let n = match read {
                Err(_) => {
                    self.push(&reply::closing(
                        &self.listen.settings.hostname,
                        reply::TIMEOUT,
                        what,
                    ));
                    break (what.into(), true);
                }
                Ok(Ok(0)) => break ("client closed".into(), false),
                Ok(Ok(n)) => n,
                Ok(Err(err)) => break (format!("read error: {err}"), false),
            };
            match self.ingest(&buf[..n]).await {
                Flow::Continue => {}
                Flow::Close => break ("closed by server".into(), true),
                Flow::StartTls => {
                    if let Err(why) = self.write_out().await {
                        break (why, false);
                    }
                    if !self.handshake().await {
                        break ("TLS handshake failed".into(), false);
                    }
                    // RFC 3207 §4.2: forget everything learnt before TLS (an in-memory
                    // session started as a user is that user again, as a client logs
                    // in again after STARTTLS)
                    self.helo = None;
                    self.esmtp = false;
                    self.auth_user = self.logged_in_as.clone();
                    self.sasl = None;
                    self.reset_transaction();
                }
            }
        };
        if let Some(record) = self.tx.record.take() {
            debug!(queue_id = %record.id(), "message abandoned before its end");
        }
        self.milters_quit().await;
        if linger {
            self.linger(&mut buf).await;
        }
        drop(open);
        if !smtpd_lines {
            return;
        }
        crate::mail!(
            Agent::Smtpd,
            INFO,
            reason = %close_reason,
            messages = self.messages,
            errors = self.errors,
            "disconnect from {}{}",
            Client(self.peer.ip()),
            self.commands
        );
    }

    /// Writes the pending replies, within the idle timeout: a client that sends and
    /// never reads (its receive window full) must not hold a session, and its slot,
    /// forever. `Err` says why the session ends.
    async fn write_out(&mut self) -> Result<(), String> {
        if self.out.is_empty() {
            return Ok(());
        }
        let limit = self.listen.settings.limits.idle_timeout;
        let (io, out) = (&mut self.io, &self.out);
        let write = async {
            io.write_all(out).await?;
            io.flush().await
        };
        match tokio::time::timeout(limit, write).await {
            Ok(Ok(())) => {
                self.out.clear();
                Ok(())
            }
            Ok(Err(err)) => Err(format!("write error: {err}")),
            Err(_) => {
                warn!(timeout = ?limit, pending = self.out.len(), "the client does not read our replies");
                Err("write timeout".into())
            }
        }
    }

    /// The server side of the TLS handshake, within the handshake timeout; `false` if
    /// it failed (logged; the session then ends without another word).
    async fn handshake(&mut self) -> bool {
        let Some(acceptor) = self.listen.acceptor.clone() else {
            return false;
        };
        let limit = self.listen.settings.limits.tls_handshake_timeout;
        match tokio::time::timeout(limit, self.io.accept_tls(&acceptor)).await {
            Ok(Ok(())) => {
                let (version, suite) = self.io.tls_parameters().unwrap_or_default();
                let tls = TlsInfo::from_rustls(&version, &suite);
                info!(protocol = %tls.protocol, cipher = %tls.cipher, "TLS established");
                self.tls = Some(tls);
                true
            }
            Ok(Err(err)) => {
                crate::metrics::get().tls_failed(true);
                warn!(%err, "TLS handshake failed");
                false
            }
            Err(_) => {
                crate::metrics::get().tls_failed(true);
                warn!(timeout = ?limit, "TLS handshake timed out");
                false
            }
        }
    }

    /// Closing first: send the last replies and our FIN, then read and drop what the
    /// client still sends, for a moment. Closing a socket with unread input makes the
    /// kernel answer with a reset, and a reset can destroy our last reply in the
    /// client's receive buffer before the client reads it (a "lingering close").
    async fn linger(&mut self, buf: &mut [u8]) {
        const LINGER: Duration = Duration::from_secs(2);
        const MAX_DRAIN: usize = 256 * 1024;
        let out = std::mem::take(&mut self.out);
        let io = &mut self.io;
        let _ = tokio::time::timeout(LINGER, async {
            io.write_all(&out).await?;
            io.shutdown().await?;
            let mut drained = 0;
            while drained < MAX_DRAIN {
                match io.read(buf).await? {
                    0 => break,
                    n => drained += n,
                }
            }
            Ok::<(), std::io::Error>(())
        })
        .await;
    }

    /// When the next read must have arrived: the idle timeout, or the data deadline if
    /// that comes first while a message is being received.
    fn read_deadline(&self) -> (Instant, &'static str) {
        let limits = &self.listen.settings.limits;
        let idle = Instant::now() + limits.idle_timeout;
        match self.tx.data_started {
            Some(start) if !matches!(self.state, State::Command) => {
                let data = start + limits.data_timeout;
                if data < idle {
                    (data, "Error: data transfer deadline exceeded")
                } else {
                    (idle, "Error: timeout exceeded")
                }
            }
            _ => (idle, "Error: timeout exceeded"),
        }
    }

    /// Feeds one read's worth of bytes through the protocol state machine.
    pub(super) async fn ingest(&mut self, mut input: &[u8]) -> Flow {
        while !input.is_empty() {
            let flow = match &mut self.state {
                State::Command => {
                    let Some(event) = self.lines.next(&mut input) else {
                        break;
                    };
                    let flow = match event {
                        LineEvent::Line if self.sasl.is_some() => {
                            let line = self.lines.take();
                            let text = String::from_utf8_lossy(&line[..line.len() - 2]);
                            let flow = self.sasl_response(&text).await;
                            self.lines.restore(line);
                            flow
                        }
                        LineEvent::Line => {
                            let line = self.lines.take();
                            if self.core.cluster.is_some() {
                                self.rcpt_behind = rcpt_behind_mail(&line, input);
                            }
                            let flow = self.command(&line).await;
                            self.lines.restore(line);
                            flow
                        }
                        LineEvent::TooLong
                            if self.sasl.is_some() || self.lines.long_line_starts(b"AUTH ") =>
                        {
                            self.sasl_line_too_long().await
                        }
                        LineEvent::TooLong => self.fail(reply::LINE_TOO_LONG),
                        LineEvent::BareEol => self.fail(reply::BARE_EOL_COMMAND),
                    };
                    if flow == Flow::StartTls {
                        // CVE-2011-0411: whatever the client pipelined behind STARTTLS
                        // was sent in plaintext and must never count as sent over TLS.
                        if !input.is_empty() || !self.lines.is_empty() {
                            warn!(
                                bytes = input.len(),
                                "plaintext sent after STARTTLS discarded"
                            );
                        }
                        self.lines = LineReader::new(self.listen.settings.limits.line_length)
                            .normalize_bare_lf(self.normalize_lf);
                        return Flow::StartTls;
                    }
                    if flow == Flow::Continue
                        && matches!(self.state, State::Data(_))
                        && !input.is_empty()
                    {
                        // RFC 2920: DATA ends a pipelined group; content sent before our
                        // 354 means the client is not listening to us.
                        warn!("content sent before the 354 reply");
                        // the 354 was never seen by the client in time: take it back
                        let go_ahead = reply::DATA_GO_AHEAD.len();
                        if self.out.ends_with(reply::DATA_GO_AHEAD.as_bytes()) {
                            self.out.truncate(self.out.len() - go_ahead);
                        }
                        self.tx.record = None;
                        self.push(reply::PIPELINING_VIOLATION);
                        return Flow::Close;
                    }
                    flow
                }
                State::Data(rx) => {
                    self.tx.make_room(input.len(), &self.listen.settings.limits);
                    let from = self.tx.stored();
                    let sink = if self.tx.refusal.is_some() {
                        None
                    } else {
                        self.tx.record.as_mut().map(MessageRecord::body_mut)
                    };
                    let before = rx.emitted();
                    let done = rx.ingest(&mut input, sink);
                    self.tx.received += rx.emitted() - before;
                    let bare_eol = rx.bare_eol();
                    let normalized = rx.normalized();
                    self.tx.check_text(from);
                    self.check_size();
                    if done {
                        if normalized > 0 {
                            debug!(
                                bare_lf = normalized,
                                "bare <LF> in the message read as <CR><LF>"
                            );
                        }
                        self.state = State::Command;
                        self.finish_message(bare_eol).await
                    } else {
                        Flow::Continue
                    }
                }
                State::Bdat { left, last } => {
                    let take = (*left).min(input.len());
                    let (chunk, rest) = input.split_at(take);
                    *left -= take;
                    let (done, last) = (*left == 0, *last);
                    input = rest;
                    self.tx.received += chunk.len() as u64;
                    self.tx.make_room(chunk.len(), &self.listen.settings.limits);
                    let from = self.tx.stored();
                    if self.tx.refusal.is_none()
                        && let Some(record) = self.tx.record.as_mut()
                    {
                        record.body_mut().extend_from_slice(chunk);
                    }
                    self.tx.check_text(from);
                    self.check_size();
                    if done {
                        self.state = State::Command;
                        self.end_of_chunk(last).await
                    } else {
                        Flow::Continue
                    }
                }
                State::SkipBdat { left } => {
                    let take = (*left).min(input.len());
                    *left -= take;
                    input = &input[take..];
                    if *left == 0 {
                        self.state = State::Command;
                    }
                    Flow::Continue
                }
            };
            if flow != Flow::Continue {
                return flow;
            }
        }
        Flow::Continue
    }

    /// Parses one command line and runs its verb.
    async fn command(&mut self, line: &[u8]) -> Flow {
        if is_http(line) {
            warn!("HTTP request on the SMTP port");
            self.push(reply::HTTP_REQUEST);
            return Flow::Close;
        }
        if is_header(line) {
            // a client that lost sync, or another protocol: as Postfix's smtpd does
            let text = String::from_utf8_lossy(&line[..line.len().saturating_sub(2)]);
            warn!(command = %reply::sanitize(&text, 100), "non-SMTP command (a header line)");
            self.push(reply::NON_SMTP_COMMAND);
            return Flow::Close;
        }
        let qualified;
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request,
            Err(
                err @ (smtp_proto::Error::InvalidSenderAddress
                | smtp_proto::Error::InvalidRecipientAddress),
            ) => {
                // RCPT: smtp-proto cannot read every path (an address literal, a
                // bare local part); the policy reads it (rcpt.rs), smtp-proto the rest.
                // `MAIL FROM:<root>`: a bare local part gets the origin domain, as
                // Postfix's `append_at_myorigin` does.
                let placeholder = match err {
                    smtp_proto::Error::InvalidRecipientAddress => {
                        super::rcpt::with_placeholder(line)
                    }
                    _ => None,
                };
                match placeholder.or_else(|| qualify_bare_local_part(line, self.policy.origin())) {
                    Some(q) => qualified = q,
                    None => return self.syntax_error(err),
                }
                match Request::parse(&mut qualified.iter()) {
                    Ok(request) => request,
                    Err(err) => return self.syntax_error(err),
                }
            }
            Err(err) => return self.syntax_error(err),
        };
        if self.listen.tls == ListenerTls::Required
            && self.tls.is_none()
            && !matches!(
                request,
                Request::Ehlo { .. }
                    | Request::Helo { .. }
                    | Request::StartTls
                    | Request::Noop { .. }
                    | Request::Rset
                    | Request::Quit
            )
        {
            return self.fail(reply::NEED_STARTTLS);
        }
        // Postfix's smtpd_junk_command_limit: these count, and past the limit each is
        // an error too (after its own reply)
        let junk = matches!(
            request,
            Request::Ehlo { .. }
                | Request::Helo { .. }
                | Request::Rset
                | Request::Noop { .. }
                | Request::Vrfy { .. }
                | Request::Etrn { .. }
        );
        let name = command_name(&request);
        let before = self.out.len();
        let flow = match request {
            Request::Ehlo { host } => self.handle_ehlo(&host, true).await,
            Request::Helo { host } => self.handle_ehlo(&host, false).await,
            Request::Mail { from } => self.handle_mail(from).await,
            Request::Rcpt { to } => self.handle_rcpt(to, line).await,
            Request::Data => self.handle_data(),
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.handle_bdat(chunk_size, is_last).await,
            Request::Rset => self.handle_rset(),
            Request::Noop { .. } => self.push_ok(reply::OK),
            Request::Quit => {
                self.push(reply::BYE);
                Flow::Close
            }
            Request::Help { .. } => self.push_ok(reply::HELP),
            Request::Vrfy { .. } => self.push_ok(reply::VRFY),
            Request::Auth {
                mechanism,
                initial_response,
            } => self.handle_auth(mechanism, &initial_response).await,
            Request::Lhlo { .. } => self.fail(reply::UNKNOWN_COMMAND),
            Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => self.fail(reply::NOT_IMPLEMENTED),
            Request::StartTls => self.handle_starttls(line),
        };
        // a 2xx succeeded (3xx too, but for DATA and AUTH, whose success comes later)
        let ok = match self.out.get(before) {
            Some(b'2') => true,
            Some(b'3') => !matches!(name, "data" | "auth"),
            _ => false,
        };
        self.commands.count(name, ok);
        if junk && flow == Flow::Continue {
            let over = self.junk > self.listen.settings.limits.junk_commands;
            self.junk = self.junk.saturating_add(1);
            if over {
                debug!(
                    junk = self.junk,
                    "junk command over the limit: counted as an error"
                );
                return self.count_error();
            }
        }
        flow
    }

    fn syntax_error(&mut self, err: smtp_proto::Error) -> Flow {
        use smtp_proto::Error as E;
        self.commands.count("unknown", false);
        match err {
            E::UnknownCommand => self.fail(reply::UNKNOWN_COMMAND),
            E::InvalidSenderAddress => self.fail(reply::BAD_SENDER),
            E::InvalidRecipientAddress => self.fail(reply::BAD_RECIPIENT),
            E::SyntaxError { syntax } => {
                self.fail(&reply::line(501, [5, 5, 4], &format!("Syntax: {syntax}")))
            }
            E::InvalidParameter { param } => self.fail(&reply::line(
                501,
                [5, 5, 4],
                &format!("Invalid parameter: {param}"),
            )),
            E::UnsupportedParameter { param } => self.fail(&reply::line(
                555,
                [5, 5, 4],
                &format!("Unsupported parameter: {param}"),
            )),
            _ => self.fail(reply::UNKNOWN_COMMAND),
        }
    }

    /// Stops storing a message that passed the size limit (the rest is still read, to
    /// find its end) and gives its memory back.
    fn check_size(&mut self) {
        if self.tx.received > self.listen.settings.limits.message_size as u64 {
            self.tx.refuse(reply::MESSAGE_TOO_BIG);
        }
    }

    /// What the policy may see now; the caller fills in what is stage-specific.
    pub(super) fn policy_context(&self) -> Context<'_> {
        Context {
            client_port: self.peer.port(),
            helo: self.helo.as_deref(),
            tls: self.tls.as_ref(),
            auth_user: self.auth_user.as_deref(),
            submitter: self.submitter.as_ref(),
            sender: self.tx.sender.as_deref(),
            recipients: &self.tx.recipients,
            size: self.tx.declared_size,
            rates: Some(if self.core.cluster.is_some() {
                &self.seen
            } else {
                &self.core.rate
            }),
            auth: self.tx.auth.as_ref().map(|a| &a.spf.results),
            instance: Some(&self.tx.instance)
                .filter(|i| !i.is_empty())
                .map(String::as_str),
            protocol: self
                .helo
                .is_some()
                .then_some(if self.esmtp { "ESMTP" } else { "SMTP" }),
            sasl_method: self.sasl_method,
            dns_fixture: self.core.dns_fixture.as_ref(),
            session: Some(self.id),
            greylist: Some(&*self.core.greylist),
            ..Context::new(self.peer.ip(), &self.listen.name)
        }
    }

    /// Answers a command the way a stage decided: `ok` for accept (and for discard
    /// and hold, which the client must not be able to tell apart), the rule's reply
    /// for reject and defer. A refusal at connect ends the session.
    pub(super) fn apply(&mut self, stage: Stage, decision: Decision, ok: &str) -> Flow {
        let rule = decision
            .rule
            .as_ref()
            .map_or_else(|| "default".to_owned(), ToString::to_string);
        let revision = self.policy.revision();
        let refused = matches!(decision.verdict, Verdict::Reject(_) | Verdict::Defer(_));
        crate::metrics::get().decision(stage, &rule, refused);
        self.core.tap(|| super::Tapped::Decision {
            stage,
            decision: Box::new(decision.clone()),
        });
        if !refused && matches!(stage, Stage::Mail | Stage::Rcpt) {
            self.tx.prepend.extend(decision.prepend.iter().cloned());
        }
        let refusal = match decision.verdict {
            Verdict::Accept | Verdict::Next => None,
            Verdict::Reject(r) | Verdict::Defer(r) => Some(r),
            Verdict::Discard | Verdict::Hold => {
                let d = if decision.verdict == Verdict::Discard {
                    Disposition::Discard
                } else {
                    Disposition::Hold
                };
                info!(%stage, %rule, %revision, verdict = decision.verdict.name(), "policy");
                match stage {
                    Stage::Connect | Stage::Helo => self.disposition = self.disposition.max(d),
                    _ => self.tx.disposition = self.tx.disposition.max(d),
                }
                None
            }
        };
        match refusal {
            None => self.push_ok(ok),
            Some(r) => {
                let text = reply::line(r.code, r.enhanced, &r.text);
                let address = self.address_in_hand.take();
                // Postfix's reject line (pflogsumm, logwatch and fail2ban read it); the
                // data stage's names the queue id, in data.rs
                if stage != Stage::Data {
                    crate::mail!(
                        Agent::Smtpd,
                        INFO,
                        %stage,
                        %rule,
                        %revision,
                        "NOQUEUE: reject: {} from {}: {}; {}",
                        match stage {
                            Stage::Connect => "CONNECT",
                            Stage::Helo if self.esmtp => "EHLO",
                            Stage::Helo => "HELO",
                            Stage::Mail => "MAIL",
                            _ => "RCPT",
                        },
                        Client(self.peer.ip()),
                        text.trim_end(),
                        self.envelope_summary(stage, address.as_deref())
                    );
                }
                if stage == Stage::Connect {
                    self.push(&text);
                    return Flow::Close;
                }
                self.fail(&text)
            }
        }
    }

    /// The end of Postfix's reject, hold and discard lines: `from=<a@b> to=<c@d>
    /// proto=ESMTP helo=<name>` (no `to=` without a recipient); `address`: the one
    /// `stage` is deciding (MAIL's sender, RCPT's recipient).
    pub(super) fn envelope_summary(&self, stage: Stage, address: Option<&str>) -> String {
        use crate::maillog::Addr;
        let mut out = String::new();
        let (from, to) = match stage {
            Stage::Mail => (address, None),
            Stage::Rcpt => (self.tx.sender.as_deref(), address),
            _ => (self.tx.sender.as_deref(), None),
        };
        if let Some(from) = from {
            out.push_str(&format!("from=<{}> ", Addr(from)));
        }
        if let Some(to) = to.or(self.tx.recipients.first().map(String::as_str)) {
            out.push_str(&format!("to=<{}> ", Addr(to)));
        }
        let proto = if self.esmtp { "ESMTP" } else { "SMTP" };
        out.push_str(&format!(
            "proto={proto} helo=<{}>",
            Addr(self.helo.as_deref().unwrap_or(""))
        ));
        out
    }

    /// Forgets the envelope (RSET, a new EHLO, the end of a message).
    pub(super) fn reset_transaction(&mut self) {
        self.tx = Transaction::default();
    }

    pub(super) fn push(&mut self, reply: &str) {
        self.out.extend_from_slice(reply.as_bytes());
    }

    pub(super) fn push_ok(&mut self, reply: &str) -> Flow {
        self.push(reply);
        Flow::Continue
    }

    /// Sends an error reply and counts it; too many errors end the session
    /// (Postfix's `smtpd_hard_error_limit`).
    pub(super) fn fail(&mut self, reply: &str) -> Flow {
        debug!(reply = reply.trim_end(), "error reply");
        self.push(reply);
        self.count_error()
    }

    /// Counts an error (its reply is already out); too many end the session.
    pub(super) fn count_error(&mut self) -> Flow {
        self.errors += 1;
        if self.errors >= self.listen.settings.limits.error_limit {
            warn!(errors = self.errors, "too many errors");
            let text = reply::closing(
                &self.listen.settings.hostname,
                reply::TOO_MANY_ERRORS,
                "Error: too many errors",
            );
            self.push(&text);
            return Flow::Close;
        }
        Flow::Continue
    }
}

/// A command's name in the `disconnect` line, as Postfix's smtpd names them.
fn command_name(request: &Request<std::borrow::Cow<'_, str>>) -> &'static str {
    match request {
        Request::Ehlo { .. } => "ehlo",
        Request::Helo { .. } => "helo",
        Request::Lhlo { .. } => "lhlo",
        Request::Mail { .. } => "mail",
        Request::Rcpt { .. } => "rcpt",
        Request::Data => "data",
        Request::Bdat { .. } => "bdat",
        Request::Rset => "rset",
        Request::Noop { .. } => "noop",
        Request::Quit => "quit",
        Request::Help { .. } => "help",
        Request::Vrfy { .. } => "vrfy",
        Request::Expn { .. } => "expn",
        Request::Etrn { .. } => "etrn",
        Request::Atrn { .. } => "atrn",
        Request::Burl { .. } => "burl",
        Request::Auth { .. } => "auth",
        Request::StartTls => "starttls",
    }
}

/// HTTP request lines and headers that browsers and proxies send: a sign that
/// someone is tunnelling into the SMTP port (cross-protocol attacks), not a mail client.
fn is_http(line: &[u8]) -> bool {
    const PREFIXES: [&[u8]; 11] = [
        b"GET ",
        b"POST ",
        b"HEAD ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"CONNECT ",
        b"PATCH ",
        b"TRACE ",
        b"HOST:",
        b"USER-AGENT:",
    ];
    PREFIXES
        .iter()
        .any(|p| line.len() >= p.len() && line[..p.len()].eq_ignore_ascii_case(p))
}

/// A header line sent as a command (`Subject: x`): its first word is a field name
/// and a colon, as Postfix's `is_header()` reads it. No SMTP verb has a colon.
fn is_header(line: &[u8]) -> bool {
    let word = line
        .split(|&b| b == b' ' || b == b'\t' || b == b'\r' || b == b'\n')
        .next()
        .unwrap_or_default();
    match word.iter().position(|&b| b == b':') {
        Some(colon) if colon > 0 => word[..colon].iter().all(|&b| (0x21..=0x7e).contains(&b)),
        _ => false,
    }
}

/// `MAIL FROM:<user> ...` or `RCPT TO:<user> ...` with `user@origin` in the brackets,
/// when `user` is a plain dot-atom local part (no `@`, no quotes, at most 64 octets);
/// `None` for anything else, which stays a syntax error.
pub(super) fn qualify_bare_local_part(line: &[u8], origin: &str) -> Option<Vec<u8>> {
    let open = line.iter().position(|&b| b == b'<')?;
    let verb: Vec<u8> = line[..open]
        .iter()
        .filter(|b| **b != b' ')
        .map(u8::to_ascii_uppercase)
        .collect();
    if verb != b"MAILFROM:" && verb != b"RCPTTO:" {
        return None;
    }
    let close = open + line[open..].iter().position(|&b| b == b'>')?;
    let local = &line[open + 1..close];
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b);
    let dot_atom = !local.is_empty()
        && local.len() <= 64
        && local
            .split(|&b| b == b'.')
            .all(|atom| !atom.is_empty() && atom.iter().all(|&b| atext(b)));
    if !dot_atom || origin.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(line.len() + origin.len() + 1);
    out.extend_from_slice(&line[..close]);
    out.push(b'@');
    out.extend_from_slice(origin.as_bytes());
    out.extend_from_slice(&line[close..]);
    Some(out)
}

/// The RCPT line `input` starts with, when `line` is a MAIL command (a client that
/// pipelines: RFC 2920).
fn rcpt_behind_mail(line: &[u8], input: &[u8]) -> Option<Vec<u8>> {
    const MAX: usize = 1024;
    if !line.get(..5)?.eq_ignore_ascii_case(b"MAIL ")
        || !input.get(..5)?.eq_ignore_ascii_case(b"RCPT ")
    {
        return None;
    }
    let end = input.iter().take(MAX).position(|&b| b == b'\n')?;
    Some(input[..=end].to_vec())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_rcpt_pipelined_behind_mail_is_seen() {
        use super::rcpt_behind_mail as behind;
        let rcpt = b"RCPT TO:<b@dst.test>\r\nDATA\r\n";
        assert_eq!(
            behind(b"MAIL FROM:<a@src.test>\r\n", rcpt).as_deref(),
            Some(&b"RCPT TO:<b@dst.test>\r\n"[..])
        );
        assert_eq!(
            behind(b"mail from:<a@src.test>\r\n", b"rcpt to:<b@x>\n").as_deref(),
            Some(&b"rcpt to:<b@x>\n"[..])
        );
        // not behind a MAIL, not a RCPT, not a whole line, or too long to be one
        assert_eq!(behind(b"RSET\r\n", rcpt), None);
        assert_eq!(behind(b"MAIL FROM:<a@src.test>\r\n", b"DATA\r\n"), None);
        assert_eq!(behind(b"MAIL FROM:<a@src.test>\r\n", b"RCPT TO:<b@d"), None);
        assert_eq!(behind(b"MAIL FROM:<>\r\n", b""), None);
        let mut long = b"RCPT TO:<".to_vec();
        long.extend(std::iter::repeat_n(b'x', 2000));
        long.extend_from_slice(b">\r\n");
        assert_eq!(behind(b"MAIL FROM:<>\r\n", &long), None);
    }
}
