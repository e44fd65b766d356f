//! Test harness: start the real `mtad` binary on loopback and talk SMTP to it over TCP.
//!
//! Tests read like sessions:
//! ```ignore
//! let mtad = Mtad::start(BASIC);
//! let mut s = mtad.connect();
//! s.expect("220 ");
//! s.cmd("EHLO client.test", "250-");
//! ```
//!
//! or as transcripts, in the form of `mtactl test-policy`'s `session` cases (the same
//! code plays them; `mtad::smtp::transcript` runs them in memory too):
//! ```ignore
//! mtad.transcript(r#"
//!     expect "220"
//!     send "EHLO client.test"
//!     expect "250-"
//! "#);
//! ```
#![allow(dead_code)]

pub mod outbound;
pub mod peers;
pub mod tls_client;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A config with the issue's relay rules. `{port}` and `{spool}` are filled in.
pub const BASIC: &str = r#"
server {
    hostname "mx.example.test"
    spool "{spool}"
}
listen "mx" address="127.0.0.1:{port}"
networks "trusted" "127.0.0.0/8"
domains "relay" "example.test" ".example.test"
stage "rcpt" {
    accept client="trusted"
    accept rcpt-domain="relay"
    reject 554 "5.7.1" "Relay access denied"
}
"#;

/// Like [`BASIC`], but loopback is not trusted: only the relay domains are accepted.
pub const STRICT: &str = r#"
server {
    hostname "mx.example.test"
    spool "{spool}"
}
listen "mx" address="127.0.0.1:{port}"
domains "relay" "example.test" ".example.test"
stage "rcpt" {
    accept rcpt-domain="relay"
}
"#;

/// A port free on 127.0.0.1 now, and never handed out before in this test process
/// (the kernel may give the same ephemeral port to two `bind(0)` in a row, and two
/// listeners of one configuration on the same port would not start).
/// Runs `cmd` with `input` on its standard input; its output.
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// The configuration of every example (`examples/*/mtad.kdl`).
pub fn example_configs() -> Vec<PathBuf> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut configs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path().join("mtad.kdl"))
        .filter(|config| config.exists())
        .collect();
    configs.sort();
    configs
}

/// Copies the directory `from` to `to`, recursively (an example, before a test edits it).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        // a link to a directory is copied as the directory (cp -rL), as
        // examples/production/policies
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub struct Mtad {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub config: PathBuf,
    pub spool: PathBuf,
    child: Option<Child>,
    /// More arguments for `mtad` (`--log-format postfix`).
    pub args: Vec<String>,
}

impl Mtad {
    /// Writes the config (with `{port}`, `{spool}` and `{dir}` filled in) and starts mtad.
    pub fn start(template: &str) -> Mtad {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        Self::start_in(dir, spool, template)
    }

    pub fn start_in(dir: tempfile::TempDir, spool: PathBuf, template: &str) -> Mtad {
        let port = free_port();
        let config = dir.path().join("mtad.kdl");
        // Tests about receiving keep their mail in the queue: nothing is delivered
        // unless the test configures delivery itself.
        let template = if template.contains("delivery {") {
            template.to_owned()
        } else {
            format!("{template}\ndelivery {{\n    queue-only #true\n}}\n")
        };
        let text = template
            .replace("{port}", &port.to_string())
            .replace("{spool}", spool.to_str().unwrap())
            .replace("{dir}", dir.path().to_str().unwrap());
        std::fs::write(&config, text).unwrap();
        let mut mtad = Mtad {
            dir,
            port,
            config,
            spool,
            child: None,
            args: Vec::new(),
        };
        mtad.restart();
        mtad
    }

    /// Starts on a configuration file already written (an example copied by a test);
    /// `port` is the listener's.
    pub fn start_file(dir: tempfile::TempDir, config: PathBuf, spool: PathBuf, port: u16) -> Mtad {
        let mut mtad = Mtad {
            dir,
            port,
            config,
            spool,
            child: None,
            args: Vec::new(),
        };
        mtad.restart();
        mtad
    }

