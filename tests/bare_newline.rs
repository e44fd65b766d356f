//! `bare-newline="normalize"` with a real client: php-cli speaking SMTP over a socket
//! with LF line endings, as several PHP mail libraries do. On a listener that
//! normalizes for its clients (`bare-newline-clients`), the commands and the message
//! lines ending in LF alone are read as CRLF and the message is stored with CRLF; a
//! client outside that set, and every client of a listener without it, is refused as
//! before; and even when normalizing, only a real CRLF.CRLF ends DATA.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const CONFIG: &str = r#"
server {
    hostname "mx.example.test"
    spool "{spool}"
}
networks "apps" "127.0.0.1/32"
networks "everyone" "0.0.0.0/0"
listen "mx" address="127.0.0.1:{port}"
listen "apps" address="127.0.0.1:{apps}" bare-newline="normalize" bare-newline-clients="apps"
stage "rcpt" {
    accept client="everyone" open-relay="intended"
}
"#;

/// What a PHP application sends: every line ending in LF alone, the message too, then
/// CRLF . CRLF (`$message . "\r\n.\r\n"`). Prints each reply line; `bindto` picks the
/// client address.
const PHP: &str = r#"
$port = (int)$argv[1];
$ctx = stream_context_create(['socket' => ['bindto' => $argv[2] . ':0']]);
$s = stream_socket_client("tcp://127.0.0.1:$port", $errno, $errstr, 5, STREAM_CLIENT_CONNECT, $ctx);
if (!$s) { fwrite(STDERR, "connect: $errstr\n"); exit(2); }
stream_set_timeout($s, 10);
function reply($s) {
    do { $line = fgets($s); if ($line === false) { echo "(closed)\n"; return; } echo $line; }
    while (strlen($line) > 3 && $line[3] == '-');
}
reply($s);
foreach (["EHLO php.example.test", "MAIL FROM:<app@php.example.test>", "RCPT TO:<user@example.net>", "DATA"] as $c) {
    fwrite($s, "$c\n");
    reply($s);
}
$message = "From: app@php.example.test\nTo: user@example.net\nSubject: from PHP\n\nline one\n.leading dot, stuffed\nline three";
$message = str_replace("\n.", "\n..", $message);
fwrite($s, $message . "\r\n.\r\n");
reply($s);
fwrite($s, "QUIT\n");
reply($s);
"#;

fn php(port: u16, from: &str) -> String {
    let out = Command::new(require_tool("php"))
        .args(["-r", PHP, "--", &port.to_string(), from])
        .output()
        .expect("php");
    assert!(
        out.status.success(),
        "php: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn check(config: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mtactl"))
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

fn start() -> (Mtad, u16) {
    let apps = free_port();
    let mtad = Mtad::start(&CONFIG.replace("{apps}", &apps.to_string()));
    (mtad, apps)
}

#[test]
fn php_with_lf_line_endings_is_read_as_crlf_where_normalized_and_refused_elsewhere() {
    let (mtad, apps) = start();

    let normalized = php(apps, "127.0.0.1");
    let lines: Vec<&str> = normalized.lines().collect();
    assert!(lines[0].starts_with("220 "), "{normalized}");
    assert!(
        lines.iter().any(|l| l.starts_with("250 2.1.5")),
        "{normalized}"
    );
    assert!(lines.iter().any(|l| l.starts_with("354 ")), "{normalized}");
    let queued = lines
        .iter()
        .find(|l| l.starts_with("250 2.0.0 Ok: queued as "))
        .unwrap_or_else(|| panic!("not queued:\n{normalized}"));
    assert!(lines.last().unwrap().starts_with("221 "), "{normalized}");
    let id = queue_id(queued);
    let stored = mtad.queued();
    let (msg, body) = stored.iter().find(|(m, _)| m.id.to_string() == id).unwrap();
    assert_eq!(msg.envelope.recipients, ["user@example.net"]);
    assert_eq!(
        String::from_utf8_lossy(without_received(body)),
        "From: app@php.example.test\r\nTo: user@example.net\r\nSubject: from PHP\r\n\r\n\
         line one\r\n.leading dot, stuffed\r\nline three\r\n"
    );

    // the same client on the listener that does not normalize: refused as before
    let strict = php(mtad.port, "127.0.0.1");
    assert!(
        strict.contains("500 5.5.2 Error: bare <CR> or <LF> in command"),
        "{strict}"
    );
    assert!(!strict.contains("queued as"), "{strict}");

    // a client outside bare-newline-clients, on the normalizing listener: refused
    let outsider = php(apps, "127.0.0.2");
    assert!(
        outsider.contains("500 5.5.2 Error: bare <CR> or <LF> in command"),
        "{outsider}"
    );
    assert!(!outsider.contains("queued as"), "{outsider}");
    assert_eq!(mtad.queued().len(), 1);
}

