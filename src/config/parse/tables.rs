//! The `table` node: named lookup tables, inline or read from Postfix-format files.
//!
//! ```kdl
//! table "transport" file="transport"                   // type="map" by default
//! table "header_checks" type="regexp" file="header_checks"
//! table "clients" type="cidr" file="client_access.cidr"
//! table "routes" {                                     // inline map: KEY VALUE
//!     "example.local" "smtp:[192.168.1.100]"
//! }
//! ```
//!
//! A table file's syntax errors are reported in that file (its own source, line,
//! column and caret); a file that cannot be read is reported at the `file=` property.
//! Tables are read in the first pass, with the sets, so rules may refer to them
//! wherever they are written. (This is a child module of `parser`, for its helpers.)

use std::collections::BTreeMap;
use std::sync::Arc;

use kdl::{KdlDocument, KdlEntry, KdlNode};
use miette::{NamedSource, SourceSpan};

use super::{Parser, resolve, suggest};
use crate::config::{ConfigError, Origin};
use crate::lookup::sql_table::CacheTtl;
use crate::lookup::{
    SqlTable, Table, TableError, TableKind, inline_map, parse_aliases, parse_cidr, parse_map,
    parse_regexp,
};

/// Tables by name, with where each is defined. `None`: defined, but its file or
/// entries had errors (already reported); references to it are not "undefined".
pub(super) type Tables = BTreeMap<String, (Option<Arc<Table>>, Origin)>;

const USAGE: &str = "table NAME file=\"path\" [type=\"map|regexp|cidr\"], table NAME { \"key\" \"value\"; ... }, or table NAME sql=\"URL\" query=\"SELECT value FROM t WHERE key = $1\"";
const TABLE_PROPS: &[&str] = &[
    "type",
    "file",
    "sql",
    "query",
    "timeout",
    "cache-ttl",
    "negative-ttl",
];
/// Properties only an SQL table takes.
const SQL_PROPS: &[&str] = &["query", "timeout", "cache-ttl", "negative-ttl"];
const TABLE_TYPES: &[&str] = &["map", "regexp", "cidr"];
/// Postfix map types whose source files are what `type="map"` reads.
const POSTFIX_MAP_TYPES: &[&str] = &["hash", "texthash", "btree", "lmdb", "cdb", "dbm", "sdbm"];

