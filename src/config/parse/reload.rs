//! The `reload` block (a child module of `parser`, for its helpers): how a running
//! mtad takes a changed configuration.
//!
//! ```kdl
//! reload {
//!     watch #true                        // reload when a file it was built from changes
//!     require-tests "tests/relay.kdl"    // test-policy suites a policy must pass to go live
//!     replay since="24h" allow="reject->accept@mtad.kdl:31"   // the decision log's last day
//! }
//! ```

use std::time::Duration;

use kdl::KdlNode;

use super::Parser;
use crate::config::{ReloadSettings, WATCH_INTERVAL};

pub(crate) const KEYS: &[&str] = &["watch", "require-tests", "replay"];
const USAGE: &str = "reload { watch #true; require-tests \"tests/relay.kdl\" }";

impl Parser {
    pub(super) fn reload_settings(&mut self, node: &KdlNode) -> ReloadSettings {
        let mut settings = ReloadSettings::default();
        let Some(children) = self.settings_block(node, "reload", KEYS, USAGE) else {
            return settings;
        };
        for child in children {
            self.check_annotations(child);
            self.no_children(child);
            if child.name().value() == "replay" {
                settings.replay = self.replay_gate(child);
                continue;
            }
            self.props(child, &[]);
            match child.name().value() {
                "watch" => {
                    let Some(args) = self.args(child, 1, Some(1), "watch #true, or watch \"5s\"")
                    else {
                        continue;
                    };
                    settings.watch = match args[0].value().as_bool() {
                        Some(true) => Some(WATCH_INTERVAL),
                        Some(false) => None,
                        None => self.duration(args[0], "watch interval").and_then(|d| {
                            if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
                                self.error(
                                    args[0].span(),
                                    "the watch interval must be between 100ms and 1h",
                                    "out of range",
                                );
                                None
                            } else {
                                Some(d)
                            }
                        }),
                    };
                }
                _ => {
                    let Some(args) = self.args(child, 1, None, "require-tests \"SUITE.kdl\"...")
                    else {
                        continue;
                    };
                    for a in args {
                        let Some((path, at)) = self.path(a, "test suite") else {
                            continue;
                        };
                        if let Err(e) = std::fs::metadata(&path) {
                            self.error(
                                at,
                                format!("cannot read the test suite {}: {e}", path.display()),
                                "no such suite",
                            );
                            continue;
                        }
                        settings.require_tests.push(path);
                    }
                }
            }
        }
        settings
    }

    /// `replay ["LOG"...] [since="24h"] [allow="CHANGE CHANGE..."]`.
    fn replay_gate(&mut self, node: &KdlNode) -> Option<crate::config::decision_log::ReplayGate> {
        let props = self.props(node, &["since", "allow"]);
        let mut gate = crate::config::decision_log::ReplayGate {
            files: Vec::new(),
            since: Duration::from_secs(24 * 3600),
            allow: Vec::new(),
        };
        for entry in node.entries().iter().filter(|e| e.name().is_none()) {
            if let Some((path, _)) = self.path(entry, "decision log") {
                gate.files.push(path);
            }
        }
        for (key, entry) in props {
            if key == "since" {
                if let Some(d) = self.duration(entry, "replay since") {
                    gate.since = d;
                }
                continue;
            }
            let Some(text) = self.string(entry, "replay allow") else {
                continue;
            };
            for word in text.split_ascii_whitespace() {
                match crate::config::decision_log::ReplayAllow::parse(word) {
                    Ok(a) => gate.allow.push(a),
                    Err(e) => {
                        self.error(entry.span(), format!("replay allow={e}"), "not a change")
                            .help = Some(
                            "changes as mtactl replay --allow takes them, separated by spaces: allow=\"reject->accept@mtad.kdl:31 unknown\""
                                .to_owned(),
                        );
                    }
                }
            }
        }
        Some(gate)
    }
}
