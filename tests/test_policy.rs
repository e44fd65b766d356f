//! `mtactl test-policy`: single dry runs, suites, exit statuses, and every example's
//! own suite (so CI runs them all).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn mtactl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn every_example_ships_a_passing_suite() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut ran = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        let config = dir.join("mtad.kdl");
        if !config.exists() {
            continue;
        }
        let tests: Vec<PathBuf> = std::fs::read_dir(dir.join("tests"))
            .unwrap_or_else(|_| panic!("{} has no tests/ suite", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "kdl"))
            .collect();
        assert!(!tests.is_empty(), "{} has an empty suite", dir.display());
        let mut args = vec!["test-policy", "--config", config.to_str().unwrap()];
        args.extend(tests.iter().map(|p| p.to_str().unwrap()));
        let out = mtactl(&args);
        let report = text(&out);
        assert_eq!(out.status.code(), Some(0), "{}:\n{report}", dir.display());
        assert!(report.contains(" passed, 0 failed"), "{report}");
        ran += 1;
    }
    assert!(
        ran >= 4,
        "expected the quickstart and the seed examples, ran {ran}"
    );
}

const CONFIG: &str = r#"server {
    hostname "mx.example.test"
    spool "spool"
}
listen "mx" address="127.0.0.1:2525"
networks "trusted" "127.0.0.0/8"
domains "relay" "example.test"
domains "local"
stage "data" {
    reject 550 "5.7.0" "No spam" header-matches="^Subject:.*viagra"
}
include "POLICY"
"#;

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/default.kdl");
    let config = dir.path().join("mtad.kdl");
    std::fs::write(&config, CONFIG.replace("POLICY", default.to_str().unwrap())).unwrap();
    (dir, config)
}