impl Parser {
    /// Reads one `table` node into `tables`.
    pub(super) fn table(&mut self, node: &KdlNode, tables: &mut Tables) {
        self.check_annotations(node);
        let props = self.props(node, TABLE_PROPS);
        let args = self.args(node, 1, Some(1), USAGE);
        let name = args.as_ref().and_then(|a| self.name(a[0], "table name"));
        let here = self.origin(node.name().span().offset());

        let mut kind = Some(TableKind::Map);
        let mut file: Option<(&str, &KdlEntry)> = None;
        let prop = |k: &str| props.iter().find(|(key, _)| *key == k).map(|(_, e)| *e);
        if let Some(sql) = prop("sql") {
            let table = self.sql_table(node, sql, &prop);
            if let (Some(name), Some(table)) = (name, table) {
                if let Some((_, first)) = tables.get(name) {
                    let first = first.clone();
                    let span = args.as_ref().map_or(node.name().span(), |a| a[0].span());
                    self.duplicate(span, format!("table `{name}`"), &first);
                    return;
                }
                let table = table.named(name);
                tables.insert(name.to_owned(), (Some(Arc::new(table)), here));
            } else if let Some(name) = name {
                tables.entry(name.to_owned()).or_insert((None, here));
            }
            return;
        }
        for (key, entry) in &props {
            let (key, entry) = (*key, *entry);
            match key {
                "type" => kind = self.table_kind(entry),
                k if SQL_PROPS.contains(&k) => {
                    self.error(
                        entry.span(),
                        format!("`{k}` is for SQL tables (`sql=`)"),
                        "not an SQL table",
                    );
                }
                "sql" => {}
                _ => {
                    if let Some(path) = self.string(entry, "file") {
                        if path.is_empty() {
                            self.error(entry.span(), "file must not be empty", "empty path");
                        } else {
                            file = Some((path, entry));
                        }
                    }
                }
            }
        }

        let table = match (file, node.children()) {
            (Some((_, entry)), Some(_)) => {
                self.error(
                    entry.span(),
                    "a table takes either `file=` or a block of entries, not both",
                    "file and block",
                )
                .help = Some(format!("usage: {USAGE}"));
                None
            }
            (None, None) => {
                if props_ok(node) {
                    self.node_error(
                        node,
                        "`table` needs `file=` or a block of entries",
                        "no entries",
                    )
                    .help = Some(format!("usage: {USAGE}"));
                }
                None
            }
            (Some((path, entry)), None) => kind.and_then(|k| {
                if let Some(name) = name {
                    self.table_files.insert(
                        name.to_owned(),
                        (resolve(&self.cur.path, path), path.to_owned()),
                    );
                }
                let parse = match k {
                    TableKind::Map | TableKind::Sql => parse_map,
                    TableKind::Regexp => parse_regexp,
                    TableKind::Cidr => parse_cidr,
                };
                self.table_file(path, entry, parse, name)
            }),
            (None, Some(children)) => match kind {
                Some(TableKind::Map) => self.inline_table(children),
                Some(other) => {
                    self.node_error(
                        node,
                        format!("an inline table is a map; a {other} table must be a file"),
                        "inline table",
                    )
                    .help = Some(format!(
                        "write the lines in a file and use type=\"{other}\" file=\"...\""
                    ));
                    None
                }
                None => None,
            },
        };

        let Some(name) = name else { return };
        if let Some((_, first)) = tables.get(name) {
            let first = first.clone();
            let span = args.as_ref().map_or(node.name().span(), |a| a[0].span());
            self.duplicate(span, format!("table `{name}`"), &first);
            return;
        }
        tables.insert(name.to_owned(), (table.map(Arc::new), here));
    }

