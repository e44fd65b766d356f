//! A whole SMTP session from a transcript: lines to send, and the replies each must
//! get. One format for unit tests, integration tests (`tests/common` plays it against
//! a live daemon over TCP), the examples, and `mtactl test-policy` suites (a case's
//! `session { ... }` block).
//!
//! [`in_memory`] runs the real [`Session`] over an in-memory pipe: the listener's
//! settings, TLS and AUTH from the configuration, a real spool in a directory the caller
//! gives, and the `authentication` checks answering from a [`DnsFixture`] only. Nothing
//! goes to the network. [`play`] is the client side alone, over any stream.
//!
//! In KDL (the nodes of a `session` block; [`Transcript::from_kdl`]):
//!
//! ```kdl
//! expect "220"
//! send "EHLO client.example"
//! expect "250"
//! send "MAIL FROM:<a@example.org>" "RCPT TO:<x@example.test>"   // one write: pipelined
//! expect "250" "250 2.1.5"                 // one value per reply, each its beginning
//! send "DATA"
//! expect "354"
//! send-message "Subject: hi\n\nbody\n"     // \n is CRLF; dot-stuffed, ended with "."
//! expect "250 2.0.0"
//! send-bdat "Subject: hi\n\nbody\n" last=#true   // "BDAT <size> LAST" and the chunk
//! starttls                                 // STARTTLS, its 220, the TLS handshake
//! send-raw "NOOP\n"                        // bytes as written: no CRLF added
//! send-raw ".\r\nQUIT\r\n" replies=2        // ... that `replies` replies answer (1)
//! closed                                   // the server has closed the connection
//! ```
//!
//! A reply is matched as it was sent, its lines joined with `\n`: `expect "250-mx"`
//! matches an EHLO reply, `expect "250"` any 250.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use kdl::KdlNode;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use super::{Core, Listen, Session};
use crate::config::{Config, ListenerTls};
use crate::mailauth::DnsFixture;
use crate::net::dns::Resolver;
use crate::policy::Pipeline;
use crate::queue::Spool;

/// How long [`play`] waits for a reply by default.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What to send and what to expect, in order.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    pub steps: Vec<Step>,
}

/// One step of a transcript, with where it was written (`file:line:col`, or empty).
#[derive(Debug, Clone)]
pub struct Step {
    pub action: Action,
    pub at: String,
}

#[derive(Debug, Clone)]
pub enum Action {
    /// Bytes sent in one write; `commands` name what each reply to them answers.
    Send {
        bytes: Vec<u8>,
        commands: Vec<String>,
    },
    /// The next replies, one prefix each.
    Expect(Vec<String>),
    /// The client's side of the TLS handshake (after a STARTTLS's 220).
    Handshake,
    /// The server has closed the connection: nothing more comes.
    Closed,
}

impl Transcript {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(mut self, action: Action) -> Self {
        self.steps.push(Step {
            action,
            at: String::new(),
        });
        self
    }

    /// Command lines (CRLF added to each), in one write: several are pipelined.
    pub fn send<S: AsRef<str>>(self, lines: &[S]) -> Self {
        let mut bytes = Vec::new();
        let mut commands = Vec::new();
        for line in lines {
            bytes.extend_from_slice(line.as_ref().as_bytes());
            bytes.extend_from_slice(b"\r\n");
            commands.push(line.as_ref().to_owned());
        }
        self.push(Action::Send { bytes, commands })
    }

    /// Bytes as they are, in one write, that `answered` replies answer.
    pub fn send_raw(self, bytes: &[u8], answered: usize) -> Self {
        let label = label_of(bytes);
        self.push(Action::Send {
            bytes: bytes.to_vec(),
            commands: vec![label; answered],
        })
    }

    /// A message's content after DATA's 354: line ends made CRLF, dot-stuffed, ended
    /// with `.`; one reply answers it.
    pub fn send_message(self, text: &str) -> Self {
        let bytes = data_content(text.as_bytes());
        let label = format!("(message, {} bytes)", bytes.len());
        self.push(Action::Send {
            bytes,
            commands: vec![label],
        })
    }

