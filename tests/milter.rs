//! Milters end to end against the real filters, started on loopback by each test:
//! OpenDKIM (signing for a listener named in its `MTA` list, verifying elsewhere),
//! rspamd 3.4's proxy worker in milter mode (GTUBE refused, headers added that the
//! data stage's rules see, a clean message passing), clamav-milter with clamd and a
//! local signature (reject, quarantine, blackhole, its own tempfail), rspamd over its HTTP
//! protocol answering as its milter does, spamass-milter with
//! spamd (reject, mark, redirect to a bucket), OpenDMARC (pass, and a refused failure),
//! and what clients see when a
//! filter is stopped in the middle of a load (nothing acknowledged is lost; the
//! configured `on-failure` action is the answer).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::peers::{Dnsmasq, opendkim_genkey, unbound_conf, wait_listening};
use common::*;

/// A daemon started by a test, killed (by its PID) on drop.
struct Daemon {
    child: Child,
    /// Where its stdout and stderr go, for [`Daemon::describe`].
    output: tempfile::NamedTempFile,
}

impl Daemon {
    /// `command` started with no stdin, its output kept in a file, once it listens
    /// on 127.0.0.1:`port`.
    fn spawn(mut command: Command, port: u16, what: &str) -> Daemon {
        let output = tempfile::NamedTempFile::new().unwrap();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(output.reopen().unwrap())
            .stderr(output.reopen().unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        wait_listening(SocketAddr::from(([127, 0, 0, 1], port)), &mut child, what);
        Daemon { child, output }
    }

    /// Whether it still runs, and what it printed: for a failing test's message.
    fn describe(&mut self) -> String {
        let state = match self.child.try_wait() {
            Ok(None) => "running".to_owned(),
            Ok(Some(status)) => format!("exited ({status})"),
            Err(e) => format!("unknown ({e})"),
        };
        let printed = std::fs::read_to_string(self.output.path()).unwrap_or_default();
        format!("pid {} {state}; its output:\n{printed}", self.child.id())
    }

    /// SIGTERM (rspamd's main process then stops its workers), SIGKILL after 10 s.
    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
    }
}

/// Waits until nothing listens on 127.0.0.1:`port` any more (a filter's workers gone).
fn wait_closed(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "port {port} still open");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// OpenDKIM as a milter on 127.0.0.1:`port`: signs `example.test` mail (selector
/// `sel`) that comes through a listener named `signer` (its `MTA` list, matched
/// against our `{daemon_name}` macro), verifies everything else with keys from
/// `dns`, and says so in an Authentication-Results header (authserv-id `mx.test`).
fn opendkim(dir: &Path, port: u16, key: &Path, dns: SocketAddr) -> Daemon {
    opendkim_signing_for(dir, port, key, dns, "signer")
}

/// [`opendkim`], signing the mail of the listener named `mta`.
fn opendkim_signing_for(dir: &Path, port: u16, key: &Path, dns: SocketAddr, mta: &str) -> Daemon {
    let unbound = unbound_conf(dir, dns);
    let conf = dir.join("opendkim.conf");
    std::fs::write(
        &conf,
        format!(
            "Syslog no\nRequireSafeKeys false\nMode sv\nDomain example.test\nSelector sel\n\
             KeyFile {}\nSocket inet:{port}@127.0.0.1\nMTA {mta}\nInternalHosts 192.0.2.99\n\
             AuthservID mx.test\nAlwaysAddARHeader yes\nDNSTimeout 5\nResolverConfiguration {}\n\
             Canonicalization relaxed/relaxed\nUserID root\n",
            key.display(),
            unbound.display()
        ),
    )
    .unwrap();
    let mut command = Command::new(require_tool("opendkim"));
    command.arg("-f").arg("-x").arg(&conf);
    Daemon::spawn(command, port, "opendkim")
}

/// A fresh message from `from`, with a current Date (rspamd scores old ones).
fn message(from: &str, subject: &str, body: &str) -> String {
    let date = Command::new("date")
        .arg("-R")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "From: Alice <{from}>\r\nTo: bob@mx.test\r\nSubject: {subject}\r\nDate: {date}\r\n\
         Message-ID: <{}.{}@example.test>\r\n\r\n{body}\r\n",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    )
}

/// The header `name` of `message` (unfolded), if there is one.
fn header(message: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded
        .lines()
        .find(|l| {
            l.len() > name.len()
                && l[..name.len()].eq_ignore_ascii_case(name)
                && l.as_bytes()[name.len()] == b':'
        })
        .map(|l| l[name.len() + 1..].trim().to_owned())
}

/// `data` from `from` to bob@mx.test in a new session on `mtad`'s listener: the
/// message as queued.
fn send_queued(mtad: &Mtad, from: &str, data: &str) -> (mtad::queue::QueuedMessage, Vec<u8>) {
    let mut c = mtad.session();
    c.cmd("EHLO client.test", "250");
    let id = c.send_message(from, &["bob@mx.test"], data);
    mtad.queued()
        .into_iter()
        .find(|(m, _)| m.id.to_string() == id)
        .expect("queued")
}

/// Sends `data` from alice@example.test to bob@mx.test on `c` (after EHLO) and
/// returns the reply to its end, which must start with `class` (a refusal: `4`, `5`).
fn refused_message(c: &mut Client, data: &str, class: &str) -> String {
    c.cmd("MAIL FROM:<alice@example.test>", "250 ");
    c.cmd("RCPT TO:<bob@mx.test>", "250 ");
    c.cmd("DATA", "354 ");
    c.send(data);
    c.send(".\r\n");
    c.expect(class)
}

/// The configuration every test here starts from: the server `mx.test`, every
/// recipient accepted, and `rest` (milters, listeners, rules).
fn config_with(rest: &str) -> String {
    format!(
        "server {{\n    hostname \"mx.test\"\n    spool \"{{spool}}\"\n}}\nstage \"rcpt\" {{\n    accept open-relay=\"intended\"\n}}\n{rest}"
    )
}

/// The queued message whose Subject is `subject`.
fn queued_with_subject(mtad: &Mtad, subject: &str) -> (mtad::queue::QueuedMessage, Vec<u8>) {
    mtad.queued()
        .into_iter()
        .find(|(_, body)| header(body, "Subject").as_deref() == Some(subject))
        .unwrap_or_else(|| panic!("no queued message `{subject}`; log:\n{}", mtad.log()))
}

#[test]
fn opendkim_signs_on_one_listener_and_verifies_on_another() {
    let keys = tempfile::tempdir().unwrap();
    let (key, text) = opendkim_genkey(keys.path(), "example.test", "sel");
    let dns = Dnsmasq::start(&[&Dnsmasq::txt("sel._domainkey.example.test", &text)]);
    let port = free_port();
    let _opendkim = opendkim(keys.path(), port, &key, dns.addr);
    let signer_port = free_port();
    let mtad = Mtad::start(&config_with(&format!(
        r#"
milter "opendkim" "inet:127.0.0.1:{port}"
listen "signer" address="127.0.0.1:{signer_port}" milters="opendkim"
listen "mx" address="127.0.0.1:{{port}}" milters="opendkim"
stage "data" {{
    // OpenDKIM's verdict, as the milter added it, decides here
    hold header-matches="^Authentication-Results: mx.test;.*dkim=fail"
    accept
}}
"#
    )));
    // signed on the `signer` listener: OpenDKIM's DKIM-Signature is in the queued message
    let original = message("alice@example.test", "signed", "A signed message.");
    let mut c = Client::connect(signer_port);
    c.expect("220 ");
    c.cmd("EHLO client.test", "250");
    c.send_message("alice@example.test", &["bob@mx.test"], &original);
    let (_, signed) = queued_with_subject(&mtad, "signed");
    let signature = header(&signed, "DKIM-Signature")
        .unwrap_or_else(|| panic!("not signed:\n{}", String::from_utf8_lossy(&signed)));
    assert!(signature.contains("d=example.test"), "{signature}");
    assert!(signature.contains("s=sel"), "{signature}");
    // our Received: header stays the first, above the milter's
    assert!(
        signed.starts_with(b"Received: from client.test"),
        "{}",
        String::from_utf8_lossy(&signed)
    );
    let log = mtad.wait_log("milter=opendkim", 1, Duration::from_secs(5));
    assert!(log.contains("changes=1"), "{log}");

    // the signed message again, on `mx`: verified, dkim=pass, delivered normally
    let with_dkim = String::from_utf8_lossy(without_received(&signed)).into_owned();
    let (m, verified) = send_queued(&mtad, "alice@example.test", &with_dkim);
    let results = header(&verified, "Authentication-Results").unwrap_or_default();
    assert!(
        results.contains("mx.test") && results.contains("dkim=pass"),
        "{}",
        String::from_utf8_lossy(&verified)
    );
    assert!(!m.envelope.held, "a passing message is not held");

    // tampered: dkim=fail, which the data stage's rule sees and holds
    let tampered = with_dkim.replace("A signed message.", "A tampered message.");
    let (m, failed) = send_queued(&mtad, "alice@example.test", &tampered);
    let results = header(&failed, "Authentication-Results").unwrap_or_default();
    assert!(
        results.contains("dkim=fail"),
        "{}",
        String::from_utf8_lossy(&failed)
    );
    assert!(m.envelope.held, "the rule saw the milter's header: held");
}

