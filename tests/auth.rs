//! SMTP AUTH end to end: swaks with --tls and --auth (PLAIN and LOGIN), passwords
//! hashed by Dovecot's own `doveadm pw`, a SQLite users table, and the RFC 4954 replies
//! driven by hand over TLS; sender ownership, STARTTLS resetting the identity, and the
//! failed-attempt limit.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::tls_client::*;
use common::*;

/// `mx` offers STARTTLS and, after it, AUTH; `sub` requires both; `smtps` is implicit
/// TLS with a SQLite users table; `lan` allows AUTH in plaintext.
const CONFIG: &str = r#"
server {
    hostname "mx.example.test"
    spool "{spool}"
    tls-certificate "pki/cert.pem"
    tls-key "pki/key.pem"
}
listen "mx" address="127.0.0.1:{port}" auth="offered" users="mailboxes"
listen "sub" address="127.0.0.1:{port2}" starttls="required" auth="required" users="mailboxes"
listen "smtps" address="127.0.0.1:{port3}" implicit-tls=#true auth="required" users="db"
listen "lan" address="127.0.0.1:{port4}" auth="offered" auth-plaintext=#true users="mailboxes"
users "mailboxes" file="users.passwd"
users "db" sql="sqlite:users.db" query="SELECT password FROM mailbox WHERE username = $1 AND active = 1"
table "senders" {
    "alice@example.test" "alice"
    "@shared.test" "alice, bob"
}
rate-limits {
    auth-failures 3 per="1h"
}
domains "relay" "example.test"
stage "mail" {
    reject authenticated=#true not-sender-login="senders" 553 "5.7.1" "Sender address not owned by you"
}
stage "rcpt" {
    accept authenticated=#true
    accept rcpt-domain="relay"
    reject 554 "5.7.1" "Relay access denied"
}
stage "data" {
    hook "hooks.rhai" function="who"
}
"#;

const HOOKS: &str = r#"
fn who(ctx) {
    if ctx.authenticated {
        ctx.add_header("X-Auth-Seen", ctx.auth);
    }
    next()
}
"#;

const ALICE_PW: &str = "alice's long passphrase";
const BOB_PW: &str = "b0b-secret";

struct Setup {
    mtad: Mtad,
    pki: PathBuf,
    sub: u16,
    smtps: u16,
    lan: u16,
}

