//! Local submission end to end: the real `sendmail` binary (as cron, bsd-mailx,
//! s-nail, PHP, mdadm and mailutils run it), the maildrop, the daemon's pickup, the
//! policy and delivery to smtp-sink, with the headers checked as delivered.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::Mtad;
use common::peers::{Sink, dump_recipients};

const SENDMAIL: &str = env!("CARGO_BIN_EXE_sendmail");

/// Loopback trusted (the pickup's session comes from 127.0.0.1), everything relayed
/// to smtp-sink, DKIM not configured. `{sink}` is the sink's port.
const LOCAL: &str = r#"
server {
    hostname "host.example.test"
    origin "example.test"
    spool "{spool}"
}
listen "mx" address="127.0.0.1:{port}"
networks "trusted" "127.0.0.0/8"
stage "rcpt" {
    accept client="trusted"
}
stage "route" {
    relay "smtp:[127.0.0.1]:{sink}"
}
local-submission {
    maildrop "{dir}/maildrop"
    {extra}
}
table "login-senders" {
    "root" "*"
    "nobody" "nobody@example.test, @apps.example.test"
}
delivery {
    queue-only #false
}
"#;

fn start(sink: &Sink, extra: &str) -> Mtad {
    let t = LOCAL
        .replace("{sink}", &sink.port().to_string())
        .replace("{extra}", extra);
    Mtad::start(&t)
}

/// Runs our sendmail with `-C` and `args`, `input` on stdin.
fn sendmail(mtad: &Mtad, args: &[&str], input: &str) -> Output {
    run_with_stdin(
        Command::new(SENDMAIL)
            .arg("-C")
            .arg(&mtad.config)
            .args(args),
        input,
    )
}

fn run_with_stdin(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}; stderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wrapper(mtad: &Mtad) -> PathBuf {
    common::sendmail_wrapper(mtad.dir.path(), &mtad.config)
}

fn argv_log(mtad: &Mtad) -> String {
    std::fs::read_to_string(mtad.dir.path().join("argv.log")).unwrap_or_default()
}

/// The message as delivered (after smtp-sink's own `X-` lines).
fn message_of(dump: &str) -> &str {
    let mut rest = dump;
    while ["X-Client-", "X-Helo-", "X-Mail-", "X-Rcpt-"]
        .iter()
        .any(|p| rest.starts_with(p))
    {
        rest = rest.split_once('\n').map_or("", |(_, r)| r);
    }
    rest
}

/// The header block of a delivered message.
fn headers_of(dump: &str) -> String {
    let m = message_of(dump);
    m.split_once("\n\n").map_or(m, |(h, _)| h).to_owned()
}

fn header<'a>(headers: &'a str, name: &str) -> Vec<&'a str> {
    headers
        .lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then_some(v.trim())
        })
        .collect()
}

/// Date, Message-ID, a qualified From; no Bcc; our pickup's Received.
fn assert_cleaned(dump: &str, from: &str) {
    let h = headers_of(dump);
    assert_eq!(header(&h, "Date").len(), 1, "one Date:\n{h}");
    assert_eq!(header(&h, "Message-ID").len(), 1, "one Message-ID:\n{h}");
    let f = header(&h, "From");
    assert_eq!(f.len(), 1, "one From:\n{h}");
    assert!(
        f[0].contains(from),
        "From: {} should hold {from}\n{h}",
        f[0]
    );
    assert!(header(&h, "Bcc").is_empty(), "no Bcc:\n{h}");
    assert!(
        h.contains("(mtad, from userid 0)"),
        "pickup's Received:\n{h}"
    );
}

#[test]
fn debian_cron_argv() {
    let sink = Sink::start(&[]);
    let mtad = start(&sink, "");
    let out = sendmail(
        &mtad,
        &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"],
        "From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@host> run-parts\nContent-Type: text/plain; charset=UTF-8\n\nhello from cron\n.\nafter the dot\n",
    );
    ok(&out);
    let dumps = sink.dumps(1);
    assert_eq!(dump_recipients(&dumps[0]), ["root@example.test"]);
    assert_cleaned(&dumps[0], "root@example.test");
    let h = headers_of(&dumps[0]);
    assert_eq!(header(&h, "To"), ["root@example.test"]);
    // -i: the lone dot did not end the message
    assert!(message_of(&dumps[0]).contains("after the dot"));
    let log = mtad.wait_log("pickup", 1, Duration::from_secs(5));
    assert!(log.contains("uid=0"), "{log}");
    assert!(log.contains(": uid=0 from=<root>"), "{log}");
}

