//! The `authentication` block (a child module of `parser`, for its helpers): checking
//! incoming mail with SPF, DKIM, DMARC, ARC and iprev (see [`crate::mailauth`]).
//!
//! ```kdl
//! authentication {
//!     authserv-id "mx.example.com"          // default: the server hostname
//!     checks "spf" "dkim" "dmarc" "arc" "iprev"   // default: all five
//!     skip-clients "lan" "192.0.2.0/24"     // networks sets or CIDRs not checked
//!     skip-listeners "submission"           // listeners whose mail is not checked
//!     timeout "10s"                         // per stage; then temperror
//! }
//! ```
//!
//! Authenticated clients (SMTP AUTH) are never checked: their mail is ours.

use std::time::Duration;

use kdl::KdlNode;

use super::{Parser, Sets, is_hostname};
use crate::config::Authentication;
use crate::mailauth::Checks;

const KEYS: &[&str] = &[
    "authserv-id",
    "checks",
    "skip-clients",
    "skip-listeners",
    "timeout",
];
const USAGE: &str = "authentication { authserv-id \"mx.example.com\"; checks \"spf\" \"dkim\" \"dmarc\" \"arc\" \"iprev\"; skip-clients \"lan\" }";
const CHECKS: &[&str] = &["spf", "dkim", "dmarc", "arc", "iprev"];

impl Parser {
    pub(super) fn authentication(&mut self, node: &KdlNode, sets: &Sets) -> Authentication {
        let mut auth = Authentication {
            authserv_id: None,
            checks: Checks::default(),
            skip_clients: Vec::new(),
            skip_listeners: Vec::new(),
            timeout: Duration::from_secs(10),
            origin: self.origin(node.name().span().offset()),
        };
        let Some(children) = self.settings_block(node, "authentication", KEYS, USAGE) else {
            return auth;
        };
        for child in children {
            self.check_annotations(child);
            self.no_children(child);
            self.props(child, &[]);
            let key = child.name().value();
            let (min, max) = match key {
                "authserv-id" | "timeout" => (1, Some(1)),
                _ => (1, None),
            };
            let Some(args) = self.args(child, min, max, USAGE) else {
                continue;
            };
            match key {
                "authserv-id" => {
                    if let Some(id) = self.string(args[0], "authserv-id") {
                        if is_hostname(id) {
                            auth.authserv_id = Some(id.to_ascii_lowercase());
                        } else {
                            self.error(
                                args[0].span(),
                                format!("`{id}` is not a host name"),
                                "not a host name",
                            )
                            .help = Some(
                                "the name of this server as Authentication-Results headers give it, e.g. \"mx.example.com\"".to_owned(),
                            );
                        }
                    }
                }
                "checks" => {
                    let mut checks = Checks {
                        spf: false,
                        dkim: false,
                        dmarc: false,
                        arc: false,
                        iprev: false,
                    };
                    for a in args {
                        let Some(name) = self.string(a, "check") else {
                            continue;
                        };
                        let slot = match name {
                            "spf" => &mut checks.spf,
                            "dkim" => &mut checks.dkim,
                            "dmarc" => &mut checks.dmarc,
                            "arc" => &mut checks.arc,
                            "iprev" => &mut checks.iprev,
                            other => {
                                self.error(
                                    a.span(),
                                    format!("unknown check `{other}`"),
                                    "unknown check",
                                )
                                .help = Some(format!("the checks are {}", CHECKS.join(", ")));
                                continue;
                            }
                        };
                        *slot = true;
                    }
                    if checks.dmarc && !(checks.spf || checks.dkim) {
                        self.error(
                            child.name().span(),
                            "DMARC needs the SPF or the DKIM check",
                            "dmarc without spf or dkim",
                        )
                        .help = Some("add \"spf\" and \"dkim\" to `checks`".to_owned());
                    }
                    auth.checks = checks;
                }
                "skip-clients" => {
                    for a in args {
                        let Some(value) = self.string(a, "client") else {
                            continue;
                        };
                        if let Some(c) = self.client_condition(value, a, sets) {
                            auth.skip_clients.push(c);
                        }
                    }
                }
                "skip-listeners" => {
                    for a in args {
                        if let Some(name) = self.string(a, "listener") {
                            self.listener_refs
                                .push((name.to_owned(), a.span(), self.cur.clone()));
                            auth.skip_listeners.push(name.to_owned());
                        }
                    }
                }
                _ => {
                    if let Some(d) = self.duration(args[0], "timeout") {
                        if d < Duration::from_secs(1) || d > Duration::from_secs(300) {
                            self.error(
                                args[0].span(),
                                "the timeout must be between 1s and 5m",
                                "out of range",
                            );
                        } else {
                            auth.timeout = d;
                        }
                    }
                }
            }
        }
        auth
    }
}

#[cfg(test)]
mod tests;
