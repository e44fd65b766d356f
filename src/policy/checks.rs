//! Postfix header_checks / body_checks on a message (`header-checks` and
//! `body-checks` rules of the data stage; see [`crate::config::checks`]).
//!
//! Each logical header of the top-level header block (mtad's own `Received:`
//! included, as Postfix inspects the headers it receives with), or each physical body
//! line up to the size limit, is looked up in the rule's regexp table; the first
//! matching line's action applies to that header or line, then the next one is
//! inspected. Empty body lines are never looked up (as in Postfix).
//!
//! Edits are recorded as byte ranges of the message as received ([`RawEdit`]):
//! IGNORE and STRIP remove exactly that header (continuation lines included) or body
//! line; REPLACE and PREPEND write `text\r\n`. `smtp/data.rs` applies them with
//! [`apply_raw_edits`] before the data hooks' by-name header changes.

use std::ops::Range;

use tracing::{error, info, warn};

use super::{Context, Origin, Verdict};
use crate::config::checks::{CheckAction, ChecksConfig, Content, parse_action};
use crate::message::Headers;
use crate::message::RawEdit;
use crate::message::mime::{HeaderClass, Mime, Part, TransferEncoding};

/// Longest inspected text kept in a [`CheckMatch`] for reports.
const MAX_REPORTED: usize = 200;

/// What content checks did to a message during one data stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContentChecks {
    /// Byte-range edits of the message as received, in message order.
    pub edits: Vec<RawEdit>,
    /// `REDIRECT`: the last one; replaces every recipient (BCC ones included).
    pub redirect: Option<String>,
    /// `BCC`: recipients added, in order, without duplicates.
    pub bcc: Vec<String>,
    /// Every match, in order, for `mtactl test-policy` and logs.
    pub matches: Vec<CheckMatch>,
    /// `FILTER NAME`: the last one, with the table line that said it.
    pub filter: Option<(String, Origin)>,
}

impl ContentChecks {
    /// The recipients after REDIRECT and BCC.
    pub fn recipients(&self, original: &[String]) -> Vec<String> {
        if let Some(to) = &self.redirect {
            return vec![to.clone()];
        }
        let mut out = original.to_vec();
        for b in &self.bcc {
            if !out.iter().any(|r| r.eq_ignore_ascii_case(b)) {
                out.push(b.clone());
            }
        }
        out
    }

    /// Whether the envelope's recipients change.
    pub fn changes_recipients(&self) -> bool {
        self.redirect.is_some() || !self.bcc.is_empty()
    }
}

/// One table match: which table line matched which header or body line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckMatch {
    /// The `header-checks` / `body-checks` rule.
    pub rule: Origin,
    /// The table line that matched (`header_checks:3:1`).
    pub entry: Origin,
    /// The class of what matched: a top-level header, a MIME header, a header of an
    /// attached message, a body line.
    pub content: Content,
    /// The MIME part it is in (`part 2 (application/octet-stream "evil.exe")`);
    /// `None` for a top-level header or the body of a non-MIME message.
    pub part: Option<String>,
    /// The header (unfolded) or body line, shortened for reports.
    pub text: String,
    /// The action as expanded (`REJECT 5.7.1 no thanks`); an invalid one is reported
    /// with ` (invalid: ..., treated as DUNNO)`.
    pub action: String,
}

/// The state of checks across the rules of one data stage.
#[derive(Debug, Default)]
pub(super) struct CheckState {
    /// `PASS` fired: no further inspection for this message.
    pub pass: bool,
    /// `HOLD` fired: the table line that said so.
    pub hold: Option<Origin>,
    pub out: ContentChecks,
}

/// Which header classes a header-checks rule inspects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Classes {
    /// Postfix's mime_header_checks default (= header_checks): no dedicated
    /// `mime-header-checks` rule in the stage.
    pub mime: bool,
    /// Likewise for `nested-header-checks`.
    pub nested: bool,
}

impl Classes {
    /// Whether a rule on `content` inspects headers of `class`.
    fn inspects(self, content: Content, class: HeaderClass) -> bool {
        match (content, class) {
            (Content::Header, HeaderClass::Primary) => true,
            (Content::Header, HeaderClass::Mime) => self.mime,
            (Content::Header, HeaderClass::Nested) => self.nested,
            (Content::MimeHeader, HeaderClass::Mime) => true,
            (Content::NestedHeader, HeaderClass::Nested) => true,
            _ => false,
        }
    }
}

