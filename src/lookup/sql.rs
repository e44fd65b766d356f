//! SQL sources: a database URL, checked when the configuration is read, and a small
//! connection pool opened on first use, through `sqlx` (SQLite and PostgreSQL).
//!
//! This is the part every SQL-backed lookup shares (the `users` SQL backend today,
//! SQL lookup tables later): a [`SqlSource`] is a database plus its pool and timeout,
//! a [`SqlQuery`] a statement with exactly one parameter (the key), and
//! [`SqlSource::lookup`] runs one against the other and returns the single text
//! column of the single row, if any.
//!
//! - **Nothing connects while the configuration is read**, so `mtactl check` works
//!   with the database down. [`SqlSource::parse`] only checks what can be checked
//!   without it: the URL's scheme (`sqlite:` or `postgres:`/`postgresql:`), that a
//!   PostgreSQL server is on this host (loopback or a Unix socket: mtad speaks to SQL
//!   servers without TLS, so credentials and hashes never cross a network), and
//!   [`check_query`] the query's parameter. The pool is created on the first lookup,
//!   inside the tokio runtime (sqlx spawns its maintenance task there).
//! - **Every lookup has a deadline** (pool acquisition included): a database that is
//!   down, refuses, or is slow yields [`SqlError`], never a hang. Callers fail closed.
//! - The pool is small (at most [`MAX_CONNECTIONS`]); idle connections are closed
//!   after a minute, and each is pinged before use, so a restarted server is
//!   reconnected to transparently.
//! - A relative SQLite path resolves against the configuration file's directory, like
//!   every other file. SQLite databases are opened read-only and never created.
//! - The URL's password never appears in `Debug` output or error messages.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions as _};
use tokio::sync::OnceCell;

/// Connections per pool, at most.
pub const MAX_CONNECTIONS: u32 = 4;
/// The deadline of one lookup when the configuration names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle pooled connections are closed after this.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Which database a source is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlKind {
    Sqlite,
    Postgres,
}

/// A database, its lazily opened pool and the deadline of each lookup. Cheap to
/// clone; clones share the pool.
#[derive(Clone)]
pub struct SqlSource {
    inner: Arc<Source>,
}

struct Source {
    /// The URL without its password, for messages.
    display: String,
    connect: Connect,
    timeout: Duration,
    pool: OnceCell<Pool>,
}

enum Connect {
    Sqlite(SqliteConnectOptions),
    Postgres(PgConnectOptions),
}

enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl fmt::Debug for SqlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlSource")
            .field("url", &self.inner.display)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// Why a lookup gave no answer. The message names the source but never a password.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("{source_url}: no answer within {timeout:?}")]
    Timeout {
        source_url: String,
        timeout: Duration,
    },
    #[error("{source_url}: {message}")]
    Database { source_url: String, message: String },
}

/// A statement with exactly one parameter, the key: `$1` (any number of times), or
/// for SQLite one `?`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlQuery(Arc<str>);

impl SqlQuery {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For sqlx: the text comes from the operator's configuration, and the key is
    /// always bound as a parameter, never spliced in.
    fn statement(&self) -> AssertSqlSafe<Arc<str>> {
        AssertSqlSafe(self.0.clone())
    }
}

