//! The open-relay analysis (docs/policy-analysis.md) against the real daemon: every
//! broken policy is refused by `mtactl check` and by mtad with a counterexample, and
//! that counterexample, sent by swaks (as the client it names, through a PROXY header)
//! to a daemon running the same policy marked `open-relay="intended"`, is accepted.
//! Every example is proved closed.

mod common;

use std::process::Command;

use common::*;

/// Policies that relay for strangers, each in its own way: (what, sets, rcpt rules).
const BROKEN: &[(&str, &str, &str)] = &[
    ("accept everything", "", "accept"),
    (
        "a trusted network of everyone",
        "networks \"trusted\" \"0.0.0.0/0\"",
        "accept client=\"trusted\"",
    ),
    (
        "postmaster of any domain (docs/hooks.md's first example as it was)",
        "",
        "accept rcpt-matches=\"^postmaster@\"\n    accept rcpt-domain=\"relay\"",
    ),
    (
        "a blocklist read as an allowlist",
        "networks \"bad\" \"198.51.100.0/24\"",
        "accept not-client=\"bad\"",
    ),
    (
        "the sender's domain as proof of who is sending",
        "",
        "accept sender-domain=\"relay\"\n    accept rcpt-domain=\"relay\"",
    ),
    (
        "a refusal that only covers one sender",
        "networks \"trusted\" \"192.0.2.0/24\"",
        "accept client=\"trusted\"\n    reject 554 \"5.7.1\" \"no\" sender=\"spam@spam.example\" not-rcpt-domain=\"relay\"\n    accept not-sender=\"spam@spam.example\"",
    ),
];

fn config(sets: &str, rules: &str, intended: bool) -> String {
    let open = if intended {
        " open-relay=\"intended\""
    } else {
        ""
    };
    format!(
        "server {{\n    hostname \"mx.example.test\"\n    spool \"{{spool}}\"\n}}\n\
         networks \"lb\" \"127.0.0.1/32\"\n\
         domains \"relay\" \"example.test\" \".example.test\"\n\
         listen \"mx\" address=\"127.0.0.1:{{port}}\" proxy-protocol=#true proxies=\"lb\"{open}\n\
         {sets}\n\
         stage \"rcpt\" {{\n    {rules}\n}}\n"
    )
}

/// What the analysis said the attacker sends.
#[derive(Debug)]
struct Envelope {
    client: String,
    helo: String,
    sender: String,
    rcpt: String,
}

fn envelope(text: &str) -> Envelope {
    let re = regex::Regex::new(
        r"client (\S+) on listener `mx`, HELO (\S+), MAIL FROM:<([^>]*)> RCPT TO:<([^>]+)>",
    )
    .unwrap();
    let c = re
        .captures(text)
        .unwrap_or_else(|| panic!("no envelope in {text:?}"));
    Envelope {
        client: c[1].to_owned(),
        helo: c[2].to_owned(),
        sender: c[3].to_owned(),
        rcpt: c[4].to_owned(),
    }
}

