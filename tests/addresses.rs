//! Recipient addresses, with a real client (swaks) against mtad, and the same envelopes
//! through `mtactl test-policy`: one canonical form (`"root"@host` is `root@host`),
//! recipients that cannot be delivered refused at RCPT (error: routes, unknown
//! virtual mailboxes, unknown local users), address literals, invalid domains, and
//! duplicate recipients delivered once.

mod common;

use std::time::Duration;

use common::peers::{Postfix, Sink, dump_recipients};
use common::{Mtad, require_tool};

/// Local domains (example.test, mx.example.test) with aliases and the `local`
/// transport, a virtual mailbox domain, a domain routed to `error:`, and everything
/// else relayed to the sink. Loopback 127.0.0.1 is trusted, 127.0.0.2 is not.
const CONFIG: &str = r#"
server {
    hostname "mx.example.test"
    origin "example.test"
    spool "{spool}"
}
listen "mx" address="127.0.0.1:{port}"
networks "trusted" "127.0.0.1/32"
domains "relay" "relay.test" ".relay.test"
domains "local" "example.test" "mx.example.test"
domains "vdomains" "virtual.test"
table "mailboxes" {
    "alice@virtual.test" "virtual.test/alice/"
}
virtual-mailboxes domains="vdomains" table="mailboxes"
aliases file="aliases"
stage "mail" {
    reject sender="blocked@elsewhere.test" 550 "5.7.1" "sender blocked"
}
stage "rcpt" {
    accept client="trusted"
    accept rcpt-domain="relay"
    accept rcpt-domain="local"
    accept rcpt-domain="vdomains"
}
stage "route" {
    transport "gone.relay.test" "error:5.1.1 this domain is gone"
    transport "example.test" "local"
    transport "mx.example.test" "local"
    transport "*" "smtp:[127.0.0.1]:{sink}"
}
delivery {
    local-base "{dir}/mail"
    backoff-min "1s"
}
"#;

const ALIASES: &str = "root: remote@relay.test
team: bob@relay.test, remote@relay.test
ghost: nosuchuser@example.test
";

fn start(sink: u16) -> Mtad {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("aliases"), ALIASES).unwrap();
    std::fs::create_dir(dir.path().join("mail")).unwrap();
    let spool = dir.path().join("spool");
    Mtad::start_in(dir, spool, &CONFIG.replace("{sink}", &sink.to_string()))
}

