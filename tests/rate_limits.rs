//! `rate-limits` against the real daemon over TCP: connections, messages and
//! recipients per client address per window, the replies, and exemptions.

mod common;

use common::*;

const CONFIG: &str = r#"
server {
    hostname "mx.example.test"
    spool "{spool}"
}
listen "mx" address="127.0.0.1:{port}"
networks "trusted" "127.0.0.0/8"
networks "office" "127.0.0.9/32"
stage "rcpt" {
    accept client="trusted"
}
rate-limits {
    connections 3 per="1h"
    messages 2 per="1h"
    recipients 3 per="1h"
    exempt "office"
}
"#;

#[test]
fn messages_and_recipients_per_client() {
    let mtad = Mtad::start(CONFIG);
    let mut s = Client::connect_from("127.0.0.2", mtad.port);
    s.expect("220 ");
    s.cmd("EHLO client.test", "250");
    s.cmd("MAIL FROM:<a@src.test>", "250");
    s.cmd("RCPT TO:<b1@dst.test>", "250");
    s.cmd("RCPT TO:<b2@dst.test>", "250");
    s.cmd("RCPT TO:<b3@dst.test>", "250");
    s.cmd(
        "RCPT TO:<b4@dst.test>",
        "450 4.7.1 Error: too many recipients from your address; try again later",
    );
    s.cmd("RSET", "250");
    s.cmd("MAIL FROM:<a@src.test>", "250");
    s.cmd(
        "MAIL FROM:<a@src.test>",
        "503", // nested: not counted
    );
    s.cmd("RSET", "250");
    s.cmd(
        "MAIL FROM:<a@src.test>",
        "450 4.7.1 Error: too many messages from your address; try again later",
    );
    // another client has its own counters; an exempt one has none
    let mut other = Client::connect_from("127.0.0.3", mtad.port);
    other.expect("220 ");
    other.cmd("EHLO client.test", "250");
    other.cmd("MAIL FROM:<a@src.test>", "250");
    let mut office = Client::connect_from("127.0.0.9", mtad.port);
    office.expect("220 ");
    office.cmd("EHLO client.test", "250");
    for _ in 0..5 {
        office.cmd("MAIL FROM:<a@src.test>", "250");
        office.cmd("RSET", "250");
    }
}

#[test]
fn connections_per_client() {
    let mtad = Mtad::start(CONFIG);
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect_from("127.0.0.4", mtad.port);
        c.expect("220 ");
        open.push(c);
    }
    let mut c = Client::connect_from("127.0.0.4", mtad.port);
    c.expect("421 4.7.0 mx.example.test Error: too many connections from your address");
    c.expect_closed();
    // closing the others does not give the window back
    drop(open);
    let mut c = Client::connect_from("127.0.0.4", mtad.port);
    c.expect("421 4.7.0");
    let mut c = Client::connect_from("127.0.0.5", mtad.port);
    c.expect("220 ");
    assert!(
        mtad.log()
            .contains("connection refused limit=\"rate limit: connections per window\""),
        "{}",
        mtad.log()
    );
}

/// A hook reads the counters the limits keep (`ctx.rate`) and acts before the limit.
#[test]
fn hooks_read_the_counters() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mail.rhai"),
        r#"fn mail(ctx) {
            let n = ctx.rate("messages");
            if ctx.rate("connections") != -1 { throw "no connection limit here"; }
            if n > 2 { return defer(450, "4.7.1", "hook: message " + n + " this hour, slow down"); }
            next()
        }"#,
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
listen "mx" address="127.0.0.1:{port}"
stage "mail" {
    hook "mail.rhai"
}
rate-limits {
    messages 100 per="1h"
}
"#,
    );
    let mut s = Client::connect_from("127.0.0.4", mtad.port);
    s.expect("220 ");
    s.cmd("EHLO client.test", "250");
    for _ in 0..2 {
        s.cmd("MAIL FROM:<a@src.test>", "250");
        s.cmd("RSET", "250");
    }
    s.cmd(
        "MAIL FROM:<a@src.test>",
        "450 4.7.1 hook: message 3 this hour, slow down",
    );
    // another address starts from zero
    let mut other = Client::connect_from("127.0.0.5", mtad.port);
    other.expect("220 ");
    other.cmd("EHLO client.test", "250");
    other.cmd("MAIL FROM:<a@src.test>", "250");
}
