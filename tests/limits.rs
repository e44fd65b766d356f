//! One test per limit, each with its reply, against the real binary.

mod common;

use std::time::Duration;

use common::*;

fn with_limits(limits: &str) -> String {
    BASIC.replace(
        "networks \"trusted\"",
        &format!("limits {{\n{limits}\n}}\nnetworks \"trusted\""),
    )
}

#[test]
fn message_size_at_mail_and_in_data() {
    let mtad = Mtad::start(&with_limits(r#"message-size "64K""#));
    let mut s = mtad.session();
    let ehlo = s.cmd("EHLO client.test", "250");
    assert!(ehlo.contains("SIZE 65536"), "{ehlo}");
    s.cmd("MAIL FROM:<a@src.test> SIZE=70000", "552 5.3.4");
    s.cmd("MAIL FROM:<a@src.test> SIZE=1000", "250");
    s.cmd("RCPT TO:<b@example.test>", "250");
    s.cmd("DATA", "354");
    // 1 MiB of real data against a 64 KiB limit: read to its end, then refused
    let line = format!("{}\r\n", "x".repeat(1022));
    for _ in 0..1024 {
        s.send(&line);
    }
    s.send(".\r\n");
    s.expect("552 5.3.4");
    // the session stays usable
    s.send_message(
        "a@src.test",
        &["b@example.test"],
        "Subject: small\r\n\r\nok\r\n",
    );
    // BDAT over the limit: refused, and the chunk does not leak into the command stream
    s.cmd("MAIL FROM:<a@src.test>", "250");
    s.cmd("RCPT TO:<b@example.test>", "250");
    let big = "y".repeat(70_000);
    s.send(format!("BDAT {} LAST\r\n{big}", big.len()));
    s.expect("552 5.3.4");
    s.cmd("NOOP", "250");
    assert_eq!(mtad.queued().len(), 1);
}

#[test]
fn recipients_per_message() {
    let mtad = Mtad::start(&with_limits("recipients 3"));
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    s.cmd("MAIL FROM:<a@src.test>", "250");
    for i in 0..3 {
        s.cmd(&format!("RCPT TO:<r{i}@example.test>"), "250");
    }
    s.cmd("RCPT TO:<r3@example.test>", "452 4.5.3");
    s.cmd("DATA", "354");
    s.send("Subject: x\r\n\r\n.\r\n");
    s.expect("250 2.0.0");
    assert_eq!(mtad.queued()[0].0.envelope.recipients.len(), 3);
}

#[test]
fn command_line_length() {
    let mtad = Mtad::start(&with_limits("line-length 1000"));
    let mut s = mtad.session();
    s.cmd(&format!("EHLO {}", "a".repeat(1100)), "500 5.5.2");
    // a very long line (bigger than any buffer) is dropped to its end, memory stays flat
    let long = "b".repeat(4 * 1024 * 1024);
    s.send(format!("NOOP {long}\r\n"));
    s.expect("500 5.5.2");
    s.cmd("EHLO client.test", "250");
}

#[test]
fn idle_timeout() {
    let mtad = Mtad::start(&with_limits(r#"idle-timeout "1s""#));
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    std::thread::sleep(Duration::from_millis(1500));
    s.expect("421 4.4.2 mx.example.test");
    s.expect_closed();
}

#[test]
fn data_deadline_against_slow_senders() {
    // a byte every 300 ms keeps a 1 s idle timeout from ever firing: only the 2 s
    // deadline for the whole message can end this
    let mtad = Mtad::start(&with_limits("idle-timeout \"1s\"\ndata-timeout \"2s\""));
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    s.cmd("MAIL FROM:<a@src.test>", "250");
    s.cmd("RCPT TO:<b@example.test>", "250");
    s.cmd("DATA", "354");
    let start = std::time::Instant::now();
    s.stream.set_nonblocking(true).unwrap();
    let mut peek = [0u8; 1];
    while start.elapsed() < Duration::from_secs(5) && !matches!(s.stream.peek(&mut peek), Ok(1)) {
        let _ = std::io::Write::write_all(&mut s.stream, b"x");
        std::thread::sleep(Duration::from_millis(300));
    }
    s.stream.set_nonblocking(false).unwrap();
    let reply = s.expect("421 4.4.2 mx.example.test");
    assert!(reply.contains("deadline"), "{reply}");
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
    s.expect_closed();
    assert!(mtad.queued().is_empty());
}

#[test]
fn too_many_errors() {
    let mtad = Mtad::start(&with_limits("error-limit 3"));
    let mut s = mtad.session();
    s.cmd("XYZZY", "500");
    s.cmd("XYZZY", "500");
    s.line("XYZZY");
    s.expect("500");
    s.expect("421 4.7.0 mx.example.test Error: too many errors");
    s.expect_closed();
}

#[test]
fn connections_per_client_and_in_total() {
    let mtad = Mtad::start(&with_limits("connections-per-ip 2\nconnections 3"));
    let _a = mtad.session();
    let _b = mtad.session();
    let mut c = mtad.connect();
    c.expect("421 4.7.0");
    c.expect_closed();
    // another loopback address is another client; then the total limit applies
    let mut d = Client::connect_from("127.0.0.2", mtad.port);
    d.expect("220 ");
    let mut e = Client::connect_from("127.0.0.3", mtad.port);
    e.expect("421 4.7.0");
    // a slot comes back when a session ends
    drop(_a);
    std::thread::sleep(Duration::from_millis(200));
    mtad.session().cmd("QUIT", "221");
}

#[test]
fn too_little_free_disk_at_mail() {
    let mtad = Mtad::start(&with_limits(r#"min-free-space "1000000G""#));
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    s.cmd("MAIL FROM:<a@src.test>", "452 4.3.1");
}

/// 30 sessions each push 4 MiB of garbage at a 1 MiB limit, plus endless command lines:
/// the daemon's peak memory stays far below what buffering it all would take.
#[test]
fn memory_stays_bounded_whatever_clients_send() {
    let mtad = Mtad::start(&with_limits("message-size \"1M\"\nconnections-per-ip 100"));
    let before = rss_kib(mtad.pid(), "VmRSS:");
    let handles: Vec<_> = (0..30)
        .map(|i| {
            let port = mtad.port;
            std::thread::spawn(move || {
                let mut s = Client::connect(port);
                s.expect("220");
                s.cmd("EHLO client.test", "250");
                if i % 2 == 0 {
                    s.cmd("MAIL FROM:<a@src.test>", "250");
                    s.cmd("RCPT TO:<b@example.test>", "250");
                    s.cmd("DATA", "354");
                    let chunk = "z".repeat(64 * 1024);
                    for _ in 0..64 {
                        s.send(&chunk);
                    }
                    s.send("\r\n.\r\n");
                    s.expect("552 5.3.4");
                } else {
                    let chunk = "n".repeat(64 * 1024);
                    s.send("NOOP ");
                    for _ in 0..64 {
                        s.send(&chunk);
                    }
                    s.send("\r\n");
                    s.expect("500 5.5.2");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let peak = rss_kib(mtad.pid(), "VmHWM:");
    // buffering would need 30 × 4 MiB = 120 MiB; the limit allows ~15 × 1 MiB
    assert!(
        peak < before + 40 * 1024,
        "peak RSS {peak} KiB (started at {before} KiB)"
    );
}
