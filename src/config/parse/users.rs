//! `users` nodes: the tables SMTP AUTH verifies clients against (a child module of
//! `parser`, for its helpers).
//!
//! ```kdl
//! users "local" file="users.passwd"          // Dovecot passwd-file: user:{SCHEME}hash
//! users "mailbox" sql="sqlite:postfixadmin.db" \
//!     query="SELECT password FROM mailbox WHERE username = $1 AND active = 1"
//! users "pg" sql="postgres://mtad@127.0.0.1:5432/mail" \
//!     query="SELECT password FROM mailbox WHERE username = $1" timeout="3s"
//! ```
//!
//! A users file is read and checked here, its errors reported in that file like a
//! table file's. An SQL table is only checked (URL, query, timeout): nothing connects
//! while the configuration is read, so `mtactl check` works with the database down.
//! Users tables are read in the first pass, with the sets.

use std::collections::BTreeMap;

use kdl::{KdlEntry, KdlNode};

use super::Parser;
use crate::auth::Users;
use crate::auth::passwd::parse_passwd;
use crate::config::Origin;
use crate::lookup::sql::{DEFAULT_TIMEOUT, SqlKind, SqlQuery, SqlSource, check_query};

/// `users` nodes by name, with where each is defined (`None`: it had errors, already
/// reported).
pub(super) type UsersTables = BTreeMap<String, (Option<Users>, Origin)>;

const USAGE: &str = "users NAME file=\"users.passwd\", or users NAME sql=\"sqlite:users.db\" query=\"SELECT password FROM users WHERE username = $1\" [timeout=\"5s\"]";

impl Parser {
    /// Reads one `users` node into `all`.
    pub(super) fn users(&mut self, node: &KdlNode, all: &mut UsersTables) {
        self.check_annotations(node);
        self.no_children(node);
        let args = self.args(node, 1, Some(1), USAGE);
        let name = args.as_ref().and_then(|a| self.name(a[0], "users name"));
        let here = self.origin(node.name().span().offset());
        let props = self.props(node, &["file", "sql", "query", "timeout"]);
        let prop = |key: &str| props.iter().find(|(k, _)| *k == key).map(|(_, e)| *e);
        let (file, sql, query, timeout) =
            (prop("file"), prop("sql"), prop("query"), prop("timeout"));

        let users = match (file, sql) {
            (Some(_), Some(sql)) => {
                self.error(
                    sql.span(),
                    "`users` takes either `file=` or `sql=`, not both",
                    "file and sql",
                )
                .help = Some(format!("usage: {USAGE}"));
                None
            }
            (None, None) => {
                if props.is_empty() {
                    self.node_error(node, "`users` needs `file=` or `sql=`", "no source")
                        .help = Some(format!("usage: {USAGE}"));
                }
                None
            }
            (Some(file), None) => {
                for extra in [query, timeout].into_iter().flatten() {
                    let key = extra.name().map_or("", |n| n.value());
                    self.error(
                        extra.span(),
                        format!("`{key}` is for SQL users tables (`sql=`), not files"),
                        "not for a file",
                    );
                }
                let name = name.unwrap_or_default();
                self.users_file(file, name)
            }
            (None, Some(sql)) => {
                self.users_sql(node, name.unwrap_or_default(), sql, query, timeout)
            }
        };

        let Some(name) = name else { return };
        if let Some((_, first)) = all.get(name) {
            let first = first.clone();
            let span = args.as_ref().map_or(node.name().span(), |a| a[0].span());
            self.duplicate(span, format!("users table `{name}`"), &first);
            return;
        }
        all.insert(name.to_owned(), (users, here));
    }

    fn users_file(&mut self, entry: &KdlEntry, name: &str) -> Option<Users> {
        let path = self.string(entry, "file")?;
        if path.is_empty() {
            self.error(entry.span(), "file must not be empty", "empty path");
            return None;
        }
        let what = format!("users `{name}` ");
        let file = self.data_file("users file", path, entry, parse_passwd, &what)?;
        Some(Users::from_file(name, file))
    }

    fn users_sql(
        &mut self,
        node: &KdlNode,
        name: &str,
        sql: &KdlEntry,
        query: Option<&KdlEntry>,
        timeout: Option<&KdlEntry>,
    ) -> Option<Users> {
        let (source, query) = self.sql_query(
            node,
            sql,
            query,
            timeout,
            "SELECT password FROM mailbox WHERE username = $1 AND active = 1",
            "the user name",
            "the {SCHEME}hash",
        )?;
        Some(Users::from_sql(name, source, query))
    }

