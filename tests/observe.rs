//! Operating a running mtad: `mtactl status`, the Prometheus endpoint, and the policy
//! revision in `mtactl check`, the decision log lines and the queue records — over real
//! sockets, against the real daemon, with curl as the HTTP client.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;

const CONFIG: &str = r#"
server {
    hostname "mx.example.test"
    spool "{spool}"
    metrics "127.0.0.1:{metrics}"
}
listen "mx" address="127.0.0.1:{port}"
domains "relay" "example.test"
stage "mail" {
    hook "hooks/mail.rhai"
}
stage "rcpt" {
    accept rcpt-domain="relay"
    reject 554 "5.7.1" "Relay access denied"
}
"#;

const HOOK: &str = r#"
fn mail(ctx) {
    if ctx.sender.address == "spam@bad.test" {
        return reject(550, "5.7.1", "no thanks");
    }
    next()
}
"#;

fn text(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `revision: X` out of `mtactl check`.
fn checked_revision(mtad: &Mtad) -> String {
    let out = text(&mtad.mtactl(&["check"]));
    let revision = out
        .lines()
        .find_map(|l| l.strip_prefix("revision: "))
        .unwrap_or_else(|| panic!("no revision in mtactl check:\n{out}"))
        .to_owned();
    assert_eq!(revision.len(), 12, "{revision}");
    assert!(
        revision.bytes().all(|b| b.is_ascii_hexdigit()),
        "{revision}"
    );
    revision
}

fn status_json(mtad: &Mtad) -> serde_json::Value {
    serde_json::from_str(&text(&mtad.mtactl(&["status", "--format", "json"]))).unwrap()
}

/// Sends raw bytes to the metrics port and returns the status line of the answer.
fn raw_http(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // the server may answer (and close) before it has read everything we send
    let _ = s.write_all(request);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer.lines().next().unwrap_or_default().to_owned()
}

/// The line of the log that contains all of `needles`.
fn log_line(log: &str, needles: &[&str]) -> String {
    log.lines()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .unwrap_or_else(|| panic!("no line with {needles:?} in the log:\n{log}"))
        .to_owned()
}

#[test]
fn status_metrics_and_the_policy_revision() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("hooks")).unwrap();
    let hook = dir.path().join("hooks/mail.rhai");
    std::fs::write(&hook, HOOK).unwrap();
    let metrics_port = free_port();
    let spool = dir.path().join("spool");
    let mtad = Mtad::start_in(
        dir,
        spool,
        &CONFIG.replace("{metrics}", &metrics_port.to_string()),
    );
    let config = mtad.config.display().to_string();
    let revision = checked_revision(&mtad);
    assert!(
        mtad.log().contains(&format!("revision={revision}")),
        "{}",
        mtad.log()
    );

    // two messages accepted, one recipient and one sender refused
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250-");
    let first = s.send_message(
        "a@client.test",
        &["x@example.test"],
        "Subject: 1\r\n\r\nhi\r\n",
    );
    let second = s.send_message(
        "a@client.test",
        &["y@example.test"],
        "Subject: 2\r\n\r\nhi\r\n",
    );
    s.cmd("MAIL FROM:<a@client.test>", "250 ");
    s.cmd("RCPT TO:<x@elsewhere.test>", "554 5.7.1");
    s.cmd("RSET", "250 ");
    s.cmd("MAIL FROM:<spam@bad.test>", "550 5.7.1");
    s.cmd("QUIT", "221 ");
    drop(s);
    let held = text(&mtad.mtactl(&["queue", "hold", &second]));
    assert!(held.contains("placed on hold"), "{held}");

    // the decision log lines and the queued messages carry the revision
    let log = mtad.wait_log("NOQUEUE: reject", 2, Duration::from_secs(5));
    let rcpt_rule = format!("{config}:14:5");
    let mail_rule = format!("{config}:10:5");
    for needles in [
        &[first.as_str(), "(queue active)"][..],
        &["recipient accepted", "x@example.test"],
        &["NOQUEUE: reject: RCPT", "stage=rcpt", &rcpt_rule],
        &["NOQUEUE: reject: MAIL", "stage=mail", &mail_rule],
    ] {
        let line = log_line(&log, needles);
        assert!(line.contains(&format!("revision={revision}")), "{line}");
    }
    let queued = mtad.queued();
    assert_eq!(queued.len(), 2);
    for (m, _) in &queued {
        assert_eq!(m.envelope.revision.as_deref(), Some(revision.as_str()));
    }
    let shown = text(&mtad.mtactl(&["queue", "show", &first]));
    assert!(
        shown.contains(&format!("policy revision: {revision}\n")),
        "{shown}"
    );

    // mtactl status, with one session open (and the first one over)
    mtad.wait_log("disconnect", 1, Duration::from_secs(5));
    let mut idle = mtad.session();
    let status = text(&mtad.mtactl(&["status"]));
    assert!(status.starts_with("uptime: "), "{status}");
    assert!(
        status.contains(&format!("\nrevision: {revision}\n")),
        "{status}"
    );
    assert!(
        status.contains(&format!(
            "\n  mx  127.0.0.1:{}  tls=off auth=off  sessions=1\n",
            mtad.port
        )),
        "{status}"
    );
    assert!(status.contains("\nsessions: 1 open\n"), "{status}");
    assert!(
        status.ends_with("\nqueue: 2 messages (active 1, deferred 0, hold 1)\n"),
        "{status}"
    );
    let json = status_json(&mtad);
    assert_eq!(json["ok"], true);
    assert_eq!(json["revision"], revision.as_str());
    assert_eq!(json["listeners"][0]["name"], "mx");
    assert_eq!(
        json["listeners"][0]["address"],
        format!("127.0.0.1:{}", mtad.port)
    );
    assert_eq!(json["listeners"][0]["tls"], "off");
    assert_eq!(json["listeners"][0]["sessions"], 1);
    assert_eq!(json["sessions"], 1);
    assert_eq!(
        json["queue"],
        serde_json::json!({"active": 1, "deferred": 0, "hold": 1})
    );
    assert!(json["uptime_seconds"].as_u64().is_some(), "{json}");

    // the metrics, scraped while that session is open
    let m = scrape(metrics_port);
    assert_eq!(sample(&m, "mtad_sessions_open{listener=\"mx\"}"), 1.0);
    assert_eq!(sample(&m, "mtad_sessions_total{listener=\"mx\"}"), 2.0);
    let accepted = |stage: &str, rule: &str| {
        sample(
            &m,
            &format!("mtad_policy_accepted_total{{stage=\"{stage}\",rule=\"{rule}\"}}"),
        )
    };
    let refused = |stage: &str, rule: &str| {
        sample(
            &m,
            &format!("mtad_policy_refused_total{{stage=\"{stage}\",rule=\"{rule}\"}}"),
        )
    };
    assert_eq!(accepted("rcpt", &format!("{config}:13:5")), 2.0);
    assert_eq!(refused("rcpt", &rcpt_rule), 1.0);
    assert_eq!(refused("mail", &mail_rule), 1.0);
    // the hook said next() for the others: no rule decided
    assert_eq!(accepted("mail", "default"), 3.0);
    assert_eq!(accepted("data", "default"), 2.0);
    assert_eq!(accepted("connect", "default"), 2.0);
    assert_eq!(accepted("helo", "default"), 1.0);
    // every evaluation was timed: 4 mail, 3 rcpt
    assert_eq!(
        sample(&m, "mtad_policy_evaluation_seconds_count{stage=\"mail\"}"),
        4.0
    );
    assert_eq!(
        sample(&m, "mtad_policy_evaluation_seconds_count{stage=\"rcpt\"}"),
        3.0
    );
    assert_eq!(
        sample(
            &m,
            "mtad_policy_evaluation_seconds_bucket{le=\"+Inf\",stage=\"rcpt\"}"
        ),
        3.0
    );
    assert_eq!(sample(&m, "mtad_queue_messages{state=\"active\"}"), 1.0);
    assert_eq!(sample(&m, "mtad_queue_messages{state=\"hold\"}"), 1.0);
    assert_eq!(sample(&m, "mtad_queue_messages{state=\"deferred\"}"), 0.0);
    assert_eq!(
        sample(
            &m,
            &format!("mtad_policy_revision_info{{revision=\"{revision}\"}}")
        ),
        1.0
    );
    assert_eq!(sample(&m, "mtad_reloads_total"), 0.0);
    assert_eq!(sample(&m, "mtad_reload_failures_total"), 0.0);
    assert!(m.ends_with("# EOF\n"), "{m}");
    idle.cmd("QUIT", "221 ");

    // what is not a scrape gets an error, and the endpoint goes on
    assert!(raw_http(metrics_port, b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    assert!(raw_http(metrics_port, b"GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    assert!(raw_http(metrics_port, b"EHLO client.test\r\n\r\n").starts_with("HTTP/1.1 400"));
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert!(raw_http(metrics_port, huge.as_bytes()).starts_with("HTTP/1.1 431"));
    assert_eq!(raw_http(metrics_port, b"GET /metrics HTTP/1.1\r\n"), ""); // closed unanswered
    let head = raw_http(metrics_port, b"HEAD /metrics HTTP/1.0\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // a changed hook is a new revision once reloaded; a broken one is refused
    std::fs::write(&hook, format!("// allow more\n{HOOK}")).unwrap();
    signal(mtad.pid(), "HUP");
    mtad.wait_log("configuration reloaded", 1, Duration::from_secs(10));
    let reloaded = checked_revision(&mtad);
    assert_ne!(reloaded, revision);
    assert_eq!(status_json(&mtad)["revision"], reloaded.as_str());
    std::fs::write(&hook, "fn mail(ctx) { next( }").unwrap();
    signal(mtad.pid(), "HUP");
    mtad.wait_log("reload refused", 1, Duration::from_secs(10));
    assert_eq!(status_json(&mtad)["revision"], reloaded.as_str());
    // `mtactl reload` refuses the same file before asking: counted and logged alike
    let out = mtad.mtactl(&["reload"]);
    assert!(!out.status.success());
    mtad.wait_log("reload refused", 2, Duration::from_secs(10));
    assert!(mtad.log().contains("by=\"mtactl\""), "{}", mtad.log());
    let m = scrape(metrics_port);
    assert_eq!(sample(&m, "mtad_reloads_total"), 1.0);
    assert_eq!(sample(&m, "mtad_reload_failures_total"), 2.0);
    assert!(
        m.contains(&format!(
            "mtad_policy_revision_info{{revision=\"{reloaded}\"}} 1\n"
        )),
        "{m}"
    );
    assert!(!m.contains(&revision), "{m}");

    // mail accepted now is recorded with the new revision; the old keeps its own
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250-");
    let third = s.send_message(
        "a@client.test",
        &["z@example.test"],
        "Subject: 3\r\n\r\nhi\r\n",
    );
    let log = mtad.wait_log(&format!("{third}: from="), 1, Duration::from_secs(5));
    assert!(
        log_line(&log, &[&third, "(queue active)"]).contains(&format!("revision={reloaded}")),
        "{log}"
    );
    let revisions: Vec<(String, Option<String>)> = mtad
        .queued()
        .into_iter()
        .map(|(m, _)| (m.id.to_string(), m.envelope.revision))
        .collect();
    assert!(
        revisions.contains(&(first, Some(revision))),
        "{revisions:?}"
    );
    assert!(
        revisions.contains(&(third, Some(reloaded))),
        "{revisions:?}"
    );
}

#[test]
fn status_says_when_mtad_is_not_running() {
    let mut mtad = Mtad::start(BASIC);
    mtad.stop();
    let out = mtad.mtactl(&["status"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mtad is not running"), "{err}");
}

#[test]
fn a_metrics_address_in_use_stops_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mtad.kdl");
    let text = BASIC
        .replace("{port}", &free_port().to_string())
        .replace("{spool}", dir.path().join("spool").to_str().unwrap())
        .replace(
            "spool \"",
            &format!("metrics \"127.0.0.1:{port}\"\n    spool \""),
        );
    std::fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mtad"))
        .arg("--allow-root")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot serve metrics on 127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn deliveries_are_counted_by_status_and_transport() {
    let sink = common::peers::Sink::start(&[]);
    let metrics_port = free_port();
    let config = r#"
server {
    hostname "mx.example.test"
    spool "{spool}"
    metrics "127.0.0.1:{metrics}"
}
listen "mx" address="127.0.0.1:{port}"
domains "relay" "example.test" "gone.test"
stage "rcpt" {
    accept rcpt-domain="relay"
}
stage "route" {
    relay "smtp:[127.0.0.1]:{sink}"
}
delivery {
    queue-only #true
}
"#
    .replace("{metrics}", &metrics_port.to_string())
    .replace("{sink}", &sink.port().to_string());
    let mtad = Mtad::start(&config);
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250-");
    s.send_message(
        "a@example.test",
        &["x@example.test", "y@gone.test"],
        "Subject: 1\r\n\r\nhi\r\n",
    );
    // gone.test is gone while the message waits: its route becomes error: (an error:
    // route known at RCPT is refused there, so a bounce comes from mail already queued)
    let text = std::fs::read_to_string(&mtad.config).unwrap().replacen(
        "stage \"route\" {",
        "stage \"route\" {\n    transport \"gone.test\" \"error:5.1.1 gone\"",
        1,
    );
    std::fs::write(&mtad.config, text).unwrap();
    let out = mtad.mtactl(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = mtad.mtactl(&["queue", "flush"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // x@ sent, y@ bounced, and the bounce to a@ sent through the relay (flushed too)
    mtad.wait_log("status=bounced", 1, Duration::from_secs(20));
    mtad.wait_log("status=sent", 1, Duration::from_secs(20));
    let out = mtad.mtactl(&["queue", "flush"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    mtad.wait_log("status=sent", 2, Duration::from_secs(20));
    sink.dumps(2);
    let m = scrape(metrics_port);
    assert_eq!(
        sample(
            &m,
            "mtad_deliveries_total{status=\"sent\",transport=\"smtp\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(
            &m,
            "mtad_deliveries_total{status=\"bounced\",transport=\"error\"}"
        ),
        1.0
    );
    assert!(!m.contains("status=\"deferred\""), "{m}");
    // the route stage was evaluated at each delivery (x@, y@, the bounce)
    assert_eq!(
        sample(&m, "mtad_policy_evaluation_seconds_count{stage=\"route\"}"),
        3.0
    );
    // nothing is left: the delivered and the bounced message are removed (just after
    // their last log line)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = status_json(&mtad);
        if status["queue"] == serde_json::json!({"active": 0, "deferred": 0, "hold": 0}) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The suites of `reload { require-tests }` are dry runs inside the daemon: a reload
/// runs them, and neither the Prometheus counters (curl on /metrics) nor the log show
/// them as traffic — no evaluation counted, no rule, hook `print` or warn-mode line.
#[test]
fn required_test_suites_neither_log_nor_count() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("hooks")).unwrap();
    std::fs::write(
        dir.path().join("hooks/mail.rhai"),
        r#"
fn mail(ctx) {
    print("suite-hook-ran " + ctx.sender.address);
    if ctx.sender.address == "spam@bad.test" {
        return reject(550, "5.7.1", "no thanks");
    }
    next()
}
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("suite.kdl"),
        r#"
case "relay for example.test" {
    client "192.0.2.1"
    from "a@client.test"
    rcpt "x@example.test"
    expect "rcpt" "accept"
}
case "spam is refused" {
    client "192.0.2.1"
    from "spam@bad.test"
    rcpt "x@example.test"
    expect "mail" "reject"
}
"#,
    )
    .unwrap();
    let config = CONFIG.replace(
        "    reject 554 \"5.7.1\" \"Relay access denied\"\n}\n",
        "    reject 554 \"5.7.1\" \"Relay access denied\"\n}\n\
         stage \"connect\" {\n    reject mode=\"warn\" 554 \"5.7.1\" \"suite-warn-rule\"\n}\n\
         reload {\n    require-tests \"suite.kdl\"\n}\n",
    );
    assert!(config.contains("require-tests"));
    let metrics_port = free_port();
    let spool = dir.path().join("spool");
    let mtad = Mtad::start_in(
        dir,
        spool,
        &config.replace("{metrics}", &metrics_port.to_string()),
    );
    assert!(
        mtad.log().contains("the required test suites pass cases=2"),
        "{}",
        mtad.log()
    );
    let traffic = |metrics: &str| -> Vec<String> {
        metrics
            .lines()
            .filter(|l| {
                [
                    "mtad_policy_evaluation",
                    "mtad_policy_accepted",
                    "mtad_policy_refused",
                    "mtad_sessions",
                    "mtad_authentication",
                ]
                .iter()
                .any(|p| l.starts_with(p))
            })
            .map(str::to_owned)
            .collect()
    };
    // the start ran the suite already: nothing counted for it
    let before = traffic(&scrape(metrics_port));
    assert!(
        !before
            .iter()
            .any(|l| l.starts_with("mtad_policy_evaluation_seconds_count")),
        "{before:#?}"
    );
    let log_before = mtad.log().len();

    let out = mtad.mtactl(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    mtad.wait_log("reloaded", 1, Duration::from_secs(10));
    let after = traffic(&scrape(metrics_port));
    assert_eq!(before, after);
    let log = mtad.log();
    let new = &log[log_before..];
    assert!(
        new.contains("the required test suites pass cases=2"),
        "{new}"
    );
    for quiet in [
        "suite-hook-ran",
        "suite-warn-rule",
        "warn-mode",
        "rule decided",
        "policy hook",
    ] {
        assert!(
            !new.contains(quiet),
            "{quiet:?} logged by the suite:\n{new}"
        );
    }
    assert!(!log.contains("suite-hook-ran"), "{log}");

    // real traffic still logs and counts, after the reload as before
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    s.cmd("MAIL FROM:<spam@bad.test>", "550 ");
    s.cmd("QUIT", "221");
    mtad.wait_log("suite-hook-ran spam@bad.test", 1, Duration::from_secs(5));
    let counted = traffic(&scrape(metrics_port));
    assert!(
        counted
            .iter()
            .any(|l| l.starts_with("mtad_policy_evaluation_seconds_count{stage=\"mail\"} 1")),
        "{counted:#?}"
    );
    assert!(
        mtad.log()[log_before..].contains("warn-mode rule matched"),
        "{}",
        mtad.log()
    );
}

/// The issue-20 additions, scraped with curl: the oldest message's age, deferrals by
/// recipient domain, bytes received and delivered, failed TLS handshakes and AUTH.
#[test]
fn queue_age_bytes_deferrals_and_failures_are_counted() {
    let sink = common::peers::Sink::start(&[]);
    // a next hop whose certificate our roots do not know: `tls="verify"` fails
    let untrusted = common::peers::Pki::new().aio(&[]);
    let metrics_port = free_port();
    let config = r#"
server {
    hostname "mx.example.test"
    spool "{spool}"
    metrics "127.0.0.1:{metrics}"
    tls-certificate "{dir}/pki/cert.pem"
    tls-key "{dir}/pki/key.pem"
}
listen "mx" address="127.0.0.1:{port}" auth="offered" auth-plaintext=#true users="users"
users "users" file="{dir}/users"
networks "trusted" "127.0.0.1/32"
stage "rcpt" {
    accept client="trusted"
}
stage "route" {
    transport "sink.test" "smtp:[127.0.0.1]:{sink}"
    transport "later.test" "smtp:[127.0.0.1]:9"
    transport "verify.test" "smtp:[127.0.0.1]:{untrusted}" tls="verify"
}
delivery {
    backoff-min "1h"
    connect-timeout "2s"
}
"#
    .replace("{metrics}", &metrics_port.to_string())
    .replace("{sink}", &sink.port().to_string())
    .replace("{untrusted}", &untrusted.addr.port().to_string());
    let t = common::tls_client::start_with_pki(
        &config,
        &[("users", "alice:{PLAIN}secret\n")],
        0,
        |_| {},
    );
    let mtad = t.mtad;
    let m = scrape(metrics_port);
    assert_eq!(sample(&m, "mtad_queue_oldest_message_age_seconds"), 0.0);
    for to in [
        "one@sink.test",
        "x@later.test",
        "y@Later.Test",
        "z@verify.test",
    ] {
        let out = swaks(
            mtad.port,
            &["--from", "a@src.test", "--to", to, "--body", "bytes\n"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // a wrong password, and a handshake that is not TLS
    let mut c = mtad.session();
    c.cmd("EHLO guesser.example", "250");
    c.cmd("AUTH PLAIN AGFsaWNlAHdyb25n", "535");
    c.cmd("STARTTLS", "220");
    c.send(b"this is not a TLS ClientHello\r\n");
    // mtad answers with a TLS alert, then closes
    let mut rest = Vec::new();
    let _ = c.into_stream().read_to_end(&mut rest);
    let log = mtad.wait_log("status=deferred", 3, Duration::from_secs(20));
    mtad.wait_log("status=sent", 1, Duration::from_secs(20));
    mtad.wait_log("TLS handshake failed", 1, Duration::from_secs(5));
    let sizes: Vec<u64> = log
        .lines()
        .filter_map(|l| l.split_once(", size=")?.1.split(',').next()?.parse().ok())
        .collect();
    assert_eq!(sizes.len(), 4, "{log}");
    let first = sizes[0];
    // three still queued; the older of them arrived at least a second ago by now
    std::thread::sleep(Duration::from_millis(1100));
    let m = scrape(metrics_port);
    assert!(
        sample(&m, "mtad_queue_oldest_message_age_seconds") >= 1.0,
        "{m}"
    );
    assert_eq!(
        sample(&m, "mtad_received_bytes_total{listener=\"mx\"}"),
        sizes.iter().sum::<u64>() as f64
    );
    assert_eq!(
        sample(&m, "mtad_delivered_bytes_total{transport=\"smtp\"}"),
        first as f64
    );
    // one label for the domain, whatever its case
    assert_eq!(
        sample(&m, "mtad_deferrals_total{domain=\"later.test\"}"),
        2.0
    );
    assert_eq!(
        sample(&m, "mtad_deferrals_total{domain=\"verify.test\"}"),
        1.0
    );
    assert_eq!(sample(&m, "mtad_auth_failures_total{listener=\"mx\"}"), 1.0);
    assert_eq!(
        sample(
            &m,
            "mtad_tls_handshake_failures_total{direction=\"inbound\"}"
        ),
        1.0
    );
    // the next hop's certificate did not verify: a failed handshake, nothing sent
    assert_eq!(
        sample(
            &m,
            "mtad_tls_handshake_failures_total{direction=\"outbound\"}"
        ),
        1.0
    );
    assert!(log.contains("the TLS handshake failed"), "{log}");
    assert_eq!(untrusted.file_count(), 0);
}
