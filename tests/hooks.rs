//! Rhai hooks through the real binary and mtactl: decisions, header changes written
//! into the queued message, failing closed, and compile errors with their place.

mod common;

use std::process::Command;

use common::*;

const CONFIG: &str = r#"
server {
    hostname "mx.example.test"
    spool "{spool}"
}
listen "mx" address="127.0.0.1:{port}"
networks "trusted" "127.0.0.0/8"
domains "relay" "example.test"
domains "blocked" "spam.test"
table "vip" {
    "boss@example.test" "yes"
}
stage "rcpt" {
    hook "rcpt.rhai"
    accept client="trusted"
}
stage "data" {
    hook "data.rhai" function="tag"
}
stage "route" {
    hook "route.rhai"
}
"#;

const RCPT: &str = r#"
import "mta" as mta;

fn rcpt(ctx) {
    if mta::listed("blocked", ctx.sender.domain) {
        return reject(550, "5.7.1", "sender " + ctx.sender.address + " blocked\r\nX: y");
    }
    if ctx.rcpt.local == "broken" {
        let x = 1 / 0;          // a runtime error: must give 451, never accept
    }
    if ctx.rcpt.local == "later" {
        return defer(450, "4.7.1", "greylisted");
    }
    next()
}
"#;

const DATA: &str = r#"
fn tag(ctx) {
    ctx.remove_header("X-Internal");
    if mta::lookup("vip", ctx.sender.address) == "yes" {
        ctx.add_header("X-Priority", "1");
    }
    if ctx.header("Subject").contains("[spam]") {
        return reject(554, "5.7.0", "spam refused");
    }
    next()
}
"#;

const ROUTE: &str = r#"
fn route(ctx) {
    if ctx.rcpt.domain == "example.test" { return "smtp:[127.0.0.1]:2626"; }
    next()
}
"#;

fn start() -> Mtad {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rcpt.rhai"), RCPT).unwrap();
    std::fs::write(dir.path().join("data.rhai"), DATA).unwrap();
    std::fs::write(dir.path().join("route.rhai"), ROUTE).unwrap();
    let spool = dir.path().join("spool");
    Mtad::start_in(dir, spool, CONFIG)
}

#[test]
fn hooks_decide_in_a_live_session() {
    let mtad = start();
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    s.cmd("MAIL FROM:<x@spam.test>", "250");
    // the script's reply text is sanitised: one line, no injected header
    let reply = s.cmd(
        "RCPT TO:<a@example.test>",
        "550 5.7.1 sender x@spam.test blocked??X: y",
    );
    assert_eq!(reply.matches("\r\n").count(), 1);
    s.cmd("RSET", "250");
    s.cmd("MAIL FROM:<a@src.test>", "250");
    s.cmd("RCPT TO:<later@example.test>", "450 4.7.1 greylisted");
    s.cmd("RCPT TO:<broken@example.test>", "451 4.3.0");
    s.cmd("RCPT TO:<a@example.test>", "250");
    assert!(
        mtad.log().contains("policy hook failed; answering 451"),
        "{}",
        mtad.log()
    );
    assert!(
        mtad.log().contains("rcpt.rhai:"),
        "the log names the script's place"
    );
}

#[test]
fn data_hooks_change_the_queued_message() {
    let mtad = start();
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    s.send_message(
        "boss@example.test",
        &["a@example.test"],
        "Subject: report\r\nX-Internal: secret\r\n\r\nbody\r\n",
    );
    s.cmd("MAIL FROM:<a@src.test>", "250");
    s.cmd("RCPT TO:<a@example.test>", "250");
    s.cmd("DATA", "354");
    s.send("Subject: [spam] buy\r\n\r\nx\r\n.\r\n");
    s.expect("554 5.7.0 spam refused");
    let queued = mtad.queued();
    assert_eq!(queued.len(), 1);
    let text = String::from_utf8_lossy(without_received(&queued[0].1)).into_owned();
    assert_eq!(text, "Subject: report\r\nX-Priority: 1\r\n\r\nbody\r\n");
}