    /// `BDAT <size>` (`LAST` if `last`) and the chunk, in one write; one reply answers
    /// it. The chunk is sent as it is (no CRLF conversion).
    pub fn send_bdat(self, chunk: &[u8], last: bool) -> Self {
        let command = format!("BDAT {}{}", chunk.len(), if last { " LAST" } else { "" });
        let mut bytes = format!("{command}\r\n").into_bytes();
        bytes.extend_from_slice(chunk);
        self.push(Action::Send {
            bytes,
            commands: vec![command],
        })
    }

    /// The next replies must begin with these, one each.
    pub fn expect<S: AsRef<str>>(self, prefixes: &[S]) -> Self {
        self.push(Action::Expect(
            prefixes.iter().map(|p| p.as_ref().to_owned()).collect(),
        ))
    }

    /// STARTTLS, a 220, and the TLS handshake, as a client does.
    pub fn starttls(self) -> Self {
        self.send(&["STARTTLS"])
            .expect(&["220"])
            .push(Action::Handshake)
    }

    /// The server must have closed the connection.
    pub fn closed(self) -> Self {
        self.push(Action::Closed)
    }

    /// Reads the nodes of a `session { ... }` block; `at` gives an offset's
    /// `file:line:col`. Errors are `file:line:col: message`, all of them.
    pub fn from_kdl(
        nodes: &[KdlNode],
        at: &dyn Fn(usize) -> String,
    ) -> Result<Transcript, Vec<String>> {
        let mut t = Transcript::new();
        let mut errors = Vec::new();
        for node in nodes {
            let here = at(node.name().span().offset());
            let name = node.name().value();
            let strings: Vec<&str> = node
                .entries()
                .iter()
                .filter(|e| e.name().is_none())
                .filter_map(|e| e.value().as_string())
                .collect();
            let args = node.entries().iter().filter(|e| e.name().is_none()).count();
            let props = node.entries().iter().filter(|e| e.name().is_some()).count();
            let before = t.steps.len();
            // every argument a string, no block
            let plain = strings.len() == args && node.children().is_none();
            t = match (name, plain) {
                ("send", true) if args > 0 && props == 0 => t.send(&strings),
                ("send-raw", true) if args == 1 => match node.get("replies") {
                    None if props == 0 => t.send_raw(strings[0].as_bytes(), 1),
                    Some(n) if props == 1 => match n.as_integer().map(usize::try_from) {
                        Some(Ok(n)) => t.send_raw(strings[0].as_bytes(), n),
                        _ => t,
                    },
                    _ => t,
                },
                ("send-message", true) if args == 1 && props == 0 => t.send_message(strings[0]),
                ("send-bdat", true) if args == 1 => match node.get("last").map(|v| v.as_bool()) {
                    None if props == 0 => t.send_bdat(crlf(strings[0]).as_bytes(), false),
                    Some(Some(last)) if props == 1 => {
                        t.send_bdat(crlf(strings[0]).as_bytes(), last)
                    }
                    _ => t,
                },
                ("expect", true) if args > 0 && props == 0 => t.expect(&strings),
                ("starttls", true) if args == 0 && props == 0 => t.starttls(),
                ("closed", true) if args == 0 && props == 0 => t.closed(),
                _ => t,
            };
            if t.steps.len() == before {
                errors.push(format!(
                    "{here}: `{name}`: expected one of: send \"LINE\"...; send-raw \"BYTES\" [replies=N]; \
                     send-message \"TEXT\"; send-bdat \"CHUNK\" [last=#true]; expect \"REPLY\"...; \
                     starttls; closed"
                ));
            }
            for step in &mut t.steps[before..] {
                step.at = here.clone();
            }
        }
        if errors.is_empty() {
            Ok(t)
        } else {
            Err(errors)
        }
    }