impl SqlKind {
    /// The database a URL names by its scheme, if it is one we speak.
    pub fn of_url(url: &str) -> Option<SqlKind> {
        if url.starts_with("sqlite:") {
            Some(SqlKind::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(SqlKind::Postgres)
        } else {
            None
        }
    }
}

impl SqlSource {
    /// Checks `url` and prepares its connection options, without connecting.
    /// `config_path` is the configuration file, against whose directory a relative
    /// SQLite path resolves. The error is one sentence for the `sql=` property.
    pub fn parse(url: &str, config_path: &Path, timeout: Duration) -> Result<SqlSource, String> {
        let (display, connect) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = sqlite_path(rest, config_path)?;
            let options = SqliteConnectOptions::new()
                .filename(&path)
                .read_only(true)
                .create_if_missing(false)
                .busy_timeout(timeout)
                .disable_statement_logging();
            (
                format!("sqlite:{}", path.display()),
                Connect::Sqlite(options),
            )
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| format!("invalid PostgreSQL URL: {e}"))?;
            let options = postgres_checked(options)?;
            let display = match options.get_socket() {
                Some(dir) => format!(
                    "postgres://{}@{}/{}",
                    options.get_username(),
                    dir.display(),
                    options.get_database().unwrap_or_default()
                ),
                None => format!(
                    "postgres://{}@{}:{}/{}",
                    options.get_username(),
                    options.get_host(),
                    options.get_port(),
                    options.get_database().unwrap_or_default()
                ),
            };
            (display, Connect::Postgres(options))
        } else {
            let scheme = url.split(':').next().unwrap_or_default();
            let hint = match scheme {
                "mysql" | "mariadb" => " (MySQL/MariaDB is not supported yet)",
                _ => "",
            };
            return Err(format!(
                "an SQL URL starts with sqlite: or postgres://, not `{scheme}:`{hint}"
            ));
        };
        Ok(SqlSource {
            inner: Arc::new(Source {
                display,
                connect,
                timeout,
                pool: OnceCell::new(),
            }),
        })
    }

    pub fn kind(&self) -> SqlKind {
        match self.inner.connect {
            Connect::Sqlite(_) => SqlKind::Sqlite,
            Connect::Postgres(_) => SqlKind::Postgres,
        }
    }

    /// The URL without its password.
    pub fn display(&self) -> &str {
        &self.inner.display
    }

    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Runs `query` with `key` as its parameter: `Ok(None)` when there is no row or
    /// the value is NULL, the text otherwise. More than one row, a column count other
    /// than one, or a value that is not text are errors (the query is wrong, and
    /// guessing which row was meant could let the wrong one through).
    pub async fn lookup(&self, query: &SqlQuery, key: &str) -> Result<Option<String>, SqlError> {
        let source = &self.inner;
        match tokio::time::timeout(source.timeout, self.run(query, key)).await {
            Ok(result) => result.map_err(|message| SqlError::Database {
                source_url: source.display.clone(),
                message,
            }),
            Err(_) => Err(SqlError::Timeout {
                source_url: source.display.clone(),
                timeout: source.timeout,
            }),
        }
    }

    async fn run(&self, query: &SqlQuery, key: &str) -> Result<Option<String>, String> {
        let pool = self.inner.pool.get_or_init(|| async { self.open() }).await;
        match pool {
            Pool::Sqlite(pool) => {
                let rows = sqlx::query(query.statement()).bind(key).fetch(pool);
                first_value(rows).await
            }
            Pool::Postgres(pool) => {
                let rows = sqlx::query(query.statement()).bind(key).fetch(pool);
                first_value(rows).await
            }
        }
    }

    fn open(&self) -> Pool {
        let timeout = self.inner.timeout;
        match &self.inner.connect {
            Connect::Sqlite(options) => Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .min_connections(0)
                    .acquire_timeout(timeout)
                    .idle_timeout(IDLE_TIMEOUT)
                    .connect_lazy_with(options.clone()),
            ),
            Connect::Postgres(options) => Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .min_connections(0)
                    .acquire_timeout(timeout)
                    .idle_timeout(IDLE_TIMEOUT)
                    .test_before_acquire(true)
                    .connect_lazy_with(options.clone()),
            ),
        }
    }
}

/// The single text value of the single row of `rows`, reading at most two rows.
async fn first_value<R, S>(mut rows: S) -> Result<Option<String>, String>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    S: futures_util::Stream<Item = Result<R, sqlx::Error>> + Unpin,
{
    let Some(row) = rows.try_next().await.map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    if row.len() != 1 {
        return Err(format!(
            "the query returns {} columns; it must return one",
            row.len()
        ));
    }
    let value: Option<String> = row
        .try_get(0)
        .map_err(|e| format!("the query's column is not text: {e}"))?;
    if rows.try_next().await.map_err(|e| e.to_string())?.is_some() {
        return Err("the query returns more than one row for one key".to_owned());
    }
    Ok(value)
}

