//! Delivery status notifications (RFC 3464): bounces and delay warnings.
//!
//! [`build`] is a pure function: from a [`DsnRequest`] it makes the bytes of one
//! `multipart/report; report-type=delivery-status` message (docs/bounces.md), with
//! three parts: a human-readable explanation, the machine-readable
//! `message/delivery-status`, and the original message's header block
//! (`text/rfc822-headers`; the body is never returned).
//!
//! Everything that came from the outside (addresses, remote replies, remote host
//! names) is cleaned before it is written: control characters (CR and LF included)
//! become spaces or are dropped, non-ASCII becomes `?`, and lengths are capped, so no
//! input can start a header line or a MIME part. The output is 7-bit ASCII with CRLF
//! line endings throughout, the returned original headers included (their 8-bit
//! bytes are replaced with `?`, see [`header_block`]), so it can be relayed to any
//! server without 8BITMIME or SMTPUTF8.

use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// The longest address we write (RFC 5321: 64 + 1 + 255 octets, with room to spare).
pub const MAX_ADDRESS: usize = 320;
/// The longest remote diagnostic we write, in bytes.
pub const MAX_DIAGNOSTIC: usize = 512;
/// The longest host name we write.
pub const MAX_HOST: usize = 255;
/// The most bytes of the original message's header block that are returned.
pub const MAX_RETURNED_HEADERS: usize = 64 * 1024;

/// Which notice: the message was given up on, or is still being retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnKind {
    /// A bounce: delivery failed for good (`Action: failed`).
    Failure,
    /// A delay warning: delivery is still being retried (`Action: delayed`).
    Delay,
}

/// One recipient the notice reports on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsnRecipient {
    /// The recipient as received in RCPT TO (`Original-Recipient`, written only when it
    /// differs from `final_rcpt`).
    pub original: String,
    /// The recipient after alias expansion, the one delivery was tried to
    /// (`Final-Recipient`).
    pub final_rcpt: String,
    /// Enhanced status (RFC 3463), e.g. `[5, 1, 1]`.
    pub status: [u8; 3],
    /// The remote reply, e.g. `550 5.1.1 <u@x>: no such user` (`Diagnostic-Code: smtp;`).
    pub diagnostic: Option<String>,
    /// The host that gave the reply (`Remote-MTA: dns;`).
    pub remote_mta: Option<String>,
    /// When delivery to this recipient was last tried, in ms since the Unix epoch.
    pub last_attempt_ms: Option<u64>,
    /// Until when delivery will be retried (written for [`DsnKind::Delay`] only).
    pub will_retry_until_ms: Option<u64>,
}

/// Everything [`build`] needs; the scheduler fills it from the queued message.
#[derive(Debug, Clone)]
pub struct DsnRequest<'a> {
    pub kind: DsnKind,
    /// Our host name (`Reporting-MTA`, the From address's domain, the Message-ID's).
    pub reporting_mta: &'a str,
    /// The queue id of the original message (`X-Mtad-Queue-ID`).
    pub queue_id: &'a str,
    /// When the original message was received, in ms since the Unix epoch.
    pub arrival_ms: u64,
    /// Where the notice goes (the To header): the original sender, or the postmaster
    /// for a bounce of a bounce. The envelope is the caller's business.
    pub to: &'a str,
    /// The original envelope sender, `""` for the null sender.
    pub original_sender: &'a str,
    pub recipients: &'a [DsnRecipient],
    /// The original message as queued; only its header block is returned.
    pub original: &'a [u8],
    /// The time of the notice (Date, Message-ID), in ms since the Unix epoch.
    pub now_ms: u64,
}

