//! The seed examples, end to end: each example directory is copied as it is, with only
//! its listen port, spool and Maildir base moved into a temporary directory and its
//! network pointed at loopback (dnsmasq answers for the example's domains, smtp-sink
//! stands in for the next hops). swaks sends; the mail must arrive at the right hop.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::peers::{Aio, Dnsmasq, FilterPeer, Pki, Sink, dump_recipients};
use common::*;

struct Example {
    mtad: Mtad,
    root: PathBuf,
}

/// Copies `examples/NAME` (and `policies/`) into a temporary directory, applies `edits`
/// to its files (file name, from, to), points it at `dns` with `smtp-port`, and starts it.
fn start_example(
    name: &str,
    edits: &[(&str, &str, &str)],
    dns: SocketAddr,
    smtp_port: u16,
) -> Example {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("examples").join(name);
    copy_dir(&repo.join("examples").join(name), &root);
    copy_dir(&repo.join("policies"), &dir.path().join("policies"));
    for (file, from, to) in edits {
        let path = root.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(&path, text.replace(from, to)).unwrap();
    }
    let config = root.join("mtad.kdl");
    let mut text = std::fs::read_to_string(&config).unwrap();
    let port = free_port();
    let spool = dir.path().join("spool");
    // the listener and the /tmp paths
    let listen = text
        .lines()
        .find(|l| l.starts_with("listen "))
        .unwrap()
        .to_owned();
    let addr_start = listen.find("address=\"").unwrap() + 9;
    let addr_end = addr_start + listen[addr_start..].find('"').unwrap();
    let new_listen = format!(
        "{}127.0.0.1:{port}{}",
        &listen[..addr_start],
        &listen[addr_end..]
    );
    text = text.replace(&listen, &new_listen);
    let spool_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("spool "))
        .unwrap()
        .to_owned();
    text = text.replace(&spool_line, &format!("    spool \"{}\"", spool.display()));
    if let Some(line) = text
        .lines()
        .find(|l| l.trim_start().starts_with("maildrop "))
    {
        let line = line.to_owned();
        text = text.replace(
            &line,
            &format!("    maildrop \"{}\"", dir.path().join("maildrop").display()),
        );
    }
    if let Some(base) = text
        .lines()
        .find(|l| l.trim_start().starts_with("local-base "))
    {
        let base = base.to_owned();
        text = text.replace(
            &base,
            &format!("    local-base \"{}\"", dir.path().join("mail").display()),
        );
    }
    let extra = format!(
        "    dns-server \"{dns}\"\n    smtp-port {smtp_port}\n    backoff-min \"1s\"\n    connect-timeout \"2s\"\n"
    );
    if text.contains("delivery {") {
        text = text.replacen("delivery {\n", &format!("delivery {{\n{extra}"), 1);
    } else {
        text.push_str(&format!("\ndelivery {{\n{extra}}}\n"));
    }
    std::fs::write(&config, text).unwrap();
    let mtad = Mtad::start_file(dir, config, spool, port);
    Example { mtad, root }
}

