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

use super::message::HeaderLine;
use super::{Context, Origin, Verdict};
use crate::config::checks::{CheckAction, ChecksConfig, Content, parse_action};

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

/// `message[range]` becomes `text` (empty text: removed; empty range: inserted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEdit {
    pub range: Range<usize>,
    pub text: Vec<u8>,
}

/// One table match: which table line matched which header or body line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckMatch {
    /// The `header-checks` / `body-checks` rule.
    pub rule: Origin,
    /// The table line that matched (`header_checks:3:1`).
    pub entry: Origin,
    pub content: Content,
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

/// Runs one checks rule on the message in `ctx`. `Some((verdict, entry))` when REJECT
/// or DISCARD ends inspection; everything else accumulates in `state`.
pub(super) fn run(
    cfg: &ChecksConfig,
    rule: &Origin,
    ctx: &Context<'_>,
    state: &mut CheckState,
) -> Option<(Verdict, Origin)> {
    if state.pass {
        return None;
    }
    let message = ctx.body.unwrap_or(&[]);
    match cfg.content {
        Content::Header => {
            for h in ctx.headers {
                let raw = h.raw();
                if let Some(end) = inspect(cfg, rule, h.line(), raw, state) {
                    return end;
                }
            }
        }
        Content::Body => {
            let mut pos = body_start(message, ctx.headers);
            let mut inspected = 0usize;
            while pos < message.len() && inspected < cfg.size_limit {
                let end =
                    memchr::memchr(b'\n', &message[pos..]).map_or(message.len(), |i| pos + i + 1);
                let raw = &message[pos..end];
                let line = raw.strip_suffix(b"\n").unwrap_or(raw);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                inspected += raw.len();
                if !line.is_empty() {
                    let text = String::from_utf8_lossy(line);
                    if let Some(end) = inspect(cfg, rule, &text, pos..end, state) {
                        return end;
                    }
                }
                pos = end;
            }
        }
    }
    None
}

/// Where the body starts: after the header block and the empty line that ends it.
fn body_start(message: &[u8], headers: &[HeaderLine]) -> usize {
    let end = headers.last().map_or(0, |h| h.raw().end).min(message.len());
    if headers.is_empty() || end == 0 {
        return super::message::parse_headers(message).1;
    }
    let rest = &message[end..];
    if rest.starts_with(b"\r\n") {
        end + 2
    } else if rest.starts_with(b"\n") {
        end + 1
    } else {
        end
    }
}

/// Looks up one header or body line. `Some(Some(..))`: inspection ends with a
/// verdict; `Some(None)`: PASS, inspection ends; `None`: go on.
#[allow(clippy::option_option)]
fn inspect(
    cfg: &ChecksConfig,
    rule: &Origin,
    text: &str,
    raw: Range<usize>,
    state: &mut CheckState,
) -> Option<Option<(Verdict, Origin)>> {
    let (result, line) = cfg.table.lookup_with_line(text)?;
    let entry = cfg.origin(line);
    let what = cfg.content.as_str();
    let mut report = CheckMatch {
        rule: rule.clone(),
        entry: entry.clone(),
        content: cfg.content,
        text: shorten(text),
        action: shorten(&result),
    };
    let action = match parse_action(&result, cfg.content) {
        Ok(a) => a,
        Err(e) => {
            error!(%entry, %what, action = %report.action, error = %e, "invalid content check action; treated as DUNNO");
            report.action = format!("{} (invalid: {e}; treated as DUNNO)", report.action);
            state.out.matches.push(report);
            return None;
        }
    };
    state.out.matches.push(report);
    let line_of = |t: &str| format!("{t}\r\n").into_bytes();
    match action {
        CheckAction::Reject(reply) => {
            info!(%entry, %what, text = %shorten(text), reply = %reply, "reject: content check");
            return Some(Some((Verdict::Reject(reply), entry)));
        }
        CheckAction::Discard(t) => {
            info!(%entry, %what, text = %shorten(text), reason = %t, "discard: content check");
            return Some(Some((Verdict::Discard, entry)));
        }
        CheckAction::Hold(t) => {
            info!(%entry, %what, text = %shorten(text), reason = %t, "hold: content check");
            state.hold.get_or_insert(entry);
        }
        CheckAction::Ignore => state.out.edits.push(RawEdit {
            range: raw,
            text: Vec::new(),
        }),
        CheckAction::Strip(t) => {
            info!(%entry, %what, text = %shorten(text), reason = %t, "strip: content check");
            state.out.edits.push(RawEdit {
                range: raw,
                text: Vec::new(),
            });
        }
        CheckAction::Warn(t) => {
            warn!(%entry, %what, text = %shorten(text), reason = %t, "warning: content check")
        }
        CheckAction::Info(t) => {
            info!(%entry, %what, text = %shorten(text), reason = %t, "info: content check")
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
            info!(%entry, %what, text = %shorten(text), reason = %t, "pass: content checks off for this message");
            state.pass = true;
            return Some(None);
        }
    }
    None
}

