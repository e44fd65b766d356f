//! The outbound client against real servers on loopback: Postfix's `smtp-sink` (SMTP
//! and LMTP, with and without PIPELINING, scripted refusals) and aiosmtpd (per-recipient
//! answers, SIZE, SMTPUTF8, LMTP replies per recipient, LMTP over a unix socket,
//! STARTTLS with certificates made here by rcgen, AUTH PLAIN and LOGIN). A missing peer
//! fails the test.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::free_port;
use common::peers::{Aio, Pki, Sink};
use mtad::delivery::{
    ClientConfig, Credentials, DeliveryError, Envelope, RcptOutcome, Remote, SmtpConnection,
    TlsClient, TlsMode, deliver,
};

fn config(lmtp: bool) -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(10),
        data_timeout: Duration::from_secs(20),
        lmtp,
        ..ClientConfig::new("client.example.test")
    }
}

fn envelope<'a>(rcpts: &'a [String], message: &[u8]) -> Envelope<'a> {
    Envelope {
        sender: "sender@example.test",
        recipients: rcpts,
        body_8bit: message.iter().any(|b| *b >= 0x80),
        smtputf8: false,
        size: message.len(),
        xforward: &[],
    }
}

fn rcpts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn codes(outcomes: &[RcptOutcome]) -> Vec<(char, u16)> {
    outcomes
        .iter()
        .map(|o| match o {
            RcptOutcome::Delivered(r) => ('D', r.code),
            RcptOutcome::TempFail(r) => ('T', r.code),
            RcptOutcome::PermFail(r) => ('P', r.code),
        })
        .collect()
}

/// A message with everything that needs care on the wire: lines starting with dots, a
/// line that is only a dot, a bare LF, a bare CR, and no final line ending.
const TRICKY: &[u8] = b"From: sender@example.test\r\nSubject: tricky\r\n\r\nline one\r\n.leading dot\r\n..two dots\r\n.\r\nbare LF\nbare CR\rend";

/// The message part of a smtp-sink dump: after its three-line `Received:` header.
fn sink_message(dump: &str) -> &str {
    let received = dump.find("\nReceived: ").expect("no Received: in dump");
    let mut rest = &dump[received + 1..];
    for _ in 0..3 {
        rest = &rest[rest.find('\n').unwrap() + 1..];
    }
    rest
}

#[tokio::test]
async fn smtp_sink_pipelined_two_recipients_dots_and_line_endings() {
    let sink = Sink::start(&[]);
    let to = rcpts(&["one@example.test", "two@example.test"]);
    let result = deliver(sink.addr, &config(false), &envelope(&to, TRICKY), TRICKY)
        .await
        .unwrap();
    assert_eq!(codes(&result.per_recipient), [('D', 250), ('D', 250)]);
    assert_eq!(result.remote, Remote::Inet(sink.addr));
    assert_eq!(result.tls, None);
    assert!(!result.authenticated);
    assert!(result.greeting.contains("smtp-sink"), "{}", result.greeting);

    let dumps = sink.dumps(1);
    let dump = &dumps[0];
    assert!(!dump.contains('\r'), "a CR reached the sink: {dump:?}");
    assert!(dump.contains("X-Client-Proto: ESMTP\n"), "{dump}");
    assert!(
        dump.contains("X-Mail-Args: <sender@example.test>\n"),
        "{dump}"
    );
    assert!(
        dump.contains("X-Rcpt-Args: <one@example.test>\nX-Rcpt-Args: <two@example.test>\n"),
        "{dump}"
    );
    assert_eq!(
        sink_message(dump),
        "From: sender@example.test\nSubject: tricky\n\nline one\n.leading dot\n..two dots\n.\nbare LF\nbare CR\nend\n\n"
    );
}

