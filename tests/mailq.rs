//! `mailq` (`mtactl queue list --format postfix`) against Postfix's own `postqueue -p`:
//! the same messages in the same states (active, deferred with a reason, null sender,
//! on hold) in a real mtad and a throw-away Postfix, both relaying to the same two
//! next hops on loopback (one that never answers, one that refuses connections); the
//! listings must have the same shape line for line (queue ids, times, sizes and the
//! wording of the reasons differ).

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::peers::Postfix;
use common::*;

const MTAD: &str = r#"
server {
    hostname "relay.example.test"
    spool "{spool}"
}
listen "mx" address="127.0.0.1:{port}"
networks "trusted" "127.0.0.0/8"
stage "rcpt" {
    accept client="trusted"
}
stage "route" {
    transport "slow.test" "smtp:[127.0.0.1]:{silent}"
    transport "down.test" "smtp:[127.0.0.1]:{closed}"
}
delivery {
    backoff-min "10m"
    backoff-max "20m"
    connect-timeout "2s"
    command-timeout "120s"
}
"#;

/// Postfix's side: no smtpd (mail goes in with its sendmail), the same two next hops,
/// long queue ids, and nothing retried while the test looks.
fn postfix(silent: u16, closed: u16) -> Postfix {
    Postfix::start(
        &format!(
            "mydestination =\n\
             myhostname = pf.example.test\n\
             alias_maps =\n\
             alias_database =\n\
             enable_long_queue_ids = yes\n\
             minimal_backoff_time = 10m\n\
             queue_run_delay = 10m\n\
             smtp_helo_timeout = 120s\n\
             transport_maps = inline:{{ slow.test=smtp:[127.0.0.1]:{silent}, \
             down.test=smtp:[127.0.0.1]:{closed} }}"
        ),
        false,
    )
}

/// Submits with Postfix's sendmail (postdrop, then pickup).
fn postfix_send(pf: &Postfix, from: &str, rcpts: &[&str]) {
    let mut child = Command::new("/usr/sbin/sendmail")
        .arg("-C")
        .arg(pf.etc())
        .arg("-f")
        .arg(from)
        .args(rcpts)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("Postfix's sendmail");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Subject: mailq\n\nhello\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
}