    /// `table NAME sql="URL" query="..." [timeout=] [cache-ttl=] [negative-ttl=]`.
    fn sql_table<'n>(
        &mut self,
        node: &'n KdlNode,
        sql: &'n KdlEntry,
        prop: &dyn Fn(&str) -> Option<&'n KdlEntry>,
    ) -> Option<Table> {
        for other in ["file", "type"] {
            if let Some(entry) = prop(other) {
                self.error(
                    entry.span(),
                    format!("an SQL table takes no `{other}=`"),
                    "sql and file",
                )
                .help = Some(format!("usage: {USAGE}"));
            }
        }
        if node.children().is_some() {
            self.node_error(
                node,
                "an SQL table takes no block of entries",
                "sql and block",
            );
        }
        let mut ttl = CacheTtl::default();
        for (key, slot) in [
            ("cache-ttl", &mut ttl.found),
            ("negative-ttl", &mut ttl.missing),
        ] {
            if let Some(entry) = prop(key) {
                // "0" turns that cache off
                let zero = matches!(entry.value().as_string(), Some("0" | "0s"));
                let duration = if zero {
                    Some(std::time::Duration::ZERO)
                } else {
                    self.duration(entry, key)
                };
                match duration {
                    Some(d) if d <= std::time::Duration::from_secs(86_400) => *slot = d,
                    Some(_) => {
                        self.error(entry.span(), format!("{key} is at most 24h"), "too long");
                    }
                    None => {}
                }
            }
        }
        let (source, query) = self.sql_query(
            node,
            sql,
            prop("query"),
            prop("timeout"),
            "SELECT goto FROM alias WHERE address = $1 AND active = 1",
            "the key",
            "the value",
        )?;
        Some(Table::sql(SqlTable::new(source, query, ttl)))
    }

    fn table_kind(&mut self, entry: &KdlEntry) -> Option<TableKind> {
        let text = self.string(entry, "table type")?;
        match text {
            "map" => Some(TableKind::Map),
            "regexp" => Some(TableKind::Regexp),
            "cidr" => Some(TableKind::Cidr),
            _ => {
                let help = if POSTFIX_MAP_TYPES.contains(&text) {
                    format!(
                        "`{text}:` source files are read directly: use type=\"map\" (the default) and no postmap"
                    )
                } else if text == "pcre" {
                    "use type=\"regexp\": patterns are read by Rust's regex crate".to_owned()
                } else {
                    suggest(text, TABLE_TYPES.iter().copied())
                        .unwrap_or_else(|| format!("expected one of: {}", TABLE_TYPES.join(", ")))
                };
                self.error(
                    entry.span(),
                    format!("unknown table type `{text}`"),
                    "unknown type",
                )
                .help = Some(help);
                None
            }
        }
    }

    /// Reads and parses a table file; its errors point into the file itself.
    pub(super) fn table_file(
        &mut self,
        path: &str,
        entry: &KdlEntry,
        parse: fn(&str) -> Result<Table, Vec<TableError>>,
        name: Option<&str>,
    ) -> Option<Table> {
        let what = name.map_or_else(String::new, |n| format!("table `{n}` "));
        self.data_file("table file", path, entry, parse, &what)
    }

    /// Reads and parses a file named by the `file=` property `entry` (`kind` names it
    /// in the error when it cannot be read). Its syntax errors point into the file
    /// itself, each with a note that `what` (`table `x` `) is defined at `entry`.
    pub(super) fn data_file<T>(
        &mut self,
        kind: &str,
        path: &str,
        entry: &KdlEntry,
        parse: impl FnOnce(&str) -> Result<T, Vec<TableError>>,
        what: &str,
    ) -> Option<T> {
        let full = resolve(&self.cur.path, path);
        let text = match std::fs::read_to_string(&full) {
            Ok(text) => {
                self.sources.add(&full, text.as_bytes());
                text
            }
            Err(e) => {
                self.error(
                    entry.span(),
                    format!("cannot read {kind} `{path}`: {e}"),
                    "cannot read",
                )
                .help = Some(format!("looked for {}", full.display()));
                return None;
            }
        };
        match parse(&text) {
            Ok(parsed) => Some(parsed),
            Err(errors) => {
                let here = self.origin(entry.span().offset());
                let source = NamedSource::new(path, Arc::new(text));
                for e in errors {
                    self.errors.push(table_error(
                        &source,
                        path,
                        e,
                        &format!("{what}is defined at {here}"),
                    ));
                }
                None
            }
        }
    }

    /// `aliases file="aliases"` (aliases(5)) or `virtual file="virtual"` (virtual(5),
    /// a map of address or `@domain` to addresses).
    pub(super) fn alias_file(&mut self, node: &KdlNode, tables: &Tables) -> Option<Arc<Table>> {
        let kind = node.name().value();
        let usage = format!("{kind} file=\"path\", or {kind} table=\"TABLE\"");
        self.check_annotations(node);
        self.no_children(node);
        self.args(node, 0, Some(0), &usage)?;
        let props = self.props(node, &["file", "table"]);
        if let Some((_, second)) = props.get(1) {
            self.error(
                second.span(),
                format!("`{kind}` takes `file=` or `table=`, not both"),
                "file and table",
            );
            return None;
        }
        if let Some((_, entry)) = props.iter().find(|(k, _)| *k == "table") {
            // a named table: an SQL query (PostfixAdmin's alias table), or a map
            return self.table_ref(entry, tables)?;
        }
        let Some((_, entry)) = props.into_iter().find(|(k, _)| *k == "file") else {
            self.node_error(
                node,
                format!("`{kind}` needs `file=\"path\"` or `table=\"TABLE\"`"),
                "no file",
            );
            return None;
        };
        let path = self.string(entry, "file")?;
        let parse = if kind == "aliases" {
            parse_aliases
        } else {
            parse_map
        };
        self.table_file(path, entry, parse, Some(kind))
            .map(Arc::new)
    }

    /// The table `entry` names: `None` when it is not defined (reported, with a
    /// suggestion) or not a string; `Some(None)` when it is defined but had errors
    /// (reported where it is defined).
    pub(super) fn table_ref(
        &mut self,
        entry: &KdlEntry,
        tables: &Tables,
    ) -> Option<Option<Arc<Table>>> {
        let name = self.string(entry, "table name")?;
        match tables.get(name) {
            Some((found, _)) => Some(found.clone()),
            None => {
                self.undefined_table(
                    entry,
                    name,
                    tables,
                    &format!("table \"{name}\" sql=\"...\" query=\"...\""),
                );
                None
            }
        }
    }

    /// "undefined table `NAME`" at `entry`, with a near name or how to define one.
    pub(super) fn undefined_table(
        &mut self,
        entry: &KdlEntry,
        name: &str,
        tables: &Tables,
        define: &str,
    ) {
        let help = suggest(name, tables.keys().map(String::as_str))
            .unwrap_or_else(|| format!("define it: {define}"));
        self.error(
            entry.span(),
            format!("undefined table `{name}`"),
            "undefined table",
        )
        .help = Some(help);
    }

    /// `virtual-mailboxes domains="SET" table="TABLE" [transport="lmtp:[host]:24"]`.
    pub(super) fn virtual_mailboxes(
        &mut self,
        node: &KdlNode,
        sets: &super::Sets,
        here: Origin,
    ) -> Option<crate::config::VirtualMailboxes> {
        const USAGE: &str =
            "virtual-mailboxes domains=\"SET\" table=\"TABLE\" [transport=\"lmtp:[host]:24\"]";
        self.check_annotations(node);
        self.no_children(node);
        self.args(node, 0, Some(0), USAGE)?;
        let props = self.props(node, &["domains", "table", "transport"]);
        let prop = |k: &str| props.iter().find(|(key, _)| *key == k).map(|(_, e)| *e);
        let (Some(domains), Some(table)) = (prop("domains"), prop("table")) else {
            self.node_error(
                node,
                "`virtual-mailboxes` needs `domains=` and `table=`",
                "incomplete",
            )
            .help = Some(format!("usage: {USAGE}"));
            return None;
        };
        let set = self.string(domains, "domain set")?;
        if !sets.domains.contains_key(set) {
            let help = suggest(set, sets.domains.keys().map(String::as_str))
                .unwrap_or_else(|| format!("define it: domains \"{set}\" table=\"...\""));
            self.error(
                domains.span(),
                format!("undefined domain set `{set}`"),
                "undefined",
            )
            .help = Some(help);
            return None;
        }
        let found = self.table_ref(table, &sets.tables)??;
        let transport = match prop("transport") {
            Some(entry) => {
                let text = self.string(entry, "transport")?;
                match crate::config::route::Transport::parse(text) {
                    _ if text == "virtual" => None,
                    Ok(_) => Some(text.to_owned()),
                    Err(e) => {
                        self.error(entry.span(), e.to_string(), "invalid transport");
                        return None;
                    }
                }
            }
            None => None,
        };
        Some(crate::config::VirtualMailboxes {
            domains: set.to_owned(),
            table: found,
            transport,
            origin: here,
        })
    }

    /// An inline map: each child node is `"key" "value"`.
    fn inline_table(&mut self, children: &KdlDocument) -> Option<Table> {
        let mut entries: Vec<(String, String)> = Vec::new();
        let mut seen: BTreeMap<String, Origin> = BTreeMap::new();
        let mut ok = true;
        for child in children.nodes() {
            self.check_annotations(child);
            self.props(child, &[]);
            self.no_children(child);
            let key = child.name().value();
            let Some(args) = self.args(child, 1, Some(1), "\"key\" \"value\"") else {
                ok = false;
                continue;
            };
            let Some(value) = self.string(args[0], "a table value") else {
                ok = false;
                continue;
            };
            if key.is_empty() || value.is_empty() {
                let span = if key.is_empty() {
                    child.name().span()
                } else {
                    args[0].span()
                };
                self.error(span, "table keys and values must not be empty", "empty");
                ok = false;
                continue;
            }
            let folded = key.to_lowercase();
            let here = self.origin(child.name().span().offset());
            if let Some(first) = seen.get(&folded) {
                let first = first.clone();
                self.duplicate(child.name().span(), format!("key `{folded}`"), &first);
                ok = false;
                continue;
            }
            seen.insert(folded, here);
            entries.push((key.to_owned(), value.to_owned()));
        }
        ok.then(|| inline_map(entries))
    }
}