#[tokio::test]
async fn smtp_sink_reuses_one_connection_with_and_without_pipelining() {
    for (args, pipelining) in [(&[][..], true), (&["-p"][..], false)] {
        let sink = Sink::start(args);
        let cfg = config(false);
        let mut conn = SmtpConnection::connect(sink.addr, &cfg).await.unwrap();
        let caps = conn.ehlo().await.unwrap().clone();
        assert_eq!(caps.pipelining, pipelining, "{args:?}");
        assert!(caps.eight_bit_mime && caps.esmtp);
        for n in 1..=2 {
            let msg = format!("Subject: reuse {n}\r\n\r\nbody {n} \u{e9}\r\n");
            let to = rcpts(&[&format!("r{n}@example.test")]);
            let out = conn
                .send_transaction(&envelope(&to, msg.as_bytes()), msg.as_bytes())
                .await
                .unwrap();
            assert_eq!(codes(&out), [('D', 250)], "{args:?} #{n}");
        }
        conn.quit().await;
        let dumps = sink.dumps(2);
        for n in 1..=2 {
            let rcpt = format!("X-Rcpt-Args: <r{n}@example.test>\n");
            let dump = dumps
                .iter()
                .find(|d| d.contains(&rcpt))
                .unwrap_or_else(|| panic!("no message for r{n}: {dumps:?}"));
            assert!(dump.contains(" BODY=8BITMIME\n"), "{dump}");
            assert!(sink_message(dump).starts_with(&format!("Subject: reuse {n}\n\nbody {n} ")));
        }
    }
}

#[tokio::test]
async fn smtp_sink_refused_recipients_get_their_outcome_and_no_body_is_sent() {
    for (flag, outcome) in [("-r", ('T', 450)), ("-f", ('P', 500))] {
        let sink = Sink::start(&[flag, "RCPT"]);
        let cfg = config(false);
        let mut conn = SmtpConnection::connect(sink.addr, &cfg).await.unwrap();
        conn.ehlo().await.unwrap();
        let to = rcpts(&["a@example.test", "b@example.test"]);
        // Twice: the second transaction starts with RSET after the failed first.
        for _ in 0..2 {
            let out = conn
                .send_transaction(&envelope(&to, TRICKY), TRICKY)
                .await
                .unwrap();
            assert_eq!(codes(&out), [outcome, outcome], "{flag}");
            assert!(conn.is_usable());
        }
        conn.quit().await;
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(sink.dump_count(), 0, "a message was sent to no recipient");
    }
}

