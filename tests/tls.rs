//! Server TLS end to end: STARTTLS offered and required, implicit TLS, with swaks,
//! `openssl s_client` and a rustls client of our own for what the tools cannot do
//! (plaintext pipelined behind STARTTLS, a stalled handshake).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::tls_client::*;
use common::*;

/// `mx` offers STARTTLS (the server has a certificate), `sub` requires it, `smtps` is
/// implicit TLS. Loopback relays only over TLS; a data hook writes what it saw.
const CONFIG: &str = r#"
server {
    hostname "mx.example.test"
    spool "{spool}"
    tls-certificate "{dir}/pki/cert.pem"
    tls-key "{dir}/pki/key.pem"
}
listen "mx" address="127.0.0.1:{port}"
listen "sub" address="127.0.0.1:{port2}" starttls="required"
listen "smtps" address="127.0.0.1:{port3}" implicit-tls=#true
limits {
    tls-handshake-timeout "1s"
}
domains "relay" "example.test"
stage "rcpt" {
    accept tls=#true open-relay="intended"
    accept rcpt-domain="relay"
    reject 554 "5.7.1" "Relay access denied"
}
stage "data" {
    hook "hooks.rhai" function="tls_seen"
}
"#;

const HOOKS: &str = r#"
fn tls_seen(ctx) {
    if ctx.tls {
        ctx.add_header("X-TLS-Seen", ctx.tls_protocol + " " + ctx.tls_cipher);
    }
    next()
}
"#;

struct Setup {
    mtad: Mtad,
    pki_dir: std::path::PathBuf,
    sub: u16,
    smtps: u16,
}

