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
