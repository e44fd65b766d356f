//! The `delivery` block and `credentials` nodes (a child module of `parser`, for its
//! helpers).
//!
//! ```kdl
//! delivery {
//!     backoff-min "5m"             // minimal_backoff_time
//!     backoff-max "4000s"          // maximal_backoff_time
//!     lifetime "5d"                // maximal_queue_lifetime
//!     delay-warning "4h"           // delay_warning_time (off unless set)
//!     concurrency 20               // per destination
//!     connections 100              // outbound, in all
//!     recipients 50                // per transaction
//!     fallback-relay "smtp:[backup.example.test]:587"   // smtp_fallback_relay
//!     tls "opportunistic"          // none | opportunistic | required | verify
//!     tls-ca-file "ca.pem"
//!     tls-policy-map "tls_policy"  // smtp_tls_policy_maps: domain level [match=...]
//!     dnssec-trust-anchors "anchors" // DNSKEY records for DANE (default: the root's)
//!     mta-sts #true                // honour MTA-STS policies (RFC 8461)
//!     mta-sts-port 443
//!     tls-rpt #true                // TLS reports (RFC 8460) to the domains that ask
//!     tls-rpt-from "tlsrpt@example.com"   // From and envelope sender (default postmaster@HOSTNAME)
//!     tls-rpt-organization "Example Ltd"; tls-rpt-contact "postmaster@example.com"
//!     tls-rpt-interval "24h"; tls-rpt-max-domains 10000; tls-rpt-max-failures 100
//!     auth-plaintext #false
//!     queue-only #false            // deliver only on `mtactl queue flush`
//!     dns-server "127.0.0.1:53"
//!     smtp-port 25                 // for next hops that name no port
//!     local-base "/var/mail/vhosts"
//!     local-recipients "passwd" "aliases"   // local_recipient_maps (the default); "any": no check
//!     connect-timeout "30s"; command-timeout "5m"; data-timeout "10m"
//! }
//! credentials "upstream" file="relay_password"   // sasl_passwd: [host]:port user:password
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use kdl::KdlNode;

use super::{Parser, resolve};
use crate::config::route::{TlsPolicy, parse_fallbacks};
use crate::config::{Delivery, LocalRecipients, Origin};
use crate::lookup::{Table, parse_map};

pub(crate) const DELIVERY_KEYS: &[&str] = &[
    "backoff-min",
    "backoff-max",
    "lifetime",
    "delay-warning",
    "concurrency",
    "connections",
    "recipients",
    "fallback-relay",
    "tls",
    "tls-ca-file",
    "tls-policy-map",
    "dnssec-trust-anchors",
    "mta-sts",
    "mta-sts-port",
    "tls-rpt",
    "tls-rpt-from",
    "tls-rpt-organization",
    "tls-rpt-contact",
    "tls-rpt-interval",
    "tls-rpt-max-domains",
    "tls-rpt-max-failures",
    "auth-plaintext",
    "queue-only",
    "dns-server",
    "smtp-port",
    "local-base",
    "local-recipients",
    "connect-timeout",
    "command-timeout",
    "data-timeout",
];

/// `credentials` nodes by name, with where each is defined (`None`: its file had errors).
pub(super) type Credentials = BTreeMap<String, (Option<Arc<Table>>, Origin)>;

