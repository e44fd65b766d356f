//! main.cf + master.cf → an mtad configuration, its suite and the report.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use super::access::{Subject, access_action, map_key};
use super::kdl::{Cond, q};
use super::maincf::{MainCf, Params, split_list};
use super::mapping;
use super::mastercf::{self, Service};
use super::report::{Report, Status};
use super::restrictions::{Action, Item, JoinProblem, List, Rule, join};
use super::suite::{Facts, Listener};
use super::tables::{Source, TableRef, sql_table};
use super::{ImportError, Imported, Options};

/// Restriction classes may name classes: this deep at most.
const MAX_CLASS_DEPTH: usize = 8;

pub(super) struct Translator {
    params: Params,
    cf: MainCf,
    services: Vec<Service>,
    src: Source,
    pub report: Report,
    /// Files written beside the configuration: name → text.
    pub files: BTreeMap<String, String>,
    /// Source path → the name it got in the output.
    file_names: BTreeMap<String, String>,
    /// `table` nodes, by the table spec they come from.
    tables: BTreeMap<String, (String, String)>,
    dnsbls: BTreeMap<String, String>,
    policies: BTreeMap<String, String>,
    milters: BTreeMap<String, String>,
    /// The `users` node for smtpd_sasl_auth_enable, once a listener offers AUTH.
    users: Option<String>,
    /// Extra `networks` sets (per-listener mynetworks, rate-limit exceptions).
    networks: Vec<String>,
    /// Restriction classes (main.cf smtpd_restriction_classes).
    classes: BTreeSet<String>,
    join_problems: Vec<(String, JoinProblem)>,
    pub facts: Facts,
    /// Output filled section by section.
    out: String,
}

fn place(cf: &MainCf, name: &str) -> String {
    match cf.settings.get(name) {
        Some(s) => format!("main.cf:{}", s.line),
        None => "default".to_owned(),
    }
}

impl Translator {
    pub fn new(dir: &Path, opts: &Options) -> Result<Translator, ImportError> {
        let main_text = read_cf(&dir.join("main.cf"))?;
        let cf = MainCf::parse(&main_text).map_err(ImportError::MainCf)?;
        let hostname = opts.hostname.clone().unwrap_or_else(host_name);
        let params = Params::new(&cf, &hostname);
        let master_path = dir.join("master.cf");
        let services = if master_path.is_file() {
            mastercf::parse(&read_cf(&master_path)?).map_err(ImportError::MasterCf)?
        } else {
            // Postfix cannot run without one: take Debian's shipped smtp service
            vec![Service {
                name: "smtp".into(),
                kind: "inet".into(),
                command: "smtpd".into(),
                overrides: Vec::new(),
                args: Vec::new(),
                line: 0,
            }]
        };
        let config_directory = params.get("config_directory")?;
        let mut report = Report {
            source: dir.display().to_string(),
            postfix_defaults: format!("Postfix {}", params.get("mail_version")?),
            compatibility_level: params.get("compatibility_level")?,
            entries: Vec::new(),
        };
        if !cf.settings.contains_key("myhostname") {
            report.add(
                "default",
                "myhostname",
                Status::Approximated,
                format!("server {{ hostname {} }}", q(&hostname)),
                "main.cf does not set it: Postfix takes the host's name; the importer took this one's (or --hostname)",
            );
        }
        for (name, line) in &cf.repeated {
            report.add(
                format!("main.cf:{line}"),
                name.clone(),
                Status::Approximated,
                "",
                "set more than once: the last value is taken, as Postfix does",
            );
        }
        let classes = params
            .list("smtpd_restriction_classes")?
            .into_iter()
            .collect();
        Ok(Translator {
            params,
            cf,
            services,
            src: Source {
                dir: dir.to_path_buf(),
                config_directory,
                from_host: Default::default(),
            },
            report,
            files: BTreeMap::new(),
            file_names: BTreeMap::new(),
            tables: BTreeMap::new(),
            dnsbls: BTreeMap::new(),
            policies: BTreeMap::new(),
            milters: BTreeMap::new(),
            users: None,
            networks: Vec::new(),
            classes,
            join_problems: Vec::new(),
            facts: Facts::default(),
            out: String::new(),
        })
    }

    /// A report entry for `name` from the mapping table, when main.cf sets it.
    fn claim(&mut self, name: &str) {
        if !self.cf.settings.contains_key(name)
            || self.report.entries.iter().any(|e| e.parameter == name)
        {
            return;
        }
        let place = place(&self.cf, name);
        match mapping::find(name) {
            Some(m) => self.report.add(place, name, m.status, m.mtad, m.why),
            None => self.report.add(place, name, Status::Translated, "", ""),
        }
    }

    /// A report entry that says more than the mapping does.
    fn note(&mut self, name: &str, status: Status, mtad: &str, why: impl Into<String>) {
        let place = place(&self.cf, name);
        self.report.add(place, name, status, mtad, why);
    }

    fn get(&self, name: &str) -> Result<String, ImportError> {
        Ok(self.params.get(name)?)
    }

    fn list(&self, name: &str) -> Result<Vec<String>, ImportError> {
        Ok(self.params.list(name)?)
    }

    /// A file for the output, named after its source (`/etc/postfix/transport` →
    /// `transport`), made unique.
    fn add_file(&mut self, source: &str, text: String) -> String {
        if let Some(name) = self.file_names.get(source) {
            return name.clone();
        }
        let base = Path::new(source)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "table".into());
        let base: String = base
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let base =
            if base.is_empty() || base.starts_with('.') || base == "mtad.kdl" || base == "tests" {
                format!("table{base}")
            } else {
                base
            };
        let mut name = base.clone();
        let mut n = 2;
        while self.files.contains_key(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        self.files.insert(name.clone(), text);
        self.file_names.insert(source.to_owned(), name.clone());
        name
    }

    /// An mtad `table` for a map-like Postfix table (hash files, cidr, inline, SQL);
    /// its name. `Err` with why it cannot be one.
    fn table(&mut self, spec: &str, wanted: &str) -> Result<String, String> {
        if let Some((name, _)) = self.tables.get(spec) {
            return Ok(name.clone());
        }
        let name = unique(wanted, self.tables.values().map(|(n, _)| n.as_str()));
        let node = match TableRef::parse(spec) {
            TableRef::Map(path) => {
                let (_, text) = self.src.read(&path)?;
                crate::lookup::parse_map(&text).map_err(|e| table_errors(&path, &e))?;
                let file = self.add_file(&path, text);
                format!("table {} file={}", q(&name), q(&file))
            }
            TableRef::Cidr(path) => {
                let (_, text) = self.src.read(&path)?;
                crate::lookup::parse_cidr(&text).map_err(|e| table_errors(&path, &e))?;
                let file = self.add_file(&path, text);
                format!("table {} type=\"cidr\" file={}", q(&name), q(&file))
            }
            TableRef::Regexp(path) => {
                let (_, text) = self.src.read(&path)?;
                crate::lookup::parse_regexp(&text).map_err(|e| table_errors(&path, &e))?;
                let file = self.add_file(&path, text);
                format!("table {} type=\"regexp\" file={}", q(&name), q(&file))
            }
            TableRef::Inline(entries) => {
                let mut node = format!("table {} {{\n", q(&name));
                for (k, v) in entries {
                    let _ = writeln!(node, "    {} {}", q(&k), q(&v));
                }
                node.push('}');
                node
            }
            TableRef::Sql { kind, cf } => {
                let (_, text) = self.src.read(&cf)?;
                let t = sql_table(&kind, &text, &self.src).map_err(|e| format!("{cf}: {e}"))?;
                format!(
                    "table {} sql={} \\\n    query={}",
                    q(&name),
                    q(&t.url),
                    q(&t.query)
                )
            }
            TableRef::Static(_) => {
                return Err(format!(
                    "`{spec}`: a static table is not a table mtad reads"
                ));
            }
            TableRef::Other(_) => {
                return Err(format!("`{spec}`: mtad does not read this kind of table"));
            }
        };
        self.tables.insert(
            spec.to_owned(),
            (name.clone(), format!("// {spec}\n{node}")),
        );
        Ok(name)
    }

    pub fn run(mut self) -> Result<Imported, ImportError> {
        let header = format!(
            "// Imported from the Postfix configuration in {} by `mtactl import postfix`.\n\
             // Postfix's defaults are those of {} at compatibility_level {}.\n\
             // Every parameter that was approximated, ignored or not translated is in\n\
             // import-report.txt: read it before putting this configuration in service.\n\
             // Each part names the Postfix parameter it comes from.\n",
            self.src.dir.display(),
            self.report.postfix_defaults,
            self.report.compatibility_level
        );
        self.out.push_str(&header);
        let listeners = self.listeners()?;
        self.server(&listeners)?;
        self.listen_nodes(&listeners);
        self.local_submission();
        self.sets()?;
        self.aliases()?;
        self.limits()?;
        self.rcpt_stage(&listeners)?;
        self.data_stage()?;
        self.route_stage()?;
        self.leftovers();
        self.out.push_str(
            "\n// The generated suite (what Postfix answers) must pass before this policy goes live.\nreload {\n    require-tests \"tests/imported.kdl\"\n}\n",
        );
        // definitions collected on the way
        let mut defs = String::new();
        if !self.networks.is_empty() {
            defs.push('\n');
            for n in &self.networks {
                defs.push_str(n);
                defs.push('\n');
            }
        }
        for (_, node) in self.tables.values() {
            defs.push('\n');
            defs.push_str(node);
            defs.push('\n');
        }
        if let Some(node) = &self.users {
            defs.push('\n');
            defs.push_str(node);
            defs.push('\n');
        }
        for node in self
            .dnsbls
            .values()
            .chain(self.policies.values())
            .chain(self.milters.values())
        {
            defs.push('\n');
            defs.push_str(node);
            defs.push('\n');
        }
        let marker = "\n// @@DEFINITIONS@@\n";
        let config = self.out.replacen(marker, &defs, 1);
        for (param, p) in std::mem::take(&mut self.join_problems) {
            self.report.add(
                place(&self.cf, &param),
                param,
                Status::Unsupported,
                "defer 450 4.7.1 where it stood",
                p.message,
            );
        }
        let from_host: Vec<String> = self.src.from_host.borrow().clone();
        for path in from_host {
            self.report.add(
                "file",
                path.clone(),
                Status::Approximated,
                "",
                format!("{} has no file of this name: {path} was read from this host (import on the Postfix host, or copy it into the directory)", self.src.dir.display()),
            );
        }
        let suite = self.facts.suite();
        Ok(Imported {
            config,
            suite,
            report: self.report,
            files: self.files,
        })
    }
}

/// A list of domains and tables (`hash:/path`, `/path`) as the domains, lowercased
/// without a trailing dot, and the tables.
fn domains_and_tables(list: Vec<String>) -> (Vec<String>, Vec<String>) {
    let (tables, names): (Vec<String>, Vec<String>) = list
        .into_iter()
        .partition(|d| d.contains(':') || d.starts_with('/'));
    let names = names
        .into_iter()
        .map(|d| d.to_ascii_lowercase().trim_end_matches('.').to_owned())
        .collect();
    (names, tables)
}

/// A `networks` or `domains` node with the comment above it: `KIND "NAME" "ENTRY"...
/// [table="TABLE"]`.
fn set_node(
    comment: &str,
    kind: &str,
    name: &str,
    entries: &[String],
    table: Option<&str>,
) -> String {
    let mut line = format!("// {comment}\n{kind} {}", q(name));
    for e in entries {
        line.push(' ');
        line.push_str(&q(e));
    }
    if let Some(t) = table {
        let _ = write!(line, " table={}", q(t));
    }
    line.push('\n');
    line
}

/// `v` without repeated entries, in the order first seen.
fn dedup(v: &mut Vec<String>) {
    let mut seen = BTreeSet::new();
    v.retain(|x| seen.insert(x.clone()));
}

/// `name`, or `name-2`, ... not among `taken`.
fn unique<'a>(name: &str, taken: impl Iterator<Item = &'a str> + Clone) -> String {
    let mut candidate = name.to_owned();
    let mut n = 2;
    while taken.clone().any(|t| t == candidate) {
        candidate = format!("{name}-{n}");
        n += 1;
    }
    candidate
}

fn table_errors(path: &str, errors: &[crate::lookup::TableError]) -> String {
    let shown: Vec<String> = errors
        .iter()
        .take(3)
        .map(|e| format!("{path}:{e}"))
        .collect();
    shown.join("; ")
}

