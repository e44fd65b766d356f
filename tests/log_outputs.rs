//! Where the log goes (`log { output }`, `mtad --log-output`), read by real readers:
//! syslog datagrams by a socket the test binds and by systemd-journald's own syslog
//! socket, the journal's native protocol by systemd-journald and then `journalctl`
//! (journald runs in a mount namespace of its own, its /run a temporary directory, so
//! the host's /run is untouched), JSON lines by python3's json module.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
delivery {
    queue-only #true
}
"#;

/// mtad on `CONFIG` with `log_block` after it, its stderr in `stderr.log`.
struct Daemon {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn start(log_block: &str, args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        Daemon::start_in(dir, log_block, args)
    }

    fn start_in(dir: tempfile::TempDir, log_block: &str, args: &[&str]) -> Daemon {
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        Daemon::start_with(dir, log_block, args, stderr.into(), &[])
    }

    /// mtad with this stderr and these variables in its environment.
    fn start_with(
        dir: tempfile::TempDir,
        log_block: &str,
        args: &[&str],
        stderr: Stdio,
        env: &[(&str, &str)],
    ) -> Daemon {
        std::fs::write(dir.path().join("users"), "alice:{PLAIN}secret\n").unwrap();
        let port = free_port();
        let config = format!("{CONFIG}{log_block}\n")
            .replace("{port}", &port.to_string())
            .replace("{spool}", dir.path().join("spool").to_str().unwrap())
            .replace("{dir}", dir.path().to_str().unwrap());
        std::fs::write(dir.path().join("mtad.kdl"), config).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mtad"))
            .envs(env.iter().copied())
            .arg("--config")
            .arg(dir.path().join("mtad.kdl"))
            // tests run as root
            .arg("--allow-root")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Daemon { child, port, dir }
    }