fn postfix_mailq(pf: &Postfix) -> Output {
    Command::new("postqueue")
        .arg("-c")
        .arg(pf.etc())
        .arg("-p")
        .env("TZ", "UTC")
        .output()
        .unwrap()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn mtad_mailq(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .args(["queue", "list", "--format", "postfix", "--config"])
        .arg(config)
        .env("TZ", "UTC")
        .output()
        .unwrap()
}

/// One listing as line shapes: queue ids, sizes, times and reason texts masked, the
/// columns they stand in kept. Entries (paragraphs) are sorted by their shape, since
/// Postfix lists a queue directory in hash order.
fn shape(listing: &str) -> Vec<String> {
    let entry = regex::Regex::new(
        r"^(\S{16})([*!]?) +(\d+) ([A-Z][a-z]{2} [A-Z][a-z]{2} [ 1-3]\d \d\d:\d\d:\d\d) (\S+)$",
    )
    .unwrap();
    let trailer = regex::Regex::new(r"^-- \d+ Kbytes in (\d+) Requests?\.$").unwrap();
    let mut lines = listing.lines();
    let mut out = vec![lines.next().unwrap_or("").to_owned()];
    let mut paragraphs: Vec<Vec<String>> = vec![Vec::new()];
    for line in lines {
        let current = paragraphs.last_mut().unwrap();
        if line.is_empty() {
            paragraphs.push(Vec::new());
        } else if let Some(c) = entry.captures(line) {
            let size = c.get(3).unwrap();
            let time = c.get(4).unwrap();
            let sender = c.get(5).unwrap();
            current.push(format!(
                "entry{} size-ends-at={} time-at={} sender-at={} {}",
                &c[2],
                size.end(),
                time.start(),
                sender.start(),
                sender.as_str()
            ));
        } else if let Some(c) = trailer.captures(line) {
            current.push(format!("-- N Kbytes in {} Requests", &c[1]));
        } else if line.trim_start().starts_with('(') && line.ends_with(')') {
            let text = line.trim_start();
            let ends = if text.len() <= 78 { "78" } else { "past 78" };
            current.push(format!("reason ends-at={} {ends}", line.len()));
        } else {
            let addr = line.trim_start();
            current.push(format!("recipient at={} {addr}", line.len() - addr.len()));
        }
    }
    let last = paragraphs.pop().unwrap_or_default();
    paragraphs.sort();
    for p in paragraphs {
        out.extend(p);
        out.push(String::new());
    }
    out.extend(last);
    out
}

/// Polls `listing` until `ready` says yes (20 s at most).
fn wait_for(what: &str, listing: impl Fn() -> String, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = listing();
        if ready(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what} never got there:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Counts entries with `mark` right after the 16-character id.
fn marked(text: &str, mark: char) -> usize {
    text.lines()
        .filter(|l| l.len() > 17 && l.as_bytes()[16] == mark as u8)
        .count()
}

fn deferred_with_reason(text: &str, n: usize) -> bool {
    text.lines()
        .filter(|l| l.trim_start().starts_with('('))
        .count()
        >= n
}

#[test]
fn mailq_has_postfix_shape_line_for_line() {
    // accepts and never says a word: both MTAs' attempts stay under way (active)
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let held_connections = std::thread::spawn(move || {
        let mut kept = Vec::new();
        for s in silent.incoming().take(2) {
            kept.push(s);
        }
        std::thread::sleep(Duration::from_secs(60));
        drop(kept);
    });
    let closed_port = free_port();

    let postfix = postfix(silent_port, closed_port);
    let mtad = Mtad::start(
        &MTAD
            .replace("{silent}", &silent_port.to_string())
            .replace("{closed}", &closed_port.to_string()),
    );

    // an empty queue, word for word
    let ours = mtad_mailq(&mtad.config);
    let theirs = postfix_mailq(&postfix);
    assert_eq!(
        String::from_utf8_lossy(&ours.stdout),
        String::from_utf8_lossy(&theirs.stdout)
    );
    assert_eq!(ours.status.code(), theirs.status.code());

    // the same four messages
    let messages: [(&str, &[&str]); 4] = [
        ("alice@src.test", &["a@slow.test"]),
        ("alice@src.test", &["b@down.test", "c@down.test"]),
        ("", &["e@down.test"]),
        ("bob@src.test", &["f@down.test"]),
    ];
    let mut ids = Vec::new();
    for (from, rcpts) in messages {
        let mut c = mtad.session();
        c.cmd("EHLO client.test", "250");
        ids.push(c.send_message(from, rcpts, "Subject: mailq\r\n\r\nhello\r\n"));
        postfix_send(&postfix, if from.is_empty() { "<>" } else { from }, rcpts);
    }
    let ours_now = || String::from_utf8_lossy(&mtad_mailq(&mtad.config).stdout).into_owned();
    let theirs_now = || String::from_utf8_lossy(&postfix_mailq(&postfix).stdout).into_owned();
    let settled = |t: &str| marked(t, '*') == 1 && deferred_with_reason(t, 3);
    wait_for("mtad's queue", ours_now, settled);
    let pf = wait_for("Postfix's queue", theirs_now, settled);

    // bob's message goes on hold in both
    let held_pf = pf
        .split("\n\n")
        .find(|p| p.contains("bob@src.test"))
        .and_then(|p| p.split_whitespace().next())
        .unwrap()
        .to_owned();
    run(Command::new("postsuper")
        .arg("-c")
        .arg(postfix.etc())
        .arg("-h")
        .arg(&held_pf));
    let out = mtad.mtactl(&["queue", "hold", &ids[3]]);
    assert!(out.status.success(), "{out:?}");

    let held = |t: &str| settled(t) && marked(t, '!') == 1;
    let ours = wait_for("mtad's queue", ours_now, held);
    let theirs = wait_for("Postfix's queue", theirs_now, held);
    assert_eq!(
        shape(&ours),
        shape(&theirs),
        "\nmtad:\n{ours}\nPostfix:\n{theirs}\nPostfix's log:\n{}",
        postfix.log()
    );
    // the shape is what was meant: four requests, one active, one held, the null
    // sender as MAILER-DAEMON, two recipients under one reason
    let shaped = shape(&ours).join("\n");
    assert!(shaped.contains("-- N Kbytes in 4 Requests"), "{shaped}");
    assert!(shaped.contains("entry* size-ends-at=26 time-at=27 sender-at=47 alice@src.test"));
    assert!(shaped.contains("entry! size-ends-at=26 time-at=27 sender-at=47 bob@src.test"));
    assert!(shaped.contains("sender-at=47 MAILER-DAEMON"));
    assert!(shaped.contains(
        "reason ends-at=78 78\nrecipient at=47 b@down.test\nrecipient at=47 c@down.test"
    ));
    // the active entry's recipient shows no reason (none yet), the held one keeps its own
    assert!(ours.contains(&format!("{}*", ids[0])), "{ours}");
    assert!(ours.contains(&format!("{}!", ids[3])), "{ours}");
    assert_eq!(ours.lines().next().unwrap(), theirs.lines().next().unwrap());

    // `postqueue -j` and `--format postfix-json`: the same objects, read by python3's
    // json, with the same field names and value types in each queue
    let ours_json = run(Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .args(["queue", "list", "--format", "postfix-json", "--config"])
        .arg(&mtad.config));
    let theirs_json = run(Command::new("postqueue")
        .arg("-c")
        .arg(postfix.etc())
        .arg("-j"));
    let (ours_fields, theirs_fields) = (
        json_fields(&ours_json.stdout),
        json_fields(&theirs_json.stdout),
    );
    assert_eq!(
        ours_fields,
        theirs_fields,
        "\nmtad:\n{}\nPostfix:\n{}",
        String::from_utf8_lossy(&ours_json.stdout),
        String::from_utf8_lossy(&theirs_json.stdout)
    );
    assert!(ours_fields.contains("deferred"), "{ours_fields}");
    // the ids as ours are; the null sender as Postfix writes it (MAILER-DAEMON)
    let ours_text = String::from_utf8_lossy(&ours_json.stdout);
    assert!(
        ours_text.contains(&format!("\"queue_id\": \"{}\"", ids[3])),
        "{ours_text}"
    );
    assert!(
        ours_text.contains("\"sender\": \"MAILER-DAEMON\""),
        "{ours_text}"
    );
    // filtered by state, as Postfix's own queues
    let held_only = run(Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .args([
            "queue",
            "list",
            "--format=postfix-json",
            "--state=hold",
            "--config",
        ])
        .arg(&mtad.config));
    let held_text = String::from_utf8_lossy(&held_only.stdout);
    assert_eq!(held_text.lines().count(), 1, "{held_text}");
    assert!(held_text.contains(&ids[3]), "{held_text}");

    // `qshape QUEUE` and `mtactl queue shape --state QUEUE`: every message is younger
    // than five minutes in both, so the tables are the same, character for character
    for queue in ["active", "deferred", "hold"] {
        let theirs = run(Command::new("qshape")
            .arg("-c")
            .arg(postfix.etc())
            .arg(queue));
        let ours = run(Command::new(env!("CARGO_BIN_EXE_mtactl"))
            .args(["queue", "shape", "--state", queue, "--config"])
            .arg(&mtad.config));
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&theirs.stdout),
            "qshape {queue}"
        );
    }
    for (queue, row) in [("deferred", "down.test  3  3"), ("hold", "down.test  1  1")] {
        let ours = run(Command::new(env!("CARGO_BIN_EXE_mtactl"))
            .args(["queue", "shape", "--state", queue, "--config"])
            .arg(&mtad.config));
        let table = String::from_utf8_lossy(&ours.stdout);
        assert!(table.contains(row), "{queue}:\n{table}");
    }

    drop(held_connections);
}