#[test]
fn test_policy_shows_hooks_header_changes_and_routes() {
    let mtad = start();
    let dir = mtad.dir.path();
    let msg = dir.join("m.eml");
    std::fs::write(&msg, "Subject: hi\r\nX-Internal: 1\r\n\r\nbody\r\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .args([
            "test-policy",
            "--config",
            mtad.config.to_str().unwrap(),
            "--from",
            "boss@example.test",
        ])
        .args([
            "--rcpt",
            "a@example.test",
            "--rcpt",
            "b@elsewhere.test",
            "--message",
            msg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(report.contains("header   - X-Internal"), "{report}");
    assert!(report.contains("header   + X-Priority: 1"), "{report}");
    assert!(report.contains("smtp:[127.0.0.1]:2626"), "{report}");
    // a suite can expect them
    let suite = dir.join("suite.kdl");
    std::fs::write(
        &suite,
        r#"case "vip mail is tagged and routed" {
    from "boss@example.test"
    rcpt "a@example.test"
    message "Subject: hi\n\nbody\n"
    header "+ X-Priority: 1"
    route "a@example.test" "smtp:[127.0.0.1]:2626"
}
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .args([
            "test-policy",
            "--config",
            mtad.config.to_str().unwrap(),
            suite.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_hook_that_does_not_compile_is_a_config_error_at_its_place() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rcpt.rhai"), RCPT).unwrap();
    std::fs::write(dir.path().join("route.rhai"), ROUTE).unwrap();
    // the recipient does not exist at connect, and `eval` is not allowed
    std::fs::write(
        dir.path().join("data.rhai"),
        "fn tag(ctx) {\n    let r = ctx.rcpt.domain;\n    next()\n}\n",
    )
    .unwrap();
    let config = dir.path().join("mtad.kdl");
    std::fs::write(
        &config,
        CONFIG.replace("{spool}", "spool").replace("{port}", "2525"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .args(["check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("data.rhai:2:"), "{err}");
    assert!(err.contains("rcpt"), "{err}");
    // mtad refuses to start on it too
    let out = Command::new(env!("CARGO_BIN_EXE_mtad"))
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// Issue 17: hooks that try to outlast their budget, a hook error that tries to
/// write log lines, and `ctx.body()`.
const HARD_CONFIG: &str = r#"
server {
    hostname "mx.example.test"
    spool "{spool}"
}
listen "mx" address="127.0.0.1:{port}"
limits {
    error-limit 1000
}
stage "rcpt" {
    hook "rcpt.rhai"
}
stage "data" {
    hook "data.rhai"
}
"#;

const HARD_RCPT: &str = r#"
fn rcpt(ctx) {
    let l = ctx.rcpt.local;
    if l == "s3" { sleep(3); }
    if l == "huge" { sleep(1e300); }
    if l == "forever" { sleep(9.3e18); }
    if l == "busy" { loop { } }
    if l == "liar" { throw "no\r\nfake line: forged by " + ctx.sender.address; }
    accept()
}
"#;

const HARD_DATA: &str = r#"
fn data(ctx) {
    if ctx.recipients[0].local == "plain" { return accept(); }
    let b = ctx.body();
    if b.contains("Subject") || b.contains("Received") {
        return reject(550, "5.7.1", "headers seen as body");
    }
    if b.contains("INVOICE.zip") { return reject(550, "5.7.1", "invoice in the body"); }
    accept()
}
"#;

fn start_hard() -> Mtad {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rcpt.rhai"), HARD_RCPT).unwrap();
    std::fs::write(dir.path().join("data.rhai"), HARD_DATA).unwrap();
    let spool = dir.path().join("spool");
    Mtad::start_in(dir, spool, HARD_CONFIG)
}

fn test_policy(mtad: &Mtad, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .args(["test-policy", "--config", mtad.config.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn hooks_cannot_sleep_and_mtad_still_stops() {
    let mut mtad = start_hard();
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    s.cmd("MAIL FROM:<a@src.test>", "250");
    for rcpt in ["s3", "huge", "forever"] {
        let started = std::time::Instant::now();
        s.cmd(&format!("RCPT TO:<{rcpt}@example.test>"), "451 4.3.0");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{rcpt}: {:?}",
            started.elapsed()
        );
    }
    // the session goes on, and so does the worker
    s.cmd("RCPT TO:<ok@example.test>", "250");
    let log = mtad.log();
    assert!(log.contains("sleep() is not available in hooks"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let mut other = mtad.session();
    other.cmd("EHLO other.test", "250");
    // SIGTERM stops it promptly, the session still open
    let status = mtad.stop_within(std::time::Duration::from_secs(10));
    assert!(status.success(), "{status}");

    // the dry run: a 451, not a crash (exit 101)
    for rcpt in [
        "s3@example.test",
        "huge@example.test",
        "forever@example.test",
    ] {
        let started = std::time::Instant::now();
        let (code, report) = test_policy(&mtad, &["--from", "a@src.test", "--rcpt", rcpt]);
        assert_ne!(code, Some(101), "{report}");
        assert!(code.is_some(), "killed by a signal: {report}");
        assert!(report.contains("451"), "{report}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{rcpt}: {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_hook_error_is_one_log_line() {
    let mtad = start_hard();
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    s.cmd("MAIL FROM:<\"evil\\\\ one\"@src.test>", "250");
    s.cmd("RCPT TO:<liar@example.test>", "451 4.3.0");
    s.cmd("QUIT", "221");
    let log = mtad.wait_log("policy hook failed", 1, std::time::Duration::from_secs(10));
    let line = log
        .lines()
        .find(|l| l.contains("policy hook failed"))
        .unwrap();
    assert!(
        line.contains("no\\r\\nfake line: forged by"),
        "the CR LF escaped, on the same line: {line}"
    );
    assert!(
        !log.lines().any(|l| l.starts_with("fake line")),
        "a forged line: {log}"
    );
}

#[test]
fn ctx_body_is_what_follows_the_header_block_live_and_in_the_dry_run() {
    let mtad = start_hard();
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    // the header names INVOICE.zip, the body does not: accepted (our Received: and
    // the Subject: are not body)
    s.send_message(
        "a@src.test",
        &["b@example.test"],
        "Subject: INVOICE.zip\r\n\r\nhello\r\n",
    );
    s.cmd("MAIL FROM:<a@src.test>", "250");
    s.cmd("RCPT TO:<b@example.test>", "250");
    s.cmd("DATA", "354");
    s.send("Subject: hi\r\n\r\nsee INVOICE.zip\r\n.\r\n");
    s.expect("550 5.7.1 invoice in the body");

    // the same in the dry run
    let dir = mtad.dir.path();
    let header_only = dir.join("header.eml");
    std::fs::write(&header_only, "Subject: INVOICE.zip\r\n\r\nhello\r\n").unwrap();
    let in_body = dir.join("body.eml");
    std::fs::write(&in_body, "Subject: hi\r\n\r\nsee INVOICE.zip\r\n").unwrap();
    let args = |m: &std::path::Path| {
        test_policy(
            &mtad,
            &[
                "--from",
                "a@src.test",
                "--rcpt",
                "b@example.test",
                "--message",
                m.to_str().unwrap(),
            ],
        )
    };
    let (code, report) = args(&header_only);
    assert_eq!(code, Some(0), "{report}");
    assert!(!report.contains("550"), "{report}");
    let (_, report) = args(&in_body);
    assert!(report.contains("550 5.7.1 invoice in the body"), "{report}");
}

/// A plain session completes while 4 others keep a hook running for its whole
/// budget, RCPT after RCPT: hooks do not hold the runtime's workers. (How fast:
/// benches/hook_stall.py; here only the order.)
#[test]
fn a_plain_session_completes_while_others_are_inside_long_hooks() {
    let mtad = start_hard();
    const RCPTS: usize = 40;
    let port = mtad.port;
    let busy: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = Client::connect(port);
                s.stream
                    .set_read_timeout(Some(std::time::Duration::from_secs(120)))
                    .unwrap();
                s.expect("220");
                s.cmd("EHLO busy.test", "250");
                s.cmd("MAIL FROM:<a@src.test>", "250");
                let batch: String = (0..RCPTS)
                    .map(|_| "RCPT TO:<busy@example.test>\r\n")
                    .collect();
                s.send(batch);
                for _ in 0..RCPTS {
                    s.expect("451 4.3.0");
                }
                std::time::Instant::now()
            })
        })
        .collect();
    // all four are inside the hook
    mtad.wait_log(
        "the hook ran too long",
        4,
        std::time::Duration::from_secs(60),
    );
    let mut s = mtad.session();
    s.cmd("EHLO plain.test", "250");
    s.send_message(
        "a@src.test",
        &["plain@example.test"],
        "Subject: x\r\n\r\nplain\r\n",
    );
    s.cmd("QUIT", "221");
    let plain_done = std::time::Instant::now();
    let first_busy_done = busy.into_iter().map(|h| h.join().unwrap()).min().unwrap();
    assert!(
        plain_done < first_busy_done,
        "the plain session waited for a busy one to finish its {RCPTS} hooks"
    );
}
