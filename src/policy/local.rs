//! Local submission: who may submit through `sendmail` and which senders they may
//! claim (Postfix's `authorized_submit_users` and `local_login_sender_maps`), and the
//! cleanup a locally submitted message gets before it enters the pipeline (what
//! Postfix's cleanup(8) does for mail from pickup).
//!
//! [`cleanup_local`] is the one place these edits are made: the daemon's pickup calls
//! it, the `sendmail` command calls it to refuse a message with no recipient before
//! it exits, and `mtactl test-policy` can show its edits.

use std::fmt;

use crate::config::LocalSubmission;
use crate::lookup::LookupError;

use super::address;

/// The name of the built-in listener local submissions arrive on (what rules' and
/// the decision log's `listener` is for them).
pub const LISTENER: &str = "sendmail";

/// Who submitted a message: the owner of its drop file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitter {
    pub uid: u32,
    /// The login name from the password database; `None` when the uid has none
    /// (Postfix then uses `uid:N`).
    pub login: Option<String>,
    /// The full name from the password database's GECOS field.
    pub gecos: Option<String>,
}

impl Submitter {
    /// The name the submission policy looks up: the login, or `uid:N`.
    pub fn name(&self) -> String {
        self.login
            .clone()
            .unwrap_or_else(|| format!("uid:{}", self.uid))
    }

    /// The submitter as the password database knows `uid`.
    pub fn from_uid(uid: u32) -> Submitter {
        match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
            Ok(Some(user)) => {
                let gecos = user.gecos.to_string_lossy().into_owned();
                Submitter {
                    uid,
                    gecos: full_name_from_gecos(&gecos, &user.name),
                    login: Some(user.name),
                }
            }
            _ => Submitter {
                uid,
                login: None,
                gecos: None,
            },
        }
    }
}

/// The GECOS field's first comma-separated part, `&` standing for the login with its
/// first letter capitalised (as finger(1) and Postfix's pickup read it).
pub fn full_name_from_gecos(gecos: &str, login: &str) -> Option<String> {
    let first = gecos.split(',').next().unwrap_or("").trim();
    if first.is_empty() {
        return None;
    }
    let mut cap = String::new();
    let mut chars = login.chars();
    if let Some(c) = chars.next() {
        cap.extend(c.to_uppercase());
        cap.push_str(chars.as_str());
    }
    Some(first.replace('&', &cap))
}

/// Why a local user may not submit (or not this sender).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitRefusal {
    #[error("local submission is off: the configuration has no `local-submission` block")]
    Off,
    #[error("user {0} is not allowed to submit mail (local-submission {{ authorized-users }})")]
    NotAuthorized(String),
    #[error("user {user} may not send as <{sender}> (local-submission {{ sender-logins }})")]
    Sender { user: String, sender: String },
    #[error("cannot check which senders {user} may use: {error}")]
    Lookup { user: String, error: String },
}

/// Whether `who` may submit at all, and with the envelope sender `sender` as given
/// on the command line (`None`: not given; the submitter's own address is used,
/// which is always allowed).
pub fn may_submit(
    settings: Option<&LocalSubmission>,
    who: &Submitter,
    sender: Option<&str>,
) -> Result<(), SubmitRefusal> {
    let Some(settings) = settings else {
        return Err(SubmitRefusal::Off);
    };
    let name = who.name();
    if let Some(users) = &settings.authorized_users {
        let uid = format!("uid:{}", who.uid);
        if !users.iter().any(|u| *u == name || *u == uid) {
            return Err(SubmitRefusal::NotAuthorized(name));
        }
    }
    let (Some(table), Some(sender)) = (&settings.sender_logins, sender) else {
        return Ok(());
    };
    let found = table
        .lookup(&name)
        .map_err(|e: LookupError| SubmitRefusal::Lookup {
            user: name.clone(),
            error: e.to_string(),
        })?;
    let allowed = found.is_some_and(|patterns| sender_matches(&patterns, sender));
    if allowed {
        Ok(())
    } else {
        Err(SubmitRefusal::Sender {
            user: name,
            sender: sender.to_owned(),
        })
    }
}