#[test]
fn cronie_argv_and_the_lone_dot_without_i() {
    let sink = Sink::start(&[]);
    let mtad = start(&sink, "");
    ok(&sendmail(
        &mtad,
        &["-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t"],
        "To: root\nSubject: cronie\n\nbody\n",
    ));
    let dumps = sink.dumps(1);
    assert_eq!(dump_recipients(&dumps[0]), ["root@example.test"]);
    assert_cleaned(&dumps[0], "CronDaemon <root@example.test>");
    // logwatch's argv: -t alone, so a lone dot ends the message
    ok(&sendmail(
        &mtad,
        &["-t"],
        "To: admin@example.org\nBcc: secret@example.org\nSubject: logwatch\n\nkept\n.\ndropped\n",
    ));
    let dumps = sink.dumps(2);
    let d = dumps.iter().find(|d| d.contains("logwatch")).unwrap();
    let mut r = dump_recipients(d);
    r.sort();
    assert_eq!(r, ["admin@example.org", "secret@example.org"]);
    assert_cleaned(d, "root@example.test");
    assert!(message_of(d).contains("kept") && !message_of(d).contains("dropped"));
}

#[test]
fn mdadm_and_mailutils_argv() {
    let sink = Sink::start(&[]);
    let mtad = start(&sink, "");
    ok(&sendmail(
        &mtad,
        &["-t", "-f", "mdadm@example.test"],
        "From: mdadm monitoring <mdadm@example.test>\nTo: root\nSubject: Fail event on /dev/md0\n\nA Fail event\n",
    ));
    ok(&sendmail(
        &mtad,
        &["-oi", "-f", "backup", "-t"],
        "To: ops@example.org\nSubject: mailutils\n\nhi\n",
    ));
    let dumps = sink.dumps(2);
    let md = dumps.iter().find(|d| d.contains("Fail event")).unwrap();
    assert!(md.contains("X-Mail-From: mdadm@example.test") || md.contains("mdadm@example.test"));
    assert_cleaned(md, "mdadm@example.test");
    let mu = dumps.iter().find(|d| d.contains("mailutils")).unwrap();
    // a bare -f sender is qualified with the origin, in the envelope and in From:
    assert_cleaned(mu, "backup@example.test");
}

#[test]
fn bsd_mailx_and_s_nail() {
    let mailx = common::require_tool("bsd-mailx");
    let snail = common::require_tool("s-nail");
    let sink = Sink::start(&[]);
    let mtad = start(&sink, "");
    let wrap = wrapper(&mtad);
    let rc = mtad.dir.path().join("mailrc");
    std::fs::write(&rc, format!("set sendmail={}\n", wrap.display())).unwrap();
    let out = run_with_stdin(
        Command::new(&mailx)
            .env("MAILRC", &rc)
            .args(["-n", "-s", "hi from bsd-mailx", "root"]),
        "x\n",
    );
    ok(&out);
    let out = run_with_stdin(
        Command::new(&snail).args([
            "-:/",
            "-S",
            &format!("mta={}", wrap.display()),
            "-s",
            "hi from s-nail",
            "root",
        ]),
        "x\n",
    );
    ok(&out);
    let dumps = sink.dumps(2);
    for subject in ["hi from bsd-mailx", "hi from s-nail"] {
        let d = dumps
            .iter()
            .find(|d| d.contains(subject))
            .unwrap_or_else(|| panic!("{subject} not delivered: {dumps:?}"));
        assert_eq!(dump_recipients(d), ["root@example.test"], "{d}");
        assert_cleaned(d, "root@example.test");
    }
    let argv = argv_log(&mtad);
    assert!(argv.contains("-i -t"), "bsd-mailx's argv: {argv}");
    assert!(argv.contains("-i -- root"), "s-nail's argv: {argv}");
}

