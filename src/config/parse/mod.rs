//! Walks the KDL document into a [`Config`], collecting every error.
//!
//! Two passes over the top level: the first reads the named sets (`networks`,
//! `domains`) so that rules may refer to sets written after them; the second reads
//! everything else. Each reader checks its node completely (type annotations,
//! arguments, properties, children) and carries on after an error, so one run
//! reports everything that is wrong.
//!
//! One file per part of the grammar, each adding its readers to [`Parser`]:
//!
//! - here: [`parse`], the two passes (`Parser::document`) and the shared helpers;
//! - `include`: `include` nodes, every file of a configuration in the order it applies;
//! - `report`: errors and the place they point at; `node`: the shape of a node
//!   (annotations, arguments, properties, children) and the values of its entries;
//! - `sets`: the first pass (`networks`, `domains`, and the nodes read with them:
//!   `tables`, `delivery` (credentials), `filter`, `users`);
//! - `server`, `listen`, `limits`, `delivery`, `rate`, `reload`, `log`, `dkim`,
//!   `authentication`: the node or block of that name;
//! - `stages`: `stage` blocks and their rules; `conditions`: the conditions of rules;
//!   `checks`: `header-checks` and `body-checks` rules.
//!
//! Tests: `tests/` reads whole configurations through [`Config::parse`], one file per
//! part of the grammar (`tests/listen.rs` for `listen`...) and `tests/mod.rs` for the
//! whole (the example, defaults, how errors are reported); a few readers keep small
//! tests of their own beside them (`tables`, `checks`, `users`, `authentication/tests.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kdl::KdlValue;
use miette::{NamedSource, SourceSpan};

use crate::config::{
    ClientRef, Config, ConfigError, ConfigErrors, Delivery, Limits, Listener, Origin, RuleConfig,
    Server, Stage,
};
use crate::lookup::{DomainSet, NetworkSet};
use crate::position::Positions;
use include::{Loaded, ordered};
use listen::ListenTls;
pub(in crate::config) use server::control_socket_of;

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
    "milter",
    "rspamd",
    "rate-limits",
    "users",
    "reload",
    "log",
    "decision-log",
    "virtual-mailboxes",
    "dkim",
    "dkim-internal",
    "authentication",
    "local-submission",
    "policy-service",
    "dnsbl",
    "cluster",
    "greylisting",
];

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
    /// The text, and where its lines start (for `Origin`s).
    text: Positions<Arc<String>>,
    source: NamedSource<Arc<String>>,
}

impl SourceFile {
    fn new(name: &str, path: &Path, text: &str) -> Arc<SourceFile> {
        let text = Arc::new(text.to_owned());
        Arc::new(SourceFile {
            path: path.to_path_buf(),
            name: Arc::from(name),
            source: NamedSource::new(name, text.clone()),
            text: Positions::new(text),
        })
    }
}

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
mod authentication;
mod checks;
mod cluster;
mod conditions;
mod decision_log;
mod delivery;
mod dkim;
mod filter;
mod greylisting;
mod include;
mod limits;
mod listen;
mod log;
mod milter;
mod node;
mod rate;
mod reload;
mod report;
mod server;
mod services;
mod sets;
mod stages;
mod submission;
mod tables;
mod users;