/// Postfix's login-sender patterns: `*` any sender, `<>` the null sender, `@domain`
/// any sender in the domain, else an address (compared without its extension,
/// case-insensitively).
fn sender_matches(patterns: &str, sender: &str) -> bool {
    let sender = without_extension(sender);
    patterns
        .split([' ', ',', '\t'])
        .filter(|p| !p.is_empty())
        .any(|p| match p {
            "*" => true,
            "<>" => sender.is_empty(),
            _ if p.starts_with('@') => sender
                .rsplit_once('@')
                .is_some_and(|(_, d)| d.eq_ignore_ascii_case(&p[1..])),
            _ => !sender.is_empty() && p.eq_ignore_ascii_case(&sender),
        })
}

/// `user+ext@domain` → `user@domain` (Postfix's `recipient_delimiter` `+`).
fn without_extension(addr: &str) -> String {
    let (local, domain) = match addr.rsplit_once('@') {
        Some((l, d)) => (l, Some(d)),
        None => (addr, None),
    };
    let local = local.split_once('+').map_or(local, |(l, _)| l);
    match domain {
        Some(d) => format!("{local}@{d}"),
        None => local.to_owned(),
    }
}

/// A locally submitted message as `sendmail` handed it over.
#[derive(Clone, Copy, Debug)]
pub struct LocalMessage<'a> {
    pub submitter: &'a Submitter,
    /// `-f`/`-r` as given (`Some("")`: the null sender); `None`: the submitter.
    pub sender: Option<&'a str>,
    pub recipients: &'a [String],
    /// `-t`: recipients from To/Cc/Bcc too (Resent-To/Cc/Bcc when there are any).
    pub extract: bool,
    /// `-F`.
    pub full_name: Option<&'a str>,
    /// `-B`: `Some(true)` 8BITMIME, `Some(false)` 7BIT.
    pub body_8bit: Option<bool>,
    pub smtputf8: bool,
    /// Line endings as read.
    pub message: &'a [u8],
}

/// Where the cleanup writes: names it qualifies with and stamps.
#[derive(Clone, Copy, Debug)]
pub struct Site<'a> {
    /// `server { origin }`: bare addresses get `@origin`.
    pub origin: &'a str,
    /// `server { hostname }`: the right side of a Message-ID.
    pub hostname: &'a str,
    /// The queue id the message will have (in the Message-ID, as Postfix's).
    pub queue_id: &'a str,
    /// Now, for Date: and Message-ID:.
    pub now: chrono::DateTime<chrono::FixedOffset>,
}

/// A message after cleanup: the envelope and the message to queue, and what changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cleaned {
    pub sender: String,
    pub recipients: Vec<String>,
    /// CRLF line endings throughout.
    pub message: Vec<u8>,
    pub body_8bit: bool,
    pub smtputf8: bool,
    /// Each edit in words (`added Date:`, `qualified To: root → root@example.jp`), in
    /// the order made: what `test-policy` shows.
    pub edits: Vec<String>,
}

/// Why a message cannot be submitted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CleanupError {
    #[error("no recipient addresses found in the message header (with -t) or on the command line")]
    NoRecipients,
    #[error("{0:?} is not a valid address: {1}")]
    BadAddress(String, String),
}

