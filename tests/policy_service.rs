//! Policy delegation (`check-policy-service`, Postfix's SMTPD_POLICY_README) and DNS
//! lists (`reject-dnsbl`, `dnsbl=`) against the real programs on loopback: postgrey,
//! postfix-policyd-spf-python and dnsmasq from Debian, a recording policy server
//! (tests/peers/policy_recorder.py), a server that is down and one that hangs. A
//! missing program fails the test (./run-tests installs them).

mod common;

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::peers::{Dnsmasq, dnsmasq_on_53};
use common::{Mtad, free_port, require_tool, sample, scrape};

const HEAD: &str = r#"
server {
    hostname "mx.test.local"
    spool "{spool}"
}
listen "mx" address="127.0.0.1:{port}"
domains "local" "test.local"
"#;

/// [`HEAD`] with the metrics endpoint on 127.0.0.1:`port`.
fn head_with_metrics(port: u16) -> String {
    HEAD.replace(
        "    spool \"{spool}\"\n",
        &format!("    spool \"{{spool}}\"\n    metrics \"127.0.0.1:{port}\"\n"),
    )
}

/// `mtad_policy_service_total{service, result}` from the metrics endpoint on `port`.
fn asked(port: u16, service: &str, result: &str) -> f64 {
    sample(
        &scrape(port),
        &format!(r#"mtad_policy_service_total{{service="{service}",result="{result}"}}"#),
    )
}

/// A child process killed (by its PID) and reaped on drop.
struct Peer {
    child: Child,
    what: &'static str,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    fn alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{} exited: {status}", self.what);
        }
    }
}

/// tests/peers/policy_recorder.py answering `actions` in turn; its requests in `log`.
struct Recorder {
    _peer: Peer,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Recorder {
    fn start(actions: &[&str]) -> Recorder {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests.jsonl");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/policy_recorder.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(&log)
            .args(actions)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("recorder did not start: {line:?}"))
            .parse()
            .unwrap();
        Recorder {
            _peer: Peer {
                child,
                what: "policy recorder",
            },
            port,
            log,
            _dir: dir,
        }
    }

    fn requests(&self) -> Vec<serde_json::Map<String, serde_json::Value>> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn attr<'a>(r: &'a serde_json::Map<String, serde_json::Value>, name: &str) -> &'a str {
    r.get(name)
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("no {name} in {r:?}"))
}

