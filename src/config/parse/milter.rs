//! `milter` nodes and the references to them (a child module of `parser`, for its
//! helpers): Postfix's `smtpd_milters`, defined once by name and used per listener.
//!
//! ```kdl
//! milter "rspamd" "inet:127.0.0.1:11332" on-failure="tempfail" content-timeout="5m" {
//!     macros "mail" "i {mail_addr} {auth_authen}"   // milter_mail_macros
//! }
//! listen "mx" address="0.0.0.0:25" milters="opendkim rspamd" milter-skip-clients="trusted"
//! ```
//!
//! Milters are read in the first pass, with the sets, so they may be referred to
//! before they are defined.

use std::collections::BTreeMap;
use std::sync::Arc;

use kdl::{KdlEntry, KdlNode};

use super::{Parser, suggest};
use crate::config::Origin;
use crate::milter::{Address, FailureAction, KNOWN_MACROS, MacroStage, Milter};

/// `milter` nodes by name, with where each is defined (`None`: it had errors).
pub(super) type Milters = BTreeMap<String, (Option<Arc<Milter>>, Origin)>;

const USAGE: &str = "milter NAME \"inet:host:port|unix:/path\" [on-failure=\"tempfail|accept|reject|shutdown\"] [connect-timeout=\"30s\"] [command-timeout=\"30s\"] [content-timeout=\"300s\"] [{ macros STAGE \"LIST\" }]";

impl Parser {
    /// Reads one `milter` node into `all`.
    pub(super) fn milter(&mut self, node: &KdlNode, all: &mut Milters) {
        self.check_annotations(node);
        let here = self.origin(node.name().span().offset());
        let args = self.args(node, 2, Some(2), USAGE);
        let props = self.props(
            node,
            &[
                "on-failure",
                "connect-timeout",
                "command-timeout",
                "content-timeout",
            ],
        );
        let Some(args) = args else { return };
        let name = self.name(args[0], "milter name");
        let address = self.string(args[1], "milter address").and_then(|a| {
            Address::parse(a)
                .map_err(|e| self.error(args[1].span(), e.to_string(), "not a milter address"))
                .ok()
        });
        let mut spec = Milter::new(name.unwrap_or_default(), Address::Unix("/".into()));
        let mut ok = true;
        for (key, entry) in props {
            ok &= self.filter_property(key, entry, &mut spec);
        }
        if let Some(children) = node.children() {
            for child in children.nodes() {
                if child.name().value() != "macros" {
                    self.node_error(
                        child,
                        format!("unknown setting `{}` in `milter`", child.name().value()),
                        "unknown",
                    )
                    .help = Some("usage: macros STAGE \"LIST\"".to_owned());
                    ok = false;
                    continue;
                }
                ok &= self.milter_macros(child, &mut spec);
            }
        }
        let (Some(name), Some(address)) = (name, address) else {
            return;
        };
        if let Some((_, first)) = all.get(name) {
            let first = first.clone();
            self.duplicate(args[0].span(), format!("milter `{name}`"), &first);
            return;
        }
        spec.address = address;
        all.insert(name.to_owned(), (ok.then(|| Arc::new(spec)), here));
    }

    /// A property milters and rspamd filters share (`on-failure`, the timeouts);
    /// `false`: reported.
    fn filter_property(&mut self, key: &str, entry: &KdlEntry, spec: &mut Milter) -> bool {
        match key {
            "on-failure" => match self.string(entry, "on-failure") {
                Some(s) => match FailureAction::parse(s) {
                    Some(a) => spec.on_failure = a,
                    None => {
                        self.error(
                            entry.span(),
                            format!("on-failure is tempfail, accept, reject or shutdown, not `{s}`"),
                            "invalid value",
                        )
                        .help = Some(
                            "tempfail: 451 for the transaction (the default); accept: go on without this milter; reject: 550; shutdown: 421 and the session ends".to_owned(),
                        );
                        return false;
                    }
                },
                None => return false,
            },
            "connect-timeout" | "command-timeout" | "content-timeout" => {
                match self.duration(entry, key) {
                    Some(d) if key == "connect-timeout" => spec.connect_timeout = d,
                    Some(d) if key == "command-timeout" => spec.command_timeout = d,
                    Some(d) => spec.content_timeout = d,
                    None => return false,
                }
            }
            _ => {}
        }
        true
    }