    /// `sql=`, `query=` and `timeout=` of a node that reads from a database: the
    /// source (one per URL and timeout in a configuration, so that its pool is
    /// shared) and the checked query. `example` is a query for the help text, `key`
    /// what the parameter is, `column` what the one column holds.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sql_query(
        &mut self,
        node: &KdlNode,
        sql: &KdlEntry,
        query: Option<&KdlEntry>,
        timeout: Option<&KdlEntry>,
        example: &str,
        key: &str,
        column: &str,
    ) -> Option<(SqlSource, SqlQuery)> {
        let timeout = match timeout {
            Some(entry) => self.duration(entry, "timeout"),
            None => Some(DEFAULT_TIMEOUT),
        };
        let source = self.string(sql, "sql").and_then(|url| {
            let limit = timeout.unwrap_or(DEFAULT_TIMEOUT);
            if let Some(source) = self.sql_sources.get(&(url.to_owned(), limit)) {
                return Some(source.clone());
            }
            match SqlSource::parse(url, &self.cur.path, limit) {
                Ok(source) => {
                    self.sql_sources
                        .insert((url.to_owned(), limit), source.clone());
                    Some(source)
                }
                Err(e) => {
                    self.error(sql.span(), e.to_string(), "invalid SQL URL").help = Some(
                        "e.g. sql=\"sqlite:users.db\", sql=\"postgres://mtad@127.0.0.1:5432/mail\" or sql=\"mysql://mtad:PASSWORD@127.0.0.1:3306/mail\""
                            .to_owned(),
                    );
                    None
                }
            }
        });
        let Some(query_entry) = query else {
            self.node_error(node, "an SQL table needs `query=`", "no query")
                .help = Some(format!("query=\"{example}\": one column, {column}"));
            return None;
        };
        let text = self.string(query_entry, "query")?;
        // checked even when the URL is not valid, as long as it says which database
        let kind = source
            .as_ref()
            .map(SqlSource::kind)
            .or_else(|| sql.value().as_string().and_then(SqlKind::of_url))?;
        let query = match check_query(text, kind) {
            Ok(query) => query,
            Err(e) => {
                self.error(query_entry.span(), e.to_string(), "invalid query")
                    .help = Some(format!(
                    "the query gets {key} as its parameter and returns one column, {column}"
                ));
                return None;
            }
        };
        timeout?;
        Some((source?, query))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigErrors, render};

    const HEAD: &str = "server {\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}\nlisten \"mx\" address=\"127.0.0.1:2525\"\n";

    pub(super) fn load(dir: &std::path::Path, body: &str) -> Result<Config, ConfigErrors> {
        let path = dir.join("mtad.kdl");
        std::fs::write(&path, format!("{HEAD}{body}")).unwrap();
        Config::load(&path)
    }

    /// `(file, line, column, message)` of each error; main-file lines count from the
    /// end of HEAD.
    fn errors(dir: &std::path::Path, body: &str) -> Vec<(String, u32, u32, String)> {
        let errors = load(dir, body).expect_err("invalid");
        errors
            .errors
            .iter()
            .map(|e| {
                let l = e.location.as_ref().expect("located");
                let line = if l.file.ends_with("mtad.kdl") {
                    l.line - 5
                } else {
                    l.line
                };
                let file = std::path::Path::new(&*l.file)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                (file, line, l.column, e.message.clone())
            })
            .collect()
    }

    /// `got` is `want`: each error in `file`, at `(line, column)`, its message
    /// containing the fragment.
    fn same_errors(got: &[(String, u32, u32, String)], file: &str, want: &[(u32, u32, &str)]) {
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for ((f, line, col, message), (l, c, m)) in got.iter().zip(want) {
            assert_eq!(f, file);
            assert_eq!((*line, *col), (*l, *c), "{message}");
            assert!(message.contains(m), "{message} (wanted {m})");
        }
    }

    // from `doveadm pw -s SHA256-CRYPT -p 'correct horse'`
    const SHA256: &str =
        "{SHA256-CRYPT}$5$8xe.OWTH2M7gY2Kw$JUJtcmd2xlK7ngGV07/B.hiuIVqLVydRxUcQ8mBwcmC";

    #[test]
    fn both_forms_parse() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("users.passwd"),
            format!("# users\nalice@example.test:{SHA256}::::::\n"),
        )
        .unwrap();
        let config = load(
            dir.path(),
            "users \"local\" file=\"users.passwd\"\nusers \"pg\" sql=\"postgres://mtad@127.0.0.1:5432/mail\" query=\"SELECT password FROM mailbox WHERE username = $1 AND active = 1\" timeout=\"2s\"\nusers \"lite\" sql=\"sqlite:users.db\" query=\"SELECT password FROM users WHERE username = ?\"\n",
        )
        .unwrap_or_else(|e| panic!("{}", render(&e)));
        assert_eq!(
            config.users.keys().collect::<Vec<_>>(),
            ["lite", "local", "pg"]
        );
        assert_eq!(config.users["local"].name(), "local");
        let shown = format!("{:?}", config.users["lite"]);
        let db = dir.path().join("users.db");
        assert!(
            shown.contains(&format!("sqlite:{}", db.display())),
            "{shown}"
        );
        assert!(format!("{:?}", config.users["pg"]).contains("2s"));
    }

    #[test]
    fn node_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("u"), format!("alice:{SHA256}\n")).unwrap();
        let got = errors(
            dir.path(),
            concat!(
                "users \"a\" file=\"u\"\n",                              // 1
                "users \"a\" file=\"u\"\n",                              // 2: duplicate
                "users \"b\"\n",                                         // 3: no source
                "users \"c\" file=\"u\" sql=\"sqlite:x.db\"\n",          // 4: both
                "users \"d\" file=\"missing.passwd\"\n",                 // 5: cannot read
                "users \"e\" file=\"u\" query=\"SELECT 1\" tls=#true\n", // 6: query; unknown
                "users \"f\" sql=\"mysql://u@127.0.0.1/db\" query=\"SELECT p FROM u WHERE n = $1\"\n", // 7
                "users \"g\" sql=\"sqlite:x.db\"\n", // 8: no query
                "users \"h\" sql=\"postgres://u@127.0.0.1/db\" query=\"SELECT p FROM u WHERE n = ?\"\n", // 9
                "users \"i\" sql=\"sqlite:x.db\" query=\"SELECT p FROM u\" timeout=\"soon\"\n", // 10
                "users \"j\" sql=\"postgres://u@192.0.2.1/db\" query=\"\"\n", // 11
            ),
        );
        let want = [
            (2, 7, "duplicate users table `a`"),
            (3, 1, "needs `file=` or `sql=`"),
            (4, 20, "not both"),
            (5, 11, "cannot read users file `missing.passwd`"),
            (6, 20, "`query` is for SQL users tables"),
            (6, 37, "unknown property `tls`"),
            (7, 40, "MySQL/MariaDB parameters are written ?, not $1"),
            (8, 1, "needs `query=`"),
            (9, 43, "written $1, not ?"),
            (10, 29, "no parameter"),
            (10, 53, "invalid timeout"),
            (11, 11, "not on this host"),
            (11, 43, "the query is empty"),
        ];
        same_errors(&got, "mtad.kdl", &want);
    }

    #[test]
    fn users_file_errors_point_into_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("users.passwd"),
            format!(
                "alice:{SHA256}\n\n# comment\nbob:{{MD5}}$1$abc\nalice:{SHA256}\ncarol:{{SHA512-CRYPT}}$6$short$xyz\nDave:{{PLAIN}}x\n"
            ),
        )
        .unwrap();
        let got = errors(dir.path(), "users \"local\" file=\"users.passwd\"\n");
        let want = [
            (4, 6, "unknown password scheme `MD5`"),
            (5, 1, "duplicate user `alice` (first on line 1)"),
            (6, 21, "hash part must be 86 characters"),
            (7, 1, "upper-case"),
        ];
        same_errors(&got, "users.passwd", &want);
        let rendered =
            render(&load(dir.path(), "users \"local\" file=\"users.passwd\"\n").unwrap_err());
        assert!(rendered.contains("[users.passwd:4:6]"), "{rendered}");
        assert!(
            rendered.contains("users `local` is defined at"),
            "{rendered}"
        );
    }
}