#[tokio::test]
async fn smtp_sink_refusals_of_the_whole_transaction() {
    let to = rcpts(&["a@example.test"]);
    let env = envelope(&to, TRICKY);
    for (args, step, code, permanent) in [
        (&["-f", "MAIL"][..], "MAIL", 500, true),
        (&["-r", "MAIL"][..], "MAIL", 450, false),
        (&["-f", "DATA"][..], "DATA", 500, true),
        (&["-f", "CONNECT"][..], "greeting", 500, true),
        (&["-r", "EHLO,HELO"][..], "EHLO", 450, false),
        (&["-Q", "RCPT"][..], "RCPT", 421, false),
    ] {
        let sink = Sink::start(args);
        match deliver(sink.addr, &config(false), &env, TRICKY).await {
            Err(DeliveryError::Rejected {
                step: s,
                reply,
                permanent: p,
            }) => {
                assert_eq!(
                    (s, reply.code, p),
                    (step, code, permanent),
                    "{args:?}: {reply}"
                );
            }
            other => panic!("{args:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn smtp_sink_refusing_the_body_fails_every_accepted_recipient() {
    let sink = Sink::start(&["-f", "."]);
    let to = rcpts(&["a@example.test", "b@example.test"]);
    let out = deliver(sink.addr, &config(false), &envelope(&to, TRICKY), TRICKY)
        .await
        .unwrap();
    assert_eq!(codes(&out.per_recipient), [('P', 500), ('P', 500)]);
}

#[tokio::test]
async fn smtp_sink_without_esmtp_gets_helo() {
    let sink = Sink::start(&["-e"]);
    let to = rcpts(&["a@example.test"]);
    let out = deliver(sink.addr, &config(false), &envelope(&to, TRICKY), TRICKY)
        .await
        .unwrap();
    assert_eq!(codes(&out.per_recipient), [('D', 250)]);
    let dump = &sink.dumps(1)[0];
    assert!(dump.contains("X-Client-Proto: SMTP\n"), "{dump}");
    // No SIZE= nor BODY= to a server that offered nothing.
    assert!(
        dump.contains("X-Mail-Args: <sender@example.test>\n"),
        "{dump}"
    );
}

#[tokio::test]
async fn smtp_sink_lmtp() {
    let sink = Sink::start(&["-L"]);
    let to = rcpts(&["a@example.test", "b@example.test", "c@example.test"]);
    let out = deliver(sink.addr, &config(true), &envelope(&to, TRICKY), TRICKY)
        .await
        .unwrap();
    assert_eq!(codes(&out.per_recipient), [('D', 250); 3]);
    let dump = &sink.dumps(1)[0];
    assert!(dump.contains("X-Client-Proto: LMTP\n"), "{dump}");
    assert!(sink_message(dump).ends_with("\n.\nbare LF\nbare CR\nend\n\n"));
}

#[tokio::test]
async fn smtp_sink_slow_data_reply_times_out() {
    let sink = Sink::start(&["-p", "-w", "5"]);
    let mut cfg = config(false);
    cfg.command_timeout = Duration::from_millis(500);
    let to = rcpts(&["a@example.test"]);
    let started = Instant::now();
    let err = deliver(sink.addr, &cfg, &envelope(&to, TRICKY), TRICKY)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DeliveryError::Timeout { step: "DATA" }),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn aiosmtpd_per_recipient_outcomes_and_a_clean_body() {
    for args in [&[][..], &["--pipelining"][..]] {
        per_recipient_outcomes_and_a_clean_body(args).await;
    }
}

async fn per_recipient_outcomes_and_a_clean_body(args: &[&str]) {
    let aio = Aio::start(args);
    let to = rcpts(&[
        "ok1@example.test",
        "temp@example.test",
        "perm@example.test",
        "ok2@example.test",
    ]);
    let mut message = TRICKY.to_vec();
    message.extend_from_slice("\r\n8-bit: caf\u{e9}\r\n".as_bytes());
    let out = deliver(aio.addr, &config(false), &envelope(&to, &message), &message)
        .await
        .unwrap();
    assert_eq!(
        codes(&out.per_recipient),
        [('D', 250), ('T', 450), ('P', 550), ('D', 250)]
    );
    match &out.per_recipient[2] {
        RcptOutcome::PermFail(r) => {
            assert_eq!(r.to_string(), "550 5.1.1 no such user here");
        }
        other => panic!("{other:?}"),
    }

    let (env, body) = aio.messages(1).remove(0);
    assert_eq!(
        env,
        format!(
            "TLS no\nAUTH -\nMAIL <sender@example.test> SIZE={} BODY=8BITMIME\nRCPT <ok1@example.test>\nRCPT <ok2@example.test>\n",
            message.len()
        )
    );
    assert_eq!(
        body,
        "From: sender@example.test\r\nSubject: tricky\r\n\r\nline one\r\n.leading dot\r\n..two dots\r\n.\r\nbare LF\r\nbare CR\r\nend\r\n8-bit: caf\u{e9}\r\n"
            .as_bytes()
    );
}

#[tokio::test]
async fn aiosmtpd_size_is_checked_before_sending_and_the_connection_stays_usable() {
    let aio = Aio::start(&["--size", "200"]);
    let cfg = config(false);
    let mut conn = SmtpConnection::connect(aio.addr, &cfg).await.unwrap();
    assert_eq!(conn.ehlo().await.unwrap().size, Some(200));
    let to = rcpts(&["a@example.test"]);
    let big = vec![b'x'; 300];
    let err = conn
        .send_transaction(&envelope(&to, &big), &big)
        .await
        .unwrap_err();
    match err {
        DeliveryError::Rejected {
            step: "MAIL",
            reply,
            permanent: true,
        } => {
            assert_eq!(reply.to_string().get(..9), Some("552 5.3.4"));
        }
        other => panic!("{other:?}"),
    }
    let small = b"Subject: small\r\n\r\nfits\r\n";
    let out = conn
        .send_transaction(&envelope(&to, small), small)
        .await
        .unwrap();
    assert_eq!(codes(&out), [('D', 250)]);
    conn.quit().await;
    let msgs = aio.messages(1);
    assert_eq!(msgs[0].1, small);
    assert_eq!(aio.file_count(), 2, "the big message reached the server");
}

#[tokio::test]
async fn aiosmtpd_smtputf8() {
    let to = rcpts(&["us\u{e9}r@example.test"]);
    let message = "Subject: \u{e9}\r\n\r\nhi\r\n".as_bytes();
    let env = Envelope {
        smtputf8: true,
        ..envelope(&to, message)
    };
    let plain = Aio::start(&[]);
    match deliver(plain.addr, &config(false), &env, message).await {
        Err(DeliveryError::Rejected {
            reply,
            permanent: true,
            ..
        }) => {
            assert_eq!(reply.enhanced.unwrap().to_string(), "5.6.7");
        }
        other => panic!("{other:?}"),
    }
    let utf8 = Aio::start(&["--smtputf8"]);
    let out = deliver(utf8.addr, &config(false), &env, message)
        .await
        .unwrap();
    assert_eq!(codes(&out.per_recipient), [('D', 250)]);
    let (env, _) = utf8.messages(1).remove(0);
    assert!(env.contains("SMTPUTF8"), "{env}");
}

#[tokio::test]
async fn aiosmtpd_lmtp_answers_per_recipient() {
    let aio = Aio::start(&["--lmtp"]);
    let to = rcpts(&[
        "a@example.test",
        "full@example.test",
        "perm@example.test",
        "b@example.test",
    ]);
    let out = deliver(aio.addr, &config(true), &envelope(&to, TRICKY), TRICKY)
        .await
        .unwrap();
    assert_eq!(
        codes(&out.per_recipient),
        [('D', 250), ('T', 452), ('P', 550), ('D', 250)]
    );
    assert!(
        out.per_recipient[1]
            .reply()
            .text
            .contains("<full@example.test>")
    );
    assert!(
        out.per_recipient[3]
            .reply()
            .text
            .contains("<b@example.test>")
    );
}

#[tokio::test]
async fn a_silent_server_times_out_at_the_greeting() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_secs(3));
        drop(conn);
    });
    let mut cfg = config(false);
    cfg.command_timeout = Duration::from_millis(300);
    let to = rcpts(&["a@example.test"]);
    let started = Instant::now();
    let err = deliver(addr, &cfg, &envelope(&to, TRICKY), TRICKY)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, DeliveryError::Timeout { step: "greeting" }),
        "{err:?}"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(!err.is_permanent());
    holder.join().unwrap();
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let to = rcpts(&["a@example.test"]);
    let err = deliver(addr, &config(false), &envelope(&to, TRICKY), TRICKY)
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Connect { .. }), "{err:?}");
}

