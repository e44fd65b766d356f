//! SIGHUP and `mtactl reload` reload a running mtad: a new transaction gets the new
//! rules; a broken configuration keeps the old one and reports every error with its
//! place; queued mail is routed by the new policy at its next attempt. A reload reaches
//! everything mtad was started with: listeners are bound, changed and closed (sessions
//! on a closed one go on to their end), certificates, the greeting, limits and rate
//! limits apply to new sessions; what cannot be put in force (an address in use, a
//! broken certificate) refuses the whole reload. Under a continuous load from
//! smtp-source, reloads lose no session and no message.

mod common;

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::peers::Sink;
use common::tls_client::{start_with_pki, starttls, tls_cmd};
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
    mtad.wait_log("configuration reloaded", 1, Duration::from_secs(5));
    // the transaction under way keeps its policy; the session's next one and a new
    // session have the new rules
    s.cmd("RCPT TO:<x@other.test>", "554 5.7.1");
    try_rcpt(&mtad, "x@other.test", "250 ");
    s.cmd("RSET", "250 ");
    s.cmd("MAIL FROM:<a@client.test>", "250 ");
    s.cmd("RCPT TO:<x@other.test>", "250 ");

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
    // a change only a restart makes is named
    rewrite(
        &mtad,
        "accept rcpt-domain=\"rely\"\n    reject 554 \"5.7.1\"",
        "accept rcpt-domain=\"relay\"",
    );
    rewrite_and_hup(&mtad, "spool \"", "shutdown-timeout \"5s\"\n    spool \"");
    let log = mtad.wait_log("configuration reloaded", 2, Duration::from_secs(5));
    assert!(log.contains("settings=server.shutdown-timeout"), "{log}");
}

