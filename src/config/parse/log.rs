//! The `log` block (a child module of `parser`, for its helpers): where mtad's log
//! goes and how it is written.
//!
//! ```kdl
//! log {
//!     output "syslog"              // "auto" (default), "stderr", "syslog", "journal"
//!     format "postfix"             // stderr only: "text" (default), "postfix", "json"
//!     syslog-name "mtad"           // NAME in NAME/smtpd[pid] (Postfix's syslog_name)
//!     syslog-facility "mail"       // Postfix's syslog_facility
//!     syslog-socket "/dev/log"     // where syslog datagrams go
//!     journal-socket "/run/systemd/journal/socket"
//! }
//! ```

use kdl::KdlNode;

use super::{Parser, suggest};
use crate::config::{Facility, LogFormat, LogOutput, LogSettings, valid_syslog_name};

pub(crate) const KEYS: &[&str] = &[
    "output",
    "format",
    "syslog-name",
    "syslog-facility",
    "syslog-socket",
    "journal-socket",
];
const USAGE: &str = "log { output \"syslog\"; syslog-facility \"mail\" }";

impl Parser {
    pub(super) fn log_settings(&mut self, node: &KdlNode) -> LogSettings {
        let mut settings = LogSettings::default();
        let Some(children) = self.settings_block(node, "log", KEYS, USAGE) else {
            return settings;
        };
        let mut format_at = None;
        for child in children {
            let key = child.name().value();
            let Some(value) = self.setting(child, &format!("{key} \"...\"")) else {
                continue;
            };
            let Some(text) = self.string(value, key) else {
                continue;
            };
            let mut word = |words: &[&str], what: &str| {
                self.error(
                    value.span(),
                    format!("`{text}` is not a log {what}"),
                    format!("unknown {what}"),
                )
                .help = Some(
                    suggest(text, words.iter().copied())
                        .unwrap_or_else(|| format!("one of: {}", words.join(", "))),
                );
            };
            match key {
                "output" => match LogOutput::from_word(text) {
                    Some(o) => settings.output = o,
                    None => word(LogOutput::WORDS, "output"),
                },
                "format" => match LogFormat::from_word(text) {
                    Some(f) => {
                        settings.format = f;
                        format_at = Some(value.span());
                    }
                    None => word(LogFormat::WORDS, "format"),
                },
                "syslog-facility" => match Facility::from_name(text) {
                    Some(f) => settings.facility = f,
                    None => {
                        let names: Vec<&str> = Facility::NAMES.iter().map(|(n, _)| *n).collect();
                        word(&names, "facility");
                    }
                },
                "syslog-name" => {
                    if valid_syslog_name(text) {
                        settings.syslog_name = text.to_owned();
                    } else {
                        self.error(
                            value.span(),
                            format!("`{text}` is not a syslog name"),
                            "invalid name",
                        )
                        .help = Some(
                            "1 to 64 letters, digits, `.`, `_`, `-` and `/`, such as \"mtad\" or \"postfix/submission\""
                                .to_owned(),
                        );
                    }
                }
                _ => {
                    if let Some((path, _)) = self.path(value, key) {
                        if key == "syslog-socket" {
                            settings.syslog_socket = path;
                        } else {
                            settings.journal_socket = path;
                        }
                    }
                }
            }
        }
        if let Some(at) = format_at
            && !settings.output.may_be_stderr()
        {
            self.error(
                at,
                format!(
                    "`format` is the format of stderr; {} lines are always Postfix's",
                    settings.output.as_str()
                ),
                "not with this output",
            )
            .help = Some("remove `format`, or log to output \"stderr\"".to_owned());
        }
        settings
    }
}