/// Pipelined, every RCPT refused: the DATA sent in the same write is refused too, no
/// body follows, and the next transaction on the connection (after RSET) goes through.
#[tokio::test]
async fn aiosmtpd_pipelined_with_every_recipient_refused() {
    let aio = Aio::start(&["--pipelining"]);
    let cfg = config(false);
    let mut conn = SmtpConnection::connect(aio.addr, &cfg).await.unwrap();
    assert!(conn.ehlo().await.unwrap().pipelining);
    let refused = rcpts(&["temp@example.test", "perm@example.test"]);
    let out = conn
        .send_transaction(&envelope(&refused, TRICKY), TRICKY)
        .await
        .unwrap();
    assert_eq!(codes(&out), [('T', 450), ('P', 550)]);
    let to = rcpts(&["ok@example.test"]);
    let out = conn
        .send_transaction(&envelope(&to, TRICKY), TRICKY)
        .await
        .unwrap();
    assert_eq!(codes(&out), [('D', 250)]);
    conn.quit().await;
    let (env, _) = aio.messages(1).remove(0);
    assert!(env.ends_with("\nRCPT <ok@example.test>\n"), "{env}");
    assert_eq!(aio.file_count(), 2, "the refused transaction sent a body");
}

/// `config(false)` with TLS (`TlsClient` trusting `ca`, or only the system's roots) and
/// AUTH as given.
fn tls_config(
    mode: TlsMode,
    ca: Option<&Path>,
    name: Option<&str>,
    auth: Option<(&str, &str)>,
) -> ClientConfig {
    ClientConfig {
        tls: mode,
        tls_client: Some(Arc::new(TlsClient::new(ca).unwrap())),
        tls_name: name.map(str::to_string),
        auth: auth.map(|(user, password)| Credentials {
            user: user.into(),
            password: password.into(),
        }),
        ..config(false)
    }
}

const HELLO: &[u8] = b"From: sender@example.test\r\nSubject: hello\r\n\r\nhello over TLS\r\n";

