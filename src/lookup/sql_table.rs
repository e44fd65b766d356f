//! SQL lookup tables: `table NAME sql="URL" query="SELECT ... WHERE key = $1"`.
//!
//! A lookup runs the query with the key as its one parameter and answers the single
//! text column of the single row (see [`SqlSource::lookup`]). Answers are cached for
//! a while ([`CacheTtl`]): found values for `cache-ttl` (default 60 s), "no such key"
//! for `negative-ttl` (default 10 s), in at most [`CACHE_ENTRIES`] entries per table.
//! Failures are never cached: the next lookup asks the database again.
//!
//! Policy evaluation is synchronous (rules and Rhai hooks run to their end without
//! awaiting), while sqlx is asynchronous. [`SqlTable::lookup`] therefore hands the
//! query to a small runtime of its own ([`sql_runtime`], two threads, where every SQL
//! table's pool lives) and waits for the answer. When the caller is a worker of the
//! server's multi-threaded runtime it waits inside `block_in_place`, so the worker's
//! other sessions move to another thread instead of stalling; a cache hit never
//! leaves the calling thread. A database that is down or slow yields a
//! [`LookupError`] within the source's timeout, which callers turn into a temporary
//! failure (451 4.3.0 in SMTP, a deferral in delivery), never an accept nor a 5xx.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::sql::{SqlQuery, SqlSource};

/// Most keys one table caches; when full, expired entries go, then the oldest half.
pub const CACHE_ENTRIES: usize = 10_000;

/// Why a lookup has no answer (the database is down, slow, or the query fails).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LookupError(pub String);

/// How long answers are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheTtl {
    /// A value found.
    pub found: Duration,
    /// No such key.
    pub missing: Duration,
}

impl Default for CacheTtl {
    fn default() -> Self {
        CacheTtl {
            found: Duration::from_secs(60),
            missing: Duration::from_secs(10),
        }
    }
}

/// A query against a database, with its cache.
pub struct SqlTable {
    source: SqlSource,
    query: SqlQuery,
    ttl: CacheTtl,
    cache: Mutex<HashMap<String, (Instant, Option<String>)>>,
}

