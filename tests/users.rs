//! `users` tables against what real tools make and real databases serve: hashes from
//! `doveadm pw` (Dovecot) made at test time, read through the configuration parser
//! and verified; a SQLite file; a PostgreSQL 15 server started on loopback, then
//! stopped, to see that verification answers Unavailable within its timeout.

mod common;

use common::peers::Postgres;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mtad::auth::{AuthOutcome, Users};
use mtad::config::{Config, render};

const PASSWORD: &str = "correct horse battery";

const HEAD: &str = "server {\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}\nlisten \"mx\" address=\"127.0.0.1:2525\"\n";

/// `doveadm pw -s SCHEME -p PASSWORD`: the stored form, `{SCHEME}hash`.
fn doveadm_pw(doveadm: &Path, scheme: &str, password: &str) -> String {
    let out = Command::new(doveadm)
        .args(["pw", "-s", scheme, "-p", password])
        .output()
        .expect("run doveadm");
    assert!(
        out.status.success(),
        "doveadm pw -s {scheme}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Writes `mtad.kdl` (HEAD + `body`) in `dir` and loads it.
fn load(dir: &Path, body: &str) -> Config {
    let path = dir.join("mtad.kdl");
    std::fs::write(&path, format!("{HEAD}{body}")).unwrap();
    Config::load(&path).unwrap_or_else(|e| panic!("{}", render(&e)))
}

fn ok(user: &str) -> AuthOutcome {
    AuthOutcome::Ok(user.to_owned())
}

/// Verifies each `(login, password, expected)`: `Some(user)` means `Ok(user)`, `None`
/// means `Failed`.
async fn expect(users: &Users, cases: &[(&str, &[u8], Option<&str>)]) {
    for (login, password, want) in cases {
        let want = want.map_or(AuthOutcome::Failed, ok);
        assert_eq!(users.verify(login, password).await, want, "{login}");
    }
}

const SCHEMES: &[&str] = &[
    "ARGON2ID",
    "ARGON2I",
    "BLF-CRYPT",
    "SHA512-CRYPT",
    "SHA256-CRYPT",
    "PLAIN",
    "CLEAR",
];

#[tokio::test]
async fn doveadm_hashes_in_a_users_file() {
    let Some(doveadm) =
        common::tool_or_skip("doveadm", "dovecot-core", "doveadm_hashes_in_a_users_file")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut file = String::from("# made by doveadm pw at test time\n");
    for scheme in SCHEMES {
        let user = format!("{}@example.test", scheme.to_lowercase());
        let stored = doveadm_pw(&doveadm, scheme, PASSWORD);
        assert!(stored.starts_with(&format!("{{{scheme}}}")), "{stored}");
        // some with passwd-file's other fields, as Dovecot's own files have them
        file.push_str(&format!("{user}:{stored}::::::\n"));
    }
    std::fs::write(dir.path().join("users.passwd"), file).unwrap();
    let config = load(dir.path(), "users \"local\" file=\"users.passwd\"\n");
    let users: &Users = &config.users["local"];
    for scheme in SCHEMES {
        let user = format!("{}@example.test", scheme.to_lowercase());
        assert_eq!(
            users.verify(&user, PASSWORD.as_bytes()).await,
            ok(&user),
            "{scheme}"
        );
        assert_eq!(
            users
                .verify(&user.to_uppercase(), PASSWORD.as_bytes())
                .await,
            ok(&user),
            "{scheme}: login names are lowercased, as Dovecot does"
        );
        assert_eq!(
            users.verify(&user, b"correct horse battery!").await,
            AuthOutcome::Failed,
            "{scheme}"
        );
    }
    assert_eq!(
        users
            .verify("nobody@example.test", PASSWORD.as_bytes())
            .await,
        AuthOutcome::Failed
    );
}

#[test]
fn mtactl_check_reports_users_file_errors_in_the_file() {
    let Some(doveadm) = common::tool_or_skip(
        "doveadm",
        "dovecot-core",
        "mtactl_check_reports_users_file_errors_in_the_file",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let good = doveadm_pw(&doveadm, "SHA512-CRYPT", PASSWORD);
    let truncated = &good[..good.len() - 5];
    std::fs::write(
        dir.path().join("users.passwd"),
        format!("alice:{good}\nbob:{truncated}\ncarol:{{SSHA}}abc\n"),
    )
    .unwrap();
    let config = dir.path().join("mtad.kdl");
    std::fs::write(
        &config,
        format!("{HEAD}users \"local\" file=\"users.passwd\"\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .args(["check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 errors"), "{err}");
    assert!(err.contains("[users.passwd:2:19]"), "{err}");
    assert!(err.contains("the hash part must be 86 characters"), "{err}");
    assert!(err.contains("[users.passwd:3:8]"), "{err}");
    assert!(err.contains("unknown password scheme `SSHA`"), "{err}");
    assert!(err.contains("users `local` is defined at"), "{err}");
}

#[tokio::test]
async fn sqlite_users_with_a_doveadm_hash() {
    let Some(doveadm) = common::tool_or_skip(
        "doveadm",
        "dovecot-core",
        "sqlite_users_with_a_doveadm_hash",
    ) else {
        return;
    };
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("db")).unwrap();
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("db/users.db"))
        .create_if_missing(true);
    let pool = SqlitePool::connect_with(options).await.unwrap();
    // PostfixAdmin's mailbox table, reduced to what the query reads
    sqlx::query("CREATE TABLE mailbox (username VARCHAR(255) PRIMARY KEY, password VARCHAR(255), active TINYINT(1))")
        .execute(&pool)
        .await
        .unwrap();
    for (user, scheme, active) in [
        ("alice@example.test", "ARGON2ID", 1),
        ("bob@example.test", "BLF-CRYPT", 1),
        ("carol@example.test", "SHA512-CRYPT", 0),
    ] {
        sqlx::query("INSERT INTO mailbox VALUES ($1, $2, $3)")
            .bind(user)
            .bind(doveadm_pw(&doveadm, scheme, PASSWORD))
            .bind(active)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    // relative to the configuration file's directory
    let config = load(
        dir.path(),
        "users \"mailbox\" sql=\"sqlite:db/users.db\" query=\"SELECT password FROM mailbox WHERE username = $1 AND active = 1\"\n",
    );
    let pw = PASSWORD.as_bytes();
    expect(
        &config.users["mailbox"],
        &[
            ("alice@example.test", pw, Some("alice@example.test")),
            ("bob@example.test", pw, Some("bob@example.test")),
            ("bob@example.test", b"x", None),
            ("carol@example.test", pw, None), // not active
            ("dave@example.test", pw, None),  // unknown
        ],
    )
    .await;
}

#[tokio::test]
async fn postgres_users_then_the_server_stops() {
    let test = "postgres_users_then_the_server_stops";
    let Some(doveadm) = common::tool_or_skip("doveadm", "dovecot-core", test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let query = "SELECT password FROM mailbox WHERE username = $1 AND active";
    let body = |port: u16| {
        format!(
            "users \"pg\" sql=\"postgres://postgres@127.0.0.1:{port}/postgres\" query=\"{query}\" timeout=\"2s\"\n\
             users \"slow\" sql=\"postgres://postgres@127.0.0.1:{port}/postgres\" query=\"SELECT password FROM mailbox, pg_sleep(3) WHERE username = $1\" timeout=\"1s\"\n"
        )
    };
    // the configuration loads with no database there at all (`mtactl check` does this)
    let config = load(dir.path(), &body(port));
    match config.users["pg"]
        .verify("alice@example.test", PASSWORD.as_bytes())
        .await
    {
        AuthOutcome::Unavailable(reason) => assert!(reason.contains("users `pg`"), "{reason}"),
        other => panic!("no server yet: {other:?}"),
    }

    let Some(mut pg) = Postgres::start(test) else {
        return;
    };
    pg.sql("CREATE TABLE mailbox (username VARCHAR(255) PRIMARY KEY, password VARCHAR(255) NOT NULL, active BOOLEAN NOT NULL)");
    let argon = doveadm_pw(&doveadm, "ARGON2ID", PASSWORD);
    let sha = doveadm_pw(&doveadm, "SHA512-CRYPT", PASSWORD);
    pg.sql(&format!(
        "INSERT INTO mailbox VALUES ('alice@example.test', '{argon}', true), ('bob@example.test', '{sha}', true), ('carol@example.test', '{sha}', false)"
    ));
    let config = load(dir.path(), &body(pg.port));
    let users = &config.users["pg"];
    let pw = PASSWORD.as_bytes();
    expect(
        users,
        &[
            ("alice@example.test", pw, Some("alice@example.test")),
            ("Bob@Example.test", pw, Some("bob@example.test")),
            ("alice@example.test", b"nope", None),
            ("carol@example.test", pw, None), // not active
            ("erin@example.test", pw, None),  // unknown
        ],
    )
    .await;
    // the same over the server's Unix socket
    let socket = load(
        dir.path(),
        &format!(
            "users \"sock\" sql=\"postgres://postgres@localhost:{}/postgres?host={}\" query=\"{query}\"\n",
            pg.port,
            pg.data.display()
        ),
    );
    expect(
        &socket.users["sock"],
        &[
            ("alice@example.test", pw, Some("alice@example.test")),
            ("alice@example.test", b"x", None),
        ],
    )
    .await;
    // concurrent sessions share the pool
    let many = (0..8).map(|_| users.verify("bob@example.test", pw));
    for outcome in futures_util::future::join_all(many).await {
        assert_eq!(outcome, ok("bob@example.test"));
    }

    // a query slower than its timeout: Unavailable once the timeout is up, not later
    let start = Instant::now();
    match config.users["slow"].verify("bob@example.test", pw).await {
        AuthOutcome::Unavailable(reason) => {
            assert!(reason.contains("no answer within 1s"), "{reason}")
        }
        other => panic!("slow query: {other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "{:?}",
        start.elapsed()
    );

    // the server goes away under a pool with open connections
    pg.stop();
    for user in ["alice@example.test", "erin@example.test"] {
        let start = Instant::now();
        match users.verify(user, pw).await {
            AuthOutcome::Unavailable(reason) => {
                assert!(reason.contains("users `pg`"), "{reason}");
                assert!(reason.contains("postgres://postgres@127.0.0.1"), "{reason}");
            }
            other => panic!("{user} with the server stopped: {other:?}"),
        }
        // the timeout is 2s; generous slack for a loaded machine, but no hang
        eprintln!(
            "{user}, server stopped: Unavailable after {:?}",
            start.elapsed()
        );
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "{user}: {:?}",
            start.elapsed()
        );
    }
}