fn uid_of(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().unwrap();
    assert!(out.status.success(), "no user {user}: install postgrey");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// postgrey on 127.0.0.1:port with `--delay=1` and a fresh database.
fn postgrey(port: u16, dbdir: &Path) -> Peer {
    postgrey_with_delay(port, dbdir, 1)
}

/// mtad asking the policy service defined by `props` (`address=...`) at each rcpt,
/// then accepting the local domain.
fn asking_at_rcpt(props: &str) -> Mtad {
    Mtad::start(&format!(
        r#"{HEAD}
policy-service "p" {props}
stage "rcpt" {{
    check-policy-service "p"
    accept rcpt-domain="local"
}}
"#
    ))
}

/// mtad asking the policy server on `port` at mail, at each rcpt and at data.
fn asking_at_mail_rcpt_and_data(port: u16) -> Mtad {
    Mtad::start(&format!(
        r#"{HEAD}
policy-service "rec" address="inet:127.0.0.1:{port}"
stage "mail" {{
    check-policy-service "rec"
}}
stage "rcpt" {{
    check-policy-service "rec"
    accept rcpt-domain="local"
}}
stage "data" {{
    check-policy-service "rec"
}}
"#
    ))
}

fn session(mtad: &Mtad, from: &str) -> common::Client {
    session_from("127.0.0.1", mtad, from)
}

/// A client at `source` (127.0.0.x) that said EHLO and MAIL FROM:<`from`>.
fn session_from(source: &str, mtad: &Mtad, from: &str) -> common::Client {
    let mut c = common::Client::connect_from(source, mtad.port);
    c.expect("220 ");
    c.cmd("EHLO client.test", "250");
    c.cmd(&format!("MAIL FROM:<{from}>"), "250 ");
    c
}

/// A zone dnsmasq forwards to a socket that never answers (kept open while the
/// socket lives): `--server=/slow.test/...`.
fn silent_zone() -> (UdpSocket, String) {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let arg = format!(
        "--server=/slow.test/127.0.0.1#{}",
        silent.local_addr().unwrap().port()
    );
    (silent, arg)
}

#[test]
fn postgrey_defers_the_first_attempt_and_accepts_the_retry() {
    let db = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut grey = postgrey(port, db.path());
    let mtad = asking_at_rcpt(&format!(r#"address="inet:127.0.0.1:{port}" timeout="10s""#));
    let mut c = session(&mtad, "alice@sender.test");
    let first = c.cmd("RCPT TO:<user@test.local>", "450 ");
    assert_eq!(
        first.trim_end(),
        "450 4.2.0 <user@test.local>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/test.local.html"
    );
    c.cmd("QUIT", "221");
    // postgrey's delay has a resolution of a second
    std::thread::sleep(Duration::from_millis(2200));
    grey.alive();
    let mut c = session(&mtad, "alice@sender.test");
    c.cmd("RCPT TO:<user@test.local>", "250 ");
    c.cmd("DATA", "354");
    c.send("Subject: grey\r\n\r\nhello\r\n.\r\n");
    c.expect("250 2.0.0 Ok: queued as ");
    let queued = mtad.queued();
    assert_eq!(queued.len(), 1);
    let body = String::from_utf8_lossy(&queued[0].1).to_string();
    // PREPEND: above our Received:, as Postfix puts it
    assert!(
        body.starts_with("X-Greylist: delayed "),
        "no X-Greylist on top: {body}"
    );
    assert!(body.contains("by postgrey-"), "{body}");
    let received = body.find("\r\nReceived: ").expect("Received");
    assert!(body.find("X-Greylist").unwrap() < received);
    // a later message of the same triplet: DUNNO, nothing added
    let mut c = session(&mtad, "alice@sender.test");
    c.cmd("RCPT TO:<user@test.local>", "250 ");
    c.cmd("DATA", "354");
    c.send("Subject: again\r\n\r\nhello\r\n.\r\n");
    c.expect("250 2.0.0 Ok: queued as ");
    // a new recipient is a new triplet: greylisted on the kept connection
    let mut c = session(&mtad, "alice@sender.test");
    c.cmd("RCPT TO:<other@test.local>", "450 4.2.0 <other@test.local>");
    grey.alive();
}

#[test]
fn requests_carry_postfix_attributes_and_one_instance_per_message() {
    let rec = Recorder::start(&["DUNNO"]);
    let mtad = asking_at_mail_rcpt_and_data(rec.port);
    let mut c = mtad.connect();
    c.expect("220 ");
    c.cmd("EHLO client.test", "250");
    c.send_message(
        "alice@sender.test",
        &["a@test.local", "b@test.local"],
        "Subject: x\r\n\r\nbody\r\n",
    );
    c.send_message(
        "alice@sender.test",
        &["a@test.local"],
        "Subject: y\r\n\r\nbody\r\n",
    );
    let requests = rec.requests();
    let states: Vec<&str> = requests.iter().map(|r| attr(r, "protocol_state")).collect();
    assert_eq!(
        states,
        [
            "MAIL",
            "RCPT",
            "RCPT",
            "END-OF-MESSAGE",
            "MAIL",
            "RCPT",
            "END-OF-MESSAGE"
        ]
    );
    let first = &requests[1];
    assert_eq!(attr(first, "request"), "smtpd_access_policy");
    assert_eq!(attr(first, "protocol_name"), "ESMTP");
    assert_eq!(attr(first, "client_address"), "127.0.0.1");
    assert_eq!(attr(first, "helo_name"), "client.test");
    assert_eq!(attr(first, "sender"), "alice@sender.test");
    assert_eq!(attr(first, "recipient"), "a@test.local");
    assert_eq!(attr(first, "recipient_count"), "0");
    assert_eq!(attr(&requests[3], "recipient_count"), "2");
    // one instance for the whole of a message, another for the next
    // none at MAIL (as Postfix); one for the rest of a message, another for the next
    let instances: Vec<&str> = requests.iter().map(|r| attr(r, "instance")).collect();
    assert_eq!((instances[0], instances[4]), ("", ""));
    assert!(!instances[1].is_empty());
    assert!(
        instances[1..4].iter().all(|i| *i == instances[1]),
        "{instances:?}"
    );
    assert!(
        instances[5..].iter().all(|i| *i == instances[5]),
        "{instances:?}"
    );
    assert_ne!(instances[1], instances[5]);
    // the connection is kept and reused
    let conns: Vec<i64> = requests
        .iter()
        .map(|r| r["_conn"].as_i64().unwrap())
        .collect();
    assert!(conns.iter().all(|c| *c == 1), "{conns:?}");
}

#[test]
fn actions_apply_with_access_semantics() {
    // REJECT text, OK (decides before the reject rule), DEFER_IF_PERMIT then accepted
    // → deferred, DEFER_IF_REJECT then relay denied → deferred, HOLD, an unknown
    // action → 451 4.3.5
    let rec = Recorder::start(&[
        "REJECT 5.7.0 go away",
        "OK",
        "DEFER_IF_PERMIT try later",
        "DEFER_IF_REJECT not sure",
        "HOLD",
        "REDIRECT x@y.test",
        "DUNNO",
    ]);
    let mtad = asking_at_rcpt(&format!(r#"address="inet:127.0.0.1:{}""#, rec.port));
    let mut c = session(&mtad, "a@sender.test");
    let r = c.cmd("RCPT TO:<u@test.local>", "554 ");
    assert_eq!(
        r.trim_end(),
        "554 5.7.0 <u@test.local>: Recipient address rejected: go away"
    );
    c.cmd("RCPT TO:<u@elsewhere.test>", "250 ");
    let r = c.cmd("RCPT TO:<u@test.local>", "450 ");
    assert_eq!(
        r.trim_end(),
        "450 4.7.1 <u@test.local>: Recipient address rejected: try later"
    );
    let r = c.cmd("RCPT TO:<u@elsewhere.test>", "450 ");
    assert_eq!(
        r.trim_end(),
        "450 4.7.1 <u@elsewhere.test>: Recipient address rejected: not sure"
    );
    c.cmd("RCPT TO:<held@test.local>", "250 ");
    c.cmd(
        "RCPT TO:<v@test.local>",
        "451 4.3.5 Server configuration error",
    );
    c.cmd("DATA", "354");
    c.send("Subject: x\r\n\r\nbody\r\n.\r\n");
    c.expect("250 2.0.0 Ok: queued as ");
    let queued = mtad.queued();
    assert_eq!(queued.len(), 1);
    assert!(queued[0].0.envelope.held, "HOLD did not hold");
    let log = mtad.log();
    assert!(log.contains("unsupported policy action"), "{log}");
}

#[test]
fn a_server_that_is_down_gets_the_default_action() {
    let port = free_port(); // nothing listens there
    let metrics = free_port();
    let mtad = Mtad::start(&format!(
        r#"{}
policy-service "down" address="inet:127.0.0.1:{port}"
policy-service "lenient" address="inet:127.0.0.1:{port}" default-action="DUNNO"
stage "rcpt" {{
    check-policy-service "down" rcpt="u@test.local"
    check-policy-service "lenient"
    accept rcpt-domain="local"
}}
"#,
        head_with_metrics(metrics)
    ));
    let mut c = session(&mtad, "a@sender.test");
    let r = c.cmd("RCPT TO:<u@test.local>", "451 ");
    assert_eq!(
        r.trim_end(),
        "451 4.3.5 <u@test.local>: Recipient address rejected: Server configuration problem"
    );
    c.cmd("RCPT TO:<v@test.local>", "250 ");
    let log = mtad.log();
    assert!(log.contains("cannot connect to inet:127.0.0.1"), "{log}");
    // counted, per service: the first RCPT asked "down" (its default decided), the
    // second "lenient"
    assert_eq!(asked(metrics, "down", "error"), 1.0);
    assert_eq!(asked(metrics, "lenient", "error"), 1.0);
}

#[test]
fn a_server_that_hangs_meets_the_deadline() {
    // accepts and never answers
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let metrics = free_port();
    let mtad = Mtad::start(&format!(
        r#"{}
policy-service "p" address="inet:127.0.0.1:{port}" timeout="1s"
stage "rcpt" {{
    check-policy-service "p"
    accept rcpt-domain="local"
}}
"#,
        head_with_metrics(metrics)
    ));
    let mut c = session(&mtad, "a@sender.test");
    let started = Instant::now();
    c.cmd(
        "RCPT TO:<u@test.local>",
        "451 4.3.5 <u@test.local>: Recipient address rejected: Server configuration problem",
    );
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    // the session goes on
    c.cmd("NOOP", "250");
    drop(silent);
    assert_eq!(asked(metrics, "p", "timeout"), 1.0);
}

#[test]
fn oversized_and_malformed_replies_fail_closed() {
    // answers a line of 10 000 bytes: too long, tried again, then the default action
    let rec = Recorder::start(&[&"x".repeat(10_000), "close", "OK"]);
    let mtad = asking_at_rcpt(&format!(
        r#"address="inet:127.0.0.1:{}" try-limit=2"#,
        rec.port
    ));
    let mut c = session(&mtad, "a@sender.test");
    c.cmd("RCPT TO:<u@test.local>", "451 4.3.5 <u@test.local>");
    // the next one: the third answer, on a fresh connection
    c.cmd("RCPT TO:<elsewhere@other.test>", "250 ");
}

// ---- postfix-policyd-spf-python ------------------------------------------------

#[test]
fn policyd_spf_rejects_a_fail_and_prepends_a_pass() {
    require_tool("unshare");
    require_tool("socat");
    let spf = Path::new("/usr/bin/policyd-spf");
    assert!(
        spf.is_file(),
        "policyd-spf is missing: apt-get install postfix-policyd-spf-python"
    );
    let (_dns, ns) = dnsmasq_on_53(&[
        "--txt-record=good.test,v=spf1 ip4:127.0.0.0/8 -all",
        "--txt-record=bad.test,v=spf1 ip4:198.51.100.0/24 -all",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {ns}\n")).unwrap();
    let conf = dir.path().join("policyd-spf.conf");
    std::fs::write(
        &conf,
        "debugLevel = 1\nTestOnly = 1\nHELO_reject = Fail\nMail_From_reject = Fail\n\
         PermError_reject = False\nTempError_Defer = False\nskip_addresses = ::1\nLookup_Time = 5\n",
    )
    .unwrap();
    let port = free_port();
    // policyd-spf reads /etc/resolv.conf: it runs in a mount namespace of its own
    // where that file names the test's dnsmasq; socat runs one per connection, as
    // Postfix's spawn(8) does
    let script = format!(
        "mount --bind {} /etc/resolv.conf && exec socat TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork EXEC:'/usr/bin/policyd-spf {}'",
        resolv.display(),
        conf.display()
    );
    let mut child = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::peers::wait_listening(
        format!("127.0.0.1:{port}").parse().unwrap(),
        &mut child,
        "socat/policyd-spf",
    );
    let _spf = Peer {
        child,
        what: "socat/policyd-spf",
    };
    let mtad = asking_at_rcpt(&format!(r#"address="inet:127.0.0.1:{port}" timeout="20s""#));
    let mut c = session(&mtad, "alice@bad.test");
    let r = c.cmd("RCPT TO:<user@test.local>", "550 ");
    assert!(
        r.starts_with(
            "550 5.7.23 <user@test.local>: Recipient address rejected: Message rejected due to: SPF fail - not authorized."
        ),
        "{r}"
    );
    c.cmd("QUIT", "221");
    let mut c = session(&mtad, "alice@good.test");
    c.cmd("RCPT TO:<user@test.local>", "250 ");
    c.cmd("DATA", "354");
    c.send("Subject: spf\r\n\r\nhello\r\n.\r\n");
    c.expect("250 2.0.0 Ok: queued as ");
    let queued = mtad.queued();
    let body = String::from_utf8_lossy(&queued[0].1).to_string();
    assert!(
        body.starts_with("Received-SPF: Pass (mailfrom) identity=mailfrom; client-ip=127.0.0.1;"),
        "{body}"
    );
}

// ---- DNS lists with dnsmasq ----------------------------------------------------

#[test]
fn dnsbl_refuses_a_listed_client_with_the_txt_and_passes_an_allowlisted_one() {
    // 127.0.0.2 is listed; 127.0.0.3 is listed and allowlisted; 127.0.0.4 is listed
    // with a code outside the filter; 127.0.0.1 is not listed
    let (_silent, slow) = silent_zone();
    let dns = Dnsmasq::start(&[
        "--host-record=2.0.0.127.bl.test,127.0.0.2",
        "--txt-record=2.0.0.127.bl.test,Listed in the test list: see http://bl.test/127.0.0.2",
        "--host-record=3.0.0.127.bl.test,127.0.0.2",
        "--host-record=3.0.0.127.allow.test,127.0.10.1",
        "--host-record=4.0.0.127.bl.test,127.0.0.99",
        &slow,
        "--host-record=spam.example.rhs.test,127.0.0.2",
    ]);
    let metrics = free_port();
    let mtad = Mtad::start(&format!(
        r#"{}
delivery {{
    queue-only #true
    dns-server "{}"
}}
dnsbl "rbl" "bl.test=127.0.0.[2..11]*3" "allow.test*-2" threshold=3 timeout="3s"
dnsbl "slow" "slow.test" timeout="1s"
dnsbl "rhs" "rhs.test" lookup="sender-domain"
stage "connect" {{
    reject-dnsbl "rbl"
}}
stage "mail" {{
    reject-dnsbl "rhs"
}}
stage "rcpt" {{
    reject-dnsbl "slow" rcpt="slow@test.local"
    accept rcpt-domain="local"
}}
"#,
        head_with_metrics(metrics),
        dns.addr
    ));
    let mut listed = common::Client::connect_from("127.0.0.2", mtad.port);
    let r = listed.reply();
    assert_eq!(
        r.trim_end(),
        "554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using bl.test; Listed in the test list: see http://bl.test/127.0.0.2"
    );
    listed.expect_closed();
    let mut allowed = common::Client::connect_from("127.0.0.3", mtad.port);
    allowed.expect("220 ");
    let mut other_code = common::Client::connect_from("127.0.0.4", mtad.port);
    other_code.expect("220 ");
    let mut c = mtad.connect();
    c.expect("220 ");
    c.cmd("EHLO client.test", "250");
    // RHSBL of the sender's domain
    c.cmd(
        "MAIL FROM:<a@spam.example>",
        "554 5.7.1 Service unavailable; Sender address [spam.example] blocked using rhs.test",
    );
    c.cmd("MAIL FROM:<a@clean.example>", "250 ");
    c.cmd("RCPT TO:<u@test.local>", "250 ");
    // a zone that does not answer: a temporary failure, neither a pass nor a 5xx
    c.cmd("RCPT TO:<slow@test.local>", "451 4.7.1 ");
    let log = mtad.log();
    assert!(log.contains("DNS list cannot answer"), "{log}");
    // every zone asked is counted: rbl asks bl.test and allow.test for each of the
    // four clients (127.0.0.2 and .3 and .4 are listed in bl.test, .3 in allow.test);
    // rhs asks rhs.test twice; the silent zone times out
    let m = scrape(metrics);
    let count = |list: &str, result: &str| {
        sample(
            &m,
            &format!(r#"mtad_dnsbl_queries_total{{list="{list}",result="{result}"}}"#),
        )
    };
    assert_eq!(count("rbl", "listed"), 4.0);
    assert_eq!(count("rbl", "not_listed"), 4.0);
    assert_eq!(count("rhs", "listed"), 1.0);
    assert_eq!(count("rhs", "not_listed"), 1.0);
    assert_eq!(count("slow", "timeout"), 1.0);
}

#[test]
fn dnsbl_condition_and_warn_mode() {
    let dns = Dnsmasq::start(&["--host-record=2.0.0.127.bl.test,127.0.0.2"]);
    let mtad = Mtad::start(&format!(
        r#"{HEAD}
delivery {{
    queue-only #true
    dns-server "{}"
}}
dnsbl "rbl" "bl.test"
stage "mail" {{
    reject-dnsbl "rbl" mode="warn"
}}
stage "rcpt" {{
    defer 450 "4.7.1" "listed: come back later" dnsbl="rbl"
    accept rcpt-domain="local"
}}
"#,
        dns.addr
    ));
    let mut listed = session_from("127.0.0.2", &mtad, "a@b.test");
    listed.cmd(
        "RCPT TO:<u@test.local>",
        "450 4.7.1 listed: come back later",
    );
    // the warn-mode rule only logged what it would have done
    mtad.wait_log("warn-mode rule matched", 1, Duration::from_secs(5));
    let mut c = mtad.connect();
    c.expect("220 ");
    c.cmd("EHLO client.test", "250");
    c.cmd("MAIL FROM:<a@b.test>", "250");
    c.cmd("RCPT TO:<u@test.local>", "250 ");
}

#[test]
fn hooks_make_bounded_dns_lookups_and_read_dnsbl_scores() {
    let (_silent, slow) = silent_zone();
    let dns = Dnsmasq::start(&[
        "--host-record=2.0.0.127.bl.test,127.0.0.2",
        "--host-record=host.test,192.0.2.7",
        "--txt-record=info.test,hello from DNS",
        "--ptr-record=7.2.0.192.in-addr.arpa,client.test",
        &slow,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let hook = dir.path().join("dns.rhai");
    std::fs::write(
        &hook,
        r#"
import "mta" as mta;
fn rcpt(ctx) {
    let score = ctx.dnsbl_score("rbl");
    if score >= 3 { return reject(554, "5.7.1", `score ${score}`); }
    if ctx.rcpt.local == "dns" {
        let txt = mta::dns_txt("info.test");
        let a = mta::dns_a("host.test");
        let none = mta::dns_a("nosuch.test");
        let ptr = mta::dns_ptr(a[0]);
        return reject(550, "5.7.1", `score=${score} txt=${txt[0]} a=${a[0]} none=${none.len()} ptr=${ptr[0]}`);
    }
    if ctx.rcpt.local == "slow" {
        let a = mta::dns_a("x.slow.test");
    }
    next()
}
"#,
    )
    .unwrap();
    let mtad = Mtad::start(&format!(
        r#"{HEAD}
delivery {{
    queue-only #true
    dns-server "{}"
}}
dnsbl "rbl" "bl.test=127.0.0.2*3" "allow.test*-1"
stage "rcpt" {{
    hook "{}"
    accept rcpt-domain="local"
}}
"#,
        dns.addr,
        hook.display()
    ));
    let mut listed = session_from("127.0.0.2", &mtad, "a@b.test");
    listed.cmd("RCPT TO:<u@test.local>", "554 5.7.1 score 3");
    let mut c = session(&mtad, "a@b.test");
    c.cmd(
        "RCPT TO:<dns@test.local>",
        "550 5.7.1 score=0 txt=hello from DNS a=192.0.2.7 none=0 ptr=client.test",
    );
    c.cmd("RCPT TO:<u@test.local>", "250 ");
    // a lookup that gets no answer fails the hook: 451, never a pass
    let started = Instant::now();
    c.cmd("RCPT TO:<slow@test.local>", "451 ");
    assert!(started.elapsed() < Duration::from_secs(10));
    let log = mtad.log();
    assert!(log.contains("temporary DNS failure"), "{log}");
}

/// `mtactl test-policy` decides with the same function: DNS lists answer from the
/// `--dns` records (never the network), and policy services are not asked (no
/// decision), so the dry run is the same everywhere.
#[test]
fn the_dry_run_answers_dns_lists_from_its_records_and_asks_no_policy_service() {
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let config = dry_run_config(
        dir.path(),
        &format!(
            r#"policy-service "grey" address="inet:127.0.0.1:{closed}"
dnsbl "rbl" "bl.test=127.0.0.[2..11]"
stage "rcpt" {{
    reject-dnsbl "rbl"
    check-policy-service "grey"
    accept rcpt-domain="local"
}}
"#
        ),
    );
    let dns = dir.path().join("dns.kdl");
    std::fs::write(
        &dns,
        "a \"2.0.0.127.bl.test\" \"127.0.0.2\"\ntxt \"2.0.0.127.bl.test\" \"listed for testing\"\n",
    )
    .unwrap();
    let run = |client: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_mtactl"))
            .args(["test-policy", "--config"])
            .arg(&config)
            .args([
                "--client",
                client,
                "--from",
                "a@b.test",
                "--rcpt",
                "u@test.local",
                "--dns",
            ])
            .arg(&dns)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (code, report) = run("127.0.0.2");
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report.contains(
            "554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using bl.test; listed for testing"
        ),
        "{report}"
    );
    let (code, report) = run("127.0.0.3");
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains("rcpt <u@test.local>"), "{report}");
    assert!(
        report.contains("mtad.kdl:12:5"),
        "the accept rule decided: {report}"
    );
}

/// `DIR/mtad.kdl` for dry runs: the server, a listener, the domain `test.local` as
/// `local`, then `rest`.
fn dry_run_config(dir: &Path, rest: &str) -> PathBuf {
    let config = dir.join("mtad.kdl");
    std::fs::write(
        &config,
        format!(
            "server {{\n    hostname \"mx.test.local\"\n    spool \"{}\"\n}}\n\
             listen \"mx\" address=\"127.0.0.1:2525\"\ndomains \"local\" \"test.local\"\n{rest}",
            dir.join("spool").display()
        ),
    )
    .unwrap();
    config
}

/// A suite says what a policy service answers (`policy-service "NAME" "ACTION"`, in
/// a case or for the whole file): the answer is applied as a live one (greylisting's
/// DEFER_IF_PERMIT, a PREPEND, a reject), and the service is still not contacted.
#[test]
fn a_suite_gives_a_policy_services_answer() {
    let dir = tempfile::tempdir().unwrap();
    // a recorder that answers OK to anything: a case that reached it would pass
    let rec = Recorder::start(&["OK"]);
    let config = dry_run_config(
        dir.path(),
        &format!(
            r#"domains "docs" "example.test"
policy-service "postgrey" address="inet:127.0.0.1:{}"
stage "rcpt" {{
    check-policy-service "postgrey"
    accept rcpt-domain="local"
    accept rcpt-domain="docs"
}}
"#,
            rec.port
        ),
    );
    let suite = dir.path().join("grey.kdl");
    std::fs::write(
        &suite,
        r#"policy-service "postgrey" "DUNNO"
case "greylisted" {
    client "192.0.2.1"
    from "a@example.org"
    rcpt "u@test.local"
    policy-service "postgrey" "DEFER_IF_PERMIT Greylisted, see http://grey.test/"
    expect "rcpt" "defer" reply="450 4.7.1"
}
case "a refusal" {
    client "192.0.2.1"
    from "a@example.org"
    rcpt "u@test.local"
    policy-service "postgrey" "550 5.7.23 SPF fail"
    expect "rcpt" "reject" reply="550 5.7.23"
}
case "the file's answer" {
    client "192.0.2.1"
    from "a@example.org"
    rcpt "u@test.local"
    expect "rcpt" "accept"
    outcome "queued"
}
"#,
    )
    .unwrap();
    let run = |suite: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_mtactl"))
            .args(["test-policy", "--config"])
            .arg(&config)
            .arg(suite)
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
    let (code, report) = run(&suite);
    assert_eq!(code, Some(0), "{report}");
    // docs/test-policy.md's case passes too
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/test-policy.md"))
        .unwrap();
    let at = docs
        .find("case \"postgrey defers a first attempt\"")
        .unwrap();
    let documented = dir.path().join("documented.kdl");
    std::fs::write(&documented, &docs[at..at + docs[at..].find("```").unwrap()]).unwrap();
    let (code, report) = run(&documented);
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains("1 passed, 0 failed"), "{report}");
    assert!(rec.requests().is_empty(), "the service was contacted");
    // a wrong expectation fails: the answer really decided
    let wrong = dir.path().join("wrong.kdl");
    std::fs::write(
        &wrong,
        r#"case "greylisted, expected to pass" {
    client "192.0.2.1"
    from "a@example.org"
    rcpt "u@test.local"
    policy-service "postgrey" "DEFER_IF_PERMIT Greylisted"
    expect "rcpt" "accept"
}
"#,
    )
    .unwrap();
    let (code, report) = run(&wrong);
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains("Greylisted"), "{report}");
    // a fixture without its answer: an error at its place
    let broken = dir.path().join("broken.kdl");
    std::fs::write(
        &broken,
        "case \"broken\" {\n    client \"192.0.2.1\"\n    rcpt \"u@test.local\"\n    policy-service \"grey\"\n}\n",
    )
    .unwrap();
    let (code, report) = run(&broken);
    assert_ne!(code, Some(0), "{report}");
    assert!(
        report.contains("broken.kdl:4:5: expected policy-service \"NAME\" \"ACTION\""),
        "{report}"
    );
}

/// docs/configuration.md's `policy-service` and `dnsbl` examples are valid
/// configurations (`mtactl check`).
#[test]
fn the_documented_examples_check() {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    for heading in ["## `policy-service NAME", "## `dnsbl NAME"] {
        let from = docs.find(heading).unwrap_or_else(|| panic!("{heading}"));
        let start = from + docs[from..].find("```kdl\n").unwrap() + "```kdl\n".len();
        let snippet = &docs[start..start + docs[start..].find("```").unwrap()];
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("mtad.kdl");
        std::fs::write(
            &config,
            format!(
                "server {{\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}}\n\
                 listen \"mx\" address=\"127.0.0.1:2525\"\nnetworks \"trusted\" \"127.0.0.0/8\"\n\
                 domains \"local\" \"example.test\"\n{snippet}"
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_mtactl"))
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{heading}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Configuration errors point at the place, with a hint.
#[test]
fn configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mtad.kdl");
    std::fs::write(
        &config,
        r#"server {
    hostname "mx.example.test"
    spool "spool"
}
listen "mx" address="127.0.0.1:2525"
policy-service "grey" address="inet:127.0.0.1"
dnsbl "rbl" "zen.test=127.0.0.[2..300]" "ok.test*x"
dnsbl "rhs" "rhs.test" lookup="sender-domain"
stage "connect" {
    reject-dnsbl "rhs"
}
stage "rcpt" {
    check-policy-service "gray"
    reject 550 "5.7.1" "listed" dnsbl="nosuch"
}
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "mtad.kdl:6:23",
        "expected inet:host:port",
        "mtad.kdl:7:13",
        "`300` is not a number from 0 to 255",
        "the weight `x` is not an integer",
        "mtad.kdl:10:18",
        "looks up the sender-domain, which the connect stage does not know",
        "mtad.kdl:13:26",
        "no policy-service named `gray`",
        "did you mean `grey`?",
        "no dnsbl named `nosuch`",
    ] {
        assert!(err.contains(expected), "{expected:?} not in\n{err}");
    }
}

/// The same client conversation through a throw-away Postfix (`check_policy_service`
/// in its sender, recipient and end-of-data restrictions) and through mtad, each to a
/// recording policy server: mtad sends the attributes Postfix sends, with the same
/// values, but for those it documents as different (client names, queue id, server
/// address, versions) and those that cannot be equal (ports, instances, sizes with
/// each server's own Received:).
#[test]
fn the_attributes_are_the_ones_postfix_sends() {
    let converse = |port: u16| {
        let mut c = common::Client::connect(port);
        c.expect("220 ");
        c.cmd("EHLO client.test", "250");
        c.send_message(
            "alice@sender.test",
            &["a@test.local", "b@test.local"],
            "Subject: compare\r\n\r\nhello\r\n",
        );
        c.cmd("QUIT", "221");
    };
    let pf_rec = Recorder::start(&["DUNNO"]);
    let policy = format!("check_policy_service inet:127.0.0.1:{}", pf_rec.port);
    let _postfix = common::peers::Postfix::start(
        &format!(
            "mydestination =\nalias_maps =\nalias_database =\nrelay_domains = test.local\n\
             mynetworks = 127.0.0.0/8\nsmtpd_delay_reject = no\n\
             smtpd_sender_restrictions = {policy}\n\
             smtpd_recipient_restrictions = {policy}, permit_mynetworks, reject_unauth_destination\n\
             smtpd_end_of_data_restrictions = {policy}\n\
             default_transport = error:test\n"
        ),
        true,
    );
    converse(_postfix.port);
    let mtad_rec = Recorder::start(&["DUNNO"]);
    let mtad = asking_at_mail_rcpt_and_data(mtad_rec.port);
    converse(mtad.port);
    let theirs = pf_rec.requests();
    let ours = mtad_rec.requests();
    let states = |r: &[serde_json::Map<String, serde_json::Value>]| -> Vec<String> {
        r.iter()
            .map(|r| attr(r, "protocol_state").to_owned())
            .collect()
    };
    assert_eq!(states(&ours), states(&theirs), "the same questions");
    // not sent by mtad (documented)
    let absent = [
        "server_address",
        "server_port",
        "compatibility_level",
        "mail_version",
    ];
    // sent with other values (documented or necessarily different)
    let differ = [
        "client_name",
        "reverse_client_name",
        "client_port",
        "queue_id",
        "instance",
        "size",
        "_conn",
    ];
    for (p, m) in theirs.iter().zip(&ours) {
        let p_names: Vec<&String> = p.keys().filter(|k| !absent.contains(&k.as_str())).collect();
        let m_names: Vec<&String> = m.keys().collect();
        assert_eq!(
            m_names.iter().collect::<std::collections::BTreeSet<_>>(),
            p_names.iter().collect::<std::collections::BTreeSet<_>>(),
            "attribute names at {}",
            attr(p, "protocol_state")
        );
        for name in p_names {
            if differ.contains(&name.as_str()) {
                continue;
            }
            assert_eq!(
                m.get(name),
                p.get(name),
                "{name} at {}: Postfix {:?}, mtad {:?}",
                attr(p, "protocol_state"),
                p.get(name),
                m.get(name)
            );
        }
    }
    // the properties behind the differing values: no instance at MAIL, then one for
    // the whole message
    for r in [&theirs, &ours] {
        assert_eq!(attr(&r[0], "instance"), "", "{r:?}");
        let first = attr(&r[1], "instance");
        assert!(!first.is_empty());
        assert!(r[1..].iter().all(|x| attr(x, "instance") == first), "{r:?}");
    }
}

/// A `HOLD` or `PREPEND` decides nothing: with no rule accepting, a foreign recipient
/// is still refused (never an open relay by way of a policy answer).
#[test]
fn hold_and_prepend_never_accept_on_their_own() {
    let rec = Recorder::start(&["HOLD", "PREPEND X-A: b", "DUNNO"]);
    let mtad = asking_at_rcpt(&format!(r#"address="inet:127.0.0.1:{}""#, rec.port));
    let mut c = session(&mtad, "a@sender.test");
    for _ in 0..3 {
        c.cmd(
            "RCPT TO:<u@elsewhere.test>",
            "554 5.7.1 <u@elsewhere.test>: Relay access denied",
        );
    }
}

/// mtad with the built-in greylisting (`delay`), metrics on `metrics`, its rcpt stage
/// `greylist` then accepting the local domain.
fn greylisting(delay: &str, metrics: u16) -> Mtad {
    Mtad::start(&format!(
        r#"{head}
networks "exempt" "127.0.0.200/32"
greylisting {{
    delay "{delay}"
    allow-clients "exempt"
}}
stage "rcpt" {{
    greylist
    accept rcpt-domain="local"
}}
"#,
        head = head_with_metrics(metrics)
    ))
}

/// swaks from `source` with `from` and `to` to `port`: its transcript.
fn swaks_as(port: u16, source: &str, from: &str, to: &str) -> String {
    let out = common::swaks(
        port,
        &["--local-interface", source, "--from", from, "--to", to],
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// swaks against the built-in greylisting: the first attempt of a triplet gets
/// postgrey's 450 4.7.1 (at RCPT, with the seconds left), a retry before the delay
/// too, the retry after it is queued; the state survives a restart (it is saved
/// under the spool); allowlisted clients are never greylisted; counted in metrics.
#[test]
fn swaks_is_greylisted_then_accepted_after_the_delay_even_across_a_restart() {
    let mport = free_port();
    let mut mtad = greylisting("3s", mport);
    let send = |m: &Mtad, client: &str, from: &str, to: &str| swaks_as(m.port, client, from, to);
    let first = send(&mtad, "127.0.0.2", "alice@sender.test", "user@test.local");
    assert!(
        first.contains(
            "<** 450 4.7.1 <user@test.local>: Recipient address rejected: Greylisted, try again in 3 seconds"
        ),
        "{first}"
    );
    // another address of the same /24, the same sender with a +extension: the same
    // triplet, still waiting
    let again = send(&mtad, "127.0.0.3", "alice+x@sender.test", "user@test.local");
    assert!(again.contains("<** 450 4.7.1 "), "{again}");
    // an allowlisted client is not greylisted
    let exempt = send(&mtad, "127.0.0.200", "bob@sender.test", "user@test.local");
    assert!(exempt.contains("<-  250 2.0.0 Ok: queued as"), "{exempt}");
    assert_eq!(
        sample(
            &scrape(mport),
            r#"mtad_greylist_total{result="greylisted"}"#
        ),
        2.0
    );
    // the state is saved under the spool every few seconds and at shutdown
    mtad.stop();
    assert!(mtad.spool.join("greylist").exists());
    std::thread::sleep(Duration::from_millis(3200));
    mtad.restart();
    let retry = send(&mtad, "127.0.0.2", "alice@sender.test", "user@test.local");
    assert!(retry.contains("<-  250 2.0.0 Ok: queued as"), "{retry}");
    // a new triplet (another recipient) is greylisted afresh
    let other = send(&mtad, "127.0.0.2", "alice@sender.test", "other@test.local");
    assert!(other.contains("<** 450 4.7.1 "), "{other}");
    let m = scrape(mport);
    assert_eq!(sample(&m, r#"mtad_greylist_total{result="passed"}"#), 1.0);
    assert_eq!(
        sample(&m, r#"mtad_greylist_total{result="greylisted"}"#),
        1.0
    );
    assert_eq!(mtad.queued().len(), 2);
}

/// The same sequence of triplets through real postgrey (`check-policy-service`) and
/// through the built-in greylisting, each with a delay of 2 seconds: the same verdict
/// at every step (postgrey's /24 networks, its `+extension` and VERP number
/// substitutions, new recipients, retries before and after the delay).
#[test]
fn the_built_in_greylisting_answers_as_postgrey_does() {
    let db = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut grey = postgrey_with_delay(port, db.path(), 2);
    let theirs = asking_at_rcpt(&format!(r#"address="inet:127.0.0.1:{port}" timeout="10s""#));
    let ours = greylisting("2s", free_port());
    // (client, sender, recipient), then whether postgrey lets it through
    let steps: [&[(&str, &str, &str)]; 3] = [
        &[
            ("127.0.0.2", "alice@sender.test", "user@test.local"),
            ("127.0.0.3", "alice+news@sender.test", "user@test.local"),
            ("127.0.0.2", "list-1234@lists.test", "user@test.local"),
            ("127.0.1.2", "carol@sender.test", "user@test.local"),
        ],
        // after the delay: the same triplets, written otherwise
        &[
            ("127.0.0.9", "Alice@sender.test", "User@test.local"),
            ("127.0.0.2", "list-5678@lists.test", "user@test.local"),
            ("127.0.0.2", "alice@sender.test", "new@test.local"),
            ("127.0.1.5", "carol+tag@sender.test", "user@test.local"),
            ("127.0.1.2", "carol@sender.test", "user@test.local"),
            ("127.0.2.2", "carol@sender.test", "user@test.local"),
        ],
        &[
            ("127.0.0.2", "alice@sender.test", "user@test.local"),
            ("127.0.2.2", "carol@sender.test", "user@test.local"),
        ],
    ];
    let mut verdicts = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        if n > 0 {
            // postgrey's delay has a resolution of a second
            std::thread::sleep(Duration::from_millis(3200));
        }
        for (client, from, to) in step.iter() {
            grey.alive();
            let verdict = |mtad: &Mtad| {
                let mut c = session_from(client, mtad, from);
                let reply = c.cmd(&format!("RCPT TO:<{to}>"), "");
                c.cmd("QUIT", "221");
                reply[..3].to_owned()
            };
            let (p, m) = (verdict(&theirs), verdict(&ours));
            assert_eq!(p, m, "{client} {from} {to}: postgrey {p}, mtad {m}");
            verdicts.push(p);
        }
    }
    // the sequence is not trivial: both kinds of verdict occurred
    assert_eq!(
        verdicts,
        [
            "450", "450", "450", "450", // first sight
            "250", "250", "450", "250", "250", "450", // after the delay
            "250", "250"
        ]
    );
}

/// postgrey on 127.0.0.1:`port` with `--delay=DELAY` and a fresh database.
fn postgrey_with_delay(port: u16, dbdir: &Path, delay: u32) -> Peer {
    let binary = require_tool("postgrey");
    let uid = uid_of("postgrey");
    std::os::unix::fs::chown(dbdir, Some(uid), Some(uid)).unwrap();
    let mut child = Command::new(binary)
        .arg(format!("--inet=127.0.0.1:{port}"))
        .arg(format!("--delay={delay}"))
        .arg(format!("--dbdir={}", dbdir.display()))
        .args(["--user=postgrey", "--group=postgrey"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("postgrey");
    common::peers::wait_listening(
        format!("127.0.0.1:{port}").parse().unwrap(),
        &mut child,
        "postgrey",
    );
    Peer {
        child,
        what: "postgrey",
    }
}

/// docs/greylisting.md: its configuration checks, its suite passes on it (the state of
/// each case given as a fixture), a wrong expectation fails, and a hook's `greylist()`
/// greylists as the rule does.
#[test]
fn the_documented_greylisting_suite_passes_and_hooks_greylist() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/greylisting.md"))
        .unwrap();
    let block = |after: &str, lang: &str| {
        let from = docs.find(after).unwrap_or_else(|| panic!("{after}"));
        let fence = format!("```{lang}\n");
        let start = from + docs[from..].find(&fence).unwrap() + fence.len();
        docs[start..start + docs[start..].find("```").unwrap()].to_owned()
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mtad.kdl");
    let head = format!(
        "server {{\n    hostname \"mx.example.test\"\n    spool \"{}\"\n}}\n\
         listen \"mx\" address=\"127.0.0.1:2525\"\ndomains \"local\" \"example.test\"\n",
        dir.path().join("spool").display()
    );
    std::fs::write(
        &config,
        format!(
            "{head}{}",
            block("<!-- tests/policy_service.rs checks", "kdl")
        ),
    )
    .unwrap();
    let run = |config: &Path, suite: &str| {
        let path = dir.path().join("suite.kdl");
        std::fs::write(&path, suite).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_mtactl"))
            .args(["test-policy", "--config"])
            .arg(config)
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
    let suite = block("<!-- tests/policy_service.rs runs this suite", "kdl");
    let (code, report) = run(&config, &suite);
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains("6 passed, 0 failed"), "{report}");
    // the state decides: a triplet seen 6 minutes ago expected to be greylisted fails
    let wrong = suite.replace(
        "greylist seen=\"6m\"\n    expect \"rcpt\" \"accept\"",
        "greylist seen=\"6m\"\n    expect \"rcpt\" \"defer\"",
    );
    assert_ne!(wrong, suite);
    let (code, report) = run(&config, &wrong);
    assert_eq!(code, Some(1), "{report}");
    // a fixture that says nothing sensible is an error at its place
    let (code, report) = run(
        &config,
        "case \"x\" {\n    client \"192.0.2.1\"\n    from \"a@b.test\"\n    rcpt \"u@example.test\"\n    greylist passed=#true\n}\n",
    );
    assert_eq!(code, Some(2), "{report}");
    assert!(
        report.contains("suite.kdl:5:5: greylist passed=#true needs seen="),
        "{report}"
    );
    // the hook of the page
    std::fs::write(
        dir.path().join("rcpt.rhai"),
        block("A hook may greylist", "rhai"),
    )
    .unwrap();
    let hooked = dir.path().join("hooked.kdl");
    std::fs::write(
        &hooked,
        format!(
            "{head}stage \"rcpt\" {{\n    reject 554 \"5.7.1\" \"Relay access denied\" not-rcpt-domain=\"local\"\n    hook \"rcpt.rhai\"\n    accept\n}}\n"
        ),
    )
    .unwrap();
    let (code, report) = run(
        &hooked,
        r#"case "greylisted by the hook" {
    client "198.51.100.7"
    from "a@b.test"
    rcpt "u@example.test"
    expect "rcpt" "defer" reply="450 4.7.1 <u@example.test>: Recipient address rejected: Greylisted" rule="hooked.kdl:9"
}
case "passed" {
    client "198.51.100.7"
    from "a@b.test"
    rcpt "u@example.test"
    greylist seen="1h"
    expect "rcpt" "accept" rule="hooked.kdl:10"
}
case "not greylisted by the hook" {
    client "203.0.113.1"
    from "a@b.test"
    rcpt "u@example.test"
    expect "rcpt" "accept"
}
"#,
    );
    assert_eq!(code, Some(0), "{report}");
    // greylist() anywhere but rcpt is a hook error: 451, never an accept
    std::fs::write(
        dir.path().join("mail.rhai"),
        "fn mail(ctx) { greylist() }\n",
    )
    .unwrap();
    std::fs::write(
        &hooked,
        format!("{head}stage \"mail\" {{\n    hook \"mail.rhai\"\n}}\nstage \"rcpt\" {{\n    accept\n}}\n"),
    )
    .unwrap();
    let (code, report) = run(
        &hooked,
        "case \"x\" {\n    client \"192.0.2.1\"\n    from \"a@b.test\"\n    rcpt \"u@example.test\"\n    expect \"mail\" \"defer\" reply=\"451 4.3.0\"\n}\n",
    );
    assert_eq!(code, Some(0), "{report}");
}
