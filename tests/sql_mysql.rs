//! The SQL layer against a real MariaDB (Debian's, started on loopback by the test,
//! with PostfixAdmin's tables and a user that needs its password and may only
//! SELECT): lookups over TCP and over the Unix socket, columns of every shape read as
//! text, queries checked when the configuration is read, and every failure (wrong
//! password, server stopped, query too slow) an error within the deadline, never a
//! hang and never an answer; a restarted server is used again.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::peers::Mariadb;
use mtad::config::{Config, render};
use mtad::lookup::sql::{SqlError, SqlKind, SqlSource, check_query};

/// PostfixAdmin's `mailbox` and `alias` (the columns its MySQL schema has, in its
/// types), plus a table of the shapes a hand-written query may return.
const SCHEMA: &str = "
CREATE TABLE mailbox (
    username VARCHAR(255) NOT NULL PRIMARY KEY,
    password VARCHAR(255) NOT NULL,
    name VARCHAR(255) NOT NULL DEFAULT '',
    maildir VARCHAR(255) NOT NULL,
    quota BIGINT(20) NOT NULL DEFAULT 0,
    local_part VARCHAR(255) NOT NULL,
    domain VARCHAR(255) NOT NULL,
    created DATETIME NOT NULL DEFAULT '2000-01-01 00:00:00',
    modified DATETIME NOT NULL DEFAULT '2000-01-01 00:00:00',
    active TINYINT(1) NOT NULL DEFAULT 1
) DEFAULT CHARSET=utf8mb4;
CREATE TABLE alias (
    address VARCHAR(255) NOT NULL PRIMARY KEY,
    goto TEXT NOT NULL,
    domain VARCHAR(255) NOT NULL,
    active TINYINT(1) NOT NULL DEFAULT 1
) DEFAULT CHARSET=utf8mb4;
CREATE TABLE domain (
    domain VARCHAR(255) NOT NULL PRIMARY KEY,
    description VARCHAR(255) NOT NULL DEFAULT '',
    transport VARCHAR(255) DEFAULT NULL,
    active TINYINT(1) NOT NULL DEFAULT 1
) DEFAULT CHARSET=utf8mb4;
INSERT INTO domain (domain, transport, active) VALUES
    ('example.test', 'virtual', 1), ('old.example.test', NULL, 0);
CREATE TABLE shapes (
    k VARCHAR(32) NOT NULL,
    bin VARBINARY(64),
    blob_col BLOB,
    big BIGINT UNSIGNED,
    price DECIMAL(5,2)
);
INSERT INTO mailbox (username, password, maildir, local_part, domain, active) VALUES
    ('alice@example.test', '{SHA512-CRYPT}$6$alice', 'example.test/alice/', 'alice', 'example.test', 1),
    ('carol@example.test', '{SHA512-CRYPT}$6$carol', 'example.test/carol/', 'carol', 'example.test', 0);
INSERT INTO alias (address, goto, domain) VALUES
    ('postmaster@example.test', 'alice@example.test', 'example.test'),
    ('dup@example.test', 'a@example.test', 'example.test');
INSERT INTO shapes VALUES
    ('a', X'616C696365', 'blob text', 18446744073709551615, 1.50),
    ('b', X'FF00', NULL, NULL, NULL),
    ('two', NULL, NULL, 1, NULL),
    ('two', NULL, NULL, 2, NULL);
";

fn source(url: &str, timeout: Duration) -> SqlSource {
    SqlSource::parse(url, Path::new("/etc/mtad/mtad.kdl"), timeout).unwrap()
}

async fn lookup(source: &SqlSource, query: &str, key: &str) -> Result<Option<String>, SqlError> {
    let query = check_query(query, source.kind()).unwrap();
    source.lookup(&query, key).await
}

async fn text(source: &SqlSource, query: &str, key: &str) -> Option<String> {
    lookup(source, query, key)
        .await
        .unwrap_or_else(|e| panic!("{query} ({key}): {e}"))
}

async fn error(source: &SqlSource, query: &str, key: &str) -> String {
    match lookup(source, query, key).await {
        Err(e) => e.to_string(),
        Ok(v) => panic!("{query} ({key}): {v:?}, expected an error"),
    }
}