    /// Reads a transcript written as the nodes of a `session` block (a test's string);
    /// places are `line:col` in `text`.
    pub fn parse(text: &str) -> Result<Transcript, Vec<String>> {
        let positions = crate::position::Positions::new(text);
        let at = |offset: usize| {
            let (line, col) = positions.line_col(offset);
            format!("{line}:{col}")
        };
        let doc = kdl::KdlDocument::parse_v2(text).map_err(|e| {
            e.diagnostics
                .iter()
                .map(|d| {
                    format!(
                        "{}: syntax error: {}",
                        at(d.span.offset()),
                        d.message.as_deref().unwrap_or("invalid KDL")
                    )
                })
                .collect::<Vec<_>>()
        })?;
        Self::from_kdl(doc.nodes(), &at)
    }
}

/// One reply: its code, and its lines as sent (without their CRLF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The lines joined with `\n`: what an `expect` prefix is matched against.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// A reply, and the command (or `(connect)`, or the message) it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub sent: String,
    pub reply: Reply,
}

/// The first step that did not go as the transcript says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Where the step was written.
    pub at: String,
    /// The command the reply answers.
    pub sent: String,
    /// What was expected (a reply's beginning, or `closed`).
    pub expected: String,
    /// What came instead: a reply, or why none did.
    pub got: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.at.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.at)
        };
        write!(
            f,
            "after {:?}: expected {:?}..., got {:?}{at}",
            self.sent, self.expected, self.got
        )
    }
}

/// What a transcript got: every reply, in order, and the first mismatch (the play
/// stops there).
#[derive(Debug, Clone, Default)]
pub struct Played {
    pub replies: Vec<Exchange>,
    pub mismatch: Option<Mismatch>,
    /// In memory: the rules that decided (`file:line:col`), for a suite's coverage.
    pub fired: Vec<String>,
}

impl Played {
    /// The replies' codes, in order.
    pub fn codes(&self) -> Vec<u16> {
        self.replies.iter().map(|e| e.reply.code).collect()
    }
}

/// Plays `transcript` as the client over `stream`, which the server's greeting comes
/// from first. `implicit_tls`: the handshake comes first (an implicit-TLS listener).
/// Each reply is waited for at most `timeout`.
pub async fn play<S>(
    stream: S,
    transcript: &Transcript,
    implicit_tls: bool,
    timeout: Duration,
) -> Played
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut client = Client::new(stream, timeout);
    let mut played = Played::default();
    let mut pending: std::collections::VecDeque<String> = ["(connect)".to_owned()].into();
    if implicit_tls && let Err(e) = client.handshake().await {
        played.mismatch = Some(Mismatch {
            at: String::new(),
            sent: "(connect)".into(),
            expected: "a TLS handshake".into(),
            got: e.to_string(),
        });
        return played;
    }
    for step in &transcript.steps {
        let fail = |sent: &str, expected: &str, got: String| Mismatch {
            at: step.at.clone(),
            sent: sent.to_owned(),
            expected: expected.to_owned(),
            got,
        };
        match &step.action {
            Action::Send { bytes, commands } => {
                if let Err(e) = client.write(bytes).await {
                    let sent = commands.first().cloned().unwrap_or_default();
                    played.mismatch = Some(fail(&sent, "to send", e.to_string()));
                    return played;
                }
                pending.extend(commands.iter().cloned());
            }
            Action::Expect(prefixes) => {
                for want in prefixes {
                    let sent = pending.pop_front().unwrap_or_default();
                    match client.reply().await {
                        Ok(reply) => {
                            let ok = reply.text().starts_with(want.as_str());
                            let got = reply.text();
                            played.replies.push(Exchange {
                                sent: sent.clone(),
                                reply,
                            });
                            if !ok {
                                played.mismatch = Some(fail(&sent, want, got));
                                return played;
                            }
                        }
                        Err(why) => {
                            played.mismatch = Some(fail(&sent, want, why));
                            return played;
                        }
                    }
                }
            }
            Action::Handshake => {
                if let Err(e) = client.handshake().await {
                    played.mismatch = Some(fail("STARTTLS", "a TLS handshake", e.to_string()));
                    return played;
                }
            }
            Action::Closed => match client.reply().await {
                Err(why) if why == CLOSED => {}
                Err(why) => {
                    played.mismatch = Some(fail("", "closed", why));
                    return played;
                }
                Ok(reply) => {
                    let sent = pending.pop_front().unwrap_or_default();
                    let got = reply.text();
                    played.replies.push(Exchange {
                        sent: sent.clone(),
                        reply,
                    });
                    played.mismatch = Some(fail(&sent, "closed", got));
                    return played;
                }
            },
        }
    }
    played
}