#[test]
fn php_mail() {
    let php = common::require_tool("php");
    let sink = Sink::start(&[]);
    let mtad = start(&sink, "");
    let path = format!("{SENDMAIL} -C {} -t -i", mtad.config.display());
    let out = Command::new(&php)
        .arg("-d")
        .arg(format!("sendmail_path={path}"))
        .arg("-r")
        .arg(r#"exit(mail("user@example.org", "from php", "body\n.\nmore", "Bcc: hidden@example.org", "-fapp@example.test") ? 0 : 1);"#)
        .output()
        .unwrap();
    ok(&out);
    let dumps = sink.dumps(1);
    let mut r = dump_recipients(&dumps[0]);
    r.sort();
    assert_eq!(r, ["hidden@example.org", "user@example.org"]);
    assert_cleaned(&dumps[0], "app@example.test");
    assert!(
        message_of(&dumps[0]).contains("more"),
        "-i keeps the dot line"
    );
}

#[test]
fn stopped_daemon_then_start() {
    let sink = Sink::start(&[]);
    let mut mtad = start(&sink, "");
    mtad.stop();
    ok(&sendmail(
        &mtad,
        &["-i", "--", "root"],
        "Subject: while stopped\n\nx\n",
    ));
    assert_eq!(sink.dump_count(), 0);
    mtad.restart();
    let dumps = sink.dumps(1);
    assert!(dumps[0].contains("while stopped"));
    assert_cleaned(&dumps[0], "root@example.test");
}

/// kill -9 at every moment around the pickup: each message is queued exactly once,
/// then delivered once. (The kills happen while delivery is off: a kill between a
/// remote's 250 and our record of it makes any MTA send again, Postfix too; that
/// window is the scheduler's, not the pickup's.)
#[test]
fn kill9_around_pickup_delivers_once() {
    let sink = Sink::start(&[]);
    let mut mtad = start(&sink, "");
    let live = std::fs::read_to_string(&mtad.config).unwrap();
    std::fs::write(
        &mtad.config,
        live.replace("queue-only #false", "queue-only #true"),
    )
    .unwrap();
    mtad.stop();
    mtad.restart();
    const N: usize = 16;
    for i in 0..N {
        ok(&sendmail(
            &mtad,
            &["-i", "root"],
            &format!("Subject: kill9 message {i:02}\n\nx\n"),
        ));
        // a different moment each time: before, during and after the pickup
        std::thread::sleep(Duration::from_millis((i as u64 * 3) % 20));
        mtad.kill9();
        mtad.restart();
    }
    // everything picked up: each message queued once, the maildrop empty
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let subjects = loop {
        let subjects: Vec<String> = mtad
            .queued()
            .iter()
            .filter_map(|(_, body)| {
                String::from_utf8_lossy(body)
                    .lines()
                    .find_map(|l| l.strip_prefix("Subject: ").map(str::to_owned))
            })
            .collect();
        if subjects.len() >= N || std::time::Instant::now() > deadline {
            break subjects;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for i in 0..N {
        let subject = format!("kill9 message {i:02}");
        let n = subjects.iter().filter(|s| **s == subject).count();
        assert_eq!(n, 1, "message {i} queued {n} times: {subjects:?}");
    }
    assert_eq!(subjects.len(), N);
    let log = mtad.log();
    eprintln!(
        "kills: {N}; pickups cut short, finished at the next start: {}, undone: {}",
        log.matches("already queued; removing the file").count(),
        log.matches("not queued before the stop").count()
    );
    let left = std::fs::read_dir(mtad.dir.path().join("maildrop"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "the maildrop is empty");
    // and delivered once each
    mtad.stop();
    std::fs::write(&mtad.config, live).unwrap();
    mtad.restart();
    let dumps = sink.dumps_within(N, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(sink.dump_count(), N, "{dumps:?}");
}

fn as_nobody(mtad: &Mtad, bin: &Path, args: &[&str]) -> Output {
    let setpriv = common::require_tool("setpriv");
    run_with_stdin(
        Command::new(setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin)
            .arg("-C")
            .arg(&mtad.config)
            .args(args),
        "Subject: from nobody\n\nx\n",
    )
}

/// The directory and config readable by nobody (a tempdir is 0700).
fn open_up(mtad: &Mtad) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(mtad.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&mtad.config, std::fs::Permissions::from_mode(0o644)).unwrap();
}

#[test]
fn who_may_submit_and_which_senders() {
    let sink = Sink::start(&[]);
    let mtad = start(
        &sink,
        r#"group "mail"
    authorized-users "root" "nobody"
    sender-logins "login-senders""#,
    );
    open_up(&mtad);
    // a setgid copy, as installed: group mail (the maildrop's group)
    let bin = mtad.dir.path().join("sendmail");
    std::fs::copy(SENDMAIL, &bin).unwrap();
    std::os::unix::fs::chown(&bin, Some(0), Some(8)).unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o2755)).unwrap();
    let meta = std::fs::metadata(mtad.dir.path().join("maildrop")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::mode(&meta) & 0o7777, 0o1730);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), 8);

    // a sender nobody may not claim
    let out = as_nobody(&mtad, &bin, &["-f", "root@example.test", "ops@example.org"]);
    assert_eq!(out.status.code(), Some(77), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("user nobody may not send as <root@example.test>"),
        "{err}"
    );
    // one it may: submitted, delivered, its uid recorded
    let out = as_nobody(
        &mtad,
        &bin,
        &["-f", "cron@apps.example.test", "ops@example.org"],
    );
    ok(&out);
    let dumps = sink.dumps(1);
    assert!(
        dumps[0].contains("X-Mail-From: cron@apps.example.test")
            || dumps[0].contains("cron@apps.example.test")
    );
    assert!(headers_of(&dumps[0]).contains("(mtad, from userid 65534)"));
    mtad.wait_log("uid=65534", 1, Duration::from_secs(5));

    // not in authorized-users
    let mut text = std::fs::read_to_string(&mtad.config).unwrap();
    text = text.replace(
        "authorized-users \"root\" \"nobody\"",
        "authorized-users \"root\"",
    );
    std::fs::write(&mtad.config, text).unwrap();
    let out = as_nobody(&mtad, &bin, &["ops@example.org"]);
    assert_eq!(out.status.code(), Some(77), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("user nobody is not allowed to submit mail"),
        "{err}"
    );
}

