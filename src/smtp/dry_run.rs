//! `mtactl test-policy`'s dry run: the real [`Session`](super::Session), in memory.
//!
//! An envelope (client, listener, HELO, sender, recipients, message) becomes what a
//! client would send: `EHLO`, `MAIL FROM`, one `RCPT TO` per recipient, `DATA` and the
//! message, each sent after the reply to the one before, as long as the session lets
//! the transaction go on. The session answers as the daemon would (it is the daemon's
//! code, with the listener's settings from the configuration), queues what it accepts
//! in a spool of the dry run's own, and records each decision it applies
//! ([`super::Tapped`]). The report is then what the session answered and decided and
//! the message as it was queued; `control::test_policy::dry_run` adds the route stage
//! run on the queued envelope as the scheduler runs it — never a second implementation
//! of any of it.
//!
//! `--tls` and `--auth USER` start the session as if the client had negotiated TLS or
//! logged in; the `authentication` checks answer from the case's DNS fixture; nothing
//! reaches the network. A dry run is not traffic: [`offline`] runs it on a thread of
//! its own whose log goes nowhere and whose metrics are not the process's.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::Tapped;
use super::local::LISTENER;
use super::transaction::{Ended, NoReply, Transaction, converse, path};
use super::transcript::{Client, Memory, MemoryError, Played, Reply, Transcript, start};
use crate::config::Config;
use crate::mailauth::DnsFixture;
use crate::net::tls::TlsInfo;
use crate::policy::local::{Cleaned, LocalMessage, LocalRefusal, Site, Submitter, accept_local};
use crate::policy::{DryEnvelope, DryRunReport, LocalDry, Pipeline, Stage, StageResult};
use crate::queue::{QueueId, QueuedMessage, Spool};

/// How long a dry run waits for each reply of the session.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What `--tls` means: the parameters of a typical TLS 1.3 session.
pub fn as_if_tls() -> TlsInfo {
    TlsInfo {
        protocol: "TLSv1.3".into(),
        cipher: "TLS_AES_256_GCM_SHA384".into(),
    }
}

/// Why a dry run could not run (a refusal is not an error: it is in the report).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DryRunError {
    #[error(transparent)]
    Session(#[from] MemoryError),
    /// A field that would not be one command line (a line break or a NUL in it).
    #[error("{field} holds a line break or a NUL: {value:?}")]
    NotOneLine { field: &'static str, value: String },
    /// The session did not answer a command (it closed, or took too long).
    #[error("the session gave no reply to {sent:?}: {why}")]
    NoReply { sent: String, why: String },
    /// `--local USER` names a user the password database does not know.
    #[error("--local {0}: no such user on this system")]
    NoUser(String),
    #[error("cannot start the dry run: {0}")]
    Setup(String),
}

/// Where dry runs and suites' sessions run: a single-threaded runtime and a spool in a
/// temporary directory, on a thread whose log and metrics are not the process's (see
/// [`offline`]).
pub struct Offline {
    runtime: tokio::runtime::Runtime,
    spool: Spool,
    _dir: tempfile::TempDir,
}

/// Runs `work` on a new thread with an [`Offline`]: nothing it does is logged or
/// counted as traffic (`reload { require-tests }` runs suites inside the daemon, whose
/// log and `/metrics` must stay as they were), and nothing it does reaches the network.
pub fn offline<T: Send>(work: impl FnOnce(&Offline) -> T + Send) -> Result<T, DryRunError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let _quiet =
                tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
            crate::metrics::detach_thread();
            crate::policy::decision_log::detach_thread();
            let dir = tempfile::Builder::new()
                .prefix("mtad-dry-run-")
                .tempdir()
                .map_err(|e| DryRunError::Setup(format!("a spool directory: {e}")))?;
            let spool = super::transcript::open_spool(&dir.path().join("spool"))
                .map_err(|e| DryRunError::Setup(format!("a spool: {e}")))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| DryRunError::Setup(format!("a runtime: {e}")))?;
            Ok(work(&Offline {
                runtime,
                spool,
                _dir: dir,
            }))
        })
        .join()
        .unwrap_or_else(|_| Err(DryRunError::Setup("its thread panicked".into())))
    })
}

impl Offline {
    /// One envelope's session against `pipeline` (compiled from `config`).
    pub fn dry_run(
        &self,
        config: &Config,
        pipeline: &Arc<Pipeline>,
        env: &DryEnvelope,
    ) -> Result<DrySession, DryRunError> {
        self.runtime
            .block_on(dry_run(config, pipeline, self.spool.clone(), env))
    }