impl Parser {
    /// The block, with `local_base` empty unless written (the caller fills in the
    /// default, which depends on the spool).
    pub(super) fn delivery(&mut self, node: &KdlNode, tables: &super::tables::Tables) -> Delivery {
        const USAGE: &str = "delivery { backoff-min \"5m\"; lifetime \"5d\"; ... }";
        let mut d = Delivery {
            local_base: Default::default(),
            ..Delivery::defaults_for(Path::new(""))
        };
        let Some(children) = self.settings_block(node, "delivery", DELIVERY_KEYS, USAGE) else {
            return d;
        };
        for child in children {
            let key = child.name().value();
            if key == "fallback-relay" {
                // one or more transports, as arguments
                self.check_annotations(child);
                self.props(child, &[]);
                self.no_children(child);
                let Some(args) =
                    self.args(child, 1, None, "fallback-relay \"smtp:[host]:port\"...")
                else {
                    continue;
                };
                for a in args {
                    if let Some(mut chain) = self.route_value(a, "fallback relay", parse_fallbacks)
                    {
                        d.fallback.append(&mut chain);
                    }
                }
                continue;
            }
            if key == "dnssec-trust-anchors" {
                if let Some(v) = self.setting(child, "dnssec-trust-anchors \"FILE\"")
                    && let Some(p) = self.string(v, key).map(str::to_owned)
                {
                    let checked = self.data_file(
                        "DNSSEC trust anchor file",
                        &p,
                        v,
                        |text| {
                            crate::net::dnssec::check_anchors(text)
                                .map(|_| ())
                                .map_err(|m| {
                                    vec![crate::lookup::TableError {
                                        line: 1,
                                        column: 1,
                                        byte_span: 0..text.find('\n').unwrap_or(text.len()),
                                        message: m,
                                        help: None,
                                    }]
                                })
                        },
                        "`dnssec-trust-anchors` ",
                    );
                    if checked.is_some() {
                        d.dnssec_trust_anchors = Some(resolve(&self.cur.path, &p));
                    }
                }
                continue;
            }
            if key == "tls-policy-map" {
                d.tls_policy_map = self.tls_policy_map(child);
                continue;
            }
            if key.starts_with("tls-rpt") {
                self.tls_rpt_setting(child, key, &mut d);
                continue;
            }
            if key == "local-recipients" {
                d.local_recipients = self.local_recipients(child, tables);
                continue;
            }
            let Some(v) = self.setting(child, &format!("{key} VALUE")) else {
                continue;
            };
            let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
            match key {
                "backoff-min" => d.backoff_min = self.duration(v, key).unwrap_or(d.backoff_min),
                "backoff-max" => d.backoff_max = self.duration(v, key).unwrap_or(d.backoff_max),
                "lifetime" => d.lifetime = self.duration(v, key).unwrap_or(d.lifetime),
                "delay-warning" => d.delay_warning = self.duration(v, key),
                "connect-timeout" => {
                    d.connect_timeout = self.duration(v, key).unwrap_or(d.connect_timeout)
                }
                "command-timeout" => {
                    d.command_timeout = self.duration(v, key).unwrap_or(d.command_timeout)
                }
                "data-timeout" => d.data_timeout = self.duration(v, key).unwrap_or(d.data_timeout),
                "concurrency" => {
                    if let Some(n) = self.integer(v, key, 1, 10_000) {
                        d.concurrency = count(n);
                    }
                }
                "connections" => {
                    if let Some(n) = self.integer(v, key, 1, 100_000) {
                        d.connections = count(n);
                    }
                }
                "mta-sts-port" => {
                    if let Some(n) = self.integer(v, key, 1, 65535) {
                        d.mta_sts_port = u16::try_from(n).unwrap_or(443);
                    }
                }
                "smtp-port" => {
                    if let Some(n) = self.integer(v, key, 1, 65535) {
                        d.smtp_port = u16::try_from(n).unwrap_or(25);
                    }
                }
                "recipients" => {
                    if let Some(n) = self.integer(v, key, 1, 100_000) {
                        d.recipients = count(n);
                    }
                }
                "tls" => {
                    if let Some(t) = self.route_value(v, "TLS policy", TlsPolicy::parse) {
                        d.tls = t;
                    }
                }
                "auth-plaintext" | "queue-only" | "mta-sts" => match v.value().as_bool() {
                    Some(b) if key == "queue-only" => d.queue_only = b,
                    Some(b) if key == "mta-sts" => d.mta_sts = b,
                    Some(b) => d.auth_plaintext = b,
                    None => {
                        self.error(
                            v.span(),
                            format!("`{key}` must be #true or #false"),
                            "not a boolean",
                        );
                    }
                },
                "tls-ca-file" | "local-base" => {
                    if let Some(p) = self.string(v, key) {
                        if p.is_empty() {
                            self.error(v.span(), format!("{key} must not be empty"), "empty path");
                        } else if key == "tls-ca-file" {
                            let full = resolve(&self.cur.path, p);
                            match std::fs::read(&full) {
                                Ok(bytes) => self.sources.add(&full, &bytes),
                                Err(e) => {
                                    self.error(
                                        v.span(),
                                        format!("cannot read `{p}`: {e}"),
                                        "cannot read",
                                    )
                                    .help = Some(format!("looked for {}", full.display()));
                                }
                            }
                            d.tls_ca_file = Some(full);
                        } else {
                            d.local_base = resolve(&self.cur.path, p);
                        }
                    }
                }
                "dns-server" => {
                    if let Some(text) = self.string(v, key) {
                        let parsed = text.parse().or_else(|_| {
                            text.parse::<std::net::IpAddr>()
                                .map(|ip| std::net::SocketAddr::new(ip, 53))
                        });
                        match parsed {
                            Ok(addr) => d.dns_server = Some(addr),
                            Err(_) => {
                                self.error(
                                    v.span(),
                                    format!("`{text}` is not an IP address or IP:port"),
                                    "invalid address",
                                );
                            }
                        }
                    }
                }
                _ => unreachable!("checked against DELIVERY_KEYS"),
            }
        }
        if d.backoff_max < d.backoff_min {
            self.node_error(
                node,
                "backoff-max must not be shorter than backoff-min",
                "backoff-max < backoff-min",
            );
        }
        d
    }