/// Whether the node has no property at all (then "needs file=" is the useful error;
/// otherwise the property errors already say what is wrong).
fn props_ok(node: &KdlNode) -> bool {
    node.entries().iter().all(|e| e.name().is_none())
}

/// A table file's error as a configuration error in that file.
pub(super) fn table_error(
    source: &NamedSource<Arc<String>>,
    file: &str,
    e: TableError,
    defined: &str,
) -> ConfigError {
    let help = match e.help {
        Some(h) => format!("{h} ({defined})"),
        None => defined.to_owned(),
    };
    ConfigError {
        message: e.message,
        source_code: Some(source.clone()),
        span: Some(SourceSpan::from(e.byte_span.clone())),
        location: Some(Origin {
            file: Arc::from(file),
            line: e.line,
            column: e.column,
        }),
        label: Some("here".to_owned()),
        help: Some(help),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigErrors};

    const HEAD: &str = "server {\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}\nlisten \"mx\" address=\"127.0.0.1:2525\"\n";

    fn parse(body: &str) -> Result<Config, ConfigErrors> {
        Config::parse("mtad.kdl", &format!("{HEAD}{body}"))
    }

    /// `(line, column, message)` of each error; lines count from the end of HEAD.
    fn errors(body: &str) -> Vec<(u32, u32, String)> {
        let errors = parse(body).expect_err("invalid");
        errors
            .errors
            .iter()
            .map(|e| {
                let l = e.location.as_ref().expect("located");
                (l.line - 5, l.column, e.message.clone())
            })
            .collect()
    }

    #[test]
    fn inline_tables_are_maps() {
        let config = parse(
            "table \"routes\" {\n    \"Example.Local\" \"smtp:[192.168.1.100]\"\n    \".example.local\" \"smtp:[mailtrans.example.local]\"\n}\n",
        )
        .unwrap();
        let routes = &config.tables["routes"];
        assert_eq!(routes.len(), 2);
        assert_eq!(
            routes.lookup("example.local").unwrap().as_deref(),
            Some("smtp:[192.168.1.100]")
        );
    }

    #[test]
    fn table_node_errors() {
        let got = errors(
            "table \"a\" {\n    \"k\" \"1\"\n    \"K\" \"2\"\n}\ntable \"b\" type=\"hash\" file=\"x\"\ntable \"c\" type=\"cidr\" {\n    \"k\" \"v\"\n}\ntable \"d\"\ntable \"a\" file=\"x\" {\n}\ntable \"e\" file=\"does-not-exist\"\n",
        );
        let want: Vec<(u32, u32)> =
            vec![(3, 5), (5, 11), (6, 1), (9, 1), (10, 7), (10, 11), (12, 11)];
        assert_eq!(
            got.iter().map(|(l, c, _)| (*l, *c)).collect::<Vec<_>>(),
            want,
            "{got:#?}"
        );
        assert!(got[0].2.contains("duplicate key `k`"), "{got:?}");
        assert!(got[1].2.contains("unknown table type `hash`"), "{got:?}");
        assert!(got[2].2.contains("inline table is a map"), "{got:?}");
        assert!(got[3].2.contains("needs `file=`"), "{got:?}");
        assert!(got[4].2.contains("duplicate table `a`"), "{got:?}");
        assert!(got[5].2.contains("not both"), "{got:?}");
        assert!(got[6].2.contains("cannot read table file"), "{got:?}");
    }
}
