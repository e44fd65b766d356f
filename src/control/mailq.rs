//! `mailq` (`sendmail -bp`, `mtactl queue list --format postfix`): the queue in the
//! format of Postfix's `mailq`/`postqueue -p`, which scripts and monitoring plugins
//! parse. Read from the spool directly ([`crate::queue::scan`], the same source as
//! `mtactl queue list`): no lock, nothing written, so it works whether mtad runs or not.
//!
//! The layout is Postfix's `showq_compat` with long queue ids (`enable_long_queue_ids =
//! yes`), the one Postfix itself prints when ids are as long as ours (16 characters):
//!
//! ```text
//! ----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------
//! 0000000065A1B2C3*     1234 Sat Dec  5 04:46:25 alice@example.com
//!                                                bob@example.net
//!
//! 0000000065A1B2C4      5678 Sat Dec  5 04:47:01 MAILER-DAEMON
//!        (connect to mx.example.net[192.0.2.1]:25: Connection refused)
//!                                                carol@example.net
//!
//! -- 6 Kbytes in 2 Requests.
//! ```
//!
//! `*` after the id: active (waiting for its first attempt, or being delivered now);
//! `!`: on hold; nothing: deferred. Only recipients still to be delivered are listed;
//! a reason in parentheses (right-aligned to column 78, as Postfix does) precedes the
//! recipients it applies to, those with a reason first. The arrival time is the local
//! time (`TZ`), as Postfix's `asctime(localtime())`. The sizes add up to the `Kbytes`
//! of the last line (integer division by 1024); an empty queue prints `Mail queue is
//! empty`.

use std::io::{self, Write};
use std::path::Path;

use chrono::{DateTime, Local, TimeZone};

use super::sysexits::{EX_CONFIG, EX_OK, EX_UNAVAILABLE};
use crate::config::{Config, render};
use crate::queue::{self, MessageState, QueuedMessage};

/// How the null sender is shown (Postfix's `empty_address_recipient`), in the listing
/// and in the JSON lines alike.
const NULL_SENDER: &str = "MAILER-DAEMON";
/// The id column: 16 hex digits and the status character (Postfix's long-id layout).
const ID_WIDTH: usize = 17;
/// Postfix's `L_HEADINGS`, in its `L_STRING_FORMAT` (`%-17s %8s %-19s %s`).
const HEADING: &str = "----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------";
/// The closing parenthesis of a reason line ends in column 78 (76 + the parentheses).
const REASON_WIDTH: usize = 76;

/// The Postfix queue an entry is listed as in: it decides the marker after the queue id
/// and `postqueue -j`'s `queue_name`. In the order showq lists the queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Queue {
    /// Submitted with `sendmail`, not picked up yet (`maildrop`, no marker).
    Maildrop,
    /// `*`: in Postfix's active queue (here: not tried yet, or being delivered now).
    Active,
    /// No marker: deferred, waiting for its retry.
    Deferred,
    /// `!`: on hold.
    Hold,
}

impl Queue {
    fn suffix(self) -> &'static str {
        match self {
            Queue::Active => "*",
            Queue::Hold => "!",
            Queue::Maildrop | Queue::Deferred => "",
        }
    }

    /// The queue's name, as `postqueue -j` writes it.
    pub fn name(self) -> &'static str {
        match self {
            Queue::Maildrop => "maildrop",
            Queue::Active => "active",
            Queue::Deferred => "deferred",
            Queue::Hold => "hold",
        }
    }
}

impl From<MessageState> for Queue {
    fn from(state: MessageState) -> Queue {
        match state {
            MessageState::Active => Queue::Active,
            MessageState::Deferred => Queue::Deferred,
            MessageState::Hold => Queue::Hold,
        }
    }
}

/// A recipient still to be delivered, with the reason of its last failure (`""`: none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub address: String,
    pub reason: String,
}

/// One message as `mailq` shows it. Built from the spool by [`from_spool`]; other
/// sources (a maildrop of submissions not picked up yet) build their own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub queue: Queue,
    /// Bytes, as stored.
    pub size: u64,
    /// Unix seconds.
    pub arrival: i64,
    /// `""` is the null sender, shown as `MAILER-DAEMON` (Postfix's
    /// `empty_address_recipient`).
    pub sender: String,
    pub recipients: Vec<Pending>,
}

