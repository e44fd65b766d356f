//! mtad as a relay, end to end: swaks in, Postfix's smtp-sink (and dnsmasq for MX) as
//! the next hops on loopback. Retries, bounces, fallbacks and restarts.

mod common;

use std::time::{Duration, Instant};

use common::peers::{Dnsmasq, Sink, dump_recipients};
use common::*;

/// A relay for everything from loopback. `{routes}` becomes the route stage and
/// `{delivery}` the inside of the delivery block.
const RELAY: &str = r#"
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
{routes}
}
delivery {
    backoff-min "1s"
    backoff-max "2s"
    connect-timeout "2s"
    command-timeout "5s"
{delivery}
}
"#;

fn relay(routes: &str, delivery: &str) -> Mtad {
    Mtad::start(
        &RELAY
            .replace("{routes}", routes)
            .replace("{delivery}", delivery),
    )
}

fn send(mtad: &Mtad, from: &str, to: &str, subject: &str) -> String {
    let out = swaks(
        mtad.port,
        &[
            "--from",
            from,
            "--to",
            to,
            "--header",
            &format!("Subject: {subject}"),
            "--body",
            "relay test body\n",
        ],
    );
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{transcript}");
    transcript
}

fn wait_log(mtad: &Mtad, needle: &str, n: usize, within: Duration) -> String {
    mtad.wait_log(needle, n, within)
}