#[test]
fn queued_mail_follows_the_new_route() {
    let (mut old, new) = (Sink::start(&[]), Sink::start(&[]));
    let old_port = old.port();
    // the route comes from a transport(5) file, as in Postfix
    let dir = tempfile::tempdir().unwrap();
    let transport = dir.path().join("transport");
    std::fs::write(
        &transport,
        format!("example.test  smtp:[127.0.0.1]:{old_port}\n"),
    )
    .unwrap();
    let config = BEFORE
        .replace(
            "stage \"route\" {",
            "table \"transport\" file=\"transport\"\nstage \"route\" {\n    transport-table \"transport\"",
        )
        .replace("{sink}", "1");
    let spool = dir.path().join("spool");
    let mtad = Mtad::start_in(dir, spool, &config);
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
    std::fs::write(
        &transport,
        format!("example.test  smtp:[127.0.0.1]:{}\n", new.port()),
    )
    .unwrap();
    reload(&mtad);
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
fn a_rhai_error_a_missing_table_or_bad_kdl_keeps_the_old_policy() {
    let sink = Sink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rcpt.rhai"), "fn rcpt(ctx) { accept() }\n").unwrap();
    std::fs::write(dir.path().join("more"), "example.test ok\n").unwrap();
    let config = BEFORE
        .replace(
            "accept rcpt-domain=\"relay\"",
            "accept rcpt-domain=\"relay\"\n    hook \"rcpt.rhai\"",
        )
        .replace("{sink}", &sink.port().to_string());
    let config = format!("{config}table \"more\" file=\"more\"\n");
    let spool = dir.path().join("spool");
    let mtad = Mtad::start_in(dir, spool, &config);
    try_rcpt(&mtad, "x@example.test", "250 ");
    // a table file that is gone
    let more = mtad.dir.path().join("more");
    std::fs::remove_file(&more).unwrap();
    let out = mtad.mtactl(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot read table file `more`"), "{stderr}");
    assert!(stderr.contains("mtad.kdl:18:14"), "{stderr}");
    // mtactl told the daemon, which counted and logged it; then a SIGHUP's own refusal
    signal(mtad.pid(), "HUP");
    let log = mtad.wait_log("reload refused", 2, Duration::from_secs(5));
    assert!(
        log.contains("by=\"mtactl\"") && log.contains("by=\"mtad\""),
        "{log}"
    );
    assert!(log.contains("cannot read table file"), "{log}");
    try_rcpt(&mtad, "x@example.test", "250 ");
    // a Rhai syntax error (hooks compile once the configuration itself is valid)
    std::fs::write(&more, "example.test ok\n").unwrap();
    std::fs::write(
        mtad.dir.path().join("rcpt.rhai"),
        "fn rcpt(ctx) { accept( }\n",
    )
    .unwrap();
    let out = mtad.mtactl(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rcpt.rhai:1:"), "{stderr}");
    signal(mtad.pid(), "HUP");
    let log = mtad.wait_log("reload refused", 4, Duration::from_secs(5));
    assert!(log.contains("rcpt.rhai:1:"), "{log}");
    try_rcpt(&mtad, "x@example.test", "250 ");
    // bad KDL: refused too, with its place
    rewrite(&mtad, "stage \"rcpt\" {", "stage \"rcpt\" {{");
    let out = mtad.mtactl(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("mtad.kdl:"), "{stderr}");
    try_rcpt(&mtad, "x@example.test", "250 ");
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

/// `mtactl reload`, which must succeed.
fn reload(mtad: &Mtad) {
    let out = mtad.mtactl(&["reload"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const LISTENERS: &str = r#"
server {
    hostname "mx.example.test"
    spool "{spool}"
    banner "ESMTP one"
}
listen "mx" address="127.0.0.1:{port}"
listen "old" address="127.0.0.1:{port2}"
domains "relay" "example.test"
stage "rcpt" {
    accept rcpt-domain="relay"
}
limits {
    message-size "10M"
}
"#;

#[test]
fn listeners_certificates_greeting_and_limits_follow_a_reload() {
    let t = start_with_pki(LISTENERS, &[], 3, |_| {});
    let (mtad, old_port, new_port, busy_port) = (&t.mtad, t.ports[0], t.ports[1], t.ports[2]);
    let mut before = mtad.session();
    let ehlo = before.cmd("EHLO client.test", "250-");
    assert!(ehlo.contains("SIZE 10485760"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    // a transaction under way on the listener the reload removes
    let mut on_old = Client::connect(old_port);
    on_old.expect("220 ");
    on_old.cmd("EHLO client.test", "250-");
    on_old.cmd("MAIL FROM:<a@client.test>", "250 ");
    on_old.cmd("RCPT TO:<x@example.test>", "250 ");

    rewrite(mtad, "ESMTP one", "ESMTP two");
    rewrite(mtad, "\"10M\"", "\"5M\"");
    rewrite(
        mtad,
        &format!("listen \"old\" address=\"127.0.0.1:{old_port}\""),
        &format!(
            "listen \"new\" address=\"127.0.0.1:{new_port}\" certificate=\"pki/cert.pem\" key=\"pki/key.pem\""
        ),
    );
    reload(mtad);
    let log = mtad.wait_log("configuration reloaded", 1, Duration::from_secs(5));
    assert!(log.contains("listener removed"), "{log}");

    // new sessions: the new greeting and SIZE; the new listener offers STARTTLS
    let mut c = mtad.connect();
    assert!(c.expect("220 ").contains("ESMTP two"));
    let ehlo = c.cmd("EHLO client.test", "250-");
    assert!(ehlo.contains("SIZE 5242880"), "{ehlo}");
    let mut c = Client::connect(new_port);
    c.expect("220 ");
    assert!(c.cmd("EHLO client.test", "250-").contains("STARTTLS"));
    let mut tls = starttls(c, &t.pki);
    tls_cmd(&mut tls, "EHLO client.test", "250-");
    tls_cmd(&mut tls, "QUIT", "221 ");
    // mtactl status lists the listeners as they are now
    let out = mtad.mtactl(&["status", "--format", "json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = status["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mx", "new"], "{status}");
    assert_eq!(status["listeners"][1]["tls"], "offered", "{status}");
    // the removed listener takes no new connection...
    assert!(
        TcpStream::connect(("127.0.0.1", old_port)).is_err(),
        "the removed listener still accepts"
    );
    // ...but its session goes on, and its message is queued
    on_old.cmd("DATA", "354 ");
    on_old.cmd("Subject: still here\r\n\r\nhi\r\n.", "250 ");
    on_old.cmd("QUIT", "221 ");
    // the session opened before the reload kept its settings (the old SIZE)
    before.cmd("MAIL FROM:<a@client.test> SIZE=8000000", "250 ");
    assert_eq!(mtad.queued().len(), 1);

    // an address in use: the reload is refused as a whole, nothing changes
    let _busy = std::net::TcpListener::bind(("127.0.0.1", busy_port)).unwrap();
    rewrite(mtad, "ESMTP two", "ESMTP three");
    let text = std::fs::read_to_string(&mtad.config).unwrap();
    std::fs::write(
        &mtad.config,
        format!("{text}listen \"busy\" address=\"127.0.0.1:{busy_port}\"\n"),
    )
    .unwrap();
    let out = mtad.mtactl(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{busy_port}")),
        "{stderr}"
    );
    assert!(mtad.connect().expect("220 ").contains("ESMTP two"));
    assert!(TcpStream::connect(("127.0.0.1", new_port)).is_ok());

    // a certificate that no longer matches its key: refused with its place
    let text = std::fs::read_to_string(&mtad.config).unwrap();
    let text = text.replace(
        &format!("listen \"busy\" address=\"127.0.0.1:{busy_port}\"\n"),
        "",
    );
    std::fs::write(&mtad.config, text).unwrap();
    let pki = mtad.dir.path().join("pki");
    std::fs::copy(pki.join("ca.pem"), pki.join("cert.pem")).unwrap();
    let out = mtad.mtactl(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("mtad.kdl:"), "{stderr}");
    assert!(mtad.connect().expect("220 ").contains("ESMTP two"));
    // STARTTLS still works with the certificate loaded before
    let mut c = Client::connect(new_port);
    c.expect("220 ");
    c.cmd("EHLO client.test", "250-");
    let mut tls = starttls(c, &t.pki);
    tls_cmd(&mut tls, "EHLO client.test", "250-");
}

#[test]
fn rate_limits_follow_a_reload() {
    let mtad = Mtad::start(
        r#"
server {
    hostname "mx.example.test"
    spool "{spool}"
}
listen "mx" address="127.0.0.1:{port}"
rate-limits {
    connections 100 per="1h"
}
"#,
    );
    for _ in 0..3 {
        let mut c = mtad.connect();
        c.expect("220 ");
        c.cmd("QUIT", "221 ");
    }
    rewrite(&mtad, "connections 100", "connections 4");
    reload(&mtad);
    // the three connections so far still count: one more is allowed
    let mut c = mtad.connect();
    c.expect("220 ");
    c.cmd("QUIT", "221 ");
    let mut c = mtad.connect();
    c.expect("421 4.7.0");
}

#[test]
fn reloads_under_continuous_load_lose_no_session_and_no_message() {
    const MESSAGES: usize = 1500;
    let source = require_tool("smtp-source");
    let sink = Sink::start(&[]);
    let config = format!("{BEFORE}// generation 0\n");
    let mtad = Mtad::start(&config.replace("{sink}", &sink.port().to_string()));
    let mut load = Command::new(source)
        .args(["-4", "-s", "5", "-m", &MESSAGES.to_string(), "-l", "2048"])
        .args(["-f", "load@client.test", "-t", "rcpt@example.test"])
        .arg(format!("127.0.0.1:{}", mtad.port))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // reload again and again while the load runs: a changed comment (a new policy)
    // and, every other time, an extra listener bound and closed
    let extra = free_port();
    let mut reloads = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while load.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "smtp-source did not finish");
        let text = std::fs::read_to_string(&mtad.config).unwrap();
        let mut next = text.replace(
            &format!("// generation {reloads}"),
            &format!("// generation {}", reloads + 1),
        );
        let line = format!("listen \"extra\" address=\"127.0.0.1:{extra}\"\n");
        next = if reloads % 2 == 0 {
            format!("{next}{line}")
        } else {
            next.replace(&line, "")
        };
        std::fs::write(&mtad.config, next).unwrap();
        reload(&mtad);
        reloads += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = load.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "smtp-source failed: {stderr}");
    assert!(stderr.trim().is_empty(), "smtp-source reported: {stderr}");
    assert!(reloads >= 5, "only {reloads} reloads during the load");
    // every message reached the next hop
    let dumps = sink.dumps_within(MESSAGES, Duration::from_secs(60));
    assert_eq!(dumps.len(), MESSAGES);
    let log = mtad.log();
    assert_eq!(
        log.matches("(queue active)").count(),
        MESSAGES,
        "queued lines"
    );
    assert_eq!(log.matches("reload refused").count(), 0);

    // the policy in force after the last reload decides new transactions
    rewrite(
        &mtad,
        "accept rcpt-domain=\"relay\"",
        "reject rcpt-domain=\"relay\" 550 \"5.7.1\" \"closed for the test\"",
    );
    reload(&mtad);
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250-");
    s.cmd("MAIL FROM:<a@client.test>", "250 ");
    s.cmd("RCPT TO:<x@example.test>", "550 5.7.1");
}

#[test]
fn a_policy_that_fails_its_required_tests_does_not_go_live() {
    let sink = Sink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("suite.kdl"),
        r#"
case "relay for example.test" {
    client "192.0.2.1"
    from "a@client.test"
    rcpt "x@example.test"
    expect "rcpt" "accept"
}
"#,
    )
    .unwrap();
    let config = format!("{BEFORE}reload {{\n    require-tests \"suite.kdl\"\n}}\n")
        .replace("{sink}", &sink.port().to_string());
    let spool = dir.path().join("spool");
    let mtad = Mtad::start_in(dir, spool, &config);
    assert!(mtad.log().contains("the required test suites pass cases=1"));

    // relaying for example.test would stop: the suite fails, nothing changes
    rewrite(
        &mtad,
        "domains \"relay\" \"example.test\"",
        "domains \"relay\" \"example.org\"",
    );
    let out = mtad.mtactl(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("suite.kdl:2:1: required test \"relay for example.test\" fails: rcpt <x@example.test>: expected accept, got reject"),
        "{stderr}"
    );
    let out = mtad.mtactl(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    signal(mtad.pid(), "HUP");
    let log = mtad.wait_log("reload refused", 1, Duration::from_secs(5));
    assert!(log.contains("required test"), "{log}");
    try_rcpt(&mtad, "x@example.test", "250 ");
    // nor does it start
    let out = Command::new(env!("CARGO_BIN_EXE_mtad"))
        .arg("--config")
        .arg(&mtad.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("required test"));
    // a policy that passes goes live
    rewrite(&mtad, "\"example.org\"", "\"example.org\" \"example.test\"");
    reload(&mtad);
    try_rcpt(&mtad, "y@example.org", "250 ");
}

#[test]
fn a_restart_under_load_loses_no_acknowledged_message() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let sink = Sink::start(&[]);
    let mut mtad = Mtad::start(&BEFORE.replace("{sink}", &sink.port().to_string()));
    let port = mtad.port;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let subject = format!("load-{c}-{n}");
                    match try_message(port, "x@example.test", &subject) {
                        Ok(()) => {
                            acked.lock().unwrap().push(subject);
                            n += 1;
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    signal(mtad.pid(), "TERM");
    assert!(mtad.stop_within(Duration::from_secs(20)).success());
    let before = acked.lock().unwrap().len();
    mtad.restart();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        before > 0 && acked.len() > before,
        "load before {before}, after {}",
        acked.len()
    );
    let dumps = sink.dumps_within(acked.len(), Duration::from_secs(60));
    let arrived: std::collections::BTreeSet<String> = dumps
        .iter()
        .filter_map(|d| d.lines().find_map(|l| l.strip_prefix("Subject: ")))
        .map(str::to_owned)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|s| !arrived.contains(*s)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged but never delivered: {lost:?}"
    );
}

#[test]
fn watching_reloads_when_a_file_changes() {
    let sink = Sink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("relay.kdl"),
        "domains \"relay\" \"example.test\"\n",
    )
    .unwrap();
    let config = BEFORE
        .replace(
            "domains \"relay\" \"example.test\"",
            "include \"relay.kdl\"",
        )
        .replace("{sink}", &sink.port().to_string());
    let config = format!("{config}reload {{\n    watch \"100ms\"\n}}\n");
    let spool = dir.path().join("spool");
    let mtad = Mtad::start_in(dir, spool, &config);
    try_rcpt(&mtad, "x@other.test", "554 5.7.1");
    // a file the configuration includes
    let table = mtad.dir.path().join("relay.kdl");
    std::fs::write(
        &table,
        "domains \"relay\" \"example.test\" \"other.test\"\n",
    )
    .unwrap();
    mtad.wait_log("configuration reloaded", 1, Duration::from_secs(10));
    assert!(
        mtad.log()
            .contains("a configuration file changed; reloading")
    );
    try_rcpt(&mtad, "x@other.test", "250 ");
    // only touched: nothing to reload
    let text = std::fs::read(&table).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(&table, &text).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(mtad.log().matches("configuration reloaded").count(), 1);
    // broken: refused once, not again and again
    rewrite(
        &mtad,
        "accept rcpt-domain=\"relay\"",
        "accept rcpt-domain=\"rely\"",
    );
    mtad.wait_log("reload refused", 1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(mtad.log().matches("reload refused").count(), 1);
    try_rcpt(&mtad, "x@other.test", "250 ");
    // put back as it runs: nothing to reload; mended otherwise: reloaded
    rewrite(
        &mtad,
        "accept rcpt-domain=\"rely\"",
        "accept rcpt-domain=\"relay\"",
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(mtad.log().matches("configuration reloaded").count(), 1);
    rewrite(
        &mtad,
        "accept rcpt-domain=\"relay\"",
        "accept rcpt-domain=\"relay\" // mended",
    );
    mtad.wait_log("configuration reloaded", 2, Duration::from_secs(10));
}