/// Why a local submission is not taken: the policy refuses the submitter (or the
/// sender they claim), or cleanup the message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LocalRefusal {
    #[error(transparent)]
    Submit(#[from] SubmitRefusal),
    #[error(transparent)]
    Cleanup(#[from] CleanupError),
}

/// What becomes of a dropped message, decided in one place for the pickup and
/// `mtactl test-policy --local`: whether its submitter may submit it as its sender
/// ([`may_submit`]), then the message after [`cleanup_local`].
pub fn accept_local(
    settings: Option<&LocalSubmission>,
    m: &LocalMessage<'_>,
    site: &Site<'_>,
) -> Result<Cleaned, LocalRefusal> {
    may_submit(settings, m.submitter, m.sender)?;
    Ok(cleanup_local(m, site)?)
}

/// Headers whose addresses are qualified (Postfix's header address rewriting).
const ADDRESS_HEADERS: &[&str] = &[
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "resent-from",
    "resent-sender",
    "resent-reply-to",
    "resent-to",
    "resent-cc",
    "resent-bcc",
    "errors-to",
    "return-receipt-to",
    "disposition-notification-to",
];

/// Postfix's cleanup for local mail, in one place: line endings made CRLF (a lone
/// LF or CR ends a line); recipients extracted from the headers with `-t`; every
/// `Bcc:` removed; bare addresses in the envelope and the address headers qualified
/// with `origin`; `From:` (the sender, with `-F` or the GECOS name), `Date:` and
/// `Message-ID:` added when missing (Resent- ones when the message has Resent-
/// headers); 8BITMIME and SMTPUTF8 set when the message or an address needs them.
pub fn cleanup_local(m: &LocalMessage<'_>, site: &Site<'_>) -> Result<Cleaned, CleanupError> {
    let mut edits = Vec::new();
    let text = crlf(m.message, &mut edits);
    let (head, body) = split_header(&text);
    let mut headers = unfold_blocks(head);
    let resent = headers
        .iter()
        .any(|(n, _)| n.to_ascii_lowercase().starts_with("resent-"));

    // the envelope sender
    let login = m.submitter.name();
    let sender = match m.sender {
        Some("") | Some("<>") => String::new(),
        Some(s) => qualify_envelope(s.trim_matches(['<', '>']), site.origin, &mut edits)?,
        None => {
            let s = format!("{login}@{}", site.origin);
            edits.push(format!("sender <{s}> (the submitting user)"));
            s
        }
    };

    // header addresses: qualified; recipients extracted with -t
    let mut recipients = Vec::new();
    for r in m.recipients {
        recipients.push(qualify_envelope(r, site.origin, &mut edits)?);
    }
    let extract_from: &[&str] = if resent {
        &["resent-to", "resent-cc", "resent-bcc"]
    } else {
        &["to", "cc", "bcc"]
    };
    for (name, value) in headers.iter_mut() {
        let lower = name.to_ascii_lowercase();
        if !ADDRESS_HEADERS.contains(&lower.as_str()) {
            continue;
        }
        let (rewritten, addrs) = rewrite_address_list(value, site.origin);
        if rewritten != *value {
            edits.push(format!(
                "qualified {name}: {} → {}",
                value.trim(),
                rewritten.trim()
            ));
            *value = rewritten;
        }
        if m.extract && extract_from.contains(&lower.as_str()) {
            for a in addrs {
                if !recipients.contains(&a) {
                    recipients.push(a);
                }
            }
        }
    }
    let before = headers.len();
    headers
        .retain(|(n, _)| !n.eq_ignore_ascii_case("bcc") && !n.eq_ignore_ascii_case("resent-bcc"));
    if headers.len() != before {
        edits.push("removed Bcc:".to_owned());
    }
    if recipients.is_empty() {
        return Err(CleanupError::NoRecipients);
    }

    // missing headers, appended in Postfix's order (Message-Id, Date, From)
    let prefix = if resent { "Resent-" } else { "" };
    let has = |hs: &[(String, String)], n: &str| hs.iter().any(|(h, _)| h.eq_ignore_ascii_case(n));
    if !has(&headers, &format!("{prefix}Message-ID")) {
        let value = format!(
            " <{}.{}@{}>",
            site.now.format("%Y%m%d%H%M%S"),
            site.queue_id,
            site.hostname
        );
        edits.push(format!("added {prefix}Message-Id:{value}"));
        headers.push((format!("{prefix}Message-Id"), value));
    }
    if !has(&headers, &format!("{prefix}Date")) {
        let value = format!(" {}", site.now.format("%a, %e %b %Y %H:%M:%S %z"));
        edits.push(format!("added {prefix}Date:{value}"));
        headers.push((format!("{prefix}Date"), value));
    }
    if !has(&headers, &format!("{prefix}From")) {
        let full = m
            .full_name
            .map(str::to_owned)
            .or_else(|| m.submitter.gecos.clone());
        let addr = if sender.is_empty() {
            format!("{login}@{}", site.origin)
        } else {
            sender.clone()
        };
        let value = match full.as_deref().map(display_name) {
            Some(name) if !name.is_empty() => format!(" {name} <{addr}>"),
            _ => format!(" {addr}"),
        };
        edits.push(format!("added {prefix}From:{value}"));
        headers.push((format!("{prefix}From"), value));
    }

    let mut message = Vec::with_capacity(text.len() + 256);
    for (name, value) in &headers {
        message.extend_from_slice(name.as_bytes());
        message.push(b':');
        message.extend_from_slice(value.as_bytes());
        message.extend_from_slice(b"\r\n");
    }
    message.extend_from_slice(b"\r\n");
    message.extend_from_slice(body);
    let body_8bit = m
        .body_8bit
        .unwrap_or_else(|| text.iter().any(|b| *b >= 0x80));
    let smtputf8 = m.smtputf8
        || !sender.is_ascii()
        || recipients.iter().any(|r| !r.is_ascii())
        || headers.iter().any(|(n, v)| !n.is_ascii() || !v.is_ascii());
    Ok(Cleaned {
        sender,
        recipients,
        message,
        body_8bit,
        smtputf8,
        edits,
    })
}

/// `text` with CRLF line endings: LF, CR and CRLF each end a line.
fn crlf(text: &[u8], edits: &mut Vec<String>) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 32 + 2);
    let mut changed = 0usize;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'\r' if text.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                changed += 1;
            }
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
        changed += 1;
    }
    if changed > 0 {
        edits.push(format!("{changed} line endings made CRLF"));
    }
    out
}