/// Why no reply came: the connection was closed.
const CLOSED: &str = "(the connection was closed)";

pub(super) struct Client<S> {
    io: ClientIo<S>,
    /// Bytes read and not yet part of a whole reply.
    buf: Vec<u8>,
    timeout: Duration,
}

pub(super) enum ClientIo<S> {
    Plain(S),
    Tls(Box<tokio_rustls::client::TlsStream<S>>),
    Gone,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Client<S> {
    /// A client over `stream`, waiting at most `timeout` for each reply.
    pub(super) fn new(stream: S, timeout: Duration) -> Self {
        Client {
            io: ClientIo::Plain(stream),
            buf: Vec::new(),
            timeout,
        }
    }

    pub(super) async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    /// The next whole reply; `Err` says why none came.
    pub(super) async fn reply(&mut self) -> Result<Reply, String> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(reply) = take_reply(&mut self.buf) {
                return Ok(reply);
            }
            match tokio::time::timeout(self.timeout, self.io.read(&mut chunk)).await {
                Err(_) => return Err(format!("(no reply within {:?})", self.timeout)),
                Ok(Ok(0)) if self.buf.is_empty() => return Err(CLOSED.to_owned()),
                Ok(Ok(0)) => {
                    return Err(format!(
                        "(closed after {:?})",
                        String::from_utf8_lossy(&self.buf)
                    ));
                }
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Err(format!("(read error: {e})")),
            }
        }
    }

    pub(super) async fn handshake(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            return Err(io::Error::other(format!(
                "bytes before the handshake: {:?}",
                String::from_utf8_lossy(&self.buf)
            )));
        }
        let ClientIo::Plain(plain) = std::mem::replace(&mut self.io, ClientIo::Gone) else {
            return Err(io::Error::other("TLS is already up"));
        };
        let connector = tokio_rustls::TlsConnector::from(any_certificate());
        let name = ServerName::try_from("localhost").expect("a valid name");
        let tls = tokio::time::timeout(self.timeout, connector.connect(name, plain))
            .await
            .map_err(|_| io::Error::other("the TLS handshake timed out"))??;
        self.io = ClientIo::Tls(Box::new(tls));
        Ok(())
    }
}

/// A whole reply from the front of `buf`, if there is one.
fn take_reply(buf: &mut Vec<u8>) -> Option<Reply> {
    let mut lines = Vec::new();
    let mut start = 0;
    while let Some(end) = buf[start..].windows(2).position(|w| w == b"\r\n") {
        let line = String::from_utf8_lossy(&buf[start..start + end]).into_owned();
        start += end + 2;
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line);
        if last {
            let code = lines[0].get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            buf.drain(..start);
            return Some(Reply { code, lines });
        }
    }
    None
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClientIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            ClientIo::Gone => Poll::Ready(Ok(())),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ClientIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            ClientIo::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            ClientIo::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            ClientIo::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// What an in-memory session runs with.
pub struct Memory<'a> {
    pub config: &'a Config,
    pub pipeline: Arc<Pipeline>,
    /// The listener the client connects to, by name; empty: the first.
    pub listener: &'a str,
    pub client: SocketAddr,
    /// The only DNS the `authentication` checks see.
    pub dns: DnsFixture,
    /// Accepted messages are queued here, as the daemon queues them.
    pub spool: Spool,
    /// How long to wait for each reply.
    pub timeout: Duration,
    /// The session starts as if the client had logged in (SASL) as this user: what a
    /// dry run's `--auth USER` means, without the user's password. Only an in-memory
    /// session can start this way.
    pub authenticated: Option<String>,
    /// The session starts as if the client had negotiated TLS with these parameters
    /// (a dry run's `--tls`, on any listener). Ignored on an implicit-TLS listener,
    /// where the client's handshake comes first anyway.
    pub tls: Option<crate::net::tls::TlsInfo>,
    /// The session is a local submission's, on the built-in listener
    /// [`super::local::LISTENER`] (`listener` is then ignored): who submitted, and the
    /// queue id the message gets (the one cleanup wrote into its `Message-ID:`).
    pub local: Option<(crate::policy::local::Submitter, crate::queue::QueueId)>,
}

