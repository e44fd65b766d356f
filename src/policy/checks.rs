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
                let end = memchr::memchr(b'\n', &message[pos..]).map_or(message.len(), |i| pos + i + 1);
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
        let (start, end) = (e.range.start.min(message.len()), e.range.end.min(message.len()));
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
