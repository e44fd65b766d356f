//! The SMTP session against the real binary over TCP: commands, replies, sequencing,
//! DATA framing and the smuggling lookalikes.

mod common;

use std::time::Duration;

use common::*;

const MSG: &str = "From: a@src.test\r\nTo: b@example.test\r\nSubject: hi\r\n\r\nhello\r\n";

#[test]
fn greeting_and_ehlo() {
    let mtad = Mtad::start(BASIC);
    let mut s = mtad.connect();
    let banner = s.expect("220 mx.example.test ");
    assert!(
        !banner.to_ascii_lowercase().contains("mtad"),
        "banner names the software: {banner}"
    );
    assert!(
        !banner
            .chars()
            .any(|c| c.is_ascii_digit() && banner.contains('.') && banner.contains("0.")),
        "{banner}"
    );
    let ehlo = s.cmd("EHLO client.test", "250-mx.example.test\r\n");
    for cap in [
        "PIPELINING",
        "SIZE 10485760",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "SMTPUTF8",
    ] {
        assert!(
            ehlo.contains(&format!("250-{cap}\r\n")) || ehlo.contains(&format!("250 {cap}\r\n")),
            "{cap} missing: {ehlo}"
        );
    }
    s.cmd("HELO client.test", "250 mx.example.test");
    s.cmd("NOOP", "250 2.0.0");
    s.cmd("HELP", "214 ");
    s.cmd("VRFY root", "252 2.0.0");
    s.cmd("EXPN staff", "502 5.5.1");
    s.cmd("RSET", "250 2.0.0");
    s.cmd("QUIT", "221 2.0.0");
    s.expect_closed();
}

#[test]
fn a_message_is_queued_with_a_received_header() {
    let mtad = Mtad::start(BASIC);
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    let id = s.send_message("a@src.test", &["b@example.test"], MSG);
    s.cmd("QUIT", "221");
    let queued = mtad.queued();
    assert_eq!(queued.len(), 1);
    let (m, body) = &queued[0];
    assert_eq!(m.id.to_string(), id);
    assert_eq!(m.envelope.sender, "a@src.test");
    assert_eq!(m.envelope.recipients, vec!["b@example.test".to_string()]);
    assert_eq!(m.envelope.helo, "client.test");
    let text = String::from_utf8_lossy(body);
    assert!(
        text.starts_with(
            "Received: from client.test ([127.0.0.1])\r\n\tby mx.example.test with ESMTP id "
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!("id {id}\r\n\tfor <b@example.test>; ")),
        "{text}"
    );
    assert_eq!(without_received(body), MSG.as_bytes());
    assert!(
        mtad.log()
            .contains(&format!("{id}: client=unknown[127.0.0.1]")),
        "log lacks the queue id"
    );
}

#[test]
fn null_sender_and_bare_postmaster() {
    let mtad = Mtad::start(STRICT);
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    s.cmd("MAIL FROM:<>", "250 2.1.0");
    // not a relay domain, yet RFC 5321 says <postmaster> must be accepted
    s.cmd("RCPT TO:<postmaster>", "250 2.1.5");
    s.cmd("RCPT TO:<Postmaster>", "250 2.1.5");
    s.cmd("RCPT TO:<>", "501 5.1.3");
    s.cmd("DATA", "354");
    s.send("Subject: bounce\r\n\r\nx\r\n.\r\n");
    s.expect("250 2.0.0 Ok: queued as");
    let (m, _) = &mtad.queued()[0];
    assert_eq!(m.envelope.sender, "");
    assert_eq!(m.envelope.recipients[0], "postmaster@mx.example.test");
}