#[test]
fn a_single_dry_run_and_its_exit_status() {
    let (dir, config) = setup();
    let config = config.to_str().unwrap();
    let ok = mtactl(&[
        "test-policy",
        "--config",
        config,
        "--client",
        "192.0.2.1",
        "--from",
        "a@src.test",
        "--rcpt",
        "b@example.test",
    ]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    let report = text(&ok);
    assert!(report.contains("rcpt <b@example.test>"), "{report}");
    assert!(
        report.contains("default.kdl:24:5"),
        "the deciding rule is named: {report}"
    );
    assert!(report.contains("outcome: queued"), "{report}");

    let refused = mtactl(&[
        "test-policy",
        "--config",
        config,
        "--client",
        "192.0.2.1",
        "--from",
        "a@src.test",
        "--rcpt",
        "x@foreign.test",
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused).contains("554 5.7.1 <x@foreign.test>: Relay access denied"));

    // the data stage with a message file
    let msg = dir.path().join("spam.eml");
    std::fs::write(&msg, "Subject: cheap viagra\r\n\r\nbuy\r\n").unwrap();
    let spam = mtactl(&[
        "test-policy",
        "--config",
        config,
        "--from",
        "a@src.test",
        "--rcpt",
        "b@example.test",
        "--message",
        msg.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(spam.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&spam.stdout).unwrap();
    let data = json["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "data")
        .unwrap();
    assert_eq!(data["verdict"], "reject");
    assert_eq!(data["reply"], "550 5.7.0 No spam");
    assert!(data["rule"].as_str().unwrap().ends_with("mtad.kdl:10:5"));

    // a broken config is exit 2
    std::fs::write(
        dir.path().join("bad.kdl"),
        "stage \"rcpt\" {\n    acept\n}\n",
    )
    .unwrap();
    let bad = mtactl(&[
        "test-policy",
        "--config",
        dir.path().join("bad.kdl").to_str().unwrap(),
        "--from",
        "a@b",
        "--rcpt",
        "c@d",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad).contains("did you mean `accept`?"));
}

#[test]
fn a_suite_reports_failures_with_a_diff_and_coverage() {
    let (dir, config) = setup();
    let suite = dir.path().join("suite.kdl");
    std::fs::write(
        &suite,
        r#"
case "relay domain" {
    client "192.0.2.1"
    from "a@src.test"
    rcpt "b@example.test"
    expect "rcpt" "accept"
}
case "wrong on purpose" {
    client "192.0.2.1"
    from "a@src.test"
    rcpt "x@foreign.test"
    expect "rcpt" "accept"
    outcome "queued"
}
"#,
    )
    .unwrap();
    let out = mtactl(&[
        "test-policy",
        "--config",
        config.to_str().unwrap(),
        suite.to_str().unwrap(),
    ]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("ok   relay domain"), "{report}");
    assert!(report.contains("FAIL wrong on purpose"), "{report}");
    assert!(
        report.contains("rcpt <x@foreign.test>: expected accept, got reject by default"),
        "{report}"
    );
    assert!(
        report.contains("outcome: expected queued, got refused"),
        "{report}"
    );
    assert!(report.contains("1 passed, 1 failed"), "{report}");
    assert!(report.contains("rules no case exercised:"), "{report}");
    assert!(report.contains("mtad.kdl:10:5 (stage data)"), "{report}");

    let json = mtactl(&[
        "test-policy",
        "--config",
        config.to_str().unwrap(),
        suite.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["passed"], 1);
    assert_eq!(v["failed"], 1);

    // a broken suite file is exit 2, with its place
    std::fs::write(&suite, "case \"x\" {\n    client \"not-an-ip\"\n    rcpt \"a@b\"\n    expect \"rcpt\" \"maybe\"\n}\n").unwrap();
    let out = mtactl(&[
        "test-policy",
        "--config",
        config.to_str().unwrap(),
        suite.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out);
    assert!(
        err.contains("suite.kdl:2:5: `not-an-ip` is not an IP address"),
        "{err}"
    );
    assert!(
        err.contains("suite.kdl:4:5: unknown verdict `maybe`"),
        "{err}"
    );
}

/// A route's options are part of the dry run: seed 003's relayhost is shown with its
/// account, TLS policy and, from a route rule, its fallbacks.
#[test]
fn route_options_are_shown_with_the_transport() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/upstream-relay/mtad.kdl");
    let args = [
        "test-policy",
        "--config",
        config.to_str().unwrap(),
        "--client",
        "127.0.0.1",
        "--from",
        "app@relay.domain.tld",
        "--rcpt",
        "someone@example.com",
    ];
    let out = mtactl(&args);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    let route = report
        .lines()
        .position(|l| l.starts_with("route <someone@example.com>"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        report
            .lines()
            .nth(route)
            .unwrap()
            .contains("smtp:a.domain.tld:587"),
        "{report}"
    );
    let options = report.lines().nth(route + 1).unwrap();
    assert!(
        options.contains("options") && options.contains(r#"auth="upstream" tls="required""#),
        "{report}"
    );

    let mut json_args = args.to_vec();
    json_args.extend(["--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&mtactl(&json_args).stdout).unwrap();
    let route = json["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "route")
        .unwrap();
    assert_eq!(route["route_options"], r#"auth="upstream" tls="required""#);
}

#[test]
fn content_checks_are_shown_with_their_table_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("header_checks"),
        "/^Received:/ IGNORE\n/^X-Mailer:/ REPLACE X-Mailer: hidden\n/^X-Bcc: yes/ BCC audit@example.test\n",
    )
    .unwrap();
    let config = dir.path().join("mtad.kdl");
    std::fs::write(
        &config,
        "server {\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}\nlisten \"mx\" address=\"127.0.0.1:2525\"\nstage \"rcpt\" {\n    accept open-relay=\"intended\"\n}\nstage \"data\" {\n    header-checks file=\"header_checks\"\n    body-checks {\n        \"/^forbidden/\" \"REJECT 5.7.0 not here\"\n    }\n}\n",
    )
    .unwrap();
    let msg = dir.path().join("m.eml");
    std::fs::write(
        &msg,
        "Received: from a\r\n\tby b\r\nX-Mailer: tool\r\nX-Bcc: yes\r\nSubject: hi\r\n\r\nbody\r\n",
    )
    .unwrap();
    let args = |m: &Path| {
        vec![
            "test-policy".to_owned(),
            "--config".to_owned(),
            config.to_str().unwrap().to_owned(),
            "--from".to_owned(),
            "a@src.test".to_owned(),
            "--rcpt".to_owned(),
            "b@example.test".to_owned(),
            "--message".to_owned(),
            m.to_str().unwrap().to_owned(),
        ]
    };
    let a = args(&msg);
    let out = mtactl(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let report = text(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(
        // the header as header checks saw it: its line break kept, as in Postfix
        report.contains("check    header_checks:1:1 header \"Received: from a\\n\\tby b\" IGNORE"),
        "{report}"
    );
    assert!(
        report.contains(
            "check    header_checks:2:1 header \"X-Mailer: tool\" REPLACE X-Mailer: hidden"
        ),
        "{report}"
    );
    assert!(
        report.contains("check    bcc + audit@example.test"),
        "{report}"
    );
    assert!(
        report.contains("header   - Received: from a\tby b"),
        "{report}"
    );
    assert!(report.contains("header   = X-Mailer: hidden"), "{report}");
    // the header block as it would be queued
    let queued = &report[report.find("headers as queued").expect("no headers")..];
    assert!(
        queued.contains("\n    X-Mailer: hidden\n    X-Bcc: yes\n    Subject: hi\n"),
        "{report}"
    );
    assert!(!queued.contains("Received: from"), "{report}");
    // the added recipient is routed too
    assert!(report.contains("audit@example.test"), "{report}");

    let spam = dir.path().join("spam.eml");
    std::fs::write(&spam, "Subject: x\r\n\r\nok\r\nforbidden words\r\n").unwrap();
    let mut a = args(&spam);
    a.extend(["--format".to_owned(), "json".to_owned()]);
    let out = mtactl(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let data = json["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "data")
        .unwrap();
    assert_eq!(data["reply"], "550 5.7.0 not here");
    assert!(
        data["rule"].as_str().unwrap().ends_with("mtad.kdl:12:9"),
        "{data}"
    );
    // (our own Received: is inspected first, as the daemon's checks see it)
    assert!(
        data["checks"][0]
            .as_str()
            .unwrap()
            .starts_with("header_checks:1:1 header \"Received: from client.example ([127.0.0.1])"),
        "{data}"
    );
    assert!(
        data["checks"][1]
            .as_str()
            .unwrap()
            .ends_with("mtad.kdl:12:9 body \"forbidden words\" REJECT 5.7.0 not here"),
        "{data}"
    );
}

/// The content filter a message would go through is part of the dry run.
#[test]
fn the_content_filter_decision_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mtad.kdl");
    std::fs::write(
        &config,
        "server {\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}\n\
         listen \"mx\" address=\"127.0.0.1:2525\" content-filter=\"amavis\"\n\
         listen \"reinject\" address=\"127.0.0.1:10025\" filtered=#true\n\
         content-filter \"amavis\" \"smtp:[127.0.0.1]:10024\"\n\
         content-filter \"strict\" \"smtp:[127.0.0.1]:10030\"\n\
         networks \"trusted\" \"127.0.0.0/8\"\n\
         stage \"rcpt\" {\n    accept client=\"trusted\"\n}\n\
         stage \"data\" {\n    filter \"strict\" sender=\"boss@src.test\"\n}\n",
    )
    .unwrap();
    let run = |listener: &str, from: &str| {
        text(&mtactl(&[
            "test-policy",
            "--config",
            config.to_str().unwrap(),
            "--listener",
            listener,
            "--from",
            from,
            "--rcpt",
            "b@dst.test",
        ]))
    };
    let out = run("mx", "a@src.test");
    assert!(
        out.contains("filter: amavis smtp:[127.0.0.1]:10024 (the listener or server default)"),
        "{out}"
    );
    let out = run("mx", "boss@src.test");
    assert!(
        out.contains("filter: strict smtp:[127.0.0.1]:10030 (") && out.contains("mtad.kdl:14:5)"),
        "{out}"
    );
    let out = run("reinject", "boss@src.test");
    assert!(!out.contains("filter:"), "{out}");
}

#[test]
fn mime_matches_name_their_class_and_part() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mtad.kdl");
    std::fs::write(
        &config,
        "server {\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}\nlisten \"mx\" address=\"127.0.0.1:2525\"\nstage \"rcpt\" {\n    accept open-relay=\"intended\"\n}\nstage \"data\" {\n    header-checks {\n        \"/^Content-Type: multipart/\" \"INFO multipart\"\n        \"/^Content-Disposition:.*filename=.*\\\\.exe/\" \"WARN program\"\n    }\n    body-checks {\n        \"/^cheap watches$/\" \"REJECT 5.7.1 spam\"\n    }\n}\n",
    )
    .unwrap();
    let msg = dir.path().join("m.eml");
    std::fs::write(
        &msg,
        "Subject: hi\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nY2hlYXAgd2F0Y2hlcwo=\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"a.exe\"\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQ\r\n--b--\r\n",
    )
    .unwrap();
    let out = mtactl(&[
        "test-policy",
        "--config",
        config.to_str().unwrap(),
        "--from",
        "a@src.test",
        "--rcpt",
        "b@example.test",
        "--message",
        msg.to_str().unwrap(),
    ]);
    let report = text(&out);
    // the top-level Content-Type: a MIME header, in no part
    assert!(
        report.contains(
            "mime-header \"Content-Type: multipart/mixed; boundary=\\\"b\\\"\" INFO multipart"
        ),
        "{report}"
    );
    assert!(
        report.contains(
            "mime-header part 2 (application/octet-stream \"a.exe\", base64) \"Content-Disposition: attachment; filename=\\\"a.exe\\\"\" WARN program"
        ),
        "{report}"
    );
    assert!(
        report.contains("body part 1 (text/plain, base64) \"cheap watches\" REJECT 5.7.1 spam"),
        "{report}"
    );
}

/// A configuration of one listener and `stages`, beside the hook file `name`.
fn with_hook(name: &str, hook: &str, stages: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(name), hook).unwrap();
    let config = dir.path().join("mtad.kdl");
    std::fs::write(
        &config,
        format!(
            "server {{\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}}\n\
             listen \"mx\" address=\"127.0.0.1:2525\"\n{stages}"
        ),
    )
    .unwrap();
    (dir, config)
}

/// A hook naming a content filter that does not exist fails closed.
#[test]
fn a_hook_choosing_an_undefined_filter_fails_closed() {
    let (_dir, config) = with_hook(
        "f.rhai",
        "fn data(ctx) {\n    ctx.content_filter(\"nope\");\n    next()\n}\n",
        "stage \"rcpt\" {\n    accept open-relay=\"intended\"\n}\nstage \"data\" {\n    hook \"f.rhai\"\n}\n",
    );
    let out = mtactl(&[
        "test-policy",
        "--config",
        config.to_str().unwrap(),
        "--from",
        "a@src.test",
        "--rcpt",
        "b@dst.test",
    ]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("data                             defer"),
        "{report}"
    );
    assert!(report.contains("451 4."), "{report}");
}

/// `--dns FILE` gives the authentication checks their DNS: the report shows the
/// results, our Authentication-Results on top of the queued headers (a forged one in
/// our name gone), and a rule acting on DMARC; a broken file is an error with its
/// place.
#[test]
fn authentication_checks_with_a_dns_file() {
    let (dir, config) = setup();
    let text_of = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!(
            "{text_of}authentication {{\n}}\nstage \"data\" {{\n    reject dmarc=\"fail\" dmarc-policy=\"reject\" 550 \"5.7.1\" \"DMARC\"\n}}\n"
        ),
    )
    .unwrap();
    let dns = dir.path().join("dns.kdl");
    std::fs::write(
        &dns,
        "txt \"src.test\" \"v=spf1 ip4:192.0.2.0/24 -all\"\ntxt \"_dmarc.src.test\" \"v=DMARC1; p=reject\"\n",
    )
    .unwrap();
    let message = dir.path().join("m.eml");
    std::fs::write(
        &message,
        "Authentication-Results: mx.example.test; dkim=pass header.d=src.test\r\nFrom: a@src.test\r\nSubject: hi\r\n\r\nhi\r\n",
    )
    .unwrap();
    let run = |client: &str| {
        mtactl(&[
            "test-policy",
            "--config",
            config.to_str().unwrap(),
            "--client",
            client,
            "--from",
            "a@src.test",
            "--rcpt",
            "b@example.test",
            "--message",
            message.to_str().unwrap(),
            "--dns",
            dns.to_str().unwrap(),
        ])
    };
    let pass = run("192.0.2.1");
    let report = text(&pass);
    assert_eq!(pass.status.code(), Some(0), "{report}");
    assert!(
        report.contains("authentication: arc=none dkim=none dmarc=pass"),
        "{report}"
    );
    assert!(report.contains("spf=pass"), "{report}");
    assert!(
        report.contains("    Authentication-Results: mx.example.test;")
            && !report.contains("dkim=pass header.d=src.test"),
        "ours on top, the forged one gone: {report}"
    );
    let forged = run("203.0.113.9");
    let report = text(&forged);
    assert_eq!(forged.status.code(), Some(1), "{report}");
    assert!(report.contains("550 5.7.1 DMARC"), "{report}");
    assert!(
        report.contains("dmarc=fail dmarc-policy=reject"),
        "{report}"
    );

    std::fs::write(&dns, "txt \"src.test\"\n").unwrap();
    let broken = run("192.0.2.1");
    assert_eq!(broken.status.code(), Some(2));
    assert!(
        text(&broken).contains("dns.kdl:1:1: `txt`"),
        "{}",
        text(&broken)
    );
}

/// The dry run removes `Authentication-Results:` in our authserv-id as the daemon does,
/// also when the checks do not run (an authenticated client, `skip-clients`); those of
/// other hosts stay.
#[test]
fn forged_authentication_results_are_removed_from_unchecked_mail_too() {
    let (dir, config) = setup();
    let text_of = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!(
            "{text_of}authentication {{\n    skip-clients \"198.51.100.0/24\"\n}}\nstage \"rcpt\" {{\n    accept authenticated=#true\n    accept client=\"198.51.100.7\"\n}}\n"
        ),
    )
    .unwrap();
    let message = dir.path().join("m.eml");
    std::fs::write(
        &message,
        "Authentication-Results: MX.example.test; dkim=pass header.d=src.test\r\n\
         Authentication-Results: other.example; spf=pass smtp.mailfrom=src.test\r\n\
         From: a@src.test\r\nSubject: hi\r\n\r\nhi\r\n",
    )
    .unwrap();
    for extra in [
        &["--client", "203.0.113.9", "--auth", "alice"][..],
        &["--client", "198.51.100.7"][..],
    ] {
        let mut args = vec![
            "test-policy",
            "--config",
            config.to_str().unwrap(),
            "--from",
            "a@src.test",
            "--rcpt",
            "b@elsewhere.test",
            "--message",
            message.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = mtactl(&args);
        let report = text(&out);
        assert_eq!(out.status.code(), Some(0), "{extra:?}: {report}");
        let queued = &report[report.find("headers as queued").expect("no headers")..];
        assert!(!queued.contains("dkim=pass"), "{extra:?}: {report}");
        assert!(
            queued.contains("Authentication-Results: other.example; spf=pass"),
            "{extra:?}: {report}"
        );
    }
}

/// A hook that fails: the dry run shows the daemon's 451 and, under it, the hook's
/// error with its file:line:col (docs/test-policy.md), in text and in JSON.
#[test]
fn a_failing_hook_shows_its_error_and_place() {
    let (_dir, config) = with_hook(
        "rcpt.rhai",
        "fn rcpt(ctx) {\n    if ctx.rcpt.local == \"boom\" { let x = [1]; return x[5]; }\n    next()\n}\n",
        "stage \"rcpt\" {\n    hook \"rcpt.rhai\" function=\"rcpt\"\n    reject 554 \"5.7.1\" \"Relay access denied\"\n}\n",
    );
    let config = config.to_str().unwrap();
    let args = ["test-policy", "--config", config, "--from", "a@b.example"];
    let out = mtactl(&[&args[..], &["--rcpt", "boom@x.example"]].concat());
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let rcpt = report
        .lines()
        .position(|l| l.starts_with("rcpt <boom@x.example>"))
        .unwrap();
    let lines: Vec<&str> = report.lines().collect();
    assert!(
        lines[rcpt].contains("defer")
            && lines[rcpt].ends_with("451 4.3.0 Temporary local problem, try again later"),
        "{report}"
    );
    let error = lines[rcpt + 1].trim_start();
    assert!(
        error.starts_with("error    ")
            && error.contains("rcpt.rhai:2:57: Array index 5 out of bounds"),
        "{report}"
    );
    let out = mtactl(&[&args[..], &["--rcpt", "boom@x.example", "--format", "json"]].concat());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stage = &json["stages"][3];
    assert_eq!(stage["stage"], "rcpt", "{json}");
    assert!(
        stage["error"].as_str().unwrap().contains("rcpt.rhai:2:57"),
        "{json}"
    );
    // a recipient the hook lets through has no error
    let out = mtactl(&[&args[..], &["--rcpt", "fine@x.example", "--format", "json"]].concat());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["stages"][3].get("error").is_none(), "{json}");
}

/// docs/test-policy.md's session case, as a suite of examples/quickstart: it passes;
/// with one expectation wrong it fails, naming the step's place, the command, the
/// reply expected and the reply got; a session case that holds an envelope is a
/// broken suite.
#[test]
fn the_documented_session_case_passes_and_a_wrong_expectation_fails() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/test-policy.md"))
        .unwrap();
    let at = docs.find("case \"pipelined RCPTs, one refused\"").unwrap();
    let case = &docs[at..at + docs[at..].find("```").unwrap()];
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/mtad.kdl");
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("session.kdl");
    let run = |text: &str| {
        std::fs::write(&suite, text).unwrap();
        mtactl(&[
            "test-policy",
            "--config",
            config.to_str().unwrap(),
            suite.to_str().unwrap(),
        ])
    };

    let out = run(case);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("1 passed, 0 failed"), "{}", text(&out));
    // the session's rcpt rules count as exercised
    assert!(!text(&out).contains("mtad.kdl:13:5"), "{}", text(&out));

    let wrong = case.replace("\"554 5.7.1 Relay access denied\"", "\"250\"");
    assert_ne!(wrong, case);
    let out = run(&wrong);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let line = wrong
        .lines()
        .position(|l| l.contains("expect \"250\" \"250 2.1.5\" \"250\""))
        .unwrap()
        + 1;
    let want = format!(
        "session: after \"RCPT TO:<x@foreign.test>\": expected \"250\"..., got \"554 5.7.1 Relay access denied\" ({}:{line}:9)",
        suite.display()
    );
    assert!(report.contains(&want), "{want}\n{report}");
    assert!(report.contains("| > EHLO client.example"), "{report}");
    assert!(report.contains("0 passed, 1 failed"), "{report}");

    let broken = case.replace("    session {", "    from \"a@src.test\"\n    session {");
    let out = run(&broken);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(":3:5: a `session` case holds `client`"),
        "{}",
        text(&out)
    );
}

/// `reload { require-tests }` runs session cases too (at start, at reload and in
/// `mtactl check`): a failing one keeps the policy from going live.
#[test]
fn a_required_session_case_gates_the_policy() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/test-policy.md"))
        .unwrap();
    let at = docs.find("case \"pipelined RCPTs, one refused\"").unwrap();
    let case = &docs[at..at + docs[at..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let quickstart = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/quickstart/mtad.kdl"
    ))
    .unwrap();
    let config = dir.path().join("mtad.kdl");
    std::fs::write(
        &config,
        format!("{quickstart}reload {{\n    require-tests \"suite.kdl\"\n}}\n"),
    )
    .unwrap();
    let check = |suite: &str| {
        std::fs::write(dir.path().join("suite.kdl"), suite).unwrap();
        mtactl(&["check", "--config", config.to_str().unwrap()])
    };
    let out = check(case);
    assert!(out.status.success(), "{}", text(&out));
    let out = check(&case.replace("\"554 5.7.1 Relay access denied\"", "\"250\""));
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(
            "required test \"pipelined RCPTs, one refused\" fails: session: after \"RCPT TO:<x@foreign.test>\""
        ),
        "{}",
        text(&out)
    );
}

/// A listener the configuration does not have cannot hold a session: `--listener` and a
/// suite case naming one are errors that say which listeners there are.
#[test]
fn an_unknown_listener_is_an_error() {
    let (dir, config) = setup();
    let config = config.to_str().unwrap();
    let out = mtactl(&[
        "test-policy",
        "--config",
        config,
        "--listener",
        "submision",
        "--from",
        "a@src.test",
        "--rcpt",
        "b@example.test",
    ]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(2), "{report}");
    assert!(
        report
            .contains("--listener \"submision\": no such listener (the configuration has \"mx\")"),
        "{report}"
    );
    let suite = dir.path().join("suite.kdl");
    std::fs::write(
        &suite,
        "case \"typo\" {\n    listener \"submision\"\n    from \"a@src.test\"\n    rcpt \"b@example.test\"\n    expect \"rcpt\" \"accept\"\n}\n\
         case \"named\" {\n    listener \"mx\"\n    from \"a@src.test\"\n    rcpt \"b@example.test\"\n    expect \"rcpt\" \"accept\"\n}\n",
    )
    .unwrap();
    let out = mtactl(&["test-policy", "--config", config, suite.to_str().unwrap()]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("listener \"submision\": no such listener"),
        "{report}"
    );
    assert!(report.contains("1 passed, 1 failed"), "{report}");
}

/// The dry run is the daemon's session: what the session refuses before any rule runs
/// (a listener that wants AUTH, the recipient limit) is refused in the dry run with the
/// session's reply, and an envelope field that would be a second command line is an
/// error, not a command.
#[test]
fn the_dry_run_answers_what_the_session_answers_before_any_rule() {
    let dir = tempfile::tempdir().unwrap();
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/default.kdl");
    let config = dir.path().join("mtad.kdl");
    std::fs::write(
        &config,
        CONFIG
            .replace("POLICY", default.to_str().unwrap())
            .replace(
                "listen \"mx\" address=\"127.0.0.1:2525\"\n",
                "listen \"mx\" address=\"127.0.0.1:2525\"\n\
                 listen \"submission\" address=\"127.0.0.1:2587\" auth=\"required\" auth-plaintext=#true users=\"users\"\n\
                 users \"users\" file=\"users\"\n\
                 limits {\n    recipients 2\n}\n",
            ),
    )
    .unwrap();
    std::fs::write(dir.path().join("users"), "alice:{PLAIN}secret\n").unwrap();
    let config = config.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["test-policy", "--config", config, "--from", "a@src.test"];
        args.extend_from_slice(extra);
        let out = mtactl(&args);
        (out.status.code(), text(&out))
    };
    // three recipients from a trusted client: the third is over the limit
    let (code, report) = run(&[
        "--rcpt",
        "a@example.test",
        "--rcpt",
        "b@example.test",
        "--rcpt",
        "c@example.test",
    ]);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report.contains("rcpt <c@example.test>")
            && report.contains("452 4.5.3 Error: too many recipients"),
        "{report}"
    );
    assert!(report.contains("outcome: queued"), "{report}");
    // AUTH required, not logged in: MAIL gets the session's 530
    let (code, report) = run(&["--listener", "submission", "--rcpt", "a@example.test"]);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report.contains("530 5.7.0 Authentication required"),
        "{report}"
    );
    assert!(report.contains("outcome: refused"), "{report}");
    // ... logged in: accepted
    let (code, report) = run(&[
        "--listener",
        "submission",
        "--auth",
        "alice",
        "--rcpt",
        "someone@elsewhere.test",
    ]);
    assert_eq!(code, Some(0), "{report}");
    // a line break in an address is not a second command
    let (code, report) = run(&["--rcpt", "a@example.test\r\nRSET"]);
    assert_eq!(code, Some(2), "{report}");
    assert!(report.contains("a line break"), "{report}");
}