/// Why an in-memory session could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    #[error("no listener named \"{0}\"")]
    NoListener(String),
    #[error("{0}")]
    Listeners(String),
}

/// Runs the real [`Session`] over an in-memory pipe and plays `transcript` against it
/// as the client: every reply, in order, and the first mismatch. Must run inside a
/// tokio runtime.
pub async fn in_memory(memory: Memory<'_>, transcript: &Transcript) -> Result<Played, MemoryError> {
    let started = start(memory)?;
    let mut played = play(
        started.client,
        transcript,
        started.implicit,
        started.timeout,
    )
    .await;
    // the client is gone: the session reads its end and stops
    let _ = tokio::time::timeout(Duration::from_secs(5), started.task).await;
    drop(started.stop);
    played.fired = fired(&started.core.drain_tap());
    Ok(played)
}

/// A session started in memory ([`start`]): the client's end of the pipe and the
/// server's state, whose [`Core::tap`] records what the session decides.
pub(super) struct Started {
    pub client: tokio::io::DuplexStream,
    pub core: Arc<Core>,
    pub task: tokio::task::JoinHandle<()>,
    /// The listener is implicit TLS: the client's handshake comes first.
    pub implicit: bool,
    pub timeout: Duration,
    /// The server's stop signal: the session runs while it is held.
    pub stop: watch::Sender<bool>,
}

/// Starts the real [`Session`] on `memory`'s listener over an in-memory pipe, as the
/// daemon starts one for a connection (with a server state of its own).
pub(super) fn start(memory: Memory<'_>) -> Result<Started, MemoryError> {
    let listen = match &memory.local {
        Some(_) => {
            super::local::listen(Arc::new(super::Settings::new(memory.config)), memory.config)
        }
        None => Listen::all(memory.config)
            .map_err(|e| MemoryError::Listeners(e.to_string()))?
            .into_iter()
            .map(|(_, listen)| listen)
            .find(|l| memory.listener.is_empty() || *l.name == *memory.listener)
            .ok_or_else(|| MemoryError::NoListener(memory.listener.to_owned()))?,
    };
    let implicit = listen.tls == ListenerTls::Implicit;
    let (stop, shutdown) = watch::channel(false);
    let resolver = Arc::new(arc_swap::ArcSwap::from_pointee(Resolver::offline()));
    let mut core = Core::new(
        memory.config,
        memory.pipeline,
        memory.spool,
        resolver,
        shutdown,
    );
    core.dns_fixture = Some(memory.dns);
    core.tap = Some(Default::default());
    let core = Arc::new(core);
    let (client, server) = tokio::io::duplex(64 * 1024);
    let mut session = Session::new(server, core.clone(), memory.client, Arc::new(listen));
    session.auth_user = memory.authenticated.clone();
    session.logged_in_as = memory.authenticated;
    if !implicit && let Some(tls) = memory.tls {
        session.tls = Some(tls);
    }
    if let Some((submitter, id)) = memory.local {
        session.submitter = Some(submitter);
        session.next_id = Some(id);
    }
    let task = tokio::spawn(session.run());
    Ok(Started {
        client,
        core,
        task,
        implicit,
        timeout: memory.timeout,
        stop,
    })
}

/// The rules that decided something in these records (`file:line:col`, each once, in
/// order): a stage's rule, the `mode="warn"` rules that matched, the rule that chose a
/// content filter. A suite's coverage counts them.
pub fn fired(tapped: &[super::Tapped]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |o: &crate::policy::Origin| {
        let o = o.to_string();
        if !out.contains(&o) {
            out.push(o);
        }
    };
    for t in tapped {
        match t {
            super::Tapped::Decision { decision, .. } => {
                decision.rule.iter().for_each(&mut add);
                decision.warned.iter().for_each(|(o, _)| add(o));
            }
            super::Tapped::Filter { by: Some(o), .. } => add(o),
            _ => {}
        }
    }
    out
}