/// A bare local part gets the origin domain (the hostname unless `server { origin }`
/// says otherwise), as Postfix's append_at_myorigin; relay control sees the result.
#[test]
fn unqualified_addresses_get_the_origin_domain() {
    let mtad = Mtad::start(&STRICT.replace("    spool", "    origin \"other.test\"\n    spool"));
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    s.cmd("MAIL FROM:<cron>", "250 2.1.0");
    // other.test is not a relay domain of STRICT: refused by the rcpt rules
    s.cmd("RCPT TO:<root>", "554 5.7.1 <root@other.test>");
    s.cmd("RSET", "250");
    drop(s);
    let mtad = Mtad::start(BASIC);
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    s.cmd("MAIL FROM:<cron> SIZE=10", "250 2.1.0");
    s.cmd("RCPT TO:<root>", "250 2.1.5");
    s.cmd("rcpt to: <first.last>", "250 2.1.5");
    // a local part is qualified (a quoted dot-atom is the dot-atom: one canonical
    // form); what is not a local part stays a syntax error
    s.cmd("RCPT TO:<\"quoted\">", "250 2.1.5");
    s.cmd("RCPT TO:<a..b>", "501 5.1.3");
    s.cmd("RCPT TO:<.a>", "501 5.1.3");
    s.cmd("RCPT TO:<a b>", "501 ");
    s.cmd("DATA", "354");
    s.send("Subject: cron\r\n\r\nx\r\n.\r\n");
    s.expect("250 2.0.0 Ok: queued as");
    let (m, _) = &mtad.queued()[0];
    assert_eq!(m.envelope.sender, "cron@mx.example.test");
    assert_eq!(
        m.envelope.recipients,
        [
            "root@mx.example.test",
            "first.last@mx.example.test",
            "quoted@mx.example.test"
        ]
    );
}

#[test]
fn relay_is_refused_for_foreign_recipients() {
    let mtad = Mtad::start(STRICT);
    mtad.transcript(
        r#"
        expect "220"
        send "EHLO client.test"
        expect "250"
        send "MAIL FROM:<a@src.test>"
        expect "250"
        send "RCPT TO:<b@example.test>"
        expect "250 2.1.5"
        send "RCPT TO:<b@sub.example.test>"
        expect "250 2.1.5"
        send "RCPT TO:<x@foreign.test>"
        expect "554 5.7.1 <x@foreign.test>: Relay access denied"
        // the percent hack, a bang path and a quoted @ cannot borrow a relay domain
        send "RCPT TO:<x%foreign.test@example.test>"
        expect "554 5.7.1"
        send "RCPT TO:<foreign.test!x@example.test>"
        expect "554 5.7.1"
        send "RCPT TO:<\"x@foreign.test\"@example.test>"
        expect "554 5.7.1"
        // a source route is stripped: the destination is the last hop
        send "RCPT TO:<@example.test:x@foreign.test>"
        expect "554 5.7.1"
        "#,
    );
}

#[test]
fn out_of_sequence_and_syntax_errors() {
    let mtad = Mtad::start(BASIC);
    let mut s = mtad.session();
    s.cmd("MAIL FROM:<a@src.test>", "503 5.5.1");
    s.cmd("RCPT TO:<b@example.test>", "503 5.5.1");
    s.cmd("DATA", "503 5.5.1");
    s.cmd("EHLO", "501 5.5.4");
    s.cmd("EHLO client.test", "250");
    s.cmd("RCPT TO:<b@example.test>", "503 5.5.1 Error: need MAIL");
    s.cmd("DATA", "503 5.5.1 Error: need MAIL");
    s.cmd("MAIL FROM:a@src.test", "501 ");
    s.cmd("MAIL FROM:<a@src.test>", "250");
    s.cmd("MAIL FROM:<a@src.test>", "503 5.5.1 Error: nested MAIL");
    s.cmd("DATA", "503 5.5.1 Error: need RCPT");
    s.cmd("RCPT TO:<not an address>", "501 ");
    s.cmd("XYZZY", "500 5.5.2");
    s.cmd("STARTTLS", "502 5.5.1");
    s.cmd("AUTH PLAIN AGFAYg==", "503 5.5.1");
    s.cmd("RSET", "250");
    s.cmd("MAIL FROM:<a@src.test> FOO=BAR", "555 5.5.4");
    s.cmd("MAIL FROM:<ü@src.test>", "553 5.6.7");
    s.cmd("MAIL FROM:<ü@src.test> SMTPUTF8", "250");
}

