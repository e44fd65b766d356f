//! The `greylisting` block (a child module of `parser`, for its helpers): postgrey's
//! options for the built-in greylisting.
//!
//! ```kdl
//! greylisting {
//!     delay "5m"                       // postgrey --delay=300
//!     retry-window "2d"                // --retry-window=2
//!     max-age "35d"                    // --max-age=35
//!     ipv4-prefix 24                   // --ipv4cidr (32: --lookup-by-host)
//!     ipv6-prefix 64                   // --ipv6cidr
//!     auto-allowlist 5                 // --auto-whitelist-clients (0: off)
//!     allow-clients "trusted"          // networks sets never greylisted
//!     allow-recipients "no-greylist"   // domains sets never greylisted
//!     text "Greylisted, try again in %s seconds"
//!     max-entries 100000               // local state: the most triplets kept
//! }
//! ```

use std::time::Duration;

use kdl::KdlNode;

use super::{Parser, Sets, suggest};
use crate::config::greylisting::Greylisting;

pub(crate) const KEYS: &[&str] = &[
    "delay",
    "retry-window",
    "max-age",
    "ipv4-prefix",
    "ipv6-prefix",
    "auto-allowlist",
    "allow-clients",
    "allow-recipients",
    "text",
    "max-entries",
];
const USAGE: &str = "greylisting { delay \"5m\"; auto-allowlist 5 }";

impl Parser {
    pub(super) fn greylisting(&mut self, node: &KdlNode, sets: &Sets) -> Greylisting {
        let mut g = Greylisting::default();
        let Some(children) = self.settings_block(node, "greylisting", KEYS, USAGE) else {
            return g;
        };
        for child in children {
            let key = child.name().value();
            if matches!(key, "allow-clients" | "allow-recipients") {
                self.allow_sets(child, sets, &mut g);
                continue;
            }
            let usage = match key {
                "delay" => "delay \"5m\"",
                "retry-window" => "retry-window \"2d\"",
                "max-age" => "max-age \"35d\"",
                "ipv4-prefix" => "ipv4-prefix 24",
                "ipv6-prefix" => "ipv6-prefix 64",
                "auto-allowlist" => "auto-allowlist 5",
                "text" => "text \"Greylisted, try again in %s seconds\"",
                _ => "max-entries 100000",
            };
            let Some(entry) = self.setting(child, usage) else {
                continue;
            };
            let day = Duration::from_secs(24 * 3600);
            match key {
                "delay" => {
                    let range = (Duration::from_secs(1), day);
                    if let Some(d) = self.duration_within(entry, "the greylisting delay", range) {
                        g.delay = d;
                    }
                }
                "retry-window" => {
                    let range = (Duration::from_secs(1), 365 * day);
                    if let Some(d) = self.duration_within(entry, "the retry window", range) {
                        g.retry_window = d;
                    }
                }
                "max-age" => {
                    let range = (Duration::from_secs(1), 3650 * day);
                    if let Some(d) = self.duration_within(entry, "the max age", range) {
                        g.max_age = d;
                    }
                }
                "ipv4-prefix" => {
                    if let Some(n) = self.integer(entry, "an IPv4 prefix length", 0, 32) {
                        g.ipv4_prefix = n as u8;
                    }
                }
                "ipv6-prefix" => {
                    if let Some(n) = self.integer(entry, "an IPv6 prefix length", 0, 128) {
                        g.ipv6_prefix = n as u8;
                    }
                }
                "auto-allowlist" => {
                    if let Some(n) = self.integer(entry, "a number of passes", 0, 1_000_000) {
                        g.auto_allowlist = n as u32;
                    }
                }
                "text" => {
                    let Some(text) = self.string(entry, "the reply text") else {
                        continue;
                    };
                    if text.is_empty()
                        || text.len() > crate::config::reply::MAX_REPLY_TEXT
                        || !text.chars().all(crate::config::reply::is_reply_char)
                    {
                        self.error(
                            entry.span(),
                            "the reply text is 1 to 400 printable ASCII characters",
                            "invalid text",
                        );
                        continue;
                    }
                    g.text = text.to_owned();
                }
                _ => {
                    if let Some(n) = self.integer(entry, "a number of triplets", 100, 100_000_000) {
                        g.max_entries = n as usize;
                    }
                }
            }
        }
        g
    }

    /// `allow-clients "NETWORKS"...` / `allow-recipients "DOMAINS"...`: set names,
    /// each one defined.
    fn allow_sets(&mut self, child: &KdlNode, sets: &Sets, g: &mut Greylisting) {
        let clients = child.name().value() == "allow-clients";
        let (usage, kind) = if clients {
            ("allow-clients \"NETWORKS\"...", "networks")
        } else {
            ("allow-recipients \"DOMAINS\"...", "domains")
        };
        self.check_annotations(child);
        self.props(child, &[]);
        self.no_children(child);
        let Some(args) = self.args(child, 1, None, usage) else {
            return;
        };
        for a in args {
            let Some(name) = self.string(a, "set name") else {
                continue;
            };
            let known: Vec<&str> = if clients {
                sets.networks.keys().map(String::as_str).collect()
            } else {
                sets.domains.keys().map(String::as_str).collect()
            };
            if known.contains(&name) {
                let list = if clients {
                    &mut g.allow_clients
                } else {
                    &mut g.allow_recipients
                };
                list.push(name.to_owned());
            } else {
                let help = suggest(name, known.iter().copied())
                    .unwrap_or_else(|| format!("define it: {kind} \"{name}\" ..."));
                self.error(
                    a.span(),
                    format!("no {kind} set named `{name}`"),
                    "undefined set",
                )
                .help = Some(help);
            }
        }
    }
}