/// The spool's messages as `mailq` entries, in Postfix's order of queues (active, then
/// deferred, then held; by arrival within each).
pub fn from_spool(messages: &[QueuedMessage]) -> Vec<Entry> {
    let mut entries: Vec<Entry> = messages
        .iter()
        .map(|m| {
            let pending = m
                .envelope
                .recipients
                .iter()
                .zip(&m.rcpt_status)
                .filter(|(_, s)| s.pending());
            // Postfix lists the recipients of the defer log (with reasons) first.
            let (mut recipients, without): (Vec<Pending>, Vec<Pending>) = pending
                .map(|(rcpt, s)| Pending {
                    address: rcpt.clone(),
                    reason: s.reason().to_owned(),
                })
                .partition(|p| !p.reason.is_empty());
            recipients.extend(without);
            Entry {
                id: m.id.to_string(),
                queue: m.state().into(),
                size: m.size,
                arrival: i64::try_from(m.arrival_ms / 1000).unwrap_or(i64::MAX),
                sender: m.envelope.sender.clone(),
                recipients,
            }
        })
        .collect();
    // stable: the spool lists by id, that is by arrival
    entries.sort_by_key(|e| e.queue);
    entries
}

/// Writes the listing in Postfix's format (see the module docs), times in local time.
pub fn render_listing(entries: &[Entry], out: &mut impl Write) -> io::Result<()> {
    write_listing(entries, &Local, out)
}

fn write_listing<Tz: TimeZone>(entries: &[Entry], tz: &Tz, out: &mut impl Write) -> io::Result<()>
where
    Tz::Offset: std::fmt::Display,
{
    if entries.is_empty() {
        return writeln!(out, "Mail queue is empty");
    }
    writeln!(out, "{HEADING}")?;
    let mut total: u64 = 0;
    for (n, e) in entries.iter().enumerate() {
        if n > 0 {
            writeln!(out)?;
        }
        total = total.saturating_add(e.size);
        let sender = if e.sender.is_empty() {
            NULL_SENDER
        } else {
            &e.sender
        };
        writeln!(
            out,
            "{:<ID_WIDTH$} {:>8} {:.19} {}",
            format!("{}{}", e.id, e.queue.suffix()),
            e.size,
            asctime(e.arrival, tz),
            printable(sender)
        )?;
        let mut last_reason = "";
        for r in &e.recipients {
            if r.reason != last_reason {
                last_reason = &r.reason;
                let shown = if r.reason.is_empty() {
                    "reason unavailable".to_owned()
                } else {
                    printable(&r.reason)
                };
                let pad = REASON_WIDTH.saturating_sub(shown.len());
                writeln!(out, "{:pad$}({shown})", "")?;
            }
            writeln!(
                out,
                "{:ID_WIDTH$} {:8} {:19} {}",
                "",
                "",
                "",
                printable(&r.address)
            )?;
        }
    }
    writeln!(
        out,
        "\n-- {} Kbytes in {} Request{}.",
        total / 1024,
        entries.len(),
        if entries.len() == 1 { "" } else { "s" }
    )
}

/// Writes one JSON object per line, as `postqueue -j` does, with its field names
/// (so monitoring written for Postfix reads ours): `queue_name`, `queue_id`,
/// `arrival_time` (unix seconds), `message_size`, `forced_expire` (always `false`:
/// mtad has no `postsuper -e`), `sender` (`MAILER-DAEMON` for the null sender, as
/// Postfix writes it), `recipients`
/// (`address`, and `delay_reason` only when there is one). Spacing as Postfix's.
pub fn render_json_lines(entries: &[Entry], out: &mut impl Write) -> io::Result<()> {
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    for e in entries {
        let recipients: Vec<String> = e
            .recipients
            .iter()
            .map(|r| {
                if r.reason.is_empty() {
                    format!("{{\"address\": {}}}", quote(&r.address))
                } else {
                    format!(
                        "{{\"address\": {}, \"delay_reason\": {}}}",
                        quote(&r.address),
                        quote(&r.reason)
                    )
                }
            })
            .collect();
        writeln!(
            out,
            "{{\"queue_name\": {}, \"queue_id\": {}, \"arrival_time\": {}, \"message_size\": {}, \"forced_expire\": false, \"sender\": {}, \"recipients\": [{}]}}",
            quote(e.queue.name()),
            quote(&e.id),
            e.arrival,
            e.size,
            quote(if e.sender.is_empty() {
                NULL_SENDER
            } else {
                &e.sender
            }),
            recipients.join(", ")
        )?;
    }
    Ok(())
}

