//! `listen` nodes, and the TLS settings settled once the `server` block is known.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use kdl::{KdlEntry, KdlNode};
use miette::SourceSpan;

use super::{Parser, Sets, SourceFile, resolve, suggest, users};
use crate::config::{AuthMode, BareNewline, CertKey, Listener, ListenerTls, Origin, Server};
/// `server` block is known (it may come after the listener).
pub(super) struct ListenTls {
    file: Arc<SourceFile>,
    span: SourceSpan,
    starttls: Option<ListenerTls>,
    starttls_at: Option<SourceSpan>,
    implicit: Option<SourceSpan>,
    auth_at: Option<SourceSpan>,
    users_at: Option<SourceSpan>,
    certificate: Option<(PathBuf, SourceSpan)>,
    key: Option<(PathBuf, SourceSpan)>,
}

impl Parser {
    pub(super) fn listen(
        &mut self,
        node: &KdlNode,
        existing: &[(Listener, Origin)],
        sets: &Sets,
    ) -> Option<(Listener, ListenTls)> {
        let filters = &sets.filters;
        const USAGE: &str = "listen NAME address=\"IP:PORT\" [milters=\"NAME ...\"] [milter-skip-clients=\"NETWORKS\"] [starttls=\"offered|required|off\"] [implicit-tls=#true] [auth=\"offered|required\"] [content-filter=\"NAME\"] [filtered=#true] [bare-newline=\"reject|normalize\"] [bare-newline-clients=\"NETWORKS\"] [open-relay=\"intended\"]";
        self.check_annotations(node);
        self.no_children(node);
        let props = self.props(
            node,
            &[
                "address",
                "content-filter",
                "filtered",
                "proxy-protocol",
                "proxies",
                "starttls",
                "implicit-tls",
                "certificate",
                "key",
                "auth",
                "users",
                "auth-plaintext",
                "bare-newline",
                "bare-newline-clients",
                "milters",
                "milter-skip-clients",
                "open-relay",
            ],
        );
        let mut tls = ListenTls {
            file: self.cur.clone(),
            span: node.name().span(),
            starttls: None,
            starttls_at: None,
            implicit: None,
            auth_at: None,
            users_at: None,
            certificate: None,
            key: None,
        };
        let mut auth = AuthMode::Off;
        let mut users = None;
        let mut auth_plaintext = false;
        let mut content_filter = None;
        let mut filtered = false;
        let mut proxy_protocol = false;
        let mut proxies: Option<(String, &KdlEntry)> = None;
        let mut normalize: Option<&KdlEntry> = None;
        let mut bare_clients: Option<(String, &KdlEntry)> = None;
        let mut milters = Vec::new();
        let mut milter_skip: Option<(String, &KdlEntry)> = None;
        let mut open_relay = false;
        for (key, entry) in &props {
            match *key {
                "content-filter" => {
                    content_filter = self.filter_ref(entry, filters, "content-filter");
                }
                "filtered" => match entry.value().as_bool() {
                    Some(b) => filtered = b,
                    None => {
                        self.error(entry.span(), "filtered is #true or #false", "not a boolean");
                    }
                },
                "proxy-protocol" => match entry.value().as_bool() {
                    Some(b) => proxy_protocol = b,
                    None => {
                        self.error(
                            entry.span(),
                            "proxy-protocol is #true or #false",
                            "not a boolean",
                        );
                    }
                },
                "starttls" => {
                    tls.starttls = match self.string(entry, "starttls") {
                        Some("offered") => Some(ListenerTls::Offered),
                        Some("required") => Some(ListenerTls::Required),
                        Some("off") => Some(ListenerTls::Off),
                        Some(other) => {
                            self.error(
                                entry.span(),
                                format!("starttls is \"offered\", \"required\" or \"off\", not `{other}`"),
                                "unknown value",
                            );
                            None
                        }
                        None => None,
                    };
                    tls.starttls_at = Some(entry.span());
                }
                "implicit-tls" => match entry.value().as_bool() {
                    Some(b) => tls.implicit = b.then_some(entry.span()),
                    None => {
                        self.error(
                            entry.span(),
                            "implicit-tls is #true or #false",
                            "not a boolean",
                        );
                    }
                },
                "certificate" => tls.certificate = self.path(entry, "certificate"),
                "key" => tls.key = self.path(entry, "key"),
                "auth" => {
                    auth = match self.string(entry, "auth") {
                        Some("offered") => AuthMode::Offered,
                        Some("required") => AuthMode::Required,
                        Some("off") => AuthMode::Off,
                        Some(other) => {
                            self.error(
                                entry.span(),
                                format!(
                                    "auth is \"offered\", \"required\" or \"off\", not `{other}`"
                                ),
                                "unknown value",
                            );
                            AuthMode::Off
                        }
                        None => AuthMode::Off,
                    };
                    tls.auth_at = Some(entry.span());
                }
                "users" => {
                    if let Some(name) = self.string(entry, "users") {
                        users = Some(name.to_owned());
                        tls.users_at = Some(entry.span());
                    }
                }
                "auth-plaintext" => match entry.value().as_bool() {
                    Some(b) => auth_plaintext = b,
                    None => {
                        self.error(
                            entry.span(),
                            "auth-plaintext is #true or #false",
                            "not a boolean",
                        );
                    }
                },
                "proxies" => {
                    if let Some(name) = self.network_set_ref(entry, "proxies", sets) {
                        proxies = Some((name, *entry));
                    }
                }
                "bare-newline" => match self.string(entry, "bare-newline") {
                    Some("normalize") => normalize = Some(*entry),
                    Some("reject") | None => {}
                    Some(other) => {
                        self.error(
                            entry.span(),
                            format!("bare-newline is \"reject\" or \"normalize\", not `{other}`"),
                            "unknown value",
                        )
                        .help = Some(
                            "\"normalize\" reads a line ending in LF alone as if it ended in CRLF (Postfix's smtpd_forbid_bare_newline = normalize)".to_owned(),
                        );
                    }
                },
                "milters" => milters = self.milter_refs(entry, &sets.milters, "milters"),
                "open-relay" => open_relay = self.open_relay(entry).unwrap_or(false),
                "milter-skip-clients" => {
                    if let Some(name) = self.network_set_ref(entry, "milter-skip-clients", sets) {
                        milter_skip = Some((name, *entry));
                    }
                }
                "bare-newline-clients" => {
                    if let Some(name) = self.network_set_ref(entry, "bare-newline-clients", sets) {
                        bare_clients = Some((name, *entry));
                    }
                }
                _ => {}
            }
        }
        if filtered
            && content_filter.is_some()
            && let Some((_, entry)) = props.iter().find(|(k, _)| *k == "content-filter")
        {
            self.error(
                entry.span(),
                "a `filtered` listener takes mail back from a filter: it cannot send it to one",
                "filter on a filtered listener",
            );
        }
        if milters.is_empty()
            && let Some((_, entry)) = &milter_skip
        {
            self.error(
                entry.span(),
                "milter-skip-clients= without milters=",
                "no milters to skip",
            );
        }
        let bare_newline = match (normalize, bare_clients) {
            (Some(_), clients) => BareNewline::Normalize {
                clients: clients.map(|(name, _)| name),
            },
            (None, None) => BareNewline::Reject,
            (None, Some((_, entry))) => {
                self.error(
                    entry.span(),
                    "bare-newline-clients= without bare-newline=\"normalize\"",
                    "nothing to normalize",
                )
                .help = Some(
                    "bare-newline=\"normalize\" bare-newline-clients=\"trusted\": these clients' bare LFs are read as CRLF, the others' refused".to_owned(),
                );
                BareNewline::Reject
            }
        };
        let args = self.args(node, 1, Some(1), USAGE);
        let name = args.and_then(|a| self.name(a[0], "listener name").map(|n| (n, a[0])));

        let address = match props.iter().find(|(k, _)| *k == "address") {
            None => {
                self.node_error(node, "`listen` needs `address=\"IP:PORT\"`", "no address")
                    .help = Some(format!("usage: {USAGE}"));
                None
            }
            Some((_, entry)) => {
                let text = self.string(entry, "address")?;
                match text.parse::<SocketAddr>() {
                    Ok(a) => Some((a, *entry)),
                    Err(_) => {
                        self.error(
                            entry.span(),
                            format!("`{text}` is not an IP:PORT address"),
                            "invalid address",
                        )
                        .help = Some(
                            "e.g. \"0.0.0.0:25\", \"127.0.0.1:2525\" or \"[::1]:587\"".to_owned(),
                        );
                        None
                    }
                }
            }
        };

        let (name, name_entry) = name?;
        let (address, address_entry) = address?;
        if let Some((_, first)) = existing.iter().find(|(l, _)| l.name == name) {
            self.duplicate(name_entry.span(), format!("listener `{name}`"), first);
            return None;
        }
        if let Some((l, first)) = existing.iter().find(|(l, _)| l.address == address) {
            self.error(
                address_entry.span(),
                format!("address {address} is already used by listener `{}`", l.name),
                "address in use",
            )
            .help = Some(format!("first defined at {first}"));
            return None;
        }
        let proxy = match (proxy_protocol, proxies) {
            (true, Some((name, _))) => Some(name),
            (false, None) => None,
            (true, None) => {
                self.node_error(
                    node,
                    "proxy-protocol=#true needs proxies=\"NETWORKS\": the load balancers' addresses",
                    "which proxies?",
                )
                .help = Some(
                    "only those may send a PROXY header: networks \"lb\" \"10.0.0.5/32\"; listen ... proxy-protocol=#true proxies=\"lb\"".to_owned(),
                );
                return None;
            }
            (false, Some((_, entry))) => {
                self.error(
                    entry.span(),
                    "proxies= without proxy-protocol=#true",
                    "no PROXY protocol",
                );
                return None;
            }
        };
        if let (Some(on), Some(_)) = (tls.implicit, tls.starttls) {
            self.error(
                on,
                "implicit-tls=#true and starttls= exclude each other",
                "TLS from the start",
            )
            .help = Some(
                "an implicit-TLS listener (port 465) is encrypted before the banner; STARTTLS is for port 25 and 587".to_owned(),
            );
        }
        let own = self.cert_key(
            tls.certificate.take(),
            tls.key.take(),
            ("certificate", "key"),
        );
        let listener = Listener {
            name: name.to_owned(),
            address,
            content_filter,
            filtered,
            proxy,
            tls: ListenerTls::Off,
            certificate: own,
            auth,
            users,
            auth_plaintext,
            bare_newline,
            milters,
            milter_skip: milter_skip.map(|(name, _)| name),
            open_relay,
        };
        Some((listener, tls))
    }