    /// Reads one `rspamd` node (rspamd's HTTP protocol, see [`crate::milter::rspamd`])
    /// into `all`: a filter like a milter, in the same namespace, used by the same
    /// `milters=` lists.
    pub(super) fn rspamd(&mut self, node: &KdlNode, all: &mut Milters) {
        const RSPAMD_USAGE: &str = "rspamd NAME \"http://host:port\" [on-failure=\"tempfail|accept|reject|shutdown\"] [connect-timeout=\"30s\"] [content-timeout=\"300s\"] [max-reply-size=\"1M\"] [spam-header=\"X-Spam\"] [score-header=\"X-Rspamd-Score\"]";
        self.check_annotations(node);
        let here = self.origin(node.name().span().offset());
        let args = self.args(node, 2, Some(2), RSPAMD_USAGE);
        let props = self.props(
            node,
            &[
                "on-failure",
                "connect-timeout",
                "content-timeout",
                "max-reply-size",
                "spam-header",
                "score-header",
            ],
        );
        self.no_children(node);
        let Some(args) = args else { return };
        let name = self.name(args[0], "filter name");
        let url = self.string(args[1], "rspamd URL").and_then(|a| {
            crate::milter::rspamd::parse_url(a)
                .map_err(|e| self.error(args[1].span(), e.to_string(), "not an rspamd URL"))
                .ok()
        });
        let mut spec = Milter::new(name.unwrap_or_default(), Address::Unix("/".into()));
        let mut settings = crate::milter::rspamd::Settings::default();
        let mut ok = true;
        for (key, entry) in props {
            match key {
                "max-reply-size" => match self.size(entry, key, 1024, 64 << 20) {
                    Some(n) => settings.max_reply = n as usize,
                    None => ok = false,
                },
                "spam-header" | "score-header" => {
                    let Some(h) = self.string(entry, key) else {
                        ok = false;
                        continue;
                    };
                    let valid = h.len() <= 255
                        && h.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b':');
                    if key == "score-header" && h.is_empty() {
                        settings.score_header = None;
                    } else if !valid || h.is_empty() {
                        self.error(
                            entry.span(),
                            format!("`{h}` is not a header name"),
                            "not a header name",
                        );
                        ok = false;
                    } else if key == "spam-header" {
                        settings.spam_header = h.to_owned();
                    } else {
                        settings.score_header = Some(h.to_owned());
                    }
                }
                _ => ok &= self.filter_property(key, entry, &mut spec),
            }
        }
        let (Some(name), Some((address, path))) = (name, url) else {
            return;
        };
        if let Some((_, first)) = all.get(name) {
            let first = first.clone();
            self.duplicate(args[0].span(), format!("filter `{name}`"), &first);
            return;
        }
        settings.path = path;
        spec.address = address;
        spec.rspamd = Some(settings);
        all.insert(name.to_owned(), (ok.then(|| Arc::new(spec)), here));
    }

    /// `macros STAGE "LIST"`: the macros sent at a stage (Postfix's
    /// `milter_STAGE_macros`), instead of Postfix's default list.
    fn milter_macros(&mut self, node: &KdlNode, spec: &mut Milter) -> bool {
        const MACROS_USAGE: &str = "macros \"connect|helo|mail|rcpt|data|end-of-header|end-of-data\" \"j {daemon_name} ...\"";
        self.check_annotations(node);
        self.props(node, &[]);
        self.no_children(node);
        let Some(args) = self.args(node, 2, Some(2), MACROS_USAGE) else {
            return false;
        };
        let (Some(stage), Some(list)) = (
            self.string(args[0], "macro stage"),
            self.string(args[1], "macro list"),
        ) else {
            return false;
        };
        let Some(stage) = MacroStage::ALL.iter().find(|s| s.name() == stage) else {
            self.error(
                args[0].span(),
                format!("no macro stage `{stage}`"),
                "unknown stage",
            )
            .help = Some(
                suggest(stage, MacroStage::ALL.iter().map(|s| s.name()))
                    .unwrap_or_else(|| MACROS_USAGE.to_owned()),
            );
            return false;
        };
        let mut names = Vec::new();
        for m in list.split([' ', ',']).filter(|m| !m.is_empty()) {
            if !KNOWN_MACROS.contains(&m) {
                self.error(
                    args[1].span(),
                    format!("mtad has no macro `{m}`"),
                    "unknown macro",
                )
                .help = Some(
                    suggest(m, KNOWN_MACROS.iter().copied())
                        .unwrap_or_else(|| format!("the macros: {}", KNOWN_MACROS.join(" "))),
                );
                return false;
            }
            names.push(m.to_owned());
        }
        spec.macros[stage.index()] = names;
        true
    }

    /// `milters="NAME NAME"`: defined milters, in order; reported at `entry` when one
    /// is not.
    pub(super) fn milter_refs(
        &mut self,
        entry: &KdlEntry,
        milters: &Milters,
        what: &str,
    ) -> Vec<String> {
        let Some(list) = self.string(entry, what) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for name in list.split([' ', ',']).filter(|m| !m.is_empty()) {
            if !milters.contains_key(name) {
                let help = suggest(name, milters.keys().map(String::as_str)).unwrap_or_else(|| {
                    format!("define it: milter \"{name}\" \"inet:127.0.0.1:11332\"")
                });
                self.error(
                    entry.span(),
                    format!("no milter named `{name}`"),
                    "undefined",
                )
                .help = Some(help);
                continue;
            }
            if out.iter().any(|n| n == name) {
                self.error(
                    entry.span(),
                    format!("milter `{name}` named twice"),
                    "duplicate",
                );
                continue;
            }
            out.push(name.to_owned());
        }
        out
    }
}