    /// Starts (again) on the same config and spool, and waits until it listens. Readiness
    /// comes from mtad's own "mtad started" log line (logged once every listener is
    /// bound), not from a probe connection that would hold a connection slot.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "mtad is already running");
        let started_before = self.log().matches("mtad started").count();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        // the tests run as root here and in CI; mtad refuses root unless told
        let child = Command::new(env!("CARGO_BIN_EXE_mtad"))
            .arg("--allow-root")
            .arg("--config")
            .arg(&self.config)
            .args(&self.args)
            .env("MTAD_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mtad");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.log().matches("mtad started").count() > started_before {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "mtad exited with {status} before listening; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "mtad did not start; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("mtad.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits until the log contains `needle` `n` times, and returns it.
    pub fn wait_log(&self, needle: &str, n: usize, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            if log.matches(needle).count() >= n {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n}× {needle:?} in the log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.port)
    }

    /// Plays `transcript` (the nodes of a test-policy `session` block: `send`,
    /// `expect`, `send-message`, `send-bdat`, `starttls`, `closed`) against this mtad
    /// over TCP from 127.0.0.1; panics on a mismatch, showing every exchange.
    pub fn transcript(&self, transcript: &str) -> Played {
        let played = play_tcp(self.port, false, transcript);
        assert_played(&played);
        played
    }

    /// Connects and reads the greeting.
    pub fn session(&self) -> Client {
        let mut c = self.connect();
        c.expect("220 ");
        c
    }

    /// SIGTERM, then wait for the exit (at most `within`).
    pub fn stop_within(&mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(child.id(), "TERM");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("mtad did not stop within {within:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) -> ExitStatus {
        self.stop_within(Duration::from_secs(30))
    }

    /// `kill -9`: no chance to flush anything.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Runs `mtactl` with these arguments (plus `--config` for this instance).
    pub fn mtactl(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mtactl"));
        cmd.args(args).arg("--config").arg(&self.config);
        cmd.output().unwrap()
    }

    /// The messages in the spool, read with the same reader mtactl uses.
    pub fn queued(&self) -> Vec<(mtad::queue::QueuedMessage, Vec<u8>)> {
        mtad::queue::scan(&self.spool)
            .unwrap()
            .into_iter()
            .map(|m| {
                let body = mtad::queue::read_body(&self.spool, &m).unwrap();
                (m, body)
            })
            .collect()
    }
}

impl Drop for Mtad {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub use mtad::smtp::transcript::{Played, Transcript};

/// Plays a transcript written as the nodes of a test-policy `session` block against
/// 127.0.0.1:`port` (`implicit_tls`: the TLS handshake first), as
/// `mtad::smtp::transcript::in_memory` plays it against the session in memory.
pub fn play_tcp(port: u16, implicit_tls: bool, transcript: &str) -> Played {
    let transcript = Transcript::parse(transcript).unwrap_or_else(|e| panic!("{e:?}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        mtad::smtp::transcript::play(
            stream,
            &transcript,
            implicit_tls,
            mtad::smtp::transcript::REPLY_TIMEOUT,
        )
        .await
    })
}

/// Panics with the mismatch and every exchange if the play had one.
pub fn assert_played(played: &Played) {
    if let Some(m) = &played.mismatch {
        let exchanges: Vec<String> = played
            .replies
            .iter()
            .map(|e| format!("> {}\n< {}", e.sent, e.reply.text().replace('\n', "\n< ")))
            .collect();
        panic!("{m}\n{}", exchanges.join("\n"));
    }
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// A line-oriented SMTP client that checks every reply.
pub struct Client {
    pub reader: BufReader<TcpStream>,
    pub stream: TcpStream,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to mtad");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }

    /// Connects to 127.0.0.1:`port` from the loopback address `source` (127.0.0.2,
    /// ...), which the server sees as another client.
    pub fn connect_from(source: &str, port: u16) -> Client {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let src: std::net::SocketAddr = format!("{source}:0").parse().unwrap();
        socket.bind(&src.into()).unwrap();
        let dst: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        socket.connect(&dst.into()).unwrap();
        let stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }

    /// The socket, for a TLS handshake after STARTTLS's 220 (nothing may be buffered:
    /// the server says nothing more until the handshake).
    pub fn into_stream(self) -> TcpStream {
        assert!(
            self.reader.buffer().is_empty(),
            "bytes after the last reply"
        );
        self.stream
    }

    /// Sends raw bytes as they are.
    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).unwrap();
    }

    /// Sends one command line (CRLF added).
    pub fn line(&mut self, line: &str) {
        self.send(format!("{line}\r\n"));
    }

    /// Reads one complete reply (all lines of a multi-line reply), CRLFs kept.
    pub fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .unwrap_or_else(|e| panic!("reading a reply: {e} (so far {all:?})"));
            assert!(
                n > 0,
                "connection closed while reading a reply (so far {all:?})"
            );
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    /// Reads one reply and asserts it starts with `prefix`.
    pub fn expect(&mut self, prefix: &str) -> String {
        let reply = self.reply();
        assert!(
            reply.starts_with(prefix),
            "expected {prefix:?}, got {reply:?}"
        );
        reply
    }

    /// Sends a command and expects a reply starting with `prefix`.
    pub fn cmd(&mut self, line: &str, prefix: &str) -> String {
        self.line(line);
        self.expect(prefix)
    }

    /// Asserts the server closed the connection (after any replies already read).
    pub fn expect_closed(&mut self) {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => assert!(
                rest.is_empty(),
                "expected close, got {:?}",
                String::from_utf8_lossy(&rest)
            ),
            Err(e) => assert!(
                matches!(e.kind(), std::io::ErrorKind::ConnectionReset),
                "expected close, got error {e}"
            ),
        }
    }

