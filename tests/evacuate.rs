//! `mtactl queue evacuate --to smtp:[host]:port`: a node's queue handed over to
//! another mtad on loopback, each message removed only after the peer's 250; with the
//! receiving node, then the evacuating one, killed with -9 mid-way, every message ends
//! up in one of the two spools (at least once: a message the peer acknowledged just
//! before the evacuating node could record it is in both, as a delivery cut off the
//! same way would be sent twice).

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A node that accepts anything from loopback and keeps it (queue-only).
fn receiver() -> Mtad {
    Mtad::start(
        r#"
server {
    hostname "b.example.test"
    spool "{spool}"
}
listen "mx" address="127.0.0.1:{port}"
stage "rcpt" {
    accept client="127.0.0.0/8"
}
"#,
    )
}

/// A node whose route leads nowhere (a closed port): what it queues stays queued.
fn sender() -> Mtad {
    let dead = free_port();
    Mtad::start(&format!(
        r#"
server {{
    hostname "a.example.test"
    spool "{{spool}}"
}}
listen "mx" address="127.0.0.1:{{port}}"
stage "rcpt" {{
    accept client="127.0.0.0/8"
}}
stage "route" {{
    relay "smtp:[127.0.0.1]:{dead}" tls="none"
}}
"#
    ))
}

/// Subject → how many copies, in `m`'s spool.
fn subjects(m: &Mtad) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (_, body) in m.queued() {
        let text = String::from_utf8_lossy(&body).to_string();
        let subject = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap_or("?")
            .trim()
            .to_owned();
        *out.entry(subject).or_default() += 1;
    }
    out
}

fn fill(a: &Mtad, n: usize) {
    for i in 0..n {
        try_message(a.port, &format!("r{i}@dst.test"), &format!("m{i}")).unwrap();
    }
    assert_eq!(a.queued().len(), n);
}

/// `mtactl queue evacuate` on `a`, in the background.
fn evacuate(a: &Mtad, to: u16, wait: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .args([
            "queue",
            "evacuate",
            "--to",
            &format!("smtp:[127.0.0.1]:{to}"),
        ])
        .args(["--wait", wait, "--config"])
        .arg(&a.config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every message is in one of the spools (a copy in each at most for the few a kill
/// cut off), and `b` got each recipient with its message.
fn all_accounted_for(a: &Mtad, b: &Mtad, n: usize) -> usize {
    let (here, there) = (subjects(a), subjects(b));
    let mut twice = 0;
    for i in 0..n {
        let s = format!("m{i}");
        let copies = here.get(&s).copied().unwrap_or(0) + there.get(&s).copied().unwrap_or(0);
        assert!(copies >= 1, "{s} was lost: {here:?} {there:?}");
        twice += copies - 1;
    }
    twice
}

#[test]
fn the_queue_moves_intact_to_the_other_node() {
    let a = sender();
    let b = receiver();
    let n = 30;
    fill(&a, n);
    let out = evacuate(&a, b.port, "60s").wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("the queue is empty"), "{text}");
    assert!(a.queued().is_empty());
    let moved = b.queued();
    assert_eq!(moved.len(), n, "exactly once when nothing dies");
    // each with its envelope: the sender and its own recipient
    for (m, body) in &moved {
        let text = String::from_utf8_lossy(body);
        let i: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: m"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(m.envelope.sender, "load@client.test");
        assert_eq!(m.envelope.recipients, [format!("r{i}@dst.test")]);
    }
    // a transport that is not SMTP is refused, and so is a node that is not running
    let bad = Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .args(["queue", "evacuate", "--to", "local:", "--config"])
        .arg(&a.config)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
}

#[test]
fn a_peer_that_refuses_keeps_the_message_here() {
    let a = sender();
    // a peer that refuses every recipient (554): never a bounce, the messages stay
    let b = Mtad::start(
        r#"
server {
    hostname "b.example.test"
    spool "{spool}"
}
listen "mx" address="127.0.0.1:{port}"
"#,
    );
    fill(&a, 3);
    let out = evacuate(&a, b.port, "3s").wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("3 message(s) left"), "{text}");
    assert!(
        text.contains("evacuation: the peer refused it, kept here"),
        "{text}"
    );
    assert_eq!(a.queued().len(), 3);
    assert!(b.queued().is_empty());
}

#[test]
fn killing_either_node_mid_way_loses_nothing() {
    let n = 150;
    // the receiving node dies
    let mut a = sender();
    let mut b = receiver();
    fill(&a, n);
    let mut running = evacuate(&a, b.port, "0s");
    wait_until("b received some", || b.queued().len() >= 20);
    b.kill9();
    let _ = running.wait();
    let twice = all_accounted_for(&a, &b, n);
    assert!(twice <= 20, "{twice} in both spools");
    assert!(!a.queued().is_empty(), "b died too late to test anything");
    // b back: the evacuation (still on in a) carries on at the next flush
    b.restart();
    let out = evacuate(&a, b.port, "60s").wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(a.queued().is_empty());
    let twice = all_accounted_for(&a, &b, n);
    assert_eq!(b.queued().len(), n + twice);
    // the evacuating node dies
    let mut a2 = sender();
    let c = receiver();
    fill(&a2, n);
    let mut running = evacuate(&a2, c.port, "0s");
    wait_until("c received some", || c.queued().len() >= 20);
    a2.kill9();
    let _ = running.wait();
    all_accounted_for(&a2, &c, n);
    assert!(!a2.queued().is_empty(), "a died too late to test anything");
    // what may arrive twice: the messages whose attempt was under way when a died
    // (recorded before it started), none other
    let in_flight = a2
        .queued()
        .iter()
        .filter(|(m, _)| m.rcpt_status.iter().any(|s| s.in_flight()))
        .count();
    // restarted, it does not evacuate by itself (queue-only here): asked again, it does
    a2.restart();
    let out = evacuate(&a2, c.port, "60s").wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(a2.queued().is_empty());
    let twice = all_accounted_for(&a2, &c, n);
    assert!(
        twice <= in_flight,
        "{twice} twice, {in_flight} were in flight"
    );
    assert_eq!(c.queued().len(), n + twice);
    let _ = a.stop();
}
