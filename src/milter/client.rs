//! One connection to one filter, for the life of an SMTP session (as Postfix keeps
//! one per smtpd session): negotiation, then the events in protocol order.
//!
//! Every wait has a deadline: connecting and negotiating the connect timeout, each
//! event's answer the command timeout, the body's and the end of the message's the
//! content timeout. A `progress` reply restarts the deadline, up to
//! [`MAX_PROGRESS`] times the timeout in all, so a filter that only ever says
//! "progress" still fails in bounded time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout_at};

use super::codec::{self, Command, MacroStage, Negotiated, ProtocolError, Reply, action, step};
use super::{Address, Milter};

/// A `progress` reply gives the filter another timeout, up to this many in all.
pub const MAX_PROGRESS: u32 = 10;

/// At most this many changes to one message (headers, recipients...).
pub const MAX_CHANGES: usize = 10_000;

trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// Why a filter could not be used: the session then applies its [`super::FailureAction`].
#[derive(Debug, thiserror::Error)]
pub enum MilterError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, &'static str),
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("protocol error: {0}")]
    Unexpected(String),
    #[error("rspamd: {0}")]
    Rspamd(#[from] super::rspamd::ReplyError),
}

/// What a filter decided about an event (or the whole message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go on (also the answer of a step the filter does not want).
    Continue,
    /// Accept: no more of this connection (at connect, helo) or of this message
    /// (later) goes to the filter.
    Accept,
    /// Accept, and drop the message.
    Discard,
    /// `550 5.7.1` (or `554` at connect), Postfix's text.
    Reject,
    /// `451 4.7.1`.
    Tempfail,
    /// The filter's own reply (`SMFIR_REPLYCODE`, checked to be 4xx or 5xx).
    Reply(String),
    /// 421 and the session ends (`SMFIR_SHUTDOWN`, `SMFIR_CONN_FAIL`).
    Shutdown,
}

impl Verdict {
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Continue => "continue",
            Verdict::Accept => "accept",
            Verdict::Discard => "discard",
            Verdict::Reject => "reject",
            Verdict::Tempfail => "tempfail",
            Verdict::Reply(_) => "reply",
            Verdict::Shutdown => "shutdown",
        }
    }
}

/// Macro values by name as they are written in the lists (`i`, `{daemon_name}`); a
/// name without a value is not sent.
pub type MacroValues = BTreeMap<&'static str, String>;

/// A message as the filter sees it: the headers (our own Received: left out, as
/// Postfix hides its own), and the body.
pub struct Message<'a> {
    /// Name and value; the value as it follows the colon (the leading space kept),
    /// its folds as `\n`.
    pub headers: &'a [(String, String)],
    /// CRLF lines, as received (dots unstuffed).
    pub body: &'a [u8],
    /// Replacement bodies beyond this size are a protocol error.
    pub max_body: usize,
}

pub struct Connection {
    io: Box<dyn Io>,
    spec: Arc<Milter>,
    negotiated: Negotiated,
    /// The macros sent at each stage: the filter's own lists where it gave them, the
    /// configured ones elsewhere.
    macros: [Vec<String>; 7],
    buf: Vec<u8>,
}