/// `text` cut to [`MAX_REPORTED`] characters.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(MAX_REPORTED) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}

/// The message with `edits` applied. Edits are sorted by position (stable: two edits
/// at one place keep their order); an edit overlapping an earlier one is dropped.
pub fn apply_raw_edits(message: &[u8], edits: &[RawEdit]) -> Vec<u8> {
    let mut sorted: Vec<&RawEdit> = edits.iter().collect();
    sorted.sort_by_key(|e| e.range.start);
    let mut out = Vec::with_capacity(message.len() + 256);
    let mut at = 0;
    for e in sorted {
        let (start, end) = (
            e.range.start.min(message.len()),
            e.range.end.min(message.len()),
        );
        if start < at || end < start {
            continue;
        }
        out.extend_from_slice(&message[at..start]);
        out.extend_from_slice(&e.text);
        at = end;
    }
    out.extend_from_slice(&message[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::super::{Decision, Pipeline, Verdict, apply_header_edits, parse_headers};
    use super::*;
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
        let out = apply_raw_edits(msg.as_bytes(), &d.checks.edits);
        let out = apply_header_edits(&out, &d.header_changes);
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
        assert_eq!(d.checks.matches.len(), 4);
        assert_eq!(d.checks.matches[0].entry.line, 8);
        assert_eq!(d.checks.matches[1].text, "Received: from b by c");
        assert_eq!(d.checks.matches[1].action, "IGNORE");
    }

    #[test]
    fn folded_headers_are_matched_unfolded() {
        let p = pipeline("header-checks {\n\"/^Subject: hello world$/\" \"REJECT\"\n}\n");
        let (d, _) = data(&p, MSG);
        assert_eq!(
            d.verdict,
            Verdict::Reject(Reply::new(550, [5, 7, 1], "Message content rejected"))
        );
        assert_eq!(d.rule.unwrap().line, 8);
    }

    #[test]
    fn reject_with_and_without_enhanced_code() {
        let p = pipeline("header-checks {\n\"/^Subject:/\" \"REJECT 5.7.0 no thanks\"\n}\n");
        let (d, _) = data(&p, MSG);
        assert_eq!(
            d.verdict,
            Verdict::Reject(Reply::new(550, [5, 7, 0], "no thanks"))
        );
        let p = pipeline("header-checks {\n\"/^Subject: (.*)/\" \"REJECT bad subject $1\"\n}\n");
        let (d, _) = data(&p, MSG);
        assert_eq!(
            d.verdict,
            Verdict::Reject(Reply::new(550, [5, 7, 1], "bad subject hello world"))
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
        let lines: Vec<u32> = d.checks.matches.iter().map(|m| m.entry.line).collect();
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
        assert_eq!(d.checks.matches.len(), 1);
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
            d.checks.recipients(&rcpts),
            ["a@example.test", "audit@example.test"]
        );
        let p = pipeline(
            "header-checks {\n\"/^Subject:/\" \"REDIRECT one@example.test\"\n\"/^From:/\" \"REDIRECT two@example.test\"\n\"/^X-Mailer:/\" \"BCC audit@example.test\"\n}\n",
        );
        let (d, _) = data(&p, MSG);
        assert_eq!(d.checks.recipients(&rcpts), ["two@example.test"]);
    }

    #[test]
    fn invalid_action_at_run_time_is_dunno_and_warn_mode_keeps_nothing() {
        let p = pipeline("header-checks {\n\"/^X-Mailer: (.*)/\" \"$1\"\n}\n");
        let (d, out) = data(&p, MSG);
        assert_eq!(d.verdict, Verdict::Accept);
        assert_eq!(out, MSG);
        assert!(d.checks.matches[0].action.contains("treated as DUNNO"));
        let p = pipeline(
            "header-checks mode=\"warn\" {\n\"/^Received:/\" \"IGNORE\"\n\"/^Subject:/\" \"REJECT\"\n}\n",
        );
        let (d, out) = data(&p, MSG);
        assert_eq!(d.verdict, Verdict::Accept);
        assert_eq!(out, MSG);
        assert_eq!(d.warned.len(), 1);
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