    /// Settles a listener's TLS once the `server` block (and its certificate) is known:
    /// STARTTLS is offered by default when there is a certificate; asking for TLS
    /// without one is an error at the listener.
    pub(super) fn settle_tls(
        &mut self,
        l: &mut Listener,
        how: ListenTls,
        server: Option<&Server>,
        users: &users::UsersTables,
    ) {
        if l.certificate.is_none() {
            l.certificate = server.and_then(|s| s.tls.clone());
        }
        l.tls = match (how.implicit, how.starttls) {
            (Some(_), _) => ListenerTls::Implicit,
            (None, Some(t)) => t,
            (None, None) if l.certificate.is_some() => ListenerTls::Offered,
            (None, None) => ListenerTls::Off,
        };
        self.cur = how.file.clone();
        if l.tls != ListenerTls::Off && l.certificate.is_none() {
            let at = how.implicit.or(how.starttls_at).unwrap_or(how.span);
            self.error(
                at,
                format!("listener `{}` uses TLS but has no certificate", l.name),
                "no certificate",
            )
            .help = Some(
                "add to `server`: tls-certificate \"cert.pem\"; tls-key \"key.pem\" (or certificate=/key= on the listener)".to_owned(),
            );
        }
        if l.auth != AuthMode::Off && l.tls == ListenerTls::Off && !l.auth_plaintext {
            let at = how.auth_at.unwrap_or(how.span);
            self.error(
                at,
                format!("listener `{}` offers AUTH but no TLS: passwords would cross the network in the clear", l.name),
                "AUTH without TLS",
            )
            .help = Some(
                "configure a certificate (STARTTLS is then offered), or allow it knowingly: auth-plaintext=#true".to_owned(),
            );
        }
        match (&l.users, how.users_at) {
            (Some(name), Some(at)) if !users.contains_key(name) => {
                let help = suggest(name, users.keys().map(String::as_str)).unwrap_or_else(|| {
                    format!("define it: users \"{name}\" file=\"users.passwd\"")
                });
                self.error(at, format!("no users table named `{name}`"), "undefined")
                    .help = Some(help);
            }
            (Some(_), Some(at)) if l.auth == AuthMode::Off => {
                self.error(
                    at,
                    "users= without auth=\"offered\" or \"required\"",
                    "no AUTH",
                );
            }
            (None, _) if l.auth != AuthMode::Off => {
                let at = how.auth_at.unwrap_or(how.span);
                if users.len() == 1 {
                    l.users = users.keys().next().cloned();
                } else {
                    let (message, help) = if users.is_empty() {
                        (
                            format!(
                                "listener `{}` offers AUTH but no `users` table is defined",
                                l.name
                            ),
                            "define one: users \"mailboxes\" file=\"users.passwd\"".to_owned(),
                        )
                    } else {
                        (
                            format!("listener `{}` offers AUTH: say which users table", l.name),
                            format!(
                                "users=\"NAME\", one of: {}",
                                users
                                    .keys()
                                    .map(String::as_str)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )
                    };
                    self.error(at, message, "which users?").help = Some(help);
                }
            }
            _ => {}
        }
    }

    /// The networks set a listener property names (`proxies=`, `bare-newline-clients=`):
    /// `None` when it is not defined (reported, with a near name or how to define one).
    fn network_set_ref(&mut self, entry: &KdlEntry, what: &str, sets: &Sets) -> Option<String> {
        let name = self.string(entry, what)?;
        if sets.networks.contains_key(name) {
            return Some(name.to_owned());
        }
        let help = suggest(name, sets.networks.keys().map(String::as_str))
            .unwrap_or_else(|| format!("define it: networks \"{name}\" \"10.0.0.5/32\""));
        self.error(
            entry.span(),
            format!("no networks set named `{name}`"),
            "undefined",
        )
        .help = Some(help);
        None
    }

    /// A file path property, resolved against the directory of the file it is in.
    pub(super) fn path(&mut self, entry: &KdlEntry, what: &str) -> Option<(PathBuf, SourceSpan)> {
        let text = self.string(entry, what)?;
        if text.is_empty() {
            self.error(
                entry.span(),
                format!("{what} must not be empty"),
                "empty path",
            );
            return None;
        }
        let file = self.cur.path.clone();
        Some((resolve(&file, text), entry.span()))
    }

    /// A certificate and its key, both or neither, loaded now so that a file that is
    /// missing, unreadable, or does not match is reported with the configuration.
    pub(super) fn cert_key(
        &mut self,
        certificate: Option<(PathBuf, SourceSpan)>,
        key: Option<(PathBuf, SourceSpan)>,
        names: (&str, &str),
    ) -> Option<CertKey> {
        match (certificate, key) {
            (None, None) => None,
            (Some((certificate, at)), Some((key, _))) => {
                let pair = CertKey { certificate, key };
                match crate::net::tls::server_config(&pair) {
                    Ok(_) => {
                        self.sources.add_file(&pair.certificate);
                        self.sources.add_file(&pair.key);
                        Some(pair)
                    }
                    Err(e) => {
                        self.error(at, e.to_string(), "cannot use this certificate");
                        None
                    }
                }
            }
            (Some((_, at)), None) | (None, Some((_, at))) => {
                let (c, k) = names;
                self.error(
                    at,
                    format!("`{c}` and `{k}` go together"),
                    "only one of them",
                )
                .help = Some(format!("{c}=\"cert.pem\" {k}=\"key.pem\""));
                None
            }
        }
    }
}