/// The [`Content`] a header of `class` is reported as.
fn class_content(class: HeaderClass) -> Content {
    match class {
        HeaderClass::Primary => Content::Header,
        HeaderClass::Mime => Content::MimeHeader,
        HeaderClass::Nested => Content::NestedHeader,
    }
}

/// Whether the top-level headers declare a container (`multipart/*`,
/// `message/*`): only then are there part headers to inspect.
fn has_parts(headers: &Headers) -> bool {
    headers.iter().any(|h| {
        h.name().eq_ignore_ascii_case("content-type") && {
            let v = h.value().trim_start().to_ascii_lowercase();
            v.starts_with("multipart/") || v.starts_with("message/")
        }
    })
}

/// One thing to inspect: its text, its raw bytes (when it can be edited), how it is
/// reported.
struct Item<'a> {
    text: &'a str,
    raw: Option<Range<usize>>,
    content: Content,
    part: Option<&'a Part>,
}

/// Runs one checks rule on the message in `ctx`. `Some((verdict, entry))` when REJECT
/// or DISCARD ends inspection; everything else accumulates in `state`. `mime` reads
/// the message's MIME structure, once per data stage, when it is needed.
pub(super) fn run(
    cfg: &ChecksConfig,
    rule: &Origin,
    ctx: &Context<'_>,
    mime: &std::cell::OnceCell<Mime>,
    classes: Classes,
    state: &mut CheckState,
) -> Option<(Verdict, Origin)> {
    if state.pass {
        return None;
    }
    let message = ctx.body.unwrap_or(&[]);
    let mime = || mime.get_or_init(|| Mime::parse(message));
    if cfg.content.is_header() {
        for h in ctx.headers {
            let class = HeaderClass::of_top_level(h.name());
            if !classes.inspects(cfg.content, class) {
                continue;
            }
            let item = Item {
                text: h.line(),
                raw: Some(h.raw()),
                content: class_content(class),
                part: None,
            };
            if let Some(end) = inspect(cfg, rule, item, state) {
                return end;
            }
        }
        let wants_parts = classes.inspects(cfg.content, HeaderClass::Mime)
            || classes.inspects(cfg.content, HeaderClass::Nested);
        if !wants_parts || !has_parts(ctx.headers) {
            return None;
        }
        let mime = mime();
        if let Some(end) = uninspected(mime, rule) {
            return Some(end);
        }
        for part in mime.parts.iter().skip(1) {
            if !classes.inspects(cfg.content, part.class) {
                continue;
            }
            for h in &part.headers {
                let item = Item {
                    text: h.line(),
                    raw: part.addressable.then(|| h.raw()),
                    content: class_content(part.class),
                    part: Some(part),
                };
                if let Some(end) = inspect(cfg, rule, item, state) {
                    return end;
                }
            }
        }
        return None;
    }
    let mime = mime();
    if let Some(end) = uninspected(mime, rule) {
        return Some(end);
    }
    let multipart = mime.parts.len() > 1;
    for part in &mime.parts {
        for (line, raw) in part.lines(message, cfg.size_limit) {
            if line.is_empty() {
                continue;
            }
            let raw = if part.addressable { raw } else { None };
            let item = Item {
                text: &line,
                raw,
                content: Content::Body,
                part: multipart.then_some(part),
            };
            if let Some(end) = inspect(cfg, rule, item, state) {
                return end;
            }
        }
    }
    None
}

/// A message with more MIME parts (or deeper nesting) than mtad inspects, checked by a
/// rule that reads parts: refused, since what lies past the caps would pass unseen (an
/// attachment as part 101). Postfix inspects every part; mtad caps the parts for
/// memory and refuses rather than let such a message through unchecked.
fn uninspected(mime: &Mime, rule: &Origin) -> Option<(Verdict, Origin)> {
    if !mime.truncated {
        return None;
    }
    warn!(
        rule = %rule,
        parts = mime.parts.len(),
        "message refused: more MIME parts or nesting than content checks inspect"
    );
    Some((
        Verdict::Reject(crate::config::Reply::new(
            554,
            [5, 6, 0],
            "Message content rejected: too many MIME parts to inspect",
        )),
        rule.clone(),
    ))
}

