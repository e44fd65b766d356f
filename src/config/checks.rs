//! Postfix-style content checks: `header-checks` and `body-checks` rules of the data
//! stage, and the header_checks(5) actions their table results name.
//!
//! ```kdl
//! stage "data" {
//!     header-checks file="header_checks"         // a regexp_table(5) file
//!     header-checks table="hc"                   // a declared `table "hc" type="regexp"`
//!     header-checks {                            // inline: pattern, then action
//!         "/^X-Spam-Flag: YES/" "DISCARD spam"
//!     }
//!     body-checks file="body_checks" size-limit="50k"
//! }
//! ```
//!
//! The table is read by [`crate::lookup::parse_regexp`]; this module gives its
//! results a meaning ([`parse_action`]). Every result is validated when the
//! configuration is read, except one whose action word comes from a `$n`
//! substitution: that can only be checked on the message (an invalid action there is
//! logged and treated as DUNNO). Applying checks to a message is
//! `crate::policy::checks`.

use std::sync::Arc;

use super::{Origin, Reply};
use crate::lookup::Table;

/// Postfix's `body_checks_size_limit`: body bytes inspected per message by default.
pub const DEFAULT_BODY_SIZE_LIMIT: usize = 51_200;

/// What a checks table is matched against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    /// Each logical (unfolded) header of the top-level header block that is not a
    /// MIME header (`header-checks`); by default also the MIME and nested classes.
    Header,
    /// MIME headers: `Content-*` and `MIME-Version` at the top level, and every
    /// header of a MIME part (`mime-header-checks`, Postfix's mime_header_checks).
    MimeHeader,
    /// Headers of attached messages, `message/rfc822` parts
    /// (`nested-header-checks`, Postfix's nested_header_checks).
    NestedHeader,
    /// Each line of each text part, decoded, CRLF removed.
    Body,
}

impl Content {
    /// The rule's name in the configuration.
    pub fn rule_name(self) -> &'static str {
        match self {
            Content::Header => "header-checks",
            Content::MimeHeader => "mime-header-checks",
            Content::NestedHeader => "nested-header-checks",
            Content::Body => "body-checks",
        }
    }

    /// `header`, `mime-header`, `nested-header` or `body`, for logs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Content::Header => "header",
            Content::MimeHeader => "mime-header",
            Content::NestedHeader => "nested-header",
            Content::Body => "body",
        }
    }

    /// Whether this matches headers (any class).
    pub fn is_header(self) -> bool {
        self != Content::Body
    }
}

/// One `header-checks` / `body-checks` rule.
#[derive(Clone, Debug)]
pub struct ChecksConfig {
    pub content: Content,
    /// The regexp table: first match per line, results are actions.
    pub table: Arc<Table>,
    /// How a table line is named in reports.
    pub source: ChecksSource,
    /// Body checks: body bytes inspected at most (lines after the limit are not).
    pub size_limit: usize,
}

impl PartialEq for ChecksConfig {
    fn eq(&self, other: &Self) -> bool {
        self.content == other.content
            && Arc::ptr_eq(&self.table, &other.table)
            && self.source == other.source
            && self.size_limit == other.size_limit
    }
}

impl Eq for ChecksConfig {}

/// Where a checks table's lines are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChecksSource {
    /// A file (as written in the configuration): line N is `file:N:1`.
    File(Arc<str>),
    /// Inline entries: line N is the N-th child node, at its place in the config.
    Inline(Arc<[Origin]>),
}

impl ChecksConfig {
    /// Where table line `line` (as [`Table::lookup_with_line`] reports it) is written.
    pub fn origin(&self, line: u32) -> Origin {
        match &self.source {
            ChecksSource::File(file) => Origin {
                file: file.clone(),
                line,
                column: 1,
            },
            ChecksSource::Inline(origins) => origins
                .get((line as usize).wrapping_sub(1))
                .cloned()
                .unwrap_or_else(|| Origin {
                    file: Arc::from("inline"),
                    line,
                    column: 1,
                }),
        }
    }
}