impl Connection {
    /// Connects and negotiates, within the connect timeout.
    pub async fn open(spec: Arc<Milter>) -> Result<Self, MilterError> {
        let deadline = Instant::now() + spec.connect_timeout;
        let io: Box<dyn Io> = match &spec.address {
            Address::Inet { host, port } => {
                let s = timeout_at(
                    deadline,
                    tokio::net::TcpStream::connect((host.as_str(), *port)),
                )
                .await
                .map_err(|_| MilterError::Timeout(spec.connect_timeout, "connect"))?
                .map_err(MilterError::Connect)?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
            Address::Http { .. } => {
                return Err(MilterError::Unexpected(
                    "rspamd over HTTP has no milter connection".into(),
                ));
            }
            Address::Unix(path) => Box::new(
                timeout_at(deadline, tokio::net::UnixStream::connect(path))
                    .await
                    .map_err(|_| MilterError::Timeout(spec.connect_timeout, "connect"))?
                    .map_err(MilterError::Connect)?,
            ),
        };
        let mut conn = Self {
            io,
            macros: spec.macros.clone(),
            spec,
            negotiated: Negotiated {
                version: 0,
                actions: 0,
                steps: 0,
                macros: Vec::new(),
            },
            buf: Vec::new(),
        };
        conn.send(&Command::optneg(action::ALL, step::ALL), deadline)
            .await?;
        let timeout = conn.spec.connect_timeout;
        let reply = conn.read(deadline, timeout, "negotiation").await?;
        let Reply::Negotiate(n) = reply else {
            return Err(MilterError::Unexpected(format!(
                "`{}` instead of the negotiation",
                reply.name()
            )));
        };
        if !(2..=codec::VERSION).contains(&n.version) {
            return Err(MilterError::Unexpected(format!(
                "protocol version {}",
                n.version
            )));
        }
        // a filter may ask only for what we offered
        if n.actions & !action::ALL != 0 || n.steps & !step::ALL != 0 {
            return Err(MilterError::Unexpected(format!(
                "asked for actions {:#x} and steps {:#x}, more than offered",
                n.actions, n.steps
            )));
        }
        if !n.macros.is_empty() && n.actions & action::SETSYMLIST == 0 {
            return Err(MilterError::Unexpected(
                "macro lists without SETSYMLIST".into(),
            ));
        }
        for (stage, list) in &n.macros {
            conn.macros[stage.index()] = list.clone();
        }
        conn.negotiated = n;
        Ok(conn)
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn spec(&self) -> &Arc<Milter> {
        &self.spec
    }

    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// Whether the filter asked for step flag `flag`.
    fn wants(&self, flag: u32) -> bool {
        self.negotiated.steps & flag != 0
    }

    /// The macros of `stage` that have a value.
    pub fn macros_for(&self, stage: MacroStage, values: &MacroValues) -> Vec<(String, String)> {
        self.macros[stage.index()]
            .iter()
            .filter_map(|name| values.get(name.as_str()).map(|v| (name.clone(), v.clone())))
            .collect()
    }

    /// What would be sent for an event: its macros and the command (for `mtactl
    /// test-policy`'s record and the tests).
    pub fn macro_packet(&self, stage: MacroStage, values: &MacroValues) -> Option<Vec<u8>> {
        let pairs = self.macros_for(stage, values);
        if pairs.is_empty() {
            return None;
        }
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        Some(Command::macros(stage.command(), &pairs))
    }

    async fn send(&mut self, packet: &[u8], deadline: Instant) -> Result<(), MilterError> {
        let io = &mut self.io;
        match timeout_at(deadline, async {
            io.write_all(packet).await?;
            io.flush().await
        })
        .await
        {
            Ok(r) => Ok(r?),
            Err(_) => Err(MilterError::Timeout(self.spec.command_timeout, "a write")),
        }
    }

    /// Reads one reply; a `progress` restarts the deadline (bounded).
    async fn read(
        &mut self,
        mut deadline: Instant,
        timeout: Duration,
        what: &'static str,
    ) -> Result<Reply, MilterError> {
        let mut progress = 0;
        loop {
            let mut len = [0u8; 4];
            timeout_at(deadline, self.io.read_exact(&mut len))
                .await
                .map_err(|_| MilterError::Timeout(timeout, what))??;
            let len = codec::check_length(u32::from_be_bytes(len))?;
            self.buf.clear();
            self.buf.resize(len, 0);
            timeout_at(deadline, self.io.read_exact(&mut self.buf))
                .await
                .map_err(|_| MilterError::Timeout(timeout, what))??;
            let reply = codec::parse_reply(self.buf[0], &self.buf[1..])?;
            if reply == Reply::Progress {
                progress += 1;
                if progress > MAX_PROGRESS {
                    return Err(MilterError::Timeout(timeout * MAX_PROGRESS, what));
                }
                deadline = Instant::now() + timeout;
                continue;
            }
            return Ok(reply);
        }
    }

    /// Sends an event (its macros first), and reads its verdict unless the filter
    /// said it will not answer it (`no_reply`).
    async fn event(
        &mut self,
        stage: Option<MacroStage>,
        values: &MacroValues,
        packet: &[u8],
        no_reply: bool,
        content: bool,
        what: &'static str,
    ) -> Result<Verdict, MilterError> {
        let timeout = if content {
            self.spec.content_timeout
        } else {
            self.spec.command_timeout
        };
        let deadline = Instant::now() + timeout;
        let mut out = stage
            .and_then(|s| self.macro_packet(s, values))
            .unwrap_or_default();
        out.extend_from_slice(packet);
        self.send(&out, deadline).await?;
        if no_reply {
            return Ok(Verdict::Continue);
        }
        let reply = self.read(deadline, timeout, what).await?;
        verdict(reply, what)
    }

    /// `SMFIC_CONNECT`: the client's name and address (`None`: a local submission).
    pub async fn connect(
        &mut self,
        hostname: &str,
        addr: Option<std::net::SocketAddr>,
        values: &MacroValues,
    ) -> Result<Verdict, MilterError> {
        if self.wants(step::NOCONNECT) {
            return Ok(Verdict::Continue);
        }
        let nr = self.wants(step::NR_CONN);
        self.event(
            Some(MacroStage::Connect),
            values,
            &Command::connect(hostname, addr),
            nr,
            false,
            "connect",
        )
        .await
    }

    pub async fn helo(&mut self, name: &str, values: &MacroValues) -> Result<Verdict, MilterError> {
        if self.wants(step::NOHELO) {
            return Ok(Verdict::Continue);
        }
        let nr = self.wants(step::NR_HELO);
        self.event(
            Some(MacroStage::Helo),
            values,
            &Command::helo(name),
            nr,
            false,
            "helo",
        )
        .await
    }

    /// `SMFIC_MAIL`: `<sender>` and its ESMTP parameters.
    pub async fn mail(
        &mut self,
        args: &[&str],
        values: &MacroValues,
    ) -> Result<Verdict, MilterError> {
        if self.wants(step::NOMAIL) {
            return Ok(Verdict::Continue);
        }
        let nr = self.wants(step::NR_MAIL);
        self.event(
            Some(MacroStage::Mail),
            values,
            &Command::mail(args),
            nr,
            false,
            "mail",
        )
        .await
    }

    /// `SMFIC_RCPT`; `rejected`: one our policy refused, sent only to a filter that
    /// asked for those (`SMFIP_RCPT_REJ`), whose answer is then ignored.
    pub async fn rcpt(
        &mut self,
        args: &[&str],
        values: &MacroValues,
        rejected: bool,
    ) -> Result<Verdict, MilterError> {
        if self.wants(step::NORCPT) || (rejected && !self.wants(step::RCPT_REJ)) {
            return Ok(Verdict::Continue);
        }
        let nr = self.wants(step::NR_RCPT);
        let v = self
            .event(
                Some(MacroStage::Rcpt),
                values,
                &Command::rcpt(args),
                nr,
                false,
                "rcpt",
            )
            .await?;
        Ok(if rejected { Verdict::Continue } else { v })
    }

    /// Whether the filter wants rejected recipients too.
    pub fn wants_rejected_rcpts(&self) -> bool {
        self.wants(step::RCPT_REJ) && !self.wants(step::NORCPT)
    }

    /// The message: DATA, the headers, the end of the headers, the body, and the end
    /// of the message, whose answer comes with the filter's changes. A verdict before
    /// the end (a reject at a header) ends the message for this filter.
    pub async fn message(
        &mut self,
        msg: &Message<'_>,
        values: &MacroValues,
    ) -> Result<(Verdict, Vec<Reply>), MilterError> {
        let final_verdict = |v: &Verdict| !matches!(v, Verdict::Continue);
        if !self.wants(step::NODATA) {
            let nr = self.wants(step::NR_DATA);
            let v = self
                .event(
                    Some(MacroStage::Data),
                    values,
                    &Command::data(),
                    nr,
                    false,
                    "data",
                )
                .await?;
            if final_verdict(&v) {
                return Ok((v, Vec::new()));
            }
        }
        if !self.wants(step::NOHDRS) {
            let lead = self.wants(step::HDR_LEADSPC);
            let nr = self.wants(step::NR_HDR);
            for (name, value) in msg.headers {
                let value = if lead {
                    value.as_str()
                } else {
                    value.trim_start_matches([' ', '\t'])
                };
                let p = Command::header(name.as_bytes(), value.as_bytes());
                let v = self.event(None, values, &p, nr, false, "header").await?;
                if final_verdict(&v) {
                    return Ok((v, Vec::new()));
                }
            }
        }
        if !self.wants(step::NOEOH) {
            let nr = self.wants(step::NR_EOH);
            let v = self
                .event(
                    Some(MacroStage::EndOfHeaders),
                    values,
                    &Command::eoh(),
                    nr,
                    false,
                    "end of headers",
                )
                .await?;
            if final_verdict(&v) {
                return Ok((v, Vec::new()));
            }
        }
        if !self.wants(step::NOBODY) {
            let nr = self.wants(step::NR_BODY);
            for chunk in msg.body.chunks(codec::CHUNK) {
                let timeout = self.spec.content_timeout;
                let deadline = Instant::now() + timeout;
                self.send(&Command::body(chunk), deadline).await?;
                if nr {
                    continue;
                }
                match self.read(deadline, timeout, "body").await? {
                    Reply::Skip if self.wants(step::SKIP) => break,
                    Reply::Skip => {
                        return Err(MilterError::Unexpected("skip without SMFIP_SKIP".into()));
                    }
                    other => {
                        let v = verdict(other, "body")?;
                        if final_verdict(&v) {
                            return Ok((v, Vec::new()));
                        }
                    }
                }
            }
        }
        // the end: changes, then the verdict
        let timeout = self.spec.content_timeout;
        let deadline = Instant::now() + timeout;
        let mut out = self
            .macro_packet(MacroStage::EndOfMessage, values)
            .unwrap_or_default();
        out.extend_from_slice(&Command::end_of_body());
        self.send(&out, deadline).await?;
        let mut changes = Vec::new();
        let mut body_len = 0usize;
        loop {
            let reply = self.read(deadline, timeout, "end of message").await?;
            if let Some(needed) = reply.needs_action() {
                if self.negotiated.actions & needed == 0 {
                    return Err(MilterError::Unexpected(format!(
                        "`{}` without negotiating it",
                        reply.name()
                    )));
                }
                if changes.len() >= MAX_CHANGES {
                    return Err(MilterError::Unexpected("too many changes".into()));
                }
                if let Reply::ReplaceBody(b) = &reply {
                    body_len += b.len();
                    if body_len > msg.max_body {
                        return Err(MilterError::Unexpected(
                            "replacement body over the message size limit".into(),
                        ));
                    }
                }
                changes.push(reply);
                continue;
            }
            let v = verdict(reply, "end of message")?;
            // at the end of the message, continue means accept
            let v = if v == Verdict::Continue {
                Verdict::Accept
            } else {
                v
            };
            return Ok((v, changes));
        }
    }

    /// `SMFIC_ABORT`: the transaction under way is over (RSET, a refusal, a new
    /// HELO). No answer.
    pub async fn abort(&mut self) -> Result<(), MilterError> {
        let deadline = Instant::now() + self.spec.command_timeout;
        self.send(&Command::abort(), deadline).await
    }

    /// `SMFIC_QUIT`, then the connection is closed.
    pub async fn quit(mut self) {
        let deadline = Instant::now() + self.spec.command_timeout;
        let _ = self.send(&Command::quit(), deadline).await;
        let _ = timeout_at(deadline, self.io.shutdown()).await;
    }
}

/// An event's answer as a verdict; a change or a negotiation here breaks the protocol.
fn verdict(reply: Reply, what: &'static str) -> Result<Verdict, MilterError> {
    Ok(match reply {
        Reply::Continue => Verdict::Continue,
        Reply::Accept => Verdict::Accept,
        Reply::Discard => Verdict::Discard,
        Reply::Reject => Verdict::Reject,
        Reply::Tempfail => Verdict::Tempfail,
        Reply::ReplyCode(text) => Verdict::Reply(text),
        Reply::Shutdown | Reply::ConnFail => Verdict::Shutdown,
        other => {
            return Err(MilterError::Unexpected(format!(
                "`{}` in answer to {what}",
                other.name()
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn packet(code: u8, data: &[u8]) -> Vec<u8> {
        let mut out = ((data.len() + 1) as u32).to_be_bytes().to_vec();
        out.push(code);
        out.extend_from_slice(data);
        out
    }

    async fn read_packet(s: &mut tokio::net::UnixStream) -> (u8, Vec<u8>) {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.unwrap();
        let mut data = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut data).await.unwrap();
        (data[0], data[1..].to_vec())
    }

    /// A filter that negotiates `actions`/`steps`, then records the command of every
    /// packet and answers the next one of `script` when its command comes.
    async fn fake(
        actions: u32,
        steps: u32,
        script: Vec<(u8, Vec<u8>)>,
    ) -> (Arc<Milter>, tokio::task::JoinHandle<Vec<u8>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let mut spec = Milter::new("fake", Address::Unix(path));
        spec.command_timeout = Duration::from_millis(500);
        spec.content_timeout = Duration::from_millis(500);
        let task = tokio::spawn(async move {
            let _dir = dir;
            let (mut s, _) = listener.accept().await.unwrap();
            let (code, _) = read_packet(&mut s).await;
            assert_eq!(code, b'O');
            let mut n = 6u32.to_be_bytes().to_vec();
            n.extend_from_slice(&actions.to_be_bytes());
            n.extend_from_slice(&steps.to_be_bytes());
            s.write_all(&packet(b'O', &n)).await.unwrap();
            let mut seen = Vec::new();
            for (want, answer) in script {
                loop {
                    let (code, _) = read_packet(&mut s).await;
                    seen.push(code);
                    if code == want {
                        break;
                    }
                }
                s.write_all(&answer).await.unwrap();
            }
            // then silent, to the end (what comes is still recorded)
            let mut len = [0u8; 4];
            while s.read_exact(&mut len).await.is_ok() {
                let mut data = vec![0u8; u32::from_be_bytes(len) as usize];
                if s.read_exact(&mut data).await.is_err() {
                    break;
                }
                seen.push(data[0]);
            }
            seen
        });
        (Arc::new(spec), task)
    }

    #[tokio::test]
    async fn end_of_message_changes_and_verdict() {
        let script = vec![
            (b'T', packet(b'c', b"")),
            (b'L', packet(b'c', b"")),
            (b'N', packet(b'c', b"")),
            (b'B', packet(b'c', b"")),
            (
                b'E',
                [
                    packet(b'p', b""),
                    packet(b'h', b"X-Test\0 yes\0"),
                    packet(b'a', b""),
                ]
                .concat(),
            ),
        ];
        let (spec, task) = fake(action::ADDHDRS, 0, script).await;
        let mut conn = Connection::open(spec).await.unwrap();
        let headers = vec![("Subject".to_owned(), " hi".to_owned())];
        let msg = Message {
            headers: &headers,
            body: b"text\r\n",
            max_body: 1000,
        };
        let (v, changes) = conn.message(&msg, &MacroValues::new()).await.unwrap();
        assert_eq!(v, Verdict::Accept);
        assert_eq!(
            changes,
            vec![Reply::AddHeader {
                name: "X-Test".into(),
                value: " yes".into()
            }]
        );
        drop(conn);
        assert_eq!(task.await.unwrap(), b"TLNBE");
    }

    #[tokio::test]
    async fn a_change_not_negotiated_is_a_failure() {
        let script = vec![(b'E', [packet(b'-', b"<a@b>\0"), packet(b'a', b"")].concat())];
        let steps = step::NODATA | step::NOHDRS | step::NOEOH | step::NOBODY;
        let (spec, _task) = fake(action::ADDHDRS, steps, script).await;
        let mut conn = Connection::open(spec).await.unwrap();
        let msg = Message {
            headers: &[],
            body: b"",
            max_body: 1000,
        };
        let err = conn.message(&msg, &MacroValues::new()).await.unwrap_err();
        assert!(err.to_string().contains("without negotiating"), "{err}");
    }

    #[tokio::test]
    async fn a_silent_filter_times_out() {
        let (spec, _task) = fake(0, 0, vec![(b'H', Vec::new())]).await;
        let mut conn = Connection::open(spec).await.unwrap();
        let err = conn.helo("x", &MacroValues::new()).await.unwrap_err();
        assert!(matches!(err, MilterError::Timeout(_, "helo")), "{err}");
    }

    #[tokio::test]
    async fn steps_not_wanted_are_not_sent() {
        let script = vec![(b'M', packet(b'r', b""))];
        let (spec, task) = fake(0, step::NOHELO | step::NR_CONN, script).await;
        let mut conn = Connection::open(spec).await.unwrap();
        let mut values = MacroValues::new();
        values.insert("j", "mx.test".into());
        assert_eq!(
            conn.connect("c", Some("192.0.2.1:1".parse().unwrap()), &values)
                .await
                .unwrap(),
            Verdict::Continue
        );
        assert_eq!(conn.helo("x", &values).await.unwrap(), Verdict::Continue);
        assert_eq!(
            conn.mail(&["<a@b>"], &values).await.unwrap(),
            Verdict::Reject
        );
        // the connect macros and CONNECT (no answer awaited), no HELO, MAIL (no
        // mail macro has a value), QUIT
        conn.quit().await;
        assert_eq!(task.await.unwrap(), b"DCMQ");
    }
}
