//! The mail log in Postfix's grammar (`mtad --log-format postfix`), read by the tools
//! administrators run on a Postfix host: pflogsumm counts a scripted day of traffic
//! right (the same counts as for the same day through a real Postfix), logwatch's
//! `postfix` service summarises it alike, and fail2ban's shipped `postfix`
//! filter matches every refusal and AUTH failure it should and nothing else.

mod common;

use std::process::Command;
use std::time::Duration;

use common::peers::Sink;
use common::*;

const CONFIG: &str = r#"
server {
    hostname "relay.example.test"
    spool "{spool}"
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
    transport "gone.test" "smtp:[127.0.0.1]:{refusing}"
}
delivery {
    backoff-min "1h"
    connect-timeout "2s"
}
"#;

/// A day: two messages delivered, one deferred, one bounced (its notice delivered to
/// its sender: a third delivery), a relay attempt refused, a wrong password.
#[test]
fn pflogsumm_and_fail2ban_read_the_mail_log() {
    let sink = Sink::start(&[]);
    // 5xx to every RCPT: a bounce at delivery
    let refusing = Sink::start(&["-f", "RCPT"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users"), "alice:{PLAIN}secret\n").unwrap();
    let spool = dir.path().join("spool");
    let config = CONFIG
        .replace("{sink}", &sink.addr.port().to_string())
        .replace("{refusing}", &refusing.addr.port().to_string());
    let mut mtad = postfix_logging(Mtad::start_in(dir, spool, &config));
    day(mtad.port);
    // and guesses a password
    let mut c = Client::connect_from("127.0.0.3", mtad.port);
    c.expect("220");
    c.cmd("EHLO guesser.example", "250");
    c.cmd("AUTH PLAIN AGFsaWNlAHdyb25n", "535");
    c.cmd("QUIT", "221");

    mtad.wait_log("status=sent", 3, Duration::from_secs(20));
    mtad.wait_log("status=deferred", 1, Duration::from_secs(20));
    mtad.wait_log("status=bounced", 1, Duration::from_secs(20));
    mtad.wait_log("removed", 4, Duration::from_secs(20));
    mtad.stop();
    let log = mtad.log();
    // every line is a Postfix log line: `Mmm dd HH:MM:SS host mtad/agent[pid]: text`
    for line in log.lines() {
        let rest = line.get(16..).unwrap_or_default();
        let program = rest.split_once(' ').map(|(_, p)| p).unwrap_or_default();
        let agent = program.strip_prefix("mtad/").unwrap_or_default();
        let (name, pid) = agent.split_once('[').unwrap_or_default();
        assert!(
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_lowercase())
                && pid
                    .split_once("]: ")
                    .is_some_and(|(p, _)| p.parse::<u32>().is_ok()),
            "not a Postfix log line: {line:?}"
        );
    }
    // every delivery line has Postfix's delays=a/b/c/d, four numbers of seconds
    let deliveries: Vec<&str> = log.lines().filter(|l| l.contains(" status=")).collect();
    assert_eq!(deliveries.len(), 5, "{log}");
    // a delivery over SMTP says which TLS policy it met, after the reply (smtp-sink
    // offers no STARTTLS: none); pflogsumm below still counts it
    for line in deliveries.iter().filter(|l| l.contains("status=sent")) {
        assert!(line.ends_with(") tls=none"), "{line}");
    }
    for line in deliveries {
        let delays = line
            .split(", ")
            .find_map(|f| f.strip_prefix("delays="))
            .unwrap_or_else(|| panic!("no delays= in {line}"));
        let parts: Vec<f64> = delays.split('/').map(|p| p.parse().unwrap()).collect();
        assert_eq!(parts.len(), 4, "{line}");
    }
    assert!(
        log.contains("mtad/bounce[") && log.contains(": sender non-delivery notification: "),
        "{log}"
    );
    let file = mtad.dir.path().join("mail.log");
    std::fs::write(&file, &log).unwrap();

    let pflogsumm = require_tool("pflogsumm");
    let out = Command::new(pflogsumm)
        .args(["--syslog-name=mtad", "--problems-first"])
        .arg(&file)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{report}");
    let count = |what: &str| -> u64 {
        report
            .lines()
            .find_map(|l| {
                let mut words = l.split_whitespace();
                let n = words.next()?.parse().ok()?;
                (words.next()? == what).then_some(n)
            })
            .unwrap_or_else(|| panic!("no {what} line in:\n{report}\nfrom the log:\n{log}"))
    };
    assert_eq!(
        (
            count("received"),
            count("delivered"),
            count("deferred"),
            count("bounced"),
            count("rejected")
        ),
        (4, 3, 1, 1, 1),
        "{report}\nfrom the log:\n{log}"
    );
    assert!(report.contains("a@src.test"), "senders: {report}");
    assert!(report.contains("one@sink.test"), "recipients: {report}");

    // logwatch: the same day, summarised
    let report = logwatch(mtad.dir.path());
    let count = |what: &str| -> u64 {
        report
            .lines()
            .find_map(|l| {
                let (n, rest) = l.trim_start().split_once(char::is_whitespace)?;
                (rest.trim_start().starts_with(what)).then(|| n.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no {what} line in:\n{report}\nfrom the log:\n{log}"))
    };
    assert_eq!(
        [
            count("Accepted"),
            count("Rejected"),
            count("5xx Reject relay denied"),
            count("Sent via SMTP"),
            count("Deferred"),
            count("Bounced"),
            count("Notifications sent"),
            count("SASL authentication failed"),
            count("Removed from queue"),
        ],
        [4, 1, 1, 3, 1, 1, 1, 1, 4],
        "{report}"
    );

    // fail2ban's shipped filter, with the daemon name ours (docs/operations.md)
    let (matched, hits) = fail2ban(&file, r#"postfix[mode=aggressive, _daemon="mtad/\w+"]"#);
    // the relay attempt, the failed AUTH and the session that only failed AUTH (as
    // Postfix's `disconnect ... auth=0/1` line is matched); nothing of the good client
    assert!(
        matched.contains(", 3 matched,"),
        "fail2ban matched otherwise:\n{matched}\nfrom the log:\n{log}"
    );
    assert_eq!(hits.len(), 3, "{matched}");
    assert!(
        hits.iter().all(|l| !l.contains("[127.0.0.1]")) && hits[0].contains("Relay access denied"),
        "{matched}"
    );

    // the `postfix-sasl` jail's filter: the AUTH failure, and nothing else of the day
    let (matched, hits) = fail2ban(&file, r#"postfix[mode=auth, _daemon="mtad/\w+"]"#);
    assert!(matched.contains(", 1 matched,"), "{matched}");
    assert!(
        hits.len() == 1
            && hits[0].contains("warning: unknown[127.0.0.3]: SASL PLAIN authentication failed"),
        "{matched}"
    );
}

/// logwatch's `postfix` service on `dir/mail.log`, with the two override files that
/// let it read `mtad/` lines (docs/operations.md), bind-mounted over
/// /etc/logwatch/conf in a mount namespace of its own: the host's /etc is untouched.
fn logwatch(dir: &std::path::Path) -> String {
    let conf = dir.join("logwatch-conf");
    std::fs::create_dir_all(conf.join("services")).unwrap();
    std::fs::create_dir_all(conf.join("logfiles")).unwrap();
    std::fs::write(conf.join("services/postfix.conf"), logwatch_override()).unwrap();
    let logwatch = require_tool("logwatch");
    let out = Command::new(require_tool("unshare"))
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind '{}' /etc/logwatch/conf && exec '{}' --service postfix --logdir '{}' --range all --output stdout --detail High",
            conf.display(),
            logwatch.display(),
            dir.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What docs/operations.md tells administrators to put in
/// /etc/logwatch/conf/services/postfix.conf (its code block that sets `*OnlyService`).
fn logwatch_override() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap();
    doc.split("```\n")
        .find(|block| block.starts_with("*OnlyService"))
        .expect("the logwatch override in docs/operations.md")
        .to_owned()
}

/// The same day through a throw-away Postfix (its smtpd on loopback, its log in a
/// `maillog_file`) and through mtad: two messages relayed to smtp-sink, one deferred
/// (its next hop refuses connections), one bounced (the next hop refuses the
/// recipient; the notice to its sender relayed), one relay attempt refused. pflogsumm
/// reads both logs to the same counts.
#[test]
fn pflogsumm_counts_a_day_through_postfix_and_mtad_alike() {
    let sink = Sink::start(&[]);
    let refusing = Sink::start(&["-f", "RCPT"]);
    let closed = free_port();
    let postfix = common::peers::Postfix::start(
        &format!(
            "mydestination =\n\
             myhostname = relay.example.test\n\
             alias_maps =\n\
             alias_database =\n\
             mynetworks = 127.0.0.1/32\n\
             smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n\
             minimal_backoff_time = 1h\n\
             maximal_backoff_time = 2h\n\
             queue_run_delay = 1h\n\
             smtp_connect_timeout = 2s\n\
             transport_maps = inline:{{ sink.test=smtp:[127.0.0.1]:{}, later.test=smtp:[127.0.0.1]:{closed}, gone.test=smtp:[127.0.0.1]:{} }}",
            sink.port(),
            refusing.port()
        ),
        true,
    );
    let config = format!(
        r#"
server {{
    hostname "relay.example.test"
    spool "{{spool}}"
}}
listen "mx" address="127.0.0.1:{{port}}"
networks "trusted" "127.0.0.1/32"
stage "rcpt" {{
    accept client="trusted"
}}
stage "route" {{
    transport "sink.test" "smtp:[127.0.0.1]:{}"
    transport "later.test" "smtp:[127.0.0.1]:{closed}"
    transport "gone.test" "smtp:[127.0.0.1]:{}"
}}
delivery {{
    backoff-min "1h"
    connect-timeout "2s"
}}
"#,
        sink.port(),
        refusing.port()
    );
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let mut mtad = postfix_logging(Mtad::start_in(dir, spool, &config));
    day(postfix.port);
    day(mtad.port);
    // every message done with: 3 sent (the notice too), the deferral, the bounce
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let done = |log: &str| {
        log.matches("status=sent").count() >= 3
            && log.matches("status=deferred").count() >= 1
            && log.matches("status=bounced").count() >= 1
            && log.matches(": removed").count() >= 4
    };
    while !(done(&postfix.log()) && done(&mtad.log())) {
        assert!(
            std::time::Instant::now() < deadline,
            "Postfix:\n{}\nmtad:\n{}",
            postfix.log(),
            mtad.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    mtad.stop();

    let summary = |file: &std::path::Path, name: &str| -> Vec<(String, u64)> {
        let out = Command::new(require_tool("pflogsumm"))
            .arg(format!("--syslog-name={name}"))
            .arg(file)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{report}");
        [
            "received",
            "delivered",
            "deferred",
            "bounced",
            "rejected",
            "senders",
            "sending hosts/domains",
            "recipients",
            "recipient hosts/domains",
        ]
        .iter()
        .map(|what| {
            let n = report
                .lines()
                .find_map(|l| {
                    let (n, rest) = l.trim_start().split_once(char::is_whitespace)?;
                    let rest = rest.trim_start();
                    (rest == *what || rest.starts_with(&format!("{what} ")))
                        .then(|| n.parse().ok())?
                })
                .unwrap_or_else(|| panic!("no {what} in\n{report}"));
            ((*what).to_owned(), n)
        })
        .collect()
    };
    let mtad_file = mtad.dir.path().join("mail.log");
    std::fs::write(&mtad_file, mtad.log()).unwrap();
    let theirs = summary(&postfix.dir.path().join("maillog"), "postfix");
    let ours = summary(&mtad_file, "mtad");
    assert_eq!(
        ours,
        theirs,
        "Postfix:\n{}\nmtad:\n{}",
        postfix.log(),
        mtad.log()
    );
    println!("pflogsumm, Postfix and mtad: {theirs:?}");
    // and logwatch's summary of each (but connections: the harness's probe of Postfix's
    // port is one more)
    let lines = |report: &str| -> Vec<String> {
        let summary = report
            .split("****** Summary")
            .nth(1)
            .and_then(|s| s.split("****** Detail").next())
            .unwrap_or_else(|| panic!("no summary in\n{report}"));
        summary
            .lines()
            .filter(|l| {
                [
                    "Accepted",
                    "Rejected",
                    "5xx Reject",
                    "Removed from queue",
                    "Sent via SMTP",
                    "Deferred",
                    "Deferrals",
                    "Bounced",
                    "Notifications sent",
                ]
                .iter()
                .any(|w| {
                    l.trim_start()
                        .split_once(char::is_whitespace)
                        .is_some_and(|(_, r)| r.trim_start().starts_with(w))
                })
            })
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    // logwatch finds a log by its name: Postfix's as mail.log in a directory of its own
    let pf_logs = postfix.dir.path().join("logs");
    std::fs::create_dir(&pf_logs).unwrap();
    std::fs::write(pf_logs.join("mail.log"), postfix.log()).unwrap();
    let (lw_theirs, lw_ours) = (
        lines(&logwatch(&pf_logs)),
        lines(&logwatch(mtad.dir.path())),
    );
    println!("logwatch, Postfix: {lw_theirs:?}\nlogwatch, mtad: {lw_ours:?}");
    assert_eq!(lw_ours, lw_theirs);
    let expected: Vec<u64> = theirs.iter().map(|(_, n)| *n).collect();
    assert_eq!(expected[..5], [4, 3, 1, 1, 1], "{theirs:?}");
}

/// `fail2ban-regex --print-all-matched FILE FILTER`: its report, and the mtad lines it
/// matched.
fn fail2ban(file: &std::path::Path, filter: &str) -> (String, Vec<String>) {
    let out = Command::new(require_tool("fail2ban-regex"))
        .arg("--print-all-matched")
        .arg(file)
        .arg(filter)
        .output()
        .unwrap();
    let matched = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{matched}");
    let hits = matched
        .lines()
        .filter(|l| l.starts_with("|  ") && l.contains(" mtad/") && l.contains("]: "))
        .map(str::to_owned)
        .collect();
    (matched, hits)
}

/// `mtad` restarted with `--log-format postfix` and an empty log: from now on, the
/// log is Postfix's.
fn postfix_logging(mut mtad: Mtad) -> Mtad {
    mtad.stop();
    std::fs::write(mtad.log_path(), "").unwrap();
    mtad.args = vec!["--log-format".into(), "postfix".into()];
    mtad.restart();
    mtad
}

/// The day's traffic on `port`: four messages (two for the sink, one for a next hop
/// that refuses connections, one for a next hop that refuses the recipient), then a
/// client outside the trusted network that tries to relay.
fn day(port: u16) {
    for (from, to) in [
        ("a@src.test", "one@sink.test"),
        ("b@src.test", "two@sink.test"),
        ("c@src.test", "x@later.test"),
        ("bounce-me@sink.test", "y@gone.test"),
    ] {
        let out = swaks(
            port,
            &["--from", from, "--to", to, "--body", "a day of mail\n"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let mut c = Client::connect_from("127.0.0.2", port);
    c.expect("220");
    c.cmd("EHLO outside.example", "250");
    c.cmd("MAIL FROM:<spammer@outside.example>", "250");
    c.cmd("RCPT TO:<victim@elsewhere.example>", "554 5.7.1");
    c.cmd("QUIT", "221");
}
