//! Local submissions enter the pipeline here: the daemon's pickup hands over a
//! cleaned-up message and its submitter, and a real [`Session`] takes it on the
//! built-in listener [`LISTENER`] over an in-memory pipe, so a message from
//! `sendmail` goes through the same stages (mail, rcpt, data; route at delivery), the
//! same spool commit and the same logging as one from the network. Rules see the
//! listener's name and hooks `ctx.local_user` and `ctx.uid`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::{Core, Listen, Session, Settings};
use crate::config::Listener;
use crate::policy::local::Submitter;
use crate::queue::QueueId;

/// The name of the built-in listener local submissions arrive on (Postfix's pickup
/// service): `listener="sendmail"` in a rule, `ctx.listener` in a hook.
pub const LISTENER: &str = "sendmail";

/// How long one local submission may take in the session.
const TIMEOUT: Duration = Duration::from_secs(300);

/// A message to inject: its envelope after cleanup, the submitter, and the queue id
/// it must get.
pub struct Injection<'a> {
    pub submitter: Submitter,
    pub sender: &'a str,
    pub recipients: &'a [String],
    /// CRLF line endings, headers and body.
    pub message: &'a [u8],
    pub body_8bit: bool,
    pub smtputf8: bool,
    pub id: QueueId,
}

/// What the session said.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Injected {
    /// The message was queued (or discarded by policy, which looks the same).
    pub queued: bool,
    /// Recipients refused, with the reply.
    pub refused: Vec<(String, String)>,
    /// The message was refused as a whole (at MAIL or at the end of data), or the
    /// session failed: the reply or the reason.
    pub failed: Option<String>,
}

/// The built-in listener's settings: no TLS, no AUTH.
pub fn listen(settings: Arc<Settings>) -> Listen {
    let listener = Listener::plain(
        LISTENER,
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
    );
    // the pickup sends CRLF only (cleanup made it so)
    Listen::new(
        settings,
        &listener,
        None,
        None,
        None,
        super::NormalizeLf::Nobody,
    )
}

/// Runs one local submission through a session on [`LISTENER`].
pub async fn inject(core: Arc<Core>, listen: Arc<Listen>, m: Injection<'_>) -> Injected {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    let mut session = Session::new(server, core, peer, listen);
    session.submitter = Some(m.submitter.clone());
    session.next_id = Some(m.id);
    let task = tokio::spawn(session.run());
    let out = match tokio::time::timeout(TIMEOUT, play(client, &m)).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => Injected {
            failed: Some(format!("the local session failed: {e}")),
            ..Injected::default()
        },
        Err(_) => Injected {
            failed: Some("the local session timed out".to_owned()),
            ..Injected::default()
        },
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    out
}

async fn play(client: tokio::io::DuplexStream, m: &Injection<'_>) -> std::io::Result<Injected> {
    let (read, mut write) = tokio::io::split(client);
    let mut read = BufReader::new(read.take(1 << 20));
    let mut out = Injected::default();
    let greeting = reply(&mut read).await?;
    if !greeting.starts_with('2') {
        out.failed = Some(greeting);
        return Ok(out);
    }
    write.write_all(b"EHLO localhost\r\n").await?;
    let ehlo = reply(&mut read).await?;
    if !ehlo.starts_with('2') {
        out.failed = Some(ehlo);
        return Ok(out);
    }
    let mut mail = format!("MAIL FROM:<{}>", m.sender);
    if m.body_8bit {
        mail.push_str(" BODY=8BITMIME");
    }
    if m.smtputf8 {
        mail.push_str(" SMTPUTF8");
    }
    mail.push_str("\r\n");
    write.write_all(mail.as_bytes()).await?;
    let answer = reply(&mut read).await?;
    if !answer.starts_with('2') {
        out.failed = Some(answer);
        return quit(write, out).await;
    }
    let mut accepted = 0;
    for r in m.recipients {
        write
            .write_all(format!("RCPT TO:<{r}>\r\n").as_bytes())
            .await?;
        let answer = reply(&mut read).await?;
        if answer.starts_with('2') {
            accepted += 1;
        } else {
            out.refused.push((r.clone(), answer));
        }
    }
    if accepted == 0 {
        out.failed = Some("every recipient was refused".to_owned());
        return quit(write, out).await;
    }
    write
        .write_all(format!("BDAT {} LAST\r\n", m.message.len()).as_bytes())
        .await?;
    write.write_all(m.message).await?;
    let answer = reply(&mut read).await?;
    if answer.starts_with('2') {
        out.queued = true;
    } else {
        out.failed = Some(answer);
    }
    quit(write, out).await
}

async fn quit(
    mut write: tokio::io::WriteHalf<tokio::io::DuplexStream>,
    out: Injected,
) -> std::io::Result<Injected> {
    let _ = write.write_all(b"QUIT\r\n").await;
    let _ = write.shutdown().await;
    Ok(out)
}

/// One reply, its lines joined with `\n` (without the line ends).
async fn reply(
    read: &mut BufReader<tokio::io::Take<tokio::io::ReadHalf<tokio::io::DuplexStream>>>,
) -> std::io::Result<String> {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the session closed",
            ));
        }
        let line = line.trim_end();
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(text);
        }
    }
}