fn doveadm_pw(scheme: &str, password: &str) -> String {
    let out = Command::new(require_tool("doveadm"))
        .args(["pw", "-s", scheme, "-p", password])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// PostfixAdmin's `mailbox` table (the part AUTH reads), in SQLite, through Python's
/// sqlite3 module.
fn make_db(path: &Path, rows: &[(&str, &str, i32)]) {
    let mut script = String::from(
        "import sqlite3, sys\ndb = sqlite3.connect(sys.argv[1])\n\
         db.execute('CREATE TABLE mailbox (username TEXT PRIMARY KEY, password TEXT, active INTEGER)')\n",
    );
    for (user, hash, active) in rows {
        script.push_str(&format!(
            "db.execute('INSERT INTO mailbox VALUES (?, ?, ?)', ({user:?}, {hash:?}, {active}))\n"
        ));
    }
    script.push_str("db.commit()\n");
    let status = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

fn start() -> Setup {
    // ARGON2ID is Dovecot's default; SHA512-CRYPT what older setups still have
    let users = format!(
        "# made by doveadm pw\nalice:{}\nbob:{}::::::\n",
        doveadm_pw("ARGON2ID", ALICE_PW),
        doveadm_pw("SHA512-CRYPT", BOB_PW)
    );
    let t = start_with_pki(
        CONFIG,
        &[("users.passwd", &users), ("hooks.rhai", HOOKS)],
        3,
        |dir| {
            make_db(
                &dir.join("users.db"),
                &[
                    (
                        "carol@example.test",
                        &doveadm_pw("BLF-CRYPT", "carol-pw"),
                        1,
                    ),
                    ("dave@example.test", &doveadm_pw("BLF-CRYPT", "dave-pw"), 0),
                ],
            )
        },
    );
    Setup {
        mtad: t.mtad,
        pki: t.pki,
        sub: t.ports[0],
        smtps: t.ports[1],
        lan: t.ports[2],
    }
}

/// swaks on the implicit-TLS listener, logging in.
fn smtps_login(s: &Setup, mechanism: &str, user: &str, password: &str) -> String {
    let out = swaks(
        s.smtps,
        &[
            "--tls-on-connect",
            "--auth",
            mechanism,
            "--auth-user",
            user,
            "--auth-password",
            password,
            "--from",
            user,
            "--to",
            "friend@elsewhere.test",
        ],
    );
    text(&out)
}

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn plain(user: &str, password: &str) -> String {
    B64.encode(format!("\0{user}\0{password}"))
}

#[test]
fn swaks_authenticates_over_starttls_and_relays() {
    let s = start();
    for (mech, user, pw, subject) in [
        ("PLAIN", "alice", ALICE_PW, "auth-plain-1"),
        ("LOGIN", "bob", BOB_PW, "auth-login-1"),
    ] {
        let from = if user == "alice" {
            "alice@example.test"
        } else {
            "bob@shared.test"
        };
        let out = swaks(
            s.mtad.port,
            &[
                "--tls",
                "--auth",
                mech,
                "--auth-user",
                user,
                "--auth-password",
                pw,
                "--from",
                from,
                "--to",
                "friend@elsewhere.test",
                "--header",
                &format!("Subject: {subject}"),
            ],
        );
        let t = text(&out);
        assert!(t.contains("235 2.7.0 Authentication successful"), "{t}");
        assert!(t.contains("queued as"), "{t}");
        let body = s
            .mtad
            .queued()
            .into_iter()
            .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
            .find(|b| b.contains(subject))
            .expect("queued");
        assert!(
            body.contains(&format!("\t(Authenticated sender: {user})")),
            "{body}"
        );
        assert!(body.contains("with ESMTPSA id"), "{body}");
        assert!(body.contains(&format!("X-Auth-Seen: {user}")), "{body}");
    }
    let log = s.mtad.wait_log("authenticated", 2, Duration::from_secs(3));
    assert!(
        log.contains("user=alice mechanism=\"PLAIN\"")
            || log.contains("user=alice mechanism=PLAIN"),
        "{log}"
    );
    // a wrong password: 535, logged with the user, never the password
    let out = swaks(
        s.mtad.port,
        &[
            "--tls",
            "--auth",
            "LOGIN",
            "--auth-user",
            "bob",
            "--auth-password",
            "Wrong-Guess-42",
            "--from",
            "bob@shared.test",
            "--to",
            "friend@elsewhere.test",
        ],
    );
    assert!(text(&out).contains("535 5.7.8"), "{}", text(&out));
    let log = s
        .mtad
        .wait_log("authentication failed", 1, Duration::from_secs(3));
    assert!(log.contains("user=bob"), "{log}");
    for secret in ["Wrong-Guess-42", ALICE_PW, BOB_PW] {
        assert!(!log.contains(secret), "a password in the log");
    }
}

#[test]
fn auth_is_neither_offered_nor_accepted_before_tls() {
    let s = start();
    let mut c = Client::connect(s.mtad.port);
    c.expect("220 ");
    let ehlo = c.cmd("EHLO client.test", "250-");
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    c.cmd(
        &format!("AUTH PLAIN {}", plain("alice", ALICE_PW)),
        "538 5.7.11",
    );
    let mut tls = starttls(c, &s.pki);
    let ehlo = tls_cmd(&mut tls, "EHLO client.test", "250-");
    assert!(
        ehlo.contains("250-AUTH PLAIN LOGIN") || ehlo.contains("250 AUTH PLAIN LOGIN"),
        "{ehlo}"
    );
    tls_cmd(
        &mut tls,
        &format!("AUTH PLAIN {}", plain("alice", ALICE_PW)),
        "235 2.7.0",
    );
    // with auth-plaintext=#true the lan listener offers it in the clear
    let mut c = Client::connect(s.lan);
    c.expect("220 ");
    let ehlo = c.cmd("EHLO client.test", "250-");
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    let out = swaks(
        s.lan,
        &[
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice",
            "--auth-password",
            ALICE_PW,
            "--from",
            "alice@example.test",
            "--to",
            "friend@elsewhere.test",
        ],
    );
    assert!(text(&out).contains("queued as"), "{}", text(&out));
}

#[test]
fn rfc_4954_replies() {
    let s = start();
    let mut c = Client::connect_from("127.0.0.2", s.mtad.port);
    c.expect("220 ");
    c.cmd("EHLO client.test", "250-");
    let mut tls = starttls(c, &s.pki);
    tls_cmd(
        &mut tls,
        &format!("AUTH PLAIN {}", plain("alice", ALICE_PW)),
        "503 5.5.1 Error: send HELO/EHLO",
    );
    tls_cmd(&mut tls, "EHLO client.test", "250-");
    tls_cmd(&mut tls, "AUTH CRAM-MD5", "504 5.5.4");
    // PLAIN without an initial response, then cancelled
    tls_cmd(&mut tls, "AUTH PLAIN", "334 ");
    tls_cmd(&mut tls, "*", "501 5.7.0 Authentication cancelled");
    // not base64
    tls_cmd(
        &mut tls,
        "AUTH PLAIN !!!notbase64",
        "501 5.5.2 Cannot decode response",
    );
    // an over-long line, as the command and inside the exchange
    let long = "A".repeat(5000);
    tls_cmd(&mut tls, &format!("AUTH PLAIN {long}"), "500 5.5.6");
    // each of those counted as a failed attempt: three (the limit here) from this address
    tls_cmd(&mut tls, "AUTH LOGIN", "454 4.7.0");
    tls_cmd(&mut tls, "QUIT", "221 ");

    let mut c = Client::connect_from("127.0.0.3", s.mtad.port);
    c.expect("220 ");
    c.cmd("EHLO client.test", "250-");
    let mut tls = starttls(c, &s.pki);
    tls_cmd(&mut tls, "EHLO client.test", "250-");
    tls_cmd(&mut tls, "AUTH LOGIN", "334 VXNlcm5hbWU6");
    tls_cmd(&mut tls, &long, "500 5.5.6");
    // LOGIN, step by step
    tls_cmd(&mut tls, "AUTH LOGIN", "334 VXNlcm5hbWU6");
    tls_cmd(&mut tls, &B64.encode("bob"), "334 UGFzc3dvcmQ6");
    tls_cmd(&mut tls, &B64.encode(BOB_PW), "235 2.7.0");
    tls_cmd(
        &mut tls,
        "AUTH LOGIN",
        "503 5.5.1 Error: already authenticated",
    );
    tls_cmd(&mut tls, "MAIL FROM:<bob@shared.test>", "250 ");
    tls_cmd(&mut tls, "RSET", "250 ");
    // sender ownership: bob may not send as alice
    tls_cmd(
        &mut tls,
        "MAIL FROM:<alice@example.test>",
        "553 5.7.1 Sender address not owned by you",
    );
    tls_cmd(&mut tls, "QUIT", "221 ");

    // AUTH inside a transaction
    let mut c = Client::connect(s.mtad.port);
    c.expect("220 ");
    c.cmd("EHLO client.test", "250-");
    let mut tls = starttls(c, &s.pki);
    tls_cmd(&mut tls, "EHLO client.test", "250-");
    tls_cmd(&mut tls, "MAIL FROM:<x@client.test>", "250 ");
    tls_cmd(
        &mut tls,
        &format!("AUTH PLAIN {}", plain("alice", ALICE_PW)),
        "503 5.5.1 Error: MAIL transaction in progress",
    );
}

#[test]
fn starttls_forgets_the_identity_and_auth_required_refuses_mail() {
    let s = start();
    // authenticated in plaintext on the lan listener, then STARTTLS: the identity is gone
    let mut c = Client::connect(s.lan);
    c.expect("220 ");
    c.cmd("EHLO client.test", "250-");
    c.cmd(&format!("AUTH PLAIN {}", plain("alice", ALICE_PW)), "235 ");
    let mut tls = starttls(c, &s.pki);
    tls_cmd(&mut tls, "EHLO client.test", "250-");
    tls_cmd(&mut tls, "MAIL FROM:<alice@example.test>", "250 ");
    tls_cmd(
        &mut tls,
        "RCPT TO:<friend@elsewhere.test>",
        "554 5.7.1 Relay access denied",
    );

    // the submission listener: STARTTLS first, then AUTH before MAIL
    let mut c = Client::connect(s.sub);
    c.expect("220 ");
    c.cmd("EHLO client.test", "250-");
    c.cmd(
        &format!("AUTH PLAIN {}", plain("alice", ALICE_PW)),
        "530 5.7.0 Must issue a STARTTLS",
    );
    let mut tls = starttls(c, &s.pki);
    tls_cmd(&mut tls, "EHLO client.test", "250-");
    tls_cmd(
        &mut tls,
        "MAIL FROM:<alice@example.test>",
        "530 5.7.0 Authentication required",
    );
    tls_cmd(
        &mut tls,
        &format!("AUTH PLAIN {}", plain("alice", ALICE_PW)),
        "235 ",
    );
    tls_cmd(&mut tls, "MAIL FROM:<alice@example.test>", "250 ");
}

#[test]
fn failed_attempts_are_throttled_per_client() {
    let s = start();
    let mut c = Client::connect_from("127.0.0.7", s.lan);
    c.expect("220 ");
    c.cmd("EHLO client.test", "250-");
    for _ in 0..3 {
        c.cmd(
            &format!("AUTH PLAIN {}", plain("alice", "guess")),
            "535 5.7.8",
        );
    }
    // the right password no longer helps, from this address
    c.cmd(
        &format!("AUTH PLAIN {}", plain("alice", ALICE_PW)),
        "454 4.7.0 Error: too many authentication attempts",
    );
    // another client is not affected
    let mut other = Client::connect_from("127.0.0.8", s.lan);
    other.expect("220 ");
    other.cmd("EHLO client.test", "250-");
    other.cmd(&format!("AUTH PLAIN {}", plain("alice", ALICE_PW)), "235 ");
}

#[test]
fn smtps_with_a_sqlite_users_table() {
    let s = start();
    // carol is not in the senders table: authenticated, but the sender is refused
    let t = smtps_login(&s, "LOGIN", "carol@example.test", "carol-pw");
    assert!(t.contains("235 2.7.0"), "{t}");
    assert!(
        t.contains("553 5.7.1 Sender address not owned by you"),
        "{t}"
    );
    // an inactive mailbox cannot log in
    let t = smtps_login(&s, "PLAIN", "dave@example.test", "dave-pw");
    assert!(t.contains("535 5.7.8"), "{t}");
    // the database failing (its table gone): a temporary failure, not a refusal
    let status = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); db.execute('DROP TABLE mailbox'); db.commit()",
        ])
        .arg(s.mtad.dir.path().join("users.db"))
        .status()
        .unwrap();
    assert!(status.success());
    let t = smtps_login(&s, "PLAIN", "carol@example.test", "carol-pw");
    assert!(
        t.contains("454 4.7.0 Temporary authentication failure"),
        "{t}"
    );
}

