//! SQL sources: a database URL, checked when the configuration is read, and a small
//! connection pool opened on first use, through `sqlx` (SQLite, PostgreSQL and
//! MySQL/MariaDB).
//!
//! This is the part every SQL-backed lookup shares (the `users` SQL backend today,
//! SQL lookup tables later): a [`SqlSource`] is a database plus its pool and timeout,
//! a [`SqlQuery`] a statement with exactly one parameter (the key), and
//! [`SqlSource::lookup`] runs one against the other and returns the single text
//! column of the single row, if any.
//!
//! - **Nothing connects while the configuration is read**, so `mtactl check` works
//!   with the database down. [`SqlSource::parse`] only checks what can be checked
//!   without it: the URL's scheme (`sqlite:`, `postgres:`/`postgresql:`,
//!   `mysql:`/`mariadb:`), that a PostgreSQL or MySQL server is on this host
//!   (loopback or a Unix socket: mtad speaks to SQL servers without TLS, so
//!   credentials and hashes never cross a network), and [`check_query`] the query's
//!   parameter (`$1`, or `?` for MySQL). The pool is created on the first lookup,
//!   inside the tokio runtime (sqlx spawns its maintenance task there).
//! - **Every lookup has a deadline** (pool acquisition included): a database that is
//!   down, refuses, or is slow yields [`SqlError`], never a hang. Callers fail closed.
//! - The pool is small (at most [`MAX_CONNECTIONS`]); idle connections are closed
//!   after a minute, and each is pinged before use, so a restarted server is
//!   reconnected to transparently.
//! - A relative SQLite path resolves against the configuration file's directory, like
//!   every other file. SQLite databases are opened read-only and never created.
//! - The one column comes back as text whatever the database calls it: text as is,
//!   bytes when they are UTF-8 (MySQL's VARBINARY/BLOB, `CONCAT` of binary columns),
//!   integers in decimal (PostfixAdmin's `active`). Anything else is an error.
//! - The URL's password never appears in `Debug` output or error messages.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt as _;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlRow, MySqlSslMode};
use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgRow, PgSslMode};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqliteRow};
use sqlx::{AssertSqlSafe, ConnectOptions as _, Row as _};
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
    /// MySQL or MariaDB (one wire protocol).
    Mysql,
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
    Mysql(MySqlConnectOptions),
}

enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    Mysql(MySqlPool),
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
/// for SQLite one `?`, or for MySQL/MariaDB one `?` (its only form).
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
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            Some(SqlKind::Mysql)
        } else {
            None
        }
    }

    /// How a query of this kind writes the key, for messages.
    pub fn placeholder(self) -> &'static str {
        match self {
            SqlKind::Sqlite | SqlKind::Postgres => "$1",
            SqlKind::Mysql => "?",
        }
    }
}

impl SqlSource {
    /// Checks `url` and prepares its connection options, without connecting.
    /// `config_path` is the configuration file, against whose directory a relative
    /// SQLite path resolves. The error is one sentence for the `sql=` property.
    pub fn parse(
        url: &str,
        config_path: &Path,
        timeout: Duration,
    ) -> Result<SqlSource, InvalidSqlUrl> {
        Self::parse_url(url, config_path, timeout).map_err(InvalidSqlUrl)
    }