#[tokio::test]
async fn aiosmtpd_starttls_then_auth_plain() {
    let pki = Pki::new();
    let aio = pki.aio(&["--require-starttls", "--auth", "user:secret"]);
    let cfg = tls_config(TlsMode::Required, None, None, Some(("user", "secret")));
    let to = rcpts(&["a@example.test", "perm@example.test"]);
    let out = deliver(aio.addr, &cfg, &envelope(&to, HELLO), HELLO)
        .await
        .unwrap();
    assert_eq!(codes(&out.per_recipient), [('D', 250), ('P', 550)]);
    assert!(out.authenticated);
    let tls = out.tls.expect("no TLS");
    assert!(tls.starts_with("TLSv1_"), "{tls}");

    let (env, body) = aio.messages(1).remove(0);
    assert_eq!(
        env,
        format!(
            "TLS yes\nAUTH user\nMAIL <sender@example.test> SIZE={}\nRCPT <a@example.test>\n",
            HELLO.len()
        )
    );
    assert_eq!(body, HELLO);
}

#[tokio::test]
async fn aiosmtpd_auth_login_when_plain_is_not_offered() {
    let pki = Pki::new();
    let aio = pki.aio(&["--auth", "user:secret", "--auth-exclude", "PLAIN"]);
    let cfg = tls_config(TlsMode::Opportunistic, None, None, Some(("user", "secret")));
    let mut conn = SmtpConnection::connect(aio.addr, &cfg).await.unwrap();
    let caps = conn.ehlo().await.unwrap().clone();
    assert!(conn.is_encrypted() && conn.is_authenticated());
    assert_eq!(caps.auth, ["CRAM-MD5", "LOGIN"]);
    assert!(!caps.starttls, "STARTTLS offered again after TLS");
    let to = rcpts(&["a@example.test"]);
    // Two transactions on the authenticated connection.
    for _ in 0..2 {
        let out = conn
            .send_transaction(&envelope(&to, HELLO), HELLO)
            .await
            .unwrap();
        assert_eq!(codes(&out), [('D', 250)]);
    }
    conn.quit().await;
    for (env, _) in aio.messages(2) {
        assert!(env.starts_with("TLS yes\nAUTH user\n"), "{env}");
    }
}

#[tokio::test]
async fn aiosmtpd_verify_mode_checks_the_certificate_and_its_name() {
    let pki = Pki::new();
    let aio = pki.aio(&[]);
    let to = rcpts(&["a@example.test"]);
    let env = envelope(&to, HELLO);

    for name in ["relay.test", "localhost"] {
        let cfg = tls_config(TlsMode::Verify, Some(&pki.ca()), Some(name), None);
        let out = deliver(aio.addr, &cfg, &env, HELLO).await.unwrap();
        assert_eq!(codes(&out.per_recipient), [('D', 250)], "{name}");
        assert!(out.tls.is_some());
    }

    let failures = [
        // The name is not in the certificate.
        (Some(pki.ca()), Some("wrong.test"), "not valid for name"),
        // Only the system's roots: our CA is unknown.
        (None, Some("relay.test"), "UnknownIssuer"),
        // Nothing to verify against.
        (Some(pki.ca()), None, "tls_name"),
    ];
    for (ca, name, expected) in failures {
        let cfg = tls_config(TlsMode::Verify, ca.as_deref(), name, None);
        let err = deliver(aio.addr, &cfg, &env, HELLO).await.unwrap_err();
        assert!(err.is_tls_failure(), "{name:?}: {err:?}");
        assert!(
            !err.is_permanent() && !err.allows_plaintext_retry(),
            "{err:?}"
        );
        assert!(err.to_string().contains(expected), "{name:?}: {err}");
    }
    assert_eq!(aio.messages(2).len(), 2);
    assert_eq!(
        aio.file_count(),
        4,
        "a message went through a failed verification"
    );

    // Required does not check the certificate at all.
    let cfg = tls_config(TlsMode::Required, None, Some("wrong.test"), None);
    let out = deliver(aio.addr, &cfg, &env, HELLO).await.unwrap();
    assert_eq!(codes(&out.per_recipient), [('D', 250)]);
}