/// `sqlite:PATH` or `sqlite://PATH`, relative to the configuration's directory.
fn sqlite_path(rest: &str, config_path: &Path) -> Result<PathBuf, String> {
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if path.is_empty() {
        return Err("the SQLite URL names no file: write sqlite:path/to/users.db".to_owned());
    }
    if path.contains('?') || path == ":memory:" {
        return Err(
            "write the SQLite database as a plain path (sqlite:path/to/users.db), without ?options or :memory:"
                .to_owned(),
        );
    }
    let path = Path::new(path);
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        config_path
            .parent()
            .map_or_else(|| path.to_path_buf(), |dir| dir.join(path))
    })
}

/// Refuses TLS modes (not built in) and servers off this host; TLS is then off.
fn postgres_checked(options: PgConnectOptions) -> Result<PgConnectOptions, String> {
    if matches!(
        options.get_ssl_mode(),
        PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull
    ) {
        return Err(
            "sslmode requires TLS, which mtad does not speak to SQL servers: connect over loopback or a Unix socket"
                .to_owned(),
        );
    }
    if options.get_socket().is_none() {
        let host = options.get_host();
        let local = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !local {
            return Err(format!(
                "`{host}` is not on this host: mtad talks to SQL servers without TLS, so only loopback (127.0.0.1, ::1, localhost) or a Unix socket (postgres://USER@localhost/DB?host=/run/postgresql) is allowed"
            ));
        }
    }
    Ok(options
        .ssl_mode(PgSslMode::Disable)
        .application_name("mtad")
        .disable_statement_logging())
}

