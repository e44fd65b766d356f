use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

use super::*;
use crate::lookup::sql::{SqlKind, check_query};

// `doveadm pw -s BLF-CRYPT -p 'correct horse'` and `doveadm pw -s SHA256-CRYPT -p
// 'correct horse'`: cheap schemes, so that the tests stay fast in debug builds
const BCRYPT: &str = "{BLF-CRYPT}$2y$05$niZ17LWc.DgJyQ.C7MOKrOB0zSfdWXGPb/TnerGEv2r.odMbrgE2G";
const SHA256: &str =
    "{SHA256-CRYPT}$5$8xe.OWTH2M7gY2Kw$JUJtcmd2xlK7ngGV07/B.hiuIVqLVydRxUcQ8mBwcmC";

/// Verifies each `(login, password, expected)`: `Some(user)` means `Ok(user)`, `None`
/// means `Failed`.
async fn expect(users: &Users, cases: &[(&str, &[u8], Option<&str>)]) {
    for (login, password, want) in cases {
        let want = want.map_or(AuthOutcome::Failed, |u| AuthOutcome::Ok(u.to_owned()));
        assert_eq!(users.verify(login, password).await, want, "{login}");
    }
}

fn file_users(text: &str) -> Users {
    Users::from_file("local", passwd::parse_passwd(text).unwrap())
}

#[tokio::test]
async fn file_users_verify() {
    let users = file_users(&format!(
        "alice@example.test:{BCRYPT}\nbob:{SHA256}\ncarol:{{PLAIN}}correct horse\n"
    ));
    let pw = b"correct horse";
    expect(
        &users,
        &[
            ("alice@example.test", pw, Some("alice@example.test")),
            ("ALICE@Example.test", pw, Some("alice@example.test")),
            ("bob", pw, Some("bob")),
            ("carol", pw, Some("carol")),
            ("bob", b"wrong", None),
            ("bob", b"", None),
            ("dave", pw, None),
            ("bob\u{0}", pw, None),
            ("", pw, None),
        ],
    )
    .await;
    let clone = users.clone();
    assert_eq!(clone.name(), "local");
    assert!(format!("{clone:?}").contains("file_users: 3"));
}

#[tokio::test]
async fn unknown_users_cost_a_verification() {
    // the file's only kind is bcrypt cost 5: an unknown user is verified against it;
    // the built-in Argon2 stand-in (64 MiB, much slower) is not used
    let users = file_users(&format!("alice:{BCRYPT}\n"));
    let start = std::time::Instant::now();
    assert_eq!(
        users.verify("nobody", b"correct horse").await,
        AuthOutcome::Failed
    );
    let unknown = start.elapsed();
    let start = std::time::Instant::now();
    assert_eq!(users.verify("alice", b"wrong").await, AuthOutcome::Failed);
    let known = start.elapsed();
    // no timing assertion (machines are noisy): both did one bcrypt verification,
    // which is what the stand-in's identity shows
    let Backend::File(file) = &users.inner.backend else {
        unreachable!()
    };
    assert_eq!(file.stand_in().unwrap().scheme(), passwd::Scheme::BlfCrypt);
    eprintln!("unknown user {unknown:?}, known user {known:?}");
}

#[test]
fn the_built_in_stand_in_parses() {
    assert_eq!(STAND_IN_HASH.scheme(), passwd::Scheme::Argon2id);
}

/// A SQLite users database like PostfixAdmin's `mailbox` table.
async fn mailbox_db(dir: &Path) {
    let options = SqliteConnectOptions::new()
        .filename(dir.join("users.db"))
        .create_if_missing(true);
    let pool = SqlitePool::connect_with(options).await.unwrap();
    sqlx::query("CREATE TABLE mailbox (username TEXT PRIMARY KEY, password TEXT, active INTEGER)")
        .execute(&pool)
        .await
        .unwrap();
    for (user, password, active) in [
        ("alice@example.test", Some(BCRYPT), 1),
        ("bob@example.test", Some(SHA256), 0),
        ("carol@example.test", None, 1),
        ("dave@example.test", Some("$2y$05$bare"), 1),
    ] {
        sqlx::query("INSERT INTO mailbox VALUES (?, ?, ?)")
            .bind(user)
            .bind(password)
            .bind(active)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
}

fn sql_users(dir: &Path, url: &str, query: &str) -> Users {
    let source = SqlSource::parse(url, &dir.join("mtad.kdl"), Duration::from_secs(5)).unwrap();
    let query = check_query(query, SqlKind::Sqlite).unwrap();
    Users::from_sql("mailbox", source, query)
}

#[tokio::test]
async fn sqlite_users_verify() {
    let dir = tempfile::tempdir().unwrap();
    mailbox_db(dir.path()).await;
    let users = sql_users(
        dir.path(),
        "sqlite:users.db",
        "SELECT password FROM mailbox WHERE username = $1 AND active = 1",
    );
    let pw = b"correct horse";
    expect(
        &users,
        &[
            ("Alice@example.test", pw, Some("alice@example.test")),
            ("alice@example.test", b"nope", None),
            // inactive, NULL password, unknown: all the same failure
            ("bob@example.test", pw, None),
            ("carol@example.test", pw, None),
            ("erin@example.test", pw, None),
        ],
    )
    .await;
    // a stored value that is not {SCHEME}hash: the table is broken, not the password
    match users.verify("dave@example.test", b"correct horse").await {
        AuthOutcome::Unavailable(reason) => {
            assert!(reason.contains("users `mailbox`"), "{reason}");
            assert!(reason.contains("no {SCHEME} prefix"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // `?` works as well as `$1` in SQLite
    let users = sql_users(
        dir.path(),
        "sqlite:users.db",
        "SELECT password FROM mailbox WHERE username = ?",
    );
    assert_eq!(
        users.verify("bob@example.test", b"correct horse").await,
        AuthOutcome::Ok("bob@example.test".to_owned())
    );
}

#[tokio::test]
async fn broken_sql_is_unavailable_never_ok() {
    let dir = tempfile::tempdir().unwrap();
    mailbox_db(dir.path()).await;
    for (url, query, why) in [
        (
            "sqlite:missing.db",
            "SELECT password FROM mailbox WHERE username = $1",
            "unable to open",
        ),
        (
            "sqlite:users.db",
            "SELECT password FROM nosuch WHERE username = $1",
            "no such table",
        ),
        (
            "sqlite:users.db",
            "SELECT password, active FROM mailbox WHERE username = $1",
            "2 columns",
        ),
        (
            "sqlite:users.db",
            "SELECT password FROM mailbox WHERE username <> $1",
            "more than one row",
        ),
    ] {
        let users = sql_users(dir.path(), url, query);
        match users.verify("alice@example.test", b"correct horse").await {
            AuthOutcome::Unavailable(reason) => assert!(reason.contains(why), "{reason}"),
            other => panic!("{url} {query}: {other:?}"),
        }
    }
}

/// With every verification slot taken, an AUTH waits a bounded time and then is a
/// temporary failure, never a session stuck behind the queue.
#[tokio::test]
async fn the_wait_for_a_verification_slot_is_bounded() {
    let all = u32::try_from(SLOTS.available_permits()).unwrap();
    let held = SLOTS.acquire_many(all).await.unwrap();
    let started = std::time::Instant::now();
    let got = check(STAND_IN_HASH.clone(), b"guess", Duration::from_millis(200)).await;
    drop(held);
    let reason = got.expect_err("no slot: a temporary failure");
    assert!(reason.contains("no password verification slot"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(2));
}
