//! The decision log and `mtactl replay`, end to end: a day of scripted traffic (swaks
//! from several client addresses) through a live mtad whose policy asks a DNS list
//! (dnsmasq) and an SQL table (sqlite3), then the log replayed against the same
//! policy, a policy with one rule changed, a policy that opens the relay and one that
//! needs answers the log does not hold; and the log turned into suite cases that
//! `mtactl test-policy` runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::peers::Dnsmasq;
use common::{Mtad, require_tool};
use serde_json::Value;

/// The policy; `{rcpt_rules}` is the rcpt stage's body.
fn config(dir: &Path, dns: &str, rcpt_rules: &str) -> String {
    format!(
        r#"server {{
    hostname "mx.test"
    spool "{{spool}}"
}}
listen "mx" address="127.0.0.1:{{port}}"
delivery {{
    queue-only #true
    dns-server "{dns}"
}}
reload {{
    require-tests "suite.kdl"
}}
decision-log {{
    path "{dir}/log/decisions.jsonl"
}}
domains "local" "test.local"
table "relay_db" sql="sqlite:relay.db" query="SELECT v FROM relay WHERE k = $1"
domains "relayed" table="relay_db"
dnsbl "rbl" "bl.test"
stage "connect" {{
    reject-dnsbl "rbl"
}}
stage "rcpt" {{
{rcpt_rules}
}}
"#,
        dir = dir.display()
    )
}

const RULES: &str = r#"    reject 550 "5.7.1" "Blocked" rcpt="blocked@test.local"
    accept rcpt-domain="local"
    accept rcpt-domain="relayed""#;

/// A suite the daemon runs inside itself at start (`require-tests`): a dry run, which
/// must not be in the decision log.
const SUITE: &str = r#"case "a dry run inside the daemon" {
    client "192.0.2.77"
    from "dry@run.test"
    rcpt "user@test.local"
    expect "rcpt" "accept"
}
"#;

fn mtactl() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mtactl"))
}