fn read_cf(path: &Path) -> Result<String, ImportError> {
    let read = |e: std::io::Error| ImportError::Read {
        path: path.display().to_string(),
        error: e.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(read)?;
    if meta.len() > super::maincf::MAX_FILE as u64 {
        return Err(ImportError::Read {
            path: path.display().to_string(),
            error: "larger than 4 MiB".into(),
        });
    }
    let bytes = std::fs::read(path).map_err(read)?;
    String::from_utf8(bytes).map_err(|_| ImportError::Read {
        path: path.display().to_string(),
        error: "not UTF-8 text".into(),
    })
}

/// This host's name (Postfix's default myhostname).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

// ---- listeners ----------------------------------------------------------------

/// One smtpd listener: its name, address and the parameters it runs with.
pub(super) struct Smtpd {
    pub name: String,
    pub address: String,
    pub service: String,
    pub line: usize,
    pub params: Params,
    pub overrides: Vec<(String, String)>,
    /// The service runs postscreen in front of its smtpd.
    pub postscreen: bool,
}

impl Translator {
    fn listeners(&mut self) -> Result<Vec<Smtpd>, ImportError> {
        let interfaces = self.list("inet_interfaces")?;
        self.claim("inet_interfaces");
        self.claim("inet_protocols");
        // Postfix binds each interface for each protocol inet_protocols names
        let protocols = self.list("inet_protocols")?;
        let has = |p: &str| protocols.iter().any(|x| x == "all" || x == p);
        let (v4, v6) = (has("ipv4") || !has("ipv6"), has("ipv6"));
        let mut addresses = Vec::new();
        for i in &interfaces {
            match i.as_str() {
                // one dual-stack socket: IPv4 clients arrive on it too (as Postfix's two
                // wildcard sockets take them), which mtad sees as IPv4 addresses
                "all" if v6 => addresses.push("[::]".to_owned()),
                "all" => addresses.push("0.0.0.0".to_owned()),
                "loopback-only" | "localhost" => {
                    if v4 {
                        addresses.push("127.0.0.1".to_owned());
                    }
                    if v6 {
                        addresses.push("[::1]".to_owned());
                    }
                }
                other => {
                    let bare = other.trim_start_matches('[').trim_end_matches(']');
                    match bare.parse::<std::net::IpAddr>() {
                        Ok(std::net::IpAddr::V4(a)) => addresses.push(a.to_string()),
                        Ok(std::net::IpAddr::V6(a)) => addresses.push(format!("[{a}]")),
                        Err(_) => self.note(
                            "inet_interfaces",
                            Status::Unsupported,
                            "",
                            format!("`{other}` is a host name: write the address in listen address= (no listener was made for it)"),
                        ),
                    }
                }
            }
        }
        addresses.dedup();
        let pass_smtpd = self
            .services
            .iter()
            .find(|s| s.kind == "pass" && s.command == "smtpd")
            .cloned();
        let mut out = Vec::new();
        let services = self.services.clone();
        for s in &services {
            if s.kind != "inet" {
                continue;
            }
            let (overrides, command) = match s.command.as_str() {
                "smtpd" => (s.overrides.clone(), "smtpd"),
                "postscreen" => {
                    self.report.add(
                        format!("master.cf:{}", s.line),
                        format!("{} inet postscreen", s.name),
                        Status::Approximated,
                        format!("listen {}", q(&s.name)),
                        "postscreen's protocol tests (pregreet, pipelining, bare newline, non-SMTP commands) are not translated: mtad has none of them; its smtpd's restrictions run on this listener, and postscreen's DNS lists, when their action is not `ignore`, refuse first at RCPT (a `dnsbl` weighted as postscreen weighs them)",
                    );
                    let mut o = s.overrides.clone();
                    if let Some(p) = &pass_smtpd {
                        o.extend(p.overrides.iter().cloned());
                    }
                    (o, "smtpd")
                }
                _ => continue,
            };
            let _ = command;
            let (host, port_name) = match s.name.rsplit_once(':') {
                Some((h, p)) => (Some(h.trim_start_matches('[').trim_end_matches(']')), p),
                None => (None, s.name.as_str()),
            };
            let Some(port) = mastercf::port(port_name) else {
                self.report.add(
                    format!("master.cf:{}", s.line),
                    format!("{} inet smtpd", s.name),
                    Status::Unsupported,
                    "",
                    format!("`{port_name}` is not a port the importer knows: no listener"),
                );
                continue;
            };
            let addrs: Vec<String> = match host {
                Some(h) => match h.parse::<std::net::IpAddr>() {
                    Ok(std::net::IpAddr::V6(a)) => vec![format!("[{a}]")],
                    Ok(a) => vec![a.to_string()],
                    Err(_) if h == "localhost" => vec!["127.0.0.1".into()],
                    Err(_) => {
                        self.report.add(
                            format!("master.cf:{}", s.line),
                            format!("{} inet smtpd", s.name),
                            Status::Unsupported,
                            "",
                            format!("`{h}` is a host name: no listener"),
                        );
                        continue;
                    }
                },
                None => addresses.clone(),
            };
            let params = self.params.with_overrides(&overrides);
            for (n, a) in addrs.iter().enumerate() {
                let name = if n == 0 {
                    s.name.clone()
                } else {
                    format!("{}-{}", s.name, n + 1)
                };
                out.push(Smtpd {
                    name,
                    address: format!("{a}:{port}"),
                    service: s.name.clone(),
                    line: s.line,
                    params: params.clone(),
                    overrides: overrides.clone(),
                    postscreen: s.command == "postscreen",
                });
            }
            for (k, v) in &overrides {
                self.report.add(
                    format!("master.cf:{}", s.line),
                    format!("{} -o {k}={v}", s.name),
                    if mapping::find(k).is_some()
                        || k.starts_with("smtpd_") && k.ends_with("_restrictions")
                        || k == "mynetworks"
                        || k == "content_filter"
                    {
                        Status::Translated
                    } else {
                        Status::Unsupported
                    },
                    format!("listen {}", q(&s.name)),
                    if mapping::find(k).is_some()
                        || k.ends_with("_restrictions")
                        || k == "mynetworks"
                        || k == "content_filter"
                    {
                        String::new()
                    } else {
                        format!("`{k}` on a listener is not translated")
                    },
                );
            }
        }
        if out.is_empty() {
            return Err(ImportError::Invalid(
                "master.cf has no smtpd service the importer can listen for (mtad needs at least one listener)".into(),
            ));
        }
        Ok(out)
    }

    fn server(&mut self, listeners: &[Smtpd]) -> Result<(), ImportError> {
        let hostname = self.get("myhostname")?;
        let mut origin = self.get("myorigin")?;
        if origin.starts_with('/') {
            // Debian's Postfix: the first line of that file (/etc/mailname)
            match self.src.read(&origin) {
                Ok((_, text)) => {
                    let first = text.lines().next().unwrap_or("").trim().to_owned();
                    self.note(
                        "myorigin",
                        Status::Translated,
                        "server { origin }",
                        format!("the first line of {origin}, as Debian's Postfix reads it"),
                    );
                    origin = if first.is_empty() {
                        hostname.clone()
                    } else {
                        first
                    };
                }
                Err(e) => {
                    self.note(
                        "myorigin",
                        Status::Approximated,
                        "server { origin }",
                        format!("{e}: the hostname is the origin"),
                    );
                    origin = hostname.clone();
                }
            }
        }
        self.claim("myhostname");
        self.claim("myorigin");
        self.claim("mydomain");
        self.facts.hostname = hostname.clone();
        self.facts.origin = origin.clone();
        let mut s = String::from("\nserver {\n");
        let _ = writeln!(s, "    hostname {:<30} // myhostname", q(&hostname));
        if origin != hostname {
            let _ = writeln!(s, "    origin {:<32} // myorigin", q(&origin));
        }
        let _ = writeln!(s, "    spool {}", q(&self.facts.spool));
        let banner = self.get("smtpd_banner")?;
        if let Some(rest) = banner.strip_prefix(&hostname) {
            let rest = rest.trim();
            if self.cf.settings.contains_key("smtpd_banner") && !rest.is_empty() && rest != "ESMTP"
            {
                let _ = writeln!(s, "    banner {:<32} // smtpd_banner", q(rest));
            }
            self.claim("smtpd_banner");
        } else {
            self.note(
                "smtpd_banner",
                Status::Approximated,
                "",
                "does not start with $myhostname: mtad's greeting always does",
            );
        }
        // content_filter of the server
        let filter = self.get("content_filter")?;
        if !filter.is_empty() {
            match self.content_filter(&filter) {
                Ok(name) => {
                    let _ = writeln!(s, "    content-filter {:<24} // content_filter", q(&name));
                    self.facts.content_filter = Some(name);
                    self.claim("content_filter");
                }
                Err(why) => self.note("content_filter", Status::Unsupported, "", why),
            }
        }
        // the certificate every listener shares
        if let Some((cert, key)) = self.certificate(&self.params.clone())? {
            let _ = writeln!(
                s,
                "    tls-certificate {}   // smtpd_tls_cert_file",
                q(&cert)
            );
            let _ = writeln!(s, "    tls-key {}   // smtpd_tls_key_file", q(&key));
            self.claim("smtpd_tls_cert_file");
            self.claim("smtpd_tls_key_file");
            self.claim("smtpd_tls_chain_files");
        }
        s.push_str("}\n");
        let _ = listeners;
        self.out.push_str(&s);
        Ok(())
    }

    /// The certificate and key `params` name, as absolute paths of files that exist.
    fn certificate(&mut self, params: &Params) -> Result<Option<(String, String)>, ImportError> {
        let chain = params.list("smtpd_tls_chain_files")?;
        let (cert, key) = if chain.len() >= 2 {
            (chain[1].clone(), chain[0].clone())
        } else {
            let cert = params.get("smtpd_tls_cert_file")?;
            let key = params.get("smtpd_tls_key_file")?;
            let key = if key.is_empty() { cert.clone() } else { key };
            (cert, key)
        };
        if cert.is_empty() {
            return Ok(None);
        }
        let (Some(c), Some(k)) = (self.src.locate(&cert), self.src.locate(&key)) else {
            self.note(
                "smtpd_tls_cert_file",
                Status::Unsupported,
                "",
                format!(
                    "{cert} or {key} is not there: no TLS (a listener that requires it is left out)"
                ),
            );
            return Ok(None);
        };
        let abs =
            |p: std::path::PathBuf| std::fs::canonicalize(&p).unwrap_or(p).display().to_string();
        Ok(Some((abs(c), abs(k))))
    }

    /// The `content-filter` node for `transport:nexthop`; its name.
    fn content_filter(&mut self, spec: &str) -> Result<String, String> {
        let (transport, nexthop) = spec
            .split_once(':')
            .ok_or_else(|| format!("`{spec}` is not transport:nexthop"))?;
        let kind = self.transport_kind(transport)?;
        let name = if transport.is_empty() {
            "filter"
        } else {
            transport
        };
        let node = format!(
            "content-filter {} {}   // content_filter = {spec}",
            q(name),
            q(&format!("{kind}:{nexthop}"))
        );
        self.milters.insert(format!("filter {name}"), node);
        Ok(name.to_owned())
    }

    /// What a master.cf transport name delivers with: `smtp` or `lmtp`.
    fn transport_kind(&self, transport: &str) -> Result<&'static str, String> {
        match transport {
            "smtp" | "relay" | "" => return Ok("smtp"),
            "lmtp" => return Ok("lmtp"),
            _ => {}
        }
        let service = self
            .services
            .iter()
            .find(|s| s.name == transport && s.kind == "unix")
            .ok_or_else(|| format!("the transport `{transport}` is not a master.cf service"))?;
        match service.command.as_str() {
            "smtp" => Ok("smtp"),
            "lmtp" => Ok("lmtp"),
            other => Err(format!(
                "the transport `{transport}` runs `{other}`: mtad delivers over SMTP or LMTP only"
            )),
        }
    }

    fn listen_nodes(&mut self, listeners: &[Smtpd]) {
        let main_filter = self.get("content_filter").unwrap_or_default();
        let mut s = String::from("\n");
        for l in listeners.iter() {
            let mut props = format!("listen {} address={}", q(&l.name), q(&l.address));
            let mut notes = vec![format!("master.cf:{} {}", l.line, l.service)];
            let p = &l.params;
            let level = p.get("smtpd_tls_security_level").unwrap_or_default();
            let level = if level.is_empty() {
                if p.flag("smtpd_enforce_tls").unwrap_or(false) {
                    "encrypt".to_owned()
                } else if p.flag("smtpd_use_tls").unwrap_or(false) {
                    "may".to_owned()
                } else {
                    "none".to_owned()
                }
            } else {
                level
            };
            let wrapper = p.flag("smtpd_tls_wrappermode").unwrap_or(false);
            let own_cert = l.overrides.iter().any(|(k, _)| {
                k.starts_with("smtpd_tls_cert")
                    || k.starts_with("smtpd_tls_key")
                    || k == "smtpd_tls_chain_files"
            });
            let cert = self.certificate(p).ok().flatten();
            let has_cert = cert.is_some();
            if (wrapper || level == "encrypt") && !has_cert {
                self.report.add(
                    format!("master.cf:{}", l.line),
                    format!("{} (TLS)", l.service),
                    Status::Unsupported,
                    "",
                    "requires TLS but has no certificate the importer could find: no listener (narrower)",
                );
                continue;
            }
            if own_cert && let Some((c, k)) = &cert {
                let _ = write!(props, " certificate={} key={}", q(c), q(k));
            }
            if wrapper {
                props.push_str(" implicit-tls=#true");
                notes.push("smtpd_tls_wrappermode".into());
            } else if has_cert {
                match level.as_str() {
                    "encrypt" => {
                        props.push_str(" starttls=\"required\"");
                        notes.push("smtpd_tls_security_level=encrypt".into());
                    }
                    "may" => {}
                    _ => props.push_str(" starttls=\"off\""),
                }
            }
            let filter = p.get("content_filter").unwrap_or_default();
            if filter.is_empty() && !main_filter.is_empty() {
                props.push_str(" filtered=#true");
                notes.push("-o content_filter=".into());
            } else if filter != main_filter {
                match self.content_filter(&filter) {
                    Ok(name) => {
                        let _ = write!(props, " content-filter={}", q(&name));
                        notes.push("-o content_filter".into());
                    }
                    Err(why) => self.report.add(
                        format!("master.cf:{}", l.line),
                        format!("{} -o content_filter={filter}", l.service),
                        Status::Unsupported,
                        "",
                        format!("{why}: this listener's mail is not filtered"),
                    ),
                }
            }
            let milters = p.list("smtpd_milters").unwrap_or_default();
            if !milters.is_empty() {
                let names: Vec<String> = milters.iter().filter_map(|m| self.milter(m, p)).collect();
                if !names.is_empty() {
                    let _ = write!(props, " milters={}", q(&names.join(" ")));
                    notes.push("smtpd_milters".into());
                }
            }
            if p.flag("smtpd_sasl_auth_enable").unwrap_or(false) {
                let tls = wrapper || (has_cert && level != "none");
                notes.push(self.sasl(&mut props, p, tls, wrapper));
            }
            let _ = writeln!(s, "{props}   // {}", notes.join(", "));
            self.facts.listeners.push(Listener {
                name: l.name.clone(),
                address: l.address.clone(),
                filtered: props.contains("filtered=#true"),
            });
        }
        for name in [
            "smtpd_tls_security_level",
            "smtpd_use_tls",
            "smtpd_enforce_tls",
            "smtpd_tls_wrappermode",
            "smtpd_tls_auth_only",
            "smtpd_sasl_auth_enable",
            "smtpd_milters",
            "milter_default_action",
            "smtpd_sasl_type",
            "smtpd_sasl_path",
            "smtpd_sasl_security_options",
            "smtpd_sasl_authenticated_header",
        ] {
            self.claim(name);
        }
        s.push_str("\n// @@DEFINITIONS@@\n");
        self.out.push_str(&s);
    }

    /// `non_smtpd_milters`: the milters of mail submitted on this host, which in mtad
    /// come in through `local-submission` (its `sendmail`): a block with its maildrop
    /// under the spool and those milters. Without them no block is written (local
    /// submission stays off, as the report's header says).
    fn local_submission(&mut self) {
        let params = self.params.clone();
        let milters = params.list("non_smtpd_milters").unwrap_or_default();
        if milters.is_empty() {
            return;
        }
        let names: Vec<String> = milters
            .iter()
            .filter_map(|m| self.milter(m, &params))
            .collect();
        if names.is_empty() {
            return;
        }
        let maildrop = format!("{}/maildrop", self.facts.spool.trim_end_matches('/'));
        let _ = write!(
            self.out,
            "\n// mail submitted on this host (sendmail), as Postfix's pickup takes it\n\
             local-submission {{\n    maildrop {}\n    group \"mtad-drop\"   // sendmail is setgid to it (Postfix's setgid_group)\n    \
             milters {}   // non_smtpd_milters\n}}\n",
            q(&maildrop),
            q(&names.join(" "))
        );
        self.claim("non_smtpd_milters");
    }

    /// Server-side SASL on a listener (`smtpd_sasl_auth_enable`): AUTH offered where
    /// Postfix offers a plaintext mechanism (PLAIN, LOGIN: what mtad has) — after TLS,
    /// and before it too with `smtpd_tls_auth_only = no` — checked against the `users`
    /// table "sasl". Postfix's password source (Dovecot's passdb, Cyrus saslauthd)
    /// cannot be imported: that table is written empty, so every AUTH fails (535)
    /// until the operator fills it in; never an AUTH that lets anyone in. What is
    /// appended to `props`; the note for the listener's comment.
    fn sasl(&mut self, props: &mut String, p: &Params, tls: bool, wrapper: bool) -> String {
        let tls_only = p.flag("smtpd_tls_auth_only").unwrap_or(false);
        let plaintext_allowed = |name: &str| {
            !p.list(name)
                .unwrap_or_default()
                .iter()
                .any(|o| o.eq_ignore_ascii_case("noplaintext"))
        };
        // where Postfix would list PLAIN or LOGIN
        let after_tls = tls && plaintext_allowed("smtpd_sasl_tls_security_options");
        let before_tls = !wrapper && !tls_only && plaintext_allowed("smtpd_sasl_security_options");
        // mtad's auth-plaintext offers AUTH before TLS and after it alike
        if !(after_tls || before_tls && !tls) {
            self.note(
                "smtpd_sasl_auth_enable",
                Status::Approximated,
                "",
                "a listener offers no AUTH: Postfix offers no plaintext mechanism (PLAIN, LOGIN), the only ones mtad has, after TLS there (narrower)",
            );
            return "no AUTH: see the report (smtpd_sasl_auth_enable)".into();
        }
        props.push_str(" auth=\"offered\" users=\"sasl\"");
        if before_tls {
            props.push_str(" auth-plaintext=#true");
        }
        if self.users.is_none() {
            let kind = p.get("smtpd_sasl_type").unwrap_or_default();
            let path = p.get("smtpd_sasl_path").unwrap_or_default();
            let file = self.add_file(
                "smtpd_sasl/users.passwd",
                format!(
                    "# FILL IN: the users that may log in (AUTH), in Dovecot's passwd-file form:\n\
                     #   user@example.test:{{ARGON2ID}}$argon2id$...   (doveadm pw -s ARGON2ID)\n\
                     # Postfix asked its SASL server (smtpd_sasl_type = {kind}, smtpd_sasl_path = {path})\n\
                     # for passwords, which cannot be imported. Empty, every AUTH fails (535):\n\
                     # nobody logs in until this file (or users \"sasl\" sql=...) lists them.\n"
                ),
            );
            self.users = Some(format!(
                "// FILL IN: smtpd_sasl_type = {kind}, smtpd_sasl_path = {path}: the passwords stay\n\
                 // with that SASL server; list the users in users.passwd (Dovecot's passwd-file\n\
                 // form), or point this at their SQL table. Until then every AUTH fails (535).\n\
                 users \"sasl\" file={}",
                q(&file)
            ));
            self.note(
                "smtpd_sasl_auth_enable",
                Status::Approximated,
                "listen auth=\"offered\" users=\"sasl\"",
                format!(
                    "Postfix's SASL server ({kind}, {path}) keeps the passwords, which cannot be imported: users \"sasl\" is written with an empty users.passwd, so every AUTH fails (535) until you fill it in (docs/configuration.md#users-name-)"
                ),
            );
        }
        for name in ["smtpd_sasl_type", "smtpd_sasl_path", "smtpd_tls_auth_only"] {
            self.claim(name);
        }
        "smtpd_sasl_auth_enable: FILL IN users \"sasl\"".into()
    }

    /// A `milter` node for one smtpd_milters entry; its name.
    fn milter(&mut self, spec: &str, p: &Params) -> Option<String> {
        let parts = split_list(spec);
        let address = parts.first()?.clone();
        let mut action = p.get("milter_default_action").unwrap_or_default();
        for extra in &parts[1..] {
            if let Some(v) = extra.strip_prefix("default_action=") {
                action = v.to_owned();
            }
        }
        let on_failure = match action.as_str() {
            "accept" => "accept",
            "reject" => "reject",
            _ => "tempfail",
        };
        let address = match address.split_once(':') {
            Some(("unix", path)) if !path.starts_with('/') => {
                let queue = p.get("queue_directory").unwrap_or_default();
                format!("unix:{queue}/{path}")
            }
            Some(("inet", hp)) => format!("inet:{}", hp.replace("localhost", "127.0.0.1")),
            Some(("unix", _)) => address.clone(),
            _ => format!("inet:{}", address.replace("localhost", "127.0.0.1")),
        };
        let base = Path::new(address.rsplit(':').next().unwrap_or("milter"))
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| {
                s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    && !s.chars().all(|c| c.is_ascii_digit())
            })
            .unwrap_or_else(|| format!("milter-{}", address.rsplit(':').next().unwrap_or("0")));
        let key = format!("milter {address}");
        if let Some(existing) = self.milters.get(&key) {
            return existing.split('"').nth(1).map(str::to_owned);
        }
        self.milters.insert(
            key,
            format!(
                "milter {} {} on-failure={}   // smtpd_milters, milter_default_action",
                q(&base),
                q(&address),
                q(on_failure)
            ),
        );
        if action == "quarantine" {
            self.note(
                "milter_default_action",
                Status::Approximated,
                "on-failure=\"tempfail\"",
                "quarantine is not offered: mail waits (tempfail) instead",
            );
        }
        Some(base)
    }
}