/// AUTH on a listener whose users live in a real PostgreSQL 15 (PostfixAdmin's
/// `mailbox` table); the database stopped mid-way: 454, never a login.
#[test]
fn a_postgresql_users_table_through_the_daemon() {
    let test = "a_postgresql_users_table_through_the_daemon";
    let Some(mut pg) = common::peers::Postgres::start(test) else {
        return;
    };
    pg.sql("CREATE TABLE mailbox (username VARCHAR(255) PRIMARY KEY, password VARCHAR(255) NOT NULL, active BOOLEAN NOT NULL)");
    pg.sql(&format!(
        "INSERT INTO mailbox VALUES ('erin@example.test', '{}', true)",
        doveadm_pw("SHA512-CRYPT", "erin-pw")
    ));
    let users = format!(
        r#"users "db" sql="postgres://postgres@127.0.0.1:{}/postgres" query="SELECT password FROM mailbox WHERE username = $1 AND active" timeout="2s""#,
        pg.port
    );
    sql_users_through_the_daemon(&users, || pg.stop());
}

/// The same with MariaDB over its Unix socket, as a PostfixAdmin installation has it:
/// its `mailbox` table, `?` for the key, a database user with a password.
#[test]
fn a_mariadb_users_table_through_the_daemon() {
    let test = "a_mariadb_users_table_through_the_daemon";
    let Some(mut db) = common::peers::Mariadb::start(test) else {
        return;
    };
    db.sql(
        "CREATE TABLE mailbox (username VARCHAR(255) NOT NULL PRIMARY KEY, password VARCHAR(255) NOT NULL, \
         name VARCHAR(255) NOT NULL DEFAULT '', maildir VARCHAR(255) NOT NULL, quota BIGINT NOT NULL DEFAULT 0, \
         local_part VARCHAR(255) NOT NULL, domain VARCHAR(255) NOT NULL, active TINYINT(1) NOT NULL DEFAULT 1)",
    );
    db.sql(&format!(
        "INSERT INTO mailbox (username, password, maildir, local_part, domain) \
         VALUES ('erin@example.test', '{}', 'example.test/erin/', 'erin', 'example.test')",
        doveadm_pw("SHA512-CRYPT", "erin-pw")
    ));
    let users = format!(
        r#"users "db" sql="mariadb://{}:{}@localhost/{}?socket={}" query="SELECT password FROM mailbox WHERE username = ? AND active = 1" timeout="2s""#,
        common::peers::Mariadb::USER,
        common::peers::Mariadb::PASSWORD,
        common::peers::Mariadb::DATABASE,
        db.socket.display()
    );
    sql_users_through_the_daemon(&users, || db.stop());
}