/// The spool in `dir` (created if missing), opened for in-memory sessions as the
/// daemon opens its own (its lock taken).
pub fn open_spool(dir: &Path) -> Result<Spool, crate::queue::SpoolError> {
    Spool::open(dir).map(|(spool, _)| spool)
}

/// A client TLS configuration that takes any certificate: a transcript tests the
/// session, not the certificate's chain (the handshake's signatures are still checked).
fn any_certificate() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        crate::net::tls::unverified_client_config(provider)
            .expect("ring supports the default versions"),
    )
}

/// Line ends as SMTP has them: every `\n` not already after `\r` becomes CRLF.
pub fn crlf(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut prev = '\0';
    for ch in text.chars() {
        if ch == '\n' && prev != '\r' {
            out.push('\r');
        }
        out.push(ch);
        prev = ch;
    }
    out
}

/// DATA content as sent: line ends made CRLF ([`crlf`]), a leading `.` doubled on
/// every line, a CRLF added if the content does not end with one, then `.` CRLF.
pub fn data_content(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + content.len() / 32 + 8);
    let mut at_line_start = true;
    let mut prev = 0u8;
    for &b in content {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        at_line_start = b == b'\n';
        prev = b;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// A raw write's first line, for messages.
fn label_of(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.split(['\r', '\n'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener "mx" on a server that relays for 127.0.0.0/8 and takes mail for
    /// example.test, with `extra` appended (limits) and `server` in the server block.
    fn config(extra: &str) -> Config {
        config_with("", extra)
    }

    fn config_with(server: &str, extra: &str) -> Config {
        let text = format!(
            "server {{\n hostname \"mx.example.test\"\n spool \"spool\"\n{server}}}\n\
             listen \"mx\" address=\"127.0.0.1:2525\"\n\
             networks \"trusted\" \"127.0.0.0/8\"\n\
             domains \"relay\" \"example.test\"\n\
             stage \"rcpt\" {{\n accept client=\"trusted\"\n accept rcpt-domain=\"relay\"\n \
             reject 554 \"5.7.1\" \"Relay access denied\"\n}}\n{extra}"
        );
        match Config::parse("mtad.kdl", &text) {
            Ok(config) => config,
            Err(e) => panic!("{}", crate::config::render(&e)),
        }
    }

    async fn run(config: &Config, client: &str, transcript: &Transcript) -> Played {
        run_as(config, client, None, transcript).await
    }

    /// [`run`] for a session that starts as a logged-in user (`authenticated`).
    async fn run_as(
        config: &Config,
        client: &str,
        authenticated: Option<&str>,
        transcript: &Transcript,
    ) -> Played {
        let dir = tempfile::tempdir().unwrap();
        let memory = Memory {
            config,
            pipeline: Arc::new(Pipeline::compile(config)),
            listener: "",
            client: format!("{client}:40000").parse().unwrap(),
            dns: DnsFixture::default(),
            spool: open_spool(&dir.path().join("spool")).unwrap(),
            timeout: Duration::from_secs(5),
            authenticated: authenticated.map(str::to_owned),
            tls: None,
            local: None,
        };
        in_memory(memory, transcript).await.unwrap()
    }

    fn parse(text: &str) -> Transcript {
        Transcript::parse(text).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[tokio::test]
    async fn pipelined_commands_get_their_replies_in_order() {
        let t = parse(
            r#"
            expect "220 mx.example.test"
            send "EHLO client.example"
            expect "250-mx.example.test"
            send "MAIL FROM:<a@example.org>" "RCPT TO:<x@example.test>" "RCPT TO:<y@elsewhere.test>" "DATA"
            expect "250 2.1.0" "250 2.1.5" "554 5.7.1 Relay access denied" "354"
            send-message "Subject: hi\n\n.a line with a dot\n"
            expect "250 2.0.0"
            send "QUIT"
            expect "221"
            closed
            "#,
        );
        let played = run(&config(""), "192.0.2.1", &t).await;
        assert_eq!(played.mismatch, None, "{:#?}", played.replies);
        assert_eq!(played.codes(), [220, 250, 250, 250, 554, 354, 250, 221]);
        assert_eq!(played.replies[4].sent, "RCPT TO:<y@elsewhere.test>");
        assert!(played.replies[1].reply.text().contains("\n250-PIPELINING"));
    }

    #[tokio::test]
    async fn bdat_chunks_make_one_message() {
        let t = Transcript::new()
            .expect(&["220"])
            .send(&["EHLO client.example"])
            .expect(&["250"])
            .send(&["MAIL FROM:<a@example.org>", "RCPT TO:<x@example.test>"])
            .expect(&["250", "250"])
            .send_bdat(b"Subject: chunks\r\n\r\n", false)
            .expect(&["250 2.0.0 Ok: "])
            .send_bdat(b"body\r\n", true)
            .expect(&["250 2.0.0"])
            .send(&["QUIT"])
            .expect(&["221"]);
        let played = run(&config(""), "192.0.2.1", &t).await;
        assert_eq!(played.mismatch, None, "{:#?}", played.replies);
        assert_eq!(played.replies[4].sent, "BDAT 19");
        assert_eq!(played.replies[5].sent, "BDAT 6 LAST");
    }

    #[tokio::test]
    async fn a_declared_size_over_the_limit_is_refused_at_mail() {
        let t = parse(
            r#"
            expect "220"
            send "EHLO client.example"
            expect "250"
            send "MAIL FROM:<a@example.org> SIZE=2000"
            expect "552 5.3.4"
            send "MAIL FROM:<a@example.org> SIZE=500"
            expect "250"
            "#,
        );
        let config = config("limits {\n message-size 1000\n}\n");
        let played = run(&config, "192.0.2.1", &t).await;
        assert_eq!(played.mismatch, None, "{:#?}", played.replies);
        assert!(played.replies[1].reply.text().contains("250-SIZE 1000"));
    }

    #[tokio::test]
    async fn a_wrong_expectation_is_a_mismatch_naming_the_line_sent() {
        let t = parse(
            "expect \"220\"\nsend \"EHLO c.example\"\nexpect \"250\"\n\
             send \"MAIL FROM:<a@example.org>\" \"RCPT TO:<y@elsewhere.test>\"\n\
             expect \"250\" \"250\"\nsend \"QUIT\"\nexpect \"221\"\n",
        );
        let played = run(&config(""), "192.0.2.1", &t).await;
        let mismatch = played.mismatch.clone().expect("a mismatch");
        assert_eq!(mismatch.at, "5:1");
        assert_eq!(mismatch.sent, "RCPT TO:<y@elsewhere.test>");
        assert_eq!(mismatch.expected, "250");
        assert_eq!(mismatch.got, "554 5.7.1 Relay access denied");
        // the play stops at the mismatch
        assert_eq!(played.codes(), [220, 250, 250, 554]);
    }

    #[tokio::test]
    async fn starttls_upgrades_the_in_memory_stream() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["mx.example.test".into()]).unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
        let config = config_with(
            &format!(
                " tls-certificate \"{}\"\n tls-key \"{}\"\n",
                c.display(),
                k.display()
            ),
            "",
        );
        let t = parse(
            r#"
            expect "220"
            send "EHLO client.example"
            expect "250"
            starttls
            send "MAIL FROM:<a@example.org>"
            expect "503"   // RFC 3207: EHLO again after TLS
            send "EHLO client.example"
            expect "250"
            send "MAIL FROM:<a@example.org>" "RCPT TO:<x@example.test>" "DATA"
            expect "250" "250" "354"
            send-message "Subject: over TLS\n\nbody\n"
            expect "250 2.0.0"
            "#,
        );
        let played = run(&config, "192.0.2.1", &t).await;
        assert_eq!(played.mismatch, None, "{:#?}", played.replies);
        assert!(played.replies[1].reply.text().contains("\n250 STARTTLS"));
        assert_eq!(played.replies[4].sent, "EHLO client.example");
        assert!(!played.replies[4].reply.text().contains("STARTTLS"));

        // an implicit-TLS listener: the handshake comes before the greeting
        let mut implicit = config;
        implicit.listeners[0].tls = ListenerTls::Implicit;
        let t = parse("expect \"220\"\nsend \"EHLO c.example\"\nexpect \"250-mx\"\nstarttls\n");
        let played = run(&implicit, "192.0.2.1", &t).await;
        let mismatch = played.mismatch.clone().expect("no STARTTLS over TLS");
        assert!(!played.replies[1].reply.text().contains("STARTTLS"));
        assert_eq!(
            (mismatch.sent.as_str(), mismatch.expected.as_str()),
            ("STARTTLS", "220")
        );
    }

    #[tokio::test]
    async fn auth_is_reached_as_a_client_reaches_it() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        std::fs::write(&users, "alice:{PLAIN}secret\n").unwrap();
        let mut config = config(&format!("users \"u\" file=\"{}\"\n", users.display()));
        // the listener, as `auth="offered" auth-plaintext=#true` makes it
        config.listeners[0].auth = crate::config::AuthMode::Offered;
        config.listeners[0].auth_plaintext = true;
        config.listeners[0].users = Some("u".into());
        let t = parse(
            r#"
            expect "220"
            send "EHLO client.example"
            expect "250-mx.example.test"
            send "AUTH PLAIN AGFsaWNlAHdyb25n"
            expect "535 5.7.8"
            send "AUTH PLAIN AGFsaWNlAHNlY3JldA=="
            expect "235 2.7.0"
            "#,
        );
        let played = run(&config, "192.0.2.1", &t).await;
        assert_eq!(played.mismatch, None, "{:#?}", played.replies);
        assert!(
            played.replies[1]
                .reply
                .text()
                .contains("\n250 AUTH PLAIN LOGIN")
        );
    }

    /// A session started as a logged-in user (a dry run's `--auth`) is that user from
    /// the start and again after STARTTLS, which makes a network client log in again;
    /// a session started as nobody is refused where AUTH is required.
    #[tokio::test]
    async fn a_session_may_start_logged_in_and_stays_so_after_starttls() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["mx.example.test".into()]).unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
        let users = dir.path().join("users");
        std::fs::write(&users, "alice:{PLAIN}secret\n").unwrap();
        let mut config = config_with(
            &format!(
                " tls-certificate \"{}\"\n tls-key \"{}\"\n",
                c.display(),
                k.display()
            ),
            &format!("users \"u\" file=\"{}\"\n", users.display()),
        );
        config.listeners[0].auth = crate::config::AuthMode::Required;
        config.listeners[0].users = Some("u".into());
        let t = |mail: &str| {
            parse(&format!(
                "expect \"220\"\nsend \"EHLO c.example\"\nexpect \"250\"\nstarttls\n\
                 send \"EHLO c.example\"\nexpect \"250\"\n\
                 send \"MAIL FROM:<alice@example.test>\"\nexpect \"{mail}\"\n"
            ))
        };
        // from outside the trusted network: only a logged-in client may send
        let played = run_as(&config, "192.0.2.1", Some("alice"), &t("250")).await;
        assert_eq!(played.mismatch, None, "{:#?}", played.replies);
        let played = run_as(&config, "192.0.2.1", None, &t("530 5.7.0")).await;
        assert_eq!(played.mismatch, None, "{:#?}", played.replies);
    }

    #[test]
    fn a_bad_node_is_an_error_with_its_place() {
        let errors = Transcript::parse("expect \"220\"\nsend-bdat \"x\" last=1\nsned \"EHLO x\"\n")
            .unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("2:1: `send-bdat`"), "{errors:?}");
        assert!(errors[1].starts_with("3:1: `sned`"), "{errors:?}");
    }

    #[test]
    fn message_content_is_dot_stuffed_and_ended() {
        assert_eq!(data_content(b"a\r\n.b\r\n"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(data_content(b"a"), b"a\r\n.\r\n");
        assert_eq!(data_content(b"a\n.b\n"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(data_content(b""), b".\r\n");
    }
}