// ---- sets -----------------------------------------------------------------------

impl Translator {
    fn sets(&mut self) -> Result<(), ImportError> {
        let mut s = String::new();
        // mynetworks
        let nets = if self.params.is_set("mynetworks") {
            self.claim("mynetworks");
            self.list("mynetworks")?
        } else {
            let style = self.get("mynetworks_style")?;
            self.note(
                "mynetworks_style",
                Status::Approximated,
                "networks \"mynetworks\" \"127.0.0.1/32\" \"::1/128\"",
                format!("mynetworks is not set: Postfix trusts this host's interfaces (mynetworks_style = {style}); they are not known where the import runs, so only loopback is trusted (narrower)"),
            );
            vec!["127.0.0.1/32".to_owned(), "[::1]/128".to_owned()]
        };
        let entries = self.networks_entries("mynetworks", &nets)?;
        self.facts.mynetworks = entries.clone();
        s.push('\n');
        s.push_str(&set_node(
            "mynetworks: clients that may relay (permit_mynetworks)",
            "networks",
            "mynetworks",
            &entries,
            None,
        ));
        // mydestination
        let (mut local, local_tables) = domains_and_tables(self.list("mydestination")?);
        dedup(&mut local);
        self.claim("mydestination");
        let local_table = self.domain_table("mydestination", &local_tables);
        self.facts.local = local.clone();
        s.push_str(&set_node(
            "mydestination: delivered on this host (aliases apply to them)",
            "domains",
            "local",
            &local,
            local_table.as_deref(),
        ));
        // relay_domains
        let subdomains = self
            .list("parent_domain_matches_subdomains")?
            .iter()
            .any(|p| p == "relay_domains");
        let (relay_names, relay_tables) = domains_and_tables(self.list("relay_domains")?);
        let mut relay = Vec::new();
        for d in relay_names {
            let with_subdomains = subdomains && !d.starts_with('.');
            relay.push(d.clone());
            if with_subdomains {
                relay.push(format!(".{d}"));
            }
        }
        dedup(&mut relay);
        if self.params.is_set("relay_domains") {
            self.claim("relay_domains");
        } else if !relay.is_empty() {
            self.note(
                "relay_domains",
                Status::Translated,
                "domains \"relay\"",
                format!(
                    "not set: at compatibility_level {} its default is $mydestination",
                    self.report.compatibility_level
                ),
            );
        }
        let relay_table = self.domain_table("relay_domains", &relay_tables);
        self.facts.relay = relay
            .iter()
            .filter(|d| !d.starts_with('.'))
            .cloned()
            .collect();
        s.push_str(&set_node(
            &format!(
                "relay_domains: accepted from anyone and sent on{}",
                if subdomains {
                    " (parent_domain_matches_subdomains: with their subdomains)"
                } else {
                    ""
                }
            ),
            "domains",
            "relay",
            &relay,
            relay_table.as_deref(),
        ));
        // virtual domains
        let (virtual_entries, virtual_tables) =
            domains_and_tables(self.list("virtual_mailbox_domains")?);
        let virtual_table = self.domain_table("virtual_mailbox_domains", &virtual_tables);
        let has_virtual = !virtual_entries.is_empty() || virtual_table.is_some();
        if has_virtual {
            self.claim("virtual_mailbox_domains");
            s.push_str(&set_node(
                "virtual_mailbox_domains: mailboxes hosted here",
                "domains",
                "virtual",
                &virtual_entries,
                virtual_table.as_deref(),
            ));
        }
        let (alias_entries, alias_tables) = if self.params.is_set("virtual_alias_domains") {
            self.claim("virtual_alias_domains");
            domains_and_tables(self.list("virtual_alias_domains")?)
        } else {
            // the default, $virtual_alias_maps: a domain is one when it is a key there
            (Vec::new(), self.list("virtual_alias_maps")?)
        };
        let alias_table = self.domain_table("virtual_alias_domains", &alias_tables);
        // what reject_unauth_destination lets through
        let mut destinations: Vec<String> = local
            .iter()
            .chain(relay.iter())
            .chain(virtual_entries.iter())
            .chain(alias_entries.iter())
            .cloned()
            .collect();
        dedup(&mut destinations);
        let tables: Vec<String> = [local_table, relay_table, virtual_table, alias_table]
            .into_iter()
            .flatten()
            .collect();
        let table = tables.first().cloned();
        if tables.len() > 1 {
            self.note(
                "virtual_alias_domains",
                Status::Unsupported,
                "",
                format!(
                    "our destinations come from several tables ({}); an mtad domain set takes one: only {} counts for relaying, mail from outside to the others is refused (narrower)",
                    tables.join(", "),
                    tables[0]
                ),
            );
        }
        self.facts.destinations = destinations.clone();
        self.facts.destinations_table = table.is_some();
        s.push_str(&set_node("mydestination + relay_domains + virtual domains: what reject_unauth_destination lets through", "domains", "destinations", &destinations, table.as_deref()));
        self.facts.has_virtual = has_virtual;
        self.out.push_str(&s);
        Ok(())
    }