/// swaks from `client` (127.0.0.1: trusted; 127.0.0.2: not), stopping after RCPT:
/// the transcript.
fn rcpt_reply(mtad: &Mtad, client: &str, to: &str) -> String {
    require_tool("swaks");
    let out = std::process::Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &mtad.port.to_string()])
        .args(["--local-interface", client, "--helo", "client.test"])
        .args(["--from", "someone@elsewhere.test", "--to", to])
        .args(["--quit-after", "RCPT"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The reply line to RCPT in a swaks transcript.
fn rcpt_line(transcript: &str) -> String {
    let mut lines = transcript.lines();
    while let Some(l) = lines.next() {
        if l.contains("-> RCPT TO:") {
            return lines
                .next()
                .unwrap_or("")
                .trim_start_matches(['<', '*', '-', ' '])
                .to_owned();
        }
    }
    panic!("no RCPT in {transcript}");
}

/// `mtactl test-policy` for one envelope: its report, as JSON.
fn dry_run(mtad: &Mtad, client: &str, rcpts: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "test-policy",
        "--format",
        "json",
        "--client",
        client,
        "--from",
        "someone@elsewhere.test",
    ];
    for r in rcpts {
        args.extend(["--rcpt", r]);
    }
    let out = mtad.mtactl(&args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The dry run's rcpt stage for the single recipient of a run: (verdict, reply).
fn dry_rcpt(report: &serde_json::Value) -> (String, String) {
    let s = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "rcpt")
        .unwrap();
    (
        s["verdict"].as_str().unwrap().to_owned(),
        s["reply"].as_str().unwrap_or("").to_owned(),
    )
}

/// The dry run's routes: (recipient, alias_of, transport).
fn dry_routes(report: &serde_json::Value) -> Vec<(String, String, String)> {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["stage"] == "route")
        .map(|s| {
            (
                s["rcpt"].as_str().unwrap_or("").to_owned(),
                s["alias_of"].as_str().unwrap_or("").to_owned(),
                s["transport"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_quoted_dot_atom_is_the_same_address_in_the_daemon_and_the_dry_run() {
    let sink = Sink::start(&[]);
    let mtad = start(sink.port());
    // the daemon: root's alias, not a Maildir named "root"
    let out = common::swaks(
        mtad.port,
        &[
            "--from",
            "cron@example.test",
            "--to",
            "\"root\"@example.test",
            "--body",
            "quoted\n",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let dumps = sink.dumps(1);
    assert_eq!(dump_recipients(&dumps[0]), ["remote@relay.test"]);
    assert!(!mtad.dir.path().join("mail").join("\"root\"").exists());
    // the dry run: the same route, through the alias
    let report = dry_run(&mtad, "127.0.0.1", &["\"root\"@example.test"]);
    let sink_route = format!("smtp:[127.0.0.1]:{}", sink.port());
    assert_eq!(
        dry_routes(&report),
        [(
            "remote@relay.test".to_owned(),
            "root@example.test".to_owned(),
            sink_route
        )],
        "{report}"
    );
    // and a quoted escaped dot-atom, in the dry run too
    let report = dry_run(&mtad, "127.0.0.1", &["<\"ro\\ot\"@Example.TEST>"]);
    assert_eq!(dry_routes(&report)[0].1, "root@example.test", "{report}");
}

/// The sender is read in the same canonical form: a quoted dot-atom and an upper-case
/// domain meet a `sender=` rule written plainly, in the daemon and the dry run alike.
#[test]
fn a_quoted_sender_meets_the_rule_for_its_plain_form() {
    require_tool("swaks");
    let mtad = start(common::free_port());
    let out = std::process::Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &mtad.port.to_string()])
        .args(["--helo", "client.test", "--to", "remote@relay.test"])
        .args([
            "--from",
            "\"blocked\"@Elsewhere.TEST",
            "--quit-after",
            "MAIL",
        ])
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.contains("<** 550 5.7.1 sender blocked"), "{t}");
    let out = mtad.mtactl(&[
        "test-policy",
        "--format",
        "json",
        "--client",
        "127.0.0.1",
        "--from",
        "\"blocked\"@Elsewhere.TEST",
        "--rcpt",
        "remote@relay.test",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mail = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "mail")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(mail["verdict"], "reject", "{report}");
}

#[test]
fn recipients_that_cannot_be_delivered_are_refused_at_rcpt() {
    let mtad = start(common::free_port());
    for (to, want) in [
        (
            "x@gone.relay.test",
            "550 5.1.1 <x@gone.relay.test>: Recipient address rejected: this domain is gone",
        ),
        (
            "bob@virtual.test",
            "550 5.1.1 <bob@virtual.test>: Recipient address rejected: User unknown in virtual mailbox table",
        ),
        (
            "nosuchuser@example.test",
            "550 5.1.1 <nosuchuser@example.test>: Recipient address rejected: User unknown in local recipient table",
        ),
        // an alias whose target is an unknown local user
        (
            "ghost@example.test",
            "550 5.1.1 <ghost@example.test>: Recipient address rejected: User unknown in local recipient table",
        ),
        ("alice@virtual.test", "250 2.1.5 Ok"),
        ("root@example.test", "250 2.1.5 Ok"),
        // a user of this system (passwd)
        ("daemon@example.test", "250 2.1.5 Ok"),
        ("daemon+tag@mx.example.test", "250 2.1.5 Ok"),
        ("Postmaster@example.test", "250 2.1.5 Ok"),
    ] {
        for client in ["127.0.0.1", "127.0.0.2"] {
            assert_eq!(rcpt_line(&rcpt_reply(&mtad, client, to)), want, "{to}");
            // the dry run decides the same, with the same words
            let (verdict, reply) = dry_rcpt(&dry_run(&mtad, client, &[to]));
            if want.starts_with("250") {
                assert_eq!(verdict, "accept", "{to}");
            } else {
                assert_eq!((verdict.as_str(), reply.as_str()), ("reject", want), "{to}");
            }
        }
    }
    // nothing was accepted and bounced later (no backscatter): the queue is empty
    assert!(mtad.queued().is_empty());
}

#[test]
fn address_literals_get_the_relay_decision_and_bad_domains_a_501() {
    let mtad = start(common::free_port());
    for (client, to, want) in [
        // a foreign literal: relay rules decide
        (
            "127.0.0.2",
            "user@[192.0.2.1]",
            "554 5.7.1 <user@[192.0.2.1]>: Relay access denied",
        ),
        ("127.0.0.1", "user@[192.0.2.1]", "250 2.1.5 Ok"),
        ("127.0.0.1", "user@[IPv6:2001:db8::1]", "250 2.1.5 Ok"),
        // our own address is our hostname (RFC 1123 §5.2.17): local, aliases apply
        ("127.0.0.2", "root@[127.0.0.1]", "250 2.1.5 Ok"),
        (
            "127.0.0.2",
            "nosuchuser@[127.0.0.1]",
            "550 5.1.1 <nosuchuser@mx.example.test>: Recipient address rejected: User unknown in local recipient table",
        ),
        // not addresses
        (
            "127.0.0.1",
            "user@-bad.example",
            "501 5.1.3 Bad recipient address syntax",
        ),
        (
            "127.0.0.1",
            "user@bad-.example",
            "501 5.1.3 Bad recipient address syntax",
        ),
        (
            "127.0.0.1",
            "user@",
            "501 5.1.3 Bad recipient address syntax",
        ),
        (
            "127.0.0.1",
            "user@a..b",
            "501 5.1.3 Bad recipient address syntax",
        ),
        (
            "127.0.0.1",
            "a..b@relay.test",
            "501 5.1.3 Bad recipient address syntax",
        ),
        (
            "127.0.0.1",
            "user@[300.1.2.3]",
            "501 5.1.3 Bad recipient address syntax",
        ),
        (
            "127.0.0.1",
            &format!("user@{}.relay.test", "a".repeat(64)),
            "501 5.1.3 Bad recipient address syntax",
        ),
    ] {
        assert_eq!(
            rcpt_line(&rcpt_reply(&mtad, client, to)),
            want,
            "{to} from {client}"
        );
        let (verdict, reply) = dry_rcpt(&dry_run(&mtad, client, &[to]));
        if want.starts_with("250") {
            assert_eq!(verdict, "accept", "{to} from {client}");
        } else {
            assert_eq!((verdict.as_str(), reply.as_str()), ("reject", want), "{to}");
        }
    }
    // the own literal is routed as the hostname: root's alias
    let report = dry_run(&mtad, "127.0.0.2", &["root@[127.0.0.1]"]);
    assert_eq!(dry_routes(&report)[0].0, "remote@relay.test", "{report}");
    // a foreign literal goes to that address, no MX lookup
    let report = dry_run(&mtad, "127.0.0.1", &["user@[192.0.2.1]"]);
    assert_eq!(dry_routes(&report)[0].0, "user@[192.0.2.1]", "{report}");
}

#[test]
fn duplicate_recipients_are_delivered_once() {
    let sink = Sink::start(&[]);
    let mtad = start(sink.port());
    // the same recipient three times (case differs in the domain and local part)
    let out = common::swaks(
        mtad.port,
        &[
            "--from",
            "cron@example.test",
            "--to",
            "bob@relay.test,bob@relay.test,bob@Relay.TEST",
            "--body",
            "dup\n",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let first = sink.dumps(1);
    assert_eq!(
        dump_recipients(&first[0]),
        ["bob@relay.test"],
        "{}",
        first[0]
    );
    // an alias that expands to an address also given directly
    let out = common::swaks(
        mtad.port,
        &[
            "--from",
            "cron@example.test",
            "--to",
            "bob@relay.test,team@example.test,root@example.test",
            "--body",
            "dup\n",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let dumps = sink.dumps(2);
    let mut second = dump_recipients(&dumps[1]);
    second.sort();
    assert_eq!(
        second,
        ["bob@relay.test", "remote@relay.test"],
        "{}",
        dumps[1]
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sink.dump_count(), 2, "one transaction per message");
    // the dry run shows the same: one route per final address
    let report = dry_run(
        &mtad,
        "127.0.0.1",
        &["bob@relay.test", "team@example.test", "root@example.test"],
    );
    let finals: Vec<String> = dry_routes(&report).into_iter().map(|r| r.0).collect();
    assert_eq!(finals, ["bob@relay.test", "remote@relay.test"], "{report}");
}

/// A throw-away Postfix (smtpd on 127.0.0.1:port) with the same domains, aliases and
/// error: route as [`CONFIG`].
fn postfix() -> Postfix {
    Postfix::start(
        "myhostname = mx.example.test
mynetworks = 127.0.0.1/32
mydestination = example.test, mx.example.test
alias_maps = inline:{ root=remote@relay.test, ghost=nosuchuser@example.test }
alias_database =
relay_domains = relay.test
transport_maps = inline:{ { gone.relay.test = error:5.1.1 this domain is gone } }
relayhost = [127.0.0.1]:1
defer_transports = smtp relay
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_peername_lookup = no
smtpd_tls_security_level = none",
        true,
    )
}

/// The answer to RCPT from a server on `port` (swaks from `client`).
fn rcpt_answer(port: u16, client: &str, to: &str) -> String {
    let out = std::process::Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &port.to_string()])
        .args(["--local-interface", client, "--helo", "client.test"])
        .args(["--from", "someone@elsewhere.test", "--to", to])
        .args(["--quit-after", "RCPT"])
        .output()
        .unwrap();
    rcpt_line(&String::from_utf8_lossy(&out.stdout))
}

/// The same RCPTs to a real Postfix 3.7 and to mtad, configured alike: the same
/// answers, word for word, except where mtad is stricter on purpose (documented in
/// configuration.md, "Recipient addresses").
#[test]
fn rcpt_answers_are_postfixs() {
    require_tool("swaks");
    let postfix = postfix();
    let mtad = start(common::free_port());
    for to in [
        "\"root\"@example.test",
        "root@example.test",
        "daemon@example.test",
        "nosuchuser@example.test",
        "x@gone.relay.test",
        "user@-bad.example",
        "user@",
        "user@[192.0.2.1]",
        "root@[127.0.0.1]",
        "bob@relay.test",
        "x@foreign.test",
    ] {
        let theirs = rcpt_answer(postfix.port, "127.0.0.2", to);
        let ours = rcpt_answer(mtad.port, "127.0.0.2", to);
        assert_eq!(ours, theirs, "{to}");
    }
    // stricter than Postfix: an alias to an unknown local user is refused at RCPT
    // (Postfix accepts it and bounces it later), and so is a local part that is not
    // RFC 5321 syntax
    for (to, ours_want) in [
        (
            "ghost@example.test",
            "550 5.1.1 <ghost@example.test>: Recipient address rejected: User unknown in local recipient table",
        ),
        ("a..b@relay.test", "501 5.1.3 Bad recipient address syntax"),
    ] {
        assert_eq!(
            rcpt_answer(postfix.port, "127.0.0.2", to),
            "250 2.1.5 Ok",
            "{to}"
        );
        assert_eq!(rcpt_answer(mtad.port, "127.0.0.2", to), ours_want, "{to}");
    }
}
