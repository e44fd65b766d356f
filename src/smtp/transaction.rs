//! The client's side of one mail transaction against mtad's own [`Session`](super::Session)
//! in memory: the conversation that local submission ([`super::local::inject`]) and
//! `mtactl test-policy` ([`super::dry_run`]) both hold, so that what the dry run shows
//! for a local submission is what the pickup does.
//!
//! The client reads the greeting, sends `EHLO`, `MAIL FROM` (with `SIZE=`,
//! `BODY=8BITMIME` and `SMTPUTF8` as the transaction needs), one `RCPT TO` per
//! recipient, `DATA` and the message (dot-stuffed, LF→CRLF), each after the reply to
//! the one before, and stops where a client must: a refusal at the greeting, EHLO,
//! MAIL, DATA or the end of the message, or every recipient refused.

use tokio::io::{AsyncRead, AsyncWrite};

use super::transcript::{Client, Reply, data_content};
use crate::policy::Stage;
use crate::queue::QueueId;

/// What the client sends.
pub struct Transaction<'a> {
    pub helo: &'a str,
    /// The envelope sender, bare (`a@b`, empty for the null sender) or in angle brackets.
    pub sender: &'a str,
    pub recipients: &'a [String],
    /// Headers and body, LF or CRLF line ends.
    pub message: &'a [u8],
    /// Announce the message's size in `MAIL FROM`.
    pub size: bool,
    pub body_8bit: bool,
    pub smtputf8: bool,
}

/// How the transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The end of the message got a 2xx: the queue id it named, if it named one.
    Accepted(Option<QueueId>),
    /// The session refused at this stage (rcpt: every recipient was refused).
    Refused(Stage),
}

/// The session did not answer (it closed, or took too long): what was sent last, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the session gave no reply to {sent:?}: {why}")]
pub struct NoReply {
    pub sent: String,
    pub why: String,
}

/// Holds the conversation of `t` over `client` (whose greeting has not been read),
/// telling `heard` each reply, the stage it answers (the greeting: connect; EHLO:
/// helo; DATA's go-ahead and the end of the message: data) and (at `Rcpt`) the recipient.
/// Sends no `QUIT`.
pub(super) async fn converse<S>(
    client: &mut Client<S>,
    t: &Transaction<'_>,
    mut heard: impl FnMut(Stage, Option<&str>, &Reply),
) -> Result<Ended, NoReply>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let greeting = reply(client, "(connect)").await?;
    heard(Stage::Connect, None, &greeting);
    if !positive(&greeting) {
        return Ok(Ended::Refused(Stage::Connect));
    }
    let ehlo = command(client, &format!("EHLO {}", t.helo)).await?;
    heard(Stage::Helo, None, &ehlo);
    if !positive(&ehlo) {
        return Ok(Ended::Refused(Stage::Helo));
    }
    let mut mail = format!("MAIL FROM:{}", path(t.sender));
    if t.size {
        mail.push_str(&format!(" SIZE={}", t.message.len()));
    }
    if t.body_8bit {
        mail.push_str(" BODY=8BITMIME");
    }
    if t.smtputf8 {
        mail.push_str(" SMTPUTF8");
    }
    let answer = command(client, &mail).await?;
    heard(Stage::Mail, None, &answer);
    if !positive(&answer) {
        return Ok(Ended::Refused(Stage::Mail));
    }
    let mut accepted = 0;
    for rcpt in t.recipients {
        let answer = command(client, &format!("RCPT TO:{}", path(rcpt))).await?;
        heard(Stage::Rcpt, Some(rcpt), &answer);
        if positive(&answer) {
            accepted += 1;
        }
    }
    if accepted == 0 {
        return Ok(Ended::Refused(Stage::Rcpt));
    }
    let go_ahead = command(client, "DATA").await?;
    if go_ahead.code != 354 {
        heard(Stage::Data, None, &go_ahead);
        return Ok(Ended::Refused(Stage::Data));
    }
    client
        .write(&data_content(t.message))
        .await
        .map_err(|e| NoReply {
            sent: "(the message)".into(),
            why: e.to_string(),
        })?;
    let end = reply(client, "(the message)").await?;
    heard(Stage::Data, None, &end);
    if !positive(&end) {
        return Ok(Ended::Refused(Stage::Data));
    }
    // "250 2.0.0 Ok: queued as ID"
    Ok(Ended::Accepted(
        end.lines
            .last()
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|id| id.parse::<QueueId>().ok()),
    ))
}

/// A 2xx reply: the transaction goes on.
fn positive(reply: &Reply) -> bool {
    (200..300).contains(&reply.code)
}

/// An address as written in a command: in angle brackets unless it has them.
pub fn path(address: &str) -> String {
    if address.starts_with('<') {
        address.to_owned()
    } else {
        format!("<{address}>")
    }
}

async fn command<S>(client: &mut Client<S>, line: &str) -> Result<Reply, NoReply>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    client
        .write(format!("{line}\r\n").as_bytes())
        .await
        .map_err(|e| NoReply {
            sent: line.to_owned(),
            why: e.to_string(),
        })?;
    reply(client, line).await
}

async fn reply<S>(client: &mut Client<S>, sent: &str) -> Result<Reply, NoReply>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    client.reply().await.map_err(|why| NoReply {
        sent: sent.to_owned(),
        why,
    })
}