    /// A `networks` set's entries from Postfix's mynetworks syntax.
    fn networks_entries(
        &mut self,
        parameter: &str,
        nets: &[String],
    ) -> Result<Vec<String>, ImportError> {
        let mut entries = Vec::new();
        for n in nets {
            if n.contains(':')
                && !n.starts_with('[')
                && n.split(':')
                    .next()
                    .is_some_and(|t| t.chars().all(|c| c.is_ascii_lowercase()))
                && n.parse::<ipnet::IpNet>().is_err()
                && n.parse::<std::net::IpAddr>().is_err()
            {
                // a table (cidr:/path, hash:/path)
                match TableRef::parse(n) {
                    TableRef::Cidr(path) => match self.src.read(&path) {
                        Ok((_, text)) => {
                            for line in text.lines() {
                                let line = line.trim();
                                if line.is_empty() || line.starts_with('#') {
                                    continue;
                                }
                                let key = line.split_whitespace().next().unwrap_or("");
                                entries.push(key.to_owned());
                            }
                        }
                        Err(e) => self.note(parameter, Status::Unsupported, "", format!("{e}: its networks are not trusted (narrower)")),
                    },
                    _ => self.note(parameter, Status::Unsupported, "", format!("`{n}`: only cidr: tables are read here; its networks are not trusted (narrower)")),
                }
                continue;
            }
            let bare = n.replace(['[', ']'], "");
            if bare.parse::<std::net::IpAddr>().is_ok() {
                entries.push(bare);
                continue;
            }
            match bare.parse::<ipnet::IpNet>() {
                Ok(net) if net.trunc() == net => entries.push(net.to_string()),
                Ok(net) => {
                    return Err(ImportError::Invalid(format!(
                        "{parameter}: `{n}` has host bits set (Postfix refuses it too): write {}",
                        net.trunc()
                    )))
                }
                Err(_) => self.note(
                    parameter,
                    Status::Unsupported,
                    "",
                    format!("`{n}` is a host name or pattern: mtad trusts networks only; it is not trusted (narrower)"),
                ),
            }
        }
        Ok(entries)
    }

    /// A domains set's table for a list of table specs: the first one, when it can be
    /// a table; the rest reported.
    fn domain_table(&mut self, parameter: &str, specs: &[String]) -> Option<String> {
        let mut chosen = None;
        for spec in specs {
            if chosen.is_some() {
                self.note(parameter, Status::Unsupported, "", format!("`{spec}`: a domain set takes one table; its domains are not ours here (narrower)"));
                continue;
            }
            let wanted = table_name_for(spec, parameter);
            match self.table(spec, &wanted) {
                Ok(name) => chosen = Some(name),
                Err(why) => self.note(
                    parameter,
                    Status::Unsupported,
                    "",
                    format!("{why}: its domains are not ours here (narrower)"),
                ),
            }
        }
        chosen
    }
}

