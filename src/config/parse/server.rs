//! The `server` block.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use kdl::KdlNode;

use super::submission::is_user_name;
use super::{Parser, filter, is_hostname, resolve};
use crate::config::Server;
use crate::config::reply::{MAX_REPLY_TEXT, is_reply_char};
pub(crate) const SERVER_KEYS: &[&str] = &[
    "hostname",
    "spool",
    "banner",
    "shutdown-timeout",
    "origin",
    "control-socket",
    "content-filter",
    "tls-certificate",
    "tls-key",
    "metrics",
    "user",
];

impl Parser {
    pub(super) fn server(
        &mut self,
        node: &KdlNode,
        path: &Path,
        filters: &filter::Filters,
    ) -> Option<Server> {
        const USAGE: &str = "server { hostname \"mx.example.test\"; spool \"var/spool\" }";
        let children = self.settings_block(node, "server", SERVER_KEYS, USAGE)?;
        let mut hostname = None;
        let mut spool = None;
        let mut banner = None;
        let mut shutdown_timeout = None;
        let mut origin = None;
        let mut control_socket = None;
        let mut content_filter = None;
        let mut tls_certificate = None;
        let mut tls_key = None;
        let mut metrics = None;
        let mut user = None;
        for &child in &children {
            let key = child.name().value();
            let Some(value) = self.setting(child, &format!("{key} \"...\"")) else {
                continue;
            };
            match key {
                "hostname" => {
                    if let Some(h) = self.string(value, "hostname") {
                        if is_hostname(h) {
                            hostname = Some(h.to_owned());
                        } else {
                            self.error(
                                value.span(),
                                format!("`{h}` is not a valid hostname"),
                                "invalid hostname",
                            )
                            .help = Some(
                                "a fully-qualified name such as \"mx.example.test\"".to_owned(),
                            );
                        }
                    }
                }
                "spool" => {
                    if let Some(s) = self.string(value, "spool") {
                        if s.is_empty() {
                            self.error(value.span(), "spool must not be empty", "empty path");
                        } else {
                            spool = Some(resolve(path, s));
                        }
                    }
                }
                "banner" => {
                    if let Some(b) = self.string(value, "banner") {
                        if b.chars().all(is_reply_char) && b.len() <= MAX_REPLY_TEXT {
                            banner = Some(b.to_owned());
                        } else {
                            self.error(
                                value.span(),
                                format!("banner must be printable ASCII of at most {MAX_REPLY_TEXT} bytes"),
                                "invalid banner",
                            );
                        }
                    }
                }
                "shutdown-timeout" => shutdown_timeout = self.duration(value, "shutdown-timeout"),
                "origin" => {
                    if let Some(o) = self.string(value, "origin") {
                        if is_hostname(o) {
                            origin = Some(o.to_ascii_lowercase());
                        } else {
                            self.error(
                                value.span(),
                                format!("`{o}` is not a domain"),
                                "invalid origin",
                            );
                        }
                    }
                }
                "control-socket" => {
                    if let Some(s) = self.string(value, "control-socket") {
                        if s.is_empty() {
                            self.error(
                                value.span(),
                                "control-socket must not be empty",
                                "empty path",
                            );
                        } else {
                            control_socket = Some(resolve(path, s));
                        }
                    }
                }
                "content-filter" => {
                    content_filter = self.filter_ref(value, filters, "content-filter");
                }
                "tls-certificate" => tls_certificate = self.path(value, key),
                "tls-key" => tls_key = self.path(value, key),
                "metrics" => {
                    if let Some(text) = self.string(value, "metrics") {
                        match text.parse::<SocketAddr>() {
                            Ok(a) => metrics = Some(a),
                            Err(_) => {
                                self.error(
                                    value.span(),
                                    format!("`{text}` is not an IP:PORT address"),
                                    "invalid address",
                                )
                                .help = Some("e.g. metrics \"127.0.0.1:9187\"".to_owned());
                            }
                        }
                    }
                }
                "user" => {
                    if let Some(name) = self.string(value, "user") {
                        if is_user_name(name) {
                            user = Some(name.to_owned());
                        } else {
                            self.error(
                                value.span(),
                                format!("`{name}` is not a user name"),
                                "invalid user name",
                            )
                            .help =
                                Some("the name of a system account, e.g. user \"mtad\"".to_owned());
                        }
                    }
                }
                _ => unreachable!("checked against SERVER_KEYS"),
            }
        }
        for (key, example) in [
            ("hostname", "hostname \"mx.example.test\""),
            ("spool", "spool \"var/spool\""),
        ] {
            if !children.iter().any(|c| c.name().value() == key) {
                self.node_error(
                    node,
                    format!("`server` needs `{key}`"),
                    format!("no `{key}`"),
                )
                .help = Some(format!("add: {example}"));
            }
        }
        let tls = self.cert_key(tls_certificate, tls_key, ("tls-certificate", "tls-key"));
        let hostname: String = hostname?;
        let spool: PathBuf = spool?;
        let defaults = Server::new(hostname, spool);
        Some(Server {
            origin: origin.unwrap_or(defaults.origin.clone()),
            control_socket: control_socket.unwrap_or(defaults.control_socket.clone()),
            banner: banner.unwrap_or(defaults.banner.clone()),
            shutdown_timeout: shutdown_timeout.unwrap_or(defaults.shutdown_timeout),
            content_filter,
            tls,
            metrics,
            user,
            ..defaults
        })
    }
}

/// [`crate::config::Config::control_socket_of`]: the first `server` block's
/// `control-socket`, or `control.sock` in its `spool`, resolved as [`Parser::server`]
/// resolves them.
pub(in crate::config) fn control_socket_of(path: &Path, text: &str) -> Option<PathBuf> {
    let doc = kdl::KdlDocument::parse_v2(text).ok()?;
    let server = doc.nodes().iter().find(|n| n.name().value() == "server")?;
    let setting = |key: &str| {
        server
            .children()?
            .nodes()
            .iter()
            .find(|n| n.name().value() == key)?
            .entries()
            .first()?
            .value()
            .as_string()
            .filter(|s| !s.is_empty())
            .map(|s| resolve(path, s))
    };
    setting("control-socket").or_else(|| Some(setting("spool")?.join("control.sock")))
}