/// Builds the notice: a complete message (headers and body), 7-bit, every line
/// ending CRLF. Never panics; the output grows linearly with the number of
/// recipients and is otherwise bounded.
pub fn build(req: &DsnRequest) -> Vec<u8> {
    let mta = match clean_host(req.reporting_mta) {
        host if host.is_empty() => "localhost".to_string(),
        host => host,
    };
    let queue_id = clean_token(req.queue_id);

    let parts = [
        (
            "Notification",
            "text/plain; charset=us-ascii",
            notification_text(req, &mta, &queue_id),
        ),
        (
            "Delivery report",
            "message/delivery-status",
            delivery_status(req, &mta, &queue_id),
        ),
        (
            "Undelivered Message Headers",
            "text/rfc822-headers",
            header_block(req.original),
        ),
    ];
    let boundary = pick_boundary(&queue_id, &mta, req.now_ms, |b| {
        parts
            .iter()
            .all(|(_, _, body)| !contains(body, b.as_bytes()))
    });

    let mut out = Vec::new();
    let to = clean(req.to, MAX_ADDRESS).replace(['<', '>'], "?");
    let to = if to.is_empty() {
        "undisclosed-recipients:;".to_string()
    } else {
        format!("<{to}>")
    };
    let subject = match req.kind {
        DsnKind::Failure => "Undelivered Mail Returned to Sender",
        DsnKind::Delay => "Delayed Mail (still being retried)",
    };
    let head = [
        format!("From: Mail Delivery System <MAILER-DAEMON@{mta}>"),
        format!("To: {to}"),
        format!("Subject: {subject}"),
        format!("Date: {}", date(req.now_ms)),
        format!(
            "Message-ID: <{}@{mta}>",
            message_id_left(&queue_id, req.now_ms)
        ),
        "Auto-Submitted: auto-replied".to_string(),
        "MIME-Version: 1.0".to_string(),
        "Content-Type: multipart/report; report-type=delivery-status;".to_string(),
        format!("\tboundary=\"{boundary}\""),
        "Content-Transfer-Encoding: 7bit".to_string(),
        String::new(),
        "This is a MIME-encapsulated message.".to_string(),
        String::new(),
    ];
    for line in head {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (description, content_type, body) in &parts {
        let part_head = format!(
            "--{boundary}\r\nContent-Description: {description}\r\n\
             Content-Type: {content_type}\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
        );
        out.extend_from_slice(part_head.as_bytes());
        out.extend_from_slice(body);
        // the CRLF before a boundary belongs to the boundary (RFC 2046 §5.1.1)
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// The human-readable part, in the spirit of Postfix's bounce text.
fn notification_text(req: &DsnRequest, mta: &str, queue_id: &str) -> Vec<u8> {
    let sender = match clean(req.original_sender, MAX_ADDRESS) {
        s if s.is_empty() => "<> (the null sender)".to_string(),
        s => format!("<{s}>"),
    };
    let mut lines: Vec<String> = vec![
        format!("This is the mail system at host {mta}."),
        String::new(),
    ];
    let intro = match req.kind {
        DsnKind::Failure => {
            "Your message could not be delivered to one or more of its recipients. \
             The errors below are permanent, or delivery was tried for too long, so \
             the mail system has given up on them and will not try again."
        }
        DsnKind::Delay => {
            "This is a warning only: you do not need to send your message again. \
             It could not be delivered yet to the recipients below, and the mail \
             system is still trying. You will be told if it gives up."
        }
    };
    lines.extend(wrap(intro, 72, ""));
    lines.push(String::new());
    let about = format!(
        "The message was sent by {sender} and received on {} (queue id {queue_id}). \
         Its header lines are attached below; its body is not.",
        date(req.arrival_ms)
    );
    lines.extend(wrap(&about, 72, ""));
    lines.push(String::new());
    lines.push(format!(
        "For help, write to postmaster@{mta} and include this notice."
    ));
    lines.push(String::new());
    lines.push("                   The mail system".to_string());
    for r in req.recipients {
        lines.push(String::new());
        let final_rcpt = clean(&r.final_rcpt, MAX_ADDRESS);
        let original = clean(&r.original, MAX_ADDRESS);
        let mut line = format!("<{final_rcpt}>");
        if !original.is_empty() && original != final_rcpt {
            let _ = write!(line, " (expanded from <{original}>)");
        }
        line.push(':');
        let diagnostic = r.diagnostic.as_deref().map(|d| clean(d, MAX_DIAGNOSTIC));
        let remote = r.remote_mta.as_deref().map(clean_host);
        match (remote, diagnostic) {
            (Some(host), Some(d)) if !host.is_empty() && !d.is_empty() => {
                let _ = write!(line, " host {host} said: {d}");
            }
            (_, Some(d)) if !d.is_empty() => {
                let _ = write!(line, " {d}");
            }
            _ => {
                let _ = write!(line, " delivery status {}", status(r.status));
            }
        }
        if req.kind == DsnKind::Delay
            && let Some(until) = r.will_retry_until_ms
        {
            let _ = write!(line, " (will be retried until {})", date(until));
        }
        lines.extend(wrap(&line, 76, "    "));
    }
    join_crlf(lines)
}

/// The `message/delivery-status` part: the per-message fields, then one block per
/// recipient, blank-line separated. Long fields are folded at spaces.
fn delivery_status(req: &DsnRequest, mta: &str, queue_id: &str) -> Vec<u8> {
    let mut lines = vec![
        format!("Reporting-MTA: dns; {mta}"),
        format!("X-Mtad-Queue-ID: {queue_id}"),
    ];
    let sender = clean(req.original_sender, MAX_ADDRESS);
    if !sender.is_empty() {
        lines.push(format!("X-Mtad-Sender: rfc822; {sender}"));
    }
    lines.push(format!("Arrival-Date: {}", date(req.arrival_ms)));
    let action = match req.kind {
        DsnKind::Failure => "failed",
        DsnKind::Delay => "delayed",
    };
    for r in req.recipients {
        lines.push(String::new());
        let final_rcpt = clean(&r.final_rcpt, MAX_ADDRESS);
        let original = clean(&r.original, MAX_ADDRESS);
        lines.push(format!("Final-Recipient: rfc822; {final_rcpt}"));
        if !original.is_empty() && original != final_rcpt {
            lines.push(format!("Original-Recipient: rfc822; {original}"));
        }
        lines.push(format!("Action: {action}"));
        lines.push(format!("Status: {}", status(r.status)));
        if let Some(host) = r.remote_mta.as_deref().map(clean_host)
            && !host.is_empty()
        {
            lines.push(format!("Remote-MTA: dns; {host}"));
        }
        if let Some(d) = r.diagnostic.as_deref().map(|d| clean(d, MAX_DIAGNOSTIC))
            && !d.is_empty()
        {
            lines.extend(wrap(&format!("Diagnostic-Code: smtp; {d}"), 78, " "));
        }
        if let Some(t) = r.last_attempt_ms {
            lines.push(format!("Last-Attempt-Date: {}", date(t)));
        }
        if req.kind == DsnKind::Delay
            && let Some(t) = r.will_retry_until_ms
        {
            lines.push(format!("Will-Retry-Until: {}", date(t)));
        }
    }
    join_crlf(lines)
}

/// The header block of `message`, for the `text/rfc822-headers` part: the lines up to
/// the first empty line, or up to the first line that is neither a header nor a
/// continuation (as a MIME parser would read it), or all of the message if neither
/// comes. At most [`MAX_RETURNED_HEADERS`] bytes are looked at; the block is cut at the
/// last whole line within them. Line endings become CRLF (LF-only and CRLF input both
/// work) and the result ends without a line ending. Bytes other than printable ASCII
/// and tab (8-bit, NUL, bare CR, other controls) become `?`: the part stays 7-bit, so
/// the notice never needs 8BITMIME, at the cost of readable raw UTF-8 in the returned
/// headers (RFC 2047 encoded words are ASCII and come through intact).
pub fn header_block(message: &[u8]) -> Vec<u8> {
    let window = &message[..message.len().min(MAX_RETURNED_HEADERS)];
    let truncated = window.len() < message.len();
    let mut out = Vec::with_capacity(window.len());
    let mut pos = 0;
    let mut in_header = false;
    while pos < window.len() {
        let (line, next) = match memchr::memchr(b'\n', &window[pos..]) {
            Some(i) => (&window[pos..pos + i], pos + i + 1),
            // a partial line at the cut is dropped; the last line of a short message is kept
            None if truncated => break,
            None => (&window[pos..], window.len()),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let is_continuation = matches!(line.first(), Some(b' ' | b'\t'));
        let is_header = match memchr::memchr(b':', line) {
            Some(colon) => colon > 0 && line[..colon].iter().all(|b| b.is_ascii_graphic()),
            None => false,
        };
        if line.is_empty() || !(is_header || (is_continuation && in_header)) {
            break;
        }
        in_header = true;
        if !out.is_empty() {
            out.extend_from_slice(b"\r\n");
        }
        out.extend(line.iter().map(|&b| match b {
            b'\t' | b' '..=b'~' => b,
            _ => b'?',
        }));
        pos = next;
    }
    out
}

/// Makes `text` safe for one header or text line: CR, LF and tab become a space, other
/// control characters are dropped, non-ASCII becomes `?`, spaces at either end are
/// trimmed, and the result is at most `max` bytes.
fn clean(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        if out.len() >= max {
            break;
        }
        match c {
            ' '..='~' => out.push(c),
            '\t' | '\r' | '\n' => out.push(' '),
            c if c.is_control() => {}
            _ => out.push('?'),
        }
    }
    out.trim().to_string()
}

/// A host name: [`clean`], and spaces become `?` (a host name has none).
fn clean_host(host: &str) -> String {
    clean(host, MAX_HOST).replace(' ', "?")
}

/// A token for the Message-ID and the boundary: letters, digits, `.`, `-` and `_`,
/// at most 64 of them; `unknown` when nothing is left.
fn clean_token(text: &str) -> String {
    let token: String = text
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(64)
        .collect();
    if token.is_empty() {
        "unknown".to_string()
    } else {
        token
    }
}

fn status(code: [u8; 3]) -> String {
    format!("{}.{}.{}", code[0], code[1], code[2])
}

/// An RFC 5322 date-time in UTC. Times past the year 9999 are written as its end.
fn date(ms: u64) -> String {
    const MAX_MS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
    let ms = i64::try_from(ms).unwrap_or(MAX_MS).min(MAX_MS);
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S +0000")
        .to_string()
}

/// A process-wide counter, so two notices built in the same millisecond differ.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The left part of the Message-ID: queue id, time, counter and a random number.
fn message_id_left(queue_id: &str, now_ms: u64) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{queue_id}.{now_ms}.{n}.{:x}", random())
}

/// A boundary made of the queue id, the time and a random number, for which
/// `is_absent` holds (it is checked against every part's content). At most 70
/// characters, all of them legal in a boundary and safe unquoted.
fn pick_boundary(
    queue_id: &str,
    mta: &str,
    now_ms: u64,
    is_absent: impl Fn(&str) -> bool,
) -> String {
    let host: String = clean_token(mta).chars().take(16).collect();
    let queue_id: String = queue_id.chars().take(16).collect();
    loop {
        // at most 16 + 1 + 16 + 1 + 16 + 1 + 16 = 67 characters
        let b = format!("{queue_id}.{now_ms:x}.{:016x}/{host}", random());
        // a new random number each time: a collision twice in a row is not going to happen
        if is_absent(&b) {
            return b;
        }
    }
}

/// 64 random bits from the standard library's per-process random hash keys, mixed
/// with a counter so that successive calls differ.
fn random() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(CALLS.fetch_add(1, Ordering::Relaxed))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// Splits `line` at spaces so each piece is at most `width` bytes where possible (a
/// word longer than that stays whole); continuation pieces start with `indent`. With
/// `indent = " "` this is header folding: the space at the break is the folding
/// whitespace, so unfolding gives back `line`.
fn wrap(line: &str, width: usize, indent: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for (i, word) in line.split(' ').enumerate() {
        if i == 0 {
            current.push_str(word);
        } else if current.len() + 1 + word.len() > width && !current.trim().is_empty() {
            out.push(std::mem::take(&mut current));
            current.push_str(indent);
            current.push_str(word);
        } else {
            current.push(' ');
            current.push_str(word);
        }
    }
    out.push(current);
    out
}

fn join_crlf(lines: Vec<String>) -> Vec<u8> {
    lines.join("\r\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One MIME entity read back: unfolded headers (name lowercased) and its body.
    struct Entity {
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Entity {
        fn parse(text: &str) -> Entity {
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
            Entity {
                headers: fields(head),
                body: body.to_string(),
            }
        }

        fn get(&self, name: &str) -> Option<&str> {
            get(&self.headers, name)
        }

        fn all(&self, name: &str) -> Vec<&str> {
            self.headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect()
        }
    }

    /// Header-style fields, unfolded: `(lowercased name, value)`. Panics on a line that
    /// is neither a field nor a continuation.
    fn fields(block: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for line in block.split("\r\n").filter(|l| !l.is_empty()) {
            if line.starts_with([' ', '\t']) {
                out.last_mut().expect("continuation first").1.push_str(line);
            } else {
                let (name, value) = line.split_once(':').expect("not a field");
                out.push((name.to_ascii_lowercase(), value.trim_start().to_string()));
            }
        }
        out
    }

    fn get<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The notice read back: checks it is 7-bit with CRLF everywhere, and returns its
    /// header and its parts.
    fn parse(bytes: &[u8]) -> (Entity, Vec<Entity>) {
        assert!(bytes.is_ascii(), "not 7-bit");
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' {
                assert!(i > 0 && bytes[i - 1] == b'\r', "bare LF at {i}");
            }
            if b == b'\r' {
                assert_eq!(bytes.get(i + 1), Some(&b'\n'), "bare CR at {i}");
            }
        }
        for line in bytes.split(|&b| b == b'\n') {
            assert!(line.len() <= 1000, "line too long: {}", line.len());
        }
        let text = std::str::from_utf8(bytes).unwrap();
        let top = Entity::parse(text);
        let content_type = top.get("content-type").unwrap();
        assert!(content_type.starts_with("multipart/report; report-type=delivery-status;"));
        let boundary = content_type
            .split("boundary=\"")
            .nth(1)
            .and_then(|b| b.strip_suffix('"'))
            .unwrap();
        assert!(boundary.len() <= 70);
        let delimiter = format!("\r\n--{boundary}");
        let pieces: Vec<&str> = top.body.split(&delimiter).collect();
        assert_eq!(
            pieces.first(),
            Some(&"This is a MIME-encapsulated message.\r\n")
        );
        assert_eq!(pieces.last(), Some(&"--\r\n"));
        let parts = pieces[1..pieces.len() - 1]
            .iter()
            .map(|p| Entity::parse(p.strip_prefix("\r\n").expect("boundary line")))
            .collect();
        (top, parts)
    }

    /// The `message/delivery-status` blocks: per-message fields first.
    fn status_blocks(part: &Entity) -> Vec<Vec<(String, String)>> {
        part.body.split("\r\n\r\n").map(fields).collect()
    }

    fn recipient(
        final_rcpt: &str,
        original: &str,
        status: [u8; 3],
        diagnostic: &str,
    ) -> DsnRecipient {
        DsnRecipient {
            original: original.to_string(),
            final_rcpt: final_rcpt.to_string(),
            status,
            diagnostic: Some(diagnostic.to_string()),
            remote_mta: Some("mx.remote.test".to_string()),
            last_attempt_ms: Some(1_700_000_100_000),
            will_retry_until_ms: Some(1_700_432_000_000),
        }
    }

    const ORIGINAL: &[u8] = b"Received: from client.test\r\n\tby mx.local.test\r\n\
        From: <alice@local.test>\r\nSubject: hello\r\n\r\nSECRET BODY LINE\r\n";

    fn request<'a>(
        kind: DsnKind,
        recipients: &'a [DsnRecipient],
        original: &'a [u8],
    ) -> DsnRequest<'a> {
        DsnRequest {
            kind,
            reporting_mta: "mx.local.test",
            queue_id: "4F2a9Q",
            arrival_ms: 1_700_000_000_000,
            to: "alice@local.test",
            original_sender: "alice@local.test",
            recipients,
            original,
            now_ms: 1_700_000_200_000,
        }
    }

    #[test]
    fn failure_notice_has_the_rfc3464_fields() {
        let rcpts = [recipient(
            "bob@remote.test",
            "bob@remote.test",
            [5, 1, 1],
            "550 5.1.1 <bob@remote.test>: no such user",
        )];
        let (top, parts) = parse(&build(&request(DsnKind::Failure, &rcpts, ORIGINAL)));

        assert_eq!(
            top.get("from"),
            Some("Mail Delivery System <MAILER-DAEMON@mx.local.test>")
        );
        assert_eq!(top.get("to"), Some("<alice@local.test>"));
        assert_eq!(
            top.get("subject"),
            Some("Undelivered Mail Returned to Sender")
        );
        assert_eq!(top.get("date"), Some("Tue, 14 Nov 2023 22:16:40 +0000"));
        assert_eq!(top.get("auto-submitted"), Some("auto-replied"));
        assert_eq!(top.get("mime-version"), Some("1.0"));
        let id = top.get("message-id").unwrap();
        assert!(id.starts_with("<4F2a9Q.1700000200000.") && id.ends_with("@mx.local.test>"));

        let types: Vec<_> = parts
            .iter()
            .map(|p| p.get("content-type").unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "text/plain; charset=us-ascii",
                "message/delivery-status",
                "text/rfc822-headers"
            ]
        );

        let text = &parts[0].body;
        assert!(text.starts_with("This is the mail system at host mx.local.test."));
        assert!(text.contains("could not be delivered"));
        assert!(text.contains(
            "<bob@remote.test>: host mx.remote.test said: 550 5.1.1 <bob@remote.test>: no\r\n    such user"
        ));

        let blocks = status_blocks(&parts[1]);
        assert_eq!(blocks.len(), 2);
        let per_message = &blocks[0];
        assert_eq!(
            get(per_message, "reporting-mta"),
            Some("dns; mx.local.test")
        );
        assert_eq!(get(per_message, "x-mtad-queue-id"), Some("4F2a9Q"));
        assert_eq!(
            get(per_message, "x-mtad-sender"),
            Some("rfc822; alice@local.test")
        );
        assert_eq!(
            get(per_message, "arrival-date"),
            Some("Tue, 14 Nov 2023 22:13:20 +0000")
        );
        let r = &blocks[1];
        assert_eq!(get(r, "final-recipient"), Some("rfc822; bob@remote.test"));
        assert_eq!(get(r, "original-recipient"), None, "same as final");
        assert_eq!(get(r, "action"), Some("failed"));
        assert_eq!(get(r, "status"), Some("5.1.1"));
        assert_eq!(get(r, "remote-mta"), Some("dns; mx.remote.test"));
        assert_eq!(
            get(r, "diagnostic-code"),
            Some("smtp; 550 5.1.1 <bob@remote.test>: no such user")
        );
        assert_eq!(
            get(r, "last-attempt-date"),
            Some("Tue, 14 Nov 2023 22:15:00 +0000")
        );
        assert_eq!(get(r, "will-retry-until"), None, "failures are not retried");

        assert_eq!(
            parts[2].body,
            "Received: from client.test\r\n\tby mx.local.test\r\nFrom: <alice@local.test>\r\nSubject: hello"
        );
    }

    #[test]
    fn delay_notice_says_it_is_a_warning() {
        let rcpts = [recipient(
            "bob@remote.test",
            "bob@remote.test",
            [4, 4, 1],
            "451 4.4.1 try later",
        )];
        let (top, parts) = parse(&build(&request(DsnKind::Delay, &rcpts, ORIGINAL)));
        assert_eq!(
            top.get("subject"),
            Some("Delayed Mail (still being retried)")
        );
        let text = parts[0].body.replace("\r\n    ", " ");
        assert!(text.contains("This is a warning only"));
        assert!(text.contains(
            "<bob@remote.test>: host mx.remote.test said: 451 4.4.1 try later (will be \
             retried until Sun, 19 Nov 2023 22:13:20 +0000)"
        ));
        assert!(!text.contains("given up"));
        let blocks = status_blocks(&parts[1]);
        let r = &blocks[1];
        assert_eq!(get(r, "action"), Some("delayed"));
        assert_eq!(get(r, "status"), Some("4.4.1"));
        assert_eq!(
            get(r, "will-retry-until"),
            Some("Sun, 19 Nov 2023 22:13:20 +0000")
        );
    }

    #[test]
    fn each_recipient_gets_a_block_in_order() {
        let rcpts = [
            recipient(
                "bob@remote.test",
                "bob@remote.test",
                [5, 1, 1],
                "550 5.1.1 unknown",
            ),
            recipient(
                "carol@remote.test",
                "staff@local.test",
                [5, 2, 2],
                "552 5.2.2 mailbox full",
            ),
            DsnRecipient {
                diagnostic: None,
                remote_mta: None,
                last_attempt_ms: None,
                ..recipient("dave@remote.test", "", [5, 4, 4], "")
            },
        ];
        let (_, parts) = parse(&build(&request(DsnKind::Failure, &rcpts, ORIGINAL)));
        let blocks = status_blocks(&parts[1]);
        assert_eq!(blocks.len(), 4);
        let finals: Vec<_> = blocks[1..]
            .iter()
            .map(|b| get(b, "final-recipient").unwrap())
            .collect();
        assert_eq!(
            finals,
            [
                "rfc822; bob@remote.test",
                "rfc822; carol@remote.test",
                "rfc822; dave@remote.test"
            ]
        );
        assert_eq!(
            get(&blocks[2], "original-recipient"),
            Some("rfc822; staff@local.test")
        );
        assert_eq!(get(&blocks[2], "status"), Some("5.2.2"));
        assert_eq!(get(&blocks[3], "original-recipient"), None);
        assert_eq!(get(&blocks[3], "diagnostic-code"), None);
        assert_eq!(get(&blocks[3], "remote-mta"), None);
        assert_eq!(get(&blocks[3], "last-attempt-date"), None);

        let text = &parts[0].body;
        assert!(text.contains("<carol@remote.test> (expanded from <staff@local.test>): host"));
        assert!(text.contains("<dave@remote.test>: delivery status 5.4.4"));
        let (b, c, d) = (
            text.find("<bob@").unwrap(),
            text.find("<carol@").unwrap(),
            text.find("<dave@").unwrap(),
        );
        assert!(b < c && c < d);
    }

    #[test]
    fn injected_lines_stay_inside_their_field() {
        let evil =
            "550 no\r\nBcc: evil@x.test\r\n\r\n--fake--\r\nContent-Type: text/html\n\0\x1b[2J";
        let rcpts = [DsnRecipient {
            remote_mta: Some("mx.test\r\nX-Injected: 1".to_string()),
            ..recipient(
                "bob@remote.test\r\nX-Injected: 2",
                "a@b\nX-Injected: 3",
                [5, 0, 0],
                evil,
            )
        }];
        let req = DsnRequest {
            reporting_mta: "mx.local.test\r\nX-Injected: 4",
            queue_id: "Q1\r\nX-Injected: 5",
            to: "alice@local.test>\r\nBcc: mallory@x.test",
            original_sender: "alice@local.test\r\nX-Injected: 6",
            ..request(DsnKind::Failure, &rcpts, ORIGINAL)
        };
        let out = build(&req);
        let (top, parts) = parse(&out);
        assert_eq!(parts.len(), 3);
        let text = std::str::from_utf8(&out).unwrap();
        for line in text.split("\r\n") {
            assert!(!line.starts_with("Bcc"), "{line}");
            assert!(!line.starts_with("X-Injected"), "{line}");
            assert!(!line.starts_with("--fake"), "{line}");
            assert!(!line.starts_with("Content-Type: text/html"), "{line}");
        }
        assert!(!top.headers.iter().any(|(n, _)| n == "bcc"));
        assert_eq!(
            top.get("to"),
            Some("<alice@local.test?  Bcc: mallory@x.test>")
        );
        let blocks = status_blocks(&parts[1]);
        assert_eq!(blocks.len(), 2);
        let diagnostic = get(&blocks[1], "diagnostic-code").unwrap();
        assert_eq!(
            diagnostic,
            "smtp; 550 no  Bcc: evil@x.test    --fake--  Content-Type: text/html [2J"
        );
        assert_eq!(
            get(&blocks[1], "remote-mta"),
            Some("dns; mx.test??X-Injected:?1")
        );
        for part in &parts {
            assert_eq!(part.all("content-type").len(), 1);
        }
    }

    #[test]
    fn the_original_body_is_never_returned() {
        let rcpts = [recipient("b@r.test", "b@r.test", [5, 1, 1], "550 no")];
        let out = build(&request(DsnKind::Failure, &rcpts, ORIGINAL));
        assert!(memchr::memmem::find(&out, b"SECRET").is_none());
        // no empty line: the header block ends at the first line that is not a header
        let no_separator = b"Subject: hi\nFrom: a@b\nSECRET body without a blank line\nX: y\n";
        let out = build(&request(DsnKind::Failure, &rcpts, no_separator));
        assert!(memchr::memmem::find(&out, b"SECRET").is_none());
        let (_, parts) = parse(&out);
        assert_eq!(parts[2].body, "Subject: hi\r\nFrom: a@b");
    }

    #[test]
    fn header_block_with_lf_and_crlf_endings() {
        let expected: &[u8] = b"A: 1\r\nB: 2\r\n folded\r\n\tagain";
        assert_eq!(
            header_block(b"A: 1\nB: 2\n folded\n\tagain\n\nbody\n"),
            expected
        );
        assert_eq!(
            header_block(b"A: 1\r\nB: 2\r\n folded\r\n\tagain\r\n\r\nbody\r\n"),
            expected
        );
        assert_eq!(
            header_block(b"A: 1\r\nB: 2\n folded\r\n\tagain\n\r\nbody"),
            expected
        );
        // no body: all of it
        assert_eq!(header_block(b"A: 1\r\nB: 2"), b"A: 1\r\nB: 2");
        assert_eq!(header_block(b"A: 1\r\nB: 2\r\n"), b"A: 1\r\nB: 2");
        assert_eq!(header_block(b""), b"");
        // a body with no header block, a continuation with nothing to continue
        assert_eq!(header_block(b"\r\nA: 1\r\n"), b"");
        assert_eq!(header_block(b" A: 1\r\n"), b"");
        assert_eq!(header_block(b"not a header\r\nA: 1\r\n"), b"");
        // 8-bit, NUL and bare CR become '?'
        assert_eq!(
            header_block("Subject: caf\u{e9}\0\rx\r\n\r\n".as_bytes()),
            b"Subject: caf????x"
        );
    }

    #[test]
    fn header_block_is_bounded() {
        let mut big = Vec::new();
        let mut i = 0;
        while big.len() < 3 * MAX_RETURNED_HEADERS {
            big.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "a".repeat(70)).as_bytes());
            i += 1;
        }
        big.extend_from_slice(b"\r\nbody\r\n");
        let block = header_block(&big);
        assert!(block.len() <= MAX_RETURNED_HEADERS);
        assert!(block.len() > MAX_RETURNED_HEADERS - 100);
        assert!(block.ends_with(&[b'a'; 70]), "cut at a whole line");
        // one endless line: nothing whole to return
        let endless = [b"Subject: ".as_slice(), &[b'x'; 200_000]].concat();
        assert_eq!(header_block(&endless), b"");
        // and the notice stays within the limits
        let rcpts = [recipient("b@r.test", "b@r.test", [5, 1, 1], "550 no")];
        let out = build(&request(DsnKind::Failure, &rcpts, &big));
        assert!(out.len() < MAX_RETURNED_HEADERS + 4096);
        parse(&out);
    }

    #[test]
    fn long_and_non_ascii_diagnostics_are_capped_and_replaced() {
        let long = format!("550 5.7.1 {}", "word ".repeat(2000));
        let no_spaces = format!("550 {}", "x".repeat(5000));
        let rcpts = [
            recipient("b@r.test", "b@r.test", [5, 7, 1], &long),
            recipient("c@r.test", "c@r.test", [5, 0, 0], &no_spaces),
            recipient(
                "d@r.test",
                "d@r.test",
                [5, 1, 1],
                "550 utilisateur inconnu \u{e9}\u{1F4A9}",
            ),
            recipient(&"e".repeat(5000), "", [5, 1, 1], "550 x"),
        ];
        let out = build(&request(DsnKind::Failure, &rcpts, ORIGINAL));
        let (_, parts) = parse(&out);
        let blocks = status_blocks(&parts[1]);
        let d1 = get(&blocks[1], "diagnostic-code").unwrap();
        assert_eq!(d1.len(), "smtp; ".len() + MAX_DIAGNOSTIC);
        let d2 = get(&blocks[2], "diagnostic-code").unwrap();
        assert_eq!(d2.len(), "smtp; ".len() + MAX_DIAGNOSTIC);
        assert_eq!(
            get(&blocks[3], "diagnostic-code"),
            Some("smtp; 550 utilisateur inconnu ??")
        );
        let f4 = get(&blocks[4], "final-recipient").unwrap();
        assert_eq!(f4.len(), "rfc822; ".len() + MAX_ADDRESS);
    }

    #[test]
    fn null_sender_and_empty_input() {
        let req = DsnRequest {
            reporting_mta: "",
            queue_id: "",
            to: "",
            original_sender: "",
            original: b"",
            now_ms: u64::MAX,
            arrival_ms: u64::MAX,
            ..request(DsnKind::Delay, &[], b"")
        };
        let (top, parts) = parse(&build(&req));
        assert_eq!(top.get("to"), Some("undisclosed-recipients:;"));
        assert_eq!(
            top.get("from"),
            Some("Mail Delivery System <MAILER-DAEMON@localhost>")
        );
        assert_eq!(top.get("date"), Some("Fri, 31 Dec 9999 23:59:59 +0000"));
        assert!(parts[0].body.contains("sent by <> (the null sender)"));
        let blocks = status_blocks(&parts[1]);
        assert_eq!(blocks.len(), 1);
        assert_eq!(get(&blocks[0], "x-mtad-sender"), None);
        assert_eq!(get(&blocks[0], "x-mtad-queue-id"), Some("unknown"));
        assert_eq!(parts[2].body, "");
    }

    #[test]
    fn message_ids_and_boundaries_are_unique() {
        let rcpts = [recipient("b@r.test", "b@r.test", [5, 1, 1], "550 no")];
        let req = request(DsnKind::Failure, &rcpts, ORIGINAL);
        let (a, _) = parse(&build(&req));
        let (b, _) = parse(&build(&req));
        assert_ne!(a.get("message-id"), b.get("message-id"));
        assert_ne!(a.get("content-type"), b.get("content-type"));
    }

    #[test]
    fn a_boundary_found_in_the_content_is_not_used() {
        let first = std::cell::RefCell::new(None);
        let b = pick_boundary("Q1", "mx.local.test", 1_700_000_000_000, |b| {
            let mut first = first.borrow_mut();
            if first.is_none() {
                *first = Some(b.to_string());
                false
            } else {
                true
            }
        });
        assert_ne!(Some(b.clone()), *first.borrow());
        assert!(b.starts_with("Q1.18bcfe56800.") && b.ends_with("/mx.local.test"));
        let longest = pick_boundary(&"q".repeat(64), &"h".repeat(255), u64::MAX, |_| true);
        assert!(longest.len() <= 70);
    }

    #[test]
    fn dates_are_rfc5322() {
        assert_eq!(date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(date(1_700_000_000_999), "Tue, 14 Nov 2023 22:13:20 +0000");
        assert_eq!(date(u64::MAX), "Fri, 31 Dec 9999 23:59:59 +0000");
    }

    #[test]
    fn wrap_folds_at_spaces_and_unfolds_back() {
        let line = "Diagnostic-Code: smtp; 550 5.1.1 this is a rather long reply text that goes past the width";
        let folded = wrap(line, 40, " ");
        assert!(folded.len() > 2);
        assert!(folded.iter().all(|l| l.len() <= 40));
        assert_eq!(folded.concat(), line);
        assert_eq!(wrap("short", 40, " "), ["short"]);
        assert_eq!(wrap(&"x".repeat(50), 40, " "), ["x".repeat(50)]);
    }
}