fn replay(config: &Path, log: &Path, extra: &[&str]) -> (i32, Value, String) {
    let out = Command::new(mtactl())
        .arg("--config")
        .arg(config)
        .arg("replay")
        .arg("--json")
        .args(extra)
        .arg(log)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    (
        out.status.code().unwrap_or(-1),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn records(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// One message by swaks from `client` (a 127.0.0.x address): the exit status.
fn send(port: u16, client: &str, from: &str, to: &str) -> i32 {
    let swaks = require_tool("swaks");
    let out = Command::new(swaks)
        .args(["--server", "127.0.0.1", "--port", &port.to_string()])
        .args(["--local-interface", client, "--helo", "client.test"])
        .args([
            "--from",
            from,
            "--to",
            to,
            "--header",
            "Subject: replay test",
        ])
        .args(["--body", "hello", "--timeout", "10"])
        .output()
        .unwrap();
    out.status.code().unwrap_or(-1)
}

/// The line of `needle` in `file`, 1-based.
fn line_of(file: &Path, needle: &str) -> usize {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .position(|l| l.contains(needle))
        .unwrap()
        + 1
}

#[test]
fn a_day_of_traffic_replays_exactly() {
    let sqlite = require_tool("sqlite3");
    let dns = Dnsmasq::start(&["--host-record=2.0.0.127.bl.test,127.0.0.2"]);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let made = Command::new(&sqlite)
        .arg(&db)
        .arg("CREATE TABLE relay (k TEXT PRIMARY KEY, v TEXT); INSERT INTO relay VALUES ('partner.test', 'OK');")
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::write(dir.path().join("suite.kdl"), SUITE).unwrap();
    let dns_addr = dns.addr.to_string();
    let text = config(dir.path(), &dns_addr, RULES);
    let spool = dir.path().join("spool");
    let mtad = Mtad::start_in(dir, spool, &text);
    let dir = mtad.dir.path();
    let log = dir.join("log/decisions.jsonl");

    // the day: (client, sender, recipient, accepted?)
    let traffic = [
        ("127.0.0.1", "a@src.test", "user@test.local", true),
        ("127.0.0.3", "b@src.test", "blocked@test.local", false),
        ("127.0.0.4", "c@src.test", "x@partner.test", true),
        ("127.0.0.5", "d@src.test", "x@elsewhere.test", false),
        ("127.0.0.2", "e@src.test", "user@test.local", false),
        ("127.0.0.6", "f@src.test", "other@test.local", true),
        ("127.0.0.3", "g@src.test", "blocked@test.local", false),
        ("127.0.0.7", "h@src.test", "y@partner.test", true),
    ];
    for (client, from, to, accepted) in traffic {
        let status = send(mtad.port, client, from, to);
        assert_eq!(
            status == 0,
            accepted,
            "{client} {from} -> {to}: swaks {status}"
        );
    }
    // the writer flushes each batch at once; wait for the last one
    let want_rcpt = traffic.iter().filter(|t| t.0 != "127.0.0.2").count();
    let mut all = Vec::new();
    for _ in 0..100 {
        all = records(&log);
        if all.iter().filter(|r| r["stage"] == "rcpt").count() >= want_rcpt {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let rcpt: Vec<&Value> = all.iter().filter(|r| r["stage"] == "rcpt").collect();
    assert_eq!(rcpt.len(), want_rcpt, "{all:#?}");
    // every connect asked the DNS list, and the record has the answer
    let connects: Vec<&Value> = all.iter().filter(|r| r["stage"] == "connect").collect();
    assert_eq!(connects.len(), traffic.len());
    let listed = connects
        .iter()
        .find(|r| r["client"] == "127.0.0.2")
        .unwrap();
    assert_eq!(listed["verdict"], "reject");
    assert!(
        listed["answers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "dns"
                && a["name"] == "2.0.0.127.bl.test"
                && a["records"][0] == "127.0.0.2"),
        "{listed}"
    );
    // the SQL table's answer is on the record of the relayed domain
    let partner = rcpt.iter().find(|r| r["rcpt"] == "x@partner.test").unwrap();
    assert_eq!(partner["verdict"], "accept");
    assert!(
        partner["answers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "table"
                && a["table"] == "relay_db"
                && a["key"] == "partner.test"
                && a["value"] == "OK"),
        "{partner}"
    );
    // the data stage has the header block and a digest, not the body
    let data = all.iter().find(|r| r["stage"] == "data").unwrap();
    assert!(
        data["headers"]
            .as_str()
            .unwrap()
            .contains("Subject: replay test")
    );
    assert!(data["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(data.get("body").is_none());
    assert!(data["queue_id"].is_string() && data["session"].is_string());
    // the rules' places and the policy's revision
    let blocked = rcpt
        .iter()
        .find(|r| r["rcpt"] == "blocked@test.local")
        .unwrap();
    let rule_line = line_of(&mtad.config, "rcpt=\"blocked@test.local\"");
    assert!(
        blocked["rule"]
            .as_str()
            .unwrap()
            .ends_with(&format!("mtad.kdl:{rule_line}:5")),
        "{blocked}"
    );
    assert!(
        blocked["reply"].as_str().unwrap().starts_with('5'),
        "{blocked}"
    );
    let revision = mtad.mtactl(&["check"]);
    let revision = String::from_utf8_lossy(&revision.stdout).into_owned();
    assert!(
        revision.contains(blocked["revision"].as_str().unwrap()),
        "{revision}"
    );
    // the suite the daemon ran at start is not traffic
    assert!(!all.iter().any(|r| r["client"] == "192.0.2.77"), "{all:#?}");

    // 1. the same policy: nothing changes
    let (code, same, err) = replay(&mtad.config, &log, &[]);
    assert_eq!(code, 0, "{same:#}\n{err}");
    assert_eq!(same["replayed"].as_u64(), Some(all.len() as u64));
    assert_eq!(same["unchanged"], same["replayed"]);
    assert_eq!(same["changed"], 0);
    assert_eq!(same["unknown"], 0);

    // 2. one rule changed: exactly the two decisions for blocked@ change, and the
    // diff names the old rule and the new one with their places
    // (in a directory of its own, under the same name, with the same table and suite)
    std::fs::create_dir(dir.join("changed")).unwrap();
    for f in ["relay.db", "suite.kdl"] {
        std::fs::copy(dir.join(f), dir.join("changed").join(f)).unwrap();
    }
    let changed = dir.join("changed/mtad.kdl");
    let changed_text = config(
        dir,
        &dns_addr,
        &RULES.replace("blocked@test.local", "other@test.local"),
    )
    .replace("{port}", &mtad.port.to_string())
    .replace("{spool}", mtad.spool.to_str().unwrap());
    std::fs::write(&changed, &changed_text).unwrap();
    let (code, diff, err) = replay(&changed, &log, &[]);
    assert_eq!(code, 1, "{diff:#}\n{err}");
    let groups = diff["groups"].as_array().unwrap();
    // blocked@ twice: refused, now accepted by the `local` rule; other@ once:
    // accepted, now refused by the changed rule
    assert_eq!(diff["changed"], 3, "{diff:#}");
    let local_line = line_of(&changed, "accept rcpt-domain=\"local\"");
    let changed_line = line_of(&changed, "rcpt=\"other@test.local\"");
    let g = groups
        .iter()
        .find(|g| g["old_verdict"] == "reject")
        .unwrap();
    assert_eq!(g["count"], 2);
    assert_eq!(g["new_verdict"], "accept");
    assert!(
        g["old_rule"]
            .as_str()
            .unwrap()
            .ends_with(&format!("mtad.kdl:{rule_line}:5")),
        "{g}"
    );
    assert!(
        g["new_rule"]
            .as_str()
            .unwrap()
            .ends_with(&format!("changed/mtad.kdl:{local_line}:5")),
        "{g}"
    );
    assert!(
        g["examples"][0]["envelope"]
            .as_str()
            .unwrap()
            .contains("RCPT TO:<blocked@test.local>")
    );
    let g = groups
        .iter()
        .find(|g| g["old_verdict"] == "accept")
        .unwrap();
    assert_eq!(g["count"], 1);
    assert!(
        g["new_rule"]
            .as_str()
            .unwrap()
            .ends_with(&format!("changed/mtad.kdl:{changed_line}:5")),
        "{g}"
    );
    // and the text report says the same
    let text = Command::new(mtactl())
        .arg("--config")
        .arg(&changed)
        .arg("replay")
        .arg(&log)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&text.stdout);
    assert!(
        shown.contains(&format!("mtad.kdl:{rule_line}:5 -> "))
            && shown.contains("reject -> accept"),
        "{shown}"
    );
    // allowing exactly those changes passes
    let (code, _, err) = replay(
        &changed,
        &log,
        &[
            "--allow",
            "reject->accept@mtad.kdl",
            "--allow",
            "accept->reject",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = replay(&changed, &log, &["--allow", "reject->accept"]);
    assert_eq!(code, 1);

    // 2b. only the reply's text changed: a change too, named by the same rule
    std::fs::write(
        &changed,
        changed_text.replace(
            "reject 550 \"5.7.1\" \"Blocked\" rcpt=\"other@test.local\"",
            "reject 550 \"5.7.1\" \"Blocked here\" rcpt=\"blocked@test.local\"",
        ),
    )
    .unwrap();
    let (code, reworded, err) = replay(&changed, &log, &[]);
    assert_eq!(code, 1, "{reworded:#}\n{err}");
    assert_eq!(reworded["changed"], 2, "{reworded:#}");
    let g = &reworded["groups"][0];
    assert_eq!(
        (g["old_verdict"].as_str(), g["new_verdict"].as_str()),
        (Some("reject"), Some("reject"))
    );
    assert_eq!(
        g["examples"][0]["new_reply"], "550 5.7.1 Blocked here",
        "{g}"
    );
    std::fs::write(&changed, &changed_text).unwrap();

    // 3. a policy that opens the relay: flagged, and the foreign recipient's refusal
    // is now an acceptance
    let open = dir.join("open.kdl");
    std::fs::write(
        &open,
        changed_text.replace(
            "reject 550 \"5.7.1\" \"Blocked\" rcpt=\"other@test.local\"",
            "accept",
        ),
    )
    .unwrap();
    let (code, opened, err) = replay(&open, &log, &["--allow", "*->*"]);
    assert_eq!(code, 1, "{opened:#}\n{err}");
    assert!(
        opened["open_relay"]
            .as_str()
            .unwrap()
            .contains("open relay"),
        "{opened:#}"
    );
    assert!(
        opened["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["old_verdict"] == "reject"
                && g["new_verdict"] == "accept"
                && g["examples"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["envelope"].as_str().unwrap().contains("x@elsewhere.test"))),
        "{opened:#}"
    );

    // 4. a policy that needs an answer the log does not hold: unknown, not a guess
    let asks = dir.join("asks.kdl");
    std::fs::write(
        &asks,
        mtad_text(
            &mtad,
            &config(
                dir,
                &dns_addr,
                &format!("    reject-dnsbl \"rbl\"\n{RULES}"),
            ),
        ),
    )
    .unwrap();
    let (code, unknown, err) = replay(&asks, &log, &[]);
    assert_eq!(code, 1, "{unknown:#}\n{err}");
    assert_eq!(
        unknown["unknown"].as_u64(),
        Some(want_rcpt as u64),
        "{unknown:#}"
    );
    assert_eq!(unknown["changed"], 0);
    let missing = &unknown["unknowns"][0]["examples"][0]["missing"][0];
    assert!(missing.as_str().unwrap().starts_with("dns a "), "{missing}");
    let (code, _, _) = replay(&asks, &log, &["--allow", "unknown"]);
    assert_eq!(code, 0);

    // --since/--until select by time
    let (_, none, _) = replay(&mtad.config, &log, &["--until", "2000-01-01T00:00:00Z"]);
    assert_eq!(none["replayed"], 0);
    assert_eq!(none["skipped"].as_u64(), Some(all.len() as u64));

    // 5. the log as suite cases, which the policy passes
    let cases = dir.join("cases.kdl");
    let out = Command::new(mtactl())
        .arg("--config")
        .arg(&mtad.config)
        .args(["replay", "--emit-cases"])
        .arg(&cases)
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let suite = std::fs::read_to_string(&cases).unwrap();
    assert!(
        suite.contains("a \"2.0.0.127.bl.test\" \"127.0.0.2\""),
        "{suite}"
    );
    let run = Command::new(mtactl())
        .arg("--config")
        .arg(&mtad.config)
        .arg("test-policy")
        .arg(&cases)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{shown}\n{suite}");
    assert!(
        shown.contains(&format!("{} passed, 0 failed", all.len())),
        "{shown}"
    );
    // the SQL table's answer is the case's fixture: the cases hold when the database
    // no longer lists the partner (they ask it nothing)
    assert!(
        suite.contains("table \"relay_db\" \"partner.test\" \"OK\""),
        "{suite}"
    );
    let emptied = Command::new(&sqlite)
        .arg(dir.join("relay.db"))
        .arg("DELETE FROM relay;")
        .status()
        .unwrap();
    assert!(emptied.success());
    let run = Command::new(mtactl())
        .arg("--config")
        .arg(&mtad.config)
        .arg("test-policy")
        .arg(&cases)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{shown}");
    // and the changed policy fails the cases of the changed decisions
    let run = Command::new(mtactl())
        .arg("--config")
        .arg(&changed)
        .arg("test-policy")
        .arg(&cases)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(1), "{shown}");
    // blocked@ twice and other@ at rcpt, and other@'s data stage, now not reached
    assert!(
        shown.contains(&format!("{} passed, 4 failed", all.len() - 4)),
        "{shown}"
    );
}

#[test]
fn a_reload_is_gated_on_the_replay_of_the_last_hours() {
    let dns = Dnsmasq::start(&["--host-record=2.0.0.127.bl.test,127.0.0.2"]);
    let dir = tempfile::tempdir().unwrap();
    let made = Command::new(require_tool("sqlite3"))
        .arg(dir.path().join("relay.db"))
        .arg("CREATE TABLE relay (k TEXT PRIMARY KEY, v TEXT);")
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::write(dir.path().join("suite.kdl"), SUITE).unwrap();
    let dns_addr = dns.addr.to_string();
    let gated = |text: String| {
        text.replace(
            "require-tests \"suite.kdl\"",
            "require-tests \"suite.kdl\"\n    replay since=\"1h\"",
        )
    };
    let text = gated(config(dir.path(), &dns_addr, RULES));
    let spool = dir.path().join("spool");
    let mtad = Mtad::start_in(dir, spool, &text);
    let dir = mtad.dir.path().to_path_buf();
    let log = dir.join("log/decisions.jsonl");
    assert_ne!(
        send(mtad.port, "127.0.0.3", "b@src.test", "blocked@test.local"),
        0
    );
    assert_eq!(
        send(mtad.port, "127.0.0.1", "a@src.test", "user@test.local"),
        0
    );
    for _ in 0..100 {
        if records(&log).iter().any(|r| r["stage"] == "data") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // the rule changed: the reload is refused, naming the change
    let changed = mtad_text(
        &mtad,
        &gated(config(
            &dir,
            &dns_addr,
            &RULES.replace("blocked@test.local", "other@test.local"),
        )),
    );
    std::fs::write(&mtad.config, &changed).unwrap();
    let out = mtad.mtactl(&["reload"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("reload replay: 1 rcpt decision(s) of the last 1h would change")
            && err.contains("reject -> accept"),
        "{err}"
    );
    // allowed: it goes live
    std::fs::write(
        &mtad.config,
        changed.replace(
            "replay since=\"1h\"",
            "replay since=\"1h\" allow=\"reject->accept\"",
        ),
    )
    .unwrap();
    let out = mtad.mtactl(&["reload"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // a replay is not traffic: no decision was written by the reloads' replays and
    // suites
    let after = records(&log);
    assert_eq!(
        after.iter().filter(|r| r["stage"] == "rcpt").count(),
        2,
        "{after:#?}"
    );
}

/// `text` with the placeholders a running `mtad` filled in.
fn mtad_text(mtad: &Mtad, text: &str) -> String {
    text.replace("{port}", &mtad.port.to_string())
        .replace("{spool}", mtad.spool.to_str().unwrap())
}

/// Route decisions: where delivery sends each recipient is recorded (the transport
/// and next hop, the deciding rule with its place, the queue id), and a replay
/// against a policy whose route rule changed shows the transport change
/// (`old route -> new route`) for exactly the recipients it moves.
#[test]
fn route_decisions_are_logged_and_a_transport_change_replays() {
    use common::peers::Sink;
    let (a, b) = (Sink::start(&[]), Sink::start(&[]));
    let dir = tempfile::tempdir().unwrap();
    let routes = |partner: u16| {
        format!(
            "    transport \"partner.test\" \"smtp:[127.0.0.1]:{partner}\"\n    transport \"other.test\" \"smtp:[127.0.0.1]:{}\"",
            b.addr.port()
        )
    };
    let text = |dir: &Path, partner: u16| {
        format!(
            r#"server {{
    hostname "mx.test"
    spool "{{spool}}"
}}
listen "mx" address="127.0.0.1:{{port}}"
networks "trusted" "127.0.0.0/8"
decision-log {{
    path "{dir}/log/decisions.jsonl"
}}
stage "rcpt" {{
    accept client="trusted"
}}
stage "route" {{
{routes}
}}
delivery {{
    backoff-min "1s"
    connect-timeout "2s"
}}
"#,
            dir = dir.display(),
            routes = routes(partner)
        )
    };
    let spool = dir.path().join("spool");
    let first = text(dir.path(), a.addr.port());
    let mtad = Mtad::start_in(dir, spool, &first);
    let log = mtad.dir.path().join("log/decisions.jsonl");
    assert_eq!(
        send(mtad.port, "127.0.0.1", "a@src.test", "x@partner.test"),
        0
    );
    assert_eq!(
        send(mtad.port, "127.0.0.1", "b@src.test", "y@other.test"),
        0
    );
    a.dumps(1);
    b.dumps(1);
    let mut all = Vec::new();
    for _ in 0..100 {
        all = records(&log);
        if all.iter().filter(|r| r["stage"] == "route").count() >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let route = |rcpt: &str| {
        all.iter()
            .find(|r| r["stage"] == "route" && r["rcpt"] == rcpt)
            .unwrap_or_else(|| panic!("no route record for {rcpt}: {all:#?}"))
            .clone()
    };
    let partner = route("x@partner.test");
    assert_eq!(partner["verdict"], "accept", "{partner:#}");
    assert_eq!(
        partner["route"],
        format!("smtp:[127.0.0.1]:{}", a.addr.port()),
        "{partner:#}"
    );
    let rule_line = line_of(&mtad.config, "transport \"partner.test\"");
    assert!(
        partner["rule"]
            .as_str()
            .unwrap()
            .ends_with(&format!("mtad.kdl:{rule_line}:5")),
        "{partner:#}"
    );
    assert!(partner["queue_id"].is_string(), "{partner:#}");
    assert_eq!(
        route("y@other.test")["route"],
        format!("smtp:[127.0.0.1]:{}", b.addr.port())
    );

    // the same policy: nothing changes
    let (code, same, err) = replay(&mtad.config, &log, &[]);
    assert_eq!(code, 0, "{same:#}\n{err}");
    assert_eq!(same["changed"], 0, "{same:#}");

    // partner.test now goes to b: its route decision changes, other.test's does not
    let moved = mtad.dir.path().join("moved.kdl");
    std::fs::write(
        &moved,
        mtad_text(&mtad, &text(mtad.dir.path(), b.addr.port())),
    )
    .unwrap();
    let (code, diff, err) = replay(&moved, &log, &[]);
    assert_eq!(code, 1, "{diff:#}\n{err}");
    assert_eq!(diff["changed"], 1, "{diff:#}");
    let g = &diff["groups"][0];
    assert_eq!(g["stage"], "route");
    assert_eq!(
        (&g["old_verdict"], &g["new_verdict"]),
        (&"accept".into(), &"accept".into())
    );
    assert_eq!(
        g["old_route"],
        format!("smtp:[127.0.0.1]:{}", a.addr.port()),
        "{g:#}"
    );
    assert_eq!(
        g["new_route"],
        format!("smtp:[127.0.0.1]:{}", b.addr.port()),
        "{g:#}"
    );
    let shown = Command::new(mtactl())
        .arg("--config")
        .arg(&moved)
        .arg("replay")
        .arg(&log)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains(&format!(
            "route smtp:[127.0.0.1]:{} -> smtp:[127.0.0.1]:{}",
            a.addr.port(),
            b.addr.port()
        )),
        "{shown}"
    );
}

/// docs/test-policy.md's cases with `table` and `rate` fixtures: an SQL table's answer
/// and a rate counter given by the suite decide (the database, which lists nothing,
/// is not asked for that key), a failing answer defers as a database that fails does,
/// and a malformed fixture is an error at its file:line:col.
#[test]
fn suite_fixtures_answer_for_sql_tables_and_rate_counters() {
    let sqlite = require_tool("sqlite3");
    let dir = tempfile::tempdir().unwrap();
    let made = Command::new(&sqlite)
        .arg(dir.path().join("relay.db"))
        .arg("CREATE TABLE relay (k TEXT PRIMARY KEY, v TEXT);")
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::write(
        dir.path().join("slow.rhai"),
        "fn rcpt(ctx) {\n    if ctx.rate(\"messages\") > 100 { return defer(450, \"4.7.1\", \"slow down\"); }\n    next()\n}\n",
    )
    .unwrap();
    let config = dir.path().join("mtad.kdl");
    std::fs::write(
        &config,
        r#"server {
    hostname "mx.test"
    spool "/nonexistent/spool"
}
listen "mx" address="127.0.0.1:2525"
table "relay_db" sql="sqlite:relay.db" query="SELECT v FROM relay WHERE k = $1"
domains "relayed" table="relay_db"
stage "rcpt" {
    hook "slow.rhai"
    accept rcpt-domain="relayed"
}
"#,
    )
    .unwrap();
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/test-policy.md"))
        .unwrap();
    let at = docs.find("case \"a partner the database lists\"").unwrap();
    let documented = &docs[at..at + docs[at..].find("```").unwrap()];
    let run = |suite: &str| {
        let path = dir.path().join("suite.kdl");
        std::fs::write(&path, suite).unwrap();
        let out = Command::new(mtactl())
            .arg("--config")
            .arg(&config)
            .arg("test-policy")
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, report) = run(documented);
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains("2 passed, 0 failed"), "{report}");
    // without the table's fixture the database answers (it lists nothing): refused
    let (code, report) =
        run(&documented.replace("    table \"relay_db\" \"partner.test\" \"OK\"\n", ""));
    assert_eq!(code, Some(1), "{report}");
    // (the busy client is deferred by the hook before the table is read)
    assert!(report.contains("1 passed, 1 failed"), "{report}");
    assert!(
        report.contains("FAIL a partner the database lists"),
        "{report}"
    );
    // without the counter's fixture the busy client is not slowed down
    let (code, report) = run(&documented.replace("    rate \"messages\" 120\n", ""));
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains("1 passed, 1 failed"), "{report}");
    // a database that fails: the rule defers, as live
    let (code, report) = run(
        r#"table "relay_db" "partner.test" error="connection refused"
case "the database is down" {
    client "192.0.2.1"
    from "a@example.org"
    rcpt "u@partner.test"
    expect "rcpt" "defer" reply="451 4.3.0"
}
case "nothing listed" {
    client "192.0.2.1"
    from "a@example.org"
    rcpt "u@partner.test"
    table "relay_db" "partner.test" #null
    expect "rcpt" "reject" reply="554 5.7.1"
}
"#,
    );
    assert_eq!(code, Some(0), "{report}");
    // malformed fixtures: errors at their places
    let (code, report) = run(
        "case \"bad\" {\n    client \"192.0.2.1\"\n    from \"a@example.org\"\n    rcpt \"u@partner.test\"\n    table \"relay_db\" \"partner.test\"\n    rate \"no-such\" 3\n}\n",
    );
    assert_ne!(code, Some(0), "{report}");
    assert!(
        report.contains("suite.kdl:5:5: expected table \"NAME\" \"KEY\" \"VALUE\""),
        "{report}"
    );
    assert!(
        report.contains("suite.kdl:6:5: expected rate \"KIND\" N"),
        "{report}"
    );
}