/// An mtad table name for a Postfix table: its file's name, else the parameter's.
fn table_name_for(spec: &str, parameter: &str) -> String {
    TableRef::parse(spec)
        .path()
        .and_then(|p| Path::new(p).file_stem())
        .map(|s| {
            s.to_string_lossy().replace(
                |c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "_",
            )
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| parameter.to_owned())
}

// ---- aliases, limits ------------------------------------------------------------

impl Translator {
    fn aliases(&mut self) -> Result<(), ImportError> {
        let mut s = String::new();
        let maps = self.list("alias_maps")?;
        let mut done = false;
        for spec in &maps {
            match TableRef::parse(spec) {
                TableRef::Map(path) if !done => match self.src.read(&path) {
                    Ok((_, text)) => {
                        let (clean, dropped, entries) = clean_aliases(&text);
                        if !dropped.is_empty() {
                            self.note(
                                "alias_maps",
                                Status::Approximated,
                                "aliases file=",
                                format!("mtad never runs commands or writes files for an alias; these targets were left out: {}", dropped.join(", ")),
                            );
                        }
                        self.facts.aliases = entries;
                        let name = self.add_file(&path, clean);
                        let _ = writeln!(s, "\naliases file={}   // alias_maps = {spec}", q(&name));
                        done = true;
                        self.claim("alias_maps");
                    }
                    Err(e) => self.note(
                        "alias_maps",
                        Status::Unsupported,
                        "",
                        format!(
                            "{e}: no aliases (their recipients are refused unless they are users)"
                        ),
                    ),
                },
                TableRef::Other(o) if o.starts_with("nis:") => {
                    if self.cf.settings.contains_key("alias_maps") {
                        self.note(
                            "alias_maps",
                            Status::Ignored,
                            "",
                            format!("`{o}`: NIS is not read"),
                        );
                    }
                }
                _ => self.note(
                    "alias_maps",
                    Status::Unsupported,
                    "",
                    format!("`{spec}`: only one aliases file is read"),
                ),
            }
        }
        self.claim("alias_database");
        let maps = self.list("virtual_alias_maps")?;
        // Postfix asks the tables in their order, first match wins: the leading run
        // of map files and inline tables is merged into one virtual(5) file
        let mergeable = maps
            .iter()
            .take_while(|m| matches!(TableRef::parse(m), TableRef::Map(_) | TableRef::Inline(_)))
            .count();
        let first = if mergeable >= 2 {
            self.virtual_alias_chain(&maps[..mergeable], &mut s);
            mergeable
        } else {
            1
        };
        for spec in maps.iter().skip(first) {
            self.note(
                "virtual_alias_maps",
                Status::Unsupported,
                "",
                format!("`{spec}`: not read (mtad reads one virtual table, into which only map files and inline tables before any other kind are merged): its addresses are not rewritten"),
            );
        }
        for spec in maps.iter().take(usize::from(first == 1)) {
            match TableRef::parse(spec) {
                TableRef::Map(path) => match self.src.read(&path) {
                    Ok((_, text)) => {
                        self.facts.virtual_aliases = virtual_entries(&text);
                        let name = self.add_file(&path, text);
                        let _ = writeln!(
                            s,
                            "virtual file={}   // virtual_alias_maps = {spec}",
                            q(&name)
                        );
                        self.claim("virtual_alias_maps");
                    }
                    Err(e) => self.note("virtual_alias_maps", Status::Unsupported, "", e),
                },
                _ => {
                    let wanted = table_name_for(spec, "virtual_alias_maps");
                    match self.table(spec, &wanted) {
                        Ok(name) => {
                            let _ =
                                writeln!(s, "virtual table={}   // virtual_alias_maps", q(&name));
                            self.claim("virtual_alias_maps");
                        }
                        Err(e) => self.note("virtual_alias_maps", Status::Unsupported, "", e),
                    }
                }
            }
        }
        if self.facts.has_virtual {
            let maps = self.list("virtual_mailbox_maps")?;
            if let Some(spec) = maps.first() {
                let wanted = table_name_for(spec, "virtual_mailbox_maps");
                match self.table(spec, &wanted) {
                    Ok(name) => {
                        let transport = self.get("virtual_transport")?;
                        let t = match transport.split_once(':') {
                            Some(("lmtp", rest)) => {
                                let rest = match rest.strip_prefix("unix:") {
                                    Some(p) if !p.starts_with('/') => {
                                        format!("unix:{}/{p}", self.get("queue_directory")?)
                                    }
                                    _ => rest.to_owned(),
                                };
                                Some(format!("lmtp:{rest}"))
                            }
                            _ if transport == "virtual" => None,
                            _ => {
                                self.claim("virtual_transport");
                                None
                            }
                        };
                        let _ = writeln!(
                            s,
                            "virtual-mailboxes domains=\"virtual\" table={}{}   // virtual_mailbox_maps{}",
                            q(&name),
                            t.as_ref()
                                .map(|t| format!(" transport={}", q(t)))
                                .unwrap_or_default(),
                            if t.is_some() {
                                ", virtual_transport"
                            } else {
                                ""
                            }
                        );
                        self.claim("virtual_mailbox_maps");
                    }
                    Err(e) => self.note(
                        "virtual_mailbox_maps",
                        Status::Unsupported,
                        "",
                        format!("{e}: every address in the virtual domains is refused (narrower)"),
                    ),
                }
            }
        }
        self.out.push_str(&s);
        Ok(())
    }

    /// Several `virtual_alias_maps` tables as one virtual(5) file. Postfix asks
    /// every table for one key before it tries the next key (`user@domain` in all
    /// of them, then `@domain`: `maps_find`), so the first table that has a key
    /// answers for it: the merged file is each table's lines in order, without the
    /// keys an earlier table has (a key repeated within one table stays, where the
    /// first one wins as in Postfix).
    fn virtual_alias_chain(&mut self, maps: &[String], s: &mut String) {
        let mut merged = String::from(
            "# virtual_alias_maps: several tables merged in Postfix's order; the first\n\
             # table that has a key answers for it (`mtactl import postfix`)\n",
        );
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut entries = Vec::new();
        let mut read = Vec::new();
        for spec in maps {
            let text = match TableRef::parse(spec) {
                TableRef::Map(path) => match self.src.read(&path) {
                    Ok((_, text)) => text,
                    Err(e) => {
                        self.note("virtual_alias_maps", Status::Unsupported, "", e);
                        continue;
                    }
                },
                TableRef::Inline(pairs) => {
                    pairs.iter().map(|(k, v)| format!("{k} {v}\n")).collect()
                }
                _ => continue, // the caller passes map files and inline tables only
            };
            let _ = writeln!(merged, "\n# {spec}");
            let mut own = std::collections::HashSet::new();
            for (_, line) in super::maincf::logical_lines(&text) {
                let key = line
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                if seen.contains(&key) {
                    continue; // an earlier table answers for it
                }
                own.insert(key);
                merged.push_str(&line);
                merged.push('\n');
            }
            entries.extend(
                virtual_entries(&text)
                    .into_iter()
                    .filter(|(k, _)| !seen.contains(k)),
            );
            seen.extend(own);
            read.push(spec.as_str());
        }
        if read.is_empty() {
            return;
        }
        self.facts.virtual_aliases = entries;
        let name = self.add_file("virtual_alias_maps", merged);
        let _ = writeln!(
            s,
            "virtual file={}   // virtual_alias_maps = {} (merged: the first table with a key answers)",
            q(&name),
            read.join(", ")
        );
        self.note(
            "virtual_alias_maps",
            Status::Translated,
            "virtual file=",
            format!(
                "{} tables merged into `{name}` in Postfix's order (the first table that has a key answers for it)",
                read.len()
            ),
        );
    }

    fn limits(&mut self) -> Result<(), ImportError> {
        let mut limits = String::new();
        let size: u64 = self
            .get("message_size_limit")?
            .parse()
            .unwrap_or(10_240_000);
        if size > 0 {
            let _ = writeln!(limits, "    message-size {size}   // message_size_limit");
        } else {
            self.note(
                "message_size_limit",
                Status::Approximated,
                "limits { message-size }",
                "0 (no limit) has no mtad equivalent: mtad's default, 10M, applies",
            );
        }
        self.claim("message_size_limit");
        let numbers: &[(&str, &str)] = &[
            ("smtpd_recipient_limit", "recipients"),
            ("smtpd_hard_error_limit", "error-limit"),
            ("smtpd_junk_command_limit", "junk-commands"),
            ("smtpd_client_connection_count_limit", "connections-per-ip"),
            ("hopcount_limit", "hop-count"),
        ];
        for (p, k) in numbers {
            if self.params.is_set(p) {
                let v = self.get(p)?;
                match v.parse::<u64>() {
                    Ok(n) if n > 0 => {
                        let _ = writeln!(limits, "    {k} {n}   // {p}");
                        self.claim(p);
                    }
                    _ => self.note(
                        p,
                        Status::Approximated,
                        "",
                        format!("`{v}`: mtad's default applies"),
                    ),
                }
            }
        }
        if self.params.is_set("header_size_limit") {
            let v = self.get("header_size_limit")?;
            let _ = writeln!(
                limits,
                "    header-size {}   // header_size_limit",
                v.parse::<u64>().unwrap_or(102_400).max(1024)
            );
            self.claim("header_size_limit");
        }
        if self.params.is_set("smtpd_timeout") {
            let v = self.get("smtpd_timeout")?;
            let _ = writeln!(
                limits,
                "    idle-timeout {}   // smtpd_timeout",
                q(&duration(&v))
            );
            self.claim("smtpd_timeout");
        }
        let mut s = format!("\nlimits {{\n{limits}}}\n");
        // anvil
        let unit = duration(&self.get("anvil_rate_time_unit")?);
        let mut rates = String::new();
        for (p, k) in [
            ("smtpd_client_connection_rate_limit", "connections"),
            ("smtpd_client_message_rate_limit", "messages"),
            ("smtpd_client_recipient_rate_limit", "recipients"),
            ("smtpd_client_auth_rate_limit", "auth"),
        ] {
            let v: u64 = self.get(p)?.parse().unwrap_or(0);
            if v > 0 {
                let _ = writeln!(rates, "    {k} {v} per={}   // {p}", q(&unit));
                self.claim(p);
            }
        }
        if !rates.is_empty() {
            self.claim("anvil_rate_time_unit");
            let exceptions = self.list("smtpd_client_event_limit_exceptions")?;
            let mynetworks = self.list("mynetworks").unwrap_or_default();
            let exempt =
                if exceptions == mynetworks
                    || !self.params.is_set("smtpd_client_event_limit_exceptions")
                        && !self
                            .params
                            .is_set("smtpd_client_connection_limit_exceptions")
                {
                    "mynetworks".to_owned()
                } else {
                    let entries =
                        self.networks_entries("smtpd_client_event_limit_exceptions", &exceptions)?;
                    self.networks.push(format!(
                    "networks \"rate-limit-exceptions\"{}   // smtpd_client_event_limit_exceptions",
                    entries.iter().map(|e| format!(" {}", q(e))).collect::<String>()
                ));
                    self.claim("smtpd_client_event_limit_exceptions");
                    "rate-limit-exceptions".to_owned()
                };
            let _ = writeln!(
                rates,
                "    exempt {}   // smtpd_client_event_limit_exceptions",
                q(&exempt)
            );
            let _ = write!(s, "\nrate-limits {{\n{rates}}}\n");
        }
        // delivery
        let mut d = String::new();
        for (p, k) in [
            ("maximal_queue_lifetime", "lifetime"),
            ("minimal_backoff_time", "backoff-min"),
            ("maximal_backoff_time", "backoff-max"),
            ("delay_warning_time", "delay-warning"),
            ("smtp_connect_timeout", "connect-timeout"),
        ] {
            if self.params.is_set(p) {
                let v = self.get(p)?;
                if v.trim_start_matches('0').is_empty()
                    || v.starts_with('0')
                        && v.trim_start_matches('0')
                            .chars()
                            .all(|c| c.is_ascii_alphabetic())
                {
                    continue; // 0: off, mtad's default
                }
                let _ = writeln!(d, "    {k} {}   // {p}", q(&duration_days(&v, p)));
                self.claim(p);
            }
        }
        for (p, k) in [
            ("default_destination_concurrency_limit", "concurrency"),
            ("smtp_destination_concurrency_limit", "concurrency"),
            ("default_destination_recipient_limit", "recipients"),
        ] {
            if self.params.is_set(p)
                && let Ok(n) = self.get(p)?.parse::<u64>()
            {
                if n > 0 && !d.contains(&format!("    {k} ")) {
                    let _ = writeln!(d, "    {k} {n}   // {p}");
                }
                self.claim(p);
            }
        }
        let fallback = self.list("smtp_fallback_relay")?;
        if !fallback.is_empty() {
            let relays: Vec<String> = fallback.iter().map(|f| nexthop_transport(f)).collect();
            let _ = writeln!(
                d,
                "    fallback-relay {}   // smtp_fallback_relay",
                relays.iter().map(|r| q(r)).collect::<Vec<_>>().join(" ")
            );
            self.claim("smtp_fallback_relay");
            self.claim("fallback_relay");
        }
        let level = self.get("smtp_tls_security_level")?;
        let level = if level.is_empty() {
            if self.params.flag("smtp_enforce_tls")? {
                "encrypt".to_owned()
            } else if self.params.flag("smtp_use_tls")? {
                "may".to_owned()
            } else {
                String::new()
            }
        } else {
            level
        };
        if self.params.is_set("smtp_tls_security_level")
            || self.params.is_set("smtp_use_tls")
            || self.params.is_set("smtp_enforce_tls")
        {
            let mapped = match level.as_str() {
                "" | "none" => Some("none"),
                "may" => Some("opportunistic"),
                "encrypt" => Some("required"),
                "verify" => Some("verify"),
                "secure" => Some("secure"),
                "dane" => Some("dane"),
                "dane-only" => Some("dane-only"),
                _ => None,
            };
            match mapped {
                Some(m) => {
                    let _ = writeln!(d, "    tls {}   // smtp_tls_security_level = {level}", q(m));
                    self.claim("smtp_tls_security_level");
                    self.claim("smtp_use_tls");
                    self.claim("smtp_enforce_tls");
                }
                None => self.note(
                    "smtp_tls_security_level",
                    Status::Unsupported,
                    "delivery { tls \"required\" }",
                    format!("`{level}` has no mtad equivalent: TLS is required instead"),
                ),
            }
            if mapped.is_none() {
                let _ = writeln!(
                    d,
                    "    tls \"required\"   // smtp_tls_security_level = {level} (not offered: see the report)"
                );
            }
        }
        if self.params.is_set("smtp_tls_CAfile") {
            let f = self.get("smtp_tls_CAfile")?;
            if let Some(found) = self.src.locate(&f) {
                let _ = writeln!(
                    d,
                    "    tls-ca-file {}   // smtp_tls_CAfile",
                    q(&found.display().to_string())
                );
                self.claim("smtp_tls_CAfile");
            } else {
                self.note(
                    "smtp_tls_CAfile",
                    Status::Unsupported,
                    "",
                    format!("{f} is not there"),
                );
            }
        }
        if self.params.is_set("local_recipient_maps") {
            let maps = self.list("local_recipient_maps")?;
            let aliases = self.list("alias_maps")?;
            let mut sources: Vec<String> = Vec::new();
            let mut ok = true;
            for m in &maps {
                let m = m.strip_prefix("proxy:").unwrap_or(m);
                if m == "unix:passwd.byname" {
                    sources.push("passwd".into());
                } else if aliases
                    .iter()
                    .any(|a| a.strip_prefix("proxy:").unwrap_or(a) == m)
                {
                    if !sources.iter().any(|s| s == "aliases") {
                        sources.push("aliases".into());
                    }
                } else {
                    let wanted = table_name_for(m, "local_recipient_maps");
                    match self.table(m, &wanted) {
                        Ok(name) => sources.push(name),
                        Err(why) => {
                            ok = false;
                            self.note(
                                "local_recipient_maps",
                                Status::Unsupported,
                                "",
                                format!(
                                    "{why}: its users are unknown here (refused at RCPT: narrower)"
                                ),
                            );
                        }
                    }
                }
            }
            if maps.is_empty() {
                sources.push("any".into());
            }
            let _ = writeln!(
                d,
                "    local-recipients {}   // local_recipient_maps",
                sources.iter().map(|s| q(s)).collect::<Vec<_>>().join(" ")
            );
            if ok {
                self.note(
                    "local_recipient_maps",
                    Status::Translated,
                    "delivery { local-recipients }",
                    "",
                );
            }
        }
        if self.params.is_set("virtual_mailbox_base") && self.facts.has_virtual {
            let _ = writeln!(
                d,
                "    local-base {}   // virtual_mailbox_base",
                q(&self.get("virtual_mailbox_base")?)
            );
            self.claim("virtual_mailbox_base");
        }
        if !d.is_empty() {
            let _ = write!(s, "\ndelivery {{\n{d}}}\n");
        }
        self.out.push_str(&s);
        Ok(())
    }
}

/// A Postfix time value (`300s`, `5d`, `60`) as a humantime duration.
fn duration(v: &str) -> String {
    let v = v.trim();
    if v.chars().all(|c| c.is_ascii_digit()) {
        format!("{v}s")
    } else {
        v.to_owned()
    }
}

/// As [`duration`], but a bare number means days for the queue lifetimes and hours
/// for delay_warning_time (their Postfix units).
fn duration_days(v: &str, parameter: &str) -> String {
    let v = v.trim();
    if v.chars().all(|c| c.is_ascii_digit()) {
        match parameter {
            "maximal_queue_lifetime" | "bounce_queue_lifetime" => format!("{v}d"),
            "delay_warning_time" => format!("{v}h"),
            _ => format!("{v}s"),
        }
    } else {
        v.to_owned()
    }
}

/// A relayhost-style next hop (`[host]:port`, `host`) as an mtad transport.
pub(super) fn nexthop_transport(nexthop: &str) -> String {
    let n = nexthop.trim();
    let n = n
        .strip_prefix("smtp:")
        .or_else(|| n.strip_prefix("relay:"))
        .unwrap_or(n);
    let n = n.strip_prefix("inet:").unwrap_or(n);
    format!("smtp:{n}")
}

/// A virtual(5) table's entries (key lowercased, value as written), first one of a
/// repeated key only: what the generated suite expects of them.
fn virtual_entries(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (_, line) in super::maincf::logical_lines(text) {
        let Some((key, value)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        if !out.iter().any(|(k, _)| *k == key) {
            out.push((key, value.trim().to_owned()));
        }
    }
    out
}

/// aliases(5) text without the targets mtad refuses (commands, files, includes): the
/// text, what was left out, and the aliases kept (name, first target).
fn clean_aliases(text: &str) -> (String, Vec<String>, Vec<(String, String)>) {
    let mut out = String::from(
        "# aliases(5), from Postfix's alias_maps; mtad reads it as it is (no newaliases)\n",
    );
    let mut dropped = Vec::new();
    let mut kept = Vec::new();
    for (_, line) in super::maincf::logical_lines(text) {
        let Some((name, targets)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        let mut good = Vec::new();
        for t in targets.split(',') {
            let t = t.trim();
            if t.is_empty() {
                continue;
            }
            if t.starts_with('|')
                || t.starts_with('/')
                || t.starts_with(":include:")
                || t.starts_with("\"|")
                || t.starts_with("\"/")
            {
                dropped.push(format!("{name}: {t}"));
            } else {
                good.push(t.to_owned());
            }
        }
        if good.is_empty() {
            continue;
        }
        kept.push((name.to_owned(), good[0].clone()));
        let _ = writeln!(out, "{name}: {}", good.join(", "));
    }
    (out, dropped, kept)
}

// ---- restrictions -----------------------------------------------------------------

/// Whether a restriction name takes the next element as its argument.
fn takes_argument(name: &str) -> bool {
    name.starts_with("check_")
        && (name.ends_with("_access") || name == "check_policy_service" || name.ends_with("_maps"))
        || matches!(
            name,
            "reject_rbl_client"
                | "reject_rhsbl_client"
                | "reject_rhsbl_sender"
                | "reject_rhsbl_helo"
                | "reject_rhsbl_recipient"
                | "reject_rhsbl_reverse_client"
                | "permit_dnswl_client"
                | "permit_rhswl_client"
                | "sleep"
        )
}

/// The lists evaluated at RCPT, in Postfix's order.
fn rcpt_lists(p: &Params) -> Vec<&'static str> {
    let relay_first = p
        .flag("smtpd_relay_before_recipient_restrictions")
        .unwrap_or(true);
    let mut v = vec![
        "smtpd_client_restrictions",
        "smtpd_helo_restrictions",
        "smtpd_sender_restrictions",
    ];
    if relay_first {
        v.extend(["smtpd_relay_restrictions", "smtpd_recipient_restrictions"]);
    } else {
        v.extend(["smtpd_recipient_restrictions", "smtpd_relay_restrictions"]);
    }
    v
}

/// What a listener's restriction rules depend on (listeners alike share one block).
#[derive(Clone, PartialEq, Eq, Debug)]
struct Key {
    lists: Vec<(String, String)>,
    mynetworks: Vec<String>,
}

impl Translator {
    fn rcpt_stage(&mut self, listeners: &[Smtpd]) -> Result<(), ImportError> {
        for p in [
            "smtpd_client_restrictions",
            "smtpd_helo_restrictions",
            "smtpd_sender_restrictions",
            "smtpd_relay_restrictions",
            "smtpd_recipient_restrictions",
            "smtpd_restriction_classes",
            "smtpd_relay_before_recipient_restrictions",
            "smtpd_delay_reject",
            "parent_domain_matches_subdomains",
        ] {
            self.claim(p);
        }
        if !self.params.flag("smtpd_delay_reject")? {
            self.note("smtpd_delay_reject", Status::Approximated, "", "`no`: client, HELO and sender restrictions are still decided at RCPT (the same verdicts, one command later)");
        }
        // Postfix refuses to start unless the lists can refuse relaying
        for l in listeners {
            let mut tokens = Vec::new();
            for name in ["smtpd_relay_restrictions", "smtpd_recipient_restrictions"] {
                tokens.extend(l.params.list(name)?);
            }
            let working = [
                "reject_unauth_destination",
                "defer_unauth_destination",
                "reject",
                "defer",
                "defer_if_permit",
                "check_relay_domains",
            ];
            if !tokens.iter().any(|t| working.contains(&t.as_str())) {
                return Err(ImportError::Invalid(format!(
                    "listener {} (master.cf:{}): in parameter smtpd_relay_restrictions or smtpd_recipient_restrictions, specify at least one working instance of: reject_unauth_destination, defer_unauth_destination, reject, defer, defer_if_permit or check_relay_domains (Postfix refuses to start with this configuration too)",
                    l.name, l.line
                )));
            }
        }
        // group listeners by what their rules depend on
        let mut groups: Vec<(Key, Vec<&Smtpd>)> = Vec::new();
        for l in listeners {
            let mut lists = Vec::new();
            for name in rcpt_lists(&l.params) {
                lists.push((name.to_owned(), l.params.get(name)?));
            }
            let key = Key {
                lists,
                mynetworks: l.params.list("mynetworks").unwrap_or_default(),
            };
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(l),
                None => groups.push((key, vec![l])),
            }
        }
        // the group of the first listener (the MX, usually) goes last, unconditioned
        let main = groups.remove(0);
        let mut s = String::from(
            "\n// Postfix's restriction lists, evaluated at RCPT (smtpd_delay_reject = yes) in\n// Postfix's order; in an mtad stage the first rule that decides wins.\nstage \"rcpt\" {\n",
        );
        let main_mynetworks = self.params.list("mynetworks").unwrap_or_default();
        self.postscreen_dnsbl(listeners, &mut s);
        for (key, members) in &groups {
            for l in members {
                let set = if key.mynetworks != main_mynetworks {
                    let name = format!("mynetworks-{}", l.name);
                    let entries = self.networks_entries("mynetworks", &key.mynetworks)?;
                    self.networks.push(format!(
                        "networks {}{}   // master.cf:{} {} -o mynetworks",
                        q(&name),
                        entries
                            .iter()
                            .map(|e| format!(" {}", q(e)))
                            .collect::<String>(),
                        l.line,
                        l.service
                    ));
                    name
                } else {
                    "mynetworks".to_owned()
                };
                let _ = writeln!(
                    s,
                    "    // listener {} (master.cf:{} {} with its -o overrides)",
                    q(&l.name),
                    l.line,
                    l.service
                );
                let (_, rules) =
                    self.listener_rules(&l.params, &set, &[Cond::s("listener", l.name.clone())])?;
                self.facts
                    .listener_rules
                    .push((l.name.clone(), rules.clone()));
                write_rules(&mut s, &rules, "    ");
            }
        }
        let (_, members) = &main;
        let names: Vec<&str> = members.iter().map(|l| l.name.as_str()).collect();
        if !groups.is_empty() {
            let _ = writeln!(s, "    // every other listener ({})", names.join(", "));
        }
        let (lists, rules) = self.listener_rules(&members[0].params, "mynetworks", &[])?;
        self.facts.main_lists = lists;
        self.facts.main_rules = rules.clone();
        self.facts.main_listener = members[0].name.clone();
        write_rules(&mut s, &rules, "    ");
        s.push_str("}\n");
        self.out.push_str(&s);
        Ok(())
    }

    /// postscreen's DNS lists (`postscreen_dnsbl_sites`, `_threshold`) on the listeners
    /// that run it, when `postscreen_dnsbl_action` is `enforce` (550 to every RCPT) or
    /// `drop` (521): a `dnsbl` with the same sites and weights, and a refusal first in
    /// the rcpt stage for those listeners, except for clients of `mynetworks`
    /// (postscreen_access_list's default `permit_mynetworks`). With `ignore`, its
    /// default, postscreen's lists decide nothing, and nothing is written.
    fn postscreen_dnsbl(&mut self, listeners: &[Smtpd], s: &mut String) {
        for name in [
            "postscreen_dnsbl_sites",
            "postscreen_dnsbl_threshold",
            "postscreen_dnsbl_action",
            "postscreen_access_list",
        ] {
            self.claim(name);
        }
        for l in listeners.iter().filter(|l| l.postscreen) {
            let p = &l.params;
            let code = match p
                .get("postscreen_dnsbl_action")
                .unwrap_or_default()
                .as_str()
            {
                "enforce" => 550,
                "drop" => 521,
                _ => continue,
            };
            let sites = p.list("postscreen_dnsbl_sites").unwrap_or_default();
            if sites.is_empty() {
                continue;
            }
            let threshold = p.get("postscreen_dnsbl_threshold").unwrap_or_default();
            let threshold = threshold.trim().parse::<i64>().unwrap_or(1);
            let access = p.list("postscreen_access_list").unwrap_or_default();
            let exempt = access.iter().any(|a| a == "permit_mynetworks");
            if access.iter().any(|a| a != "permit_mynetworks") {
                self.note(
                    "postscreen_access_list",
                    Status::Approximated,
                    "",
                    "only `permit_mynetworks` is carried over: postscreen's DNS lists are asked for every other client (narrower)",
                );
            }
            let node = format!(
                "dnsbl \"postscreen\"{} threshold={threshold}   // postscreen_dnsbl_sites, postscreen_dnsbl_threshold",
                sites
                    .iter()
                    .map(|x| format!(" {}", q(x)))
                    .collect::<String>()
            );
            self.dnsbls.insert("postscreen".into(), node);
            let mut conds = vec![
                Cond::s("dnsbl", "postscreen"),
                Cond::s("listener", l.name.clone()),
            ];
            if exempt {
                conds.push(Cond::s("client", "mynetworks").negate());
            }
            let rule = Rule::new(
                Action::Reject {
                    code,
                    enhanced: "5.7.1".into(),
                    text: "Service unavailable; client blocked using postscreen's DNS lists".into(),
                },
                conds,
                format!(
                    "listener {} (master.cf:{} postscreen): postscreen_dnsbl_action = {}",
                    q(&l.name),
                    l.line,
                    if code == 550 { "enforce" } else { "drop" }
                ),
            );
            write_rules(s, &[rule], "    ");
            self.note(
                "postscreen_dnsbl_action",
                Status::Approximated,
                "dnsbl \"postscreen\" + reject dnsbl=\"postscreen\"",
                "refused at RCPT before the restriction lists (postscreen refuses every RCPT with `enforce`; with `drop` it hangs up after the greeting: mtad refuses with 521 at RCPT instead); postscreen's cache of results is not kept",
            );
        }
    }

    fn listener_rules(
        &mut self,
        p: &Params,
        mynetworks: &str,
        extra: &[Cond],
    ) -> Result<(Vec<List>, Vec<Rule>), ImportError> {
        let mut lists = Vec::new();
        for name in rcpt_lists(p) {
            let tokens = p.list(name)?;
            let items = self.items(&tokens, name, mynetworks, p, 0);
            lists.push(List {
                parameter: name.to_owned(),
                items,
            });
        }
        let mut problems = Vec::new();
        let rules = join(&lists, extra, true, &mut problems);
        for pr in problems {
            self.join_problems.push((pr.parameter.clone(), pr));
        }
        Ok((lists, rules))
    }

    /// One restriction list's elements as items.
    fn items(
        &mut self,
        tokens: &[String],
        parameter: &str,
        mynetworks: &str,
        p: &Params,
        depth: usize,
    ) -> Vec<Item> {
        let mut items = Vec::new();
        let mut i = 0;
        let mut warn = false;
        while i < tokens.len() {
            let token = tokens[i].clone();
            i += 1;
            // `{ name args }` groups (check_policy_service { inet:..., timeout=10s })
            let parts = split_list(&token);
            let (name, mut arg) = match parts.as_slice() {
                [n, rest @ ..] if parts.len() > 1 && token.contains(',') || token.contains(' ') => {
                    (n.clone(), Some(rest.join(",")))
                }
                _ => (token.clone(), None),
            };
            let name_lc = name.to_ascii_lowercase();
            if arg.is_none() && takes_argument(&name_lc) {
                arg = tokens.get(i).cloned();
                i += 1;
            }
            if name_lc == "warn_if_reject" {
                warn = true;
                continue;
            }
            let mut item = self.restriction(
                &name_lc,
                arg.as_deref(),
                parameter,
                mynetworks,
                p,
                depth,
                warn,
            );
            if warn {
                mark_warn(&mut item);
                warn = false;
            }
            items.extend(item);
        }
        items
    }

    fn unsupported(&mut self, parameter: &str, what: &str, why: &str) -> Vec<Item> {
        self.note(
            parameter,
            Status::Unsupported,
            "defer 450 4.7.1 where it stood",
            format!("`{what}`: {why}"),
        );
        vec![Item::Decide {
            rule: Rule::new(
                Action::Unsupported(what.to_owned()),
                vec![],
                format!("{what} (NOT TRANSLATED: see the report)"),
            ),
            may_permit: false,
        }]
    }

    fn approximated(&mut self, parameter: &str, what: &str, why: &str) -> Vec<Item> {
        self.note(
            parameter,
            Status::Approximated,
            "",
            format!("`{what}`: {why}"),
        );
        Vec::new()
    }

    #[allow(clippy::too_many_arguments)]
    fn restriction(
        &mut self,
        name: &str,
        arg: Option<&str>,
        parameter: &str,
        mynetworks: &str,
        p: &Params,
        depth: usize,
        warn: bool,
    ) -> Vec<Item> {
        let comment = match arg {
            Some(a) => format!("{name} {a}"),
            None => name.to_owned(),
        };
        let decide = |action: Action, conds: Vec<Cond>| {
            vec![Item::Decide {
                rule: Rule::new(action, conds, comment.clone()),
                may_permit: false,
            }]
        };
        let relay_code: u16 = p
            .get("relay_domains_reject_code")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(554);
        let non_fqdn: u16 = p
            .get("non_fqdn_reject_code")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(504);
        let invalid_hostname: u16 = p
            .get("invalid_hostname_reject_code")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(501);
        let reject = |code: u16, text: &str| Action::Reject {
            code,
            enhanced: if code >= 500 { "5.7.1" } else { "4.7.1" }.to_owned(),
            text: text.to_owned(),
        };
        match name {
            "permit" => vec![Item::Permit { conds: vec![], comment }],
            "reject" => decide(reject(p.get("reject_code").ok().and_then(|c| c.parse().ok()).unwrap_or(554), "Access denied"), vec![]),
            "defer" => decide(Action::Defer { code: 450, enhanced: "4.7.1".into(), text: "Try again later".into() }, vec![]),
            "permit_mynetworks" => vec![Item::Permit { conds: vec![Cond::s("client", mynetworks)], comment }],
            "permit_sasl_authenticated" => vec![Item::Permit { conds: vec![Cond::b("authenticated", true)], comment }],
            "permit_auth_destination" => vec![Item::Permit { conds: vec![Cond::s("rcpt-domain", "destinations")], comment }],
            "reject_unauth_destination" => decide(
                Action::Reject { code: relay_code, enhanced: "5.7.1".into(), text: "Relay access denied".into() },
                vec![Cond::s("rcpt-domain", "destinations").negate()],
            ),
            "defer_unauth_destination" => decide(
                Action::Defer { code: 450, enhanced: "4.7.1".into(), text: "Relay access denied".into() },
                vec![Cond::s("rcpt-domain", "destinations").negate()],
            ),
            "reject_non_fqdn_recipient" => {
                self.note(parameter, Status::Approximated, "", "`reject_non_fqdn_recipient`: a bare name gets the origin first in mtad, so it is never refused as not fully qualified");
                decide(
                    Action::Reject { code: non_fqdn, enhanced: "5.5.2".into(), text: "Recipient address rejected: need fully-qualified address".into() },
                    vec![Cond::s("rcpt-matches", "@[^.@]+$")],
                )
            }
            "reject_non_fqdn_sender" => {
                self.note(parameter, Status::Approximated, "", "`reject_non_fqdn_sender`: a bare name gets the origin first in mtad, so it is never refused as not fully qualified");
                decide(
                    Action::Reject { code: non_fqdn, enhanced: "5.5.2".into(), text: "Sender address rejected: need fully-qualified address".into() },
                    vec![Cond::s("sender-matches", "@[^.@]+$")],
                )
            }
            "reject_non_fqdn_helo_hostname" | "reject_non_fqdn_hostname" => decide(
                Action::Reject { code: non_fqdn, enhanced: "5.5.2".into(), text: "Helo command rejected: need fully-qualified hostname".into() },
                vec![Cond::s("helo-matches", "^[^.\\[]+$")],
            ),
            "reject_invalid_helo_hostname" | "reject_invalid_hostname" => {
                self.note(parameter, Status::Approximated, "", "`reject_invalid_helo_hostname`: checked with a regular expression for RFC 1123 names and address literals");
                decide(
                    Action::Reject { code: invalid_hostname, enhanced: "5.5.2".into(), text: "Helo command rejected: Invalid name".into() },
                    vec![Cond::s("helo-matches", "^(\\[[0-9a-f:.IPv6]+\\]|[a-z0-9_]([-a-z0-9_]*[a-z0-9_])?(\\.[a-z0-9_]([-a-z0-9_]*[a-z0-9_])?)*\\.?)$").negate()],
                )
            }
            "reject_unlisted_recipient" | "check_recipient_maps" => {
                self.note(parameter, Status::Translated, "(built in)", format!("`{name}`: mtad refuses unknown local and virtual recipients at RCPT by itself"));
                Vec::new()
            }
            "reject_unauth_pipelining" => self.approximated(parameter, name, "mtad reads pipelined commands in order and answers each; clients that talk early are not refused"),
            "sleep" => self.approximated(parameter, &comment, "mtad does not pause sessions"),
            "permit_tls_clientcerts" | "permit_tls_all_clientcerts" | "permit_mx_backup" | "permit_inet_interfaces" | "permit_naked_ip_address" | "permit_dnswl_client" | "permit_rhswl_client" => {
                self.approximated(parameter, &comment, "not translated; as a permit, leaving it out only refuses more (narrower)")
            }
            "reject_rbl_client" | "reject_rhsbl_sender" | "reject_rhsbl_helo" => {
                let Some(zone) = arg else {
                    return self.unsupported(parameter, name, "needs a DNS list");
                };
                let lookup = match name {
                    "reject_rhsbl_sender" => " lookup=\"sender-domain\"",
                    "reject_rhsbl_helo" => " lookup=\"helo\"",
                    _ => "",
                };
                let zone_name = zone.split('=').next().unwrap_or(zone).to_owned();
                let dnsbl = format!("{}{}", zone_name, if lookup.is_empty() { "" } else if name == "reject_rhsbl_helo" { "-helo" } else { "-sender" });
                self.dnsbls.insert(dnsbl.clone(), format!("dnsbl {} {}{lookup}   // {parameter}: {name}", q(&dnsbl), q(zone)));
                decide(Action::RejectDnsbl(dnsbl), vec![])
            }
            "check_policy_service" => {
                let Some(spec) = arg else {
                    return self.unsupported(parameter, name, "needs a service");
                };
                let parts = split_list(spec);
                let Some(address) = parts.first().cloned() else {
                    return self.unsupported(parameter, name, "needs a service");
                };
                let address = match address.split_once(':') {
                    Some(("unix", path)) if !path.starts_with('/') => format!("unix:{}/{path}", p.get("queue_directory").unwrap_or_default()),
                    Some(("inet" | "unix", _)) => address.clone(),
                    _ if !address.contains(':') => format!("unix:{}/{address}", p.get("queue_directory").unwrap_or_default()),
                    _ => format!("inet:{address}"),
                };
                let mut props = String::new();
                let timeout = parts.iter().find_map(|x| x.strip_prefix("timeout=")).map(str::to_owned).or_else(|| p.is_set("smtpd_policy_service_timeout").then(|| p.get("smtpd_policy_service_timeout").unwrap_or_default()));
                if let Some(t) = timeout {
                    let _ = write!(props, " timeout={}", q(&duration(&t)));
                }
                let default_action = parts.iter().find_map(|x| x.strip_prefix("default_action=")).map(str::to_owned).or_else(|| p.is_set("smtpd_policy_service_default_action").then(|| p.get("smtpd_policy_service_default_action").unwrap_or_default()));
                if let Some(a) = default_action {
                    let _ = write!(props, " default-action={}", q(&a));
                }
                let base = address.rsplit(['/', ':']).next().unwrap_or("policy");
                let base = if base.chars().all(|c| c.is_ascii_digit()) { format!("policy-{base}") } else { base.to_owned() };
                let key = format!("policy {address}");
                let pname = match self.policies.get(&key) {
                    Some(node) => node.split('"').nth(1).unwrap_or(&base).to_owned(),
                    None => {
                        self.policies.insert(key, format!("policy-service {} address={}{props}   // check_policy_service {spec}", q(&base), q(&address)));
                        base
                    }
                };
                vec![Item::Decide {
                    rule: Rule::new(Action::CheckPolicyService(pname), vec![], comment),
                    may_permit: true,
                }]
            }
            "check_client_access" | "check_helo_access" | "check_sender_access" | "check_recipient_access" => {
                let Some(spec) = arg else {
                    return self.unsupported(parameter, name, "needs a table");
                };
                let subject = match name {
                    "check_client_access" => Subject::Client,
                    "check_helo_access" => Subject::Helo,
                    "check_sender_access" => Subject::Sender,
                    _ => Subject::Recipient,
                };
                match self.access_items(spec, subject, parameter, mynetworks, p, depth, warn) {
                    Ok(items) => {
                        self.note(parameter, Status::Translated, "rules, one per table entry", format!("`{name} {spec}`: the table's entries are written out as rules; edit them there (the table is no longer read)"));
                        vec![Item::Many(items)]
                    }
                    Err(why) => self.unsupported(parameter, &comment, &why),
                }
            }
            "reject_authenticated_sender_login_mismatch" => {
                let maps = p.list("smtpd_sender_login_maps").unwrap_or_default();
                let Some(spec) = maps.first().cloned() else {
                    return self.unsupported(parameter, name, "smtpd_sender_login_maps is not set");
                };
                let wanted = table_name_for(&spec, "smtpd_sender_login_maps");
                match self.table(&spec, &wanted) {
                    Ok(t) => {
                        self.claim("smtpd_sender_login_maps");
                        decide(
                            Action::Reject { code: 553, enhanced: "5.7.1".into(), text: "Sender address rejected: not owned by user".into() },
                            vec![Cond::b("authenticated", true), Cond::s("sender-login", t).negate()],
                        )
                    }
                    Err(why) => self.unsupported(parameter, name, &why),
                }
            }
            class if self.classes.contains(class) => {
                if depth >= MAX_CLASS_DEPTH {
                    return self.unsupported(parameter, class, "restriction classes nest too deep (a loop?)");
                }
                let tokens = match p.list(class) {
                    Ok(t) => t,
                    Err(e) => return self.unsupported(parameter, class, &e.to_string()),
                };
                self.claim(class);
                vec![Item::Many(self.items(&tokens, parameter, mynetworks, p, depth + 1))]
            }
            other => {
                let why = match other {
                    "reject_unknown_client_hostname" | "reject_unknown_client" | "reject_unknown_reverse_client_hostname" => {
                        "mtad checks the client's reverse DNS only as mail authentication (`iprev=`, at the data stage), not at RCPT where Postfix refuses (450, or unknown_client_reject_code); replace it with a data rule on iprev, a hook, or take it out knowingly"
                    }
                    "reject_unknown_sender_domain" | "reject_unknown_recipient_domain" | "reject_unknown_helo_hostname" | "reject_unknown_hostname" => {
                        "mtad's rules have no check that a domain or HELO name has DNS records (A, AAAA or MX; Postfix: 450 on a temporary DNS error, else unknown_address_reject_code or unknown_hostname_reject_code); replace it with a hook or take it out knowingly"
                    }
                    _ if other.starts_with("reject_unverified_") => {
                        "mtad does not verify addresses by probing the next hop (Postfix's verify service)"
                    }
                    _ if other.ends_with("_a_access") || other.ends_with("_mx_access") || other.ends_with("_ns_access") => {
                        "needs the DNS records of a name as table keys at RCPT, which mtad's rules do not look up; replace it with a hook or take it out knowingly"
                    }
                    _ => "mtad has no equivalent the importer knows",
                };
                self.unsupported(parameter, &comment, why)
            }
        }
    }

    /// An access(5) table's entries, as items in Postfix's lookup order (pattern
    /// tables: their lines in order). Postfix stops at the first entry that matches,
    /// whatever it says, so an entry applies only where no earlier entry matched that
    /// does not decide by itself in mtad (`DUNNO`, a restriction class, a refusal
    /// under `warn_if_reject`): those entries' conditions are negated on the later
    /// ones. An OK or a refusal needs no such guard: its own rule decides first (or,
    /// as a permit in an earlier list, guards the rest of the list).
    #[allow(clippy::too_many_arguments)]
    fn access_items(
        &mut self,
        spec: &str,
        subject: Subject,
        parameter: &str,
        mynetworks: &str,
        p: &Params,
        depth: usize,
        warn: bool,
    ) -> Result<Vec<Item>, String> {
        let subdomains = p
            .list("parent_domain_matches_subdomains")
            .unwrap_or_default()
            .iter()
            .any(|x| x == "smtpd_access_maps");
        // (the entry's own condition, if any; its result; the comment above its rules)
        let mut entries: Vec<(Option<Cond>, String, String)> = Vec::new();
        let mut keyed: Vec<(u32, usize, String, Cond, String)> = Vec::new();
        match TableRef::parse(spec) {
            TableRef::Map(path) => {
                let (_, text) = self.src.read(&path)?;
                let table = crate::lookup::parse_map(&text).map_err(|e| table_errors(&path, &e))?;
                for (key, value) in table.map_entries() {
                    let (rank, len, cond) = map_key(key, subject, subdomains)?;
                    keyed.push((rank, len, key.to_owned(), cond, value.to_owned()));
                }
            }
            TableRef::Inline(pairs) => {
                for (key, value) in pairs {
                    let (rank, len, cond) = map_key(&key, subject, subdomains)?;
                    keyed.push((rank, len, key, cond, value));
                }
            }
            TableRef::Cidr(path) if subject == Subject::Client => {
                let (_, text) = self.src.read(&path)?;
                crate::lookup::parse_cidr(&text).map_err(|e| table_errors(&path, &e))?;
                for (n, (_, line)) in super::maincf::logical_lines(&text).into_iter().enumerate() {
                    let (key, value) = line
                        .split_once(char::is_whitespace)
                        .ok_or("a cidr line without a result")?;
                    if key == "if" || key == "endif" {
                        return Err(format!(
                            "{path}: if/endif blocks are not written out as rules"
                        ));
                    }
                    let (neg, net) = match key.strip_prefix('!') {
                        Some(n) => (true, n),
                        None => (false, key),
                    };
                    let net = net.trim_start_matches('[').replace(']', "");
                    let mut cond = Cond::s("client", net);
                    if neg {
                        cond = cond.negate();
                    }
                    keyed.push((0, n, key.to_owned(), cond, value.trim().to_owned()));
                }
            }
            TableRef::Static(v) => {
                entries.push((None, v.clone(), format!("{spec}: {v}")));
            }
            TableRef::Regexp(path) => {
                let (_, text) = self.src.read(&path)?;
                let table =
                    crate::lookup::parse_regexp(&text).map_err(|e| table_errors(&path, &e))?;
                for line in table.pattern_lines().unwrap_or_default() {
                    let (cond, result, comment) =
                        pattern_entry(&line, subject).map_err(|why| format!("{path}: {why}"))?;
                    entries.push((Some(cond), result, format!("{spec} line {comment}")));
                }
            }
            other => {
                return Err(format!(
                    "{other:?}: only hash/texthash-style, inline, static, regexp, pcre and (for clients) cidr access tables are written out as rules"
                ));
            }
        }
        keyed.sort_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
        entries.extend(keyed.into_iter().map(|(_, _, key, cond, value)| {
            (Some(cond), value.clone(), format!("{spec}: {key} {value}"))
        }));
        let mut items = Vec::new();
        // the conditions of earlier entries that matched without deciding
        let mut undecided: Vec<Cond> = Vec::new();
        // each entry repeats the patterns of those before it: bounded, whatever the table
        let mut budget = EXCLUSION_BUDGET;
        for (own, value, comment) in entries {
            let size: usize = undecided
                .iter()
                .map(|c| match &c.value {
                    super::kdl::CondValue::Str(v) => v.len() + 8,
                    super::kdl::CondValue::Bool(_) => 1,
                })
                .sum();
            budget = budget
                .checked_sub(size)
                .filter(|_| size <= EXCLUSION_RULE_LIMIT)
                .ok_or_else(|| {
                format!(
                    "`{comment}`: the entries that decide nothing before the others would be repeated on each of them beyond {} KiB of patterns ({} KiB on one rule): not written out as rules",
                    EXCLUSION_BUDGET >> 10,
                    EXCLUSION_RULE_LIMIT >> 10
                )
            })?;
            let mut conds = match exclusions(&undecided) {
                Some(c) => c,
                None => {
                    return Err(format!(
                        "`{comment}`: the entries before it that do not decide cannot all be excluded from it with mtad conditions"
                    ));
                }
            };
            if let Some(c) = &own {
                match conds.iter().position(|x| x.property() == c.property()) {
                    Some(i) => {
                        conds[i] = conds[i].merge_negated(c).ok_or_else(|| {
                            format!("`{comment}`: cannot be excluded from the entries before it")
                        })?;
                    }
                    None => conds.insert(0, c.clone()),
                }
            }
            let decides = match access_action(&value, conds.clone(), subject, &comment) {
                Ok(Some(item)) => {
                    let decides = match &item {
                        Item::Permit { .. } => true,
                        Item::Decide { rule, .. } => {
                            !warn
                                && matches!(
                                    rule.action,
                                    Action::Reject { .. } | Action::Defer { .. }
                                )
                        }
                        Item::Many(_) => false,
                    };
                    items.push(item);
                    decides
                }
                Ok(None) => false,
                Err(why) => {
                    // a restriction class or restriction names as the result
                    let tokens = split_list(&value);
                    let known = tokens.first().is_some_and(|t| {
                        self.classes.contains(t)
                            || t.starts_with("permit")
                            || t.starts_with("reject")
                            || t.starts_with("check_")
                            || t.starts_with("defer")
                    });
                    if !known || depth >= MAX_CLASS_DEPTH {
                        return Err(format!("{comment}: {why}"));
                    }
                    let inner = self.items(&tokens, parameter, mynetworks, p, depth + 1);
                    items.push(Item::Many(add_conds(inner, &conds)));
                    false
                }
            };
            if !decides {
                match own {
                    Some(c) => undecided.push(c),
                    None => break, // it matches everything: nothing after it is reached
                }
            }
        }
        Ok(items)
    }
}

/// How many bytes of earlier entries' patterns one access table's rules may repeat in
/// all (each entry excludes the entries before it that decide nothing).
const EXCLUSION_BUDGET: usize = 256 << 10;
/// ... and one rule at most (its pattern, compiled, stays well within the 1 MiB a
/// condition's regular expression may take).
const EXCLUSION_RULE_LIMIT: usize = 16 << 10;

/// The conditions that say none of `undecided` matched: `not-X-matches` with the
/// patterns of one property joined (an exact address as its pattern), `not-client`
/// for one network. `None` when that cannot be written (two networks, a negated
/// pattern that would have to match).
fn exclusions(undecided: &[Cond]) -> Option<Vec<Cond>> {
    let mut out: Vec<Cond> = Vec::new();
    for c in undecided {
        let negated = match (&c.value, c.key.as_str()) {
            (_, _) if c.negated => return None,
            (super::kdl::CondValue::Str(addr), "sender" | "rcpt" | "helo") => Cond::s(
                &format!("{}-matches", c.key),
                format!("^{}$", super::access::regex_escape(addr)),
            )
            .negate(),
            _ => c.negate(),
        };
        match out.iter().position(|x| x.property() == negated.property()) {
            Some(i) => out[i] = out[i].merge_negated(&negated)?,
            None => out.push(negated),
        }
    }
    Some(out)
}

/// One line of a regexp or pcre access table as (condition, result, where): the
/// pattern tested against what Postfix looks up in a pattern table for `subject` —
/// the HELO name as given, the sender address (`<>` for the null sender), the
/// recipient address. `Err` for what rules cannot say exactly.
fn pattern_entry(
    line: &crate::lookup::PatternLine,
    subject: Subject,
) -> Result<(Cond, String, String), String> {
    let crate::lookup::PatternLine::Rule {
        pattern,
        negate,
        result,
        substitutes,
        line,
    } = line
    else {
        return Err("if/endif blocks are not written out as rules".into());
    };
    if *substitutes {
        return Err(format!(
            "line {line}: the result `{result}` uses the pattern's captures ($1), which a rule's fixed text cannot"
        ));
    }
    if pattern.contains("\\x") {
        // a byte escape, or a non-ASCII character made one: Postfix matches bytes,
        // mtad's conditions characters
        return Err(format!(
            "line {line}: a pattern with bytes escaped (or non-ASCII characters) is not written out as a rule"
        ));
    }
    let key = match subject {
        Subject::Client => {
            return Err("a pattern table on clients is tested against the client's host name first, then its address; mtad rules test clients by network only (use a cidr table)".into());
        }
        Subject::Helo => "helo-matches",
        Subject::Sender => "sender-matches",
        Subject::Recipient => "rcpt-matches",
    };
    let mut pattern = pattern.clone();
    if subject != Subject::Helo {
        // Postfix looks addresses up in lower case (smtpd_resolve_addr folds them): a
        // case-sensitive pattern (flag i) without capitals matches them as a
        // case-insensitive one matches the address as given; one with capitals
        // would match only some of what it says, which a rule cannot say
        for (sensitive, insensitive) in [("(?s-i)", "(?si)"), ("(?m-i)", "(?mi)")] {
            if let Some(body) = pattern.strip_prefix(sensitive) {
                let mut chars = body.chars();
                let mut capitals = false;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        c if c.is_ascii_uppercase() => capitals = true,
                        _ => {}
                    }
                }
                if capitals {
                    return Err(format!(
                        "line {line}: a case-sensitive pattern (flag i) with capital letters: Postfix looks addresses up in lower case"
                    ));
                }
                pattern = format!("{insensitive}{body}");
                break;
            }
        }
    }
    if subject == Subject::Sender {
        // Postfix looks the null sender up as `<>`, mtad's condition sees ""
        let re = regex::RegexBuilder::new(&pattern)
            .case_insensitive(true)
            .build()
            .map_err(|e| format!("line {line}: {e}"))?;
        match (re.is_match("<>"), re.is_match("")) {
            (true, false) => pattern = format!("^$|(?:{pattern})"),
            (false, true) => {
                return Err(format!(
                    "line {line}: the pattern matches an empty address but not the null sender's `<>`"
                ));
            }
            _ => {}
        }
    }
    let mut cond = Cond::s(key, pattern);
    if *negate {
        cond = cond.negate();
    }
    Ok((cond, result.clone(), format!("{line}: {result}")))
}