/// Checks that `query` has exactly one parameter, in a form `kind` understands:
/// `$1` (as often as needed) for both, or one `?` (or `?1`) for SQLite. Quoted
/// strings, quoted identifiers and comments are skipped. The error is one sentence
/// for the `query=` property.
pub fn check_query(query: &str, kind: SqlKind) -> Result<SqlQuery, String> {
    if query.trim().is_empty() {
        return Err("the query is empty".to_owned());
    }
    let mut dollar: Vec<u32> = Vec::new();
    let mut question = 0usize;
    let b = query.as_bytes();
    let mut i = 0;
    let skip_to = |from: usize, end: &[u8]| {
        b[from..]
            .windows(end.len())
            .position(|w| w == end)
            .map_or(b.len(), |p| from + p + end.len())
    };
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' => {
                // '' and "" inside are escapes: the scan just resumes after each pair
                i = skip_to(i + 1, &b[i..=i]);
            }
            b'-' if b.get(i + 1) == Some(&b'-') => i = skip_to(i, b"\n"),
            b'/' if b.get(i + 1) == Some(&b'*') => i = skip_to(i + 2, b"*/"),
            b'$' => {
                let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                if digits > 0 {
                    let n = query[i + 1..i + 1 + digits].parse().unwrap_or(u32::MAX);
                    dollar.push(n);
                    i += 1 + digits;
                } else if kind == SqlKind::Postgres {
                    // a dollar-quoted string: $tag$ ... $tag$
                    let tag_len = b[i + 1..]
                        .iter()
                        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                        .count();
                    if b.get(i + 1 + tag_len) == Some(&b'$') {
                        let tag = &b[i..i + tag_len + 2];
                        i = skip_to(i + tag.len(), tag);
                    } else {
                        i += 1;
                    }
                } else {
                    return Err(
                        "named parameters are not supported: write $1 for the key".to_owned()
                    );
                }
            }
            b'?' => {
                let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                if digits > 0 && &query[i + 1..i + 1 + digits] != "1" {
                    return Err(format!(
                        "`?{}`: the query gets one parameter, the key; write $1",
                        &query[i + 1..i + 1 + digits]
                    ));
                }
                question += 1;
                i += 1 + digits;
            }
            b':' | b'@'
                if kind == SqlKind::Sqlite
                    && b.get(i + 1).is_some_and(|c| c.is_ascii_alphabetic()) =>
            {
                return Err("named parameters are not supported: write $1 for the key".to_owned());
            }
            _ => i += 1,
        }
    }
    if let Some(n) = dollar.iter().find(|n| **n != 1) {
        return Err(format!(
            "`${n}`: the query gets one parameter, the key, as $1"
        ));
    }
    match (dollar.is_empty(), question) {
        (true, 0) => Err("the query has no parameter: write $1 where the key goes".to_owned()),
        (false, 0) => Ok(SqlQuery(Arc::from(query))),
        (false, _) => Err("the query mixes $1 and ?: write $1".to_owned()),
        (true, _) if kind == SqlKind::Postgres => {
            Err("PostgreSQL parameters are written $1, not ?".to_owned())
        }
        (true, 1) => Ok(SqlQuery(Arc::from(query))),
        (true, n) => Err(format!(
            "the query has {n} `?` parameters; it gets one, the key"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_with_one_parameter() {
        let pg = SqlKind::Postgres;
        let lite = SqlKind::Sqlite;
        for (q, kind) in [
            (
                "SELECT password FROM mailbox WHERE username = $1 AND active = 1",
                pg,
            ),
            (
                "SELECT password FROM mailbox WHERE username = $1 AND active = 1",
                lite,
            ),
            ("SELECT p FROM u WHERE name = $1 OR alias = $1", pg),
            ("SELECT p FROM u WHERE name = ?", lite),
            ("SELECT p FROM u WHERE name = ?1", lite),
            (
                "SELECT p FROM u WHERE name = $1 AND note <> '$2 ?' -- $3 ?\n",
                pg,
            ),
            ("SELECT p FROM u /* ? $2 */ WHERE \"we?ird\" = $1", lite),
            ("SELECT $$ $2 $$ || p FROM u WHERE name = $1", pg),
            ("SELECT p FROM u WHERE name = $1 AND x = 'it''s ?'", lite),
        ] {
            assert!(
                check_query(q, kind).is_ok(),
                "{q}: {:?}",
                check_query(q, kind)
            );
        }
    }

    #[test]
    fn queries_refused() {
        let pg = SqlKind::Postgres;
        let lite = SqlKind::Sqlite;
        for (q, kind, why) in [
            ("", pg, "empty"),
            ("  ", lite, "empty"),
            ("SELECT password FROM mailbox", pg, "no parameter"),
            ("SELECT p FROM u WHERE a = $1 AND b = $2", pg, "`$2`"),
            ("SELECT p FROM u WHERE a = ?", pg, "not ?"),
            ("SELECT p FROM u WHERE a = ? AND b = ?", lite, "2 `?`"),
            ("SELECT p FROM u WHERE a = ?2", lite, "`?2`"),
            ("SELECT p FROM u WHERE a = $1 AND b = ?", lite, "mixes"),
            ("SELECT p FROM u WHERE a = :user", lite, "named"),
            ("SELECT p FROM u WHERE a = $user", lite, "named"),
            ("SELECT p FROM u WHERE a = '$1'", pg, "no parameter"),
        ] {
            let e = check_query(q, kind).expect_err(q);
            assert!(e.contains(why), "{q}: {e}");
        }
    }

    #[test]
    fn urls() {
        let config = Path::new("/etc/mtad/mtad.kdl");
        let t = DEFAULT_TIMEOUT;
        let s = SqlSource::parse("sqlite:users.db", config, t).unwrap();
        assert_eq!(s.kind(), SqlKind::Sqlite);
        assert_eq!(s.display(), "sqlite:/etc/mtad/users.db");
        let s = SqlSource::parse("sqlite:///var/lib/mtad/users.db", config, t).unwrap();
        assert_eq!(s.display(), "sqlite:/var/lib/mtad/users.db");
        let s = SqlSource::parse("sqlite://db/users.db", config, t).unwrap();
        assert_eq!(s.display(), "sqlite:/etc/mtad/db/users.db");
        let s = SqlSource::parse("postgres://mtad:s3cret@127.0.0.1:5433/mail", config, t).unwrap();
        assert_eq!(s.kind(), SqlKind::Postgres);
        assert_eq!(s.display(), "postgres://mtad@127.0.0.1:5433/mail");
        assert!(!format!("{s:?}").contains("s3cret"));
        let s = SqlSource::parse(
            "postgres://mtad@localhost/mail?host=/run/postgresql",
            config,
            t,
        )
        .unwrap();
        assert_eq!(s.display(), "postgres://mtad@/run/postgresql/mail");
        for ok in [
            "postgresql://mtad@localhost/mail",
            "postgres://mtad@[::1]:5432/mail",
            "postgres://mtad@localhost/mail?host=/run/postgresql",
        ] {
            let parsed = SqlSource::parse(ok, config, t);
            assert!(parsed.is_ok(), "{ok}: {parsed:?}");
        }
        for (bad, why) in [
            ("mysql://u@127.0.0.1/db", "not `mysql:`"),
            ("users.db", "not `users.db:`"),
            ("sqlite:", "names no file"),
            ("sqlite::memory:", "plain path"),
            ("sqlite:users.db?mode=rwc", "plain path"),
            ("postgres://u@db.example.test/mail", "not on this host"),
            ("postgres://u@10.0.0.5/mail", "not on this host"),
            ("postgres://u@127.0.0.1/mail?sslmode=require", "TLS"),
        ] {
            let e = SqlSource::parse(bad, config, t).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn sqlite_lookups() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let create = SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(create).await.unwrap();
        for stmt in [
            "CREATE TABLE t (k TEXT, v TEXT, n INTEGER)",
            "INSERT INTO t VALUES ('a', 'one', 1), ('b', NULL, 2), ('c', 'x', 3), ('c', 'y', 4)",
        ] {
            sqlx::query(stmt).execute(&pool).await.unwrap();
        }
        pool.close().await;
        let config = dir.path().join("mtad.kdl");
        let source = SqlSource::parse("sqlite:t.db", &config, DEFAULT_TIMEOUT).unwrap();
        let q = |text: &str| check_query(text, SqlKind::Sqlite).unwrap();
        let v = q("SELECT v FROM t WHERE k = $1");
        assert_eq!(
            source.lookup(&v, "a").await.unwrap().as_deref(),
            Some("one")
        );
        assert_eq!(source.lookup(&v, "b").await.unwrap(), None);
        assert_eq!(source.lookup(&v, "z").await.unwrap(), None);
        let e = source.lookup(&v, "c").await.unwrap_err().to_string();
        assert!(e.contains("more than one row"), "{e}");
        let e = source
            .lookup(&q("SELECT v, k FROM t WHERE k = ?"), "a")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 columns"), "{e}");
        let e = source
            .lookup(&q("SELECT n FROM t WHERE k = ?1"), "a")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("not text"), "{e}");
        let e = source
            .lookup(&q("SELECT v FROM nope WHERE k = $1"), "a")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such table"), "{e}");
        // read-only: the database is never written, nor created
        let e = source
            .lookup(&q("INSERT INTO t (k) VALUES ($1) RETURNING k"), "w")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("readonly"), "{e}");
        let missing = SqlSource::parse("sqlite:missing.db", &config, DEFAULT_TIMEOUT).unwrap();
        assert!(missing.lookup(&v, "a").await.is_err());
        assert!(!dir.path().join("missing.db").exists());
    }
}