/// The header block (without the empty line) and the body. A first line that is
/// neither a header nor empty starts the body (cleanup then puts the empty line in).
fn split_header(text: &[u8]) -> (&[u8], &[u8]) {
    let mut pos = 0;
    let mut first = true;
    while pos < text.len() {
        let end = memchr::memmem::find(&text[pos..], b"\r\n").map_or(text.len(), |i| pos + i);
        let line = &text[pos..end];
        let next = (end + 2).min(text.len());
        if line.is_empty() {
            return (&text[..pos], &text[next..]);
        }
        let continuation = !first && matches!(line[0], b' ' | b'\t');
        if !continuation && !is_header_line(line) {
            return (&text[..pos], &text[pos..]);
        }
        first = false;
        pos = next;
    }
    (text, &[])
}

fn is_header_line(line: &[u8]) -> bool {
    let Some(colon) = memchr::memchr(b':', line) else {
        return false;
    };
    colon > 0 && line[..colon].iter().all(|b| (33..=126).contains(b))
}

/// The header block as `(name, value after the colon)` pairs, folded lines joined
/// with their CRLF kept.
fn unfold_blocks(head: &[u8]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let text = String::from_utf8_lossy(head);
    for line in text.split("\r\n") {
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push_str("\r\n");
                v.push_str(line);
            }
            continue;
        }
        if let Some((n, v)) = line.split_once(':') {
            out.push((n.to_owned(), v.to_owned()));
        }
    }
    out
}

/// An envelope address as given: bare names get `@origin`; must parse.
fn qualify_envelope(
    written: &str,
    origin: &str,
    edits: &mut Vec<String>,
) -> Result<String, CleanupError> {
    let written = written.trim();
    let full = if written.contains('@') {
        written.to_owned()
    } else {
        let q = format!("{written}@{origin}");
        edits.push(format!("qualified <{written}> → <{q}>"));
        q
    };
    address::canonical(&full)
        .ok_or_else(|| CleanupError::BadAddress(written.to_owned(), "not an address".into()))
}