/// Every rule and permit of `items` also under `conds`.
fn add_conds(items: Vec<Item>, conds: &[Cond]) -> Vec<Item> {
    items
        .into_iter()
        .map(|i| match i {
            Item::Permit { conds: c, comment } => Item::Permit {
                conds: conds.iter().cloned().chain(c).collect(),
                comment,
            },
            Item::Decide {
                mut rule,
                may_permit,
            } => {
                rule.conds = conds.iter().cloned().chain(rule.conds).collect();
                Item::Decide { rule, may_permit }
            }
            Item::Many(inner) => Item::Many(add_conds(inner, conds)),
        })
        .collect()
}

fn mark_warn(items: &mut [Item]) {
    for i in items {
        match i {
            Item::Decide { rule, .. } => rule.warn = true,
            Item::Many(inner) => mark_warn(inner),
            Item::Permit { .. } => {}
        }
    }
}

fn write_rules(s: &mut String, rules: &[Rule], indent: &str) {
    let mut last_comment = String::new();
    for r in rules {
        if r.comment != last_comment {
            let _ = writeln!(s, "{indent}// {}", r.comment);
            last_comment = r.comment.clone();
        }
        let _ = writeln!(s, "{indent}{}", r.render());
    }
}

// ---- data and route stages ------------------------------------------------------

