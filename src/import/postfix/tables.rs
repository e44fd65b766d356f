//! Postfix tables named in main.cf (`type:name`): where their file is, what mtad
//! table it becomes, and SQL `.cf` files → mtad SQL tables.

use std::path::{Path, PathBuf};

use super::maincf::logical_lines;

/// The largest table file read.
pub const MAX_TABLE: u64 = 32 << 20;

/// A table reference as main.cf writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableRef {
    /// hash, btree, lmdb, cdb, dbm, texthash: the source file `postmap` reads.
    Map(String),
    /// regexp, pcre.
    Regexp(String),
    Cidr(String),
    /// `inline:{ key=value, ... }`.
    Inline(Vec<(String, String)>),
    /// `static:value`.
    Static(String),
    /// mysql:, pgsql:, sqlite: with their `.cf` file.
    Sql {
        kind: String,
        cf: String,
    },
    /// Anything else (ldap:, nis:, unix:, tcp:, socketmap:, ...).
    Other(String),
}

impl TableRef {
    pub fn parse(spec: &str) -> TableRef {
        let spec = spec.trim();
        let spec = spec.strip_prefix("proxy:").unwrap_or(spec);
        let Some((kind, name)) = spec.split_once(':') else {
            // a bare path: the default_database_type (hash)
            return TableRef::Map(spec.to_owned());
        };
        match kind {
            "hash" | "btree" | "lmdb" | "cdb" | "dbm" | "sdbm" | "texthash" => {
                TableRef::Map(name.to_owned())
            }
            "regexp" | "pcre" => TableRef::Regexp(name.to_owned()),
            "cidr" => TableRef::Cidr(name.to_owned()),
            "static" => TableRef::Static(name.trim_matches(['{', '}', ' ']).to_owned()),
            "inline" => {
                let inner = name.trim().trim_start_matches('{').trim_end_matches('}');
                let entries = super::maincf::split_list(inner)
                    .into_iter()
                    .filter_map(|e| {
                        e.split_once('=')
                            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    })
                    .collect();
                TableRef::Inline(entries)
            }
            "mysql" | "pgsql" | "sqlite" => TableRef::Sql {
                kind: kind.to_owned(),
                cf: name.to_owned(),
            },
            _ => TableRef::Other(spec.to_owned()),
        }
    }

    /// The file it reads, if any.
    pub fn path(&self) -> Option<&str> {
        match self {
            TableRef::Map(p) | TableRef::Regexp(p) | TableRef::Cidr(p) => Some(p),
            TableRef::Sql { cf, .. } => Some(cf),
            _ => None,
        }
    }
}

/// Where the Postfix files are: the imported directory, which stands for
/// `config_directory`.
pub struct Source {
    pub dir: PathBuf,
    pub config_directory: String,
    /// Files read from this host because the directory had none of that name
    /// (`/etc/aliases`, which is not under `/etc/postfix`): the report names them.
    pub from_host: std::cell::RefCell<Vec<String>>,
}

impl Source {
    /// The file `path` (as main.cf names it) in the imported directory: under
    /// `config_directory` → the same place under the directory; else the file of that
    /// name in the directory; else the path itself.
    pub fn locate(&self, path: &str) -> Option<PathBuf> {
        let mut candidates = Vec::new();
        let prefix = format!("{}/", self.config_directory.trim_end_matches('/'));
        if let Some(rest) = path.strip_prefix(&prefix) {
            candidates.push(self.dir.join(rest));
        }
        if let Some(name) = Path::new(path).file_name() {
            candidates.push(self.dir.join(name));
        }
        if !path.starts_with('/') {
            candidates.push(self.dir.join(path));
        }
        candidates.push(PathBuf::from(path));
        candidates.into_iter().find(|p| p.is_file())
    }

    /// The text of `path` (located as [`Source::locate`] says), bounded.
    pub fn read(&self, path: &str) -> Result<(PathBuf, String), String> {
        let found = self
            .locate(path)
            .ok_or_else(|| format!("{path}: not found (looked in {} too)", self.dir.display()))?;
        if !found.starts_with(&self.dir) {
            self.from_host
                .borrow_mut()
                .push(found.display().to_string());
        }
        let meta = std::fs::metadata(&found).map_err(|e| format!("{}: {e}", found.display()))?;
        if meta.len() > MAX_TABLE {
            return Err(format!(
                "{}: larger than {} MiB",
                found.display(),
                MAX_TABLE >> 20
            ));
        }
        // bounded even when the size said is not the size read (/proc, a growing file)
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(
                std::fs::File::open(&found).map_err(|e| format!("{}: {e}", found.display()))?,
                MAX_TABLE + 1,
            ),
            &mut bytes,
        )
        .map_err(|e| format!("{}: {e}", found.display()))?;
        if bytes.len() as u64 > MAX_TABLE {
            return Err(format!(
                "{}: larger than {} MiB",
                found.display(),
                MAX_TABLE >> 20
            ));
        }
        let text =
            String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", found.display()))?;
        Ok((found, text))
    }
}