#[test]
fn http_requests_end_the_session() {
    let mtad = Mtad::start(BASIC);
    for request in [
        "GET / HTTP/1.1",
        "POST /x HTTP/1.1",
        "CONNECT mx:25 HTTP/1.1",
    ] {
        let mut s = mtad.session();
        s.line(request);
        s.send("Host: example\r\n\r\n");
        s.expect("221 2.7.0");
        s.expect_closed();
    }
}

#[test]
fn pipelined_commands_get_replies_in_order() {
    let mtad = Mtad::start(BASIC);
    let played = mtad.transcript(
        r#"
        expect "220"
        send "EHLO client.test"
        expect "250"
        send "MAIL FROM:<a@src.test>" "RCPT TO:<b@example.test>" "RCPT TO:<c@example.test>" "DATA"
        expect "250 2.1.0" "250 2.1.5" "250 2.1.5" "354 "
        // the end of the data, and the next transaction, in one write
        send-raw "From: a@src.test\r\nTo: b@example.test\r\nSubject: hi\r\n\r\nhello\r\n.\r\nMAIL FROM:<a@src.test>\r\nRCPT TO:<d@example.test>\r\nQUIT\r\n" replies=4
        expect "250 2.0.0 Ok: queued as" "250 2.1.0" "250 2.1.5" "221 "
        closed
        "#,
    );
    assert_eq!(
        played.codes(),
        [220, 250, 250, 250, 250, 354, 250, 250, 250, 221]
    );
    assert_eq!(mtad.queued().len(), 1);
}

#[test]
fn content_before_354_is_a_synchronisation_error() {
    let mtad = Mtad::start(BASIC);
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    s.send(format!(
        "MAIL FROM:<a@src.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n{MSG}.\r\n"
    ));
    s.expect("250");
    s.expect("250");
    s.expect("554 5.5.0");
    s.expect_closed();
    assert!(mtad.queued().is_empty());
}

#[test]
fn dots_are_unstuffed() {
    let mtad = Mtad::start(BASIC);
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    s.send_message(
        "a@src.test",
        &["b@example.test"],
        "Subject: dots\r\n\r\n..one\r\n...\r\n. two\r\n",
    );
    let (_, body) = &mtad.queued()[0];
    assert_eq!(
        without_received(body),
        b"Subject: dots\r\n\r\n.one\r\n..\r\n two\r\n"
    );
}

/// Each lookalike must neither end DATA nor turn what follows into commands: the
/// `MAIL FROM:<smuggled@...>` after it never gets its own reply, and the message is
/// refused (bare CR/LF) only at the real end.
#[test]
fn smuggling_lookalikes_never_end_data() {
    let mtad = Mtad::start(BASIC);
    let lookalikes: [&[u8]; 7] = [
        b"\n.\n",
        b"\n.\r\n",
        b"\r.\r\n",
        b"\r\n.\r\r\n",
        b"\r\n.\n",
        b"\n\r.\r\n",
        b"\r\n.\r",
    ];
    for evil in lookalikes {
        let mut s = mtad.session();
        s.cmd("EHLO client.test", "250");
        s.cmd("MAIL FROM:<a@src.test>", "250");
        s.cmd("RCPT TO:<b@example.test>", "250");
        s.cmd("DATA", "354");
        s.send(b"Subject: smuggle\r\n\r\nbefore");
        s.send(evil);
        s.send(b"MAIL FROM:<smuggled@evil.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n");
        s.expect_silence(Duration::from_millis(300));
        s.send(b"after\r\n.\r\n");
        s.expect("550 5.5.2");
        // the session is usable afterwards, and nothing was queued
        s.cmd("MAIL FROM:<a@src.test>", "250 2.1.0");
        s.cmd("QUIT", "221");
        assert!(
            mtad.queued().is_empty(),
            "lookalike {evil:?} queued something"
        );
    }
}

#[test]
fn end_of_data_split_across_writes() {
    let mtad = Mtad::start(BASIC);
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    s.cmd("MAIL FROM:<a@src.test>", "250");
    s.cmd("RCPT TO:<b@example.test>", "250");
    s.cmd("DATA", "354");
    s.send(MSG);
    // MSG ends with its last CRLF; the terminator ". CR LF" comes one byte per write
    for b in [".", "\r", "\n"] {
        s.send(b);
        std::thread::sleep(Duration::from_millis(50));
    }
    s.expect("250 2.0.0 Ok: queued as");
    let (_, body) = &mtad.queued()[0];
    assert_eq!(without_received(body), MSG.as_bytes());
}