/// A header_checks(5) action, parsed from a table result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckAction {
    /// `REJECT [text]`: refuse the message (550, enhanced code 5.7.1 unless the text
    /// starts with one); inspection stops.
    Reject(Reply),
    /// `DISCARD [text]`: accept and drop the message; inspection stops.
    Discard(String),
    /// `HOLD [text]`: the message is queued on hold; inspection continues.
    Hold(String),
    /// `IGNORE`: delete the line, silently.
    Ignore,
    /// `STRIP [text]`: log, then delete the line.
    Strip(String),
    /// `WARN [text]`: log a warning.
    Warn(String),
    /// `INFO [text]`: log.
    Info(String),
    /// `PREPEND text`: insert a line before this one.
    Prepend(String),
    /// `REPLACE text`: replace this line.
    Replace(String),
    /// `REDIRECT user@domain`: the message goes to this address instead of its
    /// recipients (the last REDIRECT wins).
    Redirect(String),
    /// `BCC user@domain`: add a recipient.
    Bcc(String),
    /// `DUNNO` or `OK`: nothing; the next line is inspected.
    Dunno,
    /// `PASS [text]`: no further header or body inspection for this message.
    Pass(String),
    /// `FILTER NAME`: the message goes through this content filter (the last FILTER
    /// wins; a REDIRECT overrides it, as in Postfix).
    Filter(String),
}

/// Action names, for error help.
pub const ACTIONS: &[&str] = &[
    "REJECT", "DISCARD", "HOLD", "IGNORE", "STRIP", "WARN", "INFO", "PREPEND", "REPLACE",
    "REDIRECT", "BCC", "DUNNO", "OK", "PASS", "FILTER",
];

/// Why a check's result is not an action (see [`parse_action`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("`{action}` takes no text (found `{found}`)")]
    TakesNoText { action: String, found: String },
    #[error("`{action}` needs the text of a line")]
    NeedsText { action: String },
    #[error("`{action}` text must not contain control characters")]
    ControlCharacters { action: String },
    #[error("`{action}` on a header needs a header line `Name: value`, not `{found}`")]
    NotAHeaderLine { action: String, found: String },
    #[error("`{action}` needs one address user@domain, not `{found}`")]
    NotAnAddress { action: String, found: String },
    #[error("`FILTER` needs the name of a `content-filter`, not `{found}`")]
    NotAFilterName { found: String },
    #[error("empty action")]
    Empty,
    #[error("unknown action `{word}`")]
    Unknown { word: String },
}

/// Reads an action (`REJECT 5.7.1 no thanks`). Action words are case-insensitive.
/// `FILTER NAME` names a `content-filter` (checked against the defined ones when the
/// configuration is read).
pub fn parse_action(result: &str, content: Content) -> Result<CheckAction, ActionError> {
    let result = result.trim();
    let (word, rest) = match result.find(char::is_whitespace) {
        Some(n) => (&result[..n], result[n..].trim_start()),
        None => (result, ""),
    };
    let text = || rest.to_owned();
    let no_text = |action: CheckAction| {
        if rest.is_empty() {
            Ok(action)
        } else {
            Err(ActionError::TakesNoText {
                action: word.to_ascii_uppercase(),
                found: rest.to_owned(),
            })
        }
    };
    match word.to_ascii_uppercase().as_str() {
        "REJECT" => Ok(CheckAction::Reject(reject_reply(rest))),
        "DISCARD" => Ok(CheckAction::Discard(text())),
        "HOLD" => Ok(CheckAction::Hold(text())),
        "STRIP" => Ok(CheckAction::Strip(text())),
        "WARN" => Ok(CheckAction::Warn(text())),
        "INFO" => Ok(CheckAction::Info(text())),
        "PASS" => Ok(CheckAction::Pass(text())),
        "IGNORE" => no_text(CheckAction::Ignore),
        "DUNNO" | "OK" => no_text(CheckAction::Dunno),
        "PREPEND" | "REPLACE" => {
            let upper = word.to_ascii_uppercase();
            if rest.is_empty() {
                return Err(ActionError::NeedsText { action: upper });
            }
            if rest.chars().any(|c| c.is_control() && c != '\t') {
                return Err(ActionError::ControlCharacters { action: upper });
            }
            if content.is_header() && !is_header_line(rest) {
                return Err(ActionError::NotAHeaderLine {
                    action: upper,
                    found: rest.to_owned(),
                });
            }
            Ok(if upper == "PREPEND" {
                CheckAction::Prepend(text())
            } else {
                CheckAction::Replace(text())
            })
        }
        "REDIRECT" | "BCC" => {
            let upper = word.to_ascii_uppercase();
            if !is_address(rest) {
                return Err(ActionError::NotAnAddress {
                    action: upper,
                    found: rest.to_owned(),
                });
            }
            Ok(if upper == "REDIRECT" {
                CheckAction::Redirect(text())
            } else {
                CheckAction::Bcc(text())
            })
        }
        "FILTER" => {
            if rest.is_empty() || rest.contains(char::is_whitespace) {
                return Err(ActionError::NotAFilterName {
                    found: rest.to_owned(),
                });
            }
            Ok(CheckAction::Filter(text()))
        }
        "" => Err(ActionError::Empty),
        _ => Err(ActionError::Unknown {
            word: word.to_owned(),
        }),
    }
}

