//! The session's own defences against hostile clients, over real sockets (and swaks):
//! replies written with a deadline, the junk-command limit, header lines sent as
//! commands, RCPT after BDAT, text lines over RFC 5321's limit, the header-size limit,
//! the process-wide data-memory budget, IPv6 clients keyed by /64 (through the PROXY
//! protocol, since only loopback is here), and AUTH failures per user name.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;

fn with_limits(limits: &str) -> String {
    BASIC.replace(
        "networks \"trusted\"",
        &format!("limits {{\n{limits}\n}}\nnetworks \"trusted\""),
    )
}

/// A client that pipelines commands and never reads its replies fills its receive
/// window and then ours: the server's write must give up after the idle timeout, end
/// the session and free its connection slot.
#[test]
fn a_client_that_never_reads_is_disconnected() {
    let mtad = Mtad::start(&with_limits(
        "idle-timeout \"1s\"\nconnections-per-ip 1\nerror-limit 1000000",
    ));
    // a small receive buffer, so the replies pile up quickly
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", mtad.port).parse().unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut flood: TcpStream = socket.into();
    flood
        .set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    // HELP is no junk command (Postfix's list), so only the write deadline can end this;
    // each 6 bytes sent ask for an 80-byte reply
    let writer = std::thread::spawn(move || {
        let batch = "HELP\r\n".repeat(1000);
        let mut sent = 0usize;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if flood.write_all(batch.as_bytes()).is_err() {
                break;
            }
            sent += batch.len();
        }
        (sent, flood)
    });
    let (sent, _flood) = writer.join().unwrap();
    assert!(sent > 0);
    // the slot is free again: the one connection this address may have is ours
    let started = Instant::now();
    loop {
        let mut c = mtad.connect();
        let greeting = c.reply();
        if greeting.starts_with("220 ") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the stuck session still holds the slot: {greeting:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let log = mtad.wait_log("reason=write timeout", 1, Duration::from_secs(5));
    assert!(
        log.contains("the client does not read our replies"),
        "{log}"
    );
}

/// Postfix's `smtpd_junk_command_limit`: NOOP, RSET, VRFY, ETRN, HELO, EHLO past the
/// limit each count as an error (after their own reply), so the error limit ends the
/// session; a message queued starts the count again.
#[test]
fn junk_commands_past_the_limit_are_errors() {
    let mtad = Mtad::start(&with_limits("junk-commands 5\nerror-limit 3"));
    let mut s = mtad.session();
    // junk 1..=6 are free (Postfix counts `junk++ > limit`): EHLO and 5 more
    s.cmd("EHLO client.test", "250");
    for _ in 0..3 {
        s.cmd("NOOP", "250");
        s.cmd("RSET", "250");
    }
    // ...the 7th and 8th are errors 1 and 2; HELP is no junk command
    s.cmd("VRFY root", "252");
    s.cmd("HELP", "214");
    // a message queued starts the count again
    s.send_message(
        "a@src.test",
        &["b@example.test"],
        "Subject: x\r\n\r\nhi\r\n",
    );
    for _ in 0..6 {
        s.cmd("NOOP", "250");
    }
    // error 3 (the limit): the reply, then 421
    s.line("NOOP");
    s.expect("250");
    s.expect("421 4.7.0 mx.example.test Error: too many errors");
    s.expect_closed();
}

/// A header line sent as a command (a client that lost sync, or one speaking another
/// protocol) ends the session at once, as Postfix's smtpd does
/// ("221 2.7.0 Error: I can break rules, too. Goodbye.").
#[test]
fn header_lines_as_commands_end_the_session() {
    let mtad = Mtad::start(BASIC);
    for header in [
        "Subject: x",
        "From: a@b.test",
        "X-Mailer:Evil",
        "Received: from x",
    ] {
        let mut s = mtad.session();
        s.cmd("EHLO client.test", "250");
        s.cmd("MAIL FROM:<a@src.test>", "250");
        s.cmd(header, "221 2.7.0 Error: I can break rules, too. Goodbye.");
        s.expect_closed();
    }
    // a word without a colon is just an unknown command
    let mut s = mtad.session();
    s.cmd("Subject x", "500 5.5.2");
    s.cmd("X-Mailer : Evil", "500 5.5.2");
    s.cmd("NOOP", "250");
    assert!(mtad.log().contains("non-SMTP command"), "{}", mtad.log());
}

/// RFC 3030: every RCPT comes before the first BDAT. One after it is refused with
/// 503, never a 250 for a recipient that is not queued.
#[test]
fn rcpt_after_bdat_is_refused() {
    let mtad = Mtad::start(BASIC);
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    s.cmd("MAIL FROM:<a@src.test>", "250");
    s.cmd("RCPT TO:<first@example.test>", "250");
    let chunk = "Subject: chunked\r\n\r\n";
    s.send(format!("BDAT {}\r\n{chunk}", chunk.len()));
    s.expect("250");
    s.cmd("RCPT TO:<late@example.test>", "503 5.5.1");
    let last = "hello\r\n";
    s.send(format!("BDAT {} LAST\r\n{last}", last.len()));
    s.expect("250 2.0.0 Ok: queued as");
    let queued = mtad.queued();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].0.envelope.recipients, ["first@example.test"]);
}