/// Looks up one header or body line. `Some(Some(..))`: inspection ends with a
/// verdict; `Some(None)`: PASS, inspection ends; `None`: go on.
#[allow(clippy::option_option)]
fn inspect(
    cfg: &ChecksConfig,
    rule: &Origin,
    item: Item<'_>,
    state: &mut CheckState,
) -> Option<Option<(Verdict, Origin)>> {
    let text = item.text;
    let (result, line) = cfg.table.lookup_with_line(text)?;
    let entry = cfg.origin(line);
    let what = item.content.as_str();
    let part = item.part.map(describe);
    let mut report = CheckMatch {
        rule: rule.clone(),
        entry: entry.clone(),
        content: item.content,
        part: part.clone(),
        text: shorten(text),
        action: shorten(&result),
    };
    let part = part.unwrap_or_default();
    let action = match parse_action(&result, cfg.content) {
        Ok(a) => a,
        Err(e) => {
            error!(%entry, %what, %part, action = %report.action, error = %e, "invalid content check action; treated as DUNNO");
            report.action = format!("{} (invalid: {e}; treated as DUNNO)", report.action);
            state.out.matches.push(report);
            return None;
        }
    };
    let edits = matches!(
        action,
        CheckAction::Ignore
            | CheckAction::Strip(_)
            | CheckAction::Prepend(_)
            | CheckAction::Replace(_)
    );
    let raw = match item.raw {
        Some(raw) => raw,
        None if edits => {
            warn!(%entry, %what, %part, text = %for_log(text), action = %report.action, "content check cannot edit an encoded MIME part; treated as DUNNO");
            report.action = format!(
                "{} (encoded part: cannot edit; treated as DUNNO)",
                report.action
            );
            state.out.matches.push(report);
            return None;
        }
        None => 0..0,
    };
    state.out.matches.push(report);
    let line_of = |t: &str| format!("{t}\r\n").into_bytes();
    match action {
        CheckAction::Reject(reply) => {
            info!(%entry, %what, %part, text = %for_log(text), reply = %reply, "reject: content check");
            return Some(Some((Verdict::Reject(reply), entry)));
        }
        CheckAction::Discard(t) => {
            info!(%entry, %what, %part, text = %for_log(text), reason = %t, "discard: content check");
            return Some(Some((Verdict::Discard, entry)));
        }
        CheckAction::Hold(t) => {
            info!(%entry, %what, %part, text = %for_log(text), reason = %t, "hold: content check");
            state.hold.get_or_insert(entry);
        }
        CheckAction::Ignore => state.out.edits.push(RawEdit {
            range: raw,
            text: Vec::new(),
        }),
        CheckAction::Strip(t) => {
            info!(%entry, %what, %part, text = %for_log(text), reason = %t, "strip: content check");
            state.out.edits.push(RawEdit {
                range: raw,
                text: Vec::new(),
            });
        }
        CheckAction::Warn(t) => {
            warn!(%entry, %what, %part, text = %for_log(text), reason = %t, "warning: content check")
        }
        CheckAction::Info(t) => {
            info!(%entry, %what, %part, text = %for_log(text), reason = %t, "info: content check")
        }
        CheckAction::Prepend(t) => state.out.edits.push(RawEdit {
            range: raw.start..raw.start,
            text: line_of(&t),
        }),
        CheckAction::Replace(t) => state.out.edits.push(RawEdit {
            range: raw,
            text: line_of(&t),
        }),
        CheckAction::Redirect(to) => state.out.redirect = Some(to),
        CheckAction::Filter(name) => state.out.filter = Some((name, entry.clone())),
        CheckAction::Bcc(to) => {
            if !state.out.bcc.iter().any(|b| b.eq_ignore_ascii_case(&to)) {
                state.out.bcc.push(to);
            }
        }
        CheckAction::Dunno => {}
        CheckAction::Pass(t) => {
            info!(%entry, %what, %part, text = %for_log(text), reason = %t, "pass: content checks off for this message");
            state.pass = true;
            return Some(None);
        }
    }
    None
}

/// `part 2 (application/octet-stream "evil.exe", base64)`, for reports.
fn describe(part: &Part) -> String {
    let mut out = format!("part {} ({}", part.index, part.content_type);
    if let Some(name) = &part.filename {
        out.push_str(&format!(" {:?}", shorten(name)));
    }
    if part.encoding != TransferEncoding::Identity {
        out.push_str(", ");
        out.push_str(part.encoding.as_str());
    }
    out.push(')');
    out
}

/// `text` shortened for a log line, control characters escaped (a folded header
/// keeps its line breaks: they must not start a line of the log).
fn for_log(text: &str) -> String {
    shorten(text).escape_debug().to_string()
}