#[tokio::test]
async fn aiosmtpd_without_starttls_required_fails_and_opportunistic_goes_plain() {
    let aio = Aio::start(&[]);
    let to = rcpts(&["a@example.test"]);
    let env = envelope(&to, HELLO);
    for mode in [TlsMode::Required, TlsMode::Verify] {
        let cfg = tls_config(mode, None, Some("relay.test"), None);
        let err = deliver(aio.addr, &cfg, &env, HELLO).await.unwrap_err();
        assert!(
            err.to_string().contains("TLS is required (tls mode ")
                && err
                    .to_string()
                    .contains("but the server does not offer STARTTLS"),
            "{err}"
        );
        assert!(err.is_tls_failure() && !err.is_permanent() && !err.allows_plaintext_retry());
    }
    assert_eq!(aio.file_count(), 0);

    let cfg = tls_config(TlsMode::Opportunistic, None, None, None);
    let out = deliver(aio.addr, &cfg, &env, HELLO).await.unwrap();
    assert_eq!(codes(&out.per_recipient), [('D', 250)]);
    assert_eq!(out.tls, None);
    let (env, _) = aio.messages(1).remove(0);
    assert!(env.starts_with("TLS no\nAUTH -\n"), "{env}");
}

#[tokio::test]
async fn aiosmtpd_opportunistic_uses_starttls_when_offered() {
    let pki = Pki::new();
    let aio = pki.aio(&[]);
    let to = rcpts(&["a@example.test"]);
    let cfg = tls_config(TlsMode::Opportunistic, None, None, None);
    let out = deliver(aio.addr, &cfg, &envelope(&to, HELLO), HELLO)
        .await
        .unwrap();
    assert_eq!(codes(&out.per_recipient), [('D', 250)]);
    assert!(out.tls.is_some());
    let (env, _) = aio.messages(1).remove(0);
    assert!(env.starts_with("TLS yes\n"), "{env}");
}

#[tokio::test]
async fn aiosmtpd_credentials_are_not_sent_in_plaintext_unless_allowed() {
    let aio = Aio::start(&["--auth", "user:secret", "--auth-plaintext"]);
    let to = rcpts(&["a@example.test"]);
    let env = envelope(&to, HELLO);
    let mut cfg = tls_config(TlsMode::Opportunistic, None, None, Some(("user", "secret")));
    let err = deliver(aio.addr, &cfg, &env, HELLO).await.unwrap_err();
    match &err {
        DeliveryError::Auth { message, reply } => {
            assert_eq!(
                message,
                "refusing to send credentials over an unencrypted connection (use tls=\"required\")"
            );
            assert!(reply.is_none());
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_permanent() && !err.is_tls_failure());
    assert_eq!(aio.file_count(), 0);

    cfg.auth_plaintext = true;
    let out = deliver(aio.addr, &cfg, &env, HELLO).await.unwrap();
    assert!(out.authenticated && out.tls.is_none());
    let (env, _) = aio.messages(1).remove(0);
    assert!(env.starts_with("TLS no\nAUTH user\n"), "{env}");
}

#[tokio::test]
async fn aiosmtpd_wrong_password_is_a_temporary_failure_with_the_reply() {
    let pki = Pki::new();
    let to = rcpts(&["a@example.test"]);
    // PLAIN, then LOGIN.
    for exclude in ["CRAM-MD5", "PLAIN"] {
        let aio = pki.aio(&["--auth", "user:secret", "--auth-exclude", exclude]);
        let cfg = tls_config(TlsMode::Required, None, None, Some(("user", "wrong")));
        let err = deliver(aio.addr, &cfg, &envelope(&to, HELLO), HELLO)
            .await
            .unwrap_err();
        match &err {
            DeliveryError::Auth {
                message,
                reply: Some(reply),
            } => {
                assert_eq!(reply.code, 535, "{message}");
                assert!(message.contains("535 5.7.8"), "{message}");
                assert!(!message.contains("wrong"), "the password in {message}");
            }
            other => panic!("{exclude}: {other:?}"),
        }
        assert!(!err.is_permanent());
        assert_eq!(aio.file_count(), 0);
    }
}

#[tokio::test]
async fn aiosmtpd_no_auth_mechanism_in_common() {
    let pki = Pki::new();
    let aio = pki.aio(&[
        "--auth",
        "user:secret",
        "--auth-exclude",
        "PLAIN",
        "--auth-exclude",
        "LOGIN",
    ]);
    let to = rcpts(&["a@example.test"]);
    let cfg = tls_config(TlsMode::Required, None, None, Some(("user", "secret")));
    let err = deliver(aio.addr, &cfg, &envelope(&to, HELLO), HELLO)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no AUTH mechanism in common (server offers: CRAM-MD5; we support: PLAIN, LOGIN)"
    );
    assert!(!err.is_permanent());
}