    /// Waits until stderr holds `needle`.
    fn wait_stderr(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.stderr().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Waits for mtad to exit by itself; its status and stderr.
    fn exited(mut self) -> (bool, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.success(), self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "mtad still runs: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A message accepted, then a wrong password: lines at info and at warning.
    fn traffic(&self) {
        let out = swaks(
            self.port,
            &[
                "--from",
                "a@src.test",
                "--to",
                "one@sink.test",
                "--body",
                "hi\n",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let mut c = Client::connect(self.port);
        c.expect("220");
        c.cmd("EHLO guesser.example", "250");
        c.cmd("AUTH PLAIN AGFsaWNlAHdyb25n", "535");
        c.cmd("QUIT", "221");
    }

    fn stop(&mut self) {
        signal(self.child.id(), "TERM");
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Datagrams from `socket` until `done` says the ones so far are enough.
fn receive(
    socket: &UnixDatagram,
    daemon: &Daemon,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while !done(&got) {
        assert!(
            Instant::now() < deadline,
            "datagrams so far: {got:#?}\nstderr: {}",
            daemon.stderr()
        );
        if let Ok(n) = socket.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

/// `<PRI>Mmm dd HH:MM:SS NAME/agent[pid]: text` (RFC 3164 as glibc's syslog(3) writes
/// it to /dev/log): the priority and the text.
fn rfc3164(line: &str, pid: u32) -> (u8, String, String) {
    let (pri, rest) = line
        .strip_prefix('<')
        .and_then(|l| l.split_once('>'))
        .unwrap_or_else(|| panic!("no <PRI>: {line:?}"));
    let date = rest.get(..15).unwrap_or_default();
    assert!(
        chrono::NaiveDateTime::parse_from_str(&format!("2026 {date}"), "%Y %b %e %H:%M:%S").is_ok()
            && rest.as_bytes().get(15) == Some(&b' '),
        "not an RFC 3164 date: {line:?}"
    );
    let (tag, text) = rest[16..]
        .split_once(": ")
        .unwrap_or_else(|| panic!("no tag: {line:?}"));
    let ident = tag
        .strip_suffix(&format!("[{pid}]"))
        .unwrap_or_else(|| panic!("not mtad's pid {pid}: {line:?}"));
    (pri.parse().unwrap(), ident.to_owned(), text.to_owned())
}

#[test]
fn syslog_lines_reach_a_syslog_socket_with_facility_and_severity() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let mut mtad = Daemon::start_in(
        dir,
        &format!(
            "log {{\n    output \"syslog\"\n    syslog-name \"relay\"\n    syslog-socket \"{}\"\n}}",
            path.display()
        ),
        &[],
    );
    receive(&socket, &mtad, |l| has(l, "mtad started"));
    mtad.traffic();
    let lines = receive(&socket, &mtad, |l| has(l, "authentication failed"));
    let pid = mtad.child.id();
    let parsed: Vec<(u8, String, String)> = lines.iter().map(|l| rfc3164(l, pid)).collect();
    let find = |needle: &str| {
        parsed
            .iter()
            .find(|(_, _, t)| t.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} in {parsed:#?}"))
    };
    // mail.info = 2×8+6, mail.warning = 2×8+4
    let (pri, ident, _) = find("client=unknown[127.0.0.1]");
    assert_eq!((*pri, ident.as_str()), (22, "relay/smtpd"));
    let (pri, ident, _) = find(": from=<a@src.test>, size=");
    assert_eq!((*pri, ident.as_str()), (22, "relay/qmgr"));
    let (pri, ident, text) = find("SASL PLAIN authentication failed");
    assert_eq!((*pri, ident.as_str()), (20, "relay/smtpd"));
    assert!(
        text.starts_with("warning: unknown[127.0.0.1]: SASL PLAIN"),
        "{text}"
    );
    // and nothing on stderr
    mtad.stop();
    assert_eq!(mtad.stderr(), "");
}

#[test]
fn json_lines_parse_with_every_field() {
    let mut mtad = Daemon::start("", &["--log-format", "json"]);
    mtad.wait_stderr("mtad started");
    mtad.traffic();
    mtad.wait_stderr("authentication failed");
    mtad.stop();
    let log = mtad.dir.path().join("stderr.log");
    // python3's json: every line an object; what the rest of the test checks, printed
    let script = r#"
import json, sys
for n, line in enumerate(open(sys.argv[1]), 1):
    o = json.loads(line)
    assert isinstance(o, dict), n
    for key in ("timestamp", "level", "host", "program", "pid", "target", "message", "fields"):
        assert key in o, (n, key, line)
    if "SASL PLAIN authentication failed" in o["message"]:
        print("auth", o["level"], o["program"], o["fields"]["mechanism"], o["fields"]["user"])
    if o["message"].endswith("client=unknown[127.0.0.1]"):
        print("client", o["level"], o["program"], o["target"])
    if "size=" in o["message"]:
        print("queued", o["program"])
"#;
    let out = Command::new(require_tool("python3"))
        .arg("-c")
        .arg(script)
        .arg(&log)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        mtad.stderr()
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "client info mtad/smtpd mail",
            "queued mtad/qmgr",
            "auth warn mtad/smtpd PLAIN alice"
        ],
        "{}",
        mtad.stderr()
    );
}

/// systemd-journald in a mount namespace whose /run is `run`: its sockets are
/// `run/systemd/journal/{socket,dev-log}`, its journal `run/log/journal`.
struct Journald {
    child: Child,
    run: PathBuf,
}

impl Journald {
    fn start(run: &Path) -> Journald {
        let journald = [
            "/lib/systemd/systemd-journald",
            "/usr/lib/systemd/systemd-journald",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("systemd-journald is not installed (apt-get install systemd)");
        let child = Command::new(require_tool("unshare"))
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount --bind '{}' /run && exec {journald}",
                run.display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let j = Journald {
            child,
            run: run.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !j.socket().exists() || !j.dev_log().exists() {
            assert!(Instant::now() < deadline, "systemd-journald did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        j
    }

    fn socket(&self) -> PathBuf {
        self.run.join("systemd/journal/socket")
    }

    fn dev_log(&self) -> PathBuf {
        self.run.join("systemd/journal/dev-log")
    }

    /// `journalctl` on this journal: one JSON object per entry.
    fn entries(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let out = Command::new(require_tool("journalctl"))
            .arg("-D")
            .arg(self.run.join("log/journal"))
            .args(["--no-pager", "-o", "json"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits until `journalctl ARGS` shows an entry whose MESSAGE holds `needle`.
    fn wait(&self, args: &[&str], needle: &str) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let entries = self.entries(args);
            if entries
                .iter()
                .any(|e| e["MESSAGE"].as_str().is_some_and(|m| m.contains(needle)))
            {
                return entries;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in journalctl {args:?}: {entries:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field<'a>(entry: &'a serde_json::Value, key: &str) -> &'a str {
    entry[key].as_str().unwrap_or_default()
}

#[test]
fn the_journal_has_postfix_identifiers_and_priorities() {
    let run = tempfile::tempdir().unwrap();
    let journald = Journald::start(run.path());
    for (output, socket) in [("journal", "journal-socket"), ("syslog", "syslog-socket")] {
        let path = if output == "journal" {
            journald.socket()
        } else {
            // journald's syslog socket (/dev/log when it runs as the host's)
            journald.dev_log()
        };
        let mut mtad = Daemon::start(
            &format!(
                "log {{\n    output \"{output}\"\n    syslog-name \"{output}\"\n    {socket} \"{}\"\n}}",
                path.display()
            ),
            &[],
        );
        let tag = format!("{output}/smtpd");
        journald.wait(&["-t", &format!("{output}/master")], "mtad started");
        mtad.traffic();
        // `journalctl -p warning` finds the AUTH failure, and nothing at info
        let warnings = journald.wait(&["-p", "warning", "-t", &tag], "authentication failed");
        assert!(
            warnings.iter().all(|e| field(e, "PRIORITY") <= "4"),
            "{warnings:#?}"
        );
        assert!(
            !warnings
                .iter()
                .any(|e| field(e, "MESSAGE").contains("connect from")),
            "{warnings:#?}"
        );
        let all = journald.wait(&["-t", &tag], "client=unknown[127.0.0.1]");
        let client = all
            .iter()
            .find(|e| field(e, "MESSAGE").contains("client=unknown[127.0.0.1]"))
            .unwrap();
        assert_eq!(
            (
                field(client, "PRIORITY"),
                field(client, "SYSLOG_FACILITY"),
                field(client, "SYSLOG_PID"),
            ),
            ("6", "2", mtad.child.id().to_string().as_str()),
            "{client:#?}"
        );
        if output == "journal" {
            let failed = warnings
                .iter()
                .find(|e| field(e, "MESSAGE").contains("authentication failed"))
                .unwrap();
            // the event's fields are journal fields
            assert_eq!(
                (field(failed, "MTAD_MECHANISM"), field(failed, "MTAD_USER")),
                ("PLAIN", "alice"),
                "{failed:#?}"
            );
        }
        mtad.stop();
        assert_eq!(mtad.stderr(), "", "{output}");
    }
}

/// A stream to journald's stdout socket, as systemd connects a service's stderr
/// (`StandardError=journal`): the header names the identifier and the default
/// priority (info); `<N>` prefixes would be read. Its `DEVICE:INODE` is what systemd
/// puts in `JOURNAL_STREAM`.
fn journal_stream(journald: &Journald, identifier: &str) -> (Stdio, String) {
    use std::io::Write as _;
    let mut stream =
        std::os::unix::net::UnixStream::connect(journald.run.join("systemd/journal/stdout"))
            .unwrap();
    stream
        .write_all(format!("{identifier}\n\n6\n1\n0\n0\n0\n").as_bytes())
        .unwrap();
    let stat = nix::sys::stat::fstat(&stream).unwrap();
    let id = format!("{}:{}", stat.st_dev, stat.st_ino);
    (std::os::fd::OwnedFd::from(stream).into(), id)
}

#[test]
fn a_service_whose_stderr_is_the_journal_logs_with_priorities_by_default() {
    let run = tempfile::tempdir().unwrap();
    let journald = Journald::start(run.path());
    // no `output`: `auto`, the default
    let block = format!(
        "log {{\n    journal-socket \"{}\"\n}}",
        journald.socket().display()
    );
    // as systemd starts the packaged unit: stderr is a journal stream, and
    // JOURNAL_STREAM says so
    let (stderr, id) = journal_stream(&journald, "mtad-unit");
    // mtad whose stderr is `stderr`, under the JOURNAL_STREAM of the first
    let start = |stderr| {
        let env = [("JOURNAL_STREAM", id.as_str())];
        Daemon::start_with(tempfile::tempdir().unwrap(), &block, &[], stderr, &env)
    };
    let mut mtad = start(stderr);
    journald.wait(&["-t", "mtad/master"], "mtad started");
    mtad.traffic();
    let warnings = journald.wait(
        &["-p", "warning", "-t", "mtad/smtpd"],
        "authentication failed",
    );
    assert!(
        warnings.iter().all(|e| field(e, "PRIORITY") <= "4"),
        "{warnings:#?}"
    );
    journald.wait(&["-t", "mtad/smtpd"], "client=unknown[127.0.0.1]");
    mtad.stop();
    // nothing came through the stream
    assert_eq!(
        journald.entries(&["-t", "mtad-unit"]),
        Vec::<serde_json::Value>::new()
    );

    // stderr redirected elsewhere by the service (JOURNAL_STREAM names another
    // stream): stderr it is, in the journal as one identifier at info, which is what
    // `-p warning` could not find before `auto`
    let (stderr, _) = journal_stream(&journald, "mtad-redirected");
    let mut mtad = start(stderr);
    journald.wait(&["-t", "mtad-redirected"], "mtad started");
    mtad.traffic();
    let lines = journald.wait(&["-t", "mtad-redirected"], "authentication failed");
    assert!(
        lines.iter().all(|e| field(e, "PRIORITY") == "6"),
        "{lines:#?}"
    );
    mtad.stop();
}

#[test]
fn configuration_errors_reach_stderr_whatever_the_log_output() {
    // the configuration itself is wrong: rendered on stderr, with its place
    let mtad = Daemon::start(
        "log {\n    output \"syslog\"\n    syslog-facility \"kern\"\n}",
        &[],
    );
    let (ok, stderr) = mtad.exited();
    assert!(!ok);
    assert!(
        stderr.contains("`kern` is not a log facility") && stderr.contains("mtad.kdl:17:21"),
        "{stderr}"
    );
    // no syslog daemon there: refused at start, on stderr
    let mtad = Daemon::start(
        "log {\n    output \"syslog\"\n    syslog-socket \"/nonexistent/log\"\n}",
        &[],
    );
    let (ok, stderr) = mtad.exited();
    assert!(!ok);
    assert!(
        stderr.starts_with("mtad: cannot log to syslog at /nonexistent/log: "),
        "{stderr}"
    );
    // the command line wins: the same configuration, logging to stderr
    let dir = tempfile::tempdir().unwrap();
    let mut mtad = Daemon::start_in(
        dir,
        "log {\n    output \"syslog\"\n    syslog-socket \"/nonexistent/log\"\n}",
        &[
            "--log-output",
            "stderr",
            "--log-format",
            "postfix",
            "--syslog-name",
            "postfix",
        ],
    );
    mtad.wait_stderr("mtad started");
    mtad.stop();
    assert!(
        mtad.stderr().contains(" postfix/master["),
        "{}",
        mtad.stderr()
    );
}

/// docs/configuration.md's `log` example is a valid configuration, and says what the
/// parser does.
#[test]
fn documented_log_block_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let snippet = text
        .split("```kdl\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .find(|b| b.starts_with("log {"))
        .expect("a log example in docs/configuration.md");
    let config = format!(
        "server {{\n    hostname \"h.example.test\"\n    spool \"/tmp/x\"\n}}\nlisten \"mx\" address=\"127.0.0.1:2525\"\n{snippet}"
    );
    let config =
        mtad::config::Config::parse("doc.kdl", &config).unwrap_or_else(|e| panic!("{e}\n{config}"));
    assert_eq!(config.log.output, mtad::config::LogOutput::Syslog);
    assert_eq!(config.log.facility.name(), "mail");
}

/// A reload does not move the log: a changed `log` block is reported as waiting for
/// the next restart, and the log goes on where it went.
#[test]
fn a_changed_log_block_waits_for_the_restart() {
    let mtad = Mtad::start(&CONFIG.replace("{dir}/users", "/dev/null"));
    let text = std::fs::read_to_string(&mtad.config).unwrap() + "log {\n    format \"json\"\n}\n";
    std::fs::write(&mtad.config, text).unwrap();
    let out = mtad.mtactl(&["reload"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("changed, taking effect at the next restart: log"),
        "{stdout}"
    );
    let log = mtad.wait_log("configuration reloaded", 1, Duration::from_secs(10));
    assert!(!log.lines().any(|l| l.starts_with('{')), "{log}");
}
