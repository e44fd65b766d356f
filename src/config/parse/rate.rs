//! The `rate-limits` block (a child module of `parser`, for its helpers): how much one
//! client address may do per time window, Postfix's anvil limits.
//!
//! ```kdl
//! rate-limits {
//!     connections 30 per="1m"      // smtpd_client_connection_rate_limit
//!     messages 100 per="1h"        // smtpd_client_message_rate_limit
//!     recipients 500 per="1h"      // smtpd_client_recipient_rate_limit
//!     auth 30 per="1h"             // AUTH commands (smtpd_client_auth_rate_limit)
//!     auth-failures 10 per="15m"   // failed AUTH attempts (the default)
//!     auth-failures-per-user 20 per="1h"  // failed AUTH attempts per user name
//!     ipv6-prefix 64               // IPv6 clients are counted per /64 (the default)
//!     exempt "trusted"             // networks sets never limited
//! }
//! ```

use std::time::Duration;

use kdl::KdlNode;

use super::{Parser, Sets, suggest};
use crate::config::RateLimits;

pub(crate) const KEYS: &[&str] = &[
    "connections",
    "messages",
    "recipients",
    "auth",
    "auth-failures",
    "auth-failures-per-user",
    "ipv6-prefix",
    "exempt",
];
const USAGE: &str = "rate-limits { connections 30 per=\"1m\"; messages 100 per=\"1h\"; recipients 500 per=\"1h\"; exempt \"trusted\" }";

impl Parser {
    pub(super) fn rate_limits(&mut self, node: &KdlNode, sets: &Sets) -> RateLimits {
        let mut limits = RateLimits::default();
        let Some(children) = self.settings_block(node, "rate-limits", KEYS, USAGE) else {
            return limits;
        };
        for child in children {
            let key = child.name().value();
            self.check_annotations(child);
            self.no_children(child);
            if key == "exempt" {
                self.props(child, &[]);
                let Some(args) = self.args(child, 1, None, "exempt \"NETWORKS\"...") else {
                    continue;
                };
                for a in args {
                    let Some(name) = self.string(a, "networks set") else {
                        continue;
                    };
                    if sets.networks.contains_key(name) {
                        limits.exempt.push(name.to_owned());
                    } else {
                        let help = suggest(name, sets.networks.keys().map(String::as_str))
                            .unwrap_or_else(|| {
                                format!("define it: networks \"{name}\" \"10.0.0.0/8\"")
                            });
                        self.error(
                            a.span(),
                            format!("no networks set named `{name}`"),
                            "undefined",
                        )
                        .help = Some(help);
                    }
                }
                continue;
            }
            if key == "ipv6-prefix" {
                self.props(child, &[]);
                if let Some(args) = self.args(child, 1, Some(1), "ipv6-prefix 64")
                    && let Some(n) = self.integer(args[0], key, 1, 128)
                {
                    limits.ipv6_prefix = u8::try_from(n).unwrap_or(128);
                }
                continue;
            }
            let usage = format!("{key} COUNT per=\"DURATION\"");
            let props = self.props(child, &["per"]);
            let Some(args) = self.args(child, 1, Some(1), &usage) else {
                continue;
            };
            let count = self.integer(args[0], key, 1, u64::from(u32::MAX));
            let per = match props.iter().find(|(k, _)| *k == "per") {
                Some((_, entry)) => self.duration(entry, "per").and_then(|d| {
                    if d.is_zero() || d > Duration::from_secs(86_400) {
                        self.error(
                            entry.span(),
                            "per must be between 1s and 24h",
                            "out of range",
                        );
                        None
                    } else {
                        Some(d)
                    }
                }),
                None => {
                    self.node_error(
                        child,
                        format!("`{key}` needs per=\"DURATION\""),
                        "per what?",
                    )
                    .help = Some(format!("usage: {usage}"));
                    None
                }
            };
            if let (Some(count), Some(per)) = (count, per) {
                let rule = Some((u32::try_from(count).unwrap_or(u32::MAX), per));
                match key {
                    "connections" => limits.connections = rule,
                    "messages" => limits.messages = rule,
                    "recipients" => limits.recipients = rule,
                    "auth" => limits.auth = rule,
                    "auth-failures-per-user" => limits.auth_failures_per_user = rule,
                    _ => limits.auth_failures = rule,
                }
            }
        }
        limits
    }
}