    /// One of the `tls-rpt*` settings.
    fn tls_rpt_setting(&mut self, child: &KdlNode, key: &str, d: &mut Delivery) {
        let Some(v) = self.setting(child, &format!("{key} VALUE")) else {
            return;
        };
        match key {
            "tls-rpt" => match v.value().as_bool() {
                Some(b) => d.tls_rpt = b,
                None => {
                    self.error(
                        v.span(),
                        "`tls-rpt` must be #true or #false",
                        "not a boolean",
                    );
                }
            },
            "tls-rpt-interval" => {
                if let Some(t) = self.duration(v, key) {
                    if t < std::time::Duration::from_secs(60) {
                        self.error(v.span(), "tls-rpt-interval must be 1m or more", "too short");
                    } else {
                        d.tls_rpt_interval = t;
                    }
                }
            }
            "tls-rpt-max-domains" => {
                if let Some(n) = self.integer(v, key, 1, 10_000_000) {
                    d.tls_rpt_max_domains = usize::try_from(n).unwrap_or(usize::MAX);
                }
            }
            "tls-rpt-max-failures" => {
                if let Some(n) = self.integer(v, key, 0, 100_000) {
                    d.tls_rpt_max_failures = usize::try_from(n).unwrap_or(usize::MAX);
                }
            }
            _ => {
                let Some(text) = self.string(v, key).map(str::to_owned) else {
                    return;
                };
                let is_address = text.rsplit_once('@').is_some_and(|(l, dom)| {
                    !l.is_empty() && !dom.is_empty() && !dom.starts_with('.')
                }) && text
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"<>,;\"\\".contains(&b));
                let printable = !text.is_empty() && !text.chars().any(char::is_control);
                match key {
                    "tls-rpt-from" if !is_address => {
                        self.error(
                            v.span(),
                            format!("`{text}` is not an address (user@domain)"),
                            "not an address",
                        );
                    }
                    "tls-rpt-from" => d.tls_rpt_from = Some(text),
                    _ if !printable => {
                        self.error(
                            v.span(),
                            format!("`{key}` must be a non-empty line of text"),
                            "empty or control characters",
                        );
                    }
                    "tls-rpt-organization" => d.tls_rpt_organization = Some(text),
                    _ => d.tls_rpt_contact = Some(text),
                }
            }
        }
    }

    /// `local-recipients "passwd" "aliases" "TABLE"...` or `local-recipients "any"`.
    fn local_recipients(
        &mut self,
        child: &KdlNode,
        tables: &super::tables::Tables,
    ) -> Option<Vec<LocalRecipients>> {
        const USAGE: &str = "local-recipients \"passwd\" \"aliases\" \"TABLE\"... (or \"any\")";
        let default = Some(vec![LocalRecipients::Passwd, LocalRecipients::Aliases]);
        self.check_annotations(child);
        self.props(child, &[]);
        self.no_children(child);
        let Some(args) = self.args(child, 1, None, USAGE) else {
            return default;
        };
        let mut out = Vec::new();
        for a in args {
            let Some(word) = self.string(a, "local-recipients source") else {
                continue;
            };
            match word {
                "any" if out.is_empty() && child.entries().len() == 1 => return None,
                "any" => {
                    self.error(
                        a.span(),
                        "`any` (no check) cannot be combined with other sources",
                        "alone or not at all",
                    );
                }
                "passwd" => out.push(LocalRecipients::Passwd),
                "aliases" => out.push(LocalRecipients::Aliases),
                name if tables.contains_key(name) => {
                    out.push(LocalRecipients::Table(name.to_owned()))
                }
                name => {
                    let help = super::suggest(
                        name,
                        ["passwd", "aliases", "any"]
                            .into_iter()
                            .chain(tables.keys().map(String::as_str)),
                    );
                    self.error(
                        a.span(),
                        format!("`{name}` is not `passwd`, `aliases`, `any` nor a table"),
                        "unknown source",
                    )
                    .help = help.or_else(|| Some(format!("usage: {USAGE}")));
                }
            }
        }
        Some(out)
    }

    /// `tls-policy-map "FILE"`: Postfix's smtp_tls_policy_maps, every value checked
    /// (errors point into the file).
    fn tls_policy_map(
        &mut self,
        child: &KdlNode,
    ) -> Option<(
        std::path::PathBuf,
        Arc<crate::config::tls_policy::TlsPolicyMap>,
    )> {
        let v = self.setting(child, "tls-policy-map \"FILE\"")?;
        let p = self.string(v, "tls-policy-map")?.to_owned();
        let map = self.data_file(
            "TLS policy table",
            &p,
            v,
            crate::config::tls_policy::TlsPolicyMap::parse,
            "`tls-policy-map` ",
        )?;
        Some((resolve(&self.cur.path, &p), Arc::new(map)))
    }

    /// `credentials NAME file="path"`: a Postfix sasl_passwd file.
    pub(super) fn credentials(&mut self, node: &KdlNode, all: &mut Credentials) {
        const USAGE: &str = "credentials NAME file=\"sasl_passwd\"";
        self.check_annotations(node);
        self.no_children(node);
        let args = self.args(node, 1, Some(1), USAGE);
        let name = args
            .as_ref()
            .and_then(|a| self.name(a[0], "credentials name"));
        let props = self.props(node, &["file"]);
        let here = self.origin(node.name().span().offset());
        let table = match props.into_iter().find(|(k, _)| *k == "file") {
            Some((_, entry)) => self.string(entry, "file").and_then(|path| {
                let table = self.table_file(path, entry, parse_map, name)?;
                self.check_credentials(&table, entry);
                Some(Arc::new(table))
            }),
            None => {
                self.node_error(node, "`credentials` needs `file=\"path\"`", "no file")
                    .help = Some(format!("usage: {USAGE}"));
                None
            }
        };
        let Some(name) = name else { return };
        if let Some((_, first)) = all.get(name) {
            let first = first.clone();
            self.duplicate(node.name().span(), format!("credentials `{name}`"), &first);
            return;
        }
        all.insert(name.to_owned(), (table, here));
    }

    /// Every value must be `user:password`.
    fn check_credentials(&mut self, table: &Table, entry: &kdl::KdlEntry) {
        for (key, value) in table.map_entries() {
            if !value.contains(':') || value.starts_with(':') {
                self.error(
                    entry.span(),
                    format!("the entry for `{key}` is not `user:password`"),
                    "in this file",
                );
            }
        }
    }
}
