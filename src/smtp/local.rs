//! Local submissions enter the pipeline here: the daemon's pickup hands over a
//! cleaned-up message and its submitter, and a real [`Session`] takes it on the
//! built-in listener [`LISTENER`] over an in-memory pipe, so a message from
//! `sendmail` goes through the same stages (mail, rcpt, data; route at delivery), the
//! same spool commit and the same logging as one from the network. Rules see the
//! listener's name and hooks `ctx.local_user` and `ctx.uid`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::transaction::{Ended, NoReply, Transaction, converse};
use super::transcript::Client;
use super::{Core, Listen, Session, Settings};
use crate::config::Listener;
use crate::policy::Stage;
use crate::policy::local::Submitter;
use crate::queue::QueueId;

/// The name of the built-in listener local submissions arrive on (Postfix's pickup
/// service): `listener="sendmail"` in a rule, `ctx.listener` in a hook.
pub const LISTENER: &str = crate::policy::local::LISTENER;

/// How long one local submission may wait for each reply of the session.
const TIMEOUT: Duration = Duration::from_secs(300);

/// [`Injected::failed`] when the session refused every recipient.
pub const EVERY_REFUSED: &str = "every recipient was refused";

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

/// The built-in listener's settings: no TLS, no AUTH; the milters of
/// `local-submission { milters }`.
pub fn listen(settings: Arc<Settings>, config: &crate::config::Config) -> Listen {
    let listener = Listener::plain(
        LISTENER,
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
    );
    // the pickup sends CRLF only (cleanup made it so)
    let mut listen = Listen::new(
        settings,
        &listener,
        None,
        None,
        None,
        super::NormalizeLf::Nobody,
    );
    if let Some(local) = &config.local_submission {
        listen.milters = local
            .milters
            .iter()
            .filter_map(|m| config.milters.get(m).cloned())
            .collect();
    }
    listen
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

/// The pickup's side of the session: the transaction, and what the session said.
async fn play(client: tokio::io::DuplexStream, m: &Injection<'_>) -> Result<Injected, NoReply> {
    let mut client = Client::new(client, TIMEOUT);
    let mut out = Injected::default();
    let mut last = None;
    let ended = converse(
        &mut client,
        &Transaction {
            helo: "localhost",
            sender: m.sender,
            recipients: m.recipients,
            message: m.message,
            size: true,
            body_8bit: m.body_8bit,
            smtputf8: m.smtputf8,
        },
        |stage, rcpt, reply| match (stage, rcpt) {
            (Stage::Rcpt, Some(rcpt)) if reply.code >= 300 => {
                out.refused.push((rcpt.to_owned(), reply.text()));
            }
            _ => last = Some(reply.text()),
        },
    )
    .await?;
    match ended {
        Ended::Accepted(_) => out.queued = true,
        Ended::Refused(Stage::Rcpt) => out.failed = Some(EVERY_REFUSED.to_owned()),
        Ended::Refused(_) => out.failed = last,
    }
    let _ = client.write(b"QUIT\r\n").await;
    Ok(out)
}