impl Translator {
    fn data_stage(&mut self) -> Result<(), ImportError> {
        let mut rules = String::new();
        for (param, rule) in [
            ("header_checks", "header-checks"),
            ("mime_header_checks", "mime-header-checks"),
            ("nested_header_checks", "nested-header-checks"),
            ("body_checks", "body-checks"),
        ] {
            let specs = self.list(param)?;
            // the defaults $header_checks: mtad's header-checks cover those classes itself
            if matches!(param, "mime_header_checks" | "nested_header_checks")
                && !self.params.is_set(param)
            {
                continue;
            }
            if matches!(param, "mime_header_checks" | "nested_header_checks")
                && specs == self.list("header_checks")?
            {
                self.claim(param);
                continue;
            }
            for spec in specs {
                match self.content_check(param, rule, &spec) {
                    Ok(line) => {
                        rules.push_str(&line);
                        self.claim(param);
                    }
                    Err(why) => {
                        self.note(
                            param,
                            Status::Unsupported,
                            "defer 450 4.7.1 for every message",
                            why,
                        );
                        let refusal =
                            Rule::new(Action::Unsupported(format!("{param} {spec}")), vec![], "");
                        let _ = writeln!(
                            rules,
                            "    // {param} = {spec} (NOT TRANSLATED: see the report)\n    {}",
                            refusal.render()
                        );
                    }
                }
            }
        }
        // data restrictions
        let mut lists = Vec::new();
        for name in ["smtpd_data_restrictions", "smtpd_end_of_data_restrictions"] {
            let tokens = self.list(name)?;
            self.claim(name);
            let items = self.items(&tokens, name, "mynetworks", &self.params.clone(), 0);
            lists.push(List {
                parameter: name.to_owned(),
                items,
            });
        }
        let mut problems = Vec::new();
        let data_rules = join(&lists, &[], false, &mut problems);
        for pr in problems {
            self.join_problems.push((pr.parameter.clone(), pr));
        }
        // a permit in the last list ends the stage: no later rule, as in Postfix
        let mut r = String::new();
        write_rules(&mut r, &data_rules, "    ");
        rules.push_str(&r);
        if !rules.is_empty() {
            let _ = write!(self.out, "\nstage \"data\" {{\n{rules}}}\n");
        }
        Ok(())
    }