#[test]
fn normalizing_still_ends_data_only_at_crlf_dot_crlf_and_refuses_a_bare_cr() {
    let (mtad, apps) = start();
    let mut c = Client::connect(apps);
    c.expect("220 ");
    c.cmd("EHLO client.test", "250");
    c.cmd("MAIL FROM:<a@example.test>", "250 ");
    c.cmd("RCPT TO:<b@example.net>", "250 ");
    c.cmd("DATA", "354 ");
    // lookalikes of the end: a dot line after a bare LF, or ended by a bare LF
    c.send("Subject: x\n\nsmuggled?\n.\nMAIL FROM:<evil@example.test>\n.\r\nRCPT TO:<x@y>\r\n");
    c.expect_silence(Duration::from_millis(500));
    c.send("\r\n.\r\n");
    let id = queue_id(&c.expect("250 2.0.0 Ok: queued as "));
    let stored = mtad.queued();
    let (msg, body) = stored.iter().find(|(m, _)| m.id.to_string() == id).unwrap();
    assert_eq!(msg.envelope.recipients, ["b@example.net"]);
    assert_eq!(
        String::from_utf8_lossy(without_received(body)),
        "Subject: x\r\n\r\nsmuggled?\r\n\r\nMAIL FROM:<evil@example.test>\r\n\r\n\
         RCPT TO:<x@y>\r\n\r\n"
    );

    // a bare CR is refused even here
    c.cmd("MAIL FROM:<a@example.test>", "250 ");
    c.cmd("RCPT TO:<b@example.net>", "250 ");
    c.cmd("DATA", "354 ");
    c.send("Subject: x\n\nbare\rCR\n\r\n.\r\n");
    c.expect("550 5.5.2 Error: bare <CR> or <LF> in message data");
    c.send("NO\rOP\n");
    c.expect("500 5.5.2 Error: bare <CR> or <LF> in command");
    c.cmd("QUIT", "221 ");
}

#[test]
fn bare_newline_configuration_errors_have_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mtad.kdl");
    std::fs::write(
        &config,
        "server {\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}\nnetworks \"apps\" \"127.0.0.1/32\"\n\
         listen \"a\" address=\"127.0.0.1:2601\" bare-newline=\"lenient\"\n\
         listen \"b\" address=\"127.0.0.1:2602\" bare-newline-clients=\"apps\"\n\
         listen \"c\" address=\"127.0.0.1:2603\" bare-newline=\"normalize\" bare-newline-clients=\"aps\"\n",
    )
    .unwrap();
    let out = check(&config);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "bare-newline is \"reject\" or \"normalize\", not `lenient`",
        "mtad.kdl:6:37]",
        "bare-newline-clients= without bare-newline=\"normalize\"",
        "mtad.kdl:7:37]",
        "no networks set named `aps`",
        "did you mean `apps`?",
        "mtad.kdl:8:62]",
    ] {
        assert!(err.contains(expected), "{expected:?} not in\n{err}");
    }
}

/// docs/configuration.md's `bare-newline` example is a valid configuration.
#[test]
fn the_documented_example_checks() {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let from = docs.find("- `bare-newline=\"reject|normalize\"`").unwrap();
    let start = from + docs[from..].find("```kdl\n").unwrap() + "```kdl\n".len();
    let snippet = &docs[start..start + docs[start..].find("```").unwrap()];
    assert!(
        snippet.contains("bare-newline-clients=\"apps\""),
        "{snippet}"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mtad.kdl");
    std::fs::write(
        &config,
        format!("server {{\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}}\n{snippet}"),
    )
    .unwrap();
    let out = check(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