#[cfg(test)]
mod tests;
/// What the first pass found: set names, with where they were defined.
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
    /// `milter` nodes.
    milters: milter::Milters,
    /// `users` nodes.
    users: users::UsersTables,
    /// `policy-service` nodes.
    policy_services: services::PolicyServices,
    /// `dnsbl` nodes.
    dnsbls: services::Dnsbls,
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

    // ---- the document ---------------------------------------------------------

    fn document(&mut self, docs: &[Loaded], path: &Path) -> Option<Config> {
        let nodes = ordered(docs);
        let sets = self.sets(&nodes);

        let mut server: Option<Server> = None;
        let mut server_at: Option<Origin> = None;
        let mut limits: Option<(Limits, Origin)> = None;
        let mut rate_limits: Option<(crate::config::RateLimits, Origin)> = None;
        let mut cluster: Option<(Option<crate::config::cluster::Cluster>, Origin)> = None;
        let mut greylisting: Option<(crate::config::greylisting::Greylisting, Origin)> = None;
        let mut reload: Option<(crate::config::ReloadSettings, Origin)> = None;
        let mut log: Option<(crate::config::LogSettings, Origin)> = None;
        let mut decision_log: Option<(&kdl::KdlNode, Origin)> = None;
        let mut virtual_mailboxes: Option<crate::config::VirtualMailboxes> = None;
        let mut listeners: Vec<(Listener, Origin)> = Vec::new();
        let mut listen_tls: Vec<ListenTls> = Vec::new();
        let mut saw_listen = false;
        let mut stages: [Option<(Vec<RuleConfig>, Origin)>; Stage::COUNT] = Default::default();
        let mut aliases: Option<(Arc<crate::lookup::Table>, Origin)> = None;
        let mut virtual_aliases: Option<(Arc<crate::lookup::Table>, Origin)> = None;
        let mut delivery: Option<(Delivery, Origin)> = None;
        let mut dkim: Vec<(crate::mailauth::dkim::Signer, Origin)> = Vec::new();
        let mut authentication: Option<crate::config::Authentication> = None;
        let mut dkim_internal: Option<Vec<ClientRef>> = None;
        let mut local_submission: Option<(Option<crate::config::LocalSubmission>, Origin)> = None;

        for (file, node) in &nodes {
            self.cur = file.clone();
            let here = self.origin(node.name().span().offset());
            match node.name().value() {
                "networks" | "domains" | "table" | "credentials" | "content-filter" | "users"
                | "policy-service" | "dnsbl" | "milter" | "rspamd" => {} // read by `sets`
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
                "cluster" => {
                    if let Some((_, first)) = &cluster {
                        let first = first.clone();
                        self.duplicate(node.name().span(), "`cluster` block".into(), &first);
                        continue;
                    }
                    cluster = Some((self.cluster(node), here));
                }
                "greylisting" => {
                    if let Some((_, first)) = &greylisting {
                        let first = first.clone();
                        self.duplicate(node.name().span(), "`greylisting` block".into(), &first);
                        continue;
                    }
                    greylisting = Some((self.greylisting(node, &sets), here));
                }
                "virtual-mailboxes" => {
                    if let Some(first) = &virtual_mailboxes {
                        let first = first.origin.clone();
                        self.duplicate(node.name().span(), "`virtual-mailboxes`".into(), &first);
                        continue;
                    }
                    virtual_mailboxes = self.virtual_mailboxes(node, &sets, here);
                }
                "log" => {
                    if let Some((_, first)) = &log {
                        let first = first.clone();
                        self.duplicate(node.name().span(), "`log` block".into(), &first);
                        continue;
                    }
                    let l = self.log_settings(node);
                    log = Some((l, here));
                }
                "decision-log" => {
                    if let Some((_, first)) = &decision_log {
                        let first = first.clone();
                        self.duplicate(node.name().span(), "`decision-log` block".into(), &first);
                        continue;
                    }
                    decision_log = Some((node, here));
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
                "local-submission" => {
                    if let Some((_, first)) = &local_submission {
                        let first = first.clone();
                        self.duplicate(
                            node.name().span(),
                            "`local-submission` block".into(),
                            &first,
                        );
                        continue;
                    }
                    local_submission = Some((
                        self.local_submission(node, &sets.tables, &sets.milters),
                        here,
                    ));
                }
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
        let cluster = cluster.and_then(|(c, _)| c).map(|mut c| {
            if c.node.is_empty() {
                c.node.clone_from(&server.hostname);
            }
            c
        });
        // read once the spool (its default place) is known
        let decision_log = match decision_log {
            Some((node, _)) => self.decision_log(node, &server.spool),
            None => crate::config::decision_log::DecisionLog::defaults_for(&server.spool),
        };
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
            log: log.map(|l| l.0).unwrap_or_default(),
            decision_log,
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
            policy_services: sets
                .policy_services
                .into_iter()
                .filter_map(|(k, (v, _))| Some((k, v?)))
                .collect(),
            dnsbls: sets
                .dnsbls
                .into_iter()
                .filter_map(|(k, (v, _))| Some((k, v?)))
                .collect(),
            milters: sets
                .milters
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
            local_submission: local_submission.and_then(|(l, _)| l),
            cluster,
            greylisting: greylisting.map(|(g, _)| g),
            sources: std::mem::take(&mut self.sources),
        })
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

/// A DNS name ([`crate::net::dns::is_hostname`]).
fn is_hostname(name: &str) -> bool {
    crate::net::dns::is_hostname(name)
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

/// The keys of each settings block, as the readers accept them (for
/// [`crate::config::settings`], whose table must name each one: tested there).
#[cfg(test)]
pub(crate) fn setting_keys() -> [(&'static str, &'static [&'static str]); 8] {
    [
        ("server", server::SERVER_KEYS),
        ("limits", limits::LIMIT_KEYS),
        ("rate-limits", rate::KEYS),
        ("reload", reload::KEYS),
        ("log", log::KEYS),
        ("decision-log", decision_log::KEYS),
        ("delivery", delivery::DELIVERY_KEYS),
        ("cluster", cluster::KEYS),
    ]
}