/// `asctime(localtime(t))` without its newline: `Sat Dec  5 04:46:25 2026`.
fn asctime<Tz: TimeZone>(unix_secs: i64, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    DateTime::from_timestamp(unix_secs, 0)
        .map(|t| {
            t.with_timezone(tz)
                .format("%a %b %e %H:%M:%S %Y")
                .to_string()
        })
        .unwrap_or_else(|| "??".to_owned())
}

/// Postfix's `printable(s, '?')`: control characters (from a client or a remote
/// reply) become `?`, so no entry can forge lines of the listing.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Why `mailq` printed no listing, and the exit status that goes with it.
#[derive(Debug, thiserror::Error)]
pub enum MailqError {
    /// The configuration has errors (rendered, with file:line:col).
    #[error("{0}")]
    Config(String),
    /// The spool cannot be read.
    #[error(
        "mailq: cannot read the queue: {0}{hint}",
        hint = if matches!(.0, queue::SpoolError::Io { source, .. }
            if source.kind() == io::ErrorKind::PermissionDenied)
        {
            " (mailq reads mtad's spool directly: run it as root or as mtad's user)"
        } else {
            ""
        }
    )]
    Spool(#[from] queue::SpoolError),
}

impl MailqError {
    /// sysexits.h status: [`EX_CONFIG`] or [`EX_UNAVAILABLE`] (postqueue's when the
    /// queue cannot be read).
    pub fn exit_code(&self) -> u8 {
        match self {
            MailqError::Config(_) => EX_CONFIG,
            MailqError::Spool(_) => EX_UNAVAILABLE,
        }
    }
}

/// The entries of the queue named by `config`.
pub fn entries(config: &Config) -> Result<Vec<Entry>, MailqError> {
    let messages = queue::scan(&config.server.spool)?;
    Ok(from_spool(&messages))
}