#[test]
fn usage_errors_and_verify() {
    let sink = Sink::start(&[]);
    let mtad = start(&sink, "");
    let out = sendmail(&mtad, &[], "Subject: x\n\n");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("recipient addresses must be given"));
    let out = sendmail(&mtad, &["-t"], "Subject: no recipients\n\n");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no recipient addresses found"));
    let out = sendmail(&mtad, &["-Z", "-i", "root"], "Subject: x\n\n");
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: -Z option ignored"));
    let out = Command::new(SENDMAIL)
        .args(["-C", "/nonexistent/mtad.kdl", "root"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let out = sendmail(&mtad, &["-bv", "root", "someone@example.org"], "");
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "<root@example.test>: deliverable via smtp:[127.0.0.1]:{}",
            sink.port()
        )),
        "{text}"
    );
    assert_eq!(sink.dumps(1).len(), 1, "only the -Z message was sent");
}

/// A pickup cut short (the file claimed for a queue id, then a crash): at the next
/// start the file is removed when its message is in the spool, and picked up again
/// when it is not; never both.
#[test]
fn a_claimed_file_is_finished_or_undone_at_start() {
    use mtad::queue::maildrop::{Dropped, encode};
    let mut sink = Sink::start(&[]);
    // nothing can be delivered: what is queued stays in the spool
    sink.stop();
    let mut mtad = start(&sink, "");
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    let reply = s.send_message(
        "a@example.test",
        &["b@example.org"],
        "Subject: queued\r\n\r\nx\r\n",
    );
    let queued_id = common::queue_id(&reply);
    drop(s);
    mtad.stop();
    let drop_dir = mtad.dir.path().join("maildrop");
    let file = |subject: &str| {
        encode(&Dropped {
            recipients: vec!["root".into()],
            message: format!("Subject: {subject}\n\nx\n").into_bytes(),
            ..Dropped::default()
        })
        .unwrap()
    };
    // claimed for the message that is in the spool: it was queued; just remove it
    std::fs::write(drop_dir.join(format!("a.1.0@{queued_id}")), file("queued")).unwrap();
    // claimed for an id the spool never had: pick it up again
    std::fs::write(drop_dir.join("b.1.0@00000000000000AB"), file("not yet")).unwrap();
    mtad.restart();
    // the pickup logs before it queues and removes the file: wait for both
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let subjects = loop {
        let subjects: Vec<String> = mtad
            .queued()
            .iter()
            .map(|(_, body)| {
                let text = String::from_utf8_lossy(body);
                text.lines()
                    .find_map(|l| l.strip_prefix("Subject: ").map(str::to_owned))
                    .unwrap_or_default()
            })
            .collect();
        let left = std::fs::read_dir(&drop_dir).unwrap().count();
        if (subjects.len() >= 2 && left == 0) || std::time::Instant::now() > deadline {
            break subjects;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut sorted = subjects.clone();
    sorted.sort();
    assert_eq!(sorted, ["not yet", "queued"], "{subjects:?}");
    assert_eq!(std::fs::read_dir(&drop_dir).unwrap().count(), 0);
}

/// Rules single local submissions out by their listener, hooks see who submitted.
/// [`LOCAL`] with a data hook that tags local submissions with their submitter
/// (`X-Submitted-By: root 0`) and a mail rule on the `sendmail` listener refusing the
/// sender `blocked@example.test`.
fn with_rules_for_sendmail(sink: &Sink, extra: &str) -> Mtad {
    let t = LOCAL
        .replace("{sink}", &sink.port().to_string())
        .replace("{extra}", extra)
        .replace(
            "stage \"rcpt\" {",
            "stage \"data\" {\n    hook \"data.rhai\"\n}\nstage \"mail\" {\n    reject 550 \"5.7.1\" \"no mail from local programs to there\" listener=\"sendmail\" sender=\"blocked@example.test\"\n}\nstage \"rcpt\" {",
        );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("data.rhai"),
        "fn data(ctx) {\n    if ctx.listener == \"sendmail\" {\n        ctx.add_header(\"X-Submitted-By\", ctx.local_user + \" \" + ctx.uid);\n    }\n    next()\n}\n",
    )
    .unwrap();
    let spool = dir.path().join("spool");
    Mtad::start_in(dir, spool, &t)
}

#[test]
fn rules_and_hooks_see_the_submitter() {
    let sink = Sink::start(&[]);
    let mtad = with_rules_for_sendmail(&sink, "");
    ok(&sendmail(&mtad, &["-i", "root"], "Subject: tagged\n\nx\n"));
    let dumps = sink.dumps(1);
    assert!(
        headers_of(&dumps[0]).contains("X-Submitted-By: root 0"),
        "{}",
        dumps[0]
    );
    // refused by a rule after sendmail exited 0: the sender gets a bounce (root here)
    ok(&sendmail(
        &mtad,
        &["-i", "-f", "blocked@example.test", "root"],
        "Subject: blocked\n\nx\n",
    ));
    mtad.wait_log(
        "maildrop: message refused by policy",
        1,
        Duration::from_secs(5),
    );
    let dumps = sink.dumps(2);
    let bounce = dumps
        .iter()
        .find(|d| d.contains("Undelivered Mail"))
        .unwrap();
    assert_eq!(dump_recipients(bounce), ["blocked@example.test"]);
    assert!(
        bounce.contains("no mail from local programs to there"),
        "{bounce}"
    );
}

/// The configuration snippets of docs/local-submission.md and docs/configuration.md
/// are valid.
#[test]
fn documented_configuration_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (doc, nth) in [
        ("docs/local-submission.md", 0),
        ("docs/configuration.md", 0),
    ] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        let blocks: Vec<&str> = text
            .split("```kdl\n")
            .skip(1)
            .map(|b| b.split("```").next().unwrap())
            .filter(|b| b.contains("local-submission {"))
            .collect();
        let snippet = blocks[nth];
        let mut config = format!(
            "server {{\n    hostname \"h.example.test\"\n    spool \"/tmp/x\"\n}}\nlisten \"mx\" address=\"127.0.0.1:2525\"\n{snippet}"
        );
        if !snippet.contains("table \"login-senders\"") {
            config.push_str("table \"login-senders\" {\n    \"root\" \"*\"\n}\n");
        }
        if let Err(e) = mtad::config::Config::parse("doc.kdl", &config) {
            panic!("{doc}: {e}\n{config}");
        }
    }
}