/// RFC 5321 §4.5.3.1.6: text lines are at most 998 octets and CRLF. A longer one is
/// refused at the end of the data (the session goes on), through DATA (swaks) and
/// BDAT alike; nothing is queued. A 998-octet line passes.
#[test]
fn text_lines_longer_than_998_octets_are_refused() {
    let mtad = Mtad::start(BASIC);
    let dir = tempfile::tempdir().unwrap();
    let message = |len: usize| {
        let path = dir.path().join(format!("m{len}"));
        std::fs::write(
            &path,
            format!("Subject: long line\r\n\r\n{}\r\nend\r\n", "x".repeat(len)),
        )
        .unwrap();
        path
    };
    let long = message(1500);
    let out = swaks(
        mtad.port,
        &[
            "--from",
            "a@src.test",
            "--to",
            "b@example.test",
            "--data",
            long.to_str().unwrap(),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("<** 550 5.6.0 Error: text line too long in message data"),
        "{text}"
    );
    assert!(mtad.queued().is_empty());
    let ok = message(998);
    let out = swaks(
        mtad.port,
        &[
            "--from",
            "a@src.test",
            "--to",
            "b@example.test",
            "--data",
            ok.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(mtad.queued().len(), 1);
    let body = &mtad.queued()[0].1;
    assert!(String::from_utf8_lossy(body).contains(&"x".repeat(998)));

    // BDAT (no BINARYMIME) carries text lines too; the session goes on after the 550
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    s.cmd("MAIL FROM:<a@src.test>", "250");
    s.cmd("RCPT TO:<b@example.test>", "250");
    let data = format!("Subject: x\r\n\r\n{}\r\n", "y".repeat(999));
    s.send(format!("BDAT {}\r\n{}", 500, &data[..500]));
    s.expect("250");
    let rest = &data[500..];
    s.send(format!("BDAT {} LAST\r\n{rest}", rest.len()));
    s.expect("550 5.6.0");
    s.send_message(
        "a@src.test",
        &["b@example.test"],
        "Subject: fine\r\n\r\nok\r\n",
    );
    assert_eq!(mtad.queued().len(), 2);
}

/// `header-size`: a header section over the limit is refused with 552 after the data
/// is read to its end, before any policy runs on it (the data hook here would answer
/// 451 if it ran). Checked while the data streams in, so the 9 MB of `a:` lines of the
/// issue are never stored.
#[test]
fn header_section_over_the_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("data.rhai"),
        "fn data(ctx) { throw \"the data stage ran\"; }",
    )
    .unwrap();
    let spool = dir.path().join("spool");
    let config = with_limits("header-size \"64K\"\nmessage-size \"20M\"").replace(
        "stage \"rcpt\"",
        "stage \"data\" {\n    hook \"data.rhai\" function=\"data\"\n}\nstage \"rcpt\"",
    );
    let mtad = Mtad::start_in(dir, spool, &config);
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    let rss_before = rss_kib(mtad.pid(), "VmRSS:");
    s.cmd("MAIL FROM:<a@src.test>", "250");
    s.cmd("RCPT TO:<b@example.test>", "250");
    s.cmd("DATA", "354");
    let lines = "a:\r\n".repeat(64 * 1024);
    // 72 × 256 KiB: 18 MiB of empty header fields
    for _ in 0..72 {
        s.send(&lines);
    }
    s.send("\r\nbody\r\n.\r\n");
    s.expect("552 5.3.4 Error: message header size exceeds limit");
    let rss_after = rss_kib(mtad.pid(), "VmRSS:");
    // Buffered, 18 MiB would show; the allocator's own pages (mimalloc commits a few
    // MiB for a thread's heap at once) must not
    assert!(
        rss_after < rss_before + 6 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // within the limit it goes through to the data stage (which refuses here)
    s.cmd("MAIL FROM:<a@src.test>", "250");
    s.cmd("RCPT TO:<b@example.test>", "250");
    s.cmd("DATA", "354");
    s.send("a: 1\r\nb: 2\r\n\r\nbody\r\n.\r\n");
    s.expect("451");
    assert!(mtad.queued().is_empty());
}

/// `data-memory` bounds message data in flight for the whole process: while one
/// session holds the budget, another's DATA (and BDAT) gets 451 4.3.1; once the first
/// message is queued, the budget is back.
#[test]
fn data_memory_is_a_budget_for_the_whole_process() {
    // room for one message of the largest size (100 KiB), not two
    let mtad = Mtad::start(&with_limits("message-size \"100K\"\ndata-memory \"100K\""));
    let mut first = mtad.session();
    first.cmd("EHLO client.test", "250");
    first.cmd("MAIL FROM:<a@src.test>", "250");
    first.cmd("RCPT TO:<b@example.test>", "250");
    // a BDAT chunk is answered once it is stored: 100 KB, in a buffer that grew with
    // the budget's consent
    let mut chunk = String::from("Subject: big\r\n\r\n");
    let line = format!("{}\r\n", "x".repeat(998));
    for _ in 0..100 {
        chunk.push_str(&line);
    }
    first.send(format!("BDAT {}\r\n{chunk}", chunk.len()));
    first.expect("250 2.0.0 Ok:");
    let mut second = mtad.session();
    second.cmd("EHLO client.test", "250");
    second.cmd("MAIL FROM:<a@src.test>", "250");
    second.cmd("RCPT TO:<b@example.test>", "250");
    second.cmd("DATA", "451 4.3.1 Insufficient system resources");
    // BDAT too, and its chunk is read and dropped
    second.send("BDAT 5 LAST\r\nhello");
    second.expect("451 4.3.1");
    second.cmd("NOOP", "250");
    first.send("BDAT 0 LAST\r\n");
    first.expect("250 2.0.0 Ok: queued as");
    // the budget is back: the transaction is still there, its DATA now goes ahead
    second.cmd("DATA", "354");
    second.send("Subject: small\r\n\r\nok\r\n.\r\n");
    second.expect("250 2.0.0 Ok: queued as");
    // while one session merely has DATA open (64 KiB taken), another cannot start one
    second.cmd("MAIL FROM:<a@src.test>", "250");
    second.cmd("RCPT TO:<b@example.test>", "250");
    second.cmd("DATA", "354");
    first.cmd("MAIL FROM:<a@src.test>", "250");
    first.cmd("RCPT TO:<b@example.test>", "250");
    first.cmd("DATA", "451 4.3.1");
    second.send("Subject: small\r\n\r\nok\r\n.\r\n");
    second.expect("250 2.0.0 Ok: queued as");
    first.cmd("DATA", "354");
    first.send("Subject: small\r\n\r\nok\r\n.\r\n");
    first.expect("250 2.0.0 Ok: queued as");
    assert_eq!(mtad.queued().len(), 4);
    assert!(mtad.log().contains("data-memory used up"), "{}", mtad.log());
}

/// IPv6 clients are one client per /64 for `connections-per-ip` and `rate-limits`.
/// Only loopback is here, so the clients are claimed by PROXY v1 headers from the
/// allowed balancer: two addresses in one /64 share the limit, one in another /64
/// does not.
#[test]
fn ipv6_clients_are_counted_per_64() {
    let config = r#"
server {
    hostname "mx.example.test"
    spool "{spool}"
}
listen "lb" address="127.0.0.1:{port}" proxy-protocol=#true proxies="lb"
networks "lb" "127.0.0.1/32"
limits {
    connections-per-ip 1
}
rate-limits {
    messages 1 per="1h"
}
domains "relay" "example.test"
stage "rcpt" {
    accept rcpt-domain="relay"
}
"#;
    let mtad = Mtad::start(config);
    let proxied = |client: &str| {
        let mut c = Client::connect(mtad.port);
        c.send(format!("PROXY TCP6 {client} ::1 40000 25\r\n"));
        c
    };
    let mut a = proxied("2001:db8:1:2::1");
    a.expect("220 ");
    let mut b = proxied("2001:db8:1:2:ffff:eeee:dddd:cccc");
    b.expect("421 4.7.0 mx.example.test Error: too many connections from your address");
    let mut other = proxied("2001:db8:1:3::1");
    other.expect("220 ");
    // the message rate is per /64 too
    a.cmd("EHLO client.test", "250");
    a.cmd("MAIL FROM:<a@src.test>", "250");
    drop(a);
    let started = Instant::now();
    let mut b = loop {
        let mut b = proxied("2001:db8:1:2::99");
        if b.reply().starts_with("220 ") {
            break b;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "slot not freed"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    b.cmd("EHLO client.test", "250");
    b.cmd(
        "MAIL FROM:<a@src.test>",
        "450 4.7.1 Error: too many messages",
    );
    other.cmd("EHLO client.test", "250");
    other.cmd("MAIL FROM:<a@src.test>", "250");
}

/// `auth-failures-per-user`: failures for one user name from any number of clients
/// lock AUTH as that user (454 4.7.0, even with the right password) until the window
/// ends; other users and the per-client limit are not touched.
#[test]
fn auth_failures_per_user_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("users.passwd"),
        "alice:{PLAIN}alice-pw\nbob:{PLAIN}bob-pw\n",
    )
    .unwrap();
    let spool = dir.path().join("spool");
    let mtad = Mtad::start_in(
        dir,
        spool,
        r#"
server {
    hostname "mx.example.test"
    spool "{spool}"
}
listen "lan" address="127.0.0.1:{port}" auth="offered" auth-plaintext=#true users="mailboxes"
users "mailboxes" file="users.passwd"
rate-limits {
    auth-failures 100 per="1h"
    auth-failures-per-user 2 per="1h"
}
"#,
    );
    let plain = |user: &str, pw: &str| {
        base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pw}"))
    };
    // guesses from two client addresses
    for source in ["127.0.0.2", "127.0.0.3"] {
        let mut c = Client::connect_from(source, mtad.port);
        c.expect("220 ");
        c.cmd("EHLO client.test", "250");
        c.cmd(
            &format!("AUTH PLAIN {}", plain("Alice", "guess")),
            "535 5.7.8",
        );
    }
    let mut c = Client::connect_from("127.0.0.4", mtad.port);
    c.expect("220 ");
    c.cmd("EHLO client.test", "250");
    c.cmd(
        &format!("AUTH PLAIN {}", plain("alice", "alice-pw")),
        "454 4.7.0 Error: too many failed authentication attempts for this user",
    );
    c.cmd(&format!("AUTH PLAIN {}", plain("bob", "bob-pw")), "235 ");
}

/// A throw-away Postfix (3.7 here) with only its smtpd listening on loopback, for
/// side-by-side comparisons of session behaviour. Stopped when dropped.
struct Postfix {
    dir: tempfile::TempDir,
    port: u16,
}

impl Postfix {
    fn start(main_extra: &str) -> Postfix {
        let postfix = require_tool("postfix");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let base = dir.path().to_path_buf();
        let base = base.as_path();
        for sub in ["etc", "spool", "data"] {
            std::fs::create_dir_all(base.join(sub)).unwrap();
        }
        // the postfix user must reach its data directory
        std::fs::set_permissions(base, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let status = std::process::Command::new("chown")
            .args(["postfix:postfix", base.join("data").to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success());
        let b = base.display();
        std::fs::write(
            base.join("etc/main.cf"),
            format!(
                "compatibility_level = 3.6\nconfig_directory = {b}/etc\nqueue_directory = {b}/spool\n\
                 data_directory = {b}/data\nmyhostname = pf.example.test\ninet_interfaces = 127.0.0.1\n\
                 inet_protocols = ipv4\nmynetworks = 127.0.0.0/8\nmydestination =\nlocal_recipient_maps =\n\
                 alias_maps =\nalias_database =\nsmtpd_peername_lookup = no\nbiff = no\n\
                 maillog_file = {b}/maillog\nmaillog_file_prefixes = {b}\n{main_extra}\n"
            ),
        )
        .unwrap();
        std::fs::write(
            base.join("etc/master.cf"),
            format!(
                "127.0.0.1:{port} inet n - n - - smtpd\n\
                 cleanup unix n - n - 0 cleanup\nqmgr unix n - n 300 1 qmgr\n\
                 rewrite unix - - n - - trivial-rewrite\nbounce unix - - n - 0 bounce\n\
                 defer unix - - n - 0 bounce\ntrace unix - - n - 0 bounce\n\
                 proxymap unix - - n - - proxymap\nerror unix - - n - - error\n\
                 anvil unix - - n - 1 anvil\npostlog unix-dgram n - n - 1 postlogd\n"
            ),
        )
        .unwrap();
        let etc = base.join("etc");
        let pf = Postfix { dir, port };
        let out = std::process::Command::new(&postfix)
            .args(["-c", etc.to_str().unwrap(), "start"])
            .output()
            .unwrap();
        let log = std::fs::read_to_string(base.join("maillog")).unwrap_or_default();
        assert!(out.status.success(), "postfix start: {out:?}\n{log}");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "Postfix did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        pf
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if let Some(postfix) = find_tool("postfix") {
            let etc = self.dir.path().join("etc");
            let _ = std::process::Command::new(postfix)
                .args(["-c", etc.to_str().unwrap(), "stop"])
                .output();
        }
    }
}

/// Runs `commands` against a server and returns the reply codes (and the 221 text)
/// until the server closes the connection.
fn replies(port: u16, commands: &[&str]) -> Vec<String> {
    let mut c = Client::connect(port);
    c.expect("220 ");
    let mut got = Vec::new();
    for cmd in commands {
        c.line(cmd);
        let mut line = String::new();
        // one reply (multi-line for EHLO), or the end of the session
        loop {
            line.clear();
            match std::io::BufRead::read_line(&mut c.reader, &mut line) {
                Ok(0) | Err(_) => return got,
                Ok(_) => {}
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        let code = &line[..3];
        got.push(match code {
            "221" | "421" => line
                .trim_end()
                .replace("pf.example.test", "HOST")
                .replace("mx.example.test", "HOST"),
            _ => code.to_owned(),
        });
        if code == "421" || code == "221" {
            // Postfix says 421 before reading the next command; so do we
            return got;
        }
    }
    got
}

/// Postfix's smtpd beside mtad with the same limits: the junk-command count (which
/// commands count, from which one on) and the end of the session are the same, and a
/// header line sent as a command ends both sessions with the same 221.
#[test]
fn junk_commands_and_header_lines_as_postfix_smtpd_does() {
    let postfix = Postfix::start("smtpd_junk_command_limit = 5\nsmtpd_hard_error_limit = 3");
    let mtad = Mtad::start(&with_limits("junk-commands 5\nerror-limit 3"));
    // (Postfix has no HELP: it would be an error there)
    let mut junk = vec![
        "EHLO client.test",
        "MAIL FROM:<a@src.test>",
        "RSET",
        "VRFY root",
    ];
    junk.extend(["NOOP"; 12]);
    for script in [
        junk.clone(),
        vec![
            "EHLO client.test",
            "MAIL FROM:<a@src.test>",
            "Subject: hello",
            "NOOP",
        ],
        vec!["HELO client.test", "From: a@b.test", "NOOP"],
        vec!["EHLO client.test", "X-Mailer : Evil", "NOOP"],
    ] {
        let theirs = replies(postfix.port, &script);
        let ours = replies(mtad.port, &script);
        assert_eq!(ours, theirs, "{script:?}");
    }
    // the script above did reach the end of the session
    let ours = replies(mtad.port, &junk);
    assert_eq!(
        ours.last().map(String::as_str),
        Some("421 4.7.0 HOST Error: too many errors")
    );
}

/// A message whose buffer cannot grow within `data-memory` (others hold the rest) is
/// read to its end and refused with 451 4.3.1; nothing of it is queued, its share is
/// given back, and the session goes on.
#[test]
fn a_message_that_cannot_grow_is_refused_at_its_end() {
    let mtad = Mtad::start(&with_limits("message-size \"100K\"\ndata-memory \"150K\""));
    let mut holder = mtad.session();
    holder.cmd("EHLO client.test", "250");
    holder.cmd("MAIL FROM:<a@src.test>", "250");
    holder.cmd("RCPT TO:<b@example.test>", "250");
    holder.cmd("DATA", "354"); // 64 KiB of the 150 taken
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    s.cmd("MAIL FROM:<a@src.test>", "250");
    s.cmd("RCPT TO:<b@example.test>", "250");
    s.cmd("DATA", "354");
    s.send("Subject: grows\r\n\r\n");
    let line = format!("{}\r\n", "x".repeat(998));
    for _ in 0..95 {
        s.send(&line);
    }
    s.send(".\r\n");
    s.expect("451 4.3.1 Insufficient system resources");
    holder.send("Subject: small\r\n\r\nok\r\n.\r\n");
    holder.expect("250 2.0.0 Ok: queued as");
    // everything is given back: the same message now fits
    s.cmd("MAIL FROM:<a@src.test>", "250");
    s.cmd("RCPT TO:<b@example.test>", "250");
    s.cmd("DATA", "354");
    s.send("Subject: grows\r\n\r\n");
    for _ in 0..95 {
        s.send(&line);
    }
    s.send(".\r\n");
    s.expect("250 2.0.0 Ok: queued as");
    assert_eq!(mtad.queued().len(), 2);
}