    /// Reads one reply, waiting up to `wait` for it (for a reply that takes long in a
    /// debug build on a loaded machine); then the usual 20 s again.
    pub fn reply_within(&mut self, wait: Duration) -> String {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let reply = self.reply();
        self.stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        reply
    }

    /// Asserts nothing more arrives within `wait`.
    pub fn expect_silence(&mut self, wait: Duration) {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 256];
        let got = self.reader.read(&mut buf);
        self.stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        match got {
            Ok(n) => panic!(
                "expected silence, got {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) => assert!(matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            )),
        }
    }

    /// EHLO, MAIL, RCPT..., DATA, the message, and the end: returns the queue id.
    pub fn send_message(&mut self, from: &str, rcpts: &[&str], data: &str) -> String {
        self.cmd(&format!("MAIL FROM:<{from}>"), "250 ");
        for r in rcpts {
            self.cmd(&format!("RCPT TO:<{r}>"), "250 ");
        }
        self.cmd("DATA", "354 ");
        self.send(data);
        self.send(".\r\n");
        let reply = self.expect("250 2.0.0 Ok: queued as ");
        queue_id(&reply)
    }

    pub fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

/// The id out of `250 2.0.0 Ok: queued as ID`.
pub fn queue_id(reply: &str) -> String {
    reply.trim_end().rsplit(' ').next().unwrap().to_string()
}

/// The stored message without the Received: header mtad put on top.
pub fn without_received(body: &[u8]) -> &[u8] {
    assert!(
        body.starts_with(b"Received: "),
        "no Received header on top: {:?}",
        String::from_utf8_lossy(&body[..body.len().min(80)])
    );
    let mut pos = 0;
    loop {
        let end = pos
            + body[pos..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("header line end")
            + 2;
        pos = end;
        if !matches!(body.get(pos), Some(b' ') | Some(b'\t')) {
            return &body[pos..];
        }
    }
}

/// A tool from Debian's packages that a test needs: missing is a failure, not a skip.
pub fn require_tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!(
            "{name} is not installed: run ./run-tests (it installs the test peers) or apt-get install it"
        )
    })
}

/// `name` in `PATH` or an sbin directory.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.exists())
}

/// A tool that only some tests need and that a developer may not have installed:
/// `None` (after saying which test is skipped and how to get the tool) when it is
/// missing outside CI; under CI (`CI=true`, as `.ci/run` runs) a missing tool fails
/// the test, like [`require_tool`].
pub fn tool_or_skip(name: &str, package: &str, test: &str) -> Option<PathBuf> {
    let found = find_tool(name);
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{name} is not installed (CI must have it): apt-get install {package}");
        }
        // straight to stderr: the test harness would hide an eprintln! of a passing test
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: {name} is not installed (apt-get install {package}, or ./run-tests)"
        );
    }
    found
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// swaks against 127.0.0.1:`port`, HELO client.test, with `args`.
pub fn swaks(port: u16, args: &[&str]) -> std::process::Output {
    let swaks = require_tool("swaks");
    Command::new(swaks)
        .args([
            "--server",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--helo",
            "client.test",
        ])
        .args(args)
        .output()
        .unwrap()
}