/// A display name as a phrase: kept as is when it is plain words, else quoted.
fn display_name(name: &str) -> String {
    let name: String = name.chars().filter(|c| !c.is_control()).collect();
    let plain = name
        .chars()
        .all(|c| c.is_alphanumeric() || " !#$%&'*+-/=?^_`{|}~".contains(c));
    if plain {
        name.trim().to_owned()
    } else {
        format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// Qualifies the bare addresses of an address-list header value with `origin`;
/// returns the new value and every address in it (qualified, canonical).
fn rewrite_address_list(value: &str, origin: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(value.len() + 16);
    let mut addrs = Vec::new();
    for (piece, sep) in split_top_level(value) {
        if sep == Some(':') {
            // a group's display name
            out.push_str(piece);
        } else {
            out.push_str(&rewrite_mailbox(piece, origin, &mut addrs));
        }
        if let Some(sep) = sep {
            out.push(sep);
        }
    }
    (out, addrs)
}

/// Splits at top-level `,` `:` `;` (outside quotes, comments and angle brackets),
/// keeping each separator.
fn split_top_level(value: &str) -> Vec<(&str, Option<char>)> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut angle, mut escaped) = (0usize, false, false, false);
    let mut start = 0;
    for (i, c) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted || depth > 0 => escaped = true,
            '"' if depth == 0 => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            '<' if !quoted && depth == 0 => angle = true,
            '>' if !quoted && depth == 0 => angle = false,
            ',' | ':' | ';' if !quoted && depth == 0 && !angle => {
                out.push((&value[start..i], Some(c)));
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push((&value[start..], None));
    out
}

/// One mailbox (`Name <addr>`, `addr (comment)`, `addr`, or a group's display name):
/// a bare address inside it gets `@origin`.
fn rewrite_mailbox(piece: &str, origin: &str, addrs: &mut Vec<String>) -> String {
    if let (Some(open), Some(close)) = (piece.rfind('<'), piece.rfind('>'))
        && open < close
    {
        let inner = piece[open + 1..close].trim();
        if inner.is_empty() {
            return piece.to_owned();
        }
        let qualified = qualify_bare(inner, origin);
        if let Some(c) = address::canonical(&qualified) {
            addrs.push(c);
        }
        return format!("{}<{}>{}", &piece[..open], qualified, &piece[close + 1..]);
    }
    // a bare address, maybe with comments: the first word outside comments
    let trimmed = strip_comments(piece);
    let word = trimmed.trim();
    if word.is_empty() || word.contains(char::is_whitespace) || word.starts_with('"') {
        // a group's display name or a phrase: not an address
        return piece.to_owned();
    }
    let qualified = qualify_bare(word, origin);
    if let Some(c) = address::canonical(&qualified) {
        addrs.push(c);
    }
    if qualified == word {
        return piece.to_owned();
    }
    match piece.find(word) {
        Some(at) => format!("{}{}{}", &piece[..at], qualified, &piece[at + word.len()..]),
        None => piece.to_owned(),
    }
}

fn qualify_bare(addr: &str, origin: &str) -> String {
    if addr.contains('@') {
        addr.to_owned()
    } else {
        format!("{addr}@{origin}")
    }
}

/// `text` without `( ... )` comments (outside quotes).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut depth, mut quoted, mut escaped) = (0usize, false, false);
    for c in text.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' => {
                escaped = true;
                if depth == 0 {
                    out.push(c);
                }
            }
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

impl fmt::Display for Cleaned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.edits {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> Submitter {
        Submitter {
            uid: 0,
            login: Some("root".into()),
            gecos: Some("root".into()),
        }
    }

