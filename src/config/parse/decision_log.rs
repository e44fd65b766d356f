//! The `decision-log` block (a child module of `parser`, for its helpers).
//!
//! ```kdl
//! decision-log {
//!     output "file"                 // "file" (default), "log", "off"
//!     path "/var/log/mtad/decisions.jsonl"   // default: SPOOL/decisions/decisions.jsonl
//!     max-size "64M"                // rotate at this size
//!     keep 5                        // rotated files kept
//!     body "16K"                    // the first bytes of each message (default: none)
//! }
//! ```

use std::path::Path;

use kdl::KdlNode;

use super::{Parser, suggest};
use crate::config::decision_log::{DecisionLog, DecisionOutput};

pub(crate) const KEYS: &[&str] = &["output", "path", "max-size", "keep", "body"];
const USAGE: &str = "decision-log { output \"file\"; path \"/var/log/mtad/decisions.jsonl\" }";

impl Parser {
    pub(super) fn decision_log(&mut self, node: &KdlNode, spool: &Path) -> DecisionLog {
        let mut settings = DecisionLog::defaults_for(spool);
        let Some(children) = self.settings_block(node, "decision-log", KEYS, USAGE) else {
            return settings;
        };
        for child in children {
            let key = child.name().value();
            let Some(value) = self.setting(child, &format!("{key} ...")) else {
                continue;
            };
            match key {
                "output" => {
                    let Some(text) = self.string(value, key) else {
                        continue;
                    };
                    match DecisionOutput::from_word(text) {
                        Some(o) => settings.output = o,
                        None => {
                            self.error(
                                value.span(),
                                format!("`{text}` is not a decision-log output"),
                                "unknown output",
                            )
                            .help = Some(
                                suggest(text, DecisionOutput::WORDS.iter().copied())
                                    .unwrap_or_else(|| "one of: file, log, off".to_owned()),
                            );
                        }
                    }
                }
                "path" => {
                    if let Some((path, _)) = self.path(value, key) {
                        settings.path = path;
                    }
                }
                "max-size" => {
                    if let Some(n) = self.size(value, key, 4096, u64::MAX / 2) {
                        settings.max_size = n;
                    }
                }
                "keep" => {
                    if let Some(n) = self.integer(value, key, 1, 1000) {
                        settings.keep = u32::try_from(n).unwrap_or(1000);
                    }
                }
                _ => {
                    if let Some(n) = self.size(value, key, 0, 1024 * 1024) {
                        settings.body = n;
                    }
                }
            }
        }
        settings
    }
}