#[tokio::test]
async fn mariadb_lookups_read_text_integers_and_bytes() {
    let Some(db) = Mariadb::start("mariadb_lookups_read_text_integers_and_bytes") else {
        return;
    };
    eprintln!("MariaDB started in {:?}", db.started_in);
    db.sql(SCHEMA);
    let tcp = source(&db.url(), Duration::from_secs(5));
    assert_eq!(tcp.kind(), SqlKind::Mysql);
    assert!(!format!("{tcp:?}").contains(Mariadb::PASSWORD));
    let password = "SELECT password FROM mailbox WHERE username = ? AND active = 1";
    assert_eq!(
        text(&tcp, password, "alice@example.test").await.as_deref(),
        Some("{SHA512-CRYPT}$6$alice")
    );
    assert_eq!(text(&tcp, password, "carol@example.test").await, None); // not active
    assert_eq!(text(&tcp, password, "nobody@example.test").await, None);
    // the key is bound, never spliced in
    assert_eq!(text(&tcp, password, "' OR '1'='1").await, None);
    let goto = "SELECT goto FROM alias WHERE address = ? AND active = '1'";
    assert_eq!(
        text(&tcp, goto, "postmaster@example.test").await.as_deref(),
        Some("alice@example.test")
    );

    // the key wanted twice: bound once, in a derived table (as docs/configuration.md says)
    let twice =
        "SELECT password FROM (SELECT ? AS k) p JOIN mailbox ON username = p.k OR local_part = p.k";
    for key in ["alice@example.test", "alice"] {
        assert_eq!(
            text(&tcp, twice, key).await.as_deref(),
            Some("{SHA512-CRYPT}$6$alice")
        );
    }

    // integers, signed and unsigned, in decimal; PostfixAdmin's TINYINT(1) `active`
    let active = "SELECT active FROM mailbox WHERE username = ?";
    assert_eq!(
        text(&tcp, active, "carol@example.test").await.as_deref(),
        Some("0")
    );
    let count = "SELECT COUNT(*) FROM mailbox WHERE domain = ?";
    assert_eq!(
        text(&tcp, count, "example.test").await.as_deref(),
        Some("2")
    );
    let big = "SELECT big FROM shapes WHERE k = ?";
    assert_eq!(
        text(&tcp, big, "a").await.as_deref(),
        Some("18446744073709551615")
    );
    assert_eq!(text(&tcp, big, "b").await, None); // NULL
    // bytes that are UTF-8, whatever the column or expression
    let bin = "SELECT bin FROM shapes WHERE k = ?";
    assert_eq!(text(&tcp, bin, "a").await.as_deref(), Some("alice"));
    assert!(error(&tcp, bin, "b").await.contains("not UTF-8"));
    let blob = "SELECT blob_col FROM shapes WHERE k = ?";
    assert_eq!(text(&tcp, blob, "a").await.as_deref(), Some("blob text"));
    let concat = "SELECT CONCAT(bin, '@', ?) FROM shapes WHERE k = 'a'";
    assert_eq!(
        text(&tcp, concat, "example.test").await.as_deref(),
        Some("alice@example.test")
    );
    let maildir = "SELECT CONCAT(domain, '/', local_part, '/') FROM mailbox WHERE username = ?";
    assert_eq!(
        text(&tcp, maildir, "alice@example.test").await.as_deref(),
        Some("example.test/alice/")
    );
    // what is not text, bytes or an integer, and queries that are wrong
    let e = error(&tcp, "SELECT price FROM shapes WHERE k = ?", "a").await;
    assert!(e.contains("neither text nor an integer"), "{e}");
    let e = error(&tcp, "SELECT k, big FROM shapes WHERE k = ?", "a").await;
    assert!(e.contains("2 columns"), "{e}");
    let e = error(&tcp, big, "two").await;
    assert!(e.contains("more than one row"), "{e}");
    let e = error(&tcp, "SELECT x FROM nope WHERE k = ?", "a").await;
    assert!(e.contains("nope"), "{e}");
    // the grants hold: the user reads and nothing else
    let e = error(
        &tcp,
        "DELETE FROM alias WHERE address = ?",
        "dup@example.test",
    )
    .await;
    assert!(e.contains("denied"), "{e}");

    // the same database over its Unix socket, named either way
    for scheme in ["mysql", "mariadb"] {
        let url = format!(
            "{scheme}://{}:{}@localhost/{}?socket={}",
            Mariadb::USER,
            Mariadb::PASSWORD,
            Mariadb::DATABASE,
            db.socket.display()
        );
        let socket = source(&url, Duration::from_secs(5));
        assert!(socket.display().contains("?socket="), "{socket:?}");
        assert_eq!(
            text(&socket, password, "alice@example.test")
                .await
                .as_deref(),
            Some("{SHA512-CRYPT}$6$alice")
        );
    }

    // concurrent lookups share the small pool
    let many = (0..12).map(|_| lookup(&tcp, active, "alice@example.test"));
    for got in futures_util::future::join_all(many).await {
        assert_eq!(got.unwrap().as_deref(), Some("1"));
    }

    // slower than its deadline: an error when the deadline is up, not later
    let slow = source(&db.url(), Duration::from_secs(1));
    let start = Instant::now();
    match lookup(&slow, "SELECT CONCAT(?, SLEEP(3))", "x").await {
        Err(SqlError::Timeout { timeout, .. }) => assert_eq!(timeout, Duration::from_secs(1)),
        other => panic!("slow query: {other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn mariadb_failures_are_errors_within_the_deadline_and_a_restart_is_reconnected() {
    let test = "mariadb_failures_are_errors_within_the_deadline_and_a_restart_is_reconnected";
    let Some(mut db) = Mariadb::start(test) else {
        return;
    };
    db.sql(SCHEMA);
    let deadline = Duration::from_secs(2);
    let password = "SELECT password FROM mailbox WHERE username = ? AND active = 1";
    let alice = Some("{SHA512-CRYPT}$6$alice".to_owned());

    // a wrong password: refused, and the message does not show either password
    let wrong = source(
        &format!(
            "mysql://{}:not-the-pw@127.0.0.1:{}/{}",
            Mariadb::USER,
            db.port,
            Mariadb::DATABASE
        ),
        deadline,
    );
    let start = Instant::now();
    let e = error(&wrong, password, "alice@example.test").await;
    eprintln!("wrong password: {e} after {:?}", start.elapsed());
    assert!(
        start.elapsed() < deadline + Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert!(
        !e.contains("not-the-pw") && !e.contains(Mariadb::PASSWORD),
        "{e}"
    );
    assert!(
        e.contains(&format!("mysql://mtad@127.0.0.1:{}/mail", db.port)),
        "{e}"
    );

    // the server restarts under a pool holding an idle connection: pinged, replaced
    let tcp = source(&db.url(), deadline);
    assert_eq!(text(&tcp, password, "alice@example.test").await, alice);
    db.stop();
    db.restart();
    assert_eq!(text(&tcp, password, "alice@example.test").await, alice);

    // the server is gone: an error within the deadline, for a pooled connection and
    // for a new one, never an answer
    db.stop();
    for key in ["alice@example.test", "nobody@example.test"] {
        let start = Instant::now();
        let e = error(&tcp, password, key).await;
        eprintln!("{key}, server stopped: {e} after {:?}", start.elapsed());
        assert!(e.contains("mysql://mtad@127.0.0.1"), "{e}");
        assert!(
            start.elapsed() < deadline + Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }
    // and back
    db.restart();
    assert_eq!(text(&tcp, password, "alice@example.test").await, alice);
    assert_eq!(text(&tcp, password, "nobody@example.test").await, None);
}

/// seed 002's virtual domains, aliases and mailboxes as `table` nodes on PostfixAdmin's
/// tables, read by `mtactl lookup` (`SELECT 1`, an integer, answers for a set);
/// with the server stopped, an error naming the table, never "not found".
#[test]
fn mtactl_lookup_reads_postfixadmin_tables_from_mariadb() {
    let Some(mut db) = Mariadb::start("mtactl_lookup_reads_postfixadmin_tables_from_mariadb")
    else {
        return;
    };
    db.sql(SCHEMA);
    let dir = tempfile::tempdir().unwrap();
    let url = db.url();
    std::fs::write(
        dir.path().join("mtad.kdl"),
        format!(
            r#"server {{
    hostname "mx.example.test"
    spool "spool"
}}
listen "mx" address="127.0.0.1:2525"
table "virtual_domains" sql="{url}" query="SELECT 1 FROM domain WHERE domain = ? AND active = 1" timeout="2s"
table "virtual_aliases" sql="{url}" query="SELECT goto FROM alias WHERE address = ? AND active = 1" timeout="2s"
table "virtual_mailboxes" sql="{url}" query="SELECT maildir FROM mailbox WHERE username = ? AND active = 1" timeout="2s"
domains "virtual" table="virtual_domains"
"#
        ),
    )
    .unwrap();
    let lookup = |table: &str, key: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mtactl"))
            .args(["lookup", "--config"])
            .arg(dir.path().join("mtad.kdl"))
            .args([table, key])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (table, key, want) in [
        ("virtual_domains", "example.test", "1\n"),
        ("virtual", "example.test", "yes\n"),
        (
            "virtual_aliases",
            "postmaster@example.test",
            "alice@example.test\n",
        ),
        (
            "virtual_mailboxes",
            "alice@example.test",
            "example.test/alice/\n",
        ),
    ] {
        let (code, out, err) = lookup(table, key);
        assert_eq!(
            (code, out.as_str()),
            (Some(0), want),
            "{table} {key}: {err}"
        );
    }
    for (table, key) in [
        ("virtual_domains", "old.example.test"),
        ("virtual", "elsewhere.test"),
        ("virtual_mailboxes", "carol@example.test"),
    ] {
        let (code, out, err) = lookup(table, key);
        assert_eq!((code, out.as_str()), (Some(1), ""), "{table} {key}: {err}");
    }
    db.stop();
    let (code, out, err) = lookup("virtual_aliases", "postmaster@example.test");
    assert_eq!((code, out.as_str()), (Some(2), ""), "{err}");
    assert!(
        err.contains("`virtual_aliases`: temporary lookup failure"),
        "{err}"
    );
    assert!(err.contains("mysql://mtad@127.0.0.1"), "{err}");
    assert!(!err.contains(Mariadb::PASSWORD), "{err}");
}

/// Queries are checked when the configuration is read, with no server anywhere.
#[test]
fn mysql_queries_are_checked_when_the_configuration_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let load = |users: &str| {
        let path = dir.path().join("mtad.kdl");
        std::fs::write(
            &path,
            format!(
                "server {{\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}}\nlisten \"mx\" address=\"127.0.0.1:2525\"\n{users}\n"
            ),
        )
        .unwrap();
        Config::load(&path).map_err(|e| render(&e))
    };
    let url = "mysql://mtad:pw@127.0.0.1:1/mail";
    let config = load(&format!(
        "users \"db\" sql=\"{url}\" query=\"SELECT password FROM mailbox WHERE username = ? AND active = 1\""
    ))
    .unwrap();
    assert!(!format!("{:?}", config.users["db"]).contains(":pw@"));
    for (query, why) in [
        (
            "SELECT password FROM mailbox WHERE username = ? OR local_part = ?",
            "2 `?` parameters",
        ),
        (
            "SELECT password FROM mailbox WHERE username = $1",
            "written ?, not $1",
        ),
        ("SELECT password FROM mailbox", "write ? where the key goes"),
        ("SELECT password FROM mailbox WHERE username = ?1", "bare ?"),
    ] {
        let e = load(&format!("users \"db\" sql=\"{url}\" query=\"{query}\"")).expect_err(query);
        assert!(e.contains(why), "{query}: {e}");
    }
    for (url, why) in [
        ("mysql://mtad@db.example.test/mail", "not on this host"),
        ("mariadb://mtad@127.0.0.1/mail?ssl-mode=required", "TLS"),
    ] {
        let e = load(&format!(
            "users \"db\" sql=\"{url}\" query=\"SELECT password FROM mailbox WHERE username = ?\""
        ))
        .expect_err(url);
        assert!(e.contains(why), "{url}: {e}");
    }
}