    /// [`SqlSource::parse`], its error as text.
    fn parse_url(url: &str, config_path: &Path, timeout: Duration) -> Result<SqlSource, String> {
        let (display, connect) = match SqlKind::of_url(url) {
            Some(SqlKind::Sqlite) => {
                let rest = url.strip_prefix("sqlite:").unwrap_or_default();
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
            }
            Some(SqlKind::Postgres) => {
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
            }
            Some(SqlKind::Mysql) => {
                let options = MySqlConnectOptions::from_str(url)
                    .map_err(|e| format!("invalid MySQL/MariaDB URL: {e}"))?;
                let options = mysql_checked(options)?;
                // the scheme as written: mysql or mariadb
                let scheme = url.split(':').next().unwrap_or("mysql");
                let user = options.get_username();
                let db = options.get_database().unwrap_or_default();
                let display = match options.get_socket() {
                    Some(socket) => format!(
                        "{scheme}://{user}@localhost/{db}?socket={}",
                        socket.display()
                    ),
                    None => format!(
                        "{scheme}://{user}@{}:{}/{db}",
                        options.get_host(),
                        options.get_port()
                    ),
                };
                (display, Connect::Mysql(options))
            }
            None => {
                let scheme = url.split(':').next().unwrap_or_default();
                return Err(format!(
                    "an SQL URL starts with sqlite:, postgres:// or mysql:// (mariadb://), not `{scheme}:`"
                ));
            }
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
            Connect::Mysql(_) => SqlKind::Mysql,
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
    /// the value is NULL, the text otherwise (bytes that are UTF-8 and integers count
    /// as text). More than one row, a column count other than one, or a value that is
    /// none of these are errors (the query is wrong, and guessing which row was meant
    /// could let the wrong one through).
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
            Pool::Sqlite(pool) => single_text(pool, query, key).await,
            Pool::Postgres(pool) => single_text(pool, query, key).await,
            Pool::Mysql(pool) => single_text(pool, query, key).await,
        }
    }

    fn open(&self) -> Pool {
        let timeout = self.inner.timeout;
        match &self.inner.connect {
            Connect::Sqlite(options) => {
                Pool::Sqlite(pool_options(timeout).connect_lazy_with(options.clone()))
            }
            Connect::Postgres(options) => {
                Pool::Postgres(pool_options(timeout).connect_lazy_with(options.clone()))
            }
            Connect::Mysql(options) => {
                Pool::Mysql(pool_options(timeout).connect_lazy_with(options.clone()))
            }
        }
    }
}

/// The same small pool for every database: acquisition bounded by the lookup's
/// deadline, idle connections closed, each pinged before use (so a restarted server
/// is reconnected to rather than answered with a dead connection's error).
fn pool_options<DB: sqlx::Database>(timeout: Duration) -> PoolOptions<DB> {
    PoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .min_connections(0)
        .acquire_timeout(timeout)
        .idle_timeout(IDLE_TIMEOUT)
        .test_before_acquire(true)
}

/// Runs `query` on `pool` with `key` bound, and returns the single text value of the
/// single row, reading at most two rows.
async fn single_text<DB>(
    pool: &sqlx::Pool<DB>,
    query: &SqlQuery,
    key: &str,
) -> Result<Option<String>, String>
where
    DB: sqlx::Database,
    DB::Row: TextColumn,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let mut rows = sqlx::query::<DB>(query.statement()).bind(key).fetch(pool);
    let Some(row) = rows.try_next().await.map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    if row.len() != 1 {
        return Err(format!(
            "the query returns {} columns; it must return one",
            row.len()
        ));
    }
    let value = row.text()?;
    if rows.try_next().await.map_err(|e| e.to_string())?.is_some() {
        return Err("the query returns more than one row for one key".to_owned());
    }
    Ok(value)
}

/// A row whose first column reads as text: text as is, bytes if they are UTF-8,
/// integers in decimal; NULL is `None`. One behaviour for every database, so a query
/// moved from SQLite to PostgreSQL or MySQL answers the same.
trait TextColumn: sqlx::Row {
    fn text(&self) -> Result<Option<String>, String>;
}

/// [`TextColumn::text`] for the types every database decodes; `unsigned` reads what
/// only some have (MySQL's UNSIGNED integers), `None` when it does not apply.
fn text_of<R>(
    row: &R,
    unsigned: impl Fn(&R) -> Option<Option<String>>,
) -> Result<Option<String>, String>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i16: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let text_error = match row.try_get::<Option<String>, _>(0) {
        Ok(text) => return Ok(text),
        Err(e) => e,
    };
    if let Ok(bytes) = row.try_get::<Option<Vec<u8>>, _>(0) {
        return bytes
            .map(String::from_utf8)
            .transpose()
            .map_err(|_| "the query's column holds bytes that are not UTF-8 text".to_owned());
    }
    if let Ok(n) = row.try_get::<Option<i64>, _>(0) {
        return Ok(n.map(|n| n.to_string()));
    }
    if let Ok(n) = row.try_get::<Option<i32>, _>(0) {
        return Ok(n.map(|n| n.to_string()));
    }
    if let Ok(n) = row.try_get::<Option<i16>, _>(0) {
        return Ok(n.map(|n| n.to_string()));
    }
    if let Some(n) = unsigned(row) {
        return Ok(n);
    }
    Err(format!(
        "the query's column is neither text nor an integer: {text_error}"
    ))
}

