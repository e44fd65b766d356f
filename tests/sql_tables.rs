//! SQL lookup tables against real databases (PostgreSQL and MariaDB, each started in a
//! temporary directory on a loopback port), loaded with seed 002's PostfixAdmin tables
//! (`examples/virtual-hosting/postfixadmin.sql`): virtual domains, aliases and
//! mailboxes decide RCPT and the route; the database stops in the middle of a load:
//! sessions get 451 (never a 5xx, never an accept without a mailbox), nothing
//! acknowledged is lost, and acceptance resumes when it is back.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::peers::{Mariadb, Postgres};
use common::*;

/// The seed's schema and rows.
fn postfixadmin_sql() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/virtual-hosting/postfixadmin.sql");
    std::fs::read_to_string(path).unwrap()
}

/// The seed's three tables on `url` (`ph`: the database's parameter), uncached so
/// that every lookup reaches the database.
fn config(url: &str, ph: &str) -> String {
    let table = |name: &str, query: &str| {
        format!(
            "table \"{name}\" sql=\"{url}\" timeout=\"1s\" cache-ttl=\"0s\" negative-ttl=\"0s\" \\\n    query=\"{}\"\n",
            query.replace("$1", ph)
        )
    };
    format!(
        r#"
server {{
    hostname "mx.example.test"
    spool "{{spool}}"
}}
listen "mx" address="127.0.0.1:{{port}}"
{}{}{}domains "virtual" table="virtual_domains"
virtual table="virtual_aliases"
virtual-mailboxes domains="virtual" table="virtual_mailboxes"
stage "rcpt" {{
    accept rcpt-domain="virtual"
}}
delivery {{
    queue-only #false
    local-base "{{dir}}/mail"
    backoff-min "1s"
}}
"#,
        table(
            "virtual_domains",
            "SELECT domain FROM domain WHERE domain = $1 AND backupmx = '0' AND active = '1'"
        ),
        table(
            "virtual_aliases",
            "SELECT goto FROM alias WHERE address = $1 AND active = '1'"
        ),
        table(
            "virtual_mailboxes",
            "SELECT maildir FROM mailbox WHERE username = $1 AND active = '1'"
        ),
    )
}

/// A database the test can stop and start again.
trait Database {
    fn stop(&mut self);
    fn start(&mut self);
}

impl Database for Postgres {
    fn stop(&mut self) {
        Postgres::stop(self)
    }
    fn start(&mut self) {
        self.resume()
    }
}

impl Database for Mariadb {
    fn stop(&mut self) {
        Mariadb::stop(self)
    }
    fn start(&mut self) {
        self.restart()
    }
}

fn rcpt(mtad: &Mtad, to: &str) -> String {
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250-");
    s.cmd("MAIL FROM:<a@client.test>", "250 ");
    s.line(&format!("RCPT TO:<{to}>"));
    s.reply()
}