/// One message in one session, without panicking: `Ok` once the 250 after the dot
/// came (the message is mtad's), `Err` on anything else (refused, 421, connection
/// closed or refused: not acknowledged, the client tries again).
pub fn try_message(port: u16, rcpt: &str, subject: &str) -> Result<(), String> {
    use std::io::{BufRead, BufReader, Write};
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut reply = |want: &str| -> Result<(), String> {
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                return Err("closed".into());
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return if line.starts_with(want) {
                    Ok(())
                } else {
                    Err(line)
                };
            }
        }
    };
    reply("220")?;
    for (cmd, want) in [
        ("EHLO load.test", "250"),
        ("MAIL FROM:<load@client.test>", "250"),
        (&*format!("RCPT TO:<{rcpt}>"), "250"),
        ("DATA", "354"),
    ] {
        writer
            .write_all(format!("{cmd}\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        reply(want)?;
    }
    writer
        .write_all(format!("Subject: {subject}\r\n\r\nhi\r\n.\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    reply("250")?;
    let _ = writer.write_all(b"QUIT\r\n");
    Ok(())
}

/// `mtactl dkim keygen` into `dir` (the key file `DOMAIN.SELECTOR.key`): its output,
/// the TXT record's owner name and the record's text (its quoted 255-byte strings
/// joined again).
pub fn dkim_keygen(
    dir: &Path,
    domain: &str,
    selector: &str,
    algorithm: &str,
) -> (String, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .args(["dkim", "keygen", "--domain", domain, "--selector", selector])
        .args(["--algorithm", algorithm, "--out"])
        .arg(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.contains(" IN TXT "))
        .unwrap_or_else(|| panic!("no TXT record printed: {stdout}"));
    let (name, strings) = line.split_once(" IN TXT ").unwrap();
    let text = strings.trim_matches('"').replace("\" \"", "");
    let name = name.trim_end_matches('.').to_owned();
    (stdout, name, text)
}

/// A sh script in `dir` that runs our `sendmail` with `-C config` and whatever argv it
/// is given (for programs whose sendmail path takes no options of ours: bsd-mailx,
/// s-nail, logwatch), logging each argv to `dir/argv.log`.
pub fn sendmail_wrapper(dir: &Path, config: &Path) -> PathBuf {
    let path = dir.join("sendmail-wrapper");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"$@\" >> {dir}/argv.log\nexec {bin} -C {config} \"$@\"\n",
            dir = dir.display(),
            bin = env!("CARGO_BIN_EXE_sendmail"),
            config = config.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

/// GET /metrics with curl: the body, after checking the status and content type.
pub fn scrape(port: u16) -> String {
    let out = Command::new(require_tool("curl"))
        .args(["--silent", "--show-error", "--include", "--max-time", "10"])
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let response = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    body.to_owned()
}

/// The value of the sample `name{labels}` (the whole text before the value).
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in\n{metrics}"))
        .parse()
        .unwrap()
}

/// Validates `json` against RFC 8460's schema (tests/data/tlsrpt-schema.json) with
/// Debian's python3-jsonschema: Ok, or the
/// validator's complaint.
pub fn validate_tlsrpt(json: &[u8]) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    std::fs::write(&report, json).unwrap();
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tlsrpt-schema.json");
    let script = "import json, sys, jsonschema\n\
        schema = json.load(open(sys.argv[1]))\n\
        jsonschema.Draft7Validator.check_schema(schema)\n\
        jsonschema.validate(json.load(open(sys.argv[2])), schema,\n    \
        format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)\n";
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(&schema)
        .arg(&report)
        .output()
        .expect("/usr/bin/python3");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("No module named 'jsonschema'"),
        "python3-jsonschema is not installed (apt-get install python3-jsonschema, or ./run-tests)"
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(err.into_owned())
    }
}