#[tokio::test]
async fn aiosmtpd_lmtp_over_a_unix_socket() {
    let (aio, socket) = Aio::start_unix(&["--lmtp"]);
    let to = rcpts(&["a@example.test", "full@example.test", "perm@example.test"]);
    let out = deliver(
        socket.clone(),
        &config(true),
        &envelope(&to, TRICKY),
        TRICKY,
    )
    .await
    .unwrap();
    assert_eq!(
        codes(&out.per_recipient),
        [('D', 250), ('T', 452), ('P', 550)]
    );
    assert_eq!(out.remote, Remote::Unix(socket.clone()));
    assert!(
        out.per_recipient[0]
            .reply()
            .text
            .contains("<a@example.test>")
    );

    let cfg = config(true);
    let mut conn = SmtpConnection::connect_unix(&socket, &cfg).await.unwrap();
    assert_eq!(
        conn.remote().to_string(),
        format!("unix:{}", socket.display())
    );
    let to = rcpts(&["b@example.test"]);
    let out = conn
        .send_transaction(&envelope(&to, HELLO), HELLO)
        .await
        .unwrap();
    assert_eq!(codes(&out), [('D', 250)]);
    conn.quit().await;
    let msgs = aio.messages(2);
    assert!(
        msgs[1].0.ends_with("RCPT <b@example.test>\n"),
        "{}",
        msgs[1].0
    );
}

/// A server that answers STARTTLS with its 220 and, in the same packet, a reply for the
/// EHLO the client will send over TLS (CVE-2011-0411): the client must not start TLS.
#[tokio::test]
async fn starttls_response_injection_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut seen = Vec::new();
        conn.write_all(b"220 evil ESMTP\r\n").unwrap();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            let reply: &[u8] = if line.starts_with("EHLO") {
                b"250-evil\r\n250 STARTTLS\r\n"
            } else if line.starts_with("STARTTLS") {
                b"220 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n"
            } else {
                b"250 ok\r\n"
            };
            seen.push(line);
            conn.write_all(reply).unwrap();
        }
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);
        (seen, rest)
    });
    let cfg = tls_config(TlsMode::Opportunistic, None, None, None);
    let to = rcpts(&["a@example.test"]);
    let err = deliver(addr, &cfg, &envelope(&to, HELLO), HELLO)
        .await
        .unwrap_err();
    match &err {
        DeliveryError::Protocol(m) => assert!(m.contains("injection"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(!err.allows_plaintext_retry());
    let (seen, rest) = server.join().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(rest.is_empty(), "a TLS handshake was started: {rest:?}");
}

/// Opportunistic TLS whose handshake fails (the server answers 220, then speaks
/// plaintext) is a TLS failure that allows a retry without TLS.
#[tokio::test]
async fn a_failed_opportunistic_handshake_allows_a_plaintext_retry() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        conn.write_all(b"220 broken ESMTP\r\n").unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        conn.write_all(b"250-broken\r\n250 STARTTLS\r\n").unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "STARTTLS\r\n");
        conn.write_all(b"220 go ahead\r\n").unwrap();
        // The ClientHello arrives; answer it with nonsense.
        let mut hello = [0u8; 5];
        reader.read_exact(&mut hello).unwrap();
        assert_eq!(hello[0], 0x16, "not a TLS handshake record");
        conn.write_all(b"500 what is this?\r\n").unwrap();
    });
    let cfg = tls_config(TlsMode::Opportunistic, None, None, None);
    let to = rcpts(&["a@example.test"]);
    let err = deliver(addr, &cfg, &envelope(&to, HELLO), HELLO)
        .await
        .unwrap_err();
    assert!(
        err.is_tls_failure() && err.allows_plaintext_retry(),
        "{err:?}"
    );
    assert!(err.to_string().contains("handshake failed"), "{err}");
    server.join().unwrap();
}
