//! The after-queue content filter end to end (Postfix's FILTER_README model): swaks →
//! mtad → a real filter process (tests/peers/filter_peer.py on aiosmtpd: tags the
//! message, rewrites the subject, injects it again over SMTP) → mtad's `filtered`
//! listener → smtp-sink.

mod common;

use std::time::{Duration, Instant};

use common::peers::{FilterPeer, Sink, dump_recipients};
use common::*;

/// `{reinject}`, `{filter}`, `{sink}`, `{on_failure}`, `{mx_filter}` (the main
/// listener's `content-filter=`, if any) and `{data}` (data-stage rules) to fill in.
const CONFIG: &str = r#"
server {
    hostname "mx.example.test"
    spool "{spool}"
}
listen "mx" address="127.0.0.1:{port}" {mx_filter}
listen "reinject" address="127.0.0.1:{reinject}" filtered=#true
networks "trusted" "127.0.0.0/8"
content-filter "scan" "smtp:[127.0.0.1]:{filter}" {on_failure}
stage "rcpt" {
    accept client="trusted"
}
stage "data" {
{data}
}
stage "route" {
    transport "*" "smtp:[127.0.0.1]:{sink}"
}
delivery {
    backoff-min "1s"
    backoff-max "1s"
    connect-timeout "2s"
}
"#;

struct Setup {
    mtad: Mtad,
    sink: Sink,
    reinject: u16,
    filter_port: u16,
}

fn setup(on_failure: &str, reinject_to_mx: bool) -> Setup {
    setup_with(on_failure, reinject_to_mx, "content-filter=\"scan\"", "")
}

/// [`setup`] with the main listener's filter setting and data-stage rules given.
fn setup_with(on_failure: &str, reinject_to_mx: bool, mx_filter: &str, data: &str) -> Setup {
    let sink = Sink::start(&[]);
    let reinject = free_port();
    let filter_port = free_port();
    let config = CONFIG
        .replace("{reinject}", &reinject.to_string())
        .replace("{filter}", &filter_port.to_string())
        .replace("{sink}", &sink.port().to_string())
        .replace("{on_failure}", on_failure)
        .replace("{mx_filter}", mx_filter)
        .replace("{data}", data);
    let mtad = Mtad::start(&config);
    let reinject = if reinject_to_mx { mtad.port } else { reinject };
    Setup {
        mtad,
        sink,
        reinject,
        filter_port,
    }
}