fn check(dir: &std::path::Path, text: &str) -> std::process::Output {
    let path = dir.join("mtad.kdl");
    std::fs::write(
        &path,
        text.replace("{port}", "2525")
            .replace("{spool}", dir.join("spool").to_str().unwrap()),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .arg("--config")
        .arg(&path)
        .arg("check")
        .output()
        .unwrap()
}

#[test]
fn every_counterexample_is_refused_and_is_accepted_by_a_live_daemon() {
    for (what, sets, rules) in BROKEN {
        let dir = tempfile::tempdir().unwrap();
        // refused, with the rule and the envelope
        let out = check(dir.path(), &config(sets, rules, false));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: accepted by check: {stderr}");
        assert!(
            stderr.contains("this policy is an open relay") && stderr.contains("mtad.kdl:"),
            "{what}: {stderr}"
        );
        let refused = envelope(&stderr);
        // mtad itself refuses to start on it
        let path = dir.path().join("mtad.kdl");
        let started = Command::new(env!("CARGO_BIN_EXE_mtad"))
            .arg("--allow-root")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        assert!(!started.status.success(), "{what}: mtad started");
        assert!(
            String::from_utf8_lossy(&started.stderr).contains("open relay"),
            "{what}: {}",
            String::from_utf8_lossy(&started.stderr)
        );

        // marked as intended: a warning with the same envelope, and the daemon runs
        let intended = config(sets, rules, true);
        let out = check(dir.path(), &intended);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{what}: {stderr}");
        assert!(
            stderr.contains("as open-relay=\"intended\" says"),
            "{what}: {stderr}"
        );
        let e = envelope(&stderr);
        assert_eq!(e.rcpt, refused.rcpt, "{what}");
        let mtad = Mtad::start(&intended);
        // the counterexample, sent as the client it names
        let port = mtad.port.to_string();
        let out = Command::new(require_tool("swaks"))
            .args(["--server", "127.0.0.1", "--port", &port])
            .args(["--proxy-version", "1", "--proxy-family", "TCP4"])
            .args(["--proxy-source", &e.client, "--proxy-source-port", "40000"])
            .args(["--proxy-dest", "127.0.0.1", "--proxy-dest-port", &port])
            .args(["--helo", &e.helo, "--from", &e.sender, "--to", &e.rcpt])
            .args(["--quit-after", "RCPT"])
            .output()
            .unwrap();
        let transcript = String::from_utf8_lossy(&out.stdout);
        let after_rcpt = transcript
            .split(&format!("RCPT TO:<{}>", e.rcpt))
            .nth(1)
            .unwrap_or_else(|| panic!("{what}: no RCPT in {transcript}"));
        assert!(
            after_rcpt.trim_start().starts_with("<-  250"),
            "{what}: the daemon refused the counterexample {e:?}:\n{transcript}\n{}",
            mtad.log()
        );
        assert!(
            mtad.log().contains(&format!("client={}", e.client)) || mtad.log().contains(&e.client),
            "{what}: the session did not run as {}",
            e.client
        );
    }
}

#[test]
fn every_example_is_proved_closed() {
    for config in example_configs() {
        let out = Command::new(env!("CARGO_BIN_EXE_mtactl"))
            .arg("--config")
            .arg(&config)
            .arg("check")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", config.display());
        for line in stderr.lines() {
            // the scripted example's rcpt hook may accept (it does, for postmaster of
            // our domains only; its suite pins that): the one warning allowed
            let hook = config.ends_with("scripted/mtad.kdl")
                && line.contains("`hook rcpt.rhai:rcpt` may relay");
            assert!(
                hook || !(line.contains("relay")
                    || line.contains("incomplete")
                    || line.contains("trusted")),
                "{}: {line}",
                config.display()
            );
        }
    }
}

#[test]
fn a_reload_to_an_open_relay_is_refused_and_the_old_policy_stays() {
    let closed = config("", "accept rcpt-domain=\"relay\"", false);
    let mtad = Mtad::start(&closed);
    let text = std::fs::read_to_string(&mtad.config).unwrap();
    std::fs::write(
        &mtad.config,
        text.replace("accept rcpt-domain=\"relay\"", "accept"),
    )
    .unwrap();
    let out = mtad.mtactl(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("this policy is an open relay"), "{stderr}");
    // a stranger is still refused: the running policy is the closed one
    let port = mtad.port.to_string();
    let out = Command::new(require_tool("swaks"))
        .args(["--server", "127.0.0.1", "--port", &port])
        .args(["--proxy-version", "1", "--proxy-family", "TCP4"])
        .args([
            "--proxy-source",
            "192.0.2.1",
            "--proxy-source-port",
            "40000",
        ])
        .args(["--proxy-dest", "127.0.0.1", "--proxy-dest-port", &port])
        .args([
            "--from",
            "a@attacker.example",
            "--to",
            "victim@elsewhere.example",
        ])
        .args(["--quit-after", "RCPT"])
        .output()
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(transcript.contains("<** 554"), "{transcript}");
}

#[test]
fn strict_makes_warnings_errors() {
    let run = |example: &str| {
        Command::new(env!("CARGO_BIN_EXE_mtactl"))
            .arg("--config")
            .arg(format!(
                "{}/examples/{example}/mtad.kdl",
                env!("CARGO_MANIFEST_DIR")
            ))
            .args(["check", "--strict"])
            .output()
            .unwrap()
    };
    let out = run("quickstart");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // the scripted example's rcpt hook may relay: a warning, an error with --strict
    let out = run("scripted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--strict makes them errors"), "{stderr}");
}

/// A hook that may relay is a warning naming it with an envelope (docs/policy-analysis.md);
/// a required suite case that sends that envelope and expects the hook to refuse it
/// pins it: `mtactl check --strict` passes then, and a case about another recipient,
/// or a case the hook does not pass, does not pin it.
#[test]
fn a_required_case_pins_a_hook_that_may_relay() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gate.rhai"),
        "fn rcpt(ctx) {\n    if ctx.rcpt.domain == \"example.test\" { return accept(); }\n    reject(554, \"5.7.1\", \"not here\")\n}\n",
    )
    .unwrap();
    let text = config(
        "",
        "hook \"gate.rhai\"\n    accept rcpt-domain=\"relay\"",
        false,
    );
    let strict = |text: &str| {
        let path = dir.path().join("mtad.kdl");
        std::fs::write(
            &path,
            text.replace("{port}", "2525")
                .replace("{spool}", dir.path().join("spool").to_str().unwrap()),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_mtactl"))
            .arg("--config")
            .arg(&path)
            .args(["check", "--strict"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stderr) = strict(&text);
    assert!(!ok, "{stderr}");
    let warning = stderr
        .lines()
        .find(|l| l.contains("`hook gate.rhai:rcpt` may relay"))
        .unwrap_or_else(|| panic!("{stderr}"));
    let e = envelope(warning);
    let gated = format!("{text}reload {{\n    require-tests \"suite.kdl\"\n}}\n");
    let suite = |rcpt: &str, verdict: &str| {
        std::fs::write(
            dir.path().join("suite.kdl"),
            format!(
                "case \"the reported envelope is refused\" {{\n    client \"{}\"\n    helo \"{}\"\n    from \"{}\"\n    rcpt \"{rcpt}\"\n    expect \"rcpt\" \"{verdict}\"\n}}\n",
                e.client, e.helo, e.sender
            ),
        )
        .unwrap();
    };
    // pinned: no warning, --strict passes
    suite(&e.rcpt, "reject");
    let (ok, stderr) = strict(&gated);
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("may relay"), "{stderr}");
    // a case about another recipient pins nothing
    suite("someone@other-domain.example", "reject");
    let (ok, stderr) = strict(&gated);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("`hook gate.rhai:rcpt` may relay"),
        "{stderr}"
    );
    // a case that expects the hook to accept that envelope pins nothing either (and
    // fails: the hook refuses it)
    suite(&e.rcpt, "accept");
    let (ok, stderr) = strict(&gated);
    assert!(!ok, "{stderr}");
}