    fn site() -> Site<'static> {
        Site {
            origin: "example.jp",
            hostname: "mail.example.jp",
            queue_id: "0123ABCD",
            now: chrono::DateTime::parse_from_rfc3339("2026-12-05T04:05:06+00:00").unwrap(),
        }
    }

    fn run(message: &str, rcpts: &[&str], extract: bool, sender: Option<&str>) -> Cleaned {
        let who = root();
        let recipients: Vec<String> = rcpts.iter().map(|s| s.to_string()).collect();
        cleanup_local(
            &LocalMessage {
                submitter: &who,
                sender,
                recipients: &recipients,
                extract,
                full_name: None,
                body_8bit: None,
                smtputf8: false,
                message: message.as_bytes(),
            },
            &site(),
        )
        .unwrap()
    }

    /// What Postfix 3.7's sendmail + pickup + cleanup delivered for the same input and
    /// argv (`-FCronDaemon -i -B8BITMIME -oem root`, myorigin = example.jp), Received:
    /// aside and its Date's `(UTC)` comment left out.
    #[test]
    fn cron_style_message_as_postfix_cleans_it_up() {
        let c = run(
            "From: root (Cron Daemon)\nTo: root\nCc: a@x.test, bob\nBcc: hidden\nSubject: Cron <root@h> ls\n\nout\n",
            &["root"],
            false,
            None,
        );
        assert_eq!(c.sender, "root@example.jp");
        assert_eq!(c.recipients, ["root@example.jp"]);
        let text = String::from_utf8(c.message).unwrap();
        assert_eq!(
            text,
            "From: root@example.jp (Cron Daemon)\r\nTo: root@example.jp\r\nCc: a@x.test, bob@example.jp\r\n\
             Subject: Cron <root@h> ls\r\nMessage-Id: <20261205040506.0123ABCD@mail.example.jp>\r\n\
             Date: Sat,  5 Dec 2026 04:05:06 +0000\r\n\r\nout\r\n"
        );
        // Postfix, `printf 'just text\n' | sendmail root`: the headers it adds, then the
        // empty line, then the text
        let c = run("just text\n", &["root"], false, None);
        assert_eq!(
            String::from_utf8(c.message).unwrap(),
            "Message-Id: <20261205040506.0123ABCD@mail.example.jp>\r\nDate: Sat,  5 Dec 2026 04:05:06 +0000\r\n\
             From: root <root@example.jp>\r\n\r\njust text\r\n"
        );
    }

    #[test]
    fn extract_removes_bcc_and_dedups() {
        let c = run(
            "To: a@x.test, \"B, b\" <b@y.test>\nCc: root\nBcc: hidden@z.test\nSubject: s\n\nbody",
            &["a@x.test"],
            true,
            Some("app@example.org"),
        );
        assert_eq!(
            c.recipients,
            ["a@x.test", "b@y.test", "root@example.jp", "hidden@z.test"]
        );
        let text = String::from_utf8(c.message).unwrap();
        assert!(!text.to_ascii_lowercase().contains("bcc"), "{text}");
        assert!(text.contains("Cc: root@example.jp\r\n"), "{text}");
        assert!(text.contains("From: root <app@example.org>\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nbody\r\n"), "{text}");
    }

    #[test]
    fn no_header_block_and_no_recipients() {
        let c = run("just text\n", &["u@x.test"], false, None);
        let text = String::from_utf8(c.message).unwrap();
        assert!(text.ends_with("\r\n\r\njust text\r\n"), "{text}");
        let who = root();
        let err = cleanup_local(
            &LocalMessage {
                submitter: &who,
                sender: None,
                recipients: &[],
                extract: true,
                full_name: None,
                body_8bit: None,
                smtputf8: false,
                message: b"Subject: x\n\n",
            },
            &site(),
        );
        assert_eq!(err, Err(CleanupError::NoRecipients));
    }

    #[test]
    fn groups_and_comments() {
        let (v, a) = rewrite_address_list(" undisclosed-recipients:;", "o.test");
        assert_eq!(v, " undisclosed-recipients:;");
        assert!(a.is_empty());
        let (v, a) = rewrite_address_list(" team: alice, bob@x.test;", "o.test");
        assert_eq!(v, " team: alice@o.test, bob@x.test;");
        assert_eq!(a, ["alice@o.test", "bob@x.test"]);
        let (v, _) = rewrite_address_list(" root (the (nested) admin)", "o.test");
        assert_eq!(v, " root@o.test (the (nested) admin)");
    }

    #[test]
    fn full_name_and_sender_patterns() {
        assert_eq!(
            full_name_from_gecos("& Smith,,,", "bob").as_deref(),
            Some("Bob Smith")
        );
        assert_eq!(full_name_from_gecos(",,,", "bob"), None);
        assert!(sender_matches("*", "x@y"));
        assert!(sender_matches("<>", ""));
        assert!(!sender_matches("<>", "a@b"));
        assert!(sender_matches("a@b.test, @c.test", "a+ext@b.test"));
        assert!(sender_matches("@c.test", "z@C.test"));
        assert!(!sender_matches("a@b.test", "b@b.test"));
    }

    #[test]
    fn line_endings() {
        let mut e = Vec::new();
        assert_eq!(crlf(b"a\nb\r\nc\rd", &mut e), b"a\r\nb\r\nc\r\nd\r\n");
        assert_eq!(e, ["3 line endings made CRLF"]);
    }
}