fn send(mtad: &Mtad, subject: &str, body: &str) {
    let out = swaks(
        mtad.port,
        &[
            "--from",
            "alice@src.test",
            "--to",
            "bob@dst.test",
            "--helo",
            "client.src.test",
            "--header",
            &format!("Subject: {subject}"),
            "--body",
            body,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn wait_empty_queue(mtad: &Mtad, within: Duration) {
    let deadline = Instant::now() + within;
    while !mtad.queued().is_empty() {
        assert!(
            Instant::now() < deadline,
            "queue not empty:\n{}",
            mtad.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const BODY: &str = "first line\n.a line with a leading dot\n..two dots\n\nlast line";

#[test]
fn the_filter_changes_the_message_once_and_delivery_follows() {
    let s = setup("", false);
    let filter = FilterPeer::start(s.filter_port, s.reinject, &[]);
    send(&s.mtad, "hello", BODY);
    let dump = &s.sink.dumps_within(1, Duration::from_secs(15))[0];
    assert_eq!(dump_recipients(dump), ["bob@dst.test"]);
    assert!(dump.contains("X-Filtered-By: test-filter"), "{dump}");
    assert!(dump.contains("Subject: [filtered] hello"), "{dump}");
    for line in BODY.lines() {
        assert!(
            dump.contains(&format!("\n{line}\n")),
            "{line:?} lost:\n{dump}"
        );
    }
    // XFORWARD told the filter who the client really was
    let (env, eml) = &filter.messages(1)[0];
    for attr in [
        "ADDR=127.0.0.1",
        "HELO=client.src.test",
        "PROTO=ESMTP",
        "SOURCE=REMOTE",
    ] {
        assert!(env.contains(attr), "{attr} missing: {env}");
    }
    assert!(
        env.contains("MAIL <alice@src.test>\nRCPT <bob@dst.test>\n"),
        "{env}"
    );
    assert!(String::from_utf8_lossy(eml).contains("Subject: hello"));
    wait_empty_queue(&s.mtad, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(filter.count(), 1, "the filter saw it twice");
    assert_eq!(s.sink.dump_count(), 1);
    // the same message again, from the same client: filtered again, like any other
    send(&s.mtad, "hello", BODY);
    let dumps = s.sink.dumps_within(2, Duration::from_secs(15));
    assert!(
        dumps[1].contains("Subject: [filtered] hello"),
        "{}",
        dumps[1]
    );
    assert_eq!(filter.count(), 2);
    let log = s.mtad.log();
    assert!(
        log.contains(&format!(
            "to=<bob@dst.test>, relay=127.0.0.1[127.0.0.1]:{}",
            s.filter_port
        )),
        "{log}"
    );
}

/// The filter goes away in the middle of the load and comes back: every message is
/// delivered, each filtered exactly once.
#[test]
fn a_filter_that_stops_mid_load_loses_nothing() {
    let s = setup("", false);
    let mut first = FilterPeer::start(s.filter_port, s.reinject, &[]);
    // (distinct bodies: an identical copy arriving from loopback while the first is
    // inside the filter would be taken for it coming back)
    for i in 0..5 {
        send(&s.mtad, &format!("msg {i}"), &format!("{BODY}\nnumber {i}"));
    }
    s.sink.dumps_within(5, Duration::from_secs(15));
    first.stop();
    for i in 5..10 {
        send(&s.mtad, &format!("msg {i}"), &format!("{BODY}\nnumber {i}"));
    }
    // nothing gets through unfiltered while it is down
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        s.sink.dump_count(),
        5,
        "{:?}\n{}",
        s.sink
            .dumps(5)
            .iter()
            .map(|d| d
                .lines()
                .filter(|l| l.starts_with("Subject") || l.starts_with("X-Filtered"))
                .collect::<Vec<_>>())
            .collect::<Vec<_>>(),
        s.mtad.log()
    );
    assert_eq!(
        s.mtad.queued().len(),
        5,
        "{:?}",
        s.mtad
            .queued()
            .iter()
            .map(|(m, _)| (
                m.id,
                &m.envelope.listener,
                &m.envelope.filter,
                &m.rcpt_status
            ))
            .collect::<Vec<_>>()
    );
    let second = FilterPeer::start(s.filter_port, s.reinject, &[]);
    let dumps = s.sink.dumps_within(10, Duration::from_secs(20));
    wait_empty_queue(&s.mtad, Duration::from_secs(5));
    assert_eq!(first.count() + second.count(), 10);
    let mut subjects: Vec<String> = dumps
        .iter()
        .map(|d| {
            assert_eq!(d.matches("X-Filtered-By: test-filter").count(), 1, "{d}");
            d.lines()
                .find(|l| l.starts_with("Subject: "))
                .unwrap()
                .to_owned()
        })
        .collect();
    subjects.sort();
    let mut want: Vec<String> = (0..10)
        .map(|i| format!("Subject: [filtered] msg {i}"))
        .collect();
    want.sort();
    assert_eq!(subjects, want);
}

#[test]
fn on_failure_bypass_delivers_unfiltered_while_the_filter_is_down() {
    let s = setup("on-failure=\"bypass\"", false);
    send(&s.mtad, "urgent", BODY);
    let dump = &s.sink.dumps_within(1, Duration::from_secs(10))[0];
    assert!(dump.contains("Subject: urgent"), "{dump}");
    assert!(!dump.contains("X-Filtered-By"), "{dump}");
    assert!(
        s.mtad
            .log()
            .contains("delivering unfiltered (on-failure=bypass)"),
        "{}",
        s.mtad.log()
    );
}

#[test]
fn a_5xx_from_the_filter_bounces_to_the_sender() {
    let s = setup("", false);
    let _filter = FilterPeer::start(s.filter_port, s.reinject, &["--perm-fail"]);
    send(&s.mtad, "refused", BODY);
    // the bounce goes through the filter too? No: a bounce is mtad's own mail.
    let dump = &s.sink.dumps_within(1, Duration::from_secs(10))[0];
    assert_eq!(dump_recipients(dump), ["alice@src.test"]);
    assert!(dump.contains("Status: 5.7.0"), "{dump}");
    assert!(
        dump.contains("message refused by the content filter"),
        "{dump}"
    );
}

/// A filter that injects on the filtering listener again (no `filtered` listener in its
/// way): the message passes the filter once, then is delivered, and the loop is logged.
#[test]
fn a_message_back_from_its_filter_is_not_filtered_again() {
    let s = setup("", true);
    let filter = FilterPeer::start(s.filter_port, s.reinject, &[]);
    send(&s.mtad, "loop", BODY);
    let dump = &s.sink.dumps_within(1, Duration::from_secs(15))[0];
    assert!(dump.contains("Subject: [filtered] loop"), "{dump}");
    wait_empty_queue(&s.mtad, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(filter.count(), 1);
    assert!(
        s.mtad.log().contains("came back from its content filter"),
        "{}",
        s.mtad.log()
    );
}

/// The two messages one goes through the filter and one does not, by subject.
fn only_the_chosen_one_is_filtered(s: &Setup, filter: &FilterPeer, plain: &str, chosen: &str) {
    send(&s.mtad, plain, BODY);
    send(&s.mtad, chosen, BODY);
    let dumps = s.sink.dumps_within(2, Duration::from_secs(15));
    let subjects: Vec<&str> = dumps
        .iter()
        .map(|d| d.lines().find(|l| l.starts_with("Subject: ")).unwrap())
        .collect();
    assert!(
        subjects.contains(&format!("Subject: {plain}").as_str()),
        "{subjects:?}"
    );
    assert!(
        subjects.contains(&format!("Subject: [filtered] {chosen}").as_str()),
        "{subjects:?}"
    );
    assert_eq!(filter.count(), 1);
}

/// header_checks' FILTER: on a listener without a filter, only the messages a check
/// picks go through it.
#[test]
fn a_filter_action_in_header_checks_picks_the_messages() {
    let s = setup_with(
        "",
        false,
        "",
        "    header-checks {\n        \"/^Subject: .*invoice/\" \"FILTER scan\"\n    }",
    );
    let filter = FilterPeer::start(s.filter_port, s.reinject, &[]);
    only_the_chosen_one_is_filtered(&s, &filter, "hello", "your invoice");
}

/// A data hook chooses the filter for the messages it wants scanned.
#[test]
fn a_data_hook_chooses_the_filter() {
    let dir = tempfile::tempdir().unwrap();
    let hook = dir.path().join("scan.rhai");
    std::fs::write(
        &hook,
        "fn data(ctx) {\n    if ctx.header(\"Subject\").contains(\"scan me\") {\n        ctx.content_filter(\"scan\");\n    }\n    next()\n}\n",
    )
    .unwrap();
    let s = setup_with("", false, "", &format!("    hook \"{}\"", hook.display()));
    let filter = FilterPeer::start(s.filter_port, s.reinject, &[]);
    only_the_chosen_one_is_filtered(&s, &filter, "plain", "please scan me");
}

/// A filter that answers 4xx keeps the message queued; once it takes mail again, the
/// retry delivers it, filtered.
#[test]
fn a_4xx_from_the_filter_is_retried() {
    let s = setup("", false);
    let mut busy = FilterPeer::start(s.filter_port, s.reinject, &["--temp-fail"]);
    send(&s.mtad, "later", BODY);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.mtad.log().contains("filter busy, try again later") {
        assert!(Instant::now() < deadline, "{}", s.mtad.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(s.sink.dump_count(), 0);
    assert_eq!(s.mtad.queued().len(), 1);
    busy.stop();
    let filter = FilterPeer::start(s.filter_port, s.reinject, &[]);
    let dump = &s.sink.dumps_within(1, Duration::from_secs(15))[0];
    assert!(dump.contains("Subject: [filtered] later"), "{dump}");
    assert_eq!(filter.count(), 1);
}
