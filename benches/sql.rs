//! SQL lookup tables: a lookup cached and uncached, per backend, and whether sessions
//! keep running while lookups wait for a slow database.
//!
//!     cargo bench --bench sql
//!     MTAD_BENCH_POSTGRES=postgres://postgres@127.0.0.1:5433/postgres \
//!     MTAD_BENCH_MYSQL=mysql://root@127.0.0.1:3307/test  cargo bench --bench sql
//!
//! (`benches/sql-bench.sh` starts a throwaway PostgreSQL and MariaDB and runs it.)
//! SQLite needs nothing. For each backend the bench fills a table `mtad_bench(k, v)`
//! with 10,000 rows and looks keys up through [`mtad::lookup::Table`] exactly as
//! policy rules do: the cache, and for a miss the hop to the SQL runtime and back.
//!
//! "Stalls" runs a 1 ms ticker on a 2-worker runtime while 4 tasks make uncached
//! lookups of a query that takes ~20 ms (SQLite, a recursive count), and reports how
//! late the ticker woke (p50/p99/max): lookups wait in `block_in_place`, so the
//! ticker — any other session — keeps its worker.
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) each part runs once.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use mtad::lookup::sql::{SqlSource, check_query};
use mtad::lookup::sql_table::CacheTtl;
use mtad::lookup::{SqlTable, Table};
use sqlx::Connection as _;

const ROWS: usize = 10_000;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The statements that create and fill `mtad_bench`.
fn statements() -> Vec<String> {
    let mut out = vec![
        "DROP TABLE IF EXISTS mtad_bench".to_owned(),
        "CREATE TABLE mtad_bench (k VARCHAR(255) PRIMARY KEY, v VARCHAR(255))".to_owned(),
    ];
    for chunk in (0..ROWS).collect::<Vec<_>>().chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|i| format!("('user{i}@example.test', 'example.test/user{i}/')"))
            .collect();
        out.push(format!(
            "INSERT INTO mtad_bench (k, v) VALUES {}",
            values.join(", ")
        ));
    }
    out
}

/// Creates and fills `mtad_bench` through a writable connection.
fn fill(name: &str, url: &str) {
    macro_rules! run {
        ($conn:ty) => {{
            let mut conn = <$conn>::connect(url).await.expect("connect");
            for s in statements() {
                sqlx::query(sqlx::AssertSqlSafe(s))
                    .execute(&mut conn)
                    .await
                    .expect("fill");
            }
        }};
    }
    rt().block_on(async {
        match name {
            "sqlite" => run!(sqlx::SqliteConnection),
            "postgresql" => run!(sqlx::PgConnection),
            _ => run!(sqlx::MySqlConnection),
        }
    });
}

fn table(url: &str, dir: &Path, query: &str, ttl: CacheTtl) -> Table {
    let source = SqlSource::parse(url, &dir.join("mtad.kdl"), Duration::from_secs(5)).unwrap();
    let query = check_query(query, source.kind()).unwrap();
    Table::sql(SqlTable::new(source, query, ttl))
}

const UNCACHED: CacheTtl = CacheTtl {
    found: Duration::ZERO,
    missing: Duration::ZERO,
};

fn backends(dir: &Path) -> Vec<(&'static str, String, String)> {
    let sqlite = dir.join("bench.db");
    let mut out = vec![(
        "sqlite",
        format!("sqlite:{}", sqlite.display()),
        format!("sqlite:{}?mode=rwc", sqlite.display()),
    )];
    if let Ok(url) = std::env::var("MTAD_BENCH_POSTGRES") {
        out.push(("postgresql", url.clone(), url));
    }
    if let Ok(url) = std::env::var("MTAD_BENCH_MYSQL") {
        out.push(("mariadb", url.clone(), url));
    }
    out
}

fn lookups(c: &mut Criterion, dir: &Path, smoke: bool) {
    for (name, url, writable) in backends(dir) {
        fill(name, &writable);
        let ph = if name == "mariadb" { "?" } else { "$1" };
        let query = format!("SELECT v FROM mtad_bench WHERE k = {ph}");
        let cached = table(&url, dir, &query, CacheTtl::default());
        let uncached = table(&url, dir, &query, UNCACHED);
        assert_eq!(
            cached.lookup("user42@example.test").unwrap().as_deref(),
            Some("example.test/user42/")
        );
        if smoke {
            assert!(uncached.lookup("nobody@example.test").unwrap().is_none());
            continue;
        }
        let mut group = c.benchmark_group(format!("sql {name} ({ROWS} rows)"));
        group.bench_function("cached hit", |b| {
            b.iter(|| cached.lookup(black_box("user42@example.test")).unwrap())
        });
        let mut i = 0usize;
        group.bench_function("uncached, from a thread", |b| {
            b.iter(|| {
                i = (i + 7919) % ROWS;
                uncached.lookup(&format!("user{i}@example.test")).unwrap()
            })
        });
        // as a session does: on a worker of a multi-threaded runtime
        let server = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let shared = Arc::new(table(&url, dir, &query, UNCACHED));
        group.bench_function("uncached, from a server worker", |b| {
            b.iter_custom(|iters| {
                let t = shared.clone();
                server.block_on(async move {
                    tokio::spawn(async move {
                        let start = Instant::now();
                        for n in 0..iters as usize {
                            let k = format!("user{}@example.test", (n * 7919) % ROWS);
                            black_box(t.lookup(&k).unwrap());
                        }
                        start.elapsed()
                    })
                    .await
                    .unwrap()
                })
            })
        });
        group.finish();
    }
}

/// How late a 1 ms ticker wakes while lookups wait for a slow database.
fn stalls(dir: &Path, smoke: bool) {
    let url = format!("sqlite:{}", dir.join("bench.db").display());
    let slow = table(
        &url,
        dir,
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) \
         SELECT $1 || count(*) FROM c",
        UNCACHED,
    );
    let slow = Arc::new(slow);
    let started = Instant::now();
    slow.lookup("warm-up").unwrap();
    let one = started.elapsed();
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let run_for = if smoke {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(5)
    };
    let (late, looked_up) = server.block_on(async move {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut workers = Vec::new();
        for w in 0..4 {
            let (t, stop) = (slow.clone(), stop.clone());
            workers.push(tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    t.lookup(&format!("w{w}-{n}")).unwrap();
                    n += 1;
                }
                n
            }));
        }
        let ticker = tokio::spawn(async move {
            let mut late = Vec::new();
            let end = Instant::now() + run_for;
            while Instant::now() < end {
                let t = Instant::now();
                tokio::time::sleep(Duration::from_millis(1)).await;
                late.push(t.elapsed().saturating_sub(Duration::from_millis(1)));
            }
            late
        });
        let mut late = ticker.await.unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut n = 0;
        for w in workers {
            n += w.await.unwrap();
        }
        late.sort();
        (late, n)
    });
    let pct = |p: f64| late[((late.len() as f64 * p) as usize).min(late.len() - 1)];
    println!(
        "stalls: one slow lookup {one:?}; {looked_up} lookups by 4 tasks on 2 workers in {run_for:?}; \
         1 ms ticker late by p50 {:?}, p99 {:?}, max {:?} ({} ticks)",
        pct(0.5),
        pct(0.99),
        late[late.len() - 1],
        late.len()
    );
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let dir = tempfile::tempdir().unwrap();
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(5));
    lookups(&mut c, dir.path(), smoke);
    stalls(dir.path(), smoke);
    if !smoke {
        c.final_summary();
    }
}