impl TextColumn for SqliteRow {
    fn text(&self) -> Result<Option<String>, String> {
        text_of(self, |_| None)
    }
}

impl TextColumn for PgRow {
    fn text(&self) -> Result<Option<String>, String> {
        text_of(self, |_| None)
    }
}

impl TextColumn for MySqlRow {
    fn text(&self) -> Result<Option<String>, String> {
        text_of(self, |row| {
            let n = row.try_get::<Option<u64>, _>(0).ok()?;
            Some(n.map(|n| n.to_string()))
        })
    }
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
    let tls = matches!(
        options.get_ssl_mode(),
        PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull
    );
    local_without_tls(
        tls.then_some("sslmode"),
        options.get_socket().is_none().then(|| options.get_host()),
        "postgres://USER@localhost/DB?host=/run/postgresql",
    )?;
    Ok(options
        .ssl_mode(PgSslMode::Disable)
        .application_name("mtad")
        .disable_statement_logging())
}

/// The same for MySQL/MariaDB, whose Unix socket is `?socket=PATH`.
fn mysql_checked(options: MySqlConnectOptions) -> Result<MySqlConnectOptions, String> {
    let tls = matches!(
        options.get_ssl_mode(),
        MySqlSslMode::Required | MySqlSslMode::VerifyCa | MySqlSslMode::VerifyIdentity
    );
    local_without_tls(
        tls.then_some("ssl-mode"),
        options.get_socket().is_none().then(|| options.get_host()),
        "mysql://USER:PASSWORD@localhost/DB?socket=/run/mysqld/mysqld.sock",
    )?;
    Ok(options
        .ssl_mode(MySqlSslMode::Disabled)
        .disable_statement_logging())
}

/// mtad talks to SQL servers without TLS, so credentials and hashes never cross a
/// network: `tls_option` is the URL option that demands TLS, if it does; `host` the
/// server's host when it is not reached by a Unix socket, which must then be
/// loopback. `socket_url` shows the Unix socket form of the URL.
fn local_without_tls(
    tls_option: Option<&str>,
    host: Option<&str>,
    socket_url: &str,
) -> Result<(), String> {
    if let Some(option) = tls_option {
        return Err(format!(
            "{option} requires TLS, which mtad does not speak to SQL servers: connect over loopback or a Unix socket"
        ));
    }
    let Some(host) = host else {
        return Ok(());
    };
    let local = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if local {
        Ok(())
    } else {
        Err(format!(
            "`{host}` is not on this host: mtad talks to SQL servers without TLS, so only loopback (127.0.0.1, ::1, localhost) or a Unix socket ({socket_url}) is allowed"
        ))
    }
}

/// Checks that `query` has exactly one parameter, in a form `kind` understands:
/// `$1` (as often as needed) for PostgreSQL and SQLite, or one `?` (or `?1`) for
/// SQLite, or one bare `?` for MySQL/MariaDB (whose only form it is). Quoted strings
/// (with MySQL's backslash escapes), quoted identifiers (MySQL's backticks too) and
/// comments (MySQL's `#` too) are skipped. The error is one sentence for the
/// `query=` property.
pub fn check_query(query: &str, kind: SqlKind) -> Result<SqlQuery, InvalidQuery> {
    query_parameters(query, kind).map_err(InvalidQuery)
}

/// An `sql=` URL that mtad cannot use (its syntax, a TLS setting, a host that is not
/// this one); the text is one sentence for the `sql=` property.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSqlUrl(String);