#[test]
fn bare_line_endings_in_commands_are_refused() {
    let mtad = Mtad::start(BASIC);
    let mut s = mtad.session();
    s.send("EHLO client.test\n");
    s.expect("500 5.5.2");
    s.send("NO\rOP\r\n");
    s.expect("500 5.5.2");
    s.cmd("EHLO client.test", "250");
}

#[test]
fn bdat_chunks() {
    let mtad = Mtad::start(BASIC);
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    s.cmd("MAIL FROM:<a@src.test>", "250");
    s.cmd("RCPT TO:<b@example.test>", "250");
    let (first, second) = MSG.split_at(20);
    // a chunk may hold anything, including what looks like commands and a lone dot
    s.send(format!("BDAT {}\r\n{first}", first.len()));
    s.expect("250 2.0.0");
    s.send(format!("BDAT {} LAST\r\n{second}", second.len()));
    let id = queue_id(&s.expect("250 2.0.0 Ok: queued as"));
    // pipelined: BDAT, BDAT LAST, then a new transaction
    s.send("MAIL FROM:<a@src.test>\r\nRCPT TO:<b@example.test>\r\nBDAT 9\r\n.\r\nQUIT\r\nBDAT 0 LAST\r\n");
    s.expect("250");
    s.expect("250");
    s.expect("250");
    s.expect("250 2.0.0 Ok: queued as");
    // BDAT before RCPT: refused, and its chunk is read and dropped, not executed
    s.send("MAIL FROM:<a@src.test>\r\nBDAT 6\r\nQUIT\r\n");
    s.expect("250");
    s.expect("503 5.5.1");
    s.cmd("RCPT TO:<b@example.test>", "250");
    s.cmd("DATA", "354");
    s.send(".\r\n");
    s.expect("250 2.0.0 Ok: queued as");
    let queued = mtad.queued();
    assert_eq!(queued.len(), 3);
    let (m, body) = queued.iter().find(|(m, _)| m.id.to_string() == id).unwrap();
    assert_eq!(m.envelope.recipients.len(), 1);
    assert_eq!(without_received(body), MSG.as_bytes());
    assert_eq!(
        without_received(
            &queued
                .iter()
                .find(|(m, _)| m.id.to_string() != id)
                .unwrap()
                .1
        ),
        b".\r\nQUIT\r\n"
    );
}

#[test]
fn reply_text_never_carries_client_line_breaks() {
    let mtad = Mtad::start(STRICT);
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    s.cmd("MAIL FROM:<a@src.test>", "250");
    // a UTF-8 line separator and a control character in the address are not echoed raw
    let reply = s.cmd("RCPT TO:<x\u{7f}y@foreign.test>", "5");
    assert_eq!(reply.matches("\r\n").count(), 1, "{reply:?}");
    assert!(!reply.contains('\u{7f}'));
}

/// More Received: headers than `hop-count` (ours included) is a loop: 554 5.4.6, and the
/// session goes on.
#[test]
fn too_many_hops_is_refused() {
    let mtad = Mtad::start(&BASIC.replace("listen", "limits {\n    hop-count 5\n}\nlisten"));
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    let hops = |n: usize| {
        (0..n)
            .map(|i| format!("Received: from hop{i}.test by hop{}.test; date\r\n", i + 1))
            .collect::<String>()
    };
    // 4 + ours = 5: fine
    s.send_message(
        "a@src.test",
        &["b@example.test"],
        &format!("{}Subject: ok\r\n\r\nx\r\n", hops(4)),
    );
    s.cmd("MAIL FROM:<a@src.test>", "250");
    s.cmd("RCPT TO:<b@example.test>", "250");
    s.cmd("DATA", "354");
    s.send(format!("{}Subject: loop\r\n\r\nx\r\n.\r\n", hops(5)));
    s.expect("554 5.4.6 Too many hops");
    s.cmd("NOOP", "250");
    assert_eq!(mtad.queued().len(), 1);
}
