//! The `limits` block.

use kdl::KdlNode;

use super::Parser;
use crate::config::Limits;
pub(crate) const LIMIT_KEYS: &[&str] = &[
    "message-size",
    "recipients",
    "line-length",
    "text-line-length",
    "header-size",
    "junk-commands",
    "data-memory",
    "idle-timeout",
    "data-timeout",
    "error-limit",
    "connections",
    "connections-per-ip",
    "min-free-space",
    "hop-count",
    "tls-handshake-timeout",
];

impl Parser {
    pub(super) fn limits(&mut self, node: &KdlNode) -> Limits {
        const USAGE: &str = "limits { message-size \"10M\"; recipients 1000; ... }";
        let mut limits = Limits::default();
        let Some(children) = self.settings_block(node, "limits", LIMIT_KEYS, USAGE) else {
            return limits;
        };
        let max_usize = usize::MAX as u64;
        let mut data_memory = None;
        for child in children {
            let key = child.name().value();
            let Some(v) = self.setting(child, &format!("{key} VALUE")) else {
                continue;
            };
            let as_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
            match key {
                "message-size" => {
                    if let Some(n) = self.size(v, key, 1, max_usize) {
                        limits.message_size = as_usize(n);
                    }
                }
                "min-free-space" => {
                    if let Some(n) = self.size(v, key, 0, u64::MAX) {
                        limits.min_free_space = n;
                    }
                }
                "recipients" => {
                    if let Some(n) = self.integer(v, key, 1, max_usize) {
                        limits.recipients = as_usize(n);
                    }
                }
                "hop-count" => {
                    if let Some(n) = self.integer(v, key, 2, 1000) {
                        limits.hop_count = as_usize(n);
                    }
                }
                // RFC 5321 §4.5.3.1.6: text lines of 1000 octets must be accepted.
                "line-length" => {
                    if let Some(n) = self.integer(v, key, 1000, max_usize) {
                        limits.line_length = as_usize(n);
                    }
                }
                // RFC 5321 §4.5.3.1.6 again: 1000 octets with the CRLF
                "text-line-length" => {
                    if let Some(n) = self.integer(v, key, 1000, max_usize) {
                        limits.text_line_length = as_usize(n);
                    }
                }
                "header-size" => {
                    if let Some(n) = self.size(v, key, 1024, max_usize) {
                        limits.header_size = as_usize(n);
                    }
                }
                "junk-commands" => {
                    if let Some(n) = self.integer(v, key, 1, u64::from(u32::MAX)) {
                        limits.junk_commands = u32::try_from(n).unwrap_or(u32::MAX);
                    }
                }
                "data-memory" => {
                    if let Some(n) = self.size(v, key, 1, max_usize) {
                        data_memory = Some((as_usize(n), v.span()));
                    }
                }
                "connections" => {
                    if let Some(n) = self.integer(v, key, 1, max_usize) {
                        limits.connections = as_usize(n);
                    }
                }
                "connections-per-ip" => {
                    if let Some(n) = self.integer(v, key, 1, max_usize) {
                        limits.connections_per_ip = as_usize(n);
                    }
                }
                "error-limit" => {
                    if let Some(n) = self.integer(v, key, 1, u64::from(u32::MAX)) {
                        limits.error_limit = u32::try_from(n).unwrap_or(u32::MAX);
                    }
                }
                "idle-timeout" => {
                    if let Some(d) = self.duration(v, key) {
                        limits.idle_timeout = d;
                    }
                }
                "data-timeout" => {
                    if let Some(d) = self.duration(v, key) {
                        limits.data_timeout = d;
                    }
                }
                "tls-handshake-timeout" => {
                    if let Some(d) = self.duration(v, key) {
                        limits.tls_handshake_timeout = d;
                    }
                }
                _ => unreachable!("checked against LIMIT_KEYS"),
            }
        }
        match data_memory {
            // one message of the largest size must fit
            Some((n, at)) if n < limits.message_size => {
                self.error(
                    at,
                    format!(
                        "data-memory must be at least message-size ({} bytes)",
                        limits.message_size
                    ),
                    "too small",
                );
            }
            Some((n, _)) => limits.data_memory = n,
            None => limits.data_memory = Limits::default_data_memory(limits.message_size),
        }
        limits
    }
}