    /// A suite's `session { ... }` transcript, played against the real session on
    /// `listener` (empty: the first) from `client`, with the `authentication` checks
    /// answering from `dns`.
    pub fn session(
        &self,
        config: &Config,
        pipeline: &Arc<Pipeline>,
        listener: &str,
        client: IpAddr,
        dns: DnsFixture,
        transcript: &Transcript,
    ) -> Result<Played, MemoryError> {
        let memory = Memory {
            config,
            pipeline: pipeline.clone(),
            listener,
            client: SocketAddr::new(client, 40000),
            dns,
            spool: self.spool.clone(),
            timeout: REPLY_TIMEOUT,
            authenticated: None,
            tls: None,
            local: None,
        };
        self.runtime
            .block_on(super::transcript::in_memory(memory, transcript))
    }
}

/// A dry run's session: the report of every stage up to the end of DATA, and the
/// message as it was queued (its record and its bytes), if it was.
#[derive(Debug)]
pub struct DrySession {
    pub report: DryRunReport,
    pub queued: Option<(QueuedMessage, Vec<u8>)>,
}

/// The session part of the dry run of `env` (see the module's documentation): the
/// route stage is the caller's ([`crate::control::test_policy::dry_run`] runs the
/// scheduler's). Must run inside a tokio runtime; queues into `spool` and takes the
/// message out again.
pub async fn dry_run(
    config: &Config,
    pipeline: &Arc<Pipeline>,
    spool: Spool,
    env: &DryEnvelope,
) -> Result<DrySession, DryRunError> {
    let mut report = DryRunReport::new();
    let (memory, cleaned);
    let t = match &env.local {
        None => {
            let helo = env.helo.as_deref().unwrap_or("client.example");
            one_line("the HELO name", helo)?;
            one_line("the sender", &env.sender)?;
            for r in &env.recipients {
                one_line("a recipient", r)?;
            }
            let client_ip = env.client_ip.unwrap_or(IpAddr::from([127, 0, 0, 1]));
            memory = Memory {
                config,
                pipeline: pipeline.clone(),
                listener: &env.listener,
                client: SocketAddr::new(client_ip, 40000),
                dns: env.dns.clone(),
                spool: spool.clone(),
                timeout: REPLY_TIMEOUT,
                authenticated: env.auth_user.clone(),
                tls: env.tls.then(as_if_tls),
                local: None,
            };
            let message = env.message.as_deref().unwrap_or_default();
            Transaction {
                helo,
                sender: &env.sender,
                recipients: &env.recipients,
                message,
                size: env.message.is_some(),
                body_8bit: !message.is_ascii(),
                smtputf8: !env.sender.is_ascii() || env.recipients.iter().any(|r| !r.is_ascii()),
            }
        }
        Some(local) => {
            let id = spool.new_id();
            let (who, accepted) = local_submission(config, pipeline, env, local, id)?;
            cleaned = match accepted {
                Ok(c) => c,
                Err(refusal) => {
                    let by = match refusal {
                        LocalRefusal::Submit(_) => "local-submission",
                        LocalRefusal::Cleanup(_) => "cleanup",
                    };
                    report.refused_at_submission(by, format!("sendmail: {refusal}"));
                    return Ok(DrySession {
                        report,
                        queued: None,
                    });
                }
            };
            report.cleanup = cleaned.edits.clone();
            memory = Memory {
                config,
                pipeline: pipeline.clone(),
                listener: LISTENER,
                client: SocketAddr::new(IpAddr::from([127, 0, 0, 1]), 0),
                dns: env.dns.clone(),
                spool: spool.clone(),
                timeout: REPLY_TIMEOUT,
                authenticated: None,
                tls: None,
                local: Some((who, id)),
            };
            // what the pickup sends ([`super::local::inject`])
            Transaction {
                helo: "localhost",
                sender: &cleaned.sender,
                recipients: &cleaned.recipients,
                message: &cleaned.message,
                size: true,
                body_8bit: cleaned.body_8bit,
                smtputf8: cleaned.smtputf8,
            }
        }
    };
    let started = start(memory)?;
    let core = started.core.clone();
    let mut client = Client::new(started.client, started.timeout);
    if started.implicit {
        client.handshake().await.map_err(|e| DryRunError::NoReply {
            sent: "(a TLS handshake)".into(),
            why: e.to_string(),
        })?;
    }
    let mut heard = Heard {
        core: &core,
        pipeline,
        report,
        filter_by: None,
    };
    let ended = converse(&mut client, &t, |stage, rcpt, reply| {
        heard.stage(stage, rcpt, reply)
    })
    .await?;
    let _ = client.write(b"QUIT\r\n").await;
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(5), started.task).await;
    drop(started.stop);
    let (mut report, filter_by) = (heard.report, heard.filter_by);
    let id = match ended {
        Ended::Accepted(Some(id)) => id,
        Ended::Accepted(None) => {
            return Ok(DrySession {
                report,
                queued: None,
            });
        }
        Ended::Refused(stage) => {
            report.stopped_after(stage);
            return Ok(DrySession {
                report,
                queued: None,
            });
        }
    };
    // what the session queued: the message as the scheduler will find it
    let Some(msg) = spool.get(id) else {
        report.outcome = "discarded";
        return Ok(DrySession {
            report,
            queued: None,
        });
    };
    let body = spool
        .read_body(id)
        .map_err(|e| DryRunError::Setup(format!("reading back the queued message: {e}")))?;
    let _ = spool.remove(id).await;
    report.outcome = if msg.envelope.held { "held" } else { "queued" };
    if env.message.is_some() {
        report.headers = crate::policy::parse_headers(&body)
            .0
            .iter()
            .map(|h| h.unfolded().into_owned())
            .collect();
    }
    if let Some(name) = &msg.envelope.filter
        && let Some(filter) = pipeline.content_filter(name)
    {
        let by = match filter_by {
            Some(rule) => {
                report.fired.push(rule.to_string());
                rule.to_string()
            }
            None => "the listener or server default".to_owned(),
        };
        report.filter = Some(format!("{name} {} ({by})", filter.transport));
    }
    Ok(DrySession {
        report,
        queued: Some((msg, body)),
    })
}