/// `sendmail -bs`, spoken to by swaks over a pipe (`--pipe`), as mail libraries do.
#[test]
fn smtp_on_stdin_with_swaks() {
    let swaks = common::require_tool("swaks");
    let sink = Sink::start(&[]);
    let mtad = start(&sink, "");
    let out = Command::new(swaks)
        .arg("--pipe")
        .arg(format!("{SENDMAIL} -C {} -bs", mtad.config.display()))
        .args([
            "--from",
            "app@example.test",
            "--to",
            "root,other@example.org",
        ])
        .args([
            "--header",
            "Subject: over -bs",
            "--body",
            "line one\n.dotted\n",
        ])
        .output()
        .unwrap();
    ok(&out);
    let talk = String::from_utf8_lossy(&out.stdout);
    assert!(talk.contains("250 2.0.0 Ok: queued"), "{talk}");
    let dumps = sink.dumps(1);
    let mut r = dump_recipients(&dumps[0]);
    r.sort();
    assert_eq!(r, ["other@example.org", "root@example.test"]);
    assert!(
        dumps[0].contains("X-Mail-Args: <app@example.test>"),
        "{}",
        dumps[0]
    );
    assert!(
        message_of(&dumps[0]).contains("\n.dotted\n"),
        "{}",
        dumps[0]
    );
    assert!(headers_of(&dumps[0]).contains("(mtad, from userid 0)"));
}