    /// One content-check table as a data-stage rule line; `Err` with why it is not one.
    fn content_check(&mut self, param: &str, rule: &str, spec: &str) -> Result<String, String> {
        let TableRef::Regexp(path) = TableRef::parse(spec) else {
            return Err(format!(
                "`{spec}`: content checks are regexp or pcre tables"
            ));
        };
        let (_, text) = self.src.read(&path)?;
        crate::lookup::parse_regexp(&text).map_err(|e| {
            format!(
                "{}: the table does not read as mtad's regexp table",
                table_errors(&path, &e)
            )
        })?;
        self.facts
            .header_checks
            .push((param.to_owned(), text.clone()));
        let name = self.add_file(&path, text);
        let size = if param == "body_checks" && self.params.is_set("body_checks_size_limit") {
            self.claim("body_checks_size_limit");
            let limit = self
                .get("body_checks_size_limit")
                .map_err(|e| e.to_string())?;
            format!(" size-limit={limit}")
        } else {
            String::new()
        };
        Ok(format!(
            "    {rule} file={}{size}   // {param} = {spec}\n",
            q(&name)
        ))
    }

    fn route_stage(&mut self) -> Result<(), ImportError> {
        let mut rules = String::new();
        // credentials for the SMTP client
        let mut auth = String::new();
        if self.params.flag("smtp_sasl_auth_enable")? {
            let maps = self.list("smtp_sasl_password_maps")?;
            match maps.first().map(|s| TableRef::parse(s)) {
                Some(TableRef::Map(path)) => match self.src.read(&path) {
                    Ok((_, text)) => {
                        let name = self.add_file(&path, text);
                        let _ = writeln!(
                            self.out,
                            "\n// smtp_sasl_password_maps: next hop, user:password\ncredentials \"relay\" file={}",
                            q(&name)
                        );
                        auth = " auth=\"relay\"".to_owned();
                        self.claim("smtp_sasl_auth_enable");
                        self.claim("smtp_sasl_password_maps");
                        self.claim("smtp_sasl_security_options");
                    }
                    Err(e) => self.note(
                        "smtp_sasl_password_maps",
                        Status::Unsupported,
                        "",
                        format!("{e}: mail is sent without credentials"),
                    ),
                },
                _ => self.note(
                    "smtp_sasl_password_maps",
                    Status::Unsupported,
                    "",
                    "only a sasl_passwd file is read: mail is sent without credentials",
                ),
            }
        }
        // transport_maps
        for spec in self.list("transport_maps")? {
            match self.transport_table(&spec) {
                Ok(name) => {
                    let _ = writeln!(
                        rules,
                        "    transport-table {}{auth}   // transport_maps = {spec}",
                        q(&name)
                    );
                    self.claim("transport_maps");
                }
                Err(why) => {
                    self.note("transport_maps", Status::Unsupported, "", format!("{why}: recipients it would route go to their domain's MX or the relayhost"));
                }
            }
        }
        // local domains
        let local = self.facts.local.clone();
        for d in &local {
            let _ = writeln!(
                rules,
                "    transport {} \"local\"   // mydestination (local_transport)",
                q(d)
            );
        }
        self.claim("local_transport");
        // relayhost
        let relayhost = self.get("relayhost")?;
        if relayhost.is_empty() {
            if self.cf.settings.contains_key("relayhost") {
                self.note(
                    "relayhost",
                    Status::Ignored,
                    "",
                    "empty: mail goes to each domain's MX hosts, mtad's default",
                );
            }
        } else {
            let first = split_list(&relayhost);
            let t = first
                .iter()
                .map(|h| nexthop_transport(h))
                .collect::<Vec<_>>();
            let t = if t.len() > 1 {
                format!("smtp:{}", first.join(", "))
            } else {
                t[0].clone()
            };
            let unless = if self.facts.has_virtual {
                " not-rcpt-domain=\"virtual\""
            } else {
                ""
            };
            let _ = writeln!(
                rules,
                "    relay {}{auth}{unless}   // relayhost = {relayhost}",
                q(&t)
            );
            self.facts.relayhost = Some(t);
            self.claim("relayhost");
        }
        if !rules.is_empty() {
            let _ = write!(
                self.out,
                "\n// Postfix's order: transport_maps, then the local domains, then the relayhost;\n// anything else goes to its domain's MX hosts.\nstage \"route\" {{\n{rules}}}\n"
            );
        }
        Ok(())
    }

    /// A transport(5) table, with master.cf's transport names made smtp or lmtp.
    fn transport_table(&mut self, spec: &str) -> Result<String, String> {
        let path = match TableRef::parse(spec) {
            TableRef::Map(path) => path,
            _ => {
                let wanted = table_name_for(spec, "transport_maps");
                return self.table(spec, &wanted);
            }
        };
        let (_, text) = self.src.read(&path)?;
        let mut out = format!(
            "# transport(5), from Postfix's {spec}; transports named after master.cf services\n# are written as what they run (smtp, lmtp)\n"
        );
        for (line, logical) in super::maincf::logical_lines(&text) {
            let (key, value) = logical
                .split_once(char::is_whitespace)
                .ok_or_else(|| format!("{path}:{line}: a key without a value"))?;
            let value = value.trim();
            let (transport, nexthop) = value.split_once(':').unwrap_or((value, ""));
            if transport.is_empty() && nexthop.is_empty() {
                // "no change": the address class decides, which is what the rules after
                // the table do when it has no entry; only safe where no less specific
                // entry would then answer instead
                if key == "*" {
                    self.note("transport_maps", Status::Translated, "", format!("{path}:{line}: `* :` (no change) left out: the rules after the table decide, as in Postfix"));
                    continue;
                }
                return Err(format!(
                    "{path}:{line}: `{key} :` (no change) has no mtad equivalent"
                ));
            }
            let rewritten = match transport {
                "" | "smtp" | "relay" | "lmtp" => value.to_owned(),
                "local" => "local".to_owned(),
                "error" | "discard" => value.to_owned(),
                t => match self.transport_kind(t) {
                    Ok(kind) => format!("{kind}:{nexthop}"),
                    Err(why) => return Err(format!("{path}:{line}: {why}")),
                },
            };
            self.facts
                .transports
                .push((key.to_owned(), rewritten.clone()));
            let _ = writeln!(out, "{key}\t{rewritten}");
        }
        crate::lookup::parse_map(&out).map_err(|e| table_errors(&path, &e))?;
        let file = self.add_file(&path, out);
        let name = unique("transport", self.tables.values().map(|(n, _)| n.as_str()));
        self.tables.insert(
            spec.to_owned(),
            (
                name.clone(),
                format!("// {spec}\ntable {} file={}", q(&name), q(&file)),
            ),
        );
        Ok(name)
    }

    /// Every main.cf parameter not reported yet: from the mapping, or unsupported.
    fn leftovers(&mut self) {
        let reported: BTreeSet<String> = self
            .report
            .entries
            .iter()
            .map(|e| e.parameter.clone())
            .collect();
        for name in self.cf.order.clone() {
            if reported.contains(&name) {
                continue;
            }
            match mapping::find(&name) {
                Some(_) => self.claim(&name),
                None if !self.params.has_default(&name) || self.classes.contains(&name) => self.note(&name, Status::Ignored, "", "not a Postfix parameter (a typo, or a name for `$name` to expand): Postfix does nothing with it either"),
                None => self.note(&name, Status::Unsupported, "", "not translated: the importer has no mtad equivalent for it; check that leaving it out is acceptable"),
            }
        }
    }
}