/// What the pickup would make of `local`'s submission, with `id` as the queue id:
/// the submitter, and [`accept_local`]'s answer.
fn local_submission(
    config: &Config,
    pipeline: &Pipeline,
    env: &DryEnvelope,
    local: &LocalDry,
    id: QueueId,
) -> Result<(Submitter, Result<Cleaned, LocalRefusal>), DryRunError> {
    let user = nix::unistd::User::from_name(&local.user)
        .ok()
        .flatten()
        .ok_or_else(|| DryRunError::NoUser(local.user.clone()))?;
    let who = Submitter::from_uid(user.uid.as_raw());
    let id_text = id.to_string();
    let accepted = accept_local(
        pipeline.local_submission(),
        &LocalMessage {
            submitter: &who,
            sender: local.sender.as_deref(),
            recipients: &env.recipients,
            extract: local.extract,
            full_name: None,
            body_8bit: None,
            smtputf8: false,
            message: env.message.as_deref().unwrap_or_default(),
        },
        &Site {
            origin: pipeline.origin(),
            hostname: &config.server.hostname,
            queue_id: &id_text,
            now: chrono::Local::now().fixed_offset(),
        },
    );
    Ok((who, accepted))
}

/// `value` as one command line's part, or why not.
fn one_line(field: &'static str, value: &str) -> Result<(), DryRunError> {
    if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(DryRunError::NotOneLine {
            field,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// What the dry run makes of the session's replies.
struct Heard<'a> {
    core: &'a super::Core,
    pipeline: &'a Pipeline,
    report: DryRunReport,
    /// The rule that chose the message's content filter, if one did.
    filter_by: Option<crate::policy::Origin>,
}

impl Heard<'_> {
    /// Reports a stage from the reply the session gave and what it decided meanwhile.
    fn stage(&mut self, stage: Stage, rcpt: Option<&str>, reply: &Reply) {
        let mut decision = None;
        for t in self.core.drain_tap() {
            match t {
                Tapped::Decision {
                    stage: s,
                    decision: d,
                } if s == stage => decision = Some(*d),
                Tapped::Auth { results, data } => self.report.set_auth(&results, data),
                // reported with the filter, once the message is queued
                Tapped::Filter { by, .. } => self.filter_by = by,
                Tapped::Milter(line) => self.report.milters.push(line),
                Tapped::Decision { .. } => {}
            }
        }
        // the recipient as the session reads it (canonical form)
        let rcpt = rcpt.map(|r| match self.pipeline.recipient(&path(r)) {
            Ok(taken) => taken.address,
            Err(_) => r.to_owned(),
        });
        let text = reply.text();
        let result = StageResult::of(stage, rcpt.as_deref(), decision.as_ref(), Some(&text));
        self.report.push(result, decision.as_ref());
    }
}

impl From<NoReply> for DryRunError {
    fn from(e: NoReply) -> Self {
        DryRunError::NoReply {
            sent: e.sent,
            why: e.why,
        }
    }
}