/// The names `mailq` and `newaliases` (argv[0]) and `-bp`/`-bi`: the maildrop's
/// messages are listed while mtad is down; newaliases makes a running mtad reload.
#[test]
fn mailq_and_newaliases_by_name() {
    let sink = Sink::start(&[]);
    let mut mtad = start(&sink, "");
    let mailq = mtad.dir.path().join("mailq");
    let newaliases = mtad.dir.path().join("newaliases");
    std::os::unix::fs::symlink(SENDMAIL, &mailq).unwrap();
    std::os::unix::fs::symlink(SENDMAIL, &newaliases).unwrap();
    let config = mtad.config.clone();
    let run = |bin: &Path| Command::new(bin).arg("-C").arg(&config).output().unwrap();
    mtad.stop();
    ok(&sendmail(
        &mtad,
        &["-i", "someone@example.org"],
        "Subject: waiting\n\nx\n",
    ));
    let out = run(&mailq);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("root@example.test") || text.contains("root"),
        "{text}"
    );
    assert!(text.contains("someone@example.org"), "{text}");
    assert!(text.contains("-- 0 Kbytes in 1 Request."), "{text}");
    let same = sendmail(&mtad, &["-bp"], "");
    assert_eq!(same.stdout, out.stdout);
    // newaliases: silent on success, as Postfix's; with mtad down, nothing to reload
    let out = run(&newaliases);
    ok(&out);
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    mtad.restart();
    sink.dumps(1);
    let reloads = mtad.log().matches("reload").count();
    let out = run(&newaliases);
    ok(&out);
    assert!(
        mtad.log().matches("reload").count() > reloads,
        "{}",
        mtad.log()
    );
    // delivered: the queue is empty
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&run(&mailq).stdout).into_owned();
        if text.contains("Mail queue is empty") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// logwatch `--output mail`: its report, piped to its `mailer` (`sendmail -t`), reaches
/// the sink cleaned up. logwatch reads its mailer from /etc/logwatch/conf, so that
/// directory is replaced in a private mount namespace (the host's stays untouched).
#[test]
fn logwatch_output_mail() {
    let logwatch = common::require_tool("logwatch");
    let unshare = common::require_tool("unshare");
    let sink = Sink::start(&[]);
    let mtad = start(&sink, "");
    let wrap = wrapper(&mtad);
    let dir = mtad.dir.path();
    std::fs::create_dir_all(dir.join("logwatch/conf")).unwrap();
    std::fs::create_dir_all(dir.join("logwatch/logs")).unwrap();
    std::fs::write(
        dir.join("logwatch/conf/logwatch.conf"),
        format!("mailer = \"{} -t\"\n", wrap.display()),
    )
    .unwrap();
    std::fs::write(
        dir.join("logwatch/logs/mail.log"),
        "Dec  5 05:55:53 host postfix/pickup[23824]: 09F8B98E102: uid=0 from=<root>\n",
    )
    .unwrap();
    let script = format!(
        "mount --bind {conf} /etc/logwatch/conf && exec {logwatch} --service postfix --logdir {logs} --range all --output mail --mailto root --detail High",
        conf = dir.join("logwatch/conf").display(),
        logs = dir.join("logwatch/logs").display(),
        logwatch = logwatch.display(),
    );
    let out = Command::new(unshare)
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    ok(&out);
    assert!(argv_log(&mtad).contains("-t"), "{}", argv_log(&mtad));
    let dumps = sink.dumps(1);
    assert_eq!(dump_recipients(&dumps[0]), ["root@example.test"]);
    assert!(
        headers_of(&dumps[0]).contains("Subject: Logwatch for"),
        "{}",
        dumps[0]
    );
    assert_cleaned(&dumps[0], "root@example.test");
}