/// `mailq`: loads the configuration at `config_path`, prints the listing of the
/// messages in `states` (every one when empty) on standard output, as `postqueue -p`,
/// or with `json` as `postqueue -j`, and returns the exit status (sysexits.h); an error
/// goes to standard error.
pub fn mailq(config_path: &Path, states: &[MessageState], json: bool) -> u8 {
    let listed = Config::load(config_path)
        .map_err(|errors| MailqError::Config(render(&errors)))
        .and_then(|config| entries(&config));
    match listed {
        Ok(mut entries) => {
            entries
                .retain(|e| states.is_empty() || states.iter().any(|s| Queue::from(*s) == e.queue));
            let mut out = super::output::stdout();
            // the writer ends the process itself on a closed pipe or a full disk
            let _ = if json {
                render_json_lines(&entries, &mut out)
            } else {
                render_listing(&entries, &mut out)
            }
            .and_then(|()| out.flush());
            EX_OK
        }
        Err(e) => {
            let text = e.to_string();
            let newline = if text.ends_with('\n') { "" } else { "\n" };
            super::output::error(format_args!("{text}{newline}"));
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{BodyLocation, Envelope, QueueId, RcptState, RcptStatus};

    fn entry(id: &str, queue: Queue, size: u64, sender: &str, rcpts: &[(&str, &str)]) -> Entry {
        Entry {
            id: id.to_owned(),
            queue,
            size,
            arrival: 1_764_909_985, // Fri Dec  5 04:46:25 2025 UTC
            sender: sender.to_owned(),
            recipients: rcpts
                .iter()
                .map(|(a, r)| Pending {
                    address: (*a).to_owned(),
                    reason: (*r).to_owned(),
                })
                .collect(),
        }
    }

    fn listing(entries: &[Entry]) -> String {
        let mut out = Vec::new();
        write_listing(entries, &chrono::Utc, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn empty_queue() {
        assert_eq!(listing(&[]), "Mail queue is empty\n");
    }

    #[test]
    fn columns_marks_reasons_and_trailer() {
        let text = listing(&[
            entry(
                "0069326D71000001",
                Queue::Active,
                1234,
                "alice@example.com",
                &[("bob@example.net", "")],
            ),
            entry(
                "0069326D71000002",
                Queue::Deferred,
                2048,
                "",
                &[
                    ("carol@example.net", "connect to mx[192.0.2.1]:25: refused"),
                    ("dave@example.net", "connect to mx[192.0.2.1]:25: refused"),
                    ("erin@example.net", ""),
                ],
            ),
            entry(
                "0069326D71000003",
                Queue::Hold,
                10,
                "x\r\ny@example.com",
                &[("f@example.net", "")],
            ),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------"
        );
        assert_eq!(
            lines[1],
            "0069326D71000001*     1234 Fri Dec  5 04:46:25 alice@example.com"
        );
        assert_eq!(lines[2], format!("{}bob@example.net", " ".repeat(47)));
        assert_eq!(lines[3], "");
        assert!(lines[4].starts_with("0069326D71000002      2048 "));
        assert!(lines[4].ends_with(" MAILER-DAEMON"));
        let reason = "(connect to mx[192.0.2.1]:25: refused)";
        assert_eq!(
            lines[5],
            format!("{}{reason}", " ".repeat(78 - reason.len()))
        );
        assert_eq!(lines[6], format!("{}carol@example.net", " ".repeat(47)));
        assert_eq!(lines[7], format!("{}dave@example.net", " ".repeat(47)));
        assert_eq!(
            lines[8],
            format!("{}(reason unavailable)", " ".repeat(78 - 20))
        );
        assert_eq!(lines[9], format!("{}erin@example.net", " ".repeat(47)));
        assert!(lines[11].starts_with("0069326D71000003!       10 "));
        assert!(lines[11].ends_with(" x??y@example.com"), "{}", lines[11]);
        assert_eq!(lines[13], "");
        assert_eq!(lines[14], "-- 3 Kbytes in 3 Requests.");
        assert_eq!(lines.len(), 15);
    }

    #[test]
    fn one_request_and_a_long_reason() {
        let long = "x".repeat(100);
        let text = listing(&[entry(
            "0069326D71000001",
            Queue::Deferred,
            1023,
            "a@b",
            &[("c@d", &long)],
        )]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[2], format!("({long})"));
        assert_eq!(lines.last(), Some(&"-- 0 Kbytes in 1 Request."));
    }

    fn status(state: RcptState, attempts: u32, detail: &str) -> RcptStatus {
        RcptStatus {
            state,
            at_ms: 0,
            attempts,
            next_attempt_ms: 0,
            detail: detail.to_owned(),
        }
    }

    fn message(id: u64, held: bool, rcpts: Vec<(&str, RcptStatus)>) -> QueuedMessage {
        QueuedMessage {
            id: QueueId(id),
            arrival_ms: 1_764_909_985_123,
            size: 99,
            envelope: Envelope {
                sender: "a@b".into(),
                recipients: rcpts.iter().map(|(r, _)| (*r).to_owned()).collect(),
                held,
                ..Envelope::default()
            },
            rcpt_status: rcpts.into_iter().map(|(_, s)| s).collect(),
            location: BodyLocation::default(),
        }
    }

    #[test]
    fn spool_states_become_marks_and_pending_recipients() {
        let deferred = status(RcptState::Deferred, 1, "451 try later");
        let messages = vec![
            message(1, true, vec![("held@x", deferred.clone())]),
            message(
                2,
                false,
                vec![
                    ("done@x", status(RcptState::Delivered, 1, "250 ok")),
                    ("fresh@x", status(RcptState::Queued, 0, "")),
                    ("later@x", deferred.clone()),
                    ("gone@x", status(RcptState::Bounced, 1, "550 no")),
                ],
            ),
            // being delivered now: active, showing the reason from before the attempt
            message(3, false, vec![("now@x", deferred.attempt_started(5))]),
            message(4, false, vec![("new@x", status(RcptState::Queued, 0, ""))]),
        ];
        let entries = from_spool(&messages);
        type Summary<'a> = (String, Queue, Vec<(&'a str, &'a str)>);
        let summary: Vec<Summary> = entries
            .iter()
            .map(|e| {
                let r = e
                    .recipients
                    .iter()
                    .map(|p| (p.address.as_str(), p.reason.as_str()))
                    .collect();
                (e.id.clone(), e.queue, r)
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    QueueId(3).to_string(),
                    Queue::Active,
                    vec![("now@x", "451 try later")]
                ),
                (QueueId(4).to_string(), Queue::Active, vec![("new@x", "")]),
                (
                    QueueId(2).to_string(),
                    Queue::Deferred,
                    vec![("later@x", "451 try later"), ("fresh@x", "")]
                ),
                (
                    QueueId(1).to_string(),
                    Queue::Hold,
                    vec![("held@x", "451 try later")]
                ),
            ]
        );
        assert_eq!(entries[0].arrival, 1_764_909_985);
    }
}