/// The reply of `REJECT text`: an enhanced code at the start of the text is kept
/// (4.x.x makes it a 450, 5.x.x a 550); otherwise 550 5.7.1. No text: Postfix's
/// generic "Message content rejected".
fn reject_reply(text: &str) -> Reply {
    let (first, after) = match text.find(char::is_whitespace) {
        Some(n) => (&text[..n], text[n..].trim_start()),
        None => (text, ""),
    };
    let (enhanced, text) = match Reply::parse_enhanced(first) {
        Some(e) if matches!(e[0], 4 | 5) => (e, after),
        _ => ([5, 7, 1], text),
    };
    let code = if enhanced[0] == 4 { 450 } else { 550 };
    let text = if text.is_empty() {
        "Message content rejected"
    } else {
        text
    };
    Reply::new(code, enhanced, text)
}

/// `Name: value` with a non-empty name of printable ASCII without `:`.
fn is_header_line(text: &str) -> bool {
    match text.split_once(':') {
        Some((name, _)) => !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()),
        None => false,
    }
}

/// `local@domain`, both parts non-empty, no spaces, brackets or control characters.
fn is_address(text: &str) -> bool {
    match text.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && text
                    .chars()
                    .all(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | ',' | '"'))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The action, or the text of its error (what users see).
    fn header(s: &str) -> Result<CheckAction, String> {
        parse_action(s, Content::Header).map_err(|e| e.to_string())
    }

    #[test]
    fn actions() {
        assert_eq!(
            header("REJECT"),
            Ok(CheckAction::Reject(Reply::new(
                550,
                [5, 7, 1],
                "Message content rejected"
            )))
        );
        assert_eq!(
            header("reject 5.7.0 no thanks"),
            Ok(CheckAction::Reject(Reply::new(550, [5, 7, 0], "no thanks")))
        );
        assert_eq!(
            header("Reject no 5.7.0"),
            Ok(CheckAction::Reject(Reply::new(550, [5, 7, 1], "no 5.7.0")))
        );
        assert_eq!(
            header("REJECT 4.7.1 later"),
            Ok(CheckAction::Reject(Reply::new(450, [4, 7, 1], "later")))
        );
        assert_eq!(
            header("discard spam"),
            Ok(CheckAction::Discard("spam".into()))
        );
        assert_eq!(header("HOLD"), Ok(CheckAction::Hold(String::new())));
        assert_eq!(header("ignore"), Ok(CheckAction::Ignore));
        assert_eq!(header("OK"), Ok(CheckAction::Dunno));
        assert_eq!(header("DUNNO"), Ok(CheckAction::Dunno));
        assert_eq!(header("strip gone"), Ok(CheckAction::Strip("gone".into())));
        assert_eq!(header("WARN  odd "), Ok(CheckAction::Warn("odd".into())));
        assert_eq!(header("INFO"), Ok(CheckAction::Info(String::new())));
        assert_eq!(
            header("PASS trusted"),
            Ok(CheckAction::Pass("trusted".into()))
        );
        assert_eq!(
            header("PREPEND X-Seen: yes"),
            Ok(CheckAction::Prepend("X-Seen: yes".into()))
        );
        assert_eq!(
            header("REPLACE Subject: [x]"),
            Ok(CheckAction::Replace("Subject: [x]".into()))
        );
        assert_eq!(
            header("REDIRECT spam@example.test"),
            Ok(CheckAction::Redirect("spam@example.test".into()))
        );
        assert_eq!(
            header("bcc audit@example.test"),
            Ok(CheckAction::Bcc("audit@example.test".into()))
        );
        // a body line may be anything
        assert_eq!(
            parse_action("REPLACE [removed]", Content::Body),
            Ok(CheckAction::Replace("[removed]".into()))
        );
    }

    #[test]
    fn bad_actions() {
        let err = |s: &str| header(s).unwrap_err();
        assert_eq!(err("FROB"), "unknown action `FROB`");
        assert!(err("FILTER").contains("needs the name of a `content-filter`"));
        assert_eq!(
            parse_action("filter amavis", Content::Header),
            Ok(CheckAction::Filter("amavis".into()))
        );
        assert!(err("IGNORE this").contains("takes no text"));
        assert!(err("PREPEND").contains("needs the text"));
        assert!(err("PREPEND no header here").contains("header line"));
        assert!(err("REPLACE : x").contains("header line"));
        assert!(err("REDIRECT nobody").contains("user@domain"));
        assert!(err("BCC a@b c@d").contains("user@domain"));
        assert!(err("").contains("empty"));
    }
}