/// `mtactl test-policy --local USER` shows what the pickup does with the same
/// submission: cleanup's edits, the stages on the `sendmail` listener (a hook seeing
/// the submitter, a rule refusing a sender) and the headers as queued, which are the
/// headers delivered after the real `sendmail` and pickup (the times and ids aside);
/// a user the policy does not allow is refused before any stage, as `sendmail` refuses.
#[test]
fn test_policy_local_shows_what_the_pickup_does() {
    let sink = Sink::start(&[]);
    let mtad = with_rules_for_sendmail(
        &sink,
        "authorized-users \"root\"\n    sender-logins \"login-senders\"",
    );
    let message = "To: root, ops@example.org\nBcc: hidden@example.org\nSubject: agree\n\nbody\n";
    let eml = mtad.dir.path().join("m.eml");
    std::fs::write(&eml, message).unwrap();

    // the real thing: sendmail -t, the pickup, delivery
    ok(&sendmail(&mtad, &["-t", "-i"], message));
    let dumps = sink.dumps(1);
    let delivered = headers_of(&dumps[0]);

    let mtactl = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_mtactl"))
            .arg("test-policy")
            .arg("--config")
            .arg(&mtad.config)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, report) = mtactl(&[
        "--local",
        "root",
        "--extract",
        "--message",
        eml.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{report}");
    for edit in [
        "cleanup                          edit     qualified To: root, ops@example.org → root@example.test, ops@example.org",
        "cleanup                          edit     removed Bcc:",
        "cleanup                          edit     added Date: ",
        "cleanup                          edit     added From: root <root@example.test>",
        "rcpt <hidden@example.org>        accept",
    ] {
        assert!(report.contains(edit), "{edit:?} in\n{report}");
    }
    // the headers as queued are the headers delivered, times and ids aside
    let varying = |h: &str| {
        h.starts_with("Received:") || h.starts_with("Date:") || h.starts_with("Message-Id:")
    };
    let queued: Vec<&str> = report
        .split_once("headers as queued:\n")
        .unwrap()
        .1
        .lines()
        .map_while(|l| l.strip_prefix("    "))
        .filter(|h| !varying(h))
        .collect();
    let delivered: Vec<String> = delivered
        .replace("\n\t", "\t")
        .replace("\n ", " ")
        .lines()
        .filter(|h| !varying(h))
        .map(str::to_owned)
        .collect();
    assert_eq!(queued, delivered, "{report}");
    assert!(queued.contains(&"X-Submitted-By: root 0"), "{report}");

    // a rule on the sendmail listener refuses this sender: at mail, with its reply
    let (code, report) = mtactl(&[
        "--local",
        "root",
        "--from",
        "blocked@example.test",
        "--rcpt",
        "root",
    ]);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report.contains("550 5.7.1 no mail from local programs to there"),
        "{report}"
    );
    assert!(report.contains("mtad.kdl:"), "{report}");

    // nobody may not submit: refused before any stage, in sendmail's words
    let (code, report) = mtactl(&["--local", "nobody", "--rcpt", "root"]);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report.contains("submit")
            && report.contains("sendmail: user nobody is not allowed to submit mail"),
        "{report}"
    );
    assert!(report.contains("outcome: refused"), "{report}");

    // the same as a suite
    let suite = mtad.dir.path().join("local.kdl");
    std::fs::write(
        &suite,
        r#"
case "cron's mail is cleaned up and tagged" {
    local "root" extract=#true
    message "To: root\nSubject: cron\n\nx\n"
    cleanup "added Date:" "qualified To: root"
    header "+ X-Submitted-By: root 0"
    outcome "queued"
}
case "nobody may not submit" {
    local "nobody"
    rcpt "root"
    expect "submit" "reject" reply="sendmail: user nobody" rule="local-submission"
    outcome "refused"
}
case "a cleanup that cannot be" {
    local "root" extract=#true
    message "Subject: no recipients\n\nx\n"
    expect "submit" "reject" rule="cleanup"
}
case "a client node in a local case" {
    local "root"
    client "192.0.2.1"
    rcpt "root"
}
"#,
    )
    .unwrap();
    let (code, out) = mtactl(&[suite.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{out}");
    let bad = std::fs::read_to_string(&suite).unwrap();
    let cut = bad.find("case \"a client node").unwrap();
    std::fs::write(&suite, &bad[..cut]).unwrap();
    let (code, out) = mtactl(&[suite.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("3 passed"), "{out}");
}