/// rspamd 3.4 (peers.md §1) with its proxy worker in milter mode on 127.0.0.1:`port`,
/// the stock rules, no Redis, DNS to a dead port (fails fast), and the headers on
/// for loopback clients too (`skip_local = false`).
fn rspamd(dir: &Path, port: u16) -> Daemon {
    rspamd_workers(dir, port, None)
}

/// [`rspamd`], and its normal worker (the HTTP protocol, `/checkv2`) on
/// 127.0.0.1:`http` if given. Two test rules make its actions deterministic (its
/// scores vary from run to run): a Subject containing `please mark` gets `add
/// header`, `please defer` gets `soft reject` (with a message).
fn rspamd_workers(dir: &Path, port: u16, http: Option<u16>) -> Daemon {
    use std::os::unix::fs::PermissionsExt;
    let run = dir.join("run");
    let local = dir.join("local/local.d");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::create_dir_all(&local).unwrap();
    // rspamd drops to _rspamd, which must reach its files
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let chown = Command::new("chown")
        .args(["-R", "_rspamd:_rspamd"])
        .arg(&run)
        .status()
        .unwrap();
    assert!(chown.success(), "chown _rspamd");
    let dead_dns = free_port();
    std::fs::write(
        dir.join("rspamd.conf"),
        format!(
            r#".include "$CONFDIR/common.conf"
options {{
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}}
logging {{ type = "file"; filename = "$LOGDIR/rspamd.log"; level = "info"; }}
worker "rspamd_proxy" {{
    bind_socket = "127.0.0.1:{port}";
    milter = yes;
    timeout = 120s;
    upstream "local" {{ default = yes; self_scan = yes; }}
    count = 1;
    spam_header = "X-Spam";
}}
{normal}"#,
            normal = match http {
                Some(http) => format!(
                    "worker \"normal\" {{\n    bind_socket = \"127.0.0.1:{http}\";\n    .include \"$CONFDIR/worker-normal.inc\"\n    count = 1;\n}}\n"
                ),
                None => String::new(),
            }
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("local/rspamd.local.lua"),
        r#"
-- a Subject containing `what` gets `action` with `message`, whatever the score
local function rule(name, what, action, message)
  rspamd_config[name] = {
    callback = function(task)
      local s = task:get_header('Subject')
      if s ~= nil and s:find(what, 1, true) ~= nil then
        task:set_pre_result(action, message)
        return true
      end
      return false
    end,
    score = 0.0,
    priority = 10,
  }
end
rule('MTAD_TEST_MARK', 'please mark', 'add header', 'marked by the test rule')
rule('MTAD_TEST_DEFER', 'please defer', 'soft reject', 'Deferred by the test rule')
"#,
    )
    .unwrap();
    std::fs::write(
        local.join("options.inc"),
        format!("dns {{ nameserver = [\"127.0.0.1:{dead_dns}\"]; timeout = 0.2s; retransmits = 1; }}\nlocal_addrs = [];\n"),
    )
    .unwrap();
    std::fs::write(
        local.join("milter_headers.conf"),
        "skip_local = false;\nskip_authenticated = false;\n\
         use = [\"x-rspamd-server\", \"x-rspamd-queue-id\", \"x-spam-status\"];\n",
    )
    .unwrap();
    std::fs::write(local.join("fuzzy_check.conf"), "enabled = false;\n").unwrap();
    let output = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(require_tool("rspamd"))
        .args(["-f", "-u", "_rspamd", "-g", "_rspamd", "-c"])
        .arg(dir.join("rspamd.conf"))
        .arg(format!(
            "--var=LOCAL_CONFDIR={}",
            dir.join("local").display()
        ))
        .arg(format!("--var=DBDIR={}", run.display()))
        .arg(format!("--var=RUNDIR={}", run.display()))
        .arg(format!("--var=LOGDIR={}", run.display()))
        .stdin(Stdio::null())
        .stdout(output.reopen().unwrap())
        .stderr(output.reopen().unwrap())
        .spawn()
        .expect("start rspamd");
    // the first start compiles the hyperscan databases: seconds on 2 cores
    let deadline = Instant::now() + Duration::from_secs(90);
    let listening = |p: u16| {
        std::net::TcpStream::connect(("127.0.0.1", p))
            .is_ok_and(|s| s.local_addr().is_ok_and(|a| a.port() != p))
    };
    while !listening(port) || http.is_some_and(|h| !listening(h)) {
        if let Some(status) = child.try_wait().unwrap() {
            let log = std::fs::read_to_string(run.join("rspamd.log")).unwrap_or_default();
            panic!("rspamd exited before listening: {status}\n{log}");
        }
        assert!(
            Instant::now() < deadline,
            "rspamd never listened on {port}:\n{}",
            std::fs::read_to_string(run.join("rspamd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Daemon { child, output }
}

/// SpamAssassin's test pattern: rspamd rejects it.
const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

#[test]
fn rspamd_refuses_gtube_marks_and_passes_clean_mail() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut filter = rspamd(dir.path(), port);
    let mtad = Mtad::start(&config_with(&format!(
        r#"
milter "rspamd" "inet:127.0.0.1:{port}" content-timeout="60s"
listen "mx" address="127.0.0.1:{{port}}" milters="rspamd"
stage "data" {{
    // rspamd's header, added at the end of the message, is seen by the rules
    hold sender="watched@example.test" header-matches="^X-Rspamd-Queue-Id: "
    accept
}}
"#
    )));
    // GTUBE: refused with rspamd's own reply, nothing queued
    let mut c = mtad.session();
    c.cmd("EHLO client.test", "250");
    let reply = refused_message(&mut c, &message("alice@example.test", "gtube", GTUBE), "5");
    assert!(reply.starts_with("554 5.7.1 Gtube pattern"), "{reply}");
    assert!(mtad.queued().is_empty());
    let log = mtad.wait_log("milter-reject: END-OF-MESSAGE", 1, Duration::from_secs(5));
    assert!(log.contains("Gtube pattern"), "{log}");
    // the session goes on: a clean message passes, marked
    let id = c.send_message(
        "alice@example.test",
        &["bob@mx.test"],
        &message(
            "alice@example.test",
            "clean",
            "Hello Bob, see you tomorrow at the meeting.",
        ),
    );
    let (m, body) = queued_with_subject(&mtad, "clean");
    assert_eq!(m.id.to_string(), id);
    let status = header(&body, "X-Spam-Status")
        .unwrap_or_else(|| panic!("no X-Spam-Status:\n{}", String::from_utf8_lossy(&body)));
    assert!(status.starts_with("No"), "{status}");
    // the queue id rspamd was told (macro `i`) is ours
    assert_eq!(
        header(&body, "X-Rspamd-Queue-Id").as_deref(),
        Some(id.as_str())
    );
    assert!(!m.envelope.held);
    // the same, from the watched sender: the data stage's rule saw rspamd's header
    let mut c = mtad.session();
    c.cmd("EHLO client.test", "250");
    let id = c.send_message(
        "watched@example.test",
        &["bob@mx.test"],
        &message(
            "watched@example.test",
            "watched",
            "Hello Bob, see you tomorrow at the meeting.",
        ),
    );
    let (m, _) = queued_with_subject(&mtad, "watched");
    assert_eq!(m.id.to_string(), id);
    assert!(
        m.envelope.held,
        "held by the rule that saw X-Rspamd-Queue-Id"
    );
    // a forged X-Spam-Status: rspamd deletes it (a header change) and adds its own
    let mut c = mtad.session();
    c.cmd("EHLO client.test", "250");
    let forged = message(
        "alice@example.test",
        "forged",
        "Hello Bob, see you tomorrow.",
    )
    .replacen(
        "Subject:",
        "X-Spam-Status: Yes, score=99 (forged)\r\nSubject:",
        1,
    );
    c.send_message("alice@example.test", &["bob@mx.test"], &forged);
    let (_, body) = queued_with_subject(&mtad, "forged");
    let text = String::from_utf8_lossy(&body);
    assert_eq!(text.matches("X-Spam-Status:").count(), 1, "{text}");
    assert!(!text.contains("forged)"), "{text}");

    // rspamd stopped in the middle of a load: 451, and nothing acknowledged lost
    stop_mid_load(&mtad, &mut filter, port, "451 4.7.1");
}

/// The same rspamd through its milter and through its HTTP protocol (`rspamd "NAME"
/// "http://..."`), the same messages: GTUBE refused with rspamd's reply, a message
/// rspamd marks (`add header` → `X-Spam: Yes`), one it defers (`soft reject` → 451),
/// a clean one passing with rspamd's headers and our score header, which a data-stage
/// rule sees; a forged score header from the client removed. Then rspamd's HTTP worker
/// stopped in the middle of a load: every acknowledged message is queued, every later
/// one gets the failure action.
#[test]
fn rspamd_over_http_answers_as_its_milter_does() {
    let dir = tempfile::tempdir().unwrap();
    let (port, http, milter_port) = (free_port(), free_port(), free_port());
    let mut filter = rspamd_workers(dir.path(), port, Some(http));
    let mtad = Mtad::start(&config_with(&format!(
        r#"
milter "rspamd-milter" "inet:127.0.0.1:{port}" content-timeout="60s"
rspamd "rspamd-http" "http://127.0.0.1:{http}" content-timeout="60s"
listen "mx" address="127.0.0.1:{{port}}" milters="rspamd-http"
listen "mx-milter" address="127.0.0.1:{milter_port}" milters="rspamd-milter"
local-submission {{
    maildrop "{{dir}}/maildrop"
    milters "rspamd-http"
}}
stage "data" {{
    // rspamd's verdict, added at the end of the message, is seen by the rules
    hold sender="watched@example.test" header-matches="^X-Rspamd-Score: -?[0-9]+[.][0-9]+ / 15[.]00, action=no action$"
    accept
}}
"#
    )));
    for (via, port) in [("http", mtad.port), ("milter", milter_port)] {
        let http = via == "http";
        let mut c = Client::connect(port);
        c.expect("220");
        c.cmd("EHLO client.test", "250");
        // GTUBE: refused with rspamd's own reply, nothing queued
        let gtube = message("alice@example.test", &format!("gtube {via}"), GTUBE);
        let reply = refused_message(&mut c, &gtube, "5");
        assert!(
            reply.starts_with("554 5.7.1 Gtube pattern"),
            "{via}: {reply}"
        );
        // soft reject: 451 with rspamd's message (the proxy's as well)
        let defer = message(
            "alice@example.test",
            &format!("please defer {via}"),
            "Hello Bob.",
        );
        let reply = refused_message(&mut c, &defer, "4");
        assert!(
            reply.starts_with("451 4.7.1 Deferred by the test rule"),
            "{via}: {reply}"
        );
        // add header: marked X-Spam: Yes, queued
        c.send_message(
            "alice@example.test",
            &["bob@mx.test"],
            &message(
                "alice@example.test",
                &format!("please mark {via}"),
                "Hello Bob.",
            ),
        );
        let (_, body) = queued_with_subject(&mtad, &format!("please mark {via}"));
        assert_eq!(header(&body, "X-Spam").as_deref(), Some("Yes"), "{via}");
        // clean (over HTTP with a forged score header): rspamd's headers, and ours
        // replacing the forged one
        let mut clean = message(
            "watched@example.test",
            &format!("clean {via}"),
            "Hello Bob, see you tomorrow at the meeting.",
        );
        if http {
            clean = clean.replacen(
                "Subject:",
                "X-Rspamd-Score: -50.00 / 15.00, action=no action\r\nSubject:",
                1,
            );
        }
        let id = c.send_message("watched@example.test", &["bob@mx.test"], &clean);
        let (m, body) = queued_with_subject(&mtad, &format!("clean {via}"));
        assert_eq!(m.id.to_string(), id);
        let text = String::from_utf8_lossy(&body);
        let status = header(&body, "X-Spam-Status").unwrap_or_else(|| panic!("{via}: {text}"));
        assert!(status.starts_with("No"), "{via}: {status}");
        assert_eq!(
            header(&body, "X-Rspamd-Queue-Id").as_deref(),
            Some(id.as_str()),
            "{via}"
        );
        if http {
            assert!(!text.contains("-50.00"), "the forged score stayed: {text}");
            assert_eq!(text.matches("X-Rspamd-Score:").count(), 1, "{text}");
            assert!(m.envelope.held, "the data stage's rule saw the score: held");
        } else {
            // the milter gives no score header: the rule did not match
            assert!(!m.envelope.held);
        }
    }
    // the local submission: the same path
    let body = submit_locally(&mtad, "please mark local");
    assert_eq!(header(&body, "X-Spam").as_deref(), Some("Yes"));
    let score = header(&body, "X-Rspamd-Score").unwrap_or_default();
    assert!(score.ends_with("action=add header"), "{score}");
    let log = mtad.log();
    assert!(
        log.contains("milter-reject: END-OF-MESSAGE") && log.contains("Gtube pattern"),
        "{log}"
    );
    assert!(log.contains("action=\"add header\""), "{log}");

    // rspamd stopped in the middle of a load: 451, and nothing acknowledged lost
    stop_mid_load(&mtad, &mut filter, http, "451 4.7.1");
    assert!(mtad.log().contains("milter failed milter=rspamd-http"));
}

/// Clients send messages on 4 connections at once while `filter` (listening on
/// `filter_port`) is stopped: every message acknowledged (250) is in the queue, and once the
/// filter is gone every client hears `expect` (the configured failure action), never
/// a 250.
fn stop_mid_load(mtad: &Mtad, filter: &mut Daemon, filter_port: u16, expect: &str) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let done = Arc::new(AtomicBool::new(false));
    let stopped = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let after = Arc::new(Mutex::new(Vec::<Result<(), String>>::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let port = mtad.port;
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (done, stopped, acked, after, sent) = (
                done.clone(),
                stopped.clone(),
                acked.clone(),
                after.clone(),
                sent.clone(),
            );
            std::thread::spawn(move || {
                let mut n = 0;
                while !done.load(Ordering::SeqCst) {
                    let subject = format!("load {w}-{n}");
                    n += 1;
                    let was_stopped = stopped.load(Ordering::SeqCst);
                    let result = try_message(port, "bob@mx.test", &subject);
                    sent.fetch_add(1, Ordering::SeqCst);
                    if result.is_ok() {
                        acked.lock().unwrap().push(subject);
                    }
                    if was_stopped {
                        after.lock().unwrap().push(result);
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 8 {
        assert!(
            Instant::now() < deadline,
            "no load got through; the filter: {}\nmtad: {}",
            filter.describe(),
            mtad.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    filter.stop();
    wait_closed(filter_port);
    stopped.store(true, Ordering::SeqCst);
    while after.lock().unwrap().len() < 12 {
        assert!(Instant::now() < deadline, "no answers after the stop");
        std::thread::sleep(Duration::from_millis(10));
    }
    done.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    // nothing acknowledged is lost
    let queued: Vec<String> = mtad
        .queued()
        .iter()
        .filter_map(|(_, body)| header(body, "Subject"))
        .collect();
    for subject in acked.lock().unwrap().iter() {
        assert!(
            queued.contains(subject),
            "`{subject}` was acknowledged but is not queued"
        );
    }
    // the filter is gone: the failure action, every time
    for result in after.lock().unwrap().iter() {
        match result {
            Ok(()) => panic!("a message passed a stopped filter (expected {expect})"),
            Err(line) => assert!(line.starts_with(expect), "{line} (expected {expect})"),
        }
    }
}

#[test]
fn a_stopped_milter_tempfails_by_default_and_loses_nothing() {
    let keys = tempfile::tempdir().unwrap();
    let (key, text) = opendkim_genkey(keys.path(), "example.test", "sel");
    let dns = Dnsmasq::start(&[&Dnsmasq::txt("sel._domainkey.example.test", &text)]);
    let port = free_port();
    let mut filter = opendkim(keys.path(), port, &key, dns.addr);
    let mtad = Mtad::start(&config_with(&format!(
        r#"
milter "opendkim" "inet:127.0.0.1:{port}" connect-timeout="2s"
listen "mx" address="127.0.0.1:{{port}}" milters="opendkim"
"#
    )));
    stop_mid_load(&mtad, &mut filter, port, "451 4.7.1");
    let log = mtad.log();
    assert!(log.contains("milter failed"), "{log}");
    // back: mail passes again
    let _filter = opendkim(keys.path(), port, &key, dns.addr);
    try_message(mtad.port, "bob@mx.test", "after the restart").expect("accepted again");
}

#[test]
fn failure_actions_of_a_stopped_milter() {
    let keys = tempfile::tempdir().unwrap();
    let (key, text) = opendkim_genkey(keys.path(), "example.test", "sel");
    let dns = Dnsmasq::start(&[&Dnsmasq::txt("sel._domainkey.example.test", &text)]);
    let port = free_port();
    let mut filter = opendkim(keys.path(), port, &key, dns.addr);
    let (accept, reject, shutdown) = (free_port(), free_port(), free_port());
    let mtad = Mtad::start(&config_with(&format!(
        r#"
milter "tempfail" "inet:127.0.0.1:{port}"
milter "accept" "inet:127.0.0.1:{port}" on-failure="accept"
milter "reject" "inet:127.0.0.1:{port}" on-failure="reject"
milter "shutdown" "inet:127.0.0.1:{port}" on-failure="shutdown"
listen "mx" address="127.0.0.1:{{port}}" milters="tempfail"
listen "accept" address="127.0.0.1:{accept}" milters="accept"
listen "reject" address="127.0.0.1:{reject}" milters="reject"
listen "shutdown" address="127.0.0.1:{shutdown}" milters="shutdown"
"#
    )));
    // sessions that start while the filter runs, and lose it before their message
    let mut sessions: Vec<Client> = [mtad.port, accept, reject, shutdown]
        .iter()
        .map(|p| {
            let mut c = Client::connect(*p);
            c.expect("220 ");
            c.cmd("EHLO client.test", "250");
            c
        })
        .collect();
    filter.stop();
    let expect = ["451 4.7.1", "250 ", "550 5.7.1", "421 4.7.0"];
    for (c, want) in sessions.iter_mut().zip(expect) {
        let reply = c.cmd("MAIL FROM:<alice@example.test>", "");
        assert!(reply.starts_with(want), "{reply} (expected {want})");
    }
    // and sessions that start without it
    for (p, want) in [mtad.port, accept, reject].iter().zip(expect) {
        let r = try_message(*p, "bob@mx.test", "no filter");
        match want {
            "250 " => r.expect("on-failure=accept lets it through"),
            _ => assert!(r.unwrap_err().starts_with(want)),
        }
    }
    let mut c = Client::connect(shutdown);
    let reply = c.expect("421");
    assert!(reply.starts_with("421 4.7.0"), "{reply}");
}

/// A message with Subject `subject` given to mtad's `sendmail` (local submission):
/// the message as queued once the pickup took it.
fn submit_locally(mtad: &Mtad, subject: &str) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sendmail"))
        .arg("-C")
        .arg(&mtad.config)
        .args(["-f", "alice@example.test", "bob@mx.test"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(message("alice@example.test", subject, "From a program.").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((_, body)) = mtad
            .queued()
            .into_iter()
            .find(|(_, b)| header(b, "Subject").as_deref() == Some(subject))
        {
            return body;
        }
        assert!(Instant::now() < deadline, "not picked up:\n{}", mtad.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn local_submission_goes_through_its_milters() {
    let keys = tempfile::tempdir().unwrap();
    let (key, text) = opendkim_genkey(keys.path(), "example.test", "sel");
    let dns = Dnsmasq::start(&[&Dnsmasq::txt("sel._domainkey.example.test", &text)]);
    let port = free_port();
    // the local submission's listener is named `sendmail` ({daemon_name})
    let _opendkim = opendkim_signing_for(keys.path(), port, &key, dns.addr, "sendmail");
    let mtad = Mtad::start(&config_with(&format!(
        r#"
milter "opendkim" "inet:127.0.0.1:{port}"
listen "mx" address="127.0.0.1:{{port}}"
local-submission {{
    maildrop "{{dir}}/maildrop"
    milters "opendkim"
}}
"#
    )));
    let body = submit_locally(&mtad, "local");
    let signature = header(&body, "DKIM-Signature")
        .unwrap_or_else(|| panic!("not signed:\n{}", String::from_utf8_lossy(&body)));
    assert!(signature.contains("d=example.test"), "{signature}");
}

#[test]
fn test_policy_records_what_the_milters_would_get() {
    // nothing listens there: contacting either would fail the transaction (tempfail)
    let (port, http) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mtad.kdl");
    std::fs::write(
        &config,
        format!(
            r#"
server {{
    hostname "mx.test"
    spool "spool"
}}
milter "rspamd" "inet:127.0.0.1:{port}" {{
    macros "mail" "i {{mail_addr}} {{auth_authen}}"
}}
rspamd "rspamd-http" "http://127.0.0.1:{http}"
listen "mx" address="127.0.0.1:2525" milters="rspamd rspamd-http"
stage "rcpt" {{
    accept open-relay="intended"
}}
"#
        ),
    )
    .unwrap();
    let message = dir.path().join("m.eml");
    std::fs::write(&message, "Subject: hi\r\n\r\nbody\r\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .args(["test-policy", "--config"])
        .arg(&config)
        .args([
            "--client",
            "192.0.2.7",
            "--helo",
            "c.test",
            "--auth",
            "alice",
        ])
        .args(["--from", "a@b.test", "--rcpt", "x@mx.test", "--message"])
        .arg(&message)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "milter (not contacted): rspamd: CONNECT [192.0.2.7]; macros j=mx.test {daemon_name}=mx",
        "milter (not contacted): rspamd: HELO c.test",
        "rspamd: MAIL <a@b.test> SIZE=",
        "{mail_addr}=a@b.test {auth_authen}=alice",
        "milter (not contacted): rspamd: RCPT <x@mx.test>; macros i=",
        "milter (not contacted): rspamd: END-OF-MESSAGE (1 headers, a 6-byte body); macros i=",
        // rspamd over HTTP: only the message, with the request it would make
        &format!(
            "milter (not contacted): rspamd-http: POST http://127.0.0.1:{http}/checkv2 (Queue-Id: "
        ),
        "IP: 192.0.2.7, Helo: c.test, Hostname: unknown, User: alice, From: <a@b.test>, Rcpt: <x@mx.test>, MTA-Name: mx.test, MTA-Tag: mx; a 21-byte message)",
        "outcome: queued",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains("rspamd-http: CONNECT"), "{text}");
}

/// The configuration snippets of docs/milters.md and docs/configuration.md's milter
/// and rspamd sections are valid.
#[test]
fn documented_configuration_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for doc in ["docs/milters.md", "docs/configuration.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for block in text
            .split("```kdl\n")
            .skip(1)
            .map(|b| b.split("```").next().unwrap())
            .filter(|b| b.contains("milter \"") || b.contains("rspamd \""))
        {
            let mut config =
                "server {\n    hostname \"h.example.test\"\n    spool \"/tmp/x\"\n}\n".to_owned();
            config.push_str(block);
            if !block.contains("listen \"") {
                config.push_str("listen \"mx\" address=\"127.0.0.1:2525\"\n");
            }
            if block.contains("\"login-senders\"") {
                config.push_str("table \"login-senders\" {\n    \"root\" \"*\"\n}\n");
            }
            if block.contains("milter-skip-clients") && !block.contains("networks") {
                config.push_str("networks \"trusted\" \"10.0.0.0/8\"\n");
            }
            if let Err(e) = mtad::config::Config::parse("mtad.kdl", &config) {
                panic!("{doc}:\n{block}\n{}", mtad::config::render(&e));
            }
            checked += 1;
        }
    }
    assert!(checked >= 3, "{checked} snippets");
}

/// A scripted milter (not a real filter: for the answers no filter above gives on
/// demand): negotiates every action, answers `continue` to every event, except
/// `RCPT TO:<tempfail@...>` (tempfail) and `<full@...>` (its own 452), and at the end
/// of the message what the Subject asks for.
fn scripted_milter() -> u16 {
    scripted_milter_recording().0
}

/// Macros a milter was sent: `(command, name, value)`, in order.
type Recorded = std::sync::Arc<std::sync::Mutex<Vec<(char, String, String)>>>;

/// [`scripted_milter`], and the macros it was sent.
fn scripted_milter_recording() -> (u16, Recorded) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let recorded = Recorded::default();
    let record = recorded.clone();
    fn packet(code: u8, data: &[u8]) -> Vec<u8> {
        let mut out = ((data.len() + 1) as u32).to_be_bytes().to_vec();
        out.push(code);
        out.extend_from_slice(data);
        out
    }
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let record = record.clone();
            std::thread::spawn(move || {
                let mut subject = String::new();
                loop {
                    let mut len = [0u8; 4];
                    if s.read_exact(&mut len).is_err() {
                        return;
                    }
                    let mut data = vec![0u8; u32::from_be_bytes(len) as usize];
                    if s.read_exact(&mut data).is_err() {
                        return;
                    }
                    let (code, data) = (data[0], &data[1..]);
                    let text = String::from_utf8_lossy(data).into_owned();
                    let answer: Vec<u8> = match code {
                        b'O' => {
                            let mut n = 6u32.to_be_bytes().to_vec();
                            n.extend_from_slice(&0x1FFu32.to_be_bytes());
                            n.extend_from_slice(&0u32.to_be_bytes());
                            packet(b'O', &n)
                        }
                        b'D' => {
                            let mut parts = data[1..].split(|&b| b == 0);
                            while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
                                if name.is_empty() {
                                    break;
                                }
                                record.lock().unwrap().push((
                                    data[0] as char,
                                    String::from_utf8_lossy(name).into_owned(),
                                    String::from_utf8_lossy(value).into_owned(),
                                ));
                            }
                            continue;
                        }
                        b'A' => continue,
                        b'Q' => return,
                        b'R' if text.starts_with("<tempfail@") => packet(b't', b""),
                        b'R' if text.starts_with("<full@") => {
                            packet(b'y', b"452 4.2.2 Mailbox full\0")
                        }
                        b'L' => {
                            let mut parts = text.split('\0');
                            if parts.next() == Some("Subject") {
                                subject = parts.next().unwrap_or("").trim().to_owned();
                            }
                            packet(b'c', b"")
                        }
                        b'E' => match subject.as_str() {
                            "discard" => packet(b'd', b""),
                            "quarantine" => {
                                [packet(b'q', b"too fishy\0"), packet(b'c', b"")].concat()
                            }
                            "envelope" => [
                                packet(b'e', b"<new@example.test>\0"),
                                packet(b'+', b"<added@mx.test>\0"),
                                packet(b'-', b"<bob@mx.test>\0"),
                                packet(b'c', b""),
                            ]
                            .concat(),
                            "body" => {
                                [packet(b'b', b"replaced\r\nbody\r\n"), packet(b'a', b"")].concat()
                            }
                            "headers" => {
                                let mut ins = 0u32.to_be_bytes().to_vec();
                                ins.extend_from_slice(b"X-First\0top\0");
                                let mut chg = 1u32.to_be_bytes().to_vec();
                                chg.extend_from_slice(b"Subject\0changed\0");
                                let mut del = 1u32.to_be_bytes().to_vec();
                                del.extend_from_slice(b"X-Drop\0\0");
                                [
                                    packet(b'i', &ins),
                                    packet(b'm', &chg),
                                    packet(b'm', &del),
                                    packet(b'h', b"X-Last\0folded\n\tline\0"),
                                    packet(b'a', b""),
                                ]
                                .concat()
                            }
                            "injection" => {
                                [packet(b'h', b"X-Bad\0a\r\nBcc: x@y\0"), packet(b'a', b"")]
                                    .concat()
                            }
                            "shutdown" => packet(b'4', b""),
                            _ => packet(b'a', b""),
                        },
                        _ => packet(b'c', b""),
                    };
                    if s.write_all(&answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, recorded)
}

/// The macros Postfix gives that need the session's AUTH and the route stage:
/// `{auth_type}` (the SASL mechanism), `{auth_author}` (MAIL FROM's `AUTH=`, xtext
/// decoded, from an authenticated client only), `{mail_mailer}`/`{mail_host}` and
/// `{rcpt_mailer}`/`{rcpt_host}` (the transport and next hop the route stage gives
/// the address), sent by the real session to a milter that records them.
#[test]
fn auth_and_route_macros_have_their_values() {
    let (port, recorded) = scripted_milter_recording();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users.passwd"), "alice:{PLAIN}secret-pw\n").unwrap();
    let spool = dir.path().join("spool");
    let mtad = Mtad::start_in(
        dir,
        spool,
        &config_with(&format!(
            r#"
milter "scripted" "inet:127.0.0.1:{port}"
users "u" file="{{dir}}/users.passwd"
listen "mx" address="127.0.0.1:{{port}}" milters="scripted" auth="offered" auth-plaintext=#true users="u"
stage "route" {{
    transport "mx.test" "lmtp:[127.0.0.1]:24"
}}
"#
        )),
    );
    let macros = |cmd: char| -> Vec<(String, String)> {
        recorded
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, _, _)| *c == cmd)
            .map(|(_, n, v)| (n.clone(), v.clone()))
            .collect()
    };
    let has = |cmd: char, name: &str, value: &str| {
        let got = macros(cmd);
        assert!(
            got.iter().any(|(n, v)| n == name && v == value),
            "no {name}={value} at {cmd}: {got:?}"
        );
    };
    // without AUTH: none of the AUTH macros, but the route's
    let mut c = mtad.session();
    c.cmd("EHLO client.test", "250");
    c.cmd("MAIL FROM:<alice@example.test> AUTH=<>", "250 ");
    c.cmd("RCPT TO:<bob@mx.test>", "250 ");
    has('M', "{mail_mailer}", "smtp");
    has('M', "{mail_host}", "example.test");
    has('R', "{rcpt_mailer}", "lmtp");
    has('R', "{rcpt_host}", "[127.0.0.1]:24");
    assert!(
        !macros('M').iter().any(|(n, _)| n.starts_with("{auth_")),
        "{:?}",
        macros('M')
    );
    c.cmd("QUIT", "221");
    recorded.lock().unwrap().clear();
    // with AUTH
    let mut c = mtad.session();
    c.cmd("EHLO client.test", "250");
    c.cmd(
        &format!("AUTH PLAIN {}", base64_plain("alice", "secret-pw")),
        "235 ",
    );
    c.cmd(
        "MAIL FROM:<alice@example.test> AUTH=alice+2Bx@example.test",
        "250 ",
    );
    c.cmd("RCPT TO:<carol@elsewhere.test>", "250 ");
    has('M', "{auth_type}", "PLAIN");
    has('M', "{auth_authen}", "alice");
    has('M', "{auth_author}", "alice+x@example.test");
    // no route rule for elsewhere.test: the default route, its MX
    has('R', "{rcpt_mailer}", "smtp");
    has('R', "{rcpt_host}", "elsewhere.test");
}

/// `\0user\0password`, base64: SASL PLAIN's initial response.
fn base64_plain(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

#[test]
fn a_scripted_milter_s_answers_and_changes() {
    let port = scripted_milter();
    let mtad = Mtad::start(&config_with(&format!(
        r#"
milter "scripted" "inet:127.0.0.1:{port}"
listen "mx" address="127.0.0.1:{{port}}" milters="scripted"
"#
    )));
    let mut c = mtad.session();
    c.cmd("EHLO client.test", "250");
    // at RCPT: tempfail, and its own reply
    c.cmd("MAIL FROM:<alice@example.test>", "250 ");
    c.cmd(
        "RCPT TO:<tempfail@mx.test>",
        "451 4.7.1 Service unavailable",
    );
    c.cmd("RCPT TO:<full@mx.test>", "452 4.2.2 Mailbox full");
    c.cmd("RSET", "250");
    let send = |c: &mut Client, subject: &str, extra: &str| {
        c.cmd("MAIL FROM:<alice@example.test>", "250 ");
        c.cmd("RCPT TO:<bob@mx.test>", "250 ");
        c.cmd("DATA", "354 ");
        c.send(format!(
            "{extra}Subject: {subject}\r\nX-Drop: me\r\n\r\noriginal\r\n.\r\n"
        ));
        c.reply()
    };
    assert!(send(&mut c, "discard", "").starts_with("250 "));
    assert!(send(&mut c, "quarantine", "").starts_with("250 "));
    assert!(send(&mut c, "envelope", "").starts_with("250 "));
    assert!(send(&mut c, "body", "").starts_with("250 "));
    assert!(send(&mut c, "headers", "From: a@example.test\r\n").starts_with("250 "));
    // a header that would inject another: a protocol error, the failure action
    let reply = send(&mut c, "injection", "");
    assert!(reply.starts_with("451 4.7.1"), "{reply}");
    let queued = mtad.queued();
    let find = |s: &str| {
        queued
            .iter()
            .find(|(_, b)| header(b, "Subject").as_deref() == Some(s))
            .unwrap_or_else(|| panic!("`{s}` not queued"))
    };
    assert!(
        !queued
            .iter()
            .any(|(_, b)| header(b, "Subject").as_deref() == Some("discard")),
        "discarded"
    );
    assert!(find("quarantine").0.envelope.held, "quarantine: held");
    let (m, _) = find("envelope");
    assert_eq!(m.envelope.sender, "new@example.test");
    assert_eq!(m.envelope.recipients, ["added@mx.test"]);
    let (_, body) = find("body");
    assert!(
        body.ends_with(b"\r\n\r\nreplaced\r\nbody\r\n"),
        "{}",
        String::from_utf8_lossy(body)
    );
    let (_, body) = find("changed");
    let text = String::from_utf8_lossy(body);
    // our Received: first, the inserted header right below it, the rest in order
    let names: Vec<&str> = text
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .split("\r\n")
        .filter(|l| !l.starts_with([' ', '\t']))
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Received", "X-First", "From", "Subject", "X-Last"],
        "{text}"
    );
    assert!(text.contains("X-Last: folded\r\n\tline\r\n"), "{text}");
    assert!(!text.contains("Bcc"), "{text}");
    // the failed milter's action stands for the rest of that session
    c.cmd("MAIL FROM:<alice@example.test>", "451 4.7.1");
    // shutdown: 421, the session ends
    let mut c = mtad.session();
    c.cmd("EHLO client.test", "250");
    let reply = send(&mut c, "shutdown", "");
    assert!(reply.starts_with("421 4.7.0"), "{reply}");
    c.expect_closed();
}

/// What clamd finds in the tests below: a custom body signature (`.ndb`), no download.
const MALWARE: &str = "MTAD-TEST-MALWARE-MARKER-51c9";

/// clamd with a signature database of one custom `.ndb` signature for [`MALWARE`]
/// (peers.md §2), on 127.0.0.1:`port`.
fn clamd(dir: &Path, port: u16) -> Daemon {
    let db = dir.join("db");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let hex: String = MALWARE.bytes().map(|b| format!("{b:02x}")).collect();
    std::fs::write(
        db.join("local.ndb"),
        format!("Mtad.Test.Marker-NDB:0:*:{hex}\n"),
    )
    .unwrap();
    let conf = dir.join("clamd.conf");
    std::fs::write(
        &conf,
        format!(
            "DatabaseDirectory {}\nTCPSocket {port}\nTCPAddr 127.0.0.1\nForeground yes\n\
             TemporaryDirectory {}\nSelfCheck 0\nScanMail yes\n",
            db.display(),
            dir.join("tmp").display()
        ),
    )
    .unwrap();
    let mut command = Command::new(require_tool("clamd"));
    command.arg(format!("--config-file={}", conf.display()));
    Daemon::spawn(command, port, "clamd")
}

/// clamav-milter on 127.0.0.1:`port` asking clamd on `clamd_port`, doing `on_infected`
/// (`Reject`, `Quarantine`, `Blackhole`) with what it finds, deferring when clamd
/// fails, and marking every message it scans (`X-Virus-Status`).
fn clamav_milter(dir: &Path, port: u16, clamd_port: u16, on_infected: &str) -> Daemon {
    let conf = dir.join(format!("clamav-milter-{on_infected}.conf"));
    std::fs::write(
        &conf,
        format!(
            "MilterSocket inet:{port}@127.0.0.1\nClamdSocket tcp:127.0.0.1:{clamd_port}\n\
             Foreground yes\nOnInfected {on_infected}\nOnClean Accept\nOnFail Defer\n\
             AddHeader Replace\nRejectMsg \"Virus found: %v\"\n"
        ),
    )
    .unwrap();
    let mut command = Command::new(require_tool("clamav-milter"));
    command.arg(format!("--config-file={}", conf.display()));
    Daemon::spawn(command, port, "clamav-milter")
}

/// clamav-milter's answers, each from the real filter: reject (with its reply),
/// quarantine (held in our queue), blackhole (a discard: 250, nothing queued), a
/// header change on clean mail, and a tempfail of its own when clamd is gone.
#[test]
fn clamav_milter_rejects_quarantines_and_discards_as_configured() {
    let dir = tempfile::tempdir().unwrap();
    let clamd_port = free_port();
    let mut clamd = clamd(dir.path(), clamd_port);
    let mut listeners = String::new();
    let mut milters = Vec::new();
    let mut ports = Vec::new();
    for action in ["Reject", "Quarantine", "Blackhole"] {
        let (milter_port, listen_port) = (free_port(), free_port());
        milters.push(clamav_milter(dir.path(), milter_port, clamd_port, action));
        ports.push(listen_port);
        listeners += &format!(
            "milter \"clam-{action}\" \"inet:127.0.0.1:{milter_port}\"\n\
             listen \"{action}\" address=\"127.0.0.1:{listen_port}\" milters=\"clam-{action}\"\n"
        );
    }
    let mtad = Mtad::start(&config_with(&format!(
        "listen \"mx\" address=\"127.0.0.1:{{port}}\"\n{listeners}"
    )));
    let infected = |subject: &str| {
        message(
            "alice@example.test",
            subject,
            &format!("Here it is: {MALWARE}"),
        )
    };
    let session = |port: u16| {
        let mut c = Client::connect(port);
        c.expect("220 ");
        c.cmd("EHLO client.test", "250");
        c.cmd("MAIL FROM:<alice@example.test>", "250 ");
        c.cmd("RCPT TO:<bob@mx.test>", "250 ");
        c.cmd("DATA", "354 ");
        c
    };

    // Reject: clamav-milter's own reply, nothing queued
    let mut c = session(ports[0]);
    c.send(infected("rejected"));
    c.send(".\r\n");
    let reply = c.expect("5");
    assert!(
        reply.starts_with("550 5.7.1 Virus found: Mtad.Test.Marker-NDB"),
        "{reply}"
    );
    mtad.wait_log("milter-reject: END-OF-MESSAGE", 1, Duration::from_secs(5));
    // clean mail on the same listener passes, marked by the milter
    let id = c.send_message(
        "alice@example.test",
        &["bob@mx.test"],
        &message("alice@example.test", "clean", "Nothing to see."),
    );
    let (m, body) = queued_with_subject(&mtad, "clean");
    assert_eq!(m.id.to_string(), id);
    assert_eq!(header(&body, "X-Virus-Status").as_deref(), Some("Clean"));
    assert!(!m.envelope.held);

    // Quarantine: accepted, and on hold in our queue
    let mut c = session(ports[1]);
    c.send(infected("quarantined"));
    c.send(".\r\n");
    c.expect("250 ");
    let (m, body) = queued_with_subject(&mtad, "quarantined");
    assert!(m.envelope.held, "quarantine is a hold");
    assert!(
        header(&body, "X-Virus-Status")
            .unwrap_or_default()
            .starts_with("Infected"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    mtad.wait_log("milter-hold: END-OF-MESSAGE", 1, Duration::from_secs(5));

    // Blackhole: the client hears 250, the message is discarded
    let queued_before = mtad.queued().len();
    let mut c = session(ports[2]);
    c.send(infected("blackholed"));
    c.send(".\r\n");
    c.expect("250 ");
    mtad.wait_log("milter-discard: END-OF-MESSAGE", 1, Duration::from_secs(5));
    assert_eq!(
        mtad.queued().len(),
        queued_before,
        "a discarded message was queued"
    );

    // clamd gone: clamav-milter answers tempfail itself (OnFail Defer), a 4xx
    clamd.stop();
    wait_closed(clamd_port);
    let mut c = session(ports[0]);
    c.send(infected("deferred"));
    c.send(".\r\n");
    let reply = c.expect("4");
    assert!(reply.starts_with("451 4.7.1"), "{reply}");
    assert!(
        !mtad
            .queued()
            .iter()
            .any(|(_, b)| header(b, "Subject").as_deref() == Some("deferred"))
    );
    drop(milters);
}

/// clamav-milter stopped in the middle of a load, configured `on-failure="reject"` (a
/// virus filter whose absence means mail must not be taken): every acknowledged
/// message is queued, and once it is gone every client hears `550 5.7.1`.
#[test]
fn clamav_milter_stopped_mid_load_rejects_as_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (clamd_port, milter_port, metrics) = (free_port(), free_port(), free_port());
    let _clamd = clamd(dir.path(), clamd_port);
    let mut milter = clamav_milter(dir.path(), milter_port, clamd_port, "Reject");
    let mtad = Mtad::start(
        &config_with(&format!(
            r#"
milter "clamav" "inet:127.0.0.1:{milter_port}" on-failure="reject" connect-timeout="2s"
listen "mx" address="127.0.0.1:{{port}}" milters="clamav"
"#
        ))
        .replace(
            "    spool \"{spool}\"\n",
            &format!("    spool \"{{spool}}\"\n    metrics \"127.0.0.1:{metrics}\"\n"),
        ),
    );
    stop_mid_load(&mtad, &mut milter, milter_port, "550 5.7.1");
    let log = mtad.log();
    assert!(
        log.contains("milter failed milter=clamav") && log.contains("on_failure=\"reject\""),
        "{log}"
    );
    // each failure counted: at least the 12 sessions answered after the stop
    let failures = sample(
        &scrape(metrics),
        r#"mtad_milter_failures_total{milter="clamav"}"#,
    );
    assert!(failures >= 12.0, "{failures}");
}

/// spamd (the shipped rules, no network tests) on 127.0.0.1:`port`, its helper home in
/// `dir` (owned by debian-spamd, as spamd wants it).
fn spamd(dir: &Path, port: u16) -> Daemon {
    use std::os::unix::fs::PermissionsExt;
    let home = dir.join("spamd-home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let user = Command::new("id")
        .args(["-u", "debian-spamd"])
        .output()
        .expect("id");
    let uid: u32 = String::from_utf8_lossy(&user.stdout)
        .trim()
        .parse()
        .expect("no debian-spamd user (apt-get install spamd)");
    std::os::unix::fs::chown(&home, Some(uid), None).unwrap();
    let mut command = Command::new(require_tool("spamd"));
    command
        .arg(format!("--listen=127.0.0.1:{port}"))
        .args([
            "--allowed-ips=127.0.0.1",
            "--username=debian-spamd",
            "--groupname=debian-spamd",
            "--local",
            "--nouser-config",
            "--max-children=1",
            "--min-children=1",
        ])
        .arg(format!("--helper-home-dir={}", home.display()))
        .arg(format!("--syslog={}", dir.join("spamd.log").display()));
    Daemon::spawn(command, port, "spamd")
}

/// spamass-milter on 127.0.0.1:`port` asking spamd on `spamd_port`, with `args`
/// (`-r 15`: reject at a score of 15; `-b ADDR`: spam goes to ADDR instead).
fn spamass_milter(port: u16, spamd_port: u16, args: &[&str]) -> Daemon {
    let mut command = Command::new(require_tool("spamass-milter"));
    command
        .arg("-p")
        .arg(format!("inet:{port}@127.0.0.1"))
        .args(args)
        .args(["--", "-d", "127.0.0.1", "-p", &spamd_port.to_string()]);
    Daemon::spawn(command, port, "spamass-milter")
}

/// spamass-milter with spamd: GTUBE refused with its reply (`-r`), clean mail marked
/// (a header added), and spam redirected (`-b`): the filter deletes the recipient and
/// adds its bucket, which is whom the queued message is for.
#[test]
fn spamass_milter_rejects_marks_and_redirects_spam() {
    let dir = tempfile::tempdir().unwrap();
    let spamd_port = free_port();
    let _spamd = spamd(dir.path(), spamd_port);
    let (reject_port, redirect_port) = (free_port(), free_port());
    let mut reject = spamass_milter(reject_port, spamd_port, &["-r", "15"]);
    let _redirect = spamass_milter(redirect_port, spamd_port, &["-b", "spam@bucket.test"]);
    let redirect_listener = free_port();
    let mtad = Mtad::start(&config_with(&format!(
        r#"
milter "sa-reject" "inet:127.0.0.1:{reject_port}" content-timeout="60s"
milter "sa-redirect" "inet:127.0.0.1:{redirect_port}" content-timeout="60s"
listen "mx" address="127.0.0.1:{{port}}" milters="sa-reject"
listen "redirect" address="127.0.0.1:{redirect_listener}" milters="sa-redirect"
"#
    )));
    let gtube = |subject: &str| message("alice@example.test", subject, GTUBE);

    // -r 15: GTUBE (score 1000) refused with spamass-milter's reply
    let mut c = mtad.session();
    c.cmd("EHLO client.test", "250");
    let reply = refused_message(&mut c, &gtube("gtube"), "5");
    assert!(
        reply.starts_with("550 5.7.1 Blocked by SpamAssassin"),
        "{reply}"
    );
    // clean mail passes, with SpamAssassin's header
    c.send_message(
        "alice@example.test",
        &["bob@mx.test"],
        &message("alice@example.test", "clean", "Lunch at noon?"),
    );
    let (_, body) = queued_with_subject(&mtad, "clean");
    let status = header(&body, "X-Spam-Status")
        .unwrap_or_else(|| panic!("no X-Spam-Status:\n{}", String::from_utf8_lossy(&body)));
    assert!(status.starts_with("No, score="), "{status}");

    // -b: the spam is accepted, for the bucket instead of bob
    let mut c = Client::connect(redirect_listener);
    c.expect("220 ");
    c.cmd("EHLO client.test", "250");
    c.send_message("alice@example.test", &["bob@mx.test"], &gtube("redirected"));
    let (m, body) = queued_with_subject(&mtad, "redirected");
    assert_eq!(
        m.envelope.recipients,
        ["spam@bucket.test"],
        "{}",
        mtad.log()
    );
    assert!(
        header(&body, "X-Spam-Flag").is_some_and(|f| f.eq_ignore_ascii_case("YES")),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // spamass-milter stopped in the middle of a load: 451, nothing acknowledged lost
    stop_mid_load(&mtad, &mut reject, reject_port, "451 4.7.1");
}

/// OpenDMARC (peers.md §4) refusing failures (`RejectFailures`), its SPF checked by
/// itself, its DNS a dnsmasq named by the /etc/resolv.conf of its own mount namespace.
/// Mail from good.test with good.test's envelope passes, marked `dmarc=pass`; mail
/// whose From: is bad.test (p=reject) but whose envelope is another domain (SPF passes
/// unaligned, no DKIM) gets OpenDMARC's refusal.
#[test]
fn opendmarc_passes_aligned_mail_and_refuses_a_failure() {
    require_tool("unshare");
    let opendmarc = require_tool("opendmarc");
    let (_dns, ns) = common::peers::dnsmasq_on_53(&[
        "--txt-record=good.test,v=spf1 ip4:127.0.0.0/8 -all",
        "--txt-record=other.test,v=spf1 ip4:127.0.0.0/8 -all",
        "--txt-record=_dmarc.good.test,v=DMARC1; p=reject",
        "--txt-record=_dmarc.bad.test,v=DMARC1; p=reject",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {ns}\n")).unwrap();
    let ignore = dir.path().join("ignore.hosts");
    // OpenDMARC ignores loopback clients by default; here nothing but this is ignored
    std::fs::write(&ignore, "192.0.2.254\n").unwrap();
    let port = free_port();
    let conf = dir.path().join("opendmarc.conf");
    std::fs::write(
        &conf,
        format!(
            "Socket inet:{port}@127.0.0.1\nAuthservID mx.test\nBackground false\n\
             IgnoreHosts {}\nSPFSelfValidate true\nRejectFailures true\nSyslog false\n",
            ignore.display()
        ),
    )
    .unwrap();
    let script = format!(
        "mount --bind {} /etc/resolv.conf && exec {} -f -c {}",
        resolv.display(),
        opendmarc.display(),
        conf.display()
    );
    let mut command = Command::new("unshare");
    command.args(["-m", "sh", "-c", &script]);
    let mut filter = Daemon::spawn(command, port, "opendmarc");
    let mtad = Mtad::start(&config_with(&format!(
        r#"
milter "opendmarc" "inet:127.0.0.1:{port}"
listen "mx" address="127.0.0.1:{{port}}" milters="opendmarc"
"#
    )));
    // aligned: dmarc=pass in OpenDMARC's Authentication-Results
    let mut c = mtad.session();
    c.cmd("EHLO client.good.test", "250");
    c.send_message(
        "alice@good.test",
        &["bob@mx.test"],
        &message("alice@good.test", "aligned", "Hello."),
    );
    let (_, body) = queued_with_subject(&mtad, "aligned");
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("Authentication-Results: mx.test; dmarc=pass"),
        "{text}"
    );
    // From: bad.test, envelope other.test: a DMARC failure, refused by OpenDMARC
    let mut c = mtad.session();
    c.cmd("EHLO client.other.test", "250");
    c.cmd("MAIL FROM:<x@other.test>", "250 ");
    c.cmd("RCPT TO:<bob@mx.test>", "250 ");
    c.cmd("DATA", "354 ");
    c.send(message("alice@bad.test", "unaligned", "Hello."));
    c.send(".\r\n");
    let reply = c.expect("5");
    assert!(
        reply.starts_with("550 5.7.1 rejected by DMARC policy for bad.test"),
        "{reply}"
    );
    assert!(
        !mtad
            .queued()
            .iter()
            .any(|(_, b)| header(b, "Subject").as_deref() == Some("unaligned"))
    );
    // OpenDMARC stopped in the middle of a load: 451, nothing acknowledged lost
    stop_mid_load(&mtad, &mut filter, port, "451 4.7.1");
}

/// The decision log's records of a session through `mtad`, once the record of the
/// message whose Subject is `subject` (its data stage) is written.
fn decisions_until(mtad: &Mtad, subject: &str) -> Vec<serde_json::Value> {
    let log = mtad.spool.join("decisions/decisions.jsonl");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all: Vec<serde_json::Value> = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if all.iter().any(|r| {
            r["stage"] == "data"
                && r["headers"]
                    .as_str()
                    .is_some_and(|h| h.contains(&format!("Subject: {subject}")))
        }) {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "no data record for `{subject}`: {all:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `mtactl replay --json` of mtad's decision log against `config`: the exit status
/// and the report.
fn replay_against(mtad: &Mtad, config: &Path) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .arg("--config")
        .arg(config)
        .args(["replay", "--json"])
        .arg(mtad.spool.join("decisions/decisions.jsonl"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), report)
}

/// The decision log holds what spamass-milter (with spamd) answered at each command
/// — its refusal of GTUBE with its own reply, the headers it added to clean mail —
/// and a replay gives those answers back instead of asking it: against the same
/// policy nothing changes (the refusal stays one), without the milter exactly the
/// refused message's decision changes (reject -> accept, the milter named), and with
/// a milter the log has no answer of, the decisions that would ask it are unknown.
#[test]
fn milter_answers_are_logged_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let spamd_port = free_port();
    let _spamd = spamd(dir.path(), spamd_port);
    let reject_port = free_port();
    let _reject = spamass_milter(reject_port, spamd_port, &["-r", "15"]);
    let milter =
        format!("milter \"sa-reject\" \"inet:127.0.0.1:{reject_port}\" content-timeout=\"60s\"\n");
    let mtad = Mtad::start(&config_with(&format!(
        "{milter}listen \"mx\" address=\"127.0.0.1:{{port}}\" milters=\"sa-reject\"\n"
    )));
    let mut c = mtad.session();
    c.cmd("EHLO client.test", "250");
    let reply = refused_message(&mut c, &message("alice@example.test", "gtube", GTUBE), "5");
    assert!(
        reply.starts_with("550 5.7.1 Blocked by SpamAssassin"),
        "{reply}"
    );
    c.send_message(
        "alice@example.test",
        &["bob@mx.test"],
        &message("alice@example.test", "clean", "Lunch at noon?"),
    );
    let all = decisions_until(&mtad, "clean");
    let data = |subject: &str| {
        all.iter()
            .find(|r| {
                r["stage"] == "data"
                    && r["headers"]
                        .as_str()
                        .is_some_and(|h| h.contains(&format!("Subject: {subject}")))
            })
            .unwrap_or_else(|| panic!("no data record for {subject}: {all:#?}"))
    };
    // GTUBE: refused by the milter before the rules ran, its reply recorded
    let gtube = data("gtube");
    assert_eq!(gtube["verdict"], "reject", "{gtube:#}");
    assert_eq!(gtube["rule"], "milter:sa-reject", "{gtube:#}");
    assert!(
        gtube["reply"]
            .as_str()
            .unwrap()
            .starts_with("550 5.7.1 Blocked by SpamAssassin"),
        "{gtube:#}"
    );
    let answer = &gtube["milters"][0];
    assert_eq!(answer["milter"], "sa-reject");
    assert_eq!(answer["event"], "end-of-message");
    assert_eq!(answer["action"], "reply", "{answer:#}");
    // clean: accepted by the rules, the milter's headers in the summary of its changes
    let clean = data("clean");
    assert_eq!(clean["verdict"], "accept", "{clean:#}");
    let answer = &clean["milters"][0];
    assert!(
        answer["action"] == "continue" || answer["action"] == "accept",
        "{clean:#}"
    );
    assert!(
        answer["changes"].as_array().unwrap().iter().any(|c| {
            let c = c.as_str().unwrap();
            c.contains("X-Spam-Status:") && c.contains("score=")
        }),
        "{clean:#}"
    );
    // and the commands before: each record has the milter's answer
    for stage in ["connect", "helo", "mail", "rcpt"] {
        let r = all.iter().find(|r| r["stage"] == stage).unwrap();
        assert_eq!(r["milters"][0]["milter"], "sa-reject", "{r:#}");
        assert_eq!(r["milters"][0]["event"], stage, "{r:#}");
    }

    // the same policy (the milter not running: its answers come from the log)
    let (code, same) = replay_against(&mtad, &mtad.config);
    assert_eq!(code, 0, "{same:#}");
    assert_eq!(same["changed"], 0, "{same:#}");
    assert_eq!(same["unknown"], 0, "{same:#}");
    assert_eq!(same["unchanged"], same["replayed"], "{same:#}");
    // (route decisions of the delivery may come on top: they ask no milter)
    let sessions = all.iter().filter(|r| r["stage"] != "route").count() as u64;

    // without the milter: exactly GTUBE's data decision changes, naming the milter
    let text = std::fs::read_to_string(&mtad.config).unwrap();
    let without = mtad.dir.path().join("without.kdl");
    std::fs::write(&without, text.replace(" milters=\"sa-reject\"", "")).unwrap();
    let (code, diff) = replay_against(&mtad, &without);
    assert_eq!(code, 1, "{diff:#}");
    assert_eq!(diff["changed"], 1, "{diff:#}");
    let g = &diff["groups"][0];
    assert_eq!(
        (
            &g["stage"],
            &g["old_rule"],
            &g["old_verdict"],
            &g["new_verdict"]
        ),
        (
            &"data".into(),
            &"milter:sa-reject".into(),
            &"reject".into(),
            &"accept".into()
        ),
        "{diff:#}"
    );

    // another milter the log has no answer of: every decision it would be asked
    // about is unknown, never guessed
    let more = mtad.dir.path().join("more.kdl");
    std::fs::write(
        &more,
        text.replace("milters=\"sa-reject\"", "milters=\"sa-reject other\"")
            + "milter \"other\" \"inet:127.0.0.1:9\"\n",
    )
    .unwrap();
    let (code, unknown) = replay_against(&mtad, &more);
    assert_eq!(code, 1, "{unknown:#}");
    assert_eq!(unknown["changed"], 0, "{unknown:#}");
    // every decision but GTUBE's data stage, which sa-reject refused first
    assert_eq!(
        unknown["unknown"].as_u64(),
        Some(sessions - 1),
        "{unknown:#}"
    );
    assert_eq!(
        unknown["unknowns"][0]["examples"][0]["missing"][0], "milter other's answer",
        "{unknown:#}"
    );
}
