//! Rules in every SMTP stage, through the real binary: each verdict, each kind of
//! condition, negation and warn mode.

mod common;

use common::*;

const POLICY: &str = r#"
server {
    hostname "mx.example.test"
    spool "{spool}"
}
listen "mx" address="127.0.0.1:{port}"
networks "blocked" "127.0.0.9"
domains "relay" "example.test"
domains "spammers" "spam.test"
stage "connect" {
    reject 554 "5.7.1" "Go away" client="blocked"
}
stage "helo" {
    reject 550 "5.7.1" "Bad HELO" helo-matches="^localhost$"
}
stage "mail" {
    reject 553 "5.7.1" "Sender blocked" sender-domain="spammers"
    defer 452 "4.3.1" "Try a smaller message" size-over="1M"
    hold sender="hold@src.test"
}
stage "rcpt" {
    discard rcpt="blackhole@example.test"
    accept rcpt-domain="relay"
    reject 554 "5.7.1" "would refuse" rcpt="warned@foreign.test" mode="warn"
    accept rcpt="warned@foreign.test" open-relay="intended"
    reject 550 "5.7.1" "Not from there" not-client="127.0.0.0/8"
}
stage "data" {
    reject 550 "5.7.0" "Spam" header-matches="^Subject:.*viagra"
    hold header-matches="^X-Hold: yes"
}
"#;

#[test]
fn connect_stage_refuses_a_client_instead_of_greeting_it() {
    let mtad = Mtad::start(POLICY);
    let mut s = Client::connect_from("127.0.0.9", mtad.port);
    s.expect("554 5.7.1 Go away");
    s.expect_closed();
    let mut ok = Client::connect_from("127.0.0.8", mtad.port);
    ok.expect("220 ");
}

#[test]
fn helo_and_mail_stages() {
    let mtad = Mtad::start(POLICY);
    let mut s = mtad.session();
    s.cmd("EHLO localhost", "550 5.7.1 Bad HELO");
    s.cmd("MAIL FROM:<a@src.test>", "503 5.5.1"); // the refused HELO did not count
    s.cmd("EHLO client.test", "250-");
    s.cmd("MAIL FROM:<x@spam.test>", "553 5.7.1 Sender blocked");
    s.cmd("MAIL FROM:<x@src.test> SIZE=2000000", "452 4.3.1");
    s.cmd("MAIL FROM:<x@src.test> SIZE=2000", "250 2.1.0");
}

#[test]
fn rcpt_stage_verdicts_negation_and_warn_mode() {
    let mtad = Mtad::start(POLICY);
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    s.cmd("MAIL FROM:<a@src.test>", "250");
    s.cmd("RCPT TO:<b@example.test>", "250 2.1.5");
    // the warn-mode reject only logs; the next rule accepts
    s.cmd("RCPT TO:<warned@foreign.test>", "250 2.1.5");
    // loopback is not "not 127.0.0.0/8": falls through to the default
    s.cmd(
        "RCPT TO:<x@foreign.test>",
        "554 5.7.1 <x@foreign.test>: Relay access denied",
    );
    assert!(
        mtad.log().contains("warn-mode rule matched; not enforced"),
        "{}",
        mtad.log()
    );
    let mut other = Client::connect_from("127.0.0.7", mtad.port);
    other.expect("220");
    other.cmd("EHLO client.test", "250");
    other.cmd("MAIL FROM:<a@src.test>", "250");
    other.cmd("RCPT TO:<x@foreign.test>", "554 5.7.1"); // 127.0.0.7 is still in 127/8
}

#[test]
fn discard_and_hold() {
    let mtad = Mtad::start(POLICY);
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    // discard at rcpt: the client sees success, nothing is queued
    s.send_message(
        "a@src.test",
        &["blackhole@example.test"],
        "Subject: gone\r\n\r\nx\r\n",
    );
    assert!(mtad.queued().is_empty());
    // hold at mail, and hold at data
    s.send_message(
        "hold@src.test",
        &["b@example.test"],
        "Subject: held\r\n\r\nx\r\n",
    );
    s.send_message(
        "a@src.test",
        &["b@example.test"],
        "Subject: held too\r\nX-Hold: yes\r\n\r\nx\r\n",
    );
    s.send_message(
        "a@src.test",
        &["b@example.test"],
        "Subject: normal\r\n\r\nx\r\n",
    );
    let queued = mtad.queued();
    let held: Vec<bool> = queued.iter().map(|(m, _)| m.envelope.held).collect();
    assert_eq!(held, [true, true, false]);
    let list = String::from_utf8(mtad.mtactl(&["queue", "list"]).stdout).unwrap();
    assert_eq!(list.matches("(held)").count(), 2, "{list}");
}

#[test]
fn data_stage_header_rule() {
    let mtad = Mtad::start(POLICY);
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    s.cmd("MAIL FROM:<a@src.test>", "250");
    s.cmd("RCPT TO:<b@example.test>", "250");
    s.cmd("DATA", "354");
    // folded header: matched once unfolded, case-insensitively
    s.send("Subject: cheap\r\n VIAGRA here\r\n\r\nbody\r\n.\r\n");
    s.expect("550 5.7.0 Spam");
    assert!(mtad.queued().is_empty());
    s.send_message(
        "a@src.test",
        &["b@example.test"],
        "Subject: fine\r\n\r\nviagra in the body is not a header\r\n",
    );
    assert_eq!(mtad.queued().len(), 1);
}

#[test]
fn conditions_are_checked_against_their_stage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mtad.kdl");
    std::fs::write(
        &path,
        "server {\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}\nlisten \"mx\" address=\"127.0.0.1:2525\"\nstage \"connect\" {\n    reject 554 \"5.7.1\" \"no\" rcpt=\"a@b.test\"\n}\nstage \"mail\" {\n    defer 550 \"5.7.1\" \"no\"\n    accept mode=\"sometimes\"\n}\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`rcpt` does not exist at the connect stage"),
        "{err}"
    );
    assert!(err.contains("mtad.kdl:7:"), "{err}");
    assert!(err.contains("`defer` needs a 4xx code"), "{err}");
    assert!(err.contains("unknown mode `sometimes`"), "{err}");
}