fn virtual_domains_and_a_database_that_stops(url: &str, ph: &str, db: &mut dyn Database) {
    let mtad = Mtad::start(&config(url, ph));
    // RCPT decided by the tables
    assert!(rcpt(&mtad, "user@hoge.org").starts_with("250 "));
    assert!(rcpt(&mtad, "sales@hoge.org").starts_with("250 "));
    assert!(rcpt(&mtad, "nobody@hoge.org").starts_with("550 5.1.1"));
    assert!(rcpt(&mtad, "gone@hoge.org").starts_with("550 5.1.1"));
    assert!(rcpt(&mtad, "user@backup.hoge.org").starts_with("554 5.7.1"));
    // mtactl lookup reads the same tables
    let out = mtad.mtactl(&["lookup", "virtual_mailboxes", "user@hoge.org"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hoge.org/user/"
    );

    // a load; the database stops in its middle and comes back
    let port = mtad.port;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let (temporary, permanent) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let clients: Vec<_> = (0..3)
        .map(|c| {
            let (stop, acked) = (stop.clone(), acked.clone());
            let (temporary, permanent) = (temporary.clone(), permanent.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let subject = format!("load-{c}-{n}");
                    n += 1;
                    match try_message(port, "user@hoge.org", &subject) {
                        Ok(()) => acked.lock().unwrap().push(subject),
                        Err(line) if line.starts_with("451 4.3.0") => {
                            temporary.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(line) if line.starts_with('5') => permanent.lock().unwrap().push(line),
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
        })
        .collect();
    let wait_until = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_until("messages accepted", &|| acked.lock().unwrap().len() >= 5);
    db.stop();
    wait_until("451 while the database is down", &|| {
        temporary.load(Ordering::Relaxed) >= 3
    });
    let out = mtad.mtactl(&["check", "--connect"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no answer from table"));
    let before = acked.lock().unwrap().len();
    db.start();
    wait_until("accepted again", &|| {
        acked.lock().unwrap().len() >= before + 5
    });
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let permanent = permanent.lock().unwrap().clone();
    assert!(
        permanent.is_empty(),
        "5xx while the database was down: {permanent:?}"
    );
    assert!(mtad.log().contains("lookup failed"));
    // every message acknowledged is in the mailbox, once
    let acked = acked.lock().unwrap().clone();
    let new = mtad.dir.path().join("mail/hoge.org/user/new");
    let deadline = Instant::now() + Duration::from_secs(60);
    let subjects = loop {
        let subjects: Vec<String> = std::fs::read_dir(&new)
            .map(|d| {
                d.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                    .filter_map(|t| {
                        t.lines()
                            .find_map(|l| l.strip_prefix("Subject: load-").map(str::to_owned))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if subjects.len() >= acked.len() || Instant::now() > deadline {
            break subjects;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for s in &acked {
        let s = s.strip_prefix("load-").unwrap();
        assert_eq!(
            subjects.iter().filter(|got| *got == s).count(),
            1,
            "load-{s} acknowledged, delivered {} times",
            subjects.iter().filter(|got| *got == s).count()
        );
    }
}

#[test]
fn postgresql_virtual_domains_and_a_database_that_stops() {
    let Some(mut pg) = Postgres::start("postgresql_virtual_domains_and_a_database_that_stops")
    else {
        return;
    };
    pg.sql(&postfixadmin_sql());
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port);
    virtual_domains_and_a_database_that_stops(&url, "$1", &mut pg);
}

#[test]
fn mariadb_virtual_domains_and_a_database_that_stops() {
    let Some(mut db) = Mariadb::start("mariadb_virtual_domains_and_a_database_that_stops") else {
        return;
    };
    db.sql(&postfixadmin_sql());
    let url = db.url();
    virtual_domains_and_a_database_that_stops(&url, "?", &mut db);
}

/// `virtual-mailboxes ... transport="lmtp:..."`: the mailboxes live on a mailbox server
/// (aiosmtpd speaking LMTP here), seed 002's tables in SQLite.
#[test]
fn virtual_mailboxes_delivered_to_a_mailbox_server_over_lmtp() {
    let lmtp = common::peers::Aio::start(&["--lmtp"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/virtual-hosting/postfixadmin.db"),
        dir.path().join("postfixadmin.db"),
    )
    .unwrap();
    let config = config("sqlite:postfixadmin.db", "$1").replace(
        "virtual-mailboxes domains=\"virtual\" table=\"virtual_mailboxes\"",
        &format!(
            "virtual-mailboxes domains=\"virtual\" table=\"virtual_mailboxes\" transport=\"lmtp:[127.0.0.1]:{}\"",
            lmtp.addr.port()
        ),
    );
    let spool = dir.path().join("spool");
    let mtad = Mtad::start_in(dir, spool, &config);
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250-");
    s.send_message(
        "a@client.test",
        &["postmaster@hoge.org"],
        "Subject: to the owner\r\n\r\nhi\r\n",
    );
    s.cmd("MAIL FROM:<a@client.test>", "250 ");
    s.cmd("RCPT TO:<nobody@hoge.org>", "550 5.1.1");
    let (env, body) = &lmtp.messages(1)[0];
    assert!(env.contains("hoge-owner@hoge.org"), "{env}");
    assert!(String::from_utf8_lossy(body).contains("Subject: to the owner"));
}
