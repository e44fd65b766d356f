//! `content-filter` nodes and the references to them (a child module of `parser`, for
//! its helpers): the after-queue content filter of Postfix's FILTER_README.
//!
//! ```kdl
//! content-filter "amavis" "smtp:[127.0.0.1]:10024" on-failure="retry"   // or "bypass"
//! server { content-filter "amavis" }                      // content_filter (every listener)
//! listen "mx" address="0.0.0.0:25" content-filter="amavis"                // per listener
//! listen "reinject" address="127.0.0.1:10025" filtered=#true  // back from the filter
//! stage "data" { filter "amavis" sender-domain="partner" }  // per message, by a rule
//! ```
//!
//! Filters are read in the first pass, with the sets, so they may be referred to
//! before they are defined.

use std::collections::BTreeMap;

use kdl::{KdlEntry, KdlNode};

use super::{Parser, suggest};
use crate::config::route::{NextHop, Transport};
use crate::config::{ContentFilter, Origin};

/// `content-filter` nodes by name, with where each is defined (`None`: it had errors).
pub(super) type Filters = BTreeMap<String, (Option<ContentFilter>, Origin)>;

const USAGE: &str = "content-filter NAME \"smtp:[host]:port\" [on-failure=\"retry|bypass\"]";

impl Parser {
    /// Reads one `content-filter` node into `all`.
    pub(super) fn content_filter(&mut self, node: &KdlNode, all: &mut Filters) {
        self.check_annotations(node);
        self.no_children(node);
        let here = self.origin(node.name().span().offset());
        let args = self.args(node, 2, Some(2), USAGE);
        let props = self.props(node, &["on-failure"]);
        let Some(args) = args else { return };
        let name = self.name(args[0], "content filter name");
        let transport = self.route_value(args[1], "content filter", Transport::parse);
        let transport = transport.filter(|t| {
            let ok = matches!(
                t,
                Transport::Lmtp(_) | Transport::Smtp(NextHop::Mx { .. } | NextHop::Host { .. })
            );
            if !ok {
                self.error(
                    args[1].span(),
                    format!("a content filter is an SMTP or LMTP next hop, not `{t}`"),
                    "not a filter",
                )
                .help = Some(
                    "e.g. \"smtp:[127.0.0.1]:10024\" or \"lmtp:unix:/run/filter.sock\"".to_owned(),
                );
            }
            ok
        });
        let mut bypass = false;
        for (_, entry) in props {
            match self.string(entry, "on-failure") {
                Some("retry") => bypass = false,
                Some("bypass") => bypass = true,
                Some(other) => {
                    self.error(
                        entry.span(),
                        format!("on-failure is `retry` or `bypass`, not `{other}`"),
                        "invalid value",
                    )
                    .help = Some(
                        "retry: keep the message queued until the filter takes it (the default); \
                         bypass: deliver it unfiltered"
                            .to_owned(),
                    );
                }
                None => {}
            }
        }
        let Some(name) = name else { return };
        if let Some((_, first)) = all.get(name) {
            let first = first.clone();
            self.duplicate(args[0].span(), format!("content filter `{name}`"), &first);
            return;
        }
        let filter = transport.map(|transport| ContentFilter {
            name: name.to_owned(),
            transport,
            bypass,
        });
        all.insert(name.to_owned(), (filter, here));
    }

    /// A string naming a defined content filter; reported at `entry` when it is not.
    pub(super) fn filter_ref(
        &mut self,
        entry: &KdlEntry,
        filters: &Filters,
        what: &str,
    ) -> Option<String> {
        let name = self.string(entry, what)?;
        if filters.contains_key(name) {
            return Some(name.to_owned());
        }
        let help = suggest(name, filters.keys().map(String::as_str)).unwrap_or_else(|| {
            format!("define it: content-filter \"{name}\" \"smtp:[127.0.0.1]:10024\"")
        });
        self.error(
            entry.span(),
            format!("no content filter named `{name}`"),
            "undefined",
        )
        .help = Some(help);
        None
    }
}