/// A listener requiring TLS and AUTH against `users`, the KDL node of an SQL users
/// table named `db` holding erin@example.test with `erin-pw`: swaks logs in and
/// relays, a wrong password is 535; after `stop` stops the database, 454 and a
/// logged reason, never a login.
fn sql_users_through_the_daemon(users: &str, stop: impl FnOnce()) {
    let config = format!(
        r#"
server {{
    hostname "mx.example.test"
    spool "{{spool}}"
    tls-certificate "pki/cert.pem"
    tls-key "pki/key.pem"
}}
listen "sub" address="127.0.0.1:{{port}}" starttls="required" auth="required"
{users}
stage "rcpt" {{
    accept authenticated=#true
}}
"#
    );
    let t = start_with_pki(&config, &[], 0, |_| {});
    let login = |password: &str| {
        text(&swaks(
            t.mtad.port,
            &[
                "--tls",
                "--auth",
                "PLAIN",
                "--auth-user",
                "erin@example.test",
                "--auth-password",
                password,
                "--from",
                "erin@example.test",
                "--to",
                "friend@elsewhere.test",
            ],
        ))
    };
    let out = login("erin-pw");
    assert!(
        out.contains("235 2.7.0") && out.contains("queued as"),
        "{out}"
    );
    assert!(login("wrong").contains("535 5.7.8"));
    stop();
    let out = login("erin-pw");
    assert!(
        out.contains("454 4.7.0 Temporary authentication failure"),
        "{out}"
    );
    let log = t
        .mtad
        .wait_log("authentication unavailable", 1, Duration::from_secs(5));
    assert!(log.contains("users `db`"), "{log}");
}