/// `text` cut to [`MAX_REPORTED`] characters.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(MAX_REPORTED) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{
        Decision, Pipeline, Verdict, apply_header_edits, apply_raw_edits, parse_headers,
    };
    use super::*;
    use crate::config::checks::Content;
    use crate::config::{Config, Reply, Stage};

    const PRELUDE: &str = "server {\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}\nlisten \"mx\" address=\"127.0.0.1:2525\"\n";

    fn pipeline(rules: &str) -> Pipeline {
        let text = format!("{PRELUDE}stage \"data\" {{\n{rules}}}\n");
        match Config::parse("mtad.kdl", &text) {
            Ok(config) => {
                Pipeline::build(&config).unwrap_or_else(|e| panic!("{}", crate::config::render(&e)))
            }
            Err(e) => panic!("{}", crate::config::render(&e)),
        }
    }

    /// The data stage on `msg`, and the message as it would be queued.
    fn data(p: &Pipeline, msg: &str) -> (Decision, String) {
        let (headers, _) = parse_headers(msg.as_bytes());
        let ctx = Context {
            headers: &headers,
            body: Some(msg.as_bytes()),
            ..Context::new("127.0.0.1".parse().unwrap(), "mx")
        };
        let d = p.evaluate(Stage::Data, &ctx);
        let out = apply_raw_edits(msg.as_bytes(), &d.data().unwrap().checks.edits);
        let out = apply_header_edits(&out, &d.data().unwrap().header_changes);
        (d, String::from_utf8(out).unwrap())
    }

    const MSG: &str = "Received: from a ([1.2.3.4])\r\n\tby mx with ESMTP id 1; Mon\r\nReceived: from b\r\n by c\r\nSubject: hello\r\n world\r\nX-Mailer: spamtool\r\nFrom: a@example.test\r\n\r\nline one\r\n\r\nviagra here\r\nlast\r\n";

    #[test]
    fn ignore_replace_prepend_exactly() {
        let p = pipeline(
            "header-checks {\n\"/^Received:/\" \"IGNORE\"\n\"/^X-Mailer:/\" \"REPLACE X-Mailer: hidden\"\n\"/^From:/\" \"PREPEND X-Checked: yes\"\n}\n",
        );
        let (d, out) = data(&p, MSG);
        assert_eq!(d.verdict, Verdict::Accept);
        assert_eq!(
            out,
            "Subject: hello\r\n world\r\nX-Mailer: hidden\r\nX-Checked: yes\r\nFrom: a@example.test\r\n\r\nline one\r\n\r\nviagra here\r\nlast\r\n"
        );
        // both Received headers matched line 1 of the inline table (mtad.kdl:8)
        assert_eq!(d.data().unwrap().checks.matches.len(), 4);
        assert_eq!(d.data().unwrap().checks.matches[0].entry.line, 8);
        assert_eq!(
            d.data().unwrap().checks.matches[1].text,
            "Received: from b\n by c"
        );
        assert_eq!(d.data().unwrap().checks.matches[1].action, "IGNORE");
    }

    #[test]
    fn folded_headers_keep_their_line_breaks() {
        // as in Postfix: `Subject: hello\n world` (LF, no CR), `.` matches the LF
        let p = pipeline(
            "header-checks {\n\"/^Subject: hello world$/\" \"REJECT\"\n\"/^Subject: hello[[:cntrl:]] world$/\" \"REJECT\"\n}\n",
        );
        let (d, _) = data(&p, MSG);
        assert_eq!(
            d.verdict,
            Verdict::Reject(Reply::new(550, [5, 7, 1], "Message content rejected"))
        );
        // the second pattern matched (mtad.kdl:9)
        assert_eq!(d.rule.unwrap().line, 9);
        let p = pipeline("header-checks {\n\"/[)].\\tby mx/\" \"REJECT\"\n}\n");
        assert!(rejected(&data(&p, MSG).0));
    }

    #[test]
    fn obsolete_white_space_before_the_colon_is_a_header() {
        // one such line used to end the header block: the attachment behind it
        // escaped the MIME header checks
        let msg = MULTI.replace("From: a@", "X-Mailer : Evil\r\nFrom: a@");
        let p = pipeline(&format!(
            "header-checks {{\n\"/^X-Mailer: Evil$/\" \"WARN evil\"\n{EXE}}}\n"
        ));
        let (d, _) = data(&p, &msg);
        assert!(rejected(&d), "{d:?}");
        assert_eq!(d.data().unwrap().checks.matches[0].text, "X-Mailer: Evil");
        assert_eq!(
            d.data().unwrap().checks.matches[1].content,
            Content::MimeHeader
        );
        // inside a part too
        let msg = MULTI.replace(
            "Content-Type: application/octet-stream; name",
            "X-Part : x\r\nContent-Type : application/octet-stream; name",
        );
        let p = pipeline(&format!("header-checks {{\n{EXE}}}\n"));
        let (d, _) = data(&p, &msg);
        assert!(rejected(&d), "{d:?}");
        assert!(
            d.data().unwrap().checks.matches[0]
                .text
                .starts_with("Content-Type: application/octet-stream")
        );
    }

    #[test]
    fn reject_with_and_without_enhanced_code() {
        let p = pipeline("header-checks {\n\"/^Subject:/\" \"REJECT 5.7.0 no thanks\"\n}\n");
        let (d, _) = data(&p, MSG);
        assert_eq!(
            d.verdict,
            Verdict::Reject(Reply::new(550, [5, 7, 0], "no thanks"))
        );
        let p =
            pipeline("header-checks {\n\"/^Subject: ([a-z]+)/\" \"REJECT bad subject $1\"\n}\n");
        let (d, _) = data(&p, MSG);
        assert_eq!(
            d.verdict,
            Verdict::Reject(Reply::new(550, [5, 7, 1], "bad subject hello"))
        );
    }

    #[test]
    fn first_match_per_header_then_the_next_header() {
        let p = pipeline(
            "header-checks {\n\"/^Subject:/\" \"DUNNO\"\n\"/^Subject:/\" \"REJECT\"\n\"/^X-Mailer:/\" \"WARN odd mailer\"\n}\n",
        );
        let (d, out) = data(&p, MSG);
        assert_eq!(d.verdict, Verdict::Accept);
        assert_eq!(out, MSG);
        let lines: Vec<u32> = d
            .data()
            .unwrap()
            .checks
            .matches
            .iter()
            .map(|m| m.entry.line)
            .collect();
        assert_eq!(lines, [8, 10]);
    }

    #[test]
    fn hold_then_reject_rejects_and_hold_alone_holds() {
        let p = pipeline(
            "header-checks {\n\"/^Subject:/\" \"HOLD look\"\n\"/^From:/\" \"REJECT 5.7.1 no\"\n}\n",
        );
        assert!(matches!(data(&p, MSG).0.verdict, Verdict::Reject(_)));
        let p = pipeline("header-checks {\n\"/^Subject:/\" \"HOLD look\"\n}\naccept\n");
        let (d, _) = data(&p, MSG);
        assert_eq!(d.verdict, Verdict::Hold);
        assert_eq!(d.rule.unwrap().line, 8);
        // hold from headers, then a body REJECT: rejected, as in Postfix
        let p = pipeline(
            "header-checks {\n\"/^Subject:/\" \"HOLD\"\n}\nbody-checks {\n\"/viagra/\" \"REJECT\"\n}\n",
        );
        assert!(matches!(data(&p, MSG).0.verdict, Verdict::Reject(_)));
    }

    #[test]
    fn pass_turns_off_further_inspection() {
        let p = pipeline(
            "header-checks {\n\"/^Received: from a/\" \"PASS trusted\"\n\"/^Subject:/\" \"REJECT\"\n}\nbody-checks {\n\"/viagra/\" \"REJECT\"\n}\n",
        );
        let (d, _) = data(&p, MSG);
        assert_eq!(d.verdict, Verdict::Accept);
        assert_eq!(d.data().unwrap().checks.matches.len(), 1);
    }

    #[test]
    fn body_lines_edits_discard_and_size_limit() {
        let p = pipeline(
            "body-checks {\n\"/^viagra/\" \"REPLACE [removed]\"\n\"/^last$/\" \"IGNORE\"\n\"/^line one$/\" \"PREPEND first\"\n}\n",
        );
        let (_, out) = data(&p, MSG);
        assert!(
            out.ends_with("\r\n\r\nfirst\r\nline one\r\n\r\n[removed]\r\n"),
            "{out:?}"
        );
        // headers are not body lines
        let p = pipeline("body-checks {\n\"/^Subject/\" \"DISCARD\"\n}\n");
        assert_eq!(data(&p, MSG).0.verdict, Verdict::Accept);
        let p = pipeline("body-checks {\n\"/viagra/\" \"DISCARD\"\n}\n");
        assert_eq!(data(&p, MSG).0.verdict, Verdict::Discard);
        // only the first 10 body bytes are inspected: "line one\r\n"
        let p = pipeline("body-checks size-limit=10 {\n\"/viagra/\" \"DISCARD\"\n}\n");
        assert_eq!(data(&p, MSG).0.verdict, Verdict::Accept);
    }

    #[test]
    fn redirect_and_bcc() {
        let p = pipeline(
            "header-checks {\n\"/^Subject:/\" \"BCC audit@example.test\"\n\"/^From:/\" \"BCC audit@example.test\"\n}\n",
        );
        let (d, _) = data(&p, MSG);
        let rcpts = vec!["a@example.test".to_owned()];
        assert_eq!(
            d.data().unwrap().checks.recipients(&rcpts),
            ["a@example.test", "audit@example.test"]
        );
        let p = pipeline(
            "header-checks {\n\"/^Subject:/\" \"REDIRECT one@example.test\"\n\"/^From:/\" \"REDIRECT two@example.test\"\n\"/^X-Mailer:/\" \"BCC audit@example.test\"\n}\n",
        );
        let (d, _) = data(&p, MSG);
        assert_eq!(
            d.data().unwrap().checks.recipients(&rcpts),
            ["two@example.test"]
        );
    }

    #[test]
    fn invalid_action_at_run_time_is_dunno_and_warn_mode_keeps_nothing() {
        let p = pipeline("header-checks {\n\"/^X-Mailer: (.*)/\" \"$1\"\n}\n");
        let (d, out) = data(&p, MSG);
        assert_eq!(d.verdict, Verdict::Accept);
        assert_eq!(out, MSG);
        assert!(
            d.data().unwrap().checks.matches[0]
                .action
                .contains("treated as DUNNO")
        );
        let p = pipeline(
            "header-checks mode=\"warn\" {\n\"/^Received:/\" \"IGNORE\"\n\"/^Subject:/\" \"REJECT\"\n}\n",
        );
        let (d, out) = data(&p, MSG);
        assert_eq!(d.verdict, Verdict::Accept);
        assert_eq!(out, MSG);
        assert_eq!(d.warned.len(), 1);
    }

    /// A multipart message: a QP text part, a base64 text part, an identity text
    /// part, an .exe attachment, an attached message.
    const MULTI: &str = "Received: from x\r\nFrom: a@example.test\r\nSubject: hi\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"BB\"\r\n\r\npreamble viagra\r\n--BB\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nhello caf=C3=A9 cheap=20pills\r\n--BB\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nYnV5IGNoZWFwIHdhdGNoZXMKc2Vjb25kIGxpbmUK\r\n--BB\r\nContent-Type: text/plain\r\n\r\nplain line\r\n--BB\r\nContent-Type: application/octet-stream; name=\"evil.exe\"\r\nContent-Disposition: attachment;\r\n filename=\"evil.exe\"\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--BB\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nFrom: b@example.test\r\n\r\ninner body\r\n--BB--\r\n";

    const EXE: &str = "\"/^Content-(Type|Disposition):.*name=\\\"?.*\\\\.(exe|scr|bat)\\\"?/\" \"REJECT 5.7.1 executable attachments are refused\"\n";

    fn rejected(d: &Decision) -> bool {
        matches!(d.verdict, Verdict::Reject(_))
    }

    /// An attachment past the part cap is not waved through: a message whose parts
    /// are not all inspected is refused by a rule that reads parts.
    #[test]
    fn parts_past_the_cap_are_not_waved_through() {
        let mut msg = String::from(
            "From: a@example.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"BB\"\r\n\r\n",
        );
        for i in 0..150 {
            msg.push_str(&format!(
                "--BB\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n"
            ));
        }
        msg.push_str("--BB\r\nContent-Type: application/octet-stream; name=\"evil.exe\"\r\n\r\nTVqQ\r\n--BB--\r\n");
        let too_many = Verdict::Reject(Reply::new(
            554,
            [5, 6, 0],
            "Message content rejected: too many MIME parts to inspect",
        ));
        for rules in [
            format!("mime-header-checks {{\n{EXE}}}\n"),
            "body-checks {\n\"/nothing like this/\" \"REJECT\"\n}\n".to_owned(),
        ] {
            let (d, _) = data(&pipeline(&rules), &msg);
            assert_eq!(d.verdict, too_many, "{rules}");
        }
        // a rule that reads part headers refuses it even if no pattern would match
        let p = pipeline(
            "header-checks {\n\"/^Subject: nothing/\" \"REJECT\"\n}\nmime-header-checks {\n\"/^X-None/\" \"WARN\"\n}\n",
        );
        let (d, _) = data(&p, &msg);
        assert_eq!(d.verdict, too_many, "mime-header-checks read parts");
        // below the cap, the same kind of message is inspected part by part
        let few = msg.replacen("--BB\r\nContent-Type: text/plain\r\n\r\npart 0\r\n", "", 1);
        let few: String = few
            .split("--BB\r\nContent-Type: text/plain")
            .enumerate()
            .filter(|(i, _)| *i == 0 || *i > 140)
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join("--BB\r\nContent-Type: text/plain");
        let (d, _) = data(
            &pipeline(&format!("mime-header-checks {{\n{EXE}}}\n")),
            &few,
        );
        assert_eq!(
            d.verdict,
            Verdict::Reject(Reply::new(
                550,
                [5, 7, 1],
                "executable attachments are refused"
            ))
        );
    }

    #[test]
    fn mime_headers_default_to_header_checks() {
        let p = pipeline(&format!("header-checks {{\n{EXE}}}\n"));
        let (d, _) = data(&p, MULTI);
        assert_eq!(
            d.verdict,
            Verdict::Reject(Reply::new(
                550,
                [5, 7, 1],
                "executable attachments are refused"
            ))
        );
        let m = &d.data().unwrap().checks.matches[0];
        assert_eq!(m.content, Content::MimeHeader);
        assert_eq!(
            m.part.as_deref(),
            Some("part 4 (application/octet-stream \"evil.exe\", base64)")
        );
        assert_eq!(
            m.text,
            "Content-Type: application/octet-stream; name=\"evil.exe\""
        );
        // nested headers too, by default
        let p = pipeline("header-checks {\n\"/^Subject: inner/\" \"REJECT\"\n}\n");
        let (d, _) = data(&p, MULTI);
        assert!(rejected(&d));
        assert_eq!(
            d.data().unwrap().checks.matches[0].content,
            Content::NestedHeader
        );
        assert_eq!(
            d.data().unwrap().checks.matches[0].part.as_deref(),
            Some("part 6 (text/plain)")
        );
        // the top-level Content-Type is a MIME header
        let p = pipeline("header-checks {\n\"/^Content-Type: multipart/\" \"WARN mime\"\n}\n");
        let (d, _) = data(&p, MULTI);
        assert_eq!(
            d.data().unwrap().checks.matches[0].content,
            Content::MimeHeader
        );
        assert_eq!(d.data().unwrap().checks.matches[0].part, None);
    }

    #[test]
    fn dedicated_mime_and_nested_rules_override_the_default() {
        // a mime-header-checks rule: header-checks no longer sees MIME headers
        let p = pipeline(&format!(
            "header-checks {{\n{EXE}\"/^Content-Type: multipart/\" \"REJECT\"\n}}\nmime-header-checks {{\n\"/^X-Nothing/\" \"REJECT\"\n}}\n"
        ));
        let (d, out) = data(&p, MULTI);
        assert_eq!(d.verdict, Verdict::Accept);
        assert_eq!(out, MULTI);
        let p = pipeline(&format!("mime-header-checks {{\n{EXE}}}\n"));
        let (d, _) = data(&p, MULTI);
        assert!(rejected(&d));
        // the rule's class only: Subject is not a MIME header, inner headers are nested
        let p = pipeline("mime-header-checks {\n\"/^Subject:/\" \"REJECT\"\n}\n");
        assert_eq!(data(&p, MULTI).0.verdict, Verdict::Accept);
        // nested: a dedicated rule sees attached messages' headers, header-checks not
        let p = pipeline(
            "header-checks {\n\"/^Subject: inner/\" \"REJECT\"\n}\nnested-header-checks {\n\"/^From: b@/\" \"HOLD\"\n}\n",
        );
        let (d, _) = data(&p, MULTI);
        assert_eq!(d.verdict, Verdict::Hold);
        assert_eq!(d.data().unwrap().checks.matches.len(), 1);
        assert_eq!(
            d.data().unwrap().checks.matches[0].content,
            Content::NestedHeader
        );
        // a non-MIME message: top-level headers only, no MIME parse needed
        let p = pipeline("mime-header-checks {\n\"/^Subject/\" \"REJECT\"\n}\n");
        assert_eq!(data(&p, MSG).0.verdict, Verdict::Accept);
    }

    #[test]
    fn part_header_edits_are_exact() {
        let p = pipeline(
            "mime-header-checks {\n\"/^Content-Disposition: attachment/\" \"IGNORE\"\n\"/^Content-Type: application/\" \"REPLACE Content-Type: text/plain\"\n}\nnested-header-checks {\n\"/^Subject: inner/\" \"PREPEND X-Inner: yes\"\n}\n",
        );
        let (d, out) = data(&p, MULTI);
        assert_eq!(d.verdict, Verdict::Accept);
        let want = MULTI
            .replace(
                "Content-Type: application/octet-stream; name=\"evil.exe\"\r\nContent-Disposition: attachment;\r\n filename=\"evil.exe\"\r\n",
                "Content-Type: text/plain\r\n",
            )
            .replace("Subject: inner\r\n", "X-Inner: yes\r\nSubject: inner\r\n");
        assert_eq!(out, want);
    }

    #[test]
    fn body_checks_see_decoded_text_parts_only() {
        // base64 text part, decoded
        let p = pipeline("body-checks {\n\"/^buy cheap watches$/\" \"REJECT 5.7.1 spam\"\n}\n");
        let (d, _) = data(&p, MULTI);
        assert_eq!(
            d.verdict,
            Verdict::Reject(Reply::new(550, [5, 7, 1], "spam"))
        );
        assert_eq!(
            d.data().unwrap().checks.matches[0].part.as_deref(),
            Some("part 2 (text/plain, base64)")
        );
        // quoted-printable, decoded (soft spaces and UTF-8)
        let p = pipeline("body-checks {\n\"/café cheap pills/\" \"DISCARD\"\n}\n");
        assert_eq!(data(&p, MULTI).0.verdict, Verdict::Discard);
        // attachments' base64 and part headers are not body lines; nor is the
        // preamble (not a text part)
        for pattern in ["TVqQ", "^Content-", "preamble", "^--BB"] {
            let p = pipeline(&format!("body-checks {{\n\"/{pattern}/\" \"REJECT\"\n}}\n"));
            assert_eq!(data(&p, MULTI).0.verdict, Verdict::Accept, "{pattern}");
        }
        // the attached message's body is a text part
        let p = pipeline("body-checks {\n\"/^inner body$/\" \"REJECT\"\n}\n");
        assert!(rejected(&data(&p, MULTI).0));
        // the size limit is per part: 5 bytes of each part still reach "plain"
        let p = pipeline("body-checks size-limit=5 {\n\"/^plain line$/\" \"REJECT\"\n}\n");
        assert!(rejected(&data(&p, MULTI).0));
        let p = pipeline("body-checks size-limit=5 {\n\"/^second line$/\" \"REJECT\"\n}\n");
        assert_eq!(data(&p, MULTI).0.verdict, Verdict::Accept);
    }

    #[test]
    fn body_edits_on_identity_parts_and_dunno_on_encoded_ones() {
        let p = pipeline(
            "body-checks {\n\"/^plain line$/\" \"REPLACE [removed]\"\n\"/cheap watches/\" \"REPLACE [removed]\"\n\"/^second line$/\" \"IGNORE\"\n\"/^inner body$/\" \"PREPEND before\"\n}\n",
        );
        let (d, out) = data(&p, MULTI);
        assert_eq!(d.verdict, Verdict::Accept);
        let want = MULTI
            .replace("\r\nplain line\r\n", "\r\n[removed]\r\n")
            .replace("\r\ninner body\r\n", "\r\nbefore\r\ninner body\r\n");
        assert_eq!(out, want);
        let degraded: Vec<&str> = d
            .data()
            .unwrap()
            .checks
            .matches
            .iter()
            .filter(|m| m.action.contains("cannot edit"))
            .map(|m| m.text.as_str())
            .collect();
        assert_eq!(degraded, ["buy cheap watches", "second line"]);
        assert_eq!(d.data().unwrap().checks.edits.len(), 2);
    }

    #[test]
    fn hostile_mime_is_bounded() {
        let mut msg =
            String::from("Subject: x\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n");
        for i in 0..3000 {
            msg.push_str(&format!(
                "--b\r\nContent-Type: text/plain\r\nX-N: {i}\r\n\r\nline {i}\r\n"
            ));
        }
        msg.push_str("--b--\r\n");
        let p = pipeline(
            "header-checks {\n\"/^X-N: 2999/\" \"REJECT\"\n}\nbody-checks {\n\"/^line 2999$/\" \"REJECT\"\n}\n",
        );
        // part 2999 is beyond the cap: not inspected, so the message is refused rather
        // than let through unchecked
        assert_eq!(
            data(&p, &msg).0.verdict,
            Verdict::Reject(Reply::new(
                554,
                [5, 6, 0],
                "Message content rejected: too many MIME parts to inspect"
            ))
        );
        let p = pipeline("header-checks {\n\"/^X-N: 98$/\" \"REJECT\"\n}\n");
        assert!(rejected(&data(&p, &msg).0));
    }

    #[test]
    fn raw_edits_never_panic() {
        let edits = [
            RawEdit {
                range: 5..100,
                text: b"x".to_vec(),
            },
            RawEdit {
                range: 2..4,
                text: Vec::new(),
            },
            RawEdit {
                range: 3..3,
                text: b"overlap".to_vec(),
            },
        ];
        assert_eq!(apply_raw_edits(b"0123456789", &edits), b"014x");
    }
}
