//! SIGHUP reloads the policy of a running mtad: a new session gets the new rules; a
//! broken configuration keeps the old policy and logs every error with its place;
//! queued mail is routed by the new policy at its next attempt.

mod common;

use std::time::Duration;

use common::peers::Sink;
use common::*;

const BEFORE: &str = r#"
server {
    hostname "mx.example.test"
    spool "{spool}"
}
listen "mx" address="127.0.0.1:{port}"
domains "relay" "example.test"
stage "rcpt" {
    accept rcpt-domain="relay"
}
stage "route" {
    relay "smtp:[127.0.0.1]:{sink}"
}
delivery {
    queue-only #false
}
"#;

fn rewrite(mtad: &Mtad, from: &str, to: &str) {
    let text = std::fs::read_to_string(&mtad.config).unwrap();
    assert!(text.contains(from), "{from:?} not in the config");
    std::fs::write(&mtad.config, text.replace(from, to)).unwrap();
}

/// Edits the configuration file and sends SIGHUP.
fn rewrite_and_hup(mtad: &Mtad, from: &str, to: &str) {
    rewrite(mtad, from, to);
    signal(mtad.pid(), "HUP");
}

/// A new session's answer to RCPT TO:<rcpt>.
fn try_rcpt(mtad: &Mtad, rcpt: &str, want: &str) {
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250-");
    s.cmd("MAIL FROM:<a@client.test>", "250 ");
    s.cmd(&format!("RCPT TO:<{rcpt}>"), want);
}

#[test]
fn sighup_swaps_the_policy_and_a_broken_config_keeps_the_old_one() {
    let sink = Sink::start(&[]);
    let mtad = Mtad::start(&BEFORE.replace("{sink}", &sink.port().to_string()));
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250-");
    s.cmd("MAIL FROM:<a@client.test>", "250 ");
    s.cmd("RCPT TO:<x@other.test>", "554 5.7.1");

    // a new domain to relay for
    rewrite_and_hup(
        &mtad,
        "domains \"relay\" \"example.test\"",
        "domains \"relay\" \"example.test\" \"other.test\"",
    );
    mtad.wait_log("policy reloaded", 1, Duration::from_secs(5));
    // the session that was open keeps its policy; a new one has the new rules
    s.cmd("RCPT TO:<x@other.test>", "554 5.7.1");
    try_rcpt(&mtad, "x@other.test", "250 ");

    // broken: a KDL error and an unknown set; nothing changes, both are logged
    rewrite_and_hup(
        &mtad,
        "accept rcpt-domain=\"relay\"",
        "accept rcpt-domain=\"rely\"\n    reject 554 \"5.7.1\"",
    );
    let log = mtad.wait_log("reload refused", 1, Duration::from_secs(5));
    assert!(log.contains("undefined domain set `rely`"), "{log}");
    assert!(log.contains("mtad.kdl:10:"), "{log}");
    assert!(log.contains("errors=2"), "{log}");
    try_rcpt(&mtad, "x@other.test", "250 ");
    // a change the running server cannot take yet is named
    rewrite(
        &mtad,
        "accept rcpt-domain=\"rely\"\n    reject 554 \"5.7.1\"",
        "accept rcpt-domain=\"relay\"",
    );
    rewrite_and_hup(
        &mtad,
        "queue-only #false",
        "queue-only #false\n    backoff-min \"1s\"",
    );
    let log = mtad.wait_log("policy reloaded", 2, Duration::from_secs(5));
    assert!(log.contains("blocks=delivery"), "{log}");
}

#[test]
fn queued_mail_follows_the_new_route() {
    let (mut old, new) = (Sink::start(&[]), Sink::start(&[]));
    let old_port = old.port();
    let mtad = Mtad::start(&BEFORE.replace("{sink}", &old_port.to_string()));
    // the old next hop is gone: the message waits in the queue
    old.stop();
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250-");
    s.send_message(
        "a@client.test",
        &["x@example.test"],
        "Subject: moved\r\n\r\nhi\r\n",
    );
    mtad.wait_log("status=deferred", 1, Duration::from_secs(10));
    rewrite_and_hup(
        &mtad,
        &format!("{old_port}\""),
        &format!("{}\"", new.port()),
    );
    mtad.wait_log("policy reloaded", 1, Duration::from_secs(5));
    let out = mtad.mtactl(&["queue", "flush"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dumps = new.dumps_within(1, Duration::from_secs(10));
    assert!(dumps[0].contains("Subject: moved"), "{}", dumps[0]);
}

#[test]
fn mtactl_reload_reports_errors_and_keeps_the_running_policy() {
    let sink = Sink::start(&[]);
    let mtad = Mtad::start(&BEFORE.replace("{sink}", &sink.port().to_string()));
    try_rcpt(&mtad, "x@other.test", "554 5.7.1");
    rewrite(
        &mtad,
        "domains \"relay\" \"example.test\"",
        "domains \"relay\" \"example.test\" \"other.test\"",
    );
    let out = mtad.mtactl(&["reload"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("reloaded"), "{stdout}");
    try_rcpt(&mtad, "x@other.test", "250 ");

    // broken: mtactl reports every error with its place, exit 1, nothing changes
    rewrite(
        &mtad,
        "accept rcpt-domain=\"relay\"",
        "accept rcpt-domain=\"rely\"",
    );
    let out = mtad.mtactl(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("undefined domain set `rely`"), "{stderr}");
    assert!(stderr.contains("mtad.kdl:9:12"), "{stderr}");
    try_rcpt(&mtad, "x@other.test", "250 ");
    // the daemon checks too (what if the file changed after mtactl looked): its
    // refusal comes back over the control socket with the rendered errors
    let socket = mtad.spool.join("control.sock");
    let answer = mtad::control::socket::reload(&socket).unwrap();
    assert!(!answer.ok);
    assert!(
        answer.errors.contains("undefined domain set `rely`"),
        "{}",
        answer.errors
    );
    assert!(mtad.log().contains("reload refused"));
    try_rcpt(&mtad, "x@other.test", "250 ");
}
