//! Walks the KDL document into a [`Config`], collecting every error.
//!
//! Two passes over the top level: the first reads the named sets (`networks`,
//! `domains`) so that rules may refer to sets written after them; the second reads
//! everything else. Each reader checks its node completely (type annotations,
//! arguments, properties, children) and carries on after an error, so one run
//! reports everything that is wrong.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};
use miette::{NamedSource, SourceSpan};

use super::checks::Content;
use super::reply::{MAX_REPLY_TEXT, is_reply_char};
use super::units::{parse_duration, parse_size};
use super::{
    AuthCheck, AuthMode, CertKey, ClientRef, Condition, ConditionConfig, Config, ConfigError,
    ConfigErrors, Delivery, HookConfig, Limits, Listener, ListenerTls, Origin, Pattern, Reply,
    RuleAction, RuleConfig, Server, Stage, route,
};
use crate::lookup::{DomainSet, NetworkSet};

/// Top-level nodes, for "did you mean".
const TOP_LEVEL: &[&str] = &[
    "server",
    "listen",
    "limits",
    "networks",
    "domains",
    "table",
    "stage",
    "include",
    "aliases",
    "virtual",
    "delivery",
    "credentials",
    "content-filter",
    "rate-limits",
    "users",
    "reload",
    "virtual-mailboxes",
    "dkim",
    "dkim-internal",
    "authentication",
];
const SERVER_KEYS: &[&str] = &[
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
];
const LIMIT_KEYS: &[&str] = &[
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
const RULES: &[&str] = &[
    "accept",
    "reject",
    "defer",
    "discard",
    "hold",
    "hook",
    "transport",
    "transport-table",
    "relay",
    "header-checks",
    "mime-header-checks",
    "nested-header-checks",
    "body-checks",
    "filter",
];
/// The verbs of the route stage (which decides transports, not replies).
const ROUTE_RULES: &[&str] = &["transport", "transport-table", "relay", "hook"];
const CONDITIONS: &[&str] = &[
    "client",
    "listener",
    "helo",
    "helo-matches",
    "tls",
    "authenticated",
    "auth-user",
    "sender",
    "sender-domain",
    "sender-matches",
    "sender-login",
    "rcpt",
    "rcpt-domain",
    "rcpt-matches",
    "size-over",
    "header-matches",
    "spf",
    "spf-helo",
    "dkim",
    "dmarc",
    "dmarc-policy",
    "arc",
    "iprev",
];
/// Every condition with `not-` in front.
const NEGATED_CONDITIONS: &[&str] = &[
    "not-client",
    "not-listener",
    "not-helo",
    "not-helo-matches",
    "not-tls",
    "not-authenticated",
    "not-auth-user",
    "not-sender",
    "not-sender-domain",
    "not-sender-matches",
    "not-sender-login",
    "not-rcpt",
    "not-rcpt-domain",
    "not-rcpt-matches",
    "not-size-over",
    "not-header-matches",
    "not-spf",
    "not-spf-helo",
    "not-dkim",
    "not-dmarc",
    "not-dmarc-policy",
    "not-arc",
    "not-iprev",
];

fn availability_help(test: &Condition) -> String {
    let stages: Vec<&str> = Stage::ALL
        .into_iter()
        .filter(|s| test.available_at(*s))
        .map(Stage::as_str)
        .collect();
    format!("`{}` can be used in: {}", test.name(), stages.join(", "))
}

/// Reads `text` (named `name` for display; `path` locates relative paths), and every
/// file it `include`s.
pub(super) fn parse(name: &str, path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let root = SourceFile::new(name, path, text);
    let mut p = Parser::new(root.clone());
    p.sources.add(path, text.as_bytes());
    let mut docs = Vec::new();
    p.load(root, &mut docs, &mut Vec::new());
    let config = if p.errors.is_empty() {
        p.document(&docs, path)
    } else {
        None
    };
    match config {
        Some(config) if p.errors.is_empty() => Ok(config),
        _ => {
            let mut errors = p.errors;
            if errors.is_empty() {
                // Every path that yields no config reports why; keep it that way.
                errors.push(ConfigError::without_source("invalid configuration"));
            }
            // in file order (the main file first, then includes as loaded), then by place
            let order: Vec<Arc<str>> = docs.iter().map(|d| d.file.name.clone()).collect();
            errors.sort_by_key(|e| {
                let file = e.location.as_ref().map(|l| &l.file);
                let rank = file
                    .and_then(|f| order.iter().position(|o| o == f))
                    .unwrap_or(0);
                (rank, e.span.map(|s| s.offset()))
            });
            Err(ConfigErrors {
                file: name.to_owned(),
                errors,
            })
        }
    }
}

/// One configuration file: the main one or an included one.
struct SourceFile {
    /// Where it is: relative paths inside it resolve against its directory.
    path: PathBuf,
    /// As shown in messages.
    name: Arc<str>,
    text: Arc<String>,
    source: NamedSource<Arc<String>>,
    /// Byte offset of the start of each line.
    line_starts: Vec<usize>,
}

impl SourceFile {
    fn new(name: &str, path: &Path, text: &str) -> Arc<SourceFile> {
        let text = Arc::new(text.to_owned());
        Arc::new(SourceFile {
            path: path.to_path_buf(),
            name: Arc::from(name),
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
            source: NamedSource::new(name, text.clone()),
            text,
        })
    }
}

/// A parsed file and where its `include` nodes point (node index → document index).
struct Loaded {
    file: Arc<SourceFile>,
    doc: KdlDocument,
    includes: Vec<(usize, usize)>,
}

/// Every top-level node in the order it applies: an included file's nodes stand
/// where its `include` does.
fn ordered(docs: &[Loaded]) -> Vec<(Arc<SourceFile>, &KdlNode)> {
    fn walk<'d>(docs: &'d [Loaded], at: usize, out: &mut Vec<(Arc<SourceFile>, &'d KdlNode)>) {
        let loaded = &docs[at];
        for (index, node) in loaded.doc.nodes().iter().enumerate() {
            match loaded.includes.iter().find(|(i, _)| *i == index) {
                Some((_, child)) => walk(docs, *child, out),
                None => out.push((loaded.file.clone(), node)),
            }
        }
    }
    let mut out = Vec::new();
    if !docs.is_empty() {
        walk(docs, 0, &mut out);
    }
    out
}

/// How deep includes may nest (a guard against runaway include chains).
const MAX_INCLUDE_DEPTH: usize = 16;

struct Parser {
    /// The file whose nodes are being read.
    cur: Arc<SourceFile>,
    errors: Vec<ConfigError>,
    /// `table` nodes read from a file: name → (resolved path, path as written), so
    /// that errors found later in a table's results can point into its file.
    table_files: BTreeMap<String, (PathBuf, String)>,
    /// Every file read so far, for the policy revision.
    sources: crate::config::Sources,
    /// Route rules' `dkim="DOMAIN"`, checked against the `dkim` nodes once all are read.
    dkim_refs: Vec<(String, SourceSpan, Arc<SourceFile>)>,
    /// Route rules' `arc="DOMAIN"`: the `dkim` node whose key seals.
    arc_refs: Vec<(String, SourceSpan, Arc<SourceFile>)>,
    /// Where rules read a check's result (`spf=`, `dmarc=`, `arc=`...): they need the
    /// `authentication` block.
    auth_refs: Vec<(SourceSpan, Arc<SourceFile>)>,
    /// Listener names used before every `listen` is read (`skip-listeners`).
    listener_refs: Vec<(String, SourceSpan, Arc<SourceFile>)>,
    /// SQL sources by URL and timeout: tables and users tables on the same database
    /// share one connection pool.
    sql_sources: BTreeMap<(String, std::time::Duration), crate::lookup::sql::SqlSource>,
}

/// A listener's TLS properties as written, settled by `Parser::settle_tls` once the
/// `server` block is known (it may come after the listener).
struct ListenTls {
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

/// What the first pass found: set names, with where they were defined.
#[path = "tables.rs"]
mod tables;

#[path = "checks_parse.rs"]
mod checks_parse;

#[path = "authentication.rs"]
mod authentication;
#[cfg(test)]
#[path = "authentication_tests.rs"]
mod authentication_tests;
#[path = "delivery.rs"]
mod delivery;
#[path = "dkim.rs"]
mod dkim;
#[path = "filter.rs"]
mod filter;
#[path = "rate.rs"]
mod rate;
#[path = "reload.rs"]
mod reload;
#[path = "users.rs"]
mod users;

#[derive(Default)]
struct Sets {
    /// `table` nodes (see `tables.rs`).
    tables: tables::Tables,
    networks: BTreeMap<String, (NetworkSet, Origin)>,
    domains: BTreeMap<String, (DomainSet, Origin)>,
    /// `credentials` nodes.
    credentials: delivery::Credentials,
    /// `content-filter` nodes.
    filters: filter::Filters,
    /// `users` nodes.
    users: users::UsersTables,
}

impl Parser {
    fn new(root: Arc<SourceFile>) -> Self {
        Self {
            sources: crate::config::Sources::new(&root.path),
            cur: root,
            errors: Vec::new(),
            table_files: BTreeMap::new(),
            sql_sources: BTreeMap::new(),
            dkim_refs: Vec::new(),
            arc_refs: Vec::new(),
            auth_refs: Vec::new(),
            listener_refs: Vec::new(),
        }
    }

    /// Parses `file` and, depth first, every file it includes: the documents come out
    /// in the order their nodes apply. `stack` holds the include chain, for cycles.
    fn load(&mut self, file: Arc<SourceFile>, docs: &mut Vec<Loaded>, stack: &mut Vec<PathBuf>) {
        self.cur = file.clone();
        let doc = match KdlDocument::parse_v2(&file.text) {
            Ok(doc) => doc,
            Err(e) => {
                for d in e.diagnostics {
                    let message = d.message.unwrap_or_else(|| "invalid KDL".to_owned());
                    let label = d.label.unwrap_or_else(|| "here".to_owned());
                    self.error(d.span, format!("syntax error: {message}"), label)
                        .help = d.help;
                }
                return;
            }
        };
        stack.push(file.path.clone());
        let mut children = Vec::new();
        for (index, node) in doc.nodes().iter().enumerate() {
            if node.name().value() != "include" {
                continue;
            }
            self.check_annotations(node);
            self.props(node, &[]);
            self.no_children(node);
            let Some(args) = self.args(node, 1, Some(1), "include \"file.kdl\"") else {
                continue;
            };
            let Some(name) = self.string(args[0], "include path") else {
                continue;
            };
            let path = resolve(&file.path, name);
            if stack.contains(&path) {
                self.error(
                    args[0].span(),
                    format!("`{name}` includes itself (an include cycle)"),
                    "include cycle",
                );
                continue;
            }
            if stack.len() >= MAX_INCLUDE_DEPTH {
                self.error(
                    args[0].span(),
                    format!("includes nest deeper than {MAX_INCLUDE_DEPTH}"),
                    "too deep",
                );
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    self.sources.add(&path, text.as_bytes());
                    children.push((index, SourceFile::new(name, &path, &text)));
                }
                Err(e) => {
                    self.error(
                        args[0].span(),
                        format!("cannot read `{name}`: {e}"),
                        "cannot read",
                    );
                }
            }
        }
        let me = docs.len();
        docs.push(Loaded {
            file,
            doc,
            includes: Vec::new(),
        });
        for (index, child) in children {
            let child_index = docs.len();
            let before = docs.len();
            self.load(child, docs, stack);
            if docs.len() > before {
                docs[me].includes.push((index, child_index));
            }
        }
        stack.pop();
    }

    // ---- reporting ------------------------------------------------------------

    fn origin(&self, offset: usize) -> Origin {
        let cur = &self.cur;
        let offset = offset.min(cur.text.len());
        let line = cur.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = cur.line_starts[line];
        let column = cur
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        Origin {
            file: cur.name.clone(),
            line: u32::try_from(line + 1).unwrap_or(u32::MAX),
            column: u32::try_from(column + 1).unwrap_or(u32::MAX),
        }
    }

    fn error(
        &mut self,
        span: SourceSpan,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> &mut ConfigError {
        let location = self.origin(span.offset());
        self.errors.push(ConfigError {
            message: message.into(),
            source_code: Some(self.cur.source.clone()),
            span: Some(span),
            location: Some(location),
            label: Some(label.into()),
            help: None,
        });
        self.errors.last_mut().expect("just pushed")
    }

    /// An error about a node as a whole, pointing at its name.
    fn node_error(
        &mut self,
        node: &KdlNode,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> &mut ConfigError {
        self.error(node.name().span(), message, label)
    }

    fn unknown_node(&mut self, node: &KdlNode, within: &str, known: &[&str]) {
        let name = node.name().value();
        let message = if within.is_empty() {
            format!("unknown node `{name}`")
        } else {
            format!("unknown node `{name}` in `{within}`")
        };
        let help = suggest(name, known.iter().copied())
            .unwrap_or_else(|| format!("expected one of: {}", known.join(", ")));
        self.node_error(node, message, "unknown node").help = Some(help);
    }

    /// The children of a settings block (`server`, `limits`, `delivery`,
    /// `rate-limits`): the block itself takes no arguments or properties; an unknown
    /// child and a second child of the same name are reported and left out. `None`
    /// when the block has no `{ }`.
    fn settings_block<'n>(
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

    fn duplicate(&mut self, span: SourceSpan, what: String, first: &Origin) {
        self.error(span, format!("duplicate {what}"), "defined again here")
            .help = Some(format!("first defined at {first}"));
    }

    // ---- generic node checks --------------------------------------------------

    /// Type annotations have no meaning in this grammar; refuse them rather than
    /// silently ignore them.
    fn check_annotations(&mut self, node: &KdlNode) {
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
    fn args<'n>(
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
    fn props<'n>(&mut self, node: &'n KdlNode, allowed: &[&str]) -> Vec<(&'n str, &'n KdlEntry)> {
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

    fn no_children(&mut self, node: &KdlNode) {
        if node.children().is_some() {
            let name = node.name().value();
            self.node_error(
                node,
                format!("`{name}` takes no child block"),
                "unexpected `{ ... }`",
            );
        }
    }

    fn children<'n>(&mut self, node: &'n KdlNode, usage: &str) -> Option<&'n KdlDocument> {
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
    fn setting<'n>(&mut self, node: &'n KdlNode, usage: &str) -> Option<&'n KdlEntry> {
        self.check_annotations(node);
        self.props(node, &[]);
        self.no_children(node);
        self.args(node, 1, Some(1), usage).map(|args| args[0])
    }

    // ---- values ---------------------------------------------------------------

    fn string<'n>(&mut self, entry: &'n KdlEntry, what: &str) -> Option<&'n str> {
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

    /// An integer in `min..=max`.
    fn integer(&mut self, entry: &KdlEntry, what: &str, min: u64, max: u64) -> Option<u64> {
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
    fn size(&mut self, entry: &KdlEntry, what: &str, min: u64, max: u64) -> Option<u64> {
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
    fn duration(&mut self, entry: &KdlEntry, what: &str) -> Option<Duration> {
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
    fn name<'n>(&mut self, entry: &'n KdlEntry, what: &str) -> Option<&'n str> {
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

    // ---- the document ---------------------------------------------------------

    fn document(&mut self, docs: &[Loaded], path: &Path) -> Option<Config> {
        let nodes = ordered(docs);
        let sets = self.sets(&nodes);

        let mut server: Option<Server> = None;
        let mut server_at: Option<Origin> = None;
        let mut limits: Option<(Limits, Origin)> = None;
        let mut rate_limits: Option<(crate::config::RateLimits, Origin)> = None;
        let mut reload: Option<(crate::config::ReloadSettings, Origin)> = None;
        let mut virtual_mailboxes: Option<crate::config::VirtualMailboxes> = None;
        let mut listeners: Vec<(Listener, Origin)> = Vec::new();
        let mut listen_tls: Vec<ListenTls> = Vec::new();
        let mut saw_listen = false;
        let mut stages: [Option<(Vec<RuleConfig>, Origin)>; Stage::COUNT] = Default::default();
        let mut aliases: Option<(Arc<crate::lookup::Table>, Origin)> = None;
        let mut virtual_aliases: Option<(Arc<crate::lookup::Table>, Origin)> = None;
        let mut delivery: Option<(Delivery, Origin)> = None;
        let mut dkim: Vec<(crate::dkim::Signer, Origin)> = Vec::new();
        let mut authentication: Option<crate::config::Authentication> = None;
        let mut dkim_internal: Option<Vec<ClientRef>> = None;

        for (file, node) in &nodes {
            self.cur = file.clone();
            let here = self.origin(node.name().span().offset());
            match node.name().value() {
                "networks" | "domains" | "table" | "credentials" | "content-filter" | "users" => {} // read by `sets`
                "delivery" => {
                    if let Some((_, first)) = &delivery {
                        let first = first.clone();
                        self.duplicate(node.name().span(), "`delivery` block".into(), &first);
                        continue;
                    }
                    let d = self.delivery(node, &sets.tables);
                    delivery = Some((d, here));
                }
                "aliases" | "virtual" => {
                    let is_aliases = node.name().value() == "aliases";
                    let slot = if is_aliases {
                        &mut aliases
                    } else {
                        &mut virtual_aliases
                    };
                    if let Some((_, first)) = slot {
                        let first = first.clone();
                        self.duplicate(
                            node.name().span(),
                            format!("`{}` file", node.name().value()),
                            &first,
                        );
                        continue;
                    }
                    let table = self.alias_file(node, &sets.tables);
                    let slot = if is_aliases {
                        &mut aliases
                    } else {
                        &mut virtual_aliases
                    };
                    if let Some(table) = table {
                        *slot = Some((table, here));
                    }
                }
                "include" => {} // read by `load`
                "dkim" => self.dkim(node, &mut dkim),
                "dkim-internal" => self.dkim_internal(node, &sets, &mut dkim_internal),
                "authentication" => {
                    if let Some(first) = &authentication {
                        let first = first.origin.clone();
                        self.duplicate(node.name().span(), "`authentication` block".into(), &first);
                        continue;
                    }
                    authentication = Some(self.authentication(node, &sets));
                }
                "server" => {
                    if let Some(first) = &server_at {
                        let first = first.clone();
                        self.duplicate(node.name().span(), "`server` block".into(), &first);
                        continue;
                    }
                    server_at = Some(here);
                    server = self.server(node, path, &sets.filters);
                }
                "rate-limits" => {
                    if let Some((_, first)) = &rate_limits {
                        let first = first.clone();
                        self.duplicate(node.name().span(), "`rate-limits` block".into(), &first);
                        continue;
                    }
                    let r = self.rate_limits(node, &sets);
                    rate_limits = Some((r, here));
                }
                "virtual-mailboxes" => {
                    if let Some(first) = &virtual_mailboxes {
                        let first = first.origin.clone();
                        self.duplicate(node.name().span(), "`virtual-mailboxes`".into(), &first);
                        continue;
                    }
                    virtual_mailboxes = self.virtual_mailboxes(node, &sets, here);
                }
                "reload" => {
                    if let Some((_, first)) = &reload {
                        let first = first.clone();
                        self.duplicate(node.name().span(), "`reload` block".into(), &first);
                        continue;
                    }
                    let r = self.reload_settings(node);
                    reload = Some((r, here));
                }
                "limits" => {
                    if let Some((_, first)) = &limits {
                        let first = first.clone();
                        self.duplicate(node.name().span(), "`limits` block".into(), &first);
                        continue;
                    }
                    let l = self.limits(node);
                    limits = Some((l, here));
                }
                "listen" => {
                    saw_listen = true;
                    if let Some((l, tls)) = self.listen(node, &listeners, &sets) {
                        listeners.push((l, here));
                        listen_tls.push(tls);
                    }
                }
                "stage" => self.stage(node, &sets, &mut stages),
                _ => {
                    self.check_annotations(node);
                    self.unknown_node(node, "", TOP_LEVEL);
                }
            }
        }

        for (domain, at, file) in std::mem::take(&mut self.dkim_refs) {
            if !dkim.iter().any(|(s, _)| s.domain == domain && !s.always) {
                self.cur = file;
                self.error(
                    at,
                    format!("no `dkim` node for {domain}"),
                    "undefined signer",
                )
                .help = Some(format!(
                    "define it: dkim \"{domain}\" selector=\"SELECTOR\" key=\"FILE.pem\""
                ));
            }
        }
        for (domain, at, file) in std::mem::take(&mut self.arc_refs) {
            if !dkim.iter().any(|(s, _)| s.domain == domain) {
                self.cur = file;
                self.error(
                    at,
                    format!("no `dkim` node for {domain}"),
                    "undefined sealer",
                )
                .help = Some(format!(
                    "ARC seals with a dkim node's key: dkim \"{domain}\" selector=\"SELECTOR\" key=\"FILE.pem\""
                ));
            }
        }
        if authentication.is_none() {
            for (at, file) in std::mem::take(&mut self.auth_refs) {
                self.cur = file;
                self.error(
                    at,
                    "this needs the results of the `authentication` checks, which are off",
                    "no authentication block",
                )
                .help = Some(
                    "add `authentication { }` (every check) to check incoming mail".to_owned(),
                );
            }
        }
        for (name, at, file) in std::mem::take(&mut self.listener_refs) {
            if !listeners.iter().any(|(l, _)| l.name == name) {
                self.cur = file;
                let help = suggest(&name, listeners.iter().map(|(l, _)| l.name.as_str()));
                self.error(
                    at,
                    format!("no listener is named `{name}`"),
                    "unknown listener",
                )
                .help = help;
            }
        }
        let start = SourceSpan::from(0..0);
        self.cur = docs[0].file.clone();
        if server_at.is_none() {
            self.error(start, "missing `server` block", "expected here")
                .help = Some(
                "add: server { hostname \"mx.example.test\"; spool \"var/spool\" }".to_owned(),
            );
        }
        if !saw_listen {
            self.error(start, "at least one `listen` is required", "expected here")
                .help = Some("add: listen \"mx\" address=\"0.0.0.0:25\"".to_owned());
        }

        for ((l, _), how) in listeners.iter_mut().zip(listen_tls) {
            self.settle_tls(l, how, server.as_ref(), &sets.users);
        }
        let server = server?;
        let defaults = Delivery::defaults_for(&server.spool);
        let delivery = match delivery {
            // `local-base` not written: the default is next to the spool
            Some((d, _)) if d.local_base.as_os_str().is_empty() => Delivery {
                local_base: defaults.local_base,
                ..d
            },
            Some((d, _)) => d,
            None => defaults,
        };
        Some(Config {
            path: path.to_path_buf(),
            server,
            listeners: listeners.into_iter().map(|(l, _)| l).collect(),
            limits: limits.map(|l| l.0).unwrap_or_default(),
            rate_limits: rate_limits.map(|r| r.0).unwrap_or_default(),
            reload: reload.map(|r| r.0).unwrap_or_default(),
            virtual_mailboxes,
            networks: sets
                .networks
                .into_iter()
                .map(|(k, (v, _))| (k, v))
                .collect(),
            domains: sets.domains.into_iter().map(|(k, (v, _))| (k, v)).collect(),
            tables: sets
                .tables
                .into_iter()
                .filter_map(|(k, (v, _))| Some((k, v?)))
                .collect(),
            stages: stages.map(|s| s.map(|(rules, _)| rules).unwrap_or_default()),
            aliases: aliases.map(|(t, _)| t),
            virtual_aliases: virtual_aliases.map(|(t, _)| t),
            delivery,
            credentials: sets
                .credentials
                .into_iter()
                .filter_map(|(k, (v, _))| Some((k, v?)))
                .collect(),
            content_filters: sets
                .filters
                .into_iter()
                .filter_map(|(k, (v, _))| Some((k, v?)))
                .collect(),
            users: sets
                .users
                .into_iter()
                .filter_map(|(k, (v, _))| Some((k, v?)))
                .collect(),
            dkim: dkim.into_iter().map(|(s, _)| s).collect(),
            dkim_internal,
            authentication,
            sources: std::mem::take(&mut self.sources),
        })
    }

    // ---- named sets -----------------------------------------------------------

    fn sets<'n>(&mut self, nodes: &[(Arc<SourceFile>, &'n KdlNode)]) -> Sets {
        let mut sets = Sets::default();
        // `domains NAME table="T"`: linked once every table is read
        let mut domain_tables: Vec<(String, Arc<SourceFile>, &'n KdlEntry)> = Vec::new();
        for (file, node) in nodes {
            self.cur = file.clone();
            let kind = node.name().value();
            if kind == "table" {
                self.table(node, &mut sets.tables);
                continue;
            }
            if kind == "credentials" {
                self.credentials(node, &mut sets.credentials);
                continue;
            }
            if kind == "content-filter" {
                self.content_filter(node, &mut sets.filters);
                continue;
            }
            if kind == "users" {
                self.users(node, &mut sets.users);
                continue;
            }
            if kind != "networks" && kind != "domains" {
                continue;
            }
            self.check_annotations(node);
            let props = self.props(node, if kind == "domains" { &["table"] } else { &[] });
            self.no_children(node);
            let usage = if kind == "networks" {
                "networks NAME \"CIDR-or-IP\"..."
            } else {
                "domains NAME \"example.test\" \".example.test\"... [table=\"TABLE\"]"
            };
            let Some(args) = self.args(node, 1, None, usage) else {
                continue;
            };
            let set_kind = if kind == "networks" {
                "network set"
            } else {
                "domain set"
            };
            let name = self.name(args[0], &format!("{set_kind} name"));
            let here = self.origin(node.name().span().offset());
            if kind == "networks" {
                let nets: Vec<IpNet> = args[1..].iter().filter_map(|e| self.network(e)).collect();
                if let Some(name) = name {
                    if name.parse::<IpNet>().is_ok() || name.parse::<IpAddr>().is_ok() {
                        self.error(
                            args[0].span(),
                            format!("network set name `{name}` looks like an address"),
                            "ambiguous name",
                        )
                        .help = Some("`client=` would not know whether you mean the set or the address; pick a word".to_owned());
                    } else if let Some((_, first)) = sets.networks.get(name) {
                        let first = first.clone();
                        self.duplicate(args[0].span(), format!("network set `{name}`"), &first);
                    } else {
                        sets.networks
                            .insert(name.to_owned(), (NetworkSet::new(nets), here));
                    }
                }
            } else {
                let entries: Vec<String> = args[1..]
                    .iter()
                    .filter_map(|e| self.domain_entry(e))
                    .collect();
                if let Some(name) = name {
                    if let Some((_, first)) = sets.domains.get(name) {
                        let first = first.clone();
                        self.duplicate(args[0].span(), format!("domain set `{name}`"), &first);
                    } else {
                        sets.domains
                            .insert(name.to_owned(), (DomainSet::new(entries), here));
                        if let Some((_, entry)) = props.iter().find(|(k, _)| *k == "table") {
                            domain_tables.push((name.to_owned(), file.clone(), *entry));
                        }
                    }
                }
            }
        }
        for (set, file, entry) in domain_tables {
            self.cur = file;
            // None: undefined (reported); Some(None): its errors are reported
            if let Some(Some(t)) = self.table_ref(entry, &sets.tables)
                && let Some((domains, _)) = sets.domains.get_mut(&set)
            {
                *domains = domains.clone().with_table(t);
            }
        }
        sets
    }

    /// A CIDR (`10.0.0.0/8`) or a bare address (a host network).
    fn network(&mut self, entry: &KdlEntry) -> Option<IpNet> {
        let text = self.string(entry, "a network")?;
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Some(IpNet::from(ip));
        }
        match text.parse::<IpNet>() {
            Ok(net) if net.trunc() != net => {
                self.error(
                    entry.span(),
                    format!("network `{text}` has host bits set"),
                    "host bits set",
                )
                .help = Some(format!("did you mean `{}`?", net.trunc()));
                None
            }
            Ok(net) => Some(net),
            Err(_) => {
                self.error(
                    entry.span(),
                    format!("`{text}` is not a CIDR network or IP address"),
                    "invalid network",
                )
                .help =
                    Some("e.g. \"192.0.2.0/24\", \"2001:db8::/32\" or \"192.0.2.7\"".to_owned());
                None
            }
        }
    }

    /// A `domains` entry: a domain name, or `.domain` for its subdomains.
    fn domain_entry(&mut self, entry: &KdlEntry) -> Option<String> {
        let text = self.string(entry, "a domain")?;
        let (dot, name) = match text.strip_prefix('.') {
            Some(rest) => (".", rest),
            None => ("", text),
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if !is_hostname(name) {
            self.error(
                entry.span(),
                format!("`{text}` is not a domain name"),
                "invalid domain",
            )
            .help = Some(
                "write `example.test` for the name itself, `.example.test` for its subdomains (ASCII; use xn-- for IDN)"
                    .to_owned(),
            );
            return None;
        }
        Some(format!("{dot}{}", name.to_ascii_lowercase()))
    }

    // ---- server ---------------------------------------------------------------

    fn server(&mut self, node: &KdlNode, path: &Path, filters: &filter::Filters) -> Option<Server> {
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
        Some(Server {
            origin: origin.unwrap_or_else(|| hostname.to_ascii_lowercase()),
            hostname,
            control_socket: control_socket.unwrap_or_else(|| spool.join("control.sock")),
            spool,
            banner: banner.unwrap_or_else(|| "ESMTP".to_owned()),
            shutdown_timeout: shutdown_timeout.unwrap_or(Duration::from_secs(30)),
            content_filter,
            tls,
            metrics,
        })
    }

    // ---- listen ---------------------------------------------------------------

    fn listen(
        &mut self,
        node: &KdlNode,
        existing: &[(Listener, Origin)],
        sets: &Sets,
    ) -> Option<(Listener, ListenTls)> {
        let filters = &sets.filters;
        const USAGE: &str = "listen NAME address=\"IP:PORT\" [starttls=\"offered|required|off\"] [implicit-tls=#true] [auth=\"offered|required\"] [content-filter=\"NAME\"] [filtered=#true]";
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
                    if let Some(name) = self.string(entry, "proxies") {
                        if sets.networks.contains_key(name) {
                            proxies = Some((name.to_owned(), *entry));
                        } else {
                            let help = suggest(name, sets.networks.keys().map(String::as_str))
                                .unwrap_or_else(|| {
                                    format!("define it: networks \"{name}\" \"10.0.0.5/32\"")
                                });
                            self.error(
                                entry.span(),
                                format!("no networks set named `{name}`"),
                                "undefined",
                            )
                            .help = Some(help);
                        }
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
        };
        Some((listener, tls))
    }

    /// Settles a listener's TLS once the `server` block (and its certificate) is known:
    /// STARTTLS is offered by default when there is a certificate; asking for TLS
    /// without one is an error at the listener.
    fn settle_tls(
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

    /// A file path property, resolved against the directory of the file it is in.
    fn path(&mut self, entry: &KdlEntry, what: &str) -> Option<(PathBuf, SourceSpan)> {
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
    fn cert_key(
        &mut self,
        certificate: Option<(PathBuf, SourceSpan)>,
        key: Option<(PathBuf, SourceSpan)>,
        names: (&str, &str),
    ) -> Option<CertKey> {
        match (certificate, key) {
            (None, None) => None,
            (Some((certificate, at)), Some((key, _))) => {
                let pair = CertKey { certificate, key };
                match crate::smtp::tls::server_config(&pair) {
                    Ok(_) => {
                        self.sources.add_file(&pair.certificate);
                        self.sources.add_file(&pair.key);
                        Some(pair)
                    }
                    Err(e) => {
                        self.error(at, e, "cannot use this certificate");
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

    // ---- limits ---------------------------------------------------------------

    fn limits(&mut self, node: &KdlNode) -> Limits {
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
            None => {
                limits.data_memory = limits
                    .data_memory
                    .max(limits.message_size.saturating_mul(4))
            }
        }
        limits
    }

    // ---- stages ---------------------------------------------------------------

    fn stage(
        &mut self,
        node: &KdlNode,
        sets: &Sets,
        stages: &mut [Option<(Vec<RuleConfig>, Origin)>; Stage::COUNT],
    ) {
        const USAGE: &str = "stage \"rcpt\" { accept ...; reject ... }";
        self.check_annotations(node);
        self.props(node, &[]);
        let args = self.args(node, 1, Some(1), USAGE);
        let children = self.children(node, USAGE);
        let Some(args) = args else { return };
        let Some(name) = self.string(args[0], "stage name") else {
            return;
        };
        let stage = match Stage::from_name(name) {
            Some(stage) => stage,
            None => {
                let known = Stage::ALL.map(Stage::as_str);
                let help = suggest(name, known.iter().copied())
                    .unwrap_or_else(|| format!("stages are: {}", known.join(", ")));
                self.error(
                    args[0].span(),
                    format!("unknown stage `{name}`"),
                    "unknown stage",
                )
                .help = Some(help);
                return;
            }
        };
        let here = self.origin(node.name().span().offset());
        let Some(children) = children else { return };
        let rules: Vec<RuleConfig> = children
            .nodes()
            .iter()
            .filter_map(|rule| self.rule(rule, sets, stage))
            .collect();
        // Several blocks of one stage (say, one in an included default policy) run
        // in the order they are written.
        match &mut stages[stage.index()] {
            Some((existing, _)) => existing.extend(rules),
            slot => *slot = Some((rules, here)),
        }
    }

    fn rule(&mut self, node: &KdlNode, sets: &Sets, stage: Stage) -> Option<RuleConfig> {
        self.check_annotations(node);
        let origin = self.origin(node.name().span().offset());
        let verb = node.name().value();
        if !RULES.contains(&verb) {
            self.unknown_node(node, "stage", RULES);
            return None;
        }
        let checks = match verb {
            "header-checks" => Some(Content::Header),
            "mime-header-checks" => Some(Content::MimeHeader),
            "nested-header-checks" => Some(Content::NestedHeader),
            "body-checks" => Some(Content::Body),
            _ => None,
        };
        if checks.is_none() {
            self.no_children(node);
        }
        if let Some(content) = checks
            && stage != Stage::Data
        {
            self.error(
                node.name().span(),
                format!("`{verb}` has no meaning in the {stage} stage"),
                "not here",
            )
            .help = Some(format!(
                "{} inspect the message: put them in `stage \"data\"`",
                content.rule_name()
            ));
            return None;
        }
        if (stage == Stage::Route) != ROUTE_RULES.contains(&verb) && verb != "hook" {
            let help = if stage == Stage::Route {
                "the route stage decides transports: transport, transport-table, relay, hook (refuse with `transport \"*\" \"error:5.1.1 text\"`)"
            } else {
                "transport, transport-table and relay belong in `stage \"route\"`"
            };
            self.error(
                node.name().span(),
                format!("`{verb}` has no meaning in the {stage} stage"),
                "not here",
            )
            .help = Some(help.to_owned());
            return None;
        }
        let action = match verb {
            "transport" => self
                .args(
                    node,
                    2,
                    Some(2),
                    "transport \"PATTERN\" \"transport:nexthop\" [conditions]",
                )
                .and_then(|args| {
                    let pattern = self.route_value(args[0], "pattern", route::RoutePattern::parse);
                    let transport = self.route_value(args[1], "transport", route::Transport::parse);
                    Some(RuleAction::Transport {
                        pattern: pattern?,
                        transport: transport?,
                    })
                }),
            "relay" => self
                .args(node, 1, Some(1), "relay \"smtp:[host]:port\" [conditions]")
                .and_then(|args| self.route_value(args[0], "transport", route::Transport::parse))
                .map(RuleAction::Relay),
            "transport-table" => self
                .args(node, 1, Some(1), "transport-table \"NAME\" [conditions]")
                .and_then(|args| {
                    let name = self.string(args[0], "table name")?;
                    self.known_table(name, args[0], sets, "transport")
                        .then(|| RuleAction::TransportTable(name.to_owned()))
                }),
            "accept" => self
                .args(node, 0, Some(0), "accept [conditions]")
                .map(|_| RuleAction::Accept),
            "reject" => self
                .args(
                    node,
                    3,
                    Some(3),
                    "reject CODE \"X.Y.Z\" \"text\" [conditions]",
                )
                .and_then(|args| self.reply(&args))
                .map(RuleAction::Reject),
            "defer" => self
                .args(
                    node,
                    0,
                    Some(3),
                    "defer [CODE \"X.Y.Z\" \"text\"] [conditions]",
                )
                .and_then(|args| match args.len() {
                    0 => Some(Reply::new(451, [4, 7, 1], "Try again later")),
                    3 => {
                        let reply = self.reply(&args)?;
                        if !reply.is_temporary() {
                            self.error(args[0].span(), "`defer` needs a 4xx code", "not 4xx")
                                .help = Some("use `reject` for a permanent refusal".to_owned());
                            return None;
                        }
                        Some(reply)
                    }
                    _ => {
                        self.error(
                            node.name().span(),
                            "`defer` takes no arguments or all three: CODE \"X.Y.Z\" \"text\"",
                            "wrong arguments",
                        );
                        None
                    }
                })
                .map(RuleAction::Defer),
            "discard" | "hold" => {
                let usage = if verb == "discard" {
                    "discard [conditions]"
                } else {
                    "hold [conditions]"
                };
                let args = self.args(node, 0, Some(0), usage);
                if stage == Stage::Route {
                    self.error(
                        node.name().span(),
                        format!("`{verb}` has no meaning in the route stage"),
                        "not here",
                    );
                    return None;
                }
                args.map(|_| {
                    if verb == "discard" {
                        RuleAction::Discard
                    } else {
                        RuleAction::Hold
                    }
                })
            }
            "filter" => {
                let args = self.args(node, 1, Some(1), "filter \"NAME\" [conditions]");
                if stage != Stage::Data {
                    self.error(
                        node.name().span(),
                        format!("`filter` has no meaning in the {stage} stage"),
                        "not here",
                    )
                    .help = Some(
                        "a content filter is chosen for the whole message, in `stage \"data\"`"
                            .to_owned(),
                    );
                    return None;
                }
                args.and_then(|args| self.filter_ref(args[0], &sets.filters, "filter name"))
                    .map(RuleAction::Filter)
            }
            "hook" => self
                .args(
                    node,
                    1,
                    Some(1),
                    "hook \"file.rhai\" [function=\"name\"] [conditions]",
                )
                .and_then(|args| {
                    let file = self.string(args[0], "hook file")?;
                    Some(RuleAction::Hook(HookConfig {
                        path: resolve(&self.cur.path, file),
                        display: file.to_owned(),
                        function: None,
                    }))
                }),
            "header-checks" | "mime-header-checks" | "nested-header-checks" | "body-checks" => {
                checks
                    .and_then(|content| self.checks_rule(node, sets, content))
                    .map(RuleAction::Checks)
            }
            _ => unreachable!("checked against RULES"),
        };
        let mut allowed: Vec<&str> = CONDITIONS.to_vec();
        allowed.extend(NEGATED_CONDITIONS.iter());
        allowed.push("mode");
        if verb == "hook" {
            allowed.push("function");
        }
        if checks.is_some() {
            allowed.extend(["file", "table", "size-limit"]);
        }
        if stage == Stage::Route {
            allowed.extend(["auth", "fallback", "dkim", "dkim-sign", "arc-seal"]);
        }
        let mut route_options = route::RouteOptions::default();
        let mut warn = false;
        let mut function = None;
        let mut conditions = Vec::new();
        let mut ok = true;
        for (key, entry) in self.props(node, &allowed) {
            match key {
                "mode" => match self.string(entry, "`mode`") {
                    Some("warn") => warn = true,
                    Some("enforce") => warn = false,
                    Some(other) => {
                        self.error(
                            entry.span(),
                            format!("unknown mode `{other}`"),
                            "unknown mode",
                        )
                        .help = Some(
                            "mode is \"warn\" (log only) or \"enforce\" (the default)".to_owned(),
                        );
                        ok = false;
                    }
                    None => ok = false,
                },
                "function" => function = self.string(entry, "`function`").map(str::to_owned),
                // read by `checks_rule`
                "file" | "table" | "size-limit" if checks.is_some() => {}
                "auth" => match self.string(entry, "`auth`") {
                    Some(name) if sets.credentials.contains_key(name) => {
                        route_options.auth = Some(name.to_owned());
                    }
                    Some(name) => {
                        let help = suggest(name, sets.credentials.keys().map(String::as_str))
                            .unwrap_or_else(|| {
                                "define it with `credentials NAME file=\"sasl_passwd\"`".to_owned()
                            });
                        self.error(
                            entry.span(),
                            format!("undefined credentials `{name}`"),
                            "undefined credentials",
                        )
                        .help = Some(help);
                        ok = false;
                    }
                    None => ok = false,
                },
                "dkim" if stage == Stage::Route => match self.string(entry, "`dkim`") {
                    Some(domain) => {
                        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
                        self.dkim_refs
                            .push((domain.clone(), entry.span(), self.cur.clone()));
                        route_options.dkim = Some(domain);
                    }
                    None => ok = false,
                },
                "dkim-sign" => match self.route_value(entry, "dkim-sign", route::DkimSign::parse) {
                    Some(sign) => route_options.dkim_sign = Some(sign),
                    None => ok = false,
                },
                "arc-seal" => match self.string(entry, "`arc-seal`") {
                    Some(domain) => {
                        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
                        self.arc_refs
                            .push((domain.clone(), entry.span(), self.cur.clone()));
                        self.auth_refs.push((entry.span(), self.cur.clone()));
                        route_options.arc_seal = Some(domain);
                    }
                    None => ok = false,
                },
                "fallback" => match self.route_value(entry, "fallback", route::parse_fallbacks) {
                    Some(chain) => route_options.fallback = chain,
                    None => ok = false,
                },
                // in the route stage, `tls="policy"` is the route's TLS policy;
                // `tls=#true` stays the condition
                "tls" if stage == Stage::Route && entry.value().is_string() => {
                    match self.route_value(entry, "TLS policy", route::TlsPolicy::parse) {
                        Some(t) => route_options.tls = Some(t),
                        None => ok = false,
                    }
                }
                _ => {
                    let (negate, name) = match key.strip_prefix("not-") {
                        Some(name) => (true, name),
                        None => (false, key),
                    };
                    match self.condition(name, entry, sets) {
                        Some(test) if !test.available_at(stage) => {
                            self.error(
                                entry.span(),
                                format!("`{name}` does not exist at the {stage} stage"),
                                "not available here",
                            )
                            .help = Some(availability_help(&test));
                            ok = false;
                        }
                        Some(test) => conditions.push(ConditionConfig { negate, test }),
                        None => ok = false,
                    }
                }
            }
        }
        let mut action = action?;
        if let RuleAction::Hook(hook) = &mut action {
            hook.function = function;
        }
        ok.then_some(RuleConfig {
            action,
            conditions,
            warn,
            origin,
            route: route_options,
        })
    }

    /// A string argument parsed by `parse`, its error reported at the argument.
    fn route_value<T>(
        &mut self,
        entry: &KdlEntry,
        what: &str,
        parse: fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.string(entry, what)?;
        match parse(text) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(entry.span(), e, format!("invalid {what}"));
                None
            }
        }
    }

    /// `CODE "X.Y.Z" "text"`, checked.
    fn reply(&mut self, args: &[&KdlEntry]) -> Option<Reply> {
        let code = self.integer(args[0], "reply code", 400, 599);
        let enhanced = self
            .string(args[1], "enhanced status code")
            .and_then(|text| {
                let parsed = Reply::parse_enhanced(text);
                if parsed.is_none() {
                    self.error(
                        args[1].span(),
                        format!("`{text}` is not an enhanced status code"),
                        "invalid enhanced code",
                    )
                    .help = Some("class.subject.detail, e.g. \"5.7.1\" (RFC 3463)".to_owned());
                }
                parsed
            });
        let text = self.string(args[2], "reply text").and_then(|text| {
            if text.chars().all(is_reply_char) && text.len() <= MAX_REPLY_TEXT {
                Some(text)
            } else {
                self.error(
                    args[2].span(),
                    format!("reply text must be printable ASCII of at most {MAX_REPLY_TEXT} bytes (no CR, LF or other control characters)"),
                    "invalid reply text",
                );
                None
            }
        });
        let (code, enhanced) = (code?, enhanced?);
        let code = u16::try_from(code).ok()?;
        if let Err(e) = Reply::check_codes(code, enhanced) {
            self.error(args[1].span(), e, "does not match the reply code");
            return None;
        }
        Some(Reply::new(code, enhanced, text?))
    }

    fn condition(&mut self, key: &str, entry: &KdlEntry, sets: &Sets) -> Option<Condition> {
        match key {
            "tls" | "authenticated" => {
                let Some(b) = entry.value().as_bool() else {
                    self.error(
                        entry.span(),
                        format!(
                            "`{key}` must be #true or #false, not {}",
                            kind(entry.value())
                        ),
                        "expected a boolean",
                    );
                    return None;
                };
                return Some(if key == "tls" {
                    Condition::Tls(b)
                } else {
                    Condition::Authenticated(b)
                });
            }
            "size-over" => {
                return self
                    .size(entry, "`size-over`", 0, u64::MAX)
                    .map(Condition::SizeOver);
            }
            _ => {}
        }
        let value = self.string(entry, &format!("`{key}`"))?;
        if let Some(check) = AuthCheck::ALL.into_iter().find(|c| c.name() == key) {
            let results = self.one_or_more(value, entry, key)?;
            self.auth_refs.push((entry.span(), self.cur.clone()));
            return Some(Condition::Auth(check, results));
        }
        if key == "dmarc-policy" {
            let policies = self.one_or_more(value, entry, key)?;
            self.auth_refs.push((entry.span(), self.cur.clone()));
            return Some(Condition::DmarcPolicy(policies));
        }
        match key {
            "listener" => Some(Condition::Listener(value.to_owned())),
            "helo" => Some(Condition::Helo(value.to_ascii_lowercase())),
            "auth-user" => Some(Condition::AuthUser(value.to_owned())),
            "sender" => Some(Condition::Sender(value.to_ascii_lowercase())),
            "rcpt" => Some(Condition::Rcpt(value.to_ascii_lowercase())),
            "helo-matches" | "sender-matches" | "rcpt-matches" | "header-matches" => {
                let pattern = match regex::RegexBuilder::new(value)
                    .case_insensitive(true)
                    .size_limit(1 << 20)
                    .build()
                {
                    Ok(re) => Pattern(re),
                    Err(e) => {
                        self.error(
                            entry.span(),
                            format!("invalid regular expression: {e}"),
                            "invalid regex",
                        );
                        return None;
                    }
                };
                Some(match key {
                    "helo-matches" => Condition::HeloMatches(pattern),
                    "sender-matches" => Condition::SenderMatches(pattern),
                    "rcpt-matches" => Condition::RcptMatches(pattern),
                    _ => Condition::HeaderMatches(pattern),
                })
            }
            "client" => self
                .client_condition(value, entry, sets)
                .map(Condition::Client),
            "sender-login" => self
                .known_table(value, entry, sets, "sender_login")
                .then(|| Condition::SenderLogin(value.to_owned())),
            "rcpt-domain" | "sender-domain" => {
                if sets.domains.contains_key(value) {
                    return Some(if key == "rcpt-domain" {
                        Condition::RcptDomain(value.to_owned())
                    } else {
                        Condition::SenderDomain(value.to_owned())
                    });
                }
                let help =
                    suggest(value, sets.domains.keys().map(String::as_str)).unwrap_or_else(|| {
                        "define it with `domains NAME \"example.test\"...`".to_owned()
                    });
                self.error(
                    entry.span(),
                    format!("undefined domain set `{value}`"),
                    "undefined domain set",
                )
                .help = Some(help);
                None
            }
            _ => unreachable!("checked against CONDITIONS"),
        }
    }

    /// Whether `name` is a defined `table`; if not, an error at `entry` (with a
    /// suggestion, or how to define one from `example_file`).
    fn known_table(
        &mut self,
        name: &str,
        entry: &KdlEntry,
        sets: &Sets,
        example_file: &str,
    ) -> bool {
        if sets.tables.contains_key(name) {
            return true;
        }
        self.undefined_table(
            entry,
            name,
            &sets.tables,
            &format!("table NAME file=\"{example_file}\""),
        );
        false
    }

    /// `"fail"`, `"fail softfail"` or `"fail,softfail"`: the values an auth condition
    /// accepts, each checked.
    fn one_or_more<T: std::str::FromStr<Err = String>>(
        &mut self,
        value: &str,
        entry: &KdlEntry,
        key: &str,
    ) -> Option<Vec<T>> {
        let mut out = Vec::new();
        for word in value.split([' ', ',']).filter(|w| !w.is_empty()) {
            match word.parse() {
                Ok(v) => out.push(v),
                Err(e) => {
                    self.error(entry.span(), format!("`{key}`: {e}"), "unknown value");
                    return None;
                }
            }
        }
        if out.is_empty() {
            self.error(entry.span(), format!("`{key}` needs a value"), "empty");
            return None;
        }
        Some(out)
    }

    fn client_condition(
        &mut self,
        value: &str,
        entry: &KdlEntry,
        sets: &Sets,
    ) -> Option<ClientRef> {
        if sets.networks.contains_key(value) {
            return Some(ClientRef::Set(value.to_owned()));
        }
        if let Ok(ip) = value.parse::<IpAddr>() {
            return Some(ClientRef::Net(IpNet::from(ip)));
        }
        if let Ok(net) = value.parse::<IpNet>() {
            if net.trunc() != net {
                self.error(
                    entry.span(),
                    format!("network `{value}` has host bits set"),
                    "host bits set",
                )
                .help = Some(format!("did you mean `{}`?", net.trunc()));
                return None;
            }
            return Some(ClientRef::Net(net));
        }
        let help = suggest(value, sets.networks.keys().map(String::as_str)).unwrap_or_else(|| {
            "define it with `networks NAME \"CIDR\"...`, or write a CIDR or IP address".to_owned()
        });
        self.error(
            entry.span(),
            format!("`{value}` is neither a defined network set nor a CIDR or IP address"),
            "undefined network set",
        )
        .help = Some(help);
        None
    }
}

/// "did you mean `X`?" for the closest candidate, when one is close enough.
fn suggest<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn kind(value: &KdlValue) -> &'static str {
    match value {
        KdlValue::String(_) => "a string",
        KdlValue::Integer(_) => "an integer",
        KdlValue::Float(_) => "a number",
        KdlValue::Bool(_) => "a boolean",
        KdlValue::Null => "#null",
    }
}

/// A DNS name: dot-separated labels of 1..=63 letters, digits and hyphens, not
/// starting or ending with a hyphen, 253 bytes at most.
fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `value` as a path, relative ones taken from the directory of `config_path`.
fn resolve(config_path: &Path, value: &str) -> PathBuf {
    let value = Path::new(value);
    if value.is_absolute() {
        return value.to_path_buf();
    }
    match config_path.parent() {
        Some(dir) => dir.join(value),
        None => value.to_path_buf(),
    }
}