/// Each line of `postqueue -j`-style output as python3's json reads it, reduced to
/// what monitoring relies on: per line, the queue name, the sender, the fields with the
/// types of their values, and each recipient's address and fields; sorted (Postfix
/// lists in hash order).
fn json_fields(lines: &[u8]) -> String {
    let out = run_with_input(
        Command::new("python3").args([
            "-c",
            r#"
import json, sys
out = []
for line in sys.stdin:
    o = json.loads(line)
    fields = sorted((k, type(v).__name__) for k, v in o.items())
    rcpts = sorted((r["address"], sorted(r.keys())) for r in o["recipients"])
    out.append(f"{o['queue_name']} {o['sender']} {fields} {rcpts}")
print("\n".join(sorted(out)))
"#,
        ]),
        lines,
    );
    assert!(out.status.success(), "python3: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn mailq_reads_the_spool_of_a_stopped_daemon_and_says_why_it_cannot() {
    let closed_port = free_port();
    let mut mtad = Mtad::start(
        &MTAD
            .replace("{silent}", &free_port().to_string())
            .replace("{closed}", &closed_port.to_string()),
    );
    let mut c = mtad.session();
    c.cmd("EHLO client.test", "250");
    let id = c.send_message(
        "alice@src.test",
        &["b@down.test"],
        "Subject: x\r\n\r\nx\r\n",
    );
    let running = wait_for(
        "mtad's queue",
        || String::from_utf8_lossy(&mtad_mailq(&mtad.config).stdout).into_owned(),
        |t| deferred_with_reason(t, 1),
    );
    mtad.stop();
    let stopped = mtad_mailq(&mtad.config);
    assert_eq!(stopped.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&stopped.stdout), running);
    assert!(running.starts_with(&format!(
        "----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------\n{id} "
    )));
    assert!(running.contains("Connection refused"), "{running}");
    assert!(running.ends_with(" Kbytes in 1 Request.\n"), "{running}");

    // the spool cannot be read: postqueue's EX_UNAVAILABLE, and why
    let missing = mtad.dir.path().join("other.kdl");
    std::fs::write(
        &missing,
        std::fs::read_to_string(&mtad.config)
            .unwrap()
            .replace(mtad.spool.to_str().unwrap(), "/nonexistent/spool"),
    )
    .unwrap();
    let out = mtad_mailq(&missing);
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(
            "mailq: cannot read the queue: spool: cannot read spool directory /nonexistent/spool"
        ),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    // a broken configuration: EX_CONFIG, with its place
    std::fs::write(&missing, "server {\n    spool\n}\n").unwrap();
    let out = mtad_mailq(&missing);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("other.kdl:2:"),
        "{out:?}"
    );
}
