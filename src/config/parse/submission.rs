//! The `local-submission` block (a child module of `parser`, for its helpers): how
//! programs on this host hand mail to mtad through its `sendmail` command.
//!
//! ```kdl
//! local-submission {
//!     maildrop "/var/spool/mtad/maildrop"   // where `sendmail` drops messages (required)
//!     group "mtad-drop"                     // the group `sendmail` is setgid to
//!     authorized-users "root" "www-data"    // Postfix's authorized_submit_users (default: everyone)
//!     sender-logins "login-senders"         // Postfix's local_login_sender_maps (default: any sender)
//!     milters "opendkim"                    // Postfix's non_smtpd_milters (default: none)
//! }
//! ```

use kdl::KdlNode;

use super::Parser;
use super::milter::Milters;
use super::tables::Tables;
use crate::config::LocalSubmission;

const KEYS: &[&str] = &[
    "maildrop",
    "group",
    "authorized-users",
    "sender-logins",
    "milters",
];
const USAGE: &str =
    "local-submission { maildrop \"/var/spool/mtad/maildrop\"; group \"mtad-drop\" }";

impl Parser {
    pub(super) fn local_submission(
        &mut self,
        node: &KdlNode,
        tables: &Tables,
        milters: &Milters,
    ) -> Option<LocalSubmission> {
        let children = self.settings_block(node, "local-submission", KEYS, USAGE)?;
        let mut maildrop = None;
        let mut group = None;
        let mut authorized_users = None;
        let mut sender_logins = None;
        let mut milter_names = Vec::new();
        for child in children {
            match child.name().value() {
                "maildrop" => {
                    if let Some(entry) = self.setting(child, "maildrop \"PATH\"") {
                        maildrop = self.path(entry, "maildrop").map(|(p, _)| p);
                    }
                }
                "group" => {
                    if let Some(entry) = self.setting(child, "group \"mtad-drop\"")
                        && let Some(name) = self.string(entry, "group")
                    {
                        if is_user_name(name) {
                            group = Some(name.to_owned());
                        } else {
                            self.error(entry.span(), "not a group name", "invalid group");
                        }
                    }
                }
                "authorized-users" => {
                    self.check_annotations(child);
                    self.props(child, &[]);
                    self.no_children(child);
                    let Some(args) =
                        self.args(child, 1, None, "authorized-users \"root\" \"uid:33\"...")
                    else {
                        continue;
                    };
                    let mut users = Vec::new();
                    for a in args {
                        let Some(name) = self.string(a, "user") else {
                            continue;
                        };
                        let uid = name.strip_prefix("uid:");
                        if uid.is_some_and(|n| n.parse::<u32>().is_ok()) || is_user_name(name) {
                            users.push(name.to_owned());
                        } else {
                            self.error(a.span(), "not a login name or uid:NUMBER", "invalid user");
                        }
                    }
                    authorized_users = Some(users);
                }
                "milters" => {
                    if let Some(entry) = self.setting(child, "milters \"NAME ...\"") {
                        milter_names = self.milter_refs(entry, milters, "milters");
                    }
                }
                _ => {
                    if let Some(entry) = self.setting(child, "sender-logins \"TABLE\"") {
                        sender_logins = self.table_ref(entry, tables).flatten();
                    }
                }
            }
        }
        let Some(maildrop) = maildrop else {
            self.node_error(
                node,
                "`local-submission` needs `maildrop \"PATH\"`",
                "no maildrop",
            )
            .help = Some(format!("usage: {USAGE}"));
            return None;
        };
        Some(LocalSubmission {
            maildrop,
            group,
            authorized_users,
            sender_logins,
            milters: milter_names,
        })
    }
}

/// A POSIX-ish login or group name: letters, digits, `.`, `_`, `-` (not first), up to 32
/// (never an option or a path). Also `server { user }`'s.
pub(super) fn is_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