fn wait_empty_queue(mtad: &Mtad, within: Duration) {
    let deadline = Instant::now() + within;
    while !mtad.queued().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the queue did not empty: {:?}\n{}",
            mtad.queued()
                .iter()
                .map(|(m, _)| (&m.envelope.recipients, &m.rcpt_status))
                .collect::<Vec<_>>(),
            mtad.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn mail_is_relayed_to_the_next_hop_and_leaves_the_queue() {
    let sink = Sink::start(&[]);
    let mtad = relay(
        &format!(r#"    transport "*" "smtp:[127.0.0.1]:{}""#, sink.port()),
        "",
    );
    send(
        &mtad,
        "alice@src.test",
        "bob@dst.test,carol@dst.test",
        "first",
    );
    let dumps = sink.dumps(1);
    assert_eq!(
        dump_recipients(&dumps[0]),
        ["bob@dst.test", "carol@dst.test"],
        "one transaction for both: {}",
        dumps[0]
    );
    assert!(dumps[0].contains("Subject: first\n"), "{}", dumps[0]);
    assert!(
        dumps[0].contains("X-Mail-Args: <alice@src.test>"),
        "{}",
        dumps[0]
    );
    let log = wait_log(&mtad, "status=sent", 2, Duration::from_secs(5));
    let line = log
        .lines()
        .find(|l| l.contains("to=<bob@dst.test>"))
        .unwrap();
    assert!(
        line.contains(&format!("relay=127.0.0.1[127.0.0.1]:{}", sink.port()))
            && line.contains("dsn=2.0.0, status=sent (250 "),
        "{line}"
    );
    wait_empty_queue(&mtad, Duration::from_secs(5));
}

#[test]
fn a_4xx_is_retried_until_the_next_hop_takes_it() {
    let mut sink = Sink::start(&["-r", "RCPT"]);
    let addr = sink.addr;
    let mtad = relay(
        &format!(r#"    transport "*" "smtp:[127.0.0.1]:{}""#, addr.port()),
        "",
    );
    send(&mtad, "alice@src.test", "bob@dst.test", "retry");
    wait_log(&mtad, "status=deferred", 1, Duration::from_secs(5));
    // the status is recorded just after the log line is written
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let queued = loop {
        let queued = mtad.queued();
        assert_eq!(queued.len(), 1);
        if queued[0].0.rcpt_status[0].attempts == 1 || std::time::Instant::now() > deadline {
            break queued;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = &queued[0].0.rcpt_status[0];
    assert_eq!(status.attempts, 1, "{status:?}");
    assert!(
        status.detail.contains("450") || status.detail.contains("4"),
        "{status:?}"
    );

    // the next hop recovers: the retry (backoff 1s) delivers
    sink.stop();
    let sink = Sink::start_at(addr, &[]);
    let dumps = sink.dumps_within(1, Duration::from_secs(10));
    assert_eq!(dump_recipients(&dumps[0]), ["bob@dst.test"]);
    wait_empty_queue(&mtad, Duration::from_secs(5));
}

#[test]
fn a_5xx_bounces_to_the_sender_with_the_original_headers() {
    let refusing = Sink::start(&["-f", "RCPT"]);
    let senders = Sink::start(&[]);
    let mtad = relay(
        &format!(
            "    transport \"src.test\" \"smtp:[127.0.0.1]:{}\"\n    transport \"*\" \"smtp:[127.0.0.1]:{}\"",
            senders.port(),
            refusing.port()
        ),
        "",
    );
    send(&mtad, "alice@src.test", "nobody@dst.test", "doomed");
    let dumps = senders.dumps(1);
    let dsn = &dumps[0];
    assert!(
        dsn.contains("X-Mail-Args: <>"),
        "bounces come from the null sender: {dsn}"
    );
    assert_eq!(dump_recipients(dsn), ["alice@src.test"]);
    assert!(dsn.contains("multipart/report"), "{dsn}");
    assert!(
        dsn.contains("Final-Recipient: rfc822; nobody@dst.test")
            || dsn.contains("Final-Recipient: rfc822;nobody@dst.test"),
        "{dsn}"
    );
    assert!(dsn.contains("Action: failed"), "{dsn}");
    assert!(
        dsn.contains("Subject: doomed"),
        "original headers included: {dsn}"
    );
    assert!(
        !dsn.contains("relay test body"),
        "never the original body: {dsn}"
    );
    // (smtp-sink opens its dump at MAIL; no message text reached it)
    for entry in std::fs::read_dir(refusing.dir.path()).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!text.contains("relay test body"), "{text}");
    }
    let log = wait_log(&mtad, "status=bounced", 1, Duration::from_secs(5));
    assert!(log.contains("dsn=5."), "{log}");
    wait_empty_queue(&mtad, Duration::from_secs(5));
}

#[test]
fn a_bounce_of_a_bounce_goes_to_postmaster() {
    let refusing = Sink::start(&["-f", "RCPT"]);
    let postmaster = Sink::start(&[]);
    let mtad = relay(
        &format!(
            "    transport \"postmaster@relay.example.test\" \"smtp:[127.0.0.1]:{}\"\n    transport \"*\" \"smtp:[127.0.0.1]:{}\"",
            postmaster.port(),
            refusing.port()
        ),
        "",
    );
    send(&mtad, "<>", "nobody@dst.test", "a bounce that bounces");
    let dumps = postmaster.dumps(1);
    assert_eq!(
        dump_recipients(&dumps[0]),
        ["postmaster@relay.example.test"]
    );
    wait_empty_queue(&mtad, Duration::from_secs(5));
}

#[test]
fn fallback_relays_take_over_when_the_next_hop_is_down_but_not_after_a_5xx() {
    let down = format!("127.0.0.1:{}", free_port());
    let fallback = Sink::start(&[]);
    let global = Sink::start(&[]);
    let refusing = Sink::start(&["-f", "RCPT"]);
    let mtad = relay(
        &format!(
            "    transport \"down.test\" \"smtp:[{down_host}]:{down_port}\" fallback=\"smtp:[127.0.0.1]:{fb}\"\n    \
             transport \"refusing.test\" \"smtp:[127.0.0.1]:{rf}\" fallback=\"smtp:[127.0.0.1]:{fb}\"\n    \
             transport \"*\" \"smtp:[{down_host}]:{down_port}\"",
            down_host = "127.0.0.1",
            down_port = down.rsplit(':').next().unwrap(),
            fb = fallback.port(),
            rf = refusing.port(),
        ),
        &format!("    fallback-relay \"smtp:[127.0.0.1]:{}\"", global.port()),
    );
    send(&mtad, "alice@src.test", "a@down.test", "route fallback");
    let dumps = fallback.dumps(1);
    assert_eq!(dump_recipients(&dumps[0]), ["a@down.test"]);

    send(&mtad, "alice@src.test", "b@other.test", "global fallback");
    let dumps = global.dumps(1);
    assert_eq!(dump_recipients(&dumps[0]), ["b@other.test"]);

    send(&mtad, "<>", "c@refusing.test", "no fallback after 5xx");
    wait_log(&mtad, "to=<c@refusing.test>", 1, Duration::from_secs(5));
    let log = wait_log(&mtad, "status=bounced", 1, Duration::from_secs(5));
    assert!(log.contains("dsn=5."), "{log}");
    // a fallback never saw c@refusing.test
    std::thread::sleep(Duration::from_millis(200));
    for d in fallback.dumps(1) {
        assert!(!d.contains("c@refusing.test"), "{d}");
    }
}

#[test]
fn mx_routing_through_dnsmasq() {
    let sink = Sink::start(&[]);
    let dns = Dnsmasq::start(&[
        "--mx-host=mx-routed.test,mx1.mx-routed.test,10",
        "--host-record=mx1.mx-routed.test,127.0.0.1",
        "--mx-host=nullmx.test,.,0",
    ]);
    let mtad = relay(
        // smtp:domain:port — MX lookup, to the sink's port
        "    transport \"mx-routed.test\" \"smtp:mx-routed.test:{sinkport}\"\n    transport \"src.test\" \"discard\""
            .replace("{sinkport}", &sink.port().to_string())
            .as_str(),
        &format!("    dns-server \"{}\"", dns.addr),
    );
    send(&mtad, "alice@src.test", "user@mx-routed.test", "via MX");
    let dumps = sink.dumps(1);
    assert_eq!(dump_recipients(&dumps[0]), ["user@mx-routed.test"]);
    let log = wait_log(&mtad, "status=sent", 1, Duration::from_secs(5));
    assert!(
        log.contains(&format!(
            "relay=mx1.mx-routed.test[127.0.0.1]:{}",
            sink.port()
        )),
        "{log}"
    );

    // a null MX bounces at once (RFC 7505, 5.1.10); the bounce is discarded here
    send(&mtad, "alice@src.test", "user@nullmx.test", "null MX");
    let log = wait_log(&mtad, "dsn=5.1.10", 1, Duration::from_secs(5));
    assert!(log.contains("to=<user@nullmx.test>"), "{log}");
    wait_empty_queue(&mtad, Duration::from_secs(5));
}

#[test]
fn after_a_restart_only_pending_recipients_are_tried_again() {
    let good = Sink::start(&[]);
    let mut busy = Sink::start(&["-r", "RCPT"]);
    let busy_addr = busy.addr;
    let mtad_routes = format!(
        "    transport \"good.test\" \"smtp:[127.0.0.1]:{}\"\n    transport \"busy.test\" \"smtp:[127.0.0.1]:{}\"",
        good.port(),
        busy_addr.port()
    );
    let mut mtad = relay(&mtad_routes, "");
    send(
        &mtad,
        "alice@src.test",
        "a@good.test,b@busy.test",
        "partial",
    );
    good.dumps(1);
    wait_log(&mtad, "status=deferred", 1, Duration::from_secs(5));
    mtad.stop();
    let queued = mtad.queued();
    assert_eq!(queued.len(), 1);
    let states: Vec<_> = queued[0]
        .0
        .rcpt_status
        .iter()
        .map(|s| format!("{:?}", s.state))
        .collect();
    assert_eq!(states, ["Delivered", "Deferred"]);

    busy.stop();
    let busy = Sink::start_at(busy_addr, &[]);
    mtad.restart();
    let dumps = busy.dumps_within(1, Duration::from_secs(10));
    assert_eq!(dump_recipients(&dumps[0]), ["b@busy.test"]);
    wait_empty_queue(&mtad, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(good.dump_count(), 1, "a@good.test got a second copy");
}

#[test]
fn error_and_discard_transports() {
    let senders = Sink::start(&[]);
    let mtad = relay(
        &format!(
            "    transport \"gone.test\" \"error:5.1.1 this domain is gone\"\n    \
             transport \"later.test\" \"error:4.3.2 not today\"\n    \
             transport \"void.test\" \"discard\"\n    \
             transport \"src.test\" \"smtp:[127.0.0.1]:{}\"",
            senders.port()
        ),
        "",
    );
    // an error: route is refused at RCPT with its status and text (no bounce later:
    // no backscatter), a 4.x.x one for now
    for (to, want) in [
        (
            "x@gone.test",
            "550 5.1.1 <x@gone.test>: Recipient address rejected: this domain is gone",
        ),
        (
            "z@later.test",
            "450 4.3.2 <z@later.test>: Recipient address rejected: not today",
        ),
    ] {
        let out = common::swaks(
            mtad.port,
            &[
                "--from",
                "alice@src.test",
                "--to",
                to,
                "--quit-after",
                "RCPT",
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(want), "{text}");
    }

    send(&mtad, "alice@src.test", "y@void.test", "discard");
    wait_log(
        &mtad,
        "to=<y@void.test>, relay=none",
        1,
        Duration::from_secs(5),
    );

    assert_eq!(senders.dump_count(), 0, "no bounce was sent");
}

/// kill -9 while one route of a message is still in its transaction: the recipient
/// whose 250 was recorded is never sent again; the one whose attempt was under way is
/// sent again after the restart, and the log says it may be a second copy.
#[test]
fn a_crash_during_delivery_resends_only_what_was_under_way() {
    let good = Sink::start(&[]);
    // Takes RCPT, then sits on DATA for a minute: the attempt stays under way.
    let mut stall = Sink::start(&["-w", "60"]);
    let stall_addr = stall.addr;
    let routes = format!(
        "    transport \"good.test\" \"smtp:[127.0.0.1]:{}\"\n    transport \"slow.test\" \"smtp:[127.0.0.1]:{}\"",
        good.port(),
        stall_addr.port()
    );
    let mut mtad = Mtad::start(
        &RELAY
            .replace("{routes}", &routes)
            .replace("{delivery}", "")
            .replace("command-timeout \"5s\"", "command-timeout \"120s\""),
    );
    send(&mtad, "alice@src.test", "a@good.test,b@slow.test", "crash");
    good.dumps(1);
    // Wait until a@good.test's 250 is on disk while b@slow.test is still under way.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let queued = mtad.queued();
        let states: Vec<String> = queued[0]
            .0
            .rcpt_status
            .iter()
            .map(|s| format!("{:?}:{}", s.state, s.detail))
            .collect();
        if states[0].starts_with("Delivered") {
            assert!(
                states[1].starts_with("Deferred:attempt in progress"),
                "{states:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{states:?}\n{}", mtad.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    mtad.kill9();

    stall.stop();
    let slow = Sink::start_at(stall_addr, &[]);
    mtad.restart();
    let log = wait_log(
        &mtad,
        "delivery was under way when mtad stopped",
        1,
        Duration::from_secs(5),
    );
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("delivery was under way"))
        .collect();
    assert!(warned[0].contains("b@slow.test"), "{warned:?}");
    let dumps = slow.dumps_within(1, Duration::from_secs(10));
    assert_eq!(dump_recipients(&dumps[0]), ["b@slow.test"]);
    wait_empty_queue(&mtad, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(good.dump_count(), 1, "a@good.test got a second copy");
    assert_eq!(warned.len(), 1, "{warned:?}");
}

/// The queue id out of a swaks transcript (`250 2.0.0 Ok: queued as ID`).
fn queued_as(transcript: &str) -> String {
    let at = transcript.find("queued as ").expect("not queued") + "queued as ".len();
    transcript[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// `mtactl ARGS` must succeed; its standard output.
fn mtactl_ok(mtad: &Mtad, args: &[&str]) -> String {
    let out = mtad.mtactl(args);
    assert!(
        out.status.success(),
        "mtactl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// With the real scheduler: a long backoff is cut short by `flush`, a held message is
/// not attempted (not even by a flush) until released, and `delete` ends a message
/// for good.
#[test]
fn hold_release_flush_and_delete_steer_the_scheduler() {
    let mut busy = Sink::start(&["-r", "RCPT"]);
    let addr = busy.addr;
    let mtad = Mtad::start(
        &RELAY
            .replace(
                "{routes}",
                &format!(r#"    transport "*" "smtp:[127.0.0.1]:{}""#, addr.port()),
            )
            .replace("{delivery}", "")
            .replace("backoff-min \"1s\"", "backoff-min \"1h\"")
            .replace("backoff-max \"2s\"", "backoff-max \"2h\""),
    );
    let held = queued_as(&send(&mtad, "alice@src.test", "a@dst.test", "held"));
    let flushed = queued_as(&send(&mtad, "alice@src.test", "b@dst.test", "flushed"));
    let deleted = queued_as(&send(&mtad, "alice@src.test", "c@dst.test", "deleted"));
    wait_log(&mtad, "status=deferred", 3, Duration::from_secs(5));
    // the statuses are recorded just after the log lines are written
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let list = mtactl_ok(&mtad, &["queue", "list"]);
        if list.matches("450").count() == 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{list}");
        std::thread::sleep(Duration::from_millis(20));
    }

    mtactl_ok(&mtad, &["queue", "hold", &held]);
    mtactl_ok(&mtad, &["queue", "delete", &deleted]);
    busy.stop();
    let sink = Sink::start_at(addr, &[]);

    // Next attempt in an hour: only the flush brings b@dst.test's mail now. The held
    // message is skipped by a flush of everything, and named, refused.
    let out = mtad.mtactl(&["queue", "flush", &held]);
    assert_eq!(out.status.code(), Some(1));
    mtactl_ok(&mtad, &["queue", "flush"]);
    let dumps = sink.dumps_within(1, Duration::from_secs(10));
    assert_eq!(dump_recipients(&dumps[0]), ["b@dst.test"]);
    wait_log(&mtad, "to=<b@dst.test>", 2, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.dump_count(), 1, "held or deleted mail was sent");
    let list = mtactl_ok(&mtad, &["queue", "list"]);
    assert!(list.contains(&held) && list.contains("(held)"), "{list}");
    assert!(
        !list.contains(&flushed) && !list.contains(&deleted),
        "{list}"
    );

    // release: attempted at once, without waiting for the hour
    mtactl_ok(&mtad, &["queue", "release", &held]);
    let dumps = sink.dumps_within(2, Duration::from_secs(10));
    assert_eq!(dump_recipients(&dumps[1]), ["a@dst.test"]);
    wait_empty_queue(&mtad, Duration::from_secs(5));
    assert_eq!(sink.dump_count(), 2);
    // c@dst.test: its one deferred attempt before the delete, nothing after
    assert_eq!(mtad.log().matches("to=<c@dst.test>").count(), 1);
}

/// `delay-warning`: once a message has waited that long, its sender is told once (an
/// RFC 3464 "delayed" report) while the retries go on.
#[test]
fn a_delay_warning_goes_to_the_sender_once() {
    let busy = Sink::start(&["-r", "RCPT"]);
    let senders = Sink::start(&[]);
    let mtad = relay(
        &format!(
            "    transport \"dst.test\" \"smtp:[127.0.0.1]:{}\"\n    transport \"src.test\" \"smtp:[127.0.0.1]:{}\"",
            busy.port(),
            senders.port()
        ),
        "    delay-warning \"1s\"",
    );
    send(&mtad, "alice@src.test", "bob@dst.test", "slow going");
    let dumps = senders.dumps_within(1, Duration::from_secs(15));
    let report = &dumps[0];
    assert_eq!(dump_recipients(report), ["alice@src.test"]);
    assert!(report.contains("X-Mail-Args: <>"), "{report}");
    for needle in [
        "Action: delayed",
        "Final-Recipient: rfc822; bob@dst.test",
        "Will-Retry-Until:",
        "Subject: slow going",
    ] {
        assert!(report.contains(needle), "{needle} missing:\n{report}");
    }
    // logged as Postfix's bounce daemon logs it
    let log = wait_log(
        &mtad,
        "sender delay notification: ",
        1,
        Duration::from_secs(5),
    );
    assert!(!log.contains("sender non-delivery notification"), "{log}");
    // more retries, no second warning
    let n = mtad.log().matches("to=<bob@dst.test>").count();
    wait_log(&mtad, "to=<bob@dst.test>", n + 2, Duration::from_secs(10));
    assert_eq!(senders.dump_count(), 1);
    assert_eq!(mtad.queued().len(), 1);
    // nor after a restart: what was warned is known from the spool, not from memory
    let mut mtad = mtad;
    mtad.kill9();
    mtad.restart();
    mtad.mtactl(&["queue", "flush"]);
    let n = mtad.log().matches("to=<bob@dst.test>").count();
    wait_log(&mtad, "to=<bob@dst.test>", n + 2, Duration::from_secs(10));
    assert_eq!(
        senders.dump_count(),
        1,
        "a second delay notice after a restart"
    );
    assert_eq!(mtad.queued().len(), 1);
}

/// Established connections from mtad to `port` on loopback, from /proc/net/tcp.
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[2].ends_with(&remote) && f[3] == "01"
        })
        .count()
}

/// `concurrency`: at most that many connections to one next hop at a time, however
/// many messages wait for it; all of them get through.
#[test]
fn per_destination_concurrency_limits_connections() {
    // Each DATA waits a second: transactions overlap if they are allowed to.
    let sink = Sink::start(&["-w", "1"]);
    let mtad = relay(
        &format!(r#"    transport "*" "smtp:[127.0.0.1]:{}""#, sink.port()),
        "    concurrency 2",
    );
    for i in 0..6 {
        send(&mtad, "alice@src.test", &format!("r{i}@dst.test"), "c");
    }
    let mut most = 0;
    while sink.dump_count() < 6 {
        most = most.max(connections_to(sink.port()));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(most, 2, "connections at once");
    wait_empty_queue(&mtad, Duration::from_secs(10));
}

/// Postfix ≥ 3.5: a transport(5) value may list several next hops, tried in order.
/// The first is down, the second takes the mail; the same list in a KDL `transport`
/// rule. `postmap -q` shows that Postfix reads the whole list as the value.
#[test]
fn a_transport_with_several_next_hops_tries_them_in_order() {
    let down = free_port();
    let sink = Sink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("transport");
    let value = format!("smtp:[127.0.0.1]:{down}, [127.0.0.1]:{}", sink.port());
    std::fs::write(&table, format!("table.test {value}\n")).unwrap();
    // (postmap needs a main.cf; an empty one is all defaults)
    std::fs::write(dir.path().join("main.cf"), "").unwrap();
    let postmap = std::process::Command::new(require_tool("postmap"))
        .arg("-c")
        .arg(dir.path())
        .args(["-q", "table.test"])
        .arg(format!("texthash:{}", table.display()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&postmap.stdout).trim(), value);
    let mtad = Mtad::start(
        &RELAY
            .replace(
                "stage \"route\"",
                &format!("table \"transport\" file=\"{}\"\nstage \"route\"", table.display()),
            )
            .replace(
                "{routes}",
                &format!(
                    "    transport \"rule.test\" \"smtp:[127.0.0.1]:{down} [127.0.0.1]:{}\"\n    transport-table \"transport\"",
                    sink.port()
                ),
            )
            .replace("{delivery}", ""),
    );
    send(&mtad, "<>", "a@table.test", "from the table");
    send(&mtad, "<>", "b@rule.test", "from the rule");
    let dumps = sink.dumps(2);
    let mut rcpts: Vec<String> = dumps.iter().flat_map(|d| dump_recipients(d)).collect();
    rcpts.sort();
    assert_eq!(rcpts, ["a@table.test", "b@rule.test"]);
    wait_empty_queue(&mtad, Duration::from_secs(5));
    // mtactl test-policy shows the list as the route
    let out = mtad.mtactl(&[
        "test-policy",
        "--client",
        "127.0.0.1",
        "--from",
        "",
        "--rcpt",
        "a@table.test",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("[127.0.0.1]:{down}, [127.0.0.1]:{}", sink.port())),
        "{text}"
    );
}

/// Postfix smtp_connect.c: "Don't bounce mail after a host lookup problem with a
/// relayhost or with a fallback relay". A relay whose name does not resolve
/// (NXDOMAIN from dnsmasq) hands the mail to the fallback relay; with no fallback (or
/// a fallback that does not resolve either) the mail is deferred with 4.3.5, not
/// bounced.
#[test]
fn a_relay_name_that_does_not_resolve_defers_and_the_fallback_takes_the_mail() {
    let fallback = Sink::start(&[]);
    let senders = Sink::start(&[]);
    let dns = Dnsmasq::start(&["--host-record=exists.test,127.0.0.1"]);
    let mtad = relay(
        &format!(
            "    transport \"src.test\" \"smtp:[127.0.0.1]:{senders}\"\n    \
             transport \"fb.test\" \"smtp:[typo-relay.test]:{senders}\" fallback=\"smtp:[127.0.0.1]:{fb}\"\n    \
             transport \"nofb.test\" \"smtp:[typo-relay.test]:{senders}\"\n    \
             transport \"badfb.test\" \"smtp:[typo-relay.test]\" fallback=\"smtp:[typo-fallback.test]\"\n    \
             relay \"smtp:[typo-relay.test]:{senders}\"",
            senders = senders.port(),
            fb = fallback.port(),
        ),
        &format!("    dns-server \"{}\"", dns.addr),
    );
    send(&mtad, "alice@src.test", "a@fb.test", "fallback takes it");
    let dumps = fallback.dumps(1);
    assert_eq!(dump_recipients(&dumps[0]), ["a@fb.test"]);

    send(&mtad, "alice@src.test", "b@nofb.test", "no fallback");
    send(&mtad, "alice@src.test", "c@badfb.test", "bad fallback");
    send(&mtad, "alice@src.test", "d@relayed.test", "relayhost");
    let log = wait_log(&mtad, "status=deferred", 3, Duration::from_secs(10));
    for rcpt in ["b@nofb.test", "c@badfb.test", "d@relayed.test"] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("to=<{rcpt}>")) && l.contains("status=deferred"))
            .unwrap_or_else(|| panic!("{rcpt}: {log}"));
        assert!(line.contains("dsn=4.3.5"), "{line}");
        assert!(line.contains("no such domain"), "{line}");
    }
    assert!(!log.contains("status=bounced"), "{log}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(senders.dump_count(), 0, "no bounce was sent");
    let queued = mtad.queued();
    assert_eq!(queued.len(), 3, "{log}");
}

/// The recipient's own domain that does not exist still bounces at once (5.1.2):
/// only next hops from the configuration are a configuration problem.
#[test]
fn a_recipient_domain_that_does_not_exist_still_bounces() {
    let senders = Sink::start(&[]);
    let dns = Dnsmasq::start(&["--host-record=exists.test,127.0.0.1"]);
    let mtad = relay(
        &format!(
            "    transport \"src.test\" \"smtp:[127.0.0.1]:{}\"",
            senders.port()
        ),
        &format!("    dns-server \"{}\"", dns.addr),
    );
    send(&mtad, "alice@src.test", "a@nowhere.test", "no such domain");
    let log = wait_log(&mtad, "status=bounced", 1, Duration::from_secs(5));
    assert!(log.contains("dsn=5.1.2"), "{log}");
    let dumps = senders.dumps(1);
    assert_eq!(dump_recipients(&dumps[0]), ["alice@src.test"]);
}

/// Postfix: "mail for X loops back to myself" (5.4.6). A route to our own listener, and
/// an MX host that is ourselves, bounce at once instead of going round; the bounce
/// reaches the sender.
#[test]
fn mail_that_loops_back_to_this_server_bounces_with_5_4_6() {
    let senders = Sink::start(&[]);
    let dns = Dnsmasq::start(&[
        "--mx-host=self-mx.test,mx.self-mx.test,10",
        "--host-record=mx.self-mx.test,127.0.0.1",
    ]);
    let mtad = relay(
        &format!(
            "    transport \"src.test\" \"smtp:[127.0.0.1]:{}\"\n    \
             transport \"loop.test\" \"smtp:[127.0.0.1]:{{port}}\"\n    \
             transport \"self-mx.test\" \"smtp:self-mx.test:{{port}}\"",
            senders.port()
        ),
        &format!("    dns-server \"{}\"", dns.addr),
    );
    send(&mtad, "alice@src.test", "a@loop.test", "loop");
    send(&mtad, "alice@src.test", "b@self-mx.test", "loop by MX");
    let log = wait_log(&mtad, "status=bounced", 2, Duration::from_secs(5));
    for (rcpt, name) in [
        ("a@loop.test", format!("[127.0.0.1]:{}", mtad.port)),
        ("b@self-mx.test", "self-mx.test".to_owned()),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("to=<{rcpt}>")) && l.contains("status=bounced"))
            .unwrap_or_else(|| panic!("{rcpt}: {log}"));
        assert!(
            line.contains("dsn=5.4.6")
                && line.contains(&format!("mail for {name} loops back to myself")),
            "{line}"
        );
    }
    // received once each: never handed to ourselves
    assert_eq!(log.matches("}: connect").count(), 2, "{log}");
    let dumps = senders.dumps(2);
    for d in &dumps {
        assert!(d.contains("loops back to myself"), "{d}");
    }
}

/// A host on port 25 that answers EHLO with our own hostname is ourselves under
/// another address (Postfix smtp_proto.c): 5.4.6, the message is not sent to it.
#[test]
fn a_next_hop_that_greets_with_our_hostname_on_port_25_is_a_loop() {
    let senders = Sink::start(&[]);
    // a second mtad with the same hostname, on 127.0.0.45:25
    let twin = Mtad::start(
        &RELAY
            .replace("listen \"mx\" address=\"127.0.0.1:{port}\"", "listen \"mx\" address=\"127.0.0.45:25\"\nlisten \"local\" address=\"127.0.0.1:{port}\"")
            .replace("{routes}", "")
            .replace("{delivery}", "    queue-only #true"),
    );
    let mtad = relay(
        &format!(
            "    transport \"src.test\" \"smtp:[127.0.0.1]:{}\"\n    \
             transport \"twin.test\" \"smtp:[127.0.0.45]:25\"",
            senders.port()
        ),
        "",
    );
    send(&mtad, "alice@src.test", "a@twin.test", "to my twin");
    let log = wait_log(&mtad, "status=bounced", 1, Duration::from_secs(5));
    assert!(
        log.contains("dsn=5.4.6") && log.contains("mail for [127.0.0.45]:25 loops back to myself"),
        "{log}"
    );
    assert!(twin.queued().is_empty(), "the twin got nothing");
}