fn start() -> Setup {
    let t = start_with_pki(CONFIG, &[("hooks.rhai", HOOKS)], 2, |_| {});
    Setup {
        mtad: t.mtad,
        pki_dir: t.pki,
        sub: t.ports[0],
        smtps: t.ports[1],
    }
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The queued message whose body contains `needle`.
fn queued_with(mtad: &Mtad, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for (_, body) in mtad.queued() {
            let text = String::from_utf8_lossy(&body).into_owned();
            if text.contains(needle) {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no queued message with {needle:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn swaks_starttls_relays_and_the_trace_shows_tls() {
    let s = start();
    // without TLS, loopback is not allowed to relay
    let out = swaks(
        s.mtad.port,
        &["--from", "a@client.test", "--to", "x@elsewhere.test"],
    );
    assert!(
        stdout(&out).contains("554 5.7.1 Relay access denied"),
        "{}",
        stdout(&out)
    );
    let out = swaks(
        s.mtad.port,
        &[
            "--tls",
            "--from",
            "a@client.test",
            "--to",
            "x@elsewhere.test",
            "--header",
            "Subject: over-tls-1",
        ],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("STARTTLS"), "{text}");
    assert!(text.contains("queued as"), "{text}");
    let body = queued_with(&s.mtad, "over-tls-1");
    assert!(body.contains("\t(using TLSv1.3 with cipher TLS_"), "{body}");
    assert!(body.contains("with ESMTPS id"), "{body}");
    assert!(body.contains("X-TLS-Seen: TLSv1.3 TLS_"), "{body}");
    let log = s
        .mtad
        .wait_log("TLS established", 1, Duration::from_secs(3));
    assert!(log.contains("protocol=TLSv1.3"), "{log}");
}

#[test]
fn openssl_s_client_starttls_session() {
    let s = start();
    let openssl = require_tool("openssl");
    let mut child = Command::new(openssl)
        .args([
            "s_client",
            "-starttls",
            "smtp",
            "-connect",
            &format!("127.0.0.1:{}", s.mtad.port),
            "-CAfile",
            s.pki_dir.join("ca.pem").to_str().unwrap(),
            "-verify_return_error",
            "-servername",
            "localhost",
            "-crlf",
            "-quiet",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout_pipe = child.stdout.take().unwrap();
    // one command at a time: s_client forwards stdin as it arrives
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = stdout_pipe.read_to_string(&mut all);
        all
    });
    for line in [
        "EHLO openssl.test",
        "MAIL FROM:<a@client.test>",
        "RCPT TO:<x@elsewhere.test>",
        "DATA",
        "Subject: via-openssl\n\nhello over TLS\n.",
        "QUIT",
    ] {
        std::thread::sleep(Duration::from_millis(300));
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }
    drop(stdin);
    let status = child.wait().unwrap();
    let text = reader.join().unwrap();
    assert!(status.success(), "{text}");
    // after TLS, EHLO no longer offers STARTTLS
    assert!(text.contains("250-mx.example.test"), "{text}");
    assert!(!text.contains("STARTTLS"), "{text}");
    assert!(text.contains("250 2.1.5 Ok"), "relayed over TLS: {text}");
    assert!(text.contains("queued as"), "{text}");
    assert!(text.contains("221 2.0.0 Bye"), "{text}");
    queued_with(&s.mtad, "via-openssl");
}

#[test]
fn plaintext_pipelined_behind_starttls_is_discarded_and_the_session_reset() {
    let s = start();
    let mut c = Client::connect(s.mtad.port);
    c.expect("220 ");
    c.cmd("EHLO client.test", "250-");
    c.cmd("MAIL FROM:<a@client.test>", "250 ");
    // STARTTLS inside a transaction is refused (it would drop the envelope silently)
    c.cmd("STARTTLS", "503 5.5.1");
    c.cmd("RSET", "250 ");
    // the classic injection: a command sent in plaintext right behind STARTTLS
    c.send("STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n");
    c.expect("220 2.0.0 Ready to start TLS");
    let tcp = c.into_stream();
    let mut tls = handshake(&s.pki_dir, tcp);
    // the injected MAIL was never seen: the first reply over TLS answers our NOOP
    tls_cmd(&mut tls, "NOOP", "250 2.0.0 Ok");
    // and the session starts afresh: EHLO is needed again
    tls_cmd(
        &mut tls,
        "MAIL FROM:<a@client.test>",
        "503 5.5.1 Error: send HELO/EHLO",
    );
    let ehlo = tls_cmd(&mut tls, "EHLO client.test", "250-");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    // STARTTLS twice is refused
    tls_cmd(&mut tls, "STARTTLS", "554 5.5.1 Error: TLS already active");
    tls_cmd(&mut tls, "MAIL FROM:<a@client.test>", "250 ");
    tls_cmd(&mut tls, "RCPT TO:<x@elsewhere.test>", "250 ");
    tls_cmd(&mut tls, "QUIT", "221 ");
    let log = s.mtad.wait_log(
        "plaintext sent after STARTTLS discarded",
        1,
        Duration::from_secs(3),
    );
    assert!(!log.contains("injected@evil.test"), "{log}");
}

#[test]
fn starttls_required_refuses_mail_before_tls() {
    let s = start();
    let mut c = Client::connect(s.sub);
    c.expect("220 ");
    let ehlo = c.cmd("EHLO client.test", "250-");
    assert!(
        ehlo.contains("250-STARTTLS") || ehlo.contains("250 STARTTLS"),
        "{ehlo}"
    );
    c.cmd(
        "MAIL FROM:<a@client.test>",
        "530 5.7.0 Must issue a STARTTLS command first",
    );
    c.cmd("VRFY root", "530 5.7.0");
    c.cmd("NOOP", "250 ");
    c.cmd("STARTTLS now", "501 5.5.4 Syntax: STARTTLS");
    c.cmd("QUIT", "221 ");
    // swaks --tls goes through
    let out = swaks(
        s.sub,
        &[
            "--tls",
            "--from",
            "a@client.test",
            "--to",
            "x@elsewhere.test",
        ],
    );
    assert!(stdout(&out).contains("queued as"), "{}", stdout(&out));
}

#[test]
fn a_stalled_handshake_times_out() {
    let s = start();
    let mut c = Client::connect(s.mtad.port);
    c.expect("220 ");
    c.cmd("EHLO client.test", "250-");
    c.cmd("STARTTLS", "220 ");
    let started = Instant::now();
    // say nothing: the 1s handshake timeout closes the connection
    c.expect_closed();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    s.mtad
        .wait_log("TLS handshake timed out", 1, Duration::from_secs(3));
    // on the implicit-TLS listener too, before any banner
    let mut c = Client::connect(s.smtps);
    c.expect_closed();
}

#[test]
fn implicit_tls_with_swaks_and_plaintext_gets_no_banner() {
    let s = start();
    let out = swaks(
        s.smtps,
        &[
            "--tls-on-connect",
            "--from",
            "a@client.test",
            "--to",
            "x@elsewhere.test",
            "--header",
            "Subject: smtps-1",
        ],
    );
    let text = stdout(&out);
    assert!(text.contains("queued as"), "{text}");
    assert!(!text.contains("STARTTLS"), "{text}");
    let body = queued_with(&s.mtad, "smtps-1");
    assert!(body.contains("with ESMTPS id"), "{body}");
    // a plaintext client gets nothing: its EHLO is not a TLS ClientHello
    let mut raw = TcpStream::connect(("127.0.0.1", s.smtps)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(b"EHLO plain.test\r\n").unwrap();
    let mut buf = [0u8; 256];
    let n = raw.read(&mut buf).unwrap_or(0);
    assert!(
        !String::from_utf8_lossy(&buf[..n]).contains("220"),
        "a banner in plaintext: {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // the implicit listener with our own client: a banner, then plain SMTP inside TLS
    let tcp = TcpStream::connect(("127.0.0.1", s.smtps)).unwrap();
    let mut tls = handshake(&s.pki_dir, tcp);
    let banner = tls_reply(&mut tls);
    assert!(banner.starts_with("220 mx.example.test"), "{banner}");
    tls_cmd(&mut tls, "STARTTLS", "554 5.5.1 Error: TLS already active");
}
