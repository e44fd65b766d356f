//! The shape of a node (annotations, arguments, properties, children) and the values of its entries.

use std::collections::BTreeMap;
use std::time::Duration;

use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};

use super::{Parser, kind, plural, suggest};
use crate::config::Origin;
use crate::config::units::{parse_duration, parse_size};
impl Parser {
    /// The children of a settings block (`server`, `limits`, `delivery`,
    /// `rate-limits`): the block itself takes no arguments or properties; an unknown
    /// child and a second child of the same name are reported and left out. `None`
    /// when the block has no `{ }`.
    pub(super) fn settings_block<'n>(
        &mut self,
        node: &'n KdlNode,
        within: &str,
        known: &[&str],
        usage: &str,
    ) -> Option<Vec<&'n KdlNode>> {
        self.check_annotations(node);
        self.props(node, &[]);
        self.args(node, 0, Some(0), usage);
        let children = self.children(node, usage)?;
        let mut seen: BTreeMap<&str, Origin> = BTreeMap::new();
        let mut out = Vec::new();
        for child in children.nodes() {
            let key = child.name().value();
            if !known.contains(&key) {
                self.check_annotations(child);
                self.unknown_node(child, within, known);
                continue;
            }
            let here = self.origin(child.name().span().offset());
            if let Some(first) = seen.get(key) {
                let first = first.clone();
                self.duplicate(
                    child.name().span(),
                    format!("`{key}` in `{within}`"),
                    &first,
                );
                continue;
            }
            seen.insert(key, here);
            out.push(child);
        }
        Some(out)
    }

    // ---- generic node checks --------------------------------------------------

    /// Type annotations have no meaning in this grammar; refuse them rather than
    /// silently ignore them.
    pub(super) fn check_annotations(&mut self, node: &KdlNode) {
        if let Some(ty) = node.ty() {
            self.error(
                ty.span(),
                "type annotations are not supported",
                "annotation",
            );
        }
        for entry in node.entries() {
            if entry.ty().is_some() {
                self.error(
                    entry.span(),
                    "type annotations are not supported",
                    "annotation",
                );
            }
        }
    }

    /// The positional arguments, after checking their count. `usage` shows the
    /// expected form in the help. Returns `None` (after reporting) on a bad count.
    pub(super) fn args<'n>(
        &mut self,
        node: &'n KdlNode,
        min: usize,
        max: Option<usize>,
        usage: &str,
    ) -> Option<Vec<&'n KdlEntry>> {
        let args: Vec<&KdlEntry> = node
            .entries()
            .iter()
            .filter(|e| e.name().is_none())
            .collect();
        let name = node.name().value();
        if args.len() < min {
            let expected = match max {
                Some(max) if max == min => plural(min, "argument"),
                _ => format!("at least {}", plural(min, "argument")),
            };
            self.node_error(
                node,
                format!("`{name}` takes {expected}, found {}", args.len()),
                "missing arguments",
            )
            .help = Some(format!("usage: {usage}"));
            return None;
        }
        if let Some(max) = max
            && args.len() > max
        {
            let extra = args[max].span();
            let message = if max == 0 {
                format!("`{name}` takes no arguments")
            } else {
                format!("`{name}` takes at most {}", plural(max, "argument"))
            };
            self.error(extra, message, "unexpected argument").help =
                Some(format!("usage: {usage}"));
            return None;
        }
        Some(args)
    }

    /// The properties, after reporting unknown and duplicate ones. Only known,
    /// first occurrences are returned, in file order.
    pub(super) fn props<'n>(
        &mut self,
        node: &'n KdlNode,
        allowed: &[&str],
    ) -> Vec<(&'n str, &'n KdlEntry)> {
        let mut seen: Vec<(&str, &KdlEntry)> = Vec::new();
        let node_name = node.name().value();
        for entry in node.entries() {
            let Some(key) = entry.name() else { continue };
            let key_name = key.value();
            if !allowed.contains(&key_name) {
                let help = if allowed.is_empty() {
                    format!("`{node_name}` takes no properties")
                } else {
                    suggest(key_name, allowed.iter().copied())
                        .unwrap_or_else(|| format!("`{node_name}` accepts: {}", allowed.join(", ")))
                };
                self.error(
                    key.span(),
                    format!("unknown property `{key_name}` on `{node_name}`"),
                    "unknown property",
                )
                .help = Some(help);
            } else if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key_name) {
                let first = self.origin(first.span().offset());
                self.duplicate(entry.span(), format!("property `{key_name}`"), &first);
            } else {
                seen.push((key_name, entry));
            }
        }
        seen
    }

    pub(super) fn no_children(&mut self, node: &KdlNode) {
        if node.children().is_some() {
            let name = node.name().value();
            self.node_error(
                node,
                format!("`{name}` takes no child block"),
                "unexpected `{ ... }`",
            );
        }
    }

    pub(super) fn children<'n>(
        &mut self,
        node: &'n KdlNode,
        usage: &str,
    ) -> Option<&'n KdlDocument> {
        let children = node.children();
        if children.is_none() {
            let name = node.name().value();
            self.node_error(
                node,
                format!("`{name}` needs a block `{{ ... }}`"),
                "missing block",
            )
            .help = Some(format!("usage: {usage}"));
        }
        children
    }

    /// A setting inside a block: `name VALUE`, one argument, nothing else.
    pub(super) fn setting<'n>(&mut self, node: &'n KdlNode, usage: &str) -> Option<&'n KdlEntry> {
        self.check_annotations(node);
        self.props(node, &[]);
        self.no_children(node);
        self.args(node, 1, Some(1), usage).map(|args| args[0])
    }

    // ---- values ---------------------------------------------------------------

    pub(super) fn string<'n>(&mut self, entry: &'n KdlEntry, what: &str) -> Option<&'n str> {
        match entry.value() {
            KdlValue::String(s) => Some(s),
            other => {
                self.error(
                    entry.span(),
                    format!("{what} must be a string, found {}", kind(other)),
                    "expected a string",
                );
                None
            }
        }
    }

    /// `open-relay="intended"` on a rcpt rule or a listener: the one spelling that
    /// reads as meant (a boolean would be too easy to set by accident).
    pub(super) fn open_relay(&mut self, entry: &KdlEntry) -> Option<bool> {
        match self.string(entry, "`open-relay`")? {
            "intended" => Some(true),
            other => {
                self.error(
                    entry.span(),
                    format!("`open-relay` is \"intended\" or absent, not `{other}`"),
                    "unknown value",
                )
                .help = Some(
                    "write open-relay=\"intended\" only where clients that are neither \
                     trusted nor authenticated may relay on purpose"
                        .to_owned(),
                );
                None
            }
        }
    }

    /// An integer in `min..=max`.
    pub(super) fn integer(
        &mut self,
        entry: &KdlEntry,
        what: &str,
        min: u64,
        max: u64,
    ) -> Option<u64> {
        match entry.value() {
            KdlValue::Integer(n) if (i128::from(min)..=i128::from(max)).contains(n) => {
                u64::try_from(*n).ok()
            }
            KdlValue::Integer(n) => {
                let range = if max >= u64::from(u32::MAX) {
                    format!("at least {min}")
                } else {
                    format!("between {min} and {max}")
                };
                self.error(
                    entry.span(),
                    format!("{what} must be {range}, found {n}"),
                    "out of range",
                );
                None
            }
            other => {
                self.error(
                    entry.span(),
                    format!("{what} must be an integer, found {}", kind(other)),
                    "expected an integer",
                );
                None
            }
        }
    }

    /// A size: an integer number of bytes or a string with a K/M/G suffix.
    pub(super) fn size(&mut self, entry: &KdlEntry, what: &str, min: u64, max: u64) -> Option<u64> {
        let bytes = match entry.value() {
            KdlValue::Integer(_) => return self.integer(entry, what, min, max),
            KdlValue::String(s) => match parse_size(s) {
                Ok(n) => n,
                Err(e) => {
                    self.error(entry.span(), format!("invalid {what}: {e}"), "invalid size")
                        .help = Some(
                        "write bytes, or a number with K, M or G (1024-based), e.g. \"10M\""
                            .to_owned(),
                    );
                    return None;
                }
            },
            other => {
                self.error(
                    entry.span(),
                    format!("{what} must be a size, found {}", kind(other)),
                    "expected a size",
                )
                .help = Some("e.g. 10485760 or \"10M\"".to_owned());
                return None;
            }
        };
        if !(min..=max).contains(&bytes) {
            let range = if bytes < min {
                format!("at least {min}")
            } else {
                format!("at most {max}")
            };
            self.error(
                entry.span(),
                format!("{what} must be {range} bytes, found {bytes}"),
                "out of range",
            );
            return None;
        }
        Some(bytes)
    }

    /// A positive duration, written as a string (`"30s"`, `"5m"`).
    pub(super) fn duration(&mut self, entry: &KdlEntry, what: &str) -> Option<Duration> {
        let text = self.string(entry, what)?;
        match parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.error(
                    entry.span(),
                    format!("{what} must be greater than zero"),
                    "zero",
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error(
                    entry.span(),
                    format!("invalid {what}: {e}"),
                    "invalid duration",
                )
                .help = Some("e.g. \"30s\", \"5m\", \"1h 30m\"".to_owned());
                None
            }
        }
    }

    /// A name for a listener or set: non-empty, printable, no spaces.
    pub(super) fn name<'n>(&mut self, entry: &'n KdlEntry, what: &str) -> Option<&'n str> {
        let name = self.string(entry, what)?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_graphic()) {
            self.error(
                entry.span(),
                format!("{what} `{name}` must be non-empty printable ASCII without spaces"),
                "invalid name",
            );
            return None;
        }
        Some(name)
    }
}