/// A `query=` whose parameters are not exactly one key in a form the database
/// understands; the text is one sentence for the `query=` property.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidQuery(String);

/// [`check_query`], its error as text.
fn query_parameters(query: &str, kind: SqlKind) -> Result<SqlQuery, String> {
    if query.trim().is_empty() {
        return Err("the query is empty".to_owned());
    }
    let mysql = kind == SqlKind::Mysql;
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
            quote @ (b'\'' | b'"') if mysql => {
                // backslash escapes; '' and "" resume the scan after each pair
                i += 1;
                while i < b.len() && b[i] != quote {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'\'' | b'"' => {
                // '' and "" inside are escapes: the scan just resumes after each pair
                i = skip_to(i + 1, &b[i..=i]);
            }
            b'`' if mysql => i = skip_to(i + 1, b"`"),
            b'#' if mysql => i = skip_to(i, b"\n"),
            b'-' if b.get(i + 1) == Some(&b'-') => i = skip_to(i, b"\n"),
            b'/' if b.get(i + 1) == Some(&b'*') => i = skip_to(i + 2, b"*/"),
            b'$' if mysql && i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_') => {
                // inside a MySQL identifier (`tbl$1`)
                i += 1;
            }
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
                } else if mysql {
                    // `$` may be part of a MySQL identifier
                    i += 1;
                } else {
                    return Err(
                        "named parameters are not supported: write $1 for the key".to_owned()
                    );
                }
            }
            b'?' => {
                let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                let number = &query[i + 1..i + 1 + digits];
                if mysql && digits > 0 {
                    return Err(format!(
                        "`?{number}`: MySQL/MariaDB parameters are a bare ?, without a number"
                    ));
                }
                if digits > 0 && number != "1" {
                    return Err(format!(
                        "`?{number}`: the query gets one parameter, the key; write $1"
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
    if let Some(n) = dollar.first().filter(|_| mysql) {
        return Err(format!(
            "`${n}`: MySQL/MariaDB parameters are written ?, not $1"
        ));
    }
    if let Some(n) = dollar.iter().find(|n| **n != 1) {
        return Err(format!(
            "`${n}`: the query gets one parameter, the key, as $1"
        ));
    }
    match (dollar.is_empty(), question) {
        (true, 0) => Err(format!(
            "the query has no parameter: write {} where the key goes",
            kind.placeholder()
        )),
        (false, 0) => Ok(SqlQuery(Arc::from(query))),
        (false, _) => Err("the query mixes $1 and ?: write $1".to_owned()),
        (true, _) if kind == SqlKind::Postgres => {
            Err("PostgreSQL parameters are written $1, not ?".to_owned())
        }
        (true, 1) => Ok(SqlQuery(Arc::from(query))),
        (true, n) => Err(format!(
            "the query has {n} `?` parameters; it gets one, the key{}",
            if mysql {
                " (MySQL/MariaDB binds it once: use it once, e.g. in a derived table)"
            } else {
                ""
            }
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
        let my = SqlKind::Mysql;
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
            (
                "SELECT password FROM mailbox WHERE username = ? AND active = 1",
                my,
            ),
            ("SELECT p FROM u WHERE name = ? AND x = 'it\\'s ?' # ?", my),
            (
                "SELECT `p?` FROM u WHERE \"a\\\"?\" <> name AND name = ?",
                my,
            ),
            ("SELECT p$1 FROM u /* ? */ WHERE name = ? -- ?\n", my),
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
        let my = SqlKind::Mysql;
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
            ("SELECT p FROM u WHERE a = $1", my, "written ?, not $1"),
            ("SELECT p FROM u WHERE a = ? AND b = $2", my, "written ?"),
            (
                "SELECT p FROM u WHERE a = ? AND b = ?",
                my,
                "2 `?` parameters",
            ),
            ("SELECT p FROM u WHERE a = ?1", my, "bare ?"),
            ("SELECT p FROM u WHERE a = 'it\\'s ?'", my, "write ? where"),
            ("SELECT p FROM u WHERE a = 1 # ?", my, "no parameter"),
            ("SELECT `?` FROM u", my, "no parameter"),
        ] {
            let e = check_query(q, kind).expect_err(q).to_string();
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
        let s = SqlSource::parse("mysql://mtad:s3cret@127.0.0.1:3307/mail", config, t).unwrap();
        assert_eq!(s.kind(), SqlKind::Mysql);
        assert_eq!(s.display(), "mysql://mtad@127.0.0.1:3307/mail");
        assert!(!format!("{s:?}").contains("s3cret"));
        let s = SqlSource::parse(
            "mariadb://mtad:s3cret@localhost/mail?socket=/run/mysqld/mysqld.sock",
            config,
            t,
        )
        .unwrap();
        assert_eq!(s.kind(), SqlKind::Mysql);
        assert_eq!(
            s.display(),
            "mariadb://mtad@localhost/mail?socket=/run/mysqld/mysqld.sock"
        );
        assert!(!format!("{s:?}").contains("s3cret"));
        for ok in [
            "postgresql://mtad@localhost/mail",
            "postgres://mtad@[::1]:5432/mail",
            "postgres://mtad@localhost/mail?host=/run/postgresql",
            "mysql://mtad@localhost/mail",
            "mysql://mtad@[::1]:3306/mail",
            "mariadb://mtad@127.0.0.1/mail?ssl-mode=disabled",
            // the socket decides: the host is not used
            "mysql://mtad@db.example.test/mail?socket=/run/mysqld/mysqld.sock",
        ] {
            let parsed = SqlSource::parse(ok, config, t);
            assert!(parsed.is_ok(), "{ok}: {parsed:?}");
        }
        for (bad, why) in [
            ("mssql://u@127.0.0.1/db", "not `mssql:`"),
            ("mysql://u@db.example.test/mail", "not on this host"),
            ("mariadb://u@192.0.2.1:3306/mail", "?socket=/run/mysqld"),
            ("mysql://u@127.0.0.1/mail?ssl-mode=required", "TLS"),
            ("mysql://u@127.0.0.1/mail?ssl-mode=verify_identity", "TLS"),
            (
                "mysql://u@127.0.0.1/mail?ssl-mode=nonsense",
                "MySQL/MariaDB URL",
            ),
            ("users.db", "not `users.db:`"),
            ("sqlite:", "names no file"),
            ("sqlite::memory:", "plain path"),
            ("sqlite:users.db?mode=rwc", "plain path"),
            ("postgres://u@db.example.test/mail", "not on this host"),
            ("postgres://u@10.0.0.5/mail", "not on this host"),
            ("postgres://u@127.0.0.1/mail?sslmode=require", "TLS"),
        ] {
            let e = SqlSource::parse(bad, config, t).expect_err(bad).to_string();
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
            "CREATE TABLE t (k TEXT, v TEXT, n INTEGER, bin BLOB, f REAL)",
            "INSERT INTO t VALUES ('a', 'one', 1, X'6F6E65', 0.5), ('b', NULL, 2, X'FF', NULL), ('c', 'x', 3, NULL, NULL), ('c', 'y', 4, NULL, NULL)",
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
        // integers and UTF-8 bytes read as text, like on the other databases
        let n = q("SELECT n FROM t WHERE k = ?1");
        assert_eq!(source.lookup(&n, "a").await.unwrap().as_deref(), Some("1"));
        let bin = q("SELECT bin FROM t WHERE k = ?");
        assert_eq!(
            source.lookup(&bin, "a").await.unwrap().as_deref(),
            Some("one")
        );
        let e = source.lookup(&bin, "b").await.unwrap_err().to_string();
        assert!(e.contains("not UTF-8"), "{e}");
        let f = q("SELECT f FROM t WHERE k = ?");
        let e = source.lookup(&f, "a").await.unwrap_err().to_string();
        assert!(e.contains("neither text nor an integer"), "{e}");
        assert_eq!(source.lookup(&f, "b").await.unwrap(), None);
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
