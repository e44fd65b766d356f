//! `dkim` nodes (a child module of `parser`, for its helpers): who signs outgoing
//! mail, with which key.
//!
//! ```kdl
//! dkim "example.com" selector="s2026" key="dkim/example.com.s2026.key"
//! dkim "relay.example.net" selector="r1" key="dkim/relay.key" always=#true
//! dkim "example.org" selector="ed" key="dkim/example.org.key" headers="From:To:Subject:Date"
//! dkim-internal "trusted" "192.0.2.0/24"   // whose mail is ours (default: loopback)
//! ```
//!
//! The algorithm follows from the key (RSA or Ed25519). Keys are read and checked
//! here, with the configuration, and recorded in the policy's [`Sources`] like
//! certificates.
//!
//! [`Sources`]: crate::config::Sources

use std::sync::Arc;

use kdl::KdlNode;

use super::{Parser, Sets, is_hostname};
use crate::config::{ClientRef, Origin};
use crate::mailauth::dkim::{DEFAULT_HEADERS, Key, Signer};

const USAGE: &str = "dkim \"DOMAIN\" selector=\"SELECTOR\" key=\"FILE.pem\" [headers=\"From:To:...\"] [always=#true]";

impl Parser {
    /// `dkim-internal "SET" "CIDR" ...`: the clients whose mail originates with us
    /// (OpenDKIM's InternalHosts). Several nodes add up.
    pub(super) fn dkim_internal(
        &mut self,
        node: &KdlNode,
        sets: &Sets,
        all: &mut Option<Vec<ClientRef>>,
    ) {
        const USAGE: &str = "dkim-internal \"NETWORKS-SET\" \"CIDR\" ...";
        self.check_annotations(node);
        self.no_children(node);
        self.props(node, &[]);
        let Some(args) = self.args(node, 1, None, USAGE) else {
            return;
        };
        let list = all.get_or_insert_with(Vec::new);
        for a in args {
            let Some(value) = self.string(a, "client") else {
                continue;
            };
            if let Some(c) = self.client_condition(value, a, sets) {
                list.push(c);
            }
        }
    }

    /// Reads one `dkim` node into `all`, reporting a second node for the same domain
    /// and selector.
    pub(super) fn dkim(&mut self, node: &KdlNode, all: &mut Vec<(Signer, Origin)>) {
        self.check_annotations(node);
        self.no_children(node);
        let here = self.origin(node.name().span().offset());
        let args = self.args(node, 1, Some(1), USAGE);
        let props = self.props(node, &["selector", "key", "headers", "always"]);
        let domain = args.and_then(|args| {
            let text = self.string(args[0], "signing domain")?;
            let domain = text.trim_end_matches('.').to_ascii_lowercase();
            if is_hostname(&domain) && domain.contains('.') {
                Some(domain)
            } else {
                self.error(
                    args[0].span(),
                    format!("`{text}` is not a domain name"),
                    "not a domain",
                )
                .help =
                    Some("the domain that signs (d=), e.g. dkim \"example.com\" ...".to_owned());
                None
            }
        });
        let mut selector = None;
        let mut key = None;
        let mut headers = None;
        let mut always = false;
        let mut ok = true;
        for (name, entry) in &props {
            match *name {
                "selector" => match self.string(entry, "selector") {
                    Some(s) if is_hostname(s) => selector = Some(s.to_ascii_lowercase()),
                    Some(s) => {
                        self.error(entry.span(), format!("`{s}` is not a valid selector"), "not a DNS label")
                            .help = Some("letters, digits, hyphens and dots, e.g. selector=\"s2026\" (published at s2026._domainkey.DOMAIN)".to_owned());
                        ok = false;
                    }
                    None => ok = false,
                },
                "key" => match self.path(entry, "key") {
                    Some((path, at)) => match std::fs::read(&path) {
                        Ok(bytes) => match Key::from_pem(&bytes) {
                            Ok(k) => {
                                self.sources.add(&path, &bytes);
                                key = Some(Arc::new(k));
                            }
                            Err(e) => {
                                self.error(at, format!("{}: {e}", path.display()), "cannot use this key")
                                    .help = Some("create one with: mtactl dkim keygen --domain DOMAIN --selector SELECTOR".to_owned());
                                ok = false;
                            }
                        },
                        Err(e) => {
                            self.error(at, format!("cannot read {}: {e}", path.display()), "cannot read this key")
                                .help = Some("create one with: mtactl dkim keygen --domain DOMAIN --selector SELECTOR".to_owned());
                            ok = false;
                        }
                    },
                    None => ok = false,
                },
                "headers" => match self.string(entry, "headers") {
                    Some(text) => {
                        let list: Vec<String> = text
                            .split(':')
                            .map(str::trim)
                            .filter(|h| !h.is_empty())
                            .map(str::to_owned)
                            .collect();
                        let bad = list
                            .iter()
                            .find(|h| !h.bytes().all(|b| b.is_ascii_graphic() && b != b':'));
                        if let Some(bad) = bad {
                            self.error(
                                entry.span(),
                                format!("`{bad}` is not a header name"),
                                "bad header name",
                            );
                            ok = false;
                        } else if !list.iter().any(|h| h.eq_ignore_ascii_case("from")) {
                            self.error(entry.span(), "the signed headers must include From", "no From")
                                .help = Some("RFC 6376 §5.4: From is always signed, e.g. headers=\"From:To:Subject:Date:Message-ID\"".to_owned());
                            ok = false;
                        } else {
                            headers = Some(list);
                        }
                    }
                    None => ok = false,
                },
                _ => match entry.value().as_bool() {
                    Some(b) => always = b,
                    None => {
                        self.error(entry.span(), "always is #true or #false", "not a boolean");
                        ok = false;
                    }
                },
            }
        }
        if selector.is_none() && ok {
            self.node_error(
                node,
                "`dkim` needs selector=\"SELECTOR\"",
                "which selector?",
            )
            .help = Some(format!("usage: {USAGE}"));
            ok = false;
        }
        if key.is_none() && ok {
            self.node_error(node, "`dkim` needs key=\"FILE.pem\"", "which key?")
                .help = Some(format!("usage: {USAGE}"));
            ok = false;
        }
        let (Some(domain), Some(selector), Some(key), true) = (domain, selector, key, ok) else {
            return;
        };
        if let Some((_, first)) = all
            .iter()
            .find(|(s, _)| s.domain == domain && s.selector == selector)
        {
            let first = first.clone();
            self.duplicate(
                node.name().span(),
                format!("`dkim` for {selector}._domainkey.{domain}"),
                &first,
            );
            return;
        }
        if !always
            && let Some((_, first)) = all.iter().find(|(s, _)| s.domain == domain && !s.always)
        {
            let first = first.clone();
            self.duplicate(
                node.name().span(),
                format!("`dkim` signer for {domain}"),
                &first,
            );
            return;
        }
        let headers =
            headers.unwrap_or_else(|| DEFAULT_HEADERS.iter().map(|h| (*h).to_owned()).collect());
        all.push((
            Signer {
                domain,
                selector,
                headers,
                always,
                key,
            },
            here,
        ));
    }
}