impl std::fmt::Debug for SqlTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlTable")
            .field("source", &self.source)
            .field("query", &self.query)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl SqlTable {
    pub fn new(source: SqlSource, query: SqlQuery, ttl: CacheTtl) -> Self {
        SqlTable {
            source,
            query,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn source(&self) -> &SqlSource {
        &self.source
    }

    /// The value for `key` (compared as the database compares; the key is passed
    /// lowercased, as Postfix folds addresses and domains before table lookups).
    /// Blocking: see the module documentation.
    pub fn lookup(&self, key: &str) -> Result<Option<String>, LookupError> {
        let key = key.to_lowercase();
        if let Some(hit) = self.cached(&key) {
            return Ok(hit);
        }
        let (source, query, k) = (self.source.clone(), self.query.clone(), key.clone());
        let limit = self.source.timeout() + Duration::from_secs(1);
        let answer = block_on(async move { source.lookup(&query, &k).await }, limit)
            .ok_or_else(|| {
                LookupError(format!(
                    "{}: no answer within {:?}",
                    self.source.display(),
                    self.source.timeout()
                ))
            })?
            .map_err(|e| LookupError(e.to_string()))?;
        self.remember(key, answer.clone());
        Ok(answer)
    }

    /// Asks the database, bypassing the cache (`mtactl check --connect`).
    pub fn probe(&self, key: &str) -> Result<Option<String>, LookupError> {
        let (source, query, k) = (self.source.clone(), self.query.clone(), key.to_lowercase());
        let limit = self.source.timeout() + Duration::from_secs(1);
        block_on(async move { source.lookup(&query, &k).await }, limit)
            .ok_or_else(|| LookupError(format!("{}: no answer", self.source.display())))?
            .map_err(|e| LookupError(e.to_string()))
    }

    fn cached(&self, key: &str) -> Option<Option<String>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (at, value) = cache.get(key)?;
        let ttl = if value.is_some() {
            self.ttl.found
        } else {
            self.ttl.missing
        };
        (at.elapsed() < ttl).then(|| value.clone())
    }

    fn remember(&self, key: String, value: Option<String>) {
        let ttl = if value.is_some() {
            self.ttl.found
        } else {
            self.ttl.missing
        };
        if ttl.is_zero() {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_ENTRIES && !cache.contains_key(&key) {
            let (found, missing) = (self.ttl.found, self.ttl.missing);
            cache.retain(|_, (at, v)| at.elapsed() < if v.is_some() { found } else { missing });
            if cache.len() >= CACHE_ENTRIES {
                let mut times: Vec<Instant> = cache.values().map(|(at, _)| *at).collect();
                times.sort_unstable();
                let cut = times[times.len() / 2];
                cache.retain(|_, (at, _)| *at > cut);
            }
        }
        cache.insert(key, (Instant::now(), value));
    }

    /// Entries cached now (for tests).
    pub fn cached_entries(&self) -> usize {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The runtime SQL tables run their queries in, started on first use: two threads,
/// apart from the server's, so that a lookup waits the same way from any caller (a
/// server worker, a blocking thread, `mtactl`, a test's single-threaded runtime).
fn sql_runtime() -> Option<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("mtad-sql")
                .enable_all()
                .build()
                .map_err(|e| tracing::error!(error = %e, "cannot start the SQL lookup runtime"))
                .ok()
        })
        .as_ref()
}

thread_local! {
    /// The latest a lookup on this thread may wait until ([`WaitLimit`]).
    static WAIT_UNTIL: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Caps how long SQL lookups made on this thread wait for their answer, for as long
/// as it lives (restoring the previous cap when dropped): a Rhai hook's lookups end
/// at the hook's deadline instead of the source's `timeout` (the query itself goes on
/// in the SQL runtime and its answer is dropped). A lookup past the cap is a
/// [`LookupError`], like a timeout.
pub struct WaitLimit(Option<Instant>);

impl WaitLimit {
    pub fn set(until: Instant) -> WaitLimit {
        let outer = WAIT_UNTIL.get();
        WAIT_UNTIL.set(Some(outer.map_or(until, |o| o.min(until))));
        WaitLimit(outer)
    }
}

impl Drop for WaitLimit {
    fn drop(&mut self) {
        WAIT_UNTIL.set(self.0);
    }
}

/// Runs `fut` on the SQL runtime and waits for it, at most `limit` (and not past
/// this thread's [`WaitLimit`]). Policy services and DNS lists wait the same way
/// (their connections and the resolver's live on this runtime, which never ends).
/// `None`: no answer in time (the future goes on and its answer is dropped).
pub fn block_on<T: Send + 'static>(
    fut: impl Future<Output = T> + Send + 'static,
    limit: Duration,
) -> Option<T> {
    let limit = WAIT_UNTIL.get().map_or(limit, |u| {
        limit.min(u.saturating_duration_since(Instant::now()))
    });
    let runtime = sql_runtime()?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(fut.await);
    });
    let wait = || rx.recv_timeout(limit).ok();
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::sql::{SqlKind, check_query};

    fn sqlite_table(dir: &std::path::Path, ttl: CacheTtl) -> SqlTable {
        let db = dir.join("t.db");
        create_db(&db);
        let source = SqlSource::parse(
            &format!("sqlite:{}", db.display()),
            &dir.join("mtad.kdl"),
            Duration::from_secs(2),
        )
        .unwrap();
        let query = check_query("SELECT v FROM t WHERE k = $1", SqlKind::Sqlite).unwrap();
        SqlTable::new(source, query, ttl)
    }

    /// Creates the test database with sqlx on a runtime of its own (in a thread of its
    /// own: the caller may be inside a runtime).
    fn create_db(db: &std::path::Path) {
        let url = format!("sqlite:{}?mode=rwc", db.display());
        std::thread::spawn(move || create_in(&url)).join().unwrap();
    }

    fn create_in(url: &str) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                use sqlx::Connection as _;
                let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
                for s in [
                    "CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)",
                    "INSERT INTO t VALUES ('a@example.test', 'A')",
                ] {
                    sqlx::query(s).execute(&mut c).await.unwrap();
                }
            });
    }

    #[test]
    fn a_wait_limit_ends_the_wait_early() {
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            1
        };
        let started = Instant::now();
        let answer = {
            let _limit = WaitLimit::set(Instant::now() + Duration::from_millis(50));
            block_on(slow(), Duration::from_secs(10))
        };
        assert_eq!(answer, None);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // gone with its guard
        assert_eq!(WAIT_UNTIL.get(), None);
        assert_eq!(block_on(async { 2 }, Duration::from_secs(10)), Some(2));
    }

    #[test]
    fn answers_and_caches_found_and_missing_keys() {
        let dir = tempfile::tempdir().unwrap();
        let t = sqlite_table(dir.path(), CacheTtl::default());
        assert_eq!(t.lookup("A@Example.TEST").unwrap().as_deref(), Some("A"));
        assert_eq!(t.lookup("nobody@example.test").unwrap(), None);
        assert_eq!(t.cached_entries(), 2);
        // the database is gone: cached answers still come, others fail
        std::fs::remove_file(dir.path().join("t.db")).unwrap();
        assert_eq!(t.lookup("a@example.test").unwrap().as_deref(), Some("A"));
        assert_eq!(t.lookup("nobody@example.test").unwrap(), None);
    }

    #[test]
    fn failures_are_errors_and_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let t = sqlite_table(dir.path(), CacheTtl::default());
        std::fs::remove_file(dir.path().join("t.db")).unwrap();
        let err = t.lookup("a@example.test").unwrap_err();
        assert!(err.0.contains("t.db"), "{err}");
        assert_eq!(t.cached_entries(), 0);
    }

    #[test]
    fn zero_ttls_cache_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ttl = CacheTtl {
            found: Duration::ZERO,
            missing: Duration::ZERO,
        };
        let t = sqlite_table(dir.path(), ttl);
        assert_eq!(t.lookup("a@example.test").unwrap().as_deref(), Some("A"));
        assert_eq!(t.cached_entries(), 0);
    }

    #[tokio::test]
    async fn a_single_threaded_caller_gets_its_answer() {
        let dir = tempfile::tempdir().unwrap();
        let t = sqlite_table(dir.path(), CacheTtl::default());
        assert_eq!(t.lookup("a@example.test").unwrap().as_deref(), Some("A"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_worker_waits_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let t = sqlite_table(dir.path(), CacheTtl::default());
        assert_eq!(t.lookup("a@example.test").unwrap().as_deref(), Some("A"));
    }
}