fn send(mtad: &Mtad, from: &str, to: &str) {
    let out = swaks(
        mtad.port,
        &["--from", from, "--to", to, "--body", "seed test\n"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `echo x | mail -s SUBJECT RCPT` with bsd-mailx, its sendmail being ours with the
/// example's configuration, as a local program on the example's host would run it.
fn mail_s(ex: &Example, subject: &str, rcpt: &str) {
    let mailx = require_tool("bsd-mailx");
    let wrapper = sendmail_wrapper(ex.mtad.dir.path(), &ex.mtad.config);
    let rc = ex.mtad.dir.path().join("mailrc");
    std::fs::write(&rc, format!("set sendmail={}\n", wrapper.display())).unwrap();
    let mut child = std::process::Command::new(mailx)
        .env("MAILRC", &rc)
        .args(["-n", "-s", subject, rcpt])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(b"x\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mail -s: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The header lines of a smtp-sink dump's message (after smtp-sink's own `X-` lines).
fn dump_header<'a>(dump: &'a str, name: &str) -> Option<&'a str> {
    dump.lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// smtp-sink on 127.0.0.N:port.
fn sink_on(n: u8, port: u16) -> Sink {
    Sink::start_at(SocketAddr::from(([127, 0, 0, n], port)), &[])
}

#[test]
fn seed_001_mail_hub_routes_by_the_transport_file() {
    let port = free_port();
    let primary = sink_on(2, port); // the seed's [192.168.1.100]
    let mailtrans = sink_on(3, port); // [mailtrans.example.local]
    let dns = Dnsmasq::start(&[
        "--local=/local/",
        "--host-record=mailtrans.example.local,127.0.0.3",
    ]);
    let ex = start_example(
        "mail-hub",
        &[("transport", "192.168.1.100", "127.0.0.2")],
        dns.addr,
        port,
    );
    send(&ex.mtad, "someone@outside.test", "user@example.local");
    send(&ex.mtad, "someone@outside.test", "user@sub.example.local");
    assert_eq!(
        dump_recipients(&primary.dumps(1)[0]),
        ["user@example.local"]
    );
    assert_eq!(
        dump_recipients(&mailtrans.dumps(1)[0]),
        ["user@sub.example.local"]
    );
    let _ = ex.root;
}

#[test]
fn seed_004_null_client_forwards_root_to_the_external_mailbox() {
    let port = free_port();
    let mx = sink_on(4, port);
    let dns = Dnsmasq::start(&[
        "--local=/com/",
        "--local=/jp/",
        "--mx-host=example.com,mx.example.com,10",
        "--host-record=mx.example.com,127.0.0.4",
    ]);
    let ex = start_example("null-client", &[], dns.addr, port);
    // root of this host: the aliases forward it, bare `root` (origin example.jp) too
    send(&ex.mtad, "cron@example.jp", "root@localhost");
    let dumps = mx.dumps(1);
    assert_eq!(dump_recipients(&dumps[0]), ["admin@example.com"]);
    assert!(
        dumps[0].contains("X-Mail-Args: <cron@example.jp>"),
        "{}",
        dumps[0]
    );
    send(&ex.mtad, "cron", "root");
    let dumps = mx.dumps(2);
    assert_eq!(dump_recipients(&dumps[1]), ["admin@example.com"]);
    assert!(
        ex.mtad
            .log()
            .contains("to=<admin@example.com>, orig_to=<root@example.jp>"),
        "{}",
        ex.mtad.log()
    );
    // a local program's `echo x | mail -s hi root`: cleaned up, forwarded, signed
    mail_s(&ex, "hi", "root");
    let dumps = mx.dumps(3);
    let d = dumps
        .iter()
        .find(|d| d.contains("Subject: hi"))
        .expect("mail -s delivered");
    assert_eq!(dump_recipients(d), ["admin@example.com"]);
    assert!(d.contains("X-Mail-Args: <root@example.jp>"), "{d}");
    assert!(dump_header(d, "Date").is_some(), "{d}");
    assert!(
        dump_header(d, "Message-Id").is_some_and(|m| m.ends_with("@example.jp>")),
        "{d}"
    );
    assert!(
        dump_header(d, "From").is_some_and(|f| f.contains("<root@example.jp>")),
        "{d}"
    );
    assert!(
        dump_header(d, "DKIM-Signature").is_some_and(|s| s.contains("d=example.jp")),
        "{d}"
    );
    // mail for localhost stays here, in a Maildir
    send(&ex.mtad, "cron@example.jp", "someone@localhost");
    let maildir = ex.mtad.dir.path().join("mail");
    wait_for_maildir(&maildir.join("someone").join("new"));
}

/// Seed 000's trap, avoided: root's mail leaves for the main domain's MX, the
/// subdomain's users get Maildirs.
#[test]
fn seed_000_subdomain_server_forwards_root_and_keeps_local_mail() {
    let port = free_port();
    let main = sink_on(5, port);
    let dns = Dnsmasq::start(&[
        "--local=/jp/",
        "--mx-host=example1155.jp,mail.example1155.jp,10",
        "--host-record=mail.example1155.jp,127.0.0.5",
    ]);
    let ex = start_example("subdomain-server", &[], dns.addr, port);
    send(
        &ex.mtad,
        "cron@subml.example1155.jp",
        "root@subml.example1155.jp",
    );
    assert_eq!(
        dump_recipients(&main.dumps(1)[0]),
        ["hogeuser@example1155.jp"]
    );
    let log = ex.mtad.log();
    assert!(
        log.contains("to=<hogeuser@example1155.jp>, orig_to=<root@subml.example1155.jp>"),
        "{log}"
    );
    send(
        &ex.mtad,
        "someone@example.test",
        "tanaka@subml.example1155.jp",
    );
    let new = ex.mtad.dir.path().join("mail").join("tanaka").join("new");
    let file = wait_for_maildir(&new);
    let text = std::fs::read_to_string(file).unwrap();
    assert!(
        text.starts_with("Return-Path: <someone@example.test>\n"),
        "{text}"
    );
    assert!(
        text.contains("Delivered-To: tanaka@subml.example1155.jp\n"),
        "{text}"
    );
    assert!(text.contains("seed test"), "{text}");
    // a local program's `mail -s` to root leaves for the main server too
    mail_s(&ex, "disk report", "root");
    let dumps = main.dumps(2);
    let d = dumps
        .iter()
        .find(|d| d.contains("Subject: disk report"))
        .unwrap();
    assert_eq!(dump_recipients(d), ["hogeuser@example1155.jp"]);
    assert!(
        dump_header(d, "From").is_some_and(|f| f.contains("<root@subml.example1155.jp>")),
        "{d}"
    );
}

fn wait_for_maildir(new: &Path) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut entries) = std::fs::read_dir(new)
            && let Some(Ok(e)) = entries.next()
        {
            return e.path();
        }
        assert!(
            Instant::now() < deadline,
            "nothing arrived in {}",
            new.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Seed 003: everything goes to the relayhost on its submission port, over STARTTLS,
/// authenticated from the seed's `relay_password` file; with the relayhost down, the
/// fallback relay (with its own line in that file) takes the mail.
#[test]
fn seed_003_upstream_relay_with_starttls_auth_and_a_fallback() {
    let pki = Pki::new();
    let auth = ["--require-starttls", "--auth", "account:password"];
    let upstream = pki.aio(&auth);
    let fallback = pki.aio(&auth);
    let (up, fb) = (upstream.addr.port(), fallback.addr.port());
    let dns = Dnsmasq::start(&[
        "--local=/tld/",
        "--host-record=A.domain.tld,127.0.0.1",
        "--host-record=smtp.another-domain.tld,127.0.0.1",
    ]);
    let (a, a_test) = ("A.domain.tld:587", format!("A.domain.tld:{up}"));
    let (b, b_test) = (
        "smtp.another-domain.tld:587",
        format!("smtp.another-domain.tld:{fb}"),
    );
    let ex = start_example(
        "upstream-relay",
        &[
            ("mtad.kdl", a, &a_test),
            ("mtad.kdl", b, &b_test),
            ("relay_password", a, &a_test),
            ("relay_password", b, &b_test),
        ],
        dns.addr,
        25,
    );
    send(&ex.mtad, "app@relay.domain.tld", "someone@example.com");
    let (env, eml) = &upstream.messages(1)[0];
    assert_eq!(
        env.lines().collect::<Vec<_>>()[..2],
        ["TLS yes", "AUTH account"],
        "{env}"
    );
    assert!(env.contains("RCPT <someone@example.com>"), "{env}");
    assert!(String::from_utf8_lossy(eml).contains("seed test"));
    // a local program's `mail -s` goes the same way: to the relayhost, authenticated
    mail_s(&ex, "from this host", "ops@example.com");
    let (env, eml) = &upstream.messages(2)[1];
    assert!(env.starts_with("TLS yes\nAUTH account\n"), "{env}");
    assert!(env.contains("RCPT <ops@example.com>"), "{env}");
    let eml = String::from_utf8_lossy(eml);
    assert!(eml.contains("Subject: from this host"), "{eml}");
    assert!(eml.contains("From: root <root@relay.domain.tld>"), "{eml}");

    // The relayhost goes away: the fallback relay gets the next message, over TLS with
    // its own account.
    drop(upstream);
    send(&ex.mtad, "app@relay.domain.tld", "other@example.net");
    let (env, _) = &fallback.messages(1)[0];
    assert!(env.starts_with("TLS yes\nAUTH account\n"), "{env}");
    assert!(env.contains("RCPT <other@example.net>"), "{env}");
    // (the peer has the message a moment before mtad logs the attempt)
    ex.mtad.wait_log(
        "to=<other@example.net>, relay=smtp.another-domain.tld[127.0.0.1]",
        1,
        Duration::from_secs(5),
    );
}

/// Seed 002's content parts: the mail goes through the filter (a real one standing in
/// for amavis: it tags the message and injects it again on the re-injection port), is
/// stripped of every Received: header on both passes, and lands in the Maildir once.
/// Seed 002's example on free ports: (example, SMTPS port, re-injection port, the
/// port amavis is expected on).
fn virtual_hosting(dns: &Dnsmasq) -> (Example, u16, u16, u16) {
    let (smtps, reinject, amavis) = (free_port(), free_port(), free_port());
    let ex = start_example(
        "virtual-hosting",
        &[
            ("mtad.kdl", "127.0.0.1:4659", &format!("127.0.0.1:{smtps}")),
            (
                "mtad.kdl",
                "127.0.0.1:10025",
                &format!("127.0.0.1:{reinject}"),
            ),
            (
                "mtad.kdl",
                "smtp:[127.0.0.1]:10026",
                &format!("smtp:[127.0.0.1]:{amavis}"),
            ),
        ],
        dns.addr,
        25,
    );
    (ex, smtps, reinject, amavis)
}

#[test]
fn seed_002_content_filter_and_header_checks() {
    let dns = Dnsmasq::start(&["--local=/org/"]);
    let (ex, _, reinject, amavis_port) = virtual_hosting(&dns);
    let amavis = FilterPeer::start(amavis_port, reinject, &[]);
    let out = swaks(
        ex.mtad.port,
        &[
            "--from",
            "someone@elsewhere.test",
            "--to",
            "root@server-name.hoge.org",
            "--add-header",
            "Received: from pc12.lan (192.168.0.12) by gw.lan",
            "--header",
            "Subject: seed 002",
            "--body",
            "seed test\n",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // root -> hoge-owner (aliases), delivered locally after the filter
    let new = ex
        .mtad
        .dir
        .path()
        .join("mail")
        .join("hoge-owner")
        .join("new");
    let file = wait_for_maildir(&new);
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains("X-Filtered-By: test-filter\n"), "{text}");
    assert!(text.contains("Subject: [filtered] seed 002\n"), "{text}");
    assert!(!text.contains("Received:"), "{text}");
    assert!(text.contains("seed test"), "{text}");
    // what amavis got had its Received headers stripped already, and XFORWARD
    let (env, eml) = &amavis.messages(1)[0];
    assert!(env.contains("ADDR=127.0.0.1"), "{env}");
    assert!(!String::from_utf8_lossy(eml).contains("Received:"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(amavis.count(), 1);
    assert_eq!(std::fs::read_dir(&new).unwrap().count(), 1);
}

#[test]
fn seed_002_submission_over_starttls_and_smtps() {
    let dns = Dnsmasq::start(&["--local=/org/", "--local=/test/"]);
    let (ex, smtps, _, _) = virtual_hosting(&dns);
    let login = [
        "--auth-user",
        "user@hoge.org",
        "--auth-password",
        "change this password",
        "--from",
        "user@hoge.org",
        "--to",
        "friend@elsewhere.test",
    ];
    // port 25: STARTTLS, then AUTH (never before TLS: the example keeps the default)
    let mut args = vec!["--tls", "--auth", "PLAIN", "--header", "Subject: sub-25"];
    args.extend(login);
    let out = swaks(ex.mtad.port, &args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("235 2.7.0"), "{text}");
    assert!(text.contains("queued as"), "{text}");
    // SMTPS (465): TLS from the first byte, AUTH LOGIN
    let mut args = vec![
        "--tls-on-connect",
        "--auth",
        "LOGIN",
        "--header",
        "Subject: sub-465",
    ];
    args.extend(login);
    let out = swaks(smtps, &args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("235 2.7.0") && text.contains("queued as"),
        "{text}"
    );
    // a wrong password does not relay
    let out = swaks(
        smtps,
        &[
            "--tls-on-connect",
            "--auth",
            "PLAIN",
            "--auth-user",
            "user@hoge.org",
            "--auth-password",
            "guess",
            "--from",
            "user@hoge.org",
            "--to",
            "friend@elsewhere.test",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("535 5.7.8"));
    // both wait for amavis in the queue; the seed's header_checks strip every
    // Received: (mtad's own included), so the log is where the login shows
    assert_eq!(ex.mtad.queued().len(), 2);
    let log = ex
        .mtad
        .wait_log("(queue active)", 2, Duration::from_secs(3));
    let queued: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("(queue active)"))
        .collect();
    assert_eq!(queued.len(), 2, "{log}");
    for line in queued {
        assert!(
            line.contains("tls=true") && line.contains("auth=user@hoge.org"),
            "{line}"
        );
    }
}

/// Not a seed: `examples/production`, the production-style configuration (MX to an
/// LMTP mailbox server, submission on 587 and 465 with AUTH, a test suite gating
/// reloads), end to end with swaks, aiosmtpd (LMTP) and smtp-sink (the MX out there).
#[test]
fn production_example_relays_submits_and_reloads_behind_its_tests() {
    let smtp_port = free_port();
    let remote = sink_on(5, smtp_port);
    // bank.test publishes SPF and DMARC p=reject: mail in its name from elsewhere is
    // refused by the example's own data rule
    let dns = Dnsmasq::start(&[
        "--mx-host=elsewhere.test,mx.elsewhere.test,10",
        "--host-record=mx.elsewhere.test,127.0.0.5",
        &Dnsmasq::txt("bank.test", "v=spf1 ip4:192.0.2.0/24 -all"),
        &Dnsmasq::txt("_dmarc.bank.test", "v=DMARC1; p=reject"),
    ]);
    let lmtp = Aio::start(&["--lmtp"]);
    let (sub, smtps, metrics) = (free_port(), free_port(), free_port());
    let lmtp_hop = format!("lmtp:[127.0.0.1]:{}", lmtp.addr.port());
    let ex = start_example(
        "production",
        &[
            ("mtad.kdl", "0.0.0.0:587", &format!("127.0.0.1:{sub}")),
            ("mtad.kdl", "0.0.0.0:465", &format!("127.0.0.1:{smtps}")),
            ("mtad.kdl", "\"/run/mtad/control.sock\"", "\"control.sock\""),
            (
                "mtad.kdl",
                "127.0.0.1:9187",
                &format!("127.0.0.1:{metrics}"),
            ),
            // only 127.0.0.1 is an internal host: swaks from 127.0.0.9 is a stranger
            (
                "mtad.kdl",
                "\"127.0.0.0/8\" \"10.0.0.0/24\"",
                "\"127.0.0.1/32\"",
            ),
            ("mtad.kdl", "lmtp:[10.0.0.25]:24", &lmtp_hop),
            ("tests/production.kdl", "lmtp:[10.0.0.25]:24", &lmtp_hop),
            ("tests/production.kdl", "\"10.0.0.7\"", "\"127.0.0.1\""),
        ],
        dns.addr,
        smtp_port,
    );
    let stranger = |port: u16, args: &[&str]| {
        let mut all = vec!["--local-interface", "127.0.0.9"];
        all.extend_from_slice(args);
        let out = swaks(port, &all);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let alice = [
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice@example.net",
        "--auth-password",
        "change this password",
    ];
    // inbound: the MX hands mail for example.net to the mailbox server over LMTP
    let text = stranger(
        ex.mtad.port,
        &["--from", "someone@example.org", "--to", "alice@example.net"],
    );
    assert!(text.contains("queued as"), "{text}");
    let inbound = lmtp.messages(1);
    let inbound = String::from_utf8_lossy(&inbound[0].1);
    assert!(
        inbound.starts_with("Authentication-Results: mx.example.net;")
            && inbound.contains("spf=none")
            && inbound.contains("dmarc=none"),
        "checked, with the results on top: {inbound}"
    );
    // a forged bank.test sender: its DMARC p=reject is enforced at the end of DATA
    let text = stranger(
        ex.mtad.port,
        &["--from", "ceo@bank.test", "--to", "alice@example.net"],
    );
    assert!(
        text.contains("550 5.7.1 Message rejected by the DMARC policy"),
        "{text}"
    );
    // submission: STARTTLS, AUTH, then anywhere
    let mut args = vec![
        "--tls",
        "--from",
        "alice@example.net",
        "--to",
        "friend@elsewhere.test",
    ];
    args.extend(alice);
    let text = stranger(sub, &args);
    assert!(
        text.contains("235 2.7.0") && text.contains("queued as"),
        "{text}"
    );
    assert_eq!(
        dump_recipients(&remote.dumps_within(1, Duration::from_secs(10))[0]),
        ["friend@elsewhere.test"]
    );
    // not without logging in, nor as someone else (465: TLS from the first byte)
    let text = stranger(
        sub,
        &[
            "--tls",
            "--from",
            "alice@example.net",
            "--to",
            "friend@elsewhere.test",
        ],
    );
    assert!(text.contains("530 5.7.0"), "{text}");
    let mut args = vec![
        "--tls-on-connect",
        "--from",
        "bob@example.net",
        "--to",
        "friend@elsewhere.test",
    ];
    args.extend(alice);
    let text = stranger(smtps, &args);
    assert!(text.contains("553 5.7.1"), "{text}");

    // a change that breaks what tests/production.kdl requires is refused
    let config = ex.root.join("mtad.kdl");
    let text = std::fs::read_to_string(&config).unwrap();
    let broken = text.replace(
        "domains \"relay\" \"example.net\"",
        "domains \"relay\" \"example.org\"",
    );
    std::fs::write(&config, &broken).unwrap();
    let out = ex.mtad.mtactl(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("required test \"inbound mail for example.net"),
        "{stderr}"
    );
    std::fs::write(&config, &text).unwrap();
    let out = ex.mtad.mtactl(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stranger(
        ex.mtad.port,
        &["--from", "someone@example.org", "--to", "alice@example.net"],
    );
    assert!(text.contains("queued as"), "{text}");
    assert_eq!(lmtp.messages(2).len(), 2);
    // what runs: three listeners, and the metrics saw the refusals
    let out = ex.mtad.mtactl(&["status"]);
    let status = String::from_utf8_lossy(&out.stdout);
    for name in ["mx", "submission", "submissions"] {
        assert!(status.contains(name), "{status}");
    }
    let out = std::process::Command::new(require_tool("curl"))
        .args(["-sf", &format!("http://127.0.0.1:{metrics}/metrics")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("mtad_policy_refused_total{stage=\"mail\""),
        "{text}"
    );
    // the broken change never went live: mtactl refused it first, and told the
    // daemon, which counted it as it counts a refused SIGHUP
    assert!(text.contains("mtad_reloads_total 1\n"), "{text}");
    assert!(text.contains("mtad_reload_failures_total 1\n"), "{text}");
    assert!(ex.mtad.log().contains("by=\"mtactl\""), "{}", ex.mtad.log());
}

/// Seed 002's virtual domains from PostfixAdmin's tables (SQLite, as the example ships):
/// unknown and inactive addresses refused at RCPT, a mailbox's mail in its Maildir
/// after amavis. (A database that stops: tests/sql_tables.rs, on PostgreSQL and MariaDB.)
#[test]
fn seed_002_virtual_mailboxes_from_postfixadmin_tables() {
    let dns = Dnsmasq::start(&["--local=/org/", "--local=/com/"]);
    let (ex, _, reinject, amavis_port) = virtual_hosting(&dns);
    let _amavis = FilterPeer::start(amavis_port, reinject, &[]);
    let rcpt = |to: &str| {
        // from 127.0.0.9: not in the example's trusted networks
        let out = swaks(
            ex.mtad.port,
            &[
                "--local-interface",
                "127.0.0.9",
                "--from",
                "someone@elsewhere.test",
                "--to",
                to,
                "--header",
                &format!("Subject: to {to}"),
            ],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for unknown in ["nobody@hoge.org", "gone@hoge.org"] {
        let text = rcpt(unknown);
        assert!(
            text.contains("550 5.1.1") && text.contains("User unknown in virtual mailbox table"),
            "{text}"
        );
    }
    assert!(rcpt("user@closed.hoge.org").contains("554 5.7.1"));
    let text = rcpt("user+news@hoge.org");
    assert!(text.contains("queued as"), "{text}");
    // amavis, then the Maildir the mailbox table names: {local-base}/hoge.org/user/
    let new = ex.mtad.dir.path().join("mail/hoge.org/user/new");
    let file = wait_for_maildir(&new);
    let text = std::fs::read_to_string(file).unwrap();
    assert!(
        text.contains("Subject: [filtered] to user+news@hoge.org"),
        "{text}"
    );
    assert!(text.contains("Delivered-To: user+news@hoge.org"), "{text}");
}