/// An SQL table for mtad: its URL and query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlTable {
    pub url: String,
    pub query: String,
}

/// A `mysql:`/`pgsql:`/`sqlite:` `.cf` file (`hosts`, `user`, `password`, `dbname`,
/// `query` with `%s`, or the old `table`/`select_field`/`where_field`) as an mtad SQL
/// table. Only what means the same is taken: `%s` (quoted or not) is the key; any
/// other `%` expansion, `result_format`, `domain` and remote hosts are refused.
pub fn sql_table(kind: &str, text: &str, src: &Source) -> Result<SqlTable, String> {
    let mut fields = std::collections::BTreeMap::new();
    for (_, line) in logical_lines(text) {
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("{line:?} is not name = value"));
        };
        fields.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    for unsupported in ["result_format", "domain", "expansion_limit"] {
        if let Some(v) = fields.get(unsupported)
            && !(unsupported == "result_format" && v == "%s")
        {
            return Err(format!("`{unsupported} = {v}` has no mtad equivalent"));
        }
    }
    let query = match fields.get("query") {
        Some(q) => q.clone(),
        None => {
            let (Some(t), Some(s), Some(w)) = (
                fields.get("table"),
                fields.get("select_field"),
                fields.get("where_field"),
            ) else {
                return Err("no `query` (nor table/select_field/where_field)".into());
            };
            let extra = fields
                .get("additional_conditions")
                .map(|a| format!(" {a}"))
                .unwrap_or_default();
            format!("SELECT {s} FROM {t} WHERE {w} = '%s'{extra}")
        }
    };
    let placeholder = if kind == "mysql" { "?" } else { "$1" };
    let mut q = String::new();
    let mut rest = query.as_str();
    let mut keys = 0;
    while let Some(at) = rest.find('%') {
        let (before, after) = rest.split_at(at);
        match after.as_bytes().get(1) {
            Some(b's') => {
                keys += 1;
                // '%s' → the parameter, without the quotes around it
                let quoted = before.ends_with('\'') && after[2..].starts_with('\'');
                if quoted {
                    q.push_str(&before[..before.len() - 1]);
                    q.push_str(placeholder);
                    rest = &after[3..];
                } else {
                    q.push_str(before);
                    q.push_str(placeholder);
                    rest = &after[2..];
                }
            }
            Some(b'%') => {
                q.push_str(before);
                q.push('%');
                rest = &after[2..];
            }
            other => {
                return Err(format!(
                    "`%{}` in the query: only %s (the whole key) has an mtad equivalent",
                    other.map(|b| *b as char).unwrap_or(' ')
                ));
            }
        }
    }
    q.push_str(rest);
    if keys == 0 {
        return Err("the query does not use the key (%s)".into());
    }
    if keys != 1 && kind == "mysql" {
        return Err(format!(
            "the query uses %s {keys} times: MySQL tables in mtad take the key once"
        ));
    }
    let url = match kind {
        "sqlite" => {
            let path = fields
                .get("dbpath")
                .ok_or_else(|| "no `dbpath`".to_owned())?;
            // the database file, found like any other file of the directory
            let found = src
                .locate(path)
                .and_then(|p| std::fs::canonicalize(p).ok())
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| path.clone());
            format!("sqlite:{found}")
        }
        _ => {
            let host = fields
                .get("hosts")
                .map(|h| super::maincf::split_list(h))
                .and_then(|h| h.into_iter().next())
                .unwrap_or_else(|| "localhost".to_owned());
            let user = fields.get("user").cloned().unwrap_or_default();
            let password = fields.get("password").cloned().unwrap_or_default();
            let db = fields
                .get("dbname")
                .ok_or_else(|| "no `dbname`".to_owned())?;
            let scheme = if kind == "mysql" { "mysql" } else { "postgres" };
            let auth = match (user.is_empty(), password.is_empty()) {
                (true, _) => String::new(),
                (false, true) => format!("{}@", percent(&user)),
                (false, false) => format!("{}:{}@", percent(&user), percent(&password)),
            };
            let (host, query) = match host.strip_prefix("unix:") {
                Some(socket) if kind == "mysql" => {
                    ("localhost".to_owned(), format!("?socket={socket}"))
                }
                Some(socket) => {
                    let dir = Path::new(socket)
                        .parent()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    ("localhost".to_owned(), format!("?host={dir}"))
                }
                None => {
                    let h = host.strip_prefix("inet:").unwrap_or(&host).to_owned();
                    let name = h.split(':').next().unwrap_or("");
                    if !matches!(name, "localhost" | "127.0.0.1" | "::1" | "[::1]") {
                        return Err(format!(
                            "the database is on {h}: mtad only talks to databases on this host (loopback or a socket), without TLS"
                        ));
                    }
                    (h, String::new())
                }
            };
            format!("{scheme}://{auth}{host}/{db}{query}")
        }
    };
    Ok(SqlTable { url, query: q })
}

/// `s` percent-encoded for the user and password of a URL.
fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
